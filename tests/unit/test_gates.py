"""Gates: each one failing alone, all failures at once, the paired bootstrap, the record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from mlops.errors import GateFailed, InputError
from mlops.evaluation import EvaluationReport, SliceSpec, evaluate
from mlops.gates import (
    DecisionRecord,
    GateSpec,
    UnscoredChampion,
    bootstrap_metric,
    evaluate_gates,
    gate_table_markdown,
    paired_bootstrap,
)

pytestmark = pytest.mark.unit

GATES_YAML = """
floors: {auc: {min: 0.70}, brier: {max: 0.17}, ece: {max: 0.05}}
non_inferiority: {metric: auc, margin: 0.005, confidence: 0.95, n_bootstrap: 200, seed: 0}
slice_floors: {auc: {min: 0.62}}
fairness: {max_approval_rate_gap: 0.10, max_tpr_gap: 0.10}
"""
THRESHOLD = 0.3
SLICES = (
    SliceSpec(name="segment", column="segment", values=("a", "b", "c")),
    SliceSpec(name="income", column="income", bins=(0.0, 50.0, 100.0)),
)


def _expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class World:
    """Labels from two features; ``strong`` is the true probability, ``weak`` sees one feature."""

    y: np.ndarray
    strong: np.ndarray
    weak: np.ndarray
    x1: np.ndarray
    frame: pd.DataFrame

    def report(self, scores: np.ndarray, frame: pd.DataFrame | None = None) -> EvaluationReport:
        return evaluate(
            self.y,
            scores,
            threshold=THRESHOLD,
            slices_frame=self.frame if frame is None else frame,
            slices=SLICES,
            sensitive="group",
        )


@pytest.fixture(scope="module")
def world() -> World:
    rng = np.random.default_rng(7)
    n = 3000
    x1, x2 = rng.normal(size=(2, n))
    strong = _expit(-1.6 + 1.2 * x1 + 1.0 * x2)
    y = rng.binomial(1, strong)
    weak = _expit((-1.6 + 1.2 * x1) / np.sqrt(1.0 + np.pi / 8.0))  # calibrated on x1 alone
    frame = pd.DataFrame(
        {
            "segment": rng.choice(["a", "b", "c"], n),
            "income": rng.uniform(0.0, 100.0, n),
            "group": rng.choice(["f", "m"], n),
        }
    )
    return World(y=y, strong=strong, weak=weak, x1=x1, frame=frame)


@pytest.fixture(scope="module")
def spec() -> GateSpec:
    return GateSpec.model_validate(yaml.safe_load(GATES_YAML))


def _gate(
    spec: GateSpec,
    world: World,
    candidate: np.ndarray,
    champion: np.ndarray | None,
    report: EvaluationReport | None = None,
) -> DecisionRecord:
    return evaluate_gates(
        spec,
        report or world.report(candidate),
        candidate,
        world.y,
        champion,
        None if champion is None else {"version": 1, "run_id": "champ-run"},
        model_name="credit-risk",
        candidate_ref={"version": 2, "run_id": "cand-run"},
        snapshot_hashes={"evaluation": "ab" * 32},
        flow_run_id="flow-123",
        actor="tester",
    )


def _failed_kinds(record: DecisionRecord) -> set[str]:
    return {c.kind for c in record.checks if not c.passed}


def _with(spec: GateSpec, **changes: Any) -> GateSpec:
    return GateSpec.model_validate({**spec.model_dump(), **changes})


# --- the happy path and each gate failing alone -----------------------------------------------


def test_strong_candidate_against_weak_champion_passes(spec: GateSpec, world: World) -> None:
    record = _gate(spec, world, world.strong, world.weak)
    assert record.verdict == "passed", record.failures
    assert record.failures == ()
    assert record.significantly_better is True
    assert {c.kind for c in record.checks} == {"floor", "non_inferiority", "slice_floor", "fairness"}
    record.raise_if_failed()  # does not raise


def test_floor_fails_alone(spec: GateSpec, world: World) -> None:
    record = _gate(_with(spec, floors={"auc": {"min": 0.95}}), world, world.strong, world.weak)
    assert record.verdict == "failed"
    assert _failed_kinds(record) == {"floor"}
    (failed,) = [c for c in record.checks if not c.passed]
    assert (failed.metric, failed.comparator, failed.threshold) == ("auc", ">=", 0.95)
    assert failed.champion_value == pytest.approx(roc_auc_score(world.y, world.weak))


def test_non_inferiority_fails_alone_when_champion_is_clearly_better(spec: GateSpec, world: World) -> None:
    record = _gate(spec, world, world.weak, world.strong)
    assert _failed_kinds(record) == {"non_inferiority"}
    check = next(c for c in record.checks if c.kind == "non_inferiority")
    assert check.ci is not None and check.ci[1] < 0
    assert check.comparison is not None
    assert check.comparison.direction == "higher_is_better"
    assert check.comparison.significantly_better is False
    assert (check.comparator, check.threshold, check.value) == (">", -0.005, check.ci[0])
    assert record.significantly_better is False


def test_slice_floor_fails_alone(spec: GateSpec, world: World) -> None:
    # the candidate is random inside segment "c" only: overall it still beats the floors
    candidate = world.strong.copy()
    in_c = (world.frame["segment"] == "c").to_numpy()
    candidate[in_c] = np.random.default_rng(3).permutation(candidate[in_c])
    lenient = _with(spec, floors={"auc": {"min": 0.65}}, non_inferiority={"n_bootstrap": 200, "margin": 0.1})
    record = _gate(lenient, world, candidate, world.weak)
    assert _failed_kinds(record) == {"slice_floor"}, record.failures
    (failed,) = [c for c in record.checks if not c.passed]
    assert (failed.slice, failed.group, failed.metric) == ("segment", "c", "auc")


def test_fairness_fails_alone(spec: GateSpec, world: World) -> None:
    frame = world.frame.assign(group=np.where(world.x1 > 0.3, "hi", "lo"))  # attribute tied to risk
    record = _gate(spec, world, world.strong, world.weak, report=world.report(world.strong, frame))
    assert _failed_kinds(record) == {"fairness"}
    assert {c.metric for c in record.checks if not c.passed} == {"approval_rate_gap", "tpr_gap"}


def test_every_failure_is_reported_at_once(spec: GateSpec, world: World) -> None:
    frame = world.frame.assign(group=np.where(world.x1 > 0.3, "hi", "lo"))
    strict = _with(
        spec, floors={"auc": {"min": 0.95}, "brier": {"max": 0.01}}, slice_floors={"auc": {"min": 0.99}}
    )
    record = _gate(strict, world, world.weak, world.strong, report=world.report(world.weak, frame))
    assert _failed_kinds(record) == {"floor", "non_inferiority", "slice_floor", "fairness"}
    failed = [c for c in record.checks if not c.passed]
    assert len(record.failures) == len(failed) >= 2 + 1 + 5 + 2
    with pytest.raises(GateFailed) as caught:
        record.raise_if_failed()
    for check in failed:
        assert check.message in str(caught.value)
    assert caught.value.exit_code == 1


# --- fail closed when a metric cannot be computed ---------------------------------------------


def test_fairness_without_sensitive_attribute_fails_closed(spec: GateSpec, world: World) -> None:
    report = evaluate(world.y, world.strong, threshold=THRESHOLD, slices_frame=world.frame, slices=SLICES)
    record = _gate(spec, world, world.strong, world.weak, report=report)
    assert _failed_kinds(record) == {"fairness"}
    assert all(c.value is None for c in record.checks if not c.passed)


def test_slice_floors_without_slices_fail_closed(spec: GateSpec, world: World) -> None:
    report = evaluate(world.y, world.strong, threshold=THRESHOLD, slices_frame=world.frame, sensitive="group")
    record = _gate(spec, world, world.strong, world.weak, report=report)
    assert _failed_kinds(record) == {"slice_floor"}


def test_slice_with_no_checkable_group_fails_but_small_groups_are_skipped(
    spec: GateSpec, world: World
) -> None:
    tiny = SliceSpec(name="segment", column="segment", values=("a", "b", "c"), min_rows=5000)
    report = evaluate(
        world.y, world.strong, threshold=THRESHOLD, slices_frame=world.frame, slices=[SLICES[1], tiny]
    )
    record = _gate(spec.model_copy(update={"fairness": None}), world, world.strong, world.weak, report=report)
    skipped = [c for c in record.checks if c.status == "skipped"]
    assert len(skipped) == 3 and all(c.passed for c in skipped)
    assert [c.name for c in record.checks if not c.passed] == ["slice_floor.segment"]


# --- non-inferiority: noise, significance, direction ------------------------------------------


def test_improvement_within_noise_is_not_significantly_better() -> None:
    rng = np.random.default_rng(1)
    n = 400
    x = rng.normal(size=n)
    y = rng.binomial(1, _expit(-1.0 + 1.5 * x))
    a = _expit(-1.0 + 1.5 * (x + rng.normal(0, 0.5, n)))
    b = _expit(-1.0 + 1.5 * (x + rng.normal(0, 0.5, n)))  # same quality, independent noise
    cand, champ = (a, b) if roc_auc_score(y, a) > roc_auc_score(y, b) else (b, a)
    boot = paired_bootstrap(y, cand, champ, metric="auc", n_bootstrap=300, seed=0)
    assert boot.difference > 0
    assert boot.ci_low is not None and boot.ci_high is not None
    assert boot.ci_low < 0 < boot.ci_high


def test_truly_better_model_is_significantly_better(world: World) -> None:
    boot = paired_bootstrap(world.y, world.strong, world.weak, metric="auc", n_bootstrap=200)
    assert boot.ci_low is not None and boot.ci_low > 0


def test_lower_is_better_metric_flips_the_sign(spec: GateSpec, world: World) -> None:
    on_brier = _with(spec, non_inferiority={"metric": "brier", "margin": 0.002, "n_bootstrap": 200})
    better = next(
        c for c in _gate(on_brier, world, world.strong, world.weak).checks if c.kind == "non_inferiority"
    )
    assert better.comparison is not None
    assert better.comparison.direction == "lower_is_better"
    assert (better.comparator, better.threshold) == ("<", 0.002)
    assert better.ci is not None and better.value == better.ci[1] < 0
    assert better.passed and better.comparison.significantly_better
    assert better.comparison.difference == pytest.approx(
        brier_score_loss(world.y, world.strong) - brier_score_loss(world.y, world.weak)
    )
    worse = _gate(on_brier, world, world.weak, world.strong, report=world.report(world.weak))
    assert _failed_kinds(worse) == {"non_inferiority"}


def test_paired_bootstrap_is_deterministic_with_a_seed(world: World) -> None:
    first = paired_bootstrap(world.y, world.strong, world.weak, n_bootstrap=100, seed=11)
    again = paired_bootstrap(world.y, world.strong, world.weak, n_bootstrap=100, seed=11)
    other = paired_bootstrap(world.y, world.strong, world.weak, n_bootstrap=100, seed=12)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_identical_models_have_zero_difference(world: World) -> None:
    boot = paired_bootstrap(world.y, world.strong, world.strong, n_bootstrap=50)
    assert boot.difference == 0 and boot.ci_low == 0 and boot.ci_high == 0


@pytest.mark.parametrize(
    ("metric", "reference"),
    [
        ("auc", roc_auc_score),
        ("brier", brier_score_loss),
        ("log_loss", log_loss),
        ("pr_auc", average_precision_score),
    ],
)
def test_vectorised_bootstrap_metric_equals_metric_on_the_resample(metric: Any, reference: Any) -> None:
    rng = np.random.default_rng(5)
    y = rng.binomial(1, 0.3, 300).astype(np.int8)
    p = np.round(rng.random(300), 1)  # many ties
    idx = rng.integers(0, 300, size=(4, 300))
    expected = [reference(y[r], p[r]) for r in idx]
    np.testing.assert_allclose(bootstrap_metric(metric, y, p, idx), expected, rtol=1e-12)


def test_paired_auc_bootstrap_equals_scikit_learn_on_the_same_resamples() -> None:
    # The paired AUC path counts each resample's rows once for both models; its CI must be
    # the percentile CI of roc_auc_score differences on the very resamples the seed draws.
    rng = np.random.default_rng(9)
    y = rng.binomial(1, 0.2, 400).astype(np.int8)
    cand = np.round(np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1), 2)  # ties within and across classes
    champ = np.round(np.clip(0.2 * y + rng.random(400) * 0.8, 0, 1), 2)
    draws = np.random.default_rng(3).integers(0, 400, size=(60, 400))
    expected = [roc_auc_score(y[r], cand[r]) - roc_auc_score(y[r], champ[r]) for r in draws]
    boot = paired_bootstrap(y, cand, champ, metric="auc", n_bootstrap=60, seed=3)
    assert boot.n_valid == 60
    low, high = np.quantile(expected, [0.025, 0.975])
    assert boot.ci_low == pytest.approx(low, rel=1e-12) and boot.ci_high == pytest.approx(high, rel=1e-12)


# --- bootstrap promotion (no champion) --------------------------------------------------------


def test_no_champion_goes_through_recorded_bootstrap(spec: GateSpec, world: World) -> None:
    record = _gate(spec, world, world.strong, None)
    assert record.verdict == "bootstrap"
    assert record.passed
    assert record.baseline is None and record.champion_metrics is None
    check = next(c for c in record.checks if c.kind == "non_inferiority")
    assert check.status == "no_champion" and check.value is None
    assert record.significantly_better is None
    record.raise_if_failed()
    assert "bootstrap" in gate_table_markdown(record).lower()


def test_no_champion_still_fails_on_other_gates(spec: GateSpec, world: World) -> None:
    record = _gate(_with(spec, floors={"auc": {"min": 0.95}}), world, world.strong, None)
    assert record.verdict == "failed"
    with pytest.raises(GateFailed, match=r"floor\.auc\.min"):
        record.raise_if_failed()


# --- a champion that could not score the evaluation rows --------------------------------------

UNSCORED = UnscoredChampion(
    reason="input lacks feature column(s) ['x2'] the model was trained on",
    remedy="restore the columns, or roll back (mlops rollback --to VERSION)",
)


def _gate_unscored(spec: GateSpec, world: World, candidate: np.ndarray) -> DecisionRecord:
    return evaluate_gates(
        spec,
        world.report(candidate),
        candidate,
        world.y,
        None,
        {"version": 3, "run_id": "champ-run", "alias": "champion"},
        model_name="credit-risk",
        candidate_ref={"version": 4, "run_id": "cand-run"},
        champion_unscored=UNSCORED,
    )


def test_a_champion_without_scores_fails_non_inferiority_closed(spec: GateSpec, world: World) -> None:
    # the strong candidate passes every gate against a champion that scores (first test above)
    record = _gate_unscored(spec, world, world.strong)
    assert record.verdict == "failed" and not record.passed
    assert {c.kind for c in record.checks} == {"floor", "non_inferiority", "slice_floor", "fairness"}
    assert _failed_kinds(record) == {"non_inferiority"}
    [failure] = record.failures
    assert failure == (
        "non_inferiority.auc: champion v3 could not score the evaluation rows (input lacks feature "
        "column(s) ['x2'] the model was trained on): no comparison, fail closed; restore the columns, "
        "or roll back (mlops rollback --to VERSION)"
    )
    check = next(c for c in record.checks if c.kind == "non_inferiority")
    assert (check.status, check.value, check.comparison, check.champion_value) == ("failed", None, None, None)
    assert (check.comparator, check.threshold) == (">", -0.005)
    assert record.baseline is not None and record.baseline.version == "3"
    assert record.baseline_unscored == UNSCORED
    assert record.champion_metrics is None and record.data.champion_scores_sha256 is None
    assert record.significantly_better is None
    assert all(c.champion_value is None for c in record.checks)
    with pytest.raises(GateFailed, match="champion v3 could not score the evaluation rows"):
        record.raise_if_failed()
    assert DecisionRecord.model_validate_json(record.model_dump_json()) == record


def test_a_champion_without_scores_still_reports_every_other_failure(spec: GateSpec, world: World) -> None:
    record = _gate_unscored(_with(spec, floors={"auc": {"min": 0.95}}), world, world.strong)
    assert _failed_kinds(record) == {"floor", "non_inferiority"}
    assert len(record.failures) == 2


def test_gate_table_shows_a_champion_without_scores_as_not_available(spec: GateSpec, world: World) -> None:
    table = gate_table_markdown(_gate_unscored(spec, world, world.strong))
    assert "**FAILED**" in table
    assert (
        "vs champion version 3 (could not score the evaluation rows: input lacks feature column(s)" in table
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows and all(row.split(" | ")[2] == "not available" for row in rows)
    ni = next(line for line in rows if line.startswith("| non-inferiority"))
    assert "**FAIL**" in ni and "> -0.005" in ni
    assert "champion v3 could not score" in table.split("**Failures**")[1]


def test_a_champion_without_scores_needs_its_reference_and_no_scores(spec: GateSpec, world: World) -> None:
    report = world.report(world.strong)
    with pytest.raises(InputError, match="champion_unscored goes with champion_ref"):
        evaluate_gates(
            spec, report, world.strong, world.y, None, None, model_name="m", champion_unscored=UNSCORED
        )
    with pytest.raises(InputError, match="champion_unscored goes with champion_ref"):
        evaluate_gates(
            spec,
            report,
            world.strong,
            world.y,
            world.weak,
            {"version": 1},
            model_name="m",
            champion_unscored=UNSCORED,
        )


def test_champion_scores_and_reference_go_together(spec: GateSpec, world: World) -> None:
    report = world.report(world.strong)
    with pytest.raises(InputError, match="go together"):
        evaluate_gates(spec, report, world.strong, world.y, world.weak, None, model_name="m")
    with pytest.raises(InputError, match="go together"):
        evaluate_gates(spec, report, world.strong, world.y, None, {"version": 1}, model_name="m")


def test_report_from_other_rows_or_scores_is_refused(spec: GateSpec, world: World) -> None:
    report = world.report(world.strong)
    with pytest.raises(InputError, match="same rows"):
        evaluate_gates(spec, report, world.strong[:100], world.y[:100], None, None, model_name="m")
    with pytest.raises(InputError, match="same scores"):
        evaluate_gates(spec, report, world.weak, world.y, None, None, model_name="m")


# --- the record -------------------------------------------------------------------------------


def test_decision_record_json_round_trip(spec: GateSpec, world: World) -> None:
    record = _gate(spec, world, world.weak, world.strong)
    text = record.model_dump_json()
    assert DecisionRecord.model_validate_json(text) == record
    data = json.loads(text)
    assert data["verdict"] == "failed"
    assert data["candidate"] == {"run_id": "cand-run", "version": "2", "alias": None, "model_uri": None}
    assert data["baseline"]["version"] == "1"
    assert data["created_at"].endswith("Z") or data["created_at"].endswith("+00:00")
    assert (data["flow_run_id"], data["actor"], data["model_name"]) == ("flow-123", "tester", "credit-risk")
    assert data["data"]["n_rows"] == 3000
    assert data["data"]["label_rate"] == pytest.approx(world.y.mean())
    assert data["data"]["snapshot_hashes"] == {"evaluation": "ab" * 32}
    assert len(data["data"]["labels_sha256"]) == 64
    assert data["gates"]["non_inferiority"]["margin"] == 0.005


def test_gate_table_markdown(spec: GateSpec, world: World) -> None:
    record = _gate(spec, world, world.weak, world.strong)
    table = gate_table_markdown(record)
    assert "| check | metric | champion | challenger |" in table
    assert "**FAILED**" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(record.checks)
    ni = next(line for line in rows if line.startswith("| non-inferiority"))
    assert "CI lower bound > -0.005" in ni and "**FAIL**" in ni and "[" in ni
    assert "version 2" in table and "version 1" in table
    assert "**Failures**" in table


# --- the spec ---------------------------------------------------------------------------------


def test_gate_spec_defaults_keep_non_inferiority_on() -> None:
    spec = GateSpec()
    assert spec.non_inferiority.metric == "auc"
    assert spec.floors == {} and spec.fairness is None


@pytest.mark.parametrize(
    "block",
    [
        {"floors": {"auc": {}}},
        {"floors": {"accuracy": {"min": 0.5}}},
        {"floors": {"auc": {"min": 0.8, "max": 0.7}}},
        {"non_inferiority": {"margin": -0.1}},
        {"non_inferiority": {"confidence": 1.0}},
        {"fairness": {}},
        {"unknown": 1},
    ],
)
def test_gate_spec_rejects_bad_blocks(block: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GateSpec.model_validate(block)


def test_training_and_shadow_gate_fairness_on_the_spec_group_size() -> None:
    spec = GateSpec.model_validate(yaml.safe_load(GATES_YAML))
    assert spec.fairness_min_group_rows == 100  # FairnessSpec's default, not evaluate()'s 30
    sized = GateSpec.model_validate({"fairness": {"max_tpr_gap": 0.1, "min_group_rows": 250}})
    assert sized.fairness_min_group_rows == 250
    assert GateSpec().fairness_min_group_rows == 30  # no fairness gate: evaluate()'s default


def test_slice_floor_skips_a_group_with_too_few_defaults_to_measure_its_auc() -> None:
    # A group of 60 rows holding 2 defaults: its AUC is the rank of two scores among 58 (Hanley-
    # McNeil standard error ~0.2 at AUC 0.8), so a floor on it is a coin toss. On simulated
    # credit-risk windows of 1000 rows, a model whose every slice has AUC >= 0.78 failed the
    # repo spec's 0.60 slice floor in 1 run of 6, always on groups with a handful of defaults.
    rng = np.random.default_rng(3)
    n_big, n_small = 2000, 60
    x = rng.normal(size=n_big)
    y_big = rng.binomial(1, _expit(-2.0 + 1.5 * x))
    p_big = _expit(-2.0 + 1.5 * x)
    y_small = np.zeros(n_small, dtype=int)
    y_small[:2] = 1
    p_small = np.linspace(0.3, 0.01, n_small)
    p_small[:2] = 0.02  # both defaults score below almost every good payer: AUC ~0.03
    # a third group with enough of both classes, ranked badly: still gated, still fails
    y_bad = np.r_[np.ones(15, dtype=int), np.zeros(45, dtype=int)]
    p_bad = np.r_[np.full(15, 0.05), np.full(45, 0.2)]
    y = np.r_[y_big, y_small, y_bad]
    p = np.r_[p_big, p_small, p_bad]
    frame = pd.DataFrame({"segment": ["big"] * n_big + ["small"] * n_small + ["bad"] * 60})
    segment = SliceSpec(name="segment", column="segment", values=("big", "small", "bad"))
    report = evaluate(y, p, threshold=THRESHOLD, slices_frame=frame, slices=[segment])
    spec = GateSpec.model_validate({"slice_floors": {"auc": {"min": 0.6}}})
    record = evaluate_gates(spec, report, p, y, None, None, model_name="credit-risk")
    checks = {c.group: c for c in record.checks if c.kind == "slice_floor"}
    small = next(r for r in report.slices if r.group == "small")
    assert small.metrics is None and small.reason is not None and "too few defaults" in small.reason
    assert checks["small"].status == "skipped" and checks["small"].passed
    assert checks["big"].passed and checks["big"].status == "passed"
    assert not checks["bad"].passed  # 15 defaults, 45 good payers: measured, and below the floor
    assert [c.name for c in record.checks if not c.passed] == ["slice_floor.segment[bad].auc.min"]


# --- comparing on the rows the champion did not train on -----------------------------------


def _gate_on(
    spec: GateSpec, world: World, champion: np.ndarray, rows: np.ndarray, note: str = ""
) -> DecisionRecord:
    """The strong candidate against ``champion``, compared on ``rows`` only."""
    return evaluate_gates(
        spec,
        world.report(world.strong),
        world.strong,
        world.y,
        champion,
        {"version": 1, "run_id": "champ-run"},
        model_name="credit-risk",
        comparison_rows=rows,
        comparison_note=note,
    )


def test_non_inferiority_on_a_subset_leaves_out_rows_that_flatter_the_champion(
    spec: GateSpec, world: World
) -> None:
    """On the first half the champion knows the answers (its training rows); on the second it
    is the candidate's equal. Compared on every row the candidate fails; compared on the rows
    the champion never saw it passes, and the record says on how many and why. Floors and the
    other gates still use every row (same candidate metrics)."""
    n = world.y.shape[0]
    half = n // 2
    champion = world.strong.copy()
    champion[:half] = np.where(world.y[:half] == 1, 0.95, 0.02)  # memorised
    everywhere = _gate(spec, world, world.strong, champion)
    assert _failed_kinds(everywhere) == {"non_inferiority"}

    record = _gate_on(spec, world, champion, np.arange(n) >= half, "those after the champion's cutoff")
    assert record.passed and record.candidate_metrics == everywhere.candidate_metrics
    [check] = [c for c in record.checks if c.kind == "non_inferiority"]
    assert check.comparison is not None and check.comparison.difference == pytest.approx(0.0)
    assert f"on {n - half} of {n} evaluation rows" in check.message
    assert (record.data.comparison_rows, record.data.comparison_note) == (
        n - half,
        "those after the champion's cutoff",
    )
    assert f"used {n - half} of these rows" in gate_table_markdown(record)


def test_a_subset_without_both_outcomes_fails_the_comparison_closed(spec: GateSpec, world: World) -> None:
    record = _gate_on(spec, world, world.weak, world.y == 0)
    assert _failed_kinds(record) == {"non_inferiority"}
    assert any("no fair comparison with the champion" in f for f in record.failures)
    with pytest.raises(InputError, match="comparison_rows has 3 entries"):
        _gate_on(spec, world, world.weak, np.ones(3, dtype=bool))
