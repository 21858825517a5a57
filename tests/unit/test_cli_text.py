"""What the ``mlops`` command says besides the JSON: the train summary, the top-level help and
version, the option help, and MLflow's console noise kept off (findings of a new-user review)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from mlops.cli import _quiet_third_parties, main
from mlops.cli_training import train_text
from mlops.constants import NO_TELEMETRY_ENV, QUIET_MLFLOW_CONSOLE_ENV

pytestmark = pytest.mark.unit


def _result(**changes: Any) -> Any:
    from flows.train import TrainResult

    fields: dict[str, Any] = {
        "model_name": "credit-risk",
        "version": 1,
        "run_id": "r",
        "verdict": "bootstrap",
        "passed": True,
        "alias": "challenger",
        "champion_version": None,
        "decision_record_id": "d",
        "decision_record_uri": "/home/store/decisions/d.json",
        "failures": [],
        "metrics": {"auc": 0.81234, "ks": 0.4},
        "champion_metrics": None,
        "training_rows": 4000,
        "evaluation_rows": 1000,
        "flow_run_id": None,
    }
    return TrainResult(**{**fields, **changes})


def test_train_says_the_metrics_the_record_and_the_next_step() -> None:
    first = train_text(_result()).splitlines()
    assert first == [
        "credit-risk v1: verdict bootstrap, alias challenger",
        "AUC 0.8123 on 1000 evaluation rows (4000 training rows)",
        "decision record: /home/store/decisions/d.json",
        "  -> mlops promote --model credit-risk makes it the first champion",
    ]
    compared = train_text(
        _result(version=2, verdict="passed", champion_version=1, champion_metrics={"auc": 0.79})
    )
    assert "AUC 0.8123 vs champion v1 0.7900 on 1000 evaluation rows" in compared
    assert (
        "it shadows champion v1 in mlops score" in compared
        and "mlops promote --model credit-risk" in compared
    )
    failed = train_text(
        _result(
            version=3,
            verdict="failed",
            passed=False,
            alias=None,
            champion_version=1,
            champion_metrics={"auc": 0.9},
            failures=["auc 0.8123 below the floor 0.85", "slice region: 0.55 < 0.60"],
        )
    ).splitlines()
    assert failed[0] == "credit-risk v3: verdict failed, no alias"
    assert failed[2:4] == [
        "failed gate: auc 0.8123 below the floor 0.85",
        "failed gate: slice region: 0.55 < 0.60",
    ]
    assert not any("mlops promote" in line for line in failed)
    subset = train_text(
        _result(
            version=5,
            verdict="passed",
            champion_version=1,
            champion_metrics={"auc": 0.988},
            evaluation_rows=2000,
            comparison_rows=1000,
            comparison_note="those at or after champion v1's own evaluation cutoff 2025-01-08 "
            "(older rows may be rows it was trained on)",
        )
    ).splitlines()
    assert subset[2] == (
        "the champion comparison (non-inferiority) used 1000 of these rows: those at or after champion "
        "v1's own evaluation cutoff 2025-01-08 (older rows may be rows it was trained on); the "
        "champion's AUC above is on all 2000"
    )
    unscored = train_text(_result(version=4, verdict="failed", passed=False, alias=None, champion_version=1))
    assert "AUC 0.8123 (champion v1 could not score them)" in unscored


def test_mlflow_console_noise_is_off_unless_the_user_wants_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.environment_variables import (
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
        MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
    )

    assert not set(QUIET_MLFLOW_CONSOLE_ENV) & set(NO_TELEMETRY_ENV)  # noise, not telemetry
    for name in QUIET_MLFLOW_CONSOLE_ENV:
        monkeypatch.setenv(name, "x")  # restored to what it was after the test
        monkeypatch.delenv(name)
    _quiet_third_parties()
    assert not MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() and MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get()
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    _quiet_third_parties()
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"  # the user's choice stays


def test_the_top_level_help_is_plain_and_names_json_exit_codes_and_home(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and "each subcommand runs" not in text
    flat = " ".join(text.split())
    assert "--json" in flat and "MLOPS_HOME" in flat
    assert "0 success; 1 the work was refused" in flat and "3 an unexpected failure" in flat
    assert main(["--version"]) == 0
    from importlib.metadata import version

    assert capsys.readouterr().out.strip() == f"mlops {version('mlops-pipelines')}"


@pytest.mark.parametrize(
    ("argv", "option_help"),
    [
        *[
            (
                [command, "--help"],
                "--model MODEL model spec (model_specs/NAME.yaml) and registered model "
                "name (default credit-risk)",
            )
            for command in ("outcomes", "train", "promote", "score", "monitor", "retrain", "rollback")
        ],
        (["validate", "--help"], "(default credit_applications)"),
        (["simulate", "--help"], "--out OUT folder for the batches"),
        (["simulate", "--help"], "data_quality_incident (default stable)"),
        (["demo", "--help"], "--workdir WORKDIR folder for the demo's data and state (default .demo)"),
    ],
)
def test_every_option_says_what_it_is_and_its_default(
    argv: list[str], option_help: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    assert option_help in " ".join(capsys.readouterr().out.split())
