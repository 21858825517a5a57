"""Evaluate a binary credit-risk model: metrics, calibration, slices and fairness.

Scores are probabilities of default (label 1 = default). The applicant is approved when
``score < threshold``. Everything here is plain numpy / scikit-learn and returns pydantic models
that serialise to JSON for the decision record and the Prefect / MLflow artifacts.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MetricName = Literal["auc", "pr_auc", "log_loss", "brier", "ks", "ece"]

METRIC_NAMES: Final[tuple[MetricName, ...]] = ("auc", "pr_auc", "log_loss", "brier", "ks", "ece")
HIGHER_IS_BETTER: Final[frozenset[str]] = frozenset({"auc", "pr_auc", "ks"})
LOWER_IS_BETTER: Final[frozenset[str]] = frozenset({"log_loss", "brier", "ece"})

DEFAULT_ECE_BINS: Final = 10
DEFAULT_MIN_SLICE_ROWS: Final = 30
DEFAULT_MIN_GROUP_ROWS: Final = 30

SliceValue = str | int | float | bool


class SliceSpec(BaseModel):
    """A declared slice: one column split into groups, by ``values`` or by numeric ``bins``.

    - ``values``: each listed value is one group (rows whose column equals it).
    - ``bins``: ascending edges ``[e0, e1, ..., ek]`` give groups ``[e0, e1), ..., [ek-1, ek]``
      (right-open, the last one closed, as ``numpy.histogram``); use ``.inf`` / ``-.inf`` in YAML
      for open ends. Rows outside every group are not part of the slice.
    A group with fewer than ``min_rows`` rows, or with one class only, reports no metrics and
    says why.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    values: tuple[SliceValue, ...] | None = None
    bins: tuple[float, ...] | None = None
    min_rows: int = Field(DEFAULT_MIN_SLICE_ROWS, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> SliceSpec:
        if (self.values is None) == (self.bins is None):
            raise ValueError(f"slice {self.name!r}: give exactly one of 'values' or 'bins'")
        if self.values is not None and len(self.values) == 0:
            raise ValueError(f"slice {self.name!r}: 'values' is empty")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError(f"slice {self.name!r}: 'values' lists a value twice")
        if self.bins is not None:
            if len(self.bins) < 2:
                raise ValueError(f"slice {self.name!r}: 'bins' needs at least two edges")
            if any(b <= a for a, b in zip(self.bins, self.bins[1:], strict=False)):
                raise ValueError(f"slice {self.name!r}: 'bins' edges must be strictly ascending")
        return self
