"""The helpers of bench/reward_train_compare.py (the GRPO comparison itself runs with ``--quick``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "reward_train_compare.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("reward_train_compare", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unhardened_switches_off_only_the_hardening(bench):
    from traitlab.judges.reward import RewardConfig

    default = RewardConfig().model_dump()
    hard, soft = bench.reward_config("hardened", False).model_dump(), bench.reward_config("unhardened", False)
    assert hard == default
    assert not soft.gate and not soft.augment and soft.input_clip >= 1e6 and soft.score_bound >= 1e6
    changed = {k for k, v in soft.model_dump().items() if v != default[k]}
    assert changed <= set(bench.UNHARDENED)
    quick = bench.reward_config("unhardened", True)
    assert (quick.steps, quick.folds, quick.gate) == (60, 2, False)


def test_prompts_are_real_openers_from_disjoint_games(bench, shared_data, tmp_path):
    from traitlab.evals.suite import load_suite

    train, held = bench.write_prompts(shared_data, tmp_path, 20, 10, seed=0)
    rows = {p: [json.loads(line) for line in p.read_text().splitlines()] for p in (train, held)}
    assert [len(rows[train]), len(rows[held])] == [20, 10]
    system = load_suite("turing").system_prompt.strip()
    assert all(r["prompt"].startswith(system) and "Their message: " in r["prompt"] for rs in rows.values() for r in rs)
    games = {p: {r["source"] for r in rs} for p, rs in rows.items()}
    texts = {p: {r["prompt"].lower() for r in rs} for p, rs in rows.items()}
    assert not games[train] & games[held] and not texts[train] & texts[held]
    assert all(s.startswith("game:") for s in games[train] | games[held])


def test_edit_incentive_covers_every_operator(bench):
    from traitlab.judges.audit import edit_operators
    from traitlab.judges.reward import load_reward

    rows = [("h0", "Their message: hi", "hey whats up, just got home from work"),
            ("h1", "Their message: how are you", "good tbh, kinda tired. you?")]
    gains = bench.edit_incentive(load_reward(), rows)
    assert set(gains) == set(edit_operators.names())
    assert gains["empty"]["mean_gain"] < 0 and gains["empty"]["share_raised"] == 0  # the shipped gate floors it
    assert all(0 <= g["share_raised"] <= 1 for g in gains.values())
