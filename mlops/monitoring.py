"""Drift monitoring of a champion (plain Python; :mod:`flows.monitor` wires it).

One monitor run, for one model:

1. the champion's reference profile is loaded (or built once per version, see
   :mod:`mlops.monitoring_reference`);
2. the **windows** are the validated application snapshots newer than the reference that this
   champion's monitor has not judged yet: the catalog's snapshots, plus any snapshot the
   scoring flow wrote audit records for. Each window is scored with the champion's own
   scores from the audit trail where the rows were scored (any role: in a canary arm the
   champion's score is a shadow record) and by the champion model for the rest;
3. outcome snapshots that arrived since the last run are joined by id to the champion scores
   of the windows judged so far (kept in the object store) and given, as late labels, to the
   window they arrived with: performance drift and the label-free estimate come from there;
4. each window is compared with the reference (:func:`mlops.drift.compare`) and fed to the
   alarm rule (:meth:`mlops.drift.AlarmState.observe`), oldest first;
5. if the rule fired in this run, **one** event says so: ``mlops.performance.degraded`` when
   a confirmed performance drop made the alarm, otherwise ``mlops.drift.detected``.

Windows are judged once (the cursor lives in :class:`~mlops.monitoring_state.MonitorState`),
so running the monitor twice on the same data raises nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.catalog import CatalogEntry, in_ingestion_order, list_snapshots, read_entries
from mlops.constants import EVENT_DRIFT_DETECTED, EVENT_PERFORMANCE_DEGRADED, KIND_VALID
from mlops.contracts import Contract
from mlops.drift import AlarmDecision, DriftPolicy, DriftReport, compare
from mlops.drift_alarm import performance_finding
from mlops.errors import InputError
from mlops.labels import dedup_outcomes, observed_before
from mlops.model_spec import ModelSpec
from mlops.monitoring_reference import FloatArray, Scorer, as_datetime, model_inputs
from mlops.monitoring_state import (
    SCORE_COLUMN,
    MonitorState,
    ReferenceRecord,
    scores_key,
    scores_prefix,
)
from mlops.storage import ObjectStore, parquet_bytes, read_snapshot, snapshot_key

SOURCE_AUDIT: Final = "audit"
SOURCE_COMPUTED: Final = "computed"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# --- the audit trail's champion scores ------------------------------------------------------


def _predictions(model: str, version: int) -> Any:
    table = audit.audit_records
    return (
        table.c.record_type == audit.RECORD_PREDICTION,
        table.c.model_name == model,
        table.c.model_version == str(int(version)),
    )


def audit_scored_snapshots(engine: Engine, model: str, version: int) -> set[str]:
    """Input snapshots ``version`` of ``model`` scored (any role)."""
    table = audit.audit_records
    stmt = sa.select(table.c.input_snapshot).where(*_predictions(model, version)).distinct()
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(stmt) if r[0]}


def audit_scores(engine: Engine, model: str, version: int, snapshot: str) -> pd.Series:
    """The scores ``version`` gave the rows of ``snapshot``, indexed by row number (latest wins)."""
    table = audit.audit_records
    stmt = (
        sa.select(table.c.input_row, table.c.score)
        .where(*_predictions(model, version), table.c.input_snapshot == snapshot)
        .order_by(table.c.seq)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if not rows:
        return pd.Series([], dtype="float64")
    frame = pd.DataFrame(rows, columns=["row", "score"]).dropna()
    frame = frame.drop_duplicates("row", keep="last")
    return pd.Series(frame["score"].to_numpy(dtype="float64"), index=frame["row"].astype("int64"))


def window_scores(
    frame: pd.DataFrame, from_audit: pd.Series, scorer: Scorer, spec: ModelSpec
) -> tuple[FloatArray, dict[str, int]]:
    """Champion score per row: the audit trail's where present, the model's for the rest."""
    scores = np.full(len(frame), np.nan)
    known = from_audit[(from_audit.index >= 0) & (from_audit.index < len(frame))]
    scores[known.index.to_numpy()] = known.to_numpy()
    missing = np.isnan(scores)
    if missing.any():
        scores[missing] = scorer(model_inputs(frame.loc[missing], spec))
    computed = int(missing.sum())
    return scores, {SOURCE_AUDIT: len(frame) - computed, SOURCE_COMPUTED: computed}


# --- windows and late labels ---------------------------------------------------------------


@dataclass
class Window:
    """One application snapshot to judge (the frame is read once)."""

    snapshot: str
    max_timestamp: datetime | None
    frame: pd.DataFrame | None = None

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.max_timestamp or _EPOCH, self.snapshot)

    @property
    def window_id(self) -> str:
        day = f"{self.max_timestamp:%Y-%m-%d}-" if self.max_timestamp else ""
        return f"{day}{self.snapshot[:12]}"


def _max_timestamp(frame: pd.DataFrame, column: str | None) -> datetime | None:
    if column is None or column not in frame.columns or frame.empty:
        return None
    return as_datetime(frame[column].max())


def pending_windows(
    store: ObjectStore,
    engine: Engine,
    applications: Contract,
    reference: ReferenceRecord,
    state: MonitorState,
) -> list[Window]:
    """Application snapshots newer than the reference and not judged yet, oldest first."""
    seen = set(reference.application_snapshots) | set(state.processed_applications)
    windows = {
        e.sha256: Window(e.sha256, e.max_timestamp)
        for e in list_snapshots(store, applications.name)
        if e.sha256 not in seen
    }
    lost = []
    for sha in sorted(audit_scored_snapshots(engine, reference.model_name, reference.version) - seen):
        if sha in windows:
            continue
        if not store.exists(snapshot_key(KIND_VALID, applications.name, sha)):
            lost.append(sha)
            continue
        frame = read_snapshot(store, dataset=applications.name, kind=KIND_VALID, sha256=sha)
        windows[sha] = Window(sha, _max_timestamp(frame, applications.timestamp_column), frame)
    if lost:  # fail closed: a window the champion decided but nobody can judge is not "no drift"
        raise InputError(
            f"{len(lost)} application snapshot(s) that {reference.model_name} v{reference.version} scored "
            f"(audit trail) are not in the object store {store.url}: "
            + ", ".join(sha[:12] for sha in lost[:5])
            + ("..." if len(lost) > 5 else ""),
            hint="restore them into the store (the audit trail and mlops reproduce need them too); "
            "until then the monitor judges no window and announces no completed shadow",
        )
    newest_reference = reference.max_timestamp
    fresh = [
        w
        for w in windows.values()
        if newest_reference is None or w.max_timestamp is None or w.max_timestamp > newest_reference
    ]
    return sorted(fresh, key=lambda w: w.order)


def pending_outcomes(
    store: ObjectStore, outcomes: Contract, reference: ReferenceRecord, state: MonitorState
) -> list[CatalogEntry]:
    """Outcome snapshots neither in the reference nor used by an earlier run, oldest first."""
    seen = set(reference.outcome_snapshots) | set(state.processed_outcomes)
    return [e for e in list_snapshots(store, outcomes.name) if e.sha256 not in seen]


def assign_outcomes(windows: list[Window], entries: list[CatalogEntry]) -> dict[str, list[CatalogEntry]]:
    """Each outcome snapshot goes to the first window at or after its newest observation
    (or to the last window); with no window to judge, outcomes wait for the next run."""
    assigned: dict[str, list[CatalogEntry]] = {w.snapshot: [] for w in windows}
    if not windows:
        return assigned
    for entry in entries:
        observed = entry.max_timestamp or _EPOCH
        home = next((w for w in windows if (w.max_timestamp or _EPOCH) >= observed), windows[-1])
        assigned[home.snapshot].append(entry)
    return assigned


def scored_so_far(
    store: ObjectStore, model: str, version: int, judged: Collection[str] | None = None
) -> pd.DataFrame:
    """(id, champion score) of every window this champion's monitor has judged (of the
    snapshots in ``judged`` when given: scores cached under a reused version number by
    another model are not this champion's)."""
    keys = [k for k in store.list_keys(scores_prefix(model, version)) if k.endswith(".parquet")]
    if judged is not None:
        wanted = {scores_key(model, version, sha) for sha in judged}
        keys = [k for k in keys if k in wanted]
    frames = [pd.read_parquet(_buffer(store.get_bytes(key))) for key in keys]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _buffer(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


_OBSERVED: Final = "_observed_at"
_APPLIED: Final = "_applied_at"


def late_labels(
    store: ObjectStore,
    entries: list[CatalogEntry],
    *,
    applications: Contract,
    outcomes: Contract,
    target: str,
    model: str,
    version: int,
    judged: Collection[str] | None = None,
) -> pd.DataFrame | None:
    """(score, label) of judged rows (of the ``judged`` snapshots when given) whose outcome
    arrived in ``entries``; None if none."""
    if not entries:
        return None
    scored = scored_so_far(store, model, version, judged)
    if scored.empty:
        return None
    # One outcome per id by the rule training and the performance report use: the last
    # observed, on a tie the batch ingested last (a correction).
    outs = read_entries(store, in_ingestion_order(entries))
    observed = outcomes.timestamp_column
    outs, _, _ = dedup_outcomes(
        outs, outcomes.id_column, target, observed if observed in outs.columns else None
    )
    label_columns = [outcomes.id_column, target]
    if observed is not None and observed in outs.columns:
        label_columns.append(observed)
    joined = (
        outs[label_columns]
        .rename(columns={observed: _OBSERVED} if observed else {})
        .merge(
            scored.drop_duplicates(applications.id_column, keep="last").rename(
                columns={applications.timestamp_column: _APPLIED} if applications.timestamp_column else {}
            ),
            left_on=outcomes.id_column,
            right_on=applications.id_column,
            how="inner",
        )
    )
    if _OBSERVED in joined.columns and _APPLIED in joined.columns:
        # An outcome observed before its application was submitted is no label (training and
        # promotion leave it out too). Score caches written before they kept the time: no check.
        joined = joined.loc[~observed_before(joined[_OBSERVED], joined[_APPLIED])]
    if joined.empty:
        return None
    return pd.DataFrame(
        {SCORE_COLUMN: joined[SCORE_COLUMN].to_numpy(dtype="float64"), target: joined[target].to_numpy()}
    )


# --- judging windows ----------------------------------------------------------------------


class WindowResult(BaseModel):
    """One judged window: its report, the alarm decision after it, where its scores came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_id: str
    snapshot: str
    rows: int
    max_timestamp: datetime | None
    score_sources: dict[str, int]
    outcome_snapshots: list[str]
    labelled_rows: int
    report: DriftReport
    decision: AlarmDecision
    performance_alarm: bool = Field(description="A confirmed performance drop is part of the alarm.")


class MonitorRun(BaseModel):
    """What one run judged, and the state to keep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: MonitorState
    windows: list[WindowResult]
    waiting_outcomes: int = Field(0, description="Outcome snapshots kept for a later window.")


def judge_windows(
    *,
    store: ObjectStore,
    engine: Engine,
    spec: ModelSpec,
    applications: Contract,
    outcomes: Contract,
    reference: ReferenceRecord,
    state: MonitorState,
    scorer: Scorer,
    policy: DriftPolicy | None = None,
) -> MonitorRun:
    """Judge every pending window, oldest first (see the module docstring)."""
    policy = policy or spec.drift
    model, version = reference.model_name, reference.version
    windows = pending_windows(store, engine, applications, reference, state)
    waiting = pending_outcomes(store, outcomes, reference, state)
    assigned = assign_outcomes(windows, waiting)
    results: list[WindowResult] = []
    for window in windows:
        frame = window.frame
        if frame is None:
            frame = read_snapshot(store, dataset=applications.name, kind=KIND_VALID, sha256=window.snapshot)
        from_audit = audit_scores(engine, model, version, window.snapshot)
        scores, sources = window_scores(frame, from_audit, scorer, spec)
        current = frame.assign(**{SCORE_COLUMN: scores})
        cache = pd.DataFrame({applications.id_column: frame[applications.id_column], SCORE_COLUMN: scores})
        if applications.timestamp_column:  # to leave out outcomes observed before it (late_labels)
            cache[applications.timestamp_column] = frame[applications.timestamp_column].array
        store.put_bytes(scores_key(model, version, window.snapshot), parquet_bytes(cache))
        entries = assigned.get(window.snapshot, [])
        labels = late_labels(
            store,
            entries,
            applications=applications,
            outcomes=outcomes,
            target=spec.target_column,
            model=model,
            version=version,
            judged=[*state.processed_applications, window.snapshot],
        )
        report = compare(reference.profile, current, policy, window_id=window.window_id, outcomes=labels)
        alarm, decision = state.alarm.observe(report, policy)
        performance = decision.alarm and performance_finding(alarm.windows, policy.alarm) is not None
        state = state.model_copy(
            update={
                "alarm": alarm,
                "processed_applications": [*state.processed_applications, window.snapshot],
                "processed_outcomes": [*state.processed_outcomes, *(e.sha256 for e in entries)],
            }
        )
        results.append(
            WindowResult(
                window_id=window.window_id,
                snapshot=window.snapshot,
                rows=len(frame),
                max_timestamp=window.max_timestamp,
                score_sources=sources,
                outcome_snapshots=[e.sha256 for e in entries],
                labelled_rows=0 if labels is None else len(labels),
                report=report,
                decision=decision,
                performance_alarm=performance,
            )
        )
    used = {e.sha256 for entries in assigned.values() for e in entries}
    return MonitorRun(state=state, windows=results, waiting_outcomes=len(waiting) - len(used))


# --- the event ---------------------------------------------------------------------------


class AlarmEvent(BaseModel):
    """The one event a monitor run sends when the alarm rule fired."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str
    severity: str
    window: str = Field(description="The window whose decision fired the alarm.")
    windows: list[str] = Field(description="Windows that made the alarm, oldest first.")
    features: list[str]
    reason: str


def alarm_event(results: list[WindowResult]) -> AlarmEvent | None:
    """The event for this run: from the newest window whose decision alarmed, if any."""
    fired = [r for r in results if r.decision.alarm]
    if not fired:
        return None
    last = fired[-1]
    return AlarmEvent(
        event=EVENT_PERFORMANCE_DEGRADED if last.performance_alarm else EVENT_DRIFT_DETECTED,
        severity=last.decision.severity,
        window=last.window_id,
        windows=last.decision.windows,
        features=last.decision.features,
        reason=last.decision.reason,
    )


def lazy_scorer(load: Callable[[], Any]) -> Scorer:
    """A scorer that loads its model on first use (windows fully scored by the audit need none)."""
    from mlops.champion_loader import predict_scores

    holder: dict[str, Any] = {}

    def score(frame: pd.DataFrame) -> FloatArray:
        if "model" not in holder:
            holder["model"] = load()
        return predict_scores(holder["model"], frame)

    return score
