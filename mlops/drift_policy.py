"""Drift thresholds and the alarm rule as one typed policy (embedded in the model spec YAML).

Defaults, and why:

- ``psi`` warn 0.1 / act 0.2: the credit-scoring rule of thumb (Siddiqi, *Credit Risk
  Scorecards*): below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 a significant one.
- ``wasserstein_norm`` warn 0.1 / act 0.2: Wasserstein-1 in reference standard deviations;
  0.1 is Evidently's default drift threshold for this statistic, 0.2 a fifth of a std.
- ``js_distance`` warn 0.1 / act 0.2: Jensen-Shannon distance (base 2); 0.1 is Evidently's
  default for categorical columns.
- ``cramers_v`` warn 0.1 / act 0.2: Cohen's "small" effect is 0.1, "medium" 0.3.
- ``missing_rate`` warn 0.2 / act 0.5: Cohen's h between the missing rates, "small" 0.2 and
  "medium" 0.5 (0% -> 1% missing is h = 0.2; 10% -> 35% is h = 0.6).
- ``min_window_rows`` 500: below it every verdict is ``insufficient_data``, never an alarm.
- ``noise_quantile`` 0.999: effect sizes are biased up on small samples (30 categories on 500
  rows read JS 0.1 with no drift at all), so each threshold is raised, for that window, to the
  99.9% quantile of its statistic under no drift at the window's size (chi-square
  approximations for PSI, JS, Cramér's V and Cohen's h; a Brownian-bridge bound for
  Wasserstein). On large windows the floor is far below the thresholds and changes nothing.
- Performance: AUC drop tolerated 0.02 (DeLong interval), calibration-error rise tolerated
  0.02 (debiased RMS calibration error; its interval's half-width is what label noise alone
  gives a calibrated model on the same bins, parametric bootstrap), and the observed default
  rate may differ from the mean predicted probability of the same rows (times the reference's
  observed / predicted ratio) by 10% of it either way (``positive_rate_tolerated_gap``;
  binomial noise: the PD backtest, so a 10% expected rate tolerates 9-11% beyond noise). A
  change is ``act`` when the 95% interval clears the tolerance, ``warn`` when the 80% interval
  does; only ``act`` counts as a drop.
- Alarm: ``k_features`` = 2 features drifting (at least warn) in each of ``m_windows`` = 2
  consecutive windows, the *same* features each time; the model score counts as one such
  feature (``count_prediction``), so a shift in one feature that moves the score alarms, while
  noise, which picks other features each window, does not. A performance drop confirmed in
  ``m_windows`` consecutive windows alarms at ``act`` on its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Number of fine reference bins per numeric feature (percentiles); PSI merges them.
FINE_BINS = 100

Verdict = Literal["ok", "warn", "act", "insufficient_data"]
Severity = Literal["none", "warn", "act"]


class Threshold(BaseModel):
    """Two levels for one statistic: ``warn`` (drifting) and ``act`` (drifting badly)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warn: float = Field(gt=0.0, description="Value at or above which the verdict is warn.")
    act: float = Field(gt=0.0, description="Value at or above which the verdict is act.")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.act < self.warn:
            raise ValueError(f"act threshold {self.act} is below warn threshold {self.warn}")
        return self

    def verdict(self, value: float) -> Verdict:
        """ok / warn / act for a statistic where larger means more drift."""
        if value >= self.act:
            return "act"
        if value >= self.warn:
            return "warn"
        return "ok"


class AlarmRule(BaseModel):
    """How many drifting features, over how many consecutive windows, make an alarm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k_features: int = Field(
        2, ge=1, description="Features drifting in every one of the m windows (the same ones)."
    )
    m_windows: int = Field(2, ge=1, description="Consecutive windows the condition must hold.")
    performance_m_windows: int | None = Field(
        None, ge=1, description="Windows a confirmed performance drop must persist; None = m."
    )
    count_prediction: bool = Field(
        True, description="Count drift of the model score as one drifting feature."
    )
    estimated_performance_warns: bool = Field(
        True, description="A label-free (CBPE) AUC drop over m windows raises a warn alarm."
    )

    @property
    def performance_windows(self) -> int:
        return self.performance_m_windows or self.m_windows


class DriftPolicy(BaseModel):
    """Every threshold and knob of drift detection; see the module docstring for defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: Threshold = Threshold(warn=0.1, act=0.2)
    wasserstein_norm: Threshold = Threshold(warn=0.1, act=0.2)
    js_distance: Threshold = Threshold(warn=0.1, act=0.2)
    cramers_v: Threshold = Threshold(warn=0.1, act=0.2)
    missing_rate: Threshold = Threshold(warn=0.2, act=0.5)

    min_window_rows: int = Field(
        500, ge=1, description="Rows (non-missing, per feature) below which: insufficient_data."
    )
    psi_bins: int = Field(10, ge=2, le=FINE_BINS, description="PSI bins (reference quantiles).")
    psi_min_rows_per_bin: int = Field(
        50, ge=1, description="Small windows get fewer PSI bins so each expects this many rows."
    )
    noise_quantile: float = Field(
        0.999,
        gt=0.5,
        lt=1.0,
        description="A threshold is raised to this quantile of the statistic under no drift "
        "at the window's size (noise floor); binds only on small windows.",
    )
    wasserstein_scale: Literal["std", "iqr"] = Field(
        "std", description="Reference spread dividing Wasserstein (iqr: IQR / 1.349)."
    )

    auc_tolerated_drop: float = Field(0.02, ge=0.0, le=1.0)
    calibration_tolerated_rise: float = Field(0.02, ge=0.0, le=1.0)
    positive_rate_tolerated_gap: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        description="Tolerated gap, relative to the mean predicted probability, between the "
        "observed positive (default) rate of a labelled window and that mean, either way.",
    )
    confidence: float = Field(
        0.95, gt=0.0, lt=1.0, description="Interval a performance drop must clear for act."
    )
    warn_confidence: float = Field(
        0.8, gt=0.0, lt=1.0, description="Narrower interval a drop must clear for warn."
    )
    min_labelled_rows: int = Field(200, ge=2)
    min_labelled_per_class: int = Field(20, ge=1)
    calibration_bins: int = Field(10, ge=1)
    bootstrap_resamples: int = Field(2000, ge=100)
    bootstrap_seed: int = 0
    estimated_auc_tolerated_drop: float = Field(0.02, ge=0.0, le=1.0)
    decision_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Score cut-off of the label-free accuracy estimate."
    )

    alarm: AlarmRule = AlarmRule()

    @model_validator(mode="after")
    def _consistent(self) -> DriftPolicy:
        if FINE_BINS % self.psi_bins:
            raise ValueError(f"psi_bins must divide {FINE_BINS}, got {self.psi_bins}")
        if self.warn_confidence > self.confidence:
            raise ValueError("warn_confidence must not exceed confidence")
        return self

    def psi_bins_for(self, n_rows: int) -> int:
        """Largest divisor of 100 up to ``psi_bins`` giving each bin enough expected rows."""
        fits = [
            b
            for b in range(2, self.psi_bins + 1)
            if FINE_BINS % b == 0 and n_rows // b >= self.psi_min_rows_per_bin
        ]
        return max(fits) if fits else 2
