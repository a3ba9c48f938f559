"""The built-in scorers and the one place a run's scores are recorded (see :class:`traitlab.registry.Scorer`).

- ``reward``: any reward (a name in the ``rewards`` registry with its params, ``default`` = the shipped
  local reward, or a saved reward folder): the scalar per dialogue and its per-trait values.
- ``judge``: an LLM judge (any LiteLLM model) rating every dialogue on a trait set, through the real judge
  path (JudgeClient + rate_dialogues: cached, logged with the run).

What lands in the store for each scorer: its ratings (judge = the scorer's name), its scalars in artifact
``scorer:<name>`` = ``{"name", "scores": {dialogue_id: float}, "done": [dialogue_id], "trait_set_hash"}``,
and its trait set in ``trait_set:<name>``. For the report, the first scorer with scalars also writes
``scores`` (and its trait set ``reward_trait_set``); the first without, ``trait_set``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from traitlab.registry import Reward, Scorer, ScoreResult, ScoringContext, as_reward, as_scorer, rewards, scorer
from traitlab.store import Store
from traitlab.types import Dialogue, TraitRatings, TraitSet

SCORES_ARTIFACT = "scores"
"""Artifact of an eval run: ``{"scorer": name, "scores": {dialogue_id: scalar}}`` (higher = more positive)."""
TRAIT_SET_ARTIFACT = "trait_set"
"""The trait set an LLM judge rated the run on (JSON of a TraitSet); the reward's goes in the next one."""
REWARD_TRAIT_SET_ARTIFACT = "reward_trait_set"
"""Written here, read by the report; kept here so loading the scorers (every command) never imports it."""

REWARD_SCORER = "local-reward"
"""The default name the ``reward`` scorer stores its ratings and scores under."""


class RewardScorer:
    """Scores with a :class:`~traitlab.registry.Reward`, loaded on first use (a suite loads cheaply)."""

    def __init__(self, reward: str | Reward = "default", *, name: str = REWARD_SCORER,
                 params: dict[str, Any] | None = None):
        self._spec, self._params, self._reward = reward, params or {}, None
        self._name = name
        if not isinstance(reward, str):
            self._reward = as_reward(reward)

    @property
    def name(self) -> str:
        return self._name

    def reward(self, ctx: ScoringContext | None = None) -> Reward:
        """The reward: a registered name (with params), ``default`` (the shipped one) or a saved folder."""
        if self._reward is None:
            spec = str(self._spec)
            if spec in rewards:
                self._reward = as_reward(rewards.create(spec, **self._params), f"reward {spec!r}")
            else:
                from traitlab.judges.reward import load_reward

                path = None if spec == "default" else (ctx.resolve(spec) if ctx else spec)
                self._reward = as_reward(load_reward(path), f"reward {spec!r}")
        return self._reward

    def score(self, dialogues: Sequence[Dialogue], ctx: ScoringContext) -> ScoreResult:
        reward = self.reward(ctx)
        ts = reward.trait_set
        out = reward.score(dialogues)
        return ScoreResult(scores={s.id: s.score for s in out}, trait_set=ts,
                           ratings=[TraitRatings(dialogue_id=s.id, judge=self.name, ratings=s.traits,
                                                 trait_set_hash=ts.hash) for s in out if s.traits])


class JudgeScorer:
    """An LLM judge rating each dialogue's judged speaker on a trait set (``traitlab12`` or a file); its
    results are stored under the model's name (the judge path records ratings by model)."""

    def __init__(self, model: str, *, trait_set: str | TraitSet = "traitlab12", mode: str = "all",
                 params: dict[str, Any] | None = None):
        if mode not in ("all", "per_trait"):
            raise ValueError(f"mode must be 'all' or 'per_trait', not {mode!r}")
        self.model, self._trait_set, self.mode, self.params = model, trait_set, mode, params or {}

    @property
    def name(self) -> str:
        return self.model

    def trait_set(self, ctx: ScoringContext | None = None) -> TraitSet:
        from traitlab.data import load_trait_set, sample_trait_set

        if isinstance(self._trait_set, TraitSet):
            return self._trait_set
        if self._trait_set == "traitlab12":
            return sample_trait_set()
        return load_trait_set(ctx.resolve(self._trait_set) if ctx else self._trait_set)

    def score(self, dialogues: Sequence[Dialogue], ctx: ScoringContext) -> ScoreResult:
        from traitlab.judges.rate import judge_client, rate_dialogues

        ts = self.trait_set(ctx)
        client = judge_client(self.model, store=ctx.store, run_id=ctx.run_id, **self.params)
        ratings = rate_dialogues(dialogues, ts, client, mode=self.mode)  # type: ignore[arg-type]
        return ScoreResult(ratings=ratings, trait_set=ts)


@scorer("reward")
def reward_scorer(reward: str = "default", name: str = REWARD_SCORER, params: dict[str, Any] | None = None
                  ) -> RewardScorer:
    """A reward as a scorer: ``reward`` is a registered reward name, ``default`` or a saved reward folder."""
    return RewardScorer(reward, name=name, params=params)


@scorer("judge")
def judge_scorer(model: str, trait_set: str = "traitlab12", mode: str = "all",
                 params: dict[str, Any] | None = None) -> JudgeScorer:
    """An LLM judge (any LiteLLM model) on a trait set (``traitlab12`` = the shipped one, or a file)."""
    return JudgeScorer(model, trait_set=trait_set, mode=mode, params=params)


class ScorerSummary(BaseModel):
    """One scorer's outcome on a run: dialogues it has scored in all, and the mean scalar (None: none)."""

    scored: int
    mean: float | None


def _artifact(store: Store, run_id: str, name: str) -> Any:
    try:
        return store.artifact(run_id, name)
    except KeyError:
        return None


def _trait_set_body(ts: TraitSet) -> dict[str, Any]:
    return {**ts.model_dump(mode="json"), "hash": ts.hash}


def score_run(store: Store, run_id: str, dialogues: Sequence[Dialogue], scorers: Sequence[Scorer], *,
              ctx: ScoringContext | None = None) -> dict[str, ScorerSummary]:
    """Score the run's dialogues each scorer has not scored yet, and record what it says (layout above).

    A dialogue a scorer returned nothing for (a failed judge call) stays unscored and is asked again when the
    run resumes; ratings a scorer already put in the store itself are not added twice.
    """
    ctx = ctx or ScoringContext(store=store, run_id=run_id)
    names = [as_scorer(s).name for s in scorers]
    if len(set(names)) < len(names):
        raise ValueError(f"two scorers share a name ({', '.join(names)}); give one a 'name'")
    out: dict[str, ScorerSummary] = {}
    primary_scalar = primary_traits = None
    for s in scorers:
        key = f"scorer:{s.name}"
        art = _artifact(store, run_id, key) or {"name": s.name, "scores": {}, "done": [], "trait_set_hash": None}
        done = set(art["done"])
        todo = [d for d in dialogues if d.id not in done]
        result = s.score(todo, ctx) if todo else ScoreResult()
        if result.trait_set is not None:
            store.put_artifact(run_id, f"trait_set:{s.name}", _trait_set_body(result.trait_set))
            art["trait_set_hash"] = result.trait_set.hash
        if result.ratings:
            have = {(r.dialogue_id, r.judge) for r in store.ratings(run_id)}
            store.add_ratings(run_id, [r for r in result.ratings if (r.dialogue_id, r.judge) not in have])
        art["scores"].update({k: float(v) for k, v in result.scores.items()})
        art["done"] = sorted(done | set(result.scores) | {r.dialogue_id for r in result.ratings})
        store.put_artifact(run_id, key, art)
        has_scalars = bool(art["scores"])
        if has_scalars and primary_scalar is None:
            primary_scalar = s.name
            store.put_artifact(run_id, SCORES_ARTIFACT, {"scorer": s.name, "scores": art["scores"]})
        ts_art = _artifact(store, run_id, f"trait_set:{s.name}")
        if ts_art is not None:
            if has_scalars and primary_scalar == s.name:
                store.put_artifact(run_id, REWARD_TRAIT_SET_ARTIFACT, ts_art)
            elif not has_scalars and primary_traits is None:
                primary_traits = s.name
                store.put_artifact(run_id, TRAIT_SET_ARTIFACT, ts_art)
        out[s.name] = ScorerSummary(scored=len(art["done"]),
                                    mean=float(np.mean(list(art["scores"].values()))) if has_scalars else None)
    return out
