"""Request tables: validation, files, seeded generators, arrivals and profiling.

A request table is a :class:`pandas.DataFrame` with one row per request: ``request_id`` (str,
unique), ``prompt_len`` and ``gen_len`` (positive int64 token counts) and an optional
``arrival_s`` (float64 seconds from the first request). Extra columns are kept everywhere.

Files are JSON Lines (``.jsonl``, ``.ndjson`` or ``.json``, one object per line), CSV (``.csv``)
or Parquet (``.parquet``, ``.pq``), chosen by suffix. The readers record the 1-based file line of
every row in ``df.attrs["source_lines"]`` (for Parquet, the 1-based row number), so that
:func:`validate_requests` can name the line of a bad value.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import as_named, check_scalar, is_number, shown_value
from batchlab.errors import InputError
from batchlab.io import (
    atomic_path,
    atomic_write,
    read_bytes,
    read_csv_table,
    read_json_lines,
)
from batchlab.stats import nearest_rank

REQUEST_COLUMNS = ("request_id", "prompt_len", "gen_len")
MAX_LENGTH = 2**31 - 1
#: the latest arrival time accepted (seconds from the first request, about 31.7 years): later
#: times are no trace, and in ms they would lose the precision the simulator's clock needs.
MAX_ARRIVAL_S = 1e9

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

#: percentile levels (percent) reported by :func:`profile`, nearest-rank.
PROFILE_PERCENTILES = (50, 90, 95, 99)
#: the ``lengths`` columns of :class:`WorkloadProfile`, in order.
LENGTH_METRICS = ("count", "min", "mean") + tuple(f"p{p}" for p in PROFILE_PERCENTILES) + ("max",)
#: a request is a length outlier when its length is above this percentile of its field ...
OUTLIER_PERCENTILE = 99
#: ... and at least this many times the p95 of its field.
OUTLIER_MIN_RATIO_TO_P95 = 2.0

_LENGTH_FIELDS = ("prompt_len", "gen_len")
_MAX_WINDOWS = 10_000_000

__all__ = [
    "LENGTH_METRICS",
    "MAX_ARRIVAL_S",
    "MAX_BURSTINESS",
    "MAX_GENERATED",
    "MIN_BURSTINESS",
    "MAX_LENGTH",
    "PROFILE_PERCENTILES",
    "REQUEST_COLUMNS",
    "SourceLines",
    "WorkloadProfile",
    "arrival_rate_over_time",
    "arrival_times",
    "bimodal_workload",
    "id_strings",
    "length_percentiles_table",
    "lognormal_workload",
    "number_values",
    "profile",
    "read_requests",
    "validate_requests",
    "with_arrivals",
    "write_requests",
    "zipf_workload",
]


# ---------------------------------------------------------------------------------------------
# source lines
# ---------------------------------------------------------------------------------------------


class SourceLines:
    """Read-only int64 array of 1-based file lines, one per row, kept in ``df.attrs``.

    Row ``label`` of the frame the reader returned came from line ``lines[label]``; because the
    lookup goes by index label, filtering rows keeps the lines right. It compares by value (so
    pandas can compare the ``attrs`` of two frames in ``concat`` / ``merge``, which a bare numpy
    array breaks) and is shared, not copied, when pandas deep-copies ``attrs``.
    """

    __slots__ = ("_lines",)

    def __init__(self, lines: Any) -> None:
        arr = np.array(lines, dtype=np.int64).reshape(-1)
        arr.setflags(write=False)
        self._lines = arr

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, key: Any) -> Any:
        return self._lines[key]

    def __iter__(self) -> Any:
        return iter(self._lines.tolist())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._lines if dtype is None else self._lines.astype(dtype)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SourceLines):
            other = other._lines
        if not isinstance(other, np.ndarray):
            return NotImplemented
        return bool(np.array_equal(self._lines, other))

    def __hash__(self) -> int:
        return hash((len(self._lines), self._lines[:8].tobytes()))

    def __deepcopy__(self, memo: dict) -> SourceLines:
        return self

    def __copy__(self) -> SourceLines:
        return self

    def tolist(self) -> list[int]:
        """The lines as a list of Python ints."""
        return self._lines.tolist()

    def __repr__(self) -> str:
        return f"SourceLines({self._lines!r})"


def _row_line(df: pd.DataFrame, pos: int) -> int | None:
    """The 1-based file line of row ``pos`` when the frame carries it (set by the readers)."""
    lines = df.attrs.get("source_lines")
    if lines is None:
        return None
    label = df.index[pos]
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if 0 <= int(label) < len(lines):
            return int(lines[int(label)])
    return None


def _remapped_lines(df: pd.DataFrame) -> SourceLines | None:
    """``source_lines`` re-indexed to the rows of ``df`` in order, or None if they cannot be."""
    lines = df.attrs.get("source_lines")
    if lines is None:
        return None
    labels = df.index.to_numpy()
    if labels.dtype.kind not in "iu" or len(labels) == 0:
        return None
    arr = np.asarray(lines, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= len(arr):
        return None
    return SourceLines(arr[labels])


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _show(value: object) -> str:
    """repr of a cell value, numpy scalars shown as plain Python values (shortened)."""
    return shown_value(value)


def _refuse_first(
    df: pd.DataFrame, bad: np.ndarray, column: str, message: str, source: object | None
) -> None:
    """Raise :func:`_fail_at` at the first row where ``bad`` is True (none: return), with
    ``message`` formatted with that row's value of ``column`` (shown briefly)."""
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise _fail_at(df, pos, column, message.format(_show(df[column].iloc[pos])), source)


def _fail_at(
    df: pd.DataFrame, pos: int, column: str, message: str, source: object | None
) -> InputError:
    rid = df["request_id"].iloc[pos] if "request_id" in df.columns else None
    return InputError(
        message,
        path=source,
        line=_row_line(df, pos),
        field=column,
        request_id=None if rid is None or (not isinstance(rid, str) and pd.isna(rid)) else str(rid),
    )


def _kind_of(dtype: Any) -> str | None:
    """Why a column of this dtype holds no numbers ("a datetime column"), or None."""
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        return "a datetime column"
    if isinstance(dtype, np.dtype) and dtype.kind == "m":
        return "a timedelta column"
    if isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype):
        return f"a {dtype} column"
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "SU"):
        return "a text column"
    if pd.api.types.is_bool_dtype(dtype):
        return "a boolean column"
    return None


def _is_plain_number(value: object) -> bool:
    t = type(value)
    return t is int or t is float or (is_number(value) and not isinstance(value, bool | np.bool_))


def number_values(
    df: pd.DataFrame, column: str, *, source: object | None = None, expected: str = "a number"
) -> np.ndarray:
    """One numeric column as float64 (NaN nowhere): ints, whole or fractional floats. Text
    ("100" in JSON or Parquet), booleans, datetimes and timedeltas are refused, as is a
    missing value; the error names the line, field and request id. ``expected`` words the
    message: "a whole number of tokens"."""
    values = df[column]
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(object)
        dtype = values.dtype
    kind = _kind_of(dtype)
    if kind is not None:
        present = values.notna().to_numpy()
        pos = int(np.flatnonzero(present)[0]) if present.any() else 0
        raise _fail_at(
            df, pos, column, f"must be {expected}, got {_show(values.iloc[pos])} ({kind})", source
        )
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        arr = values.to_numpy(dtype=np.float64)
    elif isinstance(dtype, np.dtype) and dtype.kind == "O":
        objs = values.to_numpy(dtype=object)
        missing = values.isna().to_numpy()
        inferred = pd.api.types.infer_dtype(objs, skipna=True)
        if inferred not in ("integer", "floating", "mixed-integer-float", "empty"):
            ok = np.fromiter(map(_is_plain_number, objs), dtype=bool, count=len(objs))
            bad = ~ok & ~missing
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise _fail_at(
                    df, pos, column, f"must be {expected}, got {_show(objs[pos])}", source
                )
        arr = np.full(len(objs), np.nan)
        with np.errstate(over="ignore"):
            try:
                arr[~missing] = objs[~missing].astype(np.float64)
            except OverflowError:  # an int beyond float range
                arr[~missing] = [_as_float_or_inf(v) for v in objs[~missing]]
    else:  # pandas' nullable Int64 / Float64 and other extension number types
        try:
            arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            raise _fail_at(
                df, 0, column, f"must be {expected}, got a {dtype} column", source
            ) from None
    _refuse_first(df, np.isnan(arr), column, "missing value", source)
    return arr


def _as_float_or_inf(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _check_lengths(df: pd.DataFrame, column: str, source: object | None) -> np.ndarray:
    """Check one length column (whole numbers of tokens in [1, MAX_LENGTH]); return int64."""
    values = df[column]
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu":  # fast path: integers
        as_int = values.to_numpy()
        bad = (as_int <= 0) | (as_int > MAX_LENGTH)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            v = int(as_int[pos])
            message = (
                f"must be a positive number of tokens, got {v}"
                if v <= 0
                else f"is larger than {MAX_LENGTH} tokens: {v}"
            )
            raise _fail_at(df, pos, column, message, source)
        return as_int.astype(np.int64)
    as_float = number_values(df, column, source=source, expected="a whole number of tokens")
    _refuse_first(df, ~np.isfinite(as_float), column, "not a whole number of tokens: {}", source)
    _refuse_first(
        df,
        as_float != np.floor(as_float),
        column,
        "must be a whole number of tokens, got {}",
        source,
    )
    _refuse_first(df, as_float <= 0, column, "must be a positive number of tokens, got {}", source)
    _refuse_first(
        df, as_float > MAX_LENGTH, column, f"is larger than {MAX_LENGTH} tokens: {{}}", source
    )
    return as_float.astype(np.int64)


def _check_arrivals(df: pd.DataFrame, source: object | None) -> np.ndarray:
    """The ``arrival_s`` column as float64 seconds in [0, MAX_ARRIVAL_S]; else InputError."""
    expected = f"a number of seconds in [0, {MAX_ARRIVAL_S:g}]"
    arr = number_values(df, "arrival_s", source=source, expected=expected)
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > MAX_ARRIVAL_S)
    _refuse_first(df, bad, "arrival_s", f"must be {expected}, got {{}}", source)
    return arr


def _id_ok(value: object) -> bool:
    t = type(value)
    return t is str or t is int or isinstance(value, np.integer)


def id_strings(
    df: pd.DataFrame, column: str = "request_id", *, source: object | None = None
) -> np.ndarray:
    """An id column (``request_id``, a plan's ``batch_id``) as an object array of str.

    Strings or whole numbers (an integer column, or ints among strings) are ids; floats
    (``0.0``), booleans, bytes, datetimes and missing values are refused, and so are lone
    surrogates (no valid Unicode text). InputError naming source, line and field (and the
    request id, for another column)."""
    values = df[column]
    dtype = values.dtype

    def fail(pos: int, message: str) -> InputError:
        rid = None
        if column != "request_id" and "request_id" in df.columns:
            rid = str(df["request_id"].iloc[pos])
        return InputError(
            message, path=source, line=_row_line(df, pos), field=column, request_id=rid
        )

    missing = values.isna().to_numpy()
    if missing.any():
        raise fail(int(np.flatnonzero(missing)[0]), "missing value")
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        ids = values.astype(str).to_numpy(dtype=object)
    elif isinstance(dtype, pd.StringDtype):
        ids = values.to_numpy(dtype=object)
    else:
        objs = values.to_numpy(dtype=object)
        all_str = False
        if not (isinstance(dtype, np.dtype) and dtype.kind == "O"):
            ok = np.zeros(len(objs), dtype=bool)
        elif pd.api.types.infer_dtype(objs, skipna=False) == "string":
            ok = np.ones(len(objs), dtype=bool)
            all_str = True
        else:
            ok = np.fromiter(map(_id_ok, objs), dtype=bool, count=len(objs))
        if not ok.all():
            pos = int(np.flatnonzero(~ok)[0])
            kind = _kind_of(dtype)
            raise fail(
                pos,
                f"must be a string or a whole number, got {_show(objs[pos])}"
                + (f" ({kind})" if kind else ""),
            )
        ids = objs if all_str else values.astype(str).to_numpy(dtype=object)
    try:
        "".join(ids).encode("utf-8")
    except UnicodeEncodeError:
        pos = next(i for i, v in enumerate(ids) if not _encodable(v))
        raise fail(pos, "not valid Unicode: a lone surrogate (half of a UTF-16 pair)") from None
    return ids


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_requests(df: pd.DataFrame, *, source: object | None = None) -> pd.DataFrame:
    """Check a request table and return a normalized copy.

    Columns: ``request_id`` (str, unique, non-empty), ``prompt_len`` and ``gen_len`` (positive
    whole numbers of tokens, at most ``MAX_LENGTH``; 12.0 is accepted as 12; returned as int64),
    optional ``arrival_s`` (float seconds in [0, ``MAX_ARRIVAL_S``]). Numbers must be numbers:
    text (``"100"``), booleans, datetimes and timedeltas are refused, and so are float or
    boolean request ids. Extra columns are kept. The result has a fresh RangeIndex and
    ``request_id`` holds Python ``str`` objects (object dtype).
    Raises :class:`InputError` naming the source, line, field and request id of the first problem.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(
            f"expected a pandas DataFrame of requests, got {type(df).__name__}", path=source
        )
    if len(df) == 0:
        raise InputError("no requests (the table is empty)", path=source)
    for column in REQUEST_COLUMNS:
        if column not in df.columns:
            raise InputError("missing column", path=source, field=column)
    out = df.copy()
    out.attrs = dict(df.attrs)
    ids = id_strings(out, source=source)
    out["request_id"] = pd.Series(ids, index=out.index, dtype=object)
    empty = ids == ""
    if empty.any():
        pos = int(np.flatnonzero(empty)[0])
        raise InputError(
            "empty request_id", path=source, line=_row_line(out, pos), field="request_id"
        )
    dup = out["request_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(ids == ids[pos])[0])
        first_line = _row_line(out, first)
        where = f"line {first_line}" if first_line is not None else f"row {first} (0-based)"
        raise InputError(
            f"duplicate request_id (first seen at {where})",
            path=source,
            line=_row_line(out, pos),
            field="request_id",
            request_id=str(ids[pos]),
        )
    for column in _LENGTH_FIELDS:
        out[column] = _check_lengths(out, column, source)
    if "arrival_s" in out.columns:
        out["arrival_s"] = _check_arrivals(out, source)
    lines = _remapped_lines(out)
    result = out.reset_index(drop=True)
    result.attrs = {k: v for k, v in out.attrs.items() if k != "source_lines"}
    if lines is not None:
        result.attrs["source_lines"] = lines
    return result


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise InputError(
        f"unknown request file type {suffix or '(no suffix)'!r}; "
        "use .jsonl / .ndjson (JSON Lines), .csv or .parquet",
        path=path,
    )


def _json_id_ok(value: object) -> bool:
    """A JSON request_id must be a string or an integer (missing values are checked later)."""
    if value is None:
        return True
    t = type(value)
    if t is str or t is int:
        return True
    return t is float and math.isnan(value)


def _arrow_ids_ok(table: Any) -> bool:
    """The bulk parser's request_id column holds strings or (64-bit signed) integers."""
    import pyarrow as pa

    if "request_id" not in table.column_names:
        return True
    t = table.schema.field("request_id").type
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
        or (pa.types.is_integer(t) and t.bit_width <= 64 and pa.types.is_signed_integer(t))
    )


def _read_jsonl(path: Path) -> pd.DataFrame:
    parsed = read_json_lines(path, what="requests")
    if parsed.table is not None and _arrow_ids_ok(parsed.table):
        df = parsed.table.to_pandas()
    else:
        df = pd.DataFrame.from_records(parsed.objects())
        _check_json_ids(df, path, parsed.lines)
    for column in REQUEST_COLUMNS:
        if column not in df.columns:
            raise InputError("missing field", path=path, line=int(parsed.lines[0]), field=column)
    df.attrs["source_lines"] = SourceLines(parsed.lines)
    return df


def _check_json_ids(df: pd.DataFrame, path: Path, lines: np.ndarray) -> None:
    """A JSON request_id must be a string or an integer (missing values are checked later)."""
    if "request_id" not in df.columns:
        return
    ids = df["request_id"]
    if ids.dtype == object:
        ok = np.fromiter(map(_json_id_ok, ids.to_numpy()), dtype=bool, count=len(df))
    elif ids.dtype.kind in "fb":  # floats or booleans (NaN = missing, reported later)
        ok = ids.isna().to_numpy()
    else:
        ok = np.ones(len(df), dtype=bool)
    if not ok.all():
        pos = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"must be a string or an integer, got {_show(ids.iloc[pos])}",
            path=path,
            line=int(lines[pos]),
            field="request_id",
        )


#: CSV columns whose text cells are numbers (CSV has no types: "100" there is 100).
_CSV_NUMBER_COLUMNS = ("prompt_len", "gen_len", "arrival_s")


def _csv_numbers(values: pd.Series) -> pd.Series:
    """A text column of a CSV file with its numeric cells as numbers; other text stays text
    (for the validator to name it)."""
    if not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
        return values
    numeric = pd.to_numeric(values, errors="coerce")
    text = values.notna() & numeric.isna()
    if not text.any():
        return numeric
    out = values.astype(object).copy()
    out[~text] = numeric[~text]
    return out


def _read_csv(path: Path, *, id_prefix: str | None = None) -> pd.DataFrame:
    raw = read_csv_table(path, text_columns=("request_id",), what="requests")
    header_line = raw.attrs.get("header_line", 1)
    if not set(REQUEST_COLUMNS) <= set(raw.columns):
        from batchlab.datasets import trace_format

        info = trace_format(path, raw.columns)
        if info is not None:  # a trace's own CSV (ContextTokens, GeneratedTokens, ...)
            from batchlab.datasets import requests_from_trace_table

            return requests_from_trace_table(raw, info, path, id_prefix=id_prefix)
    for column in REQUEST_COLUMNS:
        if column not in raw.columns:
            raise InputError(
                "missing column in the header", path=path, line=header_line, field=column
            )
    lines = raw.attrs.get("source_lines")
    df = raw
    for column in _CSV_NUMBER_COLUMNS:
        if column in df.columns:
            df[column] = _csv_numbers(df[column])
    df.attrs = {}
    if lines is not None:
        df.attrs["source_lines"] = SourceLines(lines)
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        df = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError(f"cannot read as Parquet: {err}", path=path) from None
    df = df.reset_index(drop=True)
    df.attrs = {}
    for column in REQUEST_COLUMNS:
        if column not in df.columns:
            raise InputError("missing column", path=path, field=column)
    df.attrs["source_lines"] = SourceLines(np.arange(1, len(df) + 1))
    return df


def read_requests(path: str | Path, *, id_prefix: str | None = None) -> pd.DataFrame:
    """Read and validate a request table from JSON Lines, CSV or Parquet (chosen by suffix).

    JSON Lines: one object per line with at least ``request_id`` (string or integer; integers
    become strings), ``prompt_len`` and ``gen_len`` (tokens); other keys become extra columns;
    blank lines are skipped. CSV: a header line, then one request per row; a trace's own CSV
    (``TIMESTAMP, ContextTokens, GeneratedTokens`` of the Azure traces, or
    ``num_prefill_tokens, num_decode_tokens`` of ShareGPT lengths) is recognised by its
    columns and read as :func:`batchlab.datasets.load_trace` reads it (ids
    ``"<id_prefix>-<row>"``, by default the registered trace's prefix or the file's stem).
    Parquet: one row per request. Raises :class:`InputError` naming the file, the 1-based line (CSV header = line 1;
    Parquet: 1-based row number) and the field of the first problem. The result carries
    ``attrs["source_lines"]`` (:class:`SourceLines`).
    """
    p = Path(path)
    fmt = _format_of(p)
    if fmt == "jsonl":
        df = _read_jsonl(p)
    elif fmt == "csv":
        df = _read_csv(p, id_prefix=id_prefix)
    else:
        read_bytes(p)  # checks the file exists and is readable
        df = _read_parquet(p)
    return validate_requests(df, source=p)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


_JSON_ESCAPES = r'["\\\x00-\x1f]'


def _json_values(series: pd.Series) -> np.ndarray:
    """JSON text of every value of a column (object array); missing values become ``null``."""
    n = len(series)
    dtype = series.dtype
    missing = series.isna().to_numpy()
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        values = series.to_numpy()
        if dtype.kind == "b":
            return np.where(values, "true", "false").astype(object)
        return values.astype(str).astype(object)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        values = series.to_numpy(dtype=np.float64)
        text = np.array(list(map(repr, values.tolist())), dtype=object)  # shortest round trip
        text[~np.isfinite(values)] = "null"
        return text
    out = np.empty(n, dtype=object)
    out[missing] = "null"
    present = ~missing
    values = series.to_numpy(dtype=object)[present]
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        # plain strings: quote them directly unless they hold a character JSON must escape
        text = '"' + values + '"'
        escape = pd.Series(values, dtype=object).str.contains(_JSON_ESCAPES, regex=True)
        escape = escape.to_numpy(dtype=bool)
        text[escape] = list(map(_json_dumps, values[escape]))
    else:
        text = np.array(list(map(_json_dumps, values)), dtype=object)
    out[present] = text
    return out


def _to_jsonl(df: pd.DataFrame) -> str:
    """Encode a table as JSON Lines, column by column (vectorized over rows).

    The pieces (key, value, key, value, ..., end of line) go into an (n, 2 * columns + 1)
    object array that is joined once in row-major order.
    """
    n, n_cols = df.shape
    pieces = np.empty((n, 2 * n_cols + 1), dtype=object)
    for i, column in enumerate(df.columns):
        pieces[:, 2 * i] = ("{" if i == 0 else ", ") + json.dumps(str(column)) + ": "
        pieces[:, 2 * i + 1] = _json_values(df[column])
    pieces[:, -1] = "}\n"
    return "".join(pieces.ravel().tolist())


def _csv_quoting(table: pd.DataFrame) -> int:
    """Quote every text cell when one holds a carriage return (else it would end the row)."""
    if any("\r" in str(c) for c in table.columns):
        return csv.QUOTE_NONNUMERIC
    for column in table.columns:
        values = table[column]
        if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
            if values.astype(str).str.contains("\r", regex=False).any():
                return csv.QUOTE_NONNUMERIC
    return csv.QUOTE_MINIMAL


def write_requests(df: pd.DataFrame, path: str | Path) -> None:
    """Validate ``df`` and write it atomically as JSON Lines, CSV or Parquet (by suffix).

    All columns are written, extra ones included. Floats are written with full precision, so a
    table read back equals the one written (CSV keeps strings of extra columns only as far as
    CSV type inference allows).
    """
    p = Path(path)
    fmt = _format_of(p)
    table = validate_requests(df)
    table.attrs = {}
    if fmt == "jsonl":
        text = _to_jsonl(table)
        with atomic_write(p, "w") as fh:
            fh.write(text)
    elif fmt == "csv":
        with atomic_path(p) as tmp:
            table.to_csv(tmp, index=False, quoting=_csv_quoting(table))
    else:
        with atomic_path(p) as tmp:
            table.to_parquet(tmp, index=False)


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------


#: the most requests a generator draws (a table of 1e8 requests takes gigabytes).
MAX_GENERATED = 10**8


def _check_count(n: int) -> int:
    return check_scalar(n, "n", int, min_val=1, max_val=MAX_GENERATED, unit="requests")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    include = "both" if allow_zero else "neither"
    return check_scalar(value, name, float, min_val=0, include_boundaries=include)


def _check_max_len(name: str, value: int) -> int:
    return check_scalar(value, name, int, min_val=1, max_val=MAX_LENGTH, unit="tokens")


def _rng(seed: int) -> np.random.Generator:
    """``numpy.random.default_rng(seed)``; the seed must be a whole number >= 0."""
    return np.random.default_rng(check_scalar(seed, "seed", int, min_val=0))


def _make_ids(n: int, prefix: str) -> np.ndarray:
    """``f"{prefix}-{i:06d}"`` for i in 0..n-1 (wider when n needs it), as an object array."""
    width = max(6, len(str(n - 1)))
    numbers = np.strings.zfill(np.arange(n).astype(np.str_), width)
    return np.strings.add(f"{prefix}-", numbers).astype(object)


def _lognormal_lengths(
    rng: np.random.Generator, median: np.ndarray, sigma: np.ndarray | float, max_len: int
) -> np.ndarray:
    """Round(exp(N(log median, sigma))) clipped to [1, max_len], int64 tokens."""
    median = np.asarray(median, dtype=np.float64)
    log_x = np.log(median) + np.asarray(sigma) * rng.standard_normal(median.shape)
    log_x = np.minimum(log_x, math.log(max_len) + 1.0)  # avoid overflow before clipping
    return np.clip(np.rint(np.exp(log_x)), 1, max_len).astype(np.int64)


def _table(ids: np.ndarray, prompt: np.ndarray, gen: np.ndarray, **extra: Any) -> pd.DataFrame:
    df = pd.DataFrame({"request_id": ids, "prompt_len": prompt, "gen_len": gen, **extra})
    return validate_requests(df)


def lognormal_workload(
    n: int,
    *,
    seed: int,
    prompt_median: float = 512,
    prompt_sigma: float = 0.8,
    gen_median: float = 128,
    gen_sigma: float = 0.9,
    max_prompt_len: int = 8192,
    max_gen_len: int = 2048,
    id_prefix: str = "req",
) -> pd.DataFrame:
    """``n`` requests with independent log-normal prompt and generation lengths (tokens).

    ``length = round(median * exp(sigma * Z))``, Z standard normal, clipped to [1, max]; the
    medians are in tokens, sigmas are of the log. Ids are ``f"{id_prefix}-{i:06d}"``.
    """
    n = _check_count(n)
    pm = _check_positive("prompt_median", prompt_median)
    ps = _check_positive("prompt_sigma", prompt_sigma, allow_zero=True)
    gm = _check_positive("gen_median", gen_median)
    gs = _check_positive("gen_sigma", gen_sigma, allow_zero=True)
    max_p = _check_max_len("max_prompt_len", max_prompt_len)
    max_g = _check_max_len("max_gen_len", max_gen_len)
    rng = _rng(seed)
    prompt = _lognormal_lengths(rng, np.full(n, pm), ps, max_p)
    gen = _lognormal_lengths(rng, np.full(n, gm), gs, max_g)
    return _table(_make_ids(n, id_prefix), prompt, gen)


def bimodal_workload(
    n: int,
    *,
    seed: int,
    long_fraction: float = 0.2,
    chat_prompt_median: float = 256,
    chat_prompt_sigma: float = 0.8,
    chat_gen_median: float = 256,
    chat_gen_sigma: float = 0.7,
    doc_prompt_median: float = 6144,
    doc_prompt_sigma: float = 0.4,
    doc_gen_median: float = 96,
    doc_gen_sigma: float = 0.6,
    max_prompt_len: int = 32768,
    max_gen_len: int = 2048,
    id_prefix: str = "req",
) -> pd.DataFrame:
    """A chat + long-document mix: each request is a document with probability ``long_fraction``.

    Chat requests have short prompts and medium outputs, documents long prompts and short
    outputs; both are log-normal (medians in tokens, sigmas of the log), clipped to [1, max].
    Adds a ``kind`` column, ``"chat"`` or ``"document"``.
    """
    n = _check_count(n)
    frac = _check_positive("long_fraction", long_fraction, allow_zero=True)
    if frac > 1:
        raise InputError(f"must be in [0, 1], got {long_fraction!r}", field="long_fraction")
    medians = {
        k: _check_positive(k, v)
        for k, v in {
            "chat_prompt_median": chat_prompt_median,
            "chat_gen_median": chat_gen_median,
            "doc_prompt_median": doc_prompt_median,
            "doc_gen_median": doc_gen_median,
        }.items()
    }
    sigmas = {
        k: _check_positive(k, v, allow_zero=True)
        for k, v in {
            "chat_prompt_sigma": chat_prompt_sigma,
            "chat_gen_sigma": chat_gen_sigma,
            "doc_prompt_sigma": doc_prompt_sigma,
            "doc_gen_sigma": doc_gen_sigma,
        }.items()
    }
    max_p = _check_max_len("max_prompt_len", max_prompt_len)
    max_g = _check_max_len("max_gen_len", max_gen_len)
    rng = _rng(seed)
    is_doc = rng.random(n) < frac
    prompt = _lognormal_lengths(
        rng,
        np.where(is_doc, medians["doc_prompt_median"], medians["chat_prompt_median"]),
        np.where(is_doc, sigmas["doc_prompt_sigma"], sigmas["chat_prompt_sigma"]),
        max_p,
    )
    gen = _lognormal_lengths(
        rng,
        np.where(is_doc, medians["doc_gen_median"], medians["chat_gen_median"]),
        np.where(is_doc, sigmas["doc_gen_sigma"], sigmas["chat_gen_sigma"]),
        max_g,
    )
    kind = np.where(is_doc, "document", "chat").astype(object)
    return _table(_make_ids(n, id_prefix), prompt, gen, kind=kind)


def zipf_workload(
    n: int,
    *,
    seed: int,
    a: float = 1.6,
    prompt_min: int = 32,
    gen_median: float = 128,
    gen_sigma: float = 0.9,
    max_prompt_len: int = 32768,
    max_gen_len: int = 2048,
    id_prefix: str = "req",
) -> pd.DataFrame:
    """Heavy-tailed prompt lengths: the continuous analogue of a Zipf law with exponent ``a``.

    ``prompt_len = floor(prompt_min * U ** (-1 / (a - 1)))``, U uniform in (0, 1], so
    P(prompt_len >= x) = (x / prompt_min) ** -(a - 1) for x >= prompt_min, the tail of a Zipf(a)
    law (a Pareto law with index a - 1); clipped to ``max_prompt_len``. Needs a > 1. Generation
    lengths are log-normal (``gen_median`` tokens, ``gen_sigma``), clipped to ``max_gen_len``.
    """
    n = _check_count(n)
    a_val = _check_positive("a", a)
    if a_val <= 1:
        raise InputError(f"must be > 1 for a finite-tailed Zipf law, got {a!r}", field="a")
    max_p = _check_max_len("max_prompt_len", max_prompt_len)
    p_min = _check_max_len("prompt_min", prompt_min)
    gm = _check_positive("gen_median", gen_median)
    gs = _check_positive("gen_sigma", gen_sigma, allow_zero=True)
    max_g = _check_max_len("max_gen_len", max_gen_len)
    rng = _rng(seed)
    u = 1.0 - rng.random(n)  # in (0, 1]
    # log-space keeps the huge draws of a small index (a -> 1) finite before clipping
    log_x = math.log(p_min) - np.log(u) / (a_val - 1.0)
    log_x = np.minimum(log_x, math.log(max_p) + 1.0)
    prompt = np.clip(np.floor(np.exp(log_x)), 1, max_p).astype(np.int64)
    gen = _lognormal_lengths(rng, np.full(n, gm), gs, max_g)
    return _table(_make_ids(n, id_prefix), prompt, gen)


ARRIVAL_PROCESSES = ("poisson", "bursty")
#: the range of the coefficient of variation of bursty inter-arrival gaps.
MIN_BURSTINESS, MAX_BURSTINESS = 1e-3, 1e3


def arrival_times(
    n: int,
    *,
    rate_per_s: float,
    seed: int,
    process: str = "poisson",
    burstiness: float = 1.0,
) -> np.ndarray:
    """Arrival times (seconds, float64) of ``n`` requests, the first at 0.

    Mean rate ``rate_per_s`` (requests per second). ``"poisson"``: exponential inter-arrival
    gaps (coefficient of variation 1; ``burstiness`` is ignored). ``"bursty"``: gamma gaps with
    coefficient of variation ``burstiness`` (in [MIN_BURSTINESS, MAX_BURSTINESS]; shape k = 1 /
    burstiness**2, scale = 1 / (rate_per_s * k)); 1.0 is as variable as Poisson, larger is
    burstier. The last arrival must come within ``MAX_ARRIVAL_S``.
    """
    rate = _check_positive("rate_per_s", rate_per_s)
    cv = check_scalar(
        burstiness, "burstiness", float, min_val=MIN_BURSTINESS, max_val=MAX_BURSTINESS
    )
    if process not in ARRIVAL_PROCESSES:
        raise InputError(
            f"unknown arrival process {process!r}; use one of {ARRIVAL_PROCESSES}", field="process"
        )
    n = _check_count(n)
    rng = _rng(seed)
    m = int(n) - 1
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate, m)
    else:
        k = 1.0 / (cv * cv)
        gaps = rng.gamma(k, 1.0 / (rate * k), m)
    times = np.concatenate(([0.0], np.cumsum(gaps)))
    if not times[-1] <= MAX_ARRIVAL_S:  # NaN or inf too
        raise InputError(
            f"{rate_per_s:g} requests/s makes {n:,} arrivals span {times[-1]:.3g} s, more than "
            f"{MAX_ARRIVAL_S:g} s; use a higher rate",
            field="rate_per_s",
        )
    return times


def with_arrivals(
    df: pd.DataFrame,
    *,
    rate_per_s: float,
    seed: int,
    process: str = "poisson",
    burstiness: float = 1.0,
) -> pd.DataFrame:
    """Return a validated copy of ``df`` with ``arrival_s`` (seconds, first request at 0).

    Rows arrive in table order; the times come from :func:`arrival_times` (Poisson, or bursty
    gamma gaps with coefficient of variation ``burstiness``). An existing ``arrival_s`` is
    replaced.
    """
    out = validate_requests(df)
    out["arrival_s"] = arrival_times(
        len(out), rate_per_s=rate_per_s, seed=seed, process=process, burstiness=burstiness
    )
    return out


# ---------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    dy = y - y.mean()
    denom = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    return float(np.dot(dx, dy) / denom) if denom > 0 else math.nan


@dataclass(frozen=True, eq=False)
class WorkloadProfile:
    """Summary statistics of a request table (see :func:`profile`).

    ``lengths``: index ``prompt_len`` / ``gen_len``, columns ``count, min, mean, p50, p90, p95,
    p99, max`` (tokens; percentiles are nearest-rank). ``outliers``: columns ``request_id,
    field, length, ratio_to_p99``. Arrival fields are None when the table has no ``arrival_s``.
    """

    n_requests: int
    lengths: pd.DataFrame
    correlation_pearson: float
    correlation_spearman: float
    outliers: pd.DataFrame
    arrival_rate_per_s: float | None
    interarrival_cv: float | None
    duration_s: float | None

    def to_frame(self) -> pd.DataFrame:
        """Tidy long table with columns ``field, metric, value`` (value float64; None -> NaN).

        Fields: ``requests`` (n_requests), ``prompt_len`` / ``gen_len`` (the ``lengths``
        metrics plus ``n_outliers``), ``prompt_len:gen_len`` (correlation_pearson,
        correlation_spearman), ``arrival_s`` (arrival_rate_per_s, interarrival_cv, duration_s).
        """
        rows: list[tuple[str, str, float]] = [("requests", "n_requests", float(self.n_requests))]
        counts = self.outliers["field"].value_counts()
        for field in self.lengths.index:
            for metric in self.lengths.columns:
                rows.append((field, metric, float(self.lengths.at[field, metric])))
            rows.append((field, "n_outliers", float(counts.get(field, 0))))
        pair = "prompt_len:gen_len"
        rows.append((pair, "correlation_pearson", self.correlation_pearson))
        rows.append((pair, "correlation_spearman", self.correlation_spearman))
        for metric in ("arrival_rate_per_s", "interarrival_cv", "duration_s"):
            value = getattr(self, metric)
            rows.append(("arrival_s", metric, math.nan if value is None else float(value)))
        out = pd.DataFrame(rows, columns=["field", "metric", "value"])
        out["value"] = out["value"].astype(np.float64)
        return out


def profile(df: pd.DataFrame) -> WorkloadProfile:
    """Profile a request table: length percentiles, correlations, outliers and arrivals.

    - Percentiles are nearest-rank: pN is the ceil(N/100 * n)-th smallest value (tokens).
    - ``correlation_pearson`` / ``correlation_spearman`` between ``prompt_len`` and ``gen_len``
      (Spearman = Pearson of average ranks); NaN when either length is constant.
    - ``outliers``: one row per (request, field) whose length is strictly above the field's p99
      AND at least ``OUTLIER_MIN_RATIO_TO_P95`` (2) times the field's p95: a request that
      dominates the tail, not just the top 1 %. With fewer than 100 requests p99 is the maximum,
      so there are none. Columns ``request_id, field, length, ratio_to_p99`` (length / p99),
      ordered by field (prompt_len first), then by length descending, then table order.
    - With ``arrival_s``: ``duration_s`` = last - first arrival; ``arrival_rate_per_s`` =
      (n - 1) / duration_s (n - 1 gaps in that span); ``interarrival_cv`` = std / mean of the
      gaps between sorted arrivals (population std; 1.0 for a Poisson process). Rate and CV are
      None with fewer than 2 requests or a zero duration; all three are None without arrivals.
    """
    table = validate_requests(df)
    n = len(table)
    rows = {}
    outlier_parts = []
    columns = {f: table[f].to_numpy(dtype=np.int64) for f in _LENGTH_FIELDS}
    for field, values in columns.items():
        s = np.sort(values)
        pct = nearest_rank(s, PROFILE_PERCENTILES)
        rows[field] = [n, int(s[0]), float(values.mean()), *map(int, pct), int(s[-1])]
        p95 = pct[PROFILE_PERCENTILES.index(95)]
        p99 = pct[PROFILE_PERCENTILES.index(OUTLIER_PERCENTILE)]
        hit = (values > p99) & (values >= OUTLIER_MIN_RATIO_TO_P95 * p95)
        idx = np.flatnonzero(hit)
        idx = idx[np.argsort(-values[idx], kind="stable")]
        outlier_parts.append(
            pd.DataFrame(
                {
                    "request_id": table["request_id"].to_numpy(dtype=object)[idx],
                    "field": np.full(len(idx), field, dtype=object),
                    "length": values[idx],
                    "ratio_to_p99": values[idx] / float(p99),
                }
            )
        )
    lengths = pd.DataFrame.from_dict(rows, orient="index", columns=list(LENGTH_METRICS))
    lengths.index.name = "field"
    for metric in LENGTH_METRICS:
        if metric != "mean":
            lengths[metric] = lengths[metric].astype(np.int64)
    outliers = pd.concat(outlier_parts, ignore_index=True)
    outliers["length"] = outliers["length"].astype(np.int64)
    outliers["ratio_to_p99"] = outliers["ratio_to_p99"].astype(np.float64)

    x = columns["prompt_len"].astype(np.float64)
    y = columns["gen_len"].astype(np.float64)
    pearson = _pearson(x, y)
    spearman = _pearson(
        pd.Series(x).rank(method="average").to_numpy(),
        pd.Series(y).rank(method="average").to_numpy(),
    )

    rate = cv = duration = None
    if "arrival_s" in table.columns:
        t = np.sort(table["arrival_s"].to_numpy(dtype=np.float64))
        duration = float(t[-1] - t[0])
        if n >= 2 and duration > 0:
            gaps = np.diff(t)
            rate = (n - 1) / duration
            cv = float(gaps.std() / gaps.mean())
    return WorkloadProfile(
        n_requests=n,
        lengths=lengths,
        correlation_pearson=pearson,
        correlation_spearman=spearman,
        outliers=outliers,
        arrival_rate_per_s=rate,
        interarrival_cv=cv,
        duration_s=duration,
    )


def length_percentiles_table(
    workloads: pd.DataFrame | Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame],
) -> pd.DataFrame:
    """One row per (workload, length field) from :func:`profile`: ``workload``, ``field``
    and the profile's ``count, min, mean, p50, p90, p95, p99, max`` (tokens, nearest rank).
    ``workloads``: one request table, a mapping name -> table, or a list."""
    parts = []
    for name, df in as_named(workloads, "request table", "workload"):
        lengths = profile(df).lengths.reset_index()
        lengths.insert(0, "workload", name)
        parts.append(lengths)
    return pd.concat(parts, ignore_index=True)


def arrival_rate_over_time(df: pd.DataFrame, window_s: float) -> pd.DataFrame:
    """Requests per time window, for plotting the arrival rate.

    Windows are ``[k * window_s, (k + 1) * window_s)`` seconds for k = 0 .. floor(last / window_s),
    starting at 0 (``arrival_s`` counts from the first request). Columns: ``window_start_s``,
    ``requests`` (int64) and ``rate_per_s`` = requests / window_s (the last window is counted
    over its full width).
    """
    w = _check_positive("window_s", window_s)
    table = validate_requests(df)
    if "arrival_s" not in table.columns:
        raise InputError("the request table has no arrival times", field="arrival_s")
    t = table["arrival_s"].to_numpy(dtype=np.float64)
    n_windows = int(math.floor(float(t.max()) / w)) + 1
    if n_windows > _MAX_WINDOWS:
        raise InputError(
            f"window_s = {window_s!r} s makes {n_windows:,} windows (more than {_MAX_WINDOWS:,})",
            field="window_s",
        )
    k = np.floor(t / w).astype(np.int64)
    # correct float rounding of t / w so that k * w <= t < (k + 1) * w
    k -= k * w > t
    k += (k + 1) * w <= t
    k = np.maximum(k, 0)
    n_windows = int(k.max()) + 1
    counts = np.bincount(k, minlength=n_windows)
    return pd.DataFrame(
        {
            "window_start_s": np.arange(n_windows, dtype=np.float64) * w,
            "requests": counts.astype(np.int64),
            "rate_per_s": counts / w,
        }
    )
