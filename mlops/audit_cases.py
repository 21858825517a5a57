"""The review queue held against the audit chain.

``review_cases`` is working state: rows are opened, superseded and resolved in place, and no
hash covers them. What a person decided is the ``review`` record that resolving a case appends
to the chain in the same transaction. So anything that acts on a resolution (the labels the
next training run learns from, "a resolution is final") reads the chain's record, and the
table is checked against the chain:

* a resolved case must have exactly one ``review`` record, saying the same decision, reviewer
  and record id as the case row;
* a ``review`` record's case must be resolved (not open, superseded or gone);
* with ``predictions=True`` (``mlops audit verify``): every case must review a prediction record
  that is in the store (deleting the newest records leaves their cases behind).

An edit of the table (a decision flipped in SQL, a case re-opened to be resolved again, a row
made up) is then named by ``mlops audit verify`` and refused by training, instead of being
learned from.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from mlops.audit_hashing import as_utc
from mlops.audit_schema import CASE_RESOLVED, RESOLVED_CASE, audit_records, is_event, review_cases
from mlops.audit_write import RECORD_REVIEW

REPORTED_PROBLEMS: Final = 20  # problems listed in a report; all are counted
_IDS_PER_QUERY: Final = 500  # bound parameters per statement (SQLite's limit may be 999)


@dataclass(frozen=True)
class ChainedReview:
    """A ``review`` record of the chain: one resolution, as it was written."""

    record_id: str
    case_id: str
    reviewer: str
    decision: str
    created_at: datetime
    model_name: str | None


class CaseProblem(BaseModel):
    """A review case the table and the chain disagree about."""

    case_id: str
    problem: str = Field(description="what disagrees, for a person")


class CaseCheck(BaseModel):
    """Result of :func:`check_cases`."""

    cases_checked: int = 0
    reviews_checked: int = 0
    problems_total: int = 0
    problems: list[CaseProblem] = Field(default_factory=list, description="the first ones, in case order")

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    def summary(self) -> str:
        first = self.problems[0] if self.problems else None
        return f"{self.problems_total} review case(s) disagree with the audit chain" + (
            f"; first: case {first.case_id}: {first.problem}" if first else ""
        )


def chained_reviews(
    conn: Connection, *, batch_id: str | None = None, model_name: str | None = None
) -> list[ChainedReview]:
    """The chain's ``review`` records (of one batch, or one model), oldest first; through the
    index of non-prediction records."""
    a = audit_records.c
    stmt = sa.select(a.record_id, a.payload, a.created_at, a.model_name).where(is_event(RECORD_REVIEW))
    if batch_id is not None:
        stmt = stmt.where(a.batch_id == batch_id)
    if model_name is not None:
        stmt = stmt.where(a.model_name == model_name)
    reviews = []
    for row in conn.execute(stmt.order_by(a.seq)):
        payload: dict[str, Any] = row.payload or {}
        reviews.append(
            ChainedReview(
                record_id=str(row.record_id),
                case_id=_stored_id(payload.get("case_id")),
                reviewer=str(payload.get("reviewer")),
                decision=str(payload.get("decision")),
                created_at=as_utc(row.created_at),
                model_name=row.model_name,
            )
        )
    return reviews


def _stored_id(value: object) -> str:
    """A case id as the store keeps it (lowercase, hyphenated): an early release wrote review
    records with the id as it was typed."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def review_of(conn: Connection, case_id: str, batch_id: str | None) -> ChainedReview | None:
    """The chain's ``review`` record of ``case_id`` (looked for among its batch's records)."""
    return next((r for r in chained_reviews(conn, batch_id=batch_id) if r.case_id == case_id), None)


def _by_case(reviews: Iterable[ChainedReview]) -> dict[str, list[ChainedReview]]:
    found: dict[str, list[ChainedReview]] = {}
    for review in reviews:
        found.setdefault(review.case_id, []).append(review)
    return found


def _disagreement(row: Any, review: ChainedReview) -> str | None:
    said = (row.decision, row.reviewer, str(row.review_record_id))
    chained = (review.decision, review.reviewer, review.record_id)
    if said == chained:
        return None
    return (
        f"review_cases says {row.decision} by {row.reviewer} (record {row.review_record_id}); the "
        f"chain's review record {review.record_id} says {review.decision} by {review.reviewer}"
    )


def _problems(rows: Sequence[Any], reviews: dict[str, list[ChainedReview]]) -> list[CaseProblem]:
    found: list[CaseProblem] = []
    seen = set()
    for row in rows:
        case_id = str(row.case_id)
        seen.add(case_id)
        chained = reviews.get(case_id, [])
        if len(chained) > 1:
            ids = ", ".join(r.record_id for r in chained)
            found.append(
                CaseProblem(case_id=case_id, problem=f"resolved {len(chained)} times in the chain ({ids})")
            )
        elif row.status == CASE_RESOLVED and not chained:
            found.append(
                CaseProblem(
                    case_id=case_id,
                    problem=f"review_cases says resolved ({row.decision} by {row.reviewer}); the chain "
                    "holds no review record of it",
                )
            )
        elif chained and row.status != CASE_RESOLVED:
            found.append(
                CaseProblem(
                    case_id=case_id,
                    problem=f"the chain's review record {chained[0].record_id} resolved it "
                    f"({chained[0].decision} by {chained[0].reviewer}); review_cases says {row.status}",
                )
            )
        elif chained:
            problem = _disagreement(row, chained[0])
            if problem is not None:
                found.append(CaseProblem(case_id=case_id, problem=problem))
    for case_id in sorted(set(reviews) - seen):
        review = reviews[case_id][0]
        found.append(
            CaseProblem(
                case_id=case_id,
                problem=f"the chain's review record {review.record_id} resolved it ({review.decision} by "
                f"{review.reviewer}); review_cases has no such case",
            )
        )
    return found


def _orphans(conn: Connection) -> list[CaseProblem]:
    """Cases whose prediction record is not in the store."""
    c, a = review_cases.c, audit_records.c
    stmt = (
        sa.select(c.case_id, c.status)
        .select_from(review_cases.outerjoin(audit_records, a.record_id == c.case_id))
        .where(a.seq.is_(None))
        .order_by(c.case_id)
    )
    return [
        CaseProblem(
            case_id=str(r.case_id), problem=f"{r.status} case of a prediction record that is not in the store"
        )
        for r in conn.execute(stmt)
    ]


def _case_rows(conn: Connection, reviews: Mapping[str, Any], model_name: str | None) -> list[Any]:
    """The resolved case rows, and the rows of the cases the chain resolved (whatever their
    status now), by case id; the latter looked up a few hundred ids per statement."""
    c = review_cases.c
    columns = (c.case_id, c.status, c.decision, c.reviewer, c.review_record_id)
    stmt = sa.select(*columns).where(RESOLVED_CASE)  # the literal term: the partial index of resolved cases
    if model_name is not None:
        stmt = stmt.where(c.model_name == model_name)
    rows = {str(r.case_id): r for r in conn.execute(stmt)}
    others = [case_id for case_id in reviews if case_id not in rows]
    for start in range(0, len(others), _IDS_PER_QUERY):
        part = sa.select(*columns).where(c.case_id.in_(others[start : start + _IDS_PER_QUERY]))
        rows.update({str(r.case_id): r for r in conn.execute(part)})
    return [rows[case_id] for case_id in sorted(rows)]


def check_cases(
    conn: Connection,
    *,
    model_name: str | None = None,
    predictions: bool = False,
    reviews: Sequence[ChainedReview] | None = None,
) -> CaseCheck:
    """Hold the resolved cases (and the cases the chain resolved) against the chain's review
    records (``reviews``: already read by the caller, else read here); with ``predictions``,
    also every case against the prediction records (a join of the whole queue: for ``mlops
    audit verify``)."""
    by_case = _by_case(chained_reviews(conn, model_name=model_name) if reviews is None else reviews)
    rows = _case_rows(conn, by_case, model_name)
    problems = _problems(rows, by_case)
    checked = len(rows)
    if predictions:
        problems += _orphans(conn)
        checked = int(conn.execute(sa.select(sa.func.count()).select_from(review_cases)).scalar_one())
    problems.sort(key=lambda p: p.case_id)
    return CaseCheck(
        cases_checked=checked,
        reviews_checked=sum(map(len, by_case.values())),
        problems_total=len(problems),
        problems=problems[:REPORTED_PROBLEMS],
    )
