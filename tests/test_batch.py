"""Provider batch mode on its real path: LiteLLM's batch API against the loopback server's /v1/files and
/v1/batches, counted at the server; kill -9 mid-poll, then resume from the store."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from loopback_server import LoopbackServer
from pydantic import BaseModel, ConfigDict, Field

from traitlab.judges import JudgeClient, Request
from traitlab.judges.batch import ARTIFACT_PREFIX, BatchError, batch_cost
from traitlab.store import Store


class Verdict(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str


def batch_client(server: LoopbackServer, store: Store, **kw) -> JudgeClient:
    return JudgeClient("openai/gpt-4o-mini", store=store, run_id="b", api_base=server.base_url, api_key="sk-batch",
                       batch=True, batch_poll_s=0.02, **kw)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def server():
    srv = LoopbackServer(batch_polls=3).start()
    yield srv
    srv.stop()


def test_batch_results_become_ordinary_call_records(server, store):
    reqs = [Request(ask(f"batch item {i}"), Verdict) for i in range(6)] + [Request(ask("no [[script: 400]]"), Verdict)]
    outs = batch_client(server, store).call_many(reqs, progress=None)
    assert server.batches_created == 1 and sum(server.batch_answered.values()) == 7
    assert all(isinstance(o.value, Verdict) for o in outs[:6]) and not outs[6].ok and "400" in outs[6].error
    assert outs[0].cost > 0
    assert outs[0].cost == pytest.approx(batch_cost("openai/gpt-4o-mini", outs[0].prompt_tokens, 10))
    assert outs[0].cost < outs[0].prompt_tokens * 1.5e-7 + 10 * 6e-7  # below the live price
    assert store.sql("SELECT count(*), count(DISTINCT request_hash) FROM calls")[0] == (7, 7)
    body = store.artifact("b", ARTIFACT_PREFIX + "batch_1")
    assert body["status"] == "collected" and len(body["hashes"]) == 7
    # the same requests again, live or batched: served from the store, nothing sent
    sent = server.total
    again = batch_client(server, store).call_many(reqs[:6], progress=None)
    live = JudgeClient("openai/gpt-4o-mini", store=store, api_base=server.base_url,
                       api_key="sk-batch").call_many(reqs[:6], progress=None)
    assert all(o.cached for o in again + live) and server.batches_created == 1 and server.total == sent


def test_json_schema_mode_in_a_batch_and_a_schema_violation_is_a_failure(server, store):
    outs = batch_client(server, store, structured_mode="json_schema").call_many(
        [Request(ask("fine"), Verdict), Request(ask("broken [[script: bad]]"), Verdict)], progress=None)
    assert outs[0].ok and not outs[1].ok and "schema validation failed" in outs[1].error
    line = server.files["file-1"].decode().splitlines()[0]
    assert '"response_format"' in line and '"tools"' not in line and "sk-batch" not in line


def test_batch_needs_a_run_id(server, store):
    with pytest.raises(BatchError, match="run id"):
        JudgeClient("openai/gpt-4o-mini", store=store, api_base=server.base_url, api_key="k", batch=True
                    ).call_many([Request(ask("x"), Verdict)], progress=None)


RUNNER = """
import sys
from pydantic import BaseModel, Field
from traitlab.judges import JudgeClient, Request
from traitlab.store import Store

class Verdict(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str

client = JudgeClient("openai/gpt-4o-mini", store=Store(sys.argv[1]), run_id="b", api_base=sys.argv[2],
                     api_key="sk-batch", batch=True, batch_poll_s=0.05)
client.call_many([Request([{"role": "user", "content": f"kill item {i}"}], Verdict) for i in range(20)])
"""


class RunnerVerdict(BaseModel):  # same JSON schema as the runner's, so the same request hashes
    model_config = ConfigDict(title="Verdict")
    score: int = Field(ge=1, le=5)
    reason: str


def test_killed_mid_poll_resumes_without_resubmitting(tmp_path):
    srv = LoopbackServer(batch_polls=40).start()
    db = tmp_path / "batch.duckdb"
    try:
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(db), srv.base_url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while (not srv.batches or srv.batches["batch_1"]["polls"] < 3) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        polls_at_kill = srv.batches["batch_1"]["polls"]
        with Store(db) as store:
            assert store.sql("SELECT count(*) FROM calls")[0][0] == 0  # killed before any result came back
            rerun = JudgeClient("openai/gpt-4o-mini", store=store, run_id="b", api_base=srv.base_url,
                                api_key="sk-batch", batch=True, batch_poll_s=0.01)
            outs = rerun.call_many([Request(ask(f"kill item {i}"), RunnerVerdict) for i in range(20)], progress=None)
            rows = store.sql("SELECT count(*), count(DISTINCT request_hash) FROM calls WHERE error IS NULL")[0]
    finally:
        srv.stop()
    print(f"\nbatch kill/resume: submitted={srv.batches_created} polls_before_kill={polls_at_kill} "
          f"answered={sum(srv.batch_answered.values())} max_per_request={max(srv.batch_answered.values())} "
          f"stored={rows[0]}")
    assert 3 <= polls_at_kill < 40
    assert srv.batches_created == 1  # resumed the stored batch, not a second submission
    assert len(srv.batch_answered) == 20 and set(srv.batch_answered.values()) == {1}  # none lost, none twice
    assert all(o.ok for o in outs) and rows == (20, 20)
