"""Drift -> event -> retrain, case by case (the way Dagster tests a sensor), and rollback.

One module-scoped template home holds the trained history: days 0-3 of stable applications
and outcomes, version 1 (champion, bootstrap) and version 2 (the same data, no alias). Each
test copies it and adds the days its case needs: stable days (4, 5) or drifted days (from
:data:`~tests.monitoring_helpers.DRIFT_DAY` on). Windows are 400 rows; the test spec lowers
``min_window_rows`` to 300 and keeps the default alarm rule (2 features, 2 windows).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.monitor import MonitorResult, monitor_drift
from flows.retrain import retrain
from flows.rollback import rollback as rollback_flow
from mlops import audit
from mlops.audit import open_audit_store
from mlops.catalog import list_snapshots
from mlops.champion_loader import ChampionLoader
from mlops.cli import main
from mlops.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    EVENT_DRIFT_DETECTED,
    EVENT_MODEL_ROLLED_BACK,
    EVENT_PERFORMANCE_DEGRADED,
    EVENT_SHADOW_COMPLETED,
    model_resource,
)
from mlops.contracts import Contract, load_contract
from mlops.errors import ChainBroken, WorkRefused
from mlops.monitoring_state import load_state, reference_key
from mlops.promotion import (
    ROLLBACK_TARGET_FOR_TAG,
    ROLLBACK_TARGET_TAG,
    TAG_TRIGGER_EVENT,
    TAG_TRIGGER_EVENT_ID,
    MlflowRegistryMetadata,
    bootstrap_champion,
)
from mlops.registry import make_registry
from mlops.rollback import TAG_RESTORED_AT, TAG_ROLLED_BACK_BY
from mlops.settings import get_settings
from mlops.storage import ObjectStore, make_store, read_snapshot
from tests.helpers import latest_artifact
from tests.monitoring_helpers import (
    DRIFT_DAY,
    day_frames,
    ingest_days,
    promote_by_hand,
    read_events,
    settle_events,
    wait_until,
)
from tests.training_helpers import run_train_tasks, write_spec

pytestmark = [pytest.mark.flows, pytest.mark.slow]

MODEL = "credit-risk"
RESOURCE = model_resource(MODEL)
ALARMS = [EVENT_DRIFT_DETECTED, EVENT_PERFORMANCE_DEGRADED]


def _contracts() -> tuple[Contract, Contract]:
    settings = get_settings()
    return (
        load_contract(settings.contracts_dir, "credit_applications"),
        load_contract(settings.contracts_dir, "credit_outcomes"),
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[Path]:
    """Trained history shared by the tests of this module (copied, never changed by them)."""
    root = tmp_path_factory.mktemp("monitoring-template")
    home, specs = root / "home", root / "specs"
    home.mkdir()
    shutil.copy(_migrated_mlflow_db, home / "mlflow.db")
    write_spec(
        specs,
        training_window={"last_snapshots": 4, "min_rows": 200},
        drift={"min_window_rows": 300},
        shadow={"min_days": 2, "min_labelled_rows": 300},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLOPS_PROFILE", "embedded")
        mp.setenv("MLOPS_MODEL_SPECS_DIR", str(specs))
        for var in (
            "MLOPS_STORE_URL",
            "MLOPS_MLFLOW_TRACKING_URI",
            "MLOPS_AUDIT_DB_URL",
            "MLOPS_S3_ENDPOINT_URL",
        ):
            mp.delenv(var, raising=False)
        apps, outs = _contracts()
        ingest_days(make_store(get_settings()), apps, outs, range(4))
        registry = make_registry()
        assert run_train_tasks(MODEL).version == 1
        bootstrap_champion(registry, MODEL, approved_by="template")
        assert run_train_tasks(MODEL).version == 2
        registry.delete_alias(MODEL, ALIAS_CHALLENGER)
    yield root


@pytest.fixture
def home(template: Path, mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's copy of the template (object store, MLflow database, no audit records)."""
    shutil.copytree(template / "home", mlops_home, dirs_exist_ok=True)
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(template / "specs"))
    return mlops_home


def _store() -> ObjectStore:
    return make_store(get_settings())


def _ingest(days: range | list[int], *, with_outcomes: bool = False) -> dict[int, str]:
    apps, outs = _contracts()
    return ingest_days(_store(), apps, outs, days, with_outcomes=with_outcomes)


def _alarms(since: datetime, results: list[MonitorResult]) -> list[object]:
    """Alarm events sent by these monitor runs (the harness is shared with other tests)."""
    runs = {r.flow_run_id for r in results}
    return [e for e in read_events(ALARMS, RESOURCE, since) if e.payload.get("flow_run_id") in runs]


def _audit_champion_scores(snapshot: str, version: int) -> None:
    """Audit records for every row of ``snapshot`` as the scoring flow writes them."""
    apps, _ = _contracts()
    frame = read_snapshot(_store(), dataset=apps.name, kind="valid", sha256=snapshot)
    scores = ChampionLoader.from_settings(MODEL).model_for(version).predict(frame)
    n = len(frame)
    batch = pd.DataFrame(
        {
            "entity_id": frame["application_id"],
            "model_name": MODEL,
            "model_version": str(version),
            "model_alias": ALIAS_CHAMPION,
            "role": "champion",
            "score": pd.Series(scores, dtype="float64").to_numpy(),
            "decision": "approve",
            "input_snapshot": snapshot,
            "input_row": pd.Series(range(n), dtype="int64"),
            "input_hash": [hashlib.sha256(f"{snapshot}:{i}".encode()).hexdigest() for i in range(n)],
        }
    )
    audit.append_predictions(
        open_audit_store(get_settings()),
        batch,
        batch_id=f"test-{snapshot[:8]}",
        hash_key=get_settings().entity_hash_key,
    )


# --- cases ----------------------------------------------------------------------------------


def test_no_drift_no_event(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    shas = _ingest([4, 5])
    _audit_champion_scores(shas[4], 1)  # day 4 was scored by the scoring flow; day 5 was not

    result = monitor_drift(model=MODEL)

    assert result.champion_version == 1 and result.chain_ok and result.reference_built
    [anchor] = audit.stored_anchors(_store())  # the verified head, kept off the audit database
    assert anchor.seq == result.chain_records_checked
    assert result.reference_uri and result.reference_uri.endswith(reference_key(MODEL, 1).split("/")[-1])
    assert [w.snapshot for w in result.windows] == [shas[4], shas[5]]
    assert not any(w.alarm for w in result.windows) and not result.alarm and result.event_id is None
    state = load_state(_store(), MODEL, 1)
    assert state.processed_applications == [shas[4], shas[5]] and state.last_event is None
    assert "No alarm" in str(latest_artifact(f"drift-summary-{MODEL}"))
    capsys.readouterr()
    assert main(["monitor", "--model", MODEL, "--json"]) == 0  # the CLI door: nothing new, exit 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["ok"] and printed["alarm"] is False and printed["windows"] == []
    settle_events(RESOURCE, since)
    assert _alarms(since, [result, MonitorResult.model_validate(printed)]) == []

    # The anchor kept in the object store is checked: the newest record deleted with the head rewritten.
    engine = open_audit_store(get_settings())
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER audit_records_no_delete")
            conn.execute(sa.text("DELETE FROM audit_records WHERE seq = :s"), {"s": anchor.seq})
            conn.execute(
                sa.text(
                    "UPDATE audit_chain_head SET seq = :s, "
                    "record_hash = (SELECT record_hash FROM audit_records WHERE seq = :s)"
                ),
                {"s": anchor.seq - 1},
            )
    finally:
        engine.dispose()
    assert main(["audit", "verify", "--json"]) == 1
    broken = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["first_break"]
    assert (broken["kind"], broken["seq"]) == ("deleted", anchor.seq)


def test_drift_emits_exactly_one_event_and_judges_each_window_once(home: Path) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    _ingest([DRIFT_DAY, DRIFT_DAY + 1])

    first = monitor_drift(model=MODEL)
    again = monitor_drift(model=MODEL)  # nothing new: nothing judged, nothing sent

    assert first.alarm and first.event == EVENT_DRIFT_DETECTED and first.severity == "act"
    assert [w.alarm for w in first.windows] == [False, True]
    drifting = set(first.windows[-1].drifting_features)
    assert {"annual_income", "credit_score"} <= drifting
    assert not again.alarm and again.windows == [] and not again.reference_built
    [event] = wait_until(lambda: _alarms(since, [first, again]))
    assert event.id and str(event.id) == first.event_id
    assert event.payload["model"] == MODEL and event.payload["severity"] == "act"
    assert event.payload["window"] == first.windows[-1].window_id
    assert event.payload["report_uri"] == first.report_uri and Path(str(first.report_uri)).is_file()
    assert event.resource["prefect.resource.id"] == RESOURCE
    settle_events(RESOURCE, since)
    assert len(_alarms(since, [first, again])) == 1

    table = latest_artifact(f"drift-report-{MODEL}")
    assert "annual_income" in str(table)
    run = make_registry().client.get_run(str(first.mlflow_run_id))
    assert run.data.tags["mlops.monitoring.champion_version"] == "1"
    summary = str(latest_artifact(f"drift-summary-{MODEL}"))  # the quiet second run remembers the alarm
    assert "No alarm" in summary and f"event id `{first.event_id}`" in summary


def test_repeated_drift_inside_the_cooldown_skips_the_retrain_and_says_why(home: Path) -> None:
    _ingest([DRIFT_DAY, DRIFT_DAY + 1])
    first = monitor_drift(model=MODEL)
    assert first.event_id
    _ingest([DRIFT_DAY, DRIFT_DAY + 1], with_outcomes=True)  # their outcomes: something new to learn
    ran = retrain(model=MODEL, severity="act", event_id=first.event_id, event=first.event, reason="drift")
    assert ran.ran and ran.train is not None and ran.train.version == 3
    tags = make_registry().version_tags(MODEL, 3)
    assert (tags[TAG_TRIGGER_EVENT_ID], tags[TAG_TRIGGER_EVENT]) == (first.event_id, EVENT_DRIFT_DETECTED)

    _ingest([DRIFT_DAY + 2])  # the drift goes on: a new window, a new alarm
    second = monitor_drift(model=MODEL)
    assert second.alarm and second.event_id and second.event_id != first.event_id
    skipped = retrain(model=MODEL, severity="act", event_id=second.event_id, reason="drift")

    assert not skipped.ran and skipped.train is None
    assert skipped.reason.startswith("cooldown:"), skipped.reason
    assert skipped.key != ran.key  # new data; the cooldown, not the idempotency key, held it back
    markdown = str(latest_artifact(f"retrain-{MODEL}"))
    assert "SKIPPED" in markdown and "cooldown" in markdown


def test_the_cli_retrain_exits_1_when_the_candidate_fails_its_gates(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = write_spec(
        tmp_path / "strict-specs",
        training_window={"last_snapshots": 4, "min_rows": 200},
        gates={"floors": {"auc": {"min": 0.999}}},  # no candidate reaches it
    )
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(strict.parent))
    assert main(["retrain", "--model", MODEL, "--force", "--json"]) == 1  # like `mlops train`
    out = capsys.readouterr().out
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["ran"] and printed["train"]["verdict"] == "failed" and not printed["train"]["passed"]
    assert "failed its gates" in out and printed["train"]["decision_record_uri"] in out
    assert make_registry().version_tags(MODEL, printed["train"]["version"])  # still registered


def test_drift_after_a_promotion_resets_the_reference_and_does_not_loop(home: Path) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    drifted = list(range(DRIFT_DAY, DRIFT_DAY + 4))
    _ingest(drifted, with_outcomes=True)
    before = monitor_drift(model=MODEL)
    assert before.alarm and before.event == EVENT_DRIFT_DETECTED

    retrained = run_train_tasks(MODEL)  # trained on the newest 4 labelled (drifted) days
    promote_by_hand(MODEL, retrained.version, previous=1, by="test")
    after_promotion = monitor_drift(model=MODEL)
    assert after_promotion.champion_version == retrained.version and after_promotion.reference_built
    assert str(after_promotion.reference_uri).endswith(f"v{retrained.version}.json")
    assert after_promotion.windows == []  # the drifted days are the new reference, not windows

    _ingest([DRIFT_DAY + 4, DRIFT_DAY + 5])  # the drifted population goes on
    later = monitor_drift(model=MODEL)
    assert len(later.windows) == 2 and not later.alarm, [w.drifting_features for w in later.windows]
    state = load_state(_store(), MODEL, retrained.version)
    assert state.champion_version == retrained.version and len(state.alarm.windows) <= 2
    settle_events(RESOURCE, since)
    assert len(_alarms(since, [before, after_promotion, later])) == 1


def test_shadow_completed_is_emitted_once_when_the_challenger_shadowed_enough(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    shas = _ingest([4, 5], with_outcomes=True)
    make_registry().set_alias(MODEL, ALIAS_CHALLENGER, 2)
    engine = open_audit_store(get_settings())
    for day, sha in shas.items():
        apps, _ = day_frames(day)
        n = len(apps)
        audit.append_predictions(
            engine,
            pd.DataFrame(
                {
                    "entity_id": apps["application_id"],
                    "model_name": MODEL,
                    "model_version": "2",
                    "role": "shadow",
                    "score": 0.1,
                    "decision": "approve",
                    "input_snapshot": sha,
                    "input_row": pd.Series(range(n), dtype="int64"),
                    "input_hash": [hashlib.sha256(f"{sha}:{i}".encode()).hexdigest() for i in range(n)],
                }
            ),
            batch_id=f"shadow-{day}",
            hash_key=get_settings().entity_hash_key,
        )

    # MLOPS_PROMOTION_MIN_SHADOW_ROWS, the count the promotion requires, holds the announcement
    # back too (800 labelled rows < 1000): a promote run it triggered would only be refused.
    monkeypatch.setenv("MLOPS_PROMOTION_MIN_SHADOW_ROWS", "1000")
    held = monitor_drift(model=MODEL)
    assert held.shadow is not None and not held.shadow.complete and held.shadow_event_id is None
    assert held.shadow.min_labelled_rows == 1000 and held.shadow.labelled_rows == 800
    monkeypatch.delenv("MLOPS_PROMOTION_MIN_SHADOW_ROWS")

    first = monitor_drift(model=MODEL)
    second = monitor_drift(model=MODEL)

    assert first.shadow is not None and first.shadow.complete
    assert first.shadow.days == 2 and first.shadow.labelled_rows == 800 and first.shadow_event_id
    assert second.shadow is not None and second.shadow.complete and second.shadow_event_id is None
    [event] = wait_until(lambda: read_events([EVENT_SHADOW_COMPLETED], RESOURCE, since))
    assert event.payload["challenger_version"] == 2 and event.payload["model"] == MODEL
    settle_events(RESOURCE, since)
    assert len(read_events([EVENT_SHADOW_COMPLETED], RESOURCE, since)) == 1


def test_rollback_restores_the_previous_version_and_the_loader_picks_it_up(home: Path) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    promote_by_hand(MODEL, 2, previous=1, by="test")
    registry = make_registry()
    loader = ChampionLoader.from_settings(MODEL)
    entry = list_snapshots(_store(), "credit_applications")[0]
    apps = read_snapshot(_store(), dataset=entry.dataset, kind="valid", sha256=entry.sha256).head(50)
    loader.warm(1)  # a long-lived scorer that served version 1 before the promotion
    assert loader.predict(apps).version == 2

    started = time.perf_counter()
    result = rollback_flow(by="alice", reason="calibration broke on live traffic", model=MODEL)
    served = loader.predict(apps)  # the very next call
    elapsed = time.perf_counter() - started
    print(f"rollback flow + loader pickup: {elapsed:.2f} s")

    assert (result.from_version, result.to_version, result.record.target_source) == (2, 1, "recorded")
    assert served.version == 1 and served.load_seconds == 0.0 and loader.loads == 2
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    assert registry.version_tags(MODEL, 2)[TAG_ROLLED_BACK_BY] == "alice"
    assert registry.version_tags(MODEL, 1)[TAG_RESTORED_AT] == result.record.at.isoformat()
    tags = MlflowRegistryMetadata(registry).model_tags(MODEL)  # version 1 has no predecessor
    assert (tags[ROLLBACK_TARGET_FOR_TAG], tags[ROLLBACK_TARGET_TAG]) == ("1", "none")
    engine = open_audit_store(get_settings())
    assert audit.verify_chain(engine).ok
    with engine.connect() as conn:
        [row] = conn.execute(
            sa.select(audit.audit_records).where(audit.audit_records.c.record_type == "rollback")
        ).all()
    assert row.model_version == "1" and row.payload["by"] == "alice" and row.payload["from_version"] == 2
    assert str(row.record_id) == result.audit_record_id
    [event] = wait_until(lambda: read_events([EVENT_MODEL_ROLLED_BACK], RESOURCE, since))
    assert event.payload["from_version"] == 2 and event.payload["to_version"] == 1

    with pytest.raises(WorkRefused, match="no previous champion"):
        rollback_flow(by="alice", reason="again", model=MODEL)
    assert main(["rollback", "--by", "bob", "--reason", "again", "--json"]) == 1


def test_a_broken_audit_chain_fails_the_monitor(home: Path) -> None:
    engine = open_audit_store(get_settings())
    for i in range(3):
        audit.append_event(engine, "note", {"i": i}, model_name=MODEL)
    with engine.begin() as conn:
        for op in ("update", "delete"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS audit_records_no_{op}")
        conn.execute(sa.text("UPDATE audit_records SET payload = '{\"i\": 7}' WHERE seq = 2"))

    with pytest.raises(ChainBroken, match="seq 2"):
        monitor_drift(model=MODEL)
    assert main(["monitor", "--json"]) == 1


def test_a_retrain_with_no_new_labels_registers_no_copy(home: Path) -> None:
    """Scored batches bring applications without outcomes: the retrain's key changes, its
    training rows do not, and the model it would train is bit for bit the champion."""
    registry = make_registry()
    before = max(int(v.version) for v in registry.client.search_model_versions(f"name='{MODEL}'"))
    _ingest([DRIFT_DAY + 5])  # a new application snapshot, no outcomes
    copy = retrain(model=MODEL, severity="manual", reason="drift", force=True)
    assert not copy.ran and copy.train is None
    assert "the candidate is bit for bit version 1 (the champion)" in copy.reason
    assert max(int(v.version) for v in registry.client.search_model_versions(f"name='{MODEL}'")) == before
    markdown = str(latest_artifact(f"retrain-{MODEL}"))
    assert "SKIPPED" in markdown and "nothing new to register" in markdown

    _ingest([DRIFT_DAY + 5, DRIFT_DAY + 6], with_outcomes=True)  # new labels: a new model
    learned = retrain(model=MODEL, severity="manual", reason="labels", force=True)
    assert learned.ran and learned.train is not None and learned.train.version == before + 1
