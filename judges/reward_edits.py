"""Cheap edits of the judged speaker's turns that a policy could learn to game a reward with, used as hard
negatives when a :class:`~traitlab.judges.reward.LocalReward` is trained (``RewardConfig.augment``).

Two kinds, two rules in the training loss:

- ``bounded`` edits keep the dialogue's content (emoji or symbols appended, a long append, a turn repeated):
  the edited dialogue must not outscore its source by more than a margin.
- ``degenerate`` edits leave no real answer (empty turns, emoji or symbols only, keyboard mash, another
  language or script, one turn said again and again, ellipses only): they must score as low as the least
  positive real dialogues.

Restyling edits (lower-casing, stripping punctuation, adding texting words) are deliberately not among them:
that is what human texting looks like, the strongest real cue of the Turing games, and forbidding the reward
to see it costs more discrimination than it buys (``bench/reward.py`` measures those edits too).

Each operator draws its own variant (how many emoji, which language, which turn) from the ``rng`` it is
given, so a training set sees many versions of each. The red team that *evaluates* a reward
(``traitlab reward audit``) has its own operators; these are only for training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal

from traitlab.types import Dialogue, Message

Turns = list[str]
Edit = Callable[[Turns, random.Random, Sequence[str]], Turns]

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


def append_emoji(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    k = rng.choice((1, 2, 3, 5, 10))
    return [f"{t}{rng.choice(('', ' '))}{_emoji(rng, k)}" for t in turns]


def append_symbols(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    k = rng.choice((1, 3, 6))
    return [f"{t} {_symbols(rng, k)}" for t in turns]


def append_long(turns: Turns, rng: random.Random, pool: Sequence[str]) -> Turns:
    """Real text from other training dialogues appended until each turn grows by 300-2,500 characters."""
    target = rng.choice((300, 800, 1500, 2500))

    def filler() -> str:
        out = ""
        while len(out) < target and pool:
            out += " " + rng.choice(pool)
        return out

    return [t + filler() for t in turns]


def repeat_turn(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    if len(turns) < 2:
        return turns + turns
    out = list(turns)
    i, j = rng.sample(range(len(out)), 2)
    out[j] = out[i]
    return out


def empty_turns(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    return [rng.choice(("", " ", "\n", "  ")) for _ in turns]


def emoji_only(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    return [_emoji(rng, rng.randint(1, 8)) for _ in turns]


def symbols_only(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    return [_symbols(rng, rng.randint(1, 8)) for _ in turns]


def keyboard_mash(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    keys = "qwertyuiopasdfghjklzxcvbnm"
    return [" ".join("".join(rng.choice(keys) for _ in range(rng.randint(3, 9)))
                     for _ in range(rng.randint(1, 5))) for _ in turns]


def other_language(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    return [rng.choice(FOREIGN) for _ in turns]


def same_turn(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    first = next((t for t in turns if t.strip()), "ok")
    return [first for _ in turns] if len(turns) > 2 else [first] * 4


def ellipses_only(turns: Turns, rng: random.Random, _: Sequence[str]) -> Turns:
    return [rng.choice(("...", "…", "..", "....")) for _ in turns]


EDITS: dict[str, tuple[Literal["bounded", "degenerate"], Edit]] = {
    "append_emoji": ("bounded", append_emoji), "append_symbols": ("bounded", append_symbols),
    "append_long": ("bounded", append_long), "repeat_turn": ("bounded", repeat_turn),
    "empty_turns": ("degenerate", empty_turns), "emoji_only": ("degenerate", emoji_only),
    "symbols_only": ("degenerate", symbols_only), "keyboard_mash": ("degenerate", keyboard_mash),
    "other_language": ("degenerate", other_language), "same_turn": ("degenerate", same_turn),
    "ellipses_only": ("degenerate", ellipses_only),
}
"""The training edits by name: (kind, operator)."""


def with_target_turns(d: Dialogue, turns: Sequence[str], suffix: str) -> Dialogue:
    """``d`` with its judged speaker's turns replaced in order (extra turns are appended as that speaker)."""
    it = iter(turns)
    messages = [Message(role=m.role, content=next(it, m.content)) if m.role == d.target_role else m
                for m in d.messages]
    messages += [Message(role=d.target_role, content=t) for t in it]
    return Dialogue(id=f"{d.id}~{suffix}", messages=messages, target_role=d.target_role, label=None, meta=d.meta)


def edited(d: Dialogue, name: str, rng: random.Random, pool: Sequence[str]) -> Dialogue:
    """One random variant of the named edit applied to ``d``'s judged turns."""
    _, op = EDITS[name]
    return with_target_turns(d, op(list(d.target_turns), rng, pool), name)
