"""lifecycle-demo: simulate loan applications, then run them through the pipeline stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.validate_data import validate_data
from mlops.simulator import SimulationConfig, simulate


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'batch':<28} {'read':>6} {'valid':>6} {'quarantined':>11}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['batch']:<28} {r['rows_read']:>6} {r['rows_valid']:>6} {r['rows_quarantined']:>11}  {r['verdict']}"
        )
    return "\n".join(lines)


@flow(name="lifecycle-demo", log_prints=True)
def lifecycle_demo(workdir: str = ".demo", rows_per_day: int = 2000) -> dict[str, Any]:
    """Simulate a few days where the last one has a data-quality incident, and validate them."""
    data_dir = Path(workdir) / "data"
    config = SimulationConfig(
        scenario="data_quality_incident", days=4, drift_day=3, rows_per_day=rows_per_day, seed=7
    )
    manifest = simulate(config, data_dir, overwrite=True)
    print(f"Simulated {config.days} days of loan applications into {data_dir} (incident from day 3)")

    rows: list[dict[str, Any]] = []
    for day in (0, 3):
        path = data_dir / "applications" / f"day_{day:04d}.csv"
        summary = validate_data(source=str(path))
        verdict = "accepted" if summary.accepted else "REJECTED: " + "; ".join(summary.rejection_reasons)
        rows.append(
            {
                "batch": f"applications day {day}",
                "rows_read": summary.rows_read,
                "rows_valid": summary.rows_valid,
                "rows_quarantined": summary.rows_quarantined,
                "verdict": verdict,
                "reasons": summary.reason_counts,
                "quarantine": summary.quarantine_uri,
                "snapshot": summary.snapshot_uri,
                "data_docs": summary.data_docs,
            }
        )
    broken = rows[-1]
    kinds: dict[str, int] = {}
    for reason, count in broken["reasons"].items():
        kind = reason.split(":", 1)[1]
        kinds[kind] = kinds.get(kind, 0) + count
    report = "\n".join(
        [
            "Data validation",
            _table(rows),
            "",
            "Why rows of the broken batch were quarantined:",
            *(f"  {kind:<16} {count}" for kind, count in sorted(kinds.items())),
            f"Quarantined rows (raw values + reasons): {broken['quarantine']}",
            f"GX Data Docs: {broken['data_docs']}",
        ]
    )
    print(report)
    return {
        "simulation": {"scenario": manifest.scenario, "days": config.days},
        "batches": rows,
        "report": report,
    }
