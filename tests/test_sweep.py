"""Tests for batchlab.sweep: grid sweeps (in-process, executors, dask), binary search, Pareto."""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError
from batchlab.sweep import (
    BinarySearchResult,
    _front_positions,
    add_pareto_flag,
    binary_search,
    grid_sweep,
    pareto_front,
)

# ---------------------------------------------------------------------------------------------
# module-level toy functions (picklable for process pools and dask workers)


def toy(a, b):
    """sum = 10·a + len(b), prod = a·len(b); fails on (2, "yy")."""
    if a == 2 and b == "yy":
        raise ValueError("bad combination")
    return {"sum": 10 * a + len(b), "prod": a * len(b)}


class Summarized:
    def __init__(self, x):
        self.x = x

    def summary(self):
        return {"double": 2 * self.x, "square": self.x * self.x}


def summarized(x):
    return Summarized(x)


def as_series(x, y):
    return pd.Series({"ratio": x / y, "diff": x - y})


def scalar(x):
    return x * 1.5


def always_fails(x):
    raise RuntimeError(f"no luck with {x}")


def returns_params(k, scale):
    # "k" collides with the parameter name; the metric is stored as k_result
    return {"k": k * scale, "cost": 100.0 / k + scale}


def slow_square(x):
    time.sleep(0.01 * ((7 * x) % 3))  # finish out of order on a pool
    if x == 5:
        raise KeyError("five")
    return {"square": x * x, "half": x / 2}


# ---------------------------------------------------------------------------------------------
# grid_sweep


def test_grid_order_and_contents():
    df = grid_sweep(toy, {"a": [1, 2, 3], "b": ["x", "yy"]}, progress=False)
    # itertools.product: the last parameter varies fastest
    assert df["a"].tolist() == [1, 1, 2, 2, 3, 3]
    assert df["b"].tolist() == ["x", "yy", "x", "yy", "x", "yy"]
    assert list(df.columns) == ["a", "b", "sum", "prod", "error"]
    # sum = 10a + len(b): 11, 12, 21, (fails), 31, 32; prod = a·len(b): 1, 2, 2, -, 3, 6
    assert df["sum"].tolist()[:3] == [11, 12, 21]
    assert math.isnan(df["sum"].iloc[3]) and math.isnan(df["prod"].iloc[3])
    assert df["sum"].tolist()[4:] == [31, 32]
    assert df["prod"].tolist()[4:] == [3, 6]
    assert df["error"].iloc[3] == "ValueError: bad combination"
    assert df["error"].drop(index=3).isna().all()


def test_limits_columns():
    # prod = a·len(b); sum = 10a + len(b)
    df = grid_sweep(
        toy, {"a": [1, 2, 3], "b": ["x", "yy"]}, limits={"prod": 2, "sum": 25}, progress=False
    )
    assert list(df.columns)[-4:] == ["ok_prod", "ok_sum", "ok_all", "error"]
    # prod: 1, 2, 2, NaN, 3, 6  -> <= 2: T, T, T, F, F, F
    assert df["ok_prod"].tolist() == [True, True, True, False, False, False]
    # sum: 11, 12, 21, NaN, 31, 32 -> <= 25: T, T, T, F, F, F
    assert df["ok_sum"].tolist() == [True, True, True, False, False, False]
    assert df["ok_all"].tolist() == [True, True, True, False, False, False]
    df2 = grid_sweep(toy, {"a": [1, 3], "b": ["x"]}, limits={"prod": 1, "sum": 40}, progress=False)
    # (1, x): prod 1 ok, sum 11 ok; (3, x): prod 3 > 1, sum 31 ok
    assert df2["ok_prod"].tolist() == [True, False]
    assert df2["ok_sum"].tolist() == [True, True]
    assert df2["ok_all"].tolist() == [True, False]
    assert df2["ok_all"].dtype == bool


def test_limit_on_unknown_metric_and_bad_limits():
    with pytest.raises(InputError, match="does not return") as exc:
        grid_sweep(toy, {"a": [1], "b": ["x"]}, limits={"latency": 3}, progress=False)
    assert exc.value.field == "latency"
    with pytest.raises(InputError):
        grid_sweep(toy, {"a": [1], "b": ["x"]}, limits={"sum": "big"}, progress=False)


def test_result_kinds_summary_series_scalar():
    df = grid_sweep(summarized, {"x": [1, 2, 3]}, progress=False)
    assert df["double"].tolist() == [2, 4, 6]
    assert df["square"].tolist() == [1, 4, 9]
    df = grid_sweep(as_series, {"x": [6.0], "y": [2.0, 3.0]}, progress=False)
    # 6/2 = 3, 6-2 = 4; 6/3 = 2, 6-3 = 3
    assert df["ratio"].tolist() == [3.0, 2.0]
    assert df["diff"].tolist() == [4.0, 3.0]
    df = grid_sweep(scalar, {"x": [2, 4]}, progress=False)
    assert df["result"].tolist() == [3.0, 6.0]


def test_metric_named_like_a_parameter_is_renamed():
    df = grid_sweep(returns_params, {"k": [1, 4], "scale": [2]}, progress=False)
    assert list(df.columns) == ["k", "scale", "k_result", "cost", "error"]
    # k·scale: 2, 8; cost = 100/k + scale: 102, 27
    assert df["k"].tolist() == [1, 4]
    assert df["k_result"].tolist() == [2, 8]
    assert df["cost"].tolist() == [102.0, 27.0]


def test_every_combination_failing_reraises():
    with pytest.raises(RuntimeError, match="no luck with 1") as exc:
        grid_sweep(always_fails, {"x": [1, 2]}, progress=False)
    assert any("all 2 combination(s) failed" in note for note in exc.value.__notes__)


def test_bad_space():
    with pytest.raises(InputError, match="empty"):
        grid_sweep(toy, {"a": [], "b": ["x"]}, progress=False)
    with pytest.raises(InputError, match="list of values"):
        grid_sweep(toy, {"a": [1], "b": "x"}, progress=False)
    with pytest.raises(InputError):
        grid_sweep(toy, [("a", [1])], progress=False)


def test_progress_bar_runs(capsys):
    df = grid_sweep(scalar, {"x": range(3)}, progress=True, desc="toy sweep")
    assert df["result"].tolist() == [0.0, 1.5, 3.0]
    assert "toy sweep" in capsys.readouterr().err


SPACE = {"x": list(range(8))}


@pytest.fixture(scope="module")
def reference_sweep():
    return grid_sweep(slow_square, SPACE, limits={"square": 20}, progress=False)


def test_reference_sweep_contents(reference_sweep):
    df = reference_sweep
    assert df["x"].tolist() == list(range(8))
    assert df["error"].iloc[5] == "KeyError: 'five'"
    # squares 0,1,4,9,16,(25 fails),36,49 -> <= 20 for x <= 4
    assert df["ok_square"].tolist() == [True] * 5 + [False] * 3


def test_thread_pool_matches_in_process(reference_sweep):
    with ThreadPoolExecutor(max_workers=3) as pool:
        df = grid_sweep(slow_square, SPACE, limits={"square": 20}, executor=pool, progress=False)
    pd.testing.assert_frame_equal(df, reference_sweep)


def test_process_pool_matches_in_process(reference_sweep):
    with ProcessPoolExecutor(max_workers=2) as pool:
        df = grid_sweep(slow_square, SPACE, limits={"square": 20}, executor=pool, progress=False)
        df2 = grid_sweep(summarized, {"x": [1, 2]}, executor=pool, progress=False)
    pd.testing.assert_frame_equal(df, reference_sweep)
    pd.testing.assert_frame_equal(df2, grid_sweep(summarized, {"x": [1, 2]}, progress=False))


class _FakeClient:
    """A dask-like client with submit(..., pure=) and gather() but no get_executor()."""

    def __init__(self, pool):
        self.pool = pool
        self.pure = []

    def submit(self, fn, *args, pure=True):
        self.pure.append(pure)
        return self.pool.submit(fn, *args)

    def gather(self, future):
        return future.result()


def test_submit_gather_client_matches_in_process(reference_sweep):
    with ThreadPoolExecutor(max_workers=2) as pool:
        client = _FakeClient(pool)
        df = grid_sweep(slow_square, SPACE, limits={"square": 20}, executor=client, progress=False)
    pd.testing.assert_frame_equal(df, reference_sweep)
    assert client.pure == [False] * 8


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install 'batchlab[dist]')"
    )
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_dask_client_matches_in_process(dask_client, reference_sweep):
    df = grid_sweep(slow_square, SPACE, limits={"square": 20}, executor=dask_client, progress=False)
    pd.testing.assert_frame_equal(df, reference_sweep)
    df2 = grid_sweep(toy, {"a": [1, 2, 3], "b": ["x", "yy"]}, executor=dask_client, progress=False)
    pd.testing.assert_frame_equal(
        df2, grid_sweep(toy, {"a": [1, 2, 3], "b": ["x", "yy"]}, progress=False)
    )


# ---------------------------------------------------------------------------------------------
# binary_search


def test_binary_search_known_answer():
    # smallest k with 100 / k <= 7: k = 15 (100/14 = 7.14, 100/15 = 6.67)
    res = binary_search(lambda k: {"m": 100 / k}, 1, 64, predicate=lambda r: r["m"] <= 7)
    assert isinstance(res, BinarySearchResult)
    assert res.found and res.converged
    assert res.value == 15
    assert res.result == {"m": 100 / 15}
    assert res.evaluations["value"].iloc[0] == 64  # hi is probed first
    assert list(res.evaluations.columns) == ["step", "value", "ok", "m"]
    assert res.evaluations["value"].is_unique
    # 64 candidates: 1 probe of hi + ceil(log2(64)) = 6 bisection probes at most
    assert len(res.evaluations) <= 7


def test_binary_search_not_found_and_edges():
    res = binary_search(lambda x: x, 0, 10, predicate=lambda r: r > 10)
    assert not res.found and res.value is None and res.result is None
    assert res.evaluations["value"].tolist() == [10]
    res = binary_search(lambda x: x, 3, 3, predicate=lambda r: r >= 3)
    assert res.found and res.value == 3
    res = binary_search(lambda x: x, 5, 9, predicate=lambda r: True)
    assert res.value == 5
    with pytest.raises(InputError):
        binary_search(lambda x: x, 5, 1, predicate=bool)
    with pytest.raises(InputError):
        binary_search(lambda x: x, 0.5, 3, predicate=bool)


def test_binary_search_max_iter_stops_early():
    res = binary_search(lambda x: x, 0, 1000, predicate=lambda r: r >= 1, max_iter=2)
    # probes: 1000 (ok), 499 (ok), 249 (ok) -> stops with value 249, not the smallest
    assert res.evaluations["value"].tolist() == [1000, 499, 249]
    assert res.value == 249 and not res.converged


def _linear_scan(fn, lo, hi, predicate):
    for x in range(lo, hi + 1):
        if predicate(fn(x)):
            return x
    return None


@settings(max_examples=150, deadline=None)
@given(
    lo=st.integers(-50, 50),
    width=st.integers(0, 300),
    steps=st.lists(st.integers(-60, 400), max_size=8),
    limit=st.integers(0, 8),
)
def test_binary_search_matches_linear_scan(lo, width, steps, limit):
    hi = lo + width
    breakpoints = np.sort(np.array(steps, dtype=np.int64))

    # a monotone non-increasing step function: the number of breakpoints above x
    def metric(x):
        return {"above": int((breakpoints > x).sum())}

    calls = []

    def fn(x):
        calls.append(x)
        return metric(x)

    def predicate(r):
        return r["above"] <= limit

    expected = _linear_scan(metric, lo, hi, predicate)
    res = binary_search(fn, lo, hi, predicate=predicate)
    assert res.value == expected
    assert res.found == (expected is not None)
    assert len(calls) == len(set(calls))
    assert all(lo <= c <= hi for c in calls)
    assert len(calls) <= 1 + math.ceil(math.log2(width + 1))
    assert res.evaluations["value"].tolist() == calls
    if res.found:
        assert res.result == metric(expected)


@settings(max_examples=100, deadline=None)
@given(
    lo=st.floats(-1e3, 1e3),
    width=st.floats(0, 1e3),
    frac=st.floats(0, 1.2),
)
def test_binary_search_float_within_tolerance(lo, width, frac):
    hi = lo + width
    threshold = lo + frac * width
    res = binary_search(lambda x: x, lo, hi, predicate=lambda r: r >= threshold, integer=False)
    if threshold > hi:
        assert not res.found
        return
    tol = 1e-6 * (hi - lo)
    assert res.found and res.converged
    assert res.value >= threshold
    assert res.value - max(threshold, lo) <= tol + 1e-9 * max(1.0, abs(threshold))
    assert lo <= res.value <= hi


# ---------------------------------------------------------------------------------------------
# pareto_front


def test_pareto_known_answer():
    df = pd.DataFrame(
        {
            "cost": [5, 3, 4, 3, 1, 3, 6],
            "lat": [1, 4, 2, 4, 9, 5, 0.5],
            "name": list("abcdefg"),
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    front = pareto_front(df, ["cost", "lat"])
    # e=(1,9) best cost; b=(3,4) (d identical, kept once: b comes first); f=(3,5) dominated by b;
    # c=(4,2); a=(5,1); g=(6,0.5) -> sorted by cost
    assert front["name"].tolist() == ["e", "b", "c", "a", "g"]
    assert front.index.tolist() == [14, 11, 12, 10, 16]
    flagged = add_pareto_flag(df, ["cost", "lat"])
    assert flagged["pareto"].tolist() == [True, True, True, False, True, False, True]
    # maximize: throughput = -lat view; (cost min, lat max): the max-lat row at min cost wins
    front = pareto_front(df, "cost", maximize="lat")
    # e=(1,9) dominates everything with cost >= 1 and lat <= 9: all others
    assert front["name"].tolist() == ["e"]


def test_pareto_nan_rows_left_out_and_infinity():
    df = pd.DataFrame({"a": [1.0, np.nan, 0.0, 2.0], "b": [np.inf, 0.0, np.inf, 1.0]})
    # NaN row skipped; (0, inf) dominates (1, inf); (2, 1) is not dominated
    assert pareto_front(df, ["a", "b"]).index.tolist() == [2, 3]
    assert pareto_front(df.iloc[:0], ["a", "b"]).empty


def test_pareto_bad_columns():
    df = pd.DataFrame({"a": [1, 2], "s": ["x", "y"]})
    with pytest.raises(InputError):
        pareto_front(df, ["missing"])
    with pytest.raises(InputError):
        pareto_front(df, ["s"])
    with pytest.raises(InputError):
        pareto_front(df, [])
    with pytest.raises(InputError):
        pareto_front(df, ["a"], maximize=["a"])


def _reference_front(matrix: np.ndarray) -> list[int]:
    """O(n²) reference: positions of non-dominated rows, identical rows kept once (the first),
    sorted lexicographically by the criteria then by position. Smaller is better."""
    n = len(matrix)
    rows = [i for i in range(n) if not np.isnan(matrix[i]).any()]
    front = []
    for i in rows:
        dominated = False
        for j in rows:
            if np.all(matrix[j] <= matrix[i]) and np.any(matrix[j] < matrix[i]):
                dominated = True
                break
        duplicate = any(np.array_equal(matrix[j], matrix[i]) for j in front)
        if not dominated and not duplicate:
            front.append(i)
    return sorted(front, key=lambda i: (tuple(matrix[i]), i))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(0, 40),
    k=st.integers(1, 4),
)
def test_pareto_matches_brute_force(data, n, k):
    values = data.draw(
        st.lists(
            st.lists(
                st.one_of(st.integers(0, 4).map(float), st.just(np.nan)), min_size=k, max_size=k
            ),
            min_size=n,
            max_size=n,
        )
    )
    maximize_mask = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
    cols = [f"c{i}" for i in range(k)]
    df = pd.DataFrame(np.array(values, dtype=float).reshape(n, k), columns=cols)
    df.index = df.index * 3 + 7  # non-trivial labels
    mins = [c for c, m in zip(cols, maximize_mask, strict=True) if not m]
    maxs = [c for c, m in zip(cols, maximize_mask, strict=True) if m]
    # the reference works on "smaller is better" columns in the order minimize then maximize
    transformed = (
        np.column_stack([df[c].to_numpy() for c in mins] + [-df[c].to_numpy() for c in maxs])
        if n
        else np.empty((0, k))
    )
    expected = _reference_front(transformed)
    front = pareto_front(df, mins, maximize=maxs)  # mins may be empty (all maximized)
    assert front.index.tolist() == df.index[expected].tolist()
    flagged = add_pareto_flag(df, mins, maximize=maxs)
    assert np.flatnonzero(flagged["pareto"].to_numpy()).tolist() == sorted(expected)


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.lists(st.integers(0, 6).map(float), min_size=3, max_size=3), min_size=0, max_size=80
    ),
    chunk=st.integers(1, 500),
)
def test_front_chunking_does_not_matter(points, chunk):
    matrix = np.array(points, dtype=float).reshape(len(points), 3)
    assert _front_positions(matrix, chunk_cells=chunk).tolist() == _reference_front(matrix)


def test_pareto_ten_thousand_rows_is_fast():
    rng = np.random.default_rng(7)
    x = rng.random(10_000)
    # anti-correlated first two criteria: every row is on the front (the O(n²) worst case)
    df = pd.DataFrame({"a": x, "b": -x, "c": rng.random(10_000)})
    t0 = time.perf_counter()
    front = pareto_front(df, ["a", "b", "c"])
    assert time.perf_counter() - t0 < 5.0
    assert len(front) == 10_000
    assert front["a"].is_monotonic_increasing
    two = pareto_front(df, ["a", "c"])
    # 2 criteria: a row is on the front iff its c is below every c of smaller a
    order = np.argsort(x)
    c_sorted = df["c"].to_numpy()[order]
    prev_min = np.concatenate([[np.inf], np.minimum.accumulate(c_sorted)[:-1]])
    assert two.index.tolist() == order[c_sorted < prev_min].tolist()
