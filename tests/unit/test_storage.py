"""Content-addressed snapshots on the local store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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
