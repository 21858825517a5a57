"""The feedback loop: resolved review cases become labelled rows for the next training run.

Each resolved case points (through its prediction's audit record) at the row that was scored:
``input_snapshot`` (sha256 of a validated application snapshot) and ``input_row`` (0-based row
number in it). That row is read back from the snapshot (its hash is checked), and labelled with
the reviewer's decision (``decline`` -> 1, ``approve`` -> 0, :data:`mlops.audit.LABEL_BY_DECISION`).

The result has the shape :func:`mlops.labels.join_labels` takes as ``extra_labelled``: the
application columns as stored in the snapshot, the target column, and the lineage columns
``_snapshot``, ``_snapshot_row`` and ``_label_source`` (= ``"review"``), plus provenance
``_reviewer``, ``_review_case_id`` and ``_review_record_id``. ``join_labels`` keeps an observed
outcome over a review for the same id.

Cases that cannot become a row are not dropped silently: each is listed in the summary with
why (snapshot missing, row outside the snapshot, the row's id does not key to the prediction's
entity key). A snapshot whose bytes no longer match its hash raises
:class:`~mlops.errors.StorageIntegrityError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.constants import KIND_VALID
from mlops.contracts import Contract
from mlops.errors import InputError, StorageIntegrityError
from mlops.labels import LABEL_SOURCE_COLUMN, LABEL_SOURCE_REVIEW, SNAPSHOT_COLUMN, SNAPSHOT_ROW_COLUMN
from mlops.lineage import ReviewLabel, by_snapshot
from mlops.storage import ObjectStore, RowsOutside, read_snapshot

REVIEWER_COLUMN: Final = "_reviewer"
REVIEW_CASE_COLUMN: Final = "_review_case_id"
REVIEW_RECORD_COLUMN: Final = "_review_record_id"
PROVENANCE_COLUMNS: Final = (REVIEWER_COLUMN, REVIEW_CASE_COLUMN, REVIEW_RECORD_COLUMN)


class SkippedCase(BaseModel):
    """A resolved case that gave no training row, and why."""

    case_id: str
    reason: str


class FeedbackSummary(BaseModel):
    """What the review feedback contributed (log it beside the labelled-set summary)."""

    resolved_cases: int
    rows: int
    positives: int
    superseded_reviews: int  # older reviews of an id reviewed again later
    snapshots: list[str]
    skipped: list[SkippedCase]


@dataclass
class FeedbackSet:
    frame: pd.DataFrame
    summary: FeedbackSummary


def review_labelled_rows(
    engine: Engine,
    store: ObjectStore,
    applications: Contract,
    *,
    target: str,
    model_name: str | None = None,
    hash_key: SecretStr | str | bytes | None = None,
) -> FeedbackSet:
    """Labelled application rows from resolved review cases (of ``model_name``, or all).

    With ``hash_key`` (``Settings.entity_hash_key``) each row's id is keyed and compared with
    the prediction's ``entity_key``, so a row is only used if it is the one that was scored.
    When one id was reviewed more than once, the latest resolution wins.
    """
    if target in applications.column_names:
        raise InputError(f"target {target!r} is a column of {applications.name!r} (label leakage)")
    cases = audit.resolved_cases(engine, model_name=model_name)
    skipped: list[SkippedCase] = []
    pieces: list[pd.DataFrame] = []
    snapshots: list[str] = []
    for sha, group in cases.groupby("input_snapshot", sort=False, dropna=False):
        if not isinstance(sha, str):
            skipped += [SkippedCase(case_id=c, reason="no input snapshot recorded") for c in group["case_id"]]
            continue
        try:
            frame = read_snapshot(store, dataset=applications.name, kind=KIND_VALID, sha256=sha)
        except InputError as exc:  # missing object; an altered one raises StorageIntegrityError
            skipped += [SkippedCase(case_id=c, reason=exc.message) for c in group["case_id"]]
            continue
        inside = group["input_row"].between(0, len(frame) - 1)
        skipped += [
            SkippedCase(case_id=c, reason=f"row {r} is outside snapshot {sha} ({len(frame)} rows)")
            for c, r in zip(group.loc[~inside, "case_id"], group.loc[~inside, "input_row"], strict=True)
        ]
        group = group.loc[inside]
        if group.empty:
            continue
        rows = frame.iloc[group["input_row"].to_numpy()].reset_index(drop=True)
        if hash_key is not None:
            keyed = audit.entity_key(rows[applications.id_column], hash_key).tolist()
            expected = group["entity_key"].tolist()
            same = pd.Series([k == e for k, e in zip(keyed, expected, strict=True)], dtype=bool)
            skipped += [
                SkippedCase(
                    case_id=c,
                    reason=f"row {r} of snapshot {sha} is not the scored entity (entity key differs)",
                )
                for c, r in zip(
                    group["case_id"][~same.to_numpy()], group["input_row"][~same.to_numpy()], strict=True
                )
            ]
            rows, group = rows.loc[same.to_numpy()], group.loc[same.to_numpy()]
        if group.empty:
            continue
        rows = _with_review_columns(rows, group, sha, target)
        rows["_resolved_at"] = group["resolved_at"].to_numpy()
        pieces.append(rows)
        snapshots.append(sha)
    columns = _review_row_columns(applications, target)
    if pieces:
        out = pd.concat(pieces, ignore_index=True)
        out = out.sort_values(["_resolved_at", REVIEW_CASE_COLUMN], kind="mergesort")
        superseded = out[applications.id_column].duplicated(keep="last")
        out = out.loc[~superseded].drop(columns="_resolved_at").reset_index(drop=True)
        out = out[[c for c in columns if c in out.columns]]
    else:
        out = _no_rows(columns, target)
        superseded = pd.Series([], dtype=bool)
    summary = FeedbackSummary(
        resolved_cases=len(cases),
        rows=len(out),
        positives=int(out[target].sum()) if len(out) else 0,
        superseded_reviews=int(superseded.sum()),
        snapshots=snapshots,
        skipped=skipped,
    )
    return FeedbackSet(frame=out, summary=summary)


def rows_of_review_labels(
    store: ObjectStore, applications: Contract, labels: list[ReviewLabel], *, target: str
) -> pd.DataFrame:
    """The labelled rows a model's lineage names (:func:`review_labels` read back): each label's
    row from its hash-checked snapshot (only those rows converted), in the shape
    :func:`review_labelled_rows` gives, so a rebuild joins them as the training run did. A
    snapshot or row that is gone is a :class:`~mlops.errors.StorageIntegrityError` (the model's
    data can no longer be read)."""
    columns = _review_row_columns(applications, target)
    pieces = []
    for sha, mine in by_snapshot(labels).items():
        at = [label.input_row for label in mine]
        try:
            rows = read_snapshot(store, dataset=applications.name, kind=KIND_VALID, sha256=sha, rows=at)
        except RowsOutside as exc:
            raise StorageIntegrityError(
                f"review labels name row(s) {[r for r in at if not 0 <= r < exc.num_rows][:5]} of "
                f"snapshot {sha}, which holds {exc.num_rows} rows",
                hint="the model's lineage and the snapshot disagree; restore the lineage artifact or "
                "the snapshot from a backup",
            ) from exc
        except InputError as exc:  # missing; an altered snapshot raises StorageIntegrityError itself
            raise StorageIntegrityError(
                f"the review-labelled rows of snapshot {sha} cannot be read: {exc.message}",
                hint="restore the snapshot from a backup (snapshots are never deleted by mlops)",
            ) from exc
        # Who decided is kept in the audit trail, not in the lineage.
        group = pd.DataFrame([label.model_dump() for label in mine]).assign(reviewer=None)
        pieces.append(_with_review_columns(rows, group, sha, target))
    if not pieces:
        return _no_rows(columns, target)
    out = pd.concat(pieces, ignore_index=True)
    return out[[c for c in columns if c in out.columns]]


def _review_row_columns(applications: Contract, target: str) -> list[str]:
    """The columns of review-labelled training rows, in order."""
    return [
        *applications.column_names,
        target,
        SNAPSHOT_COLUMN,
        SNAPSHOT_ROW_COLUMN,
        LABEL_SOURCE_COLUMN,
        *PROVENANCE_COLUMNS,
    ]


def _no_rows(columns: list[str], target: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == target else object) for c in columns})


def _with_review_columns(rows: pd.DataFrame, group: pd.DataFrame, sha: str, target: str) -> pd.DataFrame:
    """``rows`` (the snapshot's rows, one per row of ``group``: ``label``, ``input_row``,
    ``reviewer``, ``case_id``, ``review_record_id``) with the target, lineage and provenance
    columns of review-labelled training rows."""
    rows = rows.reset_index(drop=True)
    rows[target] = group["label"].to_numpy(dtype="int64")
    rows[SNAPSHOT_COLUMN] = sha
    rows[SNAPSHOT_ROW_COLUMN] = group["input_row"].to_numpy(dtype="int64")
    rows[LABEL_SOURCE_COLUMN] = LABEL_SOURCE_REVIEW
    rows[REVIEWER_COLUMN] = group["reviewer"].to_numpy()
    rows[REVIEW_CASE_COLUMN] = group["case_id"].to_numpy()
    rows[REVIEW_RECORD_COLUMN] = group["review_record_id"].to_numpy()
    return rows


def review_labels(labelled: pd.DataFrame, target: str) -> list[ReviewLabel]:
    """The rows of a labelled set that a person's review labelled (their provenance columns),
    for the model's lineage; none when the set holds no review row."""
    if LABEL_SOURCE_COLUMN not in labelled.columns or REVIEW_RECORD_COLUMN not in labelled.columns:
        return []
    rows = labelled.loc[labelled[LABEL_SOURCE_COLUMN] == LABEL_SOURCE_REVIEW]
    return [
        ReviewLabel(
            review_record_id=str(record),
            case_id=str(case),
            input_snapshot=str(snapshot),
            input_row=int(row),
            label=int(label),
        )
        for record, case, snapshot, row, label in zip(
            rows[REVIEW_RECORD_COLUMN],
            rows[REVIEW_CASE_COLUMN],
            rows[SNAPSHOT_COLUMN],
            rows[SNAPSHOT_ROW_COLUMN],
            rows[target],
            strict=True,
        )
    ]
