"""Tests of batchlab.capacity: the fewest replicas against brute force over every count, the
monotonicity check, prices, the grid search in-process, on executors and on dask, and the
replica table an SLO slider reads."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from batchlab.capacity import (
    CapacityPlan,
    PriceTable,
    ServingConfig,
    capacity_search,
    configs_from_space,
    fewest_in_table,
    fewest_replicas,
    gpus_per_replica,
    replica_table,
)
from batchlab.errors import InputError
from batchlab.roofline import RooflineStepTime
from batchlab.simulate import ROUTERS, RoundRobinRouter, simulate_fleet
from batchlab.slo import SLO
from batchlab.sweep import pareto_front

SLO_TEST = SLO(ttft_p99_ms=300, tpot_p99_ms=60)
#: the SLO of the brute-force checks: on this trace (calibrated A100 step times) every router
#: meets it with 5-7 of the 8 replicas tried, one fleet (least-requests, chunked) not monotone.
SLO_BRUTE = SLO(ttft_p99_ms=400, tpot_p99_ms=60)
PRICES = PriceTable({"a100-80gb": 1.3, "h100-sxm": 3.0}, source="test", date="2026-05")


@pytest.fixture(scope="module")
def trace(lognormal_requests):
    df = lognormal_requests(200, seed=11, prompt_median=600, gen_median=120)
    df["arrival_s"] = np.cumsum(np.random.default_rng(2).exponential(1 / 60.0, len(df)))
    return df


def brute_force(trace, slo, config, counts, traffic=1.0):
    """Simulate every count in full; the SLO met at each (and the fleets)."""
    df = trace.copy()
    df["arrival_s"] = (
        df["arrival_s"].iloc[0] + (df["arrival_s"] - df["arrival_s"].iloc[0]) / traffic
    )
    out = {}
    for n in counts:
        res = simulate_fleet(
            df,
            replicas=n,
            router=config.router,
            model=config.model,
            gpu=config.gpu,
            **config.policy_options(),
        )
        out[n] = slo.evaluate(res)
    return out


def check_against_brute_force(trace, config):
    brute = brute_force(trace, SLO_BRUTE, config, range(1, 9))
    met = {n for n, rep in brute.items() if rep.met}
    found = fewest_replicas(trace, SLO_BRUTE, config, max_replicas=8)
    # what bisection guarantees: the answer meets the SLO, one replica fewer misses it
    assert found.replicas in met and (found.replicas == 1 or found.replicas - 1 not in met)
    assert found.report.observed == brute[found.replicas].observed
    for row in found.probes.itertuples():
        assert row.met == brute[row.replicas].met
    # on a monotone trace it is the smallest count; checking every count above it, the
    # monotonicity flag is exactly brute force's
    monotone = all(n in met for n in range(min(met), 9))
    if monotone:
        assert found.replicas == min(met) and found.monotone
    every = fewest_replicas(trace, SLO_BRUTE, config, max_replicas=8, check_above=8)
    above = all(n in met for n in range(every.replicas, 9))
    below = not any(n in met for n in every.probes["replicas"] if n < every.replicas)
    assert every.monotone == (above and below)
    # without the early stop, the same answer and every probe's figures
    full = fewest_replicas(trace, SLO_BRUTE, config, max_replicas=8, early_stop=False)
    assert full.replicas == found.replicas
    for row in full.probes.itertuples():
        assert row.ttft_p99_ms == brute[row.replicas].observed["ttft_p99_ms"]
        assert not row.stopped_early
    return found


def test_search_matches_brute_force(trace):
    found = check_against_brute_force(
        trace, ServingConfig("a100-80gb", "llama-3-8b", router="least-tokens")
    )
    assert found.replicas >= 2  # an interesting case: one replica is not enough
    # galloping 1, 2, 4, ... then bisection, then one count above
    assert found.probes["replicas"].iloc[0] == 1
    assert found.replicas + 1 in set(found.probes["replicas"])
    assert found.probes["stopped_early"].any()  # runs that had missed the SLO were cut short
    row = found.row()
    assert row["replicas"] == found.replicas and row["gpus"] == found.replicas
    assert row["step_time"] == "RooflineStepTime('llama-3-8b', 'a100-80gb')"
    assert row["calibrated"] == bool(
        getattr(RooflineStepTime("llama-3-8b", "a100-80gb"), "calibrated", False)
    )


@pytest.mark.slow
@pytest.mark.parametrize("router", list(ROUTERS)[:3])
@pytest.mark.parametrize("chunked", [False, True])
def test_search_matches_brute_force_every_router(trace, router, chunked):
    check_against_brute_force(
        trace, ServingConfig("a100-80gb", "llama-3-8b", router=router, chunked_prefill=chunked)
    )


@pytest.mark.slow
def test_a_real_fleet_that_is_not_monotone(trace):
    # least outstanding requests with chunked prefill on this trace (calibrated step times):
    # 6 replicas meet a p99 TTFT of 320 ms (300 ms), 7 miss it (536 ms), 8 meet it again
    slo = SLO(ttft_p99_ms=320, tpot_p99_ms=60)
    config = ServingConfig("a100-80gb", "llama-3-8b", router="least-requests", chunked_prefill=True)
    brute = brute_force(trace, slo, config, range(1, 9))
    assert [brute[n].met for n in range(1, 9)] == [False] * 5 + [True, False, True]
    unchecked = fewest_replicas(trace, slo, config, max_replicas=8, check_above=0)
    assert unchecked.replicas == 6 and unchecked.monotone  # nothing above checked
    one = fewest_replicas(trace, slo, config, max_replicas=8)
    assert one.replicas == 6 and not one.monotone
    assert one.note == "not monotone: met with 6 replicas but missed again with 7"


class Lopsided(RoundRobinRouter):
    """Round robin, except with three replicas everything goes to the first."""

    name = "test-lopsided"

    def assign(self, n_replicas, order, requests):
        if n_replicas == 3:
            return np.zeros(order.size, dtype=np.int64)
        return super().assign(n_replicas, order, requests)


@pytest.fixture()
def lopsided():
    ROUTERS[Lopsided.name] = Lopsided
    try:
        yield Lopsided.name
    finally:
        ROUTERS.pop(Lopsided.name)


def test_monotonicity_check_says_when_it_fails(trace, lopsided):
    # with 3 replicas the fleet is one replica: met with 2 (p99 TTFT 140 ms), missed with 3
    # (648 ms, as one replica), met with 4 (107 ms)
    config = ServingConfig("h100-sxm", "llama-3-8b", router=lopsided)
    slo = SLO(ttft_p99_ms=150)
    brute = brute_force(trace, slo, config, [1, 2, 3, 4], traffic=1.0)
    assert [brute[n].met for n in (1, 2, 3, 4)] == [False, True, False, True]
    found = fewest_replicas(trace, slo, config, traffic=1.0, max_replicas=8)
    assert found.replicas == 2 and not found.monotone
    assert found.note == "not monotone: met with 2 replicas but missed again with 3"
    assert found.row()["monotone"] is False
    # checking two counts above
    two = fewest_replicas(trace, slo, config, traffic=1.0, max_replicas=8, check_above=2)
    assert set(two.probes["replicas"]) >= {3, 4}
    none = fewest_replicas(trace, slo, config, traffic=1.0, max_replicas=8, check_above=0)
    assert none.monotone and none.note == "not checked above (check_above=0)"


def test_infeasible_slo(trace):
    config = ServingConfig("a100-80gb", "llama-3-8b")
    found = fewest_replicas(trace, SLO(ttft_p99_ms=1.0), config, max_replicas=8)
    assert found.replicas is None and not found.feasible
    assert found.probes["replicas"].tolist() == [1, 2, 4, 8]
    assert found.note == "the SLO is not met with up to 8 replicas"
    row = found.row()
    assert math.isnan(row["replicas"]) and row["feasible"] is False


def test_configs_and_prices(tmp_path):
    grid = configs_from_space(
        {
            "gpu": ["a100-80gb", "h100-sxm"],
            "model": ["llama-3-8b"],
            "chunked_prefill": [False, True],
        }
    )
    assert [(c.gpu, c.chunked_prefill) for c in grid] == [
        ("a100-80gb", False),
        ("a100-80gb", True),
        ("h100-sxm", False),
        ("h100-sxm", True),
    ]
    assert grid[0].router == "round-robin" and grid[0].max_num_seqs == 256
    with pytest.raises(InputError, match="model"):
        configs_from_space({"gpu": ["h100-sxm"]})
    with pytest.raises(InputError, match="unknown configuration field"):
        configs_from_space({"gpu": ["h100-sxm"], "model": ["llama-3-8b"], "batch": [1]})
    with pytest.raises(InputError, match="unknown GPU"):
        ServingConfig("tpu-v9", "llama-3-8b")
    with pytest.raises(InputError, match="unknown router"):
        ServingConfig("h100-sxm", "llama-3-8b", router="nearest")
    assert gpus_per_replica("4xa100-80gb") == (4, "a100-80gb")
    assert PRICES.price_per_hour("4xa100-80gb", 2) == pytest.approx(8 * 1.3)
    with pytest.raises(InputError, match="no price for 'l4'"):
        PRICES.price_per_hour("l4")
    # the example table of the docs reads, with its source and date
    example = PriceTable.read("docs/gpu_prices_example.csv")
    assert set(example.prices) == {"a100-80gb", "h100-sxm", "h200-sxm"}
    assert (
        example.currency == "USD"
        and example.date == "2026-05"
        and "mercatus" in example.source.lower()
    )
    # errors name the file, the line and the field
    bad = tmp_path / "p.csv"
    bad.write_text("gpu,price_per_gpu_hour\nh100-sxm,3\na100-80gb,-1\n")
    with pytest.raises(InputError, match=r"p\.csv:3.*price_per_gpu_hour.*>= 0"):
        PriceTable.read(bad)
    bad.write_text("gpu,price_per_gpu_hour\nh100-sxm,3\nh100-sxm,4\n")
    with pytest.raises(InputError, match=r"p\.csv:3.*priced twice"):
        PriceTable.read(bad)
    bad.write_text("gpu,price_per_gpu_hour\nb900,3\n")
    with pytest.raises(InputError, match=r"p\.csv:2.*unknown GPU preset"):
        PriceTable.read(bad)
    bad.write_text("gpu,usd\nh100-sxm,3\n")
    with pytest.raises(InputError, match="price_per_gpu_hour"):
        PriceTable.read(bad)
    with pytest.raises(InputError, match="no such price table"):
        PriceTable.read(tmp_path / "missing.csv")


GRID = {
    "gpu": ["a100-80gb", "h100-sxm"],
    "model": ["llama-3-8b"],
    "max_num_batched_tokens": [None, 512],
    "router": ["round-robin", "least-tokens"],
}


@pytest.fixture(scope="module")
def plan(trace):
    return capacity_search(
        trace, SLO_TEST, GRID, traffic=[1.0, 2.0], prices=PRICES, max_replicas=16, progress=False
    )


def test_capacity_search_table(trace, plan):
    t = plan.table
    assert len(t) == 2 * 2 * 2 * 2
    # a prompt longer than 512 tokens without chunked prefill cannot be served: said, not hidden
    bad = t["max_num_batched_tokens"] == 512
    assert t.loc[bad, "error"].str.contains("max_num_batched_tokens").all()
    assert not t.loc[bad, "feasible"].any()
    good = t[~bad]
    assert good["error"].isna().all() and good["feasible"].all()
    # every row is the search of its configuration
    for row in good.itertuples():
        config = ServingConfig(row.gpu, row.model, router=row.router)
        traffic = 1.0 if row.traffic == "trace ×1" else 2.0
        found = fewest_replicas(trace, SLO_TEST, config, traffic=traffic, max_replicas=16)
        assert row.replicas == found.replicas
        assert row.ttft_p99_ms == found.report.observed["ttft_p99_ms"]
        assert row.cost_per_hour == pytest.approx(found.replicas * PRICES.prices[row.gpu])
    assert (t.loc[t["traffic"] == "trace ×2", "offered_rps"] > 1.99 * t["offered_rps"].min()).all()
    # the cheapest feasible row of each traffic level, and the Pareto front of each
    assert list(plan.cheapest["traffic"]) == ["trace ×1", "trace ×2"]
    for level, part in good.groupby("traffic"):
        best = plan.cheapest.set_index("traffic").loc[level]
        assert best["cost_per_hour"] == part["cost_per_hour"].min()
        front = pareto_front(part, minimize=["cost_per_hour", "ttft_p99_ms"])
        got = plan.pareto[plan.pareto["traffic"] == level]
        assert sorted(got.index) == sorted(front.index)
    assert plan.currency == "USD"


def test_capacity_search_on_an_executor_gives_the_same_table(trace, plan):
    with ThreadPoolExecutor(max_workers=2) as pool:
        other = capacity_search(
            trace,
            SLO_TEST,
            GRID,
            traffic=[1.0, 2.0],
            prices=PRICES,
            max_replicas=16,
            progress=False,
            executor=pool,
        )
    pd.testing.assert_frame_equal(plan.table, other.table)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_capacity_search_on_dask_gives_the_same_table(trace, plan, dask_client):
    other = capacity_search(
        trace,
        SLO_TEST,
        GRID,
        traffic=[1.0, 2.0],
        prices=PRICES,
        max_replicas=16,
        progress=False,
        executor=dask_client,
    )
    pd.testing.assert_frame_equal(plan.table, other.table)


def test_without_prices_ranks_by_gpus(trace):
    configs = [ServingConfig("a100-80gb", "llama-3-8b"), ServingConfig("2xa100-80gb", "llama-3-8b")]
    p = capacity_search(trace, SLO_TEST, configs, max_replicas=16, progress=False)
    assert p.table["cost_per_hour"].isna().all() and p.currency == ""
    assert p.cheapest["gpus"].iloc[0] == p.table["gpus"].min()
    assert (p.table["gpus"] == p.table["replicas"] * np.array([1, 2])).all()
    with pytest.raises(InputError, match="latency"):
        capacity_search(trace, SLO_TEST, configs, latency="p99", progress=False)
    with pytest.raises(InputError, match="no price"):
        capacity_search(trace, SLO_TEST, [ServingConfig("l4", "llama-3-8b")], prices=PRICES)


class CalibratedLinear(RooflineStepTime):
    """A step-time model that says it is calibrated."""

    calibrated = True

    def __repr__(self) -> str:
        return "CalibratedLinear()"


def test_results_name_the_step_time_model(trace):
    config = ServingConfig("h100-sxm", "llama-3-8b")
    found = fewest_replicas(
        trace, SLO_TEST, config, step_time=lambda model, gpu: CalibratedLinear(model, gpu)
    )
    assert found.step_time == "CalibratedLinear()" and found.calibrated
    with pytest.raises(InputError, match="StepTimeModel"):
        fewest_replicas(trace, SLO_TEST, config, step_time=lambda m, g: 3)
    res = simulate_fleet(trace, replicas=2, step_time=CalibratedLinear("llama-3-8b", "h100-sxm"))
    assert res.calibrated and res.fleet.calibrated and res.summary()["calibrated"]


def test_replica_table_answers_any_slo(trace):
    configs = [ServingConfig("a100-80gb", "llama-3-8b"), ServingConfig("h100-sxm", "llama-3-8b")]
    loose = SLO(ttft_p99_ms=2000, tpot_p99_ms=60)
    table = replica_table(trace, loose, configs, range(1, 6), progress=False)
    assert len(table) == 2 * 5
    for limit in (150.0, 1000.0):
        slo = loose.replace(ttft_p99_ms=limit)
        read = fewest_in_table(table, slo)
        for row, config in zip(read.itertuples(), configs, strict=True):
            found = fewest_replicas(trace, slo, config, max_replicas=5)
            expect = found.replicas if found.replicas is not None else math.nan
            assert row.replicas == expect or (math.isnan(row.replicas) and math.isnan(expect))
    # stopped runs (missing even the loosest SLO) miss every stricter one
    assert table.loc[table["stopped_early"], "ttft_p99_ms"].isna().all()


def test_plan_is_a_dataclass_with_its_slo(plan):
    assert isinstance(plan, CapacityPlan) and plan.slo == SLO_TEST
    assert plan.latency == "ttft_p99_ms"
    cols = list(plan.table.columns)
    assert cols[:6] == [
        "gpu",
        "model",
        "max_num_seqs",
        "max_num_batched_tokens",
        "chunked_prefill",
        "router",
    ]
    for c in (
        "replicas",
        "gpus",
        "feasible",
        "price_per_gpu_hour",
        "cost_per_hour",
        "goodput_share",
        "goodput_rps",
        "ttft_p99_ms",
        "tpot_p99_ms",
        "e2e_p99_ms",
        "monotone",
        "note",
        "probes",
        "step_time",
        "calibrated",
        "error",
    ):
        assert c in cols
