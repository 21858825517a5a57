"""A batch to score, read and validated in chunks so memory stays bounded at any batch size.

Each chunk of at most ``chunk_rows`` raw rows goes through :func:`mlops.validation.validate_frame`
(typing, the GX suite, the quarantine split) exactly as ``validate_data`` does; its valid rows
become one content-addressed snapshot. A batch no larger than one chunk is therefore validated
and snapshotted byte-for-byte as ``mlops validate`` would. Across chunks:

* ``unique`` columns are checked across the whole batch: a value already held in an earlier
  chunk by a row that breaks no other rule (compared as text, through a 64-bit hash)
  quarantines the later row as ``<column>:duplicate``, like a duplicate inside one chunk (a
  row quarantined for another fault is not a kept copy, there as here);
* the batch is accepted when every chunk passes GX and the batch's quarantined share is
  within the contract's limit. GX's row-level ``mostly`` applies per chunk, so a batch whose
  bad rows all sit in one chunk can be rejected although its overall share is under the limit
  (never the reverse);
* quarantined rows of all chunks are kept in memory and stored as one quarantine file (their
  number is small in an accepted batch; a batch that is mostly broken holds them all).

Nothing is catalogued unless the whole batch is accepted.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.batch_io import CSV_HEAD_BYTES, check_csv_head, csv_options, refuse_repeated_columns, unreadable
from mlops.catalog import CatalogEntry, record_snapshot
from mlops.constants import KIND_QUARANTINE, KIND_VALID, QUARANTINE_REASONS_COLUMN
from mlops.contracts import Contract
from mlops.errors import InputError
from mlops.scoring import Timings
from mlops.storage import ObjectStore, SnapshotRef, s3_client, split_s3_uri, write_snapshot
from mlops.validation import (
    DUPLICATE,
    SOURCE_ROW_COLUMN,
    ExpectationOutcome,
    ValidationSummary,
    batch_accepted,
    quarantine_frame,
    validate_frame,
)

DEFAULT_VALIDATION_CHUNK_ROWS = 1_000_000


# --- reading -----------------------------------------------------------------------------


def _suffix(source: str) -> str:
    suffix = source.lower().rsplit(".", 1)[-1] if "." in source else ""
    if suffix not in ("csv", "parquet", "pq"):
        raise InputError(
            f"batch {source} has an unsupported format {suffix!r}", hint="use a .csv or .parquet file"
        )
    return suffix


def _parquet_chunks(path: Path, chunk_rows: int, source: str) -> Iterator[pd.DataFrame]:
    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise unreadable(source, "parquet", exc) from exc
    refuse_repeated_columns(reader.schema_arrow.names, source)
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in reader.iter_batches(batch_size=chunk_rows):
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending)
            frame = table.slice(0, chunk_rows).to_pandas()
            rest = table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
            del table, rest, batch  # hold no Arrow copy of the chunk while it is validated
            yield frame
            del frame
    if held:
        yield pa.Table.from_batches(pending).to_pandas()


def _csv_chunks(
    path: Path, chunk_rows: int, source: str, text_columns: Sequence[str]
) -> Iterator[pd.DataFrame]:
    with path.open("rb") as fh:
        check_csv_head(fh.read(CSV_HEAD_BYTES), source)
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, **csv_options(text_columns))
        yield from reader
    except pd.errors.EmptyDataError as exc:
        raise InputError(
            f"batch {source} is an empty file", hint="check the export that produced it"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        with path.open("rb") as fh:
            raise unreadable(source, "csv", exc, fh) from exc


def iter_batch_chunks(
    source: str,
    chunk_rows: int,
    *,
    s3_endpoint_url: str | None = None,
    text_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """The raw batch at ``source`` (local path or ``s3://``; CSV or Parquet) in row chunks.

    Cells are read as :func:`mlops.batch_io.read_batch` reads them (CSV: only an empty cell
    is missing, ``text_columns`` kept as text: a chunk of numeric-looking ids is not read as
    numbers). An ``s3://`` batch is first downloaded to a temporary file.
    """
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
    suffix = _suffix(source)
    with tempfile.TemporaryDirectory(prefix="mlops-batch-") as tmp:
        if source.startswith("s3://"):
            from botocore.exceptions import BotoCoreError, ClientError

            bucket, key = split_s3_uri(source)
            path = Path(tmp) / f"batch.{suffix}"
            try:
                s3_client(s3_endpoint_url).download_file(bucket, key, str(path))
            except (ClientError, BotoCoreError) as exc:
                raise InputError(
                    f"cannot read batch {source}: {exc}",
                    hint="check the bucket and key, credentials and MLOPS_S3_ENDPOINT_URL",
                ) from exc
        else:
            path = Path(source)
        if not path.is_file():
            raise InputError(
                f"batch file {source} does not exist", hint="pass the path of a .csv or .parquet file"
            )
        if path.stat().st_size == 0:
            raise InputError(f"batch {source} is an empty file", hint="check the export that produced it")
        chunks = (
            _csv_chunks(path, chunk_rows, source, text_columns)
            if suffix == "csv"
            else _parquet_chunks(path, chunk_rows, source)
        )
        yielded = False
        for chunk in chunks:
            if chunk.empty:
                continue
            yielded = True
            yield chunk
        if not yielded:
            raise InputError(
                f"batch {source} has no rows", hint="an empty batch is never scored; check the export"
            )


# --- validating --------------------------------------------------------------------------


@dataclass
class BatchValidation:
    """A batch validated chunk by chunk: the merged summary and one valid snapshot per chunk."""

    summary: ValidationSummary
    snapshots: list[SnapshotRef]
    timings: Timings = field(default_factory=Timings)

    @property
    def accepted(self) -> bool:
        return self.summary.accepted


class _SeenValues:
    """64-bit hashes of the text of the ``unique`` columns' values in earlier chunks (sorted).

    A chunk's values are hashed only once a later chunk arrives (:meth:`remember` keeps the
    column until then), so a batch that fits in one chunk hashes nothing.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.seen: dict[str, np.ndarray] = {name: np.empty(0, dtype=np.uint64) for name in names}
        self._pending: dict[str, list[pd.Series]] = {name: [] for name in names}

    @staticmethod
    def _hash(values: pd.Series) -> np.ndarray:
        return pd.util.hash_array(values.astype(str).to_numpy(dtype=object))

    def _flush(self, name: str) -> np.ndarray:
        pending, self._pending[name] = self._pending[name], []
        if pending:
            parts = [self.seen[name], *(self._hash(values) for values in pending)]
            self.seen[name] = np.sort(np.concatenate(parts))
        return self.seen[name]

    def check(self, valid: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per column: the mask of valid rows whose value was seen in an earlier chunk."""
        masks = {}
        for name in self.names:
            seen = self._flush(name)
            if len(seen):
                h = self._hash(valid[name])
                found = seen[np.minimum(np.searchsorted(seen, h), len(seen) - 1)] == h
            else:
                found = np.zeros(len(valid), dtype=bool)
            masks[name] = valid[name].notna().to_numpy() & found
        return masks

    def remember(self, valid: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        """Keep, for later chunks, the values of this chunk's rows that break no rule but
        uniqueness, as a whole batch judges duplicates among them (mlops.validation.row_masks):
        its valid rows, and its rows quarantined only as duplicates (a duplicate of one unique
        column still holds its value of another). A row quarantined for its own fault is not a
        kept copy: a later good copy of it is kept."""
        reasons = quarantine[QUARANTINE_REASONS_COLUMN].astype(str).str.split(";")
        only_duplicates = reasons.map(lambda rs: all(r.endswith(f":{DUPLICATE}") for r in rs)).to_numpy(bool)
        for name in self.names:
            self._pending[name].append(valid[name].dropna())
            if only_duplicates.any():
                # Quarantined rows hold the raw text: trimmed, as validation reads a text id.
                raw = quarantine.loc[only_duplicates, name].dropna().astype(str).str.strip()
                self._pending[name].append(raw[raw != ""])


def _merge_outcomes(outcomes: list[ExpectationOutcome], rows_read: int) -> list[ExpectationOutcome]:
    merged: dict[tuple[str, str | None], ExpectationOutcome] = {}
    for o in outcomes:
        key = (o.expectation, o.column)
        if key not in merged:
            merged[key] = o.model_copy()
            continue
        m = merged[key]
        count = (m.unexpected_count or 0) + (o.unexpected_count or 0)
        m.unexpected_count = count
        m.unexpected_percent = 100.0 * count / rows_read if rows_read else None
        m.error = m.error or o.error
    return list(merged.values())


@dataclass
class _Merge:
    contract: Contract
    source: str
    limit: float
    #: One validation time for every chunk (the bound of ``not_in_future`` columns).
    checked_at: datetime
    rows_read: int = 0
    rows_valid: int = 0
    gx_success: bool = True
    reason_counts: dict[str, int] = field(default_factory=dict)
    failed: list[ExpectationOutcome] = field(default_factory=list)
    expectations: int = 0
    extra_columns: list[str] = field(default_factory=list)
    quarantine: list[pd.DataFrame] = field(default_factory=list)
    entries: list[CatalogEntry] = field(default_factory=list)

    @property
    def rows_quarantined(self) -> int:
        return sum(len(q) for q in self.quarantine)

    def summary(self) -> ValidationSummary:
        share = self.rows_quarantined / self.rows_read if self.rows_read else 0.0
        return ValidationSummary(
            contract=self.contract.name,
            contract_version=self.contract.version,
            source=self.source,
            rows_read=self.rows_read,
            rows_valid=self.rows_valid,
            rows_quarantined=self.rows_quarantined,
            quarantined_share=share,
            max_quarantine_share=self.limit,
            gx_success=self.gx_success,
            accepted=batch_accepted(
                gx_success=self.gx_success, share=share, limit=self.limit, rows_valid=self.rows_valid
            ),
            reason_counts=dict(sorted(self.reason_counts.items())),
            failed_expectations=_merge_outcomes(self.failed, self.rows_read),
            expectations_evaluated=self.expectations,
            extra_columns=self.extra_columns,
            checked_at=self.checked_at,
            latest_allowed=(
                self.contract.latest_allowed(self.checked_at) if self.contract.not_in_future_columns else None
            ),
        )


def _drop_duplicates(
    raw: pd.DataFrame,
    valid: pd.DataFrame,
    quarantine: pd.DataFrame,
    seen: _SeenValues,
    merge: _Merge,
    remember: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quarantine valid rows whose unique value appeared in an earlier chunk; remember this chunk's."""
    masks = seen.check(valid)
    dup = np.logical_or.reduce(list(masks.values()))
    if remember:
        seen.remember(valid, quarantine)
    if not dup.any():
        return valid, quarantine
    valid_rows = np.setdiff1d(np.arange(len(raw)), quarantine[SOURCE_ROW_COLUMN].to_numpy())
    reasons = [
        ";".join(f"{name}:{DUPLICATE}" for name in seen.names if masks[name][i]) for i in np.flatnonzero(dup)
    ]
    for name in seen.names:
        label = f"{name}:{DUPLICATE}"
        merge.reason_counts[label] = merge.reason_counts.get(label, 0) + int(masks[name].sum())
    extra = quarantine_frame(raw, valid_rows[dup], reasons)
    quarantine = pd.concat([quarantine, extra], ignore_index=True).sort_values(SOURCE_ROW_COLUMN)
    return valid.loc[~dup].reset_index(drop=True), quarantine.reset_index(drop=True)


def _validate_chunk(
    raw: pd.DataFrame,
    index: int,
    offset: int,
    runner: Any,
    merge: _Merge,
    seen: _SeenValues,
    *,
    max_share: float | None,
    run_name: str,
    last: bool,
    timings: Timings,
) -> pd.DataFrame:
    """Validate one chunk into ``merge``; returns its valid rows (the rest dies with this frame)."""
    t = time.perf_counter()
    part = validate_frame(
        raw,
        merge.contract,
        runner,
        source=merge.source,
        max_share=max_share,
        run_name=f"{run_name}-{index}",
        checked_at=merge.checked_at,
    )
    t = timings.add("validate", t)
    s = part.summary
    merge.gx_success &= s.gx_success
    merge.failed.extend(s.failed_expectations)
    merge.expectations = max(merge.expectations, s.expectations_evaluated)
    merge.extra_columns = merge.extra_columns or s.extra_columns
    for reason, count in s.reason_counts.items():
        merge.reason_counts[reason] = merge.reason_counts.get(reason, 0) + count
    valid, quarantine = part.valid, part.quarantine
    del part
    if seen.names and len(valid):
        valid, quarantine = _drop_duplicates(raw, valid, quarantine, seen, merge, remember=not last)
    if len(quarantine):
        quarantine = quarantine.copy()
        quarantine[SOURCE_ROW_COLUMN] = quarantine[SOURCE_ROW_COLUMN].to_numpy() + offset
        merge.quarantine.append(quarantine.reset_index(drop=True))
    merge.rows_read += len(raw)
    merge.rows_valid += len(valid)
    timings.add("unique_across_chunks", t)
    return valid


def validate_in_chunks(
    chunks: Iterator[pd.DataFrame],
    contract: Contract,
    runner: Any,
    store: ObjectStore,
    *,
    source: str,
    max_share: float | None = None,
    run_name: str = "score",
    catalog: bool = True,
    chunk_rows: int | None = None,
    checked_at: datetime | None = None,
) -> BatchValidation:
    """Validate each raw chunk with ``validate_frame``, store its valid rows as a snapshot,
    merge the chunks' verdicts (see the module doc) and catalogue the snapshots if accepted.

    ``chunk_rows`` (the size the chunks were read at) lets a short chunk be known as the last
    one, which then skips remembering its unique values. ``checked_at`` (default now) is the
    validation time of every chunk: a retry or resume passes its batch's first one, so rows
    then in the future stay quarantined and the snapshots come out the same.
    """
    if contract.keep_on_duplicate != "first":
        # Chunks are written as they are validated: a later chunk cannot take back an id an
        # earlier one kept, so only "first" holds across a chunked batch.
        raise InputError(
            f"contract {contract.name!r} keeps the latest row of a repeated id "
            "(keep_on_duplicate: latest); a batch scored in chunks can keep only the first",
            hint="set keep_on_duplicate: first in the applications contract",
        )
    timings = Timings()
    limit = contract.max_quarantine_share if max_share is None else max_share
    merge = _Merge(contract=contract, source=source, limit=limit, checked_at=checked_at or datetime.now(UTC))
    seen = _SeenValues([c.name for c in contract.columns if c.unique])
    ts = contract.timestamp_column
    snapshots: list[SnapshotRef] = []
    t = time.perf_counter()
    for index, raw in enumerate(chunks):
        timings.add("read_batch", t)
        last = chunk_rows is not None and len(raw) < chunk_rows
        offset = merge.rows_read
        valid = _validate_chunk(
            raw.reset_index(drop=True),
            index,
            offset,
            runner,
            merge,
            seen,
            max_share=max_share,
            run_name=run_name,
            last=last,
            timings=timings,
        )
        del raw
        t = time.perf_counter()
        if len(valid):
            ref = write_snapshot(store, valid, dataset=contract.name, kind=KIND_VALID)
            snapshots.append(ref)
            merge.entries.append(
                CatalogEntry(
                    dataset=contract.name,
                    contract_version=contract.version,
                    sha256=ref.sha256,
                    uri=ref.uri,
                    rows=ref.rows,
                    source=source if index == 0 else f"{source}#chunk{index}",
                    ingested_at=datetime.now(UTC),
                    min_timestamp=valid[ts].min() if ts else None,
                    max_timestamp=valid[ts].max() if ts else None,
                )
            )
        del valid
        t = timings.add("write_snapshots", t)
    if merge.rows_read == 0:
        raise InputError(f"batch {source} has no rows", hint="an empty batch is never scored")
    summary = merge.summary()
    if len(snapshots) == 1:
        summary.snapshot_sha256, summary.snapshot_uri = snapshots[0].sha256, snapshots[0].uri
    if merge.quarantine:
        q = pd.concat(merge.quarantine, ignore_index=True)
        q[QUARANTINE_REASONS_COLUMN] = q[QUARANTINE_REASONS_COLUMN].astype(str)
        qref = write_snapshot(store, q, dataset=contract.name, kind=KIND_QUARANTINE)
        summary.quarantine_sha256, summary.quarantine_uri = qref.sha256, qref.uri
    if catalog and summary.accepted:
        for entry in merge.entries:
            record_snapshot(store, entry)
    timings.add("write_snapshots", t)
    assert summary.rows_valid + summary.rows_quarantined == summary.rows_read
    return BatchValidation(summary=summary, snapshots=snapshots, timings=timings)


def read_valid_snapshot(store: ObjectStore, dataset: str, sha256: str) -> pd.DataFrame:
    """A valid snapshot, hash-checked (see :func:`mlops.storage.read_snapshot`)."""
    from mlops.storage import read_snapshot

    return read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=sha256)
