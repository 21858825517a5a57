"""Champion vs challenger on the shadow period's labelled outcomes (plain Python, no Prefect).

The audit trail holds, for each entity scored while the challenger was shadowing, a
prediction record of the champion's version and one of the challenger's version (role
``shadow``, or ``canary`` in a canary), both keyed by the same ``entity_key``. Outcomes come
from the validated snapshots of the model spec's outcomes contract, keyed with
``entity_key(id, Settings.entity_hash_key)`` by :func:`mlops.performance.keyed_outcomes` (one
label per id, the latest observed), and are joined to the records. Both models are then
compared on exactly the same labelled rows: the paired-bootstrap non-inferiority check with
the spec's settings, and every other gate of the spec (floors, slice floors, fairness)
re-checked on the challenger's shadow scores. The spec's ``shadow`` policy sets the minimum
exposure (:class:`~mlops.shadow_policy.ShadowPolicy`: labelled rows, and distinct UTC days of
the data the challenger scored, counted from the catalog timestamps of its input snapshots as
the monitoring stage counts them). Too few labelled pairs or days, one class only, or
unreadable scores refuse (fail closed); a refusal is evidence too.

Rows either version learnt from or was gated on (:func:`trained_entity_keys`: the ids of its
lineage application snapshots labelled in its lineage outcome snapshots) are no evidence: a
replayed or backfilled training batch scored in shadow would otherwise grade the challenger
on its own training rows, where it looks far better than it is.

When an entity has several records of one version (re-scored batch), its first record counts:
the score the model gave when the entity was first seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.catalog import CatalogEntry, entry_key
from mlops.constants import KIND_VALID
from mlops.contracts import Contract
from mlops.errors import InputError, MlopsError
from mlops.evaluation import EvaluationReport, evaluate
from mlops.gates import VERDICT_PASSED, DecisionRecord, evaluate_gates
from mlops.labels import observed_before
from mlops.lineage import (
    LINEAGE_ARTIFACT,
    NONE_VALUE,
    TAG_APPLICATION_SNAPSHOTS,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_REVIEW_LABELS,
    ReviewLabel,
    by_snapshot,
    tag_list,
)
from mlops.model_spec import ModelSpec
from mlops.registry import ModelRegistry
from mlops.storage import ObjectStore, read_snapshot

# Columns of a version's prediction records as read from the audit store.
RECORD_COLUMNS: Final = ("seq", "entity_key", "role", "score", "input_snapshot", "input_row", "created_at")
CHAMPION_SUFFIX: Final = "_champion"
CHALLENGER_SUFFIX: Final = "_challenger"
LABEL_COLUMN: Final = "label"
OUTCOME_SNAPSHOT_COLUMN: Final = "outcome_snapshot"
SHADOW_ACTOR: Final = "promote flow (shadow comparison)"


class ShadowData(BaseModel):
    """Which rows the shadow comparison used, and how many were lost on the way."""

    champion_version: int
    challenger_version: int
    champion_records: int  # distinct entities with a champion-version record
    challenger_records: int  # distinct entities with a challenger-version record
    paired: int  # entities with both
    labelled: int  # paired entities with an outcome: the comparison rows
    positives: int
    min_rows: int
    days: int = 0  # distinct UTC days of the data the challenger scored
    min_days: int = 0
    roles: dict[str, int]  # role of the challenger's record -> rows (shadow / canary)
    outcome_snapshots: list[str]
    input_snapshots: list[str]
    outcome_conflicts: int = 0
    #: Outcomes observed before the application they label was submitted: left out (as training does).
    outcomes_before_application: int = 0
    #: Outcomes of entities the champion or the challenger learnt from or was gated on: left out.
    trained_on: int = 0
    slices_checked: bool = False
    slices_note: str | None = None
    #: Versions trained and gated under another model spec than the one they are compared under now.
    spec_notes: list[str] = []


class ShadowEvidence(BaseModel):
    """The comparison's verdict: passed, or refused with every reason."""

    data: ShadowData
    decision_record: DecisionRecord | None  # None when the gates could not even run
    passed: bool
    reasons: list[str]

    def summary(self) -> str:
        d = self.data
        head = (
            f"challenger v{d.challenger_version} vs champion v{d.champion_version} on {d.labelled} "
            f"labelled shadow rows ({d.positives} positive)"
        )
        if self.passed:
            return f"{head}: all gates passed"
        return f"{head}: refused: " + "; ".join(self.reasons)


@dataclass(frozen=True)
class LabelledPairs:
    """Paired champion/challenger records with their outcome, one row per entity, seq order."""

    frame: pd.DataFrame
    data: ShadowData


# --- reading records and outcomes -----------------------------------------------------------


def read_version_records(engine: Engine, model_name: str, version: int) -> pd.DataFrame:
    """Prediction records of one model version, first record per entity (seq order)."""
    table = audit.audit_records
    stmt = (
        sa.select(*(table.c[name] for name in RECORD_COLUMNS))
        .where(
            table.c.record_type == audit.RECORD_PREDICTION,
            table.c.model_name == model_name,
            table.c.model_version == str(int(version)),
            table.c.entity_key.is_not(None),
        )
        .order_by(table.c.seq)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(RECORD_COLUMNS))
    return frame.drop_duplicates("entity_key", keep="first").reset_index(drop=True)


def _days_between(first: date, last: date) -> set[date]:
    return {first + timedelta(days=i) for i in range((last - first).days + 1)}


def shadow_days(store: ObjectStore, applications_dataset: str, records: pd.DataFrame) -> int:
    """Distinct UTC days of the data behind ``records``: each input snapshot contributes the days
    from its oldest to its newest application (catalog entry); one not in the catalog, the days
    its records were written."""
    days: set[date] = set()
    if records.empty:
        return 0
    for sha, group in records.groupby("input_snapshot", dropna=False, sort=False):
        key = entry_key(applications_dataset, str(sha))
        entry = CatalogEntry.model_validate_json(store.get_bytes(key)) if store.exists(key) else None
        if entry is not None and entry.min_timestamp and entry.max_timestamp:
            days |= _days_between(entry.min_timestamp.date(), entry.max_timestamp.date())
        else:
            days |= {pd.Timestamp(t).date() for t in group["created_at"]}
    return len(days)


def label_pairs(
    champion: pd.DataFrame,
    challenger: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    champion_version: int,
    challenger_version: int,
    min_rows: int,
    outcome_conflicts: int = 0,
    days: int = 0,
    min_days: int = 0,
    trained_on: int = 0,
) -> LabelledPairs:
    """Entities with a record of both versions and an outcome (inner joins on entity_key).

    ``outcomes`` has ``entity_key, label, outcome_snapshot`` (:func:`mlops.performance.keyed_outcomes`).
    """
    pairs = champion.merge(
        challenger, on="entity_key", suffixes=(CHAMPION_SUFFIX, CHALLENGER_SUFFIX), validate="one_to_one"
    )
    labelled = pairs.merge(
        outcomes[["entity_key", LABEL_COLUMN, OUTCOME_SNAPSHOT_COLUMN]],
        on="entity_key",
        how="inner",
        validate="one_to_one",
    )
    labelled = labelled.sort_values(f"seq{CHAMPION_SUFFIX}", kind="mergesort").reset_index(drop=True)
    roles = labelled[f"role{CHALLENGER_SUFFIX}"].value_counts().sort_index()
    data = ShadowData(
        champion_version=champion_version,
        challenger_version=challenger_version,
        champion_records=len(champion),
        challenger_records=len(challenger),
        paired=len(pairs),
        labelled=len(labelled),
        positives=int(labelled[LABEL_COLUMN].sum()) if len(labelled) else 0,
        min_rows=min_rows,
        days=days,
        min_days=min_days,
        roles={str(k): int(v) for k, v in roles.items()},
        outcome_snapshots=sorted(set(labelled[OUTCOME_SNAPSHOT_COLUMN].dropna().astype(str))),
        input_snapshots=sorted(set(labelled[f"input_snapshot{CHALLENGER_SUFFIX}"].dropna().astype(str))),
        outcome_conflicts=outcome_conflicts,
        trained_on=trained_on,
    )
    return LabelledPairs(frame=labelled, data=data)


def outcomes_before_application(
    pairs: pd.DataFrame, rows: pd.DataFrame, outcomes: pd.DataFrame, timestamp_column: str | None
) -> set[str]:
    """Entity keys of the pairs whose outcome was observed before the scored application was
    submitted (``rows``: :func:`read_input_rows`, aligned with ``pairs``; ``outcomes``:
    :func:`mlops.performance.keyed_outcomes`; see :func:`mlops.labels.observed_before`)."""
    if timestamp_column is None or timestamp_column not in rows.columns or "observed_at" not in outcomes:
        return set()
    observed = pairs["entity_key"].map(outcomes.set_index("entity_key")["observed_at"])
    before = observed_before(observed, rows[timestamp_column])
    return set(pairs["entity_key"][before])


def read_input_rows(store: ObjectStore, dataset: str, pairs: pd.DataFrame) -> pd.DataFrame:
    """The scored application rows of the pairs (by the challenger record's input reference),
    aligned with ``pairs``; raises MlopsError/IndexError when a snapshot cannot be read."""
    snapshot_col, row_col = f"input_snapshot{CHALLENGER_SUFFIX}", f"input_row{CHALLENGER_SUFFIX}"
    if pairs[snapshot_col].isna().any() or pairs[row_col].isna().any():
        raise InputError("some shadow records have no input reference")
    parts: list[pd.DataFrame] = []
    for sha, group in pairs.groupby(snapshot_col, sort=False):
        snapshot = read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=str(sha))
        rows = group[row_col].astype("int64").to_numpy()
        if rows.min() < 0 or rows.max() >= len(snapshot):
            raise IndexError(f"an input row is outside snapshot {sha} ({len(snapshot)} rows)")
        parts.append(snapshot.iloc[rows].set_axis(group.index))
    return pd.concat(parts).loc[pairs.index].reset_index(drop=True)


def _snapshot_ids(store: ObjectStore, dataset: str, shas: list[str], id_column: str) -> set[Any]:
    ids: set[Any] = set()
    for sha in shas:
        ids.update(
            read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=sha, columns=[id_column])[
                id_column
            ].dropna()
        )
    return ids


def trained_entity_keys(
    store: ObjectStore,
    applications: Contract,
    outcomes: Contract,
    tags: Mapping[str, str],
    hash_key: SecretStr | str | bytes,
    review_labels: Sequence[ReviewLabel] = (),
) -> set[str]:
    """Entity keys of the rows a version was trained and gated on, from its lineage tags: the
    ids of its application snapshots that have an outcome in its outcome snapshots (a superset
    of the training and evaluation rows: the training window is not re-applied), and the ids of
    the rows a person's review labelled (``review_labels``, from its lineage: their outcome had
    not arrived when it was trained, so the outcome snapshots do not name them)."""
    apps = tag_list(tags, TAG_APPLICATION_SNAPSHOTS)
    outs = tag_list(tags, TAG_OUTCOME_SNAPSHOTS)
    labelled: set[Any] = set()
    if apps and outs:
        labelled = _snapshot_ids(store, applications.name, apps, applications.id_column)
        labelled &= _snapshot_ids(store, outcomes.name, outs, outcomes.id_column)
    for sha, labels in by_snapshot(review_labels).items():
        frame = read_snapshot(
            store,
            dataset=applications.name,
            kind=KIND_VALID,
            sha256=sha,
            columns=[applications.id_column],
            rows=[label.input_row for label in labels],
        )
        labelled.update(frame[applications.id_column].dropna())
    if not labelled:
        return set()
    return set(audit.entity_key(pd.Series(sorted(labelled, key=str), dtype=object), hash_key))


def lineage_review_labels(
    registry: ModelRegistry, model: str, version: int, tags: Mapping[str, str]
) -> list[ReviewLabel]:
    """The review labels a version was trained on, read from its run's lineage artifact only
    when its tags count some (most versions have none: no artifact is read)."""
    if tags.get(TAG_REVIEW_LABELS, "0") in ("", "0", NONE_VALUE):
        return []
    lineage = registry.read_run_json(registry.version_run_id(model, version), LINEAGE_ARTIFACT)
    return [ReviewLabel.model_validate(label) for label in lineage.get("review_labels", [])]


def trained_keys_of_versions(
    store: ObjectStore,
    registry: ModelRegistry,
    model: str,
    tags: Mapping[int, Mapping[str, str]],
    applications: Contract,
    outcomes: Contract,
    hash_key: SecretStr | str | bytes,
) -> set[str]:
    """:func:`trained_entity_keys` of each version (version -> its tags), together: the rows
    no shadow comparison of these versions may count (the promotion's and the monitor's)."""
    return set().union(
        *(
            trained_entity_keys(
                store,
                applications,
                outcomes,
                version_tags,
                hash_key,
                lineage_review_labels(registry, model, version, version_tags),
            )
            for version, version_tags in tags.items()
        )
    )


# --- the comparison -------------------------------------------------------------------------


def _refused(data: ShadowData, reasons: list[str]) -> ShadowEvidence:
    return ShadowEvidence(data=data, decision_record=None, passed=False, reasons=reasons)


def _evaluate(
    spec: ModelSpec, y: np.ndarray, scores: np.ndarray, rows: pd.DataFrame | None
) -> EvaluationReport:
    if rows is None:
        return evaluate(y, scores, threshold=spec.decision_policy.threshold)
    return evaluate(
        y,
        scores,
        threshold=spec.decision_policy.threshold,
        slices_frame=rows,
        slices=list(spec.slices),
        sensitive=spec.sensitive_column,
        # As training does: groups below the spec's size are reported, not gated.
        min_group_rows=spec.gates.fairness_min_group_rows,
    )


def compare_on_shadow(
    spec: ModelSpec,
    pairs: LabelledPairs,
    rows: pd.DataFrame | None,
    *,
    champion_ref: Mapping[str, Any],
    candidate_ref: Mapping[str, Any],
    flow_run_id: str | None = None,
    rows_note: str | None = None,
) -> ShadowEvidence:
    """Every gate of ``spec.gates`` on the labelled shadow pairs; refuses below the minimums.

    ``rows`` are the scored application rows (for slices and fairness); when None the slice
    and fairness gates that the spec declares fail closed (they cannot be checked).
    """
    data = pairs.data.model_copy(update={"slices_checked": rows is not None, "slices_note": rows_note})
    frame = pairs.frame
    short: list[str] = []
    if data.labelled < max(data.min_rows, 1):
        short.append(
            f"only {data.labelled} labelled shadow rows (champion and challenger scored the same "
            f"entity and its outcome is known); at least {max(data.min_rows, 1)} are needed "
            f"({data.paired} paired records, {data.challenger_records} challenger records"
            + (
                f"; {data.trained_on} left out: rows the champion or the challenger was trained on"
                if data.trained_on
                else ""
            )
            + ")"
        )
    if data.days < data.min_days:
        short.append(
            f"the challenger shadowed {data.days} day(s) of data; the spec's shadow policy needs {data.min_days}"
        )
    if short:
        return _refused(data, short)
    y = frame[LABEL_COLUMN].to_numpy(dtype="int64")
    if y.min() == y.max():
        return _refused(data, [f"the {data.labelled} labelled shadow rows hold one class only ({y[0]})"])
    champion = frame[f"score{CHAMPION_SUFFIX}"].to_numpy(dtype="float64")
    challenger = frame[f"score{CHALLENGER_SUFFIX}"].to_numpy(dtype="float64")
    snapshots = {f"outcomes:{i}": sha for i, sha in enumerate(data.outcome_snapshots)}
    snapshots.update({f"inputs:{i}": sha for i, sha in enumerate(data.input_snapshots)})
    try:
        report = _evaluate(spec, y, challenger, rows)
        record = evaluate_gates(
            spec.gates,
            report,
            challenger,
            y,
            champion,
            champion_ref,
            model_name=spec.name,
            candidate_ref=candidate_ref,
            snapshot_hashes=snapshots,
            flow_run_id=flow_run_id,
            actor=SHADOW_ACTOR,
        )
    except (MlopsError, ValueError) as exc:
        message = exc.message if isinstance(exc, MlopsError) else str(exc)
        return _refused(data, [f"the shadow rows could not be evaluated: {message}"])
    reasons = list(record.failures)
    unread = rows is None and bool(rows_note)
    if unread:  # fail closed: a snapshot altered or gone is not a gate that "passed"
        reasons.append(
            f"{rows_note}: the slices, the fairness gate and the outcomes observed before their "
            "application cannot be checked, so the challenger is not promoted"
        )
    passed = record.verdict == VERDICT_PASSED and not unread
    return ShadowEvidence(data=data, decision_record=record, passed=passed, reasons=[] if passed else reasons)
