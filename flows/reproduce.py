"""reproduce: recompute a past prediction from its audit record and compare bit for bit."""

from __future__ import annotations

from prefect import flow

from mlops.reproduce import ReproduceResult, reproduce_text
from mlops.settings import flow_settings
from tasks.scoring import reproduce_prediction_task


@flow(name="reproduce", log_prints=True)
def reproduce(prediction_id: str) -> ReproduceResult:
    """Reload the exact model version and input row of prediction ``prediction_id`` and score it
    again; ``reproduced`` is True when the input hash matches and the score is bit-identical."""
    settings = flow_settings()
    result = reproduce_prediction_task(prediction_id, settings)
    print(reproduce_text(result))
    return result
