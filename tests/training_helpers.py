"""Small labelled histories for the training tests: simulated days stored as validated snapshots.

``ingest`` types a frame by its contract exactly as validation does and stores the valid rows
as a content-addressed snapshot with a catalog entry (what an accepted batch leaves behind),
skipping the GX run to keep tests fast. The flow test also validates one batch through the
real ``validate_data`` flow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlops.catalog import CatalogEntry, record_snapshot
from mlops.constants import KIND_VALID
from mlops.contracts import Contract
from mlops.settings import DEFAULT_MODEL_SPECS_DIR
from mlops.simulator import SimulationConfig, generate_applications
from mlops.storage import ObjectStore, write_snapshot
from mlops.validation import finalise_valid, row_masks, type_batch

OUTCOME_DELAY = timedelta(days=7)


def outcomes_of(apps: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """The outcomes batch of simulated applications, observed ``OUTCOME_DELAY`` after applying."""
    return pd.DataFrame(
        {
            "application_id": apps["application_id"].to_numpy(),
            "observed_at": apps["applied_at"] + OUTCOME_DELAY,
            "defaulted": labels.to_numpy(),
        }
    )


def simulated_day(day: int, rows: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(applications, outcomes) of one simulated day, as raw frames."""
    config = SimulationConfig(seed=seed, days=max(day + 1, 2), rows_per_day=rows)
    apps, labels = generate_applications(rows, day, config)
    return apps, outcomes_of(apps, labels)


def ingest(store: ObjectStore, frame: pd.DataFrame, contract: Contract, source: str) -> str:
    """Type ``frame`` by ``contract``, check it is clean, store + catalog it; returns the sha256."""
    typed, wrong = type_batch(frame, contract)
    failures = row_masks(typed, wrong, contract)
    assert not failures, f"test batch {source} breaks its contract: {sorted(failures)}"
    valid = finalise_valid(typed, contract)
    ref = write_snapshot(store, valid, dataset=contract.name, kind=KIND_VALID)
    ts = contract.timestamp_column
    record_snapshot(
        store,
        CatalogEntry(
            dataset=contract.name,
            contract_version=contract.version,
            sha256=ref.sha256,
            uri=ref.uri,
            rows=ref.rows,
            source=source,
            ingested_at=datetime.now(UTC),
            min_timestamp=valid[ts].min() if ts else None,
            max_timestamp=valid[ts].max() if ts else None,
        ),
    )
    return ref.sha256


def ingest_history(
    store: ObjectStore,
    applications: Contract,
    outcomes: Contract,
    *,
    days: int,
    rows: int,
    seed: int = 7,
    first_day: int = 0,
) -> dict[str, list[str]]:
    """Simulate ``days`` days and ingest their applications and outcomes; returns the shas."""
    shas: dict[str, list[str]] = {"applications": [], "outcomes": []}
    for day in range(first_day, first_day + days):
        apps, outs = simulated_day(day, rows, seed)
        shas["applications"].append(ingest(store, apps, applications, f"applications/day_{day:04d}"))
        shas["outcomes"].append(ingest(store, outs, outcomes, f"outcomes/day_{day:04d}"))
    return shas


def ingest_settings_history(days: int, rows: int = 500) -> dict[str, list[str]]:
    """:func:`ingest_history` into the object store the settings name now, with their
    credit-risk contracts."""
    from mlops.contracts import load_contract
    from mlops.settings import get_settings
    from mlops.storage import make_store

    settings = get_settings()
    return ingest_history(
        make_store(settings),
        load_contract(settings.contracts_dir, "credit_applications"),
        load_contract(settings.contracts_dir, "credit_outcomes"),
        days=days,
        rows=rows,
    )


def write_spec(folder: Path, name: str = "credit-risk", **overrides: Any) -> Path:
    """A copy of the repo's credit-risk spec, small and single-threaded for tests, with overrides."""
    spec = yaml.safe_load((DEFAULT_MODEL_SPECS_DIR / "credit-risk.yaml").read_text())
    spec.update(
        name=name,
        nthread=1,
        num_boost_round=60,
        training_window={"min_rows": 200},
        evaluation={"newest_fraction": 0.25, "min_rows": 100},
    )
    spec["gates"]["non_inferiority"]["n_bootstrap"] = 100
    for key, value in overrides.items():
        spec[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_train_tasks(model: str, flow_run_id: str | None = None) -> Any:
    """The train flow's tasks in flow order through ``.fn()`` (no Prefect server): the registered result."""
    from mlops.settings import get_settings
    from tasks import training as t

    settings = get_settings()
    bundle = t.load_model_spec_task.fn(model, settings)
    labelled = t.gather_labelled_task.fn(bundle, settings)
    split = t.split_task.fn(labelled, bundle)
    candidate = t.train_candidate_task.fn(
        t.prepare_training_matrix_task.fn(split.train, bundle.spec), bundle.spec
    )
    champion = t.score_champion_task.fn(
        bundle.spec, split.evaluation, settings, bundle.applications.timestamp_column
    )
    scores = t.score_candidate_task.fn(split.evaluation, candidate)
    report, champion_report = t.evaluate_task.fn(bundle.spec, split.evaluation, scores, champion)
    record = t.check_gates_task.fn(
        bundle.spec, report, scores, split.evaluation, champion, labelled, candidate, flow_run_id
    )
    lineage = t.build_lineage_task.fn(bundle, labelled, split, candidate, champion, flow_run_id)
    logged = t.log_training_run_task.fn(
        bundle,
        settings,
        labelled,
        split,
        candidate,
        scores,
        report,
        champion,
        champion_report,
        record,
        lineage,
    )
    return t.register_candidate_task.fn(bundle.spec, settings, logged, record, lineage)


def fresh_process_scores(
    uri: str, model_uri: str, csv: Path, cwd: Path, env: dict[str, str] | None = None
) -> Any:
    """Score ``csv`` in a new interpreter that cannot import this product (a plain MLflow user);
    ``env``: its environment (default: this one's)."""
    code = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.meta_path = [f for f in sys.meta_path if getattr(f, "__name__", "") != "_EditableFinder"]
        assert importlib.util.find_spec("mlops") is None, "the product must not be importable here"
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({uri!r})
        model = mlflow.pyfunc.load_model({model_uri!r})
        scores = model.predict(pd.read_csv({str(csv)!r}))
        print(json.dumps([float(s) for s in scores]))
        """
    )
    child = dict(os.environ if env is None else env)
    child.pop("PYTHONPATH", None)  # a plain MLflow user's interpreter: no path to this checkout
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=child,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
