"""How every command ends: bad input is one red line and exit code 2; a run with failed items exits 1.

- :func:`fail` prints a user's mistake (e.g. a DataError's ``file:line [field]: problem``) and exits 2.
- :class:`FailurePolicy` (``--max-failures N|FRACTION``, modelled on Inspect's ``fail_on_error``) says how
  many failed items a run may have and still exit 0; :func:`exit_for` applies it and
  :func:`summarise_failures` is the short stderr line (count per error kind, the first message).
- :func:`check_output` checks an output path before any work, so a read-only ``--out`` never throws away
  an hour of model calls.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, Field

EXIT_BAD_INPUT = 2
EXIT_FAILED_ITEMS = 1


def _stderr(markup: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(markup, highlight=False, soft_wrap=True)


def fail(error: Exception | str) -> typer.Exit:
    """Print ``error`` (e.g. a DataError's ``file:line [field]: problem``) and return the Exit to raise."""
    from rich.markup import escape

    _stderr(f"[red]error:[/red] {escape(str(error))}")
    return typer.Exit(EXIT_BAD_INPUT)


class FailurePolicy(BaseModel):
    """How many failed items a run tolerates: ``count`` failures, or a ``fraction`` of all items.

    The default tolerates none: any failed item makes the command exit non-zero.
    """

    count: int | None = Field(0, ge=0)
    fraction: float | None = Field(None, ge=0, le=1)

    @classmethod
    def parse(cls, text: str | int | float | None) -> FailurePolicy:
        """``"3"`` = up to 3 failures, ``"0.1"`` = up to 10% of the items, ``None`` = none tolerated."""
        if text is None:
            return cls()
        s = str(text).strip()
        try:
            if re.fullmatch(r"\d+", s):
                return cls(count=int(s))
            value = float(s)
        except ValueError:
            raise ValueError(f"--max-failures: {s!r} is neither a count (3) nor a fraction (0.1)") from None
        if not 0 <= value < 1:
            raise ValueError(f"--max-failures: {s!r} must be a whole count or a fraction in [0, 1)")
        return cls(count=None, fraction=value)

    def tolerates(self, failed: int, total: int) -> bool:
        if self.fraction is not None:
            return failed <= self.fraction * max(total, 0)
        return failed <= (self.count or 0)


MaxFailuresOpt = Annotated[str | None, typer.Option(
    "--max-failures", help="failed items tolerated before the command exits 1: a count (3) or a fraction "
                           "of all items (0.1); default none")]


def policy_or_fail(text: str | None) -> FailurePolicy:
    """Parse ``--max-failures`` at the start of a command (a bad value is bad input: exit 2)."""
    try:
        return FailurePolicy.parse(text)
    except ValueError as e:
        raise fail(e) from None


def error_kind(message: str) -> str:
    """The first exception name in a recorded error (``... request(s): RateLimitError: ...``), else ``error``."""
    m = re.search(r"\b([A-Z]\w*(?:Error|Exception|Timeout|Exceeded))\b", message or "")
    return m.group(1) if m else "error"


def summarise_failures(errors: Iterable[str | None]) -> str:
    """``4 failed: 3 RateLimitError, 1 error; first: RateLimitError: slow down`` (empty when none failed)."""
    errs = [e or "error" for e in errors]
    if not errs:
        return ""
    kinds = Counter(error_kind(e) for e in errs)
    first = " ".join(errs[0].split())
    first = first if len(first) <= 200 else first[:197] + "..."
    return (f"{len(errs)} failed: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
            + f"; first: {first}")


def exit_for(failed: int | Iterable[str | None], total: int, policy: FailurePolicy | None = None, *,
             errors: Iterable[str | None] = ()) -> int:
    """The exit code of a run with ``failed`` items (a count, or their error messages) out of ``total``.

    Prints the failure summary on stderr when anything failed (``errors``: the messages behind a count, for
    the kinds and the first one); 0 when ``policy`` tolerates it, else 1.
    """
    from rich.markup import escape

    policy = policy or FailurePolicy()
    if isinstance(failed, int):
        n, msgs = failed, list(errors)
    else:
        msgs = list(failed)
        n = len(msgs)
    if n == 0:
        return 0
    ok = policy.tolerates(n, total)
    text = summarise_failures(msgs) if msgs else f"{n} failed"
    if msgs and len(msgs) != n:
        text = f"{n} failed ({text.replace(' failed:', ' errors:', 1)})"
    colour = "yellow" if ok else "red"
    _stderr(f"[{colour}]{'tolerated' if ok else 'error'}:[/{colour}] {escape(text)} (of {total}"
            + ("" if ok else "; --max-failures N|FRACTION tolerates some") + ")")
    return 0 if ok else EXIT_FAILED_ITEMS


def finish(failed: int | Iterable[str | None], total: int, policy: FailurePolicy | None = None, *,
           errors: Iterable[str | None] = ()) -> None:
    """End a command per :func:`exit_for`: raise ``typer.Exit(1)`` when the failures are not tolerated."""
    code = exit_for(failed, total, policy, errors=errors)
    if code:
        raise typer.Exit(code)


class OutputError(ValueError):
    """An output path that cannot be written (checked before the work, not after it)."""


def check_output(path: str | Path | None, *, folder: bool = False, what: str = "--out") -> None:
    """Raise :class:`OutputError` unless ``path`` can be written: a file (``folder=False``) must not be a
    folder and its nearest existing parent must be a writable folder; a folder must be one (or creatable).

    Writability is probed by creating a temporary file, so it holds for root and read-only mounts alike.
    """
    if path is None:
        return
    p = Path(path)
    if p.exists():
        if not folder and p.is_dir():
            raise OutputError(f"{what} {p}: is a folder; give a file path")
        if folder and not p.is_dir():
            raise OutputError(f"{what} {p}: is a file; give a folder")
    base = p if folder and p.is_dir() else p.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{what} {p}: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise OutputError(f"{what} {p}: cannot write in {base} ({e.strerror or e})") from None
    if p.exists() and not folder:
        try:
            with p.open("ab"):
                pass
        except OSError as e:
            raise OutputError(f"{what} {p}: cannot write ({e.strerror or e})") from None


def check_outputs(*checks: tuple[str, str | Path | None, bool]) -> None:
    """:func:`check_output` for each ``(option name, path, is_folder)``; the first problem exits 2."""
    try:
        for what, path, folder in checks:
            check_output(path, folder=folder, what=what)
    except OutputError as e:
        raise fail(e) from None


def run_app(app: typer.Typer) -> None:
    """Run the CLI; a store another process keeps locked, or an output that cannot be written, ends in one
    clear line (exit 2) rather than a traceback, whichever command met it."""
    from traitlab.store import StoreBusyError

    try:
        app()
    except (StoreBusyError, OutputError) as e:
        raise SystemExit(fail(e).exit_code) from None
