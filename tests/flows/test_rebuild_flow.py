"""rebuild under the Prefect test harness: a registered version retrained from its lineage.

The history holds review-labelled rows (the feedback loop) besides outcomes, and data arrives
after the training run (a new day, a corrected outcome batch): the rebuild must read what the
version was trained on, not what the store holds now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.rebuild import rebuild
from flows.train import train
from mlops import audit
from mlops.audit import open_audit_store
from mlops.catalog import entry_key
from mlops.cli import main
from mlops.constants import KIND_VALID
from mlops.contracts import load_contract
from mlops.errors import StorageIntegrityError
from mlops.labels import gather_labelled
from mlops.lineage import LINEAGE_ARTIFACT, TAG_REVIEW_LABELS, TAG_SNAPSHOTS_SHA256
from mlops.model_spec import load_model_spec
from mlops.rebuild import MODEL_SPEC_ARTIFACT
from mlops.registry import make_registry
from mlops.settings import get_settings
from mlops.storage import make_store, read_snapshot
from tests.helpers import latest_artifact
from tests.integration.test_second_dataset import CUSTOMERS, _customers, churn_files
from tests.review_helpers import KEY, append, predictions
from tests.training_helpers import ingest, simulated_day, write_spec

pytestmark = pytest.mark.flows

MODEL = "credit-risk"
REVIEWED = 20  # day-1 applications with no outcome, decided by a person instead


@pytest.fixture
def history(mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Days 0-3 of applications and outcomes, except that the first ``REVIEWED`` applications of
    day 1 have no outcome but a resolved review (half declined, half approved)."""
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", KEY)
    write_spec(tmp_path / "specs")
    settings = get_settings()
    store = make_store(settings)
    apps_c = load_contract(settings.contracts_dir, "credit_applications")
    outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
    day1 = ""
    for day in range(4):
        apps, outs = simulated_day(day, 500)
        sha = ingest(store, apps, apps_c, f"applications/day_{day:04d}.csv")
        if day == 1:
            day1 = sha
            outs = outs.iloc[REVIEWED:]
        ingest(store, outs, outs_c, f"outcomes/day_{day:04d}.csv")
    rows = read_snapshot(store, dataset=apps_c.name, kind=KIND_VALID, sha256=day1).iloc[:REVIEWED]
    engine = open_audit_store(settings)
    try:
        cases = append(
            engine,
            predictions(day1, rows["application_id"].tolist(), [0.3] * REVIEWED, routed=range(REVIEWED)),
            "day-1",
        )
        for i, case_id in enumerate(cases):
            audit.resolve_case(engine, case_id, "carol", "decline" if i % 2 else "approve", "checked")
    finally:
        engine.dispose()
    return {"store": store, "applications": apps_c, "outcomes": outs_c}


def _later_data(history: dict[str, Any]) -> None:
    """After training: a new day, and a corrected outcome batch flipping day 0's first labels."""
    store, apps_c, outs_c = history["store"], history["applications"], history["outcomes"]
    apps, outs = simulated_day(4, 500)
    ingest(store, apps, apps_c, "applications/day_0004.csv")
    ingest(store, outs, outs_c, "outcomes/day_0004.csv")
    _, day0 = simulated_day(0, 500)
    fix = day0.iloc[:100].copy()
    fix["defaulted"] = 1 - fix["defaulted"]
    fix["observed_at"] = fix["observed_at"] + pd.Timedelta(days=1)
    ingest(store, fix, outs_c, "outcomes/day_0000_correction.csv")


def test_a_version_is_rebuilt_bit_for_bit_from_its_lineage_after_new_data_arrived(
    history: dict[str, Any],
) -> None:
    trained = train(model=MODEL)
    registry = make_registry(get_settings())
    tags = registry.version_tags(MODEL, trained.version)
    assert tags[TAG_REVIEW_LABELS] == str(REVIEWED)  # the feedback loop gave training rows
    _later_data(history)
    # Control: what the store gives now is other data than the version's.
    now = gather_labelled(
        history["store"], load_model_spec(MODEL), history["applications"], history["outcomes"]
    )
    assert now.summary.rows != trained.training_rows + trained.evaluation_rows

    result = rebuild(version=trained.version, model=MODEL)

    assert result.identical, result.likely_causes
    assert result.fingerprint_rebuilt == result.fingerprint_recorded
    assert result.training_rows_rebuilt == result.training_rows_recorded == trained.training_rows
    assert (result.application_snapshots, result.outcome_snapshots, result.review_labels) == (4, 4, REVIEWED)
    assert result.likely_causes == [] and result.package_changes == []
    shown = latest_artifact(f"rebuild-{MODEL}-v{trained.version}")
    assert "IDENTICAL" in shown and result.fingerprint_recorded in shown
    # Nothing was registered: the rebuild only compares.
    assert sorted(int(v.version) for v in registry.client.search_model_versions(f"name = '{MODEL}'")) == [
        trained.version
    ]


def test_rebuild_refuses_altered_lineage_or_spec_and_names_a_missing_snapshot(
    history: dict[str, Any],
) -> None:
    trained = train(model=MODEL)
    registry = make_registry(get_settings())
    lineage = registry.read_run_json(trained.run_id, LINEAGE_ARTIFACT)
    spec = registry.read_run_json(trained.run_id, MODEL_SPEC_ARTIFACT)

    # A lineage that names other data than its tags say.
    registry.log_run_json(
        trained.run_id, {**lineage, "outcome_snapshots": lineage["outcome_snapshots"][1:]}, LINEAGE_ARTIFACT
    )
    with pytest.raises(StorageIntegrityError, match=TAG_SNAPSHOTS_SHA256.replace(".", r"\.")):
        rebuild(version=trained.version, model=MODEL)
    registry.log_run_json(trained.run_id, lineage, LINEAGE_ARTIFACT)

    # A spec that is not the one the version was trained with.
    registry.log_run_json(trained.run_id, {**spec, "seed": spec["seed"] + 1}, MODEL_SPEC_ARTIFACT)
    with pytest.raises(StorageIntegrityError, match=r"model spec artifact .* hashes to"):
        rebuild(version=trained.version, model=MODEL)
    registry.log_run_json(trained.run_id, spec, MODEL_SPEC_ARTIFACT)

    # A lineage or spec artifact gone from the run (the artifact store lost it).
    artifacts = Path(registry.client.get_run(trained.run_id).info.artifact_uri.removeprefix("file://"))
    for artifact in (LINEAGE_ARTIFACT, MODEL_SPEC_ARTIFACT):
        (artifacts / artifact).rename(artifacts / f"{artifact}.away")
        with pytest.raises(
            StorageIntegrityError, match=f"{artifact} of MLflow run {trained.run_id} is missing"
        ):
            rebuild(version=trained.version, model=MODEL)
        (artifacts / f"{artifact}.away").rename(artifacts / artifact)

    # The registered model's files changed in the artifact store (the tags still say the old
    # fingerprint): the rebuild compares with the files, checked, not with the tag alone.
    (booster,) = Path(get_settings().home).rglob("booster.json")
    original = booster.read_bytes()
    booster.write_bytes(original.replace(b'"num_trees":"', b'"num_trees":" ', 1))
    assert booster.read_bytes() != original
    with pytest.raises(StorageIntegrityError, match="its files in the artifact store hash to"):
        rebuild(version=trained.version, model=MODEL)
    booster.write_bytes(original)

    # A snapshot the lineage names that the catalog no longer holds.
    gone = lineage["outcome_snapshots"][0]
    Path(history["store"].uri(entry_key(history["outcomes"].name, gone))).unlink()
    with pytest.raises(
        StorageIntegrityError, match=f"snapshot {gone}, named by {MODEL} version {trained.version}'s lineage"
    ):
        rebuild(version=trained.version, model=MODEL)


def test_a_version_without_lineage_is_refused_before_any_artifact_is_read(
    mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version registered by hand (a plain MLflow run, or no run at all) has no lineage to
    rebuild from: refused (exit 1) saying so, not an unexpected MlflowException (exit 3)."""
    registry = make_registry(get_settings())
    client = registry.client
    # A plain run in an experiment of its own (not MLflow's process-wide active experiment,
    # which an earlier test in the same process may have left pointing elsewhere).
    run = client.create_run(client.create_experiment("by-hand"))
    client.log_param(run.info.run_id, "by", "hand")
    client.create_registered_model(MODEL)
    assert main(["rebuild", "1", "--json"]) == 2  # no version yet: said so, not "its versions are "
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hint"] == (
        f"it has none yet (mlops train --model {MODEL})"
    )
    by_hand = client.create_model_version(
        MODEL, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    no_run = client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/model")

    for version in (by_hand.version, no_run.version):
        code = main(["rebuild", str(version), "--json"])
        captured = capsys.readouterr()
        data = json.loads(captured.out.strip().splitlines()[-1])
        assert code == 1, data
        assert (
            data["error"]
            == f"{MODEL} version {version} has no lineage tags (it was not registered by the train flow)"
        )
        assert "Traceback" not in captured.err


def test_an_application_sent_twice_whose_first_copy_left_the_window_is_not_called_identical(
    mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day 0's first application is sent again, last of day 4, with its outcome. Training keeps
    its first copy (day 0), which the window of 3 snapshots then drops; the lineage names days
    2-4 only, so the rebuild keeps the second copy: one more evaluation row. The model's bits
    are the same, but the rows are not the recorded ones, and the rebuild says so (exit 1)."""
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(tmp_path / "specs"))
    write_spec(tmp_path / "specs", training_window={"min_rows": 200, "last_snapshots": 3})
    settings = get_settings()
    store = make_store(settings)
    apps_c = load_contract(settings.contracts_dir, "credit_applications")
    outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
    first_apps, first_outs = simulated_day(0, 300)
    for day in range(5):
        apps, outs = simulated_day(day, 300)
        if day == 0:
            outs = outs.iloc[1:]  # its outcome comes with the second copy
        if day == 4:
            again, outcome = first_apps.iloc[:1].copy(), first_outs.iloc[:1].copy()
            again["applied_at"] = apps["applied_at"].max()
            outcome["observed_at"] = again["applied_at"] + pd.Timedelta(days=7)
            apps, outs = pd.concat([apps, again]), pd.concat([outs, outcome])
        ingest(store, apps, apps_c, f"applications/day_{day:04d}.csv")
        ingest(store, outs, outs_c, f"outcomes/day_{day:04d}.csv")
    trained = train(model=MODEL)

    result = rebuild(version=trained.version, model=MODEL)

    assert result.identical  # the extra row is among the evaluation rows: training saw the same rows
    assert (result.evaluation_rows_recorded, result.evaluation_rows_rebuilt) == (225, 226)
    assert not result.rows_match
    assert result.likely_causes[0].startswith("the lineage's data gave 675 training and 226 evaluation rows")
    assert "ROWS DIFFER" in latest_artifact(f"rebuild-{MODEL}-v{trained.version}")


def test_a_feature_column_only_an_unlabelled_newer_snapshot_holds_is_rebuilt_as_the_run_had_it(
    mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The churn contract gains a feature column (0.2.0) with its newest batch, whose labels are
    not in yet. Training read that snapshot too: every labelled row had the new column, missing.
    The rebuild reads only the snapshots that gave rows (0.1.0): it must still fit the model
    with the column, not fail with "training rows lack feature column(s)" (exit 2)."""
    contracts, _ = churn_files(tmp_path, monkeypatch)
    settings = get_settings()
    store = make_store(settings)
    for batch in range(4):
        if batch == 3:
            (contracts / "churn_customers.yaml").write_text(
                CUSTOMERS.replace("version: 0.1.0", "version: 0.2.0")
                + "  - {name: discount, role: feature, dtype: float, min: 0, max: 100, nullable: true}\n"
            )
        customers_c = load_contract(settings.contracts_dir, "churn_customers")
        customers, labels = _customers(batch, 300)
        if batch == 3:
            customers["discount"] = (customers["tenure_months"] % 7).astype(float)
        ingest(store, customers, customers_c, f"customers/{batch}.csv")
        if batch < 3:
            ingest(
                store, labels, load_contract(settings.contracts_dir, "churn_labels"), f"labels/{batch}.csv"
            )
    trained = train(model="churn-risk")

    result = rebuild(version=trained.version, model="churn-risk")

    assert result.identical and result.rows_match, result.likely_causes
    assert result.application_snapshots == 3
