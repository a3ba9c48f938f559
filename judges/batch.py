"""Provider batch APIs for large judge runs: submit, poll, collect, and resume after a kill (half the price).

``JudgeClient(..., batch=True).call_many(requests)`` lands here. The requests the store has not answered yet are
written as one JSONL file of OpenAI-format chat requests (``custom_id`` = the request hash), uploaded with
``litellm.acreate_file`` and submitted with ``litellm.acreate_batch``; ``litellm.aretrieve_batch`` is polled every
``client.batch_poll_s`` until the batch ends, then ``litellm.afile_content`` fetches the output (and error) file.
Each result becomes an ordinary call record (same request hash, validated against the schema, tokens, batch
price), so the cache, resume, budget accounting and failure records work exactly as for live calls.

Resume: right after submission the batch id and its request hashes are stored as the run's artifact
``batch:<id>``; a later ``call_many`` of the same run (after a kill, even mid-poll) polls that batch again
instead of submitting the requests twice, and marks it ``collected`` once its results are in the store. The one
unguarded window is between the provider accepting the batch and that artifact being written (one local write).

Structured output in a batch is asked for by tool call (``tools``) or ``response_format`` json_schema; a result
that does not validate is recorded as a failure (a batch cannot re-ask; a later live run asks again).
Providers: OpenAI and OpenAI-compatible servers (``api_base``); Anthropic through LiteLLM's batch bridge.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import litellm
from pydantic import BaseModel, ValidationError

from traitlab.aio import run_sync
from traitlab.judges.client import (
    _UNHASHED,
    BUDGET_EXHAUSTED,
    CallOutcome,
    Request,
    _as_dicts,
    _logprobs,
    _raw_text,
    redact,
    request_hash,
    schema_json,
    secret_values,
    strip_secrets,
)
from traitlab.store import CallRecord

if TYPE_CHECKING:
    from traitlab.judges.client import JudgeClient

ARTIFACT_PREFIX = "batch:"
MAX_BATCH = 50_000  # OpenAI's per-batch request limit
MAX_WAIT_S = 25 * 3600  # the 24 h completion window, plus slack
DONE = {"completed", "failed", "expired", "cancelled"}
_TRANSPORT = {"api_base", "base_url", "api_version", "mock_response", "extra_headers"}


class BatchError(RuntimeError):
    """A batch could not be submitted or collected (the provider's error text, secrets redacted)."""


def call_batch(client: JudgeClient, requests: list[Request], progress: str | None = "batch") -> list[CallOutcome]:
    """``requests`` through the provider's batch API, in order; answered ones come from the store."""
    if client.store is None or client.run_id is None:
        raise BatchError("batch mode needs a store and a run id: the batch ids are kept there to resume")
    if client.local:
        raise BatchError(f"{client.model}: local models have no batch API")
    return run_sync(_Batcher(client).run(requests, progress))


class _Batcher:
    def __init__(self, client: JudgeClient):
        self.client = client
        self.store = client.store
        model, provider, _, _ = litellm.get_llm_provider(client.model, api_base=client.params.get("api_base"))
        self.bare_model, self.provider = model, provider
        self.reach = {k: client.params[k] for k in ("api_base", "api_version") if client.params.get(k)}
        if client.api_key or client.params.get("api_key"):
            self.reach["api_key"] = client.api_key or client.params["api_key"]
        self.secrets = secret_values(client.params) | ({client.api_key} if client.api_key else set())

    async def run(self, requests: list[Request], progress: str | None) -> list[CallOutcome]:
        from rich.progress import Progress

        jobs: dict[str, tuple[list[dict[str, Any]], type[BaseModel] | None, str, dict[str, Any]]] = {}
        keys = []
        for r in requests:
            msgs, merged = _as_dicts(r.messages), {**self.client.params, **r.params}
            key = request_hash(self.client.model, msgs, r.schema, merged)
            keys.append(key)
            jobs.setdefault(key, (msgs, r.schema, r.prompt_id, merged))
        stored = await asyncio.to_thread(self.store.cached_calls, list(jobs))
        todo = {k: job for k, job in jobs.items() if k not in stored}
        open_batches = {k: v for k, v in self.open_batches().items() if set(v["hashes"]) & set(todo)}
        waiting = {h for b in open_batches.values() for h in b["hashes"]}
        fresh = [k for k in todo if k not in waiting]
        if fresh and self.client.budget_exhausted:
            for k in fresh:
                self.record(k, todo[k], None, BUDGET_EXHAUSTED, 0.0, "", attempts=0)
            fresh = []
        for i in range(0, len(fresh), MAX_BATCH):
            batch_id, body = await self.submit({k: todo[k] for k in fresh[i:i + MAX_BATCH]})
            open_batches[batch_id] = body
        with Progress(transient=True, disable=not progress) as bar:
            task = bar.add_task(progress or "", total=len(open_batches))
            for batch_id, body in open_batches.items():
                await self.collect(batch_id, body, jobs)
                bar.advance(task)
        await self.client.aflush()
        answers = await asyncio.to_thread(self.store.cached_calls, keys)
        failures = self.failures([k for k in jobs if k not in answers])
        outcomes = []
        for key, r in zip(keys, requests, strict=True):
            record = answers.get(key)
            outcome = self.client._outcome(record, r.schema) if record is not None else None
            outcomes.append(outcome or CallOutcome(call_id=failures.get(key, ("", ""))[0],
                                                   error=failures.get(key, ("", "no result from the batch"))[1]))
        return outcomes

    # store --------------------------------------------------------------------------------------------
    def open_batches(self) -> dict[str, dict[str, Any]]:
        rows = self.store.sql("SELECT name, body FROM artifacts WHERE run_id = ? AND name LIKE ? ORDER BY created",
                              [self.client.run_id, ARTIFACT_PREFIX + "%"])
        bodies = {name.removeprefix(ARTIFACT_PREFIX): json.loads(body) for name, body in rows}
        return {k: v for k, v in bodies.items() if v.get("status") != "collected"}

    def failures(self, keys: list[str]) -> dict[str, tuple[str, str]]:
        if not keys:
            return {}
        rows = self.store.sql(f"SELECT request_hash, call_id, error FROM calls WHERE run_id = ? AND error IS NOT NULL "
                              f"AND request_hash IN ({', '.join('?' * len(keys))}) ORDER BY created",
                              [self.client.run_id, *keys])
        return {h: (cid, err) for h, cid, err in rows}

    def record(self, key: str, job: tuple[Any, ...], value: Any, error: str | None, started: float, batch_id: str,
               response: Any = None, attempts: int = 1) -> None:
        msgs, schema, prompt_id, merged = job
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = batch_cost(self.client.model, prompt, completion) if response is not None else 0.0
        self.client.spent_usd += cost
        body = ({"value": value.model_dump(mode="json") if schema is not None else value,
                 "logprobs": _logprobs(response)} if error is None
                else {"raw": redact(_raw_text(response) or "", self.secrets) or None})
        self.client.record(CallRecord(
            call_id=uuid.uuid4().hex, request_hash=key, run_id=self.client.run_id, model=self.client.model,
            params=strip_secrets(merged), request={"messages": msgs, "prompt_id": prompt_id,
                                                   "schema": schema_json(schema), "batch_id": batch_id},
            response=body, prompt_tokens=prompt, completion_tokens=completion, cost=cost,
            latency_s=time.time() - started if started else 0.0, attempts=attempts, error=error))

    # provider -----------------------------------------------------------------------------------------
    def line(self, key: str, job: tuple[Any, ...]) -> dict[str, Any]:
        """One OpenAI batch input line: the chat request a live call would send, schema as tool or json_schema."""
        msgs, schema, _, merged = job
        body: dict[str, Any] = {k: v for k, v in strip_secrets(merged).items()
                                if k not in _UNHASHED and k not in _TRANSPORT and k != "instructor_mode"}
        body.update(model=self.bare_model, messages=msgs)
        if schema is not None:
            name = schema.__name__
            if self.client.structured_mode in ("json_schema", "json", "md_json"):
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": name, "schema": schema_json(schema)}}
            else:
                body["tools"] = [{"type": "function", "function": {
                    "name": name, "description": (schema.__doc__ or "").strip(), "parameters": schema_json(schema)}}]
                body["tool_choice"] = {"type": "function", "function": {"name": name}}
        return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}

    async def submit(self, todo: dict[str, tuple[Any, ...]]) -> tuple[str, dict[str, Any]]:
        data = "".join(json.dumps(self.line(k, job)) + "\n" for k, job in todo.items()).encode()
        try:
            file = await litellm.acreate_file(file=("traitlab-batch.jsonl", data), purpose="batch",
                                              custom_llm_provider=self.provider, **self.reach)
            batch = await litellm.acreate_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                                input_file_id=file.id, custom_llm_provider=self.provider,
                                                metadata={"traitlab_run": str(self.client.run_id)}, **self.reach)
        except Exception as e:
            raise BatchError(redact(f"batch submission failed: {type(e).__name__}: {e}", self.secrets)) from None
        body = {"batch_id": batch.id, "input_file_id": file.id, "hashes": list(todo), "status": "submitted",
                "submitted": time.time(), "model": self.client.model}
        await asyncio.to_thread(self.store.put_artifact, self.client.run_id, ARTIFACT_PREFIX + batch.id, body)
        return batch.id, body

    async def collect(self, batch_id: str, body: dict[str, Any], jobs: dict[str, tuple[Any, ...]]) -> None:
        """Poll ``batch_id`` until it ends, record every result, mark the batch collected."""
        deadline = time.monotonic() + MAX_WAIT_S
        while True:
            try:
                batch = await litellm.aretrieve_batch(batch_id, custom_llm_provider=self.provider, **self.reach)
            except Exception as e:
                raise BatchError(redact(f"batch {batch_id}: polling failed: {type(e).__name__}: {e}",
                                        self.secrets)) from None
            if batch.status in DONE or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.client.batch_poll_s)
        seen: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for item in await self.lines(file_id):
                    key = item.get("custom_id", "")
                    if key in seen or key not in body["hashes"]:
                        continue
                    if key in jobs:
                        seen.add(key)
                        self.result(key, item, jobs[key], body)
        for key in body["hashes"]:
            if key not in seen and key in jobs:
                self.record(key, jobs[key], None, f"batch {batch_id} {batch.status}: no result for this request",
                            body["submitted"], batch_id)
        await self.client.aflush()
        # a request of an earlier call_many that this one does not ask for keeps the batch open: a later run
        # that asks for it collects it then
        if set(body["hashes"]) <= set(jobs):
            await asyncio.to_thread(self.store.put_artifact, self.client.run_id, ARTIFACT_PREFIX + batch_id,
                                    {**body, "status": "collected", "batch_status": batch.status})

    async def lines(self, file_id: str) -> list[dict[str, Any]]:
        try:
            content = await litellm.afile_content(file_id=file_id, custom_llm_provider=self.provider, **self.reach)
        except Exception as e:
            raise BatchError(redact(f"batch file {file_id}: {type(e).__name__}: {e}", self.secrets)) from None
        raw = content.content if hasattr(content, "content") else bytes(content)
        return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]

    def result(self, key: str, item: dict[str, Any], job: tuple[Any, ...], body: dict[str, Any]) -> None:
        schema = job[1]
        resp = item.get("response") or {}
        if item.get("error") or int(resp.get("status_code", 0) or 0) != 200:
            detail = item.get("error") or (resp.get("body") or {}).get("error") or {}
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
            status = resp.get("status_code")
            self.record(key, job, None, redact(f"provider error in batch: {status}: {message}", self.secrets),
                        body["submitted"], body["batch_id"])
            return
        response = litellm.ModelResponse(**resp["body"])
        text = _raw_text(response)
        try:
            value = schema.model_validate_json(text or "") if schema is not None else text
        except ValidationError as e:
            self.record(key, job, None, f"schema validation failed in batch: {e.errors()[0]['msg']}",
                        body["submitted"], body["batch_id"], response)
            return
        self.record(key, job, value, None, body["submitted"], body["batch_id"], response)


def batch_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one batch request: the cost map's ``*_batches`` prices, else half the standard ones, else 0."""
    info = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1]) or {}
    prices = []
    for kind in ("input", "output"):
        standard = float(info.get(f"{kind}_cost_per_token") or 0.0)
        prices.append(float(info.get(f"{kind}_cost_per_token_batches") or standard / 2))
    return prompt_tokens * prices[0] + completion_tokens * prices[1]
