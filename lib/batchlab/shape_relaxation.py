"""The LP relaxation of ``padded-graph`` planning over shape sets and batches together, solved by
column generation: a lower bound that sees the shape cap and the sequential limit at once.

Why. Under ``padded-graph`` a plan chooses a set Y of at most ``max_shapes`` shapes and batches
each request at a shape of Y that covers its aligned prompt. The Lagrangian shape-cap bound
(:func:`batchlab.exact.shape_cap_bound`) prices every shape alone and lets a DP choose Y; under a
binding sequential limit it is weak (Azure code, 100 requests, cap 8, a limit of 0.6x the free
plan's sequential time: 4.6 % below a plan that is itself 0.03 % above the LP of its own shapes),
because a shape's duals are shared with every shorter request, not with the ones Y gives it.

The model (vocabulary of :mod:`batchlab.exact`; candidate shapes ``S_0 < ... < S_{n-1}``, the
distinct aligned lengths). A shape set is a *path* of edges ``(i -> j)``, 0 <= i < j <= n: the
edge serves the types whose aligned length is in ``(S_{i-1}, S_{j-1}]`` at shape ``S_{j-1}`` and
costs that shape's compile. The LP, with f (edges), z (shapes used), m (a type moved up one
shape) and x (batches: a cap ``(S_k, G)`` and its members, as in :mod:`batchlab.colgen`)::

    min  Σ_e compile_e f_e + Σ_P cost_P x_P
    s.t. out(0) = 1, in(v) = out(v) for 0 < v < n, Σ_e f_e <= max_shapes           (a path)
         z_k = Σ_{e ends at S_k} f_e                                             (shape k used)
         Σ_{P at S_k} n_tP x_P + m_{t,k} − m_{t,k−1} >= c_t Σ_{e ends at S_k, holds t} f_e
         Σ_P lat_P x_P <= max_sequential_ms − spike                     (for each bucket)
         Σ_P |P| (S_P + G_P) x_P <= max padded tokens                  (for each bucket)
         f, z, m, x >= 0

With several buckets each compiles the shapes its own batches use: bucket b has w_{b,k} <=
z_k at the compile of S_k (the edges then cost nothing) and ``Σ_{P of b at S_k} n_tP x_P <=
c_t w_{b,k}``. Every plan is a solution (its shapes are the path; a request served above its
own segment's shape moves up by m), so the LP value is at most every plan's cost; limits other
than the sequential time, the padded tokens (a pad-ratio limit) and the batch size are left out
(a relaxation stays valid without them).

**The bound is valid at any round** (Lagrangian duality, as in :mod:`batchlab.colgen`): at the
restricted master's optimal duals every column in it has a reduced cost >= 0, and every plan's
batches hold each bucket's N requests, so ``z_RMP + Σ_b N_b · min(0, min_P rc_P / |P|)`` is at most
the cost of every plan. Pricing computes the best batch of every cap of every shape at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from batchlab.exact import CapProblem, highs_solver, run_highs

__all__ = ["ShapeRelaxation", "shape_relaxation_size", "shape_set_bound"]


@dataclass(frozen=True)
class ShapeRelaxation:
    """What :func:`shape_set_bound` reached: ``bound`` (a lower bound on the total cost of every
    plan of the buckets meeting their sequential and pad-ratio limits, cost units; -inf when
    none was found), ``lp_value`` (the restricted master's last value), ``status``
    (``"optimal"``: the LP was solved; ``"stopped"``: the gap target, the round budget or the
    deadline came first; ``"failed"``: HiGHS did not solve the master, the bound is the best of
    the rounds before; ``"not run"``), ``rounds`` and ``columns`` (batches generated)."""

    bound: float
    lp_value: float
    status: str
    rounds: int
    columns: int


def shape_relaxation_size(problems: Sequence[CapProblem]) -> int:
    """The relaxation's entries before any batch is generated: cover entries of the edges
    (``Σ_t (k_t + 1)(n − k_t)`` for a type at shape index ``k_t`` of ``n``), a measure of its
    set-up work and memory."""
    total = 0
    for p in problems:
        n = len(p.cap_s)
        k = np.searchsorted(p.cap_s, p.type_a)
        total += int(((k + 1) * (n - k)).sum())
    return total


#: columns added per shape and round: the caps of least reduced cost (with the smoothing below,
#: one a shape took 2.6 s and 64 rounds to certify 100 Azure code requests within 0.01 %, two
#: 3.7 s and 54, but two did better under a sequential limit; without smoothing the same case did
#: not converge in 5 s)
_PER_SHAPE = 2
#: pricing at this share of the best bound's duals plus the rest of the master's (Wentges)
_SMOOTHING = 0.5


class _Master:
    """The restricted master in HiGHS, with the row index of every (bucket, type, shape)."""

    def __init__(self, problems, seq_rhs, mbs, max_shapes, compile_cost, pad_rhs) -> None:
        import highspy

        self.highspy = highspy
        self.problems = problems
        n = len(problems[0].cap_s)
        self.n = n
        self.S = problems[0].cap_s.astype(np.float64)
        self.mbs = mbs
        # units of the master (HiGHS works far better near 1): costs in the mean own price of a
        # request, each limit row (sequential time, padded tokens) in its right-hand side
        own = np.concatenate([pr.price(pr.type_a, pr.type_g) for pr in problems])
        self.cu = float(max(np.mean(own), 1e-12))
        self.lu = [1.0 if r is None else float(max(abs(r), 1e-12)) for r in seq_rhs]
        self.pu = [1.0 if r is None else float(max(abs(r), 1e-12)) for r in pad_rhs]
        rows_lo: list[float] = []
        rows_hi: list[float] = []

        def add_rows(count: int, lo: float, hi: float) -> np.ndarray:
            start = len(rows_lo)
            rows_lo.extend([lo] * count)
            rows_hi.extend([hi] * count)
            return np.arange(start, start + count)

        inf = math.inf
        self.ia, self.ig, self.cov = [], [], []
        for p in problems:
            ia, ig = p.type_cap_index()
            self.ia.append(ia)
            self.ig.append(ig)
            ok = np.arange(n)[:, None] >= ia[None, :]  # (shape, type): the type fits the shape
            cov = np.full(ok.shape, -1, dtype=np.int64)
            cov[ok] = add_rows(int(ok.sum()), 0.0, inf)
            self.cov.append(cov)
        # several buckets: each compiles every shape its batches use (its own w_{b,k}, paid at
        # the shape's compile, at most z_k), and a batch covers a type at a shape only within
        # c_t w_{b,k}; one bucket: the edges pay the compile
        self.per_bucket = len(problems) > 1
        self.link = []
        for cov in self.cov:
            link = np.full(cov.shape, -1, dtype=np.int64)
            if self.per_bucket:
                link[cov >= 0] = add_rows(int((cov >= 0).sum()), -inf, 0.0)
            self.link.append(link)
        wz = [add_rows(n, -inf, 0.0) for _ in problems] if self.per_bucket else []
        flow = add_rows(n, 0.0, 0.0)
        rows_lo[flow[0]] = rows_hi[flow[0]] = 1.0
        zrow = add_rows(n, 0.0, 0.0)
        count_row = int(add_rows(1, -inf, float(max_shapes))[0])

        def limit_rows(rhs: list) -> list[int | None]:
            """One "<=" row per bucket with a limit, its right-hand side scaled to ±1."""
            return [
                None if r is None else int(add_rows(1, -inf, 1.0 if r > 0 else -1.0)[0])
                for r in rhs
            ]

        self.seq = limit_rows(seq_rhs)
        self.pad = limit_rows(pad_rhs)
        cols_cost: list[np.ndarray] = []
        cols_hi: list[np.ndarray] = []
        entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (col, row, value)
        n_cols = 0

        usage: list[np.ndarray] = []  # the most a plan uses of each column (NaN: edges)

        def add_cols(cost, hi, col_rows, col_vals, col_of, use) -> int:
            nonlocal n_cols
            cols_cost.append(np.asarray(cost, np.float64))
            usage.append(np.broadcast_to(np.asarray(use, np.float64), (len(cols_cost[-1]),)))
            cols_hi.append(np.asarray(hi, np.float64))
            entries.append(
                (np.asarray(col_of) + n_cols, np.asarray(col_rows), np.asarray(col_vals))
            )
            start = n_cols
            n_cols += len(cols_cost[-1])
            return start

        # z_k, the share of plans that declare S_k
        zr, zv, zc = [zrow], [np.ones(n)], [np.arange(n)]
        for rows in wz:  # w_{b,k} − z_k <= 0
            zr.append(rows)
            zv.append(-np.ones(n))
            zc.append(np.arange(n))
        add_cols(
            np.zeros(n), np.ones(n), np.concatenate(zr), np.concatenate(zv), np.concatenate(zc),
            1.0,
        )  # fmt: skip
        compile_s = np.asarray(compile_cost(self.S), dtype=np.float64) / self.cu
        for p, link, rows in zip(problems, self.link, wz, strict=False):
            # w_{b,k}: +1 on its w − z row, −c_t on the bucket's link rows of the shape
            k, t = np.nonzero(link >= 0)
            add_cols(
                compile_s, np.ones(n), np.concatenate([rows, link[k, t]]),
                np.concatenate([np.ones(n), -p.type_count[t].astype(np.float64)]),
                np.concatenate([np.arange(n), k]), 1.0,
            )  # fmt: skip
        # m_{t,k}: a type moved from shape k to k + 1
        for p, cov in zip(problems, self.cov, strict=True):
            k, t = np.nonzero(cov[:-1] >= 0)
            j = np.arange(len(k))
            rows = np.concatenate([cov[k, t], cov[k + 1, t]])
            vals = np.concatenate([np.ones(len(k)), -np.ones(len(k))])
            add_cols(
                np.zeros(len(k)), np.full(len(k), inf), rows, vals, np.concatenate([j, j]),
                p.type_count[t],
            )  # fmt: skip
        # edges (i -> j), 0 <= i < j <= n, at shape j − 1
        ei, ej = np.nonzero(np.triu(np.ones((n + 1, n + 1), dtype=bool), 1))
        shape = ej - 1
        ne = len(ei)
        e = np.arange(ne)
        rows = [flow[ei], count_row + 0 * e, zrow[shape]]
        vals = [np.ones(ne), np.ones(ne), -np.ones(ne)]
        cols = [e, e, e]
        inner = ej < n
        rows.append(flow[ej[inner]])
        vals.append(-np.ones(int(inner.sum())))
        cols.append(e[inner])
        # the types an edge holds, through d_{l,k} = Σ_{i <= l} f_{i -> k+1} (the flow into shape
        # k from a node at or below level l: the share of the plans whose segment ending at S_k
        # holds the aligned length S_l), one row d_{l,k} − d_{l−1,k} − f_{l -> k+1} = 0 each, so
        # that an edge has one entry there and each type one entry per shape
        dl, dk = np.nonzero(np.tril(np.ones((n, n), dtype=bool)).T)  # l <= k
        drow = np.full((n, n), -1, dtype=np.int64)
        drow[dl, dk] = add_rows(len(dl), 0.0, 0.0)
        rows.append(drow[ei, shape])
        vals.append(-np.ones(ne))
        cols.append(e)
        compile_e = np.asarray(compile_cost(self.S[shape]), dtype=np.float64) / self.cu
        if self.per_bucket:
            compile_e = np.zeros(ne)  # paid by the buckets' w
        self.edge_start = add_cols(
            compile_e, np.full(ne, inf), np.concatenate(rows), np.concatenate(vals),
            np.concatenate(cols), np.nan,
        )  # fmt: skip
        self.ei, self.ej, self.max_shapes = ei, ej, int(max_shapes)
        nd = len(dl)
        j = np.arange(nd)
        at = np.full((n, n), -1, dtype=np.int64)  # the column of d_{l,k}
        at[dl, dk] = j
        rows, vals, cols = [drow[dl, dk]], [np.ones(nd)], [j]
        up = dl + 1 <= dk
        rows.append(drow[dl[up] + 1, dk[up]])
        vals.append(-np.ones(int(up.sum())))
        cols.append(j[up])
        for p, cov, ia in zip(problems, self.cov, self.ia, strict=True):
            # type t's demand at S_k: c_t d_{ia_t, k}
            k, t = np.nonzero(cov >= 0)
            rows.append(cov[k, t])
            vals.append(-p.type_count[t].astype(np.float64))
            cols.append(at[ia[t], k])
        add_cols(
            np.zeros(nd), np.full(nd, inf), np.concatenate(rows), np.concatenate(vals),
            np.concatenate(cols), 1.0,
        )  # fmt: skip
        # an artificial slack of each limit row (dear: it only keeps the master feasible)
        for p, r in zip([*problems, *problems], [*self.seq, *self.pad], strict=True):
            if r is not None:  # per unit of the row: 100x every request alone at the top
                big = 1e2 * float(p.price(p.cap_s[-1], p.cap_g[-1])) * p.n_requests / self.cu
                add_cols([big], [inf], [r], [-1.0], [0], 0.0)
        col, row, val = (np.concatenate(x) for x in zip(*entries, strict=True))
        order = np.lexsort((row, col))
        col, row, val = col[order], row[order], val[order]
        # what the Lagrangian bound needs of the columns built here (batches come later)
        self.static = (col, row, val, np.concatenate(cols_cost), np.concatenate(usage))
        h, hinf = highs_solver()
        h.setOptionValue("simplex_strategy", 4)  # primal: columns come in, the basis stays feasible
        self.h, self.hinf = h, hinf
        lp = highspy.HighsLp()
        lp.num_col_ = n_cols
        lp.num_row_ = len(rows_lo)
        lp.col_cost_ = np.concatenate(cols_cost)
        lp.col_lower_ = np.zeros(n_cols)
        lp.col_upper_ = np.minimum(np.concatenate(cols_hi), hinf)
        lo, hi = np.asarray(rows_lo), np.asarray(rows_hi)
        lp.row_lower_ = np.where(np.isinf(lo), -hinf, lo)
        lp.row_upper_ = np.where(np.isinf(hi), hinf, hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.searchsorted(col, np.arange(n_cols + 1)).astype(np.int32)
        lp.a_matrix_.index_ = row.astype(np.int32)
        lp.a_matrix_.value_ = val.astype(np.float64)
        h.passModel(lp)
        self.n_batches = 0
        self.rhs = np.where(np.isfinite(lo), lo, np.where(np.isfinite(hi), hi, 0.0))
        # the sign a dual of each row takes: >= 0 on ">=" rows, <= 0 on "<=" rows, free on "="
        self.lower_only = np.isfinite(lo) & ~np.isfinite(hi)
        self.upper_only = ~np.isfinite(lo) & np.isfinite(hi)

    def clean(self, y: np.ndarray) -> np.ndarray:
        """Duals with the signs of their rows."""
        y = y.copy()
        y[self.lower_only] = np.maximum(y[self.lower_only], 0.0)
        y[self.upper_only] = np.minimum(y[self.upper_only], 0.0)
        return y

    def lagrangian(self, y: np.ndarray, least: float) -> float:
        """The Lagrangian bound at duals y of the right signs (the master's units): y·b, plus
        the least every plan's use of the columns built here can add at their reduced costs
        (a path of at most max_shapes edges, each other column within its most use), plus
        ``least`` (the batches': Σ_b N_b min(0, least reduced cost per member))."""
        col, row, val, cost, use = self.static
        rc = cost - np.bincount(col, weights=val * y[row], minlength=len(cost))
        other = np.isfinite(use)
        value = float(y @ self.rhs) + least
        value += float((np.minimum(rc[other], 0.0) * use[other]).sum())
        n = self.n
        edge = np.full((n + 1, n + 1), np.inf)
        edge[self.ei, self.ej] = rc[self.edge_start : self.edge_start + len(self.ei)]
        reach = np.full(n + 1, np.inf)
        reach[0] = 0.0
        best = np.inf
        for _ in range(self.max_shapes):  # paths of 1, 2, ... edges
            reach = (reach[:, None] + edge).min(axis=0)
            best = min(best, float(reach[n]))
        return value + best

    def add_batches(self, b: int, k: np.ndarray, j: np.ndarray, members: list[dict]) -> None:
        """Batches of bucket b at shapes ``S[k]`` and G caps ``cap_g[j]``, members {type: n}."""
        p = self.problems[b]
        cm = p.cost_model
        cost, starts, index, value = [], [0], [], []
        for kk, jj, mem in zip(k.tolist(), j.tolist(), members, strict=True):
            s, g = p.cap_s[kk], p.cap_g[jj]
            t = np.fromiter(mem.keys(), dtype=np.int64)
            c = np.fromiter(mem.values(), dtype=np.float64)
            cost.append((float(cm.overhead_cost) + float(c.sum()) * float(p.price(s, g))) / self.cu)
            rows = [self.cov[b][kk, t]]
            vals = [c]
            if self.per_bucket:
                rows.append(self.link[b][kk, t])
                vals.append(c)
            if self.seq[b] is not None:
                rows.append([self.seq[b]])
                vals.append([float(p.batch_ms(s, g)) / self.lu[b]])
            if self.pad[b] is not None:  # the members' padded tokens, S + G each
                rows.append([self.pad[b]])
                vals.append([float(c.sum()) * float(s + g) / self.pu[b]])
            r = np.concatenate(rows)
            index.append(r)
            value.append(np.concatenate(vals))
            starts.append(starts[-1] + len(r))
        m = len(cost)
        self.h.addCols(
            m, np.asarray(cost), np.zeros(m), np.full(m, self.hinf), starts[-1],
            np.asarray(starts[:-1], dtype=np.int32), np.concatenate(index).astype(np.int32),
            np.concatenate(value),
        )  # fmt: skip
        self.n_batches += m

    def solve(self) -> tuple[float, np.ndarray] | None:
        """The master's value (cost units) and its row duals (the master's units), or None."""
        optimal = self.highspy.HighsModelStatus.kOptimal
        run_highs(self.h)
        if self.h.getModelStatus() != optimal:  # a failed warm start: once more from scratch
            self.h.clearSolver()
            run_highs(self.h)
            if self.h.getModelStatus() != optimal:
                return None
        y = np.asarray(self.h.getSolution().row_dual, dtype=np.float64)
        return float(self.h.getInfo().objective_function_value) * self.cu, y


def _price(master: _Master, b: int, y: np.ndarray):
    """Every cap's best batch of bucket b at the duals y: (reduced cost, least reduced cost
    per member, members) per (shape, G cap), the members as (sorted types, copies) per shape."""
    p = master.problems[b]
    cm = p.cost_model
    ia, ig = master.ia[b], master.ig[b]
    count = p.type_count.astype(np.float64)
    mbs = float(master.mbs[b])
    mu = -min(0.0, float(y[master.seq[b]])) if master.seq[b] is not None else 0.0
    rho = -min(0.0, float(y[master.pad[b]])) if master.pad[b] is not None else 0.0
    n, J = master.n, len(p.cap_g)
    rc = np.full((n, J), np.inf)
    ratio = np.full((n, J), np.inf)
    picks = []
    for k in range(n):
        t = np.flatnonzero(ia <= k)
        if t.size == 0:  # no type of this bucket fits the shape: no batch there
            picks.append((t, np.zeros((J, 0))))
            continue
        w = y[master.cov[b][k, t]]
        if master.per_bucket:
            w = w + y[master.link[b][k, t]]
        order = np.argsort(-w, kind="stable")
        t, w = t[order], w[order]
        price = p.price(p.cap_s[k], p.cap_g) / master.cu  # (J,), the master's units
        price = price + rho * (p.cap_s[k] + p.cap_g) / master.pu[b]  # a member's padded tokens
        sigma = (
            float(cm.overhead_cost) / master.cu
            + mu * p.batch_ms(p.cap_s[k], p.cap_g) / master.lu[b]
        )
        value = w[None, :] - price[:, None]  # (J, types)
        usable = (ig[t][None, :] <= np.arange(J)[:, None]) & (value > 0)
        copies = np.where(usable, np.minimum(count[t], mbs)[None, :], 0.0)
        cum = np.cumsum(copies, axis=1)
        taken = np.clip(np.minimum(cum, mbs) - (cum - copies), 0.0, None)
        gain_cum = np.cumsum(taken * np.where(usable, value, 0.0), axis=1)
        size_cum = np.cumsum(taken, axis=1)
        rc[k] = sigma - gain_cum[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(size_cum > 0, (sigma[:, None] - gain_cum) / size_cum, np.inf)
        ratio[k] = r.min(axis=1)
        picks.append((t, taken))
    return rc, ratio, picks


def shape_set_bound(
    problems: Sequence[CapProblem],
    max_sequential_ms: Sequence[float | None],
    max_batch_size: Sequence[int | None],
    max_shapes: int,
    compile_cost: Callable[[np.ndarray], np.ndarray],
    seeds: Sequence[Sequence[tuple[int, int, dict]]] = (),
    *,
    upper_bound: float = math.inf,
    max_padded_tokens: Sequence[float | None] | None = None,
    stop_gap: float = 1e-4,
    max_rounds: int = 200,
    deadline: float = math.inf,
) -> ShapeRelaxation:
    """A lower bound on the total cost of every ``padded-graph`` plan of the buckets (one
    :class:`~batchlab.exact.CapProblem` each, all over the same candidate shapes ``cap_s``) with
    at most ``max_shapes`` shapes, each bucket within its ``max_sequential_ms`` (already less
    the compile spike; None: no limit) and ``max_batch_size`` (None: no limit). Each shape's
    compile (``compile_cost(seq_align)``, cost units) is counted once per bucket whose batches
    use it (once in all for a single bucket). ``seeds``: per bucket,
    known batches ``(S cap, G cap, {type: count})`` to start from. ``max_padded_tokens``: per
    bucket, the most ``Σ members × (S + G)`` its batches may hold (a pad-ratio limit: the
    ratio × the useful tokens + the useful tokens; None: no limit). Stops when the bound is within
    ``stop_gap`` of ``upper_bound``, after ``max_rounds`` rounds of pricing, or at
    ``deadline`` (time.perf_counter()); every round's bound is valid."""
    t_start = time.perf_counter()
    if t_start > deadline or not problems:
        return ShapeRelaxation(-math.inf, math.nan, "not run", 0, 0)
    mbs = [
        int(min(m or p.n_requests, p.n_requests))
        for p, m in zip(problems, max_batch_size, strict=True)
    ]
    pads = [None] * len(problems) if max_padded_tokens is None else list(max_padded_tokens)
    master = _Master(problems, list(max_sequential_ms), mbs, max_shapes, compile_cost, pads)
    n = master.n
    for b, p in enumerate(problems):
        # every type alone at the longest shape (its own G cap): the master starts feasible
        ia, ig = master.ia[b], master.ig[b]
        cnt = np.minimum(p.type_count, mbs[b])
        master.add_batches(
            b, np.full(len(ia), n - 1), ig, [{t: int(c)} for t, c in enumerate(cnt.tolist())]
        )
        if b < len(seeds) and seeds[b]:
            ks = np.searchsorted(p.cap_s, [s for s, _, _ in seeds[b]])
            js = np.searchsorted(p.cap_g, [g for _, g, _ in seeds[b]])
            master.add_batches(b, ks, js, [dict(m) for _, _, m in seeds[b]])
    best, lp_value, status, rounds = -math.inf, math.nan, "stopped", 0
    n_req = [p.n_requests for p in problems]
    center = None  # the duals of the best bound so far (Wentges smoothing towards them)

    def priced(y):
        """Columns of negative reduced cost at y, and the Lagrangian bound there (cost units)."""
        new, least = [], 0.0
        for b in range(len(problems)):
            rc, ratio, picks = _price(master, b, y)
            least += n_req[b] * min(0.0, float(ratio.min()))
            # the caps of least reduced cost of every shape, and the best few over all shapes
            top = np.argsort(rc, axis=1)[:, :_PER_SHAPE]
            kb = np.repeat(np.arange(rc.shape[0]), top.shape[1])
            jb = top.reshape(-1)
            flat = np.argsort(rc, axis=None)[:8]
            kf, jf = np.unravel_index(flat, rc.shape)
            ks, js = np.concatenate([kb, kf]), np.concatenate([jb, jf])
            seen = set()
            for k, j in zip(ks.tolist(), js.tolist(), strict=True):
                if rc[k, j] >= -1e-9 or (k, j) in seen:
                    continue
                seen.add((k, j))
                t, taken = picks[k]
                c = taken[j]
                held = {int(tt): int(round(cc)) for tt, cc in zip(t[c > 0], c[c > 0], strict=True)}
                new.append((b, k, j, held))
        return new, master.lagrangian(y, least) * master.cu

    while rounds < max_rounds:
        solved = master.solve()
        if solved is None:
            status = "failed"
            break
        lp_value, y = solved
        y = master.clean(y)
        rounds += 1
        at = y if center is None else _SMOOTHING * center + (1 - _SMOOTHING) * y
        new, bound = priced(at)
        if bound > best:
            best, center = bound, at
        if not new and center is not None and at is not y:  # mispriced: the master's own duals
            new, bound = priced(y)
            if bound > best:
                best, center = bound, y
        if not new:
            status = "optimal"
            break
        if best >= upper_bound / (1 + stop_gap) or time.perf_counter() > deadline:
            break
        for b in range(len(problems)):
            mine = [x for x in new if x[0] == b]
            if mine:
                master.add_batches(
                    b,
                    np.asarray([x[1] for x in mine]),
                    np.asarray([x[2] for x in mine]),
                    [x[3] for x in mine],
                )
    if math.isfinite(best):
        best -= 1e-9 * abs(best)
    return ShapeRelaxation(best, lp_value, status, rounds, master.n_batches)
