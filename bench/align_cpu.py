"""Does ``traitlab align dpo`` raise the held-out reward of the real SmolLM2-135M-Instruct on a CPU?

HAL's recipe end to end on 2 CPU cores: sample K completions per doctor-visit prompt, score the patient
turns with the local reward, pair best vs worst (0.5-SD gap rule), train ~50 LoRA DPO steps, and compare
the held-out reward before and after (mean with 95% CI over >= 50 held-out prompts, paired delta), with the
per-trait table and the hacking flags. Everything lands in a run store under ``--out``.

To fit ~20 minutes of 2 shared cores, each HAL prompt keeps its instruction, medical condition and reason
for the visit but only the first ``--bio-sentences`` sentences of the biography (the full prompt is ~550
tokens, 3x the cost of every forward pass), completions are capped at ``--max-new-tokens``, and the policy
runs in bfloat16 (about 2x faster than float32 on CPUs with AVX512-BF16).

    python bench/align_cpu.py                       # ~15-25 min on 2 cores
    python bench/align_cpu.py --reward DIR --steps 50 --train-prompts 48 --heldout 50
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "hal_doctor"


def shorten(prompt: str, sentences: int) -> str:
    """HAL's prompt with its biography cut to the first ``sentences`` sentences."""
    m = re.search(r"(Biography: )(.*?)(\n\nMedical condition)", prompt, flags=re.S)
    if not m:
        return prompt
    kept = " ".join(re.split(r"(?<=[.!?])\s+", m.group(2))[:sentences])
    return prompt[:m.start(2)] + kept + prompt[m.end(2):]


def write_prompts(src: Path, dest: Path, n: int, sentences: int) -> Path:
    from traitlab.alignment.pairs import load_prompts

    recs = load_prompts(src, limit=n)
    dest.write_text("".join(json.dumps({"id": r.id, "prompt": shorten(r.prompt, sentences), **r.meta}) + "\n"
                            for r in recs), encoding="utf-8")
    return dest


def fmt(i: dict) -> str:
    return f"{i['mean']:+.3f} [{i['lo']:+.3f}, {i['hi']:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-align-cpu")
    ap.add_argument("--reward", default=None, help="LocalReward folder (default: the shipped one)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-prompts", type=int, default=24)
    ap.add_argument("--heldout", type=int, default=50)
    ap.add_argument("--samples", type=int, default=4, help="K completions per training prompt")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--bio-sentences", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    import traitlab  # noqa: F401  (offline knobs first)
    from traitlab.alignment.config import DPORunConfig, validate_config
    from traitlab.alignment.dpo import run_dpo
    from traitlab.judges.reward import load_reward
    from traitlab.store import Store

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train = write_prompts(DATA / "prompts_train.jsonl", out / "prompts_train.jsonl", a.train_prompts, a.bio_sentences)
    held = write_prompts(DATA / "prompts_test.jsonl", out / "prompts_test.jsonl", a.heldout, a.bio_sentences)
    cfg = validate_config({
        "model": "local:smollm2-135m", "dtype": "bfloat16", "prompts": str(train), "heldout": str(held),
        "target_role": "patient", "reward": a.reward, "out_dir": str(out / "run"), "num_samples": a.samples,
        "min_gap_sd": 0.5, "sampling": {"max_new_tokens": a.max_new_tokens, "batch_size": 64},
        "lora": {"r": 16, "alpha": 32, "quantize": "none"},
        "monitor": {"heldout_limit": a.heldout, "eval_limit": 16, "every_steps": max(1, a.steps // 2),
                    "capability_texts": str(DATA.parent / "hal_turing" / "dialogues.jsonl"), "capability_limit": 12},
        "trl": {"max_steps": a.steps, "per_device_train_batch_size": 1, "learning_rate": a.lr, "beta": 0.1,
                "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 3, "logging_steps": 5,
                "save_strategy": "no", "max_length": 512}}, DPORunConfig, source="bench/align_cpu.py")
    print(f"bench: {a.steps} DPO steps, {a.train_prompts} train prompts x K={a.samples}, {a.heldout} held-out, "
          f"max_new_tokens {a.max_new_tokens}, torch threads {a.threads}", flush=True)
    t0 = time.perf_counter()
    reward = load_reward(a.reward)
    with Store(out / "bench.duckdb") as store:
        res = run_dpo(cfg, reward=reward, store=store)
    wall = time.perf_counter() - t0
    t = res.before_after
    print(f"\nwall {wall / 60:.1f} min; {res.n_pairs} pairs; run {res.run_id} in {out / 'bench.duckdb'}")
    s = t["score"]
    print(f"held-out reward, {t['level']:.0%} CI over the prompts with a scorable completion: before "
          f"{fmt(s['before'])} (n={s['before']['n']})  after {fmt(s['after'])} (n={s['after']['n']})  "
          f"paired delta {fmt(s['delta'])} (n={s['delta']['n']})")
    print(f"scorable completions: {t['parse_rate']['before']:.0%} -> {t['parse_rate']['after']:.0%}; "
          f"mean chars {t['mean_chars']['before']:.0f} -> {t['mean_chars']['after']:.0f}; "
          f"perplexity on human witness turns {t['perplexity']['before']:.2f} -> {t['perplexity']['after']:.2f}")
    print(f"\n{'trait':<6}{'weight':>7}  {'before':<26}{'after':<26}{'delta':<26}{'share':>6}  text")
    for tid, row in sorted(t["traits"].items(), key=lambda kv: -abs(kv[1]["contribution"])):
        print(f"{tid:<6}{row['weight']:>+7.3f}  {fmt(row['before']):<26}{fmt(row['after']):<26}"
              f"{fmt(row['delta']):<26}{row['share']:>6.0%}  {reward.trait_set[tid].text[:60]}")
    print(f"\nflags ({len(res.flags)}):")
    for f in res.flags:
        print(f"  step {f['step']} {f['kind']}: {f['message']}")
    (out / "bench_result.json").write_text(json.dumps({"wall_s": wall, **res.model_dump(mode="json")}, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
