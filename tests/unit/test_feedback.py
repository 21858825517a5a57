"""Resolved review cases -> labelled training rows (the feedback loop)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.errors import InputError
from mlops.feedback import REVIEW_CASE_COLUMN, REVIEWER_COLUMN, review_labelled_rows, review_labels
from mlops.labels import LABEL_SOURCE_COLUMN, SNAPSHOT_COLUMN, SNAPSHOT_ROW_COLUMN, join_labels
from mlops.lineage import ReviewLabel, review_labels_sha256
from mlops.storage import LocalStore
from tests.review_helpers import KEY, MODEL, append, application_snapshot, contracts, predictions

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_resolved_cases_become_labelled_rows_and_open_ones_do_not(engine: Engine, store: LocalStore) -> None:
    apps, _ = contracts()
    sha, frame = application_snapshot(store, apps, 4, seed=1)
    ids = frame["application_id"].tolist()
    records = append(engine, predictions(sha, ids, [0.1, 0.3, 0.4, 0.6], routed=(1, 2, 3)), "b1")
    audit.resolve_case(engine, records[2], "bob", "approve", "income verified")
    audit.resolve_case(engine, records[1], "alice", "decline", "inconsistent employment")
    # records[3] stays open: not a label yet.

    result = review_labelled_rows(engine, store, apps, target="defaulted", model_name=MODEL, hash_key=KEY)

    out = result.frame
    assert out["application_id"].tolist() == [ids[2], ids[1]]  # resolution order
    assert out["defaulted"].tolist() == [0, 1]  # approve -> 0, decline -> 1
    assert out[REVIEWER_COLUMN].tolist() == ["bob", "alice"]
    assert out[REVIEW_CASE_COLUMN].tolist() == [records[2], records[1]]
    assert out[SNAPSHOT_COLUMN].tolist() == [sha, sha] and out[SNAPSHOT_ROW_COLUMN].tolist() == [2, 1]
    assert set(out[LABEL_SOURCE_COLUMN]) == {"review"}
    # The application row itself, as stored in the snapshot.
    pd.testing.assert_frame_equal(
        out[apps.column_names], frame.iloc[[2, 1]][apps.column_names].reset_index(drop=True)
    )
    s = result.summary
    assert (s.resolved_cases, s.rows, s.positives, s.skipped, s.snapshots) == (2, 2, 1, [], [sha])
    assert review_labelled_rows(engine, store, apps, target="defaulted", model_name="other").frame.empty


def test_rows_fit_the_training_hook_and_observed_outcomes_win(engine: Engine, store: LocalStore) -> None:
    apps, _ = contracts()
    sha, frame = application_snapshot(store, apps, 3, seed=2)
    ids = frame["application_id"].tolist()
    records = append(engine, predictions(sha, ids, [0.3, 0.3, 0.3], routed=(0, 1)), "b1")
    audit.resolve_case(engine, records[0], "alice", "decline", "x")
    audit.resolve_case(engine, records[1], "alice", "decline", "y")
    extra = review_labelled_rows(engine, store, apps, target="defaulted", hash_key=KEY).frame

    labelled_apps = frame.iloc[[0]].assign(**{SNAPSHOT_COLUMN: sha})
    outcomes = pd.DataFrame({"application_id": [ids[0]], "defaulted": [0], SNAPSHOT_COLUMN: ["o1"]})
    joined, counts = join_labels(
        labelled_apps,
        outcomes,
        id_column="application_id",
        outcome_id_column="application_id",
        target="defaulted",
        extra_labelled=extra,
    )
    by_id = joined.set_index("application_id")
    assert by_id.loc[ids[0], "defaulted"] == 0 and by_id.loc[ids[0], LABEL_SOURCE_COLUMN] == "outcome"
    assert by_id.loc[ids[1], "defaulted"] == 1 and by_id.loc[ids[1], LABEL_SOURCE_COLUMN] == "review"
    assert counts["extra_labelled_rows"] == 1
    # The model's lineage names the review labels it learned from (the outcome-labelled row is not one).
    [used] = review_labels(joined, "defaulted")
    case = audit.get_case(engine, records[1])
    assert used == ReviewLabel(
        review_record_id=str(case.review_record_id),
        case_id=records[1],
        input_snapshot=sha,
        input_row=1,
        label=1,
    )
    flipped = used.model_copy(update={"label": 0})
    assert review_labels_sha256([used]) != review_labels_sha256([flipped])
    assert review_labels_sha256([]) == review_labels_sha256(review_labels(labelled_apps, "defaulted"))


def test_unusable_cases_are_listed_not_dropped_silently(engine: Engine, store: LocalStore) -> None:
    apps, _ = contracts()
    sha, frame = application_snapshot(store, apps, 2, seed=3)
    ids = frame["application_id"].tolist()
    missing = "f" * 64  # a snapshot that is not in the store
    wrong_row = predictions(sha, [ids[0]], [0.3], routed=(0,), rows=[1])  # row 1 is another entity
    records = [
        *append(engine, predictions(missing, ["X-1"], [0.3], routed=(0,)), "b1"),
        *append(engine, wrong_row, "b2"),
        *append(engine, predictions(sha, [ids[1]], [0.3], routed=(0,), rows=[5]), "b3"),
    ]
    for case_id in records:
        audit.resolve_case(engine, case_id, "carol", "approve", "fine")

    result = review_labelled_rows(engine, store, apps, target="defaulted", hash_key=KEY)

    assert result.frame.empty and result.summary.resolved_cases == 3
    reasons = {s.case_id: s.reason for s in result.summary.skipped}
    assert "no object" in reasons[records[0]]
    assert "not the scored entity" in reasons[records[1]]
    assert "outside snapshot" in reasons[records[2]]


def test_an_id_reviewed_twice_keeps_the_latest_decision(engine: Engine, store: LocalStore) -> None:
    apps, _ = contracts()
    sha, frame = application_snapshot(store, apps, 1, seed=4)
    ids = frame["application_id"].tolist()
    first = append(engine, predictions(sha, ids, [0.3], routed=(0,)), "b1")[0]
    audit.resolve_case(engine, first, "alice", "decline", "first look")
    # Scored again later (resolved cases are not superseded) and reviewed again.
    second = append(engine, predictions(sha, ids, [0.3], routed=(0,), version="4"), "b2")[0]
    audit.resolve_case(engine, second, "bob", "approve", "documents arrived")

    result = review_labelled_rows(engine, store, apps, target="defaulted", hash_key=KEY)

    assert result.frame["defaulted"].tolist() == [0] and result.frame[REVIEWER_COLUMN].tolist() == ["bob"]
    assert result.summary.superseded_reviews == 1


def test_a_target_inside_the_application_contract_is_refused(engine: Engine, store: LocalStore) -> None:
    apps, _ = contracts()
    with pytest.raises(InputError, match="leakage"):
        review_labelled_rows(engine, store, apps, target="loan_amount")
