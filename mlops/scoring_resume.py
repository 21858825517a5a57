"""Finishing a scoring batch that stopped part way, without a second decision for any row.

A batch's predictions are appended chunk by chunk, each chunk in its own transaction, in row
order within a snapshot and snapshot after snapshot (:class:`mlops.scoring.OrderedAuditWriter`
writes one chunk at a time and stops at the first failure). So what a failed run leaves is,
for each of its snapshots, a *prefix* of the rows: all of them, some leading rows, or none.

Resuming scores only the rows after that prefix, under the batch's own id and with what its
``scoring_batch`` record says it was scored under (champion and challenger versions, decision
policy, canary share), then closes the batch with its ``scoring_done`` record. Every row ends
with exactly one deciding record and each routed row with one review case. A
``scoring_resumed`` record in the chain says which run resumed the batch and how many rows
were already written.

* A re-run of the same flow run (Prefect's retry of a failed run keeps its id, which is the
  batch id) resumes its own batch without being asked.
* Another run resumes only when asked (``mlops score PATH --resume``, flow parameter
  ``resume``), and only a batch of exactly the same valid snapshots whose latest scoring did
  not finish.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mlops.audit import (
    RECORD_PREDICTION,
    append_events_locked,
    audit_records,
    chain_transaction,
    event_fields,
    is_event,
    lock_head,
)
from mlops.audit_encode import DECIDING_ROLES
from mlops.audit_hashing import as_utc
from mlops.errors import InputError, ServiceUnavailable, WorkRefused
from mlops.model_spec import DecisionPolicy
from mlops.reproduce import record_intact
from mlops.scoring import (
    RECORD_SCORING_BATCH,
    RECORD_SCORING_DONE,
    RECORD_SCORING_RESUMED,
    PriorScoring,
    batch_events,
    entity_key_check,
    prior_scorings,
)

__all__ = [
    "RECORD_SCORING_RESUMED",
    "BatchSourceChanged",
    "NothingToResume",
    "ResumePoint",
    "check_resume_key",
    "find_resume_point",
    "record_resumption",
    "recorded_validation_time",
    "rows_written",
]


class NothingToResume(WorkRefused):
    """``--resume`` was asked for, and no unfinished batch of these rows exists."""


class BatchSourceChanged(WorkRefused):
    """A re-run of a flow run found other valid rows than its batch began with."""


class BatchInterrupted(ServiceUnavailable):
    """The audit store's connection failed while a batch was being written (the database
    restarted, the connection was dropped): the chunks written stay, and ``--resume`` finishes it."""


@contextmanager
def interrupted_batch_errors(batch_id: str, source: str) -> Iterator[None]:
    """SQLAlchemy's errors for a connection that failed mid-batch, as :class:`BatchInterrupted`
    naming the batch and how to finish it. They were reported as an unexpected
    ``InterfaceError: connection already closed`` (exit 3, "a bug"), with no word of ``--resume``.
    Other database errors (an integrity violation: a bug or a tampered store) pass through."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        first_line = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BatchInterrupted(
            f"batch {batch_id} stopped part way: the audit store's connection failed ({first_line}); "
            "the chunks written before it stay recorded",
            hint=f"when the database answers again: mlops score {source} --resume (flow parameter "
            "resume=true, or retry the flow run) scores only the rows without records",
        ) from exc


@dataclass(frozen=True)
class ResumePoint:
    """An unfinished (or, for a re-run of its own flow run, maybe finished) batch to continue.

    ``rows_written``: per snapshot, how many of its leading rows already have their records.
    """

    batch_id: str
    began_at: datetime
    batch_seq: int
    champion_version: int
    challenger_version: int | None
    canary_share: float
    policy: DecisionPolicy
    snapshots: tuple[str, ...]
    completed: bool
    rows_written: dict[str, int]
    claim: str | None = None  # the scoring_resumed record of this run, once recorded
    entity_key_check: str | None = None  # see mlops.scoring.entity_key_check (None: not recorded)

    @property
    def rows_already_scored(self) -> int:
        return sum(self.rows_written.values())


def find_resume_point(
    engine: Engine, *, model_name: str, batch_id: str, snapshots: list[str], resume: bool
) -> ResumePoint | None:
    """The batch this run must continue, or None for a new batch.

    ``batch_id`` has a ``scoring_batch`` record already: this is a re-run of that flow run, and
    it continues its own batch. Otherwise, with ``resume``, the latest batch of ``model_name``
    that scored ``snapshots`` must exist, must not have finished and must have scored exactly
    these snapshots (:class:`NothingToResume` if not).
    """
    with engine.connect() as conn:
        own = _own_batch(conn, model_name, batch_id)
        if own is not None:
            if set(own.all_snapshots) != set(snapshots):
                raise BatchSourceChanged(
                    f"batch {batch_id} (this flow run) began at {own.created_at:%Y-%m-%d %H:%M:%S} UTC "
                    f"with other valid rows ({len(own.all_snapshots)} snapshot(s)) than its source gives "
                    f"now ({len(snapshots)}): the source changed between attempts; nothing more was written",
                    hint="score the source as it is now in a new run (mlops score PATH); "
                    "resume the old batch from its original file",
                )
            return _point(conn, own)
        if not resume:
            return None  # a new batch: record_scoring_batch refuses rows scored before
        prior = prior_scorings(conn, model_name, snapshots)
        if not prior:
            raise NothingToResume(
                f"nothing to resume: no batch of {model_name} began scoring these rows",
                hint="score them without --resume",
            )
        last = prior[-1]
        if last.completed and _resumed_by(conn, last.batch_id, batch_id):
            return _point(conn, last)  # a retry of the run that finished it: nothing left to do
        if last.completed:
            raise NothingToResume(
                f"nothing to resume: batch {last.batch_id} of {model_name} scored these rows to the end "
                f"at {last.created_at:%Y-%m-%d %H:%M:%S} UTC",
                hint="to score them again on purpose, pass --rescore instead of --resume",
            )
        if set(last.all_snapshots) != set(snapshots):
            raise NothingToResume(
                f"batch {last.batch_id} of {model_name} did not finish, but it scored other valid "
                f"snapshots ({len(last.all_snapshots)}) than this batch ({len(snapshots)}): a resume "
                "needs the same file validated the same way",
                hint="resume with the source and --validation-chunk-rows of that run, or pass --rescore",
            )
        return _point(conn, last)


def recorded_validation_time(
    engine: Engine, *, model_name: str, batch_id: str, resume: bool, source: str | None = None
) -> datetime | None:
    """The time the batch this run may continue was validated at, to validate its source again
    as of then: rows that were in the future then stay quarantined (a later clock would let
    them through, and the snapshots, which must match, would differ).

    This flow run's own batch (a retry), else with ``resume`` the latest unfinished batch of
    ``model_name`` begun from ``source`` (the one :func:`find_resume_point` then checks; another
    batch left unfinished or still running since, of another file, was validated at another
    time), or, when none names its source (recorded before it was kept, or the file was moved),
    the latest unfinished batch; None for a new batch or a batch recorded before the time was kept.
    """
    with engine.connect() as conn:
        rows = batch_events(conn, audit_records.c.model_name == model_name)
    began = [r for r in rows if r.record_type == RECORD_SCORING_BATCH]
    candidates = [r for r in began if r.batch_id == batch_id]
    if not candidates and resume:
        done = {r.batch_id for r in rows if r.record_type == RECORD_SCORING_DONE}
        unfinished = [r for r in began if r.batch_id not in done]
        same_source = [r for r in unfinished if source and (r.payload or {}).get("source") == source]
        candidates = (same_source or unfinished)[-1:]
    if not candidates:
        return None
    text = (candidates[0].payload or {}).get("validated_at")
    try:
        return as_utc(datetime.fromisoformat(str(text))) if text else None
    except ValueError:
        return None


def _finished(conn: Connection, batch_id: str) -> bool:
    """Whether batch ``batch_id`` has its ``scoring_done`` record."""
    c = audit_records.c
    found = conn.execute(
        sa.select(c.seq).where(is_event(RECORD_SCORING_DONE), c.batch_id == batch_id).limit(1)
    ).first()
    return found is not None


def _resumed_by(conn: Connection, batch_id: str, run_id: str) -> bool:
    """Whether the flow run ``run_id`` resumed batch ``batch_id`` (its ``scoring_resumed`` record)."""
    c = audit_records.c
    payloads = conn.execute(
        sa.select(c.payload).where(is_event(RECORD_SCORING_RESUMED), c.batch_id == batch_id)
    ).scalars()
    return any((payload or {}).get("resumed_by") == run_id for payload in payloads)


def _own_batch(conn: Connection, model_name: str, batch_id: str) -> PriorScoring | None:
    """The ``scoring_batch`` record of ``batch_id`` (whatever snapshots it holds), if any."""
    rows = batch_events(conn, audit_records.c.batch_id == batch_id)
    began = [r for r in rows if r.record_type == RECORD_SCORING_BATCH]
    if not began:
        return None
    first = began[0]
    if len(began) > 1 or first.model_name != model_name:
        raise InputError(
            f"batch id {batch_id} is not one batch of {model_name} in the audit chain",
            hint="run `mlops audit verify`; score the rows in a new run",
        )
    snapshots = tuple(str(x) for x in (first.payload or {}).get("input_snapshots", []))
    done = any(r.record_type == RECORD_SCORING_DONE for r in rows)
    return PriorScoring(batch_id, as_utc(first.created_at), list(snapshots), done, int(first.seq), snapshots)


def _point(conn: Connection, prior: PriorScoring) -> ResumePoint:
    record = _batch_record(conn, prior)
    payload: Mapping[str, Any] = record["payload"] or {}
    try:
        policy = DecisionPolicy.model_validate(payload["decision_policy"])
        champion = int(payload["champion_version"])
        challenger = payload.get("challenger_version")
        share = float(payload.get("canary_share") or 0.0)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"the scoring_batch record of batch {prior.batch_id} lacks what a resume needs ({exc})",
            hint="it predates resumable batches: score the rows with --rescore",
        ) from exc
    return ResumePoint(
        batch_id=prior.batch_id,
        began_at=prior.created_at,
        batch_seq=prior.seq,
        champion_version=champion,
        challenger_version=None if challenger is None else int(challenger),
        canary_share=share,
        policy=policy,
        snapshots=prior.all_snapshots,
        completed=prior.completed,
        rows_written=rows_written(conn, prior.batch_id, after_seq=prior.seq),
        entity_key_check=payload.get("entity_key_check"),
    )


def check_resume_key(point: ResumePoint, hash_key: Any) -> None:
    """Refuse to finish a batch under another entity hash key than it began with: its other rows
    would be keyed apart from the rest (not found by ``mlops audit find``, their earlier open
    review cases not superseded) and their canary arm chosen by another hash."""
    if point.entity_key_check is not None and point.entity_key_check != entity_key_check(hash_key):
        raise InputError(
            f"batch {point.batch_id} began with another entity hash key (MLOPS_ENTITY_HASH_KEY) than "
            "this run has; finishing it under this one would key its remaining applications apart "
            "and choose their canary arm by another hash; nothing was written",
            hint="resume with the MLOPS_ENTITY_HASH_KEY the batch began with",
        )


def _batch_record(conn: Connection, prior: PriorScoring) -> dict[str, Any]:
    row = conn.execute(sa.select(audit_records).where(audit_records.c.seq == prior.seq)).one()
    record = dict(row._mapping)
    if not record_intact(record):
        raise InputError(
            f"the scoring_batch record of batch {prior.batch_id} does not match its hash; "
            "its versions and decision policy cannot be trusted to finish it",
            hint="run `mlops audit verify`: the audit chain has been altered",
        )
    return record


def rows_written(conn: Connection, batch_id: str, *, after_seq: int) -> dict[str, int]:
    """Per snapshot, how many leading rows of batch ``batch_id`` have a deciding record.

    Reads the batch's predictions after its ``scoring_batch`` record (a range of the primary
    key). Refuses (InputError) a batch whose written rows are not a prefix of each snapshot,
    which the ordered writer never leaves.
    """
    c = audit_records.c
    found = conn.execute(
        sa.select(c.input_snapshot, sa.func.count(), sa.func.max(c.input_row), sa.func.min(c.input_row))
        .where(
            c.seq > after_seq,
            c.batch_id == batch_id,
            c.record_type == RECORD_PREDICTION,
            c.role.in_(DECIDING_ROLES),
        )
        .group_by(c.input_snapshot)
    ).all()
    written: dict[str, int] = {}
    for snapshot, count, last, first in found:
        if first != 0 or last != count - 1:
            raise InputError(
                f"batch {batch_id} holds {count} decisions for snapshot {str(snapshot)[:12]} that are not "
                f"its leading rows (rows {first}..{last}); it cannot be resumed row for row",
                hint="score the rows again with --rescore",
            )
        written[str(snapshot)] = int(count)
    return written


def record_resumption(engine: Engine, point: ResumePoint, *, model_name: str, resumed_by: str) -> ResumePoint:
    """Append the ``scoring_resumed`` record and return the point with its rows counted again
    under the chain lock and its ``claim``: from this record on, only this run writes the batch
    (a run of it still alive stops at its next chunk, see :func:`mlops.scoring.check_claim`).
    A batch its own run finished since the point was read is returned ``completed``, with no
    record and no claim: there is nothing left to write, and a second ``scoring_done`` would
    close it twice."""
    with chain_transaction(engine) as conn:
        lock_head(conn)
        point = replace(point, rows_written=rows_written(conn, point.batch_id, after_seq=point.batch_seq))
        if _finished(conn, point.batch_id):  # its own run finished it since the point was read
            return replace(point, completed=True)
        payload = {
            "resumed_by": resumed_by,
            "rows_already_written": point.rows_already_scored,
            "rows_written_by_snapshot": point.rows_written,
        }
        fields = event_fields(
            RECORD_SCORING_RESUMED, payload, {"model_name": model_name, "batch_id": point.batch_id}
        )
        _, ((_, record_id, _),) = append_events_locked(conn, [fields])
    # From here on the batch is this run's: a run still writing it stops (scoring.check_claim).
    return replace(point, claim=record_id)
