"""Drift statistics, reports and the alarm rule (mlops.drift*)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance
from scipy.stats.contingency import association
from sklearn.metrics import roc_auc_score

from mlops import drift_stats as st
from mlops.drift import (
    OTHER,
    AlarmRule,
    AlarmState,
    CategoricalProfile,
    DriftPolicy,
    DriftReport,
    ReferenceProfile,
    Threshold,
    WindowSummary,
    build_profile,
    compare,
    decide_alarm,
)
from mlops.drift_performance import Interval, drop_verdict
from mlops.drift_report import unjudged_note
from mlops.errors import InputError

pytestmark = pytest.mark.unit


def _frame(rng: np.random.Generator, n: int, n_numeric: int = 5, shift: float = 0.0) -> pd.DataFrame:
    cols: dict[str, object] = {f"x{i}": rng.normal(shift, 1.0, n) for i in range(n_numeric)}
    cols["grade"] = rng.choice(np.array(["A", "B", "C", "D"]), n, p=[0.4, 0.3, 0.2, 0.1])
    return pd.DataFrame(cols)


# --- statistics against hand-computed or scipy values -------------------------------------


def test_psi_hand_computed() -> None:
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert st.psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(expected)
    assert st.psi(np.array([10, 30, 60]), np.array([1, 3, 6])) == pytest.approx(0.0)


def test_psi_skips_bins_empty_on_both_sides_and_floors_one_sided() -> None:
    assert st.psi(np.array([0, 5, 5]), np.array([0, 5, 5])) == 0.0
    one_sided = st.psi(np.array([0, 10]), np.array([5, 5]))
    assert one_sided == pytest.approx(
        (0.5 - st.PSI_EPS) * math.log(0.5 / st.PSI_EPS) + (0.5 - 1.0) * math.log(0.5)
    )


@pytest.mark.parametrize(("p", "q"), [([1, 1, 2], [2, 1, 1]), ([5, 0, 5], [0, 5, 5]), ([3, 3], [3, 3])])
def test_js_distance_matches_scipy(p: list[int], q: list[int]) -> None:
    expected = jensenshannon(np.array(p, float), np.array(q, float), base=2)
    assert st.js_distance(np.array(p), np.array(q)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("p", "q"), [([10, 20, 30], [30, 20, 10]), ([5, 5, 0], [2, 3, 5])])
def test_cramers_v_matches_scipy_on_equal_samples(p: list[int], q: list[int]) -> None:
    expected = association(np.array([p, q]), method="cramer")
    assert st.cramers_v(np.array(p), np.array(q)) == pytest.approx(expected)


def test_cramers_v_does_not_shrink_with_unbalanced_samples() -> None:
    small, large = np.array([30, 20, 10]), np.array([1000, 2000, 3000]) * 100
    assert st.cramers_v(large, small) == pytest.approx(st.cramers_v(large / 100_000, small / 60))


def test_cohens_h() -> None:
    assert st.cohens_h(0.3, 0.3) == 0.0
    assert st.cohens_h(0.0, 1.0) == pytest.approx(math.pi)
    assert st.cohens_h(0.1, 0.35) == pytest.approx(
        2 * math.asin(math.sqrt(0.35)) - 2 * math.asin(math.sqrt(0.1))
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [([0, 1, 2, 3], [10, 11, 12, 13]), ([0, 1, 2, 3], [0, 1, 2, 4]), ([1, 2, 3, 4, 5], [2, 2, 2, 2, 9])],
)
def test_wasserstein_exact_on_tiny_arrays(a: list[float], b: list[float]) -> None:
    qa = st.quantile_function(np.sort(np.array(a, float)), 1000)
    qb = st.quantile_function(np.sort(np.array(b, float)), 1000)
    assert st.wasserstein_from_quantiles(qa, qb) == pytest.approx(wasserstein_distance(a, b))


def test_wasserstein_close_to_scipy_on_unequal_samples() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(0, 1, 3001), rng.lognormal(0.2, 1, 7919)
    got = st.wasserstein_from_quantiles(
        st.quantile_function(np.sort(a), 1000), st.quantile_function(np.sort(b), 1000)
    )
    assert got == pytest.approx(wasserstein_distance(a, b), rel=0.02)


def test_fine_bin_counts_on_sorted_values() -> None:
    values = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 5.0])
    edges = np.array([0.0, 2.0, 2.0])  # repeated edge -> an empty bin
    assert st.fine_bin_counts(values, edges).tolist() == [0, 3, 0, 3]
    assert st.merge_bins(np.array([1, 2, 3, 4]), 2).tolist() == [3, 7]


def test_auc_delong_hand_computed() -> None:
    auc, var = st.auc_delong(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1]))
    assert auc == 0.75
    assert var == pytest.approx(0.125)  # var([1, .5]) / 2 + var([.5, 1]) / 2


def test_auc_delong_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1).astype(np.float64)
    auc, var = st.auc_delong(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert 0 < var < 0.01
    with pytest.raises(ValueError, match="positive and one negative"):
        st.auc_delong(np.zeros(3), np.ones(3))


def test_cbpe_estimate_close_to_realised_auc_on_calibrated_scores() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(2, 5, 50_000)
    y = (rng.random(p.size) < p).astype(int)
    assert st.expected_auc(p) == pytest.approx(roc_auc_score(y, p), abs=0.01)
    assert st.expected_accuracy(p, 0.5) == pytest.approx(np.mean((p >= 0.5) == y), abs=0.01)


def test_debiased_calibration_error_near_zero_when_calibrated() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(2, 5, 2_000)
    y = (rng.random(p.size) < p).astype(float)
    calibrated = st.debiased_calibration_error(*st.calibration_bins(y, p, 10))
    skewed = st.debiased_calibration_error(*st.calibration_bins(y, np.sqrt(p), 10))
    assert calibrated < 0.02 < 0.15 < skewed


# --- reports: no false alarms on large windows, real shifts flagged ------------------------


def test_identical_distributions_at_200k_rows_do_not_drift() -> None:
    rng = np.random.default_rng(5)
    profile = build_profile(_frame(rng, 50_000, n_numeric=10))
    report = compare(profile, _frame(rng, 200_000, n_numeric=10), window_id="w")
    assert report.n_drifting == 0
    assert report.n_insufficient == 0
    values = {(r.feature, r.statistic): r.value for r in report.features}
    assert max(v for v in values.values() if v is not None) < 0.02


def test_p_values_flag_a_negligible_shift_that_effect_sizes_ignore() -> None:
    rng = np.random.default_rng(6)
    ref = _frame(rng, 50_000, n_numeric=4)
    cur = _frame(rng, 200_000, n_numeric=4, shift=0.03)  # 3% of a std: nobody cares
    p_values = [ks_2samp(ref[c], cur[c]).pvalue for c in ("x0", "x1", "x2", "x3")]
    assert max(p_values) < 0.01  # every KS test "detects drift"
    report = compare(build_profile(ref), cur)
    assert report.n_drifting == 0
    assert {r.verdict for r in report.features} == {"ok"}


def test_real_shift_is_flagged() -> None:
    rng = np.random.default_rng(7)
    ref = _frame(rng, 20_000, n_numeric=3)
    cur = _frame(rng, 5_000, n_numeric=3)
    cur["x1"] = cur["x1"] + 0.5
    cur["grade"] = rng.choice(np.array(["A", "B", "C", "D"]), len(cur), p=[0.1, 0.2, 0.3, 0.4])
    report = compare(build_profile(ref), cur)
    assert report.drifting_features == ["grade", "x1"]
    assert report.act_features == ["grade", "x1"]
    by = {(r.feature, r.statistic): r for r in report.features}
    assert by[("x1", "wasserstein_norm")].value == pytest.approx(0.5, abs=0.05)
    assert by[("x1", "psi")].verdict == "act"
    assert by[("grade", "js_distance")].verdict == "act"
    assert by[("x0", "psi")].verdict == "ok"


def test_below_minimum_window_is_insufficient_never_drift() -> None:
    rng = np.random.default_rng(8)
    policy = DriftPolicy(min_window_rows=500)
    profile = build_profile(_frame(rng, 5_000))
    cur = _frame(rng, 499, shift=3.0)
    report = compare(profile, cur, policy)
    assert {r.verdict for r in report.features} == {"insufficient_data"}
    assert all(r.value is None for r in report.features)
    assert report.n_drifting == 0 and not report.sufficient
    decision = decide_alarm([report, report, report], policy)
    assert not decision.alarm
    # "no alarm" about windows nobody could judge says so (the monitor's line).
    assert unjudged_note([report, report]) == " (2 too small to judge: 499 < min_window_rows 500)"
    judged = compare(profile, _frame(rng, 600), policy)
    assert unjudged_note([judged]) == ""
    bigger = compare(profile, _frame(rng, 450, shift=3.0), policy)
    assert unjudged_note([judged, report, bigger]) == " (2 too small to judge: 450-499 < min_window_rows 500)"


def test_noise_floor_guards_small_windows_of_many_categories() -> None:
    rng = np.random.default_rng(19)
    names = np.array([f"c{i}" for i in range(40)])
    profile = build_profile(pd.DataFrame({"c": rng.choice(names, 50_000)}))
    cur = pd.DataFrame({"c": rng.choice(names, 600)})
    by = {r.statistic: r for r in compare(profile, cur).features}
    # with no drift, 40 categories on 600 rows read about 0.13: above the 0.1 threshold
    assert by["js_distance"].value is not None and by["js_distance"].value > 0.1
    assert by["js_distance"].verdict == "ok"
    assert by["js_distance"].threshold > 0.1 and "noise floor" in by["js_distance"].detail
    shifted = pd.DataFrame({"c": rng.choice(names[:10], 600)})
    assert {r.verdict for r in compare(profile, shifted).features if r.statistic != "missing_rate"} == {"act"}


def test_noise_floors_shrink_with_window_size() -> None:
    q = 0.999
    assert st.psi_noise_floor(10, 100_000, 1_000_000, q) < 0.001
    assert st.psi_noise_floor(10, 100_000, 500, q) == pytest.approx(27.88 * (1e-5 + 2e-3), rel=1e-3)
    assert st.cramers_v_noise_floor(40, 50_000, 600, q) > st.cramers_v_noise_floor(40, 50_000, 6_000, q)
    normal_q = st.quantile_function(np.sort(np.random.default_rng(0).normal(size=100_000)), 1000)
    # mean of W1 under no drift is sqrt(2/pi) * 1.6147 * sqrt(1/n + 1/m) for a standard normal
    floor = st.wasserstein_noise_floor(normal_q, 100_000, 500, 0.5)
    assert floor == pytest.approx(math.sqrt(2 / math.pi) * 1.6147 * math.sqrt(1e-5 + 2e-3), rel=0.03)


def test_small_windows_get_fewer_psi_bins() -> None:
    policy = DriftPolicy()
    assert policy.psi_bins_for(1_000_000) == 10
    assert policy.psi_bins_for(300) == 5
    assert policy.psi_bins_for(10) == 2


def test_categorical_unseen_category_and_missing_values() -> None:
    ref = pd.DataFrame({"purpose": ["car"] * 500 + ["home"] * 450 + [None] * 50})
    cur = pd.DataFrame({"purpose": ["car"] * 300 + ["home"] * 200 + ["crypto"] * 200 + [None] * 300})
    profile = build_profile(ref)
    col = profile.features["purpose"]
    assert isinstance(col, CategoricalProfile)
    assert (col.categories, col.counts, col.other_count, col.n_missing) == (
        ["car", "home"],
        [500, 450],
        0,
        50,
    )
    report = compare(profile, cur)
    by = {r.statistic: r for r in report.features}
    assert by["js_distance"].value == pytest.approx(
        jensenshannon([500, 450, 0, 50], [300, 200, 200, 300], base=2)
    )
    assert by["cramers_v"].verdict == "act"
    assert by["missing_rate"].verdict == "act"
    assert by["missing_rate"].value == pytest.approx(st.cohens_h(0.05, 0.3))
    assert f"{OTHER} share 0.0000 -> 0.2000" in by["js_distance"].detail


def test_rare_reference_categories_go_to_other() -> None:
    ref = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["c", "d"]})
    col = build_profile(ref, max_categories=2).features["c"]
    assert isinstance(col, CategoricalProfile)
    assert (col.categories, col.other_count) == (["a", "b"], 2)


def test_missing_rate_on_numeric_feature() -> None:
    rng = np.random.default_rng(9)
    ref = pd.DataFrame({"income": rng.normal(size=2_000)})
    cur = pd.DataFrame({"income": rng.normal(size=2_000)})
    cur.loc[: len(cur) // 2, "income"] = np.nan
    by = {r.statistic: r for r in compare(build_profile(ref), cur).features}
    assert by["missing_rate"].verdict == "act"
    assert by["psi"].verdict == "ok"  # the values that are there did not move


def test_non_numeric_values_in_a_numeric_feature_raise_input_error() -> None:
    profile = build_profile(pd.DataFrame({"age": [30.0, 40.0, 50.0]}))
    with pytest.raises(InputError, match="'age' holds non-numeric"):
        compare(profile, pd.DataFrame({"age": ["thirty", "40", "50"]}))


def test_categories_keyed_by_string_form() -> None:
    ref = pd.DataFrame(
        {"term": pd.Series([36, 60, 36, 36], dtype="category"), "flag": [True, False, True, True]}
    )
    profile = build_profile(ref, categorical=["term"])
    term, flag = profile.features["term"], profile.features["flag"]
    assert isinstance(term, CategoricalProfile) and isinstance(flag, CategoricalProfile)
    assert (term.categories, term.counts) == (["36", "60"], [3, 1])
    assert (flag.categories, flag.counts) == (["True", "False"], [3, 1])
    cur = pd.DataFrame({"term": ["36", "60", "84", None], "flag": [True, True, False, None]})
    policy = DriftPolicy(min_window_rows=1)
    assert compare(profile, cur, policy).n_features == 2


def test_missing_current_columns_raise_one_error() -> None:
    profile = build_profile(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}))
    with pytest.raises(InputError, match=r"\['a', 'b'\]"):
        compare(profile, pd.DataFrame({"c": [1]}))


def test_profile_json_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    ref = _frame(rng, 3_000)
    ref["score"] = rng.beta(2, 5, len(ref))
    ref["default"] = (rng.random(len(ref)) < ref["score"]).astype(int)
    profile = build_profile(ref, score_column="score", label_column="default", source="snap:abc")
    again = ReferenceProfile.from_json(profile.to_json())
    assert again == profile
    path = tmp_path / "profile.json"
    profile.save(path)
    assert ReferenceProfile.load(path) == profile
    cur = _frame(rng, 1_000)
    cur["score"] = rng.beta(2, 5, len(cur))
    assert compare(again, cur, window_id="w") == compare(profile, cur, window_id="w")


def test_report_table_rows() -> None:
    rng = np.random.default_rng(11)
    ref = _frame(rng, 2_000, n_numeric=1)
    ref["score"] = rng.beta(2, 5, len(ref))
    ref["y"] = (rng.random(len(ref)) < ref["score"]).astype(int)
    cur = ref.sample(frac=1.0, random_state=0)
    report = compare(build_profile(ref, score_column="score", label_column="y"), cur, window_id="d1")
    table = report.to_table()
    sections = [row["section"] for row in table]
    assert sections.count("feature") == 6  # x0: psi, wasserstein, missing; grade: js, v, missing
    assert sections.count("prediction") == 2
    assert sections.count("performance") == 3  # auc, calibration_error, positive_rate
    rate = next(row for row in table if row["statistic"] == "positive_rate")
    detail = str(rate["detail"])
    assert (
        detail.startswith("expected (mean score x reference ratio) ")
        and "reference observed/predicted ratio CI" in detail
    )
    assert sections[-1] == "estimated_performance"
    assert {row["verdict"] for row in table} == {"ok"}
    assert DriftReport.model_validate_json(report.model_dump_json()) == report
    assert set(table[0]) == {
        "section", "feature", "kind", "statistic", "value", "threshold", "act_threshold",
        "verdict", "n", "detail",
    }  # fmt: skip


# --- performance drift ---------------------------------------------------------------------


def _scored(rng: np.random.Generator, n: int, noise: float = 0.0) -> pd.DataFrame:
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p).astype(int)
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, 2, int(flip.sum()))
    return pd.DataFrame({"x0": rng.normal(size=n), "score": p, "y": y})


def test_performance_drift_ci_decides_the_verdict() -> None:
    rng = np.random.default_rng(12)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    assert profile.performance is not None and profile.performance.auc is not None

    same = compare(profile, _scored(rng, 5_000))
    degraded = compare(profile, _scored(rng, 5_000, noise=0.5))
    auc_same, auc_bad = same.performance[0], degraded.performance[0]
    assert auc_same.metric == "auc" and auc_same.verdict == "ok"
    assert auc_bad.verdict == "act"
    assert auc_bad.ci_high is not None and auc_bad.ci_high < profile.performance.auc - 0.02
    assert degraded.performance_verdict == "act"


def test_performance_point_drop_with_wide_ci_is_not_a_drop() -> None:
    rng = np.random.default_rng(13)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    small = _scored(rng, 300, noise=0.2)  # a drop of a few points, CI ~ +-0.065
    auc = compare(profile, small, DriftPolicy(min_window_rows=100)).performance[0]
    assert auc.current is not None and auc.ci_low is not None and auc.ci_high is not None
    assert auc.ci_low < auc.current < auc.ci_high
    assert profile.performance is not None and profile.performance.auc is not None
    floor = profile.performance.auc - 0.02
    assert auc.current < floor < auc.ci_high  # below the tolerance, but not confirmed
    assert auc.verdict != "act"


def test_a_small_reference_does_not_read_as_a_drop_on_stable_windows() -> None:
    """The reference AUC comes from a few hundred held-out rows; its error repeats in every
    window. Only the window's own variance in the interval made 24 of 200 references of 300
    rows read a confirmed drop ("act") on a large window of the very same population."""
    rng = np.random.default_rng(30)
    window = _scored(rng, 5_000)
    profiles = [build_profile(_scored(rng, 300), score_column="score", label_column="y") for _ in range(200)]
    verdicts = [compare(profile, window).performance[0] for profile in profiles]
    assert sum(v.verdict == "act" for v in verdicts) <= 5  # 95% interval, one side: ~2.5%
    assert profiles[0].performance is not None and profiles[0].performance.auc_variance
    assert verdicts[0].method == "delong, reference variance included"


@pytest.mark.parametrize(
    ("high", "warn_top", "verdict"),
    [(0.69, 0.68, "act"), (0.71, 0.69, "warn"), (0.75, 0.72, "ok")],
)
def test_drop_verdict_levels(high: float, warn_top: float, verdict: str) -> None:
    interval = Interval(value=0.66, low=0.6, high=high, warn_bound=warn_top)
    assert drop_verdict(0.72, interval, 0.02) == verdict  # floor 0.70


def test_calibration_drift_when_scores_are_miscalibrated() -> None:
    rng = np.random.default_rng(14)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    cur = _scored(rng, 3_000)
    calibrated = compare(profile, cur).performance[1]
    cur["score"] = np.sqrt(cur["score"])  # same ranking, scores far too high
    skewed = compare(profile, cur).performance
    assert calibrated.metric == "calibration_error" and calibrated.verdict == "ok"
    assert skewed[1].verdict == "act"
    assert skewed[0].verdict == "ok"  # ranking unchanged: AUC holds


def test_the_default_rate_backtest_catches_a_level_shift_the_binned_error_lets_pass() -> None:
    """Calibration-in-the-large: the observed rate against the mean predicted probability of the
    same rows. Defaults 30% above what the scores say (the ranking intact) is a confirmed gap
    either way; a calibrated window is not, in 200 windows of 2,000 rows."""
    rng = np.random.default_rng(31)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    cur = _scored(rng, 2_000)
    p = cur["score"].to_numpy()
    for factor in (1.3, 0.7):
        shifted = cur.assign(y=(rng.random(len(cur)) < np.clip(p * factor, 0, 1)).astype(int))
        auc, _, rate = compare(profile, shifted).performance
        assert rate.metric == "positive_rate" and rate.verdict == "act", (factor, rate)
        ref = profile.performance
        assert ref is not None and ref.positive_rate is not None and ref.mean_score is not None
        expected = p.mean() * ref.positive_rate / ref.mean_score  # the reference's ratio, ~1 here
        assert rate.reference == pytest.approx(expected) and rate.current == pytest.approx(
            shifted["y"].mean()
        )
        assert auc.verdict == "ok"
    calibrated = [
        compare(profile, cur.assign(y=(rng.random(len(cur)) < p).astype(int))).performance[2]
        for _ in range(200)
    ]
    assert sum(r.verdict == "act" for r in calibrated) <= 2
    assert sum(r.verdict != "ok" for r in calibrated) <= 20
    few = cur.assign(y=cur["y"].where(cur.index < 100))
    assert compare(profile, few).performance[2].verdict == "insufficient_data"


def test_a_trained_champion_a_little_off_in_the_large_raises_no_default_rate_alarm() -> None:
    """A real XGBoost champion (scale_pos_weight 1.6: it passes the spec's gates, ECE ~0.03)
    predicts ~30% more defaults than its evaluation rows hold. Judged against the scores alone,
    stable windows of the same world acted in most windows (a performance alarm and a retrain
    from its first labelled windows, forever); against the reference's ratio they do not, and a
    real shift of the default rate still acts."""
    from mlops import simulator as sim
    from mlops.model_spec import load_model_spec
    from mlops.training import train_model

    spec = load_model_spec("credit-risk")
    spec = spec.model_copy(
        update={"xgboost": spec.xgboost.model_copy(update={"scale_pos_weight": 1.6}), "num_boost_round": 120}
    )
    config = sim.SimulationConfig(scenario="stable", days=30, seed=1)

    def day(d: int, n: int = 2_000) -> pd.DataFrame:
        applications, labels = sim.generate_applications(n, d, config)
        return applications.assign(**{spec.target_column: labels.to_numpy()})

    model = train_model(pd.concat([day(d) for d in range(6)], ignore_index=True), spec)
    evaluation = day(6, 6_000)
    scored = evaluation.assign(score=model.predict(evaluation[spec.feature_list]))
    profile = build_profile(
        scored, features=spec.feature_list[:2], score_column="score", label_column=spec.target_column
    )
    verdicts = []
    for d in range(10, 20):
        window = day(d)
        window = window.assign(score=model.predict(window[spec.feature_list]))
        verdicts.append(
            compare(profile, window[[*spec.feature_list[:2], "score", spec.target_column]]).performance[2]
        )
    assert scored["score"].mean() > 1.2 * scored[spec.target_column].mean()  # off in the large
    assert sum(r.verdict == "act" for r in verdicts) == 0, [(r.reference, r.current) for r in verdicts]
    window = day(20)
    s = model.predict(window[spec.feature_list])
    rng = np.random.default_rng(3)
    shifted = window.assign(
        score=s, **{spec.target_column: (rng.random(len(s)) < np.clip(s, 0, 1)).astype(int)}
    )
    assert (
        compare(profile, shifted[[*spec.feature_list[:2], "score", spec.target_column]])
        .performance[2]
        .verdict
        == "act"
    )


def test_a_reference_stored_without_the_ratio_is_not_judged_on_the_default_rate() -> None:
    """References stored before the backtest lack the observed/predicted ratio: judging against
    the scores alone would make a champion off in the large alarm every window."""
    rng = np.random.default_rng(33)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    assert profile.performance is not None and profile.performance.positive_rate is not None
    old = profile.model_copy(
        update={
            "performance": profile.performance.model_copy(
                update={"positive_rate": None, "mean_score": None, "positive_rate_variance": None}
            )
        }
    )
    cur = _scored(rng, 2_000)
    shifted = cur.assign(y=(rng.random(len(cur)) < np.clip(cur["score"] * 1.5, 0, 1)).astype(int))
    assert compare(profile, shifted).performance[2].verdict == "act"
    auc, _, rate = compare(old, shifted).performance
    assert rate.verdict == "insufficient_data" and auc.verdict != "insufficient_data"


def test_a_default_rate_gap_in_two_labelled_windows_is_a_performance_alarm() -> None:
    decision = decide_alarm([_w("d1", drops=("positive_rate",)), _w("d2", drops=("positive_rate",))], RULE)
    assert decision.alarm and decision.severity == "act"
    assert "performance drop (positive_rate)" in decision.reason


def test_the_reference_calibration_error_uses_the_policys_bins() -> None:
    """Windows are binned with the policy's calibration_bins; the reference must be too, or a
    spec with other bins compares errors of different binnings."""
    rng = np.random.default_rng(32)
    ref = _scored(rng, 3_000)
    ref["score"] = np.sqrt(ref["score"])  # miscalibrated: the error depends on the binning
    y, s = ref["y"].to_numpy(dtype=float), ref["score"].to_numpy()
    for bins in (10, 25):
        performance = build_profile(
            ref, score_column="score", label_column="y", calibration_bins=bins
        ).performance
        assert performance is not None
        expected = st.debiased_calibration_error(*st.calibration_bins(y, s, bins))
        assert performance.calibration_error == pytest.approx(expected)
    coarse = build_profile(ref, score_column="score", label_column="y", calibration_bins=2).performance
    assert coarse is not None and coarse.calibration_error != pytest.approx(expected)


def test_performance_on_late_outcomes_of_earlier_rows() -> None:
    rng = np.random.default_rng(20)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    today = _scored(rng, 2_000).drop(columns="y")
    assert compare(profile, today).performance == []
    arrived = _scored(rng, 3_000, noise=0.5)[["score", "y"]]
    report = compare(profile, today, outcomes=arrived)
    assert report.performance_verdict == "act"
    assert report.performance[0].n_labelled == 3_000


def test_too_few_labels_is_insufficient() -> None:
    rng = np.random.default_rng(15)
    profile = build_profile(_scored(rng, 5_000), score_column="score", label_column="y")
    cur = _scored(rng, 1_000)
    cur.loc[cur.index[100:], "y"] = None
    assert {p.verdict for p in compare(profile, cur).performance} == {"insufficient_data"}


def test_non_binary_labels_are_refused() -> None:
    rng = np.random.default_rng(16)
    profile = build_profile(_scored(rng, 1_000), score_column="score", label_column="y")
    cur = _scored(rng, 1_000)
    cur["y"] = cur["y"] * 2
    with pytest.raises(InputError, match="0/1"):
        compare(profile, cur)


def test_estimated_performance_warns_when_scores_lose_spread() -> None:
    rng = np.random.default_rng(17)
    profile = build_profile(_scored(rng, 20_000), score_column="score", label_column="y")
    cur = _scored(rng, 5_000)
    assert compare(profile, cur).estimated_performance.verdict == "ok"  # type: ignore[union-attr]
    cur["score"] = 0.25 + 0.2 * (cur["score"] - 0.25)  # scores cluster: little to rank on
    estimate = compare(profile, cur).estimated_performance
    assert estimate is not None and estimate.verdict == "warn"


# --- policy --------------------------------------------------------------------------------


def test_policy_validation() -> None:
    with pytest.raises(ValidationError, match="psi_bins must divide"):
        DriftPolicy(psi_bins=7)
    with pytest.raises(ValidationError, match="below warn"):
        Threshold(warn=0.2, act=0.1)
    assert Threshold(warn=0.1, act=0.2).verdict(0.15) == "warn"
    assert DriftPolicy.model_validate_json(DriftPolicy().model_dump_json()) == DriftPolicy()


# --- alarm rule, case by case ----------------------------------------------------------------


def _w(
    wid: str,
    drifting: tuple[str, ...] = (),
    act: tuple[str, ...] = (),
    *,
    sufficient: bool = True,
    labelled: bool = False,
    drops: tuple[str, ...] = (),
    estimated_drop: bool = False,
) -> WindowSummary:
    return WindowSummary(
        window_id=wid,
        sufficient=sufficient,
        drifting_features=sorted({*drifting, *act}),
        act_features=list(act),
        labelled=labelled or bool(drops),
        performance_drops=list(drops),
        estimated_drop=estimated_drop,
    )


RULE = AlarmRule(k_features=2, m_windows=2)


def test_alarm_one_drifting_window_is_not_enough() -> None:
    decision = decide_alarm([_w("d1"), _w("d2", ("a", "b"))], RULE)
    assert not decision.alarm and decision.severity == "none"


def test_alarm_two_consecutive_windows_warn() -> None:
    decision = decide_alarm([_w("d1", ("a", "b")), _w("d2", ("a", "b", "c"))], RULE)
    assert decision.alarm and decision.severity == "warn"
    assert decision.windows == ["d1", "d2"]
    assert decision.features == ["a", "b"]


def test_alarm_two_consecutive_windows_at_act() -> None:
    decision = decide_alarm([_w("d1", act=("a", "b")), _w("d2", act=("a", "b"))], RULE)
    assert decision.severity == "act"


def test_alarm_interrupted_streak_resets() -> None:
    history = [_w("d1", ("a", "b")), _w("d2"), _w("d3", ("a", "b"))]
    assert not decide_alarm(history, RULE).alarm


def test_alarm_needs_the_same_features_each_window() -> None:
    history = [_w("d1", ("a", "b")), _w("d2", ("c", "d"))]
    assert not decide_alarm(history, RULE).alarm


def test_alarm_insufficient_window_interrupts() -> None:
    history = [_w("d1", ("a", "b")), _w("d2", sufficient=False), _w("d3", ("a", "b"))]
    decision = decide_alarm(history, RULE)
    assert not decision.alarm


def test_alarm_performance_drop_alone_is_act() -> None:
    history = [_w("d1", drops=("auc",)), _w("d2", drops=("auc",))]
    decision = decide_alarm(history, RULE)
    assert decision.alarm and decision.severity == "act"
    assert decision.features == [] and "auc" in decision.reason


def test_alarm_performance_streak_skips_unlabelled_windows() -> None:
    history = [_w("d1", drops=("auc",)), _w("d2"), _w("d3", drops=("auc",))]
    assert decide_alarm(history, RULE).severity == "act"
    history = [_w("d1", drops=("auc",)), _w("d2", labelled=True), _w("d3", drops=("auc",))]
    assert not decide_alarm(history, RULE).alarm


def test_alarm_estimated_drop_only_warns() -> None:
    history = [_w("d1", estimated_drop=True), _w("d2", estimated_drop=True)]
    assert decide_alarm(history, RULE).severity == "warn"
    quiet = AlarmRule(estimated_performance_warns=False)
    assert not decide_alarm(history, quiet).alarm


def test_alarm_counts_the_score_as_a_feature() -> None:
    rng = np.random.default_rng(18)
    ref = _scored(rng, 5_000)
    profile = build_profile(ref, score_column="score")
    shifted = _scored(rng, 2_000)
    shifted["x0"] += 1.0
    shifted["score"] = np.clip(shifted["score"] + 0.2, 0, 1)
    reports = [compare(profile, shifted, window_id=f"d{i}") for i in (1, 2)]
    decision = decide_alarm(reports, DriftPolicy())
    assert decision.alarm and decision.features == ["score", "x0"]
    no_score = AlarmRule(count_prediction=False, estimated_performance_warns=False)
    assert not decide_alarm(reports, no_score).alarm


def test_alarm_state_round_trip_and_bounded_history() -> None:
    policy = DriftPolicy(alarm=AlarmRule(k_features=1, m_windows=2))
    state = AlarmState()
    decisions = []
    for window in [_w("d1", drops=("auc",)), _w("d2", ("a",)), _w("d3", ("a",)), _w("d4")]:
        state, decision = AlarmState.from_json(state.to_json()).observe(window, policy)
        decisions.append(decision.alarm)
    assert decisions == [False, False, True, False]
    assert [w.window_id for w in state.windows] == ["d1", "d3", "d4"]  # last labelled kept
