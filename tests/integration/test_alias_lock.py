"""The model alias lock (mlops.alias_lock) on the audit store's two databases: SQLite and
PostgreSQL (a fresh schema, by search_path and by schema_translate_map)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.alias_lock import AliasLockBusy, alias_lock, current_holder, release, try_acquire
from tests.helpers import postgres_url
from tests.integration.test_audit_postgres import fresh_schema

pytestmark = pytest.mark.integration

MODEL = "credit-risk"


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-translated"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = audit.create_audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
        audit.create_schema(eng)
        yield eng
        eng.dispose()
        return
    with fresh_schema(postgres_url(), translate=request.param.endswith("translated")) as (eng, _schema):
        yield eng


def test_a_held_lock_is_refused_to_others_until_released(engine: Engine) -> None:
    assert try_acquire(engine, MODEL, "a", "promotion p1")
    assert not try_acquire(engine, MODEL, "b", "rollback by bob")
    assert try_acquire(engine, MODEL, "a", "promotion p1")  # its own again (a retry)
    assert try_acquire(engine, "credit-risk-sme", "b", "rollback by bob")  # another model's is free
    release(engine, MODEL, "b")  # not b's: nothing happens
    assert not try_acquire(engine, MODEL, "b", "rollback by bob")
    release(engine, MODEL, "a")
    assert try_acquire(engine, MODEL, "b", "rollback by bob")
    held = current_holder(engine, MODEL)
    assert held is not None and held[:2] == ("b", "rollback by bob")


def test_a_holder_that_died_keeps_the_lock_only_for_its_lease(engine: Engine) -> None:
    assert try_acquire(engine, MODEL, "dead", "promotion p1", lease=0.2)
    assert not try_acquire(engine, MODEL, "b", "promotion p2")
    time.sleep(0.3)
    assert current_holder(engine, MODEL) is None
    assert try_acquire(engine, MODEL, "b", "promotion p2")
    release(engine, MODEL, "dead")  # the late release of the dead holder leaves b's lock alone
    assert not try_acquire(engine, MODEL, "c", "promotion p3")


def test_waiting_past_the_deadline_names_who_holds_the_lock(engine: Engine) -> None:
    assert try_acquire(engine, MODEL, "host:1:abc", "promotion 1234")
    with (
        pytest.raises(AliasLockBusy, match=r"being changed by promotion 1234 \(host:1:abc, since "),
        alias_lock(engine, MODEL, "rollback by bob", wait_seconds=0.5),
    ):
        pytest.fail("the lock was taken while another held it")
    release(engine, MODEL, "host:1:abc")
    with alias_lock(engine, MODEL, "rollback by bob", wait_seconds=0.5) as holder:
        held = current_holder(engine, MODEL)
        assert held is not None and held[:2] == (holder, "rollback by bob")
    assert current_holder(engine, MODEL) is None  # released on the way out


def test_of_many_racing_for_a_free_lock_exactly_one_gets_it(engine: Engine) -> None:
    start = threading.Barrier(6)
    won: list[str] = []

    def race(name: str) -> None:
        start.wait()
        if try_acquire(engine, MODEL, name, f"promotion {name}"):
            won.append(name)

    threads = [threading.Thread(target=race, args=(f"h{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1
