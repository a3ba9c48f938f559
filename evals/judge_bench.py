"""How far a judge can be trusted: agreement with other judges, agreement with itself, and the inverse
contrast test (shown both sides of one context, which is the positive one? HAL's Inverse Turing test).

- :func:`agreement_table`: per trait, Krippendorff's alpha and mean pairwise Spearman across judges (the
  ratings of several judges of the same dialogues), and alpha per judge pair.
- :func:`retest_agreement`: the same judge rating the same dialogues several times (ratings with different call
  ids in the store; :func:`repeat_ratings` makes them with one seed per repeat): alpha across repeats per trait.
- :func:`inverse_turing`: each pair asked in both orders (through discovery's ``propose``, whose records
  carry the verdict and confidence); accuracy with a bootstrap CI over games, position-swap consistency,
  position bias, and the ECE of the judge's stated confidence. :func:`verdicts_from_proposals` reads the same
  from stored proposals (some keep only whether the verdict was right).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from traitlab import stats
from traitlab.types import Dialogue, DialoguePair, TraitRatings, TraitSet


# agreement across judges --------------------------------------------------------------------------------
class TraitAgreement(BaseModel):
    trait_id: str
    alpha_ordinal: float
    alpha_interval: float
    spearman: float = Field(description="mean over judge pairs")
    n_units: int
    judge_means: dict[str, float]


class PairAgreement(BaseModel):
    judge_a: str
    judge_b: str
    alpha_ordinal: float = Field(description="per trait, averaged over traits")
    exact: float = Field(description="share of identical ratings over every (dialogue, trait)")


class AgreementTable(BaseModel):
    judges: list[str]
    traits: list[TraitAgreement]
    pairs: list[PairAgreement]

    @property
    def mean_alpha(self) -> float:
        return float(np.nanmean([t.alpha_ordinal for t in self.traits]))


def _matrix(ratings: Sequence[TraitRatings], raters: list[str], key: str, trait_id: str,
            units: list[str]) -> np.ndarray:
    """(raters, units) matrix of one trait; a rater's repeated ratings of a unit are averaged; nan = missing."""
    acc: dict[tuple[str, str], list[float]] = {}
    for r in ratings:
        if trait_id in r.ratings:
            acc.setdefault((getattr(r, key), r.dialogue_id), []).append(r.ratings[trait_id])
    col = {u: i for i, u in enumerate(units)}
    row = {j: i for i, j in enumerate(raters)}
    x = np.full((len(raters), len(units)), np.nan)
    for (j, u), vs in acc.items():
        if j in row:
            x[row[j], col[u]] = float(np.mean(vs))
    return x


def _pairable(x: np.ndarray) -> int:
    """Units (columns) with at least two ratings: the ones that carry information for alpha."""
    return int(((~np.isnan(x)).sum(0) >= 2).sum())


def agreement_table(ratings: Sequence[TraitRatings], trait_ids: Sequence[str] | None = None) -> AgreementTable:
    """Inter-judge agreement per trait (by id) and per judge pair; needs at least two judges."""
    judges = sorted({r.judge for r in ratings})
    if len(judges) < 2:
        raise ValueError(f"agreement needs ratings from at least two judges, got {judges}")
    ids = list(trait_ids) if trait_ids is not None else sorted({t for r in ratings for t in r.ratings})
    units = sorted({r.dialogue_id for r in ratings})
    mats = {t: _matrix(ratings, judges, "judge", t, units) for t in ids}
    rows = [TraitAgreement(trait_id=t, alpha_ordinal=stats.krippendorff_alpha(x, "ordinal"),
                           alpha_interval=stats.krippendorff_alpha(x, "interval"),
                           spearman=stats.mean_pairwise_spearman(x), n_units=_pairable(x),
                           judge_means={j: float(np.nanmean(x[i])) for i, j in enumerate(judges)})
            for t, x in mats.items()]
    pairs = []
    for i, k in combinations(range(len(judges)), 2):
        x = np.concatenate([mats[t][[i, k]] for t in ids], axis=1)
        both = ~np.isnan(x).any(0)
        pairs.append(PairAgreement(
            judge_a=judges[i], judge_b=judges[k],
            alpha_ordinal=float(np.nanmean([stats.krippendorff_alpha(mats[t][[i, k]], "ordinal") for t in ids])),
            exact=float((x[0, both] == x[1, both]).mean()) if both.any() else float("nan")))
    return AgreementTable(judges=judges, traits=rows, pairs=pairs)


# agreement of a judge with itself -----------------------------------------------------------------------
class RetestRow(BaseModel):
    judge: str
    trait_id: str
    alpha_ordinal: float
    repeats: int
    n_units: int


def retest_agreement(ratings: Sequence[TraitRatings]) -> list[RetestRow]:
    """Per judge and trait, alpha across repeated ratings of the same dialogues (repeat k = the k-th rating
    of a dialogue by that judge, in call order); judges without repeats are left out."""
    out = []
    for judge in sorted({r.judge for r in ratings}):
        by_unit: dict[str, list[TraitRatings]] = {}
        for r in ratings:
            if r.judge == judge:
                by_unit.setdefault(r.dialogue_id, []).append(r)
        repeats = max(len(v) for v in by_unit.values())
        if repeats < 2:
            continue
        units = sorted(by_unit)
        for t in sorted({t for rs in by_unit.values() for r in rs for t in r.ratings}):
            x = np.full((repeats, len(units)), np.nan)
            for u, unit in enumerate(units):
                for k, r in enumerate(by_unit[unit]):
                    x[k, u] = r.ratings.get(t, np.nan)
            out.append(RetestRow(judge=judge, trait_id=t, alpha_ordinal=stats.krippendorff_alpha(x, "ordinal"),
                                 repeats=repeats, n_units=_pairable(x)))
    return out


def repeat_ratings(store: Any, dialogues: Sequence[Dialogue], trait_set: TraitSet, model: str, *, repeats: int,
                   run_id: str, temperature: float = 0.7, mode: str = "all", **params: Any) -> list[TraitRatings]:
    """Rate ``dialogues`` ``repeats`` times with ``model`` (seed k on repeat k, so each is a new request
    rather than a cache hit) into run ``run_id``; returns every rating, for :func:`retest_agreement`.
    ``params`` go to the JudgeClient."""
    from traitlab.judges.client import JudgeClient
    from traitlab.judges.rate import rate_dialogues

    out: list[TraitRatings] = []
    for k in range(repeats):
        client = JudgeClient(model, store=store, run_id=run_id, temperature=temperature, seed=k, **params)
        out += rate_dialogues(dialogues, trait_set, client, mode=mode, progress=f"repeat {k + 1}/{repeats}")
    return out


# the Inverse Turing test --------------------------------------------------------------------------------
class VerdictRecord(BaseModel):
    """One "which side is the positive one?" answer; ``order`` is how the pair was shown
    (positive_first/negative_first)."""

    pair_id: str
    order: str | None = None
    said: Literal["A", "B"] | None = None
    correct: bool | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    error: str | None = None


class InverseTuringResult(BaseModel):
    model: str
    n_pairs: int
    n_failed: int
    accuracy: float
    accuracy_ci: tuple[float, float] = Field(description="95% bootstrap over games")
    swap_consistency: float | None = Field(description="pairs shown both ways that name the same transcript")
    said_a: float | None = Field(description="share of verdicts naming position A (0.5 = no position bias)")
    ece: float | None = Field(description="of the stated confidence as P(correct)")
    mean_confidence: float | None
    verdicts: list[VerdictRecord]


def verdicts_from_proposals(records: Sequence[BaseModel | dict[str, Any]]) -> list[VerdictRecord]:
    """Verdicts out of discovery proposals (``ProposalRecord``s, or HAL's ``proposals.jsonl`` records, which
    keep only ``verdict_correct``): the proposing judge already answered which side was human."""
    out = []
    for rec in records:
        r = rec.model_dump() if isinstance(rec, BaseModel) else rec
        conf = r.get("confidence")
        out.append(VerdictRecord(pair_id=str(r.get("group", r.get("game_id"))), order=r.get("order"),
                                 said=r.get("picked"),
                                 correct=r.get("verdict_correct"), confidence=None if conf is None else conf / 100,
                                 error=r.get("error")))
    return out


def inverse_turing(pairs: Sequence[DialoguePair], client: Any, contrast: Any = None) -> InverseTuringResult:
    """Ask ``client`` (a JudgeClient) which transcript of each pair is the human's, in both orders, through
    discovery's proposal prompt (one protocol, one prompt: the verdicts are what ``propose`` records)."""
    from traitlab.contrast import Contrast
    from traitlab.discovery.propose import propose

    contrast = Contrast.resolve(contrast, [d for p in pairs for d in (p.a, p.b)])
    records = propose(pairs, client, contrast, both_orders=True, progress="inverse Turing")
    return summarise_verdicts(client.model, verdicts_from_proposals(records))


def summarise_verdicts(model: str, verdicts: Sequence[VerdictRecord]) -> InverseTuringResult:
    """Accuracy (bootstrap CI over games), swap consistency, position bias and confidence ECE, each from
    the verdicts that carry what it needs."""
    from traitlab.judges.aggregate import expected_calibration_error

    ok = [v for v in verdicts if v.correct is not None]
    if not ok:
        raise ValueError(f"none of the {len(verdicts)} verdicts of {model} has an outcome; see the store's calls")
    per_pair: dict[str, list[VerdictRecord]] = {}
    for v in ok:
        per_pair.setdefault(v.pair_id, []).append(v)
    pair_acc = np.array([np.mean([bool(v.correct) for v in vs]) for vs in per_pair.values()])
    ci = stats.bootstrap_ci(pair_acc, np.mean) if pair_acc.size > 1 else (float(pair_acc[0]),) * 2
    by_order = [{v.order: v.correct for v in vs} for vs in per_pair.values()]
    both = [o for o in by_order if {"positive_first", "negative_first"} <= set(o)]
    # the human moves between A and B across the two orders, so naming the same transcript = same correctness
    consistent = [o["positive_first"] == o["negative_first"] for o in both]
    said = [v.said for v in ok if v.said is not None]
    conf = [v.confidence for v in ok if v.confidence is not None]
    calibrated = len(conf) == len(ok)
    correct = np.array([bool(v.correct) for v in ok], dtype=float)
    return InverseTuringResult(
        model=model, n_pairs=len(per_pair), n_failed=len(verdicts) - len(ok), accuracy=float(correct.mean()),
        accuracy_ci=ci, swap_consistency=float(np.mean(consistent)) if consistent else None,
        said_a=float(np.mean([s == "A" for s in said])) if said else None,
        ece=expected_calibration_error(np.array(conf), correct) if calibrated else None,
        mean_confidence=float(np.mean(conf)) if conf else None, verdicts=list(verdicts))
