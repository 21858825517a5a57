"""review_case under the Prefect harness: pause for input, resume with a decision, record it.

The flow runs in a daemon thread (a sync flow runs in its caller's thread); the test finds the
run by its name ``review-<case_id>`` once it is PAUSED, and resumes it with
``resume_flow_run(id, run_input={...})``. Every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import pytest
import sqlalchemy as sa
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_paused_state
from prefect.states import State

from flows.review import review_case
from mlops import audit
from mlops.audit import open_audit_store
from mlops.errors import InputError
from mlops.settings import get_settings
from tasks.review import case_artifact_key, gather_review_feedback_task
from tests.helpers import clean_frame
from tests.review_helpers import KEY, MODEL, contracts, routed_batch

pytestmark = [pytest.mark.flows, pytest.mark.timeout(150)]

DEADLINE = 60.0


@dataclass
class Background:
    thread: threading.Thread
    result: dict[str, Any] = field(default_factory=dict)

    def state(self) -> State[Any]:
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the flow did not finish in time"
        if "error" in self.result:
            raise self.result["error"]
        state: State[Any] = self.result["state"]
        return state


def start(case_id: str, **params: Any) -> Background:
    """Run review_case in a daemon thread (never blocks the test process at exit)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["state"] = review_case(case_id=case_id, poll_seconds=1, return_state=True, **params)
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target, name=f"review-{case_id}", daemon=True)
    thread.start()
    return Background(thread, out)


def run_named(name: str, wanted: StateType | None = None) -> FlowRun:
    deadline = time.monotonic() + DEADLINE
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        runs = [r for r in runs if wanted is None or (r.state is not None and r.state.type == wanted)]
        if runs:  # a name can have several runs (a refused one, then the real one)
            return runs[0]
        assert time.monotonic() < deadline, f"no flow run {name!r} in state {wanted}"
        time.sleep(0.2)


def form_description(paused: FlowRun) -> str:
    """The description the paused run's form shows (saved just after the pause)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(paused.id).state
        assert state is not None
        key = keyset_from_paused_state(state)["description"]
        try:
            description = read_flow_run_input(key, flow_run_id=paused.id)
        except Exception:  # not saved yet
            description = None
        if description:
            return str(description)
        assert time.monotonic() < deadline, "the paused run's form has no description"
        time.sleep(0.2)


def artifact_markdown(key: str) -> str:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts, f"no artifact {key}"
    return "\n".join(str(a.data) for a in artifacts)


@pytest.fixture
def open_case(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(case id, application id) of one routed champion prediction on a stored snapshot."""
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", KEY)  # the key the trail is written with
    frame, records = routed_batch(get_settings(), [0.1, 0.31], routed=(1,), seed=7)
    yield records[1], str(frame["application_id"].iloc[1])


def test_review_pauses_for_input_and_resume_resolves_the_case(open_case: tuple[str, str]) -> None:
    case_id, application_id = open_case
    background = start(case_id, timeout_seconds=120)
    paused = run_named(f"review-{case_id}", StateType.PAUSED)

    shown = artifact_markdown(case_artifact_key(case_id))
    for text in (case_id, "credit-risk", "0.3100", "score in the review band", application_id, "row 1"):
        assert text in shown
    assert "Routed by the scoring batch: the model proposed **approve** and decided nothing" in shown
    # The form's description (shown above the Resume form) is the same case: the application,
    # its input values as a table, score and reason; the sensitive attribute's value withheld.
    form = form_description(paused)
    assert form == shown
    row = clean_frame(contracts()[0], 2, seed=7).iloc[1]  # the fixture's scored row
    assert f"**Application:** `{application_id}`" in form
    assert f"| application_id | {application_id} |" in form and f"| region | {row['region']} |" in form
    assert f"| age | {row['age']} |" in form and f"| employment_type | {row['employment_type']} |" in form
    assert "| gender | withheld (sensitive attribute) |" in form
    assert f"| {row['gender']} |" not in form
    assert "review band [0.18, 0.35]" in form

    with pytest.raises(RuntimeError, match="decision"):  # the form's schema is enforced on resume
        resume_flow_run(paused.id, run_input={"reviewer": "alice", "decision": "maybe", "reason": "x"})
    resume_flow_run(
        paused.id, run_input={"reviewer": "alice", "decision": "decline", "reason": "income not verifiable"}
    )

    state = background.state()
    assert state.is_completed()
    resolved: audit.ReviewCase = state.result()
    assert (resolved.status, resolved.reviewer, resolved.decision) == ("resolved", "alice", "decline")
    engine = open_audit_store(get_settings())
    try:
        case = audit.get_case(engine, case_id)
        assert (case.reviewer, case.decision, case.resolution_reason) == (
            "alice",
            "decline",
            "income not verifiable",
        )
        report = audit.verify_chain(engine)
        assert report.ok and report.records_checked == 3  # 2 predictions + the review record
        [training] = audit.resolved_cases(engine).to_dict(orient="records")
        assert training["review_record_id"] == case.review_record_id and training["label"] == 1
    finally:
        engine.dispose()
    assert "DECLINE" in artifact_markdown(case_artifact_key(case_id))


def _resume_paused(name: str, run_input: dict[str, str]) -> None:
    """Answer the named run's form once it is paused (its form's schema is saved just after)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        paused = run_named(name, StateType.PAUSED)
        try:
            resume_flow_run(paused.id, run_input=run_input)
            return
        except RuntimeError:
            assert time.monotonic() < deadline, "the form of the paused run never took an answer"
            time.sleep(0.2)


def test_an_answer_from_someone_not_allowed_shows_the_form_again(
    open_case: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, mallory's answer ended the run Failed (ReviewerNotAllowed) and someone had to start
    another; now nothing is written and the same run waits for an allowed reviewer."""
    case_id, _ = open_case
    monkeypatch.setenv("MLOPS_REVIEWERS", "alice,bob")
    background = start(case_id, timeout_seconds=120)
    name = f"review-{case_id}"
    _resume_paused(name, {"reviewer": "mallory", "decision": "approve", "reason": "fine by me"})
    _resume_paused(name, {"reviewer": "bob", "decision": "approve", "reason": "income verified"})

    state = background.state()

    assert state.is_completed(), state.message
    resolved: audit.ReviewCase = state.result()
    assert (resolved.reviewer, resolved.decision) == ("bob", "approve")
    engine = open_audit_store(get_settings())
    try:
        reviews = audit.verify_chain(engine)
        assert reviews.ok and reviews.records_checked == 3  # 2 predictions + bob's review, no other
    finally:
        engine.dispose()


def test_no_answer_within_the_timeout_fails_the_run_and_keeps_the_case_open(
    open_case: tuple[str, str],
) -> None:
    case_id, _ = open_case
    state = start(case_id, timeout_seconds=2).state()
    # The flow raises ReviewNotGiven (logged with its hint); the server then records the
    # expired pause as its own Failed state.
    assert state.is_failed() and "never resumed" in str(state.message)
    engine = open_audit_store(get_settings())
    try:
        assert audit.get_case(engine, case_id).status == "open"
    finally:
        engine.dispose()


def test_a_resolved_case_is_refused_before_pausing(open_case: tuple[str, str]) -> None:
    case_id, _ = open_case
    engine = open_audit_store(get_settings())
    audit.resolve_case(engine, case_id, "bob", "approve", "already handled")
    engine.dispose()
    state = start(case_id, timeout_seconds=30).state()
    assert state.is_failed()
    with pytest.raises(InputError, match="resolved already"):
        state.result()
    run = run_named(f"review-{case_id}")
    assert run.state is not None and run.state.type == StateType.FAILED
    assert isinstance(run.id, UUID)


def test_resolved_reviews_feed_the_next_training_run(open_case: tuple[str, str]) -> None:
    case_id, application_id = open_case
    engine = open_audit_store(get_settings())
    audit.resolve_case(engine, case_id, "carol", "approve", "verified by phone")
    engine.dispose()
    apps, _ = contracts()

    @flow(name="feedback-probe")
    def probe() -> pd.DataFrame:
        return gather_review_feedback_task(apps, "defaulted", MODEL, get_settings())

    rows = probe()
    assert isinstance(rows, pd.DataFrame)
    assert rows["application_id"].tolist() == [application_id]
    assert rows["defaulted"].tolist() == [0] and rows["_reviewer"].tolist() == ["carol"]


def test_a_prediction_is_routed_to_review_from_the_prefect_ui_and_resolved(
    open_case: tuple[str, str],
) -> None:
    engine = open_audit_store(get_settings())
    try:
        rows = audit.verify_chain(engine).records_checked
        with engine.connect() as conn:  # row 0: decided by the model, no case
            prediction = str(
                conn.execute(
                    sa.select(audit.audit_records.c.record_id).where(audit.audit_records.c.seq == 1)
                ).scalar_one()
            )
    finally:
        engine.dispose()
    assert prediction != open_case[0]
    # A case the batch routed is not taken over by a routing request: refused, as by the CLI.
    taken = start(open_case[0], timeout_seconds=30, route_by="mallory", route_reason="complaint").state()
    assert taken.is_failed()
    with pytest.raises(audit.ReviewCaseRefused, match="in review already"):
        taken.result()
    half = start(prediction, timeout_seconds=30, route_by="dana").state()  # reason missing
    assert half.is_failed()
    with pytest.raises(InputError, match="needs both route_by and route_reason"):
        half.result()

    background = start(prediction, timeout_seconds=120, route_by="dana", route_reason="applicant complaint")
    paused = run_named(f"review-{prediction}", StateType.PAUSED)
    shown = artifact_markdown(case_artifact_key(prediction))
    assert "applicant complaint" in shown and "by hand by **dana**" in shown
    assert "The model decided **approve**; that decision stands" in shown
    resume_flow_run(paused.id, run_input={"reviewer": "erin", "decision": "approve", "reason": "checked"})
    resolved: audit.ReviewCase = background.state().result()
    assert (resolved.case_id, resolved.status, resolved.reviewer) == (prediction, "resolved", "erin")
    engine = open_audit_store(get_settings())
    try:
        report = audit.verify_chain(engine)
        assert report.ok and report.records_checked == rows + 2  # review_opened + review
        with engine.connect() as conn:
            opened = conn.execute(
                sa.select(audit.audit_records.c.payload).where(
                    audit.audit_records.c.record_type == audit.RECORD_REVIEW_OPENED
                )
            ).scalar_one()
        assert opened == {"case_id": prediction, "opened_by": "dana", "reason": "applicant complaint"}
    finally:
        engine.dispose()
