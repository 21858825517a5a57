"""Run every benchmark; each writes benchmarks/results/<name>.json, this writes SUMMARY.md.

    make bench                 # all
    python -m benchmarks.run validation drift   # some

Each benchmark measures ours beside a baseline in the same run and reports ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
EVIDENTLY_PYTHON = ROOT / ".venv-bench" / "bin" / "python"


def commands() -> dict[str, list[str]]:
    py = sys.executable
    cmds = {
        "validation": [py, "-m", "benchmarks.bench_validation"],
        "drift": [py, str(HERE / "bench_drift.py")]
        + (["--evidently-python", str(EVIDENTLY_PYTHON)] if EVIDENTLY_PYTHON.exists() else []),
        "drift_detection": [py, str(HERE / "bench_drift_detection.py")],
        "audit": [py, str(HERE / "bench_audit.py")],
    }
    for name in ("training", "scoring", "monitoring"):
        if (HERE / f"bench_{name}.py").exists():
            cmds[name] = [py, "-m", f"benchmarks.bench_{name}"]
    return cmds


def main(selected: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    cmds = commands()
    unknown = [s for s in selected if s not in cmds]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(cmds)}", file=sys.stderr)
        return 2
    failed = []
    for name in selected or list(cmds):
        print(f"== {name}: {' '.join(cmds[name])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmds[name], cwd=ROOT, check=False)
        print(f"== {name}: exit {proc.returncode} in {time.perf_counter() - t0:.0f}s", flush=True)
        if proc.returncode:
            failed.append(name)
    lines = ["# Benchmark results", "", "Written by `make bench`; each file holds the full figures.", ""]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        ratios = {k: v for k, v in data.items() if "ratio" in k or k.startswith("goal")}
        lines.append(f"- **{path.stem}**: " + ", ".join(f"{k} = {v}" for k, v in ratios.items()))
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
