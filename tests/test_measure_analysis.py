"""Tests of batchlab.measure's analysis on hand-made tables (no torch): saturation, latency
limits, Pareto sets, memory slopes, the summary, the roofline's prefill, batch-size lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import measure, roofline
from batchlab.errors import InputError


def test_saturation_batch_size_hand_worked(measurement_table):
    df = measurement_table([1, 2, 4, 8, 16], [100, 180, 240, 250, 252], [10, 11, 13, 20, 40])
    # best 252; 0.95 · 252 = 239.4 -> 4 is the first with >= 239.4 (240)
    assert measure.saturation_batch_size(df) == 4
    # 0.99 · 252 = 249.48 -> 8 (250)
    assert measure.saturation_batch_size(df, 0.01) == 8
    assert measure.saturation_batch_size(df, 0.0) == 16
    # 0.5 · 252 = 126 -> 2
    assert measure.saturation_batch_size(df, 0.5) == 2
    # an OOM row with NaN figures is ignored, row order does not matter
    oom = pd.concat([df, measurement_table([32], [np.nan], [np.nan])]).iloc[::-1]
    oom.loc[oom["batch_size"] == 32, "oom"] = True
    assert measure.saturation_batch_size(oom) == 4
    with pytest.raises(InputError):
        measure.saturation_batch_size(df, 1.0)


def test_max_batch_under_latency_hand_worked(measurement_table):
    df = measurement_table([1, 2, 4, 8, 16], [1, 2, 3, 4, 5], [10, 12, 20, 35, 70])
    assert measure.max_batch_under_latency(df, 30) == 4
    assert measure.max_batch_under_latency(df, 70) == 16  # the limit is inclusive
    assert measure.max_batch_under_latency(df, 5) is None
    df["decode_ms_per_step"] = [1.0, 1.0, 1.5, 2.5, 6.0]
    assert measure.max_batch_under_latency(df, 2.0, column="decode_ms_per_step") == 4
    with pytest.raises(InputError):
        measure.max_batch_under_latency(df, -1)
    with pytest.raises(InputError) as err:
        measure.max_batch_under_latency(df, 10, column="nope")
    assert err.value.field == "nope"


def test_pareto_hand_worked(measurement_table):
    # (throughput, latency): b=4 (170, 20) is dominated by b=2 (180, 12); b=32 (240, 90) by
    # b=16 (252, 70). The rest trade throughput for latency.
    df = measurement_table(
        [1, 2, 4, 8, 16, 32], [100, 180, 170, 250, 252, 240], [10, 12, 20, 35, 70, 90]
    )
    assert measure.pareto_batch_sizes(df) == [1, 2, 8, 16]
    # an exact tie is not a domination: both stay
    tie = measurement_table([1, 2], [100, 100], [10, 10])
    assert measure.pareto_batch_sizes(tie) == [1, 2]


def _pareto_reference(batch, thr, lat):
    keep = []
    for i in range(len(batch)):
        dominated = False
        for j in range(len(batch)):
            if thr[j] >= thr[i] and lat[j] <= lat[i] and (thr[j] > thr[i] or lat[j] < lat[i]):
                dominated = True
        if not dominated:
            keep.append(batch[i])
    return sorted(keep)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=12))
def test_pareto_matches_reference(measurement_table, points):
    batch = list(range(1, len(points) + 1))
    thr = [float(p[0]) for p in points]
    lat = [float(p[1]) for p in points]
    df = measurement_table(batch, thr, lat)
    assert measure.pareto_batch_sizes(df) == _pareto_reference(batch, thr, lat)


def test_memory_per_sequence_hand_worked(measurement_table):
    df = measurement_table([1, 2, 3], [1, 1, 1], [1, 1, 1], peak_memory_mb=[10.0, 13.0, 14.0])
    # x̄ = 2, ȳ = 37/3; Σ(x-x̄)(y-ȳ) = (-1)(-7/3) + 0 + (1)(5/3) = 4; Σ(x-x̄)² = 2 -> slope 2
    assert measure.memory_per_sequence_mb(df) == pytest.approx(2.0)
    one = measurement_table([4], [1], [1], peak_memory_mb=[3.0])
    with pytest.raises(InputError):
        measure.memory_per_sequence_mb(one)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 512), min_size=2, max_size=10, unique=True),
    st.floats(0.0, 100.0),
    st.floats(-50.0, 500.0),
)
def test_memory_per_sequence_recovers_a_line(measurement_table, sizes, slope, intercept):
    mem = [intercept + slope * b for b in sizes]
    df = measurement_table(sizes, [1.0] * len(sizes), [1.0] * len(sizes), peak_memory_mb=mem)
    assert measure.memory_per_sequence_mb(df) == pytest.approx(slope, rel=1e-9, abs=1e-9)


def test_summarize_measurement(measurement_table):
    df = measurement_table(
        [1, 2, 4, 8],
        [100, 180, 240, 250],
        [10, 11, 13, 20],
        peak_memory_mb=[5.0, 7.0, 11.0, 19.0],
        kv_cache_mb=[1.0, 2.0, 4.0, 8.0],
    )
    s = measure.summarize_measurement(df, latency_limit_ms=12)
    assert s.saturation_batch_size == 4  # 0.95 · 250 = 237.5
    assert (s.best_throughput_batch_size, s.best_output_tokens_per_s) == (8, 250.0)
    assert s.pareto_batch_sizes == (1, 2, 4, 8)
    assert s.memory_per_sequence_mb == pytest.approx(2.0)  # 5 + 2·(b - 1) exactly
    assert s.kv_cache_per_sequence_mb == pytest.approx(1.0)
    assert s.max_batch_under_latency == 2
    assert s.oom_batch_size is None
    assert set(s.to_frame()["quantity"]) >= {"saturation_batch_size", "memory_per_sequence_mb"}


def test_roofline_prefill_hand_worked():
    spec = roofline.ModelSpec(
        "toy",
        n_layers=1,
        hidden_size=8,
        n_heads=2,
        n_kv_heads=1,
        intermediate_size=16,
        vocab_size=32,
    )
    # a device so fast at arithmetic that every step is memory bound; 1 GB/s bandwidth
    dev = roofline.DeviceSpec("bw", peak_flops=1e30, memory_bandwidth=1e9, memory_bytes=1e12)
    one = roofline.prefill_bytes(spec, 10)
    per_seq = one - spec.weight_bytes
    pred = measure.roofline_table(spec, dev, [1, 3], 10, 2)
    # batch 3 reads the weights once and writes 3 sequences' worth of bytes
    expected = (spec.weight_bytes + 3 * per_seq) / 1e9 * 1e3
    assert pred.loc[1, "prefill_ms"] == pytest.approx(expected)
    assert pred.loc[0, "prefill_ms"] == pytest.approx(one / 1e9 * 1e3)


def test_parse_batch_sizes():
    assert measure.parse_batch_sizes("8, 1,2,2") == [1, 2, 8]
    for bad in ("", "1,x", "0", "1,-2", "1.5"):
        with pytest.raises(InputError) as err:
            measure.parse_batch_sizes(bad)
        assert err.value.field == "batch-sizes"
