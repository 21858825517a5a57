"""Evaluation plots written to PNG files (for Prefect and MLflow artifacts).

Each function draws on its own ``Figure`` attached to an Agg canvas, chosen inside the function:
importing this module does not touch matplotlib's global backend, and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from mlops.evaluation import CalibrationCurve, as_labels, as_scores

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI: Final = 80
FIGSIZE: Final = (5.0, 4.0)


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
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
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (defaults caught)", title="ROC")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_pr(y_true: ArrayLike, scores: Mapping[str, ArrayLike], path: str | Path) -> Path:
    """Precision-recall curves (default = positive class), average precision in the legend."""
    y = as_labels(y_true)
    fig, ax = _new_figure()
    for name, p in _labelled_scores(y, scores):
        precision, recall, _ = precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision_score(y, p):.3f})")
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
    return _save(fig, path)
