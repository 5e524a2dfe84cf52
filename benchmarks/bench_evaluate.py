"""`batchlab evaluate` of a 300k-request plan, whole process, against a pure-Python evaluation.

Run by hand: ``python benchmarks/bench_evaluate.py [--requests 300000] [--repeats 3]``. Writes a
generated workload and two plans (the quantile baseline, 8 batches; a bucketed plan of batches of
at most 32, ~10k batches) to a temporary folder, then times, interleaved and best of
``--repeats``, the two whole processes on each plan:

- ``batchlab evaluate REQUESTS PLAN`` (the CLI, imports included);
- ``python benchmarks/evaluate_reference.py REQUESTS PLAN`` (json module, dicts, plain loops).

It checks that both print the same numbers and prints the ratio (target >= 10x) with the load
average, since the machine may be shared. Python's compiled modules are cached as for any
installed program (in a temporary ``PYTHONPYCACHEPREFIX``, after a warm-up run; nothing is
written into the repository); ``--no-bytecode-cache`` runs as an environment with
``PYTHONDONTWRITEBYTECODE`` does, compiling batchlab's modules in every process.
``--before LIB`` times a second batchlab too (``LIB``: the ``lib`` folder of another checkout,
e.g. ``/work/main/lib``), in the same run. The floor is printed first: ``python -c pass``,
``import numpy`` and ``import numpy, pyarrow.json`` (best of the repeats).
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


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-bytecode-cache", action="store_true")
    ap.add_argument("--before", metavar="LIB", help="also time batchlab from this lib folder")
    args = ap.parse_args()
    from batchlab.plan import baseline_plan, bucketed_plan, write_plan
    from batchlab.shapes import optimal_shapes
    from batchlab.workload import lognormal_workload, write_requests

    batchlab = [sys.executable, "-m", "batchlab.cli"]
    reference = [sys.executable, str(HERE / "evaluate_reference.py")]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        before_env = None
        if args.before:
            before_env = dict(env, PYTHONPATH=args.before)
        mode = "no bytecode cache" if args.no_bytecode_cache else "compiled modules cached"
        floor = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import numpy": [sys.executable, "-c", "import numpy"],
            "import numpy, pyarrow.json": [sys.executable, "-c", "import numpy, pyarrow.json"],
        }
        for cmd in floor.values():
            timed(cmd, env)
        shown = ", ".join(
            f"{label} {min(timed(cmd, env)[0] for _ in range(args.repeats)):.3f} s"
            for label, cmd in floor.items()
        )
        print(f"floor ({mode}): {shown}")
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
            fast, slow, old = [], [], []
            cli = [*batchlab, "evaluate", "--json", str(req), str(path)]
            timed(cli, env)  # warm-up: compiles and caches the modules
            if before_env is not None:
                timed(cli, before_env)
            for _ in range(args.repeats):
                t, out = timed(cli, env)
                fast.append(t)
                t, ref = timed([*reference, str(req), str(path)], env)
                slow.append(t)
                if before_env is not None:
                    t, out_before = timed(cli, before_env)
                    old.append(t)
                    if json.loads(out_before)["summary"] != json.loads(out)["summary"]:
                        raise SystemExit(f"{args.before} prints other numbers")
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
            if old:
                print(
                    f"    batchlab from {args.before} {min(old):.2f} s, ratio "
                    f"{min(slow) / min(old):.1f}x; this one is {min(old) / min(fast):.2f}x faster"
                )


if __name__ == "__main__":
    main()
