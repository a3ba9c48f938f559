"""Provider settings shared by every command and suite that calls a model, and the credential check.

``ProviderOptions`` is what a user sets (``--api-base``, ``--api-key-env``, ``--timeout``, ``--concurrency``,
``--structured-mode``, ``--transport`` on the CLI, the same keys under ``provider:`` in suite YAML);
``client_kwargs()`` turns it into :class:`~traitlab.judges.client.JudgeClient` arguments. The key itself is
never an option: only the *name* of the environment variable that holds it, so it stays off the command line,
the shell history and the store.

This module imports neither LiteLLM nor instructor, so a command's ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

StructuredMode = Literal["tools", "json_schema", "json", "md_json"]
Transport = Literal["auto", "litellm", "openai"]
F = TypeVar("F", bound=Callable[..., Any])


class ProviderError(ValueError):
    """A provider setting that cannot work (missing credentials, unknown mode): raised before any call."""


class ProviderOptions(BaseModel):
    """How to reach a model. Unset fields keep the client's defaults (LiteLLM's provider routing, its env vars)."""

    model_config = ConfigDict(extra="forbid")

    api_base: str | None = Field(None, description="an OpenAI-compatible server (vLLM, llama.cpp, Ollama...)")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="name of the environment variable holding the API key")
    timeout: float | None = Field(None, gt=0, description="seconds per request (local models: once the model is free)")
    concurrency: int | None = Field(None, ge=1, description="requests in flight at once")
    structured_mode: StructuredMode | None = Field(
        None, description="how a schema is asked for: tool call, JSON-schema response format, JSON, JSON in markdown")
    transport: Transport | None = Field(
        None, description="litellm, openai (the SDK straight to an OpenAI-compatible server) or auto")

    def client_kwargs(self) -> dict[str, Any]:
        """The set fields as JudgeClient keyword arguments (``timeout`` -> ``timeout_s``)."""
        names = {"timeout": "timeout_s"}
        return {names.get(k, k): v for k, v in self.model_dump(exclude_none=True).items()}

    def over(self, base: ProviderOptions | Mapping[str, Any] | None) -> ProviderOptions:
        """These options on top of ``base`` (e.g. CLI flags over a suite's ``provider:`` block)."""
        merged = (base.model_dump(exclude_none=True) if isinstance(base, ProviderOptions) else dict(base or {}))
        return ProviderOptions.model_validate({**merged, **self.model_dump(exclude_none=True)})

    def check(self, model: str, params: Mapping[str, Any] | None = None) -> None:
        """Raise :class:`ProviderError` now if ``model`` cannot be called with these settings (and ``params``,
        e.g. a suite's, which may carry ``api_key``/``api_base``/``mock_response``)."""
        given = {**(params or {}), **({"api_base": self.api_base} if self.api_base else {})}
        check_credentials(model, given, self.api_key_env)
        if self.transport is not None:
            from traitlab.judges.transport import choose

            try:
                choose(self.transport, model, given)
            except ValueError as e:
                raise ProviderError(str(e)) from None


def check_credentials(model: str, params: Mapping[str, Any], api_key_env: str | None, *,
                      environment: bool = True) -> str | None:
    """The API key read from ``api_key_env`` (None when not named); a one-line ProviderError if credentials
    are missing: the named variable unset, or no ``api_base``/``api_key`` and LiteLLM's variable for the
    provider (``OPENAI_API_KEY``...) unset (only with ``environment``). Local models (``local/``, a folder) and
    LiteLLM mocks need none."""
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise ProviderError(f"{model}: environment variable {api_key_env} (--api-key-env) is not set")
        return key
    if not environment or (model.startswith("local/") or params.get("api_key") or params.get("api_base")
            or "mock_response" in params or Path(model).exists()):  # a local model folder needs no key
        return None
    import litellm

    try:
        missing = litellm.validate_environment(model=model).get("missing_keys") or []
    except Exception:  # a provider LiteLLM cannot inspect: let the first call say what is wrong
        return None
    if missing:
        raise ProviderError(f"{model}: no credentials: set {' or '.join(missing)}, name another variable with "
                            f"--api-key-env, or point --api-base at a server that needs none")
    return None


def provider_options(func: F) -> F:
    """Give a typer command the six provider flags; it receives them as one ``provider: ProviderOptions``.

    The command's own ``provider`` parameter is replaced by ``--api-base --api-key-env --timeout --concurrency
    --structured-mode --transport`` (a flag the command already has, e.g. eval's ``--concurrency``, stays the
    command's); bad values end the command with exit code 2 before anything runs.
    """
    import typer
    from pydantic import ValidationError

    from traitlab.console import fail

    flags = {
        "api_base": Annotated[str | None, typer.Option(help="OpenAI-compatible server URL for the model")],
        "api_key_env": Annotated[str | None, typer.Option(
            help="name of the env var holding the API key (the key never goes on the command line)")],
        "timeout": Annotated[float | None, typer.Option(help="seconds per request")],
        "concurrency": Annotated[int | None, typer.Option(help="requests in flight at once")],
        "structured_mode": Annotated[StructuredMode | None, typer.Option(
            help="schema via tool call (tools), response_format json_schema, json or md_json")],
        "transport": Annotated[Transport | None, typer.Option(
            help="auto (openai SDK for openai/, hosted_vllm/ models at a server; else LiteLLM), litellm, openai")],
    }
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "provider"]
    flags = {k: v for k, v in flags.items() if k not in {p.name for p in own}}  # a command's own flag wins
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
             for name, kind in flags.items()]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in flags}
        try:
            options = ProviderOptions(**values)
        except ValidationError as e:
            raise fail(f"provider options: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
        return func(*args, provider=options, **kwargs)

    command.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    command.__annotations__ = {**{p.name: p.annotation for p in own}, **flags}
    return command  # type: ignore[return-value]
