"""The judge client on its real path, HTTP to a scripted loopback server, over both transports (``transport``
fixture: LiteLLM's openai provider, and the openai SDK fast path that ``auto`` picks for this server)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import subprocess
import sys
import time

import pytest
from loopback_server import LoopbackServer, request_key, value_for
from pydantic import BaseModel, ConfigDict, Field

from traitlab.judges import CallOutcome, JudgeClient, Request
from traitlab.judges.client import FLUSH_S, request_hash
from traitlab.store import Store, is_secret_name

API_KEY = "sk-test-DO-NOT-LEAK-4f9a2c"
HEADER_SECRET = "hdr-DO-NOT-LEAK-77e1"


class Verdict(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str


@pytest.fixture
def server(transport):
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


def client(server: LoopbackServer, store: Store | None = None, **kw) -> JudgeClient:
    c = JudgeClient("openai/loopback-judge", store=store, api_base=server.base_url, api_key=API_KEY, **kw)
    c.backoff_base_s = 0.05  # keep exponential backoff short in tests; Retry-After is still honoured in full
    return c


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": text}]


def rows(store: Store) -> list[dict]:
    cols = ["call_id", "request_hash", "attempts", "error", "params", "response", "cost", "prompt_tokens"]
    return [dict(zip(cols, r, strict=True)) for r in store.sql(f"SELECT {', '.join(cols)} FROM calls ORDER BY created")]


def test_structured_call_validates_and_records(server, store):
    out = client(server, store, run_id="r").call_many([Request(ask("rate this"), Verdict, prompt_id="judge.v1")])[0]
    schema = Verdict.model_json_schema()
    expected = value_for(schema, {}, int(request_key({"messages": ask("rate this")})[:8], 16))
    assert out.ok and not out.cached and isinstance(out.value, Verdict)
    assert out.value.model_dump() == expected
    assert out.prompt_tokens > 0 and out.completion_tokens == 10
    (row,) = rows(store)
    assert row["call_id"] == out.call_id and row["error"] is None and row["attempts"] == 1
    assert json.loads(row["response"])["value"] == expected
    sent = server.bodies[0]
    assert sent["tools"][0]["function"]["parameters"]["properties"].keys() == schema["properties"].keys()


def test_plain_text_and_logprobs_pass_through(server):
    c = client(server, logprobs=True, top_logprobs=2)
    text, structured = c.call_many([Request(ask("say hi")), Request(ask("judge me"), Verdict)])
    assert text.value == "echo: say hi"
    assert [t["token"] for t in text.logprobs] == ["echo:", " ", "say", " ", "hi"]
    assert len(text.logprobs[0]["top_logprobs"]) == 2 and text.logprobs[0]["logprob"] == pytest.approx(-0.1)
    assert isinstance(structured.value, Verdict) and structured.logprobs  # raw completion kept via instructor
    assert all(b["logprobs"] is True and b["top_logprobs"] == 2 for b in server.bodies)


def test_retry_after_is_honoured(server, store):
    out = client(server, store).call_many([Request(ask("busy [[script: 429:1, ok]]"), Verdict)])[0]
    assert out.ok
    key = request_key({"messages": ask("busy [[script: 429:1, ok]]")})
    first, second = server.arrivals[key]
    assert second - first >= 1.0, f"retried after {second - first:.3f}s, Retry-After said 1s"
    assert rows(store)[0]["attempts"] == 2


@pytest.mark.parametrize(("script", "ok", "attempts", "error_part"), [
    ("503:0, ok", True, 2, None),
    ("500, 500, ok", True, 3, None),
    ("500", False, 3, "scripted 500"),
    ("400", False, 1, "scripted 400"),  # a client error is not worth a retry
    ("hang, ok", True, 2, None),
    ("hang", False, 3, "Timeout"),
    ("bad, ok", True, 2, None),  # schema violation: instructor re-asks
    ("trunc", False, 3, "schema validation failed"),
    ("bad", False, 3, "schema validation failed"),
])
def test_faults_end_as_retried_success_or_recorded_failure(server, store, script, ok, attempts, error_part):
    text = f"case [[script: {script}]]"
    c = client(server, store, max_retries=2, validation_retries=2, timeout_s=1.0)
    out = c.call_many([Request(ask(text), Verdict)], progress=None)[0]
    (row,) = rows(store)
    assert out.ok is ok and (out.value is not None) is ok
    assert row["attempts"] == attempts == server.counts[request_key({"messages": ask(text)})]
    if ok:
        assert row["error"] is None
    else:
        assert error_part in row["error"] and out.error == row["error"]
        assert store.cached_call(row["request_hash"]) is None  # failures are never served as answers


def test_identical_run_is_served_from_the_store(server, store):
    requests = [Request(ask(f"dialogue {i}"), Verdict) for i in range(6)] + [Request(ask("plain one"))]
    first = client(server, store).call_many(requests)
    assert server.total == 7
    server.reset()
    second = client(server, store).call_many(requests)
    assert server.total == 0, "a cached request reached the provider"
    assert all(o.cached for o in second) and [o.value for o in second] == [o.value for o in first]
    assert [o.call_id for o in second] == [o.call_id for o in first]


def test_acalls_arriving_together_are_looked_up_in_one_query(server, store, monkeypatch):
    requests = [Request(ask(f"turn {i}")) for i in range(10)]
    first = client(server, store).call_many(requests, progress=None)
    server.reset()
    queries: list[int] = []
    looked_up = store.cached_calls
    monkeypatch.setattr(store, "cached_calls", lambda keys: queries.append(len(keys)) or looked_up(keys))
    monkeypatch.setattr(store, "cached_call", lambda key: pytest.fail("one query per call"))
    again = client(server, store)
    outs = asyncio.run(turns_of(again, requests))
    assert server.total == 0 and all(o.cached for o in outs) and [o.value for o in outs] == [o.value for o in first]
    assert sum(queries) == 10 and len(queries) <= 2
    # requests the store never answered cost no query at all; once answered, the same client serves them
    fresh = [Request(ask(f"new turn {i}")) for i in range(5)]
    queries.clear()
    asyncio.run(turns_of(again, fresh))
    assert queries == [] and server.total == 5
    again.flush()
    repeat = asyncio.run(turns_of(again, fresh))
    assert server.total == 5 and all(o.cached for o in repeat) and sum(queries) == 5


async def turns_of(c: JudgeClient, requests: list[Request]) -> list[CallOutcome]:
    """The requests as concurrent ``acall``s, as the conversations of an eval take a turn at once."""
    return list(await asyncio.gather(*(c.acall(r.messages) for r in requests)))


def test_identical_requests_in_flight_are_sent_once(server, store):
    server.latency_s = 0.2
    outs = client(server, store).call_many([Request(ask("same"), Verdict)] * 3)
    assert server.total == 1 and len({o.call_id for o in outs}) == 1 and sum(o.cached for o in outs) == 2


def test_budget_stops_the_run_cleanly(server, store):
    # usage from the server: 10 completion tokens per call at 0.001 USD = 0.01 USD per call
    priced = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.001}
    requests = [Request(ask(f"item {i}"), Verdict) for i in range(10)]
    outs = client(server, store, run_id="b", concurrency=1, budget_usd=0.05, **priced).call_many(requests)
    assert [o.ok for o in outs] == [True] * 5 + [False] * 5
    assert {o.error for o in outs[5:]} == {"budget exhausted"} and server.total == 5
    assert outs[0].cost == pytest.approx(0.01) and store.run_cost("b") == pytest.approx(0.05)
    skipped = store.sql("SELECT attempts, cost FROM calls WHERE error = 'budget exhausted'")
    assert skipped == [(0, 0.0)] * 5  # recorded as not sent, so a later run with more budget sends them
    # resuming the same run with the same budget sends nothing more: the spend is read back from the store
    again = client(server, store, run_id="b", concurrency=1, budget_usd=0.05, **priced).call_many(requests)
    assert server.total == 5 and [o.cached for o in again] == [True] * 5 + [False] * 5


def test_budget_lets_in_flight_calls_finish(server, store):
    server.latency_s = 0.1
    priced = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.001}
    requests = [Request(ask(f"batch {i}"), Verdict) for i in range(12)]
    outs = client(server, store, run_id="c", concurrency=4, budget_usd=0.01, **priced).call_many(requests)
    done = [o for o in outs if o.ok]
    assert 1 <= len(done) <= 4  # the calls in flight when the budget ran out finished, no more were sent
    assert server.total == len(done) and all(o.error == "budget exhausted" for o in outs if not o.ok)


def test_secrets_never_reach_store_or_logs(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "secrets.duckdb"
    with Store(path) as store:
        c = client(server, store, extra_headers={"X-Api-Key": HEADER_SECRET, "X-Trace": "fine"}, max_retries=0)
        outs = c.call_many([Request(ask("ok")), Request(ask("x [[script: 401]]"), Verdict)])
        assert outs[0].ok and not outs[1].ok
        assert server.headers[0]["authorization"] == f"Bearer {API_KEY}"  # the key did reach the provider
        assert server.headers[0]["x-api-key"] == HEADER_SECRET
        texts = []
        for table, column in store.sql("SELECT table_name, column_name FROM information_schema.columns "
                                       "WHERE data_type IN ('VARCHAR', 'JSON')"):
            texts += [str(v[0]) for v in store.sql(f'SELECT "{column}" FROM {table}')]
        assert any("X-Trace" in t for t in texts)  # non-secret headers are recorded
    blob = "\n".join(texts) + path.read_bytes().decode("latin-1") + caplog.text + "".join(capfd.readouterr())
    for secret in (API_KEY, HEADER_SECRET):
        assert secret not in blob


RESUME_ITEMS = 40
RUNNER = """
import sys
from pydantic import BaseModel
from traitlab.judges import JudgeClient, Request
from traitlab.store import Store

class Verdict(BaseModel):
    score: int
    reason: str

client = JudgeClient("openai/loopback-judge", store=Store(sys.argv[1]), run_id="resume", concurrency=4,
                     api_base=sys.argv[2], api_key="sk-dummy")
client.call_many([Request([{"role": "user", "content": f"kill-resume item {i}"}], Verdict) for i in range(40)])
"""


class RunnerVerdict(BaseModel):  # the runner's Verdict for the in-process rerun: same JSON schema, same hashes
    model_config = ConfigDict(title="Verdict")
    score: int
    reason: str


def test_killed_run_resumes_without_lost_or_duplicated_calls(tmp_path, transport):
    """A subprocess makes 40 calls (concurrency 4, 100 ms each); SIGKILL mid-run (after 24 were sent, so that
    batched writes have flushed some); the rerun completes the rest."""
    srv = LoopbackServer(latency_s=0.1).start()
    db = tmp_path / "resume.duckdb"
    try:
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(db), srv.base_url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 45
        while srv.total < 24 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        time.sleep(0.3)  # let the server finish reading requests that were already on the wire
        sent_before_kill = srv.total
        with Store(db) as store:
            recorded_before = store.sql("SELECT count(*) FROM calls")[0][0]
            rerun = JudgeClient("openai/loopback-judge", store=store, run_id="resume", concurrency=4,
                                api_base=srv.base_url, api_key="sk-dummy")
            outs = rerun.call_many([Request([{"role": "user", "content": f"kill-resume item {i}"}], RunnerVerdict)
                                    for i in range(RESUME_ITEMS)], progress=None)
            ok_rows = store.sql("SELECT request_hash FROM calls WHERE error IS NULL")
            all_rows = store.sql("SELECT count(*) FROM calls")[0][0]
    finally:
        srv.stop()
    expected = {request_key({"messages": [{"role": "user", "content": f"kill-resume item {i}"}]})
                for i in range(RESUME_ITEMS)}
    made = sum(srv.counts[k] for k in expected)
    duplicated = sum(max(0, srv.counts[k] - 1) for k in expected)
    lost = sum(srv.counts[k] == 0 for k in expected)
    print(f"\nkill/resume: expected={len(expected)} made={made} duplicated={duplicated} lost={lost} "
          f"sent_before_kill={sent_before_kill} recorded_before_kill={recorded_before} "
          f"served_from_store_on_rerun={sum(o.cached for o in outs)}")
    assert 0 < recorded_before < RESUME_ITEMS, "the kill did not land mid-run"
    assert lost == 0 and set(srv.counts) == expected and all(o.ok for o in outs)
    assert len(ok_rows) == all_rows == RESUME_ITEMS and len({r[0] for r in ok_rows}) == RESUME_ITEMS
    # re-sent at most: the 4 in flight, plus the calls that finished in the last flush interval (not yet written)
    assert duplicated <= 4 + 4 * math.ceil(FLUSH_S / 0.1 + 1), "more re-sent calls than the write guarantee allows"
    assert duplicated == sent_before_kill - recorded_before  # exactly the calls in flight at the kill
    assert sum(o.cached for o in outs) == recorded_before


def test_call_outcome_ok():
    assert CallOutcome(call_id="a").ok and not CallOutcome(call_id="b", error="x").ok


@pytest.mark.parametrize("name", ["api_key", "Authorization", "x-api-key", "aws_secret_access_key",
                                  "azure_ad_token", "vertex_credentials", "OPENAI_APIKEY", "password"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_tokens", "top_logprobs", "input_cost_per_token", "temperature", "seed",
                                  "api_base", "extra_headers", "monkey"])
def test_non_secret_names(name):
    assert not is_secret_name(name)


def test_request_hash_ignores_secrets_and_transport_but_not_the_request():
    msgs = ask("x")
    base = request_hash("openai/m", msgs, Verdict, {"api_key": "a", "temperature": 0})
    assert base == request_hash("openai/m", msgs, Verdict, {"api_key": "b", "temperature": 0, "timeout": 5})
    assert base != request_hash("openai/m", msgs, Verdict, {"api_key": "a", "temperature": 1})
    assert base != request_hash("openai/m", msgs, None, {"api_key": "a", "temperature": 0})
    assert base != request_hash("openai/other", msgs, Verdict, {"api_key": "a", "temperature": 0})


def test_call_many_works_inside_a_running_event_loop(server):
    async def main() -> list[CallOutcome]:
        return client(server).call_many([Request(ask("from a loop"))], progress=None)

    assert asyncio.run(main())[0].value == "echo: from a loop"


class Tiny(BaseModel):
    answer: bool


@pytest.mark.slow
def test_local_model_returns_a_validated_object(store):
    c = JudgeClient("local/smollm2-135m", store=store, run_id="local", max_tokens=16, temperature=0)
    out = c.call_many([Request([{"role": "user", "content": "Is the sky blue? Answer in JSON."}], Tiny)],
                      progress=None)[0]
    assert out.ok, out.error
    assert type(out.value) is Tiny and out.cost == 0.0 and out.completion_tokens > 0
    assert store.cached_call(store.sql("SELECT request_hash FROM calls")[0][0]).call_id == out.call_id
