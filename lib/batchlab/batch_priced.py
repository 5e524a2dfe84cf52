"""Batch-priced caps: certified lower lines of a batch's decode over its size, for the exact model
and column generation on cost models whose batches are priced as a whole.

A :class:`~batchlab.cost.StepTimeCostModel` (``members_pay_caps`` False) prices a batch with caps
(S, G) and B members as ``overhead + batch_decode_cost(S, G, B)``: the weights are read once per
decode step for all B members, the KV cache per member, so the price per member falls with B and
"overhead + members × price at the caps" (the cap model of :mod:`batchlab.exact`) does not hold.

**Lines.** For every cap, :func:`batch_lines` finds lines ``α_l + β_l · B`` with
``α_l + β_l · B <= D(B)`` at every integer ``B`` in ``1 … bmax`` (``D`` the batch's decode cost,
or its decode latency in ms). Each line's slope is a secant of ``D`` between two anchor sizes and
its intercept the least ``D(B) − β_l B`` over the evaluated sizes, so the line is valid by
construction, with no assumption on the shape of ``D``; where ``D`` is convex the lines are
edges of its lower convex hull, and where ``D`` is affine in B (memory-bound decode) one line is
``D`` itself. For ``n`` batches with ``m`` members in all (``n <= m <= bmax · n``)::

    Σ_i D(B_i) >= Σ_i (α_l + β_l B_i) = α_l · n + β_l · m        for every line l

which is a linear constraint on an epigraph variable per cap (the exact model) and a price
``α_l`` per batch plus ``β_l`` per member (column generation: each line prices like a
members-pay-caps model, and the largest of the lines' reduced costs is a lower bound on the true
one).

Every size ``B <= EXACT_SIZES`` is evaluated; above it a geometric grid (ratio ``GRID_RATIO``)
is, and between two grid sizes ``b_k < B < b_{k+1}`` the bound uses ``D(B) >= D(b_k)``, which
holds for every step-time model here (a larger batch never takes less time: the same assumption
the member floor of :class:`~batchlab.cost.StepTimeCostModel` makes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from batchlab.colgen import CapColumnGeneration
from batchlab.cost import CostModel, StepTimeCostModel

__all__ = [
    "EXACT_SIZES",
    "GRID_RATIO",
    "BatchPricedColumnGeneration",
    "DecodeLines",
    "LinePricedColumnGeneration",
    "batch_lines",
    "decode_cost_floor",
    "line_dual_bound",
    "member_share_floor",
]

#: every batch size up to this is evaluated exactly; above it a geometric grid
EXACT_SIZES = 1024
#: ratio of consecutive grid sizes above EXACT_SIZES
GRID_RATIO = 1.01
#: anchor sizes (secant slopes) per cap: the lines of each cap, one more with slope 0
N_ANCHORS = 8
#: (exact, ratio) sizes of the floors (member_share_floor, decode_cost_floor): coarser, as
#: every planner path has sharper bounds and lower_bounds is asked for every bucket
FLOOR_GRID = (128, 1.02)
#: sizes evaluated per chunk (memory: chunk × caps floats)
_CHUNK = 32
#: dual-ascent passes of line_dual_bound
PASSES = 1


@dataclass(frozen=True, eq=False)
class DecodeLines:
    """Lines ``alpha[..., l] + beta[..., l] · B`` below a batch's decode (cost units or ms) at
    every integer size ``B`` in ``1 … bmax``, per cap (leading axes: the caps' shape);
    ``share[...]``: a lower bound on ``D(B) / B`` over those sizes (per member)."""

    alpha: np.ndarray
    beta: np.ndarray
    share: np.ndarray
    bmax: int

    def scaled(self, factor: float) -> DecodeLines:
        """The lines of ``factor × D`` (factor >= 0)."""
        f = float(factor)
        return DecodeLines(self.alpha * f, self.beta * f, self.share * f, self.bmax)

    def total(self, n_batches, n_members) -> np.ndarray:
        """Lower bound on ``Σ_i D(B_i)`` over ``n_batches`` batches holding ``n_members``
        members in all (each batch 1 … bmax members), per cap."""
        n = np.asarray(n_batches, dtype=np.float64)[..., None]
        m = np.asarray(n_members, dtype=np.float64)[..., None]
        return np.max(self.alpha * n + self.beta * m, axis=-1)


def _sizes(
    bmax: int, exact: int = EXACT_SIZES, ratio: float = GRID_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluated sizes and, for each, the largest size it stands for (its own up to ``exact``;
    above, on a geometric grid of ``ratio``, the next grid size − 1, by monotonicity)."""
    top = min(bmax, exact)
    sizes = [np.arange(1, top + 1, dtype=np.int64)]
    if bmax > top:
        k = np.arange(1, int(np.ceil(np.log(bmax / top) / np.log(ratio))) + 2)
        grid = np.unique(np.minimum(np.ceil(top * ratio**k), bmax).astype(np.int64))
        sizes.append(grid[grid > top])
    x = np.concatenate(sizes)
    reach = np.append(x[1:] - 1, bmax)
    return x, np.maximum(reach, x)


def _table(cm: CostModel, s: np.ndarray, g: np.ndarray, sizes: np.ndarray, kind: str):
    """Decode latency (kind "ms") or cost (kind "cost") at caps (s, g) for every size."""
    if kind == "ms" or isinstance(cm, StepTimeCostModel):
        ms = cm.batch_decode_ms_by_size(s, g, sizes)
        return ms if kind == "ms" else ms * cm.gpus
    return np.stack([cm.batch_decode_cost(s, g, b) for b in sizes.tolist()])


def _lines(
    cm: CostModel, s: np.ndarray, g: np.ndarray, bmax: int, kind: str, anchors=None, grid=None
) -> DecodeLines:
    x, reach = _sizes(bmax) if grid is None else _sizes(bmax, *grid)
    flat = anchors is None
    if flat:
        anchors = np.round(np.geomspace(1, x[-1], N_ANCHORS))
    anchors = np.unique(np.clip(np.asarray(anchors), 1, x[-1]).astype(np.int64))
    anchors = x[np.unique(np.minimum(np.searchsorted(x, anchors), len(x) - 1))]  # evaluated
    d_anchor = _table(cm, s, g, anchors, kind)  # (A, C)
    if len(anchors) > 1:
        slopes = np.diff(d_anchor, axis=0) / np.diff(anchors).astype(np.float64)[:, None]
        parts = [np.zeros((1, s.size)), slopes] if flat else [slopes]
        beta = np.concatenate(parts, axis=0).T  # (C, L)
    else:
        beta = np.zeros((s.size, 1))
    alpha = np.full(beta.shape, np.inf)
    share = np.full(s.size, np.inf)
    scale = np.zeros(s.size)
    for lo in range(0, len(x), _CHUNK):
        xs, rs = x[lo : lo + _CHUNK], reach[lo : lo + _CHUNK]
        d = _table(cm, s, g, xs, kind)  # (k, C)
        scale = np.maximum(scale, np.abs(d).max(axis=0))
        for end in (xs, rs) if (rs != xs).any() else (xs,):
            e = end.astype(np.float64)[:, None]
            # D(B) >= d at every B in [x, reach]: the line's least slack is at one end
            for line in range(beta.shape[1]):
                val = (d - e * beta[:, line]).min(axis=0)
                np.minimum(alpha[:, line], val, out=alpha[:, line])
            np.minimum(share, (d / e).min(axis=0), out=share)
    # rounding: lower every line by a hair of the decode's magnitude
    alpha -= 1e-9 * scale[:, None]
    share = share * (1 - 1e-9)
    shape = s.shape
    return DecodeLines(
        alpha.reshape(*shape, -1), beta.reshape(*shape, -1), share.reshape(shape), int(bmax)
    )


def batch_lines(
    cm: CostModel, S_max, G_max, bmax: int, tol: float = 1e-3, anchors=None, grid=None
) -> tuple[DecodeLines, DecodeLines]:
    """Lower lines of a batch's decode over its size B = 1 … ``bmax`` at caps
    ``(S_max, G_max)`` (arrays of one shape, tokens): ``(cost lines (cost units), latency lines
    (ms))``, the same slopes' lines for both. See the module docstring for why every line is
    valid; lines that lift no cap's envelope by more than ``tol`` (relative) are left out.
    ``anchors``: batch sizes whose consecutive secants give the slopes (default: geometric over
    1 … bmax, and a flat line), e.g. two sizes around a plan's batch size for one line per cap.
    ``grid``: (exact, ratio) of the evaluated sizes (default ``EXACT_SIZES``, ``GRID_RATIO``).
    """
    s, g = np.broadcast_arrays(np.asarray(S_max, np.int64), np.asarray(G_max, np.int64))
    s, g = s.reshape(-1), g.reshape(-1)
    bmax = max(1, int(bmax))
    ms = _lines(cm, s, g, bmax, "ms", anchors, grid)
    if isinstance(cm, StepTimeCostModel):  # cost = gpus × ms, exactly
        cost = ms.scaled(cm.gpus)
    else:
        cost = _lines(cm, s, g, bmax, "cost", anchors, grid)
    shape = np.shape(np.broadcast_arrays(np.asarray(S_max), np.asarray(G_max))[0])

    def shaped(lines: DecodeLines) -> DecodeLines:
        return DecodeLines(
            lines.alpha.reshape(*shape, -1),
            lines.beta.reshape(*shape, -1),
            lines.share.reshape(shape),
            lines.bmax,
        )

    keep = _needed_lines(cost, tol) if anchors is None else np.arange(cost.alpha.shape[1])
    cost = DecodeLines(cost.alpha[:, keep], cost.beta[:, keep], cost.share, cost.bmax)
    ms = DecodeLines(ms.alpha[:, keep], ms.beta[:, keep], ms.share, ms.bmax)
    return shaped(cost), shaped(ms)


def _needed_lines(lines: DecodeLines, tol: float) -> np.ndarray:
    """Indices of the lines that keep every cap's envelope within ``tol`` (relative) of the
    envelope of all lines, at probe sizes geometric over 1 … bmax (greedy: the line that is
    highest where the kept ones fall furthest short, until none does by more than tol). Fewer
    lines mean fewer pricings; any subset stays valid."""
    probes = np.unique(np.round(np.geomspace(1, lines.bmax, 4 * N_ANCHORS)))
    val = lines.alpha[:, None, :] + lines.beta[:, None, :] * probes[None, :, None]  # C, P, L
    full = val.max(axis=2)
    scale = np.maximum(np.abs(full), 1e-300)
    best_line = val.argmax(axis=2)
    kept: list[int] = []
    current = np.full(full.shape, -np.inf)
    for _ in range(val.shape[2]):
        short = (full - current) / scale
        worst = np.unravel_index(int(np.argmax(short)), short.shape)
        if short[worst] <= tol:
            break
        line = int(best_line[worst])
        if line in kept:
            break
        kept.append(line)
        current = np.maximum(current, val[:, :, line])
    return np.asarray(sorted(kept) or [0], dtype=np.int64)


def member_share_floor(cm: CostModel, S_max, G_max, bmax: int) -> np.ndarray:
    """A lower bound on each member's share of its batch's decode cost (cost units) when the
    batch has caps ``(S_max, G_max)`` and at most ``bmax`` members: ``min_B D(B) / B``
    (``cm.decode_cost``, the share at :data:`~batchlab.cost.MEMBER_FLOOR_BATCH`, where a
    model prices members at their caps)."""
    if cm.members_pay_caps:
        return cm.decode_cost(S_max, G_max)
    s, g = np.broadcast_arrays(np.asarray(S_max, np.int64), np.asarray(G_max, np.int64))
    key = s.astype(np.int64) * (int(g.max(initial=0)) + 1) + g
    uniq, inv = np.unique(key.reshape(-1), return_inverse=True)
    us, ug = uniq // (int(g.max(initial=0)) + 1), uniq % (int(g.max(initial=0)) + 1)
    x, reach = _sizes(max(1, int(bmax)), *FLOOR_GRID)
    share = np.full(us.size, np.inf)
    for lo in range(0, len(x), _CHUNK):
        d = _table(cm, us, ug, x[lo : lo + _CHUNK], "cost")
        np.minimum(share, (d / reach[lo : lo + _CHUNK, None]).min(axis=0), out=share)
    return (share * (1 - 1e-9))[inv].reshape(s.shape)


def _anchors(at_sizes, mbs: int) -> list[int]:
    """Anchor batch sizes: 1, ``mbs`` and a pair around each of ``at_sizes`` (÷ and × 1.25)."""
    out = {1, int(mbs)}
    for b in at_sizes:
        if b is not None and math.isfinite(b):
            out |= {max(1, math.floor(b / 1.25)), min(int(mbs), math.ceil(b * 1.25))}
    return sorted(out)


def _line_prices(cg: CapColumnGeneration, cost: DecodeLines, ms: DecodeLines, line: int):
    """A line's prices on the cap grid: per batch and per member, in cost units and in ms."""
    cm = cg.spec.problem.cost_model
    ss, _ = np.meshgrid(cg.S, cg.G, indexing="ij")
    member = cm.prefill_cost(ss) if cg.padded else np.zeros_like(ss)
    return (
        cm.overhead_cost + cost.alpha[..., line],
        member + cost.beta[..., line],
        cm.prefill_ms(ss) + cm.overhead_ms + ms.alpha[..., line],
        ms.beta[..., line],
    )


def _members_ok(cg: CapColumnGeneration, ci, cj, members) -> list[np.ndarray]:
    """Per batch, which members' latency at the batch's own size is within the p95 limit."""
    cm = cg.spec.problem.cost_model
    ci = np.asarray(ci, dtype=np.int64)
    cj = np.asarray(cj, dtype=np.int64)
    if ci.size == 0:
        return []
    s, g = cg.S[ci], cg.G[cj]
    size = np.asarray([float(c.sum()) for _, c in members])
    dec = cm.batch_decode_ms(s, g, size) + cm.overhead_ms
    pre_s = cm.prefill_ms(s)
    out = []
    for k, (types, _) in enumerate(members):
        own = np.full(len(types), pre_s[k]) if cg.padded else cg.pre[types]
        out.append(own + dec[k] <= cg.lim95 * (1 + 1e-12))
    return out


def _line_duals(cg: CapColumnGeneration, y: np.ndarray, weight: float, prices):
    """Overhead' and price' per cap under one line's prices (what ``_duals`` returns)."""
    fc, ac, fl, al = prices
    side = cg.side

    def d(name):
        return float(y[side[name]]) if name in side else 0.0

    ycost, yseq, ypad, yover = d("cost"), d("seq"), d("pad"), d("over")
    w = weight * (1.0 - ycost)
    fp = w * fc - yseq * fl
    ap = w * ac - yseq * al - ypad * cg.width
    return fp, ap, y[: cg.T], -yover


class LinePricedColumnGeneration(CapColumnGeneration):
    """Column generation on a relaxation of a batch-priced model: every batch with caps c and
    B members costs ``α(c) + β(c) · B`` (and takes ``α'(c) + β'(c) · B`` ms), one line per cap
    below the batch's decode at every size (:func:`batch_lines`, its slope a secant around
    ``at_size`` members, where the plans' batches are). That is a members-pay-caps model with a
    per-cap overhead, so pricing is exact and converges as fast as on ``static-graph``; its LP
    value and Lagrangian bounds are at most the batch-priced model's, hence certified. A
    column's members are tested against the p95 limit at the batch's true latency, pricing at
    the latency of a batch of one (a relaxation). ``grid_lines``: the lines of all the anchors
    (1, around ``at_size``, max_batch_size), for :func:`line_dual_bound`.
    """

    branch_rows = False  # (never branched on: see CapColumnGeneration.branch_rows)

    def __init__(self, spec, spike_ms: float = 0.0, at_size: float | None = None) -> None:
        p = spec.problem
        n = p.n_requests
        mbs = int(min(spec.max_batch_size or n, n))
        b = float(mbs if at_size is None else min(max(at_size, 1.0), mbs))
        anchors = _anchors([b], mbs)
        ss, gg = np.meshgrid(p.cap_s, p.cap_g, indexing="ij")
        self.grid_lines = batch_lines(p.cost_model, ss, gg, mbs, anchors=anchors)
        lo = max(1, math.floor(b / 1.25))
        cost, ms = self.grid_lines
        line = min(anchors.index(lo) if lo in anchors else 0, cost.alpha.shape[-1] - 1)
        self._lines = tuple(
            DecodeLines(x.alpha[..., line : line + 1], x.beta[..., line : line + 1], x.share, mbs)
            for x in (cost, ms)
        )
        self.at_size = b
        self._prices = None
        super().__init__(spec, spike_ms)
        one = np.ones(1)  # every request alone too (the least latency of every request)
        self.add_columns(self.ti, self.tj, [(np.array([t]), one) for t in range(self.T)])

    def _prices_on_grid(self):
        if self._prices is None:
            self._prices = _line_prices(self, *self._lines, 0)
        return self._prices

    def _column_terms(self, ci, cj, members):
        """Line cost and line latency; members within the p95 limit at the batch's true
        latency (so the master stays a relaxation and its plans meet the limit)."""
        fc, ac, fl, al = self._prices_on_grid()
        if self.lim95 is None:
            oks = [self._ok(i, j, types) for i, j, (types, _) in zip(ci, cj, members, strict=True)]
        else:
            oks = _members_ok(self, ci, cj, members)
        return [
            (
                float(fc[i, j] + counts.sum() * ac[i, j]),
                float(fl[i, j] + counts.sum() * al[i, j]),
                ok,
            )
            for i, j, (types, counts), ok in zip(ci, cj, members, oks, strict=True)
        ]

    def _duals(self, y: np.ndarray, weight: float = 1.0):
        return _line_duals(self, y, weight, self._prices_on_grid())

    def dual_ascent_prices(self, mu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The line's (per-member price, per-batch cost) on the problem's cap grid with the
        sequential multiplier ``mu`` (cost units per ms), for
        :func:`batchlab.exact.dual_ascent_values`."""
        fc, ac, fl, al = self._prices_on_grid()
        return ac + mu * al, fc + mu * fl


class BatchPricedColumnGeneration(CapColumnGeneration):
    """Column generation (:class:`~batchlab.colgen.CapColumnGeneration`) for a cost model whose
    batches are priced as a whole.

    Columns carry their exact cost ``overhead + batch_decode_cost(S, G, B)`` (+ ``B`` prefills
    at the shape under ``padded``), latency ``prefill_ms(S) + overhead_ms +
    batch_decode_ms(S, G, B)`` and the members over the p95 limit at their batch's own size, so
    the master LP is the set-partitioning relaxation of the plans themselves. Pricing runs once
    per line of :func:`batch_lines` (each line is a members-pay-caps price); a cap's reduced
    cost is at least the largest of its lines' (the p95 test at size 1 only lowers it further),
    so the Lagrangian bound of every round stays certified, and only columns whose exact reduced
    cost is negative are added.
    """

    branch_rows = False  # (never branched on: see CapColumnGeneration.branch_rows)

    def __init__(self, spec, spike_ms: float = 0.0) -> None:
        self._line: int | None = None
        self._states: list = []
        self._priced_at = None
        super().__init__(spec, spike_ms)
        cm = self.spec.problem.cost_model
        ss, gg = np.meshgrid(self.S, self.G, indexing="ij")
        cost, ms = batch_lines(cm, ss, gg, int(self.mbs))
        self.line_prices = [
            _line_prices(self, cost, ms, line) for line in range(cost.alpha.shape[-1])
        ]
        # every request alone too: a batch's latency grows with its size, so the plan of
        # singletons (the least latency of every request) is always a column combination
        one = np.ones(1)
        self.add_columns(self.ti, self.tj, [(np.array([t]), one) for t in range(self.T)])

    # -- exact columns ----------------------------------------------------------------------
    def _column_terms(self, ci, cj, members):
        cm = self.spec.problem.cost_model
        ci = np.asarray(ci, dtype=np.int64)
        cj = np.asarray(cj, dtype=np.int64)
        if ci.size == 0:
            return []
        s, g = self.S[ci], self.G[cj]
        size = np.asarray([float(c.sum()) for _, c in members])
        dec = cm.batch_decode_ms(s, g, size)
        cost = cm.overhead_cost + cm.batch_decode_cost(s, g, size)
        if self.padded:
            cost = cost + size * cm.prefill_cost(s)
        lat = cm.prefill_ms(s) + cm.overhead_ms + dec
        if self.lim95 is None:
            oks = [np.ones(len(types), dtype=bool) for types, _ in members]
        else:
            oks = _members_ok(self, ci, cj, members)
        return [(float(cost[k]), float(lat[k]), oks[k]) for k in range(len(members))]

    # -- pricing, once per line ---------------------------------------------------------------
    def _duals(self, y: np.ndarray, weight: float = 1.0):
        if self._line is None:
            return super()._duals(y, weight)
        return _line_duals(self, y, weight, self.line_prices[self._line])

    def price_caps(self, y: np.ndarray, weight: float = 1.0):
        """The largest over the lines of each cap's reduced cost (a lower bound on its best
        column's), and the caps' largest member value."""
        if self._line is not None:
            return super().price_caps(y, weight)
        self._states = []
        self._priced_at = y
        rc_all = vmax_all = None
        for line in range(len(self.line_prices)):
            self._line = line
            rc, vmax = super().price_caps(y, weight)
            self._states.append((line, rc, vmax, self._last, weight))
            rc_all = rc if rc_all is None else np.maximum(rc_all, rc)
            vmax_all = vmax if vmax_all is None else np.maximum(vmax_all, vmax)
        self._line = None
        return rc_all, vmax_all

    def bound_at(self, y, rc, vmax, weight: float = 1.0):
        """The best of the lines' Lagrangian bounds at duals y (each is certified)."""
        if self._line is not None:
            return super().bound_at(y, rc, vmax, weight)
        best = -np.inf
        for line, rc_l, vmax_l, last, _ in self._states:
            self._line, self._last = line, last
            best = max(best, super().bound_at(y, rc_l, vmax_l, weight))
        self._line = None
        return float(best)

    def exact_bound(self) -> float:
        if self.center is None:
            return self.best_bound
        for line in range(len(self.line_prices)):
            self._line = line
            super().exact_bound()
        self._line = None
        return self.best_bound

    def _patterns(self, caps: np.ndarray, ratios: bool = False):
        if ratios or self._line is not None:
            return super()._patterns(caps, ratios)
        best: dict = {}
        y = self._priced_at
        for line, _, _, last, weight in self._states:
            self._line, self._last = line, last
            ci, cj, members, _ = super()._patterns(caps)
            ci, cj, members = self._with_prefixes(ci, cj, members)
            rcs = self._true_reduced_costs(ci, cj, members, y, weight)
            for i, j, mem, r in zip(ci, cj, members, rcs, strict=True):
                if r < best.get((i, j), (np.inf,))[0]:
                    best[(i, j)] = (r, mem)
        self._line = None
        keep = [(k, v) for k, v in best.items() if v[0] < -1e-9 * max(1.0, abs(self.overhead))]
        keep.sort(key=lambda kv: kv[1][0])
        return (
            [k[0] for k, _ in keep],
            [k[1] for k, _ in keep],
            [v[1] for _, v in keep],
            np.zeros(0),
        )

    @staticmethod
    def _with_prefixes(ci, cj, members):
        """Each pattern (members best first) and its prefixes of 1, 2, 4, … units: a smaller
        batch is faster (p95) and a line's price may misjudge the best size."""
        oi, oj, om = [], [], []
        for i, j, (types, counts) in zip(ci, cj, members, strict=True):
            total = int(round(float(counts.sum())))
            sizes = sorted({total, *(1 << k for k in range(max(1, total).bit_length()))})
            cum = np.cumsum(counts)
            for b in sizes:
                if b > total:
                    break
                k = int(np.searchsorted(cum, b - 1e-9)) + 1  # types needed for b units
                c = counts[:k].copy()
                c[-1] -= cum[k - 1] - b
                oi.append(i)
                oj.append(j)
                om.append((types[:k], c))
        return oi, oj, om

    def _true_reduced_costs(self, ci, cj, members, y, weight) -> list[float]:
        """Exact reduced cost of each column at duals y: ``w · cost − y · column``."""
        terms = self._column_terms(ci, cj, members)
        side = self.side

        def d(name):
            return float(y[side[name]]) if name in side else 0.0

        ycost, yseq, ypad, yover = d("cost"), d("seq"), d("pad"), d("over")
        w = weight * (1.0 - ycost)
        out = []
        for i, j, (types, counts), (cost, lat, ok) in zip(ci, cj, members, terms, strict=True):
            pad = float(counts.sum()) * float(self.width[i, j])
            over = float(counts[~ok].sum())
            value = float(y[types] @ counts)
            out.append(w * cost - yseq * lat - ypad * pad - yover * over - value)
        return out


#: the most caps (distinct aligned lengths × distinct gen_lens) :func:`decode_cost_floor`
#: evaluates lines on; above it only the per-member share floor is used
FLOOR_CAP_LIMIT = 40_000


def decode_cost_floor(cm: CostModel, aligned, gen, bmax: int) -> float:
    """A lower bound on the total decode cost (cost units) of every plan of these requests
    (aligned prompt lengths and gen_lens, tokens) with at most ``bmax`` members per batch.

    For one line family l, a batch with caps c and B members costs at least
    ``α_l(c) + β_l(c) · B``. Every member pays at least the least ``β_l`` over the caps that
    dominate it, and with the batches sorted by their G cap the k-th holds a request of gen_len
    rank ``(k − 1) · bmax + 1`` or later, so its G cap is at least that gen_len and its
    intercept at least the least ``α_l`` over caps with such a G; there are at least
    ``⌈n / bmax⌉`` batches. The best family's sum is the bound; it is also never below the
    members' share floors (:func:`member_share_floor`)."""
    a = np.asarray(aligned, dtype=np.int64)
    g = np.asarray(gen, dtype=np.int64)
    n = a.size
    bmax = max(1, min(int(bmax), n))
    floor = float(member_share_floor(cm, a, g, bmax).sum())
    if cm.members_pay_caps:
        return floor
    cap_s, cap_g = np.unique(a), np.unique(g)
    if cap_s.size * cap_g.size > FLOOR_CAP_LIMIT:
        return floor
    ss, gg = np.meshgrid(cap_s, cap_g, indexing="ij")
    cost, _ = batch_lines(cm, ss, gg, bmax, grid=FLOOR_GRID)
    # suffix minima over dominating caps (larger S and G)
    alpha_g = np.minimum.accumulate(cost.alpha.min(axis=0)[::-1], axis=0)[::-1]  # (nG, L)
    beta = np.minimum.accumulate(cost.beta[::-1], axis=0)[::-1]
    beta = np.minimum.accumulate(beta[:, ::-1], axis=1)[:, ::-1]  # (nS, nG, L)
    ia, ig = np.searchsorted(cap_s, a), np.searchsorted(cap_g, g)
    members = beta[ia, ig].sum(axis=0)  # (L,)
    k = math.ceil(n / bmax)
    ranks = np.sort(g)[::-1][::bmax][:k]
    intercepts = alpha_g[np.searchsorted(cap_g, ranks)].sum(axis=0)
    negative = np.minimum(cost.alpha.min(axis=(0, 1)), 0.0) * (n - k)  # more batches, α < 0
    best = float(np.max(members + intercepts + negative))
    return max(floor, best * (1 - 1e-9))


def line_dual_bound(
    spec,
    mu: float,
    at_sizes,
    thetas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    *,
    with_duals: bool = False,
    lines: tuple[DecodeLines, DecodeLines] | None = None,
):
    """A certified lower bound on the cost of every plan of one bucket (cost units) meeting its
    sequential-time limit, from dual ascent (:func:`batchlab.exact.dual_ascent_values`) on
    line-priced relaxations of a batch-priced model.

    ``spec``: the bucket's :class:`~batchlab.exact.BucketSpec`. For each line (slopes: secants
    around each of ``at_sizes`` members, :func:`batch_lines`) a batch with caps c and B members
    costs at least ``A0(c) + A1(c) · B`` in the Lagrangian objective (cost + μ × latency), and
    where ``A0 >= 0`` and ``B <= max_batch_size`` also at least ``(1 − θ) A0 + (A1 + θ A0 /
    max_batch_size) · B`` for θ in ``thetas``: each is a members-pay-caps price with a per-cap
    overhead, so dual ascent's value, plus the bucket's constant, minus ``μ ·
    max_sequential_ms``, bounds every plan that meets the limit. The best over lines, θ and
    μ ∈ {0, ``mu``} is returned; ``with_duals``: also its π per type and its μ (a start for
    column generation on the same line). ``lines``: (cost, ms) lines on the problem's cap grid
    already computed (e.g. :attr:`LinePricedColumnGeneration.grid_lines`)."""
    from batchlab.exact import dual_ascent_values

    p = spec.problem
    cm = p.cost_model
    n = p.n_requests
    mbs = int(min(spec.max_batch_size or n, n))
    ss, gg = np.meshgrid(p.cap_s, p.cap_g, indexing="ij")
    if lines is None:
        lines = batch_lines(cm, ss, gg, mbs, anchors=_anchors(at_sizes, mbs))
    cost, ms = lines
    member = cm.prefill_cost(ss) if cm.padded else np.zeros(ss.shape)
    pre = cm.prefill_ms(ss) + cm.overhead_ms
    const = p.const_cost + (0.0 if cm.padded else spec.compile_cost)
    limit = spec.max_sequential_ms
    mus = [0.0] if limit is None or mu <= 0 else [0.0, float(mu)]
    top = int(np.searchsorted(p.cap_s, p.type_a, side="left").max())
    counts = p.type_count.astype(np.float64)
    best, best_pi, best_mu = -math.inf, np.zeros(len(counts)), 0.0
    for line in range(cost.alpha.shape[-1]):
        for m in mus:
            a0 = cm.overhead_cost + cost.alpha[..., line] + m * (pre + ms.alpha[..., line])
            a1 = member + cost.beta[..., line] + m * ms.beta[..., line]
            for theta in thetas if mbs < n else (0.0,):
                th = np.where(a0 >= 0, theta, 0.0)
                price = a1 + th * a0 / mbs
                fixed = (1 - th) * a0
                if top + 1 < len(p.cap_s):  # caps above the longest prompt: their least
                    price[top] = price[top:].min(axis=0)
                    fixed[top] = fixed[top:].min(axis=0)
                pi, _ = dual_ascent_values(p, m, passes=PASSES, prices=(price, fixed))
                value = float(pi @ counts) + const - (m * limit if m > 0 else 0.0)
                if value > best:
                    best, best_pi, best_mu = value, pi, m
    if with_duals:
        return best * (1 - 1e-9), best_pi, best_mu
    return best * (1 - 1e-9)
