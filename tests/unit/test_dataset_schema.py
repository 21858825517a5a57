"""The training dataset logged to MLflow keeps the schema MLflow would infer from every row."""

from __future__ import annotations

import numpy as np
import pytest

from mlops.contracts import load_contract
from mlops.registry import SCHEMA_SAMPLE_ROWS, _set_schema_from_sample, frame_digest
from mlops.settings import PROJECT_ROOT
from mlops.validation import finalise_valid, type_batch
from tests.helpers import clean_frame

pytestmark = pytest.mark.unit


def test_sampled_schema_equals_full_inference() -> None:
    import mlflow
    from mlflow.types.utils import _infer_schema

    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    raw = clean_frame(contract, SCHEMA_SAMPLE_ROWS + 500)
    raw.loc[SCHEMA_SAMPLE_ROWS + 10 :, "credit_score"] = np.nan  # missing only past the sample
    typed, _ = type_batch(raw, contract)
    frame = finalise_valid(typed, contract)
    data = mlflow.data.pandas_dataset.from_pandas(frame, name="t")
    _set_schema_from_sample(data, frame)
    assert data.schema == _infer_schema(frame)
    assert data.profile == {"num_rows": len(frame), "num_elements": int(frame.size)}


def test_frame_digest_follows_content() -> None:
    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    frame = clean_frame(contract, 300)
    assert frame_digest(frame) == frame_digest(frame.copy())
    changed = frame.copy()
    changed.loc[150, "defaulted"] = 1 - changed.loc[150, "defaulted"]
    assert frame_digest(changed) != frame_digest(frame)
    assert frame_digest(frame.iloc[::-1]) != frame_digest(frame)  # row order is content
    assert frame_digest(frame.rename(columns={"defaulted": "y"})) != frame_digest(frame)


def test_frame_digest_tells_apart_what_raw_buffers_could_blur() -> None:
    import pandas as pd

    def digest(values: object, dtype: str | None = None) -> str:
        return frame_digest(pd.DataFrame({"a": pd.array(values, dtype=dtype)}))  # type: ignore[call-overload]

    assert digest(["x", None, ""]) != digest(["x", "", None])  # null is not the empty string
    assert digest(["ab", "c"]) != digest(["a", "bc"])  # value boundaries are content
    assert digest([1, None], "Int64") != digest([1, 0], "Int64")  # a masked null is not its fill
    assert digest(["u", "v"], "category") != digest(["v", "u"], "category")
    assert digest([1.0, 2.0]) != digest([1, 2])  # the dtype is content


def test_frame_digest_ignores_how_a_column_is_chunked() -> None:
    import pandas as pd

    whole = pd.DataFrame({"t": ["ab", "c", "z"], "n": [1.5, 2.5, 3.5]})
    pieces = pd.concat(
        [pd.DataFrame({"t": ["q", "ab", "c"], "n": [0.0, 1.5, 2.5]}).iloc[1:], whole.iloc[2:]],
        ignore_index=True,
    )
    assert frame_digest(pieces) == frame_digest(whole)
