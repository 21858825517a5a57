"""Flows the CLI runs in the foreground skip Prefect's heartbeat thread; others keep it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow, task
from prefect.runtime import flow_run

from mlops.cli import RUN_LOGGERS, OurErrorsOnceOnConsole, OurErrorsWithoutTraceback, foreground_flows
from mlops.errors import InputError
from tasks.retry import retry_unless_bad_input
from tests.helpers import wait_for_events

pytestmark = pytest.mark.flows

HEARTBEAT = "prefect.flow-run.heartbeat"


@flow(name="heartbeat-probe")
def probe() -> str:
    return str(flow_run.get_id())


def test_foreground_flows_run_without_a_heartbeat_thread() -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    with foreground_flows():
        foreground = probe()
    unattended = probe()  # after: its heartbeat arriving means the foreground one would have too

    # The thread's first heartbeat goes out as the run starts.
    wait_for_events(HEARTBEAT, f"prefect.flow-run.{unattended}", since=since)
    assert wait_for_events(HEARTBEAT, f"prefect.flow-run.{foreground}", since=since, count=0, timeout=0) == []


@task(name="refusing-task")
def refuse(kind: str) -> None:
    if kind == "ours":
        raise InputError("batch x.csv is an empty file", hint="check the export")
    raise RuntimeError("an unexpected failure")


@flow(name="refusing-probe")
def refusing(kind: str) -> None:
    refuse(kind)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("kind", ["ours", "unexpected"])
def test_our_errors_are_logged_without_a_traceback_others_with_it(kind: str) -> None:
    keep = _Keep()
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addHandler(keep)
    try:
        with foreground_flows():
            with pytest.raises((InputError, RuntimeError)):
                refusing(kind)
            consoles = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
            on_console = [r for r in keep.records if all(h.filter(r) for h in consoles)]
    finally:
        for logger in loggers:
            logger.removeHandler(keep)
    assert consoles  # Prefect's console handler, filtered
    # The run's log (the Prefect UI) keeps every line; the console shows ours only once, as the
    # CLI prints it with its hint, and keeps every line of an unexpected failure.
    assert len([r for r in keep.records if "empty file" in r.getMessage()]) == (3 if kind == "ours" else 0)
    assert [r for r in on_console if "failure" in r.getMessage() or "empty file" in r.getMessage()] == (
        [] if kind == "ours" else [r for r in keep.records if "an unexpected failure" in r.getMessage()]
    )
    assert kind == "ours" or len(on_console) >= 3
    # The lines Prefect logs with the exception (others, like "Finished in state Failed", carry none).
    failures = [
        r for r in keep.records if r.getMessage().startswith(("Encountered exception", "Task run failed"))
    ]
    assert {r.name for r in failures} == set(RUN_LOGGERS)  # the task's and the flow's failure lines
    assert all((r.exc_info is None) == (kind == "ours") for r in failures)
    assert all(("empty file" in r.getMessage()) == (kind == "ours") for r in failures)
    assert not any(isinstance(f, OurErrorsWithoutTraceback) for lg in loggers for f in lg.filters)  # removed
    assert not any(isinstance(f, OurErrorsOnceOnConsole) for h in consoles for f in h.filters)


@task(name="refusing-task-no-retry", retries=2, retry_condition_fn=retry_unless_bad_input)
def refuse_without_retry() -> None:
    raise InputError("batch y.csv names column(s) ['age'] more than once", hint="fix the export")


@flow(name="refusing-probe-no-retry")
def refusing_without_retry() -> None:
    refuse_without_retry()


def test_a_refusal_a_retry_condition_stopped_reaches_the_console_once() -> None:
    """Such a task logs only its final state, as text, before anything carries the exception;
    a console (a stream handler on the root logger) must not show it, as it happens."""
    import io

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    console.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(console)
    try:
        with foreground_flows(), pytest.raises(InputError):
            refusing_without_retry()
    finally:
        root.removeHandler(console)
    assert "more than once" not in stream.getvalue()
