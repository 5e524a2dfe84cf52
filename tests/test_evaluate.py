"""Tests of batchlab.evaluate: hand-worked answers, reference comparison, errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_evaluate, valid_case_strategy

from batchlab.cost import PRESETS, CostCoefficients, CostModel, get_cost_model
from batchlab.errors import VerificationError
from batchlab.evaluate import Evaluation, evaluate, nearest_rank
from batchlab.plan import baseline_plan

SUMMARY_KEYS = {
    "total_cost",
    "cost_overhead",
    "cost_compile",
    "cost_prefill",
    "cost_decode",
    "pad_ratio",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "sequential_ms",
    "n_batches",
    "n_shapes",
    "n_requests",
}


def two_requests():
    requests = pd.DataFrame(
        {"request_id": ["r1", "r2"], "prompt_len": [100, 30], "gen_len": [3, 5]}
    )
    plan = pd.DataFrame(
        {"request_id": ["r1", "r2"], "batch_id": ["b0", "b0"], "seq_align": [128, 128]}
    )
    return requests, plan


# ---------------------------------------------------------------------------------------------
# hand-worked answers
# ---------------------------------------------------------------------------------------------
def test_two_requests_static_graph_by_hand():
    requests, plan = two_requests()
    ev = evaluate(requests, plan, "static-graph")
    # g = 64: S = align(100) = 128, align(30) = 64; S_max = 128; G_max = max(3, 5) = 5.
    # prefill cost: r1 2*128^2 + 4096*128 = 32,768 + 524,288 = 557,056
    #               r2 2*64^2 + 4096*64 = 8,192 + 262,144 = 270,336          -> 827,392
    assert ev.cost.prefill == pytest.approx(827_392.0, rel=1e-15)
    # decode per request at S_max=128, G_max=5: sum x = 650, sum x^2 = 84,510
    #   1.0*84,510 + 0.5*4096*650 = 1,415,710 ; two requests pay it -> 2,831,420
    assert ev.cost.decode == pytest.approx(2_831_420.0, rel=1e-15)
    # overhead: one batch -> 1e7; compile: one shape s=128 -> 500*16,384 + 2*4096*128 = 9,240,576
    assert ev.cost.overhead == 1e7
    assert ev.cost.compile == pytest.approx(9_240_576.0, rel=1e-15)
    # total = 1e7 + 9,240,576 + 827,392 + 2,831,420 = 22,899,388
    assert ev.cost.total == pytest.approx(22_899_388.0, rel=1e-15)
    # latency: prefill ms r1 0.002*16,384 + 0.0015*4096*128 = 32.768 + 786.432 = 819.2
    #                      r2 0.002*4,096 + 0.0015*4096*64 = 8.192 + 393.216 = 401.408
    # decode ms (batch) 0.0012*84,510 + 0.0006*4096*650 = 101.412 + 1,597.44 = 1,698.852
    # r1 is the first row of the first batch using 128 -> +1,500 ms compile spike
    # r1 = 819.2 + 1,698.852 + 8 + 1,500 = 4,026.052 ; r2 = 401.408 + 1,698.852 + 8 = 2,108.26
    lat = dict(zip(ev.requests["request_id"], ev.requests["latency_ms"], strict=True))
    assert lat["r1"] == pytest.approx(4_026.052, rel=1e-12)
    assert lat["r2"] == pytest.approx(2_108.26, rel=1e-12)
    # nearest rank with N = 2: p50 -> ceil(1.0) = 1st; p95 -> ceil(1.9) = 2nd; p99 -> 2nd
    assert ev.p50_latency_ms == pytest.approx(2_108.26, rel=1e-12)
    assert ev.p95_latency_ms == pytest.approx(4_026.052, rel=1e-12)
    assert ev.p99_latency_ms == pytest.approx(4_026.052, rel=1e-12)
    assert ev.sequential_ms == pytest.approx(4_026.052, rel=1e-12)
    # padding: prompt (128-100) + (64-30) = 28 + 34 = 62; gen (5-3) + (5-5) = 2
    # pad_ratio = 64 / (100 + 30 + 3 + 5) = 64 / 138
    assert (ev.padding_tokens.prompt, ev.padding_tokens.gen, ev.padding_tokens.total) == (62, 2, 64)
    assert ev.pad_ratio == pytest.approx(64 / 138, rel=1e-15)
    # latency parts summed over requests: prefill 819.2 + 401.408 = 1,220.608;
    # decode 2*1,698.852 = 3,397.704; overhead 2*8 = 16; compile 1,500
    assert ev.latency.prefill == pytest.approx(1_220.608, rel=1e-12)
    assert ev.latency.decode == pytest.approx(3_397.704, rel=1e-12)
    assert ev.latency.overhead == 16.0 and ev.latency.compile == 1_500.0
    assert ev.latency.total == pytest.approx(4_026.052 + 2_108.26, rel=1e-12)
    assert (ev.n_requests, ev.n_batches, ev.shapes_used, ev.n_shapes) == (2, 1, (128,), 1)
    b = ev.batches.iloc[0]
    assert (b["batch_id"], b["size"], b["seq_align"], b["s_max"], b["g_max"]) == (
        "b0",
        2,
        128,
        128,
        5,
    )
    assert b["decode_ms"] == pytest.approx(1_698.852, rel=1e-12)
    assert b["max_latency_ms"] == pytest.approx(4_026.052, rel=1e-12)
    assert b["cost_total"] == pytest.approx(22_899_388.0, rel=1e-15)


def test_two_requests_padded_graph_by_hand():
    requests, plan = two_requests()
    ev = evaluate(requests, plan, "padded-graph")
    # both prefills run at s = 128: 2 * 557,056 = 1,114,112 cost; 819.2 ms each
    assert ev.cost.prefill == pytest.approx(1_114_112.0, rel=1e-15)
    # decode at s = 128 with G_max = 5: same as static here (S_max = 128) -> 2,831,420
    assert ev.cost.decode == pytest.approx(2_831_420.0, rel=1e-15)
    lat = dict(zip(ev.requests["request_id"], ev.requests["latency_ms"], strict=True))
    # r2 = 819.2 + 1,698.852 + 8 = 2,526.052; r1 = 2,526.052 + 1,500 = 4,026.052
    assert lat["r2"] == pytest.approx(2_526.052, rel=1e-12)
    assert lat["r1"] == pytest.approx(4_026.052, rel=1e-12)
    # padding: prompt (128-100) + (128-30) = 28 + 98 = 126; gen 2 -> 128 / 138
    assert ev.padding_tokens.prompt == 126 and ev.padding_tokens.gen == 2
    assert ev.pad_ratio == pytest.approx(128 / 138, rel=1e-15)
    assert ev.cost_model == "padded-graph"


def test_padded_graph_decodes_at_declared_shape():
    # one request, prompt 10 (S = 64), declared s = 192, gen 2
    requests = pd.DataFrame({"request_id": ["a"], "prompt_len": [10], "gen_len": [2]})
    plan = pd.DataFrame({"request_id": ["a"], "batch_id": ["b"], "seq_align": [192]})
    static = evaluate(requests, plan, "static-graph")
    padded = evaluate(requests, plan, "padded-graph")
    # static decode: contexts 64, 65: 64^2 + 65^2 = 4,096 + 4,225 = 8,321; 0.5*4096*129 = 264,192
    assert static.cost.decode == pytest.approx(8_321.0 + 264_192.0, rel=1e-15)
    # padded decode: contexts 192, 193: 36,864 + 37,249 = 74,113; 0.5*4096*385 = 788,480
    assert padded.cost.decode == pytest.approx(74_113.0 + 788_480.0, rel=1e-15)
    assert static.batches["s_max"].iloc[0] == 64 and padded.batches["s_max"].iloc[0] == 192
    # compile cost depends on the declared shape in both: 500*192^2 + 2*4096*192
    assert static.cost.compile == padded.cost.compile == 500.0 * 192**2 + 2 * 4096 * 192


def test_compile_spike_goes_to_first_row_of_first_batch_in_string_order():
    # batches "b9" and "b10" share shape 128; in string order "b10" < "b9", so the spike for 128
    # goes to b10's first plan row ("y1"), even though b9's rows come first in the plan.
    # batch "c" has its own shape 256 and gets its own spike on its first row ("z1").
    requests = pd.DataFrame(
        {
            "request_id": ["x1", "x2", "y1", "y2", "z1", "z2"],
            "prompt_len": [100, 50, 70, 128, 200, 10],
            "gen_len": [4, 4, 4, 4, 4, 4],
        }
    )
    plan = pd.DataFrame(
        {
            "request_id": ["x1", "x2", "y1", "y2", "z1", "z2"],
            "batch_id": ["b9", "b9", "b10", "b10", "c", "c"],
            "seq_align": [128, 128, 128, 128, 256, 256],
        }
    )
    ev = evaluate(requests, plan)
    spikes = dict(zip(ev.requests["request_id"], ev.requests["compile_ms"], strict=True))
    assert spikes == {"x1": 0.0, "x2": 0.0, "y1": 1500.0, "y2": 0.0, "z1": 1500.0, "z2": 0.0}
    # two distinct seq_aligns -> compile cost 9,240,576 (128) + 500*65,536 + 2*4096*256
    #   = 9,240,576 + 32,768,000 + 2,097,152 = 44,105,728
    assert ev.cost.compile == pytest.approx(44_105_728.0, rel=1e-15)
    assert list(ev.batches["batch_id"]) == ["b10", "b9", "c"]
    assert list(ev.batches["cost_compile"]) == [9_240_576.0, 0.0, 34_865_152.0]
    # per-request compile cost sits on the spiked requests
    cc = dict(zip(ev.requests["request_id"], ev.requests["cost_compile"], strict=True))
    assert cc["y1"] == 9_240_576.0 and cc["z1"] == 34_865_152.0 and cc["x1"] == 0.0


def test_percentiles_nearest_rank_on_20_requests():
    # 20 requests, prompt 64*j (j = 1..20), gen 1, each alone in its own batch of shape 64*j,
    # so latency grows with j and there is one compile spike per request (all shapes differ).
    n = 20
    requests = pd.DataFrame(
        {
            "request_id": [f"r{j:02d}" for j in range(1, n + 1)],
            "prompt_len": [64 * j for j in range(1, n + 1)],
            "gen_len": [1] * n,
        }
    )
    plan = pd.DataFrame(
        {
            "request_id": requests["request_id"],
            "batch_id": [f"b{j:02d}" for j in range(1, n + 1)],
            "seq_align": requests["prompt_len"],
        }
    )
    ev = evaluate(requests.sample(frac=1.0, random_state=3), plan.sample(frac=1.0, random_state=4))
    lat = sorted(ev.requests["latency_ms"])
    # p50: ceil(0.50*20) = 10th smallest; p95: ceil(0.95*20) = 19th; p99: ceil(19.8) = 20th
    assert ev.p50_latency_ms == lat[9]
    assert ev.p95_latency_ms == lat[18]
    assert ev.p99_latency_ms == lat[19]
    # request r10 (S = 640): prefill 0.002*640^2 + 0.0015*4096*640 = 819.2 + 3,932.16 = 4,751.36
    # decode one step at 640: 0.0012*409,600 + 0.0006*4096*640 = 491.52 + 1,572.864 = 2,064.384
    # + 8 + 1,500 spike = 8,323.744
    assert ev.p50_latency_ms == pytest.approx(8_323.744, rel=1e-12)


def test_nearest_rank_function():
    values = np.array(random.Random(0).sample(range(1, 21), 20), dtype=float)
    # 1..20 shuffled: 10th, 19th and 20th smallest
    assert nearest_rank(values, (50, 95, 99)) == (10.0, 19.0, 20.0)
    # N = 1: every percentile is the only value; p0 is clamped to the 1st
    assert nearest_rank(np.array([7.0]), (0, 50, 100)) == (7.0, 7.0, 7.0)
    # N = 100, p = 7: exactly the 7th (0.07*100 = 7.000000000000001 in floats would give 8)
    assert nearest_rank(np.arange(1.0, 101.0), (7,)) == (7.0,)
    # no values: NaN (the one nearest_rank of batchlab.stats, shared with the simulator)
    assert np.isnan(nearest_rank(np.array([]), (50,))).all()


def test_summary_is_flat_with_the_documented_keys():
    requests, plan = two_requests()
    ev = evaluate(requests, plan)
    s = ev.summary()
    assert set(s) == SUMMARY_KEYS
    assert s["total_cost"] == pytest.approx(22_899_388.0, rel=1e-15)
    assert s["n_shapes"] == 1 and s["n_batches"] == 1 and s["n_requests"] == 2
    assert all(type(v) in (int, float) for v in s.values())
    assert isinstance(ev, Evaluation)


def test_requests_table_is_in_request_order_and_parts_add_up():
    requests, plan = two_requests()
    plan = plan.iloc[::-1].reset_index(drop=True)  # r2 is now the first row: it takes the spike
    ev = evaluate(requests, plan)
    t = ev.requests
    assert list(t["request_id"]) == ["r1", "r2"]
    assert list(t["compile_ms"]) == [0.0, 1500.0]
    np.testing.assert_allclose(
        t["latency_ms"], t["prefill_ms"] + t["decode_ms"] + t["overhead_ms"] + t["compile_ms"]
    )
    for part in ("overhead", "compile", "prefill", "decode"):
        assert t[f"cost_{part}"].sum() == pytest.approx(getattr(ev.cost, part), rel=1e-12)
        assert ev.batches[f"cost_{part}"].sum() == pytest.approx(getattr(ev.cost, part), rel=1e-12)
    assert t["cost_total"].sum() == pytest.approx(ev.cost.total, rel=1e-12)


def test_long_lengths_match_literal_reference():
    # 131,072-token prompt, 100,000 generated tokens, plus a short request in the same batch
    reqs = [
        {"request_id": "long", "prompt_len": 131_072, "gen_len": 100_000},
        {"request_id": "short", "prompt_len": 1, "gen_len": 1},
    ]
    plan = [
        {"request_id": "long", "batch_id": "b", "seq_align": 131_072},
        {"request_id": "short", "batch_id": "b", "seq_align": 131_072},
    ]
    for preset in ("static-graph", "padded-graph"):
        ev = evaluate(pd.DataFrame(reqs), pd.DataFrame(plan), preset)
        ref = reference_evaluate(reqs, plan, PRESETS[preset])
        assert_matches(ev, ref)
        assert math.isfinite(ev.cost.total) and ev.cost.total > 0


def test_granularity_comes_from_the_cost_model():
    requests, plan = two_requests()
    # g = 128: S = 128, 128; the plan's 128 still covers and is aligned
    model = get_cost_model("static-graph").with_coefficients(granularity=128)
    ev = evaluate(requests, plan, model)
    assert ev.padding_tokens.prompt == (128 - 100) + (128 - 30)
    # g = 256: 128 is no longer a multiple of g, and below the aligned prompts (256)
    with pytest.raises(VerificationError) as info:
        evaluate(requests, plan, model.with_coefficients(granularity=256))
    text = " ".join(info.value.violations)
    assert "misaligned" in text and "undersized" in text


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_request_missing_from_plan_raises():
    requests, plan = two_requests()
    with pytest.raises(VerificationError) as info:
        evaluate(requests, plan.iloc[:1])
    assert any("'r2'" in v and v.startswith("missing") for v in info.value.violations)


def test_unknown_and_duplicate_ids_raise():
    requests, plan = two_requests()
    bad = pd.concat(
        [
            plan,
            pd.DataFrame(
                {"request_id": ["r1", "ghost"], "batch_id": ["b0", "b0"], "seq_align": [128, 128]}
            ),
        ],
        ignore_index=True,
    )
    with pytest.raises(VerificationError) as info:
        evaluate(requests, bad)
    kinds = {v.split(":")[0] for v in info.value.violations}
    assert kinds == {"duplicate", "unknown"}
    assert "'ghost'" in str(info.value)


def test_undersized_seq_align_raises():
    requests, plan = two_requests()
    plan = plan.assign(seq_align=[64, 64])  # r1's aligned prompt is 128
    with pytest.raises(VerificationError) as info:
        evaluate(requests, plan)
    assert len(info.value.violations) == 1
    assert info.value.violations[0].startswith("undersized") and "'r1'" in info.value.violations[0]


def test_batch_with_two_shapes_raises():
    requests, plan = two_requests()
    with pytest.raises(VerificationError, match="multi_shape"):
        evaluate(requests, plan.assign(seq_align=[128, 192]))


# ---------------------------------------------------------------------------------------------
# comparison with the slow reference
# ---------------------------------------------------------------------------------------------
def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def assert_matches(ev: Evaluation, ref: dict) -> None:
    summary = ev.summary()
    for key in SUMMARY_KEYS:
        assert close(summary[key], ref[key]), (key, summary[key], ref[key])
    assert ev.padding_tokens.prompt == ref["padding_prompt"]
    assert ev.padding_tokens.gen == ref["padding_gen"]
    fast = dict(zip(ev.requests["request_id"], ev.requests["latency_ms"], strict=True))
    assert fast.keys() == ref["latency_ms"].keys()
    for rid, value in ref["latency_ms"].items():
        assert close(fast[rid], value), (rid, fast[rid], value)
    batch_of = dict(zip(ev.requests["request_id"], ev.requests["batch_id"], strict=True))
    assert batch_of == ref["batch_of"]
    for part, value in ref["latency_sum"].items():
        assert close(getattr(ev.latency, part), value), (part, value)
    for row in ev.batches.itertuples(index=False):
        rb = ref["batches"][row.batch_id]
        assert (row.size, row.seq_align, row.s_max, row.g_max) == (
            rb["size"],
            rb["seq_align"],
            rb["s_max"],
            rb["g_max"],
        )
        assert close(row.decode_ms, rb["decode_ms"]) and close(
            row.max_latency_ms, rb["max_latency_ms"]
        )


@settings(max_examples=60, deadline=None)
@given(case=valid_case_strategy(), preset=st.sampled_from(sorted(PRESETS)))
def test_matches_reference_for_presets(case, preset):
    reqs, plan = case
    ev = evaluate(pd.DataFrame(reqs), pd.DataFrame(plan), preset)
    assert_matches(ev, reference_evaluate(reqs, plan, PRESETS[preset]))


coefficient = st.one_of(st.just(0.0), st.floats(1e-6, 1e3))


@st.composite
def coefficients_and_case(draw):
    g = draw(st.sampled_from([1, 16, 64, 100]))
    c = CostCoefficients(
        hidden=draw(st.integers(1, 8192)),
        granularity=g,
        padded=draw(st.booleans()),
        **{
            name: draw(coefficient)
            for name in (
                "prefill_cost_quad",
                "prefill_cost_lin",
                "prefill_ms_quad",
                "prefill_ms_lin",
                "decode_cost_quad",
                "decode_cost_lin",
                "decode_ms_quad",
                "decode_ms_lin",
                "batch_cost",
                "batch_ms",
                "compile_cost_quad",
                "compile_cost_lin",
                "compile_ms",
            )
        },
    )
    return c, draw(valid_case_strategy(granularity=g))


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=coefficients_and_case())
def test_matches_reference_for_random_coefficients(data):
    c, (reqs, plan) = data
    ev = evaluate(pd.DataFrame(reqs), pd.DataFrame(plan), CostModel(c))
    assert_matches(ev, reference_evaluate(reqs, plan, c))


@settings(max_examples=15, deadline=None)
@given(
    prompts=st.lists(st.integers(1, 5000), min_size=1, max_size=60),
    k=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_baseline_plan_evaluates_like_reference(prompts, k, seed):
    rng = np.random.default_rng(seed)
    n = len(prompts)
    requests = pd.DataFrame(
        {
            "request_id": [f"q{i}" for i in range(n)],
            "prompt_len": prompts,
            "gen_len": rng.integers(1, 100, n),
        }
    )
    plan = baseline_plan(requests, k=k)
    ev = evaluate(requests, plan)
    ref = reference_evaluate(
        requests.to_dict("records"), plan.to_dict("records"), PRESETS["static-graph"]
    )
    assert_matches(ev, ref)
    assert ev.n_batches == ev.n_shapes <= k


class _WholeBatchModel(CostModel):
    """A model that prices a batch as a whole: decode costs 1000 per batch plus 10 per member,
    and its latency grows by 1 ms per member (hand-checkable numbers)."""

    @property
    def members_pay_caps(self) -> bool:
        return False

    def batch_decode_cost(self, S_max, G_max, size):
        return 1000.0 + 10.0 * np.asarray(size, dtype=np.float64)

    def batch_decode_ms(self, S_max, G_max, size):
        return 5.0 + 1.0 * np.asarray(size, dtype=np.float64)


def test_presets_price_a_batch_as_members_times_the_caps():
    cm = get_cost_model("static-graph")
    assert cm.members_pay_caps
    s, g, size = np.array([128, 512]), np.array([3, 40]), np.array([1, 7])
    np.testing.assert_array_equal(cm.batch_decode_cost(s, g, size), size * cm.decode_cost(s, g))
    np.testing.assert_array_equal(cm.batch_decode_ms(s, g, size), cm.decode_ms(s, g))


def test_a_whole_batch_model_is_evaluated_with_its_batch_prices():
    requests, plan = two_requests()  # one batch of two requests
    flat = CostCoefficients(
        prefill_cost_quad=0, prefill_cost_lin=0, prefill_ms_quad=0, prefill_ms_lin=0,
        batch_cost=0, batch_ms=0, compile_cost_quad=0, compile_cost_lin=0, compile_ms=0,
    )  # fmt: skip
    ev = evaluate(requests, plan, _WholeBatchModel(flat))
    assert ev.cost.decode == pytest.approx(1000.0 + 10.0 * 2)  # the batch, not 2 × a price
    assert ev.cost.total == pytest.approx(1020.0)
    assert ev.p50_latency_ms == pytest.approx(5.0 + 2.0)
    assert ev.sequential_ms == pytest.approx(7.0)
