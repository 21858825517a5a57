"""What the monitor keeps between runs, as JSON in the object store (keys defined once here).

Layout under ``monitoring/<model>/``::

    reference/v<version>.json          the champion's reference profile (ReferenceRecord)
    state/v<version>.json              alarm state and processed snapshots of that champion
    shadow.json                        challenger versions announced as shadowed
    scores/v<version>/<sha256>.parquet champion scores of each monitored window (id, score)
    reports/<stamp>-v<version>.json    drift reports of one monitor run
    retrain_state.json                 retrain attempts (mlops.retrain.retrain_state_key)

The reference, the alarm state and the processed-snapshot cursor are keyed by the champion's
model version: they reset by themselves when the champion changes (a promotion starts a fresh
history), and a rollback resumes the restored version's own history where it stopped, so the
windows it judged before are not judged (nor alarmed on) twice. Both also hold the version's
MLflow run id: a version number given again to another model once the earlier one is gone (the
registered model deleted and registered anew, a new registry database beside the same store) is
not judged against the earlier model's reference, cursor or cached scores; its history starts
afresh (and replaces the earlier one's). Two registries monitored through one store at the same
time are not supported: each run would start the other's history afresh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from mlops.drift import AlarmState, ReferenceProfile
from mlops.storage import ObjectStore

MONITORING_PREFIX: Final = "monitoring"
#: Column holding the champion's score in monitored windows and in the reference profile.
SCORE_COLUMN: Final = "_champion_score"


def model_prefix(model: str) -> str:
    return f"{MONITORING_PREFIX}/{model}"


def reference_key(model: str, version: int) -> str:
    return f"{model_prefix(model)}/reference/v{int(version)}.json"


def state_key(model: str, version: int) -> str:
    return f"{model_prefix(model)}/state/v{int(version)}.json"


def shadow_key(model: str) -> str:
    return f"{model_prefix(model)}/shadow.json"


def scores_prefix(model: str, version: int) -> str:
    return f"{model_prefix(model)}/scores/v{int(version)}/"


def scores_key(model: str, version: int, snapshot: str) -> str:
    return f"{scores_prefix(model, version)}{snapshot}.parquet"


def report_key(model: str, version: int, stamp: str) -> str:
    return f"{model_prefix(model)}/reports/{stamp}-v{int(version)}.json"


def utc_now() -> datetime:
    return datetime.now(UTC)


class ReferenceRecord(BaseModel):
    """The champion's reference: where it came from and its profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    version: int
    run_id: str
    application_snapshots: list[str] = Field(description="Training application snapshots (lineage tag).")
    outcome_snapshots: list[str]
    max_timestamp: datetime | None = Field(
        description="Newest application timestamp of the reference; later snapshots are windows."
    )
    rows: int = Field(description="Labelled training rows profiled for the features.")
    evaluation_rows: int = Field(description="Held-out rows profiled for the score and performance.")
    built_at: datetime
    profile: ReferenceProfile


class EmittedEvent(BaseModel):
    """An event the monitor sent (kept in the state for people and tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str
    event_id: str | None
    severity: str
    window: str
    emitted_at: datetime


class MonitorState(BaseModel):
    """Alarm history and cursor of one model's monitor for one champion version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    champion_version: int
    champion_run_id: str | None = Field(
        None, description="MLflow run of the version this history belongs to (None: kept before it was)."
    )
    alarm: AlarmState = AlarmState()
    processed_applications: list[str] = Field([], description="Application snapshots already judged.")
    processed_outcomes: list[str] = Field([], description="Outcome snapshots already used.")
    last_event: EmittedEvent | None = None
    updated_at: datetime | None = None


class ShadowAnnouncements(BaseModel):
    """Challenger versions for which ``mlops.shadow.completed`` was sent (once each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    announced: list[int] = []


def load_state(store: ObjectStore, model: str, version: int, run_id: str | None = None) -> MonitorState:
    """The monitor's state for champion ``version`` (fresh if it was never champion before, or
    if the state kept under that number belongs to another run: a version number reused)."""
    key = state_key(model, version)
    fresh = MonitorState(model_name=model, champion_version=version, champion_run_id=run_id)
    if not store.exists(key):
        return fresh
    state = MonitorState.model_validate_json(store.get_bytes(key))
    if run_id is None:
        return state
    if state.champion_run_id is not None and state.champion_run_id != run_id:
        return fresh
    return state.model_copy(update={"champion_run_id": run_id})


def save_state(store: ObjectStore, state: MonitorState) -> str:
    key = state_key(state.model_name, state.champion_version)
    stamped = state.model_copy(update={"updated_at": utc_now()})
    store.put_bytes(key, stamped.model_dump_json(indent=1).encode())
    return store.uri(key)


def load_announcements(store: ObjectStore, model: str) -> ShadowAnnouncements:
    key = shadow_key(model)
    if not store.exists(key):
        return ShadowAnnouncements(model_name=model)
    return ShadowAnnouncements.model_validate_json(store.get_bytes(key))


def save_announcements(store: ObjectStore, announcements: ShadowAnnouncements) -> None:
    store.put_bytes(shadow_key(announcements.model_name), announcements.model_dump_json().encode())


def load_reference(store: ObjectStore, model: str, version: int) -> ReferenceRecord | None:
    key = reference_key(model, version)
    if not store.exists(key):
        return None
    return ReferenceRecord.model_validate_json(store.get_bytes(key))


def save_reference(store: ObjectStore, record: ReferenceRecord) -> str:
    key = reference_key(record.model_name, record.version)
    store.put_bytes(key, record.model_dump_json().encode())
    return store.uri(key)
