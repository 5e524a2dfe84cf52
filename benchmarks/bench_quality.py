"""The planner on workloads and limits it was not tuned on, against the exact optimum.

Run by hand: ``python benchmarks/bench_quality.py [--only NAME] [--exact-seconds 120]``.

Each instance is drawn from a seeded generator of :mod:`batchlab.workload` (other length ranges
than data/), one to three buckets sharing a shape cap, under the static-graph, padded-graph or
user coefficients, with limits set at 0.8-1.1x of the unconstrained plan's values (several
binding at once). For each it prints:

- the planner's cost with its default settings, its certified gap (cost / bound - 1) and time;
- the exact optimum (the planner with ``exact="always"`` and a long budget; its status must be
  ``optimal``) and how far above it the default plan is;
- whether the planner raised LimitError, and if so what the exact model says.
"""

from __future__ import annotations

import argparse
import math
import os
import time

from batchlab.cost import get_cost_model
from batchlab.datasets import load_trace
from batchlab.errors import BatchlabError, LimitError
from batchlab.planner import Limits, plan_requests
from batchlab.workload import bimodal_workload, lognormal_workload, zipf_workload

STATIC = get_cost_model("static-graph")
PADDED = get_cost_model("padded-graph")
USER = STATIC.with_coefficients(batch_cost=4e8, compile_cost_quad=50.0, batch_ms=900.0)


def _lims(free, seq=None, p95=None, pad=None, cost=None, mbs=None) -> Limits:
    """Limits at the given multiples of the unconstrained plan's values."""
    ev = free.evaluation
    return Limits(
        max_sequential_ms=None if seq is None else seq * ev.sequential_ms,
        max_p95_latency_ms=None if p95 is None else p95 * ev.p95_latency_ms,
        max_pad_ratio=None if pad is None else pad * ev.pad_ratio,
        max_cost=None if cost is None else cost * ev.cost.total,
        max_batch_size=mbs,
    )


def instances():
    """(name, buckets, cost model, shape cap, limit multiples per bucket)."""
    out = []
    a = lognormal_workload(36, seed=101, prompt_median=300, gen_median=40, id_prefix="a")
    out.append(("static lognormal short, seq+mbs", {"a": a}, STATIC, 8, [dict(seq=0.8, mbs=6)]))
    z = zipf_workload(40, seed=102, prompt_min=48, max_prompt_len=4096, gen_median=90)
    out.append(
        ("static zipf, seq+p95+pad", {"z": z}, STATIC, 8, [dict(seq=0.85, p95=1.0, pad=1.05)])
    )
    m = bimodal_workload(34, seed=103, long_fraction=0.3, max_prompt_len=12000)
    out.append(
        ("static bimodal, seq+pad+mbs", {"m": m}, STATIC, 8, [dict(seq=0.9, pad=1.1, mbs=5)])
    )
    u = lognormal_workload(32, seed=104, prompt_median=900, gen_median=200, id_prefix="u")
    out.append(("user coefficients, seq+pad", {"u": u}, USER, 8, [dict(seq=0.85, pad=1.05)]))
    p1 = lognormal_workload(30, seed=105, prompt_median=150, gen_median=30, id_prefix="p")
    out.append(("padded 1 bucket cap 3, seq+mbs", {"p": p1}, PADDED, 3, [dict(seq=0.9, mbs=5)]))
    q1 = lognormal_workload(16, seed=106, prompt_median=200, gen_median=50, id_prefix="q")
    q2 = lognormal_workload(16, seed=107, prompt_median=1200, gen_median=20, id_prefix="r")
    out.append(
        (
            "padded 2 buckets cap 3, seq+p95",
            {"q": q1, "r": q2},
            PADDED,
            3,
            [dict(seq=0.9, p95=1.05), dict(seq=0.95)],
        )
    )
    t = [
        lognormal_workload(10, seed=108 + i, prompt_median=m_, gen_median=g_, id_prefix=f"t{i}")
        for i, (m_, g_) in enumerate([(100, 80), (700, 30), (2500, 10)])
    ]
    out.append(
        (
            "padded 3 buckets cap 4, seq+pad",
            {f"t{i}": df for i, df in enumerate(t)},
            PADDED,
            4,
            [dict(seq=0.9), dict(pad=1.1), dict(seq=0.95, pad=1.1)],
        )
    )
    s2 = [
        lognormal_workload(
            24, seed=120 + i, prompt_median=400 * (i + 1), gen_median=60, id_prefix=f"s{i}"
        )
        for i in range(2)
    ]
    out.append(
        (
            "static 2 buckets cap 1 (shared shape), seq+p95",
            {f"s{i}": df for i, df in enumerate(s2)},
            STATIC,
            1,
            [dict(seq=0.85, p95=1.0), dict(seq=0.9)],
        )
    )
    # a real trace where it is on this machine (../shared/traces, or the download cache): the
    # first 40 Azure code requests, prompts up to 7.4k tokens, where each shape's compile is
    # most of the cost (the planner was 31 % above the optimum before it chose shapes with it)
    try:
        code = load_trace("azure-code-2023", download=False, limit=40).drop(columns="arrival_s")
    except BatchlabError:
        code = None
    if code is not None:
        out.append(
            ("padded azure-code 40 (real trace), mbs", {"c": code}, PADDED, 8, [dict(mbs=16)])
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run the instances whose name contains this")
    ap.add_argument("--exact-seconds", type=float, default=120.0)
    args = ap.parse_args()
    print(
        f"{'instance':<48} {'planner cost':>14} {'printed gap':>11} {'s':>6} "
        f"{'optimum':>14} {'above opt.':>10} {'exact status':>12}"
    )
    for name, buckets, cm, cap, mults in instances():
        if args.only and args.only not in name:
            continue
        free = plan_requests(buckets, cm, cap, progress=False)
        limits = {b: _lims(free[b], **k) for b, k in zip(buckets, mults, strict=True)}
        t0 = time.perf_counter()
        try:
            res = plan_requests(buckets, cm, cap, limits, progress=False)
            cost, gap = res.total_cost, res.optimality_gap
        except LimitError as err:
            res, cost, gap = None, math.nan, math.nan
            print(f"  LimitError: {err}")
        took = time.perf_counter() - t0
        try:
            ex = plan_requests(
                buckets,
                cm,
                cap,
                limits,
                exact="always",
                time_limit_s=args.exact_seconds,
                progress=False,
            )
            status = ex.buckets[0].settings.get("exact_status", "?")
            opt = ex.total_cost if status == "optimal" else math.nan
            above = cost / opt - 1 if math.isfinite(opt) else math.nan
        except LimitError as err:
            status, opt, above = "infeasible?", math.nan, math.nan
            print(f"  exact run: LimitError: {err}")
        print(
            f"{name:<48} {cost:>14.6e} {100 * gap:>10.3f}% {took:>6.2f} {opt:>14.6e} "
            f"{100 * above:>9.3f}% {status:>12}",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
