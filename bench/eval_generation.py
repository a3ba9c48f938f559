"""Eval generation against the loopback OpenAI-compatible server: wall time over the ideal.

32 conversations of 5 turns (a scripted interlocutor, so 5 model calls each) at 200 ms per call, through
``traitlab.evaluate`` on a real store (every call logged, every finished conversation stored; the server is
named in the suite's ``provider:`` block, so ``auto`` takes the openai SDK fast path). The ideal is
ceil(conversations / concurrency) x turns x latency: every conversation in flight, no client cost. Beside it,
the raw SDK: the same conversations (same turns, same concurrency, one event loop) through a bare
``openai.AsyncOpenAI`` with nothing stored, which is what the client and the machine's load cost before traitlab
adds anything. Each set is run ``--repeat`` times (default 3), traitlab and raw in a rotating order, and the
median is printed. The server runs in its own process, as a provider would, so it does not compete with
traitlab for the GIL.

    python bench/eval_generation.py [--conversations 32] [--turns 5] [--latency 0.2] [--concurrency 32 4]
                                    [--repeat 3] [--transport auto]

On a shared machine note the load (``uptime``): with two busy cores every call's CPU lands on the critical path.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback_server import LoopbackServer

from traitlab.evals.generate import evaluate
from traitlab.evals.suite import load_suite
from traitlab.store import Store

SUITE = """\
name: bench-{tag}
scenario:
  scripted: {{lines: [{lines}]}}
conversations: {n}
turns: {turns}
model: openai/bench-model
system_prompt: you are a person ({tag})
provider: {{api_base: "{base}", api_key_env: BENCH_KEY}}
seed: 0
scorers: []
"""


def _serve(conn: mp.connection.Connection, latency_s: float) -> None:
    server = LoopbackServer(latency_s=latency_s).start()
    conn.send(server.base_url)
    conn.recv()  # stop
    server.stop()


async def _raw(base: str, tag: str, n: int, turns: int, concurrency: int) -> int:
    """``n`` conversations of ``turns`` calls each through a bare AsyncOpenAI; returns how many failed."""
    import openai

    client = openai.AsyncOpenAI(base_url=base, api_key="sk-bench", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            history = [{"role": "system", "content": f"you are a person ({tag})"}]
            for t in range(turns):
                history.append({"role": "user", "content": f"{tag} {i} question {t}"})
                r = await client.chat.completions.create(model="bench-model", messages=history)
                history.append({"role": "assistant", "content": r.choices[0].message.content})

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    await client.close()
    return sum(r is not None for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=32)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32, 4])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", default="auto", choices=["auto", "litellm", "openai"])
    args = ap.parse_args()
    os.environ["BENCH_KEY"] = "sk-bench"
    os.environ["TRAITLAB_TRANSPORT"] = args.transport
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(child, args.latency), daemon=True)
    proc.start()
    base = parent.recv()
    lines = ", ".join(f'"question {t}"' for t in range(args.turns))
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
            def suite(tag: str, n: int):
                path = Path(tmp) / f"{tag}.yaml"
                path.write_text(SUITE.format(tag=tag, lines=lines, n=n, turns=args.turns, base=base))
                return load_suite(path)

            evaluate(suite("warmup", 1), None, store, run_id="warmup")  # one-time setup (imports, cost map)
            asyncio.run(_raw(base, "warmup", 1, 1, 1))
            for c in args.concurrency:
                walls: dict[str, list[float]] = {"traitlab": [], "raw": []}
                cpus, checks = [], []
                for r in range(args.repeat):
                    for name in (["traitlab", "raw"] if r % 2 == 0 else ["raw", "traitlab"]):
                        start, cpu = time.perf_counter(), time.process_time()
                        if name == "raw":
                            raw_failed = asyncio.run(_raw(base, f"raw-c{c}-r{r}", args.conversations, args.turns, c))
                            walls[name].append(time.perf_counter() - start)
                            continue
                        run = f"c{c}-r{r}"
                        res = evaluate(suite(run, args.conversations), None, store, run_id=run, concurrency=c)
                        walls[name].append(time.perf_counter() - start)
                        cpus.append(time.process_time() - cpu)
                        calls = store.sql("SELECT count(*) FROM calls WHERE run_id = ? AND error IS NULL", [run])[0][0]
                        checks.append((res.generated, len(res.failed), calls, raw_failed if r else 0))
                ideal = math.ceil(args.conversations / c) * args.turns * args.latency
                rows.append((c, statistics.median(walls["traitlab"]), ideal, statistics.median(walls["raw"]),
                             statistics.median(cpus), checks[-1]))
    finally:
        parent.send("stop")
        proc.join(5)
    print(f"{args.conversations} conversations x {args.turns} turns, {args.latency * 1000:.0f} ms per call, "
          f"transport {args.transport}, median of {args.repeat}")
    print(f"{'concurrency':>11} {'wall s':>7} {'ideal s':>7} {'wall/ideal':>10} {'raw SDK s':>9} "
          f"{'raw/ideal':>9} {'wall/raw':>8} {'CPU s':>6} {'stored':>6} {'failed':>6} {'calls':>5}")
    for c, wall, ideal, raw, cpu, (gen, failed, calls, _) in rows:
        print(f"{c:>11} {wall:7.2f} {ideal:7.2f} {wall / ideal:10.2f} {raw:9.2f} {raw / ideal:9.2f} "
              f"{wall / raw:8.2f} {cpu:6.2f} {gen:>6} {failed:>6} {calls:>5}")


if __name__ == "__main__":
    main()
