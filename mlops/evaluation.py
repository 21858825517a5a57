"""Evaluate a binary credit-risk model: metrics, calibration, slices and fairness.

Scores are probabilities of default (label 1 = default). The applicant is approved when
``score < threshold``. Everything here is plain numpy / scikit-learn and returns pydantic models
that serialise to JSON for the decision record and the Prefect / MLflow artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Final, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.errors import InputError

MetricName = Literal["auc", "pr_auc", "log_loss", "brier", "ks", "ece"]

METRIC_NAMES: Final[tuple[MetricName, ...]] = ("auc", "pr_auc", "log_loss", "brier", "ks", "ece")
HIGHER_IS_BETTER: Final[frozenset[str]] = frozenset({"auc", "pr_auc", "ks"})
LOWER_IS_BETTER: Final[frozenset[str]] = frozenset({"log_loss", "brier", "ece"})

DEFAULT_ECE_BINS: Final = 10
DEFAULT_MIN_SLICE_ROWS: Final = 30
# A slice group's metrics need this many defaults and this many non-defaults: its AUC is set by
# the rarer class (with 2 defaults it is the rank of two scores, standard error ~0.2), so a floor
# on it failed good models at random (1 run in 6 of simulated 1000-row windows; 0.7 % from 10).
DEFAULT_MIN_SLICE_CLASS_ROWS: Final = 10
DEFAULT_MIN_GROUP_ROWS: Final = 30

SliceValue = str | int | float | bool


class SliceSpec(BaseModel):
    """A declared slice: one column split into groups, by ``values`` or by numeric ``bins``.

    - ``values``: each listed value is one group (rows whose column equals it).
    - ``bins``: ascending edges ``[e0, e1, ..., ek]`` give groups ``[e0, e1), ..., [ek-1, ek]``
      (right-open, the last one closed, as ``numpy.histogram``); use ``.inf`` / ``-.inf`` in YAML
      for open ends. Rows outside every group are not part of the slice.
    A group with fewer than ``min_rows`` rows, or fewer than ``min_class_rows`` defaults or
    non-defaults (one class only included), reports no metrics and says why: a floor is not
    checked on it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    values: tuple[SliceValue, ...] | None = None
    bins: tuple[float, ...] | None = None
    min_rows: int = Field(DEFAULT_MIN_SLICE_ROWS, ge=1)
    min_class_rows: int = Field(DEFAULT_MIN_SLICE_CLASS_ROWS, ge=1)

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
            if any(b <= a for a, b in pairwise(self.bins)):
                raise ValueError(f"slice {self.name!r}: 'bins' edges must be strictly ascending")
        return self


class Metrics(BaseModel):
    """Threshold-free metrics of one set of scores against labels (label 1 = default).

    ``ks`` is max(TPR - FPR) over the ROC curve; ``ece`` is the expected calibration error over
    quantile bins (see :class:`CalibrationCurve`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ks: float
    ece: float

    def value(self, metric: MetricName) -> float:
        """The value of one metric by name."""
        return float(getattr(self, metric))


class CalibrationBin(BaseModel):
    """One non-empty quantile bin of the reliability diagram."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: float
    upper: float
    count: int
    mean_score: float
    default_rate: float


class CalibrationCurve(BaseModel):
    """Reliability-diagram data and the ECE computed from it.

    Binning is scikit-learn's ``calibration_curve(strategy="quantile")``: edges are the
    ``n_bins + 1`` quantiles of the scores, a score goes to ``searchsorted(inner_edges, score)``;
    tied scores can leave bins empty, and empty bins are dropped. ECE is
    ``sum_b count_b / n * |default_rate_b - mean_score_b|``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["quantile"] = "quantile"
    n_bins: int
    bins: tuple[CalibrationBin, ...]
    ece: float


class SliceGroupResult(BaseModel):
    """Metrics of one group of a declared slice, or why there are none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slice: str
    column: str
    group: str
    n_rows: int
    n_positive: int
    metrics: Metrics | None
    reason: str | None = None


class FairnessGroup(BaseModel):
    """Approval rates of one group of the sensitive attribute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str
    n_rows: int
    n_good: int
    approval_rate: float | None
    good_payer_approval_rate: float | None
    reason: str | None = None


class FairnessReport(BaseModel):
    """Largest pairwise gaps between groups of the sensitive attribute.

    approve = ``score < threshold``. ``approval_rate_gap`` (demographic parity) is the largest
    difference of P(approve | group). ``tpr_gap`` (equal opportunity) is the largest difference
    of P(approve | group, label = 0): approval among good payers, the "true positive rate" when
    approval is the positive decision and a good payer deserves it. A group takes part in a gap
    only with at least ``min_group_rows`` rows (for ``tpr_gap``: good payers); a gap needs two
    such groups, otherwise it is None. Rows with a missing attribute are counted, not grouped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attribute: str
    threshold: float
    min_group_rows: int
    n_missing: int
    groups: tuple[FairnessGroup, ...]
    approval_rate_gap: float | None
    approval_rate_gap_groups: tuple[str, str] | None
    tpr_gap: float | None
    tpr_gap_groups: tuple[str, str] | None


class EvaluationReport(BaseModel):
    """Everything :func:`evaluate` found, JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_rows: int
    n_positive: int
    label_rate: float
    threshold: float
    approval_rate: float
    metrics: Metrics
    calibration: CalibrationCurve
    slices: tuple[SliceGroupResult, ...] = ()
    fairness: FairnessReport | None = None


# --- input checks ---------------------------------------------------------------------------


def as_labels(y_true: ArrayLike) -> NDArray[np.int8]:
    """Labels as a 0/1 int array; NaN, other values or an empty input raise InputError."""
    y = _as_float_vector(y_true, "y_true")
    if np.isnan(y).any():
        raise InputError(f"y_true has {int(np.isnan(y).sum())} missing label(s)", hint="drop unlabelled rows")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = sorted(set(np.unique(y[~np.isin(y, (0.0, 1.0))]).tolist()))[:5]
        raise InputError(f"y_true must be 0/1 (1 = default); found {bad}")
    return y.astype(np.int8)


def as_scores(scores: ArrayLike, n_rows: int, name: str = "scores") -> NDArray[np.float64]:
    """Scores as a float array of probabilities in [0, 1], the same length as the labels."""
    p = _as_float_vector(scores, name)
    if p.shape[0] != n_rows:
        raise InputError(f"{name} has {p.shape[0]} rows, y_true has {n_rows}: score the same rows")
    if not np.isfinite(p).all():
        raise InputError(f"{name} has {int((~np.isfinite(p)).sum())} missing or infinite value(s)")
    if p.min() < 0.0 or p.max() > 1.0:
        raise InputError(f"{name} must be probabilities in [0, 1]; range is [{p.min():.4g}, {p.max():.4g}]")
    return p


def _as_float_vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        arr = pd.Series(np.asarray(values, dtype=object).ravel()).to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} is not numeric: {exc}") from exc
    if np.ndim(values) != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {np.shape(values)}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty: nothing to evaluate")
    return arr


def _require_both_classes(y: NDArray[np.int8], what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        only = "defaults" if n_pos else "non-defaults"
        raise InputError(
            f"{what} has only {only} ({y.shape[0]} rows): AUC and KS need both classes",
            hint="evaluate on a window that contains both outcomes",
        )


# --- metrics ---------------------------------------------------------------------------------


def compute_metrics(y_true: ArrayLike, scores: ArrayLike, *, n_bins: int = DEFAULT_ECE_BINS) -> Metrics:
    """AUC, PR-AUC, log loss, Brier, KS and ECE (quantile bins) of scores against 0/1 labels."""
    y = as_labels(y_true)
    p = as_scores(scores, y.shape[0])
    _require_both_classes(y, "y_true")
    return _metrics(y, p, n_bins)


def _metrics(
    y: NDArray[np.int8], p: NDArray[np.float64], n_bins: int, order: NDArray[np.intp] | None = None
) -> Metrics:
    """All metrics from one descending sort of the scores (``order``: reuse a sort of these rows)."""
    curve = RankCurve.of(y, p, order)
    return Metrics(
        auc=curve.roc_auc(),
        pr_auc=curve.average_precision(),
        log_loss=float(per_row_loss("log_loss", y, p).mean()),
        brier=float(per_row_loss("brier", y, p).mean()),
        ks=curve.ks(),
        ece=calibration_curve(y, p, n_bins=n_bins).ece,
    )


def descending(p: NDArray[np.float64]) -> NDArray[np.intp]:
    """Row positions by descending score (scikit-learn's order: a stable ascending sort, reversed)."""
    order: NDArray[np.intp] = np.argsort(p, kind="mergesort")[::-1]
    return order


class RankCurve:
    """Cumulative (false, true) positive counts at each distinct score, highest score first.

    The same arrays as scikit-learn's ``_binary_clf_curve``, so :meth:`roc_auc`,
    :meth:`average_precision` and :meth:`ks` equal ``roc_auc_score``, ``average_precision_score``
    and max(TPR - FPR) over ``roc_curve`` -- from one sort, shared by every metric (and, through
    ``order``, by every slice of the same rows: a subset of a sorted order is sorted).
    """

    def __init__(self, fps: NDArray[np.float64], tps: NDArray[np.float64], thresholds: NDArray[np.float64]):
        self.fps, self.tps, self.thresholds = fps, tps, thresholds

    @classmethod
    def of(
        cls, y: NDArray[np.int8], p: NDArray[np.float64], order: NDArray[np.intp] | None = None
    ) -> RankCurve:
        """``order``: row positions by descending score (:func:`descending`), if already known."""
        if order is None:
            order = descending(p)
        scores = p[order]
        last = np.r_[np.flatnonzero(np.diff(scores)), scores.shape[0] - 1]
        tps = np.cumsum(y[order], dtype=np.float64)[last]
        return cls(1.0 + last - tps, tps, scores[last])

    def roc(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``roc_curve`` (drop_intermediate=True): fpr, tpr, thresholds, starting at (0, 0, inf)."""
        fps, tps, thresholds = self.fps, self.tps, self.thresholds
        if fps.shape[0] > 2:
            keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
            fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
        fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
        return fpr, tpr, np.r_[np.inf, thresholds]

    def roc_auc(self) -> float:
        fpr, tpr, _ = self.roc()
        return float(np.trapezoid(tpr, fpr))

    def ks(self) -> float:
        fpr, tpr, _ = self.roc()
        return float(np.max(tpr - fpr))

    def precision_recall(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``precision_recall_curve``: precision and recall, recall decreasing, ending at (1, 0)."""
        predicted = self.tps + self.fps
        precision = np.divide(self.tps, predicted, out=np.zeros_like(self.tps), where=predicted != 0)
        recall = self.tps / self.tps[-1] if self.tps[-1] > 0 else np.ones_like(self.tps)
        return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]

    def average_precision(self) -> float:
        precision, recall = self.precision_recall()
        return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def per_row_loss(metric: str, y: NDArray[np.int8], p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each row's Brier or log loss (their means are ``brier_score_loss`` / ``log_loss``)."""
    label = y.astype(np.float64)
    if metric == "brier":
        loss: NDArray[np.float64] = np.square(p - label)
        return loss
    eps = np.finfo(np.float64).eps  # scikit-learn's log_loss clipping
    q = np.clip(p, eps, 1.0 - eps)
    loss = -(label * np.log(q) + (1.0 - label) * np.log1p(-q))
    return loss


def ks_statistic(y: NDArray[np.int8], p: NDArray[np.float64]) -> float:
    """Kolmogorov-Smirnov separation: max(TPR - FPR) over the ROC curve's thresholds."""
    return RankCurve.of(y, p).ks()


def calibration_curve(y: NDArray[np.int8], p: NDArray[np.float64], *, n_bins: int) -> CalibrationCurve:
    """Quantile-binned reliability data and the ECE (binning as scikit-learn's quantile strategy)."""
    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    edges = np.percentile(p, np.linspace(0.0, 100.0, n_bins + 1))
    ids = np.searchsorted(edges[1:-1], p)
    count = np.bincount(ids, minlength=n_bins)
    score_sum = np.bincount(ids, weights=p, minlength=n_bins)
    label_sum = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    bins: list[CalibrationBin] = []
    ece = 0.0
    for b in np.flatnonzero(count):
        mean_score = float(score_sum[b] / count[b])
        default_rate = float(label_sum[b] / count[b])
        ece += float(count[b]) / p.shape[0] * abs(default_rate - mean_score)
        bins.append(
            CalibrationBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=int(count[b]),
                mean_score=mean_score,
                default_rate=default_rate,
            )
        )
    return CalibrationCurve(n_bins=n_bins, bins=tuple(bins), ece=float(ece))


# --- slices ----------------------------------------------------------------------------------


def _text_equals(column: pd.Series, text: str) -> NDArray[np.bool_]:
    """Rows whose value, as text, is ``text`` (a missing value never is); a ``category``
    column is compared through its categories, a string column directly."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        hits = np.flatnonzero(column.cat.categories.astype(str) == text)
        return np.isin(column.cat.codes.to_numpy(), hits)
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.map(str, na_action="ignore")
    return np.asarray(column.eq(text).fillna(False).to_numpy(dtype=bool), dtype=bool)


def _slice_masks(spec: SliceSpec, column: pd.Series) -> list[tuple[str, NDArray[np.bool_]]]:
    if spec.values is not None:
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            return [(str(v), column.isin([v]).to_numpy(dtype=bool)) for v in spec.values]
        # Text and category columns: by text, as the model spec checks the values against
        # the contract's categories (YAML reads `values: [12, 36]` as numbers; the column holds
        # "12" and "36"). Compared by value, such a group matched no row and its floor gated nothing.
        return [(str(v), _text_equals(column, str(v))) for v in spec.values]
    assert spec.bins is not None
    try:
        x = pd.to_numeric(column).to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"slice {spec.name!r}: column {spec.column!r} is not numeric, cannot bin it"
        ) from exc
    edges = spec.bins
    groups: list[tuple[str, NDArray[np.bool_]]] = []
    for i, (lo, hi) in enumerate(pairwise(edges)):
        last = i == len(edges) - 2
        upper = x <= hi if last else x < hi
        groups.append((f"[{lo:g}, {hi:g}{']' if last else ')'}", (x >= lo) & upper))
    return groups


def _slice_group(
    spec: SliceSpec,
    group: str,
    y: NDArray[np.int8],
    p: NDArray[np.float64],
    n_bins: int,
    order: NDArray[np.intp] | None = None,
) -> SliceGroupResult:
    n, n_pos = int(y.shape[0]), int(y.sum())
    reason: str | None = None
    if n < spec.min_rows:
        reason = f"too few rows: {n} < min_rows {spec.min_rows}"
    elif n_pos in (0, n):
        reason = f"one class only ({'all defaults' if n_pos else 'no defaults'} in {n} rows)"
    elif min(n_pos, n - n_pos) < spec.min_class_rows:
        rarer, count = ("defaults", n_pos) if n_pos < n - n_pos else ("non-defaults", n - n_pos)
        reason = f"too few {rarer}: {count} in {n} rows < min_class_rows {spec.min_class_rows}"
    metrics = None if reason else _metrics(y, p, n_bins, order)
    return SliceGroupResult(
        slice=spec.name,
        column=spec.column,
        group=group,
        n_rows=n,
        n_positive=n_pos,
        metrics=metrics,
        reason=reason,
    )


def evaluate_slices(
    y: NDArray[np.int8],
    p: NDArray[np.float64],
    frame: pd.DataFrame,
    slices: Sequence[SliceSpec],
    *,
    n_bins: int = DEFAULT_ECE_BINS,
    order: NDArray[np.intp] | None = None,
) -> tuple[SliceGroupResult, ...]:
    """Metrics per group of every declared slice (rows of ``frame`` align with ``y`` and ``p``).

    The scores are sorted once; each group takes its rows in that order (no sort per group)."""
    results: list[SliceGroupResult] = []
    if order is None:
        order = descending(p)
    for spec in slices:
        if spec.column not in frame.columns:
            raise InputError(f"slice {spec.name!r}: column {spec.column!r} is not in the evaluation frame")
        for group, mask in _slice_masks(spec, frame[spec.column]):
            rows = np.flatnonzero(mask)
            rank = np.full(p.shape[0], -1, dtype=np.intp)
            rank[rows] = np.arange(rows.shape[0])
            in_group = rank[order]
            results.append(_slice_group(spec, group, y[rows], p[rows], n_bins, in_group[in_group >= 0]))
    return tuple(results)


# --- fairness --------------------------------------------------------------------------------


def _rate(mask: NDArray[np.bool_]) -> float | None:
    return float(mask.mean()) if mask.shape[0] else None


def _largest_gap(rates: dict[str, float]) -> tuple[float | None, tuple[str, str] | None]:
    if len(rates) < 2:
        return None, None
    high = max(rates, key=lambda g: rates[g])
    low = min(rates, key=lambda g: rates[g])
    return rates[high] - rates[low], (high, low)


def fairness_report(
    y: NDArray[np.int8],
    p: NDArray[np.float64],
    attribute: pd.Series,
    *,
    threshold: float,
    name: str,
    min_group_rows: int = DEFAULT_MIN_GROUP_ROWS,
) -> FairnessReport:
    """Approval-rate and equal-opportunity gaps between the groups of a sensitive attribute."""
    approve = p < threshold
    present = attribute.notna().to_numpy(dtype=bool)
    labels = attribute.astype(object).map(str).to_numpy(dtype=object)
    groups: list[FairnessGroup] = []
    approval: dict[str, float] = {}
    tpr: dict[str, float] = {}
    for value in sorted(set(labels[present].tolist())):
        mask = present & (labels == value)
        good = mask & (y == 0)
        n, n_good = int(mask.sum()), int(good.sum())
        group = FairnessGroup(
            group=value,
            n_rows=n,
            n_good=n_good,
            approval_rate=_rate(approve[mask]),
            good_payer_approval_rate=_rate(approve[good]),
            reason=_fairness_reason(n, n_good, min_group_rows),
        )
        groups.append(group)
        if n >= min_group_rows and group.approval_rate is not None:
            approval[value] = group.approval_rate
        if n_good >= min_group_rows and group.good_payer_approval_rate is not None:
            tpr[value] = group.good_payer_approval_rate
    approval_gap, approval_pair = _largest_gap(approval)
    tpr_gap, tpr_pair = _largest_gap(tpr)
    return FairnessReport(
        attribute=name,
        threshold=threshold,
        min_group_rows=min_group_rows,
        n_missing=int((~present).sum()),
        groups=tuple(groups),
        approval_rate_gap=approval_gap,
        approval_rate_gap_groups=approval_pair,
        tpr_gap=tpr_gap,
        tpr_gap_groups=tpr_pair,
    )


def _fairness_reason(n: int, n_good: int, min_rows: int) -> str | None:
    if n < min_rows:
        return f"left out of both gaps: {n} rows < min_group_rows {min_rows}"
    if n_good < min_rows:
        return f"left out of the tpr gap: {n_good} good payers < min_group_rows {min_rows}"
    return None


# --- the report ------------------------------------------------------------------------------


def evaluate(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    threshold: float,
    slices_frame: pd.DataFrame | None = None,
    slices: Sequence[SliceSpec] | None = None,
    sensitive: str | ArrayLike | None = None,
    n_bins: int = DEFAULT_ECE_BINS,
    min_group_rows: int = DEFAULT_MIN_GROUP_ROWS,
) -> EvaluationReport:
    """Evaluate probability-of-default ``scores`` against 0/1 ``y_true``.

    ``slices_frame`` holds the slice (and, by name, sensitive) columns, row-aligned with the
    labels. ``sensitive`` is a column name of ``slices_frame`` or a row-aligned array. ECE uses
    ``n_bins`` quantile bins (default 10). Raises InputError on NaNs, out-of-range scores,
    mismatched lengths, missing columns, or labels with one class only.
    """
    if not (np.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    y = as_labels(y_true)
    p = as_scores(scores, y.shape[0])
    _require_both_classes(y, "y_true")
    frame = _aligned_frame(slices_frame, y.shape[0])
    order = descending(p)
    slice_results: tuple[SliceGroupResult, ...] = ()
    if slices:
        if frame is None:
            raise InputError("slices were declared but no slices_frame was given")
        slice_results = evaluate_slices(y, p, frame, slices, n_bins=n_bins, order=order)
    fairness = None
    if sensitive is not None:
        name, attribute = _sensitive_column(sensitive, frame, y.shape[0])
        fairness = fairness_report(
            y, p, attribute, threshold=threshold, name=name, min_group_rows=min_group_rows
        )
    n_pos = int(y.sum())
    return EvaluationReport(
        n_rows=int(y.shape[0]),
        n_positive=n_pos,
        label_rate=n_pos / y.shape[0],
        threshold=float(threshold),
        approval_rate=float((p < threshold).mean()),
        metrics=_metrics(y, p, n_bins, order),
        calibration=calibration_curve(y, p, n_bins=n_bins),
        slices=slice_results,
        fairness=fairness,
    )


def _aligned_frame(frame: pd.DataFrame | None, n_rows: int) -> pd.DataFrame | None:
    if frame is None:
        return None
    if len(frame) != n_rows:
        raise InputError(f"slices_frame has {len(frame)} rows, y_true has {n_rows}: pass the same rows")
    return frame.reset_index(drop=True)


def _sensitive_column(
    sensitive: str | ArrayLike, frame: pd.DataFrame | None, n_rows: int
) -> tuple[str, pd.Series]:
    if isinstance(sensitive, str):
        if frame is None or sensitive not in frame.columns:
            raise InputError(f"sensitive column {sensitive!r} is not in the slices_frame")
        return sensitive, frame[sensitive]
    values = pd.Series(np.asarray(sensitive, dtype=object).ravel())
    if len(values) != n_rows:
        raise InputError(f"sensitive has {len(values)} rows, y_true has {n_rows}")
    return "sensitive", values
