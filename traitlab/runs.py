"""The runs in a store, without SQL: a list, one run in detail, one run exported to files.

``traitlab runs``, ``traitlab runs show RUN`` and ``traitlab runs export RUN`` print these; a notebook
calls :func:`list_runs`, :func:`show_run` and :func:`export_run` directly. Config values under a key that
names a credential (``api_key``, ``token``, ``Authorization``...) come back as ``***``, in the detail and in
the export, so neither can leak a key a user put into a suite's params.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from traitlab.console import error_kind
from traitlab.store import Store, redact_secrets

EXPORT_TABLES = ("runs", "calls", "ratings", "dialogues", "artifacts")


class RunRow(BaseModel):
    """One line of ``traitlab runs``."""

    run_id: str
    kind: str
    name: str
    status: str
    created: datetime | None
    finished: datetime | None
    dialogues: int
    ratings: int = Field(description="rating rows: one per (dialogue, judge, trait)")
    calls: int
    failed_calls: int
    artifacts: int
    cost_usd: float


class ArtifactInfo(BaseModel):
    name: str
    kind: str
    size_bytes: int
    created: datetime | None


class FailureKind(BaseModel):
    """Failed calls of one kind (the exception name in the recorded error) and the first such message."""

    kind: str
    count: int
    first: str


class RunDetail(BaseModel):
    """``traitlab runs show``: the row, the config (secrets redacted), the summary, artifacts, failures."""

    run: RunRow
    config: dict[str, Any]
    summary: dict[str, Any]
    artifacts: list[ArtifactInfo]
    failures: list[FailureKind]
    judges: dict[str, int] = Field(default_factory=dict, description="rating rows per judge")


class ExportResult(BaseModel):
    run_id: str
    format: str
    files: dict[str, Path] = Field(description="table name -> file written")
    rows: dict[str, int]


_ROW_SQL = """
SELECT r.run_id, r.kind, r.name, r.status, r.started, r.finished,
  (SELECT count(*) FROM dialogues d WHERE d.run_id = r.run_id),
  (SELECT count(*) FROM ratings g WHERE g.run_id = r.run_id),
  (SELECT count(*) FROM calls c WHERE c.run_id = r.run_id),
  (SELECT count(*) FROM calls c WHERE c.run_id = r.run_id AND c.error IS NOT NULL),
  (SELECT count(*) FROM artifacts a WHERE a.run_id = r.run_id),
  (SELECT coalesce(sum(cost), 0) FROM calls c WHERE c.run_id = r.run_id)
FROM runs r WHERE (? IS NULL OR r.kind = ?) AND (? IS NULL OR r.run_id = ?) ORDER BY r.started, r.run_id
"""


def _rows(store: Store, kind: str | None = None, run_id: str | None = None) -> list[RunRow]:
    keys = list(RunRow.model_fields)
    return [RunRow(**dict(zip(keys, (*r[:2], r[2] or "", r[3] or "", *r[4:]), strict=True)))
            for r in store.sql(_ROW_SQL, [kind, kind, run_id, run_id])]


def list_runs(store: Store, kind: str | None = None) -> list[RunRow]:
    """Every run (of ``kind``, if given), oldest first, with its counts and cost."""
    return _rows(store, kind)


def _row(store: Store, run_id: str) -> RunRow:
    rows = _rows(store, run_id=run_id)
    if not rows:
        known = [r[0] for r in store.sql("SELECT run_id FROM runs ORDER BY started DESC LIMIT 5")]
        raise KeyError(f"no run {run_id!r} in {store.path}" + (f" (latest: {', '.join(known)})" if known else ""))
    return rows[0]


def failure_kind(message: str) -> str:
    """The exception name in a recorded error (``RateLimitError``), else its first phrase (``budget exhausted``)."""
    kind = error_kind(message)
    return kind if kind != "error" else (message or "error").split(":")[0].strip()[:60] or "error"


def show_run(store: Store, run_id: str) -> RunDetail:
    """One run in full: what it was asked to do, what it reported, what it left, what failed."""
    row = _row(store, run_id)
    run = store.run(run_id)
    arts = [ArtifactInfo(name=n, kind=k or "", size_bytes=int(b or 0), created=c) for n, k, b, c in store.sql(
        "SELECT name, kind, strlen(CAST(body AS VARCHAR)), created FROM artifacts WHERE run_id = ? "
        "ORDER BY created, name", [run_id])]
    errors = [e for (e,) in store.sql("SELECT error FROM calls WHERE run_id = ? AND error IS NOT NULL "
                                      "ORDER BY created", [run_id])]
    kinds = Counter(failure_kind(e) for e in errors)
    firsts: dict[str, str] = {}
    for e in errors:
        firsts.setdefault(failure_kind(e), " ".join(e.split())[:300])
    judges = dict(store.sql("SELECT judge, count(*) FROM ratings WHERE run_id = ? GROUP BY judge ORDER BY judge",
                            [run_id]))
    return RunDetail(run=row, config=redact_secrets(run["config"]), summary=redact_secrets(run["summary"] or {}),
                     artifacts=arts, failures=[FailureKind(kind=k, count=n, first=firsts[k])
                                               for k, n in kinds.most_common()], judges=judges)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_run(store: Store, run_id: str, out_dir: str | Path, fmt: Literal["jsonl", "parquet"] = "jsonl",
               ) -> ExportResult:
    """Write the run's rows of every table to ``out_dir/<table>.<jsonl|parquet>`` (DuckDB's COPY), the run's
    config redacted; returns the files and row counts."""
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"--format must be jsonl or parquet, not {fmt!r}")
    _row(store, run_id)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    config = json.dumps(redact_secrets(store.run(run_id)["config"]))
    option = "FORMAT parquet" if fmt == "parquet" else "FORMAT json"
    files, rows = {}, {}
    for table in EXPORT_TABLES:
        path = out / f"{table}.{fmt}"
        if table == "runs":
            query, params = ("SELECT run_id, kind, name, ?::JSON AS config, status, summary, started, finished "
                             "FROM runs WHERE run_id = ?"), [config, run_id]
        else:
            order = {"calls": "created", "ratings": "dialogue_id, judge, trait_id", "dialogues": "created, dialogue_id",
                     "artifacts": "created, name"}[table]
            query, params = f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", [run_id]
        store.sql(f"COPY ({query}) TO {_quote(path)} ({option})", params)
        files[table] = path
        rows[table] = int(store.sql(f"SELECT count(*) FROM ({query})", params)[0][0])
    return ExportResult(run_id=run_id, format=fmt, files=files, rows=rows)
