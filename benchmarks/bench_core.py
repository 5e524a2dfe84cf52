"""Core benchmarks, run by hand: `make bench` or `python benchmarks/bench_core.py`.

Prints, in one run on this machine:
- the time of `evaluate` and of `plan_requests` for 1e3, 1e4, 1e5 and 1e6 requests;
- planning 2 x 800 requests (two buckets, one shared cap of 8 shapes) with limits, and 2,000
  requests under several binding limits, each with its certified gap (cost / lower bound - 1);
- the peak memory of planning 1e6 requests without limits (tracemalloc, numpy arrays included);
- the ratio of the fast evaluation against the slow reference implementation at 1e4 requests.

Targets (2-core machine): evaluate 1e6 < 1 s; plan 2 x 800 with limits < 1 s including the
certificate; 2,000 requests under binding limits < 5 s to <= 0.5 % gap; plan 1e6 without limits
< 15 s and < 1 GB; fast vs reference >= 50x.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from batchlab.cost import get_cost_model
from batchlab.evaluate import evaluate
from batchlab.plan import baseline_plan
from batchlab.planner import Limits, plan_requests
from batchlab.workload import lognormal_workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import reference_evaluate  # noqa: E402


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--skip-plan-above", type=int, default=10**7)
    ap.add_argument("--memory", action="store_true", help="also trace planning 1e6 requests")
    args = ap.parse_args()
    cm = get_cost_model("static-graph")
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"{'requests':>10} {'evaluate s':>11} {'plan s':>9} {'batches':>9} "
        f"{'plan cost / baseline':>21} {'gap':>9}"
    )
    for n in [int(x) for x in args.sizes.split(",")]:
        df = lognormal_workload(n, seed=1)
        base = baseline_plan(df, k=8)
        t_eval, _ = timed(
            lambda df=df, base=base: evaluate(df, base, cm), repeats=3 if n <= 100_000 else 1
        )
        if n <= args.skip_plan_above:
            t_plan, res = timed(lambda df=df: plan_requests(df, cm, 8, progress=False))
            ratio = res.total_cost / evaluate(df, base, cm).cost.total
            nb = res.buckets[0].evaluation.n_batches
            gap = 100 * res.optimality_gap
            print(f"{n:>10,} {t_eval:>11.3f} {t_plan:>9.2f} {nb:>9,} {ratio:>21.3f} {gap:>7.3f} %")
        else:
            print(f"{n:>10,} {t_eval:>11.3f} {'-':>9} {'-':>9} {'-':>21}")
    a = lognormal_workload(800, seed=2, id_prefix="a")
    b = lognormal_workload(800, seed=3, prompt_median=2500, gen_median=60, id_prefix="b")
    t_two, two = timed(lambda: plan_requests({"a": a, "b": b}, cm, 8, progress=False), repeats=3)
    print(
        f"plan 2 x 800 requests, shared cap of 8 shapes, no limits: {t_two:.3f} s, "
        f"gap {100 * two.optimality_gap:.3f} %"
    )
    free = {name: two[name].evaluation for name in ("a", "b")}
    lims = {
        name: Limits(
            max_sequential_ms=0.6 * free[name].sequential_ms,
            max_p95_latency_ms=1.05 * free[name].p95_latency_ms,
            max_batch_size=32,
        )
        for name in free
    }
    t_lim, two = timed(lambda: plan_requests({"a": a, "b": b}, cm, 8, lims, progress=False))
    print(
        f"plan 2 x 800 requests with limits (sequential 0.6x, p95 1.05x the free plan's, batches "
        f"<= 32): {t_lim:.3f} s, gap {100 * two.optimality_gap:.3f} %"
    )
    c = lognormal_workload(2000, seed=5, id_prefix="c")
    c_free = plan_requests(c, cm, 8, progress=False).buckets[0].evaluation
    c_lim = Limits(
        max_sequential_ms=0.5 * c_free.sequential_ms,
        max_pad_ratio=1.1 * c_free.pad_ratio,
        max_p95_latency_ms=1.1 * c_free.p95_latency_ms,
        max_batch_size=24,
    )
    t_c, res_c = timed(lambda: plan_requests(c, cm, 8, c_lim, progress=False))
    binding = sorted(c_lim.violations(c_free.summary()))
    print(
        f"plan 2,000 requests, limits {binding} binding: {t_c:.3f} s, "
        f"gap {100 * res_c.optimality_gap:.3f} %"
    )
    if args.memory:
        import tracemalloc

        big = lognormal_workload(1_000_000, seed=1)
        tracemalloc.start()
        t0 = time.perf_counter()
        res_big = plan_requests(big, cm, 8, progress=False)
        t_big = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"plan 1e6 requests, no limits, traced: {t_big:.1f} s, peak {peak / 2**30:.2f} GiB, "
            f"gap {100 * res_big.optimality_gap:.3f} %"
        )
    df = lognormal_workload(10_000, seed=4)
    recs = df.to_dict("records")
    plans = {
        "baseline plan": baseline_plan(df, k=8),
        "planner's plan": plan_requests(df, cm, 8, progress=False).buckets[0].plan,
    }
    for label, plan in plans.items():
        n_batches = plan["batch_id"].nunique()
        t_fast, _ = timed(lambda plan=plan: evaluate(df, plan, cm), repeats=5)
        precs = plan.to_dict("records")
        t_ref, _ = timed(lambda precs=precs: reference_evaluate(recs, precs, cm.coefficients))
        print(
            f"evaluate 1e4 requests, {label} ({n_batches:,} batches): fast {t_fast * 1e3:.1f} ms, "
            f"reference {t_ref * 1e3:.0f} ms, ratio {t_ref / t_fast:.0f}x"
        )


if __name__ == "__main__":
    main()
