from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _harness(prefect_harness: None) -> None:
    """Every flow test runs against the one session-scoped Prefect test harness."""
