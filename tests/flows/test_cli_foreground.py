"""Flows the CLI runs in the foreground skip Prefect's heartbeat thread; others keep it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.runtime import flow_run

from mlops.cli import foreground_flows
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
