"""The review queue: predictions waiting for a person, and what their decisions teach.

A case's id is the record_id of the prediction it reviews. Cases are opened by
:func:`~mlops.audit_write.append_predictions` (routed rows of a deciding role) or by
:func:`open_review_case` (routed by hand, appending a ``review_opened`` record). Resolving a
case updates it and appends a ``review`` record to the audit chain in the same transaction.

Labels for training (:func:`resolved_cases`): the reviewer's decision is read as a judgement
of default risk: ``decline`` -> label 1 (the person judged the applicant likely to default),
``approve`` -> label 0. These are human labels, not observed outcomes; keep them apart from
outcome labels where a training spec asks for it (the ``label_source`` column says "review").
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from mlops.audit_cases import chained_reviews, check_cases, review_of
from mlops.audit_hashing import as_utc
from mlops.audit_schema import (
    CASE_OPEN,
    CASE_RESOLVED,
    CASE_SUPERSEDED,
    OPEN_CASE,
    audit_chain_head,
    audit_records,
    is_event,
    review_cases,
)
from mlops.audit_write import (
    DECIDING_ROLES,
    RECORD_PREDICTION,
    RECORD_REVIEW,
    RECORD_REVIEW_OPENED,
    append_events_locked,
    chain_transaction,
    event_fields,
    lock_head,
)
from mlops.errors import ChainBroken, InputError

ReviewDecision = Literal["approve", "decline"]
DECISIONS: Final = ("approve", "decline")
#: What to do about an id that is no review case: a prediction that was not routed has none.
NOT_A_CASE_HINT: Final = (
    "mlops review list shows the open cases; a prediction that was not routed to review has no "
    "case until someone routes it: mlops review open PREDICTION_ID --by WHO --reason TEXT"
)
LABEL_BY_DECISION: Final = {"decline": 1, "approve": 0}


class ReviewError(InputError):
    """A review action cannot be done as asked."""


class ReviewCaseNotFound(ReviewError):
    """No review case has this id."""


class PredictionNotFound(ReviewCaseNotFound):
    """No prediction record has this id (for ``mlops review open`` and ``mlops reproduce``)."""


class ReviewCaseAlreadyResolved(ReviewError):
    """The case was resolved before; a resolution is final (the CLI exits 1: refused)."""

    exit_code = 1


class ReviewCaseSuperseded(ReviewError):
    """A later prediction decided the same entity (opening a case of its own, which is the one
    reviewed, or deciding without review); the CLI exits 1: refused."""

    exit_code = 1


class ReviewCaseRefused(ReviewError):
    """A case cannot be opened on this prediction as things stand (the CLI exits 1: refused)."""

    exit_code = 1


class InvalidReviewDecision(ReviewError):
    """The decision is not approve/decline, or reviewer/reason is empty."""


class ReviewerNotAllowed(ReviewError):
    """The reviewer is not one of ``MLOPS_REVIEWERS`` (the CLI exits 1: refused)."""

    exit_code = 1


class ReviewCase(BaseModel):
    """One case of the review queue."""

    case_id: str
    status: Literal["open", "resolved", "superseded"]
    routing_reason: str
    created_at: datetime
    batch_id: str | None
    model_name: str
    model_version: str
    role: str | None
    score: float | None
    reviewer: str | None = None
    decision: ReviewDecision | None = None
    resolution_reason: str | None = None
    resolved_at: datetime | None = None
    review_record_id: str | None = None
    entity_key: str | None = None
    superseded_by: str | None = None


def _check_case_id(case_id: str) -> str:
    """The id in the stored form (lowercase, hyphenated); ReviewCaseNotFound if not a UUID."""
    try:
        return str(uuid.UUID(case_id))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ReviewCaseNotFound(
            f"no review case {case_id!r} (not a record id)", hint="mlops review list"
        ) from exc


def _case(row: Any) -> ReviewCase:
    data = dict(row._mapping)
    data["created_at"] = as_utc(data["created_at"])
    if data["resolved_at"] is not None:
        data["resolved_at"] = as_utc(data["resolved_at"])
    return ReviewCase(**data)


FIND_PREDICTION_HINT: Final = "mlops audit find APPLICATION_ID lists an application's prediction ids"


def open_review_case(engine: Engine, case_id: str, reason: str, *, opened_by: str) -> ReviewCase:
    """Route the prediction ``case_id`` to review after the fact (a complaint, a second look).

    The case opens now (its ``created_at``), and a ``review_opened`` record (who, why, which
    case) is appended to the audit chain in the same transaction, so the trail shows who sent
    a decision to a person and when. Refused (:class:`ReviewCaseRefused`, nothing written) on
    a shadow prediction (it decided nothing), on a prediction a later one decided again, on a
    prediction with a case already and while the application has an open case of the model;
    :class:`PredictionNotFound` for an id that is no prediction.

    The checks run first without the chain lock (finding a later decision reads the records
    after the prediction, which in a large store takes seconds), then again under it for what
    was appended meanwhile only, so scoring appends never wait behind that search.
    """
    if not visible(opened_by):
        raise InvalidReviewDecision("who routes the case to review is required", hint="--by WHO")
    if not visible(reason):
        raise InvalidReviewDecision("a review case needs a routing reason", hint="--reason TEXT")
    with engine.connect() as conn:
        head = int(conn.execute(sa.select(audit_chain_head.c.seq)).scalar_one())
        record = prediction_record(conn, case_id)
        case_id = str(record.record_id)
        _check_routable(conn, record, after=record.seq)
    with chain_transaction(engine) as conn:
        lock_head(conn)  # the writers that open and supersede cases hold it too
        _check_routable(conn, record, after=max(head, record.seq))
        payload = {"case_id": case_id, "opened_by": opened_by, "reason": reason}
        fields = event_fields(
            RECORD_REVIEW_OPENED,
            payload,
            {
                "batch_id": record.batch_id,
                "entity_key": record.entity_key,
                "model_name": record.model_name,
                "model_version": record.model_version,
            },
        )
        created_at, _written = append_events_locked(conn, [fields])
        values = {
            "case_id": case_id,
            "status": CASE_OPEN,
            "routing_reason": reason,
            "created_at": created_at,
            "batch_id": record.batch_id,
            "model_name": record.model_name,
            "model_version": record.model_version,
            "role": record.role,
            "score": record.score,
            "entity_key": record.entity_key,
        }
        conn.execute(review_cases.insert().values(**values))
    return ReviewCase(**values)


def prediction_record(conn: Any, record_id: str) -> Any:
    """The prediction record ``record_id`` (:class:`ReviewCaseNotFound`, an input error, if the
    id is no UUID, no record or a record of another type); each refusal points to ``mlops audit
    find``. ``mlops review open`` and ``mlops reproduce`` take their ids through this."""
    try:
        record_id = str(uuid.UUID(record_id))  # the stored form: lowercase, hyphenated
    except (TypeError, ValueError, AttributeError) as exc:
        raise PredictionNotFound(
            f"no prediction {record_id!r} (not a record id)", hint=FIND_PREDICTION_HINT
        ) from exc
    record = conn.execute(sa.select(audit_records).where(audit_records.c.record_id == record_id)).first()
    if record is None:
        raise PredictionNotFound(f"no prediction record with id {record_id!r}", hint=FIND_PREDICTION_HINT)
    if record.record_type != RECORD_PREDICTION:
        raise PredictionNotFound(
            f"record {record_id!r} is a {record.record_type} record, not a prediction",
            hint=FIND_PREDICTION_HINT,
        )
    return record


def _check_routable(conn: Any, record: Any, *, after: int) -> None:
    """Raise :class:`ReviewCaseRefused` unless a case may be opened on the prediction ``record``
    (deciding predictions of its application are looked for after seq ``after`` only)."""
    case_id = str(record.record_id)
    if record.role not in DECIDING_ROLES:
        decider = None if record.entity_key is None else _deciding_prediction(conn, record)
        raise ReviewCaseRefused(
            f"prediction {case_id!r} is a {record.role} prediction: it decided nothing, so there "
            "is no decision to review",
            hint=(
                f"open the case on the deciding prediction {decider}"
                if decider is not None
                else "open the case on the application's champion or canary prediction (mlops audit find)"
            ),
        )
    later = None if record.entity_key is None else _deciding_prediction(conn, record, after=after)
    if later is not None:
        raise ReviewCaseRefused(
            f"prediction {case_id!r} is not its application's latest decision: prediction "
            f"{later} decided it later, and a case on the earlier one would be superseded",
            hint=f"open the case on prediction {later}",
        )
    row = conn.execute(sa.select(review_cases).where(review_cases.c.case_id == case_id)).first()
    if row is not None:
        existing = _case(row)
        if existing.status == CASE_OPEN:
            raise ReviewCaseRefused(
                f"prediction {case_id!r} is in review already (case open since {existing.created_at:%Y-%m-%d %H:%M} UTC)",
                hint=f"mlops review resolve {case_id} --reviewer WHO --decision approve|decline --reason TEXT",
            )
        if existing.status == CASE_RESOLVED:
            raise ReviewCaseRefused(
                f"prediction {case_id!r} was reviewed already: {existing.decision} by {existing.reviewer} "
                f"at {existing.resolved_at:%Y-%m-%d %H:%M} UTC; a resolution is final and a prediction "
                "is reviewed once",
                hint="mlops audit find APPLICATION_ID shows the review",
            )
        raise ReviewCaseRefused(  # superseded: a later prediction decided again (caught above)
            f"prediction {case_id!r} had a review case, superseded by {existing.superseded_by}",
            hint=f"open the case on prediction {existing.superseded_by}",
        )
    if record.entity_key is None:
        return
    already = conn.execute(
        sa.select(review_cases.c.case_id).where(
            OPEN_CASE,
            review_cases.c.model_name == record.model_name,
            review_cases.c.entity_key == record.entity_key,
        )
    ).first()
    if already is not None:
        raise ReviewCaseRefused(
            f"the application of prediction {case_id!r} has an open review case already "
            f"({already.case_id}); one case per application is reviewed",
            hint=f"resolve case {already.case_id}",
        )


_BATCHES_PER_QUERY: Final = 500


def routed_by_hand(engine: Engine, case: ReviewCase) -> tuple[str, str] | None:
    """(who, why) of the ``review_opened`` record that opened ``case``; None if the batch that
    scored its prediction routed it."""
    return routed_by_hand_all(engine, [case]).get(case.case_id)


def routed_by_hand_all(engine: Engine, cases: Sequence[ReviewCase]) -> dict[str, tuple[str, str]]:
    """case id -> (who, why) for those of ``cases`` opened by hand: the ``review_opened``
    records of their batches (through the index of non-prediction records, by batch)."""
    wanted = {case.case_id for case in cases}
    batches = sorted({case.batch_id for case in cases if case.batch_id is not None})
    a = audit_records.c
    found: dict[str, tuple[str, str]] = {}
    with engine.connect() as conn:
        for start in range(0, len(batches), _BATCHES_PER_QUERY):
            part = batches[start : start + _BATCHES_PER_QUERY]
            stmt = sa.select(a.payload).where(is_event(RECORD_REVIEW_OPENED), a.batch_id.in_(part))
            for (payload,) in conn.execute(stmt):
                if payload and payload.get("case_id") in wanted:
                    found[payload["case_id"]] = (str(payload["opened_by"]), str(payload["reason"]))
    return found


def _deciding_prediction(conn: Any, record: Any, *, after: int | None = None) -> str | None:
    """The id of the latest deciding prediction of ``record``'s application and model (with
    ``after``: only one after that seq, a range of the primary key). Reads the records without
    an entity index: a by-hand action, not a hot path."""
    a = audit_records.c
    stmt = sa.select(a.record_id).where(
        a.record_type == RECORD_PREDICTION,
        a.entity_key == record.entity_key,
        a.model_name == record.model_name,
        a.role.in_(DECIDING_ROLES),
    )
    if after is not None:
        stmt = stmt.where(a.seq > after)
    found = conn.execute(stmt.order_by(a.seq.desc()).limit(1)).scalar()
    return None if found is None else str(found)


def latest_case(conn: Any, case: ReviewCase) -> ReviewCase:
    """The newest case of ``case``'s supersession chain (``case`` itself unless superseded)."""
    seen = {case.case_id}
    while case.status == CASE_SUPERSEDED and case.superseded_by is not None:
        row = conn.execute(
            sa.select(review_cases).where(review_cases.c.case_id == case.superseded_by)
        ).first()
        if row is None or row.case_id in seen:  # superseded by a prediction that opened no case
            break
        case = _case(row)
        seen.add(case.case_id)
    return case


def check_open(conn: Any, case: ReviewCase) -> None:
    """Raise :class:`ReviewCaseAlreadyResolved` or :class:`ReviewCaseSuperseded` (naming the
    newest case of its chain, or the later prediction that decided without review) unless
    ``case`` is open."""
    if case.status == CASE_SUPERSEDED:
        newest = latest_case(conn, case)
        if newest.status == CASE_SUPERSEDED:  # the chain ends at a prediction that opened no case
            raise ReviewCaseSuperseded(
                f"review case {case.case_id!r} was superseded: a later prediction for the same "
                f"application ({newest.superseded_by}) decided it without review",
                hint=f"nothing to resolve; the later decision stands (mlops reproduce {newest.superseded_by})",
            )
        now = (
            f"case {newest.case_id} is {newest.status}"
            if newest.case_id != case.superseded_by
            else f"that case is {newest.status}"
        )
        raise ReviewCaseSuperseded(
            f"review case {case.case_id!r} was superseded by case {case.superseded_by!r}: a later "
            f"prediction for the same application was routed to review ({now})",
            hint=(
                f"resolve case {newest.case_id} instead"
                if newest.status == CASE_OPEN
                else "nothing to resolve: mlops review list shows the open cases"
            ),
        )
    if case.status != CASE_OPEN:
        raise ReviewCaseAlreadyResolved(
            f"review case {case.case_id!r} was resolved already ({case.decision} by "
            f"{case.reviewer} at {case.resolved_at})",
            hint="a resolution is final; mlops review list shows the open cases",
        )


def get_case(engine: Engine, case_id: str) -> ReviewCase:
    """The case with this id (:class:`ReviewCaseNotFound` if none)."""
    case_id = _check_case_id(case_id)
    with engine.connect() as conn:
        row = conn.execute(sa.select(review_cases).where(review_cases.c.case_id == case_id)).first()
    if row is None:
        raise ReviewCaseNotFound(f"no review case {case_id!r}", hint=NOT_A_CASE_HINT)
    return _case(row)


def list_open_cases(
    engine: Engine, model_name: str | None = None, *, limit: int | None = None
) -> list[ReviewCase]:
    """Open cases, oldest first (optionally of one model)."""
    stmt = sa.select(review_cases).where(OPEN_CASE)
    if model_name is not None:
        stmt = stmt.where(review_cases.c.model_name == model_name)
    stmt = stmt.order_by(review_cases.c.created_at, review_cases.c.case_id).limit(limit)
    with engine.connect() as conn:
        return [_case(row) for row in conn.execute(stmt)]


def count_open_cases(engine: Engine, model_name: str | None = None) -> int:
    """How many cases are open (optionally of one model)."""
    stmt = sa.select(sa.func.count()).select_from(review_cases).where(OPEN_CASE)
    if model_name is not None:
        stmt = stmt.where(review_cases.c.model_name == model_name)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


_UNSEEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols that print as blank (Hangul fillers, the braille blank, a grapheme joiner).
_BLANK_GLYPHS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")


def visible(text: str) -> bool:
    """Whether ``text`` has a character a person can see: not only spaces, format characters
    (a zero-width space), lone combining marks or letters that print as blank (a Hangul
    filler). A reason of one zero-width space reads as empty, and is refused as empty."""
    return any(unicodedata.category(ch) not in _UNSEEN_CATEGORIES and ch not in _BLANK_GLYPHS for ch in text)


def _check_resolution(reviewer: str, decision: str, reason: str, allowed: Collection[str]) -> None:
    if decision not in DECISIONS:
        raise InvalidReviewDecision(
            f"decision must be one of {list(DECISIONS)}, got {decision!r}",
            hint="--decision approve|decline",
        )
    if not visible(reviewer):
        raise InvalidReviewDecision("the reviewer's identity is required", hint="--reviewer WHO")
    if not visible(reason):
        raise InvalidReviewDecision("a reason is required", hint="--reason TEXT")
    if allowed and reviewer.strip() not in allowed:
        raise ReviewerNotAllowed(
            f"{reviewer.strip()!r} is not an allowed reviewer (MLOPS_REVIEWERS)",
            hint="a person named in MLOPS_REVIEWERS resolves the case; nothing was written",
        )


def resolve_case(
    engine: Engine,
    case_id: str,
    reviewer: str,
    decision: str,
    reason: str,
    *,
    allowed_reviewers: Collection[str] = (),
) -> ReviewCase:
    """Resolve an open case and append a ``review`` audit record, in one transaction.

    ``allowed_reviewers`` (``Settings.reviewers``): when given, only they may resolve. Raises
    :class:`InvalidReviewDecision`, :class:`ReviewerNotAllowed`, :class:`ReviewCaseNotFound`
    or :class:`ReviewCaseAlreadyResolved`; nothing is written then.
    """
    _check_resolution(reviewer, decision, reason, allowed_reviewers)
    reviewer = reviewer.strip()
    case_id = _check_case_id(case_id)
    with chain_transaction(engine) as conn:
        lock_head(conn)  # first: a batch superseding this case meanwhile waits, or went first
        row = conn.execute(sa.select(review_cases).where(review_cases.c.case_id == case_id)).first()
        if row is None:
            raise ReviewCaseNotFound(f"no review case {case_id!r}", hint=NOT_A_CASE_HINT)
        check_open(conn, _case(row))
        prediction = conn.execute(
            sa.select(audit_records.c.entity_key, audit_records.c.batch_id).where(
                audit_records.c.record_id == case_id
            )
        ).first()
        if prediction is None:
            raise ChainBroken(
                f"review case {case_id!r} reviews a prediction record that is not in the audit store",
                hint="run mlops audit verify (records were deleted); nothing was resolved",
            )
        done_before = review_of(conn, case_id, prediction.batch_id)  # the chained batch, not the row's
        if done_before is not None:  # the row was re-opened outside the product
            raise ReviewCaseAlreadyResolved(
                f"review case {case_id!r} was resolved already: the audit chain holds its review "
                f"({done_before.decision} by {done_before.reviewer}, record {done_before.record_id}), "
                "though review_cases says open",
                hint="a resolution is final; run mlops audit verify (review_cases was changed outside the product)",
            )
        key = prediction.entity_key
        payload = {
            "case_id": case_id,
            "reviewer": reviewer,
            "decision": decision,
            "reason": reason,
            "routing_reason": row.routing_reason,
        }
        fields = event_fields(
            RECORD_REVIEW,
            payload,
            {
                "batch_id": row.batch_id,
                "entity_key": key,
                "model_name": row.model_name,
                "model_version": row.model_version,
                "decision": decision,
            },
        )
        created_at, ((_seq, record_id, _hash),) = append_events_locked(conn, [fields])
        done = conn.execute(
            review_cases.update()
            .where(review_cases.c.case_id == case_id, review_cases.c.status == CASE_OPEN)
            .values(
                status=CASE_RESOLVED,
                reviewer=reviewer,
                decision=decision,
                resolution_reason=reason,
                resolved_at=created_at,
                review_record_id=record_id,
            )
        )
        if done.rowcount != 1:
            raise ReviewCaseAlreadyResolved(f"review case {case_id!r} was resolved meanwhile")
    resolved = _case(row).model_copy(
        update={
            "status": CASE_RESOLVED,
            "reviewer": reviewer,
            "decision": decision,
            "resolution_reason": reason,
            "resolved_at": created_at,
            "review_record_id": record_id,
        }
    )
    return resolved


RESOLVED_COLUMNS: Final = (
    "case_id",
    "model_name",
    "model_version",
    "input_snapshot",
    "input_row",
    "input_hash",
    "decision",
    "label",
    "label_source",
    "reviewer",
    "resolved_at",
    "review_record_id",
    "entity_key",  # the prediction's keyed application id (a labelled row must be the one scored)
)


def resolved_cases(engine: Engine, model_name: str | None = None) -> pd.DataFrame:
    """Resolved cases with what training needs: the input reference and the implied label.

    Read from the chain, not from the mutable case rows: the decision, reviewer and time come
    from each case's ``review`` record, ``model_name``, ``model_version``, ``input_snapshot``
    and ``input_row`` from the prediction's record; ``label`` is 1 for decline, 0 for approve
    (see the module docstring). Raises :class:`ChainBroken` when ``review_cases`` disagrees
    with the chain (:func:`mlops.audit_cases.check_cases`: an edited, re-opened or made-up
    resolution is not learned from) or a resolved case's prediction record is missing.
    """
    with engine.connect() as conn:
        reviews = chained_reviews(conn, model_name=model_name)
        check = check_cases(conn, model_name=model_name, reviews=reviews)
        if not check.ok:
            raise ChainBroken(
                f"{check.summary()}; review labels are not used while they disagree",
                hint="run mlops audit verify; review_cases was changed outside the product: restore it "
                "from a backup (the chain's review records are what was decided)",
            )
        reviews = sorted(reviews, key=lambda r: (r.created_at, r.case_id))
        preds = prediction_rows(conn, [r.case_id for r in reviews])
    orphans = [r.case_id for r in reviews if r.case_id not in preds]
    if orphans:
        raise ChainBroken(
            f"{len(orphans)} resolved review case(s) have no prediction record, e.g. {orphans[0]}",
            hint="run mlops audit verify",
        )
    refs = [preds[r.case_id] for r in reviews]
    frame = pd.DataFrame(
        {
            "case_id": [r.case_id for r in reviews],
            "model_name": [p.model_name for p in refs],
            "model_version": [p.model_version for p in refs],
            "input_snapshot": [p.input_snapshot for p in refs],
            "input_row": pd.array([p.input_row for p in refs], dtype="int64"),
            "input_hash": [p.input_hash for p in refs],
            "decision": [r.decision for r in reviews],
            "label": pd.array([LABEL_BY_DECISION[r.decision] for r in reviews], dtype="int64"),
            "label_source": ["review"] * len(reviews),
            "reviewer": [r.reviewer for r in reviews],
            "resolved_at": pd.to_datetime([r.created_at for r in reviews], utc=True),
            "review_record_id": [r.record_id for r in reviews],
            "entity_key": [p.entity_key for p in refs],
        },
        columns=list(RESOLVED_COLUMNS),
    )
    return frame


PREDICTION_REFERENCE: Final = (
    audit_records.c.record_id,
    audit_records.c.model_name,
    audit_records.c.model_version,
    audit_records.c.entity_key,
    audit_records.c.input_snapshot,
    audit_records.c.input_row,
    audit_records.c.input_hash,
    audit_records.c.decision,
)


def prediction_rows(conn: Any, record_ids: Sequence[str]) -> dict[str, Any]:
    """record id -> the :data:`PREDICTION_REFERENCE` columns of those prediction records that are
    in the store (the model, the keyed entity, where the scored row lives and the model's
    decision), a few hundred ids per statement."""
    a = audit_records.c
    ids = list(dict.fromkeys(record_ids))
    found: dict[str, Any] = {}
    for start in range(0, len(ids), _BATCHES_PER_QUERY):
        stmt = sa.select(*PREDICTION_REFERENCE).where(
            a.record_type == RECORD_PREDICTION, a.record_id.in_(ids[start : start + _BATCHES_PER_QUERY])
        )
        found.update({str(row.record_id): row for row in conn.execute(stmt)})
    return found
