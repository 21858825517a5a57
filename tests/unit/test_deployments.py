"""prefect.yaml: every entrypoint loads, and every key is one Prefect 3.9 knows.

Prefect ignores unknown keys in prefect.yaml (its models use ``extra="ignore"``), so a
misspelled ``concurrency_limit`` or ``for_each`` would silently do nothing. These tests
validate each section with Prefect's own models and refuse keys those models do not declare.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.cli.deploy._models import (
    ConcurrencyLimitSpec,
    DeploymentConfig,
    PrefectYamlModel,
    RawScheduleConfig,
    WorkPoolConfig,
)
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.utilities.templating import find_placeholders
from pydantic import BaseModel, TypeAdapter

from mlops.constants import (
    EVENT_DRIFT_DETECTED,
    EVENT_PERFORMANCE_DEGRADED,
    EVENT_SHADOW_COMPLETED,
    NO_TELEMETRY_ENV,
    QUIET_MLFLOW_CONSOLE_ENV,
    model_resource,
)
from mlops.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
TRIGGERS: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
POOL = "mlops-process"


def _config() -> dict[str, Any]:
    data = yaml.safe_load(PREFECT_YAML.read_text())
    assert isinstance(data, dict)
    return data


def _deployments() -> list[dict[str, Any]]:
    return list(_config()["deployments"])


def _by_name(name: str) -> dict[str, Any]:
    [found] = [d for d in _deployments() if d["name"] == name]
    return found


def _known_keys(model: type[BaseModel]) -> set[str]:
    keys = set(model.model_fields)
    keys |= {f.alias for f in model.model_fields.values() if f.alias}
    return keys


def _unknown(data: dict[str, Any], model: type[BaseModel]) -> set[str]:
    return set(data) - _known_keys(model)


def _flow(entrypoint: str) -> Flow[Any, Any]:
    # No placeholder flow: an import error must fail the test, not hide behind a stand-in.
    return load_flow_from_entrypoint(str(PROJECT_ROOT / entrypoint), use_placeholder_flow=False)


def test_the_file_parses_with_prefects_model_and_has_no_unknown_top_level_keys() -> None:
    data = _config()
    PrefectYamlModel.model_validate(data)
    assert not _unknown(data, PrefectYamlModel)
    names = [d["name"] for d in data["deployments"]]
    assert len(names) == len(set(names)), "deployment names must be unique"


def test_every_deployment_uses_only_keys_prefect_knows() -> None:
    for deployment in _deployments():
        name = deployment["name"]
        assert not _unknown(deployment, DeploymentConfig), name
        DeploymentConfig.model_validate(deployment)
        assert not _unknown(deployment["work_pool"], WorkPoolConfig), name
        limit = deployment.get("concurrency_limit")
        if isinstance(limit, dict):
            assert not _unknown(limit, ConcurrencyLimitSpec), name
            ConcurrencyLimitStrategy(limit["collision_strategy"])
        for schedule in deployment.get("schedules") or []:
            RawScheduleConfig.model_validate(schedule)  # extra="forbid": unknown keys fail


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_every_entrypoint_loads_on_the_process_pool_and_its_parameters_exist(
    deployment: dict[str, Any],
) -> None:
    flow = _flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    assert deployment["work_pool"]["name"] == POOL
    accepted = set(inspect.signature(flow.fn).parameters)
    for trigger in deployment.get("triggers") or []:
        assert set(trigger.get("parameters") or {}) <= accepted, deployment["name"]
    assert set(deployment.get("parameters") or {}) <= accepted, deployment["name"]


@pytest.mark.parametrize(
    "deployment", [d for d in _deployments() if d.get("triggers")], ids=lambda d: d["name"]
)
def test_every_trigger_validates_against_prefects_trigger_models_with_no_unknown_keys(
    deployment: dict[str, Any],
) -> None:
    for spec in deployment["triggers"]:
        trigger = TRIGGERS.validate_python(dict(spec))
        assert not _unknown(spec, type(trigger)), f"{deployment['name']}: unknown trigger keys"
        assert trigger.expect, "an empty expect matches every event (recursive firing)"
        assert trigger.enabled


def _trigger(deployment: str) -> Any:
    [spec] = _by_name(deployment)["triggers"]
    return TRIGGERS.validate_python(dict(spec))


def test_retrain_is_triggered_by_drift_and_degradation_debounced_per_model() -> None:
    trigger = _trigger("retrain")
    assert trigger.expect == {EVENT_DRIFT_DETECTED, EVENT_PERFORMANCE_DEGRADED}
    assert trigger.match.model_dump()["prefect.resource.id"] == "mlops.model.*"
    assert trigger.posture == "Reactive" and trigger.threshold == 1
    assert trigger.within.total_seconds() > 0 and trigger.for_each == {"prefect.resource.id"}
    params = trigger.parameters
    assert params["model"] == "{{ event.payload.model }}"
    assert params["severity"] == "{{ event.payload.severity }}"
    assert params["event_id"] == "{{ event.id | string }}"  # a UUID is not JSON: | tojson would fail
    assert params["event"] == "{{ event.event }}"
    limit = _by_name("retrain")["concurrency_limit"]
    assert limit == {"limit": 1, "collision_strategy": "ENQUEUE"}  # another model waits, not cancelled


def test_promote_is_triggered_by_a_completed_shadow() -> None:
    trigger = _trigger("promote")
    assert trigger.expect == {EVENT_SHADOW_COMPLETED}
    assert trigger.parameters == {"model": "{{ event.payload.model }}"}


def test_monitor_runs_on_a_daily_cron_and_rollback_and_retrain_can_be_started_by_hand() -> None:
    [schedule] = _by_name("monitor-drift")["schedules"]
    assert RawScheduleConfig.model_validate(schedule).cron == "0 6 * * *"
    for name in ("rollback", "retrain", "train", "validate-data"):
        assert name in {d["name"] for d in _deployments()}
    required = {
        p.name
        for p in inspect.signature(_flow(_by_name("rollback")["entrypoint"]).fn).parameters.values()
        if p.default is inspect.Parameter.empty
    }
    assert required == {"by", "reason"}  # the UI form asks who and why


def test_a_review_case_can_be_started_from_the_ui_with_only_its_id() -> None:
    deployment = _by_name("review-case")
    fn = _flow(deployment["entrypoint"]).fn
    required = {
        p.name for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty
    }
    assert required == {"case_id"}  # the UI's run form asks for the case; the pause asks the rest
    assert "triggers" not in deployment and "schedules" not in deployment  # a person starts it


def test_pull_step_is_explicit_and_its_template_comes_from_the_build_step() -> None:
    data = _config()
    [build] = data["build"]
    [pull] = data["pull"]
    [(build_step, build_args)] = build.items()
    [(pull_step, pull_args)] = pull.items()
    assert pull_step == "prefect.deployments.steps.set_working_directory"
    for step, args in ((build_step, build_args), (pull_step, pull_args)):
        module, _, func = step.rpartition(".")
        fn = getattr(importlib.import_module(module), func)
        params = inspect.signature(fn).parameters
        assert set(args) - {"id", "requires"} <= set(params), step
    [placeholder] = find_placeholders(pull_args["directory"])
    assert placeholder.name == f"{build_args['id']}.stdout"


def test_flow_runs_start_in_one_python_process_with_the_checkouts_interpreter() -> None:
    # Without a command, Prefect 3.9's process worker runs a supervisor Python (pull step) that
    # execs a second Python for the engine: ~2 s more from a drift event to a running retrain.
    [build] = _config()["build"]
    [(_, build_args)] = build.items()
    for deployment in _deployments():
        command = deployment["work_pool"]["job_variables"]["command"]
        [placeholder] = find_placeholders(command)
        assert placeholder.name == f"{build_args['id']}.stdout", deployment["name"]
        assert command.endswith("/.venv/bin/python -m prefect.engine"), deployment["name"]


def test_flow_runs_switch_off_every_librarys_telemetry_and_mlflows_console_noise() -> None:
    # A worker's shell need not set them; MLflow honours only its own switch.
    for deployment in _deployments():
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env == {**NO_TELEMETRY_ENV, **QUIET_MLFLOW_CONSOLE_ENV}, deployment["name"]


def test_model_resource_ids_match_the_trigger_pattern() -> None:
    from prefect.events.schemas.events import Resource

    resource = Resource({"prefect.resource.id": model_resource("credit-risk")})
    trigger = _trigger("retrain")
    assert trigger.match.includes([resource])


def test_the_readme_names_the_pool_and_the_deploy_command() -> None:
    text = (PROJECT_ROOT / "deployments" / "README.md").read_text()
    assert POOL in text and "prefect deploy --all --no-prompt" in text
    assert "PREFECT_WORKER_QUERY_SECONDS=1" in text
    assert Path(PREFECT_YAML).is_file()


def test_the_retrain_flow_default_model_is_the_product_default() -> None:
    from flows.retrain import DEFAULT_MODEL
    from mlops.model_spec import DEFAULT_MODEL_NAME

    assert DEFAULT_MODEL == DEFAULT_MODEL_NAME


def test_a_version_rebuild_and_a_prediction_reproduce_can_be_started_from_the_ui() -> None:
    """The UI's run form asks for what names the model version / the prediction; nothing more."""
    for name, wanted in (("rebuild", {"version"}), ("reproduce", {"prediction_id"})):
        deployment = _by_name(name)
        fn = _flow(deployment["entrypoint"]).fn
        required = {
            p.name for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty
        }
        assert required == wanted, name
        assert "triggers" not in deployment and "schedules" not in deployment  # a person starts it
