"""How tables are shown, in the chapters and on the command line: one number format per column,
units in the headers, integers as integers, and "—" where there is no value (no limit).

* :func:`table` -> :class:`Table`: what a chapter displays (HTML in JupyterLab, the same text
  as its ``repr``, which is what nbval compares).
* :func:`text_table`: the same table as plain text, what the CLI prints (of a DataFrame, or of
  a dict of plain columns, which needs no pandas).
* :func:`formatted`: the strings both show (a DataFrame of str with labelled headers).
* :func:`unit_of`: the unit of a column or metric name (``p95_latency_ms`` -> ``ms``), from
  :data:`UNITS` and the naming conventions of ``docs/design.md`` (``*_ms``, ``*_s``,
  ``*_tokens``, ``cost_*``, ...).

Formats, chosen per column from all its values (so a column reads the same from top to bottom):

* booleans: ``yes`` / ``no``;
* whole numbers (integer columns, and float columns whose values are all whole): ``1,234``;
* other numbers: fixed point with as many decimals as give the column's largest magnitude 4
  significant digits (``0.05230``, ``45.60``, ``5,763,412``), or its smallest value that is not
  whole one significant digit, whichever is more, at most 6;
* columns of large numbers only (the largest 1e9 or more, none below 1e6: costs) are scaled
  by a power of 1,000 named in the header (``total_cost (1e12 cost units)``: ``1.402``), so
  that their smallest value shows 4 significant digits; columns of magnitudes below 1e-6 are
  shown in scientific notation;
* None, NaN and NA: ``—`` (an absent limit, a value that does not apply).

A table whose rows are metrics (a ``metric`` column, as ``PlanResult.comparison()`` and the
explorers' metrics tables) gets a ``unit`` column next to it and one format per *row*: the
numbers of a row are one quantity in one unit, the numbers of a column are not.
"""

from __future__ import annotations

import html
import math
import numbers
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from batchlab.errors import InputError

if TYPE_CHECKING:  # pandas is imported where a DataFrame is built: text_table of plain columns
    import pandas as pd  # (what `batchlab evaluate` prints) stays without it

__all__ = [
    "LENGTH_STAT_UNITS",
    "MISSING",
    "UNITS",
    "Table",
    "format_value",
    "formatted",
    "table",
    "text_table",
    "unit_of",
]

#: Units of the columns of a length-statistics table (``WorkloadProfile.lengths``,
#: ``workload.length_percentiles_table``): every statistic but the count is in tokens.
LENGTH_STAT_UNITS: dict[str, str] = {
    **dict.fromkeys(("min", "mean", "std", "p50", "p90", "p95", "p99", "p99.9", "max"), "tokens"),
    "count": "requests",
}

#: What a missing value (None, NaN, NA: no limit, not applicable) shows as.
MISSING = "—"

#: Units of the column and metric names used across batchlab (see also :func:`unit_of`).
UNITS: dict[str, str] = {
    "total_cost": "cost units",
    "min_cost": "cost units",
    "pad_ratio": "padding / useful tokens",
    "min_pad_ratio": "padding / useful tokens",
    "max_pad_ratio": "padding / useful tokens",
    "padding_fraction": "padding / prompt tokens",
    "optimality_gap": "share of the bound",
    "n_batches": "batches",
    "min_batches": "batches",
    "n_shapes": "shapes",
    "distinct_shapes": "shapes",
    "max_shapes": "shapes",
    "k": "shapes",
    "n_requests": "requests",
    "requests": "requests",
    "count": "requests",
    "n_steps": "steps",
    "prompt_len": "tokens",
    "gen_len": "tokens",
    "seq_align": "tokens",
    "gen_bucket_size": "tokens",
    "granularity": "tokens",
    "batch_size": "sequences",
    "max_batch_size": "requests",
    "mean_batch_size": "sequences",
    "max_num_seqs": "sequences",
    "throughput_rps": "requests/s",
    "offered_rps": "requests/s",
    "output_tokens_per_s": "tokens/s",
    "kv_util_mean": "share of blocks",
    "kv_util_peak": "share of blocks",
    "kv_blocks": "blocks",
    "kv_tokens": "tokens",
    "busy_fraction": "share of time",
    "batch_efficiency": "useful / computed tokens",
    "preemptions": "requests",
    "max_queue_len": "requests",
    "mean_queue_len": "requests",
    "littles_L": "requests",
    "littles_lambda_W": "requests",
    "level": "",
    "ratio": "×",  # simulated / measured, predicted / real
    "correlation_pearson": "",
    "correlation_spearman": "",
    "interarrival_cv": "",
    "arrival_rate_per_s": "requests/s",
    "rate_per_s": "requests/s",
    "padding": "tokens",
    "size": "requests",
    "s_max": "tokens",
    "g_max": "tokens",
    "max_cost": "cost units",
    "batch_cost": "cost units",
    "hidden": "dimensions",
    "n_params": "parameters",
    "kv_bytes_per_token": "bytes/token",
    "tokens_per_s": "tokens/s",
    "latency_choice": "sequences",
}

# Name conventions (docs/design.md): suffixes and prefixes that carry the unit.
_SUFFIX_UNITS = (
    ("_cost_quad", "cost units/token²"),  # cost-model coefficients
    ("_cost_lin", "cost units/(hidden·token)"),
    ("_ms_quad", "ms/token²"),
    ("_ms_lin", "ms/(hidden·token)"),
    ("_ms_per_token", "ms/token"),
    ("_batch_size", "sequences"),
    ("_ms_per_step", "ms"),
    ("_ms_per_request", "ms"),
    ("_tokens_per_s", "tokens/s"),
    ("_per_s", "per s"),
    ("_rps", "requests/s"),
    ("_ms", "ms"),
    ("_s", "s"),
    ("_mb", "MB"),
    ("_gb", "GB"),
    ("_bytes", "bytes"),
    ("_tokens", "tokens"),
    ("_padding", "tokens"),
    ("_pct", "%"),
    ("_len", "tokens"),
)
_PREFIX_UNITS = (
    ("cost_", "cost units"),
    ("padding", "tokens"),  # padding_tokens, "padding total", "padding azure-conv"
    ("latency_", "ms"),
)

#: Magnitudes from which a column is scaled by a power of 1,000 (named in its header).
_SCALE_FROM = 1e9
#: Magnitudes below which a column is shown in scientific notation.
_SCIENTIFIC_BELOW = 1e-6
_SIGNIFICANT = 4
_MAX_DECIMALS = 6
_HAS_UNIT = re.compile(r"\([^()]*\)\s*$")


def unit_of(name: object) -> str | None:
    """The unit of a column or metric ``name`` (``"ms"``, ``"tokens"``, ``"cost units"``, ...),
    ``""`` for a dimensionless name, None when unknown."""
    key = str(name)
    if key in UNITS:
        return UNITS[key]
    if key.startswith("ratio_"):  # measured / predicted
        return "×"
    for marker in ("_at_", "_spread"):  # latency_p99_ms_at_knee, output_tokens_per_s_spread
        if marker in key:
            base = unit_of(key.split(marker, 1)[0])
            if base is not None:
                return base
    for suffix, unit in _SUFFIX_UNITS:
        if key.endswith(suffix):
            return unit
    if "/" in key:  # a ratio named by its header ("padding / prompt tokens")
        return None
    for prefix, unit in _PREFIX_UNITS:
        if key.startswith(prefix):
            return unit
    return None


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    pd = sys.modules.get("pandas")  # pandas' NA and NaT exist only once pandas is imported
    if pd is not None and (value is pd.NA or value is pd.NaT):
        return True
    return isinstance(value, float | np.floating) and math.isnan(float(value))


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class _Format:
    """One number format: whole numbers, fixed decimals, scaled or scientific."""

    kind: str  # "int", "fixed", "scientific", "text"
    decimals: int = 0
    scale_exp: int = 0  # values shown divided by 10**scale_exp

    def __call__(self, value: object) -> str:
        if _is_missing(value):
            return MISSING
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if not _is_number(value):
            return str(value)
        if self.kind == "text":  # a number among text: formatted on its own
            return _choose([value])(value)
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if self.kind == "scientific":
            return f"{v:.{_SIGNIFICANT - 1}e}"
        if self.scale_exp:
            v /= 10.0**self.scale_exp
        if self.kind == "int":
            return f"{int(round(v)):,d}"
        return f"{v:,.{self.decimals}f}"

    def unit(self, unit: str | None) -> str | None:
        """The header unit of a column in this format (the scale prefixed)."""
        if not self.scale_exp:
            return unit
        scale = f"1e{self.scale_exp}"
        return f"{scale} {unit}" if unit else scale


#: The units whose large values are scaled (a time, a count of tokens or requests stays whole).
_SCALED_UNITS = ("cost units", "", None)


def _choose(values: list[object], unit: str | None = None) -> _Format:
    """The format of a set of values (a column, or a row of a metric table) in ``unit``."""
    nums = [float(v) for v in values if _is_number(v) and not _is_missing(v)]
    finite = [v for v in nums if math.isfinite(v)]
    if not nums:
        return _Format("text")
    if not finite:
        return _Format("int")
    top = max(abs(v) for v in finite)
    whole = all(v == int(v) for v in finite) if top < 2**53 else False
    nonzero = [abs(v) for v in finite if v != 0]
    low = min(nonzero) if nonzero else 0.0
    if top >= _SCALE_FROM and low >= _SCALE_FROM / 1e3 and unit in _SCALED_UNITS:
        # every value is large: scaled so that the smallest is 1 to 1,000 of the unit shown
        exp = 3 * int(math.floor(math.log10(low) / 3))
        scaled = low / 10.0**exp
        decimals = min(max(0, _SIGNIFICANT - 1 - int(math.floor(math.log10(scaled)))), 3)
        return _Format("fixed", decimals, exp)
    if whole:
        return _Format("int")
    if top < _SCIENTIFIC_BELOW:
        return _Format("scientific")
    decimals = _SIGNIFICANT - 1 - int(math.floor(math.log10(top)))
    fractional = [abs(v) for v in finite if v != int(v)]
    if fractional:  # the smallest value that is not whole keeps a significant digit
        decimals = max(decimals, -int(math.floor(math.log10(min(fractional)))))
    return _Format("fixed", min(max(decimals, 0), _MAX_DECIMALS))


def _header(name: object, unit: str | None) -> str:
    text = str(name)
    if not unit or _HAS_UNIT.search(text) or text == unit:  # "requests", not "requests (requests)"
        return text
    return f"{text} ({unit})"


def formatted(
    df: pd.DataFrame, *, units: Mapping[str, str] | None = None, index: bool | None = None
) -> pd.DataFrame:
    """The strings :func:`table` and :func:`text_table` show: every cell formatted (see the
    module docstring), headers with units (``units`` maps a column to its unit, overriding
    :func:`unit_of`; ``""`` for none). The index is kept as the first column(s) when ``index``
    is True, or when None and it is not a plain 0..n-1 range."""
    import pandas as pd

    if isinstance(df, pd.Series):
        df = df.to_frame()
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(df).__name__}", field="df")
    given = dict(units or {})
    if index is None:
        index = not isinstance(df.index, pd.RangeIndex) or df.index.name is not None
    n_levels = df.index.nlevels
    frame = df.reset_index() if index else df.reset_index(drop=True)
    if index:  # unnamed index levels get no header
        names = [n for n in df.index.names]
        frame.columns = [
            "" if j < n_levels and names[j] is None else c for j, c in enumerate(frame.columns)
        ]
    names = list(frame.columns)
    headers, cells = _formatted_columns(
        names, [frame.iloc[:, j].tolist() for j in range(len(names))], given
    )
    out = pd.DataFrame(dict(enumerate(cells)), index=range(len(frame)), dtype=object)
    out.columns = headers
    return out


def _formatted_columns(
    names: list[object], columns: list[list[object]], given: Mapping[str, str]
) -> tuple[list[str], list[list[str]]]:
    """The headers and cells of a table of ``columns`` (lists of values) named ``names``: what
    :func:`formatted` shows, without pandas."""
    metric = "metric" if "metric" in names else None
    headers: list[str] = []
    cells: list[list[str]] = []
    n_rows = len(columns[0]) if columns else 0
    if metric is not None:
        # the columns holding the row's metric (achieved, limit, value, ...): one format per
        # row; columns with a unit of their own (optimality_gap, change_pct) and flags keep
        # one format per column
        values = {
            j
            for j, (c, col) in enumerate(zip(names, columns, strict=True))
            if c != metric
            and c != "unit"
            and unit_of(c) is None
            and str(c) not in given
            and not _all_bool(col)
        }
        if "unit" in names:
            row_units = [None if _is_missing(u) else str(u) for u in columns[names.index("unit")]]
        else:
            row_units = [given.get(str(m), unit_of(m)) for m in columns[names.index(metric)]]
        formats = [
            _choose([columns[j][i] for j in sorted(values)], row_units[i]) for i in range(n_rows)
        ]
        for j, (c, col) in enumerate(zip(names, columns, strict=True)):
            if j in values:
                headers.append(str(c))
                cells.append([f(v) for f, v in zip(formats, col, strict=True)])
            else:
                headers.append(_column_header(col, c, given))
                cells.append(_column_cells(col, c, given))
            if c == metric and "unit" not in names:
                headers.append("unit")
                cells.append([f.unit(u) or "" for f, u in zip(formats, row_units, strict=True)])
            elif c == "unit":  # the table's own unit column: name the scale of a scaled row
                cells[-1] = [
                    f.unit(str(u)) or "" if not _is_missing(u) else MISSING
                    for f, u in zip(formats, col, strict=True)
                ]
    else:
        for c, col in zip(names, columns, strict=True):
            headers.append(_column_header(col, c, given))
            cells.append(_column_cells(col, c, given))
    return headers, cells


def _column_unit(name: object, given: Mapping[str, str]) -> str | None:
    return given[str(name)] if str(name) in given else unit_of(name)


def _column_format(column: list[object], unit: str | None) -> _Format:
    return _choose(column, unit) if _numeric_like(column) else _Format("text")


def _column_header(column: list[object], name: object, given: Mapping[str, str]) -> str:
    unit = _column_unit(name, given)
    fmt = _column_format(column, unit)
    if fmt.kind == "text" or _all_bool(column):
        return _header(name, given.get(str(name)))
    return _header(name, fmt.unit(unit))


def _column_cells(column: list[object], name: object, given: Mapping[str, str]) -> list[str]:
    fmt = _column_format(column, _column_unit(name, given))
    return [fmt(v) for v in column]


def _all_bool(column: list[object]) -> bool:
    present = [v for v in column if not _is_missing(v)]
    return bool(present) and all(isinstance(v, bool | np.bool_) for v in present)


def _numeric_like(column: list[object]) -> bool:
    """True when the column holds numbers or booleans (and missing values) only."""
    present = [v for v in column if not _is_missing(v)]
    return bool(present) and all(_is_number(v) or isinstance(v, bool | np.bool_) for v in present)


def _text(headers: Sequence[object], columns: Sequence[Sequence[object]]) -> str:
    """Plain text of shown ``columns`` (lists of strings) under ``headers``: columns
    right-aligned (text columns left-aligned), two spaces between."""
    if not headers:
        return ""
    cells = [
        [str(c) for c in headers],
        *([str(v) for v in row] for row in zip(*columns, strict=True)),
    ]
    widths = [max(len(row[j]) for row in cells) for j in range(len(headers))]
    left = [_is_text_column(c) for c in columns]
    lines = []
    for row in cells:
        parts = [
            cell.ljust(w) if is_left else cell.rjust(w)
            for cell, w, is_left in zip(row, widths, left, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


_NUMBER_TEXT = re.compile(r"^[-+]?[\d,]*\.?\d*(e[-+]?\d+)?$|^—$|^yes$|^no$|^-?∞$")


def _is_text_column(column: Sequence[object]) -> bool:
    return not all(_NUMBER_TEXT.match(str(v)) for v in column)


@dataclass(frozen=True, eq=False)
class Table:
    """A table ready to show: ``data`` (the values, as given) and ``shown`` (the strings shown,
    headers with units). In Jupyter it renders as HTML; its ``repr`` is the same table as
    text (what nbval compares and what ``print`` shows)."""

    data: pd.DataFrame
    shown: pd.DataFrame

    def to_string(self) -> str:
        """The table as plain text (what the CLI prints)."""
        return _text(list(self.shown.columns), _shown_columns(self.shown))

    def __repr__(self) -> str:
        return self.to_string()

    def __str__(self) -> str:
        return self.to_string()

    def _repr_html_(self) -> str:
        left = [_is_text_column(c) for c in _shown_columns(self.shown)]
        head = "".join(
            f"<th style='text-align:{'left' if is_left else 'right'}'>{html.escape(str(c))}</th>"
            for c, is_left in zip(self.shown.columns, left, strict=True)
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='text-align:{'left' if is_left else 'right'}'>{html.escape(v)}</td>"
                for v, is_left in zip(row, left, strict=True)
            )
            + "</tr>"
            for row in self.shown.astype(str).values.tolist()
        )
        return (
            "<table class='batchlab-table'><thead><tr>"
            f"{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def _shown_columns(shown: pd.DataFrame) -> list[list[str]]:
    return [[str(v) for v in shown.iloc[:, j].tolist()] for j in range(len(shown.columns))]


def format_value(value: object, unit: str | None = None) -> str:
    """One value as a table shows it on its own (``1,234``, ``0.1577``, ``—``, ``yes``); a
    value scaled by a power of 1,000 names the scale (``1.402e12 cost units`` is shown
    ``1.402 (1e12 cost units)``) when ``unit`` is given."""
    fmt = _choose([value], unit)
    text = fmt(value)
    if fmt.scale_exp:
        return f"{text} ({fmt.unit(unit)})" if unit else f"{text}e{fmt.scale_exp}"
    return text


def table(
    df: pd.DataFrame, *, units: Mapping[str, str] | None = None, index: bool | None = None
) -> Table:
    """``df`` ready to display: one number format per column, units in the headers, ``—`` for
    missing values (see the module docstring; ``units`` and ``index`` as in :func:`formatted`).
    """
    return Table(df, formatted(df, units=units, index=index))


def text_table(
    df: pd.DataFrame | Mapping[str, Sequence[object]],
    *,
    units: Mapping[str, str] | None = None,
    index: bool | None = False,
) -> str:
    """``df`` as plain text in the formats of :func:`table` (what the CLI prints; no index
    unless ``index``). ``df`` may also be a mapping of column name to a list of values (the
    columns of a table without an index), which needs no pandas."""
    if isinstance(df, Mapping):
        names = list(df)
        columns = [list(df[c]) for c in names]
        if len({len(c) for c in columns}) > 1:
            raise InputError("columns of different lengths", field="df")
        return _text(*_formatted_columns(names, columns, dict(units or {})))
    shown = formatted(df, units=units, index=index)
    return _text(list(shown.columns), _shown_columns(shown))
