"""Consolidate HAL's real GPT-5 proposals (deterministic medoid fallback) and measure recall of HAL's 32 traits.

Run: python bench/consolidate.py [--data ../shared/data] [--n-traits 40]
Prints the number of traits, recall (fraction of HAL traits whose nearest consolidated trait has cosine
>= 0.6) and wall time, next to the sizes and recall at other ``n_traits`` for comparison.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from traitlab.data import load_proposals, load_trait_set
from traitlab.discovery.consolidate import consolidate, recall
from traitlab.embed import embed_texts

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--n-traits", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None, help="write the TraitSet JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    records = load_proposals(args.data / "hal_turing" / "proposals.jsonl")
    hal = load_trait_set(args.data / "hal_turing" / "traits_hal32.json")

    cache: dict[str, object] = {}

    def embed(texts: list[str]):  # embed each text once across the comparison runs below
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, embed_texts(missing), strict=True))
        import numpy as np

        return np.stack([cache[t] for t in texts])

    t0 = time.perf_counter()
    result = consolidate(records, n_traits=args.n_traits, name="hal-gpt5-consolidated",
                         source="hal_turing/proposals.jsonl", embed=embed)
    elapsed = time.perf_counter() - t0
    rec, matches = recall(hal, result.trait_set, embed=embed)
    ts = result.trait_set
    print(f"statements {result.n_statements} from {result.n_games} games -> {len(ts.traits)} traits "
          f"(method {result.method}, hash {ts.hash}); time {elapsed:.1f}s on {torch.get_num_threads()} threads")
    print(f"recall of HAL32 at cosine>=0.6: {rec:.3f} ({round(rec * len(hal.traits))}/{len(hal.traits)})")
    print("\nconsolidated traits (support = games):")
    for t in ts.traits:
        print(f"  {t.id} [{t.group}] support {t.provenance.support:3d}  {t.text}")
    print("\nHAL trait -> nearest consolidated trait (cosine):")
    for t in hal.traits:
        fid, cos = matches[t.id]
        print(f"  {t.id} {cos:.2f} {'ok ' if cos >= 0.6 else 'MISS'} {t.text[:60]:60s} -> {ts[fid].text[:60]}")
    print("\nn_traits   traits  recall   (same data, embeddings cached: the time is Ward + medoids alone)")
    for k in (20, 30, args.n_traits, 50):
        t1 = time.perf_counter()
        r = consolidate(records, n_traits=k, embed=embed)
        took = time.perf_counter() - t1
        print(f"  {k:6d}   {len(r.trait_set.traits):6d}   {recall(hal, r.trait_set, embed=embed)[0]:.3f}"
              f"   (clustering + medoids {took:.2f}s)")
    if args.out:
        ts.save(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
