"""Simulator benchmark, run by hand: `python benchmarks/bench_simulate.py`.

Simulates 1e5 requests (lognormal lengths: prompt median 512, gen median 128, clipped to 8192
and 2048 tokens; Poisson arrivals) on Llama-2-7B / H100 with each policy, once with the
data-sheet roofline (``ideal``) and once with the calibrated kernels (``calibrated``, the
default step times), and prints the wall times, their ratio and the simulated throughput.

Targets (2-core machine): the continuous policy on 1e5 requests in under 10 s; calibrated step
times cost at most ~1.5x the ideal roofline's wall time (ratios measured in one run).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd

from batchlab.roofline import RooflineStepTime
from batchlab.simulate import simulate

CASES = [
    ("continuous", {}),
    ("continuous", {"chunk_size": 512}),
    ("dynamic", {"max_batch_size": 32, "max_wait_ms": 50}),
    ("static", {"batch_size": 16, "timeout_ms": 200}),
]


def workload(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "prompt_len": np.clip(rng.lognormal(np.log(512), 0.8, n), 1, 8192).astype(np.int64),
            "gen_len": np.clip(rng.lognormal(np.log(128), 0.9, n), 1, 2048).astype(np.int64),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="requests")
    ap.add_argument("--rate", type=float, default=20.0, help="arrivals per second (Poisson)")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--padded-n", type=int, default=20_000, help="requests for static/dynamic")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, numpy {np.__version__}; {args.model} on {args.gpu}, "
        f"{args.rate:g} req/s"
    )
    print(
        f"{'requests':>9} {'policy':<50} {'step times':<11} {'wall s':>7} {'x ideal':>7} "
        f"{'rows':>8} {'sim rps':>8} {'out tok/s':>10} {'p99 latency s':>14}"
    )
    full = workload(args.n, seed=1)
    cases = [(p, o, {"rate": args.rate, "seed": 2}) for p, o in CASES]
    cases.append(("continuous", {}, {"concurrency": 128}))
    for policy, opts, load in cases:
        n = args.n if policy == "continuous" else min(args.n, args.padded_n)
        df = full.iloc[:n]
        label = policy + (f" {opts}" if opts else "")
        if "concurrency" in load:
            label += f", {load['concurrency']} clients"
        walls = {}
        for kind in ("ideal", "calibrated"):
            model = RooflineStepTime(args.model, args.gpu, calibrated=kind == "calibrated")
            t0 = time.perf_counter()
            res = simulate(
                df, policy, model=args.model, gpu=args.gpu, step_time=model, **load, **opts
            )
            walls[kind] = wall = time.perf_counter() - t0
            s = res.summary()
            print(
                f"{n:>9,} {label:<50} {kind:<11} {wall:>7.2f} {wall / walls['ideal']:>7.2f} "
                f"{len(res.steps):>8,} {s['throughput_rps']:>8.2f} "
                f"{s['output_tokens_per_s']:>10,.0f} {s['latency_p99_ms'] / 1e3:>14.2f}"
            )


if __name__ == "__main__":
    main()
