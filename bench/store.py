"""Store write speed: ratings added one statement per batch (Store.add_ratings) vs a per-row executemany.

Run: python bench/store.py [--dialogues 500] [--traits 32]
Both sides write the same rows into fresh DuckDB files in this run; prints ms per row and the ratio, plus the
cost of the store's per-process hold (record_call in a burst, and the open/close a lone call pays).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from traitlab.store import SCHEMA, CallRecord, Store
from traitlab.types import TraitRatings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogues", type=int, default=500)
    ap.add_argument("--traits", type=int, default=32)
    args = ap.parse_args()
    ratings = [TraitRatings(dialogue_id=f"d{i}", judge="j", ratings={f"t{k:02d}": float(1 + (i + k) % 5)
                                                                     for k in range(args.traits)},
                            prompt_version="p", call_id=f"c{i}") for i in range(args.dialogues)]
    n = args.dialogues * args.traits
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "old.duckdb"))
        con.execute(SCHEMA)
        rows = [["r", r.dialogue_id, r.judge, r.trait_set_hash, r.prompt_version, t, v, r.call_id, r.rationale]
                for r in ratings for t, v in r.ratings.items()]
        t0 = time.perf_counter()
        con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        old = time.perf_counter() - t0
        con.close()
        with Store(Path(tmp) / "new.duckdb") as st:
            t0 = time.perf_counter()
            added = st.add_ratings("r", ratings)
            new = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = st.add_ratings("r", ratings)
            rerun = time.perf_counter() - t0
            calls = 200
            t0 = time.perf_counter()
            for i in range(calls):
                st.record_call(CallRecord(call_id=f"c{i}", request_hash=f"h{i}", model="m"))
            burst = time.perf_counter() - t0
            lone = Store(Path(tmp) / "lone.duckdb", idle_s=0)
            t0 = time.perf_counter()
            for i in range(20):
                lone.record_call(CallRecord(call_id=f"c{i}", request_hash=f"h{i}", model="m"))
            single = time.perf_counter() - t0
            lone.close()
    assert added == n and again == 0
    print(f"{n} rating rows: executemany {old / n * 1e3:.3f} ms/row, Store.add_ratings {new / n * 1e3:.4f} ms/row "
          f"({old / new:.0f}x faster); re-adding the same rows (adds 0) {rerun * 1e3:.0f} ms")
    print(f"record_call: {burst / calls * 1e3:.2f} ms/call in a burst (file held), "
          f"{single / 20 * 1e3:.1f} ms/call when every call opens and closes the file")


if __name__ == "__main__":
    main()
