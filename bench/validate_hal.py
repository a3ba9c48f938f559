"""Validate HAL's 32 traits on the real ratings of six LLM judges (428 staged Turing games, 856 witnesses).

Run: python bench/validate_hal.py [--data ../shared/data] [--out table.csv]
Prints AUC per trait x judge (* = significant after BH-FDR at 0.05 over all 192 tests), Krippendorff's
alpha (ordinal) across the six judges per trait, the redundant groups, the selected traits, and how the
selection compares with the 16 traits HAL's L1 logistic regression kept (HL16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from traitlab.data import load_dialogues, load_ratings, load_trait_set
from traitlab.discovery.validate import validate, write_table

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    turing = args.data / "hal_turing"
    t0 = time.perf_counter()
    labels = load_dialogues(turing / "dialogues.jsonl")
    ratings = load_ratings(turing / "judge_ratings.jsonl")
    traits = load_trait_set(turing / "traits_hal32.json")
    report = validate(ratings, labels, traits)
    elapsed = time.perf_counter() - t0
    judges = report.judges
    table = report.auc_table()
    sig = {(r.trait_id, r.judge): r.significant for r in report.rows}
    print(f"{len(ratings)} ratings, {len(labels)} labelled dialogues, {len(judges)} judges; {elapsed:.1f}s\n")
    print("AUC = P(human witness rated higher than AI witness); * significant (BH-FDR q < 0.05); "
          "alpha = Krippendorff ordinal across judges")
    print(f"{'trait':5s} " + " ".join(f"{j[:12]:>13s}" for j in judges) + f" {'n_sig':>5s} {'alpha':>6s}  text")
    for t in traits.traits:
        cells = [f"{table[t.id][j]:.3f}{'*' if sig[t.id, j] else ' '}" for j in judges]
        n_sig = sum(sig[t.id, j] for j in judges)
        a = report.agreement[t.id]
        print(f"{t.id:5s} " + " ".join(f"{c:>13s}" for c in cells) + f" {n_sig:5d} {a:6.3f}  {t.text[:60]}")
    for j in judges:
        n = sum(sig[t.id, j] for t in traits.traits)
        print(f"  {j}: {n}/32 traits significant")
    alphas = [a for a in report.agreement.values() if a is not None]
    print(f"alpha: median {sorted(alphas)[len(alphas) // 2]:.3f}, min {min(alphas):.3f}, max {max(alphas):.3f}")
    print(f"redundant groups (|Spearman| >= 0.7 on judge-mean ratings): {report.redundant_groups}")
    print(f"selected ({len(report.selected)}): {report.selected}")
    hl16 = set(json.loads((turing / "hl16_weights.json").read_text())["weights"])
    sel = set(report.selected)
    print(f"HL16 traits: {sorted(hl16)}\n  overlap with selection: {len(sel & hl16)}/{len(hl16)}; "
          f"HL16 traits significant for a majority of judges: "
          f"{sum(sum(sig[t, j] for j in judges) > len(judges) // 2 for t in hl16)}/{len(hl16)}")
    if args.out:
        print(f"wrote {write_table(report, args.out)}")


if __name__ == "__main__":
    main()
