"""Tables of the audit and review store (SQLAlchemy Core; SQLite and PostgreSQL).

``audit_records`` and ``audit_anchors`` are append-only: :func:`create_schema` installs
triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL). The triggers stop
accidents and casual edits; someone with DDL rights can drop them, which is what the hash
chain and the anchors are for (see :mod:`mlops.audit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.schema import CreateIndex

from mlops.audit_hashing import GENESIS_HASH

metadata = sa.MetaData()

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid
_HEX = sa.String(64)
# Native uuid on PostgreSQL (16 bytes, memcmp index); the 36-character text elsewhere.
_UUID = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")

audit_records = sa.Table(
    "audit_records",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
    sa.Column("record_id", _UUID, nullable=False, unique=True),
    sa.Column("record_type", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("batch_id", sa.String()),
    sa.Column("entity_key", _HEX),
    sa.Column("model_name", sa.String()),
    sa.Column("model_version", sa.String()),
    sa.Column("model_alias", sa.String()),
    sa.Column("role", sa.String(16)),
    sa.Column("score", sa.Double()),
    sa.Column("decision", sa.String()),
    sa.Column("confidence", sa.Double()),
    sa.Column("review_routed", sa.Boolean()),
    sa.Column("review_reason", sa.String()),
    sa.Column("input_snapshot", _HEX),
    sa.Column("input_row", sa.BigInteger()),
    sa.Column("input_hash", _HEX),
    sa.Column("payload", sa.JSON(none_as_null=True)),
    sa.Column("prev_hash", _HEX, nullable=False),
    sa.Column("record_hash", _HEX, nullable=False),
)

#: Records that are not predictions (scoring batches, reviews, promotions, rollbacks): a few
#: per batch among millions of predictions. The index below is partial on this condition, so
#: appending predictions never touches it; a query must carry the same term (literally, for
#: SQLite's planner) to use it.
NOT_PREDICTION: Final = audit_records.c.record_type != sa.literal_column("'prediction'")


def is_event(*record_types: str) -> sa.ColumnElement[bool]:
    """WHERE clause for records of these (non-prediction) types, with the term that lets SQLite
    and PostgreSQL search :data:`audit_events_index` instead of scanning every prediction."""
    return sa.and_(NOT_PREDICTION, audit_records.c.record_type.in_(record_types))


def _partial_index(name: str, *columns: sa.Column[Any], where: sa.ColumnElement[bool]) -> sa.Index:
    """An index of the rows matching ``where`` (SQLite and PostgreSQL); queries must carry the
    same literal term for the planner to use it."""
    return sa.Index(name, *columns, sqlite_where=where, postgresql_where=where)


audit_events_index = _partial_index(
    "ix_audit_records_events", audit_records.c.record_type, audit_records.c.batch_id, where=NOT_PREDICTION
)

# One row (id = 1): the seq and hash of the newest record. Writers lock it (FOR UPDATE on
# PostgreSQL; SQLite's BEGIN IMMEDIATE locks the whole file) so appends never fork.
audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("record_hash", _HEX, nullable=False),
)

audit_anchors = sa.Table(
    "audit_anchors",
    metadata,
    sa.Column("anchor_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("record_hash", _HEX, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per model while a process changes its registry aliases (mlops.alias_lock): a lease,
# not part of the chain (rows come and go).
alias_locks = sa.Table(
    "alias_locks",
    metadata,
    sa.Column("model_name", sa.String(), primary_key=True),
    sa.Column("holder", sa.String(), nullable=False),
    sa.Column("purpose", sa.String(), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),  # Unix seconds: compared, never shown
)

CASE_OPEN: Final = "open"
CASE_RESOLVED: Final = "resolved"
CASE_SUPERSEDED: Final = "superseded"  # a later prediction decided the same entity (superseded_by)

review_cases = sa.Table(
    "review_cases",
    metadata,
    sa.Column("case_id", _UUID, primary_key=True),  # = the prediction's record_id
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("routing_reason", sa.String(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("batch_id", sa.String()),
    sa.Column("model_name", sa.String(), nullable=False),
    sa.Column("model_version", sa.String(), nullable=False),
    sa.Column("role", sa.String(16)),
    sa.Column("score", sa.Double()),
    sa.Column("reviewer", sa.String()),
    sa.Column("decision", sa.String(16)),
    sa.Column("resolution_reason", sa.String()),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("review_record_id", _UUID),
    # Added after the first release: create_schema adds them to older stores.
    sa.Column("entity_key", _HEX),
    sa.Column("superseded_by", _UUID),
)
#: Columns added after the first release: (table, column) -> the statement that fills them in
#: on a store made before them (``{table}``, ``{records}``: qualified names), or None.
_ADDED_COLUMNS: Final[dict[tuple[str, str], str | None]] = {
    # A case's id is its prediction's record id, which carries the entity key.
    ("review_cases", "entity_key"): "UPDATE {table} SET entity_key = (SELECT r.entity_key FROM "
    "{records} r WHERE r.record_id = case_id) WHERE entity_key IS NULL",
    ("review_cases", "superseded_by"): None,
}

#: Open cases: what the queue lists and what a new case for the same entity supersedes. The
#: index below is partial on this term (literal, as for :data:`NOT_PREDICTION`). It replaces
#: the plain index on ``status`` of the first release, which :func:`create_schema` drops:
#: SQLite's planner preferred that one for a lookup of many entity keys and then read every
#: open case.
OPEN_CASE: Final = review_cases.c.status == sa.literal_column(f"'{CASE_OPEN}'")
_DROPPED_INDEXES: Final = ("ix_review_cases_status",)

open_cases_index = _partial_index(
    "ix_review_cases_open_entity", review_cases.c.model_name, review_cases.c.entity_key, where=OPEN_CASE
)
# The same cases by batch: a scoring chunk reads the entity keys of the OTHER batches' open
# cases from this index alone (a large batch's own cases, which it never decides again, would
# otherwise be read for every chunk it writes). ``status`` last: SQLite reads an index alone
# only if it holds every column the query names, the partial index's own term included.
open_cases_by_batch_index = _partial_index(
    "ix_review_cases_open_batch",
    review_cases.c.model_name,
    review_cases.c.batch_id,
    review_cases.c.entity_key,
    review_cases.c.status,
    where=OPEN_CASE,
)

#: Resolved cases: what training learns from and what is held against the chain's review records
#: (mlops.audit_cases) on every training run and verification; partial, as above.
RESOLVED_CASE: Final = review_cases.c.status == sa.literal_column(f"'{CASE_RESOLVED}'")
resolved_cases_index = _partial_index(
    "ix_review_cases_resolved", review_cases.c.model_name, review_cases.c.case_id, where=RESOLVED_CASE
)

APPEND_ONLY_TABLES: Final = ("audit_records", "audit_anchors")
SQLITE_PAGE_SIZE: Final = 16_384
SQLITE_CACHE_KIB: Final = 65_536


def create_audit_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the audit store; on SQLite: WAL, ``synchronous=NORMAL``, 30 s busy wait,
    16 KiB pages (new files; records are ~550 bytes) and a 64 MiB page cache per connection
    (a 200k-record chunk appends ~14% faster than with the defaults)."""
    if url.startswith("sqlite"):
        connect_args = {"timeout": 30.0, **kwargs.pop("connect_args", {})}
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # only takes effect on a new, empty file
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def qualified(conn: Connection, table: sa.Table) -> str:
    """The table name for raw SQL, honouring a ``schema_translate_map`` on the connection."""
    return _qualified_name(conn, table.name, table.schema)


def _qualified_name(conn: Connection, name: str, schema: str | None = None) -> str:
    """A table's or index's name for raw SQL, in the connection's (translated) schema."""
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(schema, schema)
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


def create_schema(engine: Engine) -> None:
    """Create the tables, the chain head row and the append-only triggers (idempotent; guards
    found missing or redefined are installed again). On a used store,
    :func:`mlops.audit.ensure_schema` records a restore in the chain first, since installing
    the guards again erases the evidence."""
    with engine.begin() as conn:
        metadata.create_all(conn, checkfirst=True)
        missing = missing_guards(conn)
        add_columns(conn, metadata, _ADDED_COLUMNS)
        # Stores made before the indexes existed get them here; IF NOT EXISTS, so two processes
        # opening such a store at once do not collide (see README: large PostgreSQL stores).
        for index in (audit_events_index, open_cases_index, open_cases_by_batch_index, resolved_cases_index):
            conn.execute(CreateIndex(index, if_not_exists=True))
        for name in _DROPPED_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_qualified_name(conn, name)}")
        install_guards(conn, missing)
    try:
        with engine.begin() as conn:
            present = conn.execute(sa.select(audit_chain_head.c.id)).first()
            if present is None:
                conn.execute(audit_chain_head.insert().values(id=1, seq=0, record_hash=GENESIS_HASH))
    except IntegrityError:  # another process created it at the same moment
        pass


_PG_GUARDS: Final = frozenset(
    f"{t}_{kind}" for t in APPEND_ONLY_TABLES for kind in ("append_only", "no_truncate")
)


_REFUSE_BODY: Final = "BEGIN RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP; END"
_REFUSE_FUNCTION: Final = "audit_refuse_change"


def _normal(text: object) -> str:
    return " ".join(str(text).split())


def _sqlite_guards(conn: Connection) -> dict[str, str]:
    """The SQLite guards: trigger name -> its statement as ``sqlite_master`` keeps it (without
    IF NOT EXISTS)."""
    return {
        f"{name}_no_{op.lower()}": f"CREATE TRIGGER {name}_no_{op.lower()} BEFORE {op} ON "
        f"{qualified(conn, metadata.tables[name])} BEGIN SELECT RAISE(ABORT, '{name} is append-only'); END"
        for name in APPEND_ONLY_TABLES
        for op in ("UPDATE", "DELETE")
    }


def missing_guards(conn: Connection) -> list[str]:
    """The append-only guards :func:`create_schema` installs that the store lacks now, or holds
    in another form than installed (a SQLite trigger redefined, ``WHEN 0``; on PostgreSQL a
    trigger disabled, set to fire only for replication or calling another function, or the
    function ``audit_refuse_change`` rewritten, then named itself)."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        found = {str(name): _normal(sql) for name, sql in rows}
        return sorted(n for n, sql in _sqlite_guards(conn).items() if found.get(n) != _normal(sql))
    if conn.dialect.name != "postgresql":
        return []
    schema = {"schema": _translated_schema(conn)}
    in_schema = "n.nspname = COALESCE(:schema, current_schema())"
    triggers = conn.execute(
        sa.text(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid "
            f"WHERE {in_schema} AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A') "
            f"AND p.proname = '{_REFUSE_FUNCTION}'"
        ),
        schema,
    ).scalars()
    missing = sorted(_PG_GUARDS - {str(name) for name in triggers})
    body = conn.execute(
        sa.text(
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            f"WHERE {in_schema} AND p.proname = '{_REFUSE_FUNCTION}'"
        ),
        schema,
    ).scalar()
    if _normal(body) != _REFUSE_BODY:
        missing.append(_REFUSE_FUNCTION)
    return missing


def used_store_missing_guards(engine: Engine) -> list[str]:
    """:func:`missing_guards` of a store that holds records (none for a new or empty store)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(audit_chain_head.name, schema=_translated_schema(conn)):
            return []
        if (conn.execute(sa.select(audit_chain_head.c.seq)).scalar() or 0) == 0:
            return []
        return missing_guards(conn)


def _translated_schema(conn: Connection) -> str | None:
    return (conn.get_execution_options().get("schema_translate_map") or {}).get(None)


def add_columns(conn: Connection, tables: sa.MetaData, added: Mapping[tuple[str, str], str | None]) -> None:
    """Add (and fill in) the columns of ``added`` (see :data:`_ADDED_COLUMNS`) that a store made
    before them lacks; ``tables`` holds their tables."""
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    inspector = sa.inspect(conn)
    for (name, column), backfill in added.items():
        table = tables.tables[name]
        if column in {c["name"] for c in inspector.get_columns(name, schema=translate.get(table.schema))}:
            continue
        kind = table.c[column].type.compile(dialect=conn.dialect)
        exists = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""
        statement = f"ALTER TABLE {qualified(conn, table)} ADD COLUMN {exists}{column} {kind}"
        try:  # SQLite has no IF NOT EXISTS here; another process may have added it
            conn.exec_driver_sql(statement)
        except OperationalError as exc:
            if conn.dialect.name != "sqlite" or "duplicate column" not in str(exc.orig):
                raise
        if backfill is not None:
            conn.exec_driver_sql(
                backfill.format(table=qualified(conn, table), records=qualified(conn, audit_records))
            )


def install_guards(conn: Connection, missing: Sequence[str] = ()) -> None:
    """Install the guards (idempotent); ``missing`` (:func:`missing_guards`): those to redo."""
    if conn.dialect.name == "sqlite":
        for trigger, statement in _sqlite_guards(conn).items():
            if trigger in missing:  # a redefined one: IF NOT EXISTS would keep it
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
            conn.exec_driver_sql(statement.replace("CREATE TRIGGER", "CREATE TRIGGER IF NOT EXISTS", 1))
    elif conn.dialect.name == "postgresql":
        schema = _translated_schema(conn)
        func = f'"{schema}".{_REFUSE_FUNCTION}' if schema else _REFUSE_FUNCTION
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            + _REFUSE_BODY.replace("%", "%%")  # %% is a literal % for the driver (psycopg2 formats it)
            + " $$"
        )
        for name in APPEND_ONLY_TABLES:
            table = qualified(conn, metadata.tables[name])
            conn.exec_driver_sql(
                f"CREATE OR REPLACE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {func}()"
            )
            conn.exec_driver_sql(
                f"CREATE OR REPLACE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {func}()"
            )
            for trigger in (f"{name}_append_only", f"{name}_no_truncate"):
                if trigger in missing:  # disabled (or replica-only): CREATE OR REPLACE keeps that state
                    conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
