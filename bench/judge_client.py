"""Judge-client throughput against the loopback OpenAI-compatible server, side by side with the raw SDK.

For each concurrency (default 1/8/32/64) it makes the same number of structured calls (default 256, 100 ms
each at the server) through traitlab's ``JudgeClient`` (the DuckDB store, cache and retries on) on each
transport asked for (default ``auto``, which is the openai SDK fast path for this server, and ``litellm``:
LiteLLM + instructor) and through a raw ``openai.AsyncOpenAI`` client under an ``asyncio.Semaphore`` (the same
tool call, parsed with pydantic, nothing stored). Each set is run ``--repeat`` times (default 3), the clients
in a rotating order, and the median is printed: calls/s for each, traitlab's ratio to raw, the ideal
(concurrency / latency) and the client CPU per call (process time: less noisy than wall time on a shared
machine). Then it re-runs the last traitlab set and prints how many provider calls the cached re-run made (the
server's own count). The server runs in its own process, as a provider would, so it does not compete with the
client for the GIL. Each run uses fresh request texts, so nothing is cached.

    python bench/judge_client.py [--calls 256] [--latency 0.1] [--concurrency 1 8 32 64] [--repeat 3]
                                 [--transport auto litellm]

On a shared machine run it two or three times and note the load (``uptime``): the ratios move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
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
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", nargs="+", default=["auto", "litellm"], choices=["auto", "litellm", "openai"])
    args = ap.parse_args()
    server = ServerProcess(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
            def make(concurrency: int, transport: str) -> JudgeClient:
                return JudgeClient("openai/bench-judge", store=store, concurrency=concurrency,
                                   api_base=server.base_url, api_key="sk-bench", transport=transport)

            for t in args.transport:  # one-time setup (imports, cost map)
                make(1, t).call_many([Request(messages(f"warm-up-{t}", 0), Verdict)], progress=None)
            timed_raw(server.base_url, "warm-up-raw", 1, 1)
            names = [*args.transport, "raw"]
            for c in args.concurrency:
                n = min(args.calls, 32) if c == 1 else args.calls  # one at a time at 100 ms: keep it short
                runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
                for r in range(args.repeat):
                    for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
                        tag = f"{name}-c{c}-r{r}"
                        runs[name].append(timed_raw(server.base_url, tag, n, c) if name == "raw"
                                          else timed_traitlab(make(c, name), tag, n))
                rows.append((c, n, {name: (statistics.median(n / w for w, _, _ in v),
                                           statistics.median(cpu / n for _, cpu, _ in v),
                                           sum(f for _, _, f in v)) for name, v in runs.items()}))
            last = args.concurrency[-1]
            server.reset()
            cached_s, _, cached_failed = timed_traitlab(make(last, args.transport[0]),
                                                        f"{args.transport[0]}-c{last}-r0", args.calls)
            cached_calls = server.total
    finally:
        server.stop()
    print(f"server latency {args.latency * 1000:.0f} ms/call, structured calls (tool call + pydantic validation), "
          f"median of {args.repeat}")
    print(f"{'conc':>5} {'calls':>6} {'ideal/s':>8} " + " ".join(f"{name + '/s':>11}" for name in names) + " "
          + " ".join(f"{name + ' ratio':>13}" for name in args.transport) + "  cpu ms/call "
          + "/".join(names) + "  failed")
    for c, n, by in rows:
        raw = by["raw"][0]
        print(f"{c:>5} {n:>6} {c / args.latency:>8.0f} " + " ".join(f"{by[name][0]:>11.1f}" for name in names) + " "
              + " ".join(f"{by[name][0] / raw:>13.2f}" for name in args.transport) + "  "
              + "/".join(f"{by[name][1] * 1000:.1f}" for name in names) + "  "
              + "/".join(str(by[name][2]) for name in names))
    print(f"cached re-run at {last} ({args.transport[0]}): {args.calls / cached_s:.1f} calls/s "
          f"({cached_failed} failed), provider calls made: {cached_calls}")


if __name__ == "__main__":
    main()
