"""Read incoming batches (CSV or Parquet) from a local path or an ``s3://`` URI."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from mlops.errors import InputError
from mlops.storage import s3_client, split_s3_uri

# Only an empty cell means "missing": "n/a", "NULL" and friends in a numeric column are a
# wrong type the contract must see, not a silent null.
CSV_NA_VALUES = [""]


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
    path = Path(source)
    if not path.is_file():
        raise InputError(
            f"batch file {source} does not exist", hint="pass the path of a .csv or .parquet file"
        )
    return path.read_bytes()


def read_batch(source: str, s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """Read one batch as it arrived: CSV cells keep their text until the contract types them."""
    suffix = source.lower().rsplit(".", 1)[-1] if "." in source else ""
    if suffix not in ("csv", "parquet", "pq"):
        raise InputError(
            f"batch {source} has an unsupported format {suffix!r}",
            hint="use a .csv or .parquet file",
        )
    data = _read_bytes(source, s3_endpoint_url)
    if not data:
        raise InputError(f"batch {source} is an empty file", hint="check the export that produced it")
    try:
        if suffix == "csv":
            df = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=CSV_NA_VALUES)
        else:
            df = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        raise InputError(
            f"batch {source} cannot be parsed as {suffix}: {type(exc).__name__}: {exc}",
            hint="check that the file is complete and really is CSV/Parquet",
        ) from exc
    if df.empty:
        raise InputError(
            f"batch {source} has no rows", hint="an empty batch is never validated; check the export"
        )
    return df
