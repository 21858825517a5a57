"""Promotion, first form: the recorded bootstrap of the first champion.

With no champion, the passing challenger becomes champion through an explicit, recorded
bootstrap (who, when, which decision record). With a champion present, promotion is refused:
moving the champion needs shadow scoring, which a later release adds.

Crash safety: the promotion record and the version tags are written first, then the
``champion`` alias is set (the commit point), then the ``challenger`` alias is removed. A
crash in between leaves exactly one champion; running promote again finishes the clean-up.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.errors import WorkRefused
from mlops.lineage import (
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
from mlops.registry import ModelRegistry

PASSING_VERDICTS = ("passed", "bootstrap")


class PromotionRecord(BaseModel):
    """Who moved which version to champion, when, why, and on which decision record."""

    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    model_name: str
    kind: Literal["bootstrap"]
    version: int
    previous_champion: int | None
    approved_by: str
    approved_at: datetime
    gate_verdict: str
    decision_record_id: str | None
    decision_record_uri: str | None
    flow_run_id: str | None
    reason: str


class PromotionResult(BaseModel):
    model_name: str
    champion_version: int
    promoted: bool  # False when the version already was champion (clean-up only)
    record: PromotionRecord | None
    record_uri: str | None


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
            f"{name} already has a champion (version {champion}){waiting}. Replacing a champion needs "
            "shadow scoring and a comparison on live traffic, which a later release adds; nothing was changed.",
            hint="only the first champion can be promoted by bootstrap today",
        )
    if challenger is None:
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
