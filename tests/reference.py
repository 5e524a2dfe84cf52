"""Slow, obvious reference implementations of plan evaluation and verification.

Written straight from docs/design.md with plain Python loops, dicts, ints and floats (decode is a
literal sum over the steps t), so the vectorized code in batchlab.evaluate / batchlab.plan can be
checked against it. Only for small inputs in tests.
"""

from __future__ import annotations

import math
from fractions import Fraction


def _coef(coefficients, name):
    if isinstance(coefficients, dict):
        return coefficients[name]
    return getattr(coefficients, name)


def ceil_to(x: int, g: int) -> int:
    """Smallest multiple of g that is >= x (integers)."""
    return ((x + g - 1) // g) * g


def _shape_of(row: dict) -> tuple[int, int, int]:
    return (
        int(row["seq_align"]),
        int(row.get("heads_align", 32)),
        int(row.get("hidden_align", 4096)),
    )


def reference_evaluate(
    requests_records: list[dict], plan_records: list[dict], coefficients
) -> dict:
    """Evaluate a valid plan the slow way. Returns a dict of summary fields plus per-request
    ``latency_ms`` / part dicts keyed by request id and per-batch dicts keyed by batch id."""
    c = lambda name: _coef(coefficients, name)  # noqa: E731
    g = int(c("granularity"))
    H = int(c("hidden"))
    padded = bool(c("padded"))

    req = {}
    for r in requests_records:
        req[str(r["request_id"])] = r

    batches: dict[str, list[dict]] = {}
    for row in plan_records:
        batches.setdefault(str(row["batch_id"]), []).append(row)

    prefill_ms = {}
    decode_ms = {}
    compile_ms = {}
    prefill_cost = {}
    decode_cost = {}
    batch_of = {}
    batch_info = {}
    prompt_pad = 0
    gen_pad = 0
    useful = 0
    total_overhead_cost = 0.0
    total_decode_cost = 0.0
    total_prefill_cost = 0.0

    for bid in sorted(batches):
        rows = batches[bid]
        s = int(rows[0]["seq_align"])
        S = {}
        for row in rows:
            rid = str(row["request_id"])
            S[rid] = s if padded else ceil_to(int(req[rid]["prompt_len"]), g)
        s_max = s if padded else max(S.values())
        g_max = max(int(req[str(row["request_id"])]["gen_len"]) for row in rows)
        # decode: a literal sum over the steps
        d_cost = math.fsum(
            c("decode_cost_quad") * (s_max + t) ** 2 + c("decode_cost_lin") * H * (s_max + t)
            for t in range(g_max)
        )
        d_ms = math.fsum(
            c("decode_ms_quad") * (s_max + t) ** 2 + c("decode_ms_lin") * H * (s_max + t)
            for t in range(g_max)
        )
        total_overhead_cost += c("batch_cost")
        for row in rows:
            rid = str(row["request_id"])
            p = int(req[rid]["prompt_len"])
            gl = int(req[rid]["gen_len"])
            prefill_ms[rid] = c("prefill_ms_quad") * S[rid] ** 2 + c("prefill_ms_lin") * H * S[rid]
            prefill_cost[rid] = (
                c("prefill_cost_quad") * S[rid] ** 2 + c("prefill_cost_lin") * H * S[rid]
            )
            decode_ms[rid] = d_ms
            decode_cost[rid] = d_cost
            compile_ms[rid] = 0.0
            batch_of[rid] = bid
            total_decode_cost += d_cost
            total_prefill_cost += prefill_cost[rid]
            prompt_pad += S[rid] - p
            gen_pad += g_max - gl
            useful += p + gl
        batch_info[bid] = {
            "size": len(rows),
            "seq_align": s,
            "s_max": s_max,
            "g_max": g_max,
            "decode_ms": d_ms,
            "decode_cost": d_cost,
        }

    # compile: once per distinct seq_align; spike on the first row of the first batch using it
    total_compile_cost = 0.0
    seen = set()
    for bid in sorted(batches):
        s = int(batches[bid][0]["seq_align"])
        if s in seen:
            continue
        seen.add(s)
        total_compile_cost += c("compile_cost_quad") * s**2 + c("compile_cost_lin") * H * s
        compile_ms[str(batches[bid][0]["request_id"])] += c("compile_ms")

    latency = {}
    for rid in prefill_ms:
        latency[rid] = prefill_ms[rid] + decode_ms[rid] + c("batch_ms") + compile_ms[rid]

    values = sorted(latency.values())
    n = len(values)

    def pct(p):
        rank = math.ceil(Fraction(p, 100) * n)
        return values[max(rank, 1) - 1]

    sequential = 0.0
    for bid in sorted(batches):
        batch_max = max(latency[str(row["request_id"])] for row in batches[bid])
        batch_info[bid]["max_latency_ms"] = batch_max
        sequential += batch_max

    total_cost = total_overhead_cost + total_compile_cost + total_prefill_cost + total_decode_cost
    return {
        "total_cost": total_cost,
        "cost_overhead": total_overhead_cost,
        "cost_compile": total_compile_cost,
        "cost_prefill": total_prefill_cost,
        "cost_decode": total_decode_cost,
        "pad_ratio": (prompt_pad + gen_pad) / useful,
        "p50_latency_ms": pct(50),
        "p95_latency_ms": pct(95),
        "p99_latency_ms": pct(99),
        "sequential_ms": sequential,
        "n_batches": len(batches),
        "n_shapes": len(seen),
        "n_requests": n,
        "padding_prompt": prompt_pad,
        "padding_gen": gen_pad,
        "latency_ms": latency,
        "prefill_ms": prefill_ms,
        "decode_ms": decode_ms,
        "compile_ms": compile_ms,
        "batch_of": batch_of,
        "batches": batch_info,
        "latency_sum": {
            "overhead": c("batch_ms") * n,
            "compile": sum(compile_ms.values()),
            "prefill": sum(prefill_ms.values()),
            "decode": sum(decode_ms.values()),
        },
    }


def reference_verify(
    requests_records: list[dict],
    plan_records: list[dict],
    max_shapes: int | None = None,
    granularity: int = 64,
) -> dict[str, set]:
    """Violations the slow way: kind -> set of ids involved (request ids, or batch ids for
    ``multi_shape`` and ``misaligned``; the number of shapes for ``too_many_shapes``)."""
    g = granularity
    prompt = {str(r["request_id"]): int(r["prompt_len"]) for r in requests_records}
    found: dict[str, set] = {}

    count: dict[str, int] = {}
    for row in plan_records:
        rid = str(row["request_id"])
        count[rid] = count.get(rid, 0) + 1

    for rid in prompt:
        if count.get(rid, 0) == 0:
            found.setdefault("missing", set()).add(rid)
        elif count[rid] > 1:
            found.setdefault("duplicate", set()).add(rid)
    for rid in count:
        if rid not in prompt:
            found.setdefault("unknown", set()).add(rid)

    shapes_of_batch: dict[str, set] = {}
    for row in plan_records:
        shapes_of_batch.setdefault(str(row["batch_id"]), set()).add(_shape_of(row))
    for bid, shapes in shapes_of_batch.items():
        if len(shapes) > 1:
            found.setdefault("multi_shape", set()).add(bid)

    for row in plan_records:
        s = int(row["seq_align"])
        if s % g != 0:
            found.setdefault("misaligned", set()).add(str(row["batch_id"]))
        rid = str(row["request_id"])
        if rid in prompt and s < ceil_to(prompt[rid], g):
            found.setdefault("undersized", set()).add(rid)

    all_shapes = set()
    for row in plan_records:
        all_shapes.add(_shape_of(row))
    if max_shapes is not None and len(all_shapes) > max_shapes:
        found["too_many_shapes"] = {len(all_shapes)}
    return found


# ---------------------------------------------------------------------------------------------
# hypothesis builders shared by the tests: random request tables and random valid plans
# ---------------------------------------------------------------------------------------------
def valid_case_strategy(
    granularity: int = 64, max_n: int = 25, max_prompt: int = 3000, max_gen: int = 200
):
    """A hypothesis strategy of (requests_records, plan_records): random requests, a random
    assignment to batches in a random row order, each batch with one shape covering it (its
    largest aligned prompt plus 0-2 granules)."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        n = draw(st.integers(1, max_n))
        ids = draw(st.lists(st.text(min_size=1, max_size=6), min_size=n, max_size=n, unique=True))
        prompts = draw(st.lists(st.integers(1, max_prompt), min_size=n, max_size=n))
        gens = draw(st.lists(st.integers(1, max_gen), min_size=n, max_size=n))
        k = draw(st.integers(1, n))
        names = draw(
            st.lists(
                st.text(alphabet="ab0123456789", min_size=1, max_size=4),
                min_size=k,
                max_size=k,
                unique=True,
            )
        )
        assign = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
        order = draw(st.permutations(list(range(n))))
        extra = draw(st.lists(st.integers(0, 2), min_size=k, max_size=k))
        need: dict[int, int] = {}
        for i in range(n):
            need[assign[i]] = max(need.get(assign[i], 0), ceil_to(prompts[i], granularity))
        requests = [
            {"request_id": ids[i], "prompt_len": prompts[i], "gen_len": gens[i]} for i in range(n)
        ]
        plan = [
            {
                "request_id": ids[i],
                "batch_id": names[assign[i]],
                "seq_align": need[assign[i]] + extra[assign[i]] * granularity,
                "heads_align": 32,
                "hidden_align": 4096,
            }
            for i in order
        ]
        return requests, plan

    return build()
