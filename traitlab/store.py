"""The run store: one DuckDB file that every stage writes to and reads from.

Tables (see the README for SQL a user can run on the file):

- ``runs``: one row per stage run (kind, name, config, status, summary).
- ``calls``: one row per judge/model request, written the moment it completes; ``request_hash`` makes an
  identical request a cache hit, which is what lets a killed run resume without repeating calls.
- ``ratings``: one row per (dialogue, judge, trait) value.
- ``dialogues``: dialogues a run generated or scored, as JSON.
- ``artifacts``: named JSON results of a run (validation tables, before/after tables, reports...).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from pydantic import BaseModel

from traitlab.types import Dialogue, TraitRatings

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR, name VARCHAR, config JSON, status VARCHAR,
    summary JSON, started TIMESTAMP, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS calls (
    call_id VARCHAR PRIMARY KEY, request_hash VARCHAR, run_id VARCHAR, model VARCHAR, params JSON,
    request JSON, response JSON, prompt_tokens INTEGER, completion_tokens INTEGER, cost DOUBLE,
    latency_s DOUBLE, attempts INTEGER, error VARCHAR, created TIMESTAMP);
CREATE INDEX IF NOT EXISTS calls_hash ON calls(request_hash);
CREATE TABLE IF NOT EXISTS ratings (
    run_id VARCHAR, dialogue_id VARCHAR, judge VARCHAR, trait_set_hash VARCHAR, prompt_version VARCHAR,
    trait_id VARCHAR, value DOUBLE, call_id VARCHAR, rationale VARCHAR);
CREATE TABLE IF NOT EXISTS dialogues (
    run_id VARCHAR, dialogue_id VARCHAR, body JSON, created TIMESTAMP);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id VARCHAR, name VARCHAR, kind VARCHAR, body JSON, created TIMESTAMP);
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class CallRecord(BaseModel):
    """One provider request and its outcome. ``error`` set means it failed after all retries."""

    call_id: str
    request_hash: str
    run_id: str | None = None
    model: str
    params: dict[str, Any] = {}
    request: dict[str, Any] = {}
    response: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None


class Store:
    """A thin, typed wrapper over the DuckDB file; safe to share between threads of one process."""

    def __init__(self, path: str | Path = "traitlab.duckdb"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path))
        self._lock = threading.Lock()
        self._con.execute(SCHEMA)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return all rows (a convenience for reports and tests)."""
        with self._lock:
            return self._con.execute(query, params or []).fetchall()

    def _exec(self, query: str, params: list[Any]) -> None:
        with self._lock:
            self._con.execute(query, params)

    # runs --------------------------------------------------------------------------------------------
    def start_run(self, kind: str, name: str = "", config: dict[str, Any] | None = None,
                  run_id: str | None = None) -> str:
        """Open a run, or reopen ``run_id`` if it exists (resuming keeps its id and its calls)."""
        run_id = run_id or f"{kind}-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        if self.sql("SELECT 1 FROM runs WHERE run_id = ?", [run_id]):
            self._exec("UPDATE runs SET status = 'running' WHERE run_id = ?", [run_id])
        else:
            self._exec("INSERT INTO runs VALUES (?, ?, ?, ?, 'running', NULL, ?, NULL)",
                       [run_id, kind, name, json.dumps(config or {}), _now()])
        return run_id

    def finish_run(self, run_id: str, status: str = "done", summary: dict[str, Any] | None = None) -> None:
        self._exec("UPDATE runs SET status = ?, summary = ?, finished = ? WHERE run_id = ?",
                   [status, json.dumps(summary or {}), _now(), run_id])

    def run(self, run_id: str) -> dict[str, Any]:
        rows = self.sql("SELECT run_id, kind, name, config, status, summary, started, finished "
                        "FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        r = rows[0]
        return {"run_id": r[0], "kind": r[1], "name": r[2], "config": json.loads(r[3] or "{}"),
                "status": r[4], "summary": json.loads(r[5] or "{}"), "started": r[6], "finished": r[7]}

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        ids = self.sql("SELECT run_id FROM runs WHERE ? IS NULL OR kind = ? ORDER BY started", [kind, kind])
        return [self.run(i[0]) for i in ids]

    # calls -------------------------------------------------------------------------------------------
    def cached_call(self, request_hash: str) -> CallRecord | None:
        """The latest successful call with this request hash, if any."""
        rows = self.sql("SELECT call_id, request_hash, run_id, model, params, request, response, prompt_tokens, "
                        "completion_tokens, cost, latency_s, attempts, error FROM calls "
                        "WHERE request_hash = ? AND error IS NULL ORDER BY created DESC LIMIT 1", [request_hash])
        if not rows:
            return None
        r = rows[0]
        return CallRecord(call_id=r[0], request_hash=r[1], run_id=r[2], model=r[3], params=json.loads(r[4]),
                          request=json.loads(r[5]), response=json.loads(r[6]), prompt_tokens=r[7],
                          completion_tokens=r[8], cost=r[9], latency_s=r[10], attempts=r[11], error=r[12])

    def record_call(self, call: CallRecord) -> None:
        self._exec("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [call.call_id, call.request_hash, call.run_id, call.model, json.dumps(call.params),
                    json.dumps(call.request), json.dumps(call.response), call.prompt_tokens,
                    call.completion_tokens, call.cost, call.latency_s, call.attempts, call.error, _now()])

    def run_cost(self, run_id: str) -> float:
        return float(self.sql("SELECT coalesce(sum(cost), 0) FROM calls WHERE run_id = ?", [run_id])[0][0])

    # ratings -----------------------------------------------------------------------------------------
    def add_ratings(self, run_id: str, ratings: Iterable[TraitRatings]) -> None:
        rows = [[run_id, r.dialogue_id, r.judge, r.trait_set_hash, r.prompt_version, tid, v, r.call_id,
                 r.rationale] for r in ratings for tid, v in r.ratings.items()]
        if rows:
            with self._lock:
                self._con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def ratings(self, run_id: str | None = None, judge: str | None = None) -> list[TraitRatings]:
        rows = self.sql("SELECT run_id, dialogue_id, judge, trait_set_hash, prompt_version, call_id, rationale, "
                        "trait_id, value FROM ratings WHERE (? IS NULL OR run_id = ?) AND (? IS NULL OR judge = ?) "
                        "ORDER BY run_id, dialogue_id, judge, trait_id", [run_id, run_id, judge, judge])
        grouped: dict[tuple[Any, ...], TraitRatings] = {}
        for r in rows:
            key = r[:7]
            if key not in grouped:
                grouped[key] = TraitRatings(dialogue_id=r[1], judge=r[2], trait_set_hash=r[3],
                                            prompt_version=r[4], call_id=r[5], rationale=r[6], ratings={})
            grouped[key].ratings[r[7]] = r[8]
        return list(grouped.values())

    # dialogues and artifacts -------------------------------------------------------------------------
    def add_dialogues(self, run_id: str, dialogues: Iterable[Dialogue]) -> None:
        rows = [[run_id, d.id, d.model_dump_json(), _now()] for d in dialogues]
        if rows:
            with self._lock:
                self._con.executemany("INSERT INTO dialogues VALUES (?, ?, ?, ?)", rows)

    def dialogues(self, run_id: str) -> list[Dialogue]:
        rows = self.sql("SELECT body FROM dialogues WHERE run_id = ? ORDER BY created, dialogue_id", [run_id])
        return [Dialogue.model_validate_json(r[0]) for r in rows]

    def put_artifact(self, run_id: str, name: str, body: Any, kind: str = "json") -> None:
        self._exec("DELETE FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
        self._exec("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?)", [run_id, name, kind, json.dumps(body), _now()])

    def artifact(self, run_id: str, name: str) -> Any:
        rows = self.sql("SELECT body FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
        if not rows:
            raise KeyError(f"run {run_id!r} has no artifact {name!r}")
        return json.loads(rows[0][0])
