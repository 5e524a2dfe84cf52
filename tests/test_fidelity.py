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


def test_measurement_with_served_segments_interleaves_them_with_the_grid():
    # served_requests: after each timed pass over the grid, a served segment of varied-length
    # requests with Poisson arrivals through the serving driver; its steps carry batch size 0,
    # alternate with the grid's in time, and are fitted with them
    config = measure.EngineConfig(
        num_blocks=128, page_size=32, max_batch_tokens=128, max_requests_per_batch=4
    )
    steps = measure.measure_continuous(
        "tiny", [1, 4], [16, 48], 8, warmup=1, repeats=2, threads=1, config=config,
        served_requests=12, served_load=(0.4, 0.8),
    )  # fmt: skip
    served = measure.served_segment_mask(steps)
    settings = steps.attrs["settings"]
    assert settings["served_requests"] == 12 and len(settings["served_rates_rps"]) == 2
    # (the rates are stored to 3 decimals)
    assert settings["served_rates_rps"][1] == pytest.approx(
        2 * settings["served_rates_rps"][0], abs=2e-3
    )
    assert steps["start_ms"].is_monotonic_increasing  # one clock over the sessions
    runs = steps.groupby("run")
    # grid passes: warm-up, timed, served, timed, served (4 grid runs a pass)
    kinds = ["served" if r["batch_size"].iloc[0] == 0 else "grid" for _, r in runs]
    assert kinds == ["grid"] * 8 + ["served"] + ["grid"] * 4 + ["served"]
    assert not steps.loc[served, "warmup"].any()
    seg = steps[served]
    # 12 requests each segment: 12 first tokens, prompts of varied lengths, decodes beside
    assert seg.groupby("run")["prefill_seqs"].sum().tolist() == [12, 12]
    assert seg["decode_seqs"].isin(range(0, 5)).all() and (seg["step_ms"] > 0).all()
    fit = measure.fit_step_time(steps)
    grid_only = measure.fit_step_time(steps, served=False)
    assert fit.residual.n_steps == int((~steps["warmup"]).sum())
    assert grid_only.residual.n_steps == int((~steps["warmup"] & ~served).sum())
    check = measure.step_agreement(seg, grid_only).set_index("kind")
    assert 0.5 < check.loc["all", "ratio"] < 2.0, check.to_string()
