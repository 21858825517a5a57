"""train and promote under the Prefect test harness, end to end on small simulated, validated data."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    assert event.payload["champion_scored"] is None  # no champion yet


def _contract_without(tmp_path: Path, column: str) -> Path:
    """A copy of the contracts folder whose applications contract no longer holds ``column``."""
    folder = tmp_path / "contracts-after"
    shutil.copytree(get_settings().contracts_dir, folder)
    path = folder / "credit_applications.yaml"
    raw = yaml.safe_load(path.read_text())
    assert column in {c["name"] for c in raw["columns"]}
    raw["columns"] = [c for c in raw["columns"] if c["name"] != column]
    raw["version"] = "9.0.0"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def test_a_champion_that_cannot_score_the_evaluation_rows_fails_the_candidate_closed(
    validated_history: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The applications contract dropped a column the champion was trained on, and the labelled
    rows no longer hold it: no comparison, so non-inferiority fails closed, naming the champion
    and the way out; every other gate is still checked, and the candidate is registered as a
    failed version (no alias) with its lineage and decision record; `mlops train` exits 1."""
    from mlops.cli import main
    from mlops.lineage import TAG_COMPARED_WITH
    from mlops.promotion import bootstrap_champion

    assert train(model=MODEL).version == 1
    bootstrap_champion(make_registry(), MODEL, approved_by="test")
    monkeypatch.setenv("MLOPS_CONTRACTS_DIR", str(_contract_without(tmp_path, "interest_rate")))
    monkeypatch.setenv("MLOPS_STORE_URL", str(tmp_path / "store-after"))  # only rows without it
    settings = get_settings()
    store = make_store(settings)
    apps_c = load_contract(settings.contracts_dir, "credit_applications")
    outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
    for day in range(4, 8):
        apps, outs = simulated_day(day, 500)
        ingest(store, apps.drop(columns=["interest_rate"]), apps_c, f"applications/day_{day:04d}.csv")
        ingest(store, outs, outs_c, f"outcomes/day_{day:04d}.csv")
    since = datetime.now(UTC) - timedelta(seconds=5)

    assert main(["train", "--model", MODEL, "--json"]) == 1
    result = TrainResult.model_validate_json(capsys.readouterr().out.strip().splitlines()[-1])

    assert (result.version, result.verdict, result.passed, result.alias) == (2, "failed", False, None)
    assert result.champion_version == 1 and result.champion_metrics is None
    [failure] = [f for f in result.failures if f.startswith("non_inferiority.auc")]
    assert failure.startswith("non_inferiority.auc: champion v1 could not score the evaluation rows (")
    assert "interest_rate" in failure and "no comparison, fail closed" in failure
    assert "applications contract" in failure and "mlops rollback --to VERSION" in failure

    registry = make_registry()
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1  # nothing moved
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
    assert registry.aliases_of(MODEL, 2) == []
    tags = registry.version_tags(MODEL, 2)
    assert tags[TAG_VERDICT] == "failed" and tags[TAG_COMPARED_WITH] == "1"
    assert set(LINEAGE_TAGS) <= set(tags)
    record = registry.read_run_json(result.run_id, DECISION_RECORD_ARTIFACT)
    assert record["record_id"] == result.decision_record_id and record["verdict"] == "failed"
    assert record["baseline"]["version"] == "1" and record["champion_metrics"] is None
    assert "interest_rate" in record["baseline_unscored"]["reason"]
    assert failure in record["failures"]
    kinds = {c["kind"] for c in record["checks"]}
    assert kinds == {"floor", "non_inferiority", "slice_floor", "fairness"}  # all still checked

    markdown = str(latest_artifact(f"decision-record-{MODEL}", result.flow_run_id))
    assert "FAILED" in markdown and "version **2**" in markdown and "no alias" in markdown
    assert "could not score the evaluation rows" in markdown
    ni = next(line for line in markdown.splitlines() if line.startswith("| non-inferiority"))
    assert "not available" in ni and "**FAIL**" in ni

    [event] = wait_for_events(
        EVENT_MODEL_REGISTERED, model_resource(MODEL), since=since, match=_of_run(result.flow_run_id)
    )
    assert event.payload["version"] == 2 and event.payload["verdict"] == "failed"
    assert event.payload["alias"] is None and event.payload["champion_version"] == 1
    assert event.payload["champion_scored"] is False and event.payload["comparison_rows"] is None
    assert failure in event.payload["failures"]


def test_the_champion_is_compared_only_on_rows_newer_than_its_own_training(
    validated_history: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spec now holds out more rows (newest_fraction 0.25 -> 0.6), so older evaluation rows
    were the champion's training rows: on them it would look better than it is. The comparison
    uses only the rows at or after its own evaluation cutoff, says so in the check and the
    record, and the other gates still use every evaluation row."""
    from mlops.promotion import bootstrap_champion
    from mlops.training import EVALUATION_CUTOFF_PARAM

    first = train(model=MODEL)
    bootstrap_champion(make_registry(), MODEL, approved_by="test")
    write_spec(tmp_path / "specs", evaluation={"newest_fraction": 0.6, "min_rows": 100}, seed=7)
    since = datetime.now(UTC) - timedelta(seconds=5)

    result = train(model=MODEL)

    assert result.version == 2 and result.champion_version == 1
    assert result.evaluation_rows > first.evaluation_rows
    registry = make_registry()
    cutoff = registry.run_params(first.run_id)[EVALUATION_CUTOFF_PARAM]
    record = registry.read_run_json(result.run_id, DECISION_RECORD_ARTIFACT)
    assert record["data"]["n_rows"] == result.evaluation_rows  # floors, slices, fairness: all rows
    assert record["data"]["comparison_rows"] == first.evaluation_rows  # v1's own evaluation rows
    assert cutoff in record["data"]["comparison_note"] and "v1" in record["data"]["comparison_note"]
    [ni] = [c for c in record["checks"] if c["kind"] == "non_inferiority"]
    assert f"on {first.evaluation_rows} of {result.evaluation_rows} evaluation rows" in ni["message"]
    markdown = str(latest_artifact(f"decision-record-{MODEL}", result.flow_run_id))
    assert f"used {first.evaluation_rows} of these rows" in markdown
    [event] = wait_for_events(
        EVENT_MODEL_REGISTERED, model_resource(MODEL), since=since, match=_of_run(result.flow_run_id)
    )
    assert event.payload["champion_scored"] is True
    assert event.payload["comparison_rows"] == first.evaluation_rows


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
