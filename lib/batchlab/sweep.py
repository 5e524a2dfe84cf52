"""Systematic search over planner settings: grid sweeps, monotone binary search, Pareto fronts.

- :func:`grid_sweep` runs a function on every combination of a parameter grid, in-process or on
  any :class:`concurrent.futures.Executor` or ``dask.distributed.Client``, and returns a tidy
  table (one row per combination) with limit checks.
- :func:`binary_search` finds the smallest value of one monotone parameter that meets a
  predicate.
- :func:`pareto_front` / :func:`add_pareto_flag` keep the non-dominated rows of a table.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from batchlab.checks import check_scalar
from batchlab.errors import InputError

__all__ = [
    "BinarySearchResult",
    "add_pareto_flag",
    "binary_search",
    "grid_sweep",
    "pareto_front",
]


# --------------------------------------------------------------------------------------------
# results -> metrics


def _as_metrics(obj: Any) -> dict[str, Any]:
    """Normalize what an evaluation function returned into a flat ``{metric: value}`` dict.

    Accepted: a mapping, a pandas Series, an object with a ``.summary()`` method returning a
    mapping or Series (e.g. batchlab's ``Evaluation``), or a single number (metric ``result``).
    """
    if isinstance(obj, pd.Series):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    summary = getattr(obj, "summary", None)
    if callable(summary):
        out = summary()
        if isinstance(out, pd.Series | Mapping):
            return {str(k): v for k, v in out.items()}
        raise TypeError(
            f".summary() of {type(obj).__name__} returned {type(out).__name__}, not a dict"
        )
    if isinstance(obj, numbers.Number | np.number | np.bool_):
        return {"result": obj}
    raise TypeError(
        f"the evaluation function returned {type(obj).__name__}; expected a dict, a pandas "
        "Series, an object with a .summary() method, or a number"
    )


def _evaluate_one(fn: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """Run ``fn(**params)`` and normalize its result (module level so executors can pickle it)."""
    return _as_metrics(fn(**params))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# grid sweep


def _grid(space: Mapping[str, Iterable[Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    if not isinstance(space, Mapping):
        raise InputError(f"space must be a dict name -> list of values, got {type(space).__name__}")
    names: list[str] = []
    axes: list[list[Any]] = []
    for name, values in space.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(
                f"parameter name {name!r} is not a valid keyword argument name", field=str(name)
            )
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise InputError(
                f"expected a list of values, got {type(values).__name__} {values!r}", field=name
            )
        values = list(values)
        if not values:
            raise InputError("empty list of values: the grid has no combination", field=name)
        names.append(name)
        axes.append(values)
    combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    return names, combos


def _check_limits(limits: Mapping[str, float] | None) -> dict[str, float]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise InputError(f"limits must be a dict metric -> maximum, got {type(limits).__name__}")
    out: dict[str, float] = {}
    for metric, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise InputError(f"limit must be a number, got {value!r}", field=str(metric))
        out[str(metric)] = float(value)
    return out


def _run_in_executor(
    executor: Any, combos: list[dict[str, Any]], fn: Callable[..., Any], bar: Any
) -> list[Any]:
    """Evaluate every combination on ``executor``; results (or exceptions) in grid order."""
    outcomes: list[Any] = [None] * len(combos)
    is_client = hasattr(executor, "submit") and hasattr(executor, "gather")
    if is_client and not hasattr(executor, "get_executor"):
        # a dask-like client without a concurrent.futures view: gather one future at a time
        futures = [executor.submit(_evaluate_one, fn, p, pure=False) for p in combos]
        for i, fut in enumerate(futures):
            try:
                outcomes[i] = executor.gather(fut)
            except Exception as exc:
                outcomes[i] = exc
            bar.update()
        return outcomes
    pool = executor.get_executor(pure=False) if is_client else executor
    if not hasattr(pool, "submit"):
        raise InputError(
            f"executor must be a concurrent.futures.Executor or a dask Client, got "
            f"{type(executor).__name__}"
        )
    index: dict[cf.Future, int] = {}
    try:
        for i, params in enumerate(combos):
            index[pool.submit(_evaluate_one, fn, params)] = i
        for fut in cf.as_completed(index):
            i = index[fut]
            try:
                outcomes[i] = fut.result()
            except Exception as exc:
                outcomes[i] = exc
            bar.update()
    except BaseException:
        for fut in index:
            fut.cancel()
        raise
    return outcomes


def grid_sweep(
    evaluate_fn: Callable[..., Any],
    space: Mapping[str, Iterable[Any]],
    *,
    limits: Mapping[str, float] | None = None,
    executor: Any = None,
    progress: bool = True,
    desc: str | None = None,
) -> pd.DataFrame:
    """Evaluate ``evaluate_fn(**params)`` on every combination of ``space`` and tabulate.

    ``space`` maps parameter name -> list of values; combinations follow
    ``itertools.product`` over the dict's order (the last parameter varies fastest). The function
    may return a dict, a pandas Series, an object with ``.summary()`` (e.g. an ``Evaluation``) or
    a number (metric column ``result``).

    Returns one row per combination, in grid order: the parameter columns, then every metric in
    order of first appearance (a metric named like a parameter is stored as ``<name>_result``),
    then for each ``limits`` entry ``metric: maximum`` a boolean ``ok_<metric>`` (metric <=
    maximum; False when the metric is missing or NaN) and ``ok_all`` (only when limits are
    given), and last an ``error`` column: ``None``, or ``"<ExceptionType>: <message>"`` for a
    combination whose call raised (its metrics are NaN). If every combination fails, the first
    exception (in grid order) is re-raised.

    ``executor``: None (in-process), any ``concurrent.futures.Executor`` (a process pool needs a
    picklable, module-level function), or a ``dask.distributed.Client`` (used through
    ``client.get_executor(pure=False)``). The table does not depend on the executor.
    """
    if not callable(evaluate_fn):
        raise InputError(f"evaluate_fn must be callable, got {type(evaluate_fn).__name__}")
    names, combos = _grid(space)
    checked_limits = _check_limits(limits)

    with tqdm(total=len(combos), desc=desc or "grid_sweep", disable=not progress) as bar:
        if executor is None:
            outcomes: list[Any] = []
            for params in combos:
                try:
                    outcomes.append(_evaluate_one(evaluate_fn, params))
                except Exception as exc:
                    outcomes.append(exc)
                bar.update()
        else:
            outcomes = _run_in_executor(executor, combos, evaluate_fn, bar)

    failures = [out for out in outcomes if isinstance(out, BaseException)]
    if len(failures) == len(outcomes):
        first = failures[0]
        first.add_note(
            f"grid_sweep: all {len(outcomes)} combination(s) failed; first one: {combos[0]}"
        )
        raise first

    reserved = set(names) | {"error", "ok_all"}
    rename: dict[str, str] = {}
    metric_cols: list[str] = []
    for out in outcomes:
        if isinstance(out, BaseException):
            continue
        for key in out:
            if key not in rename:
                col = f"{key}_result" if key in reserved or key.startswith("ok_") else key
                rename[key] = col
                metric_cols.append(col)

    table = pd.DataFrame(
        {name: [p[name] for p in combos] for name in names}, index=range(len(combos))
    )
    records = [
        {} if isinstance(out, BaseException) else {rename[k]: v for k, v in out.items()}
        for out in outcomes
    ]
    metrics = pd.DataFrame.from_records(records, columns=metric_cols, index=range(len(combos)))
    table = pd.concat([table, metrics], axis=1) if metric_cols else table

    if checked_limits:
        ok_cols = []
        for metric, maximum in checked_limits.items():
            col = rename.get(metric)
            if col is None:
                raise InputError(
                    f"limit on a metric the function does not return; metrics: {sorted(rename)}",
                    field=metric,
                )
            values = pd.to_numeric(table[col], errors="coerce").to_numpy(
                dtype=float, na_value=np.nan
            )
            table[f"ok_{metric}"] = values <= maximum  # NaN compares False
            ok_cols.append(f"ok_{metric}")
        table["ok_all"] = table[ok_cols].all(axis=1)

    table["error"] = pd.Series(
        [_error_text(out) if isinstance(out, BaseException) else None for out in outcomes],
        dtype=object,
    )
    table.attrs["space"] = {name: list(space[name]) for name in names}
    table.attrs["limits"] = checked_limits
    return table


# --------------------------------------------------------------------------------------------
# binary search


@dataclass(frozen=True)
class BinarySearchResult:
    """Outcome of :func:`binary_search`.

    ``value``: the smallest value found meeting the predicate (None when not ``found``);
    ``result``: ``fn(value)`` (None when not found); ``evaluations``: one row per call of ``fn``,
    in call order (``step``, ``value``, ``ok``, then the metrics of the result when it is a dict,
    Series, ``.summary()`` object or number, else a ``result`` column holding it); ``found``:
    False when even ``hi`` fails; ``converged``: False when ``max_iter`` stopped the bisection
    early (``value`` then still meets the predicate but may not be the smallest).
    """

    value: float | int | None
    result: Any
    evaluations: pd.DataFrame
    found: bool
    converged: bool = True


def binary_search(
    fn: Callable[[Any], Any],
    lo: float,
    hi: float,
    *,
    predicate: Callable[[Any], bool],
    integer: bool = True,
    tol: float | None = None,
    max_iter: int = 64,
) -> BinarySearchResult:
    """Smallest ``x`` in ``[lo, hi]`` with ``predicate(fn(x))`` true, by bisection.

    Assumes monotonicity: ``predicate(fn(x))`` is false up to some threshold and true from it on
    (e.g. "pad_ratio <= 0.3" as the number of shapes grows). If it is not monotone the answer is
    some value where the predicate is true whose predecessor probe was false, not necessarily
    the smallest. ``hi`` is probed first; if it fails, ``found`` is False.

    ``integer=True``: ``lo`` and ``hi`` are integers and the exact smallest integer is returned
    after about ``log2(hi - lo + 1) + 1`` calls (``tol`` is not used). ``integer=False``: floats;
    bisection stops when the bracket is narrower than ``tol`` (default ``1e-6 * (hi - lo)``) and
    returns its upper end, which meets the predicate and lies within ``tol`` above the threshold.
    ``lo`` is probed too, so a threshold at ``lo`` is returned exactly. ``fn`` is never called
    twice at the same value; ``max_iter`` caps the number of bisection steps.
    """
    if not callable(fn) or not callable(predicate):
        raise InputError("fn and predicate must be callable")
    max_iter = check_scalar(max_iter, "max_iter", int, min_val=0)
    if integer:
        for label, v in (("lo", lo), ("hi", hi)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise InputError(f"must be an integer when integer=True, got {v!r}", field=label)
        lo, hi = int(lo), int(hi)
    else:
        for label, v in (("lo", lo), ("hi", hi)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise InputError(f"must be a finite number, got {v!r}", field=label)
        lo, hi = float(lo), float(hi)
    if lo > hi:
        raise InputError(f"empty range: lo = {lo} > hi = {hi}", field="lo")
    if not integer:
        tol = 1e-6 * (hi - lo) if tol is None else float(tol)
        if not (tol >= 0 and math.isfinite(tol)):
            raise InputError(f"tol must be a finite number >= 0, got {tol!r}", field="tol")

    probes: list[tuple[Any, bool, Any]] = []
    seen: dict[Any, tuple[bool, Any]] = {}

    def probe(x: Any) -> bool:
        if x not in seen:
            res = fn(x)
            ok = bool(predicate(res))
            seen[x] = (ok, res)
            probes.append((x, ok, res))
        return seen[x][0]

    def finish(value: Any, found: bool, converged: bool = True) -> BinarySearchResult:
        rows = []
        for step, (x, ok, res) in enumerate(probes):
            try:
                metrics = _as_metrics(res)
            except TypeError:
                metrics = {"result": res}
            metrics = {
                (f"{k}_result" if k in ("step", "value", "ok") else k): v
                for k, v in metrics.items()
            }
            rows.append({"step": step, "value": x, "ok": ok, **metrics})
        table = pd.DataFrame(rows)
        result = seen[value][1] if found else None
        return BinarySearchResult(
            value=value if found else None,
            result=result,
            evaluations=table,
            found=found,
            converged=converged,
        )

    if not probe(hi):
        return finish(None, False)
    if integer:
        left, right = lo - 1, hi  # predicate(left) is treated as false, predicate(right) is true
        steps = 0
        while right - left > 1 and steps < max_iter:
            mid = left + (right - left) // 2
            if probe(mid):
                right = mid
            else:
                left = mid
            steps += 1
        return finish(right, True, converged=right - left == 1)
    if probe(lo):
        return finish(lo, True)
    left_f, right_f = lo, hi  # predicate(left_f) is false, predicate(right_f) is true
    steps = 0
    converged = True
    while right_f - left_f > tol:
        mid_f = left_f + (right_f - left_f) / 2
        if not left_f < mid_f < right_f:  # adjacent floats: the bracket cannot get narrower
            break
        if steps >= max_iter:
            converged = False
            break
        if probe(mid_f):
            right_f = mid_f
        else:
            left_f = mid_f
        steps += 1
    return finish(right_f, True, converged=converged)


# --------------------------------------------------------------------------------------------
# Pareto front


def _criteria_matrix(
    df: pd.DataFrame, minimize: str | Sequence[str], maximize: str | Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """An (n, k) float matrix where smaller is better in every column (maximize columns negated)."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(df).__name__}")
    mins = [minimize] if isinstance(minimize, str) else list(minimize)
    maxs = [maximize] if isinstance(maximize, str) else list(maximize)
    criteria = mins + maxs
    if not criteria:
        raise InputError("name at least one column to minimize or maximize")
    if len(set(criteria)) != len(criteria):
        raise InputError(f"a column is named twice in the criteria: {criteria}")
    cols = []
    for name in criteria:
        if name not in df.columns:
            raise InputError("no such column", field=str(name))
        col = df[name]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise InputError(f"criterion must be numeric, got dtype {col.dtype}", field=str(name))
        values = col.to_numpy(dtype=float, na_value=np.nan)
        cols.append(-values if name in maxs else values)
    matrix = np.column_stack(cols) if cols else np.empty((len(df), 0))
    return matrix, criteria


def _front_positions(points: np.ndarray, chunk_cells: int = 4_000_000) -> np.ndarray:
    """Positions (sorted lexicographically by the criteria) of the non-dominated distinct points.

    ``points`` is (n, k), finite, smaller is better. Of identical points only the first (lowest
    position) is kept. Two criteria: one O(n log n) sort and a running minimum. More: each point
    is checked against the front found so far with numpy broadcasting, in blocks of about
    ``chunk_cells`` comparisons (O(n * front size); O(n^2) at worst).
    """
    n, k = points.shape
    if n == 0:
        return np.empty(0, dtype=np.int64)
    # lexicographic order by criteria (first criterion primary), ties by position (stable)
    order = np.lexsort(points.T[::-1])
    sorted_pts = points[order]
    # drop repeats of an identical point: keep the first in lexicographic-then-position order,
    # i.e. the lowest position among identical points
    same_as_prev = np.zeros(n, dtype=bool)
    same_as_prev[1:] = (sorted_pts[1:] == sorted_pts[:-1]).all(axis=1)
    order = order[~same_as_prev]
    pts = sorted_pts[~same_as_prev]
    m = len(pts)
    if k == 1:
        return order[:1]
    if k == 2:
        # after the lexicographic sort every dominator of a point comes before it, so a point is
        # on the front iff its second criterion beats the best second criterion seen so far
        best_before = np.empty(m)
        best_before[0] = np.inf
        np.minimum.accumulate(pts[:-1, 1], out=best_before[1:])
        front = pts[:, 1] < best_before
        front[0] = True  # the lexicographic minimum is never dominated (even with c2 = +inf)
        return order[front]
    # k >= 3: in lexicographic order every dominator of a point comes before it, and dominance
    # is transitive, so a point is on the front iff no earlier front point and no earlier point
    # of its own block dominates it. Blocks of rows are compared with numpy broadcasting.
    keep = np.zeros(m, dtype=bool)
    front: list[np.ndarray] = []
    n_front = 0
    start = 0
    while start < m:
        rows = int(min(64, max(1, chunk_cells // (k * (n_front + 64)))))
        block = pts[start : start + rows]
        others = np.concatenate([*front, block]) if front else block
        # le[i, j]: others[j] <= block[i] on every criterion; lt: < on at least one
        le = others[None, :, 0] <= block[:, None, 0]
        lt = others[None, :, 0] < block[:, None, 0]
        for c in range(1, k):
            le &= others[None, :, c] <= block[:, None, c]
            lt |= others[None, :, c] < block[:, None, c]
        ok = ~(le & lt).any(axis=1)
        keep[start : start + rows] = ok
        front.append(block[ok])
        n_front += int(ok.sum())
        start += rows
    return order[keep]


def pareto_front(
    df: pd.DataFrame,
    minimize: str | Sequence[str],
    maximize: str | Sequence[str] = (),
) -> pd.DataFrame:
    """The rows of ``df`` not dominated by any other row on the named criteria.

    Row a dominates row b when a is at least as good on every criterion (<= for ``minimize``
    columns, >= for ``maximize`` columns) and strictly better on at least one. Rows identical on
    all criteria do not dominate each other; such a group is kept once (its first row in ``df``
    order). Rows with a NaN in any criterion (e.g. failed sweep points) are left out. The result
    keeps ``df``'s index labels and is sorted best-first by the first criterion (ascending for a
    ``minimize`` column, descending for ``maximize``), ties broken by the next criteria.
    Two criteria cost O(n log n); more use chunked O(n^2) comparisons (fine for ~10k rows).
    """
    positions = _pareto_positions(df, minimize, maximize)
    return df.iloc[positions]


def _pareto_positions(
    df: pd.DataFrame, minimize: str | Sequence[str], maximize: str | Sequence[str]
) -> np.ndarray:
    matrix, _ = _criteria_matrix(df, minimize, maximize)
    finite_rows = np.flatnonzero(~np.isnan(matrix).any(axis=1))
    return finite_rows[_front_positions(matrix[finite_rows])]


def add_pareto_flag(
    df: pd.DataFrame,
    minimize: str | Sequence[str],
    maximize: str | Sequence[str] = (),
    *,
    column: str = "pareto",
) -> pd.DataFrame:
    """A copy of ``df`` with a boolean ``column`` marking exactly the rows of :func:`pareto_front`.

    Of rows identical on all criteria only the first is flagged (as ``pareto_front`` keeps it once).
    """
    positions = _pareto_positions(df, minimize, maximize)
    flag = np.zeros(len(df), dtype=bool)
    flag[positions] = True
    out = df.copy()
    out[column] = flag
    return out
