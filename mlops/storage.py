"""Object store behind a small interface (local folder or S3), and content-addressed snapshots.

A snapshot is validated data written as Parquet and addressed by the sha256 of its bytes:
writing the same content twice is a no-op; finding other content under a key is an error.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.errors import InputError, ServiceUnavailable, SettingsError, StorageIntegrityError
from mlops.settings import ensure_home

if TYPE_CHECKING:
    from mlops.settings import Settings


class ObjectMissing(InputError):
    """``get_bytes`` of a key the store does not hold (both stores raise it; readers that expect
    the object to exist turn it into their own error without a second request to ask first)."""


class RowsOutside(InputError):
    """:func:`read_snapshot` was asked for rows past the end of the snapshot (``num_rows``)."""

    def __init__(self, message: str, *, hint: str | None = None, num_rows: int) -> None:
        super().__init__(message, hint=hint)
        self.num_rows = num_rows


class ObjectStore(Protocol):
    """What the core needs of a blob store."""

    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def uri(self, key: str) -> str: ...
    def check_access(self) -> None: ...


class LocalStore:
    """A folder on disk; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise InputError(f"object key {key!r} escapes the store root {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissing(f"no object {key!r} in store {self.url}")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check_access(self) -> None:
        """Nothing to check ahead: a folder is made on the first write."""

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        ]
        return sorted(k for k in keys if k.startswith(prefix))

    def uri(self, key: str) -> str:
        return str(self._path(key))


def s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client; built where it is used (never passed into cached Prefect tasks)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import PartialCredentialsError

    # boto3 >= 1.36 sends checksums non-AWS endpoints may reject (PITFALLS: S3).
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    try:
        return boto3.client(
            "s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 5, "mode": "standard"})
        )
    except PartialCredentialsError as exc:  # one of the pair set, the other unset or empty
        raise SettingsError(
            f"the S3 credentials are incomplete ({exc})",
            hint="set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither, and AWS_PROFILE)",
        ) from exc
    except ValueError as exc:  # botocore: "Invalid endpoint: ..."
        raise SettingsError(
            f"MLOPS_S3_ENDPOINT_URL is not a usable S3 endpoint ({exc})",
            hint="e.g. http://127.0.0.1:9000 for MinIO or moto; unset it for AWS",
        ) from exc


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (``bucket``, ``some/key``)."""
    if not uri.startswith("s3://"):
        raise InputError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InputError(f"s3 URI {uri!r} names no bucket", hint="use s3://bucket/key")
    return bucket, key


_MISSING_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_ACCESS_CODES: Final = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"})
# A bucket in another region than the client's: S3 answers 301 (PermanentRedirect), or 400 with
# AuthorizationHeaderMalformed for a request signed for the wrong region. botocore follows the
# redirect on AWS's own endpoints; through MLOPS_S3_ENDPOINT_URL it reaches us.
_REGION_CODES: Final = frozenset({"PermanentRedirect", "301", "AuthorizationHeaderMalformed"})


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """botocore's errors that mean the settings or the service, as ours: no or refused
    credentials, a missing bucket and a bucket in another region are settings to fix (exit 2); an unreachable endpoint may
    come back (ServiceUnavailable, which tasks retry). Anything else passes through."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise SettingsError(
            f"cannot {what}: no S3 credentials ({exc})",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the bucket of MLOPS_STORE_URL",
        ) from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as exc:
        raise ServiceUnavailable(
            f"cannot {what}: the S3 endpoint did not answer ({exc})",
            hint="check MLOPS_S3_ENDPOINT_URL and that the object store is up",
        ) from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            raise SettingsError(
                f"cannot {what}: the bucket does not exist", hint="create it, or fix MLOPS_STORE_URL"
            ) from exc
        if code in _REGION_CODES:
            region = (
                exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            )
            where = f" ({region})" if region else ""
            raise SettingsError(
                f"cannot {what}: the bucket is in another region{where} than the client asked ({code})",
                hint=f"set AWS_DEFAULT_REGION to the bucket's region{where}, or fix MLOPS_S3_ENDPOINT_URL",
            ) from exc
        if code in _ACCESS_CODES:
            raise SettingsError(
                f"cannot {what}: the object store refused the credentials ({code})",
                hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions",
            ) from exc
        raise


class S3Store:
    """An S3 bucket (AWS, MinIO or moto's server) under an optional prefix."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.bucket, prefix = split_s3_uri(self.url)
        self.prefix = prefix.strip("/")
        self._client = s3_client(endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        with _s3_errors(f"write {self.uri(key)}"):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        with _s3_errors(f"read {self.uri(key)}"):
            try:
                obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _MISSING_CODES:
                    raise
                raise ObjectMissing(f"cannot read {self.uri(key)}: {exc}") from exc
            body: bytes = obj["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with _s3_errors(f"look up {self.uri(key)}"):
            try:
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                    return False
                raise
        return True

    def check_access(self) -> None:
        """Raise SettingsError now, not after minutes of work, if the bucket is missing or the
        credentials are absent or refused: one listing of at most one key under the store's
        prefix (what a role limited to that prefix may do; HEAD of the bucket needs more)."""
        with _s3_errors(f"reach the object store {self.url}"):
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        keys: list[str] = []
        with _s3_errors(f"list {self.uri(prefix)}"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key: str = obj["Key"]
                    keys.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def make_store(settings: Settings) -> ObjectStore:
    """The object store the settings name."""
    url = settings.resolved_store_url
    if url.startswith("s3://"):
        return S3Store(url, endpoint_url=settings.s3_endpoint_url)
    if settings.store_url is None:
        ensure_home(settings)  # the store lives under MLOPS_HOME: name it if it cannot
    return LocalStore(Path(url))


# --- snapshots --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRef:
    """Where a snapshot lives and what it holds."""

    sha256: str
    key: str
    uri: str
    rows: int
    created: bool  # False when the same content was already stored (no-op)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Deterministic Parquet bytes of a frame (same content and library versions -> same bytes)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def snapshot_key(kind: str, dataset: str, sha256: str) -> str:
    return f"snapshots/{dataset}/{kind}/{sha256}.parquet"


def write_snapshot(store: ObjectStore, df: pd.DataFrame, *, dataset: str, kind: str) -> SnapshotRef:
    """Store ``df`` as Parquet addressed by the sha256 of its bytes; idempotent."""
    data = parquet_bytes(df)
    digest = hashlib.sha256(data).hexdigest()
    key = snapshot_key(kind, dataset, digest)
    if store.exists(key):
        existing = hashlib.sha256(store.get_bytes(key)).hexdigest()
        if existing != digest:
            raise StorageIntegrityError(
                f"snapshot {store.uri(key)} exists with other content (sha256 {existing})",
                hint="the store was modified outside the product; restore it from a backup",
            )
        return SnapshotRef(digest, key, store.uri(key), len(df), created=False)
    store.put_bytes(key, data)
    return SnapshotRef(digest, key, store.uri(key), len(df), created=True)


def read_snapshot(
    store: ObjectStore,
    *,
    dataset: str,
    kind: str,
    sha256: str,
    columns: list[str] | None = None,
    rows: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Read a snapshot back (all its columns, or ``columns``; all its rows, or the 0-based
    ``rows`` in that order, the only ones converted to pandas) and check its bytes still hash
    to its address. A row outside the snapshot is a :class:`RowsOutside` (an InputError)."""
    key = snapshot_key(kind, dataset, sha256)
    data = store.get_bytes(key)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise StorageIntegrityError(
            f"snapshot {store.uri(key)} hashes to {actual}, not {sha256}",
            hint="the stored file was altered; restore it from a backup",
        )
    table = pq.read_table(io.BytesIO(data), columns=columns)
    if rows is not None:
        outside = [r for r in rows if not 0 <= r < table.num_rows]
        if outside:
            raise RowsOutside(
                f"row {outside[0]} is outside snapshot {sha256[:12]} ({table.num_rows} rows)",
                hint="the record's input reference does not match the stored snapshot",
                num_rows=table.num_rows,
            )
        table = table.take(pa.array(rows, type=pa.int64()))
    return table.to_pandas()
