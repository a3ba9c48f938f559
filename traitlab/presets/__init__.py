"""Presets: a data set's contrast, file layout and CLI additions, registered by name.

A preset is what makes a published project runnable with one flag (``traitlab fit --preset hal --data DIR``):
its :class:`~traitlab.contrast.Contrast`, where its files sit in a data folder, and any commands of its own
(HAL's ``traitlab data fetch hal``). General code never names a preset; it asks this registry, which is
filled by the modules of the ``traitlab.plugins`` entry point group (HAL's is ``traitlab.presets.hal``), so a
user's preset registers the same way from their own package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlab.contrast import Contrast
from traitlab.registry import Registry


@dataclass(frozen=True)
class Preset:
    """One data set's defaults.

    ``files(data_dir)`` maps a command option (``dialogues``, ``ratings``, ``traits``, ``proposals``...) to its
    path in a data folder laid out the preset's way; ``judge`` is the judge whose ratings are its default;
    ``register_cli(app)`` adds the preset's own commands.
    """

    name: str
    contrast: Contrast
    description: str
    files: Callable[[Path], Mapping[str, Path]] = lambda _: {}
    judge: str | None = None
    register_cli: Callable[[Any], None] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def path(self, key: str, data_dir: str | Path) -> Path:
        """The preset's file ``key`` in ``data_dir``; a key the preset does not lay out is an error."""
        files = self.files(Path(data_dir))
        if key not in files:
            raise KeyError(f"preset {self.name!r} has no {key!r} file (it lays out: {sorted(files) or 'none'})")
        return files[key]


presets: Registry[Preset] = Registry("preset")


def preset(p: Preset) -> Preset:
    """Register a preset object under its name (a preset is data, so the factory returns it as is)."""
    presets.register(p.name)(lambda: p)
    return p


def get_preset(name: str) -> Preset:
    """The registered preset ``name`` (KeyError listing the known ones otherwise)."""
    return presets.create(name)


def all_presets() -> list[Preset]:
    return [presets.create(n) for n in presets.names()]


def contrast_for_labels(labels: set[str]) -> Contrast | None:
    """The contrast of the one registered preset whose two labels cover ``labels`` (None: none or several).

    Lets library calls on a preset's own files work without naming the contrast; anything else must say it.
    """
    matches = [p.contrast for p in all_presets() if labels and labels <= set(p.contrast.labels)]
    return matches[0] if len(matches) == 1 else None
