"""``traitlab demo``: the whole offline loop in a few minutes on a laptop CPU, with no network.

sample dialogues -> the shipped local reward -> a small eval of the offline model (``local/smollm2-135m``)
on the ``turing-mini`` suite -> two sample dialogues rated by the offline LLM judge through the real judge
path (JudgeClient + rate_dialogues on the shipped ``traitlab12`` trait set) -> an HTML report comparing the
sample transcripts with the model's. Run ids are fixed, so running it again resumes from the store.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from traitlab.data import sample_dialogues
from traitlab.evals.generate import EvalResult, evaluate
from traitlab.evals.report import ReportPaths, build_report, reward_view
from traitlab.evals.scoring import JudgeScorer, RewardScorer, score_run
from traitlab.store import Store

OFFLINE_MODEL = "local/smollm2-135m"
SAMPLE_RUN = "demo-sample"
EVAL_RUN = "demo-eval"
JUDGED = 2
"""Sample dialogues rated by the offline judge: enough to exercise the path, few enough to stay quick."""


class DemoResult(BaseModel):
    store: Path
    report: ReportPaths
    sample_reward_mean: float | None
    sample_pairwise_accuracy: float | None
    eval: EvalResult
    judge_ratings: int
    stage_seconds: dict[str, float]


def _pairwise(scores: dict[str, float]) -> float | None:
    """Share of sample groups whose positive-side transcript the reward scores higher than the other one."""
    from traitlab.judges.aggregate import pairwise_accuracy

    ds = [d for d in sample_dialogues() if d.id in scores and d.label]
    return pairwise_accuracy(scores, ds) if ds else None


def run_demo(out: str | Path = "traitlab-demo", store_path: str | Path | None = None) -> DemoResult:
    """Run the offline loop; the store defaults to ``<out>/traitlab.duckdb`` and the report to ``<out>``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with Store(Path(store_path) if store_path else out / "traitlab.duckdb") as store:
        t = time.perf_counter()
        samples = sample_dialogues()
        store.start_run("sample", "traitlab sample dialogues", {"source": "traitlab/sample"}, run_id=SAMPLE_RUN)
        if not store.dialogues(SAMPLE_RUN):
            store.add_dialogues(SAMPLE_RUN, samples)
        reward = RewardScorer("default")
        reward_mean = score_run(store, SAMPLE_RUN, samples, [reward])[reward.name].mean
        pairwise = _pairwise(store.artifact(SAMPLE_RUN, "scores")["scores"])
        timings["reward on sample"] = time.perf_counter() - t

        t = time.perf_counter()
        result = evaluate("turing-mini", OFFLINE_MODEL, store, run_id=EVAL_RUN)
        timings["eval (generate + reward)"] = time.perf_counter() - t

        t = time.perf_counter()
        n_judged = score_run(store, SAMPLE_RUN, samples[:JUDGED], [JudgeScorer(OFFLINE_MODEL)])[OFFLINE_MODEL].scored
        store.finish_run(SAMPLE_RUN, summary={"reward_mean": reward_mean, "pairwise_accuracy": pairwise})
        timings["offline LLM judge"] = time.perf_counter() - t

        t = time.perf_counter()
        report = build_report(store, [SAMPLE_RUN, EVAL_RUN], out / "report.html",
                              aggregator=reward_view(reward.reward()),
                              title="traitlab demo: sample transcripts vs local/smollm2-135m")
        timings["report"] = time.perf_counter() - t
        return DemoResult(store=store.path, report=report, sample_reward_mean=reward_mean,
                          sample_pairwise_accuracy=pairwise, eval=result, judge_ratings=n_judged,
                          stage_seconds=timings)
