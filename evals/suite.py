"""Eval suites: a YAML file saying which conversations to have with a model and how to score them.

A suite names a scenario (``turing``: an interrogator chats with the model, the model is the witness;
``doctor``: the model plays a patient persona talking to a doctor), how many conversations of how many
turns, the model under test (any LiteLLM string, ``local/...`` included; ``--model`` overrides it), the
interlocutor (scripted lines, or an LLM after a scripted opening line) and the scorers (the local reward,
optionally an LLM judge on a trait set). A bad file raises :class:`~traitlab.data.DataError` naming the
file, the line and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from traitlab.data import DataError, read_jsonl

SUITES = Path(__file__).parent / "suites"
ROLES = {"turing": ("interrogator", "witness"), "doctor": ("doctor", "patient")}
"""scenario -> (interlocutor role, role of the model under test)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interlocutor(_Strict):
    """Who talks to the model. ``scripted``: lines in order (from ``lines``, else from ``source``).
    ``llm``: the first line is scripted, the rest come from ``model`` prompted with ``system_prompt``."""

    kind: Literal["scripted", "llm"] = "scripted"
    source: Literal["sample", "data", "lines"] = "sample"
    lines: list[str] = Field(default_factory=list)
    model: str | None = None
    system_prompt: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Interlocutor:
        if self.source == "lines" and not self.lines:
            raise ValueError("source 'lines' needs a non-empty 'lines' list")
        if self.kind == "llm" and not self.model:
            raise ValueError("an llm interlocutor needs 'model'")
        return self


class JudgeScorer(_Strict):
    """An LLM judge rating every dialogue on a trait set (``traitlab12`` = the shipped set, or a file)."""

    model: str
    trait_set: str = "traitlab12"
    mode: Literal["all", "per_trait"] = "all"
    params: dict[str, Any] = Field(default_factory=dict)


class Scorers(_Strict):
    reward: str | None = Field("default", description="'default' (the shipped reward), a saved reward dir, or null")
    judge: JudgeScorer | None = None


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    scenario: Literal["turing", "doctor"]
    conversations: int = Field(ge=1, le=10_000)
    turns: int = Field(ge=1, le=100)
    model: str = "local/smollm2-135m"
    system_prompt: str = Field(min_length=1, description="for the model under test; $persona is filled in")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(0, description="turn t of conversation i uses seed + 1000 i + t; null: no seed")
    interlocutor: Interlocutor = Field(default_factory=Interlocutor)
    personas: list[str] = Field(default_factory=list, description="doctor: used when no data dir is given")
    scorers: Scorers = Field(default_factory=Scorers)

    @model_validator(mode="after")
    def _scenario_needs(self) -> Suite:
        if self.scenario == "doctor" and not self.personas:
            raise ValueError("a doctor suite needs 'personas' (used when no data dir is given)")
        if self.scenario == "doctor" and self.interlocutor.source != "lines" and self.interlocutor.kind == "scripted":
            raise ValueError("a scripted doctor needs interlocutor 'source: lines' with its 'lines'")
        return self

    @property
    def roles(self) -> tuple[str, str]:
        """(interlocutor role, target role)."""
        return ROLES[self.scenario]


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if pair is None:
                break
            node, line = pair[1], pair[0].start_mark.line + 1  # the key's line: where a reader looks
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file; a bare name (``turing``) means a shipped suite in evals/suites."""
    path = Path(path)
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_-]+", str(path)):
        path = SUITES / f"{path}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, None, None, f"cannot read suite: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, mark.line + 1 if mark else None, None, f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DataError(path, 1, None, f"a suite is a YAML mapping, got {type(data).__name__}")
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        # a misspelt key also makes its real name "missing": name the misspelling first
        err = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        field = ".".join(map(str, loc)) or None
        raise DataError(path, _line_of(text, loc), field, err["msg"]) from None


def doctor_personas(data_dir: Path, limit: int | None = None) -> list[str]:
    """The persona blocks (biography, condition, reason for the visit) of HAL's doctor test prompts."""
    path = data_dir / "hal_doctor" / "prompts_test.jsonl"
    out = []
    for n, obj in read_jsonl(path):
        m = re.search(r"<input_data>\s*(.*?)\s*</input_data>", str(obj.get("prompt", "")), re.DOTALL)
        if not m:
            raise DataError(path, n, "prompt", "no <input_data> persona block")
        out.append(m.group(1))
        if limit is not None and len(out) >= limit:
            break
    return out
