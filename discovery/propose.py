"""Proposal: a judge sees a contrastive pair (one dialogue of each side of a :class:`Contrast`), guesses
which is the positive side and says which general traits set that side apart.

The labels are known here and hidden from the judge: the two transcripts are shown as "A" and "B" in an
order drawn per pair from ``seed`` (recorded), or in both orders to measure position bias. Every verdict
is kept with ``verdict_correct``, so the proposals double as a judge-accuracy measurement (HAL's
``proposals.jsonl`` shape, plus the order information). A statement that only repeats the prompt (small
models copy the instructions or the answer format) is dropped and counted in ``rejected``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

from traitlab.contrast import Contrast
from traitlab.prompts import fence, fenced_spans, load_template
from traitlab.types import DialoguePair

if TYPE_CHECKING:
    from traitlab.judges.client import JudgeClient

PROMPTS = Path(__file__).parent / "prompts"
Side = Literal["A", "B"]
Order = Literal["positive_first", "negative_first"]
Statement = Annotated[str, Field(min_length=12, max_length=100)]
"""Bounds a constrained decoder can enforce: no empty or runaway statements."""


class ProposalAnswer(BaseModel):
    """What the proposing judge returns for one pair."""

    positive: Side = Field(description="which conversation's judged speaker is the positive side")
    confidence: int = Field(ge=0, le=100, description="confidence in that pick, 0-100")
    traits: list[Statement] = Field(min_length=3, max_length=5,
                                    description="3-5 short, general statements of what sets the positive side apart")
    negative_tells: list[Statement] = Field(default_factory=list, max_length=2,
                                            description="optional: what marked the negative side")


class ProposalRecord(BaseModel):
    """One proposal call and its outcome; ``statements`` is empty and ``error`` set when the call failed."""

    group: str
    proposer: str
    order: Order
    shown_a: str
    shown_b: str
    positive_side: Side
    picked: Side | None = None
    verdict_correct: bool | None = None
    confidence: int | None = None
    statements: list[str] = Field(default_factory=list)
    negative_tells: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list, description="statements dropped as echoes of the prompt")
    prompt_version: str
    call_id: str | None = None
    error: str | None = None


def pair_orders(pair: DialoguePair, seed: int, both_orders: bool) -> list[Order]:
    """The order(s) a pair is shown in: both, or one drawn from ``seed`` and the pair id (stable per pair,
    whatever the other pairs are)."""
    if both_orders:
        return ["positive_first", "negative_first"]
    return [random.Random(f"{seed}:{pair.id}").choice(("positive_first", "negative_first"))]


def _sides(pair: DialoguePair, contrast: Contrast):
    pos, neg = pair.side(contrast.positive), pair.side(contrast.negative)
    if pos is None or neg is None:
        raise ValueError(f"pair {pair.id!r} lacks a {contrast.positive!r} or a {contrast.negative!r} dialogue "
                         f"(labels {pair.a.label!r}, {pair.b.label!r})")
    return pos, neg


def proposal_messages(pair: DialoguePair, order: Order, contrast: Contrast
                      ) -> tuple[list[dict[str, str]], str, str, str]:
    """Messages for one pair in one order, with the prompt version and the dialogue ids shown as A and B."""
    pos, neg = _sides(pair, contrast)
    first, second = (pos, neg) if order == "positive_first" else (neg, pos)
    template = load_template(PROMPTS, "propose")
    messages = template.render(target=pos.target_role, **contrast.for_prompt(),
                               dialogue_a=fence(first.transcript(), "DIALOGUE_A"),
                               dialogue_b=fence(second.transcript(), "DIALOGUE_B"))
    return messages, f"{template.id}#{template.sha}", first.id, second.id


def propose(pairs: Sequence[DialoguePair], client: JudgeClient, contrast: Contrast, *, seed: int = 0,
            both_orders: bool = False, progress: str | None = "proposing") -> list[ProposalRecord]:
    """One proposal per pair (two with ``both_orders``), in pair order; failed calls are kept as records."""
    from traitlab.judges.client import Request

    jobs: list[tuple[DialoguePair, Order, str, str, str, Request]] = []
    params = {} if "temperature" in client.params else {"temperature": 0}
    for pair in pairs:
        for order in pair_orders(pair, seed, both_orders):
            messages, version, shown_a, shown_b = proposal_messages(pair, order, contrast)
            jobs.append((pair, order, version, shown_a, shown_b, Request(messages, ProposalAnswer, version, params)))
    outcomes = client.call_many([j[-1] for j in jobs], progress=progress)
    records = []
    for (pair, order, version, shown_a, shown_b, req), out in zip(jobs, outcomes, strict=True):
        positive_side: Side = "A" if order == "positive_first" else "B"
        rec = ProposalRecord(group=pair.id, proposer=client.model, order=order, shown_a=shown_a,
                             shown_b=shown_b, positive_side=positive_side, prompt_version=version,
                             call_id=out.call_id, error=out.error)
        if out.ok:
            ans: ProposalAnswer = out.value
            prompt = instructions(req.messages)
            traits, rejected = split_echoes(ans.traits, prompt)
            tells, rejected_tells = split_echoes(ans.negative_tells, prompt)
            rec = rec.model_copy(update={
                "picked": ans.positive, "verdict_correct": ans.positive == positive_side,
                "confidence": ans.confidence, "statements": traits, "negative_tells": tells,
                "rejected": rejected + rejected_tells})
        records.append(rec)
    return records


_WORD = re.compile(r"[a-z0-9]+")
ECHO_OVERLAP = 0.8
"""A statement whose words are at least this share of a run of the prompt's own words is the prompt echoed."""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def instructions(messages: Sequence[dict[str, str]]) -> str:
    """The prompt's own words: every message with its fenced (untrusted data) regions cut out."""
    out = []
    for m in messages:
        text, kept, last = m["content"], [], 0
        for start, end in fenced_spans(text):
            kept.append(text[last:start])
            last = end
        out.append("".join(kept) + text[last:])
    return "\n".join(out)


def is_echo(statement: str, prompt: str) -> bool:
    """Whether ``statement`` repeats the instructions ``prompt`` rather than saying something: a template
    placeholder (``<...>``, ``$name``, ``...``, a ``snake_case`` answer key), or words that are (nearly all)
    a contiguous run of the prompt's words."""
    text = " ".join(statement.split())
    if re.search(r"<[^<>]*>|\$[A-Za-z_]|\.\.\.|…|[A-Za-z0-9]_[A-Za-z0-9]", text):
        return True
    words = _words(text)
    if not words:
        return True
    haystack = " " + " ".join(_words(prompt)) + " "
    if " " + " ".join(words) + " " in haystack:
        return True
    from difflib import SequenceMatcher

    prompt_words = _words(prompt)
    match = SequenceMatcher(None, words, prompt_words, autojunk=False).find_longest_match(
        0, len(words), 0, len(prompt_words))
    return match.size >= ECHO_OVERLAP * len(words)


def split_echoes(texts: Sequence[str], prompt: str) -> tuple[list[str], list[str]]:
    """(statements worth consolidating, statements dropped), whitespace normalised: an echo of ``prompt``
    carries no trait, nor does what is not prose ("trait 1", "A*B*C*")."""
    kept, dropped = [], []
    for t in (" ".join(x.split()) for x in texts):
        (kept if is_statement(t) and not is_echo(t, prompt) else dropped).append(t)
    return kept, dropped


def is_statement(text: str) -> bool:
    """Prose, not a token pattern: at least three words of two or more letters, and mostly letters."""
    words = [w for w in _words(text) if sum(c.isalpha() for c in w) >= 2]
    prose = sum(c.isalpha() or c.isspace() for c in text) / max(1, len(text))
    return len(words) >= 3 and prose >= 0.75


def position_bias(records: Sequence[ProposalRecord]) -> dict[str, float | int | None]:
    """Judge accuracy and position bias: accuracy overall and per order, how often "A" is picked, and, for
    pairs shown both ways, how often the judge picks the same dialogue in both orders."""
    done = [r for r in records if r.picked is not None]

    def acc(rs: list[ProposalRecord]) -> float | None:
        return sum(bool(r.verdict_correct) for r in rs) / len(rs) if rs else None

    by_group: dict[str, dict[str, str]] = {}
    for r in done:
        by_group.setdefault(r.group, {})[r.order] = r.shown_a if r.picked == "A" else r.shown_b
    both = [g for g in by_group.values() if len(g) == 2]
    return {"n": len(records), "failed": len(records) - len(done), "accuracy": acc(done),
            "accuracy_positive_first": acc([r for r in done if r.order == "positive_first"]),
            "accuracy_negative_first": acc([r for r in done if r.order == "negative_first"]),
            "picked_a_rate": sum(r.picked == "A" for r in done) / len(done) if done else None,
            "pairs_both_orders": len(both),
            "consistency": sum(g["positive_first"] == g["negative_first"] for g in both) / len(both) if both else None,
            "rejected_statements": sum(len(r.rejected) for r in records)}


def write_proposals(records: Sequence[ProposalRecord], path: str | Path) -> Path:
    """Proposals as JSONL (readable by :func:`traitlab.data.load_proposals` and :func:`consolidate`)."""
    path = Path(path)
    path.write_text("".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path
