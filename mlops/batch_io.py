"""Read incoming batches (CSV or Parquet) from a local path or an ``s3://`` URI."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Final

import pandas as pd
import pyarrow.parquet as pq

from mlops.errors import InputError
from mlops.storage import s3_client, split_s3_uri

# Only an empty cell means "missing": "n/a", "NULL" and friends in a numeric column are a
# wrong type the contract must see, not a silent null.
CSV_NA_VALUES = [""]
# How pandas must read every batch CSV: no implicit index (a first row with more fields than
# the header would otherwise become an index and shift every column by the difference).
CSV_OPTIONS: Final[dict[str, Any]] = {
    "keep_default_na": False,
    "na_values": CSV_NA_VALUES,
    "index_col": False,
}
CSV_HEAD_BYTES: Final = 1 << 20


def csv_options(text_columns: Iterable[str] = ()) -> dict[str, Any]:
    """:data:`CSV_OPTIONS`, with ``text_columns`` (a contract's string and category columns)
    read as the text they hold. Left to pandas' inference, a column of numeric-looking ids
    became numbers: ``007`` was stored as ``7``, as ``7.0`` when a cell was empty, and
    ``9007199254740993`` as its float neighbour (two applications under one id); ``TRUE`` in
    a category column became ``True``. Numeric columns keep pandas' fast parser."""
    names = list(text_columns)
    return {**CSV_OPTIONS, "dtype": dict.fromkeys(names, "str")} if names else dict(CSV_OPTIONS)


def refuse_repeated_columns(names: list[str], source: str) -> None:
    """InputError if the batch names a column twice (CSV header or Parquet schema): only one of
    them could be validated, and which one would be an accident of the reader."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(
            f"batch {source} names column(s) {repeated} more than once",
            hint="fix the export so each column appears once",
        )


def first_non_utf8(stream: BinaryIO, block: int = CSV_HEAD_BYTES) -> tuple[bytes, int, int] | None:
    """The first byte of ``stream`` that is not UTF-8: (the byte, its offset in the file, its
    1-based line), or None. Read block by block, for the error message only."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0  # bytes read and newlines seen before this block
    while True:
        data = stream.read(block)
        try:
            decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            pending = len(exc.object) - len(data)  # held back from the previous block (no newline)
            at = offset - pending + exc.start
            line = lines + exc.object[: exc.start].count(b"\n") + 1
            return exc.object[exc.start : exc.start + 1], at, line
        if not data:
            return None
        offset += len(data)
        lines += data.count(b"\n")


def unreadable(source: str, suffix: str, exc: Exception, stream: BinaryIO | None = None) -> InputError:
    """The error for a batch its reader cannot parse, with the likely fix. ``stream``: the
    batch's bytes from the start, to say where a byte that is not UTF-8 is (pandas' own error
    counts from the start of its read buffer, so its offset was 1 for a byte on line 105400)."""
    if isinstance(exc, UnicodeDecodeError):
        found = first_non_utf8(stream) if stream is not None else None
        where = (
            f"byte {found[0]!r} at offset {found[1]}, line {found[2]}"
            if found
            else f"byte {exc.object[exc.start : exc.start + 1]!r}"
        )
        return InputError(
            f"batch {source} is not UTF-8 text ({where})",
            hint="export it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8.csv; "
            "for UTF-16 use -f utf-16)",
        )
    kind = "CSV" if suffix == "csv" else "Parquet"
    return InputError(
        f"batch {source} cannot be parsed as {suffix}: {type(exc).__name__}: {str(exc)[:300]}",
        hint=f"check that the file is complete and really is {kind}",
    )


def check_csv_head(head: bytes, source: str) -> None:
    """Refuse a CSV whose header names a column twice, or whose first row has more fields than
    the header (``head``: the file's first bytes; only its complete lines are read).

    pandas renames a repeated column (``age``, ``age.1``) and would validate only the first;
    extra fields in the first row become an index and shift the columns. Extra fields in a
    later row are a parse error of pandas' own.
    """
    text = head.decode("utf-8-sig", errors="replace")
    if len(head) == CSV_HEAD_BYTES:
        text = text[: text.rfind("\n") + 1]
    rows = list(itertools.islice(csv.reader(io.StringIO(text)), 2))
    if not rows:
        return
    header = [name.strip() for name in rows[0]]
    refuse_repeated_columns(header, source)
    if len(rows) > 1 and len(rows[1]) > len(header):
        raise InputError(
            f"batch {source}: its first row has {len(rows[1])} fields, the header {len(header)}",
            hint="fix the export (a delimiter inside an unquoted value, or a missing header name)",
        )


def _read_bytes(source: str, s3_endpoint_url: str | None) -> bytes:
    if source.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3_uri(source)
        try:
            obj = s3_client(s3_endpoint_url).get_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise InputError(
                f"cannot read batch {source}: {exc}",
                hint="check the bucket and key, credentials and MLOPS_S3_ENDPOINT_URL",
            ) from exc
        data: bytes = obj["Body"].read()
        return data
    return Path(source).read_bytes()


def check_batch_source(source: str) -> str:
    """The batch's format (``csv``, ``parquet``, ``pq``); InputError for another format or a
    local path that is not a file. Cheap: the CLI calls it before starting any flow."""
    local = None if source.startswith("s3://") else Path(source)
    if local is not None and local.is_dir():
        raise InputError(f"batch {source} is a folder", hint="pass the path of one .csv or .parquet file")
    suffix = source.lower().rsplit(".", 1)[-1] if "." in source else ""
    if suffix not in ("csv", "parquet", "pq"):
        raise InputError(
            f"batch {source} has an unsupported format {suffix!r}",
            hint="use a .csv or .parquet file",
        )
    if local is not None and not local.is_file():
        raise InputError(
            f"batch file {source} does not exist", hint="pass the path of a .csv or .parquet file"
        )
    return suffix


def read_batch(
    source: str, s3_endpoint_url: str | None = None, *, text_columns: Iterable[str] = ()
) -> pd.DataFrame:
    """Read one batch as it arrived. CSV: only an empty cell is missing, and the cells of
    ``text_columns`` (:attr:`mlops.contracts.Contract.text_columns`) keep their text exactly;
    the contract types the rest."""
    suffix = check_batch_source(source)
    data = _read_bytes(source, s3_endpoint_url)
    if not data:
        raise InputError(f"batch {source} is an empty file", hint="check the export that produced it")
    if suffix == "csv":
        check_csv_head(data[:CSV_HEAD_BYTES], source)
    try:
        if suffix == "csv":
            df = pd.read_csv(io.BytesIO(data), **csv_options(text_columns))
        else:
            refuse_repeated_columns(pq.read_schema(io.BytesIO(data)).names, source)
            df = pd.read_parquet(io.BytesIO(data))
    except InputError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        raise unreadable(source, suffix, exc, io.BytesIO(data)) from exc
    if df.empty:
        raise InputError(
            f"batch {source} has no rows", hint="an empty batch is never validated; check the export"
        )
    return df
