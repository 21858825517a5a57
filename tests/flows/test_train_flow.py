"""train and promote under the Prefect test harness, end to end on small simulated, validated data."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.promote import promote
from flows.train import TrainResult, train
from flows.validate_data import validate_data
from mlops.audit import open_audit_store
from mlops.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    EVENT_MODEL_PROMOTED,
    EVENT_MODEL_REGISTERED,
    model_resource,
)
from mlops.contracts import load_contract
from mlops.errors import WorkRefused
from mlops.lineage import (
    DECISION_RECORD_ARTIFACT,
    LINEAGE_TAGS,
    TAG_FLOW_RUN_ID,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_KIND,
    TAG_REVIEW_LABELS,
    TAG_REVIEW_LABELS_SHA256,
    TAG_VERDICT,
    review_labels_sha256,
)
from mlops.promotion import PromotionRefused, promotion_audit_records
from mlops.registry import IdenticalModel, make_registry
from mlops.settings import get_settings
from mlops.storage import make_store
from tests.helpers import latest_artifact, wait_for_events
from tests.training_helpers import ingest, simulated_day, write_spec

pytestmark = pytest.mark.flows

MODEL = "credit-risk"


@pytest.fixture
def validated_history(mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Days 0-3 of applications and outcomes; the last outcome batch goes through validate_data
    (as ``mlops outcomes PATH`` does). Returns that batch's snapshot sha256."""
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path / "specs"))
    write_spec(tmp_path / "specs")
    settings = get_settings()
    store = make_store(settings)
    apps_c = load_contract(settings.contracts_dir, "credit_applications")
    outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
    for day in range(4):
        apps, outs = simulated_day(day, 500)
        ingest(store, apps, apps_c, f"applications/day_{day:04d}.csv")
        if day < 3:
            ingest(store, outs, outs_c, f"outcomes/day_{day:04d}.csv")
    path = tmp_path / "outcomes_day_0003.csv"
    outs.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    summary = validate_data(source=str(path), contract="credit_outcomes")
    assert summary.accepted and summary.snapshot_sha256
    return summary.snapshot_sha256


def _of_run(flow_run_id: str | None) -> Callable[[Any], bool]:
    """Match events emitted inside one flow run (the flow run is a related resource)."""
    return lambda event: any(r.id == f"prefect.flow-run.{flow_run_id}" for r in event.related)


def test_train_flow_registers_a_challenger_with_lineage_and_a_decision_record(validated_history: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    started = time.perf_counter()
    result = train(model=MODEL)
    elapsed = time.perf_counter() - started
    print(f"train flow took {elapsed:.1f} s")

    assert isinstance(result, TrainResult)
    assert result.passed and result.verdict == "bootstrap" and result.alias == ALIAS_CHALLENGER
    assert result.version == 1 and result.champion_version is None and result.flow_run_id
    assert result.training_rows + result.evaluation_rows == 2000
    assert result.metrics["auc"] > 0.7

    registry = make_registry()
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == 1
    tags = registry.version_tags(MODEL, 1)
    assert set(LINEAGE_TAGS) <= set(tags)
    assert tags[TAG_FLOW_RUN_ID] == result.flow_run_id
    assert tags[TAG_REVIEW_LABELS] == "0" and tags[TAG_REVIEW_LABELS_SHA256] == review_labels_sha256([])
    assert validated_history in tags[TAG_OUTCOME_SNAPSHOTS].split(",")
    assert tags[TAG_VERDICT] == "bootstrap"
    record = registry.read_run_json(result.run_id, DECISION_RECORD_ARTIFACT)
    assert record["record_id"] == result.decision_record_id and record["flow_run_id"] == result.flow_run_id

    markdown = str(latest_artifact(f"decision-record-{MODEL}", result.flow_run_id))
    assert "BOOTSTRAP" in markdown and "version **1**" in markdown and "challenger" in markdown

    [event] = wait_for_events(
        EVENT_MODEL_REGISTERED, model_resource(MODEL), since=since, match=_of_run(result.flow_run_id)
    )
    assert event.payload["version"] == 1 and event.payload["verdict"] == "bootstrap"
    assert event.payload["alias"] == ALIAS_CHALLENGER and event.payload["run_id"] == result.run_id


def test_a_champion_that_cannot_score_the_evaluation_rows_is_named(validated_history: str) -> None:
    """Labelled rows without a column the champion was trained on (a contract that dropped it):
    the run is refused naming the champion and the way out, not "input lacks feature column(s)"
    as if the batch were bad input (exit 2)."""
    from mlops.model_spec import load_model_spec
    from mlops.promotion import bootstrap_champion
    from tasks.training import score_champion_task

    train(model=MODEL)
    bootstrap_champion(make_registry(), MODEL, approved_by="test")
    spec = load_model_spec(MODEL)
    rows, _ = simulated_day(5, 40)
    assert len(score_champion_task.fn(spec, rows, get_settings()).scores) == 40

    with pytest.raises(WorkRefused, match="champion version 1 cannot score this run's evaluation rows") as no:
        score_champion_task.fn(spec, rows.drop(columns=["interest_rate"]), get_settings())
    assert "interest_rate" in no.value.message and no.value.exit_code == 1
    assert no.value.hint and "mlops rollback --to VERSION" in no.value.hint


def test_promote_flow_bootstraps_the_first_champion_then_refuses(
    validated_history: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WorkRefused, match="no model named 'credit-risk' is registered") as refused:
        promote(model=MODEL, approver="bob")
    assert refused.value.hint and "mlops train --model credit-risk" in refused.value.hint
    train(model=MODEL)
    # Under the manual policy the first champion needs an allowed approver too; each refusal is
    # recorded in the audit trail and changes nothing.
    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL", "manual")
    monkeypatch.setenv("MLOPS_APPROVERS", "bob")
    engine = open_audit_store(get_settings())
    for who, why in (
        (None, "the first champion needs a person's approval too: give --approver WHO"),
        ("mallory", "'mallory' is not an allowed approver (allowed: bob)"),
    ):
        with pytest.raises(PromotionRefused, match=re.escape(why)) as no:
            promote(model=MODEL, approver=who)
        [record] = promotion_audit_records(engine, str(no.value.promotion_id))
        assert (record["decision"], record["payload"]["kind"], record["model_version"]) == (
            "refused",
            "bootstrap",
            "1",
        )
        assert make_registry().get_alias_version(MODEL, ALIAS_CHAMPION) is None
    engine.dispose()
    since = datetime.now(UTC) - timedelta(seconds=5)
    result = promote(model=MODEL, approver="bob")
    assert result.promoted and result.champion_version == 1
    assert result.record is not None and result.record.approved_by == "bob" and result.record.flow_run_id

    registry = make_registry()
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
    tags = registry.version_tags(MODEL, 1)
    assert tags[TAG_PROMOTION_KIND] == "bootstrap" and tags[TAG_PROMOTED_BY] == "bob"
    assert "approved by | bob" in str(latest_artifact(f"promotion-{MODEL}", result.record.flow_run_id))
    [event] = wait_for_events(
        EVENT_MODEL_PROMOTED, model_resource(MODEL), since=since, match=_of_run(result.record.flow_run_id)
    )
    assert event.payload["version"] == 1 and event.payload["kind"] == "bootstrap"

    with pytest.raises(WorkRefused, match=r"already has a champion \(version 1\)"):
        promote(model=MODEL, approver="bob")
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    # Training again on the same rows and spec gives the champion bit for bit: refused, not registered.
    with pytest.raises(
        IdenticalModel, match=re.escape("the candidate is bit for bit version 1 (the champion)")
    ):
        train(model=MODEL)
    assert max(int(v.version) for v in registry.client.search_model_versions(f"name='{MODEL}'")) == 1
