"""The alarm rule: persistence over consecutive windows before anyone is woken up.

A pure function over the history of window summaries (oldest first), so a flow keeps an
:class:`AlarmState` (JSON) between runs and the rule is tested case by case:

- ``act``: the same k features at ``act`` in each of the last m windows; or a performance
  drop confirmed (verdict ``act``) in each of the last m *labelled* windows (windows without
  labels neither confirm nor interrupt a performance drop, since labels arrive later).
- ``warn``: the same k features drifting (warn or act) in each of the last m windows; or
  the label-free estimate (CBPE) below tolerance in each of the last m windows.
- A window with too little data (no feature could be judged) interrupts a feature streak.

With ``count_prediction`` the model score counts as one more feature.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlops.drift_policy import AlarmRule, DriftPolicy, Severity
from mlops.drift_report import DriftReport

_SEVERITY_RANK: dict[Severity, int] = {"none": 0, "warn": 1, "act": 2}


class WindowSummary(BaseModel):
    """What the alarm rule keeps of one window report (small, JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_id: str
    sufficient: bool
    drifting_features: list[str] = Field(description="Features at warn or act.")
    act_features: list[str]
    prediction_feature: str | None = Field(
        None, description="Score column, if the score drifted (warn or act)."
    )
    prediction_act: bool = False
    labelled: bool = Field(False, description="Performance could be judged on this window.")
    performance_drops: list[str] = Field([], description="Metrics with a confirmed drop.")
    estimated_drop: bool = False

    @classmethod
    def from_report(cls, report: DriftReport) -> WindowSummary:
        score = report.prediction[0].feature if report.prediction else None
        drifted = report.prediction_verdict in ("warn", "act")
        return cls(
            window_id=report.window_id,
            sufficient=report.sufficient,
            drifting_features=report.drifting_features,
            act_features=report.act_features,
            prediction_feature=score if drifted else None,
            prediction_act=report.prediction_verdict == "act",
            labelled=report.performance_verdict not in (None, "insufficient_data"),
            performance_drops=[p.metric for p in report.performance if p.verdict == "act"],
            estimated_drop=report.estimated_performance is not None
            and report.estimated_performance.verdict == "warn",
        )

    def drifting(self, count_prediction: bool) -> set[str]:
        extra = {self.prediction_feature} if count_prediction and self.prediction_feature else set()
        return set(self.drifting_features) | extra

    def acting(self, count_prediction: bool) -> set[str]:
        score = self.prediction_feature if self.prediction_act else None
        extra = {score} if count_prediction and score else set()
        return set(self.act_features) | extra


class AlarmDecision(BaseModel):
    """Whether to raise an alarm now, how severe, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alarm: bool
    severity: Severity
    reason: str
    windows: list[str] = Field(description="Windows that made the alarm, oldest first.")
    features: list[str] = Field(description="Features drifting in all of those windows.")


def _rule(rule: AlarmRule | DriftPolicy) -> AlarmRule:
    return rule.alarm if isinstance(rule, DriftPolicy) else rule


def _summaries(history: Sequence[DriftReport | WindowSummary]) -> list[WindowSummary]:
    return [h if isinstance(h, WindowSummary) else WindowSummary.from_report(h) for h in history]


def persistent(windows: list[WindowSummary], pick: str, count_prediction: bool) -> set[str]:
    """Features drifting (pick="drifting") or acting (pick="acting") in every window."""
    sets = [
        w.drifting(count_prediction) if pick == "drifting" else w.acting(count_prediction) for w in windows
    ]
    return set.intersection(*sets) if sets else set()


class _Finding(BaseModel):
    severity: Severity
    reason: str
    windows: list[str]
    features: list[str] = []


def feature_finding(windows: list[WindowSummary], rule: AlarmRule) -> _Finding | None:
    """k features drifting in each of the last m windows (all of them judged)."""
    tail = windows[-rule.m_windows :]
    if len(tail) < rule.m_windows or not all(w.sufficient for w in tail):
        return None
    ids = [w.window_id for w in tail]
    acting = persistent(tail, "acting", rule.count_prediction)
    if len(acting) >= rule.k_features:
        reason = f"{len(acting)} feature(s) at act in {len(tail)} consecutive windows"
        return _Finding(severity="act", reason=reason, windows=ids, features=sorted(acting))
    drifting = persistent(tail, "drifting", rule.count_prediction)
    if len(drifting) >= rule.k_features:
        reason = f"{len(drifting)} feature(s) drifting in {len(tail)} consecutive windows"
        return _Finding(severity="warn", reason=reason, windows=ids, features=sorted(drifting))
    return None


def performance_finding(windows: list[WindowSummary], rule: AlarmRule) -> _Finding | None:
    """A confirmed drop in each of the last m labelled windows."""
    m = rule.performance_windows
    tail = [w for w in windows if w.labelled][-m:]
    if len(tail) < m or not all(w.performance_drops for w in tail):
        return None
    metrics = sorted(set.intersection(*(set(w.performance_drops) for w in tail)) or {"performance"})
    reason = f"performance drop ({', '.join(metrics)}) confirmed in {m} labelled window(s)"
    return _Finding(severity="act", reason=reason, windows=[w.window_id for w in tail])


def estimate_finding(windows: list[WindowSummary], rule: AlarmRule) -> _Finding | None:
    """Label-free estimated AUC below tolerance in each of the last m windows."""
    tail = windows[-rule.m_windows :]
    if not rule.estimated_performance_warns or len(tail) < rule.m_windows:
        return None
    if not all(w.estimated_drop for w in tail):
        return None
    reason = f"estimated AUC (CBPE, label-free) below tolerance in {len(tail)} windows"
    return _Finding(severity="warn", reason=reason, windows=[w.window_id for w in tail])


def decide_alarm(
    history: Sequence[DriftReport | WindowSummary], rule: AlarmRule | DriftPolicy
) -> AlarmDecision:
    """Alarm decision for the latest window given the history, oldest first."""
    alarm_rule = _rule(rule)
    windows = _summaries(history)
    found = [
        f
        for f in (
            performance_finding(windows, alarm_rule),
            feature_finding(windows, alarm_rule),
            estimate_finding(windows, alarm_rule),
        )
        if f is not None
    ]
    if not found:
        reason = _quiet_reason(windows, alarm_rule)
        return AlarmDecision(alarm=False, severity="none", reason=reason, windows=[], features=[])
    top = max(found, key=lambda f: _SEVERITY_RANK[f.severity])
    position = {w.window_id: i for i, w in enumerate(windows)}
    return AlarmDecision(
        alarm=True,
        severity=top.severity,
        reason="; ".join(f.reason for f in found),
        windows=sorted({w for f in found for w in f.windows}, key=lambda w: position.get(w, 0)),
        features=sorted({x for f in found for x in f.features}),
    )


def _quiet_reason(windows: list[WindowSummary], rule: AlarmRule) -> str:
    if len(windows) < rule.m_windows:
        return f"{len(windows)} of {rule.m_windows} windows needed for the rule"
    if windows and not windows[-1].sufficient:
        return "latest window has insufficient data"
    return f"no condition held over {rule.m_windows} consecutive windows"


class AlarmState(BaseModel):
    """The recent window summaries a monitor keeps between runs (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: list[WindowSummary] = []

    def observe(
        self, report: DriftReport | WindowSummary, policy: DriftPolicy
    ) -> tuple[AlarmState, AlarmDecision]:
        """Add a window, keep as many as the rule looks back, and decide."""
        summary = report if isinstance(report, WindowSummary) else WindowSummary.from_report(report)
        look_back = max(policy.alarm.m_windows, policy.alarm.performance_windows) - 1
        older = list(enumerate(self.windows))
        recent = {i for i, _ in older[len(older) - look_back :]} if look_back else set()
        labelled = [i for i, w in older if w.labelled]
        keep = recent | set(labelled[len(labelled) - look_back :] if look_back else [])
        kept = [w for i, w in older if i in keep]
        state = AlarmState(windows=[*kept, summary])
        return state, decide_alarm(state.windows, policy)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> AlarmState:
        return cls.model_validate_json(text)
