"""Small audit trails for review, feedback and performance tests (built with the audit API)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.catalog import CatalogEntry, record_snapshot
from mlops.constants import KIND_VALID
from mlops.contracts import Contract, load_contract
from mlops.settings import PROJECT_ROOT, Settings
from mlops.storage import ObjectStore, make_store, write_snapshot
from tests.helpers import clean_frame

MODEL = "credit-risk"
KEY = "review-test-key"


def contracts() -> tuple[Contract, Contract]:
    folder = PROJECT_ROOT / "data_contracts"
    return load_contract(folder, "credit_applications"), load_contract(folder, "credit_outcomes")


def application_snapshot(
    store: ObjectStore, contract: Contract, n: int, seed: int
) -> tuple[str, pd.DataFrame]:
    """A validated application snapshot of ``n`` contract-clean rows; returns (sha256, rows)."""
    frame = clean_frame(contract, n, seed=seed)
    ref = write_snapshot(store, frame, dataset=contract.name, kind=KIND_VALID)
    return ref.sha256, frame


def predictions(
    snapshot: str,
    ids: Sequence[str],
    scores: Sequence[float],
    *,
    version: str = "3",
    role: str = "champion",
    routed: Sequence[int] = (),
    rows: Sequence[int] | None = None,
    model: str = MODEL,
) -> pd.DataFrame:
    """Prediction rows for ``append_predictions``: decline when score >= 0.5."""
    score = np.asarray(scores, dtype="float64")
    return pd.DataFrame(
        {
            "entity_id": list(ids),
            "model_name": model,
            "model_version": version,
            "model_alias": {"champion": "champion"}.get(role, "challenger"),
            "role": role,
            "score": score,
            "decision": np.where(score >= 0.5, "decline", "approve"),
            "input_snapshot": snapshot,
            "input_row": np.asarray(rows if rows is not None else range(len(ids)), dtype=np.int64),
            "input_hash": [hashlib.sha256(i.encode()).hexdigest() for i in ids],
            "review_routed": [i in routed for i in range(len(ids))],
            "review_reason": ["score in the review band" if i in routed else None for i in range(len(ids))],
        }
    )


def append(engine: Engine, frame: pd.DataFrame, batch_id: str) -> list[str]:
    """Append and return the record ids in row order."""
    return audit.append_predictions(engine, frame, batch_id=batch_id, hash_key=KEY).record_ids.tolist()


def routed_batch(
    settings: Settings, scores: Sequence[float], routed: Sequence[int], *, seed: int
) -> tuple[pd.DataFrame, list[str]]:
    """A stored application snapshot of ``len(scores)`` rows, and the champion's predictions of
    them (``routed`` ones sent to review) appended to the settings' audit store as batch "b1":
    (the rows, the record ids in row order)."""
    engine = audit.open_audit_store(settings)
    try:
        sha, frame = application_snapshot(make_store(settings), contracts()[0], len(scores), seed=seed)
        records = append(engine, predictions(sha, frame["application_id"], scores, routed=routed), "b1")
    finally:
        engine.dispose()
    return frame, records


def outcome_snapshot(
    store: ObjectStore, contract: Contract, labels: dict[str, int], observed: str = "2026-03-01"
) -> str:
    """A catalogued outcome snapshot (``application_id, observed_at, defaulted``)."""
    when = pd.Timestamp(observed, tz="UTC")
    frame = pd.DataFrame(
        {
            "application_id": list(labels),
            "observed_at": [when] * len(labels),
            "defaulted": np.asarray(list(labels.values()), dtype="int64"),
        }
    )
    ref = write_snapshot(store, frame, dataset=contract.name, kind=KIND_VALID)
    record_snapshot(
        store,
        CatalogEntry(
            dataset=contract.name,
            contract_version=contract.version,
            sha256=ref.sha256,
            uri=ref.uri,
            rows=ref.rows,
            source="test",
            ingested_at=datetime.now(UTC),
            min_timestamp=when,
            max_timestamp=when,
        ),
    )
    return ref.sha256
