"""The calibrated aggregator: trait ratings -> one interpretable score of the contrast's positive side.

HAL turns a judge's trait ratings into P(human) with an L1 logistic regression. traitlab does the same for
any :class:`~traitlab.contrast.Contrast` (P(positive)), but the model is keyed by trait id and knows its
trait-set hash, so it cannot be applied to the wrong statements (HAL's released weights were applied by
position to a differently ordered list). Fits are cross-validated grouped by the contrast's group (a game,
a ticket): both dialogues of one context share a partner and a topic, so splitting them across folds would
leak, and pairwise accuracy (does the positive dialogue of a group score higher?) needs both scored by the
same model.

The fitting core works on plain arrays (:func:`fit_arrays`: ``X`` with columns = trait ids, labels, groups)
so the distilled reward can fit on predicted trait vectors; :func:`fit_aggregator` is the front door for
ratings and dialogues.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss
from sklearn.model_selection import GroupKFold

from traitlab.contrast import Contrast
from traitlab.data import DataError
from traitlab.stats import auc
from traitlab.types import Dialogue, TraitRatings, TraitSet

if TYPE_CHECKING:
    from traitlab.store import Store

Penalty = Literal["l1", "l2", "elasticnet"]
CalibrationMethod = Literal["none", "platt", "isotonic"]


class TraitMismatchError(ValueError):
    """Ratings that do not fit an aggregator: missing trait ids, or another trait set."""


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# calibration --------------------------------------------------------------------------------------------
class Calibration(BaseModel):
    """Maps a logit to P(human): ``none`` = sigmoid, ``platt`` = sigmoid(a*z + b), ``isotonic`` = step
    function through (x, y), clipped at the ends."""

    method: CalibrationMethod = "none"
    a: float = 1.0
    b: float = 0.0
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _isotonic_points(self) -> Calibration:
        if self.method == "isotonic":
            if not self.x or len(self.x) != len(self.y):
                raise ValueError("isotonic calibration needs x and y of equal, non-zero length")
            if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
                raise ValueError("isotonic calibration x must be non-decreasing")
        return self

    def apply(self, z: np.ndarray | float) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        if self.method == "platt":
            return _sigmoid(self.a * z + self.b)
        if self.method == "isotonic":
            return np.interp(z, self.x, self.y)
        return _sigmoid(z)


def fit_calibration(z: np.ndarray, y: np.ndarray, method: CalibrationMethod) -> Calibration:
    """Fit a calibration of logits ``z`` to labels ``y`` (use out-of-fold logits, never in-sample ones)."""
    z, y = np.asarray(z, dtype=float), np.asarray(y, dtype=int)
    if method == "platt":
        lr = LogisticRegression(C=np.inf, solver="lbfgs").fit(z.reshape(-1, 1), y)
        return Calibration(method="platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, y)
        return Calibration(method="isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
    return Calibration()


# the aggregator ----------------------------------------------------------------------------------------
class Aggregator(BaseModel):
    """A linear score over trait ratings, keyed by trait id: ``logit = bias + sum_t w_t * (r_t - mean_t) /
    scale_t`` (no standardisation when ``feature_mean`` is empty), then ``calibration`` gives P(human).

    ``weights`` keeps every trait the fit saw, zeros included (so a record shows what L1 dropped); only the
    non-zero ones (:attr:`trait_ids`) must be rated.
    """

    name: str = "aggregator"
    trait_set_hash: str | None = None
    weights: dict[str, float] = Field(min_length=1)
    bias: float = 0.0
    feature_mean: dict[str, float] = Field(default_factory=dict)
    feature_scale: dict[str, float] = Field(default_factory=dict)
    calibration: Calibration = Field(default_factory=Calibration)
    meta: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _standardisation_keyed_like_weights(self) -> Aggregator:
        if self.feature_mean or self.feature_scale:
            for field in ("feature_mean", "feature_scale"):
                keys = set(getattr(self, field))
                if keys != set(self.weights):
                    raise ValueError(f"{field} must have the weights' trait ids; differs on "
                                     f"{sorted(keys ^ set(self.weights))}")
            bad = sorted(t for t, s in self.feature_scale.items() if not s > 0)
            if bad:
                raise ValueError(f"feature_scale must be > 0; not for {bad}")
        return self

    @property
    def trait_ids(self) -> list[str]:
        """The traits a rating must have: those with a non-zero weight."""
        return [t for t, w in self.weights.items() if w != 0.0]

    def raw_weights(self) -> tuple[dict[str, float], float]:
        """Weights and bias per unit of the raw rating (HAL's scale), undoing the standardisation."""
        if not self.feature_scale:
            return dict(self.weights), self.bias
        w = {t: v / self.feature_scale[t] for t, v in self.weights.items()}
        return w, self.bias - sum(w[t] * self.feature_mean[t] for t in w)

    def _values(self, ratings: TraitRatings | Mapping[str, float]) -> dict[str, float]:
        if isinstance(ratings, TraitRatings):
            if ratings.trait_set_hash and self.trait_set_hash and ratings.trait_set_hash != self.trait_set_hash:
                raise TraitMismatchError(
                    f"ratings of {ratings.dialogue_id!r} were made on trait set {ratings.trait_set_hash}, "
                    f"aggregator {self.name!r} was fitted on {self.trait_set_hash}")
            values, who = ratings.ratings, f"ratings of {ratings.dialogue_id!r}"
        elif isinstance(ratings, Mapping):
            values, who = ratings, "ratings"
        else:
            raise TypeError(f"aggregator {self.name!r} takes ratings keyed by trait id (TraitRatings or a "
                            f"dict), not a positional {type(ratings).__name__}")
        missing = [t for t in self.trait_ids if t not in values]
        if missing:
            raise TraitMismatchError(f"{who} lack trait ids {missing} needed by aggregator {self.name!r}")
        return {t: float(values[t]) for t in self.trait_ids}

    def logit(self, ratings: TraitRatings | Mapping[str, float]) -> float:
        """The score (higher = more human-like) of one dialogue's ratings, looked up by trait id."""
        v = self._values(ratings)
        mean, scale = self.feature_mean, self.feature_scale
        if mean:
            return self.bias + sum(self.weights[t] * (v[t] - mean[t]) / scale[t] for t in v)
        return self.bias + sum(self.weights[t] * v[t] for t in v)

    def p_human(self, ratings: TraitRatings | Mapping[str, float]) -> float:
        """Calibrated probability that the rated speaker is the human."""
        return float(self.calibration.apply(self.logit(ratings)))

    def logit_matrix(self, X: np.ndarray, trait_ids: Sequence[str]) -> np.ndarray:
        """Scores of many rows at once; ``trait_ids`` names the columns of ``X`` (matched by id)."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(trait_ids):
            raise ValueError(f"X has shape {X.shape}, expected (n, {len(trait_ids)}) for the given trait_ids")
        col = {t: i for i, t in enumerate(trait_ids)}
        missing = [t for t in self.trait_ids if t not in col]
        if missing:
            raise TraitMismatchError(f"columns lack trait ids {missing} needed by aggregator {self.name!r}")
        ids = self.trait_ids
        sub = X[:, [col[t] for t in ids]]
        if self.feature_mean:
            sub = (sub - np.array([self.feature_mean[t] for t in ids])) / np.array(
                [self.feature_scale[t] for t in ids])
        return self.bias + sub @ np.array([self.weights[t] for t in ids])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Aggregator:
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise DataError(path, None, None, f"cannot read: {e.strerror or e}") from e
        except ValidationError as e:
            err = e.errors()[0]
            raise DataError(path, None, ".".join(map(str, err["loc"])) or None, err["msg"]) from None


# metrics ------------------------------------------------------------------------------------------------
class ReliabilityBin(BaseModel):
    """One bin of a reliability diagram: predictions in [lo, hi)."""

    lo: float
    hi: float
    mean_predicted: float
    observed_rate: float
    count: int


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1] (empty bins left out); p = 1 falls in the last bin."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    if bins < 1 or len(p) != len(y) or not len(p):
        raise ValueError(f"need bins >= 1 and equal, non-empty p and y (got {bins}, {len(p)}, {len(y)})")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return [ReliabilityBin(lo=b / bins, hi=(b + 1) / bins, mean_predicted=float(p[idx == b].mean()),
                           observed_rate=float(y[idx == b].mean()), count=int((idx == b).sum()))
            for b in range(bins) if (idx == b).any()]


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |mean predicted - observed rate| over equal-width bins."""
    rb = reliability_bins(p, y, bins)
    n = sum(b.count for b in rb)
    return float(sum(b.count * abs(b.mean_predicted - b.observed_rate) for b in rb) / n)


def pairwise_accuracy_groups(scores: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> tuple[float, int]:
    """(fraction of games whose human row scores strictly higher than its AI row, number of such games).

    Only groups with exactly one human (y=1) and one AI (y=0) row count; a tie is a failure.
    """
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        rows.setdefault(str(g), []).append(i)
    wins = n = 0
    for idx in rows.values():
        if len(idx) == 2 and {int(y[i]) for i in idx} == {0, 1}:
            h, a = (idx[0], idx[1]) if y[idx[0]] == 1 else (idx[1], idx[0])
            wins += bool(scores[h] > scores[a])
            n += 1
    if not n:
        raise ValueError("no group has exactly one positive (y=1) and one negative (y=0) dialogue")
    return wins / n, n


def pairwise_accuracy(scores: Mapping[str, float], dialogues: Sequence[Dialogue],
                      contrast: Contrast | None = None) -> float:
    """Fraction of groups (positive + negative dialogue, both scored) whose positive one scores strictly
    higher. ``contrast`` defaults to the preset one matching the labels (:meth:`Contrast.resolve`)."""
    scored = [d for d in dialogues if d.id in scores and d.label is not None]
    contrast = Contrast.resolve(contrast, scored)
    s = np.array([scores[d.id] for d in scored], dtype=float)
    y = np.array([contrast.y(d) for d in scored], dtype=int)
    return pairwise_accuracy_groups(s, y, [contrast.group_of(d) for d in scored])[0]


# fitting ------------------------------------------------------------------------------------------------
class CVMetrics(BaseModel):
    """Out-of-fold figures: each row scored by a model that never saw its game."""

    accuracy: float
    auc: float
    pairwise_accuracy: float | None = Field(description="None when no group is a human/AI pair")
    n_pairs: int
    ece: float = Field(description="of calibrated P(human), calibrator cross-fitted on the other folds")
    ece_uncalibrated: float = Field(description="of sigmoid(logit)")
    log_loss: float
    brier: float


class TraitStat(BaseModel):
    """One trait's weight in the final fit; the CI and selection frequency come from a game bootstrap."""

    weight: float = Field(description="per unit of the rating (HAL's scale)")
    weight_std: float = Field(description="per standard deviation of the rating (comparable across traits)")
    ci_low: float | None = None
    ci_high: float | None = None
    selection_freq: float | None = Field(None, description="share of bootstrap fits with a non-zero weight")


class FitReport(BaseModel):
    """What a fit did and how well it does, out of fold."""

    name: str
    penalty: Penalty
    C: float
    l1_ratio: float
    standardize: bool
    calibration: CalibrationMethod
    folds: int
    seed: int
    n_bootstrap: int
    n_rows: int
    n_games: int
    cv: CVMetrics
    reliability: list[ReliabilityBin]
    traits: dict[str, TraitStat]
    threshold: float
    selected_threshold: list[str] = Field(description="traits with |weight| > threshold (HAL's rule)")
    min_freq: float
    selected_stable: list[str] = Field(description="traits selected in >= min_freq of bootstrap fits")
    ids: list[str]
    groups: list[str]
    fold: list[int]
    oof_logit: list[float]
    oof_p_human: list[float]


def grouped_folds(groups: Sequence[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index per row; all rows of a group land in one fold (shuffled by ``seed``)."""
    groups = np.asarray([str(g) for g in groups])
    n_groups = len(set(groups.tolist()))
    if folds < 2 or n_groups < folds:
        raise ValueError(f"need folds >= 2 and at least as many games ({n_groups}) as folds ({folds})")
    fold = np.empty(len(groups), dtype=int)
    for k, (_, test) in enumerate(GroupKFold(folds, shuffle=True, random_state=seed).split(groups, groups=groups)):
        fold[test] = k
    return fold


def _l1_ratio(penalty: Penalty, l1_ratio: float) -> float:
    return {"l1": 1.0, "l2": 0.0}.get(penalty, l1_ratio)


def _fit_lr(Z: np.ndarray, y: np.ndarray, *, penalty: Penalty, C: float, l1_ratio: float,
            seed: int) -> tuple[np.ndarray, float]:
    """One penalised logistic fit (saga: the one solver for L1, L2 and elastic net, intercept unpenalised)."""
    lr = LogisticRegression(C=C, l1_ratio=_l1_ratio(penalty, l1_ratio), solver="saga", max_iter=5000,
                            tol=1e-6, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr.fit(Z, y)
    return lr.coef_[0].copy(), float(lr.intercept_[0])


def fit_linear(X: np.ndarray, y: np.ndarray, trait_ids: Sequence[str], *, penalty: Penalty = "l1",
               C: float = 1.0, l1_ratio: float = 0.5, standardize: bool = True, seed: int = 0,
               name: str = "aggregator", trait_set_hash: str | None = None) -> Aggregator:
    """One uncalibrated penalised logistic fit on all rows of ``X`` (columns = ``trait_ids``)."""
    X, y = _check_arrays(X, y, trait_ids)
    mean, scale = _standardisation(X, standardize)
    w, b = _fit_lr((X - mean) / scale, y, penalty=penalty, C=C, l1_ratio=l1_ratio, seed=seed)
    ids = list(trait_ids)
    return Aggregator(name=name, trait_set_hash=trait_set_hash, weights=dict(zip(ids, w.tolist(), strict=True)),
                      bias=b, feature_mean=dict(zip(ids, mean.tolist(), strict=True)) if standardize else {},
                      feature_scale=dict(zip(ids, scale.tolist(), strict=True)) if standardize else {})


def _check_arrays(X: np.ndarray, y: np.ndarray, trait_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=float), np.asarray(y).astype(int)
    if X.ndim != 2 or X.shape[1] != len(trait_ids) or len(y) != len(X):
        raise ValueError(f"X {X.shape} must be (n, {len(trait_ids)}) for the trait_ids and y must have n labels")
    if len(set(trait_ids)) != len(trait_ids):
        raise ValueError("trait_ids must be unique")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("y needs both labels, 1 = the positive side and 0 = the negative")
    if not np.isfinite(X).all():
        raise ValueError("X has NaN or infinite values")
    return X, y


def _standardisation(X: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    if not standardize:
        return np.zeros(X.shape[1]), np.ones(X.shape[1])
    scale = X.std(axis=0)
    return X.mean(axis=0), np.where(scale > 0, scale, 1.0)


def fit_arrays(X: np.ndarray, y: np.ndarray, groups: Sequence[str], trait_ids: Sequence[str], *,
               ids: Sequence[str] | None = None, name: str = "aggregator", trait_set_hash: str | None = None,
               penalty: Penalty = "l1", C: float = 1.0, l1_ratio: float = 0.5, standardize: bool = True,
               folds: int = 5, seed: int = 0, calibration: CalibrationMethod = "platt", n_bootstrap: int = 200,
               threshold: float = 0.2, min_freq: float = 0.8, bins: int = 10) -> tuple[Aggregator, FitReport]:
    """Grouped cross-validation, a final fit on all rows, its calibration (fitted on out-of-fold logits) and
    a group bootstrap of the weights. ``y``: 1 = the contrast's positive side; ``groups``: group id per row."""
    X, y = _check_arrays(X, y, trait_ids)
    groups = [str(g) for g in groups]
    if len(groups) != len(X):
        raise ValueError(f"{len(groups)} groups for {len(X)} rows")
    kw = {"penalty": penalty, "C": C, "l1_ratio": l1_ratio, "standardize": standardize, "seed": seed}

    fold = grouped_folds(groups, folds, seed)
    oof = np.empty(len(y))
    for k in range(folds):
        test = fold == k
        oof[test] = fit_linear(X[~test], y[~test], trait_ids, **kw).logit_matrix(X[test], trait_ids)
    p_cal = np.empty(len(y))  # each fold calibrated by a calibrator that never saw it
    for k in range(folds):
        test = fold == k
        p_cal[test] = fit_calibration(oof[~test], y[~test], calibration).apply(oof[test])
    try:
        pw, n_pairs = pairwise_accuracy_groups(oof, y, groups)
    except ValueError:  # data without human/AI pairs (e.g. single dialogues): the pointwise figures still hold
        pw, n_pairs = None, 0
    cv = CVMetrics(accuracy=float(((p_cal >= 0.5) == y).mean()), auc=auc(oof[y == 1], oof[y == 0]),
                   pairwise_accuracy=pw, n_pairs=n_pairs, ece=expected_calibration_error(p_cal, y, bins),
                   ece_uncalibrated=expected_calibration_error(_sigmoid(oof), y, bins),
                   log_loss=float(log_loss(y, np.clip(p_cal, 1e-6, 1 - 1e-6), labels=[0, 1])),
                   brier=float(brier_score_loss(y, p_cal)))

    agg = fit_linear(X, y, trait_ids, name=name, trait_set_hash=trait_set_hash, **kw)
    agg.calibration = fit_calibration(oof, y, calibration)
    agg.meta = {k: v for k, v in kw.items() if k != "seed"} | {"calibration": calibration, "n_rows": len(y)}
    traits = _bootstrap_traits(X, y, groups, agg, n_bootstrap=n_bootstrap, **kw)
    report = FitReport(
        name=name, penalty=penalty, C=C, l1_ratio=_l1_ratio(penalty, l1_ratio), standardize=standardize,
        calibration=calibration, folds=folds, seed=seed, n_bootstrap=n_bootstrap, n_rows=len(y),
        n_games=len(set(groups)), cv=cv, reliability=reliability_bins(p_cal, y, bins), traits=traits,
        threshold=threshold, selected_threshold=[t for t, s in traits.items() if abs(s.weight) > threshold],
        min_freq=min_freq,
        selected_stable=[t for t, s in traits.items() if (s.selection_freq or 0.0) >= min_freq],
        ids=list(ids) if ids is not None else [str(i) for i in range(len(y))], groups=groups,
        fold=fold.tolist(), oof_logit=oof.tolist(), oof_p_human=p_cal.tolist())
    return agg, report


def _bootstrap_traits(X: np.ndarray, y: np.ndarray, groups: list[str], agg: Aggregator, *, n_bootstrap: int,
                      penalty: Penalty, C: float, l1_ratio: float, standardize: bool,
                      seed: int) -> dict[str, TraitStat]:
    """Refit on games drawn with replacement (standardisation held at the full-data values, so the weights
    stay comparable) -> 95% percentile CIs per rating point and selection frequencies."""
    ids = list(agg.weights)
    scale = np.array([agg.feature_scale[t] for t in ids]) if standardize else np.ones(len(ids))
    mean = np.array([agg.feature_mean[t] for t in ids]) if standardize else np.zeros(len(ids))
    Z = (X - mean) / scale
    raw, _ = agg.raw_weights()
    stats = {t: TraitStat(weight=raw[t], weight_std=raw[t] * float(s)) for t, s in zip(ids, scale, strict=True)}
    if n_bootstrap <= 0:
        return stats
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        rows.setdefault(g, []).append(i)
    games = list(rows)
    rng = np.random.default_rng(seed)
    W = []
    for _ in range(n_bootstrap):
        idx = np.concatenate([rows[games[j]] for j in rng.integers(0, len(games), len(games))])
        if len(set(y[idx].tolist())) < 2:
            continue
        W.append(_fit_lr(Z[idx], y[idx], penalty=penalty, C=C, l1_ratio=l1_ratio, seed=seed)[0] / scale)
    if not W:
        return stats
    W = np.array(W)
    lo, hi = np.percentile(W, [2.5, 97.5], axis=0)
    freq = (np.abs(W) > 1e-10).mean(axis=0)
    for j, t in enumerate(ids):
        stats[t] = stats[t].model_copy(update={"ci_low": float(lo[j]), "ci_high": float(hi[j]),
                                               "selection_freq": float(freq[j])})
    return stats


def training_arrays(ratings: Sequence[TraitRatings], dialogues: Sequence[Dialogue], trait_ids: Sequence[str],
                    contrast: Contrast | None = None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(X, y, groups, ids) for the labelled dialogues that were rated; one rating per dialogue.

    ``y`` is 1 for the contrast's positive side; groups are the contrast's (see :meth:`Contrast.resolve`)."""
    by_id = {d.id: d for d in dialogues}
    seen: dict[str, str] = {}
    unknown = []
    for r in ratings:
        if r.dialogue_id in seen:
            raise ValueError(f"dialogue {r.dialogue_id!r} is rated twice (judges {seen[r.dialogue_id]!r} and "
                             f"{r.judge!r}); pick one judge or average them (average_judges)")
        seen[r.dialogue_id] = r.judge
        if r.dialogue_id not in by_id:
            unknown.append(r.dialogue_id)
    if unknown:
        raise ValueError(f"{len(unknown)} rated dialogue ids are not among the dialogues, e.g. {unknown[:5]}")
    rows = [r for r in ratings if by_id[r.dialogue_id].label is not None]
    if not rows:
        raise ValueError("no rated dialogue has a label")
    contrast = Contrast.resolve(contrast, [by_id[r.dialogue_id] for r in rows])
    X = np.array([r.vector(list(trait_ids)) for r in rows], dtype=float)
    y = np.array([contrast.y(by_id[r.dialogue_id]) for r in rows], dtype=int)
    return X, y, [contrast.group_of(by_id[r.dialogue_id]) for r in rows], [r.dialogue_id for r in rows]


def fit_aggregator(ratings: Sequence[TraitRatings], dialogues: Sequence[Dialogue],
                   trait_ids: Sequence[str] | TraitSet, *, penalty: Penalty = "l1", C: float = 1.0,
                   folds: int = 5, seed: int = 0, calibration: CalibrationMethod = "platt", l1_ratio: float = 0.5,
                   standardize: bool = True, n_bootstrap: int = 200, threshold: float = 0.2,
                   min_freq: float = 0.8, name: str | None = None, only: Sequence[str] | None = None,
                   contrast: Contrast | None = None) -> tuple[Aggregator, FitReport]:
    """Fit an aggregator on one judge's ratings of labelled dialogues (labels and groups come from the
    dialogues, read through ``contrast``). With a TraitSet, its hash is recorded and ratings made on another
    trait set are refused.

    ``only`` restricts the fit to some of the traits (e.g. a previous report's ``selected_threshold``, HAL's
    refit on its 16 traits) while keeping the trait-set hash; its CV figures are then optimistic, since the
    selection saw every game."""
    trait_set_hash = trait_ids.hash if isinstance(trait_ids, TraitSet) else None
    ids = trait_ids.ids if isinstance(trait_ids, TraitSet) else list(trait_ids)
    if only is not None:
        unknown = sorted(set(only) - set(ids))
        if unknown or not only:
            raise TraitMismatchError(f"only= must name some of the fitted trait ids; unknown: {unknown}")
        ids = [t for t in ids if t in set(only)]
    if trait_set_hash:
        other = sorted({r.trait_set_hash for r in ratings if r.trait_set_hash} - {trait_set_hash})
        if other:
            raise TraitMismatchError(f"ratings made on trait set(s) {other}, not {trait_set_hash}")
    X, y, groups, rid = training_arrays(ratings, dialogues, ids, contrast)
    judges = sorted({r.judge for r in ratings})
    return fit_arrays(X, y, groups, ids, ids=rid, name=name or "+".join(judges), trait_set_hash=trait_set_hash,
                      penalty=penalty, C=C, l1_ratio=l1_ratio, standardize=standardize, folds=folds, seed=seed,
                      calibration=calibration, n_bootstrap=n_bootstrap, threshold=threshold, min_freq=min_freq)


def average_judges(ratings: Sequence[TraitRatings], judge: str = "mean") -> list[TraitRatings]:
    """Per dialogue, the mean of every judge's rating of each trait (traits rated by all of its judges)."""
    by_dialogue: dict[str, list[TraitRatings]] = {}
    for r in ratings:
        by_dialogue.setdefault(r.dialogue_id, []).append(r)
    out = []
    for did, rs in by_dialogue.items():
        common = set.intersection(*(set(r.ratings) for r in rs))
        hashes = {r.trait_set_hash for r in rs}
        if len(hashes) > 1:
            raise TraitMismatchError(f"dialogue {did!r} was rated on different trait sets {sorted(map(str, hashes))}")
        out.append(TraitRatings(dialogue_id=did, judge=judge, trait_set_hash=hashes.pop(),
                                ratings={t: math.fsum(r.ratings[t] for r in rs) / len(rs) for t in sorted(common)}))
    return out


class FitResult(BaseModel):
    """An aggregator and its report; with ``select``, ``all_traits`` is the first fit's report."""

    aggregator: Aggregator
    report: FitReport
    all_traits: FitReport | None = None
    contrast: Contrast
    run_id: str | None = None


def fit(ratings: Sequence[TraitRatings], dialogues: Sequence[Dialogue], trait_set: TraitSet, *,
        contrast: Contrast | None = None, judge: str | None = None,
        select: Literal["none", "threshold", "stable"] = "none", store: Store | None = None,
        config: Mapping[str, object] | None = None, **kw: object) -> FitResult:
    """Fit a calibrated aggregator on ratings of labelled dialogues, cross-validated by the contrast's group.

    ``judge`` picks one judge's ratings (``"mean"``: the mean of every judge's, :func:`average_judges`);
    ``select`` refits on the traits kept by HAL's |w| rule (``threshold``) or by bootstrap stability
    (``stable``). ``kw`` goes to :func:`fit_aggregator` (penalty, C, folds, seed, calibration, ...). With
    ``store`` the result is recorded as a ``fit`` run.
    """
    contrast = Contrast.resolve(contrast, dialogues)
    if judge == "mean":
        ratings = average_judges(ratings)
    elif judge is not None:
        ratings = [r for r in ratings if r.judge == judge]
        if not ratings:
            raise ValueError(f"no ratings by judge {judge!r}")
    agg, rep = fit_aggregator(ratings, dialogues, trait_set, contrast=contrast, name=judge, **kw)
    first = None
    if select != "none":
        kept = rep.selected_threshold if select == "threshold" else rep.selected_stable
        if not kept:
            raise ValueError(f"no trait passes the --select {select} rule at C={kw.get('C', 1.0)}")
        first = rep
        agg, rep = fit_aggregator(ratings, dialogues, trait_set, contrast=contrast, name=judge, only=kept, **kw)
    agg.meta = {**agg.meta, "contrast": contrast.model_dump(mode="json")}
    result = FitResult(aggregator=agg, report=rep, all_traits=first, contrast=contrast)
    if store is not None:
        run_id = store.start_run("fit", name=rep.name, config=dict(config or {}) | {
            "trait_set_hash": trait_set.hash, "select": select, "contrast": contrast.model_dump(mode="json")})
        store.put_artifact(run_id, "aggregator", agg.model_dump(mode="json"))
        store.put_artifact(run_id, "fit_report", rep.model_dump(mode="json"))
        if first is not None:
            store.put_artifact(run_id, "fit_report_all_traits", first.model_dump(mode="json"))
        store.finish_run(run_id, summary=rep.cv.model_dump())
        result = result.model_copy(update={"run_id": run_id})
    return result
