"""``mlops demo``: the lifecycle on simulated data with embedded defaults (no services needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_demo(workdir: Path) -> dict[str, Any]:
    """Run the demo flow; each stage shows as a (sub)flow run in the Prefect UI when one is up."""
    from flows.demo import lifecycle_demo

    return lifecycle_demo(workdir=str(workdir))
