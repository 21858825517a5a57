"""The trained booster: bit-identical determinism, and behaviour (direction, invariance)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.model_spec import ModelSpec, load_model_spec
from mlops.settings import PROJECT_ROOT
from mlops.training import TrainedModel, time_split, train_model
from tests.training_helpers import simulated_day

pytestmark = pytest.mark.model


def _labelled(days: int = 5, rows: int = 500) -> pd.DataFrame:
    frames = []
    for day in range(days):
        apps, outs = simulated_day(day, rows)
        frames.append(apps.assign(defaulted=outs["defaulted"].to_numpy()))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    base = load_model_spec("credit-risk", contracts_dir=PROJECT_ROOT / "data_contracts")
    return base.model_copy(update={"nthread": 1, "num_boost_round": 80})


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return _labelled()


@pytest.fixture(scope="module")
def model(spec: ModelSpec, data: pd.DataFrame) -> TrainedModel:
    split = time_split(data, newest_fraction=0.2, timestamp_column="applied_at", id_column="application_id")
    return train_model(split.train, spec)


def test_same_inputs_give_bit_identical_model_and_scores(
    spec: ModelSpec, data: pd.DataFrame, model: TrainedModel
) -> None:
    split = time_split(data, newest_fraction=0.2, timestamp_column="applied_at", id_column="application_id")
    again = train_model(split.train.copy(), spec)
    assert again.booster_bytes() == model.booster_bytes()
    assert again.schema == model.schema and again.fingerprint() == model.fingerprint()
    assert np.array_equal(again.predict(split.evaluation), model.predict(split.evaluation))


def test_a_fresh_process_trains_the_same_bytes(model: TrainedModel, tmp_path: Path) -> None:
    """No hidden state (hash seeds, thread scheduling) leaks into the model."""
    code = textwrap.dedent(
        """
        import json
        from mlops.model_spec import load_model_spec
        from mlops.settings import PROJECT_ROOT
        from mlops.training import time_split, train_model
        from tests.model.test_training import _labelled
        spec = load_model_spec("credit-risk", contracts_dir=PROJECT_ROOT / "data_contracts")
        spec = spec.model_copy(update={"nthread": 1, "num_boost_round": 80})
        data = _labelled()
        split = time_split(data, newest_fraction=0.2, timestamp_column="applied_at", id_column="application_id")
        print(json.dumps({"fingerprint": train_model(split.train, spec).fingerprint()}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["fingerprint"] == model.fingerprint()


def test_another_seed_gives_another_model(spec: ModelSpec, data: pd.DataFrame, model: TrainedModel) -> None:
    split = time_split(data, newest_fraction=0.2, timestamp_column="applied_at", id_column="application_id")
    other = train_model(split.train, spec.model_copy(update={"seed": spec.seed + 1}))
    assert other.booster_bytes() != model.booster_bytes()  # colsample_bytree < 1 draws with the seed


@pytest.mark.parametrize(
    ("column", "low_risk", "high_risk"),
    [
        ("credit_score", 800, 540),
        ("num_delinquencies_2y", 0, 3),
        ("employment_type", "salaried", "unemployed"),
        ("has_cosigner", "yes", "no"),
        ("loan_purpose", "car", "small_business"),
    ],
)
def test_higher_risk_features_raise_the_score(
    model: TrainedModel, data: pd.DataFrame, column: str, low_risk: object, high_risk: object
) -> None:
    rows = data.tail(400).copy()
    low = model.predict(rows.assign(**{column: low_risk}))
    high = model.predict(rows.assign(**{column: high_risk}))
    assert high.mean() > low.mean()
    assert (high >= low).mean() > 0.5


def test_the_sensitive_attribute_changes_nothing(model: TrainedModel, data: pd.DataFrame) -> None:
    rows = data.tail(200)
    base = model.predict(rows)
    for value in ("female", "male", "nonbinary", "undisclosed"):
        assert np.array_equal(model.predict(rows.assign(gender=value)), base)


def test_unseen_categories_score_like_missing(model: TrainedModel, data: pd.DataFrame) -> None:
    rows = data.tail(50)
    unseen = model.predict(rows.assign(region="atlantis"))
    missing = model.predict(rows.assign(region=None))
    assert np.isfinite(unseen).all() and np.array_equal(unseen, missing)


def test_scores_are_probabilities_and_rank_defaults(model: TrainedModel, data: pd.DataFrame) -> None:
    from sklearn.metrics import roc_auc_score

    evaluation = data.tail(500)
    scores = model.predict(evaluation)
    assert ((scores > 0) & (scores < 1)).all()
    assert roc_auc_score(evaluation["defaulted"], scores) > 0.7
