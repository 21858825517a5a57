"""What a person looks at after a monitor run: a markdown summary, a plot, a JSON document.

The per-statistic table is :meth:`mlops.drift.DriftReport.to_table` (a Prefect table
artifact); this module writes the rest. Plots use their own Agg figure (no global backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from mlops.drift import DriftReport
from mlops.monitoring import AlarmEvent, MonitorRun, WindowResult
from mlops.monitoring_shadow import ShadowStatus
from mlops.monitoring_state import EmittedEvent

DPI: Final = 80
_COLOURS: Final = {"ok": "#4c9f70", "warn": "#e0a030", "act": "#c0392b", "insufficient_data": "#999999"}


def _verdict_cell(result: WindowResult) -> str:
    r = result.report
    return (
        f"{r.n_drifting}/{r.n_features} drifting ({r.n_drifting_act} act)"
        if r.sufficient
        else "insufficient data"
    )


def summary_markdown(
    *,
    model: str,
    champion_version: int,
    reference_uri: str,
    run: MonitorRun,
    event: AlarmEvent | None,
    event_id: str | None,
    report_uri: str | None,
    shadow: ShadowStatus | None,
    last_event: EmittedEvent | None = None,
) -> str:
    """Markdown for the Prefect artifact: windows, verdicts, the alarm and where things are."""
    lines = [f"# Drift monitor: `{model}` champion v{champion_version}", ""]
    if event is not None:
        lines += [
            f"**ALARM ({event.severity})**: `{event.event}` for window `{event.window}`; {event.reason}.",
            f"Features: {', '.join(event.features) or '(performance)'}; event id `{event_id}`.",
            "",
        ]
    else:
        lines += ["No alarm: the rule did not fire in this run.", ""]
        if last_event is not None:
            lines += [
                f"Last alarm sent for this champion: `{last_event.event}` ({last_event.severity}) for window "
                f"`{last_event.window}` at {last_event.emitted_at:%Y-%m-%d %H:%M:%S}Z, event id `{last_event.event_id}`.",
                "",
            ]
    if run.windows:
        lines += [
            "| window | rows | features | score | performance | labelled | scores (audit/computed) | alarm |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for w in run.windows:
            lines.append(
                f"| `{w.window_id}` | {w.rows} | {_verdict_cell(w)} | {w.report.prediction_verdict or 'n/a'} "
                f"| {w.report.performance_verdict or 'n/a'} | {w.labelled_rows} "
                f"| {w.score_sources.get('audit', 0)}/{w.score_sources.get('computed', 0)} "
                f"| {w.decision.severity if w.decision.alarm else '-'} |"
            )
        last = run.windows[-1].decision
        lines += ["", f"Alarm rule after the newest window: {last.reason}."]
    else:
        lines.append("No new window since the last run (nothing newer than the reference to judge).")
    if run.waiting_outcomes:
        lines.append(f"{run.waiting_outcomes} outcome snapshot(s) wait for the next window.")
    lines += ["", f"Reference: `{reference_uri}`"]
    if report_uri:
        lines.append(f"Report JSON: `{report_uri}`")
    if shadow is not None:
        lines += [
            "",
            f"Shadow of challenger v{shadow.challenger_version}: {shadow.days}/{shadow.min_days} days, "
            f"{shadow.labelled_rows}/{shadow.min_labelled_rows} labelled rows"
            + (" -> complete" if shadow.complete else ""),
        ]
    return "\n".join(lines)


def report_document(
    *, model: str, champion_version: int, run: MonitorRun, event: AlarmEvent | None
) -> dict[str, Any]:
    """The JSON kept in the object store and MLflow: every window's full report."""
    return {
        "model": model,
        "champion_version": champion_version,
        "event": None if event is None else event.model_dump(mode="json"),
        "windows": [w.model_dump(mode="json") for w in run.windows],
    }


def _worst_by_feature(report: DriftReport) -> list[tuple[str, float, str]]:
    """(feature, value / warn threshold, verdict) of each feature's worst statistic."""
    worst: dict[str, tuple[float, str]] = {}
    for row in [*report.features, *report.prediction]:
        if row.value is None:
            continue
        ratio = row.value / row.threshold if row.threshold else 0.0
        if row.feature not in worst or ratio > worst[row.feature][0]:
            worst[row.feature] = (ratio, row.verdict)
    return sorted(((f, r, v) for f, (r, v) in worst.items()), key=lambda t: t[1])


def plot_window(report: DriftReport, path: Path) -> Path:
    """Bars of each feature's worst statistic relative to its warn threshold (1.0 = warn)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _worst_by_feature(report)
    fig = Figure(figsize=(6.0, max(2.5, 0.25 * len(rows) + 1.2)), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        ax.barh(
            [f for f, _, _ in rows],
            [r for _, r, _ in rows],
            color=[_COLOURS.get(v, "#999999") for _, _, v in rows],
        )
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set(
        xlabel="statistic / warn threshold (worst statistic per feature)", title=f"Drift: {report.window_id}"
    )
    ax.tick_params(axis="y", labelsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    return path
