"""Has the challenger shadowed the champion long enough? (``mlops.shadow.completed``)

Counted from the audit trail's prediction records of the challenger's version (role
``shadow``, or ``canary`` when it decided for a canary arm):

* **days**: distinct UTC calendar days of the data it scored: each record's input snapshot,
  looked up in the applications catalog, contributes the days from its oldest to its newest
  application timestamp; a snapshot not in the catalog contributes the day the record was
  written;
* **labelled rows**: distinct entities it scored whose outcome has arrived (outcome ids are
  keyed with the audit trail's entity key, so raw ids never meet the audit store), except the
  ``trained`` ones: rows the champion or the challenger was trained on, which the promotion's
  shadow comparison leaves out too (:func:`mlops.shadow_comparison.trained_entity_keys`).

Complete when both reach the spec's ``shadow`` minimums (:class:`~mlops.shadow_policy.ShadowPolicy`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, timedelta

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.catalog import list_snapshots, read_entries
from mlops.contracts import Contract
from mlops.shadow_policy import ShadowPolicy
from mlops.storage import ObjectStore

SHADOW_ROLES = ("shadow", "canary")


class ShadowStatus(BaseModel):
    """How far the challenger's shadow has come."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    challenger_version: int
    champion_version: int | None
    scored_rows: int
    days: int
    labelled_rows: int
    min_days: int
    min_labelled_rows: int
    complete: bool


def _days_between(first: date, last: date) -> set[date]:
    return {first + timedelta(days=i) for i in range((last - first).days + 1)}


def shadow_status(
    engine: Engine,
    store: ObjectStore,
    *,
    model: str,
    challenger_version: int,
    champion_version: int | None,
    applications: Contract,
    outcomes: Contract,
    policy: ShadowPolicy,
    hash_key: SecretStr | str | bytes,
    trained: Collection[str] = frozenset(),
) -> ShadowStatus:
    table = audit.audit_records
    stmt = sa.select(table.c.entity_key, table.c.input_snapshot, table.c.created_at).where(
        table.c.record_type == audit.RECORD_PREDICTION,
        table.c.model_name == model,
        table.c.model_version == str(int(challenger_version)),
        table.c.role.in_(SHADOW_ROLES),
    )
    with engine.connect() as conn:
        records = pd.DataFrame(conn.execute(stmt).all(), columns=["entity_key", "snapshot", "created_at"])
    days: set[date] = set()
    labelled = 0
    if not records.empty:
        catalog = {e.sha256: e for e in list_snapshots(store, applications.name)}
        for sha, group in records.groupby("snapshot", dropna=False, sort=False):
            entry = catalog.get(str(sha))
            if entry is not None and entry.min_timestamp and entry.max_timestamp:
                days |= _days_between(entry.min_timestamp.date(), entry.max_timestamp.date())
            else:
                days |= {pd.Timestamp(t).date() for t in group["created_at"]}
        out_entries = list_snapshots(store, outcomes.name)
        if out_entries:
            ids = read_entries(store, out_entries)[outcomes.id_column].drop_duplicates()
            keys = set(audit.entity_key(ids.reset_index(drop=True), hash_key)) - set(trained)
            labelled = int(records["entity_key"].dropna().drop_duplicates().isin(keys).sum())
    return ShadowStatus(
        model_name=model,
        challenger_version=int(challenger_version),
        champion_version=champion_version,
        scored_rows=len(records),
        days=len(days),
        labelled_rows=labelled,
        min_days=policy.min_days,
        min_labelled_rows=policy.min_labelled_rows,
        complete=bool(len(records)) and len(days) >= policy.min_days and labelled >= policy.min_labelled_rows,
    )
