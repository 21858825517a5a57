"""One typed settings object, read from ``MLOPS_*`` environment variables at run time.

Nothing here runs at import time: call :func:`get_settings` when a command starts, and
:func:`flow_settings` (which also makes the process-wide choices) when a flow starts.
The embedded profile keeps everything under ``MLOPS_HOME`` (default ``.mlops/``); the
production profile expects PostgreSQL URLs and an S3 bucket.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlops.errors import SettingsError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_SPECS_DIR: Final = PROJECT_ROOT / "model_specs"


ApprovalPolicy = Literal["auto", "manual"]


#: Database URL schemes (``scheme+driver`` too) of the tracking and audit stores.
_DATABASE_SCHEMES: Final = ("sqlite", "postgresql", "mysql", "mssql")


def _require_driver(url: str) -> None:
    """Refuse a database URL whose SQLAlchemy dialect or driver is not installed here."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ValueError(
            f"its database driver is not installed ({exc}); this product installs psycopg2 for "
            "PostgreSQL (postgresql://...) and uses Python's sqlite3 (sqlite:///...)"
        ) from exc


class Settings(BaseSettings):
    """Where things live and how the product behaves; every field is ``MLOPS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    profile: Literal["embedded", "production"] = Field(
        "embedded",
        description="embedded: one laptop, SQLite and a local folder; production: PostgreSQL and S3.",
    )
    home: Path = Field(Path(".mlops"), description="Root folder of the embedded profile's state.")
    store_url: str | None = Field(
        None,
        description="Object store: a local folder path or s3://bucket[/prefix]. Default: <home>/store.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (moto's server, MinIO); unset for AWS."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI. Default: SQLite under <home>."
    )
    audit_db_url: str | None = Field(
        None, description="SQLAlchemy URL of the audit and review store. Default: SQLite under <home>."
    )
    contracts_dir: Path = Field(
        PROJECT_ROOT / "data_contracts", description="Folder of data contract YAML files."
    )
    max_quarantine_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Override of the contract's max_quarantine_share (reject above it).",
    )
    arrow_memory_pool: Literal["jemalloc", "system", "mimalloc"] = Field(
        "jemalloc",
        description=(
            "Arrow's allocator, set by each flow at its start (ARROW_DEFAULT_MEMORY_POOL, if set, "
            "wins). pyarrow's default, mimalloc, read 1M rows of snapshots here in twice the time of "
            "jemalloc or the system allocator in a fresh process."
        ),
    )
    entity_hash_key: SecretStr = Field(
        SecretStr("embedded-demo-key-change-me"),
        description="Secret key for keyed hashes of entity ids (audit trail, canary arms).",
    )
    model_specs_dir: Path = Field(DEFAULT_MODEL_SPECS_DIR, description="Folder of model spec YAML files.")
    # Promotion: who may approve and how.
    approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Names allowed to approve a promotion (MLOPS_APPROVERS, comma-separated).",
    )
    reviewers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Names allowed to resolve review cases (MLOPS_REVIEWERS, comma-separated); "
        "empty: any named reviewer.",
    )
    promotion_approval: ApprovalPolicy | None = Field(
        None,
        description="auto: the policy approves and records it; manual: an allowed approver decides "
        "(Prefect UI form, or --approver). Default: auto in embedded, manual in production.",
    )
    approval_timeout_seconds: int = Field(
        3600, ge=1, description="How long a paused promote run waits for the approval form."
    )
    approval_poll_seconds: int = Field(10, ge=1, description="How often a paused run checks for an answer.")
    event_confirm_seconds: float = Field(
        30.0,
        ge=0.0,
        description="How long the monitor waits to read back from the Prefect API an event that "
        "triggers a deployment (drift alarm, shadow completed) before it fails the run rather than "
        "mark the windows judged; 0: do not wait.",
    )
    promotion_min_shadow_rows: int | None = Field(
        None,
        ge=1,
        description="Override of the model spec's shadow.min_labelled_rows: fewest labelled shadow "
        "rows a challenger is compared on (else refused).",
    )

    @field_validator("approvers", "reviewers", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str | None) -> str | None:
        """``s3://`` or a local path: another scheme (``S3://``, ``gs://``) would silently
        become a local folder of that name in the working directory."""
        if value is not None and "://" in value and not value.startswith("s3://"):
            scheme = value.split("://", 1)[0]
            fix = (
                "write s3:// in lower case"
                if scheme.lower() == "s3"
                else "only s3:// and local paths are supported"
            )
            raise ValueError(f"unknown scheme {scheme + '://'!r}: {fix}")
        return value

    @field_validator("mlflow_tracking_uri", "audit_db_url")
    @classmethod
    def _installed_database_driver(cls, value: str | None) -> str | None:
        """The scheme in lower case; ``postgresql://`` (or ``postgres://``) with no driver named
        means the installed one, psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, not installed);
        and a database URL's driver must import here, or every command using it would fail on
        first use with ``No module named ...`` (exit 3)."""
        if value is None or "://" not in value:
            return value
        scheme, rest = value.split("://", 1)
        scheme = scheme.lower()
        if scheme in ("postgresql", "postgres"):
            scheme = "postgresql+psycopg2"
        value = f"{scheme}://{rest}"
        if scheme.split("+", 1)[0] in _DATABASE_SCHEMES:
            _require_driver(value)
        return value

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_scheme(cls, value: str | None) -> str | None:
        """A database URL or an MLflow server: MLflow reads anything else (``mlflow.db``,
        ``http//host``) as a folder for its file store, which it no longer maintains, and says so
        only when first used, in words about migrating a file store."""
        if value is None:
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme.split("+", 1)[0] not in (*_DATABASE_SCHEMES, "http", "https"):
            raise ValueError(
                "neither a database URL (sqlite:///path/mlflow.db, postgresql://...) "
                "nor an MLflow server (http://host:5000)"
            )
        return value

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        if self.profile != "production":
            return self
        problems = []
        tracking, audit = self.mlflow_tracking_uri, self.audit_db_url
        if not tracking or not tracking.startswith(("postgresql", "http")):  # schemes: lower case
            problems.append(
                f"MLOPS_MLFLOW_TRACKING_URI must be an MLflow server (http://...) or PostgreSQL (got {tracking!r})"
            )
        if not audit or not audit.startswith("postgresql"):
            problems.append(f"MLOPS_AUDIT_DB_URL must be PostgreSQL (postgresql://...) (got {audit!r})")
        if not (self.store_url or "").startswith("s3://"):
            problems.append(f"MLOPS_STORE_URL must be s3://bucket[/prefix] (got {self.store_url!r})")
        key = self.entity_hash_key.get_secret_value()
        if key == "embedded-demo-key-change-me":
            problems.append("MLOPS_ENTITY_HASH_KEY must be set to a secret of your own")
        elif not key.strip():
            # `export MLOPS_ENTITY_HASH_KEY=$SECRET` with SECRET unset: an empty HMAC key, so
            # anyone could key an application id and find it in the audit trail.
            problems.append("MLOPS_ENTITY_HASH_KEY is set but blank: give it a secret of your own")
        if problems:
            raise SettingsError(
                "The production profile is not fully configured: " + "; ".join(problems),
                hint="set the variables above, or use MLOPS_PROFILE=embedded",
            )
        return self

    def allowed_reviewers(self) -> list[str]:
        """Who may resolve review cases (empty: any named reviewer). The production profile
        needs the list: a regulated decision is reviewed by someone named in advance."""
        if self.profile == "production" and not self.reviewers:
            raise SettingsError(
                "the production profile needs MLOPS_REVIEWERS to resolve review cases",
                hint="set MLOPS_REVIEWERS to the comma-separated people allowed to resolve them",
            )
        return list(self.reviewers)

    @property
    def approval_policy(self) -> ApprovalPolicy:
        """``promotion_approval`` if set, else manual in production and auto in embedded."""
        if self.promotion_approval is not None:
            return self.promotion_approval
        return "manual" if self.profile == "production" else "auto"

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or str(self.home_dir / "store")

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str | None:
        """Where experiments this product creates keep their artifacts (the models).

        - an MLflow server (``http(s)://``): None, the server decides (``--artifacts-destination``);
        - a tracking database (``postgresql://`` ...) with an ``s3://`` object store: beside the
          snapshots, ``<store>/mlflow-artifacts``, so every host loads the same models (MLflow's
          own default, ``./mlruns``, would be the disk of whichever worker created the experiment);
        - otherwise (SQLite, a laptop): ``<home>/mlartifacts``.
        """
        uri = self.resolved_mlflow_tracking_uri
        if uri.startswith(("http://", "https://")):
            return None
        local = uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri
        store = self.resolved_store_url
        if not local and store.startswith("s3://"):
            return f"{store.rstrip('/')}/mlflow-artifacts"
        return str(self.home_dir / "mlartifacts")

    @property
    def resolved_audit_db_url(self) -> str:
        return self.audit_db_url or f"sqlite:///{self.home_dir / 'audit.db'}"

    @property
    def reports_dir(self) -> Path:
        """Human-readable reports (GX Data Docs, drift reports) of the embedded profile."""
        return self.home_dir / "reports"


#: ``MLOPS_*`` variables that are read, but are no :class:`Settings` field: the promote flow's
#: crash switch for recovery tests (``mlops.promotion.CRASH_AFTER_ENV``) and the tests' PostgreSQL.
OTHER_MLOPS_VARIABLES: Final = frozenset({"MLOPS_PROMOTION_CRASH_AFTER", "MLOPS_TEST_PG_URL"})

_warned_unknown: set[str] = set()  # the embedded profile warns of each unknown variable once


def known_mlops_variables() -> list[str]:
    """Every ``MLOPS_*`` name this product reads: the settings fields (as pydantic-settings reads
    them: env prefix + field name, or a field's string alias) and :data:`OTHER_MLOPS_VARIABLES`."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = set(OTHER_MLOPS_VARIABLES)
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names.add((alias or f"{prefix}{name}").upper())
    return sorted(names)


def check_unknown_variables(environ: Mapping[str, str] | None = None) -> None:
    """Name every ``MLOPS_*`` variable that nothing reads (a misspelling: ``MLOPS_AUDIT_URL`` for
    ``MLOPS_AUDIT_DB_URL`` would otherwise leave the embedded store in use without a word), with
    the closest known name. The production profile refuses (SettingsError); the embedded profile
    prints the same text as a warning on stderr, once per process, and goes on. Names are
    compared in upper case, as pydantic-settings reads them."""
    env = os.environ if environ is None else environ
    known = known_mlops_variables()
    problems = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith("MLOPS_") or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1)
        problems.append(f"unknown variable {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    if not problems:
        return
    text = "; ".join(problems) + ": no setting of this product has that name"
    profile = next((v for k, v in env.items() if k.upper() == "MLOPS_PROFILE"), "embedded")
    if profile.strip() == "production":
        raise SettingsError(text, hint="correct or unset it (the README's settings table lists them)")
    if text not in _warned_unknown:
        _warned_unknown.add(text)
        print(f"warning: {text}", file=sys.stderr)


def get_settings() -> Settings:
    """Read the settings now (environment at call time, never cached at import); an ``MLOPS_*``
    variable that is no setting is refused in production, warned of otherwise
    (:func:`check_unknown_variables`)."""
    check_unknown_variables()
    return Settings()


def flow_settings() -> Settings:
    """How each flow starts: read the settings and make their process-wide choices; in the
    embedded profile, everything lives under MLOPS_HOME, so a home that cannot be one is
    named now (:func:`ensure_home`) rather than by the first step that writes into it."""
    settings = get_settings()
    apply_process_settings(settings)
    if settings.profile == "embedded":
        ensure_home(settings)
    return settings


def export_mlflow_s3_endpoint(settings: Settings) -> None:
    """MLflow reads its S3 endpoint only from ``MLFLOW_S3_ENDPOINT_URL``: set it from ours, unless
    set. Every use of MLflow goes through a registry made from the settings, which calls this."""
    if settings.s3_endpoint_url and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url


def apply_process_settings(settings: Settings) -> None:
    """Make the process-wide choices the settings hold (each flow, through :func:`flow_settings`).

    Today that is Arrow's memory pool (:attr:`Settings.arrow_memory_pool`), unless the process
    was started with ``ARROW_DEFAULT_MEMORY_POOL``. A pool this pyarrow build lacks keeps the
    default. Buffers already allocated keep the pool they came from, so calling this again is safe.
    (MLflow's S3 endpoint is set where MLflow is reached: ``MlflowRegistry.from_settings``.)
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    pools = {
        "jemalloc": pa.jemalloc_memory_pool,
        "system": pa.system_memory_pool,
        "mimalloc": pa.mimalloc_memory_pool,
    }
    try:
        pa.set_memory_pool(pools[settings.arrow_memory_pool]())
    except NotImplementedError:  # not built into this pyarrow
        return


def ensure_home(settings: Settings) -> Path:
    """``MLOPS_HOME``, created if missing; SettingsError naming it when it cannot be (a file of
    that name, a read-only or missing parent) or cannot be written to."""
    home = settings.home_dir
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"MLOPS_HOME {home} cannot be used as the product's home: {exc.strerror or exc}",
            hint="point MLOPS_HOME at a folder you can write to (it is created if missing)",
        ) from exc
    if not os.access(home, os.W_OK | os.X_OK):
        raise SettingsError(
            f"MLOPS_HOME {home} is not writable",
            hint="point MLOPS_HOME at a folder you can write to (it is created if missing)",
        )
    return home
