"""Provider settings on the real path (LiteLLM or the openai SDK fast path -> loopback server): api_base,
api_key_env, timeout, structured mode, the credential check before the first call, and the shared CLI/YAML options."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from loopback_server import LoopbackServer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from traitlab.judges import JudgeClient, Request
from traitlab.judges.provider import ProviderError, ProviderOptions
from traitlab.store import Store

SAMPLE = Path(__file__).resolve().parent.parent / "traitlab" / "sample"
KEY = "sk-env-DO-NOT-LEAK-91c3"


class Verdict(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def schema_only(transport):
    srv = LoopbackServer(tools=False).start()
    yield srv
    srv.stop()


def test_json_schema_mode_works_where_tools_are_refused(schema_only, store):
    tools = JudgeClient("openai/m", store=store, api_base=schema_only.base_url, api_key="k", max_retries=0)
    assert "tools are not supported" in tools.call_many([Request(ask("a"), Verdict)], progress=None)[0].error
    js = JudgeClient("openai/m", store=store, api_base=schema_only.base_url, api_key="k", structured_mode="json_schema")
    out = js.call_many([Request(ask("b"), Verdict)], progress=None)[0]
    assert out.ok and isinstance(out.value, Verdict)
    assert schema_only.bodies[-1]["response_format"]["type"] == "json_schema"


def test_unknown_structured_mode_is_refused():
    with pytest.raises(ProviderError, match="not one of"):
        JudgeClient("openai/m", api_key="k", structured_mode="xml")


def test_timeout_ends_a_hanging_call_as_a_recorded_failure(store, transport):
    srv = LoopbackServer().start()
    try:
        c = JudgeClient("openai/m", store=store, run_id="t", api_base=srv.base_url, api_key="k", timeout_s=0.5,
                        max_retries=1)
        c.backoff_base_s = 0.01
        start = time.monotonic()
        out = c.call_many([Request(ask("stuck [[script: hang]]"), Verdict)], progress=None)[0]
        took = time.monotonic() - start
    finally:
        srv.stop()
    assert not out.ok and "Timeout" in out.error and took < 6
    assert store.sql("SELECT attempts, error IS NOT NULL FROM calls WHERE run_id = 't'") == [(2, True)]


def test_api_key_env_is_sent_but_never_stored(monkeypatch, tmp_path, transport):
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    srv = LoopbackServer().start()
    try:
        with Store(tmp_path / "k.duckdb") as store:
            c = JudgeClient("openai/m", store=store, run_id="k", api_base=srv.base_url, api_key_env="MY_JUDGE_KEY")
            assert c.call_many([Request(ask("key?"), Verdict)], progress=None)[0].ok
            dump = repr(store.sql("SELECT * FROM calls")) + repr(store.sql("SELECT * FROM runs"))
    finally:
        srv.stop()
    assert {k.lower(): v for k, v in srv.headers[0].items()}["authorization"] == f"Bearer {KEY}"
    assert KEY not in dump


def test_missing_credentials_fail_before_any_call(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        ProviderOptions().check("openai/gpt-4o-mini")
    with pytest.raises(ProviderError, match="NOPE_KEY"):
        JudgeClient("openai/gpt-4o-mini", api_key_env="NOPE_KEY")
    ProviderOptions().check("openai/gpt-4o-mini", {"mock_response": "hi"})  # a suite's mock needs no key
    ProviderOptions(api_base="http://127.0.0.1:9/v1").check("openai/gpt-4o-mini")  # a self-hosted server: fine
    ProviderOptions().check("local/smollm2-135m")


def test_local_timeout_does_not_count_time_queued_behind_another_local_call():
    from traitlab.judges.client import _LOCAL_GATE

    c = JudgeClient("local/smollm2-135m", timeout_s=0.3)
    _LOCAL_GATE.acquire()
    threading.Timer(0.8, _LOCAL_GATE.release).start()
    start = time.monotonic()
    asyncio.run(c.timed(asyncio.sleep(0.2)))  # waited 0.8 s for the model, then ran 0.2 s: within 0.3 s
    assert time.monotonic() - start >= 0.8
    with pytest.raises(TimeoutError):
        asyncio.run(c.timed(asyncio.sleep(5)))


def test_options_merge_cli_over_suite_and_reject_bad_values():
    suite = ProviderOptions(api_base="http://a/v1", concurrency=4, structured_mode="json")
    merged = ProviderOptions(concurrency=16).over(suite)
    assert merged.client_kwargs() == {"api_base": "http://a/v1", "concurrency": 16, "structured_mode": "json"}
    assert ProviderOptions(timeout=5).client_kwargs() == {"timeout_s": 5}
    for bad in ({"concurrency": 0}, {"timeout": -1}, {"structured_mode": "xml"}, {"api_key_env": "sk-123 x"},
                {"api_key": "sk-1"}):
        with pytest.raises(ValueError):
            ProviderOptions(**bad)


def test_score_cli_takes_the_provider_flags(schema_only, tmp_path, monkeypatch):
    from traitlab.cli import app

    monkeypatch.setenv("LOOPBACK_KEY", KEY)
    db = tmp_path / "s.duckdb"
    args = ["score", "--dialogues", str(SAMPLE / "dialogues.jsonl"), "--traits", str(SAMPLE / "traits_traitlab12.json"),
            "--judge", "openai/loopback", "--limit", "3", "--store", str(db), "--api-base", schema_only.base_url,
            "--api-key-env", "LOOPBACK_KEY", "--structured-mode", "json_schema", "--timeout", "5",
            "--concurrency", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "rated 3/3" in res.output
    with Store(db) as st:
        assert st.sql("SELECT count(DISTINCT dialogue_id) FROM ratings")[0][0] == 3
        assert KEY not in repr(st.sql("SELECT * FROM calls")) + repr(st.sql("SELECT * FROM runs"))


def test_score_cli_missing_key_is_one_line_and_exit_2(tmp_path, monkeypatch):
    from traitlab.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    db = tmp_path / "m.duckdb"
    res = CliRunner().invoke(app, ["score", "--dialogues", str(SAMPLE / "dialogues.jsonl"), "--traits",
                                   str(SAMPLE / "traits_traitlab12.json"), "--judge", "openai/gpt-4o-mini",
                                   "--store", str(db)])
    assert res.exit_code == 2 and "OPENAI_API_KEY" in res.output and "Traceback" not in res.output
    assert not db.exists() or Store(db).sql("SELECT count(*) FROM runs")[0][0] == 0
