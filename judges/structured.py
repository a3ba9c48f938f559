"""Structured output in OpenAI's chat format without instructor: request, parse, re-ask.

The OpenAI-compatible fast path (:mod:`traitlab.judges.transport`) asks for a pydantic schema in one of four
ways, the same four ``--structured-mode`` names the LiteLLM path hands to instructor:

- ``tools``: one function whose parameters are the schema, forced with ``tool_choice``; the answer is its
  arguments;
- ``json_schema``: ``response_format={"type": "json_schema", ...}`` (vLLM, llama.cpp, Ollama, OpenAI);
- ``json``: ``response_format={"type": "json_object"}`` and the schema in the system message;
- ``md_json``: the schema in the system message and the answer read from a fenced JSON block.

The request pieces are built once per (schema, mode), so a call costs one ``model_validate_json`` on top of the
SDK. An answer that does not validate is re-asked with the validation errors (the caller bounds how often):
the assistant's answer and the errors are appended, so the provider sees what it got wrong.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

MODES = ("tools", "json_schema", "json", "md_json")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class SchemaError(ValueError):
    """An answer that did not validate against the schema, after every re-ask (``cause``: the last error)."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


@functools.cache
def request_params(schema: type[BaseModel], mode: str) -> dict[str, Any]:
    """The request keys that ask for ``schema`` in ``mode`` (built once per schema; callers must not mutate)."""
    parameters = schema.model_json_schema()
    name = schema.__name__
    if mode == "tools":
        return {"tools": [{"type": "function", "function": {
                    "name": name, "description": (schema.__doc__ or f"Answer as {name}").strip(),
                    "parameters": parameters}}],
                "tool_choice": {"type": "function", "function": {"name": name}}}
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": parameters}}}
    if mode == "json":
        return {"response_format": {"type": "json_object"}}
    if mode == "md_json":
        return {}
    raise ValueError(f"structured mode {mode!r} is not one of {', '.join(MODES)}")


@functools.cache
def _instruction(schema: type[BaseModel], mode: str) -> str:
    fence = " in a ```json fenced block" if mode == "md_json" else ""
    return (f"Answer with one JSON object{fence} that is an instance of this JSON schema (not the schema "
            f"itself):\n{json.dumps(schema.model_json_schema())}")


def messages_for(messages: list[dict[str, Any]], schema: type[BaseModel], mode: str) -> list[dict[str, Any]]:
    """``messages`` as sent: for ``json``/``md_json`` the schema instruction joins the system message."""
    if mode not in ("json", "md_json"):
        return messages
    text = _instruction(schema, mode)
    if messages and messages[0].get("role") == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def answer_text(response: Any, mode: str) -> str:
    """The JSON text of an answer: the forced tool call's arguments, the content, or its fenced block."""
    message = response.choices[0].message
    if mode == "tools":
        calls = getattr(message, "tool_calls", None) or []
        if not calls:
            raise ValueError("the answer has no tool call")
        return calls[0].function.arguments or ""
    text = message.content or ""
    if mode == "md_json" and (m := _FENCE.search(text)):
        return m.group(1)
    return text


def parse(response: Any, schema: type[BaseModel], mode: str) -> BaseModel:
    """The validated ``schema`` instance in ``response`` (raises ``ValidationError``/``ValueError``)."""
    return schema.model_validate_json(answer_text(response, mode))


def reask(messages: list[dict[str, Any]], response: Any, error: Exception, mode: str) -> list[dict[str, Any]]:
    """``messages`` plus the rejected answer and what was wrong with it, for the next attempt."""
    detail = ("; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors())
              if isinstance(error, ValidationError) else str(error))
    note = f"That answer does not validate: {detail}. Answer again, correcting these errors."
    message = response.choices[0].message
    calls = getattr(message, "tool_calls", None) or []
    if mode == "tools" and calls:
        call = calls[0]
        return [*messages,
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": call.id, "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "content": note}]
    return [*messages, {"role": "assistant", "content": message.content or ""}, {"role": "user", "content": note}]
