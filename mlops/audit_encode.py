"""Turning a prediction frame into audit rows fast: validation, ids and column encodings.

Each distinct value of a low-cardinality column (model, role, decision, reason, snapshot) is
encoded once (JSON for the hash, COPY text for PostgreSQL) and spread with its factorize
codes; per-row columns (ids, keys, hashes, scores) are converted to Python lists once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from pydantic import SecretStr

from mlops.audit_hashing import (
    CANONICAL_FIELDS,
    canonical_json,
    check_hex64,
    entity_key,
    prediction_hash_tails,
)
from mlops.errors import InputError

RECORD_PREDICTION: Final = "prediction"
RECORD_SCORING_BATCH: Final = "scoring_batch"  # a scoring run's first record (mlops.scoring)
ROLES: Final = ("champion", "shadow", "canary")
DECIDING_ROLES: Final = ("champion", "canary")  # a routed shadow row opens no case
REQUIRED_PREDICTION_COLUMNS: Final = (
    "model_name",
    "model_version",
    "role",
    "score",
    "decision",
    "input_snapshot",
    "input_row",
    "input_hash",
)
# Columns a prediction row is written with, between seq/created_at and prev/record hash.
PREDICTION_COLUMNS: Final = CANONICAL_FIELDS[1:-1]  # all but created_at and payload
_CODED: Final = (
    "record_type",
    "batch_id",
    "model_name",
    "model_version",
    "model_alias",
    "role",
    "decision",
    "review_reason",
    "input_snapshot",
)


def _fail(message: str, hint: str | None = None) -> InputError:
    return InputError(f"prediction batch: {message}", hint=hint)


# --- record ids --------------------------------------------------------------------------


@dataclass
class RecordIds:
    """UUIDv7 record ids for one batch (RFC 9562, "fixed-length dedicated counter").

    48-bit Unix milliseconds, version 7, a 30-bit counter (12 bits of rand_a + 18 of rand_b)
    and 44 random bits per batch: ids rise within a batch, so the record_id index grows at
    its right edge instead of at random pages.
    """

    millis: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    salt: int = field(default_factory=lambda: int.from_bytes(os.urandom(6)) & ((1 << 44) - 1))
    counter: int = 0

    def take(self, n: int) -> list[str]:
        if self.counter + n >= 1 << 30:
            raise _fail("more than 2**30 records in one batch")
        count = np.arange(self.counter, self.counter + n, dtype=np.uint64)
        self.counter += n
        octets = np.empty((n, 2), dtype=">u8")
        octets[:, 0] = (
            (np.uint64(self.millis) << np.uint64(16)) | np.uint64(0x7000) | (count >> np.uint64(18))
        )
        octets[:, 1] = (
            np.uint64(0b10 << 62) | ((count & np.uint64(0x3FFFF)) << np.uint64(44)) | np.uint64(self.salt)
        )
        hexed = np.frombuffer(octets.tobytes().hex().encode("ascii"), dtype=np.uint8)
        hexed = hexed.reshape(n, 32)
        text = np.full((n, 36), ord("-"), dtype=np.uint8)
        for src, dst, width in ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)):
            text[:, dst : dst + width] = hexed[:, src : src + width]  # 8-4-4-4-12 groups
        ids: list[str] = text.view("S36").ravel().astype("U36").tolist()
        return ids


# --- validation --------------------------------------------------------------------------


def routed_mask(frame: pd.DataFrame) -> np.ndarray:
    """Boolean array: which rows were routed to review (no column -> none)."""
    if "review_routed" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    column = frame["review_routed"]
    if column.isna().any():
        raise _fail("review_routed has missing values")
    try:
        return column.to_numpy(dtype=bool)
    except (TypeError, ValueError) as exc:
        raise _fail("review_routed must be booleans") from exc


def validate_predictions(frame: pd.DataFrame, hash_key: object) -> None:
    """Vectorised checks of the whole batch before anything is written."""
    if len(frame) == 0:
        raise _fail("the batch is empty")
    missing = [c for c in REQUIRED_PREDICTION_COLUMNS if c not in frame.columns]
    if "entity_key" not in frame.columns and "entity_id" not in frame.columns:
        missing.append("entity_key (or entity_id with hash_key)")
    if missing:
        raise _fail(f"missing columns {missing}")
    if "entity_key" not in frame.columns and hash_key is None:
        raise _fail("entity_id needs hash_key (Settings.entity_hash_key) to be keyed")
    for name in ("model_name", "model_version", "role", "decision", "input_snapshot"):
        if frame[name].isna().any():
            raise _fail(f"column {name} has missing values")
    bad_roles = sorted(map(str, set(frame["role"].unique()) - set(ROLES)))
    if bad_roles:
        raise _fail(f"unknown roles {bad_roles}; expected one of {list(ROLES)}")
    for name in ("score", "confidence"):
        if name in frame.columns:
            values = _floats(frame[name], name)
            bad = ~np.isfinite(values) & (~np.isnan(values) if name == "confidence" else True)
            if bad.any():
                raise _fail(f"column {name} has NaN or infinite values")
    rows = frame["input_row"]
    if rows.isna().any() or not pd.api.types.is_integer_dtype(rows) or (rows < 0).any():
        raise _fail("input_row must be non-negative integers")
    routed = routed_mask(frame)
    if routed.any():
        if "review_reason" not in frame.columns:
            raise _fail("routed rows need a review_reason column")
        reasons = frame.loc[routed, "review_reason"]
        if reasons.isna().any() or (reasons.astype(str).str.strip().str.len() == 0).any():
            raise _fail("every routed row needs a review_reason")


def _floats(column: pd.Series, name: str) -> np.ndarray:
    try:
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise _fail(f"column {name} is not numeric") from exc


# --- encoding ----------------------------------------------------------------------------


def copy_escape(text: str) -> str:
    """PostgreSQL COPY text escaping of one value."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@dataclass(frozen=True)
class Coded:
    """A low-cardinality column as factorize codes into its distinct values (+ None last)."""

    codes: np.ndarray
    uniques: list[str | None]

    @classmethod
    def of(cls, column: pd.Series) -> Coded:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        return cls(codes, [str(u) for u in uniques] + [None])

    @classmethod
    def constant(cls, value: str | None, n: int) -> Coded:
        return cls(np.zeros(n, dtype=np.intp), [value, None])

    def take(self, table: Sequence[Any]) -> list[Any]:
        spread: list[Any] = np.array(table, dtype=object)[self.codes].tolist()
        return spread

    def values(self) -> list[Any]:
        return self.take(self.uniques)

    def json(self) -> list[str]:
        return self.take([canonical_json(u) for u in self.uniques])

    def copy(self) -> list[str]:
        return self.take(["\\N" if u is None else copy_escape(u) for u in self.uniques])


def _nan_as(texts: list[str], null: str) -> list[str]:
    return [null if t == "nan" else t for t in texts]


@dataclass(frozen=True)
class EncodedChunk:
    """One chunk of a prediction batch, validated and ready to hash and write.

    Floats are kept with their ``repr`` texts (computed once: the hash and PostgreSQL's
    COPY use the same text, which is also what makes the stored float64 round-trip).
    """

    record_id: list[str]
    entity_key: list[str]
    input_hash: list[str]
    score: list[float]
    score_text: list[str]
    confidence: list[float]  # NaN = absent
    confidence_text: list[str]  # "nan" = absent
    routed: np.ndarray
    input_row: list[int]
    input_row_text: list[str]
    coded: dict[str, Coded]

    def __len__(self) -> int:
        return len(self.record_id)

    def hash_tails(self) -> list[bytes]:
        """Canonical bytes of each record after ``created_at`` (see mlops.audit)."""
        texts = {name: coded.json() for name, coded in self.coded.items()}
        texts["record_id"] = self.record_id
        texts["entity_key"] = self.entity_key
        texts["input_hash"] = self.input_hash
        texts["score"] = self.score_text
        texts["confidence"] = _nan_as(self.confidence_text, "null")
        texts["review_routed"] = np.where(self.routed, "true", "false").tolist()
        texts["input_row"] = self.input_row_text
        return prediction_hash_tails(texts)

    def db_columns(self) -> list[list[Any]]:
        """DB-API values of :data:`PREDICTION_COLUMNS`, in that order."""
        values: dict[str, list[Any]] = {name: c.values() for name, c in self.coded.items()}
        values |= {
            "record_id": self.record_id,
            "entity_key": self.entity_key,
            "input_hash": self.input_hash,
            "score": self.score,
            "confidence": [None if v != v else v for v in self.confidence],
            "review_routed": self.routed.tolist(),
            "input_row": self.input_row,
        }
        return [values[name] for name in PREDICTION_COLUMNS]

    def copy_rows(self) -> list[str]:
        """PostgreSQL COPY text of each row's :data:`PREDICTION_COLUMNS` (tab-separated, no
        newline); the writer adds seq and created_at before and the two hashes after."""
        c = {name: coded.copy() for name, coded in self.coded.items()}
        routed = np.where(self.routed, "t", "f").tolist()
        confidence = _nan_as(self.confidence_text, "\\N")
        return [
            f"{rid}\t{rt}\t{bid}\t{ek}\t{mn}\t{mv}\t{ma}\t{ro}\t{sc}\t{de}\t{co}\t{rr}\t{rs}\t{sn}\t{ir}\t{ih}"
            for rid, rt, bid, ek, mn, mv, ma, ro, sc, de, co, rr, rs, sn, ir, ih in zip(
                self.record_id,
                c["record_type"],
                c["batch_id"],
                self.entity_key,
                c["model_name"],
                c["model_version"],
                c["model_alias"],
                c["role"],
                self.score_text,
                c["decision"],
                confidence,
                routed,
                c["review_reason"],
                c["input_snapshot"],
                self.input_row_text,
                self.input_hash,
                strict=True,
            )
        ]

    def row_grid(self, width: int, first: int) -> np.ndarray:
        """An object array ``(rows, width)`` whose columns ``first...`` hold the DB-API values
        of :data:`PREDICTION_COLUMNS`; the writer fills the columns around them."""
        grid = np.empty((len(self), width), dtype=object)
        for j, column in enumerate(self.db_columns(), start=first):
            grid[:, j] = column
        return grid

    def deciding_rows(self) -> DecidingRows:
        """Its deciding (champion, canary) rows: the predictions that supersede their
        applications' open cases."""
        role = self.coded["role"]
        deciding = [i for i, r in enumerate(role.uniques) if r in DECIDING_ROLES]
        return DecidingRows(
            np.isin(role.codes, deciding), self.coded["model_name"], self.entity_key, self.record_id
        )

    def case_stubs(self) -> list[dict[str, Any]]:
        """Review cases to open (routed rows of a deciding role), without ``created_at``."""
        role = self.coded["role"].values()
        picked = [i for i in np.flatnonzero(self.routed).tolist() if role[i] in DECIDING_ROLES]
        if not picked:
            return []
        get = {name: self.coded[name].values() for name in ("batch_id", "model_name")}
        version = self.coded["model_version"].values()
        reason = self.coded["review_reason"].values()
        return [
            {
                "case_id": self.record_id[i],
                "status": "open",
                "routing_reason": reason[i],
                "batch_id": get["batch_id"][i],
                "model_name": get["model_name"][i],
                "model_version": version[i],
                "role": role[i],
                "score": self.score[i],
                "entity_key": self.entity_key[i],
            }
            for i in picked
        ]


@dataclass(frozen=True)
class DecidingRows:
    """A chunk's deciding rows as arrays over its rows (the lists are the chunk's own, not
    copies): the supersede check turns them into (model -> entity key -> record id) only for
    the models whose open cases it has to look at."""

    mask: np.ndarray
    model: Coded
    entity_key: list[str]
    record_id: list[str]

    def models(self) -> set[str]:
        return {str(self.model.uniques[code]) for code in np.unique(self.model.codes[self.mask])}

    def latest(self, model: str, into: dict[str, str]) -> None:
        """Add ``entity key -> record id`` of the model's deciding rows to ``into``, in row order
        (a later row of the same key wins)."""
        code = self.model.uniques.index(model) if model in self.model.uniques else -2
        rows = np.flatnonzero(self.mask & (self.model.codes == code))
        if len(rows):
            keys = np.asarray(self.entity_key, dtype=object)[rows].tolist()
            ids = np.asarray(self.record_id, dtype=object)[rows].tolist()
            into.update(zip(keys, ids, strict=True))


def _strings(column: pd.Series) -> list[str]:
    values: list[str] = column.to_numpy(dtype=object).tolist()
    return values


def encode_chunk(
    chunk: pd.DataFrame,
    batch_id: str,
    hash_key: SecretStr | str | bytes | None,
    ids: RecordIds,
) -> EncodedChunk:
    """Encode one validated chunk; keys raw entity ids here if no entity_key column."""
    n = len(chunk)
    if "entity_key" in chunk.columns:
        keys = _strings(chunk["entity_key"])
    else:
        if hash_key is None:
            raise _fail("entity_id needs hash_key")
        keys = _strings(entity_key(chunk["entity_id"], hash_key))
    hashes = _strings(chunk["input_hash"])
    check_hex64(keys, "entity_key")
    check_hex64(hashes, "input_hash")
    coded = {
        "record_type": Coded.constant(RECORD_PREDICTION, n),
        "batch_id": Coded.constant(batch_id, n),
    }
    for name in _CODED[2:]:
        coded[name] = Coded.of(chunk[name]) if name in chunk.columns else Coded.constant(None, n)
    snapshots = [u for u in coded["input_snapshot"].uniques if u is not None]
    check_hex64(snapshots, "input_snapshot")
    confidence = (
        _floats(chunk["confidence"], "confidence").tolist()
        if "confidence" in chunk.columns
        else [float("nan")] * n
    )
    score = _floats(chunk["score"], "score").tolist()
    input_row = chunk["input_row"].to_numpy(dtype=np.int64).tolist()
    return EncodedChunk(
        record_id=ids.take(n),
        entity_key=keys,
        input_hash=hashes,
        score=score,
        score_text=list(map(float.__repr__, score)),
        confidence=confidence,
        confidence_text=list(map(float.__repr__, confidence)),
        routed=routed_mask(chunk),
        input_row=input_row,
        input_row_text=list(map(str, input_row)),
        coded=coded,
    )
