"""Performance drift once labels arrive, and a label-free estimate before they do.

- Realised: AUC with a DeLong interval and the debiased calibration error with an interval
  whose half-width is the label noise a calibrated model shows on the same bins (parametric
  bootstrap), each against the champion's reference value. The reference AUC is itself an
  estimate on the held-out evaluation rows (a few hundred on a small model), and one error of
  it repeats in every window: the AUC interval therefore carries the reference's DeLong
  variance too (independent samples), or an optimistic reference reads as a drop every
  window. A drop counts (verdict ``act``) only when the whole interval (``confidence``, 95%)
  lies beyond the tolerated change; ``warn`` when the narrower ``warn_confidence`` (80%)
  interval does. Only ``act`` counts as a drop.
- Realised: the observed positive rate (the default rate) against the mean predicted
  probability of the same rows (calibration-in-the-large, the PD backtest), scaled by the
  ratio of the two on the reference: a trained champion is rarely calibrated in the large
  exactly (the gates allow an expected calibration error of 0.05), and one that predicted 25%
  too many defaults on its own evaluation rows would otherwise read as a drop in every
  labelled window from its first, a retraining loop. The noise is the binomial noise a
  calibrated model shows on the window's rows (sqrt(sum p(1 - p)) / n) plus that of the
  reference's ratio (a reference stored without the ratio is not judged on this metric). The
  binned calibration error spreads a level shift over its bins and tolerates 0.02 in absolute
  terms, so a model that now under-predicts defaults by a third passed it in half of the
  simulated runs; this test catches it in a window or two. It acts when the interval lies
  beyond ``positive_rate_tolerated_gap`` (relative) either way: too many defaults costs
  losses, too few declines good applicants (default: 10%).
- Estimated (CBPE, as NannyML): the AUC and accuracy the scores imply if they are
  calibrated, against the same estimate on the reference scores. It can only ``warn``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops import drift_stats as st
from mlops.drift_policy import DriftPolicy, Verdict
from mlops.errors import InputError


class ReferencePerformance(BaseModel):
    """The champion's performance on the reference, the baseline of performance drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_labelled: int = 0
    auc: float | None = None
    auc_variance: float | None = Field(
        None, description="DeLong variance of the reference AUC (None: known exactly, as before)."
    )
    calibration_error: float | None = None
    positive_rate: float | None = Field(None, description="Observed positive (default) rate.")
    mean_score: float | None = Field(None, description="Mean predicted probability of the same rows.")
    positive_rate_variance: float | None = Field(
        None,
        description="Binomial variance of the positive rate a calibrated model shows (sum p(1 - p) / n^2).",
    )
    estimated_auc: float | None = Field(None, description="Label-free (CBPE) AUC of the scores.")


PerformanceMetric = Literal["auc", "calibration_error", "positive_rate"]


class PerformanceDrift(BaseModel):
    """One realised metric of a labelled window against its reference value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: PerformanceMetric
    method: str = Field(description="How the interval was made: delong, parametric_bootstrap or binomial.")
    reference: float | None = Field(
        description="The reference value; for positive_rate the expected rate: the mean predicted "
        "probability of the same rows times the reference's observed / predicted ratio."
    )
    current: float | None
    ci_low: float | None
    ci_high: float | None
    tolerance: float = Field(
        description="Tolerated drop (AUC), rise (calibration error) or gap either way (positive rate)."
    )
    verdict: Verdict
    n_labelled: int


class EstimatedPerformance(BaseModel):
    """Label-free performance estimate of a window (confidence-based, CBPE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["cbpe"] = "cbpe"
    n_rows: int
    estimated_auc: float | None
    reference_estimated_auc: float | None
    estimated_accuracy: float | None
    decision_threshold: float
    tolerance: float
    verdict: Verdict


def float_values(series: pd.Series) -> st.FloatArray:
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def labelled_pairs(labels: pd.Series, scores: pd.Series) -> tuple[st.FloatArray, st.FloatArray]:
    """Rows with both a label and a finite score; labels must be 0/1 (or booleans)."""
    y = float_values(labels)
    s = float_values(scores)
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    if not np.isin(y, (0.0, 1.0)).all():
        raise InputError(f"labels in column {labels.name!r} must be 0/1, found {np.unique(y)[:5].tolist()}")
    return y, s


class Interval(BaseModel):
    """An estimate with its interval at the policy's confidence, and the top (AUC) or
    bottom (calibration) of the wider-odds interval at ``warn_confidence``."""

    value: float
    low: float
    high: float
    warn_bound: float


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def auc_with_interval(
    y: st.FloatArray, s: st.FloatArray, policy: DriftPolicy, reference_variance: float = 0.0
) -> Interval:
    """The window's AUC with an interval for its difference from the reference: the DeLong
    variances of both (independent samples) add."""
    auc, current_variance = st.auc_delong(y, s)
    variance = current_variance + reference_variance
    low, high = st.normal_interval(auc, variance, policy.confidence)
    warn_top = auc + _z(policy.warn_confidence) * math.sqrt(max(variance, 0.0))
    return Interval(value=auc, low=low, high=high, warn_bound=warn_top)


def calibration_with_interval(y: st.FloatArray, s: st.FloatArray, policy: DriftPolicy) -> Interval:
    counts, mean_score, rate = st.calibration_bins(y, s, policy.calibration_bins)
    value = st.debiased_calibration_error(counts, mean_score, rate)
    half, warn_half = st.calibration_noise(
        counts,
        mean_score,
        quantiles=(0.5 + policy.confidence / 2.0, 0.5 + policy.warn_confidence / 2.0),
        n_resamples=policy.bootstrap_resamples,
        seed=policy.bootstrap_seed,
    )
    return Interval(value=value, low=max(0.0, value - half), high=value + half, warn_bound=value - warn_half)


def reference_performance(
    frame: pd.DataFrame, score_column: str, label_column: str | None, calibration_bins: int = 10
) -> ReferencePerformance:
    """Baseline values on the reference: CBPE always, realised AUC and calibration if labelled."""
    scores = float_values(frame[score_column])
    estimated = st.expected_auc(scores[np.isfinite(scores)])
    if not label_column:
        return ReferencePerformance(estimated_auc=_finite_or_none(estimated))
    y, s = labelled_pairs(frame[label_column], frame[score_column])
    if y.size < 2 or y.min() == y.max():
        return ReferencePerformance(n_labelled=int(y.size), estimated_auc=_finite_or_none(estimated))
    auc, auc_variance = st.auc_delong(y, s)
    counts, mean_score, rate = st.calibration_bins(y, s, calibration_bins)  # as windows are binned
    return ReferencePerformance(
        n_labelled=int(y.size),
        auc=auc,
        auc_variance=auc_variance,
        calibration_error=st.debiased_calibration_error(counts, mean_score, rate),
        positive_rate=float(y.mean()),
        mean_score=float(s.mean()),
        positive_rate_variance=float(np.sum(s * (1.0 - s))) / y.size**2,
        estimated_auc=_finite_or_none(estimated),
    )


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _insufficient(
    metric: PerformanceMetric,
    method: str,
    reference: float | None,
    tolerance: float,
    n: int,
) -> PerformanceDrift:
    return PerformanceDrift(
        metric=metric,
        method=method,
        reference=reference,
        current=None,
        ci_low=None,
        ci_high=None,
        tolerance=tolerance,
        verdict="insufficient_data",
        n_labelled=n,
    )


def enough_labels(y: st.FloatArray, policy: DriftPolicy) -> bool:
    positives = int(y.sum())
    return (
        y.size >= policy.min_labelled_rows
        and positives >= policy.min_labelled_per_class
        and y.size - positives >= policy.min_labelled_per_class
    )


def drop_verdict(reference: float, interval: Interval, tolerance: float) -> Verdict:
    """act if the interval's top is below reference - tolerance; warn if the warn interval's is."""
    floor = reference - tolerance
    if interval.high < floor:
        return "act"
    return "warn" if interval.warn_bound < floor else "ok"


def rise_verdict(reference: float, interval: Interval, tolerance: float) -> Verdict:
    """act if the interval's bottom is above reference + tolerance; warn if the warn interval's is."""
    ceiling = reference + tolerance
    if interval.low > ceiling:
        return "act"
    return "warn" if interval.warn_bound > ceiling else "ok"


def auc_drift(
    y: st.FloatArray,
    s: st.FloatArray,
    reference: float | None,
    policy: DriftPolicy,
    reference_variance: float | None = None,
) -> PerformanceDrift:
    tol = policy.auc_tolerated_drop
    if reference is None or not enough_labels(y, policy):
        return _insufficient("auc", "delong", reference, tol, int(y.size))
    interval = auc_with_interval(y, s, policy, reference_variance or 0.0)
    return PerformanceDrift(
        metric="auc",
        method="delong, reference variance included" if reference_variance else "delong",
        reference=reference,
        current=interval.value,
        ci_low=interval.low,
        ci_high=interval.high,
        tolerance=tol,
        verdict=drop_verdict(reference, interval, tol),
        n_labelled=int(y.size),
    )


def calibration_drift(
    y: st.FloatArray, s: st.FloatArray, reference: float | None, policy: DriftPolicy
) -> PerformanceDrift:
    tol = policy.calibration_tolerated_rise
    method = "parametric_bootstrap"
    if reference is None or not enough_labels(y, policy):
        return _insufficient("calibration_error", method, reference, tol, int(y.size))
    interval = calibration_with_interval(y, s, policy)
    return PerformanceDrift(
        metric="calibration_error",
        method=method,
        reference=reference,
        current=interval.value,
        ci_low=interval.low,
        ci_high=interval.high,
        tolerance=tol,
        verdict=rise_verdict(reference, interval, tol),
        n_labelled=int(y.size),
    )


def gap_verdict(
    expected: float, observed: float, sd: float, tolerance: float, policy: DriftPolicy
) -> Verdict:
    """act if the ``confidence`` interval of the observed rate lies beyond ``expected`` +-
    ``tolerance``; warn if the ``warn_confidence`` interval does."""
    gap = abs(observed - expected) - tolerance
    if gap > _z(policy.confidence) * sd:
        return "act"
    return "warn" if gap > _z(policy.warn_confidence) * sd else "ok"


def positive_rate_drift(
    y: st.FloatArray, s: st.FloatArray, policy: DriftPolicy, reference: ReferencePerformance
) -> PerformanceDrift:
    """Observed positive rate against the mean predicted probability of the same rows, times
    the reference's observed / predicted ratio.

    A reference without that ratio (stored before this check) is not judged
    (``insufficient_data``): against the scores alone, a champion off in the large would
    read as a drop in every window. The next champion's reference has it."""
    if reference.positive_rate is None or not reference.mean_score:
        return _insufficient(
            "positive_rate",
            "binomial (the reference has no observed/predicted ratio)",
            None,
            0.0,
            int(y.size),
        )
    method = "binomial, reference observed/predicted ratio"
    mean = float(s.mean()) if s.size else 0.0
    ratio = reference.positive_rate / reference.mean_score
    ratio_variance = (reference.positive_rate_variance or 0.0) / reference.mean_score**2
    expected = mean * ratio
    tol = policy.positive_rate_tolerated_gap * expected
    if not enough_labels(y, policy):
        return _insufficient("positive_rate", method, expected if s.size else None, tol, int(y.size))
    observed = float(y.mean())
    window_variance = float(np.sum(s * (1.0 - s))) / y.size**2  # a calibrated model's binomial noise
    sd = math.sqrt(window_variance * ratio**2 + mean**2 * ratio_variance)
    half = _z(policy.confidence) * sd
    return PerformanceDrift(
        metric="positive_rate",
        method=method,
        reference=expected,
        current=observed,
        ci_low=max(0.0, observed - half),
        ci_high=min(1.0, observed + half),
        tolerance=tol,
        verdict=gap_verdict(expected, observed, sd, tol, policy),
        n_labelled=int(y.size),
    )


def performance_drift(
    labels: pd.Series,
    scores: pd.Series,
    reference: ReferencePerformance,
    policy: DriftPolicy,
) -> list[PerformanceDrift]:
    """AUC and calibration of a labelled window against the reference values, and its
    positive rate against what the scores predicted (as they did on the reference)."""
    y, s = labelled_pairs(labels, scores)
    return [
        auc_drift(y, s, reference.auc, policy, reference.auc_variance),
        calibration_drift(y, s, reference.calibration_error, policy),
        positive_rate_drift(y, s, policy, reference),
    ]


def estimated_performance(
    scores: pd.Series, reference: ReferencePerformance | None, policy: DriftPolicy
) -> EstimatedPerformance:
    """CBPE: AUC and accuracy implied by the scores, assuming they are calibrated."""
    s = float_values(scores)
    s = s[np.isfinite(s)]
    ref_auc = reference.estimated_auc if reference else None
    tol = policy.estimated_auc_tolerated_drop
    if s.size < policy.min_window_rows:
        estimated: float | None = None
        accuracy: float | None = None
        verdict: Verdict = "insufficient_data"
    else:
        estimated = _finite_or_none(st.expected_auc(s))
        accuracy = st.expected_accuracy(s, policy.decision_threshold)
        verdict = _estimate_verdict(ref_auc, estimated, tol)
    return EstimatedPerformance(
        n_rows=int(s.size),
        estimated_auc=estimated,
        reference_estimated_auc=ref_auc,
        estimated_accuracy=accuracy,
        decision_threshold=policy.decision_threshold,
        tolerance=tol,
        verdict=verdict,
    )


def _estimate_verdict(reference: float | None, estimated: float | None, tol: float) -> Verdict:
    if reference is None or estimated is None:
        return "insufficient_data"
    return "warn" if estimated < reference - tol else "ok"
