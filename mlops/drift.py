"""Drift detection: the public API in one import (plain Python, no Prefect).

Build a :class:`ReferenceProfile` once from the champion's reference data, then for each
current window call :func:`compare` for a :class:`DriftReport` and feed the reports to
:func:`decide_alarm` (or keep an :class:`AlarmState`) for an :class:`AlarmDecision`::

    profile = build_profile(reference, score_column="score", label_column="default")
    report = compare(profile, window, policy, window_id="2025-01-31")
    state, decision = state.observe(report, policy)

Statistics: :mod:`mlops.drift_stats`; thresholds and defaults: :mod:`mlops.drift_policy`;
performance and the label-free estimate: :mod:`mlops.drift_performance`.
"""

from __future__ import annotations

from mlops.drift_alarm import AlarmDecision, AlarmState, WindowSummary, decide_alarm
from mlops.drift_performance import EstimatedPerformance, PerformanceDrift, ReferencePerformance
from mlops.drift_policy import AlarmRule, DriftPolicy, Severity, Threshold, Verdict
from mlops.drift_profile import (
    MISSING,
    OTHER,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_profile,
)
from mlops.drift_report import DriftReport, FeatureDrift, compare

__all__ = [
    "MISSING",
    "OTHER",
    "AlarmDecision",
    "AlarmRule",
    "AlarmState",
    "CategoricalProfile",
    "DriftPolicy",
    "DriftReport",
    "EstimatedPerformance",
    "FeatureDrift",
    "NumericProfile",
    "PerformanceDrift",
    "ReferencePerformance",
    "ReferenceProfile",
    "Severity",
    "Threshold",
    "Verdict",
    "WindowSummary",
    "build_profile",
    "compare",
    "decide_alarm",
]
