"""Scoring core on small frames: canary arms, decisions from the policy, chunking, input hashes,
chunked validation (no Prefect, no MLflow: tiny boosters stand in for registered models)."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops.audit import entity_key
from mlops.contracts import Contract, load_contract
from mlops.errors import InputError
from mlops.model_spec import DecisionPolicy, HighStakesRule
from mlops.pyfunc_model import XGBoostPyfuncModel
from mlops.reproduce import POLICY_FROM_SPEC, POLICY_RECORDED
from mlops.scoring import (
    ROLE_CANARY,
    ROLE_CHAMPION,
    ROLE_SHADOW,
    LoadedModel,
    PreparedInputs,
    ScoringContext,
    ScoringModels,
    ScoringResult,
    StagedAuditSink,
    Timings,
    canary_buckets,
    canary_mask,
    decide,
    input_hashes,
    iter_scored_chunks,
    loaded_pyfunc,
    score_frames,
)
from mlops.scoring_input import iter_batch_chunks, validate_in_chunks
from mlops.settings import PROJECT_ROOT
from mlops.storage import LocalStore, parquet_bytes, read_snapshot, write_snapshot
from mlops.training import TrainedModel, train_booster
from mlops.validation import finalise_valid, type_batch
from tests.helpers import clean_frame

pytestmark = pytest.mark.unit

KEY = "unit-test-key"
POLICY = DecisionPolicy(
    threshold=0.5, review_band=(0.4, 0.6), high_stakes=HighStakesRule(column="loan_amount", min=50_000)
)
SNAPSHOT = "ab" * 32
TRAINED: list[TrainedModel] = []


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")


def typed_rows(contract: Contract, n: int, seed: int) -> pd.DataFrame:
    typed, _ = type_batch(clean_frame(contract, n, seed=seed), contract)
    return finalise_valid(typed, contract)


@pytest.fixture(scope="module")
def models(contract: Contract) -> ScoringModels:
    """Two different tiny boosters on the contract's features (champion v1, challenger v2)."""
    frame = typed_rows(contract, 400, seed=11)
    rng = np.random.default_rng(0)
    logit = (
        (frame["loan_amount"] / 25_000 - 2) + (frame["interest_rate"] * 10 - 2) + rng.normal(0, 1, len(frame))
    )
    frame["y"] = (logit > 0).astype("int64")
    features = [c.name for c in contract.columns if c.role == "feature"]
    for seed, rounds in ((1, 12), (2, 5)):
        params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 3, "eta": 0.3}
        params |= {"seed": seed, "nthread": 1}
        TRAINED.append(
            train_booster(frame, features=features, target="y", params=params, num_boost_round=rounds)
        )
    # the logged pyfunc's scoring path (prepare + inplace_predict), as load_model_version gives it
    pyfuncs = [XGBoostPyfuncModel.from_parts(t.booster, t.schema) for t in TRAINED]
    return ScoringModels(
        champion=loaded_pyfunc("credit-risk", 1, "champion", pyfuncs[0]),
        challenger=loaded_pyfunc("credit-risk", 2, "challenger", pyfuncs[1]),
    )


def ctx(models: ScoringModels, share: float = 0.0, *, challenger: bool = True) -> ScoringContext:
    chosen = models if challenger else ScoringModels(champion=models.champion)
    return ScoringContext(chosen, POLICY, "application_id", KEY, canary_share=share)


def all_records(frame: pd.DataFrame, context: ScoringContext, chunk_rows: int) -> pd.DataFrame:
    chunks = iter_scored_chunks(frame, context, snapshot_sha256=SNAPSHOT, chunk_rows=chunk_rows)
    records = pd.concat([c.records for c in chunks], ignore_index=True)
    return records.sort_values(["model_version", "input_row"], kind="mergesort").reset_index(drop=True)


# --- canary arms -------------------------------------------------------------------------


def test_canary_arm_is_stable_per_entity_across_batches_and_keyed() -> None:
    ids = pd.Series([f"APP-{i:06d}" for i in range(20_000)])
    keys = entity_key(ids, KEY).tolist()
    arm = dict(zip(ids, canary_mask(keys, 0.1), strict=True))
    # A later batch: some of the same entities, in another order, among new ones.
    later = pd.concat([ids.sample(5_000, random_state=3), pd.Series([f"NEW-{i}" for i in range(5_000)])])
    later_arm = canary_mask(entity_key(later, KEY).tolist(), 0.1)
    for entity, in_canary in zip(later.iloc[:5_000], later_arm[:5_000], strict=True):
        assert arm[entity] == in_canary
    share = float(np.mean(list(arm.values())))
    assert share == pytest.approx(0.1, abs=0.012)  # ~5 binomial standard deviations
    # Raising the share only adds entities; another key gives other arms.
    wider = canary_mask(keys, 0.2)
    assert wider[canary_mask(keys, 0.1)].all() and wider.mean() == pytest.approx(0.2, abs=0.015)
    other = canary_mask(entity_key(ids, "another-key").tolist(), 0.1)
    assert (other != np.array(list(arm.values()))).mean() > 0.1


def test_canary_buckets_are_in_unit_interval_and_extremes() -> None:
    keys = ["0" * 64, "f" * 64, "8" + "0" * 63]
    buckets = canary_buckets(keys)
    assert buckets[0] == 0.0 and 0.999 < buckets[1] < 1.0 and buckets[2] == 0.5
    assert canary_mask(keys, 0.0).sum() == 0 and canary_mask(keys, 1.0).all()
    assert len(canary_buckets([])) == 0


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_canary_share_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(InputError, match="canary share"):
        canary_mask(["0" * 64], share)


# --- decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "amount", "decision", "routed", "reason"),
    [
        (0.10, 1_000.0, "approve", False, None),
        (0.45, 1_000.0, "approve", True, "review_band"),
        (0.50, 1_000.0, "decline", True, "review_band"),  # p >= threshold declines
        (0.60, 1_000.0, "decline", True, "review_band"),  # band is inclusive
        (0.90, 1_000.0, "decline", False, None),
        (0.10, 50_000.0, "approve", True, "high_stakes:loan_amount>=50000"),
        (0.55, 80_000.0, "decline", True, "review_band;high_stakes:loan_amount>=50000"),
        # Stakes nobody knows are not known to be low: a person looks (fail safe).
        (0.10, float("nan"), "approve", True, "high_stakes:loan_amount missing"),
        (0.55, float("nan"), "decline", True, "review_band;high_stakes:loan_amount missing"),
    ],
)
def test_decisions_follow_the_policy(
    score: float, amount: float, decision: str, routed: bool, reason: str | None
) -> None:
    d = decide(POLICY, [score], [amount])
    assert d.decision[0] == decision and bool(d.routed[0]) is routed and d.reason[0] == reason
    assert bool(d.routed[0]) == bool(POLICY.needs_review([score], [amount])[0])


def test_confidence_is_zero_at_the_threshold_and_one_at_the_ends() -> None:
    d = decide(POLICY, [0.0, 0.5, 1.0, 0.75])
    assert d.confidence.tolist() == [1.0, 0.0, 1.0, 0.5]


def test_non_finite_scores_are_refused() -> None:
    with pytest.raises(InputError, match="finite"):
        decide(POLICY, [0.2, float("nan")])


# --- scoring chunks ----------------------------------------------------------------------


def test_chunked_scoring_equals_one_shot(contract: Contract, models: ScoringModels) -> None:
    frame = typed_rows(contract, 120, seed=5)
    context = ctx(models, 0.3)
    one_shot = all_records(frame, context, chunk_rows=10_000)
    chunked = all_records(frame, context, chunk_rows=13)
    pd.testing.assert_frame_equal(one_shot, chunked)
    assert len(one_shot) == 2 * len(frame)
    assert one_shot["input_row"].tolist() == list(range(120)) * 2

    # A resumed batch scores the rows after those written, as the uninterrupted run did.
    seen: list[pd.DataFrame] = []
    score_frames(
        [(SNAPSHOT, frame)],
        context,
        None,
        chunk_rows=13,
        on_chunk=lambda c: seen.append(c.records),
        rows_done={SNAPSHOT: 50},
    )
    tail = pd.concat(seen, ignore_index=True).sort_values(["model_version", "input_row"], kind="mergesort")
    expected = one_shot[one_shot["input_row"] >= 50]
    pd.testing.assert_frame_equal(tail.reset_index(drop=True), expected.reset_index(drop=True))
    with pytest.raises(InputError, match="start_row 121 is outside the snapshot's 120 rows"):
        list(iter_scored_chunks(frame, context, snapshot_sha256=SNAPSHOT, start_row=121))


def test_shadow_never_changes_a_decision(contract: Contract, models: ScoringModels) -> None:
    frame = typed_rows(contract, 300, seed=6)
    alone = all_records(frame, ctx(models, challenger=False), chunk_rows=64)
    shadowed = all_records(frame, ctx(models, 0.0), chunk_rows=64)
    deciding = shadowed[shadowed["role"] != ROLE_SHADOW].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, deciding)
    shadow = shadowed[shadowed["role"] == ROLE_SHADOW]
    assert (shadow["model_version"] == "2").all() and not shadow["review_routed"].any()
    assert shadow["review_reason"].isna().all()
    assert not np.array_equal(shadow["score"].to_numpy(), deciding["score"].to_numpy())


def test_canary_rows_are_decided_by_the_challenger(contract: Contract, models: ScoringModels) -> None:
    frame = typed_rows(contract, 300, seed=7)
    records = all_records(frame, ctx(models, 0.4), chunk_rows=50)
    keys = entity_key(frame["application_id"], KEY).tolist()
    arm = canary_mask(keys, 0.4)
    champion = records[records["model_version"] == "1"].set_index("input_row")
    challenger = records[records["model_version"] == "2"].set_index("input_row")
    assert (champion["role"].to_numpy() == np.where(arm, ROLE_SHADOW, ROLE_CHAMPION)).all()
    assert (challenger["role"].to_numpy() == np.where(arm, ROLE_CANARY, ROLE_SHADOW)).all()
    assert (challenger["model_alias"] == "challenger").all()
    # Exactly one deciding record per row; only deciding records are routed.
    deciding = records[records["role"] != ROLE_SHADOW]
    assert sorted(deciding["input_row"]) == list(range(300))
    assert not records.loc[records["role"] == ROLE_SHADOW, "review_routed"].any()
    expected = decide(POLICY, challenger["score"].to_numpy(), frame["loan_amount"]).decision
    assert (challenger.loc[arm, "decision"].to_numpy() == expected[arm]).all()


def test_tally_counts_decisions_canary_and_agreement(contract: Contract, models: ScoringModels) -> None:
    frame = typed_rows(contract, 200, seed=8)
    written: list[int] = []

    def sink(records: pd.DataFrame) -> tuple[int, int, int]:
        first = sum(written) + 1
        written.append(len(records))
        routed = int((records["review_routed"] & (records["role"] != ROLE_SHADOW)).sum())
        return first, first + len(records) - 1, routed

    tally = score_frames([(SNAPSHOT, frame)], ctx(models, 0.5), sink, chunk_rows=60)
    assert tally.rows == 200 and sum(tally.decisions.values()) == 200 and tally.records_written == 400
    assert tally.review_cases_opened == tally.routed and tally.first_seq == 1 and tally.last_seq == 400
    records = all_records(frame, ctx(models, 0.5), 1_000)
    champion, challenger = (records[records["model_version"] == v].reset_index(drop=True) for v in ("1", "2"))
    assert tally.shadow_same_decision == int((champion["decision"] == challenger["decision"]).sum())
    result = ScoringResult.model_construct(rows_scored=0).fill_from(tally)
    assert result.canary_share_realised == tally.canary_rows / 200
    assert result.shadow_mean_abs_score_diff == pytest.approx(
        float(np.abs(champion["score"] - challenger["score"]).mean())
    )
    assert sum(result.decisions_by_role.get(ROLE_CANARY, {}).values()) == tally.canary_rows


@pytest.mark.parametrize("background", [True, False])
def test_audit_writes_are_in_chunk_order_one_at_a_time(
    contract: Contract, models: ScoringModels, background: bool
) -> None:
    frame = typed_rows(contract, 130, seed=5)
    written: list[list[int]] = []
    busy = threading.Lock()

    def sink(records: pd.DataFrame) -> tuple[int, int, int]:
        assert busy.acquire(blocking=False), "two writes in flight"
        try:
            time.sleep(0.02)  # scoring the next chunk overlaps this write
            first = sum(map(len, written)) + 1
            written.append(records["input_row"].tolist())
            return first, first + len(records) - 1, 0
        finally:
            busy.release()

    tally = score_frames([(SNAPSHOT, frame)], ctx(models), sink, chunk_rows=30, background_writes=background)
    assert [w[0] for w in written] == [0, 30, 60, 90, 120]  # champion rows first in each chunk
    assert (tally.first_seq, tally.last_seq, tally.records_written) == (1, 260, 260)


def test_a_staged_sink_prepares_on_the_scoring_thread_and_writes_in_order(
    contract: Contract, models: ScoringModels
) -> None:
    frame = typed_rows(contract, 90, seed=7)
    events: list[tuple[str, str, int]] = []
    caller = threading.current_thread().name

    def prepare(records: pd.DataFrame) -> list[int]:
        events.append(("prepare", threading.current_thread().name, int(records["input_row"].iloc[0])))
        return records["input_row"].tolist()

    written: list[int] = []

    def write(rows: list[int]) -> tuple[int, int, int]:
        events.append(("write", threading.current_thread().name, rows[0]))
        first = sum(written) + 1
        written.append(len(rows))
        return first, first + len(rows) - 1, 0

    timings = Timings()
    tally = score_frames(
        [(SNAPSHOT, frame)], ctx(models), StagedAuditSink(prepare, write), chunk_rows=30, timings=timings
    )
    assert [e[2] for e in events if e[0] == "prepare"] == [0, 30, 60]
    assert [e[2] for e in events if e[0] == "write"] == [0, 30, 60]
    assert {e[1] for e in events if e[0] == "prepare"} == {caller}
    assert caller not in {e[1] for e in events if e[0] == "write"}
    assert (tally.first_seq, tally.last_seq) == (1, 180) and "audit_encode" in timings.seconds


def test_a_failed_audit_write_stops_the_batch(contract: Contract, models: ScoringModels) -> None:
    frame = typed_rows(contract, 150, seed=6)
    calls: list[int] = []

    def sink(records: pd.DataFrame) -> tuple[int, int, int]:
        calls.append(len(records))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return 1, len(records), 0

    with pytest.raises(RuntimeError, match="disk full"):
        score_frames([(SNAPSHOT, frame)], ctx(models), sink, chunk_rows=30)
    assert len(calls) == 2  # nothing was handed to the sink after the failed write


def test_no_challenger_ignores_the_canary(contract: Contract, models: ScoringModels) -> None:
    context = ctx(models, 0.5, challenger=False)
    assert not context.canary_active
    records = all_records(typed_rows(contract, 50, seed=9), context, 20)
    assert set(records["role"]) == {ROLE_CHAMPION} and len(records) == 50


# --- the scoring path ----------------------------------------------------------------------


def test_pyfunc_scores_are_the_dmatrix_scores_bit_for_bit(contract: Contract, models: ScoringModels) -> None:
    frame = typed_rows(contract, 300, seed=21)
    frame.loc[::7, "annual_income"] = np.nan
    frame.loc[::5, "region"] = "atlantis"  # unseen category: missing for the booster
    for trained, model in zip(TRAINED, (models.champion, models.challenger), strict=True):
        assert model is not None
        via_dmatrix = trained.predict(frame)  # xgb.DMatrix + Booster.predict
        via_pyfunc = model.score(frame)  # prepare + inplace_predict
        assert via_pyfunc.tobytes() == via_dmatrix.tobytes()
        one = frame.iloc[[17]].reset_index(drop=True)  # what reproduce scores
        assert model.score(one).tobytes() == via_pyfunc[17:18].tobytes()


def test_models_with_one_feature_schema_share_one_prepared_chunk(
    contract: Contract, models: ScoringModels
) -> None:
    calls: list[int] = []
    assert models.challenger is not None and models.champion.prepare is not None

    def counting(frame: pd.DataFrame) -> object:
        calls.append(len(frame))
        assert models.champion.prepare is not None
        return models.champion.prepare(frame)

    champion = dataclasses.replace(models.champion, prepare=counting)
    challenger = dataclasses.replace(models.challenger, prepare=counting)
    frame = typed_rows(contract, 30, seed=4)
    inputs = PreparedInputs(frame)
    assert inputs.score(champion).tobytes() == models.champion.score(frame).tobytes()
    assert inputs.score(challenger).tobytes() == models.challenger.score(frame).tobytes()
    assert calls == [30]
    other = dataclasses.replace(challenger, input_key="another schema")
    inputs.score(other)
    assert calls == [30, 30]


def test_a_model_without_a_prepared_path_is_scored_whole(contract: Contract) -> None:
    plain = LoadedModel("m", 1, None, lambda f: np.full(len(f), 0.25))
    assert PreparedInputs(typed_rows(contract, 3, seed=1)).score(plain).tolist() == [0.25] * 3


# --- input hashes ------------------------------------------------------------------------


def test_input_hash_of_a_row_survives_the_snapshot_and_needs_no_neighbours(contract: Contract) -> None:
    frame = typed_rows(contract, 40, seed=3)
    frame.loc[3, "annual_income"] = np.nan
    hashes = input_hashes(frame)
    assert len(set(hashes)) == 40 and all(len(h) == 64 for h in hashes)
    back = pq.read_table(io.BytesIO(parquet_bytes(frame))).to_pandas()
    assert input_hashes(back) == hashes
    assert input_hashes(back.iloc[[17]].reset_index(drop=True)) == [hashes[17]]
    changed = frame.copy()
    changed.loc[5, "loan_amount"] += 0.01
    changed.loc[6, "region"] = "north" if frame.loc[6, "region"] != "north" else "south"
    new = input_hashes(changed)
    assert new[5] != hashes[5] and new[6] != hashes[6] and new[7] == hashes[7]


def test_input_hash_format_is_pinned() -> None:
    """Audit records store these hashes and reproduce recomputes them: the bytes never change."""
    frame = pd.DataFrame(
        {
            "application_id": pd.Series(["APP-1", "APP-2"], dtype="str"),
            "applied_at": pd.to_datetime(
                ["2025-01-01T00:00:00Z", "2025-06-30T12:34:56.789Z"], format="ISO8601"
            ),
            "age": np.array([48, 35], dtype="int64"),
            "annual_income": [55200.0, np.nan],
            "region": pd.Series(["west", None], dtype="str"),
            "gender": pd.Series(["é", "female"], dtype=object),
        }
    )
    assert input_hashes(frame) == [  # computed by the first (per-row Python) implementation
        "51f684533a8aa9f1a48a1f86e82551eb2516f12d79ee0964f26e00cb0516f8f7",
        "d178c7b099aa32ffc7f451d28db1ac6ef9a42830b44a2c84e47fd21e4c54dbf7",
    ]


def test_input_hash_is_the_same_for_every_text_storage() -> None:
    chunked = pa.table({"t": pa.chunked_array([["a", None, "é"], ["x", ""]]), "n": list(range(5))})
    frames = [
        chunked.to_pandas(),  # Arrow-backed str, several chunks
        pd.DataFrame({"t": pd.Series(["a", None, "é", "x", ""], dtype=object), "n": range(5)}),
        pd.DataFrame({"t": pd.Series(["a", None, "é", "x", ""], dtype="category"), "n": range(5)}),
    ]
    hashes = [input_hashes(f) for f in frames]
    assert hashes[0] == hashes[1] == hashes[2] and len(set(hashes[0])) == 5


# --- reading and validating in chunks ----------------------------------------------------


def test_parquet_chunks_have_the_asked_size_whatever_the_row_groups(
    tmp_path: Path, contract: Contract
) -> None:
    frame = clean_frame(contract, 50, seed=1)
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=7)
    sizes = [len(c) for c in iter_batch_chunks(str(path), 20)]
    assert sizes == [20, 20, 10]
    csv = tmp_path / "batch.csv"
    frame.to_csv(csv, index=False)
    chunks = list(iter_batch_chunks(str(csv), 20))
    assert [len(c) for c in chunks] == [20, 20, 10]
    assert pd.concat(chunks)["application_id"].tolist() == frame["application_id"].tolist()
    with pytest.raises(InputError, match="does not exist"):
        list(iter_batch_chunks(str(tmp_path / "nope.csv"), 5))
    with pytest.raises(InputError, match="unsupported format"):
        list(iter_batch_chunks(str(tmp_path / "batch.txt"), 5))


@pytest.mark.slow
def test_chunked_validation_matches_whole_batch_and_catches_duplicates_across_chunks(
    tmp_path: Path, contract: Contract
) -> None:
    from mlops.gx_suite import GXRunner
    from mlops.validation import validate_frame

    raw = clean_frame(contract, 60, seed=2)
    raw.loc[45, "application_id"] = raw.loc[4, "application_id"]  # duplicate across chunks of 30
    raw.loc[50, "region"] = "atlantis"
    store = LocalStore(tmp_path / "store")
    runner = GXRunner()

    whole = validate_in_chunks(iter([raw]), contract, runner, store, source="b.csv", max_share=0.1)
    direct = validate_frame(raw, contract, runner, source="b.csv", max_share=0.1)
    ref = write_snapshot(store, direct.valid, dataset=contract.name, kind="valid")
    assert [s.sha256 for s in whole.snapshots] == [ref.sha256] and not ref.created
    assert whole.summary.reason_counts == direct.summary.reason_counts

    chunked = validate_in_chunks(
        iter([raw.iloc[:30], raw.iloc[30:]]), contract, runner, store, source="b.csv", max_share=0.1
    )
    s = chunked.summary
    assert s.rows_read == 60 and s.rows_quarantined == 2 and s.rows_valid == 58
    assert s.reason_counts == whole.summary.reason_counts
    assert len(chunked.snapshots) == 2 and s.accepted and s.quarantine_sha256 is not None
    assert sum(r.rows for r in chunked.snapshots) == 58


def _whole_and_chunked(raw: pd.DataFrame, contract: Contract, store: LocalStore) -> tuple[Any, Any]:
    """The batch validated whole and in two chunks of 30 rows, into ``store``."""
    from mlops.gx_suite import GXRunner

    runner = GXRunner()
    whole = validate_in_chunks(iter([raw]), contract, runner, store, source="b.csv", max_share=0.1)
    chunked = validate_in_chunks(
        iter([raw.iloc[:30], raw.iloc[30:]]), contract, runner, store, source="b.csv", max_share=0.1
    )
    return whole, chunked


def test_a_good_copy_of_a_quarantined_row_is_kept_in_chunks_as_in_a_whole_batch(
    tmp_path: Path, contract: Contract
) -> None:
    """A row quarantined for its own fault (its id padded by an export, too) is not the copy
    kept: the good row with the same id in the next chunk is scored, as in a whole batch."""

    raw = clean_frame(contract, 60, seed=8)
    raw.loc[10, "region"] = "atlantis"  # quarantined for its region...
    raw.loc[10, "application_id"] = f"  {raw.loc[10, 'application_id']} "  # ...with its id padded
    good_id = str(raw.loc[10, "application_id"]).strip()
    raw.loc[40, "application_id"] = good_id  # the same application, well formed, next chunk
    raw.loc[50, "application_id"] = good_id  # and once more: the duplicate of row 40
    store = LocalStore(tmp_path / "store")
    whole, chunked = _whole_and_chunked(raw, contract, store)
    assert whole.summary.reason_counts == {"application_id:duplicate": 1, "region:unseen_category": 1}
    assert chunked.summary.reason_counts == whole.summary.reason_counts
    assert chunked.summary.rows_valid == whole.summary.rows_valid == 58
    for done in (whole, chunked):
        kept = pd.concat(
            [
                read_snapshot(store, dataset=contract.name, kind="valid", sha256=ref.sha256)
                for ref in done.snapshots
            ],
            ignore_index=True,
        )
        assert (kept["application_id"] == good_id).sum() == 1
        assert kept.loc[kept["application_id"] == good_id, "region"].iloc[0] == raw.loc[40, "region"]


def test_a_duplicate_of_one_unique_column_holds_its_value_of_another_in_chunks_as_in_a_whole_batch(
    tmp_path: Path, contract: Contract
) -> None:
    """Two unique columns: a row quarantined as a duplicate of one still holds its value of the
    other (it breaks no other rule), in a whole batch, so the next chunk's row with that value
    is its duplicate there too."""

    columns = [c.model_copy(update={"unique": True}) if c.name == "age" else c for c in contract.columns]
    two = contract.model_copy(update={"columns": columns})
    raw = clean_frame(two, 60, seed=2)
    raw["age"] = range(20, 80)
    raw.loc[5, "application_id"] = raw.loc[4, "application_id"]  # row 5: a duplicate id, chunk 1
    raw.loc[45, "age"] = raw.loc[5, "age"]  # row 45: row 5's age, chunk 2
    whole, chunked = _whole_and_chunked(raw, two, LocalStore(tmp_path / "store"))
    assert whole.summary.reason_counts == {"age:duplicate": 1, "application_id:duplicate": 1}
    assert chunked.summary.reason_counts == whole.summary.reason_counts
    assert chunked.summary.rows_valid == whole.summary.rows_valid == 58


def test_chunked_validation_refuses_a_contract_keeping_the_latest_duplicate(
    tmp_path: Path, contract: Contract
) -> None:
    """A chunk already written cannot take back the id it kept: refused before any row is read."""
    latest = contract.model_copy(update={"keep_on_duplicate": "latest"})
    with pytest.raises(InputError, match="can keep only the first") as refused:
        validate_in_chunks(iter([]), latest, None, LocalStore(tmp_path / "store"), source="b.csv")
    assert refused.value.hint == "set keep_on_duplicate: first in the applications contract"
    assert not (tmp_path / "store").exists()


def test_a_single_chunk_reads_exactly_like_read_batch(tmp_path: Path, contract: Contract) -> None:
    from mlops.batch_io import read_batch

    frame = clean_frame(contract, 30, seed=4)
    frame.loc[3, "annual_income"] = np.nan
    for path in (tmp_path / "b.csv", tmp_path / "b.parquet"):
        frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
        [chunk] = list(iter_batch_chunks(str(path), 1_000))
        pd.testing.assert_frame_equal(chunk, read_batch(str(path)))


# --- reproduce ---------------------------------------------------------------------------


def stored_record(records: pd.DataFrame, i: int) -> dict[str, Any]:
    """Row ``i`` of a chunk's audit records as the store returns it (a fake, unverifiable hash)."""
    return records.iloc[i].to_dict() | {
        "record_id": f"r-{i}",
        "batch_id": "b",
        "record_type": "prediction",
        "payload": None,
        "record_hash": "0" * 64,
        "prev_hash": "0" * 64,
        "created_at": pd.Timestamp.now(tz="UTC"),
    }


def test_reproduce_from_detects_another_score_or_another_row(
    contract: Contract, models: ScoringModels
) -> None:
    from mlops.reproduce import reproduce_from

    frame = typed_rows(contract, 20, seed=12)
    [chunk] = iter_scored_chunks(frame, ctx(models, 0.0), snapshot_sha256=SNAPSHOT)
    record = stored_record(chunk.records, 4)
    row = frame.iloc[[4]].reset_index(drop=True)
    same = reproduce_from(
        record,
        row,
        models.champion,
        POLICY,
        snapshot_uri="mem://",
    )
    assert same.identical and same.input_hash_ok and same.decision_matches
    assert same.score_recorded_hex == same.score_recomputed_hex
    assert not same.record_intact and not same.reproduced  # the fake record carries no valid hash

    other_row = frame.iloc[[5]].reset_index(drop=True)
    moved = reproduce_from(
        record,
        other_row,
        models.champion,
        POLICY,
        snapshot_uri="mem://",
    )
    assert not moved.input_hash_ok and not moved.identical
    with pytest.raises(InputError, match="is not the one"):
        reproduce_from(record, row, models.challenger, POLICY, snapshot_uri="mem://")  # type: ignore[arg-type]


@pytest.mark.parametrize(("source", "reproduced"), [(POLICY_RECORDED, False), (POLICY_FROM_SPEC, True)])
def test_another_decision_fails_reproduce_only_under_the_recorded_policy(
    contract: Contract, models: ScoringModels, source: str, reproduced: bool
) -> None:
    """A record whose decision was changed (and the chain rewritten) gives the same score: the
    decision re-derived under the batch's recorded policy must then fail the reproduction."""
    from mlops.reproduce import reproduce_from, reproduce_text

    frame = typed_rows(contract, 20, seed=12)
    [chunk] = iter_scored_chunks(frame, ctx(models, 0.0), snapshot_sha256=SNAPSHOT)
    record = stored_record(chunk.records, 4)
    record["decision"] = "decline" if record["decision"] == "approve" else "approve"
    result = reproduce_from(
        record, frame.iloc[[4]].reset_index(drop=True), models.champion, POLICY, snapshot_uri="mem://"
    )
    result = result.model_copy(update={"record_intact": True, "decision_policy_source": source})
    assert result.identical and not result.decision_matches
    assert result.reproduced is reproduced
    assert ("-> DIFFERENT" in reproduce_text(result)) is not reproduced
    assert "same score, another decision" in reproduce_text(result)


def test_since_training_notes_name_a_changed_policy_and_contract(contract: Contract) -> None:
    from mlops.lineage import TAG_APPLICATIONS_CONTRACT_VERSION, TAG_DECISION_POLICY_SHA256
    from mlops.model_spec import decision_policy_hash, load_model_spec
    from mlops.scoring import since_training_notes

    spec = load_model_spec("credit-risk")
    today = decision_policy_hash(spec.decision_policy)
    same = {TAG_DECISION_POLICY_SHA256: today, TAG_APPLICATIONS_CONTRACT_VERSION: contract.version}
    other = {TAG_DECISION_POLICY_SHA256: "f" * 64, TAG_APPLICATIONS_CONTRACT_VERSION: "0.9.0,1.0.0"}

    assert since_training_notes(spec, contract, {1: same, 2: same}, [1, 2]) == []
    assert since_training_notes(spec, contract, {1: {}, 2: {}}, [1]) == []  # untagged: not compared
    notes = since_training_notes(spec, contract, {1: same, 2: other}, [1])  # v2 shadows only
    assert notes == [
        f"the applications contract {contract.name} is version {contract.version}; version 2 was trained "
        "on version 0.9.0, 1.0.0: a category it never saw scores as a missing value"
    ]
    canary = since_training_notes(spec, contract, {1: same, 2: other}, [1, 2])  # v2 decides a share
    assert len(canary) == 2 and canary[0].startswith("the decision policy of model spec credit-risk")
