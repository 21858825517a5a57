"""Review reproductions: the monitor's reference and the retraining loop (flow tier)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from flows.monitor import monitor_drift
from flows.retrain import retrain
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.promotion import bootstrap_champion
from mlops.registry import make_registry
from mlops.retrain import load_retrain_state, save_retrain_state
from mlops.settings import get_settings
from mlops.storage import make_store
from tests.flows.test_monitoring import MODEL, _ingest, home, template  # noqa: F401 (fixtures)
from tests.monitoring_helpers import DRIFT_DAY
from tests.training_helpers import run_train_tasks

pytestmark = [pytest.mark.flows, pytest.mark.slow]


def _age_retrain_attempts(hours: float) -> None:
    """As if the earlier retrain attempts started ``hours`` ago (the next daily monitor run)."""
    store = make_store(get_settings())
    state = load_retrain_state(store, MODEL)
    older = [
        a.model_copy(update={"started_at": a.started_at - timedelta(hours=hours)}) for a in state.attempts
    ]
    save_retrain_state(store, state.model_copy(update={"attempts": older}))


def test_a_new_champion_that_reuses_a_version_number_gets_its_own_reference(home: Path) -> None:  # noqa: F811
    """A registry reset (model deleted and registered again, or a new MLflow backend beside the
    same object store) numbers versions from 1 again: the new v1 must not be judged against
    the old v1's reference, cursor and cached scores."""
    _ingest([4, 5])
    old = monitor_drift(model=MODEL)
    assert old.reference_built and len(old.windows) == 2

    registry = make_registry()
    old_run = registry.version_run_id(MODEL, 1)
    registry.client.delete_registered_model(MODEL)
    _ingest(
        list(range(DRIFT_DAY, DRIFT_DAY + 4)), with_outcomes=True
    )  # the new model learns the drifted days
    assert run_train_tasks(MODEL).version == 1
    bootstrap_champion(registry, MODEL, approved_by="test")
    new_run = registry.version_run_id(MODEL, 1)
    assert new_run != old_run

    _ingest([DRIFT_DAY + 4, DRIFT_DAY + 5])  # the same (drifted) population the new v1 learnt
    result = monitor_drift(model=MODEL)

    assert result.reference_built, "the old v1's reference was reused for another model"
    assert [w.snapshot for w in result.windows][-2:] and not result.alarm, [
        w.drifting_features for w in result.windows
    ]


def test_persistent_drift_retrains_once_not_a_new_challenger_every_day(
    home: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One drift episode: the first alarm retrains and the candidate becomes challenger; while
    the drift goes on (a new alarm every day) a retrain each cooldown replaces that challenger,
    so no challenger ever shadows the spec's min_days and the loop never converges. The retrain
    now waits while the challenger it registered is shadowing, and says so."""
    template_spec = Path(str(get_settings().model_specs_dir)) / f"{MODEL}.yaml"
    spec = yaml.safe_load(template_spec.read_text())
    spec["gates"]["non_inferiority"]["margin"] = 0.2  # small test windows: let retrained candidates pass
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path / "specs"))
    registry = make_registry()
    _ingest(list(range(DRIFT_DAY, DRIFT_DAY + 4)), with_outcomes=True)
    first = monitor_drift(model=MODEL)
    assert first.alarm
    ran = retrain(model=MODEL, severity=str(first.severity), event_id=first.event_id, event=first.event)
    assert ran.ran and ran.train is not None and ran.train.passed
    challenger = ran.train.version
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == challenger

    skipped = []
    for day in (DRIFT_DAY + 4, DRIFT_DAY + 5):  # the next days: the drift goes on, outcomes arrive
        _age_retrain_attempts(25)
        _ingest([day], with_outcomes=True)
        again = monitor_drift(model=MODEL)
        assert registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
        if again.alarm:
            skipped.append(
                retrain(model=MODEL, severity=str(again.severity), event_id=again.event_id, event=again.event)
            )
    assert skipped, "the drift did not alarm again: nothing was tested"
    for result in skipped:
        assert not result.ran and result.train is None
        assert result.reason.startswith(f"challenger version {challenger}, registered by the retrain of"), (
            result.reason
        )
        assert f"of {spec['shadow']['min_days']} data days" in result.reason
    forced = retrain(model=MODEL, severity="manual", force=True)  # a person may still retrain
    assert forced.ran and forced.train is not None

    expected = forced.train.version if forced.train.passed else challenger  # a forced run moves it
    assert registry.get_alias_version(MODEL, ALIAS_CHALLENGER) == expected


def test_a_failed_retrain_does_not_hold_the_next_one_back_for_a_cooldown(
    home: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retrain whose training crashed (here: the train subflow raises, as when MLflow is down)
    produced no model: the next alarm, or a retry of the failed run, must train rather than be
    skipped for a day by the cooldown. It still counts for the budget."""
    import flows.train

    _ingest(list(range(DRIFT_DAY, DRIFT_DAY + 2)), with_outcomes=True)
    working = flows.train.train

    def unreachable(model: str) -> None:
        raise RuntimeError("the MLflow tracking server did not answer")

    monkeypatch.setattr(flows.train, "train", unreachable)
    with pytest.raises(RuntimeError, match="did not answer"):
        retrain(model=MODEL, severity="act")
    monkeypatch.setattr(flows.train, "train", working)
    state = load_retrain_state(make_store(get_settings()), MODEL)
    assert [a.status for a in state.attempts] == ["failed"]

    again = retrain(model=MODEL, severity="act")

    assert again.ran and again.train is not None, again.reason
    state = load_retrain_state(make_store(get_settings()), MODEL)
    assert [a.status for a in state.attempts] == ["failed", "completed"]
    _ingest([DRIFT_DAY + 2])  # new data: a new key, so only the cooldown can hold it back
    held = retrain(model=MODEL, severity="act")  # a completed attempt does start the cooldown
    assert not held.ran and held.reason.startswith("cooldown:"), held.reason


def test_a_scored_batch_missing_from_the_store_fails_the_monitor_not_skipped(home: Path) -> None:  # noqa: F811
    """A window the champion decided (audit trail) whose rows are gone from the object store,
    catalog entry and all, cannot be judged: the monitor says so instead of reporting no drift."""
    from mlops.errors import InputError
    from mlops.storage import snapshot_key, write_snapshot
    from tests.flows.test_monitoring import _audit_champion_scores, _contracts
    from tests.monitoring_helpers import day_frames

    bootstrap = make_registry()
    assert bootstrap.get_alias_version(MODEL, ALIAS_CHAMPION) == 1
    apps, _ = _contracts()
    store = make_store(get_settings())
    frame, _ = day_frames(DRIFT_DAY, 300)
    from mlops.gx_suite import GXRunner
    from mlops.validation import validate_frame

    valid = validate_frame(frame, apps, GXRunner(), source="lost", run_name="lost").valid
    ref = write_snapshot(store, valid, dataset=apps.name, kind="valid")  # scored, never catalogued
    _audit_champion_scores(ref.sha256, 1)
    (Path(store.url) / snapshot_key("valid", apps.name, ref.sha256)).unlink()

    with pytest.raises(InputError, match=rf"1 application snapshot\(s\) that {MODEL} v1 scored") as lost:
        monitor_drift(model=MODEL)
    assert ref.sha256[:12] in lost.value.message and "restore them" in str(lost.value.hint)


def test_an_alarm_the_prefect_api_never_stored_fails_the_run_and_is_sent_again(
    home: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect sends events from a background worker and drops what it cannot deliver with a
    log line: a lost alarm (here: a send dropped on the way) must not leave its windows marked
    judged, or no retrain would ever be triggered for them."""
    import uuid

    import tasks.monitoring as monitoring_tasks
    from mlops.errors import ServiceUnavailable
    from mlops.monitoring_state import load_state

    monkeypatch.setenv("MLOPS_EVENT_CONFIRM_SECONDS", "1")
    dropped: list[str] = []

    def lost_on_the_way(event: str, resource_id: str, payload: dict[str, object], **_: object) -> str:
        dropped.append(event)
        return str(uuid.uuid4())  # what emit_event returns before its worker fails to deliver it

    _ingest([DRIFT_DAY, DRIFT_DAY + 1])
    with monkeypatch.context() as lossy:
        lossy.setattr(monitoring_tasks, "emit", lost_on_the_way)
        with pytest.raises(ServiceUnavailable, match="was not stored by the Prefect API within 1 s"):
            monitor_drift(model=MODEL)
    assert dropped == ["mlops.drift.detected"] * 3  # the task's two retries sent it again
    assert load_state(make_store(get_settings()), MODEL, 1).processed_applications == []

    # The next run, with a real send: the server stores events every second (conftest), so a
    # 1 s wait for it could end just before the flush on a loaded machine (one CI run here).
    monkeypatch.setenv("MLOPS_EVENT_CONFIRM_SECONDS", "30")
    delivered = monitor_drift(model=MODEL)  # the same windows, the alarm again
    assert delivered.alarm and delivered.event_id and len(delivered.windows) == 2
    from mlops.events import stored

    assert stored(delivered.event_id)
