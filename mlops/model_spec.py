"""Model specs: what to train on which contracts, with which params, gates and decision policy.

One YAML file per model in ``model_specs/`` (override the folder with ``MLOPS_MODEL_SPECS_DIR``,
read at call time). A second model on another dataset needs only a new contract and a new spec:
nothing here knows about credit risk. :func:`load_model_spec` checks the spec against its two
contracts and fills in the defaults that depend on them (features, target, sensitive column).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops.contracts import ColumnSpec, Contract, load_contract
from mlops.drift_policy import DriftPolicy
from mlops.errors import ContractError, validation_problems
from mlops.evaluation import SliceSpec
from mlops.gates import GateSpec
from mlops.settings import get_settings
from mlops.shadow_policy import ShadowPolicy

MODEL_SPECS_DIR_ENV: Final = "MLOPS_MODEL_SPECS_DIR"
DEFAULT_MODEL_NAME: Final = "credit-risk"


#: XGBoost's metrics for a binary:logistic model (an unknown name fails inside XGBoost, after
#: the data is gathered, with a C++ stack trace).
EVAL_METRIC_PATTERN: Final = r"^(logloss|auc|aucpr|error(@[0-9.]+)?|rmse|rmsle|mae|mape|mphe|pre(@[0-9]+)?)$"


class XGBoostParams(BaseModel):
    """Booster parameters (``tree_method`` is always ``hist``: deterministic and fast)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Literal["binary:logistic"] = "binary:logistic"
    tree_method: Literal["hist"] = "hist"
    max_depth: int = Field(4, ge=1, le=16)
    eta: float = Field(0.1, gt=0.0, le=1.0)
    min_child_weight: float = Field(1.0, ge=0.0)
    subsample: float = Field(1.0, gt=0.0, le=1.0)
    colsample_bytree: float = Field(1.0, gt=0.0, le=1.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    reg_alpha: float = Field(0.0, ge=0.0)
    gamma: float = Field(0.0, ge=0.0)
    max_bin: int = Field(256, ge=2)
    max_cat_to_onehot: int = Field(4, ge=1)
    scale_pos_weight: float = Field(1.0, gt=0.0)
    eval_metric: str = Field("logloss", pattern=EVAL_METRIC_PATTERN)


class TrainingWindow(BaseModel):
    """Which labelled rows to train on: the newest ``last_snapshots`` application snapshots
    and/or the newest ``last_days`` (relative to the newest labelled row, not the wall clock,
    so a rerun on the same data picks the same rows). Both unset = everything labelled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last_snapshots: int | None = Field(None, ge=1)
    last_days: float | None = Field(None, gt=0)
    min_rows: int = Field(200, ge=10, description="Fewer labelled rows than this: refuse to train.")


class EvaluationSplit(BaseModel):
    """Time-aware split: the newest ``newest_fraction`` of rows (by timestamp) are held out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    newest_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_rows: int = Field(100, ge=1)


class HighStakesRule(BaseModel):
    """Rows whose ``column`` is at or above ``min`` always go to a person, and so do rows whose
    ``column`` is missing (a nullable column): stakes nobody knows are not known to be low.
    To have such rows refused instead, declare the column ``nullable: false`` in the contract
    (they are quarantined before scoring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    min: float

    def matches(self, values: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """(at or above ``min``, missing) for each value."""
        v = np.asarray(values, dtype="float64")
        missing = np.isnan(v)
        with np.errstate(invalid="ignore"):
            return (v >= self.min) & ~missing, missing


class DecisionPolicy(BaseModel):
    """Probability of default -> decision, and when a person must review it.

    Decline when ``p >= threshold``; review when ``review_band[0] <= p <= review_band[1]`` or
    the high-stakes rule matches (its column at or above ``min``, or missing).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(gt=0.0, lt=1.0)
    review_band: tuple[float, float]
    high_stakes: HighStakesRule | None = None

    @model_validator(mode="after")
    def _band_around_threshold(self) -> DecisionPolicy:
        lo, hi = self.review_band
        if not 0.0 <= lo <= self.threshold <= hi <= 1.0:
            raise ValueError(
                f"review_band {list(self.review_band)} must lie in [0, 1] and contain the threshold {self.threshold}"
            )
        return self

    def declines(self, probability: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        return np.asarray(probability, dtype="float64") >= self.threshold

    def needs_review(
        self, probability: npt.ArrayLike, high_stakes_values: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.bool_]:
        p = np.asarray(probability, dtype="float64")
        lo, hi = self.review_band
        review = (p >= lo) & (p <= hi)
        if self.high_stakes is not None and high_stakes_values is not None:
            high, missing = self.high_stakes.matches(high_stakes_values)
            review |= high | missing
        return review


class ModelSpec(BaseModel):
    """A model spec file (``model_specs/<name>.yaml``), resolved against its contracts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Registered model name in MLflow.")
    description: str = ""
    applications_contract: str = Field(description="Contract of the rows the model scores.")
    outcomes_contract: str = Field(description="Contract of the delayed labels, joined by id.")
    target: str | None = Field(None, description="Label column; default: the outcomes contract's target.")
    features: tuple[str, ...] | None = Field(
        None, description="Model inputs; default: every feature column of the applications contract."
    )
    exclude_features: tuple[str, ...] = ()
    sensitive_column: str | None = Field(
        None, description="Fairness attribute; default: the applications contract's sensitive column."
    )
    xgboost: XGBoostParams = Field(default_factory=XGBoostParams)
    num_boost_round: int = Field(200, ge=1, le=10_000)
    seed: int = Field(42, ge=0)
    nthread: int = Field(2, ge=1, le=256)
    training_window: TrainingWindow = Field(default_factory=TrainingWindow)
    evaluation: EvaluationSplit = Field(default_factory=EvaluationSplit)
    decision_policy: DecisionPolicy
    slices: tuple[SliceSpec, ...] = ()
    gates: GateSpec = Field(default_factory=GateSpec)
    drift: DriftPolicy = DriftPolicy()
    shadow: ShadowPolicy = ShadowPolicy()

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSpec:
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features lists a column twice")
        names = [s.name for s in self.slices]
        if len(set(names)) != len(names):
            raise ValueError("two slices share a name")
        return self

    @property
    def feature_list(self) -> list[str]:
        """The resolved features (only valid after :func:`resolve_model_spec`)."""
        if self.features is None:
            raise ContractError(f"model spec {self.name!r} is not resolved against its contracts")
        return list(self.features)

    @property
    def target_column(self) -> str:
        if self.target is None:
            raise ContractError(f"model spec {self.name!r} is not resolved against its contracts")
        return self.target

    def booster_params(self) -> dict[str, Any]:
        """Everything ``xgboost.train`` needs besides the data, fixed for determinism."""
        params = self.xgboost.model_dump()
        params.update(seed=self.seed, nthread=self.nthread, validate_parameters=True)
        return params


def model_specs_dir() -> Path:
    """The spec folder: the settings' ``model_specs_dir`` (``MLOPS_MODEL_SPECS_DIR``, read now)."""
    return get_settings().model_specs_dir.expanduser()


def _spec_error(spec: ModelSpec, problems: list[str]) -> ContractError:
    return ContractError(
        f"model spec {spec.name!r} disagrees with its contracts "
        f"({spec.applications_contract}, {spec.outcomes_contract}): " + "; ".join(problems),
        hint="fix the model spec (or the contract) so every named column exists with the right role",
    )


NUMERIC_DTYPES: Final = ("int", "float")


def _slice_problems(s: SliceSpec, column: ColumnSpec) -> list[str]:
    """What makes a slice unable to match the rows of its column: a group that can never have
    a row is reported "skipped" at every evaluation, so its floor would silently gate nothing."""
    if s.bins is not None and column.dtype not in NUMERIC_DTYPES:
        return [f"slice {s.name!r} bins column {s.column!r}, a {column.dtype} column; bins need int or float"]
    if s.values is None:
        return []
    if column.categories is not None:
        unknown = [v for v in s.values if str(v) not in column.categories]
        if unknown:
            return [
                f"slice {s.name!r} lists value(s) {unknown} that column {s.column!r} can never hold "
                f"(its categories: {list(column.categories)})"
            ]
    elif column.dtype in NUMERIC_DTYPES:
        text = [v for v in s.values if isinstance(v, str | bool)]
        if text:
            return [
                f"slice {s.name!r} lists non-numeric value(s) {text} for the {column.dtype} column {s.column!r}"
            ]
    return []


def _target_problems(column: ColumnSpec, contract_name: str) -> list[str]:
    """A binary label is a non-null int in [0, 1]: the outcomes join, training and every metric
    read it as int64 0/1, so a text label ('yes'/'no'), a float (0.7 would be cut to 0), a null
    or an unbounded int (a 2 fails inside XGBoost) would pass validation and crash (or mislabel)
    every outcomes batch and training run after it."""
    bounded = column.min is not None and column.max is not None and column.min >= 0 and column.max <= 1
    if column.dtype == "int" and bounded and not column.nullable:
        return []
    declared = f"dtype {column.dtype}, min {column.min}, max {column.max}, nullable {column.nullable}"
    return [
        f"target {column.name!r} of {contract_name!r} is declared {declared}; a binary label must be "
        "declared {dtype: int, min: 0, max: 1} and not nullable (1 = the outcome the model's score "
        "predicts; map text labels such as yes/no to 1/0 before ingesting)"
    ]


def resolve_model_spec(spec: ModelSpec, applications: Contract, outcomes: Contract) -> ModelSpec:
    """Check ``spec`` against its contracts and fill the contract-dependent defaults.

    Every problem is listed at once. The sensitive attribute, the id, the timestamp and the
    target can never be features.
    """
    problems: list[str] = []
    if applications.name != spec.applications_contract or outcomes.name != spec.outcomes_contract:
        problems.append(
            f"got contracts {applications.name!r}/{outcomes.name!r}, the spec names "
            f"{spec.applications_contract!r}/{spec.outcomes_contract!r}"
        )
    known = set(applications.column_names)
    target = spec.target or outcomes.target_column
    if target is None:
        problems.append(f"no target given and contract {outcomes.name!r} declares no target column")
    elif target not in outcomes.column_names:
        problems.append(f"target {target!r} is not a column of contract {outcomes.name!r}")
    elif target in known:
        problems.append(f"target {target!r} is also a column of {applications.name!r} (label leakage)")
    else:
        problems += _target_problems(outcomes.column(target), outcomes.name)

    features = list(spec.features) if spec.features is not None else applications.feature_columns
    unknown_excluded = [f for f in spec.exclude_features if f not in features]
    if unknown_excluded:
        problems.append(f"exclude_features names non-features {unknown_excluded}")
    features = [f for f in features if f not in spec.exclude_features]
    if not features:
        problems.append("no features left")
    for name in features:
        if name not in known:
            problems.append(f"feature {name!r} is not a column of {applications.name!r}")
            continue
        role = applications.column(name).role
        if role == "sensitive":
            problems.append(f"feature {name!r} is a sensitive attribute and can never be a model feature")
        elif role != "feature":
            problems.append(f"feature {name!r} has role {role!r} in {applications.name!r}, not 'feature'")

    sensitive = spec.sensitive_column
    if sensitive is None and len(applications.sensitive_columns) == 1:
        sensitive = applications.sensitive_columns[0]
    if sensitive is not None and sensitive not in applications.sensitive_columns:
        problems.append(f"sensitive_column {sensitive!r} is not a sensitive column of {applications.name!r}")
    if spec.gates.fairness is not None and sensitive is None:
        problems.append("gates.fairness needs a sensitive column (declare one, or set sensitive_column)")

    for s in spec.slices:
        if s.column not in known:
            problems.append(f"slice {s.name!r} uses column {s.column!r}, not in {applications.name!r}")
        else:
            problems += _slice_problems(s, applications.column(s.column))
    rule = spec.decision_policy.high_stakes
    if rule is not None and rule.column not in known:
        problems.append(f"high_stakes column {rule.column!r} is not in {applications.name!r}")
    elif rule is not None and (dtype := applications.column(rule.column).dtype) not in NUMERIC_DTYPES:
        problems.append(
            f"high_stakes column {rule.column!r} is a {dtype} column; "
            "the rule compares it with min, so it must be an int or float column"
        )
    ts = applications.timestamp_column
    if spec.training_window.last_days is not None and (
        ts is None or applications.column(ts).dtype != "datetime"
    ):
        # Counted back in days from the newest row's time: without a datetime timestamp it was
        # silently ignored (no timestamp column) or crashed every training run (a numeric one).
        problems.append(
            f"training_window.last_days needs a datetime timestamp column in {applications.name!r}"
            + ("" if ts is None else f" ({ts!r} is {applications.column(ts).dtype})")
            + "; use training_window.last_snapshots instead"
        )
    if applications.id_column not in known or outcomes.id_column not in outcomes.column_names:
        problems.append("both contracts need an id column to join on")
    elif (app_id := applications.column(applications.id_column)).dtype != (
        out_id := outcomes.column(outcomes.id_column)
    ).dtype:
        # Training joins the ids by value (an int 7 is not the text "7") where the audit trail
        # keys both alike: the outcomes would match predictions but never a training row.
        problems.append(
            f"id column {app_id.name!r} of {applications.name!r} is {app_id.dtype} but id column "
            f"{out_id.name!r} of {outcomes.name!r} is {out_id.dtype}: outcomes are joined to "
            "applications by id value, so declare both ids with the same dtype"
        )
    if problems:
        raise _spec_error(spec, problems)
    return spec.model_copy(
        update={"features": tuple(features), "target": target, "sensitive_column": sensitive}
    )


def read_model_spec(path: Path) -> ModelSpec:
    """Parse one spec file (not yet resolved against its contracts)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ContractError(f"model spec {path} is not valid YAML: {exc}") from exc
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(
            f"model spec {path} breaks the model-spec schema: {validation_problems(exc, raw)}",
            hint="fix the listed fields (see model_specs/credit-risk.yaml for an example)",
        ) from exc


def model_spec_names(specs_dir: Path | None = None) -> list[str]:
    """The names of the model specs in ``specs_dir`` (default :func:`model_specs_dir`)."""
    folder = specs_dir or model_specs_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_model_spec(
    name: str = DEFAULT_MODEL_NAME, *, specs_dir: Path | None = None, contracts_dir: Path | None = None
) -> ModelSpec:
    """Load ``<specs_dir>/<name>.yaml`` and resolve it against its contracts.

    ``specs_dir`` defaults to :func:`model_specs_dir`; ``contracts_dir`` to the settings'
    ``contracts_dir`` (``MLOPS_CONTRACTS_DIR``), both read at call time.
    """
    folder = specs_dir or model_specs_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ContractError(
            f"no model spec named {name!r} at {path}",
            hint=f"use one of {model_spec_names(folder)} or set {MODEL_SPECS_DIR_ENV}",
        )
    spec = read_model_spec(path)
    if spec.name != name:
        raise ContractError(f"model spec {path} declares name {spec.name!r}, expected {name!r}")
    if contracts_dir is None:
        contracts_dir = get_settings().contracts_dir
    applications = load_contract(contracts_dir, spec.applications_contract)
    outcomes = load_contract(contracts_dir, spec.outcomes_contract)
    return resolve_model_spec(spec, applications, outcomes)


def decision_policy_hash(policy: DecisionPolicy) -> str:
    """sha256 of the decision policy's canonical JSON: the rule that turned scores into decisions
    (recorded with each scored batch, and as a lineage tag of each trained version)."""
    from mlops.audit_hashing import canonical_json

    return hashlib.sha256(canonical_json(policy.model_dump(mode="json")).encode()).hexdigest()


def model_spec_hash(spec: ModelSpec) -> str:
    """sha256 of the resolved spec's canonical JSON (lineage: which spec trained a version)."""
    return spec_document_sha256(spec.model_dump(mode="json"))


def spec_document_sha256(document: Any) -> str:
    """:func:`model_spec_hash` of a spec as a JSON document: a logged ``model_spec.json``
    hashes, as read back, to the tag of the version it trained (whatever fields later releases
    add to the spec)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
