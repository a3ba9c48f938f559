"""Trait reports: one self-contained HTML page (inline SVG and CSS, no script, no fetch), plus JSON and
markdown for CI logs, from runs in the store.

The page is built in two steps: :func:`collect` reads the store into a :class:`ReportData` (that is also
``report.json``), and :func:`render_html` / :func:`render_markdown` draw it. All text goes through the
escaping builder of :mod:`traitlab.evals.svg`, so dialogue text can never become markup.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from traitlab import stats
from traitlab.data import sample_trait_set
from traitlab.evals.svg import Interval, Markup, el, histogram, interval_plot, reliability_diagram, signed_bars, table
from traitlab.store import Store
from traitlab.types import Dialogue, Message, TraitRatings, TraitSet

SCORES_ARTIFACT = "scores"
"""Artifact of an eval run: ``{"scorer": name, "scores": {dialogue_id: scalar}}`` (higher = more human)."""
TRAIT_SET_ARTIFACT = "trait_set"
"""The trait set an LLM judge rated the run on (JSON of a TraitSet); the reward's goes in the next one."""
REWARD_TRAIT_SET_ARTIFACT = "reward_trait_set"
AGGREGATOR_ARTIFACT = "aggregator"
"""Optional artifact: ``{"source", "weights": {trait_id: w}, "bias", "reliability": [...], "ece"}``."""
N_BOOT = 1000
ALPHA = 0.05


class ReliabilityPoint(BaseModel):
    mean_predicted: float
    observed_rate: float
    count: int


class TraitStat(BaseModel):
    trait_id: str
    mean: float
    lo: float
    hi: float
    n: int


class JudgeProfile(BaseModel):
    """One scorer's ratings of a run's dialogues, per trait, with bootstrap CIs of the mean."""

    judge: str
    traits: list[TraitStat]


class Example(BaseModel):
    dialogue_id: str
    score: float | None
    target_role: str
    messages: list[Message]


class RunView(BaseModel):
    run_id: str
    kind: str
    name: str
    model: str | None
    status: str
    n_dialogues: int
    scorer: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    score_stat: TraitStat | None = None
    profiles: list[JudgeProfile] = Field(default_factory=list)
    high: list[Example] = Field(default_factory=list)
    low: list[Example] = Field(default_factory=list)
    before_after: Any = None
    flags: Any = None
    reliability: list[ReliabilityPoint] = Field(default_factory=list)
    ece: float | None = Field(None, description="of sigmoid(score) against the dialogues' human/ai labels")


class DeltaRow(BaseModel):
    """``other - base`` for one trait (or the scalar score) of one scorer, Mann-Whitney p, BH q."""

    judge: str
    trait_id: str
    base_mean: float
    other_mean: float
    diff: float
    lo: float
    hi: float
    p: float
    q: float
    significant: bool


class Comparison(BaseModel):
    base: str
    other: str
    rows: list[DeltaRow]


class AggregatorView(BaseModel):
    source: str
    weights: dict[str, float]
    bias: float | None = None
    reliability: list[ReliabilityPoint] = Field(default_factory=list)
    ece: float | None = None


class ReportData(BaseModel):
    title: str
    created: str
    runs: list[RunView]
    comparisons: list[Comparison]
    aggregator: AggregatorView | None = None
    trait_texts: dict[str, str] = Field(default_factory=dict)


class ReportPaths(BaseModel):
    html: Path
    json_: Path = Field(alias="json")
    md: Path


# collecting ---------------------------------------------------------------------------------------------
def _mean_stat(trait_id: str, values: Sequence[float]) -> TraitStat:
    v = np.asarray(values, dtype=float)
    lo, hi = stats.bootstrap_ci(v, np.mean, n_boot=N_BOOT) if v.size > 1 else (float(v.mean()), float(v.mean()))
    return TraitStat(trait_id=trait_id, mean=float(v.mean()), lo=lo, hi=hi, n=int(v.size))


def _by_judge(ratings: Sequence[TraitRatings]) -> dict[str, dict[str, dict[str, float]]]:
    """judge -> trait id -> dialogue id -> value (the mean when a judge rated a dialogue more than once)."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in ratings:
        for tid, v in r.ratings.items():
            acc.setdefault(r.judge, {}).setdefault(tid, {}).setdefault(r.dialogue_id, []).append(v)
    return {j: {t: {d: float(np.mean(vs)) for d, vs in ds.items()} for t, ds in ts.items()}
            for j, ts in acc.items()}


def _optional_artifact(store: Store, run_id: str, name: str) -> Any:
    try:
        return store.artifact(run_id, name)
    except KeyError:
        return None


def _example(d: Dialogue, score: float | None) -> Example:
    return Example(dialogue_id=d.id, score=score, target_role=d.target_role, messages=d.messages)


def collect_run(store: Store, run_id: str, n_examples: int = 2) -> RunView:
    """A run's dialogues, scores and per-judge trait profiles (plus align artifacts when present)."""
    run = store.run(run_id)
    dialogues = store.dialogues(run_id)
    scores_art = _optional_artifact(store, run_id, SCORES_ARTIFACT) or {}
    scores = {str(k): float(v) for k, v in (scores_art.get("scores") or {}).items()}
    profiles = [JudgeProfile(judge=j, traits=[_mean_stat(t, list(ds.values())) for t, ds in sorted(ts.items())])
                for j, ts in sorted(_by_judge(store.ratings(run_id)).items())]
    ranked = sorted((d for d in dialogues if d.id in scores), key=lambda d: scores[d.id], reverse=True)
    if not ranked:
        ranked = dialogues
    high = [_example(d, scores.get(d.id)) for d in ranked[:n_examples]]
    low = [_example(d, scores.get(d.id)) for d in ranked[n_examples:][-n_examples:][::-1]]
    cfg = run["config"]
    reliability, ece = _label_calibration(dialogues, scores)
    return RunView(run_id=run_id, kind=run["kind"] or "", name=run["name"] or "", status=run["status"] or "",
                   model=cfg.get("model") if isinstance(cfg, dict) else None, n_dialogues=len(dialogues),
                   scorer=scores_art.get("scorer"), scores=scores,
                   score_stat=_mean_stat("score", list(scores.values())) if scores else None, profiles=profiles,
                   high=high, low=low, before_after=_optional_artifact(store, run_id, "before_after"),
                   flags=_optional_artifact(store, run_id, "flags"), reliability=reliability, ece=ece)


def _label_calibration(dialogues: Sequence[Dialogue], scores: dict[str, float], bins: int = 5
                       ) -> tuple[list[ReliabilityPoint], float | None]:
    """Reliability of P(human) = sigmoid(score) on the run's labelled dialogues (both labels needed)."""
    from traitlab.judges.aggregate import expected_calibration_error, reliability_bins

    labelled = [d for d in dialogues if d.label is not None and d.id in scores]
    y = np.array([d.label == "human" for d in labelled], dtype=float)
    if len(set(y.tolist())) < 2:
        return [], None
    p = 1.0 / (1.0 + np.exp(-np.array([scores[d.id] for d in labelled])))
    points = [ReliabilityPoint(mean_predicted=b.mean_predicted, observed_rate=b.observed_rate, count=b.count)
              for b in reliability_bins(p, y, bins)]
    return points, expected_calibration_error(p, y, bins)


def _delta(judge: str, trait_id: str, base: Sequence[float], other: Sequence[float]) -> DeltaRow:
    a, b = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    lo, hi = stats.bootstrap_ci((a, b), lambda x, y: float(y.mean() - x.mean()), n_boot=N_BOOT)
    p = stats.mann_whitney_p(b, a)
    return DeltaRow(judge=judge, trait_id=trait_id, base_mean=float(a.mean()), other_mean=float(b.mean()),
                    diff=float(b.mean() - a.mean()), lo=lo, hi=hi, p=p, q=p, significant=False)


def compare_runs(store: Store, base: str, other: str) -> Comparison:
    """Per-trait differences (other - base) for every scorer both runs share, BH-corrected across rows."""
    rows = []
    ra, rb = _by_judge(store.ratings(base)), _by_judge(store.ratings(other))
    for judge in sorted(set(ra) & set(rb)):
        for tid in sorted(set(ra[judge]) & set(rb[judge])):
            a, b = list(ra[judge][tid].values()), list(rb[judge][tid].values())
            if a and b:
                rows.append(_delta(judge, tid, a, b))
    sa, sb = (_optional_artifact(store, r, SCORES_ARTIFACT) for r in (base, other))
    if sa and sb and sa.get("scores") and sb.get("scores"):
        rows.insert(0, _delta(f"{sa.get('scorer') or 'scorer'} (scalar)", "score", list(sa["scores"].values()),
                              list(sb["scores"].values())))
    if rows:
        q = stats.bh_fdr([r.p for r in rows])
        rows = [r.model_copy(update={"q": float(qi), "significant": bool(qi < ALPHA)}) for r, qi in zip(rows, q,
                                                                                                    strict=True)]
    return Comparison(base=base, other=other, rows=rows)


def aggregator_view(aggregator: Any, fit_report: Any = None, source: str = "") -> AggregatorView:
    """The weights (per rating point) and, given its fit report, the out-of-fold reliability bins and ECE."""
    weights, bias = aggregator.raw_weights()
    rel = [ReliabilityPoint(mean_predicted=b.mean_predicted, observed_rate=b.observed_rate, count=b.count)
           for b in (fit_report.reliability if fit_report is not None else [])]
    return AggregatorView(source=source or aggregator.name, weights=weights, bias=bias, reliability=rel,
                          ece=fit_report.cv.ece if fit_report is not None else None)


def reward_view(reward: Any, source: str = "shipped local reward") -> AggregatorView:
    """A LocalReward's scalar head (an Aggregator over its predicted traits) and its held-out ECE (and
    reliability bins, when its training metadata keeps them)."""
    heldout = (getattr(reward, "meta", None) or {}).get("heldout") or {}
    view = aggregator_view(reward.aggregator, source=source)
    bins = [ReliabilityPoint.model_validate(b) for b in heldout.get("reliability") or []]
    return view.model_copy(update={"ece": heldout.get("ece"), "reliability": bins})


def _trait_texts(store: Store, run_ids: Sequence[str]) -> dict[str, str]:
    sets = [sample_trait_set()]
    for r in run_ids:
        for name in (TRAIT_SET_ARTIFACT, REWARD_TRAIT_SET_ARTIFACT):
            if art := _optional_artifact(store, r, name):
                sets.append(TraitSet.model_validate({k: v for k, v in art.items() if k != "hash"}))
    return {t.id: t.text for ts in sets for t in ts.traits}


def collect(store: Store, run_ids: Sequence[str], *, aggregator: AggregatorView | None = None,
            title: str = "traitlab report") -> ReportData:
    """Everything the report shows; the first run is the baseline every other run is compared with."""
    if not run_ids:
        raise ValueError("a report needs at least one run id")
    runs = [collect_run(store, r) for r in run_ids]
    if aggregator is None:
        arts = [a for r in run_ids if (a := _optional_artifact(store, r, AGGREGATOR_ARTIFACT))]
        aggregator = AggregatorView.model_validate(arts[0]) if arts else None
    return ReportData(title=title, created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), runs=runs,
                      comparisons=[compare_runs(store, run_ids[0], r) for r in run_ids[1:]],
                      aggregator=aggregator, trait_texts=_trait_texts(store, run_ids))


# rendering ----------------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.sig{font-weight:bold;color:#a40000}.plot{display:block;margin:8px 0}.muted{color:#777}
.dialogue{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:8px 0;background:#fafafa}
.msg{margin:3px 0;white-space:pre-wrap}.role{font-weight:bold;color:#555}.target .role{color:#3465a4}
code{background:#f4f4f4;padding:0 3px}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""No script may run and nothing may be fetched, even if something slipped past the escaping."""


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _dialogue(ex: Example) -> Markup:
    head = el("div", el("code", ex.dialogue_id), f"  score {_f(ex.score)}" if ex.score is not None else "",
              class_="muted")
    msgs = [el("div", el("span", m.role, ": ", class_="role"), m.content,
               class_="msg target" if m.role == ex.target_role else "msg") for m in ex.messages]
    return el("div", head, msgs, class_="dialogue")


def _json_block(value: Any) -> Markup:
    """Align artifacts of any shape: a list of flat records or a dict of them becomes a table."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        value = [{"key": k, **v} for k, v in value.items()]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        cols = list(dict.fromkeys(k for v in value for k in v))
        cell = lambda x: _f(x) if isinstance(x, float) else x if isinstance(x, str | int) else json.dumps(x)  # noqa: E731
        return table(cols, [[cell(v.get(c, "")) for c in cols] for v in value])
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return el("ul", [el("li", v) for v in value]) if value else el("p", "none", class_="muted")
    return el("pre", json.dumps(value, indent=2, ensure_ascii=False))


def _ci(x: Any) -> str:
    """``mean [lo, hi]`` of an ``{mean, lo, hi}`` record (the shape alignment monitors write)."""
    if not isinstance(x, dict) or "mean" not in x:
        return "–"
    return f"{_f(x.get('mean'))} [{_f(x.get('lo'))}, {_f(x.get('hi'))}]"


def _before_after_block(ba: Any) -> Markup:
    """The alignment ``before_after`` artifact: per-trait before/after/delta with CIs, and a delta plot."""
    traits = ba.get("traits") if isinstance(ba, dict) else None
    if not isinstance(traits, dict) or not all(isinstance(v, dict) for v in traits.values()):
        return _json_block(ba)
    rows = [("score", ba.get("score") or {}, None, None), *((t, v, v.get("weight"), v.get("share"))
                                                             for t, v in traits.items())]
    deltas = [Interval(label=t, value=float(d["mean"]), lo=float(d["lo"]), hi=float(d["hi"]),
                       strong=not (float(d["lo"]) <= 0 <= float(d["hi"])))
              for t, v, _, _ in rows if isinstance(d := v.get("delta"), dict) and d.get("mean") is not None]
    steps = f"after {ba.get('steps', '?')} steps on {ba.get('n_prompts', '?')} prompts; "
    return el("div", el("p", steps, f"weights: {ba.get('weights_source', '?')}", class_="muted"),
              interval_plot(deltas, zero=0.0, title="after − before, 95% CI (filled = CI excludes 0)") if deltas
              else None,
              table(["trait", "weight", "before", "after", "Δ", "share of gain"],
                    [[t, _f(w) if isinstance(w, float | int) else "", _ci(v.get("before")), _ci(v.get("after")),
                      _ci(v.get("delta")), _f(sh) if isinstance(sh, float | int) else ""] for t, v, w, sh in rows]))


def _run_section(run: RunView, idx: int, texts: dict[str, str]) -> Markup:
    parts: list[object] = [el("h2", f"Run {idx + 1}: ", el("code", run.run_id)),
                           table(["kind", "name", "model", "status", "dialogues", "score (mean, 95% CI)"],
                                 [[run.kind, run.name, run.model or "", run.status, run.n_dialogues,
                                   f"{_f(run.score_stat.mean)} [{_f(run.score_stat.lo)}, {_f(run.score_stat.hi)}]"
                                   if run.score_stat else "–"]])]
    for prof in run.profiles:
        rows = [Interval(label=t.trait_id, value=t.mean, lo=t.lo, hi=t.hi, strong=True) for t in prof.traits]
        parts += [el("h3", "Trait profile: ", prof.judge),
                  interval_plot(rows, title=f"{prof.judge}: mean rating per trait, 95% bootstrap CI"),
                  table(["trait", "statement", "mean", "95% CI", "n"],
                        [[t.trait_id, texts.get(t.trait_id, ""), _f(t.mean), f"[{_f(t.lo)}, {_f(t.hi)}]", t.n]
                         for t in prof.traits])]
    if run.high:
        parts += [el("h3", "Highest-scoring dialogues" if run.scores else "Example dialogues"),
                  [_dialogue(e) for e in run.high]]
    if run.low:
        parts += [el("h3", "Lowest-scoring dialogues"), [_dialogue(e) for e in run.low]]
    if run.reliability:
        parts += [el("h3", "Calibration on the labelled dialogues"),
                  reliability_diagram([(p.mean_predicted, p.observed_rate, p.count) for p in run.reliability],
                                      title=f"P(human) = sigmoid(score) vs label, ECE {_f(run.ece)}")]
    if run.before_after is not None:
        parts += [el("h3", "Before / after alignment"), _before_after_block(run.before_after)]
    if run.flags is not None:
        parts += [el("h3", "Flags"), _json_block(run.flags)]
    return el("section", parts)


def _comparison_section(c: Comparison, names: dict[str, str]) -> Markup:
    if not c.rows:
        return el("section", el("h2", "Comparison"), el("p", f"{c.other} and {c.base} share no scorer.",
                                                       class_="muted"))
    plots = []
    for judge in dict.fromkeys(r.judge for r in c.rows):
        rows = [Interval(label=r.trait_id, value=r.diff, lo=r.lo, hi=r.hi, strong=r.significant)
                for r in c.rows if r.judge == judge]
        plots.append(interval_plot(rows, zero=0.0, title=f"{judge}: {names[c.other]} − {names[c.base]} "
                                                          "(filled = BH q < 0.05)"))
    body = table(["scorer", "trait", "base", "other", "Δ", "95% CI", "p (MWU)", "q (BH)"],
                 [[r.judge, r.trait_id, _f(r.base_mean), _f(r.other_mean),
                   el("span", f"{r.diff:+.3f}", class_="sig" if r.significant else None),
                   f"[{_f(r.lo)}, {_f(r.hi)}]", _f(r.p, 4), _f(r.q, 4)] for r in c.rows])
    return el("section", el("h2", "Run vs run: ", el("code", c.other), " − ", el("code", c.base)), plots, body)


def _aggregator_section(a: AggregatorView) -> Markup:
    w = sorted(a.weights.items(), key=lambda kv: -abs(kv[1]))
    parts: list[object] = [el("h2", "Aggregator: ", a.source),
                           el("p", f"bias {_f(a.bias)}; weights per rating point (positive = more human-like)",
                              class_="muted"),
                           signed_bars(w, title="aggregator weights by trait id")]
    if a.reliability:
        parts += [reliability_diagram([(p.mean_predicted, p.observed_rate, p.count) for p in a.reliability],
                                      title=f"reliability (out of fold), ECE {_f(a.ece)}")]
    elif a.ece is not None:
        parts.append(el("p", f"held-out ECE {_f(a.ece)}"))
    return el("section", parts)


def render_html(data: ReportData) -> str:
    names = {r.run_id: f"run {i + 1}" for i, r in enumerate(data.runs)}
    dist = [(f"{names[r.run_id]} {r.name or r.model or ''}".strip(), list(r.scores.values()))
            for r in data.runs if r.scores]
    body: list[object] = [el("h1", data.title), el("p", f"generated {data.created}; ",
                                                   f"{len(data.runs)} run(s)", class_="muted")]
    if len(data.runs) > 1:
        profiles = [Interval(label=f"{t.trait_id} ({p.judge})"[:28], value=t.mean, lo=t.lo, hi=t.hi, series=i,
                             strong=True) for i, r in enumerate(data.runs) for p in r.profiles for t in p.traits]
        if profiles:
            body += [el("h2", "Trait profiles, all runs"),
                     interval_plot(profiles, title="mean rating per trait, 95% bootstrap CI",
                                   series_names=[f"{names[r.run_id]} {r.name}" for r in data.runs])]
    if dist:
        body += [el("h2", "Score distributions"), histogram(dist, title="per-dialogue score (density)")]
    body += [_comparison_section(c, names) for c in data.comparisons]
    body += [_run_section(r, i, data.trait_texts) for i, r in enumerate(data.runs)]
    if data.aggregator:
        body.append(_aggregator_section(data.aggregator))
    head = el("head", Markup('<meta charset="utf-8">'),
              Markup(f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'),
              el("title", data.title), el("style", Markup(CSS)))
    return "<!DOCTYPE html>\n" + el("html", head, el("body", body), lang="en") + "\n"


_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def markdown_inline(text: str) -> str:
    """User text (e.g. ``--title``) as one literal markdown line: line breaks folded, markdown/HTML
    characters escaped, bidi controls dropped and the whole isolated (FSI...PDI) so it cannot reorder the rest."""
    flat = " ".join(_BIDI_CONTROLS.sub("", text).split())
    return "\u2068" + re.sub(r"([\\`*_{}\[\]<>()#+\-.!|~&])", r"\\\1", flat) + "\u2069"


def render_markdown(data: ReportData) -> str:
    lines = [f"# {markdown_inline(data.title)}", "", f"generated {data.created}", "",
             "| run | kind | model | dialogues | score (mean [95% CI]) |", "|---|---|---|---|---|"]
    for r in data.runs:
        s = r.score_stat
        lines.append(f"| `{r.run_id}` | {r.kind} | {r.model or ''} | {r.n_dialogues} | "
                     + (f"{s.mean:.3f} [{s.lo:.3f}, {s.hi:.3f}] |" if s else "– |"))
    for c in data.comparisons:
        sig = [r for r in c.rows if r.significant]
        lines += ["", f"## `{c.other}` − `{c.base}`: {len(sig)} of {len(c.rows)} differences with BH q < {ALPHA}",
                  "", "| scorer | trait | Δ | 95% CI | q |", "|---|---|---|---|---|"]
        lines += [f"| {r.judge} | {r.trait_id} | {r.diff:+.3f} | [{r.lo:.3f}, {r.hi:.3f}] | {r.q:.4f} |"
                  for r in sorted(c.rows, key=lambda r: r.q)[:10]]
    if data.aggregator and data.aggregator.ece is not None:
        lines += ["", f"Aggregator {data.aggregator.source}: held-out ECE {data.aggregator.ece:.3f}"]
    lines += [f"Run `{r.run_id}`: ECE of sigmoid(score) on {sum(p.count for p in r.reliability)} labelled "
              f"dialogues {r.ece:.3f}" for r in data.runs if r.ece is not None]
    return "\n".join(lines) + "\n"


def build_report(store: Store, run_ids: Sequence[str], out: str | Path, *,
                 aggregator: AggregatorView | None = None, title: str = "traitlab report") -> ReportPaths:
    """Write ``out`` (HTML) and ``report.json`` / ``report.md`` beside it; returns the three paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = collect(store, run_ids, aggregator=aggregator, title=title)
    out.write_text(render_html(data), encoding="utf-8")
    paths = ReportPaths(html=out, json=out.parent / "report.json", md=out.parent / "report.md")
    paths.json_.write_text(data.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths.md.write_text(render_markdown(data), encoding="utf-8")
    return paths
