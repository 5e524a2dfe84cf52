"""Tests of the public step-time interface: StepBatch, StepTime's named parts, the three
models' step / duration_ms / decode_steps_ms agreeing with each other and with hand-worked
numbers, and a user's model that implements only step()."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError
from batchlab.roofline import GPUS, MODELS, RooflineStepTime, get_gpu, get_model, prefill_flops
from batchlab.steptime import LinearStepTime, StepBatch, StepTime, StepTimeModel, TableStepTime


def test_step_time_parts_add_up():
    t = StepTime(compute_ms=2.0, memory_ms=0.0, overhead_ms=0.5, other_ms=1.0)
    assert t.total_ms == 3.5
    assert t.bound == "compute"
    assert t.as_dict() == {
        "compute_ms": 2.0,
        "memory_ms": 0.0,
        "overhead_ms": 0.5,
        "other_ms": 1.0,
        "total_ms": 3.5,
    }
    assert StepTime().total_ms == 0.0


def test_step_batch_of_checks_and_defaults():
    b = StepBatch.of(10, [5, 7])
    assert (b.prefill_tokens, b.prefill_pairs, b.prefill_seqs) == (10, 55.0, 1)
    assert (b.decode_seqs, b.decode_context) == (2, 12.0)
    assert StepBatch.of(0).empty and StepBatch.of(0).prefill_seqs == 0
    # 4 tokens after 3 cached: 4·3 + 4·5/2 = 22 pairs
    assert StepBatch.of(4, prefill_cached=3).prefill_pairs == 22.0
    adv = b.advanced(3)
    assert adv.prefill_tokens == 0 and adv.decode_context == 18.0
    np.testing.assert_array_equal(adv.decode_context_lens, [8, 10])
    with pytest.raises(InputError, match="prefill_tokens"):
        StepBatch.of(-1)
    with pytest.raises(InputError, match="context_lens"):
        StepBatch.of(0, [0])
    with pytest.raises(InputError, match="prefill_seqs"):
        StepBatch.of(3, prefill_seqs=4)


def test_linear_parts_by_hand():
    m = LinearStepTime(per_step_ms=10, per_token_ms=0.5, per_seq_ms=1, per_context_ms=0.01)
    t = m.step(StepBatch.of(20, [100, 300]))
    # overhead 10; prefill 0.5 · 20 = 10; decode 1 · 2 + 0.01 · 400 = 6
    assert (t.overhead_ms, t.other_ms, t.total_ms) == (10.0, 16.0, 26.0)
    assert t.parts == {"overhead": 10.0, "prefill": 10.0, "decode": 6.0}
    assert m.step(StepBatch()).total_ms == 0.0


def test_roofline_attributes_time_to_its_bound_by_hand():
    rt = RooflineStepTime("llama-2-7b", "h100-sxm", calibrated=False)
    spec, dev = get_model("llama-2-7b"), get_gpu("h100-sxm")
    # one decode of 1 sequence at context 100: memory-bound (weights dominate)
    t = rt.step(StepBatch.of(0, [100]))
    assert t.compute_ms == 0 and t.memory_ms == pytest.approx(
        (spec.weight_bytes + 100 * spec.kv_bytes_per_token) / dev.memory_bandwidth * 1e3
    )
    # a prefill of 4 prompts of 2048 tokens: compute-bound, 4 LM-head rows
    b = StepBatch(prefill_tokens=4 * 2048, prefill_pairs=4 * 2048 * 2049 / 2, prefill_seqs=4)
    t = rt.step(b)
    assert t.memory_ms == 0
    assert t.compute_ms == pytest.approx(4 * prefill_flops(spec, 2048) / dev.peak_flops * 1e3)
    assert t.bound == "compute"


@st.composite
def batches(draw):
    p = draw(st.integers(0, 5000))
    seqs = draw(st.integers(0, min(p, 8)))
    n = draw(st.integers(0, 64))
    lens = np.asarray(draw(st.lists(st.integers(1, 8000), min_size=n, max_size=n)), dtype=float)
    cached = draw(st.integers(0, 3000)) if p else 0
    pairs = draw(st.floats(0, 1e8)) if p else 0.0
    return StepBatch(p, pairs, cached, seqs, n, float(lens.sum()), lens)


@settings(max_examples=80, deadline=None)
@given(
    b=batches(),
    model=st.sampled_from(sorted(MODELS)),
    gpu=st.sampled_from(sorted(GPUS)),
    k=st.integers(0, 20),
)
def test_every_model_agrees_with_itself(b, model, gpu, k):
    table = pd.DataFrame(
        {
            "batch_size": [1, 4, 16],
            "prompt_len": 256,
            "decode_ms_per_step": [10.0, 12.0, 20.0],
            "prefill_ms_per_token": [0.2, 0.1, 0.08],
        }
    )
    for m in (
        RooflineStepTime(model, gpu),
        LinearStepTime(3.0, 0.01, 0.5, 0.001),
        TableStepTime(table),
    ):
        total = m.step(b).total_ms
        assert m.duration_ms(b) == pytest.approx(total, rel=1e-12, abs=1e-12)
        run = m.decode_steps_ms(b, k)
        slow = [m.step(b.advanced(j)).total_ms for j in range(k)]
        np.testing.assert_allclose(run, slow, rtol=1e-12, atol=1e-12)
        # the base class's generic loop gives the same run
        np.testing.assert_allclose(StepTimeModel.decode_steps_ms(m, b, k), slow, rtol=1e-12)


def test_a_model_with_only_step_works_everywhere():
    class Fixed(StepTimeModel):
        def step(self, batch):
            if batch.empty:
                return StepTime()
            return StepTime(overhead_ms=1.0, memory_ms=0.1 * batch.decode_seqs)

    m = Fixed()
    assert m.step_ms(0, [5, 6]) == pytest.approx(1.2)
    np.testing.assert_allclose(m.decode_run_ms([5, 6, 7], 2), [1.3, 1.3])
    assert m.duration_ms(StepBatch()) == 0.0
    with pytest.raises(TypeError):
        StepTimeModel()  # step() is abstract


def test_table_parts_are_measured_time():
    t = TableStepTime(
        pd.DataFrame(
            {"batch_size": [1, 4], "decode_ms_per_step": [10.0, 16.0], "prefill_ms_per_token": 0.1}
        )
    )
    s = t.step(StepBatch.of(100, np.ones(2)))
    assert s.compute_ms == s.memory_ms == 0 and s.other_ms == pytest.approx(12.0 + 10.0)
    assert s.parts == {"decode": 12.0, "prefill": pytest.approx(10.0)}
    assert math.isclose(s.total_ms, 22.0)
