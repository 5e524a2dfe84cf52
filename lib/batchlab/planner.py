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

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from batchlab.cost import CostModel, get_cost_model
from batchlab.errors import InputError, LimitError
from batchlab.evaluate import Evaluation, evaluate, evaluate_arrays
from batchlab.plan import plan_from_batches
from batchlab.shapes import align, joint_optimal_shapes, min_batches, min_padding_tokens
from batchlab.workload import validate_requests

__all__ = [
    "LIMIT_METRICS",
    "BucketPlan",
    "Limits",
    "LowerBounds",
    "PlanResult",
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
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise InputError(f"must be a number, got {value!r}", field=f.name)
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"must be a positive finite number, got {value!r}", field=f.name)
        if self.max_batch_size is not None and int(self.max_batch_size) != self.max_batch_size:
            raise InputError(
                f"must be a whole number of requests, got {self.max_batch_size!r}",
                field="max_batch_size",
            )

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
        if kwargs.get("max_batch_size") is not None:
            mbs = kwargs["max_batch_size"]
            if isinstance(mbs, float) and mbs.is_integer():
                kwargs["max_batch_size"] = int(mbs)
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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", path=path) from None
    out = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise InputError("expected a table [bucket_name] of limits", path=path, field=name)
        out[name] = Limits.from_mapping(table, source=f"{path} [{name}]")
    return out


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
    s = align(p, cm.granularity)
    n = len(df)
    pad = min_padding_tokens(p, cm.granularity)
    nb = min_batches(n, max_batch_size)
    alone_cost = cm.prefill_cost(s) + cm.decode_cost(s, g)
    min_cost = float(alone_cost.sum() + nb * cm.overhead_cost + cm.compile_cost(s.max()))
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
    """The plan of one bucket with its evaluation, lower bounds, limits and search settings."""

    name: str
    plan: pd.DataFrame
    evaluation: Evaluation
    bounds: LowerBounds
    limits: Limits
    settings: dict = field(default_factory=dict)

    def comparison(self) -> pd.DataFrame:
        """Achieved value, lower bound and limit per metric (one row per metric)."""
        summary = self.evaluation.summary()
        rows = [
            ("total_cost", summary["total_cost"], self.bounds.min_cost, self.limits.max_cost),
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
        return out


@dataclass(frozen=True)
class PlanResult:
    """Plans for every bucket and the global shape set they share."""

    buckets: tuple[BucketPlan, ...]
    shapes: tuple[int, ...]
    max_shapes: int

    @property
    def total_cost(self) -> float:
        return float(sum(b.evaluation.cost.total for b in self.buckets))

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
    ids = np.char.add("b", np.char.zfill(batch.astype(str), width))
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


def _candidate(bucket, shapes, cm, gen_bucket, lam, window) -> _Candidate:
    order, batch, seq = _batch_bucket(bucket, shapes, cm, gen_bucket, lam, window)
    nb = int(batch.max()) + 1
    first_row = np.unique(batch, return_index=True)[1]
    core = evaluate_arrays(
        cm,
        bucket.prompt[order],
        bucket.gen[order],
        bucket.aligned[order],
        seq,
        batch,
        nb,
        first_row,
    )
    summary = core.summary()
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
    tried = [_candidate(bucket, shapes, cm, gb, 0.0, window) for gb in sizes]
    best = min(tried, key=_rank)
    if full and not best.ok and bucket.limits.max_sequential_ms is not None:
        base = sorted(tried, key=lambda c: c.summary["total_cost"])
        for c in base:
            found = _search_lambda(bucket, shapes, cm, c.settings["gen_bucket_size"], window, c)
            tried.append(found)
        best = min(tried, key=_rank)
    return best, tried


def _as_buckets(buckets) -> list[tuple[str, pd.DataFrame]]:
    if isinstance(buckets, pd.DataFrame):
        return [("bucket_0", buckets)]
    if isinstance(buckets, Mapping):
        return [(str(k), v) for k, v in buckets.items()]
    items = list(buckets)
    if not items:
        raise InputError("no buckets to plan")
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


def _infeasible(bucket: _Bucket, tried: list[_Candidate]) -> LimitError:
    """The error for a bucket none of whose candidates meets every limit."""
    lim = bucket.limits
    for name, metric in LIMIT_METRICS.items():
        bound = getattr(lim, name)
        if bound is None:
            continue
        best = min(c.summary[metric] for c in tried)
        if best > bound * (1 + 1e-12):
            return LimitError(name, bucket.name, bound, best)

    # each limit can be met alone, but not all together: name the one the closest plan breaks
    def excess(c: _Candidate) -> float:
        return sum(v / b - 1 for v, b in c.violations.values())

    closest = min(tried, key=excess)
    name, (value, bound) = next(iter(closest.violations.items()))
    err = LimitError(name, bucket.name, bound, value)
    err.args = (str(err) + " (each limit alone can be met, but not all of them together)",)
    return err


def plan_requests(
    buckets: pd.DataFrame | Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame],
    cost_model: str | CostModel = "static-graph",
    max_shapes: int = 8,
    limits: Limits | Mapping[str, Limits | Mapping] | None = None,
    *,
    heads_align: int = 32,
    hidden_align: int = 4096,
    window: int | None = None,
) -> PlanResult:
    """Plan one or several buckets of requests sharing one global cap of ``max_shapes`` shapes.

    ``buckets``: a request table, a list of them, or a mapping name -> table. ``limits``: one
    :class:`Limits` for all buckets, or a mapping bucket name -> Limits (or a dict of its keys).
    ``window``: the longest batch the DP considers, in runs of identical requests (default:
    adaptive to the bucket size). Returns a :class:`PlanResult`; raises
    :class:`~batchlab.errors.LimitError` when a limit cannot be met.
    """
    cm = get_cost_model(cost_model)
    if isinstance(max_shapes, bool) or int(max_shapes) != max_shapes or max_shapes < 1:
        raise InputError(f"must be a positive whole number, got {max_shapes!r}", field="max_shapes")
    named = _as_buckets(buckets)
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise InputError(f"bucket names must be unique, got {names}", field="buckets")
    lims = _limits_for(limits, names)
    prepared = []
    for name, df in named:
        req = validate_requests(df, source=df.attrs.get("source", name))
        p = req["prompt_len"].to_numpy(np.int64)
        g = req["gen_len"].to_numpy(np.int64)
        lim = lims[name]
        prepared.append(
            _Bucket(
                name,
                req,
                p,
                g,
                align(p, cm.granularity),
                lim,
                lower_bounds(req, cm, lim.max_batch_size),
            )
        )
    n_total = sum(len(b.prompt) for b in prepared)
    if window is None:
        window = int(min(512, max(48, 3_000_000 // max(n_total, 1))))
    mean_gen = float(np.mean(np.concatenate([b.gen for b in prepared])))
    shape_cost = None
    if cm.padded:

        def shape_cost(seq_align, aligned_len):
            return (
                cm.prefill_cost(seq_align) + cm.decode_cost(seq_align, mean_gen) + 0 * aligned_len
            )

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

    # stage 1: every global shape count, with the cheap (λ = 0, three orders) search
    options = []
    seen = set()
    for k in range(1, int(max_shapes) + 1):
        shapes = np.asarray(
            joint_optimal_shapes(aligned_sets, k, cm.granularity, cost=shape_cost), dtype=np.int64
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
    n_bad, _, shapes, best = options[0]
    if n_bad:
        for i, (bucket, chosen) in enumerate(zip(prepared, best, strict=True)):
            if not chosen.ok:
                raise _infeasible(bucket, tried[i])
    used = sorted(set().union(*(c.shapes_used() for c in best)))
    plans = []
    for b, c in zip(prepared, best, strict=True):
        plan, ev = c.materialize(b, cm, heads_align, hidden_align)
        plans.append(BucketPlan(b.name, plan, ev, b.bounds, b.limits, c.settings))
    return PlanResult(
        buckets=tuple(plans),
        shapes=tuple(used),
        max_shapes=int(max_shapes),
    )
