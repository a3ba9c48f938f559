"""``traitlab align grpo``: TRL's GRPOTrainer with the local reward as its reward function.

The reward function scores each completion as a Dialogue and logs the batch mean of every trait
(``trait/<id>`` in TRL's logs) and the share of scorable completions, so the trainer's own log already
shows what the scalar is made of. KL is TRL's ``beta``; length is bounded by ``max_completion_length`` and,
optionally, priced by ``length_penalty``.

Several GPUs or nodes: ``accelerate launch --config_file my_accelerate.yaml -m traitlab.cli align grpo ...``
(TRL splits the generation and the reward computation across processes itself).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from traitlab.store import Store

from .config import GRPORunConfig
from .pairs import chat, load_prompts, score_completions
from .session import AlignResult, AlignSession


def _text(x: Any) -> str:
    """A TRL prompt/completion (conversational list of messages, or plain text) as text."""
    return x[-1]["content"] if isinstance(x, list) else str(x)


def make_reward_fn(reward: Any, target_role: str, *, length_penalty: float = 0.0,
                   max_completion_length: int | None = None, unparsed_margin: float = 1.0,
                   ) -> Callable[..., list[float]]:
    """A TRL reward function over the local reward. An unparsed completion scores ``unparsed_margin``
    below the batch's lowest parsed one (0 for all when none parses); the length penalty subtracts
    ``length_penalty * tokens / max_completion_length``."""

    def traitlab_reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None,
                        log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        texts = [_text(c) for c in completions]
        ids = [f"c{i}" for i in range(len(texts))]
        scored = score_completions(reward, ids, [_text(p) for p in prompts], texts, target_role)
        parsed = [s.score for s in scored if s is not None]
        floor = min(parsed) - unparsed_margin if parsed else 0.0
        values = [s.score if s is not None else floor for s in scored]
        if length_penalty and completion_ids is not None and max_completion_length:
            values = [v - length_penalty * len(c) / max_completion_length
                      for v, c in zip(values, completion_ids, strict=True)]
        if log_metric is not None:
            log_metric("parse_rate", len(parsed) / max(1, len(scored)))
            for t in sorted({t for s in scored if s is not None for t in s.traits}):
                log_metric(f"trait/{t}", float(np.mean([s.traits[t] for s in scored if s is not None])))
        return values

    return traitlab_reward


def _counted(fn: Callable[..., list[float]], info: dict[str, Any]) -> Callable[..., list[float]]:
    """``fn`` that counts the completions this process scored (TRL splits generation across ranks)."""

    @functools.wraps(fn)
    def counted(*args: Any, **kwargs: Any) -> list[float]:
        values = fn(*args, **kwargs)
        info["scored_completions"] = info.get("scored_completions", 0) + len(values)
        return values

    return counted


def run_grpo(cfg: GRPORunConfig, *, model: Any = None, tokenizer: Any = None, reward: Any = None,
             store: Store | None = None) -> AlignResult:
    """Train GRPO with LoRA against the local reward and monitor every trait; results land in the store."""
    from datasets import Dataset
    from trl import GRPOTrainer

    with AlignSession(cfg, "grpo", model=model, tokenizer=tokenizer, reward=reward, store=store) as session:
        session.begin()
        args = cfg.trl_config()
        prompts = load_prompts(cfg.prompts, cfg.prompt_limit)
        dataset = Dataset.from_list([{"prompt": chat(p.prompt)} for p in prompts])
        fn = _counted(make_reward_fn(session.reward, cfg.target_role, length_penalty=cfg.length_penalty,
                                     max_completion_length=args.max_completion_length,
                                     unparsed_margin=cfg.unparsed_margin), session.rank_info)
        trainer = GRPOTrainer(model=session.model, reward_funcs=[fn], args=args, train_dataset=dataset,
                              processing_class=session.tokenizer, peft_config=cfg.lora.peft_config(),
                              callbacks=[session.monitor()])
        trainer.train(resume_from_checkpoint=cfg.resume or None)
        return session.finish(trainer)
