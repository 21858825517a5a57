"""The champion's reference profile, rebuilt from its training lineage.

The model version's lineage tags name the application and outcome snapshots it was trained
on. They are read back (hash-checked), joined to labelled rows exactly as training joins them
(:func:`mlops.labels.join_labels`) and split by time as training splits them
(:func:`mlops.training.time_split`, the spec's ``evaluation.newest_fraction``):

* feature profiles come from every labelled training row (the population the model learnt);
* the score profile and the reference performance come from the held-out evaluation rows,
  scored by the champion itself: scores on rows the model was fitted on are optimistic and
  would read as performance drift on the first honest window.

The result is stored keyed by model version (:mod:`mlops.monitoring_state`), so each champion
gets its own reference once, and a new champion resets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import TypeAdapter

from mlops.constants import ALIAS_CHAMPION, KIND_VALID
from mlops.contracts import Contract
from mlops.drift import build_profile
from mlops.errors import InputError
from mlops.labels import SNAPSHOT_COLUMN, join_labels
from mlops.lineage import TAG_APPLICATION_SNAPSHOTS, TAG_OUTCOME_SNAPSHOTS, tag_list
from mlops.model_spec import ModelSpec
from mlops.monitoring_state import SCORE_COLUMN, ReferenceRecord, utc_now
from mlops.registry import MlflowRegistry
from mlops.storage import ObjectStore, read_snapshot
from mlops.training import time_split

FloatArray = npt.NDArray[np.float64]
Scorer = Callable[[pd.DataFrame], FloatArray]


@dataclass(frozen=True)
class Champion:
    """The version the champion alias points at, with its run and version tags."""

    name: str
    version: int
    run_id: str
    tags: dict[str, str]


def find_champion(registry: MlflowRegistry, name: str) -> Champion | None:
    version = registry.get_alias_version(name, ALIAS_CHAMPION)
    if version is None:
        return None
    return Champion(
        name=name,
        version=version,
        run_id=registry.version_run_id(name, version),
        tags=registry.version_tags(name, version),
    )


def read_snapshots(store: ObjectStore, dataset: str, shas: list[str]) -> pd.DataFrame:
    """The snapshots in order, each row tagged with its snapshot sha (hash-checked reads)."""
    frames = [
        read_snapshot(store, dataset=dataset, kind=KIND_VALID, sha256=sha).assign(**{SNAPSHOT_COLUMN: sha})
        for sha in shas
    ]
    return pd.concat(frames, ignore_index=True)


_EPOCH_READER: TypeAdapter[datetime] = TypeAdapter(datetime)


def as_datetime(value: object) -> datetime | None:
    """A window's or reference's newest time, read as the catalog entries read it: a numeric
    timestamp column (allowed by contracts) holds epoch seconds, as pydantic reads the entry's
    ``max_timestamp``, so the two compare (pandas read it as naive nanoseconds: every monitor
    run crashed comparing naive with aware)."""
    if value is None or pd.isna(value):
        return None
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return _EPOCH_READER.validate_python(value.item() if isinstance(value, np.number) else value)
    return pd.Timestamp(value).to_pydatetime()


def model_inputs(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The model's feature columns only (what the pyfunc's signature declares)."""
    return frame.loc[:, spec.feature_list]


def build_reference(
    store: ObjectStore,
    spec: ModelSpec,
    applications: Contract,
    outcomes: Contract,
    champion: Champion,
    scorer: Scorer,
) -> ReferenceRecord:
    """Profile the champion's training data (see the module docstring)."""
    app_shas = tag_list(champion.tags, TAG_APPLICATION_SNAPSHOTS)
    out_shas = tag_list(champion.tags, TAG_OUTCOME_SNAPSHOTS)
    if not app_shas or not out_shas:
        raise InputError(
            f"{champion.name} version {champion.version} has no training lineage tags "
            f"({TAG_APPLICATION_SNAPSHOTS}, {TAG_OUTCOME_SNAPSHOTS}); its reference cannot be built",
            hint="monitor a version registered by the train flow",
        )
    apps = read_snapshots(store, applications.name, app_shas)
    outs = read_snapshots(store, outcomes.name, out_shas)
    target = spec.target_column
    ts = applications.timestamp_column
    labelled, _ = join_labels(
        apps,
        outs,
        id_column=applications.id_column,
        outcome_id_column=outcomes.id_column,
        target=target,
        observed_column=outcomes.timestamp_column,
        timestamp_column=ts,
    )
    split = time_split(
        labelled,
        newest_fraction=spec.evaluation.newest_fraction,
        timestamp_column=ts,
        id_column=applications.id_column,
    )
    features = spec.feature_list
    source = f"{champion.name} v{champion.version} training snapshots {','.join(s[:12] for s in app_shas)}"
    base = build_profile(labelled, features=features, source=source)
    evaluation = split.evaluation
    scores = scorer(model_inputs(evaluation, spec))
    scored = build_profile(
        evaluation.assign(**{SCORE_COLUMN: scores}),
        features=features,
        score_column=SCORE_COLUMN,
        label_column=target,
        calibration_bins=spec.drift.calibration_bins,
    )
    profile = base.model_copy(
        update={
            "score_column": SCORE_COLUMN,
            "score": scored.score,
            "label_column": target,
            "performance": scored.performance,
        }
    )
    return ReferenceRecord(
        model_name=champion.name,
        version=champion.version,
        run_id=champion.run_id,
        application_snapshots=app_shas,
        outcome_snapshots=out_shas,
        max_timestamp=as_datetime(apps[ts].max()) if ts else None,
        rows=len(labelled),
        evaluation_rows=len(evaluation),
        built_at=utc_now(),
        profile=profile,
    )
