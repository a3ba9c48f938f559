"""The judge client: the one place that turns (messages, pydantic schema, model, params) into a validated object.

A request goes over one of two transports (``transport=auto|litellm|openai``): LiteLLM (any provider string:
``openai/...``, ``anthropic/...``, vLLM/Ollama servers, the offline ``local/...`` provider), with instructor
validating a schema's answer and re-asking on a violation; or, for an OpenAI-compatible server, the openai SDK
directly with :mod:`traitlab.judges.structured` doing the same (:mod:`traitlab.judges.transport`; ``auto``
picks it for ``openai/``/``hosted_vllm/`` models with an ``api_base``). Around either this module owns the
policy the libraries leave open:

- bounded concurrency (one semaphore per event loop) and transport retries with exponential backoff that honour
  the provider's ``Retry-After`` (LiteLLM's own retries are switched off so there is one policy, here);
- a request hash over (model, messages, schema JSON, params without secrets): an identical request is served
  from the store (or from the records not yet written) with no provider call, which is what lets a killed run
  resume without repeating or losing calls;
- call records are written in batches (one INSERT per batch, :meth:`traitlab.store.Store.record_calls`): a
  record reaches the store at most ``flush_s`` (0.25 s) after its call completed while the event loop runs, and
  always at the end of ``call_many``, on :meth:`JudgeClient.flush` / :meth:`JudgeClient.aflush`, when the event
  loop shuts down and at interpreter exit. A ``kill -9`` can lose only the records of the last ``flush_s``: those
  requests are asked again on resume, so nothing is lost and the store never holds a request twice;
- failures are recorded in the store with their error and attempts, never turned into a default value;
- tokens, cost (LiteLLM's cost map; 0 for unmapped or local models), latency and attempts per call;
- a USD budget per run (spend read back from the store when a run resumes): once reached, calls in flight
  finish and the rest are not sent; they come back, and are recorded with 0 attempts, as ``budget exhausted``;
- secrets (``api_key`` and any param or header named like a key, token, secret or authorization) never reach
  the store or the logs: they are stripped from recorded params and hashes, redacted from error text, and
  scrubbed from the log records of LiteLLM, instructor, openai and httpx.

Provider settings (``api_base``, ``api_key_env``, ``timeout_s``, ``concurrency``, ``structured_mode``) are the
constructor's; :mod:`traitlab.judges.provider` turns CLI/YAML options into them and checks credentials up front.
Provider batch APIs (half price) go through :mod:`traitlab.judges.batch` with the same hashes and records.

Per-call CPU is kept near the SDK's: the fast transport where it applies, one instructor client per JudgeClient
on the LiteLLM path, cache lookups for a whole ``call_many`` in one query (and for the ``acall``s that arrive
together, as the conversations of an eval take their turns), batched store writes, and LiteLLM's
message redaction off (traitlab registers no LiteLLM callbacks, so there is no log to redact; secrets are
scrubbed from log records by ``_RedactSecrets``). LiteLLM and instructor are imported only by a client that
uses them, so a run on the fast path never pays their import.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import dataclasses
import email.utils
import functools
import hashlib
import json
import logging
import random
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from traitlab.aio import run_sync
from traitlab.judges import structured
from traitlab.judges.transport import OpenAITransport, choose
from traitlab.store import CallRecord, Store, is_secret_name

T = TypeVar("T")

BUDGET_EXHAUSTED = "budget exhausted"
MAX_RETRY_AFTER_S = 120.0
# Params that change how a request is sent or priced, never what the model answers: kept out of the hash.
_UNHASHED = {"timeout", "num_retries", "max_retries", "input_cost_per_token", "output_cost_per_token",
             "metadata"}

STRUCTURED_MODES = structured.MODES
# the instructor.Mode of each structured mode (by member name: instructor is imported only when used)
_INSTRUCTOR_MODES = {"tools": "TOOLS", "json_schema": "JSON_SCHEMA", "json": "JSON", "md_json": "MD_JSON"}
FLUSH_S = 0.25
FLUSH_MAX = 256
INDEX_MAX = 1_000_000
"""Answered calls of one model up to which a client keeps their hashes in memory (about 70 MB at the cap)."""
# The _Attempts of the call being made: instructor's one client per JudgeClient sends through it.
_ATTEMPTS: contextvars.ContextVar[_Attempts] = contextvars.ContextVar("traitlab_attempts")
# An in-process local model generates one request at a time; the client waits for this gate *before* its
# timeout starts, so time queued behind another local generation never counts against a call.
_LOCAL_GATE = threading.Lock()
# instructor logs every failed attempt at ERROR; those failures are recorded in the store, so keep them off the
# console unless the application configures logging itself.
logging.getLogger("instructor").addHandler(logging.NullHandler())
_LOGGER_PREFIXES = ("openai", "httpx", "httpcore", "LiteLLM", "litellm", "instructor")


class _RedactSecrets(logging.Filter):
    """Scrubs known secret values from log records of the HTTP stack (the openai SDK logs request headers at
    DEBUG, extra headers included). Filters do not propagate, so it sits on every logger of those libraries."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                record.msg, record.args = redact(message, self.secrets), None
        return True

    def guard(self, secrets: set[str]) -> None:
        """Remember ``secrets`` and make sure every logger of the HTTP stack carries this filter."""
        known = logging.root.manager.loggerDict
        if secrets <= self.secrets and len(known) == self._seen:
            return
        self.secrets |= secrets
        self._seen = len(known)
        for name in list(known):
            logger = logging.getLogger(name)
            if name.startswith(_LOGGER_PREFIXES) and self not in logger.filters:
                logger.addFilter(self)


_LOG_REDACTOR = _RedactSecrets()


def strip_secrets(value: Any) -> Any:
    """A copy of ``value`` with every secret-named key removed, at any depth."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if not is_secret_name(str(k))}
    if isinstance(value, list | tuple):
        return [strip_secrets(v) for v in value]
    return value


def secret_values(value: Any) -> set[str]:
    """Every string stored under a secret-named key (and the bare token of ``Bearer <token>``), for redaction."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if is_secret_name(str(k)) and isinstance(v, str) and v:
                found |= {v, v.removeprefix("Bearer ").strip()}
            found |= secret_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            found |= secret_values(v)
    return {s for s in found if len(s) >= 4}


def redact(text: str, secrets: set[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


@functools.cache
def schema_json(schema: type[BaseModel] | None) -> dict[str, Any] | None:
    """The JSON schema of ``schema`` (computed once per class: it is hashed and recorded on every call)."""
    return schema.model_json_schema() if schema is not None else None


def request_hash(model: str, messages: list[dict[str, Any]], schema: type[BaseModel] | None,
                 params: dict[str, Any]) -> str:
    """sha256 over what determines the answer: model, messages, schema JSON and params without secrets."""
    hashed = {k: v for k, v in strip_secrets(params).items() if k not in _UNHASHED}
    body = {"model": model, "messages": messages,
            "schema": schema_json(schema), "params": hashed}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request for :meth:`JudgeClient.call_many`."""

    messages: list[dict[str, Any]]
    schema: type[BaseModel] | None = None
    prompt_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallOutcome:
    """The result of one request: ``value`` (validated object, or text without a schema) or ``error``."""

    call_id: str
    value: Any = None
    error: str | None = None
    cached: bool = False
    logprobs: list[dict[str, Any]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Attempts:
    """Per-call transport state: one provider request per ``send``, retried with backoff; sums usage and cost."""

    client: JudgeClient
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    last: Any = None

    async def send(self, **kwargs: Any) -> Any:
        """What instructor calls for every (re-)ask; also the plain-text path."""
        client = self.client
        sent = {**kwargs, "num_retries": 0, "max_retries": 0, "timeout": client.timeout_s}
        if client.api_key is not None:
            sent.setdefault("api_key", client.api_key)
        retry = 0
        while True:
            self.attempts += 1
            try:
                response, cost = await client.timed(client._transport.complete(sent))
            except Exception as e:  # every provider error goes through the retry decision
                if retry == client.max_retries or not _retryable(e):
                    raise
                await asyncio.sleep(client.backoff(retry, e))
                retry += 1
                continue
            self._count(response, cost)
            return response

    def _count(self, response: Any, cost: float) -> None:
        self.last = response
        usage = getattr(response, "usage", None)
        self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        self.cost += cost


def _retryable(e: BaseException) -> bool:
    """Timeouts, connection errors, 408/409/429 and 5xx are worth another try; 4xx and bad params are not.
    (LiteLLM's Timeout and APIConnectionError subclass the openai SDK's, so one check covers both paths.)"""
    import openai

    if isinstance(e, TimeoutError | openai.APIConnectionError):
        return True
    status = getattr(e, "status_code", None)
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


def retry_after_s(e: BaseException) -> float | None:
    """Seconds the provider asked us to wait (``retry-after-ms`` or ``Retry-After``, seconds or HTTP date)."""
    headers = getattr(getattr(e, "response", None), "headers", None) or getattr(e, "litellm_response_headers", None)
    if not headers:
        return None
    headers = {str(k).lower(): v for k, v in headers.items()}
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


class _LiteLLMTransport:
    """The general path: ``litellm.acompletion`` for any provider, instructor for schemas. Priced by LiteLLM
    (its cost map or custom per-token prices; 0 if unknown)."""

    def __init__(self, model: str, mode: Any):
        import instructor
        import litellm

        _configure_litellm()
        _price_unmapped(model)
        self.acompletion = litellm.acompletion
        self.instructor = instructor.from_litellm(_send_current, mode=mode)

    async def complete(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        response = await self.acompletion(**kwargs)
        hidden = getattr(response, "_hidden_params", None) or {}
        return response, float(hidden.get("response_cost") or 0.0)


@functools.cache
def _configure_litellm() -> None:
    """Retry policy lives here (LiteLLM's own retries off); no banners on errors. Message redaction stays off:
    it deep-copies every request for logging callbacks, and traitlab registers none."""
    import litellm

    litellm.suppress_debug_info = True
    litellm.num_retries = 0


@functools.cache
def _price_unmapped(model: str) -> None:
    """Register a model missing from LiteLLM's cost map at zero cost (what it records anyway): LiteLLM prices
    every response, and for an unmapped model it searches a dozen fallback names each time first."""
    import litellm

    try:
        litellm.get_model_info(model)
    except Exception:
        provider = model.split("/", 1)[0] if "/" in model else "openai"
        free = dict.fromkeys(("input_cost_per_token", "output_cost_per_token", "cache_creation_input_token_cost",
                              "cache_read_input_token_cost"), 0.0)
        litellm.register_model({model: {"litellm_provider": provider, "mode": "chat", **free}})


def _logprobs(response: Any) -> list[dict[str, Any]] | None:
    """OpenAI-style ``choices[0].logprobs.content`` as plain dicts, or None when the provider gave none."""
    choices = getattr(response, "choices", None) or []
    content = getattr(getattr(choices[0], "logprobs", None), "content", None) if choices else None
    if not content:
        return None

    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

    return [{"token": get(t, "token"), "logprob": get(t, "logprob"),
             "top_logprobs": [{"token": get(a, "token"), "logprob": get(a, "logprob")}
                              for a in get(t, "top_logprobs") or []]} for t in content]


def _raw_text(response: Any) -> str | None:
    """The message text or tool-call arguments of a response, kept on failures for diagnosis."""
    try:
        message = response.choices[0].message
    except (AttributeError, IndexError, TypeError):
        return None
    calls = getattr(message, "tool_calls", None) or []
    return calls[0].function.arguments if calls else message.content


def _prefix(request_hash: str) -> int:
    """The first 64 bits of a request hash: what the in-memory index keeps (a collision only costs a query)."""
    return int(request_hash[:16], 16)


def _as_dicts(messages: Sequence[Any]) -> list[dict[str, Any]]:
    return [m.model_dump() if isinstance(m, BaseModel) else dict(m) for m in messages]




@dataclass
class _LoopState:
    """What must belong to one event loop: the concurrency bound, the requests in flight, the flush timer."""

    semaphore: asyncio.Semaphore
    inflight: dict[str, asyncio.Future[CallOutcome]] = field(default_factory=dict)
    flusher: asyncio.Task[None] | None = None
    lookups: dict[str, list[asyncio.Future[CallRecord | None]]] = field(default_factory=dict)
    looker: asyncio.Task[None] | None = None
    indexer: asyncio.Task[None] | None = None


class _CallLog:
    """Finished call records not yet in the store, written as one batch; successful ones serve as cache hits."""

    def __init__(self, store: Store):
        self.store = store
        self.pending: list[CallRecord] = []
        self.ok: dict[str, CallRecord] = {}
        self._lock = threading.Lock()  # order of batches
        self._write = threading.Lock()  # one writer at a time; records leave ``ok`` only once written

    def add(self, record: CallRecord) -> int:
        with self._lock:
            self.pending.append(record)
            if record.error is None:
                self.ok[record.request_hash] = record
            return len(self.pending)

    def flush(self) -> None:
        with self._write:
            with self._lock:
                batch, self.pending = self.pending, []
            if not batch:
                return
            self.store.record_calls(batch)
            with self._lock:
                for r in batch:
                    if self.ok.get(r.request_hash) is r:
                        del self.ok[r.request_hash]


_LOGS: weakref.WeakSet[_CallLog] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for log in list(_LOGS):
        log.flush()


class JudgeClient:
    """Structured (schema) or plain-text LLM calls with concurrency, retries, cache, budget and a call log.

    ``params`` (``temperature``, ``logprobs``...) go to ``litellm.acompletion`` on every call; per-call
    ``params`` override them. Provider settings: ``api_base`` (an OpenAI-compatible server), ``api_key_env``
    (the name of the environment variable holding the key: the key is read once and never recorded),
    ``timeout_s`` (per request; for ``local/`` models counted from when the model is free), ``structured_mode``
    (``tools|json_schema|json|md_json``: how the schema is asked for; default tools, the local provider brings
    its own; ``instructor_mode`` takes an ``instructor.Mode`` directly, on the LiteLLM path), ``transport``
    (``auto|litellm|openai``, None: ``$TRAITLAB_TRANSPORT`` or auto; :mod:`traitlab.judges.transport`),
    ``batch`` (``call_many`` through the provider's batch API). An unset ``api_key_env`` variable, an unknown
    mode or a transport that cannot reach the model raises :class:`~traitlab.judges.provider.ProviderError`
    here, before any call.
    """

    backoff_base_s = 0.5
    backoff_max_s = 30.0

    def __init__(self, model: str, *, store: Store | None = None, run_id: str | None = None, concurrency: int = 8,
                 max_retries: int = 4, validation_retries: int = 2, timeout_s: float = 60,
                 budget_usd: float | None = None, api_base: str | None = None, api_key_env: str | None = None,
                 structured_mode: str | None = None, transport: str | None = None, batch: bool = False,
                 batch_poll_s: float = 30.0, flush_s: float = FLUSH_S, **params: Any):
        from traitlab.judges.provider import ProviderError, check_credentials

        if structured_mode is not None and structured_mode not in STRUCTURED_MODES:
            raise ProviderError(f"structured mode {structured_mode!r} is not one of {', '.join(STRUCTURED_MODES)}")
        if api_base is not None:
            params["api_base"] = api_base
        # the provider's own env var is checked by the commands (ProviderOptions.check) before a run starts: a
        # library caller may pass mock_response or api_key per call
        self.api_key = check_credentials(model, params, api_key_env, environment=False)
        self.model = model
        self.store = store
        self.run_id = run_id
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.validation_retries = validation_retries
        self.timeout_s = timeout_s
        self.budget_usd = budget_usd
        self.flush_s = flush_s
        self.batch = batch
        self.batch_poll_s = batch_poll_s
        self.local = model.startswith("local/")
        if self.local:  # imported lazily: the local provider brings torch
            from traitlab.judges.local import INSTRUCTOR_MODE, register_local_provider

            register_local_provider()
            if structured_mode is None:
                params.setdefault("instructor_mode", INSTRUCTOR_MODE)
        try:
            self.transport = choose(transport, model, params, "instructor_mode" not in params)
        except ValueError as e:
            raise ProviderError(str(e)) from None
        mode = params.pop("instructor_mode", None)
        names = {v: k for k, v in _INSTRUCTOR_MODES.items()}
        self.structured_mode: str | None = (
            structured_mode or (names.get(getattr(mode, "name", "")) if mode is not None else "tools"))
        """The structured mode's name; None for an instructor mode outside the four (LiteLLM path only)."""
        self.params = params
        self._transport: OpenAITransport | _LiteLLMTransport
        if self.transport == "openai":
            self._transport = OpenAITransport(model, api_base=params.get("api_base"),
                                              api_key=self.api_key or params.get("api_key"))
        else:
            import instructor

            self._transport = _LiteLLMTransport(
                model, mode or getattr(instructor.Mode, _INSTRUCTOR_MODES[self.structured_mode or "tools"]))
        self._secrets = secret_values(params) | ({self.api_key} if self.api_key else set())
        self.spent_usd = store.run_cost(run_id) if store is not None and run_id is not None else 0.0
        self._log = _CallLog(store) if store is not None else None
        if self._log is not None:
            _LOGS.add(self._log)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._index: set[int] | None = None  # answered request hashes of this model (prefixes), once loaded
        self._indexed = False
        self._own: set[int] = set()  # the same for the answers this client recorded itself

    async def timed(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` under the per-request timeout; a local model's timeout starts once no other local call runs."""
        if not self.local:
            return await asyncio.wait_for(coro, self.timeout_s + 1)
        while not _LOCAL_GATE.acquire(blocking=False):
            await asyncio.sleep(0.01)
        try:
            return await asyncio.wait_for(coro, self.timeout_s + 1)
        finally:
            _LOCAL_GATE.release()

    def flush(self) -> None:
        """Write every finished call record to the store now (``call_many`` does this before it returns)."""
        if self._log is not None:
            self._log.flush()

    async def aflush(self) -> None:
        """:meth:`flush` from async code, off the event loop."""
        if self._log is not None and self._log.pending:
            await asyncio.to_thread(self._log.flush)

    @property
    def budget_exhausted(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    def backoff(self, retry: int, error: BaseException) -> float:
        """Seconds before retry number ``retry`` (0-based): the provider's Retry-After if given, else jittered
        exponential backoff."""
        asked = retry_after_s(error)
        if asked is not None:
            return min(asked, MAX_RETRY_AFTER_S)
        return min(self.backoff_base_s * 2**retry, self.backoff_max_s) * random.uniform(0.5, 1.0)

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._loops[loop] = _LoopState(asyncio.Semaphore(self.concurrency))
        return self._loops[loop]

    async def acall(self, messages: Sequence[Any], schema: type[BaseModel] | None = None, *, prompt_id: str = "",
                    params: dict[str, Any] | None = None) -> CallOutcome:
        """One call: from the store if an identical request completed before, else from the provider."""
        msgs = _as_dicts(messages)
        merged = {**self.params, **(params or {})}
        return await self._call(msgs, schema, prompt_id, merged, request_hash(self.model, msgs, schema, merged))

    async def _call(self, msgs: list[dict[str, Any]], schema: type[BaseModel] | None, prompt_id: str,
                    merged: dict[str, Any], key: str, stored: dict[str, CallRecord] | None = None) -> CallOutcome:
        """``stored``: the store's answers looked up beforehand for a whole batch (None: look this one up)."""
        state = self._loop_state()
        if key in state.inflight:  # an identical request is being made right now: share its answer
            shared = await asyncio.shield(state.inflight[key])
            return dataclasses.replace(shared, cached=shared.ok)
        if (hit := self._cached(key, schema, stored)) is not None:
            return hit
        future: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
        state.inflight[key] = future
        try:
            # the semaphore is taken first so that calls start in request order (the budget stops the tail);
            # store I/O runs in a thread so the event loop keeps other requests moving
            async with state.semaphore:
                hit = None
                if stored is None and self.store is not None:
                    hit = self._outcome(await self._lookup(key), schema)
                outcome = hit or await self._provider_call(key, msgs, schema, prompt_id, merged)
            future.set_result(outcome)
            return outcome
        except BaseException:  # cancelled or interrupted (provider errors are outcomes, not exceptions)
            future.cancel()
            raise
        finally:
            del state.inflight[key]

    async def _lookup(self, key: str) -> CallRecord | None:
        """The store's answer to one request, looked up together with every other request of this loop that
        asks meanwhile (one query, in a thread, for the calls of many conversations taking a turn at once).

        A request the store has never answered (most of an eval's turns) costs no query: the hashes of this
        model's answered calls are read once (:meth:`_load_index`), and this client remembers its own.
        An answer another process stores after that read is not seen, so such a request is asked again."""
        state = self._loop_state()
        if not self._indexed:
            if state.indexer is None:
                state.indexer = asyncio.get_running_loop().create_task(asyncio.to_thread(self._load_index))
            await asyncio.shield(state.indexer)
        if self._index is not None and _prefix(key) not in self._index and _prefix(key) not in self._own:
            return None
        future: asyncio.Future[CallRecord | None] = asyncio.get_running_loop().create_future()
        state.lookups.setdefault(key, []).append(future)
        if state.looker is None or state.looker.done():
            state.looker = asyncio.get_running_loop().create_task(self._run_lookups(state))
        return await future

    async def _run_lookups(self, state: _LoopState) -> None:
        assert self.store is not None
        while state.lookups:
            batch, state.lookups = state.lookups, {}
            try:
                found = await asyncio.to_thread(self.store.cached_calls, list(batch))
            except BaseException as e:  # every waiting call gets the store's error
                for futures in batch.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(e)
                if not isinstance(e, Exception):
                    raise
                continue
            for k, futures in batch.items():
                for f in futures:
                    if not f.done():
                        f.set_result(found.get(k))

    def _load_index(self) -> None:
        """Read the hashes of this model's answered calls (a hash covers the model, so that is every possible
        hit); a store holding more than ``INDEX_MAX`` of them is asked per request instead."""
        assert self.store is not None
        rows = self.store.sql("SELECT request_hash FROM calls WHERE model = ? AND error IS NULL LIMIT ?",
                              [self.model, INDEX_MAX + 1])
        if not self._indexed:
            self._index = {_prefix(r[0]) for r in rows} if len(rows) <= INDEX_MAX else None
            self._indexed = True

    def _keep(self, record: CallRecord) -> int:
        """Queue ``record`` for the store and the index; how many records are pending."""
        assert self._log is not None
        if record.error is None:
            self._own.add(_prefix(record.request_hash))
        return self._log.add(record)

    def call_many(self, requests: Sequence[Request], progress: str | None = "calls") -> list[CallOutcome]:
        """All ``requests`` with bounded concurrency, in order; progress (:mod:`traitlab.progress`) unless None.

        A client made with ``batch=True`` sends the requests not already answered through the provider's batch
        API instead (half price; polled every ``batch_poll_s``; see :mod:`traitlab.judges.batch`)."""
        if self.batch:
            from traitlab.judges.batch import call_batch

            return call_batch(self, list(requests), progress=progress)
        return run_sync(self._call_many(list(requests), progress))

    async def _call_many(self, requests: list[Request], progress: str | None) -> list[CallOutcome]:
        from traitlab.progress import track

        prepared = []
        for r in requests:
            msgs = _as_dicts(r.messages)
            merged = {**self.params, **r.params}
            prepared.append((r, msgs, merged, request_hash(self.model, msgs, r.schema, merged)))
        stored = (await asyncio.to_thread(self.store.cached_calls, [p[3] for p in prepared])
                  if self.store is not None else {})
        with track(progress, len(requests)) as bar:

            async def one(r: Request, msgs: list[dict[str, Any]], merged: dict[str, Any], key: str) -> CallOutcome:
                out = await self._call(msgs, r.schema, r.prompt_id, merged, key, stored)
                bar.advance()
                return out

            try:
                return list(await asyncio.gather(*(one(*p) for p in prepared)))
            finally:
                await self.aflush()

    def _cached(self, key: str, schema: type[BaseModel] | None,
                stored: dict[str, CallRecord] | None) -> CallOutcome | None:
        """An earlier answer to this request: written but not yet flushed, or looked up from the store."""
        record = self._log.ok.get(key) if self._log is not None else None
        if record is None and stored is not None:
            record = stored.get(key)
        return self._outcome(record, schema)

    @staticmethod
    def _outcome(record: CallRecord | None, schema: type[BaseModel] | None) -> CallOutcome | None:
        if record is None:
            return None
        body = record.response or {}
        try:
            value = schema.model_validate(body["value"]) if schema is not None else body["value"]
        except (KeyError, ValidationError):  # same JSON schema but stricter validators now: ask again
            return None
        return CallOutcome(call_id=record.call_id, value=value, cached=True, logprobs=body.get("logprobs"),
                           prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
                           cost=record.cost)

    def record(self, record: CallRecord) -> None:
        """Queue a finished call for the store (written in the next batch; a cache hit at once)."""
        if self._log is not None and self._keep(record) >= FLUSH_MAX:
            self._log.flush()

    async def _provider_call(self, key: str, messages: list[dict[str, Any]], schema: type[BaseModel] | None,
                             prompt_id: str, params: dict[str, Any]) -> CallOutcome:
        """Send one request (with retries and re-asks), record it, and return its outcome."""
        call_id = uuid.uuid4().hex
        secrets = self._secrets | secret_values(params)
        _LOG_REDACTOR.guard(secrets)
        tries = _Attempts(self)
        value: Any = None
        error: str | None = None
        started = time.monotonic()
        if self.budget_exhausted:
            error = BUDGET_EXHAUSTED
        else:
            try:
                value, raw = await self._ask(tries, messages, schema, params)
                tries.last = raw
            except Exception as e:  # recorded as a failure with its text, never turned into a default value
                error = redact(_describe(e, tries.attempts), secrets)
        self.spent_usd += tries.cost
        logprobs = _logprobs(tries.last) if error is None else None
        response = ({"value": value.model_dump(mode="json") if schema is not None else value, "logprobs": logprobs}
                    if error is None else {"raw": redact(_raw_text(tries.last) or "", secrets) or None})
        record = CallRecord(
            call_id=call_id, request_hash=key, run_id=self.run_id, model=self.model, params=strip_secrets(params),
            request={"messages": messages, "prompt_id": prompt_id,
                     "schema": schema_json(schema)},
            response=response, prompt_tokens=tries.prompt_tokens, completion_tokens=tries.completion_tokens,
            cost=tries.cost, latency_s=time.monotonic() - started, attempts=tries.attempts, error=error)
        if self._log is not None:
            if self._keep(record) >= FLUSH_MAX:
                await self.aflush()
            else:
                self._flush_soon()
        return CallOutcome(call_id=call_id, value=value if error is None else None, error=error,
                           logprobs=logprobs, prompt_tokens=tries.prompt_tokens,
                           completion_tokens=tries.completion_tokens, cost=tries.cost)

    def _flush_soon(self) -> None:
        """Write the pending records ``flush_s`` from now (one timer per loop; at loop shutdown, at once)."""
        state = self._loop_state()
        if state.flusher is None or state.flusher.done():
            state.flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        """Until nothing is pending: wait ``flush_s``, write (records that finished during a write go next)."""
        try:
            while self._log is not None and self._log.pending:
                await asyncio.sleep(self.flush_s)
                await self.aflush()
        except asyncio.CancelledError:  # the loop is shutting down: write now, synchronously
            self.flush()
            raise

    async def _ask(self, tries: _Attempts, messages: list[dict[str, Any]], schema: type[BaseModel] | None,
                   params: dict[str, Any]) -> tuple[Any, Any]:
        """The provider round trip: plain text directly, structured through instructor (validation re-asks)."""
        kwargs = {**params, "model": self.model, "messages": messages}
        if schema is None:
            response = await tries.send(**kwargs)
            return response.choices[0].message.content, response
        if isinstance(self._transport, OpenAITransport):
            return await self._ask_structured(tries, kwargs, schema)
        token = _ATTEMPTS.set(tries)
        try:
            value, raw = await self._transport.instructor.create_with_completion(
                response_model=schema, max_retries=self.validation_retries, **kwargs)
        finally:
            _ATTEMPTS.reset(token)
        # instructor answers with an instance of its own subclass of ``schema``; callers compare and pickle the
        # schema they asked for, so hand back exactly that class
        return schema.model_validate(value.model_dump()), raw

    async def _ask_structured(self, tries: _Attempts, kwargs: dict[str, Any], schema: type[BaseModel]
                              ) -> tuple[Any, Any]:
        """The fast path's schema round trip: ask in the structured mode, validate, re-ask with the errors."""
        mode = self.structured_mode or "tools"
        messages = structured.messages_for(kwargs.pop("messages"), schema, mode)
        kwargs = {**kwargs, **structured.request_params(schema, mode)}
        for attempt in range(self.validation_retries + 1):
            response = await tries.send(**kwargs, messages=messages)
            try:
                return structured.parse(response, schema, mode), response
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                if attempt == self.validation_retries:
                    raise structured.SchemaError(e) from e
                messages = structured.reask(messages, response, e, mode)
        raise AssertionError("unreachable")


async def _send_current(**kwargs: Any) -> Any:
    """What the JudgeClient's instructor client sends through: the current call's :class:`_Attempts`."""
    return await _ATTEMPTS.get().send(**kwargs)


def _describe(e: BaseException, attempts: int) -> str:
    """Error text for the store: the root cause (instructor wraps provider errors) and how many requests it took."""
    if isinstance(e, structured.SchemaError):
        return f"schema validation failed after {attempts} request(s): {type(e.cause).__name__}: {e.cause}"
    if "instructor" in sys.modules:
        from instructor.core.exceptions import InstructorRetryException

        if isinstance(e, InstructorRetryException):
            cause = e.__cause__ if e.__cause__ is not None else e
            kind = "schema validation failed" if e.failed_attempts else "provider error"
            return f"{kind} after {attempts} request(s): {type(cause).__name__}: {cause}"
    return f"provider error after {attempts} request(s): {type(e).__name__}: {e}"
