"""Process-wide choices of the settings: Arrow's memory pool."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from pydantic import ValidationError

from mlops.settings import Settings, apply_process_settings, flow_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


@pytest.mark.parametrize("pool", ["jemalloc", "system", "mimalloc"])
def test_each_flow_start_sets_the_configured_arrow_pool(monkeypatch: pytest.MonkeyPatch, pool: str) -> None:
    if pool not in pa.supported_memory_backends():
        pytest.skip(f"this pyarrow has no {pool}")
    monkeypatch.setenv("MLOPS_ARROW_MEMORY_POOL", pool)
    pa.set_memory_pool(pa.system_memory_pool() if pool != "system" else pa.mimalloc_memory_pool())
    apply_process_settings(Settings())
    assert pa.default_memory_pool().backend_name == pool


def test_the_default_is_jemalloc_and_arrows_own_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().arrow_memory_pool == "jemalloc"
    pa.set_memory_pool(pa.system_memory_pool())
    assert flow_settings().arrow_memory_pool == "jemalloc"  # what every flow starts with
    assert pa.default_memory_pool().backend_name == "jemalloc"
    pa.set_memory_pool(pa.system_memory_pool())
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    apply_process_settings(Settings())
    assert pa.default_memory_pool().backend_name == "system"


def test_an_unknown_pool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_ARROW_MEMORY_POOL", "tcmalloc")
    with pytest.raises(ValidationError, match="arrow_memory_pool"):
        Settings()
