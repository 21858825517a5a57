"""Audit chain and review queue on a real PostgreSQL, each test in a fresh schema.

Set ``MLOPS_TEST_PG_URL`` to use another server; by default the local one is tried as user
``postgres`` then ``root``. The tests skip (with the reason) only if no server answers.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.audit_schema import metadata
from mlops.errors import ChainBroken
from tests.helpers import batch_record_context, postgres_url, restore_guards

pytestmark = pytest.mark.integration

KEY = "integration-test-key"
SNAPSHOT = hashlib.sha256(b"snapshot").hexdigest()


@pytest.fixture(scope="module")
def pg_url() -> str:
    return postgres_url()


@contextmanager
def fresh_schema(pg_url: str, *, translate: bool = False) -> Iterator[tuple[Engine, str]]:
    """An audit store in a new schema (search_path, or schema_translate_map), dropped after."""
    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    eng = (
        audit.create_audit_engine(pg_url, execution_options={"schema_translate_map": {None: schema}})
        if translate
        else audit.create_audit_engine(pg_url, connect_args={"options": f"-csearch_path={schema}"})
    )
    try:
        audit.create_schema(eng)
        yield eng, schema
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    with fresh_schema(pg_url) as (eng, _schema):
        yield eng


# --- helpers (same shapes as tests/unit/test_audit_chain.py) ------------------------------


def batch(n: int = 4, *, routed: tuple[int, ...] = (), start: int = 0) -> pd.DataFrame:
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
    """2n predictions, one promotion event, n predictions: 13 records for n = 4."""
    audit.append_predictions(engine, batch(n), batch_id="b-1", hash_key=KEY)
    audit.append_event(engine, "promotion", {"from": "3", "to": "4", "auc": 0.81}, model_name="credit-risk")
    return audit.append_predictions(engine, batch(n, start=n)[:n], batch_id="b-2", hash_key=KEY)


def sql(engine: Engine, *statements: str, **params: Any) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)


def unguard(engine: Engine) -> None:
    sql(
        engine,
        "ALTER TABLE audit_records DISABLE TRIGGER USER",
        "ALTER TABLE audit_anchors DISABLE TRIGGER USER",
    )


def row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(sa.select(audit.audit_records).where(audit.audit_records.c.seq == seq))
        return dict(found.one()._mapping)


def fields_of(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in audit.CANONICAL_FIELDS}


def brk(engine: Engine, **kwargs: Any) -> audit.ChainBreak:
    report = audit.verify_chain(engine, **kwargs)
    assert not report.ok and report.first_break is not None, report
    return report.first_break


# --- tests -------------------------------------------------------------------------------


def test_intact_chain_verifies_with_awkward_values(engine: Engine) -> None:
    fill(engine)
    frame = batch(3, routed=(1,))
    frame["model_name"] = ['crédit\t"risk"\\', "模型\n\r", "\u0001ctl"] * 2
    frame["review_reason"] = ["x", "tab\there \\N", None, None, None, None]
    frame.loc[0, "confidence"] = np.nan
    frame["model_alias"] = None
    audit.append_predictions(engine, frame, batch_id="b\u2028", hash_key=KEY, chunk_rows=4)
    report = audit.verify_chain(engine, page_size=4)
    assert report.ok, report.first_break
    assert report.records_checked == 19
    with engine.connect() as conn:
        names = conn.execute(
            sa.select(audit.audit_records.c.model_name).where(audit.audit_records.c.seq > 13)
        ).scalars()
        assert list(names) == frame["model_name"].tolist()


def test_schema_translate_map_works_too(pg_url: str) -> None:
    with fresh_schema(pg_url, translate=True) as (eng, schema):
        fill(eng, 2)
        assert audit.verify_chain(eng).records_checked == 7
        with eng.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": schema}
            ).scalar()
        assert tables == len(metadata.tables)
        audit.create_schema(eng)  # idempotent: the partial index is found in the translated schema
        with eng.connect() as conn:
            index = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE schemaname = :s AND indexname = :i"),
                {"s": schema, "i": "ix_audit_records_events"},
            ).scalar()
        assert index is not None and "WHERE" in index and "prediction" in index


@pytest.mark.parametrize("translate", [False, True])
def test_an_older_store_gets_case_entities_and_later_cases_supersede(pg_url: str, translate: bool) -> None:
    with fresh_schema(pg_url, translate=translate) as (eng, schema):
        first = audit.append_predictions(eng, batch(3, routed=(1,)), batch_id="b1", hash_key=KEY)
        with eng.begin() as conn:  # the store as the first release made it
            table = f'"{schema}".review_cases'
            conn.exec_driver_sql(f'DROP INDEX "{schema}".ix_review_cases_open_entity')
            conn.exec_driver_sql(f'DROP INDEX "{schema}".ix_review_cases_open_batch')
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN entity_key, DROP COLUMN superseded_by")
            conn.exec_driver_sql(f"CREATE INDEX ix_review_cases_status ON {table} (status)")
        audit.create_schema(eng)
        with eng.connect() as conn:
            indexes = set(
                conn.execute(
                    sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = :s"), {"s": schema}
                ).scalars()
            )
            kinds = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = :s AND table_name = 'review_cases'"
                    ),
                    {"s": schema},
                ).all()
            )
        assert {"ix_review_cases_open_entity", "ix_review_cases_open_batch"} <= indexes
        assert "ix_review_cases_status" not in indexes
        assert (kinds["entity_key"], kinds["superseded_by"]) == ("character varying", "uuid")
        # backfilled from the predictions
        assert audit.get_case(eng, first.record_ids[1]).entity_key == audit.entity_key("APP-000001", KEY)
        second = audit.append_predictions(eng, batch(3, routed=(1,)), batch_id="b2", hash_key=KEY)
        assert second.cases_superseded == 1
        case = audit.get_case(eng, first.record_ids[1])
        assert (case.status, case.superseded_by) == ("superseded", second.record_ids[1])
        with pytest.raises(audit.ReviewCaseSuperseded, match=f"case {second.record_ids[1]}"):
            audit.resolve_case(eng, first.record_ids[1], "alice", "approve", "ok")
        assert audit.count_open_cases(eng) == 1 and audit.verify_chain(eng).ok


def test_earlier_scorings_of_the_same_rows_are_found(engine: Engine) -> None:
    from mlops.scoring import RECORD_SCORING_BATCH, prior_scorings

    fill(engine, 2)
    audit.append_event(
        engine, RECORD_SCORING_BATCH, {"input_snapshots": ["a" * 64]}, model_name="m", batch_id="b0"
    )
    with engine.connect() as conn:
        [found] = prior_scorings(conn, "m", ["a" * 64, "b" * 64])
        assert (found.batch_id, found.snapshots) == ("b0", ["a" * 64])
        assert found.created_at.tzinfo is not None
        assert prior_scorings(conn, "other", ["a" * 64]) == []


def test_an_unfinished_batch_is_resumed_from_its_written_rows(engine: Engine) -> None:
    from mlops.scoring import BatchTakenOver, audit_sink, record_scoring_batch
    from mlops.scoring_resume import find_resume_point, record_resumption

    ctx = batch_record_context()
    began = record_scoring_batch(
        engine, batch_id="b0", model_name="m", ctx=ctx, spec_sha256="0" * 64, snapshots=[SNAPSHOT]
    )
    audit.append_predictions(engine, batch(6)[:4], batch_id="b0", hash_key=KEY)  # rows 0-3 decided
    point = find_resume_point(engine, model_name="m", batch_id="b1", snapshots=[SNAPSHOT], resume=True)
    assert point is not None and point.batch_id == "b0" and point.rows_written == {SNAPSHOT: 4}
    assert (point.policy, point.champion_version, point.completed) == (ctx.policy, 1, False)
    resumed = record_resumption(engine, point, model_name="m", resumed_by="b1")
    assert resumed.rows_already_scored == 4 and resumed.claim
    # The run that began the batch lost it: its next chunk is refused; the resuming run writes.
    rows = batch(6).assign(entity_key=lambda f: [audit.entity_key(i, KEY) for i in f["entity_id"]])
    rows = rows.drop(columns=["entity_id"])
    with pytest.raises(BatchTakenOver, match="resumed by b1"):
        audit_sink(engine, "b0", began)(rows.iloc[[4, 10]])
    audit_sink(engine, "b0", resumed.claim)(rows.iloc[[4, 5, 10, 11]])
    assert find_resume_point(
        engine, model_name="m", batch_id="b0", snapshots=[SNAPSHOT], resume=False
    ).rows_written == {SNAPSHOT: 6}
    assert audit.verify_chain(engine).ok


def test_store_refuses_update_delete_truncate(engine: Engine) -> None:
    fill(engine, 2)
    for statement in (
        "UPDATE audit_records SET score = 0.5 WHERE seq = 2",
        "DELETE FROM audit_records WHERE seq = 2",
        "TRUNCATE audit_records",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            sql(engine, statement)


@pytest.mark.parametrize("score", [0.1, 1 / 3, 5e-324, 1 - 2**-53, math.nextafter(0.5, 1.0), 1e-300, 2.5e-17])
def test_score_round_trips_exactly(engine: Engine, score: float) -> None:
    audit.append_predictions(engine, batch(1).iloc[:1].assign(score=score), batch_id="b", hash_key=KEY)
    assert struct.pack("<d", row(engine, 1)["score"]) == struct.pack("<d", score)
    assert audit.verify_chain(engine).ok


def test_edited_field_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    victim = row(engine, 3)
    sql(engine, "UPDATE audit_records SET score = 0.5 WHERE seq = 3")
    found = brk(engine, page_size=2)
    assert (found.kind, found.seq, found.record_id) == ("edited", 3, victim["record_id"])


def test_deleted_record_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    sql(engine, "DELETE FROM audit_records WHERE seq = 5")
    found = brk(engine, page_size=4)
    assert (found.kind, found.seq, found.record_id) == ("deleted", 5, None)


def test_inserted_record_is_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    base = row(engine, 4)
    forged = {**base, "record_id": str(uuid.uuid4()), "score": 0.001}
    forged["prev_hash"] = base["record_hash"]
    forged["record_hash"] = audit.record_hash(forged["prev_hash"], fields_of(forged))
    sql(
        engine,
        "UPDATE audit_records SET seq = -seq WHERE seq > 4",
        "UPDATE audit_records SET seq = -seq + 1 WHERE seq < 0",
        "UPDATE audit_chain_head SET seq = seq + 1",
    )
    with engine.begin() as conn:
        conn.execute(audit.audit_records.insert().values(**{**forged, "seq": 5}))
    found = brk(engine, page_size=5)
    assert (found.kind, found.seq, found.record_id) == ("inserted", 5, forged["record_id"])


def test_reordered_records_are_named(engine: Engine) -> None:
    fill(engine)
    unguard(engine)
    moved = row(engine, 4)
    sql(
        engine,
        "UPDATE audit_records SET seq = -1 WHERE seq = 3",
        "UPDATE audit_records SET seq = 3 WHERE seq = 4",
        "UPDATE audit_records SET seq = 4 WHERE seq = -1",
    )
    found = brk(engine)
    assert (found.kind, found.seq, found.record_id) == ("reordered", 3, moved["record_id"])


def test_full_rewrite_is_caught_by_the_anchors(engine: Engine, tmp_path: Path) -> None:
    fill(engine)
    path = audit.export_anchor(audit.anchor_head(engine), tmp_path / "head.json")
    unguard(engine)
    with engine.connect() as conn:
        records = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(audit.audit_records)
                .where(audit.audit_records.c.seq >= 6)
                .order_by(audit.audit_records.c.seq)
            )
        ]
    prev = row(engine, 5)["record_hash"]
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
    found = brk(engine)
    assert (found.kind, found.seq) == ("rewritten", 13)
    sql(engine, "DELETE FROM audit_anchors")
    assert audit.verify_chain(engine).ok  # the chain alone cannot tell
    found = brk(engine, anchors=audit.load_anchors(path))
    assert (found.kind, found.seq) == ("rewritten", 13)


def test_raw_ids_and_sensitive_values_are_never_stored(engine: Engine) -> None:
    result = audit.append_predictions(engine, batch(5, routed=(2,)), batch_id="b", hash_key=KEY)
    audit.resolve_case(engine, result.record_ids[2], "alice", "decline", "thin file")
    with engine.connect() as conn:
        dumped = " ".join(
            str(list(r)) for table in metadata.sorted_tables for r in conn.execute(sa.select(table))
        )
    for secret in ["APP-000003", "SENSITIVE-VALUE", KEY]:
        assert secret not in dumped
    assert audit.entity_key("APP-000003", KEY) in dumped


def test_review_round_trip_and_errors(engine: Engine) -> None:
    result = audit.append_predictions(engine, batch(4, routed=(1, 3)), batch_id="b", hash_key=KEY)
    assert result.cases_opened == 2
    cases = audit.list_open_cases(engine, model_name="credit-risk")
    assert [c.case_id for c in cases] == [result.record_ids[1], result.record_ids[3]]
    audit.resolve_case(engine, cases[0].case_id, "alice", "decline", "income unverified")
    audit.resolve_case(engine, cases[1].case_id, "bob", "approve", "verified by phone")
    review = row(engine, 9)
    assert (review["record_type"], review["payload"]["reviewer"]) == ("review", "alice")
    training = audit.resolved_cases(engine)
    assert training["label"].tolist() == [1, 0] and training["input_row"].tolist() == [1, 3]

    with pytest.raises(audit.ReviewCaseAlreadyResolved):
        audit.resolve_case(engine, cases[0].case_id, "carol", "approve", "again")
    with pytest.raises(audit.ReviewCaseNotFound):
        audit.resolve_case(engine, str(uuid.uuid4()), "carol", "approve", "x")
    with pytest.raises(audit.ReviewCaseNotFound):
        audit.resolve_case(engine, "not-a-uuid", "carol", "approve", "x")
    with pytest.raises(audit.InvalidReviewDecision):
        audit.resolve_case(engine, cases[0].case_id, "carol", "escalate", "x")
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 10


def test_an_application_is_found_by_its_own_id(engine: Engine) -> None:
    from mlops.audit_lookup import find_entity

    first = audit.append_predictions(engine, batch(4, routed=(1,)), batch_id="b-1", hash_key=KEY)
    later = audit.append_predictions(engine, batch(4, routed=(1,)), batch_id="b-2", hash_key=KEY)
    audit.resolve_case(engine, later.record_ids[1], "alice", "decline", "income unverified")

    history = find_entity(engine, "APP-000001", KEY)
    kinds = [(r.batch_id, r.record_type, r.role) for r in history.records]
    assert kinds == [
        ("b-1", "prediction", "champion"),
        ("b-1", "prediction", "shadow"),
        ("b-2", "prediction", "champion"),
        ("b-2", "prediction", "shadow"),
        ("b-2", "review", None),  # the review record names the batch of its case
    ]
    old, _, new, _, review = history.records
    assert old.record_id == first.record_ids[1] and old.case_status == "superseded"
    assert old.case_superseded_by == new.record_id == later.record_ids[1]
    assert (new.case_status, new.reviewer, new.reviewed_decision) == ("resolved", "alice", "decline")
    assert (review.decision, review.case_id, review.reviewer) == ("decline", new.record_id, "alice")
    now = history.current["credit-risk"]
    assert (now.decision, now.decided_by, now.prediction.record_id) == ("decline", "reviewer", new.record_id)
    assert find_entity(engine, "APP-000001", "another-key").records == []
    assert find_entity(engine, "APP-000001", KEY, model_name="other").records == []


def test_concurrent_appenders_do_not_fork_the_chain(engine: Engine) -> None:
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(10):
                audit.append_predictions(
                    engine, batch(5, start=100 * n + i), batch_id=f"w{n}-{i}", hash_key=KEY
                )
                audit.append_event(engine, "promotion", {"writer": n, "i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    report = audit.verify_chain(engine, page_size=50)
    assert report.ok, report.first_break
    assert report.records_checked == 2 * 10 * 11
    with engine.connect() as conn:
        batches = conn.execute(
            sa.select(audit.audit_records.c.batch_id, sa.func.count())
            .group_by(audit.audit_records.c.batch_id)
            .where(audit.audit_records.c.record_type == "prediction")
        ).all()
    assert len(batches) == 20 and {count for _b, count in batches} == {10}


def test_two_runs_of_the_same_rows_cannot_both_pass_the_check(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check and the append hold the chain lock together: the second run waits, then sees
    the first one's record and is refused (without the lock both would write)."""
    import threading
    import time

    from mlops import scoring

    ctx = batch_record_context()
    real = scoring.prior_scorings

    def slow(conn: Any, name: str, snapshots: Any) -> Any:
        found = real(conn, name, snapshots)
        time.sleep(0.5)  # a wide window between the check and the append
        return found

    monkeypatch.setattr(scoring, "prior_scorings", slow)
    outcome: dict[int, str] = {}

    def run(i: int) -> None:
        try:
            scoring.record_scoring_batch(
                engine, batch_id=f"b{i}", model_name="m", ctx=ctx, spec_sha256="0" * 64, snapshots=["a" * 64]
            )
            outcome[i] = "written"
        except scoring.BatchAlreadyScored:
            outcome[i] = "refused"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["refused", "written"]
    with engine.connect() as conn:
        written = conn.execute(
            sa.select(sa.func.count()).where(
                audit.audit_records.c.record_type == scoring.RECORD_SCORING_BATCH
            )
        ).scalar()
    assert written == 1


@pytest.mark.parametrize(
    ("switch_off", "missing"),
    [
        (
            ["ALTER TABLE audit_records ENABLE REPLICA TRIGGER audit_records_append_only"],
            ["audit_records_append_only"],
        ),
        (
            [
                "CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RETURN NEW; END $$"
            ],
            ["audit_refuse_change"],
        ),
        (  # the guard recreated to call another function
            [
                "CREATE FUNCTION let_through() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
                "CREATE OR REPLACE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records "
                "FOR EACH ROW EXECUTE FUNCTION let_through()",
            ],
            ["audit_records_append_only"],
        ),
    ],
)
def test_guards_that_fire_no_more_are_reported_and_restored(
    engine: Engine, switch_off: list[str], missing: list[str]
) -> None:
    fill(engine)
    sql(engine, *switch_off)
    assert audit.verify_chain(engine).guards_missing == missing
    restore_guards(engine)


def test_other_triggers_in_the_schema_are_not_guards_gone_missing(engine: Engine) -> None:
    fill(engine)
    sql(  # a foreign key (PostgreSQL's internal triggers) and another application's trigger
        engine,
        "CREATE TABLE parent (id int PRIMARY KEY)",
        "CREATE TABLE child (id int REFERENCES parent(id))",
        "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "CREATE TRIGGER child_noop BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION noop()",
    )
    assert audit.verify_chain(engine).guards_missing == []
    audit.ensure_schema(engine)
    assert audit.verify_chain(engine).guards_restored == 0


def test_disabled_guards_are_reported_restored_and_recorded(engine: Engine) -> None:
    fill(engine)
    unguard(engine)  # ALTER TABLE ... DISABLE TRIGGER USER: the triggers exist but do nothing
    assert len(audit.verify_chain(engine).guards_missing) == 4
    assert restore_guards(engine).ok


@pytest.mark.parametrize("translate", [False, True])
def test_an_edited_resolution_is_named_by_verify_in_any_schema(pg_url: str, translate: bool) -> None:
    with fresh_schema(pg_url, translate=translate) as (eng, schema):
        written = audit.append_predictions(eng, batch(4, routed=(1,)), batch_id="b-1", hash_key=KEY)
        case_id = str(written.record_ids.iloc[1])
        audit.resolve_case(eng, case_id.upper(), "alice", "decline", "income not verifiable")
        assert audit.verify_chain(eng).ok
        sql(eng, f"UPDATE \"{schema}\".review_cases SET reviewer = 'mallory' WHERE case_id = '{case_id}'")
        report = audit.verify_chain(eng)
        assert not report.ok and report.cases.problems_total == 1 and report.first_break is None
        with pytest.raises(ChainBroken):
            audit.resolved_cases(eng)
