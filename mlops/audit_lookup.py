"""From an application id to its audit records: ``mlops audit find ID``.

"Why was this applicant declined?" starts with the application's own id, which the store
never holds: records carry its keyed hash (:func:`~mlops.audit_hashing.entity_key`). This
module keys the id with the same secret and lists every record of it (each prediction of
every role and batch, and the review records), each prediction with the state of its review
case, so the question ends at ``mlops reproduce RECORD_ID``.

``entity_key`` has no index: one would cost every bulk append a random B-tree insert per
record (2M per million scored rows). The lookup reads the table once (0.04 s for 200k
records on SQLite and PostgreSQL, 0.49 s for 2M on SQLite: ``benchmarks/results``); ``model_name``
narrows what is returned, not what is read. A large PostgreSQL store searched often can add
the index (README).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.engine import Engine

from mlops.audit_encode import DECIDING_ROLES, RECORD_PREDICTION
from mlops.audit_hashing import as_utc, entity_key
from mlops.audit_schema import CASE_OPEN, CASE_RESOLVED, CASE_SUPERSEDED, audit_records, review_cases
from mlops.errors import InputError

#: What a deciding prediction amounts to today, in :attr:`EntityRecord.outcome`.
OUTCOME_DECIDED: Final = "decided by the model"
OUTCOME_PENDING: Final = "waiting for review"
OUTCOME_REVIEWED: Final = "decided by a reviewer"
OUTCOME_SUPERSEDED: Final = "superseded by a later prediction"
OUTCOME_SHADOW: Final = "shadow: decided nothing"


class EntityRecord(BaseModel):
    """One audit record of the application, with its review case if it opened one."""

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
    decision: str | None = Field(description="the model's decision (a review record: the reviewer's)")
    review_routed: bool | None
    review_reason: str | None
    input_snapshot: str | None
    input_row: int | None
    case_status: str | None = None
    case_superseded_by: str | None = None
    reviewer: str | None = None
    reviewed_decision: str | None = None
    outcome: str | None = Field(None, description="for a prediction: what it amounts to today")


class EntityHistory(BaseModel):
    """Every record of one application, oldest first, and its current decision per model."""

    entity_key: str
    model_name: str | None = Field(description="the --model filter, if any")
    records: list[EntityRecord]
    current: dict[str, EntityRecord] = Field(
        description="per model: the latest deciding (champion or canary) prediction"
    )

    @property
    def predictions(self) -> list[EntityRecord]:
        return [r for r in self.records if r.record_type == RECORD_PREDICTION]


def _outcome(role: str | None, routed: bool | None, status: str | None) -> str:
    if role not in DECIDING_ROLES:
        return OUTCOME_SHADOW
    if not routed:
        return OUTCOME_DECIDED
    return {
        CASE_OPEN: OUTCOME_PENDING,
        CASE_RESOLVED: OUTCOME_REVIEWED,
        CASE_SUPERSEDED: OUTCOME_SUPERSEDED,
    }.get(status or "", OUTCOME_PENDING)


def find_entity(
    engine: Engine,
    entity_id: str,
    hash_key: SecretStr | str | bytes,
    *,
    model_name: str | None = None,
) -> EntityHistory:
    """Every audit record of the application ``entity_id`` (keyed with ``hash_key``)."""
    text = entity_id.strip()
    if not text:
        raise InputError("give the application id to look up", hint="mlops audit find APPLICATION_ID")
    key = entity_key(text, hash_key)
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
            c.status.label("case_status"),
            c.superseded_by.label("case_superseded_by"),
            c.reviewer,
            c.decision.label("reviewed_decision"),
        )
        .select_from(audit_records.outerjoin(review_cases, c.case_id == a.record_id))
        .where(a.entity_key == key)
        .order_by(a.seq)
    )
    if model_name is not None:
        stmt = stmt.where(a.model_name == model_name)
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    records = []
    for row in rows:
        values = dict(row)
        values["record_id"] = str(values["record_id"])
        values["case_superseded_by"] = None if row.case_superseded_by is None else str(row.case_superseded_by)
        values["created_at"] = as_utc(row.created_at)
        values["input_row"] = None if row.input_row is None else int(row.input_row)
        if row.record_type == RECORD_PREDICTION:
            values["outcome"] = _outcome(row.role, row.review_routed, row.case_status)
        records.append(EntityRecord.model_validate(values))
    current = {
        str(r.model_name): r
        for r in records
        if r.record_type == RECORD_PREDICTION and r.role in DECIDING_ROLES and r.model_name is not None
    }  # ordered by seq: the latest deciding prediction of each model wins
    return EntityHistory(entity_key=key, model_name=model_name, records=records, current=current)


def _line(record: EntityRecord) -> str:
    when = f"{record.created_at:%Y-%m-%d %H:%M:%S}"
    if record.record_type != RECORD_PREDICTION:
        who = f" by {record.reviewer}" if record.reviewer else ""
        return f"  seq {record.seq}  {when}  {record.record_type}{who}: {record.decision or '-'}  ({record.record_id})"
    score = "n/a" if record.score is None else f"{record.score:.4f}"
    routed = f", routed: {record.review_reason}" if record.review_routed else ""
    review = ""
    if record.case_status == CASE_RESOLVED:
        review = f" -> reviewer {record.reviewer}: {record.reviewed_decision}"
    elif record.case_status == CASE_SUPERSEDED:
        review = f" -> case superseded by {record.case_superseded_by}"
    return (
        f"  seq {record.seq}  {when}  {record.model_name} v{record.model_version} {record.role}  "
        f"score {score}  {record.decision}{routed}{review}  [{record.outcome}]\n"
        f"      prediction id {record.record_id}  batch {record.batch_id}  "
        f"input {(record.input_snapshot or '-')[:12]}#{record.input_row}"
    )


def history_text(entity_id: str, history: EntityHistory) -> str:
    """What ``mlops audit find`` prints."""
    scope = f" of {history.model_name}" if history.model_name else ""
    if not history.records:
        return (
            f"no audit records{scope} for application {entity_id!r} (entity key {history.entity_key[:16]}...).\n"
            "  Ids are looked up by their keyed hash: the same MLOPS_ENTITY_HASH_KEY as at scoring "
            "time is needed, and the id exactly as in the batch."
        )
    lines = [
        f"application {entity_id!r} (entity key {history.entity_key[:16]}...): "
        f"{len(history.predictions)} prediction(s), {len(history.records) - len(history.predictions)} "
        f"other record(s){scope}, oldest first"
    ]
    lines += [_line(r) for r in history.records]
    for model, record in history.current.items():
        if record.outcome == OUTCOME_PENDING:
            now = f"none yet, waiting for review (the model proposed {record.decision})"
        elif record.case_status == CASE_RESOLVED:
            now = f"{record.reviewed_decision} ({record.outcome}, {record.reviewer})"
        else:
            now = f"{record.decision} ({record.outcome})"
        lines.append(
            f"current decision of {model}: {now}; v{record.model_version} {record.role}, "
            f"{record.created_at:%Y-%m-%d %H:%M:%S}; recompute it: mlops reproduce {record.record_id}"
        )
    return "\n".join(lines)
