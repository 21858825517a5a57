"""Tamper-evident audit store and review queue (plain Python; SQLite or PostgreSQL).

Every prediction gets one append-only record in ``audit_records``; reviews, promotions and
rollbacks are appended to the same chain. Each record stores the sha256 of its canonical
form, and the canonical form includes the previous record's hash, so editing, deleting,
inserting or reordering records breaks the chain where it happened.

Public API (all take a SQLAlchemy ``Engine``; :func:`create_audit_engine` makes a good one)::

    create_schema(engine)
    append_predictions(engine, batch, *, batch_id, hash_key=None, open_cases=True) -> AppendResult
    append_event(engine, record_type, payload, *, model_name=None, model_version=None,
                 model_alias=None, batch_id=None, decision=None) -> AppendResult
    verify_chain(engine, *, anchors=(), page_size=10_000, anchor=False) -> ChainReport
    anchor_head(engine) -> Anchor; export_anchor(anchor, path); load_anchors(*paths)
    open_review_case(engine, case_id, reason, *, opened_by) -> ReviewCase
    routed_by_hand(engine, case) -> (who, why) | None
    list_open_cases(engine, model_name=None, *, limit=None) -> list[ReviewCase]
    count_open_cases(engine, model_name=None) -> int
    resolve_case(engine, case_id, reviewer, decision, reason) -> ReviewCase
    resolved_cases(engine, model_name=None) -> DataFrame
    entity_key(raw_id | Series, key) -> str | Series

Entity keys
-----------
Raw entity ids and sensitive attributes are never stored. ``entity_key`` is
``HMAC-SHA256(key, UTF-8 bytes of str(id))`` as lowercase hex, with ``key`` the UTF-8 bytes
of ``Settings.entity_hash_key``; integer ids are keyed by their decimal digits.

Canonical serialisation (format ``mlops-audit/1``)
--------------------------------------------------
``record_hash = lowercase hex sha256 of the UTF-8 bytes of the JSON array``::

    ["mlops-audit/1", prev_hash, created_at, record_id, record_type, batch_id, entity_key,
     model_name, model_version, model_alias, role, score, decision, confidence,
     review_routed, review_reason, input_snapshot, input_row, input_hash, payload]

written exactly like Python's ``json.dumps(values, ensure_ascii=False, separators=(",",
":"), sort_keys=True, allow_nan=False)``:

* no whitespace between tokens; strings in double quotes; ``"`` and ``\\`` escaped with a
  backslash; ``\\b \\f \\n \\r \\t`` for those controls and ``\\u00xx`` (lowercase hex) for
  the other characters below U+0020; every other character (non-ASCII, U+007F, U+2028)
  literally, encoded as UTF-8;
* ``prev_hash``: the previous record's ``record_hash``; for the first record (seq 1) 64 zeros;
* ``created_at``: UTC as ``"YYYY-MM-DDTHH:MM:SS.ffffffZ"`` (always 6 fraction digits);
* ``record_id``: the UUID in its lowercase 36-character form (UUIDv7: time-ordered);
  ``model_version`` is a string; hashes and keys are lowercase hex;
* floats (``score``, ``confidence``, floats in payloads): Python ``repr``, i.e. the shortest
  digit string that round-trips the float64, positional with at least one fraction digit
  (``0.1``, ``1.0``, ``0.0001``, ``1000000000000000.0``) when the decimal exponent is in
  [-4, 16), otherwise ``d.ddde±XX`` with at least two exponent digits (``1e-05``,
  ``1e+16``, ``2.5e-17``); NaN and infinities are refused;
* integers (``input_row``) in decimal; booleans ``true``/``false``; absent values ``null``;
* ``payload``: null, or a JSON object whose keys are sorted (recursively) by code point,
  the same rules inside; predictions have a null payload.

``seq`` is not hashed: it is the storage position, checked by the walk (gapless, in the
order of the prev links). A record's position is bound by its ``prev_hash``.

Verification and the kinds of break
-----------------------------------
:func:`verify_chain` walks records in seq order in pages (one read snapshot) and stops at
the first break, naming its seq, record id and kind:

* ``edited``: a record's content no longer matches its own hash (a field changed by UPDATE),
  or a record was re-hashed so its successor's link no longer finds it;
* ``deleted``: a seq gap whose next record links to a hash that is not in the store, or a
  tail shorter than the chain head / an anchor says;
* ``inserted``: a record the next record links past, a run of records the following record
  skips, or a record beyond the chain head;
* ``reordered``: a record whose predecessor is stored at a later seq;
* ``rewritten``: the chain verifies on its own but disagrees with an anchor or the chain
  head: history was rewritten with every later hash recomputed.

Threat model (honest version)
-----------------------------
The chain is keyless sha256: it makes tampering *evident*, it does not prevent it, and it
proves nothing against someone who can rewrite the database and every copy of its anchors.

* Catches: any UPDATE/DELETE/INSERT/reorder made with SQL by someone who did not also
  recompute the later hashes; a full rewrite of later hashes as soon as one anchor that
  postdates the rewritten record survives outside the writer's reach (an exported anchor
  file, a copy in another system). ``audit_anchors`` in the same database only helps against
  writers who forget it; ship anchors off the database (:func:`export_anchor`) often. The
  daily monitor keeps the head it verified in the object store (:func:`store_anchor`, another
  system than the database) and ``mlops audit verify`` checks those anchors too.
* Does not catch: records appended after the newest surviving anchor by a writer who also
  updates ``audit_chain_head`` (they look like genuine appends), nor the newest records
  deleted with the head rewritten to the last one kept (the CLI says so when no anchor was
  checked); a rewrite by someone who
  controls the database and every anchor copy; a dishonest writer process (the chain
  records what it was told). Database triggers refuse UPDATE/DELETE on the append-only
  tables, but anyone with DDL rights can drop (or, on PostgreSQL, disable) them: verify
  reports missing triggers, and the next command that opens the store installs them again
  and appends a ``guards_restored`` record, which verify counts from then on.
* The review queue table (``review_cases``) is mutable working state; the durable record of
  a resolution is its ``review`` record in the chain. Training reads review labels from those
  records, resolving refuses a case the chain resolved already, and :func:`verify_chain` holds
  the table against the chain (:mod:`mlops.audit_cases`): an edited, re-opened or made-up
  resolution, or a case whose prediction record is gone, makes the report not ``ok``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.audit_hashing import (
    CANONICAL_FIELDS,
    FORMAT_TAG,
    GENESIS_HASH,
    canonical_record_bytes,
    entity_key,
    record_hash,
)
from mlops.audit_review import (
    LABEL_BY_DECISION,
    InvalidReviewDecision,
    PredictionNotFound,
    ReviewCase,
    ReviewCaseAlreadyResolved,
    ReviewCaseNotFound,
    ReviewCaseRefused,
    ReviewCaseSuperseded,
    ReviewerNotAllowed,
    ReviewError,
    check_open,
    count_open_cases,
    get_case,
    list_open_cases,
    open_review_case,
    prediction_rows,
    resolve_case,
    resolved_cases,
    routed_by_hand,
    routed_by_hand_all,
)
from mlops.audit_schema import (
    audit_anchors,
    audit_chain_head,
    audit_records,
    create_audit_engine,
    create_schema,
    install_guards,
    is_event,
    missing_guards,
    review_cases,
    used_store_missing_guards,
)
from mlops.audit_verify import (
    Anchor,
    ChainBreak,
    ChainReport,
    anchor_head,
    export_anchor,
    load_anchors,
    store_anchor,
    stored_anchors,
    verify_chain,
)
from mlops.audit_write import (
    RECORD_GUARDS_RESTORED,
    RECORD_PREDICTION,
    RECORD_PROMOTION,
    RECORD_REVIEW,
    RECORD_REVIEW_OPENED,
    RECORD_ROLLBACK,
    ROLES,
    AppendResult,
    AuditStoreError,
    EncodedPredictions,
    append_encoded,
    append_event,
    append_events_locked,
    append_predictions,
    chain_transaction,
    encode_predictions,
    event_fields,
    lock_head,
)
from mlops.errors import InputError, SettingsError
from mlops.settings import Settings, ensure_home

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def open_audit_store(settings: Settings) -> Engine:
    """An engine on the audit store the settings name, with its schema in place (idempotent).

    The embedded profile's SQLite file lives under MLOPS_HOME, which is created if missing.
    """
    url = settings.resolved_audit_db_url
    if url.startswith("sqlite:///") and settings.audit_db_url is None:
        ensure_home(settings)
    with explained_store_errors(url):
        engine = create_audit_engine(url)
        ensure_schema(engine)
    return engine


def ensure_schema(engine: Engine) -> None:
    """:func:`create_schema`; on a used store whose append-only guards were dropped or disabled,
    a ``guards_restored`` record is appended and the guards installed again in one transaction
    holding the chain lock (checked again under it: two processes opening the store at once
    record one restore). Dropping the guards leaves that trace."""
    if used_store_missing_guards(engine):  # a read; the common case finds nothing to restore
        with chain_transaction(engine) as conn:
            lock_head(conn)
            missing = missing_guards(conn)
            if missing:
                payload = {
                    "restored": missing,
                    "note": "append-only guards were missing or disabled in a store holding records "
                    "(someone with DDL rights) and are installed again",
                }
                append_events_locked(conn, [event_fields(RECORD_GUARDS_RESTORED, payload, {})])
                install_guards(conn, missing)
    create_schema(engine)


def open_existing_audit_store(settings: Settings, *, upgrade: bool = False) -> Engine:
    """An engine on the audit store the settings name, which must exist already (InputError if
    not): the commands that read the store, or resolve its cases, never create one, so a
    mistyped ``MLOPS_HOME`` is named instead of answered with an empty store. ``upgrade``: give
    a store of an earlier release the review columns and indexes (:func:`create_schema`)."""
    import sqlalchemy as sa

    url = settings.resolved_audit_db_url
    where = "MLOPS_AUDIT_DB_URL" if settings.audit_db_url is not None else f"MLOPS_HOME ({settings.home_dir})"
    hint = f"score a batch first (mlops score PATH), or check {where}"
    with explained_store_errors(url):
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
            raise InputError(f"there is no audit store at {parsed.database}", hint=hint)
        engine = create_audit_engine(url)
        if not sa.inspect(engine).has_table("audit_records"):
            engine.dispose()
            raise InputError(f"the audit store {parsed.render_as_string()} has no audit tables", hint=hint)
        if upgrade:
            ensure_schema(engine)
    return engine


@contextmanager
def explained_store_errors(url: str) -> Iterator[None]:
    """SQLAlchemy's errors for a bad URL or an unreachable database, as our errors that name
    ``MLOPS_AUDIT_DB_URL`` (exit 2 in the CLI, no traceback)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    try:
        yield
    except (ArgumentError, NoSuchModuleError) as exc:
        raise SettingsError(
            f"MLOPS_AUDIT_DB_URL is not a database URL SQLAlchemy can use ({exc})",
            hint="e.g. postgresql+psycopg2://user@host:5432/db, or unset it for SQLite under MLOPS_HOME",
        ) from exc
    except OperationalError as exc:
        first_line = str(exc.orig or exc).strip().splitlines()[0]
        raise AuditStoreError(
            f"the audit store at {make_url(url).render_as_string(hide_password=True)} cannot be "
            f"reached ({first_line})",
            hint="check MLOPS_AUDIT_DB_URL and that the database is up",
        ) from exc


__all__ = [
    "CANONICAL_FIELDS",
    "FORMAT_TAG",
    "GENESIS_HASH",
    "LABEL_BY_DECISION",
    "RECORD_PREDICTION",
    "RECORD_PROMOTION",
    "RECORD_REVIEW",
    "RECORD_REVIEW_OPENED",
    "RECORD_ROLLBACK",
    "ROLES",
    "Anchor",
    "AppendResult",
    "AuditStoreError",
    "ChainBreak",
    "ChainReport",
    "EncodedPredictions",
    "InvalidReviewDecision",
    "PredictionNotFound",
    "ReviewCase",
    "ReviewCaseAlreadyResolved",
    "ReviewCaseNotFound",
    "ReviewCaseRefused",
    "ReviewCaseSuperseded",
    "ReviewError",
    "ReviewerNotAllowed",
    "anchor_head",
    "append_encoded",
    "append_event",
    "append_events_locked",
    "append_predictions",
    "audit_anchors",
    "audit_chain_head",
    "audit_records",
    "canonical_record_bytes",
    "chain_transaction",
    "check_open",
    "count_open_cases",
    "create_audit_engine",
    "create_schema",
    "encode_predictions",
    "ensure_schema",
    "entity_key",
    "event_fields",
    "explained_store_errors",
    "export_anchor",
    "get_case",
    "is_event",
    "list_open_cases",
    "load_anchors",
    "lock_head",
    "open_audit_store",
    "open_review_case",
    "prediction_rows",
    "record_hash",
    "resolve_case",
    "resolved_cases",
    "review_cases",
    "routed_by_hand",
    "routed_by_hand_all",
    "store_anchor",
    "stored_anchors",
    "verify_chain",
]
