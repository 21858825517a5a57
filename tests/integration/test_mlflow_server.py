"""The production profile end to end: snapshots on S3 (moto's server), MLflow as a real
``mlflow server`` (PostgreSQL backend, artifacts proxied to S3), the audit store on PostgreSQL.

Training registers a challenger through the server; a plain MLflow user in a fresh process, with
only the server's URL (no database, no S3 credentials, no product code), loads it by alias and
gets the same scores; the artifacts live in the server's bucket, not on the worker's disk.
Scoring a batch on S3 loads both models through the server, writes a chain that verifies, and a
prediction reproduces bit for bit. With MLflow on PostgreSQL directly (no server), the models go
to the object store's bucket, not to ``./mlruns`` on the worker that trained."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from flows.reproduce import reproduce
from flows.score_batch import score_batch
from mlops.audit import audit_records
from mlops.champion_loader import load_model_version
from mlops.cli import main
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.lineage import DECISION_RECORD_ARTIFACT, LINEAGE_TAGS
from mlops.promotion import bootstrap_champion
from mlops.pyfunc_model import pip_requirements
from mlops.registry import make_registry
from mlops.scoring import ROLE_SHADOW
from mlops.settings import Settings, get_settings
from mlops.storage import s3_client
from tests.helpers import postgres_url
from tests.mlflow_server import MlflowServer, fresh_database, mlflow_server
from tests.training_helpers import (
    fresh_process_scores,
    ingest_settings_history,
    run_train_tasks,
    simulated_day,
    write_spec,
)

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
    _production_history(monkeypatch, server.url, tmp_path / "specs")
    return server


def _production_history(monkeypatch: pytest.MonkeyPatch, tracking_uri: str, specs: Path) -> Settings:
    """Production-profile settings with MLflow at ``tracking_uri`` (the S3 store is the test's
    ``s3_bucket``), a small spec, and four ingested days of applications and outcomes."""
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLOPS_AUDIT_DB_URL", postgres_url())
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", "a-test-secret-of-our-own")
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(specs))
    write_spec(specs)
    ingest_settings_history(days=4)
    settings = get_settings()
    assert settings.profile == "production"
    return settings


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
    s3 = s3_client(get_settings().s3_endpoint_url)
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
    scores = fresh_process_scores(
        production.url, f"models:/{MODEL}@{ALIAS_CHALLENGER}", csv, tmp_path, env=plain
    )
    in_process = registry.load_model(MODEL, ALIAS_CHALLENGER).predict(pd.read_csv(csv))
    assert len(scores) == 40 and np.array_equal(np.asarray(scores), in_process)

    # The first promotion (a recorded bootstrap) and the scoring loader, through the server too.
    bootstrap_champion(registry, MODEL, approved_by="alice")
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == registered.version
    champion = load_model_version(production.url, MODEL, registered.version)
    assert np.array_equal(np.asarray(champion.predict(pd.read_csv(csv))), in_process)


@pytest.fixture
def audit_schema(production: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The production audit store in a fresh PostgreSQL schema (search_path in the URL); dropped after."""
    base = postgres_url()
    schema = f"audit_prod_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    monkeypatch.setenv("MLOPS_AUDIT_DB_URL", f"{base}?options=-csearch_path%3D{schema}")
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def test_scoring_in_the_production_profile_is_audited_and_reproducible(
    production: MlflowServer,
    audit_schema: str,
    s3_bucket: str,
    prefect_harness: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Score a CSV batch on S3 with models loaded through the MLflow server, the audit chain on
    PostgreSQL; the chain verifies and a prediction reproduces bit for bit (model version via
    the server, input row from its S3 snapshot)."""
    registry = make_registry()
    if registry.get_alias_version(MODEL, ALIAS_CHAMPION) is None:  # this test alone: a champion first
        run_train_tasks(MODEL)
        bootstrap_champion(registry, MODEL, approved_by="alice")
    champion = registry.get_alias_version(MODEL, ALIAS_CHAMPION)
    registered = run_train_tasks(MODEL)  # the challenger (the shadow)
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == registered.version != champion

    batch, _ = simulated_day(40, 120, seed=3)
    settings = get_settings()
    key = "batches/day40.csv"
    s3_client(settings.s3_endpoint_url).put_object(
        Bucket=s3_bucket, Key=key, Body=batch.to_csv(index=False).encode()
    )
    result = score_batch(source=f"s3://{s3_bucket}/{key}")
    assert result.accepted and result.rows_scored == 120
    assert result.audit_records_written == 240  # champion + shadow per row

    assert main(["audit", "verify", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert verified["records_checked"] == result.audit_records_written + 2  # + the batch records

    engine = sa.create_engine(settings.resolved_audit_db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_records.c.record_id, audit_records.c.score, audit_records.c.model_version)
            .where(audit_records.c.record_type == "prediction", audit_records.c.role == ROLE_SHADOW)
            .limit(1)
        ).all()
    engine.dispose()
    [(record_id, score, model_version)] = rows
    again = reproduce(prediction_id=str(record_id))
    assert again.reproduced and again.score_recomputed == score
    assert again.model_uri == f"models:/{MODEL}/{model_version}" and int(model_version) == registered.version


def test_a_tracking_database_keeps_the_models_beside_the_snapshots_on_s3(
    s3_bucket: str, mlops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow on PostgreSQL directly (no server): the experiments we create keep their models on
    the object store's S3 bucket, not in ``./mlruns`` on the disk of the worker that trained."""
    monkeypatch.chdir(tmp_path)
    with fresh_database(postgres_url()) as database_url:
        monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
        settings = _production_history(monkeypatch, database_url, tmp_path / "specs")
        registered = run_train_tasks(MODEL)
        registry = make_registry()
        experiment = registry.client.get_experiment_by_name(MODEL)
        assert experiment is not None
        assert experiment.artifact_location == f"s3://{s3_bucket}/mlops/mlflow-artifacts/{MODEL}"
        assert not (tmp_path / "mlruns").exists() and not (mlops_home / "mlartifacts").exists()
        keys = [
            obj["Key"]
            for obj in s3_client(settings.s3_endpoint_url)
            .list_objects_v2(Bucket=s3_bucket, Prefix="mlops/mlflow-artifacts/")
            .get("Contents", [])
        ]
        assert any(k.endswith("/booster.json") for k in keys), keys[:20]

        raw, _ = simulated_day(30, 40)
        csv = tmp_path / "raw.csv"
        raw.to_csv(csv, index=False)
        in_process = registry.load_model(MODEL, ALIAS_CHALLENGER).predict(pd.read_csv(csv))
        # A plain MLflow user with the database and S3 (the endpoint and keys, as any client of it).
        plain = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
        plain["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url or ""
        scores = fresh_process_scores(
            database_url, f"models:/{MODEL}@{ALIAS_CHALLENGER}", csv, tmp_path, env=plain
        )
        assert registered.alias == ALIAS_CHALLENGER
        assert len(scores) == 40 and np.array_equal(np.asarray(scores), in_process)
