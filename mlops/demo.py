"""``mlops demo``: the lifecycle on simulated data with embedded defaults (no services needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mlops.errors import InputError


def run_demo(workdir: Path) -> dict[str, Any]:
    """Run the demo flow; each stage shows as a (sub)flow run in the Prefect UI when one is up.

    Unless ``MLOPS_HOME`` is set, the demo keeps its state in ``<workdir>/home``, started afresh
    each time so the demo always tells the same story (first model, bootstrap champion, ...).
    A home given by ``MLOPS_HOME`` is never deleted: it must not hold an earlier run's state.
    """
    from flows.demo import lifecycle_demo

    if "MLOPS_HOME" in os.environ:
        check_fresh_home(Path(os.environ["MLOPS_HOME"]))
    else:
        home = workdir / "home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        os.environ["MLOPS_HOME"] = str(home)
    return lifecycle_demo(workdir=str(workdir))


def check_fresh_home(home: Path) -> None:
    """Refuse a home that already holds snapshots or audit records (an earlier run's state).

    The demo's story starts from nothing (the first model becomes champion by the bootstrap
    path); on a used home it would meet the earlier champion and stop half way.
    """
    used = [p for p in (home / "store", home / "audit.db") if p.exists()]
    if used:
        raise InputError(
            f"MLOPS_HOME={home} already holds an earlier run's state ({', '.join(p.name for p in used)}); "
            "the demo starts from an empty home",
            hint="point MLOPS_HOME at a new or empty folder, or unset it to use .demo/home (reset each run)",
        )
