"""Pure parts of monitoring: retrain hygiene, the champion loader, window bookkeeping, events."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.catalog import CatalogEntry
from mlops.champion_loader import ChampionLoader
from mlops.constants import EVENT_DRIFT_DETECTED, EVENT_PERFORMANCE_DEGRADED
from mlops.drift import AlarmDecision, DriftPolicy, build_profile, compare
from mlops.errors import InputError, MlopsError, WorkRefused
from mlops.lineage import TAG_PROMOTED_AT
from mlops.monitoring import Window, WindowResult, alarm_event, assign_outcomes, window_scores
from mlops.monitoring_state import MonitorState, load_state, save_state
from mlops.promotion import TAG_PREVIOUS_CHAMPION
from mlops.retrain import (
    RetrainAttempt,
    RetrainPolicy,
    RetrainState,
    ShadowingChallenger,
    decide,
    retrained_challenger,
)
from mlops.rollback import TAG_ROLLED_BACK_AT, next_target_after, previous_champion, resolve_target
from mlops.storage import LocalStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "k" * 64


def _attempt(hours_ago: float, *, key: str = "old", status: str = "completed") -> RetrainAttempt:
    return RetrainAttempt(key=key, started_at=NOW - timedelta(hours=hours_ago), status=status, severity="act")


def _decide(attempts: list[RetrainAttempt], severity: str = "act", force: bool = False, **policy: Any) -> Any:
    state = RetrainState(model_name="m", attempts=attempts)
    return decide(state, RetrainPolicy(**policy), key=KEY, severity=severity, now=NOW, force=force)


# --- retrain hygiene, case by case ------------------------------------------------------------


def test_first_retrain_on_new_data_runs() -> None:
    decision = _decide([])
    assert decision.run and decision.key == KEY


def test_a_warn_below_an_act_floor_is_skipped() -> None:
    decision = _decide([], severity="warn", min_severity="act")
    assert not decision.run and "below the retrain floor" in decision.reason


def test_the_same_data_never_trains_twice() -> None:
    decision = _decide([_attempt(100, key=KEY)], cooldown_hours=0)
    assert not decision.run and decision.reason.startswith("already retrained on this data")


def test_a_failed_attempt_on_the_same_data_may_be_retried_after_the_cooldown() -> None:
    assert _decide([_attempt(30, key=KEY, status="failed")]).run


@pytest.mark.parametrize(("hours_ago", "blocks"), [(1, True), (7, False)])
def test_a_started_attempt_blocks_its_key_until_it_is_stale(hours_ago: float, blocks: bool) -> None:
    decision = _decide([_attempt(hours_ago, key=KEY, status="started")], cooldown_hours=0)
    assert decision.run is not blocks
    if blocks:
        assert "still running" in decision.reason


def test_inside_the_cooldown_the_retrain_is_skipped_with_the_next_allowed_time() -> None:
    decision = _decide([_attempt(2)], cooldown_hours=24)
    assert not decision.run and decision.reason.startswith("cooldown:")
    assert "2026-03-02 10:00:00Z" in decision.reason


@pytest.mark.parametrize(
    ("status", "hours_ago", "holds"),
    [("completed", 2, True), ("started", 2, True), ("failed", 2, False), ("started", 7, False)],
)
def test_only_a_completed_or_running_attempt_starts_the_cooldown(
    status: str, hours_ago: float, holds: bool
) -> None:
    # A failed attempt (or a started one whose process died: stale after 6 h) left no model to
    # give time to: the next alarm, or a retry of the failed run, trains.
    decision = _decide([_attempt(hours_ago, status=status)], cooldown_hours=24)
    assert decision.run is not holds
    if holds:
        assert decision.reason.startswith("cooldown:")


def test_failed_attempts_count_for_the_budget() -> None:
    attempts = [_attempt(h, status="failed") for h in (1, 2, 3)]
    decision = _decide(attempts, cooldown_hours=24, max_runs_per_period=3, period_days=7)
    assert not decision.run and decision.reason.startswith("budget: 3 retrain(s)")


def test_the_budget_counts_attempts_in_the_rolling_period() -> None:
    attempts = [_attempt(h) for h in (30, 60, 90)]
    decision = _decide(attempts, cooldown_hours=1, max_runs_per_period=3, period_days=7)
    assert not decision.run and decision.reason.startswith("budget: 3 retrain(s)")
    assert _decide(attempts, cooldown_hours=1, max_runs_per_period=3, period_days=2).run


def test_force_skips_cooldown_and_budget_but_not_idempotency() -> None:
    assert _decide([_attempt(1)], force=True, max_runs_per_period=0).run
    assert not _decide([_attempt(1, key=KEY)], force=True).run


def test_a_retrained_challenger_still_shadowing_holds_the_next_retrain_back() -> None:
    shadowing = ShadowingChallenger(
        version=4,
        registered_at=NOW - timedelta(days=3),
        days=3,
        min_days=14,
        labelled_rows=120,
        min_labelled_rows=500,
    )
    state = RetrainState(model_name="m", attempts=[_attempt(72)])
    held = decide(state, RetrainPolicy(), key=KEY, severity="act", now=NOW, shadowing=shadowing)
    assert not held.run
    assert held.reason.startswith("challenger version 4, registered by the retrain of 2026-02-26 12:00:00Z")
    assert "(3 of 14 data days, 120 of 500 labelled rows)" in held.reason
    # cooldown and budget are told first (cheaper, and they would hold it back anyway)
    cooled = decide(
        state, RetrainPolicy(cooldown_hours=100), key=KEY, severity="act", now=NOW, shadowing=shadowing
    )
    assert cooled.reason.startswith("cooldown:")
    assert decide(
        state, RetrainPolicy(), key=KEY, severity="manual", now=NOW, force=True, shadowing=shadowing
    ).run


def test_only_a_challenger_a_retrain_registered_counts_as_its_shadowing_challenger() -> None:
    registered = _attempt(72).model_copy(update={"version": 4})
    failed = _attempt(50, status="failed").model_copy(update={"version": 5})
    state = RetrainState(model_name="m", attempts=[registered, failed])
    assert retrained_challenger(state, 4) == registered
    assert retrained_challenger(state, 5) is None  # a failed attempt registered nothing it owns
    assert retrained_challenger(state, 6) is None  # trained by hand (mlops train): not held for
    assert retrained_challenger(state, None) is None


# --- the champion loader ----------------------------------------------------------------------


class _Model:
    def __init__(self, version: int) -> None:
        self.version = version

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), self.version / 10)


def _loader(alias: dict[str, int | None], **kwargs: Any) -> ChampionLoader:
    return ChampionLoader("m", lambda n, a: alias["v"], lambda n, v: _Model(v), **kwargs)


def test_the_loader_follows_the_alias_on_the_next_call_and_reuses_loaded_versions() -> None:
    alias: dict[str, int | None] = {"v": 1}
    loader = _loader(alias)
    frame = pd.DataFrame({"x": [1, 2]})
    assert loader.predict(frame).version == 1
    alias["v"] = 2
    served = loader.predict(frame)
    assert served.version == 2 and served.scores.tolist() == [0.2, 0.2]
    alias["v"] = 1  # rollback: version 1 is still in memory
    back = loader.predict(frame)
    assert back.version == 1 and back.load_seconds == 0.0 and loader.loads == 2


def test_the_loader_keeps_a_bounded_cache_and_refuses_without_an_alias() -> None:
    alias: dict[str, int | None] = {"v": 1}
    loader = _loader(alias, max_cached=2)
    loader.warm(1, 2, 3)
    assert loader.cached_versions == [2, 3]
    alias["v"] = None
    with pytest.raises(WorkRefused, match="no 'champion' alias"):
        loader.get()


def test_concurrent_callers_share_one_load_per_version() -> None:
    loader = _loader({"v": 5})
    threads = [threading.Thread(target=loader.get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.loads == 1


# --- windows, late labels, the event -----------------------------------------------------------


def _entry(sha: str, day: int) -> CatalogEntry:
    at = datetime(2025, 1, day, 23, tzinfo=UTC)
    return CatalogEntry(
        dataset="o",
        contract_version="1",
        sha256=sha,
        uri="",
        rows=1,
        source="",
        ingested_at=at,
        min_timestamp=at,
        max_timestamp=at,
    )


def test_outcomes_go_to_the_first_window_at_or_after_them_or_the_last() -> None:
    windows = [
        Window("a", datetime(2025, 1, 5, 23, tzinfo=UTC)),
        Window("b", datetime(2025, 1, 7, 23, tzinfo=UTC)),
    ]
    assigned = assign_outcomes(windows, [_entry("o3", 3), _entry("o6", 6), _entry("o9", 9)])
    assert {k: [e.sha256 for e in v] for k, v in assigned.items()} == {"a": ["o3"], "b": ["o6", "o9"]}
    assert assign_outcomes([], [_entry("o3", 3)]) == {}


def test_window_scores_take_the_audit_trail_first_and_score_the_rest() -> None:
    from mlops.model_spec import DecisionPolicy, ModelSpec

    spec = ModelSpec(
        name="m",
        applications_contract="a",
        outcomes_contract="o",
        features=("x",),
        decision_policy=DecisionPolicy(threshold=0.5, review_band=(0.4, 0.6)),
    )
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "other": ["a", "b", "c"]})
    seen: list[list[str]] = []

    def scorer(rows: pd.DataFrame) -> np.ndarray:
        seen.append(list(rows.columns))
        return rows["x"].to_numpy() / 10

    scores, sources = window_scores(frame, pd.Series([0.9], index=[1]), scorer, spec)
    assert scores.tolist() == [0.1, 0.9, 0.3] and sources == {"audit": 1, "computed": 2}
    assert seen == [["x"]]  # the model sees its features only


def _result(window: str, *, alarm: bool, performance: bool = False, severity: str = "act") -> WindowResult:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"f": rng.normal(size=600)})
    report = compare(build_profile(ref), ref, DriftPolicy(), window_id=window)
    return WindowResult(
        window_id=window,
        snapshot=window * 8,
        rows=600,
        max_timestamp=None,
        score_sources={},
        outcome_snapshots=[],
        labelled_rows=0,
        report=report,
        decision=AlarmDecision(
            alarm=alarm,
            severity=severity if alarm else "none",
            reason="r",
            windows=[window] if alarm else [],
            features=["f"] if alarm else [],
        ),
        performance_alarm=performance,
    )


def test_one_event_per_run_from_the_newest_alarming_window() -> None:
    assert alarm_event([_result("w1", alarm=False)]) is None
    event = alarm_event(
        [_result("w1", alarm=True, severity="warn"), _result("w2", alarm=True), _result("w3", alarm=False)]
    )
    assert event is not None and event.event == EVENT_DRIFT_DETECTED and event.window == "w2"
    degraded = alarm_event([_result("w1", alarm=True, performance=True)])
    assert degraded is not None and degraded.event == EVENT_PERFORMANCE_DEGRADED


def test_the_state_is_kept_per_champion_version_so_a_rollback_resumes_its_history(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    save_state(store, MonitorState(model_name="m", champion_version=1, processed_applications=["a"]))
    assert load_state(store, "m", 2).processed_applications == []  # a new champion starts afresh
    assert load_state(store, "m", 1).processed_applications == ["a"]  # back to 1: where it stopped


def test_a_version_number_given_again_to_another_run_starts_a_fresh_history(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    kept = MonitorState(
        model_name="m", champion_version=1, champion_run_id="run-a", processed_applications=["a"]
    )
    save_state(store, kept)
    assert load_state(store, "m", 1, "run-a").processed_applications == ["a"]  # the same model
    fresh = load_state(store, "m", 1, "run-b")  # the registry numbered another model 1 again
    assert fresh.processed_applications == [] and fresh.champion_run_id == "run-b"
    save_state(store, MonitorState(model_name="m", champion_version=2, processed_applications=["b"]))
    legacy = load_state(store, "m", 2, "run-c")  # kept before the run id was: adopted, not dropped
    assert legacy.processed_applications == ["b"] and legacy.champion_run_id == "run-c"


# --- rollback targets (pure functions over the version tags) ------------------------------------


def _tags(**versions: dict[str, str]) -> dict[int, dict[str, str]]:
    return {int(k[1:]): v for k, v in versions.items()}


def _at(day: int) -> str:
    return datetime(2026, 3, day, tzinfo=UTC).isoformat()


HISTORY = _tags(
    v1={TAG_PROMOTED_AT: _at(1)},
    v2={TAG_PROMOTED_AT: _at(2), TAG_PREVIOUS_CHAMPION: "1"},
    v3={TAG_PROMOTED_AT: _at(3), TAG_PREVIOUS_CHAMPION: "2"},
    v4={},  # trained, never champion
)


def test_the_previous_champion_comes_from_the_promotion_history() -> None:
    assert previous_champion(HISTORY, 3) == 2
    assert previous_champion(HISTORY, 1) is None
    rolled = {**HISTORY, 2: {**HISTORY[2], TAG_ROLLED_BACK_AT: _at(4)}}
    assert previous_champion(rolled, 3) == 1  # a rolled-back version is skipped
    again = {**rolled, 2: {**rolled[2], TAG_PROMOTED_AT: _at(5)}}
    assert previous_champion(again, 3) == 1 and previous_champion(again, 2) == 3  # re-promoted later


@pytest.mark.parametrize(
    ("recorded", "to_version", "expected"),
    [(None, None, (2, "promotion_history")), (1, None, (1, "recorded")), (None, 1, (1, "explicit"))],
)
def test_the_rollback_target_is_explicit_then_recorded_then_history(
    recorded: int | None, to_version: int | None, expected: tuple[int, str]
) -> None:
    assert resolve_target("m", HISTORY, 3, recorded=recorded, to_version=to_version) == expected


@pytest.mark.parametrize(
    ("champion", "to_version", "match"),
    [(1, None, "no previous champion"), (3, 4, "never champion"), (3, 9, "no version 9"), (3, 3, "already")],
)
def test_a_rollback_without_a_former_champion_to_return_to_is_refused(
    champion: int, to_version: int | None, match: str
) -> None:
    with pytest.raises(MlopsError, match=match):
        resolve_target("m", HISTORY, champion, to_version=to_version)


def test_the_refusal_without_a_previous_champion_names_what_to_do() -> None:
    first = {1: HISTORY[1], 4: HISTORY[4]}  # v1 is the only version ever champion
    with pytest.raises(WorkRefused) as only:
        resolve_target("m", first, 1)
    assert "version 1 is the only version that was ever champion" in only.value.message
    assert only.value.hint is not None and "--to" not in only.value.hint  # nothing it could restore
    assert "mlops train, then mlops promote" in only.value.hint
    rolled = {
        **HISTORY,
        1: {**HISTORY[1], TAG_ROLLED_BACK_AT: _at(6)},
        2: {**HISTORY[2], TAG_ROLLED_BACK_AT: _at(7)},
    }
    with pytest.raises(WorkRefused) as each:  # both earlier champions were rolled back from
        resolve_target("m", rolled, 3)
    assert "no version was champion before version 3 without being rolled back from" in each.value.message
    assert each.value.hint is not None and "(v1, v2; e.g. --to 2)" in each.value.hint
    assert resolve_target("m", rolled, 3, to_version=2) == (2, "explicit")  # what the hint offers works


def test_a_rollback_to_a_version_there_is_not_names_the_versions_there_are() -> None:
    with pytest.raises(InputError) as missing:
        resolve_target("m", HISTORY, 3, to_version=7)
    assert missing.value.message == "m has no version 7"
    assert missing.value.hint == (
        "its versions are v1, v2, v3, v4 (champion v3); --to takes a former champion: v1, v2"
    )
    many = {v: {} for v in range(1, 31)}
    with pytest.raises(InputError) as long:
        resolve_target("m", many, 30, to_version=31)
    assert (
        long.value.hint is not None and "v1, v2, v3, v4, v5, ..., v26, v27, v28, v29, v30" in long.value.hint
    )
    assert "nothing to restore" in long.value.hint


def test_after_a_rollback_the_next_target_is_the_restored_versions_predecessor() -> None:
    assert next_target_after(HISTORY, 2, rolled_back=3) == 1
    assert next_target_after(HISTORY, 1, rolled_back=3) is None
    assert next_target_after(HISTORY, 2, rolled_back=1) is None  # never back to what was just rolled back


def _late_labels_of_model_m(store: LocalStore, apps: Any, outs: Any) -> pd.DataFrame | None:
    """late_labels of every outcome snapshot in ``store`` for model m v1 (credit contracts)."""
    from mlops.catalog import list_snapshots
    from mlops.monitoring import late_labels

    return late_labels(
        store,
        list_snapshots(store, outs.name),
        applications=apps,
        outcomes=outs,
        target="defaulted",
        model="m",
        version=1,
    )


def test_late_labels_leave_out_outcomes_observed_before_their_application(tmp_path: Path) -> None:
    """The monitor's performance on late labels uses no outcome dated before its application
    (training and promotion leave them out too); a score cache from before the time was kept
    is read as it is."""
    from mlops.contracts import load_contract
    from mlops.monitoring import SCORE_COLUMN
    from mlops.monitoring_state import scores_key
    from mlops.settings import PROJECT_ROOT
    from mlops.storage import parquet_bytes
    from tests.training_helpers import ingest

    contracts = PROJECT_ROOT / "data_contracts"
    apps, outs = load_contract(contracts, "credit_applications"), load_contract(contracts, "credit_outcomes")
    store = LocalStore(tmp_path / "store")
    day = pd.Timestamp("2026-03-02", tz="UTC")
    ids = ["a", "b", "c"]
    outcomes = pd.DataFrame(
        {
            "application_id": ids,
            "observed_at": [day + timedelta(days=9), day - timedelta(days=1), day],
            "defaulted": [1, 0, 1],
        }
    )
    ingest(store, outcomes, outs, "outcomes/day.csv")
    cache = pd.DataFrame({"application_id": ids, SCORE_COLUMN: [0.9, 0.1, 0.8], "applied_at": [day] * 3})

    def labels() -> list[int]:
        found = _late_labels_of_model_m(store, apps, outs)
        assert found is not None
        return sorted(found["defaulted"].tolist())

    store.put_bytes(scores_key("m", 1, "snap"), parquet_bytes(cache))
    assert labels() == [1, 1]  # b's outcome, a day before its application, is left out
    store.put_bytes(scores_key("m", 1, "snap"), parquet_bytes(cache.drop(columns="applied_at")))
    assert labels() == [0, 1, 1]


def test_late_labels_take_a_correction_by_the_rule_training_and_the_performance_report_use(
    tmp_path: Path,
) -> None:
    """Two outcomes of one application observed at the same time: the batch ingested last (a
    correction) decides, as in training and the performance report. The monitor read snapshots
    in catalog order (newest data last), so a correction in a batch of older data lost."""
    from mlops.contracts import load_contract
    from mlops.monitoring import SCORE_COLUMN
    from mlops.monitoring_state import scores_key
    from mlops.settings import PROJECT_ROOT
    from mlops.storage import parquet_bytes
    from tests.training_helpers import ingest

    contracts = PROJECT_ROOT / "data_contracts"
    apps, outs = load_contract(contracts, "credit_applications"), load_contract(contracts, "credit_outcomes")
    store = LocalStore(tmp_path / "store")
    day = pd.Timestamp("2026-03-02", tz="UTC")
    first = pd.DataFrame(
        {"application_id": ["a", "z"], "observed_at": [day, day + timedelta(days=4)], "defaulted": [0, 1]}
    )
    ingest(store, first, outs, "outcomes/first.csv")
    ingest(store, first.iloc[:1].assign(defaulted=1), outs, "outcomes/correction.csv")
    cache = pd.DataFrame(
        {"application_id": ["a"], SCORE_COLUMN: [0.9], "applied_at": [day - timedelta(days=1)]}
    )
    store.put_bytes(scores_key("m", 1, "snap"), parquet_bytes(cache))

    found = _late_labels_of_model_m(store, apps, outs)

    assert found is not None and found["defaulted"].tolist() == [1]


def test_a_numeric_timestamp_window_compares_with_its_catalog_entry() -> None:
    """A contract may declare a numeric (epoch seconds) timestamp: the catalog entry reads its
    newest value as an aware datetime, the window read from the snapshot must read it the same,
    or every monitor run crashed comparing naive with aware datetimes (exit 3)."""
    from mlops.monitoring import _max_timestamp

    epoch = 1_791_763_200
    frame = pd.DataFrame({"measured_epoch": np.array([epoch - 60, epoch], dtype="int64")})
    entry = _entry("a" * 64, 1).model_copy(update={"max_timestamp": None})
    entry = CatalogEntry.model_validate(entry.model_dump() | {"max_timestamp": frame["measured_epoch"].max()})
    window = _max_timestamp(frame, "measured_epoch")
    assert window == entry.max_timestamp == datetime.fromtimestamp(epoch, UTC)
    assert not window > entry.max_timestamp  # comparable, not a TypeError
