"""The production profile end to end for training: snapshots on S3 (moto's server), MLflow as a
real ``mlflow server`` (PostgreSQL backend, artifacts proxied to S3), the audit URL on PostgreSQL.

The train tasks register a challenger through the server; a plain MLflow user in a fresh process,
with only the server's URL (no database, no S3 credentials, no product code), loads it by alias
and gets the same scores; the artifacts live in the server's bucket, not on the worker's disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from mlops.champion_loader import load_model_version
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.contracts import load_contract
from mlops.lineage import DECISION_RECORD_ARTIFACT, LINEAGE_TAGS
from mlops.promotion import bootstrap_champion
from mlops.pyfunc_model import pip_requirements
from mlops.registry import make_registry
from mlops.settings import get_settings
from mlops.storage import make_store
from tests.helpers import postgres_url
from tests.integration.test_registry import _fresh_process_scores
from tests.mlflow_server import S3_ENV, MlflowServer, mlflow_server
from tests.training_helpers import ingest_history, run_train_tasks, simulated_day, write_spec

pytestmark = pytest.mark.integration

MODEL = "credit-risk"


@pytest.fixture(scope="module")
def server(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with mlflow_server(postgres_url(), s3_endpoint, log) as running:
        yield running


@pytest.fixture
def production(
    server: MlflowServer, s3_bucket: str, mlops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MlflowServer:
    """The production profile: S3 store (``s3_bucket``), the MLflow server, PostgreSQL audit URL."""
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLOPS_AUDIT_DB_URL", postgres_url())
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", "a-test-secret-of-our-own")
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path / "specs"))
    write_spec(tmp_path / "specs")
    settings = get_settings()
    assert settings.profile == "production"
    ingest_history(
        make_store(settings),
        load_contract(settings.contracts_dir, "credit_applications"),
        load_contract(settings.contracts_dir, "credit_outcomes"),
        days=4,
        rows=500,
    )
    return server


def test_training_registers_through_the_server_and_a_plain_client_scores_by_alias(
    production: MlflowServer, mlops_home: Path, tmp_path: Path
) -> None:
    registered = run_train_tasks(MODEL)
    assert registered.alias == ALIAS_CHALLENGER

    registry = make_registry()
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == registered.version
    client = registry.client
    # The experiment stores its artifacts where the server says (proxied), not on this host.
    experiment = client.get_experiment_by_name(MODEL)
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    assert not (mlops_home / "mlartifacts").exists()
    version = client.get_model_version(MODEL, str(registered.version))
    assert set(LINEAGE_TAGS) <= set(version.tags), set(LINEAGE_TAGS) - set(version.tags)
    record = registry.read_run_json(registered.run_id, DECISION_RECORD_ARTIFACT)
    assert record["candidate"]["version"] == str(registered.version)

    # ... and they are in the server's bucket: the model files and the decision record.
    s3 = boto3.client(
        "s3",
        endpoint_url=get_settings().s3_endpoint_url,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=production.bucket, Prefix="artifacts/"
        )
        for obj in page.get("Contents", [])
    ]
    assert any(k.endswith("/booster.json") for k in keys), keys[:20]
    assert any(k.endswith(f"/{DECISION_RECORD_ARTIFACT}") for k in keys), keys[:20]
    requirements = next(k for k in keys if k.endswith("/requirements.txt"))
    body = s3.get_object(Bucket=production.bucket, Key=requirements)["Body"].read().decode()
    assert body.split() == pip_requirements()

    # A plain MLflow user: only the server's URL.
    raw, _ = simulated_day(30, 40)
    csv = tmp_path / "raw.csv"
    raw.to_csv(csv, index=False)
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLOPS_", "MLFLOW_"))}
    scores = _fresh_process_scores(
        production.url, f"models:/{MODEL}@{ALIAS_CHALLENGER}", csv, tmp_path, env=plain
    )
    in_process = registry.load_model(MODEL, ALIAS_CHALLENGER).predict(pd.read_csv(csv))
    assert len(scores) == 40 and np.array_equal(np.asarray(scores), in_process)

    # The first promotion (a recorded bootstrap) and the scoring loader, through the server too.
    bootstrap_champion(registry, MODEL, approved_by="alice")
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == registered.version
    champion = load_model_version(production.url, MODEL, registered.version)
    assert np.array_equal(np.asarray(champion.predict(pd.read_csv(csv))), in_process)
