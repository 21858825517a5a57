"""Lineage of a trained model version: which data, contracts, code, spec, packages and run made it.

Written as tags on each MLflow model version (keys below, defined once) and in full as
``lineage.json`` in the training run. Git is read through ``git`` itself (subprocess); outside
a repository, or without git, the commit and dirty flag are ``unknown``.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from importlib.metadata import distributions
from pathlib import Path
from typing import Final

from pydantic import BaseModel

# --- tag keys on model versions -------------------------------------------------------------

TAG_APPLICATION_SNAPSHOTS: Final = "mlops.lineage.application_snapshots"  # comma-separated sha256s
TAG_OUTCOME_SNAPSHOTS: Final = "mlops.lineage.outcome_snapshots"
TAG_SNAPSHOTS_SHA256: Final = "mlops.lineage.snapshots_sha256"  # one digest over both lists
TAG_APPLICATIONS_CONTRACT: Final = "mlops.lineage.applications_contract"
TAG_APPLICATIONS_CONTRACT_VERSION: Final = "mlops.lineage.applications_contract_version"
TAG_OUTCOMES_CONTRACT: Final = "mlops.lineage.outcomes_contract"
TAG_OUTCOMES_CONTRACT_VERSION: Final = "mlops.lineage.outcomes_contract_version"
TAG_GIT_COMMIT: Final = "mlops.lineage.git_commit"
TAG_GIT_DIRTY: Final = "mlops.lineage.git_dirty"
TAG_MODEL_SPEC: Final = "mlops.lineage.model_spec"
TAG_MODEL_SPEC_SHA256: Final = "mlops.lineage.model_spec_sha256"
TAG_DECISION_POLICY_SHA256: Final = "mlops.lineage.decision_policy_sha256"  # the policy it was gated under
TAG_PACKAGES_SHA256: Final = "mlops.lineage.packages_sha256"
TAG_SEED: Final = "mlops.lineage.seed"
TAG_FLOW_RUN_ID: Final = "mlops.lineage.prefect_flow_run_id"
TAG_COMPARED_WITH: Final = "mlops.lineage.compared_with_champion"
TAG_MODEL_FINGERPRINT: Final = "mlops.lineage.model_fingerprint"  # sha256 of booster + feature schema
# Every file of the logged model (MLmodel, code, booster, schema, requirements), set at
# registration from the files read back from the artifact store; loaders check it.
TAG_MODEL_FILES_SHA256: Final = "mlops.lineage.model_files_sha256"
TAG_TRAINING_ROWS: Final = "mlops.lineage.training_rows"
TAG_EVALUATION_ROWS: Final = "mlops.lineage.evaluation_rows"
# Rows labelled by a person's review (the feedback loop): how many, and a digest of which
# (review record, case, input row, label); the list itself is in lineage.json.
TAG_REVIEW_LABELS: Final = "mlops.lineage.review_labels"
TAG_REVIEW_LABELS_SHA256: Final = "mlops.lineage.review_labels_sha256"
LINEAGE_TAGS: Final = (
    TAG_APPLICATION_SNAPSHOTS,
    TAG_OUTCOME_SNAPSHOTS,
    TAG_SNAPSHOTS_SHA256,
    TAG_APPLICATIONS_CONTRACT,
    TAG_APPLICATIONS_CONTRACT_VERSION,
    TAG_OUTCOMES_CONTRACT,
    TAG_OUTCOMES_CONTRACT_VERSION,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_MODEL_SPEC,
    TAG_MODEL_SPEC_SHA256,
    TAG_DECISION_POLICY_SHA256,
    TAG_PACKAGES_SHA256,
    TAG_SEED,
    TAG_FLOW_RUN_ID,
    TAG_COMPARED_WITH,
    TAG_MODEL_FINGERPRINT,
    TAG_TRAINING_ROWS,
    TAG_EVALUATION_ROWS,
    TAG_REVIEW_LABELS,
    TAG_REVIEW_LABELS_SHA256,
)

# Gate verdict on a version (values: mlops.gates VERDICT_PASSED / VERDICT_FAILED / VERDICT_BOOTSTRAP).
TAG_VERDICT: Final = "mlops.gate.verdict"
TAG_VERDICT_FAILURES: Final = "mlops.gate.failures"  # newline-separated messages
TAG_DECISION_RECORD_ID: Final = "mlops.gate.decision_record_id"
TAG_DECISION_RECORD_URI: Final = "mlops.gate.decision_record_uri"

# Promotion record on the version that became champion.
TAG_PROMOTION_KIND: Final = "mlops.promotion.kind"  # "bootstrap" (later: "shadow")
TAG_PROMOTED_BY: Final = "mlops.promotion.by"
TAG_PROMOTED_AT: Final = "mlops.promotion.at"
TAG_PROMOTION_RECORD_URI: Final = "mlops.promotion.record_uri"
PROMOTION_BOOTSTRAP: Final = "bootstrap"

# Value of a tag whose subject does not exist (no flow run, no champion, no git).
NONE_VALUE: Final = "none"
UNKNOWN_VALUE: Final = "unknown"

# Artifacts of a training run.
LINEAGE_ARTIFACT: Final = "lineage.json"
DECISION_RECORD_ARTIFACT: Final = "decision_record.json"
PROMOTION_RECORD_ARTIFACT: Final = "promotion_record.json"

_GIT_TIMEOUT_SECONDS: Final = 10


class GitState(BaseModel):
    """The code a model was trained with; ``None`` fields mean unknown (no repo, no git)."""

    commit: str | None
    dirty: bool | None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(cwd: Path) -> GitState:
    """HEAD commit and whether tracked or untracked files differ from it (``git status --porcelain``)."""
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return GitState(commit=None, dirty=None)
    status = _git(["status", "--porcelain"], cwd)
    return GitState(commit=commit.strip(), dirty=None if status is None else bool(status.strip()))


def installed_packages() -> list[str]:
    """``name==version`` of every installed distribution, sorted and de-duplicated.

    Reads only the ``Name`` and ``Version`` header lines of each METADATA file: ``d.metadata``
    parses the whole file as an e-mail message (about 0.3 s for 200 packages, 25x slower),
    and this runs in every training run.
    """
    found = set()
    for dist in distributions():
        name, version = _name_and_version(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
        if name:
            found.add(f"{name.lower()}=={version}")
    return sorted(found)


def _name_and_version(metadata: str) -> tuple[str, str]:
    """The ``Name`` and ``Version`` fields of a core-metadata header (which ends at a blank line)."""
    name = version = ""
    for line in metadata.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        if key == "Name":
            name = value.strip()
        elif key == "Version":
            version = value.strip()
    return name, version


def packages_sha256(packages: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(packages)).encode()).hexdigest()


def snapshots_sha256(application_snapshots: list[str], outcome_snapshots: list[str]) -> str:
    text = "applications:" + ",".join(sorted(application_snapshots))
    text += ";outcomes:" + ",".join(sorted(outcome_snapshots))
    return hashlib.sha256(text.encode()).hexdigest()


class ReviewLabel(BaseModel):
    """A training row labelled by a person: the chained ``review`` record that decided it (the
    label is checkable against the audit store), its case and the scored input row."""

    review_record_id: str
    case_id: str
    input_snapshot: str
    input_row: int
    label: int


def by_snapshot(labels: Sequence[ReviewLabel]) -> dict[str, list[ReviewLabel]]:
    """Review labels grouped by the snapshot holding their row, in first-seen order."""
    groups: dict[str, list[ReviewLabel]] = {}
    for label in labels:
        groups.setdefault(label.input_snapshot, []).append(label)
    return groups


def tag_list(tags: Mapping[str, str], key: str) -> list[str]:
    """A comma-separated lineage tag (a snapshot list) as a list; none when unset or ``None``."""
    value = tags.get(key, "")
    return [] if value in ("", NONE_VALUE) else [s for s in value.split(",") if s]


def review_labels_sha256(labels: list[ReviewLabel]) -> str:
    """sha256 of the review labels as canonical JSON, in review record order."""
    from mlops.audit_hashing import canonical_json

    ordered = sorted(labels, key=lambda r: r.review_record_id)
    return hashlib.sha256(canonical_json([r.model_dump(mode="json") for r in ordered]).encode()).hexdigest()


def model_fingerprint(booster_json: bytes, schema_json: bytes) -> str:
    """sha256 of a model's booster and feature schema files (tag ``mlops.lineage.model_fingerprint``):
    equal iff the trained models are identical."""
    return hashlib.sha256(booster_json + schema_json).hexdigest()


class Lineage(BaseModel):
    """Everything that made a model version (``tags()`` gives the version tags)."""

    application_snapshots: list[str]
    outcome_snapshots: list[str]
    applications_contract: str
    applications_contract_versions: list[str]
    outcomes_contract: str
    outcomes_contract_versions: list[str]
    git: GitState
    model_spec: str
    model_spec_sha256: str
    decision_policy_sha256: str = UNKNOWN_VALUE
    packages: list[str]
    seed: int
    flow_run_id: str | None
    compared_with_champion: int | None
    model_fingerprint: str
    training_rows: int
    evaluation_rows: int
    review_labels: list[ReviewLabel] = []

    def tags(self) -> dict[str, str]:
        def opt(value: object) -> str:
            return NONE_VALUE if value is None else str(value)

        dirty = UNKNOWN_VALUE if self.git.dirty is None else str(self.git.dirty).lower()
        return {
            TAG_APPLICATION_SNAPSHOTS: ",".join(self.application_snapshots),
            TAG_OUTCOME_SNAPSHOTS: ",".join(self.outcome_snapshots),
            TAG_SNAPSHOTS_SHA256: snapshots_sha256(self.application_snapshots, self.outcome_snapshots),
            TAG_APPLICATIONS_CONTRACT: self.applications_contract,
            TAG_APPLICATIONS_CONTRACT_VERSION: ",".join(self.applications_contract_versions),
            TAG_OUTCOMES_CONTRACT: self.outcomes_contract,
            TAG_OUTCOMES_CONTRACT_VERSION: ",".join(self.outcomes_contract_versions),
            TAG_GIT_COMMIT: self.git.commit or UNKNOWN_VALUE,
            TAG_GIT_DIRTY: dirty,
            TAG_MODEL_SPEC: self.model_spec,
            TAG_MODEL_SPEC_SHA256: self.model_spec_sha256,
            TAG_DECISION_POLICY_SHA256: self.decision_policy_sha256,
            TAG_PACKAGES_SHA256: packages_sha256(self.packages),
            TAG_SEED: str(self.seed),
            TAG_FLOW_RUN_ID: opt(self.flow_run_id),
            TAG_COMPARED_WITH: opt(self.compared_with_champion),
            TAG_MODEL_FINGERPRINT: self.model_fingerprint,
            TAG_TRAINING_ROWS: str(self.training_rows),
            TAG_EVALUATION_ROWS: str(self.evaluation_rows),
            TAG_REVIEW_LABELS: str(len(self.review_labels)),
            TAG_REVIEW_LABELS_SHA256: review_labels_sha256(self.review_labels),
        }
