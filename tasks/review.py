"""Tasks of the review stage: show a case, resolve it, gather review feedback for training."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from mlops import audit
from mlops.audit import open_audit_store
from mlops.contracts import Contract
from mlops.feedback import review_labelled_rows
from mlops.review_desk import (
    CaseView,
    case_markdown,
    case_view,
    resolution_markdown,
)
from mlops.settings import Settings
from mlops.storage import make_store
from tasks.retry import retry_unless_bad_input


def case_artifact_key(case_id: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes: a UUID fits."""
    return f"review-case-{case_id.lower()}"


@task(
    name="load-review-case",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def load_review_case_task(case_id: str, settings: Settings) -> CaseView:
    """The open case with its application id and input row, sensitive attributes withheld
    (refuses unknown or resolved cases)."""
    engine = open_audit_store(settings)
    try:
        return case_view(engine, make_store(settings), case_id, settings)
    finally:
        engine.dispose()


@task(name="publish-review-case", cache_policy=NO_CACHE)
def publish_review_case_task(view: CaseView) -> str:
    """The case as a Markdown artifact; returns the Markdown (also the form's description)."""
    text = case_markdown(view)
    create_markdown_artifact(
        key=case_artifact_key(view.case.case_id),
        markdown=text,
        description=f"Review case of {view.case.model_name} v{view.case.model_version}",
    )
    return text


@task(
    name="route-to-review",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def route_to_review_task(
    prediction_id: str, opened_by: str, reason: str, settings: Settings
) -> audit.ReviewCase:
    """Open a case on the prediction by hand (appends the ``review_opened`` record). A run
    retried after it opened the case (the same person and reason on record) reviews that case;
    any other case on the prediction is refused, as ``mlops review open`` refuses it."""
    engine = open_audit_store(settings)
    try:
        try:
            case = audit.get_case(engine, prediction_id)
        except audit.ReviewCaseNotFound:
            return audit.open_review_case(engine, prediction_id, reason, opened_by=opened_by)
        if audit.routed_by_hand(engine, case) != (opened_by, reason):
            return audit.open_review_case(engine, prediction_id, reason, opened_by=opened_by)  # refused
    finally:
        engine.dispose()
    get_run_logger().info(
        "prediction %s was routed to review by this request already: reviewing it", case.case_id
    )
    return case


@task(
    name="resolve-review-case",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def resolve_review_case_task(
    case_id: str, reviewer: str, decision: str, reason: str, settings: Settings
) -> audit.ReviewCase:
    """Resolve through the audit store (one transaction: case row + ``review`` audit record)."""
    engine = open_audit_store(settings)
    try:
        resolved = audit.resolve_case(
            engine, case_id, reviewer, decision, reason, allowed_reviewers=settings.allowed_reviewers()
        )
    finally:
        engine.dispose()
    create_markdown_artifact(
        key=case_artifact_key(case_id),
        markdown=resolution_markdown(resolved),
        description=f"Review case resolved by {reviewer}",
    )
    return resolved


@task(
    name="gather-review-feedback",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def gather_review_feedback_task(
    applications: Contract, target: str, model_name: str, settings: Settings
) -> pd.DataFrame:
    """Labelled rows from resolved reviews, in the shape of ``join_labels(extra_labelled=...)``."""
    engine = open_audit_store(settings)
    try:
        feedback = review_labelled_rows(
            engine,
            make_store(settings),
            applications,
            target=target,
            model_name=model_name,
            hash_key=settings.entity_hash_key,
        )
    finally:
        engine.dispose()
    summary = feedback.summary
    logger = get_run_logger()
    logger.info(
        "review feedback for %s: %d resolved case(s) -> %d labelled row(s) (%d positive, %d superseded)",
        model_name,
        summary.resolved_cases,
        summary.rows,
        summary.positives,
        summary.superseded_reviews,
    )
    for skipped in summary.skipped:
        logger.warning("review case %s gives no training row: %s", skipped.case_id, skipped.reason)
    return feedback.frame
