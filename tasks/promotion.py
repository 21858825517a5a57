"""Tasks of the promotion stage (first form: the recorded bootstrap of the first champion)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlops.constants import EVENT_MODEL_PROMOTED, model_resource
from mlops.events import emit
from mlops.promotion import PromotionResult, bootstrap_champion
from mlops.registry import make_registry
from mlops.settings import Settings


@task(name="bootstrap-champion", cache_policy=NO_CACHE)
def bootstrap_champion_task(
    model: str, approved_by: str, settings: Settings, flow_run_id: str | None
) -> PromotionResult:
    return bootstrap_champion(
        make_registry(settings), model, approved_by=approved_by, flow_run_id=flow_run_id
    )


@task(name="publish-promotion-record", cache_policy=NO_CACHE)
def publish_promotion_record_task(result: PromotionResult) -> None:
    if result.record is None:
        markdown = f"# `{result.model_name}`: version {result.champion_version} already is champion\n"
    else:
        r = result.record
        markdown = "\n".join(
            [
                f"# `{r.model_name}`: version {r.version} is champion ({r.kind})",
                "",
                "| field | value |",
                "|---|---|",
                f"| approved by | {r.approved_by} |",
                f"| approved at | {r.approved_at.isoformat()} |",
                f"| previous champion | {r.previous_champion or 'none'} |",
                f"| gate verdict | {r.gate_verdict} |",
                f"| decision record | `{r.decision_record_id}` (`{r.decision_record_uri}`) |",
                f"| promotion record | `{result.record_uri}` |",
                "",
                r.reason,
            ]
        )
    create_markdown_artifact(
        key=f"promotion-{result.model_name}", markdown=markdown, description="Promotion record"
    )


@task(name="emit-model-promoted", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def emit_promoted_task(result: PromotionResult) -> str | None:
    if result.record is None:
        return None
    r = result.record
    payload = {
        "model": r.model_name,
        "version": r.version,
        "previous_champion": r.previous_champion,
        "kind": r.kind,
        "approved_by": r.approved_by,
        "promotion_record_id": r.record_id,
        "promotion_record_uri": result.record_uri,
        "decision_record_id": r.decision_record_id,
        "flow_run_id": r.flow_run_id,
    }
    return emit(EVENT_MODEL_PROMOTED, model_resource(r.model_name), payload)
