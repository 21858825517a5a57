"""Emit the product's Prefect custom events (names in :mod:`mlops.constants`).

The only module in ``mlops/`` that talks to Prefect's event API; everything else passes
plain dicts. Payload values must be JSON-serialisable.
"""

from __future__ import annotations

from typing import Any


def emit(event: str, resource_id: str, payload: dict[str, Any], *, name: str | None = None) -> str | None:
    """Send one event about ``resource_id``; returns the event id (None if events are off)."""
    from prefect.events import emit_event

    resource = {"prefect.resource.id": resource_id}
    if name:
        resource["prefect.resource.name"] = name
    sent = emit_event(event=event, resource=resource, payload=payload)
    return str(sent.id) if sent is not None else None
