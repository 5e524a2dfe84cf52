"""Evaluate a plan under a cost model: costs, latencies, padding, percentiles (vectorized).

Formulas (see :mod:`batchlab.cost`): ``S_i = align(prompt_len_i, g)`` with ``g`` the cost model's
granularity; in a batch B, ``S_max = max S_i`` and ``G_max = max gen_len_i`` over B's own requests
(``padded-graph``: S_i and S_max are the batch's declared ``seq_align`` s instead).

- prefill (per request): ``prefill_cost(S_i)``, ``prefill_ms(S_i)``.
- decode: every request of B pays ``decode_cost(S_max, G_max)``; the batch's
  ``decode_ms(S_max, G_max)`` is part of each of its requests' latency.
- overhead: ``batch_cost`` per batch; ``batch_ms`` in each request's latency.
- compile: ``compile_cost(s)`` once per distinct seq_align s of the plan; ``compile_ms`` is added
  to the first request (first plan row) of the first batch in batch_id string order using s.
- latency_i = prefill_ms_i + decode_ms(B) + batch_ms (+ compile_ms) [ms]; p50/p95/p99 are
  nearest-rank (the ceil(N*p)-th smallest); ``sequential_ms`` = sum over batches of the batch's
  largest request latency.
- pad_ratio = sum[(S_i - prompt_len_i) + (G_max - gen_len_i)] / sum(prompt_len_i + gen_len_i)
  (``padded-graph``: s - prompt_len_i instead of S_i - prompt_len_i).

Per-request cost parts (table ``Evaluation.requests``) add up to the totals: a request carries its
own prefill, its batch's decode cost, an equal share ``batch_cost / batch size`` of the overhead,
and the compile cost of a shape is carried by the request that takes the compile spike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab.cost import Breakdown, CostBreakdown, CostCoefficients, CostModel, get_cost_model
from batchlab.errors import VerificationError
from batchlab.plan import _check

__all__ = ["Evaluation", "LatencyBreakdown", "PaddingTokens", "evaluate", "nearest_rank"]


@dataclass(frozen=True)
class LatencyBreakdown(Breakdown):
    """Request latencies summed over all requests, split into named parts (ms): overhead,
    compile, prefill, decode; ``total`` is the sum of all request latencies."""


@dataclass(frozen=True)
class PaddingTokens:
    """Padding tokens of a plan: prompt padding (aligned or declared length minus prompt_len) and
    generation padding (batch G_max minus gen_len), summed over requests (tokens)."""

    prompt: int
    gen: int

    @property
    def total(self) -> int:
        """prompt + gen padding (tokens)."""
        return self.prompt + self.gen

    def as_dict(self) -> dict[str, int]:
        """Parts and total as a flat dict (tokens)."""
        return {"prompt": self.prompt, "gen": self.gen, "total": self.total}


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Result of :func:`evaluate`. Costs in cost units, latencies in ms, padding in tokens.

    ``batches`` has one row per batch in batch_id order: batch_id, size, seq_align, s_max (decode
    context, tokens), g_max (tokens), cost_overhead, cost_compile, cost_prefill, cost_decode,
    cost_total, decode_ms (the batch's decode latency) and max_latency_ms.
    ``requests`` has one row per request in the request table's order: request_id, batch_id,
    prompt_len, gen_len, seq_align, prefill_ms, decode_ms, overhead_ms, compile_ms, latency_ms,
    cost_overhead, cost_compile, cost_prefill, cost_decode, cost_total.
    """

    cost_model: str
    cost: CostBreakdown
    latency: LatencyBreakdown
    pad_ratio: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    sequential_ms: float
    n_requests: int
    n_batches: int
    shapes_used: tuple[int, ...]
    padding_tokens: PaddingTokens
    batches: pd.DataFrame
    requests: pd.DataFrame

    @property
    def n_shapes(self) -> int:
        """Number of distinct seq_align values in the plan."""
        return len(self.shapes_used)

    def summary(self) -> dict[str, float | int]:
        """Flat dict of the headline numbers, for tables and JSON."""
        return _summary(
            self.cost,
            self.pad_ratio,
            (self.p50_latency_ms, self.p95_latency_ms, self.p99_latency_ms),
            self.sequential_ms,
            self.n_batches,
            self.n_shapes,
            self.n_requests,
        )


def _summary(
    cost: CostBreakdown,
    pad_ratio: float,
    percentiles_ms: tuple[float, float, float],
    sequential_ms: float,
    n_batches: int,
    n_shapes: int,
    n_requests: int,
) -> dict[str, float | int]:
    """The flat summary dict of an evaluation (cost units, ms, counts)."""
    p50, p95, p99 = percentiles_ms
    return {
        "total_cost": float(cost.total),
        "cost_overhead": float(cost.overhead),
        "cost_compile": float(cost.compile),
        "cost_prefill": float(cost.prefill),
        "cost_decode": float(cost.decode),
        "pad_ratio": float(pad_ratio),
        "p50_latency_ms": float(p50),
        "p95_latency_ms": float(p95),
        "p99_latency_ms": float(p99),
        "sequential_ms": float(sequential_ms),
        "n_batches": int(n_batches),
        "n_shapes": int(n_shapes),
        "n_requests": int(n_requests),
    }


def nearest_rank(values: np.ndarray, percents: tuple[int, ...]) -> tuple[float, ...]:
    """Nearest-rank percentiles: for p in ``percents`` (whole percent), the ceil(N*p/100)-th
    smallest value (integer arithmetic, no rounding surprises). ``values`` must be non-empty."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    n = len(arr)
    if n == 0:
        raise ValueError("nearest_rank needs at least one value")
    ranks = [max(1, -(-n * int(p) // 100)) for p in percents]
    part = np.partition(arr, sorted({r - 1 for r in ranks}))
    return tuple(float(part[r - 1]) for r in ranks)


def _group_max(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-group maximum of ``values`` (every group is non-empty), via an unbuffered ufunc."""
    if values.dtype.kind == "f":
        out = np.full(n_groups, -np.inf)
    else:
        out = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(out, codes, values)
    return out


@dataclass(frozen=True, eq=False)
class _Core:
    """The arithmetic of an evaluation on arrays in plan-row order (see :func:`_core`)."""

    batch_seq: np.ndarray
    size: np.ndarray
    s_max: np.ndarray
    g_max: np.ndarray
    prefill_cost: np.ndarray
    prefill_ms: np.ndarray
    decode_cost_b: np.ndarray
    decode_ms_b: np.ndarray
    shapes_used: np.ndarray
    compile_cost_s: np.ndarray
    spike_rows: np.ndarray
    compile_ms: np.ndarray
    latency: np.ndarray
    max_latency_b: np.ndarray
    p50: float
    p95: float
    p99: float
    prompt_pad: int
    gen_pad: int
    useful: int
    cost: CostBreakdown
    latency_parts: LatencyBreakdown

    def summary(self) -> dict[str, float | int]:
        """The same flat dict as :meth:`Evaluation.summary`."""
        return _summary(
            self.cost,
            (self.prompt_pad + self.gen_pad) / self.useful,
            (self.p50, self.p95, self.p99),
            float(self.max_latency_b.sum()),
            len(self.size),
            len(self.shapes_used),
            len(self.latency),
        )


def _core(
    model: CostModel,
    prompt: np.ndarray,
    gen: np.ndarray,
    aligned: np.ndarray,
    seq: np.ndarray,
    codes: np.ndarray,
    nb: int,
    first_row: np.ndarray,
) -> _Core:
    """Evaluation arithmetic on verified arrays in plan-row order.

    ``prompt``, ``gen``, ``aligned`` (align(prompt, g)) and ``seq`` (declared seq_align) are per
    plan row; ``codes`` gives each row's batch index 0..nb-1 in batch_id order; ``first_row`` is
    each batch's first plan row. Shared by :func:`evaluate` and the planner's candidate scoring.
    """
    c = model.coefficients
    n = len(codes)
    batch_seq = seq[first_row]  # one shape per batch after verification
    size = np.bincount(codes, minlength=nb)
    if c.padded:
        ctx = seq  # prefill at the declared seq_align
        s_max = batch_seq
    else:
        ctx = aligned
        s_max = _group_max(ctx, codes, nb)
    g_max = _group_max(gen, codes, nb)

    prefill_cost = model.prefill_cost(ctx)
    prefill_ms = model.prefill_ms(ctx)
    decode_cost_b = model.decode_cost(s_max, g_max)  # per request of the batch
    decode_ms_b = model.decode_ms(s_max, g_max)  # per batch

    # compile: the first batch (batch_id order) of each distinct seq_align takes the spike on
    # its first plan row.
    shapes_used, first_batch = np.unique(batch_seq, return_index=True)
    compile_cost_s = model.compile_cost(shapes_used)
    spike_rows = first_row[first_batch]
    compile_ms = np.zeros(n)
    compile_ms[spike_rows] = c.compile_ms

    latency = prefill_ms + decode_ms_b[codes] + c.batch_ms + compile_ms
    max_latency_b = _group_max(latency, codes, nb)
    p50, p95, p99 = nearest_rank(latency, (50, 95, 99))
    cost = CostBreakdown(
        overhead=float(nb * c.batch_cost),
        compile=float(compile_cost_s.sum()),
        prefill=float(prefill_cost.sum()),
        decode=float((size * decode_cost_b).sum()),
    )
    latency_parts = LatencyBreakdown(
        overhead=float(n * c.batch_ms),
        compile=float(len(shapes_used) * c.compile_ms),
        prefill=float(prefill_ms.sum()),
        decode=float((size * decode_ms_b).sum()),
    )
    return _Core(
        batch_seq=batch_seq,
        size=size,
        s_max=s_max,
        g_max=g_max,
        prefill_cost=prefill_cost,
        prefill_ms=prefill_ms,
        decode_cost_b=decode_cost_b,
        decode_ms_b=decode_ms_b,
        shapes_used=shapes_used,
        compile_cost_s=compile_cost_s,
        spike_rows=spike_rows,
        compile_ms=compile_ms,
        latency=latency,
        max_latency_b=max_latency_b,
        p50=p50,
        p95=p95,
        p99=p99,
        prompt_pad=int((ctx - prompt).sum()),
        gen_pad=int((g_max[codes] - gen).sum()),
        useful=int(prompt.sum()) + int(gen.sum()),
        cost=cost,
        latency_parts=latency_parts,
    )


def evaluate(
    requests: pd.DataFrame,
    plan: pd.DataFrame,
    cost_model: str | CostCoefficients | CostModel = "static-graph",
) -> Evaluation:
    """Cost (cost units), latency (ms) and padding of running ``plan`` on ``requests``.

    The plan is verified first (with the cost model's granularity): a request missing from the
    plan or listed twice, an unknown id, a batch with two shapes, a misaligned ``seq_align`` or
    one below a request's aligned prompt raises :class:`VerificationError` listing every problem.
    Fully vectorized over requests and batches.
    """
    model = get_cost_model(cost_model)
    c = model.coefficients
    checked = _check(requests, plan, c.granularity)
    if checked.violations:
        raise VerificationError([msg for _, msg in checked.violations])

    req, pl = checked.requests, checked.plan
    pos = checked.req_pos  # plan row -> request index (a bijection after verification)
    codes = checked.batch_codes  # plan row -> batch index (batch_id string order)
    n = len(pos)
    nb = len(checked.batch_ids)

    prompt = req["prompt_len"].to_numpy(dtype=np.int64)[pos]
    gen = req["gen_len"].to_numpy(dtype=np.int64)[pos]
    seq = pl["seq_align"].to_numpy(dtype=np.int64)
    core = _core(model, prompt, gen, checked.aligned_prompt[pos], seq, codes, nb, checked.first_row)
    batch_seq, size, s_max, g_max = core.batch_seq, core.size, core.s_max, core.g_max
    prefill_cost, prefill_ms = core.prefill_cost, core.prefill_ms
    decode_cost_b, decode_ms_b = core.decode_cost_b, core.decode_ms_b
    shapes_used, compile_cost_s, spike_rows = core.shapes_used, core.compile_cost_s, core.spike_rows
    compile_ms, latency, max_latency_b = core.compile_ms, core.latency, core.max_latency_b
    p50, p95, p99 = core.p50, core.p95, core.p99
    prompt_pad, gen_pad, useful = core.prompt_pad, core.gen_pad, core.useful

    compile_cost = np.zeros(n)
    compile_cost[spike_rows] = compile_cost_s
    compile_cost_b = np.bincount(codes[spike_rows], weights=compile_cost_s, minlength=nb)
    decode_ms = decode_ms_b[codes]
    overhead_share = c.batch_cost / size
    decode_cost = decode_cost_b[codes]
    overhead_cost = overhead_share[codes]
    prefill_cost_b = np.bincount(codes, weights=prefill_cost, minlength=nb)
    cost, latency_parts = core.cost, core.latency_parts

    batches = pd.DataFrame(
        {
            "batch_id": pd.Series(checked.batch_ids, dtype=object, copy=False),
            "size": size.astype(np.int64),
            "seq_align": batch_seq,
            "s_max": s_max.astype(np.int64),
            "g_max": g_max,
            "cost_overhead": np.full(nb, c.batch_cost),
            "cost_compile": compile_cost_b,
            "cost_prefill": prefill_cost_b,
            "cost_decode": size * decode_cost_b,
            "decode_ms": decode_ms_b,
            "max_latency_ms": max_latency_b,
        }
    )
    batches.insert(
        batches.columns.get_loc("cost_decode") + 1,
        "cost_total",
        batches["cost_overhead"]
        + batches["cost_compile"]
        + batches["cost_prefill"]
        + batches["cost_decode"],
    )

    row_of = np.empty(n, dtype=np.int64)
    row_of[pos] = np.arange(n, dtype=np.int64)  # request index -> plan row
    per_request = {
        "request_id": pd.Series(req["request_id"].to_numpy(dtype=object), dtype=object, copy=False),
        "batch_id": pd.Series(
            pl["batch_id"].to_numpy(dtype=object)[row_of], dtype=object, copy=False
        ),
        "prompt_len": prompt[row_of],
        "gen_len": gen[row_of],
        "seq_align": seq[row_of],
        "prefill_ms": prefill_ms[row_of],
        "decode_ms": decode_ms[row_of],
        "overhead_ms": np.full(n, c.batch_ms),
        "compile_ms": compile_ms[row_of],
        "latency_ms": latency[row_of],
        "cost_overhead": overhead_cost[row_of],
        "cost_compile": compile_cost[row_of],
        "cost_prefill": prefill_cost[row_of],
        "cost_decode": decode_cost[row_of],
    }
    per_request["cost_total"] = (
        per_request["cost_overhead"]
        + per_request["cost_compile"]
        + per_request["cost_prefill"]
        + per_request["cost_decode"]
    )

    return Evaluation(
        cost_model=model.name,
        cost=cost,
        latency=latency_parts,
        pad_ratio=(prompt_pad + gen_pad) / useful,
        p50_latency_ms=p50,
        p95_latency_ms=p95,
        p99_latency_ms=p99,
        sequential_ms=float(max_latency_b.sum()),
        n_requests=n,
        n_batches=nb,
        shapes_used=tuple(int(s) for s in shapes_used),
        padding_tokens=PaddingTokens(prompt=prompt_pad, gen=gen_pad),
        batches=batches,
        requests=pd.DataFrame(per_request, copy=False),
    )
