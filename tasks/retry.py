"""The retry condition every task shares (kept light: importing it loads no heavy library)."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from mlops.errors import MlopsError, ServiceUnavailable


def retry_unless_bad_input(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry transient failures (network, S3, an unreachable registry), never our own
    refusals or bad input."""
    try:
        state.result()
    except ServiceUnavailable:
        return True
    except MlopsError:
        return False
    except Exception:
        return True
    return False
