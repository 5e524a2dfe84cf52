"""Tests of several replicas behind a router (batchlab.simulate.fleet and .routers):
hand-worked timelines for two replicas, exact equality with the one-replica engine, the
look-ahead of state-aware routers against routing that stops every replica at every arrival,
per-replica and fleet-wide results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchlab.errors import InputError
from batchlab.roofline import LinearStepTime
from batchlab.simulate import (
    ROUTERS,
    LeastRequestsRouter,
    LeastTokensRouter,
    Router,
    make_router,
    register_router,
    simulate,
    simulate_fleet,
)

TIMES = ["start_ms", "first_token_ms", "last_token_ms", "finish_ms"]
# 10 ms per step + 0.5 ms per prefill token + 1 ms per decoding sequence
LIN = LinearStepTime(per_step_ms=10, per_token_ms=0.5, per_seq_ms=1)


def four() -> pd.DataFrame:
    """(arrival ms, prompt, gen): A (0, 30, 3), B (5, 20, 1), C (30, 10, 4), D (31, 30, 2).
    Weights of least-tokens (prompt + gen): A 33, B 21, C 14, D 32."""
    return pd.DataFrame(
        {
            "request_id": list("ABCD"),
            "prompt_len": [30, 20, 10, 30],
            "gen_len": [3, 1, 4, 2],
            "arrival_s": [0.0, 0.005, 0.030, 0.031],
        }
    )


def timeline(res) -> dict[str, list[float]]:
    r = res.requests.set_index("request_id")
    return {rid: [float(r.loc[rid, c]) for c in TIMES] for rid in r.index}


def run(router: str):
    return simulate_fleet(
        four(), "continuous", replicas=2, router=router, step_time=LIN, kv_blocks=1000
    )


# Prefill of p tokens: 10 + p/2 ms (A, D: 25; B: 20; C: 15); decode of n sequences: 10 + n ms.


def test_round_robin_two_replicas_by_hand():
    # A, C -> replica 0; B, D -> replica 1 (arrival order 0, 1, 2, 3).
    # r0: A prefill 0-25. A decodes; C (30) is r0's next arrival, so the run stops at the
    #     step that ends after it: 25-36. C prefill 36-51. A + C decode (12 ms): A's last token
    #     at 63; C alone (11 ms): 74, 85.
    # r1: B prefill 5-25 (one token: done). D prefill 31-56, one decode 56-67.
    res = run("round-robin")
    assert res.requests.set_index("request_id")["replica"].to_dict() == dict(A=0, B=1, C=0, D=1)
    assert timeline(res) == {
        "A": [0.0, 25.0, 63.0, 63.0],
        "B": [5.0, 25.0, 25.0, 25.0],
        "C": [36.0, 51.0, 85.0, 85.0],
        "D": [31.0, 56.0, 67.0, 67.0],
    }


def test_least_requests_two_replicas_by_hand():
    # A (0) -> r0 (tie, lowest index); B (5): loads [1, 0] -> r1.
    # At 25 r0 plans A's decode: r1 has no outstanding request (B finished at 25), so the next
    #   arrival (C at 30) certainly goes to r1: r0 runs up to D (31), step 25-36.
    # C (30): loads [1 (A), 0] -> r1: prefill 30-45, decodes 56, 67, 78.
    # D (31): loads [1, 1] -> r0 (tie): prefill 36-61; A + D decode 61-73, both done.
    res = run("least-requests")
    assert res.requests.set_index("request_id")["replica"].to_dict() == dict(A=0, B=1, C=1, D=0)
    assert timeline(res) == {
        "A": [0.0, 25.0, 73.0, 73.0],
        "B": [5.0, 25.0, 25.0, 25.0],
        "C": [30.0, 45.0, 78.0, 78.0],
        "D": [36.0, 61.0, 73.0, 73.0],
    }


def test_least_tokens_two_replicas_by_hand():
    # Weights A 33, B 21, C 14, D 32. A -> r0; B (5): [33, 0] -> r1.
    # At 25 r0 plans A's decode: r1's load is 0; water-filling C (14) and D (32) onto it keeps
    #   it below 33 for both, so neither can come to r0: A decodes 25-36-47 uninterrupted.
    # C (30): [33 (A, still running), 0] -> r1: prefill 30-45.
    # D (31): [33, 14] -> r1: D waits for C's prefill, prefill 45-70; C + D decode 70-82 (D
    #   done); C alone 93, 104.
    res = run("least-tokens")
    assert res.requests.set_index("request_id")["replica"].to_dict() == dict(A=0, B=1, C=1, D=1)
    assert timeline(res) == {
        "A": [0.0, 25.0, 47.0, 47.0],
        "B": [5.0, 25.0, 25.0, 25.0],
        "C": [30.0, 45.0, 104.0, 104.0],
        "D": [45.0, 70.0, 82.0, 82.0],
    }
    # A's decode ran as one unit of two steps: no arrival could reach its replica
    steps0 = res.replicas[0].steps
    assert steps0["n_steps"].tolist() == [1, 2]


def test_per_replica_and_fleet_results():
    res = run("least-tokens")
    assert res.n_replicas == 2 and res.router == "least-tokens"
    assert [len(r.requests) for r in res.replicas] == [1, 3]
    assert list(res.replicas[1].requests["request_id"]) == ["B", "C", "D"]
    table = res.replica_table()
    assert table["n_requests"].tolist() == [1, 3]
    # fleet: every step of every replica, by start time, with its replica
    steps = res.fleet.steps
    assert len(steps) == sum(len(r.steps) for r in res.replicas)
    assert steps["start_ms"].is_monotonic_increasing
    assert set(steps["replica"]) == {0, 1}
    summary = res.summary()
    busy = sum(r.steps["duration_ms"].sum() for r in res.replicas)
    span = 104.0 - 0.0
    assert summary["busy_fraction"] == pytest.approx(busy / span / 2)
    assert summary["n_replicas"] == 2 and summary["calibrated"] is False
    assert summary["step_time"].startswith("LinearStepTime")
    # Little's law holds for the fleet and for each replica
    for r in (res.fleet, *res.replicas):
        L, lw = r.littles_law()
        assert L == pytest.approx(lw, rel=1e-12)


# --- one replica is the engine -------------------------------------------------------------


POLICY_CASES = [
    ("static", {"batch_size": 4, "timeout_ms": 50.0}),
    ("dynamic", {"max_batch_size": 8, "max_wait_ms": 20.0}),
    ("adaptive", {}),
    ("continuous", {"max_num_seqs": 16}),
    ("continuous", {"chunked_prefill": True, "max_num_batched_tokens": 512}),
]


LOADS = [{}, {"rate": 40.0, "seed": 3}, {"concurrency": 12}]
# the fast tier: every router, every policy and every arrival mode at least once
FAST = {
    ("round-robin", 0, 0),
    ("least-requests", 3, 1),
    ("least-tokens", 4, 2),
    ("least-tokens", 1, 0),
    ("least-requests", 2, 2),
    ("round-robin", 4, 1),
}
ONE_REPLICA_CASES = [
    pytest.param(
        router,
        *POLICY_CASES[i],
        LOADS[j],
        marks=() if (router, i, j) in FAST else pytest.mark.slow,
        id=f"{router}-{POLICY_CASES[i][0]}{i}-load{j}",
    )
    for router in ("round-robin", "least-requests", "least-tokens")
    for i in range(len(POLICY_CASES))
    for j in range(len(LOADS))
]


@pytest.mark.parametrize("router, policy, options, load", ONE_REPLICA_CASES)
def test_one_replica_is_exactly_the_engine(lognormal_requests, router, policy, options, load):
    df = lognormal_requests(200, seed=5, prompt_median=300, gen_median=60)
    df["arrival_s"] = np.cumsum(np.random.default_rng(1).exponential(1 / 30.0, len(df)))
    kw = dict(model="llama-3-8b", gpu="a100-80gb", kv_blocks=4000, **load, **options)
    one = simulate(df, policy, **kw)
    fleet = simulate_fleet(df, policy, replicas=1, router=router, **kw)
    pd.testing.assert_frame_equal(one.requests, fleet.fleet.requests.drop(columns="replica"))
    pd.testing.assert_frame_equal(one.requests, fleet.replicas[0].requests)
    pd.testing.assert_frame_equal(one.steps, fleet.replicas[0].steps)
    assert fleet.replicas[0].summary() == one.summary()
    s1, s2 = one.summary(), fleet.fleet.summary()
    assert s1.keys() == s2.keys()
    assert all(s1[k] == s2[k] or (s1[k] != s1[k] and s2[k] != s2[k]) for k in s1)


# --- the look-ahead of state-aware routers changes nothing --------------------------------


class _Blind(Router):
    """Least-load routing without look-ahead: every replica stops at every arrival."""

    def quiet_arrivals(self, load, others, upcoming) -> int:
        return 0


class BlindRequests(_Blind, LeastRequestsRouter):
    name = "test-blind-least-requests"


class BlindTokens(_Blind, LeastTokensRouter):
    name = "test-blind-least-tokens"


LOOK_AHEAD_CASES = [
    pytest.param(
        router,
        blind,
        replicas,
        chunked,
        marks=() if (replicas, chunked) in {(3, False), (2, True)} else pytest.mark.slow,
        id=f"{router}-{replicas}-{'chunked' if chunked else 'plain'}",
    )
    for router, blind in (("least-requests", BlindRequests()), ("least-tokens", BlindTokens()))
    for replicas in (2, 3, 5)
    for chunked in (False, True)
]


@pytest.mark.parametrize("router, blind, replicas, chunked", LOOK_AHEAD_CASES)
def test_look_ahead_matches_stopping_at_every_arrival(
    lognormal_requests, router, blind, replicas, chunked
):
    df = lognormal_requests(300, seed=replicas, prompt_median=400, gen_median=80)
    kw = dict(
        model="llama-3-8b",
        gpu="a100-80gb",
        rate=25.0 * replicas,
        seed=7,
        kv_blocks=3000,
        chunked_prefill=chunked,
    )
    fast = simulate_fleet(df, "continuous", replicas=replicas, router=router, **kw)
    slow = simulate_fleet(df, "continuous", replicas=replicas, router=blind, **kw)
    a, b = fast.requests, slow.requests
    np.testing.assert_array_equal(a["replica"], b["replica"])
    for col in TIMES:
        np.testing.assert_allclose(a[col], b[col], rtol=0, atol=1e-6)
    # the look-ahead saves work: fewer units of work than stopping at every arrival
    assert len(fast.fleet.steps) < len(slow.fleet.steps)


def test_router_registry_and_errors():
    assert list(ROUTERS)[:3] == ["round-robin", "least-requests", "least-tokens"]
    assert make_router("Least-Tokens").name == "least-tokens"
    with pytest.raises(InputError, match="unknown router"):
        make_router("random-ish")
    with pytest.raises(InputError, match="Router subclass"):
        register_router(int)
    df = four()
    with pytest.raises(InputError, match="closed loop"):
        simulate_fleet(df, replicas=2, concurrency=4, step_time=LIN, kv_blocks=100)
    with pytest.raises(InputError, match="replicas"):
        simulate_fleet(df, replicas=0, step_time=LIN, kv_blocks=100)


def test_quiet_arrivals_water_filling():
    lor, lot = LeastRequestsRouter(), LeastTokensRouter()
    # others at 1 and 3 below a load of 4: 3 + 1 arrivals fill them up to 4
    assert lor.quiet_arrivals(4, [1, 3], np.ones(10, dtype=np.int64)) == 4
    assert lor.quiet_arrivals(0, [0, 0], np.ones(10, dtype=np.int64)) == 0
    # tokens: others [0, 10], load 25, arrivals 14, 12, 9: 0+14 -> [10, 14]; 10+12 -> [14, 22];
    # 14+9 -> [22, 23]: still below 25 after three; nothing more is known
    assert lot.quiet_arrivals(25, [0, 10], np.array([14, 12, 9])) == 3
    # ... then 22+5 -> [23, 27]; 23+30 -> [27, 53]: the sixth arrival may come to it
    assert lot.quiet_arrivals(25, [0, 10], np.array([14, 12, 9, 5, 30, 1])) == 5
