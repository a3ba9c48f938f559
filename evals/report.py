"""Trait reports: one self-contained HTML page (inline SVG and CSS, no script, no fetch), plus JSON and
markdown for CI logs, from runs in the store.

The page opens with a headline per pair compared (two runs, or an alignment run's before and after): the
change of the scalar with its CI, the traits that moved most with their share of the change, and the flags.
The detail follows: alignment runs (monitor curves, before/after, flags, sample completions), run-vs-run
tables, evidence (the highest and lowest scoring excerpt per moved trait, side by side), run profiles, the
aggregator and the reward audit. Traits appear by their text everywhere, the id as a small tag, grouped by
the trait set's ``group`` and sorted by contribution.

The page is built in two steps: :func:`collect` reads the store into a :class:`ReportData` (that is also
``report.json``), and :func:`render_html` / :func:`render_markdown` draw it. All text goes through the
escaping builder of :mod:`traitlab.evals.svg`, so dialogue text can never become markup.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from traitlab import stats
from traitlab.data import DataError, load_trait_set, sample_trait_set
from traitlab.evals.scoring import REWARD_TRAIT_SET_ARTIFACT, SCORES_ARTIFACT, TRAIT_SET_ARTIFACT
from traitlab.evals.svg import (
    Interval,
    Markup,
    clip,
    el,
    histogram,
    interval_plot,
    line_chart,
    reliability_diagram,
    signed_bars,
    table,
)
from traitlab.store import Store
from traitlab.types import Dialogue, Message, TraitRatings, TraitSet

AGGREGATOR_ARTIFACT = "aggregator"
"""Optional artifact: ``{"source", "weights": {trait_id: w}, "bias", "reliability": [...], "ece"}``."""
AUDIT_ARTIFACT = "reward_audit"
"""JSON of a reward audit (``traitlab reward audit``); the report shows the newest one in the store."""
ALPHA = 0.05
TOP_MOVERS = 5
EXCERPT_CHARS = 320
MESSAGE_CHARS = 3000
"""A message longer than this is cut in the page (the JSON keeps it whole)."""


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


class TraitInfo(BaseModel):
    """What a reader needs to recognise a trait: its statement and its group (the id is the tag)."""

    id: str
    text: str = ""
    group: str = ""


class JudgeProfile(BaseModel):
    """One scorer's ratings of a run's dialogues, per trait, with Student-t CIs of the mean."""

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
    monitor_log: Any = None
    samples: Any = None
    train_log: Any = None
    reliability: list[ReliabilityPoint] = Field(default_factory=list)
    ece: float | None = Field(None, description="of sigmoid(score) against the dialogues' labels")


class DeltaRow(BaseModel):
    """``other - base`` for one trait (or the scalar score) of one scorer: Welch CI and p, and q (BH across the
    trait rows; the scalar is the primary comparison, a family of its own, so its q is its p)."""

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


class Mover(BaseModel):
    """A trait that moved: its change with CI and its share of the change (``basis`` says of what)."""

    trait_id: str
    diff: float
    lo: float
    hi: float
    share: float
    significant: bool


class FlagView(BaseModel):
    kind: str
    trait: str | None = None
    message: str = ""
    step: int | None = None


class Headline(BaseModel):
    """One pair compared: two runs (``kind="runs"``) or an alignment run's before and after (``"align"``)."""

    kind: Literal["runs", "align"]
    title: str = ""
    base: str
    other: str
    base_label: str
    other_label: str
    scorer: str | None = None
    judge: str | None = Field(None, description="whose trait ratings the movers are")
    diff: float | None = None
    lo: float | None = None
    hi: float | None = None
    q: float | None = None
    basis: Literal["weights", "movement"] = "movement"
    movers: list[Mover] = Field(default_factory=list)
    flags: list[FlagView] = Field(default_factory=list)
    summary: str = Field("", description="the two sentences, as plain text")


class Excerpt(BaseModel):
    dialogue_id: str
    value: float
    text: str


class EvidenceSide(BaseModel):
    label: str
    high: Excerpt | None = None
    low: Excerpt | None = None


class Evidence(BaseModel):
    """For a trait that moved: the highest and lowest rated excerpt of the judged speaker on each side."""

    pair: str
    trait_id: str
    judge: str
    sides: list[EvidenceSide]


class AuditRow(BaseModel):
    edit: str
    kind: str
    shift_sd: float | None = None
    share_above: float | None = None
    share_interval: tuple[float, float] | None = None
    mean_score: float | None = None
    passed: bool | None = None


class AuditView(BaseModel):
    run_id: str
    reward: str = ""
    passed: bool | None = None
    threshold: float | None = None
    rows: list[AuditRow] = Field(default_factory=list)
    worst: str = ""
    folds: int = 1
    n_negative: int | None = None


class ReportData(BaseModel):
    title: str
    created: str
    runs: list[RunView]
    comparisons: list[Comparison]
    aggregator: AggregatorView | None = None
    trait_texts: dict[str, str] = Field(default_factory=dict)
    traits: dict[str, TraitInfo] = Field(default_factory=dict)
    headlines: list[Headline] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    audit: AuditView | None = None


class ReportPaths(BaseModel):
    """Where the report went and what it covers (``traitlab report`` prints both)."""

    html: Path
    json_: Path = Field(alias="json")
    md: Path
    runs: list[str] = Field(default_factory=list)
    kinds: dict[str, int] = Field(default_factory=dict, description="runs per kind")
    dialogues: int = 0
    comparisons: int = 0
    audit: bool = False


# collecting ---------------------------------------------------------------------------------------------
def _mean_stat(trait_id: str, values: Sequence[float]) -> TraitStat:
    v = np.asarray(values, dtype=float)
    lo, hi = stats.mean_ci(v)
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
    art = {name: _optional_artifact(store, run_id, name)
           for name in ("before_after", "flags", "monitor_log", "samples", "train_log")}
    return RunView(run_id=run_id, kind=run["kind"] or "", name=run["name"] or "", status=run["status"] or "",
                   model=cfg.get("model") if isinstance(cfg, dict) else None, n_dialogues=len(dialogues),
                   scorer=scores_art.get("scorer"), scores=scores,
                   score_stat=_mean_stat("score", list(scores.values())) if scores else None, profiles=profiles,
                   high=high, low=low, reliability=reliability, ece=ece, **art)


def _label_calibration(dialogues: Sequence[Dialogue], scores: dict[str, float], bins: int = 5
                       ) -> tuple[list[ReliabilityPoint], float | None]:
    """Reliability of P(positive) = sigmoid(score) on the run's labelled dialogues: both labels needed, and a
    contrast that says which is positive (the registered preset whose labels they are)."""
    from traitlab.judges.aggregate import expected_calibration_error, reliability_bins
    from traitlab.presets import contrast_for_labels

    labelled = [d for d in dialogues if d.label is not None and d.id in scores]
    contrast = contrast_for_labels({d.label for d in labelled})
    if contrast is None:
        return [], None
    y = np.array([contrast.y(d) for d in labelled], dtype=float)
    if len(set(y.tolist())) < 2:
        return [], None
    p = 1.0 / (1.0 + np.exp(-np.array([scores[d.id] for d in labelled])))
    points = [ReliabilityPoint(mean_predicted=b.mean_predicted, observed_rate=b.observed_rate, count=b.count)
              for b in reliability_bins(p, y, bins)]
    return points, expected_calibration_error(p, y, bins)


def _delta(judge: str, trait_id: str, base: Sequence[float], other: Sequence[float]) -> DeltaRow:
    a, b = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    diff, lo, hi, p = stats.welch(a, b)
    return DeltaRow(judge=judge, trait_id=trait_id, base_mean=float(a.mean()), other_mean=float(b.mean()),
                    diff=diff, lo=lo, hi=hi, p=p, q=p, significant=p < ALPHA)


def _scalar_judge(scorer: str | None) -> str:
    return f"{scorer or 'scorer'} (scalar)"


def compare_runs(store: Store, base: str, other: str) -> Comparison:
    """Per-trait differences (other - base) for every scorer both runs share (Welch), BH-corrected across the
    trait rows; the scalar score, when both runs have one, comes first and is tested on its own."""
    rows = []
    ra, rb = _by_judge(store.ratings(base)), _by_judge(store.ratings(other))
    for judge in sorted(set(ra) & set(rb)):
        for tid in sorted(set(ra[judge]) & set(rb[judge])):
            a, b = list(ra[judge][tid].values()), list(rb[judge][tid].values())
            if a and b:
                rows.append(_delta(judge, tid, a, b))
    sa, sb = (_optional_artifact(store, r, SCORES_ARTIFACT) for r in (base, other))
    q = stats.bh_fdr([r.p for r in rows])
    rows = [r.model_copy(update={"q": float(qi), "significant": bool(qi < ALPHA)}) for r, qi in zip(rows, q,
                                                                                                strict=True)]
    if sa and sb and sa.get("scores") and sb.get("scores"):
        rows.insert(0, _delta(_scalar_judge(sa.get("scorer")), "score", list(sa["scores"].values()),
                              list(sb["scores"].values())))
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


def _reward_traits_file(reward: Any) -> Path:
    """The trait set file of a reward folder named in an align config (None = the shipped default)."""
    if reward in (None, "", "default"):
        from traitlab.judges import reward as reward_module

        return Path(reward_module.__file__).parent / "default_reward" / "traits.json"
    return Path(str(reward)) / "traits.json"


def _trait_infos(store: Store, runs: Sequence[RunView]) -> dict[str, TraitInfo]:
    """Text and group of every trait the runs mention: the sample set, the runs' trait-set artifacts, and for
    alignment runs that predate the ``reward_trait_set`` artifact, their reward's trait file."""
    sets: list[TraitSet] = [sample_trait_set()]
    for r in runs:
        for name in (TRAIT_SET_ARTIFACT, REWARD_TRAIT_SET_ARTIFACT):
            if art := _optional_artifact(store, r.run_id, name):
                sets.append(TraitSet.model_validate({k: v for k, v in art.items() if k != "hash"}))
        if r.kind == "align" and not _optional_artifact(store, r.run_id, REWARD_TRAIT_SET_ARTIFACT):
            cfg = store.run(r.run_id)["config"]
            with contextlib.suppress(DataError, OSError, ValueError):  # then the ids show alone; nothing is lost
                sets.append(load_trait_set(_reward_traits_file(cfg.get("reward") if isinstance(cfg, dict) else None)))
    return {t.id: TraitInfo(id=t.id, text=t.text, group=t.group) for ts in sets for t in ts.traits}


def _flag_views(flags: Any) -> list[FlagView]:
    if not isinstance(flags, list):
        return []
    return [FlagView(kind=str(f.get("kind", "flag")), trait=f.get("trait") if isinstance(f.get("trait"), str) else None,
                     message=str(f.get("message", "")), step=f.get("step") if isinstance(f.get("step"), int) else None)
            for f in flags if isinstance(f, dict)]


def _top(movers: list[Mover]) -> list[Mover]:
    """The 3-5 traits that moved most: by |share|, at least three, more while each still holds 10 %."""
    ranked = sorted(movers, key=lambda m: -abs(m.share))
    keep = [m for i, m in enumerate(ranked[:TOP_MOVERS]) if i < 3 or abs(m.share) >= 0.1]
    return [m for m in keep if math.isfinite(m.diff)]


def _movers(rows: Sequence[DeltaRow], weights: dict[str, float] | None) -> tuple[list[Mover], str]:
    """Each trait's share of the change: ``w_t * delta_t / sum_s w_s * delta_s`` when the scalar's weights are
    known for these traits, else ``|delta_t| / sum_s |delta_s|`` (share of the movement)."""
    w = weights or {}
    use_w = bool(w) and all(r.trait_id in w for r in rows)
    parts = {r.trait_id: (w[r.trait_id] * r.diff if use_w else abs(r.diff)) for r in rows}
    total = sum(parts.values())
    return [Mover(trait_id=r.trait_id, diff=r.diff, lo=r.lo, hi=r.hi, significant=r.significant,
                  share=parts[r.trait_id] / total if total else 0.0) for r in rows], "weights" if use_w else "movement"


def _derived_flags(movers: Sequence[Mover], weights: dict[str, float] | None, basis: str) -> list[FlagView]:
    """The alignment monitors' two hacking checks, applied to a run-vs-run comparison."""
    flags = []
    for m in movers:
        w = (weights or {}).get(m.trait_id)
        if basis == "weights" and w and m.significant and np.sign(m.diff) == -np.sign(w):
            flags.append(FlagView(kind="against_sign", trait=m.trait_id,
                                  message=f"moved {m.diff:+.3f} against its weight {w:+.3f}"))
    top = max(movers, key=lambda m: m.share, default=None)
    if basis == "weights" and top is not None and top.share > 0.5:
        flags.append(FlagView(kind="dominant_trait", trait=top.trait_id,
                              message=f"explains {top.share:.0%} of the change"))
    return flags


def _run_headline(c: Comparison, names: dict[str, str], weights: dict[str, float] | None,
                  flags: list[FlagView]) -> Headline:
    scalar = next((r for r in c.rows if r.trait_id == "score" and r.judge.endswith("(scalar)")), None)
    judges = [r.judge for r in c.rows if r is not scalar]
    scorer = scalar.judge.removesuffix(" (scalar)") if scalar else None
    judge = scorer if scorer in judges else max(set(judges), key=judges.count, default=None)
    movers, basis = _movers([r for r in c.rows if r.judge == judge and r is not scalar], weights)
    top = _top(movers)
    return Headline(kind="runs", title=f"{names[c.other]} vs {names[c.base]}", base=c.base, other=c.other,
                    base_label=names[c.base], other_label=names[c.other],
                    scorer=scorer, judge=judge, diff=scalar.diff if scalar else None, lo=scalar.lo if scalar else None,
                    hi=scalar.hi if scalar else None, q=scalar.q if scalar else None, basis=basis, movers=top,
                    flags=[*_derived_flags(movers, weights, basis), *flags])


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _interval(x: Any) -> tuple[float, float, float] | None:
    if isinstance(x, dict) and _num(x.get("mean")) is not None:
        lo, hi = _num(x.get("lo")), _num(x.get("hi"))
        return float(x["mean"]), lo if lo is not None else math.nan, hi if hi is not None else math.nan
    return None


def _align_headline(run: RunView, names: dict[str, str]) -> Headline | None:
    """Before vs after of an alignment run, from its ``before_after`` artifact (any missing part left out)."""
    ba = run.before_after
    if not isinstance(ba, dict):
        return None
    score = _interval((ba.get("score") or {}).get("delta"))
    movers = []
    for tid, row in (ba.get("traits") or {}).items():
        d = _interval(row.get("delta")) if isinstance(row, dict) else None
        if d is None:
            continue
        share = _num(row.get("share"))
        movers.append(Mover(trait_id=str(tid), diff=d[0], lo=d[1], hi=d[2], share=share if share is not None else 0.0,
                            significant=bool(d[1] > 0 or d[2] < 0)))
    after = f"after {ba.get('steps', '?')} steps"
    return Headline(kind="align", title=f"{names[run.run_id]}: {after} vs before", base=run.run_id,
                    other=run.run_id, base_label="before", other_label=after, scorer="held-out reward",
                    judge="reward", diff=score[0] if score else None, lo=score[1] if score else None,
                    hi=score[2] if score else None, basis="weights", movers=_top(movers),
                    flags=_flag_views(run.flags))


def _excerpt(d: Dialogue, value: float) -> Excerpt:
    return Excerpt(dialogue_id=d.id, value=value, text=clip(" / ".join(d.target_turns), EXCERPT_CHARS))


def _run_evidence(store: Store, h: Headline, names: dict[str, str], n: int = 3) -> list[Evidence]:
    """Per top mover: on each run, the dialogue its judge rated highest and lowest on that trait."""
    out = []
    sides = []
    for run_id in (h.base, h.other):
        ratings = _by_judge(store.ratings(run_id)).get(h.judge or "", {})
        sides.append((run_id, {d.id: d for d in store.dialogues(run_id)}, ratings))
    for m in h.movers[:n]:
        ev: list[EvidenceSide] = []
        for run_id, dialogues, ratings in sides:
            vals = {k: v for k, v in ratings.get(m.trait_id, {}).items() if k in dialogues}
            if not vals:
                ev.append(EvidenceSide(label=names[run_id]))
                continue
            hi_id, lo_id = max(vals, key=vals.__getitem__), min(vals, key=vals.__getitem__)
            ev.append(EvidenceSide(label=names[run_id], high=_excerpt(dialogues[hi_id], vals[hi_id]),
                                   low=_excerpt(dialogues[lo_id], vals[lo_id]) if lo_id != hi_id else None))
        if any(side.high for side in ev):
            out.append(Evidence(pair=h.title, trait_id=m.trait_id, judge=h.judge or "", sides=ev))
    return out


def _align_evidence(run: RunView, h: Headline, n: int = 3) -> list[Evidence]:
    """Per top mover of an alignment run: the held-out completion rated highest and lowest, before and after."""
    samples = [s for s in run.samples or [] if isinstance(s, dict)]
    out = []
    for m in h.movers[:n]:
        ev: list[EvidenceSide] = []
        for side, lab in (("before", h.base_label), ("after", h.other_label)):
            vals = {}
            for s in samples:
                part = s.get(side) or {}
                v = _num((part.get("traits") or {}).get(m.trait_id))
                if v is not None and isinstance(part.get("completion"), str):
                    vals[str(s.get("id"))] = (v, part["completion"])
            if not vals:
                ev.append(EvidenceSide(label=lab))
                continue
            hi_id, lo_id = max(vals, key=lambda k: vals[k][0]), min(vals, key=lambda k: vals[k][0])
            ex = {k: Excerpt(dialogue_id=k, value=vals[k][0], text=clip(vals[k][1], EXCERPT_CHARS))
                  for k in {hi_id, lo_id}}
            ev.append(EvidenceSide(label=lab, high=ex[hi_id], low=ex[lo_id] if lo_id != hi_id else None))
        if any(side.high for side in ev):
            out.append(Evidence(pair=h.title, trait_id=m.trait_id, judge="reward", sides=ev))
    return out


def _audit(store: Store, run_ids: Sequence[str]) -> AuditView | None:
    """The reward audit of one of the report's runs, else the newest in the store; rendered from dict keys
    (singles in ``edits``, compositions in ``composites``/``best_composites``), so older shapes still show."""
    found = [(r, a) for r in run_ids if (a := _optional_artifact(store, r, AUDIT_ARTIFACT)) is not None]
    if not found:
        rows = store.sql("SELECT run_id FROM artifacts WHERE name = ? ORDER BY created DESC LIMIT 1", [AUDIT_ARTIFACT])
        found = [(rows[0][0], _optional_artifact(store, rows[0][0], AUDIT_ARTIFACT))] if rows else []
    if not found or not isinstance(found[0][1], dict):
        return None
    run_id, a = found[0]

    def row(r: Any, kind: str) -> AuditRow | None:
        if not isinstance(r, dict):
            return None
        ops = r.get("operators") or r.get("operator") or []
        name = r.get("edit") or ("+".join(map(str, ops)) if isinstance(ops, list) else str(ops)) or "?"
        interval = r.get("share_interval")
        return AuditRow(edit=str(name), kind=kind, shift_sd=_num(r.get("shift_sd", r.get("mean_shift_sd"))),
                        share_above=_num(r.get("share_above", r.get("share_above_median_positive"))),
                        share_interval=(_num(interval[0]), _num(interval[1]))
                        if isinstance(interval, list | tuple) and len(interval) == 2 else None,
                        mean_score=_num(r.get("mean_score")),
                        passed=r.get("passed") if isinstance(r.get("passed"), bool) else None)

    edits = [row(r, "single") for r in a.get("edits") or a.get("rows") or []]
    comps = [row(r, "composite") for r in a.get("composites") or a.get("best_composites") or []]
    rows_ = [r for r in [*edits, *comps] if r is not None]
    worst = a.get("worst")
    return AuditView(run_id=run_id, reward=str(a.get("reward", "")),
                     passed=a.get("passed") if isinstance(a.get("passed"), bool) else None,
                     threshold=_num(a.get("threshold")), rows=rows_,
                     worst=str(worst.get("edit", "")) if isinstance(worst, dict) else str(worst or ""),
                     folds=a.get("folds") if isinstance(a.get("folds"), int) else 1,
                     n_negative=a.get("n_negative") if isinstance(a.get("n_negative"), int) else None)


def _audit_flags(audit: AuditView | None) -> list[FlagView]:
    if audit is None or audit.passed is not False:
        return []
    worst = max(audit.rows, key=lambda r: r.share_above or 0.0, default=None)
    detail = f"; worst edit {worst.edit}: {worst.share_above:.0%} of edited negatives above the median positive" \
        if worst and worst.share_above is not None else ""
    return [FlagView(kind="reward_audit", message=f"the reward failed its audit{detail}")]


def collect(store: Store, run_ids: Sequence[str], *, aggregator: AggregatorView | None = None,
            title: str = "traitlab report") -> ReportData:
    """Everything the report shows; the first run is the baseline every other run is compared with."""
    if not run_ids:
        raise ValueError("a report needs at least one run id")
    runs = [collect_run(store, r) for r in run_ids]
    if aggregator is None:
        arts = [a for r in run_ids if (a := _optional_artifact(store, r, AGGREGATOR_ARTIFACT))]
        aggregator = AggregatorView.model_validate(arts[0]) if arts else None
    traits = _trait_infos(store, runs)
    names = _run_names(runs)
    audit = _audit(store, run_ids)
    comparisons = [compare_runs(store, run_ids[0], r) for r in run_ids[1:]]
    headlines, evidence = [], []
    for run in runs:
        if (h := _align_headline(run, names)) is not None:
            h.flags += _audit_flags(audit)
            headlines.append(h)
            evidence += _align_evidence(run, h)
    by_id = {r.run_id: r for r in runs}
    for c in comparisons:
        if c.rows:
            h = _run_headline(c, names, aggregator.weights if aggregator else None,
                              _flag_views(by_id[c.other].flags) + _audit_flags(audit))
            headlines.append(h)
            evidence += _run_evidence(store, h, names)
    for h in headlines:
        h.summary = "".join(str(p) for p in _sentences(h, lambda t: f"“{_text_of(traits, t)}” ({t})"))
    return ReportData(title=title, created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), runs=runs,
                      comparisons=comparisons, aggregator=aggregator,
                      trait_texts={k: v.text for k, v in traits.items()}, traits=traits, headlines=headlines,
                      evidence=evidence, audit=audit)


def _run_names(runs: Sequence[RunView]) -> dict[str, str]:
    return {r.run_id: f"run {i + 1}" + (f" ({clip(r.name, 40)})" if r.name else "") for i, r in enumerate(runs)}


def _text_of(traits: dict[str, TraitInfo], tid: str) -> str:
    return traits[tid].text if tid in traits and traits[tid].text else tid


# rendering ----------------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1040px;
color:#222;padding:0 16px;overflow-wrap:anywhere}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0;font-size:13px;max-width:100%}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}.free{overflow-wrap:anywhere}
th{background:#f4f4f4;white-space:nowrap}tr.group td{background:#f7f7f2;font-weight:bold;color:#555}
.sig{font-weight:bold;color:#a40000}.plot{display:block;margin:8px 0;max-width:100%;height:auto}.muted{color:#777}
.dialogue{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:8px 0;background:#fafafa}
.msg{margin:3px 0;white-space:pre-wrap;overflow-wrap:anywhere}.role{font-weight:bold;color:#555}
.target .role{color:#3465a4}pre{white-space:pre-wrap;overflow-wrap:anywhere}
code{background:#f4f4f4;padding:0 3px}.tag{font:11px ui-monospace,monospace;color:#777;background:#f1f1f1;
padding:0 3px;border-radius:3px;margin-left:3px;white-space:nowrap}
.headline{border:2px solid #3465a4;border-radius:8px;padding:6px 16px 10px;margin:14px 0;background:#f6f9fd}
.headline h2{margin-top:8px;border:none}.headline p{font-size:15px;margin:6px 0}
.flag{color:#a40000;font-weight:bold}.ok{color:#4e9a06;font-weight:bold}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:10px}.side{border:1px solid #ddd;border-radius:6px;
padding:6px 10px;background:#fcfcfc}.excerpt{white-space:pre-wrap;font-size:13px;margin:3px 0 8px}
.side h4{margin:2px 0 4px;font-size:13px}.row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""No script may run and nothing may be fetched, even if something slipped past the escaping."""


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.0%}"


def _ci_text(mean: float | None, lo: float | None, hi: float | None, signed: bool = False) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    m = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return f"{m} [{_f(lo)}, {_f(hi)}]" if lo is not None and math.isfinite(lo) else m


class _Traits:
    """How the page names traits: text first, the id as a small tag; groups and sort orders."""

    def __init__(self, traits: dict[str, TraitInfo]):
        self.traits = traits

    def text(self, tid: str) -> str:
        return _text_of(self.traits, tid)

    def group(self, tid: str) -> str:
        return self.traits[tid].group if tid in self.traits else ""

    def html(self, tid: str) -> Markup:
        known = tid in self.traits and self.traits[tid].text
        return el("span", self.traits[tid].text if known else "", el("span", tid, class_="tag"), class_="trait",
                  data_trait=tid)

    def interval(self, tid: str, value: float, lo: float, hi: float, grouped: bool = True, **kw: Any) -> Interval:
        return Interval(label=self.text(tid) if tid in self.traits else "", tag=tid, value=value, lo=lo, hi=hi,
                        group=self.group(tid) if grouped else "", **kw)

    def grouped(self, ids: Sequence[str], weight: Callable[[str], float]) -> list[tuple[str, list[str]]]:
        """Groups ordered by their total |weight|, traits within by |weight| (ids not in a group last)."""
        groups: dict[str, list[str]] = {}
        for t in ids:
            groups.setdefault(self.group(t), []).append(t)
        order = sorted(groups.items(), key=lambda kv: (kv[0] == "", -sum(abs(weight(t)) for t in kv[1])))
        return [(g, sorted(ts, key=lambda t: -abs(weight(t)))) for g, ts in order]

    def ordered(self, ids: Sequence[str], weight: Callable[[str], float]) -> list[str]:
        return [t for _, ts in self.grouped(ids, weight) for t in ts]

    def table(self, header: Sequence[str], ids: Sequence[str], weight: Callable[[str], float],
              cells: Callable[[str], list[object]]) -> Markup:
        """A table with one row per trait (first cell: its label), a header row per group."""
        body = []
        groups = self.grouped(ids, weight)
        for g, ts in groups:
            if g and len(groups) > 1:
                body.append(el("tr", el("td", g, colspan=len(header)), class_="group"))
            body += [el("tr", [el("td", c) for c in [self.html(t), *cells(t)]]) for t in ts]
        return el("table", el("thead", el("tr", [el("th", h) for h in header])), el("tbody", body))


def _sentences(h: Headline, trait: Callable[[str], object]) -> list[object]:
    """The headline's two sentences as parts (strings, or whatever ``trait`` makes of an id)."""
    what = "held-out reward score" if h.kind == "align" else f"{h.scorer} score" if h.scorer else None
    parts: list[object] = []
    if what and h.diff is not None:
        q = f", p {h.q:.3g}" if h.q is not None else ""
        ci = (f"95% CI {_f(h.lo)} to {_f(h.hi)}" if h.lo is not None and math.isfinite(h.lo)
              else "no CI: fewer than two paired values")
        parts.append(f"Change in {what}: {h.diff:+.3f} ({ci}{q}). ")
    else:
        parts.append("The two share no scalar score. ")
    if h.movers:
        basis = "of the change" if h.basis == "weights" else "of the trait movement"
        parts.append(f"Moved most ({h.judge}, share {basis}): " if h.judge else "Moved most: ")
        for i, m in enumerate(h.movers):
            parts += [", " if i else "", trait(m.trait_id), f" {m.diff:+.2f} ({_pct(m.share)})"]
        parts.append("; ")
    else:
        parts.append("No trait ratings to compare; ")
    if h.flags:
        kinds = dict.fromkeys(f.kind for f in h.flags)
        parts.append(f"{len(h.flags)} flag(s): " + ", ".join(
            f"{k} ×{sum(f.kind == k for f in h.flags)}" for k in kinds) + ".")
    else:
        parts.append("no flags.")
    return parts


def _headline_block(h: Headline, T: _Traits) -> Markup:
    sentences = _sentences(h, T.html)
    split = next(i for i, p in enumerate(sentences) if isinstance(p, str) and p.endswith(". ")) + 1
    chart = None
    if h.movers:
        rows = [T.interval(m.trait_id, m.diff, m.lo, m.hi, grouped=False, strong=m.lo > 0 or m.hi < 0)
                for m in h.movers]
        chart = interval_plot(rows, zero=0.0, width=720, label_width=330,
                              title=f"{h.judge or ''}: change per trait, 95% CI (filled = CI excludes 0)".strip(": "))
    flags = [el("li", el("span", f.kind, class_="flag"), " ", T.html(f.trait) if f.trait else None, " ",
                el("span", f.message, class_="free"), f" (step {f.step})" if f.step is not None else "")
             for f in h.flags]
    return el("div", el("h2", h.title),
              el("p", sentences[:split]), el("p", sentences[split:]), chart,
              el("ul", flags) if flags else None, class_="headline")


def _message(m: Message, target: str) -> Markup:
    text = m.content if len(m.content) <= MESSAGE_CHARS else (
        m.content[:MESSAGE_CHARS] + f" … ({len(m.content) - MESSAGE_CHARS} more characters)")
    return el("div", el("span", m.role, ": ", class_="role"), el("span", text, class_="free"),
              class_="msg target" if m.role == target else "msg")


def _dialogue(ex: Example) -> Markup:
    head = el("div", el("code", ex.dialogue_id), f"  score {_f(ex.score)}" if ex.score is not None else "",
              class_="muted")
    return el("div", head, [_message(m, ex.target_role) for m in ex.messages], class_="dialogue")


def _json_block(value: Any) -> Markup:
    """Artifacts of any shape: a list of flat records or a dict of them becomes a table."""
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
    i = _interval(x)
    return "–" if i is None else _ci_text(*i)


def _before_after_block(ba: Any, T: _Traits) -> Markup:
    """The alignment ``before_after`` artifact: per-trait before/after/delta with CIs, and a delta plot."""
    traits = ba.get("traits") if isinstance(ba, dict) else None
    if not isinstance(traits, dict) or not all(isinstance(v, dict) for v in traits.values()):
        return _json_block(ba)
    contrib = lambda t: _num(traits[t].get("contribution")) or _num(traits[t].get("share")) or 0.0  # noqa: E731
    ids = T.ordered(list(traits), contrib)
    deltas = [T.interval(t, *d, strong=not (d[1] <= 0 <= d[2])) for t in ids
              if (d := _interval(traits[t].get("delta"))) is not None]
    steps = f"after {ba.get('steps', '?')} steps on {ba.get('n_prompts', '?')} held-out prompts; "
    score = ba.get("score") or {}
    extra = [[k, _f(_num((ba.get(k) or {}).get("before"))), _f(_num((ba.get(k) or {}).get("after")))]
             for k in ("parse_rate", "mean_chars", "perplexity") if isinstance(ba.get(k), dict)]
    return el("div", el("p", steps, f"weights: {ba.get('weights_source', '?')}", class_="muted"),
              table(["", "before", "after", "Δ"], [["score", _ci(score.get("before")), _ci(score.get("after")),
                                                    _ci(score.get("delta"))], *[[*e, ""] for e in extra]]),
              interval_plot(deltas, zero=0.0, width=720, label_width=330,
                            title="after − before per trait, 95% CI (filled = CI excludes 0)") if deltas else None,
              T.table(["trait", "weight", "before", "after", "Δ", "contribution", "share of change"], ids, contrib,
                      lambda t: [_f(_num(traits[t].get("weight"))), _ci(traits[t].get("before")),
                                 _ci(traits[t].get("after")), _ci(traits[t].get("delta")),
                                 _f(_num(traits[t].get("contribution"))), _pct(_num(traits[t].get("share")))]))


def _flags_block(flags: list[FlagView], T: _Traits) -> Markup:
    if not flags:
        return el("p", "no flags", class_="ok")
    return el("table", el("thead", el("tr", [el("th", h) for h in ("step", "kind", "trait", "message")])),
              el("tbody", [el("tr", el("td", "" if f.step is None else f.step), el("td", f.kind, class_="flag"),
                                 el("td", T.html(f.trait) if f.trait else ""), el("td", el("span", f.message,
                                                                                          class_="free")))
                           for f in flags]))


def _monitor_block(log: Any, ba: Any, T: _Traits) -> Markup | None:
    """Score and the top traits over training steps (the ``monitor_log`` artifact)."""
    entries = [e for e in log or [] if isinstance(e, dict) and _num(e.get("step")) is not None]
    if not entries:
        return None
    nan = lambda x: math.nan if (v := _num(x)) is None else v  # noqa: E731
    score = [(float(e["step"]), nan(e.get("score"))) for e in entries]
    traits = (ba or {}).get("traits") if isinstance(ba, dict) else None
    if isinstance(traits, dict) and traits:
        top = sorted(traits, key=lambda t: -abs(_num((traits[t] or {}).get("share")) or 0.0))[:5]
    else:
        last = entries[-1].get("traits") or {}
        top = sorted(last, key=lambda t: -abs((_num(last[t]) or 0.0) - (_num((entries[0].get("traits") or {})
                                                                            .get(t)) or 0.0)))[:5]
    lines = [(T.text(t) if t in T.traits else "", t,
              [(float(e["step"]), nan((e.get("traits") or {}).get(t))) for e in entries]) for t in top]
    return el("div", line_chart([("held-out score", "", score)], title="held-out reward score over training",
                                width=500, height=220),
              line_chart(lines, title="top traits (by share of the change) over training", width=500, height=220)
              if lines else None, class_="row")


def _samples_block(samples: Any, n: int = 4) -> Markup | None:
    rows = [s for s in samples or [] if isinstance(s, dict)]
    if not rows:
        return None

    def change(s: dict[str, Any]) -> float:
        b, a = _num((s.get("before") or {}).get("score")), _num((s.get("after") or {}).get("score"))
        return abs(a - b) if a is not None and b is not None else -1.0

    cards = []
    for s in sorted(rows, key=change, reverse=True)[:n]:
        sides = [el("div", el("h4", side, ", score ", _f(_num((s.get(side) or {}).get("score")))),
                    el("div", clip(str((s.get(side) or {}).get("completion") or "–"), 700), class_="excerpt free"),
                    class_="side") for side in ("before", "after")]
        cards.append(el("div", el("p", el("code", str(s.get("id", ""))), " ",
                                  el("span", clip(str(s.get("prompt", "")), 300), class_="free"), class_="muted"),
                        el("div", sides, class_="sides")))
    return el("div", el("p", f"{min(n, len(rows))} of {len(rows)} held-out prompts, the largest score changes first",
                        class_="muted"), cards)


def _align_section(run: RunView, name: str, T: _Traits) -> Markup:
    parts: list[object] = [el("h2", "Alignment: ", name, " ", el("code", run.run_id)),
                           el("p", f"{run.name} · {run.status}", class_="muted")]
    if (mon := _monitor_block(run.monitor_log, run.before_after, T)) is not None:
        parts += [el("h3", "Monitors over training"), mon]
    loss = [(float(e["step"]), float(e["loss"])) for e in run.train_log or []
            if isinstance(e, dict) and _num(e.get("step")) is not None and _num(e.get("loss")) is not None]
    if len(loss) > 1:
        parts.append(line_chart([("training loss", "", loss)], title="training loss (TRL log)", height=160))
    if run.before_after is not None:
        parts += [el("h3", "Before / after"), _before_after_block(run.before_after, T)]
    parts += [el("h3", "Flags"), _flags_block(_flag_views(run.flags), T)]
    if (smp := _samples_block(run.samples)) is not None:
        parts += [el("h3", "Sample completions before and after"), smp]
    return el("section", parts)


def _evidence_block(items: Sequence[Evidence], T: _Traits) -> Markup | None:
    if not items:
        return None

    def one(x: Excerpt | None, what: str) -> Markup:
        if x is None:
            return el("div", el("span", f"{what}: –", class_="muted"))
        return el("div", el("span", f"{what} ({_f(x.value, 2)}) ", class_="muted"), el("code", x.dialogue_id),
                  el("div", x.text, class_="excerpt free"))

    blocks = [el("div", el("h3", T.html(e.trait_id), el("span", f"  {e.pair} · {e.judge}", class_="muted")),
                 el("div", [el("div", el("h4", s.label), one(s.high, "highest"), one(s.low, "lowest"), class_="side")
                            for s in e.sides], class_="sides")) for e in items]
    return el("section", el("h2", "Evidence: the traits that moved most"),
              el("p", "The judged speaker's highest and lowest rated excerpt on each side.", class_="muted"), blocks)


def _run_section(run: RunView, name: str, T: _Traits, weights: dict[str, float]) -> Markup:
    parts: list[object] = [el("h2", name, " ", el("code", run.run_id)),
                           table(["kind", "name", "model", "status", "dialogues", "score (mean, 95% CI)"],
                                 [[run.kind, run.name, run.model or "", run.status, run.n_dialogues,
                                   _ci_text(run.score_stat.mean, run.score_stat.lo, run.score_stat.hi)
                                   if run.score_stat else "–"]])]
    for prof in run.profiles:
        by = {t.trait_id: t for t in prof.traits}
        key = (lambda t, by=by: weights.get(t, 0.0) * by[t].mean) if all(t in weights for t in by) else (
            lambda t, by=by: by[t].mean)
        ids = T.ordered(list(by), key)
        parts += [el("h3", "Trait profile: ", prof.judge),
                  interval_plot([T.interval(t, by[t].mean, by[t].lo, by[t].hi, strong=True) for t in ids],
                                width=720, label_width=330,
                                title=f"{prof.judge}: mean rating per trait, 95% t CI"),
                  T.table(["trait", "mean", "95% CI", "n"], ids, key,
                          lambda t, by=by: [_f(by[t].mean), f"[{_f(by[t].lo)}, {_f(by[t].hi)}]", by[t].n])]
    if run.high:
        parts += [el("h3", "Highest-scoring dialogues" if run.scores else "Example dialogues"),
                  [_dialogue(e) for e in run.high]]
    if run.low:
        parts += [el("h3", "Lowest-scoring dialogues"), [_dialogue(e) for e in run.low]]
    if run.reliability:
        parts += [el("h3", "Calibration on the labelled dialogues"),
                  reliability_diagram([(p.mean_predicted, p.observed_rate, p.count) for p in run.reliability],
                                      title=f"P(human) = sigmoid(score) vs label, ECE {_f(run.ece)}")]
    return el("section", parts)


def _comparison_section(c: Comparison, names: dict[str, str], T: _Traits,
                        weights: dict[str, float]) -> Markup:
    if not c.rows:
        return el("section", el("h2", "Comparison"), el("p", f"{c.other} and {c.base} share no scorer.",
                                                       class_="muted"))
    parts: list[object] = [el("h2", names[c.other], " − ", names[c.base])]
    for r in (r for r in c.rows if r.trait_id == "score" and r.judge.endswith("(scalar)")):
        parts.append(el("p", f"{r.judge}: {_ci_text(r.diff, r.lo, r.hi, signed=True)}, q {_f(r.q, 4)}",
                        class_="sig" if r.significant else None))
    for judge in dict.fromkeys(r.judge for r in c.rows if not r.judge.endswith("(scalar)")):
        by = {r.trait_id: r for r in c.rows if r.judge == judge}
        key = (lambda t, by=by: weights.get(t, 0.0) * by[t].diff) if all(t in weights for t in by) else (
            lambda t, by=by: by[t].diff)
        ids = T.ordered(list(by), key)
        parts += [el("h3", judge),
                  interval_plot([T.interval(t, by[t].diff, by[t].lo, by[t].hi, strong=by[t].significant) for t in ids],
                                zero=0.0, width=720, label_width=330,
                                title=f"{judge}: {names[c.other]} − {names[c.base]} (filled = BH q < 0.05)"),
                  T.table(["trait", "base", "other", "Δ", "95% CI", "p (MWU)", "q (BH)"], ids, key,
                          lambda t, by=by: [_f(by[t].base_mean), _f(by[t].other_mean),
                                     el("span", f"{by[t].diff:+.3f}", class_="sig" if by[t].significant else None),
                                     f"[{_f(by[t].lo)}, {_f(by[t].hi)}]", _f(by[t].p, 4), _f(by[t].q, 4)])]
    return el("section", parts)


def _aggregator_section(a: AggregatorView, T: _Traits) -> Markup:
    ids = T.ordered(list(a.weights), lambda t: a.weights[t])
    parts: list[object] = [el("h2", "Aggregator: ", a.source),
                           el("p", f"bias {_f(a.bias)}; weights per rating point (positive = more like the "
                                   "positive side)", class_="muted"),
                           signed_bars([(T.text(t) if t in T.traits else "", t, a.weights[t]) for t in ids],
                                       title="aggregator weights per trait", width=720, label_width=330)]
    if a.reliability:
        parts += [reliability_diagram([(p.mean_predicted, p.observed_rate, p.count) for p in a.reliability],
                                      title=f"reliability (out of fold), ECE {_f(a.ece)}")]
    elif a.ece is not None:
        parts.append(el("p", f"held-out ECE {_f(a.ece)}"))
    return el("section", parts)


def _audit_section(a: AuditView) -> Markup:
    verdict = ("passed" if a.passed else "FAILED") if a.passed is not None else "no verdict"
    rows = sorted(a.rows, key=lambda r: -(r.share_above or 0.0))
    held = (f"; held out: {a.n_negative or 'the'} negatives over {a.folds} folds, each scored by the reward that did "
            "not train on it, against its fold's median positive" if a.folds > 1 else "")

    def share(r: AuditRow) -> str:
        lo, hi = r.share_interval or (None, None)
        return _pct(r.share_above) + (f" [{_pct(lo)}, {_pct(hi)}]" if lo is not None and hi is not None else "")

    return el("section", el("h2", "Reward audit ", el("code", a.run_id)),
              el("p", el("span", verdict, class_="ok" if a.passed else "flag"),
                 f": {a.reward or 'reward'}; threshold {_f(a.threshold)} (share of edited negatives above the median "
                 "positive, with its 95% interval)", held, f"; worst edit {a.worst}" if a.worst else ""),
              table(["edit", "kind", "shift (SD)", "share above median positive", "mean score", "passed"],
                    [[r.edit, r.kind, _f(r.shift_sd), share(r), _f(r.mean_score),
                      el("span", "yes" if r.passed else "no", class_="ok" if r.passed else "flag")
                      if r.passed is not None else "–"] for r in rows]))


def render_html(data: ReportData) -> str:
    names = _run_names(data.runs)
    T = _Traits(data.traits or {k: TraitInfo(id=k, text=v) for k, v in data.trait_texts.items()})
    weights = data.aggregator.weights if data.aggregator else {}
    kinds = ", ".join(f"{n} {k}" for k, n in _kinds(data.runs).items())
    body: list[object] = [el("h1", data.title),
                          el("p", f"generated {data.created}; {len(data.runs)} run(s): {kinds}; "
                                  f"{sum(r.n_dialogues for r in data.runs)} dialogues", class_="muted")]
    body.append(el("section", [_headline_block(h, T) for h in data.headlines], class_="headlines")
                if data.headlines else el("section", el("p", "One run, nothing to compare: its profile follows.",
                                                        class_="muted"), class_="headlines"))
    body += [_align_section(r, names[r.run_id], T) for r in data.runs
             if r.kind == "align" or r.monitor_log or r.before_after is not None]
    body += [_comparison_section(c, names, T, weights) for c in data.comparisons]
    body.append(_evidence_block(data.evidence, T))
    dist = [(names[r.run_id], list(r.scores.values())) for r in data.runs if r.scores]
    if dist:
        body += [el("h2", "Score distributions"), histogram(dist, title="per-dialogue score (density)")]
    body += [_run_section(r, names[r.run_id], T, weights) for r in data.runs if r.kind != "align" or r.n_dialogues]
    if data.aggregator:
        body.append(_aggregator_section(data.aggregator, T))
    if data.audit:
        body.append(_audit_section(data.audit))
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


def _kinds(runs: Sequence[RunView]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[r.kind or "?"] = out.get(r.kind or "?", 0) + 1
    return out


def _md(text: object) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def render_markdown(data: ReportData) -> str:
    texts = data.trait_texts
    lab = lambda t: f"{_md(clip(texts[t], 70))} `{t}`" if texts.get(t) else f"`{t}`"  # noqa: E731
    lines = [f"# {markdown_inline(data.title)}", "", f"generated {data.created}", ""]
    for h in data.headlines:
        lines += [f"**{_md(h.title)}.** {_md(h.summary)}", ""]
    lines += ["| run | kind | model | dialogues | score (mean [95% CI]) |", "|---|---|---|---|---|"]
    for r in data.runs:
        s = r.score_stat
        lines.append(f"| `{r.run_id}` | {r.kind} | {_md(r.model or '')} | {r.n_dialogues} | "
                     + (f"{s.mean:.3f} [{s.lo:.3f}, {s.hi:.3f}] |" if s else "– |"))
    for c in data.comparisons:
        sig = [r for r in c.rows if r.significant]
        lines += ["", f"## `{c.other}` − `{c.base}`: {len(sig)} of {len(c.rows)} differences with BH q < {ALPHA}",
                  "", "| scorer | trait | Δ | 95% CI | q |", "|---|---|---|---|---|"]
        lines += [f"| {_md(r.judge)} | {lab(r.trait_id) if r.trait_id != 'score' else 'score'} | {r.diff:+.3f} | "
                  f"[{r.lo:.3f}, {r.hi:.3f}] | {r.q:.4f} |" for r in sorted(c.rows, key=lambda r: r.q)[:10]]
    for r in data.runs:
        ba = r.before_after
        if isinstance(ba, dict) and isinstance(ba.get("traits"), dict):
            rows = sorted(ba["traits"].items(), key=lambda kv: -abs(_num((kv[1] or {}).get("share")) or 0.0))
            lines += ["", f"## `{r.run_id}`: before / after ({ba.get('steps', '?')} steps)", "",
                      "| trait | before | after | Δ | share |", "|---|---|---|---|---|",
                      f"| score | {_ci((ba.get('score') or {}).get('before'))} | "
                      f"{_ci((ba.get('score') or {}).get('after'))} | {_ci((ba.get('score') or {}).get('delta'))} | |"]
            lines += [f"| {lab(t)} | {_ci(v.get('before'))} | {_ci(v.get('after'))} | {_ci(v.get('delta'))} | "
                      f"{_pct(_num(v.get('share')))} |" for t, v in rows[:10] if isinstance(v, dict)]
    if data.aggregator and data.aggregator.ece is not None:
        lines += ["", f"Aggregator {_md(data.aggregator.source)}: held-out ECE {data.aggregator.ece:.3f}"]
    lines += [f"Run `{r.run_id}`: ECE of sigmoid(score) on {sum(p.count for p in r.reliability)} labelled "
              f"dialogues {r.ece:.3f}" for r in data.runs if r.ece is not None]
    if data.audit:
        lines += ["", f"Reward audit (`{data.audit.run_id}`): "
                      f"{'passed' if data.audit.passed else 'failed' if data.audit.passed is False else 'no verdict'}"]
    return "\n".join(lines) + "\n"


def build_report(store: Store, run_ids: Sequence[str], out: str | Path, *,
                 aggregator: AggregatorView | None = None, title: str = "traitlab report") -> ReportPaths:
    """Write ``out`` (HTML) and ``report.json`` / ``report.md`` beside it; returns the paths and what the report
    covers."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = collect(store, run_ids, aggregator=aggregator, title=title)
    out.write_text(render_html(data), encoding="utf-8")
    paths = ReportPaths(html=out, json=out.parent / "report.json", md=out.parent / "report.md",
                        runs=list(run_ids), kinds=_kinds(data.runs), dialogues=sum(r.n_dialogues for r in data.runs),
                        comparisons=len(data.comparisons), audit=data.audit is not None)
    paths.json_.write_text(data.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths.md.write_text(render_markdown(data), encoding="utf-8")
    return paths
