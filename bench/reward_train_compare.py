"""What does GRPO teach SmolLM2-135M against the local reward with its hardening off, and against the hardened one?

Issue 10 asks whether a bounded, gated reward changes what a policy learns. This bench trains two rewards on
the same HAL data (``traitlab.presets.hal.reward``, through :func:`traitlab.judges.reward.distill`), then
runs the same short GRPO (``traitlab.alignment.grpo.run_grpo``: TRL's GRPOTrainer, LoRA, the monitors) of
the offline SmolLM2-135M-Instruct (``local:smollm2-135m``, the GGUF converted once by
``traitlab.judges.local``) against each, same seed and prompts, and reports side by side:

- the reward's scalar and every predicted trait (by id and text) on held-out prompts, before and after;
- the audit's degeneracy detectors (``traitlab.judges.audit.degeneracy``: emoji, empty turns, repetition,
  symbol runs, invisible characters, other script, unfamiliar words, length) in the held-out completions,
  before and after;
- the monitors' flags (against-sign, dominant-trait, degenerate, capability, format);
- each trained policy's completions scored by both rewards (does a gain under one reward hold under the other);
- the incentive each reward offers: the mean score change that every audit edit operator makes to the
  untrained policy's held-out completions (what GRPO could climb).

The rewards. **hardened**: the recipe's defaults (``RewardConfig()``, whatever ``judges/reward.py`` ships
at the time of the run), or ``--hardened shipped`` for ``judges/default_reward``, or a saved reward folder.
**unhardened**: the same recipe with the hardening that :class:`~traitlab.judges.reward.RewardConfig` can
switch off switched off: no validity gate (``gate=False``), no edit augmentation (``augment=False``), every
style feature read (``ignore_style=[]``), input clipping at 1e6 SDs and the score bound at 1e6
(``score_bound * tanh(z / score_bound)`` is then the calibrated log-odds itself). Not switchable by config and
so still on in both: the clipping of predicted traits to the judge's rating range, and the saturating style
features (shares, ``tanh`` counts, clipped ``log1p`` lengths in ``judges/reward_features.py``). The unhardened
reward is therefore milder than the pre-issue-10 one (whose traits left the 1-5 scale); it isolates the gate,
the bounds, augmentation and the ignored punctuation counts.

Speed on a shared 2-core CPU: the policy runs in bfloat16 with one torch thread (measured here: sampling 8 x 32
tokens took 27 s in float32 on two threads, 4 s in float32 and 1.8 s in bfloat16 on one, the other cores being
busy); a GRPO step of 3 prompts x 4 completions x 32 tokens is then about 10 s.

Trained rewards are cached under ``--cache`` by a hash of their config, the input files and the reward code,
so a rerun reuses them and a change of the recipe retrains them.

Prompts: the interrogators' opening lines of the HAL Turing games (the preset's ``turing`` suite and its
scenario), each after that suite's system prompt, one user message; the completion is the witness's reply
and is judged as the ``assistant``. Held-out and training openers come from different games.

    python bench/reward_train_compare.py --quick   # a few minutes: 2 steps, a few tokens, small reward fits
    python bench/reward_train_compare.py           # 32 min on 2 shared CPU cores with the rewards cached,
                                                   # about 5 min more per reward to train it the first time

Everything lands under ``--out``: the prompts, both runs (adapters, the run store ``bench.duckdb``),
``compare.json`` (every figure) and ``compare.md`` (the tables printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UNHARDENED = {"gate": False, "augment": False, "ignore_style": [], "input_clip": 1e6, "score_bound": 1e6}
"""What the unhardened reward switches off (see the module docstring for what it cannot)."""
QUICK_REWARD = {"steps": 60, "folds": 2}
"""--quick: a smoke check of the pipeline, with both rewards fitted briefly (same settings for both)."""


# --- rewards ---------------------------------------------------------------------------------------------------
def _code_hash() -> str:
    """sha256 of the reward's code (a change of the recipe retrains the cached rewards)."""
    import traitlab.embed
    import traitlab.judges.reward
    import traitlab.presets.hal.reward

    files = sorted(Path(traitlab.judges.reward.__file__).parent.glob("reward*.py"))
    files += [Path(traitlab.embed.__file__), Path(traitlab.presets.hal.reward.__file__)]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def reward_config(kind: str, quick: bool) -> Any:
    from traitlab.judges.reward import RewardConfig

    update = dict(QUICK_REWARD) if quick else {}
    if kind == "unhardened":
        missing = sorted(set(UNHARDENED) - set(RewardConfig.model_fields))
        if missing:
            raise SystemExit(f"RewardConfig has no fields {missing}: update UNHARDENED in {__file__}")
        update.update(UNHARDENED)
    return RewardConfig.model_validate({**RewardConfig().model_dump(), **update})


def trained_reward(kind: str, data: Path, cache: Path, quick: bool) -> tuple[Path, dict[str, Any]]:
    """The folder of the ``kind`` reward trained by the HAL recipe (cached), and how it was got."""
    from traitlab.data import file_sha256
    from traitlab.presets.hal.reward import distill_preset, files

    cfg = reward_config(kind, quick)
    key = hashlib.sha256(json.dumps({"config": cfg.model_dump(mode="json"), "code": _code_hash(),
                                     "inputs": {k: file_sha256(p) for k, p in sorted(files(data).items())}},
                                    sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / f"{kind}-{key}"
    info: dict[str, Any] = {"kind": kind, "folder": str(folder), "config": cfg.model_dump(mode="json")}
    if (folder / "config.json").is_file():
        return folder, {**info, "cached": True, "train_s": 0.0}
    print(f"training the {kind} reward (HAL recipe{', quick fit' if quick else ''}) ...", flush=True)
    t0 = time.perf_counter()
    distill_preset(data, cfg).save(folder)
    return folder, {**info, "cached": False, "train_s": time.perf_counter() - t0}


def reward_folders(a: argparse.Namespace) -> dict[str, tuple[Path, dict[str, Any]]]:
    from traitlab.judges.reward import DEFAULT_DIR

    out = {"unhardened": trained_reward("unhardened", a.data, a.cache, a.quick)}
    if a.hardened == "recipe":
        out["hardened"] = trained_reward("hardened", a.data, a.cache, a.quick)
    else:
        folder = DEFAULT_DIR if a.hardened == "shipped" else Path(a.hardened)
        out["hardened"] = (folder, {"kind": "hardened", "folder": str(folder), "cached": True, "train_s": 0.0,
                                    "source": a.hardened})
    return out


# --- prompts ---------------------------------------------------------------------------------------------------
def write_prompts(data: Path, out: Path, n_train: int, n_heldout: int, seed: int) -> tuple[Path, Path]:
    """Interrogator openers of the preset's ``turing`` suite (real games), held-out ones from other games, each
    after the suite's system prompt; unique texts only."""
    from traitlab.evals.suite import load_suite
    from traitlab.registry import ScenarioContext

    suite = load_suite("turing")
    ctx = ScenarioContext(model=None, name=suite.name, turns=suite.turns, data_dir=data)
    scripts = suite.build_scenario().scripts(ctx)
    random.Random(seed).shuffle(scripts)
    seen: set[str] = set()
    openers: list[tuple[str, str]] = []
    for s in scripts:
        line = s.lines[0].strip()
        if line.lower() not in seen:
            seen.add(line.lower())
            openers.append((s.source, line))
    if len(openers) < n_train + n_heldout:
        raise SystemExit(f"only {len(openers)} distinct openers for {n_train} + {n_heldout} prompts")
    paths = []
    for name, rows in (("heldout", openers[:n_heldout]), ("train", openers[n_heldout:n_heldout + n_train])):
        path = out / f"prompts_{name}.jsonl"
        path.write_text("".join(json.dumps({"id": f"{name}{i}", "prompt": f"{suite.system_prompt.strip()}\n\n"
                                            f"Their message: {line}", "source": src}) + "\n"
                                for i, (src, line) in enumerate(rows)), encoding="utf-8")
        paths.append(path)
    return paths[1], paths[0]


# --- one GRPO run ----------------------------------------------------------------------------------------------
def grpo_config(a: argparse.Namespace, name: str, reward_dir: Path, train: Path, heldout: Path) -> Any:
    from traitlab.alignment.config import GRPORunConfig, validate_config

    return validate_config({
        "model": "local:smollm2-135m", "dtype": a.dtype, "prompts": str(train), "heldout": str(heldout),
        "target_role": "assistant", "reward": str(reward_dir), "out_dir": str(a.out / f"run-{name}"),
        "seed": a.seed, "sampling": {"max_new_tokens": a.max_new_tokens, "batch_size": 32, "temperature": 1.0},
        "lora": {"r": 16, "alpha": 32, "quantize": "none"},
        "monitor": {"heldout_limit": a.heldout, "eval_limit": a.heldout, "every_steps": a.eval_every,
                    "capability_label": "human", "capability_limit": 12},
        "trl": {"max_steps": a.steps, "num_generations": a.generations,
                "per_device_train_batch_size": a.generations * a.prompts_per_step,
                "max_completion_length": a.max_new_tokens, "learning_rate": a.lr, "beta": a.beta,
                "temperature": 1.0, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 2,
                "logging_steps": 1, "save_strategy": "no"}}, GRPORunConfig, source="bench/reward_train_compare.py")


def completions(store: Any, run_id: str) -> dict[str, list[tuple[str, str, str]]]:
    """(prompt id, prompt, completion) of the held-out samples before and after training (the ``samples``
    artifact: the completion per held-out prompt the monitors scored)."""
    rows = store.artifact(run_id, "samples")
    return {side: [(r["id"], r["prompt"], r[side]["completion"]) for r in rows if r[side]["completion"] is not None]
            for side in ("before", "after")}


def judged(rows: list[tuple[str, str, str]]) -> list[list[str]]:
    from traitlab.alignment.pairs import completion_dialogue

    return [d.target_turns for i, p, c in rows if (d := completion_dialogue(i, p, c, "assistant")) is not None]


def mean_score(reward: Any, rows: list[tuple[str, str, str]]) -> float:
    from traitlab.alignment.pairs import score_completions

    scored = [s.score for s in score_completions(reward, *zip(*rows, strict=True), "assistant") if s is not None]
    return sum(scored) / len(scored) if scored else float("nan")


def edit_incentive(reward: Any, rows: list[tuple[str, str, str]]) -> dict[str, dict[str, float]]:
    """Per audit operator: mean score change of the completions it edits, and the share it raises."""
    import numpy as np

    from traitlab.alignment.pairs import completion_dialogue
    from traitlab.judges.audit import apply_edit, edit_operators

    ds = [d for i, p, c in rows if (d := completion_dialogue(i, p, c, "assistant")) is not None]
    base = np.array([s.score for s in reward.score(ds)])
    out = {}
    for op in edit_operators.names():
        edited = np.array([s.score for s in reward.score([apply_edit(d, [op]) for d in ds])])
        out[op] = {"mean_gain": float(np.mean(edited - base)), "share_raised": float(np.mean(edited > base))}
    return out


# --- reporting -------------------------------------------------------------------------------------------------
def fmt(i: dict[str, float]) -> str:
    return f"{i['mean']:+.3f}"


def ci(i: dict[str, float]) -> str:
    return f"{i['mean']:+.3f} [{i['lo']:+.2f}, {i['hi']:+.2f}]"


def markdown(res: dict[str, Any]) -> str:
    names = list(res["runs"])
    runs = res["runs"]
    lines = [f"# GRPO against the unhardened and the hardened reward ({res['settings']['steps']} steps, "
             f"{res['settings']['heldout']} held-out prompts{', QUICK' if res['settings']['quick'] else ''})", ""]
    lines += ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = [("reward training", lambda n: "cached" if res["rewards"][n]["cached"]
             else f"{res['rewards'][n]['train_s']:.0f} s"),
            ("reward held-out pairwise acc.",
             lambda n: f"{res['rewards'][n].get('pairwise_accuracy') or float('nan'):.3f}"),
            ("GRPO wall", lambda n: f"{runs[n]['wall_s'] / 60:.1f} min"),
            ("score before (own reward, 95% CI)", lambda n: ci(runs[n]["before_after"]["score"]["before"])),
            ("score after", lambda n: ci(runs[n]["before_after"]["score"]["after"])),
            ("paired delta", lambda n: ci(runs[n]["before_after"]["score"]["delta"])),
            ("train reward, first -> last step", lambda n: f"{runs[n]['train_reward'][0]:+.3f} -> "
                                                           f"{runs[n]['train_reward'][-1]:+.3f}"),
            ("mean chars before -> after", lambda n: f"{runs[n]['before_after']['mean_chars']['before']:.0f} -> "
                                                     f"{runs[n]['before_after']['mean_chars']['after']:.0f}"),
            ("perplexity before -> after", lambda n: f"{runs[n]['before_after']['perplexity']['before']:.2f} -> "
                                                     f"{runs[n]['before_after']['perplexity']['after']:.2f}")]
    rows += [(f"after, scored by the {m} reward", lambda n, m=m: f"{runs[n]['cross']['before'][m]:+.3f} -> "
                                                                 f"{runs[n]['cross']['after'][m]:+.3f}")
             for m in names]
    lines += [f"| {label} | " + " | ".join(f(n) for n in names) + " |" for label, f in rows]
    lines += ["", "## Flags (the alignment monitors)", ""]
    for n in names:
        flags = runs[n]["flags"]
        lines.append(f"- **{n}**: " + ("; ".join(f"{f['kind']}: {f['message']}" for f in flags) if flags else "none"))
    lines += ["", "## Degeneracy detectors in the held-out completions (judges.audit), before -> after", "",
              "| detector | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for det in res["detectors"]:
        lines.append(f"| {det} | " + " | ".join(f"{runs[n]['detectors']['before'][det]:.3g} -> "
                                                f"{runs[n]['detectors']['after'][det]:.3g}" for n in names) + " |")
    null = res["detector_null"]
    lines += ["", f"Null check: the untrained policy's held-out completions split in two halves ({null['n'][0]} and "
              f"{null['n'][1]}), the second measured against the first the way the monitor does: "
              + (", ".join(f"{g['detector']} {g['before']:.3g} -> {g['after']:.3g}" for g in null["signals"])
                 + " would flag" if null["signals"] else "no detector would flag") + "."]
    lines += ["", "## Per trait (the reward's own predictions, held-out means): before -> after (delta)", "",
              "| trait | text | " + " | ".join(f"{n} w | {n}" for n in names) + " |",
              "|---|---|" + "---|---|" * len(names)]
    texts = res["trait_texts"]
    first = runs[names[0]]["before_after"]["traits"]
    order = sorted(first, key=lambda t: -max(abs(runs[n]["before_after"]["traits"][t]["delta"]["mean"])
                                             for n in names))
    for t in order:
        cells = []
        for n in names:
            row = runs[n]["before_after"]["traits"][t]
            cells.append(f"{row['weight']:+.2f} | {row['before']['mean']:.2f} -> {row['after']['mean']:.2f} "
                         f"({row['delta']['mean']:+.2f})")
        lines.append(f"| {t} | {texts[t][:60]} | " + " | ".join(cells) + " |")
    lines += ["", "## Incentive: mean score change an audit edit makes to the untrained policy's completions", "",
              "| edit | " + " | ".join(f"{n} gain (share raised)" for n in names) + " |", "|---|" + "---|" * len(names)]
    ops = sorted(res["incentive"][names[0]], key=lambda o: -max(res["incentive"][n][o]["mean_gain"] for n in names))
    for op in ops:
        lines.append(f"| {op} | " + " | ".join(f"{res['incentive'][n][op]['mean_gain']:+.3f} "
                                             f"({res['incentive'][n][op]['share_raised']:.0%})" for n in names) + " |")
    lines += ["", "## Sample held-out completions after training (first 3)", ""]
    for n in names:
        for pid, _, c in runs[n]["samples_after"][:3]:
            lines.append(f"- {n} {pid}: {c[:160]!r}")
    lines += ["", f"total wall {res['wall_s'] / 60:.1f} min"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-reward-train-compare"))
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-reward-cache"), help="trained rewards")
    ap.add_argument("--hardened", default="recipe", help="recipe (train RewardConfig()), shipped, or a folder")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 steps, a few tokens, brief reward fits")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-prompts", type=int, default=150)
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--generations", type=int, default=4, help="GRPO group size (completions per prompt)")
    ap.add_argument("--prompts-per-step", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--beta", type=float, default=0.04, help="KL to the adapter-free policy")
    ap.add_argument("--eval-every", type=int, default=0, help="mid-training held-out evaluations (0: none)")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (on a shared 2-core machine "
                    "one thread was 5x faster than two)")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.train_prompts, a.heldout, a.generations, a.prompts_per_step, a.max_new_tokens = 2, 4, 6, 2, 1, 8

    import torch
    from transformers import set_seed

    import traitlab  # noqa: F401  (offline knobs first)
    from traitlab.alignment.config import MonitorSettings
    from traitlab.alignment.grpo import run_grpo
    from traitlab.judges.audit import DETECTORS, degeneracy, degenerate_signals
    from traitlab.judges.reward import load_reward
    from traitlab.store import Store

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    rewards = reward_folders(a)
    loaded = {n: load_reward(folder) for n, (folder, _) in rewards.items()}
    for n, r in loaded.items():
        rewards[n][1]["pairwise_accuracy"] = r.meta.get("heldout", {}).get("pairwise_accuracy")
    train, heldout = write_prompts(a.data, a.out, a.train_prompts, a.heldout, a.seed)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    print(f"bench: GRPO {a.steps} steps x {a.prompts_per_step} prompts x {a.generations} completions, "
          f"{a.max_new_tokens} tokens, lr {a.lr}, beta {a.beta}; {a.train_prompts} train / {a.heldout} held-out "
          f"prompts; torch threads {a.threads}", flush=True)
    runs: dict[str, dict[str, Any]] = {}
    with Store(a.out / "bench.duckdb") as store:
        for name, (folder, _) in rewards.items():
            set_seed(a.seed)  # the same baseline samples and the same trainer randomness for both rewards
            t1 = time.perf_counter()
            res = run_grpo(grpo_config(a, name, folder, train, heldout), store=store)
            wall = time.perf_counter() - t1
            sides = completions(store, res.run_id)
            turns = {s: judged(rows) for s, rows in sides.items()}
            runs[name] = {
                "run_id": res.run_id, "wall_s": wall, "before_after": res.before_after, "flags": res.flags,
                "train_log": res.train_log, "train_reward": [h["reward"] for h in res.train_log if "reward" in h],
                "detectors": {"before": degeneracy(turns["before"]),
                              "after": degeneracy(turns["after"], reference=turns["before"])},
                "cross": {s: {m: mean_score(r, rows) for m, r in loaded.items()} for s, rows in sides.items()},
                "samples_before": sides["before"], "samples_after": sides["after"]}
            print(f"{name}: {wall / 60:.1f} min, held-out score {fmt(res.before_after['score']['before'])} -> "
                  f"{fmt(res.before_after['score']['after'])}, {len(res.flags)} flags", flush=True)
    base_rows = runs[next(iter(runs))]["samples_before"]
    turns0, limits = judged(base_rows), MonitorSettings()
    half = len(turns0) // 2
    null = {"n": [half, len(turns0) - half], "first_half": degeneracy(turns0[:half]),
            "second_half": degeneracy(turns0[half:], reference=turns0[:half]),
            "signals": [g.model_dump() for g in degenerate_signals(
                turns0[:half], turns0[half:], max_rise=limits.degenerate_rise,
                max_length_ratio=limits.max_length_ratio)]}
    result = {"settings": settings, "unhardened_overrides": UNHARDENED,
              "rewards": {n: info for n, (_, info) in rewards.items()},
              "trait_texts": {t.id: t.text for t in loaded["hardened"].trait_set.traits},
              "detectors": DETECTORS, "runs": runs, "detector_null": null,
              "incentive": {n: edit_incentive(r, base_rows) for n, r in loaded.items()},
              "wall_s": time.perf_counter() - t0}
    (a.out / "compare.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    md = markdown(result)
    (a.out / "compare.md").write_text(md, encoding="utf-8")
    print("\n" + md)
    print(f"wrote {a.out / 'compare.json'} and {a.out / 'compare.md'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
