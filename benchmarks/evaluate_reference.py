"""A pure-Python evaluation of a plan file, the yardstick of ``benchmarks/bench_evaluate.py``.

``python benchmarks/evaluate_reference.py REQUESTS.jsonl PLAN.jsonl`` reads both files with the
json module, joins the plan to its requests with a dict, and applies the static-graph cost model
(:mod:`batchlab.cost`, decode in closed form per batch) with plain loops, ints and floats; it prints
the same headline numbers as ``batchlab evaluate --json``. It imports nothing from batchlab, numpy
or pandas: it is what a user would write without the library.
"""

from __future__ import annotations

import json
import math
import sys

# the static-graph preset (batchlab.cost.CostCoefficients defaults)
H, GRAN = 4096, 64
PREFILL_COST_QUAD, PREFILL_COST_LIN = 2.0, 1.0
PREFILL_MS_QUAD, PREFILL_MS_LIN = 0.002, 0.0015
DECODE_COST_QUAD, DECODE_COST_LIN = 1.0, 0.5
DECODE_MS_QUAD, DECODE_MS_LIN = 0.0012, 0.0006
BATCH_COST, BATCH_MS = 1e7, 8.0
COMPILE_COST_QUAD, COMPILE_COST_LIN, COMPILE_MS = 500.0, 2.0, 1500.0


def sums(s: int, g: int) -> tuple[float, float]:
    """sum_{t<g} (s + t) and sum_{t<g} (s + t)**2."""
    tri = g * (g - 1) / 2
    return g * s + tri, g * s * s + 2 * s * tri + (g - 1) * g * (2 * g - 1) / 6


def main(requests_path: str, plan_path: str) -> dict:
    prompt, gen = {}, {}
    with open(requests_path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                prompt[r["request_id"]] = r["prompt_len"]
                gen[r["request_id"]] = r["gen_len"]
    batches: dict[str, list] = {}
    with open(plan_path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                batches.setdefault(row["batch_id"], []).append(
                    (row["request_id"], row["shape"]["seq_align"])
                )
    cost = {"overhead": 0.0, "compile": 0.0, "prefill": 0.0, "decode": 0.0}
    latencies, sequential, pad, useful, seen = [], 0.0, 0, 0, set()
    for bid in sorted(batches):
        rows = batches[bid]
        aligned = [-(-prompt[rid] // GRAN) * GRAN for rid, _ in rows]
        s_max, g_max = max(aligned), max(gen[rid] for rid, _ in rows)
        lin, quad = sums(s_max, g_max)
        d_cost = DECODE_COST_QUAD * quad + DECODE_COST_LIN * H * lin
        d_ms = DECODE_MS_QUAD * quad + DECODE_MS_LIN * H * lin
        cost["overhead"] += BATCH_COST
        shape = rows[0][1]
        spike = shape not in seen
        if spike:
            seen.add(shape)
            cost["compile"] += COMPILE_COST_QUAD * shape * shape + COMPILE_COST_LIN * H * shape
        top = 0.0
        for k, ((rid, _), a) in enumerate(zip(rows, aligned, strict=True)):
            cost["prefill"] += PREFILL_COST_QUAD * a * a + PREFILL_COST_LIN * H * a
            cost["decode"] += d_cost
            lat = PREFILL_MS_QUAD * a * a + PREFILL_MS_LIN * H * a + d_ms + BATCH_MS
            if spike and k == 0:
                lat += COMPILE_MS
            latencies.append(lat)
            top = max(top, lat)
            pad += a - prompt[rid] + g_max - gen[rid]
            useful += prompt[rid] + gen[rid]
        sequential += top
    latencies.sort()
    n = len(latencies)

    def rank(p: int) -> float:
        return latencies[max(1, math.ceil(p * n / 100)) - 1]

    return {
        "total_cost": sum(cost.values()),
        **{f"cost_{k}": v for k, v in cost.items()},
        "pad_ratio": pad / useful,
        "p50_latency_ms": rank(50),
        "p95_latency_ms": rank(95),
        "p99_latency_ms": rank(99),
        "sequential_ms": sequential,
        "n_batches": len(batches),
        "n_shapes": len(seen),
        "n_requests": n,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=2))
