"""Training core: time-aware split and a deterministic XGBoost booster.

Determinism (PITFALLS: XGBoost): fixed ``seed`` and ``nthread``, ``tree_method=hist``, the
same rows in the same order (labelled rows are sorted by timestamp then id) and the same
feature schema -> bit-identical booster bytes and scores on the same machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import xgboost as xgb

from mlops.errors import InputError, WorkRefused
from mlops.features import FeatureSchema, fit_feature_schema, prepare
from mlops.labels import LABEL_SOURCE_COLUMN, LABEL_SOURCE_REVIEW, sort_rows
from mlops.lineage import model_fingerprint
from mlops.model_spec import ModelSpec

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainSplit:
    """Older rows to train on, the newest rows to evaluate on."""

    train: pd.DataFrame
    evaluation: pd.DataFrame
    cutoff: str | None  # first timestamp of the evaluation rows (None without a timestamp)
    review_rows_held_out: int = 0  # review-labelled rows past the cutoff: neither side


def time_split(
    frame: pd.DataFrame,
    *,
    newest_fraction: float,
    timestamp_column: str | None,
    id_column: str,
    min_evaluation_rows: int = 1,
    target: str | None = None,
) -> TrainSplit:
    """Hold out the newest ``newest_fraction`` of rows; rows sharing the cutoff timestamp all go
    to evaluation, so no training row is newer than (or as new as) an evaluation row.

    Evaluation is on observed outcomes only: rows labelled by a person's review
    (``_label_source`` = review) past the cutoff are held out of both sides. An observed outcome
    replaces a review label, so the review labels left are mostly the newest rows': they would
    have made up a large share of the evaluation rows, and the gates would have compared the
    models with the reviewers' decisions on the very cases the champion's band picked. Held out
    now, they train in a later run once they are older than its cutoff (a declined application,
    whose outcome is never observed, keeps its review label).

    ``target``: the label column; each side must then hold both outcomes (AUC, KS and the
    gates need them), else the split is refused before any training time is spent."""
    if not 0.0 < newest_fraction < 1.0:
        raise InputError(f"newest_fraction must be in (0, 1), got {newest_fraction}")
    keys = [timestamp_column, id_column] if timestamp_column else [id_column]
    ordered = sort_rows(frame, keys)  # labelled rows come sorted: then this is one vectorised check
    n_eval = math.ceil(len(ordered) * newest_fraction)
    first_eval = len(ordered) - n_eval
    cutoff: str | None = None
    if timestamp_column is not None and 0 < first_eval < len(ordered):
        ts = ordered[timestamp_column]
        cut_value = ts.iloc[first_eval]
        first_eval = int((ts < cut_value).sum())  # rows are sorted: ties move to evaluation
        cutoff = str(cut_value)
    train, evaluation = ordered.iloc[:first_eval], ordered.iloc[first_eval:]
    reviewed = _review_labelled(evaluation)
    if reviewed.any():
        evaluation = evaluation.loc[~reviewed]
    if len(evaluation) < min_evaluation_rows or len(train) == 0:
        raise WorkRefused(
            f"time split gave {len(train)} training and {len(evaluation)} evaluation rows "
            f"(need >= 1 and >= {min_evaluation_rows})",
            hint="wait for more labelled data, or change evaluation.newest_fraction / min_rows in the model spec",
        )
    if target is not None:
        _require_both_outcomes(train, target, "training")
        _require_both_outcomes(evaluation, target, "evaluation")
    return TrainSplit(
        train.reset_index(drop=True), evaluation.reset_index(drop=True), cutoff, int(reviewed.sum())
    )


#: The training run's param holding its evaluation cutoff (TrainSplit.cutoff, as text).
EVALUATION_CUTOFF_PARAM: Final = "evaluation_cutoff"


def rows_from_cutoff(
    rows: pd.DataFrame, timestamp_column: str | None, cutoff: str | None
) -> npt.NDArray[np.bool_] | None:
    """Rows at or after another run's evaluation ``cutoff`` (as its run logged it: the text of
    a value of ``timestamp_column``): rows before it may have been that run's training rows.

    None when nothing can be said (no timestamp column, no cutoff logged, or a cutoff that does
    not read as a value of the column): then every row counts, as before cutoffs were logged."""
    if timestamp_column is None or not cutoff or cutoff == "None" or timestamp_column not in rows.columns:
        return None
    column = rows[timestamp_column]
    try:
        if pd.api.types.is_datetime64_any_dtype(column):
            bound: Any = pd.Timestamp(cutoff)
            if column.dt.tz is not None and bound.tzinfo is None:
                bound = bound.tz_localize("UTC")  # a naive time is UTC, as validation reads them
            elif column.dt.tz is None and bound.tzinfo is not None:
                bound = bound.tz_convert("UTC").tz_localize(None)
        elif pd.api.types.is_numeric_dtype(column):
            bound = float(cutoff)
        else:
            return None
        return np.asarray((column >= bound).fillna(False).to_numpy(), dtype=bool)
    except (ValueError, TypeError):
        return None


def _review_labelled(rows: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Which rows carry a review's label rather than an observed outcome."""
    if LABEL_SOURCE_COLUMN not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    return (rows[LABEL_SOURCE_COLUMN] == LABEL_SOURCE_REVIEW).to_numpy(dtype=bool, na_value=False)


def _require_both_outcomes(rows: pd.DataFrame, target: str, side: str) -> None:
    """Refuse a side of the split whose labels are one class only (missing labels are left to
    the checks that read them)."""
    if target not in rows.columns:
        return
    classes = rows[target].dropna().unique()
    if len(classes) == 1:
        raise WorkRefused(
            f"the {len(rows)} {side} rows of the time split all have {target!r} = {classes[0]}: "
            "AUC, KS and the gates need both outcomes",
            hint="wait for outcomes of both kinds in the newest rows, or change "
            "evaluation.newest_fraction / training_window in the model spec",
        )


def _labels(frame: pd.DataFrame, target: str) -> npt.NDArray[np.float64]:
    if target not in frame.columns:
        raise InputError(f"training rows lack the target column {target!r}")
    y = frame[target]
    if y.isna().any():
        raise InputError(f"target {target!r} has {int(y.isna().sum())} missing value(s)")
    values = y.to_numpy(dtype="float64")
    if not np.isin(values, (0.0, 1.0)).all():
        raise InputError(f"target {target!r} must be 0/1")
    if len(np.unique(values)) < 2:
        raise WorkRefused(
            f"target {target!r} has a single class in the training rows",
            hint="train on a window that holds both outcomes",
        )
    return values


@dataclass(frozen=True)
class TrainedModel:
    """A booster with the feature schema it was trained on."""

    booster: xgb.Booster
    schema: FeatureSchema

    def predict(self, frame: pd.DataFrame) -> FloatArray:
        """Probability of the positive class (default) for raw rows.

        ``inplace_predict`` on the prepared frame: the same scores as through a ``DMatrix``
        (bit for bit, as the logged pyfunc model scores), without building one."""
        scores: FloatArray = np.asarray(
            self.booster.inplace_predict(prepare(frame, self.schema)), dtype="float64"
        )
        return scores

    def booster_bytes(self) -> bytes:
        """The booster as XGBoost JSON (the artifact logged with the model)."""
        return bytes(self.booster.save_raw(raw_format="json"))

    def fingerprint(self) -> str:
        """:func:`mlops.lineage.model_fingerprint` of the files this model is logged as."""
        return model_fingerprint(self.booster_bytes(), self.schema.to_json().encode())


def load_trained_model(booster_json: bytes, schema_json: str) -> TrainedModel:
    booster = xgb.Booster()
    booster.load_model(bytearray(booster_json))
    return TrainedModel(booster=booster, schema=FeatureSchema.from_json(schema_json))


@dataclass(frozen=True)
class TrainingMatrix:
    """Training rows made ready for XGBoost: the fitted feature schema and the ``DMatrix``."""

    schema: FeatureSchema
    matrix: xgb.DMatrix


def empty_features(frame: pd.DataFrame, features: list[str]) -> list[str]:
    """The features with no value in ``frame`` (all missing): a model cannot learn from them."""
    return [f for f in features if f in frame.columns and not frame[f].notna().any()]


def training_matrix(frame: pd.DataFrame, *, features: list[str], target: str) -> TrainingMatrix:
    """Fit the feature schema on ``frame``, prepare the features and build the ``DMatrix``."""
    schema = fit_feature_schema(frame, features)
    labels = _labels(frame, target)
    return TrainingMatrix(schema, xgb.DMatrix(prepare(frame, schema), label=labels, enable_categorical=True))


def train_on(ready: TrainingMatrix, *, params: dict[str, Any], num_boost_round: int) -> TrainedModel:
    """Train a booster on a prepared matrix (no evaluation set, no early stop)."""
    booster = xgb.train(params, ready.matrix, num_boost_round=num_boost_round, verbose_eval=False)
    return TrainedModel(booster=booster, schema=ready.schema)


def train_booster(
    frame: pd.DataFrame,
    *,
    features: list[str],
    target: str,
    params: dict[str, Any],
    num_boost_round: int,
) -> TrainedModel:
    """Fit the feature schema on ``frame`` and train a booster on it (no evaluation set, no early stop)."""
    ready = training_matrix(frame, features=features, target=target)
    return train_on(ready, params=params, num_boost_round=num_boost_round)


def spec_matrix(frame: pd.DataFrame, spec: ModelSpec) -> TrainingMatrix:
    """The spec's training matrix on ``frame`` (the training rows of a resolved spec)."""
    return training_matrix(frame, features=spec.feature_list, target=spec.target_column)


def train_spec_on(ready: TrainingMatrix, spec: ModelSpec) -> TrainedModel:
    """Train the spec's model on its prepared training matrix."""
    return train_on(ready, params=spec.booster_params(), num_boost_round=spec.num_boost_round)


def train_model(frame: pd.DataFrame, spec: ModelSpec) -> TrainedModel:
    """Train the spec's model on ``frame`` (the training rows of a resolved spec)."""
    return train_spec_on(spec_matrix(frame, spec), spec)
