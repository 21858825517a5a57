"""Model specs: parsing, resolution against contracts (features, target, sensitive), policy, hash."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from mlops.contracts import load_contract
from mlops.errors import ContractError
from mlops.model_spec import (
    DecisionPolicy,
    ModelSpec,
    load_model_spec,
    model_spec_hash,
    resolve_model_spec,
)
from mlops.settings import DEFAULT_MODEL_SPECS_DIR, PROJECT_ROOT

pytestmark = pytest.mark.unit

CONTRACTS = PROJECT_ROOT / "data_contracts"


def _raw() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEFAULT_MODEL_SPECS_DIR / "credit-risk.yaml").read_text())


def _resolve(**changes: object) -> ModelSpec:
    raw = _raw() | changes
    spec = ModelSpec.model_validate(raw)
    return resolve_model_spec(
        spec,
        load_contract(CONTRACTS, "credit_applications"),
        load_contract(CONTRACTS, "credit_outcomes"),
    )


def test_repo_spec_defaults_to_contract_features_without_the_sensitive_one() -> None:
    spec = load_model_spec("credit-risk", contracts_dir=CONTRACTS)
    contract = load_contract(CONTRACTS, "credit_applications")
    assert spec.feature_list == contract.feature_columns
    assert "gender" not in spec.feature_list
    assert spec.target_column == "defaulted" and spec.sensitive_column == "gender"
    assert spec.booster_params()["tree_method"] == "hist" and spec.booster_params()["seed"] == spec.seed


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (["age", "gender"], "sensitive attribute and can never be a model feature"),
        (["age", "application_id"], "role 'id'"),
        (["age", "applied_at"], "role 'timestamp'"),
        (["age", "shoe_size"], "'shoe_size' is not a column"),
    ],
)
def test_bad_features_are_refused(features: list[str], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        _resolve(features=features)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ContractError) as err:
        _resolve(features=["gender", "shoe_size"], target="nope")
    text = str(err.value)
    assert "gender" in text and "shoe_size" in text and "'nope'" in text


def test_exclude_features_and_explicit_features() -> None:
    assert "region" not in _resolve(exclude_features=["region"]).feature_list
    assert _resolve(features=["age", "loan_amount"]).feature_list == ["age", "loan_amount"]
    with pytest.raises(ContractError, match="exclude_features"):
        _resolve(exclude_features=["gender"])


def test_slice_and_high_stakes_columns_must_exist() -> None:
    policy = _raw()["decision_policy"] | {"high_stakes": {"column": "nope", "min": 1}}
    with pytest.raises(ContractError, match="high_stakes column 'nope'"):
        _resolve(decision_policy=policy)
    with pytest.raises(ContractError, match="slice 'x' uses column 'nope'"):
        _resolve(slices=[{"name": "x", "column": "nope", "values": ["a"]}])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (  # a text column compared with min: every scoring batch would crash part way
            {
                "decision_policy": {
                    "threshold": 0.25,
                    "review_band": [0.18, 0.35],
                    "high_stakes": {"column": "region", "min": 1},
                }
            },
            "high_stakes column 'region' is a category column; the rule compares it with min",
        ),
        (  # misspelled groups would be "skipped" at every evaluation: their floors gate nothing
            {
                "slices": [
                    {"name": "jobs", "column": "employment_type", "values": ["salaried", "Self-Employed"]}
                ]
            },
            "slice 'jobs' lists value(s) ['Self-Employed'] that column 'employment_type' can never hold",
        ),
        (
            {"slices": [{"name": "regions", "column": "region", "bins": [0, 1, 2]}]},
            "slice 'regions' bins column 'region', a category column; bins need int or float",
        ),
        (
            {"slices": [{"name": "amounts", "column": "loan_amount", "values": ["big"]}]},
            "slice 'amounts' lists non-numeric value(s) ['big'] for the float column 'loan_amount'",
        ),
    ],
)
def test_a_spec_its_data_can_never_satisfy_is_refused_when_it_loads(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ContractError) as refused:
        _resolve(**changes)
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ({"floors": {"auc": {"min": 1.5}}}, "floors.auc: min 1.5 is above the largest possible auc (1.0)"),
        (
            {"slice_floors": {"ece": {"max": -0.1}}},
            "slice_floors.ece: max -0.1 is below the smallest possible ece",
        ),
        (
            {"floors": {"log_loss": {"max": -1}}},
            "floors.log_loss: max -1.0 is below the smallest possible log_loss",
        ),
    ],
)
def test_a_gate_no_model_can_pass_is_refused(gates: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModelSpec.model_validate(_raw() | {"gates": gates})
    ModelSpec.model_validate(_raw() | {"gates": {"floors": {"auc": {"min": 0.99}, "log_loss": {"max": 5}}}})


def test_an_unknown_xgboost_metric_is_refused_when_the_spec_is_read(tmp_path: Path) -> None:
    raw = _raw()
    raw["xgboost"] = raw["xgboost"] | {"eval_metric": "nosuchmetric"}
    (tmp_path / "credit-risk.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ContractError) as refused:
        load_model_spec("credit-risk", specs_dir=tmp_path, contracts_dir=CONTRACTS)
    # One line per problem, named by its place in the file, without pydantic's report.
    assert (
        "breaks the model-spec schema: xgboost.eval_metric: String should match pattern"
        in refused.value.message
    )
    assert "(got 'nosuchmetric')" in refused.value.message and "pydantic.dev" not in refused.value.message
    raw["xgboost"]["eval_metric"] = "error@0.3"
    (tmp_path / "credit-risk.yaml").write_text(yaml.safe_dump(raw))
    assert (
        load_model_spec("credit-risk", specs_dir=tmp_path, contracts_dir=CONTRACTS).xgboost.eval_metric
        == "error@0.3"
    )


@pytest.mark.parametrize("band", [(0.3, 0.4), (0.1, 0.2), (0.3, 0.1)])
def test_review_band_must_contain_the_threshold(band: tuple[float, float]) -> None:
    with pytest.raises(ValidationError, match="review_band"):
        DecisionPolicy(threshold=0.25, review_band=band)


def test_decision_policy_declines_and_routes_to_review() -> None:
    policy = DecisionPolicy.model_validate(
        {
            "threshold": 0.25,
            "review_band": [0.2, 0.3],
            "high_stakes": {"column": "loan_amount", "min": 50_000},
        }
    )
    p = np.array([0.1, 0.22, 0.25, 0.5, 0.1])
    amounts = np.array([1_000, 1_000, 1_000, 1_000, 60_000])
    assert policy.declines(p).tolist() == [False, False, True, True, False]
    assert policy.needs_review(p, amounts).tolist() == [False, True, True, False, True]


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="learning_rate"):
        ModelSpec.model_validate(_raw() | {"learning_rate": 0.1})


def test_specs_dir_is_read_from_the_environment_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _raw() | {"name": "credit-small", "num_boost_round": 7}
    (tmp_path / "credit-small.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path))
    assert load_model_spec("credit-small", contracts_dir=CONTRACTS).num_boost_round == 7
    with pytest.raises(ContractError, match=r"(?s)no model spec named 'credit-risk'.*credit-small"):
        load_model_spec("credit-risk", contracts_dir=CONTRACTS)


def test_name_in_file_must_match(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(_raw()))
    with pytest.raises(ContractError, match="declares name 'credit-risk'"):
        load_model_spec("other", specs_dir=tmp_path, contracts_dir=CONTRACTS)


def test_spec_hash_is_stable_and_sensitive_to_changes() -> None:
    a, b = _resolve(), _resolve()
    assert model_spec_hash(a) == model_spec_hash(b)
    assert model_spec_hash(_resolve(seed=43)) != model_spec_hash(a)


@pytest.mark.parametrize(
    "target",
    [
        {"dtype": "category", "categories": ["no", "yes"]},  # text labels: int64 cast crashed (exit 3)
        {"dtype": "float", "min": 0, "max": 1},  # 0.7 would be cut to 0
        {"dtype": "int"},  # unbounded: a 2 passes validation, then fails inside XGBoost
        {"dtype": "int", "min": 0, "max": 1, "nullable": True},
    ],
)
def test_a_target_that_is_not_a_binary_int_is_refused_when_the_spec_loads(
    target: dict[str, object], tmp_path: Path
) -> None:
    labels = {
        "name": "churn_labels",
        "version": "0.1.0",
        "columns": [
            {"name": "customer_id", "role": "id", "dtype": "string", "unique": True},
            {"name": "churned", "role": "target"} | target,
        ],
    }
    (tmp_path / "churn_labels.yaml").write_text(yaml.safe_dump(labels))
    spec = ModelSpec.model_validate(_raw() | {"outcomes_contract": "churn_labels"})
    with pytest.raises(ContractError) as refused:
        resolve_model_spec(
            spec, load_contract(CONTRACTS, "credit_applications"), load_contract(tmp_path, "churn_labels")
        )
    assert "target 'churned' of 'churn_labels' is declared" in refused.value.message
    assert "{dtype: int, min: 0, max: 1} and not nullable" in refused.value.message
    labels["columns"][1] = {"name": "churned", "role": "target", "dtype": "int", "min": 0, "max": 1}
    (tmp_path / "churn_labels.yaml").write_text(yaml.safe_dump(labels))
    resolved = resolve_model_spec(
        spec, load_contract(CONTRACTS, "credit_applications"), load_contract(tmp_path, "churn_labels")
    )
    assert resolved.target_column == "churned"


def test_id_columns_of_another_dtype_than_the_applications_are_refused(tmp_path: Path) -> None:
    """An int id joined to text outcome ids gave training 0 labelled rows ("wait for more
    outcomes") while the audit trail, keying 7 and "7" alike, matched the same outcomes."""
    labels = yaml.safe_load((CONTRACTS / "credit_outcomes.yaml").read_text())
    labels["columns"][0] = {"name": "app_ref", "role": "id", "dtype": "int", "unique": True}
    (tmp_path / "credit_outcomes.yaml").write_text(yaml.safe_dump(labels))
    with pytest.raises(ContractError) as refused:
        resolve_model_spec(
            ModelSpec.model_validate(_raw()),
            load_contract(CONTRACTS, "credit_applications"),
            load_contract(tmp_path, "credit_outcomes"),
        )
    assert (
        "id column 'application_id' of 'credit_applications' is string but id column 'app_ref' of "
        "'credit_outcomes' is int" in refused.value.message
    )
    labels["columns"][0] = {"name": "app_ref", "role": "id", "dtype": "string", "unique": True}
    (tmp_path / "credit_outcomes.yaml").write_text(yaml.safe_dump(labels))
    resolved = resolve_model_spec(
        ModelSpec.model_validate(_raw()),
        load_contract(CONTRACTS, "credit_applications"),
        load_contract(tmp_path, "credit_outcomes"),
    )
    assert resolved.target_column == "defaulted"  # another id name is fine: joined by role


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        (  # crashed every training run: int - timedelta (exit 3)
            {"name": "applied_at", "role": "timestamp", "dtype": "int", "min": 0},
            "training_window.last_days needs a datetime timestamp column in 'credit_applications' "
            "('applied_at' is int)",
        ),
        (None, "training_window.last_days needs a datetime timestamp column in 'credit_applications';"),
    ],
)
def test_last_days_without_a_datetime_timestamp_is_refused(
    timestamp: dict[str, object] | None, message: str, tmp_path: Path
) -> None:
    apps = yaml.safe_load((CONTRACTS / "credit_applications.yaml").read_text())
    apps["columns"] = [c for c in apps["columns"] if c["name"] != "applied_at"]
    if timestamp is not None:
        apps["columns"].append(timestamp)
    (tmp_path / "credit_applications.yaml").write_text(yaml.safe_dump(apps))
    spec = ModelSpec.model_validate(_raw())
    assert spec.training_window.last_days is not None  # the shipped spec counts back 180 days
    outcomes = load_contract(CONTRACTS, "credit_outcomes")
    with pytest.raises(ContractError) as refused:
        resolve_model_spec(spec, load_contract(tmp_path, "credit_applications"), outcomes)
    assert message in refused.value.message
    windowless = ModelSpec.model_validate(_raw() | {"training_window": {"last_snapshots": 30}})
    resolve_model_spec(windowless, load_contract(tmp_path, "credit_applications"), outcomes)
