from __future__ import annotations

# Prefect sets up its console logging when prefect.main is imported: here, at collection, and
# not inside the first flow test's captured stderr, which closes with that test and would make
# every later log line fail (a module of tests that imports no flow would do that).
import prefect.main  # noqa: F401
import pytest


@pytest.fixture(autouse=True)
def _harness(prefect_harness: None) -> None:
    """Every flow test runs against the one session-scoped Prefect test harness."""
