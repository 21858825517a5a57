"""Events and deployments against a real Prefect server.

One ``prefect server start`` for the module (own PREFECT_HOME, free port on 127.0.0.1):

* a drift event really travels through the server's automation to a retrain run: the retrain
  flow is served in a background process with the trigger taken verbatim from prefect.yaml and
  ``PREFECT_RUNNER_POLL_FREQUENCY=1``; within a bounded wait a flow run of that deployment
  appears with the parameters templated from the event, runs, and completes as a *skipped*
  retrain (the served process's MLOPS_HOME holds no data);
* ``prefect deploy --all --no-prompt`` accepts prefect.yaml as it is: every deployment, its
  pull step, schedule, concurrency limit and automation exist on the server afterwards.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlops.constants import EVENT_DRIFT_DETECTED, model_resource
from mlops.settings import PROJECT_ROOT
from tests.monitoring_helpers import wait_until
from tests.prefect_server import (
    PREFECT,
    LocalServer,
    emit_to,
    flow_runs_of,
    prefect_server,
    serve_retrain,
    wait_for_deployment,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "credit-risk"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as running:
        yield running


def test_a_drift_event_starts_the_retrain_deployment_through_its_automation(
    server: LocalServer, tmp_path: Path
) -> None:
    home = tmp_path / "mlops-home"
    home.mkdir()
    with serve_retrain(server, tmp_path, name="trigger-test", env={"MLOPS_HOME": str(home)}):
        deployment_id = wait_for_deployment(server, "trigger-test")
        assert flow_runs_of(server, deployment_id) == []

        event_id, occurred = emit_to(
            server,
            EVENT_DRIFT_DETECTED,
            model_resource(MODEL),
            {"model": MODEL, "severity": "act", "window": "2025-01-08", "reason": "2 features drifting"},
        )
        started = time.monotonic()
        runs = wait_until(lambda: flow_runs_of(server, deployment_id), timeout=60)
        assert len(runs) == 1, "no flow run of the retrain deployment within 60 s of the event"
        print(f"event -> flow run created in {time.monotonic() - started:.1f} s")
        [run] = runs
        assert run.parameters["model"] == MODEL
        assert run.parameters["severity"] == "act"
        assert run.parameters["event_id"] == event_id
        assert run.parameters["event"] == EVENT_DRIFT_DETECTED
        assert run.parameters["reason"] == f"{EVENT_DRIFT_DETECTED}: 2 features drifting"

        def finished() -> object:
            with server.client() as client:
                state = client.read_flow_run(run.id).state
            return state if state is not None and state.is_final() else None

        state = wait_until(finished, timeout=90)
        assert state is not None and state.is_completed(), state
        with server.client() as client:
            result = client.read_flow_run(run.id)
        assert result.state is not None and result.state.is_completed()
        assert occurred <= result.created  # the run came from the event, not before it


def test_prefect_deploy_accepts_the_file_and_creates_every_deployment_and_trigger(
    server: LocalServer,
) -> None:
    env = server.env()
    subprocess.run(
        [PREFECT, "work-pool", "create", "mlops-process", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    done = subprocess.run(
        [PREFECT, "deploy", "--all", "--no-prompt"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    declared = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]
    with server.client() as client:
        for spec in declared:
            [deployment] = [d for d in client.read_deployments() if d.name == spec["name"]]
            assert deployment.entrypoint == spec["entrypoint"]
            assert deployment.work_pool_name == "mlops-process"
            [step] = deployment.pull_steps or []
            directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
            assert Path(directory) == PROJECT_ROOT  # the build step's output, resolved at deploy time
            automations = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
            assert [a.name for a in automations] == [t["name"] for t in spec.get("triggers", [])]
            if "concurrency_limit" in spec:
                limit = deployment.global_concurrency_limit
                assert limit is not None and limit.limit == spec["concurrency_limit"]["limit"]
                assert deployment.concurrency_options is not None
                assert (
                    deployment.concurrency_options.collision_strategy
                    == spec["concurrency_limit"]["collision_strategy"]
                )
            assert len(deployment.schedules) == len(spec.get("schedules", []))
