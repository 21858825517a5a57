"""Tasks of the data-validation stage: read, validate, store, report, announce."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlops.batch_io import read_batch
from mlops.catalog import CatalogEntry, record_snapshot, record_validation
from mlops.constants import (
    EVENT_DATA_REJECTED,
    EVENT_DATA_VALIDATED,
    KIND_QUARANTINE,
    KIND_VALID,
    dataset_resource,
)
from mlops.contracts import load_contract
from mlops.events import emit
from mlops.gx_suite import GXRunner, data_docs_dir
from mlops.settings import Settings, ensure_home
from mlops.storage import make_store, write_snapshot
from mlops.validation import ValidatedBatch, ValidationSummary, validate_frame
from tasks.retry import retry_unless_bad_input


@task(
    name="read-batch",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def read_batch_task(source: str, contract_name: str, settings: Settings) -> pd.DataFrame:
    """The raw batch; the contract's text columns are read as the text they hold."""
    contract = load_contract(settings.contracts_dir, contract_name)
    make_store(settings).check_access()  # a store that refuses the writes: said before validating
    return read_batch(source, s3_endpoint_url=settings.s3_endpoint_url, text_columns=contract.text_columns)


@task(name="validate-batch", cache_policy=NO_CACHE)
def validate_batch_task(
    raw: pd.DataFrame, source: str, contract_name: str, settings: Settings, run_name: str
) -> ValidatedBatch:
    contract = load_contract(settings.contracts_dir, contract_name)
    ensure_home(settings)  # the Data Docs go under MLOPS_HOME in every profile
    runner = GXRunner(docs_dir=data_docs_dir(settings.reports_dir, run_name))
    share = settings.max_quarantine_share
    validated = validate_frame(raw, contract, runner, source=source, max_share=share, run_name=run_name)
    pages = [p for p in runner.docs_pages() if run_name in str(p)] or runner.docs_pages()
    if pages:
        validated.summary.data_docs = str(pages[-1])
    return validated


@task(
    name="store-snapshots",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def store_snapshots_task(validated: ValidatedBatch, settings: Settings) -> ValidationSummary:
    """Write the valid snapshot and the quarantine file; catalog the snapshot if accepted."""
    summary = validated.summary.model_copy()
    store = make_store(settings)
    dataset = summary.contract
    if len(validated.valid):
        ref = write_snapshot(store, validated.valid, dataset=dataset, kind=KIND_VALID)
        summary.snapshot_sha256, summary.snapshot_uri = ref.sha256, ref.uri
        if summary.accepted:
            contract = load_contract(settings.contracts_dir, dataset)
            ts = contract.timestamp_column
            record_snapshot(
                store,
                CatalogEntry(
                    dataset=dataset,
                    contract_version=summary.contract_version,
                    sha256=ref.sha256,
                    uri=ref.uri,
                    rows=ref.rows,
                    source=summary.source,
                    ingested_at=datetime.now(UTC),
                    min_timestamp=validated.valid[ts].min() if ts else None,
                    max_timestamp=validated.valid[ts].max() if ts else None,
                ),
            )
    if len(validated.quarantine):
        qref = write_snapshot(store, validated.quarantine, dataset=dataset, kind=KIND_QUARANTINE)
        summary.quarantine_sha256, summary.quarantine_uri = qref.sha256, qref.uri
    summary.record_uri = record_validation(store, summary)  # accepted or not: the batch's record
    return summary


def _markdown(summary: ValidationSummary) -> str:
    verdict = "ACCEPTED" if summary.accepted else "REJECTED"
    lines = [
        f"# Batch {verdict}: `{Path(summary.source).name}`",
        "",
        f"Contract **{summary.contract}@{summary.contract_version}**, source `{summary.source}`",
        "",
        "| rows read | valid | quarantined | share | limit | GX |",
        "|---|---|---|---|---|---|",
        f"| {summary.rows_read} | {summary.rows_valid} | {summary.rows_quarantined} "
        f"| {summary.quarantined_share:.2%} | {summary.max_quarantine_share:.2%} "
        f"| {'pass' if summary.gx_success else 'fail'} |",
        "",
    ]
    if summary.rejection_reasons:
        lines += ["**Why rejected:** " + "; ".join(summary.rejection_reasons), ""]
    if summary.reason_counts:
        lines += ["| quarantine reason | rows |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in summary.reason_counts.items()]
        lines.append("")
    if summary.snapshot_uri:
        lines.append(f"Snapshot: `{summary.snapshot_uri}`")
    if summary.quarantine_uri:
        lines.append(f"Quarantine: `{summary.quarantine_uri}`")
    if summary.record_uri:
        lines.append(f"Validation record: `{summary.record_uri}`")
    if summary.data_docs:
        lines.append(f"GX Data Docs: `{summary.data_docs}`")
    return "\n".join(lines)


@task(name="publish-validation-report", cache_policy=NO_CACHE)
def publish_validation_report_task(summary: ValidationSummary) -> None:
    key = f"validation-{summary.contract.replace('_', '-')}"
    create_markdown_artifact(key=key, markdown=_markdown(summary), description="Batch validation summary")
    rows = [
        {
            "expectation": o.expectation,
            "column": o.column or "",
            "unexpected_count": o.unexpected_count,
            "unexpected_percent": round(o.unexpected_percent or 0.0, 4),
            "error": o.error or "",
        }
        for o in summary.failed_expectations
    ]
    create_table_artifact(
        key=f"{key}-failed-expectations",
        table=rows or [{"expectation": "(none failed)", "column": "", "unexpected_count": 0}],
        description=f"Failed GX expectations of {summary.source}",
    )


@task(name="emit-validation-event", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def emit_validation_event_task(summary: ValidationSummary) -> str | None:
    payload = summary.model_dump(
        mode="json",
        include={
            "contract",
            "contract_version",
            "source",
            "rows_read",
            "rows_valid",
            "rows_quarantined",
            "quarantined_share",
            "accepted",
            "snapshot_sha256",
            "snapshot_uri",
            "quarantine_uri",
            "record_uri",
        },
    )
    payload["failed_expectations"] = len(summary.failed_expectations)
    event = EVENT_DATA_VALIDATED if summary.accepted else EVENT_DATA_REJECTED
    return emit(event, dataset_resource(summary.contract), payload)
