"""Gates a candidate model must pass before it moves, and the decision record they write.

Gates fail closed: every check is evaluated and recorded, a metric that could not be computed
counts as failed, and :meth:`DecisionRecord.raise_if_failed` lists every failure in one error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.evaluation import MetricName


class Bound(BaseModel):
    """A value bound on one metric: ``{min: 0.70}``, ``{max: 0.15}`` or both (inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("a bound needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"bound min {self.min} is above max {self.max}")
        return self


class NonInferioritySpec(BaseModel):
    """Candidate vs champion on the same rows, by paired bootstrap of (candidate - champion).

    Passes iff the CI bound on the unfavourable side stays within ``margin``: for a
    higher-is-better metric the lower bound > -margin; for a lower-is-better one the upper
    bound < +margin. The CI is two-sided at ``confidence`` (percentile bootstrap).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: MetricName = "auc"
    margin: float = Field(0.005, ge=0.0)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    n_bootstrap: int = Field(1000, ge=20, le=100_000)
    seed: int = 0


class FairnessSpec(BaseModel):
    """Largest allowed pairwise gaps between groups of the sensitive attribute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_approval_rate_gap: float | None = Field(None, ge=0.0, le=1.0)
    max_tpr_gap: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _some_limit(self) -> FairnessSpec:
        if self.max_approval_rate_gap is None and self.max_tpr_gap is None:
            raise ValueError("fairness needs 'max_approval_rate_gap', 'max_tpr_gap' or both")
        return self


class GateSpec(BaseModel):
    """The ``gates:`` block of a model spec.

    Non-inferiority is always on (defaults apply when the block is omitted): a candidate is never
    promoted without being compared with the champion, except through the recorded bootstrap.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    floors: dict[MetricName, Bound] = Field(default_factory=dict)
    non_inferiority: NonInferioritySpec = Field(default_factory=NonInferioritySpec)
    slice_floors: dict[MetricName, Bound] = Field(default_factory=dict)
    fairness: FairnessSpec | None = None
