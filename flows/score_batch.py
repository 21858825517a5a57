"""score_batch: validate a batch, let the champion decide, shadow (or canary) the challenger, audit."""

from __future__ import annotations

import uuid
from typing import Annotated

from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field

from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.scoring import (
    DEFAULT_CHUNK_ROWS,
    ModelVersions,
    ScoringModels,
    ScoringResult,
    check_rescore_resume,
)
from mlops.scoring_input import DEFAULT_VALIDATION_CHUNK_ROWS
from mlops.settings import flow_settings
from tasks.scoring import (
    find_resume_point_task,
    find_validation_time_task,
    load_model_version_task,
    publish_scoring_report_task,
    resolve_models_task,
    score_and_audit_task,
    since_training_task,
    validate_batch_chunks_task,
)
from tasks.validation import publish_validation_report_task


@flow(name="score-batch", log_prints=True)
def score_batch(
    source: str,
    model: str = DEFAULT_MODEL_NAME,
    canary_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
    chunk_rows: Annotated[int, Field(ge=1)] = DEFAULT_CHUNK_ROWS,
    validation_chunk_rows: Annotated[int, Field(ge=1)] = DEFAULT_VALIDATION_CHUNK_ROWS,
    rescore: bool = False,
    resume: bool = False,
) -> ScoringResult:
    """Score the batch at ``source`` (local path or s3:// URI, CSV or Parquet) with ``model``.

    The batch is validated against the model's applications contract (quarantine as in
    ``validate_data``); a rejected batch is not scored (``accepted`` False). The champion
    decides every row; the challenger, if any, shadow-scores every row and decides for the
    ``canary_share`` of entities whose keyed hash falls in the canary arm. Every prediction
    is an audit record; routed rows open review cases. Rows this model already scored are
    refused (BatchAlreadyScored, nothing written) unless ``rescore``. ``resume`` finishes the
    unfinished batch of these rows instead: only the rows it wrote no records for, under its
    versions, decision policy and canary share; a retry of this flow run does so by itself.
    """
    check_rescore_resume(rescore, resume)
    settings = flow_settings()
    plan = resolve_models_task(model, settings)
    run_id = flow_run.get_id()
    batch_id = run_id or uuid.uuid4().hex
    run_name = str(flow_run.get_name() or "score")
    # A retry or resume validates the source as of its batch's first validation (not_in_future).
    checked_at = find_validation_time_task(model, batch_id, settings, resume, source)
    validation = validate_batch_chunks_task(
        source, plan.contract, settings, run_name, validation_chunk_rows, checked_at
    )
    summary = validation.summary
    publish_validation_report_task(summary)
    versions = plan.versions
    result = ScoringResult(
        model_name=model,
        source=source,
        batch_id=batch_id,
        accepted=summary.accepted,
        rejection_reasons=summary.rejection_reasons,
        validation=summary,
        champion_version=versions.champion,
        challenger_version=versions.challenger,
        canary_share_requested=canary_share,
        canary_active=versions.challenger is not None and canary_share > 0.0,
        snapshots=[ref.sha256 for ref in validation.snapshots],
        chunk_rows=chunk_rows,
        flow_run_id=run_id,
    )
    if not summary.accepted:
        publish_scoring_report_task(result)
        print(
            f"{source}: REJECTED by contract {summary.contract} ("
            + "; ".join(summary.rejection_reasons)
            + ")"
        )
        return result
    point = find_resume_point_task(model, batch_id, result.snapshots, settings, resume)
    if point is not None:
        if point.canary_share != canary_share:
            print(
                f"canary share {canary_share:.2%} ignored: the batch was begun with {point.canary_share:.2%}"
            )
        batch_id, canary_share = point.batch_id, point.canary_share
        versions = ModelVersions(model, point.champion_version, point.challenger_version)
        result = result.model_copy(
            update={
                "batch_id": batch_id,
                "resumed": True,
                "champion_version": versions.champion,
                "challenger_version": versions.challenger,
                "canary_share_requested": canary_share,
                "canary_active": versions.challenger is not None and canary_share > 0.0,
            }
        )
        print(
            f"resuming batch {batch_id} (begun {point.began_at:%Y-%m-%d %H:%M:%S} UTC with "
            f"{model} v{versions.champion}): {point.rows_already_scored} rows already have records"
            + ("; it is complete, nothing to score" if point.completed else "")
        )
        if point.completed:
            result = result.model_copy(update={"rows_already_scored": point.rows_already_scored})
            publish_scoring_report_task(result)
            return result
    if canary_share > 0.0 and versions.challenger is None:
        print(
            f"{model} has no challenger: canary share {canary_share:.2%} ignored, the champion decides every row"
        )
    notes = since_training_task(plan, versions, canary_share > 0.0, point is not None, settings)
    for note in notes:
        print(f"note: {note}")
    result = result.model_copy(update={"notes": notes})
    champion = load_model_version_task(model, versions.champion, ALIAS_CHAMPION, settings)
    challenger = (
        load_model_version_task(model, versions.challenger, ALIAS_CHALLENGER, settings)
        if versions.challenger is not None
        else None
    )
    result = score_and_audit_task(
        plan,
        ScoringModels(champion=champion, challenger=challenger),
        validation,
        settings,
        batch_id=batch_id,
        canary_share=canary_share,
        chunk_rows=chunk_rows,
        result=result,
        rescore=rescore,
        resume_point=point,
    )
    publish_scoring_report_task(result)
    print(
        f"{source}: {result.rows_scored} rows scored by {model} v{versions.champion}"
        + (f" (shadow v{versions.challenger})" if versions.challenger else "")
        + f"; decisions {result.decisions}; {result.routed_to_review} routed to review"
        + (
            f"; canary {result.canary_rows} rows ({result.canary_share_realised:.2%})"
            if result.canary_active
            else ""
        )
        + f"; {result.audit_records_written} audit records"
    )
    return result
