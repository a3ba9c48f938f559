"""Validation: which traits separate the two sides of a contrast, how strongly, how redundantly, how reliably.

Per trait and judge: AUC (P(positive side's rating > negative side's)), Cohen's d, Cliff's delta and a two-sided
Mann-Whitney p, with Benjamini-Hochberg FDR over all (trait, judge) tests. Redundancy: traits whose mean
ratings (over judges) correlate above a threshold (|Spearman|) form a group (complete linkage, so every
pair in a group is that correlated). Agreement: Krippendorff's alpha (ordinal) per trait when several
judges rated the same dialogues. Selection keeps traits significant for a majority of judges, one per
redundant group (the strongest).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel

from traitlab import stats
from traitlab.contrast import Contrast
from traitlab.types import Dialogue, TraitRatings, TraitSet

if TYPE_CHECKING:
    from traitlab.store import Store


class TraitStat(BaseModel):
    """One (trait, judge) row of the validation table."""

    trait_id: str
    text: str
    judge: str
    n_positive: int
    n_negative: int
    mean_positive: float
    mean_negative: float
    auc: float
    cohens_d: float
    cliffs_delta: float
    p: float
    q: float
    significant: bool
    direction: Literal["positive", "negative", "none"]


class ValidationReport(BaseModel):
    """The full validation result; ``selected`` holds trait ids, never positions."""

    trait_set: str
    trait_set_hash: str
    contrast: Contrast
    judges: list[str]
    alpha: float
    rows: list[TraitStat]
    agreement: dict[str, float | None]
    redundant_groups: list[list[str]]
    selected: list[str]
    run_id: str | None = None

    def auc_table(self) -> dict[str, dict[str, float]]:
        """``{trait_id: {judge: auc}}``."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            out.setdefault(r.trait_id, {})[r.judge] = r.auc
        return out


def sides_of(dialogues: Sequence[Dialogue], contrast: Contrast) -> dict[str, bool]:
    """``{dialogue id: is the positive side}`` of labelled dialogues (unlabelled ones carry nothing here)."""
    return {d.id: contrast.y(d) == 1.0 for d in dialogues if d.label is not None}


def _matrix(ratings: Sequence[TraitRatings], trait_ids: list[str], judge: str,
            positive: Mapping[str, bool]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Ratings of one judge as ``(dialogues, traits)`` with NaN for a missing trait, plus positive mask and ids."""
    rows = {r.dialogue_id: r for r in ratings if r.judge == judge and r.dialogue_id in positive}
    ids = sorted(rows)
    x = np.array([[rows[i].ratings.get(t, np.nan) for t in trait_ids] for i in ids], dtype=float)
    return x.reshape(len(ids), len(trait_ids)), np.array([positive[i] for i in ids], dtype=bool), ids


def trait_stats(ratings: Sequence[TraitRatings], positive: Mapping[str, bool], trait_set: TraitSet,
                alpha: float = 0.05) -> list[TraitStat]:
    """Per (trait, judge) separation statistics, BH-FDR over every test in the table; ``positive`` maps each
    labelled dialogue id to whether it is the contrast's positive side (:func:`sides_of`)."""
    judges = sorted({r.judge for r in ratings})
    raw = []
    for judge in judges:
        x, human, _ = _matrix(ratings, trait_set.ids, judge, positive)
        for j, trait in enumerate(trait_set.traits):
            col = x[:, j]
            h, a = col[human & ~np.isnan(col)], col[~human & ~np.isnan(col)]
            if h.size < 2 or a.size < 2:
                continue
            raw.append((trait, judge, h, a))
    if not raw:
        raise ValueError("no trait has ratings of at least 2 dialogues of each side: check that the rating "
                         "ids match the dialogue ids and that the dialogues are labelled")
    ps = [stats.mann_whitney_p(h, a) for _, _, h, a in raw]
    qs = stats.bh_fdr(ps)
    out = []
    for (trait, judge, h, a), p, q in zip(raw, ps, qs, strict=True):
        auc = stats.auc(h, a)
        sig = bool(q < alpha)
        out.append(TraitStat(trait_id=trait.id, text=trait.text, judge=judge, n_positive=h.size, n_negative=a.size,
                             mean_positive=float(h.mean()), mean_negative=float(a.mean()), auc=auc,
                             cohens_d=stats.cohens_d(h, a), cliffs_delta=2 * auc - 1, p=p, q=float(q),
                             significant=sig, direction=("positive" if auc > 0.5 else "negative") if sig else "none"))
    return out


def agreement(ratings: Sequence[TraitRatings], trait_set: TraitSet) -> dict[str, float | None]:
    """Krippendorff's alpha (ordinal) per trait across judges; None with fewer than two judges."""
    judges = sorted({r.judge for r in ratings})
    if len(judges) < 2:
        return {t: None for t in trait_set.ids}
    ids = sorted({r.dialogue_id for r in ratings})
    pos = {d: i for i, d in enumerate(ids)}
    cube = np.full((len(trait_set.ids), len(judges), len(ids)), np.nan)
    for r in ratings:
        j = judges.index(r.judge)
        for k, t in enumerate(trait_set.ids):
            if t in r.ratings:
                cube[k, j, pos[r.dialogue_id]] = r.ratings[t]
    out: dict[str, float | None] = {}
    for k, t in enumerate(trait_set.ids):
        a = stats.krippendorff_alpha(np.rint(cube[k]), "ordinal")  # expected scores round to their Likert point
        out[t] = None if np.isnan(a) else a
    return out


def redundant_groups(ratings: Sequence[TraitRatings], trait_set: TraitSet, threshold: float = 0.7
                     ) -> list[list[str]]:
    """Groups (size >= 2) of traits whose per-dialogue mean ratings all correlate with |Spearman| >= threshold."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.stats import spearmanr

    by_dialogue: dict[str, list[TraitRatings]] = {}
    for r in ratings:
        by_dialogue.setdefault(r.dialogue_id, []).append(r)
    x = np.array([[np.nanmean([r.ratings.get(t, np.nan) for r in rs]) for t in trait_set.ids]
                  for rs in by_dialogue.values()], dtype=float)
    keep = [j for j in range(x.shape[1]) if np.nanmax(x[:, j]) > np.nanmin(x[:, j])]
    if len(keep) < 2 or x.shape[0] < 3:
        return []
    rho = np.atleast_2d(spearmanr(x[:, keep], nan_policy="omit").statistic)
    dist = 1 - np.abs(rho)
    condensed = dist[np.triu_indices(len(keep), 1)]
    labels = fcluster(linkage(np.clip(condensed, 0, None), "complete"), t=1 - threshold, criterion="distance")
    groups = [[trait_set.ids[keep[j]] for j in np.flatnonzero(labels == g)] for g in np.unique(labels)]
    return sorted((g for g in groups if len(g) > 1), key=lambda g: g[0])


def select(rows: Sequence[TraitStat], groups: Sequence[list[str]], judges: Sequence[str]) -> list[str]:
    """Traits significant for a majority of judges, the strongest (mean |AUC - 0.5|) of each redundant group."""
    need = len(judges) // 2 + 1
    sig: dict[str, int] = {}
    strength: dict[str, list[float]] = {}
    for r in rows:
        sig[r.trait_id] = sig.get(r.trait_id, 0) + r.significant
        strength.setdefault(r.trait_id, []).append(abs(r.auc - 0.5))
    passing = {t for t, n in sig.items() if n >= need}
    chosen = set(passing)
    for g in groups:
        members = [t for t in g if t in passing]
        if len(members) > 1:
            best = max(members, key=lambda t: np.mean(strength[t]))
            chosen -= set(members) - {best}
    return [t for t in dict.fromkeys(r.trait_id for r in rows) if t in chosen]


def validate(ratings: Sequence[TraitRatings], dialogues: Sequence[Dialogue], trait_set: TraitSet, *,
             contrast: Contrast | None = None, alpha: float = 0.05, redundancy: float = 0.7,
             store: Store | None = None, config: dict[str, Any] | None = None) -> ValidationReport:
    """The full validation of ``trait_set`` from ratings of labelled dialogues (see the module docstring).

    ``contrast`` says which label is the positive side (default: :meth:`Contrast.resolve` on the labels).
    With ``store`` the report is recorded as a ``validate`` run (``config`` its configuration).
    """
    contrast = Contrast.resolve(contrast, dialogues)
    positive = sides_of(dialogues, contrast)
    known = set(trait_set.ids)
    ratings = [r for r in ratings if known & set(r.ratings)]
    if not ratings:
        raise ValueError(f"no rating covers any trait of {trait_set.name!r} ({trait_set.hash})")
    rows = trait_stats(ratings, positive, trait_set, alpha)
    judges = sorted({r.judge for r in rows})
    groups = redundant_groups([r for r in ratings if r.dialogue_id in positive], trait_set, redundancy)
    report = ValidationReport(trait_set=trait_set.name, trait_set_hash=trait_set.hash, contrast=contrast,
                              judges=judges, alpha=alpha, rows=rows, agreement=agreement(ratings, trait_set),
                              redundant_groups=groups, selected=select(rows, groups, judges))
    if store is not None:
        run_id = store.start_run("validate", trait_set.name, config or {"trait_set_hash": trait_set.hash})
        store.put_artifact(run_id, "validation", report.model_dump(mode="json"))
        store.finish_run(run_id, "done", {"selected": report.selected, "judges": report.judges})
        report = report.model_copy(update={"run_id": run_id})
    return report


def write_table(report: ValidationReport, path: str | Path) -> Path:
    """The per (trait, judge) table as CSV (``.csv``, with agreement and selection columns) or the whole
    report as JSON (any other suffix)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path
    group_of = {t: "+".join(g) for g in report.redundant_groups for t in g}
    fields = [*TraitStat.model_fields, "krippendorff_alpha", "redundant_with", "selected"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in report.rows:
            w.writerow({**r.model_dump(), "krippendorff_alpha": report.agreement.get(r.trait_id),
                        "redundant_with": group_of.get(r.trait_id, ""), "selected": r.trait_id in report.selected})
    return path
