"""The OpenAI-compatible fast path: when ``auto`` takes it, what it sends, how it prices, how it asks for and
re-asks a schema without instructor, and that it never imports LiteLLM. (The client's guarantees on both
transports are in test_client.py, test_provider.py and test_reliability.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from loopback_server import LoopbackServer
from pydantic import BaseModel, Field

from traitlab.judges import JudgeClient, Request, structured
from traitlab.judges.provider import ProviderError, ProviderOptions
from traitlab.judges.transport import cost, prices

SAMPLE = Path(__file__).resolve().parent.parent / "traitlab" / "sample"
BASE = "http://127.0.0.1:9/v1"


class Verdict(BaseModel):
    """A verdict."""

    score: int = Field(ge=1, le=5)
    reason: str


@pytest.fixture
def server():
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _no_default(monkeypatch):
    for var in ("TRAITLAB_TRANSPORT", "OPENAI_API_BASE", "OPENAI_BASE_URL", "HOSTED_VLLM_API_BASE"):
        monkeypatch.delenv(var, raising=False)


def test_auto_takes_the_fast_path_only_for_an_openai_compatible_server(monkeypatch):
    assert JudgeClient("openai/m", api_base=BASE, api_key="k").transport == "openai"
    assert JudgeClient("hosted_vllm/m", api_base=BASE).transport == "openai"
    assert JudgeClient("openai/gpt-4o-mini", api_key="k").transport == "litellm"  # OpenAI itself: LiteLLM
    assert JudgeClient("openai/m", api_base=BASE, api_key="k", mock_response="x").transport == "litellm"
    assert JudgeClient("anthropic/claude-x", api_key="k", api_base=BASE).transport == "litellm"
    assert JudgeClient("openai/m", api_base=BASE, api_key="k", transport="litellm").transport == "litellm"
    assert JudgeClient("openai/gpt-4o-mini", api_key="k", transport="openai").transport == "openai"
    monkeypatch.setenv("OPENAI_API_BASE", BASE)  # a server named the way LiteLLM reads it
    assert JudgeClient("openai/m", api_key="k").transport == "openai"
    monkeypatch.setenv("TRAITLAB_TRANSPORT", "litellm")
    assert JudgeClient("openai/m", api_key="k").transport == "litellm"
    for model, params in (("anthropic/claude-x", {}), ("openai/m", {"mock_response": "x"}),
                          ("local/smollm2-135m", {})):
        with pytest.raises(ProviderError, match="--transport openai"):
            JudgeClient(model, api_key="k", transport="openai", **params)
    with pytest.raises(ProviderError, match="--transport openai"):
        ProviderOptions(transport="openai").check("anthropic/claude-x", {"api_key": "k"})
    with pytest.raises(ProviderError, match="not one of"):
        JudgeClient("openai/m", api_key="k", transport="grpc")


def test_price_matches_litellm_from_the_shipped_cost_map_without_importing_it():
    import litellm
    from litellm.types.utils import ModelResponse

    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 1000}}
    response = ModelResponse(model="gpt-4o-mini", usage=usage,
                             choices=[{"index": 0, "message": {"role": "assistant", "content": "hi"}}])
    theirs = litellm.completion_cost(completion_response=response, model="openai/gpt-4o-mini")
    ours = cost("openai/gpt-4o-mini", response.usage, {})
    assert ours == pytest.approx(theirs, rel=1e-9) and ours > 0
    assert cost("openai/not-a-mapped-model", response.usage, {}) == 0.0
    assert cost("openai/gpt-4o-mini", response.usage, {"input_cost_per_token": 1e-3,
                                                      "output_cost_per_token": 2e-3}) == pytest.approx(1.8)
    # a fresh process reads the same prices from the map LiteLLM ships, and LiteLLM stays unloaded
    code = ("import sys, traitlab; from traitlab.judges.transport import prices; "
            "print(list(prices('openai/gpt-4o-mini'))); print('litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    info = litellm.model_cost["gpt-4o-mini"]
    assert json.loads(out[0]) == pytest.approx([info["input_cost_per_token"], info["cache_read_input_token_cost"],
                                                info["output_cost_per_token"]])
    assert list(prices("openai/gpt-4o-mini")) == pytest.approx(json.loads(out[0])) and out[1] == "False"


def test_the_body_is_sent_as_built_and_transport_params_stay_out(server):
    c = JudgeClient("openai/m", api_base=server.base_url, api_key="sk-fast", top_k=5, metadata={"run": "x"},
                    input_cost_per_token=0.0, extra_headers={"X-Trace": "t1"}, extra_body={"min_p": 0.1})
    assert c.transport == "openai"
    assert c.call_many([Request([{"role": "user", "content": "hi"}])], progress=None)[0].value == "echo: hi"
    body, headers = server.bodies[0], {k.lower(): v for k, v in server.headers[0].items()}
    assert body["model"] == "m" and body["top_k"] == 5 and body["min_p"] == 0.1  # unknown params pass through
    assert not {"metadata", "input_cost_per_token", "api_key", "api_base", "timeout", "num_retries",
                "max_retries", "extra_headers", "extra_body"} & body.keys()
    assert headers["authorization"] == "Bearer sk-fast" and headers["x-trace"] == "t1"


def test_a_tool_answer_that_does_not_validate_is_reasked_with_its_errors(server, store):
    c = JudgeClient("openai/m", store=store, api_base=server.base_url, api_key="k", transport="openai")
    out = c.call_many([Request([{"role": "user", "content": "v [[script: bad, ok]]"}], Verdict)], progress=None)[0]
    assert out.ok and type(out.value) is Verdict
    first, second = server.bodies
    assert first["tool_choice"]["function"]["name"] == "Verdict" and first["tools"][0]["function"]["description"]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] and "does not validate" in tool["content"]
    assert "score" in tool["content"]  # the field that failed is named


@pytest.mark.parametrize("mode", ["json", "md_json"])
def test_json_modes_put_the_schema_in_the_system_message_and_record_the_failure(server, store, mode):
    # the loopback server cannot know the schema in these modes, so every answer fails validation
    c = JudgeClient("openai/m", store=store, run_id="j", api_base=server.base_url, api_key="k",
                    structured_mode=mode, validation_retries=1)
    out = c.call_many([Request([{"role": "system", "content": "Judge."}, {"role": "user", "content": "x"}],
                               Verdict)], progress=None)[0]
    assert not out.ok and out.error.startswith("schema validation failed after 2 request(s): ValidationError")
    first, second = server.bodies
    assert first["messages"][0]["content"].startswith("Judge.") and '"reason"' in first["messages"][0]["content"]
    assert (first.get("response_format") or {}).get("type") == ("json_object" if mode == "json" else None)
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert store.sql("SELECT attempts, error LIKE 'schema validation failed%' FROM calls") == [(2, True)]


def test_md_json_reads_the_fenced_block():
    from openai.types.chat import ChatCompletion

    text = 'Here it is:\n```json\n{"score": 4, "reason": "ok"}\n```\nDone.'
    response = ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})
    assert structured.parse(response, Verdict, "md_json") == Verdict(score=4, reason="ok")
    with pytest.raises(ValueError):
        structured.parse(response, Verdict, "json")  # without the fence reading it is not JSON


def test_a_fast_path_score_run_never_imports_litellm_or_instructor(server, tmp_path):
    """Start-up is part of a run's wall time: the score command on the fast path must not pay for them."""
    code = ("import sys\nfrom traitlab.cli import app\nsys.argv = ['traitlab'] + sys.argv[1:]\ntry:\n    app()\n"
            "except SystemExit as e:\n    code = e.code\nprint('exit', code, sorted(m for m in ('litellm', "
            "'instructor') if m in sys.modules))\n")
    args = ["score", "--dialogues", str(SAMPLE / "dialogues.jsonl"), "--traits",
            str(SAMPLE / "traits_traitlab12.json"), "--judge", "openai/loopback", "--limit", "3",
            "--api-base", server.base_url, "--structured-mode", "json_schema", "--store", str(tmp_path / "s.duckdb")]
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert res.stdout.strip().splitlines()[-1] == "exit 0 []", res.stdout + res.stderr
    assert server.total == 3
