"""Tests of the batch-size measurement figures of batchlab.plots: throughput and latency vs batch
size with the knee and the latency-limited choice, memory vs batch size with the KV-cache
prediction, and measured vs roofline. Hand-worked tables, the committed CPU measurement, and
comparisons with slow reference computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import measure, plots, roofline
from batchlab.errors import InputError

FAST = settings(max_examples=40, deadline=None)
ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "data" / "measurements" / "tiny-llama-cpu-p128-g32.csv"

# The tiny Llama of batchlab.measure (4 layers, hidden 256, 4 heads of 64, 2 KV heads, float32).
TINY = roofline.ModelSpec("tiny", 4, 256, 4, 2, 688, 4096, 4.0, 4.0)


LENGTHS = {"prompt_len": 128, "gen_len": 32}


def trace(fig, name, meta=None):
    found = [t for t in fig.data if t.name == name and (meta is None or t.meta == meta)]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


@pytest.fixture()
def hand(measurement_table):
    # throughput 100, 180, 300, 310 tokens/s at batch 1, 2, 4, 8: the best is 310 at 8;
    # within 5 %: >= 0.95 * 310 = 294.5, so the knee is 4 (300). Latency 10, 12, 20, 40 ms:
    # with a 20 ms limit the largest size meeting it (<=, inclusive) is 4; with 15 ms it is 2.
    return measurement_table([1, 2, 4, 8], [100, 180, 300, 310], [10, 12, 20, 40], **LENGTHS)


# ------------------------------------------------------------------------------------ choices


def test_choice_table_hand_example(hand):
    got = plots.batch_size_choice_table(hand, latency_limit_ms=20)
    assert list(got.columns) == [
        "table",
        "saturation_batch_size",
        "tokens_per_s_at_saturation",
        "best_batch_size",
        "best_tokens_per_s",
        "latency_limit_ms",
        "latency_choice",
        "latency_at_choice_ms",
        "tokens_per_s_at_choice",
    ]
    row = got.iloc[0]
    assert row["saturation_batch_size"] == 4
    assert row["tokens_per_s_at_saturation"] == 300
    assert row["best_batch_size"] == 8 and row["best_tokens_per_s"] == 310
    assert row["latency_choice"] == 4 and row["latency_at_choice_ms"] == 20
    assert row["tokens_per_s_at_choice"] == 300
    assert plots.batch_size_choice_table(hand, latency_limit_ms=15)["latency_choice"][0] == 2
    # tolerance 0: the best itself; tolerance 0.45: >= 170.5, so batch 2
    assert plots.batch_size_choice_table(hand, tolerance=0.0)["saturation_batch_size"][0] == 8
    assert plots.batch_size_choice_table(hand, tolerance=0.45)["saturation_batch_size"][0] == 2


def test_choice_table_without_limit_or_feasible_size(hand):
    none = plots.batch_size_choice_table(hand)
    assert pd.isna(none["latency_choice"][0]) and np.isnan(none["latency_limit_ms"][0])
    assert str(none["latency_choice"].dtype) == "Int64"
    strict = plots.batch_size_choice_table(hand, latency_limit_ms=5)
    assert pd.isna(strict["latency_choice"][0]) and np.isnan(strict["latency_at_choice_ms"][0])


def test_choice_table_other_latency_column_and_several_tables(measurement_table, hand):
    # decode_ms_per_step = latency / 32: 0.3125, 0.375, 0.625, 1.25 ms; limit 0.7 -> batch 4
    other = measurement_table([1, 2, 4], [50, 90, 95], [5, 6, 9], **LENGTHS)
    got = plots.batch_size_choice_table(
        {"a": hand, "b": other}, latency_column="decode_ms_per_step", latency_limit_ms=0.7
    )
    assert got["table"].tolist() == ["a", "b"]
    assert got["latency_choice"].tolist() == [4, 4]
    # b: best 95 at 4; >= 90.25 -> 4 (90 at 2 is below)
    assert got["saturation_batch_size"].tolist() == [4, 4]


def test_choice_table_leaves_out_of_memory_rows(measurement_table, hand):
    # an OOM row is ignored even when it carries numbers; NaN rows too
    df = pd.concat(
        [hand, measurement_table([16], [1e6], [1.0], oom=[True], **LENGTHS)], ignore_index=True
    )
    df = pd.concat([df, measurement_table([32], [np.nan], [np.nan], **LENGTHS)], ignore_index=True)
    got = plots.batch_size_choice_table(df, latency_limit_ms=100)
    assert got["best_batch_size"][0] == 8
    assert got["latency_choice"][0] == 8


def test_choice_table_errors(measurement_table, hand):
    with pytest.raises(InputError, match="output_tokens_per_s"):
        plots.batch_size_choice_table(hand.drop(columns="output_tokens_per_s"))
    with pytest.raises(InputError, match="no successful rows"):
        plots.batch_size_choice_table(measurement_table([1], [1.0], [1.0], oom=[True], **LENGTHS))
    with pytest.raises(InputError):
        plots.batch_size_choice_table(42)


# ------------------------------------------------------------------- throughput / latency figure


def test_figure_marks_knee_choice_and_limit(hand):
    fig = plots.throughput_latency_vs_batch_figure({"cpu": hand}, latency_limit_ms=20)
    names = [t.name for t in fig.data]
    assert names == [
        "cpu throughput",
        "cpu latency",
        "cpu saturation",
        "cpu latency choice",
        "latency limit",
    ]
    assert list(trace(fig, "cpu throughput").y) == [100, 180, 300, 310]
    assert list(trace(fig, "cpu latency").y) == [10, 12, 20, 40]
    star = trace(fig, "cpu saturation")
    assert (star.x[0], star.y[0], star.marker.symbol) == (4, 300, "star")
    diamond = trace(fig, "cpu latency choice")
    assert (diamond.x[0], diamond.y[0]) == (4, 20)
    limit = trace(fig, "latency limit")
    assert list(limit.y) == [20, 20] and list(limit.x) == [1, 8]
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 4, 8]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis2.type == "log"


def test_figure_marker_options(measurement_table, hand):
    other = measurement_table([1, 2, 4, 8, 16], [10, 20, 40, 80, 81], [1, 2, 3, 4, 5], **LENGTHS)
    both = {"a": hand, "b": other}
    fig = plots.throughput_latency_vs_batch_figure(both, saturation=None, latency_choice=None)
    assert [t.name for t in fig.data] == ["a throughput", "a latency", "b throughput", "b latency"]
    # ticks: the union of the sizes
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 4, 8, 16]
    fig = plots.throughput_latency_vs_batch_figure(
        both, saturation={"b": 16}, latency_choice=2, latency_limit_ms=None
    )
    assert trace(fig, "b saturation").x[0] == 16
    assert [t.name for t in fig.data if t.name.endswith("saturation")] == ["b saturation"]
    assert trace(fig, "a latency choice").x[0] == 2 and trace(fig, "b latency choice").x[0] == 2
    # auto without a limit: no latency choice, no limit line
    fig = plots.throughput_latency_vs_batch_figure(hand)
    assert not [t for t in fig.data if "limit" in t.name or "choice" in t.name]
    # the auto knee of b: best 81 at 16, >= 76.95 -> 8
    assert (
        trace(plots.throughput_latency_vs_batch_figure(other), "measurement saturation").x[0] == 8
    )


def test_figure_spread_in_hover_and_oom_left_out(measurement_table, hand):
    df = hand.assign(output_tokens_per_s_spread=[1.0, 2.0, 3.0, 4.0])
    df = pd.concat(
        [df, measurement_table([16], [np.nan], [np.nan], oom=[True], **LENGTHS)], ignore_index=True
    )
    fig = plots.throughput_latency_vs_batch_figure(df)
    thr = trace(fig, "measurement throughput")
    assert list(thr.x) == [1, 2, 4, 8]
    assert list(thr.customdata) == [1.0, 2.0, 3.0, 4.0] and "IQR" in thr.hovertemplate
    assert trace(fig, "measurement latency").customdata is None


def test_figure_errors(hand):
    with pytest.raises(InputError, match="not a measured"):
        plots.throughput_latency_vs_batch_figure(hand, saturation=3)
    with pytest.raises(InputError, match="not a measured"):
        plots.throughput_latency_vs_batch_figure(hand, latency_choice={"measurement": 16})
    with pytest.raises(InputError, match="expected 'auto'"):
        plots.throughput_latency_vs_batch_figure(hand, saturation="knee")
    with pytest.raises(InputError, match="expected 'auto'"):
        plots.throughput_latency_vs_batch_figure(hand, latency_choice=2.5)
    with pytest.raises(InputError, match="missing column"):
        plots.throughput_latency_vs_batch_figure(hand, latency_column="ttft_ms")
    with pytest.raises(InputError, match="not a measurement table"):
        plots.throughput_latency_vs_batch_figure({"x": [1, 2]})


@pytest.mark.slow
@FAST
@given(
    data=st.lists(
        st.tuples(st.floats(1.0, 1e4, allow_nan=False), st.floats(0.1, 1e3, allow_nan=False)),
        min_size=1,
        max_size=8,
    ),
    tolerance=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
    limit=st.floats(0.1, 1e3, allow_nan=False),
)
def test_figure_markers_against_reference(measurement_table, data, tolerance, limit):
    sizes = [2**i for i in range(len(data))]
    tps = [d[0] for d in data]
    lat = [d[1] for d in data]
    df = measurement_table(sizes, tps, lat, **LENGTHS)
    fig = plots.throughput_latency_vs_batch_figure(df, tolerance=tolerance, latency_limit_ms=limit)
    # reference: the first size (increasing) within tolerance of the best; the last one under
    # the limit
    best = max(tps)
    knee = next(b for b, t in zip(sizes, tps, strict=True) if t >= (1 - tolerance) * best)
    under = [b for b, x in zip(sizes, lat, strict=True) if x <= limit]
    assert trace(fig, "measurement saturation").x[0] == knee
    chosen = [t for t in fig.data if t.name == "measurement latency choice"]
    if under:
        assert chosen[0].x[0] == max(under)
        assert chosen[0].y[0] == lat[sizes.index(max(under))]
    else:
        assert chosen == []


# ------------------------------------------------------------------------------------ memory


def test_memory_table_against_the_kv_arithmetic():
    # tiny Llama: KV bytes per token = 2 (K, V) x 4 layers x 2 KV heads x 64 (head dim) x 4 B
    # = 4,096 B; the cache holds prompt + gen - 1 = 128 + 32 - 1 = 159 positions per sequence:
    # 4,096 x 159 = 651,264 B = 0.651264 MB per sequence.
    assert roofline.kv_cache_bytes_per_token(TINY) == 4096
    df = measure.load_measurement(COMMITTED)
    got = plots.memory_vs_batch_table(df, kv_prediction=TINY)
    assert got["batch_size"].tolist() == [1, 2, 4, 8, 16, 32]
    np.testing.assert_allclose(got["predicted_kv_cache_mb"], got["batch_size"] * 0.651264)
    # the measured cache is exactly the prediction (the CSV keeps 6 significant digits)
    np.testing.assert_allclose(got["kv_cache_mb"], got["predicted_kv_cache_mb"], rtol=1e-5)
    np.testing.assert_allclose(got["other_mb"], got["peak_memory_mb"] - got["kv_cache_mb"])
    # a number in MB per sequence, and a preset name, give the same kind of line
    assert plots.memory_vs_batch_table(df, kv_prediction=0.5)["predicted_kv_cache_mb"][3] == 4.0
    # llama-2-7b: 2 x 32 x 32 x 128 x 2 B = 524,288 B per token, x 159 = 83.361792 MB
    seven = plots.memory_vs_batch_table(df, kv_prediction="llama-2-7b")
    assert seven["predicted_kv_cache_mb"][0] == pytest.approx(83.361792)
    assert "predicted_kv_cache_mb" not in plots.memory_vs_batch_table(df).columns


def test_memory_table_leaves_out_oom_and_checks_input(measurement_table):
    df = measurement_table(
        [1, 2, 4], [1, 2, 3], [1, 1, 1], oom=[False, False, True], **LENGTHS
    ).assign(peak_memory_mb=[3.0, 5.0, np.nan], kv_cache_mb=[1.0, 2.0, np.nan])
    assert plots.memory_vs_batch_table(df)["batch_size"].tolist() == [1, 2]
    with pytest.raises(InputError, match="MB"):
        plots.memory_vs_batch_table(df, kv_prediction=-1.0)
    mixed = df.assign(prompt_len=[64, 128, 128])
    with pytest.raises(InputError, match="several lengths"):
        plots.memory_vs_batch_table(mixed, kv_prediction=TINY)
    with pytest.raises(InputError, match="peak_memory_mb"):
        plots.memory_vs_batch_table(df.drop(columns="peak_memory_mb"))


def test_memory_figure_hand_example(measurement_table):
    # peak 3, 5, 9 MB at batch 1, 2, 4: least squares over x = 1, 2, 4 (mean 7/3) and
    # y = 3, 5, 9 (mean 17/3): slope = sum(dx dy) / sum(dx^2) = (32/9 + 2/9 + 50/9) /
    # (16/9 + 1/9 + 25/9) = 84 / 42 = 2 MB per sequence, intercept 17/3 - 2 x 7/3 = 1 MB:
    # the line y = 1 + 2x, through 3 and 9 at batch 1 and 4.
    df = measurement_table([1, 2, 4], [1, 2, 3], [1, 1, 1], **LENGTHS).assign(
        peak_memory_mb=[3.0, 5.0, 9.0], kv_cache_mb=[0.5, 1.0, 2.0]
    )
    fig = plots.memory_vs_batch_figure(df, kv_prediction=0.5)
    assert [t.name for t in fig.data] == [
        "peak memory (measured)",
        "KV cache (measured)",
        "KV cache (predicted)",
        "fit: 2 MB per sequence",
    ]
    fit = trace(fig, "fit: 2 MB per sequence")
    np.testing.assert_allclose(fit.x, [1, 4])
    np.testing.assert_allclose(fit.y, [3, 9])
    pred = trace(fig, "KV cache (predicted)")
    np.testing.assert_allclose(pred.x, [0, 4])
    np.testing.assert_allclose(pred.y, [0, 2])
    assert [t.name for t in plots.memory_vs_batch_figure(df, fit=False).data] == [
        "peak memory (measured)",
        "KV cache (measured)",
    ]


@FAST
@given(
    st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=2, max_size=7),
    st.floats(0.0, 10.0, allow_nan=False),
)
def test_memory_fit_against_polyfit(measurement_table, peaks, per_seq):
    sizes = [2**i for i in range(len(peaks))]
    df = measurement_table(sizes, np.ones(len(sizes)), np.ones(len(sizes)), **LENGTHS).assign(
        peak_memory_mb=peaks, kv_cache_mb=np.asarray(sizes, dtype=float) * per_seq
    )
    fig = plots.memory_vs_batch_figure(df, kv_prediction=per_seq)
    fit = [t for t in fig.data if t.name.startswith("fit:")][0]
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(peaks), 1)
    expected = intercept + slope * np.array([sizes[0], sizes[-1]], dtype=float)
    np.testing.assert_allclose(fit.y, expected, rtol=1e-6, atol=1e-6 * (1 + max(peaks)))
    pred = trace(fig, "KV cache (predicted)")
    np.testing.assert_allclose(pred.y, [0.0, sizes[-1] * per_seq])


# ---------------------------------------------------------------------- measured vs roofline


def test_measured_vs_roofline_figure_draws_the_comparison():
    df = measure.load_measurement(COMMITTED)
    # a made-up device with round figures: 1e11 FLOP/s, 1e10 B/s, 1 GB
    dev = roofline.DeviceSpec("test-cpu", 1e11, 1e10, 1e9)
    cmp = measure.compare_with_roofline(df, TINY, dev)
    fig = plots.measured_vs_roofline_figure(cmp)
    for q in ("prefill_ms", "decode_ms_per_step", "output_tokens_per_s"):
        np.testing.assert_allclose(trace(fig, "measured", q).y, cmp[f"measured_{q}"])
        np.testing.assert_allclose(trace(fig, "roofline", q).y, cmp[f"predicted_{q}"])
        ratio = trace(fig, "measured / roofline", q).y
        np.testing.assert_allclose(ratio, cmp[f"ratio_{q}"])
        np.testing.assert_allclose(ratio, cmp[f"measured_{q}"] / cmp[f"predicted_{q}"])
    # one legend entry per kind
    assert [t.name for t in fig.data if t.showlegend is not False] == [
        "measured",
        "roofline",
        "measured / roofline",
    ]
    ones = [t for t in fig.data if t.name == "ratio 1"]
    assert len(ones) == 3 and all(list(t.y) == [1.0, 1.0] for t in ones)
    assert list(fig.layout.xaxis4.tickvals) == [1, 2, 4, 8, 16, 32]
    # batch 1 decode is memory-bound on this device: the weights (4,999,424 params x 4 B)
    # plus the KV cache read, over 1e10 B/s; the first step is at context 129 ... the last at
    # 159, the mean context 144: (19,997,696 + 4,096 x 144) B / 1e10 B/s = 2.05875 ms
    assert TINY.n_params == 4_999_424
    assert cmp["predicted_decode_ms_per_step"][0] == pytest.approx(
        (19_997_696 + 4096 * 144) / 1e10 * 1e3
    )
    one = plots.measured_vs_roofline_figure(cmp, quantities=["kv_cache_mb"])
    np.testing.assert_allclose(trace(one, "measured / roofline", "kv_cache_mb").y, 1.0, rtol=1e-5)


def test_measured_vs_roofline_errors():
    df = measure.load_measurement(COMMITTED)
    cmp = measure.compare_with_roofline(df, TINY, roofline.DeviceSpec("d", 1e11, 1e10, 1e9))
    with pytest.raises(InputError, match="ratio_prefill_ms"):
        plots.measured_vs_roofline_figure(cmp.drop(columns="ratio_prefill_ms"))
    with pytest.raises(InputError, match="quantity"):
        plots.measured_vs_roofline_figure(cmp, quantities=[])
    with pytest.raises(InputError):
        plots.measured_vs_roofline_figure(df)
    with pytest.raises(InputError):
        plots.measured_vs_roofline_figure("cmp.csv")
