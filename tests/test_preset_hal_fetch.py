"""``traitlab data fetch hal``: converters on original-format files, sha256 checks, a real HTTP download.

Nothing here touches the internet: originals are written into tmp_path in the HAL repository's CSV/JSON
layouts, downloads go through a loopback HTTP server, and the round-trip test rebuilds originals from
``../shared/data`` to check that conversion reproduces the project's files byte for byte.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import json
import random
import shutil
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from traitlab.data import (
    DataError,
    load_dialogues,
    load_proposals,
    load_ratings,
    load_trait_set,
    pair_dialogues,
    read_jsonl,
)
from traitlab.presets.hal import fetch

app = typer.Typer()
fetch.register(app)  # the same commands ``traitlab data ...`` has (see test_traitlab_cli_has_the_data_group)

TURING_COLS = ["game_id", "human_verdict", "confidence", "reason", "conversation_A_transcript",
               "conversation_B_transcript", "label_A", "label_B", "who_is_human", "ai_model", "human_correct"]
JUDGE_COLS = [*TURING_COLS, "likert_evaluation_A", "likert_evaluation_B", "likert_evaluation_A_mean",
              "likert_evaluation_B_mean", "ai_mean_verdict", "cv_A", "cv_B", "elapsed_time"]
FS_COLS = [*TURING_COLS, "aijudge_verdict", "human_characteristics", "elapsed_time"]
SCORED_COLS = ["prompt", "response", "dialogue_id", "dialogue", "likert_evaluation", "hal16_score",
               "likert_evaluation_mean", "cv", "elapsed_time", "judge_model", "judge_reasoning_effort"]
SYNTH_COLS = ["model", "reasoning_effort", "dialogue", "score", "parent_id", "persona_id", "dialogue_id"]
TRAIN_COLS = [*SYNTH_COLS, "likert_evaluation", "hal16_score", "likert_evaluation_mean", "cv", "elapsed_time"]


def write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, cols, restval="")
        w.writeheader()
        w.writerows(rows)


def likert(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def notebook(groups: dict[str, list[str]]) -> str:
    """A notebook whose code cell holds the HAL32Q prompt (numbered statements under group headings)."""
    lines, k = ["def _build_prompt_HLJ(conversation):", '    return """# Scale', "", "**Likert Statements**", ""], 0
    for g, (heading, texts) in enumerate(groups.items(), start=1):
        lines.append(f"**Group {g}: {heading}**")
        for t in texts:
            k += 1
            lines.append(f"{k}. {t}")
        lines.append("")
    lines += ["## Required Input", "", 'Only W."""']
    src = [line + "\n" for line in lines]
    return json.dumps({"cells": [{"cell_type": "markdown", "source": ["# HAL32Q"]},
                                 {"cell_type": "code", "source": src}]}, indent=1)


# ---------------------------------------------------------------- tiny synthetic originals

GAMES = {  # game_id -> (label_A, label_B, confidence, human_correct, transcript A, transcript B)
    "12": ("Human", "gpt-4.5_quinn", "-40", "True",
           "I: hey\nW: hi there  \nsorry, typing on my phone\nI: where r u\nW: San Diego",
           "I: hey\nW: Hello! How’s it going?"),
    "3": ("eliza", "Human", "90", "True", "I: hi\nW: Please state your problem.", "I: hi\nW: yo"),
    "7": ("Human", "llama-405b_minimal", "12", "False", "I: sup\nW: nm u", "I: sup\nW: Not much, you?"),
}
SYNTH_GROUPS = {f"Heading {g}": [f"Statement {g}-{i}." for i in range(n)] for g, n in enumerate([7, 6, 3, 6, 4, 6])}


def judge_ratings(judge_i: int, game: str, side: str) -> list[int]:
    return [1 + (judge_i + int(game) + i + (side == "B")) % 5 for i in range(32)]


def write_originals(raw: Path, license_bytes: bytes) -> None:
    """Every file of the manifest, a few rows each, rows out of order as the originals are."""
    (raw / "LICENSE").write_bytes(license_bytes)
    base = {g: {"game_id": g, "human_verdict": "A", "confidence": c, "reason": f"reason {g}, \"quoted\"\n",
                "conversation_A_transcript": ta, "conversation_B_transcript": tb, "label_A": la, "label_B": lb,
                "who_is_human": "A" if la == "Human" else "B", "ai_model": lb if la == "Human" else la,
                "human_correct": hc} for g, (la, lb, c, hc, ta, tb) in GAMES.items()}
    write_csv(raw / fetch.TURING_CSV, TURING_COLS, list(base.values()))
    extra = {**base["7"], "game_id": "999"}  # a game the Turing CSV does not hold: ignored
    for j, judge in enumerate(fetch.TURING_JUDGES):
        rows = [{**base[g], "likert_evaluation_A": likert(judge_ratings(j, g, "A")),
                 "likert_evaluation_B": likert(judge_ratings(j, g, "B"))} for g in ("7", "12", "3")]
        rows.append({**extra, "likert_evaluation_A": likert([3] * 32), "likert_evaluation_B": likert([3] * 32)})
        write_csv(raw / f"Turing_output/run_1_Turing_data_{judge}.csv", JUDGE_COLS, rows)
    fs = [{**base[g], "aijudge_verdict": v, "human_characteristics": json.dumps(st, indent=2)}
          for g, v, st in [("3", "B", ["Answers directly.", "Uses slang."]), ("12", "B", ["Typos."]),
                           ("7", "A", ["Short replies.", "Asks back."])]]
    write_csv(raw / fetch.PROPOSALS_CSV, FS_COLS, fs)
    (raw / fetch.WEIGHTS_JSON).write_text(json.dumps({"w": [k / 10 for k in range(16)], "b": -2.5}, indent=4))
    (raw / fetch.HAL32Q_NOTEBOOK).write_text(notebook(SYNTH_GROUPS), encoding="utf-8")
    for m, model in enumerate(sorted(fetch.DOCTOR_RUNS)):
        for epoch in fetch.DOCTOR_RUNS[model]:
            rows = [{"prompt": "Generate...", "response": "...", "dialogue_id": str(p),
                     "dialogue": f"P: I am patient {p}.\n2. D: Doctor here.\nP: ok", "judge_model": "gpt-5",
                     "likert_evaluation": likert([1 + (p + m + i) % 5 for i in range(16)]),
                     "hal16_score": str(-1.5 - p - epoch / 100)} for p in (1, 0)]
            write_csv(raw / fetch.scored_generation_path(model, epoch), SCORED_COLS, rows)
    synth = [{"model": "gpt-5", "reasoning_effort": "high", "dialogue": "P: a\nD: b\n</dialogue>", "score": "0",
              "parent_id": "0", "persona_id": "1", "dialogue_id": "2"},
             {"model": "gpt-4.1", "reasoning_effort": "", "dialogue": "P: c\nD: d", "score": "0",
              "parent_id": "0", "persona_id": "0", "dialogue_id": "1"},
             {"model": "qwen2.5:14b", "reasoning_effort": "", "dialogue": "P: e\nD: f", "score": "0",
              "parent_id": "0", "persona_id": "0", "dialogue_id": "0"}]
    write_csv(raw / fetch.SYNTH_TEST_CSV, SYNTH_COLS, synth)
    train = [{**r, "likert_evaluation": likert([5 - i % 5 for i in range(16)]), "hal16_score": "-4.6055097894"}
             for r in synth[:2]]
    write_csv(raw / fetch.SYNTH_TRAIN_CSV, TRAIN_COLS, train)
    for split in ("train", "test"):
        write_csv(raw / fetch.PROMPTS_CSV.format(split=split), ["persona_id", "prompt"],
                  [{"persona_id": str(i), "prompt": f"Generate a {split} visit {i}.\n<dialogue>\n"} for i in range(2)])


@pytest.fixture
def license_bytes(shared_data: Path) -> bytes:
    return (shared_data / "LICENSE-HAL-Apache-2.0.txt").read_bytes()


@pytest.fixture
def raw(tmp_path: Path, license_bytes: bytes) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    write_originals(d, license_bytes)
    return d


# ---------------------------------------------------------------- converters


def test_manifest_covers_every_source_and_pins_only_the_license():
    m = fetch.hal_manifest()
    assert len(m.files) == 1 + 1 + 6 + 1 + 1 + 1 + 2 + 2 + 21
    assert m.url(m.files[0]) == f"https://raw.githubusercontent.com/ROC-HCI/hal/{fetch.HAL_COMMIT}/LICENSE"
    nb = next(f for f in m.files if f.path == fetch.HAL32Q_NOTEBOOK)
    assert m.url(nb).endswith("/3.%20HAL32Q-Judge-Turing_data.ipynb")
    assert {f.path for f in m.files if f.sha256} == {"LICENSE"}


def test_convert_turing_side(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    written = fetch.convert_hal(raw, out)
    assert "hal_turing/dialogues.jsonl" in written and "hal_doctor/generations_scored.jsonl" in written
    dialogues = load_dialogues(out / "hal_turing/dialogues.jsonl")
    assert [d.id for d in dialogues] == ["3-A", "3-B", "7-A", "7-B", "12-A", "12-B"]  # numeric game order
    d12a = next(d for d in dialogues if d.id == "12-A")
    assert d12a.label == "human" and d12a.target_role == "witness"
    assert [m.content for m in d12a.messages] == ["hey", "hi there  \nsorry, typing on my phone", "where r u",
                                                  "San Diego"]
    d12b = next(d for d in dialogues if d.id == "12-B")
    assert d12b.label == "ai" and d12b.meta["witness"] == "gpt-4.5_quinn"
    assert d12b.messages[1].content == "Hello! How’s it going?"
    assert d12b.meta["interrogator_confidence"] == -40 and d12b.meta["human_verdict_correct"] is True
    assert d12b.meta["interrogator_reason"] == 'reason 12, "quoted"\n'
    assert len(pair_dialogues(dialogues)) == 3

    ratings = load_ratings(out / "hal_turing/judge_ratings.jsonl")
    assert len(ratings) == 6 * 6  # game 999 (not a Turing game) is left out
    r = next(x for x in ratings if x.judge == "gpt-4.1" and x.dialogue_id == "7-B")
    assert r.ratings == {f"t{i + 1:02d}": float(v) for i, v in enumerate(judge_ratings(2, "7", "B"))}
    assert [x.judge for x in ratings[::6]] == list(fetch.TURING_JUDGES)

    props = load_proposals(out / "hal_turing/proposals.jsonl")
    assert [(p["game_id"], p["verdict_correct"], p["statements"]) for p in props] == [
        ("3", True, ["Answers directly.", "Uses slang."]), ("7", True, ["Short replies.", "Asks back."]),
        ("12", False, ["Typos."])]

    traits = load_trait_set(out / "hal_turing/traits_hal32.json")
    assert traits.ids == [f"t{i:02d}" for i in range(1, 33)]
    assert traits["t08"].text == "Statement 1-0." and traits["t08"].group == "Heading 1"
    weights = json.loads((out / "hal_turing/hl16_weights.json").read_text())
    assert weights["bias"] == -2.5
    assert list(weights["weights"]) == [f"t{i + 1:02d}" for i in fetch.HL16_SELECTED_IDX]
    assert weights["weights"]["t12"] == 0.7 and weights["weights"]["t32"] == 1.5


def test_convert_doctor_side(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    fetch.convert_hal(raw, out)
    gens = [obj for _, obj in read_jsonl(out / "hal_doctor/generations_scored.jsonl")]
    assert len(gens) == 2 * 21
    assert gens[0]["id"] == "Qwen2.5-14B-Instruct-e00-p000" and gens[1]["persona_id"] == 1
    assert gens[-1]["id"] == "Llama-3.3-70B-Instruct-e10-p001"
    # HL16Q item k is keyed by the trait it describes; Qwen is model 0, persona 0: item k rated 1 + k % 5
    assert gens[0]["ratings"] == {t: 1 + k % 5 for k, t in sorted(enumerate(fetch.HL16Q_ITEM_TRAITS),
                                                                  key=lambda kt: kt[1])}
    assert list(gens[0]["ratings"]) == sorted(fetch.HL16Q_ITEM_TRAITS)
    assert gens[1]["hl16_score"] == -2.5 and gens[0]["judge"] == "gpt-5"
    dialogues = load_dialogues(out / "hal_doctor/generations_scored.jsonl")
    assert dialogues[0].target_role == "patient" and [m.role for m in dialogues[0].messages] == [
        "patient", "doctor", "patient"]
    assert load_ratings(out / "hal_doctor/generations_scored.jsonl")[0].ratings["t10"] == 3.0

    test = [obj for _, obj in read_jsonl(out / "hal_doctor/dialogues_test.jsonl")]
    assert [(t["id"], t["generator_model"], t["reasoning_effort"], t["dialogue_id"]) for t in test] == [
        ("synthlabs-test-0", "qwen2.5:14b", None, 0), ("synthlabs-test-1", "gpt-4.1", None, 1),
        ("synthlabs-test-2", "gpt-5", "high", 2)]
    assert "score" not in test[0] and test[2]["dialogue"].endswith("</dialogue>")
    train = load_ratings(out / "hal_doctor/train_scored_gpt5mini.jsonl")
    assert [r.judge for r in train] == ["gpt-5-mini"] * 2 and train[0].dialogue_id == "synthlabs-train-0"
    prompts = [obj for _, obj in read_jsonl(out / "hal_doctor/prompts_test.jsonl")]
    assert prompts[1] == {"id": "synthlabs-test-prompt-1", "persona_id": 1,
                          "prompt": "Generate a test visit 1.\n<dialogue>\n"}


def test_games_filter_keeps_only_staged_games(raw: Path):
    out = fetch.convert_turing(raw, games={"3", "12"})
    ids = [json.loads(line)["id"] for line in out["hal_turing/dialogues.jsonl"].decode().splitlines()]
    assert ids == ["3-A", "3-B", "12-A", "12-B"]
    assert len(out["hal_turing/judge_ratings.jsonl"].decode().splitlines()) == 6 * 4
    with pytest.raises(DataError, match="requested games not in the file"):
        fetch.convert_turing(raw, games={"3", "4242"})


def _corrupt(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(("rel", "old", "new", "line", "field"), [
    ("Turing_output/run_1_Turing_data_gpt-5-mini.csv", "[4, 5, 1", "[4, 5, 6", 2, "likert_evaluation_A"),
    (fetch.TURING_CSV, "I: sup\nW: nm u", "oops\nW: nm u", 13, "conversation_A_transcript"),
    (fetch.TURING_CSV, ",-40,", ",minus forty,", 2, "confidence"),
    (fetch.TURING_CSV, "human_correct", "human_ok", 1, "human_correct"),
    (fetch.PROPOSALS_CSV, '""Typos.""', '""Typos.', 9, "human_characteristics"),
    (fetch.scored_generation_path("meta-llama/Llama-3.2-1B-Instruct", 4), "gpt-5,\n", "gpt-5,,extra\n", 2, None),
])
def test_bad_originals_name_file_line_field_and_write_nothing(raw, tmp_path, rel, old, new, line, field):
    _corrupt(raw / rel, old, new)
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        fetch.convert_hal(raw, out)
    assert e.value.path == str(raw / rel) and e.value.field == field
    if line is not None:
        assert e.value.line == line
    else:
        assert e.value.line and e.value.line > 1
    assert not out.exists()


def test_non_utf8_original_names_its_line(raw, tmp_path):
    path = raw / fetch.TURING_CSV
    data = path.read_bytes()
    at = data.index(b"Please state")
    path.write_bytes(data[:at] + b"\xff" + data[at:])
    with pytest.raises(DataError, match="not UTF-8") as e:
        fetch.convert_hal(raw, tmp_path / "out")
    assert e.value.line == data[:at].count(b"\n") + 1
    assert not (tmp_path / "out").exists()


def test_duplicate_game_is_an_error(raw):
    path = raw / fetch.TURING_CSV
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    write_csv(path, TURING_COLS, [*rows, rows[0]])
    with pytest.raises(DataError, match="duplicate game") as e:
        fetch.convert_turing(raw)
    assert e.value.field == "game_id"


# ---------------------------------------------------------------- round trip on the project's real files


def originals_from_converted(data: Path, raw: Path, seed: int = 0) -> None:
    """HAL-format originals rebuilt from converted files, rows shuffled as the originals' are."""
    rng = random.Random(seed)
    raw.mkdir(parents=True, exist_ok=True)
    load = lambda rel: [obj for _, obj in read_jsonl(data / rel)]  # noqa: E731
    (raw / "LICENSE").write_bytes((data / "LICENSE-HAL-Apache-2.0.txt").read_bytes())
    prefix = {"interrogator": "I: ", "witness": "W: "}
    games: dict[str, dict] = {}
    for d in load("hal_turing/dialogues.jsonl"):
        s = d["id"][-1]
        g = games.setdefault(d["game_id"], {"game_id": d["game_id"], "human_verdict": "A"})
        g[f"conversation_{s}_transcript"] = "\n".join(prefix[m["role"]] + m["content"] for m in d["messages"])
        g[f"label_{s}"] = "Human" if d["label"] == "human" else d["witness"]
        if d["label"] == "human":
            g["who_is_human"] = s
        g |= {"confidence": str(d["meta"]["interrogator_confidence"]), "reason": d["meta"]["interrogator_reason"],
              "human_correct": str(d["meta"]["human_verdict_correct"])}
    rows = list(games.values())
    rng.shuffle(rows)
    write_csv(raw / fetch.TURING_CSV, TURING_COLS, rows)
    by_judge: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in load("hal_turing/judge_ratings.jsonl"):
        gid, s = r["id"].rsplit("-", 1)
        by_judge[r["judge"]].setdefault(gid, dict(games[gid]))[f"likert_evaluation_{s}"] = likert(
            r["ratings"][f"t{i:02d}"] for i in range(1, 33))
    for judge in fetch.TURING_JUDGES:
        rows = list(by_judge[judge].values())
        rng.shuffle(rows)
        write_csv(raw / f"Turing_output/run_1_Turing_data_{judge}.csv", JUDGE_COLS, rows)
    fs = [{**games[p["game_id"]], "human_characteristics": json.dumps(p["statements"], indent=2),
           "aijudge_verdict": (games[p["game_id"]]["who_is_human"] if p["verdict_correct"]
                               else "AB".replace(games[p["game_id"]]["who_is_human"], ""))}
          for p in load("hal_turing/proposals.jsonl")]
    write_csv(raw / fetch.PROPOSALS_CSV, FS_COLS, fs)
    hl16 = json.loads((data / "hal_turing/hl16_weights.json").read_text())
    (raw / fetch.WEIGHTS_JSON).write_text(json.dumps({"w": list(hl16["weights"].values()), "b": hl16["bias"]}))
    groups: dict[str, list[str]] = defaultdict(list)
    for t in json.loads((data / "hal_turing/traits_hal32.json").read_text(encoding="utf-8")):
        groups[t["group"]].append(t["text"])
    (raw / fetch.HAL32Q_NOTEBOOK).write_text(notebook(groups), encoding="utf-8")

    def hl16q(r: dict) -> dict:
        return {"likert_evaluation": likert(r["ratings"][t] for t in fetch.HL16Q_ITEM_TRAITS),
                "hal16_score": repr(r["hl16_score"])}

    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in load("hal_doctor/generations_scored.jsonl"):
        runs[r["policy_model"], r["epoch"]].append({"dialogue_id": str(r["persona_id"]), "dialogue": r["dialogue"],
                                                    "judge_model": r["judge"], **hl16q(r)})
    for (model, epoch), rows in runs.items():
        rng.shuffle(rows)
        write_csv(raw / fetch.scored_generation_path(model, epoch), SCORED_COLS, rows)
    for rel, dest, cols in [("hal_doctor/dialogues_test.jsonl", fetch.SYNTH_TEST_CSV, SYNTH_COLS),
                            ("hal_doctor/train_scored_gpt5mini.jsonl", fetch.SYNTH_TRAIN_CSV, TRAIN_COLS)]:
        rows = [{"model": r["generator_model"], "reasoning_effort": r["reasoning_effort"] or "", "score": "0",
                 "dialogue": r["dialogue"], **{k: str(r[k]) for k in ("parent_id", "persona_id", "dialogue_id")},
                 **(hl16q(r) if "ratings" in r else {})} for r in load(rel)]
        rng.shuffle(rows)
        write_csv(raw / dest, cols, rows)
    for split in ("train", "test"):
        write_csv(raw / fetch.PROMPTS_CSV.format(split=split), ["persona_id", "prompt"],
                  [{"persona_id": str(r["persona_id"]), "prompt": r["prompt"]}
                   for r in load(f"hal_doctor/prompts_{split}.jsonl")])


def test_round_trip_reproduces_the_project_files_byte_for_byte(shared_data: Path, tmp_path: Path):
    """Originals rebuilt from ../shared/data (shuffled) convert back to files with the published sha256.

    This checks the converter's parsing, ordering, ids and serialisation on all the real records; it cannot
    check the rebuilding itself against the true originals (this machine has no network).
    """
    raw = tmp_path / "raw"
    originals_from_converted(shared_data, raw)
    out = tmp_path / "out"
    written = fetch.convert_hal(raw, out, games=fetch.staged_games(shared_data))
    assert sorted(written) == sorted(set(fetch.CONVERTED_SHA256) - set(fetch.CURATED))
    checks = fetch.verify_data_dir(out, only=written)
    assert [c.path for c in checks if c.status != "ok"] == []


# ---------------------------------------------------------------- download over a loopback HTTP server


class _Server:
    def __init__(self, root: Path):
        self.requests: list[str] = []
        self.truncate: set[str] = set()
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                served.requests.append(self.path)
                rel = self.path.lstrip("/")
                if rel in served.truncate:
                    body = (root / rel).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(raw: Path):
    s = _Server(raw)
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("TRAITLAB_CACHE", str(c))
    monkeypatch.delenv("TRAITLAB_DATA", raising=False)
    return c


def test_fetch_downloads_records_tofu_converts_and_resumes(server, cache, raw):
    logs: list[str] = []
    report = fetch.fetch_hal(manifest=fetch.hal_manifest(server.url), log=logs.append)
    assert report.dest == cache / "data" / "hal"  # settings.data_dir() default
    assert report.raw_dir == cache / "data" / "hal" / "raw"
    assert len(server.requests) == 36 and any("%20" in p for p in server.requests)
    lock = json.loads((report.raw_dir / fetch.LOCK_NAME).read_text())
    assert lock["commit"] == fetch.HAL_COMMIT and len(lock["files"]) == 36
    tofu = raw / fetch.TURING_CSV
    assert lock["files"][fetch.TURING_CSV] == hashlib.sha256(tofu.read_bytes()).hexdigest()
    assert sum(line.startswith("TOFU") for line in logs) == 35  # all but the pinned LICENSE
    assert any(line.startswith("fetched   LICENSE") for line in logs)
    assert load_dialogues(report.dest / "hal_turing/dialogues.jsonl")[0].id == "3-A"
    license_check = next(c for c in report.checks if c.path == "LICENSE-HAL-Apache-2.0.txt")
    assert license_check.status == "ok"
    assert not list(report.raw_dir.rglob("*.part"))

    server.requests.clear()
    logs.clear()
    fetch.fetch_hal(manifest=fetch.hal_manifest(server.url), log=logs.append)
    assert server.requests == [] and all(line.startswith("have") for line in logs)  # resumed: nothing fetched


def test_pinned_sha256_mismatch_deletes_the_file_and_converts_nothing(server, cache, raw):
    (raw / "LICENSE").write_bytes(b"not the Apache license\n")
    with pytest.raises(fetch.FetchError, match=r"LICENSE: sha256 .*pinned in the manifest"):
        fetch.fetch_hal(manifest=fetch.hal_manifest(server.url), log=lambda _: None)
    assert not (cache / "data/hal/raw/LICENSE").exists()
    assert not (cache / "data/hal/hal_turing").exists()


def test_truncated_body_is_an_error_and_leaves_no_partial_file(server, cache):
    server.truncate.add(fetch.WEIGHTS_JSON)
    with pytest.raises(fetch.FetchError, match="truncated body"):
        fetch.fetch_hal(manifest=fetch.hal_manifest(server.url), log=lambda _: None)
    raw_dir = cache / "data/hal/raw"
    assert not (raw_dir / fetch.WEIGHTS_JSON).exists() and not list(raw_dir.rglob("*.part"))
    assert not (cache / "data/hal/hal_turing").exists()


def test_a_changed_source_fails_against_the_lock(server, cache, raw):
    fetch.fetch_hal(manifest=fetch.hal_manifest(server.url), log=lambda _: None)
    _corrupt(raw / fetch.PROMPTS_CSV.format(split="test"), "visit 1", "visit one")
    with pytest.raises(fetch.FetchError, match=r"recorded in .*hal\.lock\.json"):
        fetch.fetch_hal(force=True, manifest=fetch.hal_manifest(server.url), log=lambda _: None)
    assert not (cache / "data/hal/raw" / fetch.PROMPTS_CSV.format(split="test")).exists()


def test_cli_fetch_through_a_mirror_then_verify(server, cache, tmp_path):
    runner = CliRunner()
    dest = tmp_path / "fetched"
    res = runner.invoke(app, ["data", "fetch", "hal", "--dest", str(dest), "--mirror", server.url])
    assert res.exit_code == 0, res.output
    assert "converted 11 files" in res.output and "TOFU" in res.output
    assert "ok       LICENSE-HAL-Apache-2.0.txt" in res.output
    res = runner.invoke(app, ["data", "verify", str(dest)])
    assert res.exit_code == 1 and "missing  hal_doctor/provenance.json" in res.output
    res = runner.invoke(app, ["data", "fetch", "other"])
    assert res.exit_code != 0


# ---------------------------------------------------------------- verify


def test_verify_the_real_data_folder(shared_data: Path):
    checks = fetch.verify_data_dir(shared_data)
    assert len(checks) == 13 and all(c.status == "ok" for c in checks)
    res = CliRunner().invoke(app, ["data", "verify", str(shared_data)])
    assert res.exit_code == 0 and "13/13 files match" in res.output


def test_verify_reports_a_changed_and_a_missing_file(shared_data: Path, tmp_path: Path):
    for rel in ("hal_turing/hl16_weights.json", "hal_turing/traits_hal32.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / rel, tmp_path / rel)
    w = tmp_path / "hal_turing/hl16_weights.json"
    w.write_text(w.read_text().replace("-2.66", "-2.67"))
    status = {c.path: c.status for c in fetch.verify_data_dir(tmp_path)}
    assert status["hal_turing/hl16_weights.json"] == "differs"
    assert status["hal_turing/traits_hal32.json"] == "ok"
    assert status["hal_turing/dialogues.jsonl"] == "missing"


def test_traitlab_cli_has_the_data_group(shared_data: Path):
    from traitlab.cli import app as traitlab_app

    res = CliRunner().invoke(traitlab_app, ["data", "verify", str(shared_data)])
    assert res.exit_code == 0 and "13/13 files match" in res.output
