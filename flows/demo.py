"""lifecycle-demo: simulated loan applications through every stage of the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.promote import promote
from flows.train import train
from flows.validate_data import validate_data
from mlops.settings import get_settings
from mlops.simulator import SimulationConfig, simulate
from mlops.validation import ValidationSummary

INCIDENT_DAY = 5


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'batch':<24} {'read':>6} {'valid':>6} {'quarantined':>11}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['batch']:<24} {r['rows_read']:>6} {r['rows_valid']:>6} {r['rows_quarantined']:>11}  {r['verdict']}"
        )
    return "\n".join(lines)


def _row(name: str, summary: ValidationSummary) -> dict[str, Any]:
    verdict = "accepted" if summary.accepted else "REJECTED: " + "; ".join(summary.rejection_reasons)
    return {
        "batch": name,
        "rows_read": summary.rows_read,
        "rows_valid": summary.rows_valid,
        "rows_quarantined": summary.rows_quarantined,
        "verdict": verdict,
        "reasons": summary.reason_counts,
        "quarantine": summary.quarantine_uri,
        "snapshot": summary.snapshot_uri,
        "data_docs": summary.data_docs,
    }


def _quarantine_lines(broken: dict[str, Any]) -> list[str]:
    kinds: dict[str, int] = {}
    for reason, count in broken["reasons"].items():
        kind = reason.split(":", 1)[1]
        kinds[kind] = kinds.get(kind, 0) + count
    return [
        "Why rows of the broken batch were quarantined:",
        *(f"  {kind:<16} {count}" for kind, count in sorted(kinds.items())),
        f"Quarantined rows (raw values + reasons): {broken['quarantine']}",
        f"GX Data Docs: {broken['data_docs']}",
    ]


@flow(name="lifecycle-demo", log_prints=True)
def lifecycle_demo(workdir: str = ".demo", rows_per_day: int = 2500) -> dict[str, Any]:
    """Simulate six days (a data-quality incident on the last), validate, label, train, promote."""
    data_dir = Path(workdir) / "data"
    config = SimulationConfig(
        scenario="data_quality_incident",
        days=INCIDENT_DAY + 1,
        drift_day=INCIDENT_DAY,
        rows_per_day=rows_per_day,
        seed=7,
    )
    simulate(config, data_dir, overwrite=True)
    print(
        f"Simulated {config.days} days of loan applications into {data_dir} (incident on day {INCIDENT_DAY})"
    )

    # 1. Data contracts: clean days are accepted, the incident day is quarantined and rejected.
    rows = []
    for day in range(config.days):
        summary = validate_data(source=str(data_dir / "applications" / f"day_{day:04d}.csv"))
        rows.append(_row(f"applications day {day}", summary))
    # 2. Delayed outcomes (labels) of the accepted days.
    for day in range(INCIDENT_DAY):
        summary = validate_data(
            source=str(data_dir / "outcomes" / f"day_{day:04d}.csv"), contract="credit_outcomes"
        )
        rows.append(_row(f"outcomes day {day}", summary))
    # 3. Train, evaluate, gate, register; 4. first champion through the recorded bootstrap path.
    trained = train()
    promoted = promote() if trained.passed else None

    settings = get_settings()
    lines = ["Data validation", _table(rows), "", *_quarantine_lines(rows[INCIDENT_DAY]), ""]
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(trained.metrics.items()))
    lines += [
        "Training",
        f"  {trained.model_name} v{trained.version}: {trained.training_rows} training rows, "
        f"{trained.evaluation_rows} evaluation rows (newest)",
        f"  {metrics}",
        f"  gates: verdict {trained.verdict}"
        + (f" — failures: {trained.failures}" if trained.failures else ""),
        f"  decision record: {trained.decision_record_uri}",
    ]
    if promoted is not None:
        lines.append(
            f"  champion: version {promoted.champion_version} (recorded bootstrap: no earlier champion)"
        )
    lines += [
        "",
        f"State: {settings.home_dir}",
        f"MLflow: mlflow ui --backend-store-uri {settings.resolved_mlflow_tracking_uri}",
    ]
    report = "\n".join(lines)
    print(report)
    return {
        "batches": rows,
        "train": trained.model_dump(mode="json"),
        "champion_version": promoted.champion_version if promoted else None,
        "report": report,
    }
