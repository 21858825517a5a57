"""Monitoring benchmarks: event -> triggered retrain latency, and rollback -> scorer pickup.

    python -m benchmarks.bench_monitoring [--out benchmarks/results/monitoring.json] [--events 5]

(c) **drift event -> retrain Running**, on a real local ``prefect server start``: the retrain
    flow's trigger is taken verbatim from prefect.yaml; each of ``--events`` events (one per
    model resource, so the per-model debounce does not swallow them) is sent to the server
    and the time from the event's ``occurred`` to the flow run's Running state is taken from
    the server's own timestamps. Two ways of running the deployment:

    * ``serve``: ``flow.serve()`` in a background process, ``PREFECT_RUNNER_POLL_FREQUENCY=1``;
    * ``worker``: ``prefect deploy --name retrain`` from prefect.yaml onto the process pool and
      ``prefect worker start`` with ``PREFECT_WORKER_QUERY_SECONDS=1`` (what
      deployments/README.md sets up; each run starts one new Python process: prefect.yaml gives
      the pool's ``command`` job variable, ``<checkout>/.venv/bin/python -m prefect.engine``).

    Each event also records where the time went, from the flow run's own server-side state
    timestamps (seconds after the event): ``scheduled`` (the automation created the run),
    ``pending`` (the worker or runner picked it up), ``running``.

    The retrain runs see an empty MLOPS_HOME and complete as skipped: the figure is the
    orchestration latency, not training time. Goal: median <= 5 s.

(d) **rollback + pickup**: two real model versions (trained by the train tasks on small
    simulated data, version 2 promoted over version 1), a long-lived
    :class:`~mlops.champion_loader.ChampionLoader` that served both; timed from the start of
    the rollback (registry + audit record + tags, :func:`mlops.rollback.rollback`) to the
    scorer's next call returning version 1's scores. Also with a cold loader (version 1 not in
    memory: includes loading the pyfunc) and through the Prefect ``rollback`` flow on the local
    server. Goal: median <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from mlops.constants import NO_TELEMETRY_ENV

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

for _var, _value in {
    **NO_TELEMETRY_ENV,
}.items():
    os.environ.setdefault(_var, _value)

from mlops.constants import EVENT_DRIFT_DETECTED, model_resource  # noqa: E402
from tests.monitoring_helpers import promote_by_hand  # noqa: E402
from tests.prefect_server import (  # noqa: E402
    PREFECT,
    LocalServer,
    emit_to,
    flow_runs_of,
    prefect_server,
    running_at,
    serve_retrain,
    stop_process,
    wait_for_deployment,
)

GOAL_TRIGGER_SECONDS = 5.0
GOAL_ROLLBACK_SECONDS = 1.0
MODEL = "credit-risk"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "median_s": _median(values),
        "min_s": round(min(values), 3),
        "max_s": round(max(values), 3),
        "all_s": [round(v, 3) for v in values],
    }


# --- (c) event -> triggered run -----------------------------------------------------------------


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _finished(server: LocalServer, run_id: Any) -> bool:
    with server.client() as client:
        state = client.read_flow_run(run_id).state
    return state is not None and state.is_final()


def _phases(server: LocalServer, run_id: Any, occurred: datetime) -> dict[str, float]:
    """Seconds from the event to the first Scheduled, Pending and Running state of the run."""
    with server.client() as client:
        states = client.read_flow_run_states(run_id)
    first: dict[str, float] = {}
    for state in sorted(states, key=lambda s: s.timestamp):
        first.setdefault(state.type.value.lower(), round((state.timestamp - occurred).total_seconds(), 3))
    return {k: first[k] for k in ("scheduled", "pending", "running") if k in first}


def measure_trigger(
    server: LocalServer,
    deployment_id: Any,
    events: int,
    tag: str,
    phases: list[dict[str, float]] | None = None,
) -> list[float]:
    latencies: list[float] = []
    for i in range(events):
        before = {r.id for r in flow_runs_of(server, deployment_id)}
        _, occurred = emit_to(
            server,
            EVENT_DRIFT_DETECTED,
            model_resource(f"bench-{tag}-{i}"),
            {"model": MODEL, "severity": "act", "window": f"bench-{i}", "reason": "benchmark"},
        )

        def new_run(before: set[Any] = before) -> list[Any]:
            return [r for r in flow_runs_of(server, deployment_id) if r.id not in before]

        run = _wait(new_run, 60, "no triggered flow run within 60 s")[0]
        started = _wait(partial(running_at, server, run.id), 60, "the run did not reach Running")
        latencies.append((started - occurred).total_seconds())
        _wait(partial(_finished, server, run.id), 120, "the run did not finish")
        if phases is not None:
            phases.append(_phases(server, run.id, occurred))
        print(f"  {tag} event {i + 1}: Running after {latencies[-1]:.2f} s", flush=True)
    return latencies


def bench_trigger_serve(server: LocalServer, work: Path, events: int) -> dict[str, Any]:
    home = work / "serve-home"
    home.mkdir()
    with serve_retrain(server, work, name="bench-serve", env={"MLOPS_HOME": str(home)}):
        deployment_id = wait_for_deployment(server, "bench-serve")
        phases: list[dict[str, float]] = []
        latencies = measure_trigger(server, deployment_id, events, "serve", phases)
    return {"how": "flow.serve(), PREFECT_RUNNER_POLL_FREQUENCY=1", **_summary(latencies), "phases_s": phases}


def bench_trigger_worker(server: LocalServer, work: Path, events: int) -> dict[str, Any]:
    home = work / "worker-home"
    home.mkdir()
    env = server.env(PREFECT_WORKER_QUERY_SECONDS="1", MLOPS_HOME=str(home))
    subprocess.run(
        [PREFECT, "work-pool", "create", "mlops-process", "--type", "process", "--overwrite"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [PREFECT, "deploy", "--name", "retrain", "--no-prompt"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with server.client() as client:
        deployment_id = client.read_deployment_by_name("retrain/retrain").id
    log = (work / "worker.log").open("wb")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "mlops-process"],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: _automation_ready(server, deployment_id), 60, "no automation for retrain/retrain")
        # The automation exists before the worker does: measure with a worker already polling.
        _wait(lambda: _worker_online(server), 60, "the worker did not come online")
        command = _deployment_command(server, deployment_id)
        phases: list[dict[str, float]] = []
        latencies = measure_trigger(server, deployment_id, events, "worker", phases)
    finally:
        stop_process(worker, timeout=5)  # PITFALLS: the worker may ignore SIGTERM for ~15 s
        log.close()
    return {
        "how": "prefect deploy (prefect.yaml) + process worker, PREFECT_WORKER_QUERY_SECONDS=1",
        "command": command,
        **_summary(latencies),
        "phases_s": phases,
    }


def _deployment_command(server: LocalServer, deployment_id: Any) -> str | None:
    """The ``command`` job variable the deployment got from prefect.yaml (None: Prefect's default)."""
    with server.client() as client:
        variables = client.read_deployment(deployment_id).job_variables or {}
    return variables.get("command")


def _worker_online(server: LocalServer) -> bool:
    from prefect.client.schemas.objects import WorkerStatus

    with server.client() as client:
        workers = client.read_workers_for_work_pool("mlops-process")
    return any(w.status == WorkerStatus.ONLINE for w in workers)


def _automation_ready(server: LocalServer, deployment_id: Any) -> bool:
    with server.client() as client:
        return bool(client.read_resource_related_automations(f"prefect.deployment.{deployment_id}"))


# --- (d) rollback + loader pickup ---------------------------------------------------------------


@contextmanager
def _embedded_home(work: Path) -> Iterator[Path]:
    """MLOPS_* pointing at a fresh home for this process (restored afterwards)."""
    home, specs = work / "rollback-home", work / "specs"
    home.mkdir()
    saved = {k: os.environ.get(k) for k in ("MLOPS_HOME", "MLOPS_MODEL_SPECS_DIR", "MLOPS_PROFILE")}
    os.environ.update(MLOPS_HOME=str(home), MLOPS_MODEL_SPECS_DIR=str(specs), MLOPS_PROFILE="embedded")
    for var in ("MLOPS_STORE_URL", "MLOPS_MLFLOW_TRACKING_URI", "MLOPS_AUDIT_DB_URL"):
        os.environ.pop(var, None)
    try:
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _two_versions() -> Any:
    """Train versions 1 and 2 on small simulated data; 1 is the bootstrap champion."""
    from mlops.catalog import list_snapshots
    from mlops.contracts import load_contract
    from mlops.promotion import bootstrap_champion
    from mlops.registry import make_registry
    from mlops.settings import get_settings
    from mlops.storage import make_store, read_snapshot
    from tests.monitoring_helpers import ingest_days
    from tests.training_helpers import run_train_tasks, write_spec

    write_spec(Path(os.environ["MLOPS_MODEL_SPECS_DIR"]))
    settings = get_settings()
    store = make_store(settings)
    apps = load_contract(settings.contracts_dir, "credit_applications")
    outs = load_contract(settings.contracts_dir, "credit_outcomes")
    ingest_days(store, apps, outs, range(4))
    registry = make_registry()
    assert run_train_tasks(MODEL).version == 1
    bootstrap_champion(registry, MODEL, approved_by="benchmark")
    assert run_train_tasks(MODEL).version == 2
    registry.delete_alias(MODEL, "challenger")
    entry = list_snapshots(store, apps.name)[-1]
    return read_snapshot(store, dataset=apps.name, kind="valid", sha256=entry.sha256).head(100)


def bench_rollback(server: LocalServer, work: Path, repeats: int) -> dict[str, Any]:
    from mlops.audit import open_audit_store
    from mlops.champion_loader import ChampionLoader
    from mlops.registry import make_registry
    from mlops.rollback import rollback
    from mlops.settings import get_settings

    with _embedded_home(work):
        t0 = time.perf_counter()
        batch = _two_versions()
        setup_s = time.perf_counter() - t0
        registry = make_registry()
        engine = open_audit_store(get_settings())
        warm = ChampionLoader.from_settings(MODEL)
        warm.warm(1, 2)
        core, pickup, cold = [], [], []
        for i in range(repeats):
            promote_by_hand(MODEL, 2, previous=1, by="benchmark")
            assert warm.predict(batch).version == 2
            start = time.perf_counter()
            rollback(registry, engine, MODEL, by="benchmark", reason=f"run {i}")
            done = time.perf_counter()
            served = warm.predict(batch)
            end = time.perf_counter()
            assert served.version == 1 and served.load_seconds == 0.0
            core.append(done - start)
            pickup.append(end - start)
            # A cold scorer: version 1 was never loaded in this process.
            promote_by_hand(MODEL, 2, previous=1, by="benchmark")
            fresh = ChampionLoader.from_settings(MODEL)
            fresh.warm(2)
            start = time.perf_counter()
            rollback(registry, engine, MODEL, by="benchmark", reason=f"cold run {i}")
            served = fresh.predict(batch)
            cold.append(time.perf_counter() - start)
            assert served.version == 1 and served.load_seconds > 0
            print(f"  rollback {i + 1}: warm {pickup[-1]:.3f} s, cold {cold[-1]:.3f} s", flush=True)
        flow_runs = _rollback_flow_runs(server, warm, batch, repeats)
    return {
        "setup_s": round(setup_s, 1),
        "rows_scored_per_call": len(batch),
        "rollback_only": _summary(core),
        "rollback_plus_pickup_warm_loader": _summary(pickup),
        "rollback_plus_pickup_cold_loader": _summary(cold),
        "rollback_flow_plus_pickup": flow_runs,
    }


def _rollback_flow_runs(server: LocalServer, loader: Any, batch: Any, repeats: int) -> dict[str, Any]:
    """The Prefect ``rollback`` flow (task, artifact, event) on the local server, then one scorer call."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.rollback import rollback as rollback_flow

    totals: list[float] = []
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        for i in range(repeats):
            promote_by_hand(MODEL, 2, previous=1, by="benchmark")
            assert loader.predict(batch).version == 2
            start = time.perf_counter()
            rollback_flow(by="benchmark", reason=f"flow run {i}", model=MODEL)
            served = loader.predict(batch)
            totals.append(time.perf_counter() - start)
            assert served.version == 1
        # Send this process's flow-run logs and events while the server is still up.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=30)
        EventsWorker.drain_all(timeout=30)
    return {"how": "flow called in-process against the local server", **_summary(totals)}


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "monitoring.json")
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--skip-worker", action="store_true", help="measure (c) with serve() only")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    results: dict[str, Any] = {
        "benchmark": "monitoring",
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load},
    }
    try:
        with prefect_server(work) as server:
            print("(c) drift event -> retrain Running, serve()", flush=True)
            results["trigger_serve"] = bench_trigger_serve(server, work, args.events)
            if not args.skip_worker:
                print("(c) drift event -> retrain Running, process worker", flush=True)
                results["trigger_worker"] = bench_trigger_worker(server, work, args.events)
            print("(d) rollback + loader pickup", flush=True)
            results["rollback"] = bench_rollback(server, work, args.events)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    serve_median = results["trigger_serve"]["median_s"]
    worker_median = results.get("trigger_worker", {}).get("median_s")
    rollback_median = results["rollback"]["rollback_plus_pickup_warm_loader"]["median_s"]
    results["goal_trigger_s"] = GOAL_TRIGGER_SECONDS
    results["goal_trigger_met_serve"] = serve_median <= GOAL_TRIGGER_SECONDS
    if worker_median is not None:
        results["goal_trigger_met_worker"] = worker_median <= GOAL_TRIGGER_SECONDS
    results["goal_rollback_s"] = GOAL_ROLLBACK_SECONDS
    results["goal_rollback_met"] = rollback_median <= GOAL_ROLLBACK_SECONDS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k.startswith("goal")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
