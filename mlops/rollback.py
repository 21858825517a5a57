"""Rollback: the champion alias back to the previous champion, recorded and announced.

Where the target comes from, in order:

1. ``to_version`` given by the person (it must have been champion before);
2. the rollback target the promotion flow records when it moves the alias
   (:func:`mlops.promotion.read_rollback_target`: the registered-model tags
   ``mlops.rollback_target`` / ``mlops.rollback_target.for``, trusted only while ``for``
   names the current champion, else the champion's ``mlops.promotion.previous_champion``
   version tag);
3. the promotion history in the version tags: the version that became champion most recently
   before the current one (``mlops.promotion.at``, or a restoration by an earlier rollback),
   skipping versions rolled back since.

The target's files are checked against the digest registered with it first (a rollback onto
files no scorer would load is refused, exit 1). Order of writes (crash safety): the
``rollback`` audit record first (who, why, from, to),
then the ``champion`` alias (the commit point), then the tags: the rolled-back version is
marked (:data:`TAG_ROLLED_BACK_AT` and friends), the restored one gets :data:`TAG_RESTORED_AT`,
and the rollback target pair moves one step further back (``none`` when there is nothing
left), written through :func:`mlops.promotion.write_rollback_target` like a promotion does.
A crash after the audit record and before the alias leaves the old champion in place and a
record saying a rollback was asked; running rollback again finishes it. Scorers using
:class:`mlops.champion_loader.ChampionLoader` pick the change up on their next call, with no
restart.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.alias_lock import alias_lock
from mlops.audit_review import visible
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.errors import InputError, StorageIntegrityError, WorkRefused
from mlops.lineage import TAG_PROMOTED_AT
from mlops.promotion import (
    ROLLBACK_TARGET_FOR_TAG,
    ROLLBACK_TARGET_TAG,
    TAG_PREVIOUS_CHAMPION,
    MlflowRegistryMetadata,
    read_rollback_target,
    write_rollback_target,
)
from mlops.registry import MlflowRegistry, require_registered_model

#: The registered-model tags a rollback reads and moves (defined by the promotion stage).
ROLLBACK_TAGS: Final = (ROLLBACK_TARGET_TAG, ROLLBACK_TARGET_FOR_TAG)
#: Version tags on a champion that was rolled back.
TAG_ROLLED_BACK_AT: Final = "mlops.rollback.rolled_back_at"
TAG_ROLLED_BACK_BY: Final = "mlops.rollback.rolled_back_by"
TAG_ROLLED_BACK_REASON: Final = "mlops.rollback.reason"
TAG_ROLLED_BACK_TO: Final = "mlops.rollback.rolled_back_to"
#: Version tag on the version a rollback restored: when it became champion again.
TAG_RESTORED_AT: Final = "mlops.rollback.restored_at"

TargetSource = Literal["explicit", "recorded", "promotion_history"]
MAX_REASON: Final = 2000


class RollbackRecord(BaseModel):
    """Who moved the champion back, from which version to which, when and why."""

    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    model_name: str
    from_version: int
    to_version: int
    target_source: TargetSource
    by: str
    reason: str
    at: datetime
    flow_run_id: str | None = None
    cleared_challenger: bool = Field(
        False,
        description="The challenger alias named the version rolled back from (a promotion that "
        "died after moving the champion) and was removed with it.",
    )


class RollbackResult(BaseModel):
    model_name: str
    from_version: int
    to_version: int
    record: RollbackRecord
    audit_record_id: str
    audit_seq: int
    next_target: int | None = Field(description="Where a further rollback would go (None: nowhere).")


# --- the promotion history (pure functions over every version's tags) ----------------------

#: version -> its tags, as read once per rollback.
VersionTags = dict[int, dict[str, str]]


def all_version_tags(registry: MlflowRegistry, name: str) -> VersionTags:
    found = registry.client.search_model_versions(f"name = '{name}'")
    return {int(v.version): dict(v.tags or {}) for v in found}


def _promoted_at(tags: dict[str, str]) -> str | None:
    """When a version last became champion: promoted, or restored by a rollback (ISO-8601
    UTC strings, which sort by time)."""
    times = [t for t in (tags.get(TAG_PROMOTED_AT), tags.get(TAG_RESTORED_AT)) if t]
    return max(times) if times else None


def _rolled_back(tags: dict[str, str]) -> bool:
    """Rolled back since it last became champion (a later promotion clears it)."""
    rolled, since = tags.get(TAG_ROLLED_BACK_AT), _promoted_at(tags)
    return rolled is not None and (since is None or rolled >= since)


def previous_champion(tags: VersionTags, champion: int) -> int | None:
    """The version that became champion most recently before ``champion`` and was not rolled back."""
    since = _promoted_at(tags.get(int(champion), {}))
    history = sorted(
        (at, v)
        for v, t in tags.items()
        if v != int(champion) and (at := _promoted_at(t)) is not None and not _rolled_back(t)
    )
    earlier = [v for at, v in history if since is None or at < since]
    return earlier[-1] if earlier else None


def next_target_after(tags: VersionTags, restored: int, *, rolled_back: int) -> int | None:
    """Where a further rollback goes once ``restored`` is champion again: the champion before
    it (its previous-champion tag, else the promotion history), never a rolled-back version.
    ``tags`` as read before this rollback wrote anything."""
    previous = tags.get(int(restored), {}).get(TAG_PREVIOUS_CHAMPION, "")
    if previous.isdigit():
        candidate = int(previous)
        if candidate != rolled_back and candidate in tags and not _rolled_back(tags[candidate]):
            return candidate
    found = previous_champion(tags, restored)
    return None if found == rolled_back else found


def _former_champions(tags: VersionTags, champion: int) -> list[int]:
    """The versions ``--to`` can restore: every other version that was ever champion."""
    return sorted(v for v, t in tags.items() if v != int(champion) and TAG_PROMOTED_AT in t)


def listed_versions(versions: list[int], most: int = 10) -> str:
    """``v1, v2, v5``; a long list as its first and last few (a model may have hundreds)."""
    named = [f"v{v}" for v in versions]
    if len(named) > most:
        named = [*named[: most // 2], "...", *named[-(most // 2) :]]
    return ", ".join(named)


def _no_previous_champion(name: str, tags: VersionTags, champion: int) -> WorkRefused:
    """The refusal when no earlier champion is left; its hint names what ``--to`` could restore."""
    former = _former_champions(tags, champion)
    replace = "to replace the champion, train a challenger and promote it (mlops train, then mlops promote)"
    if not former:
        return WorkRefused(
            f"{name} has no previous champion to roll back to: version {champion} is the only "
            "version that was ever champion",
            hint=replace,
        )
    return WorkRefused(
        f"{name} has no previous champion to roll back to: no version was champion before "
        f"version {champion} without being rolled back from since",
        hint=f"{replace}; or restore a former champion on purpose with --to VERSION "
        f"({', '.join(f'v{v}' for v in former)}; e.g. --to {former[-1]})",
    )


def resolve_target(
    name: str,
    tags: VersionTags,
    champion: int,
    *,
    recorded: int | None = None,
    to_version: int | None = None,
) -> tuple[int, TargetSource]:
    """Where a rollback of ``name`` from ``champion`` goes, and how that was decided.

    ``recorded`` is the promotion stage's rollback target (:func:`read_rollback_target`)."""
    source: TargetSource
    if to_version is not None:
        target, source = int(to_version), "explicit"
    elif recorded is not None and recorded != champion:
        target, source = recorded, "recorded"
    else:
        found = previous_champion(tags, champion)
        if found is None:
            raise _no_previous_champion(name, tags, champion)
        target, source = found, "promotion_history"
    if target == champion:
        raise WorkRefused(f"{name} version {target} already is the champion; nothing to roll back")
    if target not in tags:
        former = _former_champions(tags, champion)
        raise InputError(
            f"{name} has no version {target}",
            hint=f"its versions are {listed_versions(sorted(tags))} (champion v{champion}); "
            + (
                f"--to takes a former champion: {listed_versions(former)}"
                if former
                else "none but the champion was ever champion, so there is nothing to restore"
            ),
        )
    if TAG_PROMOTED_AT not in tags[target]:
        raise WorkRefused(
            f"{name} version {target} was never champion; rollback only returns to a former champion",
            hint="promote it through the promotion flow instead",
        )
    return target, source


def rollback(
    registry: MlflowRegistry,
    engine: Engine,
    name: str,
    *,
    by: str,
    reason: str,
    to_version: int | None = None,
    flow_run_id: str | None = None,
) -> RollbackResult:
    """Move ``champion`` back (see the module docstring); raises WorkRefused if it cannot.

    Under the model's alias lock (:mod:`mlops.alias_lock`), so a promotion committing at the
    same moment cannot move the champion between this reading it and moving it back."""
    if not visible(by) or not visible(reason):
        raise InputError("a rollback needs who (--by) and why (--reason)")
    with alias_lock(engine, name, f"rollback by {by.strip()}"):
        return _rollback(
            registry, engine, name, by=by, reason=reason, to_version=to_version, flow_run_id=flow_run_id
        )


def _rollback(
    registry: MlflowRegistry,
    engine: Engine,
    name: str,
    *,
    by: str,
    reason: str,
    to_version: int | None,
    flow_run_id: str | None,
) -> RollbackResult:
    champion = registry.get_alias_version(name, ALIAS_CHAMPION)
    if champion is None:
        require_registered_model(registry, name)
        raise WorkRefused(f"{name} has no champion; nothing to roll back")
    tags = all_version_tags(registry, name)
    recorded = (
        None
        if to_version is not None
        else read_rollback_target(registry, MlflowRegistryMetadata(registry), name)
    )
    target, source = resolve_target(name, tags, champion, recorded=recorded, to_version=to_version)
    try:  # files no scorer would load would stop every scoring run: checked before anything moves
        registry.check_version_files(name, target)
    except StorageIntegrityError as exc:
        raise StorageIntegrityError(
            f"{name}: rollback to version {target} refused, the champion stays version {champion}: "
            + exc.message.removesuffix("; nothing was scored"),
            hint=f"restore version {target}'s artifacts from a backup, or roll back to another former "
            "champion with --to VERSION",
        ) from exc
    next_target = next_target_after(tags, target, rolled_back=champion)
    # A promotion that died between moving the champion and clearing the challenger leaves the
    # version rolled back from as challenger too: it would go on shadowing (and deciding a canary
    # arm), and the next promote run would put it back. It goes with the rollback.
    clear_challenger = registry.get_alias_version(name, ALIAS_CHALLENGER) == champion
    record = RollbackRecord(
        model_name=name,
        from_version=champion,
        to_version=target,
        target_source=source,
        by=by.strip(),
        reason=reason.strip()[:MAX_REASON],
        at=datetime.now(UTC),
        flow_run_id=flow_run_id,
        cleared_challenger=clear_challenger,
    )
    written = audit.append_event(
        engine,
        audit.RECORD_ROLLBACK,
        record.model_dump(mode="json"),
        model_name=name,
        model_version=target,
        model_alias=ALIAS_CHAMPION,
        decision="rollback",
    )
    registry.set_alias(name, ALIAS_CHAMPION, target)  # the commit point
    if clear_challenger and registry.get_alias_version(name, ALIAS_CHALLENGER) == champion:
        registry.delete_alias(name, ALIAS_CHALLENGER)
    at = record.at.isoformat()
    registry.set_version_tags(
        name,
        champion,
        {
            TAG_ROLLED_BACK_AT: at,
            TAG_ROLLED_BACK_BY: record.by,
            TAG_ROLLED_BACK_REASON: record.reason,
            TAG_ROLLED_BACK_TO: str(target),
        },
    )
    registry.set_version_tags(name, target, {TAG_RESTORED_AT: at})
    write_rollback_target(MlflowRegistryMetadata(registry), name, champion=target, target=next_target)
    return RollbackResult(
        model_name=name,
        from_version=champion,
        to_version=target,
        record=record,
        audit_record_id=str(written.record_ids.iloc[0]),
        audit_seq=written.first_seq,
        next_target=next_target,
    )
