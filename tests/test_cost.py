"""Tests of batchlab.cost: coefficients, presets, closed-form formulas, breakdowns."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.cost import (
    PRESETS,
    CostBreakdown,
    CostCoefficients,
    CostModel,
    get_cost_model,
)
from batchlab.errors import InputError


def exact_sums(S: int, G: int) -> tuple[int, int]:
    """sum_{t<G} (S+t) and sum_{t<G} (S+t)^2 as exact Python ints, by a literal loop."""
    lin = 0
    quad = 0
    for t in range(G):
        lin += S + t
        quad += (S + t) ** 2
    return lin, quad


# ---------------------------------------------------------------------------------------------
# coefficients and presets
# ---------------------------------------------------------------------------------------------
def test_default_coefficients_are_the_design_numbers():
    c = CostCoefficients()
    assert c.hidden == 4096 and c.granularity == 64 and c.padded is False
    assert (c.prefill_cost_quad, c.prefill_cost_lin) == (2.0, 1.0)
    assert (c.prefill_ms_quad, c.prefill_ms_lin) == (0.002, 0.0015)
    assert (c.decode_cost_quad, c.decode_cost_lin) == (1.0, 0.5)
    assert (c.decode_ms_quad, c.decode_ms_lin) == (0.0012, 0.0006)
    assert (c.batch_cost, c.batch_ms) == (1e7, 8.0)
    assert (c.compile_cost_quad, c.compile_cost_lin, c.compile_ms) == (500.0, 2.0, 1500.0)


def test_presets_differ_only_in_padded():
    assert set(PRESETS) == {"static-graph", "padded-graph"}
    static = PRESETS["static-graph"]
    padded = PRESETS["padded-graph"]
    assert static.padded is False and padded.padded is True
    assert dataclasses.replace(padded, padded=False) == static


def test_coefficients_are_frozen_and_normalized():
    c = CostCoefficients(batch_ms=8, hidden=np.int64(1024))
    assert isinstance(c.batch_ms, float) and c.batch_ms == 8.0
    assert type(c.hidden) is int and c.hidden == 1024
    # one rule for whole numbers everywhere (batchlab.checks): 4096.0 is 4096, 4096.5 is not
    assert type(CostCoefficients(hidden=4096.0).hidden) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.batch_ms = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"prefill_cost_quad": -1.0}, "prefill_cost_quad"),
        ({"decode_ms_lin": float("nan")}, "decode_ms_lin"),
        ({"batch_cost": float("inf")}, "batch_cost"),
        ({"compile_ms": "1500"}, "compile_ms"),
        ({"batch_ms": True}, "batch_ms"),
        ({"hidden": 0}, "hidden"),
        ({"hidden": 4096.5}, "hidden"),
        ({"granularity": -64}, "granularity"),
        ({"granularity": True}, "granularity"),
        ({"padded": 1}, "padded"),
    ],
)
def test_bad_coefficients_raise_input_error_naming_the_field(changes, field):
    with pytest.raises(InputError) as info:
        CostCoefficients(**changes)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_get_cost_model_accepts_names_coefficients_and_models():
    static = get_cost_model("static-graph")
    assert static.name == "static-graph" and static.coefficients == PRESETS["static-graph"]
    padded = get_cost_model("padded-graph")
    assert padded.padded is True
    assert get_cost_model(static) is static
    custom = get_cost_model(CostCoefficients(batch_ms=1.0))
    assert custom.name == "custom" and custom.overhead_ms == 1.0
    # coefficients equal to a preset get the preset's name
    assert get_cost_model(CostCoefficients(padded=True)).name == "padded-graph"


def test_unknown_cost_model_name_lists_presets():
    with pytest.raises(ValueError) as info:
        get_cost_model("dynamic-graph")
    msg = str(info.value)
    assert "dynamic-graph" in msg and "static-graph" in msg and "padded-graph" in msg
    with pytest.raises(TypeError):
        get_cost_model(3)  # type: ignore[arg-type]


def test_with_coefficients_changes_validates_and_names():
    base = get_cost_model("static-graph")
    changed = base.with_coefficients(batch_ms=2.5, granularity=128)
    assert changed.overhead_ms == 2.5 and changed.granularity == 128
    assert changed.name == "custom"
    assert base.overhead_ms == 8.0  # original unchanged
    assert base.with_coefficients().name == "static-graph"
    assert base.with_coefficients(name="fast", batch_ms=1.0).name == "fast"
    with pytest.raises(ValueError, match="unknown coefficient"):
        base.with_coefficients(batch_overhead=1.0)
    with pytest.raises(InputError):
        base.with_coefficients(batch_ms=-1.0)


def test_properties():
    m = CostModel(CostCoefficients(batch_cost=3.0, batch_ms=4.0, compile_ms=5.0, hidden=7))
    assert (m.overhead_cost, m.overhead_ms, m.compile_ms, m.hidden) == (3.0, 4.0, 5.0, 7)
    assert m.granularity == 64 and m.padded is False and m.name == "custom"
    with pytest.raises(TypeError):
        CostModel(coefficients={"batch_ms": 1.0})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# formulas, known answers
# ---------------------------------------------------------------------------------------------
def test_prefill_known_answer():
    m = get_cost_model("static-graph")
    # S = 128: cost 2*128^2 + 1*4096*128 = 32,768 + 524,288 = 557,056
    assert m.prefill_cost(128) == pytest.approx(557_056.0, rel=1e-15)
    # ms: 0.002*16,384 + 0.0015*4096*128 = 32.768 + 786.432 = 819.2
    assert m.prefill_ms(128) == pytest.approx(819.2, rel=1e-12)
    # S = 64: cost 2*4096 + 4096*64 = 8,192 + 262,144 = 270,336; ms 8.192 + 393.216 = 401.408
    np.testing.assert_allclose(m.prefill_cost([128, 64]), [557_056.0, 270_336.0], rtol=1e-15)
    np.testing.assert_allclose(m.prefill_ms([128, 64]), [819.2, 401.408], rtol=1e-12)


def test_decode_known_answer():
    m = get_cost_model("static-graph")
    # S_max = 128, G_max = 5: contexts 128..132
    # sum x = 128+129+130+131+132 = 650
    # sum x^2 = 16,384 + 16,641 + 16,900 + 17,161 + 17,424 = 84,510
    # cost = 1.0*84,510 + 0.5*4096*650 = 84,510 + 1,331,200 = 1,415,710
    # ms = 0.0012*84,510 + 0.0006*4096*650 = 101.412 + 1,597.44 = 1,698.852
    assert m.decode_cost(128, 5) == pytest.approx(1_415_710.0, rel=1e-15)
    assert m.decode_ms(128, 5) == pytest.approx(1_698.852, rel=1e-12)
    # one step is a single term at S: 128^2 + 0.5*4096*128 = 16,384 + 262,144 = 278,528
    assert m.decode_cost(128, 1) == pytest.approx(278_528.0, rel=1e-15)
    # zero steps cost nothing
    assert m.decode_cost(128, 0) == 0.0 and m.decode_ms(64, 0) == 0.0


def test_compile_known_answer():
    m = get_cost_model("static-graph")
    # s = 128: 500*16,384 + 2*4096*128 = 8,192,000 + 1,048,576 = 9,240,576
    assert m.compile_cost(128) == pytest.approx(9_240_576.0, rel=1e-15)
    np.testing.assert_allclose(m.compile_cost([64, 128]), [2_572_288.0, 9_240_576.0])
    # s = 64: 500*4096 + 2*4096*64 = 2,048,000 + 524,288 = 2,572,288


def test_vectorized_broadcasting_and_dtype():
    m = get_cost_model("static-graph")
    S = np.array([64, 128, 256], dtype=np.int32)
    G = np.array([[1], [10]], dtype=np.int32)
    out = m.decode_cost(S, G)
    assert out.shape == (2, 3) and out.dtype == np.float64
    for i, g in enumerate([1, 10]):
        for j, s in enumerate([64, 128, 256]):
            lin, quad = exact_sums(s, g)
            assert out[i, j] == pytest.approx(quad + 0.5 * 4096 * lin, rel=1e-14)
    assert m.prefill_ms(S).dtype == np.float64
    with pytest.raises(InputError):
        m.prefill_cost([-1])
    with pytest.raises(InputError):
        m.decode_ms([64], [float("nan")])


def test_long_lengths_do_not_overflow():
    # 131,072-token context (int32 input: squaring in int32 would overflow) and 100,000 steps
    m = get_cost_model("static-graph")
    S = np.array([131_072], dtype=np.int32)
    G = np.array([100_000], dtype=np.int32)
    lin, quad = exact_sums(131_072, 100_000)
    assert m.decode_cost(S, G)[0] == pytest.approx(quad + 0.5 * 4096 * lin, rel=1e-13)
    assert m.decode_ms(S, G)[0] == pytest.approx(0.0012 * quad + 0.0006 * 4096 * lin, rel=1e-13)
    assert m.prefill_cost(S)[0] == 2.0 * 131_072**2 + 4096 * 131_072
    assert m.compile_cost(S)[0] == 500.0 * 131_072**2 + 2.0 * 4096 * 131_072


@settings(max_examples=60, deadline=None)
@given(
    S=st.integers(0, 300_000),
    G=st.integers(0, 600),
    q=st.one_of(st.just(0.0), st.floats(1e-6, 1e3)),
    lin=st.one_of(st.just(0.0), st.floats(1e-6, 1e3)),
    hidden=st.integers(1, 16384),
)
def test_decode_closed_form_equals_literal_sum(S, G, q, lin, hidden):
    m = CostModel(CostCoefficients(decode_cost_quad=q, decode_cost_lin=lin, hidden=hidden))
    literal = math.fsum(q * (S + t) ** 2 + lin * hidden * (S + t) for t in range(G))
    got = float(m.decode_cost(S, G))
    assert math.isclose(got, literal, rel_tol=1e-12, abs_tol=0.0)


# ---------------------------------------------------------------------------------------------
# CostBreakdown
# ---------------------------------------------------------------------------------------------
def test_cost_breakdown_total_and_dict():
    b = CostBreakdown(overhead=1.0, compile=2.0, prefill=3.5, decode=4.0)
    assert b.total == 10.5
    assert b.as_dict() == {
        "overhead": 1.0,
        "compile": 2.0,
        "prefill": 3.5,
        "decode": 4.0,
        "total": 10.5,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.decode = 0.0  # type: ignore[misc]
