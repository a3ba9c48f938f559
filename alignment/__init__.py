"""traitlab.alignment: train a policy against the local reward (DPO, GRPO with LoRA) and watch every trait.

Names load lazily so that ``traitlab --help`` does not import torch or TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DPORunConfig": "config", "GRPORunConfig": "config", "load_config": "config",
    "PromptRecord": "pairs", "PreferencePair": "pairs", "load_prompts": "pairs", "build_pairs": "pairs",
    "Snapshot": "monitors", "TraitMonitor": "monitors", "find_flags": "monitors", "before_after": "monitors",
    "AlignResult": "session", "run_dpo": "dpo", "run_grpo": "grpo", "make_reward_fn": "grpo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
