"""DPO and GRPO step throughput (tokens/s) and peak GPU memory of a SmolLM2-135M-shaped policy, in bf16.

Self-contained apart from torch/transformers/trl/peft (no network, no model files): the policy has
SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate 1536, vocab 49152) with
random weights, and the tokenizer is a word-level one built here whose every word is one token, so the
token counts are exact. Training is what ``traitlab align`` does: a LoRA adapter (r 16, all linear layers),
the adapter-free base as the DPO/GRPO reference.

    python bench/align_gpu.py            # on one GPU, ~4-5 minutes (GRPO's generation dominates)
    python bench/align_gpu.py --smoke    # tiny shapes, 2 steps, CPU: checks that the script works

A machine without trl/datasets (the project's GPU image has torch, transformers, peft, accelerate) gets them
as wheels: ``pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl trl==1.16.0
datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pyarrow==26.0.1`` here, then there
``pip install --no-index --no-deps --target /tmp/site .whl/*.whl; PYTHONPATH=/tmp/site python3 bench/align_gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from datasets import Dataset
from peft import LoraConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

SPECIALS = ["<pad>", "<unk>", "<eos>"]


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer with exactly ``vocab_size`` tokens: w3, w4, ... are ordinary words."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    return tok


def words(rng: random.Random, n: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(n))


class StepClock(TrainerCallback):
    """Wall time at the end of every optimizer step (CUDA-synchronised)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def throughput(trainer, clock: StepClock, warmup: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Tokens/s over the steps after ``warmup``, from TRL's cumulative ``num_tokens`` log."""
    logs = [h for h in trainer.state.log_history if "num_tokens" in h]
    tokens = logs[-1]["num_tokens"] - logs[warmup - 1]["num_tokens"]
    seconds = clock.ends[-1] - clock.ends[warmup - 1]
    return {"tokens_per_s": tokens / seconds, "s_per_step": seconds / (len(clock.ends) - warmup),
            "tokens_per_step": tokens / (len(clock.ends) - warmup), "steps_timed": len(clock.ends) - warmup}


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 steps, CPU-friendly")
    a = ap.parse_args()
    gpu = torch.cuda.is_available() and not a.smoke
    if a.smoke:
        shape = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2}
        n = {"warmup": 1, "steps": 2, "batch": 2, "prompt": 32, "answer": 16, "gens": 2, "completion": 8}
    else:
        shape = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                 "num_attention_heads": 9, "num_key_value_heads": 3}
        n = {"warmup": 2, "steps": 12, "batch": 8, "prompt": 512, "answer": 256, "gens": 8, "completion": 256}
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    print(f"device: {device}; torch {torch.__version__}; shape {shape}; sizes {n}", flush=True)
    tok = word_tokenizer(shape["vocab_size"])
    config = LlamaConfig(**shape, max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    common = {"max_steps": n["steps"], "per_device_train_batch_size": n["batch"], "learning_rate": 1e-5,
              "bf16": gpu, "gradient_checkpointing": False, "logging_steps": 1, "save_strategy": "no",
              "report_to": [], "disable_tqdm": True, "dataloader_pin_memory": gpu}
    rng = random.Random(0)
    out: dict[str, object] = {"device": device, "dtype": "bf16" if gpu else "fp32", "lora_r": 16}
    tmp = tempfile.mkdtemp(prefix="align-bench-")

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    rows = n["steps"] * n["batch"]
    dpo_data = Dataset.from_list([{"prompt": words(rng, n["prompt"], shape["vocab_size"]),
                                   "chosen": " " + words(rng, n["answer"], shape["vocab_size"]),
                                   "rejected": " " + words(rng, n["answer"], shape["vocab_size"])}
                                  for _ in range(rows)])
    clock = StepClock()
    args = DPOConfig(output_dir=f"{tmp}/dpo", max_length=n["prompt"] + n["answer"] + 1, **common)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dpo_data, processing_class=tok, peft_config=lora,
                         callbacks=[clock])
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    out["dpo"] = {**throughput(trainer, clock, n["warmup"]), "wall_s": time.perf_counter() - t0,
                  "peak_gib": peak_gib(), "batch_pairs": n["batch"],
                  "seq": f"{n['prompt']} prompt + {n['answer']} chosen/rejected"}
    print("DPO ", json.dumps(out["dpo"]), flush=True)
    del trainer, model
    if gpu:
        torch.cuda.empty_cache()

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    grpo_data = Dataset.from_list([{"prompt": words(rng, n["prompt"] // 2, shape["vocab_size"])}
                                   for _ in range(rows)])
    clock = StepClock()
    gargs = GRPOConfig(output_dir=f"{tmp}/grpo", num_generations=n["gens"], max_completion_length=n["completion"],
                       beta=0.04, **{**common, "per_device_train_batch_size": n["gens"] * 2})

    def length_reward(completions, **_):  # type: ignore[no-untyped-def]
        return [float(len(c.split())) for c in completions]

    trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], args=gargs, train_dataset=grpo_data,
                          processing_class=tok, peft_config=lora, callbacks=[clock])
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    step_times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    out["grpo"] = {**throughput(trainer, clock, n["warmup"]), "wall_s": time.perf_counter() - t0,
                   "peak_gib": peak_gib(), "completions_per_step": n["gens"] * 2,
                   "seq": f"{n['prompt'] // 2} prompt + <= {n['completion']} completion",
                   "mean_completion_len": trainer.state.log_history[-2].get("completions/mean_length"),
                   "trl_step_time_s": sum(step_times[n["warmup"]:]) / max(1, len(step_times) - n["warmup"])}
    print("GRPO", json.dumps(out["grpo"]), flush=True)
    print("RESULT", json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
