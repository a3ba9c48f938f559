"""Two-process alignment on CPU: ``accelerate launch --multi_gpu --num_processes 2`` (torchrun; without CUDA the
processes join over gloo) runs a tiny ``align dpo`` and ``align grpo`` through the real CLI, then reports what
each rank did and what the store holds. (accelerate's ``--cpu`` flag alone starts a single process.)

It builds a randomly initialised Llama-shaped policy (hidden 64, 2 layers, MiniLM's WordPiece tokenizer) in a
temporary folder, 8 training and 4 held-out prompts, and for each kind prints: wall time, the prompts each rank
sampled (DPO) or completions each rank scored (GRPO), the pairs every rank trained on, whether the monitor logs
of both ranks are identical, and what the main process stored (runs, artifacts; the other rank writes none).

    python bench/align_multiproc.py [--steps 2] [--keep DIR]

On GPUs or nodes the command is the same with accelerate's own config (see alignment/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from traitlab.alignment.tiny import save_tiny_policy


def prompts(path: Path, n: int, tag: str) -> Path:
    path.write_text("".join(json.dumps({"id": f"{tag}{i}", "prompt": f"tell me about day {i} of the trip"}) + "\n"
                            for i in range(n)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, work: Path, model: Path, steps: int) -> dict:
    common = {"heldout": str(prompts(work / "heldout.jsonl", 4, "h")), "target_role": "assistant",
              "lora": {"r": 4, "alpha": 8}, "sampling": {"max_new_tokens": 12, "batch_size": 16},
              "monitor": {"heldout_limit": 4, "eval_limit": 4, "every_steps": 1}}
    if kind == "dpo":
        cfg = {**common, "num_samples": 3, "min_gap_sd": 0.0,
               "trl": {"per_device_train_batch_size": 2, "max_length": 64, "save_strategy": "no"}}
    else:
        cfg = {**common, "trl": {"per_device_train_batch_size": 4, "num_generations": 4,
                                 "max_completion_length": 12, "logging_steps": 1, "save_strategy": "no"}}
    (work / f"{kind}.yaml").write_text(yaml.safe_dump(cfg))
    out, store = work / f"{kind}-out", work / f"{kind}.duckdb"
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "traitlab.cli", "align",
           kind, "--config", str(work / f"{kind}.yaml"), "--model", str(model), "--prompts",
           str(prompts(work / "train.jsonl", 8, "q")), "--out", str(out), "--steps", str(steps), "--store", str(store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{kind}: accelerate launch failed ({proc.returncode}):\n{proc.stderr[-12000:]}")
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    from traitlab.store import Store

    with Store(store) as st:
        runs = st.sql("SELECT run_id, status FROM runs")
        artifacts = sorted(r[0] for r in st.sql("SELECT DISTINCT name FROM artifacts"))
        pairs_rows = (st.artifact(runs[0][0], "pairs_summary") if kind == "dpo" else None)
    return {"kind": kind, "wall_s": wall, "ranks": ranks, "runs": runs, "artifacts": artifacts,
            "pairs_summary": pairs_rows, "cmd": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="leave the work folder here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traitlab-mp-"))
    try:
        save_tiny_policy(work / "tiny")
        for kind in ("dpo", "grpo"):
            r = launch(kind, work, work / "tiny", args.steps)
            a, b = r["ranks"]
            print(f"\n== align {kind}: 2 processes (gloo, CPU), {args.steps} step(s): {r['wall_s']:.1f} s wall")
            for x in r["ranks"]:
                did = (f"sampled {len(x.get('sampled_prompts', []))} prompts {x.get('sampled_prompts')}, "
                       f"gathered {x.get('gathered_prompts')}, trained on {x['n_pairs']} pairs"
                       if kind == "dpo" else f"scored {x.get('scored_completions', 0)} completions")
                print(f"  rank {x['rank']}: {did}; wrote store: {x['wrote_store']}; run {x['run_id']}")
            shared = [e for e in a["monitor_log"] if e["step"] in {x["step"] for x in b["monitor_log"]}]
            print(f"  monitor snapshots identical on both ranks: {shared == b['monitor_log']} (rank 0 steps "
                  f"{[e['step'] for e in a['monitor_log']]}, rank 1 steps {[e['step'] for e in b['monitor_log']]})")
            print(f"  store: runs {r['runs']}; artifacts {r['artifacts']}"
                  + (f"; pairs_summary {r['pairs_summary']}" if r["pairs_summary"] else ""))
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
