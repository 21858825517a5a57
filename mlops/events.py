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


#: How long the Prefect API may take to answer a command's first request at all.
API_ANSWER_SECONDS = 10.0


def check_prefect_api(*, production: bool, timeout: float = API_ANSWER_SECONDS) -> None:
    """Before a command starts a flow: the Prefect API it will use answers, and the production
    profile has one.

    - ``PREFECT_API_URL`` set but nothing answers there (a wrong port, the server down):
      :class:`SettingsError` naming it, instead of Prefect's "Failed to reach API" as an
      unexpected error (exit 3). Any HTTP answer (even 401) means a server is there.
    - unset in the production profile: :class:`SettingsError`. Without it each command runs on a
      temporary Prefect server that is gone when the command ends: its runs are not kept, and
      the monitor's drift alarm or ``mlops.shadow.completed`` is stored (and confirmed) there, so
      no automation of the real server ever starts the retrain or promotion it was for.
    """
    import urllib.error
    import urllib.request

    from prefect.settings import PREFECT_API_URL

    from mlops.errors import SettingsError

    url = PREFECT_API_URL.value()
    if not url:
        if production:
            raise SettingsError(
                "the production profile needs PREFECT_API_URL: without it the command's flow runs on "
                "a temporary Prefect server, where its run is not kept and its events (a drift alarm, "
                "shadow completed) reach no automation",
                hint="export PREFECT_API_URL=http://<your prefect server>:4200/api",
            )
        return
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:  # it answered: a server is there
        return
    except (OSError, ValueError) as exc:  # refused, unresolvable, timed out, malformed
        raise SettingsError(
            f"the Prefect API at {url} did not answer ({getattr(exc, 'reason', exc)})",
            hint="check PREFECT_API_URL (http://host:4200/api) and that `prefect server start` runs there",
        ) from exc
