"""No library phones home from a process the ``mlops`` command runs (no network here, and a
regulated team's model must not send usage data anywhere).

Each check runs in a fresh Python whose environment holds none of the switches and no CI marker
(MLflow turns its telemetry off by itself under pytest or CI, which would hide a missing switch).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlops.constants import NO_TELEMETRY_ENV
from mlops.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

# What MLflow and Prefect take as "running in CI or under a test": none may be left set.
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE")

_PROBE = """
import sys
if sys.argv[1] == "cli":
    from mlops.cli import _quiet_third_parties
    _quiet_third_parties()
import mlflow
from mlflow.telemetry import get_telemetry_client
from prefect._internal.analytics.enabled import is_telemetry_enabled
import os
print(get_telemetry_client() is None, not is_telemetry_enabled(), os.environ.get("GX_ANALYTICS_ENABLED"))
"""


def _probe(mode: str) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in NO_TELEMETRY_ENV and k not in _CI_MARKERS and k != "MLFLOW_ENABLE_TELEMETRY"
    }
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout.split()


def test_the_mlops_command_switches_off_mlflow_prefect_and_gx_telemetry() -> None:
    assert _probe("cli") == ["True", "True", "false"]


def test_without_the_switches_mlflow_and_prefect_would_send_telemetry() -> None:
    # The control: the probe sees telemetry on when nothing switches it off, so the check above
    # can fail (MLflow 3 starts a telemetry client at import unless MLFLOW_DISABLE_TELEMETRY=true).
    assert _probe("bare") == ["False", "False", "None"]
