"""`batchlab evaluate` of a 300k-request plan, whole process, against a pure-Python evaluation.

Run by hand: ``python benchmarks/bench_evaluate.py [--requests 300000] [--repeats 3]``. Writes a
generated workload and two plans (the quantile baseline, 8 batches; a bucketed plan of batches of
at most 32, ~10k batches) to a temporary folder, then times, interleaved and best of
``--repeats``, the two whole processes on each plan:

- ``batchlab evaluate REQUESTS PLAN`` (the CLI, imports included);
- ``python benchmarks/evaluate_reference.py REQUESTS PLAN`` (json module, dicts, plain loops).

It checks that both print the same numbers and prints the ratio (target >= 10x) with the load
average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from batchlab.plan import baseline_plan, bucketed_plan, write_plan
    from batchlab.shapes import optimal_shapes
    from batchlab.workload import lognormal_workload, write_requests

    batchlab = [sys.executable, "-m", "batchlab.cli"]
    reference = [sys.executable, str(HERE / "evaluate_reference.py")]
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requests.jsonl"
        df = lognormal_workload(args.requests, seed=7)
        write_requests(df, req)
        plans = {
            "baseline": baseline_plan(df, k=8),
            "bucketed, batches <= 32": bucketed_plan(
                df, optimal_shapes(df["prompt_len"], 8), gen_bucket_size=64, max_batch_size=32
            ),
        }
        print(f"{args.requests:,} requests; load average {os.getloadavg()[0]:.2f} (1 min) at start")
        for label, plan in plans.items():
            path = Path(tmp) / "plan.jsonl"
            write_plan(plan, path)
            fast, slow = [], []
            for _ in range(args.repeats):
                t, out = timed([*batchlab, "evaluate", "--json", str(req), str(path)])
                fast.append(t)
                t, ref = timed([*reference, str(req), str(path)])
                slow.append(t)
            ours = json.loads(out)["summary"]
            theirs = json.loads(ref)
            for key, value in theirs.items():
                if abs(ours[key] - value) > 1e-9 * max(1.0, abs(value)):
                    raise SystemExit(f"mismatch in {key}: batchlab {ours[key]} reference {value}")
            n_batches = plan["batch_id"].nunique()
            print(
                f"{label} ({n_batches:,} batches): batchlab evaluate {min(fast):.2f} s, "
                f"pure Python {min(slow):.2f} s, ratio {min(slow) / min(fast):.1f}x "
                f"(load average {os.getloadavg()[0]:.2f})"
            )


if __name__ == "__main__":
    main()
