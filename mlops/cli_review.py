"""``mlops review list|show|open|resolve``: the review queue from the command line.

``list`` and ``show`` give what a reviewer decides: the application id and input values read
from the scored snapshot (the audit store keeps only a keyed hash of the id), the sensitive
attributes withheld, and the model's score, proposal and routing reason
(:mod:`mlops.review_desk`).

The review commands work on the audit store directly (a resolution is one transaction that
also appends the ``review`` audit record), so they need no Prefect server; the Prefect door to
the same queue is the ``review-case`` flow (``flows/review.py``).

Exit codes: 0 ok; 1 refused: a case resolved already or superseded by a later prediction's
case, or a case that cannot be opened on that prediction (a shadow prediction, one decided again
later, a prediction with a case already, an application with an open case); 2 for an unknown id
or a bad decision / empty reviewer, routing person or reason (nothing is written then).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from mlops.cli import child_commands, needs_child_command

if TYPE_CHECKING:
    from mlops.cli import Registrar
    from mlops.review_desk import CaseView


DEFAULT_LIST_LIMIT = 50


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _existing_store() -> Any:
    """The audit store, which must exist (review commands never create one), upgraded."""
    from mlops.audit import open_existing_audit_store
    from mlops.settings import get_settings

    return open_existing_audit_store(get_settings(), upgrade=True)


def _proposal(view: CaseView) -> str:
    decision = view.model_decision or "n/a"
    return f"model decided {decision}" if view.routed_by_hand else f"proposed {decision}"


def _case_json(view: CaseView) -> dict[str, Any]:
    """A case's JSON: the case row plus what the reviewer is shown."""
    return {
        **view.case.model_dump(mode="json"),
        "opened_by": view.routed_by_hand[0] if view.routed_by_hand else None,
        "application_id": view.application_id,
        "proposed_decision": view.model_decision,
        "inputs": view.row,
        "input_error": view.row_error,
        "input_snapshot": view.reference.input_snapshot,
        "input_row": view.reference.input_row,
    }


def cmd_review_list(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops import audit
    from mlops.audit_lookup import require_known_model
    from mlops.model_spec import model_spec_names
    from mlops.review_desk import case_views
    from mlops.settings import get_settings
    from mlops.storage import make_store

    settings = get_settings()
    engine = _existing_store()
    try:
        require_known_model(engine, args.model, model_spec_names())
        limit = None if args.all else args.limit
        cases = audit.list_open_cases(engine, model_name=args.model, limit=limit)
        open_total = audit.count_open_cases(engine, model_name=args.model) if limit else len(cases)
        views = case_views(engine, make_store(settings), cases, settings)
    finally:
        engine.dispose()
    head = f"{open_total} open review case(s)" + (f" of {args.model}" if args.model else "")
    if len(cases) < open_total:
        head += f", the oldest {len(cases)} shown (--limit N, --all)"
    lines = [head]
    for v in views:
        c = v.case
        lines.append(
            f"{c.case_id}  application {v.application_id or '?'}  {_proposal(v)}  score {_score(c.score)}  "
            f"{c.model_name} v{c.model_version} {c.role or '-'}  {c.created_at:%Y-%m-%d %H:%M}  {c.routing_reason}"
            + (f"  (routed by hand by {v.routed_by_hand[0]})" if v.routed_by_hand else "")
        )
        if v.row_error:
            lines.append(f"    {v.row_error}")
    if views:
        lines.append("details of a case: mlops review show CASE_ID")
    data = {"count": len(cases), "open": open_total, "cases": [_case_json(v) for v in views]}
    return 0, data, "\n".join(lines)


def cmd_review_show(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops import audit
    from mlops.review_desk import any_case_view, cell_text, policy_text, resolve_command
    from mlops.settings import get_settings
    from mlops.storage import make_store

    settings = get_settings()
    engine = _existing_store()
    try:
        case = audit.get_case(engine, args.case_id)
        view = any_case_view(engine, make_store(settings), case, settings)
    finally:
        engine.dispose()
    c, ref = view.case, view.reference
    command = resolve_command(c.case_id) if c.status == "open" else None
    lines = [
        f"review case {c.case_id} ({c.status})",
        f"  application  {view.application_id or 'unknown'}",
        f"  model        {c.model_name} v{c.model_version} {c.role or '-'}",
        f"  score        {_score(c.score)} (P default); {_proposal(view)}",
        f"  policy       {policy_text(view)}",
        f"  routed       {c.routing_reason}"
        + (
            f" (by hand by {view.routed_by_hand[0]}: {view.routed_by_hand[1]})" if view.routed_by_hand else ""
        ),
        f"  opened       {c.created_at:%Y-%m-%d %H:%M:%S} UTC, batch {c.batch_id or 'n/a'}",
        "  input        "
        + (
            f"row {ref.input_row} of snapshot {ref.input_snapshot} ({ref.dataset})"
            if ref.input_snapshot
            else "no reference recorded"
        ),
    ]
    if view.row is not None:
        width = max(len(k) for k in view.row)
        lines += [f"    {k.ljust(width)}  {cell_text(v)}" for k, v in view.row.items()]
    else:
        lines.append(f"    {view.row_error}")
    if c.status == "resolved":
        lines.append(f"  resolved     {c.decision} by {c.reviewer} at {c.resolved_at}: {c.resolution_reason}")
    elif c.status == "superseded":
        lines.append(f"  superseded   by {c.superseded_by}: nothing to decide here")
    if command:
        lines.append(f"  decide it:   {command}")
    data = {
        "case": _case_json(view),
        "model_version": c.model_version,
        "score": c.score,
        "routing_reason": c.routing_reason,
        "application_id": view.application_id,
        "proposed_decision": view.model_decision,
        "inputs": view.row,
        "input_error": view.row_error,
        "policy": None if view.policy is None else view.policy.model_dump(mode="json"),
        "policy_source": view.policy_source,
        "resolve_command": command,
    }
    return 0, data, "\n".join(lines)


def cmd_review_resolve(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops import audit
    from mlops.settings import get_settings

    engine = _existing_store()
    try:
        case = audit.resolve_case(
            engine,
            args.case_id,
            args.reviewer,
            args.decision,
            args.reason,
            allowed_reviewers=get_settings().allowed_reviewers(),
        )
    finally:
        engine.dispose()
    text = (
        f"review case {case.case_id} resolved: {case.decision} by {case.reviewer} "
        f"(audit record {case.review_record_id})"
    )
    return 0, {"case": case.model_dump(mode="json")}, text


def cmd_review_open(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops import audit
    from mlops.review_desk import resolve_command

    engine = _existing_store()
    try:
        case = audit.open_review_case(engine, args.prediction_id, args.reason, opened_by=args.by)
    finally:
        engine.dispose()
    text = (
        f"review case {case.case_id} opened by {args.by}: {case.model_name} v{case.model_version} "
        f"{case.role}, score {_score(case.score)} ({case.routing_reason}); recorded in the audit trail.\n"
        f"  resolve it: {resolve_command(case.case_id)}"
    )
    return 0, {"case": case.model_dump(mode="json"), "opened_by": args.by}, text


def register(add: Registrar) -> None:
    """Add ``review list``, ``review show``, ``review open`` and ``review resolve`` to the
    ``mlops`` command."""
    review = add(
        "review",
        needs_child_command,
        "The review queue: list open cases, show one, open one by hand, resolve one.",
    )
    child = child_commands(review, "review_command", ["list", "show", "open", "resolve"])

    p = child("list", cmd_review_list, "List open review cases, oldest first.")
    p.add_argument("--model", default=None, help="only cases of this model")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_LIST_LIMIT,
        help=f"at most this many cases (default {DEFAULT_LIST_LIMIT})",
    )
    how_many.add_argument(
        "--all", action="store_true", help="every open case (a large batch can open tens of thousands)"
    )

    p = child(
        "show",
        cmd_review_show,
        "Show one case: the application id, every input value (sensitive attributes withheld), the "
        "score, decision policy, routing reason, and the command that decides it.",
    )
    p.add_argument("case_id", metavar="CASE_ID", help="the case id (mlops review list)")

    p = child(
        "open",
        cmd_review_open,
        "Route a prediction to review after the fact (a complaint, a second look); recorded in the audit trail.",
    )
    p.add_argument(
        "prediction_id", metavar="PREDICTION_ID", help="the deciding prediction's id (mlops audit find)"
    )
    p.add_argument("--by", required=True, metavar="WHO", help="who routes it to review")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the audit trail)")

    p = child("resolve", cmd_review_resolve, "Resolve an open case (final; writes a review audit record).")
    p.add_argument("case_id", metavar="ID", help="the case id (= the prediction's record id)")
    p.add_argument("--reviewer", required=True, help="who decides")
    p.add_argument(
        "--decision",
        required=True,
        type=str.lower,  # APPROVE is approve; anything else is refused with the allowed values
        metavar="{approve,decline}",
        help="the reviewer's decision",
    )
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
