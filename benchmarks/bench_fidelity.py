"""Simulation vs real execution, run by hand: `python benchmarks/bench_fidelity.py`.

On this machine's CPU: measure transformers' continuous-batching engine step by step with the
tiny Llama (`batchlab measure --engine continuous`, one PyTorch thread: the grid of batch sizes
and prompt lengths, each timed pass followed by a served segment of `--served` varied-length
requests with Poisson arrivals), fit the step-time model on every step (its `wake_ms`: the
extra time of a step after the engine sat idle), then serve a few hundred requests with Poisson
arrivals at three rates through the same engine and simulate the same arrivals with the fitted
model (batchlab.measure.fidelity). The line "measurement's served segments" prices the
segments' steps with a fit of the grid alone: the grid against serving, in one measurement
whose parts alternate in time (a machine changing speed affects both alike).
Prints predicted vs real throughput and the median and p99 time to first token and end-to-end
latency, their ratios, and the load average (the machine is shared: run it when it is quiet).

Goal: throughput and medians within ±20 %, p99 within ±35 %.

``steps_ratio`` (the model's time for each served run's own steps over their real time) says
whether the machine kept the speed it had at the measurement: on a shared machine it often
does not (other work starts or stops), and a run whose steps_ratio is far from 1 cannot be
judged; ``ratio_at_served_speed`` re-simulates with the model at the served run's speed (a
diagnosis of the scheduling and the model's shape, not a prediction).

Rates default to 30 %, 60 % and 85 % of the capacity the fitted model predicts (the
saturated throughput of the simulator), so the three loads mean the same on any machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd

from batchlab import measure
from batchlab.simulate import simulate
from batchlab.workload import lognormal_workload

GOALS = {
    "throughput_rps": 0.20,
    "ttft_p50_ms": 0.20,
    "latency_p50_ms": 0.20,
    "ttft_p99_ms": 0.35,
    "latency_p99_ms": 0.35,
}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def workload(n: int, seed: int) -> pd.DataFrame:
    """Chat-like requests sized for the tiny model on a CPU: prompts median 96 tokens (at
    most 384), generations median 24 tokens (at most 64)."""
    return lognormal_workload(
        n,
        seed=seed,
        prompt_median=96,
        prompt_sigma=0.6,
        gen_median=24,
        gen_sigma=0.5,
        max_prompt_len=384,
        max_gen_len=64,
    )


def capacity_rps(requests: pd.DataFrame, step_time, config: measure.EngineConfig) -> float:
    """Saturated throughput the fitted model predicts (every request arriving at once)."""
    burst = requests.assign(arrival_s=0.0)
    sim = simulate(burst, "continuous", step_time=step_time, **config.simulate_options())
    return float(sim.summary()["throughput_rps"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per rate")
    ap.add_argument("--rates", help="comma-separated requests/s (default: 30/60/85 %% of capacity)")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measurement", help="a step table to fit on (default: measure now)")
    ap.add_argument("--save", help="save the measurement here (CSV)")
    ap.add_argument(
        "--served",
        type=int,
        default=48,
        help="requests of each served segment of the measurement (0: the grid alone)",
    )
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}; {load()} at start"
    )
    config = measure.EngineConfig(
        num_blocks=512, page_size=32, max_batch_tokens=256, max_requests_per_batch=8
    )
    model = measure.tiny_llama(seed=args.seed)
    t0 = time.perf_counter()
    if args.measurement:
        steps = measure.load_measurement(args.measurement)
    else:
        steps = measure.measure_continuous(
            model,
            [1, 2, 4, 8],
            [32, 96, 256],
            32,
            warmup=1,
            repeats=3,
            seed=args.seed,
            threads=args.threads,
            config=config,
            served_requests=args.served,
        )
        if args.save:
            measure.save_measurement(steps, args.save)
    fitted = measure.fit_step_time(steps)
    print(
        f"measurement: {len(steps):,} steps in {time.perf_counter() - t0:.0f} s, "
        f"{steps.attrs.get('settings', {}).get('num_threads', '?')} thread(s); {load()}"
    )
    print(f"fitted: {fitted}")
    served = measure.served_segment_mask(steps)
    if served.any():  # the grid against serving, in the measurement (drift-controlled)
        grid_only = measure.fit_step_time(steps, served=False)
        agree = measure.step_agreement(steps[served], grid_only).set_index("kind")
        parts = ", ".join(
            f"{kind} {int(row.n_steps)} steps {row.ratio:.2f}"
            for kind, row in agree.iterrows()
            if row.n_steps
        )
        print(
            f"measurement's served segments ({int(served.sum())} steps at "
            f"{steps.attrs['settings'].get('served_rates_rps')} requests/s), "
            f"the grid's fit predicted / real: {parts}"
        )
    requests = workload(args.requests, seed=args.seed)
    if args.rates:
        rates = [float(r) for r in args.rates.split(",")]
    else:
        cap = capacity_rps(requests, fitted, config)
        rates = [round(f * cap, 2) for f in (0.30, 0.60, 0.85)]
        print(f"predicted capacity {cap:.2f} requests/s; rates {rates}")
    t0 = time.perf_counter()
    runs: list[measure.EngineRun] = []
    table = measure.fidelity(
        model,
        requests,
        rates,
        fitted,
        config=config,
        threads=args.threads,
        seed=args.seed,
        runs=runs,
    )
    print(
        f"served {len(rates)} x {args.requests} requests in {time.perf_counter() - t0:.0f} s; {load()}"
    )
    # the served runs' own steps, priced by the model: away from 1, the step times are off on
    # that run (a machine slower or faster than at the measurement, or a misfit composition)
    for rate, run in zip(rates, runs, strict=True):
        agree = measure.step_agreement(run.steps, fitted).set_index("kind")
        parts = ", ".join(
            f"{kind} {int(row.n_steps)} steps {row.ratio:.2f}"
            for kind, row in agree.iterrows()
            if row.n_steps
        )
        print(f"rate {rate:g}: served steps, predicted / real time: {parts}")
    table["goal"] = table["metric"].map(GOALS)
    table["met"] = np.abs(table["ratio"] - 1) <= table["goal"]
    print(
        table.to_string(
            index=False,
            formatters={
                "real": "{:,.2f}".format,
                "predicted": "{:,.2f}".format,
                "ratio": "{:.3f}".format,
                "steps_ratio": "{:.3f}".format,
                "ratio_at_served_speed": "{:.3f}".format,
                "goal": "±{:.0%}".format,
            },
        )
    )
    print(f"goals met: {int(table['met'].sum())} of {len(table)}; {load()} at the end")


if __name__ == "__main__":
    main()
