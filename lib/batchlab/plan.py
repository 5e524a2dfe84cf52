"""Plan tables: validation, JSONL files, verification and a quantile baseline plan.

A plan has one row per request: ``request_id`` (str), ``batch_id`` (str) and the batch's compiled
shape ``seq_align`` (tokens), ``heads_align`` (default 32) and ``hidden_align`` (default 4096),
all int64. On disk it is JSONL, one line per request::

    {"request_id": "r1", "batch_id": "b000000",
     "shape": {"seq_align": 128, "heads_align": 32, "hidden_align": 4096}}

Batches are ordered by ``batch_id`` in plain string order; within a batch, requests keep the order
of the plan's rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar, shown_value
from batchlab.errors import InputError, VerificationError
from batchlab.io import JsonLines, atomic_write, read_json_lines
from batchlab.plan_meta import PLAN_META_FORMAT, plan_meta_path, read_plan_meta
from batchlab.shapes import align, assign_shapes, check_granularity, gen_buckets
from batchlab.workload import MAX_LENGTH, id_strings, number_values, validate_requests

__all__ = [
    "DEFAULT_HEADS_ALIGN",
    "DEFAULT_HIDDEN_ALIGN",
    "JoinedPlan",
    "PLAN_COLUMNS",
    "PLAN_META_FORMAT",
    "VIOLATION_KINDS",
    "VerificationReport",
    "baseline_plan",
    "bucketed_plan",
    "join_and_verify",
    "plan_from_batches",
    "plan_meta_path",
    "read_plan",
    "read_plan_meta",
    "validate_plan",
    "verify",
    "verify_plans",
    "write_plan",
]

PLAN_COLUMNS = ("request_id", "batch_id", "seq_align", "heads_align", "hidden_align")
SHAPE_COLUMNS = ("seq_align", "heads_align", "hidden_align")
DEFAULT_HEADS_ALIGN = 32
DEFAULT_HIDDEN_ALIGN = 4096
_SHAPE_DEFAULTS = {"heads_align": DEFAULT_HEADS_ALIGN, "hidden_align": DEFAULT_HIDDEN_ALIGN}

#: Kinds of violation :func:`verify` reports, in the order they are listed.
VIOLATION_KINDS = (
    "missing",  # a request of the table is not in the plan
    "duplicate",  # a request appears more than once in the plan
    "unknown",  # a plan row names a request id that is not in the table
    "multi_shape",  # a batch has more than one shape
    "misaligned",  # seq_align is not a multiple of the granularity
    "undersized",  # seq_align is below the aligned prompt of a request in the batch
    "too_many_shapes",  # more distinct shapes than max_shapes
)

#: How many ids a violation message lists before it says "... and N more".
LIST_LIMIT = 10


# --------------------------------------------------------------------------------------------
# validation and files
# --------------------------------------------------------------------------------------------
def _row_line(df: pd.DataFrame, pos: int) -> int | None:
    lines = df.attrs.get("source_lines")
    if lines is not None and pos < len(lines):
        return int(lines[pos])
    return None


def _shared_strings(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow string array as an object array in which equal values share one str object
    (so later hashing and comparing is cheap). No nulls allowed."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    encoded = strings.dictionary_encode()
    words = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    return words[encoded.indices.to_numpy(zero_copy_only=False)]


def _arrow_strings(values: pd.Series) -> pa.Array | pa.ChunkedArray | None:
    """The Arrow string array behind a pandas column without nulls, or None."""
    if values.dtype == object:
        return None
    try:
        arr = pa.array(values.array)
    except (TypeError, ValueError, pa.ArrowException):
        return None
    if arr.null_count or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    return arr


def _as_str_column(df: pd.DataFrame, column: str, source: object | None) -> np.ndarray:
    """The column as an object array of Python str; InputError on a missing value."""
    values = df[column]
    if column == "batch_id":
        strings = _arrow_strings(values)
        if strings is not None:
            return _shared_strings(strings)
    arr = values.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(arr, skipna=False) == "string":
        try:
            "".join(arr).encode("utf-8")
            return arr  # all Python str, no missing value, valid Unicode
        except UnicodeEncodeError:
            pass  # id_strings names the lone surrogate
    return id_strings(df, column, source=source)


def _as_size_column(df: pd.DataFrame, column: str, source: object | None) -> np.ndarray:
    """The column as int64, every value a whole number in [1, MAX_LENGTH]; else InputError."""
    values = df[column]
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        arr = values.to_numpy(dtype=np.int64)
        bad = (arr <= 0) | (arr > MAX_LENGTH)
    else:
        expected = f"a positive whole number <= {MAX_LENGTH}"
        numeric = number_values(df, column, source=source, expected=expected)
        with np.errstate(invalid="ignore"):
            bad = (
                ~np.isfinite(numeric)
                | (numeric != np.floor(numeric))
                | (numeric <= 0)
                | (numeric > MAX_LENGTH)
            )
        if pd.api.types.is_bool_dtype(values.dtype):
            bad[:] = True
        arr = None
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"must be a positive whole number <= {MAX_LENGTH}, got {shown_value(values.iloc[pos])}",
            path=source,
            line=_row_line(df, pos),
            field=column,
            request_id=str(df["request_id"].iloc[pos]),
        )
    if arr is None:
        arr = numeric.astype(np.int64)
    return arr


def validate_plan(df: pd.DataFrame, *, source: object | None = None) -> pd.DataFrame:
    """Check a plan table and return a normalized copy.

    Columns: ``request_id`` and ``batch_id`` (str), ``seq_align`` (tokens), ``heads_align``
    (default 32) and ``hidden_align`` (default 4096), positive whole numbers as int64. Extra
    columns are kept after the plan columns. Duplicate or unknown request ids are not checked here
    (:func:`verify` reports them). Raises :class:`InputError` naming source, line, field and id.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame plan, got {type(df).__name__}", path=source)
    if len(df) == 0:
        raise InputError("the plan is empty (no rows)", path=source)
    for column in ("request_id", "batch_id", "seq_align"):
        if column not in df.columns:
            raise InputError("missing column", path=source, field=column)
    data: dict[str, object] = {
        "request_id": _as_str_column(df, "request_id", source),
        "batch_id": _as_str_column(df, "batch_id", source),
    }
    for column in SHAPE_COLUMNS:
        if column in df.columns:
            data[column] = _as_size_column(df, column, source)
        else:
            data[column] = np.full(len(df), _SHAPE_DEFAULTS[column], dtype=np.int64)
    for column in df.columns:
        if column not in PLAN_COLUMNS:
            data[column] = df[column].to_numpy()
    return _frame(data)


def _frame(data: dict[str, object]) -> pd.DataFrame:
    """A DataFrame whose id columns stay object arrays of Python str (not pandas' str dtype)."""
    columns = {
        name: pd.Series(values, dtype=object, copy=False)
        if name in ("request_id", "batch_id")
        else pd.Series(values, copy=False)
        for name, values in data.items()
    }
    return pd.DataFrame(columns, copy=False)


def _json_int(value: object, *, path: object, line: int, field: str, rid: str | None) -> int:
    not_number = isinstance(value, bool) or not isinstance(value, int | float)
    if not_number or (isinstance(value, float) and not value.is_integer()):
        raise InputError(
            f"must be a whole number, got {shown_value(value)}",
            path=path,
            line=line,
            field=field,
            request_id=rid,
        )
    if not 0 < value <= MAX_LENGTH:
        raise InputError(
            f"must be a positive whole number <= {MAX_LENGTH}, got {shown_value(value)}",
            path=path,
            line=line,
            field=field,
            request_id=rid,
        )
    return int(value)


def _json_id(value: object, *, path: object, line: int, field: str, rid: str | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise InputError("missing field", path=path, line=line, field=field, request_id=rid)
    raise InputError(
        f"must be a string, got {shown_value(value)}",
        path=path,
        line=line,
        field=field,
        request_id=rid,
    )


def read_plan(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a JSONL plan file (one JSON object per line; blank lines are skipped).

    Raises :class:`InputError` naming the file, the 1-based line and the field (for example
    ``shape.seq_align``) of the first bad value. Duplicate ids are left to :func:`verify`.
    The file is read by :func:`batchlab.io.read_json_lines`; a well-formed file is converted
    from the bulk parser's columns, anything else (and every error) goes through an exact
    check of each object.
    """
    parsed = read_json_lines(path, what="rows")
    if parsed.table is not None:
        fast = _plan_from_table(parsed.table)
        if fast is not None:
            return fast
        parsed = read_json_lines(path, bulk=False, what="rows")  # the exact objects
    return _plan_from_objects(parsed)


def _read_plan_arrow(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The bulk path of :func:`read_plan` alone; None whenever the exact reader must decide."""
    parsed = read_json_lines(path, what="rows")
    return None if parsed.table is None else _plan_from_table(parsed.table)


def _read_plan_lines(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The exact path of :func:`read_plan` alone: every object checked one by one."""
    return _plan_from_objects(read_json_lines(path, bulk=False, what="rows"))


def _plan_from_table(table: pa.Table) -> pd.DataFrame | None:
    """A plan from the bulk parser's columns; None when a column needs the exact checks."""
    n = table.num_rows
    if not {"request_id", "batch_id", "shape"} <= set(table.column_names):
        return None
    ids = {}
    for name in ("request_id", "batch_id"):
        col = table.column(name)
        if col.null_count or not (
            pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
        ):
            return None
        ids[name] = col.combine_chunks()
    shape = table.column("shape")
    if shape.null_count or not pa.types.is_struct(shape.type):
        return None
    shape = shape.combine_chunks()
    present = {shape.type.field(i).name for i in range(shape.type.num_fields)}
    data: dict[str, object] = {
        "request_id": ids["request_id"].to_numpy(zero_copy_only=False).astype(object),
        "batch_id": _shared_strings(ids["batch_id"]),
    }
    for column in SHAPE_COLUMNS:
        if column not in present:
            if column == "seq_align":
                return None
            data[column] = np.full(n, _SHAPE_DEFAULTS[column], dtype=np.int64)
            continue
        child = shape.field(column)
        if child.null_count or not pa.types.is_integer(child.type):
            return None  # a missing key on some lines, null, float, bool, string ...
        values = child.to_numpy(zero_copy_only=False).astype(np.int64)
        if ((values <= 0) | (values > MAX_LENGTH)).any():
            return None
        data[column] = values
    return _frame(data)


def _plan_from_objects(parsed: JsonLines) -> pd.DataFrame:
    """A plan from parsed objects, each checked: errors name file, line and field."""
    path = parsed.path
    rids: list[str] = []
    bids: list[str] = []
    batch_names: dict[str, str] = {}  # one str object per distinct batch id: faster grouping
    cols: dict[str, list[int]] = {c: [] for c in SHAPE_COLUMNS}
    for obj, lineno in zip(parsed.objects(), parsed.lines.tolist(), strict=True):
        if "request_id" not in obj:
            raise InputError("missing field", path=path, line=lineno, field="request_id")
        rid = _json_id(obj["request_id"], path=path, line=lineno, field="request_id", rid=None)
        if "batch_id" not in obj:
            raise InputError(
                "missing field", path=path, line=lineno, field="batch_id", request_id=rid
            )
        bid = _json_id(obj["batch_id"], path=path, line=lineno, field="batch_id", rid=rid)
        shape = obj.get("shape")
        if shape is None:
            raise InputError("missing field", path=path, line=lineno, field="shape", request_id=rid)
        if not isinstance(shape, dict):
            raise InputError(
                f"must be an object with seq_align, got {shape!r}",
                path=path,
                line=lineno,
                field="shape",
                request_id=rid,
            )
        if "seq_align" not in shape:
            raise InputError(
                "missing field",
                path=path,
                line=lineno,
                field="shape.seq_align",
                request_id=rid,
            )
        for column in SHAPE_COLUMNS:
            value = shape.get(column, _SHAPE_DEFAULTS.get(column))
            cols[column].append(
                _json_int(value, path=path, line=lineno, field=f"shape.{column}", rid=rid)
            )
        rids.append(rid)
        bids.append(batch_names.setdefault(bid, bid))
    data: dict[str, object] = {
        "request_id": np.array(rids, dtype=object),
        "batch_id": np.array(bids, dtype=object),
    }
    for column in SHAPE_COLUMNS:
        data[column] = np.array(cols[column], dtype=np.int64)
    return _frame(data)


def write_plan(plan: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a plan as JSONL (atomically; format in the module docstring). Extra columns are dropped."""
    table = validate_plan(plan)
    columns = [table[c].to_numpy() for c in PLAN_COLUMNS]
    dumps = json.dumps
    with atomic_write(path, "w") as fh:
        fh.writelines(
            f'{{"request_id": {dumps(rid)}, "batch_id": {dumps(bid)}, "shape": {{"seq_align": '
            f'{int(s)}, "heads_align": {int(h)}, "hidden_align": {int(d)}}}}}\n'
            for rid, bid, s, h, d in zip(*columns, strict=True)
        )


def plan_from_batches(
    request_ids: ArrayLike,
    batch_ids: ArrayLike,
    seq_aligns: ArrayLike,
    heads_align: int = DEFAULT_HEADS_ALIGN,
    hidden_align: int = DEFAULT_HIDDEN_ALIGN,
) -> pd.DataFrame:
    """Build a validated plan table from parallel arrays (one entry per request).

    ``batch_ids`` may be strings (used as is) or non-negative integers (written ``b000000``).
    ``seq_aligns`` (tokens) is one value per request or a single value for all;
    ``heads_align``/``hidden_align`` are single values or arrays.
    """
    rids = np.asarray(request_ids, dtype=object).ravel()
    n = len(rids)
    raw_bids = np.asarray(batch_ids).ravel()
    if raw_bids.dtype.kind in "iu":
        if raw_bids.size and raw_bids.min() < 0:
            raise InputError("integer batch ids must be >= 0", field="batch_id")
        nums, inverse = np.unique(raw_bids, return_inverse=True)
        names = np.array([f"b{int(b):06d}" for b in nums], dtype=object)
        bids = names[inverse.ravel()] if len(nums) else np.empty(0, dtype=object)
    else:
        bids = raw_bids.astype(object)
    if len(bids) != n:
        raise InputError(f"batch_ids has {len(bids)} entries for {n} request ids", field="batch_id")

    def column(values: ArrayLike, name: str) -> np.ndarray:
        arr = np.asarray(values)
        if arr.ndim == 0:
            return np.full(n, arr.item(), dtype=object if arr.dtype.kind == "O" else arr.dtype)
        arr = arr.ravel()
        if len(arr) != n:
            raise InputError(f"has {len(arr)} entries for {n} request ids", field=name)
        return arr

    frame = pd.DataFrame(
        {
            "request_id": rids,
            "batch_id": bids,
            "seq_align": column(seq_aligns, "seq_align"),
            "heads_align": column(heads_align, "heads_align"),
            "hidden_align": column(hidden_align, "hidden_align"),
        }
    )
    return validate_plan(frame)


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerificationReport:
    """Outcome of :func:`verify`: every violation found, as readable strings.

    ``kinds[i]`` is the kind (one of :data:`VIOLATION_KINDS`) of ``violations[i]``; ``shapes`` are
    the distinct (seq_align, heads_align, hidden_align) triples of the plan(s), sorted, and
    ``n_shapes`` their number.
    """

    ok: bool
    violations: tuple[str, ...]
    n_shapes: int
    shapes: tuple[tuple[int, int, int], ...] = ()
    kinds: tuple[str, ...] = ()

    def raise_if_invalid(self) -> VerificationReport:
        """Raise :class:`VerificationError` listing every violation; return self when ok."""
        if not self.ok:
            raise VerificationError(list(self.violations))
        return self


def _quote(values: Sequence[object]) -> list[str]:
    return [repr(str(v)) for v in values]


def _listing(items: Sequence[str], total: int) -> str:
    """First LIST_LIMIT items joined, then how many more there are."""
    text = ", ".join(items[:LIST_LIMIT])
    if total > LIST_LIMIT:
        text += f", ... and {total - LIST_LIMIT:,} more"
    return text


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(v)) for v in shape) + ")"


def _check_max_shapes(max_shapes: int | None) -> int | None:
    return check_scalar(max_shapes, "max_shapes", int, min_val=1, allow_none=True)


def _check_granularity(granularity: int) -> int:
    return check_granularity(granularity)


def _distinct_shapes(seq: np.ndarray, heads: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Distinct (seq_align, heads_align, hidden_align) rows, sorted, as an (k, 3) int64 array."""
    frame = pd.DataFrame({"s": seq, "h": heads, "d": hidden}).drop_duplicates()
    arr = frame.to_numpy(dtype=np.int64)
    order = np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0]))
    return arr[order]


@dataclass(frozen=True, eq=False)
class JoinedPlan:
    """A request table joined with a plan, and the violations found (:func:`join_and_verify`).

    ``requests`` / ``plan``: the validated tables; ``violations``: ``(kind, message)`` pairs
    (kinds of :data:`VIOLATION_KINDS`, the shape cap not checked); ``shapes``: the plan's
    distinct (seq_align, heads_align, hidden_align) rows, sorted, (k, 3) int64; per plan row,
    ``req_pos`` (its request's position in ``requests``, -1 if unknown) and ``batch_codes``
    (its batch's index in ``batch_ids``, the distinct batch ids in string order); per batch,
    ``first_row`` (its first plan row); per request, ``aligned_prompt`` (align(prompt_len, g),
    tokens).
    """

    requests: pd.DataFrame
    plan: pd.DataFrame
    violations: list[tuple[str, str]]
    shapes: np.ndarray
    req_pos: np.ndarray
    batch_codes: np.ndarray
    batch_ids: np.ndarray
    first_row: np.ndarray
    aligned_prompt: np.ndarray

    @property
    def ok(self) -> bool:
        """True when no violation was found."""
        return not self.violations


def _lookup(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Position of each query in ``keys`` (unique str), -1 when absent; int64, vectorized."""
    try:
        found = pc.index_in(
            pa.array(queries, type=pa.large_string()),
            value_set=pa.array(keys, type=pa.large_string()),
        )
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    except (pa.ArrowException, UnicodeError):  # e.g. lone surrogates: hash the Python objects
        codes, _ = pd.factorize(np.concatenate([keys, queries]))
        # keys are unique, so key i gets code i and a query absent from keys a code >= len(keys)
        pos = codes[len(keys) :].astype(np.int64)
        pos[pos >= len(keys)] = -1
        return pos


def join_and_verify(
    requests: pd.DataFrame, plan: pd.DataFrame, granularity: int = 64
) -> JoinedPlan:
    """Validate both tables, join the plan to its requests and find every violation except
    the shape cap (vectorized): the seam :func:`verify` and :func:`batchlab.evaluate.evaluate`
    share. Bad tables raise :class:`InputError`; violations are returned, not raised."""
    g = _check_granularity(granularity)
    req = validate_requests(requests)
    pl = validate_plan(plan)
    n, m = len(req), len(pl)
    req_ids = req["request_id"].to_numpy(dtype=object)
    plan_ids = pl["request_id"].to_numpy(dtype=object)
    pos = _lookup(req_ids, plan_ids)
    known = pos >= 0
    counts = np.bincount(pos[known], minlength=n)
    batch_codes, batch_ids = pd.factorize(pl["batch_id"].to_numpy(dtype=object), sort=True)
    batch_codes = batch_codes.astype(np.int64)
    batch_ids = np.asarray(batch_ids, dtype=object)
    nb = len(batch_ids)
    first_row = np.full(nb, m, dtype=np.int64)
    np.minimum.at(first_row, batch_codes, np.arange(m, dtype=np.int64))
    seq = pl["seq_align"].to_numpy(dtype=np.int64)
    heads = pl["heads_align"].to_numpy(dtype=np.int64)
    hidden = pl["hidden_align"].to_numpy(dtype=np.int64)
    aligned = align(req["prompt_len"].to_numpy(dtype=np.int64), g)

    violations: list[tuple[str, str]] = []

    missing = np.flatnonzero(counts == 0)
    if len(missing):
        violations.append(
            (
                "missing",
                f"missing: {len(missing):,} request(s) of the request table are not in the plan: "
                + _listing(_quote(req_ids[missing[:LIST_LIMIT]]), len(missing)),
            )
        )
    dup = np.flatnonzero(counts > 1)
    if len(dup):
        items = [
            f"{rid!r} ({int(c)} times)"
            for rid, c in zip(req_ids[dup[:LIST_LIMIT]], counts[dup[:LIST_LIMIT]], strict=True)
        ]
        violations.append(
            (
                "duplicate",
                f"duplicate: {len(dup):,} request(s) appear more than once in the plan: "
                + _listing(items, len(dup)),
            )
        )
    if not known.all():
        unknown_ids = pd.unique(plan_ids[~known])
        n_unknown = len(unknown_ids)
        violations.append(
            (
                "unknown",
                f"unknown: {n_unknown:,} request id(s) in the plan are not in the request table: "
                + _listing(_quote(unknown_ids[:LIST_LIMIT]), n_unknown),
            )
        )

    first_of_row = first_row[batch_codes]
    differs = (
        (seq != seq[first_of_row])
        | (heads != heads[first_of_row])
        | (hidden != hidden[first_of_row])
    )
    if differs.any():
        bad_batches = np.unique(batch_codes[differs])
        in_bad = np.isin(batch_codes, bad_batches[:LIST_LIMIT])
        sub = pd.DataFrame(
            {"b": batch_codes[in_bad], "s": seq[in_bad], "h": heads[in_bad], "d": hidden[in_bad]}
        ).drop_duplicates()
        sub = sub.sort_values(["b", "s", "h", "d"])
        items = []
        for b, grp in sub.groupby("b", sort=True):
            shapes_txt = ", ".join(_fmt_shape(r) for r in grp[["s", "h", "d"]].to_numpy())
            items.append(f"{batch_ids[b]!r} ({shapes_txt})")
        violations.append(
            (
                "multi_shape",
                f"multi_shape: {len(bad_batches):,} batch(es) have more than one shape "
                "(seq_align, heads_align, hidden_align): " + _listing(items, len(bad_batches)),
            )
        )

    off_grid = seq % g != 0
    if off_grid.any():
        bad = pd.DataFrame({"b": batch_codes[off_grid], "s": seq[off_grid]}).drop_duplicates()
        bad = bad.sort_values(["b", "s"])
        n_bad = bad["b"].nunique()
        items = [
            f"{batch_ids[b]!r} (seq_align {', '.join(str(int(s)) for s in grp['s'])})"
            for b, grp in bad[bad["b"].isin(bad["b"].unique()[:LIST_LIMIT])].groupby("b")
        ]
        violations.append(
            (
                "misaligned",
                f"misaligned: seq_align is not a multiple of the granularity {g} in "
                f"{n_bad:,} batch(es): " + _listing(items, n_bad),
            )
        )

    need = np.zeros(m, dtype=np.int64)
    need[known] = aligned[pos[known]]
    under = np.flatnonzero(known & (seq < need))
    if len(under):
        n_under = len(np.unique(pos[under]))  # distinct requests (a duplicate row counts once)
        shown = under[:LIST_LIMIT]
        items = [
            f"{plan_ids[r]!r} in batch {batch_ids[batch_codes[r]]!r} "
            f"(aligned prompt {int(need[r])} > seq_align {int(seq[r])})"
            for r in shown
        ]
        violations.append(
            (
                "undersized",
                f"undersized: {n_under:,} request(s) have an aligned prompt (granularity {g}) "
                "above their row's seq_align: " + _listing(items, len(under)),
            )
        )

    # Without a multi-shape batch, each batch's first row carries its only shape.
    rows = np.arange(m) if differs.any() else first_row
    return JoinedPlan(
        requests=req,
        plan=pl,
        violations=violations,
        shapes=_distinct_shapes(seq[rows], heads[rows], hidden[rows]),
        req_pos=pos,
        batch_codes=batch_codes,
        batch_ids=batch_ids,
        first_row=first_row,
        aligned_prompt=aligned,
    )


def _cap_violation(shapes: np.ndarray, max_shapes: int | None, scope: str) -> list[tuple[str, str]]:
    if max_shapes is None or len(shapes) <= max_shapes:
        return []
    items = [_fmt_shape(s) for s in shapes[:LIST_LIMIT]]
    return [
        (
            "too_many_shapes",
            f"too_many_shapes: {len(shapes):,} distinct shapes (seq_align, heads_align, "
            f"hidden_align) {scope} exceed max_shapes = {max_shapes}: "
            + _listing(items, len(shapes)),
        )
    ]


def _report(violations: list[tuple[str, str]], shapes: np.ndarray) -> VerificationReport:
    return VerificationReport(
        ok=not violations,
        violations=tuple(msg for _, msg in violations),
        n_shapes=len(shapes),
        shapes=tuple((int(s), int(h), int(d)) for s, h, d in shapes),
        kinds=tuple(kind for kind, _ in violations),
    )


def verify(
    requests: pd.DataFrame,
    plan: pd.DataFrame,
    max_shapes: int | None = None,
    granularity: int = 64,
) -> VerificationReport:
    """Check a plan against its request table and report every violation at once.

    Violations (see :data:`VIOLATION_KINDS`): requests missing from the plan, requests appearing
    more than once, unknown request ids, a batch with more than one shape, ``seq_align`` not a
    multiple of ``granularity`` (tokens), ``seq_align`` below a request's aligned prompt length,
    more distinct (seq_align, heads_align, hidden_align) shapes than ``max_shapes``.
    Bad tables (wrong columns, values) raise :class:`InputError` instead.
    """
    cap = _check_max_shapes(max_shapes)
    checked = join_and_verify(requests, plan, granularity)
    violations = checked.violations + _cap_violation(checked.shapes, cap, "in the plan")
    return _report(violations, checked.shapes)


def verify_plans(
    requests_list: Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame] | pd.DataFrame,
    plans: Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame],
    max_shapes: int | None = None,
    granularity: int = 64,
) -> VerificationReport:
    """Verify several (requests, plan) pairs; ``max_shapes`` caps the shapes of all plans together.

    ``plans`` is a sequence (violations prefixed ``plan 0: ``, ...) or a mapping name -> plan
    (prefixed ``plan 'name': ``). ``requests_list`` is a sequence of the same length, a mapping
    with the same keys, or one request table shared by every plan.
    """
    cap = _check_max_shapes(max_shapes)
    if isinstance(plans, Mapping):
        names = list(plans)
        plan_list = [plans[k] for k in names]
        labels = [f"plan {str(k)!r}" for k in names]
    elif isinstance(plans, pd.DataFrame):
        raise TypeError("plans must be a sequence or mapping of plan tables; use verify() for one")
    else:
        plan_list = list(plans)
        names = list(range(len(plan_list)))
        labels = [f"plan {i}" for i in names]
    if not plan_list:
        raise InputError("no plans to verify", field="plans")
    if isinstance(requests_list, pd.DataFrame):
        req_list = [requests_list] * len(plan_list)
    elif isinstance(requests_list, Mapping):
        if not isinstance(plans, Mapping) or set(requests_list) != set(names):
            raise InputError(
                "requests_list must have the same keys as plans", field="requests_list"
            )
        req_list = [requests_list[k] for k in names]
    else:
        req_list = list(requests_list)
        if len(req_list) != len(plan_list):
            raise InputError(
                f"{len(req_list)} request tables for {len(plan_list)} plans", field="requests_list"
            )
    violations: list[tuple[str, str]] = []
    all_shapes = []
    for label, req, pl in zip(labels, req_list, plan_list, strict=True):
        checked = join_and_verify(req, pl, granularity)
        violations.extend((kind, f"{label}: {msg}") for kind, msg in checked.violations)
        all_shapes.append(checked.shapes)
    stacked = np.concatenate(all_shapes, axis=0)
    shapes = _distinct_shapes(stacked[:, 0], stacked[:, 1], stacked[:, 2])
    violations.extend(_cap_violation(shapes, cap, f"across {len(plan_list)} plans together"))
    return _report(violations, shapes)


# --------------------------------------------------------------------------------------------
# baseline
# --------------------------------------------------------------------------------------------
def baseline_plan(requests: pd.DataFrame, k: int = 8, granularity: int = 64) -> pd.DataFrame:
    """A simple plan: at most ``k`` quantile shapes of the aligned prompt length, one batch each.

    Shapes are the nearest-rank quantiles of ``align(prompt_len, granularity)`` (tokens) at
    j/k for j = 1..k (the ceil(N*j/k)-th smallest aligned length, so j = k is the maximum),
    deduplicated. Each request goes to the smallest shape that covers it; every shape gets one
    batch (``b000000`` for the smallest shape, ...). Rows are ordered by batch, then by the
    request table's order. Generation lengths are ignored.
    """
    k = check_scalar(k, "k", int, min_val=1)
    g = _check_granularity(granularity)
    req = validate_requests(requests)
    aligned = align(req["prompt_len"].to_numpy(dtype=np.int64), g)
    n = len(aligned)
    ranks = (np.arange(1, int(k) + 1, dtype=np.int64) * n + int(k) - 1) // int(k)  # ceil(j*n/k)
    ordered = np.sort(aligned)
    shapes = np.unique(ordered[ranks - 1])
    which = np.searchsorted(shapes, aligned, side="left")
    order = np.argsort(which, kind="stable")
    names = np.array([f"b{j:06d}" for j in range(len(shapes))], dtype=object)
    return _frame(
        {
            "request_id": req["request_id"].to_numpy(dtype=object)[order],
            "batch_id": names[which[order]],
            "seq_align": shapes[which[order]].astype(np.int64),
            "heads_align": np.full(n, DEFAULT_HEADS_ALIGN, dtype=np.int64),
            "hidden_align": np.full(n, DEFAULT_HIDDEN_ALIGN, dtype=np.int64),
        }
    )


def bucketed_plan(
    requests: pd.DataFrame,
    seq_aligns: ArrayLike,
    gen_bucket_size: int | None = None,
    max_batch_size: int | None = None,
    granularity: int = 64,
) -> pd.DataFrame:
    """A plan from given shapes: each request at its smallest covering shape, one batch per
    (shape, gen bucket), split into batches of at most ``max_batch_size`` requests.

    ``seq_aligns`` are shapes in tokens (positive multiples of ``granularity``; order and repeats
    do not matter); a request whose aligned prompt exceeds every shape raises :class:`InputError`.
    ``gen_bucket_size`` (tokens, None = no split) buckets gen_len as ``(gen_len - 1) // size``.
    Batches are numbered ``b000000``, ... by shape, then gen bucket, then chunk; within a batch
    requests keep the request table's order, and chunks of ``max_batch_size`` are cut in that order.
    """
    g = _check_granularity(granularity)
    req = validate_requests(requests)
    shapes = np.asarray(seq_aligns)
    if shapes.size == 0:
        raise InputError("no shapes given", field="seq_aligns")
    if shapes.dtype == bool or not np.issubdtype(shapes.dtype, np.number):
        raise InputError(f"must be whole numbers of tokens, got {shapes!r}", field="seq_aligns")
    shapes_f = shapes.astype(np.float64).ravel()
    if not np.isfinite(shapes_f).all() or (shapes_f != np.floor(shapes_f)).any():
        raise InputError(f"must be whole numbers of tokens, got {shapes!r}", field="seq_aligns")
    shapes = np.unique(shapes_f.astype(np.int64))
    bad = shapes[(shapes <= 0) | (shapes % g != 0)]
    if len(bad):
        raise InputError(
            f"must be positive multiples of the granularity {g}, got {int(bad[0])}",
            field="seq_aligns",
        )
    max_batch_size = check_scalar(max_batch_size, "max_batch_size", int, min_val=1, allow_none=True)
    ids = req["request_id"].to_numpy(dtype=object)
    seq = assign_shapes(req["prompt_len"].to_numpy(dtype=np.int64), shapes, g, request_ids=ids)
    n = len(seq)
    if gen_bucket_size is None:
        bucket = np.zeros(n, dtype=np.int64)
    else:
        bucket = gen_buckets(req["gen_len"].to_numpy(dtype=np.int64), gen_bucket_size)
    order = np.lexsort((np.arange(n), bucket, seq))  # by shape, then gen bucket, then table order
    s_sorted, b_sorted = seq[order], bucket[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (s_sorted[1:] != s_sorted[:-1]) | (b_sorted[1:] != b_sorted[:-1])
    new_batch = new_group.copy()
    if max_batch_size is not None:
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        new_batch |= (np.arange(n) - group_start) % int(max_batch_size) == 0
    batch_index = np.cumsum(new_batch) - 1
    names = np.array([f"b{j:06d}" for j in range(int(batch_index[-1]) + 1)], dtype=object)
    return _frame(
        {
            "request_id": ids[order],
            "batch_id": names[batch_index],
            "seq_align": s_sorted.astype(np.int64),
            "heads_align": np.full(n, DEFAULT_HEADS_ALIGN, dtype=np.int64),
            "hidden_align": np.full(n, DEFAULT_HIDDEN_ALIGN, dtype=np.int64),
        }
    )
