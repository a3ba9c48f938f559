"""Rating: an LLM judge scores the target speaker of each dialogue on every trait of a TraitSet.

HAL-style Likert items (1 = strongly disagree ... 5 = strongly agree). ``mode="all"`` asks for all traits
in one structured call whose pydantic model is built from the trait set (one field per trait id, values
constrained to 1..5); ``mode="per_trait"`` asks one call per trait. With ``expected=True`` each rating is
the expected value ``sum_k k P(k)`` of the Likert digit the judge emitted, from the provider's
OpenAI-style logprobs (renormalised over the tokens "1".."5"); where a digit has no logprobs the emitted
digit stands. A failed call is recorded in the store by the client and yields no rating, never a default.

Dialogue text is fenced (:func:`traitlab.prompts.fence`): a speaker who writes "ignore the instructions
above" or tries to close the fence stays inside the untrusted region of the prompt.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from traitlab.prompts import PromptTemplate, fence, load_template
from traitlab.types import Dialogue, TraitRatings, TraitSet

if TYPE_CHECKING:
    from traitlab.judges.client import CallOutcome, JudgeClient, Request
    from traitlab.store import Store

PROMPTS = Path(__file__).parent / "prompts"
LIKERT = ("1", "2", "3", "4", "5")
Likert = Literal[1, 2, 3, 4, 5]
TOP_LOGPROBS = 20
"""Alternatives requested per token for expected scores; the Likert digits are nearly always among them."""
Mode = Literal["all", "per_trait"]
LOCAL_TIMEOUT_S = 900

log = logging.getLogger(__name__)


class OneRating(BaseModel):
    """The answer of a per-trait call."""

    rating: Likert


@functools.lru_cache(maxsize=32)
def _ratings_model(trait_ids: tuple[str, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {f"f{i}": (Likert, Field(alias=tid)) for i, tid in enumerate(trait_ids)}
    # dumped by alias, so what the client caches (``model_dump``) validates again keyed by trait id
    return create_model("TraitLikertRatings", __config__=ConfigDict(serialize_by_alias=True), **fields)


def ratings_model(trait_set: TraitSet) -> type[BaseModel]:
    """A pydantic model with one required field per trait id (JSON key = the id), each an integer 1..5.

    Field order follows the trait set, so a constrained decoder emits the keys in that order.
    """
    return _ratings_model(tuple(trait_set.ids))


def judge_client(model: str, *, store: Store | None = None, run_id: str | None = None, **kwargs: Any
                 ) -> JudgeClient:
    """A JudgeClient for rating and proposing. An in-process ``local/`` model generates one request at a
    time, so it gets concurrency 1 and a long timeout: a request queued behind others must not time out."""
    from traitlab.judges.client import JudgeClient

    if model.startswith("local/"):
        kwargs = {"concurrency": 1, "timeout_s": LOCAL_TIMEOUT_S, **kwargs}
    return JudgeClient(model, store=store, run_id=run_id, **kwargs)


def _template(mode: Mode) -> PromptTemplate:
    return load_template(PROMPTS, "rate_all" if mode == "all" else "rate_one")


def prompt_version(mode: Mode, expected: bool = False) -> str:
    """What a rating records as its prompt: ``name@vN#sha`` (plus ``+expected`` for logprob scores)."""
    t = _template(mode)
    return f"{t.id}#{t.sha}" + ("+expected" if expected else "")


def rating_messages(dialogue: Dialogue, trait_set: TraitSet, mode: Mode = "all",
                    trait_id: str | None = None) -> list[dict[str, str]]:
    """The chat messages asking for ratings of ``dialogue`` (one trait's only when ``mode="per_trait"``)."""
    values = {"target": dialogue.target_role, "dialogue": fence(dialogue.transcript(), "DIALOGUE")}
    if mode == "all":
        values["traits"] = "\n".join(f"- {t.id}: {t.text}" for t in trait_set.traits)
        values["example"] = ", ".join(f'"{tid}": <1-5>' for tid in trait_set.ids[:2])
    else:
        if trait_id is None:
            raise ValueError("per_trait messages need a trait_id")
        values["statement"] = trait_set[trait_id].text
    return _template(mode).render(**values)


def _digit_positions(text: str, keys: Sequence[str]) -> dict[str, int]:
    """Character offset of each key's value digit in a JSON completion (keys searched in order)."""
    out, start = {}, 0
    for key in keys:
        m = re.compile(rf'"{re.escape(key)}"\s*:\s*"?([1-5])').search(text, start)
        if m:
            out[key] = m.start(1)
            start = m.end()
    return out


def expected_scores(logprobs: Sequence[dict[str, Any]] | None, keys: Sequence[str]) -> dict[str, float]:
    """``{key: sum_k k P(k)}`` for each key whose value digit can be found in the OpenAI-style token
    logprobs of a JSON completion; P is renormalised over the tokens "1".."5" (leading spaces ignored)."""
    if not logprobs:
        return {}
    starts, text = [], ""
    for t in logprobs:
        starts.append(len(text))
        text += t["token"] or ""
    out = {}
    for key, pos in _digit_positions(text, keys).items():
        i = max(j for j, s in enumerate(starts) if s <= pos)
        tok = logprobs[i]
        if (tok["token"] or "").strip() not in LIKERT:
            continue  # the digit shares a token with other characters: no clean distribution over 1..5
        probs: dict[str, float] = {}
        for alt in [*(tok.get("top_logprobs") or []), {"token": tok["token"], "logprob": tok["logprob"]}]:
            digit = (alt["token"] or "").strip()
            if digit in LIKERT and alt["logprob"] is not None:
                probs.setdefault(alt["token"], math.exp(alt["logprob"]))
        by_digit = {d: sum(p for t, p in probs.items() if t.strip() == d) for d in LIKERT}
        total = sum(by_digit.values())
        if total > 0:
            out[key] = sum(int(d) * p for d, p in by_digit.items()) / total
    return out


def _requests(dialogues: Sequence[Dialogue], trait_set: TraitSet, mode: Mode, params: dict[str, Any]
              ) -> list[tuple[Dialogue, str | None, Request]]:
    from traitlab.judges.client import Request

    pid = prompt_version(mode)
    if mode == "all":
        schema = ratings_model(trait_set)
        return [(d, None, Request(rating_messages(d, trait_set), schema, pid, params)) for d in dialogues]
    return [(d, tid, Request(rating_messages(d, trait_set, "per_trait", tid), OneRating, pid, params))
            for d in dialogues for tid in trait_set.ids]


def _values(outcome: CallOutcome, trait_ids: list[str], key_of: dict[str, str], expected: bool
            ) -> tuple[dict[str, float], int]:
    """Trait values of one successful call, and how many fell back to the discrete digit."""
    discrete = outcome.value.model_dump(by_alias=True)
    values = {tid: float(discrete[key_of[tid]]) for tid in trait_ids}
    if not expected:
        return values, 0
    soft = expected_scores(outcome.logprobs, [key_of[t] for t in trait_ids])
    values.update({tid: soft[key_of[tid]] for tid in trait_ids if key_of[tid] in soft})
    return values, sum(key_of[t] not in soft for t in trait_ids)


def rate_dialogues(dialogues: Sequence[Dialogue], trait_set: TraitSet, client: JudgeClient, *,
                   mode: Mode = "all", expected: bool = False, progress: str | None = "rating"
                   ) -> list[TraitRatings]:
    """Ratings of each dialogue's target speaker on ``trait_set``, keyed by trait id.

    Calls go through ``client`` (cache, retries, budget, call log); when the client has a store and run id
    the ratings are added to that store with the trait-set hash and prompt version. A dialogue whose call
    failed gets no ratings (per_trait: only its successful traits). Requests use temperature 0 unless the
    client sets one.
    """
    if mode not in ("all", "per_trait"):
        raise ValueError(f"mode must be 'all' or 'per_trait', not {mode!r}")
    params: dict[str, Any] = {} if "temperature" in client.params else {"temperature": 0}
    if expected:
        params |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
    jobs = _requests(dialogues, trait_set, mode, params)
    outcomes = client.call_many([r for _, _, r in jobs], progress=progress)
    version = prompt_version(mode, expected)
    by_dialogue: dict[str, TraitRatings] = {}
    fallbacks = 0
    for (dialogue, tid, _), outcome in zip(jobs, outcomes, strict=True):
        if not outcome.ok:
            continue
        ids = trait_set.ids if tid is None else [tid]
        key_of = {t: t for t in ids} if tid is None else {tid: "rating"}
        values, fell_back = _values(outcome, ids, key_of, expected)
        fallbacks += fell_back
        tr = by_dialogue.setdefault(dialogue.id, TraitRatings(
            dialogue_id=dialogue.id, judge=client.model, ratings={}, trait_set_hash=trait_set.hash,
            prompt_version=version, call_id=outcome.call_id))
        tr.ratings.update(values)
    if fallbacks:
        log.warning("%d rating(s) had no usable Likert logprobs; their emitted digit was kept", fallbacks)
    ratings = [by_dialogue[d.id] for d in dialogues if d.id in by_dialogue]
    if client.store is not None and client.run_id is not None:
        client.store.add_ratings(client.run_id, ratings)
    return ratings


class ScoreResult(BaseModel):
    """What a scoring run produced: the ratings (keyed by trait id) and its bookkeeping."""

    ratings: list[TraitRatings]
    n_dialogues: int
    failed_calls: int
    cost_usd: float
    unrated: int = 0
    errors: list[str] = Field(default_factory=list, description="the failed calls' errors, oldest first")
    run_id: str | None = None


def score(dialogues: Sequence[Dialogue], trait_set: TraitSet, client: JudgeClient | str = "local/smollm2-135m",
          *, mode: Mode = "all", expected: bool = False, budget_usd: float | None = None,
          store: Store | None = None, run_id: str | None = None, config: dict[str, Any] | None = None,
          client_kwargs: dict[str, Any] | None = None) -> ScoreResult:
    """Rate each dialogue's judged speaker on every trait with a judge (a JudgeClient or a LiteLLM name).

    With ``store`` it is one ``score`` run (``run_id`` resumes one: finished calls are cache hits) holding
    the ratings and every call; the run is marked failed when no dialogue was rated. ``client_kwargs``
    (provider settings, ``batch``...) go to the JudgeClient made for a model name.
    """
    if store is None:
        judge = client if not isinstance(client, str) else judge_client(client, budget_usd=budget_usd,
                                                                        **(client_kwargs or {}))
        ratings = rate_dialogues(dialogues, trait_set, judge, mode=mode, expected=expected)
        unrated = len({d.id for d in dialogues} - {r.dialogue_id for r in ratings})
        return ScoreResult(ratings=ratings, n_dialogues=len(dialogues), unrated=unrated,
                           failed_calls=unrated if mode == "all" else 0, cost_usd=0.0)
    from traitlab.console import summarise_failures
    from traitlab.store import now

    model = client if isinstance(client, str) else client.model
    config = config or {"trait_set_hash": trait_set.hash, "judge": model, "mode": mode, "expected": expected}
    with store.running("score", trait_set.name, config, run_id=run_id) as run:
        started = now()
        store.add_dialogues(run, dialogues)
        judge = judge_client(client, store=store, run_id=run, budget_usd=budget_usd, **(client_kwargs or {})) \
            if isinstance(client, str) else client
        ratings = rate_dialogues(dialogues, trait_set, judge, mode=mode, expected=expected)
        errors = store.failed_calls(run, since=started)
        unrated = len({d.id for d in dialogues} - {r.dialogue_id for r in ratings})
        result = ScoreResult(ratings=ratings, n_dialogues=len(dialogues), failed_calls=len(errors), unrated=unrated,
                             errors=errors, cost_usd=store.run_cost(run), run_id=run)
        store.finish_run(run, "done" if not unrated else "partial" if ratings else "failed",
                         {"dialogues": len(dialogues), "rated": len(ratings), "unrated": unrated,
                          "failed_calls": len(errors), "failures": summarise_failures(errors),
                          "cost_usd": result.cost_usd})
    return result


def write_ratings(ratings: Sequence[TraitRatings], path: str | Path) -> Path:
    """Ratings as JSONL ``{"judge", "id", "ratings": {trait_id: value}}`` (what ``load_ratings`` reads)."""
    import json

    path = Path(path)
    path.write_text("".join(json.dumps({"id": r.dialogue_id, "judge": r.judge, "ratings": r.ratings}) + "\n"
                            for r in ratings), encoding="utf-8")
    return path
