"""``mlops review list`` / ``mlops review resolve``: round trip, exit codes, nothing written on error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops import audit
from mlops.audit import open_audit_store
from mlops.cli import main
from mlops.settings import get_settings
from mlops.storage import make_store
from tests.review_helpers import (
    KEY,
    MODEL,
    append,
    application_snapshot,
    contracts,
    predictions,
    routed_batch,
)

pytestmark = pytest.mark.unit


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.fixture
def cases(mlops_home: Path) -> list[str]:
    """Two open cases of the champion (rows 1 and 2), in the settings' audit store."""
    _, records = routed_batch(get_settings(), [0.1, 0.3, 0.2], routed=(1, 2), seed=5)
    return [records[1], records[2]]


def test_list_and_resolve_round_trip(cases: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = run(capsys, "review", "list")
    assert code == 0 and data["ok"] and data["count"] == 2
    assert [c["case_id"] for c in data["cases"]] == cases
    assert data["cases"][0]["routing_reason"] == "score in the review band"
    assert data["cases"][0]["opened_by"] is None  # routed by the batch
    assert (data["cases"][0]["model_version"], data["cases"][0]["role"]) == ("3", "champion")
    code, data, _ = run(capsys, "review", "list", "--model", "credit-rsik")  # a typo: no spec, no records
    assert (
        code == 2
        and data["error"] == "no model named 'credit-rsik': no model spec and no audit records of it"
    )
    assert data["hint"] == "check --model; known models: credit-risk"
    engine = open_audit_store(get_settings())
    audit.append_event(engine, "note", {"why": "a retired model"}, model_name="retired")
    engine.dispose()
    code, data, _ = run(capsys, "review", "list", "--model", "retired")  # no spec, but audited: its queue
    assert (code, data["count"]) == (0, 0)
    assert (
        "known models: credit-risk, retired"
        in run(capsys, "audit", "find", "APP-1", "--model", "x")[1]["hint"]
    )
    code, data, _ = run(capsys, "review", "list", "--model", MODEL, "--limit", "1")
    assert (data["count"], data["open"]) == (1, 2)
    assert main(["review", "list", "--limit", "1"]) == 0
    assert capsys.readouterr().out.startswith(
        "2 open review case(s), the oldest 1 shown (--limit N, --all)\n"
    )
    assert run(capsys, "review", "list", "--all")[1]["count"] == 2
    assert main(["review", "list", "--limit", "1", "--all"]) == 2  # one or the other
    assert main(["review", "list", "--limit", "0"]) == 2

    code, data, _ = run(
        capsys, "review", "resolve", cases[0], "--reviewer", "alice", "--decision", "decline",
        "--reason", "income not verifiable",
    )  # fmt: skip
    assert code == 0 and data["ok"]
    case = data["case"]
    assert (case["status"], case["reviewer"], case["decision"]) == ("resolved", "alice", "decline")
    assert case["resolution_reason"] == "income not verifiable" and case["review_record_id"]

    code, data, _ = run(capsys, "review", "list")
    assert [c["case_id"] for c in data["cases"]] == [cases[1]]
    engine = open_audit_store(get_settings())
    try:
        assert audit.verify_chain(engine).ok
        [resolved] = audit.resolved_cases(engine).to_dict(orient="records")
        assert (resolved["case_id"], resolved["label"], resolved["reviewer"]) == (cases[0], 1, "alice")
    finally:
        engine.dispose()


def test_text_output_lists_cases(cases: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "list"]) == 0
    out = capsys.readouterr().out
    assert "2 open review case(s)" in out and cases[0] in out and "score 0.3000" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision": "maybe"}, "decision must be one of"),
        ({"reviewer": " "}, "reviewer"),
        ({"reason": ""}, "reason is required"),
        ({"reason": "\u200b"}, "reason is required"),  # one zero-width space reads as empty
        ({"reviewer": "\ufeff "}, "reviewer"),
        ({"reason": "\u3164"}, "reason is required"),  # a Hangul filler prints as blank
        ({"reason": "\u2800 \u0301"}, "reason is required"),  # braille blank, a lone combining mark
        ({"case_id": str(uuid.uuid4())}, "no review case"),
        ({"case_id": "not-an-id"}, "no review case"),
    ],
)
def test_bad_resolutions_exit_2_and_write_nothing(
    cases: list[str], capsys: pytest.CaptureFixture[str], change: dict[str, str], message: str
) -> None:
    args = {"case_id": cases[0], "reviewer": "bob", "decision": "approve", "reason": "ok", **change}
    code, data, err = run(
        capsys, "review", "resolve", args["case_id"], "--reviewer", args["reviewer"],
        "--decision", args["decision"], "--reason", args["reason"],
    )  # fmt: skip
    assert code == 2 and not data["ok"] and message in data["error"] and message in err
    assert run(capsys, "review", "list")[1]["count"] == 2


def test_a_case_id_in_capitals_finds_the_case(cases: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = run(
        capsys, "review", "resolve", cases[0].upper(), "--reviewer", "alice", "--decision", "approve",
        "--reason", "checked",
    )  # fmt: skip
    assert code == 0 and data["case"]["case_id"] == cases[0]


def test_resolving_twice_exits_1_and_keeps_the_first_decision(
    cases: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["review", "resolve", cases[1], "--reason", "checked"]
    assert run(capsys, *base, "--reviewer", "alice", "--decision", "approve")[0] == 0
    code, data, _ = run(capsys, *base, "--reviewer", "bob", "--decision", "decline")
    assert code == 1 and "resolved already" in data["error"] and "alice" in data["error"]  # refused
    engine = open_audit_store(get_settings())
    try:
        case = audit.get_case(engine, cases[1])
        assert (case.reviewer, case.decision) == ("alice", "approve")
        reviews = [r for r in audit.resolved_cases(engine)["review_record_id"]]
        assert len(reviews) == 1 and audit.verify_chain(engine).ok
    finally:
        engine.dispose()


def test_only_a_listed_reviewer_resolves_when_reviewers_are_set(
    cases: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_REVIEWERS", "alice, bob")
    base = ["review", "resolve", cases[0], "--decision", "approve", "--reason", "checked"]
    code, data, _ = run(capsys, *base, "--reviewer", "mallory")
    assert code == 1 and data["error"] == "'mallory' is not an allowed reviewer (MLOPS_REVIEWERS)"
    assert run(capsys, "review", "list")[1]["count"] == 2  # nothing written
    code, data, _ = run(capsys, *base, "--reviewer", " bob ")
    assert code == 0 and data["case"]["reviewer"] == "bob"  # stored as listed, trimmed


def test_missing_options_are_usage_errors(cases: list[str]) -> None:
    assert main(["review", "resolve", cases[0], "--decision", "approve"]) == 2
    assert main(["review"]) == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("garbage", "MLOPS_AUDIT_DB_URL is not a database URL"),
        ("nosuchdialect://x", "MLOPS_AUDIT_DB_URL is not a database URL"),
        ("postgresql+psycopg2://nobody@127.0.0.1:1/none", "cannot be reached"),  # nothing listens on port 1
    ],
)
@pytest.mark.parametrize("command", [["audit", "verify"], ["review", "list"]])
def test_a_bad_audit_store_url_is_a_clear_error_not_a_traceback(
    mlops_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    message: str,
    command: list[str],
) -> None:
    monkeypatch.setenv("MLOPS_AUDIT_DB_URL", url)
    code, data, err = run(capsys, *command)
    assert (
        code == 2 and message in data["error"] and "MLOPS_AUDIT_DB_URL" in data["error"] + str(data["hint"])
    )
    assert "Traceback" not in err


def test_a_prediction_routed_by_hand_is_reviewed_and_the_trail_says_who_routed_it(
    mlops_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", KEY)
    settings = get_settings()
    engine = open_audit_store(settings)
    apps, _ = contracts()
    sha, frame = application_snapshot(make_store(settings), apps, 2, seed=5)
    ids = frame["application_id"].tolist()
    champion = append(engine, predictions(sha, ids, [0.1, 0.7]), "b1")
    shadow = append(engine, predictions(sha, ids, [0.2, 0.6], version="4", role="shadow"), "b1")
    engine.dispose()
    opening = ["review", "open", "--by", "dana", "--reason", "complaint by the applicant"]

    code, data, err = run(capsys, *opening, shadow[0])
    assert code == 1 and "shadow prediction" in data["error"] and "decided nothing" in err
    assert data["hint"] == f"open the case on the deciding prediction {champion[0]}"
    code, data, _ = run(capsys, "review", "open", champion[0], "--by", " ", "--reason", "x")
    assert code == 2 and "who routes the case" in data["error"]
    assert run(capsys, *opening, str(uuid.uuid4()))[0] == 2
    assert run(capsys, "review", "list")[1]["count"] == 0  # the refusals wrote nothing

    code, data, _ = run(capsys, *opening, champion[0])
    assert code == 0 and data["opened_by"] == "dana"
    case = data["case"]
    assert (case["case_id"], case["status"], case["role"]) == (champion[0], "open", "champion")
    assert case["routing_reason"] == "complaint by the applicant"
    [listed] = run(capsys, "review", "list")[1]["cases"]
    assert (listed["case_id"], listed["opened_by"]) == (champion[0], "dana")
    assert main(["review", "list"]) == 0 and "(routed by hand by dana)" in capsys.readouterr().out
    code, data, _ = run(capsys, *opening, champion[0])
    assert code == 1 and "is in review already" in data["error"]

    # The trail: a review_opened record says who routed which case and why; until a reviewer
    # decides, the application has no current decision.
    code, data, _ = run(capsys, "audit", "find", str(ids[0]))
    [opened] = [r for r in data["records"] if r["record_type"] == "review_opened"]
    assert (opened["case_id"], opened["opened_by"]) == (champion[0], "dana")
    assert opened["review_reason"] == "complaint by the applicant"
    now = data["current"][MODEL]  # the model's decision stands while the case is open
    assert (now["decision"], now["decided_by"], now["open_cases"]) == ("approve", "model", [champion[0]])
    assert main(["audit", "find", str(ids[0])]) == 0
    assert f"review_opened of case {champion[0]} by dana: routed to review" in capsys.readouterr().out
    code, data, _ = run(
        capsys, "review", "resolve", champion[0], "--reviewer", "erin", "--decision", "decline",
        "--reason", "income not verifiable",
    )  # fmt: skip
    assert code == 0
    now = run(capsys, "audit", "find", str(ids[0]))[1]["current"][MODEL]
    assert (now["decision"], now["decided_by"], now["reviewer"]) == ("decline", "reviewer", "erin")
    engine = open_audit_store(get_settings())
    try:
        assert audit.verify_chain(engine).ok
    finally:
        engine.dispose()


def test_list_and_show_give_the_application_its_inputs_and_the_proposal_never_the_sensitive_value(
    mlops_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    store = make_store(settings)
    engine = open_audit_store(settings)
    apps, _ = contracts()
    sha, frame = application_snapshot(store, apps, 4, seed=5)
    gone, gone_frame = application_snapshot(store, apps, 2, seed=6)
    cases = append(
        engine, predictions(sha, frame["application_id"], [0.1, 0.3, 0.6, 0.2], routed=(1, 2, 3)), "b1"
    )
    lost = append(engine, predictions(gone, gone_frame["application_id"], [0.3, 0.1], routed=(0,)), "b2")
    engine.dispose()
    (Path(settings.resolved_store_url) / f"snapshots/{apps.name}/valid/{gone}.parquet").unlink()
    reads: list[str] = []
    get_bytes = type(store).get_bytes
    monkeypatch.setattr(type(store), "get_bytes", lambda self, key: reads.append(key) or get_bytes(self, key))

    # The list: each case's application id and the model's proposal; one read per snapshot.
    assert main(["review", "list"]) == 0
    out = capsys.readouterr().out
    assert sorted(reads) == sorted(f"snapshots/{apps.name}/valid/{s}.parquet" for s in (sha, gone))
    for case, row, proposal in ((cases[1], 1, "approve"), (cases[2], 2, "decline")):
        [line] = [x for x in out.splitlines() if x.startswith(case)]
        assert f"application {frame['application_id'][row]}  proposed {proposal}" in line
    [line] = [x for x in out.splitlines() if x.startswith(lost[0])]
    assert "application ?" in line  # a missing snapshot does not stop the listing
    assert f"input row unavailable (snapshot {gone[:12]} missing)" in out
    code, data, _ = run(capsys, "review", "list")
    listed = {c["case_id"]: c for c in data["cases"]}
    assert code == 0 and data["count"] == 4
    assert listed[cases[2]]["application_id"] == frame["application_id"][2]
    assert listed[cases[2]]["proposed_decision"] == "decline"
    assert listed[cases[2]]["inputs"]["loan_amount"] == frame["loan_amount"][2]
    assert listed[cases[2]]["inputs"]["gender"] == "withheld (sensitive attribute)"
    assert listed[lost[0]]["inputs"] is None and listed[lost[0]]["application_id"] is None
    assert listed[lost[0]]["input_error"] == f"input row unavailable (snapshot {gone[:12]} missing)"

    # One case in full: every input column with its value, the sensitive one withheld.
    assert main(["review", "show", cases[2]]) == 0
    out = capsys.readouterr().out
    row = frame.iloc[2]
    assert f"application  {row['application_id']}" in out
    assert "score        0.6000 (P default); proposed decline" in out
    assert "score in the review band" in out and "credit-risk v3 champion" in out
    assert "decline at P(default) >= 0.25; review band [0.18, 0.35]" in out  # the spec's policy
    values = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("    "))
    assert set(values) == set(apps.column_names)
    assert values["gender"] == "withheld (sensitive attribute)" and row["gender"] not in out.split()
    assert values["application_id"] == row["application_id"] and values["age"] == str(row["age"])
    assert float(values["loan_amount"]) == pytest.approx(row["loan_amount"])
    assert values["region"] == row["region"]
    resolve = f"mlops review resolve {cases[2]} --reviewer WHO --decision approve|decline --reason TEXT"
    assert out.rstrip().endswith(resolve)
    code, data, _ = run(capsys, "review", "show", cases[2].upper())
    assert code == 0 and data["application_id"] == row["application_id"]
    assert (data["proposed_decision"], data["score"], data["model_version"]) == ("decline", 0.6, "3")
    assert data["routing_reason"] == "score in the review band" and data["resolve_command"] == resolve
    assert data["inputs"]["gender"] == "withheld (sensitive attribute)"
    assert data["inputs"]["age"] == row["age"] and data["inputs"]["region"] == row["region"]
    assert (data["policy"]["threshold"], data["policy_source"]) == (0.25, "model spec today")

    code, data, _ = run(capsys, "review", "show", lost[0])  # its snapshot is gone: said, not failed
    assert code == 0 and data["input_error"] == f"input row unavailable (snapshot {gone[:12]} missing)"
    assert run(capsys, "review", "show", str(uuid.uuid4()))[0] == 2
    assert (
        run(
            capsys, "review", "resolve", cases[2], "--reviewer", "a", "--decision", "decline", "--reason", "r"
        )[0]
        == 0
    )
    code, data, _ = run(capsys, "review", "show", cases[2])  # a resolved case is shown, not decided again
    assert code == 0 and data["case"]["status"] == "resolved" and data["resolve_command"] is None


def test_cases_are_still_listed_when_the_store_does_not_answer(
    mlops_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store outage (ServiceUnavailable, after the store's own retries) is said on each case
    whose input row was not read yet, once, instead of failing the reviewer's whole list."""
    from mlops.errors import ServiceUnavailable

    settings = get_settings()
    store = make_store(settings)
    engine = open_audit_store(settings)
    apps, _ = contracts()
    first, first_frame = application_snapshot(store, apps, 2, seed=5)
    second, second_frame = application_snapshot(store, apps, 2, seed=6)
    append(engine, predictions(first, first_frame["application_id"], [0.3, 0.1], routed=(0,)), "b1")
    append(engine, predictions(second, second_frame["application_id"], [0.3, 0.1], routed=(0,)), "b2")
    engine.dispose()
    calls: list[str] = []

    def down(self: Any, key: str) -> bytes:
        calls.append(key)
        raise ServiceUnavailable("the object store did not answer (test)")

    monkeypatch.setattr(type(store), "get_bytes", down)
    code, data, _ = run(capsys, "review", "list")
    assert code == 0 and data["count"] == 2 and len(calls) == 1  # not one wait per snapshot
    for case in data["cases"]:
        assert case["inputs"] is None
        assert (
            case["input_error"]
            == "input row unavailable (the store did not answer: the object store did not answer (test))"
        )


def test_a_case_whose_row_is_outside_its_snapshot_leaves_the_other_cases_of_that_snapshot_shown(
    mlops_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prediction record naming a row past the end of its snapshot says so on its own case;
    the other cases of the same snapshot still show their application and inputs."""
    settings = get_settings()
    engine = open_audit_store(settings)
    apps, _ = contracts()
    sha, frame = application_snapshot(make_store(settings), apps, 3, seed=5)
    ids = [*frame["application_id"], "APP-NOT-THERE"]
    records = append(
        engine, predictions(sha, ids, [0.1, 0.3, 0.2, 0.3], routed=(1, 3), rows=(0, 1, 2, 7)), "b1"
    )
    engine.dispose()
    code, data, _ = run(capsys, "review", "list")
    listed = {c["case_id"]: c for c in data["cases"]}
    assert code == 0 and data["count"] == 2
    assert listed[records[1]]["application_id"] == frame["application_id"][1]
    assert listed[records[1]]["input_error"] is None
    assert listed[records[3]]["inputs"] is None
    assert (
        listed[records[3]]["input_error"]
        == f"input row unavailable (row 7 is outside snapshot {sha[:12]} (3 rows))"
    )


def test_an_unrouted_prediction_points_to_review_open_and_a_decision_in_capitals_is_taken(
    mlops_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, records = routed_batch(get_settings(), [0.1, 0.3], routed=(1,), seed=7)
    code, data, _ = run(
        capsys,
        "review",
        "resolve",
        records[0],
        "--reviewer",
        "bob",
        "--decision",
        "approve",
        "--reason",
        "ok",
    )
    assert code == 2 and data["error"] == f"no review case {records[0]!r}"
    assert "mlops review open PREDICTION_ID --by WHO --reason TEXT" in data["hint"]
    code, data, _ = run(
        capsys,
        "review",
        "resolve",
        records[1],
        "--reviewer",
        "bob",
        "--decision",
        "APPROVE",
        "--reason",
        "ok",
    )
    assert code == 0 and data["case"]["decision"] == "approve"
    assert main(["review", "resolve", "--help"]) == 0
    assert "--decision {approve,decline}" in capsys.readouterr().out
