"""Which HAL judge is worth its price? Cross-validated aggregator fits on each judge's HAL32Q ratings of the
428 staged Turing games (and on the mean of the six judges), beside HAL's fixed HL16 weights applied by
trait id to the same ratings, and the README's HL16 figures.

    python bench/aggregate_judges.py [--data ../shared/data] [--penalty l1] [--C 1.0] [--seeds 5]

CV figures are means (± sd) over ``--seeds`` fold shufflings (5 folds grouped by game). A second table
shows, for GPT-5, how the penalty strength trades traits used against pairwise accuracy, with HAL's
|w| > 0.2 rule and the bootstrap-stability rule side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from traitlab.data import load_dialogues, load_ratings, load_trait_set
from traitlab.judges.aggregate import average_judges, fit_aggregator, pairwise_accuracy
from traitlab.presets.hal.traits import aggregator_from_hl16

REPO = Path(__file__).resolve().parent.parent
JUDGES = ["gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-oss-120b", "gpt-oss-20b"]
README_HL16 = {"gpt-5": 0.8575, "gpt-5-mini": 0.7967, "gpt-4.1": 0.6846, "gpt-4.1-mini": 0.6332,
               "gpt-oss-120b": 0.7570, "gpt-oss-20b": 0.6869}


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--penalty", default="l1", choices=["l1", "l2", "elasticnet"])
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=5, help="fold shufflings to average over")
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap fits for the selection table")
    args = ap.parse_args()
    d = args.data / "hal_turing"
    t0 = time.perf_counter()
    dialogues = load_dialogues(d / "dialogues.jsonl")
    traits = load_trait_set(d / "traits_hal32.json")
    all_ratings = load_ratings(d / "judge_ratings.jsonl")
    hl16 = aggregator_from_hl16(d / "hl16_weights.json", traits)
    by_judge = {j: [r for r in all_ratings if r.judge == j] for j in JUDGES}
    by_judge["mean of 6"] = average_judges(all_ratings, judge="mean of 6")

    console = Console()
    table = Table(title=f"{args.penalty} C={args.C}, 5-fold CV grouped by game, mean ± sd over {args.seeds} "
                        f"shufflings; HL16 = HAL's fixed weights by trait id")
    for col in ("judge", "CV pairwise", "CV AUC", "CV accuracy", "CV ECE (Platt)", "traits used",
                "HL16 pairwise", "README HL16", "CV - HL16"):
        table.add_column(col, justify="left" if col == "judge" else "right")
    for judge, ratings in by_judge.items():
        runs = [fit_aggregator(ratings, dialogues, traits, penalty=args.penalty, C=args.C, seed=s, n_bootstrap=0)
                for s in range(args.seeds)]
        pw = [rep.cv.pairwise_accuracy for _, rep in runs]
        hl = pairwise_accuracy({r.dialogue_id: hl16.logit(r) for r in ratings}, dialogues)
        table.add_row(judge, _ms(pw), _ms([rep.cv.auc for _, rep in runs]),
                      _ms([rep.cv.accuracy for _, rep in runs]), _ms([rep.cv.ece for _, rep in runs]),
                      f"{len(runs[0][0].trait_ids)}/{len(traits.ids)}", f"{hl:.4f}",
                      f"{README_HL16[judge]:.4f}" if judge in README_HL16 else "-", f"{np.mean(pw) - hl:+.4f}")
    console.print(table)

    sel = Table(title=f"gpt-5: penalty strength vs traits kept ({args.bootstrap} game-bootstrap fits, seed 0)")
    for col in ("penalty", "C", "CV pairwise", "CV AUC", "non-zero", "|w|>0.2 (HAL)", "freq>=0.8 (stable)"):
        sel.add_column(col, justify="right")
    for penalty, C in [("l1", 0.03), ("l1", 0.1), ("l1", 0.3), ("l1", 1.0), ("l2", 1.0), ("elasticnet", 0.1)]:
        agg, rep = fit_aggregator(by_judge["gpt-5"], dialogues, traits, penalty=penalty, C=C,
                                  n_bootstrap=args.bootstrap)
        sel.add_row(penalty, f"{C:g}", f"{rep.cv.pairwise_accuracy:.4f}", f"{rep.cv.auc:.4f}",
                    str(len(agg.trait_ids)), str(len(rep.selected_threshold)), str(len(rep.selected_stable)))
    console.print(sel)
    console.print(f"wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
