"""The distilled local reward: general distill on own data, bounded outputs, validity gate, hardened against
cheap edits, shipped default, CLI contract, HF export, TRL reward function, invariants."""

from __future__ import annotations

import itertools
import json
import random
import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from traitlab.cli import app
from traitlab.contrast import Contrast
from traitlab.data import DataError, load_dialogues, load_ratings, load_trait_set, sample_dialogues
from traitlab.embed import EncoderConfig
from traitlab.judges.reward import (
    BOUNDED,
    DEFAULT_DIR,
    DEGENERATE,
    INVARIANT,
    STRICT,
    LocalReward,
    RewardConfig,
    _aggregate_logits,
    _params,
    distill,
    edit_allowance,
    fidelity_loss,
    file_sha256,
    fit_member,
    ignored_columns,
    load_reward,
    predict_params,
    style_of,
    training_set,
)
from traitlab.judges.reward_edits import EDITS, edited, with_target_turns
from traitlab.judges.reward_features import PUNCTUATION_FEATURES, STYLE_FEATURES, style_features
from traitlab.registry import Reward, rewards
from traitlab.types import Dialogue, Message, TraitRatings

runner = CliRunner()
SMALL = RewardConfig(steps=150, folds=3, edits_per_row=1, batch=128, ensemble=2)


@pytest.fixture(scope="module")
def reward() -> LocalReward:
    return load_reward()


@pytest.fixture(scope="module")
def samples() -> list[Dialogue]:
    return sample_dialogues()


@pytest.fixture(scope="module")
def hal_small(shared_data):
    """60 real Turing games (both sides) with GPT-5's ratings: small enough to train on in a test."""
    d = shared_data / "hal_turing"
    dialogues = load_dialogues(d / "dialogues.jsonl")
    games = sorted({x.meta["game_id"] for x in dialogues})[:60]
    rows = [x for x in dialogues if x.meta["game_id"] in set(games)]
    ids = {x.id for x in rows}
    ratings = [r for r in load_ratings(d / "judge_ratings.jsonl", judge="gpt-5") if r.dialogue_id in ids]
    return rows, ratings, load_trait_set(d / "traits_hal32.json")


@pytest.fixture(scope="module")
def own_project(hal_small):
    """The same dialogues as a user's own project: other roles, labels, judge name and grouping field."""
    rows, ratings, ts = hal_small
    roles = {"interrogator": "customer", "witness": "agent"}
    own = [Dialogue(id=f"case{i}", target_role="agent", label={"human": "best", "ai": "average"}[d.label],
                    meta={"case": d.meta["game_id"]},
                    messages=[Message(role=roles[m.role], content=m.content) for m in d.messages])
           for i, d in enumerate(rows)]
    new_id = {d.id: f"case{i}" for i, d in enumerate(rows)}
    own_ratings = [TraitRatings(dialogue_id=new_id[r.dialogue_id], judge="judge-x", ratings=r.ratings)
                   for r in ratings]
    contrast = Contrast(name="support", positive="best", negative="average", target_role="agent", group="case",
                        description="the best agents versus average ones")
    return own, own_ratings, ts, contrast


@pytest.fixture(scope="module")
def own_reward(own_project) -> LocalReward:
    own, own_ratings, ts, contrast = own_project
    return distill(own, own_ratings, ts, contrast, config=SMALL)


# general distill ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_distill_on_own_project_records_only_what_it_used(own_reward, own_project):
    own, _, ts, _ = own_project
    held = own_reward.meta["heldout"]
    # 60 games, 3 folds grouped by `case`: far better than chance on games the heads never saw
    assert held["pairwise_accuracy"] > 0.75 and 0.0 <= held["ece"] < 0.25
    prov = own_reward.meta["provenance"]
    assert prov["judges"] == {"judge-x": len(own)}
    assert prov["labels"]["positive"] == "best" and prov["labels"]["counts"] == {"best": 60, "average": 60,
                                                                                  "unlabelled": 0}
    assert prov["target_roles"] == ["agent"] and prov["contrast"]["group"] == "case"
    text = json.dumps(own_reward.meta).lower()
    for foreign in ("gpt-5", "witness", "human", "hal_turing", "patient"):
        assert foreign not in text, foreign
    scores = own_reward.score(own[:4])
    assert all(set(s.traits) == set(ts.ids) for s in scores)


@pytest.mark.slow
def test_distill_audits_each_fold_on_the_games_it_never_saw(own_reward, own_project, tmp_path):
    from traitlab.judges.audit import AuditReport, edit_operators

    a = own_reward.audit
    assert isinstance(a, AuditReport) and a.folds == SMALL.folds == len(a.fold_worst)
    assert a.n_negative == a.n_positive == 60  # every labelled dialogue held out once
    assert {r.edit for r in a.edits} == set(edit_operators.names()) and a.threshold == SMALL.audit_threshold
    assert a.passed == all(r.passed for r in [*a.edits, *a.composites])
    summary = own_reward.meta["heldout"]["audit"]
    assert summary["passed"] == a.passed and summary["worst_edit"] == a.worst.edit and summary["folds"] == 3
    own_reward.save(tmp_path / "r")
    assert LocalReward.load(tmp_path / "r").audit == a
    (tmp_path / "r" / "audit.json").write_text('{"reward": 1}', encoding="utf-8")
    broken = LocalReward.load(tmp_path / "r")  # read on first use: scoring never pays for it
    with pytest.raises(DataError, match=r"audit\.json"):
        broken.audit  # noqa: B018


def test_distill_refuses_one_sided_or_unknown_ratings(hal_small):
    rows, ratings, ts = hal_small
    contrast = Contrast(positive="human", negative="ai", description="d")
    with pytest.raises(ValueError, match="both sides"):
        humans = [d for d in rows if d.label == "human"]
        ids = {d.id for d in humans}
        distill(humans, [r for r in ratings if r.dialogue_id in ids], ts, contrast, config=SMALL)
    stray = TraitRatings(dialogue_id="nope", judge="gpt-5", ratings={"t01": 3.0})
    with pytest.raises(ValueError, match="not among the dialogues"):
        distill(rows, [*ratings, stray], ts, contrast, config=SMALL)
    with pytest.raises(ValueError, match="no ratings by judge"):
        distill(rows, ratings, ts, contrast, judge="someone-else", config=SMALL)
    with pytest.raises(ValueError, match="other"):  # a label that is neither side
        distill([rows[0].model_copy(update={"label": "other"}), *rows[1:]], ratings, ts, contrast, config=SMALL)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.slow
def test_cli_distill_from_files_then_score(hal_small, tmp_path):
    rows, ratings, ts = hal_small
    dfile = _write(tmp_path / "d.jsonl", [{"id": d.id, "label": d.label, "meta": d.meta,
                                           "messages": [m.model_dump() for m in d.messages]} for d in rows])
    rfile = _write(tmp_path / "r.jsonl", [{"judge": "judge-y", "id": r.dialogue_id, "ratings": r.ratings}
                                          for r in ratings])
    tfile = ts.save(tmp_path / "traits.json")
    res = runner.invoke(app, ["fit", "--ratings", str(rfile), "--dialogues", str(dfile), "--traits", str(tfile),
                              "--C", "0.1", "--bootstrap", "0", "--out", str(tmp_path / "agg.json"),
                              "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["distill", "--dialogues", str(dfile), "--ratings", str(rfile), "--traits", str(tfile),
                              "--positive", "human", "--target-role", "witness", "--aggregator",
                              str(tmp_path / "agg.json"), "--judge", "judge-y", "--out", str(tmp_path / "rw")])
    assert res.exit_code == 0, res.output
    assert "held-out pairwise accuracy" in res.output
    saved = LocalReward.load(tmp_path / "rw")
    prov = saved.meta["provenance"]
    assert prov["inputs"]["ratings[0]"]["sha256"] == file_sha256(rfile)
    assert prov["inputs"]["aggregator"]["sha256"] == file_sha256(tmp_path / "agg.json")
    assert prov["aggregator"].startswith("given") and prov["judges"] == {"judge-y": len(rows)}
    assert prov["labels"]["negative"] == "ai"  # the one other label, found in the dialogues
    out = tmp_path / "scores.jsonl"
    res = runner.invoke(app, ["reward", "score", "--reward", str(tmp_path / "rw"), "--dialogues", str(dfile),
                              "--out", str(out), "--target-role", "witness"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [d.id for d in rows]
    assert all(0 < x["p_positive"] < 1 and 0 <= x["validity"] <= 1 for x in lines)
    # bad input: a missing --positive, and an unknown preset, end in one clear line and exit 2
    res = runner.invoke(app, ["distill", "--dialogues", str(dfile), "--ratings", str(rfile), "--traits", str(tfile),
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--positive" in res.output
    res = runner.invoke(app, ["distill", "--preset", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no preset named 'nope'" in res.output


# bounded, gated, hardened ---------------------------------------------------------------------------------
def test_numpy_inference_is_the_torch_head(reward):
    """Scoring runs the TraitHead forward in numpy (no torch at start-up); both agree, far-out inputs included."""
    import torch

    from traitlab.judges.reward_hf_modeling import TraitHead

    p = reward.params
    assert reward.config.ensemble > 1  # the shipped reward is an ensemble, so this checks the merged layout
    head = TraitHead(p["x_mean"].shape[0], reward.config.hidden, len(reward.trait_ids),
                     members=reward.config.ensemble).eval()
    head.load_state_dict({k: torch.tensor(v) for k, v in p.items()})
    X = np.random.default_rng(0).normal(size=(16, p["x_mean"].shape[0])).astype(np.float32)
    X[8:] *= 1e4  # far outside anything seen in training
    with torch.no_grad():
        t_traits, t_score = head(torch.tensor(X))
    traits, score = predict_params(p, X)
    assert traits == pytest.approx(t_traits.numpy(), abs=1e-4) and score == pytest.approx(t_score.numpy(), abs=1e-4)
    bound = reward.config.score_bound
    assert np.abs(score).max() <= bound
    assert (traits >= p["trait_lo"] - 1e-6).all() and (traits <= p["trait_hi"] + 1e-6).all()


def test_merged_heads_score_the_members_mean_logit():
    """An ensemble merged into one TraitHead gives exactly its members' mean logit and mean traits."""
    import torch

    from traitlab.judges.reward_hf_modeling import TraitHead, merge

    torch.manual_seed(0)
    members = [TraitHead(6, 8, 3).eval() for _ in range(3)]
    for m in members:
        m.trait_lo.fill_(-1e6)  # no clipping, so the traits average exactly too
        m.head.bias.data.normal_()
    merged = merge(members)
    x = torch.randn(5, 6)
    with torch.no_grad():
        z, _, logit = merged.standardised(x)
        each = [m.standardised(x) for m in members]
    assert logit == pytest.approx(torch.stack([e[2] for e in each]).mean(0), abs=1e-5)
    assert z.numpy() == pytest.approx(torch.stack([e[0] for e in each]).mean(0).numpy(), abs=1e-5)
    p = {k: v.numpy() for k, v in merged.state_dict().items()}
    assert predict_params(p, x.numpy(), calibrated=False)[1] == pytest.approx(logit.numpy(), abs=1e-5)


def test_ignored_style_features_move_no_score(own_project, samples):
    """The punctuation counts, in ``ignore_style``, read 0 whatever their value (deleting every mark then moves
    only lengths); an unknown name is refused by name."""
    own, own_ratings, ts, contrast = own_project
    cfg = SMALL.model_copy(update={"ignore_style": list(PUNCTUATION_FEATURES), "audit": False})
    reward = distill(own, own_ratings, ts, contrast, config=cfg)
    X = reward.features(samples)
    cols = ignored_columns(X.shape[1], reward.config)
    moved = X.copy()
    moved[:, cols] = np.random.default_rng(0).uniform(0, 1, size=(len(X), len(cols)))
    assert not np.allclose(moved, X)
    assert predict_params(reward.params, moved)[1] == pytest.approx(predict_params(reward.params, X)[1], abs=1e-6)
    other = [c for c in range(X.shape[1] - len(STYLE_FEATURES), X.shape[1]) if c not in cols]
    moved[:, other] += 0.5  # a feature it reads does move it
    assert np.abs(predict_params(reward.params, moved)[1] - predict_params(reward.params, X)[1]).max() > 0.01
    with pytest.raises(ValueError, match=r"ignore_style(.|\n)*question_marks"):
        RewardConfig.with_settings(['ignore_style=["question_marks"]'])


def test_cosine_schedule_anneals_to_zero(monkeypatch):
    """Under ``lr_schedule="cosine"`` every step's learning rate is below the one before and the last is near 0
    (the heads end at a settled point, not wherever a full-size step left them); "constant" keeps ``lr``."""
    import torch

    from traitlab.judges.reward import fit_member

    seen: list[float] = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (seen.append(self.param_groups[0]["lr"]),
                                                                         step(self, *a, **k))[1])
    rng = np.random.default_rng(0)
    X, targets, labels = rng.normal(size=(40, 6)), rng.uniform(1, 5, size=(40, 2)), rng.integers(0, 2, 40) * 1.0
    for schedule in ("constant", "cosine"):
        seen.clear()
        fit_member(X, targets, labels, RewardConfig(steps=30, batch=16, lr_schedule=schedule, ignore_style=[]))
        assert len(seen) == 30 and seen[0] == pytest.approx(3e-3)
        if schedule == "constant":
            assert set(seen) == {3e-3}
        else:
            assert all(b < a for a, b in itertools.pairwise(seen)) and seen[-1] < 3e-5


def test_style_features_saturate():
    base = style_features(["hey whats up"])
    spam = style_features(["hey whats up " + "😂" * 500 + "!" * 500 + "." * 2000 + "x" * 50_000])
    assert np.all(np.abs(spam) <= max(np.log1p(8000), 1.0) + 1e-6)
    assert spam[STYLE_FEATURES.index("emoji_per_turn")] <= 1.0 < base[0] + 1
    assert len(base) == len(STYLE_FEATURES)


def test_structural_features_see_parroting_signatures_and_stripped_sentences():
    from traitlab.judges.reward_features import previous_messages

    def feature(name: str, turns: list[str], previous: list[str] | None = None) -> float:
        return float(style_features(turns, previous)[STYLE_FEATURES.index(name)])

    d = Dialogue(id="e", target_role="w", messages=[
        Message(role="i", content="where are you from?"), Message(role="w", content="from ohio lol"),
        Message(role="i", content="do you like it there"), Message(role="w", content="its ok"),
        Message(role="w", content="cold tho")])
    assert previous_messages(d) == ["where are you from?", "do you like it there", ""]
    assert feature("echo_of_other", d.target_turns, previous_messages(d)) == pytest.approx((1 / 3 + 0) / 2)
    assert feature("echo_of_other", ["where are you from"], ["where are you from?"]) == 1.0
    assert feature("shared_ending", ["yes hahaha", "no hahaha", "maybe hahaha", "ok"]) == 0.75
    assert feature("shared_ending", ["yes lol", "no", "maybe lol"]) == 0.0  # two alike: a habit, not a signature
    assert feature("unmarked_sentence_starts", ["I am fine How about you"]) > 0 == feature(
        "unmarked_sentence_starts", ["i am fine. How about you? I think so"])


def _reference_features(turns: list[str], previous: list[str], vocab: frozenset[str], scripts: frozenset[str]
                        ) -> tuple[list[float], list[float]]:
    """Each style feature and validity measure computed the plain way, on one dialogue's text (what the batched
    :class:`TurnBatch` must equal)."""
    import re
    import zlib
    from collections import Counter
    from itertools import pairwise

    from traitlab.judges.reward_features import EMOJI_RANGES, EMOTICON, PUNCT, TEXTING, script_of, words_of

    emoji = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in EMOJI_RANGES) + "]|" + EMOTICON.pattern)

    turns = [t.strip() for t in turns]
    n, text = max(len(turns), 1), "\n".join(turns)
    words, letters = text.split(), [c for c in text if c.isalpha()]
    visible = [c for c in text if not c.isspace()]
    share = lambda pred: sum(1 for t in turns if t and pred(t)) / n  # noqa: E731
    per_turn = lambda k: np.tanh(k / n)  # noqa: E731
    shares = [sum(w in set(words_of(p)) for w in words_of(t)) / len(words_of(t))
              for t, p in zip(turns, previous, strict=False) if words_of(p) and words_of(t)]
    echo = float(np.mean(shares)) if shares else 0.0
    ends = Counter(t.split()[-1].lower() for t in turns if t.split())
    top = ends.most_common(1)[0][1] if ends else 0
    pairs = [(a, b) for t in turns for a, b in pairwise(t.split())]
    counts = [len(t.split()) for t in turns]
    style = [
        np.log1p(min(len(text) / n, 1000)), np.log1p(min(len(words) / n, 200)), np.log1p(min(len(turns), 60)),
        np.log1p(min(len(text), 8000)), sum(c.islower() for c in text) / max(len(letters), 1),
        share(lambda t: t[0].islower()), share(lambda t: t[-1] in ".!?"), share(lambda t: t.endswith("?")),
        per_turn(text.count("?")), per_turn(text.count("!")), per_turn(text.count(",")), per_turn(text.count(".")),
        per_turn(text.count("'") + text.count("’")), per_turn(len(emoji.findall(text))),
        sum(c.isdigit() for c in text) / max(len(text), 1), share(lambda t: len(t.split()) <= 2),
        sum(w.isupper() and len(w) > 1 for w in words) / max(len(words), 1), per_turn(text.count("...")),
        sum(w.lower().strip(".,!?") in TEXTING for w in words) / max(len(words), 1), share(lambda t: t[0].isupper()),
        np.tanh(np.mean([len(w) for w in words]) / 10) if words else 0.0,
        sum(not any(c.isalnum() for c in t) for t in turns) / n,
        sum(not (c.isalnum() or c in PUNCT) for c in visible) / max(len(visible), 1), echo,
        top / len(turns) if sum(ends.values()) >= 3 and top >= 3 else 0.0,
        np.tanh(np.std(counts) / (np.mean(counts) + 1)) if counts else 0.0,
        sum(b[0].isupper() and not b.startswith("I") and a[-1].isalnum() for a, b in pairs) / len(pairs)
        if pairs else 0.0,
    ]
    all_words, raw = words_of(text), text.encode("utf-8")
    spoken = [t for t in turns if t]
    validity = [
        sum(any(c.isalnum() for c in t) for t in turns) / n, len(letters) / max(len(visible), 1),
        sum(w in vocab for w in all_words) / len(all_words) if all_words else 0.0,
        sum(script_of(c) in scripts for c in letters) / len(letters) if letters else 0.0,
        len({t.lower() for t in spoken}) / max(len(spoken), 1) if len(turns) > 2 else 1.0,
        min(1.0, len(zlib.compress(raw, 9)) / len(raw) * 2) if len(raw) > 200 else 1.0, 1.0 - echo,
    ]
    return style, validity


def test_batched_features_equal_the_plain_per_dialogue_definitions(reward, samples):
    """TurnBatch measures a whole batch through chunk and character tables; on real turns, every training edit,
    every audit operator and random junk it equals the plain per-dialogue definition of each feature."""
    from traitlab.judges.audit import apply_edit, edit_operators
    from traitlab.judges.reward_features import VALIDITY_MEASURES, TurnBatch, previous_messages

    rng = random.Random(0)
    pool = [t for d in samples for t in d.target_turns]
    rows = list(samples)
    rows += [edited(d, name, random.Random(i), pool) for i, d in enumerate(samples[:6]) for name in EDITS]
    rows += [apply_edit(d, [name], seed=i) for i, d in enumerate(samples[:3]) for name in edit_operators.names()]
    junk = [*"abcXYZI .,!?'’\n\t:;-)(DP", "😂", "★", "é", "中", "\u2028", "\u200b", "İ", "...", "Ⅻ", "lol", "Hello"]
    for i in range(60):
        msgs = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.7:
                msgs.append(Message(role="q", content="".join(rng.choice(junk) for _ in range(rng.randint(0, 30)))))
            msgs.append(Message(role="w", content="".join(rng.choice(junk) for _ in range(rng.randint(0, 50)))))
        rows.append(Dialogue(id=f"junk{i}", target_role="w", messages=msgs))
    vocab, scripts = frozenset(reward.gate.vocabulary), frozenset(reward.gate.scripts)
    batch = TurnBatch.of(rows)
    style, validity = batch.style(), batch.validity(vocab, scripts)
    assert style.shape == (len(rows), len(STYLE_FEATURES)) and validity.shape == (len(rows), len(VALIDITY_MEASURES))
    for i, d in enumerate(rows):
        ref_style, ref_validity = _reference_features(d.target_turns, previous_messages(d), vocab, scripts)
        assert style[i] == pytest.approx(ref_style, abs=1e-6), d.id
        assert validity[i] == pytest.approx(ref_validity, abs=1e-6), d.id
    assert len(rows) > 200 and style[:, STYLE_FEATURES.index("emoji_per_turn")].max() > 0.5
    blank = Dialogue(id="blank", target_role="w", messages=[Message(role="q", content="hi"),
                                                             Message(role="w", content=" ")])
    alone = TurnBatch.of([blank])  # a batch with no character at all
    ref_style, ref_validity = _reference_features(blank.target_turns, previous_messages(blank), vocab, scripts)
    assert alone.style()[0] == pytest.approx(ref_style, abs=1e-6)
    assert alone.validity(vocab, scripts)[0] == pytest.approx(ref_validity, abs=1e-6)


def test_training_edits_never_draw_the_audits_exact_strings(samples):
    """The audit measures generalisation: the training edits are other strings than its operators."""
    from traitlab.judges.audit import apply_edit

    rng = random.Random(0)
    for d in samples:
        truncated = apply_edit(d, ["truncate"]).target_turns
        for _ in range(20):
            cut = edited(d, "cut_short", rng, []).target_turns
            assert cut != truncated or truncated == d.target_turns
            tagged = edited(d, "append_tag", rng, []).target_turns
            assert not any(t.endswith(" hahaha") for t in tagged)
            parroted = edited(d, "parrot", rng, []).target_turns
            assert len(parroted) == len(d.target_turns)
            slipped = edited(d, "misspell", rng, []).target_turns  # a letter dropped or doubled, never swapped
            for before, after in zip(d.target_turns, slipped, strict=True):
                for a, b in zip(before.split(" "), after.split(" "), strict=True):
                    dropped = {a[:j] + a[j + 1:] for j in range(1, len(a))}
                    doubled = {a[:j] + a[j - 1] + a[j:] for j in range(1, len(a))}
                    assert b in {a, *dropped, *doubled}


def test_training_edits_compose_like_the_audits_search(hal_small):
    """Edited copies chain up to edit_chain different edits (bounded ones on negatives only), and a chain is held
    to the degenerate rule when any of its edits is degenerate."""
    from traitlab.judges.reward import training_set, with_edits

    rows, ratings, traits = hal_small
    contrast = Contrast(positive="human", negative="ai", description="d", group="game_id")
    data = training_set(rows, ratings, traits, contrast)
    every = sorted(EDITS)
    chained, src, kind = with_edits(data, RewardConfig(edit_chain=3, edits=every, invariant_per_row=0,
                                                       strict_edits=[]))
    names = [e.id.split("~", 1)[1].rstrip("0123456789").split("+") for e in chained]
    assert {len(n) for n in names} == {1, 2, 3} and all(len(set(n)) == len(n) for n in names)
    assert all(set(n) <= set(every) for n in names)
    assert list(kind) == [DEGENERATE if any(EDITS[x][0] == "degenerate" for x in n) else BOUNDED for n in names]
    positives = data.labels[src] == 1
    assert positives.any() and all(EDITS[x][0] == "degenerate" for n, pos in zip(names, positives, strict=True)
                                   if pos for x in n)
    single, _, _ = with_edits(data, RewardConfig(edit_chain=1, edits=every, invariant_per_row=0))
    assert all("+" not in e.id for e in single)
    strict, _, strict_kind = with_edits(data, RewardConfig(edit_chain=3, edits=every, invariant_per_row=0,
                                                           strict_edits=["append_symbols"]))
    with_symbols = ["append_symbols" in e.id for e in strict]
    assert any(with_symbols) and all(e.id.split("~", 1)[1].rstrip("0123456789") == "append_symbols"
                                     for e, s in zip(strict, with_symbols, strict=True) if s)
    assert list(strict_kind == STRICT) == with_symbols  # drawn alone, and held to the strict rule
    shouted = edited(rows[0], "shout", random.Random(1), []).target_turns
    assert any(w.isupper() for t in shouted for w in t.split()) and shouted != [t.upper() for t in shouted]


def test_invariant_copies_restyle_both_sides_and_keep_their_label(hal_small):
    """Every labelled row, human or AI, gets invariant copies made of the invariant edits only, after the hinge
    edits (whose draws they leave unchanged); unlabelled rows get none."""
    from traitlab.judges.reward import training_set, with_edits

    rows, ratings, traits = hal_small
    contrast = Contrast(positive="human", negative="ai", description="d", group="game_id")
    data = training_set(rows, ratings, traits, contrast)
    cfg = RewardConfig(invariant_per_row=2)
    out, src, kind = with_edits(data, cfg)
    inv = kind == INVARIANT
    assert sorted(set(src[inv])) == list(np.flatnonzero(~np.isnan(data.labels)))
    assert np.bincount(src[inv]).max() == 2 and {0.0, 1.0} <= set(data.labels[src[inv]])
    names = [set(e.id.split("~", 1)[1].rstrip("0123456789").split("+")) for e, i in zip(out, inv, strict=True) if i]
    assert all(n <= set(cfg.invariant_edits) for n in names)
    changed = [e.target_turns != data.dialogues[j].target_turns for e, j in zip(out, src, strict=True)]
    assert np.mean(np.array(changed)[inv]) > 0.9
    hinged, _, _ = with_edits(data, cfg.model_copy(update={"invariant_per_row": 0}))
    assert [e.id for e in hinged] == [e.id for e, i in zip(out, inv, strict=True) if not i]


def test_scores_and_traits_stay_bounded_under_extreme_edits(reward, samples):
    ai = [d for d in samples if d.label == "ai"]
    extreme = [with_target_turns(d, [t + " " + "😂" * 40 + " " + "word " * 400 for t in d.target_turns], "x")
               for d in ai]
    extreme += [with_target_turns(d, ["★" * 300 for _ in d.target_turns], "y") for d in ai]
    for s in reward.score(extreme):
        assert abs(s.score) <= reward.config.score_bound
        assert all(1.0 <= v <= 5.0 for v in s.traits.values()), s.traits


def test_gate_flags_degenerate_turns_and_passes_real_ones(reward, samples):
    assert all(v.validity == 1.0 for v in reward.validity(samples))
    d = samples[1]
    bad = {"empty": [" " for _ in d.target_turns], "symbols": ["★★★ ✓✓" for _ in d.target_turns],
           "mash": ["qwfp zxkjv ghtrq" for _ in d.target_turns],
           "cyrillic": ["я не знаю что сказать тебе сейчас" for _ in d.target_turns],
           "same": [d.target_turns[0]] * max(len(d.target_turns), 4)}
    edited_rows = [with_target_turns(d, turns, k) for k, turns in bad.items()]
    validity = {v.id.split("~")[1]: v for v in reward.validity(edited_rows)}
    for k, v in validity.items():
        assert v.validity < 0.5, (k, v)
    assert validity["empty"].weakest == "non_empty_turns" and validity["cyrillic"].weakest in (
        "known_script_ratio", "known_word_ratio")
    floor = reward.gate.floor
    for s in reward.score(edited_rows):
        assert s.score <= floor + 0.5 * max(0.0, reward.score([d])[0].score - floor) + 1e-6
    # parroting the other speaker is no answer either
    from traitlab.judges.reward_features import previous_messages

    echo = with_target_turns(d, [p or t for p, t in zip(previous_messages(d), d.target_turns, strict=True)], "echo")
    v = reward.validity([echo])[0]
    assert v.validity < 0.5 and v.weakest == "own_words_ratio"


@pytest.mark.slow
def test_gate_of_a_small_project_passes_valid_english_it_never_saw():
    """A 40-ticket project knows ~130 words; valid replies in other words are not gated, other languages are."""
    from traitlab.judges.reward import distill_files

    ex = DEFAULT_DIR.parent.parent / "examples" / "support"
    small = distill_files([ex / "dialogues.jsonl"], [ex / "ratings.jsonl"], ex / "traits.json", positive="best",
                          target_role="agent", judge="support-rubric",
                          config=RewardConfig(steps=30, folds=2, batch=64))
    replies = ["I'm sorry your parcel hasn't arrived yet; I've escalated it and you'll get an update by Friday.",
               "Thanks for reaching out! The duplicate payment is refunded within three business days.",
               "la verdad no sé qué decirte, depende del día y de la semana", "qwfp zxkjv ghtrq bnmlk"]
    rows = [Dialogue(id=f"r{i}", target_role="agent", messages=[
        Message(role="customer", content="Hi, my order is late."), Message(role="agent", content=t)])
        for i, t in enumerate(replies)]
    v = [x.validity for x in small.validity(rows)]
    assert min(v[:2]) > 0.95 and v[2] < 0.5 and v[3] < 0.5, v  # before: 0.22 and 0.43, their scores floored


def test_cheap_edits_do_not_pay(reward, samples):
    """The issue's table, on the sample AI witnesses: a long append does not pay, appended emoji stay inside the
    bound, empty turns, another language or keyboard mash score at the floor (the least human real dialogues).
    (bench/reward.py and bench/reward_audit.py measure every edit on held-out games.)"""
    ai = [d for d in samples if d.label == "ai"]
    src = {s.id: s.score for s in reward.score(ai)}
    long = [with_target_turns(d, [f"{t} " + "the committee met again today. " * 70 for t in d.target_turns], "l")
            for d in ai]
    floor = reward.gate.floor  # gated input scores at the floor; a real dialogue may already score below it
    long_scores = reward.score(long)
    for s, d in zip(long_scores, ai, strict=True):
        assert s.score <= max(src[d.id], floor + 1e-6), (d.id, s.score, src[d.id])
    assert sum(s.score < src[d.id] for s, d in zip(long_scores, ai, strict=True)) >= len(ai) - 1
    emoji = [with_target_turns(d, [f"{t} " + "😂" * 30 for t in d.target_turns], "e") for d in ai]
    assert max(abs(s.score) for s in reward.score(emoji)) <= reward.config.score_bound
    for name in ("empty_turns", "other_language", "keyboard_mash"):
        rows = [edited(d, name, random.Random(1), []) for d in ai]
        assert max(s.score for s in reward.score(rows)) <= floor + 0.25, name
    assert set(EDITS) >= {"append_emoji", "empty_turns", "other_language", "append_long", "repeat_turn"}


# the shipped default --------------------------------------------------------------------------------------
def test_default_scores_samples_with_every_trait(reward, samples):
    assert len(reward.trait_ids) == 32 and reward.trait_ids[0] == "t01"
    scores = reward.score(samples)
    assert [s.id for s in scores] == [d.id for d in samples]
    bound = reward.config.score_bound
    agg = reward.aggregator
    assert agg.trait_set_hash == reward.trait_set_hash
    for s in scores:
        assert set(s.traits) == set(reward.trait_ids) and abs(s.score) <= bound
        # valid input: the scalar is exactly the bounded aggregator over the predicted traits
        z = agg.calibration.a * agg.logit(s.traits) + agg.calibration.b
        assert bound * np.tanh(z / bound) == pytest.approx(s.score, abs=1e-4)
    w = reward.trait_weights()
    assert set(w) == set(reward.trait_ids) and any(abs(v) > 0.01 for v in w.values())


def test_registered_as_local_and_satisfies_the_protocol(tmp_path, reward):
    assert "local" in rewards.names()
    shipped = rewards.create("local")
    assert isinstance(shipped, Reward) and shipped.trait_set.hash == reward.trait_set.hash
    reward.save(tmp_path / "r")
    assert isinstance(rewards.create("local", path=tmp_path / "r"), LocalReward)


def test_score_does_not_depend_on_batch_mates(reward, samples):
    batch = {s.id: s.score for s in reward.score(samples)}
    alone = [reward.score([d])[0].score for d in samples[:3]]
    assert alone == pytest.approx([batch[d.id] for d in samples[:3]], abs=1e-4)


def test_human_style_beats_its_ai_pair(reward, samples):
    by_id = {s.id: s for s in reward.score(samples)}
    games = sorted({d.meta["game_id"] for d in samples})
    wins = [by_id[f"{g}-A"].score > by_id[f"{g}-B"].score for g in games]  # A is the human-style witness
    assert {d.label for d in samples if d.id.endswith("-A")} == {"human"}
    assert len(games) == 6 and sum(wins) >= 5
    assert np.mean([by_id[f"{g}-A"].score - by_id[f"{g}-B"].score for g in games]) > 1.0
    # and the lowercase-texting trait (t03) follows the style, human side higher in most games
    assert sum(by_id[f"{g}-A"].traits["t03"] > by_id[f"{g}-B"].traits["t03"] for g in games) >= 5


def test_shipped_reward_is_small_and_records_its_heldout_figures():
    size = sum(p.stat().st_size for p in DEFAULT_DIR.iterdir())
    assert size < 1_000_000
    meta = json.loads((DEFAULT_DIR / "config.json").read_text())["meta"]
    held = meta["heldout"]
    assert held["pairwise_accuracy"] > 0.95 and held["ece"] < 0.1
    assert set(meta["provenance"]["judges"]) == {"gpt-5", "gpt-5-mini"}
    assert meta["provenance"]["labels"]["positive"] == "human"


def test_shipped_reward_follows_the_judge_on_held_out_doctor_personas_beyond_length(reward, shared_data):
    from traitlab.presets.hal.reward import doctor_transfer
    from traitlab.stats import partial_spearman

    t = doctor_transfer(shared_data)  # personas the shipped reward never saw; issue 10's goal is 0.4
    scores = np.array([s.score for s in reward.score(t.dialogues)])
    rho, by_length = (spearmanr(v, t.judge_aggregate).statistic for v in (scores, -t.mean_turn_chars))
    partial = partial_spearman(scores, t.judge_aggregate, t.mean_turn_chars)
    assert rho > by_length and partial > 0.4, (rho, by_length, partial)


def test_save_load_round_trip_and_refuses_mismatched_parts(reward, samples, tmp_path):
    reward.save(tmp_path / "r")
    again = LocalReward.load(tmp_path / "r")
    assert [s.score for s in again.score(samples[:2])] == pytest.approx([s.score for s in reward.score(samples[:2])])
    traits = json.loads((tmp_path / "r" / "traits.json").read_text())
    traits["traits"][0]["text"] += " (edited)"
    traits.pop("hash")
    (tmp_path / "r" / "traits.json").write_text(json.dumps(traits))
    with pytest.raises(DataError, match="trait_set_hash"):
        LocalReward.load(tmp_path / "r")
    reward.save(tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    doc["config"]["ignore_style"] = ["question_marks"]
    (tmp_path / "c" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"config\.json \[config\].*ignore_style.*question_marks"):
        LocalReward.load(tmp_path / "c")
    for field in ("ignore_style", "strict_edits", "lr_schedule"):  # saved before these fields
        doc["config"].pop(field, None)
    (tmp_path / "c" / "config.json").write_text(json.dumps(doc))
    old = LocalReward.load(tmp_path / "c").config
    assert (old.ignore_style, old.strict_edits, old.lr_schedule) == ([], [], "constant")


def test_score_refuses_duplicate_ids_and_non_dialogues(reward, samples):
    with pytest.raises(ValueError, match="unique"):
        reward.score([samples[0], samples[0]])
    with pytest.raises(TypeError, match="Dialogue"):
        reward.score(["just a string"])


def test_cli_round_trip_both_shapes(reward, samples, tmp_path):
    turing = [{"id": d.id, "messages": [m.model_dump() for m in d.messages]} for d in samples[:2]]
    doctor = [{"id": "doc-1", "dialogue": "P: hi doc, my knee hurts\nD: Since when?\nP: like a week i guess"},
              {"id": "doc-2", "dialogue": "P: Good morning, Doctor. I have been experiencing persistent knee "
                                          "pain.\nD: Since when?\nP: It began approximately one week ago."}]
    for name, records in (("turing", turing), ("doctor", doctor)):
        out = tmp_path / f"{name}.out.jsonl"
        res = runner.invoke(app, ["reward", "score", "--dialogues", str(_write(tmp_path / f"{name}.jsonl", records)),
                                  "--out", str(out)])
        assert res.exit_code == 0, res.output
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert [x["id"] for x in lines] == [r["id"] for r in records]
        assert all(set(x["traits"]) == set(reward.trait_ids) and isinstance(x["score"], float) for x in lines)
    direct = reward.score(samples[:2])
    got = [json.loads(x)["score"] for x in (tmp_path / "turing.out.jsonl").read_text().splitlines()]
    assert got == pytest.approx([s.score for s in direct], abs=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "doctor.out.jsonl").read_text().splitlines()]
    assert all(0.0 < x["p_positive"] < 1.0 and x["validity"] == 1.0 for x in rows)
    # --target-role scores the other speaker of the same file
    out = tmp_path / "interrogator.out.jsonl"
    res = runner.invoke(app, ["reward", "score", "--dialogues", str(tmp_path / "turing.jsonl"), "--out", str(out),
                              "--target-role", "interrogator"])
    assert res.exit_code == 0, res.output
    other = [json.loads(x)["score"] for x in out.read_text().splitlines()]
    assert other != pytest.approx(got, abs=1e-3)


def test_cli_bad_line_names_it_and_writes_nothing(tmp_path, samples):
    good = {"id": "x", "messages": [m.model_dump() for m in samples[0].messages]}
    bad = _write(tmp_path / "bad.jsonl", [good, {"id": "y", "messages": [{"role": "witness"}]}])
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["reward", "score", "--dialogues", str(bad), "--out", str(out)])
    assert res.exit_code == 2
    assert "bad.jsonl:2" in res.output and "messages[0]" in res.output
    assert not out.exists()


def test_cli_other_reward_folder(reward, samples, tmp_path):
    shutil.copytree(DEFAULT_DIR, tmp_path / "r")
    src = _write(tmp_path / "d.jsonl", [{"id": "a", "messages": [m.model_dump() for m in samples[0].messages]}])
    res = runner.invoke(app, ["reward", "score", "--dialogues", str(src), "--out", str(tmp_path / "o.jsonl"),
                              "--reward", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["reward", "score", "--dialogues", str(src), "--out", str(tmp_path / "o.jsonl"),
                              "--reward", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a saved LocalReward" in res.output


def test_reward_fn_strings_and_conversations(reward, samples):
    fn = reward.reward_fn(target_role="assistant")
    d = samples[0]
    prompt_msgs = [{"role": "user", "content": m.content} if m.role == "interrogator"
                   else {"role": "assistant", "content": m.content} for m in d.messages[:-1]]
    completion_msgs = [{"role": "assistant", "content": d.messages[-1].content}]
    conv = fn(prompts=[prompt_msgs], completions=[completion_msgs], completion_ids=[[1, 2]])
    as_dialogue = Dialogue(id="x", target_role="assistant",
                           messages=[Message(**m) for m in prompt_msgs + completion_msgs])
    assert conv == pytest.approx([reward.score([as_dialogue])[0].score], abs=1e-5)
    assert set(fn.last_trait_means) == set(reward.trait_ids) and reward.last_trait_means == fn.last_trait_means

    plain = fn(["hey whats up", "Tell me about your day."],
               ["nm lol just chillin hbu", "Certainly! As an assistant, I'd be delighted to help you today."])
    as_dialogue = Dialogue(id="y", target_role="assistant", messages=[
        Message(role="user", content="hey whats up"), Message(role="assistant", content="nm lol just chillin hbu")])
    assert len(plain) == 2 and plain[0] == pytest.approx(reward.score([as_dialogue])[0].score, abs=1e-5)
    formal = as_dialogue.model_copy(update={"id": "z", "messages": [
        Message(role="user", content="Tell me about your day."),
        Message(role="assistant", content="Certainly! As an assistant, I'd be delighted to help you today.")]})
    casual_t, formal_t = (s.traits for s in reward.score([as_dialogue, formal]))
    assert casual_t["t03"] > formal_t["t03"] + 0.5  # lowercase texting style, seen trait by trait
    assert fn.last_trait_means["t03"] == pytest.approx((casual_t["t03"] + formal_t["t03"]) / 2, abs=1e-4)
    empty = fn(["hi"], [""])[0]
    assert empty == pytest.approx(fn(["hi"], [""])[0]) and empty <= reward.gate.floor + 1e-6  # silence: the floor
    with pytest.raises(ValueError, match="prompts"):
        fn(["a", "b"], ["c"])


@pytest.mark.slow
def test_hf_export_loads_and_matches(own_project, tmp_path):
    """A MiniLM-encoder reward exports to HF and reproduces its own scores, its tokenizer deleting punctuation
    as the reward's encoder does (the static one refuses)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    own, own_ratings, ts, contrast = own_project
    cfg = SMALL.model_copy(update={"encoder": EncoderConfig(kind="minilm", bf16=False, strip_punctuation=True),
                                   "augment": False, "folds": 2, "steps": 40})
    mini = distill(own[:40], [r for r in own_ratings if r.dialogue_id in {d.id for d in own[:40]}], ts, contrast,
                   config=cfg)
    mini.export_hf(tmp_path / "hf")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    assert model.config.num_labels == 1 and model.config.trait_ids == mini.trait_ids
    rows = own[:6]
    assert any(c in ".,?!'" for d in rows for t in d.target_turns for c in t)
    assert tok("well, ok?!")["input_ids"] == tok("well ok")["input_ids"]
    enc = tok(["\n".join(d.target_turns) for d in rows], padding=True, truncation=True, max_length=256,
              return_tensors="pt")
    style = torch.tensor(np.stack([style_of(d) for d in rows]))
    with torch.no_grad():
        out = model(**enc, style_features=style)
        approx = model(**enc).logits[:, 0].numpy()
    ours = mini.score(rows)
    assert all(v.validity == 1.0 for v in mini.validity(rows))  # so the gate leaves these scores alone
    assert out.logits[:, 0].numpy() == pytest.approx([s.score for s in ours], abs=1e-3)
    assert out.traits[:, 2].numpy() == pytest.approx([s.traits["t03"] for s in ours], abs=1e-3)
    assert np.isfinite(approx).all()
    with pytest.raises(ValueError, match="MiniLM"):
        load_reward().export_hf(tmp_path / "nope")


def _with_unlabelled_subset(hal_small):
    """hal_small's training set with its last 40 rows unlabelled and rated on the first 16 traits only (as
    HAL's doctor dialogues: another judge's shorter trait list, no label)."""
    rows, ratings, ts = hal_small
    data = training_set(rows, ratings, ts, Contrast(positive="human", negative="ai", description="d"))
    data.labels[-40:] = np.nan
    data.targets[-40:, 16:] = np.nan
    return data


def test_rows_rated_on_fewer_traits_get_the_judges_aggregate_of_those(hal_small):
    from traitlab.judges.aggregate import fit_linear

    data = _with_unlabelled_subset(hal_small)
    train = np.ones(len(data.labels), dtype=bool)
    agg = _aggregate_logits(data, train, None)
    assert np.isfinite(agg).all()
    lab = ~np.isnan(data.labels)
    ids = data.trait_set.ids
    full = fit_linear(data.targets[lab], data.labels[lab].astype(int), ids, C=0.1)
    assert np.allclose(agg[lab], full.logit_matrix(data.targets[lab], ids))
    sub = fit_linear(data.targets[lab][:, :16], data.labels[lab].astype(int), ids[:16], C=0.1)
    assert np.allclose(agg[~lab], sub.logit_matrix(data.targets[~lab][:, :16], ids[:16]))


def test_fidelity_weights_do_not_depend_on_the_batch_mix():
    import torch

    lab_logit, lab_agg = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0])
    cfg = RewardConfig(gamma=0.5, gamma_unlabelled=0.0)
    alone = fidelity_loss(lab_logit, lab_agg, torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), cfg)
    assert alone.item() == pytest.approx(0.5 * (1 + 4) / 2)
    logit = torch.cat([lab_logit, torch.tensor([5.0, 5.0, 5.0, 5.0])])  # unlabelled rows far from their aggregate
    agg, ok = torch.zeros(6), torch.ones(6, dtype=torch.bool)
    labelled = torch.tensor([True, True, False, False, False, False])
    assert fidelity_loss(logit, agg, ok, labelled, cfg).item() == pytest.approx(alone.item())
    both = fidelity_loss(logit, agg, ok, labelled, RewardConfig(gamma=0.5, gamma_unlabelled=0.1))
    assert both.item() == pytest.approx(alone.item() + 0.1 * 25)


def test_edit_allowance_margin_ceiling_and_cap():
    import torch

    positives = torch.arange(0.0, 11.0)  # quantiles: q25 = 2.5, q50 = 5.0
    base = torch.tensor([-4.0, 2.0, 4.5, 6.0, 2.0])
    strict = torch.tensor([False, False, False, False, True])
    cfg = RewardConfig(edit_margin=1.0, edit_ceiling=0.25, edit_cap=None)
    # source + margin, at least the positives' low end for bounded edits; strict ones get no allowance
    assert edit_allowance(base, strict, positives, cfg).tolist() == [2.5, 3.0, 5.5, 7.0, 3.0]
    capped = edit_allowance(base, strict, positives, cfg.model_copy(update={"edit_cap": 0.5}))
    assert capped.tolist() == [2.5, 3.0, 5.0, 6.0, 3.0]  # never across the median positive from below it
    at_q25 = edit_allowance(base, strict, positives, cfg.model_copy(update={"edit_cap": 0.25}))
    assert at_q25.tolist() == [2.5, 2.5, 4.5, 6.0, 2.5]  # cap = ceiling: max(source, q25) for bounded ones
    shipped = RewardConfig(edit_margin=1.0)  # ceiling = cap = q10 (1.0): no edit gains above the low end
    assert (shipped.edit_ceiling, shipped.edit_cap) == (0.1, 0.1)
    assert edit_allowance(base, strict, positives, shipped).tolist() == [1.0, 2.0, 4.5, 6.0, 2.0]
    assert edit_allowance(base, strict, positives[:0], cfg).tolist() == (base + 1.0).tolist()  # no positives


def test_gamma_unlabelled_makes_the_scalar_follow_the_judge_where_no_label_is(hal_small):
    data = _with_unlabelled_subset(hal_small)
    agg = _aggregate_logits(data, np.ones(len(data.labels), dtype=bool), None)
    unl = np.isnan(data.labels)
    rng = np.random.default_rng(0)  # features that carry the ratings, as an embedding would
    X = np.nan_to_num(data.targets, nan=3.0) @ rng.normal(size=(32, 24)) + rng.normal(size=(len(agg), 24))
    rho = {}
    for g in (0.0, 0.3):
        cfg = RewardConfig(steps=200, batch=64, gamma_unlabelled=g)
        head = fit_member(X, data.targets, data.labels, cfg, agg_logit=agg)
        _, logits = predict_params(_params(head), X, calibrated=False)
        rho[g] = spearmanr(logits[unl], agg[unl])[0]
    assert rho[0.3] > rho[0.0] + 0.05, rho
