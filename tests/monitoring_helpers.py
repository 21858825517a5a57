"""Small simulated histories and event helpers for the monitoring tests and benchmark.

Days before :data:`DRIFT_DAY` are the stable population; from it on the simulator's
covariate shift applies (income, credit score, loan purpose and channel move). Each day is
stored as a validated snapshot with a catalog entry, as an accepted batch leaves it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import pandas as pd

from mlops.contracts import Contract
from mlops.simulator import SimulationConfig, generate_applications
from mlops.storage import ObjectStore
from tests.training_helpers import ingest, outcomes_of

DRIFT_DAY: Final = 6
ROWS: Final = 400
SEED: Final = 7


def day_frames(day: int, rows: int = ROWS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(applications, outcomes) of one day; covariate shift from :data:`DRIFT_DAY` on."""
    config = SimulationConfig(
        seed=SEED,
        days=max(day + 1, DRIFT_DAY + 1),
        rows_per_day=rows,
        scenario="covariate_shift",
        drift_day=DRIFT_DAY,
    )
    apps, labels = generate_applications(rows, day, config)
    return apps, outcomes_of(apps, labels)


def ingest_days(
    store: ObjectStore,
    applications: Contract,
    outcomes: Contract,
    days: Iterable[int],
    *,
    with_outcomes: bool = True,
    rows: int = ROWS,
) -> dict[int, str]:
    """Ingest the applications (and outcomes) of ``days``; returns day -> application sha256."""
    shas: dict[int, str] = {}
    for day in days:
        apps, outs = day_frames(day, rows)
        shas[day] = ingest(store, apps, applications, f"applications/day_{day:04d}.csv")
        if with_outcomes:
            ingest(store, outs, outcomes, f"outcomes/day_{day:04d}.csv")
    return shas


def wait_until(check: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def read_events(names: list[str], resource_id: str, since: datetime) -> list[Any]:
    """Events of these names about one resource since ``since``, read from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=names),
                resource=EventResourceFilter(id=[resource_id]),
            ),
            limit=50,
        )
    return list(page.events)


def settle_events(resource_id: str, since: datetime, *, timeout: float = 30.0) -> None:
    """Emit a marker event after everything sent so far and wait until the server has it.

    Events of one process travel in order through one client, so once the marker is stored,
    the events sent before it are too: an absence can be asserted without a fixed sleep.
    """
    from prefect.events import emit_event

    marker = uuid.uuid4().hex
    emit_event(
        event="mlops.test.marker", resource={"prefect.resource.id": resource_id}, payload={"marker": marker}
    )
    found = wait_until(
        lambda: [
            e
            for e in read_events(["mlops.test.marker"], resource_id, since)
            if e.payload.get("marker") == marker
        ],
        timeout=timeout,
    )
    assert found, "the marker event did not reach the Prefect server"


def promote_by_hand(model: str, version: int, previous: int, *, by: str) -> None:
    """What the promotion flow writes when it moves the champion, in its order (the flow owns
    the real thing; tests and benchmarks that need a promoted state without a shadow period use this)."""
    from mlops.constants import ALIAS_CHAMPION
    from mlops.lineage import TAG_PROMOTED_AT, TAG_PROMOTED_BY
    from mlops.promotion import TAG_PREVIOUS_CHAMPION, MlflowRegistryMetadata, write_rollback_target
    from mlops.registry import make_registry

    registry = make_registry()
    registry.set_version_tags(model, version, {TAG_PREVIOUS_CHAMPION: str(previous)})
    write_rollback_target(MlflowRegistryMetadata(registry), model, champion=version, target=previous)
    registry.set_alias(model, ALIAS_CHAMPION, version)
    registry.set_version_tags(
        model, version, {TAG_PROMOTED_AT: datetime.now(UTC).isoformat(), TAG_PROMOTED_BY: by}
    )
