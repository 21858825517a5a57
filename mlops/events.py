"""Emit the product's Prefect custom events (names in :mod:`mlops.constants`).

The only module in ``mlops/`` that talks to Prefect's event API; everything else passes
plain dicts. Payload values must be JSON-serialisable.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from mlops.errors import ServiceUnavailable

_POLL_SECONDS = 0.25


def emit(event: str, resource_id: str, payload: dict[str, Any], *, name: str | None = None) -> str | None:
    """Send one event about ``resource_id``; returns the event id (None if events are off)."""
    from prefect.events import emit_event

    resource = {"prefect.resource.id": resource_id}
    if name:
        resource["prefect.resource.name"] = name
    sent = emit_event(event=event, resource=resource, payload=payload)
    return str(sent.id) if sent is not None else None


def stored(event_id: str) -> bool:
    """Whether the Prefect API has stored the event ``event_id`` (it is searchable)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter

    since = datetime.now(UTC) - timedelta(days=1)
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                id=EventIDFilter(id=[UUID(event_id)]), occurred=EventOccurredFilter(since=since)
            ),
            limit=1,
        )
    return bool(page.events)


def confirm_delivered(event: str, event_id: str | None, *, timeout: float) -> None:
    """Wait until the Prefect API has stored ``event_id``; :class:`ServiceUnavailable` if it has
    not within ``timeout`` seconds.

    Prefect sends events from a background worker and drops what it cannot deliver with a log
    line. An alarm that triggers a deployment must not be lost that way after the windows it
    judged are marked done: the caller fails (its task retries, which sends it again; the
    retrain flow's idempotency key and cooldown absorb a duplicate) before it records them, so
    the next run judges them and alarms again. The server stores events in batches
    (``PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL``, 5 s by default)."""
    if event_id is None or timeout <= 0:
        return
    deadline = time.monotonic() + timeout
    unanswered: Exception | None = None
    while time.monotonic() <= deadline:
        try:
            if stored(event_id):
                return
            unanswered = None
        except Exception as exc:  # the API itself is unreachable: not stored either
            unanswered = exc
        time.sleep(_POLL_SECONDS)
    why = (
        f"not confirmed: the Prefect API did not answer ({unanswered})"
        if unanswered
        else f"not stored by the Prefect API within {timeout:g} s"
    )
    raise ServiceUnavailable(
        f"event {event} ({event_id}) was {why}",
        hint="check PREFECT_API_URL, the Prefect server and its event services (MLOPS_EVENT_CONFIRM_SECONDS "
        "sets the wait); the windows stay unjudged, so the next run alarms again",
    )
