"""monitor_drift: verify the audit chain, judge new windows against the champion's reference,
report, and raise one event when the alarm rule fires; announce a completed shadow."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from mlops.champion_loader import load_model_version
from mlops.drift_report import unjudged_note
from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.monitoring import alarm_event, lazy_scorer
from mlops.monitoring_shadow import ShadowStatus
from mlops.monitoring_state import EmittedEvent, utc_now
from mlops.settings import flow_settings
from tasks.monitoring import (
    announce_shadow_task,
    check_shadow_task,
    emit_alarm_task,
    ensure_reference_task,
    judge_windows_task,
    load_monitor_context_task,
    log_drift_to_mlflow_task,
    publish_drift_report_task,
    save_monitor_state_task,
    store_report_task,
)
from tasks.monitoring import verify_audit_chain_task as verify_chain


class WindowOutcome(BaseModel):
    """One judged window, as the CLI prints it."""

    window_id: str
    snapshot: str
    rows: int
    drifting_features: list[str]
    prediction_verdict: str | None
    performance_verdict: str | None
    labelled_rows: int
    alarm: bool
    severity: str


class MonitorResult(BaseModel):
    """What the monitor did; the CLI prints it as JSON."""

    model_name: str
    champion_version: int | None
    chain_ok: bool
    chain_records_checked: int
    reference_uri: str | None = None
    reference_built: bool = False
    windows: list[WindowOutcome] = []
    alarm: bool = False
    event: str | None = None
    severity: str | None = None
    event_id: str | None = None
    report_uri: str | None = None
    mlflow_run_id: str | None = None
    shadow: ShadowStatus | None = None
    shadow_event_id: str | None = None
    flow_run_id: str | None = None
    message: str = Field("", description="One line for people.")


@flow(name="monitor-drift", log_prints=True)
def monitor_drift(model: str = DEFAULT_MODEL_NAME) -> MonitorResult:
    """Monitor ``model``'s champion for drift (scheduled daily; safe to run any time).

    Fails (ChainBroken, exit 1) if the audit chain does not verify. Judges each validated
    application snapshot newer than the champion's reference once; emits
    ``mlops.drift.detected`` or ``mlops.performance.degraded`` only when the alarm rule fires,
    and ``mlops.shadow.completed`` once per challenger that shadowed long enough.
    """
    settings = flow_settings()
    run_id = flow_run.get_id()
    chain = verify_chain(settings)
    ctx = load_monitor_context_task(model, settings)
    champion = ctx.champion
    shadow = check_shadow_task(ctx, settings)
    base = MonitorResult(
        model_name=model,
        champion_version=None if champion is None else champion.version,
        chain_ok=chain.ok,
        chain_records_checked=chain.records_checked,
        shadow=shadow,
        flow_run_id=run_id,
    )
    if champion is None:
        message = (
            f"{model}: no champion yet; nothing to monitor (audit chain ok, {chain.records_checked} records)"
        )
        print(message)
        return base.model_copy(update={"message": message})

    uri = settings.resolved_mlflow_tracking_uri
    scorer = lazy_scorer(lambda: load_model_version(uri, model, champion.version))
    reference, reference_uri, built = ensure_reference_task(ctx, settings, scorer)
    run = judge_windows_task(ctx, reference, settings, scorer)
    event = alarm_event(run.windows)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    report_uri = mlflow_run_id = event_id = None
    if run.windows:
        report_uri = store_report_task(model, champion.version, run, event, stamp, settings)
        mlflow_run_id = log_drift_to_mlflow_task(model, champion, run, event, stamp, settings)
    state = run.state
    if event is not None:
        event_id = emit_alarm_task(
            model, champion.version, event, report_uri, mlflow_run_id, run_id, settings
        )
        emitted = EmittedEvent(
            event=event.event,
            event_id=event_id,
            severity=event.severity,
            window=event.window,
            emitted_at=utc_now(),
        )
        state = state.model_copy(update={"last_event": emitted})
    shadow_event_id = None
    if shadow is not None and shadow.complete:
        shadow_event_id = announce_shadow_task(shadow, run_id, settings)
    save_monitor_state_task(state, settings)
    publish_drift_report_task(
        model, champion.version, reference_uri, run, event, event_id, report_uri, shadow, state.last_event
    )
    if event is not None:
        message = f"{model} v{champion.version}: {event.event} ({event.severity}) at window {event.window}: {event.reason}"
    else:
        message = f"{model} v{champion.version}: {len(run.windows)} new window(s), no alarm" + unjudged_note(
            [w.report for w in run.windows]
        )
    print(message)
    return base.model_copy(
        update={
            "reference_uri": reference_uri,
            "reference_built": built,
            "windows": [
                WindowOutcome(
                    window_id=w.window_id,
                    snapshot=w.snapshot,
                    rows=w.rows,
                    drifting_features=w.report.drifting_features,
                    prediction_verdict=w.report.prediction_verdict,
                    performance_verdict=w.report.performance_verdict,
                    labelled_rows=w.labelled_rows,
                    alarm=w.decision.alarm,
                    severity=w.decision.severity,
                )
                for w in run.windows
            ],
            "alarm": event is not None,
            "event": None if event is None else event.event,
            "severity": None if event is None else event.severity,
            "event_id": event_id,
            "report_uri": report_uri,
            "mlflow_run_id": mlflow_run_id,
            "shadow_event_id": shadow_event_id,
            "message": message,
        }
    )
