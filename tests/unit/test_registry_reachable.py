"""An MLflow server that is not there is named at once, not after MLflow's minutes of retries."""

from __future__ import annotations

import socket
import time

import pytest

from mlops.registry import MlflowRegistry, RegistryUnavailable

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_tracking_server_that_does_not_answer_is_named_before_mlflows_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow retries a refused connection 7 times with backoff (4 min 10 s for one lookup here;
    `mlops train` with a wrong MLOPS_MLFLOW_TRACKING_URI ran over 15 minutes without a word).
    With retries off (so this test is quick either way), the first call still has to raise our
    RegistryUnavailable naming the setting, not MLflow's own exception."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = MlflowRegistry(f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="nothing answered there") as caught:
        dead.ensure_experiment("credit-risk")  # the first call of every training run
    assert time.monotonic() - started < 10
    assert caught.value.hint and "MLOPS_MLFLOW_TRACKING_URI" in caught.value.hint
