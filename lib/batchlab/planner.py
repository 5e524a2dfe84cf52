"""The planner: plans of least cost for one or several request buckets under limits.

``plan_requests(buckets, cost_model, max_shapes, limits)`` builds one plan per bucket. All the
buckets share one global cap on distinct shapes. Each bucket can have its own limits: max cost,
max pad_ratio, max p95 latency, max sequential time, max batch size. The planner minimizes total
cost subject to those limits, searching systematically rather than at random:

1. **Shapes.** For every k = 1..max_shapes it takes the exact joint shape set that minimizes the
   weighted prompt padding of all buckets together (``shapes.joint_optimal_shapes``). Under the
   ``padded-graph`` model a request's cost depends on its shape, so the per-request cost of that
   model is used instead of plain padding tokens. Each request then goes to its smallest
   covering shape.
2. **Batches.** Inside each shape group the requests are ordered by a generation-length bucket,
   then by aligned prompt length, then by gen_len. Requests with the same (length, gen_len) key
   are merged into runs. An exact dynamic program then cuts that order into contiguous batches.
   It minimizes ``batch cost + λ · batch latency``. The batch cost is the overhead plus the
   decode paid by every member; the batch latency is the batch's part of the sequential time.
   Batches never hold more than ``max_batch_size`` requests. Under a p95 limit, no batch may
   push its latency past the limit unless one of its members is already past it on its own.
   Several gen-bucket sizes are tried and the cheapest plan that meets the limits is kept.
3. **The latency/cost trade-off.** λ = 0 gives the cheapest plan. If the sequential-time limit
   is not met there, λ is found by bisection on a log scale: the smallest λ that meets it (a
   Lagrangian relaxation of that limit).

Each bucket also gets lower bounds that no plan can beat (see :func:`lower_bounds`). They are
reported next to what the planner achieved. When a limit cannot be met, a
:class:`~batchlab.errors.LimitError` names the limit, the bucket and the best value reached.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.cost import CostModel, get_cost_model
from batchlab.errors import InputError, LimitError
from batchlab.evaluate import Evaluation, evaluate, evaluate_arrays
from batchlab.io import read_text
from batchlab.plan import plan_from_batches
from batchlab.shapes import align, joint_optimal_shapes, min_batches, min_padding_tokens
from batchlab.workload import MAX_LENGTH, validate_requests

__all__ = [
    "LIMIT_METRICS",
    "EXACT_SIZE_PER_SQRT_S",
    "MAX_EXACT_SIZE",
    "MAX_SHAPES",
    "MAX_TIME_LIMIT_S",
    "BucketPlan",
    "Limits",
    "LowerBounds",
    "PlanResult",
    "exact_size_limit",
    "lower_bounds",
    "plan_requests",
    "read_limits",
]

#: limit field -> the Evaluation summary metric it bounds from above
LIMIT_METRICS: dict[str, str] = {
    "max_cost": "total_cost",
    "max_pad_ratio": "pad_ratio",
    "max_p95_latency_ms": "p95_latency_ms",
    "max_sequential_ms": "sequential_ms",
}


@dataclass(frozen=True)
class Limits:
    """Limits on one bucket's plan; ``None`` means no limit.

    ``max_cost`` (cost units), ``max_pad_ratio`` (padding tokens / useful tokens),
    ``max_p95_latency_ms`` and ``max_sequential_ms`` (ms), ``max_batch_size`` (requests).
    """

    max_cost: float | None = None
    max_pad_ratio: float | None = None
    max_p95_latency_ms: float | None = None
    max_sequential_ms: float | None = None
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            kind = int if f.name == "max_batch_size" else float
            value = check_scalar(
                getattr(self, f.name),
                f.name,
                kind,
                min_val=0 if kind is float else 1,
                include_boundaries="right" if kind is float else "both",
                allow_none=True,
            )
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], *, source: object = None) -> Limits:
        """Limits from a mapping such as a TOML table; unknown keys are an InputError."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise InputError(
                    f"unknown limit; known: {', '.join(sorted(known))}", path=source, field=key
                )
        kwargs = dict(values)
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except InputError as err:
            raise InputError(err.message, path=source, field=err.field) from None

    def as_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def violations(self, summary: Mapping[str, float]) -> dict[str, tuple[float, float]]:
        """Limits an evaluation summary breaks: ``{limit: (value reached, limit)}``."""
        out = {}
        for limit, metric in LIMIT_METRICS.items():
            bound = getattr(self, limit)
            if bound is not None and summary[metric] > bound * (1 + 1e-12):
                out[limit] = (float(summary[metric]), float(bound))
        return out


def read_limits(path: str | Path) -> dict[str, Limits]:
    """Read ``LIMITS.toml``: one table per input file stem with keys of :class:`Limits`."""
    path = Path(path)
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"\(at line (\d+), column \d+\)", str(err))
        line = int(match.group(1)) if match else None
        raise InputError(f"not valid TOML: {err}", path=path, line=line) from None
    out = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise InputError(
                "expected a table [bucket_name] of limits",
                path=path,
                line=_toml_line(text, None, name),
                field=name,
            )
        try:
            out[name] = Limits.from_mapping(table)
        except InputError as err:
            raise InputError(
                err.message,
                path=path,
                line=_toml_line(text, name, err.field),
                field=f"{name}.{err.field}",
            ) from None
    return out


def _toml_line(text: str, table: str | None, key: str | None) -> int | None:
    """The 1-based line of ``key = ...`` in table ``[table]`` of a TOML text (None: top
    level), when it is written plainly there; else None."""
    current = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.fullmatch(r"\[\s*\"?([^\]\"]+?)\"?\s*\]", line)
        if header:
            current = header.group(1).strip()
            continue
        if current == table and key is not None:
            match = re.match(r'"?([A-Za-z0-9_-]+)"?\s*=', line)
            if match and match.group(1) == key:
                return number
    return None


@dataclass(frozen=True)
class LowerBounds:
    """Values no plan of this bucket can beat, computed before optimizing.

    - ``min_padding_tokens``: the alignment padding of the prompts, Σ(align(p) − p).
    - ``min_pad_ratio``: that padding over Σ(prompt_len + gen_len).
    - ``min_batches``: ceil(n / max_batch_size).
    - ``min_cost``: every request alone in its batch (decode is increasing in S_max and
      G_max), plus min_batches overheads and one compile of the smallest shape that covers
      the longest prompt.
    - ``min_p95_latency_ms``: the nearest-rank p95 of the requests' latencies when each runs
      alone.
    - ``min_sequential_ms``: the alone latencies sorted in decreasing order a1 ≥ a2 ≥ …; a
      batch of at most m requests is as slow as its slowest member, so every plan takes at
      least a1 + a(m+1) + a(2m+1) + … .
    """

    min_padding_tokens: int
    min_pad_ratio: float
    min_batches: int
    min_cost: float
    min_p95_latency_ms: float
    min_sequential_ms: float

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def lower_bounds(
    requests: pd.DataFrame,
    cost_model: str | CostModel = "static-graph",
    max_batch_size: int | None = None,
) -> LowerBounds:
    """The hard lower bounds of one bucket (see :class:`LowerBounds`); vectorized."""
    cm = get_cost_model(cost_model)
    df = validate_requests(requests)
    p = df["prompt_len"].to_numpy(np.int64)
    g = df["gen_len"].to_numpy(np.int64)
    return _lower_bounds(p, g, cm, max_batch_size)


def _lower_bounds(p: np.ndarray, g: np.ndarray, cm: CostModel, max_batch_size) -> LowerBounds:
    s = align(p, cm.granularity)
    n = len(p)
    pad = min_padding_tokens(p, cm.granularity)
    nb = min_batches(n, max_batch_size)
    if cm.members_pay_caps:
        decode = float(cm.decode_cost(s, g).sum())
    else:  # batches priced as a whole, at most max_batch_size members each
        from batchlab.batch_priced import decode_cost_floor

        decode = decode_cost_floor(cm, s, g, max_batch_size or n)
    prefill = float(cm.prefill_cost(s).sum())
    min_cost = float(prefill + decode + nb * cm.overhead_cost + cm.compile_cost(s.max()))
    alone_ms = np.sort(cm.prefill_ms(s) + cm.decode_ms(s, g) + cm.overhead_ms)
    p95 = float(alone_ms[math.ceil(0.95 * n) - 1])
    step = n if max_batch_size is None else int(max_batch_size)
    seq = float(alone_ms[::-1][::step].sum())
    return LowerBounds(
        min_padding_tokens=int(pad),
        min_pad_ratio=float(pad / float((p + g).sum())),
        min_batches=int(nb),
        min_cost=min_cost,
        min_p95_latency_ms=p95,
        min_sequential_ms=seq,
    )


@dataclass(frozen=True)
class BucketPlan:
    """The plan of one bucket with its evaluation, bounds, limits and search settings.

    ``lower_bound`` (cost units) is a certified lower bound on the cost of *every* plan of this
    bucket that meets its limits (the exact model's dual bound, or the Lagrangian bound of
    :mod:`batchlab.exact`, never below ``bounds.min_cost``); ``optimality_gap`` is
    ``cost / lower_bound − 1``: the plan is at most that fraction above the optimum.
    """

    name: str
    plan: pd.DataFrame
    evaluation: Evaluation
    bounds: LowerBounds
    limits: Limits
    settings: dict = field(default_factory=dict)
    lower_bound: float = -math.inf

    @property
    def optimality_gap(self) -> float:
        """cost / lower_bound − 1 (dimensionless, >= 0): how far above the optimum at most."""
        return _gap(self.evaluation.cost.total, self.lower_bound)

    def comparison(self) -> pd.DataFrame:
        """Achieved value, lower bound and limit per metric (one row per metric); the
        ``total_cost`` row's bound is the certified ``lower_bound`` and its ``optimality_gap``
        is filled (the other metrics' floors are the simple :class:`LowerBounds`)."""
        summary = self.evaluation.summary()
        rows = [
            ("total_cost", summary["total_cost"], self.lower_bound, self.limits.max_cost),
            (
                "pad_ratio",
                summary["pad_ratio"],
                self.bounds.min_pad_ratio,
                self.limits.max_pad_ratio,
            ),
            (
                "p95_latency_ms",
                summary["p95_latency_ms"],
                self.bounds.min_p95_latency_ms,
                self.limits.max_p95_latency_ms,
            ),
            (
                "sequential_ms",
                summary["sequential_ms"],
                self.bounds.min_sequential_ms,
                self.limits.max_sequential_ms,
            ),
            ("n_batches", summary["n_batches"], self.bounds.min_batches, None),
        ]
        out = pd.DataFrame(rows, columns=["metric", "achieved", "lower_bound", "limit"])
        out.insert(0, "bucket", self.name)
        out["limit_met"] = [
            lim is None or achieved <= lim * (1 + 1e-12) for _, achieved, _, lim in rows
        ]
        out["optimality_gap"] = [self.optimality_gap] + [math.nan] * (len(rows) - 1)
        return out


def _gap(cost: float, bound: float) -> float:
    if not math.isfinite(bound) or bound <= 0:
        return math.inf
    return max(0.0, float(cost) / float(bound) - 1.0)


@dataclass(frozen=True)
class PlanResult:
    """Plans for every bucket and the global shape set they share.

    ``lower_bound``: a certified lower bound on the total cost of every set of plans that meets
    the limits and the shared cap (at least the sum of the buckets' bounds); ``max_shapes`` is
    the cap used (clamped to the number of distinct aligned prompt lengths).
    """

    buckets: tuple[BucketPlan, ...]
    shapes: tuple[int, ...]
    max_shapes: int
    lower_bound: float = -math.inf
    method: str = "heuristic"

    @property
    def total_cost(self) -> float:
        return float(sum(b.evaluation.cost.total for b in self.buckets))

    @property
    def optimality_gap(self) -> float:
        """total_cost / lower_bound − 1 (dimensionless)."""
        return _gap(self.total_cost, self.lower_bound)

    def __getitem__(self, name: str) -> BucketPlan:
        for b in self.buckets:
            if b.name == name:
                return b
        raise KeyError(name)

    def comparison(self) -> pd.DataFrame:
        """Every bucket's achieved values next to its lower bounds and limits."""
        return pd.concat([b.comparison() for b in self.buckets], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# batching inside one bucket


@dataclass(frozen=True)
class _Bucket:
    name: str
    requests: pd.DataFrame
    prompt: np.ndarray
    gen: np.ndarray
    aligned: np.ndarray
    limits: Limits
    bounds: LowerBounds


def _runs(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Start offsets of runs of equal keys in already sorted key arrays (plus the end)."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.append(np.flatnonzero(change), n)


def _split_runs(
    s_run: np.ndarray,
    g_run: np.ndarray,
    c_run: np.ndarray,
    cm: CostModel,
    lam: float,
    max_batch_size: int | None,
    latency_cap: float | None,
    window: int,
) -> np.ndarray:
    """Exact DP over runs: start offsets of the batches minimizing Σ(cost + λ·latency).

    Segment costs for every (end, width) pair are built column-block by column-block as
    matrices (vectorized), then the recursion runs once per run end.
    """
    r = len(s_run)
    w = max(1, min(window, r))
    cum = np.concatenate([[0], np.cumsum(c_run)])
    best = np.full(r + 1, np.inf)
    best[0] = 0.0
    prev = np.zeros(r + 1, dtype=np.int64)
    block = max(1, 2_000_000 // w)
    widths = np.arange(1, w + 1)
    for b0 in range(1, r + 1, block):
        ends = np.arange(b0, min(r, b0 + block - 1) + 1)
        starts = ends[None, :] - widths[:, None]  # (w, e)
        valid = starts >= 0
        st = np.where(valid, starts, 0)
        # running maxima over widths: row k holds max over runs [end-k-1, end)
        smax = np.maximum.accumulate(np.where(valid, s_run[st], 0), axis=0)
        gmax = np.maximum.accumulate(np.where(valid, g_run[st], 0), axis=0)
        count = cum[ends][None, :] - cum[st]
        seg = cm.overhead_cost + count * cm.decode_cost(smax, gmax)
        bad = ~valid
        if lam > 0 or latency_cap is not None:
            lat = cm.prefill_ms(smax) + cm.decode_ms(smax, gmax) + cm.overhead_ms
            if lam > 0:
                seg += lam * lat
            if latency_cap is not None:
                # a batch over the latency cap may only hold one run of identical requests,
                # so no request is pulled over the cap by a slower neighbour
                bad |= (lat > latency_cap) & (widths[:, None] > 1)
        if max_batch_size is not None:
            bad |= count > max_batch_size
        seg[bad] = np.inf
        # rows: one per end; columns: starts end-w .. end-1 in increasing order
        seg_rows = np.ascontiguousarray(seg[::-1].T)
        buf = np.empty(w)
        for j, end in enumerate(ends.tolist()):
            lo = end - w if end > w else 0
            cand = buf[: end - lo]
            np.add(best[lo:end], seg_rows[j, w - (end - lo) :], out=cand)
            k = cand.argmin()
            best[end] = cand[k]
            prev[end] = lo + k
    out = []
    end = r
    while end > 0:
        end = int(prev[end])
        out.append(end)
    return np.asarray(out[::-1], dtype=np.int64)


def _split_adaptive(s_run, g_run, c_run, cm, lam, mbs, latency_cap, window) -> np.ndarray:
    """``_split_runs`` with a window that starts narrow and widens (x4) while the optimum uses a
    batch as wide as the window, up to ``window`` runs. Cheap plans (λ = 0) have small batches, so
    most calls stop at the first, narrow window."""
    w = min(window, 32)
    while True:
        starts = _split_runs(s_run, g_run, c_run, cm, lam, mbs, latency_cap, w)
        widest = int(np.diff(np.append(starts, len(s_run))).max())
        if widest < w or w >= min(window, len(s_run)):
            return starts
        w = min(window, w * 4)


def _batch_bucket(
    bucket: _Bucket,
    shapes: np.ndarray,
    cm: CostModel,
    gen_bucket: int,
    lam: float,
    window: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order the requests and cut them into batches.

    Returns (order, batch number per ordered request, seq_align per ordered request).
    """
    lim = bucket.limits
    seq = shapes[np.searchsorted(shapes, bucket.aligned, side="left")]
    eff = seq if cm.padded else bucket.aligned
    order = np.lexsort((bucket.gen, eff, (bucket.gen - 1) // gen_bucket, seq))
    s_o, g_o, q_o = eff[order], bucket.gen[order], seq[order]
    run_starts = _runs([q_o, s_o, g_o])
    lengths = np.diff(run_starts)
    # runs longer than max_batch_size: their full chunks are batches of identical requests
    mbs = lim.max_batch_size
    pieces_start = run_starts[:-1]
    pieces_len = lengths
    if mbs is not None and (lengths > mbs).any():
        n_full = lengths // mbs
        rem = lengths - n_full * mbs
        reps = n_full + (rem > 0)
        run_of_piece = np.repeat(np.arange(len(lengths)), reps)
        first_piece = np.cumsum(reps) - reps
        k = np.arange(len(run_of_piece)) - first_piece[run_of_piece]
        pieces_start = run_starts[:-1][run_of_piece] + k * mbs
        pieces_len = np.minimum(mbs, lengths[run_of_piece] - k * mbs)
    # DP per shape group (batches never mix shapes)
    batch_of_piece = np.empty(len(pieces_start), dtype=np.int64)
    group_bounds = _runs([q_o[pieces_start]])
    next_batch = 0
    for a, b in zip(group_bounds[:-1], group_bounds[1:], strict=True):
        ps = pieces_start[a:b]
        pl = pieces_len[a:b]
        full = pl == mbs if mbs is not None else np.zeros(len(pl), dtype=bool)
        # full pieces become batches on their own; the DP splits the others
        rest = np.flatnonzero(~full)
        labels = np.empty(b - a, dtype=np.int64)
        if rest.size:
            idx = ps[rest]
            starts = _split_adaptive(
                s_o[idx],
                g_o[idx],
                pl[rest],
                cm,
                lam,
                mbs,
                lim.max_p95_latency_ms,
                window,
            )
            seg_id = np.searchsorted(starts, np.arange(rest.size), side="right") - 1
            labels[rest] = next_batch + seg_id
            next_batch += len(starts)
        nfull = int(full.sum())
        labels[full] = next_batch + np.arange(nfull)
        next_batch += nfull
        batch_of_piece[a:b] = labels
    batch_sorted = np.repeat(batch_of_piece, pieces_len)
    # renumber so batch numbers increase along the order
    _, first = np.unique(batch_sorted, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return order, rank[batch_sorted], q_o


def _make_plan(
    bucket: _Bucket, order: np.ndarray, batch: np.ndarray, seq: np.ndarray, heads: int, hidden: int
) -> pd.DataFrame:
    width = max(6, len(str(int(batch.max()))))
    names = np.asarray([f"b{k:0{width}d}" for k in range(int(batch.max()) + 1)], dtype=object)
    ids = names[batch]
    rid = bucket.requests["request_id"].to_numpy(dtype=object)[order]
    return plan_from_batches(rid, ids, seq, heads_align=heads, hidden_align=hidden)


@dataclass(frozen=True)
class _Candidate:
    """A candidate plan kept as arrays (rows in plan order) with its summary; the plan table and
    the full :class:`Evaluation` are built only for the plan that is returned."""

    order: np.ndarray
    batch: np.ndarray
    seq: np.ndarray
    summary: dict
    violations: dict
    settings: dict

    @property
    def ok(self) -> bool:
        return not self.violations

    def shapes_used(self) -> set[int]:
        return {int(s) for s in np.unique(self.seq)}

    def materialize(self, bucket: _Bucket, cm: CostModel, heads: int, hidden: int):
        plan = _make_plan(bucket, self.order, self.batch, self.seq, heads, hidden)
        ev = evaluate(bucket.requests, plan, cm)
        return plan, ev


def _exact_summary(
    bucket: _Bucket, cm: CostModel, order: np.ndarray, batch: np.ndarray, seq: np.ndarray
) -> dict[str, float | int]:
    """The exact metrics (:func:`batchlab.evaluate.evaluate_arrays`) of ``bucket``'s requests
    taken in ``order``, with batch label ``batch`` (0, 1, ... in runs) and shape ``seq``
    (tokens) per row of that order."""
    first_row = np.unique(batch, return_index=True)[1]
    return evaluate_arrays(
        cm,
        bucket.prompt[order],
        bucket.gen[order],
        bucket.aligned[order],
        seq,
        batch,
        int(batch.max()) + 1,
        first_row,
    ).summary()


def _candidate(bucket, shapes, cm, gen_bucket, lam, window) -> _Candidate:
    order, batch, seq = _batch_bucket(bucket, shapes, cm, gen_bucket, lam, window)
    summary = _exact_summary(bucket, cm, order, batch, seq)
    settings = {
        "n_shapes_global": int(len(shapes)),
        "gen_bucket_size": int(gen_bucket),
        "lagrange_multiplier": float(lam),
        "window_runs": int(window),
    }
    return _Candidate(order, batch, seq, summary, bucket.limits.violations(summary), settings)


def _gen_bucket_sizes(gen: np.ndarray) -> list[int]:
    """Gen-bucket sizes to try: 1 (gen-major order), powers of two from an eighth of the median
    gen_len up to the longest gen_len, and no bucketing (prompt-major order)."""
    med = max(1, int(np.median(gen)))
    top = int(gen.max())
    sizes = {1, top}
    size = max(1, med // 8)
    while size < top:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def _rank(c: _Candidate) -> tuple:
    return (not c.ok, c.summary["total_cost"])


def _search_lambda(bucket, shapes, cm, gen_bucket, window, base: _Candidate) -> _Candidate:
    """Smallest λ (log-scale bisection) whose plan meets max_sequential_ms."""
    limit = bucket.limits.max_sequential_ms
    scale = base.summary["total_cost"] / max(base.summary["sequential_ms"], 1e-9)
    lo, hi = 0.0, scale
    hi_cand = _candidate(bucket, shapes, cm, gen_bucket, hi, window)
    tries = 0
    while hi_cand.summary["sequential_ms"] > limit and tries < 12:
        lo, hi = hi, hi * 8
        hi_cand = _candidate(bucket, shapes, cm, gen_bucket, hi, window)
        tries += 1
    if hi_cand.summary["sequential_ms"] > limit:
        return hi_cand  # the most sequential-time-minded plan found; still over the limit
    best = hi_cand
    for _ in range(14):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 16
        cand = _candidate(bucket, shapes, cm, gen_bucket, mid, window)
        if cand.summary["sequential_ms"] <= limit:
            hi, best = mid, min(best, cand, key=_rank)
        else:
            lo = mid
        if lo > 0 and hi / lo < 1.05:
            break
    return best


def _plan_bucket(
    bucket, shapes, cm, window, full: bool, coarse: bool = False
) -> tuple[_Candidate, list[_Candidate]]:
    """Best candidate of one bucket for a fixed global shape set, and every candidate tried.

    ``coarse``: only three orders (gen-major, median-sized gen buckets, prompt-major), to
    compare shape sets cheaply; otherwise every size of :func:`_gen_bucket_sizes`.
    """
    sizes = _gen_bucket_sizes(bucket.gen)
    if coarse:
        sizes = sorted({sizes[0], max(1, int(np.median(bucket.gen))), sizes[-1]})
    tried = _sized_candidates(bucket, shapes, cm, window, sizes, full)
    best = min(tried, key=_rank)
    lim = bucket.limits
    if full and not best.ok and lim.max_sequential_ms is not None:
        if lim.max_p95_latency_ms is not None or lim.max_pad_ratio is not None:
            # the batching's p95 and pad budgets are heuristic: plans batched for the
            # sequential limit alone may meet them too (scored against every limit)
            relaxed = dataclasses.replace(lim, max_p95_latency_ms=None, max_pad_ratio=None)
            alone = dataclasses.replace(bucket, limits=relaxed)
            tried += [
                dataclasses.replace(c, violations=lim.violations(c.summary))
                for c in _sized_candidates(alone, shapes, cm, window, sizes, full)
            ]
            best = min(tried, key=_rank)
    return best, tried


def _sized_candidates(bucket, shapes, cm, window, sizes, full: bool) -> list[_Candidate]:
    """A candidate per gen-bucket size at λ = 0 and, when none meets the limits and a
    sequential limit is set (``full``), the λ search from each."""
    tried = [_candidate(bucket, shapes, cm, gb, 0.0, window) for gb in sizes]
    if full and not any(c.ok for c in tried) and bucket.limits.max_sequential_ms is not None:
        base = sorted(tried, key=lambda c: c.summary["total_cost"])
        for c in base:
            tried.append(
                _search_lambda(bucket, shapes, cm, c.settings["gen_bucket_size"], window, c)
            )
    return tried


def _as_buckets(buckets) -> list[tuple[str, pd.DataFrame]]:
    if isinstance(buckets, pd.DataFrame):
        return [("bucket_0", buckets)]
    if isinstance(buckets, Mapping):
        if not buckets:
            raise InputError("no buckets to plan (an empty mapping)", field="buckets")
        return [(str(k), v) for k, v in buckets.items()]
    if isinstance(buckets, str | bytes) or not isinstance(buckets, Iterable):
        raise InputError(
            "expected a request table, a list of them or a mapping name -> table, got "
            f"{type(buckets).__name__}",
            field="buckets",
        )
    items = list(buckets)
    if not items:
        raise InputError("no buckets to plan", field="buckets")
    return [(f"bucket_{i}", df) for i, df in enumerate(items)]


def _limits_for(limits, names: list[str]) -> dict[str, Limits]:
    if limits is None:
        return {n: Limits() for n in names}
    if isinstance(limits, Limits):
        return {n: limits for n in names}
    if isinstance(limits, Mapping):
        unknown = sorted(set(limits) - set(names))
        if unknown:
            raise InputError(
                f"limits given for unknown bucket(s) {unknown}; buckets: {names}", field="limits"
            )
        out = {}
        for n in names:
            lim = limits.get(n, Limits())
            out[n] = (
                lim if isinstance(lim, Limits) else Limits.from_mapping(lim, source=f"limits[{n}]")
            )
        return out
    raise InputError(
        f"limits must be a Limits or a mapping of bucket name to Limits, got {type(limits).__name__}",
        field="limits",
    )


def _infeasible(
    bucket: _Bucket, tried: list[_Candidate], time_limit_s: float | None = None
) -> LimitError:
    """The error for a bucket none of whose candidates meets every limit; ``time_limit_s``
    where the time limit cut the search (the limit may then be met: it says so)."""
    err, proved = _closest_violation(bucket, tried)
    if time_limit_s is not None and not proved:
        err.args = (
            f"bucket '{bucket.name}': no plan meeting limit {err.limit} = "
            f"{err.limit_value:,.6g} was found within time_limit_s = {time_limit_s:g} s (the "
            f"best plan found reaches {err.best_value:,.6g}); a larger time_limit_s may find one",
        )
    return err


#: the LowerBounds field that no plan can beat, per limit
_LIMIT_FLOORS = {
    "max_cost": "min_cost",
    "max_pad_ratio": "min_pad_ratio",
    "max_p95_latency_ms": "min_p95_latency_ms",
    "max_sequential_ms": "min_sequential_ms",
}


def _closest_violation(bucket: _Bucket, tried: list[_Candidate]) -> tuple[LimitError, bool]:
    """The error naming the limit the closest plan breaks, and whether a lower bound proves
    that no plan meets it."""
    lim = bucket.limits
    for name, metric in LIMIT_METRICS.items():
        bound = getattr(lim, name)
        if bound is None:
            continue
        best = min(c.summary[metric] for c in tried)
        if best > bound * (1 + 1e-12):
            err = LimitError(name, bucket.name, bound, best)
            floor = float(getattr(bucket.bounds, _LIMIT_FLOORS[name]))
            proved = floor > bound * (1 + 1e-12)
            if proved:  # say so, with the floor
                err.args = (
                    f"{err}; no plan can reach below {floor:,.6g} (batchlab.planner.lower_bounds)",
                )
            return err, proved

    # each limit can be met alone, but not all together: name the one the closest plan breaks
    def excess(c: _Candidate) -> float:
        return sum(v / b - 1 for v, b in c.violations.values())

    closest = min(tried, key=excess)
    name, (value, bound) = next(iter(closest.violations.items()))
    err = LimitError(name, bucket.name, bound, value)
    err.args = (str(err) + " (each limit alone can be met, but not all of them together)",)
    return err, False


def _alone_at_shape(cm: CostModel, prepared: list[_Bucket]):
    """The shape DPs' cost of a request at a shape (padded-graph): its prefill and its decode of
    the mean gen_len at that shape, alone (cost units; a function of seq_align and the aligned
    length, for :func:`batchlab.shapes.joint_optimal_shapes`)."""
    mean_gen = float(np.mean(np.concatenate([b.gen for b in prepared])))

    def alone(seq_align, aligned_len):
        return cm.prefill_cost(seq_align) + cm.decode_cost(seq_align, mean_gen) + 0 * aligned_len

    return alone


def _contiguous_search(
    prepared: list[_Bucket], cm: CostModel, max_shapes: int, window: int | None
) -> tuple[list[_Candidate], list[list[_Candidate]]]:
    """The contiguous-run search for large buckets: for every global shape count a joint optimal
    shape set; inside each shape group an exact DP over runs of one sort order; λ bisection for
    the sequential limit. Returns the best candidate per bucket and every candidate tried."""
    n_total = sum(len(b.prompt) for b in prepared)
    if window is None:
        window = int(min(512, max(48, 3_000_000 // max(n_total, 1))))
    shape_cost = _alone_at_shape(cm, prepared) if cm.padded else None
    aligned_sets = [b.aligned for b in prepared]
    tried: list[list[_Candidate]] = [[] for _ in prepared]

    def plan_all(
        shapes: np.ndarray, full: bool, coarse: bool = False
    ) -> tuple[int, float, np.ndarray, list[_Candidate]]:
        best = []
        for i, b in enumerate(prepared):
            chosen, cands = _plan_bucket(b, shapes, cm, window, full, coarse)
            tried[i].extend(cands)
            best.append(chosen)
        return (
            sum(not c.ok for c in best),
            sum(c.summary["total_cost"] for c in best),
            shapes,
            best,
        )

    def rank(o):
        return (o[0], o[1])

    # stage 1: every global shape count, with the cheap (λ = 0, three orders) search; under
    # padded-graph also the sets chosen with each shape's compile cost
    options = []
    seen = set()
    fixed_costs = (None, cm.compile_cost) if cm.padded else (None,)
    for k, fixed in itertools.product(range(1, int(max_shapes) + 1), fixed_costs):
        shapes = np.asarray(
            joint_optimal_shapes(
                aligned_sets, k, cm.granularity, cost=shape_cost, fixed_cost=fixed
            ),
            dtype=np.int64,
        )
        if tuple(shapes.tolist()) in seen:
            continue
        seen.add(tuple(shapes.tolist()))
        options.append(plan_all(shapes, full=False, coarse=True))
    options.sort(key=rank)
    # stage 2: every order on the best shape set
    options.append(plan_all(options[0][2], full=False))
    options.sort(key=rank)
    # stage 3: where a limit is not met, the λ search on the two best shape sets and the finest
    if options[0][0] > 0:
        retry = options[:2] + [max(options, key=lambda o: len(o[2]))]
        retry = list({tuple(o[2].tolist()): o for o in retry}.values())
        options += [plan_all(o[2], full=True) for o in retry]
        options.sort(key=rank)
    return options[0][3], tried


# ---------------------------------------------------------------------------------------------
# the cap heuristic: greedy merges of batches by their caps

#: buckets with more distinct (aligned length, gen_len) pieces than this use the contiguous search
#: (and, where column generation runs, the cap heuristic on coarse pieces too)
_MERGE_LIMIT = 4000
#: under padded-graph the cap heuristic runs, in full and with no deadline, for up to three shape
#: sets on every bucket: there it takes buckets of at most this many pieces (two wide-length
#: buckets of 3,000 and 2,000 requests took 34 s under a 10 s limit at 4,000)
_PADDED_MERGE_LIMIT = 2500
#: ... on this many shape sets always, more while the time limit leaves room
_PADDED_SETS = 3
#: the coarsest grouping of the cap heuristic's pieces (consecutive distinct values per piece)
_MAX_COARSE = 64
#: a quick merge (column generation follows) bisects its λ until hi / lo is below this
_QUICK_RATIO = 1.5
#: the exact model is solved under ``exact="auto"`` when it has at most this many assignments
_EXACT_AUTO_SIZE = 4000
#: ``exact="auto"`` also solves a larger model (up to this size) when the heuristics leave a
#: certified gap above _EXACT_RETRY_GAP (its work is bounded by _EXACT_WORK, not by time left)
_EXACT_RETRY_SIZE = 40_000
_EXACT_RETRY_GAP = 0.001
#: the Lagrangian bound is computed when a bucket has at most this many types
_BOUND_LIMIT = 4000
#: Bounds from HiGHS (MILP dual bounds, LP optima) are exact only up to its feasibility
#: tolerances (1e-7): they are lowered by this share so that no bound exceeds the optimum.
_SOLVER_BOUND_SLACK = 2e-7


def _safe_bound(value: float) -> float:
    """A solver's bound lowered by its tolerance (:data:`_SOLVER_BOUND_SLACK`)."""
    return value - _SOLVER_BOUND_SLACK * abs(value) if math.isfinite(value) else value


#: buckets larger than this are compared with the baseline only, not the whole sweep grid
_REFERENCE_GRID_LIMIT = 20_000
#: the shape-cap bound is computed when types × candidate shapes is at most this
_CAP_BOUND_LIMIT = 400_000
#: above it, the shape-cap bound with each type's own price as its dual (vectorized), up to this
_PRICE_BOUND_LIMIT = 20_000_000


@dataclass(frozen=True, eq=False)
class _Pieces:
    """A bucket's initial batches: the requests of one type in chunks of at most max_batch_size.

    ``req_order`` sorts the requests by type; piece p holds rows ``start[p]:start[p]+n[p]`` of it.
    """

    s: np.ndarray  # S cap (aligned length or, padded-graph, the declared shape), tokens
    g: np.ndarray  # G cap, tokens
    n: np.ndarray  # requests
    pre_ms: np.ndarray  # prefill_ms of the piece's own aligned length (static-graph p95)
    req_order: np.ndarray
    start: np.ndarray


def _make_pieces(
    bucket: _Bucket, cm: CostModel, s_of_request: np.ndarray, mbs: int, coarse: int = 1
) -> _Pieces:
    """Group identical requests (same S cap and gen_len) into pieces of at most ``mbs``.

    ``coarse`` > 1 groups requests whose S caps and gen_lens are within ``coarse`` consecutive
    distinct values of each other instead (for buckets with too many distinct types): a
    piece's caps are then its members' largest S and gen_len (its own latency, for the p95
    count, that of its longest aligned prompt)."""
    key_a, key_s, key_g = bucket.aligned, s_of_request, bucket.gen
    if coarse > 1:
        key_a, key_s, key_g = (
            np.unique(k, return_inverse=True)[1] // coarse for k in (key_a, key_s, key_g)
        )
    order = np.lexsort((bucket.gen, key_g, key_s, key_a))
    runs = _runs([key_a[order], key_s[order], key_g[order]])
    lengths = np.diff(runs)
    reps = -(-lengths // mbs)
    run_of_piece = np.repeat(np.arange(len(lengths)), reps)
    k = np.arange(len(run_of_piece)) - (np.cumsum(reps) - reps)[run_of_piece]
    start = runs[:-1][run_of_piece] + k * mbs
    n = np.minimum(mbs, lengths[run_of_piece] - k * mbs)
    if coarse > 1:  # the members' largest values (pieces are consecutive rows of the order)
        s_cap = np.maximum.reduceat(s_of_request[order], start)
        g_cap = np.maximum.reduceat(bucket.gen[order], start)
        a_top = np.maximum.reduceat(bucket.aligned[order], start)
    else:
        first = order[start]
        s_cap, g_cap, a_top = s_of_request[first], bucket.gen[first], bucket.aligned[first]
    return _Pieces(
        s=s_cap.astype(np.float64),
        g=g_cap.astype(np.float64),
        n=n.astype(np.float64),
        pre_ms=cm.prefill_ms(a_top),
        req_order=order,
        start=start,
    )


def _cap_price(cm: CostModel, s, g) -> np.ndarray:
    """Cost per member of a batch with caps (s, g): decode, plus prefill at s when padded."""
    out = cm.decode_cost(s, g)
    return out + cm.prefill_cost(s) if cm.padded else out


def _cap_ms(cm: CostModel, s, g) -> np.ndarray:
    """The slowest member's latency of a batch with caps (s, g), no compile spike (ms)."""
    return cm.prefill_ms(s) + cm.decode_ms(s, g) + cm.overhead_ms


class _MergeSearch:
    """Greedy merging of batches: merge pairs of batches (any two, not only neighbours in some
    order) whose merge saves the most ``overhead + decode + μ × latency``, until no merge saves
    anything; then move single pieces between batches while a move saves (:meth:`relocate`).
    max_batch_size, the pad-ratio budget and the p95 budget (requests allowed over the limit)
    are hard constraints checked on every merge and move.

    Merges go in rounds: every batch's best partner is kept (a dense matrix of savings), the
    pairs that are each other's best partner are merged at once (the best pair overall always
    is one), most saving first, and only the merged batches' rows are recomputed, so a round is
    O(merged × pieces) numpy work. Caps are indices into the sorted distinct S and G values.
    A cost model whose batches do not cost ``overhead + members × price`` (``members_pay_caps``
    False) is priced through its ``batch_decode_cost`` / ``batch_decode_ms``.
    """

    def __init__(self, cm: CostModel, pieces: _Pieces, limits: Limits, budgets: dict) -> None:
        self.cm = cm
        self.p = pieces
        self.sv, si = np.unique(pieces.s, return_inverse=True)
        self.gv, gi = np.unique(pieces.g, return_inverse=True)
        self.si, self.gi = si.reshape(-1), gi.reshape(-1)
        ss, gg = np.meshgrid(self.sv, self.gv, indexing="ij")
        self.tables = cm.members_pay_caps
        if self.tables:
            self.price = _cap_price(cm, ss, gg)
            self.lat = _cap_ms(cm, ss, gg)
            self.dec = cm.decode_ms(ss, gg) + cm.overhead_ms
        self.width = gg + ss if cm.padded else gg
        n = pieces.n
        self.mbs = float(limits.max_batch_size or n.sum())
        self.lim95 = limits.max_p95_latency_ms
        self.budgets = budgets
        # p95: each piece's own prefill latency as a level; per batch, cumulative counts over
        # the levels give how many members are over the limit at any cap
        self.levels, lv = np.unique(pieces.pre_ms, return_inverse=True)
        self.level_of = lv.reshape(-1)
        self._thr = None
        # the cost and latency of every pair of pieces merged (they do not depend on μ), a
        # block of rows at a time (the temporaries of one block, not of the whole matrix)
        k = len(n)
        self.pair_cost = np.empty((k, k))
        self.pair_ms = np.empty((k, k))
        for lo in range(0, k, 256):
            hi = min(k, lo + 256)
            ms = np.maximum.outer(self.si[lo:hi], self.si)
            mg = np.maximum.outer(self.gi[lo:hi], self.gi)
            nm = n[lo:hi, None] + n[None, :]
            self.pair_cost[lo:hi] = self.f(ms, mg, nm, 0.0)
            self.pair_ms[lo:hi] = self.batch_ms(ms, mg, nm)
        self.pair_bad = n[:, None] + n[None, :] > self.mbs
        np.fill_diagonal(self.pair_bad, True)

    # -- the batch objective -------------------------------------------------------------------
    def batch_ms(self, s, g, n) -> np.ndarray:
        """The slowest member's latency of batches with cap indices (s, g) and n members (ms)."""
        if self.tables:
            return self.lat[s, g]
        cm = self.cm
        S, G = self.sv[s], self.gv[g]
        return cm.prefill_ms(S) + cm.batch_decode_ms(S, G, n) + cm.overhead_ms

    def f(self, s, g, n, mu: float) -> np.ndarray:
        """Overhead + decode (+ prefill at the shape when padded) + μ × latency of batches."""
        cm = self.cm
        if self.tables:
            flat = s * self.lat.shape[1] + g
            lat = np.take(self.lat, flat)
            return cm.overhead_cost + mu * lat + n * np.take(self.price, flat)
        S, G = self.sv[s], self.gv[g]
        cost = cm.overhead_cost + cm.batch_decode_cost(S, G, n)
        if cm.padded:
            cost = cost + n * cm.prefill_cost(S)
        return cost + mu * self.batch_ms(s, g, n)

    def _threshold(self, s, g, n) -> np.ndarray:
        """Per batch, the number of prefill levels whose members are within the p95 limit."""
        if self.tables:
            if self._thr is None:
                self._thr = np.searchsorted(
                    self.levels, self.lim95 * (1 + 1e-12) - self.dec, side="right"
                )
            return self._thr[s, g]
        else:
            cm = self.cm
            dec = cm.batch_decode_ms(self.sv[s], self.gv[g], n) + cm.overhead_ms
        return np.searchsorted(self.levels, self.lim95 * (1 + 1e-12) - dec, side="right")

    def _over_counts(self, cum, s, g, n, a=None, b=None) -> np.ndarray:
        """Members over the p95 limit (no compile spike) of batches at cap indices (s, g) with n
        members; ``cum`` holds cumulative counts over the prefill levels, one row per batch, and
        the members are those of rows ``a`` (and ``b``, for a merge of two) of it."""
        if self.lim95 is None:
            return np.zeros(np.shape(n))
        if self.cm.padded:
            return np.where(self.batch_ms(s, g, n) > self.lim95 * (1 + 1e-12), n, 0.0)
        thr = self._threshold(s, g, n) - 1
        col = np.maximum(thr, 0)
        within = cum[a, col]
        if b is not None:
            within = within + cum[b, col]
        return n - np.where(thr >= 0, within, 0.0)

    def _over(self, members: list[int], s: int, g: int) -> float:
        """Requests of one batch with cap indices (s, g) over the p95 limit (no compile spike)."""
        if self.lim95 is None or not members:
            return 0.0
        idx = np.asarray(members)
        cnt = np.bincount(self.level_of[idx], weights=self.p.n[idx], minlength=len(self.levels))
        n = float(self.p.n[idx].sum())
        cum = np.cumsum(cnt)[None, :]
        one = np.zeros(1, dtype=np.int64)
        return float(self._over_counts(cum, np.array([s]), np.array([g]), np.array([n]), one)[0])

    # -- merges --------------------------------------------------------------------------------
    def _mask(self, gain, rows, alive, si, gi, n, over, cum, pad_left, over_left) -> None:
        """Rule out (for good: budgets only shrink) the merges of ``rows`` with any live batch
        that the pad or p95 budget left cannot pay for."""
        width = self.width
        tight_pad = pad_left < self.mbs * float(width.max())
        tight_over = self.lim95 is not None and over_left < self.mbs
        if not (tight_pad or tight_over):
            return
        cols = np.flatnonzero(alive)
        # only merges that would save something can be chosen: check those pairs alone
        rr, cc = np.nonzero(gain[np.ix_(rows, cols)] > 0)
        if not rr.size:
            return
        a, b = rows[rr], cols[cc]
        s3 = np.maximum(si[a], si[b])
        g3 = np.maximum(gi[a], gi[b])
        n3 = n[a] + n[b]
        out = np.zeros(n3.shape, dtype=bool)
        if tight_pad:
            wn = n * width[si, gi]
            out |= n3 * width[s3, g3] - wn[a] - wn[b] > pad_left + 1e-9
        if tight_over:
            d = self._over_counts(cum, s3, g3, n3, a, b) - over[a] - over[b]
            out |= d > over_left + 1e-9
        if out.any():
            gain[a[out], b[out]] = -np.inf
            gain[b[out], a[out]] = -np.inf

    def run(self, mu: float, relocate: bool = True):
        """Batch label per piece and the batches' caps (tokens) and sizes."""
        p = self.p
        si, gi, n = self.si.copy(), self.gi.copy(), p.n.copy()
        b = len(si)
        idx = np.arange(b)
        fb = self.f(si, gi, n, mu)
        gain = fb[:, None] + fb[None, :] - self.pair_cost
        if mu:
            gain -= mu * self.pair_ms
        gain[self.pair_bad] = -np.inf
        alive = np.ones(b, dtype=bool)
        parent = idx.copy()
        cum = None
        if self.lim95 is not None and not self.cm.padded:
            cum = np.zeros((b, len(self.levels)))
            cum[idx, self.level_of] = n
            cum = np.cumsum(cum, axis=1)
        over = self._over_counts(cum, si, gi, n, idx) if self.lim95 is not None else np.zeros(b)
        over_left = self.budgets["over"] - float(over.sum())
        width = self.width
        pad_left = self.budgets["pad"] - float((n * width[si, gi]).sum())
        best_col = gain.argmax(axis=1)
        best_val = gain[idx, best_col]
        while True:
            r = np.flatnonzero((best_val > 0) & alive)
            if not r.size:
                break
            c = best_col[r]
            pair = (best_col[c] == r) & (r < c)
            r, c = r[pair], c[pair]
            if not r.size:  # ties between partners: take the best pair overall
                r0 = int(np.flatnonzero(alive)[np.argmax(best_val[alive])])
                r, c = np.array([min(r0, best_col[r0])]), np.array([max(r0, best_col[r0])])
            order = np.argsort(-gain[r, c], kind="stable")
            r, c = r[order], c[order]
            s2, g2, n2 = np.maximum(si[r], si[c]), np.maximum(gi[r], gi[c]), n[r] + n[c]
            d_pad = n2 * width[s2, g2] - n[r] * width[si[r], gi[r]] - n[c] * width[si[c], gi[c]]
            d_over = np.zeros(len(r))
            if self.lim95 is not None:
                d_over = self._over_counts(cum, s2, g2, n2, r, c) - over[r] - over[c]
            take = np.zeros(len(r), dtype=bool)
            if np.isinf(pad_left) and np.isinf(over_left):
                take[:] = True
            else:
                for k in range(len(r)):
                    if d_pad[k] <= pad_left + 1e-9 and d_over[k] <= over_left + 1e-9:
                        take[k] = True
                        pad_left -= d_pad[k]
                        over_left -= d_over[k]
            bad_r, bad_c = r[~take], c[~take]
            gain[bad_r, bad_c] = -np.inf
            gain[bad_c, bad_r] = -np.inf
            r, c = r[take], c[take]
            s2, g2, n2, d_over = s2[take], g2[take], n2[take], d_over[take]
            if r.size:
                si[r], gi[r], n[r] = s2, g2, n2
                over[r] = over[r] + over[c] + d_over
                over[c] = 0.0
                if cum is not None:
                    cum[r] += cum[c]
                alive[c] = False
                parent[c] = r
                fb[r] = self.f(s2, g2, n2, mu)
                rows = (
                    fb[r][:, None]
                    + fb[None, :]
                    - self.f(
                        np.maximum(s2[:, None], si[None, :]),
                        np.maximum(g2[:, None], gi[None, :]),
                        n2[:, None] + n[None, :],
                        mu,
                    )
                )
                rows[:, ~alive] = -np.inf
                rows[n2[:, None] + n[None, :] > self.mbs] = -np.inf
                rows[np.arange(len(r)), r] = -np.inf
                gain[r, :] = rows
                gain[:, r] = rows.T
                gain[c, :] = -np.inf
                gain[:, c] = -np.inf
                best_val[c] = -np.inf
            touched = np.concatenate([r, bad_r, bad_c])
            stale = alive & np.isin(best_col, np.concatenate([r, c, bad_r, bad_c]))
            stale[touched] = True
            stale &= alive
            if r.size:
                fresh = alive & ~stale
                col_best = gain[:, r]
                k = col_best.argmax(axis=1)
                v = col_best[idx, k]
                better = fresh & (v > best_val)
                best_val[better] = v[better]
                best_col[better] = r[k[better]]
            if bad_r.size:  # budgets shrank: re-check every batch that still wants a merge
                stale |= alive & (best_val > 0)
            rows_s = np.flatnonzero(stale)
            if rows_s.size:
                self._mask(gain, rows_s, alive, si, gi, n, over, cum, pad_left, over_left)
                cols = gain[rows_s].argmax(axis=1)
                best_col[rows_s] = cols
                best_val[rows_s] = gain[rows_s, cols]
        # the root of each piece
        root = parent.copy()
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        roots, label = np.unique(root, return_inverse=True)
        label = label.reshape(-1)
        if relocate:
            label = self.relocate(mu, label, pad_left, over_left)
        return self._caps(label)

    def _caps(self, label: np.ndarray):
        nb = int(label.max()) + 1
        cs, cg, size = np.zeros(nb, dtype=np.int64), np.zeros(nb, dtype=np.int64), np.zeros(nb)
        np.maximum.at(cs, label, self.si)
        np.maximum.at(cg, label, self.gi)
        np.add.at(size, label, self.p.n)
        return label, self.sv[cs], self.gv[cg], size

    def relocate(self, mu: float, label: np.ndarray, pad_left: float, over_left: float):
        """Local search after the merges: move single pieces to the batch (or a batch of their
        own) where ``overhead + members × price + μ × latency`` drops most, under the same hard
        constraints, until no move helps (at most four sweeps)."""
        p = self.p
        width = self.width
        nb = int(label.max()) + 1
        cs, cg = np.zeros(nb, dtype=np.int64), np.zeros(nb, dtype=np.int64)
        size = np.zeros(nb)
        np.maximum.at(cs, label, self.si)
        np.maximum.at(cg, label, self.gi)
        np.add.at(size, label, p.n)
        members: list[list[int]] = [[] for _ in range(nb)]
        for piece, lab in enumerate(label.tolist()):
            members[lab].append(piece)

        def f(s, g, n):
            return np.where(n > 0, self.f(s, g, n, mu), 0.0)

        over = None
        if self.lim95 is not None:
            over = np.array([self._over(m, cs[k], cg[k]) for k, m in enumerate(members)])
        order = np.argsort(-self.f(self.si, self.gi, p.n, 0.0), kind="stable")
        for _ in range(4):
            moved = 0
            fb = f(cs, cg, size)
            for piece in order.tolist():
                src = int(label[piece])
                rest = [x for x in members[src] if x != piece]
                ps, pg, pn = self.si[piece], self.gi[piece], p.n[piece]
                rs = rg = 0
                rn = size[src] - pn
                if rest:
                    rs, rg = int(self.si[rest].max()), int(self.gi[rest].max())
                f_rest = float(f(rs, rg, rn)) if rest else 0.0
                ins_s, ins_g = np.maximum(cs, ps), np.maximum(cg, pg)
                d_ins = f(ins_s, ins_g, size + pn) - fb
                d_ins[(size == 0) | (size + pn > self.mbs)] = np.inf
                d_ins[src] = np.inf
                dest = int(d_ins.argmin())
                best = float(d_ins[dest])
                alone = float(f(ps, pg, pn))
                if rest and alone < best:
                    dest, best = -1, alone
                delta = f_rest - float(fb[src]) + best
                if not np.isfinite(best) or not delta < -1e-9 * float(fb[src]):
                    continue
                d_pad = -size[src] * width[cs[src], cg[src]] + (rn * width[rs, rg] if rest else 0)
                if dest >= 0:
                    d_pad += (size[dest] + pn) * width[ins_s[dest], ins_g[dest]]
                    d_pad -= size[dest] * width[cs[dest], cg[dest]]
                else:
                    d_pad += pn * width[ps, pg]
                d_over = 0.0
                new_src = new_dest = 0.0
                if over is not None:
                    new_src = self._over(rest, rs, rg)
                    if dest >= 0:
                        new_dest = self._over(members[dest] + [piece], ins_s[dest], ins_g[dest])
                        d_over = new_src + new_dest - over[src] - over[dest]
                    else:
                        new_dest = self._over([piece], ps, pg)
                        d_over = new_src + new_dest - over[src]
                if d_pad > pad_left + 1e-9 or d_over > over_left + 1e-9:
                    continue
                pad_left -= d_pad
                over_left -= d_over
                if dest < 0:
                    dest = nb
                    nb += 1
                    members.append([])
                    cs, cg = np.append(cs, 0), np.append(cg, 0)
                    size, fb = np.append(size, 0.0), np.append(fb, 0.0)
                    if over is not None:
                        over = np.append(over, 0.0)
                if over is not None:
                    over[src] = new_src
                    over[dest] = new_dest
                members[src] = rest
                cs[src], cg[src], size[src] = rs, rg, rn
                members[dest].append(piece)
                cs[dest], cg[dest] = max(cs[dest], ps), max(cg[dest], pg)
                size[dest] += pn
                fb[src] = float(f(rs, rg, rn)) if rest else 0.0
                fb[dest] = float(f(cs[dest], cg[dest], size[dest]))
                label[piece] = dest
                moved += 1
            if not moved:
                break
        keep = np.flatnonzero(size > 0)
        remap = np.full(nb, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        return remap[label]


def _budgets(bucket: _Bucket, cm: CostModel) -> dict:
    """Pad tokens (counted at the caps: Σ members × (G, or S + G when padded)) and requests
    over the p95 limit that a plan may spend."""
    lim = bucket.limits
    n = len(bucket.prompt)
    pad = math.inf
    if lim.max_pad_ratio is not None:
        useful = float(bucket.prompt.sum() + bucket.gen.sum())
        extra = (
            float(bucket.prompt.sum())
            if cm.padded
            else -float((bucket.aligned - bucket.prompt).sum())
        )
        pad = lim.max_pad_ratio * useful * (1 - 1e-12) + float(bucket.gen.sum()) + extra
    over = math.inf
    if lim.max_p95_latency_ms is not None:
        over = float(n - math.ceil(0.95 * n))
    return {"pad": pad, "over": over}


def _arrange(
    bucket: _Bucket, cm: CostModel, batch: np.ndarray, seq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plan rows for a batch label and declared shape per request, with each shape's compile
    spike (compile_ms on the first row of the first batch using it) on the request where it
    hurts least: the one that does not cross the p95 limit and raises its batch's latency least.

    Returns (order, batch code per row in batch_id order, seq_align per row).
    """
    _, codes = np.unique(batch, return_inverse=True)
    codes = codes.reshape(-1)
    nb = int(codes.max()) + 1
    ctx = seq if cm.padded else bucket.aligned
    s_max = np.zeros(nb)
    g_max = np.zeros(nb)
    np.maximum.at(s_max, codes, ctx)
    np.maximum.at(g_max, codes, bucket.gen)
    if cm.padded:
        s_max = np.zeros(nb)
        np.maximum.at(s_max, codes, seq)
    dec = cm.decode_ms(s_max, g_max) + cm.overhead_ms
    lat = cm.prefill_ms(ctx) + dec[codes]
    top = np.full(nb, -np.inf)
    np.maximum.at(top, codes, lat)
    inc = np.maximum(0.0, lat + cm.compile_ms - top[codes])
    lim95 = bucket.limits.max_p95_latency_ms
    crosses = np.zeros(len(lat), dtype=bool)
    if lim95 is not None:
        top95 = lim95 * (1 + 1e-12)  # the tolerance of Limits.violations and the exact model
        crosses = (lat <= top95) & (lat + cm.compile_ms > top95)
    carrier = np.zeros(len(lat), dtype=bool)
    pick = np.lexsort((inc, crosses, seq))
    first = np.unique(seq[pick], return_index=True)[1]
    carrier[pick[first]] = True
    carrier_batch = np.zeros(nb, dtype=bool)
    carrier_batch[codes[carrier]] = True
    rank = np.empty(nb, dtype=np.int64)
    batch_order = np.lexsort((np.arange(nb), ~carrier_batch))
    rank[batch_order] = np.arange(nb)
    new_codes = rank[codes]
    order = np.lexsort((~carrier, new_codes))
    return order, new_codes[order], seq[order]


def _scored(
    bucket: _Bucket, cm: CostModel, batch: np.ndarray, seq: np.ndarray, settings: dict
) -> _Candidate:
    """A candidate from a batch label and declared shape per request, scored exactly."""
    order, codes, seq_rows = _arrange(bucket, cm, batch, seq)
    summary = _exact_summary(bucket, cm, order, codes, seq_rows)
    return _Candidate(order, codes, seq_rows, summary, bucket.limits.violations(summary), settings)


def _room_for_the_spike(bucket: _Bucket, cm: CostModel, like: _Candidate) -> list[_Candidate]:
    """Last tries where no plan met the limits (the heuristics' merges can leave the compile
    spike no request it does not push over the p95 limit), at the shapes ``like`` declares:
    ``like`` with the requests of the shortest gen_len split off into batches of their own
    (the spike's best carriers), and every request alone (the least latency each can have).
    Three requests under a p95 limit that every merged plan's spike crossed met it so."""
    n = len(bucket.prompt)
    seq = np.empty(n, dtype=np.int64)
    seq[like.order] = like.seq
    batch = np.empty(n, dtype=np.int64)
    batch[like.order] = like.batch
    out = []
    fast = np.flatnonzero(bucket.gen == bucket.gen.min())
    if len(fast) < n:
        fast = fast[np.argsort(seq[fast], kind="stable")]
        _, first, size = np.unique(seq[fast], return_index=True, return_counts=True)
        rank = np.arange(len(fast)) - np.repeat(first, size)  # position within its shape
        mbs = bucket.limits.max_batch_size or n
        group = np.repeat(np.arange(len(first)), size) * n + rank // mbs
        split = batch.copy()
        split[fast] = batch.max() + 1 + np.unique(group, return_inverse=True)[1].reshape(-1)
        out.append(_scored(bucket, cm, split, seq, {**like.settings, "method": "split"}))
    out.append(_scored(bucket, cm, np.arange(n), seq, {**like.settings, "method": "alone"}))
    return out


def _from_pieces(
    bucket: _Bucket, cm: CostModel, pieces: _Pieces, label: np.ndarray, shape: np.ndarray, settings
) -> _Candidate:
    """Scored candidate from a batch label per piece; ``shape``: declared shape per batch label
    (static-graph: the bucket's shape for all)."""
    batch = np.empty(len(bucket.prompt), dtype=np.int64)
    batch[pieces.req_order] = np.repeat(label, pieces.n.astype(np.int64))
    return _scored(bucket, cm, batch, shape[batch], settings)


def _merge_plan(
    bucket: _Bucket,
    cm: CostModel,
    s_of_request: np.ndarray,
    declared: int | None,
    settings: dict,
    quick: bool = False,
    deadline: float = math.inf,
    coarsen: bool = False,
    limit: int = _MERGE_LIMIT,
    refine_by: float = math.inf,
) -> tuple[_Candidate | None, float, list[_Candidate]]:
    """The cap heuristic on one bucket: greedy merges at λ = 0, then, when the sequential limit
    binds, the smallest λ whose plan meets it (log-scale bisection). ``declared``: the one shape
    every batch declares (static-graph), None to declare each batch's S cap (padded-graph).
    ``coarsen``: with more pieces than ``limit``, merge coarse pieces (requests within 2, 4,
    8, ... consecutive distinct S and gen_len values of each other) instead of giving up.
    ``quick``: a coarse bisection (to 50 %) and no local search, for a start that column
    generation improves. ``deadline`` (time.perf_counter()) is a hard cap: the search itself is
    bounded by its count of runs, so its result does not depend on the machine's speed.
    ``refine_by``: an earlier cap for the bisection once a plan meets the sequential limit (the
    time after it is column generation's).

    Returns the best candidate (None when the bucket has too many pieces), the λ used
    (cost units per ms) and every candidate tried.
    """
    lim = bucket.limits
    mbs = int(lim.max_batch_size or len(bucket.prompt))
    pieces = _make_pieces(bucket, cm, s_of_request, mbs)
    coarse = 1
    while len(pieces.n) > limit and coarsen and coarse < _MAX_COARSE:
        coarse *= 2
        pieces = _make_pieces(bucket, cm, s_of_request, mbs, coarse)
    if len(pieces.n) > limit:
        return None, 0.0, []
    if coarse > 1:
        settings = {**settings, "coarse_pieces": coarse}
    search = _MergeSearch(cm, pieces, lim, _budgets(bucket, cm))
    tried: list[_Candidate] = []

    def late(by: float = deadline) -> bool:
        import time

        return time.perf_counter() > min(deadline, by)

    def at(mu: float, relocate: bool = False) -> _Candidate:
        label, s, g, _ = search.run(mu, relocate)
        shape = np.full(len(s), declared, dtype=np.int64) if declared else s.astype(np.int64)
        settings_mu = {**settings, "lagrange_multiplier": float(mu)}
        cand = _from_pieces(bucket, cm, pieces, label, shape, settings_mu)
        tried.append(cand)
        return cand

    best = at(0.0)
    mu_used = 0.0
    limit = lim.max_sequential_ms
    if limit is not None and best.summary["sequential_ms"] > limit:
        base = best.summary
        lo, hi = 0.0, 0.25 * base["total_cost"] / max(base["sequential_ms"], 1e-9)
        cand = at(hi)
        for _ in range(14):
            if cand.summary["sequential_ms"] <= limit or late():
                break
            before = cand.summary["sequential_ms"]
            lo, hi = hi, hi * (8 if quick else 4)
            cand = at(hi)
            if cand.summary["sequential_ms"] > before * (1 - 1e-3):
                break  # a larger λ no longer helps: other limits hold the merges back
        if cand.summary["sequential_ms"] <= limit:
            feasible = [cand]
            for _ in range(10):
                if late(refine_by):
                    break
                mid = math.sqrt(lo * hi) if lo > 0 else hi / 8
                cand = at(mid)
                if cand.summary["sequential_ms"] <= limit:
                    hi = mid
                    feasible.append(cand)
                else:
                    lo = mid
                if lo > 0 and hi / lo < (_QUICK_RATIO if quick else 1.01):
                    break
            mu_used = hi
            # the local search moves the boundary: bisect again with it, from a little below
            lo_r, hi_r = (lo if lo > 0 else hi / 4) / 1.1, hi
            if quick:
                pass  # column generation takes it from here
            elif at(hi_r, relocate=True).summary["sequential_ms"] <= limit:
                for _ in range(4):
                    mid = math.sqrt(lo_r * hi_r)
                    if at(mid, relocate=True).summary["sequential_ms"] <= limit:
                        hi_r = mid
                    else:
                        lo_r = mid
    elif not quick:
        at(0.0, relocate=True)
    best = min(tried, key=_rank)
    return best, mu_used, tried


# ---------------------------------------------------------------------------------------------
# reference candidates: the baseline packer and a grid of bucketed plans (chapter 04's knobs)

#: the bucketed-plan knobs the planner always compares against (chapter 04's sweep grid)
SWEEP_GEN_BUCKETS = (64, 128, 256, 1024)
SWEEP_BATCH_SIZES = (16, 32, 64)


def _bucketed_runs(bucket: _Bucket, seq: np.ndarray, gen_bucket: int | None):
    """The order of ``plan.bucketed_plan`` (by shape, then gen bucket, then request) and where a
    new (shape, gen bucket) group starts along it."""
    n = len(bucket.prompt)
    gb = np.zeros(n, dtype=np.int64) if gen_bucket is None else (bucket.gen - 1) // gen_bucket
    order = np.lexsort((np.arange(n), gb, seq))
    new = np.ones(n, dtype=bool)
    new[1:] = (seq[order][1:] != seq[order][:-1]) | (gb[order][1:] != gb[order][:-1])
    return order, new


def _chunked(new: np.ndarray, mbs: int | None) -> np.ndarray:
    """Batch starts along a bucketed order: every group start, and every ``mbs``-th member."""
    if mbs is None:
        return new
    n = len(new)
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return new | ((np.arange(n) - start) % mbs == 0)


def _reference_candidates(
    bucket: _Bucket, cm: CostModel, max_shapes: int, declared: int | None
) -> list[_Reference]:
    """The baseline plan and every bucketed plan of chapter 04's grid (shape family × k <=
    max_shapes × gen bucket × batch size within the limit), with their costs (scored by
    :func:`_score_references` when needed). ``declared``: one shape for every batch
    (static-graph, where only compile depends on it), None to keep each batch's own shape.

    One sort per (shape set, gen bucket) serves every batch size; each plan's cost is summed
    along that order, where its batches are contiguous: overheads, compiles of the declared
    shapes, prefill and every batch's decode at its caps (the sums of
    :func:`batchlab.evaluate.evaluate_arrays`)."""
    from batchlab.shapes import GRID_FAMILIES, shape_grid

    g = cm.granularity
    n = len(bucket.prompt)
    lim_mbs = bucket.limits.max_batch_size
    ks = range(1, max_shapes + 1) if n <= _REFERENCE_GRID_LIMIT else range(0)
    base = np.unique(
        np.sort(bucket.aligned)[
            (np.arange(1, max_shapes + 1) * n + max_shapes - 1) // max_shapes - 1
        ]
    )
    groups: list[tuple[str, np.ndarray, int | None, list[int | None]]] = [
        ("baseline", base, None, [lim_mbs])
    ]
    seen = set()
    mbs_grid = [m for m in SWEEP_BATCH_SIZES if lim_mbs is None or m <= lim_mbs]
    for family in GRID_FAMILIES:
        for k in ks:
            shapes = np.asarray(shape_grid(family, bucket.prompt, k, g), dtype=np.int64)
            if len(shapes) > max_shapes:
                continue
            key = tuple(shapes.tolist())
            if key in seen:
                continue
            seen.add(key)
            if mbs_grid:
                groups += [(family, shapes, gb, mbs_grid) for gb in SWEEP_GEN_BUCKETS]
    out = []
    fixed = None if cm.padded else float(cm.prefill_cost(bucket.aligned).sum())
    for family, shapes, gb, sizes in groups:
        seq = shapes[np.searchsorted(shapes, bucket.aligned, side="left")]
        order, new = _bucketed_runs(bucket, seq, gb)
        ctx = (seq if cm.padded else bucket.aligned)[order]
        gen = bucket.gen[order]
        if declared is not None:
            seq = np.full(n, declared, dtype=np.int64)
        const = float(cm.compile_cost(np.unique(seq)).sum())
        const += fixed if fixed is not None else float(cm.prefill_cost(ctx).sum())
        for mbs in sizes:
            starts_mask = _chunked(new, mbs)
            starts = np.flatnonzero(starts_mask)
            size = np.diff(np.append(starts, n))
            s_max = np.maximum.reduceat(ctx, starts)
            g_max = np.maximum.reduceat(gen, starts)
            decode = float(cm.batch_decode_cost(s_max, g_max, size).sum())
            cost = len(starts) * cm.overhead_cost + const + decode
            batch = np.empty(n, dtype=np.int64)
            batch[order] = np.cumsum(starts_mask) - 1
            settings = {
                "method": "reference",
                "family": family,
                "n_shapes_global": len(shapes),
                "gen_bucket_size": gb,
                "max_batch_size": mbs,
            }
            out.append(_Reference(batch, seq, settings, cost))
    return out


@dataclass(frozen=True, eq=False)
class _Reference:
    """A reference plan not scored yet: batch label and declared shape per request, and its
    total cost (cost units)."""

    batch: np.ndarray
    seq: np.ndarray
    settings: dict
    cost: float


def _score_references(
    bucket: _Bucket, cm: CostModel, refs: list[_Reference], below: float = math.inf
) -> list[_Candidate]:
    """The reference plans that cost less than ``below``, scored exactly (a plan costing more
    cannot be chosen over one that meets the limits at ``below``)."""
    return [
        _scored(bucket, cm, r.batch, r.seq, r.settings) for r in refs if r.cost < below * (1 + 1e-9)
    ]


def _best_ok_cost(cands: list[_Candidate]) -> float:
    return min((c.summary["total_cost"] for c in cands if c.ok), default=math.inf)


# ---------------------------------------------------------------------------------------------
# the exact model and the bounds


def _spec(bucket: _Bucket, problem, compile_cost: float):
    from batchlab.exact import BucketSpec

    lim = bucket.limits
    return BucketSpec(
        problem=problem,
        max_batch_size=lim.max_batch_size,
        max_cost=lim.max_cost,
        max_pad_ratio=lim.max_pad_ratio,
        max_p95_latency_ms=lim.max_p95_latency_ms,
        max_sequential_ms=lim.max_sequential_ms,
        prompt_sum=int(bucket.prompt.sum()),
        gen_sum=int(bucket.gen.sum()),
        align_pad=int((bucket.aligned - bucket.prompt).sum()),
        compile_cost=float(compile_cost),
    )


#: under exact="auto" the exact model is solved to proven optimality when it has at most this
#: many assignments (HiGHS proves small models at once); a larger one stops once its incumbent
#: is proved within _EXACT_REL_GAP of the optimum (the plan's certified gap then says so).
#: exact="always" proves the optimum (within the time budget).
_EXACT_PROVE_SIZE = 400
_EXACT_REL_GAP = 1e-3
#: under exact="auto" the exact model stops after this many of HiGHS's progress checks
#: (:func:`batchlab.exact.limit_work`): a budget of work, not of time, so the same inputs get
#: the same plan on a fast or a slow machine (``time_limit_s`` stays a hard cap)
_EXACT_WORK = 300


def _start_batches(c: _Candidate, bucket: _Bucket, cm: CostModel, inverse: np.ndarray) -> list:
    """A candidate's batches as the exact model's start: ``(S cap, G cap, {type: count},
    carrier type or None)`` per batch, the compile spike on each shape's first row."""
    req = c.order
    types = inverse[req]
    ctx = c.seq if cm.padded else bucket.aligned[req]
    nb = int(c.batch.max()) + 1
    s_cap = np.zeros(nb, dtype=np.int64)
    g_cap = np.zeros(nb, dtype=np.int64)
    np.maximum.at(s_cap, c.batch, ctx)
    np.maximum.at(g_cap, c.batch, bucket.gen[req])
    _, first = np.unique(c.seq, return_index=True)
    carrier = {int(c.batch[r]): int(types[r]) for r in first.tolist()}
    members: list[dict] = [{} for _ in range(nb)]
    for b, t in zip(c.batch.tolist(), types.tolist(), strict=True):
        members[b][t] = members[b].get(t, 0) + 1
    return [(int(s_cap[b]), int(g_cap[b]), members[b], carrier.get(b)) for b in range(nb)]


def _exact_candidates(
    buckets: list[_Bucket],
    cm: CostModel,
    problems,
    inverses,
    specs,
    max_shapes: int,
    static_shapes: list[int] | None,
    time_limit_s: float,
    seeds: list[_Candidate | None] | None = None,
    stop_early: bool = True,
):
    """Solve the exact model, started from the seed plans (one per bucket, all meeting the
    limits) when given; ``stop_early``: stop at a certified _EXACT_REL_GAP on models above
    _EXACT_PROVE_SIZE (``exact="auto"``), else prove the optimum (``exact="always"``).
    Returns (status, bound, candidate per bucket or None)."""
    from batchlab.exact import model_size, solve_exact

    start = None
    if seeds is not None and all(c is not None and c.ok for c in seeds):
        start = [
            _start_batches(c, b, cm, inv)
            for c, b, inv in zip(seeds, buckets, inverses, strict=True)
        ]
    prove = not stop_early or model_size(specs) <= _EXACT_PROVE_SIZE
    rel_gap = 1e-9 if prove else _EXACT_REL_GAP
    work = _EXACT_WORK if stop_early else None
    sol = solve_exact(specs, max_shapes, time_limit_s, start, rel_gap, work)
    if not sol.buckets:
        return sol.status, sol.bound, [None] * len(buckets)
    cands = []
    for bi, bucket in enumerate(buckets):
        inv = inverses[bi]
        by_type = {t: list(np.flatnonzero(inv == t)) for t in np.unique(inv).tolist()}
        batch = np.empty(len(bucket.prompt), dtype=np.int64)
        seq = np.empty(len(bucket.prompt), dtype=np.int64)
        carriers = sol.carriers[bi]
        label = 0
        for s, g, nk, members in sol.buckets[bi]:
            rows = []
            carrier = carriers.get(s)
            for t, cnt in members:
                take = [by_type[t].pop() for _ in range(cnt)]
                rows.extend((r, t) for r in take)
            # S-tight members first, the spike's carrier before everything
            rows.sort(
                key=lambda rt: (
                    not (carrier and carrier[0] == rt[1] and carrier[1:] == (s, g)),
                    problems[bi].type_a[rt[1]] != s,
                )
            )
            for pos, (r, _) in enumerate(rows):
                batch[r] = label + pos % nk
                seq[r] = static_shapes[bi] if static_shapes is not None else s
            label += nk
        cands.append(_scored(bucket, cm, batch, seq, {"method": "exact", "status": sol.status}))
    return sol.status, sol.bound, cands


#: column generation runs on buckets with at most this many distinct (length, gen_len) types
_COLGEN_LIMIT = 8000
#: on a cost model that prices batches as a whole, column generation with exact batch costs
#: (batchlab.batch_priced: one pricing per line, one column per cap and round) runs on buckets
#: of at most this many types (on chat's 939 it does not converge in 150 s); larger ones run
#: it on one line per cap (LinePricedColumnGeneration), which converges as fast as static-graph
_BATCH_PRICED_COLGEN_LIMIT = 200
#: the share of a bucket's time left that column generation's rounds leave to its integer plans
#: (binds only where the rounds' work budget does not fit the time limit)
_COLGEN_MILP_SHARE = 0.3
#: the share of a bucket's time after which its cap heuristic, once a plan meets the sequential
#: limit, stops refining λ where column generation follows (binds only where the heuristic's
#: runs do not fit the time limit: 3,000 wide-length requests in 3 s spent it all on the
#: heuristic, and column generation then ran 1.2 s past the limit)
_MERGE_SHARE = 0.5
#: work budgets of column generation (machine-independent; the time limit is a hard cap):
#: rounds of LP + pricing per bucket, and HiGHS progress checks per restricted-master MILP
_COLGEN_ROUNDS = 150
#: branch and price on caps runs where the best plan is more than this above the LP bound, for
#: this share of the time left (the rest is for one more integer plan over its columns)
_BRANCH_GAP = 1e-3
_BRANCH_SHARE = 0.4
#: ... in buckets of at most this many types, at most _BRANCH_NODE_WORK / types nodes (a budget
#: of work, as _COLGEN_ROUNDS is, so that a fast machine returns the same plan); before the
#: integer plans where the seed is more than _BRANCH_FIRST_GAP above the LP bound (in buckets of
#: at most _BRANCH_FIRST_TYPES types)
_BRANCH_TYPES = 1000
_BRANCH_NODE_WORK = 12_000
_BRANCH_MIN_NODES = 20
_BRANCH_FIRST_GAP = 0.05
_BRANCH_FIRST_TYPES = 300
_BRANCH_MILP_WORK = 1000
_BRANCH_LEAF_WORK = 20
_COLGEN_MILP_WORK = 100


def _spike_floor(cm: CostModel, aligned: np.ndarray, s: np.ndarray | None = None) -> float:
    """The least a compile spike can add to a plan's sequential time (ms): under static-graph
    compile_ms less the largest gap between a batch's slowest prefill and a member's own;
    under padded-graph compile_ms (every member of a batch runs at the declared shape)."""
    if cm.padded:
        return float(cm.compile_ms)
    spread = float(cm.prefill_ms(aligned.max()) - cm.prefill_ms(aligned.min()))
    return max(0.0, float(cm.compile_ms) - spread)


def _batches_to_requests(inverse_sorted: np.ndarray, batches: list) -> np.ndarray:
    """Batch label per request from batches of (level, G index, sorted types, counts): the k-th
    slot of a type, over all batches, gets the type's k-th request (vectorized)."""
    n = len(inverse_sorted)
    types = np.concatenate([b[2] for b in batches]).astype(np.int64)
    counts = np.concatenate([b[3] for b in batches]).astype(np.int64)
    label = np.repeat(np.arange(len(batches)), [len(b[2]) for b in batches])
    slot_type = np.repeat(types, counts)
    slot_batch = np.repeat(label, counts)
    order = np.argsort(slot_type, kind="stable")
    req = np.argsort(inverse_sorted, kind="stable")
    if len(order) != n:
        raise AssertionError("the batches do not cover every request exactly once")
    out = np.empty(n, dtype=np.int64)
    out[req] = slot_batch[order]
    return out


def _colgen(
    bucket: _Bucket,
    cm: CostModel,
    spec,
    inverse: np.ndarray,
    seeds: list[_Candidate],
    declared: int | None,
    shapes: np.ndarray | None,
    deadline: float,
    settings: dict,
    mu_hint: float = 0.0,
):
    """Column generation on one bucket (:mod:`batchlab.colgen`) started from the seed plans:
    returns (its :class:`~batchlab.colgen.RelaxationResult`, candidates from the restricted
    master). ``declared``: the shape every batch declares (static-graph); ``shapes``: under
    padded-graph the shape set the batches may declare (the grid's S caps)."""
    import time

    from batchlab.colgen import CapColumnGeneration, RelaxationResult
    from batchlab.exact import dual_ascent_values

    if time.perf_counter() > deadline:  # the hard cap: no time left for a first round
        return RelaxationResult(-math.inf, math.nan, "no time", 0, 0), [], None
    if cm.members_pay_caps:
        cg = CapColumnGeneration(spec, _spike_floor(cm, bucket.aligned))
    else:  # batches priced as a whole: lines over the batch size (batchlab.batch_priced)
        from batchlab import batch_priced

        if len(spec.problem.type_a) <= _BATCH_PRICED_COLGEN_LIMIT:
            cg = batch_priced.BatchPricedColumnGeneration(spec, _spike_floor(cm, bucket.aligned))
        else:  # one line per cap, tangent where the best seed's batches are
            ok = [c for c in seeds if c.ok] or list(seeds)
            best = min(ok, key=_rank) if ok else None
            size = len(bucket.prompt) / (int(best.batch.max()) + 1) if best is not None else None
            cg = batch_priced.LinePricedColumnGeneration(
                spec, _spike_floor(cm, bucket.aligned), size
            )
    st = cg.type_index(inverse)
    ok_seeds = [c for c in seeds if c.ok]
    start = None
    for c in sorted(seeds, key=_rank)[:8]:
        cols = cg.add_plan(_request_batches(c), st)
        if start is None and c.ok:
            start = cols
    upper = min((c.summary["total_cost"] for c in ok_seeds), default=math.inf)
    # start the dual smoothing from a dual ascent at the heuristic's λ (one pass: a second one
    # rarely moves a type); the first rounds then price near good duals
    mu = mu_hint if bucket.limits.max_sequential_ms is not None else 0.0
    extra = -math.inf
    if cm.members_pay_caps:
        cg.warm_start(dual_ascent_values(spec.problem, mu, passes=1, deadline=deadline)[0], mu)
    else:  # line-priced dual ascent around the best seed's batch size (batch_priced)
        from batchlab.batch_priced import line_dual_bound

        sizes = [getattr(cg, "at_size", None)]
        lines = getattr(cg, "grid_lines", None)
        extra, pi, mu_best = line_dual_bound(spec, mu, sizes, with_duals=True, lines=lines)
        cg.warm_start(pi, mu_best)
    left = deadline - time.perf_counter()
    if left <= 0:  # the set-up took the time left: no round
        return RelaxationResult(-math.inf, math.nan, "no time", 0, 0), [], cg
    # where the rounds do not fit the time left, a share of it stays for the integer plans (a
    # 3,000-request wide-length bucket spent all 60 s on rounds and kept the heuristic's plan,
    # 7 % above the LP)
    stop = deadline - _COLGEN_MILP_SHARE * left
    if not cm.members_pay_caps and len(spec.problem.type_a) > _BATCH_PRICED_COLGEN_LIMIT:
        # the one-line relaxation converges slowly on large buckets (chat: its LP stays at the
        # seed's cost for a minute): a share of the budget, the rest for its integer plans
        stop = min(deadline, time.perf_counter() + max(0.5, 0.3 * left))
    res = cg.solve(stop, upper_bound=upper, stop_gap=2e-4, max_rounds=_COLGEN_ROUNDS)
    if extra > res.bound and res.status != "infeasible":
        res = dataclasses.replace(res, bound=extra)
    cands: list[_Candidate] = []
    if res.status == "infeasible" or time.perf_counter() > deadline:
        return res, cands, cg
    if math.isfinite(upper) and upper <= res.bound * (1 + 2e-4):
        return res, cands, cg  # the seed is already certified
    # where the LP's integrality gap is wide (a tight limit carried by few slow batches),
    # branch and price on caps: a certified bound above the LP, and the nodes' columns for the
    # integer plans (a 60-request wide-length bucket: 18 % printed gap without it). Where the
    # seed is far above the LP bound, first (the integer plans then use the nodes' columns);
    # else after the integer plans, where they leave a gap
    branchable = (
        type(cg) is CapColumnGeneration
        and cg.T <= _BRANCH_TYPES
        and res.lp_value <= res.bound * (1 + _BRANCH_GAP)  # the root LP (nearly) solved
    )

    def on_leaf() -> float | None:
        # a node whole at every cap: its LP is nearly integral, so the fixed-copies MILPs
        # (whole copies kept, the rest solved) are small; a plan that meets the limits prunes
        found = _integer_candidates(
            cg, bucket, cm, st, declared, shapes, deadline, math.inf, None, settings,
            work=_BRANCH_LEAF_WORK, every_column=False,
        )  # fmt: skip
        cands.extend(found)
        costs = [c.summary["total_cost"] for c in found if c.ok]
        return min(costs) if costs else None

    def branch(upper_bound: float) -> None:
        nonlocal res
        from batchlab.branching import branch_on_caps

        now = time.perf_counter()
        br = branch_on_caps(
            cg,
            now + _BRANCH_SHARE * (deadline - now),
            root_bound=res.bound,
            upper_bound=upper_bound,
            stop_gap=2e-4,
            max_nodes=max(_BRANCH_MIN_NODES, _BRANCH_NODE_WORK // cg.T),
            on_leaf=on_leaf,
        )
        res = dataclasses.replace(  # br.bound is at least the root's
            res, bound=br.bound, branch_nodes=br.nodes, branch_status=br.status
        )
        cg.solve(deadline, max_rounds=3)  # the root LP again: integer plans start from it

    def gap_of(cost: float) -> float:
        return cost / res.bound - 1 if res.bound > 0 else math.inf

    # first where a seed meets the limits far above the bound, on a bucket small enough that the
    # nodes leave the integer plans their time
    first = cg.T <= _BRANCH_FIRST_TYPES and math.isfinite(upper)
    first = first and gap_of(upper) > _BRANCH_FIRST_GAP
    if branchable and first and deadline - time.perf_counter() > 0.2:
        branch(upper)
        if gap_of(upper) <= 2e-4:
            return res, cands, cg  # the seed is proved within the gap
    cands += _integer_candidates(
        cg, bucket, cm, st, declared, shapes, deadline, upper, start, settings
    )
    best = min((c for c in cands + ok_seeds if c.ok), key=_rank, default=None)
    if best is None or deadline - time.perf_counter() <= 0.2:
        return res, cands, cg
    best_cost = best.summary["total_cost"]
    if branchable and res.branch_status == "not run" and gap_of(best_cost) > _BRANCH_GAP:
        branch(best_cost)
    if (
        res.branch_status != "not run"
        and gap_of(best_cost) > 2e-4
        and deadline - time.perf_counter() > 0.2
    ):
        # the MILP over every column again (the nodes' too), from the best plan, more work
        start = cg.add_plan(_request_batches(best), st)
        cands += _integer_candidates(
            cg, bucket, cm, st, declared, shapes, deadline, best_cost, start, settings,
            work=_BRANCH_MILP_WORK, fixed_tries=False,
        )  # fmt: skip
    return res, cands, cg


def _integer_candidates(
    cg,
    bucket: _Bucket,
    cm: CostModel,
    st,
    declared,
    shapes,
    deadline,
    upper,
    start,
    settings,
    work: int | None = _COLGEN_MILP_WORK,
    fixed_tries: bool = True,
    every_column: bool = True,
) -> list[_Candidate]:
    """Integer plans from the restricted master (:meth:`CapColumnGeneration.integer_plan`),
    scored; up to three tries, each tightening the rows a plan broke (the compile spike's room
    in the sequential time, one request less over the p95 limit)."""
    cands: list[_Candidate] = []
    seq_shift = over_shift = 0.0
    for _ in range(3):
        batches = cg.integer_plan(
            deadline,
            upper_bound=upper,
            seq_shift=seq_shift,
            over_shift=over_shift,
            rel_gap=2e-4,
            start=start,
            work=work,
            fixed_tries=fixed_tries,
            every_column=every_column,
        )
        if batches is None:
            break
        batch = _batches_to_requests(st, batches)
        if declared is not None:
            seq = np.full(len(batch), declared, dtype=np.int64)
        else:
            seq = shapes[np.asarray([b[0] for b in batches])][batch]
        duals = cg.multipliers()
        info = {
            **settings,
            "method": "colgen",
            "lagrange_multiplier": duals.get("max_sequential_ms", 0.0),
            "multipliers": duals,
        }
        cand = _scored(bucket, cm, batch, seq, info)
        cands.append(cand)
        if cand.ok:
            break
        lim = bucket.limits
        if "max_sequential_ms" in cand.violations:
            value, limit = cand.violations["max_sequential_ms"]
            seq_shift += (value - limit) * 1.01 + 1e-9 * limit
        if "max_p95_latency_ms" in cand.violations:
            over_shift += 1.0
        if set(cand.violations) - {"max_sequential_ms", "max_p95_latency_ms"} or lim is None:
            break
    return cands


def _static_shapes(buckets: list[_Bucket], cm: CostModel, max_shapes: int) -> list[int]:
    """Under static-graph the declared shape changes only the compile cost, paid once per shape
    per plan: one shape per bucket, its longest aligned prompt, is optimal, and when buckets must
    share (fewer shapes than buckets) the least total compile cost is an exact DP over the
    buckets' longest prompts."""
    tops = [np.asarray([int(b.aligned.max())]) for b in buckets]
    chosen = joint_optimal_shapes(
        tops,
        max_shapes,
        cm.granularity,
        cost=lambda seq, a: cm.compile_cost(seq) + 0.0 * a,
    )
    return [int(chosen[np.searchsorted(chosen, t[0])]) for t in tops]


def _bucket_bound(
    bucket: _Bucket,
    cm: CostModel,
    shapes_all: np.ndarray | None,
    mu: float,
    deadline: float = math.inf,
):
    """The Lagrangian lower bound of one bucket (see :mod:`batchlab.exact`), or None when the
    bucket is too large for it. Includes the compile cost no plan avoids. The multiplier is
    searched (golden section, the bound is concave in it) around ``mu``, the heuristic's λ;
    past ``deadline`` (time.perf_counter(), a hard cap) no further multiplier is tried (the
    bound at any multiplier is valid)."""
    import time

    from batchlab.exact import cap_problem, lagrangian_bound

    problem, _ = cap_problem(cm, bucket.aligned, bucket.gen, bucket.prompt, shapes_all)
    if len(problem.type_a) > _BOUND_LIMIT:
        return None
    compile_lb = float(cm.compile_cost(int(bucket.aligned.max())))
    limit = bucket.limits.max_sequential_ms
    if limit is None or mu <= 0:
        return lagrangian_bound(problem, None, [0.0], compile_lb)[0] * (1 - 1e-9)
    cache: dict[float, float] = {}

    def value(m: float) -> float:
        # the best of μ = 0 and m (as the golden section has always compared), μ = 0 once
        if m not in cache:
            cache[m] = lagrangian_bound(
                problem, limit, [m], compile_lb, with_zero=False, deadline=deadline
            )[0]
            if m != 0.0:
                cache[m] = max(cache[m], value(0.0))
        return cache[m]

    lo, hi = 0.3 * mu, 1.3 * mu
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    if time.perf_counter() > deadline:
        return value(mu) * (1 - 1e-9)
    for _ in range(5):
        if value(a) >= value(b):
            hi, b = b, a
            a = hi - ratio * (hi - lo)
        else:
            lo, a = a, b
            b = lo + ratio * (hi - lo)
        if time.perf_counter() > deadline:
            return max(cache.values()) * (1 - 1e-9)
    return max(max(cache.values()), value(0.0)) * (1 - 1e-9)


def _padded_cap_bounds(
    prepared,
    cm: CostModel,
    distinct: np.ndarray,
    mus: list[float],
    cap: int,
    deadline: float = math.inf,
):
    """Shape-cap-aware Lagrangian bounds under padded-graph (see
    :func:`batchlab.exact.shape_cap_bound`): per bucket and for all buckets together; -inf where
    the instance is too large for them. ``deadline``: the dual ascents' hard cap."""
    from batchlab.exact import cap_problem, shape_cap_bound

    problems = [cap_problem(cm, b.aligned, b.gen, b.prompt, distinct)[0] for b in prepared]
    size = sum(len(p.type_a) for p in problems) * len(distinct)
    if size > _PRICE_BOUND_LIMIT:
        return [-math.inf] * len(prepared), -math.inf
    # too large for the dual ascent: every member's own price at its shape (μ = 0), plus the
    # fewest batches' overhead (two wide-length buckets sharing 3 shapes: the bound went from
    # the per-request floor, 2.24e14, to 4.9e14 against a plan of 5.2e14)
    price = size > _CAP_BOUND_LIMIT
    duals = "price" if price else "ascent"
    extras = [b.bounds.min_batches * cm.overhead_cost if price else 0.0 for b in prepared]
    per, mus_best = [], []
    # every shape a bucket's plan uses is compiled for it: the DP over shape sets adds each
    # shape's compile (40 Azure code requests with prompts up to 7.4k tokens: the bound held only
    # the longest shape's compile, and the optimum was 26 % above it; now 0.2 %)
    for b, p, mu, extra in zip(prepared, problems, mus, extras, strict=True):
        lim = b.limits.max_sequential_ms
        best, best_mu = -math.inf, 0.0
        # μ = 0 too: a bound without the sequential limit holds with it (300 Azure code
        # requests under one: 61.8 % printed gap at 0.85 μ and μ only, 22.2 % with it)
        for m in sorted({0.0} | {0.0 if lim is None or price else f * mu for f in (0.85, 1.0)}):
            v = shape_cap_bound(
                [p], [m], [lim], cap, extra, cm.granularity, duals,
                shape_cost=cm.compile_cost, deadline=deadline,
            )  # fmt: skip
            if v > best:
                best, best_mu = v, m
        per.append(best * (1 - 1e-9))
        mus_best.append(best_mu)
    if len(prepared) == 1:
        return per, per[0]
    # together: each bucket compiles at least its longest shape, and every shape of the set is
    # compiled at least once (two valid bounds: the larger)
    compile_lb = float(sum(cm.compile_cost(int(b.aligned.max())) for b in prepared))
    lims = [b.limits.max_sequential_ms for b in prepared]
    joint = max(
        shape_cap_bound(
            problems, mus_best, lims, cap, compile_lb + sum(extras), cm.granularity, duals,
            deadline=deadline,
        ),
        shape_cap_bound(
            problems, mus_best, lims, cap, sum(extras), cm.granularity, duals,
            shape_cost=cm.compile_cost, deadline=deadline,
        ),
    )  # fmt: skip
    return per, joint * (1 - 1e-9)


# ---------------------------------------------------------------------------------------------
# the planner

EXACT_MODES = ("auto", "always", "never")


#: the most shapes a plan declares (each a compiled graph): a larger max_shapes is clamped to
#: it, with a warning (the planner's work grows with the number of shapes).
MAX_SHAPES = 64
#: the longest time budget of the exact model (seconds): one day.
MAX_TIME_LIMIT_S = 86_400.0
#: ``exact="always"`` builds the exact model only when it has at most this many (type, cap)
#: assignments per square root of a second of ``time_limit_s`` (see :func:`exact_size_limit`)
EXACT_SIZE_PER_SQRT_S = 12_000
#: ... and never more than this many (the model is built in Python, about 3 KB an assignment)
MAX_EXACT_SIZE = 200_000


def exact_size_limit(time_limit_s: float) -> int:
    """The largest exact model (in (type, cap) assignments, :func:`batchlab.exact.model_size`)
    that ``exact="always"`` builds within ``time_limit_s`` seconds: ``12,000 · √time_limit_s``,
    at most :data:`MAX_EXACT_SIZE` (37,947 at the default 10 s).

    HiGHS's time limit does not interrupt its set-up of a MIP (clique partitions of the
    objective, the root's interior-point solve), which grows with the square of the model: on
    this project's 2-core CI machine a wide-length 100-request model (296,078 columns) spent
    116 s there under a 10 s limit, an 80-request one 41 s. A larger model is left to column
    generation (as under ``"auto"``), with a warning."""
    return int(min(MAX_EXACT_SIZE, EXACT_SIZE_PER_SQRT_S * math.sqrt(max(0.0, time_limit_s))))


def _check_options(max_shapes, time_limit_s, exact) -> None:
    check_scalar(max_shapes, "max_shapes", int, min_val=1, unit="shapes")
    check_scalar(
        time_limit_s,
        "time_limit_s",
        float,
        min_val=0,
        max_val=MAX_TIME_LIMIT_S,
        include_boundaries="right",
        unit="s",
    )
    if exact not in EXACT_MODES:
        raise InputError(f"must be one of {', '.join(EXACT_MODES)}, got {exact!r}", field="exact")


def _check_aligned_fit(req: pd.DataFrame, prompt: np.ndarray, g: int, source: object) -> None:
    """Every aligned prompt must be a valid seq_align (<= MAX_LENGTH): checked before any work,
    naming the granularity and the request."""
    longest = int(np.argmax(prompt))
    aligned = -(-int(prompt[longest]) // g) * g
    if aligned > MAX_LENGTH:
        raise InputError(
            f"granularity {g:,} aligns prompt_len {int(prompt[longest]):,} to {aligned:,} tokens, "
            f"more than a plan's largest seq_align ({MAX_LENGTH:,}); use a smaller granularity",
            path=source,
            field="granularity",
            request_id=str(req["request_id"].iloc[longest]),
        )


def _request_batches(c: _Candidate) -> np.ndarray:
    """Batch label per request (request table order) of a candidate."""
    out = np.empty(len(c.order), dtype=np.int64)
    out[c.order] = c.batch
    return out


def _smallest_covering(shapes: np.ndarray, aligned: np.ndarray) -> np.ndarray:
    return shapes[np.searchsorted(shapes, aligned, side="left")]


#: the shape-set local search (padded-graph) scores at most this many (request, shape set) pairs
#: with the quick cap heuristic: a budget of work, so the same inputs get the same shapes on any
#: machine (300 requests: ~330 sets, ~2.5 s on a 2-core VM); it runs where one round of moves
#: fits (up to about 1,000 requests under a cap of 8); ``time_limit_s`` caps it
_SHAPE_SEARCH_WORK = 100_000
#: the segment DP of shape sets (padded-graph) runs where its segments hold at most this many
#: requests in all (each segment is one quick cap-heuristic plan): 60 lognormal requests of
#: 24 distinct aligned lengths hold 6,458, 100 of 29 15,460, 300 of 38 64,778
_SEGMENT_WORK = 20_000
#: ... where the best plan of the DP's sets is more than this share above the bound
_SHAPE_SEARCH_GAP = 0.003
#: ... and tries at most this many positions for one shape between its neighbours (the nearest
#: four included), twice as many for an added shape
_SHAPE_SEARCH_POSITIONS = 8


#: the LP over shape sets and batches (batchlab.shape_relaxation, padded-graph) runs where the
#: heuristics leave a certified gap above this, on models of at most _SHAPE_LP_SIZE entries
#: (:func:`batchlab.shape_relaxation.shape_relaxation_size`: 100 Azure code requests hold 30,200,
#: 300 hold 201,768, where one round takes seconds), for at most _SHAPE_LP_ROUNDS rounds (work,
#: not time) and half the time left (most of it where the exact model cannot follow)
_SHAPE_LP_GAP = 2e-4
_SHAPE_LP_SIZE = 40_000
_SHAPE_LP_ROUNDS = 150


def _shape_set_relaxation(
    prepared: list[_Bucket],
    cm: CostModel,
    problems: list,
    inverses: list[np.ndarray],
    seed: list[_Candidate],
    cap: int,
    upper: float,
    deadline: float,
    share: float,
):
    """The LP bound over shape sets and batches of the buckets (padded-graph), started from the
    seed plans' batches, within ``share`` of the time left; None where the model is too large or
    no time is left."""
    import time

    from batchlab.shape_relaxation import shape_relaxation_size, shape_set_bound

    if shape_relaxation_size(problems) > _SHAPE_LP_SIZE:
        return None
    now = time.perf_counter()
    if now >= deadline:
        return None
    seq = [
        None
        if b.limits.max_sequential_ms is None
        else b.limits.max_sequential_ms - _spike_floor(cm, b.aligned)
        for b in prepared
    ]
    # a pad-ratio limit as padded tokens: Σ members × (S + G) <= ratio × useful + useful
    pads = [
        None
        if b.limits.max_pad_ratio is None
        else (b.limits.max_pad_ratio + 1) * float(b.prompt.sum() + b.gen.sum()) * (1 + 1e-9)
        for b in prepared
    ]
    starts = [
        [(s, g, members) for s, g, members, _ in _start_batches(c, b, cm, inv)]
        for c, b, inv in zip(seed, prepared, inverses, strict=True)
    ]
    return shape_set_bound(
        problems,
        seq,
        [b.limits.max_batch_size for b in prepared],
        cap,
        cm.compile_cost,
        starts,
        max_padded_tokens=pads,
        upper_bound=upper,
        stop_gap=_SHAPE_LP_GAP / 2,
        max_rounds=_SHAPE_LP_ROUNDS,
        deadline=now + share * (deadline - now),
    )


def _spread(values: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of the sorted ``values``, evenly spaced, both ends included."""
    if len(values) <= count:
        return values
    return values[np.linspace(0, len(values) - 1, count).round().astype(np.int64)]


def _shape_moves(shapes: np.ndarray, lengths: np.ndarray, cap: int) -> list[np.ndarray]:
    """The neighbours of a shape set (sorted seq_align values, the last the longest aligned
    prompt, which every set keeps): each other shape moved between its neighbours, one shape
    dropped, one added (while fewer than ``cap``)."""
    per = _SHAPE_SEARCH_POSITIONS
    out = []
    for i in range(len(shapes) - 1):
        lo = shapes[i - 1] if i > 0 else 0
        between = lengths[(lengths > lo) & (lengths < shapes[i + 1]) & (lengths != shapes[i])]
        at = int(np.searchsorted(between, shapes[i]))
        near = between[max(0, at - 2) : at + 2]
        for v in np.union1d(near, _spread(between, per)).tolist():
            out.append(np.sort(np.concatenate([np.delete(shapes, i), [v]])))
    out += [np.delete(shapes, i) for i in range(len(shapes) - 1)]
    if len(shapes) < cap:
        for v in _spread(np.setdiff1d(lengths, shapes), 2 * per).tolist():
            out.append(np.sort(np.concatenate([shapes, [v]])))
    return out


def _segment_shape_sets(
    prepared: list[_Bucket], cm: CostModel, cap: int, deadline: float
) -> list[np.ndarray]:
    """Padded-graph, small inputs: the shape sets of an exact DP over *segments* of aligned
    lengths, a segment (L_i, L_j] priced by the quick cap heuristic's plan of its requests at
    shape L_j (every bucket's, its compile included; max_batch_size kept, other limits left to
    the plans made from the sets): the best set of every count from ``cap`` down to
    ``cap - 2``. A plan whose batches stay within a segment costs what the DP adds up, so on
    inputs where the optimum's batches do, the DP finds its set. Runs only where the segments'
    requests add up to at most _SEGMENT_WORK (else: [])."""
    import time

    lengths = np.unique(np.concatenate([b.aligned for b in prepared]))
    m = len(lengths)
    counts = np.zeros(m + 1, dtype=np.int64)
    for b in prepared:
        counts[1:] += np.bincount(np.searchsorted(lengths, b.aligned), minlength=m)
    ends = np.cumsum(counts)  # requests at the first j lengths
    size = ends[None, :] - ends[:, None]  # requests in the segment (L_i, L_j]
    if int(np.triu(size, 1).sum()) > _SEGMENT_WORK:
        return []
    seg = np.full((m + 1, m + 1), math.inf)  # seg[i, j]: lengths i..j-1 at shape lengths[j-1]
    for j in range(1, m + 1):
        shape = int(lengths[j - 1])
        for i in range(j):
            if time.perf_counter() > deadline:
                return []
            total = 0.0
            for b in prepared:
                mask = (b.aligned > (lengths[i - 1] if i else 0)) & (b.aligned <= shape)
                if not mask.any():
                    continue
                part = _Bucket(
                    b.name, b.requests[mask], b.prompt[mask], b.gen[mask], b.aligned[mask],
                    Limits(max_batch_size=b.limits.max_batch_size), b.bounds,
                )  # fmt: skip
                c, _, _ = _merge_plan(part, cm, np.full(int(mask.sum()), shape), None, {},
                                      quick=True, limit=_PADDED_MERGE_LIMIT)  # fmt: skip
                if c is None:
                    return []
                total += c.summary["total_cost"]  # (each bucket's plan pays the compile)
            seg[i, j] = total
    # best[k, j]: lengths 0..j-1 covered by k shapes, the last lengths[j-1]
    k_max = min(cap, m)
    best = np.full((k_max + 1, m + 1), math.inf)
    best[0, 0] = 0.0
    back = np.zeros((k_max + 1, m + 1), dtype=np.int64)
    for k in range(1, k_max + 1):
        for j in range(1, m + 1):
            v = best[k - 1, :j] + seg[:j, j]
            back[k, j] = int(np.argmin(v))
            best[k, j] = v[back[k, j]]
    out = []
    for k in range(k_max, max(0, k_max - 3), -1):
        if not np.isfinite(best[k, m]):
            continue
        chosen, j = [], m
        for kk in range(k, 0, -1):
            chosen.append(int(lengths[j - 1]))
            j = int(back[kk, j])
        out.append(np.asarray(sorted(chosen), dtype=np.int64))
    return out


def _shape_local_search(
    prepared: list[_Bucket], cm: CostModel, start: np.ndarray, cap: int, deadline: float
) -> np.ndarray | None:
    """Padded-graph: improve a shape set by local moves (:func:`_shape_moves`), each set scored
    by the quick cap heuristic on every bucket (requests at their smallest covering shape;
    ranked by limits met, then cost), best move first, until no move improves, the work
    budget (_SHAPE_SEARCH_WORK) is spent or ``deadline`` passes. The per-request shape DP
    prices each request alone, so it misses what batching does (on 300 Azure code requests its
    best set planned 6 % above a set one move away). Returns a better set, or None."""
    import time

    lengths = np.unique(np.concatenate([b.aligned for b in prepared]))
    n_req = sum(len(b.prompt) for b in prepared)
    budget = _SHAPE_SEARCH_WORK // max(n_req, 1)
    scored: dict[tuple, tuple] = {}

    def score(shapes: np.ndarray) -> tuple:
        key = tuple(shapes.tolist())
        if key not in scored:
            bad, total = 0, 0.0
            for b in prepared:
                s_req = _smallest_covering(shapes, b.aligned)
                c, _, _ = _merge_plan(b, cm, s_req, None, {}, quick=True, deadline=deadline,
                                      limit=_PADDED_MERGE_LIMIT)  # fmt: skip
                if c is None:  # more pieces at these shapes than the heuristic takes
                    scored[key] = (len(prepared) + 1, math.inf)
                    return scored[key]
                bad += not c.ok
                total += c.summary["total_cost"]
            scored[key] = (bad, total)
        return scored[key]

    best = np.asarray(start, dtype=np.int64)
    if len(best) == 0 or best[-1] != lengths[-1] or budget < 2:
        return None
    moves = _shape_moves(best, lengths, cap)
    if len(moves) >= budget:
        return None  # not one round of moves in the budget (large inputs)
    best_score = score(best)
    improved = False
    while True:
        moves = [m for m in moves if tuple(m.tolist()) not in scored]
        found = None
        for m in moves:  # (a round the budget cuts short keeps the best move it scored)
            if len(scored) >= budget or time.perf_counter() > deadline:
                break
            v = score(m)
            if v[0] < best_score[0] or (
                v[0] == best_score[0] and v[1] < best_score[1] * (1 - 1e-9)
            ):
                if found is None or v < found[0]:
                    found = (v, m)
        if found is None:
            break
        best_score, best, improved = found[0], found[1], True
        if len(scored) >= budget or time.perf_counter() > deadline:
            break
        moves = _shape_moves(best, lengths, cap)
    return best if improved else None


def plan_requests(
    buckets: pd.DataFrame | Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame],
    cost_model: str | CostModel = "static-graph",
    max_shapes: int = 8,
    limits: Limits | Mapping[str, Limits | Mapping] | None = None,
    *,
    heads_align: int = 32,
    hidden_align: int = 4096,
    window: int | None = None,
    time_limit_s: float = 10.0,
    exact: str = "auto",
    progress: bool | None = None,
) -> PlanResult:
    """Plan one or several buckets of requests sharing one global cap of ``max_shapes`` shapes,
    with a certified lower bound on the cost of every plan that meets the limits.

    ``buckets``: a request table, a list of them, or a mapping name -> table. ``limits``: one
    :class:`Limits` for all buckets, or a mapping bucket name -> Limits (or a dict of its keys).
    ``max_shapes`` larger than the number of distinct aligned prompt lengths, or than
    :data:`MAX_SHAPES`, is clamped to it (with a warning). ``exact``: ``"always"`` solves the exact
    model (HiGHS) to the proven optimum within ``time_limit_s`` seconds (at most
    :data:`MAX_TIME_LIMIT_S`) when it has at most :func:`exact_size_limit` assignments (else it
    warns and plans as ``"auto"``), ``"never"`` uses only the heuristics, ``"auto"`` solves it when
    the model is small (a test of its size, and of the heuristics' certified gap) and, above a
    few hundred assignments, stops once its plan is proved within 0.1 % of the optimum.
    Under ``"auto"`` and ``"never"`` every phase has a budget of *work* (rounds of column
    generation, HiGHS progress checks), not of time, so the same inputs give the same plan on
    a fast or a slow machine; ``time_limit_s`` is then a hard cap that binds only on instances
    whose work does not fit it. ``window``: the widest batch, in runs, of the
    contiguous search used for buckets too large for the cap heuristic. A progress bar (tqdm)
    shows when planning takes longer than a second; ``progress=None`` shows it only on a
    terminal (so stored notebook outputs do not depend on timing), True always, False never.

    Returns a :class:`PlanResult` (every bucket's plan, ``lower_bound`` and
    ``optimality_gap``); raises :class:`~batchlab.errors.LimitError` when a limit cannot be met.
    """
    import time
    import warnings

    from tqdm.auto import tqdm

    from batchlab.exact import cap_problem, model_size

    cm = get_cost_model(cost_model)
    _check_options(max_shapes, time_limit_s, exact)
    named = _as_buckets(buckets)
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise InputError(f"bucket names must be unique, got {names}", field="buckets")
    lims = _limits_for(limits, names)
    prepared = []
    for name, df in named:
        if not isinstance(df, pd.DataFrame):
            raise InputError(
                f"bucket {name!r}: expected a request table (DataFrame), got {type(df).__name__}",
                field="buckets",
            )
        source = df.attrs.get("source", name)
        req = validate_requests(df, source=source)
        p = req["prompt_len"].to_numpy(np.int64)
        g = req["gen_len"].to_numpy(np.int64)
        _check_aligned_fit(req, p, cm.granularity, source)
        lim = lims[name]
        prepared.append(
            _Bucket(
                name,
                req,
                p,
                g,
                align(p, cm.granularity),
                lim,
                _lower_bounds(p, g, cm, lim.max_batch_size),
            )
        )
    distinct = np.unique(np.concatenate([b.aligned for b in prepared]))
    cap = int(max_shapes)
    if cap > len(distinct) and cap > 8:  # 8, the default, clamps silently
        warnings.warn(
            f"max_shapes = {cap:,} is more than the {len(distinct):,} distinct aligned prompt "
            f"lengths of the input; using {len(distinct):,} (more shapes cannot help)",
            stacklevel=2,
        )
    cap = min(cap, len(distinct))
    if cap > MAX_SHAPES:
        warnings.warn(
            f"max_shapes = {cap:,}: using {MAX_SHAPES} (the planner's work grows with the "
            "number of shapes; no plan declares more)",
            stacklevel=2,
        )
        cap = MAX_SHAPES
    deadline = time.perf_counter() + float(time_limit_s)
    nb = len(prepared)
    import sys

    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    bar = tqdm(total=3 * nb, desc="plan", delay=1.0, disable=not progress, leave=False)
    tried: list[list[_Candidate]] = [[] for _ in prepared]
    n_types = [0] * nb  # distinct (aligned length, gen_len) pairs of each bucket, once counted
    mus = [0.0] * nb
    exact_bound = -math.inf
    exact_status = "not run"
    large = []

    always_size = exact_size_limit(time_limit_s)
    too_large: list[int] = []

    def proving(size: int) -> bool:
        """exact="always" and a model small enough to prove its optimum in the time limit."""
        return exact == "always" and size <= always_size

    def want_exact(size: int, gap: float = 0.0) -> bool:
        """Solve exactly: always (up to exact_size_limit), or (auto, and always above that
        size) when the model is small, or not too large while the heuristics' certified gap
        is above _EXACT_RETRY_GAP (a test of size and gap, not of the time left, so that the
        plan does not depend on the machine's speed)."""
        if proving(size):
            return True
        if exact == "always":
            too_large.append(size)
        elif exact != "auto":
            return False
        if size <= _EXACT_AUTO_SIZE:
            return True
        return size <= _EXACT_RETRY_SIZE and gap > _EXACT_RETRY_GAP

    if not cm.padded:
        declared = _static_shapes(prepared, cm, cap)
        chosen: list[_Candidate] = []
        bucket_exact = [-math.inf] * nb
        bucket_cg = [-math.inf] * nb
        cg_status = ["not run"] * nb
        cg_branch = [("not run", 0)] * nb
        refs: list[list[_Reference]] = [[] for _ in prepared]
        for i, b in enumerate(prepared):
            problem, inverse = cap_problem(cm, b.aligned, b.gen, b.prompt)
            n_types[i] = len(problem.type_a)
            use_cg = n_types[i] <= _COLGEN_LIMIT
            # the hard cap of this bucket: its share of the time left, so that where the cap
            # binds a bucket cannot leave the next ones none (where it does not bind, the work
            # budgets alone decide, and the plan does not depend on the machine)
            now = time.perf_counter()
            cap_i = now + (deadline - now) / (nb - i)
            merge_cap = now + _MERGE_SHARE * (cap_i - now) if use_cg else cap_i
            merge = functools.partial(
                _merge_plan,
                b,
                cm,
                b.aligned,
                declared[i],
                {"method": "merge", "n_shapes_global": 1},
                deadline=cap_i,
                refine_by=merge_cap,
            )
            merged = None
            if n_types[i] <= _MERGE_LIMIT:
                merged, mus[i], cands = merge(quick=use_cg)
                tried[i] += cands
            if merged is None:
                # too many pieces for the cap heuristic: the contiguous-run search (under
                # static-graph the declared shape is the bucket's own, for every batch), before
                # column generation, so that its restricted master starts from a plan that
                # meets the limits (without one, a binding sequential limit kept a 3,000-request
                # master infeasible and its bound at the unlimited optimum: 19 % gap)
                n_i = len(b.prompt)
                win = window or int(min(512, max(48, 3_000_000 // max(n_i, 1))))
                _, cands = _plan_bucket(
                    b, np.asarray([declared[i]]), cm, win, full=True, coarse=True
                )
                tried[i] += [
                    dataclasses.replace(c, settings={**c.settings, "method": "contiguous"})
                    for c in cands
                ]
                # under a limit other than the batch size (where one order's contiguous runs
                # are far from the optimum), the cap heuristic on coarse pieces too (a
                # 4,500-request wide-length bucket under a sequential limit: 5.48 % certified
                # gap without it, 0.21 % with it; without limits it is not needed)
                lim_i = b.limits
                others = (lim_i.max_sequential_ms, lim_i.max_p95_latency_ms, lim_i.max_pad_ratio)
                if use_cg and any(v is not None for v in (*others, lim_i.max_cost)):
                    _, mus[i], cands = merge(quick=True, coarsen=True)
                    tried[i] += cands
            refs[i] = _reference_candidates(b, cm, cap, declared[i])
            bar.update()
            spec = _spec(b, problem, float(cm.compile_cost(declared[i])))
            if use_cg:
                res, cands, _ = _colgen(
                    b,
                    cm,
                    spec,
                    inverse,
                    tried[i],
                    declared[i],
                    None,
                    cap_i,
                    {"n_shapes_global": 1},
                    mus[i],
                )
                bucket_cg[i] = res.bound * (1 - 1e-9) if math.isfinite(res.bound) else res.bound
                cg_status[i] = res.status
                cg_branch[i] = (res.branch_status, res.branch_nodes)
                tried[i] += cands
            known_bound = max(bucket_cg[i], b.bounds.min_cost)
            gap_i = _best_ok_cost(tried[i]) / known_bound - 1 if known_bound > 0 else math.inf
            size_i = model_size([spec])
            if want_exact(size_i, gap_i):
                left = max(0.05, cap_i - time.perf_counter())
                ok_tried = [c for c in tried[i] if c.ok]
                seed = [min(ok_tried, key=_rank)] if ok_tried else None
                status, bound, cands = _exact_candidates(
                    [b],
                    cm,
                    [problem],
                    [inverse],
                    [spec],
                    cap,
                    [declared[i]],
                    left,
                    seed,
                    not proving(size_i),
                )
                exact_status = status
                bucket_exact[i] = bound
                tried[i] += [c for c in cands if c is not None]
                if status == "infeasible":
                    tried[i] = tried[i] or []
            bar.update()
        for i, b in enumerate(prepared):
            tried[i] += _score_references(b, cm, refs[i], _best_ok_cost(tried[i]))
        chosen = [min(t, key=_rank) for t in tried]
        shapes_total = float(cm.compile_cost(np.asarray(declared)).sum())
        own_total = float(sum(cm.compile_cost(int(b.aligned.max())) for b in prepared))
        per_exact = bucket_exact
        per_cg, per_cg_status, per_branch = bucket_cg, cg_status, cg_branch
    else:
        options: list[list[_Candidate]] = []
        aligned_sets = [b.aligned for b in prepared]
        alone = _alone_at_shape(cm, prepared)

        # shape sets for the requests alone, with each shape's compile cost (paid once per
        # shape: where it is large, fewer and smaller shapes win; 40 Azure code requests, whose
        # prompts reach 7.4k tokens, were planned 31 % above the optimum by sets chosen without
        # it), and the sets chosen without it (the requests alone are not the batches: on 300
        # of them, 7 shapes chosen without it beat the 8 chosen with it by 0.5 %)
        sets = _segment_shape_sets(prepared, cm, cap, time.perf_counter() + 0.1 * time_limit_s)
        counts = range(cap, max(0, cap - 3), -1)
        tries = [(k, fixed) for k in counts for fixed in (cm.compile_cost, None)]
        for k, fixed in tries:
            shapes = np.asarray(
                joint_optimal_shapes(aligned_sets, k, cm.granularity, cost=alone, fixed_cost=fixed),
                dtype=np.int64,
            )
            if not any(np.array_equal(shapes, s) for s in sets):
                sets.append(shapes)

        def merge_all(shapes: np.ndarray) -> list[_Candidate] | None:
            """The cap heuristic on every bucket with the shape set (None: a bucket too large)."""
            option = []
            for i, b in enumerate(prepared):
                s_req = _smallest_covering(shapes, b.aligned)
                merged, mu, cands = _merge_plan(
                    b,
                    cm,
                    s_req,
                    None,
                    {"method": "merge", "n_shapes_global": len(shapes)},
                    limit=_PADDED_MERGE_LIMIT,
                )
                if merged is None:
                    large.append(i)
                    return None
                mus[i] = max(mus[i], mu)
                tried[i] += cands
                option.append(merged)
            return option

        def option_cost(o: list[_Candidate]) -> float:
            return sum(c.summary["total_cost"] for c in o)

        def rank_option(o: list[_Candidate]) -> tuple:
            """Limits missed first, then cost: how options are compared everywhere here."""
            return (sum(not c.ok for c in o), option_cost(o))

        took = 0.0
        option_sets: list[np.ndarray] = []
        for j, shapes in enumerate(sets):
            # the first three sets always (work, not time); the others while one more fits
            # the time left (each is a whole merge search of every bucket)
            started = time.perf_counter()
            if j >= _PADDED_SETS and started + 2 * took > deadline:
                break  # one more, and as long again for the bounds, would not fit
            option = merge_all(shapes)
            if option is None:
                break
            options.append(option)
            option_sets.append(shapes)
            took = time.perf_counter() - started
        bar.update(nb)
        if nb == 1:
            below = min((_best_ok_cost(o) for o in options), default=math.inf)
            scored = _score_references(
                prepared[0], cm, _reference_candidates(prepared[0], cm, cap, None), below
            )
            tried[0] += scored
            if scored:
                options.append([min(scored, key=_rank)])
        problems, inverses, specs = [], [], []
        for b in prepared:
            problem, inverse = cap_problem(cm, b.aligned, b.gen, b.prompt, distinct)
            problems.append(problem)
            n_types[len(problems) - 1] = len(problem.type_a)
            inverses.append(inverse)
            specs.append(_spec(b, problem, 0.0))
        size_all = model_size(specs)
        # the certified gap the heuristics leave decides (with the size) whether "auto" solves
        # the exact model, as on the static path
        cap_bounds, joint_cap_bound = _padded_cap_bounds(prepared, cm, distinct, mus, cap, deadline)
        shape_lp = -math.inf
        known_all = max(
            _safe_bound(joint_cap_bound),
            sum(
                max(_safe_bound(v), b.bounds.min_cost)
                for v, b in zip(cap_bounds, prepared, strict=True)
            ),
        )

        if option_sets and not large:
            # the DP's sets price each request alone: where the best plan's certified gap is
            # above _SHAPE_SEARCH_GAP, improve its set by local moves scored with the batches,
            # within a share of the time left (the exact model may follow)
            at = min(range(len(option_sets)), key=lambda j: rank_option(options[j]))
            if option_cost(options[at]) > known_all * (1 + _SHAPE_SEARCH_GAP):
                now = time.perf_counter()
                share = now + 0.25 * max(0.0, deadline - now)
                better = _shape_local_search(prepared, cm, option_sets[at], cap, share)
                option = merge_all(better) if better is not None else None
                if option is not None:
                    options.append(option)
        # the cheapest option meeting every limit: its gap, and the exact model's seed
        seed = min((o for o in options if all(c.ok for c in o)), key=option_cost, default=None)
        best_option = option_cost(seed) if seed is not None else math.inf
        gap_all = best_option / known_all - 1 if known_all > 0 else math.inf
        # shape sets and batches in one LP (batchlab.shape_relaxation), where it is small and
        # the exact model will not prove the optimum anyway
        proved_later = proving(size_all) or (exact == "auto" and size_all <= _EXACT_PROVE_SIZE)
        if not large and seed is not None and gap_all > _SHAPE_LP_GAP and not proved_later:
            # half the time left where the exact model may follow, most of it where it cannot
            later = exact != "never" and size_all <= max(_EXACT_RETRY_SIZE, always_size)
            relaxation = _shape_set_relaxation(
                prepared, cm, problems, inverses, seed, cap, best_option, deadline,
                0.5 if later else 0.9,
            )  # fmt: skip
            if relaxation is not None:
                shape_lp = _safe_bound(relaxation.bound)
                known_all = max(known_all, shape_lp)
                gap_all = best_option / known_all - 1 if known_all > 0 else math.inf
        # under "auto" a model the exact solve would only take to _EXACT_REL_GAP is not solved
        # where the plan is certified that close already
        certified = exact == "auto" and size_all > _EXACT_PROVE_SIZE and gap_all <= _EXACT_REL_GAP
        if not large and not certified and want_exact(size_all, gap_all):
            left = max(0.05, deadline - time.perf_counter())
            exact_status, exact_bound, cands = _exact_candidates(
                prepared,
                cm,
                problems,
                inverses,
                specs,
                cap,
                None,
                left,
                seed,
                not proving(size_all),
            )
            if all(c is not None for c in cands):
                for i, c in enumerate(cands):
                    tried[i].append(c)
                options.append(cands)
        bar.update(nb)
        if large:
            best_large, more = _contiguous_search(prepared, cm, cap, window)
            for i in range(nb):
                tried[i] += more[i]
            options.append(best_large)
        options.sort(key=rank_option)
        chosen = options[0]
        shapes_total = own_total = 0.0
        per_exact = [exact_bound if nb == 1 else -math.inf] * nb
        per_shape_lp = [shape_lp if nb == 1 else -math.inf] * nb
        per_cg, per_cg_status = [-math.inf] * nb, ["not run"] * nb
        per_branch = [("not run", 0)] * nb
    if too_large:
        if exact_status == "not run":
            exact_status = "too large"
        warnings.warn(
            f"exact='always': the exact model has {max(too_large):,} (type, cap) assignments, "
            f"more than the {always_size:,} that can be set up and proved in a time limit of "
            f"{time_limit_s:g} s (batchlab.planner.exact_size_limit); planned as under "
            "exact='auto' (column generation: the lower bound is certified, the optimum is not "
            "proved)",
            stacklevel=2,
        )
    chosen = list(chosen)
    for i, (bucket, c) in enumerate(zip(prepared, chosen, strict=True)):
        if not c.ok:  # last tries before giving up
            more = _room_for_the_spike(bucket, cm, c)
            tried[i] += more
            ok = [m for m in more if m.ok]
            if ok:
                chosen[i] = min(ok, key=_rank)
                continue
            bar.close()
            cut = time.perf_counter() > deadline
            # buckets sharing a cap: a plan of this one that meets its limits may exist at a
            # shape set that leaves another bucket none; the error names the closest failing plan
            failed = [t for t in tried[i] if not t.ok] or [c]
            err = _infeasible(bucket, failed, float(time_limit_s) if cut else None)
            if any(t.ok for t in tried[i]):
                err.args = (
                    f"{err.args[0]} (alone this bucket has a plan that meets its limits, at "
                    f"shapes that leave the other buckets none that meets theirs within "
                    f"max_shapes = {cap})",
                )
            raise err
    plans = []
    bounds_total = 0.0
    if not cm.padded:
        cap_bounds, joint_cap_bound = [-math.inf] * nb, -math.inf
        per_shape_lp, shape_lp = [-math.inf] * nb, -math.inf
    for i, (b, c) in enumerate(zip(prepared, chosen, strict=True)):
        mu = mus[i]
        known = {
            "simple": b.bounds.min_cost,
            "exact": _safe_bound(per_exact[i]),
            "colgen": _safe_bound(per_cg[i]),
            "shape-cap": _safe_bound(cap_bounds[i]),
            "shape-lp": per_shape_lp[i],
        }
        cost_i = c.summary["total_cost"]
        weak = max(known.values()) < cost_i / (
            1 + (1e-2 if per_cg_status[i] != "not run" else 1e-4)
        )
        small = n_types[i] <= _BOUND_LIMIT
        if small and weak and (per_cg_status[i] == "not run" or time.perf_counter() < deadline):
            lag = _bucket_bound(b, cm, distinct if cm.padded else None, mu, deadline)
            if lag is not None:
                known["lagrangian"] = _safe_bound(lag)
        method = max(known, key=lambda k: known[k])
        bound = known[method]
        bounds_total += bound
        plan, ev = c.materialize(b, cm, heads_align, hidden_align)
        settings = {
            **c.settings,
            "bound_method": method,
            "exact_status": exact_status,
            "colgen_status": per_cg_status[i],
            "branch_status": per_branch[i][0],
            "branch_nodes": per_branch[i][1],
        }
        plans.append(
            BucketPlan(b.name, plan, ev, b.bounds, b.limits, settings, lower_bound=float(bound))
        )
        bar.update()
    bar.close()
    total_bound = max(
        bounds_total + shapes_total - own_total,
        _safe_bound(exact_bound),
        _safe_bound(joint_cap_bound),
        shape_lp,
    )
    used = sorted(set().union(*(c.shapes_used() for c in chosen)))
    methods = {c.settings.get("method", "contiguous") for c in chosen}
    return PlanResult(
        buckets=tuple(plans),
        shapes=tuple(used),
        max_shapes=cap,
        lower_bound=float(total_bound),
        method="+".join(sorted(methods)),
    )
