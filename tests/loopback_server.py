"""An OpenAI-compatible chat-completions server on 127.0.0.1 for testing the judge client on its real path.

Behaviour is scripted inside the request itself so that it is deterministic and works across processes: a
``[[script: 429:1, ok]]`` tag anywhere in the first user message lists what the server does on the 1st, 2nd...
request it receives for that request (the last step repeats). Steps:

- ``ok``: a normal answer. With ``tools`` it returns a tool call whose arguments satisfy the tool's JSON schema
  (values derived from the request, so the same request gets the same answer); with ``response_format`` it
  returns that JSON as the message content; otherwise text echoing the last user message. Usage is always
  reported, and ``logprobs``/``top_logprobs`` are answered OpenAI-style when asked for.
- ``429:N`` / ``503:N``: that status with ``Retry-After: N``; any other number (``500``, ``400``): that status.
- ``hang``: never answers (until the server stops), so the client's timeout fires.
- ``trunc``: a 200 whose JSON is cut off mid-way; ``bad``: valid JSON that violates the schema.

The server counts, on its own side, every request per key (sha256 of the first user message), with the time
each arrived, so tests measure provider calls without trusting the client.

Options: ``tools=False`` answers any request that asks for a tool call with a 400, as JSON-schema-only servers
(many vLLM, llama.cpp and Ollama setups) do. The OpenAI batch API is implemented too: ``POST /v1/files``
(multipart upload), ``GET /v1/files/{id}/content``, ``POST /v1/batches`` and ``GET /v1/batches/{id}``; a batch
completes on its ``batch_polls``-th retrieval, when each line is answered like a chat request (the step script
applies) and counted per ``custom_id`` in ``batch_answered``; ``batches_created`` counts submissions.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCRIPT = re.compile(r"\[\[script:\s*([^\]]*)\]\]")
PROMPT_TOKENS_PER_WORD = 1
COMPLETION_TOKENS = 10


def request_key(body: dict[str, Any]) -> str:
    """The server's own identity of a logical request: its first user message (re-asks append messages)."""
    first = next((m for m in body.get("messages", []) if m.get("role") == "user"), {})
    return hashlib.sha256(json.dumps(first.get("content"), sort_keys=True).encode()).hexdigest()[:16]


def first_user_text(body: dict[str, Any]) -> str:
    first = next((m for m in body.get("messages", []) if m.get("role") == "user"), {})
    content = first.get("content", "")
    return content if isinstance(content, str) else json.dumps(content)


def value_for(schema: dict[str, Any], defs: dict[str, Any], seed: int) -> Any:
    """A value satisfying a (simple) JSON schema, derived deterministically from ``seed``."""
    if "$ref" in schema:
        return value_for(defs[schema["$ref"].split("/")[-1]], defs, seed)
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    if "anyOf" in schema:
        return value_for(schema["anyOf"][0], defs, seed)
    kind = schema.get("type", "object")
    if kind == "integer":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
        return lo + seed % (hi - lo + 1)
    if kind == "number":
        lo, hi = schema.get("minimum", 0.0), schema.get("maximum", 1.0)
        return lo + (seed % 1000) / 1000 * (hi - lo)
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "string":
        return f"s{seed % 9973}"
    if kind == "array":
        return [value_for(schema.get("items", {}), defs, seed)]
    return {name: value_for(sub, defs, seed + i) for i, (name, sub) in enumerate(schema.get("properties", {}).items())}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 resets connections when 64 clients connect at once
    daemon_threads = True


class LoopbackServer:
    """Threaded HTTP server; ``start()`` binds a random port, ``base_url`` is what ``api_base`` should be."""

    def __init__(self, latency_s: float = 0.0, *, tools: bool = True, batch_polls: int = 3):
        self.latency_s = latency_s
        self.tools = tools
        self.batch_polls = batch_polls
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_answered: dict[str, int] = defaultdict(int)
        self.batches_created = 0
        self.counts: dict[str, int] = defaultdict(int)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.arrivals.clear()
            self.bodies.clear()
            self.headers.clear()
            self.batch_answered.clear()
            self.batches_created = 0

    def _note(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, int]:
        key = request_key(body)
        with self._lock:
            self.counts[key] += 1
            self.arrivals[key].append(time.monotonic())
            self.bodies.append(body)
            self.headers.append(headers)
            return key, self.counts[key]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm meets the
            # client's delayed ACK and every response stalls ~40 ms, which is the test server's cost, not the client's
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if (m := re.search(r"/files/([^/]+)/content$", path)) and m.group(1) in server.files:
                    data = server.files[m.group(1)]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/jsonl")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if (m := re.search(r"/files/([^/]+)$", path)) and m.group(1) in server.files:
                    return self._send(200, server.file_object(m.group(1)))
                if (m := re.search(r"/batches/([^/]+)$", path)) and m.group(1) in server.batches:
                    return self._send(200, server.poll_batch(m.group(1)))
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/files"):
                    return self._send(200, server.upload(raw, self.headers.get("Content-Type", "")))
                body = json.loads(raw or b"{}")
                if path.endswith("/batches"):
                    if body.get("input_file_id") not in server.files:
                        return self._send(400, {"error": {"message": "no such input file"}})
                    return self._send(200, server.create_batch(body))
                if not path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if body.get("tools") and not server.tools:
                    return self._send(400, {"error": {"message": "tools are not supported; use response_format",
                                                      "type": "invalid_request_error"}})
                key, nth = server._note(body, dict(self.headers.items()))
                if server.latency_s:
                    time.sleep(server.latency_s)
                step = server.step(body, nth)
                name, _, arg = step.partition(":")
                if name.isdigit():
                    return self._send(int(name), {"error": {"message": f"scripted {name}", "type": "scripted"}},
                                      {"Retry-After": arg} if arg else None)
                if name == "hang":
                    server._stop.wait()
                    return None
                return self._send(200, server.answer(body, key, name))

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    # batch API -------------------------------------------------------------------------------------------
    def upload(self, raw: bytes, content_type: str) -> dict[str, Any]:
        """Store the ``file`` part of a multipart upload."""
        boundary = content_type.split("boundary=")[-1].strip('"').encode()
        content = b""
        for part in raw.split(b"--" + boundary):
            head, _, data = part.partition(b"\r\n\r\n")
            if b'name="file"' in head:
                content = data.removesuffix(b"\r\n")
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = content
        return self.file_object(file_id)

    def file_object(self, file_id: str) -> dict[str, Any]:
        return {"id": file_id, "object": "file", "bytes": len(self.files[file_id]), "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl", "purpose": "batch", "status": "processed"}

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.batches_created += 1
            batch_id = f"batch_{self.batches_created}"
            lines = len(self.files[body["input_file_id"]].splitlines())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body.get("endpoint", "/v1/chat/completions"),
                "errors": None, "input_file_id": body["input_file_id"], "completion_window": "24h",
                "status": "in_progress", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": body.get("metadata"), "polls": 0,
                "request_counts": {"total": lines, "completed": 0, "failed": 0}}
            return self._public(batch_id)

    def _public(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if k != "polls"}

    def poll_batch(self, batch_id: str) -> dict[str, Any]:
        """Each retrieval moves a batch on; the ``batch_polls``-th answers every line and completes it."""
        with self._lock:
            batch = self.batches[batch_id]
            batch["polls"] += 1
            if batch["status"] != "in_progress" or batch["polls"] < self.batch_polls:
                return self._public(batch_id)
            out, errors = [], []
            for line in self.files[batch["input_file_id"]].splitlines():
                item = json.loads(line)
                body = item["body"]
                self.batch_answered[item["custom_id"]] += 1
                key = request_key(body)
                self.counts[key] += 1
                step = self.step(body, self.counts[key])
                name = step.partition(":")[0]
                if name.isdigit():
                    errors.append({"id": f"batch_req_{len(errors)}", "custom_id": item["custom_id"],
                                   "response": {"status_code": int(name), "body": {"error": {"message": "scripted"}}},
                                   "error": {"code": name, "message": f"scripted {name}"}})
                    continue
                out.append({"id": f"batch_req_{len(out)}", "custom_id": item["custom_id"], "error": None,
                            "response": {"status_code": 200, "request_id": key,
                                         "body": self.answer(body, key, name if name in ("bad", "trunc") else "ok")}})
            for name, rows in (("output_file_id", out), ("error_file_id", errors)):
                if rows:
                    file_id = f"file-{len(self.files) + 1}"
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[name] = file_id
            batch["status"] = "completed"
            batch["request_counts"] = {"total": len(out) + len(errors), "completed": len(out), "failed": len(errors)}
            return self._public(batch_id)

    @staticmethod
    def step(body: dict[str, Any], nth: int) -> str:
        """The scripted step for the ``nth`` request with this key (``ok`` when unscripted)."""
        match = SCRIPT.search(first_user_text(body))
        steps = [s.strip() for s in match.group(1).split(",")] if match else ["ok"]
        return steps[min(nth, len(steps)) - 1]

    @staticmethod
    def answer(body: dict[str, Any], key: str, mode: str) -> dict[str, Any]:
        """A chat.completion for ``body``: ``mode`` is ok, trunc (cut-off JSON) or bad (schema-violating)."""
        seed = int(key[:8], 16)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        tools = body.get("tools") or []
        response_format = body.get("response_format") or {}
        schema = (tools[0]["function"].get("parameters") if tools
                  else response_format.get("json_schema", {}).get("schema"))
        if schema is not None or response_format.get("type") == "json_object":
            schema = schema or {}
            value = value_for(schema, schema.get("$defs", {}), seed)
            text = json.dumps(value)
            if mode == "trunc":
                text = text[: max(1, len(text) // 2)]
            elif mode == "bad":
                text = json.dumps({k: {"unexpected": True} for k in value} or {"unexpected": True})
            if tools:
                message["tool_calls"] = [{"id": f"call_{key[:8]}", "type": "function",
                                          "function": {"name": tools[0]["function"]["name"], "arguments": text}}]
            else:
                message["content"] = text
        else:
            last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
            text = f"echo: {last.get('content', '')}"
            message["content"] = text
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "finish_reason": "tool_calls" if tools else "stop"}
        if body.get("logprobs"):
            n_top = int(body.get("top_logprobs") or 0)
            choice["logprobs"] = {"content": [
                {"token": tok, "logprob": -0.1 * (i + 1), "bytes": list(tok.encode()),
                 "top_logprobs": [{"token": tok if j == 0 else f"alt{j}", "logprob": -0.1 * (i + 1) - j,
                                   "bytes": None} for j in range(n_top)]}
                for i, tok in enumerate(re.findall(r"\S+|\s+", text)[:20])]}
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "loopback"), "choices": [choice],
                "usage": {"prompt_tokens": prompt_tokens * PROMPT_TOKENS_PER_WORD,
                          "completion_tokens": COMPLETION_TOKENS,
                          "total_tokens": prompt_tokens * PROMPT_TOKENS_PER_WORD + COMPLETION_TOKENS}}
