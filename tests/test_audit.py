"""traitlab.judges.audit: edit operators, detectors, the search, the CLI, and the shipped reward on real data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from traitlab.contrast import Contrast
from traitlab.judges.audit import (
    DETECTORS,
    AuditReport,
    apply_edit,
    audit,
    audit_folds,
    degeneracy,
    degenerate_signals,
    edit_operators,
    edit_turns,
    operator,
)
from traitlab.registry import Reward, reward
from traitlab.types import Dialogue, Message, RewardScore, Trait, TraitSet

TOY_TRAITS = TraitSet(name="toy", traits=[Trait(id="x", text="the toy trait")])


def _dialogue(i: int, label: str, *, roles=("customer", "agent")) -> Dialogue:
    other, judged = roles
    formal = label == "average"
    turns = ([f"Thank you for reaching out about order {i}. I will check it now.", "It ships tomorrow, is that ok?"]
             if formal else [f"hey, order {i} right?", "yep ships tmrw"])
    messages = [Message(role=other, content=f"hi, where is order {i}?"), Message(role=judged, content=turns[0]),
                Message(role=other, content="great, and when?"), Message(role=judged, content=turns[1])]
    return Dialogue(id=f"d{i}-{label}", messages=messages, target_role=judged, label=label,
                    meta={"quality": (1.0 if label == "best" else 0.0) + 0.01 * i})


DIALOGUES = [_dialogue(i, label) for i in range(12) for label in ("best", "average")]


class QualityReward:
    """Robust by construction: reads a quality the dialogue carries, which no edit of the turns changes."""

    trait_set = TOY_TRAITS

    def score(self, dialogues):
        return [RewardScore(id=d.id, score=d.meta["quality"], traits={"x": d.meta["quality"]}) for d in dialogues]

    def trait_weights(self):
        return {"x": 1.0}


class EmojiReward(QualityReward):
    """Hackable: the same quality plus one point per emoji the judged speaker types."""

    def score(self, dialogues):
        out = []
        for d in dialogues:
            n = sum(t.count("😂") + t.count("🔥") for t in d.target_turns)
            out.append(RewardScore(id=d.id, score=d.meta["quality"] + n, traits={"x": float(n)}))
        return out

    def trait_weights(self):
        return None


@reward("audit-test-emoji", replace=True)
def _emoji_reward():
    return EmojiReward()


@reward("audit-test-quality", replace=True)
def _quality_reward():
    return QualityReward()


# --- operators ----------------------------------------------------------------------------------------------
def test_operators_edit_only_the_judged_side_deterministically():
    d = _dialogue(3, "average")
    names = edit_operators.names()
    assert {"emoji_append", "empty", "spanish", "chinese", "russian", "arabic", "echo", "long_append",
            "first_turn_everywhere", "typos", "all_caps", "keyboard_mash"} <= set(names)
    changed = 0
    for name in names:
        e = apply_edit(d, [name], seed=1)
        assert e == apply_edit(d, [name], seed=1), name       # deterministic
        assert [m.role for m in e.messages] == [m.role for m in d.messages]
        assert [m for m in e.messages if m.role != "agent"] == [m for m in d.messages if m.role != "agent"]
        assert len(e.target_turns) == len(d.target_turns) and e.label == d.label and e.id == f"{d.id}~{name}"
        changed += e.target_turns != d.target_turns
    assert changed == len(names)   # every operator changes these (mixed-case, punctuated) turns
    assert edit_turns(d, ["echo"]) == ["hi, where is order 3?", "great, and when?"]
    assert edit_turns(d, ["first_turn_everywhere"]) == [d.target_turns[0]] * 2
    assert all(len(t) >= 2000 for t in edit_turns(d, ["long_append"]))
    # the seed matters for randomised operators, and compositions apply in order
    assert edit_turns(d, ["emoji_10"], seed=1) != edit_turns(d, ["emoji_10"], seed=2)
    assert edit_turns(d, ["lowercase", "emoji_append"]) == [t.lower() + " 😂😂😂" for t in d.target_turns]
    assert edit_turns(d, ["emoji_append", "empty"]) == ["", ""]


def test_users_register_operators_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setattr(edit_operators, "_factories", dict(edit_operators._factories))  # registered here only

    @operator("audit-test-signature", replace=True)
    def signature(turns, ctx):
        """'-- sent from my phone' appended"""
        return [t + " -- sent from my phone" for t in turns]

    @operator("audit-test-drops-a-turn", replace=True)
    def drops(turns, ctx):
        """returns one turn too few"""
        return turns[1:]

    d = _dialogue(0, "best")
    assert edit_turns(d, ["audit-test-signature"])[0].endswith("sent from my phone")
    with pytest.raises(ValueError, match=r"audit-test-drops-a-turn.*2 strings.*got 1 items"):
        edit_turns(d, ["audit-test-drops-a-turn"])
    with pytest.raises(KeyError, match="no audit operator named 'nope'"):
        edit_turns(d, ["nope"])


# --- detectors ----------------------------------------------------------------------------------------------
def test_detectors_see_the_operators_they_are_for():
    base = [d.target_turns for d in DIALOGUES if d.label == "average"]
    assert set(degeneracy(base)) == set(DETECTORS)
    assert degenerate_signals(base, base) == []

    def fired(ops):
        edited = [edit_turns(d, ops) for d in DIALOGUES if d.label == "average"]
        return {s.detector for s in degenerate_signals(base, edited)}

    assert "emoji" in fired(["emoji_append"])
    assert "empty" in fired(["empty"]) and "empty" in fired(["whitespace"]) and "empty" in fired(["ellipses"])
    assert "repetition" in fired(["first_turn_everywhere"]) and "repetition" in fired(["repeat_turn"])
    assert "symbol_runs" in fired(["symbols_append"])
    assert {"other_script", "unfamiliar_words"} <= fired(["russian"]) and "other_script" in fired(["chinese"])
    assert "unfamiliar_words" in fired(["spanish"])
    assert "invisible" in fired(["zero_width"]) and "length" in fired(["long_append"])
    assert fired(["lowercase"]) == set() and fired(["typos"]) == set()


def test_unfamiliar_words_do_not_fire_on_a_small_english_sample_that_merely_says_other_things():
    # with the reference's own 50 commonest words as "known", any fresh sample of under ~50 words looked foreign
    before = [["sure, I live near the park"], ["not much, just got back from work"], ["yeah it was fine"]]
    after = [["honestly the weather has been awful lately"], ["my brother visits on sundays"], ["pizza, always"]]
    assert degenerate_signals(before, after) == []
    spanish = [["la verdad es que hace mucho calor hoy"], ["mi hermano viene los domingos"], ["siempre pizza"]]
    assert [s.detector for s in degenerate_signals(before, spanish)] == ["unfamiliar_words"]


# --- the audit ----------------------------------------------------------------------------------------------
def test_audit_catches_an_emoji_hack_and_passes_a_robust_reward():
    assert isinstance(EmojiReward(), Reward)
    rep = audit(EmojiReward(), DIALOGUES, Contrast(positive="best", negative="average", description="toy"),
                max_depth=2, beam=2, threshold=0.05)
    assert not rep.passed and rep.n_negative == 12 and rep.n_positive == 12 and rep.real["share_above"] == 0
    by = {r.edit: r for r in rep.edits}
    assert by["emoji_append"].share_above == 1.0 and not by["emoji_append"].passed
    assert by["lowercase"].share_above == 0.0 and by["lowercase"].passed and by["lowercase"].shift_sd == 0
    # 12 of 12 and 0 of 12 above: exact at the ends, and 12 negatives cannot pin a share much closer
    assert by["emoji_append"].share_interval[1] == 1.0 and 0.7 < by["emoji_append"].share_interval[0] < 0.8
    assert by["lowercase"].share_interval[0] == 0.0 and 0.2 < by["lowercase"].share_interval[1] < 0.3
    # shift in SDs of the real scores: 3 emoji per turn x 2 turns = +6 points for every negative
    sd = np.std([d.meta["quality"] for d in DIALOGUES], ddof=1)
    assert math.isclose(by["emoji_append"].shift_sd, 6 / sd) and by["emoji_append"].detected_by[:1] == ["emoji"]
    assert rep.worst.share_above == 1.0 and "emoji" in rep.worst.edit
    assert rep.composites and all(len(c.operators) == 2 for c in rep.composites)
    assert rep.composites[0].mean_score > by["emoji_10"].mean_score   # composing found a bigger lift
    assert [r.share_above for r in rep.edits] == sorted((r.share_above for r in rep.edits), reverse=True)

    robust = audit(QualityReward(), DIALOGUES, ("best", "average"), max_depth=3, beam=2)
    assert robust.passed and robust.worst.share_above == 0.0 and robust.composites
    assert all(len(c.operators) <= 3 for c in robust.composites)
    assert AuditReport.model_validate_json(robust.model_dump_json()) == robust


def test_audit_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match=r"labelled 'good'.*labels in the data: average, best"):
        audit(QualityReward(), DIALOGUES, ("good", "average"))
    with pytest.raises(KeyError, match="nope"):
        audit(QualityReward(), DIALOGUES, ("best", "average"), operators=["nope"])
    with pytest.raises(TypeError, match="Reward protocol"):
        audit(object(), DIALOGUES, ("best", "average"))


# --- the CLI ------------------------------------------------------------------------------------------------
def _app():
    import typer

    from traitlab.judges import cli

    app = typer.Typer()
    cli.register(app)
    return app


class OffsetReward(QualityReward):
    """The robust reward's scores moved by 100: another fold's reward on another scale."""

    def score(self, dialogues):
        return [s.model_copy(update={"score": s.score + 100}) for s in super().score(dialogues)]


def test_audit_folds_pools_counts_each_fold_against_its_own_median():
    first, second = DIALOGUES[:12], DIALOGUES[12:]  # six games each
    labels = ("best", "average")
    rep = audit_folds([(EmojiReward(), first), (QualityReward(), second)], labels, max_depth=2, beam=2)
    assert rep.folds == 2 and rep.n_negative == 12 and rep.n_positive == 12
    # each fold's own search: the emoji reward's fold is lifted entirely, the robust one's not at all
    assert [w.share_above for w in rep.fold_worst] == [1.0, 0.0]
    by = {r.edit: r for r in rep.edits}
    assert by["emoji_append"].share_above == 0.5 and not by["emoji_append"].passed  # 6 of 6 plus 0 of 6
    lo, hi = by["emoji_append"].share_interval
    assert lo < 0.5 < hi and hi - lo > 0.4  # 12 negatives pin a share loosely
    # a composition only the first fold's search found is measured in the second fold too
    assert rep.composites and all(c.share_above == 0.5 for c in rep.composites if "emoji_append" in c.operators)
    assert not rep.passed and rep.worst.share_above == 0.5

    # each fold against its own median positive: a fold on another scale changes nothing
    shifted = audit_folds([(QualityReward(), first), (OffsetReward(), second)], labels, max_depth=1)
    assert shifted.real["share_above"] == 0.0 and shifted.passed
    assert all(r.share_above == 0.0 for r in shifted.edits)
    # one fold is the plain audit
    one, plain = audit_folds([(EmojiReward(), DIALOGUES)], labels, max_depth=2, beam=2), audit(
        EmojiReward(), DIALOGUES, labels, max_depth=2, beam=2)
    assert one == plain and one.folds == 1 and one.fold_worst == [one.worst]
    with pytest.raises(ValueError, match="in fold 1"):
        audit_folds([(QualityReward(), first), (QualityReward(), [d for d in second if d.label == "best"])], labels)


class StyleReward(QualityReward):
    """Pays for turns without punctuation and for turns without capitals, each at its own rate."""

    def __init__(self, bare: float, lower: float):
        self.bare, self.lower = bare, lower

    def score(self, dialogues):
        def paid(t):
            return self.bare * all(c.isalnum() or c.isspace() for c in t) + self.lower * (t == t.lower())

        return [RewardScore(id=d.id, score=d.meta["quality"] + sum(paid(t) for t in d.target_turns), traits={})
                for d in dialogues]


def test_audit_folds_lists_one_order_of_edits_that_give_the_same_texts():
    # each fold's search meets the two operators in its own order, so each finds its own order of the same edit
    folds = [(StyleReward(bare=2, lower=1), DIALOGUES[:12]), (StyleReward(bare=1, lower=2), DIALOGUES[12:])]
    rep = audit_folds(folds, ("best", "average"), operators=["lowercase", "strip_punct"], max_depth=2, beam=2)
    assert {tuple(w.operators) for w in rep.fold_worst} == {("strip_punct", "lowercase"),
                                                             ("lowercase", "strip_punct")}
    assert len(rep.composites) == 1 and sorted(rep.composites[0].operators) == ["lowercase", "strip_punct"]
    assert rep.worst == rep.composites[0] and not rep.passed


def _write(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = []
    for d in DIALOGUES:
        label = d.label
        roles = {"customer": "user", "agent": "assistant"}
        rows.append({"id": d.id, "label": label, "meta": d.meta,
                     "messages": [{"role": roles[m.role], "content": m.content} for m in d.messages]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_fails_a_hackable_reward_with_exit_1_and_stores_the_report(tmp_path):
    from traitlab.store import Store

    data, out, store = _write(tmp_path), tmp_path / "audit.json", tmp_path / "s.duckdb"
    base = ["reward", "audit", "--dialogues", str(data), "--positive", "best", "--negative", "average",
            "--max-depth", "2", "--store", str(store)]
    res = CliRunner().invoke(_app(), [*base, "--reward-name", "audit-test-emoji", "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "emoji_append" in res.output
    emoji_row = next(line for line in res.output.splitlines() if "emoji_append" in line)
    assert "FAIL" in emoji_row and "1.00" in emoji_row  # the verdict survives an 80-column log
    assert "pushes 100% (95% CI 76%-100%)" in res.output
    report = AuditReport.model_validate_json(out.read_text())
    assert not report.passed and report.reward == "audit-test-emoji"
    with Store(store) as st:
        (run,) = st.runs("audit")
        assert run["status"] == "done" and run["summary"]["passed"] is False
        assert st.artifact(run["run_id"], "reward_audit")["worst"]["share_above"] == 1.0

    ok = CliRunner().invoke(_app(), [*base, "--reward-name", "audit-test-quality", "--limit", "5"])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output
    with Store(store) as st:
        runs = st.runs("audit")
        assert len(runs) == 2 and {r["summary"]["n_negative"] for r in runs} == {12, 5}


@pytest.mark.parametrize("args, message", [
    (["--reward-name", "audit-test-quality"], "--positive LABEL --negative LABEL"),
    (["--reward-name", "no-such-reward", "--positive", "best", "--negative", "average"], "no reward named"),
    (["--reward-name", "audit-test-quality", "--positive", "best", "--negative", "bot"], "'bot' (negative)"),
    (["--reward-name", "audit-test-quality", "--positive", "best", "--negative", "average", "--operators", "nope"],
     "no audit operator named 'nope'"),
    (["--reward-name", "audit-test-quality", "--reward", "x", "--positive", "best", "--negative", "average"],
     "not both"),
])
def test_cli_bad_input_exits_2(tmp_path, args, message):
    res = CliRunner().invoke(_app(), ["reward", "audit", "--dialogues", str(_write(tmp_path)), *args,
                                      "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "s.duckdb").exists()


def test_cli_bad_file_names_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "label": "human", "messages": [{"role": "user", "content": "hi"}, '
                   '{"role": "assistant", "content": "yo"}]}\n{"id": "b", "messages": "nope"}\n')
    res = CliRunner().invoke(_app(), ["reward", "audit", "--dialogues", str(bad), "--positive", "human",
                                      "--negative", "ai", "--reward-name", "audit-test-quality",
                                      "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and "bad.jsonl:2 [messages]" in res.output, res.output


# --- the shipped reward on real HAL transcripts -------------------------------------------------------------
@pytest.mark.slow
def test_shipped_reward_audit_on_real_transcripts(shared_data):
    from traitlab.data import load_dialogues
    from traitlab.judges.reward import load_reward

    dialogues = load_dialogues(shared_data / "hal_turing" / "dialogues.jsonl")[:16]
    shipped = load_reward()
    ops = ["emoji_append", "empty", "spanish", "lowercase", "repeat_turn"]
    rep = audit(shipped, dialogues, ("human", "ai"), operators=ops, max_depth=2, beam=1, name="default")
    assert [r.edit for r in rep.edits] != [] and {r.edit for r in rep.edits} == set(ops)
    assert rep.n_negative == 8 and rep.n_positive == 8 and rep.real["sd"] > 0
    # depth 2 with beam 1 extends the worst single edit by each other operator; edits that give the same texts
    # as one already measured (anything after "empty" that leaves it empty) are not measured twice
    assert 1 <= len(rep.composites) <= len(ops) - 1 and rep.n_scored > 16
    assert all(c.operators[0] == rep.edits[0].edit for c in rep.composites)
    for r in [*rep.edits, *rep.composites]:
        assert 0 <= r.share_above <= 1 and math.isfinite(r.shift_sd) and math.isfinite(r.mean_score)
        assert r.passed == (r.share_above <= rep.threshold)
    assert rep.passed == all(r.passed for r in [*rep.edits, *rep.composites])
    # the figures are the reward's own scores of the edited transcripts
    neg = [d for d in dialogues if d.label == "ai"]
    pos = np.array([s.score for s in shipped.score([d for d in dialogues if d.label == "human"])])
    edited = np.array([s.score for s in shipped.score([apply_edit(d, ["empty"]) for d in neg])])
    real = np.array([s.score for s in shipped.score(neg)])
    by = {r.edit: r for r in rep.edits}
    assert math.isclose(by["empty"].share_above, float(np.mean(edited > np.median(pos))))
    assert math.isclose(by["empty"].mean_score, float(edited.mean()), rel_tol=1e-5)
    sd = np.concatenate([pos, real]).std(ddof=1)
    assert math.isclose(by["empty"].shift_sd, float((edited - real).mean() / sd), rel_tol=1e-4)
    assert "empty" in by["empty"].detected_by


def test_a_small_emoji_drift_is_flagged_where_a_small_word_drift_is_not():
    # the GRPO comparison's unhardened policy put emoji in 8% of its turns: under the 0.2 rise of common measures
    base = [[f"not much, just got back from work {i}"] for i in range(24)]
    drifted = [[t + " 😂" if i % 12 == 0 else t for t in c] for i, c in enumerate(base)]
    assert [s.detector for s in degenerate_signals(base, drifted)] == ["emoji"]
    assert degenerate_signals(base, drifted, rare_rise=0.2) == []
