"""Tasks of the scoring stage: resolve and load models, validate the batch in chunks, score and
audit, report; and the tasks of ``reproduce``.

Reads (registry, object store) retry; the audit append does not (a retry would write the
chunk twice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlops.audit import open_audit_store, open_existing_audit_store
from mlops.constants import KIND_VALID
from mlops.contracts import Contract, load_contract
from mlops.errors import InputError
from mlops.gx_suite import GXRunner
from mlops.model_spec import ModelSpec, load_model_spec, model_spec_hash
from mlops.registry import make_registry
from mlops.reproduce import (
    POLICY_FROM_SPEC,
    POLICY_RECORDED,
    ReproduceResult,
    locate_snapshot,
    read_prediction_record,
    recorded_decision_policy,
    reproduce_from,
)
from mlops.scoring import (
    DECISION_APPROVE,
    DECISION_DECLINE,
    LoadedModel,
    ModelVersions,
    ScoringContext,
    ScoringModels,
    ScoringResult,
    Timings,
    audit_sink,
    check_share,
    load_model_version,
    record_scoring_batch,
    record_scoring_done,
    resolve_versions,
    score_frames,
    scoring_markdown,
    since_training_notes,
)
from mlops.scoring_input import BatchValidation, iter_batch_chunks, read_valid_snapshot, validate_in_chunks
from mlops.scoring_resume import (
    ResumePoint,
    check_resume_key,
    find_resume_point,
    interrupted_batch_errors,
    record_resumption,
    recorded_validation_time,
)
from mlops.settings import Settings
from mlops.storage import make_store, read_snapshot, snapshot_key
from tasks.retry import retry_unless_bad_input


@dataclass(frozen=True)
class ScoringPlan:
    """The resolved spec, its applications contract and the versions the aliases named."""

    spec: ModelSpec
    contract: Contract
    versions: ModelVersions


@task(
    name="resolve-models",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def resolve_models_task(model: str, settings: Settings) -> ScoringPlan:
    """Spec + contract, and champion/challenger resolved to exact versions (no champion: refuse)."""
    spec = load_model_spec(model, contracts_dir=settings.contracts_dir)
    contract = load_contract(settings.contracts_dir, spec.applications_contract)
    return ScoringPlan(
        spec=spec, contract=contract, versions=resolve_versions(make_registry(settings), model)
    )


@task(name="compare-with-training", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def since_training_task(
    plan: ScoringPlan, versions: ModelVersions, canary: bool, resumed: bool, settings: Settings
) -> list[str]:
    """Notes on what differs since the scoring versions were trained (their registry tags). A
    resumed batch decides under the policy recorded with it, so its policy is not compared."""
    registry = make_registry(settings)
    scoring = [v for v in (versions.champion, versions.challenger) if v is not None]
    deciding = [] if resumed else scoring if canary else [versions.champion]
    tags = {v: registry.version_tags(plan.spec.name, v) for v in scoring}
    return since_training_notes(plan.spec, plan.contract, tags, deciding)


@task(
    name="load-model-version",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def load_model_version_task(name: str, version: int, alias: str | None, settings: Settings) -> LoadedModel:
    return load_model_version(make_registry(settings), name, version, alias)


@task(
    name="validate-batch-chunks",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def validate_batch_chunks_task(
    source: str,
    contract: Contract,
    settings: Settings,
    run_name: str,
    chunk_rows: int,
    checked_at: datetime | None = None,
) -> BatchValidation:
    """Validate the batch chunk by chunk and store its valid rows as snapshots (idempotent);
    ``checked_at``: the validation time of the batch a retry or resume continues."""
    store = make_store(settings)
    store.check_access()  # a store that refuses the writes: said before validating
    chunks = iter_batch_chunks(
        source, chunk_rows, s3_endpoint_url=settings.s3_endpoint_url, text_columns=contract.text_columns
    )
    return validate_in_chunks(
        chunks,
        contract,
        GXRunner(),
        store,
        source=source,
        max_share=settings.max_quarantine_share,
        run_name=run_name,
        chunk_rows=chunk_rows,
        checked_at=checked_at,
    )


@task(
    name="find-validation-time",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def find_validation_time_task(
    model: str, batch_id: str, settings: Settings, resume: bool, source: str | None = None
) -> datetime | None:
    """When the batch this run may continue was first validated (None: a new batch, validated now)."""
    engine = open_audit_store(settings)
    try:
        return recorded_validation_time(
            engine, model_name=model, batch_id=batch_id, resume=resume, source=source
        )
    finally:
        engine.dispose()


@task(
    name="find-resume-point",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def find_resume_point_task(
    model: str, batch_id: str, snapshots: list[str], settings: Settings, resume: bool
) -> ResumePoint | None:
    """The unfinished batch this run continues (its own, on a re-run; another, with ``resume``)."""
    engine = open_audit_store(settings)
    try:
        point = find_resume_point(
            engine, model_name=model, batch_id=batch_id, snapshots=snapshots, resume=resume
        )
    finally:
        engine.dispose()
    if point is not None and not point.completed:
        check_resume_key(point, settings.entity_hash_key)
    return point


@task(name="score-and-audit", cache_policy=NO_CACHE)
def score_and_audit_task(
    plan: ScoringPlan,
    models: ScoringModels,
    validation: BatchValidation,
    settings: Settings,
    *,
    batch_id: str,
    canary_share: float,
    chunk_rows: int,
    result: ScoringResult,
    rescore: bool = False,
    resume_point: ResumePoint | None = None,
) -> ScoringResult:
    """Read each valid snapshot back (hash-checked), score it in chunks, append the audit records
    (refused before anything is scored if the model scored these rows before, unless ``rescore``).
    With ``resume_point``: only the rows the batch has no records for, under its recorded policy."""
    check_share(canary_share)
    ctx = ScoringContext(
        models=models,
        policy=plan.spec.decision_policy if resume_point is None else resume_point.policy,
        id_column=plan.contract.id_column,
        hash_key=settings.entity_hash_key,
        canary_share=canary_share,
    )
    engine = open_audit_store(settings)
    try:
        store = make_store(settings)
        timings = Timings()
        timings.merge(validation.timings)

        def frames() -> Iterator[tuple[str, pd.DataFrame]]:
            for ref in validation.snapshots:
                t = time.perf_counter()
                frame = read_valid_snapshot(store, plan.contract.name, ref.sha256)
                timings.add("read_snapshots", t)
                yield ref.sha256, frame

        claim: str | None
        if resume_point is None:
            claim = record_scoring_batch(
                engine,
                batch_id=batch_id,
                model_name=plan.spec.name,
                ctx=ctx,
                spec_sha256=model_spec_hash(plan.spec),
                snapshots=[ref.sha256 for ref in validation.snapshots],
                rescore=rescore,
                validated_at=validation.summary.checked_at,
                source=result.source,
            )
        else:
            resume_point = record_resumption(
                engine, resume_point, model_name=plan.spec.name, resumed_by=result.flow_run_id or "unknown"
            )
            claim = resume_point.claim
        before = resume_point.rows_written if resume_point is not None else {}
        already = sum(before.values())
        if resume_point is not None and resume_point.completed:  # finished by its own run meanwhile
            return result.model_copy(update={"rows_already_scored": already})
        with interrupted_batch_errors(batch_id, result.source):  # its batch record is written
            tally = score_frames(
                frames(),
                ctx,
                audit_sink(engine, batch_id, claim),
                chunk_rows=chunk_rows,
                timings=timings,
                rows_done=before,
            )
            record_scoring_done(
                engine,
                batch_id=batch_id,
                model_name=plan.spec.name,
                tally=tally,
                rows_written_before=already,
                claim=claim,
            )
    finally:
        engine.dispose()
    done = result.fill_from(tally)
    done.rows_already_scored = already
    done.timings_seconds = {k: round(v, 4) for k, v in timings.seconds.items()}
    return done


@task(name="publish-scoring-report", cache_policy=NO_CACHE)
def publish_scoring_report_task(result: ScoringResult) -> None:
    key = f"scoring-{result.model_name}"
    create_markdown_artifact(key=key, markdown=scoring_markdown(result), description="Batch scoring summary")
    if not result.accepted:
        return
    rows: list[dict[str, object]] = [
        {"measure": "rows scored", "value": result.rows_scored},
        {"measure": "approve", "value": result.decisions.get(DECISION_APPROVE, 0)},
        {"measure": "decline", "value": result.decisions.get(DECISION_DECLINE, 0)},
        {"measure": "routed to review", "value": result.routed_to_review},
        {"measure": "canary share realised", "value": round(result.canary_share_realised, 6)},
        {"measure": "shadow agreement", "value": result.shadow_agreement},
        {"measure": "shadow mean abs score diff", "value": result.shadow_mean_abs_score_diff},
    ]
    create_table_artifact(key=f"{key}-counts", table=rows, description=f"Scoring counts of {result.source}")


# --- reproduce ---------------------------------------------------------------------------


@task(
    name="reproduce-prediction", retries=1, retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE
)
def reproduce_prediction_task(prediction_id: str, settings: Settings) -> ReproduceResult:
    """Read the record, reload the exact version, read and check the input row, score again."""
    engine = open_existing_audit_store(settings)  # a mistyped MLOPS_HOME is named, not created
    try:
        record = read_prediction_record(engine, prediction_id)
        recorded_policy = recorded_decision_policy(engine, record["batch_id"])
    finally:
        engine.dispose()
    name, version = str(record["model_name"]), int(record["model_version"])
    spec = load_model_spec(name, contracts_dir=settings.contracts_dir)
    store = make_store(settings)
    dataset = locate_snapshot(store, str(record["input_snapshot"]), spec.applications_contract)
    snapshot = read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=str(record["input_snapshot"]))
    position = int(record["input_row"])
    if not 0 <= position < len(snapshot):
        raise InputError(
            f"record {prediction_id} points at row {position}; the snapshot has {len(snapshot)} rows"
        )
    row = snapshot.iloc[[position]].reset_index(drop=True)
    model = load_model_version(make_registry(settings), name, version, record["model_alias"])
    uri = store.uri(snapshot_key(KIND_VALID, dataset, str(record["input_snapshot"])))
    policy, source = (
        (spec.decision_policy, POLICY_FROM_SPEC)
        if recorded_policy is None
        else (recorded_policy, POLICY_RECORDED)
    )
    return reproduce_from(record, row, model, policy, snapshot_uri=uri, policy_source=source)
