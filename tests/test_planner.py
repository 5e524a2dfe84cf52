"""The planner: plans verify, respect limits and caps, beat the baseline, never beat the bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from builders import lognormal_requests, request_table, wide_length_bucket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab.cost import get_cost_model
from batchlab.errors import InputError, LimitError
from batchlab.evaluate import evaluate
from batchlab.plan import baseline_plan, verify, verify_plans
from batchlab.planner import Limits, _split_runs, lower_bounds, plan_requests, read_limits

STATIC = get_cost_model("static-graph")
PADDED = get_cost_model("padded-graph")


# --------------------------------------------------------------------------- known answers


def test_identical_requests_share_one_batch():
    # Four identical requests: one batch pays 1 overhead (1e7) instead of 4, and decode is the
    # same per request either way, so the cheapest plan is a single batch.
    df = request_table([100] * 4, [10] * 4)
    res = plan_requests(df, STATIC, 8)
    ev = res.buckets[0].evaluation
    assert ev.n_batches == 1
    assert res.shapes == (128,)


def test_very_different_requests_are_not_merged():
    # A 64-token prompt with 2 output tokens beside an 8,000-token prompt with 500 output
    # tokens: merging makes the small one pay the big one's decode (~1e11 cost units) to save
    # one 1e7 overhead, so they run apart.
    df = request_table([64, 8000], [2, 500])
    ev = plan_requests(df, STATIC, 8).buckets[0].evaluation
    assert ev.n_batches == 2


def test_lower_bounds_by_hand():
    # Two requests, prompt 100 and 30 (aligned 128 and 64), gen 3 and 5, g = 64, H = 4096.
    df = request_table([100, 30], [3, 5])
    b = lower_bounds(df, STATIC, max_batch_size=1)
    assert b.min_padding_tokens == (128 - 100) + (64 - 30)  # 62
    assert b.min_pad_ratio == pytest.approx(62 / (100 + 30 + 3 + 5))
    assert b.min_batches == 2

    def decode(s, g):  # Σ_t (s+t)² + 0.5·4096·(s+t), t = 0..g-1
        return sum((s + t) ** 2 + 0.5 * 4096 * (s + t) for t in range(g))

    def decode_ms(s, g):
        return sum(0.0012 * (s + t) ** 2 + 0.0006 * 4096 * (s + t) for t in range(g))

    prefill = [2 * s * s + 4096 * s for s in (128, 64)]
    cost = prefill[0] + prefill[1] + decode(128, 3) + decode(64, 5) + 2 * 1e7
    cost += 500 * 128**2 + 2 * 4096 * 128  # one compile of the 128 shape
    assert b.min_cost == pytest.approx(cost)
    alone = sorted(
        [0.002 * s * s + 0.0015 * 4096 * s + decode_ms(s, g) + 8 for s, g in ((128, 3), (64, 5))]
    )
    assert b.min_p95_latency_ms == pytest.approx(alone[1])  # ceil(0.95·2) = 2nd smallest
    # batches of at most 1 request: every request is its own batch
    assert b.min_sequential_ms == pytest.approx(sum(alone))
    assert lower_bounds(df, STATIC).min_sequential_ms == pytest.approx(alone[1])


def brute_force_split(s, g, c, lam, mbs):
    """The least Σ(cost + λ·latency) over every contiguous split of the runs, by enumeration."""
    r = len(s)

    def seg_obj(a, b):
        sm, gm, n = s[a:b].max(), g[a:b].max(), c[a:b].sum()
        if n > mbs:
            return math.inf
        cost = STATIC.overhead_cost + n * float(STATIC.decode_cost(sm, gm))
        lat = float(STATIC.prefill_ms(sm) + STATIC.decode_ms(sm, gm)) + STATIC.overhead_ms
        return cost + lam * lat

    def total(starts):
        return sum(seg_obj(a, b) for a, b in itertools.pairwise([*starts, r]))

    best = min(total([0, *cut]) for k in range(r) for cut in itertools.combinations(range(1, r), k))
    return best, total


def test_split_runs_matches_brute_force_over_compositions():
    rng = np.random.default_rng(3)
    for _ in range(30):
        r = int(rng.integers(1, 7))
        s = np.sort(rng.choice([64, 128, 256, 512], r))
        g = rng.integers(1, 60, r)
        c = rng.integers(1, 4, r)
        lam = float(rng.choice([0.0, 1e3, 1e7]))
        mbs = int(rng.integers(3, 8))
        best, total = brute_force_split(s, g, c, lam, mbs)
        starts = _split_runs(s, g, c, STATIC, lam, mbs, None, window=r)
        assert total(starts) == pytest.approx(best, rel=1e-12)


# ------------------------------------------------------------------------------ properties


@st.composite
def buckets(draw):
    n_buckets = draw(st.integers(1, 2))
    out = {}
    for b in range(n_buckets):
        n = draw(st.integers(1, 25))
        p = draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))
        g = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
        out[f"b{b}"] = request_table(p, g, prefix=f"b{b}-")
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=buckets(),
    cap=st.integers(1, 4),
    mbs=st.one_of(st.none(), st.integers(1, 6)),
    padded=st.booleans(),
)
def test_plans_verify_respect_caps_and_never_beat_the_bounds(data, cap, mbs, padded):
    cm = PADDED if padded else STATIC
    # the properties hold for any plan the planner returns, whatever its time budget
    res = plan_requests(data, cm, cap, Limits(max_batch_size=mbs), time_limit_s=0.3)
    names = list(data)
    report = verify_plans([data[n] for n in names], [res[n].plan for n in names], max_shapes=cap)
    assert report.ok, report.violations
    assert len(res.shapes) <= cap
    for name in names:
        bp = res[name]
        plan = bp.plan
        # every request exactly once
        assert sorted(plan["request_id"]) == sorted(data[name]["request_id"])
        if mbs is not None:
            assert plan.groupby("batch_id").size().max() <= mbs
        ev = evaluate(data[name], plan, cm)
        assert ev.summary() == bp.evaluation.summary()
        b = bp.bounds
        tol = 1 + 1e-9
        assert ev.cost.total * tol >= b.min_cost
        assert ev.p95_latency_ms * tol >= b.min_p95_latency_ms
        assert ev.sequential_ms * tol >= b.min_sequential_ms
        assert ev.pad_ratio * tol >= b.min_pad_ratio
        assert ev.n_batches >= b.min_batches


def test_planner_beats_the_baseline_on_generated_workloads():
    for seed, cm in [(1, STATIC), (2, PADDED)]:
        df = lognormal_requests(600, seed)
        res = plan_requests(df, cm, 8)
        base = evaluate(df, baseline_plan(df, k=8), cm)
        assert res.total_cost < 0.5 * base.cost.total


@pytest.mark.slow  # 8 s; the fast tier checks shared caps on small buckets
def test_shared_cap_across_buckets():
    a, b = (
        lognormal_requests(300, 5, prompt_median=300, prefix="a"),
        lognormal_requests(300, 6, prompt_median=3000, gen_median=40, prefix="b"),
    )
    res = plan_requests({"a": a, "b": b}, PADDED, 4)
    assert len(res.shapes) <= 4
    assert verify_plans([a, b], [res["a"].plan, res["b"].plan], max_shapes=4).ok
    # a larger cap can only help the padded-graph model
    assert plan_requests({"a": a, "b": b}, PADDED, 8).total_cost <= res.total_cost * (1 + 1e-9)


# ---------------------------------------------------------------------------------- limits


def test_sequential_limit_is_met_at_a_higher_cost():
    df = lognormal_requests(300, 7)
    free = plan_requests(df, STATIC, 8).buckets[0]
    bound = free.bounds.min_sequential_ms
    target = bound + 0.3 * (free.evaluation.sequential_ms - bound)
    tight = plan_requests(df, STATIC, 8, Limits(max_sequential_ms=target), time_limit_s=2.0)
    tight = tight.buckets[0]
    assert tight.evaluation.sequential_ms <= target
    assert tight.evaluation.cost.total >= free.evaluation.cost.total
    assert tight.settings["lagrange_multiplier"] > 0
    assert verify(df, tight.plan, 8).ok


def test_p95_limit_below_the_bound_names_the_limit_and_bucket():
    df = lognormal_requests(200, 8)
    bound = lower_bounds(df, STATIC).min_p95_latency_ms
    with pytest.raises(LimitError) as info:
        plan_requests({"chat": df}, STATIC, 8, {"chat": Limits(max_p95_latency_ms=bound * 0.5)})
    err = info.value
    assert err.limit == "max_p95_latency_ms"
    assert err.bucket == "chat"
    assert err.best_value >= bound * (1 - 1e-9)
    assert "chat" in str(err) and "max_p95_latency_ms" in str(err)
    # below a hard bound the message says that no plan can meet it, and names the bound
    assert f"no plan can reach below {bound:,.6g}" in str(err)


def test_cost_limit_below_the_bound_fails_with_the_best_cost():
    df = lognormal_requests(100, 9)
    free = plan_requests(df, STATIC, 8).buckets[0]
    with pytest.raises(LimitError) as info:
        plan_requests(df, STATIC, 8, Limits(max_cost=free.bounds.min_cost * 0.9))
    assert info.value.limit == "max_cost"
    assert info.value.best_value == pytest.approx(free.evaluation.cost.total)
    assert "no plan can reach below" in str(info.value)


def test_pad_ratio_limit_met_or_reported():
    df = lognormal_requests(300, 10)
    free = plan_requests(df, PADDED, 2).buckets[0]
    with pytest.raises(LimitError) as info:
        plan_requests(df, PADDED, 2, Limits(max_pad_ratio=free.bounds.min_pad_ratio * 0.5))
    assert info.value.limit == "max_pad_ratio"


def test_limits_validation_and_toml(tmp_path):
    with pytest.raises(InputError, match="max_batch_size"):
        Limits(max_batch_size=0)
    with pytest.raises(InputError, match="max_cost"):
        Limits(max_cost=-1.0)
    path = tmp_path / "limits.toml"
    path.write_text(
        "[chat]\nmax_pad_ratio = 0.3\nmax_batch_size = 16\n[docs]\nmax_p95_latency_ms = 5e3\n"
    )
    lims = read_limits(path)
    assert lims["chat"] == Limits(max_pad_ratio=0.3, max_batch_size=16)
    assert lims["docs"].max_p95_latency_ms == 5000.0
    path.write_text("[chat]\nmax_padding = 0.3\n")
    with pytest.raises(InputError, match="max_padding"):
        read_limits(path)
    path.write_text("[chat\n")
    with pytest.raises(InputError, match="TOML"):
        read_limits(path)


def test_unknown_bucket_in_limits_is_an_error():
    with pytest.raises(InputError, match="unknown bucket"):
        plan_requests({"a": request_table([10], [1])}, STATIC, 2, {"b": Limits()})


@pytest.mark.slow
def test_a_plan_batched_for_the_sequential_limit_alone_is_kept_when_it_meets_p95():
    # 3,000 requests of prompts up to 32k tokens and gen_lens up to 8k, batches <= 7: the plan
    # found for the sequential limit alone also meets a p95 limit just above its own p95, but
    # the search under both limits (its p95 budget is a heuristic) found no plan meeting them
    # and raised LimitError. The time limit binds on this bucket, so the two searches may end
    # on different plans (a loaded CI machine kept one 0.55 % above the other at 3 s): the
    # bounds must hold both ways, and the plan under both limits stay near the other one
    rng = np.random.default_rng(1)
    df = request_table(rng.integers(1, 32000, 3000), rng.integers(1, 8000, 3000))
    seq = Limits(max_sequential_ms=1.4e12, max_batch_size=7)
    kw = {"progress": False, "exact": "never", "time_limit_s": 10}
    alone = plan_requests(df, "static-graph", 3, seq, **kw)
    p95 = alone.buckets[0].evaluation.p95_latency_ms
    both = Limits(max_p95_latency_ms=p95 * 1.0001, max_sequential_ms=1.4e12, max_batch_size=7)
    res = plan_requests(df, "static-graph", 3, both, **kw)
    assert not both.violations(res.buckets[0].evaluation.summary())
    # the plan for the sequential limit alone meets both: no valid bound under both is above it
    assert res.lower_bound <= alone.total_cost
    # a bound without the p95 limit holds with it
    assert alone.lower_bound <= res.total_cost
    assert res.total_cost <= alone.total_cost * 1.02


@pytest.mark.slow
def test_a_wide_length_bucket_of_3000_types_under_a_sequential_limit_is_certified_within_half_a_percent():
    # prompts up to 32k tokens, gen_lens up to 8k, batches <= 7: 2,959 distinct (aligned, gen)
    # types, more than the cap heuristic took (2,500); the contiguous search's plan was 5.4 %
    # above the bound, and column generation, seeded with no plan that met the limit, kept
    # its master infeasible and its bound at the unlimited optimum
    df, limits = wide_length_bucket(3000, 0.6)
    res = plan_requests(df, "static-graph", limits=limits, progress=False, time_limit_s=60)
    assert not limits.violations(res.buckets[0].evaluation.summary())
    assert 0 < res.lower_bound <= res.total_cost
    assert res.optimality_gap <= 0.005
    assert res.lower_bound >= lower_bounds(df, "static-graph", 7).min_cost * 1.03


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 600)), min_size=1, max_size=60),
    st.integers(1, 9),
    st.sampled_from([1, 2, 4, 16]),
)
def test_coarse_pieces_cover_every_request_once_under_caps_that_dominate_it(pairs, mbs, coarse):
    # the cap heuristic's pieces of a bucket with too many types: requests within `coarse`
    # consecutive distinct values, at most max_batch_size each, capped by their largest values
    from batchlab.planner import _Bucket, _lower_bounds, _make_pieces
    from batchlab.shapes import align

    p = np.asarray([a for a, _ in pairs])
    g = np.asarray([b for _, b in pairs])
    a = align(p, STATIC.granularity)
    b = _Bucket("b", request_table(p, g), p, g, a, Limits(), _lower_bounds(p, g, STATIC, mbs))
    pieces = _make_pieces(b, STATIC, a, mbs, coarse)
    assert sorted(pieces.req_order.tolist()) == list(range(len(p)))
    assert pieces.n.sum() == len(p) and pieces.n.max() <= mbs
    piece = np.repeat(np.arange(len(pieces.n)), pieces.n.astype(int))
    members = pieces.req_order
    assert (pieces.start == np.flatnonzero(np.r_[True, piece[1:] != piece[:-1]])).all()
    assert (pieces.s[piece] >= a[members]).all() and (pieces.g[piece] >= g[members]).all()
    # the caps are attained (tight), and coarse=1 pieces hold identical requests only
    assert np.isin(pieces.s, a).all() and np.isin(pieces.g, g).all()
    if coarse == 1:
        assert (pieces.s[piece] == a[members]).all() and (pieces.g[piece] == g[members]).all()
    else:  # never more pieces than with identical requests alone
        assert len(pieces.n) <= len(_make_pieces(b, STATIC, a, mbs).n)


@pytest.mark.slow
def test_a_wide_length_bucket_of_more_types_than_the_cap_heuristic_takes_is_merged_coarse():
    # 4,500 wide-length requests: 4,400 distinct types, more pieces than the cap heuristic
    # takes (4,000): it merges pieces of requests within 2 consecutive distinct lengths of each
    # other. The time limit binds here (with 60 s the contiguous search's seed alone gets column
    # generation there): at the default 10 s the gap is 0.21 %, at 5 s 0.26 %, and it was
    # 5.48 % with the contiguous search alone
    df, limits = wide_length_bucket(4500, 0.5)
    res = plan_requests(df, "static-graph", limits=limits, progress=False, time_limit_s=10)
    assert not limits.violations(res.buckets[0].evaluation.summary())
    assert 0 < res.lower_bound <= res.total_cost
    assert res.optimality_gap <= 0.01


@pytest.mark.slow
def test_padded_shape_sets_are_searched_with_their_batches_on_a_real_trace():
    """300 Azure code requests (prompts up to 7.4k tokens), padded-graph, batches of at most
    16: the per-request shape DP's best set planned 6.6 % above the bound; the local search over
    sets, scored with the batches, brings the certified gap under 1 %."""
    from batchlab import datasets

    try:
        df = datasets.load_trace("azure-code-2023", download=False, limit=300)
    except Exception as err:  # the trace is not available offline
        pytest.skip(f"azure-code-2023 not available: {err}")
    res = plan_requests(df.drop(columns=["arrival_s"]), PADDED, 8, Limits(max_batch_size=16))
    assert res.optimality_gap <= 0.01
    assert verify_plans([df], [res.buckets[0].plan], max_shapes=8).ok


def _azure_code(n: int) -> pd.DataFrame:
    from batchlab import datasets

    try:
        df = datasets.load_trace("azure-code-2023", download=False, limit=n)
    except Exception as err:  # the trace is not available offline
        pytest.skip(f"azure-code-2023 not available: {err}")
    return df.drop(columns=["arrival_s"])


@pytest.mark.parametrize(
    "n, share, gap",
    [
        pytest.param(60, 0.8, 0.001, marks=pytest.mark.slow),  # 0.74 % -> 0.05 %
        pytest.param(100, 0.6, 0.015, marks=pytest.mark.slow),  # 4.85 % -> 1.11 %
        pytest.param(60, None, 0.001, marks=pytest.mark.slow),  # 0.38 % -> 0.01 %
    ],
)
def test_padded_plans_under_a_sequential_limit_are_certified_by_the_shape_set_lp(n, share, gap):
    """Azure code requests, padded-graph, cap 8, batches of at most 16, a sequential limit of
    ``share`` x the free plan's: the LP over shape sets and batches (batchlab.shape_relaxation)
    certifies the plan within ``gap``; the shape-cap bound alone left 5-15x as much."""
    df = _azure_code(n)
    lim = Limits(max_batch_size=16)
    if share is not None:
        free = plan_requests(df, PADDED, 8, lim)
        seq = share * free.buckets[0].evaluation.sequential_ms
        lim = Limits(max_batch_size=16, max_sequential_ms=seq)
    # a time limit that its work budgets fit on a loaded machine (the LP's rounds: 3-6 s here)
    res = plan_requests(df, PADDED, 8, lim, time_limit_s=30.0)
    assert not lim.violations(res.buckets[0].evaluation.summary())
    assert res.buckets[0].settings["bound_method"] == "shape-lp"
    assert 0 < res.lower_bound <= res.total_cost
    assert res.optimality_gap <= gap


def test_a_small_padded_plan_under_a_sequential_limit_is_certified_without_the_exact_model():
    """40 lognormal requests, cap 4, a sequential limit of 0.7x the free plan's, exact="never":
    the shape-cap bound left a 4.05 % printed gap, the shape-set LP 0.79 %."""
    df = lognormal_requests(40, 2)
    free = plan_requests(df, PADDED, 4, exact="never")
    lim = Limits(max_sequential_ms=0.7 * free.buckets[0].evaluation.sequential_ms)
    res = plan_requests(df, PADDED, 4, lim, exact="never")
    assert not lim.violations(res.buckets[0].evaluation.summary())
    assert res.buckets[0].settings["bound_method"] == "shape-lp"
    assert 0 < res.lower_bound <= res.total_cost
    assert res.optimality_gap <= 0.012


def test_padded_buckets_sharing_a_cap_are_certified_with_each_buckets_compile():
    """Two lognormal buckets of 40 requests (prompt medians 300 and 600 tokens) sharing 6
    shapes, padded-graph, no limits: each bucket compiles the shapes it uses, and the shape-set
    LP with a compile per (bucket, shape) certifies the plan within 0.1 % (the shape-cap
    bounds: 2.50 % printed gap, with the exact model running its whole time limit)."""
    buckets = {
        f"b{i}": lognormal_requests(40, 10 + i, prompt_median=300 * (i + 1), prefix=f"b{i}-")
        for i in range(2)
    }
    res = plan_requests(buckets, PADDED, 6)
    assert len(res.shapes) <= 6
    assert 0 < res.lower_bound <= res.total_cost
    assert res.optimality_gap <= 0.001


def test_buckets_whose_limits_cannot_be_met_under_a_shared_cap_get_a_limit_error():
    """Two padded-graph buckets sharing 2 shapes, each with a limit that a plan of it alone
    meets at some shape set, but no set found serves both: a LimitError naming the bucket and
    the shared cap (it was a StopIteration traceback: the closest plan was one that met them)."""
    short = request_table(
        [136, 18, 62, 81, 85, 39, 46, 17, 72, 49, 25, 74, 96, 16, 40, 260, 33, 107],
        [3, 23, 3, 3, 16, 3, 8, 22, 39, 7, 50, 2, 6, 74, 9, 11, 21, 2],
    )
    long = request_table(
        [531, 837, 2357, 3642, 922, 624, 1501, 5414, 353, 2953, 1332, 2275, 2641, 1995, 752,
         1130, 749, 738],
        [5, 10, 29, 19, 22, 8, 67, 13, 6, 20, 6, 27, 5, 6, 4, 37, 1, 4],
    )  # fmt: skip
    limits = {
        "b0": Limits(max_pad_ratio=13.864911844364125, max_sequential_ms=1644485.782852773,
                     max_batch_size=4),
        "b1": Limits(max_sequential_ms=3466211.0813390957, max_batch_size=4),
    }  # fmt: skip
    try:
        res = plan_requests({"b0": short, "b1": long}, PADDED, 2, limits, exact="never")
    except LimitError as err:
        assert "bucket 'b" in str(err)
        if "alone this bucket" in str(err):
            assert "max_shapes = 2" in str(err)
    else:  # a plan that serves both: it must meet every limit
        for b in res.buckets:
            assert not limits[b.name].violations(b.evaluation.summary())


def test_shape_moves_are_valid_sets_one_step_away():
    from batchlab.planner import _shape_moves

    lengths = np.arange(64, 64 * 41, 64)
    shapes = np.array([256, 1024, 2560])
    moves = _shape_moves(shapes, lengths, cap=4)
    keys = {tuple(m.tolist()) for m in moves}
    assert len(keys) == len(moves) and tuple(shapes.tolist()) not in keys
    for m in moves:
        assert np.all(np.diff(m) > 0) and m[-1] == 2560 and 2 <= len(m) <= 4
        assert set(m.tolist()) <= set(lengths.tolist())
        # one shape moved, dropped or added
        assert len(np.setdiff1d(m, shapes)) + len(np.setdiff1d(shapes, m)) in (1, 2)
    assert (1024, 2560) in keys and (256, 2560) in keys  # each but the longest dropped
    assert (64, 1024, 2560) in keys and (960, 1024, 2560) in keys  # the ends of the first's range
    assert any(len(m) == 4 for m in moves)
    assert all(len(m) <= 3 for m in _shape_moves(shapes, lengths, cap=3))
