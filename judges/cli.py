"""CLI commands of traitlab.judges: scoring, aggregator fitting, reward distillation and scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from traitlab.console import (
    MaxFailuresOpt,
    check_outputs,
    fail,
    finish,
    policy_or_fail,
    summarise_failures,
)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    _register_score(app)
    _register_aggregate(app)
    _register_reward(app)


def _register_score(app: typer.Typer) -> None:
    """``traitlab score``: rate dialogues on a trait set with an LLM judge."""

    @app.command("score")
    def score(
        dialogues: Annotated[Path, typer.Option(help="dialogues JSONL/CSV whose target speaker is rated")],
        traits: Annotated[Path, typer.Option(help="trait set JSON (a TraitSet or HAL's bare list)")],
        judge: Annotated[str, typer.Option(help="judge model (LiteLLM name)")] = "local/smollm2-135m",
        mode: Annotated[Literal["all", "per_trait"], typer.Option(
            help="all traits in one call, or one call per trait")] = "all",
        expected: Annotated[bool, typer.Option(
            help="expected Likert score from the judge's token logprobs")] = False,
        limit: Annotated[int | None, typer.Option(help="rate the first N dialogues only")] = None,
        target_role: Annotated[str | None, typer.Option(help="who is rated (default: by file shape)")] = None,
        budget_usd: Annotated[float | None, typer.Option(help="stop calling the judge beyond this spend")] = None,
        run_id: Annotated[str | None, typer.Option(help="resume this run (finished calls are cache hits)")] = None,
        out: Annotated[Path | None, typer.Option(help="also write the ratings as JSONL")] = None,
        store: Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")] = None,
        max_failures: MaxFailuresOpt = None,
    ) -> None:
        """Rate each dialogue's target speaker on every trait; ratings land in the store; prints the run id.
        Exits 1 when more dialogues than ``--max-failures`` got no rating."""
        import json

        from rich.console import Console

        from traitlab.data import load_dialogues, load_trait_set
        from traitlab.judges.rate import judge_client, rate_dialogues
        from traitlab.settings import store_path
        from traitlab.store import Store, now

        console = Console()
        policy = policy_or_fail(max_failures)
        check_outputs(("--out", out, False), ("--store", store_path(store), False))
        try:
            trait_set = load_trait_set(traits)
            rated = load_dialogues(dialogues, target_role=target_role)[:limit]
        except ValueError as e:
            raise fail(e) from None
        config = {"dialogues": str(dialogues), "traits": str(traits), "trait_set_hash": trait_set.hash,
                  "judge": judge, "mode": mode, "expected": expected, "limit": limit}
        with Store(store_path(store)) as st, st.running("score", trait_set.name, config, run_id=run_id) as run:
            started = now()
            st.add_dialogues(run, rated)
            client = judge_client(judge, store=st, run_id=run, budget_usd=budget_usd)
            ratings = rate_dialogues(rated, trait_set, client, mode=mode, expected=expected)
            errors = st.failed_calls(run, since=started)
            unrated = len({d.id for d in rated} - {r.dialogue_id for r in ratings})
            summary = {"dialogues": len(rated), "rated": len(ratings), "unrated": unrated,
                       "failed_calls": len(errors), "failures": summarise_failures(errors),
                       "cost_usd": st.run_cost(run)}
            st.finish_run(run, "done" if not unrated else "partial" if ratings else "failed", summary)
        if out:
            out.write_text("".join(json.dumps({"id": r.dialogue_id, "judge": r.judge, "ratings": r.ratings}) + "\n"
                                   for r in ratings), encoding="utf-8")
        console.print(f"rated {len(ratings)}/{len(rated)} dialogues on {len(trait_set.traits)} traits "
                      f"({len(errors)} failed calls, ${summary['cost_usd']:.4f})" + (f"; wrote {out}" if out else ""))
        print(run)
        finish(unrated, len(rated), policy, errors=errors)


def _register_aggregate(app: typer.Typer) -> None:
    """``traitlab fit``: fit the calibrated aggregator."""

    @app.command("fit")
    def fit(
        ratings: Annotated[Path, typer.Option(help="ratings JSONL ({id, judge, ratings: {trait_id: value}})")],
        dialogues: Annotated[Path, typer.Option(help="labelled dialogues (labels and game ids)")],
        traits: Annotated[Path, typer.Option(help="trait set JSON the ratings were made on")],
        judge: Annotated[str | None, typer.Option(help="this judge's ratings ('mean': mean of all judges)")] = None,
        penalty: Annotated[Literal["l1", "l2", "elasticnet"], typer.Option(help="logistic penalty")] = "l1",
        C: Annotated[float, typer.Option("--C", help="inverse regularisation strength")] = 1.0,
        l1_ratio: Annotated[float, typer.Option(help="elastic-net mixing (1 = L1)")] = 0.5,
        calibration: Annotated[Literal["platt", "isotonic", "none"], typer.Option(help="P(human) map")] = "platt",
        folds: Annotated[int, typer.Option(help="cross-validation folds (grouped by game)")] = 5,
        seed: Annotated[int, typer.Option(help="fold shuffling and bootstrap seed")] = 0,
        bootstrap: Annotated[int, typer.Option(help="game-bootstrap refits for weight CIs and selection")] = 200,
        select: Annotated[Literal["none", "threshold", "stable"], typer.Option(
            help="refit on the traits kept by |w| > 0.2 (HAL) or by bootstrap stability")] = "none",
        out: Annotated[Path, typer.Option(help="where to write the aggregator")] = Path("aggregator.json"),
        report: Annotated[Path | None, typer.Option(help="where to write the fit report JSON")] = None,
        store: Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")] = None,
    ) -> None:
        """Fit a calibrated logistic aggregator on trait ratings, cross-validated by game."""
        from rich.console import Console
        from rich.table import Table

        from traitlab.data import load_dialogues, load_ratings, load_trait_set
        from traitlab.judges.aggregate import average_judges, fit_aggregator
        from traitlab.settings import store_path
        from traitlab.store import Store

        console = Console()
        check_outputs(("--out", out, False), ("--report", report, False), ("--store", store_path(store), False))
        kw = {"penalty": penalty, "C": C, "folds": folds, "seed": seed, "calibration": calibration,
              "l1_ratio": l1_ratio, "n_bootstrap": bootstrap, "name": judge}
        try:  # bad files and unusable ratings (DataError is a ValueError) end in one clear line
            rated = load_ratings(ratings, judge=None if judge == "mean" else judge)
            if judge == "mean":
                rated = average_judges(rated)
            trait_set = load_trait_set(traits)
            labelled = load_dialogues(dialogues)
            agg, rep = fit_aggregator(rated, labelled, trait_set, **kw)
            reports = [rep]
            if select != "none":
                kept = rep.selected_threshold if select == "threshold" else rep.selected_stable
                if not kept:
                    raise ValueError(f"no trait passes the --select {select} rule at C={C}")
                agg, rep = fit_aggregator(rated, labelled, trait_set, **kw, only=kept)
                reports.append(rep)
        except (ValueError, KeyError) as e:  # KeyError: a rating lacks traits of the set (it names them)
            raise fail(e.args[0] if isinstance(e, KeyError) else e) from None
        config = {"ratings": str(ratings), "dialogues": str(dialogues), "traits": str(traits), "judge": judge,
                  "penalty": penalty, "C": C, "l1_ratio": l1_ratio, "calibration": calibration, "folds": folds,
                  "seed": seed, "bootstrap": bootstrap, "select": select, "trait_set_hash": trait_set.hash}
        agg.save(out)
        if report:
            report.write_text(rep.model_dump_json(indent=2) + "\n", encoding="utf-8")

        cv = Table(title=f"cross-validated ({folds} folds by game, {rep.n_rows} transcripts, {rep.n_games} games)")
        for col in ("judge", "traits", "pairwise acc", "AUC", "accuracy", "ECE", "ECE uncal.", "log loss", "used"):
            cv.add_column(col, justify="left" if col in ("judge", "traits") else "right")
        for r, label in zip(reports, ["all", f"{select} (refit)"], strict=False):
            m = r.cv
            used = sum(abs(s.weight) > 0 for s in r.traits.values())
            pw = "-" if m.pairwise_accuracy is None else f"{m.pairwise_accuracy:.4f}"
            cv.add_row(r.name, label, pw, f"{m.auc:.4f}", f"{m.accuracy:.4f}",
                       f"{m.ece:.4f}", f"{m.ece_uncalibrated:.4f}", f"{m.log_loss:.4f}", f"{used}/{len(r.traits)}")
        console.print(cv)
        tt = Table(title=f"weights per rating point ({bootstrap} game-bootstrap fits)")
        for col in ("trait", "weight", "95% CI", "sel. freq", f"|w|>{rep.threshold}", f"freq>={rep.min_freq}"):
            tt.add_column(col, justify="left" if col == "trait" else "right", no_wrap=True)
        tt.add_column("text", no_wrap=True, overflow="ellipsis", max_width=50)
        for tid, s in sorted(rep.traits.items(), key=lambda kv: -abs(kv[1].weight)):
            ci = "" if s.ci_low is None else f"[{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
            freq = "" if s.selection_freq is None else f"{s.selection_freq:.2f}"
            tt.add_row(tid, f"{s.weight:+.3f}", ci, freq, "x" if tid in rep.selected_threshold else "",
                       "x" if tid in rep.selected_stable else "", trait_set[tid].text[:60])
        console.print(tt)

        with Store(store_path(store)) as st:
            run_id = st.start_run("fit", name=rep.name, config=config)
            st.put_artifact(run_id, "aggregator", agg.model_dump(mode="json"))
            st.put_artifact(run_id, "fit_report", rep.model_dump(mode="json"))
            if len(reports) > 1:
                st.put_artifact(run_id, "fit_report_all_traits", reports[0].model_dump(mode="json"))
            st.finish_run(run_id, summary=rep.cv.model_dump() | {"out": str(out)})
        console.print(f"aggregator -> {out}" + (f", report -> {report}" if report else "") + f" (run {run_id})")


def _register_reward(app: typer.Typer) -> None:
    """``traitlab distill`` and ``traitlab reward score``: the local reward."""

    @app.command("distill")
    def distill(
        data: Annotated[Path, typer.Option(help="the public data folder (hal_turing/, hal_doctor/)")] = Path(
            "../shared/data"),
        out: Annotated[Path, typer.Option(help="folder for the fitted reward")] = Path("local_reward"),
        seed: Annotated[int, typer.Option(help="training and fold seed")] = 0,
    ) -> None:
        """Distil the LLM judge into a local reward (no LLM call at scoring time)."""
        from traitlab.judges.reward import RewardConfig
        from traitlab.judges.reward import distill as run

        check_outputs(("--out", out, True))
        try:
            reward = run(data, RewardConfig(seed=seed))
        except ValueError as e:  # DataError included: one clear line with file:line [field]
            raise fail(e) from None
        reward.save(out)
        held = reward.meta["heldout"]
        typer.echo(f"saved {out}: held-out pairwise accuracy {held['pairwise_accuracy']:.3f}, "
                   f"ECE {held['ece']:.3f}, mean trait Spearman {held['trait_spearman_mean']:.3f}")

    reward_app = typer.Typer(help="The distilled local reward.", no_args_is_help=True)

    @reward_app.command("score")
    def score(
        dialogues: Annotated[Path, typer.Option(help="JSONL: Turing (messages) or doctor (dialogue) records")],
        out: Annotated[Path, typer.Option(help="JSONL: {id, score, traits} per input line")],
        reward: Annotated[Path | None, typer.Option(help="a saved reward folder (default: the shipped one)")] = None,
    ) -> None:
        """Score the judged speaker of each dialogue (higher = more human-like); writes all lines or none."""
        import json

        from traitlab.data import load_dialogues
        from traitlab.judges.reward import load_reward

        check_outputs(("--out", out, False))
        try:
            scores = load_reward(reward).score(load_dialogues(dialogues))
        except ValueError as e:  # DataError included: one clear line with file:line [field]
            raise fail(e) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(s.model_dump(mode="json")) + "\n" for s in scores), encoding="utf-8")
        typer.echo(f"scored {len(scores)} dialogues -> {out}")

    app.add_typer(reward_app, name="reward")
