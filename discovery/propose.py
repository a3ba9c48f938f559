"""Proposal: a judge sees a contrastive pair (one human, one AI speaker), guesses which is human and says
which general traits made the human side human.

The labels are known here and hidden from the judge: the two transcripts are shown as "A" and "B" in an
order drawn per pair from ``seed`` (recorded), or in both orders to measure position bias. Every verdict
is kept with ``verdict_correct``, so the proposals double as a judge-accuracy measurement (the same
record shape as HAL's ``proposals.jsonl``, plus the order information).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

from traitlab.prompts import fence, load_template
from traitlab.types import DialoguePair

if TYPE_CHECKING:
    from traitlab.judges.client import JudgeClient

PROMPTS = Path(__file__).parent / "prompts"
Side = Literal["A", "B"]
Order = Literal["human_first", "ai_first"]
Statement = Annotated[str, Field(min_length=12, max_length=100)]
"""Bounds a constrained decoder can enforce: no empty or runaway statements."""


class ProposalAnswer(BaseModel):
    """What the proposing judge returns for one pair."""

    human: Side = Field(description="which conversation's speaker is the human")
    confidence: int = Field(ge=0, le=100, description="confidence in that pick, 0-100")
    traits: list[Statement] = Field(min_length=3, max_length=5,
                                    description="3-5 short, general statements of what made the human seem human")
    ai_tells: list[Statement] = Field(default_factory=list, max_length=2,
                                      description="optional: what gave the AI speaker away")


class ProposalRecord(BaseModel):
    """One proposal call and its outcome; ``statements`` is empty and ``error`` set when the call failed."""

    game_id: str
    proposer: str
    order: Order
    shown_a: str
    shown_b: str
    human_side: Side
    picked: Side | None = None
    verdict_correct: bool | None = None
    confidence: int | None = None
    statements: list[str] = Field(default_factory=list)
    ai_tells: list[str] = Field(default_factory=list)
    prompt_version: str
    call_id: str | None = None
    error: str | None = None


def pair_orders(pair: DialoguePair, seed: int, both_orders: bool) -> list[Order]:
    """The order(s) a pair is shown in: both, or one drawn from ``seed`` and the pair id (stable per pair,
    whatever the other pairs are)."""
    if both_orders:
        return ["human_first", "ai_first"]
    return [random.Random(f"{seed}:{pair.id}").choice(("human_first", "ai_first"))]


def proposal_messages(pair: DialoguePair, order: Order) -> tuple[list[dict[str, str]], str, str, str]:
    """Messages for one pair in one order, with the prompt version and the dialogue ids shown as A and B."""
    human, ai = pair.side("human"), next(d for d in (pair.a, pair.b) if d.label == "ai")
    if human is None:
        raise ValueError(f"pair {pair.id!r} has no human-labelled dialogue")
    first, second = (human, ai) if order == "human_first" else (ai, human)
    template = load_template(PROMPTS, "propose")
    messages = template.render(target=human.target_role,
                               dialogue_a=fence(first.transcript(), "DIALOGUE_A"),
                               dialogue_b=fence(second.transcript(), "DIALOGUE_B"))
    return messages, f"{template.id}#{template.sha}", first.id, second.id


def propose(pairs: Sequence[DialoguePair], client: JudgeClient, *, seed: int = 0, both_orders: bool = False,
            progress: str | None = "proposing") -> list[ProposalRecord]:
    """One proposal per pair (two with ``both_orders``), in pair order; failed calls are kept as records."""
    from traitlab.judges.client import Request

    jobs: list[tuple[DialoguePair, Order, str, str, str, Request]] = []
    params = {} if "temperature" in client.params else {"temperature": 0}
    for pair in pairs:
        for order in pair_orders(pair, seed, both_orders):
            messages, version, shown_a, shown_b = proposal_messages(pair, order)
            jobs.append((pair, order, version, shown_a, shown_b, Request(messages, ProposalAnswer, version, params)))
    outcomes = client.call_many([j[-1] for j in jobs], progress=progress)
    records = []
    for (pair, order, version, shown_a, shown_b, _), out in zip(jobs, outcomes, strict=True):
        human_side: Side = "A" if order == "human_first" else "B"
        rec = ProposalRecord(game_id=pair.id, proposer=client.model, order=order, shown_a=shown_a,
                             shown_b=shown_b, human_side=human_side, prompt_version=version, call_id=out.call_id,
                             error=out.error)
        if out.ok:
            ans: ProposalAnswer = out.value
            rec = rec.model_copy(update={
                "picked": ans.human, "verdict_correct": ans.human == human_side, "confidence": ans.confidence,
                "statements": _statements(ans.traits), "ai_tells": _statements(ans.ai_tells)})
        records.append(rec)
    return records


def _statements(texts: Sequence[str]) -> list[str]:
    """Statements worth consolidating: placeholder text ("...", "trait 1") carries no trait, so at least three
    words of letters are required."""
    out = [" ".join(t.split()) for t in texts]
    return [t for t in out if sum(any(c.isalpha() for c in w) for w in t.split()) >= 3]


def position_bias(records: Sequence[ProposalRecord]) -> dict[str, float | int | None]:
    """Judge accuracy and position bias: accuracy overall and per order, how often "A" is picked, and, for
    pairs shown both ways, how often the judge picks the same dialogue in both orders."""
    done = [r for r in records if r.picked is not None]

    def acc(rs: list[ProposalRecord]) -> float | None:
        return sum(bool(r.verdict_correct) for r in rs) / len(rs) if rs else None

    by_game: dict[str, dict[str, str]] = {}
    for r in done:
        by_game.setdefault(r.game_id, {})[r.order] = r.shown_a if r.picked == "A" else r.shown_b
    both = [g for g in by_game.values() if len(g) == 2]
    return {"n": len(records), "failed": len(records) - len(done), "accuracy": acc(done),
            "accuracy_human_first": acc([r for r in done if r.order == "human_first"]),
            "accuracy_ai_first": acc([r for r in done if r.order == "ai_first"]),
            "picked_a_rate": sum(r.picked == "A" for r in done) / len(done) if done else None,
            "pairs_both_orders": len(both),
            "consistency": sum(g["human_first"] == g["ai_first"] for g in both) / len(both) if both else None}


def write_proposals(records: Sequence[ProposalRecord], path: str | Path) -> Path:
    """Proposals as JSONL (readable by :func:`traitlab.data.load_proposals` and :func:`consolidate`)."""
    path = Path(path)
    path.write_text("".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path
