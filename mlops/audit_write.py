"""Appending to the audit chain: bulk prediction batches and single events.

Every append runs in one transaction that first locks the chain head (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL and others: ``SELECT ... FOR UPDATE`` on the one-row
``audit_chain_head``), so two writers can never link to the same predecessor. A batch is
all-or-nothing: it is encoded, hashed and written in chunks inside that one transaction.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from mlops.audit_encode import (
    DECIDING_ROLES,
    PREDICTION_COLUMNS,
    RECORD_PREDICTION,
    RECORD_SCORING_BATCH,
    REQUIRED_PREDICTION_COLUMNS,
    ROLES,
    DecidingRows,
    EncodedChunk,
    RecordIds,
    encode_chunk,
    validate_predictions,
)
from mlops.audit_hashing import chain_hashes, check_hex64, normalise_payload, record_hash
from mlops.audit_schema import (
    CASE_SUPERSEDED,
    OPEN_CASE,
    audit_chain_head,
    audit_records,
    is_event,
    qualified,
    review_cases,
)
from mlops.errors import InputError, MlopsError

__all__ = [
    "DECIDING_ROLES",
    "RECORD_GUARDS_RESTORED",
    "RECORD_PREDICTION",
    "RECORD_PROMOTION",
    "RECORD_REVIEW",
    "RECORD_REVIEW_OPENED",
    "RECORD_ROLLBACK",
    "REQUIRED_PREDICTION_COLUMNS",
    "ROLES",
    "AppendResult",
    "AuditStoreError",
    "EncodedPredictions",
    "append_encoded",
    "append_event",
    "append_events_locked",
    "append_predictions",
    "chain_transaction",
    "encode_predictions",
    "event_fields",
    "lock_head",
]

RECORD_REVIEW: Final = "review"
RECORD_REVIEW_OPENED: Final = "review_opened"
RECORD_PROMOTION: Final = "promotion"
RECORD_ROLLBACK: Final = "rollback"
RECORD_GUARDS_RESTORED: Final = "guards_restored"  # append-only triggers found dropped, installed again
CHUNK_ROWS: Final = 50_000
_SQLITE_ROWS_PER_INSERT: Final = 1000
_SQLITE_DATETIME: Final = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
_WRITE_ORDER: Final = ("seq", "created_at", *PREDICTION_COLUMNS, "prev_hash", "record_hash")


class AuditStoreError(MlopsError):
    """The audit store is not usable (schema missing, unreachable database)."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote: the seq range, the record ids in input order, the new head."""

    first_seq: int
    last_seq: int
    record_ids: pd.Series
    head_hash: str
    created_at: datetime
    cases_opened: int = 0
    cases_superseded: int = 0

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


# --- transactions and the chain head ---------------------------------------------------


@contextmanager
def chain_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction holding the chain lock from its first statement on.

    SQLite: ``BEGIN IMMEDIATE`` (driver autocommit off, so we own BEGIN/COMMIT). Others: an
    ordinary transaction; :func:`lock_head` then takes ``SELECT ... FOR UPDATE``.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
    else:
        with engine.begin() as conn:
            yield conn


def lock_head(conn: Connection) -> tuple[int, str]:
    """The chain head (seq, hash), locked for this transaction."""
    stmt = sa.select(audit_chain_head.c.seq, audit_chain_head.c.record_hash).where(audit_chain_head.c.id == 1)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    try:
        row = conn.execute(stmt).first()
    except (OperationalError, ProgrammingError) as exc:
        raise AuditStoreError(
            f"the audit store has no schema ({type(exc.orig).__name__})",
            hint="call mlops.audit.create_schema(engine) once",
        ) from exc
    if row is None:
        raise AuditStoreError(
            "the audit chain head row is missing", hint="call mlops.audit.create_schema(engine)"
        )
    return int(row.seq), str(row.record_hash)


def _set_head(conn: Connection, seq: int, head_hash: str) -> None:
    conn.execute(
        audit_chain_head.update().where(audit_chain_head.c.id == 1).values(seq=seq, record_hash=head_hash)
    )


def _now() -> datetime:
    return datetime.now(UTC)


# --- events ------------------------------------------------------------------------------


def event_fields(
    record_type: str,
    payload: Mapping[str, Any] | None,
    columns: Mapping[str, Any],
) -> dict[str, Any]:
    allowed = {"batch_id", "entity_key", "model_name", "model_version", "model_alias", "decision"}
    unknown = set(columns) - allowed
    if unknown:
        raise InputError(f"an event cannot set {sorted(unknown)}; put them in the payload")
    fields: dict[str, Any] = dict.fromkeys(PREDICTION_COLUMNS[2:])  # all but record_id, record_type
    for name, value in columns.items():
        fields[name] = None if value is None else str(value)
    if fields["entity_key"] is not None:
        check_hex64([fields["entity_key"]], "entity_key")
    fields["record_type"] = record_type
    fields["payload"] = normalise_payload(payload)
    return fields


def append_events_locked(
    conn: Connection, events: Sequence[Mapping[str, Any]]
) -> tuple[datetime, list[tuple[int, str, str]]]:
    """Append prepared event fields inside a :func:`chain_transaction`.

    Returns the records' created_at and (seq, record_id, record_hash) of each.
    """
    seq, prev = lock_head(conn)
    created_at = _now()
    rows: list[dict[str, Any]] = []
    written: list[tuple[int, str, str]] = []
    for fields, record_id in zip(events, RecordIds().take(len(events)), strict=True):
        seq += 1
        full = {**fields, "record_id": record_id, "created_at": created_at}
        digest = record_hash(prev, full)
        rows.append({**full, "seq": seq, "prev_hash": prev, "record_hash": digest})
        written.append((seq, record_id, digest))
        prev = digest
    if rows:
        conn.execute(audit_records.insert(), rows)
        _set_head(conn, seq, prev)
    return created_at, written


def _check_record_type(record_type: str) -> None:
    if record_type == RECORD_PREDICTION:
        raise InputError("predictions are appended with append_predictions, not as events")
    if not record_type.isidentifier() or not record_type.islower() or len(record_type) > 32:
        raise InputError(f"record_type must be a short lowercase identifier, got {record_type!r}")


def append_event(
    engine: Engine,
    record_type: str,
    payload: Mapping[str, Any],
    *,
    model_name: str | None = None,
    model_version: str | int | None = None,
    model_alias: str | None = None,
    batch_id: str | None = None,
    decision: str | None = None,
    guard: Callable[[Connection], None] | None = None,
) -> AppendResult:
    """Append one non-prediction record (review, promotion, rollback, ...) to the chain.

    ``payload`` is a JSON object (reviewer, decision, reason / promotion evidence, ...);
    floats must be finite. It is stored in the ``payload`` JSON column and hashed canonically.
    ``guard`` runs first, with the chain locked (as for :func:`append_encoded`); an error it
    raises writes nothing.
    """
    _check_record_type(record_type)
    fields = event_fields(
        record_type,
        payload,
        {
            "model_name": model_name,
            "model_version": model_version,
            "model_alias": model_alias,
            "batch_id": batch_id,
            "decision": decision,
        },
    )
    with chain_transaction(engine) as conn:
        if guard is not None:
            lock_head(conn)
            guard(conn)
        created_at, ((seq, record_id, digest),) = append_events_locked(conn, [fields])
    return AppendResult(seq, seq, pd.Series([record_id], dtype=object), digest, created_at)


# --- predictions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """One chunk of predictions ready to link: everything that does not depend on the chain.

    ``tails`` are the records' canonical bytes after ``created_at``; ``body`` their rows for
    the store's dialect (an object grid on SQLite, COPY text on PostgreSQL, column lists
    elsewhere) without seq, created_at and the two hashes; ``cases`` the review cases the
    chunk opens, without ``created_at``; ``deciding`` its deciding rows, which supersede their
    applications' open cases (None: the append opens no cases).
    """

    record_ids: list[str]
    tails: list[bytes]
    body: Any
    cases: list[dict[str, Any]]
    deciding: DecidingRows | None

    def __len__(self) -> int:
        return len(self.record_ids)


@dataclass(frozen=True, slots=True)
class EncodedPredictions:
    """A validated prediction batch, encoded for one dialect (see :func:`encode_predictions`)."""

    dialect: str
    index: pd.Index
    chunks: tuple[PreparedChunk, ...]
    batch_id: str


def _prepare_chunk(chunk: EncodedChunk, dialect: str, open_cases: bool) -> PreparedChunk:
    body: Any
    if dialect == "sqlite":
        body = chunk.row_grid(len(_WRITE_ORDER), first=2)
    elif dialect == "postgresql":
        body = chunk.copy_rows()
    else:
        body = chunk.db_columns()
    cases = chunk.case_stubs() if open_cases else []
    deciding = chunk.deciding_rows() if open_cases else None
    return PreparedChunk(chunk.record_id, chunk.hash_tails(), body, cases, deciding)


def encode_predictions(
    batch: pd.DataFrame | Mapping[str, Any],
    *,
    batch_id: str,
    dialect: str,
    hash_key: SecretStr | str | bytes | None = None,
    open_cases: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> EncodedPredictions:
    """Validate and encode a prediction batch for :func:`append_encoded` (see
    :func:`append_predictions` for the columns). Needs no database: a scoring thread encodes
    the next chunk while a writer links and inserts the previous one."""
    try:
        frame = batch if isinstance(batch, pd.DataFrame) else pd.DataFrame(dict(batch))
    except (TypeError, ValueError) as exc:
        raise InputError(f"prediction batch: cannot make a frame of the columns ({exc})") from exc
    if not batch_id:
        raise InputError("prediction batch: batch_id is required")
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
    validate_predictions(frame, hash_key)
    ids = RecordIds()
    chunks = tuple(
        _prepare_chunk(
            encode_chunk(frame.iloc[s : s + chunk_rows], batch_id, hash_key, ids), dialect, open_cases
        )
        for s in range(0, len(frame), chunk_rows)
    )
    return EncodedPredictions(dialect, frame.index, chunks, batch_id)


def _write_chunk(
    conn: Connection,
    first_seq: int,
    created_at: datetime,
    chunk: PreparedChunk,
    prevs: list[str],
    hashes: list[str],
) -> None:
    n = len(hashes)
    table = qualified(conn, audit_records)
    column_list = ", ".join(_WRITE_ORDER)
    dialect = conn.dialect.name
    if dialect == "sqlite":
        grid = chunk.body
        grid[:, 0] = np.arange(first_seq, first_seq + n, dtype=np.int64).tolist()
        grid[:, 1] = created_at.strftime(_SQLITE_DATETIME)
        grid[:, -2] = prevs
        grid[:, -1] = hashes
        _sqlite_insert_grid(
            conn.connection.dbapi_connection, f"INSERT INTO {table} ({column_list}) VALUES", grid
        )
    elif dialect == "postgresql":
        created = created_at.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        text = "".join(
            [
                f"{seq}\t{created}\t{mid}\t{p}\t{h}\n"
                for seq, mid, p, h in zip(
                    range(first_seq, first_seq + n), chunk.body, prevs, hashes, strict=True
                )
            ]
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.copy_expert(f"COPY {table} ({column_list}) FROM STDIN", io.StringIO(text), 1 << 20)
        cursor.close()
    else:
        rows_dicts = [
            dict(zip(_WRITE_ORDER, values, strict=True))
            for values in zip(
                range(first_seq, first_seq + n), repeat(created_at), *chunk.body, prevs, hashes, strict=False
            )
        ]
        conn.execute(audit_records.insert(), rows_dicts)


def _sqlite_insert_grid(dbapi: Any, insert: str, grid: np.ndarray) -> None:
    """Insert the rows of the object array ``grid`` with multi-row ``INSERT ... VALUES (...), (...)``.

    Our own code to beat the driver's ``executemany``: one statement per ~1000 rows binds
    them all and then runs one ``sqlite3_step`` for the lot, which the driver runs without
    the GIL, so a scoring thread keeps working meanwhile (``executemany`` steps, and so
    takes the GIL back, once per row). The parameters are taken row-major from one object
    array instead of building a tuple per row. Same rows, same order, same transaction.
    """
    n, width = grid.shape
    if n == 0:
        return
    limit = dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per_statement = max(1, min(_SQLITE_ROWS_PER_INSERT, limit // width))
    one = "(" + ", ".join("?" * width) + ")"
    full = f"{insert} {', '.join([one] * per_statement)}"
    cursor = dbapi.cursor()
    try:
        whole = n - n % per_statement
        for start in range(0, whole, per_statement):
            cursor.execute(full, grid[start : start + per_statement].ravel().tolist())
        if whole < n:
            cursor.executemany(f"{insert} {one}", grid[whole:].tolist())
    finally:
        cursor.close()


def append_encoded(
    engine: Engine, encoded: EncodedPredictions, *, guard: Callable[[Connection], None] | None = None
) -> AppendResult:
    """Link an encoded batch to the chain and write it, as one transaction (see
    :func:`append_predictions`). A batch is appended once: a second append of it fails on
    its record ids (unique in the store) and writes nothing. A failed append (rolled back)
    can be retried with the same encoded batch. ``guard`` runs first, with the chain locked;
    an error it raises writes nothing."""
    if encoded.dialect != engine.dialect.name:
        raise ValueError(f"the batch was encoded for {encoded.dialect}, the store is {engine.dialect.name}")
    all_ids: list[str] = []
    with chain_transaction(engine) as conn:
        head_seq, head_hash = lock_head(conn)
        if guard is not None:
            guard(conn)
        created_at = _now()
        seq = head_seq
        case_rows: list[dict[str, Any]] = []
        deciding: list[DecidingRows] = []
        for chunk in encoded.chunks:
            hashes = chain_hashes(head_hash, created_at, chunk.tails)
            _write_chunk(conn, seq + 1, created_at, chunk, [head_hash, *hashes[:-1]], hashes)
            case_rows.extend(dict(case) for case in chunk.cases)  # edited by the supersede check
            if chunk.deciding is not None:
                deciding.append(chunk.deciding)
            seq += len(hashes)
            head_hash = hashes[-1]
            all_ids.extend(chunk.record_ids)
        superseded = supersede_open_cases(conn, case_rows, deciding, encoded.batch_id) if deciding else 0
        _insert_cases(conn, case_rows, created_at)
        _set_head(conn, seq, head_hash)
    record_ids = pd.Series(all_ids, index=encoded.index, dtype=object, name="record_id")
    return AppendResult(head_seq + 1, seq, record_ids, head_hash, created_at, len(case_rows), superseded)


_CASE_COLUMNS: Final = (
    "case_id",
    "status",
    "routing_reason",
    "created_at",
    "batch_id",
    "model_name",
    "model_version",
    "role",
    "score",
    "entity_key",
    "superseded_by",
)


def _insert_cases(conn: Connection, cases: list[dict[str, Any]], created_at: datetime) -> None:
    """Insert the review cases an append opens (stubs of :meth:`EncodedChunk.case_stubs`).

    On SQLite through :func:`_sqlite_insert_grid`, as the records: the driver's
    ``executemany`` (SQLAlchemy's path there) takes the GIL back for every row, and a scoring
    thread holds it most of the time (83k cases of a 1M-row batch: 2.7 s of the writer's time
    in a profile). ``created_at`` is stored as SQLAlchemy stores it there."""
    if not cases:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(review_cases.insert(), [{**case, "created_at": created_at} for case in cases])
        return
    grid = np.empty((len(cases), len(_CASE_COLUMNS)), dtype=object)
    for j, name in enumerate(_CASE_COLUMNS):
        if name == "created_at":
            grid[:, j] = created_at.strftime(_SQLITE_DATETIME)
        else:
            grid[:, j] = [case.get(name) for case in cases]
    table = qualified(conn, review_cases)
    _sqlite_insert_grid(
        conn.connection.dbapi_connection, f"INSERT INTO {table} ({', '.join(_CASE_COLUMNS)}) VALUES", grid
    )


_KEYS_PER_LOOKUP: Final = 500


def supersede_open_cases(
    conn: Connection, new_cases: list[dict[str, Any]], deciding: list[DecidingRows], batch_id: str
) -> int:
    """Mark the open cases of the applications decided again in this append superseded.

    A person reviews the application's latest decision, not an earlier one: an application
    scored again (a re-submitted or re-scored batch) would otherwise sit in the queue twice, or
    wait for a review its later automatic decision made moot. ``deciding`` holds every deciding
    (champion, canary) row of the append, chunk by chunk in order; the last row of an
    application supersedes its open case: ``superseded_by`` is that prediction's id, which is a
    case id too when it was routed. The superseded case keeps its row; its prediction record is
    untouched. Among ``new_cases`` (edited in place), a case whose application is decided again
    later in the same append is superseded at once. A case of a batch whose scoring began after
    this batch's (a resumed or long batch finishing after a newer one) is about newer data and
    stays open: an older application's decision does not make its review moot. Open cases of the same ``batch_id`` from
    earlier appends are left alone: a batch decides each application once (scoring refuses
    repeated ids; a resume writes only rows not written), and a large batch's own cases would
    otherwise be read again for every chunk. Resolved cases are never superseded. Returns how
    many cases were superseded.
    """
    models = set().union(*(rows.models() for rows in deciding))
    queued = {model: _other_open_cases(conn, model, batch_id) for model in models}
    with_cases = {str(case["model_name"]) for case in new_cases}
    latest: dict[str, dict[str, str]] = {}  # model -> entity key -> its last deciding row
    for model in models:
        if queued[model] or model in with_cases:
            for rows in deciding:
                rows.latest(model, latest.setdefault(model, {}))
    within = 0
    for case in new_cases:
        successor = latest.get(str(case["model_name"]), {}).get(str(case["entity_key"]))
        if successor is not None and successor != case["case_id"]:
            case["status"], case["superseded_by"] = CASE_SUPERSEDED, successor
            within += 1
        else:
            case["superseded_by"] = None
    found = {
        model: _open_cases_of(conn, model, latest[model], batch_id, queued[model])
        for model in models
        if queued[model]
    }
    later = _batches_started_after(
        conn, batch_id, {b for cases in found.values() for _, _, b in cases if b is not None}
    )
    updates = [
        {"old": case_id, "new": latest[model][key]}
        for model, cases in found.items()
        for case_id, key, case_batch in cases
        if case_batch not in later
    ]
    if updates:
        c = review_cases.c
        conn.execute(
            review_cases.update()
            .where(c.case_id == sa.bindparam("old"))
            .values(status=CASE_SUPERSEDED, superseded_by=sa.bindparam("new")),
            updates,
        )
    return len(updates) + within


def _other_batches(batch_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    """Cases of other batches than ``batch_id``, as three ranges of ``ix_review_cases_open_batch``
    queried one at a time: with ``IS NOT`` or one ``OR`` SQLite searched every index entry of
    the model, the batch's own included (a large batch's own cases, read for every chunk)."""
    c = review_cases.c
    return (c.batch_id < batch_id, c.batch_id > batch_id, c.batch_id.is_(None))


def _other_open_cases(conn: Connection, model: str, batch_id: str) -> int:
    """How many open cases ``model`` has from other batches than ``batch_id``."""
    c = review_cases.c
    stmt = sa.select(sa.func.count()).select_from(review_cases).where(OPEN_CASE, c.model_name == model)
    return sum(int(conn.execute(stmt.where(part)).scalar_one()) for part in _other_batches(batch_id))


def _batches_started_after(conn: Connection, batch_id: str, others: set[str]) -> set[str]:
    """Of ``others``, the batches whose ``scoring_batch`` record comes after ``batch_id``'s in the
    chain (none when ``batch_id`` has no such record: predictions appended without a batch)."""
    if not others:
        return set()
    r = audit_records.c
    rows = conn.execute(
        sa.select(r.batch_id, sa.func.min(r.seq))
        .where(is_event(RECORD_SCORING_BATCH), r.batch_id.in_([batch_id, *sorted(others)]))
        .group_by(r.batch_id)
    ).all()
    began = {str(b): int(seq) for b, seq in rows}
    mine = began.get(batch_id)
    return set() if mine is None else {b for b, seq in began.items() if seq > mine}


def _open_cases_of(
    conn: Connection, model: str, keys: Mapping[str, str], batch_id: str, in_queue: int
) -> list[tuple[str, str, str | None]]:
    """(case id, entity key, batch id) of the open cases of ``model`` for these entity keys, except those of
    ``batch_id`` (``in_queue`` of them: :func:`_other_open_cases`).

    Through the partial indexes of open cases, whichever way is cheaper: when the queue is
    shorter than four times the keys, it reads the queue's entity keys and matches them here
    (0.7 us per open case: 80k open cases 0.05 s); otherwise it looks the keys up a few hundred
    at a time (3 us per key).
    """
    c = review_cases.c
    wanted = list(keys)
    if in_queue <= 4 * len(keys):
        wanted = [key for key in _open_case_keys(conn, model, batch_id) if key in keys]
    found: list[tuple[str, str, str | None]] = []
    for start in range(0, len(wanted), _KEYS_PER_LOOKUP):
        rows = conn.execute(
            sa.select(c.case_id, c.entity_key, c.batch_id).where(
                OPEN_CASE,
                c.model_name == model,
                c.entity_key.in_(wanted[start : start + _KEYS_PER_LOOKUP]),
                c.batch_id.is_distinct_from(batch_id),  # by key: the entity index, then this check
            )
        )
        found += [(str(r.case_id), r.entity_key, r.batch_id) for r in rows]
    return found


def _open_case_keys(conn: Connection, model: str, batch_id: str) -> list[str]:
    """The entity keys of ``model``'s open cases of other batches than ``batch_id`` (from
    ``ix_review_cases_open_batch`` alone)."""
    c = review_cases.c
    parts = (
        sa.select(c.entity_key).where(OPEN_CASE, c.model_name == model, part)
        for part in _other_batches(batch_id)
    )
    return [key for (key,) in _driver_rows(conn, sa.union_all(*parts))]


def _driver_rows(conn: Connection, stmt: sa.CompoundSelect) -> list[Any]:
    """``stmt``'s rows fetched by the DB-API cursor. Our own code to beat SQLAlchemy's row
    handling, which took 3-4x as long for the entity keys of a long queue (80k keys: 0.17 s
    against 0.04 s), read for every chunk a scoring run writes. The statement is SQLAlchemy's,
    compiled for the connection (its dialect, parameter style and schema translation)."""
    translate = conn.get_execution_options().get("schema_translate_map")
    compiled = stmt.compile(
        dialect=conn.dialect, schema_translate_map=translate, render_schema_translate=bool(translate)
    )
    params: Any = compiled.params
    if compiled.positiontup is not None:  # qmark / format styles: positional
        params = tuple(params[name] for name in compiled.positiontup)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def append_predictions(
    engine: Engine,
    batch: pd.DataFrame | Mapping[str, Any],
    *,
    batch_id: str,
    hash_key: SecretStr | str | bytes | None = None,
    open_cases: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> AppendResult:
    """Append one audit record per row of ``batch``, in row order, as one transaction.

    ``batch`` is a DataFrame (or a mapping of columns; scalars broadcast) with the columns
    ``model_name, model_version, role, score, decision, input_snapshot, input_row,
    input_hash`` and either ``entity_key`` (an HMAC hex from :func:`entity_key`) or
    ``entity_id`` plus ``hash_key`` (keyed here; the raw id is never written). Optional:
    ``model_alias``, ``confidence``, ``review_routed``, ``review_reason``. Other columns
    (features, sensitive attributes) are ignored and never stored.

    With ``open_cases`` a review case is opened, in the same transaction, for every routed
    row of a deciding role (champion, canary). Returns the seq range and the record ids
    (a Series on the batch's index). Nothing is written if any row is invalid.
    :func:`encode_predictions` + :func:`append_encoded` are the same in two steps.
    """
    encoded = encode_predictions(
        batch,
        batch_id=batch_id,
        dialect=engine.dialect.name,
        hash_key=hash_key,
        open_cases=open_cases,
        chunk_rows=chunk_rows,
    )
    return append_encoded(engine, encoded)
