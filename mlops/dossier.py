"""The compliance dossier of a promotion: one JSON document (and a readable Markdown copy).

Everything an auditor asks about a champion change, in one place: which data (snapshot
hashes from the lineage tags of both versions and the shadow rows), what the data contracts
said about it (catalog entries of accepted snapshots), the gates (the shadow decision record),
what triggered retraining (an event id, or "manual"), who approved, the lineage tags of both
versions and the rollback target. Stored at ``dossiers/<model>/<version>.json|md`` in the
object store and logged on the new champion's MLflow run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from mlops.catalog import CatalogEntry, entry_key
from mlops.gates import DecisionRecord, gate_table_markdown
from mlops.lineage import (
    NONE_VALUE,
    TAG_APPLICATION_SNAPSHOTS,
    TAG_APPLICATIONS_CONTRACT,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_OUTCOMES_CONTRACT,
    TAG_SNAPSHOTS_SHA256,
)
from mlops.promotion import (
    TAG_TRIGGER_EVENT,
    TAG_TRIGGER_EVENT_ID,
    Approval,
    ShadowPromotion,
    dossier_keys,
)
from mlops.shadow_comparison import ShadowData
from mlops.storage import ObjectStore

DOSSIER_FORMAT: Final = "mlops-dossier/1"
LINEAGE_PREFIX: Final = "mlops.lineage."
GATE_PREFIX: Final = "mlops.gate."
PROMOTION_PREFIX: Final = "mlops.promotion."
TRIGGER_PREFIX: Final = "mlops.trigger."


class ContractResult(BaseModel):
    """What the data contract said about one snapshot the decision rests on."""

    used_for: str  # "challenger training", "champion training", "shadow inputs", "shadow outcomes"
    dataset: str
    sha256: str
    verdict: Literal["accepted", "not in catalog"]
    contract_version: str | None = None
    rows: int | None = None
    source: str | None = None
    ingested_at: datetime | None = None


class VersionLineage(BaseModel):
    """A model version's run and its lineage, gate and promotion tags."""

    version: int
    run_id: str | None
    lineage: dict[str, str]
    gates: dict[str, str]
    promotion: dict[str, str]


class TriggerInfo(BaseModel):
    """What started the challenger's training: an event (drift, schedule...) or a person."""

    source: Literal["event", "manual"]
    event_id: str | None = None
    event_name: str | None = None
    occurred: str | None = None
    payload: dict[str, Any] | None = None
    note: str


class TrainingData(BaseModel):
    snapshots_sha256: str | None
    application_snapshots: list[str]
    outcome_snapshots: list[str]


class DossierData(BaseModel):
    challenger_training: TrainingData
    champion_training: TrainingData
    shadow: ShadowData | None


class ComplianceDossier(BaseModel):
    """One promotion, everything about it. ``promotion_id`` links it to the audit record."""

    format: Literal["mlops-dossier/1"] = DOSSIER_FORMAT
    promotion_id: str
    model_name: str
    kind: str
    from_version: int
    to_version: int
    approved_at: datetime | None
    written_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    flow_run_id: str | None
    approvals: list[Approval]
    data: DossierData
    contracts: list[ContractResult]
    gates: DecisionRecord | None
    gate_reasons: list[str]
    trigger: TriggerInfo
    lineage: dict[str, VersionLineage]  # "previous_champion", "new_champion"
    rollback_target: int | None
    audit_record_id: str | None
    promotion_record_uri: str | None


def _split(value: str | None) -> list[str]:
    if not value or value == NONE_VALUE:
        return []
    return [v for v in value.split(",") if v]


def version_lineage(version: int, run_id: str | None, tags: dict[str, str]) -> VersionLineage:
    def pick(prefix: str) -> dict[str, str]:
        return {k: v for k, v in sorted(tags.items()) if k.startswith(prefix)}

    return VersionLineage(
        version=version,
        run_id=run_id,
        lineage=pick(LINEAGE_PREFIX),
        gates=pick(GATE_PREFIX),
        promotion=pick(PROMOTION_PREFIX),
    )


def training_data(tags: dict[str, str]) -> TrainingData:
    return TrainingData(
        snapshots_sha256=tags.get(TAG_SNAPSHOTS_SHA256),
        application_snapshots=_split(tags.get(TAG_APPLICATION_SNAPSHOTS)),
        outcome_snapshots=_split(tags.get(TAG_OUTCOME_SNAPSHOTS)),
    )


def trigger_from_tags(version_tags: dict[str, str], run_tags: dict[str, str]) -> TriggerInfo:
    """The trigger event named on the version or its training run, else "manual"."""
    for tags, where in ((version_tags, "model version"), (run_tags, "training run")):
        event_id = tags.get(TAG_TRIGGER_EVENT_ID)
        if event_id and event_id != NONE_VALUE:
            return TriggerInfo(
                source="event",
                event_id=event_id,
                event_name=tags.get(TAG_TRIGGER_EVENT),
                note=f"trigger event id from the {where} tag {TAG_TRIGGER_EVENT_ID}",
            )
    return TriggerInfo(
        source="manual",
        note=f"no {TAG_TRIGGER_EVENT_ID} tag on the version or its training run: trained on request",
    )


def _lookup(store: ObjectStore, used_for: str, dataset: str | None, sha: str) -> ContractResult:
    name = dataset or "unknown"
    key = entry_key(name, sha)
    if dataset is None or not store.exists(key):
        return ContractResult(used_for=used_for, dataset=name, sha256=sha, verdict="not in catalog")
    entry = CatalogEntry.model_validate_json(store.get_bytes(key))
    return ContractResult(
        used_for=used_for,
        dataset=entry.dataset,
        sha256=sha,
        verdict="accepted",
        contract_version=entry.contract_version,
        rows=entry.rows,
        source=entry.source,
        ingested_at=entry.ingested_at,
    )


def contract_results(
    store: ObjectStore,
    new_tags: dict[str, str],
    old_tags: dict[str, str],
    shadow: ShadowData | None,
) -> list[ContractResult]:
    """Catalog entries (contract version, rows, source) of every snapshot the decision used.

    Only batches that passed their contract are catalogued, so "accepted" is the contract's
    verdict; "not in catalog" flags a snapshot the store cannot vouch for.
    """
    results: list[ContractResult] = []
    seen: set[tuple[str, str]] = set()

    def add(used_for: str, dataset: str | None, shas: list[str]) -> None:
        for sha in shas:
            if (used_for, sha) not in seen:
                seen.add((used_for, sha))
                results.append(_lookup(store, used_for, dataset, sha))

    apps, outs = new_tags.get(TAG_APPLICATIONS_CONTRACT), new_tags.get(TAG_OUTCOMES_CONTRACT)
    add("challenger training", apps, _split(new_tags.get(TAG_APPLICATION_SNAPSHOTS)))
    add("challenger training", outs, _split(new_tags.get(TAG_OUTCOME_SNAPSHOTS)))
    old_apps, old_outs = old_tags.get(TAG_APPLICATIONS_CONTRACT), old_tags.get(TAG_OUTCOMES_CONTRACT)
    add("champion training", old_apps, _split(old_tags.get(TAG_APPLICATION_SNAPSHOTS)))
    add("champion training", old_outs, _split(old_tags.get(TAG_OUTCOME_SNAPSHOTS)))
    if shadow is not None:
        add("shadow inputs", apps, shadow.input_snapshots)
        add("shadow outcomes", outs, shadow.outcome_snapshots)
    return results


def build_dossier(
    promotion: ShadowPromotion,
    *,
    new_version: VersionLineage,
    new_tags: dict[str, str],
    old_version: VersionLineage,
    old_tags: dict[str, str],
    contracts: list[ContractResult],
    trigger: TriggerInfo,
    audit_record_id: str | None,
) -> ComplianceDossier:
    evidence = promotion.evidence
    approval = promotion.approval
    return ComplianceDossier(
        promotion_id=promotion.promotion_id,
        model_name=promotion.model_name,
        kind=promotion.kind,
        from_version=promotion.from_version,
        to_version=promotion.to_version,
        approved_at=approval.decided_at if approval else None,
        flow_run_id=promotion.flow_run_id,
        approvals=[approval] if approval else [],
        data=DossierData(
            challenger_training=training_data(new_tags),
            champion_training=training_data(old_tags),
            shadow=evidence.data if evidence else None,
        ),
        contracts=contracts,
        gates=evidence.decision_record if evidence else None,
        gate_reasons=list(promotion.reasons),
        trigger=trigger,
        lineage={"previous_champion": old_version, "new_champion": new_version},
        rollback_target=promotion.from_version,
        audit_record_id=audit_record_id,
        promotion_record_uri=promotion.record_uri,
    )


# --- rendering and storage -------------------------------------------------------------------


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def dossier_markdown(d: ComplianceDossier) -> str:
    """The dossier for people (Prefect artifact, MLflow, object store)."""
    lines = [
        f"# Promotion dossier: `{d.model_name}` version {d.from_version} -> {d.to_version}",
        "",
        f"Promotion `{d.promotion_id}` ({d.kind}); approved at "
        f"{d.approved_at.isoformat() if d.approved_at else 'n/a'}; flow run `{d.flow_run_id}`; "
        f"audit record `{d.audit_record_id}`; rollback target: version {d.rollback_target}.",
        "",
        "## Approvals",
        "",
        "| approver | decision | channel | policy | allowed | reason | at |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(a.approver)} | {a.decision} | {a.channel} | {a.policy} | {a.allowed} | {_cell(a.reason)} "
        f"| {a.decided_at.isoformat()} |"
        for a in d.approvals
    ]
    shadow = d.data.shadow
    lines += ["", "## Shadow evidence", ""]
    if shadow is not None:
        lines.append(
            f"{shadow.labelled} labelled rows ({shadow.positives} positive) of {shadow.paired} entities "
            f"scored by both champion v{shadow.champion_version} and challenger v{shadow.challenger_version} "
            f"(minimum {shadow.min_rows}), over {shadow.days} day(s) of data (minimum {shadow.min_days}); "
            f"challenger roles {shadow.roles}; slices checked: "
            f"{shadow.slices_checked}{f' ({shadow.slices_note})' if shadow.slices_note else ''}."
        )
    lines += ["", "## Gates", ""]
    lines.append(gate_table_markdown(d.gates) if d.gates else "No gate record.")
    if d.gate_reasons:
        lines += ["", *[f"- {_cell(r)}" for r in d.gate_reasons]]
    lines += [
        "",
        "## Trigger",
        "",
        f"{d.trigger.source}: {d.trigger.event_name or ''} `{d.trigger.event_id or 'n/a'}`; {d.trigger.note}",
        "",
        "## Data and contracts",
        "",
        f"Challenger trained on snapshots digest `{d.data.challenger_training.snapshots_sha256}`; "
        f"champion on `{d.data.champion_training.snapshots_sha256}`.",
        "",
        "| used for | dataset | snapshot | contract verdict | contract version | rows | source |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.used_for} | {c.dataset} | `{c.sha256[:12]}` | {c.verdict} | {c.contract_version or '–'} "
        f"| {c.rows if c.rows is not None else '–'} | {_cell(c.source or '–')} |"
        for c in d.contracts
    ]
    lines += ["", "## Lineage", ""]
    for role, lineage in d.lineage.items():
        lines += [f"### {role}: version {lineage.version} (run `{lineage.run_id}`)", ""]
        lines += ["| tag | value |", "|---|---|"]
        tags = {**lineage.lineage, **lineage.gates, **lineage.promotion}
        lines += [f"| `{k}` | {_cell(v)[:200]} |" for k, v in tags.items()]
        lines.append("")
    lines.append(f"Full decision: `{d.promotion_record_uri}`")
    return "\n".join(lines) + "\n"


def dossier_json(d: ComplianceDossier) -> bytes:
    return json.dumps(d.model_dump(mode="json"), indent=2, sort_keys=True).encode()


def write_dossier(store: ObjectStore, d: ComplianceDossier) -> tuple[str, str]:
    """Store the Markdown, then the JSON (its presence marks the dossier complete); their URIs."""
    json_key, md_key = dossier_keys(d.model_name, d.to_version)
    store.put_bytes(md_key, dossier_markdown(d).encode())
    store.put_bytes(json_key, dossier_json(d))
    return store.uri(json_key), store.uri(md_key)
