"""The offline ``local/...`` LiteLLM provider: plain chat, enforced JSON schemas, logprobs, instructor, async."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Literal

import instructor
import litellm
import pytest
from pydantic import BaseModel, Field

from traitlab.judges.local import INSTRUCTOR_MODE, STRING_CAP, bounded_schema, register_local_provider

MODEL = "local/smollm2-135m"
TRAITS = ["warmth", "humour", "typos", "hedging", "brevity"]
DIALOGUE = "Interrogator: hi, are you a bot?\nWitness: lol no. r u?"


class Scores(BaseModel):
    warmth: Literal[1, 2, 3, 4, 5]
    humour: Literal[1, 2, 3, 4, 5]
    typos: Literal[1, 2, 3, 4, 5]
    hedging: Literal[1, 2, 3, 4, 5]
    brevity: Literal[1, 2, 3, 4, 5]


class Rating(BaseModel):
    scores: Scores
    reason: str = Field(max_length=24)


class Warmth(BaseModel):
    warmth: int = Field(ge=1, le=5)  # a bounded int, not an enum: the provider must still keep it in 1..5


class Judgement(BaseModel):
    likert: Warmth  # a nested model reaches the provider as a $ref into $defs
    why: str = Field(max_length=12)


def _rate_messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Rate the witness 1-5 on {', '.join(TRAITS)}.\n{DIALOGUE}"}]


@pytest.fixture(scope="module")
def local() -> str:
    register_local_provider()
    return MODEL


def test_bounded_schema_caps_strings_and_turns_int_ranges_into_enums():
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "string"},
            "short": {"type": "string", "maxLength": 5},
            "choice": {"type": "string", "enum": ["a", "b"]},
            "likert": {"type": "integer", "minimum": 1, "maximum": 5},
            "open": {"type": "integer", "minimum": 0},
            "nested": {"$ref": "#/$defs/Inner"},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"why": {"type": "string"}}}},
    }
    out = bounded_schema(schema)
    props = out["properties"]
    assert props["free"]["maxLength"] == STRING_CAP
    assert props["short"]["maxLength"] == 5
    assert "maxLength" not in props["choice"]
    assert props["likert"]["enum"] == [1, 2, 3, 4, 5]
    assert "enum" not in props["open"]
    assert out["$defs"]["Inner"]["properties"]["why"]["maxLength"] == STRING_CAP
    assert "maxLength" not in schema["properties"]["free"], "the caller's schema must not be modified"


def test_register_is_idempotent():
    register_local_provider()
    register_local_provider()
    assert [p["provider"] for p in litellm.custom_provider_map].count("local") == 1


def test_unknown_model_names_the_known_ones(local):
    with pytest.raises(litellm.NotFoundError, match=r"unknown local model 'nope'.*smollm2-135m"):
        litellm.completion(model="local/nope", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.slow
def test_plain_chat_text_usage_cost_and_stop(local):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = litellm.completion(model=local, messages=messages, max_tokens=12, temperature=0)
    text = r.choices[0].message.content
    assert text.strip()
    assert r.usage.prompt_tokens > 10
    assert 0 < r.usage.completion_tokens <= 12
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert litellm.completion_cost(r) == 0.0

    word = text.split()[1]  # greedy decoding is deterministic, so the same text comes again up to the stop
    stopped = litellm.completion(model=local, messages=messages, max_tokens=12, temperature=0, stop=[word])
    assert stopped.choices[0].message.content == text[: text.index(word)]
    assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_sampling_follows_the_seed(local):
    messages = [{"role": "user", "content": "Say something."}]

    def sample(seed: int) -> str:
        r = litellm.completion(model=local, messages=messages, max_tokens=6, temperature=1.0, seed=seed)
        return r.choices[0].message.content

    assert sample(3) == sample(3)


@pytest.mark.slow
def test_json_schema_is_enforced_and_logprobs_come_back(local):
    schema = {
        "type": "object",
        "properties": {
            "scores": {
                "type": "object",
                "properties": {t: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for t in TRAITS},
                "required": TRAITS,
            },
            "reason": {"type": "string", "maxLength": 24},
        },
        "required": ["scores", "reason"],
    }
    r = litellm.completion(
        model=local,
        messages=_rate_messages(),
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "Rating", "schema": schema}},
        logprobs=True,
        top_logprobs=5,
    )
    rating = Rating.model_validate_json(r.choices[0].message.content)
    assert set(rating.scores.model_dump()) == set(TRAITS)
    assert r.choices[0].finish_reason == "stop"

    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for step in content:
        tops = [t.logprob for t in step.top_logprobs]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True)
        assert 0 < sum(math.exp(lp) for lp in tops) <= 1 + 1e-4
        assert step.logprob <= tops[0] + 1e-5
    # The expected Likert score is readable at the positions where a rating digit was emitted.
    digits = [step for step in content if step.token[:1] in {"1", "2", "3", "4", "5"}]
    assert len(digits) >= len(TRAITS)
    assert all(step.logprob > -math.inf for step in digits)


@pytest.mark.slow
def test_json_object_parses(local):
    r = litellm.completion(
        model=local,
        messages=[{"role": "user", "content": 'JSON with one key "ok".'}],
        temperature=0,
        max_tokens=32,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@pytest.mark.slow
def test_instructor_returns_a_validated_object(local):
    client = instructor.from_litellm(litellm.completion, mode=INSTRUCTOR_MODE)
    judgement = client.chat.completions.create(
        model=local, messages=_rate_messages(), response_model=Judgement, temperature=0, max_retries=0
    )
    assert isinstance(judgement, Judgement)
    assert 1 <= judgement.likert.warmth <= 5 and len(judgement.why) <= 12


@pytest.mark.slow
def test_acompletion(local):
    async def both() -> list:
        messages = [{"role": "user", "content": "Hello!"}]
        calls = [litellm.acompletion(model=local, messages=messages, max_tokens=4, temperature=0) for _ in range(2)]
        return await asyncio.gather(*calls)

    first, second = asyncio.run(both())
    assert first.choices[0].message.content == second.choices[0].message.content != ""
    assert first.usage.completion_tokens > 0
