"""The README's main job: `mlops simulate` and `mlops demo` through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops.cli import main

pytestmark = pytest.mark.flows


def test_simulate_writes_batches_and_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    code = main(
        [
            "simulate",
            "--scenario",
            "covariate_shift",
            "--days",
            "3",
            "--rows-per-day",
            "300",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["ok"] and last["scenario"] == "covariate_shift"
    assert sorted(p.name for p in (out / "applications").iterdir()) == [
        "day_0000.csv",
        "day_0001.csv",
        "day_0002.csv",
    ]
    assert json.loads((out / "manifest.json").read_text())["drift_day"] == 1


def test_simulate_warns_when_its_dates_run_past_today(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Validation quarantines times after today (in_future): a simulation reaching past today
    says so and names the way out; one that ends before today says nothing."""
    today = datetime.now(UTC).date()
    args = ["simulate", "--days", "2", "--rows-per-day", "20", "--overwrite", "--out", str(tmp_path / "s")]
    assert main([*args, "--start-date", str(today - timedelta(days=8))]) == 0
    out = capsys.readouterr().out  # day 1 + 7 days of outcome delay: today
    assert "note:" in out and "pass an earlier --start-date" in out
    assert "outcomes run to" in out and "applications run to" not in out
    assert main([*args, "--start-date", str(today)]) == 0  # today's applications are ahead too
    assert f"applications run to {today + timedelta(days=1)}" in capsys.readouterr().out
    assert main([*args, "--start-date", "86400"]) == 2  # not a date (pydantic took it for 1970-01-02)
    assert main([*args, "--start-date", str(today - timedelta(days=30))]) == 0
    assert "note:" not in capsys.readouterr().out
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["start_date"] == str(today - timedelta(days=30))


def test_simulate_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "nonsense", "--days", "2", "--out", str(tmp_path), "--json"]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out.strip().splitlines()[-1])["error"]
    # One readable line naming the field, the problem and the value, not pydantic's dump.
    assert error.startswith(
        "invalid arguments: scenario: unknown scenario 'nonsense'; known scenarios: stable"
    )
    assert "Value error" not in error and "errors.pydantic.dev" not in captured.err
    assert main(["simulate", "--days", "x", "--out", str(tmp_path)]) == 2


def test_demo_runs_the_lifecycle(
    mlops_home: Path, mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    batches = {b["batch"]: b for b in result["batches"]}
    clean, broken = batches["applications day 0"], batches["broken batch"]
    assert clean["verdict"] == "accepted" and clean["rows_quarantined"] == 0
    assert broken["verdict"].startswith("REJECTED") and broken["rows_quarantined"] > 0
    assert broken["rows_valid"] + broken["rows_quarantined"] == broken["rows_read"]
    assert all(b["verdict"] == "accepted" for name, b in batches.items() if name.startswith("outcomes"))
    assert "wrong_type" in out and out.count("Data validation") == 1  # the report, printed once
    assert f"MLOPS_HOME={mlops_home} " in out and "review list" in out  # a hint that finds the cases
    # The first model goes through the gates and becomes champion by the recorded bootstrap path.
    assert (
        result["train"]["verdict"] == "bootstrap" and result["champion_version"] == result["train"]["version"]
    )
    assert result["rebuilt_identical"] is True and "from its lineage (" in out and "identical model" in out


def test_demo_refuses_a_home_with_an_earlier_runs_state(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (mlops_home / "audit.db").write_bytes(b"")  # an earlier run's audit store
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--json"]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out.strip().splitlines()[-1])["error"]
    assert str(mlops_home) in error and "audit.db" in error
    assert "empty folder" in captured.err
    assert not (tmp_path / "demo").exists()  # nothing was simulated or written
    # An audit store under the home by another name, as MLOPS_AUDIT_DB_URL names it.
    (mlops_home / "audit.db").unlink()
    (mlops_home / "decisions.sqlite").write_bytes(b"")
    monkeypatch.setenv("MLOPS_AUDIT_DB_URL", f"sqlite:///{mlops_home / 'decisions.sqlite'}")
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--json"]) == 2
    assert "decisions.sqlite" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLOPS_PROFILE", "production"),
        ("MLOPS_STORE_URL", "s3://bank-models/mlops"),
        ("MLOPS_AUDIT_DB_URL", "postgresql+psycopg2://audit@db/audit"),
        ("MLOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000"),
        ("MLOPS_MLFLOW_TRACKING_URI", "sqlite:////var/lib/mlops/mlflow.db"),  # a registry outside the home
    ],
)
def test_demo_refuses_to_write_into_stores_of_a_real_deployment(
    mlops_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    """With a shell's production settings the demo would put simulated batches, demo models and
    demo predictions into the real store, registry and audit chain: refused before anything."""
    monkeypatch.setenv(variable, value)
    if variable == "MLOPS_PROFILE":  # a fully configured production shell
        for name, setting in (
            ("MLOPS_STORE_URL", "s3://bank/mlops"),
            ("MLOPS_AUDIT_DB_URL", "postgresql://a@db/a"),
            ("MLOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000"),
            ("MLOPS_ENTITY_HASH_KEY", "a-secret"),
        ):
            monkeypatch.setenv(name, setting)
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--json"]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out.strip().splitlines()[-1])["error"]
    assert error.startswith("the demo runs on embedded defaults only") and variable in error
    assert f"env -u {variable}" in json.loads(captured.out.strip().splitlines()[-1])["hint"]
    assert not (tmp_path / "demo").exists() and not any(mlops_home.iterdir())  # nothing written


def test_an_unknown_option_is_named_with_the_subcommands_own_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["review", "list", "--bogus", "--json"]) == 2
    captured = capsys.readouterr()
    assert "usage: mlops review list" in captured.err and "unrecognized arguments: --bogus" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["ok"] is False


def test_a_usage_error_still_ends_with_a_json_line_under_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "x.csv", "--canary-share", "abc", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {
        "ok": False,
        "error": "invalid usage (see the message above)",
    }
    assert "--canary-share" in captured.err


def test_simulate_help_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.simulator import SCENARIOS

    assert main(["simulate", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in SCENARIOS)


def test_simulate_refusals_name_the_values_and_the_cli_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["simulate", "--days", "4", "--drift-day", "9", "--out", str(out), "--json"]) == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    # The offending values only, not the whole config dict after "(got".
    assert error == (
        "invalid arguments: SimulationConfig: drift_day 9 is outside 0..3 (days=4); omit it to use days // 2"
    )
    args = ["simulate", "--days", "1", "--rows-per-day", "5", "--out", str(out), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2  # the folder holds that simulation now
    hint = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hint"]
    assert "--overwrite" in hint and "Python" not in hint
