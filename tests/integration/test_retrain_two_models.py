"""Review reproduction: the retrain deployment's concurrency limit spans every model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.constants import EVENT_DRIFT_DETECTED, model_resource
from tests.integration.test_event_trigger import server  # noqa: F401 (fixture)
from tests.monitoring_helpers import wait_until
from tests.prefect_server import (
    LocalServer,
    emit_to,
    flow_runs_of,
    serve_from_prefect_yaml,
    wait_for_flow_deployment,
)
from tests.training_helpers import write_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_drift_events_of_two_models_each_get_their_retrain(server: LocalServer, tmp_path: Path) -> None:  # noqa: F811
    """The trigger keeps one bucket per model (for_each), so two models drifting the same
    morning must each get a retrain; neither may be cancelled because the other is running."""
    home, specs = tmp_path / "home", tmp_path / "specs"
    home.mkdir()
    write_spec(specs, name="credit-risk")
    write_spec(specs, name="credit-risk-sme")
    env = {"MLOPS_HOME": str(home), "MLOPS_MODEL_SPECS_DIR": str(specs)}
    with serve_from_prefect_yaml(server, tmp_path, ["retrain"], env=env):
        deployment_id = wait_for_flow_deployment(server, "retrain", "retrain")
        for model in ("credit-risk", "credit-risk-sme"):
            emit_to(
                server,
                EVENT_DRIFT_DETECTED,
                model_resource(model),
                {"model": model, "severity": "act", "window": "w", "reason": "2 features drifting"},
            )

        def final_runs() -> list[object] | None:
            runs = flow_runs_of(server, deployment_id)
            done = len(runs) == 2 and all(r.state is not None and r.state.is_final() for r in runs)
            return runs if done else None

        runs = wait_until(final_runs, timeout=120)
        assert runs, "two retrain runs did not both finish within 120 s"
        states = {r.parameters["model"]: r.state.type.value for r in runs}
        assert states == {"credit-risk": "COMPLETED", "credit-risk-sme": "COMPLETED"}, states
