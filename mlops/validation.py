"""Validate a batch against its contract: GX decides pass/fail, a vectorised mask quarantines rows.

Steps: check the columns are there -> type the raw batch by the contract (cells that do not
parse become ``wrong_type``) -> GX validates the typed batch (BASIC) -> the same contract
builds one boolean mask per rule, each failed row keeps every reason -> the batch is accepted
only if GX passes and the quarantined share is within the limit.
Invariant: ``rows_valid + rows_quarantined == rows_read``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from mlops.constants import QUARANTINE_REASONS_COLUMN, ROLE_ID
from mlops.contracts import ColumnSpec, Contract
from mlops.errors import InputError, MissingColumns

SOURCE_ROW_COLUMN = "_source_row"
_EXACT_INT: Final = 2.0**53  # int columns: larger magnitudes are refused as wrong_type

# Kinds of row-level failure (the part after ``column:`` in a reason).
NULL_REQUIRED = "null_required"
WRONG_TYPE = "wrong_type"
BELOW_MIN = "below_min"
ABOVE_MAX = "above_max"
UNSEEN_CATEGORY = "unseen_category"
DUPLICATE = "duplicate"
IN_FUTURE = "in_future"


class ExpectationOutcome(BaseModel):
    """One GX expectation's result, as kept in the summary and the Prefect artifact."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    error: str | None = None


class ValidationSummary(BaseModel):
    """What happened to a batch; the CLI prints it as JSON and events carry its counts."""

    contract: str
    contract_version: str
    source: str
    rows_read: int
    rows_valid: int
    rows_quarantined: int
    quarantined_share: float
    max_quarantine_share: float
    gx_success: bool
    accepted: bool
    reason_counts: dict[str, int]
    failed_expectations: list[ExpectationOutcome]
    expectations_evaluated: int
    extra_columns: list[str]
    #: When the batch was checked; ``not_in_future`` columns were held to this plus the
    #: contract's clock skew (``latest_allowed``).
    checked_at: datetime | None = None
    latest_allowed: datetime | None = None
    snapshot_sha256: str | None = None
    snapshot_uri: str | None = None
    quarantine_sha256: str | None = None
    quarantine_uri: str | None = None
    data_docs: str | None = None
    #: Where this summary is kept in the object store (``validations/<dataset>/``), once written.
    record_uri: str | None = None

    @property
    def rejection_reasons(self) -> list[str]:
        out = []
        if not self.gx_success:
            out.append(f"{len(self.failed_expectations)} GX expectation(s) failed")
        if self.quarantined_share > self.max_quarantine_share:
            out.append(
                f"quarantined share {self.quarantined_share:.2%} is above the limit "
                f"{self.max_quarantine_share:.2%}"
            )
        if self.rows_valid == 0:
            out.append("no valid rows: every row was quarantined")
        return out

    def detail_lines(self) -> list[str]:
        """What a person needs besides the counts: why rows were quarantined (most frequent
        reason first), where they went, and the columns the contract ignored."""
        lines = []
        if self.reason_counts:
            ranked = sorted(self.reason_counts.items(), key=lambda item: (-item[1], item[0]))
            lines.append("quarantine reasons: " + ", ".join(f"{r} {n}" for r, n in ranked))
        if self.quarantine_uri:
            lines.append(f"quarantined rows (with their reasons): {self.quarantine_uri}")
        if self.extra_columns:
            lines.append(
                f"ignored column(s) not in contract {self.contract}: {', '.join(self.extra_columns)}"
            )
        return lines


def batch_accepted(*, gx_success: bool, share: float, limit: float, rows_valid: int) -> bool:
    """A batch is accepted when GX passes, the quarantined share is within the limit and at
    least one row is valid (a limit of 1 must not accept a batch of nothing)."""
    return gx_success and share <= limit and rows_valid > 0


@dataclass
class ValidatedBatch:
    """The split batch: typed valid rows, raw quarantined rows with reasons, and the summary."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    summary: ValidationSummary


def check_columns(raw: pd.DataFrame, contract: Contract, source: str) -> list[str]:
    """Raise on missing declared columns, or on a column the quarantine file adds (a quarantined
    row failed on it, exit 3, or had its value replaced by the reasons); return the extra
    columns the contract does not know."""
    missing = [c for c in contract.column_names if c not in raw.columns]
    if missing:
        header = str(raw.columns[0]) if len(raw.columns) == 1 else ""
        delimiter = next((d for d in (";", "\t", "|") if d in header), None)
        message = f"batch {source} lacks column(s) {missing} required by contract {contract.name}@{contract.version}"
        if delimiter:
            raise InputError(
                message,
                hint=f"its header reads as one column holding {delimiter!r}: export the file "
                "comma-separated (the delimiter of a CSV batch is ',')",
            )
        raise MissingColumns(
            message,
            hint="fix the export, or check the batch is of this dataset "
            "(mlops validate --contract NAME picks another contract)",
        )
    reserved = [c for c in (SOURCE_ROW_COLUMN, QUARANTINE_REASONS_COLUMN) if c in raw.columns]
    if reserved:
        raise InputError(
            f"batch {source} has column(s) {reserved}, which the quarantine file adds to each row",
            hint="rename them in the export (the quarantine keeps every column of a row as it arrived)",
        )
    return [c for c in raw.columns if c not in contract.column_names]


def _is_text(series: pd.Series) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_datetime64_any_dtype(series.dtype)
    )


def type_column(raw: pd.Series, col: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
    """Cast one raw column to its contract dtype; return it and the mask of cells that did not parse."""
    present = raw.notna().to_numpy()
    if col.dtype in ("int", "float"):
        if pd.api.types.is_bool_dtype(raw.dtype):
            typed = pd.Series(np.nan, index=raw.index, dtype="float64")
        elif _is_text(raw):
            typed = pd.to_numeric(raw, errors="coerce").astype("float64")
        else:
            typed = raw.astype("float64")
        values = typed.to_numpy()
        wrong = present & np.isnan(values)
        if col.dtype == "int":
            # Ints pass through float64, which holds whole numbers exactly only below 2**53:
            # a larger id would silently become its neighbour (two applications, one key).
            with np.errstate(invalid="ignore"):
                wrong |= ~np.isnan(values) & ((np.floor(values) != values) | (np.abs(values) >= _EXACT_INT))
        return typed, wrong
    if col.dtype == "datetime":
        if pd.api.types.is_datetime64_any_dtype(raw.dtype):
            typed = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        else:
            typed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
        return typed, present & typed.isna().to_numpy()
    # string / category: any present value is text.
    text = as_text(raw)
    if col.role == ROLE_ID:
        text = _trimmed_id(text)
        return text, _invisible_characters(text)
    return text, np.zeros(len(raw), dtype=bool)


#: Characters that print as nothing or as a plain space: control and format characters (a tab
#: inside an id, zero-width space, byte-order mark), line and paragraph separators, the
#: non-ASCII spaces (no-break, ideographic, ...), variation selectors, the combining grapheme
#: joiner, the Hangul fillers and the blank Braille pattern.
_INVISIBLE: Final = (
    r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\x{00A0}\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}"
    r"\x{034F}\x{FE00}-\x{FE0F}\x{115F}\x{1160}\x{3164}\x{FFA0}\x{2800}]"
)


def _invisible_characters(text: pd.Series) -> np.ndarray:
    """Ids holding a character nobody sees (``APP-1`` + zero-width space): quarantined as
    ``wrong_type``, or the application would be scored under an id that differs, invisibly, from
    the one ``mlops audit find APP-1`` and the outcomes use."""
    arrow = pa.array(text.array, type=pa.large_string(), from_pandas=True)
    found = pc.match_substring_regex(arrow, _INVISIBLE)
    return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _trimmed_id(text: pd.Series) -> pd.Series:
    """Text ids without surrounding whitespace, and a blank id missing (so a required id column
    quarantines it as null). An export that pads ``APP-1`` would otherwise make a second
    application of it, which ``mlops audit find APP-1`` (it trims what it is given) never finds."""
    trimmed = text.str.strip()
    blank = trimmed.eq("").fillna(False).to_numpy(dtype=bool)
    if blank.any():
        trimmed = trimmed.mask(blank)
    return trimmed


TEXT_DTYPE = pd.StringDtype(na_value=np.nan)


def as_text(raw: pd.Series) -> pd.Series:
    """Each present value as its text (``str(value)``), missing values missing, in TEXT_DTYPE.

    A pandas ``category`` column (what a Parquet file written from pandas reads back as) has
    each category's text made once and spread by the codes: about 5 ms at 1M rows instead of
    about 0.1 s value by value. Same texts as the value-by-value path, which is what pandas'
    own ``Categorical.astype(str)`` does too (a unit test compares them).
    """
    if isinstance(raw.dtype, pd.CategoricalDtype):
        texts = pd.Series(raw.cat.categories).astype("str").to_numpy(dtype=object)
        codes = raw.cat.codes.to_numpy()
        spread = pa.array(texts, type=pa.large_string()).take(pa.array(codes, mask=codes < 0))
        return pd.Series(pd.array(spread, dtype=TEXT_DTYPE), index=raw.index, name=raw.name)
    return raw.astype("str").where(raw.notna(), None).astype(TEXT_DTYPE)


def row_masks(
    typed: pd.DataFrame,
    wrong: dict[str, np.ndarray],
    contract: Contract,
    *,
    latest_allowed: datetime | None = None,
) -> dict[str, np.ndarray]:
    """One boolean mask per ``column:kind`` rule (True = the row breaks it).

    ``not_in_future`` columns are held to ``latest_allowed`` (default: now plus the contract's
    clock skew)."""
    masks: dict[str, np.ndarray] = {}
    if latest_allowed is None:
        latest_allowed = contract.latest_allowed(datetime.now(UTC))
    latest = contract.keep_on_duplicate == "latest" and contract.timestamp_column is not None

    def add(name: str, mask: np.ndarray) -> None:
        if mask.any():
            masks[name] = mask

    for col in contract.columns:
        series = typed[col.name]
        missing = series.isna().to_numpy()
        add(f"{col.name}:{WRONG_TYPE}", wrong[col.name])
        if not col.nullable:
            add(f"{col.name}:{NULL_REQUIRED}", missing & ~wrong[col.name])
        if col.min is not None or col.max is not None:
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            with np.errstate(invalid="ignore"):
                if col.min is not None:
                    add(f"{col.name}:{BELOW_MIN}", values < col.min)
                if col.max is not None:
                    add(f"{col.name}:{ABOVE_MAX}", values > col.max)
        if col.categories is not None:
            add(f"{col.name}:{UNSEEN_CATEGORY}", ~missing & ~series.isin(col.categories).to_numpy())
        if col.not_in_future:
            add(f"{col.name}:{IN_FUTURE}", _after(series, latest_allowed))
    # Duplicates are judged among the rows that break no other rule: a row quarantined for
    # its own fault (a bad amount, a date of 2099 by a typo, an impossible label) is not the
    # copy kept, so a corrected re-send of it is kept instead of being lost as its "duplicate"
    # (and the bad row is quarantined for its fault alone). A batch scored in chunks applies
    # the same rule across chunks (mlops.scoring_input remembers only the rows it kept).
    unique = [col for col in contract.columns if col.unique]
    if unique:
        broken = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(len(typed), dtype=bool)
        order = _latest_last(typed, contract) if latest else None
        for col in unique:
            missing = typed[col.name].isna().to_numpy()
            add(
                f"{col.name}:{DUPLICATE}",
                _duplicates(typed[col.name], ~missing & ~wrong[col.name] & ~broken, order),
            )
    return masks


def _after(series: pd.Series, bound: datetime) -> np.ndarray:
    """Rows whose (UTC) datetime is later than ``bound``; missing values are not."""
    return np.asarray((series > pd.Timestamp(bound)).fillna(False).to_numpy(), dtype=bool)


def _latest_last(typed: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Row positions in the order ``keep_on_duplicate: latest`` keeps the last of: by the
    timestamp column (missing times first), equal times in row order (a stable sort)."""
    ts = contract.timestamp_column
    assert ts is not None  # the contract requires one for "latest"
    keys = pd.DataFrame({"at": typed[ts].reset_index(drop=True)})
    return np.asarray(keys.sort_values("at", kind="stable", na_position="first").index)


def _duplicates(series: pd.Series, valid: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Rows repeating another row's value, among the ``valid`` (well-typed, present) values: the
    first row of a value is kept, or, given ``order`` (see :func:`_latest_last`), the last one in
    that order. A value that failed its type (an int beyond 2**53, which float64 rounds onto its
    neighbour) is quarantined for that alone, not also reported as a duplicate of a row it never
    equalled."""
    if order is not None:
        ordered = series.iloc[order].reset_index(drop=True)
        repeated_in_order = _duplicates_kept(ordered, valid[order], keep="last")
        repeated = np.zeros(len(series), dtype=bool)
        repeated[order] = repeated_in_order
        return repeated
    return _duplicates_kept(series, valid, keep="first")


def _duplicates_kept(series: pd.Series, valid: np.ndarray, *, keep: Literal["first", "last"]) -> np.ndarray:
    if valid.all():
        return np.asarray(series.duplicated(keep=keep).to_numpy(), dtype=bool)
    repeated = np.zeros(len(series), dtype=bool)
    repeated[valid] = series[valid].duplicated(keep=keep).to_numpy()
    return repeated


def reasons_for_rows(masks: dict[str, np.ndarray], n_rows: int) -> tuple[np.ndarray, list[str]]:
    """Indices of failing rows and, for each, its reasons joined by ``;``."""
    if not masks:
        return np.empty(0, dtype=np.int64), []
    names = list(masks)
    matrix = np.column_stack([masks[n] for n in names])
    bad = np.flatnonzero(matrix.any(axis=1))
    sub = matrix[bad]
    reasons = [";".join(names[j] for j in np.flatnonzero(row)) for row in sub]
    return bad, reasons


def expectation_outcomes(gx_result: Any) -> list[ExpectationOutcome]:
    out = []
    for res in gx_result.results:
        cfg = res.expectation_config
        result = res.result or {}
        error = None
        if res.exception_info and res.exception_info.get("raised_exception"):
            error = str(res.exception_info.get("exception_message"))
        out.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                success=bool(res.success),
                unexpected_count=result.get("unexpected_count"),
                unexpected_percent=result.get("unexpected_percent"),
                error=error,
            )
        )
    return out


def _refuse_float_text_ids(raw: pd.DataFrame, contract: Contract) -> None:
    """A text id column that arrives as floating-point numbers (a Parquet file written from a
    pandas column of integer ids with one missing value) would be stored as ``'7.0'``: another
    id than the ``'7'`` the outcomes, a resubmission and ``mlops audit find 7`` use. Turning the
    floats back into integers would be a guess about the producer, so the batch is refused."""
    for col in contract.columns:
        if col.role == ROLE_ID and col.dtype in ("string", "category"):
            dtype = raw[col.name].dtype
            if pd.api.types.is_float_dtype(dtype):
                raise InputError(
                    f"the id column {col.name!r} holds floating-point numbers ({dtype}); contract "
                    f"{contract.name}@{contract.version} declares its ids text, and 7.0 would be stored "
                    "as the id '7.0', not '7'",
                    hint="write the ids as text (or integers) in the export; in pandas, a column of "
                    "integer ids with a missing value turns float: use the 'string' or 'Int64' dtype",
                )


def type_batch(raw: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    _refuse_float_text_ids(raw, contract)
    typed_cols: dict[str, pd.Series] = {}
    wrong: dict[str, np.ndarray] = {}
    for col in contract.columns:
        typed_cols[col.name], wrong[col.name] = type_column(raw[col.name], col)
    return pd.DataFrame(typed_cols, index=raw.index), wrong


def gx_view(typed: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The typed batch as GX reads it: text columns with declared categories as pandas categoricals.

    GX's pandas engine filters the whole frame for each column expectation
    (``df[df[column].notnull()]``, every column copied). A categorical column is copied as its
    small integer codes, an Arrow text column string by string: about a quarter of the
    validation time at 1M rows. Values, nulls and set membership are unchanged, and so are
    GX's results (a test compares them). Unique columns (ids) keep their type: factorising
    a million distinct ids would cost more than it saves.
    """
    converted = {
        col.name: typed[col.name].astype("category")
        for col in contract.columns
        if col.categories is not None
        and not col.unique
        and col.name in typed.columns
        and pd.api.types.is_string_dtype(typed[col.name].dtype)
    }
    return typed.assign(**converted) if converted else typed


def finalise_valid(typed: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Valid rows with their final dtypes: required ints become int64."""
    out = typed.reset_index(drop=True)
    for col in contract.columns:
        if col.dtype == "int" and not col.nullable:
            out[col.name] = out[col.name].astype("int64")
    return out


def quarantine_frame(raw: pd.DataFrame, bad: np.ndarray, reasons: list[str]) -> pd.DataFrame:
    """Quarantined rows exactly as they arrived (as text), with their row number and reasons."""
    rows = raw.iloc[bad].astype("str").where(raw.iloc[bad].notna(), None)
    rows = rows.astype(TEXT_DTYPE).reset_index(drop=True)
    rows.insert(0, SOURCE_ROW_COLUMN, bad.astype("int64"))
    rows[QUARANTINE_REASONS_COLUMN] = reasons
    return rows


def split_batch(
    raw: pd.DataFrame,
    contract: Contract,
    gx_result: Any,
    typed: pd.DataFrame,
    wrong: dict[str, np.ndarray],
    *,
    source: str,
    extra_columns: list[str],
    max_share: float | None = None,
    checked_at: datetime | None = None,
) -> ValidatedBatch:
    """Combine GX's verdict with the row mask into the validated batch (``checked_at``: when
    it was checked, now by default; the bound of ``not_in_future`` columns)."""
    n = len(raw)
    checked_at = checked_at or datetime.now(UTC)
    latest = contract.latest_allowed(checked_at)
    bad, reasons = reasons_for_rows(row_masks(typed, wrong, contract, latest_allowed=latest), n)
    keep = np.ones(n, dtype=bool)
    keep[bad] = False
    valid = finalise_valid(typed.loc[keep], contract)
    quarantine = quarantine_frame(raw, bad, reasons)
    outcomes = expectation_outcomes(gx_result)
    limit = contract.max_quarantine_share if max_share is None else max_share
    share = len(bad) / n
    counts: dict[str, int] = {}
    for row in reasons:
        for reason in row.split(";"):
            counts[reason] = counts.get(reason, 0) + 1
    summary = ValidationSummary(
        contract=contract.name,
        contract_version=contract.version,
        source=source,
        rows_read=n,
        rows_valid=len(valid),
        rows_quarantined=len(quarantine),
        quarantined_share=share,
        max_quarantine_share=limit,
        gx_success=bool(gx_result.success),
        accepted=batch_accepted(
            gx_success=bool(gx_result.success), share=share, limit=limit, rows_valid=len(valid)
        ),
        reason_counts=dict(sorted(counts.items())),
        failed_expectations=[o for o in outcomes if not o.success],
        expectations_evaluated=len(outcomes),
        extra_columns=extra_columns,
        checked_at=checked_at,
        latest_allowed=latest if contract.not_in_future_columns else None,
    )
    assert summary.rows_valid + summary.rows_quarantined == summary.rows_read
    return ValidatedBatch(valid=valid, quarantine=quarantine, summary=summary)


def validate_frame(
    raw: pd.DataFrame,
    contract: Contract,
    runner: Any,
    *,
    source: str,
    max_share: float | None = None,
    run_name: str = "validate",
    checked_at: datetime | None = None,
) -> ValidatedBatch:
    """Validate one raw batch end to end (no storage, no events): the core the flow wraps.

    ``checked_at`` (default now) bounds the ``not_in_future`` columns, in GX and in the
    quarantine alike; a batch validated in chunks passes the same time for every chunk."""
    if raw.empty:
        raise InputError(f"batch {source} has no rows", hint="an empty batch is never validated")
    checked_at = checked_at or datetime.now(UTC)
    extra = check_columns(raw, contract, source)
    typed, wrong = type_batch(raw, contract)
    gx_result = runner.validate_contract(
        gx_view(typed, contract),
        contract,
        run_name=run_name,
        max_share=max_share,
        latest_allowed=contract.latest_allowed(checked_at),
    )
    return split_batch(
        raw,
        contract,
        gx_result,
        typed,
        wrong,
        source=source,
        extra_columns=extra,
        max_share=max_share,
        checked_at=checked_at,
    )
