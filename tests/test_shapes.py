"""Tests of batchlab.shapes: alignment, grids, optimal shapes, joint shapes, splits, bounds."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError
from batchlab.shapes import (
    GRID_FAMILIES,
    align,
    assign_shapes,
    gen_buckets,
    geometric_grid,
    joint_optimal_shapes,
    linear_grid,
    min_batches,
    min_padding_tokens,
    optimal_shapes,
    padding_budget,
    padding_tokens,
    per_bucket_optimal_shapes,
    power_of_two_grid,
    quantile_grid,
    shape_grid,
)

FAST = settings(max_examples=60, deadline=None)

lengths_st = st.lists(st.integers(1, 700), min_size=1, max_size=12)
gran_st = st.sampled_from([1, 8, 48, 64, 100])


# ------------------------------------------------------------------ slow, obvious references


def brute_set_cost(lengths, shapes, g, cost=None, weights=None):
    """Σ over requests of cost(smallest covering shape, aligned length); a per-request loop."""
    total = 0.0
    for i, n in enumerate(lengths):
        a = -(-n // g) * g
        s = min(x for x in shapes if x >= a)
        w = 1.0 if weights is None else weights[i]
        if cost is None:
            total += w * (s - n)
        else:
            total += w * float(cost(np.array([s]), np.array([a]))[0])
    return total


def brute_optimal(lengths, k, g, cost=None, weights=None, fixed_cost=None):
    """Best subset (containing the max) of the distinct aligned lengths of size <= k, with ties
    broken by fewer shapes, then the descending tuple of shapes (smallest first); ``fixed_cost``
    per shape of the subset."""
    values = sorted({-(-n // g) * g for n in lengths})
    top, rest = values[-1], values[:-1]
    best = None
    for size in range(0, min(k, len(values)) - 1 + 1):
        for combo in itertools.combinations(rest, size):
            shapes = (*combo, top)
            fixed = 0.0 if fixed_cost is None else sum(float(fixed_cost(x)) for x in shapes)
            key = (
                brute_set_cost(lengths, shapes, g, cost, weights) + fixed,
                len(shapes),
                tuple(sorted(shapes, reverse=True)),
            )
            if best is None or key < best:
                best = key
    return best


# ------------------------------------------------------------------ align and Shape


def test_align_by_hand():
    # ceil(x / 64) * 64: 1 -> 64, 64 -> 64, 65 -> 128, 131071 -> 131072, 131072 -> 131072
    got = align([1, 64, 65, 131_071, 131_072])
    assert got.tolist() == [64, 64, 128, 131_072, 131_072]
    assert got.dtype == np.int64
    # granularity 48: 49 -> 96, 100 -> 144
    assert align([49, 100], 48).tolist() == [96, 144]
    assert align(7, 1).tolist() == 7


def test_align_all_lengths_up_to_131072():
    x = np.arange(1, 131_073, dtype=np.int64)
    a = align(x)
    assert (a % 64 == 0).all()
    assert ((a >= x) & (a - x < 64)).all()


def test_align_int64_safety():
    # int32 input at its maximum must not overflow: 2**31 - 1 rounds up to 2**31
    x = np.array([2**31 - 1], dtype=np.int32)
    assert align(x).tolist() == [2**31]
    # values far beyond int32 stay exact in int64
    assert align([2**40 + 1]).tolist() == [2**40 + 64]
    assert align([2**62 - 64]).tolist() == [2**62 - 64]


def test_align_rejects_bad_granularity():
    for g in (0, -64, 2.5, True):
        with pytest.raises(ValueError):
            align([10], g)


# ------------------------------------------------------------------ grids


def test_power_of_two_grid_by_hand():
    # g=64, max 1000: 64, 128, 256, 512, 1024 (first power >= 1000)
    assert power_of_two_grid(1000).tolist() == [64, 128, 256, 512, 1024]
    # min_len 300 starts at 512 (the smallest power >= 300)
    assert power_of_two_grid(1000, min_len=300).tolist() == [512, 1024]
    # min_len below g: powers 16, 32 collapse onto 64
    assert power_of_two_grid(100, 64, min_len=10).tolist() == [64, 128]
    # g = 48 is not a power of two: 64 -> 96, 128 -> 144
    assert power_of_two_grid(100, 48).tolist() == [96, 144]
    assert power_of_two_grid(131_072).tolist()[-1] == 131_072


def test_linear_grid_by_hand():
    # ceil(1000·i/4) = 250, 500, 750, 1000 -> aligned 256, 512, 768, 1024
    assert linear_grid(1000, 4).tolist() == [256, 512, 768, 1024]
    # max 100, k=4: 25, 50, 75, 100 -> 64, 64, 128, 128 -> deduplicated
    assert linear_grid(100, 4).tolist() == [64, 128]


def test_geometric_grid_by_hand():
    # from 64 to 4096 in 3 steps: 64, 512, 4096 (ratio 8)
    assert geometric_grid(4096, 3).tolist() == [64, 512, 4096]
    assert geometric_grid(4096, 1).tolist() == [4096]
    # from 100 to 1600 (ratio 4): 100, 400, 1600 -> 128, 448, 1600
    assert geometric_grid(1600, 3, min_len=100).tolist() == [128, 448, 1600]


def test_quantile_grid_by_hand():
    lens = [10, 20, 70, 130, 500, 600, 700, 1000]
    # n=8, k=4: ranks ceil(8i/4) = 2, 4, 6, 8 -> 20, 130, 600, 1000 -> 64, 192, 640, 1024
    assert quantile_grid(lens, 4).tolist() == [64, 192, 640, 1024]
    # k=3: ranks ceil(8i/3) = 3, 6, 8 -> 70, 600, 1000 -> 128, 640, 1024
    assert quantile_grid(lens, 3).tolist() == [128, 640, 1024]


@FAST
@given(lens=lengths_st, k=st.integers(1, 6), g=gran_st, family=st.sampled_from(GRID_FAMILIES))
def test_grids_cover_max_and_are_aligned(lens, k, g, family):
    grid = shape_grid(family, lens, k, g)
    top = int(align(max(lens), g))
    assert grid.dtype == np.int64
    assert (np.diff(grid) > 0).all()  # sorted, unique
    assert (grid % g == 0).all()
    if family == "power_of_two":
        assert grid.max() >= top
    else:
        assert grid.max() == top  # the top value covers align(max) and no more
        assert grid.size <= k
    if family != "linear":  # data-driven families waste no shape below the smallest length
        assert grid.min() >= align(min(lens), g)
    # every request can be assigned
    assign_shapes(lens, grid, g)


@FAST
@given(max_len=st.integers(1, 200_000), k=st.integers(1, 20), g=gran_st)
def test_plain_grids_properties(max_len, k, g):
    top = int(align(max_len, g))
    for grid in (
        power_of_two_grid(max_len, g),
        linear_grid(max_len, k, g),
        geometric_grid(max_len, k, g),
    ):
        assert grid.dtype == np.int64
        assert (np.diff(grid) > 0).all()
        assert (grid % g == 0).all()
        assert grid.max() >= top
    assert linear_grid(max_len, k, g).max() == top
    assert geometric_grid(max_len, k, g).max() == top
    assert linear_grid(max_len, k, g).size <= k
    assert geometric_grid(max_len, k, g).size <= k


def test_grid_validation():
    with pytest.raises(ValueError, match="k"):
        linear_grid(100, 0)
    with pytest.raises(ValueError, match="empty"):
        quantile_grid([], 3)
    with pytest.raises(ValueError, match="not positive"):
        shape_grid("linear", [5, 0, 7], 2)
    with pytest.raises(ValueError, match="unknown grid family"):
        shape_grid("cubic", [5], 2)
    with pytest.raises(ValueError, match="whole number"):
        quantile_grid([5.5], 1)


# ------------------------------------------------------------------ optimal_shapes


def test_optimal_shapes_by_hand():
    lens = [10, 70, 130, 500]
    # aligned (g=64): 64, 128, 192, 512; unavoidable padding 54 + 58 + 62 + 12 = 186
    # k=1: {512}: 502 + 442 + 382 + 12 = 1338
    assert optimal_shapes(lens, 1).tolist() == [512]
    assert padding_tokens(lens, [512]) == 1338
    # k=2: {64,512}: 54+442+382+12 = 890; {128,512}: 118+58+382+12 = 570;
    #      {192,512}: 182+122+62+12 = 378  <- best
    assert optimal_shapes(lens, 2).tolist() == [192, 512]
    assert padding_tokens(lens, [192, 512]) == 378
    # k=3: {64,192,512}: 54+122+62+12 = 250; {128,192,512}: 118+58+62+12 = 250 (tie);
    #      {64,128,512}: 54+58+382+12 = 506. Tie broken towards the smaller set -> 64.
    assert optimal_shapes(lens, 3).tolist() == [64, 192, 512]
    assert padding_tokens(lens, [64, 192, 512]) == 250
    # k=4 and beyond: every aligned length, padding 186
    assert optimal_shapes(lens, 4).tolist() == [64, 128, 192, 512]
    assert optimal_shapes(lens, 10).tolist() == [64, 128, 192, 512]
    assert padding_tokens(lens, [64, 128, 192, 512]) == 186


def test_optimal_shapes_counts_matter():
    # 100 requests at 60 and one at 1000 (aligned 64 and 1024), k=2 keeps both;
    # with k=1 all pay 1024: 100·(1024−60) + 24 = 96424
    lens = [60] * 100 + [1000]
    assert optimal_shapes(lens, 2).tolist() == [64, 1024]
    assert padding_tokens(lens, [1024]) == 96_424


def test_optimal_shapes_prefers_fewer_shapes_on_ties():
    # all lengths align to 128: one shape is enough, even with k=5
    assert optimal_shapes([65, 100, 128], 5).tolist() == [128]
    # a cost that ignores the shape: every set costs the same -> a single shape
    flat = optimal_shapes([10, 300, 900], 3, cost=lambda s, a: np.ones(s.size))
    assert flat.tolist() == [960]


@FAST
@given(lens=lengths_st, k=st.integers(1, 5), g=gran_st)
def test_optimal_shapes_matches_brute_force(lens, k, g):
    got = optimal_shapes(lens, k, g)
    cost, size, desc = brute_optimal(lens, k, g)
    assert padding_tokens(lens, got, g) == cost
    assert got.tolist() == sorted(desc)  # same set, including the tie-break
    assert got.dtype == np.int64


def _quad_cost(s, a):
    # a cost growing with the shape's square, weighed per request (like prefill compute)
    return 2.0 * s.astype(float) ** 2 + 4096.0 * s - 1.5 * a


@FAST
@given(lens=lengths_st, k=st.integers(1, 4), g=st.sampled_from([16, 64]))
def test_optimal_shapes_custom_cost_matches_brute_force(lens, k, g):
    got = optimal_shapes(lens, k, g, cost=_quad_cost)
    best = brute_optimal(lens, k, g, cost=_quad_cost)
    assert brute_set_cost(lens, got.tolist(), g, _quad_cost) == pytest.approx(best[0], rel=1e-12)
    assert got.size <= k and got.max() == align(max(lens), g)


def _compile_cost(s):
    # a cost per shape chosen, large against the requests' (as a compile of the graph)
    return 3000.0 * np.asarray(s, dtype=float) ** 2


@FAST
@given(lens=lengths_st, k=st.integers(1, 4), g=st.sampled_from([16, 64]))
def test_optimal_shapes_with_a_cost_per_shape_matches_brute_force(lens, k, g):
    got = optimal_shapes(lens, k, g, cost=_quad_cost, fixed_cost=_compile_cost)
    best = brute_optimal(lens, k, g, cost=_quad_cost, fixed_cost=_compile_cost)
    total = brute_set_cost(lens, got.tolist(), g, _quad_cost) + _compile_cost(got).sum()
    assert total == pytest.approx(best[0], rel=1e-12)
    assert got.size <= k and got.max() == align(max(lens), g)


def test_a_cost_per_shape_keeps_fewer_shapes_by_hand():
    # lengths 64 and 640 (one request each, padding as the cost): two shapes pad nothing, one
    # shape (640) pads 576 tokens; a shape costing 1,000 makes the one shape cheaper
    assert optimal_shapes([64, 640], 2, 64).tolist() == [64, 640]
    assert optimal_shapes(
        [64, 640], 2, 64, fixed_cost=lambda s: np.full(len(s), 1000.0)
    ).tolist() == [640]
    assert optimal_shapes(
        [64, 640], 2, 64, fixed_cost=lambda s: np.full(len(s), 500.0)
    ).tolist() == [64, 640]
    with pytest.raises(InputError, match="fixed_cost"):
        optimal_shapes([64, 640], 2, 64, fixed_cost=lambda s: -np.ones(len(s)))


def test_optimal_shapes_default_cost_equals_padding_callable():
    rng = np.random.default_rng(7)
    lens = rng.integers(1, 5000, size=500)
    a = optimal_shapes(lens, 6)
    b = optimal_shapes(lens, 6, cost=lambda s, al: s - al)
    assert a.tolist() == b.tolist()


def test_optimal_shapes_is_fast_for_131k_lengths():
    rng = np.random.default_rng(1)
    lens = rng.integers(1, 131_073, size=100_000)
    assert np.unique(align(lens)).size == 2048  # every aligned length appears
    t0 = time.perf_counter()
    shapes = optimal_shapes(lens, 16)
    elapsed = time.perf_counter() - t0
    assert shapes.size == 16 and shapes[-1] == 131_072
    # never worse than the 16-shape grids
    pad = padding_tokens(lens, shapes)
    for fam in ("linear", "geometric", "quantile"):
        assert pad <= padding_tokens(lens, shape_grid(fam, lens, 16))
    assert elapsed < 1.5, elapsed


def test_optimal_shapes_validation():
    with pytest.raises(ValueError, match="k"):
        optimal_shapes([10], 0)
    with pytest.raises(ValueError, match="empty"):
        optimal_shapes([], 2)
    with pytest.raises(ValueError, match="not positive"):
        optimal_shapes([10, -3], 2)
    with pytest.raises(ValueError, match="cost returned shape"):
        optimal_shapes([10, 300], 2, cost=lambda s, a: np.zeros(1))


# ------------------------------------------------------------------ joint shapes


buckets_st = st.lists(st.lists(st.integers(1, 600), min_size=1, max_size=6), min_size=1, max_size=3)


@FAST
@given(sets=buckets_st, cap=st.integers(1, 4), g=st.sampled_from([32, 64]), data=st.data())
def test_joint_matches_brute_force(sets, cap, g, data):
    ws = data.draw(st.lists(st.integers(0, 3), min_size=len(sets), max_size=len(sets)))
    got = joint_optimal_shapes(sets, cap, g, weights=ws)
    flat = [n for s in sets for n in s]
    per_req_w = [w for s, w in zip(sets, ws, strict=True) for _ in s]
    best = brute_optimal(flat, cap, g, weights=per_req_w)
    assert got.tolist() == sorted(best[2])
    assert got.size <= cap


@FAST
@given(sets=buckets_st, cap=st.integers(1, 6), g=st.sampled_from([32, 64]))
def test_joint_never_worse_than_per_bucket_under_cap(sets, cap, g):
    joint = joint_optimal_shapes(sets, cap, g)
    joint_pad = sum(padding_tokens(s, joint, g) for s in sets)
    # lower bound: each bucket alone with the whole cap for itself
    alone = per_bucket_optimal_shapes(sets, cap, g)
    assert joint_pad >= sum(padding_tokens(s, sh, g) for s, sh in zip(sets, alone, strict=True))
    # per-bucket optima squeezed under the cap: cap // B each (at least 1 if it fits)
    k_each = cap // len(sets)
    if k_each >= 1:
        squeezed = per_bucket_optimal_shapes(sets, k_each, g)
        union = np.unique(np.concatenate(squeezed))
        assert union.size <= cap
        assert joint_pad <= sum(padding_tokens(s, union, g) for s in sets)
        assert joint_pad <= sum(
            padding_tokens(s, sh, g) for s, sh in zip(sets, squeezed, strict=True)
        )


def test_joint_by_hand_and_union_exceeds_cap():
    a = [60, 60, 120]  # aligned 64, 64, 128
    b = [190, 250]  # aligned 192, 256
    per = per_bucket_optimal_shapes([a, b], 2)
    assert [p.tolist() for p in per] == [[64, 128], [192, 256]]  # union: 4 shapes
    # cap 2 over both: the top 256 is forced; second shape x in {64, 128, 192}:
    # x=64:  a: 4+4+(256−120)=144, b: 66+6=72 -> 216
    # x=128: a: 68+68+8=144,       b: 66+6=72 -> 216
    # x=192: a: 132+132+72=336,    b: 2+6=8   -> 344
    # tie 216 between 64 and 128 -> the smaller, 64
    assert joint_optimal_shapes([a, b], 2).tolist() == [64, 256]
    assert padding_tokens(a, [64, 256]) + padding_tokens(b, [64, 256]) == 216
    # weighting bucket b by 10 pulls the second shape to 192: 336 + 80 = 416 < 144 + 720
    assert joint_optimal_shapes([a, b], 2, weights=[1, 10]).tolist() == [192, 256]
    with pytest.raises(ValueError, match="weights"):
        joint_optimal_shapes([a, b], 2, weights=[1])
    with pytest.raises(ValueError, match="max_shapes"):
        joint_optimal_shapes([a, b], 0)


# ------------------------------------------------------------------ assignment


def test_assign_shapes_and_padding_by_hand():
    # aligned 64, 128, 192, 512 against {192, 512}: 192, 192, 192, 512
    got = assign_shapes([10, 70, 130, 500], [512, 192])
    assert got.tolist() == [192, 192, 192, 512]
    # shapes need not be multiples of g: aligned 128 fits in 130
    assert assign_shapes([100], [130, 64]).tolist() == [130]


def test_assign_shapes_error_names_request_id():
    with pytest.raises(InputError) as err:
        assign_shapes([10, 600, 700], [64, 512], request_ids=["r0", "r1", "r2"])
    msg = str(err.value)
    assert err.value.request_id == "r1"  # first offender
    assert "r1" in msg and "640" in msg and "512" in msg
    with pytest.raises(InputError, match="index 1"):
        assign_shapes([10, 600], [512])
    with pytest.raises(InputError) as err:
        assign_shapes([10, 0], [512], request_ids=["a", "b"])
    assert err.value.request_id == "b"


@FAST
@given(lens=lengths_st, shapes=st.lists(st.integers(1, 800), min_size=1, max_size=5), g=gran_st)
def test_assign_shapes_matches_loop(lens, shapes, g):
    top = max(shapes)
    if max(align(lens, g)) > top:
        with pytest.raises(InputError):
            assign_shapes(lens, shapes, g)
        return
    got = assign_shapes(lens, shapes, g)
    want = [min(s for s in shapes if s >= -(-n // g) * g) for n in lens]
    assert got.tolist() == want
    assert padding_tokens(lens, shapes, g) == sum(w - n for w, n in zip(want, lens, strict=True))


# ------------------------------------------------------------------ gen buckets, splits


def test_gen_buckets_by_hand():
    # (gen − 1) // 64: 1 -> 0, 64 -> 0, 65 -> 1, 128 -> 1, 129 -> 2
    assert gen_buckets([1, 64, 65, 128, 129], 64).tolist() == [0, 0, 1, 1, 2]
    assert gen_buckets([5], 1).tolist() == [4]
    with pytest.raises(ValueError, match="bucket_size"):
        gen_buckets([5], 0)
    with pytest.raises(ValueError, match="not positive"):
        gen_buckets([5, 0], 8)


# ------------------------------------------------------------------ bounds


def test_bounds_by_hand():
    prompt = [10, 64, 100]  # aligned 64, 64, 128: unavoidable 54 + 0 + 28 = 82
    gen = [5, 20, 75]  # Σ(prompt + gen) = 174 + 100 = 274
    assert min_padding_tokens(prompt) == 82
    # 0.5·274 − 82 = 55
    assert padding_budget(prompt, gen, 0.5) == pytest.approx(55.0)
    # 0.2·274 − 82 = −27.2: no plan meets a 20 % pad ratio
    assert padding_budget(prompt, gen, 0.2) == pytest.approx(-27.2)
    assert min_padding_tokens(prompt, 1) == 0
    assert min_batches(10, 3) == 4
    assert min_batches(9, 3) == 3
    assert min_batches(10, None) == 1
    assert min_batches(0, 4) == 0
    with pytest.raises(ValueError, match="gen_len"):
        padding_budget(prompt, gen[:2], 0.5)
    with pytest.raises(ValueError, match="max_pad_ratio"):
        padding_budget(prompt, gen, -1)
    with pytest.raises(ValueError, match="max_batch_size"):
        min_batches(5, 0)


@FAST
@given(lens=lengths_st, k=st.integers(1, 5), g=gran_st)
def test_min_padding_is_a_lower_bound(lens, k, g):
    assert padding_tokens(lens, optimal_shapes(lens, k, g), g) >= min_padding_tokens(lens, g)
    assert padding_tokens(lens, optimal_shapes(lens, len(lens), g), g) == min_padding_tokens(
        lens, g
    )
