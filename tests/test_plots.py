"""Tests of batchlab.plots: every figure builder on small data, values checked against the library
and against hand-worked or slow reference computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import plots
from batchlab.errors import InputError
from batchlab.evaluate import evaluate
from batchlab.plan import baseline_plan, plan_from_batches
from batchlab.planner import Limits, lower_bounds
from batchlab.shapes import (
    align,
    min_padding_tokens,
    padding_tokens,
    shape_grid,
)
from batchlab.workload import lognormal_workload, profile, with_arrivals

FAST = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def small(request_table):
    return request_table([10, 70, 130, 600, 1000, 40], [5, 50, 20, 300, 7, 60])


@pytest.fixture(scope="module")
def workload():
    return lognormal_workload(400, seed=7)


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


# ------------------------------------------------------------------ length distributions


def test_length_distribution_hand_example(request_table):
    # lengths 1, 10, 100 with 2 log bins: edges 1, 10, 100; [1, 10) holds 1, [10, 100] holds 2
    # (numpy's last bin is closed): shares 1/3 and 2/3 of the requests.
    df = request_table([1, 10, 100], [1, 10, 100])
    fig = plots.length_distribution_figure(df, n_bins=2)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["workload", "workload"]
    t = fig.data[0]
    np.testing.assert_allclose(t.x, [1, 10, 100])
    np.testing.assert_allclose(t.y, [100 / 3, 200 / 3, 200 / 3])  # last value repeated for "hv"
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert "tokens" in fig.layout.xaxis.title.text
    counts = plots.length_distribution_figure(df, n_bins=2, normalize=False)
    np.testing.assert_allclose(counts.data[0].y[:-1], [1, 2])


def test_length_distribution_overlays_workloads_on_shared_bins(workload):
    other = lognormal_workload(150, seed=8, prompt_median=2000)
    fig = plots.length_distribution_figure({"a": workload, "b": other}, n_bins=20)
    assert [t.name for t in fig.data] == ["a", "b", "a", "b"]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    for j, col in enumerate(["prompt_len", "gen_len"]):
        lo = min(workload[col].min(), other[col].min())
        hi = max(workload[col].max(), other[col].max())
        edges = np.geomspace(lo, hi, 21)
        for i, df in enumerate([workload, other]):
            t = fig.data[2 * j + i]
            np.testing.assert_allclose(t.x, edges)
            expected = np.histogram(df[col], bins=edges)[0] / len(df) * 100
            np.testing.assert_allclose(t.y[:-1], expected)
            assert math.isclose(sum(t.y[:-1]), 100.0)


@FAST
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=60), st.integers(1, 30))
def test_log_bins_count_every_length_once(lengths, n_bins):
    edges = plots.log_bin_edges(min(lengths), max(lengths), n_bins)
    assert len(edges) == n_bins + 1
    assert np.all(np.diff(edges) > 0)
    assert edges[0] == min(lengths)
    counts = plots.length_histogram(lengths, edges)
    assert counts.sum() == len(lengths)


def test_length_distribution_rejects_bad_input(small):
    with pytest.raises(InputError):
        plots.length_distribution_figure(small, columns=["nope"])
    with pytest.raises(InputError):
        plots.length_distribution_figure({})
    with pytest.raises(InputError):
        plots.log_bin_edges(0, 10)


def test_percentiles_table_matches_profile(workload, small):
    t = plots.length_percentiles_table({"w": workload, "s": small})
    assert list(t["workload"]) == ["w", "w", "s", "s"]
    prof = profile(workload).lengths
    row = t[(t["workload"] == "w") & (t["field"] == "prompt_len")].iloc[0]
    for col in ("p50", "p95", "p99", "max", "count"):
        assert row[col] == prof.loc["prompt_len", col]
    fig = plots.percentiles_table_figure({"w": workload})
    assert isinstance(fig.data[0], go.Table)
    header = list(fig.data[0].header.values)
    assert header[:2] == ["workload", "field"]
    cells = fig.data[0].cells.values
    assert cells[header.index("p95")][0] == f"{prof.loc['prompt_len', 'p95']:,}"


# ------------------------------------------------------------------ arrivals


def test_arrival_rate_hand_example(request_table):
    # arrivals 0, 0.5, 1.2, 2.9 s in 1 s windows: [0,1) 2, [1,2) 1, [2,3) 1 requests
    df = request_table([1, 2, 3, 4], [1, 1, 1, 1], arrival_s=[0.0, 0.5, 1.2, 2.9])
    fig = plots.arrival_rate_figure(df, window_s=1.0)
    np.testing.assert_allclose(fig.data[0].x, [0, 1, 2])
    np.testing.assert_allclose(fig.data[0].y, [2, 1, 1])
    # 2 s windows: [0,2) holds 3 -> 1.5 requests/s, [2,4) holds 1 -> 0.5 requests/s
    fig2 = plots.arrival_rate_figure(df, window_s=2.0)
    np.testing.assert_allclose(fig2.data[0].y, [1.5, 0.5])
    assert "requests/s" in fig.layout.yaxis.title.text
    assert "(s)" in fig.layout.xaxis.title.text


def test_arrival_rate_needs_arrivals_and_matches_total(workload):
    with pytest.raises(InputError):
        plots.arrival_rate_figure(workload)
    timed = with_arrivals(workload, rate_per_s=20.0, seed=1)
    fig = plots.arrival_rate_figure({"poisson": timed}, window_s=2.5)
    assert fig.data[0].name == "poisson"
    assert math.isclose(sum(fig.data[0].y) * 2.5, len(timed))


# ------------------------------------------------------------------ padding vs k


def test_padding_vs_k_hand_example():
    # lengths 10, 70, 130 with g = 64 align to 64, 128, 192.
    # k = 1: {192}: 182 + 122 + 62 = 366; k = 2: {128, 192} or {64, 192}: 238;
    # k = 3: {64, 128, 192}: 54 + 58 + 62 = 174 = the alignment padding.
    t = plots.padding_vs_k_table([10, 70, 130], [1, 2, 3], families=["optimal"])
    assert list(t["padding_tokens"]) == [366, 238, 174]
    assert list(t["n_shapes"]) == [1, 2, 3]
    np.testing.assert_allclose(t["padding_fraction"], np.array([366, 238, 174]) / 210)
    fig = plots.padding_vs_k_figure([10, 70, 130], [1, 2, 3], families=["optimal"])
    assert list(trace(fig, "optimal").y) == [366, 238, 174]
    floor = trace(fig, "alignment padding (lower bound)")
    assert list(floor.y) == [174, 174]
    assert fig.layout.yaxis.title.text == "prompt padding (tokens)"


def test_padding_vs_k_matches_library_and_optimal_is_best(workload):
    lengths = workload["prompt_len"].to_numpy()
    t = plots.padding_vs_k_table(lengths, range(1, 7))
    for row in t.itertuples():
        shapes = shape_grid(row.family, lengths, row.k, 64)
        assert row.padding_tokens == padding_tokens(lengths, shapes)
        assert row.shapes == tuple(shapes)
    assert (t["family"] == "power_of_two").sum() == 1
    best = t[t["family"] == "optimal"].set_index("k")["padding_tokens"]
    assert best.is_monotonic_decreasing
    for row in t[t["family"] != "optimal"].itertuples():
        if row.k in best.index:
            assert best[row.k] <= row.padding_tokens
    fig = plots.padding_vs_k_figure(lengths, range(1, 7))
    names = [tr.name for tr in fig.data]
    assert names[:-1] == ["power_of_two", "linear", "geometric", "quantile", "optimal"]
    assert fig.data[-1].y[0] == min_padding_tokens(lengths)
    with pytest.raises(InputError):
        plots.padding_vs_k_table(lengths, [0, 1])
    with pytest.raises(InputError):
        plots.padding_vs_k_table(lengths, [1], families=["bogus"])


# ------------------------------------------------------------------ padding per shape


def test_padding_by_shape_hand_example(small):
    # shapes 128 (requests 10, 70, 40) and 1024 (130, 600, 1000), one batch each.
    # static-graph prompt padding = align(p) - p: 54 + 58 + 24 = 136 and 62 + 40 + 24 = 126.
    # gen padding = G_max - gen: batch 128 has gen 5, 50, 60 -> 55 + 10 + 0 = 65;
    # batch 1024 has gen 20, 300, 7 -> 280 + 0 + 293 = 573.
    plan = plan_from_batches(
        small["request_id"], [0, 0, 1, 1, 1, 0], [128, 128, 1024, 1024, 1024, 128]
    )
    ev = evaluate(small, plan)
    t = plots.padding_by_shape_table(ev)
    assert list(t["seq_align"]) == [128, 1024]
    assert list(t["n_requests"]) == [3, 3]
    assert list(t["n_batches"]) == [1, 1]
    assert list(t["prompt_padding"]) == [136, 126]
    assert list(t["gen_padding"]) == [65, 573]
    assert t["prompt_padding"].sum() == ev.padding_tokens.prompt
    assert t["gen_padding"].sum() == ev.padding_tokens.gen
    # padded-graph: prompt padding is seq_align - p: 118 + 58 + 88 = 264, 894 + 424 + 24 = 1342
    ev_p = evaluate(small, plan, "padded-graph")
    tp = plots.padding_by_shape_table(ev_p, "padded-graph")
    assert list(tp["prompt_padding"]) == [264, 1342]
    assert tp["prompt_padding"].sum() == ev_p.padding_tokens.prompt


def test_shape_buckets_figure(workload):
    plan = baseline_plan(workload, 4)
    ev = evaluate(workload, plan)
    fig = plots.shape_buckets_figure(workload, ev.shapes_used, ev, n_bins=30)
    assert [t.name for t in fig.data] == [
        "prompt_len",
        "shape boundaries",
        "prompt padding",
        "gen padding",
    ]
    hist = fig.data[0]
    edges = np.geomspace(workload["prompt_len"].min(), workload["prompt_len"].max(), 31)
    np.testing.assert_allclose(hist.x, edges)
    np.testing.assert_array_equal(hist.y[:-1], np.histogram(workload["prompt_len"], edges)[0])
    xs = [x for x in fig.data[1].x if x is not None]
    assert sorted(set(xs)) == list(ev.shapes_used)
    t = plots.padding_by_shape_table(ev)
    assert list(fig.data[2].x) == [str(s) for s in t["seq_align"]]
    np.testing.assert_array_equal(fig.data[2].y, t["prompt_padding"])
    np.testing.assert_array_equal(fig.data[3].y, t["gen_padding"])
    assert fig.layout.barmode == "stack"
    empty = plots.shape_buckets_figure(workload, [64, 128], None)
    assert len(empty.data) == 4 and len(empty.data[2].x) == 0


# ------------------------------------------------------------------ gen-bucket trade-off


def reference_bucketed(prompt, gen, shapes, size, g=64):
    """Slow reference: each request to its smallest covering shape, one batch per
    (shape, gen bucket); returns (number of batches, gen padding tokens)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for p, q in zip(prompt, gen, strict=True):
        a = -(-int(p) // g) * g
        s = min(x for x in shapes if x >= a)
        b = 0 if size is None else (int(q) - 1) // size
        groups.setdefault((s, b), []).append(int(q))
    gen_pad = sum(max(v) - x for v in groups.values() for x in v)
    return len(groups), gen_pad


def test_gen_bucket_tradeoff_against_reference(small, workload):
    # hand example on `small` with shapes 128, 1024 and gen buckets of 32 tokens:
    # shape 128 holds gen 5 (bucket 0), 50 (1), 60 (1): batches {5}, {50, 60} -> gen pad 10;
    # shape 1024 holds gen 20 (0), 300 (9), 7 (0): batches {20, 7}, {300} -> gen pad 13.
    t = plots.gen_bucket_tradeoff_table(small, [128, 1024], [32, None])
    assert list(t["n_batches"]) == [4, 2]
    assert list(t["gen_padding"]) == [23, 65 + 573]
    assert list(t["gen_bucket_size"]) == [32, None]
    shapes = [256, 512, 1024, int(align(workload["prompt_len"].max()))]
    sizes = [1, 16, 64, 256, None]
    t = plots.gen_bucket_tradeoff_table(workload, shapes, sizes)
    for row, size in zip(t.itertuples(), sizes, strict=True):
        nb, gp = reference_bucketed(workload["prompt_len"], workload["gen_len"], shapes, size)
        assert (row.n_batches, row.gen_padding) == (nb, gp)
    fig = plots.gen_bucket_tradeoff_figure(workload, shapes, sizes)
    total = trace(fig, "total padding")
    ordered = t.sort_values(["n_batches", "gen_padding"], kind="stable")
    np.testing.assert_array_equal(total.x, ordered["n_batches"])
    np.testing.assert_array_equal(total.y, ordered["prompt_padding"] + ordered["gen_padding"])
    assert "none" in list(total.text)
    # buckets of 1 token: every batch has a single gen_len, so no gen padding
    assert t.iloc[0]["gen_padding"] == 0


def test_gen_bucket_tradeoff_max_batch_size(workload):
    shapes = [int(align(workload["prompt_len"].max()))]
    t = plots.gen_bucket_tradeoff_table(workload, shapes, [None], max_batch_size=50)
    # one shape, no gen buckets: ceil(400 / 50) = 8 batches
    assert t.iloc[0]["n_batches"] == 8


# ------------------------------------------------------------------ cost decomposition


@pytest.fixture(scope="module")
def evaluations(workload):
    return {
        "k=2": evaluate(workload, baseline_plan(workload, 2)),
        "k=8": evaluate(workload, baseline_plan(workload, 8)),
    }


def test_cost_parts_figure(evaluations):
    fig = plots.cost_parts_figure(evaluations)
    assert [t.name for t in fig.data] == list(plots.COST_PARTS)
    for t in fig.data:
        assert list(t.x) == ["k=2", "k=8"]
        expected = [getattr(ev.cost, t.name) for ev in evaluations.values()]
        np.testing.assert_allclose(t.y, expected)
    assert fig.layout.barmode == "stack"
    assert "cost units" in fig.layout.yaxis.title.text
    lat = plots.cost_parts_figure(evaluations, kind="latency")
    np.testing.assert_allclose(
        trace(lat, "decode").y, [ev.latency.decode for ev in evaluations.values()]
    )
    # a bare CostBreakdown and a dict of parts work too
    one = plots.cost_parts_table(evaluations["k=2"].cost)
    assert one.loc[0, "total"] == pytest.approx(evaluations["k=2"].cost.total)
    parts = plots.cost_parts_table({"x": {"overhead": 1, "compile": 2, "prefill": 3, "decode": 4}})
    assert parts.loc[0, "total"] == 10
    with pytest.raises(InputError):
        plots.cost_parts_table({"x": {"overhead": 1}})
    with pytest.raises(InputError):
        plots.cost_parts_figure(evaluations, kind="money")


def test_cost_latency_parts_figure(evaluations):
    fig = plots.cost_latency_parts_figure(evaluations)
    assert [t.name for t in fig.data] == list(plots.COST_PARTS) * 2
    ev = evaluations["k=8"]
    assert fig.data[3].y[1] == pytest.approx(ev.cost.decode)
    assert fig.data[7].y[1] == pytest.approx(ev.latency.decode)
    assert fig.data[4].xaxis == "x2"
    assert sum(t.y[0] for t in fig.data[4:]) == pytest.approx(
        evaluations["k=2"].requests["latency_ms"].sum()
    )


def test_cost_parts_vs_parameter(workload):
    ks = [8, 1, 4, 2]
    rows = [{"k": k, **evaluate(workload, baseline_plan(workload, k)).summary()} for k in ks]
    t = pd.DataFrame(rows)
    fig = plots.cost_parts_vs_parameter_figure(t, "k")
    assert [tr.name for tr in fig.data] == list(plots.COST_PARTS)
    for tr in fig.data:
        assert list(tr.x) == [1, 2, 4, 8]
        assert tr.stackgroup == "parts"
        expected = t.set_index("k").loc[[1, 2, 4, 8], f"cost_{tr.name}"]
        np.testing.assert_allclose(tr.y, expected)
    lines = plots.cost_parts_vs_parameter_figure(t, "k", stacked=False, log_x=True)
    assert lines.data[0].stackgroup is None and lines.layout.xaxis.type == "log"
    with pytest.raises(InputError):
        plots.cost_parts_vs_parameter_figure(pd.concat([t, t]), "k")
    with pytest.raises(InputError):
        plots.cost_parts_vs_parameter_figure(t, "nope")


# ------------------------------------------------------------------ latency CDF


def test_latency_cdf_hand_example():
    # latencies 30, 10, 20, 40 ms: sorted 10, 20, 30, 40 at 25, 50, 75, 100 %.
    # nearest rank: p50 = 2nd smallest = 20, p95 = ceil(3.8) = 4th = 40.
    fig = plots.latency_cdf_figure({"x": np.array([30.0, 10.0, 20.0, 40.0])}, percents=(50, 95))
    np.testing.assert_allclose(fig.data[0].x, [10, 20, 30, 40])
    np.testing.assert_allclose(fig.data[0].y, [25, 50, 75, 100])
    marks = trace(fig, "x percentiles")
    np.testing.assert_allclose(marks.x, [20, 40])
    assert list(marks.text) == ["p50", "p95"]
    assert fig.layout.xaxis.type == "log"
    assert "(ms)" in fig.layout.xaxis.title.text


def test_latency_cdf_of_evaluations(evaluations):
    fig = plots.latency_cdf_figure(evaluations)
    assert [t.name for t in fig.data] == ["k=2", "k=2 percentiles", "k=8", "k=8 percentiles"]
    for name, ev in evaluations.items():
        lat = np.sort(ev.requests["latency_ms"].to_numpy())
        np.testing.assert_allclose(trace(fig, name).x, lat)
        np.testing.assert_allclose(
            trace(fig, f"{name} percentiles").x,
            [ev.p50_latency_ms, ev.p95_latency_ms, ev.p99_latency_ms],
        )


@FAST
@given(st.lists(st.floats(0.1, 1e6), min_size=1, max_size=200), st.integers(2, 20))
def test_latency_cdf_thinned_points_are_exact(values, max_points):
    fig = plots.latency_cdf_figure(np.array(values), max_points=max_points)
    lat = np.sort(values)
    n = len(lat)
    t = fig.data[0]
    assert len(t.x) == min(n, max_points)
    assert t.x[0] == lat[0] and t.x[-1] == lat[-1] and t.y[-1] == pytest.approx(100.0)
    ranks = np.rint(np.asarray(t.y) / 100 * n).astype(int)
    np.testing.assert_allclose(t.x, lat[ranks - 1])
    assert np.all(np.diff(ranks) > 0)


# ------------------------------------------------------------------ Pareto front


def brute_front(points):
    """Indices of the points not dominated by another (slow reference, first of duplicates)."""
    out = []
    for i, p in enumerate(points):
        dominated = any(
            (q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])) or (q == p and j < i)
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            out.append(i)
    return out


def test_pareto_front_hand_example():
    # (1,5), (2,3), (3,4), (4,1), (NaN, 0): (3,4) is dominated by (2,3); the NaN row is dropped
    t = pd.DataFrame(
        {
            "total_cost": [3.0, 1.0, 2.0, 4.0, np.nan],
            "p95_latency_ms": [4.0, 5.0, 3.0, 1.0, 0.0],
            "k": [1, 2, 3, 4, 5],
        }
    )
    fig = plots.pareto_front_figure(t)
    everything, front = fig.data
    assert everything.name == "all settings" and front.name == "Pareto front"
    assert len(everything.x) == 4
    assert list(front.x) == [1.0, 2.0, 4.0] and list(front.y) == [5.0, 3.0, 1.0]
    assert "k = 2" in front.text[0]
    assert fig.layout.xaxis.title.text == "total cost (cost units)"
    assert fig.layout.yaxis.title.text == "p95 latency (ms)"


@FAST
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=25))
def test_pareto_front_matches_brute_force(points):
    t = pd.DataFrame(points, columns=["a", "b"]).astype(float)
    fig = plots.pareto_front_figure(t, x="a", y="b", hover=[])
    front = sorted(zip(fig.data[1].x, fig.data[1].y, strict=True))
    expected = sorted(tuple(map(float, points[i])) for i in brute_front(points))
    assert front == expected


# ------------------------------------------------------------------ planner comparison


def test_planner_comparison_figure(workload, evaluations):
    bounds = lower_bounds(workload)
    limits = Limits(max_p95_latency_ms=1e9, max_pad_ratio=0.5)
    fig = plots.planner_comparison_figure(
        {"planner": evaluations["k=8"], "baseline": evaluations["k=2"]}, bounds, limits=limits
    )
    assert [t.name for t in fig.data] == [
        "total_cost",
        "pad_ratio",
        "p95_latency_ms",
        "sequential_ms",
    ]
    cost = fig.data[0]
    assert list(cost.x) == ["lower bound", "planner", "baseline"]
    np.testing.assert_allclose(
        cost.y, [bounds.min_cost, evaluations["k=8"].cost.total, evaluations["k=2"].cost.total]
    )
    np.testing.assert_allclose(fig.data[2].y[0], bounds.min_p95_latency_ms)
    # two limits given -> two dashed lines, at the limit values
    ys = sorted(s.y0 for s in fig.layout.shapes)
    assert ys == [0.5, 1e9]
    # the lower bound really is below what both plans reach
    for t in fig.data:
        assert t.y[0] <= min(t.y[1:]) * (1 + 1e-12)
    no_bounds = plots.planner_comparison_figure(
        {"planner": evaluations["k=8"].summary()}, metrics=["n_batches"]
    )
    assert list(no_bounds.data[0].x) == ["planner"] and no_bounds.data[0].y[0] == 8
    with pytest.raises(InputError):
        plots.planner_comparison_figure({"p": {"total_cost": 1.0}}, metrics=["pad_ratio"])


def test_builders_are_pure(workload, evaluations):
    """Building a figure does not change its inputs."""
    before = workload.copy()
    snapshot = evaluations["k=8"].requests.copy()
    plots.length_distribution_figure(workload)
    plots.latency_cdf_figure(evaluations)
    plots.shape_buckets_figure(workload, evaluations["k=8"].shapes_used, evaluations["k=8"])
    pd.testing.assert_frame_equal(workload, before)
    pd.testing.assert_frame_equal(evaluations["k=8"].requests, snapshot)
