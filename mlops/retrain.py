"""Retraining hygiene: whether an event-triggered retrain should run, and why not.

Prefect's trigger debounces events (``within``, ``for_each``) and the deployment runs one
retrain at a time (``concurrency_limit: 1``, ``ENQUEUE``: a run triggered for another model while
one runs waits its turn; cancelling it would lose that model's alarm); there is no idempotency key on
the run-deployment action, so the flow decides too, from its own state (JSON in the object
store, one file per model, :func:`retrain_state_key`). In order:

1. **severity**: events below ``min_severity`` are skipped (a manual run always passes);
2. **idempotency**: one completed retrain per key = sha256 of the model name, the resolved
   model spec's hash and the sorted sha256s of every validated snapshot of its two datasets.
   The same data (and spec) never trains twice; a failed attempt may be retried, and an
   attempt stuck in ``started`` blocks its key only for ``stale_after_hours``;
3. **cooldown**: no attempt within ``cooldown_hours`` of the previous one that completed or is
   still running. A failed attempt (or one left ``started`` past ``stale_after_hours``: its
   process died) produced no model to give time to, so it does not hold the next alarm, or a
   retry of the failed run, back for a day; it counts for the budget, which caps a crash loop;
4. **budget**: at most ``max_runs_per_period`` attempts (failed ones included) per rolling
   ``period_days``;
5. **challenger shadowing**: the challenger an earlier retrain registered is still short of
   the spec's shadow minimums (data days, labelled rows; :mod:`mlops.monitoring_shadow`).
   While drift persists every new window alarms again; a retrain each cooldown would move the
   ``challenger`` alias to a new candidate before the last one could be compared, and the loop
   would never reach a promotion. Once its shadow is complete (promoted, or refused and still
   challenger) or the alias is gone, retraining resumes. A challenger someone trained by hand
   does not hold a retrain back.

``force`` (a person starting the retrain) skips 1, 3, 4 and 5, not 2: training is deterministic,
so a forced run on identical data and spec would only register the same model again. Skipped
runs complete and say why; they are not failures.

The key covers every validated snapshot, scored application batches included, which bring no
labels; so the train flow also refuses a model bit for bit the champion or the challenger
under the same spec (:func:`mlops.registry.refuse_identical`), and the retrain then completes
as skipped, saying which version it would have copied.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mlops.model_spec import ModelSpec
    from mlops.settings import Settings
    from mlops.storage import ObjectStore

# Light on purpose (pydantic only at import): the retrain flow imports this module, and a
# triggered run shows Running only once its flow module is imported.

Severity = Literal["warn", "act", "manual"]
AttemptStatus = Literal["started", "completed", "failed"]
_RANK: Final[dict[str, int]] = {"warn": 1, "act": 2, "manual": 3}
MAX_KEPT_ATTEMPTS: Final = 200


def retrain_state_key(model: str) -> str:
    """Object-store key of a model's retrain attempts (beside the monitor's state)."""
    return f"monitoring/{model}/retrain_state.json"


def utc_now() -> datetime:
    return datetime.now(UTC)


class RetrainPolicy(BaseModel):
    """Cooldown, budget and severity floor of event-triggered retraining."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cooldown_hours: float = Field(
        24.0,
        ge=0.0,
        description="Minimum time after a retrain that completed (or is running) before the next.",
    )
    max_runs_per_period: int = Field(3, ge=0, description="Attempts allowed per rolling period.")
    period_days: float = Field(7.0, gt=0.0, description="Length of the budget's rolling period.")
    min_severity: Literal["warn", "act"] = Field(
        "warn", description="Events below this severity do not retrain."
    )
    stale_after_hours: float = Field(
        6.0, gt=0.0, description="An attempt still 'started' after this long no longer blocks its key."
    )


class RetrainAttempt(BaseModel):
    """One retrain that got past the checks (kept for cooldown, budget and idempotency)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    started_at: datetime
    status: AttemptStatus
    severity: str
    event_id: str | None = None
    flow_run_id: str | None = None
    finished_at: datetime | None = None
    version: int | None = None
    verdict: str | None = None
    error: str | None = None


class RetrainState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    attempts: list[RetrainAttempt] = []


class ShadowingChallenger(BaseModel):
    """The challenger a retrain registered, and how far its shadow has come (check 5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    registered_at: datetime
    days: int
    min_days: int
    labelled_rows: int
    min_labelled_rows: int


def retrained_challenger(state: RetrainState, challenger_version: int | None) -> RetrainAttempt | None:
    """The completed attempt that registered ``challenger_version``, if a retrain did."""
    if challenger_version is None:
        return None
    for attempt in reversed(state.attempts):
        if attempt.status == "completed" and attempt.version == challenger_version:
            return attempt
    return None


def shadowing_challenger(
    spec: ModelSpec, state: RetrainState, settings: Settings
) -> ShadowingChallenger | None:
    """The challenger an earlier retrain registered, while its shadow is short of the spec's
    minimums (read only when every other check lets the retrain run)."""
    from mlops.audit import open_audit_store
    from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
    from mlops.contracts import load_contract
    from mlops.monitoring_shadow import shadow_status
    from mlops.registry import make_registry
    from mlops.shadow_policy import effective_shadow_policy
    from mlops.storage import make_store

    registry = make_registry(settings)
    version = registry.get_alias_version(spec.name, ALIAS_CHALLENGER)
    attempt = retrained_challenger(state, version)
    if version is None or attempt is None:
        return None
    status = shadow_status(
        open_audit_store(settings),
        make_store(settings),
        model=spec.name,
        challenger_version=version,
        champion_version=registry.get_alias_version(spec.name, ALIAS_CHAMPION),
        applications=load_contract(settings.contracts_dir, spec.applications_contract),
        outcomes=load_contract(settings.contracts_dir, spec.outcomes_contract),
        policy=effective_shadow_policy(spec.shadow, settings.promotion_min_shadow_rows),
        hash_key=settings.entity_hash_key,
    )
    if status.complete:
        return None
    return ShadowingChallenger(
        version=version,
        registered_at=attempt.finished_at or attempt.started_at,
        days=status.days,
        min_days=status.min_days,
        labelled_rows=status.labelled_rows,
        min_labelled_rows=status.min_labelled_rows,
    )


class RetrainDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: bool
    reason: str
    key: str


def data_key(store: ObjectStore, model: str, spec_sha256: str, datasets: list[str]) -> str:
    """Idempotency key: model, spec hash and every validated snapshot of ``datasets``."""
    from mlops.catalog import list_snapshots

    parts = [f"model:{model}", f"spec:{spec_sha256}"]
    for dataset in datasets:
        shas = sorted(e.sha256 for e in list_snapshots(store, dataset))
        parts.append(f"{dataset}:{','.join(shas)}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()


def decide(
    state: RetrainState,
    policy: RetrainPolicy,
    *,
    key: str,
    severity: str,
    now: datetime | None = None,
    force: bool = False,
    shadowing: ShadowingChallenger | None = None,
) -> RetrainDecision:
    """Run or skip, with the reason (see the module docstring for the order of checks).

    ``shadowing``: the retrained challenger whose shadow is not complete yet, if any."""
    now = now or utc_now()

    def skip(reason: str) -> RetrainDecision:
        return RetrainDecision(run=False, reason=reason, key=key)

    if not force and _RANK.get(severity, 0) < _RANK[policy.min_severity]:
        return skip(f"severity {severity!r} is below the retrain floor {policy.min_severity!r}")
    stale = now - timedelta(hours=policy.stale_after_hours)
    for a in reversed(state.attempts):
        if a.key != key:
            continue
        if a.status == "completed":
            version = f" (version {a.version})" if a.version is not None else ""
            return skip(
                f"already retrained on this data{version} at {a.started_at:%Y-%m-%d %H:%M:%S}Z; key {key[:12]}"
            )
        if a.status == "started" and a.started_at > stale:
            return skip(
                f"a retrain on this data started at {a.started_at:%Y-%m-%d %H:%M:%S}Z is still running"
            )
    if force:
        return RetrainDecision(
            run=True, reason="forced by a person (cooldown and budget not applied)", key=key
        )
    cooling = [a.started_at for a in state.attempts if _holds_cooldown(a, stale)]
    if cooling:
        last = max(cooling)
        until = last + timedelta(hours=policy.cooldown_hours)
        if now < until:
            return skip(
                f"cooldown: last retrain started {last:%Y-%m-%d %H:%M:%S}Z, "
                f"next allowed after {until:%Y-%m-%d %H:%M:%S}Z ({policy.cooldown_hours:g} h)"
            )
    since = now - timedelta(days=policy.period_days)
    used = sum(a.started_at > since for a in state.attempts)
    if used >= policy.max_runs_per_period:
        return skip(
            f"budget: {used} retrain(s) in the last {policy.period_days:g} day(s), "
            f"limit {policy.max_runs_per_period}"
        )
    if shadowing is not None:
        c = shadowing
        return skip(
            f"challenger version {c.version}, registered by the retrain of "
            f"{c.registered_at:%Y-%m-%d %H:%M:%S}Z, is still shadowing the champion ({c.days} of "
            f"{c.min_days} data days, {c.labelled_rows} of {c.min_labelled_rows} labelled rows): a new "
            "retrain would replace it before it can be compared. Retraining resumes once its shadow "
            "is complete or the alias is removed; a person may force one"
        )
    return RetrainDecision(run=True, reason=f"severity {severity}; new data (key {key[:12]})", key=key)


def _holds_cooldown(attempt: RetrainAttempt, stale: datetime) -> bool:
    """Completed attempts, and started ones not yet stale (still running), start the cooldown."""
    return attempt.status == "completed" or (attempt.status == "started" and attempt.started_at > stale)


def load_retrain_state(store: ObjectStore, model: str) -> RetrainState:
    key = retrain_state_key(model)
    if not store.exists(key):
        return RetrainState(model_name=model)
    return RetrainState.model_validate_json(store.get_bytes(key))


def save_retrain_state(store: ObjectStore, state: RetrainState) -> None:
    kept = state.attempts[-MAX_KEPT_ATTEMPTS:]
    store.put_bytes(
        retrain_state_key(state.model_name),
        state.model_copy(update={"attempts": kept}).model_dump_json(indent=1).encode(),
    )


def start_attempt(
    store: ObjectStore,
    model: str,
    decision: RetrainDecision,
    *,
    severity: str,
    event_id: str | None,
    flow_run_id: str | None,
) -> RetrainAttempt:
    """Record the attempt before training starts (so a crash still counts for the budget, and a
    running attempt holds the cooldown and its key)."""
    state = load_retrain_state(store, model)
    attempt = RetrainAttempt(
        key=decision.key,
        started_at=utc_now(),
        status="started",
        severity=severity,
        event_id=event_id,
        flow_run_id=flow_run_id,
    )
    save_retrain_state(store, state.model_copy(update={"attempts": [*state.attempts, attempt]}))
    return attempt


def finish_attempt(
    store: ObjectStore,
    model: str,
    attempt: RetrainAttempt,
    *,
    status: AttemptStatus,
    version: int | None = None,
    verdict: str | None = None,
    error: str | None = None,
) -> RetrainAttempt:
    state = load_retrain_state(store, model)
    done = attempt.model_copy(
        update={
            "status": status,
            "finished_at": utc_now(),
            "version": version,
            "verdict": verdict,
            "error": error,
        }
    )
    attempts = [
        done if (a.key, a.started_at) == (attempt.key, attempt.started_at) else a for a in state.attempts
    ]
    if done not in attempts:
        attempts.append(done)
    save_retrain_state(store, state.model_copy(update={"attempts": attempts}))
    return done
