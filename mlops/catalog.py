"""A catalog of validated snapshots in the object store: which data exists, from where, when.

Each accepted batch leaves ``catalog/<dataset>/<sha256>.json`` beside its snapshot. Writing the
same batch twice finds the same entry (content addressing), so re-ingesting changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
from pydantic import BaseModel

from mlops.constants import KIND_VALID
from mlops.storage import ObjectStore, read_snapshot


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


def list_snapshots(store: ObjectStore, dataset: str) -> list[CatalogEntry]:
    """Entries of a dataset, oldest data first (by max timestamp, then ingestion time)."""
    entries = [
        CatalogEntry.model_validate_json(store.get_bytes(k))
        for k in store.list_keys(f"catalog/{dataset}/")
        if k.endswith(".json")
    ]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return sorted(entries, key=lambda e: (e.max_timestamp or epoch, e.ingested_at, e.sha256))


def read_entries(store: ObjectStore, entries: list[CatalogEntry]) -> pd.DataFrame:
    """Concatenate the snapshots of ``entries`` (in order), checking each one's hash."""
    frames = [
        read_snapshot(store, dataset=e.dataset, kind=KIND_VALID, sha256=e.sha256).assign(_snapshot=e.sha256)
        for e in entries
    ]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def describe(entry: CatalogEntry) -> str:
    return json.dumps(entry.model_dump(mode="json"))
