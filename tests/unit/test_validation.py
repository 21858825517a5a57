"""Row-level quarantine and the batch verdict, on small frames built from the real contract."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.batch_io import read_batch
from mlops.constants import QUARANTINE_REASONS_COLUMN
from mlops.contracts import ColumnSpec, Contract, load_contract
from mlops.errors import InputError
from mlops.gx_suite import GXRunner
from mlops.scoring_input import iter_batch_chunks
from mlops.settings import PROJECT_ROOT
from mlops.validation import (
    SOURCE_ROW_COLUMN,
    TEXT_DTYPE,
    ValidatedBatch,
    as_text,
    expectation_outcomes,
    gx_view,
    row_masks,
    type_batch,
    type_column,
    validate_frame,
)
from tests.helpers import clean_frame

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")


@pytest.fixture(scope="module")
def runner() -> GXRunner:
    return GXRunner()


def run(df: pd.DataFrame, contract: Contract, runner: GXRunner, **kw: object) -> ValidatedBatch:
    vb = validate_frame(df, contract, runner, source="test.csv", **kw)  # type: ignore[arg-type]
    s = vb.summary
    assert s.rows_valid + s.rows_quarantined == s.rows_read == len(df)
    assert len(vb.valid) == s.rows_valid and len(vb.quarantine) == s.rows_quarantined
    return vb


def test_clean_batch_is_accepted_whole(contract: Contract, runner: GXRunner) -> None:
    vb = run(clean_frame(contract, 300), contract, runner)
    assert vb.summary.accepted and vb.summary.gx_success
    assert vb.summary.rows_quarantined == 0
    assert vb.summary.expectations_evaluated > 40
    assert list(vb.valid.columns) == contract.column_names
    assert vb.valid["age"].dtype == "int64"


def _set(col: str, value: object) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df[col] = df[col].astype(object)
        df.loc[7, col] = value

    return mutate


def _dup_id(df: pd.DataFrame) -> None:
    df.loc[7, "application_id"] = df.loc[3, "application_id"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_set("loan_amount", np.nan), "loan_amount:null_required"),
        (_set("region", None), "region:null_required"),
        (_set("credit_score", 200), "credit_score:below_min"),
        (_set("interest_rate", 0.9), "interest_rate:above_max"),
        (_set("loan_purpose", "crypto"), "loan_purpose:unseen_category"),
        (_set("annual_income", "12,000"), "annual_income:wrong_type"),
        (_set("age", 33.5), "age:wrong_type"),
        (_set("applied_at", "yesterday"), "applied_at:wrong_type"),
        (_dup_id, "application_id:duplicate"),
    ],
)
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(
    contract: Contract, runner: GXRunner, mutate: Callable[[pd.DataFrame], None], reason: str
) -> None:
    df = clean_frame(contract, 100)
    mutate(df)
    vb = run(df, contract, runner)
    assert vb.summary.rows_quarantined == 1
    assert vb.summary.reason_counts == {reason: 1}
    row = vb.quarantine.iloc[0]
    assert row[SOURCE_ROW_COLUMN] == 7 and row[QUARANTINE_REASONS_COLUMN] == reason
    assert vb.summary.accepted  # 1% is within the 5% limit


@pytest.mark.parametrize("as_text", [True, False])
def test_int_columns_refuse_whole_numbers_float64_cannot_hold(as_text: bool) -> None:
    """Ints pass through float64: 2**53 + 1 would become 2**53, two ids one key."""
    values = [2**53 - 1, 2**53 + 1, -(2**53), 12]
    raw = pd.Series([str(v) for v in values] if as_text else values)
    typed, wrong = type_column(raw, ColumnSpec(name="customer_id", role="id", dtype="int", unique=True))
    assert wrong.tolist() == [False, True, True, False]
    assert typed[0] == 2**53 - 1 and typed[3] == 12


def test_an_int_float64_cannot_hold_is_quarantined_as_wrong_type_only() -> None:
    """2**53 + 1 reads as 2**53: both ids fail their type; neither is a duplicate of the other,
    and a real duplicate among the well-typed ids is still reported."""
    ids = ColumnSpec(name="customer_id", role="id", dtype="int", unique=True, nullable=False)
    contract = Contract(name="customers", version="1", columns=(ids,))
    df = pd.DataFrame({"customer_id": [2**53, 2**53 + 1, 7, 7, 8, 9]})
    typed, wrong = type_batch(df, contract)
    masks = row_masks(typed, wrong, contract)
    assert masks["customer_id:wrong_type"].tolist() == [True, True, False, False, False, False]
    assert masks["customer_id:duplicate"].tolist() == [False, False, False, True, False, False]


def test_nullable_columns_accept_missing_values(contract: Contract, runner: GXRunner) -> None:
    df = clean_frame(contract, 50)
    df["months_since_last_delinquency"] = np.nan
    df.loc[:9, "credit_score"] = np.nan
    vb = run(df, contract, runner)
    assert vb.summary.rows_quarantined == 0


def test_a_row_keeps_every_reason(contract: Contract, runner: GXRunner) -> None:
    df = clean_frame(contract, 50).astype({"annual_income": object})
    df.loc[2, ["annual_income", "region", "age"]] = ["n/a", "mars", 5]
    vb = run(df, contract, runner)
    reasons = set(vb.quarantine.iloc[0][QUARANTINE_REASONS_COLUMN].split(";"))
    assert reasons == {"annual_income:wrong_type", "region:unseen_category", "age:below_min"}
    assert vb.quarantine.iloc[0]["annual_income"] == "n/a"  # raw text is kept, nothing lost


def test_batch_beyond_the_limit_is_rejected_and_gx_says_why(contract: Contract, runner: GXRunner) -> None:
    df = clean_frame(contract, 100)
    df.loc[:9, "loan_purpose"] = "crypto"  # 10% > 5%
    vb = run(df, contract, runner)
    s = vb.summary
    assert not s.accepted and not s.gx_success
    assert [o.column for o in s.failed_expectations] == ["loan_purpose"]
    assert s.failed_expectations[0].unexpected_count == 10
    assert any("above the limit" in r for r in s.rejection_reasons)
    # A looser limit for this run accepts the same batch.
    assert run(df, contract, runner, max_share=0.2).summary.accepted


def test_one_runner_gives_each_batch_its_own_verdict(contract: Contract, runner: GXRunner) -> None:
    """The runner registers a contract's suite once and reuses it; verdicts stay per batch,
    per contract and per quarantine limit."""
    outcomes = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    bad = clean_frame(contract, 100)
    bad.loc[:9, "loan_purpose"] = "crypto"  # 10% > 5%
    batches = [
        (bad, contract, None),
        (clean_frame(outcomes, 50), outcomes, None),
        (clean_frame(contract, 100), contract, None),
        (bad, contract, 0.2),
        (bad, contract, None),
    ]
    verdicts = [run(df, c, runner, max_share=share).summary.gx_success for df, c, share in batches]
    assert verdicts == [False, True, True, True, False]


def test_gx_reads_category_columns_as_categoricals_with_the_same_results(
    contract: Contract, runner: GXRunner
) -> None:
    df = clean_frame(contract, 200).astype({"loan_purpose": object, "region": object})
    df.loc[:14, "loan_purpose"] = "crypto"  # unseen category, beyond the limit
    df.loc[20:22, "region"] = None  # nulls in a required category column
    typed, _ = type_batch(df, contract)
    view = gx_view(typed, contract)
    assert (
        view["loan_purpose"].dtype == "category"
        and view["application_id"].dtype == typed["application_id"].dtype
    )
    direct = expectation_outcomes(runner.validate_contract(typed, contract, run_name="typed"))
    through_view = expectation_outcomes(runner.validate_contract(view, contract, run_name="view"))
    assert through_view == direct
    assert {(o.column, o.unexpected_count) for o in direct if o.unexpected_count} == {
        ("loan_purpose", 15),
        ("region", 3),
    }


@pytest.mark.parametrize("seed", range(4))
def test_counts_always_add_up_under_random_damage(contract: Contract, runner: GXRunner, seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = clean_frame(contract, 200, seed=seed).astype(object)
    must_fail: set[int] = set()  # rows given text in a column that is not text
    for _ in range(30):
        r, c = int(rng.integers(0, 200)), str(rng.choice(contract.column_names))
        value = rng.choice([None, "garbage", -1e9, 1e9])
        df.loc[r, c] = value
        if value == "garbage" and contract.column(c).dtype != "string":
            must_fail.add(r)
    vb = run(df, contract, runner)
    quarantined = list(vb.quarantine[SOURCE_ROW_COLUMN])
    assert quarantined == sorted(set(quarantined)) and must_fail <= set(quarantined)
    assert vb.quarantine[QUARANTINE_REASONS_COLUMN].str.len().gt(0).all()
    kept = [i for i in range(200) if i not in set(quarantined)]
    assert list(vb.valid["application_id"]) == [str(v) for v in df.loc[kept, "application_id"]]


def test_missing_column_names_it(contract: Contract, runner: GXRunner) -> None:
    df = clean_frame(contract, 10).drop(columns=["credit_score", "region"])
    with pytest.raises(InputError, match=r"credit_score.*region|region.*credit_score"):
        validate_frame(df, contract, runner, source="x.csv")


def test_extra_columns_are_reported_not_kept(contract: Contract, runner: GXRunner) -> None:
    vb = run(clean_frame(contract, 20).assign(favourite_colour="blue"), contract, runner)
    assert vb.summary.extra_columns == ["favourite_colour"]
    assert "favourite_colour" not in vb.valid.columns


def test_csv_round_trip_keeps_wrong_types_visible(
    tmp_path: Path, contract: Contract, runner: GXRunner
) -> None:
    df = clean_frame(contract, 40).astype({"annual_income": object, "num_open_accounts": object})
    df.loc[1, "annual_income"] = "12,000"
    df.loc[2, "num_open_accounts"] = "NULL"
    path = tmp_path / "batch.csv"
    df.to_csv(path, index=False)
    vb = run(read_batch(str(path)), contract, runner)
    assert vb.summary.reason_counts == {"annual_income:wrong_type": 1, "num_open_accounts:wrong_type": 1}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty file"),
        ("header_only.csv", b"application_id,age\n", "no rows"),
        ("broken.parquet", b"PAR1 this is not parquet", "cannot be parsed"),
        ("batch.xlsx", b"x", "unsupported format"),
    ],
)
def test_unreadable_input_gets_a_clear_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_batch(str(path))
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"application_id,age,age\nA1,30,999\n", r"names column\(s\) \['age'\] more than once"),
        (
            b"application_id,age,region\nA1,30,north,x,y\nA2,31,south\n",
            "first row has 5 fields, the header 3",
        ),
    ],
    ids=["repeated-column", "extra-fields-in-the-first-row"],
)
def test_malformed_csv_headers_are_refused_by_both_readers(
    tmp_path: Path, content: bytes, message: str
) -> None:
    # pandas would rename the second "age" to "age.1" (validating only the first), and turn the
    # first row's two extra fields into an index, shifting every column of every row.
    path = tmp_path / "batch.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_batch(str(path))
    with pytest.raises(InputError, match=message):
        list(iter_batch_chunks(str(path), 10))


def test_a_later_row_with_extra_fields_is_a_parse_error_not_a_shift(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_bytes(b"application_id,age\nA1,30\nA2,31,extra\n")
    with pytest.raises(InputError, match="Expected 2 fields"):
        read_batch(str(path))
    with pytest.raises(InputError, match="Expected 2 fields"):
        list(iter_batch_chunks(str(path), 10))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_batch(str(tmp_path / "nope.csv"))
    with pytest.raises(InputError, match="is a folder"):
        read_batch(str(tmp_path))


@pytest.mark.parametrize(
    "categories",
    [
        ["rent", "own", "mortgage"],
        [3, 10, 250],
        [0.5, 1.0, 2.25],
        pd.to_datetime(["2026-01-01 00:00", "2026-01-02 12:30", "2026-02-01 00:00"]),
    ],
    ids=["text", "int", "float", "datetime"],
)
def test_category_columns_become_each_value_s_text(categories: list[object]) -> None:
    codes = np.array([0, 2, -1, 1, 1, 0, -1, 2])  # -1: missing
    raw = pd.Series(pd.Categorical.from_codes(codes, categories=categories), index=range(10, 18), name="c")
    expected = pd.Series(
        [None if pd.isna(v) else str(v) for v in raw.astype(object)],
        index=raw.index,
        name="c",
        dtype=TEXT_DTYPE,
    )
    pd.testing.assert_series_equal(as_text(raw), expected)
    pd.testing.assert_series_equal(as_text(raw.astype(object)), expected)  # the value-by-value path
    # pandas' own cast agrees, except that it writes int categories as floats ("3.0") once a
    # value is missing; the text of 3 is "3" with or without missing neighbours.
    if not pd.api.types.is_integer_dtype(raw.cat.categories.dtype):
        pd.testing.assert_series_equal(
            raw.astype("str").where(raw.notna(), None).astype(TEXT_DTYPE), expected
        )


def test_a_broken_contract_file_names_each_problem_by_column(tmp_path: Path) -> None:
    from mlops.contracts import load_contract
    from mlops.errors import ContractError

    raw = yaml.safe_load((PROJECT_ROOT / "data_contracts" / "credit_outcomes.yaml").read_text())
    raw["max_quarantine_share"] = 5
    raw["columns"][1]["dtype"] = "integer"
    name = raw["columns"][1]["name"]
    (tmp_path / "credit_outcomes.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ContractError) as broken:
        load_contract(tmp_path, "credit_outcomes")
    message = broken.value.message
    assert "max_quarantine_share: Input should be less than or equal to 1 (got 5)" in message
    assert (
        f"columns[{name}].dtype: Input should be 'string', 'int'" in message and "(got 'integer')" in message
    )
    assert "pydantic.dev" not in message and "\n" not in message


@pytest.mark.parametrize(("copies", "accepted"), [(12, True), (24, False)])
def test_gx_and_the_quarantine_agree_on_duplicated_ids(
    contract: Contract, runner: GXRunner, copies: int, accepted: bool
) -> None:
    """12 of 400 ids repeated (3%, under the 5% limit): GX counts both copies (6%), the
    quarantine the repeats (3%); the batch is accepted. 24 repeats (6%) are rejected by both."""
    df = clean_frame(contract, 400, seed=3)
    df.loc[400 - copies :, "application_id"] = df.loc[: copies - 1, "application_id"].to_numpy()
    vb = run(df, contract, runner)
    assert vb.summary.reason_counts == {"application_id:duplicate": copies}
    assert vb.summary.gx_success is accepted and vb.summary.accepted is accepted


def test_text_ids_are_trimmed_and_a_blank_id_is_missing(contract: Contract, runner: GXRunner) -> None:
    """A padded id is the same application (audit find trims what it is given); a blank one is
    quarantined as a missing id, not scored under an id nobody can look up."""
    df = clean_frame(contract, 50, seed=4)
    first = str(df.loc[0, "application_id"])
    df.loc[1, "application_id"] = f"  {first} "  # the same application, padded by an export
    df.loc[2, "application_id"] = "   "
    df.loc[3, "application_id"] = " X-3\t"
    vb = run(df, contract, runner)
    assert vb.summary.reason_counts == {"application_id:duplicate": 1, "application_id:null_required": 1}
    assert "X-3" in set(vb.valid["application_id"]) and first in set(vb.valid["application_id"])
    assert vb.quarantine["application_id"].tolist() == [f"  {first} ", "   "]  # raw values kept


def test_a_timestamp_after_validation_is_quarantined_and_gx_agrees(
    contract: Contract, runner: GXRunner
) -> None:
    """An application dated in 2205 (a typo'd year) would make the training window, counted
    back from the newest row, hold that one row. It is quarantined; a clock a minute ahead
    (within the contract's clock skew) is not; the bound is recorded in the summary."""
    checked_at = datetime(2026, 6, 1, tzinfo=UTC)
    df = clean_frame(contract, 200, seed=5)
    df.loc[3, "applied_at"] = pd.Timestamp("2205-01-01", tz="UTC")
    df.loc[4, "applied_at"] = pd.Timestamp(checked_at) + pd.Timedelta(seconds=contract.clock_skew_seconds + 1)
    df.loc[5, "applied_at"] = pd.Timestamp(checked_at) + pd.Timedelta(seconds=60)
    vb = run(df, contract, runner, checked_at=checked_at)
    assert vb.summary.reason_counts == {"applied_at:in_future": 2}
    assert vb.summary.accepted and vb.summary.gx_success
    assert vb.quarantine[SOURCE_ROW_COLUMN].tolist() == [3, 4]
    assert vb.summary.latest_allowed == checked_at + timedelta(seconds=contract.clock_skew_seconds)
    assert vb.summary.checked_at == checked_at


def test_gx_holds_the_timestamp_to_the_validation_time_it_is_given(
    contract: Contract, runner: GXRunner
) -> None:
    """The same batch checked before its own dates: every row is in the future for GX (through
    the suite parameter) and for the quarantine alike, and the batch is rejected."""
    df = clean_frame(contract, 100, seed=6)
    vb = run(df, contract, runner, checked_at=datetime(2025, 12, 1, tzinfo=UTC))
    assert vb.summary.reason_counts == {"applied_at:in_future": 100}
    assert not vb.summary.gx_success and not vb.summary.accepted
    failed = [(o.expectation, o.column, o.unexpected_count) for o in vb.summary.failed_expectations]
    assert ("expect_column_values_to_be_between", "applied_at", 100) in failed
    assert run(df, contract, runner).summary.accepted  # checked now, the same rows pass


def test_not_in_future_applies_to_datetime_columns_only() -> None:
    with pytest.raises(ValueError, match="not_in_future only applies to datetime columns"):
        ColumnSpec(name="age", role="feature", dtype="int", not_in_future=True)


def test_an_id_holding_an_invisible_character_is_quarantined(contract: Contract, runner: GXRunner) -> None:
    """``APP-1`` + a zero-width space prints as ``APP-1`` but is another id: scored under it, the
    application could never be found by ``mlops audit find APP-1`` nor joined to its outcome."""
    df = clean_frame(contract, 50, seed=7)
    first = str(df.loc[0, "application_id"])
    df.loc[1, "application_id"] = f"{first}\u200b"
    df.loc[2, "application_id"] = f"\ufeff{first}-b"
    df.loc[3, "application_id"] = "A\tB"  # a tab inside, not around, the id
    df.loc[4, "application_id"] = "\u00e9l\u00e8ve-4"  # accented letters are visible: kept
    df.loc[5, "application_id"] = f"{first}\u00a0X"  # a no-break space prints as a space
    df.loc[6, "application_id"] = f"{first}\u3164"  # a Hangul filler prints as nothing
    vb = run(df, contract, runner, max_share=0.2)
    assert vb.summary.reason_counts == {"application_id:wrong_type": 5}
    assert vb.quarantine[SOURCE_ROW_COLUMN].tolist() == [1, 2, 3, 5, 6]
    assert "\u00e9l\u00e8ve-4" in set(vb.valid["application_id"])


def test_an_outcome_observed_twice_in_one_batch_keeps_the_later_observation(runner: GXRunner) -> None:
    """Outcomes: a later observation corrects an earlier one, within a batch as across batches
    (the labels' rule); the earlier row, not the correction, is the quarantined duplicate."""
    outcomes = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    assert outcomes.keep_on_duplicate == "latest"
    df = pd.DataFrame(
        {
            "application_id": ["A", "B", "A", "C", "C"],
            "observed_at": [
                "2026-02-03T00:00:00Z",  # A, corrected by row 2
                "2026-02-03T00:00:00Z",
                "2026-02-05T00:00:00Z",  # A's correction
                "2026-02-09T00:00:00Z",  # C observed later, listed first: kept
                "2026-02-04T00:00:00Z",
            ],
            "defaulted": [0, 0, 1, 1, 0],
        }
    )
    vb = run(df, outcomes, runner, max_share=0.5)
    assert vb.summary.reason_counts == {"application_id:duplicate": 2}
    assert vb.quarantine[SOURCE_ROW_COLUMN].tolist() == [0, 4]
    kept = dict(zip(vb.valid["application_id"], vb.valid["defaulted"], strict=True))
    assert kept == {"A": 1, "B": 0, "C": 1}


def test_keep_latest_keeps_the_latest_row_that_breaks_no_other_rule(runner: GXRunner) -> None:
    """A correction dated 2099 by a typo, or carrying an impossible label, is quarantined for
    that; the application keeps its one good outcome instead of losing it as a "duplicate"."""
    outcomes = load_contract(PROJECT_ROOT / "data_contracts", "credit_outcomes")
    df = pd.DataFrame(
        {
            "application_id": ["A", "A", "B", "B", "C"],
            "observed_at": [
                "2025-01-02T00:00:00Z",
                "2099-01-05T00:00:00Z",  # the typo sorts last
                "2025-01-02T00:00:00Z",
                "2025-01-03T00:00:00Z",
                "2025-01-04T00:00:00Z",
            ],
            "defaulted": [0, 1, 1, 7, 0],  # B's later row: not a label
        }
    )
    vb = run(df, outcomes, runner, max_share=0.6)
    kept = dict(zip(vb.valid["application_id"], vb.valid["defaulted"], strict=True))
    assert kept == {"A": 0, "B": 1, "C": 0}
    reasons = dict(
        zip(vb.quarantine[SOURCE_ROW_COLUMN], vb.quarantine[QUARANTINE_REASONS_COLUMN], strict=True)
    )
    assert reasons == {1: "observed_at:in_future", 3: "defaulted:above_max"}  # their faults alone


def test_keep_first_keeps_a_corrected_resend_of_a_bad_row(contract: Contract, runner: GXRunner) -> None:
    """The first copy of an application is bad (an amount below the contract's minimum), the
    re-send fixes it: the re-send is kept and scored, the bad copy is quarantined for its
    amount alone, not the good one as the bad one's "duplicate". Two good copies: the first
    stays, as before."""
    assert contract.keep_on_duplicate == "first"
    df = clean_frame(contract, 40, seed=6)
    amount = next(c for c in contract.columns if c.name == "loan_amount")
    assert amount.min is not None
    resent = df.loc[[0]].assign(loan_amount=df.loc[0, "loan_amount"])
    df.loc[0, "loan_amount"] = amount.min - 1  # the bad first copy
    twice = df.loc[[5]]  # a plain repeat of a good row
    df = pd.concat([df, resent, twice], ignore_index=True)
    vb = run(df, contract, runner, max_share=0.1)
    reasons = dict(
        zip(vb.quarantine[SOURCE_ROW_COLUMN], vb.quarantine[QUARANTINE_REASONS_COLUMN], strict=True)
    )
    assert reasons == {0: "loan_amount:below_min", 41: "application_id:duplicate"}
    kept = vb.valid.set_index("application_id")["loan_amount"]
    assert kept[df.loc[0, "application_id"]] == resent["loan_amount"].iloc[0]
    assert len(vb.valid) == 40


@pytest.mark.parametrize(
    ("timestamps", "problem"),
    [
        ((), "keep_on_duplicate: latest needs a timestamp column"),
        ((ColumnSpec(name="at", role="timestamp", dtype="string"),), "would be ordered as text"),
    ],
)
def test_keep_latest_needs_a_timestamp_it_can_order(timestamps: tuple[ColumnSpec, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Contract(
            name="x",
            version="1",
            keep_on_duplicate="latest",
            columns=(ColumnSpec(name="id", role="id", dtype="string", unique=True), *timestamps),
        )


def test_both_readers_keep_the_text_of_a_contract_s_text_columns(tmp_path: Path, contract: Contract) -> None:
    # Scoring reads a CSV in chunks, each typed by pandas on its own: a chunk of numeric-looking
    # ids became numbers (``007`` -> ``7``, ``7.0`` beside an empty cell), a chunk holding
    # ``APP-9`` kept them as text, so one file's ids depended on which chunk they fell in.
    path = tmp_path / "batch.csv"
    path.write_bytes(b"application_id,has_cosigner,age\n007,yes,30\n,no,31\n008,yes,32\nAPP-9,no,33\n")
    text = contract.text_columns
    assert "application_id" in text and "has_cosigner" in text and "age" not in text
    raw = read_batch(str(path), text_columns=text)
    assert raw["application_id"].tolist()[::2] == ["007", "008"] and raw["age"].dtype == "int64"
    chunks = list(iter_batch_chunks(str(path), 2, text_columns=text))
    assert [c["application_id"].tolist()[0] for c in chunks] == ["007", "008"]


def test_text_ids_written_as_floats_refuse_the_batch(tmp_path: Path, contract: Contract) -> None:
    # A Parquet file written from a pandas column of integer ids with a missing value: float64.
    # Its ids would be stored as '7.0', another id than the '7' the outcomes use.
    df = clean_frame(contract, 4)
    df["application_id"] = [7.0, 8.0, float("nan"), 10.0]
    df.to_parquet(tmp_path / "batch.parquet")
    raw = read_batch(str(tmp_path / "batch.parquet"))
    with pytest.raises(
        InputError, match=r"id column 'application_id' holds floating-point numbers"
    ) as refused:
        type_batch(raw, contract)
    assert refused.value.hint and "'string' or 'Int64' dtype" in refused.value.hint
    df["application_id"] = pd.array([7, 8, None, 10], dtype="Int64")  # integers are kept as written
    df.to_parquet(tmp_path / "ints.parquet")
    typed, _ = type_batch(read_batch(str(tmp_path / "ints.parquet")), contract)
    assert typed["application_id"].tolist()[:2] == ["7", "8"]


@pytest.mark.parametrize(("bad_rows", "accepted"), [(15, True), (16, False)])
def test_gx_holds_a_mostly_empty_column_to_the_quarantine_limit_in_rows(
    contract: Contract, runner: GXRunner, bad_rows: int, accepted: bool
) -> None:
    # GX takes ``mostly`` as a share of a column's non-null values: a nullable column 70% empty
    # failed GX, and the batch was rejected, with 3% of its rows quarantined under a 5% limit.
    df = clean_frame(contract, 300, seed=5)
    col = "months_since_last_delinquency"
    df.loc[:209, col] = np.nan
    df.loc[210 : 209 + bad_rows, col] = 700.0  # above max 600
    vb = run(df, contract, runner)
    assert vb.summary.reason_counts == {f"{col}:above_max": bad_rows}
    assert vb.summary.gx_success is accepted and vb.summary.accepted is accepted


def test_a_byte_that_is_not_utf8_is_located_in_the_file(tmp_path: Path) -> None:
    # pandas reports the offset inside its read buffer: the message said "offset 1" for a byte
    # 470 bytes (or 14 MB) into the file, sending the user to the wrong place.
    lines = [b"application_id,region"] + [b"APP-%06d,north" % i for i in range(3000)]
    lines[2500] = "APP-002499,nörth".encode("latin-1")
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "latin.csv"
    path.write_bytes(data)
    offset = data.index("ö".encode("latin-1"))
    where = f"at offset {offset}, line 2501"
    for read in (lambda: read_batch(str(path)), lambda: list(iter_batch_chunks(str(path), 1000))):
        with pytest.raises(InputError, match="is not UTF-8 text") as info:
            read()
        assert where in info.value.message


@pytest.mark.parametrize("column", [SOURCE_ROW_COLUMN, QUARANTINE_REASONS_COLUMN])
def test_a_column_named_as_the_quarantine_s_own_is_refused(
    contract: Contract, runner: GXRunner, column: str
) -> None:
    # Before: _source_row made the quarantine split fail ("cannot insert _source_row, already
    # exists", exit 3), and a _quarantine_reasons column had its values replaced by the reasons.
    df = clean_frame(contract, 40).assign(**{column: "theirs"})
    df.loc[3, "region"] = "atlantis"
    with pytest.raises(InputError, match="which the quarantine file adds"):
        run(df, contract, runner)
