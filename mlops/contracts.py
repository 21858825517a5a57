"""Data contracts: the human-readable YAML files in ``data_contracts/`` as typed models."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops.constants import ROLE_FEATURE, ROLE_ID, ROLE_SENSITIVE, ROLE_TARGET, ROLE_TIMESTAMP
from mlops.errors import ContractError, validation_problems

DType = Literal["string", "int", "float", "category", "datetime"]
Role = Literal["id", "feature", "target", "timestamp", "sensitive"]


class ColumnSpec(BaseModel):
    """One column of a contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    dtype: DType
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    #: A datetime no later than when the batch is validated (plus the contract's clock skew):
    #: an event time in the future is a data error (a typo'd year, a wrong time zone).
    not_in_future: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"column {self.name!r}: min/max only apply to int or float columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is above max {self.max}")
        if self.dtype == "category" and not self.categories:
            raise ValueError(f"column {self.name!r}: a category column must list its categories")
        if self.categories is not None and self.dtype != "category":
            raise ValueError(f"column {self.name!r}: categories only apply to category columns")
        if self.not_in_future and self.dtype != "datetime":
            raise ValueError(f"column {self.name!r}: not_in_future only applies to datetime columns")
        return self


class Contract(BaseModel):
    """A dataset's declared schema and rules; compiled to a GX suite by :mod:`mlops.gx_suite`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    description: str = ""
    owner: str = ""
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    #: How far ahead of the validating machine's clock a ``not_in_future`` value may be (the
    #: source system's clock may run a little ahead); at most a day.
    clock_skew_seconds: float = Field(300.0, ge=0.0, le=86_400.0)
    #: Which row of a repeated ``unique`` value a batch keeps (the rest are quarantined as
    #: duplicates): ``first``, or ``latest`` by the timestamp column (ties: the later row), for
    #: data whose later rows correct earlier ones, as outcomes do (the labels' own rule).
    keep_on_duplicate: Literal["first", "latest"] = "first"
    columns: tuple[ColumnSpec, ...]

    @model_validator(mode="after")
    def _roles(self) -> Contract:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns declared twice: {dupes}")
        ids = [c for c in self.columns if c.role == ROLE_ID]
        if len(ids) != 1:
            raise ValueError(f"a contract needs exactly one id column, found {len(ids)}")
        timestamps = [c for c in self.columns if c.role == ROLE_TIMESTAMP]
        if len(timestamps) > 1:
            raise ValueError("a contract may have at most one timestamp column")
        if self.keep_on_duplicate == "latest" and not timestamps:
            raise ValueError("keep_on_duplicate: latest needs a timestamp column to say which row is latest")
        if self.keep_on_duplicate == "latest" and timestamps[0].dtype not in ("datetime", "int", "float"):
            raise ValueError(
                f"keep_on_duplicate: latest needs a datetime (or numeric) timestamp column; "
                f"{timestamps[0].name!r} is {timestamps[0].dtype} and would be ordered as text"
            )
        return self

    def _by_role(self, role: str) -> list[ColumnSpec]:
        return [c for c in self.columns if c.role == role]

    @property
    def id_column(self) -> str:
        return self._by_role(ROLE_ID)[0].name

    @property
    def timestamp_column(self) -> str | None:
        cols = self._by_role(ROLE_TIMESTAMP)
        return cols[0].name if cols else None

    @property
    def feature_columns(self) -> list[str]:
        return [c.name for c in self._by_role(ROLE_FEATURE)]

    @property
    def target_column(self) -> str | None:
        cols = self._by_role(ROLE_TARGET)
        return cols[0].name if cols else None

    @property
    def sensitive_columns(self) -> list[str]:
        return [c.name for c in self._by_role(ROLE_SENSITIVE)]

    @property
    def text_columns(self) -> list[str]:
        """Columns whose values are text (``string`` and ``category``): a CSV reader must keep
        their cells as written (``007`` is not ``7``, ``TRUE`` not ``True``)."""
        return [c.name for c in self.columns if c.dtype in ("string", "category")]

    @property
    def not_in_future_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.not_in_future]

    def latest_allowed(self, checked_at: datetime) -> datetime:
        """The latest value a ``not_in_future`` column may hold in a batch checked at ``checked_at``."""
        return checked_at + timedelta(seconds=self.clock_skew_seconds)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


def contract_path(contracts_dir: Path, name: str) -> Path:
    return contracts_dir / f"{name}.yaml"


def suite_path(contracts_dir: Path, name: str) -> Path:
    """Where the compiled GX suite of a contract is kept in git, beside the contract."""
    return contracts_dir / f"{name}.gx_suite.json"


def load_contract(contracts_dir: Path, name: str) -> Contract:
    """Load and check a contract; a missing or malformed file gets a clear error."""
    path = contract_path(contracts_dir, name)
    if not path.is_file():
        known = sorted(p.stem for p in contracts_dir.glob("*.yaml")) if contracts_dir.is_dir() else []
        raise ContractError(
            f"no data contract named {name!r} at {path}",
            hint=f"use one of {known} or set MLOPS_CONTRACTS_DIR",
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ContractError(f"contract file {path} is not valid YAML: {exc}") from exc
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(
            f"contract file {path} breaks the contract schema: {validation_problems(exc, raw)}",
            hint="fix the listed fields (see data_contracts/credit_applications.yaml for an example)",
        ) from exc
    if contract.name != name:
        raise ContractError(f"contract file {path} declares name {contract.name!r}, expected {name!r}")
    return contract
