"""Judge-client throughput against the loopback OpenAI-compatible server (100 ms per call), and the cache.

Prints calls/s at concurrency 1 and 32 for 64 structured calls each, their ratio, then re-runs the second set
and prints how many provider calls the cached re-run made (read from the server's own count). The server runs in
its own process, as a provider would, so it does not compete with the client for the GIL.

    python bench/judge_client.py [--calls 64] [--latency 0.1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
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


def requests(tag: str, n: int) -> list[Request]:
    return [Request([{"role": "system", "content": "You are a judge."},
                     {"role": "user", "content": f"{tag} dialogue {i}"}], Verdict) for i in range(n)]


def timed(client: JudgeClient, batch: list[Request]) -> tuple[float, int]:
    """Seconds for the batch and how many of its calls failed (a failure would flatter the figure)."""
    start = time.perf_counter()
    outs = client.call_many(batch, progress=None)
    return time.perf_counter() - start, sum(not o.ok for o in outs)


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
    ap.add_argument("--calls", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    server = ServerProcess(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
            def make(concurrency: int) -> JudgeClient:
                return JudgeClient("openai/bench-judge", store=store, concurrency=concurrency,
                                   api_base=server.base_url, api_key="sk-bench")

            make(1).call_many(requests("warm-up", 1), progress=None)  # one-time LiteLLM/instructor setup
            serial_s, serial_failed = timed(make(1), requests("serial", args.calls))
            parallel_s, parallel_failed = timed(make(args.concurrency), requests("parallel", args.calls))
            server.reset()
            cached_s, cached_failed = timed(make(args.concurrency), requests("parallel", args.calls))
            cached_calls = server.total
    finally:
        server.stop()
    serial, parallel = args.calls / serial_s, args.calls / parallel_s
    print(f"server latency {args.latency * 1000:.0f} ms/call, {args.calls} structured calls per run")
    print(f"concurrency 1:  {serial:8.1f} calls/s  ({serial_s:.2f} s, {serial_failed} failed)")
    print(f"concurrency {args.concurrency}: {parallel:8.1f} calls/s  ({parallel_s:.2f} s, {parallel_failed} failed)")
    print(f"ratio {args.concurrency} vs 1: {parallel / serial:.1f}x")
    print(f"cached re-run:  {args.calls / cached_s:8.1f} calls/s  ({cached_s:.2f} s, {cached_failed} failed), "
          f"provider calls made: {cached_calls}")


if __name__ == "__main__":
    main()
