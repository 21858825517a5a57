"""The S3 path against moto's server (a separate process on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.batch_io import read_batch
from mlops.catalog import list_snapshots
from mlops.contracts import load_contract
from mlops.errors import InputError, ServiceUnavailable, SettingsError, StorageIntegrityError
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


def test_a_missing_bucket_is_named_not_raised_by_botocore(s3_endpoint: str) -> None:
    missing = S3Store("s3://no-such-bucket-here/mlops", endpoint_url=s3_endpoint)
    with pytest.raises(SettingsError, match="the bucket does not exist") as no_bucket:
        missing.put_bytes("a/b", b"x")
    assert no_bucket.value.hint == "create it, or fix MLOPS_STORE_URL"


def test_a_missing_bucket_stops_validation_before_the_batch_is_validated(
    s3_bucket: str, s3_endpoint: str, prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.validate_data import validate_data

    assert make_store(get_settings()).check_access() is None  # the fixture's bucket answers
    batch = tmp_path / "day1.csv"
    clean_frame(load_contract(PROJECT_ROOT / "data_contracts", "credit_applications"), 20).to_csv(
        batch, index=False
    )
    monkeypatch.setenv("MLOPS_STORE_URL", "s3://no-such-bucket-here/mlops")
    with pytest.raises(
        SettingsError, match="cannot reach the object store s3://no-such-bucket-here/mlops: the bucket"
    ):
        validate_data(source=str(batch))  # raised by the probe that runs before GX, not by a write


def test_missing_credentials_and_an_unreachable_endpoint_are_named() -> None:
    """boto3 caches a process's credentials, so these are raised here as botocore raises them."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from mlops.storage import _s3_errors

    with (
        pytest.raises(ServiceUnavailable, match="the S3 endpoint did not answer") as down,
        _s3_errors("write s3://b/k"),
    ):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert down.value.hint == "check MLOPS_S3_ENDPOINT_URL and that the object store is up"
    with pytest.raises(SettingsError, match="no S3 credentials") as no_keys, _s3_errors("list s3://b/"):
        raise NoCredentialsError()
    assert no_keys.value.hint is not None and "AWS_ACCESS_KEY_ID" in no_keys.value.hint
    with pytest.raises(KeyError), _s3_errors("write s3://b/k"):  # anything else is not ours to explain
        raise KeyError("x")


def test_a_bucket_in_another_region_is_named_with_its_region() -> None:
    """S3's 301 for a bucket of another region (botocore follows it only on AWS's endpoints)."""
    from botocore.exceptions import ClientError

    from mlops.storage import _s3_errors

    answer = {
        "Error": {
            "Code": "PermanentRedirect",
            "Message": "The bucket you are attempting to access must be addressed using the specified endpoint.",
        },
        "ResponseMetadata": {"HTTPStatusCode": 301, "HTTPHeaders": {"x-amz-bucket-region": "eu-west-3"}},
    }
    with (
        pytest.raises(SettingsError, match=r"another region \(eu-west-3\)") as moved,
        _s3_errors("list s3://b/"),
    ):
        raise ClientError(answer, "ListObjectsV2")  # type: ignore[arg-type]
    assert moved.value.hint is not None and "AWS_DEFAULT_REGION" in moved.value.hint
    answer["ResponseMetadata"] = {"HTTPStatusCode": 301, "HTTPHeaders": {}}
    with (
        pytest.raises(SettingsError, match=r"another region than the client asked \(PermanentRedirect\)"),
        _s3_errors("list s3://b/"),
    ):
        raise ClientError(answer, "ListObjectsV2")  # type: ignore[arg-type]
