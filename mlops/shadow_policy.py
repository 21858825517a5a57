"""How long a challenger must shadow the champion before ``mlops.shadow.completed`` is emitted.

Embedded in the model spec as ``shadow: {min_days, min_labelled_rows}``. A shadow day is a
calendar day (UTC) of the *data* the challenger scored (the application timestamps of the
snapshots its shadow audit records point at), so a replay of history counts the same as live
traffic; a labelled row is a shadow-scored entity whose outcome has arrived.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ShadowPolicy(BaseModel):
    """Minimum shadow exposure of a challenger before it may be compared for promotion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_days: int = Field(14, ge=0, description="Distinct data days (UTC) the challenger scored in shadow.")
    min_labelled_rows: int = Field(
        500, ge=0, description="Shadow-scored rows whose outcome (label) is known."
    )


def effective_shadow_policy(policy: ShadowPolicy, min_labelled_rows: int | None) -> ShadowPolicy:
    """The spec's policy with ``MLOPS_PROMOTION_MIN_SHADOW_ROWS`` (``min_labelled_rows``) in
    force when set: the monitor announces a completed shadow by the same count the promotion
    then requires, or the promote run it triggers is refused, and never triggered again."""
    if min_labelled_rows is None:
        return policy
    return policy.model_copy(update={"min_labelled_rows": min_labelled_rows})
