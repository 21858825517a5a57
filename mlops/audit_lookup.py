"""From an application id to its audit records: ``mlops audit find ID``.

"Why was this applicant declined?" starts with the application's own id, which the store
never holds: records carry its keyed hash (:func:`~mlops.audit_hashing.entity_key`). This
module keys the id with the same secret and lists every record of it (each prediction of
every role and batch, and the review records), each prediction with the state of its review
case, and per model the current decision, so the question ends at ``mlops reproduce RECORD_ID``.

The current decision of a model is the latest decision the trail holds for the application: a
deciding (champion or canary) prediction the model decided, or a reviewer's resolution of one
of its cases, whichever came later; a routed prediction after them leaves it pending until its
case is resolved. A case opened by hand on a decided prediction (``mlops review open``) leaves
the model's decision standing, "under review", until the reviewer decides. A later deciding prediction supersedes the application's open case
(:func:`mlops.audit_write.supersede_open_cases`); a case still open behind a later decision
(predictions appended without cases) is listed beside the current decision.

``entity_key`` has no index: one would cost every bulk append a random B-tree insert per
record (2M per million scored rows). The lookup reads the table once (0.04 s for 200k
records on SQLite and PostgreSQL, 0.33-0.49 s for 2M on SQLite: ``benchmarks/results``); ``model_name``
narrows what is returned, not what is read. A large PostgreSQL store searched often can add
the index (README).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.engine import Engine

from mlops.audit_encode import DECIDING_ROLES, RECORD_PREDICTION
from mlops.audit_hashing import as_utc, entity_key
from mlops.audit_schema import (
    CASE_OPEN,
    CASE_RESOLVED,
    CASE_SUPERSEDED,
    NOT_PREDICTION,
    audit_records,
    review_cases,
)
from mlops.audit_write import RECORD_REVIEW, RECORD_REVIEW_OPENED
from mlops.contracts import Contract
from mlops.errors import InputError

#: What a prediction amounts to today, in :attr:`EntityRecord.outcome`.
OUTCOME_DECIDED: Final = "decided by the model"
OUTCOME_UNDER_REVIEW: Final = "decided by the model, under review"  # a case opened by hand
OUTCOME_PENDING: Final = "waiting for review"
OUTCOME_REVIEWED: Final = "decided by a reviewer"
OUTCOME_SUPERSEDED: Final = "superseded by a later prediction"
OUTCOME_SHADOW: Final = "shadow: decided nothing"
_CASE_OUTCOMES: Final = {
    CASE_OPEN: OUTCOME_PENDING,
    CASE_RESOLVED: OUTCOME_REVIEWED,
    CASE_SUPERSEDED: OUTCOME_SUPERSEDED,
}


class EntityRecord(BaseModel):
    """One audit record of the application; a prediction with its review case if it has one."""

    seq: int
    record_id: str = Field(description="for a prediction: the id `mlops reproduce` takes")
    record_type: str
    created_at: datetime
    batch_id: str | None
    model_name: str | None
    model_version: str | None
    model_alias: str | None
    role: str | None
    score: float | None
    decision: str | None = Field(description="a prediction: the model's; a review record: the reviewer's")
    review_routed: bool | None
    review_reason: str | None = Field(
        description="a prediction: why it was routed to review; a review_opened record: why it was routed by hand"
    )
    input_snapshot: str | None
    input_row: int | None
    case_status: str | None = Field(None, description="a prediction's review case: open/resolved/superseded")
    case_superseded_by: str | None = None
    case_id: str | None = Field(
        None,
        description="a prediction: its review case (= its id), if it has one; a review / review_opened "
        "record: the case (= prediction id) it resolved / opened",
    )
    reviewer: str | None = Field(None, description="who resolved the prediction's case / the review")
    opened_by: str | None = Field(None, description="a review_opened record: who routed the case by hand")
    reviewed_decision: str | None = None
    outcome: str | None = Field(None, description="a prediction: what it amounts to today")


class CurrentDecision(BaseModel):
    """A model's current decision on the application (see the module docstring)."""

    model_name: str
    decision: str | None = Field(
        description="approve/decline; None while the latest routed prediction's case waits for review"
    )
    decided_by: Literal["model", "reviewer"] | None
    reviewer: str | None = None
    prediction: EntityRecord = Field(description="the deciding prediction (reviewed, if a reviewer decided)")
    review_record_id: str | None = None
    open_cases: list[str] = Field(
        default_factory=list, description="this model's cases of the application still open in the queue"
    )


class EntityHistory(BaseModel):
    """Every record of one application, oldest first, and its current decision per model."""

    entity_key: str
    model_name: str | None = Field(description="the --model filter, if any")
    records: list[EntityRecord]
    current: dict[str, CurrentDecision]

    @property
    def predictions(self) -> list[EntityRecord]:
        return [r for r in self.records if r.record_type == RECORD_PREDICTION]


def _outcome(role: str | None, routed: bool | None, status: str | None) -> str:
    """A resolved or superseded case decides; an open case on an unrouted prediction (opened by
    hand: a complaint, a second look) leaves the model's decision standing until the reviewer
    decides; a routed prediction waits for its case."""
    if role not in DECIDING_ROLES:
        return OUTCOME_SHADOW
    if status == CASE_OPEN and not routed:
        return OUTCOME_UNDER_REVIEW
    if status is not None:
        return _CASE_OUTCOMES.get(status, OUTCOME_PENDING)
    return OUTCOME_PENDING if routed else OUTCOME_DECIDED


def entity_id_text(entity_id: str | int) -> str:
    """The id to key; a blank id is refused (an id with spaces around it is keyed as given)."""
    if isinstance(entity_id, str) and not entity_id.strip():
        raise InputError("give the application id to look up", hint="mlops audit find APPLICATION_ID")
    return str(entity_id)


def application_id(text: str, contract: Contract | None) -> str | int:
    """The id as scoring keyed it: under a contract with integer ids, its value ("007" is 7)."""
    entity_id_text(text)  # a blank id is refused
    if contract is None or contract.column(contract.id_column).dtype != "int":
        return text
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(
            f"{contract.name} ids are integers, got {text!r}", hint="give the application id as digits"
        ) from None


def unscoped_ids(text: str) -> list[str | int]:
    """The forms an id given without a model may have been keyed in: as given, and, when it
    reads as an integer, its value (a model whose contract declares int ids keyed ``7`` for
    ``007``); each model's contract decides which one its records used."""
    entity_id_text(text)  # a blank id is refused
    forms: list[str | int] = [text]
    if re.fullmatch(r"\s*[+-]?\d+\s*", text):
        forms.append(int(text))
    return forms


def _stmt(keys: list[str], model_name: str | None) -> sa.Select[Any]:
    a, c = audit_records.c, review_cases.c
    stmt = (
        sa.select(
            a.seq,
            a.record_id,
            a.record_type,
            a.created_at,
            a.batch_id,
            a.model_name,
            a.model_version,
            a.model_alias,
            a.role,
            a.score,
            a.decision,
            a.review_routed,
            a.review_reason,
            a.input_snapshot,
            a.input_row,
            a.payload,
            c.case_id,
            c.status.label("case_status"),
            c.superseded_by.label("case_superseded_by"),
            c.reviewer,
            c.decision.label("reviewed_decision"),
        )
        .select_from(audit_records.outerjoin(review_cases, c.case_id == a.record_id))
        .where(a.entity_key.in_(keys) if len(keys) > 1 else a.entity_key == keys[0])
        .order_by(a.seq)
    )
    return stmt if model_name is None else stmt.where(a.model_name == model_name)


def _record(row: Any) -> EntityRecord:
    values = dict(row)
    payload = values.pop("payload") or {}
    values["record_id"] = str(row.record_id)
    values["case_id"] = None if row.case_id is None else str(row.case_id)  # a prediction's own case
    values["case_superseded_by"] = None if row.case_superseded_by is None else str(row.case_superseded_by)
    values["created_at"] = as_utc(row.created_at)
    values["input_row"] = None if row.input_row is None else int(row.input_row)
    if row.record_type == RECORD_PREDICTION:
        values["outcome"] = _outcome(row.role, row.review_routed, row.case_status)
    elif row.record_type == RECORD_REVIEW:
        values["case_id"] = payload.get("case_id")
        values["reviewer"] = payload.get("reviewer")
    elif row.record_type == RECORD_REVIEW_OPENED:
        values["case_id"] = payload.get("case_id")
        values["opened_by"] = payload.get("opened_by")
        values["review_reason"] = payload.get("reason")
    return EntityRecord.model_validate(values)


def current_decisions(records: list[EntityRecord]) -> dict[str, CurrentDecision]:
    """Per model, the latest decision in ``records`` (ordered by seq), with the open cases."""
    by_id = {r.record_id: r for r in records}
    current: dict[str, CurrentDecision] = {}
    for r in records:
        if r.model_name is None:
            continue
        if r.record_type == RECORD_PREDICTION and r.role in DECIDING_ROLES:
            decided = r.outcome in (OUTCOME_DECIDED, OUTCOME_UNDER_REVIEW)
            current[r.model_name] = CurrentDecision(
                model_name=r.model_name,
                decision=r.decision if decided else None,
                decided_by="model" if decided else None,
                prediction=r,
            )
        elif r.record_type == RECORD_REVIEW and r.case_id in by_id:
            current[r.model_name] = CurrentDecision(
                model_name=r.model_name,
                decision=r.decision,
                decided_by="reviewer",
                reviewer=r.reviewer,
                prediction=by_id[r.case_id],
                review_record_id=r.record_id,
            )
    for model, now in current.items():
        now.open_cases = [
            r.record_id
            for r in records
            if r.model_name == model and r.record_type == RECORD_PREDICTION and r.case_status == CASE_OPEN
        ]
    return current


def find_entity(
    engine: Engine,
    entity_id: str | int,
    hash_key: SecretStr | str | bytes,
    *,
    model_name: str | None = None,
    also: Sequence[str | int] = (),
) -> EntityHistory:
    """Every audit record of the application ``entity_id`` (keyed with ``hash_key`` as scoring
    keys it: an int id by its decimal digits), oldest first, and the current decisions.
    ``also``: other forms of the same id to look for (:func:`unscoped_ids`)."""
    key = entity_key(entity_id_text(entity_id), hash_key)
    keys = [key, *(k for k in (entity_key(entity_id_text(i), hash_key) for i in also) if k != key)]
    with engine.connect() as conn:
        records = [_record(row) for row in conn.execute(_stmt(keys, model_name)).mappings()]
    return EntityHistory(
        entity_key=key, model_name=model_name, records=records, current=current_decisions(records)
    )


def _line(record: EntityRecord) -> str:
    when = f"{record.created_at:%Y-%m-%d %H:%M:%S}"
    if record.record_type != RECORD_PREDICTION:
        who = record.reviewer or record.opened_by
        by = f" by {who}" if who else ""
        case = f" of case {record.case_id}" if record.case_id else ""
        what = f"routed to review: {record.review_reason}" if record.opened_by else record.decision or "-"
        return (
            f"  seq {record.seq}  {when}  {record.record_type}{case}{by}: {what}  (record {record.record_id})"
        )
    score = "n/a" if record.score is None else f"{record.score:.4f}"
    routed = f", routed: {record.review_reason}" if record.review_routed else ""
    review = ""
    if record.case_status == CASE_RESOLVED:
        review = f" -> reviewer {record.reviewer}: {record.reviewed_decision}"
    elif record.case_status == CASE_SUPERSEDED:
        review = f" -> case superseded by prediction {record.case_superseded_by}"
    elif record.case_status == CASE_OPEN:
        review = " -> case open"
    return (
        f"  seq {record.seq}  {when}  {record.model_name} v{record.model_version} {record.role}  "
        f"score {score}  {record.decision}{routed}{review}  [{record.outcome}]\n"
        f"      prediction id {record.record_id}  batch {record.batch_id}  "
        f"input {(record.input_snapshot or '-')[:12]}#{record.input_row}"
    )


def _current_line(now: CurrentDecision) -> list[str]:
    p = now.prediction
    made = f"v{p.model_version} {p.role}, {p.created_at:%Y-%m-%d %H:%M:%S}"
    if now.decided_by == "reviewer":
        what = f"{now.decision}, by reviewer {now.reviewer} (case {p.record_id}: {made}; the model proposed {p.decision})"
    elif now.decided_by == "model" and p.outcome == OUTCOME_UNDER_REVIEW:
        what = f"{now.decision}, by the model ({made}), under review: case {p.record_id} (routed by hand)"
    elif now.decided_by == "model":
        what = f"{now.decision}, by the model ({made})"
    else:
        what = f"none yet: case {p.record_id} waits for review (the model proposed {p.decision}; {made})"
    lines = [
        f"current decision of {now.model_name}: {what}",
        f"  the model's score and proposal, recomputed: mlops reproduce {p.record_id}",
    ]
    older = [case for case in now.open_cases if case != p.record_id]
    if older:
        lines.append(
            f"  still open in the review queue from earlier predictions: {', '.join(older)} "
            "(a later decision does not close them; resolving one makes it the current decision)"
        )
    return lines


def history_text(entity_id: str | int, history: EntityHistory) -> str:
    """What ``mlops audit find`` prints."""
    scope = f" of {history.model_name}" if history.model_name else ""
    if not history.records:
        return (
            f"no audit records{scope} for application {str(entity_id)!r} (entity key {history.entity_key[:16]}...).\n"
            "  Ids are looked up by their keyed hash: the same MLOPS_ENTITY_HASH_KEY as at scoring "
            "time is needed, and the id as the batch held it (an integer id by its digits)."
        )
    others = len(history.records) - len(history.predictions)
    lines = [
        f"application {str(entity_id)!r} (entity key {history.entity_key[:16]}...): "
        f"{len(history.predictions)} prediction(s), {others} other record(s){scope}, oldest first"
    ]
    lines += [_line(r) for r in history.records]
    for now in history.current.values():
        lines += _current_line(now)
    return "\n".join(lines)


def audited_models(engine: Engine) -> list[str]:
    """The models the audit trail holds records of (read from its non-prediction records, a few
    per batch, through their partial index: every scored batch leaves one)."""
    c = audit_records.c
    stmt = sa.select(c.model_name).where(NOT_PREDICTION, c.model_name.is_not(None)).distinct()
    with engine.connect() as conn:
        return sorted(str(name) for name in conn.scalars(stmt))


def require_known_model(engine: Engine, model_name: str | None, specs: list[str]) -> None:
    """Refuse a ``--model`` that names neither a model spec nor a model the audit trail holds
    records of (a typo would otherwise list nothing and look like "no cases", "not found")."""
    if model_name is None or model_name in specs:
        return
    audited = audited_models(engine)
    if model_name not in audited:
        known = sorted({*specs, *audited})
        raise InputError(
            f"no model named {model_name!r}: no model spec and no audit records of it",
            hint=f"check --model; known models: {', '.join(known) if known else 'none yet'}",
        )
