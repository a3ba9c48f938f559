"""What the local reward sees of a dialogue: a fast MiniLM embedding of the judged speaker's turns plus
cheap style features from the raw text.

MiniLM's tokenizer is uncased and drops most typography, so lowercase texting, missing full stops, emoji
and terse turns, the strongest human cues in the Turing games, are invisible to it; :func:`style_features`
measures them from the raw turns. The embedding is :func:`traitlab.embed.encode` with the reward's own speed
settings (:class:`traitlab.embed.EncoderConfig`, stored with a fitted reward).

Every style feature saturates (shares lie in [0, 1], counts per turn go through ``tanh``, lengths through a
clipped ``log1p``), so ten emoji per turn or a 2,000-character append cannot push a feature, and through it a
trait, arbitrarily far from what the training data showed. Four features look at the dialogue's structure
rather than its style, so the edits a policy could game with are visible to the heads: how much of a turn the
other speaker had just said (:func:`echo_of_other`), one ending shared by every turn (:func:`shared_ending`),
how uniform the turn lengths are, and capitalised sentences with no mark between them
(:func:`unmarked_sentence_starts`). :func:`validity_measures` gives the numbers the
reward's validity gate compares with its training data (empty turns, letters, vocabulary, script, repetition,
parroting).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from traitlab.embed import EncoderConfig, encode
from traitlab.types import Dialogue

EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF\U0001F000-\U0001F2FF]|(?<!\w)[:;]-?[)(DPp](?!\w)")
TEXTING = frozenset({"lol", "haha", "lmao", "tbh", "idk", "rn", "u", "ur", "ya", "yeah", "nah", "omg", "ngl",
                     "btw", "imo", "gonna", "wanna", "kinda", "ok", "k"})

PUNCT = frozenset(".,!?'’\"“”:;-()&/%$@#*+=")
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def words_of(text: str) -> list[str]:
    """Lower-cased word tokens (letters, with inner apostrophes)."""
    return [w.lower() for w in WORD.findall(text)]


STYLE_FEATURES: tuple[str, ...] = (
    "log_chars_per_turn", "log_words_per_turn", "log_turns", "log_chars_total", "lowercase_letter_ratio",
    "turns_starting_lowercase", "turns_ending_punct", "turns_ending_question", "questions_per_turn",
    "exclamations_per_turn", "commas_per_turn", "periods_per_turn", "apostrophes_per_turn", "emoji_per_turn",
    "digit_ratio", "turns_up_to_3_words", "allcaps_word_ratio", "ellipses_per_turn", "texting_word_ratio",
    "turns_starting_uppercase", "mean_word_length", "empty_turns", "symbol_ratio", "echo_of_other",
    "shared_ending", "word_count_spread", "unmarked_sentence_starts",
)
"""Names of the columns :func:`style_features` returns, in order (stored with a fitted reward)."""


def target_text(d: Dialogue) -> str:
    """The judged speaker's turns as one text, one turn per line (what the encoder embeds)."""
    return "\n".join(d.target_turns)


def previous_messages(d: Dialogue) -> list[str]:
    """The other speakers' message right before each judged turn (``""`` where the judged speaker opens or
    speaks twice in a row)."""
    prev, last = [], ""
    for m in d.messages:
        if m.role == d.target_role:
            prev.append(last)
            last = ""
        else:
            last = m.content
    return prev


def echo_of_other(turns: Sequence[str], previous: Sequence[str]) -> float:
    """Mean share of a judged turn's words that the other speaker's message before it already said (1.0 = the
    turn parrots its prompt; an answer reuses a few of the question's words)."""
    shares = []
    for t, p in zip(turns, previous, strict=False):
        said, words = set(words_of(p)), words_of(t)
        if said and words:
            shares.append(sum(w in said for w in words) / len(words))
    return float(np.mean(shares)) if shares else 0.0


def shared_ending(turns: Sequence[str]) -> float:
    """Share of the turns that end on the dialogue's most common last token, when 3+ turns share one (an
    appended signature, tag or emoji run); 0 otherwise."""
    ends = [t.split()[-1].lower() for t in turns if t.split()]
    if len(ends) < 3:
        return 0.0
    top = Counter(ends).most_common(1)[0][1]
    return top / len(turns) if top >= 3 else 0.0


def unmarked_sentence_starts(turns: Sequence[str]) -> float:
    """Share of words inside a turn that start a sentence with a capital after a word with no mark (``well How
    about``): sentences written properly whose punctuation was taken away, which human texting rarely shows."""
    hits = total = 0
    for t in turns:
        words = t.split()
        for prev, w in pairwise(words):
            total += 1
            hits += w[0].isupper() and not w.startswith("I") and prev[-1].isalnum()
    return hits / total if total else 0.0


def style_features(turns: Sequence[str], previous: Sequence[str] | None = None) -> np.ndarray:
    """Texting-style measurements of one speaker's turns, in the order of :data:`STYLE_FEATURES`;
    ``previous`` (the other speaker's message before each turn, :func:`previous_messages`) gives the echo."""
    turns = [t.strip() for t in turns]
    n = max(len(turns), 1)
    text = "\n".join(turns)
    chars = Counter(text)  # character classes are counted over distinct characters: scoring stays cheap
    n_letters = sum(k for c, k in chars.items() if c.isalpha())
    n_visible = sum(k for c, k in chars.items() if not c.isspace())
    words = text.split()
    n_words = max(len(words), 1)

    def share(pred: Any) -> float:
        return sum(1 for t in turns if t and pred(t)) / n

    def per_turn(count: int) -> float:  # saturates: 0 -> 0, 1 per turn -> 0.76, 10 per turn -> 1.0
        return float(np.tanh(count / n))

    def log_len(x: float, cap: float) -> float:  # log1p clipped at a length beyond any real turn
        return float(np.log1p(min(x, cap)))

    values = [
        log_len(len(text) / n, 1000), log_len(len(words) / n, 200), log_len(len(turns), 60),
        log_len(len(text), 8000), sum(k for c, k in chars.items() if c.islower()) / max(n_letters, 1),
        share(lambda t: t[0].islower()), share(lambda t: t[-1] in ".!?"), share(lambda t: t.endswith("?")),
        per_turn(text.count("?")), per_turn(text.count("!")), per_turn(text.count(",")), per_turn(text.count(".")),
        per_turn(text.count("'") + text.count("’")), per_turn(len(EMOJI.findall(text))),
        sum(k for c, k in chars.items() if c.isdigit()) / max(len(text), 1), share(lambda t: len(t.split()) <= 3),
        sum(w.isupper() and len(w) > 1 for w in words) / n_words, per_turn(text.count("...")),
        sum(w.lower().strip(".,!?") in TEXTING for w in words) / n_words, share(lambda t: t[0].isupper()),
        float(np.tanh(np.mean([len(w) for w in words]) / 10)) if words else 0.0,
        sum(1 for t in turns if not any(c.isalnum() for c in t)) / n,
        sum(k for c, k in chars.items() if not (c.isspace() or c.isalnum() or c in PUNCT)) / max(n_visible, 1),
        echo_of_other(turns, previous or []), shared_ending(turns),
        float(np.tanh(np.std(counts) / (np.mean(counts) + 1))) if (counts := [len(t.split()) for t in turns]) else 0.0,
        unmarked_sentence_starts(turns),
    ]
    return np.asarray(values, dtype=np.float32)



VALIDITY_MEASURES: tuple[str, ...] = ("non_empty_turns", "letter_ratio", "known_word_ratio", "known_script_ratio",
                                      "distinct_turn_ratio", "compression_ratio", "own_words_ratio")
"""What the validity gate measures of the judged turns (each higher = more like real language)."""


def script_of(c: str) -> str:
    """The Unicode script block a letter belongs to, from its name (LATIN, CYRILLIC, CJK, ARABIC...)."""
    try:
        return unicodedata.name(c).split()[0]
    except ValueError:
        return "UNKNOWN"


def vocabulary(texts: Iterable[str], size: int = 6000) -> list[str]:
    """The ``size`` most frequent words of the training texts (what "known words" means to the gate)."""
    counts = Counter(w for t in texts for w in words_of(t))
    return [w for w, _ in counts.most_common(size)]


def validity_measures(turns: Sequence[str], vocab: frozenset[str], scripts: frozenset[str],
                      previous: Sequence[str] = (), echo: float | None = None) -> np.ndarray:
    """The gate's measurements of one speaker's turns, in the order of :data:`VALIDITY_MEASURES`.

    Empty turns, symbols instead of letters, keyboard mash or another language (few known words), another
    script, repetition (the same turn again and again, or text that compresses far better than language does)
    and parroting the other speaker (``previous``, see :func:`echo_of_other`; ``echo`` when already measured)
    each pull one measure towards 0.
    """
    turns = [t.strip() for t in turns]
    n = max(len(turns), 1)
    text = "\n".join(turns)
    chars = Counter(text)
    n_visible = sum(k for c, k in chars.items() if not c.isspace())
    letters = {c: k for c, k in chars.items() if c.isalpha()}
    n_letters = sum(letters.values())
    words = words_of(text)
    raw = text.encode("utf-8")
    compress = min(1.0, len(zlib.compress(raw, 9)) / max(len(raw), 1) * 2) if len(raw) > 200 else 1.0
    return np.asarray([
        sum(1 for t in turns if any(c.isalnum() for c in t)) / n,
        n_letters / max(n_visible, 1),
        sum(w in vocab for w in words) / len(words) if words else 0.0,
        sum(k for c, k in letters.items() if script_of(c) in scripts) / n_letters if n_letters else 0.0,
        len({t.lower() for t in turns if t}) / max(sum(1 for t in turns if t), 1) if len(turns) > 2 else 1.0,
        compress, 1.0 - (echo_of_other(turns, previous) if echo is None else echo),
    ], dtype=np.float32)


def features(dialogues: Sequence[Dialogue], cfg: EncoderConfig) -> np.ndarray:
    """``[embedding | style]`` per dialogue: shape ``(n, 384 + len(STYLE_FEATURES))``."""
    emb = encode([target_text(d) for d in dialogues], cfg)
    style = np.stack([style_features(d.target_turns, previous_messages(d)) for d in dialogues]) if dialogues else (
        np.zeros((0, len(STYLE_FEATURES)), dtype=np.float32))
    return np.hstack([emb, style])
