"""The distilled local reward: shipped default, CLI contract, HF export, TRL reward function, invariants."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from traitlab.cli import app
from traitlab.data import DataError, sample_dialogues
from traitlab.judges.reward import DEFAULT_DIR, LocalReward, load_reward, style_of
from traitlab.types import Dialogue, Message

runner = CliRunner()


@pytest.fixture(scope="module")
def reward() -> LocalReward:
    """The shipped reward on the exact fp32 encoder (bf16 autocast is checked separately below)."""
    return _with_bf16(load_reward(), False)


def _with_bf16(reward: LocalReward, bf16: bool) -> LocalReward:
    config = reward.config.model_copy(update={"encoder": reward.config.encoder.model_copy(update={"bf16": bf16})})
    return LocalReward(reward.trait_set, config, reward.head, reward.meta)


@pytest.fixture(scope="module")
def samples() -> list[Dialogue]:
    return sample_dialogues()


def test_default_scores_samples_with_every_trait(reward, samples):
    assert len(reward.trait_ids) == 32 and reward.trait_ids[0] == "t01"
    scores = reward.score(samples)
    assert [s.id for s in scores] == [d.id for d in samples]
    for s in scores:
        assert set(s.traits) == set(reward.trait_ids)
        assert np.isfinite(s.score) and all(np.isfinite(v) for v in s.traits.values())
    # the scalar is exactly the aggregator over the predicted traits (explained trait by trait)
    agg = reward.aggregator
    assert agg.trait_set_hash == reward.trait_set_hash
    for s in scores:
        assert agg.calibration.a * agg.logit(s.traits) + agg.calibration.b == pytest.approx(s.score, abs=1e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_score_does_not_depend_on_batch_mates(reward, samples, bf16):
    """fp32 is exact; bf16 autocast (the default on CPUs with native bf16) moves a score by well under 1% of
    the score's spread when its batch mates change, where int8 moved it by up to a logit."""
    reward = _with_bf16(reward, bf16)
    batch = {s.id: s.score for s in reward.score(samples)}
    alone = [reward.score([d])[0].score for d in samples[:3]]
    assert alone == pytest.approx([batch[d.id] for d in samples[:3]], abs=0.02 if bf16 else 1e-4)


def test_human_style_beats_its_ai_pair(reward, samples):
    by_id = {s.id: s for s in reward.score(samples)}
    games = sorted({d.meta["game_id"] for d in samples})
    wins = [by_id[f"{g}-A"].score > by_id[f"{g}-B"].score for g in games]  # A is the human-style witness
    assert {d.label for d in samples if d.id.endswith("-A")} == {"human"}
    # measured with the shipped reward: 5 of 6 (s06 is a near tie, -0.24 vs -0.06), mean margin about 2 logits
    assert len(games) == 6 and sum(wins) >= 5
    assert np.mean([by_id[f"{g}-A"].score - by_id[f"{g}-B"].score for g in games]) > 1.0
    # and the lowercase-texting trait (t03) follows the style, human side higher in every game
    assert all(by_id[f"{g}-A"].traits["t03"] > by_id[f"{g}-B"].traits["t03"] for g in games)


def test_shipped_reward_is_small_and_records_its_heldout_figures():
    size = sum(p.stat().st_size for p in DEFAULT_DIR.iterdir())
    assert size < 3_000_000
    held = json.loads((DEFAULT_DIR / "config.json").read_text())["meta"]["heldout"]
    assert held["pairwise_accuracy"] > 0.9 and held["ece"] < 0.1


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


def test_score_refuses_duplicate_ids_and_non_dialogues(reward, samples):
    with pytest.raises(ValueError, match="unique"):
        reward.score([samples[0], samples[0]])
    with pytest.raises(TypeError, match="Dialogue"):
        reward.score(["just a string"])


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


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
    # same numbers as the library, for the Turing file (the patient side is judged in the doctor file)
    direct = load_reward().score(samples[:2])  # the CLI's default: the shipped settings, bf16 where native
    got = [json.loads(x)["score"] for x in (tmp_path / "turing.out.jsonl").read_text().splitlines()]
    assert got == pytest.approx([s.score for s in direct], abs=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "doctor.out.jsonl").read_text().splitlines()]
    scores = {x["id"]: x["score"] for x in rows}
    assert scores["doc-1"] > scores["doc-2"]  # casual texting patient reads more human than the formal one


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
    assert casual_t["t03"] > formal_t["t03"] + 1  # lowercase texting style, seen trait by trait
    assert fn.last_trait_means["t03"] == pytest.approx((casual_t["t03"] + formal_t["t03"]) / 2, abs=1e-4)
    assert fn(["hi"], [""])[0] == pytest.approx(fn(["hi"], [""])[0])  # empty completion: scored, not a crash
    with pytest.raises(ValueError, match="prompts"):
        fn(["a", "b"], ["c"])


@pytest.mark.slow
def test_hf_export_loads_and_matches(reward, samples, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward.export_hf(tmp_path / "hf")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    assert model.config.num_labels == 1 and model.config.trait_ids == reward.trait_ids
    enc = tok(["\n".join(d.target_turns) for d in samples], padding=True, truncation=True, max_length=256,
              return_tensors="pt")
    style = torch.tensor(np.stack([style_of(d) for d in samples]))
    with torch.no_grad():
        out = model(**enc, style_features=style)
        approx = model(**enc).logits[:, 0].numpy()
    # the export runs the fp32 encoder: it reproduces the same heads on the fp32 encoder exactly
    fp32 = LocalReward(reward.trait_set, reward.config.model_copy(
        update={"encoder": reward.config.encoder.model_copy(update={"int8": False})}), reward.head, reward.meta)
    ours = fp32.score(samples)
    assert out.logits.shape == (len(samples), 1)
    assert out.logits[:, 0].numpy() == pytest.approx([s.score for s in ours], abs=1e-3)
    assert out.traits[:, 2].numpy() == pytest.approx([s.traits["t03"] for s in ours], abs=1e-3)
    # and the shipped reward (its own encoder settings) ranks every sample pair the same way
    shipped = {s.id: s.score for s in reward.score(samples)}
    hf = dict(zip([d.id for d in samples], out.logits[:, 0].tolist(), strict=True))
    games = sorted({d.meta["game_id"] for d in samples})
    assert [hf[f"{g}-A"] > hf[f"{g}-B"] for g in games] == [shipped[f"{g}-A"] > shipped[f"{g}-B"] for g in games]
    # without style features (what TRL passes) the mean training style is assumed: finite, but an
    # approximation (its agreement is reported by bench/reward.py, not asserted here)
    assert np.isfinite(approx).all()
