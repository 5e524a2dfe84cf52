"""Simulation against real execution, small: the continuous-batching engine serving Poisson
arrivals vs the simulator on the step-time model fitted on a measurement of that engine (the
loop of benchmarks/bench_fidelity.py, with a few requests and a loose band)."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab import measure
from batchlab.workload import lognormal_workload

pytestmark = pytest.mark.slow  # real generations with torch, ~30 s


def test_simulated_serving_agrees_with_the_engine_within_a_loose_band():
    config = measure.EngineConfig(
        num_blocks=128, page_size=32, max_batch_tokens=128, max_requests_per_batch=4
    )
    model = measure.tiny_llama(seed=0)
    steps = measure.measure_continuous(
        model, [1, 2, 4], [16, 64], 12, warmup=1, repeats=2, threads=1, config=config
    )
    fitted = measure.fit_step_time(steps)
    requests = lognormal_workload(
        24,
        seed=1,
        prompt_median=40,
        prompt_sigma=0.5,
        gen_median=10,
        gen_sigma=0.4,
        max_prompt_len=96,
        max_gen_len=20,
    )
    runs = []
    table = measure.fidelity(
        model, requests, [6.0], fitted, config=config, threads=1, seed=2, runs=runs
    )
    assert list(table["metric"]) == list(measure.FIDELITY_METRICS)
    assert (table["n_requests"] == 24).all() and np.isfinite(table["ratio"]).all()
    # the served run's own steps, priced by the model: one figure per rate, the "all" row
    (run,) = runs
    agree = measure.step_agreement(run.steps, fitted).set_index("kind")
    assert agree.loc["all", "n_steps"] == len(run.steps) == agree["n_steps"].iloc[:3].sum()
    assert (table["steps_ratio"] == agree.loc["all", "ratio"]).all()
    assert 0.5 < agree.loc["all", "ratio"] < 2.0, agree.to_string()
    assert np.isfinite(table["ratio_at_served_speed"]).all()
    ratio = table.set_index("metric")["ratio"]
    # a loose band: timing on a shared CPU is noisy; the benchmark has the real goals
    for metric in ("throughput_rps", "latency_p50_ms"):
        assert 0.5 < ratio[metric] < 2.0, table.to_string()
