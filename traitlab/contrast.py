"""What a project contrasts: which label is the side a reward rewards, who is judged, how sides are paired.

HAL contrasts a human witness with an AI witness in one Turing-test game; a support team might contrast its
best agents with its average ones. Everything that used to be "human vs AI" in traitlab reads a
:class:`Contrast` instead: the label values, the judged role, the field that pairs two dialogues of one
context, and one sentence about what separates the sides, which the discovery and merge prompts quote.

A contrast is loaded from YAML or JSON (``Contrast.load``) and CLI flags override its fields
(``contrast.override(positive="best")``). Presets ship their own (``traitlab.presets.hal.CONTRAST``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from traitlab.data import DataError
from traitlab.types import Dialogue

GROUP_KEYS = ("group", "game_id")
"""Where a dialogue's context id is looked up, in order, when the contrast names no other field."""


class Contrast(BaseModel):
    """The two sides a project separates, and how its dialogues say which side each one is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("contrast", pattern=r"^[A-Za-z0-9_.-]+$")
    positive: str = Field(min_length=1, description="label value of the side the reward rewards")
    negative: str = Field(min_length=1, description="label value of the other side")
    positive_noun: str = Field("", description="how prompts name the positive side (default: its label)")
    negative_noun: str = Field("", description="how prompts name the negative side (default: its label)")
    target_role: str | None = Field(None, description="the judged role; None: each file's own default")
    group: str = Field("group", description="meta field pairing two dialogues of one context")
    description: str = Field(min_length=1, description="one line on what separates the sides")

    @model_validator(mode="after")
    def _distinct(self) -> Contrast:
        if self.positive == self.negative:
            raise ValueError(f"positive and negative labels are both {self.positive!r}")
        return self

    @property
    def positive_name(self) -> str:
        return self.positive_noun or self.positive

    @property
    def negative_name(self) -> str:
        return self.negative_noun or self.negative

    @property
    def labels(self) -> tuple[str, str]:
        return (self.positive, self.negative)

    def y(self, dialogue: Dialogue) -> float:
        """1.0 for the positive side, 0.0 for the negative, NaN when unlabelled; another label is an error."""
        if dialogue.label is None:
            return math.nan
        if dialogue.label == self.positive:
            return 1.0
        if dialogue.label == self.negative:
            return 0.0
        raise ValueError(f"dialogue {dialogue.id!r} has label {dialogue.label!r}, not one of "
                         f"{self.labels} (contrast {self.name!r})")

    def group_of(self, dialogue: Dialogue) -> str:
        """The context id pairing this dialogue with its other side (the dialogue's own id when none)."""
        return group_of(dialogue, self.group)

    def check_labels(self, dialogues: Iterable[Dialogue]) -> None:
        """Raise ValueError naming the first dialogue whose label is neither side (unlabelled ones pass)."""
        for d in dialogues:
            self.y(d)

    def for_prompt(self) -> dict[str, str]:
        """What the discovery and merge prompts quote of the contrast."""
        return {"positive": self.positive_name, "negative": self.negative_name, "description": self.description}

    def override(self, **fields: Any) -> Contrast:
        """A copy with the fields that are not None replaced (what CLI flags do)."""
        given = {k: v for k, v in fields.items() if v is not None}
        return Contrast.model_validate(self.model_dump() | given) if given else self

    @classmethod
    def load(cls, path: str | Path) -> Contrast:
        """Read a contrast from YAML or JSON; a bad file raises DataError naming the file and field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
            raise DataError(path, None, None, f"not a readable contrast: {e}") from None
        if not isinstance(data, dict):
            raise DataError(path, 1, None, "a contrast is a mapping of fields")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            raise DataError(path, None, ".".join(map(str, err["loc"])) or None, err["msg"]) from None

    @classmethod
    def resolve(cls, contrast: Contrast | str | Path | None, dialogues: Iterable[Dialogue] = (), *,
                positive: str | None = None, negative: str | None = None, target_role: str | None = None,
                group: str | None = None) -> Contrast:
        """The contrast a command or library call means: a Contrast, a YAML/JSON file, a preset name, or None.

        None takes the contrast of the one registered preset whose labels cover the dialogues' labels
        (so a preset's own files need no flag), else a contrast of ``positive``/``negative`` when both are
        given; anything else is a ValueError saying what to pass. Flags then override fields.
        """
        if isinstance(contrast, Contrast):
            base = contrast
        elif isinstance(contrast, Path) or (isinstance(contrast, str) and Path(contrast).suffix.lower() in
                                             (".yaml", ".yml", ".json")):
            base = cls.load(contrast)
        elif isinstance(contrast, str):
            from traitlab.presets import get_preset

            base = get_preset(contrast).contrast
        else:
            labels = {d.label for d in dialogues if d.label is not None}
            from traitlab.presets import contrast_for_labels

            found = contrast_for_labels(labels) if not (positive and negative) else None
            if found is None:
                if not (positive and negative):
                    raise ValueError(f"labels {sorted(labels)}: say which side is which with --positive LABEL "
                                     "--negative LABEL or --contrast FILE (or a preset)")
                found = cls(name="contrast", positive=positive, negative=negative,
                            description=f"{positive} versus {negative}")
            base = found
        return base.override(positive=positive, negative=negative, target_role=target_role, group=group)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.model_dump(exclude_defaults=True), sort_keys=False), encoding="utf-8")
        return path


def group_of(dialogue: Dialogue, key: str = "group") -> str:
    """``meta[key]``, else the first of :data:`GROUP_KEYS` present, else the dialogue's own id."""
    for k in (key, *GROUP_KEYS):
        if k in dialogue.meta and dialogue.meta[k] not in (None, ""):
            return str(dialogue.meta[k])
    return dialogue.id
