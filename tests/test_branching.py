"""Branch and price on caps (batchlab.branching): its bound is certified (never above the
enumerated optimum, never below the root's), its cap limits do what they say, and the planner
closes the LP's integrality gap on small wide-length buckets with it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from builders import tiny_requests, wide_length_bucket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner_exact import drawn_limits, meets

import batchlab.planner as planner_module
from batchlab.branching import branch_on_caps
from batchlab.colgen import CapColumnGeneration
from batchlab.cost import get_cost_model
from batchlab.exact import BucketSpec, cap_problem
from batchlab.planner import Limits, plan_requests
from batchlab.shapes import align

STATIC = get_cost_model("static-graph")
PADDED = get_cost_model("padded-graph")


def root_master(df, cm, lim: Limits):
    """One bucket's master under ``lim``, its LP solved. Under static-graph it pays the compile
    of the bucket's longest aligned prompt, the least any plan pays; under padded-graph no
    compile (the shape set is chosen outside), so its bounds are below every plan's cost."""
    prompt = df["prompt_len"].to_numpy()
    gen = df["gen_len"].to_numpy()
    aligned = align(prompt, cm.granularity)
    problem, _ = cap_problem(cm, aligned, gen, prompt)
    compile_cost = 0.0 if cm.padded else float(cm.compile_cost(int(aligned.max())))
    spec = BucketSpec(
        problem, lim.max_batch_size, None, lim.max_pad_ratio, lim.max_p95_latency_ms,
        lim.max_sequential_ms, int(prompt.sum()), int(gen.sum()), int((aligned - prompt).sum()),
        compile_cost,
    )  # fmt: skip
    cg = CapColumnGeneration(spec)
    return cg, cg.solve(time.perf_counter() + 60, stop_gap=0.0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=tiny_requests(5, 192, 40), padded=st.booleans(), data=st.data())
def test_the_branch_bound_is_never_above_the_enumerated_optimum(df, padded, data):
    # no known plan: the search runs until every leaf is whole at every cap or infeasible
    cm = PADDED if padded else STATIC
    plans, lim, _ = drawn_limits(data.draw, df, cm, len(df))
    lim = Limits(**{**lim.__dict__, "max_cost": None})  # the master's costs leave compile out
    cg, root = root_master(df, cm, lim)
    leaves = []
    br = branch_on_caps(
        cg, time.perf_counter() + 60, root_bound=root.bound, max_nodes=500,
        on_leaf=lambda: leaves.append(cg.cap_usage(cg.lp_solution())),
    )  # fmt: skip
    assert br.bound >= root.bound
    assert br.nodes >= 1 or root.status == "infeasible"
    # a leaf runs whole batches at every cap
    assert all(np.allclose(u, np.round(u), atol=1e-6) for u in leaves)
    if br.status == "integral":
        assert leaves
    feasible = [s for s in plans if meets(s, lim)]
    if feasible:
        optimum = min(s["total_cost"] for s in feasible)
        assert br.bound <= optimum * (1 + 1e-9)
        # given the optimum as the known plan, the search closes (or runs out of splits)
        known = branch_on_caps(
            cg, time.perf_counter() + 60, root_bound=root.bound, upper_bound=optimum,
            max_nodes=500,
        )  # fmt: skip
        assert known.status in ("closed", "integral")
        assert root.bound <= known.bound <= optimum * (1 + 1e-9)
    # the master comes back with its caps unlimited: its LP is the root's again
    again = cg.solve(time.perf_counter() + 60, stop_gap=0.0)
    assert again.lp_value == pytest.approx(root.lp_value, rel=1e-9, abs=1e-6)


def test_limiting_a_cap_forbids_or_forces_its_batches():
    df, lim = wide_length_bucket(30, 0.6)
    cg, root = root_master(df, STATIC, lim)
    usage = cg.cap_usage(cg.lp_solution())
    cap = tuple(int(v) for v in np.unravel_index(int(np.argmax(usage)), usage.shape))
    assert usage[cap] > 0.5
    cg.limit_caps({cap: (0, 0)})  # none at this cap
    none = cg.solve(time.perf_counter() + 60, stop_gap=0.0)
    assert cg.cap_usage(cg.lp_solution())[cap] <= 1e-9
    assert none.lp_value >= root.lp_value * (1 - 1e-9)
    need = math.floor(usage[cap]) + 2
    cg.limit_caps({cap: (need, None)})  # at least two more than the LP ran
    more = cg.solve(time.perf_counter() + 60, stop_gap=0.0)
    assert cg.cap_usage(cg.lp_solution())[cap] >= need - 1e-9
    assert more.lp_value >= root.lp_value * (1 - 1e-9)
    cg.limit_caps({})
    back = cg.solve(time.perf_counter() + 60, stop_gap=0.0)
    assert back.lp_value == pytest.approx(root.lp_value, rel=1e-9)


def test_a_small_wide_length_bucket_is_closed_by_branching():
    # 40 wide-length requests under a tight sequential limit: the LP bound is below the
    # optimum; branching proves the plan optimal within the target gap
    df, lim = wide_length_bucket(40, 0.6)
    res = plan_requests(df, "static-graph", limits=lim, progress=False)
    bp = res.buckets[0]
    assert bp.settings["branch_status"] == "closed"
    assert bp.settings["branch_nodes"] >= 2
    assert not lim.violations(bp.evaluation.summary())
    assert 0 < res.lower_bound <= res.total_cost
    assert res.optimality_gap <= 1e-3


@pytest.mark.slow
def test_branching_closes_most_of_the_gap_of_a_60_request_wide_length_bucket():
    # the LP relaxation is 8.1 % below the optimum here (1.3360e13, proved by the exact model
    # with exact="always" and time_limit_s=200), and the plan from its columns was 8.6 % above
    # it: 18 % printed gap. Branching raises the bound and its columns give a better plan.
    optimum = 1.3360e13
    df, lim = wide_length_bucket(60, 0.6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner_module, "_BRANCH_TYPES", 0)
        lp_only = plan_requests(df, "static-graph", limits=lim, progress=False)
    # 30 s: the node budget (200 nodes here), not the time, ends the search on this VM, and the
    # MILPs after it have time (at 10 s a loaded CI run kept the 1.45e13 plan once)
    res = plan_requests(df, "static-graph", limits=lim, progress=False, time_limit_s=30.0)
    assert res.buckets[0].settings["branch_nodes"] >= 10
    assert not lim.violations(res.buckets[0].evaluation.summary())
    assert lp_only.lower_bound < res.lower_bound <= optimum * (1 + 1e-4)
    # (on this 2-core VM: bound 0.985-0.987x the optimum, plan 1.003x, gap 1.7-1.9 %; the
    # margins are for a slower machine)
    assert res.lower_bound >= 0.975 * optimum
    assert res.total_cost <= 1.02 * optimum
    assert res.optimality_gap <= 0.04
    assert lp_only.optimality_gap >= 0.1
