"""CLI commands of traitlab.judges: scoring, aggregator fitting, reward distillation and scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    _register_score(app)
    _register_aggregate(app)
    _register_reward(app)


def _register_score(app: typer.Typer) -> None:
    """``traitlab score``: rate dialogues on a trait set with an LLM judge."""


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
        from traitlab.judges.aggregate import average_judges, fit_aggregator

        from traitlab.data import load_dialogues, load_ratings, load_trait_set
        from traitlab.settings import store_path
        from traitlab.store import Store

        console = Console()
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
        except ValueError as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
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
