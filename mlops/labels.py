"""Labelled training rows: validated applications joined with validated outcomes by id.

Both sides come from the catalog of validated snapshots (:mod:`mlops.catalog`). Every row
keeps its lineage: the application snapshot's sha256 and the row number inside it, and the
same for the outcome that labelled it.

Idempotency: snapshots are content-addressed, so ingesting an outcome batch twice adds no
catalog entry; and even when the same outcomes arrive in two different files, each id keeps
one label (the most recently observed; a later correction wins, ties go to the newer
snapshot). Applications seen twice keep their first (oldest) row.

An outcome observed before its application was submitted is not used (counted as
``outcomes_before_application``): no real outcome can precede its application.

Hook for human reviews: ``extra_labelled`` rows (application columns, the target, and
optionally ``_label_source``) are added after the observed outcomes; an id that already has
an observed outcome keeps the observed outcome (ground truth beats a review).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel

from mlops.catalog import SNAPSHOT_COLUMN as CATALOG_SNAPSHOT_COLUMN
from mlops.catalog import (
    CatalogEntry,
    entry_key,
    in_ingestion_order,
    list_snapshots,
    read_entries,
    read_entry,
)
from mlops.contracts import Contract
from mlops.errors import InputError, StorageIntegrityError, WorkRefused
from mlops.model_spec import ModelSpec, TrainingWindow
from mlops.storage import ObjectMissing, ObjectStore

# Lineage columns carried by every labelled row (the catalog names the snapshot column).
SNAPSHOT_COLUMN: Final = CATALOG_SNAPSHOT_COLUMN
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
    #: Outcomes observed before their application was submitted (a data error): not used.
    outcomes_before_application: int = 0
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
    out = frame.copy(deep=False)
    out[row_column] = out.groupby(snapshot_column, sort=False).cumcount().astype("int64")
    return out


def dedup_applications(applications: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, int]:
    """Keep each id's first row (catalog order = oldest data first)."""
    dupes = applications[id_column].duplicated(keep="first")
    return applications.loc[~dupes], int(dupes.sum())


def dedup_outcomes(
    outcomes: pd.DataFrame, id_column: str, target: str, observed_column: str | None
) -> tuple[pd.DataFrame, int, int]:
    """One outcome per id: the last observed (ties: the later row; the readers pass snapshots in
    ingestion order, so the batch ingested last). Returns (rows, dupes, conflicts).

    With every id once (the usual case) there is nothing to choose: the rows come back as they are.
    """
    if not outcomes[id_column].duplicated().any():
        return outcomes.reset_index(drop=True), 0, 0
    ordered = outcomes.reset_index(drop=True)
    ordered["_order"] = range(len(ordered))
    keys = [observed_column, "_order"] if observed_column else ["_order"]
    ordered = ordered.sort_values(keys, kind="mergesort")
    dupes = ordered[id_column].duplicated(keep="last")
    conflicts = int((ordered.groupby(id_column, sort=False)[target].nunique() > 1).sum())
    kept = ordered.loc[~dupes].sort_values("_order", kind="mergesort").drop(columns="_order")
    return kept, int(dupes.sum()), conflicts


def _non_decreasing(frame: pd.DataFrame, keys: list[str]) -> bool:
    """True if the rows are already in ``sort_values(keys)`` order (vectorised; any NA -> False)."""
    if len(frame) < 2:
        return True
    undecided = np.ones(len(frame) - 1, dtype=bool)  # pairs whose earlier keys are all equal
    for key in keys:
        column = frame[key]
        if column.isna().any():
            return False  # pandas places missing values; let it sort
        values = column.array
        try:
            less = np.asarray(values[:-1] < values[1:], dtype=bool)
            equal = np.asarray(values[:-1] == values[1:], dtype=bool)
        except (TypeError, ValueError):
            return False
        if (undecided & ~less & ~equal).any():
            return False
        undecided &= equal
        if not undecided.any():
            return True
    return True


def sort_order(frame: pd.DataFrame, keys: list[str]) -> npt.NDArray[np.intp] | None:
    """Positions of ``frame.sort_values(keys, kind="mergesort")``, or None when already in order.

    Batches arrive in time order, so the common case costs one vectorised pass, not a sort.
    """
    if _non_decreasing(frame, keys):
        return None
    ordered = frame[keys].reset_index(drop=True).sort_values(keys, kind="mergesort")
    return ordered.index.to_numpy(dtype=np.intp)


def sort_rows(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame.sort_values(keys, kind="mergesort").reset_index(drop=True)``, skipping a sorted frame."""
    order = sort_order(frame, keys)
    out = frame if order is None else frame.take(order)
    return out.reset_index(drop=True)


def _id_codes(
    applications: pd.Series, outcomes: pd.Series
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], int]:
    """Both id columns as integer codes of one factorisation (the strings are hashed once).

    Missing ids get a code of their own, as ``merge`` / ``duplicated`` treat them as equal."""
    codes, uniques = pd.factorize(
        pd.concat([applications, outcomes], ignore_index=True), use_na_sentinel=False
    )
    codes = codes.astype(np.intp, copy=False)
    return codes[: len(applications)], codes[len(applications) :], len(uniques)


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
    Row numbers inside snapshots (``_snapshot_row`` / ``_outcome_row``) are computed unless the
    frames already carry them (:func:`mlops.catalog.read_entries` with ``row_column``).

    The ids are factorised once and deduplicated / joined as integer codes; the application
    columns are gathered with one ``take`` in the final (timestamp, id) order.
    """
    for frame, col, what in (
        (applications, id_column, "applications"),
        (outcomes, outcome_id_column, "outcomes"),
    ):
        if col not in frame.columns:
            raise InputError(f"{what} lack the id column {col!r}")
    if target not in outcomes.columns:
        raise InputError(f"outcomes lack the target column {target!r}")
    apps = applications
    if SNAPSHOT_ROW_COLUMN not in apps.columns:
        apps = with_row_numbers(apps, SNAPSHOT_COLUMN, SNAPSHOT_ROW_COLUMN)
    outs = outcomes
    if OUTCOME_ROW_COLUMN not in outs.columns:
        outs = with_row_numbers(outs, SNAPSHOT_COLUMN, OUTCOME_ROW_COLUMN)
    app_codes, out_codes, n_ids = _id_codes(apps[id_column], outs[outcome_id_column])
    # Applications: each id's first row.
    first = ~pd.Series(app_codes).duplicated(keep="first").to_numpy()
    dup_apps = int((~first).sum())
    # Outcomes: each id's last observed row (on a small frame of codes, not the id strings).
    keyed = pd.DataFrame(
        {
            "_key": out_codes,
            target: outs[target].to_numpy(),
            OUTCOME_SNAPSHOT_COLUMN: outs[SNAPSHOT_COLUMN].array,
            OUTCOME_ROW_COLUMN: outs[OUTCOME_ROW_COLUMN].to_numpy(),
        }
    )
    if observed_column:
        keyed[observed_column] = outs[observed_column].array
    kept, dup_outs, conflicts = dedup_outcomes(keyed, "_key", target, observed_column)
    # Inner join by code: position of each id's kept outcome (-1: unlabelled).
    outcome_at = np.full(n_ids, -1, dtype=np.intp)
    outcome_at[kept["_key"].to_numpy()] = np.arange(len(kept), dtype=np.intp)
    match = np.where(first, outcome_at[app_codes], -1)
    rows = np.flatnonzero(match >= 0)
    labels = kept.iloc[match[rows]]
    early = 0
    if observed_column and timestamp_column:
        before = observed_before(labels[observed_column], apps[timestamp_column].take(rows))
        if before.any():
            early = int(before.sum())
            rows, labels = rows[~before], labels.iloc[~before]
    n_labelled = len(rows)
    keys = [timestamp_column, id_column] if timestamp_column else [id_column]
    if extra_labelled is None or not len(extra_labelled):
        order = sort_order(apps.iloc[rows][keys], keys)
        if order is not None:
            rows, labels = rows[order], labels.iloc[order]
    every_row_in_order = n_labelled == len(apps) and bool((rows == np.arange(len(apps))).all())
    labelled = (apps if every_row_in_order else apps.take(rows)).reset_index(drop=True)
    labelled[target] = labels[target].to_numpy()
    labelled[OUTCOME_SNAPSHOT_COLUMN] = labels[OUTCOME_SNAPSHOT_COLUMN].array
    labelled[OUTCOME_ROW_COLUMN] = labels[OUTCOME_ROW_COLUMN].to_numpy()
    labelled[LABEL_SOURCE_COLUMN] = LABEL_SOURCE_OUTCOME
    counts = {
        "duplicate_applications": dup_apps,
        "duplicate_outcomes": dup_outs,
        "conflicting_outcomes": conflicts,
        "unlabelled_applications": int(first.sum()) - n_labelled - early,
        "outcomes_before_application": early,
        "extra_labelled_rows": 0,
    }
    if extra_labelled is not None and len(extra_labelled):
        extra = _extra_rows(extra_labelled, labelled, id_column=id_column, target=target)
        counts["extra_labelled_rows"] = len(extra)
        labelled = sort_rows(pd.concat([labelled, extra], ignore_index=True), keys)
    labelled[target] = labelled[target].astype("int64")
    return labelled, counts


def observed_before(observed: pd.Series, applied: pd.Series) -> npt.NDArray[np.bool_]:
    """Position by position: the outcome was observed before its application was submitted,
    which no real outcome can be (a clock or join-key error upstream). Training, promotion's
    shadow comparison and the monitor's late labels leave such outcomes out. Missing times
    compare False; times given as text, or of two kinds, are not compared (all False)."""
    if pd.api.types.is_string_dtype(observed.dtype) or pd.api.types.is_string_dtype(applied.dtype):
        return np.zeros(len(observed), dtype=bool)  # times as text compare as text: no check
    try:
        before = pd.Series(observed.array) < pd.Series(applied.array)
    except TypeError:  # times of two kinds (a contract's timestamp that is not a datetime): no check
        return np.zeros(len(observed), dtype=bool)
    return np.asarray(before.fillna(False).to_numpy(), dtype=bool)


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
        present = _distinct(out[SNAPSHOT_COLUMN])
        labelled_snaps = [s for s in snapshot_order if s in present]
        keep = set(labelled_snaps[-window.last_snapshots :])
        out = _keep(out, out[SNAPSHOT_COLUMN].isin(keep) | out[SNAPSHOT_COLUMN].isna())
    if window.last_days is not None and timestamp_column is not None and len(out):
        newest = out[timestamp_column].max()
        out = _keep(out, out[timestamp_column] > newest - timedelta(days=window.last_days))
    return out.reset_index(drop=True)


def _keep(frame: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    """``frame.loc[mask]`` without copying every column when every row is kept."""
    return frame if bool(mask.all()) else frame.loc[mask]


def _distinct(column: pd.Series) -> set[str]:
    """The distinct non-missing values (vectorised ``set(column.dropna())``)."""
    return set(column.dropna().unique().tolist())


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
    return labelled_from_entries(
        store, spec, applications, outcomes, app_entries, out_entries, extra_labelled=extra_labelled
    )


def catalogued_entries(
    store: ObjectStore, dataset: str, sha256s: list[str], *, named_by: str
) -> list[CatalogEntry]:
    """The catalog entries of ``sha256s`` (in that order); a snapshot the catalog does not hold
    is a :class:`~mlops.errors.StorageIntegrityError` naming ``named_by`` (who listed it)."""
    entries = []
    for sha in sha256s:
        key = entry_key(dataset, sha)
        try:
            entries.append(read_entry(store, key))  # one request: a missing entry says so itself
        except ObjectMissing as exc:
            raise StorageIntegrityError(
                f"{dataset} snapshot {sha}, named by {named_by}, is not in the catalog of {store.uri(key)}",
                hint="restore the snapshot and its catalog entry from a backup (snapshots are never "
                "deleted by mlops)",
            ) from exc
    return entries


def labelled_from_entries(
    store: ObjectStore,
    spec: ModelSpec,
    applications: Contract,
    outcomes: Contract,
    app_entries: list[CatalogEntry],
    out_entries: list[CatalogEntry],
    *,
    extra_labelled: pd.DataFrame | None = None,
) -> LabelledSet:
    """:func:`gather_labelled` on the given snapshots: ``app_entries`` in catalog order (oldest
    data first), outcomes read in ingestion order whatever order they come in."""
    ts = applications.timestamp_column
    target = spec.target_column
    frame, counts = join_labels(
        read_entries(store, app_entries, row_column=SNAPSHOT_ROW_COLUMN),
        # Ties between equal observation times go to the batch ingested last (a correction).
        read_entries(store, in_ingestion_order(out_entries), row_column=OUTCOME_ROW_COLUMN),
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
    used_apps = _distinct(frame[SNAPSHOT_COLUMN])
    used_outs = _distinct(frame[OUTCOME_SNAPSHOT_COLUMN])
    summary = LabelledSummary(
        rows=len(frame),
        applications_contract=applications.name,
        outcomes_contract=outcomes.name,
        application_contract_versions=_versions([e for e in app_entries if e.sha256 in used_apps]),
        outcome_contract_versions=_versions([e for e in out_entries if e.sha256 in used_outs]),
        application_snapshots=[e.sha256 for e in app_entries if e.sha256 in used_apps],
        # In the order they were read (ingestion): whoever rebuilds the labels from the lineage
        # tag reads them so, and breaks ties between equal observation times the same way.
        outcome_snapshots=[e.sha256 for e in in_ingestion_order(out_entries) if e.sha256 in used_outs],
        positives=int(frame[target].sum()),
        min_timestamp=str(frame[ts].min()) if ts else None,
        max_timestamp=str(frame[ts].max()) if ts else None,
        **counts,
    )
    return LabelledSet(frame=frame, summary=summary)
