"""``mlops demo``: the lifecycle on simulated data with embedded defaults (no services needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mlops.errors import InputError
from mlops.settings import Settings, get_settings


def run_demo(workdir: Path) -> dict[str, Any]:
    """Run the demo flow; each stage shows as a (sub)flow run in the Prefect UI when one is up.

    Unless ``MLOPS_HOME`` is set, the demo keeps its state in ``<workdir>/home``, started afresh
    each time so the demo always tells the same story (first model, bootstrap champion, ...).
    A home given by ``MLOPS_HOME`` is never deleted: it must not hold an earlier run's state.
    """
    from flows.demo import lifecycle_demo

    given = "MLOPS_HOME" in os.environ
    home = Path(os.environ["MLOPS_HOME"]) if given else workdir / "home"
    settings = get_settings().model_copy(update={"home": home})
    refuse_external_services(settings)
    if given:
        check_fresh_home(home, _sqlite_path(settings.audit_db_url))
    else:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        os.environ["MLOPS_HOME"] = str(home)
    return lifecycle_demo(workdir=str(workdir))


def refuse_external_services(settings: Settings) -> None:
    """The demo runs on embedded defaults only: with a shell's production settings it would put
    simulated batches into the store training reads, register demo models in the registry and
    append demo predictions to the audit chain. Refused, naming what is set: the production
    profile, a store of its own, or a tracking / audit database other than a SQLite file under
    ``MLOPS_HOME``."""
    home = settings.home_dir.resolve()
    external = {
        "MLOPS_PROFILE": settings.profile != "embedded",
        "MLOPS_STORE_URL": settings.store_url is not None,
        "MLOPS_MLFLOW_TRACKING_URI": not _sqlite_under(settings.mlflow_tracking_uri, home),
        "MLOPS_AUDIT_DB_URL": not _sqlite_under(settings.audit_db_url, home),
    }
    named = [name for name, is_set in external.items() if is_set]
    if named:
        raise InputError(
            f"the demo runs on embedded defaults only, and {', '.join(named)} "
            f"{'points' if len(named) == 1 else 'point'} elsewhere: it would write simulated batches, "
            "demo models and demo predictions into the stores, registry and audit chain named there",
            hint=f"run it in a shell without them (env -u {' -u '.join(named)} mlops demo)",
        )


def _sqlite_under(url: str | None, home: Path) -> bool:
    """True for no URL (the default under the home) or a SQLite file inside ``home``."""
    if url is None:
        return True
    path = _sqlite_path(url)
    return path is not None and path.is_relative_to(home)


def _sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite URL, resolved; None for anything else (or an in-memory database)."""
    if url is None:
        return None
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return (
        Path(parsed.database).resolve() if parsed.get_backend_name() == "sqlite" and parsed.database else None
    )


def check_fresh_home(home: Path, audit_db: Path | None = None) -> None:
    """Refuse a home that already holds snapshots or audit records (an earlier run's state):
    its store, its ``audit.db`` or the SQLite audit file ``MLOPS_AUDIT_DB_URL`` names there.

    The demo's story starts from nothing (the first model becomes champion by the bootstrap
    path); on a used home it would meet the earlier champion and stop half way.
    """
    used = [p for p in dict.fromkeys((home / "store", home / "audit.db", audit_db)) if p and p.exists()]
    if used:
        raise InputError(
            f"MLOPS_HOME={home} already holds an earlier run's state ({', '.join(p.name for p in used)}); "
            "the demo starts from an empty home",
            hint="point MLOPS_HOME at a new or empty folder, or unset it to use .demo/home (reset each run)",
        )
