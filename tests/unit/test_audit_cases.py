"""The review queue held against the audit chain: edits of ``review_cases`` are named by
verify and refused by training and by resolving again (mlops.audit_cases)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.audit_cases import check_cases
from mlops.audit_review import ReviewCaseAlreadyResolved
from mlops.errors import ChainBroken
from tests.review_helpers import MODEL, append, predictions

pytestmark = pytest.mark.unit

SNAPSHOT = "c" * 64


@pytest.fixture
def cases(engine: Engine) -> list[str]:
    """Three routed champion predictions: the first resolved (alice, decline), two open."""
    ids = append(
        engine, predictions(SNAPSHOT, ["A-1", "A-2", "A-3"], [0.3, 0.31, 0.32], routed=(0, 1, 2)), "b1"
    )
    audit.resolve_case(engine, ids[0], "alice", "decline", "income not verifiable")
    return ids


def sql(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)


def problems(engine: Engine) -> list[str]:
    report = audit.verify_chain(engine)
    assert report.first_break is None  # the chain itself is intact in every case here
    return [f"{p.case_id}: {p.problem}" for p in report.cases.problems]


def test_an_intact_queue_agrees_and_labels_come_from_the_chain(engine: Engine, cases: list[str]) -> None:
    report = audit.verify_chain(engine)
    assert report.ok and report.cases.ok
    assert (report.cases.cases_checked, report.cases.reviews_checked) == (3, 1)
    [row] = audit.resolved_cases(engine).to_dict(orient="records")
    assert (row["case_id"], row["reviewer"], row["decision"], row["label"]) == (
        cases[0],
        "alice",
        "decline",
        1,
    )


def test_an_edited_resolution_is_named_and_not_learned_from(engine: Engine, cases: list[str]) -> None:
    sql(
        engine,
        f"UPDATE review_cases SET decision = 'approve', reviewer = 'mallory' WHERE case_id = '{cases[0]}'",
    )

    [problem] = problems(engine)
    assert problem.startswith(f"{cases[0]}: review_cases says approve by mallory")
    assert "says decline by alice" in problem
    assert not audit.verify_chain(engine).ok
    with pytest.raises(ChainBroken, match="1 review case\\(s\\) disagree with the audit chain"):
        audit.resolved_cases(engine)


def test_a_made_up_resolution_is_named(engine: Engine, cases: list[str]) -> None:
    sql(
        engine,
        f"UPDATE review_cases SET status = 'resolved', decision = 'decline', reviewer = 'x' WHERE case_id = '{cases[1]}'",
    )

    [problem] = problems(engine)
    assert (
        problem
        == f"{cases[1]}: review_cases says resolved (decline by x); the chain holds no review record of it"
    )
    with pytest.raises(ChainBroken):
        audit.resolved_cases(engine)


def test_a_reopened_case_cannot_be_resolved_a_second_time(engine: Engine, cases: list[str]) -> None:
    sql(
        engine,
        "UPDATE review_cases SET status = 'open', decision = NULL, reviewer = NULL, resolved_at = NULL, "
        f"review_record_id = NULL WHERE case_id = '{cases[0]}'",
    )
    assert problems(engine)[0].startswith(f"{cases[0]}: the chain's review record")  # ... says open
    head = audit.verify_chain(engine).last_seq

    with pytest.raises(
        ReviewCaseAlreadyResolved, match="the audit chain holds its review \\(decline by alice"
    ):
        audit.resolve_case(engine, cases[0], "mallory", "approve", "second opinion")

    assert audit.verify_chain(engine).last_seq == head  # nothing appended


def test_a_case_whose_prediction_is_gone_is_named_and_not_resolved(engine: Engine, cases: list[str]) -> None:
    ghost = "0190b1e2-0000-7000-8000-00000000beef"
    sql(
        engine, f"UPDATE review_cases SET case_id = '{ghost}' WHERE case_id = '{cases[2]}'"
    )  # as if its record were deleted

    assert problems(engine) == [f"{ghost}: open case of a prediction record that is not in the store"]
    with pytest.raises(ChainBroken, match="reviews a prediction record that is not in the audit store"):
        audit.resolve_case(engine, ghost, "alice", "approve", "fine")


def test_check_cases_of_one_model_reads_only_its_cases(engine: Engine, cases: list[str]) -> None:
    sql(engine, f"UPDATE review_cases SET reviewer = 'mallory' WHERE case_id = '{cases[0]}'")
    with engine.connect() as conn:
        mine = check_cases(conn, model_name=MODEL)
        other = check_cases(conn, model_name="another-model")
    assert (mine.problems_total, mine.cases_checked) == (1, 1)  # the resolved case only
    assert (other.problems_total, other.cases_checked, other.reviews_checked) == (0, 0, 0)


def test_many_reviews_are_checked_within_the_databases_parameter_limit(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"M-{i}" for i in range(150)]
    records = append(engine, predictions(SNAPSHOT, ids, [0.3] * 150, routed=tuple(range(150))), "b2")
    for record in records:
        audit.resolve_case(engine, record, "alice", "approve", "fine")
    sql(engine, "UPDATE review_cases SET status = 'open'")  # the chain resolved 150 cases the table says open
    limited = audit.create_audit_engine(str(engine.url))
    event.listen(
        limited, "connect", lambda dbapi, _: dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
    )
    monkeypatch.setattr("mlops.audit_cases._IDS_PER_QUERY", 40)
    try:
        with limited.connect() as conn:
            check = check_cases(conn)
    finally:
        limited.dispose()
    assert check.problems_total == 150 and check.reviews_checked == 150


def test_resolved_cases_of_a_model_are_read_through_their_partial_index(engine: Engine) -> None:
    from mlops.audit_cases import _case_rows

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))
    with engine.connect() as conn:
        _case_rows(conn, {}, MODEL)
        [resolved] = [s for s in statements if "review_cases" in s]
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {resolved}", (MODEL,)))
    assert "ix_review_cases_resolved" in plan
