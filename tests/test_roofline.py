"""Tests of batchlab.roofline: specs, KV-cache arithmetic, FLOPs/bytes and step-time models."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError
from batchlab.roofline import (
    GPUS,
    MODELS,
    DeviceSpec,
    LinearStepTime,
    ModelSpec,
    RooflineStepTime,
    StepTime,
    StepTimeModel,
    TableStepTime,
    decode_step_bytes,
    decode_step_flops,
    get_gpu,
    get_model,
    gpu_table,
    kv_cache_bytes_per_token,
    max_batch_size,
    max_kv_tokens,
    model_table,
    prefill_bytes,
    prefill_flops,
    step_time_ms,
)

GiB = 2**30


# --- specs -------------------------------------------------------------------------------------


def test_kv_cache_per_token_by_hand():
    # Llama-2-7B: 2 (K and V) · 32 layers · 32 KV heads · 128 head dim · 2 bytes = 524,288 B
    assert kv_cache_bytes_per_token("llama-2-7b") == 524_288 == 0.5 * 2**20  # 0.5 MiB
    # Llama-3-8B (GQA, 8 KV heads): 2 · 32 · 8 · 128 · 2 = 131,072 B = 128 KiB
    assert kv_cache_bytes_per_token("llama-3-8b") == 131_072
    # Llama-2-70B (80 layers, 8 KV heads): 2 · 80 · 8 · 128 · 2 = 327,680 B = 320 KiB
    assert kv_cache_bytes_per_token("llama-2-70b") == 327_680
    # an 8-bit KV cache halves it
    spec = ModelSpec("x", 32, 4096, 32, 32, 11008, 32000, bytes_per_kv=1.0)
    assert spec.kv_bytes_per_token == 262_144


def test_parameter_counts_by_hand():
    # Llama-2-7B: embeddings and lm_head 2 · 32000 · 4096 = 262,144,000; per layer
    # 4 · 4096² (q, k, v, o) = 67,108,864 + 3 · 4096 · 11008 (MLP) = 135,266,304 + 2 · 4096 norms
    # = 202,383,360; · 32 = 6,476,267,520; + final norm 4096 → 6,738,415,616 (the published 6.74B)
    assert MODELS["llama-2-7b"].n_params == 6_738_415_616
    # Llama-3-8B: 2 · 128256 · 4096 = 1,050,673,152; per layer q, o 2 · 4096² = 33,554,432,
    # k, v 2 · 4096 · 1024 = 8,388,608, MLP 3 · 4096 · 14336 = 176,160,768, norms 8192
    # → 218,112,000 · 32 = 6,979,584,000; + 4096 → 8,030,261,248
    assert MODELS["llama-3-8b"].n_params == 8_030_261_248
    # Llama-2-70B: 2 · 32000 · 8192 = 524,288,000; per layer 2 · 8192² + 2 · 8192 · 1024
    # + 3 · 8192 · 28672 + 2 · 8192 = 855,654,400; · 80 = 68,452,352,000; + 8192
    assert MODELS["llama-2-70b"].n_params == 68_976_648_192
    assert MODELS["llama-2-7b"].weight_bytes == 2 * 6_738_415_616
    assert MODELS["llama-2-7b"].head_dim == 128


def test_tied_embeddings_drop_the_lm_head():
    a = ModelSpec("a", 2, 64, 4, 2, 128, 1000)
    b = ModelSpec("b", 2, 64, 4, 2, 128, 1000, tie_word_embeddings=True)
    assert a.n_params - b.n_params == 1000 * 64


def test_gpu_presets_are_the_data_sheet_figures():
    assert GPUS["h100-sxm"].peak_flops == 989.5e12  # 1,979 TFLOPS with sparsity / 2
    assert GPUS["h100-sxm"].memory_bandwidth == 3.35e12
    assert GPUS["a100-40gb"].memory_bandwidth == 1555e9
    assert GPUS["a100-80gb"].memory_bandwidth == 2039e9
    assert GPUS["a100-80gb"].peak_flops == GPUS["a100-40gb"].peak_flops == 312e12
    assert GPUS["l4"].peak_flops == 121e12 and GPUS["l4"].memory_bandwidth == 300e9
    assert GPUS["l4"].memory_bytes == 24 * GiB
    table = gpu_table()
    assert list(table["name"]) == list(GPUS)
    # the H100 ridge point: 989.5e12 / 3.35e12 ≈ 295 FLOPs per byte
    assert table.set_index("name").loc["h100-sxm", "ridge_flops_per_byte"] == pytest.approx(
        295.37, abs=0.01
    )
    mt = model_table()
    assert mt.set_index("name").loc["llama-2-7b", "kv_bytes_per_token"] == 524_288


def test_get_model_and_gpu():
    spec = MODELS["llama-3-8b"]
    assert get_model("Llama-3-8B") is spec
    assert get_model(spec) is spec
    assert get_gpu(" H100-SXM ") is GPUS["h100-sxm"]
    with pytest.raises(ValueError, match="llama-2-7b, llama-3-8b, llama-2-70b"):
        get_model("gpt-5")
    with pytest.raises(ValueError, match="a100-40gb"):
        get_gpu("tpu")
    four = get_gpu("4xa100-80gb")
    assert four.peak_flops == 4 * 312e12
    assert four.memory_bytes == 4 * 80 * GiB
    assert four.memory_bandwidth == 4 * 2039e9
    assert GPUS["l4"].scaled(1) is GPUS["l4"]


def test_spec_validation():
    with pytest.raises(InputError, match="n_layers"):
        ModelSpec("x", 0, 64, 4, 4, 128, 100)
    with pytest.raises(InputError, match="n_kv_heads"):
        ModelSpec("x", 2, 64, 4, 3, 128, 100)
    with pytest.raises(InputError, match="hidden_size"):
        ModelSpec("x", 2, 65, 4, 4, 128, 100)
    with pytest.raises(InputError, match="bytes_per_kv"):
        ModelSpec("x", 2, 64, 4, 4, 128, 100, bytes_per_kv=0)
    with pytest.raises(InputError, match="memory_bandwidth"):
        DeviceSpec("d", 1e12, -1.0, 1e9)
    with pytest.raises(InputError, match="step_overhead_ms"):
        DeviceSpec("d", 1e12, 1e9, 1e9, step_overhead_ms=-1)
    with pytest.raises(InputError, match="memory_fraction"):
        max_kv_tokens("llama-2-7b", "h100-sxm", 1.5)
    with pytest.raises(InputError, match="context_len"):
        max_batch_size("llama-2-7b", "h100-sxm", 0)
    with pytest.raises(InputError, match="n_devices"):
        GPUS["l4"].scaled(0)


# --- memory ------------------------------------------------------------------------------------


def test_max_kv_tokens_by_hand():
    # H100 80 GiB · 0.9 = 77,309,411,328 B; minus the weights 13,476,831,232 B leaves
    # 63,832,580,096 B; / 524,288 B per token = 121,750.98 → 121,750 tokens
    assert max_kv_tokens("llama-2-7b", "h100-sxm", 0.9) == 121_750
    # sequences of 4096 tokens: 121,750 // 4096 = 29
    assert max_batch_size("llama-2-7b", "h100-sxm", 4096) == 29
    # Llama-2-70B's 137.95 GB of weights do not fit in one H100 (0 tokens) but do in two:
    # 0.9 · 160 GiB = 154,618,822,656 − 137,953,296,384 = 16,665,526,272 B / 327,680 = 50,859
    assert max_kv_tokens("llama-2-70b", "h100-sxm") == 0
    assert max_kv_tokens("llama-2-70b", "2xh100-sxm") == 50_859
    # GQA: Llama-3-8B stores 4× fewer bytes per token than Llama-2-7B
    free = 0.9 * 80 * GiB - MODELS["llama-3-8b"].weight_bytes
    assert max_kv_tokens("llama-3-8b", "h100-sxm") == int(free // 131_072)


@settings(max_examples=40, deadline=None)
@given(
    frac=st.floats(0.05, 1.0),
    ctx=st.integers(1, 100_000),
    model=st.sampled_from(sorted(MODELS)),
    gpu=st.sampled_from(sorted(GPUS)),
)
def test_max_batch_fits_and_one_more_does_not(frac, ctx, model, gpu):
    spec, dev = MODELS[model], GPUS[gpu]
    b = max_batch_size(model, gpu, ctx, frac)
    budget = frac * dev.memory_bytes
    if b > 0:
        assert spec.weight_bytes + b * ctx * spec.kv_bytes_per_token <= budget + 1e-3
    assert (
        spec.weight_bytes + (b + 1) * ctx * spec.kv_bytes_per_token
        > budget - 1e-3 * ctx * spec.kv_bytes_per_token
    )


# --- FLOPs and bytes ---------------------------------------------------------------------------


def test_flops_and_bytes_by_hand():
    spec = MODELS["llama-2-7b"]
    # matmul weights per layer: 4 · 4096² + 3 · 4096 · 11008 = 202,375,168; · 32 · 2 FLOPs
    per_token = 2 * 32 * 202_375_168  # 12,952,010,752
    logits = 2 * 32000 * 4096  # 262,144,000
    per_pair = 4 * 32 * 32 * 128  # 524,288 FLOPs per (query, key) pair
    # prefill of 3 tokens after 0 cached: pairs 1 + 2 + 3 = 6
    assert prefill_flops(spec, 3) == 3 * per_token + logits + 6 * per_pair
    # after 10 cached tokens: pairs 11 + 12 + 13 = 36 = 3·10 + 3·4/2
    assert prefill_flops(spec, 3, context=10) == 3 * per_token + logits + 36 * per_pair
    assert prefill_flops(spec, 0) == 0.0
    # bytes: weights once + KV of the 10 cached tokens read + 3 written
    assert prefill_bytes(spec, 3, context=10) == spec.weight_bytes + 13 * 524_288
    # decode over contexts 5 and 7: 2 sequences, 12 pairs
    assert decode_step_flops(spec, [5, 7]) == 2 * (per_token + logits) + 12 * per_pair
    assert decode_step_bytes(spec, [5, 7]) == spec.weight_bytes + 12 * 524_288
    assert decode_step_bytes(spec, []) == 0.0


def test_step_time_by_hand():
    ideal = {"calibrated": False}  # the data-sheet roofline
    # one decode token at context 1 on H100 is memory-bound:
    # (13,476,831,232 + 524,288) B / 3.35e12 B/s = 4.0230912 ms
    t = step_time_ms("llama-2-7b", "h100-sxm", context_lens=[1], **ideal)
    assert t == pytest.approx(4.0230912, rel=1e-12)
    # a prefill of 4096 tokens is compute-bound: FLOPs / 989.5e12
    f = prefill_flops("llama-2-7b", 4096)
    assert f / 989.5e12 * 1e3 > prefill_bytes("llama-2-7b", 4096) / 3.35e12 * 1e3
    assert step_time_ms("llama-2-7b", "h100-sxm", prefill_tokens=4096, **ideal) == pytest.approx(
        f / 989.5e12 * 1e3, rel=1e-12
    )
    # overhead is added once
    dev = DeviceSpec("slow", 1e12, 1e11, 1e12, step_overhead_ms=2.5)
    base = DeviceSpec("slow", 1e12, 1e11, 1e12)
    spec = MODELS["llama-2-7b"]
    assert step_time_ms(spec, dev, context_lens=[9, 9], **ideal) == pytest.approx(
        step_time_ms(spec, base, context_lens=[9, 9], **ideal) + 2.5
    )
    assert step_time_ms(spec, dev, **ideal) == 0.0  # an empty step does not run


def test_mixed_step_reads_weights_once():
    ideal = {"calibrated": False}
    spec, dev = MODELS["llama-2-7b"], GPUS["a100-80gb"]
    mixed = step_time_ms(
        spec, dev, prefill_tokens=10, context_lens=[100, 200], prefill_context=50, **ideal
    )
    flops = prefill_flops(spec, 10, 50) + decode_step_flops(spec, [100, 200])
    moved = spec.weight_bytes + spec.kv_bytes_per_token * (50 + 10 + 300)
    assert mixed == pytest.approx(max(flops / dev.peak_flops, moved / dev.memory_bandwidth) * 1e3)


def test_decode_goes_compute_bound_at_large_batch():
    spec, dev = MODELS["llama-2-7b"], GPUS["h100-sxm"]
    # short contexts: the weights dominate the bytes, so a big batch is compute-bound ...
    small = np.full(1, 16)
    big = np.full(4096, 16)
    assert (
        decode_step_flops(spec, small) / dev.peak_flops
        < decode_step_bytes(spec, small) / dev.memory_bandwidth
    )
    assert (
        decode_step_flops(spec, big) / dev.peak_flops
        > decode_step_bytes(spec, big) / dev.memory_bandwidth
    )
    # ... but attention over the KV cache is ~1 FLOP per byte (4·L·H FLOPs and 2·2·L·H bytes
    # per cached token), so with long contexts decode stays memory-bound at any batch size
    long = np.full(4096, 2048)
    assert (
        decode_step_flops(spec, long) / dev.peak_flops
        < decode_step_bytes(spec, long) / dev.memory_bandwidth
    )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    ctx=st.integers(1, 4000),
    steps=st.integers(1, 50),
    model=st.sampled_from(sorted(MODELS)),
    gpu=st.sampled_from(sorted(GPUS)),
)
def test_roofline_decode_run_matches_step_by_step(n, ctx, steps, model, gpu):
    rt = RooflineStepTime(model, gpu)
    rng = np.random.default_rng(n * 7 + ctx)
    lens = rng.integers(1, ctx + 1, size=n)
    fast = rt.decode_run_ms(lens, steps)
    slow = [step_time_ms(model, gpu, context_lens=lens + j) for j in range(steps)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    # steps never get shorter as contexts grow, nor when the batch grows
    assert np.all(np.diff(fast) >= -1e-12)
    assert rt.step_ms(0, np.append(lens, 1).astype(float)) >= rt.step_ms(0, lens.astype(float))


def test_linear_step_time_by_hand():
    m = LinearStepTime(per_step_ms=10, per_token_ms=0.5, per_seq_ms=1, per_context_ms=0.01)
    # 10 + 0.5 · 20 + 1 · 2 + 0.01 · (100 + 300) = 26
    assert m.step_ms(20, np.array([100.0, 300.0])) == pytest.approx(26.0)
    assert m.step_ms(0, np.zeros(0)) == 0.0
    # decode run at contexts (100, 300) then (101, 301): 10 + 2 + 4 = 16, 16.02
    np.testing.assert_allclose(m.decode_run_ms([100, 300], 2), [16.0, 16.02])
    with pytest.raises(InputError, match="per_seq_ms"):
        LinearStepTime(1.0, per_seq_ms=-1)


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "batch_size": [1, 4, 8, 16],
            "prompt_len": [100, 100, 100, 100],
            "prefill_ms_per_token": [0.4, 0.1, 0.05, math.nan],
            "decode_ms_per_step": [10.0, 16.0, 20.0, math.nan],
            "oom": [False, False, False, True],
        }
    )


def test_table_step_time_interpolates_by_hand():
    t = TableStepTime(_table())
    assert list(t.batch_sizes) == [1, 4, 8]  # the OOM row is dropped
    # decode at batch 2: between (1, 10) and (4, 16) → 10 + 6 · 1/3 = 12
    assert t.step_ms(0, np.ones(2)) == pytest.approx(12.0)
    # beyond the table: slope of the last segment (20 − 16) / 4 = 1 per sequence → 20 + 4 = 24
    assert t.step_ms(0, np.ones(12)) == pytest.approx(24.0)
    # prefill of 400 tokens = 4 measured prompts of 100 → 0.1 ms/token → 40 ms
    assert t.step_ms(400, np.zeros(0)) == pytest.approx(40.0)
    # 50 tokens: half a prompt, clamped to batch 1 → 0.4 ms/token → 20 ms
    assert t.step_ms(50, np.zeros(0)) == pytest.approx(20.0)
    # mixed: decode of 4 (16) + prefill of 800 tokens (batch 8: 0.05) = 16 + 40
    assert t.step_ms(800, np.ones(4)) == pytest.approx(56.0)
    np.testing.assert_allclose(t.decode_run_ms(np.ones(4), 3), [16.0, 16.0, 16.0])
    assert t.step_ms(0, np.zeros(0)) == 0.0


def test_table_step_time_errors():
    with pytest.raises(InputError, match="decode_ms_per_step"):
        TableStepTime(pd.DataFrame({"batch_size": [1], "prefill_ms_per_token": [1.0]}))
    bad = _table().assign(decode_ms_per_step=math.nan)
    with pytest.raises(InputError, match="no usable row"):
        TableStepTime(bad)


def test_table_from_the_measurement_columns_round_trips_the_roofline():
    # A table built from roofline step times reproduces them at the measured batch sizes.
    spec, dev = MODELS["llama-2-7b"], GPUS["l4"]
    rows = []
    for b in (1, 2, 4, 8):
        dec = step_time_ms(spec, dev, context_lens=np.full(b, 300))
        pre = step_time_ms(spec, dev, prefill_tokens=b * 256)
        rows.append(
            {
                "batch_size": b,
                "prompt_len": 256,
                "decode_ms_per_step": dec,
                "prefill_ms_per_token": pre / (b * 256),
            }
        )
    t = TableStepTime(pd.DataFrame(rows))
    for r in rows:
        assert t.step_ms(0, np.ones(r["batch_size"])) == pytest.approx(r["decode_ms_per_step"])
        tokens = r["batch_size"] * 256
        assert t.step_ms(tokens, np.zeros(0)) == pytest.approx(r["prefill_ms_per_token"] * tokens)


def test_generic_decode_run_of_the_base_class():
    class Quadratic(StepTimeModel):
        needs_context_lens = True

        def step(self, batch):
            return StepTime(other_ms=float(np.sum(batch.decode_context_lens**2)) * 1e-3)

    q = Quadratic()
    # contexts (1, 2): 5e-3; then (2, 3): 13e-3
    np.testing.assert_allclose(q.decode_run_ms([1, 2], 2), [5e-3, 13e-3])
