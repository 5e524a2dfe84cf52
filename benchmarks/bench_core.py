"""Core benchmarks, run by hand: `make bench` or `python benchmarks/bench_core.py`.

Prints, in one run on this machine:
- the time of `evaluate` and of `plan_requests` for 1e3, 1e4, 1e5 and 1e6 requests;
- planning 2 x 800 requests (two buckets, one shared cap of 8 shapes);
- the ratio of the fast evaluation against the slow reference implementation at 1e4 requests.

Targets (2-core machine): evaluate 1e6 < 1 s; plan 2 x 800 < 1 s; plan 1e6 < 30 s; fast vs
reference >= 50x.
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
from batchlab.planner import plan_requests
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
    args = ap.parse_args()
    cm = get_cost_model("static-graph")
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"{'requests':>10} {'evaluate s':>11} {'plan s':>9} {'batches':>9} {'plan cost / baseline':>21}"
    )
    for n in [int(x) for x in args.sizes.split(",")]:
        df = lognormal_workload(n, seed=1)
        base = baseline_plan(df, k=8)
        t_eval, _ = timed(
            lambda df=df, base=base: evaluate(df, base, cm), repeats=3 if n <= 100_000 else 1
        )
        if n <= args.skip_plan_above:
            t_plan, res = timed(lambda df=df: plan_requests(df, cm, 8))
            ratio = res.total_cost / evaluate(df, base, cm).cost.total
            nb = res.buckets[0].evaluation.n_batches
            print(f"{n:>10,} {t_eval:>11.3f} {t_plan:>9.2f} {nb:>9,} {ratio:>21.3f}")
        else:
            print(f"{n:>10,} {t_eval:>11.3f} {'-':>9} {'-':>9} {'-':>21}")
    a = lognormal_workload(800, seed=2, id_prefix="a")
    b = lognormal_workload(800, seed=3, prompt_median=2500, gen_median=60, id_prefix="b")
    t_two, _ = timed(lambda: plan_requests({"a": a, "b": b}, cm, 8), repeats=3)
    print(f"plan 2 x 800 requests, shared cap of 8 shapes: {t_two:.3f} s")
    df = lognormal_workload(10_000, seed=4)
    recs = df.to_dict("records")
    plans = {
        "baseline plan": baseline_plan(df, k=8),
        "planner's plan": plan_requests(df, cm, 8).buckets[0].plan,
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
