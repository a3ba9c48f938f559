"""Progress off a terminal: plain log lines every 5 % (or 30 s) with counts, rate and ETA."""

from __future__ import annotations

import io
import re

from traitlab.progress import track


def test_non_tty_logs_every_five_percent_with_rate_and_eta():
    out = io.StringIO()
    with track("rating", 200, stream=out) as p:   # StringIO is no terminal: log lines, no bar
        for _ in range(200):
            p.advance()
    lines = out.getvalue().splitlines()
    assert len(lines) == 20, lines   # one per 10 items (5 %), the last one says done
    assert re.fullmatch(r"\[traitlab \d\d:\d\d:\d\d\] rating: 10/200 \(5%\), [\d.]+/s, ETA \d+s", lines[0]), lines[0]
    assert "200/200 (100%)" in lines[-1] and "done in" in lines[-1]
    assert "\x1b" not in out.getvalue()   # no terminal control codes in a log file


def test_time_based_lines_and_a_stopped_run():
    out = io.StringIO()
    with track("calls", 1000, stream=out, every_s=0.0) as p:   # every call is "30 s later"
        for _ in range(3):
            p.advance()
    lines = out.getvalue().splitlines()
    assert [re.search(r"(\d+)/1000", ln).group(1) for ln in lines] == ["1", "2", "3", "3"]
    assert lines[-1].endswith("(stopped)")


def test_disabled_and_explicit_start_close():
    out = io.StringIO()
    with track(None, 10, stream=out) as p:
        p.advance(10)
    assert out.getvalue() == ""
    p = track("sampling", 4, stream=out).start()
    p.advance(4)
    p.close()
    assert out.getvalue().count("\n") == 1 and "4/4" in out.getvalue()


def test_tty_uses_the_rich_bar():
    out = io.StringIO()
    with track("rating", 5, stream=out, tty=True) as p:
        assert p._bar is not None
        p.advance(5)
    assert "[traitlab" not in out.getvalue()
