"""Content-addressed snapshots on the local store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops.catalog import CatalogEntry, entry_key, list_snapshots, read_entries, record_snapshot
from mlops.errors import InputError, StorageIntegrityError
from mlops.storage import LocalStore, read_snapshot, snapshot_key, write_snapshot

pytestmark = pytest.mark.unit


def frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"a{i}" for i in range(n)], "x": [float(i) for i in range(n)]})


def test_same_content_twice_is_a_no_op(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = write_snapshot(store, frame(), dataset="d", kind="valid")
    mtime = Path(first.uri).stat().st_mtime_ns
    second = write_snapshot(store, frame(), dataset="d", kind="valid")
    assert first.created and not second.created
    assert first.sha256 == second.sha256 and Path(first.uri).stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(
        read_snapshot(store, dataset="d", kind="valid", sha256=first.sha256), frame()
    )


def test_other_content_gets_another_address(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert write_snapshot(store, frame(5), dataset="d", kind="valid").sha256 != (
        write_snapshot(store, frame(6), dataset="d", kind="valid").sha256
    )


def test_a_key_holding_other_content_is_an_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref = write_snapshot(store, frame(), dataset="d", kind="valid")
    store.put_bytes(snapshot_key("valid", "d", ref.sha256), b"tampered")
    with pytest.raises(StorageIntegrityError, match="other content"):
        write_snapshot(store, frame(), dataset="d", kind="valid")
    with pytest.raises(StorageIntegrityError, match="altered"):
        read_snapshot(store, dataset="d", kind="valid", sha256=ref.sha256)


def test_keys_cannot_escape_the_store(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="escapes"):
        LocalStore(tmp_path / "root").put_bytes("../outside", b"x")


def test_a_malformed_s3_endpoint_is_a_settings_error() -> None:
    from mlops.errors import SettingsError
    from mlops.storage import s3_client

    with pytest.raises(SettingsError, match="MLOPS_S3_ENDPOINT_URL"):
        s3_client("not-a-url")


def _catalogued(store: LocalStore) -> CatalogEntry:
    ref = write_snapshot(store, frame(5), dataset="d", kind="valid")
    return record_snapshot(
        store,
        CatalogEntry(
            dataset="d",
            contract_version="1.0.0",
            sha256=ref.sha256,
            uri=ref.uri,
            rows=ref.rows,
            source="in/day_1.csv",
            ingested_at=datetime.now(UTC),
        ),
    )


def test_catalog_readers_refuse_a_catalog_that_no_longer_matches_the_store(tmp_path: Path) -> None:
    # Before: a deleted snapshot was "no object ... in store" (InputError, exit 2: "bad input"),
    # a cut-short entry a pydantic ValidationError ("invalid arguments", exit 2), and an entry
    # whose row count or address was edited was used as it stood.
    store = LocalStore(tmp_path)
    entry = _catalogued(store)
    key = entry_key("d", entry.sha256)
    path = tmp_path / key
    assert len(read_entries(store, list_snapshots(store, "d"))) == 5

    text = path.read_text()
    path.write_text(text.replace('"rows": 5', '"rows": 9'))
    with pytest.raises(StorageIntegrityError, match="says 9 rows; the snapshot holds 5"):
        read_entries(store, list_snapshots(store, "d"))
    path.write_text(text[:-20])
    with pytest.raises(StorageIntegrityError, match=r"catalog entry .* is not readable"):
        list_snapshots(store, "d")
    path.write_text(text.replace(entry.sha256, "0" * 64, 1))
    with pytest.raises(StorageIntegrityError, match="describes snapshot d/0000"):
        list_snapshots(store, "d")
    path.write_text(text)

    (tmp_path / snapshot_key("valid", "d", entry.sha256)).unlink()
    with pytest.raises(StorageIntegrityError, match="catalogued but missing") as missing:
        read_entries(store, list_snapshots(store, "d"))
    assert "validate its batch in/day_1.csv again" in str(missing.value.hint)


def test_a_key_id_without_its_secret_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore raises this one while building the client, outside the request wrapper: it was
    `unexpected PartialCredentialsError` (exit 3) after the task's retries."""
    import boto3

    from mlops.errors import SettingsError
    from mlops.storage import S3Store

    # As in a fresh command: boto3's default session keeps the credentials it resolved first
    # (here, those an earlier test's S3 server was given).
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")  # `export AWS_SECRET_ACCESS_KEY=$UNSET_VAR`
    with pytest.raises(SettingsError, match=r"credentials are incomplete.*AWS_SECRET_ACCESS_KEY") as caught:
        S3Store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")
    assert caught.value.hint and "AWS_SECRET_ACCESS_KEY" in caught.value.hint
