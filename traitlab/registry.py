"""The seams: the Protocols a user implements and the registries that find their implementations.

A reward, a scorer or a scenario is a factory registered under a name by a decorator, the way Inspect AI
registers ``@scorer`` and ``@solver`` functions::

    from traitlab.registry import reward

    @reward("shorter-is-better")
    def shorter(max_chars: int = 400):
        return MyReward(max_chars)          # anything satisfying the Reward protocol

A suite, a command or a notebook then asks the registry for it by name (``rewards.create("shorter-is-better",
max_chars=300)``). The user's module is found in one of three ways, none of which edits traitlab: a Python
entry point in the group ``traitlab.plugins`` (what traitlab's own stages and presets use), the
``TRAITLAB_PLUGINS`` variable (comma-separated module names or ``.py`` paths), or a ``plugins:`` list in a
suite / ``--plugin`` on the command line (both end in :func:`load_plugins`).

The Protocols' supporting types (:class:`ScoreResult`, :class:`Conversation`, the contexts handed to a
scorer or a scenario, :class:`ChatModel`) live here too, so that core can name them without importing a stage.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, Field

from traitlab.types import Dialogue, Message, RewardScore, TraitRatings, TraitSet

if TYPE_CHECKING:
    from traitlab.store import Store

ENTRY_POINT_GROUP = "traitlab.plugins"
T = TypeVar("T")


@runtime_checkable
class Reward(Protocol):
    """Anything that scores dialogues' judged speakers, higher = more like the contrast's positive side.

    ``trait_set`` names the traits its ``RewardScore.traits`` explain. ``trait_weights`` gives each trait's
    weight in the scalar (score units per trait unit) when the scalar is linear in the traits, else None;
    the alignment monitors use it to say which traits moved the score.
    """

    @property
    def trait_set(self) -> TraitSet: ...

    def score(self, dialogues: Sequence[Dialogue]) -> list[RewardScore]: ...

    def trait_weights(self) -> Mapping[str, float] | None: ...


class ScoreResult(BaseModel):
    """What a scorer says about the dialogues it was given: a scalar per dialogue id (higher = more like the
    contrast's positive side) and/or per-trait values, with the trait set those values are on."""

    scores: dict[str, float] = Field(default_factory=dict)
    ratings: list[TraitRatings] = Field(default_factory=list)
    trait_set: TraitSet | None = None


@dataclass
class ScoringContext:
    """What a scorer may use besides the dialogues: the run store and run (so LLM calls are cached and
    logged with the run), the data folder, and the folder relative paths in the suite are read from."""

    store: Store | None = None
    run_id: str | None = None
    data_dir: Path | None = None
    base_dir: Path | None = None

    def resolve(self, path: str | Path) -> Path:
        """``path`` relative to the suite's folder (absolute paths unchanged)."""
        return _resolve(self.base_dir, path)


@runtime_checkable
class Scorer(Protocol):
    """A named scorer a suite lists (the local reward, an LLM judge, a user's function).

    ``name`` is the key its results are stored under (the ratings' judge, the scores' scorer), so two scorers
    in one suite need two names. ``score`` gets only dialogues it has not scored in this run yet (a resumed
    run asks again only for the rest); the evaluator records the result.
    """

    @property
    def name(self) -> str: ...

    def score(self, dialogues: Sequence[Dialogue], ctx: ScoringContext) -> ScoreResult: ...


class GenerationError(RuntimeError):
    """A model call failed (its error is in the run store's call log); the conversation is dropped."""


@runtime_checkable
class ChatModel(Protocol):
    """A chat model the evaluator hands a scenario: messages in OpenAI form in, text out (or GenerationError)."""

    @property
    def name(self) -> str: ...

    async def chat(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any] | None = None) -> str: ...


class Conversation(BaseModel):
    """One planned conversation: a stable id (what resume matches on), its index, the interlocutor's
    scripted lines, ``vars`` filled into the model's system prompt (``$persona``...) and meta for the dialogue."""

    id: str
    index: int
    lines: list[str] = Field(default_factory=list)
    vars: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


@dataclass
class ScenarioContext:
    """What a scenario gets from the suite and the evaluator: the model under test, the suite's name, turns,
    system prompt, generation params and seed, the data and suite folders, and ``chat_model(model, **params)``
    for any other model it talks through (an LLM interlocutor), cached and logged with the run."""

    model: ChatModel
    name: str
    turns: int
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = 0
    data_dir: Path | None = None
    base_dir: Path | None = None
    chat_model: Callable[..., ChatModel] | None = None

    def resolve(self, path: str | Path) -> Path:
        """``path`` relative to the suite's folder (absolute paths unchanged)."""
        return _resolve(self.base_dir, path)

    def seeded(self, params: Mapping[str, Any], conversation: Conversation, turn: int) -> dict[str, Any]:
        """``params`` plus the seed of this conversation and turn (seed + 1000 index + turn): distinct samples,
        reproducible runs, and a resumed run asks exactly the same requests again (served from the cache)."""
        if self.seed is None:
            return dict(params)
        return {**params, "seed": self.seed + 1000 * conversation.index + turn}

    async def reply(self, conversation: Conversation, history: Sequence[Message], role: str, turn: int) -> str:
        """The model under test's next turn as ``role``, with the suite's system prompt (``$vars`` filled)."""
        system = Template(self.system_prompt).safe_substitute(conversation.vars)
        text = await self.model.chat(chat_messages(system, history, role),
                                     self.seeded(self.params, conversation, turn))
        return text.strip()


def chat_messages(system: str, history: Sequence[Message], me: str) -> list[dict[str, str]]:
    """The conversation from one speaker's side: its own turns are ``assistant``, everyone else's ``user``."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *({"role": "assistant" if m.role == me else "user", "content": m.content} for m in history)]


@runtime_checkable
class Scenario(Protocol):
    """How a suite's conversations are produced (scripted lines, an LLM interlocutor, replayed dialogues).

    ``roles`` is (the interlocutor's role, the role the model under test plays); any names. ``plan`` is
    deterministic (a resumed run plans the same ids); ``converse`` has one conversation and returns it as a
    Dialogue whose target role is the model's; the evaluator runs many at once, so it awaits, never blocks.
    """

    @property
    def roles(self) -> tuple[str, str]: ...

    def plan(self, n: int, ctx: ScenarioContext) -> list[Conversation]: ...

    async def converse(self, conversation: Conversation, ctx: ScenarioContext) -> Dialogue: ...


def _resolve(base: Path | None, path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p


class Registry(Generic[T]):
    """Named factories of one kind; plugins are loaded before the first lookup."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None, *, replace: bool = False) -> Callable[[Callable[..., T]],
                                                                                      Callable[..., T]]:
        """Decorator: register a factory under ``name`` (default: the function's name, ``_`` -> ``-``)."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__.replace("_", "-")
            if key in self._factories and not replace and self._factories[key] is not factory:
                raise ValueError(f"a {self.kind} named {key!r} is already registered "
                                 f"({_where(self._factories[key])}); pass replace=True to override it")
            self._factories[key] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._factories)

    def factory(self, name: str) -> Callable[..., T]:
        load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise KeyError(f"no {self.kind} named {name!r} (registered: {known}); a plugin module registers "
                           f"more (entry point group {ENTRY_POINT_GROUP!r}, $TRAITLAB_PLUGINS or --plugin)") from None

    def create(self, name: str, /, **params: Any) -> T:
        """Build the named thing with its parameters."""
        return self.factory(name)(**params)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._factories


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


rewards: Registry[Reward] = Registry("reward")
scorers: Registry[Scorer] = Registry("scorer")
scenarios: Registry[Scenario] = Registry("scenario")


def reward(name: str | None = None, *, replace: bool = False):
    """Register a reward factory (returns an object satisfying :class:`Reward`)."""
    return rewards.register(name, replace=replace)


def scorer(name: str | None = None, *, replace: bool = False):
    """Register a scorer factory (returns an object satisfying :class:`Scorer`)."""
    return scorers.register(name, replace=replace)


def scenario(name: str | None = None, *, replace: bool = False):
    """Register a scenario factory (returns an object satisfying :class:`Scenario`)."""
    return scenarios.register(name, replace=replace)


_loaded: set[str] = set()
_entry_points_loaded = False


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the plugin modules (entry points, ``$TRAITLAB_PLUGINS``, and ``modules``); each once.

    A module is a dotted name or a path to a ``.py`` file. Returns the modules imported by this call.
    """
    global _entry_points_loaded
    done = []
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.value not in _loaded:
                _loaded.add(ep.value)
                importlib.import_module(ep.value)
                done.append(ep.value)
    env = [m.strip() for m in os.environ.get("TRAITLAB_PLUGINS", "").split(",") if m.strip()]
    for mod in [*env, *modules]:
        if mod in _loaded:
            continue
        _loaded.add(mod)
        try:
            _import(mod)
        except Exception:
            _loaded.discard(mod)
            raise
        done.append(mod)
    return done


def _import(mod: str) -> None:
    path = Path(mod)
    if path.suffix == ".py":
        if not path.is_file():
            raise FileNotFoundError(f"plugin file {path} does not exist")
        name = f"traitlab_plugin_{path.stem}_{abs(hash(str(path.resolve()))):x}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(mod)


def as_reward(obj: Any, what: str = "reward") -> Reward:
    """``obj`` checked against :class:`Reward`, with an error naming what it lacks when it is not one."""
    return _check(obj, Reward, ("trait_set", "score", "trait_weights"), what)


def as_scorer(obj: Any, what: str = "scorer") -> Scorer:
    """``obj`` checked against :class:`Scorer` (an error naming what it lacks otherwise)."""
    return _check(obj, Scorer, ("name", "score"), what)


def as_scenario(obj: Any, what: str = "scenario") -> Scenario:
    """``obj`` checked against :class:`Scenario` (an error naming what it lacks otherwise)."""
    return _check(obj, Scenario, ("roles", "plan", "converse"), what)


def _check(obj: Any, proto: type, members: tuple[str, ...], what: str) -> Any:
    if not isinstance(obj, proto):
        missing = [m for m in members if not hasattr(obj, m)]
        raise TypeError(f"{what} {type(obj).__name__} does not satisfy the {proto.__name__} protocol "
                        f"(missing: {', '.join(missing) or '?'})")
    return obj
