"""A second model on another dataset needs only a new contract and a new spec, no code.

A tiny "churn" dataset of a different shape (other id, timestamp, target, features and sensitive
attribute) is declared in temporary folders (MLOPS_CONTRACTS_DIR, MLOPS_MODEL_SPECS_DIR), then
trained, gated, registered and served through exactly the same code as credit risk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.constants import ALIAS_CHALLENGER
from mlops.contracts import load_contract
from mlops.errors import ContractError
from mlops.lineage import LINEAGE_TAGS, TAG_APPLICATIONS_CONTRACT, TAG_OUTCOMES_CONTRACT, TAG_VERDICT
from mlops.model_spec import load_model_spec
from mlops.registry import make_registry
from mlops.settings import get_settings
from mlops.storage import make_store
from tests.training_helpers import ingest, run_train_tasks

pytestmark = pytest.mark.integration

CUSTOMERS = """
name: churn_customers
version: 0.1.0
description: Customer snapshots to score for churn.
columns:
  - {name: customer_id, role: id, dtype: string, unique: true}
  - {name: snapshot_at, role: timestamp, dtype: datetime}
  - {name: tenure_months, role: feature, dtype: int, min: 0, max: 240}
  - {name: monthly_charges, role: feature, dtype: float, min: 0, max: 500, nullable: true}
  - {name: plan, role: feature, dtype: category, categories: [basic, plus, pro]}
  - {name: support_calls, role: feature, dtype: int, min: 0, max: 50}
  - {name: age_band, role: sensitive, dtype: category, categories: [young, middle, senior]}
"""
LABELS = """
name: churn_labels
version: 0.1.0
columns:
  - {name: customer_id, role: id, dtype: string, unique: true}
  - {name: labelled_at, role: timestamp, dtype: datetime}
  - {name: churned, role: target, dtype: int, min: 0, max: 1}
"""
SPEC = """
name: churn-risk
description: Probability that a customer leaves within 90 days.
applications_contract: churn_customers
outcomes_contract: churn_labels
num_boost_round: 30
nthread: 1
seed: 7
training_window: {min_rows: 100}
evaluation: {newest_fraction: 0.3, min_rows: 50}
decision_policy: {threshold: 0.5, review_band: [0.4, 0.6]}
slices:
  - {name: plan, column: plan, values: [basic, plus, pro], min_rows: 10}
gates:
  floors: {auc: {min: 0.6}}
  non_inferiority: {n_bootstrap: 100}
"""


def _customers(batch: int, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(batch)
    start = pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(days=batch)
    calls = rng.poisson(2.0, n)
    tenure = rng.integers(0, 120, n)
    plan = rng.choice(["basic", "plus", "pro"], n)
    logit = -1.5 + 0.6 * calls - 0.03 * tenure + 0.8 * (plan == "basic")
    customers = pd.DataFrame(
        {
            "customer_id": [f"C{batch}-{i:05d}" for i in range(n)],
            "snapshot_at": start + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s"),
            "tenure_months": tenure,
            "monthly_charges": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(10, 200, n).round(2)),
            "plan": plan,
            "support_calls": calls,
            "age_band": rng.choice(["young", "middle", "senior"], n),
        }
    )
    labels = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "labelled_at": customers["snapshot_at"] + pd.Timedelta(days=90),
            "churned": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64"),
        }
    )
    return customers, labels


def _ingest_churn_history(batches: int = 3, rows: int = 300) -> None:
    """Validated customers and their labels, one batch a day, in the current home."""
    settings = get_settings()
    store = make_store(settings)
    customers_c = load_contract(settings.contracts_dir, "churn_customers")
    labels_c = load_contract(settings.contracts_dir, "churn_labels")
    for batch in range(batches):
        customers, labels = _customers(batch, rows)
        ingest(store, customers, customers_c, f"customers/{batch}.csv")
        ingest(store, labels, labels_c, f"labels/{batch}.csv")


def churn_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The churn contracts and spec in folders of their own, which the settings then read:
    (contracts folder, specs folder)."""
    contracts, specs = tmp_path / "contracts", tmp_path / "specs"
    contracts.mkdir()
    specs.mkdir()
    (contracts / "churn_customers.yaml").write_text(CUSTOMERS)
    (contracts / "churn_labels.yaml").write_text(LABELS)
    (specs / "churn-risk.yaml").write_text(SPEC)
    monkeypatch.setenv("MLOPS_CONTRACTS_DIR", str(contracts))
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(specs))
    return contracts, specs


@pytest.fixture
def churn_setup(mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return churn_files(tmp_path, monkeypatch)[1]


def test_a_churn_model_needs_only_a_contract_and_a_spec(churn_setup: Path) -> None:
    _ingest_churn_history()

    spec = load_model_spec("churn-risk")
    assert spec.feature_list == ["tenure_months", "monthly_charges", "plan", "support_calls"]
    assert spec.target_column == "churned" and spec.sensitive_column == "age_band"

    registered = run_train_tasks("churn-risk")
    assert registered.version == 1 and registered.alias == ALIAS_CHALLENGER
    registry = make_registry()
    tags = registry.version_tags("churn-risk", 1)
    assert set(LINEAGE_TAGS) <= set(tags) and tags[TAG_VERDICT] == "bootstrap"
    assert (
        tags[TAG_APPLICATIONS_CONTRACT] == "churn_customers" and tags[TAG_OUTCOMES_CONTRACT] == "churn_labels"
    )

    raw, _ = _customers(9, 20)
    raw = raw.astype({"tenure_months": str})  # numbers as text are accepted too
    scores = registry.load_model("churn-risk", ALIAS_CHALLENGER).predict(raw)
    assert scores.shape == (20,) and ((scores > 0) & (scores < 1)).all()
    heavy = registry.load_model("churn-risk", ALIAS_CHALLENGER).predict(raw.assign(support_calls=12))
    light = registry.load_model("churn-risk", ALIAS_CHALLENGER).predict(raw.assign(support_calls=0))
    assert heavy.mean() > light.mean()


def test_the_sensitive_attribute_of_another_dataset_is_refused_too(churn_setup: Path) -> None:
    spec = yaml.safe_load((churn_setup / "churn-risk.yaml").read_text())
    spec["features"] = ["tenure_months", "age_band"]
    (churn_setup / "churn-risk.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ContractError, match="'age_band' is a sensitive attribute"):
        load_model_spec("churn-risk")


def test_a_missing_value_in_a_nullable_high_stakes_column_goes_to_a_person(
    churn_setup: Path, prefect_harness: None, tmp_path: Path
) -> None:
    """The high-stakes rule on a nullable column: a row whose value is missing has stakes nobody
    knows, so a person reviews it (before: decided automatically, as if the stakes were low)."""
    from flows.score_batch import score_batch
    from mlops.audit import create_audit_engine, list_open_cases
    from mlops.promotion import bootstrap_champion

    spec = yaml.safe_load((churn_setup / "churn-risk.yaml").read_text())
    spec["decision_policy"]["high_stakes"] = {"column": "monthly_charges", "min": 180}
    spec["decision_policy"]["review_band"] = [0.5, 0.5]  # only the high-stakes rule routes here
    (churn_setup / "churn-risk.yaml").write_text(yaml.safe_dump(spec))
    _ingest_churn_history()
    assert run_train_tasks("churn-risk").version == 1
    bootstrap_champion(make_registry(), "churn-risk", approved_by="test")
    batch, _ = _customers(9, 200)
    batch.to_csv(tmp_path / "batch.csv", index=False)
    missing = set(batch.loc[batch["monthly_charges"].isna(), "customer_id"])
    high = set(batch.loc[batch["monthly_charges"] >= 180, "customer_id"])
    assert missing and high

    result = score_batch(source=str(tmp_path / "batch.csv"), model="churn-risk")

    assert result.accepted and result.rows_scored == 200
    cases = list_open_cases(create_audit_engine(get_settings().resolved_audit_db_url), "churn-risk")
    reasons = sorted({c.routing_reason for c in cases})
    assert reasons == ["high_stakes:monthly_charges missing", "high_stakes:monthly_charges>=180"]
    by_reason = {r: sum(c.routing_reason == r for c in cases) for r in reasons}
    assert by_reason["high_stakes:monthly_charges missing"] == len(missing)
    assert by_reason["high_stakes:monthly_charges>=180"] == len(high)
    assert result.routed_to_review == len(missing) + len(high)
