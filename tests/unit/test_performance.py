"""Outcomes joined to prediction records by keyed entity: metrics per version and role."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.constants import KIND_VALID
from mlops.performance import (
    PerformanceReport,
    PerformanceRow,
    create_performance_schema,
    group_metrics,
    join_outcomes,
    outcome_matches,
    stored_matches,
)
from mlops.storage import LocalStore, snapshot_key
from tests.review_helpers import (
    KEY,
    MODEL,
    append,
    application_snapshot,
    contracts,
    outcome_snapshot,
    predictions,
)

pytestmark = pytest.mark.unit

IDS = [f"APP-{i}" for i in range(6)]
LABELS = {"APP-0": 1, "APP-1": 0, "APP-2": 1, "APP-3": 0, "APP-4": 1, "NEVER-SCORED": 0}
CHAMPION = [0.9, 0.2, 0.4, 0.6]  # APP-0..3, model v3
SHADOW = [0.8, 0.1, 0.7, 0.3]  # APP-0..3, model v4 shadow-scored on the same rows
CANARY = [0.55, 0.35]  # APP-4..5, model v4 deciding for the canary share
SNAPSHOT = "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def trail(engine: Engine) -> None:
    frame = pd.concat(
        [
            predictions(SNAPSHOT, IDS[:4], CHAMPION),
            predictions(SNAPSHOT, IDS[:4], SHADOW, version="4", role="shadow"),
            predictions(SNAPSHOT, IDS[4:], CANARY, version="4", role="canary", rows=[4, 5]),
            predictions(SNAPSHOT, IDS[:2], [0.5, 0.5], model="other-model"),
        ],
        ignore_index=True,
    )
    append(engine, frame, "day-1")
    audit.append_event(engine, "promotion", {"to": "4"}, model_name=MODEL)  # not a prediction


def row(report: PerformanceReport, version: str, role: str) -> PerformanceRow:
    [found] = [r for r in report.rows if (r.model_version, r.role) == (version, role)]
    return found


def test_metrics_per_version_and_role(engine: Engine, store: LocalStore) -> None:
    trail(engine)
    _, outcomes = contracts()
    outcome_snapshot(store, outcomes, LABELS)

    report = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)

    assert [(r.model_version, r.role) for r in report.rows] == [
        ("3", "champion"),
        ("4", "canary"),
        ("4", "shadow"),
    ]
    y = np.array([1, 0, 1, 0])
    champion = row(report, "3", "champion")
    assert (champion.n, champion.predictions, champion.coverage) == (4, 4, 1.0)
    assert champion.label_rate == 0.5
    assert champion.auc == pytest.approx(roc_auc_score(y, CHAMPION))
    assert champion.brier == pytest.approx(np.mean((np.array(CHAMPION) - y) ** 2))
    assert champion.decision_accuracy == pytest.approx(0.5)  # declines 0 and 3; defaults 0 and 2
    shadow = row(report, "4", "shadow")
    assert shadow.auc == pytest.approx(roc_auc_score(y, SHADOW)) and shadow.decision_accuracy == 1.0
    canary = row(report, "4", "canary")  # APP-5 has no outcome yet
    assert (canary.n, canary.predictions, canary.coverage, canary.label_rate) == (1, 2, 0.5, 1.0)
    assert canary.auc is None and canary.brier == pytest.approx((0.55 - 1) ** 2)

    j = report.join
    assert (j.outcome_rows, j.outcome_ids, j.matched_outcomes) == (6, 6, 5)
    assert j.unmatched_outcomes == 1  # NEVER-SCORED is counted, not dropped silently
    assert j.matched_predictions == 9 and j.inserted == 9
    assert "other-model" not in {r.model_name for r in report.rows}
    assert report.table()[0]["auc"] == round(champion.auc or 0, 4)
    assert "1 outcome ids had no prediction" in report.markdown()


def test_joining_twice_changes_nothing(engine: Engine, store: LocalStore) -> None:
    trail(engine)
    _, outcomes = contracts()
    outcome_snapshot(store, outcomes, LABELS)
    first = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)
    stored = stored_matches(engine, MODEL)
    head = audit.verify_chain(engine).last_seq

    second = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)

    assert (second.join.inserted, second.join.updated, second.join.unchanged) == (0, 0, 9)
    assert second.rows == first.rows
    pd.testing.assert_frame_equal(stored_matches(engine, MODEL), stored)
    assert audit.verify_chain(engine).last_seq == head  # the audit chain is only read


def test_a_later_correction_updates_the_match(engine: Engine, store: LocalStore) -> None:
    trail(engine)
    _, outcomes = contracts()
    outcome_snapshot(store, outcomes, LABELS)
    join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)
    outcome_snapshot(store, outcomes, {"APP-1": 1}, observed="2026-04-01")  # APP-1 defaulted after all

    report = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)

    j = report.join
    assert (j.outcome_rows, j.outcome_ids, j.duplicate_outcomes, j.conflicting_outcomes) == (7, 6, 1, 1)
    assert (j.inserted, j.updated, j.unchanged) == (0, 2, 7)  # APP-1's champion and shadow rows
    assert row(report, "3", "champion").label_rate == 0.75
    assert len(stored_matches(engine, MODEL)) == 9


def test_matches_hold_keyed_entities_only(engine: Engine, store: LocalStore) -> None:
    trail(engine)
    _, outcomes = contracts()
    outcome_snapshot(store, outcomes, LABELS)
    join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)
    with engine.connect() as conn:
        keys = set(conn.execute(sa.select(outcome_matches.c.entity_key)).scalars())
    assert keys == {audit.entity_key(i, KEY) for i in IDS[:5]}
    assert not any(i in k for k in keys for i in IDS)


def test_another_key_matches_nothing_and_no_outcomes_is_fine(engine: Engine, store: LocalStore) -> None:
    trail(engine)
    _, outcomes = contracts()
    empty = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)
    assert empty.join.outcome_ids == 0 and all(r.n == 0 for r in empty.rows)
    assert row(empty, "3", "champion").predictions == 4
    outcome_snapshot(store, outcomes, LABELS)
    wrong = join_outcomes(engine, store, outcomes, hash_key="another-key", model_name=MODEL)
    assert wrong.join.matched_outcomes == 0 and wrong.join.unmatched_outcomes == 6


def test_an_application_scored_again_counts_once_with_its_latest_prediction(
    engine: Engine, store: LocalStore
) -> None:
    append(engine, predictions(SNAPSHOT, ["APP-0", "APP-1"], [0.1, 0.2]), "day-1")
    append(engine, predictions(SNAPSHOT, ["APP-0"], [0.9]), "day-1-rescored")  # --rescore, same v3
    _, outcomes = contracts()
    outcome_snapshot(store, outcomes, {"APP-0": 1, "APP-1": 0})

    report = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)

    champion = row(report, "3", "champion")
    assert (champion.n, champion.matched_predictions, champion.predictions) == (2, 3, 3)
    assert champion.mean_score == pytest.approx((0.9 + 0.2) / 2)  # APP-0's latest score, once
    assert champion.auc == 1.0 and champion.coverage == 1.0
    assert report.join.matched_predictions == 3


def test_outcomes_observed_before_their_application_are_left_out_once_read(
    engine: Engine, store: LocalStore
) -> None:
    applications, outcomes = contracts()
    sha, rows = application_snapshot(store, applications, 4, seed=1)  # applied on 2026-01-01
    ids = rows[applications.id_column].tolist()
    scores = [0.9, 0.2, 0.4, 0.6]
    append(engine, predictions(sha, ids, scores), "day-1")
    outcome_snapshot(store, outcomes, dict(zip(ids[:3], [1, 0, 1], strict=True)), observed="2026-03-01")
    outcome_snapshot(store, outcomes, {ids[3]: 0}, observed="2025-12-31")  # before its application

    report = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL, applications=applications)

    champion = row(report, "3", "champion")
    assert report.join.outcomes_before_application == 1
    assert (champion.n, champion.matched_predictions) == (3, 3)
    assert champion.auc == pytest.approx(roc_auc_score([1, 0, 1], scores[:3]))
    assert "1 left out: outcome observed before the application" in report.summary_text()
    assert stored_matches(engine, MODEL)["applied_at"].notna().all()
    # Application times are read once: a second join needs no snapshot and changes nothing.
    (store.root / snapshot_key(KIND_VALID, applications.name, sha)).unlink()
    again = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL, applications=applications)
    assert (again.join.inserted, again.join.updated, again.join.unchanged) == (0, 0, 4)
    assert again.join.outcomes_before_application == 1 and again.rows == report.rows


def test_a_store_made_before_application_times_gets_the_column(engine: Engine, store: LocalStore) -> None:
    create_performance_schema(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE outcome_matches DROP COLUMN applied_at")  # the first release
    trail(engine)  # its predictions name a snapshot that is not in the store
    applications, outcomes = contracts()
    outcome_snapshot(store, outcomes, LABELS)

    report = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL, applications=applications)

    assert "applied_at" in {c["name"] for c in sa.inspect(engine).get_columns("outcome_matches")}
    matched = report.join.matched_predictions  # the model's predictions of ids with an outcome
    assert report.join.inserted == matched and report.join.outcomes_before_application == 0
    assert report.join.application_times_unknown == matched  # counted and said, not guessed
    assert f"{matched} prediction(s) not checked for that" in report.summary_text()


def test_application_times_filled_in_later_are_not_corrections(engine: Engine, store: LocalStore) -> None:
    applications, outcomes = contracts()
    sha, rows = application_snapshot(store, applications, 2, seed=3)
    append(engine, predictions(sha, rows[applications.id_column].tolist(), [0.2, 0.7]), "day-1")
    outcome_snapshot(store, outcomes, dict(zip(rows[applications.id_column], [0, 1], strict=True)))
    join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL)  # as the first release joined
    assert stored_matches(engine, MODEL)["applied_at"].isna().all()
    before = stored_matches(engine, MODEL)["matched_at"].tolist()

    report = join_outcomes(engine, store, outcomes, hash_key=KEY, model_name=MODEL, applications=applications)

    assert (report.join.inserted, report.join.updated, report.join.unchanged) == (0, 0, 2)
    after = stored_matches(engine, MODEL)
    assert after["applied_at"].notna().all() and after["matched_at"].tolist() == before


@pytest.mark.parametrize(
    ("decisions", "expected"),
    [(["approve", "decline"], 1.0), (["decline", "approve"], 0.0), (["approve", "review"], 1.0)],
)
def test_decision_accuracy_reads_decline_as_predicted_default(decisions: list[str], expected: float) -> None:
    matches = pd.DataFrame(
        {
            "model_name": MODEL,
            "model_version": "1",
            "role": "champion",
            "score": [0.2, 0.8],
            "decision": decisions,
            "label": [0, 1],
            "entity_key": ["a" * 64, "b" * 64],
            "predicted_at": pd.Timestamp("2026-01-01", tz="UTC"),
            "prediction_record_id": ["r1", "r2"],
        }
    )
    [result] = group_metrics(matches)
    assert result.decision_accuracy == expected
    assert result.n_decisions == sum(d in ("approve", "decline") for d in decisions)


def test_numeric_outcome_times_are_epoch_seconds(store: LocalStore) -> None:
    """A contract may declare a numeric timestamp: its values are epoch seconds, or every
    outcome was read as observed in January 1970, before its application, and left out."""
    from mlops.contracts import Contract
    from mlops.performance import keyed_outcomes
    from tests.training_helpers import ingest

    labels = Contract.model_validate(
        {
            "name": "pump_inspections",
            "version": "0.1.0",
            "columns": [
                {"name": "reading_ref", "role": "id", "dtype": "int", "unique": True},
                {"name": "inspected_epoch", "role": "timestamp", "dtype": "int", "min": 0},
                {"name": "failed", "role": "target", "dtype": "int", "min": 0, "max": 1},
            ],
        }
    )
    epoch = 1_794_355_239
    frame = pd.DataFrame({"reading_ref": [1, 2], "inspected_epoch": [epoch, epoch + 60], "failed": [0, 1]})
    ingest(store, frame, labels, "inspections/day_0.csv")
    keyed, _, _ = keyed_outcomes(store, labels, "k" * 64)
    assert sorted(keyed["observed_at"]) == [
        pd.Timestamp(epoch, unit="s", tz="UTC"),
        pd.Timestamp(epoch + 60, unit="s", tz="UTC"),
    ]
