"""Rows a version was trained on are no shadow evidence: the lineage keys and the monitor's count."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.contracts import load_contract
from mlops.lineage import (
    LINEAGE_ARTIFACT,
    TAG_APPLICATION_SNAPSHOTS,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_REVIEW_LABELS,
    ReviewLabel,
)
from mlops.monitoring_shadow import shadow_status
from mlops.registry import MlflowRegistry
from mlops.settings import PROJECT_ROOT
from mlops.shadow_comparison import lineage_review_labels, trained_entity_keys
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


def test_rows_a_review_labelled_for_training_are_trained_rows_too(tmp_path: Path) -> None:
    """A review-labelled training row had no outcome when the version was trained (that is why a
    person labelled it), so the lineage outcome snapshots do not name it; its outcome arrives
    later, and a replayed batch would grade the version on a row it learnt from."""
    store = LocalStore(tmp_path / "store")
    apps_c = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    outs_c = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    apps0, outs0 = simulated_day(0, ROWS)
    apps1, _ = simulated_day(1, ROWS)
    app0, out0 = ingest(store, apps0, apps_c, "apps/0"), ingest(store, outs0, outs_c, "outs/0")
    app1 = ingest(store, apps1, apps_c, "apps/1")  # its outcomes had not arrived
    tags = {TAG_APPLICATION_SNAPSHOTS: f"{app0},{app1}", TAG_OUTCOME_SNAPSHOTS: out0}
    reviewed = [
        ReviewLabel(review_record_id=f"r{i}", case_id=f"c{i}", input_snapshot=app1, input_row=i, label=1)
        for i in (3, 7)
    ]
    without = trained_entity_keys(store, apps_c, outs_c, tags, KEY)
    trained = trained_entity_keys(store, apps_c, outs_c, tags, KEY, reviewed)
    keys = set(audit.entity_key(apps1["application_id"].iloc[[3, 7]], KEY))
    assert not keys & without
    assert trained == without | keys
    assert trained_entity_keys(store, apps_c, outs_c, {}, KEY, reviewed) == keys


def test_the_review_labels_are_read_from_the_lineage_only_when_the_tags_count_some(tmp_path: Path) -> None:
    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = registry.client
    run = client.create_run(client.create_experiment("m", artifact_location=str(tmp_path / "artifacts")))
    client.create_registered_model("m")
    client.create_model_version("m", source=f"{run.info.run_id}/model", run_id=run.info.run_id)
    label = ReviewLabel(review_record_id="r", case_id="c", input_snapshot="a" * 64, input_row=4, label=0)
    registry.log_run_json(run.info.run_id, {"review_labels": [label.model_dump()]}, LINEAGE_ARTIFACT)
    assert lineage_review_labels(registry, "m", 1, {TAG_REVIEW_LABELS: "1"}) == [label]
    assert lineage_review_labels(registry, "m", 1, {TAG_REVIEW_LABELS: "0"}) == []
