"""Pure parts of promotion: approval policy, rollback-target reading, shadow pairing, the
fail-closed refusals of the shadow comparison, crash seam and trigger detection."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlops.audit import entity_key
from mlops.dossier import trigger_from_tags
from mlops.errors import SettingsError
from mlops.model_spec import DecisionPolicy, ModelSpec
from mlops.promotion import (
    APPROVER_AUTO_POLICY,
    CRASH_AFTER_ENV,
    ROLLBACK_TARGET_FOR_TAG,
    ROLLBACK_TARGET_TAG,
    TAG_PREVIOUS_CHAMPION,
    TAG_TRIGGER_EVENT,
    TAG_TRIGGER_EVENT_ID,
    InjectedCrash,
    PreState,
    PromotionBackends,
    ShadowPromotion,
    crash_seam,
    form_approval,
    no_approvers_refusal,
    policy_approval,
    read_rollback_target,
    undo_move_champion,
    write_rollback_target,
)
from mlops.settings import Settings
from mlops.shadow_comparison import compare_on_shadow, label_pairs

pytestmark = pytest.mark.unit

KEY = "unit-test-key"


# What the production profile requires before it reads at all (Settings checks it).
PRODUCTION_SERVICES = {
    "MLOPS_MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "MLOPS_AUDIT_DB_URL": "postgresql+psycopg2://audit@db/audit",
    "MLOPS_STORE_URL": "s3://bucket/prefix",
    "MLOPS_ENTITY_HASH_KEY": "a-secret",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLOPS_PROFILE", "MLOPS_APPROVERS", "MLOPS_PROMOTION_APPROVAL", CRASH_AFTER_ENV):
        monkeypatch.delenv(var, raising=False)


# --- settings and approval policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "policy", "approvers"),
    [
        ({}, "auto", []),
        ({"MLOPS_PROFILE": "production", **PRODUCTION_SERVICES}, "manual", []),
        (
            {"MLOPS_PROFILE": "production", **PRODUCTION_SERVICES, "MLOPS_PROMOTION_APPROVAL": "auto"},
            "auto",
            [],
        ),
        (
            {"MLOPS_PROMOTION_APPROVAL": "manual", "MLOPS_APPROVERS": " alice, bob,,"},
            "manual",
            ["alice", "bob"],
        ),
    ],
)
def test_settings_policy_by_profile_and_comma_separated_approvers(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], policy: str, approvers: list[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.approval_policy == policy and settings.approvers == approvers


def test_settings_refuse_an_unknown_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL", "sometimes")
    with pytest.raises(ValueError, match="promotion_approval"):
        Settings()


def test_auto_policy_approves_and_says_so() -> None:
    approval = policy_approval(Settings(), "mallory", "mallory")
    assert approval is not None and approval.approved and approval.approver == APPROVER_AUTO_POLICY
    assert approval.channel == "auto-policy" and approval.requested_by == "mallory"
    assert approval.refusal([]) is None


def test_manual_policy_needs_an_allowed_approver() -> None:
    settings = Settings(promotion_approval="manual", approvers=["alice"])
    assert policy_approval(settings, None, "x") is None  # ask a person
    cli = policy_approval(settings, "alice", "alice")
    assert cli is not None and cli.approved and cli.channel == "cli"
    stranger = policy_approval(settings, "mallory", "mallory")
    assert stranger is not None and not stranger.approved
    assert stranger.refusal(settings.approvers) == "'mallory' is not an allowed approver (allowed: alice)"


def test_form_answers() -> None:
    settings = Settings(promotion_approval="manual", approvers=["alice"])
    ok = form_approval(settings, " alice ", "approve", "fine", "bob")
    assert ok.approved and ok.approver == "alice" and ok.channel == "prefect-ui"
    rejected = form_approval(settings, "alice", "reject", "not now", "bob")
    assert not rejected.approved and rejected.refusal(settings.approvers) == "rejected by alice: not now"


def test_manual_policy_without_approvers_is_refused_up_front() -> None:
    assert no_approvers_refusal(Settings(promotion_approval="manual")) is not None
    assert no_approvers_refusal(Settings(promotion_approval="manual", approvers=["a"])) is None
    assert no_approvers_refusal(Settings()) is None  # auto needs nobody


# --- rollback target -----------------------------------------------------------------------------


class FakeRegistry:
    def __init__(self, champion: int | None, version_tags: dict[int, dict[str, str]]) -> None:
        self.champion = champion
        self.tags = version_tags

    def get_alias_version(self, name: str, alias: str) -> int | None:
        return self.champion if alias == "champion" else None

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return self.tags.get(version, {})


class FakeMetadata:
    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = tags

    def model_tags(self, name: str) -> dict[str, str]:
        return self.tags


@pytest.mark.parametrize(
    ("champion", "model_tags", "version_tags", "expected"),
    [
        (None, {}, {}, None),  # no champion
        (3, {ROLLBACK_TARGET_FOR_TAG: "3", ROLLBACK_TARGET_TAG: "2"}, {}, 2),  # the pair fits
        (1, {ROLLBACK_TARGET_FOR_TAG: "1", ROLLBACK_TARGET_TAG: "none"}, {}, None),  # after bootstrap
        # a promotion to 3 wrote its pair but never committed: champion 2 answers for itself
        (2, {ROLLBACK_TARGET_FOR_TAG: "3", ROLLBACK_TARGET_TAG: "2"}, {2: {TAG_PREVIOUS_CHAMPION: "1"}}, 1),
        (2, {ROLLBACK_TARGET_FOR_TAG: "3", ROLLBACK_TARGET_TAG: "2"}, {}, None),
    ],
)
def test_rollback_target_only_counts_for_the_current_champion(
    champion: int | None,
    model_tags: dict[str, str],
    version_tags: dict[int, dict[str, str]],
    expected: int | None,
) -> None:
    registry: Any = FakeRegistry(champion, version_tags)
    assert read_rollback_target(registry, FakeMetadata(model_tags), "m") == expected


def test_writing_the_rollback_target_names_its_champion_first() -> None:
    writes: list[tuple[str, str]] = []

    class Recorder(FakeMetadata):
        def set_model_tag(self, name: str, key: str, value: str) -> None:
            writes.append((key, value))
            self.tags[key] = value

    metadata = Recorder({})
    write_rollback_target(metadata, "m", champion=3, target=2)
    write_rollback_target(metadata, "m", champion=1, target=None)
    assert writes == [
        (ROLLBACK_TARGET_FOR_TAG, "3"),
        (ROLLBACK_TARGET_TAG, "2"),
        (ROLLBACK_TARGET_FOR_TAG, "1"),
        (ROLLBACK_TARGET_TAG, "none"),
    ]
    registry: Any = FakeRegistry(1, {})
    assert read_rollback_target(registry, metadata, "m") is None


class AliasRegistry(FakeRegistry):
    def set_alias(self, name: str, alias: str, version: int) -> None:
        assert alias == "champion"
        self.champion = version


@pytest.mark.parametrize(("current", "after"), [(2, 1), (1, 1), (5, 5)])
def test_undo_only_reverts_our_own_alias_move(current: int, after: int) -> None:
    """Moved by us (2) -> back to 1; never moved (1) -> 1; moved by someone else (5) -> stays."""
    promotion = ShadowPromotion(
        model_name="m",
        from_version=1,
        to_version=2,
        outcome="approved",
        reasons=[],
        evidence=None,
        approval=None,
        requested_by="t",
        flow_run_id=None,
        pre=PreState(champion=1, challenger=2, model_tags={}, version_tags={}, rollback_target=None),
    )
    registry: Any = AliasRegistry(current, {})
    backends: Any = PromotionBackends(registry=registry, metadata=FakeMetadata({}), audit=None, store=None)
    undo_move_champion(backends, promotion)
    assert registry.champion == after


# --- crash seam and trigger -------------------------------------------------------------------


def test_crash_seam_by_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    crash_seam("move_champion")  # nothing set: no crash
    with pytest.raises(InjectedCrash, match="move_champion"):
        crash_seam("move_champion", "move_champion")
    monkeypatch.setenv(CRASH_AFTER_ENV, "tag_version")
    crash_seam("move_champion")
    with pytest.raises(InjectedCrash):
        crash_seam("tag_version")


def test_trigger_from_version_or_run_tags_else_manual() -> None:
    by_version = trigger_from_tags(
        {TAG_TRIGGER_EVENT_ID: "e1", TAG_TRIGGER_EVENT: "mlops.drift.detected"}, {}
    )
    assert by_version.source == "event" and by_version.event_id == "e1"
    assert by_version.event_name == "mlops.drift.detected"
    assert trigger_from_tags({}, {TAG_TRIGGER_EVENT_ID: "e2"}).event_id == "e2"
    assert trigger_from_tags({TAG_TRIGGER_EVENT_ID: "none"}, {}).source == "manual"


# --- shadow pairing ----------------------------------------------------------------------------


def _records(keys: list[str], scores: list[float], role: str, seq0: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "seq": range(seq0, seq0 + len(keys)),
            "entity_key": keys,
            "role": role,
            "score": scores,
            "input_snapshot": "a" * 64,
            "input_row": range(len(keys)),
            "created_at": pd.Timestamp("2026-01-01", tz="UTC"),
        }
    )


def test_only_entities_scored_by_both_versions_and_labelled_are_compared() -> None:
    a, b, c = (entity_key(x, KEY) for x in "ABC")
    champion = _records([a, b, c], [0.1, 0.2, 0.3], "champion", 1)
    challenger = _records([b, c], [0.25, 0.35], "shadow", 10)
    outcomes = pd.DataFrame({"entity_key": [a, c], "label": [0, 1], "outcome_snapshot": ["s", "s"]})
    pairs = label_pairs(champion, challenger, outcomes, champion_version=1, challenger_version=2, min_rows=1)
    assert list(pairs.frame["entity_key"]) == [c]
    assert pairs.frame.loc[0, "score_champion"] == 0.3 and pairs.frame.loc[0, "score_challenger"] == 0.35
    d = pairs.data
    assert (d.champion_records, d.challenger_records, d.paired, d.labelled, d.positives) == (3, 2, 2, 1, 1)
    assert d.roles == {"shadow": 1} and d.outcome_snapshots == ["s"]


def _spec() -> ModelSpec:
    return ModelSpec(
        name="m",
        applications_contract="apps",
        outcomes_contract="outs",
        target="y",
        features=("x",),
        decision_policy=DecisionPolicy(threshold=0.5, review_band=(0.4, 0.6)),
    )


@pytest.mark.parametrize(
    ("labels", "min_rows", "min_days", "reason"),
    [
        ([0, 1, 0], 5, 0, "only 3 labelled shadow rows"),
        ([0, 1, 0], 0, 2, "shadowed 1 day(s) of data; the spec's shadow policy needs 2"),
        ([1, 1, 1], 2, 0, "one class only"),
    ],
)
def test_the_comparison_fails_closed(labels: list[int], min_rows: int, min_days: int, reason: str) -> None:
    keys = [entity_key(str(i), KEY) for i in range(3)]
    pairs = label_pairs(
        _records(keys, [0.1, 0.5, 0.9], "champion", 1),
        _records(keys, [0.2, 0.6, 0.8], "shadow", 10),
        pd.DataFrame({"entity_key": keys, "label": labels, "outcome_snapshot": "s"}),
        champion_version=1,
        challenger_version=2,
        min_rows=min_rows,
        days=1,
        min_days=min_days,
    )
    evidence = compare_on_shadow(
        _spec(), pairs, None, champion_ref={"version": 1}, candidate_ref={"version": 2}
    )
    assert not evidence.passed and evidence.decision_record is None
    assert reason in evidence.reasons[0] and reason in evidence.summary()


def test_manual_approval_with_no_prefect_server_to_show_the_form_is_refused_at_once(
    mlops_home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.promote import _ask_a_person
    from mlops.settings import get_settings

    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL", "manual")
    monkeypatch.setenv("MLOPS_APPROVERS", "alice")
    settings = get_settings()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as under a temporary server
        approval = _ask_a_person(SimpleNamespace(requested_by="ops"), settings)  # type: ignore[arg-type]
    assert (approval.channel, approval.decision, approval.allowed) == ("no-form", "reject", False)
    assert "--approver WHO" in approval.reason and "Prefect UI" in approval.reason
    # Refused with that reason (what to do), not "'none' is not an allowed approver"; not paused.
    assert approval.refusal(settings.approvers) == approval.reason


def test_production_names_who_may_resolve_review_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"MLOPS_PROFILE": "production", **PRODUCTION_SERVICES}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLOPS_REVIEWERS", raising=False)
    with pytest.raises(SettingsError, match="the production profile needs MLOPS_REVIEWERS"):
        Settings().allowed_reviewers()
    monkeypatch.setenv("MLOPS_REVIEWERS", "carol, dan")
    assert Settings().allowed_reviewers() == ["carol", "dan"]
    monkeypatch.setenv("MLOPS_PROFILE", "embedded")
    monkeypatch.delenv("MLOPS_REVIEWERS")
    assert Settings().allowed_reviewers() == []  # embedded: any named reviewer
