"""HAL's two eval scenarios, registered like any user's, and its suites (``turing``, ``doctor``, ``turing-mini``).

- ``turing``: an interrogator chats with the model, which is the witness. The interrogator's lines come from
  real games: the shipped sample games (``source: sample``), HAL's ``hal_turing/dialogues.jsonl`` in the data
  folder (``source: data``: ``--data`` or ``$TRAITLAB_DATA``), or the suite's own ``lines``.
- ``doctor``: the model plays a patient persona at a doctor's visit, a scripted doctor asks. With a data
  folder the personas are HAL's test personas (``hal_doctor/prompts_test.jsonl``); without, the suite's.

Either takes ``interlocutor: {model, system_prompt, params}`` to let an LLM ask once the scripted lines end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from traitlab.data import DataError, load_dialogues, read_jsonl, sample_dialogues
from traitlab.evals.scenarios import Interplay, Script, cross, replay_scripts
from traitlab.evals.suite import add_suite_dir
from traitlab.registry import ScenarioContext, scenario
from traitlab.settings import data_dir as default_data_dir

TURING_ROLES = ("interrogator", "witness")
DOCTOR_ROLES = ("doctor", "patient")

add_suite_dir(Path(__file__).parent / "suites")


class Turing(Interplay):
    """Replays the interrogator's side of Turing-test games; the model under test is the witness."""

    def __init__(self, source: Literal["sample", "data", "lines"] = "sample", lines: list[str] | None = None,
                 interlocutor: dict[str, Any] | None = None):
        super().__init__(interlocutor_role=TURING_ROLES[0], target_role=TURING_ROLES[1], interlocutor=interlocutor)
        if source not in ("sample", "data", "lines"):
            raise ValueError(f"source must be sample, data or lines, not {source!r}")
        if (source == "lines") != bool(lines):
            raise ValueError("source 'lines' needs a non-empty 'lines' list (and only it takes one)")
        self.source, self.lines = source, lines or []

    def scripts(self, ctx: ScenarioContext) -> list[Script]:
        if self.source == "lines":
            return [Script(lines=self.lines, source="lines")]
        if self.source == "sample":
            games = sample_dialogues()
        else:
            games = load_dialogues((ctx.data_dir or default_data_dir()) / "hal_turing" / "dialogues.jsonl",
                                   skipped=[])
        return [s.model_copy(update={"source": s.source.replace("group:", "game:")})
                for s in replay_scripts(games, self.interlocutor_role, "game_id")]


class Doctor(Interplay):
    """A scripted doctor's questions to a patient persona played by the model (``$persona`` in its prompt)."""

    def __init__(self, lines: list[str], personas: list[str], interlocutor: dict[str, Any] | None = None):
        super().__init__(interlocutor_role=DOCTOR_ROLES[0], target_role=DOCTOR_ROLES[1], interlocutor=interlocutor)
        if not lines:
            raise ValueError("the doctor needs its 'lines'")
        if not personas:
            raise ValueError("a doctor suite needs 'personas' (used when no data dir is given)")
        self.lines, self.personas = lines, personas

    def scripts(self, ctx: ScenarioContext) -> list[Script]:
        if ctx.data_dir is not None:
            return cross([self.lines], doctor_personas(ctx.data_dir), "hal_doctor")
        return cross([self.lines], self.personas, "suite")


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


@scenario("turing")
def turing(source: Literal["sample", "data", "lines"] = "sample", lines: list[str] | None = None,
           interlocutor: dict[str, Any] | None = None) -> Turing:
    """HAL's Turing test: the model is the witness to real interrogators' lines."""
    return Turing(source, lines, interlocutor)


@scenario("doctor")
def doctor(lines: list[str], personas: list[str] | None = None, interlocutor: dict[str, Any] | None = None) -> Doctor:
    """HAL's doctor visit: the model is the patient persona, a scripted doctor asks."""
    return Doctor(lines, personas or [], interlocutor)
