"""Feature schema and preprocessing: trained column order, kinds, categories; raw input casting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.errors import InputError
from mlops.features import CATEGORICAL, NUMERIC, FeatureSchema, fit_feature_schema, prepare

pytestmark = pytest.mark.unit


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "income": [50_000.0, np.nan, 72_000.5],
            "age": [30, 41, 57],
            "plan": pd.array(["gold", "basic", "gold"], dtype="str"),
            "extra": ["x", "y", "z"],
        }
    )


def test_fit_records_order_kinds_and_sorted_categories(train: pd.DataFrame) -> None:
    schema = fit_feature_schema(train, ["plan", "income", "age"])
    assert schema.names == ["plan", "income", "age"]
    assert [c.kind for c in schema.columns] == [CATEGORICAL, NUMERIC, NUMERIC]
    assert schema.columns[0].categories == ("basic", "gold")
    assert schema.columns[1].categories is None


def test_schema_json_round_trip_is_stable(train: pd.DataFrame) -> None:
    schema = fit_feature_schema(train, ["income", "plan"])
    text = schema.to_json()
    assert FeatureSchema.from_json(text) == schema
    assert FeatureSchema.from_json(text).to_json() == text


def test_prepare_casts_to_trained_dtypes_and_order(train: pd.DataFrame) -> None:
    schema = fit_feature_schema(train, ["income", "age", "plan"])
    raw = pd.DataFrame(
        {
            "plan": ["basic", "platinum", None],  # unseen -> missing
            "zzz": [1, 2, 3],  # extra column: ignored
            "age": pd.array([20, None, 33], dtype="Int64"),  # nullable int
            "income": ["1000", "2500.5", ""],  # numeric strings; empty -> missing below
        }
    )
    raw.loc[2, "income"] = None
    out = prepare(raw, schema)
    assert list(out.columns) == ["income", "age", "plan"]
    assert out["income"].dtype == "float64" and out["age"].dtype == "float64"
    assert out["income"].tolist()[:2] == [1000.0, 2500.5] and np.isnan(out["income"].iloc[2])
    assert np.isnan(out["age"].iloc[1])
    assert isinstance(out["plan"].dtype, pd.CategoricalDtype)
    assert list(out["plan"].cat.categories) == ["basic", "gold"]
    assert out["plan"].iloc[0] == "basic" and out["plan"].isna().tolist() == [False, True, True]


@pytest.mark.parametrize(
    "column",
    [pd.Series(["gold", "basic"]), pd.Series(["gold", "basic"], dtype="category"), pd.Series([1, 2])],
)
def test_prepare_accepts_text_category_and_numbers_for_categoricals(column: pd.Series) -> None:
    schema = fit_feature_schema(pd.DataFrame({"plan": ["1", "2", "basic", "gold"]}), ["plan"])
    out = prepare(pd.DataFrame({"plan": column}), schema)
    assert out["plan"].notna().all()


def test_missing_feature_columns_are_listed_together(train: pd.DataFrame) -> None:
    schema = fit_feature_schema(train, ["income", "age", "plan"])
    with pytest.raises(InputError, match=r"\['income', 'plan'\]"):
        prepare(pd.DataFrame({"age": [1]}), schema)


def test_non_numeric_text_in_a_numeric_feature_is_an_error(train: pd.DataFrame) -> None:
    schema = fit_feature_schema(train, ["income"])
    with pytest.raises(InputError, match=r"not numbers.*12,000"):
        prepare(pd.DataFrame({"income": ["12,000", "5"]}), schema)


def test_datetime_features_are_refused() -> None:
    frame = pd.DataFrame({"when": pd.to_datetime(["2025-01-01", "2025-01-02"], utc=True)})
    with pytest.raises(InputError, match="datetime"):
        fit_feature_schema(frame, ["when"])


def test_fit_needs_its_columns(train: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="nope"):
        fit_feature_schema(train, ["income", "nope"])


@pytest.mark.parametrize("storage", ["pyarrow", "python"])
def test_string_columns_cast_like_text_whatever_their_storage(storage: str) -> None:
    """The Arrow fast path (C++ lookup of category codes) gives what the generic path gives."""
    raw = ["gold", None, "platinum", "basic", "gold", "", "basic"]
    fast = pd.Series(pd.array(raw, dtype=pd.StringDtype(storage, na_value=np.nan)))
    generic = pd.Series(raw, dtype=object)
    schema = fit_feature_schema(pd.DataFrame({"plan": fast.iloc[[0, 3, 5]]}), ["plan"])
    assert schema.columns[0].categories == ("", "basic", "gold")
    expected = prepare(pd.DataFrame({"plan": generic}), schema)
    pd.testing.assert_frame_equal(prepare(pd.DataFrame({"plan": fast}), schema), expected)
    assert expected["plan"].cat.codes.tolist() == [2, -1, -1, 1, 2, 0, 1]
    chunked = pd.concat([fast.iloc[:3], fast.iloc[3:]], ignore_index=True)  # several Arrow chunks
    pd.testing.assert_frame_equal(prepare(pd.DataFrame({"plan": chunked}), schema), expected)


def test_category_columns_cast_like_text() -> None:
    """The pandas ``category`` fast path (codes remapped per distinct value) gives what the
    generic path gives: unseen and missing values become missing, non-text categories match
    by their text, and the column's own category order does not matter."""
    schema = fit_feature_schema(pd.DataFrame({"plan": ["gold", "basic", "", "7"]}), ["plan"])
    raw = ["gold", None, "platinum", "basic", "gold", "", "basic", None]
    generic = pd.DataFrame({"plan": pd.Series(raw, dtype=object)})
    expected = prepare(generic, schema)
    assert expected["plan"].cat.codes.tolist() == [3, -1, -1, 2, 3, 0, 2, -1]
    reordered = pd.CategoricalDtype(["platinum", "gold", "basic", "", "unused"])
    for column in (pd.Series(raw, dtype="category"), pd.Series(raw, dtype=reordered)):
        pd.testing.assert_frame_equal(prepare(pd.DataFrame({"plan": column}), schema), expected)
    numbers = pd.Series([7, 8, None, 7], dtype="category")  # int categories match by their text "7"
    out = prepare(pd.DataFrame({"plan": numbers}), schema)
    assert out["plan"].cat.codes.tolist() == [1, -1, -1, 1]
    assert (
        out["plan"].cat.codes.tolist()
        == prepare(pd.DataFrame({"plan": numbers.astype(object)}), schema)["plan"].cat.codes.tolist()
    )
