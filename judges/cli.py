"""CLI commands of traitlab.judges: scoring, aggregator fitting, reward distillation and scoring."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    _register_score(app)
    _register_aggregate(app)
    _register_reward(app)


def _register_score(app: typer.Typer) -> None:
    """``traitlab score``: rate dialogues on a trait set with an LLM judge."""


def _register_aggregate(app: typer.Typer) -> None:
    """``traitlab fit``: fit the calibrated aggregator."""


def _register_reward(app: typer.Typer) -> None:
    """``traitlab distill`` and ``traitlab reward score``: the local reward."""
