"""retrain: the train flow behind cooldown, budget and an idempotency key (event-triggered).

No ``from __future__ import annotations`` here: when this flow is served (``flow.serve()``,
as the integration test and the benchmark do), Prefect 3.9.1 validates the parameters
against a model built without this module's namespace, so string annotations such as
``Literal[...]`` or ``RetrainPolicy`` do not resolve ("RetrainModel is not fully defined").
Real annotation objects always work (a process worker loading the file was fine either way).

Light imports on purpose: a triggered run reports Running only once this module is imported,
and the train flow's modules (XGBoost, scikit-learn, MLflow, Great Expectations) take seconds
to import; they are imported inside the run, and only when it trains.
"""

from typing import Final, Literal

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from mlops.retrain import RetrainPolicy
from mlops.settings import flow_settings
from tasks.retrain import (
    finish_retrain_task,
    plan_retrain_task,
    publish_retrain_summary_task,
    tag_trigger_task,
)

#: Same as mlops.model_spec.DEFAULT_MODEL_NAME (not imported: it loads the evaluation stack).
DEFAULT_MODEL: Final = "credit-risk"


class TrainedVersion(BaseModel):
    """What the train subflow registered (the essentials of flows.train.TrainResult)."""

    version: int
    run_id: str
    verdict: str
    passed: bool
    alias: str | None
    decision_record_uri: str


class RetrainResult(BaseModel):
    """Whether the retrain ran, why (not), and what the train subflow registered when it did."""

    model_name: str
    ran: bool
    reason: str = Field(description="Why it ran, or why it was skipped.")
    key: str = Field(description="Idempotency key: model, spec and snapshot set.")
    severity: str
    event_id: str | None
    event: str | None = None
    trigger_reason: str
    train: TrainedVersion | None = None
    flow_run_id: str | None = None


def _markdown(result: RetrainResult) -> str:
    head = "RETRAINED" if result.ran else "SKIPPED"
    lines = [
        f"# Retrain `{result.model_name}`: {head}",
        "",
        f"- decision: {result.reason}",
        f"- severity: {result.severity}; event: `{result.event or 'none'}` `{result.event_id or 'none (manual)'}`",
        f"- trigger: {result.trigger_reason or 'n/a'}",
        f"- idempotency key: `{result.key}`",
    ]
    if result.train is not None:
        t = result.train
        lines.append(f"- trained version {t.version}: verdict {t.verdict}, alias {t.alias or 'none'}")
    return "\n".join(lines)


@flow(name="retrain", log_prints=True)
def retrain(
    model: str = DEFAULT_MODEL,
    severity: Literal["warn", "act", "manual"] = "manual",
    event_id: str | None = None,
    event: str | None = None,
    reason: str = "",
    force: bool = False,
    policy: RetrainPolicy = RetrainPolicy(),  # noqa: B008 (a frozen pydantic default)
) -> RetrainResult:
    """Retrain ``model`` unless the cooldown, the budget or the idempotency key says not to.

    Triggered by ``mlops.drift.detected`` / ``mlops.performance.degraded`` (parameters templated
    from the event; the new version is tagged with the event's id and name) or started by a
    person (severity ``manual``; ``force`` skips cooldown and budget). A skipped run completes
    and says why. Training runs as the ``train`` subflow; a new version only becomes
    challenger if it passes its gates, and never champion here.
    """
    settings = flow_settings()
    run_id = flow_run.get_id()
    plan = plan_retrain_task(model, severity, event_id, force, policy, settings, run_id)
    result = RetrainResult(
        model_name=model,
        ran=plan.attempt is not None,
        reason=plan.decision.reason,
        key=plan.decision.key,
        severity=severity,
        event_id=event_id,
        event=event,
        trigger_reason=reason,
        flow_run_id=run_id,
    )
    if plan.attempt is None:
        print(f"{model}: retrain skipped: {plan.decision.reason}")
        publish_retrain_summary_task(model, _markdown(result))
        return result

    from flows.train import train
    from mlops.registry import IdenticalModel

    try:
        trained = train(model=model)
    except IdenticalModel as exc:  # nothing new to learn from yet: a skip that says why, not a failure
        finish_retrain_task(
            model, plan.attempt, "completed", settings, verdict="identical", error=exc.message
        )
        result = result.model_copy(update={"ran": False, "reason": f"{exc.message} ({exc.hint})"})
        print(f"{model}: retrain skipped: {result.reason}")
        publish_retrain_summary_task(model, _markdown(result))
        return result
    except Exception as exc:
        finish_retrain_task(
            model, plan.attempt, "failed", settings, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    finish_retrain_task(
        model, plan.attempt, "completed", settings, version=trained.version, verdict=trained.verdict
    )
    if event_id:
        tag_trigger_task(model, trained.version, event_id, event, settings)
    version = TrainedVersion.model_validate(trained.model_dump(include=set(TrainedVersion.model_fields)))
    result = result.model_copy(update={"train": version})
    print(f"{model}: retrained -> version {trained.version} ({trained.verdict}); {plan.decision.reason}")
    publish_retrain_summary_task(model, _markdown(result))
    return result
