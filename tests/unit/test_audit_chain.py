"""Audit chain and review queue on SQLite: hashing, tampering, anchors, privacy, reviews."""

from __future__ import annotations

import hashlib
import hmac
import math
import sqlite3
import struct
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlops import audit, audit_hashing
from mlops.audit_schema import APPEND_ONLY_TABLES, metadata
from mlops.audit_verify import NEWEST_ANCHORS
from mlops.errors import ChainBroken, InputError
from mlops.storage import LocalStore
from tests.helpers import batch_record_context, restore_guards

pytestmark = pytest.mark.unit

KEY = "unit-test-key"
SNAPSHOT = hashlib.sha256(b"snapshot").hexdigest()


# --- helpers -----------------------------------------------------------------------------


def batch(n: int = 4, *, routed: tuple[int, ...] = (), start: int = 0) -> pd.DataFrame:
    """n champion rows then n shadow rows for entities APP-<start>..; ``routed`` champion rows."""
    ids = [f"APP-{i:06d}" for i in range(start, start + n)]
    scores = np.linspace(0.05, 0.95, n)
    half = pd.DataFrame(
        {
            "entity_id": ids,
            "gender": "SENSITIVE-VALUE",
            "input_snapshot": SNAPSHOT,
            "input_row": np.arange(n, dtype=np.int64),
            "input_hash": [hashlib.sha256(i.encode()).hexdigest() for i in ids],
            "model_name": "credit-risk",
            "confidence": np.abs(scores - 0.5) * 2,
        }
    )
    champion = half.assign(
        model_version="3",
        model_alias="champion",
        role="champion",
        score=scores,
        decision=np.where(scores > 0.5, "decline", "approve"),
        review_routed=[i in routed for i in range(n)],
        review_reason=["low confidence" if i in routed else None for i in range(n)],
    )
    shadow = half.assign(
        model_version="4",
        model_alias="challenger",
        role="shadow",
        score=scores / 2,
        decision="approve",
        review_routed=False,
        review_reason=None,
    )
    return pd.concat([champion, shadow], ignore_index=True)


def fill(engine: Engine, n: int = 4) -> audit.AppendResult:
    """A chain of 2n predictions, one promotion event, then n more predictions."""
    audit.append_predictions(engine, batch(n), batch_id="b-1", hash_key=KEY)
    audit.append_event(engine, "promotion", {"from": "3", "to": "4", "auc": 0.81}, model_name="credit-risk")
    return audit.append_predictions(engine, batch(n, start=n)[:n], batch_id="b-2", hash_key=KEY)


def unguard(engine: Engine) -> None:
    """Drop the append-only triggers, as an attacker with DDL rights would."""
    with engine.begin() as conn:
        for name in APPEND_ONLY_TABLES:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}_no_update")
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}_no_delete")


def sql(engine: Engine, *statements: str, **params: Any) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)


def row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(sa.select(audit.audit_records).where(audit.audit_records.c.seq == seq))
        return dict(found.one()._mapping)


def fields_of(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in audit.CANONICAL_FIELDS}


def forged_after(engine: Engine, seq: int) -> dict[str, Any]:
    """A plausible record that links to record ``seq`` with a correctly computed hash."""
    base = row(engine, seq)
    forged = {**base, "record_id": str(uuid.uuid4()), "score": 0.001, "decision": "approve"}
    forged["prev_hash"] = base["record_hash"]
    forged["record_hash"] = audit.record_hash(forged["prev_hash"], fields_of(forged))
    return forged


def insert(engine: Engine, record: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(audit.audit_records.insert().values(**record))


def brk(engine: Engine, **kwargs: Any) -> audit.ChainBreak:
    report = audit.verify_chain(engine, **kwargs)
    assert not report.ok and report.first_break is not None, report
    with pytest.raises(ChainBroken):
        report.raise_if_broken()
    return report.first_break


# --- canonical form ----------------------------------------------------------------------


def _prediction_fields() -> dict[str, Any]:
    return {
        "created_at": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "record_id": "01234567-89ab-7def-8123-456789abcdef",
        "record_type": "prediction",
        "batch_id": "b-1",
        "entity_key": "a" * 64,
        "model_name": "credit-risk",
        "model_version": "3",
        "model_alias": "champion",
        "role": "champion",
        "score": 0.1,
        "decision": "approve",
        "confidence": None,
        "review_routed": False,
        "review_reason": None,
        "input_snapshot": "b" * 64,
        "input_row": 7,
        "input_hash": "c" * 64,
        "payload": None,
    }


def test_canonical_bytes_are_pinned() -> None:
    expected = (
        '["mlops-audit/1","' + "0" * 64 + '","2024-01-02T03:04:05.000006Z",'
        '"01234567-89ab-7def-8123-456789abcdef","prediction","b-1","' + "a" * 64 + '",'
        '"credit-risk","3","champion","champion",0.1,"approve",null,false,null,'
        '"' + "b" * 64 + '",7,"' + "c" * 64 + '",null]'
    ).encode()
    fields = _prediction_fields()
    assert audit.canonical_record_bytes(audit.GENESIS_HASH, fields) == expected
    assert audit.record_hash(audit.GENESIS_HASH, fields) == hashlib.sha256(expected).hexdigest()


def test_payload_is_canonical_sorted_utf8_and_floats_by_repr() -> None:
    fields = {**_prediction_fields(), "record_type": "review", "score": 1e-05}
    fields["payload"] = {"b": 1.0, "a": "é\n", "c": [1e16, None, True]}
    text = audit.canonical_record_bytes("f" * 64, fields).decode()
    assert text.endswith(',{"a":"é\\n","b":1.0,"c":[1e+16,null,true]}]')
    assert ",1e-05," in text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1.0, "1.0"),
        (0.0001, "0.0001"),
        (1e15, "1000000000000000.0"),
        (1e-05, "1e-05"),
        (1e16, "1e+16"),
        (2.5e-17, "2.5e-17"),
        ('q"b\\', '"q\\"b\\\\"'),
        ("\b\f\n\r\t\x01\x7f", '"\\b\\f\\n\\r\\t\\u0001\x7f"'),
        ("é\u2028模", '"é\u2028模"'),
    ],
)
def test_scalar_encodings_match_the_documented_spec(value: object, text: str) -> None:
    fields = {**_prediction_fields(), "decision": value}
    assert f",{text},".encode() in audit.canonical_record_bytes(audit.GENESIS_HASH, fields)


# --- intact chain and the fast path ------------------------------------------------------


def test_empty_chain_verifies(engine: Engine) -> None:
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 0 and report.last_hash == audit.GENESIS_HASH


def test_intact_chain_verifies_across_pages(engine: Engine) -> None:
    result = fill(engine)
    assert (result.first_seq, result.last_seq) == (10, 13)
    report = audit.verify_chain(engine, page_size=3)
    assert report.ok, report.first_break
    assert report.records_checked == 13 and report.last_hash == result.head_hash


def test_create_schema_is_idempotent(engine: Engine) -> None:
    fill(engine, 2)
    audit.create_schema(engine)
    assert audit.verify_chain(engine).records_checked == 7


def test_fast_path_matches_reference_on_awkward_values(engine: Engine) -> None:
    frame = batch(3, routed=(1,))
    frame["model_name"] = ['crédit\t"risk"\\', "模型\n", "\u0001ctl"] * 2
    frame["review_reason"] = ["x", 'quote " and \\ backslash', None, None, None, None]
    frame.loc[0, "confidence"] = np.nan
    frame["model_alias"] = None
    result = audit.append_predictions(engine, frame, batch_id="b\u2028", hash_key=KEY, chunk_rows=4)
    assert audit.verify_chain(engine).ok
    with engine.connect() as conn:
        names = conn.execute(sa.select(audit.audit_records.c.model_name)).scalars().all()
    assert names == frame["model_name"].tolist()
    assert result.record_ids.index.equals(frame.index)


def test_sqlite_store_uses_wal_and_large_pages(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 16_384


def test_multi_row_inserts_store_every_record_in_order(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops import audit_write

    monkeypatch.setattr(audit_write, "_SQLITE_ROWS_PER_INSERT", 7)  # 7-row statements + a remainder
    frame = batch(25, routed=(3, 11))
    result = audit.append_predictions(engine, frame, batch_id="b", hash_key=KEY, chunk_rows=16)
    assert (result.first_seq, result.last_seq, result.cases_opened) == (1, 50, 2)
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 50
    with engine.connect() as conn:
        stored = pd.read_sql(sa.select(audit.audit_records).order_by(audit.audit_records.c.seq), conn)
    assert stored["seq"].tolist() == list(range(1, 51))
    assert stored["record_id"].tolist() == result.record_ids.tolist()
    assert stored["score"].tolist() == frame["score"].tolist()
    assert stored["input_hash"].tolist() == frame["input_hash"].tolist()


def test_record_ids_are_uuid7_unique_and_rising(engine: Engine) -> None:
    result = audit.append_predictions(engine, batch(50), batch_id="b", hash_key=KEY, chunk_rows=7)
    ids = result.record_ids.tolist()
    assert len(set(ids)) == 100 and ids == sorted(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


@pytest.mark.parametrize(
    "score",
    [0.1, 1 / 3, 5e-324, 1 - 2**-53, math.nextafter(0.5, 1.0), 1e-300, 0.0, 2.5e-17],
)
def test_score_round_trips_exactly(engine: Engine, score: float) -> None:
    frame = batch(1).iloc[:1].assign(score=score)
    audit.append_predictions(engine, frame, batch_id="b", hash_key=KEY)
    stored = row(engine, 1)["score"]
    assert struct.pack("<d", stored) == struct.pack("<d", score)
    assert audit.verify_chain(engine).ok


# --- tampering ---------------------------------------------------------------------------


def test_store_refuses_update_and_delete(engine: Engine) -> None:
    fill(engine, 2)
    with pytest.raises(sa.exc.IntegrityError, match="append-only"):
        sql(engine, "UPDATE audit_records SET score = 0.5 WHERE seq = 2")
    with pytest.raises(sa.exc.IntegrityError, match="append-only"):
        sql(engine, "DELETE FROM audit_records WHERE seq = 2")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("score", 0.5),
        ("model_version", "9"),
        ("review_routed", 1),
        ("created_at", "2020-01-01 00:00:00.000000"),
    ],
)
def test_edited_field_is_named(engine: Engine, column: str, value: object) -> None:
    fill(engine)
    unguard(engine)
    victim = row(engine, 3)
    sql(engine, f"UPDATE audit_records SET {column} = :v WHERE seq = 3", v=value)
    found = brk(engine, page_size=2)
    assert (found.kind, found.seq, found.record_id) == ("edited", 3, victim["record_id"])


def test_edited_event_payload_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    sql(engine, "UPDATE audit_records SET payload = '{\"auc\": 0.99}' WHERE seq = 9")
    assert (brk(engine).kind, brk(engine).seq) == ("edited", 9)


def test_deleted_record_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    sql(engine, "DELETE FROM audit_records WHERE seq = 5")
    found = brk(engine, page_size=4)
    assert (found.kind, found.seq, found.record_id) == ("deleted", 5, None)


def test_deleted_first_records_are_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    sql(engine, "DELETE FROM audit_records WHERE seq <= 2")
    assert (brk(engine).kind, brk(engine).seq) == ("deleted", 1)


def test_deleted_tail_is_caught_by_the_chain_head(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    sql(engine, "DELETE FROM audit_records WHERE seq >= 12")
    found = brk(engine)
    assert (found.kind, found.seq) == ("deleted", 12)


def test_deleted_tail_with_head_rewound_is_caught_by_an_anchor(engine: Engine) -> None:
    fill(engine)
    audit.anchor_head(engine)
    unguard(engine)
    last = row(engine, 12)
    sql(
        engine,
        "DELETE FROM audit_records WHERE seq = 13",
        "UPDATE audit_chain_head SET seq = 12, record_hash = :h",
        h=last["record_hash"],
    )
    found = brk(engine)
    assert (found.kind, found.seq) == ("deleted", 13)


def test_inserted_record_in_the_middle_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    forged = forged_after(engine, 4)
    sql(
        engine,
        "UPDATE audit_records SET seq = -seq WHERE seq > 4",
        "UPDATE audit_records SET seq = -seq + 1 WHERE seq < 0",
        "UPDATE audit_chain_head SET seq = seq + 1",
    )
    insert(engine, {**forged, "seq": 5})
    for page_size in (3, 4, 5, 100):  # the skip may be seen across a page boundary
        found = brk(engine, page_size=page_size)
        assert (found.kind, found.seq, found.record_id) == ("inserted", 5, forged["record_id"])


def test_inserted_record_with_a_made_up_hash_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    forged = {**forged_after(engine, 4), "record_hash": hashlib.sha256(b"x").hexdigest()}
    sql(
        engine,
        "UPDATE audit_records SET seq = -seq WHERE seq > 4",
        "UPDATE audit_records SET seq = -seq + 1 WHERE seq < 0",
    )
    insert(engine, {**forged, "seq": 5})
    found = brk(engine, page_size=5)
    assert (found.kind, found.seq, found.record_id) == ("inserted", 5, forged["record_id"])


def test_inserted_record_at_the_end_is_named(engine: Engine) -> None:
    fill(engine)
    forged = forged_after(engine, 13)
    insert(engine, {**forged, "seq": 14})  # a plain INSERT: the guards allow appends
    found = brk(engine)
    assert (found.kind, found.seq, found.record_id) == ("inserted", 14, forged["record_id"])


@pytest.mark.parametrize(("a", "b"), [(3, 4), (2, 11)])
def test_reordered_records_are_named(engine: Engine, a: int, b: int) -> None:
    fill(engine)
    unguard(engine)
    moved = row(engine, b)
    sql(
        engine,
        "UPDATE audit_records SET seq = -1 WHERE seq = :a",
        "UPDATE audit_records SET seq = :a WHERE seq = :b",
        "UPDATE audit_records SET seq = :b WHERE seq = -1",
        a=a,
        b=b,
    )
    found = brk(engine, page_size=3)
    assert (found.kind, found.seq, found.record_id) == ("reordered", a, moved["record_id"])


def _rewrite_from(engine: Engine, seq: int) -> None:
    """Edit record ``seq`` and recompute every later hash and the chain head."""
    unguard(engine)
    with engine.connect() as conn:
        records = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(audit.audit_records)
                .where(audit.audit_records.c.seq >= seq)
                .order_by(audit.audit_records.c.seq)
            )
        ]
    prev = row(engine, seq - 1)["record_hash"]
    records[0]["score"] = 0.999
    with engine.begin() as conn:
        for record in records:
            digest = audit.record_hash(prev, fields_of(record))
            conn.execute(
                audit.audit_records.update()
                .where(audit.audit_records.c.seq == record["seq"])
                .values(score=record["score"], prev_hash=prev, record_hash=digest)
            )
            prev = digest
        conn.execute(audit.audit_chain_head.update().values(record_hash=prev))


def test_full_rewrite_passes_the_chain_but_not_the_anchor(engine: Engine) -> None:
    fill(engine)
    anchor = audit.anchor_head(engine)
    assert (anchor.seq, audit.verify_chain(engine).anchors_checked) == (13, 1)
    _rewrite_from(engine, 6)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit.audit_anchors)).scalar()
    found = brk(engine)
    assert (found.kind, found.seq) == ("rewritten", 13)
    assert found.untrusted_from == 1  # the edit (seq 6) lies somewhere after the last anchor that held


def test_a_rewrite_after_a_good_anchor_is_untrusted_from_after_it(engine: Engine) -> None:
    fill(engine)
    sql(
        engine,
        "INSERT INTO audit_anchors (seq, record_hash, created_at) SELECT seq, record_hash, "
        "'2026-01-01 00:00:00' FROM audit_records WHERE seq = 4",
    )
    audit.anchor_head(engine)  # seq 13
    _rewrite_from(engine, 6)
    found = brk(engine)
    assert (found.kind, found.seq, found.untrusted_from) == ("rewritten", 13, 5)
    assert found.untrusted_from != found.seq and "after seq 4" in found.detail


def test_full_rewrite_including_the_anchor_table_is_caught_by_a_file_anchor(
    engine: Engine, tmp_path: Path
) -> None:
    fill(engine)
    report = audit.verify_chain(engine, anchor=True)
    path = audit.export_anchor(audit.anchor_head(engine), tmp_path / "anchors" / "head.json")
    assert report.ok and audit.load_anchors(path)[0].seq == 13
    _rewrite_from(engine, 2)
    sql(engine, "DELETE FROM audit_anchors")
    assert audit.verify_chain(engine).ok  # the chain alone cannot tell
    found = brk(engine, anchors=audit.load_anchors(path))
    assert (found.kind, found.seq) == ("rewritten", 13)
    assert str(path) in found.detail


@pytest.mark.parametrize("kept_in", ["file", "object store"])
def test_anchor_beyond_the_end_reports_the_truncation(engine: Engine, tmp_path: Path, kept_in: str) -> None:
    fill(engine)
    store = LocalStore(tmp_path / "store")
    head = audit.anchor_head(engine)
    if kept_in == "file":
        anchors = audit.load_anchors(audit.export_anchor(head, tmp_path / "a.json"))
    else:
        uri = audit.store_anchor(store, head)
        assert audit.store_anchor(store, head) == uri  # idempotent
        anchors = audit.stored_anchors(store)
    assert [a.seq for a in anchors] == [13]
    unguard(engine)
    sql(
        engine,
        "DELETE FROM audit_records WHERE seq > 10",
        "DELETE FROM audit_anchors",
        "UPDATE audit_chain_head SET seq = 10, record_hash = :h",
        h=row(engine, 10)["record_hash"],
    )
    found = brk(engine, anchors=anchors)
    assert (found.kind, found.seq) == ("deleted", 11)


def test_exporting_to_an_anchor_file_keeps_the_anchors_it_holds(engine: Engine, tmp_path: Path) -> None:
    """Earlier heads are the evidence an anchor file is kept for: a new export adds to them."""
    fill(engine)
    path = tmp_path / "anchors.json"
    audit.export_anchor(audit.anchor_head(engine), path)
    audit.append_event(engine, "note", {"n": 1})
    audit.export_anchor(audit.anchor_head(engine), path)
    assert [a.seq for a in audit.load_anchors(path)] == [13, 14]
    report = audit.verify_chain(engine, anchors=audit.load_anchors(path))
    assert report.ok and report.anchors_checked == 4  # the two anchor_head kept in the table, the file's two
    with pytest.raises(InputError, match="cannot write the anchor file"):
        audit.export_anchor(audit.anchor_head(engine), tmp_path)  # a folder
    assert not (tmp_path.parent / f".{tmp_path.name}.partial").exists()  # beside the target: gone


def test_bad_anchor_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"seq": 1}')
    with pytest.raises(InputError, match="not an anchor"):
        audit.load_anchors(path)


# --- privacy -----------------------------------------------------------------------------


def test_raw_ids_and_sensitive_values_are_never_stored(engine: Engine, tmp_path: Path) -> None:
    frame = batch(5, routed=(2,))
    result = audit.append_predictions(engine, frame, batch_id="b", hash_key=KEY)
    audit.resolve_case(engine, result.record_ids[2], "alice", "decline", "thin file")
    with engine.connect() as conn:
        dumped = " ".join(
            str(list(r)) for table in metadata.sorted_tables for r in conn.execute(sa.select(table))
        )
    engine.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    for secret in ["APP-000003", "SENSITIVE-VALUE", KEY]:
        assert secret not in dumped and secret.encode() not in raw
    assert audit.entity_key("APP-000003", KEY) in dumped


def test_entity_key_is_hmac_sha256_and_vectorised() -> None:
    ids = pd.Series(["APP-1", "APP-2"], index=[10, 20])
    keys = audit.entity_key(ids, KEY)
    expected = hmac.new(KEY.encode(), b"APP-1", hashlib.sha256).hexdigest()
    assert keys.index.tolist() == [10, 20] and keys[10] == expected
    assert audit.entity_key("APP-1", KEY) == expected
    assert audit.entity_key(123, KEY) == audit.entity_key("123", KEY)
    assert audit.entity_key(pd.Series([123]), KEY)[0] == audit.entity_key("123", KEY)
    assert audit.entity_key("APP-1", "other-key") != expected


@pytest.mark.parametrize("key", ["k", "x" * 64, "y" * 65, "ключ" * 40, b"\x00raw"])
def test_entity_keyer_is_hmac_digest_for_any_key_length(key: str | bytes) -> None:
    ids = ["APP-1", "", "é模型", "x" * 200]
    raw = key.encode() if isinstance(key, str) else key
    expected = [hmac.digest(raw, i.encode(), "sha256").hex() for i in ids]
    assert audit_hashing.EntityKeyer(key).hexdigests(i.encode() for i in ids) == expected
    for dtype in ("str", object):
        assert audit.entity_key(pd.Series(ids, dtype=dtype), key).tolist() == expected


@pytest.mark.parametrize("bad", [pd.Series([1.5]), pd.Series(["a", None])])
def test_entity_key_refuses_floats_and_missing_ids(bad: pd.Series) -> None:
    with pytest.raises(InputError):
        audit.entity_key(bad, KEY)


# --- input errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["input_hash"]), "missing columns"),
        (lambda f: f.assign(role="mystery"), "unknown roles"),
        (lambda f: f.assign(score=np.nan), "NaN or infinite"),
        (lambda f: f.assign(input_row=-1), "non-negative"),
        (lambda f: f.assign(input_hash="not-a-hash"), "input_hash"),
        (lambda f: f.assign(entity_key=f["entity_id"]), "entity_key"),
        (lambda f: f.assign(review_routed=True, review_reason=None), "review_reason"),
        (lambda f: f.iloc[:0], "empty"),
    ],
)
def test_bad_batches_are_refused_and_nothing_is_written(engine: Engine, change: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        audit.append_predictions(engine, change(batch(3)), batch_id="b", hash_key=KEY)
    assert audit.verify_chain(engine).records_checked == 0


def test_a_bad_row_in_a_late_chunk_rolls_back_the_whole_batch(engine: Engine) -> None:
    fill(engine, 2)
    frame = batch(5)
    frame.loc[9, "input_hash"] = "F" * 64  # uppercase: not canonical hex
    with pytest.raises(InputError, match="input_hash"):
        audit.append_predictions(engine, frame, batch_id="b", hash_key=KEY, chunk_rows=3)
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 7
    assert audit.list_open_cases(engine) == []


def test_entity_id_without_a_key_is_refused(engine: Engine) -> None:
    with pytest.raises(InputError, match="hash_key"):
        audit.append_predictions(engine, batch(2), batch_id="b")


def test_events_validate_type_and_payload(engine: Engine) -> None:
    with pytest.raises(InputError, match="append_predictions"):
        audit.append_event(engine, "prediction", {})
    with pytest.raises(InputError, match="canonical JSON"):
        audit.append_event(engine, "promotion", {"auc": float("nan")})
    with pytest.raises(InputError, match="JSON object"):
        audit.append_event(engine, "rollback", ["not", "an", "object"])  # type: ignore[arg-type]


def test_missing_schema_is_a_clear_error(tmp_path: Path) -> None:
    eng = audit.create_audit_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(audit.AuditStoreError, match="create_schema"):
        audit.append_event(eng, "promotion", {})
    with pytest.raises(audit.AuditStoreError, match="create_schema"):
        audit.verify_chain(eng)


def test_encoded_batches_link_to_the_head_at_write_time(engine: Engine) -> None:
    """Encoding needs no store; linking happens at append, after whatever was appended since."""
    encoded = audit.encode_predictions(
        batch(3, routed=(1,)), batch_id="late", dialect="sqlite", hash_key=KEY, chunk_rows=2
    )
    assert [len(c) for c in encoded.chunks] == [2, 2, 2]
    fill(engine, 2)  # appended after encoding, before the encoded batch is written
    result = audit.append_encoded(engine, encoded)
    assert (result.first_seq, result.last_seq, result.cases_opened) == (8, 13, 1)
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 13
    assert result.record_ids.tolist() == [c for chunk in encoded.chunks for c in chunk.record_ids]
    assert [case.case_id for case in audit.list_open_cases(engine)] == [result.record_ids[1]]
    with pytest.raises(sqlite3.IntegrityError):  # the same records cannot be appended twice
        audit.append_encoded(engine, encoded)
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 13


def test_an_encoded_batch_is_refused_by_a_store_of_another_dialect(engine: Engine) -> None:
    encoded = audit.encode_predictions(batch(1), batch_id="b", dialect="postgresql", hash_key=KEY)
    with pytest.raises(ValueError, match="encoded for postgresql"):
        audit.append_encoded(engine, encoded)
    assert audit.verify_chain(engine).records_checked == 0


def test_bad_batches_are_refused_before_the_store_is_touched() -> None:
    frame = batch(2)
    frame.loc[3, "input_hash"] = "F" * 64
    with pytest.raises(InputError, match="input_hash"):
        audit.encode_predictions(frame, batch_id="b", dialect="sqlite", hash_key=KEY, chunk_rows=3)


# --- concurrency -------------------------------------------------------------------------


def test_concurrent_appenders_do_not_fork_the_chain(engine: Engine) -> None:
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(8):
                audit.append_predictions(engine, batch(3, start=100 * n + i), batch_id=f"w{n}", hash_key=KEY)
                audit.append_event(engine, "promotion", {"writer": n, "i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 3 * 8 * 7


# --- review queue ------------------------------------------------------------------------


def test_review_round_trip(engine: Engine) -> None:
    result = audit.append_predictions(engine, batch(4, routed=(1, 3)), batch_id="b", hash_key=KEY)
    assert result.cases_opened == 2  # routed champion rows only
    open_cases = audit.list_open_cases(engine, model_name="credit-risk")
    assert [c.case_id for c in open_cases] == [result.record_ids[1], result.record_ids[3]]
    assert audit.list_open_cases(engine, model_name="other") == []
    case = open_cases[0]
    assert (case.status, case.routing_reason, case.model_version) == ("open", "low confidence", "3")
    assert (case.created_at, case.batch_id, case.role, case.superseded_by) == (
        result.created_at,
        "b",
        "champion",
        None,
    )
    assert case.score == pytest.approx(0.35) and case.entity_key == audit.entity_key("APP-000001", KEY)

    resolved = audit.resolve_case(engine, case.case_id, "alice", "decline", "income unverified")
    assert resolved.status == "resolved" and audit.get_case(engine, case.case_id) == resolved
    assert [c.case_id for c in audit.list_open_cases(engine)] == [result.record_ids[3]]
    audit.resolve_case(engine, result.record_ids[3], "bob", "approve", "verified by phone")

    review = row(engine, 9)
    assert review["record_type"] == "review" and review["decision"] == "decline"
    assert review["payload"]["reviewer"] == "alice"
    assert review["payload"]["case_id"] == case.case_id
    assert review["record_id"] == resolved.review_record_id
    assert review["entity_key"] == audit.entity_key("APP-000001", KEY)

    training = audit.resolved_cases(engine)
    assert training["label"].tolist() == [1, 0]
    assert training["input_row"].tolist() == [1, 3]
    assert set(training["input_snapshot"]) == {SNAPSHOT}
    assert audit.verify_chain(engine).ok


def test_case_opened_after_the_fact(engine: Engine) -> None:
    result = audit.append_predictions(engine, batch(2), batch_id="b", hash_key=KEY)
    head = audit.verify_chain(engine).last_seq
    with pytest.raises(audit.ReviewCaseRefused, match="shadow prediction") as shadow:
        audit.open_review_case(engine, result.record_ids[2], "high stakes", opened_by="dana")
    assert shadow.value.exit_code == 1
    assert shadow.value.hint == f"open the case on the deciding prediction {result.record_ids[0]}"
    with pytest.raises(audit.InvalidReviewDecision, match="who routes"):
        audit.open_review_case(engine, result.record_ids[0], "high stakes", opened_by=" ")
    assert audit.verify_chain(engine).last_seq == head and audit.list_open_cases(engine) == []

    before = datetime.now(UTC)
    case = audit.open_review_case(engine, result.record_ids[0], "high stakes", opened_by="dana")
    assert case.score == pytest.approx(0.05) and case.status == "open"
    assert case.created_at >= before  # when it was routed, not when it was predicted
    opened = row(engine, head + 1)
    assert (opened["record_type"], opened["entity_key"]) == ("review_opened", row(engine, 1)["entity_key"])
    assert opened["payload"] == {"case_id": case.case_id, "opened_by": "dana", "reason": "high stakes"}
    assert audit.verify_chain(engine).ok
    with pytest.raises(audit.ReviewCaseRefused, match="is in review already") as twice:
        audit.open_review_case(engine, result.record_ids[0], "again", opened_by="dana")
    assert twice.value.hint and twice.value.hint.startswith(f"mlops review resolve {case.case_id} ")
    audit.resolve_case(engine, case.case_id, "erin", "approve", "checked")
    with pytest.raises(audit.ReviewCaseRefused, match="reviewed already: approve by erin") as after:
        audit.open_review_case(engine, result.record_ids[0], "again", opened_by="dana")
    assert "a resolution is final" in after.value.message
    with pytest.raises(audit.PredictionNotFound, match="no prediction record"):
        audit.open_review_case(engine, str(uuid.uuid4()), "no such prediction", opened_by="dana")
    with pytest.raises(audit.PredictionNotFound, match="is a review_opened record, not a prediction"):
        audit.open_review_case(engine, opened["record_id"], "not a prediction", opened_by="dana")
    with pytest.raises(audit.PredictionNotFound, match="no prediction 'APP-1'") as not_an_id:
        audit.open_review_case(engine, "APP-1", "an application id", opened_by="dana")
    assert not_an_id.value.hint and "mlops audit find" in not_an_id.value.hint
    assert audit.routed_by_hand(engine, audit.get_case(engine, case.case_id)) == ("dana", "high stakes")


def test_a_later_prediction_for_the_same_application_supersedes_its_open_case(engine: Engine) -> None:
    first = audit.append_predictions(engine, batch(4, routed=(0, 1, 2)), batch_id="b1", hash_key=KEY)
    audit.resolve_case(engine, first.record_ids[0], "alice", "approve", "ok")  # resolved: kept as is
    # APP-1..3 again (rows 1, 2 of the new batch are APP-2, APP-3; APP-1 is not routed this time),
    # and APP-4, APP-5 new.
    again = batch(5, routed=(1, 2, 3), start=1)
    second = audit.append_predictions(engine, again, batch_id="b2", hash_key=KEY)
    assert (second.cases_opened, second.cases_superseded) == (3, 2)  # APP-1's, APP-2's; APP-3 had none
    old, new = first.record_ids[2], second.record_ids[1]
    superseded = audit.get_case(engine, old)
    assert (superseded.status, superseded.superseded_by) == ("superseded", new)
    assert superseded.entity_key == audit.entity_key("APP-000002", KEY)
    assert audit.get_case(engine, first.record_ids[0]).status == "resolved"
    # APP-1 decided again without review: its case waits for nothing any more.
    moot = audit.get_case(engine, first.record_ids[1])
    assert (moot.status, moot.superseded_by) == ("superseded", second.record_ids[0])
    with pytest.raises(audit.ReviewCaseSuperseded, match="decided it without review") as refused:
        audit.resolve_case(engine, moot.case_id, "bob", "decline", "late")
    assert refused.value.hint and f"mlops reproduce {second.record_ids[0]}" in refused.value.hint
    open_keys = [c.entity_key for c in audit.list_open_cases(engine)]
    assert len(open_keys) == len(set(open_keys)) == 3  # APP-2, APP-3, APP-4 of the second batch

    head = audit.verify_chain(engine).last_seq
    with pytest.raises(audit.ReviewCaseSuperseded, match=f"superseded by case '{new}'") as refused:
        audit.resolve_case(engine, old, "bob", "decline", "late")
    assert refused.value.exit_code == 1 and refused.value.hint and new in refused.value.hint
    assert audit.verify_chain(engine).last_seq == head  # the refusal wrote nothing
    audit.resolve_case(engine, new, "bob", "decline", "income unverified")
    assert audit.resolved_cases(engine)["case_id"].tolist() == [first.record_ids[0], new]

    # Another model's cases for the same application are its own queue.
    other = batch(3, routed=(1,), start=1).assign(model_name="other-model")
    assert audit.append_predictions(engine, other, batch_id="b3", hash_key=KEY).cases_superseded == 0
    assert audit.get_case(engine, second.record_ids[2]).status == "open"  # credit-risk's APP-3
    with engine.connect() as conn:
        plan = " ".join(
            str(r[-1])
            for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT case_id FROM review_cases "
                "WHERE status = 'open' AND model_name = 'm' AND entity_key IN ('a', 'b')"
            )
        )
    assert "ix_review_cases_open_entity" in plan


def test_a_batch_that_began_before_another_does_not_supersede_the_newer_batch_s_cases(
    engine: Engine,
) -> None:
    """Batch b1 began (its scoring_batch record), stopped, and is resumed after b2 was scored:
    b2's case is about the newer application and stays open; b3, begun after b2, supersedes it."""
    from mlops.audit_encode import RECORD_SCORING_BATCH

    for batch_id in ("b1", "b2"):
        audit.append_event(engine, RECORD_SCORING_BATCH, {"note": "begun"}, batch_id=batch_id)
    newer = audit.append_predictions(engine, batch(2, routed=(1,)), batch_id="b2", hash_key=KEY)
    resumed = audit.append_predictions(engine, batch(2), batch_id="b1", hash_key=KEY)  # decides APP-1 too
    assert resumed.cases_superseded == 0
    assert audit.get_case(engine, newer.record_ids[1]).status == "open"

    audit.append_event(engine, RECORD_SCORING_BATCH, {"note": "begun"}, batch_id="b3")
    latest = audit.append_predictions(engine, batch(2), batch_id="b3", hash_key=KEY)
    assert latest.cases_superseded == 1
    assert audit.get_case(engine, newer.record_ids[1]).superseded_by == latest.record_ids[1]


def test_one_open_case_per_application_within_one_append_and_after_the_fact(engine: Engine) -> None:
    twice = pd.concat([batch(2, routed=(1,))[:2], batch(2, routed=(1,))[:2]], ignore_index=True)
    result = audit.append_predictions(engine, twice, batch_id="b1", hash_key=KEY)  # APP-1 routed twice
    assert (result.cases_opened, result.cases_superseded) == (2, 1)
    [open_case] = audit.list_open_cases(engine)
    assert open_case.case_id == result.record_ids[3]  # the later row's
    assert audit.get_case(engine, result.record_ids[1]).superseded_by == result.record_ids[3]

    # Routing by hand: refused while the application has an open case (predictions appended
    # without cases leave it open) and on a prediction that is not the application's latest.
    plain = audit.append_predictions(engine, batch(2)[:2], batch_id="b1b", hash_key=KEY, open_cases=False)
    assert audit.get_case(engine, result.record_ids[3]).status == "open"
    with pytest.raises(
        audit.ReviewError, match=f"has an open review case already \\({result.record_ids[3]}\\)"
    ):
        audit.open_review_case(engine, plain.record_ids[1], "second look", opened_by="dana")
    with pytest.raises(audit.ReviewError, match="not its application's latest decision") as stale:
        audit.open_review_case(engine, result.record_ids[0], "second look", opened_by="dana")  # APP-0's first
    assert stale.value.hint == f"open the case on prediction {plain.record_ids[0]}"
    by_hand = audit.open_review_case(
        engine, plain.record_ids[0], "high stakes", opened_by="dana"
    )  # APP-0's latest
    assert by_hand.status == "open"

    # A chain of supersessions: the refusal names the newest case, not the next one.
    later = audit.append_predictions(engine, batch(2, routed=(1,)), batch_id="b2", hash_key=KEY)
    with pytest.raises(audit.ReviewCaseSuperseded) as refused:
        audit.resolve_case(engine, result.record_ids[1], "alice", "approve", "ok")
    newest = later.record_ids[1]
    assert f"case {newest} is open" in refused.value.message
    assert refused.value.hint == f"resolve case {newest} instead"
    audit.resolve_case(engine, newest, "alice", "approve", "ok")
    with pytest.raises(audit.ReviewCaseSuperseded) as refused:
        audit.resolve_case(engine, result.record_ids[3], "bob", "approve", "ok")
    assert "is resolved" in refused.value.message and refused.value.hint
    assert "nothing to resolve" in refused.value.hint
    # The case opened by hand: superseded by APP-0's unrouted prediction in the later batch.
    assert audit.get_case(engine, by_hand.case_id).superseded_by == later.record_ids[0]


def test_a_store_made_before_case_entities_gets_the_columns_and_keeps_its_cases(engine: Engine) -> None:
    first = audit.append_predictions(engine, batch(3, routed=(1,)), batch_id="b1", hash_key=KEY)
    sql(
        engine,
        "DROP INDEX ix_review_cases_open_entity",
        "DROP INDEX ix_review_cases_open_batch",
        "ALTER TABLE review_cases DROP COLUMN superseded_by",
        "ALTER TABLE review_cases DROP COLUMN entity_key",
        "CREATE INDEX ix_review_cases_status ON review_cases (status)",  # the first release's
    )
    audit.create_schema(engine)
    audit.create_schema(engine)  # twice: nothing to add the second time
    with engine.connect() as conn:
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars().all()
    assert {"ix_review_cases_open_entity", "ix_review_cases_open_batch"} <= set(names)
    assert "ix_review_cases_status" not in names
    # The cases opened before get their entity keys from their predictions.
    case = audit.get_case(engine, first.record_ids[1])
    assert (case.status, case.superseded_by) == ("open", None)
    assert case.entity_key == audit.entity_key("APP-000001", KEY)
    second = audit.append_predictions(engine, batch(3, routed=(1,)), batch_id="b2", hash_key=KEY)
    assert second.cases_superseded == 1 and audit.count_open_cases(engine) == 1
    assert audit.get_case(engine, first.record_ids[1]).superseded_by == second.record_ids[1]


def test_review_errors_write_nothing(engine: Engine) -> None:
    result = audit.append_predictions(engine, batch(2, routed=(0,)), batch_id="b", hash_key=KEY)
    case_id = result.record_ids[0]
    audit.resolve_case(engine, case_id, "alice", "approve", "ok")
    head = audit.verify_chain(engine).last_seq
    with pytest.raises(audit.ReviewCaseAlreadyResolved, match="alice"):
        audit.resolve_case(engine, case_id, "bob", "decline", "changed my mind")
    with pytest.raises(audit.ReviewCaseNotFound):
        audit.resolve_case(engine, str(uuid.uuid4()), "bob", "approve", "x")
    with pytest.raises(audit.ReviewCaseNotFound):
        audit.resolve_case(engine, "not-an-id", "bob", "approve", "x")
    with pytest.raises(audit.InvalidReviewDecision, match="approve"):
        audit.resolve_case(engine, case_id, "bob", "maybe", "x")
    with pytest.raises(audit.InvalidReviewDecision, match="reviewer"):
        audit.resolve_case(engine, case_id, " ", "approve", "x")
    assert issubclass(audit.ReviewError, InputError)
    assert audit.verify_chain(engine).last_seq == head
    assert audit.get_case(engine, case_id).reviewer == "alice"


def test_records_that_are_not_predictions_have_a_partial_index_queries_use(engine: Engine) -> None:
    from mlops.scoring import RECORD_SCORING_BATCH, prior_scorings

    fill(engine, 4)
    for n, snapshots in enumerate((["a" * 64], ["b" * 64, "a" * 64])):
        audit.append_event(
            engine, RECORD_SCORING_BATCH, {"input_snapshots": snapshots}, model_name="m", batch_id=f"b{n}"
        )
    audit.append_event(engine, RECORD_SCORING_BATCH, {"input_snapshots": ["a" * 64]}, model_name="other")
    with engine.connect() as conn:
        indexed = conn.exec_driver_sql(
            "SELECT count(*) FROM audit_records INDEXED BY ix_audit_records_events "
            "WHERE record_type <> 'prediction'"
        ).scalar()
        assert indexed == 1 + 3  # fill's own event + ours; its 4 predictions are not in the index
        found = prior_scorings(conn, "m", ["a" * 64])
        assert [(p.batch_id, p.snapshots) for p in found] == [("b0", ["a" * 64]), ("b1", ["a" * 64])]
        assert prior_scorings(conn, "m", ["c" * 64]) == []
        stmt = sa.select(audit.audit_records.c.seq).where(audit.is_event(RECORD_SCORING_BATCH))
        plan = " ".join(
            str(r[-1])
            for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {stmt.compile(engine, compile_kwargs={'literal_binds': True})}"
            )
        )
    assert "ix_audit_records_events" in plan

    # A store made before the index existed gets it from create_schema.
    sql(engine, "DROP INDEX ix_audit_records_events")
    audit.create_schema(engine)
    with engine.connect() as conn:
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars().all()
    assert "ix_audit_records_events" in names


def test_a_batch_of_rows_scored_before_is_refused_and_says_whether_that_batch_finished(
    engine: Engine,
) -> None:
    from mlops import scoring

    ctx = batch_record_context()

    def start(batch_id: str, *, rescore: bool = False) -> str:
        return scoring.record_scoring_batch(
            engine,
            batch_id=batch_id,
            model_name="m",
            ctx=ctx,
            spec_sha256="0" * 64,
            snapshots=["a" * 64],
            rescore=rescore,
        )

    start("b0")
    with pytest.raises(scoring.BatchAlreadyScored, match=r"batch b0 began scoring .* has not finished"):
        start("b1")
    start("b0")  # the same batch id (a re-run of the same flow run) continues its own batch
    scoring.record_scoring_done(engine, batch_id="b0", model_name="m", tally=scoring.ScoringTally(rows=3))
    with pytest.raises(scoring.BatchAlreadyScored, match="batch b0 scored the same valid rows at") as refused:
        start("b1")
    assert refused.value.hint and "--rescore" in refused.value.hint
    record_id = start("b2", rescore=True)
    with engine.connect() as conn:
        payload = conn.execute(
            sa.select(audit.audit_records.c.payload).where(audit.audit_records.c.record_id == record_id)
        ).scalar_one()
    assert payload["rescore_of"] == ["b0"]
    assert audit.verify_chain(engine).ok


def test_resume_points_say_what_a_batch_wrote_and_refuse_what_cannot_be_resumed(engine: Engine) -> None:
    from mlops import scoring
    from mlops.scoring_resume import (
        RECORD_SCORING_RESUMED,
        NothingToResume,
        find_resume_point,
        record_resumption,
    )

    ctx = batch_record_context()
    other = hashlib.sha256(b"other snapshot").hexdigest()

    def find(batch_id: str, snapshots: list[str] = [SNAPSHOT], resume: bool = True) -> Any:  # noqa: B006
        return find_resume_point(
            engine, model_name="m", batch_id=batch_id, snapshots=snapshots, resume=resume
        )

    with pytest.raises(NothingToResume, match="no batch of m began scoring these rows"):
        find("b9")
    scoring.record_scoring_batch(
        engine, batch_id="b0", model_name="m", ctx=ctx, spec_sha256="0" * 64, snapshots=[SNAPSHOT, other]
    )
    audit.append_predictions(engine, batch(6)[:3], batch_id="b0", hash_key=KEY)  # rows 0-2 of 6
    audit.append_predictions(engine, batch(6)[6:9], batch_id="b0", hash_key=KEY)  # their shadows
    assert find("b9", resume=False) is None  # a new batch: record_scoring_batch refuses it
    with pytest.raises(NothingToResume, match="other valid snapshots"):
        find("b9")
    point = find("b9", [SNAPSHOT, other])
    assert (point.batch_id, point.rows_written, point.completed) == ("b0", {SNAPSHOT: 3}, False)
    assert (point.champion_version, point.challenger_version, point.policy) == (1, None, ctx.policy)
    assert find("b0", [SNAPSHOT, other], resume=False) == point  # a re-run of b0's own flow run
    point = record_resumption(engine, point, model_name="m", resumed_by="run-2")
    assert point.rows_already_scored == 3
    with engine.connect() as conn:
        resumed = conn.execute(
            sa.select(audit.audit_records.c.batch_id, audit.audit_records.c.payload).where(
                audit.is_event(RECORD_SCORING_RESUMED)
            )
        ).one()
    assert resumed.batch_id == "b0"
    assert resumed.payload == {
        "resumed_by": "run-2",
        "rows_already_written": 3,
        "rows_written_by_snapshot": {SNAPSHOT: 3},
    }
    scoring.record_scoring_done(
        engine, batch_id="b0", model_name="m", tally=scoring.ScoringTally(rows=3), rows_written_before=3
    )
    with pytest.raises(NothingToResume, match="scored these rows to the end"):
        find("b9", [SNAPSHOT, other])
    assert find("b0", [SNAPSHOT, other], resume=False).completed
    assert audit.verify_chain(engine).ok

    # Decisions that are not the leading rows of a snapshot cannot be resumed row for row.
    scoring.record_scoring_batch(
        engine, batch_id="b1", model_name="m", ctx=ctx, spec_sha256="0" * 64, snapshots=[other], rescore=True
    )
    gap = batch(6).iloc[[1, 2]].assign(input_snapshot=other)
    audit.append_predictions(engine, gap, batch_id="b1", hash_key=KEY)
    with pytest.raises(InputError, match=r"not its leading rows \(rows 1..2\)"):
        find("b9", [other])

    # A batch record altered after the fact is not trusted to finish its batch.
    unguard(engine)
    sql(
        engine,
        "UPDATE audit_records SET payload = json_set(payload, '$.decision_policy.threshold', 0.99) "
        "WHERE batch_id = 'b1' AND record_type = :t",
        t=scoring.RECORD_SCORING_BATCH,
    )
    with pytest.raises(InputError, match="does not match its hash"):
        find("b1", [other], resume=False)


def test_a_resumed_batch_is_written_by_the_resuming_run_only(engine: Engine) -> None:
    from mlops import scoring
    from mlops.scoring_resume import BatchSourceChanged, find_resume_point, record_resumption

    ctx = batch_record_context()
    rows = batch(6).assign(entity_key=lambda f: [audit.entity_key(i, KEY) for i in f["entity_id"]])
    rows = rows.drop(columns=["entity_id"])
    began = scoring.record_scoring_batch(
        engine, batch_id="b0", model_name="m", ctx=ctx, spec_sha256="0" * 64, snapshots=[SNAPSHOT]
    )
    first_run = scoring.audit_sink(engine, "b0", began)
    first_run(rows.iloc[[0, 1, 6, 7]])  # rows 0-1 and their shadows: then the worker looks dead

    def resume(by: str) -> Any:
        point = find_resume_point(engine, model_name="m", batch_id=by, snapshots=[SNAPSHOT], resume=True)
        return record_resumption(engine, point, model_name="m", resumed_by=by)

    second = resume("run-2")
    assert second.rows_written == {SNAPSHOT: 2} and second.claim
    head = audit.verify_chain(engine).last_seq
    # The first run was alive after all: its next chunk is refused, nothing of it written.
    with pytest.raises(
        scoring.BatchTakenOver, match=r"batch b0 was resumed by run-2 at .* no row is decided twice"
    ):
        first_run(rows.iloc[[2, 8]])
    assert audit.verify_chain(engine).last_seq == head
    scoring.audit_sink(engine, "b0", second.claim)(rows.iloc[[2, 3, 8, 9]])

    third = resume("run-3")  # a second resume (two operators) takes over from the second
    assert third.rows_written == {SNAPSHOT: 4}
    with pytest.raises(scoring.BatchTakenOver, match="resumed by run-3"):
        scoring.audit_sink(engine, "b0", second.claim)(rows.iloc[[4, 10]])
    with pytest.raises(scoring.BatchTakenOver):
        scoring.record_scoring_done(
            engine, batch_id="b0", model_name="m", tally=scoring.ScoringTally(), claim=second.claim
        )
    scoring.audit_sink(engine, "b0", third.claim)(rows.iloc[[4, 5, 10, 11]])
    scoring.record_scoring_done(
        engine, batch_id="b0", model_name="m", tally=scoring.ScoringTally(rows=2), claim=third.claim
    )
    with engine.connect() as conn:
        deciding = conn.execute(
            sa.select(audit.audit_records.c.input_row).where(
                audit.audit_records.c.batch_id == "b0", audit.audit_records.c.role == "champion"
            )
        ).scalars()
        assert sorted(deciding) == list(range(6))  # each row decided once
    assert audit.verify_chain(engine).ok

    # A resume that read its point before the batch's own run finished it: no record, no claim.
    stale = replace(third, completed=False, claim=None)  # as read before the scoring_done record
    head = audit.verify_chain(engine).last_seq
    finished = record_resumption(engine, stale, model_name="m", resumed_by="run-4")
    assert finished.completed and finished.claim is None
    assert audit.verify_chain(engine).last_seq == head  # no second scoring_resumed / scoring_done

    # A re-run of b0's own flow run whose source now gives other rows is refused.
    other = hashlib.sha256(b"changed source").hexdigest()
    with pytest.raises(BatchSourceChanged, match="the source changed between attempts"):
        find_resume_point(engine, model_name="m", batch_id="b0", snapshots=[other], resume=False)


def test_open_cases_are_found_the_same_way_whatever_the_queue_length(engine: Engine) -> None:
    from mlops.audit_write import _open_cases_of, _other_open_cases

    result = audit.append_predictions(engine, batch(8, routed=(0, 2, 3, 5, 6, 7)), batch_id="b", hash_key=KEY)
    app = {i: audit.entity_key(f"APP-{i:06d}", KEY) for i in range(8)}
    keys = {app[i]: f"successor-{i}" for i in (2, 4, 5)}  # APP-4 has no case

    def found(model: str, keys: dict[str, str], batch_id: str) -> list[tuple[str, str, str | None]]:
        queued = _other_open_cases(conn, model, batch_id)
        return _open_cases_of(conn, model, keys, batch_id, queued) if queued else []

    queue = "FROM review_cases WHERE status = 'open' AND model_name = 'm' AND"
    with engine.connect() as conn:
        few = found("credit-risk", {app[2]: "successor-2"}, "next")  # 6 open > 4 x 1 key: by key
        many = found("credit-risk", keys, "next")  # 6 open <= 4 x 3 keys: the queue is read
        other = found("other-model", keys, "next")
        # A batch's own earlier cases are not looked at (it decides each application once).
        own = (_other_open_cases(conn, "credit-risk", "b"), found("credit-risk", keys, "b"))
        plans = [
            " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in (
                f"SELECT count(*) {queue} batch_id > 'b'",
                f"SELECT entity_key {queue} batch_id < 'b' UNION ALL SELECT entity_key {queue} batch_id > 'b'",
            )
        ]
    assert few == [(result.record_ids[2], app[2], "b")] and other == [] and own == (0, [])
    assert sorted(many) == sorted([(result.record_ids[2], app[2], "b"), (result.record_ids[5], app[5], "b")])
    # Ranges of the batch index alone: a large batch's own open cases are not even read.
    assert "COVERING INDEX ix_review_cases_open_batch (model_name=? AND batch_id>?)" in plans[0], plans
    assert "COVERING INDEX ix_review_cases_open_batch (model_name=? AND batch_id<?)" in plans[1], plans


def test_dropped_guards_are_reported_and_their_restoring_is_recorded(engine: Engine) -> None:
    head = fill(engine).last_seq
    assert audit.verify_chain(engine).guards_missing == []
    audit.ensure_schema(engine)
    assert audit.verify_chain(engine).last_seq == head  # nothing to record on an intact store
    unguard(engine)

    report = audit.verify_chain(engine)
    assert report.ok and len(report.guards_missing) == 2 * len(APPEND_ONLY_TABLES)

    assert restore_guards(engine).ok  # what every command that opens the store does


def test_a_stale_finding_is_checked_again_under_the_chain_lock(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process restored the guards between the unlocked look and the lock: nothing to record."""
    head = fill(engine).last_seq
    monkeypatch.setattr(audit, "used_store_missing_guards", lambda _engine: ["audit_records_no_delete"])
    audit.ensure_schema(engine)
    report = audit.verify_chain(engine)
    assert (report.last_seq, report.guards_restored) == (head, 0)


def test_a_guard_redefined_to_refuse_nothing_is_reported_and_replaced(engine: Engine) -> None:
    fill(engine)
    sql(
        engine,
        "DROP TRIGGER audit_records_no_delete",
        "CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records WHEN 0 "
        "BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END",
        "DROP TRIGGER audit_records_no_update",
        "CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records BEGIN SELECT 'RAISE'; END",
    )
    assert audit.verify_chain(engine).guards_missing == ["audit_records_no_delete", "audit_records_no_update"]
    restore_guards(engine)


def test_only_the_newest_stored_anchors_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    seqs = [3, 120, 7, 1000, 15, 64, 9]  # stored in no order
    for seq in seqs:
        audit.store_anchor(
            store, audit.Anchor(seq=seq, record_hash=f"{seq:064x}", created_at=datetime.now(UTC))
        )
    reads: list[str] = []
    get_bytes = store.get_bytes
    monkeypatch.setattr(store, "get_bytes", lambda key: reads.append(key) or get_bytes(key))
    newest = sorted(seqs)[-NEWEST_ANCHORS:]
    assert [a.seq for a in audit.stored_anchors(store)] == newest
    assert len(reads) == NEWEST_ANCHORS  # one listing, then only the newest are read
    assert [a.seq for a in audit.stored_anchors(store, newest=None)] == sorted(seqs)
