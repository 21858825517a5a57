"""Shadow-based promotion under the Prefect test harness, with a real MLflow registry (SQLite).

Each test trains a champion (bootstrapped through the promote flow) and a challenger on small
simulated, validated data, then writes shadow traffic straight into the audit store: the
same applications scored by both registered models (champion records and shadow records),
with their outcomes ingested as validated snapshots. No score flow is involved.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterName,
)
from prefect.flow_runs import resume_flow_run

from flows.promote import promote
from mlops import audit
from mlops.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    EVENT_DRIFT_DETECTED,
    EVENT_MODEL_PROMOTED,
    KIND_VALID,
    model_resource,
)
from mlops.contracts import load_contract
from mlops.events import emit
from mlops.lineage import (
    TAG_APPLICATION_SNAPSHOTS,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_KIND,
    TAG_SNAPSHOTS_SHA256,
)
from mlops.promotion import (
    COMMIT_STEPS,
    CRASH_AFTER_ENV,
    OUTCOME_ABORTED,
    OUTCOME_PROMOTED,
    OUTCOME_REFUSED,
    ROLLBACK_TARGET_FOR_TAG,
    ROLLBACK_TARGET_TAG,
    STEP_CLEAR_CHALLENGER,
    STEP_MOVE_CHAMPION,
    TAG_PROMOTION_ID,
    TAG_TRIGGER_EVENT_ID,
    InjectedCrash,
    MlflowRegistryMetadata,
    PromotionBackends,
    PromotionRefused,
    ShadowPromotion,
    commit_promotion,
    dossier_keys,
    policy_approval,
    read_registry_state,
    read_rollback_target,
)
from mlops.registry import MlflowRegistry, make_registry
from mlops.settings import DEFAULT_MODEL_SPECS_DIR, get_settings
from mlops.storage import make_store, read_snapshot, snapshot_key
from tasks.promotion import compare_on_shadow_task, plan_promotion_task
from tests.helpers import latest_artifact, wait_for_events
from tests.training_helpers import ingest, ingest_settings_history, run_train_tasks, simulated_day, write_spec

pytestmark = pytest.mark.flows

MODEL = "credit-risk"
SHADOW_DAYS = (10, 11)
SHADOW_ROWS = 350
MIN_SHADOW_ROWS = 300
EARLY = 3  # shadow outcomes dated the day before their application (the happy path)
# The repo's gates with a wider non-inferiority margin: a few hundred evaluation rows give a
# paired-bootstrap CI of about +-0.03 AUC between two honestly different models.
GATES: dict[str, Any] = {
    **yaml.safe_load((DEFAULT_MODEL_SPECS_DIR / "credit-risk.yaml").read_text())["gates"],
    "non_inferiority": {"metric": "auc", "margin": 0.05, "confidence": 0.95, "n_bootstrap": 200, "seed": 0},
}
SHADOW_POLICY: dict[str, int] = {"min_days": len(SHADOW_DAYS), "min_labelled_rows": MIN_SHADOW_ROWS}
# A challenger that passes its training gates only because they are relaxed: few features,
# shallow trees. On the shadow rows, against the strict spec, it is clearly worse.
WEAK_SPEC: dict[str, Any] = {
    "exclude_features": [
        "credit_score",
        "debt_to_income",
        "interest_rate",
        "num_delinquencies_2y",
        "revolving_utilization",
        "annual_income",
    ],
    "num_boost_round": 3,
    "gates": {"non_inferiority": {"metric": "auc", "margin": 0.5, "n_bootstrap": 100}},
}


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def specs(mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small spec, five validated days of history, fast approval polling, policy from env."""
    folder = tmp_path / "specs"
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(folder))
    monkeypatch.setenv("MLOPS_APPROVAL_POLL_SECONDS", "1")
    for var in (
        "MLOPS_APPROVERS",
        "MLOPS_PROMOTION_APPROVAL",
        "MLOPS_PROMOTION_MIN_SHADOW_ROWS",
        CRASH_AFTER_ENV,
    ):
        monkeypatch.delenv(var, raising=False)
    _write_spec(folder)
    ingest_settings_history(days=5)
    return folder


@pytest.fixture
def champion(specs: Path) -> MlflowRegistry:
    """Version 1, bootstrapped to champion through the promote flow."""
    run_train_tasks(MODEL)
    result = promote(model=MODEL, approver="alice")
    assert result.promoted and result.champion_version == 1
    return make_registry()


def _write_spec(folder: Path, **overrides: Any) -> None:
    write_spec(folder, **{"gates": GATES, "shadow": SHADOW_POLICY, **overrides})


def _train_challenger(specs: Path, **overrides: Any) -> int:
    _write_spec(specs, **overrides)
    registered = run_train_tasks(MODEL)
    _write_spec(specs)  # the promotion is judged by the normal spec
    assert registered.alias == ALIAS_CHALLENGER, registered.decision_record.failures
    return int(registered.version)


@pytest.fixture
def good_challenger(champion: MlflowRegistry, specs: Path) -> int:
    """Version 2 on other data (day 5 added), passing its gates: the challenger."""
    return _train_challenger(specs, training_window={"min_rows": 200, "last_days": 4})


def _backends() -> PromotionBackends:
    return PromotionBackends.from_settings(get_settings())


def _score_both(sha: str, batch: str) -> None:
    """Score one validated application snapshot with champion and challenger; audit both."""
    settings = get_settings()
    backends = _backends()
    registry = backends.registry
    apps_c = load_contract(settings.contracts_dir, "credit_applications")
    state = read_registry_state(registry, MODEL)
    assert state.champion is not None and state.challenger is not None
    models = {
        ("champion", ALIAS_CHAMPION, state.champion): registry.load_model(MODEL, ALIAS_CHAMPION),
        ("shadow", ALIAS_CHALLENGER, state.challenger): registry.load_model(MODEL, ALIAS_CHALLENGER),
    }
    rows = read_snapshot(backends.store, dataset=apps_c.name, kind=KIND_VALID, sha256=sha)
    for (role, alias, version), model in models.items():
        scores = np.asarray(model.predict(rows), dtype="float64")
        frame = pd.DataFrame(
            {
                "entity_id": rows["application_id"],
                "model_name": MODEL,
                "model_version": str(version),
                "model_alias": alias,
                "role": role,
                "score": scores,
                "decision": np.where(scores >= 0.25, "decline", "approve"),
                "input_snapshot": sha,
                "input_row": np.arange(len(rows), dtype="int64"),
                "input_hash": [hashlib.sha256(f"{sha}:{i}".encode()).hexdigest() for i in range(len(rows))],
            }
        )
        audit.append_predictions(
            backends.audit,
            frame,
            batch_id=f"{batch}-{role}",
            hash_key=settings.entity_hash_key,
            open_cases=False,
        )


def shadow_traffic(days: tuple[int, ...] = SHADOW_DAYS, *, outcomes: bool = True, early: int = 0) -> None:
    """Score each day's validated applications with champion and challenger; audit both.
    ``early``: that many outcomes of the first day are dated the day before their application."""
    settings = get_settings()
    store = _backends().store
    apps_c = load_contract(settings.contracts_dir, "credit_applications")
    outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
    for day in days:
        raw, out = simulated_day(day, SHADOW_ROWS, seed=11)
        sha = ingest(store, raw, apps_c, f"applications/shadow_{day:04d}.csv")
        _score_both(sha, f"shadow-{day}")
        if outcomes:
            if early and day == days[0]:
                out = out.copy()
                out.loc[: early - 1, "observed_at"] = raw.loc[: early - 1, "applied_at"] - pd.Timedelta(
                    days=1
                )
            ingest(store, out, outs_c, f"outcomes/shadow_{day:04d}.csv")


def promotion_records(decision: str | None = None) -> list[dict[str, Any]]:
    table = audit.audit_records
    import sqlalchemy as sa

    stmt = sa.select(table).where(table.c.record_type == audit.RECORD_PROMOTION).order_by(table.c.seq)
    with _backends().audit.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    return [r for r in rows if decision is None or r["decision"] == decision]


def champions(registry: MlflowRegistry) -> list[int]:
    """Every version the champion alias points at (an alias names one version: length <= 1)."""
    versions = [int(v.version) for v in registry.client.search_model_versions(f"name='{MODEL}'")]
    return [v for v in versions if ALIAS_CHAMPION in registry.aliases_of(MODEL, v)]


def _store_json(key: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_backends().store.get_bytes(key))
    return data


# --- the happy path: auto policy ------------------------------------------------------------------


def test_auto_policy_promotes_on_shadow_evidence_with_dossier_and_event(good_challenger: int) -> None:
    registry = make_registry()
    metadata = MlflowRegistryMetadata(registry)
    assert read_rollback_target(registry, metadata, MODEL) is None  # bootstrap: nothing to go back to
    [bootstrap] = promotion_records(OUTCOME_PROMOTED)
    assert bootstrap["payload"]["kind"] == "bootstrap" and bootstrap["model_version"] == "1"

    drift_event = emit(EVENT_DRIFT_DETECTED, model_resource(MODEL), {"severity": "high", "report": "r.json"})
    assert drift_event is not None
    registry.set_version_tags(MODEL, good_challenger, {TAG_TRIGGER_EVENT_ID: drift_event})
    shadow_traffic(early=EARLY)  # outcomes dated before their application: not compared on
    since = datetime.now(UTC)  # after the bootstrap's event

    result = promote(model=MODEL)

    assert result.promoted and not result.recovered and result.champion_version == good_challenger
    record = result.record
    assert record is not None and record.kind == "shadow" and record.previous_champion == 1
    assert record.approved_by == "auto-policy" and record.approval_channel == "auto-policy"
    assert champions(registry) == [good_challenger]
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
    assert read_rollback_target(registry, metadata, MODEL) == 1
    model_tags = metadata.model_tags(MODEL)
    assert model_tags[ROLLBACK_TARGET_TAG] == "1" and model_tags[ROLLBACK_TARGET_FOR_TAG] == str(
        good_challenger
    )
    tags = registry.version_tags(MODEL, good_challenger)
    assert tags[TAG_PROMOTION_KIND] == "shadow" and tags[TAG_PROMOTED_BY] == "auto-policy"
    assert tags[TAG_PROMOTION_ID] == record.record_id

    # The audit chain: one promotion record with who/when/from/to/evidence; the chain verifies.
    [promoted] = [r for r in promotion_records(OUTCOME_PROMOTED) if r["batch_id"] == record.record_id]
    payload = promoted["payload"]
    assert payload["approver"] == "auto-policy" and payload["approval_policy"] == "auto"
    assert payload["from_version"] == 1 and payload["to_version"] == good_challenger
    assert payload["gate_verdict"] == "passed" and payload["shadow_rows"] >= MIN_SHADOW_ROWS
    assert payload["metric"] == "auc" and len(payload["ci"]) == 2 and payload["decided_at"]
    assert promoted["record_id"] == record.audit_record_id
    assert audit.verify_chain(_backends().audit).ok

    # The compliance dossier: object store (JSON + Markdown), MLflow run, Prefect artifact.
    json_key, md_key = dossier_keys(MODEL, good_challenger)
    dossier = _store_json(json_key)
    assert dossier["promotion_id"] == record.record_id and dossier["rollback_target"] == 1
    assert (dossier["from_version"], dossier["to_version"]) == (1, good_challenger)
    assert [a["approver"] for a in dossier["approvals"]] == ["auto-policy"]
    assert dossier["approvals"][0]["channel"] == "auto-policy" and dossier["approvals"][0]["allowed"]
    assert dossier["gates"]["verdict"] == "passed" and dossier["gates"]["baseline"]["version"] == "1"
    assert dossier["audit_record_id"] == promoted["record_id"]
    shadow = dossier["data"]["shadow"]
    assert (
        shadow["labelled"] == 2 * SHADOW_ROWS - EARLY
        and shadow["outcomes_before_application"] == EARLY
        and shadow["slices_checked"]
        and shadow["roles"] == {"shadow": 2 * SHADOW_ROWS - EARLY}
    )
    training = dossier["data"]["challenger_training"]
    assert ",".join(training["application_snapshots"]) == tags[TAG_APPLICATION_SNAPSHOTS]
    assert ",".join(training["outcome_snapshots"]) == tags[TAG_OUTCOME_SNAPSHOTS]
    assert training["snapshots_sha256"] == tags[TAG_SNAPSHOTS_SHA256]
    used = {c["used_for"] for c in dossier["contracts"]}
    assert used == {"challenger training", "champion training", "shadow inputs", "shadow outcomes"}
    contracts_dir = get_settings().contracts_dir
    assert all(
        c["verdict"] == "accepted"
        and c["contract_version"] == load_contract(contracts_dir, c["dataset"]).version
        for c in dossier["contracts"]
    )
    assert dossier["trigger"]["source"] == "event" and dossier["trigger"]["event_id"] == drift_event
    assert dossier["lineage"]["previous_champion"]["version"] == 1
    assert dossier["lineage"]["new_champion"]["lineage"][TAG_SNAPSHOTS_SHA256] == tags[TAG_SNAPSHOTS_SHA256]
    markdown = _backends().store.get_bytes(md_key).decode()
    assert "# Promotion dossier: `credit-risk` version 1 -> 2" in markdown and "auto-policy" in markdown
    run_id = registry.version_run_id(MODEL, good_challenger)
    logged = registry.read_run_json(run_id, f"dossiers/{record.record_id}.json")
    assert logged["promotion_id"] == record.record_id
    assert "Promotion dossier" in str(latest_artifact(f"promotion-{MODEL}"))

    [event] = wait_for_events(EVENT_MODEL_PROMOTED, model_resource(MODEL), since=since)
    assert event.payload["from_version"] == 1 and event.payload["to_version"] == good_challenger
    assert event.payload["approver"] == "auto-policy" and event.payload["kind"] == "shadow"
    assert event.payload["dossier_uri"] == record.dossier_uri and record.dossier_uri.endswith(json_key)


# --- refusals ---------------------------------------------------------------------------------


def test_refused_without_enough_labels_then_for_a_worse_challenger(
    champion: MlflowRegistry, specs: Path
) -> None:
    weak = _train_challenger(specs, **WEAK_SPEC)
    shadow_traffic(outcomes=False)  # scored, but no outcome has arrived yet

    with pytest.raises(PromotionRefused, match="only 0 labelled shadow rows"):
        promote(model=MODEL)
    [first] = promotion_records(OUTCOME_REFUSED)
    assert first["payload"]["shadow_rows"] == 0 and first["payload"]["gate_verdict"] is None
    assert champions(champion) == [1] and champion.get_alias_version(MODEL, ALIAS_CHALLENGER) == weak

    settings = get_settings()
    outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
    for day in SHADOW_DAYS:
        ingest(make_store(settings), simulated_day(day, SHADOW_ROWS, seed=11)[1], outs_c, f"outcomes/{day}")
    with pytest.raises(PromotionRefused, match=r"non_inferiority\.auc") as refused:
        promote(model=MODEL)

    assert champions(champion) == [1] and champion.get_alias_version(MODEL, ALIAS_CHALLENGER) == weak
    assert TAG_PROMOTION_ID not in champion.version_tags(MODEL, weak)
    second = promotion_records(OUTCOME_REFUSED)[-1]
    assert second["batch_id"] == refused.value.promotion_id and second["model_version"] == str(weak)
    assert (
        second["payload"]["gate_verdict"] == "failed" and second["payload"]["shadow_rows"] == 2 * SHADOW_ROWS
    )
    assert any("non_inferiority" in r for r in second["payload"]["reasons"])
    assert second["payload"]["difference"] < 0 and second["payload"]["approver"] is None
    # The full decision: in the store and on the challenger's MLflow run; and shown in Prefect.
    stored = ShadowPromotion.model_validate(
        _store_json(f"promotions/{MODEL}/{refused.value.promotion_id}.json")
    )
    assert stored.outcome == "refused" and stored.evidence is not None
    assert stored.evidence.decision_record is not None and stored.evidence.decision_record.verdict == "failed"
    logged = champion.read_run_json(
        champion.version_run_id(MODEL, weak), f"promotions/{refused.value.promotion_id}.json"
    )
    assert logged["outcome"] == "refused"
    assert "FAIL" in str(latest_artifact(f"promotion-{MODEL}"))
    assert not _backends().store.exists(dossier_keys(MODEL, weak)[0])

    # The command line says "refused" with exit code 1.
    from mlops.cli import main

    assert main(["promote", "--model", MODEL, "--json"]) == 1
    assert len(promotion_records(OUTCOME_REFUSED)) == 3 and champions(champion) == [1]


def test_a_scored_snapshot_altered_in_the_store_refuses_the_promotion(
    good_challenger: int, specs: Path
) -> None:
    """With no slice or fairness gate the rows are still needed (early outcomes): fail closed."""
    _write_spec(specs, gates={k: GATES[k] for k in ("floors", "non_inferiority")})
    shadow_traffic()
    backends = _backends()
    with backends.audit.connect() as conn:
        scored = conn.execute(
            sa.select(audit.audit_records.c.input_snapshot).where(audit.audit_records.c.role == "shadow")
        ).scalars()
        key = snapshot_key(KIND_VALID, "credit_applications", sorted(set(scored))[0])
    backends.store.put_bytes(key, backends.store.get_bytes(key) + b"appended")

    with pytest.raises(PromotionRefused, match=r"(?s)hashes to .*: the slices, the fairness gate") as refused:
        promote(model=MODEL)

    assert refused.value.promotion_id and champions(make_registry()) == [1]
    [record] = promotion_records(OUTCOME_REFUSED)
    assert any("could not be read" in r for r in record["payload"]["reasons"])


def test_rows_the_challenger_was_trained_on_are_no_shadow_evidence(good_challenger: int) -> None:
    """A backfill that scores the challenger's own training batches in shadow: those rows (with
    their outcomes long known) would grade it on what it learnt; only the new days count."""
    tags = make_registry().version_tags(MODEL, good_challenger)
    trained_batches = tags[TAG_APPLICATION_SNAPSHOTS].split(",")
    for i, sha in enumerate(trained_batches):
        _score_both(sha, f"replay-{i}")
    settings = get_settings()
    state = read_registry_state(make_registry(), MODEL)

    replay_only = compare_on_shadow_task.fn(MODEL, state, settings, None)

    assert not replay_only.passed and replay_only.data.labelled == 0
    assert replay_only.data.trained_on > MIN_SHADOW_ROWS
    assert "rows the champion or the challenger was trained on" in replay_only.reasons[0]

    shadow_traffic()
    evidence = compare_on_shadow_task.fn(MODEL, state, settings, None)

    assert evidence.data.labelled == 2 * SHADOW_ROWS  # the new days only
    assert evidence.data.trained_on == replay_only.data.trained_on
    assert set(evidence.data.input_snapshots).isdisjoint(trained_batches)


def test_manual_policy_on_the_command_line(good_challenger: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL", "manual")
    shadow_traffic()
    registry = make_registry()

    with pytest.raises(PromotionRefused, match="no approvers are configured"):
        promote(model=MODEL, approver="alice")
    monkeypatch.setenv("MLOPS_APPROVERS", "alice, bob")
    with pytest.raises(PromotionRefused, match="'mallory' is not an allowed approver"):
        promote(model=MODEL, approver="mallory")
    refused = promotion_records(OUTCOME_REFUSED)
    assert len(refused) == 2 and refused[-1]["payload"]["approver"] == "mallory"
    assert refused[-1]["payload"]["approver_allowed"] is False
    assert champions(registry) == [1]

    result = promote(model=MODEL, approver="alice")
    assert result.record is not None and result.record.approved_by == "alice"
    assert result.record.approval_channel == "cli" and champions(registry) == [good_challenger]


def _run_flow_in_thread(name: str, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run promote in a thread that keeps this thread's Prefect settings (the harness)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = promote.with_options(flow_run_name=name)(**kwargs)
        except BaseException as exc:
            box["error"] = exc

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), daemon=True)
    thread.start()
    return thread, box


def _resume_when_paused(name: str, thread: threading.Thread, run_input: dict[str, str]) -> None:
    """Poll the API until the named run is Paused with its form saved, then answer the form."""
    deadline = time.monotonic() + 120
    while True:
        assert thread.is_alive(), "the flow finished without pausing"
        assert time.monotonic() < deadline, "the flow run never paused"
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        if runs and runs[0].state is not None and runs[0].state.is_paused():
            try:
                resume_flow_run(runs[0].id, run_input=run_input)
                return
            except RuntimeError:  # the form's schema is saved just after the pause
                pass
        time.sleep(0.5)


def _approve_in_ui(run_input: dict[str, str]) -> dict[str, Any]:
    name = f"promote-approval-{uuid.uuid4().hex[:8]}"
    thread, box = _run_flow_in_thread(name, model=MODEL)
    _resume_when_paused(name, thread, run_input)
    thread.join(timeout=120)
    assert not thread.is_alive()
    return box


def test_manual_policy_pauses_for_an_approval_in_the_prefect_ui(
    good_challenger: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL", "manual")
    monkeypatch.setenv("MLOPS_APPROVERS", "alice,bob")
    shadow_traffic()
    registry = make_registry()

    monkeypatch.setenv("MLOPS_APPROVAL_TIMEOUT_SECONDS", "2")  # nobody answers in time
    with pytest.raises(PromotionRefused, match="no approval within 2 s"):
        promote(model=MODEL)
    monkeypatch.delenv("MLOPS_APPROVAL_TIMEOUT_SECONDS")

    box = _approve_in_ui({"approver": "mallory", "decision": "approve", "reason": "looks fine"})
    assert isinstance(box.get("error"), PromotionRefused) and "not an allowed approver" in str(box["error"])
    box = _approve_in_ui({"approver": "bob", "decision": "reject", "reason": "wait for month end"})
    assert isinstance(box.get("error"), PromotionRefused) and "rejected by bob" in str(box["error"])
    refused = promotion_records(OUTCOME_REFUSED)
    assert [r["payload"]["approver"] for r in refused] == ["none", "mallory", "bob"]
    assert [r["payload"]["approval_channel"] for r in refused] == ["timeout", "prefect-ui", "prefect-ui"]
    assert champions(registry) == [1]

    box = _approve_in_ui({"approver": "alice", "decision": "approve", "reason": "shadow AUC holds"})
    result = box["result"]
    assert result.promoted and result.record.approved_by == "alice"
    assert result.record.approval_channel == "prefect-ui" and result.record.reason == "shadow AUC holds"
    assert champions(registry) == [good_challenger]
    dossier = _store_json(dossier_keys(MODEL, good_challenger)[0])
    assert dossier["approvals"][0]["approver"] == "alice" and dossier["approvals"][0]["policy"] == "manual"


def test_two_promote_runs_of_the_same_plan_at_once_promote_once(
    good_challenger: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell's `mlops promote` beside a triggered run (the deployment's own concurrency limit
    does not span them): the first is held inside its commit, just before the alias move; the
    second must not pass its "aliases unchanged" check meanwhile. It waits for the model's alias
    lock, then finds the champion moved and is refused with a record. Before the lock both
    committed: two `promoted` records for one alias move."""
    import mlops.alias_lock
    import tasks.promotion

    shadow_traffic()
    registry = make_registry()
    before = _net_promotions()  # the first champion's bootstrap
    inside, go, contended = threading.Event(), threading.Event(), threading.Event()
    move = tasks.promotion.step_move_champion
    try_acquire = mlops.alias_lock.try_acquire

    def held_first_time(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
        if not inside.is_set():
            inside.set()
            assert go.wait(120), "the test never let the first promotion go on"
        move(backends, promotion)

    def watched(*args: Any, **kwargs: Any) -> bool:
        taken = try_acquire(*args, **kwargs)
        if not taken:
            contended.set()
        return taken

    monkeypatch.setattr(tasks.promotion, "step_move_champion", held_first_time)
    monkeypatch.setattr(mlops.alias_lock, "try_acquire", watched)
    first, first_box = _run_flow_in_thread(f"promote-first-{uuid.uuid4().hex[:8]}", model=MODEL)
    assert inside.wait(120), "the first promote never reached its commit"
    second, second_box = _run_flow_in_thread(f"promote-second-{uuid.uuid4().hex[:8]}", model=MODEL)
    deadline = time.monotonic() + 120
    while not contended.is_set() and second.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    go.set()
    first.join(timeout=120)
    second.join(timeout=120)
    assert not first.is_alive() and not second.is_alive()

    assert first_box.get("result") is not None and first_box["result"].promoted, first_box
    assert isinstance(second_box.get("error"), PromotionRefused), second_box
    assert "changed from" in str(second_box["error"]) and "nothing was moved" in str(second_box["error"])
    assert len(_net_promotions() - before) == 1
    assert _assert_finished(registry, good_challenger) == first_box["result"].record.record_id
    assert len(promotion_records(OUTCOME_REFUSED)) == 1
    assert audit.verify_chain(_backends().audit).ok


# --- crashes ----------------------------------------------------------------------------------


def _reset_to_champion_1(registry: MlflowRegistry, challenger: int) -> None:
    """Put the aliases back as before a promotion (what a rollback would do)."""
    registry.set_alias(MODEL, ALIAS_CHAMPION, 1)
    registry.set_alias(MODEL, ALIAS_CHALLENGER, challenger)


def _net_promotions() -> set[str]:
    """Promotion ids with a ``promoted`` record that no ``aborted`` record answers."""
    records = promotion_records()
    aborted = {r["batch_id"] for r in records if r["decision"] == OUTCOME_ABORTED}
    return {r["batch_id"] for r in records if r["decision"] == OUTCOME_PROMOTED} - aborted


def _assert_finished(registry: MlflowRegistry, challenger: int) -> str:
    assert champions(registry) == [challenger]
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
    assert read_rollback_target(registry, MlflowRegistryMetadata(registry), MODEL) == 1
    promotion_id = registry.version_tags(MODEL, challenger)[TAG_PROMOTION_ID]
    assert promotion_id in _net_promotions()
    assert _store_json(dossier_keys(MODEL, challenger)[0])["promotion_id"] == promotion_id
    return promotion_id


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    def set_crash(step: str | None) -> None:
        if step is None:
            monkeypatch.delenv(CRASH_AFTER_ENV, raising=False)
        else:
            monkeypatch.setenv(CRASH_AFTER_ENV, step)

    yield set_crash
    monkeypatch.delenv(CRASH_AFTER_ENV, raising=False)


def test_a_crash_inside_the_transaction_rolls_back_and_promote_then_completes(
    good_challenger: int, crash_at: Callable[[str | None], None]
) -> None:
    shadow_traffic()
    registry = make_registry()
    metadata = MlflowRegistryMetadata(registry)
    for step in COMMIT_STEPS[:-1]:
        target_before = read_rollback_target(registry, metadata, MODEL)
        promoted_before = _net_promotions()
        tags_before = {
            k: v for k, v in registry.version_tags(MODEL, good_challenger).items() if "promotion" in k
        }

        crash_at(step)
        with pytest.raises(InjectedCrash, match=step):
            promote(model=MODEL)

        # The rollback hooks put everything back: one champion (the old one), same facts.
        assert champions(registry) == [1], step
        assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == good_challenger, step
        assert read_rollback_target(registry, metadata, MODEL) == target_before, step
        assert _net_promotions() == promoted_before, step
        tags_after = {
            k: v for k, v in registry.version_tags(MODEL, good_challenger).items() if "promotion" in k
        }
        assert tags_after == tags_before, step

        crash_at(None)
        result = promote(model=MODEL)
        assert result.promoted and not result.recovered, step
        assert result.record is not None
        assert _assert_finished(registry, good_challenger) == result.record.record_id
        _reset_to_champion_1(registry, good_challenger)


def _approved_plan(to_version: int, evidence: Any) -> ShadowPromotion:
    """The plan the promote flow writes for v1 -> ``to_version`` once the policy approved it."""
    settings = get_settings()
    return plan_promotion_task.fn(
        ShadowPromotion(
            model_name=MODEL,
            from_version=1,
            to_version=to_version,
            outcome="approved",
            reasons=[],
            evidence=evidence,
            approval=policy_approval(settings, None, "test"),
            requested_by="test",
            flow_run_id=None,
        ),
        settings,
    )


def test_a_hard_crash_between_steps_leaves_one_champion_and_promote_finishes(good_challenger: int) -> None:
    """No rollback hooks (a killed process): the order alone keeps the registry consistent."""
    shadow_traffic()
    settings = get_settings()
    backends = _backends()
    registry = make_registry()
    metadata = MlflowRegistryMetadata(registry)
    commit_point = COMMIT_STEPS.index(STEP_MOVE_CHAMPION)
    for index, step in enumerate(COMMIT_STEPS[:-1]):
        state = read_registry_state(registry, MODEL)
        evidence = compare_on_shadow_task.fn(MODEL, state, settings, None)
        assert evidence.passed, evidence.reasons
        # The challenger was trained under a wider window than the spec it is judged by: said.
        [note] = evidence.data.spec_notes
        assert note.startswith(f"version {good_challenger} was trained and gated under another model spec")
        plan = _approved_plan(good_challenger, evidence)
        promoted_at_before = registry.version_tags(MODEL, good_challenger).get(TAG_PROMOTED_AT)
        with pytest.raises(InjectedCrash):
            commit_promotion(backends, plan, crash_after=step)

        committed = index >= commit_point
        assert champions(registry) == [good_challenger if committed else 1], step
        assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == good_challenger, step
        # The rollback target always fits the champion of the moment, and a version is marked
        # "was champion" (rollback's promotion history) only once it is.
        assert read_rollback_target(registry, metadata, MODEL) == (1 if committed else None), step
        promoted_at = registry.version_tags(MODEL, good_challenger).get(TAG_PROMOTED_AT)
        assert (promoted_at != promoted_at_before) == (index > commit_point), step

        result = promote(model=MODEL)
        assert result.recovered == committed, step
        promotion_id = _assert_finished(registry, good_challenger)
        assert (promotion_id == plan.promotion_id) == committed, step
        assert result.record is not None and result.record.record_id == promotion_id
        _reset_to_champion_1(registry, good_challenger)

    # Crashing after the last step is not a crash: clear_challenger has no seam after it.
    assert COMMIT_STEPS[-1] == STEP_CLEAR_CHALLENGER


# --- review: failure paths that must still leave a decision record ---------------------------------


def test_an_error_after_the_commit_point_leaves_an_aborted_record_in_the_audit_trail(
    good_challenger: int, crash_at: Callable[[str | None], None]
) -> None:
    """The champion moved (scorers may have decided with it), then the transaction undid it:
    the audit trail must say so, not only the stored plan that still reads 'approved'."""
    shadow_traffic()
    registry = make_registry()
    crash_at(STEP_MOVE_CHAMPION)
    with pytest.raises(InjectedCrash):
        promote(model=MODEL)
    crash_at(None)

    assert champions(registry) == [1]
    tags = registry.version_tags(MODEL, good_challenger)
    assert TAG_PROMOTION_ID not in tags  # the undo removed the plan's tags
    shadow = [r for r in promotion_records() if r["payload"].get("kind") == "shadow"]
    assert [r["decision"] for r in shadow] == [OUTCOME_ABORTED], shadow
    assert shadow[0]["model_version"] == str(good_challenger)
    assert any("InjectedCrash" in reason for reason in shadow[0]["payload"]["reasons"])
    assert audit.verify_chain(_backends().audit).ok


def _bootstrap_records(version: int) -> list[dict[str, Any]]:
    return [
        r
        for r in promotion_records(OUTCOME_PROMOTED)
        if r["payload"].get("kind") == "bootstrap" and r["model_version"] == str(version)
    ]


@pytest.mark.parametrize("kill_point", ["before_challenger_cleared", "before_audit_record"])
def test_an_interrupted_bootstrap_is_finished_with_its_audit_record(
    specs: Path, monkeypatch: pytest.MonkeyPatch, kill_point: str
) -> None:
    """The first champion's alias moved, then the run died: the next promote must still leave
    the bootstrap's record in the audit trail (and the rollback target 'none')."""
    import tasks.promotion

    run_train_tasks(MODEL)
    registry = make_registry()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"killed {kill_point}")

    with monkeypatch.context() as patch:
        if kill_point == "before_challenger_cleared":
            patch.setattr(MlflowRegistry, "delete_alias", boom)
        else:
            patch.setattr(tasks.promotion, "record_bootstrap", boom)
        with pytest.raises(RuntimeError, match="killed"):
            promote(model=MODEL, approver="alice")
    assert champions(registry) == [1]
    assert _bootstrap_records(1) == []

    result = promote(model=MODEL, approver="alice")

    assert result.champion_version == 1 and champions(registry) == [1]
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None
    [record] = _bootstrap_records(1)
    assert record["payload"]["approver"] == "alice"
    tags = MlflowRegistryMetadata(registry).model_tags(MODEL)
    assert (tags[ROLLBACK_TARGET_FOR_TAG], tags[ROLLBACK_TARGET_TAG]) == ("1", "none")
    promote_again = promote  # once finished, nothing is recorded twice
    with pytest.raises(Exception, match="no challenger"):
        promote_again(model=MODEL, approver="alice")
    assert len(_bootstrap_records(1)) == 1


def test_a_rollback_after_an_interrupted_promotion_does_not_leave_the_rolled_back_version_challenger(
    good_challenger: int,
) -> None:
    """A promote run died just after the champion alias moved; the operator rolls back. The
    version rolled back from must not stay ``challenger`` (shadowing, deciding a canary arm)
    for the next promote run to put back."""
    from flows.rollback import rollback as rollback_flow

    shadow_traffic()
    settings = get_settings()
    registry = make_registry()
    state = read_registry_state(registry, MODEL)
    evidence = compare_on_shadow_task.fn(MODEL, state, settings, None)
    plan = _approved_plan(good_challenger, evidence)
    with pytest.raises(InjectedCrash):
        commit_promotion(_backends(), plan, crash_after=STEP_MOVE_CHAMPION)
    assert champions(registry) == [good_challenger]

    rolled = rollback_flow(by="oncall", reason="the promotion crashed half-way", model=MODEL)

    assert (rolled.from_version, rolled.to_version) == (good_challenger, 1)
    assert champions(registry) == [1]
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) is None and rolled.record.cleared_challenger
    with pytest.raises(Exception, match="no challenger"):
        promote(model=MODEL)
    assert champions(registry) == [1]


def _version_files(registry: MlflowRegistry, version: int) -> Path:
    from urllib.parse import urlparse

    model_id = registry.client.get_model_version(MODEL, str(version)).source.removeprefix("models:/")
    return Path(urlparse(registry.client.get_logged_model(model_id).artifact_location).path)


def test_a_rollback_to_a_version_whose_files_changed_is_refused_and_the_champion_stays(
    good_challenger: int,
) -> None:
    """Rolling back onto files that no scorer will load would stop every scoring run: the
    rollback checks the target's files first, refuses (exit 1) and moves nothing."""
    from flows.rollback import rollback as rollback_flow
    from mlops.errors import StorageIntegrityError

    shadow_traffic()
    assert promote(model=MODEL).champion_version == good_challenger
    registry = make_registry()
    [booster] = _version_files(registry, 1).rglob("booster.json")
    original = booster.read_bytes()
    booster.write_bytes(original.replace(b'"', b' "', 1))
    rollbacks_before = _rollback_records()
    try:
        with pytest.raises(StorageIntegrityError, match="rollback to version 1 refused"):
            rollback_flow(by="oncall", reason="bad calibration", model=MODEL)
        assert champions(registry) == [good_challenger]
        assert _rollback_records() == rollbacks_before
    finally:
        booster.write_bytes(original)
    result = rollback_flow(by="oncall", reason="bad calibration", model=MODEL)
    assert result.to_version == 1 and champions(registry) == [1]


def _rollback_records() -> int:
    with _backends().audit.connect() as conn:
        return len(
            conn.execute(
                sa.select(audit.audit_records.c.seq).where(audit.audit_records.c.record_type == "rollback")
            ).all()
        )


def test_a_bootstrap_refused_for_its_gate_verdict_leaves_a_refusal_record(specs: Path) -> None:
    """A challenger alias put by hand on a version that did not pass its gates: the bootstrap
    is refused (exit 1 from the CLI), and that decision is in the audit trail like any other."""
    from mlops.lineage import TAG_VERDICT
    from mlops.promotion import PromotionRefused

    run_train_tasks(MODEL)
    registry = make_registry()
    registry.set_version_tags(MODEL, 1, {TAG_VERDICT: "failed"})

    with pytest.raises(PromotionRefused, match="carries gate verdict 'failed'") as refused:
        promote(model=MODEL, approver="alice")

    assert champions(registry) == []
    [record] = promotion_records(OUTCOME_REFUSED)
    assert record["model_version"] == "1" and record["payload"]["kind"] == "bootstrap"
    assert "carries gate verdict 'failed'" in record["payload"]["reason"]
    assert record["payload"]["promotion_id"] == refused.value.promotion_id
    assert "recorded in the audit trail" in str(refused.value.hint)
