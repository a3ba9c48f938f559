"""Eval suites, conversation generation (resume), the judge benchmark. Model calls go through the real
JudgeClient; LiteLLM's ``mock_response`` stands in for a hosted model, and one slow test runs the offline one."""

from __future__ import annotations

import instructor
import numpy as np
import pytest

from traitlab.data import DataError, load_dialogues, load_ratings, pair_dialogues, sample_dialogues
from traitlab.evals.generate import evaluate, plan
from traitlab.evals.judge_bench import (
    VerdictRecord,
    agreement_table,
    inverse_turing,
    retest_agreement,
    summarise_verdicts,
    verdicts_from_proposals,
)
from traitlab.evals.suite import load_suite, shipped_suites
from traitlab.types import TraitRatings

MINI = """\
name: mini
scenario: {turing: {source: sample}}
conversations: 3
turns: 2
model: openai/gpt-4o-mini
system_prompt: be a person
params: {mock_response: "lol idk, you?"}
scorers: []
"""


# suites -------------------------------------------------------------------------------------------------
def test_shipped_suites_load():
    names = sorted(shipped_suites())
    assert {"turing", "doctor", "turing-mini"} <= set(names)
    for name in names:
        s = load_suite(name)
        assert s.roles[1] in {"witness", "patient"}
    assert load_suite("doctor").roles == ("doctor", "patient")


@pytest.mark.parametrize(("text", "line", "field", "msg"), [
    (MINI.replace("turns: 2", "turns: many"), 4, "turns", "integer"),
    (MINI.replace("turns: 2", "turn: 2"), 4, "turn", "Extra inputs"),
    (MINI.replace("{turing: {source: sample}}", "{turing: {source: sample, interlocutor: {}}}"), 2,
     "scenario", "model"),
    (MINI.replace("{turing: {source: sample}}", "doctor"), 2, "scenario", "lines"),
    (MINI.replace("{turing: {source: sample}}", "turnig"), 2, "scenario", "no scenario named 'turnig'"),
    (MINI.replace("scorers: []", "scorers:\n  - reward\n  - jugde: {model: x}"), 10, "scorers.1",
     "no scorer named 'jugde'"),
    (MINI.replace("scorers: []", "scorers: [{judge: {model: m, mode: some}}]"), 8, "scorers.0", "mode"),
    (MINI + "plugins: [a\n", 10, None, "not valid YAML"),
    (MINI + "plugins: [nowhere.py]\n", 9, "plugins", "does not exist"),
])
def test_bad_suite_names_file_line_and_field(tmp_path, text, line, field, msg):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_suite(path)
    assert e.value.path == str(path) and e.value.line == line and e.value.field == field
    assert msg in str(e.value)


def test_plan_uses_sample_and_real_interrogator_lines(shared_data):
    mini = load_suite("turing-mini")
    scripts = plan(mini, 4)
    first = sample_dialogues()[0]
    assert scripts[0].lines == [m.content for m in first.messages if m.role == "interrogator"]
    assert len({tuple(s.lines) for s in scripts}) == 4  # four different sample games
    real = plan(load_suite("turing"), 2, shared_data)
    game = load_dialogues(shared_data / "hal_turing" / "dialogues.jsonl")[0]
    assert real[0].lines[0] == next(m.content for m in game.messages if m.role == "interrogator")
    doc = plan(load_suite("doctor"), 2, shared_data)
    assert doc[0].vars["persona"].startswith("Biography:") and doc[0].vars["persona"] != doc[1].vars["persona"]
    doctor = load_suite("doctor")
    assert plan(doctor, 1)[0].vars["persona"] == doctor.scenario.params["personas"][0]


# generation and resume ----------------------------------------------------------------------------------
def test_run_suite_generates_stores_and_resumes(store, tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(MINI)
    suite = load_suite(path)
    r1 = evaluate(suite, None, store, run_id="e1")
    assert (r1.generated, r1.resumed, r1.n_dialogues, r1.failed) == (3, 0, 3, [])
    ds = store.dialogues("e1")
    assert [m.role for m in ds[0].messages] == ["interrogator", "witness"] * 2
    assert ds[0].target_turns == ["lol idk, you?"] * 2 and ds[0].target_role == "witness"
    calls = store.sql("SELECT count(*) FROM calls WHERE run_id = 'e1'")[0][0]
    assert calls == 6  # 3 conversations x 2 turns, each a distinct request (seed per conversation and turn)
    store.sql("DELETE FROM dialogues WHERE run_id = 'e1' AND dialogue_id = 'mini-0002'")  # as if interrupted
    r2 = evaluate(suite, None, store, run_id="e1")
    assert (r2.generated, r2.resumed, r2.n_dialogues) == (1, 2, 3)
    assert store.sql("SELECT count(*) FROM calls WHERE run_id = 'e1'")[0][0] == calls  # served from the cache
    assert store.run("e1")["status"] == "done" and store.run("e1")["summary"]["n_dialogues"] == 3


def test_failed_model_calls_drop_the_conversation(store, tmp_path, monkeypatch):
    from traitlab.judges.client import JudgeClient

    monkeypatch.setattr(JudgeClient, "backoff_base_s", 0.0)
    path = tmp_path / "mini.yaml"
    path.write_text(MINI.replace('mock_response: "lol idk, you?"', "mock_response: litellm.RateLimitError"))
    suite = load_suite(path)
    r = evaluate(suite, None, store, run_id="bad", n=1)
    assert r.failed == ["mini-0000"] and r.n_dialogues == 0
    assert store.run("bad")["status"] == "failed"  # nothing succeeded (issue 11.1)


# judge benchmark ----------------------------------------------------------------------------------------
def _ratings(values: np.ndarray, judges: list[str]) -> list[TraitRatings]:
    return [TraitRatings(dialogue_id=f"d{u}", judge=j, ratings={"x": float(values[i, u])})
            for i, j in enumerate(judges) for u in range(values.shape[1])]


def test_agreement_synthetic():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, 200)
    same = agreement_table(_ratings(np.stack([truth, truth, truth]), ["a", "b", "c"]))
    assert same.traits[0].alpha_ordinal == pytest.approx(1.0) and same.pairs[0].exact == 1.0
    noise = agreement_table(_ratings(rng.integers(1, 6, (3, 200)), ["a", "b", "c"]))
    assert abs(noise.traits[0].alpha_ordinal) < 0.1
    with pytest.raises(ValueError, match="two judges"):
        agreement_table(_ratings(np.stack([truth]), ["a"]))


def test_agreement_on_the_six_real_judges(shared_data):
    ratings = load_ratings(shared_data / "hal_turing" / "judge_ratings.jsonl")
    keep = {r.dialogue_id for r in ratings[:300]}
    table = agreement_table([r for r in ratings if r.dialogue_id in keep], [f"t{i:02d}" for i in range(1, 33)])
    assert len(table.judges) == 6 and len(table.traits) == 32 and len(table.pairs) == 15
    by = {t.trait_id: t for t in table.traits}
    # lowercase texting style is plain to see; "consistent personal context" is a judgement call
    assert by["t03"].alpha_ordinal > 0.7 > 0.35 > by["t23"].alpha_ordinal
    assert 0.2 < table.mean_alpha < 0.7


def test_retest_agreement():
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 6, 100)
    steady = _ratings(np.stack([truth, truth]), ["j", "j"])
    shaky = _ratings(np.stack([truth, rng.integers(1, 6, 100)]), ["k", "k"])
    rows = {r.judge: r for r in retest_agreement(steady + shaky)}
    assert rows["j"].alpha_ordinal == pytest.approx(1.0) and rows["j"].repeats == 2
    assert rows["k"].alpha_ordinal < 0.6


def test_inverse_turing_always_a(store):
    """A judge that always says "A" is right exactly once per pair: accuracy 0.5, never swap-consistent."""
    from traitlab.judges.client import JudgeClient

    pairs = pair_dialogues(sample_dialogues())
    answer = ('{"positive": "A", "confidence": 80, "traits": ["Uses casual slang a lot", "Makes small typos often", '
              '"Asks questions back to them"], "negative_tells": []}')
    client = JudgeClient("openai/gpt-4o-mini", store=store, run_id="it", instructor_mode=instructor.Mode.JSON,
                         mock_response=answer)
    res = inverse_turing(pairs, client)
    assert res.n_pairs == len(pairs) and res.n_failed == 0
    assert res.accuracy == 0.5 and res.swap_consistency == 0.0 and res.said_a == 1.0
    assert res.ece == pytest.approx(0.3) and res.mean_confidence == pytest.approx(0.8)
    assert store.sql("SELECT count(*) FROM calls WHERE run_id = 'it'")[0][0] == 2 * len(pairs)


def test_summarise_verdicts_perfect_and_calibrated():
    v = [VerdictRecord(pair_id=str(i), order=o, said=h, correct=True, confidence=1.0)
         for i in range(10) for o, h in (("positive_first", "A"), ("negative_first", "B"))]
    res = summarise_verdicts("m", v)
    assert (res.accuracy, res.swap_consistency, res.said_a, res.ece) == (1.0, 1.0, 0.5, 0.0)
    assert res.accuracy_ci == (1.0, 1.0)


def test_gpt5_verdicts_from_real_proposals(shared_data):
    from traitlab.data import load_proposals

    res = summarise_verdicts("gpt-5", verdicts_from_proposals(load_proposals(
        shared_data / "hal_turing" / "proposals.jsonl")))
    assert res.n_pairs == 428 and res.accuracy == pytest.approx(282 / 428)
    lo, hi = res.accuracy_ci
    assert lo < 282 / 428 < hi and hi - lo < 0.12
    assert res.swap_consistency is None and res.ece is None  # HAL kept only whether the verdict was right


# the offline model, end to end --------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_offline_eval(store):
    r = evaluate("turing-mini", None, store, n=1, run_id="tiny")
    assert r.n_dialogues == 1 and not r.failed
    d = store.dialogues("tiny")[0]
    assert len(d.target_turns) == 2 and all(t.strip() for t in d.target_turns)
    scores = store.artifact("tiny", "scores")["scores"]
    assert set(scores) == {d.id} and np.isfinite(scores[d.id])
    assert store.ratings("tiny", judge="local-reward")


def test_repeat_ratings_make_distinct_calls(store):
    from traitlab.data import sample_trait_set
    from traitlab.evals.judge_bench import repeat_ratings

    ts = sample_trait_set()
    answer = "{" + ", ".join(f'"{t}": {1 + i % 5}' for i, t in enumerate(ts.ids)) + "}"
    ds = sample_dialogues()[:3]
    store.start_run("judge-bench", run_id="rr")
    rs = repeat_ratings(store, ds, ts, "openai/gpt-4o-mini", repeats=2, run_id="rr", mode="all",
                        instructor_mode=instructor.Mode.JSON, mock_response=answer)
    assert len(rs) == 6 and len({r.call_id for r in rs}) == 6
    stored = store.ratings("rr")
    assert len(stored) == 6 and stored[0].ratings["tl02"] == 2.0
    rows = retest_agreement(stored)
    assert {r.repeats for r in rows} == {2} and {r.n_units for r in rows} == {3}


# the commands -------------------------------------------------------------------------------------------
def test_cli_eval_bad_suite_and_report(tmp_path):
    from typer.testing import CliRunner

    from traitlab.cli import app
    from traitlab.store import Store

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI.replace("turns: 2", "turns: 0"))
    res = CliRunner().invoke(app, ["eval", str(bad), "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and "bad.yaml:4 [turns]" in res.output
    good = tmp_path / "mini.yaml"
    good.write_text(MINI)
    res = CliRunner().invoke(app, ["eval", str(good), "--store", str(tmp_path / "s.duckdb"), "--n", "2",
                                   "--run-id", "r1"])
    assert res.exit_code == 0, res.output
    assert "run r1: 2 dialogues (2 new, 0 resumed, 0 failed)" in " ".join(res.output.split())
    out = tmp_path / "rep" / "r.html"
    res = CliRunner().invoke(app, ["report", "r1", "--out", str(out), "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    assert out.exists() and (out.parent / "report.json").exists() and (out.parent / "report.md").exists()
    with Store(tmp_path / "s.duckdb") as st:
        assert st.run("r1")["kind"] == "eval"
    res = CliRunner().invoke(app, ["report", "nope", "--out", str(out), "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and "no run 'nope'" in res.output
