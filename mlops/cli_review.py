"""``mlops review list|open|resolve``: the review queue from the command line.

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


def cmd_review_list(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops import audit
    from mlops.audit_lookup import require_known_model
    from mlops.model_spec import model_spec_names

    engine = _existing_store()
    try:
        require_known_model(engine, args.model, model_spec_names())
        limit = None if args.all else args.limit
        cases = audit.list_open_cases(engine, model_name=args.model, limit=limit)
        open_total = audit.count_open_cases(engine, model_name=args.model) if limit else len(cases)
        by_hand = audit.routed_by_hand_all(engine, cases)
    finally:
        engine.dispose()
    head = f"{open_total} open review case(s)" + (f" of {args.model}" if args.model else "")
    if len(cases) < open_total:
        head += f", the oldest {len(cases)} shown (--limit N, --all)"
    lines = [head]
    lines += [
        f"{c.case_id}  {c.model_name} v{c.model_version} {c.role or '-'}  score {_score(c.score)}  "
        f"{c.created_at:%Y-%m-%d %H:%M}  {c.routing_reason}"
        + (f"  (routed by hand by {by_hand[c.case_id][0]})" if c.case_id in by_hand else "")
        for c in cases
    ]
    listed = [
        {**c.model_dump(mode="json"), "opened_by": by_hand[c.case_id][0] if c.case_id in by_hand else None}
        for c in cases
    ]
    data = {"count": len(cases), "open": open_total, "cases": listed}
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

    engine = _existing_store()
    try:
        case = audit.open_review_case(engine, args.prediction_id, args.reason, opened_by=args.by)
    finally:
        engine.dispose()
    text = (
        f"review case {case.case_id} opened by {args.by}: {case.model_name} v{case.model_version} "
        f"{case.role}, score {_score(case.score)} ({case.routing_reason}); recorded in the audit trail.\n"
        f"  resolve it: mlops review resolve {case.case_id} --reviewer WHO --decision approve|decline "
        "--reason TEXT"
    )
    return 0, {"case": case.model_dump(mode="json"), "opened_by": args.by}, text


def register(add: Registrar) -> None:
    """Add ``review list``, ``review open`` and ``review resolve`` to the ``mlops`` command."""
    review = add(
        "review", needs_child_command, "The review queue: list open cases, open one by hand, resolve one."
    )
    child = child_commands(review, "review_command", ["list", "open", "resolve"])

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
    p.add_argument("--decision", required=True, help="approve or decline")
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
