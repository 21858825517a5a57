"""The Prefect API a command's flow will use is checked before the flow starts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mlops.cli import main

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    data: dict[str, str] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return data


@pytest.fixture
def batch(tmp_path: Path) -> str:
    path = tmp_path / "day.csv"
    path.write_text("application_id\n1\n")
    return str(path)


def test_a_prefect_api_url_where_nothing_answers_is_named_as_a_setting(
    mlops_home: Path, batch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was Prefect's `RuntimeError: Failed to reach API`, reported as an unexpected error
    (exit 3, "a bug or a problem of the environment") with a traceback."""
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{_closed_port()}/api"}):
        assert main(["validate", batch, "--json"]) == 2
    data = _last_json(capsys)
    assert "did not answer" in data["error"] and "PREFECT_API_URL" in data["hint"]
    assert not any(mlops_home.iterdir())  # nothing written


def test_the_production_profile_needs_a_prefect_server(
    mlops_home: Path, batch: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PREFECT_API_URL a command's flow ran on a temporary server: the monitor's drift
    alarm was stored and confirmed there and reached no retrain automation (reproduced: the
    event confirmed by the temporary server was never seen by the real one)."""
    for name, value in {
        "MLOPS_PROFILE": "production",
        "MLOPS_STORE_URL": "s3://bank-models/mlops",
        "MLOPS_S3_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "MLOPS_MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "MLOPS_AUDIT_DB_URL": "postgresql://audit@127.0.0.1:9/audit",
        "MLOPS_ENTITY_HASH_KEY": "a-secret-of-our-own",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "5")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["monitor", "--json"]) == 2
    data = _last_json(capsys)
    assert data["error"].startswith("the production profile needs PREFECT_API_URL")
    assert "PREFECT_API_URL" in data["hint"]
