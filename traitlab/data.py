"""Loaders for the dialogue, rating, trait and proposal files traitlab reads.

Every loader reads the whole file before returning: a bad line raises :class:`DataError` naming the file,
the line and the field, and nothing is half-loaded. Shapes understood (detected per line):

- Turing games: ``{"id", "messages": [{"role": "interrogator"|"witness", ...}], "label"?}``; the witness is
  judged.
- Doctor-patient: ``{"id", "dialogue": "P: ...\\nD: ..."}``; the patient is judged.
- OpenAI messages: ``{"id"?, "messages": [{"role": "user"|"assistant"|"system", ...}]}``; the assistant is
  judged unless ``target_role`` says otherwise.
- CSV with a ``transcript`` column of ``I:``/``W:`` or ``P:``/``D:`` lines (and optional ``id``, ``label``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from traitlab.types import Dialogue, DialoguePair, Message, TraitRatings, TraitSet

MAX_MESSAGE_CHARS = 1_000_000
"""A message longer than this is almost surely a broken file, not a conversation."""

TURING_ROLES = {"interrogator", "witness"}
OPENAI_ROLES = {"system", "user", "assistant", "tool", "developer"}
TAG_ROLES = {"I": "interrogator", "W": "witness", "P": "patient", "D": "doctor"}
TAG_TARGET = {"witness": "witness", "patient": "patient"}


class DataError(ValueError):
    """A problem in an input file, located by file, line (1-based) and field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path + (f":{line}" if line else "") + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {problem}")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)``; blank lines are skipped, anything else must be a JSON object."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, None, None, f"cannot read: {e.strerror or e}") from e
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(path, n, _undecodable_field(line), f"not UTF-8 (byte {e.start} of the line: "
                            f"{line[e.start:e.start + 1]!r})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, n, None, f"broken JSON: {e.msg} at column {e.colno}") from e
        if not isinstance(obj, dict):
            raise DataError(path, n, None, f"expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _undecodable_field(line: bytes) -> str | None:
    """Where in a JSON line the first non-UTF-8 byte sits (``messages[3].content``), if the line parses."""
    try:
        obj = json.loads(line.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError:
        return None

    def find(x: Any, where: str) -> str | None:
        if isinstance(x, str):
            return where if any("\udc80" <= c <= "\udcff" for c in x) else None
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            sub = f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k)
            if found := find(v, sub):
                return found
        return None

    return find(obj, "")


def parse_tagged_transcript(text: str) -> list[Message]:
    """Turn ``P: ...``/``D: ...`` (or ``I:``/``W:``) lines into messages.

    Untagged lines continue the previous message. A leading turn number (``2. D:``), which some generators
    emit, is tolerated.
    """
    messages: list[Message] = []
    tag = re.compile(r"^\s*(?:\d+[.)]\s*)?([IWPD])\s*:\s?(.*)$")
    for line in text.splitlines():
        m = tag.match(line)
        if m:
            messages.append(Message(role=TAG_ROLES[m.group(1)], content=m.group(2).strip()))
        elif line.strip() and messages:
            last = messages[-1]
            messages[-1] = Message(role=last.role, content=f"{last.content}\n{line.strip()}")
    return messages


def dialogue_from_record(obj: dict[str, Any], *, default_id: str, target_role: str | None = None) -> Dialogue:
    """Build a Dialogue from one record of any supported shape (raises ValueError/KeyError with the field)."""
    meta = dict(obj.get("meta") or {})
    for key in ("game_id", "witness", "policy_model", "epoch", "persona_id", "generator_model", "judge"):
        if key in obj:
            meta.setdefault(key, obj[key])
    if "messages" in obj:
        raw = obj["messages"]
        if not isinstance(raw, list):
            raise _FieldError("messages", "must be a list of {role, content}")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise _FieldError(f"messages[{i}]", "needs 'role' and 'content'")
            if not isinstance(m["content"], str):
                raise _FieldError(f"messages[{i}].content", "must be a string")
            messages.append(Message(role=str(m["role"]), content=m["content"]))
        roles = {m.role for m in messages}
        if target_role is None:
            if roles <= TURING_ROLES:
                target_role = "witness"
            elif roles <= OPENAI_ROLES:
                target_role = "assistant"
            else:
                unknown = sorted(roles - TURING_ROLES - OPENAI_ROLES)
                problem = f"unknown role(s) {unknown}" if unknown else f"mixes Turing and OpenAI roles {sorted(roles)}"
                raise _FieldError("messages", f"{problem}; pass target_role to say who is judged")
    elif "dialogue" in obj or "transcript" in obj:
        key = "dialogue" if "dialogue" in obj else "transcript"
        if not isinstance(obj[key], str):
            raise _FieldError(key, "must be a string of tagged lines")
        messages = parse_tagged_transcript(obj[key])
        if not messages:
            raise _FieldError(key, "no 'P:'/'D:' or 'I:'/'W:' tagged line")
        if target_role is None:
            roles = {m.role for m in messages}
            target_role = "patient" if roles & {"patient", "doctor"} else "witness"
    else:
        raise _FieldError("messages", "missing: need 'messages' or a 'dialogue'/'transcript' string")
    if not messages:
        raise _FieldError("messages", "empty dialogue")
    for i, m in enumerate(messages):
        if len(m.content) > MAX_MESSAGE_CHARS:
            raise _FieldError(f"messages[{i}].content", f"{len(m.content):,} characters (limit {MAX_MESSAGE_CHARS:,})")
    label = obj.get("label")
    if label not in (None, "human", "ai"):
        raise _FieldError("label", f"must be 'human', 'ai' or absent, got {label!r}")
    if not any(m.role == target_role for m in messages):
        raise _FieldError("messages", f"the judged speaker {target_role!r} never speaks")
    return Dialogue(id=str(obj.get("id", default_id)), messages=messages, target_role=target_role,
                    label=label, meta=meta)


class _FieldError(ValueError):
    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


def load_dialogues(path: str | Path, *, target_role: str | None = None,
                   skipped: list[DataError] | None = None) -> list[Dialogue]:
    """Load every dialogue of a JSONL or CSV file; ids must be unique.

    The first bad record raises. Pass a list as ``skipped`` to load the good records instead and collect
    each bad one's error there (some real files hold a few degenerate generations).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        records = list(_read_csv(path))
    else:
        records = list(read_jsonl(path))
    out: list[Dialogue] = []
    seen: dict[str, int] = {}
    for n, obj in records:
        try:
            d = dialogue_from_record(obj, default_id=f"{path.stem}-{n}", target_role=target_role)
        except (_FieldError, ValidationError) as e:
            if isinstance(e, _FieldError):
                err = DataError(path, n, e.field, e.problem)
            else:
                first = e.errors()[0]
                err = DataError(path, n, ".".join(map(str, first["loc"])) or None, first["msg"])
            if skipped is None:
                raise err from None
            skipped.append(err)
            continue
        if d.id in seen:
            raise DataError(path, n, "id", f"duplicate id {d.id!r} (first on line {seen[d.id]})")
        seen[d.id] = n
        out.append(d)
    if not out:
        raise DataError(path, None, None, "no dialogues in file")
    return out


def read_csv_rows(path: str | Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(first line of the record, row)`` of a UTF-8 CSV whose quoted fields may span lines.

    A missing ``required`` column, a non-UTF-8 byte, or a row wider or narrower than the header raises.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, None, None, f"cannot read: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(path, line, None, f"not UTF-8 (byte {raw[e.start:e.start + 1]!r})") from None
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))  # long generations are normal, not errors
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(path, 1, missing[0], f"missing column (header: {header})")
    start = 2
    for row in reader:
        if None in row or None in row.values():
            width = len(header) + len(row.get(None) or []) - sum(v is None for v in row.values())
            raise DataError(path, start, None, f"{width} fields where the header has {len(header)}")
        yield start, row
        start = reader.line_num + 1


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, row in read_csv_rows(path, required=("transcript",)):
        rec: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
        rec.setdefault("transcript", "")
        yield n, rec


def pair_dialogues(dialogues: list[Dialogue], key: str = "game_id") -> list[DialoguePair]:
    """Group dialogues into contrastive pairs by ``meta[key]``; games without exactly 2 are dropped."""
    groups: dict[str, list[Dialogue]] = {}
    for d in dialogues:
        if key in d.meta:
            groups.setdefault(str(d.meta[key]), []).append(d)
    pairs = []
    for gid, ds in groups.items():
        if len(ds) == 2 and {d.label for d in ds} == {"human", "ai"}:
            a, b = sorted(ds, key=lambda d: d.id)
            pairs.append(DialoguePair(id=gid, a=a, b=b))
    return pairs


def load_trait_set(path: str | Path, *, name: str | None = None, version: str = "1") -> TraitSet:
    """Load a TraitSet JSON (or a bare list of ``{id, text, group}``, as HAL's 32 traits are stored).

    A stored ``hash`` that no longer matches the traits is an error: someone edited the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, getattr(e, "lineno", None), None, f"not a readable JSON trait set: {e}") from e
    if isinstance(data, list):
        data = {"name": name or path.stem, "version": version, "traits": data}
    if not isinstance(data, dict):
        raise DataError(path, None, None, f"expected a trait set object or a list of traits, got {type(data).__name__}")
    stored_hash = data.pop("hash", None)
    try:
        ts = TraitSet.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(path, None, ".".join(map(str, err["loc"])), err["msg"]) from None
    if stored_hash and stored_hash != ts.hash:
        raise DataError(path, None, "hash", f"stored hash {stored_hash} != content hash {ts.hash}: file edited?")
    return ts


RATING_SCALE = (1.0, 5.0)
"""The Likert scale every judge rates on (1 = strongly disagree ... 5 = strongly agree)."""


def load_ratings(path: str | Path, *, judge: str | None = None,
                 scale: tuple[float, float] | None = RATING_SCALE) -> list[TraitRatings]:
    """Load ratings JSONL: ``{"id", "judge"?, "ratings": {trait_id: value}}`` per line.

    ``judge`` filters (or names the judge when the file has none, as the doctor files do: GPT-5). A value
    outside ``scale`` (None: any finite number), NaN/inf, or a second line for the same (id, judge) is an error.
    """
    path = Path(path)
    out = []
    seen: dict[tuple[str, str], int] = {}
    for n, obj in read_jsonl(path):
        r = obj.get("ratings")
        if not isinstance(r, dict) or not r:
            raise DataError(path, n, "ratings", "missing or empty {trait_id: value} object")
        bad = {k: v for k, v in r.items() if not isinstance(v, int | float) or isinstance(v, bool)}
        if bad:
            raise DataError(path, n, f"ratings.{next(iter(bad))}", f"not a number: {next(iter(bad.values()))!r}")
        for k, v in r.items():
            if not math.isfinite(v):
                raise DataError(path, n, f"ratings.{k}", f"not a finite number: {v!r}")
            if scale is not None and not scale[0] <= v <= scale[1]:
                raise DataError(path, n, f"ratings.{k}", f"{v!r} is outside the rating scale {scale[0]:g}-{scale[1]:g}")
        who = obj.get("judge", judge)
        if who is None:
            raise DataError(path, n, "judge", "missing; pass judge= for files without a judge column")
        if judge is not None and "judge" in obj and obj["judge"] != judge:
            continue
        if "id" not in obj:
            raise DataError(path, n, "id", "missing")
        key = (str(obj["id"]), str(who))
        if key in seen:
            raise DataError(path, n, "id", f"{key[0]!r} is rated by {key[1]!r} again (first on line {seen[key]})")
        seen[key] = n
        out.append(TraitRatings(dialogue_id=str(obj["id"]), judge=str(who),
                                ratings={k: float(v) for k, v in r.items()}, rationale=obj.get("rationale")))
    return out


def load_proposals(path: str | Path) -> list[dict[str, Any]]:
    """Load trait proposals ``{"game_id", "proposer", "statements": [...]}`` (one record per game)."""
    path = Path(path)
    out = []
    for n, obj in read_jsonl(path):
        st = obj.get("statements")
        if not isinstance(st, list) or not all(isinstance(s, str) for s in st):
            raise DataError(path, n, "statements", "must be a list of strings")
        out.append(obj)
    return out


def sample_trait_set() -> TraitSet:
    """The trait set traitlab ships, written in its own words (``traitlab/sample/traits_traitlab12.json``)."""
    return load_trait_set(Path(__file__).parent / "sample" / "traits_traitlab12.json")


def sample_dialogues() -> list[Dialogue]:
    """A handful of Turing-style dialogues written for traitlab, for the offline default and the tests."""
    return load_dialogues(Path(__file__).parent / "sample" / "dialogues.jsonl")

