"""Tests of batchlab.recommend: use cases, the memory limit and the recommendation rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import measure, recommend, roofline
from batchlab.errors import InputError, LimitError

# A toy model: per layer q,o 2·128² = 32,768 + k,v 2·128·64 = 16,384 + MLP 3·128·256 = 98,304
# + norms 256 -> 147,712; two layers 295,424; embeddings and lm_head 2·1000·128 = 256,000;
# final norm 128 -> 551,552 parameters, 1,103,104 bytes in bf16.
# KV cache per token: 2 · 2 layers · 2 KV heads · head dim 32 · 2 bytes = 512 bytes.
TOY = roofline.ModelSpec("toy", 2, 128, 4, 2, 256, 1000)


def toy_device(memory_bytes: float) -> roofline.DeviceSpec:
    return roofline.DeviceSpec("toy-gpu", 1e12, 1e10, memory_bytes)


def test_toy_model_arithmetic():
    assert TOY.weight_bytes == 1_103_104
    assert roofline.kv_cache_bytes_per_token(TOY) == 512


def test_max_batch_for_memory_hand_worked():
    # 0.9 · 10e6 = 9e6 − 1,103,104 = 7,896,896 bytes -> 15,423 tokens -> 15,423 // 300 = 51
    assert recommend.max_batch_for_memory(TOY, toy_device(10e6), 300) == 51
    # 0.5 · 10e6 − 1,103,104 = 3,896,896 -> 7,611 tokens -> 25 sequences of 300
    assert recommend.max_batch_for_memory(TOY, toy_device(10e6), 300, 0.5) == 25
    # the weights alone do not fit in 0.9 · 1e6
    assert recommend.max_batch_for_memory(TOY, toy_device(1e6), 300) == 0
    # Llama-2-7B (6,738,415,616 parameters, 13,476,831,232 bytes) on an A100 80GB (80 GiB):
    # 0.9 · 85,899,345,920 − 13,476,831,232 = 63,832,580,096 bytes / 524,288 per token
    # = 121,750 tokens -> 29 sequences of 4,096 tokens
    assert recommend.max_batch_for_memory("llama-2-7b", "a100-80gb", 4096) == 29
    for bad in ({"context_len": 0}, {"context_len": 10, "memory_fraction": 1.5}):
        with pytest.raises(InputError):
            recommend.max_batch_for_memory(TOY, toy_device(10e6), **{"context_len": 10, **bad})
    with pytest.raises(InputError):
        recommend.max_batch_for_memory(TOY, "no-such-gpu", 10)


def table(oom_at: int | None = None, sizes=(1, 2, 4, 8, 16, 32)) -> pd.DataFrame:
    """A hand-made measurement: prompt 256, generation 64 tokens, 1/32 ms per prompt token."""
    full = {
        1: (100.0, 10.0, 700.0),
        2: (190.0, 10.5, 720.0),
        4: (340.0, 11.8, 800.0),
        8: (500.0, 16.0, 1100.0),
        16: (540.0, 29.6, 1900.0),
        32: (560.0, 57.0, 3700.0),
    }
    rows = []
    for b in sizes:
        thr, dec, lat = full[b]
        if oom_at is not None and b >= oom_at:
            if b > oom_at:
                break
            thr = dec = lat = math.nan
        rows.append(
            {
                "batch_size": b,
                "prompt_len": 256,
                "gen_len": 64,
                "output_tokens_per_s": thr,
                "decode_ms_per_step": dec,
                "latency_ms_per_request": lat,
                "prefill_ms_per_token": 0.03125,
                "oom": b == oom_at,
            }
        )
    return pd.DataFrame(rows)


def test_interactive_hand_worked():
    r = recommend.recommend("interactive", measurement=table())
    # time per output token <= 50 ms keeps 1..16; best 540, 0.9 · 540 = 486 -> 8 (500 tokens/s)
    assert (r.batch_size, r.max_num_seqs) == (8, 8)
    assert r.enable_chunked_prefill
    # room beside the 16 ms decode step: 50 − 16 = 34 ms at 1/32 ms per prompt token = 1,088
    # tokens (less than the 8 · 256 = 2,048 prompt tokens); + 8 decode tokens = 1,096
    assert r.max_num_batched_tokens == 1096
    assert r.gpu_memory_utilization == 0.9
    assert (r.expected_output_tokens_per_s, r.expected_latency_ms) == (500.0, 16.0)
    assert (r.latency_column, r.latency_limit_ms) == ("decode_ms_per_step", 50.0)
    assert r.memory_limit_batch_size is None
    assert (r.prompt_len, r.gen_len, r.source) == (256, 64, "measurement")
    assert "10%" in r.reasons["batch_size"] and "1088" in r.reasons["max_num_batched_tokens"]


def test_mixed_offline_long_form_hand_worked():
    mixed = recommend.recommend("mixed", measurement=table())
    # all meet 100 ms; best 560, 0.95 · 560 = 532 -> 16 (540)
    assert mixed.batch_size == 16
    # 100 − 29.6 = 70.4 ms -> floor(70.4 · 32) = 2,252 tokens; + 16 = 2,268
    assert mixed.max_num_batched_tokens == 2268
    offline = recommend.recommend("offline", measurement=table())
    assert offline.batch_size == 32  # the best throughput, no latency limit
    assert not offline.enable_chunked_prefill
    # whole prompts of a full batch: 32 · 256 = 8,192 (>= the 320-token context)
    assert offline.max_num_batched_tokens == 8192
    assert offline.latency_column == "latency_ms_per_request" and offline.latency_limit_ms is None
    long_form = recommend.recommend("long-form", measurement=table())
    assert long_form.batch_size == 16 and long_form.enable_chunked_prefill


def test_latency_limit_override_hand_worked():
    r = recommend.recommend("interactive", measurement=table(), latency_limit_ms=12)
    # 1, 2, 4 meet 12 ms; best 340, 0.9 · 340 = 306 -> 4
    assert r.batch_size == 4
    # 12 − 11.8 = 0.2 ms -> floor(0.2 · 32) = 6 tokens; + 4 = 10
    assert r.max_num_batched_tokens == 10
    # offline with a limit on the request latency: <= 1,100 ms keeps 1..8 -> best is 8
    assert (
        recommend.recommend("offline", measurement=table(), latency_limit_ms=1100).batch_size == 8
    )


def test_no_size_meets_the_limit():
    r = recommend.recommend("interactive", measurement=table(), latency_limit_ms=5)
    assert r.batch_size == 1  # the lowest time per token (10 ms) comes closest
    assert "no batch size meets" in r.reasons["batch_size"]
    # the decode step alone exceeds the limit: the smallest chunk, 1 token; + 1 = 2
    assert r.max_num_batched_tokens == 2


def test_measured_out_of_memory_limits_the_batch():
    r = recommend.recommend("offline", measurement=table(oom_at=32))
    assert r.batch_size == 16 and r.memory_limit_batch_size == 16
    assert "ran out of memory at batch size 32" in r.reasons["batch_size"]
    with pytest.raises(LimitError):
        recommend.recommend("offline", measurement=table(oom_at=1))


def test_kv_memory_limits_the_batch():
    # 0.9 · 3,114,560 − 1,103,104 = 1,700,000 bytes -> 3,320 tokens -> 10 sequences of 320
    dev = toy_device(3_114_560)
    r = recommend.recommend("offline", measurement=table(), model=TOY, device=dev)
    assert r.memory_limit_batch_size == 10
    assert r.batch_size == 8  # the best throughput among 1, 2, 4, 8
    assert "10 sequences of 320 tokens fit" in r.reasons["batch_size"]
    # below the smallest measured size: 0.9 · 1,624,000 − 1,103,104 = 358,496 -> 700 tokens -> 2
    r = recommend.recommend(
        "mixed", measurement=table(sizes=(4, 8, 16)), model=TOY, device=toy_device(1_624_000)
    )
    assert r.batch_size == 2 and r.max_num_seqs == 2
    assert "memory allows only 2" in r.reasons["batch_size"]
    with pytest.raises(LimitError):
        recommend.recommend("offline", measurement=table(), model=TOY, device=toy_device(1e6))


def test_roofline_source():
    dev = toy_device(3_114_560)  # 10 sequences of 256 + 64 tokens fit (see above)
    r = recommend.recommend("offline", model=TOY, device=dev, prompt_len=256, gen_len=64)
    assert r.source == "roofline" and r.memory_limit_batch_size == 10
    pred = measure.roofline_table(TOY, dev, [1, 2, 4, 8, 10], 256, 64)
    best = int(pred.loc[pred["output_tokens_per_s"].idxmax(), "batch_size"])
    assert r.batch_size == best
    assert r.expected_output_tokens_per_s == pytest.approx(pred["output_tokens_per_s"].max())
    # lengths default to the use case's typical ones
    r = recommend.recommend("interactive", model="llama-3-8b", device="h100-sxm")
    assert (r.prompt_len, r.gen_len) == (512, 256)
    assert r.batch_size <= r.memory_limit_batch_size


def test_measurement_from_a_file(tmp_path):
    full = table()
    for column in measure.MEASUREMENT_COLUMNS:
        if column not in full.columns:
            full[column] = "cpu" if column == "device" else 1.0
    path = measure.save_measurement(full, tmp_path / "t.csv", settings={})
    assert recommend.recommend("mixed", measurement=path).batch_size == 16


def test_recommendation_frame_and_args():
    r = recommend.recommend("interactive", measurement=table())
    frame = r.to_frame()
    assert frame["setting"].tolist() == [
        "batch_size",
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "enable_chunked_prefill",
    ]
    assert frame["value"].tolist()[:3] == [8, 8, 1096]
    assert all(isinstance(x, str) and x for x in frame["reason"])
    assert r.vllm_args() == {
        "max_num_seqs": 8,
        "max_num_batched_tokens": 1096,
        "gpu_memory_utilization": 0.9,
        "enable_chunked_prefill": True,
    }


def test_bad_input():
    with pytest.raises(InputError, match="interactive"):
        recommend.recommend("chatbot", measurement=table())
    with pytest.raises(InputError):
        recommend.recommend("mixed")
    with pytest.raises(InputError):
        recommend.recommend("mixed", model=TOY)
    with pytest.raises(InputError):
        recommend.recommend("mixed", measurement=table(), memory_fraction=0)
    with pytest.raises(InputError):
        recommend.recommend("mixed", measurement=table(), latency_limit_ms=-3)
    with pytest.raises(InputError) as err:
        recommend.recommend("mixed", measurement=table().drop(columns="prefill_ms_per_token"))
    assert err.value.field == "prefill_ms_per_token"
    assert set(recommend.USE_CASES) == {"interactive", "mixed", "offline", "long-form"}
    assert all(case.description for case in recommend.USE_CASES.values())


def _reference_batch(df: pd.DataFrame, case: recommend.UseCase, limit: float | None) -> int:
    """The rules written out with loops: latency filter, then the smallest size within the
    tolerance of the best throughput; the closest to the limit when none meets it."""
    rows = [r for _, r in df.sort_values("batch_size").iterrows()]
    column = case.latency_column or "latency_ms_per_request"
    ok = [r for r in rows if limit is None or r[column] <= limit]
    if not ok:
        best = min(rows, key=lambda r: (r[column], r["batch_size"]))
        return int(best["batch_size"])
    top = max(r["output_tokens_per_s"] for r in ok)
    for r in ok:
        if r["output_tokens_per_s"] >= (1 - case.tolerance) * top:
            return int(r["batch_size"])
    raise AssertionError("unreachable")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 1000), st.integers(1, 200), st.integers(1, 5000)),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(sorted(recommend.USE_CASES)),
    st.one_of(st.none(), st.integers(1, 200)),
)
def test_batch_choice_matches_reference(points, name, limit):
    sizes = [2**i for i in range(len(points))]
    df = pd.DataFrame(
        {
            "batch_size": sizes,
            "prompt_len": 100,
            "gen_len": 10,
            "output_tokens_per_s": [float(p[0]) for p in points],
            "decode_ms_per_step": [float(p[1]) for p in points],
            "latency_ms_per_request": [float(p[2]) for p in points],
            "prefill_ms_per_token": 0.01,
            "oom": False,
        }
    )
    case = recommend.USE_CASES[name]
    r = recommend.recommend(name, measurement=df, latency_limit_ms=limit)
    effective = limit if limit is not None else case.latency_limit_ms
    assert r.batch_size == _reference_batch(df, case, effective)
    assert r.max_num_seqs == r.batch_size
    assert r.max_num_batched_tokens >= r.max_num_seqs
    if not case.enable_chunked_prefill:
        assert r.max_num_batched_tokens >= r.prompt_len + r.gen_len
    assert np.isfinite(r.expected_output_tokens_per_s)
