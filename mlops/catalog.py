"""A catalog of validated snapshots in the object store: which data exists, from where, when.

Each accepted batch leaves ``catalog/<dataset>/<sha256>.json`` beside its snapshot. Writing the
same batch twice finds the same entry (content addressing), so re-ingesting changes nothing.
Every validation, accepted or rejected, also leaves its summary under ``validations/<dataset>/``
(:func:`record_validation`): the source, contract version, verdict, reasons and the addresses
of its snapshot and quarantine file, which are content-addressed and do not name their batch.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from mlops.constants import KIND_VALID
from mlops.errors import StorageIntegrityError, validation_problems
from mlops.storage import ObjectMissing, ObjectStore, snapshot_key
from mlops.validation import ValidationSummary

# The column :func:`read_entries` adds: the sha256 of the snapshot each row came from.
SNAPSHOT_COLUMN: Final = "_snapshot"


class CatalogEntry(BaseModel):
    """One validated snapshot of a dataset."""

    dataset: str
    contract_version: str
    sha256: str
    uri: str
    rows: int
    source: str
    ingested_at: datetime
    min_timestamp: datetime | None = None
    max_timestamp: datetime | None = None


def entry_key(dataset: str, sha256: str) -> str:
    return f"catalog/{dataset}/{sha256}.json"


def record_snapshot(store: ObjectStore, entry: CatalogEntry) -> CatalogEntry:
    """Add an entry; if the snapshot is already catalogued, keep (and return) the first entry."""
    key = entry_key(entry.dataset, entry.sha256)
    if store.exists(key):
        return CatalogEntry.model_validate_json(store.get_bytes(key))
    store.put_bytes(key, entry.model_dump_json(indent=2).encode())
    return entry


def read_entry(store: ObjectStore, key: str) -> CatalogEntry:
    """One catalog entry; StorageIntegrityError if it is not one, or not the one its key names."""
    try:
        entry = CatalogEntry.model_validate_json(store.get_bytes(key))
    except ValidationError as exc:
        raise StorageIntegrityError(
            f"catalog entry {store.uri(key)} is not readable: {validation_problems(exc)}",
            hint="the stored file was altered or cut short; restore it from a backup, or delete it "
            "and validate its batch again",
        ) from exc
    if key != entry_key(entry.dataset, entry.sha256):
        raise StorageIntegrityError(
            f"catalog entry {store.uri(key)} describes snapshot {entry.dataset}/{entry.sha256}",
            hint="the stored file was altered or moved; restore it from a backup",
        )
    return entry


def list_snapshots(store: ObjectStore, dataset: str) -> list[CatalogEntry]:
    """Entries of a dataset, oldest data first (by max timestamp, then ingestion time)."""
    entries = [read_entry(store, k) for k in store.list_keys(f"catalog/{dataset}/") if k.endswith(".json")]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return sorted(entries, key=lambda e: (e.max_timestamp or epoch, e.ingested_at, e.sha256))


def in_ingestion_order(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """The entries in the order they were ingested (outcomes read this way: on a tie between
    equal observation times, the batch ingested last, a correction, decides)."""
    return sorted(entries, key=lambda e: (e.ingested_at, e.sha256))


def read_entries(
    store: ObjectStore,
    entries: list[CatalogEntry],
    *,
    columns: list[str] | None = None,
    row_column: str | None = None,
) -> pd.DataFrame:
    """Concatenate the snapshots of ``entries`` (in order), checking each one's hash.

    Each row gets ``_snapshot`` (its snapshot's sha256) and, with ``row_column``, its 0-based
    row number inside that snapshot. ``columns`` reads only those columns (missing ones are an
    error). The snapshots are concatenated as Arrow tables and converted to pandas once.
    """
    if not entries:
        return pd.DataFrame()
    tables = [_snapshot_table(store, e, columns, row_column) for e in entries]
    schema = tables[0].schema
    if all(t.schema.equals(schema) for t in tables[1:]):
        return pa.concat_tables(tables).to_pandas()
    # Contract versions changed the columns: let pandas align them, as it always did.
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def _snapshot_table(
    store: ObjectStore, entry: CatalogEntry, columns: list[str] | None, row_column: str | None
) -> pa.Table:
    """One snapshot as an Arrow table with its lineage columns; its bytes must hash to its address."""
    key = snapshot_key(KIND_VALID, entry.dataset, entry.sha256)
    try:
        data = store.get_bytes(key)
    except ObjectMissing as exc:
        raise StorageIntegrityError(
            f"snapshot {store.uri(key)} of {entry.dataset} is catalogued but missing from the store",
            hint=f"restore it from a backup, or validate its batch {entry.source} again",
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise StorageIntegrityError(
            f"snapshot {store.uri(key)} hashes to {actual}, not {entry.sha256}",
            hint="the stored file was altered; restore it from a backup",
        )
    table = pq.read_table(io.BytesIO(data), columns=columns)
    n = table.num_rows
    if n != entry.rows:
        raise StorageIntegrityError(
            f"catalog entry of snapshot {store.uri(key)} says {entry.rows} rows; the snapshot holds {n}",
            hint=f"the catalog entry {store.uri(entry_key(entry.dataset, entry.sha256))} was altered; "
            "restore it from a backup",
        )
    table = table.append_column(SNAPSHOT_COLUMN, _repeated(entry.sha256, n))
    if row_column is not None:
        table = table.append_column(row_column, pa.array(np.arange(n, dtype="int64")))
    return table


def _repeated(text: str, n: int) -> pa.Array:
    """``text`` ``n`` times as a large_string array, built from its two buffers (offsets and the
    bytes repeated): half the time of decoding a one-entry dictionary, which ran a ``take``
    (read_entries at 1M rows: 0.2 s against 0.1 s)."""
    data = text.encode()
    width = len(data)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64) if width else np.zeros(n + 1, np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def validation_key(dataset: str, checked_at: datetime, digest: str) -> str:
    return f"validations/{dataset}/{checked_at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{digest[:16]}.json"


def record_validation(store: ObjectStore, summary: ValidationSummary) -> str:
    """Keep what happened to a batch, accepted or rejected; returns the record's URI.

    Idempotent: the key is the validation time and the digest of the record, so a retried
    write of the same summary finds the same key."""
    data = summary.model_dump_json(indent=2).encode()
    checked_at = summary.checked_at or datetime.now(UTC)
    key = validation_key(summary.contract, checked_at, hashlib.sha256(data).hexdigest())
    store.put_bytes(key, data)
    return store.uri(key)


def list_validations(store: ObjectStore, dataset: str) -> list[ValidationSummary]:
    """The validation records of a dataset, oldest first."""
    keys = [k for k in store.list_keys(f"validations/{dataset}/") if k.endswith(".json")]
    return [ValidationSummary.model_validate_json(store.get_bytes(k)) for k in keys]


def describe(entry: CatalogEntry) -> str:
    return json.dumps(entry.model_dump(mode="json"))
