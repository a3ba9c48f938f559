"""CLI commands of traitlab.discovery."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
