"""Reproduce a past prediction from its audit record, bit for bit.

The record names the exact model version (never an alias), the snapshot sha256, the row in
it and the row's input hash. Reproducing reloads ``models:/<name>/<version>``, reads that
one row from the (hash-checked) snapshot, checks the row's input hash, scores it again and
compares the two float64 values exactly (same machine: XGBoost is deterministic; across
machines compare with a tolerance, see PITFALLS). The record's own hash is checked too, so
an edited score shows up as an edited record, not as a model that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from mlops.audit import CANONICAL_FIELDS, audit_records, is_event, record_hash
from mlops.audit_hashing import as_utc
from mlops.audit_review import prediction_record
from mlops.constants import KIND_VALID, POLICY_FROM_SPEC, POLICY_RECORDED
from mlops.errors import InputError
from mlops.model_spec import DecisionPolicy
from mlops.scoring import (
    RECORD_SCORING_BATCH,
    ROLE_SHADOW,
    LoadedModel,
    decide,
    decision_policy_hash,
    input_hashes,
)
from mlops.storage import ObjectStore, snapshot_key


class ReproduceResult(BaseModel):
    """The recorded and the recomputed prediction, side by side."""

    record_id: str
    batch_id: str | None
    model_name: str
    model_version: int
    model_alias: str | None
    role: str
    model_uri: str
    input_snapshot: str
    input_row: int
    snapshot_uri: str
    record_intact: bool = Field(description="the record still matches its own hash")
    input_hash_recorded: str
    input_hash_recomputed: str
    input_hash_ok: bool
    score_recorded: float
    score_recomputed: float
    score_recorded_hex: str
    score_recomputed_hex: str
    identical: bool = Field(description="same float64 bits and the same input row")
    decision_recorded: str | None
    decision_recomputed: str = Field(description="under the decision policy named by decision_policy_source")
    decision_matches: bool
    decision_policy_source: str = Field(
        POLICY_FROM_SPEC, description=f"{POLICY_RECORDED!r} or {POLICY_FROM_SPEC!r}"
    )
    decision_policy_sha256: str = ""

    @property
    def reproduced(self) -> bool:
        """Same bits from the same input, the record intact, and (under the policy recorded with
        the batch) the same decision. Under today's spec policy (a batch scored before policies
        were recorded) a different decision may be the spec's change, so it is shown, not failed."""
        decision_ok = self.decision_matches or self.decision_policy_source != POLICY_RECORDED
        return self.identical and self.input_hash_ok and self.record_intact and decision_ok


def read_prediction_record(engine: Engine, record_id: str) -> dict[str, Any]:
    """The audit record of one prediction (an input error, pointing to ``mlops audit find``, if
    there is none: :func:`mlops.audit_review.prediction_record`)."""
    with engine.connect() as conn:
        return dict(prediction_record(conn, record_id)._mapping)


def recorded_decision_policy(engine: Engine, batch_id: str | None) -> DecisionPolicy | None:
    """The decision policy recorded with a scored batch (its intact ``scoring_batch`` record).

    None for batches scored before such records existed; a record that no longer matches its
    own hash is refused rather than trusted.
    """
    if batch_id is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(audit_records).where(
                is_event(RECORD_SCORING_BATCH), audit_records.c.batch_id == batch_id
            )
        ).first()
    if row is None:
        return None
    record = dict(row._mapping)
    if not record_intact(record):
        raise InputError(
            f"the scoring_batch record of batch {batch_id} does not match its hash",
            hint="run `mlops audit verify`: the audit chain has been altered",
        )
    return DecisionPolicy.model_validate(record["payload"]["decision_policy"])


def record_intact(record: Mapping[str, Any]) -> bool:
    """Whether the stored record still hashes to its ``record_hash``."""
    fields = {name: record[name] for name in CANONICAL_FIELDS}
    fields["created_at"] = as_utc(record["created_at"])
    return bool(record_hash(record["prev_hash"], fields) == record["record_hash"])


def locate_snapshot(store: ObjectStore, sha256: str, dataset_hint: str | None) -> str:
    """The dataset holding valid snapshot ``sha256`` (the hint first, then a listing)."""
    if dataset_hint and store.exists(snapshot_key(KIND_VALID, dataset_hint, sha256)):
        return dataset_hint
    suffix = f"/{KIND_VALID}/{sha256}.parquet"
    for key in store.list_keys("snapshots/"):
        if key.endswith(suffix):
            return key.split("/")[1]
    raise InputError(
        f"snapshot {sha256} is not in the object store {store.url}",
        hint="the input of this prediction was deleted or the store points elsewhere (MLOPS_STORE_URL)",
    )


def reproduce_from(
    record: Mapping[str, Any],
    row: pd.DataFrame,
    model: LoadedModel,
    policy: DecisionPolicy,
    *,
    snapshot_uri: str,
    policy_source: str = POLICY_FROM_SPEC,
) -> ReproduceResult:
    """Score the one-row frame ``row`` again with ``model`` and compare with ``record``."""
    if len(row) != 1:
        raise InputError(f"expected exactly one input row, got {len(row)}")
    if str(model.version) != str(record["model_version"]) or model.name != record["model_name"]:
        raise InputError(
            f"model {model.uri} is not the one that made record {record['record_id']} "
            f"({record['model_name']} version {record['model_version']})"
        )
    recomputed_hash = input_hashes(row)[0]
    recomputed = float(model.score(row)[0])
    recorded = float(record["score"])
    rule = policy.high_stakes
    high = row[rule.column].to_numpy(dtype="float64", na_value=np.nan) if rule is not None else None
    decision = str(decide(policy, np.array([recomputed]), high).decision[0])
    hash_ok = recomputed_hash == record["input_hash"]
    return ReproduceResult(
        record_id=str(record["record_id"]),
        batch_id=record["batch_id"],
        model_name=model.name,
        model_version=model.version,
        model_alias=record["model_alias"],
        role=str(record["role"] or ROLE_SHADOW),
        model_uri=model.uri,
        input_snapshot=str(record["input_snapshot"]),
        input_row=int(record["input_row"]),
        snapshot_uri=snapshot_uri,
        record_intact=record_intact(record),
        input_hash_recorded=str(record["input_hash"]),
        input_hash_recomputed=recomputed_hash,
        input_hash_ok=hash_ok,
        score_recorded=recorded,
        score_recomputed=recomputed,
        score_recorded_hex=recorded.hex(),
        score_recomputed_hex=recomputed.hex(),
        identical=hash_ok and recorded.hex() == recomputed.hex(),
        decision_recorded=record["decision"],
        decision_recomputed=decision,
        decision_matches=decision == record["decision"],
        decision_policy_source=policy_source,
        decision_policy_sha256=decision_policy_hash(policy),
    )


def reproduce_text(result: ReproduceResult) -> str:
    verdict = "IDENTICAL" if result.reproduced else "DIFFERENT"
    lines = [
        f"prediction {result.record_id} ({result.role}) by {result.model_uri}",
        f"  input    snapshot {result.input_snapshot[:16]}... row {result.input_row}; input hash "
        + ("matches" if result.input_hash_ok else f"DIFFERS ({result.input_hash_recomputed[:16]}...)"),
        f"  recorded   score {result.score_recorded!r} ({result.score_recorded_hex}) -> {result.decision_recorded}",
        f"  recomputed score {result.score_recomputed!r} ({result.score_recomputed_hex}) -> {result.decision_recomputed}",
        f"  decision policy {result.decision_policy_sha256[:16]}... ({result.decision_policy_source})",
    ]
    if not result.record_intact:
        lines.append("  the audit record no longer matches its own hash (edited after it was written)")
    if not result.decision_matches and result.identical:
        lines.append(
            "  same score, another decision: the recorded decision is not what the policy recorded "
            "with the batch gives (the record or the policy was changed after scoring)"
            if result.decision_policy_source == POLICY_RECORDED
            else "  same score, another decision under the model spec's policy of today (the batch "
            "recorded no policy; the spec may have changed since)"
        )
    lines.append(f"  -> {verdict}")
    return "\n".join(lines)
