"""Tasks of the promotion stage: bootstrap, shadow comparison, records, the commit steps, dossier.

Each task is a thin named wrapper over :mod:`mlops.promotion`, :mod:`mlops.shadow_comparison`
and :mod:`mlops.dossier`. The commit-step tasks run inside the promote flow's Prefect
transaction; each carries an ``on_rollback`` hook that undoes its step (reading the plan and
the settings the flow stored on the transaction), so an error inside the transaction restores
the previous champion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.transactions import Transaction

from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, EVENT_MODEL_PROMOTED, model_resource
from mlops.contracts import load_contract
from mlops.dossier import (
    ComplianceDossier,
    TriggerInfo,
    build_dossier,
    contract_results,
    dossier_json,
    dossier_markdown,
    trigger_from_tags,
    version_lineage,
    write_dossier,
)
from mlops.errors import MlopsError
from mlops.events import emit
from mlops.gates import gate_table_markdown
from mlops.lineage import TAG_MODEL_SPEC_SHA256, TAG_VERDICT
from mlops.model_spec import ModelSpec, load_model_spec, model_spec_hash
from mlops.performance import keyed_outcomes
from mlops.promotion import (
    PASSING_VERDICTS,
    STEP_APPEND_AUDIT_RECORD,
    STEP_CLEAR_CHALLENGER,
    STEP_MOVE_CHAMPION,
    STEP_RECORD_ROLLBACK_TARGET,
    STEP_STAMP_VERSION,
    STEP_TAG_VERSION,
    UNDO_STEPS,
    PromotionBackends,
    PromotionResult,
    RegistryState,
    ShadowPromotion,
    bootstrap_champion,
    capture_pre_state,
    promotion_record_of,
    read_registry_state,
    record_abort,
    record_bootstrap,
    record_bootstrap_refusal,
    record_refusal,
    save_promotion_record,
    step_append_audit_record,
    step_clear_challenger,
    step_move_champion,
    step_record_rollback_target,
    step_stamp_version,
    step_tag_version,
    unfinished_bootstrap,
    unfinished_promotion,
    verify_unchanged,
)
from mlops.registry import make_registry
from mlops.settings import Settings
from mlops.shadow_comparison import (
    LabelledPairs,
    ShadowEvidence,
    compare_on_shadow,
    label_pairs,
    outcomes_before_application,
    read_input_rows,
    read_version_records,
    shadow_days,
    trained_keys_of_versions,
)
from mlops.shadow_policy import effective_shadow_policy
from tasks.retry import retry_unless_bad_input

# Names under which the promote flow stores values on its transaction (read by rollback hooks).
TXN_PROMOTION: Final = "promotion"
TXN_SETTINGS: Final = "settings"
TRIGGER_EVENT_LOOKBACK: Final = timedelta(days=30)


def _artifact_key(model: str) -> str:
    return f"promotion-{model}"


# --- bootstrap (no champion yet) ---------------------------------------------------------------


@task(name="bootstrap-champion", cache_policy=NO_CACHE)
def bootstrap_champion_task(
    model: str, approved_by: str, settings: Settings, flow_run_id: str | None
) -> PromotionResult:
    return bootstrap_champion(
        make_registry(settings), model, approved_by=approved_by, flow_run_id=flow_run_id
    )


@task(name="refuse-bootstrap", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def refuse_bootstrap_task(
    model: str,
    version: int | None,
    requested_by: str,
    reason: str,
    settings: Settings,
    flow_run_id: str | None,
) -> str:
    """Record a refused bootstrap in the audit trail; returns its promotion id."""
    return record_bootstrap_refusal(
        PromotionBackends.from_settings(settings),
        model,
        version,
        requested_by=requested_by,
        reason=reason,
        flow_run_id=flow_run_id,
    )


@task(name="record-bootstrap", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def record_bootstrap_task(result: PromotionResult, settings: Settings) -> PromotionResult:
    """Rollback target "none" and the audit record of a bootstrap (idempotent)."""
    record_id = record_bootstrap(PromotionBackends.from_settings(settings), result)
    if result.record is None or record_id is None:
        return result
    return result.model_copy(
        update={"record": result.record.model_copy(update={"audit_record_id": record_id})}
    )


@task(name="publish-promotion-record", cache_policy=NO_CACHE)
def publish_promotion_record_task(result: PromotionResult) -> None:
    if result.record is None:
        markdown = f"# `{result.model_name}`: version {result.champion_version} already is champion\n"
    else:
        r = result.record
        markdown = "\n".join(
            [
                f"# `{r.model_name}`: version {r.version} is champion ({r.kind})",
                "",
                "| field | value |",
                "|---|---|",
                f"| approved by | {r.approved_by} |",
                f"| approved at | {r.approved_at.isoformat()} |",
                f"| previous champion | {r.previous_champion or 'none'} |",
                f"| gate verdict | {r.gate_verdict} |",
                f"| decision record | `{r.decision_record_id}` (`{r.decision_record_uri}`) |",
                f"| promotion record | `{result.record_uri}` |",
                f"| audit record | `{r.audit_record_id}` |",
                "",
                r.reason,
            ]
        )
    create_markdown_artifact(
        key=_artifact_key(result.model_name), markdown=markdown, description="Promotion record"
    )


# --- shadow promotion: state, evidence, decision records ---------------------------------------


@task(
    name="read-registry-state",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def read_registry_state_task(model: str, settings: Settings) -> RegistryState:
    return read_registry_state(make_registry(settings), model)


@task(name="find-unfinished-bootstrap", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def find_unfinished_bootstrap_task(model: str, settings: Settings) -> PromotionResult | None:
    backends = PromotionBackends.from_settings(settings)
    return unfinished_bootstrap(make_registry(settings), backends.audit, model)


@task(name="clear-bootstrapped-challenger", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def clear_bootstrapped_challenger_task(model: str, version: int, settings: Settings) -> None:
    registry = make_registry(settings)
    if registry.get_alias_version(model, ALIAS_CHALLENGER) == version:
        registry.delete_alias(model, ALIAS_CHALLENGER)


@task(name="find-unfinished-promotion", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def find_unfinished_promotion_task(model: str, settings: Settings) -> ShadowPromotion | None:
    return unfinished_promotion(PromotionBackends.from_settings(settings), model)


@task(
    name="compare-on-shadow",
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def compare_on_shadow_task(
    model: str,
    state: RegistryState,
    settings: Settings,
    flow_run_id: str | None,
) -> ShadowEvidence:
    """Champion vs challenger on the labelled shadow rows of the audit trail, every gate re-checked.

    ``settings.promotion_min_shadow_rows`` overrides the spec's ``shadow.min_labelled_rows``
    (None: the spec decides)."""
    assert state.champion is not None and state.challenger is not None
    spec = load_model_spec(model, contracts_dir=settings.contracts_dir)
    applications = load_contract(settings.contracts_dir, spec.applications_contract)
    outcomes = load_contract(settings.contracts_dir, spec.outcomes_contract)
    backends = PromotionBackends.from_settings(settings)
    champion_records = read_version_records(backends.audit, model, state.champion)
    challenger_records = read_version_records(backends.audit, model, state.challenger)
    policy = effective_shadow_policy(spec.shadow, settings.promotion_min_shadow_rows)
    keyed, counts, _ = keyed_outcomes(backends.store, outcomes, settings.entity_hash_key)
    days = shadow_days(backends.store, applications.name, challenger_records)
    champion, challenger = state.champion, state.challenger
    registry = backends.registry
    tags = {v: registry.version_tags(model, v) for v in (champion, challenger)}
    # Rows either version learnt from or was gated on are no evidence (a replayed training batch).
    trained = trained_keys_of_versions(
        backends.store, registry, model, tags, applications, outcomes, settings.entity_hash_key
    )
    paired_keys = set(champion_records["entity_key"]) & set(challenger_records["entity_key"])
    trained_on = len(trained & paired_keys & set(keyed["entity_key"]))
    keyed = keyed.loc[~keyed["entity_key"].isin(trained)]

    def pair_up(labels: pd.DataFrame) -> LabelledPairs:
        return label_pairs(
            champion_records,
            challenger_records,
            labels,
            champion_version=champion,
            challenger_version=challenger,
            min_rows=policy.min_labelled_rows,
            outcome_conflicts=counts.conflicting_outcomes,
            days=days,
            min_days=policy.min_days,
            trained_on=trained_on,
        )

    pairs = pair_up(keyed)
    rows, note = None, None
    if pairs.data.labelled >= pairs.data.min_rows:
        try:
            rows = read_input_rows(backends.store, applications.name, pairs.frame)
        except (MlopsError, IndexError, KeyError) as exc:
            note = f"the scored input rows could not be read ({exc})"
    # Outcomes observed before their application are not compared on, as training drops them;
    # the pairs are made again without them, and the rows already read follow by entity key.
    if rows is not None and (
        early := outcomes_before_application(pairs.frame, rows, keyed, applications.timestamp_column)
    ):
        by_key = rows.set_axis(pairs.frame["entity_key"])
        pairs = pair_up(keyed.loc[~keyed["entity_key"].isin(early)])
        pairs = replace(pairs, data=pairs.data.model_copy(update={"outcomes_before_application": len(early)}))
        enough = pairs.data.labelled >= pairs.data.min_rows
        rows = by_key.loc[pairs.frame["entity_key"]].reset_index(drop=True) if enough else None
    evidence = compare_on_shadow(
        spec,
        pairs,
        rows,
        champion_ref={
            "version": state.champion,
            "run_id": registry.version_run_id(model, state.champion),
            "alias": ALIAS_CHAMPION,
        },
        candidate_ref={
            "version": state.challenger,
            "run_id": registry.version_run_id(model, state.challenger),
            "alias": ALIAS_CHALLENGER,
            "model_uri": f"models:/{model}/{state.challenger}",
        },
        flow_run_id=flow_run_id,
        rows_note=note,
    )
    evidence = _with_spec_notes(evidence, spec, tags)
    verdict = tags[state.challenger].get(TAG_VERDICT)
    if verdict not in PASSING_VERDICTS:  # an alias pointed at a failed candidate by hand
        reason = f"version {state.challenger} carries training gate verdict {verdict!r}, not one of {list(PASSING_VERDICTS)}"
        evidence = evidence.model_copy(update={"passed": False, "reasons": [*evidence.reasons, reason]})
    return evidence


def _with_spec_notes(
    evidence: ShadowEvidence, spec: ModelSpec, tags: Mapping[int, Mapping[str, str]]
) -> ShadowEvidence:
    """The evidence, saying which of the versions (``tags``: each one's tags) were trained and
    gated under another model spec than today's (whose gates the comparison applies): for the
    approver to see, not a refusal."""
    today = model_spec_hash(spec)
    notes = [
        f"version {v} was trained and gated under another model spec (sha256 {tag[:12]}..., today "
        f"{today[:12]}...); the comparison applies today's gates"
        for v, version_tags in tags.items()
        if (tag := version_tags.get(TAG_MODEL_SPEC_SHA256)) and tag != today
    ]
    return evidence.model_copy(update={"data": evidence.data.model_copy(update={"spec_notes": notes})})


def evidence_markdown(promotion: ShadowPromotion) -> str:
    """The shadow evidence for a person (the approval form and the refusal artifact)."""
    evidence = promotion.evidence
    lines = [
        f"# `{promotion.model_name}`: promote version {promotion.to_version} over champion "
        f"{promotion.from_version}?",
        "",
        f"Promotion `{promotion.promotion_id}`; requested by {promotion.requested_by}.",
        "",
    ]
    if evidence is not None:
        lines += [evidence.summary(), ""]
        lines += [f"- note: {note}" for note in evidence.data.spec_notes]
        if evidence.decision_record is not None:
            lines.append(gate_table_markdown(evidence.decision_record))
    if promotion.reasons:
        lines += ["", "**Refused because**", "", *[f"- {r}" for r in promotion.reasons]]
    return "\n".join(lines) + "\n"


@task(name="record-refused-promotion", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def record_refusal_task(promotion: ShadowPromotion, settings: Settings) -> ShadowPromotion:
    """Store, MLflow run, audit chain and a Prefect artifact: a refusal always leaves its record."""
    saved = record_refusal(PromotionBackends.from_settings(settings), promotion)
    create_markdown_artifact(
        key=_artifact_key(saved.model_name),
        markdown=evidence_markdown(saved) + f"\nRecord: `{saved.record_uri}`\n",
        description=f"Promotion of {saved.model_name} v{saved.to_version} refused",
    )
    return saved


@task(name="record-aborted-promotion", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def record_abort_task(promotion: ShadowPromotion, settings: Settings, reason: str) -> None:
    """The ``aborted`` audit record of a promotion whose commit failed and was undone."""
    record_abort(PromotionBackends.from_settings(settings), promotion, reason)


@task(name="plan-promotion", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def plan_promotion_task(promotion: ShadowPromotion, settings: Settings) -> ShadowPromotion:
    """Capture what the rollback hooks restore and write the approved decision before anything moves."""
    backends = PromotionBackends.from_settings(settings)
    pre = capture_pre_state(backends, promotion.model_name, promotion.from_version, promotion.to_version)
    return save_promotion_record(backends, promotion.model_copy(update={"pre": pre}))


# --- the commit steps (inside the flow's transaction) ------------------------------------------


def _undo(step: str) -> Callable[[Transaction], None]:
    def hook(txn: Transaction) -> None:
        promotion = ShadowPromotion.model_validate(txn.get(TXN_PROMOTION))
        settings: Settings = txn.get(TXN_SETTINGS)
        UNDO_STEPS[step](PromotionBackends.from_settings(settings), promotion)

    hook.__name__ = f"undo_{step}"
    return hook


@task(name="verify-registry-unchanged", cache_policy=NO_CACHE)
def verify_unchanged_task(promotion: ShadowPromotion, settings: Settings) -> None:
    verify_unchanged(PromotionBackends.from_settings(settings), promotion)


@task(name="tag-promoted-version", cache_policy=NO_CACHE)
def tag_version_task(promotion: ShadowPromotion, settings: Settings) -> None:
    step_tag_version(PromotionBackends.from_settings(settings), promotion)


@task(name="record-rollback-target", cache_policy=NO_CACHE)
def record_rollback_target_task(promotion: ShadowPromotion, settings: Settings) -> None:
    step_record_rollback_target(PromotionBackends.from_settings(settings), promotion)


@task(name="move-champion-alias", cache_policy=NO_CACHE)
def move_champion_task(promotion: ShadowPromotion, settings: Settings) -> None:
    step_move_champion(PromotionBackends.from_settings(settings), promotion)


@task(name="stamp-champion-version", cache_policy=NO_CACHE)
def stamp_version_task(promotion: ShadowPromotion, settings: Settings) -> None:
    step_stamp_version(PromotionBackends.from_settings(settings), promotion)


@task(name="append-promotion-audit-record", cache_policy=NO_CACHE)
def append_audit_record_task(promotion: ShadowPromotion, settings: Settings) -> str:
    return step_append_audit_record(PromotionBackends.from_settings(settings), promotion)


@task(name="clear-challenger-alias", cache_policy=NO_CACHE)
def clear_challenger_task(promotion: ShadowPromotion, settings: Settings) -> None:
    step_clear_challenger(PromotionBackends.from_settings(settings), promotion)


# Each step task undoes its own step when the transaction it ran in rolls back.
tag_version_task.on_rollback(_undo(STEP_TAG_VERSION))
record_rollback_target_task.on_rollback(_undo(STEP_RECORD_ROLLBACK_TARGET))
move_champion_task.on_rollback(_undo(STEP_MOVE_CHAMPION))
stamp_version_task.on_rollback(_undo(STEP_STAMP_VERSION))
append_audit_record_task.on_rollback(_undo(STEP_APPEND_AUDIT_RECORD))
clear_challenger_task.on_rollback(_undo(STEP_CLEAR_CHALLENGER))


# --- after the commit: dossier, artifact, event -------------------------------------------------


def _with_event_payload(trigger: TriggerInfo) -> TriggerInfo:
    """Best effort: the trigger event's payload from Prefect (events are kept 7 days by default)."""
    if trigger.event_id is None:
        return trigger
    try:
        from prefect.client.orchestration import get_client
        from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter

        since = datetime.now(UTC) - TRIGGER_EVENT_LOOKBACK
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    id=EventIDFilter(id=[UUID(trigger.event_id)]),
                    occurred=EventOccurredFilter(since=since),
                ),
                limit=1,
            )
    except Exception as exc:  # the dossier still names the event id
        return trigger.model_copy(update={"note": f"{trigger.note}; event not read from Prefect ({exc})"})
    if not page.events:
        return trigger.model_copy(update={"note": f"{trigger.note}; event no longer held by Prefect"})
    event = page.events[0]
    return trigger.model_copy(
        update={
            "event_name": event.event,
            "occurred": event.occurred.isoformat(),
            "payload": dict(event.payload),
        }
    )


@task(name="write-compliance-dossier", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def write_dossier_task(
    promotion: ShadowPromotion, settings: Settings, audit_record_id: str | None
) -> ComplianceDossier:
    """Build the dossier, store it (JSON + Markdown), log it on the new champion's run, show it."""
    backends = PromotionBackends.from_settings(settings)
    registry, name = backends.registry, promotion.model_name
    new_tags = registry.version_tags(name, promotion.to_version)
    old_tags = registry.version_tags(name, promotion.from_version)
    new_run = registry.version_run_id(name, promotion.to_version)
    old_run = registry.version_run_id(name, promotion.from_version)
    trigger = _with_event_payload(trigger_from_tags(new_tags, backends.metadata.run_tags(new_run)))
    dossier = build_dossier(
        promotion,
        new_version=version_lineage(promotion.to_version, new_run, new_tags),
        new_tags=new_tags,
        old_version=version_lineage(promotion.from_version, old_run, old_tags),
        old_tags=old_tags,
        contracts=contract_results(
            backends.store, new_tags, old_tags, promotion.evidence.data if promotion.evidence else None
        ),
        trigger=trigger,
        audit_record_id=audit_record_id,
    )
    markdown = dossier_markdown(dossier)
    registry.log_run_json(new_run, dossier.model_dump(mode="json"), f"dossiers/{promotion.promotion_id}.json")
    backends.metadata.log_run_text(new_run, markdown, f"dossiers/{promotion.promotion_id}.md")
    write_dossier(backends.store, dossier)  # last: the stored JSON marks the promotion finished
    create_markdown_artifact(
        key=_artifact_key(name),
        markdown=markdown,
        description=f"Compliance dossier: {name} v{promotion.from_version} -> v{promotion.to_version}",
    )
    get_run_logger().info("dossier %s (%d bytes)", promotion.dossier_uri, len(dossier_json(dossier)))
    return dossier


@task(name="emit-model-promoted", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def emit_promoted_task(result: PromotionResult) -> str | None:
    if result.record is None:
        return None
    r = result.record
    payload: dict[str, Any] = {
        "model": r.model_name,
        "version": r.version,
        "from_version": r.previous_champion,
        "to_version": r.version,
        "previous_champion": r.previous_champion,
        "kind": r.kind,
        "approved_by": r.approved_by,
        "approver": r.approved_by,
        "approval_channel": r.approval_channel,
        "promotion_record_id": r.record_id,
        "promotion_record_uri": result.record_uri,
        "decision_record_id": r.decision_record_id,
        "dossier_uri": r.dossier_uri,
        "dossier_markdown_uri": r.dossier_markdown_uri,
        "audit_record_id": r.audit_record_id,
        "rollback_target": r.previous_champion,
        "recovered": result.recovered,
        "flow_run_id": r.flow_run_id,
    }
    return emit(EVENT_MODEL_PROMOTED, model_resource(r.model_name), payload)


def result_of(promotion: ShadowPromotion, audit_record_id: str | None, *, recovered: bool) -> PromotionResult:
    return PromotionResult(
        model_name=promotion.model_name,
        champion_version=promotion.to_version,
        promoted=True,
        record=promotion_record_of(promotion, audit_record_id),
        record_uri=promotion.record_uri,
        recovered=recovered,
    )
