"""review_case: show one open review case in the Prefect UI and wait for a person's decision.

With ``route_by`` and ``route_reason`` the id may be any deciding prediction's (from ``mlops
audit find``): the flow first routes it to review by hand, as ``mlops review open`` does (the
case opens and a ``review_opened`` record names who routed it and why), so a decision can be
sent to a person from the Prefect UI too.

The flow publishes the case (application id, model, version, role, score, decision policy,
routing reason, input reference and the input values, sensitive attributes withheld) as a
Markdown artifact, then pauses with a form
(:class:`ReviewForm`: reviewer, decision approve|decline, reason) whose description is the
same Markdown, so the reviewer sees what they decide above the form. Resuming the run with that
input (Prefect UI "Resume", or ``resume_flow_run(id, run_input={...})``) resolves the case
through the audit store, which appends the ``review`` audit record.

The pause is in the flow itself, not in a task (Prefect #19435). It holds the run (and a
worker slot) while it waits: after ``timeout_seconds`` the flow raises
:class:`~mlops.review_desk.ReviewNotGiven` (logged with a hint; the server records the run as
Failed "never resumed") and the case stays open for the next attempt or for
``mlops review resolve``. An answer from someone not in MLOPS_REVIEWERS writes nothing and
shows the form again, within the same ``timeout_seconds``.
"""

from __future__ import annotations

import itertools
import time
from typing import Final, Literal

from prefect import flow
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from mlops import audit
from mlops.errors import InputError
from mlops.review_desk import ReviewNotGiven, resolve_command
from mlops.settings import Settings, flow_settings
from tasks.review import (
    load_review_case_task,
    publish_review_case_task,
    resolve_review_case_task,
    route_to_review_task,
)

DEFAULT_TIMEOUT_SECONDS: Final = 3600
DEFAULT_POLL_SECONDS: Final = 10


class ReviewForm(RunInput):
    """The reviewer's answer; the Prefect UI renders it as the resume form."""

    reviewer: str = Field(min_length=1, pattern=r"\S", description="Who decides (name or user id).")
    decision: Literal["approve", "decline"] = Field(description="approve or decline the application.")
    reason: str = Field(min_length=1, pattern=r"\S", description="Why; kept in the audit trail.")


def _ask_an_allowed_reviewer(
    case_id: str, description: str, settings: Settings, timeout_seconds: int, poll_seconds: int
) -> ReviewForm:
    """Pause for the form until someone allowed to resolve the case answers it, within
    ``timeout_seconds`` in all. An answer from someone not in MLOPS_REVIEWERS is logged and the
    form shown again (it ended the run before, and someone had to start a new one)."""
    allowed = settings.allowed_reviewers()
    deadline = time.monotonic() + timeout_seconds
    for attempt in itertools.count():
        remaining = int(deadline - time.monotonic())
        try:
            if remaining < 1:
                raise FlowPauseTimeout
            answer = pause_flow_run(
                wait_for_input=ReviewForm.with_initial_data(description=description),
                timeout=remaining,
                poll_interval=poll_seconds,
                key=f"review-{case_id}" if attempt == 0 else f"review-{case_id}-{attempt}",
            )
        except FlowPauseTimeout as exc:
            raise ReviewNotGiven(
                f"no decision on review case {case_id} within {timeout_seconds} s; the case stays open",
                hint=f"run review-case again, or: {resolve_command(case_id)}",
            ) from exc
        if not allowed or answer.reviewer.strip() in allowed:
            return answer
        print(
            f"review case {case_id}: {answer.reviewer.strip()!r} is not an allowed reviewer "
            "(MLOPS_REVIEWERS); nothing was written, and the form waits for an allowed reviewer"
        )
    raise AssertionError("unreachable")  # itertools.count() never ends


@flow(name="review-case", flow_run_name="review-{case_id}", log_prints=True)
def review_case(
    case_id: str,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    poll_seconds: int = DEFAULT_POLL_SECONDS,
    route_by: str | None = None,
    route_reason: str | None = None,
) -> audit.ReviewCase:
    """Show review case ``case_id``, wait up to ``timeout_seconds`` for a decision, record it.

    ``route_by`` + ``route_reason``: ``case_id`` may be a prediction without a case; it is
    routed to review first (who routes it and why go to the audit trail).
    """
    if timeout_seconds < 1 or poll_seconds < 1:
        raise ValueError("timeout_seconds and poll_seconds must be at least 1")
    if (route_by is None) != (route_reason is None):
        raise InputError(
            "routing a prediction to review needs both route_by and route_reason",
            hint="give both (who routes it, why), or neither to review an open case",
        )
    for name, value in (("route_by", route_by), ("route_reason", route_reason)):
        if value is not None and not value.strip():
            raise InputError(f"{name} is blank", hint="route_by: who routes it to review; route_reason: why")
    settings = flow_settings()
    settings.allowed_reviewers()  # production without MLOPS_REVIEWERS: said before anyone fills the form
    if route_by is not None and route_reason is not None:
        route_to_review_task(case_id, route_by, route_reason, settings)
    view = load_review_case_task(case_id, settings)
    description = publish_review_case_task(view)
    answer = _ask_an_allowed_reviewer(case_id, description, settings, timeout_seconds, poll_seconds)
    try:
        resolved = resolve_review_case_task(
            case_id, answer.reviewer, answer.decision, answer.reason, settings
        )
    except audit.ReviewCaseSuperseded as exc:  # a later prediction's case arrived during the pause
        raise audit.ReviewCaseSuperseded(
            f"{exc.message}; the answer given ({answer.decision} by {answer.reviewer}: "
            f"{answer.reason!r}) was not recorded",
            hint=exc.hint,
        ) from exc
    print(
        f"review case {case_id}: {resolved.decision} by {resolved.reviewer} "
        f"(audit record {resolved.review_record_id})"
    )
    return resolved
