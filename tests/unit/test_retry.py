"""Which task failures Prefect retries: transient ones, never refusals or bad input."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from mlops.errors import InputError, WorkRefused
from mlops.registry import RegistryUnavailable
from mlops.scoring import BatchAlreadyScored
from tasks.retry import retry_unless_bad_input


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RegistryUnavailable("the MLflow registry could not be read"), True),  # the server may come back
        (OSError("connection reset"), True),
        (WorkRefused("no model named 'x' is registered"), False),
        (BatchAlreadyScored("already scored"), False),
        (InputError("missing column"), False),
    ],
)
def test_transient_failures_are_retried_refusals_are_not(error: Exception, retried: bool) -> None:
    assert retry_unless_bad_input(None, None, Failed(data=error)) is retried  # type: ignore[arg-type]
