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
other speaker had just said (``echo_of_other``), one ending shared by every turn (``shared_ending``), how
uniform the turn lengths are, and capitalised sentences with no mark between them
(``unmarked_sentence_starts``, which the default reward ignores with the other punctuation counts of
:data:`PUNCTUATION_FEATURES`). :meth:`TurnBatch.validity` gives the numbers the reward's validity gate
compares with its training data (empty turns, letters, vocabulary, script, repetition, parroting).

A policy's reward is called on thousands of completions, so both are measured a batch at a time
(:class:`TurnBatch`): every distinct word once, every character through a table, no Python per word.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np

from traitlab.embed import EncoderConfig, encode, numbering
from traitlab.types import Dialogue

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
    "digit_ratio", "turns_up_to_2_words", "allcaps_word_ratio", "ellipses_per_turn", "texting_word_ratio",
    "turns_starting_uppercase", "mean_word_length", "empty_turns", "symbol_ratio", "echo_of_other",
    "shared_ending", "word_count_spread", "unmarked_sentence_starts",
)
"""Names of the columns :func:`style_features` returns, in order (stored with a fitted reward).

``turns_up_to_2_words`` steps at two words, a length the training cuts (``reward_edits.cut_short``: 1, 2, 4, 5
or 6 words) reach from both sides. It stepped at three, the one cut length the training leaves to the audit:
a three-word cut then maxed the feature while keeping much of an AI turn, and lifted up to 17% of held-out AI
transcripts above the median human (``bench/reward_audit.py`` over seeds 0-2; at two words, 5% at most)."""


PUNCTUATION_FEATURES: tuple[str, ...] = (
    "turns_ending_punct", "turns_ending_question", "questions_per_turn", "exclamations_per_turn", "commas_per_turn",
    "periods_per_turn", "apostrophes_per_turn", "ellipses_per_turn", "unmarked_sentence_starts")
"""The style features that count punctuation marks: deleting every mark, a restyling that says nothing of the
side, moves only these (and lengths a little), so a reward that ignores them is invariant to it
(``RewardConfig.ignore_style``)."""


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


# Character classes by code point, filled in as a batch meets characters it has not seen (pure functions of the
# character, so the tables are shared by every batch of the process).
LOWER, UPPER, ALPHA, DIGIT, ALNUM, SPACE, SYMBOL, EMOJI_CHAR = (np.uint8(1 << i) for i in range(8))
EMOJI_RANGES = ((0x1F300, 0x1FAFF), (0x2600, 0x27BF), (0x1F000, 0x1F2FF))
COUNTED_MARKS = "?!,.'’"  # each counted per turn
EMOTICON = re.compile(r"(?<!\w)[:;]-?[)(DPp](?!\w)")  # an emoji is a character in EMOJI_RANGES or one of these
_CLASS = np.zeros(0x110000, dtype=np.uint8)
_SCRIPT = np.zeros(0x110000, dtype=np.int16)
_SEEN = np.zeros(0x110000, dtype=bool)
_SCRIPT_NAMES: dict[str, int] = {}
_MARK = np.zeros(0x110000, dtype=np.uint8)  # 1 + the index in COUNTED_MARKS, 0 for any other character
_MARK[[ord(c) for c in COUNTED_MARKS]] = np.arange(1, len(COUNTED_MARKS) + 1)
_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)


def _classify(cps: np.ndarray) -> np.ndarray:
    """The class bits of each code point (and its script id in ``_SCRIPT``), classifying unseen ones once."""
    for cp in np.flatnonzero(np.bincount(cps[~_SEEN[cps]])).tolist():
        c = chr(cp)
        bits = 0
        for flag, test in ((LOWER, c.islower()), (UPPER, c.isupper()), (ALPHA, c.isalpha()), (DIGIT, c.isdigit()),
                           (ALNUM, c.isalnum()), (SPACE, c.isspace()),
                           (SYMBOL, not (c.isspace() or c.isalnum() or c in PUNCT)),
                           (EMOJI_CHAR, any(lo <= cp <= hi for lo, hi in EMOJI_RANGES))):
            bits |= int(flag) if test else 0
        _CLASS[cp] = bits
        if c.isalpha():
            _SCRIPT[cp] = _SCRIPT_NAMES.setdefault(script_of(c), len(_SCRIPT_NAMES))
        _SEEN[cp] = True
    return _CLASS[cps]


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class TurnBatch:
    """The judged turns of a batch of dialogues, measured together for the style features and the gate.

    Every character is classified by one table lookup, and every whitespace-separated chunk (a word with its
    punctuation) is measured once however often the batch repeats it, as is each distinct message of the other
    speaker (a GRPO prompt its completions share); a feature is then a sum over a turn's characters or chunks.
    Nothing a feature looks at crosses whitespace, so the sums equal measuring each dialogue's text on its own
    (``tests/test_reward.py`` checks this against plain per-dialogue code), at a cost that grows with the
    batch's distinct words rather than its length. Per-turn character counts are histograms of (turn, code)
    pairs, never a per-character matrix: such a matrix is tens of MB that a batch's first call has to fault in.
    """

    def __init__(self, turns: Sequence[Sequence[str]], previous: Sequence[Sequence[str]] | None = None) -> None:
        self.turns = [[t.strip() for t in ts] for ts in turns]
        n = self.n = len(self.turns)
        prev = list(previous) if previous is not None else [[] for _ in range(n)]
        flat = list(chain.from_iterable(self.turns))
        self.n_turns = np.fromiter(map(len, self.turns), dtype=np.int64, count=n)
        self.turn_dlg = np.repeat(np.arange(n), self.n_turns)
        t_len = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        ends = np.cumsum(t_len)
        starts = ends - t_len
        cps = np.append(_code_points("".join(flat)), 0)  # a sentinel of no class: empty turns index it safely
        cls = _classify(cps)
        cls[-1] = 0
        self._cps, self._cls, self._starts, self._ends, self.t_len = cps, cls, starts, ends, t_len

        # chunks of the judged turns, then of the other speaker's message before each turn (for the echo), each
        # distinct chunk numbered where it is first met: the judged turns' own chunks are 0..own-1
        index = numbering()
        parts = list(map(str.split, flat))
        self.n_chunks = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        self.occ = np.fromiter(map(index.__getitem__, chain.from_iterable(parts)), dtype=np.int64,
                               count=int(self.n_chunks.sum()))
        self.occ_turn = np.repeat(np.arange(len(flat)), self.n_chunks)
        own = len(index)
        said = [p for ts, ps in zip(self.turns, prev, strict=True)
                for p in [*ps[:len(ts)], *[""] * (len(ts) - len(ps))]]  # one message per turn, "" for none
        messages = numbering()  # a prompt that completions share, once
        turn_said = np.fromiter(map(messages.__getitem__, said), dtype=np.int64, count=len(said))
        said_parts = list(map(str.split, messages))
        n_said = np.fromiter(map(len, said_parts), dtype=np.int64, count=len(said_parts))
        said_occ = np.fromiter(map(index.__getitem__, chain.from_iterable(said_parts)), dtype=np.int64,
                               count=int(n_said.sum()))
        said_in = np.repeat(np.arange(len(messages)), n_said)
        keys = list(index)
        mine = keys[:own]  # what the style features measure; the other speaker's chunks only give words

        def per_chunk(values: Iterable[Any], dtype: Any = np.int64) -> np.ndarray:
            return np.fromiter(values, dtype=dtype, count=own)

        self.k_len = per_chunk(map(len, mine))
        self.k_allcaps = per_chunk((c.isupper() and len(c) > 1 for c in mine), bool)
        self.k_texting = per_chunk((c.lower().strip(".,!?") in TEXTING for c in mine), bool)
        self.k_ellipses = per_chunk(c.count("...") for c in mine)
        self.k_emoticons = per_chunk(len(EMOTICON.findall(c)) if ":" in c or ";" in c else 0 for c in mine)
        self.k_cap_start = per_chunk((c[0].isupper() and not c.startswith("I") for c in mine), bool)
        self.k_alnum_end = per_chunk((c[-1].isalnum() for c in mine), bool)
        self.k_lower = per_chunk(map(numbering().__getitem__, map(str.lower, mine)))
        self.k_words = list(map(words_of, keys))
        self.k_n_words = np.fromiter(map(len, self.k_words), dtype=np.int64, count=len(keys))
        word_id = numbering()
        self._k_word_ptr = np.concatenate([[0], np.cumsum(self.k_n_words)])
        self._k_word_ids = np.fromiter(map(word_id.__getitem__, chain.from_iterable(self.k_words)), dtype=np.int64,
                                       count=int(self._k_word_ptr[-1]))
        self._echo = self._echo_of_other(said_occ, said_in, turn_said)

    @classmethod
    def of(cls, dialogues: Sequence[Dialogue]) -> TurnBatch:
        """The batch of the dialogues' judged turns, each with the other speaker's message before it."""
        return cls([d.target_turns for d in dialogues], [previous_messages(d) for d in dialogues])

    # sums ------------------------------------------------------------------------------------------------
    @functools.cached_property
    def _char_turn(self) -> np.ndarray:
        """The turn of each character (the sentinel left out)."""
        return np.repeat(np.arange(len(self.t_len)), self.t_len)

    def _codes_per_turn(self, codes: np.ndarray, k: int) -> np.ndarray:
        """Per turn, how many of its characters carry each code ``0..k-1`` (``codes``: one per character):
        shape ``(turns, k)``, one histogram of (turn, code) pairs."""
        if not k:  # no characters at all (every turn empty)
            return np.zeros((len(self.t_len), 0), dtype=np.int64)
        keys = self._char_turn * k
        keys += codes
        return np.bincount(keys, minlength=len(self.t_len) * k).reshape(-1, k)

    def _chars_per_turn(self, mask: np.ndarray) -> np.ndarray:
        """Per turn, how many of its characters ``mask`` (one bool per character, sentinel last) marks."""
        return np.bincount(self._char_turn[mask[:-1]], minlength=len(self.t_len))

    @functools.cached_property
    def _class_counts(self) -> np.ndarray:
        """Per turn, the characters with each class bit: the histogram of the few class bytes a batch has,
        times their bits."""
        seen = np.flatnonzero(np.bincount(self._cls[:-1], minlength=256))
        compact = np.zeros(256, dtype=np.uint8)
        compact[seen] = np.arange(len(seen))
        return self._codes_per_turn(compact[self._cls[:-1]], len(seen)) @ _BITS[seen]

    @functools.cached_property
    def _mark_counts(self) -> dict[str, np.ndarray]:
        counts = self._codes_per_turn(_MARK[self._cps[:-1]], len(COUNTED_MARKS) + 1)
        return dict(zip(COUNTED_MARKS, counts[:, 1:].T, strict=True))

    def _has(self, flag: np.uint8) -> np.ndarray:
        return self._class_counts[:, int(flag).bit_length() - 1]

    def _char(self, c: str) -> np.ndarray:
        return self._mark_counts[c]

    def _per_dialogue(self, per_turn: np.ndarray) -> np.ndarray:
        return np.bincount(self.turn_dlg, weights=per_turn, minlength=self.n)

    @functools.cached_property
    def _letters(self) -> np.ndarray:
        """Letters per dialogue (style and gate both divide by them)."""
        return self._per_dialogue(self._has(ALPHA))

    @functools.cached_property
    def _visible(self) -> np.ndarray:
        """Characters that are not whitespace, per dialogue."""
        return self._per_dialogue(self.t_len - self._has(SPACE))

    def _chunk_sum(self, per_chunk: np.ndarray) -> np.ndarray:
        return np.bincount(self.turn_dlg[self.occ_turn], weights=per_chunk[self.occ], minlength=self.n)

    def _word_occurrences(self, occ: np.ndarray, turn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(word id, turn) of every word inside the given chunk occurrences (a chunk holds 0, 1 or more)."""
        counts = self.k_n_words[occ]
        first = np.cumsum(counts) - counts  # where each occurrence's words start in the output
        at = np.repeat(self._k_word_ptr[occ] - first, counts) + np.arange(int(counts.sum()))
        return self._k_word_ids[at], np.repeat(turn, counts)

    def _echo_of_other(self, said_occ: np.ndarray, said_in: np.ndarray, turn_said: np.ndarray) -> np.ndarray:
        """Per dialogue, the mean over its turns of the share of a turn's words that the other speaker's
        message before it already said (1.0 = the turn parrots its prompt; turns with no words, or no message
        before them, are left out). ``said_occ``: the chunk occurrences of the distinct messages, ``said_in``:
        the message of each, ``turn_said``: the message before each turn."""
        words, w_turn = self._word_occurrences(self.occ, self.occ_turn)
        said, s_msg = self._word_occurrences(said_occ, said_in)
        span = int(max(words.max(initial=0), said.max(initial=0))) + 1
        known = np.sort(s_msg * span + said)  # (message, word) pairs the other speaker said
        key = turn_said[w_turn] * span + words
        pos = np.minimum(np.searchsorted(known, key), max(len(known) - 1, 0))
        hit = known[pos] == key if len(known) else np.zeros(len(key), dtype=bool)
        n_t = len(self.n_chunks)
        n_words = np.bincount(w_turn, minlength=n_t)
        counted = (n_words > 0) & (np.bincount(s_msg, minlength=n_t)[turn_said] > 0)  # no more messages than turns
        share = np.where(counted, np.bincount(w_turn, weights=hit, minlength=n_t) / np.maximum(n_words, 1), 0.0)
        m = self._per_dialogue(counted.astype(float))
        return np.where(m > 0, self._per_dialogue(share) / np.maximum(m, 1), 0.0)

    # what the reward sees --------------------------------------------------------------------------------
    def style(self) -> np.ndarray:
        """Texting-style measurements of each dialogue's judged turns: shape ``(n, len(STYLE_FEATURES))``."""
        nt = self.n_turns
        n = np.maximum(nt, 1).astype(float)
        length = self._per_dialogue(self.t_len) + np.maximum(nt - 1, 0)
        n_chunks = self._per_dialogue(self.n_chunks)
        non_empty = self.t_len > 0
        first = np.where(non_empty, self._cls[self._starts], 0)
        last = np.where(non_empty, self._cps[self._ends - 1], 0)

        def share(per_turn_true: np.ndarray) -> np.ndarray:
            return self._per_dialogue((per_turn_true & non_empty).astype(float)) / n

        def per_turn(count: np.ndarray) -> np.ndarray:  # saturates: 0 -> 0, 1 per turn -> 0.76, 10 -> 1.0
            return np.tanh(count / n)

        def log_len(x: np.ndarray, cap: float) -> np.ndarray:  # log1p clipped at a length beyond any real turn
            return np.log1p(np.minimum(x, cap))

        emoji = self._per_dialogue(self._has(EMOJI_CHAR)) + self._chunk_sum(self.k_emoticons)
        mean_counts = n_chunks / n
        spread = np.sqrt(np.maximum(self._per_dialogue(self.n_chunks.astype(float) ** 2) / n - mean_counts ** 2, 0))
        last_turn_chunk = np.cumsum(self.n_chunks) - 1
        values = [
            log_len(length / n, 1000), log_len(n_chunks / n, 200), log_len(nt.astype(float), 60), log_len(length, 8000),
            self._per_dialogue(self._has(LOWER)) / np.maximum(self._letters, 1),
            share((first & LOWER) != 0), share(np.isin(last, [ord("."), ord("!"), ord("?")])),
            share(last == ord("?")), per_turn(self._per_dialogue(self._char("?"))),
            per_turn(self._per_dialogue(self._char("!"))), per_turn(self._per_dialogue(self._char(","))),
            per_turn(self._per_dialogue(self._char("."))),
            per_turn(self._per_dialogue(self._char("'") + self._char("’"))), per_turn(emoji),
            self._per_dialogue(self._has(DIGIT)) / np.maximum(length, 1), share(self.n_chunks <= 2),
            self._chunk_sum(self.k_allcaps) / np.maximum(n_chunks, 1), per_turn(self._chunk_sum(self.k_ellipses)),
            self._chunk_sum(self.k_texting) / np.maximum(n_chunks, 1), share((first & UPPER) != 0),
            np.where(n_chunks > 0, np.tanh(self._chunk_sum(self.k_len) / np.maximum(n_chunks, 1) / 10), 0.0),
            self._per_dialogue((self._has(ALNUM) == 0).astype(float)) / n,
            self._per_dialogue(self._has(SYMBOL)) / np.maximum(self._visible, 1),
            self._echo, self._shared_ending(last_turn_chunk),
            np.where(nt > 0, np.tanh(spread / (mean_counts + 1)), 0.0), self._unmarked_sentence_starts(),
        ]
        return np.stack(values, axis=1).astype(np.float32) if self.n else np.zeros((0, len(STYLE_FEATURES)),
                                                                                   dtype=np.float32)

    def _shared_ending(self, last_chunk: np.ndarray) -> np.ndarray:
        """Share of the turns that end on the dialogue's most common last chunk (lower-cased), when 3+ turns
        share one (an appended signature, tag or emoji run); 0 otherwise."""
        spoke = self.n_chunks > 0
        ends = self.k_lower[self.occ[last_chunk[spoke]]] if spoke.any() else np.zeros(0, dtype=np.int64)
        dlg = self.turn_dlg[spoke]
        top = np.zeros(self.n)
        if len(ends):
            span = int(self.k_lower.max()) + 1
            pairs = np.sort(dlg * span + ends)
            first = np.flatnonzero(np.diff(pairs, prepend=-1))  # where each (dialogue, ending) run starts
            np.maximum.at(top, pairs[first] // span, np.diff(np.append(first, len(pairs))))
        n_ends = np.bincount(dlg, minlength=self.n)
        return np.where((n_ends >= 3) & (top >= 3), top / np.maximum(self.n_turns, 1), 0.0)

    def _unmarked_sentence_starts(self) -> np.ndarray:
        """Share of chunks inside a turn that start a sentence with a capital after a chunk ending in a letter
        or digit (``well How about``): sentences written properly whose punctuation was taken away, which human
        texting rarely shows ("I" is a word, not a sentence start)."""
        same_turn = self.occ_turn[1:] == self.occ_turn[:-1]
        hit = same_turn & self.k_alnum_end[self.occ[:-1]] & self.k_cap_start[self.occ[1:]]
        dlg = self.turn_dlg[self.occ_turn[1:]] if len(self.occ) > 1 else np.zeros(0, dtype=np.int64)
        hits = np.bincount(dlg, weights=hit, minlength=self.n)
        pairs = self._per_dialogue(np.maximum(self.n_chunks - 1, 0))
        return np.where(pairs > 0, hits / np.maximum(pairs, 1), 0.0)

    def validity(self, vocab: frozenset[str], scripts: frozenset[str]) -> np.ndarray:
        """The gate's measurements, shape ``(n, len(VALIDITY_MEASURES))``, each higher = more like real
        language: empty turns, symbols instead of letters, keyboard mash or another language (few known
        words), another script, repetition (one turn again and again, or text that compresses far better than
        language does) and parroting the other speaker each pull one measure towards 0."""
        n = np.maximum(self.n_turns, 1)
        letters = self._letters
        names = sorted(_SCRIPT_NAMES, key=_SCRIPT_NAMES.get)
        allowed = np.array([name in scripts for name in names] or [False])
        in_script = ((self._cls & ALPHA) != 0) & allowed[_SCRIPT[self._cps]]
        distinct, compress = [], []
        for ts in self.turns:
            spoken = [t for t in ts if t]
            distinct.append(len({t.lower() for t in spoken}) / max(len(spoken), 1) if len(ts) > 2 else 1.0)
            raw = "\n".join(ts).encode("utf-8")
            compress.append(min(1.0, len(zlib.compress(raw, 9)) / len(raw) * 2) if len(raw) > 200 else 1.0)
        return np.stack([
            self._per_dialogue((self._has(ALNUM) > 0).astype(float)) / n,
            letters / np.maximum(self._visible, 1), self.known_word_ratio(vocab),
            np.where(letters > 0, self._per_dialogue(self._chars_per_turn(in_script)) / np.maximum(letters, 1), 0.0),
            np.array(distinct), np.array(compress), 1.0 - self._echo,
        ], axis=1).astype(np.float32) if self.n else np.zeros((0, len(VALIDITY_MEASURES)), dtype=np.float32)

    def known_word_ratio(self, vocab: frozenset[str]) -> np.ndarray:
        """Per dialogue, the share of its words (:func:`words_of`) that ``vocab`` holds (0 with no words)."""
        own = len(self.k_len)  # the judged turns' chunks (the rest are the other speaker's)
        known = np.fromiter((sum(map(vocab.__contains__, ws)) for ws in self.k_words[:own]), dtype=np.int64,
                            count=own)
        words = self._chunk_sum(self.k_n_words)
        return np.where(words > 0, self._chunk_sum(known) / np.maximum(words, 1), 0.0)


def style_features(turns: Sequence[str], previous: Sequence[str] | None = None) -> np.ndarray:
    """The style features of one speaker's turns (``previous``: the other speaker's message before each turn,
    :func:`previous_messages`, which the echo needs), in the order of :data:`STYLE_FEATURES`."""
    return TurnBatch([turns], [previous or []]).style()[0]


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


def features(dialogues: Sequence[Dialogue], cfg: EncoderConfig, batch: TurnBatch | None = None) -> np.ndarray:
    """``[embedding | style]`` per dialogue: shape ``(n, encoder width + len(STYLE_FEATURES))``; ``batch``: the
    dialogues' :class:`TurnBatch` when the caller measures it for the gate too."""
    batch = batch if batch is not None else TurnBatch.of(dialogues)
    return np.hstack([encode([target_text(d) for d in dialogues], cfg), batch.style()])
