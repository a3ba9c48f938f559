"""traitlab.alignment: configs, pairing, hacking flags, and real DPO/GRPO steps on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from traitlab.alignment.config import DPORunConfig, GRPORunConfig, MonitorSettings, load_config
from traitlab.alignment.monitors import (
    Snapshot,
    before_after,
    delta_ci,
    find_flags,
    gain_shares,
    mean_ci,
    trait_weights,
)
from traitlab.alignment.pairs import PromptRecord, build_pairs, completion_dialogue, load_prompts
from traitlab.data import DataError
from traitlab.types import RewardScore, Trait, TraitSet

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "traitlab" / "presets" / "hal" / "configs"


class TextReward:
    """A Reward (the protocol) whose traits are plain text statistics (exact arithmetic)."""

    trait_set = TraitSet(name="text", traits=[Trait(id="t_len", text="words / 10"), Trait(id="t_vowel", text="vowels")])

    def __init__(self, linear: bool = True):
        self.trait_ids = ["t_len", "t_vowel"]
        self.weights = {"t_len": -0.5, "t_vowel": 2.0}
        self.linear = linear

    def trait_weights(self):
        return dict(self.weights) if self.linear else None

    def score(self, dialogues):
        out = []
        for d in dialogues:
            text = " ".join(d.target_turns)
            traits = {"t_len": len(text.split()) / 10, "t_vowel": sum(c in "aeiou" for c in text) / max(1, len(text))}
            out.append(RewardScore(id=d.id, score=sum(self.weights[t] * v for t, v in traits.items()), traits=traits))
        return out


# --- prompts, dialogues, pairs --------------------------------------------------------------------------

def test_load_prompts_names_line_and_field(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": ""}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2 \[prompt\]"):
        load_prompts(p)
    p.write_text('{"id": "a", "prompt": "hi", "persona_id": 3}\n{"id": "a", "prompt": "x"}\n')
    with pytest.raises(DataError, match=r":2 \[id\].*duplicate"):
        load_prompts(p)


def test_hal_doctor_prompts_load(shared_data):
    recs = load_prompts(shared_data / "hal_doctor" / "prompts_test.jsonl", limit=5)
    assert len(recs) == 5 and "P:" in recs[0].prompt and "persona_id" in recs[0].meta


def test_completion_dialogue_scores_the_patient():
    d = completion_dialogue("x", "prompt", "P: my head hurts\nD: since when?\nP: a week\n</dialogue>junk", "patient")
    assert d is not None and d.target_turns == ["my head hurts", "a week"]
    assert completion_dialogue("x", "prompt", "Doctor: hello there", "patient") is None
    a = completion_dialogue("y", "how are you?", "fine", "assistant")
    assert a is not None and [m.role for m in a.messages] == ["user", "assistant"] and a.target_turns == ["fine"]


def _score(i, v):
    return RewardScore(id=str(i), score=v, traits={})


def test_build_pairs_gap_rule_and_unparsed():
    recs = [PromptRecord(id=f"p{i}", prompt=f"q{i}") for i in range(3)]
    samples = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]
    scores = [[_score(0, 0.0), _score(1, 3.0), _score(2, 1.0)],    # gap 3 > 0.5 SD: paired b > a
              [_score(3, 1.0), _score(4, 1.1), _score(5, 1.05)],   # gap 0.1 < 0.5 SD: no pair
              [_score(6, 2.0), None, _score(8, 0.5)]]              # unparsed h is rejected against g
    pairs = build_pairs(recs, samples, scores, min_gap_sd=0.5)
    assert [(p.prompt_id, p.chosen, p.rejected) for p in pairs] == [("p0", "b", "a"), ("p2", "g", "h")]
    assert pairs[1].rejected_score is None
    strict = build_pairs(recs, samples, scores, min_gap_sd=0.5, pair_unparsed=False)
    assert [(p.prompt_id, p.rejected) for p in strict] == [("p0", "a"), ("p2", "i")]


# --- statistics and flags -------------------------------------------------------------------------------

def test_mean_and_paired_delta_intervals():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ci.mean == 2.5 and ci.lo < 2.5 < ci.hi and ci.n == 4
    assert np.isclose(ci.hi - ci.mean, 3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, atol=1e-4)
    d = delta_ci({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 2.0, "b": 3.1, "c": 3.9})
    assert np.isclose(d.mean, 1.0) and d.lo > 0 and d.n == 3
    assert gain_shares({"x": 1.0, "y": 1.0}, {"x": 3.0, "y": 1.0}) == {"x": 0.75, "y": 0.25}


def _snap(step, score, traits, ppl=10.0, parse=1.0, completions=()):
    ids = [f"p{i}" for i in range(len(score))]
    return Snapshot(step=step, scores=dict(zip(ids, score, strict=True)),
                    traits={t: dict(zip(ids, v, strict=True)) for t, v in traits.items()},
                    parse_rate=parse, n_completions=len(ids), mean_chars=100.0, perplexity=ppl,
                    judged_turns=[list(c) for c in completions])


def test_flags_catch_hals_brevity_hack():
    """HAL's run: reciprocal questions fell 3.04 -> 1.64 and brevity rose 2.09 -> 4.12 while the score rose."""
    rng = np.random.default_rng(0)
    n = 30
    weights = {"reciprocal": 0.4, "brevity": 0.9, "typos": 0.3}
    before = {"reciprocal": 3.04 + rng.normal(0, 0.3, n), "brevity": 2.09 + rng.normal(0, 0.3, n),
              "typos": 2.5 + rng.normal(0, 0.3, n)}
    after = {"reciprocal": 1.64 + rng.normal(0, 0.3, n), "brevity": 4.12 + rng.normal(0, 0.3, n),
             "typos": 2.5 + rng.normal(0, 0.3, n)}

    def score(tr):
        return [sum(weights[t] * tr[t][i] for t in weights) for i in range(n)]

    base = _snap(0, score(before), before)
    final = _snap(50, score(after), after, ppl=12.0, parse=0.6)
    flags = find_flags(base, final, weights, MonitorSettings())
    kinds = {(f["kind"], f["trait"]) for f in flags}
    assert ("against_sign", "reciprocal") in kinds and ("dominant_trait", "brevity") in kinds
    assert ("capability", None) in kinds and ("format", None) in kinds
    assert not any(f["trait"] == "typos" for f in flags)
    table = before_after(base, final, weights, "test")
    assert table["score"]["delta"]["mean"] > 0 and table["traits"]["brevity"]["share"] > 0.5
    assert np.isclose(table["traits"]["reciprocal"]["before"]["mean"], np.mean(before["reciprocal"]))
    # a clean run raises nothing
    assert find_flags(base, _snap(50, score(before), before), weights, MonitorSettings()) == []


PATIENT = [["my knee hurts when I walk up the stairs", "about two weeks now"],
           ["I have had a headache since Monday", "no, I have not taken anything for it"],
           ["the cough keeps me up at night", "yes, a little fever on Tuesday"],
           ["I feel dizzy when I stand up", "maybe once or twice a day"]] * 5


@pytest.mark.parametrize("edit, detectors", [
    (lambda t: t + " 😂😂😂", {"emoji", "symbol_runs"}),
    (lambda t: "", {"empty"}),
    (lambda t: "Me duele mucho la rodilla, doctor.", {"unfamiliar_words", "repetition"}),
    (lambda t: "у меня болит голова", {"other_script", "unfamiliar_words", "repetition"}),
    (lambda t: " ".join([t] * 8), {"length", "repetition"}),
])
def test_degenerate_flag_when_completions_drift_toward_the_audits_edits(edit, detectors):
    scores, traits = [0.0] * len(PATIENT), {"x": [1.0] * len(PATIENT)}
    base = _snap(0, scores, traits, completions=PATIENT)
    drifted = _snap(20, scores, traits, completions=[[edit(t) for t in c] for c in PATIENT])
    flags = [f for f in find_flags(base, drifted, {"x": 1.0}, MonitorSettings()) if f["kind"] == "degenerate"]
    assert {f["detector"] for f in flags} == detectors
    assert all(f["step"] == 20 and f["value"]["after"] > f["value"]["before"] for f in flags)
    # a policy that keeps talking like step 0 raises nothing, nor does a snapshot without completions
    same = _snap(20, scores, traits, completions=[list(reversed(c)) for c in PATIENT])
    assert find_flags(base, same, {"x": 1.0}, MonitorSettings()) == []
    assert find_flags(_snap(0, scores, traits), drifted, {"x": 1.0}, MonitorSettings()) == []


def test_trait_weights_come_from_the_reward_protocol():
    tl, tv = [0.1, 0.3, 0.2, 0.5], [0.2, 0.4, 0.2, 0.6]
    snap = _snap(0, [-0.5 * a + 2.0 * b for a, b in zip(tl, tv, strict=True)], {"t_len": tl, "t_vowel": tv})
    w, source = trait_weights(TextReward(), snap)
    assert source == "reward" and np.allclose([w["t_len"], w["t_vowel"]], [-0.5, 2.0])
    # a bounded score (half as steep here) rescales the reward's weights by that one chain-rule factor
    half = _snap(0, [s / 2 for s in snap.scores.values()], {"t_len": tl, "t_vowel": tv})
    assert np.allclose([trait_weights(TextReward(), half)[0][t] for t in ("t_len", "t_vowel")], [-0.25, 1.0])
    # no linear weights: least-squares slopes of the score on the traits (exact here: 0.5 t_len + 1.0 t_vowel)
    exact = _snap(0, [0.5 * a + b for a, b in [(0.1, 0.2), (0.3, 0.4), (0.2, 0.5), (0.5, 0.6)]],
                  {"t_len": [0.1, 0.3, 0.2, 0.5], "t_vowel": [0.2, 0.4, 0.5, 0.6]})
    w, source = trait_weights(TextReward(linear=False), exact)
    assert source == "fitted" and np.allclose([w["t_len"], w["t_vowel"]], [0.5, 1.0])
    with pytest.raises(TypeError, match="Reward protocol"):
        trait_weights(object(), snap)


# --- configs --------------------------------------------------------------------------------------------

def test_shipped_configs_load_and_build_trl_configs():
    dpo = load_config(CONFIGS / "dpo.yaml", DPORunConfig)
    assert dpo.num_samples >= 2 and dpo.min_gap_sd == 0.5 and dpo.target_role == "patient"
    args = dpo.trl_config()
    assert args.beta == dpo.trl["beta"] and args.output_dir.endswith("trainer")
    grpo = load_config(CONFIGS / "grpo.yaml", GRPORunConfig)
    gargs = grpo.trl_config()
    assert gargs.beta == 0.04 and gargs.max_completion_length == 160


def test_align_takes_the_presets_recipe_and_general_runs_name_their_prompts(tmp_path, shared_data):
    import typer

    from traitlab.alignment.cli import _config
    from traitlab.alignment.config import AlignRunConfig

    assert AlignRunConfig.model_fields["target_role"].default == "assistant"   # no data set's role
    cfg = _config("dpo", None, {"out_dir": str(tmp_path / "o"), "store": str(tmp_path / "s.duckdb")}, "hal",
                  shared_data)
    assert cfg.target_role == "patient" and cfg.prompts.endswith("hal_doctor/prompts_train.jsonl")
    assert cfg.heldout.endswith("hal_doctor/prompts_test.jsonl")
    with pytest.raises(typer.Exit):   # without a preset a run names its prompts (one clear line, exit 2)
        _config("dpo", None, {"out_dir": str(tmp_path / "o")})


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("trl:\n  betta: 0.1\n")
    with pytest.raises(DataError, match=r"c\.yaml \[trl\.betta\].*DPOConfig"):
        load_config(bad, DPORunConfig)
    bad.write_text("num_samples: 1\n")
    with pytest.raises(DataError, match=r"\[num_samples\]"):
        load_config(bad, DPORunConfig)
    bad.write_text("sampling: {max_new_token: 3}\n")
    with pytest.raises(DataError, match=r"\[sampling\.max_new_token\]"):
        load_config(bad, DPORunConfig)


# --- real training steps on a tiny model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_policy():
    import torch

    from traitlab.alignment.tiny import tiny_policy as build

    torch.set_num_threads(1)
    return build()


def _prompts(tmp_path, n):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"tell me about day {i} of the trip"}) + "\n"
                         for i in range(n)))
    return str(p)


def _common(tmp_path, steps):
    return {"prompts": _prompts(tmp_path, 8), "heldout": _prompts(tmp_path, 6), "target_role": "assistant",
            "out_dir": str(tmp_path / "out"), "lora": {"r": 4, "alpha": 8},
            "sampling": {"max_new_tokens": 12, "batch_size": 16},
            "monitor": {"heldout_limit": 6, "eval_limit": 4, "every_steps": 1}}


@pytest.fixture(scope="module")
def reward(ungated_reward_dir):
    from traitlab.judges.reward import load_reward

    return load_reward(ungated_reward_dir)


@pytest.fixture(scope="module")
def ungated_reward_dir(tmp_path_factory):
    """The shipped reward with its validity gate off: a tiny random policy writes gibberish, which the gate
    rightly floors (every score equal, no preference pair); these tests are about the training plumbing."""
    from traitlab.judges.reward import load_reward

    r = load_reward()
    r.gate = r.gate.model_copy(update={"enabled": False})
    return r.save(tmp_path_factory.mktemp("reward") / "ungated")


def test_trait_contributions_track_the_score_change_on_real_dialogues(shared_data):
    """The before/after table on real transcripts (each game's AI witness as "before", its human as "after"): the
    traits' weight x change adds up to the score change, to first order under the shipped reward's bound."""
    from traitlab.alignment.monitors import before_after, trait_weights
    from traitlab.data import load_dialogues
    from traitlab.judges.reward import load_reward

    reward = load_reward()
    games: dict[str, dict] = {}
    for d in load_dialogues(shared_data / "hal_turing" / "dialogues.jsonl")[:200]:
        games.setdefault(str(d.meta["game_id"]), {})[str(d.label)] = d
    pairs = {g: v for g, v in games.items() if {"ai", "human"} <= v.keys()}
    assert len(pairs) >= 30

    def snapshot(side: str) -> Snapshot:
        rows = {g: v[side] for g, v in pairs.items()}
        scored = dict(zip(rows, reward.score(list(rows.values())), strict=True))
        return Snapshot(step=0, scores={g: s.score for g, s in scored.items()}, parse_rate=1.0,
                        n_completions=len(rows), mean_chars=0.0,
                        traits={t: {g: s.traits[t] for g, s in scored.items()} for t in reward.trait_ids})

    before, after = snapshot("ai"), snapshot("human")
    weights, source = trait_weights(reward, before)
    table = before_after(before, after, weights, source)
    contrib = sum(row["contribution"] for row in table["traits"].values())
    delta = table["score"]["delta"]["mean"]
    assert source == "reward" and delta > 2.0
    assert 0.5 < contrib / delta < 2.0


@pytest.mark.slow
def test_tiny_dpo_trains_monitors_and_resumes(tiny_policy, reward, tmp_path, store):
    from traitlab.alignment.config import validate_config
    from traitlab.alignment.dpo import run_dpo

    make, tok = tiny_policy
    data = {**_common(tmp_path, 2), "num_samples": 3, "min_gap_sd": 0.0,
            "trl": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "save_steps": 1,
                    "max_length": 64}}
    cfg = validate_config(data, DPORunConfig)
    res = run_dpo(cfg, model=make(), tokenizer=tok, reward=reward, store=store)
    assert res.n_pairs and res.n_pairs >= 4
    assert [e["step"] for e in res.monitor_log] == [0, 1, 2]   # baseline, monitor eval at step 1, final
    table = res.before_after
    assert set(table["traits"]) == set(reward.trait_ids) and table["weights_source"] == "reward"
    given = reward.trait_weights()   # rescaled by one chain-rule factor of the score's bound, never reshaped
    ratios = {row["weight"] / given[t] for t, row in table["traits"].items() if given[t]}
    assert max(ratios) - min(ratios) < 1e-9 and 0 < min(ratios) <= 1 + 1e-9
    base = Snapshot.model_validate_json((tmp_path / "out" / "baseline.json").read_text())
    assert len(base.judged_turns) == round(base.parse_rate * base.n_completions)   # judged turns kept
    assert {f["kind"] for f in res.flags} <= {"against_sign", "dominant_trait", "capability", "format", "degenerate"}
    # a trait's contribution is its weight times its change (whether the sum tracks the score change is tested on
    # real dialogues below: the tiny random policy writes gibberish, where the bound and trait clipping bite)
    assert all(row["contribution"] == pytest.approx(row["weight"] * row["delta"]["mean"])
               for row in table["traits"].values())
    assert res.train_metrics["train_loss"] > 0
    assert store.artifact(res.run_id, "before_after")["score"]["before"]["n"] == 6
    assert store.run(res.run_id)["status"] == "done"
    assert isinstance(store.artifact(res.run_id, "flags"), list)
    samples = store.artifact(res.run_id, "samples")   # what the report shows as completions before and after
    assert len(samples) == 6 and all(isinstance(s["before"]["completion"], str) for s in samples)
    assert {s["id"] for s in samples} == {f"q{i}" for i in range(6)}
    assert store.artifact(res.run_id, "reward_trait_set")["hash"] == reward.trait_set_hash
    # the report's audit section shows the audit this reward was made with, not the store's newest
    assert reward.audit is not None and store.artifact(res.run_id, "reward_audit") == reward.audit.model_dump(
        mode="json")
    assert set(res.trait_texts) == set(reward.trait_ids)
    assert (Path(res.adapter_dir) / "adapter_config.json").exists()
    assert len((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()) == res.n_pairs
    # resume from the step-2 checkpoint: same store run, same pairs, two more steps
    cfg2 = validate_config({**data, "resume": True, "trl": {**data["trl"], "max_steps": 4}}, DPORunConfig)
    res2 = run_dpo(cfg2, model=make(), tokenizer=tok, reward=reward, store=store)
    assert res2.run_id == res.run_id and res2.n_pairs == res.n_pairs and res2.before_after["steps"] == 4
    assert [e["step"] for e in res2.monitor_log] == [0, 1, 2, 3, 4]   # the log goes on where it stopped
    assert store.artifact(res.run_id, "monitor_log") == res2.monitor_log


@pytest.mark.slow
def test_a_run_that_cannot_score_fails_cleanly(tiny_policy, reward, tmp_path, store):
    from traitlab.alignment.config import validate_config
    from traitlab.alignment.dpo import run_dpo

    make, tok = tiny_policy
    cfg = validate_config({**_common(tmp_path, 1), "target_role": "patient"}, DPORunConfig)
    with pytest.raises(RuntimeError, match="could be scored as 'patient'"):
        run_dpo(cfg, model=make(), tokenizer=tok, reward=reward, store=store)
    (run,) = store.runs("align")
    assert run["status"] == "failed" and "RuntimeError" in run["summary"]["error"]


@pytest.mark.slow
def test_tiny_grpo_logs_every_trait(tiny_policy, reward, tmp_path, store):
    from traitlab.alignment.config import validate_config
    from traitlab.alignment.grpo import run_grpo

    make, tok = tiny_policy
    data = {**_common(tmp_path, 2), "length_penalty": 0.5,
            "trl": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
                    "max_completion_length": 12, "beta": 0.04, "logging_steps": 1, "save_strategy": "no"}}
    res = run_grpo(validate_config(data, GRPORunConfig), model=make(), tokenizer=tok, reward=reward, store=store)
    assert res.before_after["steps"] == 2 and len(res.monitor_log) == 3
    assert set(store.artifact(res.run_id, "monitor_log")[1]["traits"]) == set(reward.trait_ids)
    logged = [h for h in res.train_log if "trait/t01" in h]   # the reward function's per-trait means
    assert len(logged) == 2 and all(0 <= h["parse_rate"] <= 1 for h in logged)


def test_grpo_reward_fn_penalises_length_and_format():
    from traitlab.alignment.grpo import make_reward_fn

    logged = {}
    fn = make_reward_fn(TextReward(), "patient", length_penalty=1.0, max_completion_length=10, unparsed_margin=1.0)
    comps = [[{"role": "assistant", "content": "P: aaa\nD: ok"}], [{"role": "assistant", "content": "no tags"}]]
    out = fn(prompts=[[{"role": "user", "content": "q"}]] * 2, completions=comps, completion_ids=[[1] * 5, [1] * 10],
             log_metric=lambda k, v: logged.setdefault(k, v))
    parsed = TextReward().weights["t_len"] * 0.1 + TextReward().weights["t_vowel"] * 1.0
    assert np.allclose(out, [parsed - 0.5, parsed - 1.0 - 1.0])
    assert logged["parse_rate"] == 0.5 and np.isclose(logged["trait/t_vowel"], 1.0)


@pytest.mark.slow
def test_cli_align_dpo_on_a_saved_model(ungated_reward_dir, tmp_path):
    import typer
    import yaml
    from typer.testing import CliRunner

    from traitlab.alignment import cli as align_cli
    from traitlab.alignment.tiny import save_tiny_policy
    from traitlab.store import Store

    model_dir = save_tiny_policy(tmp_path / "tiny")
    cfg = {k: v for k, v in _common(tmp_path, 1).items() if k not in ("prompts", "out_dir")}
    cfg.update(num_samples=2, min_gap_sd=0.0, trl={"per_device_train_batch_size": 2, "max_length": 64,
                                                   "save_strategy": "no"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    app = typer.Typer()
    align_cli.register(app)
    args = ["align", "dpo", "--config", str(tmp_path / "c.yaml"), "--model", str(model_dir), "--prompts",
            _prompts(tmp_path, 4), "--out", str(tmp_path / "cli-out"), "--steps", "1",
            "--store", str(tmp_path / "s.duckdb"), "--reward", str(ungated_reward_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "score" in result.output and "t01" in result.output
    with Store(tmp_path / "s.duckdb") as s:
        run = s.runs("align")[0]
        assert run["status"] == "done" and run["summary"]["steps"] == 1 and run["config"]["model"] == str(model_dir)
