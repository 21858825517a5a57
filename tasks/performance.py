"""Tasks of measured performance: join outcomes to predictions, publish the table."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlops.audit import open_audit_store
from mlops.contracts import Contract
from mlops.performance import PerformanceReport, join_outcomes
from mlops.settings import Settings
from mlops.storage import make_store
from tasks.retry import retry_unless_bad_input


@task(
    name="join-outcomes-to-predictions",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def join_outcomes_task(
    outcomes: Contract, applications: Contract, model_name: str, settings: Settings
) -> PerformanceReport:
    """Idempotent: matches are upserted by prediction record id (see :mod:`mlops.performance`)."""
    engine = open_audit_store(settings)
    try:
        return join_outcomes(
            engine,
            make_store(settings),
            outcomes,
            hash_key=settings.entity_hash_key,
            model_name=model_name,
            applications=applications,
        )
    finally:
        engine.dispose()


def performance_artifact_key(model_name: str) -> str:
    return f"performance-{model_name.lower().replace('_', '-')}"


@task(name="publish-performance", cache_policy=NO_CACHE)
def publish_performance_task(report: PerformanceReport) -> None:
    key = performance_artifact_key(report.model_name or "all")
    create_table_artifact(
        key=key,
        table=report.table() or [{"model_name": report.model_name, "n": 0}],
        description=f"Measured performance per version and role ({report.outcomes_dataset})",
    )
    create_markdown_artifact(
        key=f"{key}-summary", markdown=report.markdown(), description="Outcomes joined to predictions"
    )
