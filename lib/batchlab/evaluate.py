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

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from batchlab.cost import Breakdown, CostBreakdown, CostCoefficients, CostModel, get_cost_model
from batchlab.errors import InputError, VerificationError
from batchlab.shapes import align
from batchlab.stats import nearest_rank

if TYPE_CHECKING:  # pandas and the plan tables are imported where tables are built, so that
    import pandas as pd  # evaluating files (evaluate_files, the CLI) stays lean

#: the longest length the fast file path takes as is (tokens; = workload.MAX_LENGTH, a test
#: checks it); longer values go to the full readers, which report them
_FAST_MAX_LENGTH = 2**31 - 1

__all__ = [
    "ArrayEvaluation",
    "Evaluation",
    "LatencyBreakdown",
    "PaddingTokens",
    "evaluate",
    "evaluate_arrays",
    "evaluate_files",
    "gen_bucket_tradeoff_table",
    "nearest_rank",
    "padding_by_shape_table",
]


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


def _group_max(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-group maximum of ``values`` (every group is non-empty), via an unbuffered ufunc."""
    if values.dtype.kind == "f":
        out = np.full(n_groups, -np.inf)
    else:
        out = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(out, codes, values)
    return out


@dataclass(frozen=True, eq=False)
class ArrayEvaluation:
    """The arithmetic of an evaluation on arrays in plan-row order (:func:`evaluate_arrays`).

    Per batch (in batch_id order): ``batch_seq`` (its seq_align), ``size``, ``s_max``,
    ``g_max`` (tokens), ``decode_cost_b`` (paid by each member, cost units), ``decode_ms_b``,
    ``max_latency_b`` (ms). Per plan row: ``prefill_cost``, ``prefill_ms``, ``compile_ms``,
    ``latency`` (ms). Per distinct shape: ``shapes_used`` and ``compile_cost_s``, and
    ``spike_rows`` (the row taking each compile spike). Totals: ``p50``/``p95``/``p99`` (ms,
    nearest rank), ``prompt_pad``/``gen_pad``/``useful`` (tokens), ``cost`` and
    ``latency_parts`` (named parts). :meth:`summary` is :meth:`Evaluation.summary`'s dict.
    """

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


def evaluate_arrays(
    model: CostModel,
    prompt: np.ndarray,
    gen: np.ndarray,
    aligned: np.ndarray,
    seq: np.ndarray,
    codes: np.ndarray,
    nb: int,
    first_row: np.ndarray,
) -> ArrayEvaluation:
    """Evaluation arithmetic on verified arrays in plan-row order, vectorized.

    ``prompt``, ``gen``, ``aligned`` (align(prompt, g)) and ``seq`` (declared seq_align) are
    tokens per plan row; ``codes`` gives each row's batch index 0..nb-1 in batch_id order;
    ``first_row`` is each batch's first plan row. The arrays must describe a verified plan
    (one shape per batch, every request once). Shared by :func:`evaluate` and the planner's
    candidate scoring, which scores plans without building tables.
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
    if model.members_pay_caps:
        decode_cost_b = model.decode_cost(s_max, g_max)  # per request of the batch
        decode_ms_b = model.decode_ms(s_max, g_max)  # per batch
    else:  # the batch is priced as a whole; each member carries an equal share
        decode_cost_b = model.batch_decode_cost(s_max, g_max, size) / np.maximum(size, 1)
        decode_ms_b = model.batch_decode_ms(s_max, g_max, size)

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
    return ArrayEvaluation(
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
    import pandas as pd

    from batchlab.plan import join_and_verify

    model = get_cost_model(cost_model)
    c = model.coefficients
    checked = join_and_verify(requests, plan, c.granularity)
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
    core = evaluate_arrays(
        model, prompt, gen, checked.aligned_prompt[pos], seq, codes, nb, checked.first_row
    )
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


def evaluate_files(
    requests_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str],
    cost_model: str | CostCoefficients | CostModel = "static-graph",
) -> tuple[dict[str, float | int], dict[str, float]]:
    """The headline numbers of evaluating a plan file on a request file (JSON Lines): the
    :meth:`Evaluation.summary` dict and the cost parts (cost units), what ``batchlab evaluate``
    prints.

    The fast path never builds tables: both files are parsed in bulk by
    :func:`batchlab.io.read_json_lines`, the plan is joined to its requests by one sort of each
    id column and :func:`evaluate_arrays` does the arithmetic. It takes files of
    exactly the plain layout (requests: ``request_id`` strings, whole-number ``prompt_len`` and
    ``gen_len``; plan rows: ``request_id``, ``batch_id``, ``shape``) that verify; anything else
    (other columns, a value the readers would reject, a plan that does not verify) goes through
    :func:`batchlab.workload.read_requests`, :func:`batchlab.plan.read_plan` and
    :func:`evaluate`, which name the file, line, field or request of every problem.
    """
    model = get_cost_model(cost_model)
    arrays = _fast_arrays(requests_path, plan_path, model.granularity)
    if arrays is None:
        from batchlab.plan import read_plan
        from batchlab.workload import read_requests

        ev = evaluate(read_requests(requests_path), read_plan(plan_path), model)
        return ev.summary(), ev.cost.as_dict()
    core = evaluate_arrays(model, *arrays)
    return core.summary(), core.cost.as_dict()


def _fast_arrays(requests_path, plan_path, granularity: int):
    """The arguments of :func:`evaluate_arrays` for plain, valid JSON Lines files, or None.

    Columns are read straight from the Arrow buffers (no conversion through Python objects or
    pandas); ids become fixed-width byte strings, joined by one sort of each id column."""
    if not (str(requests_path).endswith(".jsonl") and str(plan_path).endswith(".jsonl")):
        return None
    from batchlab.io import read_json_lines

    req = read_json_lines(requests_path, what="requests").table
    plan = read_json_lines(plan_path, what="rows").table
    if req is None or plan is None:
        return None
    if sorted(req.column_names) != ["gen_len", "prompt_len", "request_id"]:
        return None
    if sorted(plan.column_names) != ["batch_id", "request_id", "shape"]:
        return None
    req_ids = _arrow_ids(req.column("request_id").combine_chunks())
    plan_ids = _arrow_ids(plan.column("request_id").combine_chunks())
    batch_ids = _arrow_ids(plan.column("batch_id").combine_chunks())
    prompt = _arrow_lengths(req.column("prompt_len").combine_chunks())
    gen = _arrow_lengths(req.column("gen_len").combine_chunks())
    shape = plan.column("shape").combine_chunks()
    if any(x is None for x in (req_ids, plan_ids, batch_ids, prompt, gen)):
        return None
    names = [shape.type.field(i).name for i in range(shape.type.num_fields)]
    if shape.null_count or "seq_align" not in names:
        return None
    if not set(names) <= {"seq_align", "heads_align", "hidden_align"}:
        return None
    dims = [_arrow_lengths(shape.field(name)) for name in names]
    if any(v is None for v in dims):
        return None
    seq = dims[names.index("seq_align")]
    n, m = len(req_ids), len(plan_ids)
    if n != m:
        return None  # the plan lists some request twice, or misses one
    # the join: the requests' ids sorted once (no sort when the file lists them in order), each
    # plan id found by binary search; the plan lists every request exactly once when every id is
    # found and no request is found twice
    if req_ids.dtype != plan_ids.dtype:
        return None  # ids of other lengths: some plan id is no request's
    req_keys, plan_keys = _id_keys(req_ids, plan_ids)
    if (req_keys[1:] > req_keys[:-1]).all():
        order, keys = None, req_keys  # in order, and no id twice
    else:
        order = np.argsort(req_keys, kind="stable")
        keys = req_keys[order]
        if (keys[1:] == keys[:-1]).any():
            return None  # duplicate request ids
    found = np.minimum(np.searchsorted(keys, plan_keys), n - 1)
    if not (keys[found] == plan_keys).all():
        return None  # an id no request has
    if np.count_nonzero(np.bincount(found, minlength=n)) != n:
        return None  # a request listed twice (and so another missing)
    pos = found if order is None else order[found]
    # batches in batch_id string order (UTF-8 byte order is code point order); a plan written
    # batch by batch in that order (as batchlab writes them) needs no sort
    (batch_keys,) = _id_keys(batch_ids)
    if not (batch_keys[1:] < batch_keys[:-1]).any():
        starts = np.concatenate(([True], batch_keys[1:] != batch_keys[:-1]))
        codes = np.cumsum(starts, dtype=np.int64) - 1
        first_row = np.flatnonzero(starts).astype(np.int64)
        nb = len(first_row)
    else:
        _, codes = np.unique(batch_keys, return_inverse=True)
        codes = codes.reshape(-1).astype(np.int64)
        nb = int(codes.max()) + 1
        first_row = np.full(nb, m, dtype=np.int64)
        np.minimum.at(first_row, codes, np.arange(m, dtype=np.int64))
    first = first_row[codes]
    if any((values != values[first]).any() for values in dims):
        return None  # a batch with two shapes
    aligned = align(prompt, granularity)[pos]
    if (seq % granularity != 0).any() or (seq < aligned).any():
        return None
    return prompt[pos], gen[pos], aligned, seq, codes, nb, first_row


def _id_keys(*ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort keys of fixed-width byte-string id columns (numpy ``S``, no NUL inside an id): the
    bytes after the prefix that every id of the first column shares, packed big-endian into
    ``uint64`` when at most 8 bytes remain (the order of the ids, sorted and searched as
    integers); else the ids themselves. An id of a later column without that prefix gets a key
    that no id of the first column has."""
    first = ids[0]
    width = first.dtype.itemsize
    if any(x.dtype != first.dtype for x in ids) or not len(first):
        return ids
    raw = first.view(np.uint8).reshape(-1, width)
    same = (raw == raw[0]).all(axis=0)
    prefix = width if same.all() else int(np.argmin(same))
    if width - prefix > 8:
        return ids
    out = []
    for x in ids:
        b = x.view(np.uint8).reshape(-1, width)
        packed = np.zeros((len(x), 8), dtype=np.uint8)
        packed[:, : width - prefix] = b[:, prefix:]
        keys = packed.view(">u8").reshape(-1).astype(np.uint64)
        if x is not first and prefix:
            # an id without the shared prefix: the largest key, which no first-column id has
            # once it is made unique below (ids of the first column never reach it: 8 bytes
            # of 0xff are no UTF-8 text)
            keys[(b[:, :prefix] != raw[0, :prefix]).any(axis=1)] = np.iinfo(np.uint64).max
        out.append(keys)
    return tuple(out)


def _arrow_lengths(arr) -> np.ndarray | None:
    """An Arrow int64 array without nulls as numpy (its buffer, no copy), if every value is a
    length the readers accept (1 .. MAX_LENGTH); else None."""
    import pyarrow as pa

    if arr.null_count or not pa.types.is_int64(arr.type):
        return None
    values = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr), offset=8 * arr.offset)
    return values if ((values >= 1) & (values <= _FAST_MAX_LENGTH)).all() else None


def _arrow_ids(arr) -> np.ndarray | None:
    """An Arrow string array without nulls as fixed-width bytes (numpy ``S``), if no id is empty,
    longer than 256 bytes or holds a NUL byte (which ``S`` would drop); else None."""
    import pyarrow as pa

    if arr.null_count or not pa.types.is_string(arr.type) or not len(arr):
        return None
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=4 * arr.offset)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    if (lengths < 1).any() or lengths.max() > 256:
        return None
    data = np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    if (data == 0).any():
        return None
    width = int(lengths.max())
    if (lengths == width).all():  # ids of one length (the usual case): the bytes as they are
        return np.ascontiguousarray(data).view(f"S{width}").reshape(-1)
    pos = (offsets[:-1] - offsets[0])[:, None] + np.arange(width)[None, :]
    out = np.where(
        pos < (offsets[1:] - offsets[0])[:, None], data[np.minimum(pos, len(data) - 1)], 0
    )
    return out.astype(np.uint8).view(f"S{width}").reshape(-1)


# --------------------------------------------------------------------------------------------
# analysis tables (the numbers the chapters' figures draw)


def padding_by_shape_table(
    evaluation: Evaluation, cost_model: str | CostModel = "static-graph"
) -> pd.DataFrame:
    """Padding per shape bucket of an evaluated plan (tokens), one row per ``seq_align``.

    Columns: ``seq_align``, ``n_requests``, ``n_batches``, ``prompt_padding`` (aligned prompt
    minus prompt_len; under a padded cost model the declared seq_align minus prompt_len),
    ``gen_padding`` (batch G_max minus gen_len), ``padding`` (their sum). The sums over rows equal
    ``evaluation.padding_tokens`` when ``cost_model`` is the one the plan was evaluated with.
    """
    import pandas as pd

    cm = get_cost_model(cost_model)
    req = evaluation.requests
    batches = evaluation.batches
    prompt = req["prompt_len"].to_numpy(dtype=np.int64)
    gen = req["gen_len"].to_numpy(dtype=np.int64)
    seq = req["seq_align"].to_numpy(dtype=np.int64)
    ctx = seq if cm.padded else align(prompt, cm.granularity)
    where = pd.Index(batches["batch_id"].to_numpy(dtype=object)).get_indexer(
        req["batch_id"].to_numpy(dtype=object)
    )
    g_max = batches["g_max"].to_numpy(dtype=np.int64)[where]
    shapes, inverse = np.unique(seq, return_inverse=True)
    inverse = inverse.reshape(-1)
    m = len(shapes)
    batch_shapes = batches["seq_align"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "seq_align": shapes,
            "n_requests": np.bincount(inverse, minlength=m).astype(np.int64),
            "n_batches": np.bincount(np.searchsorted(shapes, batch_shapes), minlength=m).astype(
                np.int64
            ),
            "prompt_padding": np.bincount(inverse, weights=ctx - prompt, minlength=m).astype(
                np.int64
            ),
            "gen_padding": np.bincount(inverse, weights=g_max - gen, minlength=m).astype(np.int64),
        }
    ).assign(padding=lambda t: t["prompt_padding"] + t["gen_padding"])


def gen_bucket_tradeoff_table(
    requests: pd.DataFrame,
    seq_aligns: ArrayLike,
    bucket_sizes: Iterable[int | None],
    *,
    max_batch_size: int | None = None,
    cost_model: str | CostModel = "static-graph",
) -> pd.DataFrame:
    """Padding and batches of ``plan.bucketed_plan`` for each gen-bucket size (tokens).

    One row per size (None = no gen buckets): ``gen_bucket_size``, ``n_batches``,
    ``prompt_padding`` and ``gen_padding`` (tokens), ``pad_ratio``, ``total_cost``,
    ``p95_latency_ms`` and ``sequential_ms`` of :func:`evaluate` under ``cost_model``.
    """
    import pandas as pd

    from batchlab.plan import bucketed_plan

    cm = get_cost_model(cost_model)
    shapes = np.asarray(seq_aligns, dtype=np.int64).reshape(-1)
    rows = []
    for size in bucket_sizes:
        plan = bucketed_plan(
            requests,
            shapes,
            gen_bucket_size=size,
            max_batch_size=max_batch_size,
            granularity=cm.granularity,
        )
        ev = evaluate(requests, plan, cm)
        rows.append(
            {
                "gen_bucket_size": None if size is None else int(size),
                "n_batches": ev.n_batches,
                "prompt_padding": ev.padding_tokens.prompt,
                "gen_padding": ev.padding_tokens.gen,
                "pad_ratio": ev.pad_ratio,
                "total_cost": ev.cost.total,
                "p95_latency_ms": ev.p95_latency_ms,
                "sequential_ms": ev.sequential_ms,
            }
        )
    if not rows:
        raise InputError("no bucket sizes given", field="bucket_sizes")
    out = pd.DataFrame(rows)
    out["gen_bucket_size"] = pd.Series([r["gen_bucket_size"] for r in rows], dtype=object)
    return out
