"""Batch scoring: the champion decides, the challenger shadows (or decides for a canary arm).

Plain Python (no Prefect): :mod:`tasks.scoring` and :mod:`flows.score_batch` wire it.

For every valid row of a batch (typed by the applications contract and stored as a snapshot):

* the **champion** (``models:/<name>@champion``, resolved to its exact version) scores it and,
  unless the row's entity is in the canary arm, decides with the spec's decision policy:
  decline when ``p >= threshold``; routed to a person when ``p`` is in the review band or the
  high-stakes rule matches;
* the **challenger** (if the alias is set) scores every row too. Its score never changes a
  decision, except in a **canary**: a fixed share of *entities*, chosen by a keyed hash of
  the entity id, is decided by the challenger instead. The arm of an entity depends only on
  ``HMAC-SHA256(entity_hash_key, id)`` (the audit trail's entity key): the same entity lands
  in the same arm in every batch, and raising the share only adds entities to the canary.

Audit records (one per prediction and model): ``role`` says whether the record decided
(``champion`` or ``canary``) or not (``shadow``); ``model_alias`` says which model wrote it.
Without a canary: champion records decide and challenger records are shadows. In the canary
arm: challenger records decide (role ``canary``) and the champion's score of the same row is
kept as a ``shadow`` record. A shadow record carries the decision its model *would* have
made and is never routed to review. Each record points at its input: the snapshot sha256,
the row number in that snapshot, and the row's own input hash (:func:`input_hashes`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, SecretStr

from mlops.audit_encode import RECORD_SCORING_BATCH
from mlops.audit_hashing import as_utc, entity_key
from mlops.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION
from mlops.errors import InputError, WorkRefused
from mlops.model_spec import DecisionPolicy, decision_policy_hash
from mlops.validation import ValidationSummary

if TYPE_CHECKING:
    from mlops.contracts import Contract
    from mlops.model_spec import ModelSpec
    from mlops.registry import MlflowRegistry

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ROLE_CHAMPION: Final = "champion"
ROLE_SHADOW: Final = "shadow"
ROLE_CANARY: Final = "canary"
DECISION_APPROVE: Final = "approve"
DECISION_DECLINE: Final = "decline"
REASON_REVIEW_BAND: Final = "review_band"
REASON_HIGH_STAKES: Final = "high_stakes"
INPUT_HASH_FORMAT: Final = "mlops-input/1"
# Rows scored and audited at a time. The last chunk's audit write cannot overlap any scoring,
# so it is the tail of every batch: at 1M rows, 50k against 100k halves it (0.7-0.9 s against
# 1.7-2.1 s) and lowers peak RSS from ~1.45 to ~1.25 GB (bench_scoring, 3 pairs).
DEFAULT_CHUNK_ROWS: Final = 50_000
_MISSING_TEXT: Final = b"\xff\xff\xff\xff"


class NoChampion(WorkRefused):
    """The model has no champion, so nothing can decide."""


class BatchAlreadyScored(WorkRefused):
    """The batch's valid rows were scored by this model before (scoring them again needs
    ``rescore``: a second decision for each application and new review cases)."""


# --- models ------------------------------------------------------------------------------


class Scorer(Protocol):
    """Anything that turns raw/typed application rows into P(positive class)."""

    def __call__(self, frame: pd.DataFrame) -> FloatArray: ...


@dataclass(frozen=True)
class LoadedModel:
    """One exact registered model version, ready to score (``alias`` is how it was found).

    A model that splits scoring into ``prepare`` (raw rows -> booster input) and
    ``predict_prepared`` lets two models with the same ``input_key`` (their feature schema)
    share one prepared chunk; :meth:`score` is always ``predict_prepared(prepare(frame))``.
    """

    name: str
    version: int
    alias: str | None
    predict: Scorer
    prepare: Callable[[pd.DataFrame], Any] | None = None
    predict_prepared: Callable[[Any], npt.ArrayLike] | None = None
    input_key: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def score(self, frame: pd.DataFrame) -> FloatArray:
        return np.asarray(self.predict(frame), dtype="float64")

    def score_prepared(self, prepared: Any) -> FloatArray:
        if self.predict_prepared is None:
            raise TypeError(f"{self.uri} has no prepared-input scorer")
        return np.asarray(self.predict_prepared(prepared), dtype="float64")


def loaded_pyfunc(name: str, version: int, alias: str | None, inner: Any) -> LoadedModel:
    """A :class:`LoadedModel` around a loaded python model (ours: prepare + inplace predict)."""
    if all(callable(getattr(inner, a, None)) for a in ("prepare", "score_prepared", "score")):
        return LoadedModel(
            name=name,
            version=int(version),
            alias=alias,
            predict=inner.score,
            prepare=inner.prepare,
            predict_prepared=inner.score_prepared,
            input_key=inner.feature_schema.to_json(),
        )
    return LoadedModel(name=name, version=int(version), alias=alias, predict=inner.score)


def load_model_version(
    registry: MlflowRegistry, name: str, version: int, alias: str | None = None
) -> LoadedModel:
    """Load ``models:/<name>/<version>`` (the exact version, never an alias) as a pyfunc.

    Scores go through the pyfunc's own preprocessing and predict (:meth:`XGBoostPyfuncModel.score`,
    the same code ``predict`` runs, without MLflow's per-call schema enforcement); a pyfunc of
    another kind is called through ``predict``.
    """
    pyfunc: Any = registry.load_version(name, version)  # its files checked against the registered digest
    inner: Any = pyfunc.unwrap_python_model()
    if callable(getattr(inner, "score", None)):
        return loaded_pyfunc(name, version, alias, inner)
    return LoadedModel(name=name, version=int(version), alias=alias, predict=pyfunc.predict)


class PreparedInputs:
    """One chunk's rows, prepared once per distinct model input (feature schema)."""

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows
        self._prepared: dict[str, Any] = {}

    def score(self, model: LoadedModel) -> FloatArray:
        if model.prepare is None or model.predict_prepared is None or model.input_key is None:
            return model.score(self.rows)
        if model.input_key not in self._prepared:
            self._prepared[model.input_key] = model.prepare(self.rows)
        return model.score_prepared(self._prepared[model.input_key])


@dataclass(frozen=True)
class ModelVersions:
    """What the aliases point at when a batch starts (challenger None: no shadow, no canary)."""

    name: str
    champion: int
    challenger: int | None


def resolve_versions(registry: MlflowRegistry, name: str) -> ModelVersions:
    """Resolve ``champion`` / ``challenger`` to versions once; refuse without a champion."""
    champion = registry.get_alias_version(name, ALIAS_CHAMPION)
    if champion is None:
        from mlops.registry import unregistered_message

        registered = registry.has_model(name)
        what = f"model {name!r} has no champion" if registered else unregistered_message(registry, name)
        raise NoChampion(
            f"{what}, so no batch can be scored",
            hint="run mlops train and mlops promote first",
        )
    challenger = registry.get_alias_version(name, ALIAS_CHALLENGER)
    if challenger == champion:
        challenger = None
    return ModelVersions(name=name, champion=int(champion), challenger=challenger)


# --- decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decisions:
    """The policy applied to one model's scores (arrays aligned with the rows)."""

    decision: npt.NDArray[np.object_]  # "approve" / "decline"
    routed: BoolArray
    reason: npt.NDArray[np.object_]  # None where not routed
    confidence: FloatArray


def confidence_of(policy: DecisionPolicy, scores: FloatArray) -> FloatArray:
    """Distance from the threshold on the decided side, scaled to [0, 1] (0 = on the threshold)."""
    t = policy.threshold
    p = np.asarray(scores, dtype="float64")
    return np.where(p >= t, (p - t) / (1.0 - t), (t - p) / t)


def decide(
    policy: DecisionPolicy, scores: npt.ArrayLike, high_stakes_values: npt.ArrayLike | None = None
) -> Decisions:
    """Decision, review routing (with its reason) and confidence for each score.

    Routing is :meth:`DecisionPolicy.needs_review`; the reason names which rule matched
    (``review_band``, ``high_stakes:<column>>=<min>`` or ``high_stakes:<column> missing``, or
    the band and one of those joined by ``;``).
    """
    p = np.asarray(scores, dtype="float64")
    if not np.isfinite(p).all():
        raise InputError("scores must be finite probabilities")
    declines = policy.declines(p)
    routed = policy.needs_review(p, high_stakes_values)
    lo, hi = policy.review_band
    in_band = (p >= lo) & (p <= hi)
    stakes = np.zeros(len(p), dtype=np.intp)  # 0: no rule matched, 1: at or above min, 2: missing
    rule = policy.high_stakes
    stake_labels = [REASON_HIGH_STAKES, REASON_HIGH_STAKES]
    if rule is not None and high_stakes_values is not None:
        high, missing = rule.matches(high_stakes_values)
        stakes = high.astype(np.intp) + 2 * missing.astype(np.intp)
        stake_labels = [
            f"{REASON_HIGH_STAKES}:{rule.column}>={rule.min:g}",
            f"{REASON_HIGH_STAKES}:{rule.column} missing",
        ]
    labels = np.array(
        [None, REASON_REVIEW_BAND]
        + [label for stake in stake_labels for label in (stake, f"{REASON_REVIEW_BAND};{stake}")],
        dtype=object,
    )
    reason = labels[in_band.astype(np.intp) + 2 * stakes]
    reason[~routed] = None
    decision = np.where(declines, DECISION_DECLINE, DECISION_APPROVE).astype(object)
    return Decisions(decision=decision, routed=routed, reason=reason, confidence=confidence_of(policy, p))


# --- canary arm --------------------------------------------------------------------------


def canary_buckets(entity_keys: Sequence[str]) -> FloatArray:
    """Map each entity key (HMAC-SHA256 hex) to [0, 1): its first 53 bits as a fraction."""
    if len(entity_keys) == 0:
        return np.empty(0, dtype="float64")
    head = bytes.fromhex("".join(k[:16] for k in entity_keys))
    top = np.frombuffer(head, dtype=">u8") >> np.uint64(11)
    buckets: FloatArray = top.astype("float64") * 2.0**-53
    return buckets


def canary_mask(entity_keys: Sequence[str], share: float) -> BoolArray:
    """Which entities the challenger decides: bucket < share (stable per entity and key)."""
    check_share(share)
    return canary_buckets(entity_keys) < share


def check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise InputError(f"canary share must be in [0, 1], got {share}", hint="--canary-share 0.05")


def check_rescore_resume(rescore: bool, resume: bool) -> None:
    if rescore and resume:
        raise InputError(
            "rescore and resume exclude each other",
            hint="--resume finishes an unfinished batch; --rescore scores every row again",
        )


# --- input hashes ------------------------------------------------------------------------


def _column_kind(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_bool_dtype(dtype):
        return "int"
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return "int"  # numpy ints cannot be missing; nullable Int64 is hashed as float
    if pd.api.types.is_numeric_dtype(dtype):
        return "float"
    return "text"


def _fixed_bytes(series: pd.Series, kind: str) -> npt.NDArray[np.uint8]:
    if kind == "datetime":
        stamps = series.dt.tz_convert("UTC") if series.dt.tz is not None else series
        ns = stamps.to_numpy(dtype="datetime64[ns]").view("<i8")
        return ns.view(np.uint8).reshape(-1, 8)
    if kind == "int":
        return series.to_numpy(dtype="<i8").view(np.uint8).reshape(-1, 8)
    values = series.to_numpy(dtype="<f8", na_value=np.nan).copy()
    values[np.isnan(values)] = np.nan  # one bit pattern for "missing"
    return values.view(np.uint8).reshape(-1, 8)


def _length_prefixed(values: pa.Array) -> pa.Array:
    """``4-byte LE length + UTF-8`` of each text (binary), ``ff ff ff ff`` where missing."""
    lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False).astype("<u4")
    prefix = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(values), [None, pa.py_buffer(lengths)])
    joined = pc.binary_join_element_wise(prefix.cast(pa.binary()), values.cast(pa.binary()), b"")
    return joined.fill_null(_MISSING_TEXT)


def _text_bytes(series: pd.Series) -> pa.Array:
    """A text column's bytes per row (see :func:`input_hashes`), built by Arrow."""
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        values = pa.array(series, from_pandas=True)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        return _length_prefixed(values)
    # object / category / other: the text is str() of each distinct value
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if len(uniques) == 0:
        return _length_prefixed(pa.nulls(len(series), pa.string()))
    texts = pa.array([str(u) for u in uniques], type=pa.string())
    spread = texts.take(pa.array(np.maximum(codes, 0)))
    return _length_prefixed(pc.if_else(pa.array(codes < 0), None, spread))


def _fixed_block(frame: pd.DataFrame, names: Sequence[str], kinds: dict[str, str]) -> pa.Array:
    """The fixed-width columns of each row, 8 bytes each, as one binary value per row."""
    n, width = len(frame), 8 * len(names)
    block = np.empty((n, width), dtype=np.uint8)
    for i, name in enumerate(names):
        block[:, 8 * i : 8 * i + 8] = _fixed_bytes(frame[name], kinds[name])
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(block)])
    return fixed.cast(pa.binary())


def input_hashes(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> list[str]:
    """sha256 hex of each row's canonical bytes (format ``mlops-input/1``).

    Bytes of a row: a header naming the format and each column with its kind, then per
    column in order: ``int`` (ints, bools) as int64 LE, ``float`` as float64 LE (every
    missing value the same NaN), ``datetime`` as int64 nanoseconds since the epoch (UTC),
    ``text`` as a 4-byte LE length and UTF-8 (missing: ``ff ff ff ff``). A row's hash
    depends only on that row's values and the column kinds, so a row read back alone from
    its snapshot hashes the same as in its batch.

    Text columns follow the fixed block in the bytes; their order in the header is the
    column order, their position in the row bytes is after every fixed-width value.
    Each row's bytes are assembled by Arrow (vectorised); the loop only hashes them,
    continuing from the header's sha256 state instead of re-hashing the header per row.
    """
    names = list(frame.columns if columns is None else columns)
    if len(frame) == 0:
        return []
    kinds = {name: _column_kind(frame[name]) for name in names}
    header = (INPUT_HASH_FORMAT + "\x00" + "\x00".join(f"{c}:{kinds[c]}" for c in names) + "\x00").encode()
    fixed_names = [c for c in names if kinds[c] != "text"]
    parts = [_fixed_block(frame, fixed_names, kinds)] if fixed_names else []
    parts += [_text_bytes(frame[c]) for c in names if kinds[c] == "text"]
    rows: list[bytes] = pc.binary_join_element_wise(*parts, b"").to_pylist() if parts else [b""] * len(frame)
    start = hashlib.sha256(header).copy
    hashes: list[str] = []
    append = hashes.append
    for row in rows:
        h = start()
        h.update(row)
        append(h.hexdigest())
    return hashes


# --- scoring a chunk ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringModels:
    champion: LoadedModel
    challenger: LoadedModel | None = None


@dataclass(frozen=True)
class ScoringContext:
    """Everything a chunk needs besides its rows."""

    models: ScoringModels
    policy: DecisionPolicy
    id_column: str
    hash_key: SecretStr | str | bytes
    canary_share: float = 0.0

    @property
    def canary_active(self) -> bool:
        return self.models.challenger is not None and self.canary_share > 0.0


@dataclass
class Timings:
    """Seconds spent per step, summed over chunks (for the report and the benchmark)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + (now - started)
        return now

    def merge(self, other: Timings) -> None:
        for step, value in other.seconds.items():
            self.seconds[step] = self.seconds.get(step, 0.0) + value


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk: its audit rows (deciding and shadow) and the arrays the summary needs."""

    records: pd.DataFrame
    champion_scores: FloatArray
    challenger_scores: FloatArray | None
    canary: BoolArray
    final_decision: npt.NDArray[np.object_]
    routed: BoolArray
    champion_decision: npt.NDArray[np.object_]
    challenger_decision: npt.NDArray[np.object_] | None


def _object_column(values: Any, n: int) -> pd.Series:
    """A column of Python objects as given (pandas 3 would turn strings into Arrow ``str``,
    which the audit encoder then turns back into Python strings)."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return pd.Series(values, dtype=object, copy=False)
    column = np.empty(n, dtype=object)
    column[:] = values
    return pd.Series(column, dtype=object, copy=False)


def _model_records(
    model: LoadedModel,
    scores: FloatArray,
    decisions: Decisions,
    deciding: BoolArray,
    deciding_role: str,
    base: dict[str, Any],
) -> pd.DataFrame:
    n = len(scores)
    routed = decisions.routed & deciding
    reason = decisions.reason.copy()
    reason[~routed] = None
    roles = np.array([ROLE_SHADOW, deciding_role], dtype=object)[deciding.astype(np.intp)]
    columns: dict[str, Any] = {
        **base,
        "model_name": _object_column(model.name, n),
        "model_version": _object_column(str(model.version), n),
        "model_alias": _object_column(model.alias, n),
        "score": scores,
        "confidence": decisions.confidence,
        "review_routed": routed,
        "role": _object_column(roles, n),
        "decision": _object_column(decisions.decision, n),
        "review_reason": _object_column(reason, n),
    }
    return pd.DataFrame(columns, copy=False)


def score_chunk(
    rows: pd.DataFrame,
    ctx: ScoringContext,
    *,
    snapshot_sha256: str,
    first_row: int,
    timings: Timings | None = None,
) -> ScoredChunk:
    """Score typed valid rows (rows ``first_row...`` of snapshot ``snapshot_sha256``).

    Returns the audit rows: the champion model's records first, then the challenger's, each
    in row order.
    """
    timings = timings if timings is not None else Timings()
    n = len(rows)
    t = time.perf_counter()
    keys: list[str] = entity_key(rows[ctx.id_column], ctx.hash_key).tolist()
    canary = canary_mask(keys, ctx.canary_share) if ctx.canary_active else np.zeros(n, dtype=bool)
    t = timings.add("entity_keys_and_canary", t)
    hashes = input_hashes(rows)
    t = timings.add("input_hashes", t)
    inputs = PreparedInputs(rows)
    champion = ctx.models.champion
    champion_scores = inputs.score(champion)
    t = timings.add("score_champion", t)
    challenger = ctx.models.challenger
    challenger_scores = inputs.score(challenger) if challenger is not None else None
    del inputs
    t = timings.add("score_challenger", t)
    rule = ctx.policy.high_stakes
    high = rows[rule.column].to_numpy(dtype="float64", na_value=np.nan) if rule is not None else None
    base: dict[str, Any] = {
        "entity_key": _object_column(np.array(keys, dtype=object), n),
        "input_snapshot": _object_column(snapshot_sha256, n),
        "input_row": np.arange(first_row, first_row + n, dtype=np.int64),
        "input_hash": _object_column(np.array(hashes, dtype=object), n),
    }
    champion_dec = decide(ctx.policy, champion_scores, high)
    frames = [_model_records(champion, champion_scores, champion_dec, ~canary, ROLE_CHAMPION, base)]
    final_decision, routed = champion_dec.decision.copy(), champion_dec.routed & ~canary
    challenger_dec = None
    if challenger is not None and challenger_scores is not None:
        challenger_dec = decide(ctx.policy, challenger_scores, high)
        frames.append(
            _model_records(challenger, challenger_scores, challenger_dec, canary, ROLE_CANARY, base)
        )
        final_decision[canary] = challenger_dec.decision[canary]
        routed |= challenger_dec.routed & canary
    records = pd.concat(frames, ignore_index=True)
    timings.add("decide", t)
    return ScoredChunk(
        records=records,
        champion_scores=champion_scores,
        challenger_scores=challenger_scores,
        canary=canary,
        final_decision=final_decision,
        routed=routed,
        champion_decision=champion_dec.decision,
        challenger_decision=None if challenger_dec is None else challenger_dec.decision,
    )


def iter_scored_chunks(
    frame: pd.DataFrame,
    ctx: ScoringContext,
    *,
    snapshot_sha256: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    timings: Timings | None = None,
    start_row: int = 0,
) -> Iterator[ScoredChunk]:
    """Score ``frame`` (one whole snapshot) ``chunk_rows`` rows at a time, from row
    ``start_row`` on (the rows before it were scored by an earlier run of the batch)."""
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
    if not 0 <= start_row <= len(frame):
        raise InputError(f"start_row {start_row} is outside the snapshot's {len(frame)} rows")
    for start in range(start_row, len(frame), chunk_rows):
        yield score_chunk(
            frame.iloc[start : start + chunk_rows],
            ctx,
            snapshot_sha256=snapshot_sha256,
            first_row=start,
            timings=timings,
        )


# --- batch summary -----------------------------------------------------------------------


@dataclass
class ScoringTally:
    """Counts accumulated over chunks."""

    rows: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    decisions_by_role: dict[str, dict[str, int]] = field(default_factory=dict)
    routed: int = 0
    canary_rows: int = 0
    shadow_rows: int = 0
    shadow_same_decision: int = 0
    shadow_abs_diff_sum: float = 0.0
    records_written: int = 0
    review_cases_opened: int = 0
    review_cases_superseded: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def add(self, chunk: ScoredChunk) -> None:
        n = len(chunk.canary)
        self.rows += n
        self.canary_rows += int(chunk.canary.sum())
        self.routed += int(chunk.routed.sum())
        for role, mask in ((ROLE_CHAMPION, ~chunk.canary), (ROLE_CANARY, chunk.canary)):
            if not mask.any():
                continue
            values, counts = np.unique(chunk.final_decision[mask].astype(str), return_counts=True)
            by_role = self.decisions_by_role.setdefault(role, {})
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                self.decisions[value] = self.decisions.get(value, 0) + count
                by_role[value] = by_role.get(value, 0) + count
        if chunk.challenger_scores is not None and chunk.challenger_decision is not None:
            self.shadow_rows += n
            self.shadow_same_decision += int((chunk.challenger_decision == chunk.champion_decision).sum())
            self.shadow_abs_diff_sum += float(np.abs(chunk.challenger_scores - chunk.champion_scores).sum())

    def wrote(self, first_seq: int, last_seq: int, cases: int, superseded: int = 0) -> None:
        self.first_seq = first_seq if self.first_seq is None else self.first_seq
        self.last_seq = last_seq
        self.records_written += last_seq - first_seq + 1
        self.review_cases_opened += cases
        self.review_cases_superseded += superseded


class ScoringResult(BaseModel):
    """What ``score_batch`` did; the CLI prints it as JSON (exit 1 when not ``accepted``)."""

    model_name: str
    source: str
    batch_id: str
    accepted: bool
    rejection_reasons: list[str] = Field(default_factory=list)
    validation: ValidationSummary
    champion_version: int
    challenger_version: int | None
    canary_share_requested: float
    canary_active: bool
    rows_scored: int = 0
    decisions: dict[str, int] = Field(
        default_factory=dict, description="final decisions (champion or canary) by value"
    )
    decisions_by_role: dict[str, dict[str, int]] = Field(default_factory=dict)
    routed_to_review: int = 0
    review_cases_opened: int = 0
    review_cases_superseded: int = Field(
        0, description="earlier open cases of the same applications, superseded by this batch's decisions"
    )
    canary_rows: int = 0
    canary_share_realised: float = 0.0
    shadow_rows: int = 0
    shadow_agreement: float | None = Field(
        None, description="share of rows where the challenger's decision equals the champion's"
    )
    shadow_mean_abs_score_diff: float | None = None
    audit_records_written: int = 0
    audit_first_seq: int | None = None
    audit_last_seq: int | None = None
    snapshots: list[str] = Field(default_factory=list, description="sha256 of each valid snapshot scored")
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    timings_seconds: dict[str, float] = Field(default_factory=dict)
    flow_run_id: str | None = None
    resumed: bool = Field(
        False, description="this run finished a batch that an earlier run began (batch_id is that batch)"
    )
    rows_already_scored: int = Field(
        0, description="rows of a resumed batch written by earlier runs (not in the counts above)"
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what differs since the scoring versions were trained (see since_training_notes)",
    )

    def fill_from(self, tally: ScoringTally) -> ScoringResult:
        shadow = tally.shadow_rows
        return self.model_copy(
            update={
                "rows_scored": tally.rows,
                "decisions": dict(sorted(tally.decisions.items())),
                "decisions_by_role": {
                    k: dict(sorted(v.items())) for k, v in sorted(tally.decisions_by_role.items())
                },
                "routed_to_review": tally.routed,
                "review_cases_opened": tally.review_cases_opened,
                "review_cases_superseded": tally.review_cases_superseded,
                "canary_rows": tally.canary_rows,
                "canary_share_realised": tally.canary_rows / tally.rows if tally.rows else 0.0,
                "shadow_rows": shadow,
                "shadow_agreement": tally.shadow_same_decision / shadow if shadow else None,
                "shadow_mean_abs_score_diff": tally.shadow_abs_diff_sum / shadow if shadow else None,
                "audit_records_written": tally.records_written,
                "audit_first_seq": tally.first_seq,
                "audit_last_seq": tally.last_seq,
            }
        )


#: What an audit sink wrote for one chunk: (first_seq, last_seq, review cases opened[, earlier
#: open cases superseded]).
WriteCounts = tuple[int, ...]


class AuditSink(Protocol):
    """Where a chunk's audit rows go; returns its :data:`WriteCounts`."""

    def __call__(self, records: pd.DataFrame) -> WriteCounts: ...


RECORD_SCORING_DONE: Final = "scoring_done"  # the batch's predictions are all written
RECORD_SCORING_RESUMED: Final = "scoring_resumed"  # another run took the batch over (resume)
_CLAIMS: Final = (RECORD_SCORING_BATCH, RECORD_SCORING_RESUMED)


class BatchTakenOver(WorkRefused):
    """Another run resumed this batch after this run began: this run stops writing to it."""


def check_claim(conn: Any, batch_id: str, claim: str) -> None:
    """Inside a chain transaction (head locked): refuse unless ``claim`` (the record id of this
    run's ``scoring_batch`` or ``scoring_resumed`` record) is the batch's latest claim.

    A batch is written by one run at a time: the run that began it until another run resumes
    it (``mlops score --resume``), and then only the resuming run. The earlier run, if still
    alive, stops at its next chunk with nothing of that chunk written, so no row is decided
    twice."""
    import sqlalchemy as sa

    from mlops.audit import audit_records, is_event

    c = audit_records.c
    latest = conn.execute(
        sa.select(c.record_id, c.created_at, c.payload)
        .where(is_event(*_CLAIMS), c.batch_id == batch_id)
        .order_by(c.seq.desc())
        .limit(1)
    ).first()
    if latest is None or str(latest.record_id) != claim:
        by = (latest.payload or {}).get("resumed_by", "another run") if latest is not None else "no run"
        when = f" at {as_utc(latest.created_at):%Y-%m-%d %H:%M:%S} UTC" if latest is not None else ""
        raise BatchTakenOver(
            f"batch {batch_id} was resumed by {by}{when} after this run began; this run stops writing "
            "to it so that no row is decided twice (nothing of this chunk was written)",
            hint="the resuming run finishes the batch; see its scoring_done record",
        )


@dataclass(frozen=True)
class PriorScoring:
    """An earlier ``scoring_batch`` record of the same model that shares input snapshots;
    ``completed``: its ``scoring_done`` record exists (every prediction was written)."""

    batch_id: str
    created_at: datetime
    snapshots: list[str]
    completed: bool
    seq: int
    all_snapshots: tuple[str, ...]


def batch_events(conn: Any, where: Any) -> list[Any]:
    """The ``scoring_batch`` and ``scoring_done`` records matching ``where``, in chain order
    (seq, record_type, batch_id, model_name, created_at, payload), read through the partial
    index of records that are not predictions."""
    import sqlalchemy as sa

    from mlops.audit import audit_records, is_event

    c = audit_records.c
    rows: list[Any] = conn.execute(
        sa.select(c.seq, c.record_type, c.batch_id, c.model_name, c.created_at, c.payload)
        .where(is_event(RECORD_SCORING_BATCH, RECORD_SCORING_DONE), where)
        .order_by(c.seq)
    ).all()
    return rows


def prior_scorings(conn: Any, model_name: str, snapshots: Sequence[str]) -> list[PriorScoring]:
    """The batches of ``model_name`` that scored (or began to score) any of ``snapshots``,
    oldest first. Reads only the chain's batch records, through the partial index on
    records that are not predictions."""
    from mlops.audit import audit_records

    rows = batch_events(conn, audit_records.c.model_name == model_name)
    done = {row.batch_id for row in rows if row.record_type == RECORD_SCORING_DONE}
    wanted = set(snapshots)
    found = []
    for row in rows:
        if row.record_type != RECORD_SCORING_BATCH:
            continue
        scored = [str(s) for s in (row.payload or {}).get("input_snapshots", [])]
        shared = [s for s in scored if s in wanted]
        if shared:
            found.append(
                PriorScoring(
                    str(row.batch_id),
                    as_utc(row.created_at),
                    shared,
                    row.batch_id in done,
                    int(row.seq),
                    tuple(scored),
                )
            )
    return found


def _already_scored(model_name: str, prior: list[PriorScoring]) -> BatchAlreadyScored:
    last = prior[-1]
    when = f"{last.created_at:%Y-%m-%d %H:%M:%S} UTC"
    what = (
        f"batch {last.batch_id} scored the same valid rows at {when}"
        if last.completed
        else f"batch {last.batch_id} began scoring the same valid rows at {when} and has not finished "
        "(its run failed part way or is still running; the chunks it wrote stay recorded)"
    )
    earlier = f", after {len(prior) - 1} earlier batch(es)" if len(prior) > 1 else ""
    return BatchAlreadyScored(
        f"these rows were already scored by {model_name}: {what}{earlier} (snapshot "
        f"{', '.join(s[:12] for s in last.snapshots)}). Scoring them again records a second decision "
        "for each application and opens new review cases; nothing was scored",
        hint=(
            "to finish that batch, pass --resume (flow parameter resume=true): only the rows it did not "
            "write are scored, under its versions and decision policy; "
            if not last.completed
            else ""
        )
        + "to score them again on purpose (a deliberate re-decision), pass --rescore (flow parameter "
        "rescore=true); the new batch records which batches it repeats",
    )


def record_scoring_done(
    engine: Any,
    *,
    batch_id: str,
    model_name: str,
    tally: ScoringTally,
    rows_written_before: int = 0,
    claim: str | None = None,
) -> None:
    """The chain record that closes a batch: every prediction of ``batch_id`` is written.
    ``tally`` counts this run's rows; ``rows_written_before`` those of earlier runs of a
    resumed batch. With ``claim``, refused (:class:`BatchTakenOver`) unless this run still
    holds the batch (:func:`check_claim`)."""
    from mlops.audit import append_event

    payload = {
        "rows_written_before": rows_written_before,
        "rows_scored": tally.rows,
        "audit_records": tally.records_written,
        "review_cases_opened": tally.review_cases_opened,
        "review_cases_superseded": tally.review_cases_superseded,
        "first_seq": tally.first_seq,
        "last_seq": tally.last_seq,
    }
    guard = None if claim is None else functools.partial(check_claim, batch_id=batch_id, claim=claim)
    append_event(engine, RECORD_SCORING_DONE, payload, model_name=model_name, batch_id=batch_id, guard=guard)


ENTITY_KEY_CHECK_ID: Final = "mlops:entity-hash-key-check"


def entity_key_check(hash_key: SecretStr | str | bytes) -> str:
    """The keyed hash of a fixed id under ``hash_key``: which key a batch keyed its entities
    (and chose its canary arm) with, without the key itself."""
    return entity_key(ENTITY_KEY_CHECK_ID, hash_key)


def record_scoring_batch(
    engine: Any,
    *,
    batch_id: str,
    model_name: str,
    ctx: ScoringContext,
    spec_sha256: str,
    snapshots: list[str],
    rescore: bool = False,
    validated_at: datetime | None = None,
    source: str | None = None,
) -> str:
    """One chain record per scored batch, written before its predictions: the decision policy
    (and its hash), the model spec's hash, the versions and the canary share that every
    prediction of ``batch_id`` was made under. Answers "by which rule was this declined?"
    for as long as the chain is kept, whatever the spec file says later. Returns the record id.

    Refuses (:class:`BatchAlreadyScored`, nothing written) when this model scored any of
    ``snapshots`` before, unless ``rescore``; a rescore lists the batches it repeats
    (``rescore_of``). The check and the append hold the chain lock together, so two runs of
    the same batch cannot both pass it.
    """
    from mlops.audit import append_events_locked, chain_transaction, event_fields, lock_head

    models = ctx.models
    payload: dict[str, Any] = {
        "decision_policy": ctx.policy.model_dump(mode="json"),
        "decision_policy_sha256": decision_policy_hash(ctx.policy),
        "model_spec_sha256": spec_sha256,
        "champion_version": models.champion.version,
        "challenger_version": models.challenger.version if models.challenger else None,
        "canary_share": ctx.canary_share,
        "input_snapshots": snapshots,
        "entity_key_check": entity_key_check(ctx.hash_key),
    }
    if validated_at is not None:  # a retry or resume validates the source again as of this time
        payload["validated_at"] = validated_at.isoformat()
    if source is not None:  # how a resume finds this batch's validation time among unfinished ones
        payload["source"] = source
    with chain_transaction(engine) as conn:
        lock_head(conn)  # before the check: PostgreSQL locks the head row only when asked
        # A re-run of the same flow run (same batch id) resumes its own batch (mlops.scoring_resume)
        # and does not come here; were it to, its own record would not refuse it.
        prior = [p for p in prior_scorings(conn, model_name, snapshots) if p.batch_id != batch_id]
        if prior and not rescore:
            raise _already_scored(model_name, prior)
        if prior:
            payload["rescore_of"] = list(dict.fromkeys(p.batch_id for p in prior))
        fields = event_fields(RECORD_SCORING_BATCH, payload, {"model_name": model_name, "batch_id": batch_id})
        _, ((_, record_id, _),) = append_events_locked(conn, [fields])
    return record_id


@dataclass(frozen=True)
class StagedAuditSink:
    """An :class:`AuditSink` in two steps: ``prepare`` (validate and encode the records; no
    database) and ``write`` (link them to the chain and insert). :class:`OrderedAuditWriter`
    prepares on the scoring thread and writes on the writer thread, so the one step that
    must run in order (the chain) carries no work that could run beside it."""

    prepare: Callable[[pd.DataFrame], Any]
    write: Callable[[Any], WriteCounts]

    def __call__(self, records: pd.DataFrame) -> WriteCounts:
        return self.write(self.prepare(records))


def audit_sink(engine: Any, batch_id: str, claim: str | None = None) -> StagedAuditSink:
    """Append each chunk to the audit store (one transaction per chunk; routed deciding rows
    open review cases in the same transaction). With ``claim`` (this run's batch or resume
    record id), each chunk is refused if another run has resumed the batch since
    (:func:`check_claim`)."""
    from mlops.audit import EncodedPredictions, append_encoded, encode_predictions

    dialect = engine.dialect.name
    guard = None if claim is None else functools.partial(check_claim, batch_id=batch_id, claim=claim)

    def prepare(records: pd.DataFrame) -> EncodedPredictions:
        return encode_predictions(records, batch_id=batch_id, dialect=dialect, open_cases=True)

    def write(encoded: EncodedPredictions) -> WriteCounts:
        done = append_encoded(engine, encoded, guard=guard)
        return done.first_seq, done.last_seq, done.cases_opened, done.cases_superseded

    return StagedAuditSink(prepare, write)


class OrderedAuditWriter:
    """Hands chunks to an :class:`AuditSink` in order, on one background thread.

    While chunk ``k`` is appended (SQLite's and psycopg2's inserts, like XGBoost's predict,
    run without the GIL) the caller scores chunk ``k + 1``. At most one write is in flight
    and each waits for the one before, so the chain grows in chunk order exactly as without
    the thread. Each write is the sink's own transaction (all of a chunk or nothing), so a
    failure leaves the chain intact: the error surfaces at the next ``submit`` or at the end
    and nothing after it is written. ``background=False`` writes inline. A
    :class:`StagedAuditSink` is prepared on the caller's thread, before waiting for the
    write in flight, and only its ``write`` runs on the writer thread.

    Timings: ``audit_append`` is the writer's time (overlapping other steps when in the
    background); ``audit_wait`` the time the caller spent waiting for it; ``audit_encode``
    the caller's time preparing staged chunks.
    """

    def __init__(self, sink: AuditSink, tally: ScoringTally, timings: Timings, *, background: bool) -> None:
        self._sink, self._tally, self._timings = sink, tally, timings
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-writer") if background else None
        self._pending: Future[tuple[WriteCounts, float]] | None = None

    def _write(self, write: Callable[[Any], WriteCounts], item: Any) -> tuple[WriteCounts, float]:
        started = time.perf_counter()
        done = write(item)
        return done, time.perf_counter() - started

    def _collect(self, done: WriteCounts, seconds: float) -> None:
        self._tally.wrote(*done)
        self._timings.seconds["audit_append"] = self._timings.seconds.get("audit_append", 0.0) + seconds

    def wait(self) -> None:
        """Block until the write in flight is done (re-raising its error)."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        started = time.perf_counter()
        done = pending.result()
        self._timings.add("audit_wait", started)
        self._collect(*done)

    def submit(self, records: pd.DataFrame) -> None:
        if self._pool is None:
            self._collect(*self._write(self._sink, records))
            return
        write: Callable[[Any], WriteCounts] = self._sink
        item: Any = records
        if isinstance(self._sink, StagedAuditSink):
            started = time.perf_counter()
            write, item = self._sink.write, self._sink.prepare(records)
            self._timings.add("audit_encode", started)
        self.wait()
        self._pending = self._pool.submit(self._write, write, item)

    def __enter__(self) -> OrderedAuditWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:  # already failing: let the write in flight finish
                self._pending.exception()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def score_frames(
    frames: Iterator[tuple[str, pd.DataFrame]] | Sequence[tuple[str, pd.DataFrame]],
    ctx: ScoringContext,
    sink: AuditSink | None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    timings: Timings | None = None,
    on_chunk: Callable[[ScoredChunk], None] | None = None,
    background_writes: bool = True,
    rows_done: Mapping[str, int] | None = None,
) -> ScoringTally:
    """Score each (snapshot sha256, valid rows) in chunks and hand each chunk to ``sink``
    (in order; with ``background_writes`` the next chunk is scored while one is written,
    see :class:`OrderedAuditWriter`). ``rows_done``: per snapshot, the leading rows an
    earlier run of the batch already wrote (see :mod:`mlops.scoring_resume`); skipped."""
    rows_done = rows_done or {}
    timings = timings if timings is not None else Timings()
    tally = ScoringTally()
    writer = OrderedAuditWriter(sink, tally, timings, background=background_writes) if sink else None
    with writer or contextlib.nullcontext():
        for sha, frame in frames:
            for chunk in iter_scored_chunks(
                frame,
                ctx,
                snapshot_sha256=sha,
                chunk_rows=chunk_rows,
                timings=timings,
                start_row=rows_done.get(sha, 0),
            ):
                tally.add(chunk)
                if writer is not None:
                    writer.submit(chunk.records)
                if on_chunk is not None:
                    on_chunk(chunk)
                del chunk  # not held while the next chunk is scored (bounded memory)
    return tally


def scoring_markdown(result: ScoringResult) -> str:
    """The Prefect artifact of a batch: counts, review routing, canary, shadow agreement."""
    lines = [
        f"# Scoring `{result.source}` with {result.model_name}",
        "",
        f"Batch `{result.batch_id}`: champion v{result.champion_version}"
        + (f", challenger v{result.challenger_version}" if result.challenger_version else ", no challenger"),
        "",
    ]
    if not result.accepted:
        lines += ["**REJECTED by its contract:** " + "; ".join(result.rejection_reasons), ""]
        return "\n".join(lines)
    if result.resumed:
        lines += [
            f"**Resumed:** {result.rows_already_scored} rows were written by an earlier run of this batch; "
            "the counts below are this run's.",
            "",
        ]
    lines += [
        "| rows scored | approve | decline | routed to review | review cases opened | audit records |",
        "|---|---|---|---|---|---|",
        f"| {result.rows_scored} | {result.decisions.get(DECISION_APPROVE, 0)} "
        f"| {result.decisions.get(DECISION_DECLINE, 0)} | {result.routed_to_review} "
        f"| {result.review_cases_opened} | {result.audit_records_written} |",
        "",
    ]
    if result.review_cases_superseded:
        lines += [
            f"{result.review_cases_superseded} earlier open review case(s) of the same applications were "
            "superseded by this batch's decisions (a person reviews only an application's latest decision).",
            "",
        ]
    lines += [
        "| canary share requested | canary rows | canary share realised |",
        "|---|---|---|",
        f"| {result.canary_share_requested:.2%} | {result.canary_rows} | {result.canary_share_realised:.2%} |",
        "",
    ]
    if result.shadow_rows:
        lines += [
            "| shadow rows | same decision as champion | mean abs score diff |",
            "|---|---|---|",
            f"| {result.shadow_rows} | {result.shadow_agreement:.2%} | {result.shadow_mean_abs_score_diff:.5f} |",
            "",
        ]
    if result.decisions_by_role:
        lines += ["| decided by | approve | decline |", "|---|---|---|"]
        for role, counts in result.decisions_by_role.items():
            lines.append(
                f"| {role} | {counts.get(DECISION_APPROVE, 0)} | {counts.get(DECISION_DECLINE, 0)} |"
            )
        lines.append("")
    lines.append("Snapshots: " + ", ".join(f"`{s[:16]}…`" for s in result.snapshots))
    return "\n".join(lines)


def since_training_notes(
    spec: ModelSpec, contract: Contract, tags: Mapping[int, Mapping[str, str]], deciding: Sequence[int]
) -> list[str]:
    """What changed since the versions scoring a batch were trained (``tags``: each version's
    tags; ``deciding``: the versions that take decisions): the decision policy of the spec
    (for a deciding version) and the applications contract's version. Said, not refused: a
    policy may be changed on purpose without retraining, and every batch records the policy it
    used; versions without the tags are not compared."""
    from mlops.lineage import TAG_APPLICATIONS_CONTRACT_VERSION, TAG_DECISION_POLICY_SHA256

    notes: list[str] = []
    today = decision_policy_hash(spec.decision_policy)
    for version in deciding:
        gated = tags.get(version, {}).get(TAG_DECISION_POLICY_SHA256)
        if gated and len(gated) == 64 and gated != today:
            notes.append(
                f"the decision policy of model spec {spec.name} is not the one version {version} was "
                f"trained and gated under (sha256 {gated[:12]}..., today {today[:12]}...): it decides "
                "this batch under today's policy, recorded with the batch"
            )
    for version, version_tags in sorted(tags.items()):
        trained = [v for v in version_tags.get(TAG_APPLICATIONS_CONTRACT_VERSION, "").split(",") if v]
        if trained and contract.version not in trained:
            notes.append(
                f"the applications contract {contract.name} is version {contract.version}; version "
                f"{version} was trained on version {', '.join(trained)}: a category it never saw "
                "scores as a missing value"
            )
    return notes
