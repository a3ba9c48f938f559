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
    section = text[text.index("## Your own contrast"):text.index("## Extending traitlab")]
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


def test_readme_plugin_registers_a_reward_the_protocol_accepts():
    from traitlab.registry import as_reward, rewards
    from traitlab.types import Dialogue, Message

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Extending traitlab"):text.index("## Measured")]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(block, "README.md", "exec"), {"__name__": "my_plugin"})
    reward = as_reward(rewards.create("shorter"))
    d = Dialogue(id="d", target_role="agent", messages=[Message(role="customer", content="hi"),
                                                        Message(role="agent", content="hello there")])
    (s,) = reward.score([d])
    assert s.score == -11 and s.traits == {"chars": 11.0} and reward.trait_weights() == {"chars": -1.0}
