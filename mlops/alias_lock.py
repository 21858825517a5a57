"""One alias change of a model at a time, across processes (promotion commits, bootstraps, rollbacks).

MLflow has no compare-and-set on an alias, and the ``promote`` deployment's ``concurrency_limit``
only spans that deployment's runs: a ``mlops promote`` or ``mlops rollback`` from a shell runs
beside a triggered run (and, without ``PREFECT_API_URL``, on a temporary Prefect server of its
own, so Prefect's global concurrency limits would not span them either). Two promotions of the
same plan could then both pass their check that the aliases are unchanged, both commit, both
write a ``promotion`` record, and the undo of the one that failed afterwards moved the champion
back under the other.

So the lock lives where every such process writes anyway: the audit store (SQLite file or
PostgreSQL), one row per model in ``alias_locks`` with its holder and a lease. Taking it is
one conditional UPDATE (or the first INSERT), atomic on both databases; a holder that died
keeps it only until its lease ends. It is held for the few registry writes of a commit, never
across an approval's wait; a second run waits for it and then finds the aliases moved (its
own checks refuse it, with a record).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlops.audit_schema import alias_locks
from mlops.errors import WorkRefused

if TYPE_CHECKING:
    from mlops.settings import Settings

#: Longer than any commit's registry writes (seconds against a slow MLflow server); a holder
#: that died blocks the model's alias changes for at most this long.
LEASE_SECONDS: Final = 120.0
POLL_SECONDS: Final = 0.25


class AliasLockBusy(WorkRefused):
    """Another process held the model's alias lock for longer than this one would wait."""


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def try_acquire(engine: Engine, model: str, holder: str, purpose: str, lease: float = LEASE_SECONDS) -> bool:
    """Take the lock if it is free, expired or ours; False if someone else holds it."""
    now = time.time()
    values = {
        "holder": holder,
        "purpose": purpose[:200],
        "acquired_at": datetime.now(UTC),
        "expires_at": now + lease,
    }
    with engine.begin() as conn:
        taken = conn.execute(
            alias_locks.update()
            .where(alias_locks.c.model_name == model)
            .where(sa.or_(alias_locks.c.expires_at < now, alias_locks.c.holder == holder))
            .values(**values)
        ).rowcount
    if taken == 1:
        return True
    try:
        with engine.begin() as conn:
            conn.execute(alias_locks.insert().values(model_name=model, **values))
    except IntegrityError:  # the row exists and is someone else's (the UPDATE matched nothing)
        return False
    return True


def release(engine: Engine, model: str, holder: str) -> None:
    """Give the lock back (only if it is still ours: a lease that ran out may be another's now)."""
    with engine.begin() as conn:
        conn.execute(
            alias_locks.delete()
            .where(alias_locks.c.model_name == model)
            .where(alias_locks.c.holder == holder)
        )


def current_holder(engine: Engine, model: str) -> tuple[str, str, datetime] | None:
    """(holder, purpose, acquired at) of the model's lock while its lease runs, else None."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(alias_locks.c.holder, alias_locks.c.purpose, alias_locks.c.acquired_at)
            .where(alias_locks.c.model_name == model)
            .where(alias_locks.c.expires_at >= time.time())
        ).first()
    return None if row is None else (str(row.holder), str(row.purpose), row.acquired_at)


@contextmanager
def alias_lock(
    engine: Engine, model: str, purpose: str, *, wait_seconds: float = LEASE_SECONDS + 5.0
) -> Iterator[str]:
    """Hold ``model``'s alias lock for the block; waits up to ``wait_seconds`` (by default a full
    lease, so a holder that died is outlived) and raises :class:`AliasLockBusy` naming the holder."""
    holder = _holder()
    deadline = time.monotonic() + wait_seconds
    while not try_acquire(engine, model, holder, purpose):
        if time.monotonic() >= deadline:
            held = current_holder(engine, model)
            by = f"{held[1]} ({held[0]}, since {held[2]:%Y-%m-%d %H:%M:%S}Z)" if held else "another process"
            raise AliasLockBusy(
                f"{model}: the registry aliases are being changed by {by}; nothing was changed",
                hint="run the command again once that finishes",
            )
        time.sleep(POLL_SECONDS)
    try:
        yield holder
    finally:
        release(engine, model, holder)


@contextmanager
def settings_alias_lock(settings: Settings, model: str, purpose: str) -> Iterator[str]:
    """:func:`alias_lock` on the audit store the settings name (its engine closed afterwards)."""
    from mlops.audit import open_audit_store

    engine = open_audit_store(settings)
    try:
        with alias_lock(engine, model, purpose) as holder:
            yield holder
    finally:
        engine.dispose()
