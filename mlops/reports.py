"""Evaluation plots written to PNG files (for Prefect and MLflow artifacts).

Each function draws on its own ``Figure`` attached to an Agg canvas, chosen inside the function:
importing this module does not touch matplotlib's global backend, and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlops.evaluation import CalibrationCurve, RankCurve, as_labels, as_scores

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI: Final = 80
FIGSIZE: Final = (5.0, 4.0)
# A curve is drawn through at most this many of its points (a 400-pixel-wide plot shows no
# more); the AUC / AP in the legend are computed on every point.
MAX_CURVE_POINTS: Final = 2_000


def warm_up() -> None:
    """Import matplotlib's Agg canvas ahead of the first plot (about 0.7 s; background-safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _thin(*curve: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Every point of a short curve; evenly spaced points (first and last kept) of a long one."""
    n = curve[0].shape[0]
    if n <= MAX_CURVE_POINTS:
        return curve
    keep = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).round().astype(np.intp))
    return tuple(c[keep] for c in curve)


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins fit the axis labels at this size; tight_layout measured every text (~0.2 s a plot).
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.16, right=0.96, top=0.92, bottom=0.13)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _labelled_scores(y_true: ArrayLike, scores: Mapping[str, ArrayLike]) -> list[tuple[str, np.ndarray]]:
    y = as_labels(y_true)
    return [(name, as_scores(s, y.shape[0], name)) for name, s in scores.items()]


def plot_roc(y_true: ArrayLike, scores: Mapping[str, ArrayLike], path: str | Path) -> Path:
    """ROC curves, one per model (e.g. ``{"challenger": ..., "champion": ...}``), AUC in the legend."""
    y = as_labels(y_true)
    fig, ax = _new_figure()
    for name, p in _labelled_scores(y, scores):
        curve = RankCurve.of(y, p)
        fpr, tpr, _ = curve.roc()
        ax.plot(*_thin(fpr, tpr), label=f"{name} (AUC {curve.roc_auc():.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (defaults caught)", title="ROC")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_pr(y_true: ArrayLike, scores: Mapping[str, ArrayLike], path: str | Path) -> Path:
    """Precision-recall curves (default = positive class), average precision in the legend."""
    y = as_labels(y_true)
    fig, ax = _new_figure()
    for name, p in _labelled_scores(y, scores):
        curve = RankCurve.of(y, p)
        precision, recall = curve.precision_recall()
        ax.step(*_thin(recall, precision), where="post", label=f"{name} (AP {curve.average_precision():.3f})")
    ax.axhline(float(y.mean()), linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def plot_calibration(curves: Mapping[str, CalibrationCurve], path: str | Path) -> Path:
    """Reliability diagram: mean score vs observed default rate per quantile bin, ECE in the legend."""
    fig, ax = _new_figure()
    for name, curve in curves.items():
        x = [b.mean_score for b in curve.bins]
        y = [b.default_rate for b in curve.bins]
        ax.plot(x, y, marker="o", markersize=3, label=f"{name} (ECE {curve.ece:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(
        xlabel="mean predicted probability of default", ylabel="observed default rate", title="Calibration"
    )
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_feature_importance(importance: Mapping[str, float], path: str | Path, *, top_n: int = 20) -> Path:
    """Horizontal bars of the ``top_n`` features by gain, largest on top."""
    top = sorted(importance.items(), key=lambda item: item[1], reverse=True)[:top_n]
    fig, ax = _new_figure((5.0, max(2.0, 0.25 * len(top) + 1.0)))
    names = [name for name, _ in reversed(top)]
    gains = [float(value) for _, value in reversed(top)]
    ax.barh(names, gains)
    ax.set(xlabel="gain", title="Feature importance")
    ax.tick_params(axis="y", labelsize="small")
    fig.tight_layout()  # feature names of any length on the y axis
    return _save(fig, path)
