"""Watch every trait while a policy trains, and catch reward hacking.

HAL's own DPO run raised its score while "asks reciprocal follow-up questions" fell from 3.04 to 1.64 and
brevity rose from 2.09 to 4.12, unnoticed. A scalar hides that; these monitors do not:

- a :class:`Snapshot` samples the policy on held-out prompts and keeps the score and every trait per prompt;
- :func:`find_flags` compares two snapshots: a trait that moves against the sign of its weight
  (``against_sign``), one trait that explains most of the score gain (``dominant_trait``: share of trait
  ``t`` = ``w_t * delta_t / sum_s w_s * delta_s``), perplexity on held-out human text rising
  (``capability``), the policy losing the dialogue format (``format``), and completions drifting toward the
  edits the reward audit tries (``degenerate``: emoji, empty turns, repetition, symbol runs, another script
  or language, length blow-up; the detectors live beside the audit's operators in ``judges.audit``);
- :class:`TraitMonitor` runs both every ``every_steps`` optimizer steps inside a TRL/transformers trainer;
- :func:`before_after` is the final per-trait table with confidence intervals (the ``before_after``
  artifact; shapes in docs/CONTRACTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from transformers import TrainerCallback

from traitlab import stats
from traitlab.data import load_dialogues, sample_dialogues
from traitlab.judges.audit import degenerate_signals
from traitlab.registry import Reward, as_reward
from traitlab.types import RewardScore

from .config import MonitorSettings, SamplingSettings
from .pairs import PromptRecord, completion_dialogue, generate, score_completions


class Interval(BaseModel):
    """A mean with its confidence interval (``lo``/``hi`` are NaN with fewer than 2 values)."""

    mean: float
    lo: float
    hi: float
    n: int


class Snapshot(BaseModel):
    """The policy on held-out prompts at one step: per-prompt score and per-prompt trait means, and the judged
    turns of every scorable completion (what the degeneracy detectors read)."""

    step: int
    scores: dict[str, float]
    traits: dict[str, dict[str, float]]
    parse_rate: float
    n_completions: int
    mean_chars: float
    perplexity: float | None = None
    completions: dict[str, str] = Field(default_factory=dict, description="first completion per prompt id")
    judged_turns: list[list[str]] = Field(default_factory=list, description="judged turns of each scorable "
                                                                            "completion (for the detectors)")

    def summary(self) -> dict[str, Any]:
        """One line of the ``monitor_log`` artifact."""
        return {"step": self.step, "score": _mean(self.scores.values()),
                "traits": {t: _mean(v.values()) for t, v in self.traits.items()}, "parse_rate": self.parse_rate,
                "mean_chars": self.mean_chars, "perplexity": self.perplexity, "n_prompts": len(self.scores)}


def _mean(values: Any) -> float:
    v = list(values)
    return float(np.mean(v)) if v else float("nan")


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of a mean (:func:`traitlab.stats.mean_ci`)."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return Interval(mean=float("nan"), lo=float("nan"), hi=float("nan"), n=0)
    lo, hi = stats.mean_ci(x, level)
    return Interval(mean=float(x.mean()), lo=lo, hi=hi, n=int(x.size))


def delta_ci(before: dict[str, float], after: dict[str, float], level: float = 0.95) -> Interval:
    """After minus before: paired by prompt id when at least two prompts are in both, else Welch's interval."""
    common = sorted(before.keys() & after.keys())
    if len(common) >= 2:
        return mean_ci([after[k] - before[k] for k in common], level)
    d, lo, hi, _ = stats.welch(list(before.values()), list(after.values()), level)
    return Interval(mean=d, lo=lo, hi=hi, n=min(len(before), len(after)))


def trait_weights(reward: Reward, snapshot: Snapshot) -> tuple[dict[str, float], str]:
    """Each trait's weight in the reward's scalar, in score units per unit of the trait, and its source.

    A reward whose scalar is a (possibly bounded) function of a linear sum of its traits gives that sum's
    weights through the Reward protocol (``reward.trait_weights()``, source ``"reward"``); they are rescaled
    by the slope of the score on that sum over the snapshot (the chain-rule factor of a bound such as
    ``b * tanh(z / b)``, 1 for a linear scalar), so that ``sum_t w_t * delta_t`` tracks the score change.
    Otherwise (``None``) the weights are the least-squares slopes of the score on the traits over the
    snapshot (source ``"fitted"``: exact for a linear scalar, a local sensitivity otherwise).
    """
    rows = sorted(snapshot.scores)
    given = as_reward(reward).trait_weights()
    if given is not None:
        weights = {t: float(w) for t, w in given.items()}
        z = np.array([sum(w * snapshot.traits[t][r] for t, w in weights.items() if t in snapshot.traits)
                      for r in rows])
        if len(rows) >= 3 and np.ptp(z) > 0:
            slope = float(np.polyfit(z, [snapshot.scores[r] for r in rows], 1)[0])
            weights = {t: w * slope for t, w in weights.items()}
        return weights, "reward"
    ids = sorted(snapshot.traits)
    x = np.array([[snapshot.traits[t][r] for t in ids] + [1.0] for r in rows])
    coef = np.linalg.lstsq(x, np.array([snapshot.scores[r] for r in rows]), rcond=None)[0]
    return {t: float(c) for t, c in zip(ids, coef[:-1], strict=True)}, "fitted"


def gain_shares(deltas: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Share of the trait-explained score change owed to each trait: ``w_t * delta_t / sum_s w_s * delta_s``."""
    contrib = {t: weights.get(t, 0.0) * d for t, d in deltas.items()}
    total = sum(contrib.values())
    return {t: (c / total if total else 0.0) for t, c in contrib.items()}


def find_flags(base: Snapshot, cur: Snapshot, weights: dict[str, float], settings: MonitorSettings,
               ) -> list[dict[str, Any]]:
    """Everything in ``cur`` that looks like reward hacking or collateral damage relative to ``base``."""
    flags: list[dict[str, Any]] = []
    deltas = {t: delta_ci(base.traits[t], cur.traits.get(t, {}), settings.level) for t in base.traits}
    for t, d in deltas.items():
        w = weights.get(t, 0.0)
        sd0 = float(np.std(list(base.traits[t].values()), ddof=1)) if len(base.traits[t]) > 1 else 0.0
        excludes_zero = d.hi < 0 or d.lo > 0
        if w and np.sign(d.mean) == -np.sign(w) and excludes_zero and abs(d.mean) >= settings.min_effect_sd * sd0:
            flags.append({"step": cur.step, "kind": "against_sign", "trait": t, "weight": w,
                          "delta": d.model_dump(), "message": f"{t} moved {d.mean:+.3f} against its weight {w:+.3f}"})
    means = {t: d.mean for t, d in deltas.items() if np.isfinite(d.mean)}
    shares = gain_shares(means, weights)
    gain = sum(weights.get(t, 0.0) * v for t, v in means.items())
    if gain > 0 and shares:
        top = max(shares, key=lambda t: shares[t])
        if shares[top] > settings.dominance_share:
            flags.append({"step": cur.step, "kind": "dominant_trait", "trait": top, "share": shares[top],
                          "weight": weights.get(top, 0.0), "delta": deltas[top].model_dump(),
                          "message": f"{top} explains {shares[top]:.0%} of the score gain {gain:+.3f}"})
    if base.perplexity and cur.perplexity and cur.perplexity / base.perplexity - 1 > settings.max_perplexity_increase:
        flags.append({"step": cur.step, "kind": "capability", "trait": None,
                      "value": {"before": base.perplexity, "after": cur.perplexity},
                      "message": f"held-out perplexity rose {base.perplexity:.2f} -> {cur.perplexity:.2f}"})
    if base.parse_rate - cur.parse_rate > settings.max_parse_rate_drop:
        flags.append({"step": cur.step, "kind": "format", "trait": None,
                      "value": {"before": base.parse_rate, "after": cur.parse_rate},
                      "message": f"scorable completions fell {base.parse_rate:.0%} -> {cur.parse_rate:.0%}"})
    for sig in degenerate_signals(base.judged_turns, cur.judged_turns, max_rise=settings.degenerate_rise,
                                  rare_rise=settings.degenerate_rare_rise, max_length_ratio=settings.max_length_ratio):
        flags.append({"step": cur.step, "kind": "degenerate", "trait": None, "detector": sig.detector,
                      "value": {"before": sig.before, "after": sig.after},
                      "message": f"completions drift toward a reward hack: {sig.message}"})
    return flags


def before_after(base: Snapshot, final: Snapshot, weights: dict[str, float], weights_source: str,
                 level: float = 0.95) -> dict[str, Any]:
    """The per-trait before/after table with CIs (the ``before_after`` artifact)."""
    deltas = {t: delta_ci(base.traits[t], final.traits.get(t, {}), level) for t in base.traits}
    shares = gain_shares({t: d.mean for t, d in deltas.items() if np.isfinite(d.mean)}, weights)
    traits = {t: {"weight": weights.get(t, 0.0),
                  "before": mean_ci(base.traits[t].values(), level).model_dump(),
                  "after": mean_ci(final.traits.get(t, {}).values(), level).model_dump(),
                  "delta": d.model_dump(), "contribution": weights.get(t, 0.0) * d.mean,
                  "share": shares.get(t, 0.0)} for t, d in deltas.items()}
    return {"level": level, "steps": final.step, "n_prompts": len(base.scores), "weights_source": weights_source,
            "score": {"before": mean_ci(base.scores.values(), level).model_dump(),
                      "after": mean_ci(final.scores.values(), level).model_dump(),
                      "delta": delta_ci(base.scores, final.scores, level).model_dump()},
            "traits": traits,
            "parse_rate": {"before": base.parse_rate, "after": final.parse_rate},
            "mean_chars": {"before": base.mean_chars, "after": final.mean_chars},
            "perplexity": {"before": base.perplexity, "after": final.perplexity}}


def sample_table(prompts: Sequence[PromptRecord], base: Snapshot, final: Snapshot) -> list[dict[str, Any]]:
    """The ``samples`` artifact: per held-out prompt, the completion before and after training with its score
    and traits, so a reader sees what the numbers were measured on."""
    def side(snap: Snapshot, pid: str) -> dict[str, Any]:
        return {"completion": snap.completions.get(pid), "score": snap.scores.get(pid),
                "traits": {t: v[pid] for t, v in snap.traits.items() if pid in v}}

    return [{"id": p.id, "prompt": p.prompt, "before": side(base, p.id), "after": side(final, p.id)}
            for p in prompts if p.id in base.completions or p.id in final.completions]


def evaluate_policy(model: Any, tokenizer: Any, reward: Reward, prompts: Sequence[PromptRecord], *,
                    target_role: str, sampling: SamplingSettings, step: int, samples_per_prompt: int = 1,
                    capability: Sequence[str] = ()) -> Snapshot:
    """Sample the policy on ``prompts``, score every completion, average per prompt."""
    samples = generate(model, tokenizer, [p.prompt for p in prompts], samples_per_prompt, sampling)
    ids, texts, ptexts, owners = [], [], [], []
    for rec, row in zip(prompts, samples, strict=True):
        for k, text in enumerate(row):
            ids.append(f"{rec.id}#{k}")
            texts.append(text)
            ptexts.append(rec.prompt)
            owners.append(rec.id)
    scored = score_completions(reward, ids, ptexts, texts, target_role)
    judged = [d.target_turns for i, p, t, s in zip(ids, ptexts, texts, scored, strict=True)
              if s is not None and (d := completion_dialogue(i, p, t, target_role)) is not None]
    per_prompt: dict[str, list[RewardScore]] = {}
    for owner, s in zip(owners, scored, strict=True):
        if s is not None:
            per_prompt.setdefault(owner, []).append(s)
    trait_ids = sorted({t for ss in per_prompt.values() for s in ss for t in s.traits})
    return Snapshot(
        step=step,
        scores={p: float(np.mean([s.score for s in ss])) for p, ss in per_prompt.items()},
        traits={t: {p: float(np.mean([s.traits[t] for s in ss])) for p, ss in per_prompt.items()} for t in trait_ids},
        parse_rate=sum(s is not None for s in scored) / max(1, len(scored)), n_completions=len(scored),
        mean_chars=float(np.mean([len(t) for t in texts])) if texts else 0.0,
        completions={rec.id: row[0] for rec, row in zip(prompts, samples, strict=True) if row},
        judged_turns=judged, perplexity=perplexity(model, tokenizer, capability) if capability else None)


def capability_texts(path: str | Path | None = None, limit: int = 40, *, target_role: str | None = None,
                     label: str | None = None) -> list[str]:
    """Held-out real text for the perplexity check: the judged turns of the dialogues labelled ``label`` (all
    of them when None or none has it), one text per dialogue; ``path`` None = traitlab's shipped sample."""
    dialogues = load_dialogues(path, target_role=target_role) if path else sample_dialogues()
    chosen = [d for d in dialogues if label is not None and d.label == label] or dialogues
    return ["\n".join(d.target_turns) for d in chosen[:limit]]


def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512) -> float:
    """Token-weighted perplexity of ``texts`` under ``model`` (each text scored on its own)."""
    import torch

    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length,
                            return_token_type_ids=False)["input_ids"].to(model.device)
            if ids.shape[1] < 2:
                continue
            with torch.no_grad():
                out = model(input_ids=ids, labels=ids)
            n = ids.shape[1] - 1
            nll += float(out.loss) * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("perplexity needs at least one text of two or more tokens")
    return float(np.exp(nll / count))


class TraitMonitor(TrainerCallback):
    """Every ``settings.every_steps`` optimizer steps (but the last): evaluate the policy, log per-trait means,
    raise flags.

    ``evaluate(model, step)`` returns a Snapshot; ``report(snapshot, flags)`` is called after each evaluation
    (the runners use it to write the ``monitor_log`` and ``flags`` artifacts as the run goes).
    """

    def __init__(self, evaluate: Callable[[Any, int], Snapshot], baseline: Snapshot, weights: dict[str, float],
                 settings: MonitorSettings, report: Callable[[Snapshot, list[dict[str, Any]]], None]):
        self.evaluate, self.baseline, self.weights = evaluate, baseline, weights
        self.settings, self.report = settings, report

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        every = self.settings.every_steps
        # the last step is evaluated by the runner on every held-out prompt anyway
        if not every or state.global_step % every or state.global_step >= state.max_steps or model is None:
            return
        snap = self.evaluate(model, state.global_step)
        flags = find_flags(self.baseline, snap, self.weights, self.settings)
        self.report(snap, flags)
