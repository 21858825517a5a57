"""A model version's files checked against what was registered with it (mlops.registry)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlops.errors import SettingsError, StorageIntegrityError
from mlops.lineage import TAG_MODEL_FILES_SHA256, TAG_MODEL_FINGERPRINT
from mlops.registry import MlflowRegistry, check_model_files, model_files_sha256

pytestmark = pytest.mark.unit


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The layout of a logged model: MLmodel, model code, its artifacts."""
    model = tmp_path / "model"
    (model / "artifacts").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "mlops_xgboost_model.py").write_text("set_model(...)\n")
    (model / "artifacts" / "booster.json").write_bytes(b'{"learner": {}}')
    (model / "artifacts" / "feature_schema.json").write_text('{"features": []}')
    return model


def test_any_changed_file_is_refused_and_download_metadata_is_not_a_file_of_the_model(folder: Path) -> None:
    tags = {TAG_MODEL_FILES_SHA256: model_files_sha256(folder)}
    check_model_files("model m version 1", folder, tags)
    (folder / "registered_model_meta").write_text(
        "model_name: m\nmodel_version: '1'\n"
    )  # MLflow's, on download
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"\0")
    check_model_files("model m version 1", folder, tags)

    (folder / "mlops_xgboost_model.py").write_text("set_model(Something_else())\n")
    with pytest.raises(
        StorageIntegrityError, match="model m version 1: its files in the artifact store hash to"
    ):
        check_model_files("model m version 1", folder, tags)


def test_a_version_from_before_the_files_digest_is_checked_by_its_fingerprint(
    folder: Path,
) -> None:
    booster, schema = folder / "artifacts" / "booster.json", folder / "artifacts" / "feature_schema.json"
    tags = {TAG_MODEL_FINGERPRINT: hashlib.sha256(booster.read_bytes() + schema.read_bytes()).hexdigest()}
    check_model_files("v", folder, tags)
    # No tag (deleted in the MLflow UI, say): nothing to check the files against, so refused;
    # it was only logged, and a swapped booster then scored under the version's name.
    with pytest.raises(StorageIntegrityError, match=r"v carries neither .* cannot be checked"):
        check_model_files("v", folder, {})
    booster.write_bytes(b'{"learner": {"changed": 1}}')
    with pytest.raises(StorageIntegrityError, match="hash to"):
        check_model_files("v", folder, tags)
    booster.unlink()
    with pytest.raises(StorageIntegrityError, match="lack the booster or feature schema"):
        check_model_files("v", folder, tags)


def test_files_kept_by_an_mlflow_server_are_a_settings_error_for_a_client_on_its_database(
    tmp_path: Path,
) -> None:
    """Versions and runs logged through an ``mlflow server --artifacts-destination`` keep
    ``mlflow-artifacts:`` URIs, which only a client of the server can read: a client on the
    registry's database URI is told to use the server, not shown MLflow's unexpected error."""
    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = registry.client
    experiment = client.create_experiment("m", artifact_location="mlflow-artifacts:/m")
    run = client.create_run(experiment)
    client.create_registered_model("m")
    client.create_model_version("m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    hint = "set MLOPS_MLFLOW_TRACKING_URI to the mlflow server's http:// URL"
    served = r"the files of model m version 1 are served by the MLflow server \(mlflow-artifacts:/m/"
    for load in (registry.load_version, registry.check_version_files):
        with pytest.raises(SettingsError, match=served) as info:
            load("m", 1)
        assert info.value.hint == hint and info.value.exit_code == 2
    with pytest.raises(SettingsError, match=rf"the artifacts of run {run.info.run_id} are served") as info:
        registry.read_run_json(run.info.run_id, "lineage.json")
    assert info.value.hint == hint
