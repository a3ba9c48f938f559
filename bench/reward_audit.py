"""The reward audit of the local reward on held-out Turing games: how far each cheap edit lifts AI transcripts.

    python bench/reward_audit.py [--data ../shared/data] [--folds 0] [--seeds 0 1 2] [--max-depth 3] [--beam 3]
                                 [--set FIELD=JSON ...]   (RewardConfig overrides, e.g. edit_chain=3)

For each seed and fold (5 folds grouped by game or doctor persona; the seed draws the folds, the training edits
and the initialisation, and one seed's audit can miss a hole another finds) a reward is trained with HAL's recipe
through ``distill`` on the other folds only, and audited
(``traitlab.judges.audit.audit``) on the held-out games: every operator applied to the AI witness turns,
then a beam search over compositions. The table is the issue-10 table: share of edited AI transcripts
above the median held-out human transcript, and the mean shift in SDs of the real held-out scores.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import traitlab  # noqa: F401  (offline knobs first)
from traitlab.judges.aggregate import grouped_folds
from traitlab.judges.audit import AuditReport, audit
from traitlab.judges.reward import LocalReward, RewardConfig, distill
from traitlab.presets.hal.reward import CONTRAST, HalInputs, inputs

REPO = Path(__file__).resolve().parent.parent


def heldout_reward(x: HalInputs, train: set[str], cfg: RewardConfig) -> LocalReward:
    """The HAL recipe of ``distill`` on the training rows only (its own inner CV fits the calibration)."""
    rows = [d for d in x.dialogues if d.id in train]
    return distill(rows, [r for r in x.ratings if r.dialogue_id in train], x.trait_set, CONTRAST, config=cfg)


def print_report(rep: AuditReport, title: str) -> None:
    r = rep.real
    print(f"== {title}: {rep.n_negative} AI / {rep.n_positive} human held-out transcripts; median human score "
          f"{r['median_positive']:+.2f}, real score SD {r['sd']:.2f}, mean AI {r['mean_negative']:+.2f} ==")
    print(f"  {'edit of each witness turn':<44} {'share > median human':>20} {'shift (SD)':>10} "
          f"{'mean score':>10} {'max':>8}  detected by")
    print(f"  {'(unedited)':<44} {r['share_above']:>20.2f} {0:>10.2f} {r['mean_negative']:>+10.2f}")
    for row in [*rep.edits, *rep.composites]:
        print(f"  {row.edit:<44} {row.share_above:>20.2f} {row.shift_sd:>+10.2f} {row.mean_score:>+10.2f} "
              f"{row.max_score:>+8.1f}  {', '.join(row.detected_by)}")
    worst = rep.worst
    print(f"  {'PASS' if rep.passed else 'FAIL'} at threshold {rep.threshold:.2f}: worst {worst.edit!r} "
          f"{worst.share_above:.2f}; {sum(not e.passed for e in rep.edits)}/{len(rep.edits)} single edits fail; "
          f"{rep.n_scored} edited transcripts scored")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--folds", default="0", help="comma-separated held-out folds (0-4)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="RewardConfig seeds (default: its own)")
    ap.add_argument("--max-depth", type=int, default=3)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.05)
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
    groups = [CONTRAST.group_of(d) for d in x.dialogues]
    reports: list[tuple[int, AuditReport]] = []
    for seed in args.seeds or [cfg.seed]:
        seeded = cfg.model_copy(update={"seed": seed})
        fold = grouped_folds(groups, seeded.folds, seed)
        for k in (int(f) for f in args.folds.split(",")):
            t = time.time()
            reward = heldout_reward(x, {d.id for d, f in zip(x.dialogues, fold, strict=True) if f != k}, seeded)
            held = [d for d, f in zip(x.dialogues, fold, strict=True) if f == k and d.label is not None]
            rep = audit(reward, held, ("human", "ai"), max_depth=args.max_depth, beam=args.beam,
                        threshold=args.threshold, name=f"local reward, seed {seed}, fold {k} held out")
            print_report(rep, f"seed {seed}, fold {k} held out ({len(held) // 2} games, {time.time() - t:.0f}s)")
            m = reward.meta["heldout"]
            print(f"  the audited reward's own inner CV (other folds): pairwise {m['pairwise_accuracy']:.3f}, "
                  f"ECE {m['ece']:.3f}, fidelity {m['fidelity_spearman']:.3f}")
            reports.append((seed, rep))
    if len(reports) > 1:
        summarise(reports)


def summarise(reports: list[tuple[int, AuditReport]]) -> None:
    """Single edits over every audited (seed, fold), and each one's worst edit or composite."""
    print(f"== single edits over {len(reports)} held-out (seed, fold) audits: share above the median human "
          "(mean, min-max) ==")
    shares: dict[str, list[float]] = {e.edit: [] for e in reports[0][1].edits}
    for _, rep in reports:
        for e in rep.edits:
            shares[e.edit].append(e.share_above)
    for edit, v in sorted(shares.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"  {edit:<24} {np.mean(v):.2f}  ({min(v):.2f}-{max(v):.2f})")
    for seed in dict.fromkeys(s for s, _ in reports):
        print(f"  seed {seed}, worst per fold: " + "; ".join(
            f"{r.worst.edit} {r.worst.share_above:.2f}" for s, r in reports if s == seed))
    worst = [r.worst.share_above for _, r in reports]
    print(f"  {sum(r.passed for _, r in reports)} of {len(reports)} audits pass; "
          f"{sum(not e.passed for _, r in reports for e in r.edits)} single-edit failures; worst edit or composite "
          f"per audit: mean {np.mean(worst):.3f}, max {max(worst):.2f}")


if __name__ == "__main__":
    main()
