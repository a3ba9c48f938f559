"""Statistics shared by validation, aggregation and evals: AUC, effect sizes, FDR, bootstrap, agreement.

Small, dependency-light (numpy + scipy) and tested against textbook values, so every stage reports the
same numbers the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Literal

import numpy as np
from scipy import stats as _st

ArrayLike = Sequence[float] | np.ndarray


def _two(pos: ArrayLike, neg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if p.size == 0 or n.size == 0:
        raise ValueError(f"need values in both groups (got {p.size} and {n.size})")
    return p, n


def auc(pos: ArrayLike, neg: ArrayLike) -> float:
    """P(a random ``pos`` value > a random ``neg`` value), ties counting half (the Mann-Whitney AUC)."""
    p, n = _two(pos, neg)
    ranks = _st.rankdata(np.concatenate([p, n]))
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2
    return float(u / (p.size * n.size))


def cliffs_delta(pos: ArrayLike, neg: ArrayLike) -> float:
    """Cliff's delta = P(pos > neg) - P(pos < neg) = 2 AUC - 1, in [-1, 1]."""
    return 2 * auc(pos, neg) - 1


def cohens_d(pos: ArrayLike, neg: ArrayLike) -> float:
    """Standardised mean difference with the pooled standard deviation (0 when both groups are constant)."""
    p, n = _two(pos, neg)
    dof = p.size + n.size - 2
    if dof <= 0:
        raise ValueError("Cohen's d needs at least 3 values in total")
    pooled = np.sqrt(((p.size - 1) * p.var(ddof=1 if p.size > 1 else 0)
                      + (n.size - 1) * n.var(ddof=1 if n.size > 1 else 0)) / dof)
    diff = p.mean() - n.mean()
    if pooled == 0:
        return 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    return float(diff / pooled)


def mann_whitney_p(pos: ArrayLike, neg: ArrayLike) -> float:
    """Two-sided Mann-Whitney U p-value (asymptotic, tie-corrected; 1.0 when every value is equal)."""
    p, n = _two(pos, neg)
    if np.ptp(np.concatenate([p, n])) == 0:
        return 1.0
    return float(_st.mannwhitneyu(p, n, alternative="two-sided", method="asymptotic").pvalue)


def bh_fdr(pvalues: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    out = np.empty_like(q)
    out[order] = q
    return out


def mean_ci(values: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Student-t CI of a mean: honest at the small n of a quick eval run, where a percentile bootstrap of
    3 values is far too narrow (nan with fewer than 2 values)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float("nan"), float("nan")
    half = _st.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean() - half), float(v.mean() + half)


def welch(base: ArrayLike, other: ArrayLike, level: float = 0.95) -> tuple[float, float, float, float]:
    """(other - base mean difference, CI low, CI high, two-sided p) of Welch's unequal-variance t-test.

    CI and p come from one test, so a CI that excludes 0 always has p below 1 - level. With fewer than 2
    values on a side there is no variance to test against: nan CI and p 1.
    """
    a, b = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    diff = float(b.mean() - a.mean()) if a.size and b.size else float("nan")
    if a.size < 2 or b.size < 2:
        return diff, float("nan"), float("nan"), 1.0
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = np.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, 1.0 if diff == 0 else 0.0
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = _st.t.ppf((1 + level) / 2, dof) * se
    return diff, diff - float(half), diff + float(half), float(2 * _st.t.sf(abs(diff) / se, dof))


def bootstrap_ci(values: ArrayLike | tuple[ArrayLike, ...], stat: Callable[..., float], *, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat``; pass a tuple of arrays to resample each group independently."""
    groups = [np.asarray(v, dtype=float) for v in values] if isinstance(values, tuple) else [
        np.asarray(values, dtype=float)]
    rng = np.random.default_rng(seed)
    draws = np.array([stat(*(g[rng.integers(0, g.size, g.size)] for g in groups)) for _ in range(n_boot)])
    tail = (1 - level) / 2
    lo, hi = np.nanquantile(draws, [tail, 1 - tail])
    return float(lo), float(hi)


def krippendorff_alpha(data: ArrayLike, level: Literal["nominal", "ordinal", "interval"] = "ordinal") -> float:
    """Krippendorff's alpha for a ``(raters, units)`` matrix; ``nan`` marks a missing rating.

    Built from the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's alpha-reliability");
    units rated by fewer than two raters carry no information and are ignored. ``nan`` is returned when
    there is no disagreement to expect (every pairable value the same).
    """
    x = np.asarray(data, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a (raters, units) matrix, got shape {x.shape}")
    values = np.unique(x[~np.isnan(x)])
    if values.size < 2:
        return float("nan")
    counts = np.stack([(x == v).sum(0) for v in values], axis=1).astype(float)  # (units, values)
    m = counts.sum(1)
    counts, m = counts[m >= 2], m[m >= 2]
    if counts.size == 0:
        return float("nan")
    coinc = (np.einsum("uc,uk->ck", counts / (m - 1)[:, None], counts)
             - np.diag((counts / (m - 1)[:, None]).sum(0)))
    n_c = coinc.sum(1)
    n = n_c.sum()
    if level == "nominal":
        delta = 1.0 - np.eye(values.size)
    elif level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    elif level == "ordinal":
        cum = np.cumsum(n_c)
        lo, hi = np.minimum.outer(np.arange(values.size), np.arange(values.size)), np.maximum.outer(
            np.arange(values.size), np.arange(values.size))
        between = cum[hi] - cum[lo] + n_c[lo]  # sum of n_g for g from lo to hi inclusive
        delta = (between - (n_c[:, None] + n_c[None, :]) / 2) ** 2
    else:
        raise ValueError(f"unknown level {level!r}")
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected == 0:
        return float("nan")
    return float(1 - (n - 1) * (coinc * delta).sum() / expected)


def mean_pairwise_spearman(data: ArrayLike) -> float:
    """Mean Spearman correlation over rater pairs of a ``(raters, units)`` matrix (units any rater lacks dropped)."""
    x = np.asarray(data, dtype=float)
    rhos = []
    for i, j in combinations(range(x.shape[0]), 2):
        ok = ~np.isnan(x[i]) & ~np.isnan(x[j])
        if ok.sum() > 2 and np.ptp(x[i][ok]) > 0 and np.ptp(x[j][ok]) > 0:
            rhos.append(_st.spearmanr(x[i][ok], x[j][ok]).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share ``k / n`` (an audit's share of negatives pushed above the median
    positive): unlike the normal approximation it stays inside [0, 1] and is honest near 0 with small ``n``."""
    if n <= 0:
        return (0.0, 1.0)
    z = float(_st.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else float(centre - half), 1.0 if k == n else float(centre + half))  # exact at the ends


def partial_spearman(a: ArrayLike, b: ArrayLike, control: ArrayLike) -> float:
    """Spearman of ``a`` and ``b`` with ``control`` ranked out: the ranks of both regressed on its rank, the
    residuals correlated (how much a reward follows a judge beyond, say, length)."""
    c = _st.rankdata(np.asarray(control, dtype=float))

    def resid(v: ArrayLike) -> np.ndarray:
        r = _st.rankdata(np.asarray(v, dtype=float))
        return r - np.polyval(np.polyfit(c, r, 1), c)

    return float(_st.spearmanr(resid(a), resid(b)).statistic)
