"""Tests of batchlab.slo: percentile limits, goodput, and the early verdict's soundness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError
from batchlab.roofline import LinearStepTime
from batchlab.simulate import simulate
from batchlab.slo import SLO, latency_arrays
from batchlab.stats import nearest_rank


def test_limits_are_checked_and_named():
    with pytest.raises(InputError, match="at least one limit"):
        SLO()
    with pytest.raises(InputError, match="ttft_p99_ms"):
        SLO(ttft_p99_ms=-5)
    with pytest.raises(InputError, match="tpot_p90_ms"):
        SLO(tpot_p90_ms=float("nan"))
    with pytest.raises(InputError, match="unknown SLO limit"):
        SLO.from_mapping({"ttft_p95_ms": 10})
    slo = SLO(ttft_p99_ms=2000, tpot_p99_ms=100)
    assert slo.limits() == {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 100.0}
    assert str(slo) == "p99 TTFT ≤ 2,000 ms, p99 TPOT ≤ 100 ms"
    assert slo.replace(ttft_p99_ms=500).ttft_p99_ms == 500.0
    assert slo.replace(tpot_p99_ms=None).limits() == {"ttft_p99_ms": 2000.0}
    assert SLO(e2e_p50_ms=1, e2e_p99_ms=9, ttft_p90_ms=3).request_limits() == {
        "ttft": 3.0,
        "e2e": 9.0,
    }


def test_report_by_hand():
    # ten requests: TTFT 100..1000 ms; TPOT 10..100 ms, the last one a single token (NaN)
    ttft = np.arange(1, 11) * 100.0
    tpot = np.r_[np.arange(1, 10) * 10.0, np.nan]
    e2e = ttft + 1000.0
    # nearest rank: p50 = 5th = 500, p90 = 9th = 900, p99 = 10th = 1000 (TTFT); TPOT has nine
    # values: p50 = 5th = 50, p90 = ⌈8.1⌉ = 9th = 90, p99 = 9th = 90
    rep = SLO(ttft_p90_ms=900).report(ttft, tpot, e2e, 20.0)
    assert rep.met and rep.observed["ttft_p90_ms"] == 900.0
    assert rep.observed["tpot_p50_ms"] == 50.0 and rep.observed["tpot_p99_ms"] == 90.0
    rep = SLO(ttft_p99_ms=999, tpot_p90_ms=90).report(ttft, tpot, e2e, 20.0)
    assert not rep.met and rep.violations == {"ttft_p99_ms": (1000.0, 999.0)}
    # goodput: a good request has TTFT <= 950 (the p99 limit, the highest given) and TPOT <=
    # 45 (or a single token): requests 1-4 (TPOT 10-40) and the one-token request 10 -> but
    # request 10 has TTFT 1000 > 950; so 4 of 10, 4 per 20 s
    rep = SLO(ttft_p50_ms=500, ttft_p99_ms=950, tpot_p99_ms=45).report(ttft, tpot, e2e, 20.0)
    assert rep.n_good == 4 and rep.goodput_share == 0.4 and rep.goodput_rps == 0.2
    assert rep.as_dict()["met"] is False


def test_evaluate_reads_a_simulation():
    lin = LinearStepTime(per_step_ms=10, per_token_ms=0.5, per_seq_ms=1)
    df = __import__("pandas").DataFrame(
        {
            "request_id": list("ABCD"),
            "prompt_len": [30, 20, 10, 30],
            "gen_len": [3, 1, 4, 2],
            "arrival_s": [0.0, 0.005, 0.030, 0.031],
        }
    )
    res = simulate(df, step_time=lin, kv_blocks=100)
    slo = SLO(ttft_p99_ms=100)
    r = res.requests
    direct = slo.report(
        r["ttft_ms"].to_numpy(), r["tpot_ms"].to_numpy(), r["latency_ms"].to_numpy(), 0.0
    )
    got = slo.evaluate(res)
    assert got.observed == direct.observed
    assert got.duration_s == pytest.approx(res.summary()["duration_s"])
    assert got.goodput_rps == pytest.approx(got.n_good / got.duration_s)
    with pytest.raises(InputError, match="lacks"):
        slo.evaluate(r.drop(columns="tpot_ms"))
    # the simulator's own definitions of the three latencies
    ttft, tpot, e2e = latency_arrays(
        r["arrival_ms"].to_numpy(),
        r["first_token_ms"].to_numpy(),
        r["last_token_ms"].to_numpy(),
        r["finish_ms"].to_numpy(),
        r["gen_len"].to_numpy(),
    )
    np.testing.assert_array_equal(ttft, r["ttft_ms"])
    np.testing.assert_array_equal(tpot, r["tpot_ms"])
    np.testing.assert_array_equal(e2e, r["latency_ms"])


values = st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(values, st.sampled_from([50, 90, 99]), st.floats(0, 1000))
def test_allowance_is_exactly_the_percentile(vals, p, limit):
    limit = max(limit, 1e-3)
    v = np.asarray(vals)
    slo = SLO(**{f"ttft_p{p}_ms": limit})
    allow = slo.allowances(v.size, v.size)[f"ttft_p{p}_ms"]
    assert (np.count_nonzero(v > limit) <= allow) == (nearest_rank(v, p) <= limit)


@settings(max_examples=60, deadline=None)
@given(values, st.data())
def test_early_verdict_is_sound(vals, data):
    v = np.asarray(vals)
    n = v.size
    limit = max(float(data.draw(st.floats(1, 1000))), 1e-3)
    known = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    slo = SLO(ttft_p90_ms=limit, e2e_p99_ms=2 * limit)
    allow = slo.allowances(n, n)
    partial = np.where(known, v, np.nan)
    e2e_partial = np.where(known, 2 * v, np.nan)
    missed = slo.certainly_missed(partial, partial, e2e_partial, allow)
    final = slo.report(v, v, 2 * v, 1.0)
    if missed:
        assert not final.met
    # knowing everything, the verdict is the report's
    assert slo.certainly_missed(v, v, 2 * v, allow) == (not final.met)


def test_nan_percentile_does_not_meet():
    rep = SLO(tpot_p99_ms=10).report(np.ones(3), np.full(3, np.nan), np.ones(3), 1.0)
    assert math.isnan(rep.observed["tpot_p99_ms"]) and not rep.met
