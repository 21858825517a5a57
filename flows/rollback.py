"""rollback: the champion alias back to the previous champion, recorded and announced."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.rollback import RollbackResult
from mlops.settings import flow_settings
from tasks.rollback import emit_rolled_back_task, publish_rollback_record_task, rollback_task


@flow(name="rollback", log_prints=True)
def rollback(
    by: str, reason: str, model: str = DEFAULT_MODEL_NAME, to_version: int | None = None
) -> RollbackResult:
    """Move ``model``'s champion back to the previous champion (or ``to_version``, a former one).

    Writes a ``rollback`` record to the audit chain before the alias moves, tags both versions,
    and emits ``mlops.model.rolled_back``. Scorers that resolve the alias per call
    (:class:`mlops.champion_loader.ChampionLoader`) switch on their next call.
    """
    settings = flow_settings()
    result = rollback_task(model, by, reason, to_version, settings, flow_run.get_id())
    publish_rollback_record_task(result)
    emit_rolled_back_task(result)
    print(
        f"{model}: champion rolled back from version {result.from_version} to {result.to_version} "
        f"by {result.record.by} ({result.record.reason})"
    )
    return result
