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
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from traitlab.types import Dialogue, RewardScore, TraitSet

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

    def create(self, name: str, **params: Any) -> T:
        """Build the named thing with its parameters."""
        return self.factory(name)(**params)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._factories


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


rewards: Registry[Reward] = Registry("reward")
scorers: Registry[Any] = Registry("scorer")
scenarios: Registry[Any] = Registry("scenario")


def reward(name: str | None = None, *, replace: bool = False):
    """Register a reward factory (returns an object satisfying :class:`Reward`)."""
    return rewards.register(name, replace=replace)


def scorer(name: str | None = None, *, replace: bool = False):
    """Register a scorer factory (see ``traitlab.evals.scoring`` for the Scorer protocol)."""
    return scorers.register(name, replace=replace)


def scenario(name: str | None = None, *, replace: bool = False):
    """Register a scenario factory (see ``traitlab.evals.scenarios`` for the Scenario protocol)."""
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
    if not isinstance(obj, Reward):
        missing = [m for m in ("trait_set", "score", "trait_weights") if not hasattr(obj, m)]
        raise TypeError(f"{what} {type(obj).__name__} does not satisfy the Reward protocol "
                        f"(missing: {', '.join(missing) or '?'})")
    return obj
