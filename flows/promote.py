"""promote: first form. With no champion, the passing challenger becomes champion as a recorded
bootstrap; with a champion present, refuse (shadow-based promotion comes in a later release)."""

from __future__ import annotations

import getpass

from prefect import flow
from prefect.runtime import flow_run

from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.promotion import PromotionResult
from mlops.settings import get_settings
from tasks.promotion import bootstrap_champion_task, emit_promoted_task, publish_promotion_record_task


def _default_approver() -> str:
    try:
        return f"{getpass.getuser()} (no --approver given)"
    except (KeyError, OSError):
        return "unknown (no --approver given)"


@flow(name="promote", log_prints=True)
def promote(model: str = DEFAULT_MODEL_NAME, approver: str | None = None) -> PromotionResult:
    """Promote ``model``'s challenger to champion (bootstrap only); raises WorkRefused otherwise."""
    settings = get_settings()
    who = approver or _default_approver()
    result = bootstrap_champion_task(model, who, settings, flow_run.get_id())
    publish_promotion_record_task(result)
    emit_promoted_task(result)
    if result.promoted:
        print(f"{model}: version {result.champion_version} is champion (bootstrap, approved by {who})")
    else:
        print(f"{model}: version {result.champion_version} already was champion; challenger alias cleared")
    return result
