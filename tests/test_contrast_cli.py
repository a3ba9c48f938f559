"""Every command that reads dialogues takes the contrast: a file, flags, or a preset; none is guessed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from traitlab.cli import app
from traitlab.judges.aggregate import Aggregator

EX = Path(__file__).resolve().parent.parent / "examples" / "support"
FILES = ["--ratings", str(EX / "ratings.jsonl"), "--dialogues", str(EX / "dialogues.jsonl"),
         "--traits", str(EX / "traits.json")]


def _fit(tmp_path: Path, *flags: str):
    out = tmp_path / "agg.json"
    res = CliRunner().invoke(app, ["fit", *FILES, "--bootstrap", "0", "--out", str(out),
                                   "--store", str(tmp_path / "s.duckdb"), *flags])
    return res, out


def test_fit_with_a_contrast_file_or_flags(tmp_path):
    res, out = _fit(tmp_path, "--contrast", str(EX / "contrast.yaml"))
    assert res.exit_code == 0, res.output
    assert "P(a top-rated" in res.output
    first = Aggregator.load(out)
    assert first.meta["contrast"]["positive"] == "best" and first.weights["next_step"] > 0
    res, out = _fit(tmp_path, "--positive", "average", "--negative", "best", "--target-role", "agent")
    assert res.exit_code == 0, res.output
    flipped = Aggregator.load(out)  # the other side rewarded: the same trait now counts against
    assert flipped.meta["contrast"]["positive"] == "average" and flipped.weights["next_step"] < 0


def test_unknown_roles_or_labels_are_one_clear_line(tmp_path):
    res, _ = _fit(tmp_path)
    assert res.exit_code == 2 and "match no known shape; pass target_role (--target-role)" in res.output
    res, _ = _fit(tmp_path, "--target-role", "agent")
    assert res.exit_code == 2 and "--positive LABEL --negative LABEL or --contrast FILE" in res.output
    res, _ = _fit(tmp_path, "--contrast", str(EX / "contrast.yaml"), "--positive", "excellent")
    assert res.exit_code == 2 and "label 'best', not one of ('excellent', 'average')" in res.output


def test_validate_and_discover_take_the_contrast(tmp_path):
    runner, store = CliRunner(), ["--store", str(tmp_path / "s.duckdb")]
    res = runner.invoke(app, ["validate", *FILES, "--contrast", str(EX / "contrast.yaml"),
                              "--out", str(tmp_path / "v.json"), *store])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["contrast"]["name"] == "support" and "next_step" in report["selected"]
    res = runner.invoke(app, ["discover", "--proposals", str(EX / "proposals.jsonl"), "--merge-judge", "none",
                              "--out", str(tmp_path / "t.json"), *store])
    assert res.exit_code == 2 and "say which side is which with --positive LABEL" in res.output


def test_preset_fills_files_and_contrast(shared_data, tmp_path):
    """``--preset hal --data DIR`` is HAL's fit through the general path: its judge, files and contrast."""
    out = tmp_path / "hal.json"
    res = CliRunner().invoke(app, ["fit", "--preset", "hal", "--data", str(shared_data), "--bootstrap", "0",
                                   "--out", str(out), "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    assert "0.8575" in res.output  # gpt-5 on HAL32, out-of-fold pairwise accuracy over 428 games
    assert Aggregator.load(out).meta["contrast"]["group"] == "game_id"
