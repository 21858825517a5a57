"""A real ``mlflow server`` for tests, shaped like the production profile (docs/DESIGN.md):
a PostgreSQL backend store (a fresh database, dropped afterwards) and artifacts proxied by the
server to S3 (a bucket on moto's S3 server). Clients talk HTTP only: they need no database and
no S3 credentials, as on a worker host in production."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from mlops.constants import NO_TELEMETRY_ENV
from tests.helpers import S3_TEST_ENV
from tests.prefect_server import free_port, stop_process, wait_healthy


@dataclass(frozen=True)
class MlflowServer:
    url: str  # http://127.0.0.1:<port>
    bucket: str  # the S3 bucket the server writes artifacts to (prefix ``artifacts/``)
    database_url: str  # the backend store


@contextmanager
def fresh_database(pg_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``pg_url``; dropped on exit."""
    name = f"mlflow_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def mlflow_server(pg_url: str, s3_endpoint: str, log: Path) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` on 127.0.0.1 (PostgreSQL backend, S3 artifacts); stop it on exit."""
    import boto3

    bucket = f"mlflow-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, **_credentials()).create_bucket(Bucket=bucket)
    with fresh_database(pg_url) as database_url:
        port = free_port()
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            database_url,
            "--artifacts-destination",
            f"s3://{bucket}/artifacts",
        ]
        env = {**_base_env(), **S3_TEST_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
        with log.open("w") as out:
            # its own process group: stop_process ends the server and its uvicorn workers
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_healthy(f"{url}/health", proc, 120, "mlflow server")  # ~10 s: schema on PostgreSQL
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}:\n{log.read_text(errors='replace')[-3000:]}") from None
            yield MlflowServer(url=url, bucket=bucket, database_url=database_url)
        finally:
            stop_process(proc)


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_TEST_ENV["AWS_DEFAULT_REGION"],
    }


def _base_env() -> dict[str, str]:
    import os

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))},
        **NO_TELEMETRY_ENV,
    }
