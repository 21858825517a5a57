"""The train flow end to end beside raw ``xgboost.train`` with the same parameters, same run.

For each size (default 100k and 1M labelled rows, 10 simulated days) a subprocess:
1. ingests the days: our full validation (GX SUMMARY + quarantine split) of applications and
   outcomes, content-addressed snapshots, catalog entries (``ingest_seconds``);
2. runs the ``train`` flow under a Prefect test harness with MLflow on SQLite: gather the
   labelled window, time split, train, evaluate, gates (paired bootstrap vs no champion: the
   recorded bootstrap path), log + register (``flow_seconds``);
3. times raw ``xgboost.train`` (DMatrix construction included) on the very training rows and
   parameters the flow used (``raw_seconds``).
Ratios: ``flow_over_raw`` (goal <= 1.3 at 1M rows) and ``end_to_end_over_raw`` (ingest + flow).
Peak memory: the subprocess's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "training.json"
DAYS = 10


def _ingest(rows: int) -> float:
    from mlops.catalog import CatalogEntry, record_snapshot
    from mlops.constants import KIND_VALID
    from mlops.contracts import load_contract
    from mlops.gx_suite import GXRunner
    from mlops.settings import get_settings
    from mlops.storage import make_store, write_snapshot
    from tests.training_helpers import simulated_day

    settings = get_settings()
    store = make_store(settings)
    runner = GXRunner()
    contracts = {
        n: load_contract(settings.contracts_dir, n) for n in ("credit_applications", "credit_outcomes")
    }
    frames = [simulated_day(day, rows // DAYS) for day in range(DAYS)]
    from datetime import UTC, datetime

    from mlops.validation import validate_frame

    t0 = time.perf_counter()
    for day, (apps, outcomes) in enumerate(frames):
        for name, frame in (("credit_applications", apps), ("credit_outcomes", outcomes)):
            contract = contracts[name]
            vb = validate_frame(frame, contract, runner, source=f"day{day}", run_name=f"d{day}")
            assert vb.summary.accepted
            ref = write_snapshot(store, vb.valid, dataset=name, kind=KIND_VALID)
            ts = contract.timestamp_column
            record_snapshot(
                store,
                CatalogEntry(
                    dataset=name,
                    contract_version=contract.version,
                    sha256=ref.sha256,
                    uri=ref.uri,
                    rows=ref.rows,
                    source=f"day{day}",
                    ingested_at=datetime.now(UTC),
                    min_timestamp=vb.valid[ts].min() if ts else None,
                    max_timestamp=vb.valid[ts].max() if ts else None,
                ),
            )
    return time.perf_counter() - t0


def _raw_baseline() -> tuple[float, int]:
    import xgboost as xgb

    from mlops.contracts import load_contract
    from mlops.features import fit_feature_schema, prepare
    from mlops.labels import gather_labelled
    from mlops.model_spec import load_model_spec
    from mlops.settings import get_settings
    from mlops.storage import make_store
    from mlops.training import time_split

    settings = get_settings()
    spec = load_model_spec("credit-risk")
    apps = load_contract(settings.contracts_dir, spec.applications_contract)
    outs = load_contract(settings.contracts_dir, spec.outcomes_contract)
    labelled = gather_labelled(make_store(settings), spec, apps, outs)
    split = time_split(
        labelled.frame,
        newest_fraction=spec.evaluation.newest_fraction,
        timestamp_column=apps.timestamp_column,
        id_column=apps.id_column,
        min_evaluation_rows=spec.evaluation.min_rows,
    )
    train = split.train
    schema = fit_feature_schema(train, spec.feature_list)
    features = prepare(train, schema)
    labels = train[spec.target_column].to_numpy()
    t0 = time.perf_counter()
    matrix = xgb.DMatrix(features, label=labels, enable_categorical=True)
    xgb.train(spec.booster_params(), matrix, num_boost_round=spec.num_boost_round)
    return time.perf_counter() - t0, len(train)


def worker(rows: int) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    ingest_seconds = _ingest(rows)
    with prefect_test_harness(server_startup_timeout=120):
        from flows.train import train

        t0 = time.perf_counter()
        result = train()
        flow_seconds = time.perf_counter() - t0
    raw_seconds, train_rows = _raw_baseline()
    return {
        "rows": rows,
        "training_rows": train_rows,
        "evaluation_rows": result.evaluation_rows,
        "verdict": result.verdict,
        "ingest_seconds": round(ingest_seconds, 2),
        "flow_seconds": round(flow_seconds, 2),
        "raw_xgboost_train_seconds": round(raw_seconds, 2),
        "flow_over_raw": round(flow_seconds / raw_seconds, 3),
        "end_to_end_over_raw": round((ingest_seconds + flow_seconds) / raw_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    runs = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "MLOPS_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            env.pop("MLOPS_MLFLOW_TRACKING_URI", None)
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_training", "--worker", str(size)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    largest = runs[-1]
    result = {
        "benchmark": "training",
        "baseline": "raw xgboost.train (DMatrix included) with the spec's params on the flow's training rows",
        "runs": runs,
        "flow_over_raw_ratio_at_largest": largest["flow_over_raw"],
        "goal": "flow <= 1.3x raw at 1M rows",
        "goal_met": largest["flow_over_raw"] <= 1.3,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
