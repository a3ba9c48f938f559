"""``traitlab runs``: list, show (secrets redacted, failures by kind), export to JSONL and parquet."""

from __future__ import annotations

import json

import duckdb
from typer.testing import CliRunner

from traitlab.cli import app
from traitlab.data import sample_dialogues, sample_trait_set
from traitlab.runs import export_run, failure_kind, list_runs, show_run
from traitlab.store import CallRecord, Store, redact_secrets
from traitlab.types import TraitRatings

KEY = "sk-live-abcdefghijklmnopqrstuvwxyz0123"


def _fill(path) -> None:
    ds, ts = sample_dialogues()[:4], sample_trait_set()
    with Store(path) as st:
        st.start_run("score", "judge: local/x", {"model": "local/x", "params": {"api_key": KEY, "max_tokens": 9,
                                                                                "input_cost_per_token": 1e-6}},
                     run_id="r1")
        st.add_dialogues("r1", ds)
        st.add_ratings("r1", [TraitRatings(dialogue_id=d.id, judge="local/x", ratings={t: 3.0 for t in ts.ids[:2]})
                              for d in ds])
        for i, err in enumerate([None, "provider error after 4 request(s): RateLimitError: slow down",
                                 "provider error after 4 request(s): RateLimitError: again", "budget exhausted"]):
            st.record_call(CallRecord(call_id=f"c{i}", request_hash=f"h{i}", run_id="r1", model="local/x",
                                      cost=0.25, error=err))
        st.put_artifact("r1", "trait_set", {"name": "x’\\u20"})
        st.finish_run("r1", summary={"rated": 4})
        st.start_run("eval", "turing-mini", {"model": "m"}, run_id="r2")


def test_list_show_redact_and_failures(tmp_path):
    _fill(tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb") as st:
        rows = list_runs(st)
        assert [(r.run_id, r.kind, r.status) for r in rows] == [("r1", "score", "done"), ("r2", "eval", "running")]
        r1 = rows[0]
        assert (r1.dialogues, r1.ratings, r1.calls, r1.failed_calls, r1.artifacts) == (4, 8, 4, 3, 1)
        assert r1.cost_usd == 1.0
        assert [r.run_id for r in list_runs(st, "eval")] == ["r2"]
        d = show_run(st, "r1")
        assert d.config["params"] == {"api_key": "***", "max_tokens": 9, "input_cost_per_token": 1e-6}
        assert [(f.kind, f.count) for f in d.failures] == [("RateLimitError", 2), ("budget exhausted", 1)]
        assert d.failures[0].first.endswith("slow down") and d.judges == {"local/x": 8}
        assert [a.name for a in d.artifacts] == ["trait_set"] and d.artifacts[0].size_bytes == len(
            json.dumps({"name": "x’\\u20"}).encode())   # bytes of the stored JSON, escapes and all
    assert redact_secrets({"headers": {"Authorization": "Bearer abcdefghijkl"}, "note": f"key {KEY}"}) == {
        "headers": {"Authorization": "***"}, "note": "key ***"}
    assert failure_kind("schema validation failed after 2 request(s): ValidationError: x") == "ValidationError"


def test_export_jsonl_and_parquet(tmp_path):
    _fill(tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb") as st:
        j = export_run(st, "r1", tmp_path / "j", "jsonl")
        p = export_run(st, "r1", tmp_path / "p", "parquet")
    assert j.rows == p.rows == {"runs": 1, "calls": 4, "ratings": 8, "dialogues": 4, "artifacts": 1}
    lines = [json.loads(x) for x in j.files["ratings"].read_text().splitlines()]
    assert len(lines) == 8 and {x["run_id"] for x in lines} == {"r1"}
    run = json.loads(j.files["runs"].read_text())
    assert run["config"]["params"]["api_key"] == "***" and KEY not in j.files["runs"].read_text()
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{p.files['dialogues']}'").fetchone()[0] == 4
    cfg = con.execute(f"SELECT config FROM '{p.files['runs']}'").fetchone()[0]
    assert KEY not in cfg and "***" in cfg


def test_cli(tmp_path):
    _fill(tmp_path / "s.duckdb")
    cli = CliRunner()
    s = ["--store", str(tmp_path / "s.duckdb")]
    out = cli.invoke(app, ["runs", *s], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "r1" in out.output and "4 (3)" in out.output and "1.0000" in out.output
    out = cli.invoke(app, ["runs", "show", "r1", *s], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "RateLimitError" in out.output and KEY not in out.output
    out = cli.invoke(app, ["runs", "export", "r1", "--format", "parquet", "--out", str(tmp_path / "x"), *s])
    assert out.exit_code == 0 and "ratings.parquet  (8 rows)" in out.output
    bad = cli.invoke(app, ["runs", "show", "nope", *s])
    assert bad.exit_code == 2 and "no run 'nope'" in bad.output
    bad = cli.invoke(app, ["runs", "export", "r1", "--format", "csv", *s])
    assert bad.exit_code == 2
    missing = cli.invoke(app, ["runs", "--store", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 2 and "no store" in missing.output
