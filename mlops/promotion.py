"""Promotion: the recorded bootstrap of the first champion, and shadow-based promotion.

Bootstrap (no champion yet): the passing challenger becomes champion through an explicit,
recorded bootstrap (who, when, which decision record).

Shadow promotion (a champion and a challenger): the challenger is compared with the champion
on the shadow period's labelled outcomes (:mod:`mlops.shadow_comparison`), approved per the
promotion policy (:class:`~mlops.settings.Settings`: ``auto`` approves and records it, ``manual``
needs an allowed approver), then moved by :func:`commit_promotion`'s steps, in this order:

1. ``tag_version``: pending-promotion tags on the new version (promotion id, previous
   champion, record and dossier locations). Harmless while the version is not champion.
2. ``record_rollback_target``: registered-model tags, ``ROLLBACK_TARGET_FOR_TAG`` = new version
   first, then ``ROLLBACK_TARGET_TAG`` = previous champion. A reader trusts the target only
   while ``FOR`` names the current champion (:func:`read_rollback_target`), so neither a
   half-written pair nor a promotion that never committed misleads a rollback.
3. ``move_champion``: the ``champion`` alias is set to the new version: the commit point. An
   alias names one version, so there is exactly one champion before and after.
4. ``stamp_version``: ``mlops.promotion.kind/by/at`` on the new version, the marks that say
   "was champion" (rollback reads them as the promotion history), written only once it is.
5. ``append_audit_record``: the ``promotion`` record in the audit chain (idempotent by
   promotion id).
6. ``clear_challenger``: the ``challenger`` alias is removed: the promotion is done.

A crash before 3 leaves the old champion with every old fact still true; promote runs afresh.
A crash after 3 leaves the new champion with its promotion id on its tags; the next promote
finds it (:func:`unfinished_promotion`) and finishes 4, 5, 6 and the dossier. Inside the promote
flow the steps run in a Prefect transaction whose rollback hooks undo them in reverse
(:data:`UNDO_STEPS`), so an error there restores the previous champion.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.errors import InputError, WorkRefused
from mlops.lineage import (
    NONE_VALUE,
    PROMOTION_BOOTSTRAP,
    PROMOTION_RECORD_ARTIFACT,
    TAG_DECISION_RECORD_ID,
    TAG_DECISION_RECORD_URI,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_KIND,
    TAG_PROMOTION_RECORD_URI,
    TAG_VERDICT,
)
from mlops.registry import ModelRegistry, require_registered_model
from mlops.settings import ApprovalPolicy, Settings
from mlops.shadow_comparison import ShadowEvidence
from mlops.storage import ObjectStore

if TYPE_CHECKING:
    from mlops.registry import MlflowRegistry
    from mlops.settings import Settings

PASSING_VERDICTS = ("passed", "bootstrap")

# --- names shared with other stages -----------------------------------------------------------

# Registered-model tag: the version to roll back to (the champion before the last promotion;
# "none" after a bootstrap). mlops/rollback.py imports it; read it with read_rollback_target.
ROLLBACK_TARGET_TAG: Final = "mlops.rollback_target"
# Registered-model tag: the champion version ROLLBACK_TARGET_TAG applies to.
ROLLBACK_TARGET_FOR_TAG: Final = "mlops.rollback_target.for"

# Version tags written by a promotion (besides mlops.lineage's TAG_PROMOT*).
TAG_PROMOTION_ID: Final = "mlops.promotion.id"
TAG_PREVIOUS_CHAMPION: Final = "mlops.promotion.previous_champion"
TAG_DOSSIER_URI: Final = "mlops.promotion.dossier_uri"
# Written before the commit point (harmless on a version that is not champion) ...
PENDING_VERSION_TAGS: Final = (
    TAG_PROMOTION_ID,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTION_RECORD_URI,
    TAG_DOSSIER_URI,
)
# ... and after it: the marks of a version that was champion.
CHAMPION_VERSION_TAGS: Final = (TAG_PROMOTION_KIND, TAG_PROMOTED_BY, TAG_PROMOTED_AT)
PROMOTION_VERSION_TAGS: Final = (*PENDING_VERSION_TAGS, *CHAMPION_VERSION_TAGS)
# Version or training-run tags naming the event that triggered retraining (set by whoever
# starts the train flow from an event; absent = started by hand).
TAG_TRIGGER_EVENT_ID: Final = "mlops.trigger.event_id"
TAG_TRIGGER_EVENT: Final = "mlops.trigger.event"

PROMOTION_SHADOW: Final = "shadow"
APPROVER_AUTO_POLICY: Final = "auto-policy"

# Outcomes of a shadow promotion, as written to the audit record's ``decision``.
OUTCOME_PROMOTED: Final = "promoted"
OUTCOME_REFUSED: Final = "refused"
OUTCOME_ABORTED: Final = "aborted"  # committed steps undone by the transaction's rollback

# Object-store keys.
PROMOTION_RECORDS_PREFIX: Final = "promotions"
DOSSIERS_PREFIX: Final = "dossiers"

# Test-only crash injection: the name of a commit step after which to raise InjectedCrash.
CRASH_AFTER_ENV: Final = "MLOPS_PROMOTION_CRASH_AFTER"

STEP_TAG_VERSION: Final = "tag_version"
STEP_RECORD_ROLLBACK_TARGET: Final = "record_rollback_target"
STEP_MOVE_CHAMPION: Final = "move_champion"
STEP_STAMP_VERSION: Final = "stamp_version"
STEP_APPEND_AUDIT_RECORD: Final = "append_audit_record"
STEP_CLEAR_CHALLENGER: Final = "clear_challenger"
COMMIT_STEPS: Final = (
    STEP_TAG_VERSION,
    STEP_RECORD_ROLLBACK_TARGET,
    STEP_MOVE_CHAMPION,
    STEP_STAMP_VERSION,
    STEP_APPEND_AUDIT_RECORD,
    STEP_CLEAR_CHALLENGER,
)

ApprovalDecision = Literal["approve", "reject"]
ApprovalChannel = Literal["auto-policy", "cli", "prefect-ui", "timeout", "no-form", "none"]


# --- errors ------------------------------------------------------------------------------------


class PromotionRefused(WorkRefused):
    """A promotion was refused (worse challenger, too little evidence, approval refused)."""

    def __init__(self, message: str, *, hint: str | None = None, promotion_id: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.promotion_id = promotion_id


class PromotionConflict(PromotionRefused):
    """The registry changed between the decision and the commit (another promotion, a rollback)."""


class InjectedCrash(RuntimeError):
    """Raised by :func:`crash_seam` in tests to simulate a crash between two commit steps."""


def crash_seam(step: str, crash_after: str | None = None) -> None:
    """Test seam between commit steps: raise if ``crash_after`` (or the env var) names ``step``."""
    target = crash_after if crash_after is not None else os.environ.get(CRASH_AFTER_ENV)
    if target and target == step:
        raise InjectedCrash(f"injected crash after promotion step {step!r}")


# --- approval ----------------------------------------------------------------------------------


class Approval(BaseModel):
    """Who decided a promotion, how, and whether that person may decide it."""

    policy: ApprovalPolicy
    channel: ApprovalChannel
    approver: str
    decision: ApprovalDecision
    reason: str
    allowed: bool
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    requested_by: str | None = None

    @property
    def approved(self) -> bool:
        return self.decision == "approve" and self.allowed

    def refusal(self, allowed_names: list[str]) -> str | None:
        """Why this approval does not count, or None when it does."""
        if self.channel in ("timeout", "no-form"):  # nobody answered: the reason says why and what to do
            return self.reason
        if not self.allowed:
            listed = ", ".join(allowed_names) if allowed_names else "nobody (MLOPS_APPROVERS is empty)"
            return f"{self.approver!r} is not an allowed approver (allowed: {listed})"
        if self.decision == "reject":
            return f"rejected by {self.approver}: {self.reason}"
        return None


def policy_approval(settings: Settings, cli_approver: str | None, requested_by: str) -> Approval | None:
    """The approval the policy or the command line gives, or None: ask a person (manual)."""
    if settings.approval_policy == "auto":
        return Approval(
            policy="auto",
            channel="auto-policy",
            approver=APPROVER_AUTO_POLICY,
            decision="approve",
            reason="promotion policy 'auto': the challenger passed every gate on the shadow rows",
            allowed=True,
            requested_by=requested_by,
        )
    if cli_approver is None:
        return None
    return Approval(
        policy="manual",
        channel="cli",
        approver=cli_approver,
        decision="approve",
        reason="approved on the command line (--approver)",
        allowed=cli_approver in settings.approvers,
        requested_by=requested_by,
    )


def form_approval(
    settings: Settings, approver: str, decision: ApprovalDecision, reason: str, requested_by: str
) -> Approval:
    """The answer a person gave in the Prefect UI form."""
    name = approver.strip()
    return Approval(
        policy=settings.approval_policy,
        channel="prefect-ui",
        approver=name,
        decision=decision,
        reason=reason,
        allowed=name in settings.approvers,
        requested_by=requested_by,
    )


def timed_out_approval(settings: Settings, requested_by: str) -> Approval:
    return Approval(
        policy=settings.approval_policy,
        channel="timeout",
        approver=NONE_VALUE,
        decision="reject",
        reason=f"no approval within {settings.approval_timeout_seconds} s",
        allowed=False,
        requested_by=requested_by,
    )


def no_form_approval(settings: Settings, requested_by: str) -> Approval:
    """Manual policy, no ``--approver``, and no Prefect server whose UI could show the approval
    form (the command started a temporary one, gone with it): refused at once instead of
    waiting ``approval_timeout_seconds`` for an answer nobody can give."""
    return Approval(
        policy=settings.approval_policy,
        channel="no-form",
        approver=NONE_VALUE,
        decision="reject",
        reason=(
            "policy 'manual' needs a person's approval, and no Prefect server can show the approval "
            "form (no PREFECT_API_URL): give --approver WHO (one of MLOPS_APPROVERS), or start the "
            "promote deployment from the Prefect UI (make up) and approve in its paused run"
        ),
        allowed=False,
        requested_by=requested_by,
    )


def no_approvers_refusal(settings: Settings) -> str | None:
    """Manual policy with nobody allowed to approve: refuse before asking anyone."""
    if settings.approval_policy == "manual" and not settings.approvers:
        return "promotion policy is 'manual' but no approvers are configured (MLOPS_APPROVERS)"
    return None


def bootstrap_approval_refusal(settings: Settings, approver: str | None) -> str | None:
    """Why the first champion may not be appointed as asked, or None.

    Under the ``manual`` policy the first champion, too, needs someone of MLOPS_APPROVERS (as
    ``--approver``, or the promote deployment's ``approver`` parameter): it is the first model
    to decide anything. Under ``auto`` the bootstrap records who asked, as before."""
    if settings.approval_policy != "manual":
        return None
    nobody = no_approvers_refusal(settings)
    if nobody is not None:
        return nobody
    if approver is None:
        return (
            "policy 'manual': the first champion needs a person's approval too: give --approver WHO "
            "(one of MLOPS_APPROVERS), or the approver parameter of the promote deployment"
        )
    if approver not in settings.approvers:
        return f"{approver!r} is not an allowed approver (allowed: {', '.join(settings.approvers)})"
    return None


def record_bootstrap_refusal(
    backends: PromotionBackends,
    name: str,
    version: int | None,
    *,
    requested_by: str,
    reason: str,
    flow_run_id: str | None,
) -> str:
    """The audit record of a refused bootstrap (nothing else changed); returns its promotion id."""
    promotion_id = str(uuid.uuid4())
    audit.append_event(
        backends.audit,
        audit.RECORD_PROMOTION,
        {
            "promotion_id": promotion_id,
            "kind": PROMOTION_BOOTSTRAP,
            "outcome": OUTCOME_REFUSED,
            "from_version": None,
            "to_version": version,
            "requested_by": requested_by,
            "reason": reason,
            "flow_run_id": flow_run_id,
        },
        model_name=name,
        model_version=version,
        model_alias=ALIAS_CHALLENGER,
        batch_id=promotion_id,
        decision=OUTCOME_REFUSED,
    )
    return promotion_id


# --- side effects beyond the ModelRegistry protocol ---------------------------------------------


class RegistryMetadata(Protocol):
    """Registered-model tags, tag deletion and text artifacts (to fold into ModelRegistry)."""

    def model_tags(self, name: str) -> dict[str, str]: ...
    def set_model_tag(self, name: str, key: str, value: str) -> None: ...
    def delete_model_tag(self, name: str, key: str) -> None: ...
    def delete_version_tag(self, name: str, version: int, key: str) -> None: ...
    def run_tags(self, run_id: str) -> dict[str, str]: ...
    def log_run_text(self, run_id: str, text: str, artifact_file: str) -> str: ...


class MlflowRegistryMetadata:
    """:class:`RegistryMetadata` on the MLflow client of an :class:`MlflowRegistry`."""

    def __init__(self, registry: MlflowRegistry) -> None:
        self.registry = registry

    def model_tags(self, name: str) -> dict[str, str]:
        return dict(self.registry.client.get_registered_model(name).tags or {})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.registry.client.set_registered_model_tag(name, key, value)

    def delete_model_tag(self, name: str, key: str) -> None:
        if key in self.model_tags(name):
            self.registry.client.delete_registered_model_tag(name, key)

    def delete_version_tag(self, name: str, version: int, key: str) -> None:
        if key in self.registry.version_tags(name, version):
            self.registry.client.delete_model_version_tag(name, str(int(version)), key)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.registry.client.get_run(run_id).data.tags)

    def log_run_text(self, run_id: str, text: str, artifact_file: str) -> str:
        self.registry.client.log_text(run_id, text, artifact_file)
        return f"{self.registry.client.get_run(run_id).info.artifact_uri}/{artifact_file}"


@dataclass(frozen=True)
class PromotionBackends:
    """Everything a promotion writes to: registry, its metadata, audit store, object store."""

    registry: ModelRegistry
    metadata: RegistryMetadata
    audit: Engine
    store: ObjectStore

    @classmethod
    def from_settings(cls, settings: Settings) -> PromotionBackends:
        from mlops.registry import make_registry
        from mlops.storage import make_store

        registry = make_registry(settings)
        return cls(
            registry=registry,
            metadata=MlflowRegistryMetadata(registry),
            audit=audit.open_audit_store(settings),
            store=make_store(settings),
        )


# --- records -------------------------------------------------------------------------------------


class PromotionRecord(BaseModel):
    """Who moved which version to champion, when, why, and on which decision record."""

    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex)  # = the promotion id
    model_name: str
    kind: Literal["bootstrap", "shadow"]
    version: int
    previous_champion: int | None
    approved_by: str
    approved_at: datetime
    gate_verdict: str
    decision_record_id: str | None
    decision_record_uri: str | None
    flow_run_id: str | None
    reason: str
    approval_channel: str | None = None
    dossier_uri: str | None = None
    dossier_markdown_uri: str | None = None
    audit_record_id: str | None = None


class PromotionResult(BaseModel):
    model_name: str
    champion_version: int
    promoted: bool  # False when the version already was champion (clean-up only)
    record: PromotionRecord | None
    record_uri: str | None
    recovered: bool = False  # True when this run finished a promotion a crash interrupted


class RegistryState(BaseModel):
    champion: int | None
    challenger: int | None


def read_registry_state(registry: ModelRegistry, name: str) -> RegistryState:
    """Where the aliases point; refuses a model name the registry does not know."""
    state = RegistryState(
        champion=registry.get_alias_version(name, ALIAS_CHAMPION),
        challenger=registry.get_alias_version(name, ALIAS_CHALLENGER),
    )
    if state.champion is None and state.challenger is None:
        require_registered_model(registry, name)
    return state


# --- bootstrap -----------------------------------------------------------------------------------


def _already_done(registry: ModelRegistry, name: str, champion: int) -> PromotionResult:
    registry.delete_alias(name, ALIAS_CHALLENGER)
    return PromotionResult(
        model_name=name, champion_version=champion, promoted=False, record=None, record_uri=None
    )


def bootstrap_champion(
    registry: ModelRegistry, name: str, *, approved_by: str, flow_run_id: str | None = None
) -> PromotionResult:
    """Make the passing challenger the first champion, or refuse and say why (nothing changes)."""
    champion = registry.get_alias_version(name, ALIAS_CHAMPION)
    challenger = registry.get_alias_version(name, ALIAS_CHALLENGER)
    if champion is not None and challenger == champion:
        return _already_done(registry, name, champion)
    if champion is not None:
        waiting = f"; challenger version {challenger} waits" if challenger is not None else ""
        raise WorkRefused(
            f"{name} already has a champion (version {champion}){waiting}. Replacing a champion goes "
            "through the shadow promotion (compare on shadow traffic, then approval); nothing was changed.",
            hint="run the promote flow (mlops promote), which compares on the shadow period",
        )
    if challenger is None:
        require_registered_model(registry, name)
        raise WorkRefused(
            f"{name} has no challenger to promote",
            hint="run `mlops train` until a candidate passes its gates",
        )
    tags = registry.version_tags(name, challenger)
    verdict = tags.get(TAG_VERDICT)
    if verdict not in PASSING_VERDICTS:
        raise WorkRefused(
            f"{name} version {challenger} carries gate verdict {verdict!r}, not one of {list(PASSING_VERDICTS)}",
            hint="only a candidate that passed its gates can become champion",
        )
    record = PromotionRecord(
        model_name=name,
        kind=PROMOTION_BOOTSTRAP,
        version=challenger,
        previous_champion=None,
        approved_by=approved_by,
        approved_at=datetime.now(UTC),
        gate_verdict=str(verdict),
        decision_record_id=tags.get(TAG_DECISION_RECORD_ID),
        decision_record_uri=tags.get(TAG_DECISION_RECORD_URI),
        flow_run_id=flow_run_id,
        reason="bootstrap: no champion existed; the challenger passed its gates",
    )
    run_id = registry.version_run_id(name, challenger)
    uri = registry.log_run_json(
        run_id, record.model_dump(mode="json"), f"promotions/{record.record_id}-{PROMOTION_RECORD_ARTIFACT}"
    )
    registry.set_version_tags(
        name,
        challenger,
        {
            TAG_PROMOTION_KIND: record.kind,
            TAG_PROMOTED_BY: approved_by,
            TAG_PROMOTED_AT: record.approved_at.isoformat(),
            TAG_PROMOTION_RECORD_URI: uri,
        },
    )
    registry.set_alias(name, ALIAS_CHAMPION, challenger)
    registry.delete_alias(name, ALIAS_CHALLENGER)
    return PromotionResult(
        model_name=name, champion_version=challenger, promoted=True, record=record, record_uri=uri
    )


def record_bootstrap(backends: PromotionBackends, result: PromotionResult) -> str | None:
    """After a bootstrap: rollback target "none" for the new champion and the audit record.

    Returns the audit record id (the existing one when already recorded)."""
    record = result.record
    if record is None or not result.promoted:
        return None
    write_rollback_target(backends.metadata, record.model_name, champion=record.version, target=None)
    existing = promotion_audit_records(backends.audit, record.record_id)
    if existing:
        return str(existing[0]["record_id"])
    payload = {
        "promotion_id": record.record_id,
        "kind": record.kind,
        "outcome": OUTCOME_PROMOTED,
        "from_version": None,
        "to_version": record.version,
        "approver": record.approved_by,
        "approved_at": record.approved_at.isoformat(),
        "gate_verdict": record.gate_verdict,
        "decision_record_id": record.decision_record_id,
        "decision_record_uri": record.decision_record_uri,
        "promotion_record_uri": result.record_uri,
        "rollback_target": None,
        "flow_run_id": record.flow_run_id,
        "reason": record.reason,
    }
    appended = audit.append_event(
        backends.audit,
        audit.RECORD_PROMOTION,
        payload,
        model_name=record.model_name,
        model_version=record.version,
        model_alias=ALIAS_CHAMPION,
        batch_id=record.record_id,
        decision=OUTCOME_PROMOTED,
    )
    return str(appended.record_ids.iloc[0])


def unfinished_bootstrap(registry: MlflowRegistry, engine: Engine, name: str) -> PromotionResult | None:
    """A bootstrap past its alias move whose audit record is missing (the run died between the
    ``champion`` alias write and :func:`record_bootstrap`), read back from the champion's run.

    The champion's tags say it was bootstrapped and where its :class:`PromotionRecord` is (both
    written before the alias moved); the record's id names its audit record."""
    champion = registry.get_alias_version(name, ALIAS_CHAMPION)
    if champion is None:
        return None
    tags = registry.version_tags(name, champion)
    uri = tags.get(TAG_PROMOTION_RECORD_URI, "")
    if tags.get(TAG_PROMOTION_KIND) != PROMOTION_BOOTSTRAP or "/promotions/" not in uri:
        return None
    artifact_file = "promotions/" + uri.rsplit("/promotions/", 1)[1]
    record_id = artifact_file.removeprefix("promotions/").split("-", 1)[0]
    if promotion_audit_records(engine, record_id):
        return None
    record = PromotionRecord.model_validate(
        registry.read_run_json(registry.version_run_id(name, champion), artifact_file)
    )
    if record.version != champion or record.kind != PROMOTION_BOOTSTRAP:
        return None
    return PromotionResult(
        model_name=name,
        champion_version=champion,
        promoted=True,
        record=record,
        record_uri=uri,
        recovered=True,
    )


# --- the rollback target ------------------------------------------------------------------------


def _version_or_none(value: str | None) -> int | None:
    if value is None or value in ("", NONE_VALUE):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def read_rollback_target(registry: ModelRegistry, metadata: RegistryMetadata, name: str) -> int | None:
    """The version to roll the current champion back to (None: nothing to go back to).

    ``ROLLBACK_TARGET_TAG`` counts only while ``ROLLBACK_TARGET_FOR_TAG`` names the current
    champion; otherwise (a promotion interrupted before its commit point, or a champion moved
    by hand) the champion's own ``TAG_PREVIOUS_CHAMPION`` version tag answers.
    """
    champion = registry.get_alias_version(name, ALIAS_CHAMPION)
    if champion is None:
        return None
    tags = metadata.model_tags(name)
    if tags.get(ROLLBACK_TARGET_FOR_TAG) == str(champion):
        return _version_or_none(tags.get(ROLLBACK_TARGET_TAG))
    return _version_or_none(registry.version_tags(name, champion).get(TAG_PREVIOUS_CHAMPION))


def write_rollback_target(
    metadata: RegistryMetadata, name: str, *, champion: int, target: int | None
) -> None:
    """Record that a rollback of ``champion`` goes to ``target`` (None: nowhere).

    ``FOR`` first: from that write on, the old target no longer counts for anyone. Anyone who
    moves the champion (promotion, rollback) should record the new pair through this."""
    metadata.set_model_tag(name, ROLLBACK_TARGET_FOR_TAG, str(int(champion)))
    metadata.set_model_tag(name, ROLLBACK_TARGET_TAG, NONE_VALUE if target is None else str(int(target)))


# --- the shadow promotion record -----------------------------------------------------------------


class PreState(BaseModel):
    """What the registry looked like before the commit (the rollback hooks restore it)."""

    champion: int
    challenger: int
    model_tags: dict[str, str | None]
    version_tags: dict[str, str | None]
    rollback_target: int | None  # of the champion before this promotion


class ShadowPromotion(BaseModel):
    """One shadow promotion decision: evidence, approval, and (if approved) the plan to commit.

    Written to the object store (``promotions/<model>/<id>.json``) before anything moves, and
    logged on the challenger's MLflow run, refused or not.
    """

    promotion_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    model_name: str
    kind: Literal["shadow"] = "shadow"
    from_version: int
    to_version: int
    outcome: Literal["approved", "refused"]
    reasons: list[str]
    evidence: ShadowEvidence | None
    approval: Approval | None
    requested_by: str
    flow_run_id: str | None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    pre: PreState | None = None
    record_uri: str | None = None
    dossier_uri: str | None = None
    dossier_markdown_uri: str | None = None

    @property
    def record_key(self) -> str:
        return promotion_record_key(self.model_name, self.promotion_id)

    @property
    def approver(self) -> str:
        return self.approval.approver if self.approval else NONE_VALUE


def promotion_record_key(model_name: str, promotion_id: str) -> str:
    return f"{PROMOTION_RECORDS_PREFIX}/{model_name}/{promotion_id}.json"


def dossier_keys(model_name: str, version: int) -> tuple[str, str]:
    """Object-store keys of a version's compliance dossier (JSON, Markdown)."""
    base = f"{DOSSIERS_PREFIX}/{model_name}/{int(version)}"
    return f"{base}.json", f"{base}.md"


def capture_pre_state(backends: PromotionBackends, name: str, champion: int, challenger: int) -> PreState:
    model_tags = backends.metadata.model_tags(name)
    version_tags = backends.registry.version_tags(name, challenger)
    return PreState(
        champion=champion,
        challenger=challenger,
        model_tags={k: model_tags.get(k) for k in (ROLLBACK_TARGET_TAG, ROLLBACK_TARGET_FOR_TAG)},
        version_tags={k: version_tags.get(k) for k in PROMOTION_VERSION_TAGS},
        rollback_target=read_rollback_target(backends.registry, backends.metadata, name),
    )


def save_promotion_record(backends: PromotionBackends, promotion: ShadowPromotion) -> ShadowPromotion:
    """Fill in the record/dossier locations, write the record to the store and the challenger's run."""
    json_key, md_key = dossier_keys(promotion.model_name, promotion.to_version)
    done = promotion.model_copy(
        update={
            "record_uri": backends.store.uri(promotion.record_key),
            "dossier_uri": backends.store.uri(json_key) if promotion.outcome == "approved" else None,
            "dossier_markdown_uri": backends.store.uri(md_key) if promotion.outcome == "approved" else None,
        }
    )
    data = done.model_dump(mode="json")
    backends.store.put_bytes(done.record_key, json.dumps(data, indent=2, sort_keys=True).encode())
    run_id = backends.registry.version_run_id(done.model_name, done.to_version)
    backends.registry.log_run_json(run_id, data, f"promotions/{done.promotion_id}.json")
    return done


def load_promotion_record(store: ObjectStore, model_name: str, promotion_id: str) -> ShadowPromotion | None:
    key = promotion_record_key(model_name, promotion_id)
    if not store.exists(key):
        return None
    return ShadowPromotion.model_validate_json(store.get_bytes(key))


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else value


def audit_payload(promotion: ShadowPromotion, outcome: str) -> dict[str, Any]:
    """The promotion record's payload in the audit chain (the full record is at record_uri)."""
    evidence = promotion.evidence
    record = evidence.decision_record if evidence else None
    comparison = next((c for c in record.checks if c.comparison is not None), None) if record else None
    approval = promotion.approval
    return {
        "promotion_id": promotion.promotion_id,
        "kind": promotion.kind,
        "outcome": outcome,
        "from_version": promotion.from_version,
        "to_version": promotion.to_version,
        "approver": approval.approver if approval else None,
        "approval_channel": approval.channel if approval else None,
        "approval_policy": approval.policy if approval else None,
        "approval_decision": approval.decision if approval else None,
        "approval_reason": approval.reason if approval else None,
        "approver_allowed": approval.allowed if approval else None,
        "decided_at": approval.decided_at.isoformat() if approval else None,
        "requested_by": promotion.requested_by,
        "reasons": list(promotion.reasons),
        "gate_verdict": record.verdict if record else None,
        "decision_record_id": record.record_id if record else None,
        "shadow_rows": evidence.data.labelled if evidence else None,
        "shadow_positives": evidence.data.positives if evidence else None,
        "metric": comparison.metric if comparison else None,
        "difference": _finite(comparison.comparison.difference)
        if comparison and comparison.comparison
        else None,
        "ci": [_finite(v) for v in comparison.ci] if comparison and comparison.ci else None,
        "promotion_record_uri": promotion.record_uri,
        "dossier_uri": promotion.dossier_uri,
        "rollback_target": promotion.from_version if outcome == OUTCOME_PROMOTED else None,
        "flow_run_id": promotion.flow_run_id,
    }


def promotion_audit_records(engine: Engine, promotion_id: str) -> list[dict[str, Any]]:
    """The audit chain's promotion records of one promotion (``batch_id`` = promotion id)."""
    table = audit.audit_records
    stmt = (
        sa.select(table.c.seq, table.c.record_id, table.c.decision, table.c.model_version, table.c.payload)
        .where(audit.is_event(audit.RECORD_PROMOTION), table.c.batch_id == promotion_id)
        .order_by(table.c.seq)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]


def _append_promotion_event(backends: PromotionBackends, promotion: ShadowPromotion, outcome: str) -> str:
    appended = audit.append_event(
        backends.audit,
        audit.RECORD_PROMOTION,
        audit_payload(promotion, outcome),
        model_name=promotion.model_name,
        model_version=promotion.to_version,
        model_alias=ALIAS_CHAMPION if outcome == OUTCOME_PROMOTED else ALIAS_CHALLENGER,
        batch_id=promotion.promotion_id,
        decision=outcome,
    )
    return str(appended.record_ids.iloc[0])


def record_refusal(backends: PromotionBackends, promotion: ShadowPromotion) -> ShadowPromotion:
    """Write a refused promotion everywhere a decision is kept: store, MLflow run, audit chain."""
    saved = save_promotion_record(backends, promotion)
    if not promotion_audit_records(backends.audit, saved.promotion_id):
        _append_promotion_event(backends, saved, OUTCOME_REFUSED)
    return saved


def record_abort(backends: PromotionBackends, promotion: ShadowPromotion, reason: str) -> None:
    """A promotion whose commit failed and whose steps the transaction undid: one ``aborted``
    record in the audit chain (the champion may have moved and moved back, and the stored plan
    still reads "approved"). None is added when the undo already answered a ``promoted`` one."""
    decisions = [row["decision"] for row in promotion_audit_records(backends.audit, promotion.promotion_id)]
    if OUTCOME_ABORTED in decisions:
        return
    aborted = promotion.model_copy(update={"reasons": [*promotion.reasons, reason]})
    _append_promotion_event(backends, aborted, OUTCOME_ABORTED)


def refusal_error(promotion: ShadowPromotion) -> PromotionRefused:
    return PromotionRefused(
        f"{promotion.model_name}: promotion of version {promotion.to_version} over champion "
        f"{promotion.from_version} refused: " + "; ".join(promotion.reasons),
        hint=f"the decision is recorded at {promotion.record_uri} and in the audit trail "
        f"(promotion {promotion.promotion_id}); the champion is unchanged",
        promotion_id=promotion.promotion_id,
    )


# --- the commit steps ------------------------------------------------------------------------------


def pending_version_tags(promotion: ShadowPromotion) -> dict[str, str]:
    return {
        TAG_PROMOTION_ID: promotion.promotion_id,
        TAG_PREVIOUS_CHAMPION: str(promotion.from_version),
        TAG_PROMOTION_RECORD_URI: promotion.record_uri or NONE_VALUE,
        TAG_DOSSIER_URI: promotion.dossier_uri or NONE_VALUE,
    }


def champion_version_tags(promotion: ShadowPromotion) -> dict[str, str]:
    approval = promotion.approval
    return {
        TAG_PROMOTION_KIND: PROMOTION_SHADOW,
        TAG_PROMOTED_BY: approval.approver if approval else NONE_VALUE,
        TAG_PROMOTED_AT: (approval.decided_at if approval else promotion.created_at).isoformat(),
    }


def _pre(promotion: ShadowPromotion) -> PreState:
    if promotion.pre is None or promotion.outcome != "approved":
        raise InputError(
            f"promotion {promotion.promotion_id} is not an approved plan with a captured pre-state"
        )
    return promotion.pre


def verify_unchanged(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    """Refuse if the aliases moved since the decision (checked before the first step)."""
    state = read_registry_state(backends.registry, promotion.model_name)
    pre = _pre(promotion)
    if (state.champion, state.challenger) != (pre.champion, pre.challenger):
        raise PromotionConflict(
            f"{promotion.model_name}: champion/challenger changed from v{pre.champion}/v{pre.challenger} "
            f"to {state.champion}/{state.challenger} while the promotion was decided; nothing was moved",
            hint="run promote again to decide on the current state",
            promotion_id=promotion.promotion_id,
        )


def step_tag_version(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    backends.registry.set_version_tags(
        promotion.model_name, promotion.to_version, pending_version_tags(promotion)
    )


def step_record_rollback_target(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    write_rollback_target(
        backends.metadata, promotion.model_name, champion=promotion.to_version, target=promotion.from_version
    )


def step_move_champion(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    """The commit point: one alias write. Idempotent; refuses if someone else moved it."""
    current = backends.registry.get_alias_version(promotion.model_name, ALIAS_CHAMPION)
    if current == promotion.to_version:
        return
    if current != promotion.from_version:
        raise PromotionConflict(
            f"{promotion.model_name}: the champion is version {current}, not {promotion.from_version} "
            "as when the promotion was decided; the champion was not moved",
            promotion_id=promotion.promotion_id,
        )
    backends.registry.set_alias(promotion.model_name, ALIAS_CHAMPION, promotion.to_version)


def step_stamp_version(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    backends.registry.set_version_tags(
        promotion.model_name, promotion.to_version, champion_version_tags(promotion)
    )


def step_append_audit_record(backends: PromotionBackends, promotion: ShadowPromotion) -> str:
    """Append the ``promotion`` record once per promotion id; returns its record id."""
    for row in promotion_audit_records(backends.audit, promotion.promotion_id):
        if row["decision"] == OUTCOME_PROMOTED:
            return str(row["record_id"])
    return _append_promotion_event(backends, promotion, OUTCOME_PROMOTED)


def step_clear_challenger(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    if backends.registry.get_alias_version(promotion.model_name, ALIAS_CHALLENGER) == promotion.to_version:
        backends.registry.delete_alias(promotion.model_name, ALIAS_CHALLENGER)


# --- undo (the transaction's rollback hooks; each idempotent, each puts the champion back first) ---


def restore_champion(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    """Undo our own alias move only: a champion someone else moved meanwhile stays."""
    pre = _pre(promotion)
    if backends.registry.get_alias_version(promotion.model_name, ALIAS_CHAMPION) == promotion.to_version:
        backends.registry.set_alias(promotion.model_name, ALIAS_CHAMPION, pre.champion)


def undo_clear_challenger(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    restore_champion(backends, promotion)
    if backends.registry.get_alias_version(promotion.model_name, ALIAS_CHALLENGER) is None:
        backends.registry.set_alias(promotion.model_name, ALIAS_CHALLENGER, _pre(promotion).challenger)


def undo_append_audit_record(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    """The chain is append-only: a committed record is answered by an ``aborted`` record."""
    restore_champion(backends, promotion)
    decisions = [row["decision"] for row in promotion_audit_records(backends.audit, promotion.promotion_id)]
    if OUTCOME_PROMOTED in decisions and OUTCOME_ABORTED not in decisions:
        aborted = promotion.model_copy(
            update={"reasons": [*promotion.reasons, "the promotion transaction rolled back"]}
        )
        _append_promotion_event(backends, aborted, OUTCOME_ABORTED)


def undo_move_champion(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    restore_champion(backends, promotion)


def undo_record_rollback_target(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    restore_champion(backends, promotion)
    pre = _pre(promotion)
    if backends.metadata.model_tags(promotion.model_name).get(ROLLBACK_TARGET_FOR_TAG) != str(
        promotion.to_version
    ):
        return  # not (or no longer) our pair
    # TARGET first, FOR last: FOR names the new version until the pair is whole again.
    for key in (ROLLBACK_TARGET_TAG, ROLLBACK_TARGET_FOR_TAG):
        value = pre.model_tags.get(key)
        if value is None:
            backends.metadata.delete_model_tag(promotion.model_name, key)
        else:
            backends.metadata.set_model_tag(promotion.model_name, key, value)


def _restore_version_tags(
    backends: PromotionBackends, promotion: ShadowPromotion, keys: tuple[str, ...]
) -> None:
    pre = _pre(promotion)
    restore = {k: v for k in keys if (v := pre.version_tags.get(k)) is not None}
    if restore:
        backends.registry.set_version_tags(promotion.model_name, promotion.to_version, restore)
    for key in keys:
        if pre.version_tags.get(key) is None:
            backends.metadata.delete_version_tag(promotion.model_name, promotion.to_version, key)


def undo_stamp_version(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    restore_champion(backends, promotion)
    _restore_version_tags(backends, promotion, CHAMPION_VERSION_TAGS)


def undo_tag_version(backends: PromotionBackends, promotion: ShadowPromotion) -> None:
    restore_champion(backends, promotion)
    _restore_version_tags(backends, promotion, PENDING_VERSION_TAGS)


STEPS: Final = {
    STEP_TAG_VERSION: step_tag_version,
    STEP_RECORD_ROLLBACK_TARGET: step_record_rollback_target,
    STEP_MOVE_CHAMPION: step_move_champion,
    STEP_STAMP_VERSION: step_stamp_version,
    STEP_APPEND_AUDIT_RECORD: step_append_audit_record,
    STEP_CLEAR_CHALLENGER: step_clear_challenger,
}
UNDO_STEPS: Final = {
    STEP_TAG_VERSION: undo_tag_version,
    STEP_RECORD_ROLLBACK_TARGET: undo_record_rollback_target,
    STEP_MOVE_CHAMPION: undo_move_champion,
    STEP_STAMP_VERSION: undo_stamp_version,
    STEP_APPEND_AUDIT_RECORD: undo_append_audit_record,
    STEP_CLEAR_CHALLENGER: undo_clear_challenger,
}


def commit_promotion(
    backends: PromotionBackends, promotion: ShadowPromotion, *, crash_after: str | None = None
) -> None:
    """Run every commit step in order, with no undo: a failure leaves the state where it stopped
    (what a killed process leaves). The promote flow runs the same steps as tasks inside a
    Prefect transaction instead, with :data:`UNDO_STEPS` as rollback hooks."""
    verify_unchanged(backends, promotion)
    for name in COMMIT_STEPS:
        STEPS[name](backends, promotion)
        if name != COMMIT_STEPS[-1]:
            crash_seam(name, crash_after)


# --- recovery --------------------------------------------------------------------------------------


def dossier_promotion_id(store: ObjectStore, model_name: str, version: int) -> str | None:
    """The promotion id in a version's stored dossier (None: no dossier)."""
    key, _ = dossier_keys(model_name, version)
    if not store.exists(key):
        return None
    value = json.loads(store.get_bytes(key)).get("promotion_id")
    return None if value is None else str(value)


def unfinished_promotion(backends: PromotionBackends, name: str) -> ShadowPromotion | None:
    """A shadow promotion past its commit point whose later steps or dossier are missing.

    The champion's pending tags name the promotion; it is finished when the challenger alias
    no longer points at the champion, the audit chain has its ``promoted`` record and the
    stored dossier carries its id (the dossier is written last).
    """
    state = read_registry_state(backends.registry, name)
    if state.champion is None:
        return None
    tags = backends.registry.version_tags(name, state.champion)
    promotion_id = tags.get(TAG_PROMOTION_ID)
    if not promotion_id:
        return None
    promotion = load_promotion_record(backends.store, name, promotion_id)
    if promotion is None or promotion.to_version != state.champion or promotion.outcome != "approved":
        return None
    decisions = [r["decision"] for r in promotion_audit_records(backends.audit, promotion_id)]
    finished = (
        state.challenger != state.champion
        and OUTCOME_PROMOTED in decisions
        and dossier_promotion_id(backends.store, name, state.champion) == promotion_id
    )
    return None if finished else promotion


def promotion_record_of(promotion: ShadowPromotion, audit_record_id: str | None) -> PromotionRecord:
    """The short :class:`PromotionRecord` (what the CLI prints) of a committed shadow promotion."""
    approval = promotion.approval
    evidence = promotion.evidence
    record = evidence.decision_record if evidence else None
    return PromotionRecord(
        record_id=promotion.promotion_id,
        model_name=promotion.model_name,
        kind=PROMOTION_SHADOW,
        version=promotion.to_version,
        previous_champion=promotion.from_version,
        approved_by=promotion.approver,
        approved_at=approval.decided_at if approval else promotion.created_at,
        gate_verdict=record.verdict if record else NONE_VALUE,
        decision_record_id=record.record_id if record else None,
        decision_record_uri=promotion.record_uri,
        flow_run_id=promotion.flow_run_id,
        reason=approval.reason if approval else "",
        approval_channel=approval.channel if approval else None,
        dossier_uri=promotion.dossier_uri,
        dossier_markdown_uri=promotion.dossier_markdown_uri,
        audit_record_id=audit_record_id,
    )
