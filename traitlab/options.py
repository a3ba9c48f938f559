"""The command-line options every command that reads dialogues shares: the contrast and a preset.

``--contrast FILE`` (YAML/JSON, see :class:`~traitlab.contrast.Contrast`) or ``--preset NAME`` give the
contrast; ``--positive``/``--negative``/``--target-role``/``--group`` override its fields; with a preset,
``--data DIR`` fills the input files the command was not given from the preset's folder layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from traitlab.contrast import Contrast
from traitlab.types import Dialogue

ContrastOpt = Annotated[Path | None, typer.Option("--contrast", help="contrast YAML/JSON (labels, judged role, "
                                                                     "group field, description)")]
PositiveOpt = Annotated[str | None, typer.Option("--positive", help="label of the side the reward rewards")]
NegativeOpt = Annotated[str | None, typer.Option("--negative", help="label of the other side")]
TargetRoleOpt = Annotated[str | None, typer.Option("--target-role", help="the judged role (default: the "
                                                                         "contrast's, else by file shape)")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="meta field pairing the two sides (default: "
                                                              "the contrast's; 'group'/'game_id' also read)")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="a registered preset (e.g. hal): its contrast "
                                                                "and, with --data, its files")]
DataOpt = Annotated[Path | None, typer.Option("--data", help="the preset's data folder (default: settings.data_dir())")]


def base_contrast(contrast: Path | None, preset: str | None) -> Contrast | Path | str | None:
    """What ``Contrast.resolve`` starts from: the file, else the preset's name, else None (inferred)."""
    if contrast is not None and preset is not None:
        raise ValueError("give --contrast or --preset, not both")
    return contrast if contrast is not None else preset


def target_role_for(contrast: Path | None, preset: str | None, target_role: str | None) -> str | None:
    """The judged role to load dialogues with: the flag, else the contrast's (file or preset)."""
    if target_role is not None:
        return target_role
    base = base_contrast(contrast, preset)
    return None if base is None else Contrast.resolve(base).target_role


def resolve(dialogues: list[Dialogue], contrast: Path | None, preset: str | None, positive: str | None,
            negative: str | None, target_role: str | None = None, group: str | None = None) -> Contrast:
    """The contrast a command runs with (see :meth:`Contrast.resolve`)."""
    return Contrast.resolve(base_contrast(contrast, preset), dialogues, positive=positive, negative=negative,
                            target_role=target_role, group=group)


def preset_file(preset: str | None, data: Path | None, key: str, given: Path | None) -> Path | None:
    """``given``, else the preset's ``key`` file in ``data`` (None without a preset)."""
    if given is not None or preset is None:
        return given
    from traitlab.presets import get_preset
    from traitlab.settings import data_dir

    return get_preset(preset).path(key, data_dir(data))


def require(value: Path | None, flag: str) -> Path:
    """A file option that has no default without a preset."""
    if value is None:
        raise ValueError(f"missing {flag} (or --preset NAME [--data DIR] to take the preset's file)")
    return value
