"""``mlops demo``: the lifecycle on simulated data with embedded defaults (no services needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def run_demo(workdir: Path) -> dict[str, Any]:
    """Run the demo flow; each stage shows as a (sub)flow run in the Prefect UI when one is up.

    Unless ``MLOPS_HOME`` is set, the demo keeps its state in ``<workdir>/home``, started afresh
    each time so the demo always tells the same story (first model, bootstrap champion, ...).
    """
    from flows.demo import lifecycle_demo

    if "MLOPS_HOME" not in os.environ:
        home = workdir / "home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        os.environ["MLOPS_HOME"] = str(home)
    return lifecycle_demo(workdir=str(workdir))
