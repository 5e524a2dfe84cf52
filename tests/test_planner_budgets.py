"""The planner's budgets are work, not time: the same inputs give the same plan on a fast or a
slow machine whenever the time limit (a hard cap) does not bind.

A slow machine is simulated by a clock that runs several times faster than the real one (every
deadline of the planner comes that much sooner in real work). Before the budgets were work, the
quick merge's deadline, each bucket's share of column generation and the exact model's "time
left" rule all moved with that clock, and so did the plans.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from builders import request_table, wide_length_bucket

from batchlab.cost import get_cost_model
from batchlab.errors import LimitError
from batchlab.planner import Limits, plan_requests
from batchlab.workload import lognormal_workload

STATIC = get_cost_model("static-graph")
PADDED = get_cost_model("padded-graph")


def fast_clock(monkeypatch, factor: float) -> None:
    """time.perf_counter() runs ``factor`` times faster from now on (a machine that much slower,
    as the planner's deadlines see it)."""
    real = time.perf_counter
    t0 = real()
    monkeypatch.setattr(time, "perf_counter", lambda: t0 + factor * (real() - t0))


def same_plan(a, b) -> None:
    assert a.total_cost == b.total_cost
    assert a.lower_bound == b.lower_bound
    for pa, pb in zip(a.buckets, b.buckets, strict=True):
        cols = ["request_id", "batch_id", "seq_align"]
        assert pa.plan[cols].equals(pb.plan[cols])
        assert pa.lower_bound == pb.lower_bound


def two_static_buckets():
    a = lognormal_workload(150, seed=21, prompt_median=600, gen_median=80, id_prefix="a")
    b = lognormal_workload(150, seed=22, prompt_median=2000, gen_median=40, id_prefix="b")
    buckets = {"a": a, "b": b}
    free = plan_requests(buckets, STATIC, 8, progress=False)
    limits = {
        name: Limits(
            max_sequential_ms=0.6 * free[name].evaluation.sequential_ms,
            max_p95_latency_ms=1.05 * free[name].evaluation.p95_latency_ms,
            max_batch_size=24,
        )
        for name in buckets
    }
    return buckets, limits


def test_static_plan_is_the_same_with_any_time_limit_and_on_a_slow_machine(monkeypatch):
    """Two buckets under binding sequential and p95 limits (merge, column generation and its
    MILPs all run): the default limit, a 20x larger one and a machine 5x slower (whose 10 s
    are 2 real seconds) give the same plan and bound."""
    buckets, limits = two_static_buckets()
    default = plan_requests(buckets, STATIC, 8, limits, progress=False)
    assert {bp.settings["colgen_status"] for bp in default.buckets} != {"not run"}
    roomy = plan_requests(buckets, STATIC, 8, limits, time_limit_s=200.0, progress=False)
    same_plan(default, roomy)
    t0 = time.perf_counter()
    fast_clock(monkeypatch, 5.0)
    slow = plan_requests(buckets, STATIC, 8, limits, progress=False)
    monkeypatch.undo()
    if time.perf_counter() - t0 < 10.0 / 5.0:  # the hard cap did not bind
        same_plan(default, slow)


def small_padded():
    df = lognormal_workload(20, seed=105, prompt_median=150, gen_median=30, id_prefix="p")
    free = plan_requests(df, PADDED, 3, progress=False)
    lim = Limits(max_sequential_ms=0.9 * free.buckets[0].evaluation.sequential_ms, max_batch_size=5)
    return df, lim


@pytest.mark.slow
def test_padded_exact_plan_is_the_same_on_a_slow_machine_and_proved(monkeypatch):
    """A small padded-graph bucket with a binding sequential limit goes to the exact model:
    it proves its optimum (status "optimal", gap 0: it stops because it is done, not because
    a budget ran out), and a machine 4x slower gets the same plan."""
    df, lim = small_padded()
    default = plan_requests(df, PADDED, 3, lim, progress=False)
    bp = default.buckets[0]
    assert bp.settings["exact_status"] == "optimal"
    assert bp.optimality_gap <= 1e-3
    t0 = time.perf_counter()
    fast_clock(monkeypatch, 4.0)
    slow = plan_requests(df, PADDED, 3, lim, progress=False)
    monkeypatch.undo()
    if time.perf_counter() - t0 < 10.0 / 4.0:
        same_plan(default, slow)


@pytest.mark.slow
def test_the_30_request_padded_instance_proves_its_optimum():
    """bench_quality's "padded 1 bucket cap 3, seq+mbs" instance: its exact model used to stop
    at the 10 s limit with a 3-7 % printed gap on an optimal plan (how far it got depended on
    the machine's load); without spike variables no limit needs, it proves the optimum."""
    df = lognormal_workload(30, seed=105, prompt_median=150, gen_median=30, id_prefix="p")
    free = plan_requests(df, PADDED, 3, progress=False)
    lim = Limits(max_sequential_ms=0.9 * free.buckets[0].evaluation.sequential_ms, max_batch_size=5)
    res = plan_requests(df, PADDED, 3, lim, time_limit_s=120.0, progress=False)
    bp = res.buckets[0]
    assert bp.settings["exact_status"] == "optimal"
    assert bp.optimality_gap <= 1e-3
    again = plan_requests(df, PADDED, 3, lim, progress=False)
    same_plan(res, again)


@pytest.mark.slow
def test_work_limit_stops_highs_at_the_same_point():
    """limit_work: HiGHS's MIP stopped after a number of its progress checks ends at the same
    incumbent and bound every time (its path does not depend on the clock), and its bound
    stays below the optimum."""
    from batchlab.exact import BucketSpec, cap_problem, solve_exact
    from batchlab.shapes import align

    rng = np.random.default_rng(7)
    n = 24
    df = request_table(
        np.clip(rng.lognormal(np.log(300), 0.7, n), 1, 4000).astype(int),
        np.clip(rng.lognormal(np.log(60), 0.8, n), 1, 500).astype(int),
    )
    p, g = df["prompt_len"].to_numpy(), df["gen_len"].to_numpy()
    a = align(p, PADDED.granularity)
    problem, _ = cap_problem(PADDED, a, g, p, np.unique(a))
    spec = BucketSpec(
        problem=problem,
        max_batch_size=4,
        max_cost=None,
        max_pad_ratio=None,
        max_p95_latency_ms=1.3
        * float(np.quantile(PADDED.prefill_ms(a) + PADDED.decode_ms(a, g), 0.95)),
        max_sequential_ms=None,
        prompt_sum=int(p.sum()),
        gen_sum=int(g.sum()),
        align_pad=int((a - p).sum()),
        compile_cost=0.0,
    )
    runs = [solve_exact([spec], 3, 60.0, rel_gap=1e-9, work_limit=10) for _ in range(2)]
    assert runs[0].status == runs[1].status == "work_limit"
    assert runs[0].objective == runs[1].objective
    assert runs[0].bound == runs[1].bound
    full = solve_exact([spec], 3, 60.0, rel_gap=1e-9)
    assert full.status == "optimal"
    assert runs[0].bound <= full.objective * (1 + 1e-9)
    assert full.bound <= full.objective * (1 + 1e-9)


@pytest.mark.slow
def test_always_leaves_a_model_too_large_for_its_time_limit_to_column_generation():
    """exact="always" on a wide-length bucket whose exact model HiGHS cannot even set up within
    the time limit (80 requests of up to 32k-token prompts: 160,868 columns, 41 s of set-up
    under a 5 s limit before exact_size_limit): it warns, says so in the settings, and returns
    column generation's plan with its certified bound, as "auto" does."""
    from batchlab.planner import MAX_EXACT_SIZE, exact_size_limit

    assert exact_size_limit(10.0) == 37_947
    assert exact_size_limit(0.0) == 0
    assert exact_size_limit(86_400.0) == MAX_EXACT_SIZE
    df = lognormal_workload(
        80, seed=0, prompt_median=2048, prompt_sigma=1.2, gen_median=512, gen_sigma=1.2,
        max_prompt_len=32768, max_gen_len=8192,
    )  # fmt: skip
    free = plan_requests(df, STATIC, limits=Limits(max_batch_size=7), progress=False)
    seq = free.buckets[0].evaluation.sequential_ms
    limits = Limits(max_batch_size=7, max_sequential_ms=0.6 * seq)
    with pytest.warns(UserWarning, match=r"model has 1\d\d,\d{3} .*more than the 26,832"):
        got = plan_requests(
            df, STATIC, limits=limits, exact="always", time_limit_s=5.0, progress=False
        )
    auto = plan_requests(df, STATIC, limits=limits, time_limit_s=5.0, progress=False)
    assert got.buckets[0].settings["exact_status"] == "too large"
    assert got.total_cost == auto.total_cost and got.lower_bound == auto.lower_bound
    assert 0 < got.lower_bound <= got.total_cost


def test_past_the_time_limit_column_generation_does_not_start(monkeypatch):
    # a clock a million times fast: every deadline has passed once the cap heuristic's first
    # runs are done. Column generation (its set-up alone took 1.2 s on 3,000 requests) does not
    # start, and the plan and its bound are still valid
    df, lim = wide_length_bucket(300, 0.9)
    fast_clock(monkeypatch, 1e6)
    res = plan_requests(df, "static-graph", limits=lim, progress=False)
    settings = res.buckets[0].settings
    assert settings["colgen_status"] == "no time"
    assert settings["method"] == "merge"
    assert not lim.violations(res.buckets[0].evaluation.summary())
    assert res.lower_bound <= res.total_cost


def test_a_limit_not_met_when_the_time_limit_cut_the_search_says_so(monkeypatch):
    # the first plans of the cap heuristic do not meet this sequential limit; the whole search
    # does (a plan within 0.1 % of its bound), so "cannot be met" would be false
    df, lim = wide_length_bucket(300, 0.8)
    full = plan_requests(df, "static-graph", limits=lim, progress=False)
    assert not lim.violations(full.buckets[0].evaluation.summary())
    fast_clock(monkeypatch, 1e6)
    with pytest.raises(LimitError, match=r"within time_limit_s = 10 s .*a larger time_limit_s"):
        plan_requests(df, "static-graph", limits=lim, progress=False)


def test_a_dual_ascent_cut_by_its_deadline_is_dual_feasible_and_below_the_whole_one():
    from batchlab.exact import cap_problem, dual_ascent_values
    from batchlab.shapes import align

    # 400 types (20 prompt lengths x 20 gen_lens): the deadline is checked every 256 types
    p, g = (a.ravel() for a in np.meshgrid(np.arange(1, 21) * 512, np.arange(1, 21) * 97))
    problem, _ = cap_problem(STATIC, align(p, STATIC.granularity), g, p)
    mu = 50.0
    whole, _ = dual_ascent_values(problem, mu, passes=1)
    cut, _ = dual_ascent_values(problem, mu, passes=1, deadline=0.0)
    assert (cut <= whole * (1 + 1e-12)).all() and (cut < whole * (1 - 1e-9)).any()
    # every cap's slack: a whole type's requests in one batch at any cap covering it pay no
    # more than its overhead + μ × its latency above the cap's own price
    ia, ig = problem.type_cap_index()
    ss, gg = np.meshgrid(problem.cap_s, problem.cap_g, indexing="ij")
    price = problem.price(ss, gg)
    room = STATIC.overhead_cost + mu * problem.batch_ms(ss, gg)
    for pi in (whole, cut):
        covered = (ia[:, None, None] <= np.arange(len(problem.cap_s))[None, :, None]) & (
            ig[:, None, None] <= np.arange(len(problem.cap_g))[None, None, :]
        )
        over = problem.type_count[:, None, None] * np.maximum(0.0, pi[:, None, None] - price)
        assert ((over * covered).sum(axis=0) <= room * (1 + 1e-9) + 1e-6).all()
