"""Compile a data contract into a Great Expectations 1.x ExpectationSuite and run it.

GX is the pass/fail gate for a batch (result_format BASIC: per-expectation counts and a sample
of unexpected values; SUMMARY's index lists cost ~0.6-1.2 s more at 1M rows, and the quarantine
file already names every failing row);
the row-level quarantine split is done by :mod:`mlops.validation` from the same contract.
Row-level expectations carry ``mostly = 1 - max_quarantine_share`` so both agree on the limit
(uniqueness ``1 - 2 * share``: GX counts both copies of a repeated id, see :func:`_unique_mostly`).
GX takes ``mostly`` as a share of the column's non-null values; a nullable column's is a suite
parameter given at each run (:func:`mostly_parameters`), so its limit is the same number of rows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlops.contracts import Contract, suite_path
from mlops.errors import ContractError

#: The suite parameter (GX 1.x ``{"$PARAMETER": ...}``) that ``not_in_future`` columns are held
#: to: the validation time plus the contract's clock skew, given at each run, so the compiled
#: suite stays the same file from batch to batch.
LATEST_ALLOWED_PARAMETER = "latest_allowed_time"


def _mostly(contract: Contract, max_share: float | None) -> float:
    share = contract.max_quarantine_share if max_share is None else max_share
    return round(1.0 - share, 6)


def _unique_mostly(mostly: float) -> float:
    """GX counts every row of a repeated value as unexpected (both copies of a pair); the
    quarantine keeps the first and quarantines the rest, at least half of GX's count. With the
    plain ``mostly`` a batch with 3% duplicated ids under a 5% limit failed GX (6%) while its
    quarantine was within the limit; twice the share makes GX pass whenever the quarantine
    does, and the quarantine-share limit, checked beside GX, still rejects more."""
    return round(max(0.0, 1.0 - 2.0 * (1.0 - mostly)), 6)


def mostly_parameter(column: str, *, unique: bool = False) -> str:
    """The suite parameter holding the ``mostly`` of a nullable column's row-level expectations."""
    return f"{'unique_' if unique else ''}mostly_of_nonnull_{column}"


def _of_nonnull(rows_allowed: float, nonnull: int) -> float:
    """The ``mostly`` (a share of ``nonnull`` values) that lets ``rows_allowed`` of them fail."""
    if nonnull == 0:
        return 1.0  # GX: vacuously true
    return min(1.0, max(0.0, 1.0 - rows_allowed / nonnull - 1e-9))  # no float-rounding refusal


def mostly_parameters(
    df: pd.DataFrame, contract: Contract, max_share: float | None = None
) -> dict[str, float]:
    """Each nullable column's ``mostly``, for this batch: GX counts a column's unexpected values
    among its non-null ones, the quarantine among all rows. With the plain ``1 - share``, a
    column 70% empty failed GX (and the batch was rejected) past 1.5% bad rows under a 5% limit."""
    allowed = (contract.max_quarantine_share if max_share is None else max_share) * len(df)
    out: dict[str, float] = {}
    for col in contract.columns:
        if col.nullable and col.name in df.columns:
            nonnull = int(df[col.name].notna().sum())
            out[mostly_parameter(col.name)] = _of_nonnull(allowed, nonnull)
            if col.unique:
                out[mostly_parameter(col.name, unique=True)] = _of_nonnull(2.0 * allowed, nonnull)
    return out


def compile_expectations(contract: Contract, max_share: float | None = None) -> list[dict[str, Any]]:
    """The contract as a list of GX expectation configs ``{"type": ..., "kwargs": {...}}``.

    Order is stable (contract column order), so the compiled suite diffs well in git.
    A nullable column's row-level ``mostly`` is a suite parameter (:func:`mostly_parameters`).
    """
    static = _mostly(contract, max_share)
    out: list[dict[str, Any]] = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": contract.column_names, "exact_match": False},
        },
    ]
    for col in contract.columns:
        mostly: float | dict[str, str] = (
            {"$PARAMETER": mostly_parameter(col.name)} if col.nullable else static
        )
        unique_mostly: float | dict[str, str] = (
            {"$PARAMETER": mostly_parameter(col.name, unique=True)}
            if col.nullable
            else _unique_mostly(static)
        )
        out.append({"type": "expect_column_to_exist", "kwargs": {"column": col.name}})
        if not col.nullable:
            out.append(
                {
                    "type": "expect_column_values_to_not_be_null",
                    "kwargs": {"column": col.name, "mostly": mostly},
                }
            )
        if col.min is not None or col.max is not None:
            kwargs: dict[str, Any] = {"column": col.name, "mostly": mostly}
            if col.min is not None:
                kwargs["min_value"] = col.min
            if col.max is not None:
                kwargs["max_value"] = col.max
            out.append({"type": "expect_column_values_to_be_between", "kwargs": kwargs})
        if col.categories is not None:
            out.append(
                {
                    "type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": col.name, "value_set": list(col.categories), "mostly": mostly},
                }
            )
        if col.unique:
            out.append(
                {
                    "type": "expect_column_values_to_be_unique",
                    "kwargs": {"column": col.name, "mostly": unique_mostly},
                }
            )
        if col.not_in_future:
            out.append(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {
                        "column": col.name,
                        "max_value": {"$PARAMETER": LATEST_ALLOWED_PARAMETER},
                        "mostly": mostly,
                    },
                }
            )
    return out


def compiled_suite_document(contract: Contract) -> dict[str, Any]:
    """The JSON document kept in git beside the contract (no random ids, stable order)."""
    return {
        "name": suite_name(contract),
        "meta": {
            "compiled_from": f"{contract.name}.yaml",
            "contract_version": contract.version,
            "note": "Generated by `mlops contract compile`; do not edit by hand.",
        },
        "expectations": compile_expectations(contract),
    }


def suite_name(contract: Contract) -> str:
    return f"{contract.name}@{contract.version}"


def write_compiled_suite(contract: Contract, contracts_dir: Path) -> Path:
    path = suite_path(contracts_dir, contract.name)
    path.write_text(json.dumps(compiled_suite_document(contract), indent=2) + "\n")
    return path


def check_compiled_suite(contract: Contract, contracts_dir: Path) -> None:
    """Raise if the suite kept in git is missing or no longer matches its contract."""
    path = suite_path(contracts_dir, contract.name)
    hint = f"run `mlops contract compile {contract.name}` and commit {path.name}"
    if not path.is_file():
        raise ContractError(f"compiled GX suite {path} is missing", hint=hint)
    if json.loads(path.read_text()) != compiled_suite_document(contract):
        raise ContractError(f"compiled GX suite {path} is out of date with its contract", hint=hint)


def build_suite(contract: Contract, max_share: float | None = None) -> Any:
    """A live ``gx.ExpectationSuite`` for the contract."""
    import great_expectations as gx
    from great_expectations.expectations.registry import get_expectation_impl

    # Built in one go: add_expectation() one at a time re-compares the whole suite (~40x slower).
    expectations = [
        get_expectation_impl(exp["type"])(**exp["kwargs"])
        for exp in compile_expectations(contract, max_share)
    ]
    return gx.ExpectationSuite(name=suite_name(contract), expectations=expectations)


def data_docs_dir(reports_dir: Path, run_name: str) -> Path:
    """A Data Docs site of its own for each validation run: ``<reports>/data_docs/<UTC time>-<run>``.

    Our GX context is ephemeral (it stores no results), and GX's site builder deletes the pages
    of results it does not hold: one shared site would lose every earlier batch's page at the
    next validation, leaving the links in earlier summaries and artifacts dead.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-.") or "validate"
    return reports_dir / "data_docs" / f"{stamp}-{safe}"


def share_static_assets(site: Path) -> None:
    """Replace a Data Docs site's ``static/`` folder (GX's fonts, images and styles, ~4 MB) by a
    relative link to one copy per GX version beside the sites, ``../static-<version>``.

    Each validation run has a site of its own (:func:`data_docs_dir`); without this, every run
    would keep its own 4 MB copy of the same files. The pages link ``./static/...``, which the
    link resolves, so they look the same opened from disk.
    """
    import great_expectations as gx

    own = site / "static"
    if not own.is_dir() or own.is_symlink():
        return
    shared = site.parent / f"static-{gx.__version__}"
    if shared.is_dir():
        shutil.rmtree(own)
    else:
        own.rename(shared)
    own.symlink_to(Path("..") / shared.name, target_is_directory=True)


ResultFormat = Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE"]


class GXRunner:
    """One ephemeral GX context with a pandas data source; optional Data Docs site on disk.

    ``result_format``: BASIC by default (what validation keeps: counts per expectation);
    the validation benchmark's baseline runs GX alone with SUMMARY.
    """

    def __init__(self, docs_dir: Path | None = None, result_format: ResultFormat = "BASIC") -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.context.data_sources.add_pandas("mlops")
        self._batch_definition = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe(
            "whole"
        )
        self.docs_dir = docs_dir
        self.result_format = result_format
        # Suite name -> (compiled suite document, its registered checkpoint): see validate_contract.
        self._registered: dict[str, tuple[str, Any]] = {}
        if docs_dir is not None:
            self.context.add_data_docs_site(
                site_name="local",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )

    def validate_contract(
        self,
        df: pd.DataFrame,
        contract: Contract,
        run_name: str,
        max_share: float | None = None,
        latest_allowed: datetime | None = None,
    ) -> Any:
        """Validate ``df`` against the contract's suite; returns the GX
        ``ExpectationSuiteValidationResult`` (BASIC). ``latest_allowed`` (default: now plus the
        contract's clock skew) is the suite parameter of ``not_in_future`` columns.

        Registering a suite, its validation definition and checkpoint in the GX context costs
        about a second (GX compares every expectation with every stored one, through pydantic),
        more than validating a small batch. A runner that validates batch after batch of the
        same contract registers them once: the checkpoint is reused while the contract's
        compiled suite (expectations and quarantine limit) is the one registered under its name,
        and registered again when it changes.
        """
        from great_expectations.core.run_identifier import RunIdentifier

        name = suite_name(contract)
        key = json.dumps(compile_expectations(contract, max_share), sort_keys=True, default=str)
        registered = self._registered.get(name)
        if registered is None or registered[0] != key:
            registered = (key, self._register(build_suite(contract, max_share)))
            self._registered[name] = registered
        if latest_allowed is None:
            latest_allowed = contract.latest_allowed(datetime.now(UTC))
        parameters: dict[str, Any] = {
            LATEST_ALLOWED_PARAMETER: latest_allowed.isoformat(),
            **mostly_parameters(df, contract, max_share),
        }
        result = registered[1].run(
            batch_parameters={"dataframe": df},
            expectation_parameters=parameters,
            run_id=RunIdentifier(run_name=run_name),
        )
        if self.docs_dir is not None:
            share_static_assets(self.docs_dir)
        return next(iter(result.run_results.values()))

    def _register(self, suite: Any) -> Any:
        """Add (or replace) the suite, its validation definition and checkpoint; the checkpoint."""
        gx = self._gx
        suite = self.context.suites.add_or_update(suite)
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"vd-{suite.name}", data=self._batch_definition, suite=suite)
        )
        actions = []
        if self.docs_dir is not None:
            actions.append(gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["local"]))
        return self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"cp-{suite.name}",
                validation_definitions=[definition],
                actions=actions,
                result_format=self.result_format,
            )
        )

    def docs_pages(self) -> list[Path]:
        if self.docs_dir is None:
            return []
        return sorted(self.docs_dir.rglob("*.html"))
