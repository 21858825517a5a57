"""Scoring input from S3 (moto's server): the batch is streamed in chunks, its snapshots land on S3."""

from __future__ import annotations

import pytest

from mlops.contracts import load_contract
from mlops.errors import InputError
from mlops.gx_suite import GXRunner
from mlops.scoring_input import iter_batch_chunks, read_valid_snapshot, validate_in_chunks
from mlops.settings import PROJECT_ROOT, get_settings
from mlops.storage import S3Store, make_store, s3_client
from tests.helpers import clean_frame

pytestmark = pytest.mark.integration


def test_s3_batch_is_read_in_chunks_and_snapshotted_on_s3(s3_bucket: str, s3_endpoint: str) -> None:
    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    df = clean_frame(contract, 70)
    s3_client(s3_endpoint).put_object(Bucket=s3_bucket, Key="in/a.csv", Body=df.to_csv(index=False).encode())
    source = f"s3://{s3_bucket}/in/a.csv"
    assert [len(c) for c in iter_batch_chunks(source, 30, s3_endpoint_url=s3_endpoint)] == [30, 30, 10]

    store = make_store(get_settings())
    assert isinstance(store, S3Store)
    chunks = iter_batch_chunks(source, 40, s3_endpoint_url=s3_endpoint)
    done = validate_in_chunks(chunks, contract, GXRunner(), store, source=source, chunk_rows=40)
    assert done.accepted and [r.rows for r in done.snapshots] == [40, 30]
    assert all(r.uri.startswith(f"s3://{s3_bucket}/") for r in done.snapshots)
    back = read_valid_snapshot(store, contract.name, done.snapshots[1].sha256)
    assert back["application_id"].tolist() == df["application_id"].iloc[40:].tolist()

    with pytest.raises(InputError, match="cannot read batch"):
        list(iter_batch_chunks(f"s3://{s3_bucket}/in/missing.csv", 10, s3_endpoint_url=s3_endpoint))
