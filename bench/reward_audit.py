"""The reward audit of the local reward on held-out Turing games: how far each cheap edit lifts AI transcripts.

    python bench/reward_audit.py [--data ../shared/data] [--seeds 0 1 2]
                                 [--set FIELD=JSON ...]   (RewardConfig overrides, e.g. edit_chain=3)

For each seed (it draws the 5 folds grouped by game or doctor persona, the training edits and the
initialisation) the HAL recipe is distilled once; ``distill`` audits its own cross-fit
(``traitlab.judges.reward.heldout_audit``): each fold's reward, trained on the other folds, is red-teamed on the
~86 games it never saw (every operator on the AI witness turns, then a beam search over compositions), and every
operator and every composition a fold's search found is then measured on all the folds, each AI transcript
scored by the reward that did not train on it and compared with its own fold's median human. So a share is
measured on all 428 staged AI transcripts, with a 95% Wilson interval, beside each fold's own worst (the per-fold
view, where 5 of ~86 above is 0.06).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import traitlab  # noqa: F401  (offline knobs first)
from traitlab.judges.audit import AuditReport
from traitlab.judges.reward import RewardConfig, distill
from traitlab.presets.hal.reward import CONTRAST, inputs

REPO = Path(__file__).resolve().parent.parent


def print_report(rep: AuditReport, title: str, limit: int = 12) -> None:
    r = rep.real
    print(f"== {title}: {rep.n_negative} AI / {rep.n_positive} human transcripts over {rep.folds} held-out folds; "
          f"unedited share above its fold's median human {r['share_above']:.3f}, real score SD {r['sd']:.2f} ==")
    print(f"  {'edit of each witness turn':<44} {'share > median human':>20} {'95% interval':>14} {'shift (SD)':>10}"
          f"  detected by")
    for row in [*rep.edits[:limit], *rep.composites]:
        lo, hi = row.share_interval
        print(f"  {row.edit:<44} {row.share_above:>20.3f} {f'[{lo:.3f}, {hi:.3f}]':>14} {row.shift_sd:>+10.2f}  "
              f"{', '.join(row.detected_by)}")
    print("  each fold's own worst: " + "; ".join(f"{w.edit} {w.share_above:.2f}" for w in rep.fold_worst))
    worst = rep.worst
    print(f"  {'PASS' if rep.passed else 'FAIL'} at threshold {rep.threshold:.2f}: worst {worst.edit!r} "
          f"{worst.share_above:.3f} [{worst.share_interval[0]:.3f}, {worst.share_interval[1]:.3f}]; "
          f"{sum(not e.passed for e in rep.edits)}/{len(rep.edits)} single edits fail; "
          f"{sum(w.share_above <= rep.threshold for w in rep.fold_worst)} of {rep.folds} folds pass on their own; "
          f"{rep.n_scored} edited transcripts scored")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="RewardConfig seeds (default: its own)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="a RewardConfig field for the trained rewards, e.g. --set edit_chain=3 (repeatable)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    try:
        cfg = RewardConfig.with_settings(args.set)
    except ValueError as e:  # a pydantic ValidationError too: a field given a value it does not take
        ap.error(f"--set: {e}")
    print(f"RewardConfig overrides: {args.set or 'none'}")
    x = inputs(args.data)
    reports = []
    for seed in args.seeds or [cfg.seed]:
        t = time.time()
        reward = distill(x.dialogues, x.ratings, x.trait_set, CONTRAST,
                         config=cfg.model_copy(update={"seed": seed, "audit": True}))
        rep = reward.audit
        print_report(rep, f"seed {seed} ({time.time() - t:.0f}s with the training)")
        m = reward.meta["heldout"]
        print(f"  the same cross-fit: pairwise {m['pairwise_accuracy']:.3f}, ECE {m['ece']:.3f}, "
              f"fidelity {m['fidelity_spearman']:.3f}")
        reports.append((seed, rep))
    if len(reports) > 1:
        worst = [r.worst.share_above for _, r in reports]
        folds = [w.share_above for _, r in reports for w in r.fold_worst]
        print(f"== over seeds {[s for s, _ in reports]}: {sum(r.passed for _, r in reports)} of {len(reports)} "
              f"pooled audits pass (worst {np.mean(worst):.3f} mean, {max(worst):.3f} max); per fold "
              f"{sum(v <= cfg.audit_threshold for v in folds)} of {len(folds)} pass on their own "
              f"(worst {np.mean(folds):.3f} mean, {max(folds):.2f} max) ==")


if __name__ == "__main__":
    main()
