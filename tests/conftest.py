"""Shared fixtures: an isolated MLOPS_HOME per test, one Prefect test harness and one
pre-migrated MLflow SQLite database per session (STYLE.md #13)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.constants import NO_TELEMETRY_ENV

# No network here: keep Prefect, GX and MLflow from phoning home (NO_TELEMETRY_ENV, below).
# The harness's server stores events every second (default 5 s): the monitor waits to read back
# each alarm it sends (mlops.events.confirm_delivered).
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "1")
# Set before any of them is imported.
for _name, _value in NO_TELEMETRY_ENV.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh embedded-profile home; settings read at run time pick it up."""
    home = tmp_path / "mlops-home"
    home.mkdir()
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_PROFILE", "embedded")
    for var in (
        "MLOPS_STORE_URL",
        "MLOPS_MLFLOW_TRACKING_URI",
        "MLOPS_AUDIT_DB_URL",
        "MLOPS_S3_ENDPOINT_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a real temporary server on SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Create the MLflow schema once; tests copy the file instead of migrating again."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(mlops_home: Path, _migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real MLflow tracking/registry store (SQLite, pre-migrated) private to this test."""
    db = mlops_home / "mlflow.db"
    shutil.copy(_migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server as a separate process on 127.0.0.1 (a real endpoint, not a mock)."""
    import subprocess
    import sys

    from tests.prefect_server import free_port, stop_process, wait_healthy

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/moto-api/", proc, 60, "moto server")
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def s3_bucket(s3_endpoint: str, mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; the object store of this test points at it."""
    import uuid

    from mlops.storage import s3_client
    from tests.helpers import S3_TEST_ENV

    for var, value in S3_TEST_ENV.items():
        monkeypatch.setenv(var, value)
    bucket = f"mlops-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("MLOPS_STORE_URL", f"s3://{bucket}/mlops")
    return bucket
