"""Canonical serialisation and hashes of audit records (see :mod:`mlops.audit` for the spec).

Two implementations of one serialisation live here:

* :func:`canonical_record_bytes` / :func:`record_hash`: the reference, one record at a time,
  a plain ``json.dumps`` of the field list. Verification and single events use it.
* :func:`prediction_hash_tails` + :func:`chain_hashes`: the bulk path for prediction batches.
  Each row's fields after ``created_at`` (the "tail") are formatted from pre-encoded JSON
  texts (:mod:`mlops.audit_encode` encodes each distinct value once); the chain loop only
  concatenates ``prefix + prev_hash + created_at + tail`` and hashes. Tests pin both paths
  to the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final, overload

import numpy as np
import pandas as pd
from pydantic import SecretStr

from mlops.errors import InputError

FORMAT_TAG: Final = "mlops-audit/1"
GENESIS_HASH: Final = "0" * 64

# Field order of the canonical array after FORMAT_TAG and prev_hash. Never reorder: append
# new fields at the end under a new FORMAT_TAG.
CANONICAL_FIELDS: Final = (
    "created_at",
    "record_id",
    "record_type",
    "batch_id",
    "entity_key",
    "model_name",
    "model_version",
    "model_alias",
    "role",
    "score",
    "decision",
    "confidence",
    "review_routed",
    "review_reason",
    "input_snapshot",
    "input_row",
    "input_hash",
    "payload",
)

_HEX_RUN = re.compile(r"[0-9a-f]*")  # one value, in error messages
_SHA256_BLOCK: Final = 64
_TAIL_GETTER: Final = itemgetter(*CANONICAL_FIELDS)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def canonical_json(value: Any) -> str:
    """Canonical JSON text of a value: compact, sorted keys, UTF-8 text, floats by ``repr``."""
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"value is not canonical JSON ({exc})") from exc


def normalise_payload(payload: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The payload exactly as it will read back from the store (tuples become lists, ...)."""
    if payload is None:
        return None
    if not isinstance(payload, Mapping):
        raise InputError(f"payload must be a JSON object, got {type(payload).__name__}")
    loaded: dict[str, Any] = json.loads(canonical_json(dict(payload)))
    return loaded


@lru_cache(maxsize=4096)
def format_created_at(moment: datetime) -> str:
    """``created_at`` in the canonical form ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC).

    Cached: every record of a batch shares one timestamp.
    """
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_utc(moment: datetime) -> datetime:
    """A naive datetime is taken as UTC (SQLite returns naive values); aware ones converted."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def canonical_record_bytes(prev_hash: str, fields: Mapping[Any, Any]) -> bytes:
    """The exact bytes hashed for one record (reference implementation).

    ``fields`` maps every name of :data:`CANONICAL_FIELDS` to its value (``created_at`` a
    datetime, ``payload`` a dict or None, the rest str/int/float/bool/None).
    """
    values = [FORMAT_TAG, prev_hash, *_TAIL_GETTER(fields)]
    values[2] = format_created_at(values[2])
    return canonical_json(values).encode("utf-8")


def record_hash(prev_hash: str, fields: Mapping[Any, Any]) -> str:
    """sha256 hex of :func:`canonical_record_bytes`."""
    return hashlib.sha256(canonical_record_bytes(prev_hash, fields)).hexdigest()


# --- bulk path ---------------------------------------------------------------------------


def prediction_hash_tails(texts: Mapping[str, Sequence[str]]) -> list[bytes]:
    """Per-row canonical bytes after ``created_at`` of prediction records (payload null).

    ``texts[name]`` holds each row's canonical JSON text of field ``name`` (``"\"champion\""``,
    ``"0.25"``, ``"null"``, ...), except ``record_id``, ``entity_key`` and ``input_hash``:
    their raw strings, already validated as uuid / lowercase hex, which the template quotes.
    """
    return [
        f'{a}",{b},{c},"{d}",{e},{f},{g},{h},{i},{j},{k},{m},{n},{o},{p},"{q}",null]'.encode()
        for a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q in zip(
            texts["record_id"],
            texts["record_type"],
            texts["batch_id"],
            texts["entity_key"],
            texts["model_name"],
            texts["model_version"],
            texts["model_alias"],
            texts["role"],
            texts["score"],
            texts["decision"],
            texts["confidence"],
            texts["review_routed"],
            texts["review_reason"],
            texts["input_snapshot"],
            texts["input_row"],
            texts["input_hash"],
            strict=True,
        )
    ]


def chain_hashes(head_hash: str, created_at: datetime, tails: Iterable[bytes]) -> list[str]:
    """Record hashes of consecutive records whose tails are given, starting after ``head_hash``.

    The loop continues from the sha256 state of the constant prefix (copied per record)
    instead of hashing the prefix again each time.
    """
    mid = f'","{format_created_at(created_at)}","'.encode()
    start = hashlib.sha256(f'["{FORMAT_TAG}","'.encode()).copy
    prev = head_hash.encode("ascii")
    hashes: list[str] = []
    append = hashes.append
    for tail in tails:
        h = start()
        h.update(prev + mid + tail)
        digest = h.hexdigest()
        append(digest)
        prev = digest.encode("ascii")
    return hashes


def _hex_table() -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True
    return table


_LOWER_HEX: Final = _hex_table()


def _all_lower_hex(text: str) -> bool:
    """Whether ``text`` is only lowercase hex digits (a byte table lookup, not a regex)."""
    data = text.encode("utf-8", "surrogatepass")
    return bool(_LOWER_HEX[np.frombuffer(data, dtype=np.uint8)].all())


def check_hex64(values: Sequence[str], name: str) -> None:
    """Raise InputError unless every value is 64 lowercase hex characters (a sha256)."""
    if set(map(type, values)) - {str}:
        raise InputError(f"{name} must be strings of 64 lowercase hex characters")
    if set(map(len, values)) - {64} or not _all_lower_hex("".join(values)):
        bad = next(v for v in values if len(v) != 64 or not _HEX_RUN.fullmatch(v))
        raise InputError(
            f"{name} must be 64 lowercase hex characters (a sha256 hex digest), got {bad[:80]!r}"
        )


# --- entity keys ---------------------------------------------------------------------------


def _key_bytes(key: SecretStr | str | bytes) -> bytes:
    raw = key.get_secret_value() if isinstance(key, SecretStr) else key
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if not data:
        raise InputError("the entity hash key is empty", hint="set MLOPS_ENTITY_HASH_KEY")
    return data


def _id_text(raw_id: object) -> str:
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int | np.integer):
        raise InputError(
            f"entity ids must be strings or integers, got {type(raw_id).__name__}",
            hint="cast the id column to str or int (missing ids cannot be keyed)",
        )
    return str(int(raw_id)) if isinstance(raw_id, np.integer) else str(raw_id)


class EntityKeyer:
    """``HMAC-SHA256(key, message)`` for many messages, about 3x faster than ``hmac.digest``.

    Our own code to beat a library: ``hmac.digest`` (OpenSSL 3) sets up the key for every
    call (~2.2 us here). RFC 2104 HMAC is ``H((K ^ opad) || H((K ^ ipad) || m))``; the two
    padded-key states are hashed once and copied per message (~1.2 us). Unit tests pin the
    result to :func:`hmac.digest`.
    """

    def __init__(self, key: SecretStr | str | bytes) -> None:
        secret = _key_bytes(key)
        if len(secret) > _SHA256_BLOCK:
            secret = hashlib.sha256(secret).digest()
        padded = secret.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def hexdigests(self, messages: Iterable[bytes]) -> list[str]:
        """Lowercase hex HMAC of each message, in order."""
        inner, outer = self._inner.copy, self._outer.copy
        out: list[str] = []
        append = out.append
        for message in messages:
            h = inner()
            h.update(message)
            o = outer()
            o.update(h.digest())
            append(o.hexdigest())
        return out


def _id_texts(raw_id: pd.Series) -> list[str]:
    """The text of each id (see :func:`entity_key`); refuses missing, float and other ids."""
    if raw_id.isna().any():
        raise InputError("entity ids must not be missing")
    dtype = raw_id.dtype
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return list(map(str, raw_id.tolist()))
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        texts: list[str] = raw_id.tolist()  # a string dtype holds only str (missing refused above)
        return texts
    return [_id_text(v) for v in raw_id.to_numpy(dtype=object).tolist()]


@overload
def entity_key(raw_id: str | int, key: SecretStr | str | bytes) -> str: ...


@overload
def entity_key(raw_id: pd.Series, key: SecretStr | str | bytes) -> pd.Series: ...


def entity_key(raw_id: str | int | pd.Series, key: SecretStr | str | bytes) -> str | pd.Series:
    """Keyed hash of an entity id: ``HMAC-SHA256(key, utf8(str(id))).hexdigest()``.

    Integers are keyed by their decimal digits, so ``123`` and ``"123"`` give the same key.
    A pandas Series gives a Series (same index) of keys; missing or float ids are refused.
    """
    if isinstance(raw_id, pd.Series):
        texts = _id_texts(raw_id)
        keys = EntityKeyer(key).hexdigests(t.encode() for t in texts)
        return pd.Series(keys, index=raw_id.index, dtype=object, name=raw_id.name)
    return hmac.digest(_key_bytes(key), _id_text(raw_id).encode(), "sha256").hex()
