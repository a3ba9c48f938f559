"""CLI commands of traitlab.judges."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
