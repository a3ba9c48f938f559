"""Loaders for the dialogue, rating, trait and proposal files traitlab reads.

Every loader reads the whole file before returning: a bad line raises :class:`DataError` naming the file,
the line and the field, and nothing is half-loaded. A record is

- ``{"id"?, "messages": [{"role", "content"}, ...], "label"?, "group"?, ...}`` with any role names: pass
  ``target_role`` to say who is judged. Without it, the roles must match a registered :class:`Shape` (the
  OpenAI ``user``/``assistant`` convention is built in: the assistant is judged; presets add theirs, e.g.
  HAL's, see :mod:`traitlab.presets.hal`);
- or ``{"id"?, "dialogue"|"transcript": "X: ...\\nY: ..."}``, lines tagged with the one-letter tags of a
  registered shape; a CSV with a ``transcript`` column is read the same way.

``label`` is any string (which side of the contrast, see :mod:`traitlab.contrast`); every other top-level
scalar field (``group``, ``game_id``, ...) is kept in ``meta``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from traitlab.types import Dialogue, DialoguePair, Message, TraitRatings, TraitSet

if TYPE_CHECKING:
    from traitlab.contrast import Contrast

MAX_MESSAGE_CHARS = 1_000_000
"""A message longer than this is almost surely a broken file, not a conversation."""

RESERVED_FIELDS = {"id", "messages", "dialogue", "transcript", "label", "meta"}
"""Record fields that are the dialogue itself; every other scalar field goes to ``meta``."""


@dataclass(frozen=True)
class Shape:
    """A family of dialogues recognised without ``target_role``: its roles, the judged one, line tags."""

    name: str
    roles: frozenset[str]
    target: str
    tags: Mapping[str, str] = field(default_factory=dict)
    """One-letter transcript tags -> role (``{"C": "customer"}``); empty: messages records only."""


_SHAPES: dict[str, Shape] = {}


def register_shape(shape: Shape) -> Shape:
    """Let the loaders recognise ``shape`` (a preset calls this at import; re-registering replaces)."""
    clash = {t: s.name for s in _SHAPES.values() if s.name != shape.name for t in s.tags if t in shape.tags}
    if clash:
        raise ValueError(f"shape {shape.name!r}: transcript tags {sorted(clash)} are taken by "
                         f"{sorted(set(clash.values()))}")
    _SHAPES[shape.name] = shape
    return shape


register_shape(Shape("openai", frozenset({"system", "user", "assistant", "tool", "developer"}), "assistant"))


def shapes() -> list[Shape]:
    """The registered shapes, plugins (presets) loaded first."""
    from traitlab.registry import load_plugins

    load_plugins()
    return list(_SHAPES.values())


def transcript_tags() -> dict[str, str]:
    """Every registered transcript tag -> role."""
    return {t: r for s in shapes() for t, r in s.tags.items()}


def _shape_of(roles: set[str], loose: bool = False) -> Shape | None:
    """The one shape holding all ``roles``; ``loose`` (tagged transcripts, where a stray tag of another shape
    is a generator's slip) takes the one sharing the most roles instead."""
    found = [s for s in shapes() if roles <= s.roles]
    if not found and loose:
        best = max((len(roles & s.roles) for s in shapes()), default=0)
        found = [s for s in shapes() if best and len(roles & s.roles) == best]
    return found[0] if len(found) == 1 else None


class DataError(ValueError):
    """A problem in an input file, located by file, line (1-based) and field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path + (f":{line}" if line else "") + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {problem}")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (provenance of inputs, checks of fetched files)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def parse_tagged_transcript(text: str, tags: Mapping[str, str] | None = None) -> list[Message]:
    """Turn ``X: ...`` lines into messages, ``X`` a tag of ``tags`` (default: every registered shape's).

    Untagged lines continue the previous message. A leading turn number (``2. D:``), which some generators
    emit, is tolerated.
    """
    tags = transcript_tags() if tags is None else tags
    if not tags:
        return []
    messages: list[Message] = []
    alt = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
    tag = re.compile(rf"^\s*(?:\d+[.)]\s*)?({alt})\s*:\s?(.*)$")
    for line in text.splitlines():
        m = tag.match(line)
        if m:
            messages.append(Message(role=tags[m.group(1)], content=m.group(2).strip()))
        elif line.strip() and messages:
            last = messages[-1]
            messages[-1] = Message(role=last.role, content=f"{last.content}\n{line.strip()}")
    return messages


def dialogue_from_record(obj: dict[str, Any], *, default_id: str, target_role: str | None = None) -> Dialogue:
    """Build a Dialogue from one record of any supported shape (raises ValueError/KeyError with the field)."""
    meta = dict(obj.get("meta") or {}) if isinstance(obj.get("meta"), dict) else {}
    for key, value in obj.items():
        if key not in RESERVED_FIELDS and (value is None or isinstance(value, str | int | float | bool)):
            meta.setdefault(key, value)
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
    elif "dialogue" in obj or "transcript" in obj:
        key = "dialogue" if "dialogue" in obj else "transcript"
        if not isinstance(obj[key], str):
            raise _FieldError(key, "must be a string of tagged lines")
        tags = transcript_tags()
        messages = parse_tagged_transcript(obj[key], tags)
        if not messages:
            known = ", ".join(f"'{t}:'" for t in tags) or "none registered"
            raise _FieldError(key, f"no tagged line (known tags: {known}); or give 'messages' with roles")
    else:
        raise _FieldError("messages", "missing: need 'messages' or a 'dialogue'/'transcript' string")
    if not messages:
        raise _FieldError("messages", "empty dialogue")
    if target_role is None:
        roles = {m.role for m in messages}
        shape = _shape_of(roles, loose="messages" not in obj)
        if shape is None:
            raise _FieldError("messages", f"roles {sorted(roles)} match no known shape; pass target_role "
                                          "(--target-role) to say who is judged")
        target_role = shape.target
    for i, m in enumerate(messages):
        if len(m.content) > MAX_MESSAGE_CHARS:
            raise _FieldError(f"messages[{i}].content", f"{len(m.content):,} characters (limit {MAX_MESSAGE_CHARS:,})")
    label = obj.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise _FieldError("label", f"must be a non-empty string or absent, got {label!r}")
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


def pair_dialogues(dialogues: list[Dialogue], contrast: Contrast | None = None) -> list[DialoguePair]:
    """Contrastive pairs: dialogues grouped by the contrast's group field (``group``/``game_id`` without a
    contrast); a group counts when it holds exactly two dialogues with the contrast's two labels (any two
    different labels without one). Others are dropped."""
    from traitlab.contrast import group_of

    groups: dict[str, list[Dialogue]] = {}
    for d in dialogues:
        g = contrast.group_of(d) if contrast is not None else group_of(d)
        if g != d.id:
            groups.setdefault(g, []).append(d)
    pairs = []
    for gid, ds in groups.items():
        labels = {d.label for d in ds}
        wanted = set(contrast.labels) if contrast is not None else labels - {None}
        if len(ds) == 2 and len(wanted) == 2 and labels == wanted:
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

    ``judge`` filters (or names the judge when the file has none). A value
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
    """Load trait proposals ``{"group" (or "game_id"), "proposer", "statements": [...]}`` (one per pair)."""
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
    """A handful of chat dialogues written for traitlab (HAL's Turing shape), for the offline default and tests."""
    return load_dialogues(Path(__file__).parent / "sample" / "dialogues.jsonl")

