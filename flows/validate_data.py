"""validate_data: check a batch against its contract, keep valid rows and quarantine, announce."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from mlops.settings import flow_settings
from mlops.validation import ValidationSummary
from tasks.validation import (
    emit_validation_event_task,
    publish_validation_report_task,
    read_batch_task,
    store_snapshots_task,
    validate_batch_task,
)


@flow(name="validate-data", log_prints=True)
def validate_data(source: str, contract: str = "credit_applications") -> ValidationSummary:
    """Validate the batch at ``source`` (local path or s3:// URI, CSV or Parquet).

    Valid rows become a content-addressed snapshot (catalogued for training when the batch is
    accepted); broken rows go to quarantine with their reasons; emits ``mlops.data.validated``
    or ``mlops.data.rejected``.
    """
    settings = flow_settings()
    raw = read_batch_task(source, contract, settings)
    run_name = str(flow_run.get_name() or "validate")
    validated = validate_batch_task(raw, source, contract, settings, run_name)
    summary = store_snapshots_task(validated, settings)
    publish_validation_report_task(summary)
    emit_validation_event_task(summary)
    verdict = "accepted" if summary.accepted else "REJECTED (" + "; ".join(summary.rejection_reasons) + ")"
    print(
        f"{source}: {summary.rows_read} rows read, {summary.rows_valid} valid, "
        f"{summary.rows_quarantined} quarantined -> {verdict}"
    )
    return summary
