"""Bad input through the ``mlops`` command: one clear message, the right exit code, the JSON
line, nothing written where nothing should be (findings of a bad-input review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops import cli
from mlops.batch_io import read_batch
from mlops.cli import main
from mlops.contracts import load_contract
from mlops.errors import InputError
from mlops.scoring_input import iter_batch_chunks
from mlops.settings import PROJECT_ROOT
from tests.helpers import clean_frame

pytestmark = pytest.mark.flows


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def _contract() -> Any:
    return load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")


def test_a_bad_setting_is_named_before_any_flow_starts(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = tmp_path / "b.csv"
    clean_frame(_contract(), 20, seed=1).to_csv(batch, index=False)
    monkeypatch.setenv("MLOPS_MAX_QUARANTINE_SHARE", "abc")
    code, data, err = _run(capsys, "validate", str(batch))
    assert code == 2 and data["error"].startswith("invalid setting(s): MLOPS_MAX_QUARANTINE_SHARE:")
    assert "Traceback" not in err and "pydantic.dev" not in err and "Beginning flow run" not in err


def test_an_unexpected_failure_exits_3_with_its_name_and_the_json_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(_args: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "cmd_contract_compile", broken)
    code, data, err = _run(capsys, "contract", "compile", "credit_applications")
    assert code == cli.EXIT_UNEXPECTED == 3
    assert data == {
        "ok": False,
        "error": "unexpected RuntimeError: disk on fire",
        "hint": data["hint"],
        "unexpected": True,
    }
    assert "not a refusal of the input" in data["hint"]
    assert "Traceback" in err and "error: unexpected RuntimeError: disk on fire" in err


def test_commands_that_read_the_audit_store_never_create_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "mistyped-home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    code, data, _ = _run(capsys, "review", "list")
    assert code == 2 and data["error"] == f"there is no audit store at {home / 'audit.db'}"
    assert "check MLOPS_HOME" in data["hint"] and not (home / "audit.db").exists()
    assert _run(capsys, "audit", "verify")[0] == 2  # still no store: not "intact, 0 records"
    code, data, _ = _run(capsys, "reproduce", "0190b1e2-0000-7000-8000-000000000001")
    assert code == 2 and data["error"] == f"there is no audit store at {home / 'audit.db'}"
    assert not (home / "audit.db").exists()


def test_a_home_that_cannot_be_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("MLOPS_HOME", str(home))
    batch = tmp_path / "b.csv"
    clean_frame(_contract(), 20, seed=1).to_csv(batch, index=False)
    code, data, _ = _run(capsys, "validate", str(batch))
    assert code == 2 and data["error"].startswith(f"MLOPS_HOME {home} cannot be used as the product's home")
    assert "point MLOPS_HOME at a folder you can write to" in data["hint"]


def test_unreadable_batches_say_how_to_fix_them(tmp_path: Path) -> None:
    frame = clean_frame(_contract(), 20, seed=1)
    semicolon = tmp_path / "semi.csv"
    frame.to_csv(semicolon, index=False, sep=";")
    latin = tmp_path / "latin.csv"
    text = frame.to_csv(index=False).replace("salaried", "salarié", 1)
    latin.write_bytes(text.encode("latin-1"))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    twice = tmp_path / "twice.parquet"
    pq.write_table(table.append_column("age", table.column("age")), twice)

    with pytest.raises(InputError) as not_utf8:
        read_batch(str(latin))
    assert "is not UTF-8 text" in not_utf8.value.message and "iconv" in (not_utf8.value.hint or "")
    with pytest.raises(InputError) as chunked:
        list(iter_batch_chunks(str(latin), 1000))
    assert "is not UTF-8 text" in chunked.value.message
    for read in (lambda: read_batch(str(twice)), lambda: list(iter_batch_chunks(str(twice), 1000))):
        with pytest.raises(InputError, match=r"names column\(s\) \['age'\] more than once"):
            read()

    from mlops.validation import check_columns

    with pytest.raises(InputError) as semi:
        check_columns(read_batch(str(semicolon)), _contract(), "semi.csv")
    assert semi.value.hint is not None and "export the file comma-separated" in semi.value.hint


def test_a_batch_with_no_valid_row_is_never_accepted(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = clean_frame(_contract(), 20, seed=1)
    frame["age"] = 5  # below the contract's minimum: every row quarantined
    batch = tmp_path / "allbad.csv"
    frame.to_csv(batch, index=False)
    monkeypatch.setenv("MLOPS_MAX_QUARANTINE_SHARE", "1")  # even with no limit on the share
    code, data, _ = _run(capsys, "validate", str(batch))
    assert code == 1 and not data["accepted"] and data["rows_quarantined"] == 20, data
    assert main(["validate", str(batch)]) == 1
    assert "no valid rows: every row was quarantined" in capsys.readouterr().out


def test_compiling_contracts_from_an_empty_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_CONTRACTS_DIR", str(tmp_path / "nowhere"))
    code, data, _ = _run(capsys, "contract", "compile")
    assert code == 2 and data["error"] == f"no data contracts (*.yaml) in {tmp_path / 'nowhere'}"


def test_an_unknown_model_is_bad_usage_for_every_command(
    mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["rollback", "--by", "a", "--reason", "b"], ["promote"], ["monitor"], ["retrain"]):
        code, data, _ = _run(capsys, *argv, "--model", "nope")
        assert code == 2, (argv, data)
        assert "nope" in data["error"]
    code, data, _ = _run(capsys, "rollback", "--by", "a", "--reason", "b")  # a spec, nothing trained
    assert code == 1 and data["hint"] == "train it first (mlops train --model credit-risk)"


def test_a_rejected_outcomes_batch_says_why(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    frame = clean_frame(outcomes, 20, seed=2)
    frame["defaulted"] = 5  # above the contract's max: every row quarantined
    batch = tmp_path / "outcomes.csv"
    frame.to_csv(batch, index=False)
    assert main(["outcomes", str(batch)]) == 1
    out = capsys.readouterr().out
    assert (
        "-> rejected: 1 GX expectation(s) failed; quarantined share 100.00% is above the limit 5.00%" in out
    )


def test_validate_says_why_rows_were_quarantined_where_they_went_and_what_it_ignored(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text output showed only the counts; the reasons, the quarantine file and the ignored
    columns were in the JSON alone."""
    frame = clean_frame(_contract(), 200, seed=3)
    frame["age"] = frame["age"].astype(object)
    frame.loc[:4, "age"] = "abc"  # 5 rows of the wrong type: quarantined, the batch accepted
    frame["note"] = "x"  # a column the contract does not declare
    batch = tmp_path / "b.csv"
    frame.to_csv(batch, index=False)
    assert main(["validate", str(batch), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    data = json.loads(lines[-1])  # the JSON stays the last line
    assert data["reason_counts"] == {"age:wrong_type": 5} and data["extra_columns"] == ["note"]
    text = lines[:-1]
    assert "quarantine reasons: age:wrong_type 5" in text
    assert f"quarantined rows (with their reasons): {data['quarantine_uri']}" in text
    assert "ignored column(s) not in contract credit_applications: note" in text


def test_an_applications_batch_given_to_outcomes_is_named_the_wrong_file(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hint said "mlops validate --contract NAME picks another contract", which mlops outcomes
    does not take: the mistake is the file."""
    batch = tmp_path / "applications.csv"
    clean_frame(_contract(), 20, seed=1).to_csv(batch, index=False)
    code, data, err = _run(capsys, "outcomes", str(batch))
    assert code == 2 and "required by contract credit_outcomes" in data["error"]
    assert data["hint"] == (
        "mlops outcomes takes a batch of delayed outcomes (contract credit_outcomes); "
        "a batch of applications goes to mlops score (or mlops validate)"
    )
    assert "--contract" not in err
    code, data, _ = _run(capsys, "validate", str(batch), "--contract", "credit_outcomes")
    assert code == 2 and "mlops validate --contract NAME picks another contract" in data["hint"]
