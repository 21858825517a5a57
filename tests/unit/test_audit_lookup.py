"""``mlops audit find``'s answer on a real SQLite store: records, cases and current decisions."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.audit_hashing import entity_key
from mlops.audit_lookup import (
    OUTCOME_DECIDED,
    OUTCOME_PENDING,
    OUTCOME_REVIEWED,
    OUTCOME_SUPERSEDED,
    OUTCOME_UNDER_REVIEW,
    application_id,
    find_entity,
    history_text,
)
from mlops.contracts import load_contract
from mlops.errors import InputError
from mlops.settings import PROJECT_ROOT
from tests.unit.test_audit_chain import KEY, batch

pytestmark = pytest.mark.unit

APP = "APP-000001"  # row 1 of every batch(): the champion row routed by routed=(1,)


def test_a_later_automatic_decision_supersedes_the_open_case_and_is_current(engine: Engine) -> None:
    routed = audit.append_predictions(engine, batch(4, routed=(1,)), batch_id="b-1", hash_key=KEY)
    later = audit.append_predictions(engine, batch(4), batch_id="b-2", hash_key=KEY)
    case, decided = routed.record_ids[1], later.record_ids[1]
    history = find_entity(engine, APP, KEY)
    now = history.current["credit-risk"]
    assert (now.decided_by, now.decision, now.prediction.record_id) == ("model", "approve", decided)
    assert now.prediction.outcome == OUTCOME_DECIDED and now.open_cases == []
    [old] = [r for r in history.predictions if r.record_id == case]
    assert (old.case_status, old.case_superseded_by, old.outcome) == (
        "superseded",
        decided,
        OUTCOME_SUPERSEDED,
    )


def test_a_case_left_open_by_an_append_without_cases_is_named_and_its_review_becomes_current(
    engine: Engine,
) -> None:
    routed = audit.append_predictions(engine, batch(4, routed=(1,)), batch_id="b-1", hash_key=KEY)
    later = audit.append_predictions(engine, batch(4), batch_id="b-2", hash_key=KEY, open_cases=False)
    case, decided = routed.record_ids[1], later.record_ids[1]
    history = find_entity(engine, APP, KEY)
    now = history.current["credit-risk"]
    assert (now.decided_by, now.prediction.record_id, now.open_cases) == ("model", decided, [case])
    assert f"still open in the review queue from earlier predictions: {case}" in history_text(APP, history)

    # The old case resolved afterwards: the reviewer's decision is the latest one.
    audit.resolve_case(engine, case, "carol", "decline", "income unverified")
    history = find_entity(engine, APP, KEY)
    now = history.current["credit-risk"]
    assert (now.decided_by, now.decision, now.reviewer) == ("reviewer", "decline", "carol")
    assert now.prediction.record_id == case and now.open_cases == []
    review = history.records[-1]
    assert (review.record_type, review.case_id, review.reviewer) == ("review", case, "carol")
    assert now.review_record_id == review.record_id
    assert "decline, by reviewer carol" in history_text(APP, history)


def test_a_routed_latest_prediction_leaves_the_decision_pending(engine: Engine) -> None:
    audit.append_predictions(engine, batch(4), batch_id="b-1", hash_key=KEY)
    routed = audit.append_predictions(engine, batch(4, routed=(1,)), batch_id="b-2", hash_key=KEY)
    history = find_entity(engine, APP, KEY)
    now = history.current["credit-risk"]
    assert (now.decision, now.decided_by) == (None, None)
    assert now.prediction.record_id == routed.record_ids[1] and now.prediction.outcome == OUTCOME_PENDING
    assert now.open_cases == [routed.record_ids[1]] and now.prediction.case_id == routed.record_ids[1]
    assert f"none yet: case {routed.record_ids[1]} waits for review" in history_text(APP, history)


def test_a_case_opened_by_hand_on_a_decided_prediction_leaves_the_decision_under_review(
    engine: Engine,
) -> None:
    result = audit.append_predictions(engine, batch(4), batch_id="b-1", hash_key=KEY)
    rid = result.record_ids[1]
    audit.open_review_case(engine, rid, "complaint by the applicant", opened_by="dana")
    history = find_entity(engine, APP, KEY)
    now = history.current["credit-risk"]
    assert (now.decision, now.decided_by, now.open_cases) == ("approve", "model", [rid])
    assert now.prediction.outcome == OUTCOME_UNDER_REVIEW
    # The prediction names its case (as `audit find --json` shows it), not only review_opened.
    assert (now.prediction.case_status, now.prediction.case_id) == ("open", rid)
    assert [r.case_id for r in history.predictions if r.record_id != rid] == [None]
    text = history_text(APP, history)
    assert "approve, by the model" in text and f"under review: case {rid} (routed by hand)" in text
    assert "review_opened of case" in text and "by dana: routed to review: complaint by the applicant" in text
    audit.resolve_case(engine, rid, "bob", "decline", "checked by phone")
    history = find_entity(engine, APP, KEY)
    [prediction] = [r for r in history.predictions if r.record_id == rid]
    assert not prediction.review_routed and prediction.outcome == OUTCOME_REVIEWED
    now = history.current["credit-risk"]
    assert (now.decision, now.decided_by, now.reviewer) == ("decline", "reviewer", "bob")


def test_ids_are_keyed_as_given_and_blank_ids_refused(engine: Engine) -> None:
    audit.append_predictions(engine, batch(4), batch_id="b-1", hash_key=KEY)
    assert len(find_entity(engine, APP, KEY).predictions) == 2  # champion + shadow
    assert find_entity(engine, f" {APP}", KEY).records == []  # not stripped: another id
    with pytest.raises(InputError, match="application id"):
        find_entity(engine, "  ", KEY)


def test_integer_ids_are_keyed_by_their_value_as_scoring_keys_them() -> None:
    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    assert application_id("007", contract) == "007"  # a string id stays as given
    numbered = contract.model_copy(
        update={
            "columns": [
                c.model_copy(update={"dtype": "int"}) if c.name == contract.id_column else c
                for c in contract.columns
            ]
        }
    )
    assert application_id("007", numbered) == 7 and application_id(" 12 ", numbered) == 12
    assert entity_key(application_id("007", numbered), KEY) == entity_key(pd.Series([7]), KEY)[0]
    with pytest.raises(InputError, match="ids are integers"):
        application_id("APP-7", numbered)
    assert application_id("x", None) == "x"


def test_an_id_given_without_a_model_is_looked_up_as_every_contract_may_have_keyed_it(
    engine: Engine,
) -> None:
    """A model with int ids keyed 1603 by its value; without --model, "01603" must find it
    (with --model its contract decides), and a text id stays as given."""
    from mlops.audit_lookup import unscoped_ids

    rows = batch(2).assign(entity_id=pd.Series([1603, 1604, 1603, 1604], dtype="int64"))  # champion, shadow
    audit.append_predictions(engine, rows, batch_id="b-int", hash_key=KEY)
    assert unscoped_ids("01603") == ["01603", 1603] and unscoped_ids(" 7 ") == [" 7 ", 7]
    assert unscoped_ids("APP-7") == ["APP-7"]
    with pytest.raises(InputError, match="application id"):
        unscoped_ids("  ")
    first, *also = unscoped_ids("01603")
    assert find_entity(engine, first, KEY).records == []  # the text alone: another key
    found = find_entity(engine, first, KEY, also=also)
    assert len(found.predictions) == 2 and found.entity_key == entity_key(first, KEY)
