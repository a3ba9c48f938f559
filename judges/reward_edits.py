"""Cheap edits of the judged speaker's turns that a policy could learn to game a reward with, used as hard
negatives when a :class:`~traitlab.judges.reward.LocalReward` is trained (``RewardConfig.augment``).

Two kinds, two rules in the training loss:

- ``bounded`` edits keep the dialogue's content (emoji, symbols or a texting tag appended to every turn, a long
  append, a turn repeated, turns cut short, punctuation dropped, typing slips, words in capitals): the edited
  dialogue must not outscore its source by more than a margin. The margin lets a real restyling move the score a
  little (dropped punctuation, short turns and slips are real cues of human texting) but not carry a transcript
  across the sides. An edited copy chains up to ``RewardConfig.edit_chain`` of them, as the audit's search composes
  its operators.
- ``degenerate`` edits leave no real answer (empty turns, emoji or symbols only, keyboard mash, another
  language or script, one turn said again and again, ellipses only, the other speaker's words parroted):
  they must score as low as the least positive real dialogues.

Each operator draws its own variant (how many emoji, which language, which turn, where to cut) from the
``rng`` it is given, so a training set sees many versions of each. The red team that *evaluates* a reward
(``traitlab reward audit``) has its own operators with other strings (its exact edits, such as three words
kept or " hahaha" appended, are never drawn here), so an audit measures generalisation, not memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from traitlab.judges.reward_features import previous_messages
from traitlab.types import Dialogue, Message

Turns = list[str]


@dataclass(frozen=True)
class Source:
    """What an edit may draw on besides the turns: real text of other training dialogues (``pool``) and the
    other speaker's message before each judged turn (``previous``)."""

    pool: Sequence[str]
    previous: Sequence[str]


Edit = Callable[[Turns, random.Random, Source], Turns]

EMOJI_POOL = "😂🤣😅😊😍🙏👍🔥💯😎🥲😭🤔🙃😜✨🎉❤️👀💀"
SYMBOL_POOL = "★☆✓✔♥♦♣♠☀☁☂☺✿❀→←↑↓■□●○◆◇※§¶†‡"
# Short replies in other languages and scripts, written for traitlab.
FOREIGN = (
    "la verdad no sé qué decirte, depende del día", "estoy en casa ahora mismo, un poco cansado",
    "je ne sais pas trop, peut-être demain", "ça dépend, j'ai beaucoup de travail cette semaine",
    "ich weiß es nicht genau, vielleicht später", "heute war ein langer Tag bei der Arbeit",
    "não sei, acho que sim, talvez amanhã", "sono a casa, fuori piove da stamattina",
    "я не знаю, может быть завтра", "сегодня был очень длинный день",
    "わからないけど、たぶん明日かな", "今日はちょっと疲れています",
    "لا أعرف، ربما غدا", "δεν ξέρω, ίσως αύριο", "나는 잘 모르겠어요, 아마 내일", "我不太清楚，也许明天吧",
)


def _emoji(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(EMOJI_POOL.replace("\ufe0f", "")) for _ in range(k))


def _symbols(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(SYMBOL_POOL) for _ in range(k))


def append_emoji(turns: Turns, rng: random.Random, _: Source) -> Turns:
    k = rng.choice((1, 2, 3, 5, 10))
    return [f"{t}{rng.choice(('', ' '))}{_emoji(rng, k)}" for t in turns]


def append_symbols(turns: Turns, rng: random.Random, _: Source) -> Turns:
    k = rng.choice((1, 3, 6))
    return [f"{t} {_symbols(rng, k)}" for t in turns]


def append_long(turns: Turns, rng: random.Random, src: Source) -> Turns:
    """Real text from other training dialogues appended until each turn grows by 300-2,500 characters."""
    target = rng.choice((300, 800, 1500, 2500))

    def filler() -> str:
        out = ""
        while len(out) < target and src.pool:
            out += " " + rng.choice(src.pool)
        return out

    return [t + filler() for t in turns]


def repeat_turn(turns: Turns, rng: random.Random, _: Source) -> Turns:
    if len(turns) < 2:
        return turns + turns
    out = list(turns)
    i, j = rng.sample(range(len(out)), 2)
    out[j] = out[i]
    return out


def empty_turns(turns: Turns, rng: random.Random, _: Source) -> Turns:
    return [rng.choice(("", " ", "\n", "  ")) for _ in turns]


def emoji_only(turns: Turns, rng: random.Random, _: Source) -> Turns:
    return [_emoji(rng, rng.randint(1, 8)) for _ in turns]


def symbols_only(turns: Turns, rng: random.Random, _: Source) -> Turns:
    return [_symbols(rng, rng.randint(1, 8)) for _ in turns]


def keyboard_mash(turns: Turns, rng: random.Random, _: Source) -> Turns:
    keys = "qwertyuiopasdfghjklzxcvbnm"
    return [" ".join("".join(rng.choice(keys) for _ in range(rng.randint(3, 9)))
                     for _ in range(rng.randint(1, 5))) for _ in turns]


def other_language(turns: Turns, rng: random.Random, _: Source) -> Turns:
    return [rng.choice(FOREIGN) for _ in turns]


def same_turn(turns: Turns, rng: random.Random, _: Source) -> Turns:
    first = next((t for t in turns if t.strip()), "ok")
    return [first for _ in turns] if len(turns) > 2 else [first] * 4


def ellipses_only(turns: Turns, rng: random.Random, _: Source) -> Turns:
    return [rng.choice(("...", "…", "..", "....")) for _ in turns]


TAGS = ("lol", "lmao", "haha", "hehe", "lolol", "xd", "ngl", "tbh", "jk", "lmaooo", "rofl", "ahah")


def append_tag(turns: Turns, rng: random.Random, _: Source) -> Turns:
    """One texting tag or laugh on every turn (a signature a policy could learn)."""
    tag = rng.choice(TAGS)
    sep = rng.choice((" ", " ", ", ", "... "))
    return [f"{t}{sep}{tag}" for t in turns]


def cut_short(turns: Turns, rng: random.Random, _: Source) -> Turns:
    """Every turn cut to its first k words (k in 1, 2, 4, 5, 6) or to its first few characters, mid-word."""
    k = rng.choice((1, 2, 4, 5, 6, 0))
    if k:
        return [" ".join(t.split()[:k]) for t in turns]
    n = rng.randint(6, 30)
    return [t[:n] for t in turns]


def drop_punctuation(turns: Turns, rng: random.Random, _: Source) -> Turns:
    """Punctuation removed: 2 to all 10 of . , ! ? ' ’ ; : - ", sometimes lowercased (the audit's strip_punct,
    which removes every Unicode punctuation mark, pushed AI transcripts above the median human while only up to
    six marks were drawn)."""
    marks = set(rng.sample(".,!?'’;:-\"", rng.randint(2, 10)))
    lower = rng.random() < 0.5
    out = ["".join(c for c in t if c not in marks) for t in turns]
    return [t.lower() if lower else t for t in out]


def misspell(turns: Turns, rng: random.Random, _: Source) -> Turns:
    """Typing slips: in one word of 2 to 6 (of over two letters) a letter dropped or doubled (the audit's
    ``typos`` swaps two letters; its long appends with typos lifted AI transcripts while no slip was drawn)."""
    rate = 1 / rng.randint(2, 6)

    def slip(w: str) -> str:
        if len(w) < 3 or rng.random() >= rate:
            return w
        j = rng.randrange(1, len(w))
        return w[:j] + w[j + 1:] if rng.random() < 0.5 else w[:j] + w[j - 1] + w[j:]

    return [" ".join(slip(w) for w in t.split(" ")) for t in turns]


def shout(turns: Turns, rng: random.Random, _: Source) -> Turns:
    """Capitals: each word upper-cased with probability 0.5-0.9 (whole turns stay mixed, unlike a plain
    ``upper()``)."""
    p = rng.choice((0.5, 0.7, 0.9))
    return [" ".join(w.upper() if rng.random() < p else w for w in t.split(" ")) for t in turns]


def parrot(turns: Turns, rng: random.Random, src: Source) -> Turns:
    """The other speaker's message before each turn said back: whole, its first words, or with a word added."""
    mode = rng.choice(("whole", "start", "plus"))
    out = []
    for t, p in zip(turns, src.previous, strict=False):
        words = p.split()
        if not words:
            out.append(t)
        elif mode == "start":
            out.append(" ".join(words[:max(2, len(words) * 2 // 3)]))
        elif mode == "plus":
            out.append(f"{p} {rng.choice(('yes', 'no', 'maybe', 'right', 'same'))}")
        else:
            out.append(p.lower() if rng.random() < 0.5 else p)
    return out + turns[len(out):]


EDITS: dict[str, tuple[Literal["bounded", "degenerate"], Edit]] = {
    "append_emoji": ("bounded", append_emoji), "append_symbols": ("bounded", append_symbols),
    "append_long": ("bounded", append_long), "repeat_turn": ("bounded", repeat_turn),
    "empty_turns": ("degenerate", empty_turns), "emoji_only": ("degenerate", emoji_only),
    "symbols_only": ("degenerate", symbols_only), "keyboard_mash": ("degenerate", keyboard_mash),
    "other_language": ("degenerate", other_language), "same_turn": ("degenerate", same_turn),
    "ellipses_only": ("degenerate", ellipses_only), "append_tag": ("bounded", append_tag),
    "cut_short": ("bounded", cut_short), "drop_punctuation": ("bounded", drop_punctuation),
    "parrot": ("degenerate", parrot), "shout": ("bounded", shout), "misspell": ("bounded", misspell),
}
"""The training edits by name: (kind, operator)."""


TARGETED: tuple[str, ...] = ("append_emoji", "append_long", "append_symbols", "append_tag", "cut_short",
                              "drop_punctuation", "misspell", "repeat_turn", "shout")
"""The edits a LocalReward trains out by default: the bounded ones, the cheap tricks the audit found lifting
AI transcripts. The degenerate ones are left to the validity gate: as hard negatives they cost about 0.15
pairwise accuracy on HAL (``bench/reward.py`` measures both)."""


def with_target_turns(d: Dialogue, turns: Sequence[str], suffix: str) -> Dialogue:
    """``d`` with its judged speaker's turns replaced in order (extra turns are appended as that speaker)."""
    it = iter(turns)
    messages = [Message(role=m.role, content=next(it, m.content)) if m.role == d.target_role else m
                for m in d.messages]
    messages += [Message(role=d.target_role, content=t) for t in it]
    return Dialogue(id=f"{d.id}~{suffix}", messages=messages, target_role=d.target_role, label=None, meta=d.meta)


def edited(d: Dialogue, name: str, rng: random.Random, pool: Sequence[str]) -> Dialogue:
    """One random variant of the named edit applied to ``d``'s judged turns (``pool``: real turns of other
    training dialogues, for the long appends)."""
    _, op = EDITS[name]
    return with_target_turns(d, op(list(d.target_turns), rng, Source(pool, previous_messages(d))), name)
