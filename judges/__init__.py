"""traitlab.judges: LLM judges (client, local provider, rating, aggregation, distilled reward).

The public names load lazily: importing this package (e.g. for the CLI) must not pay for litellm or
torch until a judge or a reward is actually used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CallOutcome": "client", "JudgeClient": "client", "Request": "client",
    "rate_dialogues": "rate",
    "Aggregator": "aggregate", "fit_aggregator": "aggregate",
    "LocalReward": "reward", "load_reward": "reward",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'traitlab.judges' has no attribute {name!r}")
    return getattr(import_module(f"traitlab.judges.{_EXPORTS[name]}"), name)
