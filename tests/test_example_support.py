"""The worked non-HAL example: examples/support/run.py runs the whole loop with the CLI, offline."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from traitlab.contrast import Contrast
from traitlab.data import load_dialogues, load_proposals, load_ratings, load_trait_set, pair_dialogues
from traitlab.judges.aggregate import Aggregator
from traitlab.store import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support"


def test_example_data_is_what_its_generator_writes(tmp_path):
    copy = tmp_path / "support"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("out", "__pycache__"))
    subprocess.run([sys.executable, str(copy / "make_data.py")], check=True)
    for name in ("dialogues.jsonl", "ratings.jsonl", "proposals.jsonl", "prompts.jsonl", "traits.json"):
        assert (copy / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


def test_example_data_is_a_contrast_of_its_own():
    contrast = Contrast.load(EXAMPLE / "contrast.yaml")
    dialogues = load_dialogues(EXAMPLE / "dialogues.jsonl", target_role=contrast.target_role)
    pairs = pair_dialogues(dialogues, contrast)
    assert len(dialogues) == 80 and len(pairs) == 40
    assert {m.role for d in dialogues for m in d.messages} == {"customer", "agent"}
    assert {d.label for d in dialogues} == {"best", "average"}
    traits = load_trait_set(EXAMPLE / "traits.json")
    ratings = load_ratings(EXAMPLE / "ratings.jsonl")
    assert {r.dialogue_id for r in ratings} == {d.id for d in dialogues}
    assert all(set(r.ratings) == set(traits.ids) for r in ratings)
    assert len(load_proposals(EXAMPLE / "proposals.jsonl")) == 40


@pytest.mark.slow
def test_support_loop_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(EXAMPLE / "run.py"), "--out", str(out)], capture_output=True,
                          text=True, timeout=1500)
    steps = json.loads((out / "steps.json").read_text())
    assert proc.returncode == 0, "\n".join(f"{s['step']}: rc {s['rc']}\n{s['output']}" for s in steps
                                            if s["rc"])
    assert [s["rc"] for s in steps] == [0] * 11

    given = load_trait_set(out / "traits_discovered.json")
    assert len(given.traits) >= 3 and all(t.provenance.games[0].startswith("ticket") for t in given.traits)
    offline = steps[1]["output"]
    assert "statements echoing the prompt dropped" in offline
    assert len(load_trait_set(out / "traits_offline.json").traits) >= 3

    rated = [json.loads(line) for line in (out / "ratings_offline.jsonl").read_text().splitlines()]
    assert len(rated) == 1 and rated[0]["judge"] == "local/smollm2-135m"
    assert set(rated[0]["ratings"]) == set(load_trait_set(EXAMPLE / "traits.json").ids)

    rows = list(csv.DictReader((out / "validation.csv").open()))
    assert {r["trait_id"] for r in rows if r["selected"] == "True"} >= {"next_step"}
    assert all(r["direction"] == "negative" for r in rows if r["trait_id"] == "scripted")

    agg = Aggregator.load(out / "aggregator.json")
    assert agg.meta["contrast"]["positive"] == "best"
    assert json.loads((out / "fit_report.json").read_text())["cv"]["pairwise_accuracy"] > 0.8

    scores = {json.loads(line)["id"]: json.loads(line)["score"]
              for line in (out / "reward_scores.jsonl").read_text().splitlines()}
    wins = [scores[f"ticket{t:02d}-best"] > scores[f"ticket{t:02d}-average"] for t in range(40)]
    assert len(scores) == 80 and sum(wins) >= 32

    assert (out / "align" / "adapter").is_dir()
    with Store(out / "traitlab.duckdb") as st:
        runs = {r["run_id"]: r for r in st.runs()}
    assert runs["support-base"]["status"] == runs["support-adapter"]["status"] == "done"
    html = (out / "report" / "report.html").read_text()
    assert "support-base" in html and "support-adapter" in html
