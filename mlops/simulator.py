"""Seeded simulator of credit applications and their delayed outcomes.

Every later test, demo and benchmark feeds on it, so it is deterministic and documented:

* **One RNG per day.** Day ``d`` of seed ``s`` draws from ``SeedSequence([s, d])``, split into
  independent streams (features, labels, timestamps, defects, outcomes, selection). A day
  therefore never depends on how many days were generated, and scenarios that leave the features alone
  (``concept_drift``) produce the very same feature rows as ``stable``.
* **Realistic rows.** 19 features of the ``credit_applications`` contract plus the id, the
  timestamp and the sensitive ``gender``. Features are correlated through a latent credit
  quality and through income (income -> loan amount -> debt-to-income, credit score ->
  interest rate). Missingness follows its causes: ``months_since_last_delinquency`` is missing
  for the never-delinquent, ``annual_income`` is sometimes undeclared (and then
  ``debt_to_income`` cannot be computed), ``credit_score`` is missing for thin files.
* **A non-linear label.** :func:`true_default_probability` is a logistic function of score
  bands, a debt-to-income x utilisation interaction, hinges and purpose effects (see
  :class:`RiskCoefficients`). ``gender`` never enters it. The label is a Bernoulli draw of it.
* **Scenarios** change things from ``drift_day`` on (``drift_strength`` scales each change):
  ``covariate_shift`` moves feature distributions (lower incomes, lower credit scores, more
  debt consolidation and small business, more broker channel) and keeps P(default | x);
  ``concept_drift`` keeps the features and swaps :data:`BASE_RISK` for :data:`CONCEPT_RISK`;
  ``label_shift`` keeps P(x | default) and moves the base rate to
  ``expit(logit(REFERENCE_DEFAULT_RATE) + LABEL_SHIFT_LOGIT * drift_strength)`` by resampling
  a larger pool; ``data_quality_incident`` injects one defect into each of
  ``round(incident_share * rows_per_day)`` rows (kinds in :data:`DEFECT_KINDS`).

Output of :func:`simulate`: ``applications/day_0000.csv``, ``outcomes/day_0000.csv`` (named by
the application day; the manifest says the arrival day) and ``manifest.json`` with the ground
truth (:class:`Manifest`). Nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops.errors import InputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SIMULATOR_VERSION: Final = "1.0.0"

# --- Scenarios and defects ------------------------------------------------------------------

Scenario = Literal["stable", "covariate_shift", "concept_drift", "label_shift", "data_quality_incident"]
SCENARIOS: Final[tuple[str, ...]] = get_args(Scenario)  # also the CLI's --scenario choices
FileFormat = Literal["csv", "parquet"]

DEFECT_NULL_REQUIRED: Final = "null_required"
DEFECT_OUT_OF_RANGE: Final = "out_of_range"
DEFECT_UNSEEN_CATEGORY: Final = "unseen_category"
DEFECT_WRONG_TYPE: Final = "wrong_type"
DEFECT_DUPLICATE_ID: Final = "duplicate_id"
DEFECT_KINDS: Final[tuple[str, ...]] = (
    DEFECT_NULL_REQUIRED,
    DEFECT_OUT_OF_RANGE,
    DEFECT_UNSEEN_CATEGORY,
    DEFECT_WRONG_TYPE,
    DEFECT_DUPLICATE_ID,
)

# --- Layout ---------------------------------------------------------------------------------

APPLICATIONS_DIR: Final = "applications"
OUTCOMES_DIR: Final = "outcomes"
MANIFEST_FILE: Final = "manifest.json"
APPLICATIONS_CONTRACT: Final = "credit_applications"
OUTCOMES_CONTRACT: Final = "credit_outcomes"
CSV_DATE_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"

# --- Columns (must match data_contracts/*.yaml; a unit test checks it) ---------------------

ID_COLUMN: Final = "application_id"
TIMESTAMP_COLUMN: Final = "applied_at"
SENSITIVE_COLUMN: Final = "gender"
OBSERVED_AT_COLUMN: Final = "observed_at"
TARGET_COLUMN: Final = "defaulted"

GENDERS: Final = ("female", "male", "nonbinary", "undisclosed")
EMPLOYMENT_TYPES: Final = ("salaried", "self_employed", "unemployed", "retired", "student")
HOME_OWNERSHIP: Final = ("rent", "own", "mortgage", "other")
LOAN_PURPOSES: Final = (
    "debt_consolidation",
    "credit_card",
    "home_improvement",
    "major_purchase",
    "small_business",
    "car",
    "medical",
    "education",
    "other",
)
REGIONS: Final = ("north", "south", "east", "west", "central")
CHANNELS: Final = ("online", "branch", "broker", "mobile")
YES_NO: Final = ("yes", "no")
LOAN_TERMS: Final = (12, 24, 36, 48, 60, 72, 84)

CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "employment_type": EMPLOYMENT_TYPES,
    "home_ownership": HOME_OWNERSHIP,
    "loan_purpose": LOAN_PURPOSES,
    "region": REGIONS,
    "application_channel": CHANNELS,
    "has_cosigner": YES_NO,
    "gender": GENDERS,
}
APPLICATION_COLUMNS: Final[tuple[str, ...]] = (
    ID_COLUMN,
    TIMESTAMP_COLUMN,
    "age",
    "annual_income",
    "employment_length_years",
    "employment_type",
    "home_ownership",
    "loan_amount",
    "loan_term_months",
    "loan_purpose",
    "interest_rate",
    "credit_score",
    "debt_to_income",
    "revolving_utilization",
    "num_open_accounts",
    "num_delinquencies_2y",
    "months_since_last_delinquency",
    "num_credit_inquiries_6m",
    "region",
    "application_channel",
    "has_cosigner",
    SENSITIVE_COLUMN,
)
FEATURE_COLUMNS: Final[tuple[str, ...]] = APPLICATION_COLUMNS[2:-1]
OUTCOME_COLUMNS: Final[tuple[str, ...]] = (ID_COLUMN, OBSERVED_AT_COLUMN, TARGET_COLUMN)

# --- Ground truth of the drift scenarios ----------------------------------------------------

COVARIATE_SHIFT_FEATURES: Final = ("annual_income", "credit_score", "loan_purpose", "application_channel")
# Features whose distribution moves only because they are computed from a shifted one.
COVARIATE_SHIFT_DOWNSTREAM: Final = ("loan_amount", "loan_term_months", "interest_rate", "debt_to_income")
# Per unit of drift_strength: log-income change, credit-score points, purpose and broker log-odds.
SHIFT_LOG_INCOME: Final = -0.30
SHIFT_CREDIT_SCORE: Final = -40.0
SHIFT_PURPOSE_LOGODDS: Final[dict[str, float]] = {"debt_consolidation": 0.6, "small_business": 1.2}
SHIFT_BROKER_LOGODDS: Final = 1.3

REFERENCE_DEFAULT_RATE: Final = 0.10  # realised rate of the stable population (calibrated)
LABEL_SHIFT_LOGIT: Final = 0.8  # per unit of drift_strength: 0.10 -> ~0.20 at strength 1
LABEL_FEATURES: Final = (
    "age",
    "annual_income",
    "employment_length_years",
    "employment_type",
    "home_ownership",
    "loan_amount",
    "loan_term_months",
    "loan_purpose",
    "credit_score",
    "debt_to_income",
    "revolving_utilization",
    "num_delinquencies_2y",
    "months_since_last_delinquency",
    "num_credit_inquiries_6m",
    "application_channel",
    "has_cosigner",
)


@dataclass(frozen=True)
class RiskCoefficients:
    """The parts of the default logit that :data:`CONCEPT_RISK` changes (logit units).

    Fixed parts (see :func:`_fixed_logit`): delinquencies, recent delinquency, inquiries, short
    tenure, U-shapes in age and utilisation, long term x high rate, undeclared income, a
    debt-to-income hinge and the effects in :data:`CATEGORY_EFFECTS`.
    """

    intercept: float
    score_band_scale: float  # multiplies SCORE_BANDS and THIN_FILE_EFFECT
    dti_x_utilization: float  # debt_to_income > 0.4 AND revolving_utilization > 0.6
    small_business: float  # loan_purpose == small_business
    loan_to_income_high: float  # loan_amount / declared annual_income > 0.5
    young_mobile: float  # age < 30 AND application_channel == mobile


BASE_RISK: Final = RiskCoefficients(
    intercept=-3.82,  # calibrated: mean P(default) = 0.10 on the stable population
    score_band_scale=1.0,
    dti_x_utilization=2.0,
    small_business=0.85,
    loan_to_income_high=1.0,
    young_mobile=0.0,
)
CONCEPT_RISK: Final = RiskCoefficients(
    intercept=-3.47,  # re-calibrated so the base rate stays ~0.10: only the relationship moves
    score_band_scale=0.5,
    dti_x_utilization=0.0,
    small_business=-0.1,
    loan_to_income_high=1.8,
    young_mobile=1.2,
)


# --- Public models ---------------------------------------------------------------------------


class SimulationConfig(BaseModel):
    """What to simulate. ``drift_day`` defaults to ``days // 2``; changes apply from it on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: Scenario = Field("stable", description=f"One of {', '.join(SCENARIOS)}.")
    days: int = Field(30, ge=1, le=3650, description="Number of application days.")
    drift_day: int = Field(-1, description="First day of the change (0..days-1); default days // 2.")
    seed: int = Field(42, ge=0, description="Root seed; day d uses SeedSequence([seed, d]).")
    rows_per_day: int = Field(2000, ge=1, le=9_999_999, description="Clean applications per day.")
    outcome_delay_days: int = Field(7, ge=0, le=365, description="Days until outcomes arrive.")
    start_date: date = Field(date(2025, 1, 1), description="Calendar date of day 0 (UTC).")
    file_format: FileFormat = Field("csv", description="csv or parquet.")
    incident_share: float = Field(
        0.08, gt=0.0, le=0.5, description="Share of rows given a defect (data_quality_incident)."
    )
    drift_strength: float = Field(1.0, ge=0.0, le=3.0, description="Scales every scenario's change.")

    @field_validator("scenario", mode="before")
    @classmethod
    def _known_scenario(cls, value: Any) -> Any:
        if value not in SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; known scenarios: {', '.join(SCENARIOS)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_drift_day(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("drift_day") is None:
            try:
                days = int(data.get("days", 30))
            except (TypeError, ValueError):
                return data  # the days field reports its own error
            data = {**data, "drift_day": days // 2}
        return data

    @model_validator(mode="after")
    def _drift_day_inside(self) -> SimulationConfig:
        if not 0 <= self.drift_day <= self.days - 1:
            raise ValueError(
                f"drift_day {self.drift_day} is outside 0..{self.days - 1} (days={self.days}); "
                "omit it to use days // 2"
            )
        return self

    def drifted(self, day: int) -> bool:
        """Whether ``day`` is at or after the drift day of a scenario that changes anything."""
        return self.scenario != "stable" and day >= self.drift_day


class ApplicationBatchEntry(BaseModel):
    """One application file and its ground truth."""

    day: int
    date: date
    path: str
    rows: int
    unique_applications: int
    drifted: bool
    default_rate: float = Field(description="Realised default rate of the day's applications.")
    mean_default_probability: float
    sha256: str
    defects: dict[str, int] = Field(default_factory=dict, description="Injected rows per kind.")
    defect_columns: dict[str, dict[str, int]] = Field(default_factory=dict)
    defect_rows: dict[str, list[int]] = Field(
        default_factory=dict, description="0-based row positions in the file, per kind."
    )


class OutcomeBatchEntry(BaseModel):
    """One outcome file: the outcomes of the applications of ``application_day``."""

    application_day: int
    arrival_day: int
    arrival_date: date
    path: str
    rows: int
    default_rate: float
    sha256: str


class Manifest(BaseModel):
    """Ground truth of one simulation run, written to ``manifest.json``."""

    simulator_version: str
    scenario: str
    seed: int
    days: int
    drift_day: int | None = Field(description="None for the stable scenario (nothing changes).")
    drift_strength: float
    start_date: date
    rows_per_day: int
    file_format: str
    outcome_delay_days: int
    incident_share: float | None
    applications_contract: str
    outcomes_contract: str
    drifted_features: list[str] = Field(description="Features whose distribution is moved directly.")
    indirectly_drifted_features: list[str] = Field(
        description="Features that move only through a directly moved feature or the label mix."
    )
    changed_relationship: dict[str, dict[str, float]] = Field(
        description="concept_drift: RiskCoefficients fields that change, with before/after."
    )
    target_default_rate: float | None = Field(description="label_shift: base rate from drift_day on.")
    description: str
    default_rate_by_day: list[float]
    defects_total: dict[str, int]
    applications: list[ApplicationBatchEntry]
    outcomes: list[OutcomeBatchEntry]


@dataclass(frozen=True)
class DefectLog:
    """Which rows of a batch carry which injected defect."""

    rows: dict[str, list[int]]
    columns: dict[str, dict[str, int]]

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(rows) for kind, rows in self.rows.items()}


@dataclass(frozen=True)
class DayBatch:
    """One simulated day before it is written."""

    applications: pd.DataFrame  # as written, defects included
    labels: pd.Series  # aligned with ``applications`` (duplicated rows repeat their label)
    clean_ids: pd.Series  # unique applications of the day, in order
    clean_labels: IntArray
    probability: FloatArray  # true P(default | x) of the unique applications
    defects: DefectLog


# --- Small vectorised helpers -------------------------------------------------------------


def _expit(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _draw_rows(rng: np.random.Generator, logits: FloatArray) -> IntArray:
    """One categorical draw per row from row-wise logits (n x k, bounded), vectorised."""
    cum = np.exp(logits)
    np.cumsum(cum, axis=1, out=cum)
    u = rng.random(len(logits)) * cum[:, -1]
    idx = (cum <= u[:, None]).sum(axis=1)
    return np.minimum(idx, logits.shape[1] - 1).astype(np.int64)


def _base_logits(n: int, probs: tuple[float, ...]) -> FloatArray:
    out = np.empty((n, len(probs)), dtype=np.float64)
    out[:] = np.log(np.asarray(probs, dtype=np.float64))
    return out


def _categorical(codes: IntArray, categories: tuple[str, ...]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=list(categories))


# --- Feature generation ---------------------------------------------------------------------


def _draw_person(rng: np.random.Generator, n: int) -> dict[str, Any]:
    gender = rng.choice(len(GENDERS), size=n, p=[0.48, 0.48, 0.015, 0.025])
    age = np.clip(np.round(18 + rng.gamma(3.0, 7.5, size=n)), 18, 90).astype(np.int64)
    region = rng.choice(len(REGIONS), size=n, p=[0.2, 0.25, 0.2, 0.2, 0.15])
    logits = _base_logits(n, (0.66, 0.13, 0.06, 0.08, 0.07))
    logits[:, 4] += np.select([age < 23, age < 27, age >= 35], [2.2, 1.0, -4.0], 0.0)
    logits[:, 3] += np.select([age >= 65, age >= 60, age < 50], [3.0, 1.5, -5.0], 0.0)
    employment = _draw_rows(rng, logits)
    working = employment <= 1
    tenure = np.minimum(rng.gamma(1.6, 4.0, size=n), age - 18.0)
    tenure = np.where(working, tenure, 0.0)
    missing = np.where(working, rng.random(n) < 0.03, rng.random(n) < 0.7)
    tenure = np.where(missing, np.nan, np.round(tenure, 1))
    home_logits = np.zeros((n, len(HOME_OWNERSHIP)))
    home_logits[:, 1] = -3.0 + 0.07 * (age - 25)
    home_logits[:, 2] = -0.6 + 0.8 * ((age >= 30) & (age < 65)) - 0.3 * (region == 1)
    home_logits[:, 3] = -2.8
    return {
        "gender": gender,
        "age": age,
        "region": region,
        "employment": employment,
        "tenure": tenure,
        "home": _draw_rows(rng, home_logits),
        "quality": rng.normal(0.012 * (age - 40), 1.0),
    }


def _draw_income(rng: np.random.Generator, p: dict[str, Any], shift: float) -> dict[str, Any]:
    n = len(p["age"])
    emp = p["employment"]
    adj = np.array([0.0, 0.05, -1.2, -0.4, -1.3])[emp]
    sd = np.array([0.4, 0.65, 0.5, 0.4, 0.5])[emp]
    region_adj = np.array([0.05, -0.1, 0.0, 0.12, -0.03])[p["region"]]
    age_curve = 0.35 - 0.0006 * (p["age"] - 48.0) ** 2
    log_income = (
        (10.75 + adj + age_curve + region_adj + 0.18 * p["quality"] - 0.05 * (p["gender"] == 0))
        + rng.normal(0.0, sd)
        + SHIFT_LOG_INCOME * shift
    )
    true_income = np.clip(np.round(np.exp(log_income), -2), 1000.0, 5_000_000.0)
    undeclared = rng.random(n) < np.array([0.04, 0.15, 0.10, 0.06, 0.10])[emp]
    return {"true_income": true_income, "income": np.where(undeclared, np.nan, true_income)}


def _draw_credit(rng: np.random.Generator, p: dict[str, Any], shift: float) -> dict[str, Any]:
    n = len(p["age"])
    age, z = p["age"], p["quality"]
    thin_p = np.where(age < 23, 0.28, np.where(p["employment"] == 4, 0.12, 0.03))
    thin = rng.random(n) < thin_p + 0.03 * (p["employment"] == 2)
    raw_score = 690 + 62 * z + 0.6 * (age - 40) + rng.normal(0.0, 18.0, n) + SHIFT_CREDIT_SCORE * shift
    score = np.where(thin, np.nan, np.clip(np.round(raw_score), 300, 850))
    accounts = np.where(thin, rng.poisson(0.8, n), rng.poisson(np.clip(2.5 + 0.1 * (age - 18), 1, 10)))
    mean_util = _expit(-0.7 - 0.9 * z)
    util = rng.beta(4 * mean_util, 4 * (1 - mean_util))
    util = np.where(rng.random(n) < 0.03, util * rng.uniform(1.0, 1.4, n), util)
    util = np.where(accounts == 0, np.nan, np.round(np.clip(util, 0.0, 1.5), 3))
    delinq = np.minimum(rng.poisson(np.exp(-2.0 - 0.9 * z)), 50)
    older = rng.random(n) < _expit(-2.0 - 0.7 * z)
    cap = np.minimum(600.0, (age - 18) * 12.0)
    old_months = np.minimum(25.0 + np.floor(rng.exponential(40.0, n)), cap)
    months = np.where(
        delinq > 0,
        np.floor(rng.uniform(0.0, 24.0, n)),
        np.where(older & (cap >= 25), old_months, np.nan),
    )
    return {
        "thin": thin,
        "score": score,
        "accounts": np.minimum(accounts, 100).astype(np.int64),
        "util": util,
        "delinq": delinq.astype(np.int64),
        "months": months,
        "inquiries": np.minimum(rng.poisson(np.exp(-0.5 - 0.45 * z)), 50).astype(np.int64),
    }


def _draw_loan(rng: np.random.Generator, p: dict[str, Any], shift: float) -> dict[str, Any]:
    n = len(p["age"])
    emp, age = p["employment"], p["age"]
    logits = _base_logits(n, (0.36, 0.18, 0.10, 0.08, 0.05, 0.10, 0.04, 0.04, 0.05))
    logits[:, 4] += 1.5 * (emp == 1) + SHIFT_PURPOSE_LOGODDS["small_business"] * shift
    logits[:, 0] += SHIFT_PURPOSE_LOGODDS["debt_consolidation"] * shift
    logits[:, 7] += 2.3 * (emp == 4)
    logits[:, 2] += 0.7 * ((p["home"] == 1) | (p["home"] == 2))
    purpose = _draw_rows(rng, logits)
    mu = np.array([0.2, -0.3, 0.5, -0.1, 0.8, 0.4, -0.6, 0.1, -0.4])[purpose]
    log_loan = 9.3 + 0.75 * (np.log(p["true_income"]) - 10.9) + mu + rng.normal(0.0, 0.5, n)
    loan = np.clip(np.round(np.clip(np.exp(log_loan), 500.0, 100_000.0) / 50.0) * 50.0, 500.0, 100_000.0)
    center = np.clip(1.0 + 1.3 * (np.log(loan) - 8.6) + 0.8 * (purpose == 5), 0.0, 6.0)
    term_logits = -0.7 * (np.arange(len(LOAN_TERMS))[None, :] - center[:, None]) ** 2
    term = np.asarray(LOAN_TERMS, dtype=np.int64)[_draw_rows(rng, term_logits)]
    ch_logits = _base_logits(n, (0.45, 0.18, 0.12, 0.25))
    ch_logits[:, 3] += 0.8 * (age < 30)
    ch_logits[:, 1] += 1.2 * (age >= 60)
    ch_logits[:, 2] += SHIFT_BROKER_LOGODDS * shift
    channel = _draw_rows(rng, ch_logits)
    cosigner_p = _expit(-2.7 + 1.3 * (emp == 4) + 0.9 * p["thin"] + 0.5 * (age < 23))
    return {
        "purpose": purpose,
        "loan": loan,
        "term": term,
        "channel": channel,
        "cosigner": np.where(rng.random(n) < cosigner_p, 0, 1).astype(np.int64),
    }


def _draw_pricing(rng: np.random.Generator, p: dict[str, Any]) -> dict[str, Any]:
    n = len(p["age"])
    score = p["score"]
    rate = np.where(np.isnan(score), 0.15, 0.05 + 0.20 * _expit(-(np.nan_to_num(score) - 650.0) / 45.0))
    rate = rate + 0.004 * (p["term"] - 36) / 12 + 0.02 * (p["purpose"] == 4) + 0.012 * (p["channel"] == 2)
    rate = np.round(np.clip(rate + rng.normal(0.0, 0.007, n), 0.01, 0.40), 4)
    monthly = rate / 12.0
    payment = p["loan"] * monthly / (1.0 - (1.0 + monthly) ** (-p["term"].astype(np.float64)))
    mean_existing = _expit(-1.7 - 0.35 * p["quality"])
    existing = rng.beta(8 * mean_existing, 8 * (1 - mean_existing))
    dti = np.round(np.clip(existing + 12.0 * payment / p["true_income"], 0.0, 2.0), 4)
    return {"rate": rate, "dti": np.where(np.isnan(p["income"]), np.nan, dti)}


def _features_frame(p: dict[str, Any]) -> pd.DataFrame:
    score = pd.array(p["score"], dtype="Float64").astype("Int64")
    return pd.DataFrame(
        {
            "age": p["age"],
            "annual_income": p["income"],
            "employment_length_years": p["tenure"],
            "employment_type": _categorical(p["employment"], EMPLOYMENT_TYPES),
            "home_ownership": _categorical(p["home"], HOME_OWNERSHIP),
            "loan_amount": p["loan"],
            "loan_term_months": p["term"],
            "loan_purpose": _categorical(p["purpose"], LOAN_PURPOSES),
            "interest_rate": p["rate"],
            "credit_score": score,
            "debt_to_income": p["dti"],
            "revolving_utilization": p["util"],
            "num_open_accounts": p["accounts"],
            "num_delinquencies_2y": p["delinq"],
            "months_since_last_delinquency": p["months"],
            "num_credit_inquiries_6m": p["inquiries"],
            "region": _categorical(p["region"], REGIONS),
            "application_channel": _categorical(p["channel"], CHANNELS),
            "has_cosigner": _categorical(p["cosigner"], YES_NO),
            "gender": _categorical(p["gender"], GENDERS),
        }
    )


def _draw_features(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    """``n`` clean feature rows (plus gender); ``shift`` is the covariate-shift strength (0 = none)."""
    p = _draw_person(rng, n)
    p.update(_draw_income(rng, p, shift))
    p.update(_draw_credit(rng, p, shift))
    p.update(_draw_loan(rng, p, shift))
    p.update(_draw_pricing(rng, p))
    return _features_frame(p)


# --- The label ------------------------------------------------------------------------------


def _num(frame: pd.DataFrame, column: str) -> FloatArray:
    out: FloatArray = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _is(frame: pd.DataFrame, column: str, value: str) -> BoolArray:
    out: BoolArray = (frame[column] == value).fillna(False).to_numpy(dtype=bool)
    return out


SCORE_BANDS: Final = ((560, 2.2), (600, 1.5), (640, 0.9), (680, 0.35), (720, -0.1), (760, -0.5))
SCORE_TOP_BAND: Final = -1.0  # 760 and above
THIN_FILE_EFFECT: Final = 0.6  # credit_score missing
CATEGORY_EFFECTS: Final[dict[str, dict[str, float]]] = {
    "employment_type": {"unemployed": 0.75, "student": 0.3, "self_employed": 0.2, "retired": -0.1},
    "home_ownership": {"own": -0.2, "mortgage": -0.1},
    "loan_purpose": {
        "medical": 0.3,
        "education": 0.15,
        "debt_consolidation": 0.1,
        "car": -0.25,
        "home_improvement": -0.15,
    },
    "application_channel": {"broker": 0.25},
    "has_cosigner": {"yes": -0.45},
}


def _score_band_effect(score: FloatArray) -> FloatArray:
    bands = [score < limit for limit, _ in SCORE_BANDS]
    effect: FloatArray = np.select(bands, [e for _, e in SCORE_BANDS], SCORE_TOP_BAND)
    return np.where(np.isnan(score), THIN_FILE_EFFECT, effect)


def _category_effect(frame: pd.DataFrame, column: str, effects: dict[str, float]) -> FloatArray:
    out: FloatArray = frame[column].map(effects).to_numpy(dtype=np.float64, na_value=0.0)
    return np.nan_to_num(out)


def _fixed_logit(frame: pd.DataFrame) -> FloatArray:
    """Effects :data:`CONCEPT_RISK` leaves alone: thresholds, U-shapes and one interaction."""
    age, util = _num(frame, "age"), _num(frame, "revolving_utilization")
    dti, rate = _num(frame, "debt_to_income"), _num(frame, "interest_rate")
    terms = [
        0.35 * np.minimum(_num(frame, "num_delinquencies_2y"), 3),
        0.4 * (_num(frame, "months_since_last_delinquency") < 12),
        0.5 * (_num(frame, "num_credit_inquiries_6m") >= 3),
        0.3 * (_num(frame, "employment_length_years") < 1),
        0.5 * (age < 25) + 0.5 * (age > 70),  # U-shape in age
        0.4 * (util < 0.02) + 0.5 * (util > 0.9),  # U-shape in utilisation
        1.0 * ((_num(frame, "loan_term_months") >= 48) & (rate >= 0.15)),  # payment shock
        0.35 * np.isnan(_num(frame, "annual_income")),  # undeclared income
        0.8 * np.maximum(np.nan_to_num(dti) - 0.35, 0.0),  # hinge
    ]
    terms += [_category_effect(frame, col, eff) for col, eff in CATEGORY_EFFECTS.items()]
    out: FloatArray = np.sum(terms, axis=0)
    return out


def default_logit(frame: pd.DataFrame, coefficients: RiskCoefficients) -> FloatArray:
    """The true default logit of clean feature rows (``gender`` is never read)."""
    income, loan, age = _num(frame, "annual_income"), _num(frame, "loan_amount"), _num(frame, "age")
    dti, util = _num(frame, "debt_to_income"), _num(frame, "revolving_utilization")
    with np.errstate(divide="ignore", invalid="ignore"):
        lti_high = loan / income > 0.5
    c = coefficients
    logit = (
        c.intercept
        + _fixed_logit(frame)
        + c.score_band_scale * _score_band_effect(_num(frame, "credit_score"))
    )
    logit += c.dti_x_utilization * ((dti > 0.4) & (util > 0.6)) + c.loan_to_income_high * lti_high
    logit += c.small_business * _is(frame, "loan_purpose", "small_business")
    logit += c.young_mobile * ((age < 30) & _is(frame, "application_channel", "mobile"))
    return logit


def label_shift_target_rate(strength: float) -> float:
    """Base rate of the label_shift scenario from its drift day on."""
    return 1.0 / (1.0 + math.exp(-(_logit(REFERENCE_DEFAULT_RATE) + LABEL_SHIFT_LOGIT * strength)))


def _coefficients(day: int, config: SimulationConfig) -> RiskCoefficients:
    return CONCEPT_RISK if config.scenario == "concept_drift" and config.drifted(day) else BASE_RISK


def true_default_probability(frame: pd.DataFrame, day: int, config: SimulationConfig) -> pd.Series:
    """True P(default | features) of clean rows on ``day`` under ``config``'s scenario.

    For ``label_shift`` after the drift day the probability is prior-corrected from
    :data:`REFERENCE_DEFAULT_RATE` to :func:`label_shift_target_rate` (approximate: the
    population's natural rate is only close to the reference).
    """
    p = _expit(default_logit(frame, _coefficients(day, config)))
    if config.scenario == "label_shift" and config.drifted(day):
        target = label_shift_target_rate(config.drift_strength)
        odds = (target / REFERENCE_DEFAULT_RATE) / ((1 - target) / (1 - REFERENCE_DEFAULT_RATE))
        p = odds * p / (odds * p + 1.0 - p)
    return pd.Series(p, index=frame.index, name="default_probability")


# --- One day --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Streams:
    """Independent generators of one day, from ``SeedSequence([seed, day])``."""

    features: np.random.Generator
    labels: np.random.Generator
    times: np.random.Generator
    defects: np.random.Generator
    outcomes: np.random.Generator
    selection: np.random.Generator

    @classmethod
    def for_day(cls, seed: int, day: int) -> _Streams:
        gens = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, day]).spawn(6)]
        return cls(*gens)


_HOUR_WEIGHTS: Final = np.array(
    [1, 1, 1, 1, 1, 2, 3, 5, 7, 9, 10, 10, 10, 10, 10, 10, 9, 9, 9, 8, 7, 5, 3, 2], dtype=np.float64
)


def _day_start(config: SimulationConfig, day: int) -> np.datetime64:
    return np.datetime64(config.start_date + timedelta(days=day), "s")


def _intraday_seconds(rng: np.random.Generator, n: int) -> IntArray:
    """Sorted seconds after midnight, busier in office hours."""
    hours = rng.choice(24, size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    return np.sort(hours * 3600 + rng.integers(0, 3600, n)).astype(np.int64)


def _timestamps(start: np.datetime64, seconds: IntArray) -> pd.Series:
    values = (start + seconds.astype("timedelta64[s]")).astype("datetime64[us]")
    return pd.Series(values).dt.tz_localize("UTC")


def application_ids(day: int, n_rows: int) -> pd.Series:
    """``APP-<day:04d>-<n:07d>`` for n = 0..n_rows-1: unique across days."""
    numbers = pd.Series(np.arange(n_rows, dtype=np.int64)).astype("str").str.zfill(7)
    return (f"APP-{day:04d}-" + numbers).rename(ID_COLUMN)


def _label_shift_select(
    streams: _Streams, n: int, day: int, config: SimulationConfig
) -> tuple[pd.DataFrame, FloatArray, IntArray]:
    """Draw a pool of the natural population, then keep ``n`` rows at the target base rate."""
    target = label_shift_target_rate(config.drift_strength)
    n_pos = int(streams.selection.binomial(n, target))
    # pool big enough in all but rare cases (then it is drawn again, twice as big)
    factor = max(target / (0.7 * REFERENCE_DEFAULT_RATE), (1 - target) / 0.85, 1.0)
    pool_size = math.ceil(n * factor) + 200
    while True:
        pool = _draw_features(streams.features, pool_size, 0.0)
        p = _expit(default_logit(pool, BASE_RISK))
        y = (streams.labels.random(pool_size) < p).astype(np.int64)
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        if len(pos) >= n_pos and len(neg) >= n - n_pos:
            break
        pool_size *= 2
    keep = np.concatenate(
        [
            streams.selection.choice(pos, n_pos, replace=False),
            streams.selection.choice(neg, n - n_pos, replace=False),
        ]
    )
    keep = streams.selection.permutation(keep)
    frame = pool.iloc[keep].reset_index(drop=True)
    prob = true_default_probability(frame, day, config).to_numpy()
    return frame, prob, y[keep]


def _clean_day(
    streams: _Streams, n: int, day: int, config: SimulationConfig
) -> tuple[pd.DataFrame, FloatArray, IntArray]:
    """Clean applications (all contract columns), true probabilities and labels."""
    drifted = config.drifted(day)
    if config.scenario == "label_shift" and drifted:
        features, prob, labels = _label_shift_select(streams, n, day, config)
    else:
        shift = config.drift_strength if config.scenario == "covariate_shift" and drifted else 0.0
        features = _draw_features(streams.features, n, shift)
        prob = true_default_probability(features, day, config).to_numpy()
        labels = (streams.labels.random(n) < prob).astype(np.int64)
    seconds = _intraday_seconds(streams.times, n)
    frame = pd.concat(
        [
            application_ids(day, n),
            _timestamps(_day_start(config, day), seconds).rename(TIMESTAMP_COLUMN),
            features,
        ],
        axis=1,
    )
    return frame[list(APPLICATION_COLUMNS)], prob, labels


def _simulate_day(n: int, day: int, config: SimulationConfig) -> DayBatch:
    streams = _Streams.for_day(config.seed, day)
    clean, prob, labels = _clean_day(streams, n, day, config)
    if config.scenario == "data_quality_incident" and config.drifted(day):
        dirty, source_rows, log = inject_defects(clean, streams.defects, config.incident_share)
    else:
        dirty, source_rows, log = clean, np.arange(n, dtype=np.int64), DefectLog(rows={}, columns={})
    return DayBatch(
        applications=dirty,
        labels=pd.Series(labels[source_rows], index=dirty.index, name=TARGET_COLUMN),
        clean_ids=clean[ID_COLUMN],
        clean_labels=labels,
        probability=prob,
        defects=log,
    )


def _check_generate_args(n_rows: int, day: int) -> None:
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or not 1 <= n_rows <= 9_999_999:
        raise InputError(f"n_rows must be an int in 1..9,999,999, got {n_rows!r}", hint="pass a row count")
    if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 9999:
        raise InputError(f"day must be an int in 0..9999, got {day!r}", hint="days count from 0")


def generate_applications(n_rows: int, day: int, config: SimulationConfig) -> tuple[pd.DataFrame, pd.Series]:
    """One day's applications in memory, exactly as :func:`simulate` writes them, and their labels.

    Returns ``(applications, defaulted)``: the frame has the contract's columns in contract
    order (categories as ``category`` dtype, ``credit_score`` as nullable ``Int64``); the
    labels are 0/1 ``int64``, aligned by row (on incident days a duplicated row repeats its
    label). ``config.rows_per_day`` is ignored in favour of ``n_rows``; the day's scenario
    regime (before/after ``drift_day``) applies. Use :func:`true_default_probability` for the
    probabilities behind the labels. Fully vectorised: 1M rows take a few seconds.
    """
    _check_generate_args(n_rows, day)
    batch = _simulate_day(n_rows, day, config)
    return batch.applications, batch.labels


# --- Defects --------------------------------------------------------------------------------

NULL_TARGETS: Final = (
    "age",
    "employment_type",
    "home_ownership",
    "loan_amount",
    "loan_term_months",
    "loan_purpose",
    "interest_rate",
    "num_open_accounts",
    "region",
    "application_channel",
    "has_cosigner",
)
UNSEEN_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "employment_type": ("contractor", "Salaried"),
    "home_ownership": ("RENT", "council_housing"),
    "loan_purpose": ("crypto", "wedding"),
    "region": ("northeast", "overseas"),
    "application_channel": ("partner_api", "telephone"),
    "has_cosigner": ("Y", "true"),
}
WRONG_TYPE_TARGETS: Final = (
    "age",
    "annual_income",
    "loan_amount",
    "credit_score",
    "interest_rate",
    "num_open_accounts",
)
OUT_OF_RANGE_TARGETS: Final = (
    "age",
    "annual_income",
    "loan_amount",
    "loan_term_months",
    "interest_rate",
    "credit_score",
    "debt_to_income",
    "num_open_accounts",
)


def _out_of_range_values(column: str, current: pd.Series, rng: np.random.Generator) -> pd.Series:
    """Values outside the contract range, in the column's own type (one realistic bug per column)."""
    k = len(current)
    choices: dict[str, npt.NDArray[Any]] = {
        "age": rng.choice(np.array([-1, 17, 150, 999]), k),
        "annual_income": np.full(k, -1.0),
        "loan_amount": rng.choice(np.array([0.0, 250_000.0, 1_000_000.0]), k),
        "loan_term_months": rng.choice(np.array([0, 360]), k),
        "credit_score": rng.choice(np.array([0, 999]), k),
        "debt_to_income": rng.choice(np.array([-0.5, 9.99]), k),
        "num_open_accounts": np.full(k, -1),
    }
    if column == "interest_rate":  # percent written where a fraction is expected
        return (current * 100).round(2)
    return pd.Series(choices[column], index=current.index)


def _wrong_type_values(column: str, current: pd.Series) -> list[str]:
    """Text a numeric column should never carry: thousands separators, units, "n/a"."""
    values = current.to_numpy(dtype=np.float64, na_value=np.nan)
    if column in ("annual_income", "loan_amount"):
        return ["n/a" if np.isnan(v) else f"{v:,.0f}" for v in values]
    if column == "interest_rate":
        return [f"{v * 100:.1f}%" for v in values]
    if column == "age":
        return [f"{v:.0f} years" for v in values]
    return ["n/a"] * len(values)


def _assign(frame: pd.DataFrame, rows: IntArray, column: str, values: Any) -> None:
    frame.iloc[rows, frame.columns.get_loc(column)] = values


def _inject_nulls(frame: pd.DataFrame, rows: IntArray, columns: npt.NDArray[Any]) -> None:
    for column in np.unique(columns):
        target = rows[columns == column]
        if frame[column].dtype == np.int64:
            frame[column] = frame[column].astype("Int64")
        _assign(
            frame,
            target,
            str(column),
            None if isinstance(frame[column].dtype, pd.CategoricalDtype) else np.nan,
        )


def _inject_out_of_range(
    frame: pd.DataFrame, rows: IntArray, columns: npt.NDArray[Any], rng: np.random.Generator
) -> None:
    for column in np.unique(columns):
        target = rows[columns == column]
        _assign(
            frame,
            target,
            str(column),
            _out_of_range_values(str(column), frame[column].iloc[target], rng).to_numpy(),
        )


def _inject_unseen(
    frame: pd.DataFrame, rows: IntArray, columns: npt.NDArray[Any], rng: np.random.Generator
) -> None:
    for column in np.unique(columns):
        target, unseen = rows[columns == column], UNSEEN_VALUES[str(column)]
        series = frame[column]
        if isinstance(series.dtype, pd.CategoricalDtype):  # widen the categories, cheaper than text
            frame[column] = series.cat.add_categories([v for v in unseen if v not in series.cat.categories])
        _assign(frame, target, str(column), rng.choice(np.array(unseen, dtype=object), len(target)))


def _inject_wrong_type(frame: pd.DataFrame, rows: IntArray, columns: npt.NDArray[Any]) -> None:
    for column in np.unique(columns):
        target = rows[columns == column]
        text = _wrong_type_values(str(column), frame[column].iloc[target])
        frame[column] = frame[column].astype(object)
        _assign(frame, target, str(column), np.array(text, dtype=object))


def _pick_columns(rng: np.random.Generator, k: int, options: tuple[str, ...]) -> npt.NDArray[Any]:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), k)]


def _column_counts(columns: npt.NDArray[Any]) -> dict[str, int]:
    names, counts = np.unique(columns.astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def inject_defects(
    clean: pd.DataFrame, rng: np.random.Generator, share: float
) -> tuple[pd.DataFrame, IntArray, DefectLog]:
    """Give ``round(share * len(clean))`` rows one defect each, spread evenly over the kinds.

    Duplicated ids are extra copies of clean rows placed right after their original (a re-sent
    record), so the returned frame is longer than ``clean``. Returns the dirty frame, for each of
    its rows the position of its source row in ``clean``, and the log of row positions per kind.
    """
    if not 0.0 < share <= 0.5:
        raise InputError(f"incident share must be in (0, 0.5], got {share}", hint="e.g. 0.08")
    n = len(clean)
    k = min(round(share * n), n)
    chosen = np.sort(rng.choice(n, size=k, replace=False))
    kinds = rng.permutation(np.arange(k) % len(DEFECT_KINDS))
    frame = clean.copy()
    columns: dict[str, npt.NDArray[Any]] = {}
    targets = {DEFECT_NULL_REQUIRED: NULL_TARGETS, DEFECT_OUT_OF_RANGE: OUT_OF_RANGE_TARGETS}
    targets |= {DEFECT_UNSEEN_CATEGORY: tuple(UNSEEN_VALUES), DEFECT_WRONG_TYPE: WRONG_TYPE_TARGETS}
    for j, kind in enumerate(DEFECT_KINDS[:-1]):
        columns[kind] = _pick_columns(rng, int((kinds == j).sum()), targets[kind])
    rows = {kind: chosen[kinds == j] for j, kind in enumerate(DEFECT_KINDS)}
    _inject_nulls(frame, rows[DEFECT_NULL_REQUIRED], columns[DEFECT_NULL_REQUIRED])
    _inject_out_of_range(frame, rows[DEFECT_OUT_OF_RANGE], columns[DEFECT_OUT_OF_RANGE], rng)
    _inject_unseen(frame, rows[DEFECT_UNSEEN_CATEGORY], columns[DEFECT_UNSEEN_CATEGORY], rng)
    _inject_wrong_type(frame, rows[DEFECT_WRONG_TYPE], columns[DEFECT_WRONG_TYPE])
    return _with_duplicates(frame, rows, columns)


def _with_duplicates(
    frame: pd.DataFrame, rows: dict[str, IntArray], columns: dict[str, npt.NDArray[Any]]
) -> tuple[pd.DataFrame, IntArray, DefectLog]:
    """Insert a copy of each duplicate source row right after it; map logged rows to new positions."""
    n = len(frame)
    sources = rows[DEFECT_DUPLICATE_ID]
    source_rows = np.sort(np.concatenate([np.arange(n, dtype=np.int64), sources]))
    is_copy = np.zeros(len(source_rows), dtype=bool)
    is_copy[1:] = source_rows[1:] == source_rows[:-1]
    new_position = np.flatnonzero(~is_copy)  # position of each original row in the new frame
    log_rows = {kind: new_position[rows[kind]].tolist() for kind in DEFECT_KINDS[:-1]}
    log_rows[DEFECT_DUPLICATE_ID] = np.flatnonzero(is_copy).tolist()
    log_columns = {kind: _column_counts(columns[kind]) for kind in DEFECT_KINDS[:-1]}
    log_columns[DEFECT_DUPLICATE_ID] = {ID_COLUMN: len(sources)} if len(sources) else {}
    dirty = frame.iloc[source_rows].reset_index(drop=True)
    return dirty, source_rows, DefectLog(rows=log_rows, columns=log_columns)


# --- Writing --------------------------------------------------------------------------------


def _for_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """Categories as plain strings; a column carrying wrong-type text becomes a string column."""
    out = frame.copy()
    for column in out.columns:
        dtype = out[column].dtype
        if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype):
            out[column] = out[column].astype(pd.StringDtype(na_value=np.nan))
    return out


def _write_frame(frame: pd.DataFrame, path: Path, file_format: FileFormat) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if file_format == "csv":
        frame.to_csv(path, index=False, lineterminator="\n", date_format=CSV_DATE_FORMAT)
    else:
        _for_parquet(frame).to_parquet(path, index=False, engine="pyarrow", compression="snappy")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outcomes_frame(batch: DayBatch, arrival: np.datetime64, rng: np.random.Generator) -> pd.DataFrame:
    seconds = rng.integers(0, 86_400, len(batch.clean_ids)).astype(np.int64)
    frame = pd.DataFrame(
        {
            ID_COLUMN: batch.clean_ids.to_numpy(),
            OBSERVED_AT_COLUMN: _timestamps(arrival, seconds).to_numpy(),
            TARGET_COLUMN: batch.clean_labels,
        }
    )
    return frame[list(OUTCOME_COLUMNS)]


def _day_file(folder: str, day: int, file_format: FileFormat) -> str:
    return f"{folder}/day_{day:04d}.{file_format}"


def _write_day(
    day: int, config: SimulationConfig, out_dir: Path
) -> tuple[ApplicationBatchEntry, OutcomeBatchEntry]:
    batch = _simulate_day(config.rows_per_day, day, config)
    app_path = _day_file(APPLICATIONS_DIR, day, config.file_format)
    app_sha = _write_frame(batch.applications, out_dir / app_path, config.file_format)
    arrival_day = day + config.outcome_delay_days
    outcomes = _outcomes_frame(
        batch, _day_start(config, arrival_day), _Streams.for_day(config.seed, day).outcomes
    )
    out_path = _day_file(OUTCOMES_DIR, day, config.file_format)
    out_sha = _write_frame(outcomes, out_dir / out_path, config.file_format)
    rate = float(batch.clean_labels.mean())
    app_entry = ApplicationBatchEntry(
        day=day,
        date=config.start_date + timedelta(days=day),
        path=app_path,
        rows=len(batch.applications),
        unique_applications=len(batch.clean_ids),
        drifted=config.drifted(day),
        default_rate=rate,
        mean_default_probability=float(batch.probability.mean()),
        sha256=app_sha,
        defects=batch.defects.counts,
        defect_columns=batch.defects.columns,
        defect_rows=batch.defects.rows,
    )
    out_entry = OutcomeBatchEntry(
        application_day=day,
        arrival_day=arrival_day,
        arrival_date=config.start_date + timedelta(days=arrival_day),
        path=out_path,
        rows=len(outcomes),
        default_rate=rate,
        sha256=out_sha,
    )
    return app_entry, out_entry


_DESCRIPTIONS: Final[dict[str, str]] = {
    "stable": "No change: every day is drawn from the same population and default relationship.",
    "covariate_shift": "From drift_day on, incomes fall, credit scores drop, debt consolidation and small "
    "business loans and the broker channel grow; P(default | features) is unchanged.",
    "concept_drift": "From drift_day on, feature distributions are unchanged and the default relationship "
    "changes (see changed_relationship: RiskCoefficients before/after).",
    "label_shift": "From drift_day on, the base rate moves to target_default_rate; P(features | default) "
    "is unchanged, so features linked to default move with the label mix.",
    "data_quality_incident": "From drift_day on, incident_share of each batch's rows carry one injected "
    "defect (null_required, out_of_range, unseen_category, wrong_type, duplicate_id); counts per file.",
}


def _changed_relationship(config: SimulationConfig) -> dict[str, dict[str, float]]:
    if config.scenario != "concept_drift":
        return {}
    before, after = asdict(BASE_RISK), asdict(CONCEPT_RISK)
    return {k: {"before": before[k], "after": after[k]} for k in before if before[k] != after[k]}


def _drift_features(config: SimulationConfig) -> tuple[list[str], list[str]]:
    if config.scenario == "covariate_shift":
        return list(COVARIATE_SHIFT_FEATURES), list(COVARIATE_SHIFT_DOWNSTREAM)
    if config.scenario == "label_shift":
        return [], list(LABEL_FEATURES)
    return [], []


def _build_manifest(
    config: SimulationConfig, apps: list[ApplicationBatchEntry], outs: list[OutcomeBatchEntry]
) -> Manifest:
    direct, indirect = _drift_features(config)
    totals = {kind: sum(a.defects.get(kind, 0) for a in apps) for kind in DEFECT_KINDS}
    incident = config.scenario == "data_quality_incident"
    return Manifest(
        simulator_version=SIMULATOR_VERSION,
        scenario=config.scenario,
        seed=config.seed,
        days=config.days,
        drift_day=None if config.scenario == "stable" else config.drift_day,
        drift_strength=config.drift_strength,
        start_date=config.start_date,
        rows_per_day=config.rows_per_day,
        file_format=config.file_format,
        outcome_delay_days=config.outcome_delay_days,
        incident_share=config.incident_share if incident else None,
        applications_contract=APPLICATIONS_CONTRACT,
        outcomes_contract=OUTCOMES_CONTRACT,
        drifted_features=direct,
        indirectly_drifted_features=indirect,
        changed_relationship=_changed_relationship(config),
        target_default_rate=label_shift_target_rate(config.drift_strength)
        if config.scenario == "label_shift"
        else None,
        description=_DESCRIPTIONS[config.scenario],
        default_rate_by_day=[a.default_rate for a in apps],
        defects_total=totals if incident else {},
        applications=apps,
        outcomes=outs,
    )


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} is a file", hint="pass a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(
                f"output folder {out_dir} is not empty",
                hint="choose an empty or new folder (--out), or add --overwrite to replace a "
                "previous simulation there",
            )
        for pattern in (f"{APPLICATIONS_DIR}/day_*", f"{OUTCOMES_DIR}/day_*", MANIFEST_FILE):
            for old in out_dir.glob(pattern):
                old.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"output folder {out_dir} cannot be created ({exc.strerror or exc})",
            hint="pass a folder you can write to",
        ) from exc


def simulate(config: SimulationConfig, out_dir: Path, *, overwrite: bool = False) -> Manifest:
    """Write ``config.days`` application and outcome batches and ``manifest.json`` to ``out_dir``.

    Same config -> byte-identical files. ``out_dir`` must be new or empty unless ``overwrite``
    (which deletes only the files a previous simulation wrote there).
    """
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    apps: list[ApplicationBatchEntry] = []
    outs: list[OutcomeBatchEntry] = []
    for day in range(config.days):
        app_entry, out_entry = _write_day(day, config, out_dir)
        apps.append(app_entry)
        outs.append(out_entry)
    manifest = _build_manifest(config, apps, outs)
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_manifest(out_dir: Path) -> Manifest:
    """Read the ground truth of a simulation folder."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"no simulation manifest at {path}", hint="run simulate() (mlops simulate) first")
    return Manifest.model_validate_json(path.read_text())
