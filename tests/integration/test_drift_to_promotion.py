"""Issue 5's "done when", end to end on a real ``prefect server start``, with no human step.

A drifted batch -> the monitor emits ``mlops.drift.detected`` -> the retrain deployment's
automation starts a retrain run -> it registers a challenger -> the challenger shadow-scores
the next batches -> the monitor emits ``mlops.shadow.completed`` -> the promote deployment's
automation starts a promote run -> the embedded profile's ``auto`` policy approves it and
records that it did -> the champion alias moves, the old champion is the rollback target and
``mlops.model.promoted`` reaches the server.

* History (no Prefect): simulated days 0-3 (``covariate_shift`` from :data:`DRIFT_DAY` = 5,
  :data:`ROWS` rows a day) validated with their outcomes, version 1 trained and promoted as
  the bootstrap champion.
* The ``retrain`` and ``promote`` deployments are served in one background process exactly as
  prefect.yaml declares them (triggers verbatim, parameters, concurrency limits), with this
  test's MLOPS_HOME, MLflow database and model spec, ``PREFECT_RUNNER_POLL_FREQUENCY=1``.
* The scoring and monitor flows run in this process against the server (its API URL set for
  the duration; the event and log workers are drained on the way in and out so nothing goes
  to another server). Nobody emits an event by hand.
* Day 4 (stable) and days 5, 6 (drifted) are scored by the champion; their outcomes arrive;
  the monitor judges the three windows, the alarm rule (2 features in 2 consecutive windows)
  fires on day 6 and the monitor sends ``mlops.drift.detected``.
* The retrain run trains on every labelled day (0-6, the default training window), so the new
  version has seen the shifted population: it passes its gates and becomes challenger.
* Days 7, 8 (drifted) are scored with the challenger in shadow, their outcomes arrive, the
  monitor sees the spec's shadow minimums met (2 days, 1000 labelled rows) and announces it.
  The drift goes on, so this monitor run may alarm again: the trigger's debounce and the
  retrain flow's cooldown must keep that from training a second time.

Wall time here ~100 s on 2 busy cores (a third of it starting the server and the serving process).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import pandas as pd
import pytest
import sqlalchemy as sa

from mlops import audit
from mlops.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    EVENT_DRIFT_DETECTED,
    EVENT_MODEL_PROMOTED,
    EVENT_SHADOW_COMPLETED,
    model_resource,
)
from mlops.contracts import Contract, load_contract
from mlops.lineage import (
    LINEAGE_TAGS,
    TAG_APPLICATION_SNAPSHOTS,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_KIND,
    TAG_VERDICT,
)
from mlops.promotion import (
    ROLLBACK_TARGET_FOR_TAG,
    ROLLBACK_TARGET_TAG,
    TAG_TRIGGER_EVENT,
    TAG_TRIGGER_EVENT_ID,
    MlflowRegistryMetadata,
    PromotionBackends,
    bootstrap_champion,
    dossier_keys,
    read_rollback_target,
    record_bootstrap,
)
from mlops.registry import make_registry
from mlops.settings import get_settings
from mlops.simulator import SimulationConfig, generate_applications
from mlops.storage import ObjectStore, make_store
from tests.monitoring_helpers import read_events, wait_until
from tests.prefect_server import (
    LocalServer,
    flow_runs_of,
    prefect_server,
    serve_from_prefect_yaml,
    wait_for_flow_deployment,
)
from tests.training_helpers import ingest, outcomes_of, run_train_tasks, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL: Final = "credit-risk"
RESOURCE: Final = model_resource(MODEL)
ROWS: Final = 1500
SEED: Final = 11
DRIFT_DAY: Final = 5
HISTORY: Final = range(0, 4)  # the bootstrap champion's training data
BEFORE_RETRAIN: Final = (4, 5, 6)  # one stable day, then two drifted: the alarm
SHADOW: Final = (7, 8)  # drifted days the challenger shadows
MIN_SHADOW_ROWS: Final = 1000


def _day(day: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(applications, outcomes) of ``day``; covariate shift from :data:`DRIFT_DAY` on."""
    config = SimulationConfig(
        seed=SEED, days=10, rows_per_day=ROWS, scenario="covariate_shift", drift_day=DRIFT_DAY
    )
    apps, labels = generate_applications(ROWS, day, config)
    return apps, outcomes_of(apps, labels)


def _contracts() -> tuple[Contract, Contract]:
    settings = get_settings()
    return (
        load_contract(settings.contracts_dir, "credit_applications"),
        load_contract(settings.contracts_dir, "credit_outcomes"),
    )


def _outcomes_arrive(store: ObjectStore, day: int) -> None:
    _, outcomes = _contracts()
    ingest(store, _day(day)[1], outcomes, f"outcomes/day_{day:04d}.csv")


@contextmanager
def _on(server: LocalServer) -> Iterator[None]:
    """Flows called in this process run on ``server``.

    The events and log workers are process-wide and keep the API URL they started with (a
    session's test harness may have started them): drain them so they restart on this server,
    and again before leaving so everything sent here reaches it.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    EventsWorker.drain_all(timeout=30)
    APILogWorker.drain_all(timeout=30)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        try:
            yield
        finally:
            EventsWorker.drain_all(timeout=30)
            APILogWorker.drain_all(timeout=30)


def _final(server: LocalServer, run_id: UUID) -> Any:
    with server.client() as client:
        run = client.read_flow_run(run_id)
    return run if run.state is not None and run.state.is_final() else None


def _triggered_run(server: LocalServer, deployment_id: UUID, what: str, *, timeout: float) -> Any:
    """The first flow run of the deployment, once finished (bounded waits, clear failures)."""
    runs = wait_until(lambda: flow_runs_of(server, deployment_id), timeout=60, every=0.5)
    assert runs, f"no {what} flow run within 60 s: the automation did not fire"
    first = min(runs, key=lambda r: r.created)
    done = wait_until(lambda: _final(server, first.id), timeout=timeout, every=1.0)
    assert done is not None, f"the {what} run {first.name} did not finish within {timeout:.0f} s"
    assert done.state.is_completed(), f"{what} run ended {done.state.type.value}: {done.state.message}"
    return done


def _events(name: str, since: datetime) -> list[Any]:
    return list(read_events([name], RESOURCE, since))


def _versions() -> list[int]:
    registry = make_registry()
    return sorted(int(v.version) for v in registry.client.search_model_versions(f"name='{MODEL}'"))


def _champions() -> list[int]:
    registry = make_registry()
    return [v for v in _versions() if ALIAS_CHAMPION in registry.aliases_of(MODEL, v)]


def _promotion_records() -> list[dict[str, Any]]:
    from mlops.audit import open_audit_store

    table = audit.audit_records
    stmt = sa.select(table).where(table.c.record_type == audit.RECORD_PROMOTION).order_by(table.c.seq)
    engine = open_audit_store(get_settings())
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
    finally:
        engine.dispose()


def test_a_drifted_batch_leads_to_a_promoted_challenger_with_no_human_step(
    mlflow_uri: str, mlops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    specs = tmp_path / "specs"
    write_spec(
        specs,
        training_window={"min_rows": 200},  # every labelled day: the retrain sees the new population
        drift={"min_window_rows": 300},
        shadow={"min_days": 2, "min_labelled_rows": MIN_SHADOW_ROWS},
    )
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(specs))
    for var in ("MLOPS_PROMOTION_APPROVAL", "MLOPS_APPROVERS", "MLOPS_PROMOTION_MIN_SHADOW_ROWS"):
        monkeypatch.delenv(var, raising=False)  # the embedded profile's own policy: auto

    # 1. History: stable days validated with outcomes, the bootstrap champion (version 1).
    store = make_store(get_settings())
    applications, outcomes = _contracts()
    for day in HISTORY:
        apps, outs = _day(day)
        ingest(store, apps, applications, f"applications/day_{day:04d}.csv")
        ingest(store, outs, outcomes, f"outcomes/day_{day:04d}.csv")
    registry = make_registry()
    assert run_train_tasks(MODEL).version == 1
    # as the promote flow's bootstrap does: the alias, then its audit record
    record_bootstrap(
        PromotionBackends.from_settings(get_settings()),
        bootstrap_champion(registry, MODEL, approved_by="integration test"),
    )
    assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    batches = {}
    for day in (*BEFORE_RETRAIN, *SHADOW):
        batches[day] = tmp_path / f"applications_day_{day:04d}.parquet"
        _day(day)[0].to_parquet(batches[day])
    print(f"history and champion ready after {time.monotonic() - started:.1f} s")

    from flows.monitor import monitor_drift
    from flows.score_batch import score_batch

    env = {
        "MLOPS_HOME": str(mlops_home),
        "MLOPS_PROFILE": "embedded",
        "MLOPS_MODEL_SPECS_DIR": str(specs),
        "MLOPS_MLFLOW_TRACKING_URI": mlflow_uri,
    }
    with (
        prefect_server(tmp_path / "prefect") as server,
        serve_from_prefect_yaml(server, tmp_path, ["retrain", "promote"], env=env),
        _on(server),
    ):
        since = datetime.now(UTC) - timedelta(seconds=2)
        print(f"server up after {time.monotonic() - started:.1f} s")

        # 2. Business as usual, then the population shifts: the champion scores, outcomes arrive.
        drifted_snapshots: set[str] = set()
        for day in BEFORE_RETRAIN:
            scored = score_batch(source=str(batches[day]), model=MODEL)
            assert scored.accepted and scored.champion_version == 1 and scored.challenger_version is None
            if day >= DRIFT_DAY:
                drifted_snapshots |= set(scored.snapshots)
            _outcomes_arrive(store, day)
        # (The serving process started up meanwhile; its automations must exist before the alarm.)
        retrain_id = wait_for_flow_deployment(server, "retrain", "retrain")
        promote_id = wait_for_flow_deployment(server, "promote", "promote")
        assert flow_runs_of(server, retrain_id) == []
        drift = monitor_drift(model=MODEL)
        assert [w.alarm for w in drift.windows] == [False, False, True], drift.message
        assert drift.event == EVENT_DRIFT_DETECTED and drift.severity == "act" and drift.event_id
        assert {"annual_income", "credit_score"} <= set(drift.windows[-1].drifting_features)
        assert flow_runs_of(server, promote_id) == []
        print(f"drift detected after {time.monotonic() - started:.1f} s: {drift.message}")

        # 3. The automation starts the retrain; it registers a challenger with lineage.
        retrained = _triggered_run(server, retrain_id, "retrain", timeout=240)
        [drift_event] = [e for e in _events(EVENT_DRIFT_DETECTED, since) if str(e.id) == drift.event_id]
        assert retrained.parameters["event_id"] == drift.event_id
        assert retrained.parameters["event"] == EVENT_DRIFT_DETECTED
        assert retrained.parameters["model"] == MODEL and retrained.parameters["severity"] == "act"
        assert retrained.parameters["reason"] == f"{EVENT_DRIFT_DETECTED}: {drift_event.payload['reason']}"
        assert retrained.created_by is not None and retrained.created_by.type == "AUTOMATION"
        assert drift_event.occurred <= retrained.created
        assert _versions() == [1, 2]
        assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == 2
        assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
        tags = registry.version_tags(MODEL, 2)
        assert (tags[TAG_TRIGGER_EVENT_ID], tags[TAG_TRIGGER_EVENT]) == (drift.event_id, EVENT_DRIFT_DETECTED)
        assert tags[TAG_VERDICT] == "passed"
        assert set(LINEAGE_TAGS) <= set(tags), sorted(set(LINEAGE_TAGS) - set(tags))
        assert drifted_snapshots and drifted_snapshots <= set(tags[TAG_APPLICATION_SNAPSHOTS].split(","))
        print(f"challenger v2 registered after {time.monotonic() - started:.1f} s")

        # 4. Shadow: the champion decides, the challenger scores alongside; outcomes arrive.
        for day in SHADOW:
            scored = score_batch(source=str(batches[day]), model=MODEL)
            assert scored.accepted and scored.champion_version == 1 and scored.challenger_version == 2
            _outcomes_arrive(store, day)
        shadowed = monitor_drift(model=MODEL)
        assert shadowed.shadow is not None and shadowed.shadow.complete, shadowed.shadow
        assert shadowed.shadow.challenger_version == 2 and shadowed.shadow.days == len(SHADOW)
        assert shadowed.shadow.labelled_rows == len(SHADOW) * ROWS and shadowed.shadow_event_id
        print(f"shadow complete after {time.monotonic() - started:.1f} s: {shadowed.message}")

        # 5. The automation starts the promotion; the auto policy approves and records it.
        promoted = _triggered_run(server, promote_id, "promote", timeout=180)
        [shadow_event] = _events(EVENT_SHADOW_COMPLETED, since)
        assert str(shadow_event.id) == shadowed.shadow_event_id
        assert promoted.parameters["model"] == shadow_event.payload["model"] == MODEL
        assert promoted.created_by is not None and promoted.created_by.type == "AUTOMATION"
        assert shadow_event.occurred <= promoted.created

        assert _champions() == [2]
        assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
        metadata = MlflowRegistryMetadata(registry)
        assert read_rollback_target(registry, metadata, MODEL) == 1
        model_tags = metadata.model_tags(MODEL)
        assert (model_tags[ROLLBACK_TARGET_TAG], model_tags[ROLLBACK_TARGET_FOR_TAG]) == ("1", "2")
        tags = registry.version_tags(MODEL, 2)
        assert tags[TAG_PROMOTION_KIND] == "shadow" and tags[TAG_PROMOTED_BY] == "auto-policy"

        [record] = [r for r in _promotion_records() if r["model_version"] == "2"]
        payload = record["payload"]
        assert record["decision"] == "promoted"
        assert payload["approval_policy"] == "auto" and payload["approver"] == "auto-policy"
        assert (payload["from_version"], payload["to_version"]) == (1, 2)
        assert payload["gate_verdict"] == "passed" and payload["shadow_rows"] >= MIN_SHADOW_ROWS
        dossier = json.loads(store.get_bytes(dossier_keys(MODEL, 2)[0]))
        assert dossier["trigger"]["source"] == "event" and dossier["trigger"]["event_id"] == drift.event_id
        assert dossier["rollback_target"] == 1

        [event] = wait_until(lambda: _events(EVENT_MODEL_PROMOTED, since), timeout=30)
        assert (event.payload["from_version"], event.payload["to_version"]) == (1, 2)
        assert event.payload["approver"] == "auto-policy" and event.payload["kind"] == "shadow"
        assert event.payload["rollback_target"] == 1
        assert event.payload["flow_run_id"] == str(promoted.id)

        # The drift went on during the shadow: whatever the trigger did with a second alarm,
        # nothing trained twice and no run of either deployment failed.
        for run in flow_runs_of(server, retrain_id) + flow_runs_of(server, promote_id):
            done = wait_until(partial(_final, server, run.id), timeout=120, every=1.0)
            assert done is not None and (done.state.is_completed() or done.state.is_cancelled()), done
        assert _versions() == [1, 2] and _champions() == [2]
        assert len(flow_runs_of(server, promote_id)) == 1
    print(f"drift -> retrain -> shadow -> promotion in {time.monotonic() - started:.1f} s")
