"""The S3 path against moto's server (a separate process on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.batch_io import read_batch
from mlops.catalog import list_snapshots
from mlops.contracts import load_contract
from mlops.errors import InputError, StorageIntegrityError
from mlops.settings import PROJECT_ROOT, get_settings
from mlops.storage import S3Store, make_store, read_snapshot, s3_client, snapshot_key, write_snapshot
from tests.helpers import clean_frame

pytestmark = pytest.mark.integration


def test_snapshots_on_s3_are_content_addressed(s3_bucket: str) -> None:
    store = make_store(get_settings())
    assert isinstance(store, S3Store)
    df = clean_frame(load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes"), 50)
    first = write_snapshot(store, df, dataset="credit_outcomes", kind="valid")
    second = write_snapshot(store, df, dataset="credit_outcomes", kind="valid")
    assert first.created and not second.created and first.uri.startswith(f"s3://{s3_bucket}/mlops/")
    assert len(read_snapshot(store, dataset="credit_outcomes", kind="valid", sha256=first.sha256)) == 50
    store.put_bytes(snapshot_key("valid", "credit_outcomes", first.sha256), b"other")
    with pytest.raises(StorageIntegrityError):
        write_snapshot(store, df, dataset="credit_outcomes", kind="valid")


def test_validate_flow_reads_from_and_writes_to_s3(
    s3_bucket: str, s3_endpoint: str, prefect_harness: None
) -> None:
    from flows.validate_data import validate_data

    df = clean_frame(load_contract(PROJECT_ROOT / "data_contracts", "credit_applications"), 80)
    s3_client(s3_endpoint).put_object(
        Bucket=s3_bucket, Key="incoming/day1.csv", Body=df.to_csv(index=False).encode()
    )
    summary = validate_data(source=f"s3://{s3_bucket}/incoming/day1.csv")
    assert summary.accepted and summary.rows_valid == 80
    assert summary.snapshot_uri and summary.snapshot_uri.startswith(f"s3://{s3_bucket}/")
    assert [e.sha256 for e in list_snapshots(make_store(get_settings()), "credit_applications")] == [
        summary.snapshot_sha256
    ]


def test_missing_s3_object_is_a_clear_input_error(s3_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read batch"):
        read_batch(f"s3://{s3_bucket}/nope.csv", s3_endpoint_url=s3_endpoint)
