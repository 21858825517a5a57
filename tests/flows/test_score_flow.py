"""score_batch, audit verify and reproduce under the Prefect harness with a real MLflow registry.

One module-scoped setup: a champion trained by the train tasks and promoted by the recorded
bootstrap (version 1), and a deliberately different booster registered as challenger
(version 2). Each test gets its own audit store.
"""

from __future__ import annotations

import json
import py_compile
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy.engine import Engine

from flows.reproduce import reproduce
from flows.score_batch import score_batch
from mlops.audit import audit_records, count_open_cases, create_audit_engine, entity_key, list_open_cases
from mlops.cli import main
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.contracts import load_contract
from mlops.errors import StorageIntegrityError, WorkRefused
from mlops.lineage import TAG_MODEL_FILES_SHA256
from mlops.model_spec import load_model_spec, model_spec_hash
from mlops.promotion import bootstrap_champion
from mlops.registry import TrainingRunLog, make_registry
from mlops.scoring import (
    RECORD_SCORING_BATCH,
    RECORD_SCORING_DONE,
    ROLE_CANARY,
    ROLE_CHAMPION,
    ROLE_SHADOW,
    canary_mask,
    decide,
    decision_policy_hash,
    load_model_version,
)
from mlops.scoring_resume import RECORD_SCORING_RESUMED, find_resume_point
from mlops.settings import get_settings
from mlops.storage import make_store, read_snapshot
from mlops.training import train_booster
from mlops.validation import finalise_valid, type_batch
from tests.training_helpers import ingest_history, run_train_tasks, simulated_day, write_spec

pytestmark = pytest.mark.flows

MODEL = "credit-risk"
CANARY = 0.3


@dataclass(frozen=True)
class Setup:
    batch_a: Path  # 300 new applications
    batch_b: Path  # 150 of batch A's applications again + 150 new ones
    rejected: Path


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path, prefect_harness: None
) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("scoring")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLOPS_PROFILE", "embedded")
        for var in ("MLOPS_STORE_URL", "MLOPS_AUDIT_DB_URL", "MLOPS_S3_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        shutil.copy(_migrated_mlflow_db, home / "mlflow.db")
        mp.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv("MLOPS_MODEL_SPECS_DIR", str(root / "specs"))
        write_spec(root / "specs")
        write_spec(root / "specs", name="credit-risk-new")  # a spec with no registered model
        settings = get_settings()
        apps_c = load_contract(settings.contracts_dir, "credit_applications")
        outs_c = load_contract(settings.contracts_dir, "credit_outcomes")
        ingest_history(make_store(settings), apps_c, outs_c, days=4, rows=400)

        registry = make_registry(settings)
        assert run_train_tasks(MODEL).version == 1
        assert bootstrap_champion(registry, MODEL, approved_by="scoring-tests").champion_version == 1
        # Version 2: a shallower, shorter booster on other days, registered as challenger.
        spec = load_model_spec(MODEL)
        apps, outs = simulated_day(8, 800, seed=99)
        typed, _ = type_batch(apps, apps_c)
        frame = finalise_valid(typed, apps_c).assign(defaulted=outs["defaulted"].to_numpy())
        params = {**spec.booster_params(), "max_depth": 2}
        trained = train_booster(
            frame, features=spec.feature_list, target="defaulted", params=params, num_boost_round=15
        )
        logged = registry.log_training_run(
            TrainingRunLog(
                model_name=MODEL,
                run_name="scoring-test-challenger",
                booster_json=trained.booster_bytes(),
                schema_json=trained.schema.to_json(),
                params=params,
                metrics={},
            )
        )
        version = registry.register_version(MODEL, logged, {})
        registry.set_alias(MODEL, ALIAS_CHALLENGER, version)
        assert version == 2 and registry.get_alias_version(MODEL, ALIAS_CHAMPION) == 1

        a, _ = simulated_day(20, 300, seed=5)
        new, _ = simulated_day(21, 150, seed=5)
        b = pd.concat([a.iloc[::2], new], ignore_index=True)
        bad = a.copy()
        bad["region"] = bad["region"].astype(str)
        bad.loc[:59, "region"] = "atlantis"
        paths = Setup(root / "a.parquet", root / "b.parquet", root / "bad.parquet")
        a.to_parquet(paths.batch_a)
        b.to_parquet(paths.batch_b)
        bad.to_parquet(paths.rejected)
        yield paths


@pytest.fixture
def engine(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A fresh audit store for this test (the registry and the object store are shared)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("MLOPS_AUDIT_DB_URL", url)
    eng = create_audit_engine(url)
    yield eng
    eng.dispose()


def records_of(engine: Engine, batch_id: str) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_records)
            .where(audit_records.c.batch_id == batch_id, audit_records.c.record_type == "prediction")
            .order_by(audit_records.c.seq)
        ).all()
    return pd.DataFrame([dict(r._mapping) for r in rows])


def batch_record_of(engine: Engine, batch_id: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as conn:
        [row] = conn.execute(
            sa.select(audit_records).where(
                audit_records.c.batch_id == batch_id, audit_records.c.record_type == RECORD_SCORING_BATCH
            )
        ).all()
    return dict(row._mapping)


def last_json(out: str) -> dict:  # type: ignore[type-arg]
    return json.loads(out.strip().splitlines()[-1])


def test_champion_decides_and_the_shadow_never_changes_a_decision(setup: Setup, engine: Engine) -> None:
    result = score_batch(source=str(setup.batch_a))
    assert result.accepted and result.rows_scored == 300
    assert (result.champion_version, result.challenger_version) == (1, 2)
    assert result.shadow_rows == 300 and result.audit_records_written == 600 and result.canary_rows == 0
    assert 0.0 <= (result.shadow_agreement or 0.0) <= 1.0 and (result.shadow_mean_abs_score_diff or 0) > 0

    records = records_of(engine, result.batch_id)
    champion = records[records["role"] == ROLE_CHAMPION].sort_values("input_row").reset_index(drop=True)
    shadow = records[records["role"] == ROLE_SHADOW].sort_values("input_row").reset_index(drop=True)
    assert len(champion) == len(shadow) == 300 and set(records["role"]) == {ROLE_CHAMPION, ROLE_SHADOW}
    assert (champion["model_version"] == "1").all() and (shadow["model_version"] == "2").all()

    # Champion-only scoring of the same snapshot gives exactly the recorded decisions.
    settings = get_settings()
    spec = load_model_spec(MODEL)
    [sha] = result.snapshots
    rows = read_snapshot(make_store(settings), dataset="credit_applications", kind="valid", sha256=sha)
    alone = load_model_version(make_registry(settings), MODEL, 1).score(rows)
    expected = decide(spec.decision_policy, alone, rows["loan_amount"])
    assert np.array_equal(champion["score"].to_numpy(), alone)
    assert champion["decision"].tolist() == expected.decision.tolist()
    assert champion["review_routed"].tolist() == expected.routed.tolist()
    assert not shadow["review_routed"].any()
    assert result.decisions == champion["decision"].value_counts().sort_index().to_dict()

    # The rule behind the decisions is in the chain, written before the batch's predictions.
    batch = batch_record_of(engine, result.batch_id)
    assert batch["seq"] < records["seq"].min() and batch["model_name"] == MODEL
    assert batch["payload"]["decision_policy_sha256"] == decision_policy_hash(spec.decision_policy)
    assert batch["payload"]["decision_policy"] == spec.decision_policy.model_dump(mode="json")
    assert batch["payload"]["model_spec_sha256"] == model_spec_hash(spec)
    assert (batch["payload"]["champion_version"], batch["payload"]["challenger_version"]) == (1, 2)
    assert batch["payload"]["input_snapshots"] == result.snapshots

    # Routed rows opened review cases, one per routed deciding record.
    cases = list_open_cases(engine, MODEL)
    routed_ids = set(champion.loc[champion["review_routed"], "record_id"])
    assert result.routed_to_review == result.review_cases_opened == len(cases) == len(routed_ids) > 0
    assert {c.case_id for c in cases} == routed_ids

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"scoring-{MODEL}"]))
        )
    assert arts and any("same decision as champion" in str(a.data) for a in arts)


def test_canary_entities_are_decided_by_the_challenger_in_every_batch(setup: Setup, engine: Engine) -> None:
    first = score_batch(source=str(setup.batch_a), canary_share=CANARY, chunk_rows=64)
    second = score_batch(source=str(setup.batch_b), canary_share=CANARY, chunk_rows=64)
    assert first.canary_active and first.canary_share_realised == pytest.approx(CANARY, abs=0.1)

    arms = []
    for result in (first, second):
        records = records_of(engine, result.batch_id)
        deciding = records[records["role"] != ROLE_SHADOW].set_index("entity_key")
        assert deciding.index.is_unique and len(deciding) == result.rows_scored
        canary = deciding[deciding["role"] == ROLE_CANARY]
        assert (canary["model_version"] == "2").all() and (canary["model_alias"] == ALIAS_CHALLENGER).all()
        assert (deciding.loc[deciding["role"] == ROLE_CHAMPION, "model_version"] == "1").all()
        assert len(canary) == result.canary_rows
        arms.append(deciding["role"] == ROLE_CANARY)
    both = arms[0].index.intersection(arms[1].index)
    assert len(both) == 150
    assert (arms[0][both] == arms[1][both]).all()  # the same entity stays in its arm
    keys = entity_key(pd.read_parquet(setup.batch_a)["application_id"], get_settings().entity_hash_key)
    assert arms[0][keys].tolist() == canary_mask(keys.tolist(), CANARY).tolist()


def test_audit_verify_and_reproduce_then_tamper(
    setup: Setup, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    result = score_batch(source=str(setup.batch_a), canary_share=CANARY)
    assert result.notes == []  # the policy and contract its versions were trained under
    records = records_of(engine, result.batch_id)
    champion_id = records.loc[records["role"] == ROLE_CHAMPION, "record_id"].iloc[7]
    canary_id = records.loc[records["role"] == ROLE_CANARY, "record_id"].iloc[0]

    again = reproduce(prediction_id=str(canary_id))
    recorded = records.set_index("record_id").loc[canary_id, "score"]
    assert again.reproduced and again.model_version == 2 and again.score_recomputed == recorded
    assert again.model_uri == f"models:/{MODEL}/2"

    assert main(["reproduce", str(champion_id).upper(), "--json"]) == 0  # the id as some tools print it
    out = capsys.readouterr().out
    data = last_json(out)
    assert data["reproduced"] and data["score_recorded_hex"] == data["score_recomputed_hex"]
    assert "IDENTICAL" in out and data["model_uri"] == f"models:/{MODEL}/1"
    assert data["decision_policy_source"] == "recorded with the batch" and data["decision_matches"]

    head_file = setup.batch_a.parent / "off-site" / "head.json"
    assert main(["audit", "verify", "--json", "--export-anchor", str(head_file)]) == 0
    # The predictions and the batch's scoring_batch and scoring_done records.
    out = capsys.readouterr().out
    verified = last_json(out)
    assert verified["records_checked"] == result.audit_records_written + 2
    assert "no anchor checked: records deleted from the end" in out  # nothing vouched for the end yet
    opened = result.review_cases_opened
    assert opened > 0 and f"review cases: {opened} checked against 0 review record(s)" in out
    assert verified["exported_anchor"] == str(head_file)
    assert json.loads(head_file.read_text())["seq"] == verified["last_seq"]
    assert main(["audit", "verify", "--json", "--anchor-file", str(head_file)]) == 0  # the head vouched for
    out = capsys.readouterr().out
    assert last_json(out)["anchors_checked"] == 1 and "no anchor checked" not in out

    with engine.begin() as conn:  # a case marked resolved in the table, with no review in the chain
        conn.exec_driver_sql(
            "UPDATE review_cases SET status = 'resolved', decision = 'approve', reviewer = 'x' "
            "WHERE case_id = (SELECT min(case_id) FROM review_cases WHERE status = 'open')"
        )
    assert main(["audit", "verify", "--json"]) == 1
    out = capsys.readouterr().out
    assert "review cases: " in out and "-> 1 DISAGREE with the chain" in out
    assert last_json(out)["cases"]["problems"][0]["problem"].endswith(
        "the chain holds no review record of it"
    )

    seq = int(records.set_index("record_id").loc[champion_id, "seq"])
    with engine.begin() as conn:  # an attacker with DDL rights edits one score
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_update")
        conn.execute(
            sa.text("UPDATE audit_records SET score = score + 0.001 WHERE record_id = :rid"),
            {"rid": champion_id},
        )
    assert main(["audit", "verify", "--json"]) == 1
    out = capsys.readouterr().out
    brk = last_json(out)["first_break"]
    assert brk["seq"] == seq and brk["kind"] == "edited" and brk["record_id"] == champion_id
    assert f"BROKEN at seq {seq} (edited)" in out

    assert main(["reproduce", str(champion_id), "--json"]) == 1
    data = last_json(capsys.readouterr().out)
    assert not data["reproduced"] and not data["record_intact"] and not data["identical"]


def test_a_decision_policy_changed_since_training_is_said(
    setup: Setup,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    specs = tmp_path / "specs"
    spec = yaml.safe_load((get_settings().model_specs_dir / f"{MODEL}.yaml").read_text())
    spec["decision_policy"] = {**spec["decision_policy"], "threshold": 0.3, "review_band": [0.25, 0.35]}
    specs.mkdir()
    (specs / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("MLOPS_MODEL_SPECS_DIR", str(specs))

    assert main(["score", str(setup.batch_a), "--json"]) == 0  # said, not refused
    out = capsys.readouterr().out
    [note] = last_json(out)["notes"]  # v1 decides; v2 (untagged) only shadows
    assert note.startswith(f"the decision policy of model spec {MODEL} is not the one version 1 was trained")
    assert f"note: {note}" in out


def champion_files() -> Path:
    """The folder where MLflow keeps the files of the champion (version 1)."""
    client = make_registry(get_settings()).client
    model_id = client.get_model_version(MODEL, "1").source.removeprefix("models:/")  # m-...
    return Path(urlparse(client.get_logged_model(model_id).artifact_location).path)


@pytest.mark.parametrize(
    ("file", "edit"),
    [
        ("booster.json", lambda data: data.replace(b'"', b' "', 1)),  # one byte more: still loadable
        ("mlops_xgboost_model.py", lambda data: data + b"\n# model code changed in the store\n"),
        ("MLmodel", None),  # a file added beside it (a module the changed code could import)
    ],
)
def test_a_model_file_changed_in_the_artifact_store_is_refused(
    setup: Setup,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    file: str,
    edit: Callable[[bytes], bytes] | None,
) -> None:
    result = score_batch(source=str(setup.batch_a))
    records = records_of(engine, result.batch_id)
    champion_id = str(records.loc[records["role"] == ROLE_CHAMPION, "record_id"].iloc[0])
    [changed] = champion_files().rglob(file)
    if edit is None:
        changed = changed.parent / "extra_module.py"
        original = None
        changed.write_text("PLANTED = True\n")
    else:
        original = changed.read_bytes()
        changed.write_bytes(edit(original))
    try:
        assert main(["score", str(setup.batch_b), "--json"]) == 1
        data = last_json(capsys.readouterr().out)
        assert data["error"].startswith(f"model {MODEL} version 1: its files in the artifact store hash to")
        assert "restore the version's artifacts" in data["hint"]
        assert main(["reproduce", champion_id, "--json"]) == 1  # not "IDENTICAL" from the same swapped file
        assert "not to what was registered with the version" in last_json(capsys.readouterr().out)["error"]
    finally:
        if original is None:
            changed.unlink()
        else:
            changed.write_bytes(original)
    assert main(["reproduce", champion_id, "--json"]) == 0


def test_a_version_whose_files_are_gone_from_the_artifact_store_is_named_not_a_crash(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = champion_files()
    moved = folder.with_name(folder.name + ".moved")
    folder.rename(moved)
    try:
        assert main(["score", str(setup.batch_b), "--json"]) == 1  # exit 1, not 3 (a crash)
        data = last_json(capsys.readouterr().out)
        assert data["error"].startswith(
            f"the files of model {MODEL} version 1 are missing from MLflow's artifact store"
        )
        assert "restore the version's artifacts" in data["hint"]
    finally:
        moved.rename(folder)


def test_a_version_registered_before_the_files_digest_is_checked_by_its_fingerprint(
    setup: Setup, engine: Engine
) -> None:
    """Without the files tag, the booster + schema fingerprint training tagged is what holds."""
    registry = make_registry(get_settings())
    files_tag = registry.version_tags(MODEL, 1)[TAG_MODEL_FILES_SHA256]
    registry.client.delete_model_version_tag(MODEL, "1", TAG_MODEL_FILES_SHA256)
    [booster] = champion_files().rglob("booster.json")
    original = booster.read_bytes()
    try:
        assert score_batch(source=str(setup.batch_a)).rows_scored == len(pd.read_parquet(setup.batch_a))
        booster.write_bytes(original.replace(b'"', b' "', 1))
        with pytest.raises(StorageIntegrityError, match="its files in the artifact store hash to"):
            score_batch(source=str(setup.batch_b))
    finally:
        booster.write_bytes(original)
        registry.set_version_tags(MODEL, 1, {TAG_MODEL_FILES_SHA256: files_tag})


def test_a_byte_code_cache_planted_beside_the_model_code_never_runs(
    setup: Setup, engine: Engine, tmp_path: Path
) -> None:
    """A ``.pyc`` compiled unchecked would run instead of the checked source: the download's
    caches are deleted before the check, so the planted code never runs; and the download is
    removed once the model is loaded."""
    [code] = champion_files().rglob("mlops_xgboost_model.py")
    marker, planted = tmp_path / "planted-code-ran", tmp_path / "mlops_xgboost_model.py"
    planted.write_text(code.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    cache = code.parent / "__pycache__"
    cache.mkdir(exist_ok=True)
    py_compile.compile(
        str(planted),
        cfile=str(cache / f"mlops_xgboost_model.{sys.implementation.cache_tag}.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    downloads = set(Path(tempfile.gettempdir()).glob("mlops-model-*"))
    try:
        result = score_batch(source=str(setup.batch_a))
    finally:
        shutil.rmtree(cache)
    assert result.rows_scored == len(pd.read_parquet(setup.batch_a)) and not marker.exists()
    assert set(Path(tempfile.gettempdir()).glob("mlops-model-*")) <= downloads  # none left behind
    assert not any("mlops-model-" in entry for entry in sys.path)


def test_cli_score_exit_codes(
    setup: Setup, engine: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["score", str(setup.batch_b), "--canary-share", "0.2", "--json"]) == 0
    data = last_json(capsys.readouterr().out)
    assert data["ok"] and data["rows_scored"] == 300 and data["audit_records_written"] == 600

    assert main(["score", str(setup.rejected), "--json"]) == 1
    out = capsys.readouterr().out
    data = last_json(out)
    assert not data["ok"] and not data["accepted"] and data["rows_scored"] == 0
    assert data["validation"]["reason_counts"] == {"region:unseen_category": 60}
    assert len(records_of(engine, data["batch_id"])) == 0
    text = out.strip().splitlines()[:-1]  # the lines before the JSON line
    assert "quarantine reasons: region:unseen_category 60" in text
    assert f"quarantined rows (with their reasons): {data['validation']['quarantine_uri']}" in text

    _, outcomes = simulated_day(20, 50, seed=5)  # outcomes given to score: the file is wrong
    outcomes_file = tmp_path / "outcomes.parquet"
    outcomes.to_parquet(outcomes_file)
    assert main(["score", str(outcomes_file), "--json"]) == 2
    hint = last_json(capsys.readouterr().out)["hint"]
    assert hint == "mlops score takes a batch of applications; a batch of outcomes goes to mlops outcomes"

    assert main(["score", str(setup.batch_a), "--model", "credit-risk-new", "--json"]) == 1
    captured = capsys.readouterr()
    assert "run mlops train and mlops promote first" in captured.err
    assert "no model named 'credit-risk-new' is registered" in last_json(captured.out)["error"]
    with pytest.raises(WorkRefused, match=r"no model named 'credit-risk-new' .*registered: 'credit-risk'"):
        score_batch(source=str(setup.batch_a), model="credit-risk-new")

    assert main(["score", str(setup.batch_a), "--canary-share", "1.5"]) == 2
    assert main(["reproduce", "not-a-uuid", "--json"]) == 2
    assert "mlops audit find APPLICATION_ID" in last_json(capsys.readouterr().out)["hint"]


def open_case_keys(engine: Engine) -> set[str]:
    return {str(c.entity_key) for c in list_open_cases(engine, MODEL)}


def decided_keys(engine: Engine, batch_id: str) -> set[str]:
    records = records_of(engine, batch_id)
    return set(records.loc[records["role"] != ROLE_SHADOW, "entity_key"])


def assert_one_open_case_per_application(engine: Engine) -> None:
    keys = [c.entity_key for c in list_open_cases(engine, MODEL)]
    assert None not in keys and len(keys) == len(set(keys))


def test_the_same_rows_are_not_scored_twice_without_rescore(
    setup: Setup, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    first = score_batch(source=str(setup.batch_a))
    cases = count_open_cases(engine)
    assert cases > 0 and len(records_of(engine, first.batch_id)) == 600

    # The same file again (an operator's re-run, a re-fired schedule): refused, nothing written.
    assert main(["score", str(setup.batch_a), "--json"]) == 1
    captured = capsys.readouterr()
    error = last_json(captured.out)["error"]
    assert f"already scored by credit-risk: batch {first.batch_id} scored the same valid rows" in error
    assert "nothing was scored" in error
    assert "--rescore" in captured.err
    with engine.connect() as conn:
        kinds = conn.execute(
            sa.select(audit_records.c.record_type, sa.func.count()).group_by(audit_records.c.record_type)
        ).all()
    # The refused run wrote nothing: the first batch's records only (opened and closed).
    assert dict(kinds) == {"prediction": 600, RECORD_SCORING_BATCH: 1, RECORD_SCORING_DONE: 1}
    assert count_open_cases(engine) == cases

    # Rows partly seen before are a new batch (entity-level repeats are not refused); a repeated
    # application routed again has one open case, the new one.
    open_before = open_case_keys(engine)
    partly = score_batch(source=str(setup.batch_b))
    assert partly.rows_scored == 300
    decided_again = decided_keys(engine, partly.batch_id)  # routed again or not: the latest decision
    assert partly.review_cases_superseded == len(open_before & decided_again) > 0
    assert_one_open_case_per_application(engine)

    # On purpose: scored again, and the batch record names the batch it repeats.
    open_before = open_case_keys(engine)
    assert main(["score", str(setup.batch_a), "--rescore", "--json"]) == 0
    again = last_json(capsys.readouterr().out)
    assert again["rows_scored"] == 300 and len(records_of(engine, again["batch_id"])) == 600
    assert batch_record_of(engine, again["batch_id"])["payload"]["rescore_of"] == [first.batch_id]
    superseded = open_before & decided_keys(engine, again["batch_id"])
    assert again["review_cases_superseded"] == len(superseded) > 0
    assert_one_open_case_per_application(engine)
    assert main(["audit", "verify", "--json"]) == 0
    capsys.readouterr()


def test_review_list_and_show_give_a_scored_cases_application_and_inputs_never_its_gender(
    setup: Setup, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    result = score_batch(source=str(setup.batch_a))
    assert result.review_cases_opened > 0
    batch = pd.read_parquet(setup.batch_a).set_index("application_id")
    assert main(["review", "list", "--all", "--json"]) == 0
    cases = last_json(capsys.readouterr().out)["cases"]
    assert len(cases) == result.review_cases_opened
    for case in cases:  # the id read from the snapshot is the application the case was keyed by
        applied = case["application_id"]
        assert entity_key(pd.Series([applied]), get_settings().entity_hash_key)[0] == case["entity_key"]
        assert case["inputs"]["loan_amount"] == pytest.approx(batch.loc[applied, "loan_amount"])
        assert case["inputs"]["gender"] == "withheld (sensitive attribute)"
        assert case["proposed_decision"] == ("decline" if case["score"] >= 0.25 else "approve")
    case = cases[0]
    applied, row = case["application_id"], batch.loc[case["application_id"]]
    assert main(["review", "list", "--all"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith(case["case_id"])]
    assert f"application {applied}  proposed {case['proposed_decision']}" in line

    assert main(["review", "show", case["case_id"]]) == 0
    out = capsys.readouterr().out
    values = dict(x.split(None, 1) for x in out.splitlines() if x.startswith("    "))
    assert values["application_id"] == applied and values["region"] == row["region"]
    assert values["employment_type"] == row["employment_type"] and values["age"] == str(row["age"])
    assert values["gender"] == "withheld (sensitive attribute)" and row["gender"] not in out.split()
    assert f"model        {MODEL} v1 champion" in out and "(recorded with the batch)" in out
    assert f"mlops review resolve {case['case_id']} --reviewer WHO" in out


def test_audit_find_goes_from_an_application_id_to_its_predictions_and_review(
    setup: Setup, engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = score_batch(source=str(setup.batch_a), canary_share=CANARY)
    again = score_batch(source=str(setup.batch_a), canary_share=CANARY, rescore=True)
    ids = pd.read_parquet(setup.batch_a)["application_id"].astype(str)
    keys = entity_key(ids, get_settings().entity_hash_key)
    before = records_of(engine, first.batch_id).set_index("entity_key")
    after = records_of(engine, again.batch_id).set_index("entity_key")
    deciding_before = before[before["role"] != ROLE_SHADOW]
    routed = deciding_before.index[deciding_before["review_routed"].astype(bool)]
    position = int(np.flatnonzero(keys.isin(routed))[0])
    app_id, key = ids.iloc[position], keys.iloc[position]
    old_case = str(deciding_before.loc[key, "record_id"])
    new_case = str(after.loc[(after.index == key) & (after["role"] != ROLE_SHADOW), "record_id"].iloc[0])
    assert (
        main(["review", "resolve", new_case, "--reviewer", "ana", "--decision", "decline", "--reason", "r"])
        == 0
    )
    capsys.readouterr()

    assert main(["audit", "find", app_id, "--json"]) == 0
    out = capsys.readouterr().out
    data = last_json(out)
    records = {r["record_id"]: r for r in data["records"]}
    expected = {str(i) for i in pd.concat([before.loc[[key], "record_id"], after.loc[[key], "record_id"]])}
    predictions = {i for i, r in records.items() if r["record_type"] == "prediction"}
    assert predictions == expected and len(expected) == 4  # deciding + shadow, in both batches
    assert [r["seq"] for r in data["records"]] == sorted(r["seq"] for r in data["records"])
    assert records[old_case]["case_status"] == "superseded"
    assert records[old_case]["case_superseded_by"] == new_case
    assert records[new_case]["case_status"] == "resolved" and records[new_case]["reviewer"] == "ana"
    assert records[new_case]["outcome"] == "decided by a reviewer"
    [review] = [r for r in data["records"] if r["record_type"] == "review"]
    assert review["decision"] == "decline" and review["seq"] > records[new_case]["seq"]
    now = data["current"][MODEL]
    assert (now["decision"], now["decided_by"], now["reviewer"]) == ("decline", "reviewer", "ana")
    assert now["prediction"]["record_id"] == new_case and now["review_record_id"] == review["record_id"]
    assert review["case_id"] == new_case and review["reviewer"] == "ana"
    assert all(
        r["outcome"] == "shadow: decided nothing" for r in records.values() if r["role"] == ROLE_SHADOW
    )
    assert f"mlops reproduce {new_case}" in out and "decline, by reviewer ana" in out

    # An application routed in no batch: decided by the model, the latest batch's record current.
    plain = int(
        np.flatnonzero(~keys.isin(routed) & ~keys.isin(after.index[after["review_routed"].astype(bool)]))[0]
    )
    assert main(["audit", "find", ids.iloc[plain], "--model", MODEL, "--json"]) == 0
    current = last_json(capsys.readouterr().out)["current"][MODEL]
    assert current["decided_by"] == "model" and current["decision"] in ("approve", "decline")
    assert current["prediction"]["batch_id"] == again.batch_id and current["open_cases"] == []

    # Not found: another model, an unknown id, the right id under another hash key (exit 1).
    assert main(["audit", "find", app_id, "--model", "credit-risk-new", "--json"]) == 1
    assert last_json(capsys.readouterr().out)["found"] == 0
    assert main(["audit", "find", "no-such-application"]) == 1
    assert "MLOPS_ENTITY_HASH_KEY" in capsys.readouterr().out
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", "another-key")
    assert main(["audit", "find", app_id, "--json"]) == 1
    assert main(["audit", "find", " ", "--json"]) == 2
    capsys.readouterr()


def fail_once_at_chunk(monkeypatch: pytest.MonkeyPatch, chunk: int) -> list[int]:
    """The audit append of the ``chunk``-th chunk (1-based) fails once, like a full disk or a
    dropped connection mid-batch; every other append is the real one."""
    import mlops.audit

    real = mlops.audit.append_encoded
    calls: list[int] = []

    def append(engine: Engine, encoded: object, **kwargs: Any) -> object:
        calls.append(1)
        if len(calls) == chunk:
            raise OSError("disk I/O error (injected)")
        return real(engine, encoded, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mlops.audit, "append_encoded", append)
    return calls


def deciding_rows(records: pd.DataFrame) -> pd.Series:
    deciding = records[records["role"].isin([ROLE_CHAMPION, ROLE_CANARY])]
    return deciding.groupby(["input_snapshot", "input_row"]).size()


def _batch_a_stopped_at_chunk_2(setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> str:
    """Batch A scored 100 rows a chunk with a canary, failing once at its second chunk; its batch id."""
    fail_once_at_chunk(monkeypatch, chunk=2)
    with pytest.raises(OSError, match="injected"):
        score_batch(source=str(setup.batch_a), chunk_rows=100, canary_share=CANARY)
    with engine.connect() as conn:
        [batch_id] = conn.execute(
            sa.select(audit_records.c.batch_id).where(audit_records.c.record_type == RECORD_SCORING_BATCH)
        ).scalars()
    return str(batch_id)


def test_a_batch_that_failed_part_way_is_finished_by_resume_with_one_decision_per_row(
    setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    batch_id = _batch_a_stopped_at_chunk_2(setup, engine, monkeypatch)
    first = records_of(engine, batch_id)
    assert len(first) == 200 and sorted(first["input_row"].unique()) == list(range(100))
    cases_before = count_open_cases(engine)

    # Scoring the file again is refused, and says the batch did not finish and how to finish it.
    assert main(["score", str(setup.batch_a), "--json"]) == 1
    captured = capsys.readouterr()
    assert f"batch {batch_id} began scoring the same valid rows" in last_json(captured.out)["error"]
    assert "--resume" in captured.err

    # Resumed with another canary share asked: the batch's own share (and versions) are used.
    assert main(["score", str(setup.batch_a), "--resume", "--json"]) == 0
    out = capsys.readouterr().out
    done = last_json(out)
    assert done["resumed"] and done["batch_id"] == batch_id and done["canary_share_requested"] == CANARY
    assert (done["rows_already_scored"], done["rows_scored"]) == (100, 200)
    assert f"resumed batch {batch_id}: 100 rows were written by an earlier run" in out

    records = records_of(engine, batch_id)
    assert len(records) == 600 and (deciding_rows(records) == 1).all() and len(deciding_rows(records)) == 300
    # The resumed rows are decided exactly as one uninterrupted run decides them.
    [sha] = done["snapshots"]
    keys = entity_key(
        read_snapshot(make_store(get_settings()), dataset="credit_applications", kind="valid", sha256=sha)[
            "application_id"
        ],
        get_settings().entity_hash_key,
    )
    canary_rows = set(np.flatnonzero(canary_mask(keys.tolist(), CANARY)).tolist())
    canary = records[records["role"] == ROLE_CANARY]
    assert set(canary["input_row"]) == canary_rows and (canary["model_version"] == "2").all()
    routed = records[records["review_routed"]]
    assert count_open_cases(engine) == len(routed) > cases_before
    assert {c.case_id for c in list_open_cases(engine, MODEL)} == set(routed["record_id"])

    with engine.connect() as conn:
        kinds = dict(
            conn.execute(
                sa.select(audit_records.c.record_type, sa.func.count())
                .where(audit_records.c.record_type != "prediction")
                .group_by(audit_records.c.record_type)
            ).all()
        )
        closing = conn.execute(
            sa.select(audit_records.c.payload).where(audit_records.c.record_type == RECORD_SCORING_DONE)
        ).scalar_one()
    assert kinds == {RECORD_SCORING_BATCH: 1, RECORD_SCORING_RESUMED: 1, RECORD_SCORING_DONE: 1}
    assert (closing["rows_written_before"], closing["rows_scored"]) == (100, 200)
    assert main(["audit", "verify", "--json"]) == 0
    resumed_row = records.loc[(records["role"] == ROLE_CHAMPION) & (records["input_row"] >= 100), "record_id"]
    assert main(["reproduce", str(resumed_row.iloc[0]), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["reproduced"]

    # A Prefect retry of the resuming run (same flow run id) finds the batch it finished: done.
    with engine.connect() as conn:
        [resumer] = [
            str(p["resumed_by"])
            for p in conn.execute(
                sa.select(audit_records.c.payload).where(
                    audit_records.c.record_type == RECORD_SCORING_RESUMED
                )
            ).scalars()
        ]
    again = find_resume_point(engine, model_name=MODEL, batch_id=resumer, snapshots=[sha], resume=True)
    assert again is not None and again.completed and again.batch_id == batch_id

    # Finished now: nothing to resume, and nothing written by asking.
    assert main(["score", str(setup.batch_a), "--resume", "--json"]) == 1
    captured = capsys.readouterr()
    assert "nothing to resume" in last_json(captured.out)["error"] and "--rescore" in captured.err
    assert len(records_of(engine, batch_id)) == 600
    assert main(["score", str(setup.batch_a), "--resume", "--rescore"]) == 2


def _one_row_dated_ahead(setup: Setup, name: str) -> tuple[pd.DataFrame, Path]:
    """Batch A with its row 5 dated ten minutes ahead (quarantined as in_future now), as ``name``."""
    raw = pd.read_parquet(setup.batch_a)
    raw.loc[5, "applied_at"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=10)
    source = setup.batch_a.parent / name
    raw.to_parquet(source)
    return raw, source


def _clock_an_hour_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation's clock an hour ahead (the row dated ahead would pass by it)."""
    import mlops.scoring_input

    class AnHourLater(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> AnHourLater:  # type: ignore[override]
            return cls.fromtimestamp(datetime.now(tz).timestamp() + 3600, tz)

    monkeypatch.setattr(mlops.scoring_input, "datetime", AnHourLater)


def test_a_resume_validates_the_source_as_of_the_batchs_first_validation(
    setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One application dated ten minutes ahead is quarantined (in_future) when the batch begins.
    A resume an hour later validates the file again: by its own clock that row would now be
    valid, the valid rows would differ and the half-decided batch could not be finished. It is
    validated as of the batch's recorded validation time instead."""
    raw, source = _one_row_dated_ahead(setup, "ahead.parquet")
    fail_once_at_chunk(monkeypatch, chunk=2)
    with pytest.raises(OSError, match="injected"):
        score_batch(source=str(source), chunk_rows=100)
    with engine.connect() as conn:
        [payload] = conn.execute(
            sa.select(audit_records.c.payload).where(audit_records.c.record_type == RECORD_SCORING_BATCH)
        ).scalars()
    began = datetime.fromisoformat(payload["validated_at"])

    _clock_an_hour_later(monkeypatch)
    assert main(["score", str(source), "--resume", "--json"]) == 0
    done = last_json(capsys.readouterr().out)
    in_future = 1  # quarantined, now as when the batch began
    assert done["resumed"] and done["rows_already_scored"] == 100
    assert done["rows_scored"] == len(raw) - in_future - 100
    assert done["validation"]["reason_counts"] == {"applied_at:in_future": 1}
    assert datetime.fromisoformat(done["validation"]["checked_at"]) == began


def test_a_resume_validates_as_of_its_own_batch_not_a_later_unfinished_one(
    setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another file's batch begun an hour later also stopped part way (or is still running):
    the resume of the first file validates it as of the first file's batch, not the latest
    unfinished one, whose clock would let the row dated ahead through (other snapshots: the
    resume would be refused as "nothing to resume")."""
    raw, source = _one_row_dated_ahead(setup, "ahead-then-another.parquet")
    fail_once_at_chunk(monkeypatch, chunk=2)
    with pytest.raises(OSError, match="injected"):
        score_batch(source=str(source), chunk_rows=100)

    _clock_an_hour_later(monkeypatch)
    fail_once_at_chunk(monkeypatch, chunk=2)
    with pytest.raises(OSError, match="injected"):
        score_batch(source=str(setup.batch_b), chunk_rows=100)

    assert main(["score", str(source), "--resume", "--json"]) == 0
    done = last_json(capsys.readouterr().out)
    assert done["resumed"] and done["rows_already_scored"] == 100
    assert done["validation"]["reason_counts"] == {"applied_at:in_future": 1}
    records = records_of(engine, done["batch_id"])
    assert len(deciding_rows(records)) == len(raw) - 1 and (deciding_rows(records) == 1).all()


def test_a_resume_under_another_entity_hash_key_is_refused(
    setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's shell lacks the worker's MLOPS_ENTITY_HASH_KEY: finishing the batch under
    another key would key its remaining applications apart from the rest (audit find, review
    cases) and choose their canary arm by another hash. Refused, nothing written."""
    batch_id = _batch_a_stopped_at_chunk_2(setup, engine, monkeypatch)
    original_key = get_settings().entity_hash_key
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", "another-key")
    assert main(["score", str(setup.batch_a), "--resume", "--json"]) == 2
    captured = capsys.readouterr()
    assert "another entity hash key" in last_json(captured.out)["error"]
    assert "MLOPS_ENTITY_HASH_KEY" in captured.err
    assert len(records_of(engine, batch_id)) == 200

    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", original_key.get_secret_value())
    assert main(["score", str(setup.batch_a), "--resume", "--json"]) == 0
    records = records_of(engine, batch_id)
    keys = entity_key(pd.read_parquet(setup.batch_a)["application_id"].astype(str), original_key)
    assert set(records["entity_key"]) == set(keys) and (deciding_rows(records) == 1).all()


def test_a_prefect_retry_of_a_failed_scoring_run_resumes_its_own_batch(
    setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fail_once_at_chunk(monkeypatch, chunk=2)
    result = score_batch.with_options(retries=1, retry_delay_seconds=0)(
        source=str(setup.batch_b), chunk_rows=100
    )
    assert len(calls) == 4  # chunks 1 and 2 (failed) of the first try, 2 and 3 of the retry
    assert result.resumed and (result.rows_already_scored, result.rows_scored) == (100, 200)
    assert result.batch_id == result.flow_run_id
    records = records_of(engine, result.batch_id)
    assert len(records) == 600 and (deciding_rows(records) == 1).all()
    assert count_open_cases(engine) == int(records["review_routed"].sum())
    assert batch_record_of(engine, result.batch_id)["payload"]["input_snapshots"] == result.snapshots


def test_reproduce_refuses_a_batch_record_edited_after_scoring(
    setup: Setup, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    result = score_batch(source=str(setup.batch_a))
    records = records_of(engine, result.batch_id)
    champion_id = records.loc[records["role"] == ROLE_CHAMPION, "record_id"].iloc[0]
    assert main(["reproduce", str(champion_id), "--json"]) == 0
    capsys.readouterr()

    with engine.begin() as conn:  # someone loosens the recorded policy to justify a decision
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_update")
        conn.execute(
            sa.text(
                "UPDATE audit_records SET payload = json_set(payload, '$.decision_policy.threshold', 0.99)"
                " WHERE record_type = :kind AND batch_id = :batch"
            ),
            {"kind": RECORD_SCORING_BATCH, "batch": result.batch_id},
        )
    assert batch_record_of(engine, result.batch_id)["payload"]["decision_policy"]["threshold"] == 0.99
    assert main(["reproduce", str(champion_id), "--json"]) == 2
    err = capsys.readouterr().err
    assert f"scoring_batch record of batch {result.batch_id} does not match its hash" in err
    assert "mlops audit verify" in err


def test_a_connection_dropped_mid_batch_is_named_with_how_to_finish_it(
    setup: Setup, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL's connection dropped mid-batch (pg_terminate_backend, a database restart) ended
    `mlops score` with "unexpected InterfaceError: connection already closed" (exit 3, "a bug"),
    with no word of --resume (reproduced on the production profile)."""
    from sqlalchemy.exc import InterfaceError

    import mlops.audit

    real = mlops.audit.append_encoded
    calls: list[int] = []

    def append(engine: Engine, encoded: object, **kwargs: Any) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise InterfaceError("ROLLBACK", {}, Exception("connection already closed"))
        return real(engine, encoded, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mlops.audit, "append_encoded", append)
    assert main(["score", str(setup.batch_a), "--chunk-rows", "100", "--json"]) == 2
    captured = capsys.readouterr()
    error = last_json(captured.out)
    assert (
        "stopped part way: the audit store's connection failed (connection already closed)" in error["error"]
    )
    assert f"mlops score {setup.batch_a} --resume" in error["hint"]
    monkeypatch.setattr(mlops.audit, "append_encoded", real)
    assert main(["score", str(setup.batch_a), "--resume", "--json"]) == 0
    done = last_json(capsys.readouterr().out)
    assert done["resumed"] and (done["rows_already_scored"], done["rows_scored"]) == (100, 200)
