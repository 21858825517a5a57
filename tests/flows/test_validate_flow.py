"""validate_data under the Prefect test harness: snapshot, quarantine, catalog, artifact, event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flows.validate_data import validate_data
from mlops.catalog import list_snapshots, list_validations
from mlops.cli import main
from mlops.constants import (
    EVENT_DATA_REJECTED,
    EVENT_DATA_VALIDATED,
    QUARANTINE_REASONS_COLUMN,
    dataset_resource,
)
from mlops.contracts import load_contract
from mlops.settings import PROJECT_ROOT, get_settings
from mlops.storage import make_store, read_snapshot
from tests.helpers import clean_frame, wait_for_events

pytestmark = pytest.mark.flows


def _batches(tmp_path: Path) -> tuple[Path, Path]:
    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    good = clean_frame(contract, 120, seed=1)
    bad = clean_frame(contract, 120, seed=2).astype({"annual_income": object})
    bad.loc[:19, "region"] = "atlantis"  # 20 rows > 5%
    bad.loc[30, "annual_income"] = "12,000"
    good_path, bad_path = tmp_path / "good.csv", tmp_path / "bad.parquet"
    good.to_csv(good_path, index=False)
    bad.astype({"annual_income": str}).to_parquet(bad_path)
    return good_path, bad_path


def test_clean_batch_is_snapshotted_catalogued_and_announced(mlops_home: Path, tmp_path: Path) -> None:
    good, _ = _batches(tmp_path)
    since = datetime.now(UTC) - timedelta(seconds=5)
    summary = validate_data(source=str(good))
    assert summary.accepted and summary.rows_valid == 120 and summary.rows_quarantined == 0
    store = make_store(get_settings())
    [entry] = list_snapshots(store, "credit_applications")
    assert entry.sha256 == summary.snapshot_sha256 and entry.rows == 120
    snap = read_snapshot(store, dataset="credit_applications", kind="valid", sha256=entry.sha256)
    assert len(snap) == 120
    assert summary.data_docs and Path(summary.data_docs).is_file()

    [event] = wait_for_events(
        EVENT_DATA_VALIDATED,
        dataset_resource("credit_applications"),
        since=since,
        match=lambda e: e.payload["source"] == str(good),
    )
    assert event.payload["snapshot_sha256"] == summary.snapshot_sha256
    assert event.payload["rows_valid"] == 120

    again = validate_data(source=str(good))  # same content: same snapshot, no second entry
    assert again.snapshot_sha256 == summary.snapshot_sha256
    assert len(list_snapshots(store, "credit_applications")) == 1
    # Each run has its own Data Docs page, and the later run did not delete the earlier one.
    assert again.data_docs and again.data_docs != summary.data_docs
    assert Path(again.data_docs).is_file() and Path(summary.data_docs).is_file()
    # ... and the sites share one copy of GX's static files (~4 MB each otherwise).
    sites = sorted((mlops_home / "reports" / "data_docs").glob("*-*"))
    statics = [site / "static" for site in sites if not site.name.startswith("static-")]
    assert len(statics) == 2 and all(s.is_symlink() for s in statics)
    assert len({s.resolve() for s in statics}) == 1 and any((statics[0] / "styles").iterdir())


def test_broken_batch_is_rejected_quarantined_and_announced(mlops_home: Path, tmp_path: Path) -> None:
    _, bad = _batches(tmp_path)
    since = datetime.now(UTC) - timedelta(seconds=5)
    summary = validate_data(source=str(bad))
    assert not summary.accepted
    assert summary.rows_quarantined == 21 and summary.rows_valid == 99
    assert summary.reason_counts == {"region:unseen_category": 20, "annual_income:wrong_type": 1}
    store = make_store(get_settings())
    assert list_snapshots(store, "credit_applications") == []  # never offered to training
    assert summary.quarantine_sha256 is not None
    quarantine = read_snapshot(
        store, dataset="credit_applications", kind="quarantine", sha256=summary.quarantine_sha256
    )
    assert len(quarantine) == 21 and quarantine[QUARANTINE_REASONS_COLUMN].notna().all()
    assert "12,000" in set(quarantine["annual_income"])

    [event] = wait_for_events(
        EVENT_DATA_REJECTED,
        dataset_resource("credit_applications"),
        since=since,
        match=lambda e: e.payload["source"] == str(bad),
    )
    assert event.payload["rows_quarantined"] == 21 and event.payload["accepted"] is False

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["validation-credit-applications-failed-expectations"])
            )
        )
    assert arts, "the failed-expectations table artifact is published"
    tables = [a.data if isinstance(a.data, list) else json.loads(str(a.data)) for a in arts]
    assert any(row["column"] == "region" and row["unexpected_count"] == 20 for t in tables for row in t)


def test_cli_prints_counts_as_json_last_line_and_exit_codes(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = _batches(tmp_path)
    assert main(["validate", str(good), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["ok"] and last["rows_read"] == 120 and last["rows_quarantined"] == 0

    assert main(["validate", str(bad), "--json"]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not last["ok"] and last["rows_quarantined"] == 21

    assert main(["validate", str(tmp_path / "missing.csv"), "--json"]) == 2
    out = capsys.readouterr()
    last = json.loads(out.out.strip().splitlines()[-1])
    assert "does not exist" in last["error"] and "missing.csv" in out.err

    broken = pd.read_csv(good).drop(columns=["age"])
    broken.to_csv(tmp_path / "noage.csv", index=False)
    assert main(["validate", str(tmp_path / "noage.csv"), "--json"]) == 2
    assert "age" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


def test_a_missing_file_is_refused_before_any_flow_runs(
    mlops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["validate"], ["score"], ["outcomes"]):
        assert main([*command, str(tmp_path / "nope.csv"), "--json"]) == 2
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert "does not exist" in printed["error"]
    assert not (mlops_home / "store").exists()  # nothing ran, nothing was written


def test_numeric_looking_text_ids_are_stored_as_written(mlops_home: Path, tmp_path: Path) -> None:
    # A CSV whose ids all look like numbers: pandas read them as int64 (``007`` -> ``7``) or,
    # with one empty cell, as float64 (``7.0``; ``9007199254740993`` onto its neighbour, so two
    # applications became one id and the second a "duplicate").
    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    frame = clean_frame(contract, 40, seed=3)
    ids = [f"{i:03d}" for i in range(37)] + ["9007199254740993", "9007199254740992", ""]
    frame["application_id"] = ids
    path = tmp_path / "numeric_ids.csv"
    frame.to_csv(path, index=False)
    summary = validate_data(source=str(path))
    assert summary.reason_counts == {"application_id:null_required": 1}
    assert summary.accepted and summary.snapshot_sha256
    store = make_store(get_settings())
    snap = read_snapshot(store, dataset="credit_applications", kind="valid", sha256=summary.snapshot_sha256)
    assert snap["application_id"].tolist() == ids[:-1]


def test_every_validation_leaves_a_record_naming_its_batch_and_quarantine(
    mlops_home: Path, tmp_path: Path
) -> None:
    # The snapshot and quarantine files are content-addressed and name no batch; a rejected
    # batch has no catalog entry: before, nothing in the store said which batch was rejected,
    # when, why, under which contract version, or where its quarantined rows went.
    good, bad = _batches(tmp_path)
    rejected = validate_data(source=str(bad))
    accepted = validate_data(source=str(good))
    store = make_store(get_settings())
    records = {r.source: r for r in list_validations(store, "credit_applications")}
    assert set(records) == {str(good), str(bad)}
    kept = records[str(bad)]
    assert not kept.accepted and kept.contract_version == rejected.contract_version
    assert kept.reason_counts == rejected.reason_counts and kept.rejection_reasons
    assert kept.quarantine_sha256 == rejected.quarantine_sha256 is not None
    assert records[str(good)].accepted and records[str(good)].snapshot_sha256 == accepted.snapshot_sha256
    assert rejected.record_uri and Path(rejected.record_uri).is_file()
