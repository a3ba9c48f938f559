"""Agreement of the six real HAL judges (gpt-5, gpt-5-mini, gpt-4.1, gpt-4.1-mini, gpt-oss-120b, gpt-oss-20b)
on the 32 HAL32Q traits of 856 Turing transcripts: per-trait Krippendorff alpha and Spearman, and per pair.

    python bench/judge_bench_hal.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from traitlab.data import load_ratings, load_trait_set
from traitlab.evals.judge_bench import agreement_rich_table, agreement_table

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    turing = args.data / "hal_turing"
    started = time.perf_counter()
    ratings = load_ratings(turing / "judge_ratings.jsonl")
    traits = load_trait_set(turing / "traits_hal32.json", name="hal32")
    table = agreement_table(ratings, traits.ids)
    elapsed = time.perf_counter() - started
    console = Console(width=140)
    for t in agreement_rich_table(table, {t.id: t.text for t in traits.traits}):
        console.print(t)
    console.print(f"{len(ratings)} ratings, {len(table.judges)} judges, {len(traits.ids)} traits; "
                  f"mean per-trait ordinal alpha {table.mean_alpha:.3f}; computed in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
