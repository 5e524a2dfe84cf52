"""Order statistics of samples: the nearest-rank percentile every module reports.

The nearest-rank pN of ``n`` values is the ``⌈n·N/100⌉``-th smallest (the first for N = 0),
computed with exact rational arithmetic, so p95 of 20 latencies is the 19th smallest, never the
20th by a rounding error. NaN values are not counted (a one-token request has no time per
output token); with no value left a percentile is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar

__all__ = ["nearest_rank", "nearest_rank_positions"]


def nearest_rank_positions(n: int, percents: Sequence[float]) -> np.ndarray:
    """The 0-based positions in ``n`` sorted values of the nearest-rank ``percents``
    (``max(1, ⌈n·p/100⌉) − 1``, exact for decimal percents such as 99.9)."""
    out = np.empty(len(percents), dtype=np.int64)
    for i, p in enumerate(percents):
        p = check_scalar(p, "percents", float, min_val=0, max_val=100)
        rank = math.ceil(Fraction(n) * Fraction(repr(p)) / 100)
        out[i] = max(1, rank) - 1
    return out


def nearest_rank(values: ArrayLike, percents: float | Sequence[float]) -> float | tuple[float, ...]:
    """Nearest-rank percentiles of ``values`` (the NaNs left out).

    ``percents`` in [0, 100]: one number gives a float, a sequence a tuple of floats in the
    same order. Several percents cost one partial sort.
    """
    single = not isinstance(percents, Sequence | np.ndarray)
    wanted = [percents] if single else list(percents)  # type: ignore[list-item]
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(arr).any():
        arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        pos = nearest_rank_positions(1, wanted)  # checks the percents all the same
        out = tuple(math.nan for _ in pos)
    else:
        pos = nearest_rank_positions(arr.size, wanted)
        part = np.partition(arr, sorted(set(pos.tolist())))  # (np.unique loads numpy.ma)
        out = tuple(float(part[k]) for k in pos)
    return out[0] if single else out
