"""CLI commands of traitlab.discovery: ``discover`` (propose + consolidate) and ``validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from traitlab.console import fail

StoreOpt = Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")]


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    app.command("discover")(discover)
    app.command("validate")(validate_cmd)


def discover(
    out: Annotated[Path, typer.Option(help="where to write the TraitSet JSON")],
    pairs: Annotated[Path | None, typer.Option(help="labelled dialogues JSONL; paired by meta game_id")] = None,
    judge: Annotated[str, typer.Option(help="proposing judge (LiteLLM model name)")] = "local/smollm2-135m",
    proposals: Annotated[Path | None, typer.Option(
        help="consolidate these proposals (JSONL) instead of proposing")] = None,
    limit: Annotated[int | None, typer.Option(help="propose on the first N pairs only")] = None,
    both_orders: Annotated[bool, typer.Option(help="show each pair in both A/B orders (position bias)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the A/B order drawn per pair")] = 0,
    n_traits: Annotated[int | None, typer.Option(help="clusters before dropping thin ones (default: "
                                                      "statements/5, at most 40)")] = None,
    min_games: Annotated[int | None, typer.Option(
        help="drop clusters backed by fewer games (default: 1% of games, at least 2)")] = None,
    merge_judge: Annotated[str | None, typer.Option(
        help="judge that merges clusters into traits (default: --judge; 'none' = medoids only)")] = None,
    name: Annotated[str, typer.Option(help="trait set name")] = "discovered",
    proposals_out: Annotated[Path | None, typer.Option(
        help="where to write new proposals (default: next to --out)")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="stop calling the judge beyond this spend")] = None,
    store: StoreOpt = None,
) -> None:
    """Discover traits: a judge proposes traits from contrastive pairs, then they are clustered and merged."""
    from rich.console import Console

    from traitlab.data import load_dialogues, load_proposals, pair_dialogues
    from traitlab.discovery.consolidate import consolidate
    from traitlab.discovery.propose import position_bias, propose, write_proposals
    from traitlab.judges.rate import judge_client
    from traitlab.settings import store_path
    from traitlab.store import Store

    console = Console()
    if (pairs is None) == (proposals is None):
        raise fail("give exactly one of --pairs (propose, then consolidate) or --proposals (consolidate only)")
    config = {"pairs": str(pairs), "proposals": str(proposals), "judge": judge, "limit": limit,
              "both_orders": both_orders, "seed": seed, "n_traits": n_traits, "min_games": min_games,
              "merge_judge": merge_judge}
    with Store(store_path(store)) as st:
        run_id = st.start_run("discover", name, config)
        try:
            if proposals is not None:
                records = load_proposals(proposals)
                source = str(proposals)
            else:
                paired = pair_dialogues(load_dialogues(pairs))[:limit]
                if not paired:
                    raise ValueError(f"{pairs}: no human/AI pair (dialogues are paired by meta game_id)")
                client = judge_client(judge, store=st, run_id=run_id, budget_usd=budget_usd)
                made = propose(paired, client, seed=seed, both_orders=both_orders)
                path = write_proposals(made, proposals_out or out.with_suffix(".proposals.jsonl"))
                bias = position_bias(made)
                st.put_artifact(run_id, "proposals", [r.model_dump(mode="json") for r in made])
                st.put_artifact(run_id, "judge_accuracy", {"judge": judge, **bias})
                console.print(f"{len(made)} proposals ({bias['failed']} failed) -> {path}; judge accuracy "
                              f"{_pct(bias['accuracy'])}, picked A {_pct(bias['picked_a_rate'])}, "
                              f"consistent across orders {_pct(bias['consistency'])}")
                records = [r.model_dump(mode="json") for r in made]
                source = str(path)
            merger_name = judge if merge_judge is None else merge_judge
            merger = None if merger_name.lower() == "none" else judge_client(merger_name, store=st, run_id=run_id)
            result = consolidate(records, client=merger, n_traits=n_traits, min_games=min_games, name=name,
                                 source=source)
        except ValueError as e:  # DataError included: one clear line naming the file
            st.finish_run(run_id, "failed", {"error": str(e)})
            raise fail(str(e)) from None
        ts = result.trait_set
        ts.save(out)
        summary = {"traits": len(ts.traits), "hash": ts.hash, "method": result.method, "note": result.note,
                   "statements": result.n_statements, "games": result.n_games}
        st.put_artifact(run_id, "trait_set", {**ts.model_dump(mode="json"), "hash": ts.hash})
        st.put_artifact(run_id, "consolidation", {**summary, "clusters": [
            {**c.model_dump(), "support": c.support} for c in result.clusters]})
        st.finish_run(run_id, "done", summary)
    if result.note:
        console.print(f"[yellow]{result.note}[/yellow]")
    console.print(f"{result.n_statements} statements from {result.n_games} games -> {len(ts.traits)} traits "
                  f"({result.method}); wrote {out} (hash {ts.hash})")
    console.print(f"run {run_id}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def validate_cmd(
    dialogues: Annotated[Path, typer.Option(help="labelled dialogues the ratings refer to (by id)")],
    traits: Annotated[Path, typer.Option(help="trait set JSON")],
    out: Annotated[Path, typer.Option(help="table (.csv) or full report (.json)")],
    ratings: Annotated[Path | None, typer.Option(help="ratings JSONL ({id, judge, ratings})")] = None,
    run: Annotated[str | None, typer.Option(help="take the ratings of this score run from the store")] = None,
    judge: Annotated[str | None, typer.Option(help="only this judge's ratings")] = None,
    alpha: Annotated[float, typer.Option(help="FDR level")] = 0.05,
    redundancy: Annotated[float, typer.Option(help="|Spearman| at which traits count as redundant")] = 0.7,
    store: StoreOpt = None,
) -> None:
    """Per-trait AUC, effect sizes, FDR-corrected tests, redundancy and judge agreement; selects traits."""
    from rich.console import Console
    from rich.table import Table

    from traitlab.data import load_dialogues, load_ratings, load_trait_set
    from traitlab.discovery.validate import labels_of, validate, write_table
    from traitlab.settings import store_path
    from traitlab.store import Store

    if (ratings is None) == (run is None):
        raise fail("give exactly one of --ratings FILE or --run RUN_ID")
    with Store(store_path(store)) as st:
        try:
            trait_set = load_trait_set(traits)
            if ratings is not None:
                rated = load_ratings(ratings, judge=judge)
            else:
                st.run(run)  # a clear KeyError-style message when the run does not exist
                rated = st.ratings(run, judge=judge)
                other = sorted({r.trait_set_hash for r in rated} - {trait_set.hash, None})
                if other:
                    raise ValueError(f"run {run} rated trait set(s) {other}, not {traits} ({trait_set.hash})")
            report = validate(rated, labels_of(load_dialogues(dialogues)), trait_set, alpha=alpha,
                              redundancy=redundancy)
        except (ValueError, KeyError) as e:
            raise fail(str(e.args[0]) if isinstance(e, KeyError) else str(e)) from None
        run_id = st.start_run("validate", trait_set.name, {"ratings": str(ratings), "run": run, "judge": judge,
                                                           "dialogues": str(dialogues), "traits": str(traits)})
        st.put_artifact(run_id, "validation", report.model_dump(mode="json"))
        st.finish_run(run_id, "done", {"selected": report.selected, "judges": report.judges})
    write_table(report, out)
    table = Table(title=f"{trait_set.name} ({trait_set.hash}): AUC = P(human rated higher); * q < {alpha}")
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
    Console().print(f"selected {len(report.selected)}: {report.selected}; wrote {out}; run {run_id}")
