"""Tasks of the training stage: gather, split, train, score, evaluate, gate, log, register, announce.

Each task is a thin named wrapper over plain functions in ``mlops/``. Reads (object store,
registry lookups, events) retry; writes that would duplicate on a retry (the MLflow run, the
model version) do not.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from mlops import reports
from mlops.champion_loader import predict_scores
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, EVENT_MODEL_REGISTERED, model_resource
from mlops.contracts import Contract, load_contract
from mlops.errors import InputError
from mlops.evaluation import EvaluationReport, evaluate
from mlops.events import emit
from mlops.feedback import review_labels
from mlops.gates import (
    VERDICT_FAILED,
    DecisionRecord,
    ModelRef,
    UnscoredChampion,
    evaluate_gates,
    gate_table_markdown,
)
from mlops.labels import LINEAGE_COLUMNS, LabelledSet, gather_labelled
from mlops.lineage import (
    DECISION_RECORD_ARTIFACT,
    LINEAGE_ARTIFACT,
    TAG_DECISION_RECORD_ID,
    TAG_DECISION_RECORD_URI,
    TAG_VERDICT,
    GitState,
    Lineage,
    git_state,
    installed_packages,
)
from mlops.model_spec import ModelSpec, decision_policy_hash, load_model_spec, model_spec_hash
from mlops.registry import (
    DatasetLog,
    LoggedRun,
    TrainingRunLog,
    frame_digest,
    make_registry,
    refuse_identical,
)
from mlops.reports import plot_calibration, plot_feature_importance, plot_pr, plot_roc
from mlops.settings import PROJECT_ROOT, Settings
from mlops.storage import make_store
from mlops.training import (
    EVALUATION_CUTOFF_PARAM,
    TrainedModel,
    TrainingMatrix,
    TrainSplit,
    empty_features,
    rows_from_cutoff,
    spec_matrix,
    time_split,
    train_spec_on,
)
from tasks.retry import retry_unless_bad_input

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SpecBundle:
    """A resolved model spec with its two contracts."""

    spec: ModelSpec
    applications: Contract
    outcomes: Contract


#: The way out when the champion cannot score the evaluation rows (said with the failed gate).
UNSCORED_CHAMPION_REMEDY = (
    "the champion needs columns the labelled rows no longer hold as it was trained on them: restore "
    "them in the applications contract, or roll back to a champion trained on the current columns "
    "(mlops rollback --to VERSION)"
)


@dataclass(frozen=True)
class ChampionScores:
    """The current champion, scored through the registry on the evaluation rows.

    ``scores`` is None when it could not score them (``unscored`` says why): the candidate is
    then gated with no comparison, and non-inferiority fails closed."""

    version: int
    run_id: str
    scores: FloatArray | None
    unscored: UnscoredChampion | None = None
    #: Evaluation rows at or after the champion's own evaluation cutoff (None: all rows). Rows
    #: before it may be rows the champion trained on, which would flatter it in the comparison.
    comparable: npt.NDArray[np.bool_] | None = None
    champion_cutoff: str | None = None

    def comparison_note(self) -> str:
        return (
            f"those at or after champion v{self.version}'s own evaluation cutoff {self.champion_cutoff} "
            "(older rows may be rows it was trained on)"
        )

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.unscored is None):
            raise ValueError("a champion has either scores or the reason it has none")


@dataclass(frozen=True)
class Registered:
    version: int
    run_id: str
    alias: str | None
    decision_record: DecisionRecord
    decision_record_uri: str


@dataclass(frozen=True)
class RunEnvironment:
    """What a training run records that no data decides: the code's git state, installed packages."""

    git: GitState
    packages: list[str]


@task(name="prepare-run-environment", cache_policy=NO_CACHE)
def prepare_environment_task(spec: ModelSpec, settings: Settings) -> RunEnvironment:
    """Git state and installed packages for the lineage, and a warm MLflow tracking store.

    The flow submits this first, so it runs beside gathering the data (training waits for it):
    MLflow's imports, tracking store and experiment are caches the logging steps fill anyway
    (several seconds in a fresh process). A warm-up that fails is only logged: the step that
    needs the registry reports (and retries) it.
    """
    environment = RunEnvironment(git=git_state(PROJECT_ROOT), packages=installed_packages())
    try:
        make_registry(settings).warm_up(spec.name)
    except Exception as exc:  # a cache warm-up: the real call surfaces (and retries) the error
        get_run_logger().warning("warm-up of MLflow failed (%s); continuing", exc)
    return environment


@task(name="prepare-run-reports", cache_policy=NO_CACHE)
def prepare_reports_task() -> None:
    """matplotlib's import (~0.5 s), ahead of the plots.

    The flow submits this as training starts. Before training, the MLflow warm-up already takes
    the core gathering leaves free; after training, this would compete with the evaluation for
    the GIL. (MLflow's map of installed packages, once warmed here too, is no longer built at
    all: see :func:`mlops.pyfunc_model.pinned_requirement_checks`.)
    """
    try:
        reports.warm_up()
    except Exception as exc:  # a cache warm-up: the real call surfaces the error
        get_run_logger().warning("warm-up of matplotlib failed (%s); continuing", exc)


@task(name="load-model-spec", cache_policy=NO_CACHE)
def load_model_spec_task(model: str, settings: Settings) -> SpecBundle:
    spec = load_model_spec(model, contracts_dir=settings.contracts_dir)
    return SpecBundle(
        spec=spec,
        applications=load_contract(settings.contracts_dir, spec.applications_contract),
        outcomes=load_contract(settings.contracts_dir, spec.outcomes_contract),
    )


@task(
    name="gather-labelled-rows",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def gather_labelled_task(
    bundle: SpecBundle, settings: Settings, extra_labelled: pd.DataFrame | None = None
) -> LabelledSet:
    return gather_labelled(
        make_store(settings), bundle.spec, bundle.applications, bundle.outcomes, extra_labelled=extra_labelled
    )


@task(name="split-train-evaluation", cache_policy=NO_CACHE)
def split_task(labelled: LabelledSet, bundle: SpecBundle) -> TrainSplit:
    split = time_split(
        labelled.frame,
        newest_fraction=bundle.spec.evaluation.newest_fraction,
        timestamp_column=bundle.applications.timestamp_column,
        id_column=bundle.applications.id_column,
        min_evaluation_rows=bundle.spec.evaluation.min_rows,
        target=bundle.spec.target_column,
    )
    if split.review_rows_held_out:
        get_run_logger().info(
            "%d review-labelled rows are newer than the evaluation cutoff %s: evaluated on observed "
            "outcomes only, they train in a later run",
            split.review_rows_held_out,
            split.cutoff,
        )
    return split


@task(name="digest-datasets", cache_policy=NO_CACHE)
def digest_datasets_task(split: TrainSplit) -> dict[str, str]:
    """Content digests of the training and evaluation rows (``mlflow.data``), by context.

    They depend on the rows only, and sha256 over column buffers runs without the GIL, so
    the flow submits it once both models have scored the evaluation rows, beside the metrics,
    gates and plots, which are Python holding the GIL: beside training or scoring, whose
    XGBoost threads wait for each other, it took a core they use."""
    return {"training": frame_digest(split.train), "evaluation": frame_digest(split.evaluation)}


@task(name="prepare-training-matrix", cache_policy=NO_CACHE)
def prepare_training_matrix_task(train: pd.DataFrame, spec: ModelSpec) -> TrainingMatrix:
    """Fit the feature schema on the training rows, prepare the features, build the ``DMatrix``."""
    empty = empty_features(train, spec.feature_list)
    if empty:
        get_run_logger().warning(
            "feature(s) %s have no value in the %d training rows: the model cannot use them "
            "(a column the contract added lately?); they are kept, all missing",
            empty,
            len(train),
        )
    return spec_matrix(train, spec)


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate_task(ready: TrainingMatrix, spec: ModelSpec) -> TrainedModel:
    """Train the spec's booster on the prepared matrix (deterministic: same rows, same model)."""
    return train_spec_on(ready, spec)


@task(
    name="check-not-a-copy",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def check_not_a_copy_task(spec: ModelSpec, candidate: TrainedModel, settings: Settings) -> None:
    """Refuse a candidate identical to the champion or the challenger (IdenticalModel)."""
    refuse_identical(make_registry(settings), spec.name, candidate.fingerprint(), model_spec_hash(spec))


@task(
    name="score-champion",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def score_champion_task(
    spec: ModelSpec, evaluation: pd.DataFrame, settings: Settings, timestamp_column: str | None = None
) -> ChampionScores | None:
    """Load ``models:/<name>@champion`` through the registry and score the same evaluation rows.

    A champion that cannot score them (e.g. a feature column the labelled rows no longer hold)
    comes back without scores and with the reason: the candidate's non-inferiority gate then
    fails closed and it is registered as a failed version with its decision record."""
    registry = make_registry(settings)
    version = registry.get_alias_version(spec.name, ALIAS_CHAMPION)
    if version is None:
        return None
    model = registry.load_version(spec.name, version)  # the version resolved above, files checked
    run_id = registry.version_run_id(spec.name, version)
    raw = evaluation.drop(columns=[c for c in LINEAGE_COLUMNS if c in evaluation.columns])
    try:
        scores = predict_scores(model, raw)  # our pyfunc's own scoring, without MLflow's per-value check
    except InputError as exc:  # e.g. a feature column the labelled rows no longer have
        unscored = UnscoredChampion(reason=exc.message, remedy=UNSCORED_CHAMPION_REMEDY)
        return ChampionScores(version=version, run_id=run_id, scores=None, unscored=unscored)
    cutoff = registry.run_params(run_id).get(EVALUATION_CUTOFF_PARAM)
    comparable = rows_from_cutoff(evaluation, timestamp_column, cutoff)
    if comparable is not None and comparable.all():
        comparable = None
    if comparable is not None:
        get_run_logger().warning(
            "%d of %d evaluation rows are older than champion v%d's evaluation cutoff %s (it may have "
            "trained on them): the comparison with it uses the other %d",
            int((~comparable).sum()),
            len(comparable),
            version,
            cutoff,
            int(comparable.sum()),
        )
    return ChampionScores(
        version=version,
        run_id=run_id,
        scores=scores,
        comparable=comparable,
        champion_cutoff=None if comparable is None else cutoff,
    )


def _evaluate(spec: ModelSpec, evaluation: pd.DataFrame, scores: FloatArray) -> EvaluationReport:
    return evaluate(
        evaluation[spec.target_column].to_numpy(),
        scores,
        threshold=spec.decision_policy.threshold,
        slices_frame=evaluation,
        slices=list(spec.slices),
        sensitive=spec.sensitive_column,
        min_group_rows=spec.gates.fairness_min_group_rows,
    )


@task(name="score-candidate", cache_policy=NO_CACHE)
def score_candidate_task(evaluation: pd.DataFrame, candidate: TrainedModel) -> FloatArray:
    """The candidate's scores on the evaluation rows (XGBoost on every core)."""
    return candidate.predict(evaluation)


@task(name="evaluate-candidate", cache_policy=NO_CACHE)
def evaluate_task(
    spec: ModelSpec, evaluation: pd.DataFrame, scores: FloatArray, champion: ChampionScores | None
) -> tuple[EvaluationReport, EvaluationReport | None]:
    """Reports of the candidate and (if any, with scores) the champion on the same rows."""
    champion_report = (
        None if champion is None or champion.scores is None else _evaluate(spec, evaluation, champion.scores)
    )
    return _evaluate(spec, evaluation, scores), champion_report


@task(name="check-gates", cache_policy=NO_CACHE)
def check_gates_task(
    spec: ModelSpec,
    report: EvaluationReport,
    scores: FloatArray,
    evaluation: pd.DataFrame,
    champion: ChampionScores | None,
    labelled: LabelledSet,
    candidate: TrainedModel,
    flow_run_id: str | None,
) -> DecisionRecord:
    snapshots = {f"applications:{i}": sha for i, sha in enumerate(labelled.summary.application_snapshots)}
    snapshots.update({f"outcomes:{i}": sha for i, sha in enumerate(labelled.summary.outcome_snapshots)})
    champion_ref = (
        None
        if champion is None
        else {"version": champion.version, "run_id": champion.run_id, "alias": ALIAS_CHAMPION}
    )
    return evaluate_gates(
        spec.gates,
        report,
        scores,
        evaluation[spec.target_column].to_numpy(),
        None if champion is None else champion.scores,
        champion_ref,
        model_name=spec.name,
        candidate_ref={"model_fingerprint": candidate.fingerprint()},
        snapshot_hashes=snapshots,
        flow_run_id=flow_run_id,
        actor="train flow",
        champion_unscored=None if champion is None else champion.unscored,
        comparison_rows=None if champion is None else champion.comparable,
        comparison_note="" if champion is None else champion.comparison_note(),
    )


def _metric_key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-./ ]+", "_", text).strip("_")


def run_metrics(report: EvaluationReport, champion_report: EvaluationReport | None) -> dict[str, float]:
    """Flat MLflow metrics: candidate metrics, champion's as ``champion_*``, slice metrics."""
    out = {k: float(v) for k, v in report.metrics.model_dump().items()}
    out.update(approval_rate=report.approval_rate, label_rate=report.label_rate)
    if champion_report is not None:
        out.update({f"champion_{k}": float(v) for k, v in champion_report.metrics.model_dump().items()})
    for group in report.slices:
        if group.metrics is not None:
            out[_metric_key(f"slice/{group.slice}/{group.group}/auc")] = group.metrics.auc
    if report.fairness is not None and report.fairness.approval_rate_gap is not None:
        out["fairness_approval_rate_gap"] = report.fairness.approval_rate_gap
    return out


def write_plots(
    folder: Path,
    y: Any,
    scores: FloatArray,
    report: EvaluationReport,
    champion: ChampionScores | None,
    champion_report: EvaluationReport | None,
    candidate: TrainedModel,
) -> list[Path]:
    by_model: dict[str, Any] = {"challenger": scores}
    curves = {"challenger": report.calibration}
    if champion is not None and champion.scores is not None and champion_report is not None:
        by_model["champion"] = champion.scores
        curves["champion"] = champion_report.calibration
    gains = candidate.booster.get_score(importance_type="gain")
    importance = {k: float(v) for k, v in gains.items() if isinstance(v, int | float)}
    paths = [
        plot_roc(y, by_model, folder / "roc.png"),
        plot_pr(y, by_model, folder / "pr.png"),
        plot_calibration(curves, folder / "calibration.png"),
    ]
    if importance:
        paths.append(plot_feature_importance(importance, folder / "feature_importance.png"))
    return paths


@task(name="build-lineage", cache_policy=NO_CACHE)
def build_lineage_task(
    bundle: SpecBundle,
    labelled: LabelledSet,
    split: TrainSplit,
    candidate: TrainedModel,
    champion: ChampionScores | None,
    flow_run_id: str | None,
    environment: RunEnvironment | None = None,
) -> Lineage:
    summary = labelled.summary
    if environment is None:
        environment = RunEnvironment(git=git_state(PROJECT_ROOT), packages=installed_packages())
    return Lineage(
        application_snapshots=summary.application_snapshots,
        outcome_snapshots=summary.outcome_snapshots,
        applications_contract=bundle.applications.name,
        applications_contract_versions=summary.application_contract_versions or [bundle.applications.version],
        outcomes_contract=bundle.outcomes.name,
        outcomes_contract_versions=summary.outcome_contract_versions or [bundle.outcomes.version],
        git=environment.git,
        model_spec=bundle.spec.name,
        model_spec_sha256=model_spec_hash(bundle.spec),
        decision_policy_sha256=decision_policy_hash(bundle.spec.decision_policy),
        packages=environment.packages,
        seed=bundle.spec.seed,
        flow_run_id=flow_run_id,
        compared_with_champion=None if champion is None else champion.version,
        model_fingerprint=candidate.fingerprint(),
        training_rows=len(split.train),
        evaluation_rows=len(split.evaluation),
        review_labels=review_labels(labelled.frame, bundle.spec.target_column),
    )


@task(name="log-training-run", cache_policy=NO_CACHE)
def log_training_run_task(
    bundle: SpecBundle,
    settings: Settings,
    labelled: LabelledSet,
    split: TrainSplit,
    candidate: TrainedModel,
    scores: FloatArray,
    report: EvaluationReport,
    champion: ChampionScores | None,
    champion_report: EvaluationReport | None,
    record: DecisionRecord,
    lineage: Lineage,
    digests: dict[str, str] | None = None,
) -> LoggedRun:
    """One MLflow run: params, metrics, plots, datasets, lineage, evaluation report, the model.

    ``digests``: the datasets' content digests by context, if already computed."""
    spec = bundle.spec
    digests = digests or {}
    store = make_store(settings)
    y = split.evaluation[spec.target_column].to_numpy()
    source = store.uri(f"snapshots/{bundle.applications.name}")
    with tempfile.TemporaryDirectory(prefix="mlops-train-plots-") as tmp:
        plots = write_plots(Path(tmp), y, scores, report, champion, champion_report, candidate)
        content = TrainingRunLog(
            model_name=spec.name,
            run_name=f"train-{spec.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}",
            booster_json=candidate.booster_bytes(),
            schema_json=candidate.schema.to_json(),
            params={
                **spec.model_dump(mode="json", exclude={"description", "slices", "gates"}),
                "data": {
                    "training_rows": len(split.train),
                    "evaluation_rows": len(split.evaluation),
                    "review_rows_held_out": split.review_rows_held_out,
                },
                EVALUATION_CUTOFF_PARAM: split.cutoff,
            },
            metrics=run_metrics(report, champion_report),
            tags={**lineage.tags(), TAG_VERDICT: record.verdict, TAG_DECISION_RECORD_ID: record.record_id},
            json_artifacts={
                LINEAGE_ARTIFACT: lineage.model_dump(mode="json"),
                "labelled_data.json": labelled.summary.model_dump(mode="json"),
                "model_spec.json": spec.model_dump(mode="json"),
                "evaluation_report.json": report.model_dump(mode="json"),
                "feature_schema.json": candidate.schema.model_dump(mode="json"),
            },
            files=plots,
            passthrough_columns=[c.name for c in bundle.applications.columns],
            datasets=[
                DatasetLog(
                    split.train,
                    f"{spec.name}-training",
                    "training",
                    source,
                    spec.target_column,
                    digests.get("training"),
                ),
                DatasetLog(
                    split.evaluation,
                    f"{spec.name}-evaluation",
                    "evaluation",
                    source,
                    spec.target_column,
                    digests.get("evaluation"),
                ),
            ],
        )
        return make_registry(settings).log_training_run(content)


@task(name="register-candidate", cache_policy=NO_CACHE)
def register_candidate_task(
    spec: ModelSpec, settings: Settings, logged: LoggedRun, record: DecisionRecord, lineage: Lineage
) -> Registered:
    """New model version with lineage tags; passing -> alias ``challenger``, failing -> verdict tags, no alias.

    The decision record is completed with the version and written to the run before any alias moves.
    """
    registry = make_registry(settings)
    version = registry.register_version(spec.name, logged, lineage.tags())
    passed = record.verdict != VERDICT_FAILED
    alias = ALIAS_CHALLENGER if passed else None
    final = record.model_copy(
        update={
            "candidate": ModelRef(
                run_id=logged.run_id,
                version=str(version),
                alias=alias,
                model_uri=f"models:/{spec.name}/{version}",
            )
        }
    )
    uri = registry.log_run_json(logged.run_id, final.model_dump(mode="json"), DECISION_RECORD_ARTIFACT)
    if passed:
        registry.set_version_tags(
            spec.name,
            version,
            {
                TAG_VERDICT: record.verdict,
                TAG_DECISION_RECORD_ID: record.record_id,
                TAG_DECISION_RECORD_URI: uri,
            },
        )
        registry.set_alias(spec.name, ALIAS_CHALLENGER, version)
    else:
        registry.mark_failed(
            spec.name,
            version,
            verdict=record.verdict,
            failures=list(record.failures),
            record_id=record.record_id,
        )
        registry.set_version_tags(spec.name, version, {TAG_DECISION_RECORD_URI: uri})
    return Registered(
        version=version, run_id=logged.run_id, alias=alias, decision_record=final, decision_record_uri=uri
    )


@task(name="publish-decision-record", cache_policy=NO_CACHE)
def publish_decision_record_task(registered: Registered) -> None:
    record = registered.decision_record
    lines = [
        gate_table_markdown(record),
        "",
        f"Registered as version **{registered.version}**"
        + (f" with alias `{registered.alias}`" if registered.alias else " with no alias (failed gates)"),
        f"; MLflow run `{registered.run_id}`; decision record `{registered.decision_record_uri}`.",
    ]
    create_markdown_artifact(
        key=f"decision-record-{record.model_name}",
        markdown="\n".join(lines),
        description=f"Gate decision for {record.model_name} version {registered.version}",
    )


@task(name="emit-model-registered", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def emit_registered_task(
    spec: ModelSpec, registered: Registered, champion: ChampionScores | None, flow_run_id: str | None
) -> str | None:
    record = registered.decision_record
    payload = {
        "model": spec.name,
        "version": registered.version,
        "verdict": record.verdict,
        "alias": registered.alias,
        "run_id": registered.run_id,
        "champion_version": None if champion is None else champion.version,
        # False: the champion could not score the evaluation rows (non-inferiority failed closed)
        "champion_scored": None if champion is None else champion.unscored is None,
        # Rows the champion comparison used when not all (rows it may have trained on left out)
        "comparison_rows": record.data.comparison_rows,
        "decision_record_id": record.record_id,
        "decision_record_uri": registered.decision_record_uri,
        "failures": list(record.failures),
        "flow_run_id": flow_run_id,
    }
    return emit(EVENT_MODEL_REGISTERED, model_resource(spec.name), payload)
