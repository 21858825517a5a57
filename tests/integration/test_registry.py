"""Training against a real MLflow registry (pre-migrated SQLite per test): lineage tags, failed
candidates, the bootstrap promotion, and the pyfunc loaded by alias in a fresh process."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.contracts import load_contract
from mlops.errors import InputError, WorkRefused
from mlops.lineage import (
    DECISION_RECORD_ARTIFACT,
    LINEAGE_TAGS,
    TAG_APPLICATION_SNAPSHOTS,
    TAG_APPLICATIONS_CONTRACT,
    TAG_APPLICATIONS_CONTRACT_VERSION,
    TAG_COMPARED_WITH,
    TAG_DECISION_RECORD_ID,
    TAG_DECISION_RECORD_URI,
    TAG_EVALUATION_ROWS,
    TAG_FLOW_RUN_ID,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_MODEL_SPEC,
    TAG_MODEL_SPEC_SHA256,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_OUTCOMES_CONTRACT,
    TAG_OUTCOMES_CONTRACT_VERSION,
    TAG_PACKAGES_SHA256,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_KIND,
    TAG_PROMOTION_RECORD_URI,
    TAG_SEED,
    TAG_TRAINING_ROWS,
    TAG_VERDICT,
    TAG_VERDICT_FAILURES,
    installed_packages,
    packages_sha256,
)
from mlops.model_spec import load_model_spec, model_spec_hash
from mlops.promotion import bootstrap_champion, read_registry_state
from mlops.pyfunc_model import MODEL_CODE, MODEL_CODE_FILE, pip_requirements
from mlops.registry import MlflowRegistry, RegistryUnavailable, make_registry
from mlops.settings import PROJECT_ROOT
from tests.training_helpers import (
    fresh_process_scores,
    ingest_settings_history,
    run_train_tasks,
    simulated_day,
    write_spec,
)

pytestmark = pytest.mark.integration

MODEL = "credit-risk"


@pytest.fixture
def history(mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Four simulated days of validated applications and outcomes; a small single-thread spec."""
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path / "specs"))
    write_spec(tmp_path / "specs")
    return ingest_settings_history(days=4)


@pytest.fixture
def registry(history: dict[str, list[str]]) -> MlflowRegistry:
    return make_registry()


def _git_head() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_candidate_is_registered_with_lineage_and_decision_record(
    history: dict[str, list[str]], registry: MlflowRegistry
) -> None:
    registered = run_train_tasks(MODEL)
    assert registered.version == 1 and registered.alias == ALIAS_CHALLENGER
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == 1
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) is None

    tags = registry.version_tags(MODEL, 1)
    assert set(LINEAGE_TAGS) <= set(tags)
    assert tags[TAG_APPLICATION_SNAPSHOTS] == ",".join(history["applications"])
    assert tags[TAG_OUTCOME_SNAPSHOTS] == ",".join(history["outcomes"])
    assert tags[TAG_APPLICATIONS_CONTRACT] == "credit_applications"
    assert tags[TAG_OUTCOMES_CONTRACT] == "credit_outcomes"
    versions = {
        name: load_contract(PROJECT_ROOT / "data_contracts", name).version
        for name in ("credit_applications", "credit_outcomes")
    }
    assert tags[TAG_APPLICATIONS_CONTRACT_VERSION] == versions["credit_applications"]
    assert tags[TAG_OUTCOMES_CONTRACT_VERSION] == versions["credit_outcomes"]
    assert tags[TAG_GIT_COMMIT] == _git_head() and tags[TAG_GIT_DIRTY] in ("true", "false")
    assert tags[TAG_MODEL_SPEC] == MODEL
    assert tags[TAG_MODEL_SPEC_SHA256] == model_spec_hash(load_model_spec(MODEL))
    assert tags[TAG_PACKAGES_SHA256] == packages_sha256(installed_packages())
    assert tags[TAG_SEED] == "42"
    assert tags[TAG_FLOW_RUN_ID] == "none" and tags[TAG_COMPARED_WITH] == "none"
    assert int(tags[TAG_TRAINING_ROWS]) + int(tags[TAG_EVALUATION_ROWS]) == 2000
    assert tags[TAG_VERDICT] == "bootstrap"  # no champion yet: passes, to be promoted by bootstrap
    assert tags[TAG_DECISION_RECORD_URI].endswith(DECISION_RECORD_ARTIFACT)

    record = registry.read_run_json(registered.run_id, DECISION_RECORD_ARTIFACT)
    assert record["record_id"] == tags[TAG_DECISION_RECORD_ID]
    assert record["verdict"] == "bootstrap" and record["baseline"] is None
    assert record["candidate"]["version"] == "1" and record["candidate"]["run_id"] == registered.run_id
    assert record["data"]["n_rows"] == int(tags[TAG_EVALUATION_ROWS])

    run = registry.client.get_run(registered.run_id)
    assert run.data.tags[TAG_MODEL_SPEC_SHA256] == tags[TAG_MODEL_SPEC_SHA256]
    assert run.data.params["seed"] == "42" and run.data.params["xgboost.tree_method"] == "hist"
    assert run.data.metrics["auc"] == pytest.approx(record["candidate_metrics"]["auc"])
    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert set(contexts) == {"training", "evaluation"} and all(d.digest for d in contexts.values())
    plots = {Path(a.path).name for a in registry.client.list_artifacts(registered.run_id, "plots")}
    assert {"roc.png", "pr.png", "calibration.png", "feature_importance.png"} <= plots


def test_failed_candidate_is_kept_with_its_verdict_and_no_alias(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    first = run_train_tasks(MODEL)
    write_spec(tmp_path / "specs", gates={"floors": {"auc": {"min": 0.999}}})
    failed = run_train_tasks(MODEL)
    assert failed.version == 2 and failed.alias is None
    tags = registry.version_tags(MODEL, 2)
    assert tags[TAG_VERDICT] == "failed" and "auc" in tags[TAG_VERDICT_FAILURES]
    assert set(LINEAGE_TAGS) <= set(tags)
    assert registry.aliases_of(MODEL, 2) == []
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == first.version
    record = registry.read_run_json(failed.run_id, DECISION_RECORD_ARTIFACT)
    assert record["verdict"] == "failed" and record["failures"]

    # A failed version can never become champion, even if an alias is pointed at it by hand.
    registry.set_alias(MODEL, ALIAS_CHALLENGER, 2)
    with pytest.raises(WorkRefused, match="gate verdict 'failed'"):
        bootstrap_champion(registry, MODEL, approved_by="alice")
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) is None


def test_bootstrap_promotion_then_refusal_with_a_champion(registry: MlflowRegistry) -> None:
    with pytest.raises(WorkRefused, match=r"no model named 'credit-risk' is registered .*none yet"):
        bootstrap_champion(registry, MODEL, approved_by="alice")
    run_train_tasks(MODEL)
    # A mistyped name (no model spec either) is bad input, named as such with the models the
    # registry holds, not "no challenger".
    with pytest.raises(
        InputError,
        match=r"no model named 'credit-risc' .*registered: 'credit-risk'\), and there is no model spec",
    ):
        bootstrap_champion(registry, "credit-risc", approved_by="alice")
    with pytest.raises(InputError, match=r"no model named 'credit-risc'"):
        read_registry_state(registry, "credit-risc")
    assert read_registry_state(registry, MODEL).challenger == 1
    result = bootstrap_champion(registry, MODEL, approved_by="alice")
    assert result.promoted and result.champion_version == 1
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
    tags = registry.version_tags(MODEL, 1)
    assert tags[TAG_PROMOTION_KIND] == "bootstrap" and tags[TAG_PROMOTED_BY] == "alice"
    run_id = registry.version_run_id(MODEL, 1)
    artifact = tags[TAG_PROMOTION_RECORD_URI].split("/artifacts/", 1)[1]
    promotion = registry.read_run_json(run_id, artifact)
    assert (
        promotion["approved_by"] == "alice"
        and promotion["decision_record_id"] == tags[TAG_DECISION_RECORD_ID]
    )

    # The next candidate is compared with the champion on the same rows.
    second = run_train_tasks(MODEL)
    tags2 = registry.version_tags(MODEL, second.version)
    assert tags2[TAG_COMPARED_WITH] == "1"
    record = registry.read_run_json(second.run_id, DECISION_RECORD_ARTIFACT)
    assert record["baseline"]["version"] == "1" and record["champion_metrics"] is not None
    assert record["data"]["champion_scores_sha256"]

    assert second.alias == ALIAS_CHALLENGER  # same data and seed: the same model, non-inferior
    with pytest.raises(WorkRefused, match=r"already has a champion \(version 1\).*shadow"):
        bootstrap_champion(registry, MODEL, approved_by="alice")
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == second.version

    # A crash after the champion alias moved but before the challenger alias was cleared.
    registry.set_alias(MODEL, ALIAS_CHALLENGER, 1)
    again = bootstrap_champion(registry, MODEL, approved_by="alice")
    assert not again.promoted and again.champion_version == 1
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None


def _mlflow_warnings(call: Callable[[], object]) -> list[str]:
    """Messages MLflow's loggers emit at WARNING or above while ``call`` runs."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        call()
    finally:
        logger.removeHandler(handler)
    return seen


def test_pyfunc_round_trip_by_alias_in_a_fresh_process(
    registry: MlflowRegistry, mlflow_uri: str, tmp_path: Path
) -> None:
    logging_warned = _mlflow_warnings(lambda: run_train_tasks(MODEL))
    assert not [w for w in logging_warned if "CloudPickle" in w], logging_warned  # logged as code
    bootstrap_champion(registry, MODEL, approved_by="alice")
    raw, _ = simulated_day(30, 40)
    csv = tmp_path / "raw.csv"
    raw.to_csv(csv, index=False)  # raw columns as a user has them: text, ints, floats, extra columns

    scores = fresh_process_scores(mlflow_uri, f"models:/{MODEL}@{ALIAS_CHAMPION}", csv, tmp_path)
    model = registry.load_model(MODEL, ALIAS_CHAMPION)
    warned = _mlflow_warnings(lambda: model.predict(pd.read_csv(csv)))
    in_process = model.predict(pd.read_csv(csv))
    assert len(scores) == 40 and np.array_equal(np.asarray(scores), in_process)
    # The raw rows' other columns (id, timestamp, sensitive attribute) are optional inputs the
    # model ignores, so scoring raw rows as they arrive draws no "extra inputs" warning.
    assert not [w for w in warned if "extra inputs" in w], warned
    optional = {c.name for c in model.metadata.get_input_schema().inputs if not c.required}
    assert {"application_id", "applied_at", "gender"} <= optional
    assert all(0.0 < s < 1.0 for s in scores)

    # The product code the model needs travels with it, and its requirements are pinned.
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{MODEL}@{ALIAS_CHAMPION}", dst_path=str(tmp_path / "m"))
    )
    assert (local / "code" / "mlops" / "features.py").is_file()
    # The model is its code and two JSON artifacts: nothing pickled to load.
    assert (local / MODEL_CODE_FILE).read_text() == MODEL_CODE
    assert not list(local.rglob("*.pkl"))
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements == pip_requirements()  # exactly our pins, in order
    assert any(r.startswith("xgboost==") for r in requirements)


def test_missing_feature_column_is_a_clear_error(registry: MlflowRegistry) -> None:
    run_train_tasks(MODEL)
    raw, _ = simulated_day(30, 5)
    model = registry.load_model(MODEL, ALIAS_CHALLENGER)
    with pytest.raises(Exception, match=r"missing inputs \['credit_score'\]"):
        model.predict(raw.drop(columns=["credit_score"]))
    with pytest.raises(Exception, match=r"lacks feature column\(s\) \['credit_score'\]"):
        model.unwrap_python_model().score(raw.drop(columns=["credit_score"]))


def test_an_unreadable_registry_is_an_error_not_no_champion(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model that does not exist is "no alias"; a registry that cannot be read is an error,
    # not "no champion" (which would send training and promotion down the bootstrap path).
    assert MlflowRegistry(mlflow_uri).get_alias_version("no-such-model", ALIAS_CHAMPION) is None
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = MlflowRegistry("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(RegistryUnavailable, match="could not be read") as caught:
        dead.get_alias_version(MODEL, ALIAS_CHAMPION)
    assert caught.value.hint and "MLOPS_MLFLOW_TRACKING_URI" in caught.value.hint
    with pytest.raises(RegistryUnavailable):
        bootstrap_champion(dead, MODEL, approved_by="test")


def test_two_versions_loaded_at_once_each_get_their_own_model(
    mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models logged as code meet in MLflow's one process-wide set_model slot while loading;
    load_pyfunc serialises that step, so concurrent loads never swap models."""
    import threading
    import time

    import mlflow
    import mlflow.models
    import xgboost as xgb

    from mlops.features import FeatureColumn, FeatureSchema
    from mlops.pyfunc_model import load_pyfunc, log_pyfunc_model

    mlflow.set_tracking_uri(mlflow_uri)
    schema = FeatureSchema(columns=(FeatureColumn(name="x", kind="numeric"),))
    rows = pd.DataFrame({"x": np.arange(100, dtype=float)})
    local: list[str] = []
    for flip in (False, True):
        labels = (rows["x"] > 50) if flip else (rows["x"] < 50)
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(rows, label=labels.astype(int)), 3)
        with mlflow.start_run():
            info = log_pyfunc_model(bytes(booster.save_raw("json")), schema)
        local.append(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / str(flip))))
    probe = pd.DataFrame({"x": [10.0]})
    expected = [float(load_pyfunc(uri).unwrap_python_model().score(probe)[0]) for uri in local]
    assert expected[0] != expected[1]
    # Widen the window between a model file's set_model and MLflow reading the slot (a real
    # race, rarely hit): without the lock, each load below then gets the other's model.
    real_set_model = mlflow.models.set_model

    def slow_set_model(model: object) -> None:
        real_set_model(model)
        time.sleep(0.05)

    monkeypatch.setattr(mlflow.models, "set_model", slow_set_model)
    wrong = 0
    for _ in range(5):
        loaded: list[object] = [None, None]
        start = threading.Barrier(2)

        def load(i: int, out: list[object] = loaded, barrier: threading.Barrier = start) -> None:
            barrier.wait()
            out[i] = load_pyfunc(local[i]).unwrap_python_model()

        threads = [threading.Thread(target=load, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [float(m.score(probe)[0]) for m in loaded]  # type: ignore[attr-defined]
        wrong += loaded[0] is loaded[1] or got != expected
    assert wrong == 0
    assert mlflow.models.model.__mlflow_model__ is None  # the slot keeps no model alive
