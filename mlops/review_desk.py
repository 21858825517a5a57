"""What a reviewer needs to decide a case: the case, its input reference and the input row.

Plain Python over the audit store's public API (:mod:`mlops.audit`) and the object store; the
review flow (``flows/review.py``) and the ``mlops review`` commands call it.

The input of a prediction is referenced by its audit record: ``input_snapshot`` (the sha256 of
the validated application snapshot that was scored, ``snapshots/<dataset>/valid/<sha>.parquet``)
and ``input_row`` (0-based row number inside it). Sensitive columns of the contract are never
shown to a reviewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.constants import KIND_VALID
from mlops.contracts import Contract
from mlops.errors import InputError, WorkRefused
from mlops.settings import Settings
from mlops.storage import ObjectStore, read_snapshot, snapshot_key

DEFAULT_APPLICATIONS_DATASET: Final = "credit_applications"


class ReviewNotGiven(WorkRefused):
    """Nobody answered a review form in time; the case stays open in the queue."""


class InputReference(BaseModel):
    """Where the scored row of a prediction lives."""

    record_id: str
    entity_key: str | None
    input_snapshot: str | None
    input_row: int | None
    input_hash: str | None
    dataset: str | None = None
    uri: str | None = None


class CaseView(BaseModel):
    """An open case as shown to a reviewer."""

    case: audit.ReviewCase
    reference: InputReference
    row: dict[str, Any] | None = None
    row_error: str | None = None
    model_decision: str | None = None  # the prediction's: a proposal if routed, else it stands
    routed_by_hand: tuple[str, str] | None = None  # (who, why) of a case opened by hand


def input_references(engine: Engine, record_ids: Sequence[str]) -> dict[str, InputReference]:
    """The input reference of each prediction record id (absent ids are left out)."""
    with engine.connect() as conn:
        rows = audit.prediction_rows(conn, record_ids)
    return {
        record_id: InputReference(
            record_id=record_id,
            entity_key=r.entity_key,
            input_snapshot=r.input_snapshot,
            input_row=None if r.input_row is None else int(r.input_row),
            input_hash=r.input_hash,
        )
        for record_id, r in rows.items()
    }


def applications_contract_for(model_name: str, settings: Settings) -> Contract | None:
    """The applications contract of a model's spec; None when no spec of that name exists."""
    from mlops.contracts import load_contract
    from mlops.errors import ContractError
    from mlops.model_spec import load_model_spec

    try:
        spec = load_model_spec(model_name, contracts_dir=settings.contracts_dir)
    except ContractError:
        return None
    return load_contract(settings.contracts_dir, spec.applications_contract)


def read_input_row(
    store: ObjectStore, reference: InputReference, dataset: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The scored row as a dict, or (None, why not)."""
    if reference.input_snapshot is None or reference.input_row is None:
        return None, "the prediction record has no input reference"
    try:
        frame = read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=reference.input_snapshot)
    except InputError as exc:
        return None, exc.message
    if not 0 <= reference.input_row < len(frame):
        return None, f"row {reference.input_row} is outside the snapshot ({len(frame)} rows)"
    row: dict[str, Any] = frame.iloc[reference.input_row].to_dict()
    return row, None


def case_view(engine: Engine, store: ObjectStore, case_id: str, contract: Contract | None) -> CaseView:
    """An OPEN case with its input reference and (sensitive columns removed) its input row.

    Raises :class:`~mlops.audit.ReviewCaseNotFound`,
    :class:`~mlops.audit.ReviewCaseAlreadyResolved` or :class:`~mlops.audit.ReviewCaseSuperseded`.
    """
    case = audit.get_case(engine, case_id)
    with engine.connect() as conn:
        audit.check_open(conn, case)
    reference = input_references(engine, [case_id]).get(case_id)
    if reference is None:
        raise audit.ReviewCaseNotFound(f"review case {case_id!r} has no prediction record")
    dataset = contract.name if contract is not None else DEFAULT_APPLICATIONS_DATASET
    if reference.input_snapshot is not None:
        key = snapshot_key(KIND_VALID, dataset, reference.input_snapshot)
        reference = reference.model_copy(update={"dataset": dataset, "uri": store.uri(key)})
    row, error = read_input_row(store, reference, dataset)
    if row is not None and contract is not None:
        hidden = set(contract.sensitive_columns)
        row = {k: v for k, v in row.items() if k not in hidden}
    records = audit.audit_records.c
    with engine.connect() as conn:
        decision = conn.execute(sa.select(records.decision).where(records.record_id == case_id)).scalar()
    return CaseView(
        case=case,
        reference=reference,
        row=row,
        row_error=error,
        model_decision=decision,
        routed_by_hand=audit.routed_by_hand(engine, case),
    )


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str | bytes) and bool(pd.isna(value))):
        return "(missing)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")


def _routing_line(view: CaseView) -> str:
    """Who sent the case and what the model's decision is meanwhile."""
    model = view.model_decision or "n/a"
    if view.routed_by_hand is not None:
        who, _why = view.routed_by_hand
        return (
            f"Routed to review by hand by **{who}**. The model decided **{model}**; that decision "
            "stands until this review decides."
        )
    return f"Routed by the scoring batch: the model proposed **{model}** and decided nothing."


def case_markdown(view: CaseView) -> str:
    """The case as Markdown for the Prefect UI (artifact and the review form's description)."""
    case, ref = view.case, view.reference
    score = "n/a" if case.score is None else f"{case.score:.4f}"
    lines = [
        f"# Review case `{case.case_id}`",
        "",
        f"**Why a person reviews it:** {case.routing_reason}",
        "",
        _routing_line(view),
        "",
        "| model | version | role | score (P default) | batch | opened |",
        "|---|---|---|---|---|---|",
        f"| {case.model_name} | {case.model_version} | {case.role or 'n/a'} | {score} "
        f"| {case.batch_id or 'n/a'} | {case.created_at:%Y-%m-%d %H:%M:%S} UTC |",
        "",
        "**Input:** "
        + (
            f"row {ref.input_row} of snapshot `{ref.input_snapshot}` ({ref.dataset})"
            if ref.input_snapshot
            else "no reference recorded"
        ),
    ]
    if ref.uri:
        lines.append(f"at `{ref.uri}`")
    if ref.input_hash:
        lines.append(f"(input hash `{ref.input_hash}`)")
    lines.append("")
    if view.row is not None:
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in view.row.items()]
        lines.append("")
    elif view.row_error:
        lines += [f"The input row cannot be shown: {view.row_error}", ""]
    lines.append(
        "Decide **approve** or **decline**, give your name and a reason. "
        "A decision is final and written to the audit trail."
    )
    return "\n".join(lines)


def resolution_markdown(case: audit.ReviewCase) -> str:
    """A resolved case, short, for the Prefect UI."""
    return "\n".join(
        [
            f"# Review case `{case.case_id}`: {str(case.decision).upper()}",
            "",
            f"Reviewer **{case.reviewer}** at {case.resolved_at}: {case.resolution_reason}",
            "",
            f"Model {case.model_name} v{case.model_version} ({case.role}), routed because: "
            f"{case.routing_reason}",
            "",
            f"Audit record `{case.review_record_id}`",
        ]
    )
