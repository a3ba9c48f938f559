"""The ``traitlab`` command. Thin: parse arguments, call a stage function, print the result.

Each stage adds its own commands through ``register(app)`` in its ``cli`` module; heavy imports (torch,
litellm) happen inside the commands so ``traitlab --help`` stays fast.
"""

from __future__ import annotations

import typer

from traitlab import runs_cli
from traitlab.alignment import cli as alignment_cli
from traitlab.discovery import cli as discovery_cli
from traitlab.evals import cli as evals_cli
from traitlab.judges import cli as judges_cli
from traitlab.presets import all_presets

app = typer.Typer(help=__doc__.splitlines()[0], no_args_is_help=True, pretty_exceptions_enable=False)

for stage in (discovery_cli, judges_cli, alignment_cli, evals_cli, runs_cli):
    stage.register(app)
for _preset in all_presets():  # a preset's own commands (HAL: ``traitlab data fetch hal``)
    if _preset.register_cli is not None:
        _preset.register_cli(app)


def main() -> None:
    from traitlab.console import run_app

    run_app(app)


if __name__ == "__main__":
    main()
