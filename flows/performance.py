"""measure_performance: outcomes meet predictions; performance per model version and role."""

from __future__ import annotations

from prefect import flow

from mlops.contracts import load_contract
from mlops.model_spec import DEFAULT_MODEL_NAME, load_model_spec
from mlops.performance import PerformanceReport
from mlops.settings import flow_settings
from tasks.performance import join_outcomes_task, publish_performance_task


@flow(name="measure-performance", log_prints=True)
def measure_performance(model: str = DEFAULT_MODEL_NAME) -> PerformanceReport:
    """Join the validated outcomes of ``model``'s outcomes contract to its prediction records
    (by keyed entity), store the matches idempotently and publish the metrics table."""
    settings = flow_settings()
    spec = load_model_spec(model, contracts_dir=settings.contracts_dir)
    outcomes = load_contract(settings.contracts_dir, spec.outcomes_contract)
    applications = load_contract(settings.contracts_dir, spec.applications_contract)
    report = join_outcomes_task(outcomes, applications, model, settings)
    publish_performance_task(report)
    j = report.join
    print(
        f"{model}: {j.outcome_ids} outcome ids, {j.matched_outcomes} matched to "
        f"{j.matched_predictions} predictions, {j.unmatched_outcomes} unmatched; "
        f"{j.inserted} new, {j.updated} corrected, {j.unchanged} unchanged"
        + (
            f"; {j.outcomes_before_application} left out (outcome observed before the application)"
            if j.outcomes_before_application
            else ""
        )
    )
    return report
