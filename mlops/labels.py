"""Labelled training rows: validated applications joined with validated outcomes by id.

Both sides come from the catalog of validated snapshots (:mod:`mlops.catalog`). Every row
keeps its lineage: the application snapshot's sha256 and the row number inside it, and the
same for the outcome that labelled it.

Idempotency: snapshots are content-addressed, so ingesting an outcome batch twice adds no
catalog entry; and even when the same outcomes arrive in two different files, each id keeps
one label (the most recently observed; a later correction wins, ties go to the newer
snapshot). Applications seen twice keep their first (oldest) row.

Hook for human reviews: ``extra_labelled`` rows (application columns, the target, and
optionally ``_label_source``) are added after the observed outcomes; an id that already has
an observed outcome keeps the observed outcome (ground truth beats a review).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import pandas as pd
from pydantic import BaseModel

from mlops.catalog import CatalogEntry, list_snapshots, read_entries
from mlops.contracts import Contract
from mlops.errors import InputError, WorkRefused
from mlops.model_spec import ModelSpec, TrainingWindow
from mlops.storage import ObjectStore

# Lineage columns carried by every labelled row (the catalog names the snapshot column).
SNAPSHOT_COLUMN: Final = "_snapshot"
SNAPSHOT_ROW_COLUMN: Final = "_snapshot_row"
OUTCOME_SNAPSHOT_COLUMN: Final = "_outcome_snapshot"
OUTCOME_ROW_COLUMN: Final = "_outcome_row"
LABEL_SOURCE_COLUMN: Final = "_label_source"
LABEL_SOURCE_OUTCOME: Final = "outcome"
LABEL_SOURCE_REVIEW: Final = "review"
LINEAGE_COLUMNS: Final = (
    SNAPSHOT_COLUMN,
    SNAPSHOT_ROW_COLUMN,
    OUTCOME_SNAPSHOT_COLUMN,
    OUTCOME_ROW_COLUMN,
    LABEL_SOURCE_COLUMN,
)


class LabelledSummary(BaseModel):
    """What went into a labelled set (kept in the decision record and the MLflow run)."""

    rows: int
    applications_contract: str
    outcomes_contract: str
    application_contract_versions: list[str]
    outcome_contract_versions: list[str]
    application_snapshots: list[str]
    outcome_snapshots: list[str]
    duplicate_applications: int = 0
    duplicate_outcomes: int = 0
    conflicting_outcomes: int = 0
    unlabelled_applications: int = 0
    extra_labelled_rows: int = 0
    positives: int = 0
    min_timestamp: str | None = None
    max_timestamp: str | None = None


@dataclass
class LabelledSet:
    frame: pd.DataFrame
    summary: LabelledSummary


def with_row_numbers(frame: pd.DataFrame, snapshot_column: str, row_column: str) -> pd.DataFrame:
    """Number rows within each snapshot (``read_entries`` concatenates them in order)."""
    out = frame.copy()
    out[row_column] = out.groupby(snapshot_column, sort=False).cumcount().astype("int64")
    return out


def dedup_applications(applications: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, int]:
    """Keep each id's first row (catalog order = oldest data first)."""
    dupes = applications[id_column].duplicated(keep="first")
    return applications.loc[~dupes], int(dupes.sum())


def dedup_outcomes(
    outcomes: pd.DataFrame, id_column: str, target: str, observed_column: str | None
) -> tuple[pd.DataFrame, int, int]:
    """One outcome per id: the last observed (ties: the later snapshot). Returns (rows, dupes, conflicts)."""
    ordered = outcomes.reset_index(drop=True)
    ordered["_order"] = range(len(ordered))
    keys = [observed_column, "_order"] if observed_column else ["_order"]
    ordered = ordered.sort_values(keys, kind="mergesort")
    dupes = ordered[id_column].duplicated(keep="last")
    conflicts = int((ordered.groupby(id_column, sort=False)[target].nunique() > 1).sum())
    kept = ordered.loc[~dupes].sort_values("_order", kind="mergesort").drop(columns="_order")
    return kept, int(dupes.sum()), conflicts


def join_labels(
    applications: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    id_column: str,
    outcome_id_column: str,
    target: str,
    observed_column: str | None = None,
    timestamp_column: str | None = None,
    extra_labelled: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join application rows (with ``_snapshot``) to outcome rows (with ``_snapshot``) by id.

    Returns the labelled rows sorted by (timestamp, id) and the counts of what was dropped.
    """
    for frame, col, what in (
        (applications, id_column, "applications"),
        (outcomes, outcome_id_column, "outcomes"),
    ):
        if col not in frame.columns:
            raise InputError(f"{what} lack the id column {col!r}")
    if target not in outcomes.columns:
        raise InputError(f"outcomes lack the target column {target!r}")
    apps = with_row_numbers(applications, SNAPSHOT_COLUMN, SNAPSHOT_ROW_COLUMN)
    apps, dup_apps = dedup_applications(apps, id_column)
    outs = with_row_numbers(outcomes, SNAPSHOT_COLUMN, OUTCOME_ROW_COLUMN)
    outs = outs.rename(columns={SNAPSHOT_COLUMN: OUTCOME_SNAPSHOT_COLUMN, outcome_id_column: id_column})
    outs, dup_outs, conflicts = dedup_outcomes(outs, id_column, target, observed_column)
    outs = outs[[id_column, target, OUTCOME_SNAPSHOT_COLUMN, OUTCOME_ROW_COLUMN]]
    labelled = apps.merge(outs, on=id_column, how="inner", validate="one_to_one")
    labelled[LABEL_SOURCE_COLUMN] = LABEL_SOURCE_OUTCOME
    counts = {
        "duplicate_applications": dup_apps,
        "duplicate_outcomes": dup_outs,
        "conflicting_outcomes": conflicts,
        "unlabelled_applications": len(apps) - len(labelled),
        "extra_labelled_rows": 0,
    }
    if extra_labelled is not None and len(extra_labelled):
        extra = _extra_rows(extra_labelled, labelled, id_column=id_column, target=target)
        counts["extra_labelled_rows"] = len(extra)
        labelled = pd.concat([labelled, extra], ignore_index=True)
    labelled[target] = labelled[target].astype("int64")
    keys = [timestamp_column, id_column] if timestamp_column else [id_column]
    return labelled.sort_values(keys, kind="mergesort").reset_index(drop=True), counts


def _extra_rows(extra: pd.DataFrame, labelled: pd.DataFrame, *, id_column: str, target: str) -> pd.DataFrame:
    """Rows labelled elsewhere (resolved human reviews); observed outcomes take precedence."""
    missing = [c for c in (id_column, target) if c not in extra.columns]
    if missing:
        raise InputError(f"extra labelled rows lack column(s) {missing}")
    rows = extra.drop_duplicates(subset=[id_column], keep="last")
    rows = rows.loc[~rows[id_column].isin(labelled[id_column])].copy()
    if LABEL_SOURCE_COLUMN not in rows.columns:
        rows[LABEL_SOURCE_COLUMN] = LABEL_SOURCE_REVIEW
    return rows


def apply_window(
    labelled: pd.DataFrame, window: TrainingWindow, *, timestamp_column: str | None, snapshot_order: list[str]
) -> pd.DataFrame:
    """Keep the newest ``last_snapshots`` application snapshots that have labels and/or the
    newest ``last_days`` of labelled rows (relative to the newest labelled row)."""
    out = labelled
    if window.last_snapshots is not None:
        present = set(out[SNAPSHOT_COLUMN].dropna())
        labelled_snaps = [s for s in snapshot_order if s in present]
        keep = set(labelled_snaps[-window.last_snapshots :])
        out = out.loc[out[SNAPSHOT_COLUMN].isin(keep) | out[SNAPSHOT_COLUMN].isna()]
    if window.last_days is not None and timestamp_column is not None and len(out):
        newest = out[timestamp_column].max()
        out = out.loc[out[timestamp_column] > newest - timedelta(days=window.last_days)]
    return out.reset_index(drop=True)


def _versions(entries: list[CatalogEntry]) -> list[str]:
    return sorted({e.contract_version for e in entries})


def gather_labelled(
    store: ObjectStore,
    spec: ModelSpec,
    applications: Contract,
    outcomes: Contract,
    *,
    extra_labelled: pd.DataFrame | None = None,
) -> LabelledSet:
    """Every validated application with a validated outcome, inside the spec's training window."""
    app_entries = list_snapshots(store, applications.name)
    out_entries = list_snapshots(store, outcomes.name)
    if not app_entries or not out_entries:
        raise WorkRefused(
            f"nothing to train on: {len(app_entries)} validated {applications.name} snapshot(s), "
            f"{len(out_entries)} validated {outcomes.name} snapshot(s)",
            hint="validate application and outcome batches first (mlops validate / mlops outcomes)",
        )
    ts = applications.timestamp_column
    target = spec.target_column
    frame, counts = join_labels(
        read_entries(store, app_entries),
        read_entries(store, out_entries),
        id_column=applications.id_column,
        outcome_id_column=outcomes.id_column,
        target=target,
        observed_column=outcomes.timestamp_column,
        timestamp_column=ts,
        extra_labelled=extra_labelled,
    )
    frame = apply_window(
        frame, spec.training_window, timestamp_column=ts, snapshot_order=[e.sha256 for e in app_entries]
    )
    if len(frame) < spec.training_window.min_rows:
        raise WorkRefused(
            f"only {len(frame)} labelled rows in the training window; the spec needs at least "
            f"{spec.training_window.min_rows}",
            hint="wait for more outcomes, or widen training_window in the model spec",
        )
    used_apps = set(frame[SNAPSHOT_COLUMN].dropna())
    used_outs = set(frame[OUTCOME_SNAPSHOT_COLUMN].dropna())
    summary = LabelledSummary(
        rows=len(frame),
        applications_contract=applications.name,
        outcomes_contract=outcomes.name,
        application_contract_versions=_versions([e for e in app_entries if e.sha256 in used_apps]),
        outcome_contract_versions=_versions([e for e in out_entries if e.sha256 in used_outs]),
        application_snapshots=[e.sha256 for e in app_entries if e.sha256 in used_apps],
        outcome_snapshots=[e.sha256 for e in out_entries if e.sha256 in used_outs],
        positives=int(frame[target].sum()),
        min_timestamp=str(frame[ts].min()) if ts else None,
        max_timestamp=str(frame[ts].max()) if ts else None,
        **counts,
    )
    return LabelledSet(frame=frame, summary=summary)
