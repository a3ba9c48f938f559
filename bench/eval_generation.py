"""Eval generation against the loopback OpenAI-compatible server: wall time over the ideal.

32 conversations of 5 turns (a scripted interlocutor, so 5 model calls each) at 200 ms per call, through
``traitlab.evaluate`` on a real store (every call logged, every finished conversation stored). The ideal is
ceil(conversations / concurrency) x turns x latency: every conversation in flight, no client cost. Beside
it, the client floor: the same number of calls sent as ``turns`` waves of ``JudgeClient.call_many`` on the same
store (what generation costs when the event loop adds nothing of its own to the client). The server runs
in its own process, as a provider would, so it does not compete with traitlab for the GIL.

    python bench/eval_generation.py [--conversations 32] [--turns 5] [--latency 0.2] [--concurrency 32 4]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback_server import LoopbackServer

from traitlab.evals.generate import evaluate
from traitlab.evals.suite import load_suite
from traitlab.judges.client import JudgeClient, Request
from traitlab.store import Store

SUITE = """\
name: bench-{tag}
scenario:
  scripted: {{lines: [{lines}]}}
conversations: {n}
turns: {turns}
model: openai/bench-model
system_prompt: you are a person ({tag})
params: {{api_base: "{base}", api_key: sk-bench}}
seed: 0
scorers: []
"""


def _serve(conn: mp.connection.Connection, latency_s: float) -> None:
    server = LoopbackServer(latency_s=latency_s).start()
    conn.send(server.base_url)
    conn.recv()  # stop
    server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=32)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32, 4])
    args = ap.parse_args()
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

            evaluate(suite("warmup", 1), None, store, run_id="warmup")  # one-time LiteLLM setup
            for c in args.concurrency:
                s = suite(f"c{c}", args.conversations)
                start, cpu = time.perf_counter(), time.process_time()
                r = evaluate(s, None, store, run_id=f"c{c}", concurrency=c)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                calls = store.sql("SELECT count(*) FROM calls WHERE run_id = ? AND error IS NULL", [f"c{c}"])[0][0]
                ideal = math.ceil(args.conversations / c) * args.turns * args.latency
                client = JudgeClient("openai/bench-model", store=store, run_id=f"floor{c}", concurrency=c,
                                     api_base=base, api_key="sk-bench")
                start = time.perf_counter()
                for t in range(args.turns):  # distinct requests, waves of ``c`` at a time
                    for i in range(0, args.conversations, c):
                        client.call_many([Request([{"role": "user", "content": f"floor {c} {t} {j}"}])
                                          for j in range(i, min(i + c, args.conversations))], progress=None)
                floor = time.perf_counter() - start
                rows.append((c, wall, ideal, floor, cpu, r.generated, len(r.failed), calls))
    finally:
        parent.send("stop")
        proc.join(5)
    print(f"{args.conversations} conversations x {args.turns} turns, {args.latency * 1000:.0f} ms per call")
    print(f"{'concurrency':>11} {'wall s':>7} {'ideal s':>7} {'wall/ideal':>10} {'client floor s':>14} "
          f"{'wall/floor':>10} {'CPU s':>6} {'stored':>6} {'failed':>6} {'calls':>5}")
    for c, wall, ideal, floor, cpu, gen, failed, calls in rows:
        print(f"{c:>11} {wall:7.2f} {ideal:7.2f} {wall / ideal:10.2f} {floor:14.2f} {wall / floor:10.2f} {cpu:6.2f} "
              f"{gen:>6} {failed:>6} {calls:>5}")


if __name__ == "__main__":
    main()
