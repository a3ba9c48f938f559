"""The OpenAI-compatible fast path: the openai SDK's ``AsyncOpenAI`` instead of LiteLLM, for servers that speak
OpenAI's chat completions (vLLM, llama.cpp, Ollama, a gateway; OpenAI itself when asked for).

LiteLLM spends about 3 ms of CPU per call on what an OpenAI-compatible endpoint does not need (provider
routing, parameter translation, per-call cost calculation through its logging object, success callbacks),
and importing it takes seconds. On this path one request is one SDK call: the price comes from the same cost
map LiteLLM uses (read once, without importing LiteLLM, unless LiteLLM is already loaded) applied to the
response's usage, and structured output is asked for and validated by :mod:`traitlab.judges.structured`.
Everything the client guarantees (cache, resume, retries with Retry-After, timeouts, budget, failure records,
stripped secrets) sits above the transport and is the same on both paths.

``transport="auto"`` (the default; ``$TRAITLAB_TRANSPORT`` sets another) takes this path for ``openai/...`` and
``hosted_vllm/...`` models pointed at a server (``api_base``, or LiteLLM's ``OPENAI_API_BASE``/``OPENAI_BASE_URL``/
``HOSTED_VLLM_API_BASE``) and no LiteLLM-only parameter (``mock_response``, ``custom_llm_provider``, an
``instructor_mode``...); everything else, OpenAI's own API included (LiteLLM knows which parameters each
OpenAI model refuses), goes through LiteLLM. ``transport="openai"`` forces this path for an ``openai/`` or
``hosted_vllm/`` model.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import sys
import weakref
from pathlib import Path
from typing import Any

TRANSPORTS = ("auto", "litellm", "openai")
OPENAI_COMPATIBLE = ("openai", "hosted_vllm")
# parameters only LiteLLM understands: a request that carries one goes through LiteLLM
LITELLM_ONLY = frozenset({"mock_response", "custom_llm_provider", "api_version", "drop_params", "fallbacks",
                          "instructor_mode", "caching", "mock_tool_calls"})
# how a request is sent or priced, never part of the body
_NOT_SENT = frozenset({"api_base", "base_url", "api_key", "num_retries", "max_retries", "timeout",
                       "input_cost_per_token", "output_cost_per_token", "metadata"})
# request options rather than body keys
_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body"})
_KEY_VARS = {"openai": ("OPENAI_API_KEY",), "hosted_vllm": ("HOSTED_VLLM_API_KEY",)}
_BASE_VARS = {"openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"), "hosted_vllm": ("HOSTED_VLLM_API_BASE",)}


def openai_compatible(model: str, params: dict[str, Any]) -> str | None:
    """Why ``model`` with ``params`` cannot take the fast path, or None when it can."""
    provider = model.split("/", 1)[0] if "/" in model else ""
    if provider not in OPENAI_COMPATIBLE:
        return f"{model}: only {'/, '.join(OPENAI_COMPATIBLE)}/ models speak OpenAI's API directly"
    if only := sorted(LITELLM_ONLY & params.keys()):
        return f"{model}: {', '.join(only)} is a LiteLLM parameter"
    return None


def choose(transport: str | None, model: str, params: dict[str, Any], mode_ok: bool = True) -> str:
    """``litellm`` or ``openai`` for ``transport`` (auto|litellm|openai; None: ``$TRAITLAB_TRANSPORT``, else
    auto); ValueError when ``openai`` cannot work. ``mode_ok``: the schema mode is one of the four."""
    transport = transport or os.environ.get("TRAITLAB_TRANSPORT") or "auto"
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    if transport == "litellm":
        return "litellm"
    why = openai_compatible(model, params) or (None if mode_ok else f"{model}: an instructor mode needs LiteLLM")
    if transport == "openai":
        if why:
            raise ValueError(f"--transport openai: {why}")
        return "openai"
    provider = model.split("/", 1)[0]
    pointed = params.get("api_base") or any(os.environ.get(v) for v in _BASE_VARS.get(provider, ()))
    return "openai" if why is None and pointed else "litellm"


@functools.cache
def _cost_map() -> dict[str, Any]:
    """LiteLLM's model cost map: its live one when LiteLLM is loaded (custom registrations included), else the
    copy it ships (what it reads itself with ``LITELLM_LOCAL_MODEL_COST_MAP=True``, set by ``import traitlab``)."""
    if "litellm" in sys.modules:
        return sys.modules["litellm"].model_cost
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    return {}


@functools.cache
def prices(model: str) -> tuple[float, float, float]:
    """USD per (input, cached input, output) token of ``model`` in the cost map; zeros when unmapped."""
    table = _cost_map()
    info = table.get(model) or table.get(model.split("/", 1)[-1]) or {}
    given = float(info.get("input_cost_per_token") or 0.0)
    cached = info.get("cache_read_input_token_cost")
    return given, float(cached) if cached is not None else given, float(info.get("output_cost_per_token") or 0.0)


def cost(model: str, usage: Any, params: dict[str, Any]) -> float:
    """USD for one response's ``usage``: per-token prices from ``params`` (``input_cost_per_token``,
    ``output_cost_per_token``, as LiteLLM takes them) or the cost map; cached prompt tokens at their price."""
    if usage is None:
        return 0.0
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    cached = int(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0)
    if "input_cost_per_token" in params or "output_cost_per_token" in params:
        given = float(params.get("input_cost_per_token") or 0.0)
        p_in, p_cached, p_out = given, given, float(params.get("output_cost_per_token") or 0.0)
    else:
        p_in, p_cached, p_out = prices(model)
    return (prompt - cached) * p_in + cached * p_cached + completion * p_out


async def _close_at_shutdown(client: Any) -> None:
    """Close ``client`` when its event loop shuts down (``asyncio.run`` cancels this task while the loop still
    runs), so its connections are not left to a garbage collector that would close them on a dead loop."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await client.close()
        raise


class OpenAITransport:
    """One ``AsyncOpenAI`` per event loop (its connection pool belongs to the loop), the SDK's retries off."""

    def __init__(self, model: str, *, api_base: str | None, api_key: str | None):
        self.model = model
        self.provider, self.name = model.split("/", 1)
        self.base_url = api_base or next((os.environ[v] for v in _BASE_VARS[self.provider] if os.environ.get(v)),
                                         None)
        self.api_key = api_key or next((os.environ[v] for v in _KEY_VARS[self.provider] if os.environ.get(v)),
                                       None) or "none"  # a local server needs no key; the SDK insists on one
        # per loop: the client and the task that closes it when the loop shuts down
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Task[None]]] = (
            weakref.WeakKeyDictionary())

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is None:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0)
            held = self._clients[loop] = (client, loop.create_task(_close_at_shutdown(client)))
        return held[0]

    async def complete(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        """One chat completion for LiteLLM-style ``kwargs``, and its price.

        The body is sent as built (``client.post``, the SDK's documented way to send a request it does not
        type) rather than through ``chat.completions.create``, whose recursive walk of every parameter against
        its TypedDicts (tools and schemas included) costs more CPU than the rest of the request."""
        from openai.types.chat import ChatCompletion

        body = {k: v for k, v in kwargs.items() if k not in _NOT_SENT and k not in _OPTIONS}
        body["model"] = self.name
        body.update(kwargs.get("extra_body") or {})
        options: dict[str, Any] = {"timeout": kwargs.get("timeout"), "security": {"bearer_auth": True}}
        if kwargs.get("extra_headers"):
            options["headers"] = kwargs["extra_headers"]
        if kwargs.get("extra_query"):
            options["params"] = kwargs["extra_query"]
        client = self._client()
        if (kwargs.get("api_key") or self.api_key) != self.api_key or (
                kwargs.get("api_base") or self.base_url) != self.base_url:
            client = client.with_options(api_key=kwargs.get("api_key") or self.api_key,
                                         base_url=kwargs.get("api_base") or self.base_url)
        response = await client.post("/chat/completions", cast_to=ChatCompletion, body=body, options=options)
        return response, cost(self.model, response.usage, kwargs)
