"""CLI commands of traitlab.evals: ``eval``, ``report``, ``judge-bench`` and ``demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from traitlab.console import MaxFailuresOpt, check_outputs, fail, finish, policy_or_fail
from traitlab.judges.provider import ProviderOptions, provider_options

if TYPE_CHECKING:
    from rich.console import Console

    from traitlab.evals.judge_bench import InverseTuringResult
    from traitlab.store import Store
    from traitlab.types import TraitSet

StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="run store (default $TRAITLAB_STORE or ./traitlab.duckdb)")]


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    app.command("eval")(provider_options(eval_cmd))
    app.command("report")(report_cmd)
    app.command("judge-bench")(provider_options(judge_bench_cmd))
    app.command("demo")(demo_cmd)


def eval_cmd(
    suite: Annotated[str, typer.Argument(help="suite YAML file, or the name of a shipped suite (turing, doctor...)")],
    model: Annotated[str | None, typer.Option(
        help="model under test: any LiteLLM string, or a local Hugging Face model / LoRA adapter folder "
             "(a path or local/<path>) (default: the suite's)")] = None,
    store: StoreOpt = None,
    n: Annotated[int | None, typer.Option("--n", help="number of conversations (default: the suite's)")] = None,
    run_id: Annotated[str | None, typer.Option(help="resume or name the run")] = None,
    data: Annotated[Path | None, typer.Option(help="data folder the suite's scenario reads (a preset's layout)")
                    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="conversations (and model calls) in flight at once")
                           ] = 16,
    plugin: Annotated[list[str] | None, typer.Option(
        help="module or .py file registering scenarios, scorers or rewards (repeatable)")] = None,
    max_failures: MaxFailuresOpt = None,
    *,
    provider: ProviderOptions | None = None,
) -> None:
    """Have a suite's conversations with a model, score them, and record an eval run. Exits 1 when more
    conversations than ``--max-failures`` could not be had or judged."""
    from rich.console import Console

    from traitlab.data import DataError
    from traitlab.evals.generate import evaluate
    from traitlab.evals.suite import load_suite
    from traitlab.registry import load_plugins
    from traitlab.settings import store_path
    from traitlab.store import Store

    policy = policy_or_fail(max_failures)
    check_outputs(("--store", store_path(store), False))
    try:
        load_plugins(plugin or [])
        s = load_suite(suite)
        options = (provider or ProviderOptions()).over(s.provider)
        options.check(model or s.model, s.params)
        with Store(store_path(store)) as st:
            r = evaluate(s, model, st, n=n, run_id=run_id, data_dir=data, concurrency=concurrency, provider=options)
    except (DataError, FileNotFoundError, ImportError, TypeError, ValueError) as e:  # TypeError: a plugin's
        raise fail(e) from None  # object that breaks a Protocol
    scored = "; ".join(f"{k}: {v.scored} scored" + ("" if v.mean is None else f", mean {v.mean:.3f}")
                       for k, v in r.scorers.items())
    Console().print(f"run [bold]{r.run_id}[/bold]: {r.n_dialogues} dialogues ({r.generated} new, {r.resumed} "
                    f"resumed, {len(r.failed)} failed" + (f", {len(r.unscored)} not scored" if r.unscored else "")
                    + f"); {scored or 'no scorers'}; {r.status}")
    finish(r.n_failed, r.n_items, policy, errors=r.errors)


def report_cmd(
    runs: Annotated[list[str], typer.Argument(help="run ids; the first is the baseline the others are compared with")],
    out: Annotated[Path, typer.Option(help="HTML file; report.json and report.md are written beside it")] = Path(
        "report.html"),
    store: StoreOpt = None,
    aggregator: Annotated[Path | None, typer.Option(help="an Aggregator JSON to show (weights by trait id)")] = None,
    reward: Annotated[str | None, typer.Option(help="show a LocalReward's aggregator: 'default' or a saved dir")
                      ] = None,
    title: str = "traitlab report",
) -> None:
    """Write a self-contained HTML report (plus JSON and markdown) of one or more runs."""
    from traitlab.evals.report import aggregator_view, build_report, reward_view
    from traitlab.settings import store_path
    from traitlab.store import Store

    check_outputs(("--out", out, False), ("--out", out.parent / "report.json", False),
                  ("--out", out.parent / "report.md", False), ("--store", store_path(store), False))
    try:
        view = None
        if aggregator is not None:
            from traitlab.judges.aggregate import Aggregator

            view = aggregator_view(Aggregator.load(aggregator), source=str(aggregator))
        elif reward is not None:
            from traitlab.judges.reward import load_reward

            view = reward_view(load_reward(None if reward == "default" else reward), f"local reward: {reward}")
        with Store(store_path(store)) as st:
            paths = build_report(st, runs, out, aggregator=view, title=title)
    except (KeyError, ValueError) as e:
        raise fail(e) from None
    kinds = ", ".join(f"{n} {k}" for k, n in paths.kinds.items())
    typer.echo(f"wrote {paths.html} (+ {paths.json_.name}, {paths.md.name})\n"
               f"covers {len(paths.runs)} run(s) ({kinds}): {', '.join(paths.runs)}; {paths.dialogues} dialogues; "
               f"{paths.comparisons} comparison(s)" + ("; the reward audit" if paths.audit else ""))


def judge_bench_cmd(
    ratings: Annotated[Path | None, typer.Option(help="ratings JSONL of several judges: agreement per trait")] = None,
    traits: Annotated[Path | None, typer.Option(help="trait set JSON (statements' text; the set --repeat rates)")
                      ] = None,
    model: Annotated[str | None, typer.Option(help="judge model: Inverse Turing (--pairs) or repeats (--run)")] = None,
    pairs: Annotated[Path | None, typer.Option(help="dialogues JSONL with game_id + label (Inverse Turing)")] = None,
    proposals: Annotated[Path | None, typer.Option(help="stored proposals JSONL: their verdicts' accuracy")] = None,
    n: Annotated[int, typer.Option("--n", help="pairs to ask (Inverse Turing)")] = 20,
    store: StoreOpt = None,
    run: Annotated[list[str] | None, typer.Option(help="store run(s): test-retest and inter-judge agreement")] = None,
    repeat: Annotated[int, typer.Option(help="with --model and --run: rate the run's dialogues this many times")] = 0,
    temperature: Annotated[float, typer.Option(help="judge temperature for --repeat")] = 0.7,
    max_failures: MaxFailuresOpt = None,
    *,
    provider: ProviderOptions | None = None,
) -> None:
    """Judge benchmark: inter-judge agreement (--ratings or --run), test-retest (--run [--model --repeat N]),
    Inverse Turing (--model --pairs). Exits 1 when more judge calls than ``--max-failures`` failed."""
    from rich.console import Console

    from traitlab.data import DataError, load_proposals, load_ratings, load_trait_set
    from traitlab.evals import judge_bench as jb
    from traitlab.settings import store_path
    from traitlab.store import Store

    if not (ratings or model or run or proposals):
        raise fail(ValueError("give --ratings FILE, --run RUN_ID, --proposals FILE or --model M --pairs FILE"))
    policy = policy_or_fail(max_failures)
    check_outputs(("--store", store_path(store), False))
    console = Console()
    failed, total, errors = 0, 0, []
    try:
        trait_set = load_trait_set(traits) if traits else None
        texts = {t.id: t.text for t in trait_set.traits} if trait_set else {}
        if ratings:
            for t in jb.agreement_rich_table(jb.agreement_table(load_ratings(ratings)), texts):
                console.print(t)
        if proposals:
            recs = load_proposals(proposals)
            for who in sorted({str(r.get("proposer", "?")) for r in recs}):
                mine = [r for r in recs if str(r.get("proposer", "?")) == who]
                _print_inverse_turing(console, jb.summarise_verdicts(who, jb.verdicts_from_proposals(mine)))
        kwargs = (provider or ProviderOptions()).client_kwargs()
        if model:
            (provider or ProviderOptions()).check(model)
        with Store(store_path(store)) as st:
            if run:
                failed, total, errors = _bench_runs(console, st, run, model if repeat else None, repeat, temperature,
                                                    trait_set, texts, kwargs)
            if model and pairs:
                f, t, e = _bench_inverse_turing(console, st, model, pairs, n, kwargs)
                failed, total, errors = failed + f, total + t, errors + e
            elif model and not repeat:
                raise ValueError("--model needs --pairs FILE (Inverse Turing) or --run RUN --repeat N (retest)")
    except (DataError, ValueError, KeyError) as e:
        raise fail(e) from None
    finish(failed, total, policy, errors=errors)


def _bench_runs(console: Console, st: Store, runs: list[str], model: str | None, repeat: int, temperature: float,
                trait_set: TraitSet | None, texts: dict[str, str], provider: dict[str, Any]
                ) -> tuple[int, int, list[str]]:
    """Inter-judge agreement and test-retest over the ratings of ``runs`` (after new repeats, if asked);
    returns (failed, asked, errors) of the repeat ratings."""
    from rich.table import Table

    from traitlab.data import sample_trait_set
    from traitlab.evals import judge_bench as jb

    rs = [r for rid in runs for r in st.ratings(rid)]
    counts: tuple[int, int, list[str]] = (0, 0, [])
    if model:
        dialogues = [d for rid in runs for d in st.dialogues(rid)]
        with st.running("judge-bench", f"retest: {model}", {"model": model, "runs": runs, "repeat": repeat}) as bench:
            rs = jb.repeat_ratings(st, dialogues, trait_set or sample_trait_set(), model, repeats=repeat,
                                   run_id=bench, temperature=temperature, **provider)
            asked = len(dialogues) * repeat
            counts = (asked - len(rs), asked, st.failed_calls(bench))
            st.finish_run(bench, "done" if not counts[0] else "partial" if rs else "failed",
                          summary={"ratings": len(rs), "failed": counts[0]})
    if len({r.judge for r in rs}) > 1:
        for t in jb.agreement_rich_table(jb.agreement_table(rs), texts):
            console.print(t)
    retest = jb.retest_agreement(rs)
    table = Table(title="Test-retest: ordinal alpha across repeated ratings of the same dialogue")
    for col in ("judge", "trait", "alpha", "repeats", "units"):
        table.add_column(col)
    for r in retest:
        table.add_row(r.judge, r.trait_id, f"{r.alpha_ordinal:.3f}", str(r.repeats), str(r.n_units))
    console.print(table if retest else "no repeated ratings in these runs (add --model M --repeat N)")
    return counts


def _bench_inverse_turing(console: Console, st: Store, model: str, pairs: Path, n: int,
                          provider: dict[str, Any]) -> tuple[int, int, list[str]]:
    from traitlab.data import load_dialogues, pair_dialogues
    from traitlab.evals import judge_bench as jb
    from traitlab.judges.client import JudgeClient

    paired = pair_dialogues(load_dialogues(pairs, skipped=[]))[:n]
    config = {"model": model, "pairs": str(pairs), "n": n}
    with st.running("judge-bench", f"inverse Turing: {model}", config) as rid:
        res = jb.inverse_turing(paired, JudgeClient(model, store=st, run_id=rid, **provider))
        st.put_artifact(rid, "inverse_turing", res.model_dump(mode="json"))
        st.finish_run(rid, "failed" if res.verdicts and res.n_failed == len(res.verdicts) else "done",
                      summary=res.model_dump(mode="json", exclude={"verdicts"}))
    _print_inverse_turing(console, res)
    return res.n_failed, len(res.verdicts), [v.error for v in res.verdicts if v.error]


def _print_inverse_turing(console: Console, res: InverseTuringResult) -> None:
    lo, hi = res.accuracy_ci
    opt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    console.print(f"Inverse Turing, {res.model}: accuracy {res.accuracy:.3f} [{lo:.3f}, {hi:.3f}] on {res.n_pairs} "
                  f"pairs ({res.n_failed} failed); swap consistency {opt(res.swap_consistency)}; said A "
                  f"{opt(res.said_a)}; mean confidence {opt(res.mean_confidence)}; confidence ECE {opt(res.ece)}")


def demo_cmd(
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="folder for the report (and the store, unless --store)")] = Path(
        "traitlab-demo"),
) -> None:
    """The whole offline loop: sample data -> local reward -> eval of the offline model -> judge -> report."""
    from rich.console import Console
    from rich.table import Table

    from traitlab.evals.demo import run_demo

    started = time.perf_counter()
    r = run_demo(out, store)
    table = Table(title="traitlab demo (offline)")
    table.add_column("step")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    sec = r.stage_seconds
    acc = "–" if r.sample_pairwise_accuracy is None else f"{r.sample_pairwise_accuracy:.2f}"
    table.add_row("local reward on sample dialogues", f"mean {r.sample_reward_mean:.3f}; human > AI in {acc} "
                  "of sample games", f"{sec['reward on sample']:.1f}")
    e = r.eval
    mean = "–" if e.reward_mean is None else f"{e.reward_mean:.3f}"
    table.add_row(f"eval {e.model} (turing-mini)", f"{e.n_dialogues} conversations, mean reward {mean}",
                  f"{sec['eval (generate + reward)']:.1f}")
    table.add_row("offline LLM judge (traitlab12)", f"{r.judge_ratings} dialogue(s) rated",
                  f"{sec['offline LLM judge']:.1f}")
    table.add_row("report", str(r.report.html), f"{sec['report']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"report: {r.report.html.resolve()}\nstore: {r.store}\n"
                  f"wall time {time.perf_counter() - started:.1f} s")
