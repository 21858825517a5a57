"""Rebuild a registered model version from its lineage and compare it with the registered one.

A model risk reviewer asks "show me that this model is what its records say it is". The train
flow logs, on each version's MLflow run, the lineage (``lineage.json``: the application and
outcome snapshots, the review labels, the package list, the git state) and the resolved model
spec (``model_spec.json``), and tags the version with their digests and the model's
fingerprint (sha256 of the booster and the feature schema). A rebuild:

1. reads both artifacts and checks them against the version's tags (an artifact that no
   longer matches its tag is refused: :class:`~mlops.errors.StorageIntegrityError`);
2. reads exactly the snapshots the lineage names (each hash-checked), and the rows the review
   labels name, and joins them as the training run did (:func:`mlops.labels.labelled_from_entries`);
3. splits and trains with the logged spec (its seed, params and ``nthread``);
4. compares the fingerprint with the registered one. On the same machine and packages, equal
   inputs give the same bits (PITFALLS: XGBoost); when they differ, the packages and code that
   changed since are listed, as the likely cause.

The rebuild reads only the snapshots that gave the version rows: a snapshot read by the
training run that gave it none is not needed, except in one corner (an application sent twice,
whose first copy fell out of the training window: the run dropped it, the rebuild keeps the
second copy), which is named in the result when the training or evaluation row counts differ.
Then the rows are not the recorded ones even when the model's bits are (an extra row among the
evaluation rows): ``rows_match`` is False and the command exits 1 either way.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from mlops.catalog import CatalogEntry
from mlops.contracts import Contract
from mlops.errors import InputError, StorageIntegrityError, WorkRefused, validation_problems
from mlops.feedback import rows_of_review_labels
from mlops.labels import LabelledSet, catalogued_entries, labelled_from_entries
from mlops.lineage import (
    LINEAGE_ARTIFACT,
    LINEAGE_TAGS,
    TAG_MODEL_FINGERPRINT,
    TAG_MODEL_SPEC_SHA256,
    GitState,
    Lineage,
)
from mlops.model_spec import ModelSpec, spec_document_sha256
from mlops.storage import ObjectStore

MODEL_SPEC_ARTIFACT: Final = "model_spec.json"
# The tags a lineage artifact must agree with: every lineage tag (the train flow sets them all
# from it at registration and nothing changes them later). Digests alone would miss an altered
# order of the snapshots (which decides the copy kept of a twice-sent application and the
# window) or an altered package list or git commit (which the result reports as causes).
CHECKED_TAGS: Final = LINEAGE_TAGS


class RebuildPlan(BaseModel):
    """What a version's records say made it: its lineage, its spec and its fingerprint."""

    model_name: str
    version: int
    run_id: str
    lineage: Lineage
    spec: ModelSpec
    recorded_fingerprint: str


class RebuildResult(BaseModel):
    """The registered and the rebuilt model, side by side."""

    model_name: str
    version: int
    run_id: str
    identical: bool = Field(description="the rebuilt booster and feature schema are the registered bits")
    fingerprint_recorded: str
    fingerprint_rebuilt: str
    training_rows_recorded: int
    training_rows_rebuilt: int
    evaluation_rows_recorded: int
    evaluation_rows_rebuilt: int
    rows_match: bool = Field(
        description="the lineage's data gave the recorded training and evaluation row counts "
        "(False: the rows are not the run's, even if the model's bits are)"
    )
    application_snapshots: int
    outcome_snapshots: int
    review_labels: int
    git_commit_recorded: str | None
    git_commit_now: str | None
    git_dirty_now: bool | None
    package_changes: list[str] = Field(description="installed packages that differ from the training run's")
    contract_changes: list[str] = Field(
        description="contracts whose version differs from the training data's"
    )
    likely_causes: list[str] = Field(
        description="what may explain a difference (empty when identical and the rows match)"
    )


def require_lineage_tags(name: str, version: int, tags: dict[str, str]) -> None:
    """Refuse a version the train flow did not register (no lineage to rebuild it from): called
    before its run's artifacts are read, which such a version may not have (or no run at all)."""
    if TAG_MODEL_FINGERPRINT not in tags:
        raise WorkRefused(
            f"{name} version {version} has no lineage tags (it was not registered by the train flow)",
            hint="only versions the train flow registered can be rebuilt",
        )


def rebuild_plan(
    name: str,
    version: int,
    tags: dict[str, str],
    run_id: str,
    lineage_doc: Any,
    spec_doc: Any,
    *,
    registered_fingerprint: str,
) -> RebuildPlan:
    """Check a version's logged lineage and spec against its tags and read them.

    ``lineage_doc`` / ``spec_doc``: the run's ``lineage.json`` and ``model_spec.json`` as read
    back from the artifact store. ``registered_fingerprint``: the fingerprint of the version's
    files as the artifact store holds them, checked against their digest tag (the rebuild is
    compared with them, not only with the fingerprint tag, which swapped files would pass)."""
    where = f"{name} version {version}"
    require_lineage_tags(name, version, tags)
    try:
        lineage = Lineage.model_validate(lineage_doc)
    except ValidationError as exc:
        raise StorageIntegrityError(
            f"the lineage artifact {LINEAGE_ARTIFACT} of {where} is not readable: {validation_problems(exc)}",
            hint="the run's artifact was altered; restore it from a backup",
        ) from exc
    from_artifact = lineage.tags()
    disagree = [key for key in CHECKED_TAGS if key in tags and from_artifact[key] != tags[key]]
    if disagree:
        raise StorageIntegrityError(
            f"the lineage artifact {LINEAGE_ARTIFACT} of {where} disagrees with the version's tags on "
            + ", ".join(disagree),
            hint="the artifact or the tags were altered after registration; restore the run's "
            "artifacts (or the registry) from a backup",
        )
    spec_sha = spec_document_sha256(spec_doc)
    if tags.get(TAG_MODEL_SPEC_SHA256) not in (None, spec_sha):
        raise StorageIntegrityError(
            f"the model spec artifact {MODEL_SPEC_ARTIFACT} of {where} hashes to {spec_sha}, "
            f"not to its tag {tags[TAG_MODEL_SPEC_SHA256]}",
            hint="the artifact was altered after registration; restore it from a backup",
        )
    try:
        spec = ModelSpec.model_validate(spec_doc)
    except ValidationError as exc:  # a spec field this release no longer takes
        raise WorkRefused(
            f"the model spec {where} was trained with is not a spec this release reads: "
            f"{validation_problems(exc)}",
            hint="rebuild it with the release that trained it (git commit "
            f"{lineage.git.commit or 'unknown'})",
        ) from exc
    return RebuildPlan(
        model_name=name,
        version=version,
        run_id=run_id,
        lineage=lineage,
        spec=spec,
        recorded_fingerprint=registered_fingerprint,
    )


def lineage_entries(
    store: ObjectStore, plan: RebuildPlan, applications: Contract, outcomes: Contract
) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
    """The catalog entries of the snapshots the lineage names, in the order the run read them."""
    named_by = f"{plan.model_name} version {plan.version}'s lineage"
    return (
        catalogued_entries(store, applications.name, plan.lineage.application_snapshots, named_by=named_by),
        catalogued_entries(store, outcomes.name, plan.lineage.outcome_snapshots, named_by=named_by),
    )


def labelled_from_lineage(
    store: ObjectStore, plan: RebuildPlan, applications: Contract, outcomes: Contract
) -> LabelledSet:
    """The labelled rows the version was trained and evaluated on, read back from its lineage."""
    if (
        applications.name != plan.lineage.applications_contract
        or outcomes.name != plan.lineage.outcomes_contract
    ):
        raise InputError(
            f"{plan.model_name} version {plan.version} was trained on {plan.lineage.applications_contract} / "
            f"{plan.lineage.outcomes_contract}, not {applications.name} / {outcomes.name}",
        )
    apps, outs = lineage_entries(store, plan, applications, outcomes)
    extra = rows_of_review_labels(
        store, applications, plan.lineage.review_labels, target=plan.spec.target_column
    )
    labelled = labelled_from_entries(
        store, plan.spec, applications, outcomes, apps, outs, extra_labelled=extra
    )
    return with_absent_features(labelled, plan.spec.feature_list, applications)


def with_absent_features(labelled: LabelledSet, features: list[str], applications: Contract) -> LabelledSet:
    """Add, all missing, the feature columns none of the lineage's snapshots holds.

    The run read every catalogued snapshot: a later contract version's snapshot that gave it no
    row (its outcomes not in yet) still brought its new column to every row, missing on all of
    them (pandas aligns the columns), and the model was fitted with it. The rebuild reads only
    the snapshots that gave rows, so the column is added as the run had it: numeric for the
    contract's int / float columns, text otherwise (a feature schema records only that, and the
    categories seen, none here)."""
    absent = [f for f in features if f not in labelled.frame.columns and f in applications.column_names]
    if not absent:
        return labelled
    frame = labelled.frame.copy(deep=False)
    for name in absent:
        numeric = applications.column(name).dtype in ("int", "float")
        frame[name] = pd.Series(np.nan, index=frame.index, dtype="float64" if numeric else object)
    return LabelledSet(frame=frame, summary=labelled.summary)


def package_changes(recorded: list[str], now: list[str]) -> list[str]:
    """``name: then -> now`` for each distribution whose version changed, came or went."""

    def versions(entries: list[str]) -> dict[str, str]:
        out = {}
        for entry in entries:
            name, _, version = entry.partition("==")
            out[name.lower()] = version
        return out

    then, current = versions(recorded), versions(now)
    return [
        f"{name}: {then.get(name, 'not installed')} -> {current.get(name, 'not installed')}"
        for name in sorted(then.keys() | current.keys())
        if then.get(name) != current.get(name)
    ]


def contract_changes(plan: RebuildPlan, applications: Contract, outcomes: Contract) -> list[str]:
    """Contracts whose version now is not the one (or one of those) the training data had."""
    out = []
    for contract, versions in (
        (applications, plan.lineage.applications_contract_versions),
        (outcomes, plan.lineage.outcomes_contract_versions),
    ):
        if versions and contract.version not in versions:
            out.append(f"{contract.name}: {', '.join(versions)} -> {contract.version}")
    return out


def rebuild_result(
    plan: RebuildPlan,
    *,
    fingerprint: str,
    training_rows: int,
    evaluation_rows: int,
    git_now: GitState,
    packages_now: list[str],
    contracts: tuple[Contract, Contract],
) -> RebuildResult:
    """Compare the rebuilt model with the registered one and say what may explain a difference."""
    lineage = plan.lineage
    packages = package_changes(lineage.packages, packages_now)
    contract_diff = contract_changes(plan, *contracts)
    identical = fingerprint == plan.recorded_fingerprint
    rows_match = (training_rows, evaluation_rows) == (lineage.training_rows, lineage.evaluation_rows)
    causes: list[str] = []
    if not rows_match:
        causes.append(
            f"the lineage's data gave {training_rows} training and {evaluation_rows} evaluation rows, "
            f"not {lineage.training_rows} and {lineage.evaluation_rows}: a snapshot the run read gave "
            "no row of its own but decided which copy of a twice-sent application was kept, or the "
            "contracts changed"
        )
    if not identical:
        if packages:
            causes.append(f"{len(packages)} installed package(s) differ from the training run's")
        if lineage.git.commit is not None and git_now.commit != lineage.git.commit:
            causes.append(f"the code is at {git_now.commit or 'an unknown commit'}, not {lineage.git.commit}")
        if lineage.git.dirty or git_now.dirty:
            causes.append("the code had uncommitted changes (then or now)")
        if contract_diff:
            causes.append("the data contracts changed since")
        if not causes:
            causes.append("nothing recorded differs: another machine (CPU) or a nondeterministic setting")
    return RebuildResult(
        model_name=plan.model_name,
        version=plan.version,
        run_id=plan.run_id,
        identical=identical,
        fingerprint_recorded=plan.recorded_fingerprint,
        fingerprint_rebuilt=fingerprint,
        training_rows_recorded=lineage.training_rows,
        training_rows_rebuilt=training_rows,
        evaluation_rows_recorded=lineage.evaluation_rows,
        evaluation_rows_rebuilt=evaluation_rows,
        rows_match=rows_match,
        application_snapshots=len(lineage.application_snapshots),
        outcome_snapshots=len(lineage.outcome_snapshots),
        review_labels=len(lineage.review_labels),
        git_commit_recorded=lineage.git.commit,
        git_commit_now=git_now.commit,
        git_dirty_now=git_now.dirty,
        package_changes=packages,
        contract_changes=contract_diff,
        likely_causes=causes,
    )


def rebuild_text(result: RebuildResult) -> str:
    """The comparison for people (the CLI and the flow's log)."""
    head = (
        f"{result.model_name} version {result.version} (MLflow run {result.run_id}): rebuilt from its lineage "
        f"({result.application_snapshots} application and {result.outcome_snapshots} outcome "
        f"snapshot(s), {result.review_labels} review label(s); "
        f"{result.training_rows_rebuilt} training and {result.evaluation_rows_rebuilt} evaluation rows, "
        f"{result.training_rows_recorded} and {result.evaluation_rows_recorded} recorded)"
    )
    if not result.identical:
        verdict = "  DIFFERENT: the rebuilt model is not the registered one"
    elif result.rows_match:
        verdict = "  IDENTICAL: the registered model is what its data, spec and seed make"
    else:
        verdict = (
            "  ROWS DIFFER: the rebuilt model's bits are the registered ones, but its rows are not "
            "the ones the run recorded (the evaluation the gates judged is not re-derived)"
        )
    lines = [
        head,
        f"  registered model: {result.fingerprint_recorded} (its files, checked against their digest)",
        f"  rebuilt model:    {result.fingerprint_rebuilt}",
        verdict,
    ]
    lines += [f"  likely cause: {cause}" for cause in result.likely_causes]
    shown = result.package_changes[:10]
    lines += [f"  package changed: {change}" for change in shown]
    if len(result.package_changes) > len(shown):
        lines.append(f"  ... and {len(result.package_changes) - len(shown)} more package change(s)")
    lines += [f"  contract changed: {change}" for change in result.contract_changes]
    return "\n".join(lines)
