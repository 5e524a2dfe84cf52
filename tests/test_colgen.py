"""Column generation's pricing (batchlab.colgen): the reduced cost of every cap against a slow
per-cap reference, at random duals, on instances where max_batch_size binds."""

from __future__ import annotations

import numpy as np
import pytest
from builders import request_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab.colgen import CapColumnGeneration
from batchlab.cost import get_cost_model
from batchlab.exact import BucketSpec, cap_problem
from batchlab.shapes import align


def column_generation(df, cm, mbs, max_sequential_ms=None, max_pad_ratio=None, max_p95=None):
    aligned = align(df["prompt_len"].to_numpy(), cm.granularity)
    gen = df["gen_len"].to_numpy()
    problem, _ = cap_problem(cm, aligned, gen, df["prompt_len"].to_numpy())
    spec = BucketSpec(
        problem,
        mbs,
        None,
        max_pad_ratio,
        max_p95,
        max_sequential_ms,
        int(df["prompt_len"].sum()),
        int(gen.sum()),
        int((aligned - df["prompt_len"].to_numpy()).sum()),
        0.0,
    )
    return CapColumnGeneration(spec)


def repeated_requests(rng, n: int):
    """``n`` random (prompt, gen_len) pairs (up to 400 and 60 tokens), each one to three
    times: types with several requests."""
    df = request_table(rng.integers(1, 400, n), rng.integers(1, 60, n))
    df = df.iloc[np.repeat(np.arange(n), rng.integers(1, 4, n))].reset_index(drop=True)
    df["request_id"] = [f"r{i}" for i in range(len(df))]
    return df


def slow_reduced_costs(cg, y):
    """Every cap's reduced cost by brute force: each of its members' units sorted by value,
    the best max_batch_size positive ones taken."""
    fp, ap, pi, rho = cg._duals(y)
    nS, nG = ap.shape
    rc = np.empty((nS, nG))
    for i in range(nS):
        for j in range(nG):
            units = []
            for t in range(int(cg.level_n[i])):
                if cg.tj[t] <= j:
                    units += [pi[t] - ap[i, j]] * int(cg.m[t])
            units = sorted((u for u in units if u > 0), reverse=True)[: int(cg.mbs)]
            rc[i, j] = fp[i, j] - sum(units)
    return rc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 40),
    mbs=st.integers(1, 6),
    padded=st.booleans(),
    side=st.sampled_from(["none", "seq", "pad", "both"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_reduced_costs_equal_a_brute_force_pricing(n, mbs, padded, side, seed):
    rng = np.random.default_rng(seed)
    df = repeated_requests(rng, n)
    cm = get_cost_model("padded-graph" if padded else "static-graph")
    cg = column_generation(
        df,
        cm,
        mbs,
        max_sequential_ms=1e12 if side in ("seq", "both") else None,
        max_pad_ratio=0.5 if side in ("pad", "both") else None,
    )
    y = np.zeros(len(cg._rhs()))
    scale = float(cg.price.max())
    y[: cg.T] = rng.uniform(0, 2 * scale, cg.T) * (rng.random(cg.T) < 0.8)
    y[cg.T :] = -rng.uniform(0, 1e-3, len(y) - cg.T)
    rc, vmax = cg.price_caps(y)
    assert rc == pytest.approx(slow_reduced_costs(cg, y), rel=1e-9, abs=1e-6 * scale)
    # the bound from the sweep's exact ratios equals the one from the lazy per-cap ratios
    bound = cg.bound_at(y, rc, vmax)
    cg._last.ratio = None
    assert bound == pytest.approx(cg.bound_at(y, rc, vmax), rel=1e-9, abs=1e-6 * scale)


def test_wide_lengths_and_a_small_batch_cap_price_in_bounded_time():
    # 3,000 requests of prompts up to 32k tokens and gen_lens up to 8k with batches of at
    # most 7: before the per-G-cap top lists, one pricing took 13 s (a (types x caps) matrix
    # per level); the planner then ran 27 s past a 10 s limit
    rng = np.random.default_rng(1)
    df = request_table(rng.integers(1, 32000, 3000), rng.integers(1, 8000, 3000))
    cg = column_generation(df, get_cost_model("static-graph"), 7, max_sequential_ms=1e12)
    y = np.zeros(len(cg._rhs()))
    y[: cg.T] = float(cg.price.max())
    y[cg.side["seq"]] = -1e-3
    rc, _ = cg.price_caps(y)
    # a cap's best column holds at most 7 units: its value is at most 7 of the largest duals
    fp, ap, pi, _ = cg._duals(y)
    assert np.all(rc >= fp - 7 * np.maximum(pi.max() - ap, 0) - 1e-6 * abs(fp).max())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 30), mbs=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_past_the_deadline_pricing_and_bound_stay_below_the_exact_ones(n, mbs, seed):
    rng = np.random.default_rng(seed)
    df = repeated_requests(rng, n)
    cm = get_cost_model("static-graph")
    p95 = float(np.median(cm.prefill_ms(align(df["prompt_len"].to_numpy(), cm.granularity))))
    cg = column_generation(df, cm, mbs, max_sequential_ms=1e12, max_p95=p95 * 50)
    y = np.zeros(len(cg._rhs()))
    scale = float(cg.price.max())
    y[: cg.T] = rng.uniform(0, 2 * scale, cg.T)
    y[cg.T :] = -rng.uniform(0, scale, len(y) - cg.T)
    rc, vmax = cg.price_caps(y)
    bound = cg.bound_at(y, rc, vmax)
    cg.deadline = -np.inf  # already past: nothing is refined
    rc_late, vmax_late = cg.price_caps(y)
    assert np.all(rc_late <= rc + 1e-9 * scale)
    assert cg.bound_at(y, rc_late, vmax_late) <= bound + 1e-9 * abs(bound) + 1e-6
