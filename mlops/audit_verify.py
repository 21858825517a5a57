"""Verifying the audit chain, and anchoring its head outside the chain.

The walk reads ``audit_records`` in seq order, a page at a time, inside one read snapshot,
and stops at the first break. See :mod:`mlops.audit` for what each kind means and for the
threat model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import OperationalError, ProgrammingError

from mlops.audit_cases import CaseCheck, check_cases
from mlops.audit_hashing import GENESIS_HASH, as_utc, record_hash
from mlops.audit_schema import audit_anchors, audit_chain_head, audit_records, is_event, missing_guards
from mlops.audit_write import RECORD_GUARDS_RESTORED, AuditStoreError, chain_transaction, lock_head
from mlops.errors import ChainBroken, InputError

if TYPE_CHECKING:
    from mlops.storage import ObjectStore

BreakKind = Literal["edited", "deleted", "inserted", "reordered", "rewritten"]
CASES_HINT: Final = (
    "review_cases was changed outside the product (the chain's review records are what people decided): "
    "restore it from a backup; training refuses review labels until the two agree"
)


class ChainBreak(BaseModel):
    """The first place where the chain does not verify."""

    kind: BreakKind = Field(description="what was done to the chain at this place")
    seq: int = Field(description="seq of the first broken record (for a deletion: first missing)")
    record_id: str | None = Field(description="record at that seq; None when it is missing")
    detail: str = Field(description="what was found, for a person")
    untrusted_from: int = Field(
        description="the first seq not vouched for: ``seq``, or for a rewrite the seq after the last "
        "anchor that held (the edit itself may lie anywhere after it)"
    )


class Anchor(BaseModel):
    """A (seq, record_hash) of the chain, remembered outside the records it vouches for."""

    seq: int = Field(ge=0)
    record_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    source: str = Field("table", description="'table' (audit_anchors) or the file it came from")


class ChainReport(BaseModel):
    """Result of :func:`verify_chain`."""

    ok: bool
    records_checked: int
    last_seq: int = Field(description="seq of the last record checked (0 for an empty chain)")
    last_hash: str = Field(description="its record_hash (the genesis hash for an empty chain)")
    anchors_checked: int
    first_break: ChainBreak | None = None
    cases: CaseCheck = Field(
        default_factory=CaseCheck, description="the review queue held against the chain (mlops.audit_cases)"
    )
    guards_missing: list[str] = Field(
        default_factory=list, description="append-only triggers the store lacks now (dropped with DDL rights)"
    )
    guards_restored: int = Field(
        0, description="guards_restored records: times the triggers were found dropped and installed again"
    )
    verified_at: datetime

    def raise_if_broken(self) -> None:
        """Raise :class:`ChainBroken` (exit code 1) naming the first break, or the review cases
        that disagree with the chain."""
        if self.first_break is not None:
            brk = self.first_break
            raise ChainBroken(
                f"audit chain broken at seq {brk.seq} ({brk.kind}): {brk.detail}",
                hint=f"treat records from seq {brk.untrusted_from} on as untrusted; restore from backup/anchors",
            )
        if not self.cases.ok:
            raise ChainBroken(self.cases.summary(), hint=CASES_HINT)

    def head_anchor(self) -> Anchor:
        """The last record verified, as an anchor to keep off the database."""
        return Anchor(seq=self.last_seq, record_hash=self.last_hash, created_at=self.verified_at)


# --- reading -----------------------------------------------------------------------------


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read snapshot for the whole walk, so concurrent appends are not mistaken for forgery."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.exec_driver_sql("ROLLBACK")
        elif conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
        else:
            yield conn


# record_id cast to text in SQL: PostgreSQL's uuid text is already the canonical form, and
# it skips SQLAlchemy's per-row str -> UUID -> str conversion of the driver's value.
_WALK_COLUMNS: Final = [
    sa.cast(c, sa.String()).label(c.name) if c.name == "record_id" else c for c in audit_records.c
]


def _rows(conn: Connection, page_size: int) -> Iterator[Row[Any]]:
    last: int | None = None
    while True:
        stmt = sa.select(*_WALK_COLUMNS).order_by(audit_records.c.seq).limit(page_size)
        if last is not None:
            stmt = stmt.where(audit_records.c.seq > last)
        page = conn.execute(stmt).all()
        yield from page
        if len(page) < page_size:
            return
        last = int(page[-1].seq)


def _with_next(rows: Iterator[Row[Any]]) -> Iterator[tuple[Row[Any], Row[Any] | None]]:
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        yield current, following
        current = following


def _content_ok(row: Row[Any]) -> bool:
    m = row._mapping
    return record_hash(m["prev_hash"], m) == m["record_hash"]


def _find_by_hash(conn: Connection, digest: str) -> tuple[int, str] | None:
    row = conn.execute(
        sa.select(audit_records.c.seq, audit_records.c.record_id)
        .where(audit_records.c.record_hash == digest)
        .order_by(audit_records.c.seq)
        .limit(1)
    ).first()
    return None if row is None else (int(row.seq), str(row.record_id))


def _record_id_at(conn: Connection, seq: int) -> str | None:
    value = conn.execute(sa.select(audit_records.c.record_id).where(audit_records.c.seq == seq)).scalar()
    return None if value is None else str(value)


def _table_anchors(conn: Connection) -> list[Anchor]:
    rows = conn.execute(sa.select(audit_anchors).order_by(audit_anchors.c.anchor_id)).all()
    return [Anchor(seq=r.seq, record_hash=r.record_hash, created_at=as_utc(r.created_at)) for r in rows]


# --- classification ----------------------------------------------------------------------


def _brk(
    kind: BreakKind, seq: int, record_id: str | None, detail: str, untrusted_from: int | None = None
) -> ChainBreak:
    return ChainBreak(
        kind=kind,
        seq=seq,
        record_id=record_id,
        detail=detail,
        untrusted_from=seq if untrusted_from is None else untrusted_from,
    )


def _classify(
    conn: Connection,
    row: Row[Any],
    nxt: Row[Any] | None,
    last_seq: int,
    expected_prev: str,
    head_seq: int,
) -> ChainBreak | None:
    """None if ``row`` continues the chain; else the first break it reveals."""
    seq, rid = int(row.seq), str(row.record_id)
    if seq > head_seq:
        return _brk("inserted", seq, rid, f"record lies beyond the chain head (seq {head_seq})")
    content_ok = _content_ok(row)
    link_ok = row.prev_hash == expected_prev
    if content_ok and link_ok and seq == last_seq + 1:
        return None
    pred = None
    if content_ok and not link_ok:
        pred = _find_by_hash(conn, row.prev_hash)
        if pred is not None and pred[0] > seq:
            return _brk("reordered", seq, rid, f"its predecessor is stored later, at seq {pred[0]}")
    if nxt is not None and nxt.prev_hash == expected_prev:
        return _brk("inserted", seq, rid, f"the next record (seq {nxt.seq}) links past it to seq {last_seq}")
    if not content_ok:
        return _brk("edited", seq, rid, "its content no longer matches its record_hash")
    if not link_ok:
        if pred is None:
            if seq > last_seq + 1:
                return _brk(
                    "deleted",
                    last_seq + 1,
                    None,
                    f"seq {last_seq + 1}..{seq - 1} missing; record {seq} ({rid}) links to a hash "
                    "that is not in the store",
                )
            if last_seq == 0:
                return _brk(
                    "deleted",
                    seq,
                    rid,
                    "the first record links to a record that is not in the "
                    "store (earlier records deleted and later ones renumbered)",
                )
            return _brk(
                "edited",
                last_seq,
                _record_id_at(conn, last_seq),
                f"record {seq} links to a hash no record has: record {last_seq} was changed and "
                "re-hashed (or a record between them deleted and later seqs renumbered)",
            )
        if pred[0] < last_seq:
            return _brk(
                "inserted",
                pred[0] + 1,
                _record_id_at(conn, pred[0] + 1),
                f"record {seq} links to seq {pred[0]}: seq {pred[0] + 1}..{last_seq} are not "
                "part of the chain",
            )
        return _brk("edited", seq, rid, "its prev_hash does not link to the previous record")
    return _brk("edited", seq, rid, f"seq jumps from {last_seq} to {seq} with an intact link (renumbered)")


def _anchor_break(row: Row[Any], anchors: Sequence[Anchor], last_good_anchor: int) -> ChainBreak | None:
    for anchor in anchors:
        if anchor.record_hash != row.record_hash:
            return _brk(
                "rewritten",
                int(row.seq),
                str(row.record_id),
                f"anchor from {anchor.source} (taken {anchor.created_at.isoformat()}) holds "
                f"{anchor.record_hash[:16]}..., the store {row.record_hash[:16]}...: history "
                f"after seq {last_good_anchor} was rewritten with recomputed hashes",
                last_good_anchor + 1,
            )
    return None


def _read_head(conn: Connection) -> tuple[int, str]:
    try:
        head = conn.execute(sa.select(audit_chain_head).where(audit_chain_head.c.id == 1)).first()
    except (OperationalError, ProgrammingError) as exc:
        raise AuditStoreError(
            "the audit store has no schema", hint="call create_schema(engine) once"
        ) from exc
    if head is None:
        raise AuditStoreError(
            "the audit chain head row is missing (deleted, or the schema was never created)",
            hint="call create_schema(engine) on a new store; on a used one this is tampering",
        )
    return int(head.seq), str(head.record_hash)


def _walk(
    conn: Connection, page_size: int, head_seq: int, head_hash: str, anchors: Sequence[Anchor]
) -> tuple[int, str, int, ChainBreak | None]:
    """(last good seq, its hash, records checked, first break) of one pass over the chain."""
    by_seq: dict[int, list[Anchor]] = {}
    for a in anchors:
        by_seq.setdefault(a.seq, []).append(a)
    last_seq, last_hash, checked, good_anchor = 0, GENESIS_HASH, 0, 0
    for row, nxt in _with_next(_rows(conn, page_size)):
        seq = int(row.seq)
        brk = _classify(conn, row, nxt, last_seq, last_hash, head_seq)
        if brk is None and seq == head_seq and row.record_hash != head_hash:
            brk = _brk(
                "rewritten",
                seq,
                str(row.record_id),
                "the chain head table holds another hash for this seq: the tail was "
                f"replaced with recomputed hashes (somewhere after seq {good_anchor}, the last anchor "
                "that held)",
                good_anchor + 1,
            )
        if brk is None and seq in by_seq:
            brk = _anchor_break(row, by_seq[seq], good_anchor)
            good_anchor = seq
        if brk is not None:
            return last_seq, last_hash, checked, brk
        checked += 1
        last_seq, last_hash = seq, str(row.record_hash)
    return last_seq, last_hash, checked, _tail_break(last_seq, head_seq, anchors)


# --- public ------------------------------------------------------------------------------


def verify_chain(
    engine: Engine,
    *,
    anchors: Sequence[Anchor] = (),
    page_size: int = 10_000,
    anchor: bool = False,
) -> ChainReport:
    """Walk the whole chain and report the first break (bounded memory: one page at a time).

    Checks every record's hash against its content, every prev link, gapless seqs, the chain
    head table, the anchors in ``audit_anchors`` and the extra ``anchors`` given (e.g. read
    from files with :func:`load_anchors`); then holds the review queue against the chain
    (:func:`mlops.audit_cases.check_cases`: resolutions and their ``review`` records, cases
    whose prediction record is gone). ``ok`` needs both. With ``anchor=True`` an intact chain's last record
    is anchored (a row in ``audit_anchors``) after the walk.

    The walk reads one snapshot (appends made meanwhile are not seen, nor mistaken for
    forgeries). Naming the kind of a break may look records up by hash, a full scan: cheap
    next to the walk, and only done once, at the first break.
    """
    if page_size < 1:
        raise InputError("page_size must be positive")
    with _snapshot(engine) as conn:
        head_seq, head_hash = _read_head(conn)
        known = [*_table_anchors(conn), *anchors]
        walk = _walk(conn, page_size, head_seq, head_hash, known)
        cases = check_cases(conn, predictions=True)  # every store has the table (create_schema)
        guards = missing_guards(conn)
        restored = conn.execute(
            sa.select(sa.func.count()).select_from(audit_records).where(is_event(RECORD_GUARDS_RESTORED))
        ).scalar_one()
    last_seq, last_hash, checked, brk = walk
    report = ChainReport(
        ok=brk is None and cases.ok,
        records_checked=checked,
        last_seq=last_seq,
        last_hash=last_hash,
        anchors_checked=sum(1 for a in known if 0 < a.seq <= last_seq),
        first_break=brk,
        cases=cases,
        guards_missing=guards,
        guards_restored=int(restored),
        verified_at=datetime.now(UTC),
    )
    if anchor and brk is None and last_seq > 0:
        _insert_anchor(engine, last_seq, last_hash)
    return report


def _tail_break(last_seq: int, head_seq: int, anchors: Sequence[Anchor]) -> ChainBreak | None:
    if head_seq > last_seq:
        return _brk(
            "deleted",
            last_seq + 1,
            None,
            f"the chain head says seq {head_seq}, the last record is seq {last_seq}",
        )
    beyond = [a for a in anchors if a.seq > last_seq]
    if beyond:
        a = max(beyond, key=lambda x: x.seq)
        return _brk(
            "deleted",
            last_seq + 1,
            None,
            f"anchor from {a.source} vouches for seq {a.seq}; the last record is seq {last_seq}",
        )
    return None


def _insert_anchor(engine: Engine, seq: int, digest: str) -> Anchor:
    created = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(audit_anchors.insert().values(seq=seq, record_hash=digest, created_at=created))
    return Anchor(seq=seq, record_hash=digest, created_at=created)


def anchor_head(engine: Engine) -> Anchor:
    """Record the current head (seq, hash) in ``audit_anchors`` and return it.

    Anchor a head you have verified (``verify_chain(engine, anchor=True)`` does both), and
    copy anchors off the database (:func:`export_anchor`): a writer who can rewrite
    ``audit_records`` can rewrite ``audit_anchors`` too.
    """
    with chain_transaction(engine) as conn:
        head_seq, head_hash = lock_head(conn)
        last = conn.execute(
            sa.select(audit_records.c.seq, audit_records.c.record_hash)
            .order_by(audit_records.c.seq.desc())
            .limit(1)
        ).first()
        last_seq, last_hash = (0, GENESIS_HASH) if last is None else (last.seq, last.record_hash)
        if (last_seq, last_hash) != (head_seq, head_hash):
            raise ChainBroken(
                f"the chain head (seq {head_seq}) disagrees with the last record (seq {last_seq})",
                hint="run verify_chain before anchoring",
            )
        created = datetime.now(UTC)
        conn.execute(audit_anchors.insert().values(seq=head_seq, record_hash=head_hash, created_at=created))
    return Anchor(seq=head_seq, record_hash=head_hash, created_at=created)


def export_anchor(anchor: Anchor, path: Path) -> Path:
    """Write ``anchor`` as a JSON file (keep it somewhere the database's writers cannot edit).

    A file that already holds anchors keeps them: the new one is added to the list (earlier
    heads are the evidence an anchor file exists for). Written to a temporary file and renamed,
    so a failed write never leaves half a file.
    """
    earlier = load_anchors(path) if path.is_file() else []
    items = [a.model_dump(mode="json", exclude={"source"}) for a in [*earlier, anchor]]
    text = json.dumps(items[0] if len(items) == 1 else items, indent=2) + "\n"
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(
            f"cannot write the anchor file {path}: {exc.strerror or exc}",
            hint="give a writable file path (not a folder) with space left",
        ) from exc
    return path


def load_anchors(*paths: Path) -> list[Anchor]:
    """Anchors from files written by :func:`export_anchor` (one object or a list per file)."""
    anchors: list[Anchor] = []
    for path in paths:
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read anchor file {path}: {exc}") from exc
        items: list[Mapping[str, Any]] = data if isinstance(data, list) else [data]
        try:
            anchors.extend(Anchor(**{**item, "source": str(path)}) for item in items)
        except (TypeError, ValueError) as exc:
            raise InputError(f"anchor file {path} is not an anchor: {exc}") from exc
    return anchors


# --- anchors in the object store -----------------------------------------------------------

ANCHOR_PREFIX: Final = "audit-anchors/"


def store_anchor(store: ObjectStore, anchor: Anchor) -> str:
    """Keep ``anchor`` in the object store (another system than the audit database: a writer who
    can rewrite the database cannot, by that alone, rewrite these); idempotent. Returns its URI.
    The monitor stores the head it verified on every run."""
    key = f"{ANCHOR_PREFIX}{anchor.seq:012d}-{anchor.record_hash[:16]}.json"
    if not store.exists(key):
        store.put_bytes(key, anchor.model_dump_json(exclude={"source"}).encode())
    return store.uri(key)


NEWEST_ANCHORS: Final = 5


def stored_anchors(store: ObjectStore, newest: int | None = NEWEST_ANCHORS) -> list[Anchor]:
    """The anchors kept in the object store by :func:`store_anchor`, oldest seq first: the
    ``newest`` by seq (their names, zero-padded seqs, sort by it: one listing), or all with None. Hashes chain, so the
    newest anchors vouch for everything before them (a rewrite or a truncation up to their seq
    breaks them); older ones would only narrow down where, at one read each per verification."""
    keys = sorted(k for k in store.list_keys(ANCHOR_PREFIX) if k.endswith(".json"))  # zero-padded seqs
    found = []
    for key in keys if newest is None else keys[-newest:]:
        try:
            found.append(
                Anchor.model_validate({**json.loads(store.get_bytes(key)), "source": store.uri(key)})
            )
        except ValueError as exc:
            raise InputError(f"the anchor {store.uri(key)} is not an anchor: {exc}") from exc
    return found
