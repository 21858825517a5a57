"""The contracts in data_contracts/ and the GX suites compiled from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.contracts import Contract, load_contract, suite_path
from mlops.errors import ContractError
from mlops.gx_suite import (
    GXRunner,
    build_suite,
    check_compiled_suite,
    compile_expectations,
    compiled_suite_document,
)
from mlops.settings import PROJECT_ROOT

pytestmark = pytest.mark.data
CONTRACTS = PROJECT_ROOT / "data_contracts"
NAMES = sorted(p.stem for p in CONTRACTS.glob("*.yaml"))


@pytest.mark.parametrize("name", NAMES)
def test_committed_suite_agrees_with_contract(name: str) -> None:
    contract = load_contract(CONTRACTS, name)
    check_compiled_suite(contract, CONTRACTS)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_suite_is_a_valid_gx_suite_covering_every_rule(name: str) -> None:
    contract = load_contract(CONTRACTS, name)
    GXRunner()  # suites need an active GX context
    suite = build_suite(contract)
    kinds = {(e.expectation_type if hasattr(e, "expectation_type") else e.type) for e in suite.expectations}
    assert "expect_column_to_exist" in kinds
    exist_cols = {
        e["kwargs"]["column"] for e in compile_expectations(contract) if e["type"] == "expect_column_to_exist"
    }
    assert exist_cols == set(contract.column_names)
    for col in contract.columns:
        related = {e["type"] for e in compile_expectations(contract) if e["kwargs"].get("column") == col.name}
        assert ("expect_column_values_to_not_be_null" in related) == (not col.nullable)
        assert ("expect_column_values_to_be_unique" in related) == col.unique
        assert ("expect_column_values_to_be_in_set" in related) == (col.categories is not None)


def test_stale_suite_is_detected(tmp_path: Path) -> None:
    contract = load_contract(CONTRACTS, "credit_outcomes")
    doc = compiled_suite_document(contract)
    doc["expectations"] = doc["expectations"][:-1]
    suite_path(tmp_path, contract.name).write_text(json.dumps(doc))
    with pytest.raises(ContractError, match="out of date"):
        check_compiled_suite(contract, tmp_path)
    with pytest.raises(ContractError, match="missing"):
        check_compiled_suite(contract, tmp_path / "elsewhere")


def test_mostly_follows_the_quarantine_limit() -> None:
    contract = load_contract(CONTRACTS, "credit_applications")

    def mostly(share: float | None) -> dict[str, set[float]]:
        found: dict[str, set[float]] = {}
        for e in compile_expectations(contract, share):
            if isinstance(e["kwargs"].get("mostly"), float):  # a nullable column's: a parameter
                found.setdefault(e["type"], set()).add(e["kwargs"]["mostly"])
        return found

    limit = contract.max_quarantine_share
    unique = "expect_column_values_to_be_unique"
    others = {t: m for t, m in mostly(None).items() if t != unique}
    assert others and all(m == {round(1 - limit, 6)} for m in others.values())
    # GX counts both copies of a repeated id, the quarantine only the repeat: twice the share.
    assert mostly(None)[unique] == {round(1 - 2 * limit, 6)}
    assert mostly(0.2)[unique] == {0.6} and mostly(0.2)["expect_column_values_to_not_be_null"] == {0.8}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: x\nversion: '1'\ncolumns: [{name: a, role: feature, dtype: int}]", "exactly one id column"),
        (
            "name: x\nversion: '1'\ncolumns: [{name: i, role: id, dtype: string}, "
            "{name: a, role: feature, dtype: int, min: 5, max: 1}]",
            "above max",
        ),
        (
            "name: x\nversion: '1'\ncolumns: [{name: i, role: id, dtype: string}, "
            "{name: c, role: feature, dtype: category}]",
            "must list its categories",
        ),
        ("name: x\nversion: '1'\ncolumns: [{name: i, role: id, dtype: string, colour: red}]", "colour"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_bad_contract_files_get_clear_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(yaml_text)
    with pytest.raises(ContractError, match=message):
        load_contract(tmp_path, "x")


def test_unknown_contract_names_the_known_ones() -> None:
    with pytest.raises(ContractError, match="credit_applications"):
        load_contract(CONTRACTS, "no_such_contract")


def test_roles_are_exposed() -> None:
    contract: Contract = load_contract(CONTRACTS, "credit_applications")
    assert contract.id_column == "application_id"
    assert contract.timestamp_column == "applied_at"
    assert "gender" in contract.sensitive_columns and "gender" not in contract.feature_columns
    assert len(contract.feature_columns) >= 15
    assert load_contract(CONTRACTS, "credit_outcomes").target_column == "defaulted"
