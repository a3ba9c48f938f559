"""The README's library walkthrough runs as written, on the support example."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # embeds statements with MiniLM
def test_readme_walkthrough_runs(monkeypatch):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Your own contrast"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(REPO)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    out = printed.getvalue()
    assert out.startswith("40 tickets; replies of top-rated support agents")
    assert "traits that separate the sides: ['empathy', 'next_step'" in out
    accuracy = float(re.search(r"pairwise accuracy over tickets: ([0-9.]+)", out).group(1))
    assert accuracy >= 0.9
