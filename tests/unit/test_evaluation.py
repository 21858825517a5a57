"""Evaluation metrics, calibration, slices, fairness and plots on small hand-checkable arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from mlops import reports
from mlops.errors import InputError
from mlops.evaluation import (
    EvaluationReport,
    SliceSpec,
    calibration_curve,
    compute_metrics,
    evaluate,
    evaluate_slices,
)

pytestmark = pytest.mark.unit

Y = np.array([0, 0, 1, 1, 0, 1, 0, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7, 0.6, 0.05])


def _synthetic(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = 1.0 / (1.0 + np.exp(-(-1.0 + 1.5 * x)))
    return rng.binomial(1, p), p


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_match_scikit_learn() -> None:
    m = compute_metrics(Y, P)
    assert m.auc == pytest.approx(roc_auc_score(Y, P))
    assert m.pr_auc == pytest.approx(average_precision_score(Y, P))
    assert m.log_loss == pytest.approx(log_loss(Y, P))
    assert m.brier == pytest.approx(brier_score_loss(Y, P))


def test_ks_on_hand_cases() -> None:
    # ROC points (fpr, tpr): at 0.8 -> (0, 1/2); at 0.35 -> (1/2, 1): max(TPR - FPR) = 0.5
    assert compute_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).ks == pytest.approx(0.5)
    assert compute_metrics([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]).ks == pytest.approx(1.0)
    assert compute_metrics([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]).ks == pytest.approx(0.0)


def test_ece_on_hand_cases() -> None:
    # two quantile bins: {0.1, 0.1} with default rate 1/2, {0.9, 0.9} with rate 1
    curve = calibration_curve(np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9]), n_bins=2)
    assert curve.ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert [b.count for b in curve.bins] == [2, 2]
    # a constant score of 0.2 where half default: all ties fall in one bin, ECE = |0.5 - 0.2|
    assert compute_metrics([0, 1, 0, 1], [0.2] * 4).ece == pytest.approx(0.3)
    # perfectly calibrated per bin
    assert compute_metrics([0, 1, 0, 1], [0.5] * 4).ece == pytest.approx(0.0)


def test_calibration_curve_matches_scikit_learn_quantile_strategy() -> None:
    y, p = _synthetic()
    curve = evaluate(y, p, threshold=0.3).calibration
    prob_true, prob_pred = sk_calibration_curve(y, p, n_bins=10, strategy="quantile")
    assert curve.n_bins == 10
    np.testing.assert_allclose([b.default_rate for b in curve.bins], prob_true)
    np.testing.assert_allclose([b.mean_score for b in curve.bins], prob_pred)
    assert sum(b.count for b in curve.bins) == len(y)


def test_report_headline_numbers() -> None:
    report = evaluate(Y, P, threshold=0.3)
    assert report.n_rows == 8
    assert report.n_positive == 3
    assert report.label_rate == pytest.approx(3 / 8)
    assert report.approval_rate == pytest.approx(3 / 8)  # 0.1, 0.2, 0.05 are below 0.3
    assert EvaluationReport.model_validate_json(report.model_dump_json()) == report


# --- input errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, np.nan], [0.1, 0.2, 0.3], "missing label"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "missing or infinite"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "only non-defaults"),
        ([1, 1], [0.1, 0.2], "only defaults"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "must be 0/1"),
        ([0, 1], [0.1, 1.2], r"in \[0, 1\]"),
        ([0, 1, 1], [0.1, 0.2], "same rows"),
        ([], [], "empty"),
        (["no", "yes"], [0.1, 0.2], "not numeric"),
    ],
)
def test_bad_input_raises_input_error(y: list[float], p: list[float], match: str) -> None:
    with pytest.raises(InputError, match=match):
        evaluate(y, p, threshold=0.5)


def test_nullable_labels_with_missing_values_are_refused() -> None:
    with pytest.raises(InputError, match="missing label"):
        evaluate(pd.Series([0, 1, None], dtype="Int64"), [0.1, 0.2, 0.3], threshold=0.5)


def test_threshold_out_of_range() -> None:
    with pytest.raises(InputError, match="threshold"):
        evaluate(Y, P, threshold=1.5)


# --- slices ----------------------------------------------------------------------------------


def test_slices_by_values_and_bins_with_too_small_and_one_class_groups() -> None:
    y, p = _synthetic(n=400)
    rng = np.random.default_rng(1)
    region = rng.choice(["north", "south"], size=400).astype(object)
    region[:5] = "east"  # a tiny group
    y[:5] = 0
    age = np.linspace(18, 80, 400)
    frame = pd.DataFrame({"region": region, "age": age})
    specs = [
        SliceSpec(name="region", column="region", values=("north", "south", "east", "west"), min_rows=30),
        SliceSpec(name="age", column="age", bins=(18, 40, 80), min_rows=30),
    ]
    report = evaluate(y, p, threshold=0.3, slices_frame=frame, slices=specs)
    groups = {(r.slice, r.group): r for r in report.slices}
    assert list(groups) == [
        ("region", "north"),
        ("region", "south"),
        ("region", "east"),
        ("region", "west"),
        ("age", "[18, 40)"),
        ("age", "[40, 80]"),
    ]
    north = groups[("region", "north")]
    mask = region == "north"
    assert north.n_rows == int(mask.sum())
    assert north.metrics is not None
    assert north.metrics.auc == pytest.approx(roc_auc_score(y[mask], p[mask]))
    east = groups[("region", "east")]
    assert east.metrics is None and east.reason is not None and "too few rows" in east.reason
    assert groups[("region", "west")].n_rows == 0
    # the last bin is closed, so age 80 is counted
    assert groups[("age", "[18, 40)")].n_rows + groups[("age", "[40, 80]")].n_rows == 400


@pytest.mark.parametrize("dtype", ["str", "category", "object"])
def test_slice_values_read_as_numbers_match_a_text_column_by_text(dtype: str) -> None:
    # `values: [12, 36]` in YAML are numbers; the model spec accepts them for a column whose
    # categories are "12" and "36" (it compares as text), so the evaluation must match them too:
    # compared by value, both groups had 0 rows and the slice floor gated nothing.
    y, p = _synthetic(n=400)
    term = np.where(np.arange(400) % 3 == 0, "12", "36")
    frame = pd.DataFrame({"term": pd.Series(term).astype(dtype)})
    frame.loc[7, "term"] = None
    spec = SliceSpec(name="term", column="term", values=(12, "36"), min_rows=30)
    groups = {r.group: r for r in evaluate(y, p, threshold=0.3, slices_frame=frame, slices=[spec]).slices}
    twelve = (term == "12") & (np.arange(400) != 7)
    assert groups["12"].n_rows == int(twelve.sum())
    assert groups["36"].n_rows == 400 - 1 - int(twelve.sum())
    assert groups["12"].metrics is not None
    assert groups["12"].metrics.auc == pytest.approx(roc_auc_score(y[twelve], p[twelve]))


def test_one_class_slice_reports_reason() -> None:
    y = np.array([0, 1] * 20 + [0] * 40)
    p = np.linspace(0.01, 0.99, 80)
    frame = pd.DataFrame({"kind": ["mixed"] * 40 + ["clean"] * 40})
    spec = SliceSpec(name="kind", column="kind", values=("mixed", "clean"), min_rows=10)
    clean = evaluate(y, p, threshold=0.5, slices_frame=frame, slices=[spec]).slices[1]
    assert clean.metrics is None
    assert clean.reason is not None and "one class" in clean.reason


def test_slice_errors() -> None:
    spec = SliceSpec(name="region", column="region", values=("a",))
    with pytest.raises(InputError, match="no slices_frame"):
        evaluate(Y, P, threshold=0.5, slices=[spec])
    with pytest.raises(InputError, match="not in the evaluation frame"):
        evaluate(Y, P, threshold=0.5, slices_frame=pd.DataFrame({"x": range(8)}), slices=[spec])
    with pytest.raises(InputError, match="rows"):
        evaluate(Y, P, threshold=0.5, slices_frame=pd.DataFrame({"region": ["a"] * 3}), slices=[spec])
    binned = SliceSpec(name="r", column="region", bins=(0, 1))
    with pytest.raises(InputError, match="not numeric"):
        evaluate(
            Y, P, threshold=0.5, slices_frame=pd.DataFrame({"region": list("abcdefgh")}), slices=[binned]
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"values": ("a",), "bins": (0.0, 1.0)},
        {},
        {"values": ()},
        {"bins": (1.0,)},
        {"bins": (0.0, 2.0, 1.0)},
        {"values": ("a", "a")},
    ],
)
def test_slice_spec_rejects_bad_declarations(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SliceSpec.model_validate({"name": "s", "column": "c", **fields})


# --- fairness --------------------------------------------------------------------------------


def test_fairness_gaps_on_constructed_example() -> None:
    # approve = score < 0.5
    # group a: approved 3 of 4 -> 0.75; good payers (y=0) rows 0,1,2 all approved -> 1.0
    # group b: approved 1 of 4 -> 0.25; good payers rows 4,5 -> one approved -> 0.5
    y = [0, 0, 0, 1, 0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.9, 0.4, 0.6, 0.7, 0.8]
    group = ["a", "a", "a", "a", "b", "b", "b", "b"]
    fairness = evaluate(y, p, threshold=0.5, sensitive=group, min_group_rows=1).fairness
    assert fairness is not None
    by_group = {g.group: g for g in fairness.groups}
    assert by_group["a"].approval_rate == pytest.approx(0.75)
    assert by_group["b"].approval_rate == pytest.approx(0.25)
    assert by_group["a"].good_payer_approval_rate == pytest.approx(1.0)
    assert by_group["b"].good_payer_approval_rate == pytest.approx(0.5)
    assert (by_group["a"].n_rows, by_group["a"].n_good, by_group["b"].n_good) == (4, 3, 2)
    assert fairness.approval_rate_gap == pytest.approx(0.5)
    assert fairness.approval_rate_gap_groups == ("a", "b")
    assert fairness.tpr_gap == pytest.approx(0.5)


def test_fairness_by_column_name_with_small_group_and_missing_values() -> None:
    y, p = _synthetic(n=300)
    attr = np.array(["f", "m"] * 150, dtype=object)
    attr[:10] = "x"  # too small to take part in a gap
    attr[10:15] = None
    frame = pd.DataFrame({"gender": attr})
    fairness = evaluate(
        y, p, threshold=0.3, slices_frame=frame, sensitive="gender", min_group_rows=30
    ).fairness
    assert fairness is not None
    assert fairness.attribute == "gender"
    assert fairness.n_missing == 5
    small = next(g for g in fairness.groups if g.group == "x")
    assert small.reason is not None and "left out" in small.reason
    assert fairness.approval_rate_gap_groups is not None
    assert set(fairness.approval_rate_gap_groups) == {"f", "m"}


def test_fairness_gap_is_none_with_a_single_group() -> None:
    fairness = evaluate(Y, P, threshold=0.5, sensitive=["a"] * 8, min_group_rows=1).fairness
    assert fairness is not None
    assert fairness.approval_rate_gap is None and fairness.tpr_gap is None


def test_sensitive_column_must_exist() -> None:
    with pytest.raises(InputError, match="sensitive column"):
        evaluate(Y, P, threshold=0.5, sensitive="gender")


# --- plots -----------------------------------------------------------------------------------


def test_plots_write_non_empty_png_files(tmp_path: Path) -> None:
    y, p = _synthetic(n=200)
    curve = evaluate(y, p, threshold=0.3).calibration
    paths = [
        reports.plot_roc(y, {"challenger": p, "champion": np.sqrt(p)}, tmp_path / "roc.png"),
        reports.plot_pr(y, {"challenger": p}, tmp_path / "pr.png"),
        reports.plot_calibration({"challenger": curve}, tmp_path / "nested" / "calibration.png"),
        reports.plot_feature_importance(
            {"income": 12.0, "age": 3.5, "debt_ratio": 7.25}, tmp_path / "fi.png"
        ),
    ]
    for path in paths:
        assert path.exists()
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 1000


@pytest.mark.parametrize("decimals", [None, 2])  # continuous scores, and heavy ties
def test_rank_curve_metrics_equal_scikit_learn_exactly(decimals: int | None) -> None:
    """One sort serves AUC, PR-AUC and KS; they are scikit-learn's numbers, not approximations."""
    from sklearn.metrics import roc_curve

    y, p = _synthetic(5_000, seed=3)
    if decimals is not None:
        p = np.round(p, decimals)
    m = compute_metrics(y, p)
    fpr, tpr, _ = roc_curve(y, p)
    assert m.auc == roc_auc_score(y, p)
    assert m.pr_auc == average_precision_score(y, p)
    assert m.ks == float(np.max(tpr - fpr))
    assert m.log_loss == pytest.approx(log_loss(y, p), rel=1e-12)
    assert m.brier == pytest.approx(brier_score_loss(y, p), rel=1e-12)


def test_slice_metrics_from_the_shared_sort_equal_metrics_of_the_group_alone() -> None:
    y, p = _synthetic(3_000, seed=4)
    p = np.round(p, 2)
    band = pd.Series(np.where(p > 0.5, "high", np.where(np.arange(p.shape[0]) % 2, "odd", "even")))
    spec = SliceSpec(name="band", column="band", values=("even", "odd", "high"))
    for result in evaluate_slices(y.astype(np.int8), p, pd.DataFrame({"band": band}), [spec]):
        mask = (band == result.group).to_numpy()
        assert result.metrics == compute_metrics(y[mask], p[mask])
