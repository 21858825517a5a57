"""The rebuild's pure parts: what changed since a training run, and what explains a difference."""

from __future__ import annotations

from typing import Any

import pytest

from mlops.contracts import load_contract
from mlops.errors import StorageIntegrityError, WorkRefused
from mlops.lineage import GitState, Lineage
from mlops.model_spec import load_model_spec, model_spec_hash, spec_document_sha256
from mlops.rebuild import package_changes, rebuild_plan, rebuild_result, rebuild_text
from mlops.settings import PROJECT_ROOT

FILES = "f" * 64  # the registered files' fingerprint (the lineage's, unaltered)
CONTRACTS = PROJECT_ROOT / "data_contracts"


def _lineage(**changes: Any) -> Lineage:
    base: dict[str, Any] = {
        "application_snapshots": ["a" * 64],
        "outcome_snapshots": ["b" * 64],
        "applications_contract": "credit_applications",
        "applications_contract_versions": [load_contract(CONTRACTS, "credit_applications").version],
        "outcomes_contract": "credit_outcomes",
        "outcomes_contract_versions": [load_contract(CONTRACTS, "credit_outcomes").version],
        "git": GitState(commit="c1", dirty=False),
        "model_spec": "credit-risk",
        "model_spec_sha256": "s",
        "packages": ["numpy==2.0.0", "xgboost==3.2.0"],
        "seed": 42,
        "flow_run_id": None,
        "compared_with_champion": None,
        "model_fingerprint": "f" * 64,
        "training_rows": 100,
        "evaluation_rows": 25,
    }
    return Lineage(**{**base, **changes})


def _plan(lineage: Lineage) -> Any:
    spec = load_model_spec("credit-risk", contracts_dir=CONTRACTS).model_dump(mode="json")
    lineage = lineage.model_copy(update={"model_spec_sha256": spec_document_sha256(spec)})
    tags = lineage.tags()
    return rebuild_plan(
        "credit-risk", 3, tags, "run", lineage.model_dump(mode="json"), spec, registered_fingerprint=FILES
    )


SAME_PACKAGES = ["numpy==2.0.0", "xgboost==3.2.0"]


def _result(
    plan: Any,
    fingerprint: str,
    rows: int = 100,
    evaluation_rows: int = 25,
    git: GitState | None = None,
    packages: list[str] | None = None,
) -> Any:
    contracts = (load_contract(CONTRACTS, "credit_applications"), load_contract(CONTRACTS, "credit_outcomes"))
    return rebuild_result(
        plan,
        fingerprint=fingerprint,
        training_rows=rows,
        evaluation_rows=evaluation_rows,
        git_now=git or GitState(commit="c1", dirty=False),
        packages_now=packages or SAME_PACKAGES,
        contracts=contracts,
    )


def test_package_changes_name_each_version_that_came_went_or_moved() -> None:
    assert package_changes(["a==1", "B==2", "c==3"], ["a==1", "b==2.1", "d==4"]) == [
        "b: 2 -> 2.1",
        "c: 3 -> not installed",
        "d: not installed -> 4",
    ]
    assert package_changes(["a==1"], ["a==1"]) == []


def test_a_different_rebuild_names_its_likely_causes_and_an_identical_one_none() -> None:
    plan = _plan(_lineage())
    same = _result(plan, "f" * 64)
    assert same.identical and same.likely_causes == [] and same.package_changes == []
    other = _result(
        plan,
        "e" * 64,
        rows=99,
        git=GitState(commit="c2", dirty=True),
        packages=["numpy==2.0.0", "xgboost==3.1.0"],
    )
    assert not other.identical
    assert other.package_changes == ["xgboost: 3.2.0 -> 3.1.0"] and other.contract_changes == []
    causes = " | ".join(other.likely_causes)
    for text in (
        "99 training and 25 evaluation rows, not 100 and 25",
        "1 installed package(s) differ",
        "at c2, not c1",
        "uncommitted",
    ):
        assert text in causes
    older = plan.model_copy(update={"lineage": _lineage(applications_contract_versions=["0.9.0"])})
    moved = _result(older, "e" * 64)
    version = load_contract(CONTRACTS, "credit_applications").version
    assert moved.contract_changes == [f"credit_applications: 0.9.0 -> {version}"]
    assert moved.likely_causes == ["the data contracts changed since"]
    # Bit-identical, but the lineage's data gave other rows (one more evaluation row): said so.
    extra = _result(plan, "f" * 64, evaluation_rows=26)
    assert extra.identical and not extra.rows_match
    assert extra.likely_causes == [
        "the lineage's data gave 100 training and 26 evaluation rows, not 100 and 25: a snapshot the "
        "run read gave no row of its own but decided which copy of a twice-sent application was "
        "kept, or the contracts changed"
    ]
    assert "ROWS DIFFER" in rebuild_text(extra) and "26 evaluation rows, 100 and 25 recorded" in rebuild_text(
        extra
    )
    assert _result(plan, "e" * 64).likely_causes == [
        "nothing recorded differs: another machine (CPU) or a nondeterministic setting"
    ]


def test_a_plan_checks_the_lineage_and_spec_against_the_version_tags() -> None:
    spec = load_model_spec("credit-risk", contracts_dir=CONTRACTS)
    lineage = _lineage(model_spec_sha256=model_spec_hash(spec))
    doc = spec.model_dump(mode="json")
    tags = lineage.tags()
    plan = rebuild_plan(
        "credit-risk", 3, tags, "run", lineage.model_dump(mode="json"), doc, registered_fingerprint=FILES
    )
    assert plan.spec == spec and plan.recorded_fingerprint == "f" * 64
    with pytest.raises(StorageIntegrityError, match="training_rows"):
        rebuild_plan(
            "credit-risk",
            3,
            tags,
            "run",
            _lineage(training_rows=101).model_dump(mode="json"),
            doc,
            registered_fingerprint=FILES,
        )
    # Every lineage tag is checked, not only the digests: an altered snapshot order, package
    # list or git commit would be used, or reported as recorded.
    for altered, tag in (
        ({"application_snapshots": ["c" * 64, "a" * 64]}, "application_snapshots"),
        ({"packages": ["numpy==2.0.0", "xgboost==9.9.9"]}, "packages_sha256"),
        ({"git": {"commit": "deadbeef", "dirty": False}}, "git_commit"),
    ):
        named = _lineage(model_spec_sha256=model_spec_hash(spec), application_snapshots=["a" * 64, "c" * 64])
        changed = {**named.model_dump(mode="json"), **altered}
        with pytest.raises(StorageIntegrityError, match=rf"(?m)disagrees .* on mlops\.lineage\.{tag}$"):
            rebuild_plan("credit-risk", 3, named.tags(), "run", changed, doc, registered_fingerprint=FILES)
    with pytest.raises(StorageIntegrityError, match="hashes to"):
        rebuild_plan(
            "credit-risk",
            3,
            tags,
            "run",
            lineage.model_dump(mode="json"),
            {**doc, "seed": 7},
            registered_fingerprint=FILES,
        )
    with pytest.raises(StorageIntegrityError, match="not readable"):
        rebuild_plan(
            "credit-risk", 3, tags, "run", {"training_rows": "many"}, doc, registered_fingerprint=FILES
        )
    with pytest.raises(WorkRefused, match="no lineage tags"):
        rebuild_plan(
            "credit-risk", 3, {}, "run", lineage.model_dump(mode="json"), doc, registered_fingerprint=FILES
        )
