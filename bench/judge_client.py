"""Judge-client throughput against the loopback OpenAI-compatible server, side by side with the raw SDK.

For each concurrency (default 1/8/32/64) it makes the same number of structured calls (default 256, 100 ms
each at the server) twice in one run: through traitlab's ``JudgeClient`` (LiteLLM + instructor + the DuckDB
store, cache and retries on) and through a raw ``openai.AsyncOpenAI`` client under an ``asyncio.Semaphore``
(JSON-schema tool call, parsed with pydantic, nothing stored). It prints calls/s for both, traitlab's ratio to
raw, the ideal (concurrency / latency) and the client CPU per call (process time: less noisy than wall time on a
shared machine), then re-runs the last traitlab set and prints how many provider calls
the cached re-run made (the server's own count). The server runs in its own process, as a provider would, so it
does not compete with the client for the GIL. Each set uses fresh request texts, so nothing is cached.

    python bench/judge_client.py [--calls 256] [--latency 0.1] [--concurrency 1 8 32 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback_server import LoopbackServer

from traitlab.judges import JudgeClient, Request
from traitlab.store import Store


class Verdict(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str


def messages(tag: str, i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": f"{tag} dialogue {i}"}]


def timed_traitlab(client: JudgeClient, tag: str, n: int) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (this process, all threads) for ``n`` calls, and how many failed (a failure
    would flatter the figure)."""
    batch = [Request(messages(tag, i), Verdict) for i in range(n)]
    start, cpu = time.perf_counter(), time.process_time()
    outs = client.call_many(batch, progress=None)
    return time.perf_counter() - start, time.process_time() - cpu, sum(not o.ok for o in outs)


async def _raw(base_url: str, tag: str, n: int, concurrency: int) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    tool = {"type": "function", "function": {"name": "Verdict", "parameters": Verdict.model_json_schema()}}

    async def one(i: int) -> bool:
        async with gate:
            r = await client.chat.completions.create(
                model="bench-judge", messages=messages(tag, i), tools=[tool],
                tool_choice={"type": "function", "function": {"name": "Verdict"}})
            Verdict.model_validate(json.loads(r.choices[0].message.tool_calls[0].function.arguments))
            return True

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    await client.close()
    return sum(r is not True for r in results)


def timed_raw(base_url: str, tag: str, n: int, concurrency: int) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), time.process_time()
    failed = asyncio.run(_raw(base_url, tag, n, concurrency))
    return time.perf_counter() - start, time.process_time() - cpu, failed


class ServerProcess:
    """The loopback server in a child process, driven over a pipe (``total``, ``reset``, ``stop``)."""

    def __init__(self, latency_s: float):
        self._conn, child = mp.Pipe()
        self._proc = mp.get_context("spawn").Process(target=_serve, args=(child, latency_s), daemon=True)
        self._proc.start()
        self.base_url: str = self._conn.recv()

    def _ask(self, command: str) -> int:
        self._conn.send(command)
        return self._conn.recv()

    @property
    def total(self) -> int:
        return self._ask("total")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        self._ask("stop")
        self._proc.join(5)


def _serve(conn: mp.connection.Connection, latency_s: float) -> None:
    server = LoopbackServer(latency_s=latency_s).start()
    conn.send(server.base_url)
    while (command := conn.recv()) != "stop":
        if command == "reset":
            server.reset()
        conn.send(server.total if command == "total" else 0)
    server.stop()
    conn.send(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = ap.parse_args()
    server = ServerProcess(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
            def make(concurrency: int) -> JudgeClient:
                return JudgeClient("openai/bench-judge", store=store, concurrency=concurrency,
                                   api_base=server.base_url, api_key="sk-bench")

            make(1).call_many([Request(messages("warm-up", 0), Verdict)], progress=None)  # one-time setup
            timed_raw(server.base_url, "warm-up-raw", 1, 1)
            for c in args.concurrency:
                n = min(args.calls, 32) if c == 1 else args.calls  # one at a time at 100 ms: keep it short
                t_s, t_cpu, t_failed = timed_traitlab(make(c), f"traitlab-c{c}", n)
                r_s, r_cpu, r_failed = timed_raw(server.base_url, f"raw-c{c}", n, c)
                rows.append((c, n, n / t_s, t_cpu / n, t_failed, n / r_s, r_cpu / n, r_failed))
            last = args.concurrency[-1]
            server.reset()
            cached_s, _, cached_failed = timed_traitlab(make(last), f"traitlab-c{last}", args.calls)
            cached_calls = server.total
    finally:
        server.stop()
    print(f"server latency {args.latency * 1000:.0f} ms/call, structured calls (tool call + pydantic validation)")
    print(f"{'conc':>5} {'calls':>6} {'traitlab/s':>11} {'raw/s':>8} {'ratio':>6} {'ideal/s':>8} "
          f"{'cpu ms/call t':>14} {'raw':>5}  failed t/r")
    for c, n, t, tcpu, tf, r, rcpu, rf in rows:
        print(f"{c:>5} {n:>6} {t:>11.1f} {r:>8.1f} {t / r:>6.2f} {c / args.latency:>8.0f} "
              f"{tcpu * 1000:>14.1f} {rcpu * 1000:>5.1f}  {tf}/{rf}")
    print(f"cached re-run at {last}: {args.calls / cached_s:.1f} calls/s ({cached_failed} failed), "
          f"provider calls made: {cached_calls}")


if __name__ == "__main__":
    main()
