"""Drift report speed and memory: ours (mlops.drift) beside Evidently's DataDriftPreset.

Reference 100k rows vs current 1M rows x 25 columns (18 numeric features, 5 categorical
features, a calibrated score, a 0/1 label), generated once with a seeded numpy generator and
written to Parquet in a temporary folder; each side then runs in its own subprocess, reads the
same files and is measured there:

- wall time: ``time.perf_counter`` around the report only (reading Parquet is reported apart);
- peak memory: the process's peak RSS is reset (``/proc/self/clear_refs`` = 5) after the data
  is read, then ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the report minus the RSS
  before it is the report's peak RSS increase (Linux; both sides measured the same way).

Ours: ``build_profile`` on the reference + ``compare`` on the current window (feature drift on
23 features, prediction drift on the score, performance drift with labels, the CBPE estimate)
+ JSON of the report. Evidently: ``Report([DataDriftPreset()]).run(current, reference)`` on all
25 columns + ``snapshot.dict()``. Evidently 0.7 does not import beside pandas 3, so it runs in
its own venv (``benchmarks/requirements-evidently.txt``), passed as ``--evidently-python``.

    .venv/bin/python benchmarks/bench_drift.py --evidently-python .venv-bench/bin/python

Writes ``benchmarks/results/drift.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.constants import NO_TELEMETRY_ENV

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "drift.json"
SCORE, LABEL = "score", "default"
N_NUMERIC, N_CATEGORICAL = 18, 5
#: Columns shifted on purpose in the current window (both tools should flag these) ...
SHIFTED = ("num_00", "num_07", "cat_2")
#: ... and one shifted by 3% of a std, which nobody should care about.
NEGLIGIBLE = "num_01"
SPEEDUP_GOAL, MEMORY_GOAL = 15.0, 0.25


# --- data (main process only: numpy + pandas + pyarrow) ------------------------------------


def _numeric(rng: Any, i: int, n: int, drift: bool) -> Any:
    import numpy as np

    kind = i % 4
    if kind == 0:
        values = rng.normal(10.0 * i, 1.0 + i, n)
    elif kind == 1:
        values = rng.lognormal(8.0 + 0.1 * i, 0.6, n)
    elif kind == 2:
        values = rng.poisson(1.0 + i % 5, n).astype(np.float64)
    else:
        values = np.where(rng.random(n) < 0.5, 0.0, rng.exponential(100.0, n))
    if drift and f"num_{i:02d}" == "num_00":
        values = values + 0.5 * (1.0 + i)
    if drift and f"num_{i:02d}" == "num_07":
        values = values * 1.3
    if drift and f"num_{i:02d}" == NEGLIGIBLE:
        values = values * 1.03
    if i % 6 == 5:
        values[rng.random(n) < 0.02] = np.nan
    return values


def _categorical(rng: Any, j: int, n: int, drift: bool) -> Any:
    import numpy as np

    size = (3, 5, 8, 12, 30)[j]
    names = np.array([f"{chr(97 + j)}{k}" for k in range(size)], dtype=object)
    weights = 1.0 / np.arange(1, size + 1)
    if drift and f"cat_{j}" == "cat_2":
        weights = weights[::-1]
    values = rng.choice(names, n, p=weights / weights.sum())
    if j == 4:
        values[rng.random(n) < 0.03] = None
    return values


def make_frame(n: int, seed: int, drift: bool) -> Any:
    """25 columns: numeric and categorical features, a calibrated score and its label."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {f"num_{i:02d}": _numeric(rng, i, n, drift) for i in range(N_NUMERIC)}
    cols |= {f"cat_{j}": _categorical(rng, j, n, drift) for j in range(N_CATEGORICAL)}
    z = (cols["num_00"] - 0.0) / 1.0 + 0.5 * np.log(cols["num_01"]) - 4.0 - 0.3 * cols["num_02"]
    score = 1.0 / (1.0 + np.exp(-(z - np.nanmean(z) - 1.5)))
    cols[SCORE] = score
    cols[LABEL] = (rng.random(n) < score).astype(np.int64)
    return pd.DataFrame(cols)


def write_data(folder: Path, ref_rows: int, cur_rows: int, seed: int) -> tuple[Path, Path]:
    ref, cur = folder / "reference.parquet", folder / "current.parquet"
    make_frame(ref_rows, seed, drift=False).to_parquet(ref, index=False)
    make_frame(cur_rows, seed + 1, drift=True).to_parquet(cur, index=False)
    return ref, cur


# --- measurement (both workers) ------------------------------------------------------------


def _rss_mb() -> float:
    with Path("/proc/self/statm").open() as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(run: Callable[[], Any]) -> tuple[Any, dict[str, float | bool]]:
    """Wall time and peak RSS increase of ``run()``, the peak reset just before it."""
    gc.collect()
    reset = _reset_peak_rss()
    before = _rss_mb()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return result, {
        "seconds": round(seconds, 3),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_increase_mb": round(peak - before, 1),
        "peak_reset": reset,
    }


def read_frames(ref: Path, cur: Path) -> tuple[Any, Any, float]:
    import pandas as pd

    start = time.perf_counter()
    frames = pd.read_parquet(ref), pd.read_parquet(cur)
    return frames[0], frames[1], round(time.perf_counter() - start, 3)


def worker_ours(ref_path: Path, cur_path: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import pandas as pd

    from mlops.drift import build_profile, compare

    ref, cur, read_s = read_frames(ref_path, cur_path)

    def run() -> Any:
        t0 = time.perf_counter()
        profile = build_profile(ref, score_column=SCORE, label_column=LABEL, source="bench")
        t1 = time.perf_counter()
        report = compare(profile, cur, window_id="bench")
        report.model_dump_json()
        report.to_table()
        return report, t1 - t0, time.perf_counter() - t1

    (report, profile_s, compare_s), stats = measure(run)
    return {
        "tool": "mlops.drift",
        "versions": {"numpy": np.__version__, "pandas": pd.__version__},
        "read_parquet_s": read_s,
        "profile_s": round(profile_s, 3),
        "compare_s": round(compare_s, 3),
        **stats,
        "columns_checked": report.n_features + (1 if report.prediction else 0),
        "flagged": sorted(
            [*report.drifting_features, *([SCORE] if report.prediction_verdict in ("warn", "act") else [])]
        ),
        "performance": {p.metric: p.verdict for p in report.performance},
    }


def worker_evidently(ref_path: Path, cur_path: Path) -> dict[str, Any]:
    import evidently
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur, read_s = read_frames(ref_path, cur_path)
    definition = DataDefinition(
        numerical_columns=[c for c in ref.columns if c.startswith("num_")] + [SCORE],
        categorical_columns=[c for c in ref.columns if c.startswith("cat_")] + [LABEL],
    )

    def run() -> Any:
        report = Report([DataDriftPreset()])
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        return snapshot.dict()

    result, stats = measure(run)
    flagged = sorted(
        m["config"]["column"]
        for m in result["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift") and m["value"] >= m["config"]["threshold"]
    )
    checked = sum(1 for m in result["metrics"] if m["config"].get("type", "").endswith("ValueDrift"))
    return {
        "tool": "evidently DataDriftPreset",
        "versions": {"evidently": evidently.__version__, "numpy": np.__version__, "pandas": pd.__version__},
        "read_parquet_s": read_s,
        **stats,
        "columns_checked": checked,
        "flagged": flagged,
    }


# --- orchestration (main process) ---------------------------------------------------------


def run_worker(python: str, side: str, ref: Path, cur: Path) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--ref", str(ref), "--cur", str(cur)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **NO_TELEMETRY_ENV}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{side} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(ours: dict[str, Any], evidently: dict[str, Any]) -> dict[str, Any]:
    speedup = evidently["seconds"] / ours["seconds"]
    memory = ours["peak_rss_increase_mb"] / max(evidently["peak_rss_increase_mb"], 1e-9)
    return {
        "speedup": round(speedup, 1),
        "memory_fraction": round(memory, 3),
        "speedup_goal": SPEEDUP_GOAL,
        "memory_goal": MEMORY_GOAL,
        "speedup_met": speedup >= SPEEDUP_GOAL,
        "memory_met": memory <= MEMORY_GOAL,
    }


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidently-python", help="python of the venv with evidently installed")
    parser.add_argument("--ref-rows", type=int, default=100_000)
    parser.add_argument("--cur-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["ours", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--ref", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cur", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        work = worker_ours if args.worker == "ours" else worker_evidently
        print(json.dumps(work(args.ref, args.cur)))
        return 0

    result: dict[str, Any] = {
        "benchmark": "drift report: reference vs current window",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "data": {
            "reference_rows": args.ref_rows,
            "current_rows": args.cur_rows,
            "columns": N_NUMERIC + N_CATEGORICAL + 2,
            "numeric_features": N_NUMERIC,
            "categorical_features": N_CATEGORICAL,
            "score_and_label": [SCORE, LABEL],
            "seed": args.seed,
            "shifted_on_purpose": list(SHIFTED),
            "negligible_shift_3pct": NEGLIGIBLE,
        },
        "method": (
            "each side in its own subprocess reading the same Parquet files; time = "
            "perf_counter around the report only; memory = ru_maxrss after the report minus "
            "RSS before it, peak RSS reset via /proc/self/clear_refs after reading the data"
        ),
    }
    with tempfile.TemporaryDirectory(prefix="bench_drift_") as tmp:
        ref, cur = write_data(Path(tmp), args.ref_rows, args.cur_rows, args.seed)
        result["ours"] = run_worker(sys.executable, "ours", ref, cur)
        print("ours:", json.dumps(result["ours"]), flush=True)
        if args.evidently_python:
            result["evidently"] = run_worker(args.evidently_python, "evidently", ref, cur)
            print("evidently:", json.dumps(result["evidently"]), flush=True)
            result["ratios"] = ratios(result["ours"], result["evidently"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("ratios", {}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
