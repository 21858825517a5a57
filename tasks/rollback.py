"""Tasks of rollback: move the champion back (recorded in the audit chain), report, announce."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlops.audit import open_audit_store
from mlops.constants import EVENT_MODEL_ROLLED_BACK, model_resource
from mlops.events import emit
from mlops.registry import make_registry
from mlops.rollback import RollbackResult, rollback
from mlops.settings import Settings


@task(name="roll-back-champion", cache_policy=NO_CACHE)
def rollback_task(
    model: str, by: str, reason: str, to_version: int | None, settings: Settings, flow_run_id: str | None
) -> RollbackResult:
    return rollback(
        make_registry(settings),
        open_audit_store(settings),
        model,
        by=by,
        reason=reason,
        to_version=to_version,
        flow_run_id=flow_run_id,
    )


@task(name="publish-rollback-record", cache_policy=NO_CACHE)
def publish_rollback_record_task(result: RollbackResult) -> None:
    r = result.record
    markdown = "\n".join(
        [
            f"# `{r.model_name}`: champion rolled back v{r.from_version} -> v{r.to_version}",
            "",
            "| field | value |",
            "|---|---|",
            f"| by | {r.by} |",
            f"| at | {r.at.isoformat()} |",
            f"| reason | {r.reason} |",
            f"| target from | {r.target_source} |",
            f"| audit record | `{result.audit_record_id}` (seq {result.audit_seq}) |",
            f"| next rollback target | {result.next_target or 'none'} |",
        ]
    )
    create_markdown_artifact(key=f"rollback-{r.model_name}", markdown=markdown, description="Rollback record")


@task(name="emit-model-rolled-back", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def emit_rolled_back_task(result: RollbackResult) -> str | None:
    r = result.record
    payload = {
        "model": r.model_name,
        "from_version": r.from_version,
        "to_version": r.to_version,
        "version": r.to_version,
        "by": r.by,
        "reason": r.reason,
        "target_source": r.target_source,
        "rollback_record_id": r.record_id,
        "audit_record_id": result.audit_record_id,
        "flow_run_id": r.flow_run_id,
    }
    return emit(EVENT_MODEL_ROLLED_BACK, model_resource(r.model_name), payload, name=r.model_name)
