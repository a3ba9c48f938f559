"""Eval suites: a YAML file saying which conversations to have with a model and how to score them.

A suite names a registered scenario with its params (how the conversations are produced and which roles
speak: ``scripted``, ``llm``, ``replay``, a preset's or a user's own), how many conversations of how many
turns, the model under test (any LiteLLM string, ``local/...`` and local model or adapter folders included;
``--model`` overrides it) with its system prompt (``$persona`` and other scenario vars are filled in), and a
list of registered scorers with their params. ``plugins:`` lists modules or ``.py`` files (relative to the
suite) that register more of them. A component is written as its name, or as a one-key mapping
``{name: {param: value}}``::

    scenario:
      scripted: {lines: ["Hi, how can I help?"], interlocutor_role: agent, target_role: customer}
    scorers:
      - reward                          # the shipped local reward
      - judge: {model: local/smollm2-135m}

A bad file raises :class:`~traitlab.data.DataError` naming the file, the line and the field; an unknown
component name or bad params are caught when the suite is loaded, not mid-run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from traitlab.data import DataError
from traitlab.judges.provider import ProviderOptions
from traitlab.registry import Scenario, Scorer, as_scenario, as_scorer, load_plugins, scenarios, scorers

SUITE_DIRS: list[Path] = []
"""Folders a bare suite name is looked up in (presets add theirs with :func:`add_suite_dir`)."""


def add_suite_dir(folder: Path) -> None:
    """Make the suites in ``folder`` addressable by their short names (``traitlab eval NAME``)."""
    if folder not in SUITE_DIRS:
        SUITE_DIRS.append(folder)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(_Strict):
    """A registered scenario or scorer by name, with its params (``NAME`` or ``{NAME: {params}}`` in YAML)."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and len(data) == 1 and "name" not in data:
            (name, params), = data.items()
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"the params of {name!r} must be a mapping, got {type(params).__name__}")
            return {"name": name, "params": params or {}}
        return data


def _scenario(c: Component) -> Scenario:
    return as_scenario(scenarios.create(c.name, **c.params), f"scenario {c.name!r}")


def _scorer(c: Component) -> Scorer:
    return as_scorer(scorers.create(c.name, **c.params), f"scorer {c.name!r}")


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    scenario: Component
    conversations: int = Field(ge=1, le=10_000)
    turns: int = Field(ge=1, le=100)
    model: str = "local/smollm2-135m"
    system_prompt: str = Field(min_length=1, description="for the model under test; $persona etc. are filled in")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(0, description="turn t of conversation i uses seed + 1000 i + t; null: no seed")
    scorers: list[Component] = Field(default_factory=lambda: [Component(name="reward")])
    plugins: list[str] = Field(default_factory=list, description="modules or .py files registering components")
    base_dir: Path | None = Field(None, exclude=True, description="the suite file's folder (relative paths)")
    provider: ProviderOptions = Field(default_factory=ProviderOptions,
                                      description="api_base, api_key_env, timeout, concurrency, structured_mode for "
                                                  "every model of the suite (the CLI flags override it)")

    def build_scenario(self) -> Scenario:
        """The scenario object (its factory called with the suite's params)."""
        return _scenario(self.scenario)

    def build_scorers(self) -> list[Scorer]:
        """The scorer objects, in the suite's order."""
        return [_scorer(c) for c in self.scorers]

    @property
    def roles(self) -> tuple[str, str]:
        """(interlocutor role, role of the model under test), as the scenario says."""
        return self.build_scenario().roles


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


def _plugin_paths(plugins: list[str], base: Path) -> list[str]:
    """``.py`` plugin paths relative to the suite's folder; module names unchanged."""
    return [str(base / p) if p.endswith(".py") and not Path(p).is_absolute() else p for p in plugins]


def _suite_file(path: Path) -> Path:
    if path.exists() or not re.fullmatch(r"[A-Za-z0-9_-]+", str(path)):
        return path
    load_plugins()  # presets register their suite folders on import
    for folder in SUITE_DIRS:
        if (folder / f"{path}.yaml").exists():
            return folder / f"{path}.yaml"
    return path


def shipped_suites() -> dict[str, Path]:
    """Short name -> file of every suite the presets ship."""
    load_plugins()
    return {p.stem: p for folder in SUITE_DIRS for p in sorted(folder.glob("*.yaml"))}


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file (a bare name means a suite a preset ships), load its plugins and
    build its scenario and scorers once, so that a wrong name or param fails here with its line."""
    path = _suite_file(Path(path))
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
        suite = Suite.model_validate(data)
    except ValidationError as e:
        # a misspelt key also makes its real name "missing": name the misspelling first
        err = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        field = ".".join(map(str, loc)) or None
        raise DataError(path, _line_of(text, loc), field, err["msg"]) from None
    base = path.resolve().parent
    suite = suite.model_copy(update={"base_dir": base, "plugins": _plugin_paths(suite.plugins, base)})
    try:
        load_plugins(suite.plugins)
    except (ImportError, OSError, SyntaxError) as e:
        raise DataError(path, _line_of(text, ("plugins",)), "plugins", f"cannot load plugin: {e}") from None
    parts: list[tuple[tuple[Any, ...], Component, Any]] = [(("scenario",), suite.scenario, _scenario)]
    parts += [(("scorers", i), c, _scorer) for i, c in enumerate(suite.scorers)]
    for loc, component, build in parts:
        try:
            build(component)
        except (KeyError, TypeError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise DataError(path, _line_of(text, loc), ".".join(map(str, loc)), msg) from None
    return suite
