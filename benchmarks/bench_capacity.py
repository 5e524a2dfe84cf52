"""Capacity-search benchmark, run by hand: `python benchmarks/bench_capacity.py`.

The Azure conversation trace (58 minutes, 19,366 requests; ../shared/traces) over 48 serving
configurations (3 GPUs × max_num_seqs 64/128/256/512 × chunked prefill off/on × round-robin /
least-tokens routing, Llama-3-8B), the fewest replicas of each meeting a chat SLO (p99 TTFT
2 s, p99 time per output token 100 ms) by galloping and bisection, with the monotonicity check
one count above. Prints the wall time in-process and, with ``--dask N``, on a local dask
cluster of N single-threaded workers, checks the two tables are equal, and prints the load
average before and after (the machine is shared).

Target (2-core machine, in-process): under 3 minutes at the trace's own rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd

from batchlab.capacity import PriceTable, capacity_search
from batchlab.datasets import load_trace
from batchlab.slo import SLO

GRID = {
    "gpu": ["a100-80gb", "h100-sxm", "h200-sxm"],
    "model": ["llama-3-8b"],
    "max_num_seqs": [64, 128, 256, 512],
    "chunked_prefill": [False, True],
    "router": ["round-robin", "least-tokens"],
}
SLO_CHAT = SLO(ttft_p99_ms=2000, tpot_p99_ms=100)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traffic", type=float, nargs="+", default=[1.0], help="speedups")
    ap.add_argument("--dask", type=int, default=0, help="also run on a local dask cluster")
    ap.add_argument("--prices", default="docs/gpu_prices_example.csv")
    ap.add_argument("--first-s", type=float, default=None, help="only the first S seconds")
    args = ap.parse_args()
    trace = load_trace("azure-conv-2023")
    if args.first_s is not None:
        trace = trace[trace["arrival_s"] < args.first_s]
    prices = PriceTable.read(args.prices)
    n_cfg = int(np.prod([len(v) for v in GRID.values()]))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {len(trace):,} requests, {n_cfg} configurations × "
        f"{len(args.traffic)} traffic level(s); {load()}"
    )
    t0 = time.perf_counter()
    plan = capacity_search(
        trace, SLO_CHAT, GRID, traffic=args.traffic, prices=prices, progress=False
    )
    wall = time.perf_counter() - t0
    t = plan.table
    print(
        f"in-process: {wall:.1f} s, {int(t['simulations'].sum())} (configuration, replica "
        f"count) runs probed, "
        f"{int(t['feasible'].sum())} feasible, {int((~t['monotone'].astype(bool)).sum())} "
        f"not monotone; {load()}"
    )
    cols = ["traffic", "gpu", "max_num_seqs", "chunked_prefill", "router", "replicas"]
    print(plan.cheapest[[*cols, "cost_per_hour", "ttft_p99_ms", "tpot_p99_ms"]].to_string())
    fewest = t.groupby(["traffic", "gpu"], sort=False)["replicas"].min()
    print("fewest replicas per GPU type:", fewest.to_dict())
    if args.dask:
        from dask.distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=args.dask, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            t0 = time.perf_counter()
            other = capacity_search(
                trace,
                SLO_CHAT,
                GRID,
                traffic=args.traffic,
                prices=prices,
                progress=False,
                executor=client,
            )
            dwall = time.perf_counter() - t0
        pd.testing.assert_frame_equal(plan.table, other.table)
        print(f"dask ({args.dask} workers): {dwall:.1f} s, same table; {load()}")


if __name__ == "__main__":
    main()
