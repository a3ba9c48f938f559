"""CLI commands of traitlab.discovery: ``discover`` (propose + consolidate) and ``validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from traitlab.console import MaxFailuresOpt, check_outputs, fail, finish, policy_or_fail
from traitlab.judges.provider import ProviderOptions, provider_options
from traitlab.options import (
    ContrastOpt,
    DataOpt,
    GroupOpt,
    NegativeOpt,
    PositiveOpt,
    PresetOpt,
    TargetRoleOpt,
    preset_file,
    require,
    resolve,
    target_role_for,
)

StoreOpt = Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")]


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    app.command("discover")(provider_options(discover))
    app.command("validate")(validate_cmd)


def discover(
    out: Annotated[Path, typer.Option(help="where to write the TraitSet JSON")],
    pairs: Annotated[Path | None, typer.Option(
        help="labelled dialogues JSONL/CSV; paired by the contrast's group field")] = None,
    judge: Annotated[str, typer.Option(help="proposing judge (LiteLLM model name)")] = "local/smollm2-135m",
    proposals: Annotated[Path | None, typer.Option(
        help="consolidate these proposals (JSONL); with --pairs, together with the new ones")] = None,
    limit: Annotated[int | None, typer.Option(help="propose on the first N pairs only")] = None,
    both_orders: Annotated[bool, typer.Option(help="show each pair in both A/B orders (position bias)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the A/B order drawn per pair")] = 0,
    n_traits: Annotated[int | None, typer.Option(help="clusters before dropping thin ones (default: "
                                                      "statements/5, at most 40)")] = None,
    min_games: Annotated[int | None, typer.Option(
        help="drop clusters backed by fewer groups (default: 1% of groups, at least 2)")] = None,
    merge_judge: Annotated[str | None, typer.Option(
        help="judge that merges clusters into traits (default: --judge; 'none' = medoids only)")] = None,
    name: Annotated[str, typer.Option(help="trait set name")] = "discovered",
    proposals_out: Annotated[Path | None, typer.Option(
        help="where to write new proposals (default: next to --out)")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="stop calling the judge beyond this spend")] = None,
    contrast: ContrastOpt = None, positive: PositiveOpt = None, negative: NegativeOpt = None,
    target_role: TargetRoleOpt = None, group: GroupOpt = None, preset: PresetOpt = None, data: DataOpt = None,
    store: StoreOpt = None,
    max_failures: MaxFailuresOpt = None,
    *,
    provider: ProviderOptions | None = None,
) -> None:
    """Discover traits: a judge proposes traits from contrastive pairs, then they are clustered and merged.
    Exits 1 when more proposal calls than ``--max-failures`` failed."""
    from rich.console import Console

    from traitlab.data import load_dialogues, load_proposals
    from traitlab.discovery.discover import discover as run
    from traitlab.settings import store_path
    from traitlab.store import Store

    console = Console()
    policy = policy_or_fail(max_failures)
    new_proposals = None if pairs is None and proposals is not None else proposals_out or out.with_suffix(
        ".proposals.jsonl")
    check_outputs(("--out", out, False), ("--store", store_path(store), False), ("--proposals-out", new_proposals,
                                                                                  False))
    try:
        if proposals is None:
            pairs = preset_file(preset, data, "dialogues", pairs)
        if pairs is None and proposals is None:
            raise ValueError("give --pairs (propose, then consolidate), --proposals (consolidate only), or both "
                             "(the new proposals join the given ones)")
        role = target_role_for(contrast, preset, target_role)
        dialogues = load_dialogues(pairs, target_role=role) if pairs is not None else None
        spec = resolve(dialogues or [], contrast, preset, positive, negative, role, group)
        records = load_proposals(proposals) if proposals is not None else None
        provider = provider or ProviderOptions()
        for model in {judge} | ({merge_judge} if merge_judge and merge_judge.lower() != "none" else set()):
            if pairs is not None or model == merge_judge:
                provider.check(model)
    except ValueError as e:  # DataError included: one clear line naming the file
        raise fail(e) from None
    merger = judge if merge_judge is None else None if merge_judge.lower() == "none" else merge_judge
    config = {"pairs": str(pairs), "proposals": str(proposals), "judge": judge, "limit": limit,
              "both_orders": both_orders, "seed": seed, "n_traits": n_traits, "min_games": min_games,
              "merge_judge": merge_judge, "contrast": spec.model_dump(mode="json"),
              "provider": provider.model_dump(exclude_none=True)}
    with Store(store_path(store)) as st:
        try:
            result = run(dialogues, judge, spec, proposals=records, limit=limit, both_orders=both_orders, seed=seed,
                         n_traits=n_traits, min_games=min_games, merge_client=merger, name=name,
                         source=str(proposals) if proposals and pairs is None else "",
                         proposals_out=None if pairs is None else proposals_out or out.with_suffix(
                             ".proposals.jsonl"), budget_usd=budget_usd, store=st, config=config,
                         client_kwargs=provider.client_kwargs())
        except ValueError as e:
            raise fail(e) from None
    ts, how = result.trait_set, result.consolidation
    ts.save(out)
    if result.judge_accuracy is not None:
        acc = result.judge_accuracy
        console.print(f"{len(result.proposals)} proposals ({acc['failed']} failed, {acc['rejected_statements']} "
                      f"statements echoing the prompt dropped) -> {result.proposals_path}; judge accuracy "
                      f"{_pct(acc['accuracy'])}, picked A {_pct(acc['picked_a_rate'])}, "
                      f"consistent across orders {_pct(acc['consistency'])}")
    if how.note:
        console.print(f"[yellow]{how.note}[/yellow]")
    console.print(f"{how.n_statements} statements from {how.n_games} groups -> {len(ts.traits)} traits "
                  f"({how.method}); wrote {out} (hash {ts.hash})")
    console.print(f"run {result.run_id}")
    finish([r.error for r in result.proposals if r.error], len(result.proposals), policy)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def validate_cmd(
    out: Annotated[Path, typer.Option(help="table (.csv) or full report (.json)")],
    dialogues: Annotated[Path | None, typer.Option(help="labelled dialogues the ratings refer to (by id)")] = None,
    traits: Annotated[Path | None, typer.Option(help="trait set JSON")] = None,
    ratings: Annotated[Path | None, typer.Option(help="ratings JSONL ({id, judge, ratings})")] = None,
    run: Annotated[str | None, typer.Option(help="take the ratings of this score run from the store")] = None,
    judge: Annotated[str | None, typer.Option(help="only this judge's ratings")] = None,
    alpha: Annotated[float, typer.Option(help="FDR level")] = 0.05,
    redundancy: Annotated[float, typer.Option(help="|Spearman| at which traits count as redundant")] = 0.7,
    contrast: ContrastOpt = None, positive: PositiveOpt = None, negative: NegativeOpt = None,
    target_role: TargetRoleOpt = None, preset: PresetOpt = None, data: DataOpt = None,
    store: StoreOpt = None,
) -> None:
    """Per-trait AUC, effect sizes, FDR-corrected tests, redundancy and judge agreement; selects traits."""
    from rich.console import Console
    from rich.table import Table

    from traitlab.data import load_dialogues, load_ratings, load_trait_set
    from traitlab.discovery.validate import validate, write_table
    from traitlab.settings import store_path
    from traitlab.store import Store

    check_outputs(("--out", out, False), ("--store", store_path(store), False))
    with Store(store_path(store)) as st:
        try:
            if run is None:
                ratings = preset_file(preset, data, "ratings", ratings)
            if (ratings is None) == (run is None):
                raise ValueError("give exactly one of --ratings FILE or --run RUN_ID")
            trait_set = load_trait_set(require(preset_file(preset, data, "traits", traits), "--traits"))
            dialogues = require(preset_file(preset, data, "dialogues", dialogues), "--dialogues")
            labelled = load_dialogues(dialogues, target_role=target_role_for(contrast, preset, target_role))
            spec = resolve(labelled, contrast, preset, positive, negative, target_role)
            if ratings is not None:
                rated = load_ratings(ratings, judge=judge)
            else:
                st.run(run)  # a clear KeyError-style message when the run does not exist
                rated = st.ratings(run, judge=judge)
                other = sorted({r.trait_set_hash for r in rated} - {trait_set.hash, None})
                if other:
                    raise ValueError(f"run {run} rated trait set(s) {other}, not {traits} ({trait_set.hash})")
            config = {"ratings": str(ratings), "run": run, "judge": judge, "dialogues": str(dialogues),
                      "traits": str(traits), "contrast": spec.model_dump(mode="json")}
            report = validate(rated, labelled, trait_set, contrast=spec, alpha=alpha, redundancy=redundancy,
                              store=st, config=config)
        except (ValueError, KeyError) as e:
            raise fail(str(e.args[0]) if isinstance(e, KeyError) else str(e)) from None
    write_table(report, out)
    table = Table(title=f"{trait_set.name} ({trait_set.hash}): AUC = P({spec.positive_name} rated higher); "
                        f"* q < {alpha}")
    table.add_column("trait")
    table.add_column("statement", no_wrap=True, overflow="ellipsis", max_width=50)
    for j in report.judges:
        table.add_column(j, justify="right")
    table.add_column("alpha", justify="right")
    aucs = report.auc_table()
    sig = {(r.trait_id, r.judge) for r in report.rows if r.significant}
    for t in trait_set.ids:
        if t in aucs:
            a = report.agreement.get(t)
            table.add_row(t + (" (selected)" if t in report.selected else ""), trait_set[t].text,
                          *[f"{aucs[t][j]:.3f}{'*' if (t, j) in sig else ''}" if j in aucs[t] else "-"
                            for j in report.judges], "-" if a is None else f"{a:.2f}")
    Console().print(table)
    Console().print(f"selected {len(report.selected)}: {report.selected}; wrote {out}; run {report.run_id}")
