"""Outcomes meet predictions: measured performance per model version and role.

Validated outcome snapshots (catalog dataset of the model's outcomes contract, e.g.
``credit_outcomes``: ``application_id, observed_at, defaulted``) are joined to the audit
trail's prediction records by entity. The audit trail keeps only ``entity_key`` =
HMAC-SHA256(``Settings.entity_hash_key``, id), so outcome ids are keyed with the same key
(:func:`mlops.audit.entity_key`) before the join; raw ids never meet the audit store.

Each outcome id keeps one label: the most recently observed (a later correction wins; ties go
to the newer snapshot), as in :mod:`mlops.labels`. Every prediction record of that entity
(champion, shadow and canary rows, any batch) is matched.

Idempotency: matches are stored in ``outcome_matches`` (a table of this module in the audit
database, mutable working state like ``review_cases``; the audit chain itself is never
written), keyed by the prediction's record id. Joining again inserts only new matches and
updates a match only when its outcome changed (a correction); the same outcomes twice change
nothing. Metrics are computed from that table, so they are a deterministic function of it.

A match whose outcome was observed before its application was submitted (a clock or join-key
error upstream, :func:`mlops.labels.observed_before`) is stored with its application time
(``applied_at``, read once from the scored input snapshot) and left out of the metrics, as
training, promotion's shadow comparison and the monitor leave such outcomes out.

Metrics per (model, version, role), over each application's latest prediction in the group
(an application scored again counts once): ``n`` applications with an outcome,
``matched_predictions`` the prediction records matched, ``label_rate`` (observed default
rate), ``mean_score``, ``auc`` (None with one class), ``brier``, and
``decision_accuracy`` (``decline`` read as predicting default, ``approve`` as not; other
decisions are left out and ``n_decisions`` says how many counted). ``predictions`` and
``coverage`` say how many of the group's predictions have an outcome yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr
from sklearn.metrics import roc_auc_score
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from mlops import audit
from mlops.audit_hashing import as_utc
from mlops.audit_schema import add_columns
from mlops.audit_write import chain_transaction
from mlops.catalog import in_ingestion_order, list_snapshots, read_entries
from mlops.constants import KIND_VALID
from mlops.contracts import Contract
from mlops.errors import InputError, StorageIntegrityError
from mlops.labels import (
    OUTCOME_ROW_COLUMN,
    SNAPSHOT_COLUMN,
    dedup_outcomes,
    observed_before,
    with_row_numbers,
)
from mlops.storage import ObjectStore, read_snapshot, snapshot_key

PAGE_ROWS: Final = 50_000
IN_CHUNK: Final = 500
ROLE_ORDER: Final = {"champion": 0, "canary": 1, "shadow": 2}
PREDICTED_DEFAULT: Final = {"decline": 1, "approve": 0}

performance_metadata = sa.MetaData()
_UUID = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")

outcome_matches = sa.Table(
    "outcome_matches",
    performance_metadata,
    sa.Column("prediction_record_id", _UUID, primary_key=True),
    sa.Column("entity_key", sa.String(64), nullable=False, index=True),
    sa.Column("model_name", sa.String(), nullable=False, index=True),
    sa.Column("model_version", sa.String(), nullable=False),
    sa.Column("role", sa.String(16)),
    sa.Column("score", sa.Double()),
    sa.Column("decision", sa.String()),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("label", sa.Integer(), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True)),
    sa.Column("outcome_snapshot", sa.String(64), nullable=False),
    sa.Column("outcome_row", sa.BigInteger(), nullable=False),
    sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
    # Added after the first release: when the application was submitted (None: not known).
    sa.Column("applied_at", sa.DateTime(timezone=True)),
)
_ADDED_COLUMNS: Final[dict[tuple[str, str], str | None]] = {("outcome_matches", "applied_at"): None}
_OUTCOME_FIELDS: Final = ("label", "observed_at", "outcome_snapshot", "outcome_row")
_STORED_FIELDS: Final = (*_OUTCOME_FIELDS, "applied_at")  # what a join may change in a match
# (a changed outcome is a correction; an application time filled in, on a match stored before
# the column existed, is not)
_MATCH_COLUMNS: Final = (
    "prediction_record_id",
    "entity_key",
    "model_name",
    "model_version",
    "role",
    "score",
    "decision",
    "predicted_at",
    *_OUTCOME_FIELDS,
    "input_snapshot",
    "input_row",
)


def create_performance_schema(engine: Engine) -> None:
    """Create ``outcome_matches`` in the audit database (idempotent)."""
    with engine.begin() as conn:
        performance_metadata.create_all(conn, checkfirst=True)
        add_columns(conn, performance_metadata, _ADDED_COLUMNS)


# --- models --------------------------------------------------------------------------------


class JoinCounts(BaseModel):
    """What one join saw and did."""

    outcome_rows: int = 0
    outcome_ids: int = 0
    duplicate_outcomes: int = 0
    conflicting_outcomes: int = 0
    matched_outcomes: int = 0
    unmatched_outcomes: int = Field(0, description="outcome ids with no prediction record of the model")
    matched_predictions: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    outcomes_before_application: int = Field(
        0,
        description="matched prediction records left out of the metrics: their outcome was observed "
        "before the application was submitted",
    )
    application_times_unknown: int = Field(
        0,
        description="matched prediction records whose scored snapshot is no longer in the store: "
        "their outcome's date could not be checked against the application's",
    )


class PerformanceRow(BaseModel):
    """Measured performance of one model version in one role."""

    model_name: str
    model_version: str
    role: str
    predictions: int | None = None
    n: int = Field(description="applications with an outcome (an application scored again counts once)")
    matched_predictions: int = Field(0, description="prediction records with an outcome (re-scores included)")
    coverage: float | None = None
    label_rate: float | None
    mean_score: float | None
    auc: float | None
    brier: float | None
    decision_accuracy: float | None
    n_decisions: int


class PerformanceReport(BaseModel):
    """Outcomes joined to predictions, and performance per version and role."""

    model_name: str | None
    outcomes_dataset: str
    outcome_snapshots: list[str]
    join: JoinCounts
    rows: list[PerformanceRow]
    created_at: datetime

    def table(self) -> list[dict[str, Any]]:
        """Rows for a Prefect table artifact (floats rounded, None kept)."""

        def rounded(value: Any) -> Any:
            return round(value, 4) if isinstance(value, float) else value

        return [{k: rounded(v) for k, v in r.model_dump().items()} for r in self.rows]

    def summary_text(self) -> str:
        """A few lines for the CLI: the join, then one line per version and role."""
        j = self.join

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        lines = [
            f"performance of {self.model_name or 'all models'}: {j.matched_predictions} prediction(s) "
            f"with outcomes ({j.inserted} new, {j.updated} corrected; matches are per prediction "
            "record), "
            f"{j.unmatched_outcomes} outcome id(s) without a prediction"
            + (
                f"; {j.outcomes_before_application} left out: outcome observed before the application "
                "was submitted (check the outcomes' dates and ids)"
                if j.outcomes_before_application
                else ""
            )
            + (
                f"; {j.application_times_unknown} prediction(s) not checked for that: their scored "
                "snapshot is not in the store"
                if j.application_times_unknown
                else ""
            )
        ]
        lines += [
            f"  v{r.model_version} {r.role}: n={r.n} AUC {fmt(r.auc)} Brier {fmt(r.brier)} "
            f"decision accuracy {fmt(r.decision_accuracy)}"
            for r in self.rows
        ]
        return "\n".join(lines)

    def markdown(self) -> str:
        j = self.join
        title = self.model_name or "all models"
        lines = [
            f"# Measured performance: {title}",
            "",
            f"Outcomes `{self.outcomes_dataset}`: {j.outcome_rows} rows in "
            f"{len(self.outcome_snapshots)} snapshot(s), {j.outcome_ids} ids "
            f"({j.duplicate_outcomes} duplicates, {j.conflicting_outcomes} conflicting).",
            f"Matched {j.matched_outcomes} ids to {j.matched_predictions} prediction records; "
            f"**{j.unmatched_outcomes} outcome ids had no prediction** (counted, not joined).",
            f"This join: {j.inserted} new matches, {j.updated} corrected, {j.unchanged} unchanged.",
            f"Left out of the metrics: {j.outcomes_before_application} prediction records whose outcome "
            f"was observed before the application was submitted ({j.application_times_unknown} not "
            "checked: their scored snapshot is not in the store).",
            "",
            "| model | version | role | predictions | n | coverage | label rate | mean score "
            "| AUC | Brier | decision accuracy |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def fmt(value: float | int | None) -> str:
            if value is None:
                return "n/a"
            return f"{value:.4f}" if isinstance(value, float) else str(value)

        for r in self.rows:
            lines.append(
                f"| {r.model_name} | {r.model_version} | {r.role} | {fmt(r.predictions)} | {r.n} "
                f"| {fmt(r.coverage)} | {fmt(r.label_rate)} | {fmt(r.mean_score)} | {fmt(r.auc)} "
                f"| {fmt(r.brier)} | {fmt(r.decision_accuracy)} ({r.n_decisions}) |"
            )
        if not self.rows:
            lines.append("| (no prediction has an outcome yet) |  |  |  |  |  |  |  |  |  |  |")
        return "\n".join(lines)


# --- reading -------------------------------------------------------------------------------


def _observed_times(values: pd.Series) -> pd.Series:
    """Outcome times as UTC datetimes; a numeric timestamp column holds epoch seconds (as the
    catalog reads it), not nanoseconds: read as nanoseconds every outcome fell in January 1970,
    "before its application", and was left out of every performance report and shadow comparison."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return pd.to_datetime(values, utc=True, unit="s")
    return pd.to_datetime(values, utc=True)


def keyed_outcomes(
    store: ObjectStore, outcomes: Contract, hash_key: SecretStr | str | bytes
) -> tuple[pd.DataFrame, JoinCounts, list[str]]:
    """One row per outcome id (latest observed), keyed: ``entity_key, label, observed_at,
    outcome_snapshot, outcome_row``; with the read counts and the snapshots read."""
    target = outcomes.target_column
    if target is None:
        raise InputError(f"contract {outcomes.name!r} declares no target column")
    entries = list_snapshots(store, outcomes.name)
    shas = [e.sha256 for e in entries]
    raw = read_entries(store, in_ingestion_order(entries))  # ties: the batch ingested last
    empty = pd.DataFrame(columns=["entity_key", *_OUTCOME_FIELDS])
    if raw.empty:
        return empty, JoinCounts(), shas
    id_col, ts = outcomes.id_column, outcomes.timestamp_column
    numbered = with_row_numbers(raw, SNAPSHOT_COLUMN, OUTCOME_ROW_COLUMN)
    kept, dupes, conflicts = dedup_outcomes(numbered, id_col, target, ts)
    frame = pd.DataFrame(
        {
            "entity_key": audit.entity_key(kept[id_col].reset_index(drop=True), hash_key),
            "label": kept[target].to_numpy(dtype="int64"),
            "observed_at": _observed_times(kept[ts]).reset_index(drop=True) if ts else pd.NaT,
            "outcome_snapshot": kept[SNAPSHOT_COLUMN].to_numpy(),
            "outcome_row": kept[OUTCOME_ROW_COLUMN].to_numpy(dtype="int64"),
        }
    )
    counts = JoinCounts(
        outcome_rows=len(raw),
        outcome_ids=len(frame),
        duplicate_outcomes=dupes,
        conflicting_outcomes=conflicts,
    )
    return frame, counts, shas


def _prediction_pages(conn: Connection, model_name: str | None) -> Iterator[pd.DataFrame]:
    """Prediction records in seq order, one page at a time (one scan of the chain)."""
    t = audit.audit_records
    last = 0
    while True:
        stmt = (
            sa.select(
                t.c.seq,
                t.c.record_id,
                t.c.entity_key,
                t.c.model_name,
                t.c.model_version,
                t.c.role,
                t.c.score,
                t.c.decision,
                t.c.created_at,
                t.c.input_snapshot,
                t.c.input_row,
            )
            .where(t.c.seq > last, t.c.record_type == audit.RECORD_PREDICTION)
            .order_by(t.c.seq)
            .limit(PAGE_ROWS)
        )
        if model_name is not None:
            stmt = stmt.where(t.c.model_name == model_name)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        last = int(rows[-1].seq)
        yield pd.DataFrame([r._asdict() for r in rows])


def match_predictions(
    engine: Engine, outcomes: pd.DataFrame, model_name: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prediction records of outcome entities joined to their outcome, predictions per group)."""
    keys = set(outcomes["entity_key"])
    matched: list[pd.DataFrame] = []
    totals: list[pd.DataFrame] = []
    group = ["model_name", "model_version", "role"]
    with engine.connect() as conn:
        for page in _prediction_pages(conn, model_name):
            totals.append(page.groupby(group, dropna=False).size().rename("predictions").reset_index())
            hit = page.loc[page["entity_key"].isin(keys)]
            if len(hit):
                matched.append(hit)
    counts = (
        pd.concat(totals).groupby(group, dropna=False)["predictions"].sum().reset_index()
        if totals
        else pd.DataFrame(columns=[*group, "predictions"])
    )
    if not matched:
        return pd.DataFrame(columns=[*_MATCH_COLUMNS]), counts
    preds = pd.concat(matched, ignore_index=True).rename(
        columns={"record_id": "prediction_record_id", "created_at": "predicted_at"}
    )
    joined = preds.merge(outcomes, on="entity_key", how="inner", validate="many_to_one")
    return joined[list(_MATCH_COLUMNS)], counts


def checks_times(applications: Contract | None) -> bool:
    """Whether outcomes can be checked against the application times of this contract (it
    declares a datetime timestamp column)."""
    if applications is None or applications.timestamp_column is None:
        return False
    return applications.column(applications.timestamp_column).dtype == "datetime"


def application_times(store: ObjectStore, applications: Contract, refs: pd.DataFrame) -> pd.Series:
    """When each prediction's application was submitted: the applications contract's datetime
    timestamp column at the prediction's input reference (``input_snapshot``, ``input_row``),
    aligned with ``refs``. Reads that one column of each scored snapshot, hash-checked (an
    altered snapshot raises). Missing for a snapshot no longer in the store, and all missing
    when the contract has no datetime timestamp column."""
    times = pd.Series(pd.NaT, index=refs.index, dtype="datetime64[ns, UTC]")
    column = applications.timestamp_column
    if column is None or not checks_times(applications):
        return times
    for sha, group in refs.groupby("input_snapshot", sort=False):
        if not store.exists(snapshot_key(KIND_VALID, applications.name, str(sha))):
            continue
        values = read_snapshot(
            store, dataset=applications.name, kind=KIND_VALID, sha256=str(sha), columns=[column]
        )[column]
        rows = group["input_row"].to_numpy(dtype="int64")
        if rows.min() < 0 or rows.max() >= len(values):
            raise StorageIntegrityError(
                f"a prediction's input row is outside snapshot {sha} ({len(values)} rows)",
                hint="the audit trail and the store disagree; run mlops audit verify",
            )
        times.loc[group.index] = pd.to_datetime(values.iloc[rows], utc=True).to_numpy()
    return times


def _with_application_times(
    matches: pd.DataFrame, engine: Engine, store: ObjectStore, applications: Contract | None
) -> pd.DataFrame:
    """``matches`` with ``applied_at``: kept from the stored match where known, read from the
    scored snapshots (:func:`application_times`) for the others only."""
    t = outcome_matches.c
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(t.prediction_record_id, t.applied_at).where(t.applied_at.is_not(None))
        )
        known = pd.Series({str(r.prediction_record_id): r.applied_at for r in stored}, dtype=object)
    applied = pd.to_datetime(matches["prediction_record_id"].map(known), utc=True)
    unknown = applied.isna()
    if applications is not None and unknown.any():
        applied[unknown] = application_times(store, applications, matches.loc[unknown])
    return matches.assign(applied_at=applied)


def before_application(matches: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Which matches' outcome was observed before their application was submitted."""
    if matches.empty:
        return np.zeros(0, dtype=bool)
    return observed_before(
        pd.to_datetime(matches["observed_at"], utc=True), pd.to_datetime(matches["applied_at"], utc=True)
    )


# --- storing -------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return not isinstance(value, str | datetime) and bool(pd.isna(value))


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return as_utc(a) == as_utc(b)
    return bool(a == b)


def _py(value: Any) -> Any:
    """A value as the database driver wants it (no numpy/pandas scalars, NaT as None, UTC)."""
    if _missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def store_matches(engine: Engine, matches: pd.DataFrame) -> tuple[int, int, int]:
    """Upsert matches by prediction record id; returns (inserted, updated, unchanged)."""
    inserted = updated = unchanged = 0
    now = datetime.now(UTC)
    stored = [c.name for c in outcome_matches.columns if c.name != "matched_at"]
    records = [{k: _py(row[k]) for k in stored} for row in matches.to_dict(orient="records")]
    t = outcome_matches
    # BEGIN IMMEDIATE on SQLite: the read-then-write waits for concurrent writers.
    with chain_transaction(engine) as conn:
        for start in range(0, len(records), IN_CHUNK):
            chunk = records[start : start + IN_CHUNK]
            ids = [r["prediction_record_id"] for r in chunk]
            existing = {
                str(r.prediction_record_id): r
                for r in conn.execute(
                    sa.select(t.c.prediction_record_id, *(t.c[f] for f in _STORED_FIELDS)).where(
                        t.c.prediction_record_id.in_(ids)
                    )
                )
            }
            new = [{**r, "matched_at": now} for r in chunk if r["prediction_record_id"] not in existing]
            if new:
                conn.execute(t.insert(), new)
                inserted += len(new)
            for r in chunk:
                old = existing.get(r["prediction_record_id"])
                if old is None:
                    continue
                row = t.update().where(t.c.prediction_record_id == r["prediction_record_id"])
                if all(_same(getattr(old, f), r[f]) for f in _OUTCOME_FIELDS):
                    unchanged += 1
                    if not _same(old.applied_at, r["applied_at"]):  # an application time read now
                        conn.execute(row.values(applied_at=r["applied_at"]))
                    continue
                conn.execute(row.values(**{f: r[f] for f in _STORED_FIELDS}, matched_at=now))
                updated += 1  # a corrected outcome
    return inserted, updated, unchanged


# --- metrics -------------------------------------------------------------------------------


def stored_matches(engine: Engine, model_name: str | None = None) -> pd.DataFrame:
    """Every stored match (optionally of one model), ordered by prediction record id."""
    t = outcome_matches
    stmt = sa.select(t).order_by(t.c.prediction_record_id)
    if model_name is not None:
        stmt = stmt.where(t.c.model_name == model_name)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame([r._asdict() for r in rows], columns=[c.name for c in t.columns])


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def latest_per_application(matches: pd.DataFrame) -> pd.DataFrame:
    """One match per application: its latest prediction (by time, then record id, which
    rises within a batch). A batch scored again (``--rescore``, a resubmitted application)
    would otherwise count the application once per scoring."""
    ordered = matches.sort_values(["predicted_at", "prediction_record_id"], kind="mergesort")
    return ordered.drop_duplicates("entity_key", keep="last")


def _row(key: tuple[str, str, str], matched: pd.DataFrame, total: int | None) -> PerformanceRow:
    g = latest_per_application(matched)
    y = g["label"].to_numpy(dtype="int64")
    scores = g["score"].to_numpy(dtype="float64", na_value=np.nan)
    scored = ~np.isnan(scores)
    p, ys = scores[scored], y[scored]
    predicted = g["decision"].map(PREDICTED_DEFAULT)
    known = predicted.notna().to_numpy()
    return PerformanceRow(
        model_name=key[0],
        model_version=key[1],
        role=key[2],
        predictions=total,
        n=len(g),
        matched_predictions=len(matched),
        coverage=len(matched) / total if total else None,
        label_rate=float(y.mean()) if len(y) else None,
        mean_score=float(p.mean()) if len(p) else None,
        auc=float(roc_auc_score(ys, p)) if len(set(ys.tolist())) == 2 else None,
        brier=float(np.mean((p - ys) ** 2)) if len(p) else None,
        decision_accuracy=(
            float((predicted[known].to_numpy(dtype="int64") == y[known]).mean()) if known.any() else None
        ),
        n_decisions=int(known.sum()),
    )


def group_metrics(matches: pd.DataFrame, predictions: pd.DataFrame | None = None) -> list[PerformanceRow]:
    """Per (model, version, role) metrics of stored matches.

    With ``predictions`` (counts per group) each row gets its coverage, and groups whose
    predictions have no outcome yet appear with ``n = 0``.
    """
    group = ["model_name", "model_version", "role"]
    totals: dict[tuple[str, str, str], int] = {}
    if predictions is not None:
        for r in predictions.itertuples(index=False):
            totals[(str(r.model_name), str(r.model_version), str(r.role))] = int(r.predictions)
    frames: dict[tuple[str, str, str], pd.DataFrame] = {
        (str(k[0]), str(k[1]), str(k[2])): g for k, g in matches.groupby(group, dropna=False)
    }
    rows = [_row(key, frames.get(key, matches.iloc[0:0]), totals.get(key)) for key in {*frames, *totals}]
    rows.sort(key=lambda r: (r.model_name, _version_key(r.model_version), ROLE_ORDER.get(r.role, 9), r.role))
    return rows


# --- the whole step ------------------------------------------------------------------------


def join_outcomes(
    engine: Engine,
    store: ObjectStore,
    outcomes: Contract,
    *,
    hash_key: SecretStr | str | bytes,
    model_name: str | None = None,
    applications: Contract | None = None,
) -> PerformanceReport:
    """Join every validated outcome snapshot to the prediction records (of ``model_name``),
    store the matches idempotently and report performance per version and role.

    With ``applications`` (the contract of the scored rows), matches whose outcome was observed
    before the application was submitted are left out of the metrics and counted."""
    create_performance_schema(engine)
    keyed, counts, shas = keyed_outcomes(store, outcomes, hash_key)
    matches, predictions = match_predictions(engine, keyed, model_name)
    matches = _with_application_times(matches, engine, store, applications)
    inserted, updated, unchanged = store_matches(engine, matches)
    stored = stored_matches(engine, model_name)
    early = before_application(stored)
    matched_ids = matches["entity_key"].nunique() if len(matches) else 0
    counts = counts.model_copy(
        update={
            "matched_outcomes": int(matched_ids),
            "unmatched_outcomes": counts.outcome_ids - int(matched_ids),
            "matched_predictions": len(matches),
            "inserted": inserted,
            "updated": updated,
            "unchanged": unchanged,
            "outcomes_before_application": int(early.sum()),
            "application_times_unknown": (
                int(stored["applied_at"].isna().sum()) if checks_times(applications) else 0
            ),
        }
    )
    return PerformanceReport(
        model_name=model_name,
        outcomes_dataset=outcomes.name,
        outcome_snapshots=shas,
        join=counts,
        rows=group_metrics(stored.loc[~early], predictions),
        created_at=datetime.now(UTC),
    )


def join_outcomes_after_ingest(model: str) -> PerformanceReport:
    """The hook ``mlops outcomes`` calls after an accepted outcome batch: runs the
    ``measure-performance`` flow (so the run and its table artifact show in the Prefect UI)."""
    from flows.performance import measure_performance  # the flow wires this module's functions

    return measure_performance(model=model)
