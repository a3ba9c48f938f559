"""What the local reward sees of a dialogue: a fast MiniLM embedding of the judged speaker's turns plus
cheap style features from the raw text.

MiniLM's tokenizer is uncased and drops most typography, so lowercase texting, missing full stops, emoji
and terse turns, the strongest human cues in the Turing games, are invisible to it; :func:`style_features`
measures them from the raw turns. The embedding is :func:`traitlab.embed.encode` with the reward's own speed
settings (:class:`traitlab.embed.EncoderConfig`, stored with a fitted reward).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from traitlab.embed import EncoderConfig, encode
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


def features(dialogues: Sequence[Dialogue], cfg: EncoderConfig) -> np.ndarray:
    """``[embedding | style]`` per dialogue: shape ``(n, 384 + len(STYLE_FEATURES))``."""
    emb = encode([target_text(d) for d in dialogues], cfg)
    style = np.stack([style_features(d.target_turns) for d in dialogues]) if dialogues else (
        np.zeros((0, len(STYLE_FEATURES)), dtype=np.float32))
    return np.hstack([emb, style])
