"""The built-in scenarios: how a suite's conversations are produced (see :class:`traitlab.registry.Scenario`).

- ``scripted``: the interlocutor says its lines in order (one script, or several that conversations cycle
  through); optional personas are filled into the model's system prompt as ``$persona``.
- ``llm``: scripted opening line(s), then an LLM plays the interlocutor.
- ``replay``: the interlocutor's lines of real dialogues (a dialogues file), one conversation per group;
  the model under test takes the judged speaker's place.

All three are :class:`Interplay`: interlocutor turn, model turn, for the suite's number of turns, with an LLM
interlocutor after the scripted lines when ``interlocutor`` is given. A preset or a user subclasses it (only
``scripts`` to write) or implements the Protocol from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from traitlab.contrast import group_of
from traitlab.registry import ChatModel, Conversation, ScenarioContext, chat_messages, scenario
from traitlab.types import Dialogue, Message


class Script(BaseModel):
    """What a conversation starts from: the interlocutor's lines, system-prompt vars, where it came from."""

    lines: list[str]
    vars: dict[str, str] = Field(default_factory=dict)
    source: str = ""


class LLMInterlocutor(BaseModel):
    """An LLM playing the interlocutor after the scripted lines run out (any LiteLLM model string)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    system_prompt: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


class Interplay:
    """Alternating turns: the interlocutor (a scripted line while there is one, else the LLM interlocutor,
    else the conversation ends), then the model under test. A failed call raises GenerationError."""

    def __init__(self, *, interlocutor_role: str, target_role: str,
                 interlocutor: LLMInterlocutor | dict[str, Any] | None = None):
        if not interlocutor_role or not target_role or interlocutor_role == target_role:
            raise ValueError(f"roles must be two different names, got {interlocutor_role!r} and {target_role!r}")
        self.interlocutor_role, self.target_role = interlocutor_role, target_role
        self.interlocutor = (LLMInterlocutor.model_validate(interlocutor) if isinstance(interlocutor, dict)
                             else interlocutor)

    @property
    def roles(self) -> tuple[str, str]:
        return self.interlocutor_role, self.target_role

    def scripts(self, ctx: ScenarioContext) -> list[Script]:
        """The distinct scripts conversations cycle through (conversation i gets script i mod len)."""
        raise NotImplementedError

    def plan(self, n: int, ctx: ScenarioContext) -> list[Conversation]:
        scripts = self.scripts(ctx)
        if not scripts:
            raise ValueError(f"scenario {type(self).__name__} has no scripts to plan conversations from")
        return [Conversation(id=f"{ctx.name}-{i:04d}", index=i, lines=s.lines, vars=s.vars,
                             meta={"suite": ctx.name, "source": s.source, **s.vars})
                for i, s in ((i, scripts[i % len(scripts)]) for i in range(n))]

    async def converse(self, conversation: Conversation, ctx: ScenarioContext) -> Dialogue:
        history: list[Message] = []
        llm = self._llm(ctx)
        for turn in range(ctx.turns):
            if turn < len(conversation.lines):
                line = conversation.lines[turn]
            elif llm is not None and history:
                assert self.interlocutor is not None
                line = await llm.chat(chat_messages(self.interlocutor.system_prompt, history, self.interlocutor_role),
                                      ctx.seeded(self.interlocutor.params, conversation, turn))
            else:
                break
            history.append(Message(role=self.interlocutor_role, content=line.strip()))
            reply = await ctx.reply(conversation, history, self.target_role, turn)
            history.append(Message(role=self.target_role, content=reply))
        if not history:
            raise ValueError(f"conversation {conversation.id} has no line to start from")
        return Dialogue(id=conversation.id, messages=history, target_role=self.target_role, meta=conversation.meta)

    def _llm(self, ctx: ScenarioContext) -> ChatModel | None:
        if self.interlocutor is None:
            return None
        if ctx.chat_model is None:
            raise ValueError("an LLM interlocutor needs a context that can make chat models")
        return ctx.chat_model(self.interlocutor.model)


class Scripted(Interplay):
    """Given scripts, crossed with personas: conversation i gets script i mod S and persona i mod P."""

    def __init__(self, scripts: Sequence[Sequence[str]], *, personas: Sequence[str] = (), interlocutor_role: str,
                 target_role: str, interlocutor: LLMInterlocutor | dict[str, Any] | None = None,
                 source: str = "suite"):
        super().__init__(interlocutor_role=interlocutor_role, target_role=target_role, interlocutor=interlocutor)
        if not scripts or not all(scripts):
            raise ValueError("needs at least one non-empty list of lines")
        self._scripts, self.personas, self.source = [list(s) for s in scripts], list(personas), source

    def scripts(self, ctx: ScenarioContext) -> list[Script]:
        return cross(self._scripts, self.personas, self.source)


def cross(scripts: Sequence[list[str]], personas: Sequence[str], source: str) -> list[Script]:
    """Scripts x personas, cycled together: entry i is script i mod S with persona i mod P, for lcm(S, P)."""
    n = math.lcm(len(scripts), len(personas) or 1)
    return [Script(lines=scripts[i % len(scripts)],
                   vars={"persona": personas[i % len(personas)]} if personas else {},
                   source=f"{source}:script{i % len(scripts)}" + (f":persona{i % len(personas)}" if personas else ""))
            for i in range(n)]


class Replay(Interplay):
    """The interlocutor's lines of real dialogues, one conversation per group (its first dialogue)."""

    def __init__(self, dialogues: str | Path, *, interlocutor_role: str, target_role: str, group: str | None = None,
                 interlocutor: LLMInterlocutor | dict[str, Any] | None = None):
        super().__init__(interlocutor_role=interlocutor_role, target_role=target_role, interlocutor=interlocutor)
        self.path, self.group = dialogues, group

    def source_dialogues(self, ctx: ScenarioContext) -> list[Dialogue]:
        from traitlab.data import load_dialogues

        return load_dialogues(ctx.resolve(self.path), target_role=self.target_role, skipped=[])

    def scripts(self, ctx: ScenarioContext) -> list[Script]:
        return replay_scripts(self.source_dialogues(ctx), self.interlocutor_role, self.group)


def replay_scripts(dialogues: Sequence[Dialogue], role: str, group: str | None = None) -> list[Script]:
    """(interlocutor lines of ``role``) per group, in file order; the dialogues of one group share one entry.
    The group is ``meta[group]``, then ``meta["group"]``/``meta["game_id"]`` (as a Contrast pairs), else the id."""
    seen: dict[str, list[str]] = {}
    for d in dialogues:
        key = group_of(d, group or "group")
        lines = [m.content for m in d.messages if m.role == role and m.content.strip()]
        if lines and key not in seen:
            seen[key] = lines
    return [Script(lines=lines, source=f"group:{key}") for key, lines in seen.items()]


@scenario("scripted")
def scripted(lines: list[str] | None = None, scripts: list[list[str]] | None = None,
             personas: list[str] | None = None, interlocutor_role: str = "user",
             target_role: str = "assistant") -> Scripted:
    """The interlocutor's ``lines`` (or several ``scripts``), optionally crossed with ``personas``."""
    if (lines is None) == (scripts is None):
        raise ValueError("give either 'lines' (one script) or 'scripts' (a list of them)")
    return Scripted([lines] if lines is not None else scripts or [], personas=personas or [],
                    interlocutor_role=interlocutor_role, target_role=target_role)


@scenario("llm")
def llm(model: str, system_prompt: str = "", params: dict[str, Any] | None = None,
        opening: list[str] | None = None, personas: list[str] | None = None,
        interlocutor_role: str = "user", target_role: str = "assistant") -> Scripted:
    """An LLM interlocutor (``model`` prompted with ``system_prompt``) after the scripted ``opening`` lines."""
    return Scripted([opening or ["Hi!"]], personas=personas or [], interlocutor_role=interlocutor_role,
                    target_role=target_role, source="llm",
                    interlocutor=LLMInterlocutor(model=model, system_prompt=system_prompt, params=params or {}))


@scenario("replay")
def replay(dialogues: str, interlocutor_role: str = "user", target_role: str = "assistant", group: str | None = None,
           interlocutor: dict[str, Any] | None = None) -> Replay:
    """Replay the ``interlocutor_role`` lines of a dialogues file (path relative to the suite's folder)."""
    return Replay(dialogues, interlocutor_role=interlocutor_role, target_role=target_role, group=group,
                  interlocutor=interlocutor)
