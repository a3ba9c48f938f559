"""How every command reports a user's mistake: one red line on stderr naming the problem, exit code 2."""

from __future__ import annotations

import typer


def fail(error: Exception | str) -> typer.Exit:
    """Print ``error`` (e.g. a DataError's ``file:line [field]: problem``) and return the Exit to raise."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(2)
