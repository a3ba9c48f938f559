"""``traitlab data fetch hal``: download the public HAL release files, check them, convert them.

The source is the HAL repository (github.com/ROC-HCI/hal, Apache-2.0) at one pinned commit. Files go to
``cache_dir()/data/hal/raw/<repo path>`` (atomic writes, resumable), then are converted into the layout of
the project's data folder (``hal_turing/*``, ``hal_doctor/*``; see ``../shared/data/README.md``).

Integrity, stated plainly: only the HAL LICENSE has a pinned sha256 (it is the verbatim Apache-2.0 text the
project ships). The other originals were never downloaded by this project, so their sha256 is unknown: on
first download it is recorded in ``raw/hal.lock.json`` and printed (trust on first use), and later runs
enforce it. The end-to-end check is on the converted files, whose sha256 are known
(:data:`CONVERTED_SHA256`): a conversion that reproduces the project's files byte for byte matches them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from traitlab.console import fail
from traitlab.data import DataError, file_sha256, read_csv_rows, read_jsonl
from traitlab.presets.hal import DOCTOR_TRAIN_JUDGE, JUDGE, TURING_JUDGES
from traitlab.settings import cache_dir, data_dir

HAL_REPO = "ROC-HCI/hal"
HAL_COMMIT = "5145d6a5ec416c415d14c402c659d6a0de0ff9d7"
RAW_BASE = f"https://raw.githubusercontent.com/{HAL_REPO}/{HAL_COMMIT}/"
LOCK_NAME = "hal.lock.json"

TURING_CSV = "data/turing_test_over_50.csv"
PROPOSALS_CSV, PROPOSER = "FS_output/run_7_gpt-5.csv", JUDGE
WEIGHTS_JSON = "HAL16_judge_weights.json"
HAL32Q_NOTEBOOK = "3. HAL32Q-Judge-Turing_data.ipynb"
SYNTH_TEST_CSV = "data/synthlabs_dialogues_test.csv"
SYNTH_TRAIN_CSV, SYNTH_TRAIN_JUDGE = "data/synthlabs_dialogues_train_scored_gpt-5-mini.csv", DOCTOR_TRAIN_JUDGE
PROMPTS_CSV = "data/prompts_synthlabs_dialogues_{split}.csv"

HL16_SELECTED_IDX = (0, 1, 2, 3, 4, 5, 6, 11, 14, 16, 19, 20, 23, 25, 27, 31)
"""Weight k of HAL16_judge_weights.json was fitted on HAL32Q statement selected_idx[k] (0-based)."""
HL16Q_ITEM_TRAITS = ("t01", "t05", "t10", "t03", "t04", "t17", "t07", "t20",
                     "t08", "t16", "t26", "t02", "t11", "t18", "t22", "t29")
"""The HAL32Q trait that HL16Q prompt item k describes by its text (hal_doctor/provenance.json)."""
DOCTOR_RUNS = {
    "Qwen/Qwen2.5-14B-Instruct": (0, 2, 4, 6, 8, 10),
    "meta-llama/Llama-3.2-1B-Instruct": (0, 1, 2, 3, 4, 5, 6, 8, 10),
    "meta-llama/Llama-3.3-70B-Instruct": (0, 2, 4, 6, 8, 10),
}
"""Policy models whose scored generations are their own (the other four re-score Llama-70B's text)."""

CONVERTED_SHA256: dict[str, tuple[int, str]] = {
    "LICENSE-HAL-Apache-2.0.txt": (11357, "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
    "hal_doctor/dialogues_test.jsonl": (3435326, "5eb7470e4f68111e78827aac40cc5625170453699a371b02c4d7128f6634d887"),
    "hal_doctor/generations_scored.jsonl":
        (5840155, "068bdf03702e25839abdc52a74ab83a3f59dbb0d67aef9cad751d4e34655e061"),
    "hal_doctor/prompts_test.jsonl": (468633, "62a09c4cdace2b1797418e4c6673d7ffbf3c7569af155b29a8a64cec6ac78f49"),
    "hal_doctor/prompts_train.jsonl": (4204943, "9e3aa6d35fdb7acd2e2460a21dc4fb472b86af292c470eaf7f3ef7aa7f2d72de"),
    "hal_doctor/provenance.json": (5894, "7f3789b705f44091d41f8f3374c9850605c8cec83de05b6b3b65df646f9a7f3d"),
    "hal_doctor/train_scored_gpt5mini.jsonl":
        (457877, "e173d4343faaa423007719422486558df6ed24e3599e5f2a04e0b61cb346d66c"),
    "hal_turing/dialogues.jsonl": (912381, "10589e0850861c1f6854c06374a3874d71195710406fd479289df906867a88f5"),
    "hal_turing/hl16_mapping.json": (10354, "ad87ce93fec190ff1ea6ec7e5fd96f8cd8aac3e5a1ecce419a082b9f4b46d934"),
    "hal_turing/hl16_weights.json": (561, "a26847368429628c59aefa2b677e9bf9b3adeba3ecd3f1a0963535d440da8e61"),
    "hal_turing/judge_ratings.jsonl": (1913160, "466f54fc98153acc7f26ab849c3bd479cbf6aa2d09003d7910fad9aeef3175d2"),
    "hal_turing/proposals.jsonl": (169527, "51b906fb6a10f6630237d043892d83a958e5583f6850e8f55a7387fb395ae455"),
    "hal_turing/traits_hal32.json": (4740, "a5441c71d45d2a563f2ecf2d069f3f385ee945ee84476f72bdee65accc29c9e4"),
}
"""The project's converted files (``../shared/data/README.md``): relative path -> (bytes, sha256)."""
CURATED = ("hal_doctor/provenance.json", "hal_turing/hl16_mapping.json")
"""Hand-checked analyses shipped with the project's data, not conversions: ``fetch`` does not make them."""


class SourceFile(BaseModel):
    """One original file of the HAL repository; ``sha256`` is None where this project has not pinned it."""

    path: str
    sha256: str | None = None


class Manifest(BaseModel):
    """What to download: files under ``base_url`` (the raw-file root at the pinned commit)."""

    base_url: str = RAW_BASE
    commit: str = HAL_COMMIT
    files: list[SourceFile]

    def url(self, f: SourceFile) -> str:
        return self.base_url + urllib.parse.quote(f.path)


def scored_generation_path(model: str, epoch: int) -> str:
    return f"HAL16_output/{model}/scored/samples_epoch_{epoch:02d}_scored_gpt-5.csv"


def hal_manifest(base_url: str = RAW_BASE) -> Manifest:
    """The HAL source files the converters read."""
    paths = ["LICENSE", TURING_CSV, *(f"Turing_output/run_1_Turing_data_{j}.csv" for j in TURING_JUDGES),
             PROPOSALS_CSV, WEIGHTS_JSON, HAL32Q_NOTEBOOK, SYNTH_TEST_CSV, SYNTH_TRAIN_CSV,
             *(PROMPTS_CSV.format(split=s) for s in ("train", "test")),
             *(scored_generation_path(m, e) for m, epochs in DOCTOR_RUNS.items() for e in epochs)]
    pinned = {"LICENSE": CONVERTED_SHA256["LICENSE-HAL-Apache-2.0.txt"][1]}
    return Manifest(base_url=base_url, files=[SourceFile(path=p, sha256=pinned.get(p)) for p in paths])


class FetchError(RuntimeError):
    """A download that failed or did not match its expected sha256 (the file is not kept)."""


# ---------------------------------------------------------------- download




def _read_lock(raw_dir: Path) -> dict[str, str]:
    lock = raw_dir / LOCK_NAME
    return json.loads(lock.read_text(encoding="utf-8"))["files"] if lock.exists() else {}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_to(url: str, dest: Path, timeout_s: float) -> str:
    """Stream ``url`` into ``dest`` through a temporary file; returns the sha256. A short body is an error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h, got = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            expected = resp.headers.get("Content-Length")
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
            if expected is not None and got != int(expected):
                raise FetchError(f"{url}: truncated body ({got} of {expected} bytes)")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise FetchError(f"{url}: download failed: {e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return h.hexdigest()


def download(manifest: Manifest, raw_dir: Path, *, force: bool = False, timeout_s: float = 60,
             log: Callable[[str], None] = print) -> dict[str, str]:
    """Download every manifest file into ``raw_dir`` (skipping ones present with the expected hash).

    Expected = the manifest's pinned sha256, else the lock file's (recorded on first download). A mismatch
    deletes the file and raises. Returns ``{path: sha256}``.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    lock = _read_lock(raw_dir)
    out: dict[str, str] = {}
    for f in manifest.files:
        dest = raw_dir / f.path
        expected = f.sha256 or lock.get(f.path)
        if dest.exists() and not force:
            have = file_sha256(dest)
            if expected is None or have == expected:
                log(f"have      {f.path}" if expected else f"TOFU      {f.path} sha256 {have} (present, not pinned: "
                    f"recorded in {LOCK_NAME})")
                out[f.path] = lock[f.path] = have
                continue
            log(f"stale     {f.path} (sha256 {have[:12]}… != {expected[:12]}…): downloading again")
        got = _download_to(manifest.url(f), dest, timeout_s)
        if expected is not None and got != expected:
            dest.unlink(missing_ok=True)
            source = "pinned in the manifest" if f.sha256 else f"recorded in {raw_dir / LOCK_NAME}"
            raise FetchError(f"{f.path}: sha256 {got} != {expected} ({source}); file deleted, nothing converted")
        if expected is None:
            log(f"TOFU      {f.path} sha256 {got} (not pinned: recorded on first use in {LOCK_NAME})")
        else:
            log(f"fetched   {f.path} (sha256 ok)")
        out[f.path] = lock[f.path] = got
        _write_atomic(raw_dir / LOCK_NAME, _lock_bytes(manifest, lock))
    _write_atomic(raw_dir / LOCK_NAME, _lock_bytes(manifest, lock))
    return out


def _lock_bytes(manifest: Manifest, files: dict[str, str]) -> bytes:
    doc = {"repo": HAL_REPO, "commit": manifest.commit, "note": "sha256 recorded on first download (TOFU)",
           "files": dict(sorted(files.items()))}
    return (json.dumps(doc, indent=2) + "\n").encode()


# ---------------------------------------------------------------- reading the originals


def _int(path: Path, line: int, field: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(path, line, field, f"not an integer: {value!r}") from None


def _float(path: Path, line: int, field: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(path, line, field, f"not a number: {value!r}") from None


def _bool(path: Path, line: int, field: str, value: str) -> bool:
    if value not in ("True", "False"):
        raise DataError(path, line, field, f"not True/False: {value!r}")
    return value == "True"


def _likert(path: Path, line: int, field: str, value: str, n: int) -> list[int]:
    """A stored rating list such as ``"[5, 1, 3]"``: exactly ``n`` integers 1-5."""
    try:
        vals = json.loads(value)
    except json.JSONDecodeError:
        vals = None
    if not isinstance(vals, list) or len(vals) != n or not all(type(v) is int and 1 <= v <= 5 for v in vals):
        raise DataError(path, line, field, f"expected a list of {n} integers 1-5, got {value[:80]!r}")
    return vals


def _transcript(path: Path, line: int, field: str, text: str) -> list[dict[str, str]]:
    """``I: ``/``W: `` lines -> messages; untagged lines continue the previous message (joined by ``\\n``)."""
    messages: list[dict[str, str]] = []
    for part in text.split("\n"):
        tag = part[:3]
        if tag in ("I: ", "W: "):
            messages.append({"role": "interrogator" if tag == "I: " else "witness", "content": part[3:]})
        elif not messages:
            raise DataError(path, line, field, f"starts with an untagged line: {part[:60]!r}")
        else:
            messages[-1]["content"] += "\n" + part
    return messages


# ---------------------------------------------------------------- converters (originals -> project layout)


def convert_turing(raw: Path, games: set[str] | None = None) -> dict[str, bytes]:
    """Turing games, six judges' HAL32Q ratings and GPT-5's trait proposals (``hal_turing/*.jsonl``).

    ``games`` keeps only those game ids (the project keeps some games aside); None keeps all.
    """
    src = raw / TURING_CSV
    cols = ("game_id", "confidence", "reason", "conversation_A_transcript", "conversation_B_transcript",
            "label_A", "label_B", "human_correct")
    records: dict[str, list[dict[str, Any]]] = {}
    for n, row in read_csv_rows(src, cols):
        gid = row["game_id"]
        if gid in records:
            raise DataError(src, n, "game_id", f"duplicate game {gid!r}")
        if games is not None and gid not in games:
            continue
        labels = {s: row[f"label_{s}"] for s in "AB"}
        if sorted(v == "Human" for v in labels.values()) != [False, True]:
            raise DataError(src, n, "label_A", f"need one 'Human' witness, got {labels}")
        meta = {"human_verdict_correct": _bool(src, n, "human_correct", row["human_correct"]),
                "interrogator_confidence": _int(src, n, "confidence", row["confidence"]),
                "interrogator_reason": row["reason"]}
        records[gid] = [{"id": f"{gid}-{s}", "game_id": gid, "label": "human" if labels[s] == "Human" else "ai",
                         "witness": "human" if labels[s] == "Human" else labels[s],
                         "messages": _transcript(src, n, f"conversation_{s}_transcript",
                                                 row[f"conversation_{s}_transcript"]),
                         "meta": meta} for s in "AB"]
    if games is not None and (absent := sorted(games - records.keys())):
        raise DataError(src, None, "game_id", f"{len(absent)} requested games not in the file, e.g. {absent[:3]}")
    order = sorted(records, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g))
    dialogues = [d for g in order for d in records[g]]
    return {"hal_turing/dialogues.jsonl": _jsonl(dialogues),
            "hal_turing/judge_ratings.jsonl": _jsonl(_judge_ratings(raw, order)),
            "hal_turing/proposals.jsonl": _jsonl(_proposals(raw, order))}


def _by_game(path: Path, cols: tuple[str, ...], games: set[str],
             parse: Callable[[int, dict[str, str]], Any]) -> dict[str, Any]:
    """One parsed value per game id of ``games``; a game listed twice must agree with itself."""
    out: dict[str, Any] = {}
    for n, row in read_csv_rows(path, ("game_id", *cols)):
        gid = row["game_id"]
        if gid not in games:
            continue
        value = parse(n, row)
        if gid in out and out[gid] != value:
            raise DataError(path, n, "game_id", f"game {gid!r} appears twice with different values")
        out[gid] = value
    return out


def _judge_ratings(raw: Path, order: list[str]) -> list[dict[str, Any]]:
    out = []
    for judge in TURING_JUDGES:
        path = raw / f"Turing_output/run_1_Turing_data_{judge}.csv"
        cols = ("likert_evaluation_A", "likert_evaluation_B")
        rated = _by_game(path, cols, set(order), lambda n, row, p=path: {
            s: _likert(p, n, f"likert_evaluation_{s}", row[f"likert_evaluation_{s}"], 32) for s in "AB"})
        out += [{"judge": judge, "id": f"{g}-{s}",
                 "ratings": {f"t{i + 1:02d}": v for i, v in enumerate(rated[g][s])}}
                for g in order if g in rated for s in "AB"]
    return out


def _proposals(raw: Path, order: list[str]) -> list[dict[str, Any]]:
    path = raw / PROPOSALS_CSV

    def parse(n: int, row: dict[str, str]) -> tuple[bool, list[str]]:
        try:
            statements = json.loads(row["human_characteristics"])
        except json.JSONDecodeError as e:
            raise DataError(path, n, "human_characteristics", f"broken JSON list: {e.msg}") from None
        if not isinstance(statements, list) or not all(isinstance(s, str) for s in statements):
            raise DataError(path, n, "human_characteristics", "must be a JSON list of strings")
        return row["aijudge_verdict"] == row["who_is_human"], statements

    found = _by_game(path, ("aijudge_verdict", "who_is_human", "human_characteristics"), set(order), parse)
    return [{"game_id": g, "proposer": PROPOSER, "verdict_correct": found[g][0], "statements": found[g][1]}
            for g in order if g in found]


def convert_hl16_weights(raw: Path) -> dict[str, bytes]:
    """HL16 bias and weights keyed by the HAL32Q trait each weight was fitted on (not by position)."""
    path = raw / WEIGHTS_JSON
    doc = _json_file(path)
    w, b = doc.get("w"), doc.get("b")
    if not isinstance(w, list) or len(w) != len(HL16_SELECTED_IDX) or not all(_number(x) for x in w):
        raise DataError(path, None, "w", f"expected {len(HL16_SELECTED_IDX)} numbers")
    if not _number(b):
        raise DataError(path, None, "b", "expected a number")
    weights = {f"t{i + 1:02d}": x for i, x in zip(HL16_SELECTED_IDX, w, strict=True)}
    return {"hal_turing/hl16_weights.json": _json({"bias": b, "weights": weights})}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def convert_traits(raw: Path) -> dict[str, bytes]:
    """The 32 HAL32Q statements and their group headings, as written in the judge prompt of the notebook."""
    path = raw / HAL32Q_NOTEBOOK
    nb = _json_file(path)
    cells = ["".join(c.get("source", [])) for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    prompt = next((c for c in cells if "**Likert Statements**" in c), None)
    if prompt is None:
        raise DataError(path, None, "cells", "no code cell holds the '**Likert Statements**' prompt")
    body = prompt.split("**Likert Statements**", 1)[1].split("## ", 1)[0]
    traits, group = [], None
    for line in body.splitlines():
        if m := re.fullmatch(r"\*\*Group \d+: (.+)\*\*", line.strip()):
            group = m.group(1)
        elif m := re.fullmatch(r"(\d+)\. (.+)", line.strip()):
            if int(m.group(1)) != len(traits) + 1 or group is None:
                raise DataError(path, None, "cells", f"statement {m.group(1)} out of order or before a group")
            traits.append({"id": f"t{len(traits) + 1:02d}", "text": m.group(2), "group": group})
    if len(traits) != 32:
        raise DataError(path, None, "cells", f"found {len(traits)} numbered statements, expected 32")
    return {"hal_turing/traits_hal32.json": _json(traits)}


def _hl16q_ratings(path: Path, line: int, value: str) -> dict[str, int]:
    vals = _likert(path, line, "likert_evaluation", value, len(HL16Q_ITEM_TRAITS))
    return dict(sorted(zip(HL16Q_ITEM_TRAITS, vals, strict=True)))


def convert_doctor(raw: Path) -> dict[str, bytes]:
    """Doctor-patient generations with GPT-5 HL16Q ratings, synthlabs dialogues and generation prompts."""
    gens = []
    for model in sorted(DOCTOR_RUNS):
        for epoch in DOCTOR_RUNS[model]:
            path = raw / scored_generation_path(model, epoch)
            rows = []
            for n, row in read_csv_rows(path, ("dialogue_id", "dialogue", "likert_evaluation", "hal16_score",
                                           "judge_model")):
                persona = _int(path, n, "dialogue_id", row["dialogue_id"])
                rows.append({"id": f"{model.split('/')[-1]}-e{epoch:02d}-p{persona:03d}", "policy_model": model,
                             "epoch": epoch, "persona_id": persona, "dialogue": row["dialogue"],
                             "ratings": _hl16q_ratings(path, n, row["likert_evaluation"]),
                             "hl16_score": _float(path, n, "hal16_score", row["hal16_score"]),
                             "judge": row["judge_model"]})
            gens += _unique_sorted(path, rows, "persona_id")
    out = {"hal_doctor/generations_scored.jsonl": _jsonl(gens),
           "hal_doctor/dialogues_test.jsonl": _jsonl(_synthlabs(raw / SYNTH_TEST_CSV, "test", scored=False)),
           "hal_doctor/train_scored_gpt5mini.jsonl": _jsonl(_synthlabs(raw / SYNTH_TRAIN_CSV, "train", scored=True))}
    for split in ("train", "test"):
        path = raw / PROMPTS_CSV.format(split=split)
        prompts = [{"id": f"synthlabs-{split}-prompt-{pid}", "persona_id": pid, "prompt": row["prompt"]}
                   for n, row in read_csv_rows(path, ("persona_id", "prompt"))
                   for pid in [_int(path, n, "persona_id", row["persona_id"])]]
        if [p["persona_id"] for p in prompts] != list(range(len(prompts))):
            raise DataError(path, None, "persona_id", "persona ids must be 0, 1, 2... in row order")
        out[f"hal_doctor/prompts_{split}.jsonl"] = _jsonl(prompts)
    return out


def _synthlabs(path: Path, split: str, *, scored: bool) -> list[dict[str, Any]]:
    """Synthlabs dialogues ordered by (persona, dialogue id) and numbered; the all-zero ``score`` is dropped."""
    cols = ("model", "reasoning_effort", "dialogue", "parent_id", "persona_id", "dialogue_id")
    rows = []
    for n, row in read_csv_rows(path, cols + (("likert_evaluation", "hal16_score") if scored else ())):
        rec: dict[str, Any] = {"generator_model": row["model"], "reasoning_effort": row["reasoning_effort"] or None,
                               **{k: _int(path, n, k, row[k]) for k in ("persona_id", "parent_id", "dialogue_id")},
                               "dialogue": row["dialogue"]}
        if scored:
            rec |= {"ratings": _hl16q_ratings(path, n, row["likert_evaluation"]),
                    "hl16_score": _float(path, n, "hal16_score", row["hal16_score"]), "judge": SYNTH_TRAIN_JUDGE}
        rows.append(rec)
    rows = _unique_sorted(path, rows, "dialogue_id", key=lambda r: (r["persona_id"], r["dialogue_id"]))
    return [{"id": f"synthlabs-{split}-{i}", **r} for i, r in enumerate(rows)]


def _unique_sorted(path: Path, rows: list[dict[str, Any]], field: str,
                   key: Callable[[dict[str, Any]], Any] | None = None) -> list[dict[str, Any]]:
    seen = [r[field] for r in rows]
    if len(set(seen)) != len(seen):
        dup = next(v for v in seen if seen.count(v) > 1)
        raise DataError(path, None, field, f"duplicate value {dup!r}")
    return sorted(rows, key=key or (lambda r: r[field]))


def convert_license(raw: Path) -> dict[str, bytes]:
    return {"LICENSE-HAL-Apache-2.0.txt": (raw / "LICENSE").read_bytes()}


def convert_hal(raw: Path, dest: Path, *, games: set[str] | None = None) -> list[str]:
    """Convert everything, then write: a bad source raises before any output file is replaced."""
    outputs: dict[str, bytes] = {}
    for part in (convert_license(raw), convert_turing(raw, games), convert_traits(raw),
                 convert_hl16_weights(raw), convert_doctor(raw)):
        outputs |= part
    for rel, data in outputs.items():
        _write_atomic(dest / rel, data)
    return sorted(outputs)


def _json_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, getattr(e, "lineno", None), None, f"not readable JSON: {e}") from None
    if not isinstance(doc, dict):
        raise DataError(path, 1, None, "expected a JSON object")
    return doc


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------- verify and the whole fetch


class FileCheck(BaseModel):
    """A data file against the project's known converted sha256."""

    path: str
    status: str  # "ok", "differs", "missing"
    sha256: str | None = None
    expected: str


def verify_data_dir(path: str | Path, only: Iterable[str] | None = None) -> list[FileCheck]:
    """Compare the files of a data folder with :data:`CONVERTED_SHA256` (all of them, or ``only``)."""
    root = Path(path)
    out = []
    for rel in sorted(only or CONVERTED_SHA256):
        expected = CONVERTED_SHA256[rel][1]
        f = root / rel
        if not f.is_file():
            out.append(FileCheck(path=rel, status="missing", expected=expected))
            continue
        have = file_sha256(f)
        out.append(FileCheck(path=rel, status="ok" if have == expected else "differs", sha256=have,
                             expected=expected))
    return out


def staged_games(folder: str | Path) -> set[str]:
    """The game ids of an existing converted folder (to stage the same games, e.g. ``../shared/data``)."""
    path = Path(folder) / "hal_turing" / "dialogues.jsonl"
    games = set()
    for n, obj in read_jsonl(path):
        if "game_id" not in obj:
            raise DataError(path, n, "game_id", "missing")
        games.add(str(obj["game_id"]))
    return games


class FetchReport(BaseModel):
    raw_dir: Path
    dest: Path
    sources: dict[str, str]
    written: list[str]
    checks: list[FileCheck]


def fetch_hal(dest: str | Path | None = None, *, force: bool = False, games: set[str] | None = None,
              manifest: Manifest | None = None, log: Callable[[str], None] = print) -> FetchReport:
    """Download (into ``cache_dir()/data/hal/raw``), verify and convert the HAL files into ``dest``."""
    dest = data_dir(dest)
    raw_dir = cache_dir() / "data" / "hal" / "raw"
    sources = download(manifest or hal_manifest(), raw_dir, force=force, log=log)
    written = convert_hal(raw_dir, dest, games=games)
    return FetchReport(raw_dir=raw_dir, dest=dest, sources=sources, written=written,
                       checks=verify_data_dir(dest, only=written))


# ---------------------------------------------------------------- CLI


def register(app: typer.Typer) -> None:
    """Add ``traitlab data fetch hal`` and ``traitlab data verify`` to the app."""
    data_app = typer.Typer(help="Public data: fetch, convert, verify.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("fetch")
    def fetch_cmd(
        dataset: Annotated[str, typer.Argument(help="Only 'hal' for now.")],
        dest: Annotated[Path | None, typer.Option(help="Output folder (default: settings.data_dir()).")] = None,
        force: Annotated[bool, typer.Option(help="Download again even if the files are present.")] = False,
        games_from: Annotated[Path | None, typer.Option(
            help="Stage only the games of this converted folder (e.g. ../shared/data); default: all.")] = None,
        mirror: Annotated[str | None, typer.Option(
            help="Raw-file root of a mirror of the pinned commit, instead of raw.githubusercontent.com.")] = None,
    ) -> None:
        """Download the HAL release files (network), check sha256, convert them."""
        if dataset != "hal":
            raise typer.BadParameter(f"unknown dataset {dataset!r} (known: hal)")
        try:
            games = staged_games(games_from) if games_from else None
            manifest = hal_manifest(mirror.rstrip("/") + "/") if mirror else None
            report = fetch_hal(dest, force=force, games=games, manifest=manifest, log=typer.echo)
        except (FetchError, DataError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"raw files: {report.raw_dir} (sha256 lock: {report.raw_dir / LOCK_NAME})")
        if games is None:
            typer.echo("staged all Turing games; the project's files keep some aside, so its hal_turing/*.jsonl "
                       "sha256 match only with --games-from naming a folder of the same games")
        typer.echo(f"converted {len(report.written)} files into {report.dest}")
        _print_checks(report.checks)
        typer.echo(f"not made by fetch (hand-checked analyses of the project's data): {', '.join(CURATED)}")

    @data_app.command("verify")
    def verify_cmd(
        folder: Annotated[Path | None, typer.Argument(help="Data folder (default: data_dir()).")] = None,
    ) -> None:
        """Check a data folder against the sha256 of the project's converted files."""
        root = data_dir(folder)
        if not root.is_dir():
            raise fail(f"{root}: no such data folder" + ("" if folder else " (run `traitlab data fetch hal`, "
                                                                          "or give the folder)"))
        checks = verify_data_dir(root)
        _print_checks(checks)
        if any(c.status != "ok" for c in checks):
            raise typer.Exit(1)


def _print_checks(checks: list[FileCheck]) -> None:
    for c in checks:
        typer.echo(f"{c.status:8} {c.path}" + (f"  sha256 {c.sha256}" if c.status == "differs" else ""))
    ok = sum(c.status == "ok" for c in checks)
    typer.echo(f"{ok}/{len(checks)} files match the project's converted sha256")
