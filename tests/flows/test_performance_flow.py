"""measure_performance under the Prefect harness: table artifact, idempotent rerun, the hook
``mlops outcomes`` calls (``join_outcomes_after_ingest``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from mlops.audit import open_audit_store
from mlops.cli import main
from mlops.performance import join_outcomes_after_ingest
from mlops.settings import get_settings
from mlops.storage import make_store
from tasks.performance import performance_artifact_key
from tests.review_helpers import KEY, MODEL, append, contracts, outcome_snapshot, predictions

pytestmark = [pytest.mark.flows, pytest.mark.timeout(120)]


def test_outcomes_meet_predictions_in_a_flow(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", KEY)  # the key the trail was written with
    settings = get_settings()
    engine = open_audit_store(settings)
    append(engine, predictions("b" * 64, ["APP-1", "APP-2", "APP-3"], [0.8, 0.2, 0.6]), "b1")
    engine.dispose()
    _, outcomes = contracts()
    outcome_snapshot(make_store(settings), outcomes, {"APP-1": 1, "APP-2": 0, "APP-9": 1})

    report = join_outcomes_after_ingest(MODEL)  # what `mlops outcomes` calls
    data, text = report.model_dump(mode="json"), report.summary_text()

    assert data["join"]["matched_predictions"] == 2 and data["join"]["unmatched_outcomes"] == 1
    [champion] = data["rows"]
    assert (champion["model_version"], champion["role"], champion["n"]) == ("3", "champion", 2)
    assert champion["auc"] == 1.0 and champion["decision_accuracy"] == 1.0
    assert "1 outcome id(s) without a prediction" in text and "v3 champion: n=2" in text

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[performance_artifact_key(MODEL)])),
            limit=1,
        )
    assert artifact.type == "table" and "champion" in str(artifact.data)

    again = join_outcomes_after_ingest(MODEL).model_dump(mode="json")
    assert (again["join"]["inserted"], again["join"]["unchanged"]) == (0, 2)
    assert again["rows"] == data["rows"]


def test_mlops_outcomes_reports_performance(
    mlops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", KEY)
    engine = open_audit_store(get_settings())
    append(engine, predictions("c" * 64, ["APP-1", "APP-2"], [0.7, 0.1]), "b1")
    engine.dispose()
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "application_id,observed_at,defaulted\nAPP-1,2026-03-05T00:00:00Z,1\nAPP-2,2026-03-01T00:00:00Z,0\n"
    )

    assert main(["outcomes", str(path), "--model", MODEL, "--json"]) == 0

    out = capsys.readouterr().out
    data = json.loads(out.strip().splitlines()[-1])
    assert data["performance"]["join"]["matched_predictions"] == 2
    assert data["performance"]["rows"][0]["decision_accuracy"] == 1.0
    assert "2 prediction(s) with outcomes" in out and "warning" not in out  # the join, in the text

    # A later batch says APP-2 defaulted after all, observed at the same time: a conflict. Its
    # data is older than the first batch's (which holds APP-1 on 03-05), so ordering batches by
    # their data would let the first batch win the tie.
    conflicting = tmp_path / "outcomes-2.csv"
    conflicting.write_text("application_id,observed_at,defaulted\nAPP-2,2026-03-01T00:00:00Z,1\n")
    assert main(["outcomes", str(conflicting), "--model", MODEL, "--json"]) == 0
    out = capsys.readouterr().out
    performance = json.loads(out.strip().splitlines()[-1])["performance"]
    assert performance["join"]["conflicting_outcomes"] == 1 and performance["join"]["updated"] == 1
    assert "warning: 1 application id(s) have outcomes with different labels" in out
    # The correction, ingested last, decides the tie: APP-2 (score 0.1, approved) defaulted.
    assert performance["rows"][0]["decision_accuracy"] == 0.5
