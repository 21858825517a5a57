"""Compare a current window with a :class:`ReferenceProfile` and report the verdicts.

Per numeric feature: PSI on reference-quantile bins and Wasserstein-1 divided by the
reference spread; per categorical feature: Jensen-Shannon distance and Cramér's V over the
categories plus ``__other__`` and ``__missing__``; per feature: the missing-rate change as
Cohen's h. The model score gets PSI and Wasserstein too (prediction drift). Each value is
judged against the policy's effect-size thresholds; a window with fewer than
``min_window_rows`` usable rows is ``insufficient_data``, never drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops import drift_stats as st
from mlops.drift_performance import (
    EstimatedPerformance,
    PerformanceDrift,
    estimated_performance,
    performance_drift,
)
from mlops.drift_policy import DriftPolicy, Threshold, Verdict
from mlops.drift_profile import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    current_category_counts,
    require_columns,
    sorted_finite,
)

Kind = Literal["numeric", "categorical"]
Statistic = Literal["psi", "wasserstein_norm", "js_distance", "cramers_v", "missing_rate"]

_RANK: dict[Verdict, int] = {"insufficient_data": -1, "ok": 0, "warn": 1, "act": 2}


class FeatureDrift(BaseModel):
    """One statistic of one feature (or of the score) in one window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    kind: Kind
    statistic: Statistic
    value: float | None = Field(description="None when the window is too small to judge.")
    threshold: float = Field(description="Warn threshold: at or above it the feature drifts.")
    act_threshold: float
    verdict: Verdict
    n_current: int = Field(description="Current rows the statistic was computed on.")
    detail: str = ""


def worst(verdicts: list[Verdict]) -> Verdict:
    """The most severe verdict; insufficient_data only if nothing could be judged."""
    return max(verdicts, key=lambda v: _RANK[v], default="insufficient_data")


class DriftReport(BaseModel):
    """Per-feature, prediction and performance drift of one window, with every threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_id: str
    n_rows: int
    n_reference: int
    features: list[FeatureDrift]
    prediction: list[FeatureDrift] = []
    performance: list[PerformanceDrift] = []
    estimated_performance: EstimatedPerformance | None = None
    n_features: int
    n_drifting: int = Field(description="Features at warn or act.")
    n_drifting_act: int
    n_insufficient: int
    drifting_features: list[str] = Field(description="Features at warn or act, sorted.")
    act_features: list[str]
    prediction_verdict: Verdict | None = None
    performance_verdict: Verdict | None = None
    policy: DriftPolicy

    def feature_verdicts(self) -> dict[str, Verdict]:
        """Worst verdict per feature."""
        return _feature_verdicts(self.features)

    @property
    def sufficient(self) -> bool:
        """False when no feature could be judged on this window."""
        return self.n_insufficient < self.n_features

    def to_table(self) -> list[dict[str, str | float | int | None]]:
        """Rows for a Prefect table artifact: features, prediction, performance, estimate."""
        rows = [_row("feature", r) for r in self.features]
        rows += [_row("prediction", r) for r in self.prediction]
        rows += [_performance_row(p) for p in self.performance]
        if self.estimated_performance is not None:
            rows.append(_estimate_row(self.estimated_performance))
        return rows


def _feature_verdicts(rows: list[FeatureDrift]) -> dict[str, Verdict]:
    grouped: dict[str, list[Verdict]] = {}
    for row in rows:
        grouped.setdefault(row.feature, [])
        if row.verdict != "insufficient_data":
            grouped[row.feature].append(row.verdict)
    return {name: worst(verdicts) for name, verdicts in grouped.items()}


def _row(section: str, r: FeatureDrift) -> dict[str, str | float | int | None]:
    return {
        "section": section,
        "feature": r.feature,
        "kind": r.kind,
        "statistic": r.statistic,
        "value": None if r.value is None else round(r.value, 4),
        "threshold": r.threshold,
        "act_threshold": r.act_threshold,
        "verdict": r.verdict,
        "n": r.n_current,
        "detail": r.detail,
    }


def _performance_row(p: PerformanceDrift) -> dict[str, str | float | int | None]:
    ci = "" if p.ci_low is None else f"{p.method} CI [{p.ci_low:.4f}, {p.ci_high:.4f}]"
    ref = "n/a" if p.reference is None else f"{p.reference:.4f}"
    said = "expected (mean score x reference ratio)" if p.metric == "positive_rate" else "reference"
    return {
        "section": "performance",
        "feature": "",
        "kind": "performance",
        "statistic": p.metric,
        "value": None if p.current is None else round(p.current, 4),
        "threshold": p.tolerance,
        "act_threshold": p.tolerance,
        "verdict": p.verdict,
        "n": p.n_labelled,
        "detail": f"{said} {ref}; {ci}".strip("; "),
    }


def _estimate_row(e: EstimatedPerformance) -> dict[str, str | float | int | None]:
    ref = "n/a" if e.reference_estimated_auc is None else f"{e.reference_estimated_auc:.4f}"
    return {
        "section": "estimated_performance",
        "feature": "",
        "kind": "performance",
        "statistic": "estimated_auc",
        "value": None if e.estimated_auc is None else round(e.estimated_auc, 4),
        "threshold": e.tolerance,
        "act_threshold": e.tolerance,
        "verdict": e.verdict,
        "n": e.n_rows,
        "detail": f"{e.method}, label-free; reference estimate {ref}",
    }


def _judged(
    feature: str,
    kind: Kind,
    statistic: Statistic,
    value: float | None,
    threshold: Threshold,
    n: int,
    detail: str = "",
    floor: float = 0.0,
) -> FeatureDrift:
    """Judge a value; a noise floor above the warn threshold raises both levels to it."""
    if floor > threshold.warn:
        threshold = Threshold(warn=floor, act=max(threshold.act, floor))
        detail = f"{detail}; noise floor {floor:.3g} at n={n}".lstrip("; ")
    return FeatureDrift(
        feature=feature,
        kind=kind,
        statistic=statistic,
        value=value,
        threshold=threshold.warn,
        act_threshold=threshold.act,
        verdict="insufficient_data" if value is None else threshold.verdict(value),
        n_current=n,
        detail=detail,
    )


def missing_rate_row(
    feature: str,
    kind: Kind,
    reference: tuple[int, int],
    n_missing: int,
    n_rows: int,
    policy: DriftPolicy,
) -> FeatureDrift:
    """Missing-rate change as Cohen's h (rates in the detail); reference = (missing, rows)."""
    ref_missing, ref_rows = reference
    if n_rows < policy.min_window_rows or ref_rows == 0:
        return _judged(feature, kind, "missing_rate", None, policy.missing_rate, n_rows)
    ref_rate, cur_rate = ref_missing / ref_rows, n_missing / n_rows
    return _judged(
        feature,
        kind,
        "missing_rate",
        st.cohens_h(ref_rate, cur_rate),
        policy.missing_rate,
        n_rows,
        f"missing {ref_rate:.4f} -> {cur_rate:.4f}",
        st.cohens_h_noise_floor(ref_rows, n_rows, policy.noise_quantile),
    )


def numeric_shift_rows(
    feature: str, values: st.FloatArray, profile: NumericProfile, policy: DriftPolicy
) -> list[FeatureDrift]:
    """PSI and normalised Wasserstein of sorted finite current values against the profile."""
    n = int(values.size)
    if n < policy.min_window_rows or profile.n_valid < policy.min_window_rows:
        return [
            _judged(feature, "numeric", "psi", None, policy.psi, n),
            _judged(feature, "numeric", "wasserstein_norm", None, policy.wasserstein_norm, n),
        ]
    bins = policy.psi_bins_for(n)
    ref_counts = st.merge_bins(np.asarray(profile.counts, dtype=np.int64), bins)
    cur_counts = st.merge_bins(st.fine_bin_counts(values, np.asarray(profile.edges)), bins)
    ref_q = np.asarray(profile.quantiles)
    scale = profile.scale(policy.wasserstein_scale)
    w = st.wasserstein_from_quantiles(ref_q, st.quantile_function(values, ref_q.size))
    q, n_ref = policy.noise_quantile, profile.n_valid
    psi_floor = st.psi_noise_floor(int(np.count_nonzero(ref_counts)), n_ref, n, q)
    w_floor = st.wasserstein_noise_floor(ref_q, n_ref, n, q) / scale
    return [
        _judged(
            feature,
            "numeric",
            "psi",
            st.psi(ref_counts, cur_counts),
            policy.psi,
            n,
            f"{bins} reference-quantile bins",
            psi_floor,
        ),
        _judged(
            feature,
            "numeric",
            "wasserstein_norm",
            w / scale,
            policy.wasserstein_norm,
            n,
            f"W1 {w:.4g} / reference {policy.wasserstein_scale} {scale:.4g}",
            w_floor,
        ),
    ]


def numeric_rows(
    feature: str, series: pd.Series, profile: NumericProfile, policy: DriftPolicy
) -> list[FeatureDrift]:
    values, n_missing = sorted_finite(series)
    reference = (profile.n_missing, profile.n_rows)
    return [
        *numeric_shift_rows(feature, values, profile, policy),
        missing_rate_row(feature, "numeric", reference, n_missing, int(series.size), policy),
    ]


def categorical_rows(
    feature: str, series: pd.Series, profile: CategoricalProfile, policy: DriftPolicy
) -> list[FeatureDrift]:
    """JS distance and Cramér's V over categories + other + missing; missing-rate change."""
    cur = current_category_counts(series, profile)
    n = int(series.size)
    ref = profile.bucket_counts()
    reference = (profile.n_missing, profile.n_rows)
    missing = missing_rate_row(feature, "categorical", reference, int(cur[-1]), n, policy)
    if n < policy.min_window_rows or profile.n_rows < policy.min_window_rows:
        return [
            _judged(feature, "categorical", "js_distance", None, policy.js_distance, n),
            _judged(feature, "categorical", "cramers_v", None, policy.cramers_v, n),
            missing,
        ]
    other = f"{OTHER} share {ref[-2] / ref.sum():.4f} -> {cur[-2] / n:.4f}"
    buckets, q = int(np.count_nonzero(ref)), policy.noise_quantile
    return [
        _judged(
            feature,
            "categorical",
            "js_distance",
            st.js_distance(ref, cur),
            policy.js_distance,
            n,
            other,
            st.js_noise_floor(buckets, profile.n_rows, n, q),
        ),
        _judged(
            feature,
            "categorical",
            "cramers_v",
            st.cramers_v(ref, cur),
            policy.cramers_v,
            n,
            other,
            st.cramers_v_noise_floor(buckets, profile.n_rows, n, q),
        ),
        missing,
    ]


def feature_rows(
    feature: str,
    series: pd.Series,
    profile: NumericProfile | CategoricalProfile,
    policy: DriftPolicy,
) -> list[FeatureDrift]:
    if isinstance(profile, NumericProfile):
        return numeric_rows(feature, series, profile, policy)
    return categorical_rows(feature, series, profile, policy)


def prediction_rows(
    profile: ReferenceProfile, current: pd.DataFrame, policy: DriftPolicy
) -> list[FeatureDrift]:
    """Score drift: the same numeric statistics on the score column."""
    score = profile.score_column
    if profile.score is None or score is None or score not in current.columns:
        return []
    values, _ = sorted_finite(current[score])
    return numeric_shift_rows(score, values, profile.score, policy)


def performance_rows(
    profile: ReferenceProfile, current: pd.DataFrame, policy: DriftPolicy
) -> list[PerformanceDrift]:
    """Realised performance drift, when the window carries labels."""
    score, label = profile.score_column, profile.label_column
    if profile.performance is None or not score or not label:
        return []
    if score not in current.columns or label not in current.columns:
        return []
    if current[label].notna().sum() == 0:
        return []
    return performance_drift(current[label], current[score], profile.performance, policy)


def compare(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    policy: DriftPolicy | None = None,
    *,
    window_id: str = "",
    outcomes: pd.DataFrame | None = None,
) -> DriftReport:
    """Drift report of one current window against the reference profile.

    Performance drift is computed on ``current`` if it carries the label column, or on
    ``outcomes``: earlier rows (score and label columns) whose labels arrived in this window.
    """
    policy = policy or DriftPolicy()
    require_columns(current, profile.features, "the current window")
    features = [
        row
        for name, col_profile in profile.features.items()
        for row in feature_rows(name, current[name], col_profile, policy)
    ]
    prediction = prediction_rows(profile, current, policy)
    performance = performance_rows(profile, current if outcomes is None else outcomes, policy)
    estimate = None
    if profile.score_column and profile.score_column in current.columns:
        estimate = estimated_performance(current[profile.score_column], profile.performance, policy)
    return assemble_report(
        window_id=window_id,
        n_rows=len(current),
        n_reference=profile.n_rows,
        features=features,
        prediction=prediction,
        performance=performance,
        estimate=estimate,
        policy=policy,
    )


def assemble_report(
    *,
    window_id: str,
    n_rows: int,
    n_reference: int,
    features: list[FeatureDrift],
    prediction: list[FeatureDrift],
    performance: list[PerformanceDrift],
    estimate: EstimatedPerformance | None,
    policy: DriftPolicy,
) -> DriftReport:
    """Count the verdicts and put the report together."""
    verdicts = _feature_verdicts(features)
    drifting = sorted(n for n, v in verdicts.items() if v in ("warn", "act"))
    acting = sorted(n for n, v in verdicts.items() if v == "act")
    return DriftReport(
        window_id=window_id,
        n_rows=n_rows,
        n_reference=n_reference,
        features=features,
        prediction=prediction,
        performance=performance,
        estimated_performance=estimate,
        n_features=len(verdicts),
        n_drifting=len(drifting),
        n_drifting_act=len(acting),
        n_insufficient=sum(v == "insufficient_data" for v in verdicts.values()),
        drifting_features=drifting,
        act_features=acting,
        prediction_verdict=worst([r.verdict for r in prediction if _judgeable(r)]) if prediction else None,
        performance_verdict=worst([p.verdict for p in performance if _judgeable(p)]) if performance else None,
        policy=policy,
    )


def unjudged_note(reports: Sequence[DriftReport]) -> str:
    """`` (6 too small to judge: 250 < min_window_rows 500)`` for the windows on which no feature
    could be judged (an empty string when every window was judged): "no alarm" about them
    says nothing, and the person reading it should know."""
    unjudged = [r for r in reports if not r.sufficient]
    if not unjudged:
        return ""
    floor = max(r.policy.min_window_rows for r in unjudged)
    low, high = min(r.n_rows for r in unjudged), max(r.n_rows for r in unjudged)
    if high < floor:
        rows = str(low) if low == high else f"{low}-{high}"
        return f" ({len(unjudged)} too small to judge: {rows} < min_window_rows {floor})"
    return (
        f" ({len(unjudged)} not judged: fewer than min_window_rows {floor} non-missing values in "
        "every feature)"
    )


def _judgeable(row: FeatureDrift | PerformanceDrift) -> bool:
    return row.verdict != "insufficient_data"
