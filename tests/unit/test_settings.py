"""Process-wide choices of the settings (Arrow's memory pool, MLflow's S3 endpoint) and where
MLflow keeps the models of the experiments we create."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from mlops.registry import make_registry
from mlops.settings import Settings, apply_process_settings, export_mlflow_s3_endpoint, flow_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


@pytest.mark.parametrize("pool", ["jemalloc", "system", "mimalloc"])
def test_each_flow_start_sets_the_configured_arrow_pool(monkeypatch: pytest.MonkeyPatch, pool: str) -> None:
    if pool not in pa.supported_memory_backends():
        pytest.skip(f"this pyarrow has no {pool}")
    monkeypatch.setenv("MLOPS_ARROW_MEMORY_POOL", pool)
    pa.set_memory_pool(pa.system_memory_pool() if pool != "system" else pa.mimalloc_memory_pool())
    apply_process_settings(Settings())
    assert pa.default_memory_pool().backend_name == pool


def test_the_default_is_jemalloc_and_arrows_own_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().arrow_memory_pool == "jemalloc"
    pa.set_memory_pool(pa.system_memory_pool())
    assert flow_settings().arrow_memory_pool == "jemalloc"  # what every flow starts with
    assert pa.default_memory_pool().backend_name == "jemalloc"
    pa.set_memory_pool(pa.system_memory_pool())
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    apply_process_settings(Settings())
    assert pa.default_memory_pool().backend_name == "system"


def test_an_unknown_pool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_ARROW_MEMORY_POOL", "tcmalloc")
    with pytest.raises(ValidationError, match="arrow_memory_pool"):
        Settings()


@pytest.mark.parametrize(
    ("tracking", "store", "expected"),
    [
        (None, None, "<home>/mlartifacts"),  # embedded: SQLite, a local folder
        ("sqlite:////tmp/x/mlflow.db", "s3://bucket/mlops", "<home>/mlartifacts"),  # a laptop on S3
        ("http://mlflow:5000", "s3://bucket/mlops", None),  # the server decides
        ("https://mlflow.example.com", None, None),
        ("postgresql+psycopg2://u@db/mlflow", "s3://bucket/mlops/", "s3://bucket/mlops/mlflow-artifacts"),
        ("postgresql://u@db/mlflow", None, "<home>/mlartifacts"),  # no shared store to put them in
    ],
)
def test_models_are_kept_where_every_host_can_read_them(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tracking: str | None,
    store: str | None,
    expected: str | None,
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    for var, value in (("MLOPS_MLFLOW_TRACKING_URI", tracking), ("MLOPS_STORE_URL", store)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    settings = Settings()
    want = expected.replace("<home>", str(settings.home_dir)) if expected else None
    assert settings.mlflow_artifact_root == want


def test_mlflows_s3_endpoint_follows_ours_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    make_registry(Settings())  # every use of MLflow goes through a registry from the settings
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")  # the operator's own choice wins
    export_mlflow_s3_endpoint(Settings())
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_the_cli_names_a_bad_setting_by_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops.cli import main

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_MAX_QUARANTINE_SHARE", "7")
    assert main(["review", "list", "--json"]) == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error.startswith("invalid setting(s): MLOPS_MAX_QUARANTINE_SHARE:") and "'7'" in error


@pytest.mark.parametrize(
    ("url", "fix"),
    [("S3://bucket/prefix", "write s3:// in lower case"), ("gs://bucket/p", "only s3:// and local paths")],
)
def test_a_store_url_of_another_scheme_is_refused_not_made_a_local_folder(url: str, fix: str) -> None:
    with pytest.raises(ValidationError, match=fix):
        Settings(store_url=url)
    assert Settings(store_url="s3://bucket/p").store_url == "s3://bucket/p"
    assert Settings(store_url="relative/store").store_url == "relative/store"


@pytest.mark.parametrize("uri", ["mlflow.db", "http//mlflow:5000", "file:///tmp/mlruns", "gs://b/mlflow"])
def test_a_tracking_uri_mlflow_would_read_as_a_file_store_is_refused(uri: str) -> None:
    """MLflow reads these as folders of its unmaintained file store and fails on first use with
    a message about migrating one; the setting is refused up front, naming what it takes."""
    with pytest.raises(ValidationError, match=r"neither a database URL .* nor an MLflow server"):
        Settings(mlflow_tracking_uri=uri)
    for good in ("sqlite:///x/mlflow.db", "postgresql+psycopg2://u@db/m", "https://mlflow.example.com"):
        assert Settings(mlflow_tracking_uri=good).mlflow_tracking_uri == good
    assert (
        Settings(mlflow_tracking_uri="HTTPS://m.example.com").mlflow_tracking_uri == "https://m.example.com"
    )
    assert Settings(audit_db_url="SQLITE:///a.db").audit_db_url == "sqlite:///a.db"  # SQLAlchemy's case


@pytest.mark.parametrize(
    "url", ["mysql://u@db/m", "postgresql+psycopg://u@db/m", "postgresql+nosuch://u@db/m"]
)
def test_a_database_url_whose_driver_is_not_installed_is_refused(url: str) -> None:
    """It would pass until first used, then fail every command with No module named ... (exit 3)."""
    for field in ("mlflow_tracking_uri", "audit_db_url"):
        with pytest.raises(ValidationError, match="database driver is not installed"):
            Settings(**{field: url})


def test_a_postgres_url_without_a_driver_uses_the_installed_one() -> None:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed."""
    settings = Settings(
        mlflow_tracking_uri="postgresql://u@db:5432/mlflow", audit_db_url="postgres://u@db/audit"
    )
    assert settings.mlflow_tracking_uri == "postgresql+psycopg2://u@db:5432/mlflow"
    assert settings.audit_db_url == "postgresql+psycopg2://u@db/audit"
    assert (
        Settings(audit_db_url="postgresql+psycopg2://u@db/a").audit_db_url == "postgresql+psycopg2://u@db/a"
    )


def test_home_that_is_a_file_is_named(tmp_path: Path) -> None:
    from mlops.errors import SettingsError
    from mlops.settings import ensure_home

    (tmp_path / "f").write_text("x")
    with pytest.raises(SettingsError, match="cannot be used as the product's home"):
        ensure_home(Settings(home=tmp_path / "f"))
    assert ensure_home(Settings(home=tmp_path / "new" / "home")).is_dir()  # created if missing


@pytest.mark.parametrize("key", ["", "   "])
def test_production_refuses_a_blank_entity_hash_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """`export MLOPS_ENTITY_HASH_KEY=$SECRET` with SECRET unset sets it to "": every keyed hash of
    an application id would then be computable by anyone; refused like the demo key."""
    from mlops.errors import SettingsError

    production = {
        "profile": "production",
        "store_url": "s3://bucket/mlops",
        "mlflow_tracking_uri": "http://mlflow:5000",
        "audit_db_url": "postgresql://u@db/audit",
    }
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", key)
    with pytest.raises(SettingsError, match="MLOPS_ENTITY_HASH_KEY is set but blank"):
        Settings(**production)
    monkeypatch.setenv("MLOPS_ENTITY_HASH_KEY", "a-secret-of-our-own")
    assert Settings(**production).entity_hash_key.get_secret_value() == "a-secret-of-our-own"


def test_a_misspelled_variable_is_refused_in_production_with_the_name_it_resembles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``MLOPS_AUDIT_URL`` (for MLOPS_AUDIT_DB_URL) was silently ignored: the embedded SQLite
    store stayed in use, on a host meant to use PostgreSQL."""
    from mlops.errors import SettingsError
    from mlops.settings import get_settings

    monkeypatch.setenv("MLOPS_PROFILE", "production")
    monkeypatch.setenv("MLOPS_AUDIT_URL", "postgresql://x/y")
    with pytest.raises(SettingsError) as caught:
        get_settings()
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(
        "unknown variable MLOPS_AUDIT_URL (did you mean MLOPS_AUDIT_DB_URL?)"
    )


def test_a_misspelled_variable_is_a_warning_once_in_the_embedded_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops.settings import get_settings

    monkeypatch.setenv("MLOPS_PROFILE", "embedded")
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_AUDIT_URL", "postgresql://x/y")
    monkeypatch.setattr("mlops.settings._warned_unknown", set())
    assert get_settings().resolved_audit_db_url.startswith("sqlite:")
    get_settings()
    err = capsys.readouterr().err
    assert err.count("unknown variable MLOPS_AUDIT_URL (did you mean MLOPS_AUDIT_DB_URL?)") == 1


def test_every_mlops_variable_the_product_reads_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings fields (as pydantic-settings names them) and the variables read elsewhere pass."""
    from mlops.errors import SettingsError
    from mlops.promotion import CRASH_AFTER_ENV
    from mlops.settings import OTHER_MLOPS_VARIABLES, get_settings, known_mlops_variables

    assert CRASH_AFTER_ENV in OTHER_MLOPS_VARIABLES
    known = known_mlops_variables()
    for name in (
        "MLOPS_EVENT_CONFIRM_SECONDS",
        "MLOPS_APPROVAL_TIMEOUT_SECONDS",
        "MLOPS_APPROVAL_POLL_SECONDS",
        "MLOPS_ARROW_MEMORY_POOL",
        "MLOPS_TEST_PG_URL",
    ):
        assert name in known
    for name in ("MLOPS_PROMOTION_CRASH_AFTER", "MLOPS_TEST_PG_URL", "mlops_approval_poll_seconds"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    with pytest.raises(SettingsError, match="The production profile is not fully configured"):
        get_settings()  # refused for what production lacks, not for these variables
