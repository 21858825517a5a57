"""Batch scoring at 1M rows: validate + champion + shadow + audit writes vs raw ``inplace_predict``.

    .venv/bin/python -m benchmarks.bench_scoring [--rows 1000000] [--out benchmarks/results/scoring.json]
    .venv/bin/python -m benchmarks.bench_scoring --rows 5000000 --memory-only \
        --out benchmarks/results/scoring_5m.json

Sides, each in its own subprocess on the same Parquet file of simulated applications (so each
peak RSS is its own):

* ``raw``: one booster's ``inplace_predict`` on the rows already prepared for it (the
  categorical casting is done first and not timed; it is reported separately as ``prepare``);
* ``full``: what ``score_batch`` does without Prefect: read the batch in chunks, validate
  each chunk against the contract (typing, GX BASIC, quarantine split), store the valid
  snapshots, read them back hash-checked, score every row with the champion and the
  challenger (the logged pyfunc's own path: the cast once per chunk when both models share
  a feature schema, then ``inplace_predict``), apply the decision policy,
  hash inputs and entity ids, and append two audit records per row to a fresh SQLite store
  (one transaction per scoring chunk; routed rows open review cases).

Models: the credit-risk spec's booster (250 rounds, depth 4, ``nthread=2``) as champion and
a 200-round booster with another seed as challenger, trained on 20k simulated labelled rows
before timing. Wall time excludes process start, imports and loading the models; CPU time
(user + system of all the worker's threads) is given beside it, since on a shared 2-CPU machine
the wall time moves with whatever else runs (see the load averages); peak memory
is ``ru_maxrss`` of the worker (also given minus the RSS after imports and model loading).
Goal: full <= 3x raw, and peak memory <= 2 GB at 5M rows. ``--repeats`` (default 3) raw + full
pairs run one after the other, each full side on a fresh audit store; the ratio reported is
the median pair's (its figures fill ``raw`` and ``full``), with the range over all pairs.
``required_steps_over_raw_inplace_predict``: the full side's validate + champion + challenger
steps alone (no hashing, no audit) over the raw predict, the floor of the full ratio here.
``store_insert_over_raw_inplace_predict``: the audit store's own insert of as many records of
the same shape (2 per row, encoded ahead, untimed; the product's insert, one transaction per
scoring chunk; no review cases) over the median pair's raw predict: a floor the audit writes
alone put under the full side on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops.constants import NO_TELEMETRY_ENV

REQUIRED_STEPS = ("validate", "score_champion", "score_challenger")
RESULTS = Path(__file__).parent / "results" / "scoring.json"
GENERATE_ROWS = 1_000_000  # rows generated per simulator call (bounded memory at 5M)


def _rss_mb() -> float:
    with Path("/proc/self/statm").open() as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(models_dir: Path, name: str) -> Any:
    from mlops.training import load_trained_model

    trained = load_trained_model(
        (models_dir / f"{name}.json").read_bytes(), (models_dir / f"{name}.schema.json").read_text()
    )
    trained.booster.set_param({"nthread": 2})
    return trained


def worker_raw(data: Path, models_dir: Path) -> dict[str, Any]:
    import pandas as pd

    from mlops.features import prepare

    champion = _load(models_dir, "champion")
    df = pd.read_parquet(data)
    t0 = time.perf_counter()
    prepared = prepare(df, champion.schema)
    prepare_s = time.perf_counter() - t0
    del df
    base = _rss_mb()
    times, cpu_times = [], []
    for _ in range(3):  # the best of three: the raw side is short, so noise weighs more on it
        t0, c0 = time.perf_counter(), time.process_time()
        scores = champion.booster.inplace_predict(prepared)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {
        "side": "raw_inplace_predict",
        "seconds": min(times),
        "all_seconds": times,
        "cpu_seconds": min(cpu_times),
        "prepare_seconds_not_in_ratio": prepare_s,
        "rows": len(scores),
        "peak_rss_mb": _peak_mb(),
        "peak_extra_mb": _peak_mb() - base,
    }


def worker_full(
    data: Path, models_dir: Path, work: Path, chunk_rows: int, validation_chunk_rows: int
) -> dict[str, Any]:
    from mlops.audit import create_audit_engine, create_schema
    from mlops.contracts import load_contract
    from mlops.gx_suite import GXRunner
    from mlops.model_spec import DecisionPolicy, HighStakesRule
    from mlops.pyfunc_model import XGBoostPyfuncModel
    from mlops.scoring import ScoringContext, ScoringModels, Timings, audit_sink, loaded_pyfunc, score_frames
    from mlops.scoring_input import iter_batch_chunks, read_valid_snapshot, validate_in_chunks
    from mlops.settings import PROJECT_ROOT, flow_settings
    from mlops.storage import LocalStore

    flow_settings()  # as score_batch starts
    contract = load_contract(PROJECT_ROOT / "data_contracts", "credit_applications")
    champion, challenger = _load(models_dir, "champion"), _load(models_dir, "challenger")
    models = ScoringModels(  # the logged pyfunc's scoring path, as load_model_version gives it
        champion=loaded_pyfunc(
            "credit-risk", 1, "champion", XGBoostPyfuncModel.from_parts(champion.booster, champion.schema)
        ),
        challenger=loaded_pyfunc(
            "credit-risk",
            2,
            "challenger",
            XGBoostPyfuncModel.from_parts(challenger.booster, challenger.schema),
        ),
    )
    policy = DecisionPolicy(
        threshold=0.25, review_band=(0.18, 0.35), high_stakes=HighStakesRule(column="loan_amount", min=50_000)
    )
    store = LocalStore(work / "store")
    engine = create_audit_engine(f"sqlite:///{work / 'audit.db'}")
    create_schema(engine)
    runner = GXRunner()
    ctx = ScoringContext(models, policy, contract.id_column, "bench-entity-key", canary_share=0.05)
    base = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    chunks = iter_batch_chunks(str(data), validation_chunk_rows)
    validation = validate_in_chunks(
        chunks, contract, runner, store, source=str(data), catalog=False, chunk_rows=validation_chunk_rows
    )
    peak_after_validation = _peak_mb()
    timings = Timings()
    timings.merge(validation.timings)

    def frames() -> Any:
        for ref in validation.snapshots:
            t = time.perf_counter()
            frame = read_valid_snapshot(store, contract.name, ref.sha256)
            timings.add("read_snapshots", t)
            yield ref.sha256, frame

    tally = score_frames(frames(), ctx, audit_sink(engine, "bench"), chunk_rows=chunk_rows, timings=timings)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    lookup = _lookup_one(engine, data, "bench-entity-key")
    engine.dispose()
    steps = dict(sorted(timings.seconds.items(), key=lambda kv: -kv[1]))
    return {
        "side": "full",
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "steps_seconds": {k: round(v, 3) for k, v in steps.items()},
        "steps_share": {k: round(v / seconds, 3) for k, v in steps.items()},
        "rows_read": validation.summary.rows_read,
        "rows_scored": tally.rows,
        "rows_quarantined": validation.summary.rows_quarantined,
        "snapshots": len(validation.snapshots),
        "audit_records": tally.records_written,
        "review_cases": tally.review_cases_opened,
        "canary_rows": tally.canary_rows,
        "chunk_rows": chunk_rows,
        "validation_chunk_rows": validation_chunk_rows,
        "audit_db_mb": round((work / "audit.db").stat().st_size / 2**20, 1),
        **lookup,
        "peak_rss_mb": _peak_mb(),
        "peak_rss_after_validation_mb": peak_after_validation,
        "peak_extra_mb": _peak_mb() - base,
        "rss_before_timing_mb": base,
    }


def worker_store(rows: int, work: Path, chunk_rows: int) -> dict[str, Any]:
    """The audit store's own insert of as many prediction records as the full side writes (2 per
    row, of the same shape: bench_audit's synthetic batch, not the full side's own rows), and
    nothing else: encoded ahead (untimed) by the product's encoder, then written with the
    product's insert (one transaction per scoring chunk) into a fresh store with the real
    schema. Review cases and the chain head update are left out, so this is a floor. Run once,
    after the pairs; its ratio is over the median pair's raw predict."""
    from benchmarks.bench_audit import make_batch
    from mlops import audit
    from mlops.audit_encode import RecordIds
    from mlops.audit_write import _WRITE_ORDER, _sqlite_insert_grid, encode_predictions

    engine = audit.create_audit_engine(f"sqlite:///{work / 'audit.db'}")
    audit.create_schema(engine)
    per_chunk, total = 2 * chunk_rows, 2 * rows
    encoded = encode_predictions(
        make_batch(per_chunk),
        batch_id="store-floor",
        dialect="sqlite",
        open_cases=False,
        chunk_rows=per_chunk,
    )
    [chunk] = encoded.chunks
    insert = f"INSERT INTO audit_records ({', '.join(_WRITE_ORDER)}) VALUES"
    ids, seq, seconds, cpu = RecordIds(), 1, 0.0, 0.0
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        for start in range(0, total, per_chunk):
            n = min(per_chunk, total - start)
            grid = chunk.body[:n].copy()
            grid[:, 0] = list(range(seq, seq + n))
            grid[:, 1] = "2026-01-01 00:00:00.000000"
            grid[:, 2] = ids.take(n)  # record ids are unique in the store
            grid[:, -2] = grid[:, -1] = "0" * 64
            seq += n
            t0, c0 = time.perf_counter(), time.process_time()
            dbapi.execute("BEGIN IMMEDIATE")
            _sqlite_insert_grid(dbapi, insert, grid)
            dbapi.execute("COMMIT")
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
    engine.dispose()
    return {"records": total, "seconds": seconds, "cpu_seconds": cpu}


def _lookup_one(engine: Any, data: Path, hash_key: str) -> dict[str, Any]:
    """`mlops audit find` of the batch's middle application on the full store (not in the ratio:
    a person's lookup, which reads the whole table; entity_key has no index)."""
    import pandas as pd

    from mlops.audit_lookup import find_entity

    ids = pd.read_parquet(data, columns=["application_id"])["application_id"]
    t0 = time.perf_counter()
    history = find_entity(engine, str(ids.iloc[len(ids) // 2]), hash_key)
    return {
        "find_one_application_seconds": round(time.perf_counter() - t0, 3),
        "find_one_application_records": len(history.records),
    }


def make_data(rows: int, path: Path) -> None:
    """Simulated applications (stable scenario), written a million rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops.simulator import SimulationConfig, generate_applications

    config = SimulationConfig(seed=3, days=rows // GENERATE_ROWS + 2)
    writer = None
    for day, start in enumerate(range(0, rows, GENERATE_ROWS)):
        df, _ = generate_applications(min(GENERATE_ROWS, rows - start), day, config)
        table = pa.Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def make_models(models_dir: Path) -> None:
    """Champion: the credit-risk spec's booster; challenger: 200 rounds, another seed."""
    from mlops.contracts import load_contract
    from mlops.model_spec import load_model_spec
    from mlops.settings import PROJECT_ROOT
    from mlops.simulator import SimulationConfig, generate_applications
    from mlops.training import train_booster
    from mlops.validation import finalise_valid, type_batch

    contracts = PROJECT_ROOT / "data_contracts"
    spec = load_model_spec("credit-risk", contracts_dir=contracts)
    contract = load_contract(contracts, "credit_applications")
    apps, labels = generate_applications(20_000, 0, SimulationConfig(seed=11, days=2))
    typed, _ = type_batch(apps, contract)
    frame = finalise_valid(typed, contract).assign(defaulted=labels.to_numpy())
    for name, seed, rounds in (("champion", spec.seed, spec.num_boost_round), ("challenger", 7, 200)):
        params = {**spec.booster_params(), "seed": seed}
        trained = train_booster(
            frame, features=spec.feature_list, target="defaulted", params=params, num_boost_round=rounds
        )
        (models_dir / f"{name}.json").write_bytes(trained.booster_bytes())
        (models_dir / f"{name}.schema.json").write_text(trained.schema.to_json())


def _run(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, **NO_TELEMETRY_ENV, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scoring", *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, help="default: the scoring flow's DEFAULT_CHUNK_ROWS")
    parser.add_argument("--validation-chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--memory-only", action="store_true", help="run only the full side (peak memory)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="raw + full pairs; the median ratio is reported"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["raw", "full", "store"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk_rows is None:
        from mlops.scoring import DEFAULT_CHUNK_ROWS

        args.chunk_rows = DEFAULT_CHUNK_ROWS
    if args.worker == "raw":
        print(json.dumps(worker_raw(args.data, args.models)))
        return
    if args.worker == "store":
        print(json.dumps(worker_store(args.rows, args.work, args.chunk_rows)))
        return
    if args.worker == "full":
        print(
            json.dumps(
                worker_full(args.data, args.models, args.work, args.chunk_rows, args.validation_chunk_rows)
            )
        )
        return
    load_before = os.getloadavg()
    repeats: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        root = Path(tmp)
        data, models = root / "applications.parquet", root / "models"
        models.mkdir()
        t0 = time.perf_counter()
        make_data(args.rows, data)
        make_models(models)
        setup_s = time.perf_counter() - t0
        common = ["--data", str(data), "--models", str(models)]
        for repeat in range(1 if args.memory_only else args.repeats):
            work = root / f"work-{repeat}"  # a fresh audit store each time
            work.mkdir()
            sides: dict[str, Any] = {}
            if not args.memory_only:
                sides["raw"] = _run(["--worker", "raw", *common])
            sides["full"] = _run(
                [
                    "--worker",
                    "full",
                    *common,
                    "--work",
                    str(work),
                    "--chunk-rows",
                    str(args.chunk_rows),
                    "--validation-chunk-rows",
                    str(args.validation_chunk_rows),
                ]
            )
            shutil.rmtree(work)
            repeats.append(sides)
            if "raw" in sides:
                ratio = sides["full"]["seconds"] / sides["raw"]["seconds"]
                print(f"repeat {repeat}: full/raw = {ratio:.2f}", file=sys.stderr, flush=True)
        store = None
        if not args.memory_only:
            work = root / "work-store"
            work.mkdir()
            store = _run(
                [
                    "--worker",
                    "store",
                    "--rows",
                    str(args.rows),
                    "--work",
                    str(work),
                    "--chunk-rows",
                    str(args.chunk_rows),
                ]
            )
    load_after = os.getloadavg()
    if args.memory_only:
        chosen = repeats[0]
    else:  # the repeat with the median ratio supplies the detailed figures
        repeats.sort(key=lambda r: r["full"]["seconds"] / r["raw"]["seconds"])
        chosen = repeats[len(repeats) // 2]
    full = chosen["full"]
    result: dict[str, Any] = {
        "benchmark": "scoring",
        "rows": args.rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "setup_seconds_untimed": round(setup_s, 1),
        "repeats": len(repeats),
        "full": full,
        "peak_memory_goal_mb": 2048,
        "peak_memory_goal_met": max(r["full"]["peak_rss_mb"] for r in repeats) <= 2048,
    }
    if "raw" in chosen:
        raw = chosen["raw"]
        ratios = [r["full"]["seconds"] / r["raw"]["seconds"] for r in repeats]
        ratio = full["seconds"] / raw["seconds"]
        result |= {
            "raw": raw,
            "time_ratio_full_over_raw_inplace_predict": round(ratio, 2),
            "time_ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
            "full_seconds_all": [round(r["full"]["seconds"], 2) for r in repeats],
            "raw_seconds_all": [round(r["raw"]["seconds"], 3) for r in repeats],
            "time_ratio_goal": 3.0,
            "time_ratio_goal_met": ratio <= 3.0,
            "cpu_ratio_full_over_raw_inplace_predict": round(full["cpu_seconds"] / raw["cpu_seconds"], 2),
            "time_ratio_full_over_prepare_plus_inplace_predict": round(
                full["seconds"] / (raw["seconds"] + raw["prepare_seconds_not_in_ratio"]), 2
            ),
            # The steps the issue requires before any audit work (validate the batch, score it
            # with both models; they cannot overlap on 2 cores), over the raw predict: a floor
            # under time_ratio_full_over_raw_inplace_predict on this machine.
            "required_steps_over_raw_inplace_predict": round(
                sum(full["steps_seconds"].get(k, 0.0) for k in REQUIRED_STEPS) / raw["seconds"], 2
            ),
        }
    if store is not None and "raw" in chosen:
        # The store's own insert of the same records alone (no encoding, hashing or scoring),
        # over the raw predict: with two models and validation, what is left of 3x.
        result |= {
            "store_insert": store,
            "store_insert_over_raw_inplace_predict": round(store["seconds"] / chosen["raw"]["seconds"], 2),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
