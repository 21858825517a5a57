"""The logged model: an MLflow pyfunc that owns its preprocessing.

A plain MLflow user runs ``mlflow.pyfunc.load_model("models:/credit-risk@champion").predict(df)``
on the RAW application columns (strings and numbers as they arrive; extra columns ignored) and
gets the probability of default. The model loads the booster JSON and the feature-schema JSON
from its artifacts and casts the input exactly as in training (:func:`mlops.features.prepare`).

Why not the xgboost flavour: a signature with ``category`` columns is not supported, nullable
``Int64`` silently drops the signature, and XGBoost rejects pandas 3 ``str`` columns
(PITFALLS: MLflow). Here the signature declares categorical features as ``string`` and numeric
features as ``any`` (so ints, floats, nullable ints and numeric strings all pass MLflow's
schema enforcement, which would refuse int64 -> double), and casting is ours.

The model is self-contained: the few product modules it needs (this one, ``features``,
``errors``) are copied into the model's ``code/`` folder, so loading it needs only the pinned
``pip_requirements`` (mlflow, xgboost, pandas, numpy, pydantic), not this product. It is logged
as code (MLflow "models from code", :data:`MODEL_CODE`), not as a pickled object: its state is
the booster and feature-schema JSON, and loading it unpickles nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc.model import PythonModel
from mlflow.types.schema import AnyType, ColSpec, Schema, TensorSpec

from mlops.features import CATEGORICAL, FeatureSchema

BOOSTER_ARTIFACT: Final = "booster"
SCHEMA_ARTIFACT: Final = "feature_schema"
BOOSTER_FILE: Final = "booster.json"
SCHEMA_FILE: Final = "feature_schema.json"
MODEL_ARTIFACT_NAME: Final = "model"
OUTPUT_COLUMN: Final = "probability_of_default"
# Modules copied into the logged model's code/ folder (everything this module imports from us).
SHIPPED_MODULES: Final = ("__init__.py", "errors.py", "features.py", "pyfunc_model.py")
PINNED_PACKAGES: Final = ("mlflow", "xgboost", "pandas", "numpy", "pydantic")
# Callers inside pinned_requirement_checks() while it supplies MLflow's package map.
_PINNED_MAP_LOCK: Final = threading.Lock()
_PINNED_MAP_USERS = 0
_MODEL_CODE_LOCK: Final = threading.Lock()


class XGBoostPyfuncModel(PythonModel):
    """Booster + feature schema; ``predict`` takes raw rows and returns P(positive class)."""

    def __init__(self) -> None:
        self._booster: Any = None
        self._schema: FeatureSchema | None = None

    def load_context(self, context: Any) -> None:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(context.artifacts[BOOSTER_ARTIFACT])
        self._booster = booster
        self._schema = FeatureSchema.from_json(Path(context.artifacts[SCHEMA_ARTIFACT]).read_text())

    # ``model_input: pd.DataFrame`` is the hint MLflow 3 accepts without building a signature
    # of its own (other hints warn or replace it); our explicit signature is the one that counts.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> npt.NDArray[np.float64]:
        """Probability of default for each row of ``model_input`` (a DataFrame of raw columns)."""
        if self._booster is None or self._schema is None:
            self.load_context(context)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.score(frame)

    @classmethod
    def from_parts(cls, booster: Any, schema: FeatureSchema) -> XGBoostPyfuncModel:
        """A loaded model from a booster and its feature schema (what ``load_context`` builds)."""
        model = cls()
        model._booster, model._schema = booster, schema
        return model

    @property
    def feature_schema(self) -> FeatureSchema:
        if self._schema is None:
            raise RuntimeError("the model's artifacts are not loaded (load it with mlflow.pyfunc.load_model)")
        return self._schema

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The booster's input frame for raw rows (:func:`mlops.features.prepare`)."""
        from mlops.features import prepare

        return prepare(frame, self.feature_schema)

    def score_prepared(self, prepared: pd.DataFrame) -> npt.NDArray[np.float64]:
        """P(positive class) of rows already prepared by :meth:`prepare`.

        ``inplace_predict`` on the prepared frame: the one scoring path of this model, used by
        ``predict``, batch scoring and ``mlops reproduce`` alike. It gives the same float32
        values as predicting through a ``DMatrix`` (pinned by a unit test), without building one.
        """
        if self._booster is None:
            raise RuntimeError("the model's artifacts are not loaded (load it with mlflow.pyfunc.load_model)")
        return np.asarray(self._booster.inplace_predict(prepared), dtype="float64")

    def score(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """The same as ``predict`` for a loaded model, without MLflow's schema enforcement."""
        return self.score_prepared(self.prepare(frame))


def model_signature(schema: FeatureSchema, passthrough: Sequence[str] = ()) -> ModelSignature:
    """Raw input columns: categoricals as ``string``, numerics (and a categorical never seen in
    training, :attr:`~mlops.features.FeatureColumn.never_seen`) as ``any``; output: one double.

    ``passthrough``: the other columns of the raw rows (the contract's id, timestamp,
    sensitive attribute), declared optional and ``any`` so that scoring the raw rows as they
    arrive draws no "extra inputs ... ignored" warning; the model never reads them."""
    features = {c.name for c in schema.columns}
    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("string", c.name)
        if c.kind == CATEGORICAL and not c.never_seen
        else ColSpec(AnyType(), c.name)
        for c in schema.columns
    ]
    inputs += [ColSpec(AnyType(), name, required=False) for name in passthrough if name not in features]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", OUTPUT_COLUMN)]))


def pip_requirements() -> list[str]:
    """Exact versions of what the model needs at load time (no slow environment inference)."""
    return [f"{name}=={version(name)}" for name in PINNED_PACKAGES]


@contextmanager
def pinned_requirement_checks() -> Iterator[None]:
    """MLflow's requirement check for our pinned packages, without its map of every installed package.

    ``log_model`` and ``load_model`` check the model's pinned requirements against this
    environment (a warning on mismatch). The check looks each package up with
    ``importlib.metadata.version``; MLflow's module <-> package map, which it builds once per
    process from every installed distribution's metadata (~0.6 s of CPU here, all of it beside
    training or before the first score), only names the module to import when that lookup
    fails. Our models pin packages whose module has the package's name, so while the map is
    unbuilt this supplies one of just those packages and puts it back afterwards: the check
    runs as before (a mismatch still warns), and any other MLflow call that needs the full
    map builds it as usual. We write this ourselves because MLflow has no switch for it; the
    private name is checked, and if it moved MLflow builds its map itself.
    """
    global _PINNED_MAP_USERS
    try:
        from mlflow.utils import requirements_utils as ru
    except ImportError:  # pragma: no cover - MLflow moved it: the check builds its own map
        yield
        return
    with _PINNED_MAP_LOCK:
        seeded = _PINNED_MAP_USERS > 0
        if not seeded and getattr(ru, "_MODULES_TO_PACKAGES", ...) is None:  # unbuilt (and not moved)
            ru._MODULES_TO_PACKAGES = {  # type: ignore[assignment]
                **{name: [name] for name in PINNED_PACKAGES},
                **getattr(ru, "MLFLOW_MODULES_TO_PACKAGES", {}),
            }
            seeded = True
        if seeded:
            _PINNED_MAP_USERS += 1
    try:
        yield
    finally:
        if seeded:
            with _PINNED_MAP_LOCK:
                _PINNED_MAP_USERS -= 1
                if _PINNED_MAP_USERS == 0:  # the last user puts the unbuilt map back
                    ru._MODULES_TO_PACKAGES = None
                    ru._PACKAGES_TO_MODULES = None


@contextmanager
def model_code_runs() -> Iterator[None]:
    """Run MLflow's models-from-code step one thread at a time.

    Logging and loading a model logged as code run its file, whose ``set_model`` puts the
    model in one process-wide slot (``mlflow.models.model.__mlflow_model__``) that MLflow reads
    right after: two threads loading two versions at once could both get one object, and both
    load their artifacts into it. The slot is emptied after, so it keeps no model alive.
    """
    with _MODEL_CODE_LOCK:
        try:
            yield
        finally:
            mlflow.models.model.__mlflow_model__ = None


def load_pyfunc(model_uri: str) -> PyFuncModel:
    """``mlflow.pyfunc.load_model(model_uri)`` with :func:`pinned_requirement_checks`, one
    load at a time (:func:`model_code_runs`)."""
    with pinned_requirement_checks(), model_code_runs():
        return mlflow.pyfunc.load_model(model_uri)


def _ship_code(workdir: Path) -> Path:
    """Copy the modules the model imports into ``workdir/mlops`` (becomes ``code/mlops``)."""
    package = workdir / "mlops"
    package.mkdir()
    source = Path(__file__).resolve().parent
    for name in SHIPPED_MODULES:
        shutil.copy2(source / name, package / name)
    return package


# The model as code (MLflow "models from code"): MLflow runs this file when it logs and when it
# loads the model, and keeps it in the model's folder. The model's state is only its two
# JSON artifacts (booster, feature schema), read by load_context: no pickled Python object is
# logged, so loading a model never unpickles anything.
MODEL_CODE_FILE: Final = "mlops_xgboost_model.py"
MODEL_CODE: Final = (
    '"""MLflow models-from-code entry of an mlops XGBoost model (written by mlops.pyfunc_model)."""\n'
    "from mlflow.models import set_model\n\n"
    "from mlops.pyfunc_model import XGBoostPyfuncModel\n\n"
    "set_model(XGBoostPyfuncModel())\n"
)


def log_pyfunc_model(
    booster_json: bytes,
    schema: FeatureSchema,
    *,
    name: str = MODEL_ARTIFACT_NAME,
    passthrough: Sequence[str] = (),
) -> mlflow.models.model.ModelInfo:
    """Log the model into the active MLflow run; returns its ``ModelInfo`` (``model_uri``, ``model_id``).

    ``passthrough``: non-feature columns of the raw rows (see :func:`model_signature`)."""
    with tempfile.TemporaryDirectory(prefix="mlops-pyfunc-") as tmp:
        work = Path(tmp)
        booster_path = work / BOOSTER_FILE
        schema_path = work / SCHEMA_FILE
        booster_path.write_bytes(booster_json)
        schema_path.write_text(schema.to_json())
        code_path = work / MODEL_CODE_FILE
        code_path.write_text(MODEL_CODE)
        with warnings.catch_warnings(), pinned_requirement_checks(), model_code_runs():
            # No input_example on purpose (PITFALLS: ~6 s slower); the explicit signature is enough.
            warnings.filterwarnings(
                "ignore", message=".*input example was not provided", category=UserWarning
            )
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(code_path),
                artifacts={BOOSTER_ARTIFACT: str(booster_path), SCHEMA_ARTIFACT: str(schema_path)},
                signature=model_signature(schema, passthrough),
                pip_requirements=pip_requirements(),
                code_paths=[str(_ship_code(work))],
            )
