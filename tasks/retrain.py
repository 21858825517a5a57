"""Tasks of event-triggered retraining: plan (cooldown, budget, idempotency), record, report.

Heavy modules (model spec, registry, object store) are imported inside the tasks: this module
is imported when a triggered retrain starts, and the run shows Running only after that.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from mlops.retrain import (
    AttemptStatus,
    RetrainAttempt,
    RetrainDecision,
    RetrainPolicy,
    data_key,
    decide,
    finish_attempt,
    load_retrain_state,
    shadowing_challenger,
    start_attempt,
)
from mlops.settings import Settings
from tasks.retry import retry_unless_bad_input


class RetrainPlan(BaseModel):
    decision: RetrainDecision
    attempt: RetrainAttempt | None


@task(
    name="plan-retrain",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def plan_retrain_task(
    model: str,
    severity: str,
    event_id: str | None,
    force: bool,
    policy: RetrainPolicy,
    settings: Settings,
    flow_run_id: str | None,
) -> RetrainPlan:
    """Decide; when the retrain goes ahead, record the attempt before any training starts."""
    from mlops.catalog import list_snapshots
    from mlops.model_spec import load_model_spec, model_spec_hash
    from mlops.storage import make_store

    spec = load_model_spec(model, contracts_dir=settings.contracts_dir)
    store = make_store(settings)
    datasets = [spec.applications_contract, spec.outcomes_contract]
    key = data_key(store, model, model_spec_hash(spec), datasets)
    empty = [d for d in datasets if not list_snapshots(store, d)]
    if empty:
        reason = f"no validated snapshots of {', '.join(empty)} to train on"
        return RetrainPlan(decision=RetrainDecision(run=False, reason=reason, key=key), attempt=None)
    state = load_retrain_state(store, model)
    decision = decide(state, policy, key=key, severity=severity, force=force)
    if decision.run and not force:
        shadowing = shadowing_challenger(spec, state, settings)
        if shadowing is not None:
            decision = decide(state, policy, key=key, severity=severity, force=force, shadowing=shadowing)
    if not decision.run:
        return RetrainPlan(decision=decision, attempt=None)
    attempt = start_attempt(
        store, model, decision, severity=severity, event_id=event_id, flow_run_id=flow_run_id
    )
    return RetrainPlan(decision=decision, attempt=attempt)


@task(name="finish-retrain", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def finish_retrain_task(
    model: str,
    attempt: RetrainAttempt,
    status: AttemptStatus,
    settings: Settings,
    version: int | None = None,
    verdict: str | None = None,
    error: str | None = None,
) -> RetrainAttempt:
    from mlops.storage import make_store

    return finish_attempt(
        make_store(settings), model, attempt, status=status, version=version, verdict=verdict, error=error
    )


@task(name="tag-trigger-event", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def tag_trigger_task(
    model: str, version: int, event_id: str | None, event: str | None, settings: Settings
) -> None:
    """Name the event that started this retrain on the new version (the promotion dossier reads it)."""
    from mlops.lineage import NONE_VALUE
    from mlops.promotion import TAG_TRIGGER_EVENT, TAG_TRIGGER_EVENT_ID
    from mlops.registry import make_registry

    tags = {TAG_TRIGGER_EVENT_ID: event_id or NONE_VALUE, TAG_TRIGGER_EVENT: event or NONE_VALUE}
    make_registry(settings).set_version_tags(model, version, tags)


@task(name="publish-retrain-summary", cache_policy=NO_CACHE)
def publish_retrain_summary_task(model: str, markdown: str) -> None:
    create_markdown_artifact(key=f"retrain-{model}", markdown=markdown, description="Retrain decision")
