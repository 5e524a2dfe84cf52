"""Padded shapes and bucketing: alignment, shape grids, optimal shapes, gen-length buckets, bounds.

Vocabulary (all lengths in tokens):

* ``align(len, g)`` rounds a prompt length up to the granularity ``g``; the difference is the
  *alignment padding*, which no plan can avoid.
* A *shape* is a ``seq_align`` value. A request is served by the smallest shape of a set that is
  ``>= align(len)``; the padding it pays is ``shape - len``.
* ``optimal_shapes`` finds the exact set of at most ``k`` shapes minimizing the total padding (or a
  custom per-request cost) by dynamic programming over the distinct aligned lengths.
* ``padding_vs_k_table`` compares the grid families with the optimum for each number of shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar
from batchlab.errors import InputError

if TYPE_CHECKING:  # pandas is imported by the one function that builds a table
    import pandas as pd

DEFAULT_GRANULARITY = 64

GRID_FAMILIES = ("power_of_two", "linear", "geometric", "quantile", "optimal")

ShapeCost = Callable[[np.ndarray, np.ndarray], np.ndarray]

__all__ = [
    "DEFAULT_GRANULARITY",
    "GRID_FAMILIES",
    "align",
    "assign_shapes",
    "gen_buckets",
    "geometric_grid",
    "joint_optimal_shapes",
    "linear_grid",
    "MAX_GRANULARITY",
    "MAX_GRID_SHAPES",
    "check_granularity",
    "min_batches",
    "min_padding_tokens",
    "optimal_shapes",
    "padding_budget",
    "padding_tokens",
    "padding_vs_k_table",
    "per_bucket_optimal_shapes",
    "power_of_two_grid",
    "quantile_grid",
    "shape_grid",
]


#: the largest granularity (tokens): a shape is at most ``batchlab.workload.MAX_LENGTH`` tokens.
MAX_GRANULARITY = 2**31 - 1


def check_granularity(granularity: int) -> int:
    """The alignment granularity g (tokens), a whole number in [1, MAX_GRANULARITY]; else an
    InputError naming ``granularity``."""
    return check_scalar(
        granularity, "granularity", int, min_val=1, max_val=MAX_GRANULARITY, unit="tokens"
    )


_check_granularity = check_granularity


def align(x: ArrayLike, granularity: int = DEFAULT_GRANULARITY) -> np.ndarray:
    """Round lengths up to a multiple of ``granularity`` (tokens), vectorized: ceil(x / g) * g."""
    g = _check_granularity(granularity)
    arr = np.asarray(x, dtype=np.int64)
    return -(-arr // g) * g


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_int(value: object, name: str, *, minimum: int = 1) -> int:
    return check_scalar(value, name, int, min_val=minimum)


#: the most shapes a grid or a shape set may hold (a grid's work and size grow with it).
MAX_GRID_SHAPES = 4096


def _check_count_of_shapes(value: object, name: str) -> int:
    return check_scalar(value, name, int, min_val=1, max_val=MAX_GRID_SHAPES, unit="shapes")


def _as_lengths(
    lengths: ArrayLike, name: str = "lengths", request_ids: ArrayLike | None = None
) -> np.ndarray:
    """A non-empty 1-D int64 array of positive token lengths, or an InputError naming the offender."""
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0:
        raise InputError("must not be empty", field=name)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"must hold integer token counts, got dtype {arr.dtype}", field=name)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.floor(arr))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{name}[{pos}] = {arr[pos]!r} is not a whole number of tokens",
                field=name,
                request_id=_id_at(request_ids, pos),
            )
        if (np.abs(arr) >= 2.0**62).any():
            raise InputError("lengths must be below 2**62 tokens", field=name)
    out = arr.astype(np.int64)
    bad = out <= 0
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name}[{pos}] = {int(out[pos])} is not positive (lengths are tokens > 0)",
            field=name,
            request_id=_id_at(request_ids, pos),
        )
    return out


def _id_at(request_ids: ArrayLike | None, pos: int) -> str | None:
    if request_ids is None:
        return None
    return str(np.asarray(request_ids, dtype=object).reshape(-1)[pos])


def _as_shapes(seq_aligns: ArrayLike) -> np.ndarray:
    """Sorted unique positive int64 shapes."""
    return np.unique(_as_lengths(seq_aligns, name="seq_aligns"))


def _check_max_len(max_len: int, name: str = "max_len") -> int:
    value = _check_int(max_len, name)
    if value >= 2**62:
        raise InputError(f"must be below 2**62 tokens, got {value}", field=name)
    return value


# --------------------------------------------------------------------------------------------
# shape grids


def power_of_two_grid(
    max_len: int, granularity: int = DEFAULT_GRANULARITY, min_len: int | None = None
) -> np.ndarray:
    """Powers of two (tokens) from the smallest ``>= min_len`` (default ``granularity``) up to the
    first one ``>= max_len``, each aligned up to ``granularity`` and deduplicated.

    For a power-of-two granularity the values below ``g`` collapse onto ``g`` and the rest are
    plain powers of two; for another granularity every value is rounded up to a multiple of it.
    The largest value always covers ``align(max_len)``. Returns a sorted int64 array.
    """
    g = _check_granularity(granularity)
    top = _check_max_len(max_len)
    low = g if min_len is None else _check_max_len(min_len, "min_len")
    first = 1 << (low - 1).bit_length()  # smallest power of two >= low
    last = max(first, 1 << (top - 1).bit_length())  # first power of two >= max_len
    powers = [1 << e for e in range(first.bit_length() - 1, last.bit_length())]
    return np.unique(align(np.asarray(powers, dtype=np.int64), g))


def linear_grid(max_len: int, k: int, granularity: int = DEFAULT_GRANULARITY) -> np.ndarray:
    """``k`` evenly spaced lengths ``ceil(i * max_len / k)``, i = 1..k, aligned up to
    ``granularity`` and deduplicated (tokens). The top value is ``align(max_len)``."""
    g = _check_granularity(granularity)
    top = _check_max_len(max_len)
    k = _check_count_of_shapes(k, "k")
    points = [-(-top * i // k) for i in range(1, k + 1)]  # exact integer ceil
    return np.unique(align(np.asarray(points, dtype=np.int64), g))


def geometric_grid(
    max_len: int,
    k: int,
    granularity: int = DEFAULT_GRANULARITY,
    min_len: int | None = None,
) -> np.ndarray:
    """``k`` geometrically spaced lengths from ``min_len`` (default ``granularity``) to
    ``max_len``, aligned up to ``granularity`` and deduplicated (tokens, sorted int64).

    ``k = 1`` gives ``align(max_len)`` alone; the top value is always ``align(max_len)``.
    """
    g = _check_granularity(granularity)
    top = _check_max_len(max_len)
    k = _check_count_of_shapes(k, "k")
    low = g if min_len is None else _check_max_len(min_len, "min_len")
    low = min(low, top)
    if k == 1:
        return align(np.asarray([top], dtype=np.int64), g)
    exps = np.arange(k, dtype=np.float64) / (k - 1)
    raw = low * (top / low) ** exps
    # round away float noise (1e-6 tokens) before the ceiling, then pin both ends exactly
    points = np.ceil(np.round(raw, 6)).astype(np.int64)
    points[0] = low
    points[-1] = top
    return np.unique(align(points, g))


def quantile_grid(lengths: ArrayLike, k: int, granularity: int = DEFAULT_GRANULARITY) -> np.ndarray:
    """Aligned nearest-rank quantiles of ``lengths`` at probabilities i/k, i = 1..k (tokens).

    The i-th value is the ``ceil(i * n / k)``-th smallest length aligned up to ``granularity``;
    the top one (i = k) is the maximum, so every length is covered. Sorted, deduplicated int64.
    """
    g = _check_granularity(granularity)
    arr = np.sort(_as_lengths(lengths))
    k = _check_count_of_shapes(k, "k")
    n = arr.size
    ranks = -(-(np.arange(1, k + 1, dtype=np.int64) * n) // k)  # ceil(i*n/k), in 1..n
    return np.unique(align(arr[ranks - 1], g))


def shape_grid(
    family: str, lengths: ArrayLike, k: int, granularity: int = DEFAULT_GRANULARITY
) -> np.ndarray:
    """A shape set of the grid ``family`` (one of ``GRID_FAMILIES``) for these lengths (tokens).

    * ``power_of_two``: ``power_of_two_grid(max, g, min_len=min)``; its size is set by the range of
      lengths, so ``k`` is not used.
    * ``linear``: ``linear_grid(max, k, g)``.
    * ``geometric``: ``geometric_grid(max, k, g, min_len=min)``.
    * ``quantile``: ``quantile_grid(lengths, k, g)``.
    * ``optimal``: ``optimal_shapes(lengths, k, g)`` (least total padding).

    ``min``/``max`` are the smallest and largest length; no shape is wasted below the smallest.
    """
    if family not in GRID_FAMILIES:
        raise InputError(
            f"unknown grid family {family!r}; expected one of {', '.join(GRID_FAMILIES)}",
            field="family",
        )
    g = _check_granularity(granularity)
    arr = _as_lengths(lengths)
    k = _check_count_of_shapes(k, "k")
    lo, hi = int(arr.min()), int(arr.max())
    if family == "power_of_two":
        return power_of_two_grid(hi, g, min_len=lo)
    if family == "linear":
        return linear_grid(hi, k, g)
    if family == "geometric":
        return geometric_grid(hi, k, g, min_len=lo)
    if family == "quantile":
        return quantile_grid(arr, k, g)
    return optimal_shapes(arr, k, g)


# --------------------------------------------------------------------------------------------
# optimal shapes (dynamic programming over distinct aligned lengths)


def _weighted_groups(
    length_sets: Sequence[np.ndarray], weights: np.ndarray, g: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Distinct aligned lengths (sorted), their summed weights, and the weighted alignment
    padding Σ w·(align(len) − len), a constant of every shape set."""
    aligned = [align(lens, g) for lens in length_sets]
    flat = np.concatenate(aligned)
    w = np.concatenate(
        [np.full(a.size, wb, dtype=np.float64) for a, wb in zip(aligned, weights, strict=True)]
    )
    values, inverse = np.unique(flat, return_inverse=True)
    counts = np.bincount(inverse.reshape(-1), weights=w, minlength=values.size)
    raw = np.concatenate(length_sets)
    const = float(np.dot(w, (flat - raw).astype(np.float64)))
    return values, counts, const


def _dp_shapes(
    values: np.ndarray,
    counts: np.ndarray,
    k: int,
    cost: ShapeCost | None,
    fixed_cost: Callable[[np.ndarray], ArrayLike] | None = None,
) -> tuple[np.ndarray, float]:
    """Exact least-cost set of at most ``k`` shapes among ``values`` (sorted distinct aligned
    lengths, weights ``counts``); the largest value is always in the set. ``fixed_cost``: a cost
    per shape chosen (e.g. its compile), added to each segment.

    State ``F[t, j]``: least cost of serving the first ``j`` groups with exactly ``t`` shapes, the
    largest of them ``values[j-1]``. ``F[t, j] = min_{i<j} F[t-1, i] + seg(i, j)`` where
    ``seg(i, j) = Σ_{i<=l<j} counts[l]·cost(values[j-1], values[l])``. One numpy step per ``j``
    evaluates every ``t`` and every ``i`` at once: O(k·m²) work, O(k·m) memory.

    Ties: the fewest shapes, then (backtracking with the smallest argmin ``i``) the set whose
    shapes, compared from the largest down, are smallest.
    """
    m = values.size
    kk = min(k, m)
    fixed = None
    if fixed_cost is not None:
        fixed = np.asarray(fixed_cost(values.astype(np.int64)), dtype=np.float64).reshape(-1)
        if fixed.shape != values.shape or np.isnan(fixed).any() or (fixed < 0).any():
            raise InputError(
                f"must return one finite cost >= 0 per shape ({values.size})", field="fixed_cost"
            )
    # each length its own shape: no padding
    if cost is None and fixed is None and kk == m and (counts > 0).all():
        return values.astype(np.int64), 0.0
    vals_f = values.astype(np.float64)
    inf = np.inf
    f = np.full((kk + 1, m + 1), inf)
    f[0, 0] = 0.0
    arg = np.zeros((kk + 1, m + 1), dtype=np.int64)
    if cost is None:
        c_cum = np.concatenate(([0.0], np.cumsum(counts)))
        w_cum = np.concatenate(([0.0], np.cumsum(counts * vals_f)))
    for j in range(1, m + 1):
        shape = vals_f[j - 1]
        if cost is None:
            # Σ_{i<=l<j} c_l (shape − a_l) = shape·(C_j − C_i) − (W_j − W_i)
            seg = shape * (c_cum[j] - c_cum[:j]) - (w_cum[j] - w_cum[:j])
        else:
            per = np.asarray(
                cost(np.full(j, values[j - 1], dtype=np.int64), values[:j].copy()),
                dtype=np.float64,
            )
            if per.shape != (j,):
                raise InputError(
                    f"cost returned shape {per.shape}, expected ({j},)",
                    field="cost",
                )
            if np.isnan(per).any():
                raise InputError("cost returned NaN", field="cost")
            weighted = np.where(counts[:j] == 0, 0.0, counts[:j] * per)
            seg = np.cumsum(weighted[::-1])[::-1]
        if fixed is not None:
            seg = seg + fixed[j - 1]
        cand = f[:kk, :j] + seg[None, :]
        best = cand.argmin(axis=1)
        arg[1:, j] = best
        f[1:, j] = cand[np.arange(kk), best]
    totals = f[1:, m]
    if not np.isfinite(totals).any():
        raise InputError("every shape set has infinite cost", field="cost")
    t = int(np.argmin(totals)) + 1  # first minimum: fewest shapes
    total = float(totals[t - 1])
    chosen = []
    j = m
    while t > 0:
        chosen.append(int(values[j - 1]))
        j = int(arg[t, j])
        t -= 1
    return np.asarray(sorted(chosen), dtype=np.int64), total


def optimal_shapes(
    lengths: ArrayLike,
    k: int,
    granularity: int = DEFAULT_GRANULARITY,
    *,
    cost: ShapeCost | None = None,
    fixed_cost: Callable[[np.ndarray], ArrayLike] | None = None,
) -> np.ndarray:
    """The exact set of at most ``k`` ``seq_align`` values (tokens) minimizing total padding.

    Each request is served by the smallest chosen shape ``s(i) >= align(len_i)``; the objective is
    Σ(s(i) − len_i). Only distinct aligned lengths are candidate shapes (lowering a shape to the
    largest aligned length it serves never costs more), and the largest aligned length is always
    chosen. Dynamic programming over the m distinct aligned lengths weighted by their counts,
    O(k·m²) vectorized with numpy.

    ``cost(seq_align, aligned_len) -> per-request cost`` (vectorized over equal-length int64
    arrays) replaces padding: the DP then minimizes Σ count·cost. It should be non-decreasing in
    ``seq_align`` for the candidate restriction above to be exact. ``fixed_cost(seq_align) ->
    per-shape cost`` (vectorized, >= 0; e.g. ``cost_model.compile_cost``) adds a cost for every
    shape chosen, so fewer than ``k`` shapes may be best. It too should be non-decreasing.

    Ties: fewest shapes, then the smaller set (compared from the largest shape down). Returns a
    sorted int64 array.
    """
    g = _check_granularity(granularity)
    arr = _as_lengths(lengths)
    k = _check_count_of_shapes(k, "k")
    values, counts, _ = _weighted_groups([arr], np.ones(1), g)
    return _dp_shapes(values, counts, k, cost, fixed_cost)[0]


def _as_length_sets(length_sets: Sequence[ArrayLike]) -> list[np.ndarray]:
    if isinstance(length_sets, np.ndarray) and length_sets.dtype != object:
        length_sets = [length_sets]  # a single bucket given as one array
    sets = list(length_sets)
    if not sets:
        raise InputError("must hold at least one bucket of lengths", field="length_sets")
    return [_as_lengths(s, name=f"length_sets[{b}]") for b, s in enumerate(sets)]


def joint_optimal_shapes(
    length_sets: Sequence[ArrayLike],
    max_shapes: int,
    granularity: int = DEFAULT_GRANULARITY,
    *,
    cost: ShapeCost | None = None,
    weights: ArrayLike | None = None,
    fixed_cost: Callable[[np.ndarray], ArrayLike] | None = None,
) -> np.ndarray:
    """One global set of at most ``max_shapes`` shapes (tokens) shared by several buckets.

    Every request of every bucket uses the smallest covering shape of the global set, so its cost
    depends only on its aligned length ``a`` and the set. The total
    Σ_b w_b Σ_{i∈b} cost(s(a_i), a_i) therefore regroups as Σ_a (Σ_b w_b·count_b(a))·cost(s(a), a):
    the single-bucket DP of ``optimal_shapes`` over the merged distinct aligned lengths with
    weighted counts is exact. ``weights`` (one per bucket, >= 0, default 1) weight the buckets;
    every bucket is covered whatever its weight (the global maximum is always chosen).
    ``fixed_cost``: a cost per shape of the set (see :func:`optimal_shapes`), paid once.
    """
    g = _check_granularity(granularity)
    sets = _as_length_sets(length_sets)
    k = _check_count_of_shapes(max_shapes, "max_shapes")
    if weights is None:
        w = np.ones(len(sets))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size != len(sets):
            raise InputError(
                f"has {w.size} entries for {len(sets)} buckets",
                field="weights",
            )
        if not np.isfinite(w).all() or (w < 0).any():
            raise InputError("bucket weights must be finite and >= 0", field="weights")
    values, counts, _ = _weighted_groups(sets, w, g)
    return _dp_shapes(values, counts, k, cost, fixed_cost)[0]


def per_bucket_optimal_shapes(
    length_sets: Sequence[ArrayLike],
    k_each: int | Sequence[int],
    granularity: int = DEFAULT_GRANULARITY,
    *,
    cost: ShapeCost | None = None,
) -> list[np.ndarray]:
    """``optimal_shapes`` of each bucket on its own (``k_each`` shapes each, an int or one per
    bucket). Their union may hold more distinct shapes than a global cap: compare with
    ``joint_optimal_shapes``."""
    g = _check_granularity(granularity)
    sets = _as_length_sets(length_sets)
    if isinstance(k_each, (int, np.integer)) and not isinstance(k_each, bool):
        ks = [int(k_each)] * len(sets)
    else:
        ks = list(k_each)  # type: ignore[arg-type]
        if len(ks) != len(sets):
            raise InputError(f"has {len(ks)} entries for {len(sets)} buckets", field="k_each")
    return [optimal_shapes(s, kb, g, cost=cost) for s, kb in zip(sets, ks, strict=True)]


# --------------------------------------------------------------------------------------------
# assignment and padding


def assign_shapes(
    lengths: ArrayLike,
    seq_aligns: ArrayLike,
    granularity: int = DEFAULT_GRANULARITY,
    request_ids: ArrayLike | None = None,
) -> np.ndarray:
    """The smallest shape of ``seq_aligns`` that is ``>= align(len)`` per request (tokens, int64).

    Raises InputError naming the first request (by ``request_ids``, else its index) whose aligned
    length exceeds every shape.
    """
    g = _check_granularity(granularity)
    if request_ids is not None and np.asarray(request_ids, dtype=object).size != np.size(lengths):
        raise InputError(
            f"request_ids has {np.asarray(request_ids, dtype=object).size} entries for "
            f"{np.size(lengths)} lengths",
            field="request_ids",
        )
    arr = _as_lengths(lengths, request_ids=request_ids)
    shapes = _as_shapes(seq_aligns)
    aligned = align(arr, g)
    idx = np.searchsorted(shapes, aligned, side="left")
    over = idx == shapes.size
    if over.any():
        pos = int(np.flatnonzero(over)[0])
        rid = _id_at(request_ids, pos)
        who = f"request_id '{rid}'" if rid is not None else f"request at index {pos}"
        raise InputError(
            f"{who}: aligned length {int(aligned[pos])} (length {int(arr[pos])}) exceeds the "
            f"largest shape {int(shapes[-1])}",
            request_id=rid,
        )
    return shapes[idx]


def padding_tokens(
    lengths: ArrayLike, seq_aligns: ArrayLike, granularity: int = DEFAULT_GRANULARITY
) -> int:
    """Total prompt padding Σ(s(i) − len_i) (tokens) with each request at its smallest covering
    shape of ``seq_aligns``."""
    arr = _as_lengths(lengths)
    return int((assign_shapes(arr, seq_aligns, granularity) - arr).sum())


def padding_vs_k_table(
    lengths: ArrayLike,
    ks: Iterable[int] = range(1, 17),
    *,
    families: Sequence[str] = GRID_FAMILIES,
    granularity: int = DEFAULT_GRANULARITY,
) -> pd.DataFrame:
    """Prompt padding of each grid family for each k (tokens).

    One row per (family, k): ``n_shapes`` (distinct shapes of :func:`shape_grid`),
    ``padding_tokens`` (:func:`padding_tokens` with each length at its smallest covering shape)
    and ``padding_fraction`` (padding / Σ lengths). ``power_of_two`` ignores k: it has one row, at
    ``k = n_shapes``. ``optimal`` is the exact least padding for at most k shapes.
    """
    import pandas as pd

    arr = np.asarray(lengths).reshape(-1)
    ks = sorted({check_scalar(k, "ks", int, min_val=1) for k in ks})
    if not ks:
        raise InputError("give at least one number of shapes", field="ks")
    unknown = [f for f in families if f not in GRID_FAMILIES]
    if unknown:
        raise InputError(
            f"unknown grid famil(y/ies) {unknown}; expected {', '.join(GRID_FAMILIES)}",
            field="families",
        )
    total = float(np.asarray(arr, dtype=np.float64).sum())
    rows = []
    for family in families:
        for k in ks[:1] if family == "power_of_two" else ks:
            shapes = shape_grid(family, arr, k, granularity)
            pad = padding_tokens(arr, shapes, granularity)
            rows.append(
                {
                    "family": family,
                    "k": len(shapes) if family == "power_of_two" else k,
                    "n_shapes": len(shapes),
                    "padding_tokens": pad,
                    "padding_fraction": pad / total,
                    "shapes": tuple(int(s) for s in shapes),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# generation-length buckets


def gen_buckets(gen_len: ArrayLike, bucket_size: int) -> np.ndarray:
    """Generation-length bucket per request: ``(gen_len − 1) // bucket_size`` (int64).

    Bucket ``b`` holds gen_len in ``(b·size, (b+1)·size]`` tokens.
    """
    size = _check_int(bucket_size, "bucket_size")
    arr = _as_lengths(gen_len, name="gen_len")
    return (arr - 1) // size


# --------------------------------------------------------------------------------------------
# hard bounds


def min_padding_tokens(prompt_len: ArrayLike, granularity: int = DEFAULT_GRANULARITY) -> int:
    """Prompt padding no plan can avoid: Σ(align(p) − p) tokens (gen padding can be zero)."""
    arr = _as_lengths(prompt_len, name="prompt_len")
    return int((align(arr, granularity) - arr).sum())


def padding_budget(
    prompt_len: ArrayLike,
    gen_len: ArrayLike,
    max_pad_ratio: float,
    granularity: int = DEFAULT_GRANULARITY,
) -> float:
    """Padding tokens left under a pad-ratio limit beyond the unavoidable minimum:
    ``max_pad_ratio·Σ(prompt + gen) − min_padding_tokens(prompt)``. Negative: the limit is
    infeasible for every plan."""
    p = _as_lengths(prompt_len, name="prompt_len")
    q = _as_lengths(gen_len, name="gen_len")
    if p.size != q.size:
        raise InputError(f"gen_len has {q.size} entries for {p.size} prompts", field="gen_len")
    ratio = float(max_pad_ratio)
    if not np.isfinite(ratio) or ratio < 0:
        raise InputError(f"must be finite and >= 0, got {max_pad_ratio!r}", field="max_pad_ratio")
    total = float(p.sum()) + float(q.sum())
    return ratio * total - min_padding_tokens(p, granularity)


def min_batches(n_requests: int, max_batch_size: int | None) -> int:
    """Fewest batches for ``n_requests``: ceil(n / max_batch_size); None (no limit) gives 1
    (0 for no requests)."""
    n = _check_int(n_requests, "n_requests", minimum=0)
    if n == 0:
        return 0
    if max_batch_size is None:
        return 1
    size = _check_int(max_batch_size, "max_batch_size")
    return -(-n // size)
