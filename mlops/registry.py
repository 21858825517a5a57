"""The model registry behind a small interface, implemented on MLflow 3.

Aliases (``champion``, ``challenger``) and version tags only: never MLflow stages. Alias
lookups return ``int`` versions (MLflow 3.17 already does; we coerce anyway). The tracking and
registry URI come from the settings when the registry is built (at call time, never at import).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import pandas as pd

from mlops.errors import (
    InputError,
    ServiceUnavailable,
    SettingsError,
    StorageIntegrityError,
    WorkRefused,
)
from mlops.lineage import (
    NONE_VALUE,
    TAG_DECISION_RECORD_ID,
    TAG_VERDICT,
    TAG_VERDICT_FAILURES,
    model_fingerprint,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.pyfunc import PyFuncModel

    from mlops.settings import Settings

# Longest tag value we write for free text (MLflow allows more; keep the UI readable).
MAX_TEXT_TAG: Final = 5000


class RegistryUnavailable(ServiceUnavailable):
    """The MLflow registry could not be read (which is not "the model does not exist")."""


#: How long the first request to an MLflow server may take to be answered at all.
SERVER_ANSWER_SECONDS: Final = 10.0


def check_server_answers(tracking_uri: str, timeout: float = SERVER_ANSWER_SECONDS) -> None:
    """For an MLflow server (``http(s)://``): :class:`RegistryUnavailable` naming the setting if
    nothing answers at its address within ``timeout`` seconds (no server there, a wrong host or
    port); any HTTP answer, even an error, means someone is there. Database URIs pass.

    MLflow's own client retries a refused connection 7 times with backoff, about 4 minutes per
    request (measured here: 4 m 10 s for one lookup), so a wrong URI or a server that is down
    held ``mlops train`` for over 15 minutes before it said anything. Checked once, when a
    registry first opens its client; later requests keep MLflow's retries, which ride out a
    server restart during a run."""
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:  # it answered (auth, a proxy's 404): reachable
        return
    except (OSError, ValueError) as exc:  # refused, unresolvable, timed out, malformed
        reason = getattr(exc, "reason", exc)
        raise RegistryUnavailable(
            f"the MLflow registry at {tracking_uri} could not be read: nothing answered there ({reason})",
            hint="check MLOPS_MLFLOW_TRACKING_URI (the `mlflow server` address) and that the server is up",
        ) from exc


@dataclass
class DatasetLog:
    """A frame to record as an ``mlflow.data`` input of the run (schema + digest, not the rows)."""

    frame: pd.DataFrame
    name: str
    context: str  # "training" / "evaluation"
    source: str  # where the rows came from (store URI of the snapshots)
    target: str | None = None
    digest: str | None = None  # frame_digest(frame), if already computed (e.g. beside training)


@dataclass
class TrainingRunLog:
    """Everything a training run records in MLflow."""

    model_name: str
    run_name: str
    booster_json: bytes
    schema_json: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    json_artifacts: dict[str, Any] = field(default_factory=dict)  # artifact file -> JSON-able data
    files: list[Path] = field(default_factory=list)  # plots etc., logged under plots/
    datasets: list[DatasetLog] = field(default_factory=list)
    # Non-feature columns of the raw rows, optional in the model's signature.
    passthrough_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    model_uri: str  # models:/m-... (the logged model, before registration)
    artifact_uri: str  # the run's artifact root
    model_id: str | None = None  # m-...: a tracking server accepts a models:/ source only with it
    files_sha256: str | None = None  # model_files_sha256 of the model's files as logged


class ModelRegistry(Protocol):
    """What the pipelines need of a model registry."""

    def log_training_run(self, content: TrainingRunLog) -> LoggedRun: ...
    def register_version(self, name: str, logged: LoggedRun, tags: dict[str, str]) -> int: ...
    def set_alias(self, name: str, alias: str, version: int) -> None: ...
    def get_alias_version(self, name: str, alias: str) -> int | None: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> None: ...
    def version_tags(self, name: str, version: int) -> dict[str, str]: ...
    def version_run_id(self, name: str, version: int) -> str: ...
    def run_params(self, run_id: str) -> dict[str, str]: ...
    def aliases_of(self, name: str, version: int) -> list[str]: ...
    def mark_failed(
        self, name: str, version: int, *, verdict: str, failures: list[str], record_id: str
    ) -> None: ...
    def log_run_json(self, run_id: str, data: Any, artifact_file: str) -> str: ...
    def read_run_json(self, run_id: str, artifact_file: str) -> Any: ...
    def load_model(self, name: str, alias: str) -> PyFuncModel: ...
    def has_model(self, name: str) -> bool: ...
    def model_names(self) -> list[str]: ...


def require_registered_model(registry: ModelRegistry, name: str) -> None:
    """Refuse, naming the models the registry does hold, when ``name`` was never registered
    (a mistyped ``--model`` would otherwise read as "no champion" / "no challenger")."""
    if registry.has_model(name):
        return
    from mlops.model_spec import model_spec_names

    specs = model_spec_names()
    if name not in specs:  # no spec either: a mistyped --model (bad usage, exit 2)
        raise InputError(
            unregistered_message(registry, name) + ", and there is no model spec of that name",
            hint=f"check --model; model specs: {', '.join(specs) or 'none'}",
        )
    raise WorkRefused(
        unregistered_message(registry, name),
        hint=f"train it first (mlops train --model {name})",
    )


class IdenticalModel(WorkRefused):
    """A trained candidate is bit for bit a version the registry holds under an alias already."""


def refuse_identical(registry: ModelRegistry, name: str, fingerprint: str, spec_sha256: str) -> None:
    """Raise :class:`IdenticalModel` when the champion or the challenger has this model
    fingerprint (sha256 of booster + feature schema, tag ``mlops.lineage.model_fingerprint``)
    and was trained under the same model spec (a changed spec, say stricter gates, may judge
    the same booster differently: that candidate is registered and judged).

    Training is deterministic, so the same labelled rows, spec and code give the same model: a
    retrain set off by drift before any new outcome arrived would register a copy that then
    shadows for weeks and passes non-inferiority against itself."""
    from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
    from mlops.lineage import TAG_MODEL_FINGERPRINT, TAG_MODEL_SPEC_SHA256

    for alias in (ALIAS_CHAMPION, ALIAS_CHALLENGER):
        version = registry.get_alias_version(name, alias)
        tags = {} if version is None else registry.version_tags(name, version)
        if tags.get(TAG_MODEL_FINGERPRINT) == fingerprint and tags.get(TAG_MODEL_SPEC_SHA256) == spec_sha256:
            raise IdenticalModel(
                f"{name}: the candidate is bit for bit version {version} (the {alias}): the same labelled "
                "rows, model spec and code; nothing new to register",
                hint="a new model needs new labels: outcomes (mlops outcomes PATH) or resolved reviews",
            )


# Not the model's own files: Python's bytecode caches (written when the model's code is imported)
# and the name/version MLflow writes into a download by registered-model URI.
MODEL_FILES_SKIPPED: Final = ("__pycache__", "registered_model_meta")


def model_files_sha256(folder: Path) -> str:
    """sha256 over every file of a logged model's folder (MLmodel, code, requirements, booster,
    feature schema): each file's path relative to the folder and the sha256 of its bytes, in
    path order."""
    digest = hashlib.sha256()
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and not set(p.relative_to(folder).parts) & set(MODEL_FILES_SKIPPED)
    ]
    for path in sorted(files, key=lambda p: p.relative_to(folder).as_posix()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _booster_fingerprint(folder: Path) -> str | None:
    """sha256 of the booster + feature schema files (tag ``mlops.lineage.model_fingerprint``),
    for versions registered before the whole folder was digested; None if they are not there."""
    from mlops.pyfunc_model import BOOSTER_FILE, SCHEMA_FILE

    boosters, schemas = list(folder.rglob(BOOSTER_FILE)), list(folder.rglob(SCHEMA_FILE))
    if len(boosters) != 1 or len(schemas) != 1:
        return None
    return model_fingerprint(boosters[0].read_bytes(), schemas[0].read_bytes())


def check_model_files(label: str, folder: Path, tags: Mapping[str, str]) -> None:
    """Raise :class:`StorageIntegrityError` unless the downloaded files of a model version are
    the ones registered with it: all of them (tag ``mlops.lineage.model_files_sha256``), or,
    for a version registered before that tag, its booster and feature schema (tag
    ``mlops.lineage.model_fingerprint``). A version with neither tag is refused.

    MLflow keeps a version's files in its artifact store, which anyone who can write there can
    change: a swapped booster (or model code) would decide under the version's name, and its
    predictions would then "reproduce" from the same swapped files. The check reads the files
    itself; it never asks the loaded model."""
    from mlops.lineage import TAG_MODEL_FILES_SHA256, TAG_MODEL_FINGERPRINT

    expected, found = tags.get(TAG_MODEL_FILES_SHA256), None
    if expected:
        found = model_files_sha256(folder)
    else:
        expected = tags.get(TAG_MODEL_FINGERPRINT)
        if not expected:  # tags deleted (or registered outside mlops): nothing to hold the files to
            # Fails closed: every version mlops registers carries its digest from creation on,
            # and deleting two version tags (the MLflow UI offers it) must not be all it takes
            # for swapped files to decide, be compared with, or "reproduce" under this name.
            raise StorageIntegrityError(
                f"{label} carries neither {TAG_MODEL_FILES_SHA256} nor {TAG_MODEL_FINGERPRINT}: "
                "its files cannot be checked against what was registered; nothing was scored",
                hint="the version's digest tags were deleted, or it was registered outside mlops: "
                "restore the tags from the training run's lineage artifact, or train and register a new version",
            )
        found = _booster_fingerprint(folder)
    if found == expected:
        return
    raise StorageIntegrityError(
        f"{label}: its files in the artifact store "
        + (f"hash to {found[:16]}..." if found else "lack the booster or feature schema")
        + f", not to what was registered with the version ({expected[:16]}...); nothing was scored",
        hint="the model's files were changed after registration: restore the version's artifacts "
        "from a backup (or roll back to another version)",
    )


def server_artifacts_error(what: str, artifact_uri: str | None) -> SettingsError | None:
    """The refusal for files kept as ``mlflow-artifacts:`` URIs (logged through an ``mlflow
    server`` with ``--artifacts-destination``) while MLflow's tracking URI is not that server:
    only the server can read them, and MLflow says so as an unexpected MlflowException about
    its own variables. None for any other URI, or when the client is on an http(s) server."""
    import mlflow

    if not (artifact_uri or "").startswith("mlflow-artifacts:"):
        return None
    if mlflow.get_tracking_uri().startswith(("http://", "https://")):
        return None
    return SettingsError(
        f"{what} are served by the MLflow server ({artifact_uri}): a client on the registry's "
        "database cannot read them",
        hint="set MLOPS_MLFLOW_TRACKING_URI to the mlflow server's http:// URL",
    )


def _model_artifact_uri(model_uri: str) -> str | None:
    """Where MLflow downloads ``models:/...`` from (the version's artifact URI); None if unknown."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    try:
        return str(ModelsArtifactRepository.get_underlying_uri(model_uri))
    except Exception:  # only used to explain a failed download: keep MLflow's own error then
        return None


@contextmanager
def checked_download(model_uri: str, label: str, tags: Mapping[str, str]) -> Iterator[Path]:
    """A model version's files, downloaded and checked (:func:`check_model_files`), in a folder
    removed on exit (with any entry MLflow's code path put on ``sys.path`` from it).

    Python byte-code caches in the download are deleted first: they are not covered by the
    digest, and a ``.pyc`` compiled unchecked would run instead of the checked source."""
    import mlflow
    from mlflow.exceptions import MlflowException

    folder = Path(tempfile.mkdtemp(prefix="mlops-model-"))
    try:
        missing = None
        try:
            mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                served = server_artifacts_error(f"the files of {label}", _model_artifact_uri(model_uri))
                if served is not None:
                    raise served from exc
                raise
            missing = exc.message
        if missing is not None or not any(p.is_file() for p in folder.rglob("*")):
            raise StorageIntegrityError(  # a folder gone downloads as nothing, or as MLflow's error
                f"the files of {label} are missing from MLflow's artifact store"
                + (f" ({missing})" if missing else ""),
                hint="restore the version's artifacts from a backup, or use another version",
            )
        for cache in [p for p in folder.rglob("__pycache__") if p.is_dir()]:
            shutil.rmtree(cache)
        check_model_files(label, folder, tags)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        sys.path[:] = [entry for entry in sys.path if not entry.startswith(str(folder))]  # MLflow's code path


def load_checked_model(model_uri: str, label: str, tags: Mapping[str, str]) -> PyFuncModel:
    """Load a model from exactly the files :func:`checked_download` checked, then remove them
    (our model holds its booster and schema in memory once loaded; a long-running worker would
    otherwise gather a copy per load)."""
    from mlops.pyfunc_model import load_pyfunc

    with checked_download(model_uri, label, tags) as folder:
        return load_pyfunc(str(folder))


def unregistered_message(registry: ModelRegistry, name: str) -> str:
    """ "no model named ... is registered", with the names the registry does hold."""
    known = registry.model_names()
    listing = ", ".join(repr(n) for n in known[:20]) if known else "none yet"
    return f"no model named {name!r} is registered in the MLflow registry (registered: {listing})"


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list | tuple):
        out[prefix] = ",".join(str(v) for v in value)
    else:
        out[prefix] = NONE_VALUE if value is None else str(value)


def flatten_params(params: dict[str, Any]) -> dict[str, str]:
    """Nested params -> ``a.b.c`` keys with string values (MLflow params are strings)."""
    out: dict[str, str] = {}
    _flatten("", params, out)
    return out


# MLflow infers a dataset's schema cell by cell over every row (about 10 s per 100k rows here,
# most of the train flow's overhead at 1M rows). Our rows passed their contract and have one
# dtype per column, so the schema of a sample is the schema of the whole frame.
SCHEMA_SAMPLE_ROWS = 500


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest of a frame: column names and order, dtypes, every value, row order.

    MLflow's own digest maps every cell through Python (about 1.3 s per 400k rows here), and
    pandas' row hashes cost ~0.9 s per 1M rows. Here each column's values are hashed as raw
    buffers with sha256 (hardware-accelerated): numbers and datetimes as their fixed-width
    bytes, categoricals as codes plus their categories, text as its lengths (nulls marked) plus
    its concatenated bytes, so the digest does not depend on how the column is chunked or
    where it came from. Anything else falls back to pandas' vectorised row hashes."""
    import hashlib

    digest = hashlib.sha256()
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        digest.update(f"{frame.columns[position]}\x00{column.dtype}\x00".encode())
        for part in _column_parts(column):
            digest.update(part.nbytes.to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()[:16]


def _column_parts(column: pd.Series) -> list[Any]:
    """A column's content as contiguous buffers (see :func:`frame_digest`)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        codes = np.ascontiguousarray(column.cat.codes.to_numpy())
        return [codes, *_column_parts(pd.Series(dtype.categories))]
    if isinstance(dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert(None)
        dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        return [np.ascontiguousarray(column.to_numpy()).view(np.uint8)]
    if pd.api.types.is_string_dtype(dtype):  # pandas text, or object columns holding text
        try:
            converted = pa.array(column, type=pa.large_string())  # zero-copy for Arrow-backed text
            text = converted.combine_chunks() if isinstance(converted, pa.ChunkedArray) else converted
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # an object column holding non-text
            text = None
        if text is not None:
            lengths = pc.binary_length(text).fill_null(-1).to_numpy(zero_copy_only=False)
            offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[
                text.offset : text.offset + len(text) + 1
            ]
            data = text.buffers()[2]
            body = memoryview(b"" if data is None else data)[offsets[0] : offsets[-1]]
            return [lengths.view(np.uint8), body]
    if pd.api.types.is_extension_array_dtype(dtype) and dtype.kind in "biuf":  # masked: Int64, Float64
        mask = column.isna().to_numpy()
        values = column.to_numpy(dtype=dtype.numpy_dtype, na_value=0)
        return [mask.view(np.uint8), np.ascontiguousarray(values).view(np.uint8)]
    rows = pd.util.hash_pandas_object(column, index=False, categorize=False)
    return [rows.to_numpy().view(np.uint8)]


def _set_schema_from_sample(data: Any, frame: Any) -> None:
    """Give an mlflow PandasDataset the schema inferred from a sample (its ``schema`` is cached)."""
    try:
        from mlflow.types.schema import ColSpec, Schema
        from mlflow.types.utils import _infer_schema
    except ImportError:  # private helper moved: fall back to MLflow's own (slow) inference
        return
    try:
        sample = _infer_schema(frame.head(SCHEMA_SAMPLE_ROWS))
        has_missing = frame.isna().any()  # "required" depends on every row, and is cheap
        data.__dict__["schema"] = Schema(
            [
                ColSpec(type=c.type, name=c.name, required=not bool(has_missing[c.name]))  # type: ignore[arg-type]
                for c in sample.inputs
            ]
        )
    except Exception:  # MLflow itself logs no schema when it cannot infer one
        data.__dict__["schema"] = None


class MlflowRegistry:
    """:class:`ModelRegistry` on an MLflow tracking server / registry (SQLite, PostgreSQL, HTTP)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        """``artifact_root``: where experiments created here keep their artifacts (None: the
        tracking server's default); see :attr:`Settings.mlflow_artifact_root`."""
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> MlflowRegistry:
        if settings is None:
            from mlops.settings import get_settings

            settings = get_settings()
        from mlops.settings import export_mlflow_s3_endpoint

        export_mlflow_s3_endpoint(settings)  # models on s3:// are read and written through it
        return cls(settings.resolved_mlflow_tracking_uri, settings.mlflow_artifact_root)

    def _activate(self) -> None:
        """Point MLflow's fluent API (used by log_model) at our URI, now."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            check_server_answers(self.tracking_uri)
            self._activate()
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def warm_up(self, model_name: str) -> None:
        """Do ahead what the first log / lookup would do: import MLflow, open the tracking store
        (engine, schema check) and create the model's experiment.

        Every step fills a cache that the later calls use anyway, so running this in a
        background thread while the data is gathered takes those seconds off the critical path.
        """
        import mlflow.data.pandas_dataset
        import mlflow.pyfunc  # noqa: F401

        self.ensure_experiment(model_name)

    # --- runs ------------------------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """The experiment named after the model; created with a local artifact root if embedded."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def log_training_run(self, content: TrainingRunLog) -> LoggedRun:
        import mlflow
        import mlflow.data.pandas_dataset

        from mlops.features import FeatureSchema
        from mlops.pyfunc_model import log_pyfunc_model

        experiment_id = self.ensure_experiment(content.model_name)
        self._activate()
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=content.run_name, tags=content.tags
        ) as run:
            mlflow.log_params(flatten_params(content.params))
            mlflow.log_metrics(content.metrics)
            for dataset in content.datasets:
                # Silence MLflow's schema-inference hints about the data profile (not the model).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    data = mlflow.data.pandas_dataset.from_pandas(
                        dataset.frame,
                        source=dataset.source,
                        targets=dataset.target,
                        name=dataset.name,
                        digest=dataset.digest or frame_digest(dataset.frame),
                    )
                    _set_schema_from_sample(data, dataset.frame)
                    mlflow.log_input(data, context=dataset.context)
            for artifact_file, data in content.json_artifacts.items():
                mlflow.log_dict(data, artifact_file)
            for path in content.files:
                mlflow.log_artifact(str(path), artifact_path="plots")
            info = log_pyfunc_model(
                content.booster_json,
                FeatureSchema.from_json(content.schema_json),
                passthrough=content.passthrough_columns,
            )
            # Digest of the files as the artifact store holds them (read back): loaders check it.
            with tempfile.TemporaryDirectory(prefix="mlops-logged-") as tmp:
                files_sha256 = model_files_sha256(
                    Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp))
                )
            return LoggedRun(
                run_id=run.info.run_id,
                model_uri=info.model_uri,
                artifact_uri=run.info.artifact_uri,
                model_id=info.model_id,
                files_sha256=files_sha256,
            )

    def log_run_json(self, run_id: str, data: Any, artifact_file: str) -> str:
        """Add a JSON artifact to an existing run; returns its URI."""
        self.client.log_dict(run_id, data, artifact_file)
        return f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_file}"

    def read_run_json(self, run_id: str, artifact_file: str) -> Any:
        import mlflow
        from mlflow.exceptions import MlflowException

        self._activate()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact_file, dst_path=tmp
                )
            except MlflowException as exc:
                artifact_uri = self.client.get_run(run_id).info.artifact_uri
                served = server_artifacts_error(f"the artifacts of run {run_id}", artifact_uri)
                if served is not None:
                    raise served from exc
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise StorageIntegrityError(  # MLflow's message for a file gone, or unreadable
                    f"{artifact_file} of MLflow run {run_id} is missing from its artifact store "
                    f"({artifact_uri}), or could not be read there",
                    hint="restore the run's artifacts from a backup (check the artifact store is reachable)",
                ) from exc
            try:
                return json.loads(Path(path).read_text())
            except ValueError as exc:  # not JSON (UnicodeDecodeError is one too)
                raise StorageIntegrityError(
                    f"{artifact_file} of MLflow run {run_id} is not JSON: {exc}",
                    hint="the run's artifact was altered; restore it from a backup",
                ) from exc

    # --- versions and aliases --------------------------------------------------------------

    def _registered_model(self, name: str) -> Any | None:
        """The registered model ``name``, or None when the registry says it does not exist.

        Any other failure (server down, wrong URI, permissions) is raised as
        :class:`RegistryUnavailable`: reading it as "no model" would send training and
        promotion down the no-champion (bootstrap) path, and scoring to "no champion".
        """
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryUnavailable(
                f"the MLflow registry at {self.tracking_uri} could not be read ({exc.error_code}: "
                f"{str(exc.message)[:300]})",
                hint="check MLOPS_MLFLOW_TRACKING_URI and that the MLflow server or database is up",
            ) from exc

    def has_model(self, name: str) -> bool:
        return self._registered_model(name) is not None

    def model_names(self) -> list[str]:
        """Names of the registered models, sorted."""
        return sorted(m.name for m in self.client.search_registered_models(max_results=1000))

    def register_version(self, name: str, logged: LoggedRun, tags: dict[str, str]) -> int:
        """Register the logged model as a new version of ``name`` (created if new); no alias."""
        if self._registered_model(name) is None:
            self.client.create_registered_model(name)
        if logged.files_sha256 is not None:
            from mlops.lineage import TAG_MODEL_FILES_SHA256

            tags = {**tags, TAG_MODEL_FILES_SHA256: logged.files_sha256}
        version = self.client.create_model_version(
            name=name, source=logged.model_uri, run_id=logged.run_id, tags=tags, model_id=logged.model_id
        )
        return int(version.version)

    def _aliases(self, name: str) -> dict[str, int]:
        model = self._registered_model(name)
        if model is None:
            return {}
        return {str(alias): int(version) for alias, version in (model.aliases or {}).items()}

    def get_alias_version(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, or None (no alias, or no such registered model)."""
        return self._aliases(name).get(alias)

    def aliases_of(self, name: str, version: int) -> list[str]:
        return sorted(a for a, v in self._aliases(name).items() if v == int(version))

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(int(version)))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` if it exists (idempotent)."""
        if self.get_alias_version(name, alias) is not None:
            self.client.delete_registered_model_alias(name, alias)

    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(int(version)), key, value)

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self.client.get_model_version(name, str(int(version))).tags)

    def version_run_id(self, name: str, version: int) -> str:
        run_id = self.client.get_model_version(name, str(int(version))).run_id
        if not run_id:
            raise InputError(f"{name} version {version} has no training run")
        return str(run_id)

    def run_params(self, run_id: str) -> dict[str, str]:
        """The params a run logged (flattened ``a.b`` keys, text values)."""
        return dict(self.client.get_run(run_id).data.params)

    def mark_failed(
        self, name: str, version: int, *, verdict: str, failures: list[str], record_id: str
    ) -> None:
        """Tag a candidate that failed its gates and make sure no alias points at it."""
        text = "\n".join(failures)
        self.set_version_tags(
            name,
            version,
            {
                TAG_VERDICT: verdict,
                TAG_VERDICT_FAILURES: text[:MAX_TEXT_TAG],
                TAG_DECISION_RECORD_ID: record_id,
            },
        )
        for alias in self.aliases_of(name, version):
            self.client.delete_registered_model_alias(name, alias)

    def load_model(self, name: str, alias: str) -> PyFuncModel:
        """The version ``models:/<name>@<alias>`` names, as a pyfunc (what a plain MLflow user
        loads), its files checked (:func:`load_checked_model`)."""
        version = self.get_alias_version(name, alias)
        if version is None:
            raise InputError(f"model {name!r} has no version with alias {alias!r}")
        return self.load_version(name, version)

    def check_version_files(self, name: str, version: int) -> None:
        """Check ``models:/<name>/<version>``'s files against their registered digest without
        loading the model; raises :class:`StorageIntegrityError` when they changed."""
        self._activate()
        with checked_download(
            f"models:/{name}/{int(version)}",
            f"model {name} version {version}",
            self.version_tags(name, version),
        ):
            pass

    def version_fingerprint(self, name: str, version: int) -> str:
        """The model fingerprint (booster + feature schema) of ``models:/<name>/<version>``'s
        files as the artifact store holds them, once they are checked against their registered
        digest (:class:`StorageIntegrityError` when they changed or lack the booster)."""
        self._activate()
        label = f"model {name} version {version}"
        with checked_download(
            f"models:/{name}/{int(version)}", label, self.version_tags(name, version)
        ) as folder:
            found = _booster_fingerprint(folder)
        if found is None:
            raise StorageIntegrityError(
                f"{label}: its files in the artifact store lack the booster or feature schema",
                hint="restore the version's artifacts from a backup",
            )
        return found

    def load_version(self, name: str, version: int) -> PyFuncModel:
        """``models:/<name>/<version>`` (the exact version) as a pyfunc, its files checked."""
        self._activate()
        return load_checked_model(
            f"models:/{name}/{int(version)}",
            f"model {name} version {version}",
            self.version_tags(name, version),
        )


def make_registry(settings: Settings | None = None) -> MlflowRegistry:
    """The registry the settings name (read now)."""
    return MlflowRegistry.from_settings(settings)
