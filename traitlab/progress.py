"""Progress of long loops, readable where it ends up: a rich bar on a terminal, log lines elsewhere.

A run in CI, under nohup or piped to a file sees no terminal, and a bar there either prints nothing or
floods the log with control codes. So off a terminal :class:`Progress` writes one plain line every 5 % of
the work or every 30 s (whichever comes first), with counts, rate and ETA, and a last line when done.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

LOG_FRACTION = 0.05
LOG_SECONDS = 30.0


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Count ``total`` steps of a job called ``label``; a context manager, safe across threads.

    ``label=None`` (or ``total == 0``) shows nothing. ``stream`` defaults to stderr; ``tty`` overrides the
    terminal check (tests pass a StringIO and ``tty=False``).
    """

    def __init__(self, label: str | None, total: int, *, stream: IO[str] | None = None, tty: bool | None = None,
                 every_fraction: float = LOG_FRACTION, every_s: float = LOG_SECONDS):
        self.label, self.total, self.done = label, max(int(total), 0), 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_fraction, self.every_s = every_fraction, every_s
        self.enabled = bool(label) and self.total > 0
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._started = self._last_time = time.monotonic()
        self._last_done = 0
        self._ended = False

    def start(self) -> Progress:
        """Begin (what ``with`` does); pair with :meth:`close` in a ``finally``."""
        self._started = self._last_time = time.monotonic()
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=True, console=Console(file=self.stream))
            self._bar.start()
            self._task = self._bar.add_task(self.label or "", total=self.total)
        return self

    def close(self) -> None:
        """End: the bar goes away; off a terminal, a last line if the last one was not already the end."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.enabled and not self._ended:
            self._write(closing=True)

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.advance(self._task, n)
                return
            now = time.monotonic()
            step = max(1, int(self.total * self.every_fraction))
            if self.done >= self.total or self.done - self._last_done >= step or now - self._last_time >= self.every_s:
                self._write(now=now)

    def line(self, now: float | None = None) -> str:
        """``label: done/total (pct), rate/s, ETA`` (or the elapsed time once everything is done)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        head = f"{self.label}: {self.done}/{self.total} ({self.done / self.total:.0%}), {rate:.2f}/s"
        if self.done >= self.total:
            return f"{head}, done in {_duration(elapsed)}"
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return f"{head}, ETA {_duration(eta) if eta != float('inf') else '?'}"

    def _write(self, closing: bool = False, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_done, self._last_time = self.done, now
        self._ended = self.done >= self.total
        text = self.line(now)
        if closing and not self._ended:  # left early (an error, a budget stop): say how far it got
            text += " (stopped)"
        print(f"[traitlab {time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)


def track(label: str | None, total: int, **kw: Any) -> Progress:
    """``with track("rating", n) as p: ... p.advance()``: the one way traitlab shows progress."""
    return Progress(label, total, **kw)
