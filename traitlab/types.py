"""The typed artifacts that flow between stages.

Every stage reads and writes these; they are plain pydantic models so they serialise to JSON and back
without loss. Traits are always addressed by their stable ``id``: nothing in traitlab maps a value to a
trait by its position in a list.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_LINE_BREAKS = re.compile("\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


class Message(BaseModel):
    """One turn of a conversation; ``role`` is free text (interrogator, witness, doctor, patient, user...)."""

    model_config = ConfigDict(frozen=True)

    role: str = Field(min_length=1)
    content: str


class Dialogue(BaseModel):
    """A conversation and the one speaker in it whose behaviour is judged (``target_role``)."""

    id: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    target_role: str
    label: str | None = Field(None, description="which side of the contrast (any string; see traitlab.contrast)")
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _target_speaks(self) -> Dialogue:
        if not any(m.role == self.target_role for m in self.messages):
            raise ValueError(f"target_role {self.target_role!r} never speaks in dialogue {self.id!r}")
        return self

    @property
    def target_turns(self) -> list[str]:
        """What the judged speaker said, turn by turn."""
        return [m.content for m in self.messages if m.role == self.target_role]

    def transcript(self, names: dict[str, str] | None = None) -> str:
        """The dialogue as ``Role: text`` lines; ``names`` renames roles (e.g. to hide who is the target).

        A turn's own line breaks become indented continuation lines, so no text inside a turn can start a
        line that reads as another speaker's ``role:``.
        """
        names = names or {}

        def turn(m: Message) -> str:
            role = " ".join(names.get(m.role, m.role).split())
            lines = _LINE_BREAKS.split(m.content)
            return f"{role}: " + "\n    ".join(line.rstrip() for line in lines)

        return "\n".join(turn(m) for m in self.messages)


class DialoguePair(BaseModel):
    """Two dialogues of one context with different labels (a contrastive pair; which is which: the Contrast)."""

    id: str
    a: Dialogue
    b: Dialogue

    @model_validator(mode="after")
    def _contrastive(self) -> DialoguePair:
        if self.a.label is not None and self.a.label == self.b.label:
            raise ValueError(f"pair {self.id!r}: both dialogues are labelled {self.a.label!r}")
        return self

    def side(self, label: str) -> Dialogue | None:
        """The dialogue with this label, if either has it."""
        return next((d for d in (self.a, self.b) if d.label == label), None)


class TraitProvenance(BaseModel):
    """Where a trait came from: the proposals merged into it and how much support it had."""

    source: str = ""
    proposals: list[str] = Field(default_factory=list)
    games: list[str] = Field(default_factory=list)
    support: int = 0
    proposers: list[str] = Field(default_factory=list)


class Trait(BaseModel):
    """A statement a judge rates agreement with (1 = strongly disagree ... 5 = strongly agree)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    text: str = Field(min_length=1)
    group: str = ""
    provenance: TraitProvenance | None = None


class TraitSet(BaseModel):
    """A named, versioned set of traits. ``hash`` covers ids and texts, so any edit changes it."""

    name: str
    version: str = "1"
    traits: list[Trait] = Field(min_length=1)

    @field_validator("traits")
    @classmethod
    def _unique_ids(cls, traits: list[Trait]) -> list[Trait]:
        ids = [t.id for t in traits]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate trait ids: {dupes}")
        return traits

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.traits]

    @property
    def hash(self) -> str:
        canon = json.dumps([[t.id, t.text] for t in self.traits], ensure_ascii=False)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def __getitem__(self, trait_id: str) -> Trait:
        for t in self.traits:
            if t.id == trait_id:
                return t
        raise KeyError(f"trait {trait_id!r} is not in trait set {self.name!r} ({self.hash})")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        data["hash"] = self.hash
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


class TraitRatings(BaseModel):
    """One judge's ratings of one dialogue, keyed by trait id."""

    dialogue_id: str
    judge: str
    ratings: dict[str, float]
    trait_set_hash: str | None = None
    prompt_version: str | None = None
    rationale: str | None = None
    call_id: str | None = None

    def vector(self, trait_ids: list[str]) -> list[float]:
        """Values in the order of ``trait_ids``; a missing id is an error, never a silent default."""
        missing = [t for t in trait_ids if t not in self.ratings]
        if missing:
            raise KeyError(f"ratings of {self.dialogue_id!r} by {self.judge!r} lack traits {missing}")
        return [self.ratings[t] for t in trait_ids]


class RewardScore(BaseModel):
    """What a reward says of one dialogue: a scalar (higher = more like the positive side) explained per trait."""

    id: str
    score: float
    traits: dict[str, float] = Field(default_factory=dict)
