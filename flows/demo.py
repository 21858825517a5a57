"""lifecycle-demo: simulated loan applications through every stage of the pipeline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.monitor import monitor_drift
from flows.promote import promote
from flows.rebuild import rebuild
from flows.reproduce import reproduce
from flows.score_batch import score_batch
from flows.train import train
from flows.validate_data import validate_data
from mlops.audit import open_audit_store, verify_chain
from mlops.settings import flow_settings
from mlops.simulator import SimulationConfig, simulate
from mlops.validation import ValidationSummary

TRAIN_DAYS = 5
SCORE_DAY = TRAIN_DAYS


def _first_prediction_id(settings: Any) -> str | None:
    import sqlalchemy as sa

    engine = open_audit_store(settings)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT record_id FROM audit_records WHERE record_type = 'prediction' ORDER BY seq LIMIT 1"
                )
            ).first()
    finally:
        engine.dispose()
    return str(row[0]) if row else None


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


def _bin(name: str) -> str:
    """The command as installed beside this interpreter (``.venv/bin/mlops``), which the
    shell's PATH may not hold."""
    return str(Path(sys.executable).parent / name)


@flow(name="lifecycle-demo", log_prints=True)
def lifecycle_demo(workdir: str = ".demo", rows_per_day: int = 2500) -> dict[str, Any]:
    """Simulate a week of applications and take them through every stage.

    Days 0-4 are labelled (training), a separate batch has a data-quality incident (rejected),
    day 5 is new business to score: decisions, review routing and the audit trail.
    """
    data_dir = Path(workdir) / "data"
    config = SimulationConfig(scenario="stable", days=SCORE_DAY + 1, rows_per_day=rows_per_day, seed=7)
    simulate(config, data_dir, overwrite=True)
    incident = SimulationConfig(
        scenario="data_quality_incident", days=1, drift_day=0, rows_per_day=rows_per_day, seed=8
    )
    simulate(incident, data_dir / "incident", overwrite=True)
    print(f"Simulated {config.days} days of loan applications and one broken batch into {data_dir}")

    # 1. Data contracts: clean days are accepted, the broken batch is quarantined and rejected.
    rows = []
    for day in range(TRAIN_DAYS):
        summary = validate_data(source=str(data_dir / "applications" / f"day_{day:04d}.csv"))
        rows.append(_row(f"applications day {day}", summary))
    summary = validate_data(source=str(data_dir / "incident" / "applications" / "day_0000.csv"))
    rows.append(_row("broken batch", summary))
    # 2. Delayed outcomes (labels) of the accepted days.
    for day in range(TRAIN_DAYS):
        summary = validate_data(
            source=str(data_dir / "outcomes" / f"day_{day:04d}.csv"), contract="credit_outcomes"
        )
        rows.append(_row(f"outcomes day {day}", summary))
    # 3. Train, evaluate, gate, register; 4. first champion through the recorded bootstrap path.
    trained = train()
    promoted = promote() if trained.passed else None
    settings = flow_settings()
    # 5. Score new business; every prediction is an audit record; 6. verify, reproduce, monitor.
    scored = (
        score_batch(source=str(data_dir / "applications" / f"day_{SCORE_DAY:04d}.csv")) if promoted else None
    )
    engine = open_audit_store(settings)
    try:
        chain = verify_chain(engine)
    finally:
        engine.dispose()
    prediction_id = _first_prediction_id(settings)
    reproduced = reproduce(prediction_id=prediction_id) if prediction_id else None
    # 7. The version retrained from its lineage alone: the registered bits again.
    rebuilt = rebuild(version=trained.version, model=trained.model_name)
    monitored = monitor_drift() if promoted else None

    lines = ["Data validation", _table(rows), "", *_quarantine_lines(rows[TRAIN_DAYS]), ""]
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
    if scored is not None:
        lines += [
            "",
            f"Scoring (day {SCORE_DAY}, new business)",
            f"  {scored.rows_scored} rows scored by champion v{scored.champion_version}: decisions {scored.decisions}",
            f"  routed to human review: {scored.routed_to_review} "
            f"(open cases: MLOPS_HOME={settings.home_dir} {_bin('mlops')} review list)",
            f"  audit records written: {scored.audit_records_written}",
        ]
    lines.append(
        f"  audit chain: {'intact' if chain.ok else 'BROKEN'} ({chain.records_checked} records checked)"
    )
    if reproduced is not None:
        lines.append(
            f"  reproduce {reproduced.record_id}: recorded {reproduced.score_recorded!r}, "
            f"recomputed {reproduced.score_recomputed!r} -> {'identical' if reproduced.reproduced else 'DIFFERENT'}"
        )
    lines.append(
        f"  rebuild of v{rebuilt.version} from its lineage ({rebuilt.training_rows_rebuilt} training rows): "
        + (
            "identical model"
            if rebuilt.identical and rebuilt.rows_match
            else "DIFFERENT: " + "; ".join(rebuilt.likely_causes)
        )
    )
    if monitored is not None:
        lines += ["", "Monitoring", f"  {monitored.message}"]
    lines += [
        "",
        f"State: {settings.home_dir}",
        f"MLflow: {_bin('mlflow')} ui --backend-store-uri {settings.resolved_mlflow_tracking_uri}",
    ]
    report = "\n".join(lines)
    # In the Prefect UI as the run's artifact; the terminal gets it once, from the CLI.
    create_markdown_artifact(f"```\n{report}\n```", key="lifecycle-demo", description="What the demo did")
    return {
        "batches": rows,
        "train": trained.model_dump(mode="json"),
        "champion_version": promoted.champion_version if promoted else None,
        "score": scored.model_dump(mode="json") if scored else None,
        "audit_chain_ok": chain.ok,
        "reproduced": reproduced.reproduced if reproduced else None,
        "rebuilt_identical": rebuilt.identical and rebuilt.rows_match,
        "monitor": monitored.model_dump(mode="json") if monitored else None,
        "report": report,
    }
