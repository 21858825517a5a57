"""A real ``prefect server start`` and a serving process, for integration tests and benchmarks.

Everything runs on 127.0.0.1 with its own ``PREFECT_HOME``; processes are stopped by PID
(SIGTERM, then SIGKILL after a timeout). The test process talks to the server through
explicit clients (no global Prefect settings are changed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from mlops.constants import NO_TELEMETRY_ENV
from mlops.settings import PROJECT_ROOT

PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(health_url: str, proc: subprocess.Popen[Any], timeout: float, what: str) -> None:
    """Until ``health_url`` answers 200; a RuntimeError naming ``what`` if ``proc`` exits first
    or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit code {proc.poll()})")
        time.sleep(0.3)


def quiet_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no telemetry, this repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        **NO_TELEMETRY_ENV,
        PYTHONPATH=str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process (group), wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class LocalServer:
    url: str  # http://127.0.0.1:PORT
    home: Path
    process: subprocess.Popen[Any]

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def env(self, **extra: str) -> dict[str, str]:
        return quiet_env(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.home), **extra)

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(api=self.api_url)


@contextmanager
def prefect_server(folder: Path, *, timeout: float = 120.0) -> Iterator[LocalServer]:
    """``prefect server start`` on a free port, PREFECT_HOME in ``folder``; stopped on exit."""
    home = folder / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (folder / "prefect-server.log").open("wb")
    env = quiet_env(PREFECT_HOME=str(home), PREFECT_SERVER_EPHEMERAL_ENABLED="false")
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(
            f"{url}/api/health", proc, timeout, f"prefect server (see {folder / 'prefect-server.log'})"
        )
        yield LocalServer(url=url, home=home, process=proc)
    finally:
        stop_process(proc)
        log.close()


SERVE_SCRIPT = """
import sys
import yaml
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from flows.retrain import retrain

name, trigger_name = sys.argv[1], sys.argv[2]
config = yaml.safe_load(open("prefect.yaml"))
[deployment] = [d for d in config["deployments"] if d["name"] == "retrain"]
[spec] = [t for t in deployment["triggers"] if t["name"] == trigger_name]
spec = {**spec, "name": f"{name}__{trigger_name}"}
retrain.serve(name=name, triggers=[DeploymentEventTrigger(**spec)], print_starting_message=False)
"""


@contextmanager
def serve_retrain(
    server: LocalServer, folder: Path, *, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[Any]]:
    """Serve ``flows/retrain.py:retrain`` with the retrain trigger of prefect.yaml, polling every second."""
    with _serving(
        server, folder / f"serve-{name}.log", [SERVE_SCRIPT, name, "retrain-on-drift-or-degradation"], env
    ) as proc:
        yield proc


@contextmanager
def _serving(
    server: LocalServer, log_path: Path, script_args: list[str], env: dict[str, str] | None
) -> Iterator[subprocess.Popen[Any]]:
    """``python -c SCRIPT ARGS...`` serving against ``server`` (runner polls every second), logged to a file."""
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", *script_args],
        cwd=PROJECT_ROOT,
        env=server.env(PREFECT_RUNNER_POLL_FREQUENCY="1", **(env or {})),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)
        log.close()


SERVE_FROM_YAML_SCRIPT = """
import importlib
import sys
import yaml
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

config = yaml.safe_load(open("prefect.yaml"))
runners = []
for name in sys.argv[1:]:
    [spec] = [d for d in config["deployments"] if d["name"] == name]
    path, attr = spec["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
    limit = spec.get("concurrency_limit")
    runners.append(
        flow.to_deployment(
            name=name,
            parameters=spec.get("parameters"),
            triggers=[DeploymentEventTrigger(**t) for t in spec.get("triggers", [])],
            concurrency_limit=None if limit is None else ConcurrencyLimitConfig(**limit),
            tags=spec.get("tags"),
        )
    )
serve(*runners, print_starting_message=False)
"""


@contextmanager
def serve_from_prefect_yaml(
    server: LocalServer, folder: Path, deployments: list[str], *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[Any]]:
    """Serve these deployments of prefect.yaml in one background process, as the file declares
    them (entrypoint, parameters, triggers verbatim, concurrency limit, tags), polling every second.

    Deployment ``<flow>/<name>`` keeps its prefect.yaml name, and its automation the trigger's name.
    """
    log_path = folder / f"serve-{'-'.join(deployments)}.log"
    with _serving(server, log_path, [SERVE_FROM_YAML_SCRIPT, *deployments], env) as proc:
        yield proc


def wait_for_flow_deployment(
    server: LocalServer, flow_name: str, name: str, *, triggered: bool = True, timeout: float = 90.0
) -> UUID:
    """The id of deployment ``<flow_name>/<name>`` once it exists (and, if ``triggered``, its automation)."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            try:
                deployment = client.read_deployment_by_name(f"{flow_name}/{name}")
            except Exception:
                deployment = None
            if deployment is not None and (not triggered or _automations_for(server, deployment.id)):
                return UUID(str(deployment.id))
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {flow_name}/{name} or its automation did not appear")
            time.sleep(0.5)


def wait_for_deployment(server: LocalServer, name: str, *, timeout: float = 90.0) -> UUID:
    """The id of deployment ``retrain/<name>`` once it exists and its automation is in place."""
    return wait_for_flow_deployment(server, "retrain", name, timeout=timeout)


def _automations_for(server: LocalServer, deployment_id: UUID) -> list[Any]:
    with server.client() as client:
        found: list[Any] = client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
    return found


def emit_to(
    server: LocalServer, event: str, resource_id: str, payload: dict[str, Any]
) -> tuple[str, datetime]:
    """Send one event straight to ``server`` (its own websocket client); (event id, occurred)."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    sent = Event(
        event=event,
        resource={"prefect.resource.id": resource_id},
        payload=payload,
        occurred=datetime.now(UTC),
    )

    async def _send() -> None:
        async with PrefectEventsClient(api_url=server.api_url) as client:
            await client.emit(sent)

    asyncio.run(_send())
    return str(sent.id), sent.occurred


def flow_runs_of(server: LocalServer, deployment_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with server.client() as client:
        runs: list[Any] = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return runs


def running_at(server: LocalServer, flow_run_id: UUID) -> datetime | None:
    """When the flow run entered Running (server time), or None if it has not yet."""
    with server.client() as client:
        states = client.read_flow_run_states(flow_run_id)
    times = [s.timestamp for s in states if s.type.value == "RUNNING"]
    return min(times) if times else None
