"""promote: move the challenger to champion, with evidence and approval, crash-safe.

* No champion yet: the passing challenger becomes champion as a recorded bootstrap.
* A champion and a challenger: compare them on the shadow period's labelled outcomes (paired,
  same rows, every gate re-checked), get an approval per the promotion policy (``auto``, or a
  person in the Prefect UI form / ``--approver``), then move the aliases inside a Prefect
  transaction (order and crash safety: :mod:`mlops.promotion`), write the compliance dossier
  and emit ``mlops.model.promoted``. Every refusal is recorded and raises ``PromotionRefused``
  (CLI exit 1).
* A promotion a crash interrupted after its commit point is finished first.
"""

from __future__ import annotations

import getpass
from typing import Literal

from prefect import flow
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.settings import get_current_settings
from prefect.transactions import Transaction, transaction
from pydantic import Field

from mlops.alias_lock import settings_alias_lock
from mlops.errors import WorkRefused
from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.promotion import (
    STEP_APPEND_AUDIT_RECORD,
    STEP_MOVE_CHAMPION,
    STEP_RECORD_ROLLBACK_TARGET,
    STEP_STAMP_VERSION,
    STEP_TAG_VERSION,
    Approval,
    PromotionConflict,
    PromotionRefused,
    PromotionResult,
    RegistryState,
    ShadowPromotion,
    bootstrap_approval_refusal,
    crash_seam,
    form_approval,
    no_approvers_refusal,
    no_form_approval,
    policy_approval,
    refusal_error,
    timed_out_approval,
)
from mlops.settings import Settings, flow_settings
from tasks.promotion import (
    TXN_PROMOTION,
    TXN_SETTINGS,
    append_audit_record_task,
    bootstrap_champion_task,
    clear_bootstrapped_challenger_task,
    clear_challenger_task,
    compare_on_shadow_task,
    emit_promoted_task,
    evidence_markdown,
    find_unfinished_bootstrap_task,
    find_unfinished_promotion_task,
    move_champion_task,
    plan_promotion_task,
    publish_promotion_record_task,
    read_registry_state_task,
    record_abort_task,
    record_bootstrap_task,
    record_refusal_task,
    record_rollback_target_task,
    refuse_bootstrap_task,
    result_of,
    stamp_version_task,
    tag_version_task,
    verify_unchanged_task,
    write_dossier_task,
)


class ApprovalInput(RunInput):
    """The approval form a paused promote run shows in the Prefect UI."""

    approver: str = Field(min_length=1, description="Your name, as listed in MLOPS_APPROVERS.")
    decision: Literal["approve", "reject"] = Field(description="approve: move the champion; reject: keep it.")
    reason: str = Field(min_length=1, description="Why (kept in the audit trail and the dossier).")


def _default_approver() -> str:
    try:
        return f"{getpass.getuser()} (no --approver given)"
    except (KeyError, OSError):
        return "unknown (no --approver given)"


def _bootstrap(
    model: str, who: str, settings: Settings, run_id: str | None, challenger: int | None = None
) -> PromotionResult:
    try:
        with settings_alias_lock(settings, model, "bootstrap"):
            result = bootstrap_champion_task(model, who, settings, run_id)
    except PromotionRefused:
        raise
    except WorkRefused as exc:
        if challenger is None:  # nothing was asked for: no decision to record
            raise
        # e.g. a challenger alias set by hand on a version that failed its gates: the refusal
        # is a decision about that version, and decisions leave a record
        promotion_id = refuse_bootstrap_task(model, challenger, who, exc.message, settings, run_id)
        print(f"{model}: bootstrap of version {challenger} refused: {exc.message}")
        raise PromotionRefused(
            f"{model}: making version {challenger} the first champion was refused: {exc.message}",
            hint=f"recorded in the audit trail (promotion {promotion_id}); {exc.hint or 'nothing was changed'}",
            promotion_id=promotion_id,
        ) from exc
    result = record_bootstrap_task(result, settings)
    publish_promotion_record_task(result)
    emit_promoted_task(result)
    if result.promoted:
        print(f"{model}: version {result.champion_version} is champion (bootstrap, approved by {who})")
    else:
        print(f"{model}: version {result.champion_version} already was champion; challenger alias cleared")
    return result


def _finish(promotion: ShadowPromotion, settings: Settings, *, recovered: bool) -> PromotionResult:
    """After the commit point: stamp, audit record, challenger clean-up (idempotent), dossier, event."""
    stamp_version_task(promotion, settings)
    audit_record_id = append_audit_record_task(promotion, settings)
    clear_challenger_task(promotion, settings)
    write_dossier_task(promotion, settings, audit_record_id)
    result = result_of(promotion, audit_record_id, recovered=recovered)
    emit_promoted_task(result)
    how = "finished after an interrupted run" if recovered else f"approved by {promotion.approver}"
    print(
        f"{promotion.model_name}: version {promotion.to_version} is champion (was {promotion.from_version}; "
        f"{how}); dossier {promotion.dossier_uri}"
    )
    return result


def _refuse(promotion: ShadowPromotion, settings: Settings) -> WorkRefused:
    saved = record_refusal_task(promotion, settings)
    print(f"{saved.model_name}: promotion refused: {'; '.join(saved.reasons)}")
    return refusal_error(saved)


def _ask_a_person(promotion: ShadowPromotion, settings: Settings) -> Approval:
    """Pause this flow run until someone answers the approval form (in the flow, not a task);
    refused at once when no Prefect server could show the form (a temporary one)."""
    if get_current_settings().api.url is None:
        return no_form_approval(settings, promotion.requested_by)
    form = ApprovalInput.with_initial_data(
        description=evidence_markdown(promotion) + f"\nAllowed approvers: {', '.join(settings.approvers)}.\n"
    )
    try:
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=settings.approval_timeout_seconds,
            poll_interval=settings.approval_poll_seconds,
        )
    except FlowPauseTimeout:
        return timed_out_approval(settings, promotion.requested_by)
    return form_approval(settings, answer.approver, answer.decision, answer.reason, promotion.requested_by)


def _approve(promotion: ShadowPromotion, settings: Settings, cli_approver: str | None) -> ShadowPromotion:
    """The promotion with its approval, or refused (reasons set)."""
    nobody = no_approvers_refusal(settings)
    if nobody is not None:
        return promotion.model_copy(update={"outcome": "refused", "reasons": [nobody]})
    approval = policy_approval(settings, cli_approver, promotion.requested_by)
    if approval is None:
        approval = _ask_a_person(promotion, settings)
    refusal = approval.refusal(settings.approvers)
    if refusal is not None:
        return promotion.model_copy(update={"approval": approval, "outcome": "refused", "reasons": [refusal]})
    return promotion.model_copy(update={"approval": approval, "outcome": "approved"})


def _log_committed(txn: Transaction) -> None:
    promotion = ShadowPromotion.model_validate(txn.get(TXN_PROMOTION))
    print(f"{promotion.model_name}: promotion {promotion.promotion_id} committed")


def _commit(promotion: ShadowPromotion, settings: Settings) -> None:
    """The alias move as one Prefect transaction: each step task undoes itself on rollback.

    Under the model's alias lock (:mod:`mlops.alias_lock`): a second run of the same plan (a
    shell's beside a triggered one) waits, then finds the aliases moved and is refused."""
    with (
        settings_alias_lock(settings, promotion.model_name, f"promotion {promotion.promotion_id}"),
        transaction(
            key=f"promote-{promotion.model_name}-{promotion.promotion_id}", write_on_commit=False
        ) as txn,
    ):
        txn.set(TXN_PROMOTION, promotion.model_dump(mode="json"))
        txn.set(TXN_SETTINGS, settings)
        txn.stage(promotion.promotion_id, on_commit_hooks=[_log_committed])
        verify_unchanged_task(promotion, settings)
        tag_version_task(promotion, settings)
        crash_seam(STEP_TAG_VERSION)
        record_rollback_target_task(promotion, settings)
        crash_seam(STEP_RECORD_ROLLBACK_TARGET)
        move_champion_task(promotion, settings)  # the commit point
        crash_seam(STEP_MOVE_CHAMPION)
        stamp_version_task(promotion, settings)
        crash_seam(STEP_STAMP_VERSION)
        append_audit_record_task(promotion, settings)
        crash_seam(STEP_APPEND_AUDIT_RECORD)
        clear_challenger_task(promotion, settings)


def _shadow_promotion(
    model: str,
    state: RegistryState,
    settings: Settings,
    approver: str | None,
    requested_by: str,
    run_id: str | None,
) -> PromotionResult:
    assert state.champion is not None and state.challenger is not None
    evidence = compare_on_shadow_task(model, state, settings, run_id)
    promotion = ShadowPromotion(
        model_name=model,
        from_version=state.champion,
        to_version=state.challenger,
        outcome="approved" if evidence.passed else "refused",
        reasons=list(evidence.reasons),
        evidence=evidence,
        approval=None,
        requested_by=requested_by,
        flow_run_id=run_id,
    )
    print(f"{model}: {evidence.summary()}")
    if promotion.outcome == "refused":
        raise _refuse(promotion, settings)
    promotion = _approve(promotion, settings, approver)
    if promotion.outcome == "refused":
        raise _refuse(promotion, settings)
    plan = plan_promotion_task(promotion, settings)
    try:
        _commit(plan, settings)
    except PromotionConflict as exc:
        refused = plan.model_copy(update={"outcome": "refused", "reasons": [exc.message]})
        raise _refuse(refused, settings) from exc
    except Exception as exc:  # the transaction undid every step: the audit trail says so
        reason = f"the promotion did not complete ({type(exc).__name__}: {exc}); its steps were undone"
        try:
            record_abort_task(plan, settings, reason)
        except Exception as record_error:  # keep the original error; say what is missing
            print(f"{model}: the aborted promotion {plan.promotion_id} could not be recorded: {record_error}")
        raise
    return _finish(plan, settings, recovered=False)


@flow(name="promote", log_prints=True)
def promote(model: str = DEFAULT_MODEL_NAME, approver: str | None = None) -> PromotionResult:
    """Promote ``model``'s challenger to champion; raises PromotionRefused (WorkRefused) when refused.

    ``approver``: who asks (bootstrap), or, under the ``manual`` policy, who approves, if listed
    in MLOPS_APPROVERS; without it a manual promotion pauses for the Prefect UI approval form.
    """
    settings = flow_settings()
    run_id = flow_run.get_id()
    requested_by = approver or _default_approver()
    state = read_registry_state_task(model, settings)
    if state.champion is None:
        refusal = bootstrap_approval_refusal(settings, approver) if state.challenger is not None else None
        if refusal is not None:
            promotion_id = refuse_bootstrap_task(
                model, state.challenger, requested_by, refusal, settings, run_id
            )
            print(f"{model}: bootstrap of version {state.challenger} refused: {refusal}")
            raise PromotionRefused(
                f"{model}: making version {state.challenger} the first champion was refused: {refusal}",
                hint=f"recorded in the audit trail (promotion {promotion_id}); nothing was changed",
                promotion_id=promotion_id,
            )
        return _bootstrap(model, requested_by, settings, run_id, state.challenger)
    bootstrapped = find_unfinished_bootstrap_task(model, settings)
    if bootstrapped is not None:  # the first champion's alias moved, its record did not follow
        clear_bootstrapped_challenger_task(model, bootstrapped.champion_version, settings)
        bootstrapped = record_bootstrap_task(bootstrapped, settings)
        publish_promotion_record_task(bootstrapped)
        emit_promoted_task(bootstrapped)
        print(
            f"{model}: bootstrap of version {bootstrapped.champion_version} recorded after an interrupted run"
        )
        if state.challenger in (None, bootstrapped.champion_version):
            return bootstrapped
        # a challenger of its own waits (a bootstrap made outside this flow, or before its audit
        # store): its promotion goes on, or the event that triggered this run would be spent
    unfinished = find_unfinished_promotion_task(model, settings)
    if unfinished is not None:
        return _finish(unfinished, settings, recovered=True)
    if state.challenger == state.champion:  # an interrupted bootstrap: only the clean-up is left
        return _bootstrap(model, requested_by, settings, run_id)
    if state.challenger is None:
        raise WorkRefused(
            f"{model} already has a champion (version {state.champion}) and no challenger to promote",
            hint="run `mlops train`; a passing candidate becomes the challenger and is shadow-scored",
        )
    return _shadow_promotion(model, state, settings, approver, requested_by, run_id)
