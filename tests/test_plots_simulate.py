"""Tests of the simulation figures of batchlab.plots: batch timelines, latency CDFs by policy,
the policy dashboard, load sweeps with their knee, and KV-cache use. Hand-worked timelines with a
linear step-time model, and comparisons with slow reference computations."""

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
from batchlab.simulate import LinearStepTime, simulate

FAST = settings(max_examples=20, deadline=None)
STEP = LinearStepTime(10, per_token_ms=0.1, per_seq_ms=1)


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


@pytest.fixture(scope="module")
def three(request_table):
    # r0: prompt 10, 3 tokens, at 0 ms; r1: prompt 20, 1 token, at 0 ms; r2: prompt 5, 2 tokens,
    # at 5 ms. Step time 10 ms + 0.1 ms per prompt token + 1 ms per decoding sequence.
    return request_table([10, 20, 5], [3, 1, 2], [0.0, 0.0, 0.005])


@pytest.fixture(scope="module")
def static_run(three):
    # static, batches of 2: batch 0 = r0, r1 at 0 ms: prefill 2 x 20 padded tokens = 14 ms,
    # then 2 decode steps of 2 sequences, 12 ms each: ends at 38 ms. r1 (1 token) is done at
    # 14 ms but held until 38 ms. Batch 1 = r2 (flushed when nothing else can come) at 38 ms:
    # prefill 10.5 ms (to 48.5), one decode step of 11 ms (to 59.5).
    return simulate(three, "static", batch_size=2, step_time=STEP, kv_blocks=100)


@pytest.fixture(scope="module")
def continuous_run(three):
    # continuous: step 0 prefills r0 + r1 (30 tokens, 13 ms; r1 done), step 1 prefills r2
    # (arrived at 5 ms; 10.5 ms, to 23.5), step 2 decodes r0 and r2 (12 ms, to 35.5; r2 done),
    # step 3 decodes r0 (11 ms, to 46.5).
    return simulate(three, "continuous", step_time=STEP, kv_blocks=100)


@pytest.fixture(scope="module")
def sweep_table():
    # policy a: p99 100, 150, 190, 500 ms at loads 1, 2, 4, 8: 500 > 2 x 100, so the knee is 4.
    # policy b: p99 never exceeds 2 x 50 = 100 ms: no knee.
    return pd.DataFrame(
        {
            "mode": ["rate"] * 8,
            "level": [1.0, 2.0, 4.0, 8.0] * 2,
            "policy": ["a"] * 4 + ["b"] * 4,
            "throughput_rps": [1.0, 2.0, 3.9, 4.2, 1.0, 2.0, 4.0, 8.0],
            "latency_p50_ms": [50.0, 60.0, 70.0, 300.0, 20.0, 21.0, 22.0, 30.0],
            "latency_p99_ms": [100.0, 150.0, 190.0, 500.0, 50.0, 60.0, 70.0, 99.0],
        }
    )


# --------------------------------------------------------------------------- batch timeline


def test_timeline_table_static_hand_example(static_run):
    t = plots.batch_timeline_table(static_run, 0, 100)
    got = list(t[["request_id", "segment", "start_ms", "end_ms"]].itertuples(index=False))
    assert [tuple(row) for row in got] == [
        ("r0", "prefill", 0.0, 14.0),
        ("r0", "decoding", 14.0, 38.0),
        ("r1", "prefill", 0.0, 14.0),
        ("r1", "held", 14.0, 38.0),  # done after its first token, held by the batch
        ("r2", "waiting", 5.0, 38.0),
        ("r2", "prefill", 38.0, 48.5),
        ("r2", "decoding", 48.5, 59.5),
    ]
    assert t["row"].tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert t["batch_id"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(t["duration_ms"], t["end_ms"] - t["start_ms"])


def test_timeline_window_and_cap(static_run):
    # [40, 100): r0 and r1 left at 38 ms; only r2 is in the system
    assert plots.batch_timeline_table(static_run, 40, 100)["request_id"].unique().tolist() == ["r2"]
    # [0, 4): r2 arrives at 5 ms
    assert set(plots.batch_timeline_table(static_run, 0, 4)["request_id"]) == {"r0", "r1"}
    capped = plots.batch_timeline_table(static_run, 0, 100, max_requests=1)
    assert capped["request_id"].unique().tolist() == ["r0"]
    with pytest.raises(InputError):
        plots.batch_timeline_table(static_run, 10, 10)
    with pytest.raises(InputError, match="max_requests"):
        plots.batch_timeline_table(static_run, 0, 10, max_requests=0)


def test_timeline_figure_static(static_run):
    fig = plots.batch_timeline_figure(static_run, 0, 60)
    assert isinstance(fig, go.Figure)
    bars = trace(fig, "padded batch")
    # batch 0: 0 to 38 ms, 2 sequences; batch 1: 38 to 59.5 ms, 1 sequence (x in seconds)
    np.testing.assert_allclose(bars.x, [0.019, (0.038 + 0.0595) / 2])
    np.testing.assert_allclose(bars.width, [0.038, 0.0215])
    assert list(bars.y) == [2, 1]
    held = trace(fig, "held")
    assert list(held.y) == ["r1"]
    np.testing.assert_allclose(np.asarray(held.base, dtype=float), [0.014])
    np.testing.assert_allclose(held.x, [0.024])
    assert list(fig.layout.yaxis2.categoryarray) == ["r0", "r1", "r2"]
    assert fig.layout.barmode == "overlay"
    np.testing.assert_allclose(fig.layout.xaxis2.range, [0.0, 0.06])
    assert "(s)" in fig.layout.xaxis2.title.text


def test_timeline_figure_continuous_step_kinds(continuous_run):
    kinds = plots.step_kinds(continuous_run)
    assert list(kinds) == ["prefill step", "prefill step", "decode steps", "decode steps"]
    fig = plots.batch_timeline_figure(continuous_run, 0, 50)
    pre = trace(fig, "prefill step")
    np.testing.assert_allclose(pre.width, [0.013, 0.0105])
    assert list(pre.y) == [2, 1]
    dec = trace(fig, "decode steps")
    np.testing.assert_allclose(np.asarray(dec.x) - np.asarray(dec.width) / 2, [0.0235, 0.0355])
    assert list(dec.y) == [2, 1]
    assert len(trace(fig, "held").y) == 0  # continuous batching holds nobody


def test_step_kinds_mixed_with_chunked_prefill(request_table):
    df = request_table([300, 40, 500, 20], [30, 20, 5, 9], [0.0, 0.0, 0.02, 0.03])
    res = simulate(df, "continuous", chunk_size=64, step_time=STEP, kv_blocks=200)
    kinds = plots.step_kinds(res)
    # reference: a plain loop over the steps
    expected = []
    for row in res.steps.itertuples():
        if row.prefill_tokens > 0 and row.decode_seqs > 0:
            expected.append("mixed step")
        elif row.prefill_tokens > 0:
            expected.append("prefill step")
        else:
            expected.append("decode steps")
    assert list(kinds) == expected
    assert "mixed step" in expected


@FAST
@given(
    data=st.data(),
    n=st.integers(1, 12),
    policy=st.sampled_from(["static", "dynamic", "continuous"]),
    cap=st.integers(1, 15),
)
def test_timeline_table_against_reference(request_table, data, n, policy, cap):
    prompt = data.draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    gen = data.draw(st.lists(st.integers(1, 30), min_size=n, max_size=n))
    arr = data.draw(st.lists(st.floats(0, 0.3), min_size=n, max_size=n))
    opts = {"batch_size": 3} if policy == "static" else {}
    res = simulate(request_table(prompt, gen, arr), policy, step_time=STEP, kv_blocks=400, **opts)
    t0 = data.draw(st.floats(0, 300))
    t1 = t0 + data.draw(st.floats(1, 400))
    got = plots.batch_timeline_table(res, t0, t1, max_requests=cap)
    # reference: requests in the system during [t0, t1), by (start, arrival, position)
    r = res.requests
    inside = [
        (row.start_ms, row.arrival_ms, i)
        for i, row in enumerate(r.itertuples())
        if row.arrival_ms < t1 and row.finish_ms > t0
    ]
    chosen = [i for _, _, i in sorted(inside)][:cap]
    assert got.drop_duplicates("row")["request_id"].tolist() == [r["request_id"][i] for i in chosen]
    for k, i in enumerate(chosen):
        segs = got[got["row"] == k]
        # the segments are contiguous and cover arrival to finish
        assert segs["start_ms"].iloc[0] == r["arrival_ms"][i] or segs["segment"].iloc[0] != (
            "waiting"
        )
        np.testing.assert_allclose(segs["start_ms"].to_numpy()[1:], segs["end_ms"].to_numpy()[:-1])
        assert segs["end_ms"].iloc[-1] == pytest.approx(r["finish_ms"][i])
        assert segs["duration_ms"].sum() == pytest.approx(r["latency_ms"][i])
        assert (segs["duration_ms"] > 0).all()
    if policy == "continuous":
        assert "held" not in set(got["segment"])


# --------------------------------------------------------------------------- latency CDFs


def test_latency_cdf_by_policy(static_run, continuous_run):
    fig = plots.latency_cdf_by_policy_figure(
        {"static": static_run, "continuous": continuous_run},
        metrics=("ttft_ms", "tpot_ms", "latency_ms"),
    )
    names = [t.name for t in fig.data]
    assert names == ["static", "static percentiles", "continuous", "continuous percentiles"] * 3
    # static latencies 38, 38, 54.5 ms: CDF points (38, 33.3%), (38, 66.7%), (54.5, 100%)
    lat = fig.data[8]
    np.testing.assert_allclose(lat.x, [38.0, 38.0, 54.5])
    np.testing.assert_allclose(lat.y, [100 / 3, 200 / 3, 100])
    # p50: rank ceil(3 x 0.5) = 2 -> 38; p99: rank 3 -> 54.5
    np.testing.assert_allclose(fig.data[9].x, [38.0, 54.5])
    # tpot: NaN for r1 (one token) is left out; r0: (38 - 14) / 2 = 12 ms, r2: 11 ms
    np.testing.assert_allclose(sorted(fig.data[4].x), [11.0, 12.0])
    summary = continuous_run.summary()
    np.testing.assert_allclose(
        fig.data[11].x, [summary["latency_p50_ms"], summary["latency_p99_ms"]]
    )
    assert fig.layout.xaxis.type == "log" and "time to first token" in fig.layout.xaxis.title.text
    # one legend entry per policy
    assert sum(bool(t.showlegend) for t in fig.data if t.showlegend is not None) == 2


def test_latency_cdf_accepts_tables_and_lists(static_run, continuous_run):
    fig = plots.latency_cdf_by_policy_figure([static_run, continuous_run], metrics=["queue_ms"])
    assert [t.name for t in fig.data][::2] == ["static", "continuous"]
    fig = plots.latency_cdf_by_policy_figure({"t": static_run.requests}, metrics=["latency_ms"])
    np.testing.assert_allclose(fig.data[0].x, [38.0, 38.0, 54.5])
    with pytest.raises(InputError, match="nope"):
        plots.latency_cdf_by_policy_figure(static_run, metrics=["nope"])
    with pytest.raises(InputError):
        plots.latency_cdf_by_policy_figure({"x": 3})
    with pytest.raises(InputError):
        plots.latency_cdf_by_policy_figure(static_run, metrics=[])


def test_latency_cdf_thins_points_exactly(request_table):
    df = request_table(np.full(500, 50), np.arange(1, 501) % 37 + 1)
    res = simulate(df, "continuous", rate=200.0, step_time=STEP, kv_blocks=5000)
    fig = plots.latency_cdf_by_policy_figure(res, metrics=["latency_ms"], max_points=50)
    line = fig.data[0]
    assert len(line.x) == 50
    lat = np.sort(res.requests["latency_ms"].to_numpy())
    ranks = np.round(np.asarray(line.y) / 100 * 500).astype(int)
    np.testing.assert_allclose(line.x, lat[ranks - 1])
    assert line.x[-1] == lat[-1] and line.y[-1] == 100.0


# --------------------------------------------------------------------------- dashboard


def test_policy_dashboard(static_run, continuous_run):
    results = {"static": static_run, "continuous": continuous_run}
    fig = plots.policy_dashboard_figure(results)
    assert [t.name for t in fig.data] == [
        "static",
        "continuous",
        "p50 latency",
        "p99 latency",
        "throughput",
    ]
    for name, res in results.items():
        s = res.summary()
        i = list(results).index(name)
        assert trace(fig, "p50 latency").y[i] == pytest.approx(s["latency_p50_ms"])
        assert trace(fig, "p99 latency").y[i] == pytest.approx(s["latency_p99_ms"])
        assert trace(fig, "throughput").y[i] == pytest.approx(s["throughput_rps"])
    # static: 3 requests from 0 to 59.5 ms = 3 / 0.0595 s
    assert trace(fig, "throughput").y[0] == pytest.approx(3 / 0.0595)
    assert fig.layout.barmode == "group"
    empty = plots.policy_dashboard_figure({})
    assert [len(t.x) for t in empty.data] == [0, 0, 0]


# --------------------------------------------------------------------------- load sweeps


def test_knee_table_hand_example(sweep_table):
    kt = plots.load_sweep_knee_table(sweep_table)
    assert kt["policy"].tolist() == ["a", "b"]
    assert kt["knee"].iloc[0] == 4.0 and math.isnan(kt["knee"].iloc[1])
    assert kt["latency_p99_ms_at_knee"].iloc[0] == 190.0
    assert kt["throughput_rps_at_knee"].iloc[0] == 3.9
    assert kt["latency_p99_ms_lowest_load"].tolist() == [100.0, 50.0]
    assert math.isnan(kt["throughput_rps_at_knee"].iloc[1])
    # a larger factor: 500 <= 6 x 100, no knee for a either
    assert plots.load_sweep_knee_table(sweep_table, factor=6)["knee"].isna().all()
    # p50 of a: 300 > 2 x 50 first at load 8 -> knee 4
    assert plots.load_sweep_knee_table(sweep_table, y="latency_p50_ms")["knee"].iloc[0] == 4.0
    one = plots.load_sweep_knee_table(sweep_table[sweep_table["policy"] == "a"], by=None)
    assert one.columns[0] == "group" and one["knee"].iloc[0] == 4.0


def test_knee_table_errors(sweep_table):
    mixed = sweep_table.assign(mode=["rate", "closed"] * 4)
    with pytest.raises(InputError, match="mode"):
        plots.load_sweep_knee_table(mixed)
    with pytest.raises(InputError, match="nope"):
        plots.load_sweep_knee_table(sweep_table, y="nope")
    with pytest.raises(InputError, match="policy"):
        plots.load_sweep_knee_table(sweep_table.drop(columns="policy"))
    with pytest.raises(InputError):
        plots.load_sweep_knee_table([1, 2])


def test_load_sweep_figure_marks_the_knee(sweep_table):
    fig = plots.load_sweep_figure(sweep_table)
    names = [t.name for t in fig.data]
    assert names.count("a knee") == 2  # one dotted line per panel
    assert "b knee" not in names and "b knee point" not in names
    point = trace(fig, "a knee point")
    assert list(point.x) == [4.0] and list(point.y) == [190.0]
    for line in (t for t in fig.data if t.name == "a knee"):
        assert list(line.x) == [4.0, 4.0]
    np.testing.assert_allclose(trace(fig, "a p99 latency").y, [100, 150, 190, 500])
    np.testing.assert_allclose(trace(fig, "b throughput").y, [1, 2, 4, 8])
    assert trace(fig, "a p99 latency").line.dash == "solid"
    assert trace(fig, "a p50 latency").line.dash == "dash"
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis2.type == "log"
    assert fig.layout.xaxis.title.text == "arrival rate (requests/s)"
    # latency line of the knee spans the plotted latencies: 20 to 500 ms
    lat_line = [t for t in fig.data if t.name == "a knee" and t.xaxis == "x2"][0]
    assert list(lat_line.y) == [20.0, 500.0]


def test_load_sweep_figure_knee_options(sweep_table):
    # an explicit knee between two loads: y interpolated (linearly) between 150 and 190
    fig = plots.load_sweep_figure(sweep_table, knee={"a": 3.0})
    assert list(trace(fig, "a knee point").y) == [170.0]
    fig = plots.load_sweep_figure(sweep_table, knee=None, throughput=None, log_y=False)
    assert not any("knee" in t.name for t in fig.data)
    assert fig.layout.yaxis.type != "log" and len(fig.data) == 4  # one panel, 2 x 2 lines
    fig = plots.load_sweep_figure(sweep_table, knee=2.0)
    assert list(trace(fig, "b knee point").x) == [2.0]
    closed = sweep_table.assign(mode="closed")
    assert plots.load_sweep_figure(closed).layout.xaxis.title.text == "concurrency (clients)"
    with pytest.raises(InputError, match="knee"):
        plots.load_sweep_figure(sweep_table, knee="yes")
    with pytest.raises(InputError, match="y_cols"):
        plots.load_sweep_figure(sweep_table, y_cols=[])


def test_load_sweep_figure_on_a_real_sweep(request_table):
    from batchlab.simulate import load_sweep

    df = request_table(np.full(60, 200), np.full(60, 20))
    sw = load_sweep(
        df,
        "continuous",
        rates=[1, 5, 20, 80],
        concurrencies=[1, 2, 4, 8, 16],
        step_time=STEP,
        kv_blocks=4000,
    )
    rate, closed = sw[sw["mode"] == "rate"], sw[sw["mode"] == "closed"]
    # open loop: p99 rises past 2x its value at 1 request/s first at 20 requests/s -> knee 5
    assert plots.load_sweep_knee_table(rate)["knee"].tolist() == [5.0]
    fig = plots.load_sweep_figure(rate)
    assert list(trace(fig, "continuous knee point").x) == [5.0]
    assert list(trace(fig, "continuous knee point").y) == [rate["latency_p99_ms"].iloc[1]]
    # closed loop: 2x the one-client p99 is first passed at 8 clients -> knee 4
    p99 = closed["latency_p99_ms"].to_numpy()
    first = int(np.flatnonzero(p99 > 2 * p99[0])[0])
    assert plots.load_sweep_knee_table(closed)["knee"].iloc[0] == closed["level"].iloc[first - 1]
    assert plots.load_sweep_figure(closed).layout.xaxis.title.text == "concurrency (clients)"
    with pytest.raises(InputError, match="mode"):
        plots.load_sweep_figure(sw)


# --------------------------------------------------------------------------- KV-cache use


def test_kv_utilisation_hand_example(static_run, continuous_run):
    fig = plots.kv_utilisation_figure({"static": static_run, "continuous": continuous_run})
    assert [t.name for t in fig.data] == ["static", "static", "continuous", "continuous"]
    kv = fig.data[0]
    # static batch 0 reserves 2 x ceil((20 + 3 - 1) / 16) = 4 blocks of 100, batch 1
    # 1 x ceil((5 + 2 - 1) / 16) = 1 block; points at the batch ends (38 and 59.5 ms)
    np.testing.assert_allclose(kv.x, [0.038, 0.0595])
    np.testing.assert_allclose(kv.y, [4.0, 1.0])
    st_ = continuous_run.steps
    np.testing.assert_allclose(fig.data[2].y, st_["kv_blocks_used"] / 100 * 100)
    np.testing.assert_allclose(fig.data[3].y, st_["queue_len"])
    np.testing.assert_allclose(fig.data[3].x, st_["start_ms"] / 1e3)
    part = plots.kv_utilisation_figure(continuous_run, t0_ms=20, t1_ms=40)
    # steps 1 (13-23.5 ms), 2 (23.5-35.5 ms) and 3 (35.5-46.5 ms) overlap [20, 40) ms
    np.testing.assert_allclose(part.data[0].x, [0.0235, 0.0355, 0.0465])
    with pytest.raises(InputError):
        plots.kv_utilisation_figure(continuous_run, t0_ms=5, t1_ms=5)


@FAST
@given(
    values=st.lists(st.integers(0, 1000), min_size=1, max_size=300),
    max_points=st.integers(1, 40),
)
def test_peak_per_bin_against_reference(values, max_points):
    x = np.cumsum(np.r_[0.0, np.ones(len(values) - 1)])
    y = np.asarray(values, dtype=np.float64)
    px, py = plots.serving._peak_per_bin(x, y, max_points)
    if len(values) <= max_points:
        np.testing.assert_array_equal(px, x)
        return
    assert len(px) <= max_points
    assert py.max() == y.max()  # the peak survives
    # reference: the largest value in each of max_points equal bins of x
    lo, hi = x[0], x[-1]
    for b in range(max_points):
        members = [
            v
            for xi, v in zip(x, y, strict=True)
            if min(int((xi - lo) / (hi - lo) * max_points), max_points - 1) == b
        ]
        drawn = [
            v
            for xi, v in zip(px, py, strict=True)
            if min(int((xi - lo) / (hi - lo) * max_points), max_points - 1) == b
        ]
        assert drawn == ([max(members)] if members else [])
    assert np.all(np.diff(px) > 0)
