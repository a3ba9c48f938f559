"""Prompts in, scored samples and preference pairs out: the data side of alignment.

A completion is scored as a Dialogue. When the prompts ask for a whole conversation, the policy writes
tagged lines (a preset's one-letter tags) and the judged role's turns are scored; for plain chat prompts
(``target_role="assistant"``) the completion is the assistant's reply to the prompt. A completion in which
the judged speaker never speaks has no score (``None``): it is a format failure, not a low score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from traitlab.data import DataError, parse_tagged_transcript, read_jsonl, transcript_tags
from traitlab.types import Dialogue, Message, RewardScore

from .config import SamplingSettings


class PromptRecord(BaseModel):
    """One generation prompt (``id``, ``prompt``; anything else, e.g. ``persona_id``, is kept in ``meta``)."""

    id: str
    prompt: str = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)


class PreferencePair(BaseModel):
    """A chosen/rejected completion of one prompt with the reward's scores (``None`` = unparsed)."""

    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float | None


def load_prompts(path: str | Path, limit: int | None = None) -> list[PromptRecord]:
    """Read a prompts JSONL (``{"id"?, "prompt", ...}`` per line); ids must be unique."""
    path = Path(path)
    out: list[PromptRecord] = []
    seen: dict[str, int] = {}
    for n, obj in read_jsonl(path):
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(path, n, "prompt", "missing or empty string")
        pid = str(obj.get("id", f"{path.stem}-{n}"))
        if pid in seen:
            raise DataError(path, n, "id", f"duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = n
        out.append(PromptRecord(id=pid, prompt=prompt,
                                meta={k: v for k, v in obj.items() if k not in ("id", "prompt")}))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(path, None, None, "no prompts in file")
    return out


def chat(prompt: str) -> list[dict[str, str]]:
    """The conversational form TRL's trainers take for a prompt."""
    return [{"role": "user", "content": prompt}]


def completion_dialogue(dialogue_id: str, prompt: str, completion: str, target_role: str) -> Dialogue | None:
    """The Dialogue the reward judges, or None when the target never speaks in the completion."""
    if target_role in transcript_tags().values():
        messages = parse_tagged_transcript(completion.split("</dialogue>")[0])
    else:
        messages = [Message(role="user", content=prompt), Message(role=target_role, content=completion)]
    if not any(m.role == target_role for m in messages):
        return None
    return Dialogue(id=dialogue_id, messages=messages, target_role=target_role)


def score_completions(reward: Any, ids: Sequence[str], prompts: Sequence[str], completions: Sequence[str],
                      target_role: str) -> list[RewardScore | None]:
    """Score completions with a LocalReward in one batch; unparsed completions get ``None``."""
    dialogues = [completion_dialogue(i, p, c, target_role) for i, p, c in zip(ids, prompts, completions, strict=True)]
    parsed = [d for d in dialogues if d is not None]
    by_id = {s.id: s for s in reward.score(parsed)} if parsed else {}
    return [by_id[d.id] if d is not None else None for d in dialogues]


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], n: int, settings: SamplingSettings,
             ) -> list[list[str]]:
    """``n`` sampled completions per prompt (chat template applied), batched by similar prompt length."""
    import torch

    from traitlab.progress import track

    texts = [tokenizer.apply_chat_template(chat(p), add_generation_prompt=True, tokenize=False) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_batch = max(1, settings.batch_size // n)
    out: list[list[str]] = [[] for _ in texts]
    was_training = model.training
    model.eval()
    bar = track("sampling completions", len(texts) * n).start()
    try:
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left",
                            add_special_tokens=False, return_token_type_ids=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=True, num_return_sequences=n,
                                     max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                     top_p=settings.top_p, pad_token_id=tokenizer.pad_token_id)
            decoded = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = [t.strip() for t in decoded[j * n:(j + 1) * n]]
            bar.advance(len(idx) * n)
    finally:
        bar.close()
        model.train(was_training)
    return out


def build_pairs(prompts: Sequence[PromptRecord], samples: Sequence[Sequence[str]],
                scores: Sequence[Sequence[RewardScore | None]], *, min_gap_sd: float,
                pair_unparsed: bool = True) -> list[PreferencePair]:
    """Best vs worst completion of each prompt when their score gap exceeds ``min_gap_sd`` times the SD of
    all parsed scores of the sampled set (HAL's rule). An unparsed completion ranks below every parsed one
    and, with ``pair_unparsed``, is a valid rejected whatever the gap."""
    values = [s.score for row in scores for s in row if s is not None]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    pairs = []
    for rec, texts, row in zip(prompts, samples, scores, strict=True):
        parsed = [(s.score, t) for s, t in zip(row, texts, strict=True) if s is not None]
        if not parsed:
            continue
        best_score, best = max(parsed, key=lambda x: x[0])
        failed = [t for s, t in zip(row, texts, strict=True) if s is None]
        if pair_unparsed and failed:
            pairs.append(PreferencePair(prompt_id=rec.id, prompt=rec.prompt, chosen=best, rejected=failed[0],
                                        chosen_score=best_score, rejected_score=None))
            continue
        worst_score, worst = min(parsed, key=lambda x: x[0])
        if len(parsed) > 1 and best_score - worst_score > min_gap_sd * sd:
            pairs.append(PreferencePair(prompt_id=rec.id, prompt=rec.prompt, chosen=best, rejected=worst,
                                        chosen_score=best_score, rejected_score=worst_score))
    return pairs


def pairs_dataset(pairs: Sequence[PreferencePair]) -> Any:
    """The conversational preference dataset TRL's DPOTrainer takes."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": chat(p.prompt), "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])
