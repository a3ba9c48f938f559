"""Run the whole traitlab loop on the support example with the CLI, step by step, timing each step.

    python examples/support/run.py --out /tmp/support        # stops at the first failing step
    python examples/support/run.py --out /tmp/support --keep-going

Each step is one ``traitlab`` command; ``<out>/steps.json`` records its command line, seconds, exit code and
the tail of its output, and the run exits non-zero when a step failed. Everything is offline: the judge is
the shipped ``local/smollm2-135m`` model, the ratings come from ``ratings.jsonl`` (a rubric standing in for a
judge) and the policy that is aligned is the same small model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIALOGUES, RATINGS, TRAITS = HERE / "dialogues.jsonl", HERE / "ratings.jsonl", HERE / "traits.json"
CONTRAST, PROPOSALS, PROMPTS = HERE / "contrast.yaml", HERE / "proposals.jsonl", HERE / "prompts.jsonl"
JUDGE = "local/smollm2-135m"


def align_config(out: Path) -> str:
    """A DPO run small enough for a CPU test: 4 prompts, 2 samples each, one optimiser step."""
    return f"""\
model: local:smollm2-135m
prompts: {PROMPTS}
heldout: {PROMPTS}
prompt_limit: 4
target_role: agent
reward: {out / "reward"}
num_samples: 2
min_gap_sd: 0.0
out_dir: {out / "align"}
store: {out / "traitlab.duckdb"}
seed: 0
sampling: {{max_new_tokens: 24, temperature: 1.0, top_p: 0.95, batch_size: 8}}
lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear, quantize: none}}
monitor: {{heldout_limit: 4, eval_limit: 2, every_steps: 0, capability_texts: {DIALOGUES}, capability_limit: 4,
          capability_role: agent, capability_label: best}}
trl: {{max_steps: 1, per_device_train_batch_size: 2, gradient_accumulation_steps: 1, max_length: 256,
      learning_rate: 1.0e-5, logging_steps: 1, save_steps: 1000}}
"""


def steps(out: Path) -> list[tuple[str, list[str]]]:
    store = ["--store", str(out / "traitlab.duckdb")]
    contrast = ["--contrast", str(CONTRAST)]
    suite = str(out / "suite.yaml")
    return [
        ("discover (given proposals)", ["discover", "--proposals", str(PROPOSALS), *contrast, "--merge-judge", "none",
                                        "--out", str(out / "traits_discovered.json"), *store]),
        # the offline judge proposes on one pair; what it writes joins the given proposals (a 135M model mostly
        # copies the answer format, which is dropped as an echo of the prompt and counted)
        ("discover (offline judge)", ["discover", "--pairs", str(DIALOGUES), "--proposals", str(PROPOSALS),
                                      *contrast, "--judge", JUDGE, "--limit", "1", "--merge-judge", "none",
                                      "--out", str(out / "traits_offline.json"), *store]),
        ("score (offline judge)", ["score", "--dialogues", str(DIALOGUES), "--traits", str(TRAITS), *contrast,
                                   "--judge", JUDGE, "--limit", "1", "--run-id", "support-score",
                                   "--out", str(out / "ratings_offline.jsonl"), *store]),
        ("validate", ["validate", "--dialogues", str(DIALOGUES), "--traits", str(TRAITS), "--ratings", str(RATINGS),
                      *contrast, "--out", str(out / "validation.csv"), *store]),
        ("fit", ["fit", "--ratings", str(RATINGS), "--dialogues", str(DIALOGUES), "--traits", str(TRAITS),
                 *contrast, "--bootstrap", "20", "--out", str(out / "aggregator.json"),
                 "--report", str(out / "fit_report.json"), *store]),
        ("distill (given ratings)", ["distill", "--dialogues", str(DIALOGUES), "--ratings", str(RATINGS),
                                     "--traits", str(TRAITS), "--positive", "best", "--target-role", "agent",
                                     "--judge", "support-rubric", "--out", str(out / "reward")]),
        ("reward score", ["reward", "score", "--reward", str(out / "reward"), "--dialogues", str(DIALOGUES),
                          "--target-role", "agent", "--out", str(out / "reward_scores.jsonl")]),
        ("eval (own suite)", ["eval", suite, "--model", JUDGE, "--run-id", "support-base", *store]),
        ("align (tiny DPO)", ["align", "dpo", "--config", str(out / "align.yaml")]),
        ("eval (aligned adapter)", ["eval", suite, "--model", str(out / "align" / "adapter"),
                                    "--run-id", "support-adapter", *store]),
        ("report", ["report", "support-base", "support-adapter", "--reward", str(out / "reward"),
                    "--out", str(out / "report" / "report.html"), *store]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for every output (created)")
    ap.add_argument("--keep-going", action="store_true", help="run the later steps after a failure")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for f in (HERE / "suite.yaml", DIALOGUES):  # the suite names its files relative to its own folder
        shutil.copy(f, out / f.name)
    (out / "align.yaml").write_text(align_config(out), encoding="utf-8")
    traitlab = [sys.executable, "-m", "traitlab.cli"]
    record, failed = [], 0
    for name, cmd in steps(out):
        t0 = time.perf_counter()
        proc = subprocess.run([*traitlab, *cmd], capture_output=True, text=True, env=os.environ.copy())
        seconds = time.perf_counter() - t0
        tail = (proc.stdout + proc.stderr)[-2000:]
        record.append({"step": name, "command": "traitlab " + " ".join(cmd), "seconds": round(seconds, 1),
                       "rc": proc.returncode, "output": tail})
        print(f"[{'ok' if proc.returncode == 0 else 'FAILED'}] {name}: {seconds:.1f}s", flush=True)
        if proc.returncode != 0:
            failed += 1
            print(tail, file=sys.stderr)
            if not args.keep_going:
                break
    (out / "steps.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
