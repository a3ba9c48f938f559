"""The run store: one DuckDB file that every stage writes to and reads from.

Tables (see the README for SQL a user can run on the file):

- ``runs``: one row per stage run (kind, name, config, status, summary).
- ``calls``: one row per judge/model request, written the moment it completes; ``request_hash`` makes an
  identical request a cache hit, which is what lets a killed run resume without repeating calls.
- ``ratings``: one row per (run, dialogue, judge, trait, prompt version, call) value.
- ``dialogues``: dialogues a run generated or scored, as JSON, one row per (run, dialogue id).
- ``artifacts``: named JSON results of a run (validation tables, before/after tables, reports...).

Three promises every caller gets for free:

- **Idempotent**: adding a dialogue or rating a run already holds adds nothing, so a run id run again
  never doubles rows (an artifact of the same name is replaced).
- **No secrets**: every key-like field (``api_key``, ``*_key``, ``*token*``, ``*secret*``, ``password``,
  ``Authorization``...) of a run's config, summary, artifacts and call params is stored as ``***``.
- **Shared between processes**: the file is held only while this process uses it (released after
  ``idle_s`` without use, and at least every ``max_hold_s``), and an open that finds another process
  holding it retries with backoff for ``wait_s`` (``$TRAITLAB_STORE_WAIT``, default 60 s) before a
  :class:`StoreBusyError` that names that process. So a report, a query or a second run works while a run
  goes on. Writes of many rows go in one statement per batch.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
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

RATING_COLUMNS = ("run_id", "dialogue_id", "judge", "trait_set_hash", "prompt_version", "trait_id", "value",
                  "call_id", "rationale")
# what makes a rating the same rating: a repeat of the same judge (test-retest) is another call, so another row
_RATING_KEY = ("run_id", "dialogue_id", "judge", "trait_id", "prompt_version", "call_id")
REDACTED = "***"
_SECRET_WORDS = {"key", "apikey", "token", "secret", "authorization", "password", "passwd", "credential",
                 "credentials", "cookie"}
_SECRET_VALUE = re.compile(r"\b(?:sk|pk|rk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{12,}|\bBearer\s+[^\s\"']{8,}")


def now() -> datetime:
    """The store's clock (naive UTC), e.g. for :meth:`Store.failed_calls` ``since``."""
    return _now()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def is_secret_name(name: str) -> bool:
    """Whether a field name carries a credential (``api_key``, ``hf_token``, ``x-api-key``, ``Authorization``).

    Matching is on whole words of the name, so ``max_tokens``, ``monkey`` and ``*_per_token`` prices are not.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()) if w]
    if words[-2:] == ["per", "token"]:
        return False
    return bool(_SECRET_WORDS.intersection(words)) or any(s in name.lower() for s in ("secret", "apikey", "api_key"))


def redact_secrets(value: Any) -> Any:
    """A copy of ``value`` with every string under a secret-named field, at any depth, replaced by ``***``;
    those strings, and key-shaped ones (``sk-...``, ``Bearer ...``), are scrubbed from every other string."""
    found: set[str] = set()

    def collect(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if is_secret_name(str(k)) and isinstance(x, str) and len(x) >= 4:
                    found.update({x, x.removeprefix("Bearer ").strip()})
                collect(x)
        elif isinstance(v, list | tuple):
            for x in v:
                collect(x)

    def clean(v: Any, secret: bool = False) -> Any:
        if isinstance(v, dict):
            return {k: clean(x, secret or is_secret_name(str(k))) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x, secret) for x in v]
        if isinstance(v, str):
            if secret and v:
                return REDACTED
            v = _SECRET_VALUE.sub(REDACTED, v)  # first: a known secret replaced inside a key would hide the key
            for s in sorted(found, key=len, reverse=True):
                v = v.replace(s, REDACTED)
            return v
        return v  # numbers stay: a credential is a string, a trait weight under an odd id is not

    collect(value)
    return clean(value)


def _json(value: Any) -> str:
    return json.dumps(redact_secrets(value))


class StoreBusyError(RuntimeError):
    """Another process held the store for longer than this one would wait."""


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


_CALL_COLUMNS = ("call_id, request_hash, run_id, model, params, request, response, prompt_tokens, "
                 "completion_tokens, cost, latency_s, attempts, error")


def _call_record(r: tuple[Any, ...]) -> CallRecord:
    return CallRecord(call_id=r[0], request_hash=r[1], run_id=r[2], model=r[3], params=json.loads(r[4]),
                      request=json.loads(r[5]), response=json.loads(r[6]), prompt_tokens=r[7],
                      completion_tokens=r[8], cost=r[9], latency_s=r[10], attempts=r[11], error=r[12])


class Store:
    """A thin, typed wrapper over the DuckDB file; safe to share between threads, and between processes
    (see the module docstring: the file is held only while in use)."""

    def __init__(self, path: str | Path = "traitlab.duckdb", *, wait_s: float | None = None, idle_s: float = 0.2,
                 max_hold_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.wait_s = float(os.environ.get("TRAITLAB_STORE_WAIT", 60)) if wait_s is None else wait_s
        self.idle_s, self.max_hold_s = idle_s, max_hold_s
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened = self._used = self._reopen_at = 0.0
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        with self._session() as con:
            con.execute(SCHEMA)

    # holding the file --------------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        """Connect, retrying with jittered backoff while another process holds the file's lock."""
        deadline = time.monotonic() + self.wait_s
        delay = 0.005
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as e:
                if "lock" not in str(e).lower():
                    raise
                if time.monotonic() >= deadline:
                    pid = re.search(r"PID (\d+)", str(e))
                    who = f"process {pid.group(1)}" if pid else "another process"
                    raise StoreBusyError(f"store {self.path} is in use by {who} and stayed locked for "
                                         f"{self.wait_s:.0f} s; retry when it is done (wait longer: "
                                         "$TRAITLAB_STORE_WAIT seconds)") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.025)

    def _release(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _reap(self) -> None:
        """Background: let go of the file once this process has not used it for ``idle_s``."""
        while not self._stop.wait(max(self.idle_s / 2, 0.01)):
            with self._lock:
                if self._con is not None and time.monotonic() - self._used >= self.idle_s:
                    self._release()

    @contextmanager
    def _session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one operation (or batch), opening the file if this process let it go."""
        with self._lock:
            if self._con is None:
                pause = self._reopen_at - time.monotonic()
                if pause > 0:  # after a forced release, leave a waiting process a window to get in
                    time.sleep(pause)
                self._con = self._open()
                self._opened = time.monotonic()
                if self._reaper is None and self.idle_s > 0:
                    self._reaper = threading.Thread(target=self._reap, name=f"store-reaper:{self.path.name}",
                                                    daemon=True)
                    self._reaper.start()
            try:
                yield self._con
            finally:
                self._used = time.monotonic()
                if self.idle_s <= 0 or self._used - self._opened >= self.max_hold_s:
                    self._release()
                    self._reopen_at = self._used + 0.05

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._session() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return all rows (a convenience for reports and tests)."""
        with self._session() as con:
            return con.execute(query, params or []).fetchall()

    def _exec(self, query: str, params: list[Any]) -> None:
        with self._session() as con:
            con.execute(query, params)

    # runs --------------------------------------------------------------------------------------------
    def start_run(self, kind: str, name: str = "", config: dict[str, Any] | None = None,
                  run_id: str | None = None) -> str:
        """Open a run, or reopen ``run_id`` if it exists (resuming keeps its id and its calls)."""
        run_id = run_id or f"{kind}-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
                con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [run_id])
            else:
                con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, 'running', NULL, ?, NULL)",
                            [run_id, kind, name, _json(config or {}), _now()])
        return run_id

    def finish_run(self, run_id: str, status: str = "done", summary: dict[str, Any] | None = None) -> None:
        self._exec("UPDATE runs SET status = ?, summary = ?, finished = ? WHERE run_id = ?",
                   [status, _json(summary or {}), _now(), run_id])

    @contextmanager
    def running(self, kind: str, name: str = "", config: dict[str, Any] | None = None,
                run_id: str | None = None) -> Iterator[str]:
        """``start_run`` for a ``with`` block: an exception inside marks the run ``failed`` with the error
        in its summary (so no run is left ``running``; a run already finished keeps its status), then
        propagates. Finish it yourself on success."""
        rid = self.start_run(kind, name, config, run_id=run_id)
        try:
            yield rid
        except BaseException as e:
            if self.sql("SELECT status FROM runs WHERE run_id = ?", [rid])[0][0] == "running":
                self.finish_run(rid, "failed", {"error": f"{type(e).__name__}: {e}".strip()})
            raise

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
        rows = self.sql(f"SELECT {_CALL_COLUMNS} FROM calls "
                        "WHERE request_hash = ? AND error IS NULL ORDER BY created DESC LIMIT 1", [request_hash])
        return _call_record(rows[0]) if rows else None

    def cached_calls(self, request_hashes: Sequence[str]) -> dict[str, CallRecord]:
        """:meth:`cached_call` for many hashes in one query per 500 (a judge run looks its batch up at once)."""
        found: dict[str, CallRecord] = {}
        unique = list(dict.fromkeys(request_hashes))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = self.sql(f"SELECT {_CALL_COLUMNS} FROM calls WHERE error IS NULL AND request_hash IN "
                            f"({', '.join('?' * len(chunk))}) ORDER BY created", chunk)
            found.update((r[1], _call_record(r)) for r in rows)  # the latest one wins
        return found

    def record_call(self, call: CallRecord) -> None:
        self.record_calls([call])

    def record_calls(self, calls: Sequence[CallRecord]) -> None:
        """Insert call records in one statement (one transaction): the judge client's batched write."""
        if not calls:
            return
        now = _now()
        values = [v for c in calls for v in (
            c.call_id, c.request_hash, c.run_id, c.model, _json(c.params), json.dumps(c.request),
            json.dumps(c.response), c.prompt_tokens, c.completion_tokens, c.cost, c.latency_s, c.attempts, c.error,
            now)]
        row = "(" + ", ".join("?" * 14) + ")"
        self._exec(f"INSERT OR REPLACE INTO calls VALUES {', '.join([row] * len(calls))}", values)

    def failed_calls(self, run_id: str, since: datetime | None = None) -> list[str]:
        """The errors of the run's failed calls (those recorded at or after ``since``), oldest first."""
        rows = self.sql("SELECT error FROM calls WHERE run_id = ? AND error IS NOT NULL AND (? IS NULL OR "
                        "created >= ?) ORDER BY created", [run_id, since, since])
        return [r[0] for r in rows]

    def run_cost(self, run_id: str) -> float:
        return float(self.sql("SELECT coalesce(sum(cost), 0) FROM calls WHERE run_id = ?", [run_id])[0][0])

    # ratings -----------------------------------------------------------------------------------------
    def add_ratings(self, run_id: str, ratings: Iterable[TraitRatings]) -> int:
        """Add the ratings the run does not hold yet (one statement); returns how many rows were new."""
        rows = {(run_id, r.dialogue_id, r.judge, tid, r.prompt_version, r.call_id):
                (run_id, r.dialogue_id, r.judge, r.trait_set_hash, r.prompt_version, tid, float(v), r.call_id,
                 r.rationale) for r in ratings for tid, v in r.ratings.items()}
        if not rows:
            return 0
        batch = {c: np.array([row[i] for row in rows.values()], dtype=object) for i, c in enumerate(RATING_COLUMNS)}
        match = " AND ".join(f"r.{k} IS NOT DISTINCT FROM b.{k}" for k in _RATING_KEY)
        return self._insert_new("ratings", batch, f"SELECT b.* FROM batch b WHERE NOT EXISTS (SELECT 1 FROM "
                                                  f"ratings r WHERE {match})")

    def _insert_new(self, table: str, batch: dict[str, np.ndarray], select: str,
                    params: list[Any] | None = None) -> int:
        with self._transaction() as con:
            con.register("batch", batch)
            try:
                before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                con.execute(f"INSERT INTO {table} {select}", params or [])
                return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
            finally:
                con.unregister("batch")

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
            grouped[key].ratings[r[7]] = float("nan") if r[8] is None else r[8]  # bulk inserts store NaN as NULL
        return list(grouped.values())

    # dialogues and artifacts -------------------------------------------------------------------------
    def add_dialogues(self, run_id: str, dialogues: Iterable[Dialogue]) -> int:
        """Add the dialogues the run does not hold yet (by id; the first copy stays); returns how many."""
        rows = {d.id: d.model_dump_json() for d in dialogues}
        if not rows:
            return 0
        batch = {"dialogue_id": np.array(list(rows), dtype=object),
                 "body": np.array(list(rows.values()), dtype=object)}
        return self._insert_new("dialogues", batch, "SELECT ?, b.dialogue_id, b.body, ? FROM batch b WHERE NOT "
                                "EXISTS (SELECT 1 FROM dialogues d WHERE d.run_id = ? AND d.dialogue_id = "
                                "b.dialogue_id)", [run_id, _now(), run_id])

    def dialogues(self, run_id: str) -> list[Dialogue]:
        rows = self.sql("SELECT body FROM dialogues WHERE run_id = ? ORDER BY created, dialogue_id", [run_id])
        return [Dialogue.model_validate_json(r[0]) for r in rows]

    def put_artifact(self, run_id: str, name: str, body: Any, kind: str = "json") -> None:
        """Store (or replace) the run's artifact ``name``."""
        with self._transaction() as con:
            con.execute("DELETE FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
            con.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?)", [run_id, name, kind, _json(body), _now()])

    def artifact(self, run_id: str, name: str) -> Any:
        rows = self.sql("SELECT body FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
        if not rows:
            raise KeyError(f"run {run_id!r} has no artifact {name!r}")
        return json.loads(rows[0][0])
