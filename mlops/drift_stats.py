"""Drift and performance statistics as small vectorised numpy functions (no pandas, no I/O).

Every function here takes arrays and returns floats; :mod:`mlops.drift_report` decides which
to run on which column and how to judge the values. All are effect sizes or estimates with
confidence intervals: none returns a p-value, because on large windows p-values flag noise.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2, rankdata

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Floor on bin proportions in PSI, so an empty bin costs a finite amount.
PSI_EPS = 1e-4


def proportions(counts: NDArray[np.int64] | FloatArray) -> FloatArray:
    """Counts to proportions; an all-zero vector stays all zero."""
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    return arr / total if total > 0 else arr


def psi(ref_counts: IntArray | FloatArray, cur_counts: IntArray | FloatArray) -> float:
    """Population stability index sum((q - p) * ln(q / p)) over the same bins.

    Bins empty on both sides add nothing; a bin empty on one side only is floored at
    :data:`PSI_EPS` (a share of 1e-4), so new or vanished regions count, finitely.
    """
    p = proportions(ref_counts)
    q = proportions(cur_counts)
    used = (p > 0) | (q > 0)
    p = np.maximum(p[used], PSI_EPS)
    q = np.maximum(q[used], PSI_EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref_counts: IntArray | FloatArray, cur_counts: IntArray | FloatArray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2), in [0, 1].

    Same value as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    """
    p = proportions(ref_counts)
    q = proportions(cur_counts)
    m = 0.5 * (p + q)
    divergence = 0.5 * (_kl_bits(p, m) + _kl_bits(q, m))
    return math.sqrt(max(divergence, 0.0))


def _kl_bits(p: FloatArray, m: FloatArray) -> float:
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / m[nz])))


def cramers_v(ref_counts: IntArray | FloatArray, cur_counts: IntArray | FloatArray) -> float:
    """Cramér's V of the reference-vs-current 2 x C table, both samples weighted equally.

    Equals ``scipy.stats.contingency.association(table, method="cramer")`` when the two
    samples have the same size. Weighting them equally makes it independent of the sample
    sizes and of their ratio (a plain table of 100k reference against 1k current rows would
    shrink V by about sqrt(1k/100k)). In [0, 1]; Cohen: 0.1 small, 0.3 medium, 0.5 large.
    V**2 = 0.5 * sum((p - q)**2 / (p + q)).
    """
    p = proportions(ref_counts)
    q = proportions(cur_counts)
    s = p + q
    nz = s > 0
    v2 = 0.5 * float(np.sum((p[nz] - q[nz]) ** 2 / s[nz]))
    return math.sqrt(min(max(v2, 0.0), 1.0))


def cohens_h(p_ref: float, p_cur: float) -> float:
    """Cohen's h effect size between two proportions: |2 asin sqrt(p1) - 2 asin sqrt(p2)|.

    Used for missing-rate change: it weighs 0.1% -> 5% more than 40% -> 45%, as a person would.
    Cohen: 0.2 small, 0.5 medium, 0.8 large.
    """
    return abs(2.0 * math.asin(math.sqrt(p_cur)) - 2.0 * math.asin(math.sqrt(p_ref)))


def _inverse_sizes(n_ref: int, n_cur: int) -> float:
    return 1.0 / max(n_ref, 1) + 1.0 / max(n_cur, 1)


def psi_noise_floor(n_bins: int, n_ref: int, n_cur: int, quantile: float) -> float:
    """Upper ``quantile`` of PSI between two samples of one distribution.

    PSI is close to the symmetric chi-square sum((q - p)^2 / p), so under no drift it is about
    chi2(bins - 1) * (1/n_ref + 1/n_cur).
    """
    if n_bins < 2:
        return 0.0
    return float(chi2.ppf(quantile, n_bins - 1)) * _inverse_sizes(n_ref, n_cur)


def cramers_v_noise_floor(n_buckets: int, n_ref: int, n_cur: int, quantile: float) -> float:
    """Upper ``quantile`` of :func:`cramers_v` under no drift: V^2 ~ chi2(C - 1) / 4 * (1/n + 1/m)."""
    if n_buckets < 2:
        return 0.0
    return math.sqrt(0.25 * float(chi2.ppf(quantile, n_buckets - 1)) * _inverse_sizes(n_ref, n_cur))


def js_noise_floor(n_buckets: int, n_ref: int, n_cur: int, quantile: float) -> float:
    """Upper ``quantile`` of :func:`js_distance` under no drift (JS divergence ~ V^2 / 2 ln 2)."""
    return cramers_v_noise_floor(n_buckets, n_ref, n_cur, quantile) / math.sqrt(2.0 * math.log(2.0))


def cohens_h_noise_floor(n_ref: int, n_cur: int, quantile: float) -> float:
    """Upper ``quantile`` of :func:`cohens_h` under no change (2 asin sqrt p has variance 1/n)."""
    z = NormalDist().inv_cdf(0.5 + quantile / 2.0)
    return z * math.sqrt(_inverse_sizes(n_ref, n_cur))


def wasserstein_noise_floor(ref_quantiles: FloatArray, n_ref: int, n_cur: int, quantile: float) -> float:
    """Upper bound on the ``quantile`` of Wasserstein-1 between two samples of the reference.

    sqrt(n_eff) * W1 tends to integral |B(u)| dQ(u) with B a Brownian bridge: mean
    sqrt(2/pi) * J with J = integral sqrt(u (1 - u)) dQ(u) (from the stored quantile
    function), and sd at most sqrt(1 - 2/pi) * J (Minkowski); the floor is mean + z * sd.
    """
    if ref_quantiles.size < 2:
        return 0.0
    u = quantile_levels(ref_quantiles.size)
    mid = 0.5 * (u[1:] + u[:-1])
    j = float(np.sum(np.sqrt(mid * (1.0 - mid)) * np.diff(ref_quantiles)))
    z = NormalDist().inv_cdf(quantile)
    spread = math.sqrt(2.0 / math.pi) + z * math.sqrt(1.0 - 2.0 / math.pi)
    return spread * j * math.sqrt(_inverse_sizes(n_ref, n_cur))


def quantile_levels(n_levels: int) -> FloatArray:
    """Mid-point probability levels (i + 0.5) / n for a quantile-function grid."""
    return (np.arange(n_levels, dtype=np.float64) + 0.5) / n_levels


def quantile_function(sorted_values: FloatArray, n_levels: int) -> FloatArray:
    """The empirical quantile function (inverted CDF) of sorted values on the mid-point grid."""
    n = sorted_values.size
    idx = np.ceil(quantile_levels(n_levels) * n).astype(np.int64) - 1
    return sorted_values[np.clip(idx, 0, n - 1)]


def wasserstein_from_quantiles(ref_quantiles: FloatArray, cur_quantiles: FloatArray) -> float:
    """Wasserstein-1 distance from two quantile functions on the same mid-point grid.

    W1 = integral over u in (0, 1) of |Q_ref(u) - Q_cur(u)| du, here a mean over the grid;
    exact for samples whose sizes divide the grid size, within a grid step otherwise.
    """
    return float(np.mean(np.abs(ref_quantiles - cur_quantiles)))


def fine_bin_counts(sorted_values: FloatArray, edges: FloatArray) -> IntArray:
    """Counts of sorted values in bins (-inf, e1), [e1, e2), ..., [ek, inf).

    Works on a sorted array, so it costs k binary searches, not a pass over the data.
    Repeated edges (ties in the reference) give empty bins, which PSI skips.
    """
    cuts = np.searchsorted(sorted_values, edges, side="left")
    bounds = np.concatenate(([0], cuts, [sorted_values.size]))
    return np.diff(bounds).astype(np.int64)


def merge_bins(counts: IntArray, n_groups: int) -> IntArray:
    """Sum consecutive fine bins into ``n_groups`` equal groups (len(counts) % n_groups == 0)."""
    return counts.reshape(n_groups, -1).sum(axis=1)


def auc_delong(labels: NDArray[np.int_] | FloatArray, scores: FloatArray) -> tuple[float, float]:
    """ROC AUC and its DeLong variance (DeLong et al. 1988; midranks as in Sun & Xu 2014).

    Ties count one half, as in ``sklearn.metrics.roc_auc_score``. Needs both classes.
    """
    y = np.asarray(labels).astype(bool)
    pos = scores[y]
    neg = scores[~y]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    ranks_all = rankdata(np.concatenate((pos, neg)))
    v10 = (ranks_all[:m] - rankdata(pos)) / n
    v01 = 1.0 - (ranks_all[m:] - rankdata(neg)) / m
    auc = float(v10.mean())
    var_pos = float(v10.var(ddof=1)) / m if m > 1 else 0.0
    var_neg = float(v01.var(ddof=1)) / n if n > 1 else 0.0
    return auc, var_pos + var_neg


def normal_interval(estimate: float, variance: float, confidence: float) -> tuple[float, float]:
    """Two-sided normal interval estimate +- z * sqrt(variance), clipped to [0, 1]."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, estimate - half), min(1.0, estimate + half)


def calibration_bins(
    labels: FloatArray, scores: FloatArray, n_bins: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Equal-mass score bins: (rows per bin, mean score per bin, positive rate per bin)."""
    order = np.argsort(scores, kind="stable")
    n = order.size
    n_bins = max(1, min(n_bins, n))
    starts = (np.arange(n_bins) * n) // n_bins
    counts = np.diff(np.concatenate((starts, [n]))).astype(np.float64)
    mean_score = np.add.reduceat(scores[order], starts) / counts
    positive_rate = np.add.reduceat(labels[order].astype(np.float64), starts) / counts
    return counts, mean_score, positive_rate


def debiased_calibration_error(
    counts: FloatArray, mean_score: FloatArray, positive_rate: FloatArray
) -> float:
    """Root of the debiased squared calibration error over bins (Kumar, Liang & Ma 2019).

    CE^2 = sum_b w_b * [(ybar_b - sbar_b)^2 - ybar_b (1 - ybar_b) / (n_b - 1)]: the plug-in
    binned ECE is biased upward by label noise (about 0.03 on 1,000 rows), the second term
    removes that bias, so a small window of a calibrated model reads close to 0.
    """
    weights = counts / counts.sum()
    noise = positive_rate * (1.0 - positive_rate) / np.maximum(counts - 1.0, 1.0)
    squared = float(np.sum(weights * ((positive_rate - mean_score) ** 2 - noise)))
    return math.sqrt(max(squared, 0.0))


def calibration_noise(
    counts: FloatArray,
    mean_score: FloatArray,
    *,
    quantiles: tuple[float, ...],
    n_resamples: int,
    seed: int,
) -> tuple[float, ...]:
    """Upper ``quantiles`` of :func:`debiased_calibration_error` for a *calibrated* model.

    Parametric bootstrap: positives of each bin drawn as Binomial(n_b, sbar_b), i.e. labels
    that follow the scores. Its upper quantile is how far label noise alone can push the
    estimate on bins of these sizes: the half-width of the interval around the estimate.
    A plain percentile bootstrap around the estimate is badly off near zero (the estimate is
    a clipped square root), which made small calibrated windows look miscalibrated.
    """
    rng = np.random.default_rng(seed)
    n_b = counts.astype(np.int64)
    rates = rng.binomial(n_b, np.clip(mean_score, 0.0, 1.0), size=(n_resamples, n_b.size)) / counts
    weights = counts / counts.sum()
    noise = rates * (1.0 - rates) / np.maximum(counts - 1.0, 1.0)
    squared = np.sum(weights * ((rates - mean_score) ** 2 - noise), axis=1)
    values = np.quantile(np.sqrt(np.maximum(squared, 0.0)), quantiles)
    return tuple(float(v) for v in values)


def expected_auc(scores: FloatArray) -> float:
    """Label-free AUC expected if the scores are calibrated (confidence-based, as CBPE).

    Each row is a positive with probability p and a negative with 1 - p, so the expected
    ROC curve runs through (cumsum(1 - p) / sum(1 - p), cumsum(p) / sum(p)) along the
    scores sorted high to low, rows with tied scores moving together (NannyML's CBPE).
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    total_pos = p.sum()
    total_neg = p.size - total_pos
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    unique, inverse = np.unique(-p, return_inverse=True)
    tp = np.bincount(inverse, weights=p, minlength=unique.size)
    fp = np.bincount(inverse, weights=1.0 - p, minlength=unique.size)
    tpr = np.concatenate(([0.0], np.cumsum(tp) / total_pos))
    fpr = np.concatenate(([0.0], np.cumsum(fp) / total_neg))
    return float(np.trapezoid(tpr, fpr))


def expected_accuracy(scores: FloatArray, threshold: float) -> float:
    """Label-free accuracy expected at a decision threshold if the scores are calibrated."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return float(np.mean(np.where(p >= threshold, p, 1.0 - p)))
