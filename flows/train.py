"""train: labelled window -> time split -> train -> evaluate -> gates vs champion -> log + register."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.settings import flow_settings
from tasks.review import gather_review_feedback_task
from tasks.training import (
    build_lineage_task,
    check_gates_task,
    check_not_a_copy_task,
    digest_datasets_task,
    emit_registered_task,
    evaluate_task,
    gather_labelled_task,
    load_model_spec_task,
    log_training_run_task,
    prepare_environment_task,
    prepare_reports_task,
    prepare_training_matrix_task,
    publish_decision_record_task,
    register_candidate_task,
    score_candidate_task,
    score_champion_task,
    split_task,
    train_candidate_task,
)


class TrainResult(BaseModel):
    """What the train flow did; the CLI prints it as JSON (exit 1 when ``passed`` is False)."""

    model_name: str
    version: int
    run_id: str
    verdict: str
    passed: bool
    alias: str | None
    champion_version: int | None
    decision_record_id: str
    decision_record_uri: str
    failures: list[str]
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    # Rows the champion comparison used when not all evaluation rows (champion_metrics are on
    # all of them, its own training rows included): DecisionRecord.data.comparison_rows / _note.
    comparison_rows: int | None = None
    comparison_note: str | None = None
    training_rows: int
    evaluation_rows: int
    flow_run_id: str | None


@flow(name="train", log_prints=True)
def train(model: str = DEFAULT_MODEL_NAME) -> TrainResult:
    """Train a candidate for ``model`` (a spec in ``model_specs/``) and register it.

    Every candidate becomes a model version with lineage tags and a decision record. Passing
    candidates get the alias ``challenger``; failing ones keep no alias and are tagged with
    their verdict and failures. A champion that cannot score the evaluation rows (a feature
    column they no longer hold) is no comparison: non-inferiority fails closed, so the candidate
    is such a failed version. Emits ``mlops.model.registered`` either way.
    """
    settings = flow_settings()
    run_id = flow_run.get_id()
    bundle = load_model_spec_task(model, settings)
    # Runs in a worker thread beside gathering the data (git, packages, MLflow warm-up).
    environment = prepare_environment_task.submit(bundle.spec, settings)
    # The feedback loop: cases people resolved in review are labelled rows too.
    feedback = gather_review_feedback_task(
        bundle.applications, bundle.spec.target_column, bundle.spec.name, settings
    )
    labelled = gather_labelled_task(bundle, settings, extra_labelled=feedback)
    split = split_task(labelled, bundle)
    # Training starts once the MLflow warm-up is done: beside training it slowed training by
    # 1-3 s (bench_training at 1M rows, median of 3: 1.52x raw against 1.44x). matplotlib's
    # import (~0.5 s) then loads beside xgboost.train, which leaves the GIL free, and not
    # beside the feature preparation, which it slowed from 0.28 s to 0.72 s.
    ready = prepare_training_matrix_task(split.train, bundle.spec, wait_for=[environment])
    reporting = prepare_reports_task.submit(return_state=False)
    candidate = train_candidate_task(ready, bundle.spec)
    check_not_a_copy_task(bundle.spec, candidate, settings)  # same rows, spec, code: no new version
    scores = score_candidate_task(split.evaluation, candidate)
    champion = score_champion_task(
        bundle.spec, split.evaluation, settings, bundle.applications.timestamp_column
    )
    digests = digest_datasets_task.submit(split)  # the rows only; hashing frees the GIL
    report, champion_report = evaluate_task(bundle.spec, split.evaluation, scores, champion)
    record = check_gates_task(
        bundle.spec, report, scores, split.evaluation, champion, labelled, candidate, run_id
    )
    lineage = build_lineage_task(bundle, labelled, split, candidate, champion, run_id, environment.result())
    logged = log_training_run_task(
        bundle,
        settings,
        labelled,
        split,
        candidate,
        scores,
        report,
        champion,
        champion_report,
        record,
        lineage,
        digests.result(),
        wait_for=[reporting],
    )
    registered = register_candidate_task(bundle.spec, settings, logged, record, lineage)
    publish_decision_record_task(registered)
    emit_registered_task(bundle.spec, registered, champion, run_id)
    final = registered.decision_record
    print(
        f"{model}: version {registered.version} {final.verdict.upper()}"
        + (f" -> alias {registered.alias}" if registered.alias else " (no alias)")
        + f"; AUC {final.candidate_metrics.auc:.4f} on {len(split.evaluation)} evaluation rows"
        + (f" vs champion v{champion.version}" if champion else " (no champion yet)")
        + (
            f" (it could not score them: {champion.unscored.reason})"
            if champion is not None and champion.unscored is not None
            else ""
        )
    )
    return TrainResult(
        model_name=model,
        version=registered.version,
        run_id=registered.run_id,
        verdict=final.verdict,
        passed=final.passed,
        alias=registered.alias,
        champion_version=None if champion is None else champion.version,
        decision_record_id=final.record_id,
        decision_record_uri=registered.decision_record_uri,
        failures=list(final.failures),
        metrics=final.candidate_metrics.model_dump(),
        champion_metrics=None if final.champion_metrics is None else final.champion_metrics.model_dump(),
        comparison_rows=final.data.comparison_rows,
        comparison_note=final.data.comparison_note,
        training_rows=len(split.train),
        evaluation_rows=len(split.evaluation),
        flow_run_id=run_id,
    )
