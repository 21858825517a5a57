"""Tasks of the monitoring stage: verify the audit chain, reference, judge windows, report, announce.

Thin named wrappers over :mod:`mlops.monitoring` and friends. Reads retry on transient errors;
events retry; nothing here moves a model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlops import audit
from mlops.audit import open_audit_store
from mlops.constants import ALIAS_CHALLENGER, EVENT_SHADOW_COMPLETED, model_resource
from mlops.contracts import Contract, load_contract
from mlops.events import confirm_delivered, emit
from mlops.model_spec import ModelSpec, load_model_spec
from mlops.monitoring import AlarmEvent, MonitorRun, judge_windows
from mlops.monitoring_reference import Champion, Scorer, build_reference, find_champion
from mlops.monitoring_report import plot_window, report_document, summary_markdown
from mlops.monitoring_shadow import ShadowStatus, shadow_status
from mlops.monitoring_state import (
    EmittedEvent,
    MonitorState,
    ReferenceRecord,
    load_announcements,
    load_reference,
    load_state,
    reference_key,
    report_key,
    save_announcements,
    save_reference,
    save_state,
)
from mlops.registry import make_registry
from mlops.settings import Settings
from mlops.shadow_comparison import trained_keys_of_versions
from mlops.shadow_policy import effective_shadow_policy
from mlops.storage import make_store
from tasks.retry import retry_unless_bad_input

MONITORING_EXPERIMENT_SUFFIX = "-monitoring"


@dataclass(frozen=True)
class MonitorContext:
    """The model spec, its contracts, and who is champion and challenger now."""

    spec: ModelSpec
    applications: Contract
    outcomes: Contract
    champion: Champion | None
    challenger_version: int | None


@task(
    name="verify-audit-chain",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def verify_audit_chain_task(settings: Settings) -> audit.ChainReport:
    """Walk the audit chain against the anchors kept in the object store, keep the verified head
    there as a new anchor, then raise ChainBroken (the flow fails) at the first break."""
    store = make_store(settings)
    engine = open_audit_store(settings)
    try:
        report = audit.verify_chain(engine, anchors=audit.stored_anchors(store))
    finally:
        engine.dispose()
    if report.first_break is None and report.last_seq > 0:
        audit.store_anchor(store, report.head_anchor())
    report.raise_if_broken()
    return report


@task(
    name="load-monitor-context",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def load_monitor_context_task(model: str, settings: Settings) -> MonitorContext:
    spec = load_model_spec(model, contracts_dir=settings.contracts_dir)
    registry = make_registry(settings)
    return MonitorContext(
        spec=spec,
        applications=load_contract(settings.contracts_dir, spec.applications_contract),
        outcomes=load_contract(settings.contracts_dir, spec.outcomes_contract),
        champion=find_champion(registry, model),
        challenger_version=registry.get_alias_version(model, ALIAS_CHALLENGER),
    )


@task(name="ensure-reference-profile", cache_policy=NO_CACHE)
def ensure_reference_task(
    ctx: MonitorContext, settings: Settings, scorer: Scorer
) -> tuple[ReferenceRecord, str, bool]:
    """The champion's reference (built once per version); (record, uri, built now)."""
    assert ctx.champion is not None
    store = make_store(settings)
    champion = ctx.champion
    found = load_reference(store, champion.name, champion.version)
    if found is not None and found.run_id == champion.run_id:  # else the number was reused: rebuild
        return found, store.uri(reference_key(champion.name, champion.version)), False
    record = build_reference(store, ctx.spec, ctx.applications, ctx.outcomes, champion, scorer)
    return record, save_reference(store, record), True


@task(name="judge-windows", cache_policy=NO_CACHE)
def judge_windows_task(
    ctx: MonitorContext, reference: ReferenceRecord, settings: Settings, scorer: Scorer
) -> MonitorRun:
    store = make_store(settings)
    state: MonitorState = load_state(store, reference.model_name, reference.version, reference.run_id)
    return judge_windows(
        store=store,
        engine=open_audit_store(settings),
        spec=ctx.spec,
        applications=ctx.applications,
        outcomes=ctx.outcomes,
        reference=reference,
        state=state,
        scorer=scorer,
    )


@task(name="store-drift-report", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def store_report_task(
    model: str, version: int, run: MonitorRun, event: AlarmEvent | None, stamp: str, settings: Settings
) -> str:
    import json

    store = make_store(settings)
    key = report_key(model, version, stamp)
    document = report_document(model=model, champion_version=version, run=run, event=event)
    store.put_bytes(key, json.dumps(document, indent=1, default=str).encode())
    return store.uri(key)


@task(name="log-drift-to-mlflow", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def log_drift_to_mlflow_task(
    model: str, champion: Champion, run: MonitorRun, event: AlarmEvent | None, stamp: str, settings: Settings
) -> str:
    """A monitoring run in ``<model>-monitoring``: per-window metrics, the report JSON, plots."""
    registry = make_registry(settings)
    client = registry.client
    experiment = registry.ensure_experiment(f"{model}{MONITORING_EXPERIMENT_SUFFIX}")
    tags = {
        "mlops.monitoring.model": model,
        "mlops.monitoring.champion_version": str(champion.version),
        "mlops.monitoring.champion_run_id": champion.run_id,
        "mlops.monitoring.alarm": "none" if event is None else f"{event.event}:{event.severity}",
    }
    mlflow_run = client.create_run(experiment, run_name=f"monitor-{model}-{stamp}", tags=tags)
    run_id = str(mlflow_run.info.run_id)
    try:
        for step, window in enumerate(run.windows):
            r = window.report
            client.log_metric(run_id, "n_drifting", r.n_drifting, step=step)
            client.log_metric(run_id, "n_drifting_act", r.n_drifting_act, step=step)
            client.log_metric(run_id, "alarm", float(window.decision.alarm), step=step)
            for row in r.prediction:
                if row.value is not None:
                    client.log_metric(run_id, f"score_{row.statistic}", row.value, step=step)
        document = report_document(model=model, champion_version=champion.version, run=run, event=event)
        client.log_dict(run_id, document, "drift_report.json")
        with tempfile.TemporaryDirectory(prefix="mlops-drift-plots-") as tmp:
            for window in run.windows:
                path = plot_window(window.report, Path(tmp) / f"drift-{window.window_id}.png")
                client.log_artifact(run_id, str(path), artifact_path="plots")
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


@task(name="emit-drift-alarm", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def emit_alarm_task(
    model: str,
    champion_version: int,
    event: AlarmEvent,
    report_uri: str | None,
    mlflow_run_id: str | None,
    flow_run_id: str | None,
    settings: Settings,
) -> str | None:
    """Send the alarm that triggers the retrain deployment and wait until the API has it
    (:func:`mlops.events.confirm_delivered`): before the windows are marked judged."""
    payload: dict[str, Any] = {
        "model": model,
        "severity": event.severity,
        "champion_version": champion_version,
        "window": event.window,
        "windows": event.windows,
        "features": event.features,
        "reason": event.reason,
        "report_uri": report_uri,
        "mlflow_run_id": mlflow_run_id,
        "flow_run_id": flow_run_id,
    }
    event_id = emit(event.event, model_resource(model), payload, name=model)
    confirm_delivered(event.event, event_id, timeout=settings.event_confirm_seconds)
    return event_id


@task(
    name="check-shadow",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def check_shadow_task(ctx: MonitorContext, settings: Settings) -> ShadowStatus | None:
    if ctx.challenger_version is None:
        return None
    store, registry, name = make_store(settings), make_registry(settings), ctx.spec.name
    tags = {ctx.challenger_version: registry.version_tags(name, ctx.challenger_version)}
    tags |= {ctx.champion.version: ctx.champion.tags} if ctx.champion is not None else {}
    trained = trained_keys_of_versions(
        store, registry, name, tags, ctx.applications, ctx.outcomes, settings.entity_hash_key
    )
    return shadow_status(
        open_audit_store(settings),
        store,
        model=ctx.spec.name,
        challenger_version=ctx.challenger_version,
        champion_version=None if ctx.champion is None else ctx.champion.version,
        applications=ctx.applications,
        outcomes=ctx.outcomes,
        policy=effective_shadow_policy(ctx.spec.shadow, settings.promotion_min_shadow_rows),
        hash_key=settings.entity_hash_key,
        trained=trained,
    )


@task(name="announce-shadow-completed", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def announce_shadow_task(status: ShadowStatus, flow_run_id: str | None, settings: Settings) -> str | None:
    """Emit ``mlops.shadow.completed`` once per challenger version (None if sent before); it is
    counted as sent once the API has stored it (it triggers the promote deployment)."""
    store = make_store(settings)
    announcements = load_announcements(store, status.model_name)
    if status.challenger_version in announcements.announced:
        return None
    payload = {**status.model_dump(mode="json"), "model": status.model_name, "flow_run_id": flow_run_id}
    event_id = emit(
        EVENT_SHADOW_COMPLETED, model_resource(status.model_name), payload, name=status.model_name
    )
    confirm_delivered(EVENT_SHADOW_COMPLETED, event_id, timeout=settings.event_confirm_seconds)
    done = [*announcements.announced, status.challenger_version]
    save_announcements(store, announcements.model_copy(update={"announced": done}))
    return event_id


@task(name="save-monitor-state", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def save_monitor_state_task(state: MonitorState, settings: Settings) -> str:
    return save_state(make_store(settings), state)


@task(name="publish-drift-report", cache_policy=NO_CACHE)
def publish_drift_report_task(
    model: str,
    champion_version: int,
    reference_uri: str,
    run: MonitorRun,
    event: AlarmEvent | None,
    event_id: str | None,
    report_uri: str | None,
    shadow: ShadowStatus | None,
    last_event: EmittedEvent | None = None,
) -> None:
    markdown = summary_markdown(
        model=model,
        champion_version=champion_version,
        reference_uri=reference_uri,
        run=run,
        event=event,
        event_id=event_id,
        report_uri=report_uri,
        shadow=shadow,
        last_event=last_event,
    )
    create_markdown_artifact(
        key=f"drift-summary-{model}", markdown=markdown, description="Drift monitor summary"
    )
    if not run.windows:
        return  # keep the last table: a quiet day leaves the latest statistics in place
    rows = [{"window": w.window_id, **row} for w in run.windows for row in w.report.to_table()]
    create_table_artifact(
        key=f"drift-report-{model}",
        table=rows,
        description=f"Drift statistics per feature, score and performance for {model} v{champion_version}",
    )
