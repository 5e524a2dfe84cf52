"""Batch-priced cost models (a batch's decode priced as a whole): the lines of
:mod:`batchlab.batch_priced` lie below every batch size, and the planner's bounds on such a model
are below the optimum found by enumerating every set partition of tiny instances."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from builders import limits_between, request_table, tiny_requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner_exact import meets, partitions

from batchlab import batch_priced, planner
from batchlab.cost import StepTimeCostModel, hardware_cost_model
from batchlab.errors import LimitError
from batchlab.evaluate import evaluate
from batchlab.planner import Limits, lower_bounds, plan_requests
from batchlab.shapes import align
from batchlab.steptime import FittedStepTime

#: affine in the batch size (no masked-pair term): the cap model with lines is then exact
AFFINE = StepTimeCostModel.from_step_time(
    FittedStepTime(
        overhead_ms=3.0,
        dense_ms_per_token=0.05,
        attention_ms_per_kv_token=0.002,
        lm_head_ms_per_row=0.03,
    ),
    name="affine",
    overhead_ms=1.0,
    granularity=16,
)
#: convex in the batch size (masked pairs: every query against the step's whole KV)
CONVEX = StepTimeCostModel.from_step_time(
    FittedStepTime(
        overhead_ms=3.0,
        dense_ms_per_token=0.05,
        attention_ms_per_kv_token=0.002,
        lm_head_ms_per_row=0.03,
        attention_ms_per_masked_pair=2e-5,
    ),
    name="convex",
    overhead_ms=1.0,
    granularity=16,
)
ROOFLINE = hardware_cost_model("llama-3-8b@h100-sxm", granularity=16)
MODELS = {"affine": AFFINE, "convex": CONVEX, "roofline": ROOFLINE}
#: prefill and decode at the declared shape (shapes chosen under a cap)
PADDED = {
    "roofline:padded": hardware_cost_model("llama-3-8b@h100-sxm:ideal:padded", granularity=16),
    "convex:padded": CONVEX.with_coefficients(padded=True),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("bmax", [1, 7, 64, 1500])
def test_lines_lie_below_the_decode_at_every_batch_size(name, bmax):
    cm = MODELS[name]
    rng = np.random.default_rng(bmax)
    s = rng.integers(1, 64, size=12) * 16
    g = rng.integers(1, 600, size=12)
    cost, ms = batch_priced.batch_lines(cm, s, g, bmax)
    sizes = np.arange(1, bmax + 1)
    d_ms = cm.batch_decode_ms_by_size(s, g, sizes)  # (B, caps)
    d_cost = np.stack([cm.batch_decode_cost(s, g, b) for b in sizes])
    for lines, d in ((cost, d_cost), (ms, d_ms)):
        under = lines.alpha[None] + lines.beta[None] * sizes[:, None, None]
        assert (under <= d[:, :, None] * (1 + 1e-12) + 1e-12).all()
        assert (lines.share <= (d / sizes[:, None]).min(axis=0) * (1 + 1e-12)).all()
    # where the decode is affine in B (and every size is evaluated) the envelope is the decode
    if name == "affine" and bmax <= batch_priced.EXACT_SIZES:
        env = (ms.alpha[None] + ms.beta[None] * sizes[:, None, None]).max(axis=-1)
        np.testing.assert_allclose(env, d_ms, rtol=1e-6)


def test_batch_decode_ms_by_size_matches_one_size_at_a_time():
    s = np.array([16, 64, 256, 1024])
    g = np.array([1, 5, 300, 64])
    table = ROOFLINE.batch_decode_ms_by_size(s, g, [1, 3, 64])
    for k, b in enumerate([1, 3, 64]):
        np.testing.assert_allclose(table[k], ROOFLINE.batch_decode_ms(s, g, b), rtol=1e-12)


def enumerated(df, cm, max_shapes=1):
    """Every plan of ``df`` as evaluation summaries with their largest batch: every set
    partition; static shapes: one per plan, the longest aligned prompt; padded: every choice of
    declared shapes (aligned lengths >= each batch's longest, at most ``max_shapes``)."""
    ids = list(df["request_id"])
    aligned = dict(zip(ids, align(df["prompt_len"].to_numpy(), cm.granularity), strict=True))
    values = sorted(set(int(v) for v in aligned.values()))
    out = []
    for part in partitions(ids):
        if cm.padded:
            options = [[v for v in values if v >= max(aligned[r] for r in b)] for b in part]
        else:
            options = [[values[-1]] for _ in part]
        for shapes in itertools.product(*options):
            if len(set(shapes)) > max_shapes:
                continue
            rows = [
                {"request_id": r, "batch_id": f"b{k:03d}", "seq_align": int(shapes[k])}
                for k, batch in enumerate(part)
                for r in batch
            ]
            ev = evaluate(df, pd.DataFrame(rows), cm)
            summary = ev.summary()
            summary["largest"] = max(len(b) for b in part)
            summary["decode"] = ev.cost.decode
            out.append(summary)
    return out


# the fast tier enumerates up to 5 requests (52 partitions), the slow one up to 6 (203)
@pytest.mark.parametrize("most", [5, pytest.param(6, marks=pytest.mark.slow)])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(MODELS)), data=st.data())
def test_bounds_never_exceed_the_enumerated_optimum(most, name, data):
    df = data.draw(tiny_requests(most, 200, 300), label="df")
    cm = MODELS[name]
    mbs = data.draw(st.one_of(st.none(), st.integers(1, 4)))
    everything = enumerated(df, cm)
    plans = [s for s in everything if mbs is None or s["largest"] <= mbs]
    lim = limits_between(data.draw, plans, mbs)
    feasible = [s for s in plans if meets(s, lim)]
    floors = lower_bounds(df, cm, max_batch_size=mbs)
    assert floors.min_cost <= min(s["total_cost"] for s in plans) * (1 + 1e-9)
    decode_floor = batch_priced.decode_cost_floor(
        cm, align(df["prompt_len"].to_numpy(), cm.granularity), df["gen_len"], mbs or len(df)
    )
    assert decode_floor <= min(s["decode"] for s in plans) * (1 + 1e-9)
    if not feasible:
        with pytest.raises(LimitError):
            plan_requests(df, cm, 1, lim, progress=False)
        return
    optimum = min(s["total_cost"] for s in feasible)
    line_priced = data.draw(st.booleans())  # column generation on one line per cap
    with pytest.MonkeyPatch.context() as mp:
        if line_priced:
            mp.setattr(planner, "_BATCH_PRICED_COLGEN_LIMIT", 0)
        res = plan_requests(df, cm, 1, lim, progress=False)
    bp = res.buckets[0]
    assert bp.lower_bound <= optimum * (1 + 1e-9)
    assert res.lower_bound <= optimum * (1 + 1e-9)
    assert not lim.violations(bp.evaluation.summary())
    assert bp.evaluation.cost.total >= optimum * (1 - 1e-9)
    if name == "affine" and lim.max_p95_latency_ms is None:
        # lines are exact for cost and sequential time: the exact model is the problem itself
        assert bp.settings["exact_status"] == "optimal"
        assert bp.evaluation.cost.total == pytest.approx(optimum, rel=1e-6)
        assert bp.optimality_gap <= 1e-6


@pytest.mark.parametrize("mbs", [pytest.param(None, marks=pytest.mark.slow), 16])
def test_lower_bounds_on_a_gpu_model_beat_the_member_floor(mbs):
    rng = np.random.default_rng(3)
    df = request_table(rng.integers(16, 2000, 300), rng.integers(1, 500, 300))
    cm = hardware_cost_model("llama-3-8b@h100-sxm")
    s = align(df["prompt_len"].to_numpy(), cm.granularity)
    member_floor = float(cm.decode_cost(s, df["gen_len"].to_numpy()).sum())
    floor = batch_priced.decode_cost_floor(cm, s, df["gen_len"].to_numpy(), mbs or len(df))
    assert floor > member_floor * (1.5 if mbs else 1.0)
    plan = plan_requests(df, cm, 4, Limits(max_batch_size=mbs), progress=False)
    assert plan.buckets[0].lower_bound <= plan.buckets[0].evaluation.cost.total
    assert lower_bounds(df, cm, max_batch_size=mbs).min_cost <= plan.total_cost


# every partition and every shape choice: the fast tier up to 4 requests, the slow one up to 5
@pytest.mark.parametrize("most", [4, pytest.param(5, marks=pytest.mark.slow)])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(PADDED)), cap=st.integers(1, 2), data=st.data())
def test_padded_bounds_never_exceed_the_enumerated_optimum(most, name, cap, data):
    df = data.draw(tiny_requests(most, 200, 300), label="df")
    cm = PADDED[name]
    mbs = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    plans = [s for s in enumerated(df, cm, cap) if mbs is None or s["largest"] <= mbs]
    lim = limits_between(data.draw, plans, mbs)
    feasible = [s for s in plans if meets(s, lim)]
    if not feasible:
        with pytest.raises(LimitError):
            plan_requests(df, cm, cap, lim, progress=False)
        return
    optimum = min(s["total_cost"] for s in feasible)
    res = plan_requests(df, cm, cap, lim, progress=False)
    bp = res.buckets[0]
    assert bp.lower_bound <= optimum * (1 + 1e-9)
    assert res.lower_bound <= optimum * (1 + 1e-9)
    assert not lim.violations(bp.evaluation.summary())
    assert bp.evaluation.cost.total >= optimum * (1 - 1e-9)
