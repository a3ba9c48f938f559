"""The public library: one function per stage of the loop, and the nouns they take and return.

Everything here is imported on first use, so ``import traitlab`` stays light (no torch, sklearn or LiteLLM
until a stage runs); ``traitlab.discover`` and friends resolve through this table::

    import traitlab

    dialogues = traitlab.load_dialogues("pairs.jsonl", target_role="agent")
    contrast = traitlab.Contrast.load("contrast.yaml")
    found = traitlab.discover(dialogues, "local/smollm2-135m", contrast)
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS: dict[str, str] = {
    # the loop
    "discover": "traitlab.discovery.discover:discover",
    "score": "traitlab.judges.rate:score",
    "validate": "traitlab.discovery.validate:validate",
    "fit": "traitlab.judges.aggregate:fit",
    "distill": "traitlab.judges.reward:distill",
    "load_reward": "traitlab.judges.reward:load_reward",
    "audit": "traitlab.judges.audit:audit",
    "audit_folds": "traitlab.judges.audit:audit_folds",
    "evaluate": "traitlab.evals.generate:evaluate",
    "load_suite": "traitlab.evals.suite:load_suite",
    "align_dpo": "traitlab.alignment.dpo:run_dpo",
    "align_grpo": "traitlab.alignment.grpo:run_grpo",
    "report": "traitlab.evals.report:build_report",
    # results
    "DiscoveryResult": "traitlab.discovery.discover:DiscoveryResult",
    "ScoreResult": "traitlab.judges.rate:ScoreResult",
    "ValidationReport": "traitlab.discovery.validate:ValidationReport",
    "FitResult": "traitlab.judges.aggregate:FitResult",
    "Aggregator": "traitlab.judges.aggregate:Aggregator",
    "AuditReport": "traitlab.judges.audit:AuditReport",
    # nouns and loaders
    "Contrast": "traitlab.contrast:Contrast",
    "Dialogue": "traitlab.types:Dialogue",
    "DialoguePair": "traitlab.types:DialoguePair",
    "Message": "traitlab.types:Message",
    "Trait": "traitlab.types:Trait",
    "TraitSet": "traitlab.types:TraitSet",
    "TraitRatings": "traitlab.types:TraitRatings",
    "RewardScore": "traitlab.types:RewardScore",
    "DataError": "traitlab.data:DataError",
    "load_dialogues": "traitlab.data:load_dialogues",
    "load_ratings": "traitlab.data:load_ratings",
    "load_trait_set": "traitlab.data:load_trait_set",
    "load_proposals": "traitlab.data:load_proposals",
    "pair_dialogues": "traitlab.data:pair_dialogues",
    "write_ratings": "traitlab.judges.rate:write_ratings",
    "judge_client": "traitlab.judges.rate:judge_client",
    "Store": "traitlab.store:Store",
    # seams
    "Reward": "traitlab.registry:Reward",
    "reward": "traitlab.registry:reward",
    "scorer": "traitlab.registry:scorer",
    "scenario": "traitlab.registry:scenario",
    "load_plugins": "traitlab.registry:load_plugins",
    "get_preset": "traitlab.presets:get_preset",
}
"""Public name -> ``module:attribute``."""

__all__ = sorted(EXPORTS)


def resolve(name: str) -> Any:
    """The object a public name stands for (imports its module)."""
    try:
        target = EXPORTS[name]
    except KeyError:
        raise AttributeError(f"traitlab has no public name {name!r}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def __getattr__(name: str) -> Any:
    if name in EXPORTS:
        value = resolve(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'traitlab.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS})
