"""The reference profile: everything drift checks need from the reference, built once.

A :class:`ReferenceProfile` holds, per numeric feature, percentile bin edges with the
reference counts and a fine quantile function; per categorical feature, category counts with
an ``__other__`` and a ``__missing__`` bucket; missing rates; the same for the model score;
and the reference performance. It is JSON (``to_json`` / ``from_json``), so a monitor compares
many current windows without re-reading the reference data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops import drift_stats as st
from mlops.drift_performance import ReferencePerformance, reference_performance
from mlops.drift_policy import FINE_BINS
from mlops.errors import InputError

#: Bucket of categories not kept in the profile (rare in the reference, or unseen there).
OTHER: str = "__other__"
#: Bucket of missing values of a categorical feature.
MISSING: str = "__missing__"

PROFILE_SCHEMA_VERSION = 1


class NumericProfile(BaseModel):
    """One numeric column of the reference (non-finite values count as missing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["numeric"] = "numeric"
    n_rows: int
    n_missing: int
    mean: float
    std: float
    iqr: float
    edges: list[float] = Field(description="Percentile cut points 1..99 (inverted CDF).")
    counts: list[int] = Field(description="Reference rows in the 100 bins the edges make.")
    quantiles: list[float] = Field(description="Quantile function on a mid-point grid.")

    @property
    def n_valid(self) -> int:
        return self.n_rows - self.n_missing

    def scale(self, how: Literal["std", "iqr"]) -> float:
        """Spread dividing Wasserstein: std or IQR / 1.349, the other if zero, else 1."""
        robust = self.iqr / 1.349
        first, second = (self.std, robust) if how == "std" else (robust, self.std)
        return first if first > 0 else (second if second > 0 else 1.0)


class CategoricalProfile(BaseModel):
    """One categorical column of the reference: kept categories, other, missing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["categorical"] = "categorical"
    n_rows: int
    n_missing: int
    categories: list[str]
    counts: list[int]
    other_count: int = Field(description="Reference rows of categories beyond the kept ones.")

    @property
    def n_valid(self) -> int:
        return self.n_rows - self.n_missing

    def bucket_counts(self) -> st.IntArray:
        """Reference counts over [categories..., __other__, __missing__]."""
        return np.array([*self.counts, self.other_count, self.n_missing], dtype=np.int64)


ColumnProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    """Everything a drift check needs from the reference data; JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = PROFILE_SCHEMA_VERSION
    source: str = Field("", description="Where the reference came from (snapshot id, path).")
    n_rows: int
    features: dict[str, ColumnProfile]
    score_column: str | None = None
    score: NumericProfile | None = None
    label_column: str | None = None
    performance: ReferencePerformance | None = None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceProfile:
        return cls.model_validate_json(text)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        return cls.from_json(path.read_bytes())


def sorted_finite(series: pd.Series) -> tuple[st.FloatArray, int]:
    """A column's finite values as sorted float64, and how many were missing or non-finite."""
    try:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"numeric feature {series.name!r} holds non-numeric values ({exc})",
            hint="validate the batch against its contract first, or profile it as categorical",
        ) from exc
    finite = np.isfinite(values)
    kept = values if finite.all() else values[finite]
    return np.sort(kept), int(values.size - kept.size)


def sorted_quantiles(sorted_values: st.FloatArray, levels: st.FloatArray) -> st.FloatArray:
    """Inverted-CDF quantiles of an already sorted array (no second sort)."""
    n = sorted_values.size
    idx = np.ceil(levels * n).astype(np.int64) - 1
    return sorted_values[np.clip(idx, 0, n - 1)]


def percentile_edges(sorted_values: st.FloatArray) -> st.FloatArray:
    """The 99 interior percentile cut points that make :data:`FINE_BINS` bins."""
    return sorted_quantiles(sorted_values, np.arange(1, FINE_BINS) / FINE_BINS)


def numeric_profile(series: pd.Series, n_quantiles: int) -> NumericProfile:
    """Profile one numeric reference column."""
    values, n_missing = sorted_finite(series)
    if values.size == 0:
        return NumericProfile(
            n_rows=int(series.size),
            n_missing=n_missing,
            mean=0.0,
            std=0.0,
            iqr=0.0,
            edges=[],
            counts=[],
            quantiles=[],
        )
    edges = percentile_edges(values)
    q25, q75 = sorted_quantiles(values, np.array([0.25, 0.75]))
    return NumericProfile(
        n_rows=int(series.size),
        n_missing=n_missing,
        mean=float(values.mean()),
        std=float(values.std()),
        iqr=float(q75 - q25),
        edges=edges.tolist(),
        counts=st.fine_bin_counts(values, edges).tolist(),
        quantiles=st.quantile_function(values, n_quantiles).tolist(),
    )


def raw_category_counts(series: pd.Series) -> pd.Series:
    """Counts of a column's non-missing values, indexed by their string form."""
    counts = series.value_counts(dropna=True, sort=False)
    keys = counts.index.astype(str)
    return pd.Series(counts.to_numpy(dtype=np.int64), index=keys).groupby(level=0).sum()


def categorical_profile(series: pd.Series, max_categories: int) -> CategoricalProfile:
    """Profile one categorical column; categories beyond the most frequent go to other."""
    counts = raw_category_counts(series)
    ranked = sorted(zip(counts.index, counts.tolist(), strict=True), key=lambda kv: (-kv[1], kv[0]))
    kept = ranked[:max_categories]
    n_missing = int(series.isna().sum())
    return CategoricalProfile(
        n_rows=int(series.size),
        n_missing=n_missing,
        categories=[k for k, _ in kept],
        counts=[c for _, c in kept],
        other_count=sum(c for _, c in ranked[max_categories:]),
    )


def current_category_counts(series: pd.Series, profile: CategoricalProfile) -> st.IntArray:
    """A current column's counts over the profile's [categories..., other, missing]."""
    counts = raw_category_counts(series)
    k = len(profile.categories)
    position = pd.Index(profile.categories).get_indexer(counts.index)
    position = np.where(position < 0, k, position)  # unseen or rare: the other bucket
    out = np.bincount(position, weights=counts.to_numpy(), minlength=k + 2).astype(np.int64)
    out[-1] = int(series.isna().sum())
    return out


def is_categorical(series: pd.Series) -> bool:
    """Numeric (not boolean) dtypes are numeric; strings, categories, booleans categorical."""
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def column_profile(
    series: pd.Series, *, categorical: bool, n_quantiles: int, max_categories: int
) -> NumericProfile | CategoricalProfile:
    if categorical:
        return categorical_profile(series, max_categories)
    return numeric_profile(series, n_quantiles)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise one :class:`InputError` naming every missing column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} is missing columns {missing}",
            hint=f"columns present: {list(frame.columns)[:30]}",
        )


def build_profile(
    reference: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    categorical: Iterable[str] = (),
    score_column: str | None = None,
    label_column: str | None = None,
    source: str = "",
    n_quantiles: int = 1000,
    max_categories: int = 100,
    calibration_bins: int = 10,
) -> ReferenceProfile:
    """Profile a reference frame once; compare current windows with :func:`compare`.

    ``features`` defaults to every column but the score and the label; a column is treated as
    categorical if listed in ``categorical`` or if its dtype is not numeric (or is boolean).
    With ``label_column`` and ``score_column`` the reference AUC and calibration error are
    kept as the baseline of performance drift (the calibration error over ``calibration_bins``
    bins: pass the policy's, which the windows are binned with).
    """
    special = {c for c in (score_column, label_column) if c}
    names = (
        list(features) if features is not None else [str(c) for c in reference.columns if c not in special]
    )
    require_columns(reference, [*names, *special], "the reference frame")
    forced = set(categorical)
    profiles = {
        name: column_profile(
            reference[name],
            categorical=name in forced or is_categorical(reference[name]),
            n_quantiles=n_quantiles,
            max_categories=max_categories,
        )
        for name in names
    }
    score = numeric_profile(reference[score_column], n_quantiles) if score_column else None
    performance = (
        reference_performance(reference, score_column, label_column, calibration_bins)
        if score_column
        else None
    )
    return ReferenceProfile(
        source=source,
        n_rows=len(reference),
        features=profiles,
        score_column=score_column,
        score=score,
        label_column=label_column,
        performance=performance,
    )
