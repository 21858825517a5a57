"""What a reviewer needs to decide a case: the case, the application it decides and the model's
proposal.

Plain Python over the audit store's public API (:mod:`mlops.audit`) and the object store; the
review flow (``flows/review.py``) and the ``mlops review`` commands call it.

The input of a prediction is referenced by its audit record: ``input_snapshot`` (the sha256 of
the validated application snapshot that was scored, ``snapshots/<dataset>/valid/<sha>.parquet``)
and ``input_row`` (0-based row number inside it). The audit store keeps only a keyed hash of the
application id; the snapshot holds the application's raw columns, id included, so that is
where a reviewer's view of the application comes from (hash-checked, as every snapshot read).
The sensitive attributes (the contract's ``sensitive`` columns and the spec's
``sensitive_column``) are never shown to a reviewer: their value reads :data:`WITHHELD`, so that
a review cannot be swayed by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import pandas as pd
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.constants import KIND_VALID, POLICY_FROM_SPEC, POLICY_RECORDED
from mlops.contracts import Contract, load_contract
from mlops.errors import (
    ContractError,
    InputError,
    MlopsError,
    ServiceUnavailable,
    StorageIntegrityError,
    WorkRefused,
)
from mlops.model_spec import DecisionPolicy, load_model_spec
from mlops.settings import Settings
from mlops.storage import ObjectMissing, ObjectStore, RowsOutside, read_snapshot, snapshot_key


class ReviewNotGiven(WorkRefused):
    """Nobody answered a review form in time; the case stays open in the queue."""


class InputReference(BaseModel):
    """Where the scored row of a prediction lives, and what the model decided on it."""

    record_id: str
    model_name: str | None = None
    entity_key: str | None
    input_snapshot: str | None
    input_row: int | None
    input_hash: str | None
    decision: str | None = None
    dataset: str | None = None
    uri: str | None = None


def input_references(engine: Engine, record_ids: Sequence[str]) -> dict[str, InputReference]:
    """The input reference of each prediction record id (absent ids are left out)."""
    with engine.connect() as conn:
        rows = audit.prediction_rows(conn, record_ids)
    return {
        record_id: InputReference(
            record_id=record_id,
            model_name=r.model_name,
            entity_key=r.entity_key,
            input_snapshot=r.input_snapshot,
            input_row=None if r.input_row is None else int(r.input_row),
            input_hash=r.input_hash,
            decision=r.decision,
        )
        for record_id, r in rows.items()
    }


WITHHELD: Final = "withheld (sensitive attribute)"
NO_PREDICTION_RECORD: Final = "the case has no prediction record in the audit store"


class CaseView(BaseModel):
    """A case as shown to a reviewer: the case, the scored application (its id and every input
    column; sensitive attributes withheld) and the model's decision."""

    case: audit.ReviewCase
    reference: InputReference
    application_id: str | None = None
    # Every column of the scored row, as plain JSON values (None: missing); the sensitive
    # attributes (the contract's, and the spec's sensitive_column) hold WITHHELD instead.
    row: dict[str, Any] | None = None
    row_error: str | None = None
    model_decision: str | None = None  # the prediction's: a proposal if routed, else it stands
    routed_by_hand: tuple[str, str] | None = None  # (who, why) of a case opened by hand
    policy: DecisionPolicy | None = None
    policy_source: str | None = None  # where ``policy`` comes from (the batch's record or the spec)


@dataclass(frozen=True)
class _ModelDesk:
    """What the desk needs of one model's spec: the applications contract (dataset name, id
    column), the columns never shown, and the decision policy."""

    contract: Contract | None
    withheld: frozenset[str] = frozenset()
    policy: DecisionPolicy | None = None


def _model_desk(model_name: str, settings: Settings) -> _ModelDesk:
    try:
        spec = load_model_spec(model_name, contracts_dir=settings.contracts_dir)
    except ContractError:
        return _ModelDesk(contract=None)
    contract = load_contract(settings.contracts_dir, spec.applications_contract)
    withheld = set(contract.sensitive_columns) | ({spec.sensitive_column} if spec.sensitive_column else set())
    return _ModelDesk(contract=contract, withheld=frozenset(withheld), policy=spec.decision_policy)


def applications_contract_for(model_name: str, settings: Settings) -> Contract | None:
    """The applications contract of a model's spec; None when no spec of that name exists."""
    return _model_desk(model_name, settings).contract


def _plain(value: Any) -> Any:
    """A cell as a JSON value: None for missing, ISO text for times, Python numbers."""
    if value is None or (not isinstance(value, str | bytes) and bool(pd.isna(value))):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def unavailable(sha256: str, exc: MlopsError) -> str:
    """Why the rows of snapshot ``sha256`` cannot be shown (listing goes on without them)."""
    if isinstance(exc, ObjectMissing):
        return f"input row unavailable (snapshot {sha256[:12]} missing)"
    if isinstance(exc, StorageIntegrityError):
        return f"input row unavailable (snapshot {sha256[:12]} altered: its bytes no longer hash to its name)"
    return f"input row unavailable ({exc.message})"


def _read_rows(
    store: ObjectStore, wanted: dict[tuple[str, str], set[int]]
) -> tuple[dict[tuple[str, str, int], dict[str, Any]], dict[tuple[str, ...], str]]:
    """Each snapshot read once (hash-checked), only its wanted rows converted: (dataset, sha,
    row) -> the row's cells, and (dataset, sha) -> why its rows are unavailable, or (dataset,
    sha, str(row)) -> why that row is (a row past the snapshot's end: the others are shown)."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    errors: dict[tuple[str, ...], str] = {}
    pending = list(wanted.items())
    for index, ((dataset, sha), numbers) in enumerate(pending):
        ordered = sorted(numbers)
        try:
            try:
                frame = read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=sha, rows=ordered)
            except RowsOutside as exc:  # a record naming a row past the end: that case alone
                for number in ordered:
                    if not 0 <= number < exc.num_rows:
                        errors[(dataset, sha, str(number))] = unavailable(
                            sha,
                            InputError(f"row {number} is outside snapshot {sha[:12]} ({exc.num_rows} rows)"),
                        )
                ordered = [number for number in ordered if 0 <= number < exc.num_rows]
                frame = read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=sha, rows=ordered)
        except (InputError, StorageIntegrityError) as exc:
            errors[(dataset, sha)] = unavailable(sha, exc)
            continue
        except ServiceUnavailable as exc:  # the store is down: the cases are still listed
            for key, _ in pending[index:]:
                errors[key] = f"input row unavailable (the store did not answer: {exc.message})"
            break
        for number, cells in zip(ordered, frame.to_dict(orient="records"), strict=True):
            rows[(dataset, sha, number)] = {str(k): _plain(v) for k, v in cells.items()}
    return rows, errors


def case_views(
    engine: Engine, store: ObjectStore, cases: Sequence[audit.ReviewCase], settings: Settings
) -> list[CaseView]:
    """The cases (in their order) with their application id, input row and model decision, in a
    few statements and one read of each snapshot they reference. A snapshot that is missing or
    altered leaves its cases without a row (``row_error`` says why), never fails the listing."""
    references = input_references(engine, [case.case_id for case in cases])
    by_hand = audit.routed_by_hand_all(engine, cases)
    desks = {name: _model_desk(name, settings) for name in sorted({case.model_name for case in cases})}
    wanted: dict[tuple[str, str], set[int]] = {}
    for reference in references.values():
        desk = desks[str(reference.model_name)]
        if (
            desk.contract is not None
            and reference.input_snapshot is not None
            and reference.input_row is not None
        ):
            wanted.setdefault((desk.contract.name, reference.input_snapshot), set()).add(reference.input_row)
    rows, errors = _read_rows(store, wanted)
    return [
        _view(case, references.get(case.case_id), desks[case.model_name], rows, errors, store, by_hand)
        for case in cases
    ]


def _view(
    case: audit.ReviewCase,
    reference: InputReference | None,
    desk: _ModelDesk,
    rows: dict[tuple[str, str, int], dict[str, Any]],
    errors: dict[tuple[str, ...], str],
    store: ObjectStore,
    by_hand: dict[str, tuple[str, str]],
) -> CaseView:
    view = CaseView(
        case=case,
        reference=reference
        or InputReference(
            record_id=case.case_id,
            entity_key=case.entity_key,
            input_snapshot=None,
            input_row=None,
            input_hash=None,
        ),
        routed_by_hand=by_hand.get(case.case_id),
        policy=desk.policy,
        policy_source=None if desk.policy is None else POLICY_FROM_SPEC,
    )
    if reference is None:
        return view.model_copy(update={"row_error": NO_PREDICTION_RECORD})
    view.model_decision = reference.decision
    if desk.contract is None:
        why = f"no model spec named {case.model_name!r} says which columns are sensitive"
        return view.model_copy(update={"row_error": f"input row unavailable ({why})"})
    dataset = desk.contract.name
    if reference.input_snapshot is None or reference.input_row is None:
        why = "the prediction record has no input reference"
        return view.model_copy(update={"row_error": f"input row unavailable ({why})"})
    key = snapshot_key(KIND_VALID, dataset, reference.input_snapshot)
    view.reference = reference.model_copy(update={"dataset": dataset, "uri": store.uri(key)})
    row = rows.get((dataset, reference.input_snapshot, reference.input_row))
    if row is None:
        this_row = errors.get((dataset, reference.input_snapshot, str(reference.input_row)))
        return view.model_copy(
            update={"row_error": this_row or errors.get((dataset, reference.input_snapshot))}
        )
    application_id = row.get(desk.contract.id_column)
    return view.model_copy(
        update={
            "application_id": None if application_id is None else str(application_id),
            "row": {k: WITHHELD if k in desk.withheld else v for k, v in row.items()},
        }
    )


def case_view(engine: Engine, store: ObjectStore, case_id: str, settings: Settings) -> CaseView:
    """An OPEN case as a reviewer sees it (:func:`case_views`), under the decision policy
    recorded with its batch when the batch recorded one.

    Raises :class:`~mlops.audit.ReviewCaseNotFound`,
    :class:`~mlops.audit.ReviewCaseAlreadyResolved` or :class:`~mlops.audit.ReviewCaseSuperseded`.
    """
    case = audit.get_case(engine, case_id)
    with engine.connect() as conn:
        audit.check_open(conn, case)
    return any_case_view(engine, store, case, settings)


def any_case_view(engine: Engine, store: ObjectStore, case: audit.ReviewCase, settings: Settings) -> CaseView:
    """One case, whatever its status, as :func:`case_view` shows an open one."""
    [view] = case_views(engine, store, [case], settings)
    if view.row_error == NO_PREDICTION_RECORD:
        raise audit.ReviewCaseNotFound(f"review case {case.case_id!r} has no prediction record")
    recorded = _recorded_policy(engine, case.batch_id)
    if recorded is not None:
        view = view.model_copy(update={"policy": recorded, "policy_source": POLICY_RECORDED})
    return view


def _recorded_policy(engine: Engine, batch_id: str | None) -> DecisionPolicy | None:
    """The policy recorded with the case's batch; None when it recorded none or its record no
    longer matches its hash (``mlops audit verify`` names that; the spec's is shown instead)."""
    from mlops.reproduce import recorded_decision_policy

    try:
        return recorded_decision_policy(engine, batch_id)
    except InputError:
        return None


def resolve_command(case_id: str) -> str:
    """The command line that decides a case."""
    return f"mlops review resolve {case_id} --reviewer WHO --decision approve|decline --reason TEXT"


def policy_text(view: CaseView) -> str:
    """The decision policy behind the model's proposal, in one line."""
    policy = view.policy
    if policy is None:
        return "n/a (no model spec of this name)"
    lo, hi = policy.review_band
    text = f"decline at P(default) >= {policy.threshold:g}; review band [{lo:g}, {hi:g}]"
    if policy.high_stakes is not None:
        text += f"; high stakes: {policy.high_stakes.column} >= {policy.high_stakes.min:g} (or missing)"
    return f"{text} ({view.policy_source})"


def cell_text(value: Any) -> str:
    """One input value as shown to a reviewer."""
    if value is None:
        return "(missing)"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


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
        f"**Application:** `{view.application_id or 'unknown'}`",
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
        f"**Decision policy:** {policy_text(view)}",
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
        lines += [f"| {k} | {_markdown_cell(cell_text(v))} |" for k, v in view.row.items()]
        lines.append("")
    elif view.row_error:
        lines += [f"**Input values:** {view.row_error}", ""]
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
