"""Time-aware split, lineage tags and git state, registry helpers: pure functions on tiny inputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import WorkRefused
from mlops.lineage import (
    LINEAGE_TAGS,
    TAG_COMPARED_WITH,
    TAG_FLOW_RUN_ID,
    TAG_GIT_DIRTY,
    GitState,
    Lineage,
    git_state,
    installed_packages,
)
from mlops.registry import flatten_params
from mlops.training import rows_from_cutoff, time_split

pytestmark = pytest.mark.unit


def _frame(ts: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(ts))], "ts": ts})


def test_split_holds_out_the_newest_rows() -> None:
    split = time_split(_frame([5, 1, 4, 2, 3]), newest_fraction=0.4, timestamp_column="ts", id_column="id")
    assert split.train["ts"].tolist() == [1, 2, 3] and split.evaluation["ts"].tolist() == [4, 5]
    assert split.cutoff == "4"


def test_rows_sharing_the_cutoff_timestamp_all_go_to_evaluation() -> None:
    split = time_split(_frame([1, 2, 3, 3, 3]), newest_fraction=0.2, timestamp_column="ts", id_column="id")
    assert split.train["ts"].tolist() == [1, 2] and split.evaluation["ts"].tolist() == [3, 3, 3]
    assert split.train["ts"].max() < split.evaluation["ts"].min()


def test_split_without_timestamp_uses_id_order() -> None:
    split = time_split(_frame([0, 0, 0, 0]), newest_fraction=0.5, timestamp_column=None, id_column="id")
    assert split.evaluation["id"].tolist() == ["r2", "r3"] and split.cutoff is None


def test_review_labelled_rows_past_the_cutoff_are_neither_evaluated_nor_trained_on() -> None:
    # Observed outcomes replace review labels, so the review labels left are the newest rows':
    # they made up much of the evaluation, and the gates compared models with reviewers' calls.
    sources = ["outcome", "review", "outcome", "review", "outcome", "review"]
    frame = _frame([1, 2, 3, 4, 5, 6]).assign(_label_source=sources)
    split = time_split(frame, newest_fraction=0.5, timestamp_column="ts", id_column="id")
    assert split.train["ts"].tolist() == [1, 2, 3]  # an older review label trains
    assert split.evaluation["ts"].tolist() == [5] and split.review_rows_held_out == 2
    assert split.cutoff == "4"
    with pytest.raises(WorkRefused, match="1 evaluation rows"):
        time_split(frame, newest_fraction=0.5, timestamp_column="ts", id_column="id", min_evaluation_rows=2)


@pytest.mark.parametrize("ts", [[1, 1, 1, 1], [1]])
def test_split_refuses_an_empty_side(ts: list[int]) -> None:
    with pytest.raises(WorkRefused, match="time split"):
        time_split(_frame(ts), newest_fraction=0.5, timestamp_column="ts", id_column="id")


@pytest.mark.parametrize(
    ("labels", "side"), [([0, 1, 0, 1, 0, 0], "evaluation"), ([0, 0, 0, 0, 1, 0], "training")]
)
def test_split_refuses_a_side_with_one_outcome_before_training(labels: list[int], side: str) -> None:
    # A newest window without a default used to be trained on, then stop in the evaluation with
    # InputError (exit 2, "bad input") and no decision record: nothing was wrong with the input.
    frame = _frame([1, 2, 3, 4, 5, 6]).assign(y=labels)
    with pytest.raises(WorkRefused, match=f"{side} rows of the time split all have 'y'"):
        time_split(frame, newest_fraction=0.3, timestamp_column="ts", id_column="id", target="y")
    split = time_split(frame, newest_fraction=0.3, timestamp_column="ts", id_column="id")
    assert len(split.evaluation) == 2  # without a target the split is as before


def _lineage(**changes: object) -> Lineage:
    base = {
        "application_snapshots": ["a1", "a2"],
        "outcome_snapshots": ["o1"],
        "applications_contract": "credit_applications",
        "applications_contract_versions": ["1.0.0"],
        "outcomes_contract": "credit_outcomes",
        "outcomes_contract_versions": ["1.0.0"],
        "git": GitState(commit="abc", dirty=False),
        "model_spec": "credit-risk",
        "model_spec_sha256": "f" * 64,
        "packages": ["numpy==2.4.0"],
        "seed": 42,
        "flow_run_id": None,
        "compared_with_champion": None,
        "model_fingerprint": "e" * 64,
        "training_rows": 10,
        "evaluation_rows": 5,
    }
    return Lineage.model_validate(base | changes)


def test_lineage_tags_cover_every_key_as_strings() -> None:
    tags = _lineage().tags()
    assert set(tags) == set(LINEAGE_TAGS)
    assert all(isinstance(v, str) and v for v in tags.values())
    assert tags[TAG_FLOW_RUN_ID] == "none" and tags[TAG_COMPARED_WITH] == "none"
    tags = _lineage(
        flow_run_id="run-1", compared_with_champion=3, git=GitState(commit=None, dirty=None)
    ).tags()
    assert tags[TAG_FLOW_RUN_ID] == "run-1" and tags[TAG_COMPARED_WITH] == "3"
    assert tags[TAG_GIT_DIRTY] == "unknown"


def test_git_state_outside_a_repository(tmp_path: Path) -> None:
    assert git_state(tmp_path) == GitState(commit=None, dirty=None)


def test_git_state_of_a_repository(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    state = git_state(tmp_path)
    assert state.commit is not None and len(state.commit) == 40 and state.dirty is False
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path).dirty is True


def test_installed_packages_match_the_full_metadata_parse() -> None:
    from importlib.metadata import distributions

    full = {f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in distributions()}
    packages = installed_packages()
    assert packages == sorted(p for p in full if not p.startswith("=="))
    assert any(p.startswith("xgboost==") for p in packages)


def test_flatten_params() -> None:
    flat = flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": "1", "a.c": "1,2", "d": "none"}


def test_rows_from_a_logged_cutoff_read_it_back_as_the_column_s_values() -> None:
    """The cutoff as a run logged it (``str`` of the split's first evaluation timestamp) marks
    the rows at or after it; when it cannot be read, nothing is said (None: every row counts)."""
    at = pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"], utc=True)
    frame = pd.DataFrame({"at": at, "n": [1.0, 2.0, 3.0], "text": ["a", "b", "c"]})
    logged = str(at[1])  # what time_split records: '2026-01-02 00:00:00+00:00'
    assert rows_from_cutoff(frame, "at", logged).tolist() == [False, True, True]  # type: ignore[union-attr]
    assert rows_from_cutoff(frame, "at", "2026-01-02").tolist() == [False, True, True]  # type: ignore[union-attr]
    assert rows_from_cutoff(frame, "n", "2.0").tolist() == [False, True, True]  # type: ignore[union-attr]
    naive = frame.assign(at=at.tz_localize(None))  # a column without a zone is read as UTC
    assert rows_from_cutoff(naive, "at", logged).tolist() == [False, True, True]  # type: ignore[union-attr]
    for column, cutoff in (("at", None), ("at", "None"), ("at", "not a time"), (None, logged), ("text", "b")):
        assert rows_from_cutoff(frame, column, cutoff) is None


def test_a_categorical_feature_with_no_value_in_training_trains_and_scores_as_missing() -> None:
    """A column the contract added lately is all missing in the training rows: XGBoost 3.2
    cannot build a matrix from a categorical column with no categories (it crashed the train
    flow with "cannot call vectorize on size 0 inputs"); it trains as an all-missing column,
    and values sent later are unseen, so missing."""
    import numpy as np

    from mlops.features import prepare
    from mlops.training import empty_features, train_booster

    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "grade": pd.Series(rng.choice(["A", "B"], n), dtype="string[pyarrow]"),
            "discount": pd.Series([None] * n, dtype="string[pyarrow]"),
            "y": (rng.random(n) < 0.3).astype(int),
        }
    )
    features = ["a", "grade", "discount"]
    assert empty_features(frame, features) == ["discount"]
    model = train_booster(
        frame, features=features, target="y", params={"tree_method": "hist", "seed": 1}, num_boost_round=5
    )
    later = frame.head(3).assign(discount=pd.Series(["10%", None, "5%"], dtype="string[pyarrow]"))
    assert prepare(later, model.schema)["discount"].isna().all()
    np.testing.assert_array_equal(model.predict(later), model.predict(frame.head(3)))


def test_a_plain_mlflow_user_scores_rows_whose_never_seen_categorical_is_all_missing(tmp_path: Path) -> None:
    """The column a model never saw a value of is missing in the rows sent to it too, and pandas
    reads an empty column as float NaN: declared ``string`` in the signature, MLflow refused the
    rows ("Can not safely convert float64 to <U0") before the model could treat them as missing."""
    import mlflow
    import numpy as np

    from mlops.pyfunc_model import log_pyfunc_model
    from mlops.training import train_booster

    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "discount": pd.Series([None] * n, dtype="string[pyarrow]"),
            "y": (rng.random(n) < 0.3).astype(int),
        }
    )
    model = train_booster(
        frame,
        features=["a", "discount"],
        target="y",
        params={"tree_method": "hist", "seed": 1},
        num_boost_round=3,
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An explicit experiment, not a process-wide active one (later tests start runs too).
    with mlflow.start_run(experiment_id=mlflow.create_experiment("e", artifact_location=str(tmp_path / "a"))):
        info = log_pyfunc_model(model.booster_bytes(), model.schema)
    rows = pd.DataFrame({"a": frame["a"].head(4), "discount": np.nan})  # as read_csv gives an empty column
    scores = mlflow.pyfunc.load_model(info.model_uri).predict(rows)
    np.testing.assert_array_equal(np.asarray(scores).ravel(), model.predict(frame.head(4)))
