"""The credit-application simulator: contract fit, determinism, scenarios and ground truth."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from mlops.contracts import Contract, load_contract
from mlops.errors import InputError
from mlops.settings import PROJECT_ROOT
from mlops.simulator import (
    BASE_RISK,
    CATEGORIES,
    DEFECT_KINDS,
    FEATURE_COLUMNS,
    LABEL_FEATURES,
    MANIFEST_FILE,
    SCENARIOS,
    Manifest,
    SimulationConfig,
    default_logit,
    generate_applications,
    label_shift_target_rate,
    load_manifest,
    simulate,
    true_default_probability,
)

pytestmark = pytest.mark.unit

CONTRACTS_DIR = PROJECT_ROOT / "data_contracts"


@pytest.fixture(scope="module")
def applications_contract() -> Contract:
    return load_contract(CONTRACTS_DIR, "credit_applications")


@pytest.fixture(scope="module")
def outcomes_contract() -> Contract:
    return load_contract(CONTRACTS_DIR, "credit_outcomes")


@pytest.fixture(scope="module")
def stable_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("stable")
    config = SimulationConfig(scenario="stable", days=3, rows_per_day=1500, seed=7)
    return out, simulate(config, out)


@pytest.fixture(scope="module")
def incident_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("incident")
    config = SimulationConfig(scenario="data_quality_incident", days=3, drift_day=1, rows_per_day=1000)
    return out, simulate(config, out)


def _read_raw(path: Path) -> pd.DataFrame:
    """Read a batch as it arrived: CSV cells stay text, only empty cells are missing."""
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return pd.read_parquet(path)


def _defect_rows(raw: pd.DataFrame, contract: Contract) -> dict[str, list[int]]:
    """Independent check of a raw batch against the contract: failing rows per defect kind."""
    found: dict[str, set[int]] = {kind: set() for kind in DEFECT_KINDS}

    def mark(kind: str, mask: np.ndarray) -> None:
        found[kind].update(np.flatnonzero(mask).tolist())

    for col in contract.columns:
        values = raw[col.name]
        present = values.notna().to_numpy()
        if not col.nullable:
            mark("null_required", ~present)
        if col.dtype in ("int", "float"):
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            mark("wrong_type", present & np.isnan(numbers))
            with np.errstate(invalid="ignore"):
                mark("out_of_range", (numbers < col.min) | (numbers > col.max))
                if col.dtype == "int":
                    mark("wrong_type", ~np.isnan(numbers) & (np.floor(numbers) != numbers))
        elif col.dtype == "datetime":
            stamps = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
            mark("wrong_type", present & stamps.isna().to_numpy())
        if col.categories is not None:
            mark("unseen_category", present & ~values.isin(col.categories).to_numpy())
        if col.unique:
            mark("duplicate_id", present & values.duplicated(keep="first").to_numpy())
    return {kind: sorted(rows) for kind, rows in found.items() if rows}


def _with(config: SimulationConfig, **changes: object) -> SimulationConfig:
    """A validated copy (``model_copy`` would skip validation)."""
    return SimulationConfig.model_validate({**config.model_dump(), **changes})


def _psi(reference: pd.Series, current: pd.Series) -> float:
    """Population stability index: quantile bins of the reference (categories as bins), NaN its own bin."""
    if isinstance(reference.dtype, pd.CategoricalDtype):
        ref_bins, cur_bins = reference.astype(str), current.astype(str)
    else:
        ref = reference.astype(float)
        edges = np.unique(np.nanquantile(ref, np.linspace(0, 1, 11)[1:-1]))
        ref_bins = pd.Series(np.digitize(ref, edges)).where(ref.notna().to_numpy(), -1)
        cur = current.astype(float)
        cur_bins = pd.Series(np.digitize(cur, edges)).where(cur.notna().to_numpy(), -1)
    p = ref_bins.value_counts(normalize=True)
    q = cur_bins.value_counts(normalize=True).reindex(p.index.union(cur_bins.unique()), fill_value=0)
    p = p.reindex(q.index, fill_value=0)
    p, q = p.clip(lower=1e-4), q.clip(lower=1e-4)
    return float(((q - p) * np.log(q / p)).sum())


# --- Config ------------------------------------------------------------------------------------


def test_config_defaults_derive_the_drift_day() -> None:
    config = SimulationConfig(scenario="covariate_shift", days=10)
    assert (config.drift_day, config.seed, config.rows_per_day) == (5, 42, 2000)
    assert (config.outcome_delay_days, config.file_format, config.incident_share) == (7, "csv", 0.08)
    assert SimulationConfig(days=1).drift_day == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 10, "drift_day": 10}, "drift_day 10 is outside 0..9"),
        ({"days": 10, "drift_day": -1}, "drift_day -1 is outside 0..9"),
        ({"scenario": "sudden_drift"}, "known scenarios: stable, covariate_shift, concept_drift"),
        ({"days": 0}, "greater than or equal to 1"),
        ({"file_format": "xlsx"}, "'csv' or 'parquet'"),
        ({"incident_share": 0.0}, "greater than 0"),
        ({"seed": -1}, "greater than or equal to 0"),
        ({"rows": 10}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values_clearly(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SimulationConfig.model_validate(kwargs)


@pytest.mark.parametrize(("n_rows", "day"), [(0, 0), (-5, 0), (10, -1), (10_000_000, 0)])
def test_generate_applications_rejects_bad_arguments(n_rows: int, day: int) -> None:
    with pytest.raises(InputError) as info:
        generate_applications(n_rows, day, SimulationConfig())
    assert info.value.hint


# --- Contract fit and realism ----------------------------------------------------------------


def test_clean_batches_fit_the_contracts_exactly(
    stable_run: tuple[Path, Manifest], applications_contract: Contract, outcomes_contract: Contract
) -> None:
    out, manifest = stable_run
    assert list(FEATURE_COLUMNS) == applications_contract.feature_columns
    assert len(applications_contract.feature_columns) == 19
    for col, cats in CATEGORIES.items():
        assert cats == applications_contract.column(col).categories
    all_ids: list[str] = []
    for entry in manifest.applications:
        raw = _read_raw(out / entry.path)
        assert list(raw.columns) == applications_contract.column_names
        assert _defect_rows(raw, applications_contract) == {}  # ranges, categories, nulls, ids
        nullable = {c.name for c in applications_contract.columns if c.nullable}
        assert set(raw.columns[raw.isna().any()]) == nullable  # every nullable column has some gaps
        stamps = pd.to_datetime(raw["applied_at"], utc=True, format="ISO8601")
        assert (stamps.dt.date == entry.date).all() and stamps.is_monotonic_increasing
        assert raw["application_id"].str.fullmatch(rf"APP-{entry.day:04d}-\d{{7}}").all()
        all_ids += raw["application_id"].tolist()
        outcomes = _read_raw(out / manifest.outcomes[entry.day].path)
        assert list(outcomes.columns) == outcomes_contract.column_names
        assert _defect_rows(outcomes, outcomes_contract) == {}
    assert len(all_ids) == len(set(all_ids)) == 3 * 1500


def test_missingness_follows_its_causes() -> None:
    frame, _ = generate_applications(20_000, 0, SimulationConfig(seed=3))
    months = frame["months_since_last_delinquency"]
    delinquent = frame["num_delinquencies_2y"] > 0
    assert months[delinquent].notna().all() and months.isna().mean() > 0.5
    assert months[~delinquent].isna().mean() > 0.75
    assert (frame["debt_to_income"].isna() == frame["annual_income"].isna()).all()
    assert 0.02 < frame["annual_income"].isna().mean() < 0.15
    thin_young = frame.loc[frame["age"] < 23, "credit_score"].isna().mean()
    thin_older = frame.loc[frame["age"] >= 30, "credit_score"].isna().mean()
    assert thin_young > 3 * thin_older


def test_features_are_correlated_like_credit_data() -> None:
    frame, _ = generate_applications(20_000, 0, SimulationConfig(seed=3))
    num = frame[["annual_income", "loan_amount", "credit_score", "interest_rate", "revolving_utilization"]]
    corr = num.astype(float).corr()
    assert corr.loc["credit_score", "interest_rate"] < -0.5
    assert corr.loc["annual_income", "loan_amount"] > 0.3
    assert corr.loc["credit_score", "revolving_utilization"] < -0.3
    small_business = frame["loan_purpose"] == "small_business"
    assert frame.loc[small_business, "employment_type"].eq("self_employed").mean() > 0.3


# --- Determinism -------------------------------------------------------------------------------


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, file_format: str) -> None:
    config = SimulationConfig.model_validate(
        {"scenario": "data_quality_incident", "days": 2, "rows_per_day": 300, "file_format": file_format}
    )
    simulate(config, tmp_path / "a")
    simulate(config, tmp_path / "b")
    simulate(_with(config, seed=43), tmp_path / "c")
    first, second, other = (_file_bytes(tmp_path / x) for x in "abc")
    assert len(first) == 5 and first == second
    assert first[f"applications/day_0000.{file_format}"] != other[f"applications/day_0000.{file_format}"]


def test_a_day_does_not_depend_on_how_many_days_were_generated(tmp_path: Path) -> None:
    simulate(SimulationConfig(days=1, rows_per_day=300), tmp_path / "one")
    simulate(SimulationConfig(days=4, rows_per_day=300), tmp_path / "four")
    day0 = "applications/day_0000.csv"
    assert (tmp_path / "one" / day0).read_bytes() == (tmp_path / "four" / day0).read_bytes()


# --- The label ---------------------------------------------------------------------------------


def test_stable_base_rate_is_realistic(stable_run: tuple[Path, Manifest]) -> None:
    _, labels = generate_applications(30_000, 0, SimulationConfig(seed=11))
    assert 0.05 < labels.mean() < 0.20
    assert all(0.05 < rate < 0.20 for rate in stable_run[1].default_rate_by_day)


def test_documented_interaction_holds() -> None:
    """DTI x utilisation: the joint effect exceeds the sum of the single effects by the coefficient."""
    frame, _ = generate_applications(50, 0, SimulationConfig())
    row = frame.iloc[[0] * 4].reset_index(drop=True)
    row["debt_to_income"] = [0.2, 0.6, 0.2, 0.6]
    row["revolving_utilization"] = [0.3, 0.3, 0.8, 0.8]
    low_low, high_low, low_high, high_high = default_logit(row, BASE_RISK)
    contrast = (high_high - low_high) - (high_low - low_low)
    assert contrast == pytest.approx(BASE_RISK.dti_x_utilization)


def _design(frame: pd.DataFrame, columns: pd.Index | None = None) -> pd.DataFrame:
    """Raw features for a linear model: numbers (median-filled, with missing flags) and one-hot categories."""
    num = frame[[c for c in FEATURE_COLUMNS if c not in CATEGORIES]].astype(float)
    flags = num.isna().astype(float).add_suffix("_missing")
    cats = pd.get_dummies(frame[[c for c in FEATURE_COLUMNS if c in CATEGORIES]].astype(str), dtype=float)
    out = pd.concat([num.fillna(num.median()), flags, cats], axis=1)
    return out if columns is None else out.reindex(columns=columns, fill_value=0.0)


def test_label_is_nonlinear_boosting_beats_logistic_regression() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from threadpoolctl import threadpool_limits

    config = SimulationConfig(seed=1, days=2)
    train, y_train = generate_applications(20_000, 0, config)
    test, y_test = generate_applications(20_000, 1, config)
    x_train = _design(train)
    x_test = _design(test, x_train.columns)
    mean, std = x_train.mean(), x_train.std().replace(0.0, 1.0)
    with threadpool_limits(1):  # fast and stable under a busy machine
        linear = LogisticRegression(max_iter=1000).fit((x_train - mean) / std, y_train)
        p_linear = linear.predict_proba((x_test - mean) / std)[:, 1]
        boosted = HistGradientBoostingClassifier(
            max_iter=100, max_leaf_nodes=8, early_stopping=False, random_state=0
        ).fit(x_train, y_train)
        p_boosted = boosted.predict_proba(x_test)[:, 1]
    auc_linear, auc_boosted = roc_auc_score(y_test, p_linear), roc_auc_score(y_test, p_boosted)
    assert auc_boosted > auc_linear + 0.007
    assert log_loss(y_test, p_boosted) < log_loss(y_test, p_linear) - 0.006


def test_gender_never_enters_the_label() -> None:
    config = SimulationConfig()
    frame, _ = generate_applications(2_000, 0, config)
    shuffled = frame.copy()
    shuffled["gender"] = frame["gender"].sample(frac=1.0, random_state=0).to_numpy()
    pd.testing.assert_series_equal(
        true_default_probability(frame, 0, config), true_default_probability(shuffled, 0, config)
    )
    assert "gender" not in LABEL_FEATURES


# --- Scenarios ---------------------------------------------------------------------------------


def test_covariate_shift_moves_declared_features_from_drift_day_on(tmp_path: Path) -> None:
    stable = SimulationConfig(scenario="stable", days=4, drift_day=2)
    shifted = _with(stable, scenario="covariate_shift")
    before, _ = generate_applications(3_000, 1, shifted)
    assert before.equals(generate_applications(3_000, 1, stable)[0])
    reference, _ = generate_applications(3_000, 3, stable)
    after, _ = generate_applications(3_000, 3, shifted)
    manifest = simulate(_with(shifted, rows_per_day=50), tmp_path)
    assert manifest.drifted_features == [
        "annual_income",
        "credit_score",
        "loan_purpose",
        "application_channel",
    ]
    for feature in manifest.drifted_features:
        assert _psi(reference[feature], after[feature]) > 0.1, feature
    assert after["annual_income"].mean() < 0.85 * reference["annual_income"].mean()
    assert after["credit_score"].mean() < reference["credit_score"].mean() - 25
    assert (after["application_channel"] == "broker").mean() > (
        reference["application_channel"] == "broker"
    ).mean()
    untouched = (
        set(FEATURE_COLUMNS) - set(manifest.drifted_features) - set(manifest.indirectly_drifted_features)
    )
    for feature in untouched:
        assert _psi(reference[feature], after[feature]) < 0.02, feature


def test_concept_drift_keeps_features_and_changes_the_relationship() -> None:
    stable = SimulationConfig(scenario="stable", days=4, drift_day=2)
    concept = _with(stable, scenario="concept_drift")
    for day in (1, 3):
        frame, labels = generate_applications(20_000, day, concept)
        ref_frame, ref_labels = generate_applications(20_000, day, stable)
        assert frame.equals(ref_frame)  # identical feature rows
        if day == 1:
            pd.testing.assert_series_equal(labels, ref_labels)
    assert abs(labels.mean() - ref_labels.mean()) < 0.02  # not a label shift

    def rate(y: pd.Series, mask: pd.Series) -> float:
        return float(y[mask.to_numpy()].mean())

    small_business = frame["loan_purpose"] == "small_business"
    stressed = (frame["debt_to_income"] > 0.4) & (frame["revolving_utilization"] > 0.6)
    young_mobile = (frame["age"] < 30) & (frame["application_channel"] == "mobile")
    assert rate(labels, small_business) < rate(ref_labels, small_business) - 0.05
    assert rate(labels, stressed) < rate(ref_labels, stressed) - 0.1
    assert rate(labels, young_mobile) > rate(ref_labels, young_mobile) + 0.05


def test_label_shift_moves_the_base_rate_and_keeps_class_profiles() -> None:
    config = SimulationConfig(scenario="label_shift", days=4, drift_day=2)
    before, y_before = generate_applications(20_000, 1, config)
    after, y_after = generate_applications(20_000, 3, config)
    target = label_shift_target_rate(config.drift_strength)
    assert 0.08 < y_before.mean() < 0.12
    assert target == pytest.approx(0.2, abs=0.01)
    assert y_after.mean() == pytest.approx(target, abs=0.015)
    for cls in (0, 1):  # P(features | default) unchanged
        score_before = before.loc[(y_before == cls).to_numpy(), "credit_score"].mean()
        score_after = after.loc[(y_after == cls).to_numpy(), "credit_score"].mean()
        assert abs(score_before - score_after) < 6


def test_incident_defects_match_the_manifest(
    incident_run: tuple[Path, Manifest], applications_contract: Contract
) -> None:
    out, manifest = incident_run
    first, *drifted = manifest.applications
    assert _defect_rows(_read_raw(out / first.path), applications_contract) == {}
    assert first.defects == {} and not first.drifted
    for entry in drifted:
        raw = _read_raw(out / entry.path)
        found = _defect_rows(raw, applications_contract)
        assert found == entry.defect_rows
        assert set(entry.defects) == set(DEFECT_KINDS) and min(entry.defects.values()) > 0
        assert sum(entry.defects.values()) == round(0.08 * 1000)
        assert entry.rows == len(raw) == 1000 + entry.defects["duplicate_id"]
        assert sum(entry.defects.values()) / entry.rows > applications_contract.max_quarantine_share
        for kind, columns in entry.defect_columns.items():
            assert sum(columns.values()) == entry.defects[kind]
    assert manifest.defects_total == {k: sum(e.defects.get(k, 0) for e in drifted) for k in DEFECT_KINDS}


def test_wrong_type_text_survives_in_csv(incident_run: tuple[Path, Manifest]) -> None:
    out, manifest = incident_run
    entry = manifest.applications[2]
    raw = _read_raw(out / entry.path)
    wrong = raw.iloc[entry.defect_rows["wrong_type"]]
    texts = [v for col in entry.defect_columns["wrong_type"] for v in wrong[col].dropna()]
    assert any(re.fullmatch(r"\d{1,3}(,\d{3})+|n/a|\d+ years|\d+\.\d%", t) for t in texts)


def test_incident_share_is_configurable(tmp_path: Path) -> None:
    config = SimulationConfig(
        scenario="data_quality_incident", days=1, rows_per_day=500, incident_share=0.2, file_format="parquet"
    )
    manifest = simulate(config, tmp_path)
    entry = manifest.applications[0]
    assert sum(entry.defects.values()) == 100
    schema = pq.read_schema(tmp_path / entry.path)
    for column in entry.defect_columns["wrong_type"]:
        field_type = schema.field(column).type  # wrong-type text makes a string column
        assert pa.types.is_string(field_type) or pa.types.is_large_string(field_type), column
    assert pa.types.is_int64(schema.field("num_delinquencies_2y").type)
    contract = load_contract(CONTRACTS_DIR, "credit_applications")
    assert _defect_rows(_read_raw(tmp_path / entry.path), contract) == entry.defect_rows


# --- Outcomes and manifest ---------------------------------------------------------------------


def test_outcomes_join_one_to_one_and_arrive_after_the_delay(stable_run: tuple[Path, Manifest]) -> None:
    out, manifest = stable_run
    for app, outcome in zip(manifest.applications, manifest.outcomes, strict=True):
        applications = _read_raw(out / app.path)
        outcomes = _read_raw(out / outcome.path)
        joined = applications.merge(
            outcomes, on="application_id", how="outer", validate="one_to_one", indicator=True
        )
        assert (joined["_merge"] == "both").all() and len(joined) == app.rows == outcome.rows
        assert outcome.application_day == app.day and outcome.arrival_day == app.day + 7
        observed = pd.to_datetime(outcomes["observed_at"], utc=True, format="ISO8601")
        assert (observed.dt.date == outcome.arrival_date).all()
        defaulted = outcomes["defaulted"].astype(int)
        assert set(defaulted.unique()) <= {0, 1}
        assert defaulted.mean() == pytest.approx(app.default_rate) == pytest.approx(outcome.default_rate)


def test_incident_outcomes_cover_each_application_once(incident_run: tuple[Path, Manifest]) -> None:
    out, manifest = incident_run
    for app, outcome in zip(manifest.applications, manifest.outcomes, strict=True):
        ids = _read_raw(out / app.path)["application_id"]
        outcome_ids = _read_raw(out / outcome.path)["application_id"]
        assert outcome_ids.is_unique and set(outcome_ids) == set(ids)
        assert outcome.rows == app.unique_applications == 1000


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifest_records_the_ground_truth(tmp_path: Path, scenario: str) -> None:
    config = SimulationConfig.model_validate(
        {"scenario": scenario, "days": 3, "rows_per_day": 200, "outcome_delay_days": 2}
    )
    manifest = simulate(config, tmp_path)
    assert load_manifest(tmp_path) == manifest
    assert (manifest.scenario, manifest.seed, manifest.days, manifest.outcome_delay_days) == (
        scenario,
        42,
        3,
        2,
    )
    assert manifest.drift_day == (None if scenario == "stable" else 1)
    assert [a.drifted for a in manifest.applications] == [False, scenario != "stable", scenario != "stable"]
    assert [o.arrival_day for o in manifest.outcomes] == [2, 3, 4]
    assert manifest.default_rate_by_day == [a.default_rate for a in manifest.applications]
    assert all(a.rows == 200 + a.defects.get("duplicate_id", 0) for a in manifest.applications)
    assert all((tmp_path / f.path).is_file() for f in [*manifest.applications, *manifest.outcomes])
    assert bool(manifest.drifted_features) == (scenario == "covariate_shift")
    assert bool(manifest.changed_relationship) == (scenario == "concept_drift")
    assert (manifest.target_default_rate is not None) == (scenario == "label_shift")
    assert bool(manifest.defects_total) == (scenario == "data_quality_incident")
    if scenario == "concept_drift":
        assert manifest.changed_relationship["dti_x_utilization"] == {"before": 2.0, "after": 0.0}


def test_simulate_refuses_a_non_empty_folder_unless_asked(tmp_path: Path) -> None:
    config = SimulationConfig(days=2, rows_per_day=50)
    simulate(config, tmp_path)
    with pytest.raises(InputError, match="not empty"):
        simulate(config, tmp_path)
    manifest = simulate(SimulationConfig(days=1, rows_per_day=50), tmp_path, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "applications").iterdir()) == ["day_0000.csv"]
    assert load_manifest(tmp_path) == manifest
    (tmp_path / MANIFEST_FILE).unlink()
    with pytest.raises(InputError, match="no simulation manifest"):
        load_manifest(tmp_path)


def test_an_output_folder_that_cannot_be_created_is_an_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot be created"):
        simulate(SimulationConfig(days=1, rows_per_day=10), blocker / "sub")
