"""Rows a version was trained on are no shadow evidence: the lineage keys and the monitor's count."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.contracts import load_contract
from mlops.lineage import TAG_APPLICATION_SNAPSHOTS, TAG_OUTCOME_SNAPSHOTS
from mlops.monitoring_shadow import shadow_status
from mlops.settings import PROJECT_ROOT
from mlops.shadow_comparison import trained_entity_keys
from mlops.shadow_policy import ShadowPolicy
from mlops.storage import LocalStore
from tests.training_helpers import ingest, simulated_day

pytestmark = pytest.mark.unit

KEY = "test-entity-key"
ROWS = 60


def test_the_monitor_counts_no_training_row_as_labelled_shadow_evidence(
    engine: Engine, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    apps_c = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    outs_c = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    shas = {}
    for day in (0, 1):  # day 0: the challenger's training batch, replayed; day 1: a new day
        apps, outs = simulated_day(day, ROWS)
        shas[day] = ingest(store, apps, apps_c, f"apps/{day}"), ingest(store, outs, outs_c, f"outs/{day}")
        audit.append_predictions(
            engine,
            pd.DataFrame(
                {
                    "entity_id": apps["application_id"],
                    "model_name": "credit-risk",
                    "model_version": "2",
                    "role": "shadow",
                    "score": 0.1,
                    "decision": "approve",
                    "input_snapshot": shas[day][0],
                    "input_row": pd.Series(range(ROWS), dtype="int64"),
                    "input_hash": [hashlib.sha256(f"{day}:{i}".encode()).hexdigest() for i in range(ROWS)],
                }
            ),
            batch_id=f"shadow-{day}",
            hash_key=KEY,
            open_cases=False,
        )
    tags = {TAG_APPLICATION_SNAPSHOTS: shas[0][0], TAG_OUTCOME_SNAPSHOTS: shas[0][1]}
    trained = trained_entity_keys(store, apps_c, outs_c, tags, KEY)
    assert trained == set(audit.entity_key(simulated_day(0, ROWS)[0]["application_id"], KEY))

    def labelled(exclude: set[str]) -> int:
        return shadow_status(
            engine,
            store,
            model="credit-risk",
            challenger_version=2,
            champion_version=1,
            applications=apps_c,
            outcomes=outs_c,
            policy=ShadowPolicy(min_days=1, min_labelled_rows=ROWS + 1),
            hash_key=KEY,
            trained=exclude,
        ).labelled_rows

    assert labelled(set()) == 2 * ROWS
    assert labelled(trained) == ROWS  # the new day only, as the promotion will count
