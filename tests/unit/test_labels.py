"""Labelled rows: join validated applications and outcomes by id, dedup, lineage, idempotency."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlops.catalog import list_snapshots
from mlops.constants import KIND_VALID
from mlops.contracts import Contract, load_contract
from mlops.errors import StorageIntegrityError, WorkRefused
from mlops.labels import (
    LABEL_SOURCE_COLUMN,
    OUTCOME_SNAPSHOT_COLUMN,
    SNAPSHOT_COLUMN,
    SNAPSHOT_ROW_COLUMN,
    dedup_outcomes,
    gather_labelled,
    join_labels,
    sort_order,
    sort_rows,
)
from mlops.model_spec import ModelSpec, TrainingWindow, load_model_spec
from mlops.settings import PROJECT_ROOT
from mlops.storage import LocalStore, read_snapshot
from tests.training_helpers import ingest, simulated_day

pytestmark = pytest.mark.unit

CONTRACTS = PROJECT_ROOT / "data_contracts"


@pytest.fixture
def contracts() -> tuple[Contract, Contract]:
    return load_contract(CONTRACTS, "credit_applications"), load_contract(CONTRACTS, "credit_outcomes")


@pytest.fixture
def spec() -> ModelSpec:
    base = load_model_spec("credit-risk", contracts_dir=CONTRACTS)
    return base.model_copy(update={"training_window": TrainingWindow(min_rows=10)})


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _join(apps: pd.DataFrame, outs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """join_labels on the small frames of these tests (id, ts / id, seen, y)."""
    return join_labels(
        apps,
        outs,
        id_column="id",
        outcome_id_column="id",
        target="y",
        observed_column="seen",
        timestamp_column="ts",
    )


def test_join_keeps_lineage_and_only_labelled_rows(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    apps_c, outs_c = contracts
    apps0, outs0 = simulated_day(0, 40)
    apps1, _ = simulated_day(1, 30)
    sha0 = ingest(store, apps0, apps_c, "a0")
    ingest(store, apps1, apps_c, "a1")  # no outcomes yet
    out_sha = ingest(store, outs0, outs_c, "o0")

    labelled = gather_labelled(store, spec, apps_c, outs_c)
    frame = labelled.frame
    assert len(frame) == 40 and labelled.summary.unlabelled_applications == 30
    assert labelled.summary.application_snapshots == [sha0] and labelled.summary.outcome_snapshots == [
        out_sha
    ]
    assert set(frame[SNAPSHOT_COLUMN]) == {sha0} and set(frame[OUTCOME_SNAPSHOT_COLUMN]) == {out_sha}
    assert (frame[LABEL_SOURCE_COLUMN] == "outcome").all()
    # Each row's lineage points at its own row of the stored snapshot.
    snap = read_snapshot(store, dataset=apps_c.name, kind=KIND_VALID, sha256=sha0)
    for _, row in frame.sample(5, random_state=0).iterrows():
        assert snap.loc[row[SNAPSHOT_ROW_COLUMN], "application_id"] == row["application_id"]
    expected = outs0.set_index("application_id")["defaulted"]
    assert (frame.set_index("application_id")["defaulted"] == expected.loc[frame["application_id"]]).all()
    assert frame["applied_at"].is_monotonic_increasing
    assert labelled.summary.positives == int(outs0["defaulted"].sum())


def _day0_applications_ingested(store: LocalStore, applications: Contract) -> pd.DataFrame:
    """Ingest day 0's 40 applications; returns their outcomes (not ingested)."""
    apps0, outs0 = simulated_day(0, 40)
    ingest(store, apps0, applications, "a0")
    return outs0


def test_an_outcome_batch_ingested_twice_changes_nothing(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    apps_c, outs_c = contracts
    outs0 = _day0_applications_ingested(store, apps_c)
    first_sha = ingest(store, outs0, outs_c, "o0")
    before = gather_labelled(store, spec, apps_c, outs_c).frame

    assert ingest(store, outs0, outs_c, "o0-again") == first_sha  # same bytes: same snapshot
    assert len(list_snapshots(store, outs_c.name)) == 1
    pd.testing.assert_frame_equal(gather_labelled(store, spec, apps_c, outs_c).frame, before)

    # The same outcomes in another file (other row order -> other snapshot): still one label per id.
    reordered = outs0.iloc[::-1].reset_index(drop=True)
    ingest(store, reordered, outs_c, "o0-reexport")
    again = gather_labelled(store, spec, apps_c, outs_c)
    assert len(list_snapshots(store, outs_c.name)) == 2
    assert again.summary.duplicate_outcomes == 40 and again.summary.conflicting_outcomes == 0
    cols = [c for c in before.columns if c not in (OUTCOME_SNAPSHOT_COLUMN, "_outcome_row")]
    pd.testing.assert_frame_equal(again.frame[cols], before[cols])


def test_the_lineage_lists_outcome_snapshots_in_the_order_ties_were_broken(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    """A correction of older outcomes (same observation times, an earlier newest time than the
    batch it corrects) is read last: the lineage lists it last, so a rebuild from the tag agrees."""
    apps_c, outs_c = contracts
    outs0 = _day0_applications_ingested(store, apps_c)
    first = ingest(store, outs0, outs_c, "o0")
    corrected = outs0.iloc[:10].assign(defaulted=1 - outs0["defaulted"].iloc[:10])
    correction = ingest(store, corrected, outs_c, "o0-correction")
    assert [e.sha256 for e in list_snapshots(store, outs_c.name)][-1] == first  # by data time: first last

    labelled = gather_labelled(store, spec, apps_c, outs_c)

    assert labelled.summary.outcome_snapshots == [first, correction]  # as read: ingestion order
    by_id = labelled.frame.set_index(apps_c.id_column)["defaulted"]
    wanted = corrected.set_index(outs_c.id_column)["defaulted"]
    assert (by_id.loc[wanted.index] == wanted).all()  # the correction's labels


def test_a_later_correction_wins() -> None:
    apps = pd.DataFrame({"id": ["a", "b"], "ts": [1, 2], SNAPSHOT_COLUMN: ["s1", "s1"]})
    outs = pd.DataFrame(
        {
            "id": ["a", "b", "a"],
            "seen": [10, 10, 20],
            "y": [0, 1, 1],
            SNAPSHOT_COLUMN: ["o1", "o1", "o2"],
        }
    )
    frame, counts = _join(apps, outs)
    assert frame["y"].tolist() == [1, 1]
    assert frame[OUTCOME_SNAPSHOT_COLUMN].tolist() == ["o2", "o1"]
    assert counts["duplicate_outcomes"] == 1 and counts["conflicting_outcomes"] == 1


def test_a_correction_batch_ingested_last_decides_a_tie_even_with_older_data(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    apps_c, outs_c = contracts
    outs0 = _day0_applications_ingested(store, apps_c)
    ingest(store, outs0, outs_c, "o0")
    # A correction of the earliest-observed outcome: same observation time, the other label.
    # Its data is older than the first batch's, so ordering by data would let the first win.
    first = outs0.sort_values("observed_at").iloc[[0]].copy()
    first["defaulted"] = 1 - first["defaulted"]
    correction_sha = ingest(store, first, outs_c, "o0-correction")

    labelled = gather_labelled(store, spec, apps_c, outs_c)
    row = labelled.frame.set_index("application_id").loc[first["application_id"].iloc[0]]
    assert row["defaulted"] == first["defaulted"].iloc[0] and row[OUTCOME_SNAPSHOT_COLUMN] == correction_sha
    assert labelled.summary.conflicting_outcomes == 1


def test_outcomes_with_unique_ids_come_back_unchanged_and_duplicates_still_choose() -> None:
    outs = pd.DataFrame(
        {"id": ["c", "a", "b"], "seen": [30, 10, 20], "y": [1, 0, 1], SNAPSHOT_COLUMN: ["o1", "o1", "o2"]},
        index=[7, 3, 5],
    )
    kept, dupes, conflicts = dedup_outcomes(outs, "id", "y", "seen")
    pd.testing.assert_frame_equal(kept, outs.reset_index(drop=True))
    assert (dupes, conflicts) == (0, 0)
    # one id twice: the general path (last observed wins, in input order otherwise)
    twice = pd.concat([outs, pd.DataFrame({"id": ["c"], "seen": [5], "y": [0], SNAPSHOT_COLUMN: ["o3"]})])
    kept, dupes, conflicts = dedup_outcomes(twice, "id", "y", "seen")
    assert kept["id"].tolist() == ["c", "a", "b"] and kept["y"].tolist() == [1, 0, 1]
    assert (dupes, conflicts) == (1, 1)


def test_duplicate_applications_keep_the_oldest_row() -> None:
    apps = pd.DataFrame({"id": ["a", "a"], "x": [1, 2], SNAPSHOT_COLUMN: ["s1", "s2"]})
    outs = pd.DataFrame({"id": ["a"], "y": [1], SNAPSHOT_COLUMN: ["o1"]})
    frame, counts = join_labels(apps, outs, id_column="id", outcome_id_column="id", target="y")
    assert frame["x"].tolist() == [1] and counts["duplicate_applications"] == 1


def test_extra_labelled_rows_are_added_but_never_override_observed_outcomes() -> None:
    apps = pd.DataFrame({"id": ["a", "b"], "x": [1, 2], SNAPSHOT_COLUMN: ["s1", "s1"]})
    outs = pd.DataFrame({"id": ["a"], "y": [0], SNAPSHOT_COLUMN: ["o1"]})
    reviews = pd.DataFrame({"id": ["a", "c"], "x": [9, 3], "y": [1, 1]})
    frame, counts = join_labels(
        apps, outs, id_column="id", outcome_id_column="id", target="y", extra_labelled=reviews
    )
    assert frame[["id", "y", LABEL_SOURCE_COLUMN]].values.tolist() == [
        ["a", 0, "outcome"],
        ["c", 1, "review"],
    ]
    assert counts["extra_labelled_rows"] == 1


def test_training_window_by_snapshots_and_days(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    apps_c, outs_c = contracts
    shas = []
    for day in range(3):
        apps, outs = simulated_day(day, 20)
        shas.append(ingest(store, apps, apps_c, f"a{day}"))
        ingest(store, outs, outs_c, f"o{day}")
    last_two = spec.model_copy(update={"training_window": TrainingWindow(last_snapshots=2, min_rows=10)})
    assert set(gather_labelled(store, last_two, apps_c, outs_c).frame[SNAPSHOT_COLUMN]) == set(shas[1:])
    one_day = spec.model_copy(update={"training_window": TrainingWindow(last_days=1, min_rows=10)})
    frame = gather_labelled(store, one_day, apps_c, outs_c).frame
    assert frame["applied_at"].min() > frame["applied_at"].max() - timedelta(days=1)
    assert SNAPSHOT_COLUMN in frame and set(frame[SNAPSHOT_COLUMN]) <= set(shas[1:])


def test_too_little_data_is_refused(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    apps_c, outs_c = contracts
    with pytest.raises(WorkRefused, match="nothing to train on"):
        gather_labelled(store, spec, apps_c, outs_c)
    apps, outs = simulated_day(0, 5)
    ingest(store, apps, apps_c, "a")
    ingest(store, outs, outs_c, "o")
    with pytest.raises(WorkRefused, match="only 5 labelled rows"):
        gather_labelled(store, spec, apps_c, outs_c)


def test_sort_order_skips_sorted_frames_and_matches_a_stable_sort() -> None:
    ordered = pd.DataFrame({"ts": [1, 1, 2, 2, 3], "id": ["a", "b", "a", "c", "a"]})
    assert sort_order(ordered, ["ts", "id"]) is None
    shuffled = ordered.iloc[[3, 0, 4, 2, 1]].reset_index(drop=True)
    expected = shuffled.sort_values(["ts", "id"], kind="mergesort")
    assert sort_order(shuffled, ["ts", "id"]).tolist() == expected.index.tolist()
    pd.testing.assert_frame_equal(sort_rows(shuffled, ["ts", "id"]), expected.reset_index(drop=True))
    with_missing = pd.DataFrame({"ts": [1.0, None, 0.5], "id": ["a", "b", "c"]})
    pd.testing.assert_frame_equal(
        sort_rows(with_missing, ["ts", "id"]),
        with_missing.sort_values(["ts", "id"], kind="mergesort").reset_index(drop=True),
    )


def test_unsorted_and_duplicated_input_joins_as_a_merge_would() -> None:
    apps = pd.DataFrame(
        {
            "id": ["c", "a", "b", "a", "d"],
            "ts": [3, 1, 2, 9, 1],
            "x": [30, 10, 20, 99, 40],
            SNAPSHOT_COLUMN: ["s1", "s1", "s1", "s2", "s2"],
        }
    )
    outs = pd.DataFrame(
        {"id": ["a", "b", "c", "b"], "y": [1, 0, 1, 1], "seen": [5, 5, 5, 6], SNAPSHOT_COLUMN: "o1"}
    )
    frame, counts = _join(apps, outs)
    assert frame[["id", "x", "y", SNAPSHOT_ROW_COLUMN, "_outcome_row"]].values.tolist() == [
        ["a", 10, 1, 1, 0],
        ["b", 20, 1, 2, 3],
        ["c", 30, 1, 0, 2],
    ]
    assert counts == {
        "duplicate_applications": 1,
        "duplicate_outcomes": 1,
        "conflicting_outcomes": 1,
        "unlabelled_applications": 1,
        "outcomes_before_application": 0,
        "extra_labelled_rows": 0,
    }


def test_an_altered_snapshot_is_refused(
    store: LocalStore, contracts: tuple[Contract, Contract], spec: ModelSpec
) -> None:
    apps_c, outs_c = contracts
    apps, outs = simulated_day(0, 20)
    sha = ingest(store, apps, apps_c, "a")
    ingest(store, outs, outs_c, "o")
    key = f"snapshots/{apps_c.name}/{KIND_VALID}/{sha}.parquet"
    store.put_bytes(key, store.get_bytes(key) + b"tampered")
    with pytest.raises(StorageIntegrityError, match="hashes to"):
        gather_labelled(store, spec, apps_c, outs_c)


def test_an_outcome_observed_before_its_application_is_not_used() -> None:
    """No real outcome precedes its application: such a row is left out and counted."""
    day = pd.Timestamp("2026-03-01", tz="UTC")
    apps = pd.DataFrame(
        {"id": ["a", "b", "c"], "ts": [day, day, day + timedelta(days=1)], SNAPSHOT_COLUMN: ["s1"] * 3}
    )
    outs = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "seen": [day + timedelta(days=30), day - timedelta(days=1), day + timedelta(days=1)],
            "y": [0, 1, 1],
            SNAPSHOT_COLUMN: ["o1"] * 3,
        }
    )
    frame, counts = _join(apps, outs)
    assert frame["id"].tolist() == ["a", "c"]  # observed at the very time it was submitted: kept
    assert counts["outcomes_before_application"] == 1 and counts["unlabelled_applications"] == 0
