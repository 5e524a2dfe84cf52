"""Column generation over caps: the LP relaxation of one bucket's planning problem, its
Lagrangian lower bound, and integer plans from the restricted master (HiGHS).

The model (vocabulary of :mod:`batchlab.exact`). A *type* t is a distinct (aligned prompt, gen_len)
pair with ``c_t`` requests. A *column* is one batch: a cap (S, G) and how many requests of each
dominated type it holds (at most ``max_batch_size`` in all). It costs ``overhead + size × price(S,
G)``, adds its slowest member's latency to the sequential time, ``size × width(S, G)`` pad tokens
(``G``, or ``S + G`` under ``padded-graph``) and one request over the p95 limit for every member
whose own latency is above it. The master LP chooses how many copies of each column to run::

    min  Σ_P cost_P λ_P   s.t.  Σ_P x_tP λ_P >= c_t        (every request covered)
                                Σ_P lat_P λ_P <= max_sequential_ms − spike
                                Σ_P pad_P λ_P <= pad budget
                                Σ_P over_P λ_P <= N − ⌈0.95 N⌉
                                Σ_P cost_P λ_P <= max_cost − constant
                                λ >= 0

Its value is a lower bound on every plan that meets the limits (``spike`` is the least latency a
compile spike can add, so the relaxation stays valid). Columns are generated, not enumerated: the
duals (π_t per type, one per limit) give every cap a *reduced cost*, ``overhead' − Σ`` (best
``max_batch_size`` member values ``π_t − price'``); pricing computes it for every cap of the grid
at once (each type's value is positive on an interval of G caps, so sums over caps are prefix sums
of interval ends), and only caps with a negative reduced cost get a column.

**The bound is valid at any iteration** (Lagrangian duality): for duals y of the right signs,
``y·b + N · min_P (rc_P / |P|)`` is at most the cost of every plan, because every plan's batches
hold N requests in all and each batch's reduced cost is at least its size × that minimum ratio.
At the LP optimum the minimum is 0 and the bound is the LP value. Duals are smoothed (Wentges)
towards the best bound found so far, which cuts the iterations on these degenerate LPs.

**Integer plans.** The restricted master with integer λ (HiGHS's MILP) over the generated columns,
columns whose reduced cost exceeds the gap pruned, gives a plan; members covered twice are dropped.
If no plan meets the limits, phase 1 (no costs, minimize the violation) with a positive Lagrangian
bound *proves* it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from batchlab.exact import BucketSpec, CapProblem, highs_solver, limit_work, run_highs

__all__ = ["CapColumnGeneration", "RelaxationResult"]


@dataclass(frozen=True)
class RelaxationResult:
    """What :meth:`CapColumnGeneration.solve` reached: ``bound`` (a certified lower bound on the
    cost of every plan meeting the limits, cost units; +inf when infeasibility was proved),
    ``lp_value`` (the restricted master's value), ``status`` (``"optimal"``: the LP relaxation
    was solved; ``"stopped"``: the gap target or the deadline came first; ``"infeasible"``: no
    plan meets the limits, proved), ``iterations`` and ``columns``; where branch and price
    (:mod:`batchlab.branching`) raised the bound, ``branch_nodes`` and ``branch_status``."""

    bound: float
    lp_value: float
    status: str
    iterations: int
    columns: int
    branch_nodes: int = 0
    branch_status: str = "not run"


class _Priced(tuple):
    """The last pricing's ``(fp, ap, pi, rho)``, with ``ratio``: the exact bound ratio of the
    negative caps where the pricing computed it (NaN elsewhere), or None."""

    ratio: np.ndarray | None = None


class CapColumnGeneration:
    """Column generation on one bucket (see the module docstring).

    ``spec``: the bucket's :class:`~batchlab.exact.BucketSpec` (its ``problem`` lists the types
    and the cap grid: ``cap_s`` are the S caps, under ``padded-graph`` the allowed shapes).
    ``spike_ms``: the least latency the compile spike adds to the sequential time (ms).
    """

    #: time.perf_counter() after which pricing and the bound stop refining (set by :meth:`solve`;
    #: what they leave is still a valid lower bound)
    deadline: float = math.inf
    #: whether the master takes rows over caps (:meth:`limit_caps`, for
    #: :func:`batchlab.branching.branch_on_caps`): a master without limit rows then gets an
    #: artificial column (no entries until a cap row is made) that relaxes them. The
    #: batch-priced subclasses are not branched on and leave it out
    branch_rows: bool = True

    def __init__(self, spec: BucketSpec, spike_ms: float = 0.0) -> None:
        p: CapProblem = spec.problem
        cm = p.cost_model
        self.spec = spec
        self.padded = cm.padded
        # types sorted by their smallest S cap, so level i's types are a prefix
        ti = np.searchsorted(p.cap_s, p.type_a, side="left")
        tj = np.searchsorted(p.cap_g, p.type_g, side="left")
        order = np.lexsort((tj, ti))
        self.order = order  # position in the problem's type arrays of each sorted type
        self.ti, self.tj = ti[order], tj[order]
        self.count = p.type_count[order].astype(np.float64)
        self.n = float(self.count.sum())
        T = len(order)
        self.T = T
        self.S = p.cap_s.astype(np.float64)
        self.G = p.cap_g.astype(np.float64)
        nS = len(self.S)
        ss, gg = np.meshgrid(self.S, self.G, indexing="ij")
        self.price = p.price(ss, gg)
        self.lat = p.batch_ms(ss, gg)
        self.dec = cm.decode_ms(ss, gg) + cm.overhead_ms
        self.width = gg + ss if self.padded else gg
        self.overhead = float(cm.overhead_cost)
        n_req = int(self.n)
        self.mbs = float(min(spec.max_batch_size or n_req, n_req))
        self.m = np.minimum(self.count, self.mbs)
        self.level_n = np.searchsorted(self.ti, np.arange(nS), side="right")
        # every (level, type of the level) pair, level-major: pricing works on them at once
        self.pair_i = np.repeat(np.arange(nS), self.level_n)
        self.pair_t = np.arange(len(self.pair_i)) - np.repeat(
            np.cumsum(self.level_n) - self.level_n, self.level_n
        )
        self.const = p.const_cost + (0.0 if self.padded else spec.compile_cost)
        # own latency without decode of each type at each level (static: its prefill; padded:
        # the shape's), and the first G cap at which a member is over the p95 limit
        a_sorted = p.type_a[order].astype(np.float64)
        self.pre = cm.prefill_ms(a_sorted)
        self.lim95 = spec.max_p95_latency_ms
        self.jok: list[np.ndarray] = []
        if self.lim95 is not None:
            pre_s = cm.prefill_ms(self.S)
            for i in range(nS):
                own = pre_s[i] if self.padded else self.pre[: self.level_n[i]]
                self.jok.append(
                    np.searchsorted(self.dec[i], self.lim95 * (1 + 1e-12) - own, side="right")
                    + np.zeros(self.level_n[i], dtype=np.int64)
                )
            self.pair_jok = (
                np.concatenate(self.jok).astype(np.int64) if self.jok else np.zeros(0, np.int64)
            )
        # the side rows
        rows_lo, rows_hi, self.side = [], [], {}
        inf = math.inf

        def side_row(name, lo, hi):
            self.side[name] = T + len(rows_lo)
            rows_lo.append(lo)
            rows_hi.append(hi)

        if spec.max_sequential_ms is not None:
            side_row("seq", -inf, spec.max_sequential_ms - spike_ms)
        if spec.max_pad_ratio is not None:
            useful = spec.prompt_sum + spec.gen_sum
            extra = spec.prompt_sum if self.padded else -spec.align_pad
            side_row("pad", -inf, spec.max_pad_ratio * useful * (1 - 1e-12) + spec.gen_sum + extra)
        if self.lim95 is not None:
            side_row("over", -inf, float(n_req - math.ceil(0.95 * n_req)))
        if spec.max_cost is not None:
            side_row("cost", -inf, spec.max_cost - self.const)
        self.rows_lo = np.concatenate([self.count, rows_lo])
        self.rows_hi = np.concatenate([np.full(T, inf), rows_hi])
        self.h, self.inf = highs_solver()
        hinf = self.inf
        self.h.addRows(
            len(self.rows_lo),
            np.where(np.isinf(self.rows_lo), -hinf, self.rows_lo),
            np.where(np.isinf(self.rows_hi), hinf, self.rows_hi),
            0,
            np.zeros(len(self.rows_lo), dtype=np.int32),
            np.zeros(0, dtype=np.int32),
            np.zeros(0),
        )
        self.cols: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.cost_of: list[float] = []
        self.col_rows: list[np.ndarray] = []
        self.col_vals: list[np.ndarray] = []
        self._seen: dict = {}
        self._phase1 = False
        # artificial columns (big M) so the master is feasible from the start
        self.artificial = []
        alone = float((self.m * self.price[self.ti, self.tj]).sum()) + self.overhead * T
        for r in self.side.values():
            scale = max(abs(self.rows_hi[r]) if np.isfinite(self.rows_hi[r]) else 1.0, 1.0)
            big = 1e3 * max(alone, 1.0) / scale
            self.h.addCol(big, 0.0, hinf, 1, np.array([r], dtype=np.int32), np.array([-1.0]))
            self.artificial.append(self.h.getNumCol() - 1)
        # a batch of relaxation in a cap row costs what a whole limit's does (1e3 × alone)
        if self.artificial:
            self._cap_art = -big / (1e3 * max(alone, 1.0))
        elif self.branch_rows:  # no limit rows: a column of no row yet, for the cap rows alone
            self.h.addCol(1e3 * max(alone, 1.0), 0.0, hinf, 0, np.zeros(0, np.int32), np.zeros(0))
            self.artificial.append(self.h.getNumCol() - 1)
            self._cap_art = -1.0
        else:
            self._cap_art = 0.0
        #: rows over the columns at one cap: (level index, G index, sign) -> master row, the row
        #: being ``sign · Σ λ_P <= rhs`` over the columns P at that cap (see :meth:`limit_caps`)
        self.cap_rows: dict[tuple[int, int, int], int] = {}
        self.n_fixed = self.h.getNumCol()
        # every type alone (chunks of max_batch_size)
        idx = np.arange(T)
        self.add_columns(self.ti, self.tj, [(np.array([t]), np.array([self.m[t]])) for t in idx])
        self.best_bound = -math.inf
        self.center: np.ndarray | None = None
        self.iterations = 0
        self.proved_infeasible = False

    # -- columns ---------------------------------------------------------------------------
    def type_index(self, problem_types: np.ndarray) -> np.ndarray:
        """Sorted-type index of problem type indices."""
        inv = np.empty(self.T, dtype=np.int64)
        inv[self.order] = np.arange(self.T)
        return inv[problem_types]

    def add_columns(self, ci, cj, members, where: list | None = None) -> int:
        """Add batches: caps (level index, G index) and (types, counts) each; duplicates are
        skipped. Returns how many were added; ``where`` gets each batch's column number."""
        new_i, new_j, new_m = [], [], []
        caps = zip(np.asarray(ci).tolist(), np.asarray(cj).tolist(), members, strict=True)
        for i, j, (types, counts) in caps:
            key = (i, j, types.tobytes(), counts.tobytes())
            if key in self._seen or len(types) == 0:
                if where is not None:
                    where.append(self._seen.get(key, -1))
                continue
            self._seen[key] = len(self.cols)
            if where is not None:
                where.append(len(self.cols))
            self.cols.append((i, j, types, counts))
            new_i.append(i)
            new_j.append(j)
            new_m.append((types, counts))
        k = len(new_i)
        if not k:
            return 0
        # every new column's entries at once: its members' cover rows, then its side rows
        ii, jj = np.asarray(new_i, dtype=np.int64), np.asarray(new_j, dtype=np.int64)
        lens = np.asarray([len(t) for t, _ in new_m], dtype=np.int64)
        types = np.concatenate([t for t, _ in new_m]).astype(np.int64)
        counts = np.concatenate([c for _, c in new_m]).astype(np.float64)
        col = np.repeat(np.arange(k), lens)
        size = np.bincount(col, weights=counts, minlength=k)
        priced = type(self)._column_terms is not CapColumnGeneration._column_terms
        if priced:  # a subclass prices whole batches (batchlab.batch_priced)
            terms = self._column_terms(new_i, new_j, new_m)
            cost = np.asarray([t[0] for t in terms], dtype=np.float64)
            lat = np.asarray([t[1] for t in terms], dtype=np.float64)
            over_by_col = np.asarray(
                [float(c[~t[2]].sum()) for (_, c), t in zip(new_m, terms, strict=True)]
            )
        else:
            cost = self.overhead + size * self.price[ii, jj]
            lat = self.lat[ii, jj]
        e_col, e_row, e_val = [col], [types], [counts]
        side = self.side

        def entries(name, value, keep=None):
            cols = np.arange(k) if keep is None else np.flatnonzero(keep)
            e_col.append(cols)
            e_row.append(np.full(len(cols), side[name], dtype=np.int64))
            e_val.append(value if keep is None else value[keep])

        if "seq" in side:
            entries("seq", lat)
        if "pad" in side:
            entries("pad", size * self.width[ii, jj])
        if "over" in side:
            if priced:
                over = over_by_col
            else:
                offset = np.cumsum(self.level_n) - self.level_n
                bad = jj[col] >= self.pair_jok[offset[ii[col]] + types]
                over = np.bincount(col, weights=counts * bad, minlength=k)
            entries("over", over, over > 0)
        if "cost" in side:
            entries("cost", cost)
        for (ri, rj, sign), r in self.cap_rows.items():
            at = np.flatnonzero((ii == ri) & (jj == rj))
            e_col.append(at)
            e_row.append(np.full(len(at), r, dtype=np.int64))
            e_val.append(np.full(len(at), float(sign)))
        e_col = np.concatenate(e_col)
        order = np.argsort(e_col, kind="stable")
        rows = np.concatenate(e_row)[order]
        vals = np.concatenate([np.asarray(v, dtype=np.float64) for v in e_val])[order]
        starts = np.searchsorted(e_col[order], np.arange(k + 1), side="left")
        self.col_rows += np.split(rows, starts[1:-1])
        self.col_vals += np.split(vals, starts[1:-1])
        self.cost_of += cost.tolist()
        self.h.addCols(
            k,
            np.zeros(k) if self._phase1 else cost,
            np.zeros(k),
            np.full(k, self.inf),
            int(starts[-1]),
            starts[:-1].astype(np.int32),
            rows.astype(np.int32),
            vals,
        )
        return k

    def _column_terms(self, ci, cj, members) -> list[tuple[float, float, np.ndarray]]:
        """Per batch (caps (level, G index), (types, counts)): its cost (cost units), its
        slowest member's latency (ms) and which members are within the p95 limit. Here every
        member pays the price at the caps; :mod:`batchlab.batch_priced` prices whole batches."""
        return [
            (
                self.overhead + float(counts.sum()) * float(self.price[i, j]),
                float(self.lat[i, j]),
                self._ok(i, j, types),
            )
            for i, j, (types, counts) in zip(ci, cj, members, strict=True)
        ]

    def _ok(self, i: int, j: int, types: np.ndarray) -> np.ndarray:
        """Members of a batch with cap (i, j) whose own latency is within the p95 limit."""
        if self.lim95 is None:
            return np.ones(len(types), dtype=bool)
        return j < self.jok[i][types]

    def add_plan(self, batch: np.ndarray, types: np.ndarray) -> list[int]:
        """Add the batches of a plan, given per request its batch label and sorted-type index,
        and return their column numbers (a plan to start the MILP from)."""
        key = np.asarray(batch, dtype=np.int64) * self.T + np.asarray(types, dtype=np.int64)
        uniq, cnt = np.unique(key, return_counts=True)
        b_of, t_of = uniq // self.T, uniq % self.T
        starts = np.flatnonzero(np.r_[True, b_of[1:] != b_of[:-1]])
        ci = np.maximum.reduceat(self.ti[t_of], starts)
        cj = np.maximum.reduceat(self.tj[t_of], starts)
        ty = np.split(t_of, starts[1:])
        ct = np.split(cnt.astype(np.float64), starts[1:])
        where: list[int] = []
        self.add_columns(ci, cj, list(zip(ty, ct, strict=True)), where)
        return where

    def multipliers(self) -> dict[str, float]:
        """The limits' multipliers at the best duals (>= 0): what one more unit of each limit
        (ms, pad token, request over p95, cost unit) would save, in cost units."""
        if self.center is None:
            return {}
        names = {"seq": "max_sequential_ms", "pad": "max_pad_ratio", "over": "max_p95_latency_ms"}
        names["cost"] = "max_cost"
        return {names[k]: float(-self.center[r]) for k, r in self.side.items()}

    def warm_start(self, type_values: np.ndarray, seq_multiplier: float = 0.0) -> float:
        """Start the dual smoothing from known duals: ``type_values`` per problem type (cost
        units per request, e.g. :func:`batchlab.exact.dual_ascent_values`) and the sequential
        limit's multiplier (cost units per ms). Any such duals give a valid bound; returns the
        best bound so far."""
        y = np.zeros(len(self.rows_lo))
        y[: self.T] = np.asarray(type_values, dtype=np.float64)[self.order]
        if "seq" in self.side:
            y[self.side["seq"]] = -float(seq_multiplier)
        y = self._clean(y)
        rc, vmax = self.price_caps(y)
        lb = self.bound_at(y, rc, vmax)
        if lb > self.best_bound:
            self.best_bound, self.center = lb, y
        return self.best_bound

    # -- rows over caps (branching) -------------------------------------------------------
    def _cap_row(self, i: int, j: int, sign: int) -> int:
        """The master row ``sign · Σ λ_P <= rhs`` over the columns at cap (i, j), made on first
        use, relaxed (``rhs`` N for sign +1, 0 for sign −1). The last limit's artificial column
        relaxes it too, a batch of the row for as much as the whole limit (a node's master may
        start infeasible, as the root's may); a master without limit rows has an artificial
        column for the cap rows alone."""
        key = (int(i), int(j), int(sign))
        if key in self.cap_rows:
            return self.cap_rows[key]
        if not self.artificial:
            raise TypeError(f"{type(self).__name__} takes no rows over caps (branch_rows)")
        at = [c for c, col in enumerate(self.cols) if col[0] == key[0] and col[1] == key[1]]
        rhs = self.n if sign > 0 else 0.0
        idx = (np.asarray(at, dtype=np.int64) + self.n_fixed).astype(np.int32)
        self.h.addRow(-self.inf, rhs, len(at), idx, np.full(len(at), float(sign)))
        r = self.h.getNumRow() - 1
        self.h.changeCoeff(r, self.artificial[-1], self._cap_art)
        self.rows_lo = np.append(self.rows_lo, -math.inf)
        self.rows_hi = np.append(self.rows_hi, rhs)
        if self.center is not None:  # the new row takes no part in the best duals
            self.center = np.append(self.center, 0.0)
        for c in at:
            self.col_rows[c] = np.append(self.col_rows[c], r)
            self.col_vals[c] = np.append(self.col_vals[c], float(sign))
        self.cap_rows[key] = r
        return r

    def limit_caps(self, limits: dict[tuple[int, int], tuple[int, int | None]]) -> None:
        """Bound how many batches the master runs at given caps: ``limits`` maps (level index,
        G index) to (at least, at most or None); every other cap row is relaxed. Any plan that
        meets the limits is still covered, so bounds and plans stay valid for that subset of
        plans (a branch-and-bound node)."""
        need = [(i, j, s) for (i, j), (lo, hi) in limits.items()
                for s, on in ((1, hi is not None), (-1, lo > 0)) if on]  # fmt: skip
        rhs = {r: (self.n if s > 0 else 0.0) for (_, _, s), r in self.cap_rows.items()}
        for i, j, s in need:
            lo, hi = limits[(i, j)]
            rhs[self._cap_row(i, j, s)] = float(hi) if s > 0 else -float(lo)
        for r, value in rhs.items():
            if self.rows_hi[r] != value:
                self.h.changeRowBounds(r, -self.inf, value)
                self.rows_hi[r] = value

    def cap_usage(self, x: np.ndarray) -> np.ndarray:
        """How many batches the master solution ``x`` (copies per column) runs at every cap,
        (nS, nG)."""
        nS, nG = self.price.shape
        caps = np.asarray([c[0] * nG + c[1] for c in self.cols], dtype=np.int64)
        return np.bincount(caps, weights=x[: len(caps)], minlength=nS * nG).reshape(nS, nG)

    def lp_solution(self) -> np.ndarray:
        """Copies of each generated column in the master's current LP solution."""
        return np.asarray(self.h.getSolution().col_value, dtype=np.float64)[self.n_fixed :]

    # -- pricing ---------------------------------------------------------------------------
    def _duals(self, y: np.ndarray, weight: float = 1.0):
        """Overhead' and price' per cap, and the member values' parts, from duals y."""
        side = self.side

        def d(name):
            return float(y[side[name]]) if name in side else 0.0

        ycost, yseq, ypad, yover = d("cost"), d("seq"), d("pad"), d("over")
        w = weight * (1.0 - ycost)
        fp = w * self.overhead - yseq * self.lat
        ap = w * self.price - ypad * self.width
        return fp, ap, y[: self.T], -yover

    def price_caps(self, y: np.ndarray, weight: float = 1.0):
        """Reduced cost of the best column at every cap (nS, nG), and the caps' largest member
        value (for the bound).

        Every (level, type of the level) pair at once: a type's value ``π_t − price'`` is
        positive on an interval of G caps from its own (price' grows with G), whose end is one
        sorted search per level. Past :attr:`deadline`, caps where max_batch_size binds under a
        p95 limit keep the reduced cost of all their positive members (a lower bound)."""
        fp, ap, pi, rho = self._duals(y, weight)
        if self.cap_rows:  # a cap row's dual is part of its columns' reduced cost
            fp = fp.copy()
            for (i, j, sign), r in self.cap_rows.items():
                fp[i, j] -= sign * y[r]
        nS, nG = ap.shape
        pi_i, pt = self.pair_i, self.pair_t
        tj = self.tj[pt]
        m = self.m[pt]
        base = pi_i * (nG + 1)
        p1 = pi[pt]
        idx_parts, w_parts, m_parts = [], [], []

        def intervals(lo, hi, val, keep):
            keep = keep & (hi > lo)
            idx_parts.extend((base[keep] + lo[keep], base[keep] + hi[keep]))
            wv = (m * val)[keep]
            w_parts.extend((wv, -wv))
            m_parts.extend((m[keep], -m[keep]))

        every = np.ones(len(pt), dtype=bool)
        if rho > 0 and self.lim95 is not None:
            jo = self.pair_jok
            p0 = p1 - rho
            j1 = np.minimum(self._first_at_least(ap, p1), jo)
            s0 = np.maximum(tj, jo)
            intervals(tj, j1, p1, every)
            intervals(s0, self._first_at_least(ap, p0), p0, every)
        else:
            intervals(tj, self._first_at_least(ap, p1), p1, every)
        top = np.full((nS, nG), -np.inf)
        np.maximum.at(top, (self.ti, self.tj), pi)
        top = np.maximum.accumulate(np.maximum.accumulate(top, axis=0), axis=1)
        vmax = np.where(self.level_n[:, None] > 0, top - ap, -np.inf)
        size = nS * (nG + 1)
        if idx_parts:
            idx = np.concatenate(idx_parts)
            csum = np.bincount(idx, weights=np.concatenate(w_parts), minlength=size)
            msum = np.bincount(idx, weights=np.concatenate(m_parts), minlength=size)
        else:
            csum = msum = np.zeros(size)
        csum = np.cumsum(csum.reshape(nS, nG + 1), axis=1)[:, :nG]
        msum = np.cumsum(msum.reshape(nS, nG + 1), axis=1)[:, :nG]
        value = csum - ap * msum
        rc = fp - value
        over = msum > self.mbs + 1e-9
        if rho > 0 and self.lim95 is not None:  # a member's value depends on the cap
            for i in np.flatnonzero(over.any(axis=1)).tolist():
                if time.perf_counter() > self.deadline:
                    break  # out of time: the rest keep rc without the cap, a lower bound
                js = np.flatnonzero(over[i])
                vals, m = self._member_values(i, js, pi, ap, rho)
                rc[i, js] = fp[i, js] - self._top_sum(vals, m)
            ratio = None
        elif over.any():
            ratio = self._sweep_top_units(fp, ap, pi, over, rc)
        else:
            ratio = None
        self._last = _Priced((fp, ap, pi, rho))
        self._last.ratio = ratio
        return rc, vmax

    def _sweep_top_units(
        self, fp: np.ndarray, ap: np.ndarray, pi: np.ndarray, over: np.ndarray, rc: np.ndarray
    ) -> np.ndarray:
        """Without the p95 term: the reduced cost at the caps where ``over`` is set (more units
        of positive value than max_batch_size; written into ``rc``), and every negative cap's
        least ``(overhead' − best total of m members) / m`` over m (the bound's exact ratio;
        NaN elsewhere), in one pass over the levels.

        At a cap every member's value is its type's dual less the same price, so the best
        members are the units of the largest duals among the cap's types (level ``i``'s types
        with ``tj ≤ j``). Those are kept per G cap as the top ``max_batch_size`` duals, merged
        level by level with each level's new types, instead of a (types × caps) matrix per
        level."""
        kk = int(self.mbs)
        nS, nG = ap.shape
        units = self.m.astype(np.int64)
        unit_type = np.repeat(np.arange(self.T), units)  # units in type order (level-major)
        unit_pi = pi[unit_type]
        unit_j = self.tj[unit_type]
        unit_end = np.cumsum(units)
        top = np.full((nG, kk), -np.inf)
        cols = np.arange(nG)[:, None]
        rank = np.arange(1, kk + 1, dtype=np.float64)
        ratio = np.full((nS, nG), np.nan)
        last = int(np.flatnonzero(over.any(axis=1) | (rc < 0).any(axis=1))[-1])
        start = 0
        chunk = max(1, 4_000_000 // max(nG, 1) - kk)
        for i in range(last + 1):
            stop = int(unit_end[self.level_n[i] - 1]) if self.level_n[i] else 0
            for lo in range(start, stop, chunk):  # this level's new units, in chunks
                hi = min(stop, lo + chunk)
                new = np.where(unit_j[None, lo:hi] <= cols, unit_pi[None, lo:hi], -np.inf)
                top = -np.partition(-np.concatenate([top, new], axis=1), kk - 1, axis=1)[:, :kk]
            start = max(start, stop)
            if over[i].any():
                js = np.flatnonzero(over[i])
                gain = top[js] - ap[i, js][:, None]
                rc[i, js] = fp[i, js] - np.where(gain > 0, gain, 0.0).sum(axis=1)
            js = np.flatnonzero(rc[i] < 0)
            if len(js):
                gain = -np.sort(ap[i, js][:, None] - top[js], axis=1)  # best first
                tot = np.cumsum(np.where(gain > 0, gain, 0.0), axis=1)
                r = np.where(gain > 0, (fp[i, js][:, None] - tot) / rank, np.inf)
                ratio[i, js] = r.min(axis=1)
        return ratio

    def _first_at_least(self, ap: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per (level, type) pair, the first G index whose ``ap`` (nondecreasing along G) is at
        least the pair's value (nG if none): one sorted search per level."""
        out = np.empty(len(self.pair_i), dtype=np.int64)
        offset = 0
        for i, k in enumerate(self.level_n.tolist()):
            if k:
                out[offset : offset + k] = np.searchsorted(
                    ap[i], values[offset : offset + k], side="left"
                )
                offset += k
        return out

    def _member_values(self, i, js, pi, ap, rho):
        """Values of level i's types at caps (i, js): (k types, len(js)), -inf where not
        dominated."""
        k = int(self.level_n[i])
        v = pi[:k, None] - ap[i, js][None, :]
        if rho > 0 and self.lim95 is not None:
            v = v - rho * (js[None, :] >= self.jok[i][:, None])
        v[self.tj[:k, None] > js[None, :]] = -np.inf
        return v, self.m[:k]

    def _top_sum(self, v: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Per column of v: the largest total of at most max_batch_size units of positive
        value (type t has m_t units)."""
        mbs = self.mbs
        kk = int(mbs)
        vt = np.ascontiguousarray(v.T)  # one row per column of v: partitions along rows
        if (m == 1).all() and mbs < len(m):
            part = -np.partition(-vt, kk - 1, axis=1)[:, :kk]
            return np.where(part > 0, part, 0.0).sum(axis=1)
        if len(m) > mbs:  # the best units lie among the mbs best types (each has >= 1 unit)
            top = np.argpartition(-vt, kk - 1, axis=1)[:, :kk]
            vt = np.take_along_axis(vt, top, axis=1)
            mt = m[top]
        else:
            mt = np.broadcast_to(m, vt.shape)
        order = np.argsort(-vt, axis=1, kind="stable")
        vs = np.take_along_axis(vt, order, axis=1)
        ms = np.take_along_axis(mt, order, axis=1)
        take = np.clip(mbs - (np.cumsum(ms, axis=1) - ms), 0, ms)
        return (take * np.where(vs > 0, vs, 0.0)).sum(axis=1)

    def _patterns(self, caps: np.ndarray, ratios: bool = False):
        """The best column at each cap (rows of (level, G index)), from the last pricing; with
        ``ratios``, also each cap's least ``(overhead' − best total of m members) / m`` over m
        (the bound's ratio). Caps come back ordered by level (stable).

        All caps at once: a (types × caps) matrix of member values (−inf where a type is not
        dominated), in chunks of a few million entries."""
        fp, ap, pi, rho = self._last
        caps = np.asarray(caps, dtype=np.int64).reshape(-1, 2)
        caps = caps[np.argsort(caps[:, 0], kind="stable")]
        out_i, out_j, members, ratio_parts = [], [], [], []
        mbs = self.mbs
        offset = np.cumsum(self.level_n) - self.level_n
        p95 = rho > 0 and self.lim95 is not None
        # chunks of consecutive caps (by level): at most a million entries, padded (every cap
        # to the chunk's largest level) by at most a quarter plus 50,000 entries, so that small
        # levels go at once and large ones nearly alone
        n_of = self.level_n[caps[:, 0]].tolist()
        pos = 0
        while pos < len(caps):
            end, real = pos + 1, n_of[pos]
            while end < len(caps):
                padded = n_of[end] * (end + 1 - pos)
                if padded > 1_000_000 or padded > 1.25 * (real + n_of[end]) + 50_000:
                    break
                real += n_of[end]
                end += 1
            k = int(n_of[end - 1])
            ci, cj = caps[pos:end, 0], caps[pos:end, 1]
            pos = end
            t = np.arange(k)[:, None]
            valid = (t < self.level_n[ci][None, :]) & (self.tj[:k, None] <= cj[None, :])
            v = pi[:k, None] - ap[ci, cj][None, :]
            if p95:
                at = np.minimum(offset[ci][None, :] + t, len(self.pair_jok) - 1)
                v = v - rho * (cj[None, :] >= self.pair_jok[at])
            v = np.where(valid, v, -np.inf)
            m = self.m[:k]
            if k > mbs:  # the best units lie among the mbs best types (each has >= 1 unit)
                kk = int(mbs)  # partition along contiguous rows of the transpose
                top = np.argpartition(-np.ascontiguousarray(v.T), kk - 1, axis=1)[:, :kk].T
                tv = np.take_along_axis(v, top, axis=0)
                o = np.argsort(-tv, axis=0, kind="stable")
                order = np.take_along_axis(top, o, axis=0)
                vs = np.take_along_axis(tv, o, axis=0)
            else:
                order = np.argsort(-v, axis=0, kind="stable")
                vs = np.take_along_axis(v, order, axis=0)
            ms = m[order]
            take = np.clip(mbs - (np.cumsum(ms, axis=0) - ms), 0, ms)
            take = np.where(vs > 0, take, 0.0)
            if ratios:
                tot = np.cumsum(take * np.where(vs > 0, vs, 0.0), axis=0)
                units = np.cumsum(take, axis=0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.where(units > 0, (fp[ci, cj][None, :] - tot) / units, np.inf)
                ratio_parts.append(r.min(axis=0))
            sel_all = take > 0
            for c, (i, j) in enumerate(zip(ci.tolist(), cj.tolist(), strict=True)):
                sel = sel_all[:, c]
                out_i.append(i)
                out_j.append(j)
                members.append((order[sel, c], take[sel, c]))
        ratio = np.concatenate(ratio_parts) if ratio_parts else np.zeros(0)
        return out_i, out_j, members, ratio

    # -- the LP --------------------------------------------------------------------------
    def _lp(self):
        run_highs(self.h)
        sol = self.h.getSolution()
        y = np.asarray(sol.row_dual, dtype=np.float64)
        x = np.asarray(sol.col_value, dtype=np.float64)
        return float(self.h.getInfo().objective_function_value), y, x

    def _rhs(self) -> np.ndarray:
        return np.where(np.isfinite(self.rows_hi), self.rows_hi, self.rows_lo)

    def _clean(self, y: np.ndarray) -> np.ndarray:
        """Duals with the signs the bound needs: >= 0 on cover rows, <= 0 on the side rows."""
        y = y.copy()
        y[: self.T] = np.maximum(y[: self.T], 0.0)
        y[self.T :] = np.minimum(y[self.T :], 0.0)
        return y

    def bound_at(self, y: np.ndarray, rc: np.ndarray, vmax: np.ndarray, weight: float = 1.0):
        """The Lagrangian bound ``y·b + N · min_P rc_P/|P|`` at duals y, priced last by
        :meth:`price_caps` (rc, vmax are its result).

        A cap with rc >= 0 has ratio >= rc / max_batch_size; a negative cap's ratio is at least
        ``max(rc, −vmax)`` (cheap), and exactly the least ``(overhead' − best total of m
        members) / m`` over m. The exact ratio comes from the pricing's sweep where it ran
        (:meth:`_sweep_top_units`), else lazily, cheapest bound first, only for the caps whose
        cheap bound is below the least ratio found so far."""
        neg = rc < 0
        cheap = np.where(neg, np.maximum(rc, -np.maximum(vmax, 0.0)), rc / self.mbs)
        flat = cheap.ravel()
        best = float(flat[~neg.ravel()].min()) if (~neg).any() else math.inf
        last = getattr(self, "_last", None)
        ratio = getattr(last, "ratio", None)
        if ratio is not None:  # the pricing's sweep gave these caps' exact ratios
            done = neg & ~np.isnan(ratio)
            if done.any():
                best = min(best, float(ratio[done].min()))
            neg = neg & ~done
        cand = np.flatnonzero(neg.ravel() & (flat < best))
        if len(cand) and last is not None:
            cand = cand[np.argsort(flat[cand], kind="stable")]
            nG = rc.shape[1]
            pos, step = 0, 16
            while pos < len(cand) and flat[cand[pos]] < best:
                if time.perf_counter() > self.deadline:  # out of time: the rest's cheap bounds
                    best = min(best, float(flat[cand[pos:]].min()))
                    break
                chunk = cand[pos : pos + step]
                chunk = chunk[flat[chunk] < best]
                caps = np.stack([chunk // nG, chunk % nG], axis=1)
                _, _, _, r = self._patterns(caps, ratios=True)
                best = min(best, float(r.min()))
                pos += step
                step *= 2
        elif len(cand):
            best = float(flat[cand].min())
        return float(y @ self._rhs()) + weight * self.const + self.n * best

    def _negatives(self, rc: np.ndarray) -> np.ndarray:
        return np.argwhere(rc < -1e-9 * self.overhead - 1e-6)

    def solve(
        self,
        deadline: float,
        *,
        upper_bound: float = math.inf,
        stop_gap: float = 1e-6,
        columns_per_round: int | None = None,
        alpha: float = 0.5,
        max_rounds: int | None = None,
    ) -> RelaxationResult:
        """Column generation until the LP relaxation is solved, the bound is within ``stop_gap``
        of ``upper_bound`` (a plan's cost), ``max_rounds`` rounds (LP + pricing) have run (a
        work budget: the same on any machine), or ``deadline`` (time.perf_counter(), a hard
        cap) passes."""
        K = columns_per_round or max(50, min(400, self.T // 4))
        self.deadline = deadline
        status = "stopped"
        z = math.inf
        rounds = 0
        while True:
            rounds += 1
            z, y, x = self._lp()
            self.iterations += 1
            y = self._clean(y)
            smooth = self.center is not None and alpha > 0
            ys = alpha * self.center + (1 - alpha) * y if smooth else y
            rc, vmax = self.price_caps(ys)
            lb = self.bound_at(ys, rc, vmax)
            if lb > self.best_bound:
                self.best_bound, self.center = lb, ys
            neg = self._negatives(rc)
            if not len(neg) and smooth:  # mispricing: price at the LP's own duals
                rc, vmax = self.price_caps(y)
                lb = self.bound_at(y, rc, vmax)
                if lb > self.best_bound:
                    self.best_bound = lb
                self.center = y
                neg = self._negatives(rc)
            zc = z + self.const
            art = float(x[self.artificial].sum()) if self.artificial else 0.0
            if self.cap_rows and art > 0:  # a little of it relaxes a cap row by much
                art = max(art, art / abs(self._cap_art))
            if not len(neg):  # y is an optimal dual of the whole LP
                if art <= 1e-7 * max(1.0, self.n):
                    self.best_bound = max(self.best_bound, zc)
                    self.center = y
                    status = "optimal"
                elif self._prove_infeasible(deadline, max_rounds):
                    status = "infeasible"
                break
            ref = min(upper_bound, zc if art <= 1e-7 * max(1.0, self.n) else math.inf)
            if self.best_bound > 0 and ref / self.best_bound - 1 <= stop_gap:
                break
            if time.perf_counter() > deadline or (max_rounds is not None and rounds >= max_rounds):
                break
            vals = rc[neg[:, 0], neg[:, 1]]
            pick = neg[np.argsort(vals, kind="stable")[:K]]
            ci, cj, members, _ = self._patterns(pick)
            if not self.add_columns(ci, cj, members):
                if not smooth:
                    break  # nothing new at the LP's own duals: numerically converged
                self.center = None  # mispricing: the next round prices at the LP's duals
        self.status = status
        if status == "infeasible":
            self.proved_infeasible = True
        bound = math.inf if status == "infeasible" else self.best_bound
        return RelaxationResult(bound, z + self.const, status, self.iterations, len(self.cols))

    def exact_bound(self) -> float:
        """The Lagrangian bound at the best duals with the exact minimum ratio (every negative
        cap's best columns of every size); at least :attr:`best_bound`."""
        if self.center is None:
            return self.best_bound
        y = self.center
        rc, vmax = self.price_caps(y)
        neg = np.argwhere(rc < 0)
        ratio = float((rc / self.mbs)[rc >= 0].min()) if (rc >= 0).any() else 0.0
        if len(neg):
            _, _, _, r = self._patterns(neg, ratios=True)
            ratio = min(ratio, float(r.min()))
        value = float(y @ self._rhs()) + self.const + self.n * ratio
        self.best_bound = max(self.best_bound, value)
        return self.best_bound

    def _prove_infeasible(self, deadline: float, max_rounds: int | None = None) -> bool:
        """Phase 1: minimize the violation with no costs; a positive bound proves that no plan
        meets the limits (at most ``max_rounds`` rounds)."""
        h = self.h
        n = h.getNumCol()
        real = np.setdiff1d(np.arange(n), self.artificial)
        saved = np.asarray(h.getLp().col_cost_, dtype=np.float64).copy()
        h.changeColsCost(len(real), real.astype(np.int32), np.zeros(len(real)))
        arts = np.asarray(self.artificial, dtype=np.int32)
        h.changeColsCost(len(arts), arts, np.ones(len(arts)))
        self._phase1 = True
        proved = False
        rounds = 0
        while time.perf_counter() <= deadline and (max_rounds is None or rounds < max_rounds):
            rounds += 1
            z, y, x = self._lp()
            y = self._clean(y)
            rc, vmax = self.price_caps(y, weight=0.0)
            neg = np.argwhere(rc < -1e-9)
            lb = self.bound_at(y, rc, vmax, weight=0.0)
            if lb > 1e-6 * max(1.0, float(np.abs(self._rhs()[self.T :]).max(initial=1.0))):
                proved = True
                break
            if not len(neg) or z <= 1e-9:
                proved = z > 1e-6 and not len(neg)
                break
            ci, cj, members, _ = self._patterns(neg[np.argsort(rc[neg[:, 0], neg[:, 1]])[:200]])
            if not self.add_columns(ci, cj, members):
                break
        self._phase1 = False
        n = h.getNumCol()
        cost = np.concatenate([saved[: self.n_fixed], np.asarray(self.cost_of, dtype=float)])
        h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        return proved

    # -- integer plans -----------------------------------------------------------------------
    def integer_plan(
        self,
        deadline: float,
        *,
        upper_bound: float = math.inf,
        seq_shift: float = 0.0,
        over_shift: float = 0.0,
        rel_gap: float = 1e-4,
        accept_gap: float = 1e-3,
        start: list[int] | None = None,
        work: int | None = None,
        fixed_tries: bool = True,
        every_column: bool = True,
    ):
        """An integer plan from the restricted master, or None.

        The LP solution is nearly integral: its whole copies are kept and the rest (the requests
        they leave) is solved as a MILP over the generated columns that fit it; then the same
        with the batches that spend the limits most freed too; then the MILP over every column,
        started from the best plan so far (or ``start``, column numbers of a known plan). The
        first plan within ``accept_gap`` of the restricted master's LP value is taken, else
        the cheapest. Returns a list of batches ``(level index, G index, sorted-type indices,
        counts)`` covering every request exactly once. ``seq_shift`` (ms) and ``over_shift``
        (requests) tighten the sequential and p95 rows (room for the compile spike). ``work``:
        each MILP stops after this many of HiGHS's progress checks
        (:func:`batchlab.exact.limit_work`); ``deadline`` is a hard cap. ``fixed_tries=False``
        skips the fixed-copies MILPs (the MILP over every column gets all the time);
        ``every_column=False`` skips that MILP.
        """
        x = self.lp_solution()
        lp_value = float(self.h.getInfo().objective_function_value)
        whole_cost = abs(lp_value + self.const)  # the plan's cost, prefill and compile included
        target = lp_value + accept_gap * whole_cost
        abs_gap = rel_gap * whole_cost  # the residual MILPs: rel_gap of the whole plan's cost
        costs = np.asarray(self.cost_of, dtype=np.float64)
        shift = np.zeros(len(self.rows_hi))
        if "seq" in self.side:
            shift[self.side["seq"]] = seq_shift
        if "over" in self.side:
            shift[self.side["over"]] = over_shift
        rhs_hi = self.rows_hi - shift
        best, best_cost = None, math.inf
        whole = np.maximum(np.floor(x + 1e-7), 0.0)  # HiGHS may return -1e-9 for a zero
        # second try: free the batches that spend the limits most (over p95, slowest tenth)
        loose = whole.copy()
        if "over" in self.side:
            r = self.side["over"]
            over = np.asarray(
                [v[rows == r].sum() for rows, v in zip(self.col_rows, self.col_vals, strict=True)]
            )
            loose[over > 0] = 0.0
        if "seq" in self.side:
            lat = self.lat[[c[0] for c in self.cols], [c[1] for c in self.cols]]
            on = np.flatnonzero(loose > 0)
            slow = on[np.argsort(-lat[on], kind="stable")[: max(1, len(on) // 10)]]
            loose[slow] = 0.0
        # the fixed-copies tries take at most half the time left: the MILP over every column,
        # started from a known plan, always gets its turn
        fixed_deadline = time.perf_counter() + 0.5 * max(0.0, deadline - time.perf_counter())
        for fixed in (whole, loose) if fixed_tries else ():
            if best_cost <= target or not fixed.any():
                continue
            on = np.flatnonzero(fixed > 0)
            used = self._coefficients(on, fixed[on])
            left_rows = self.rows_lo - used
            left_hi = rhs_hi - used
            need = left_rows[: self.T] > 1e-9
            ok = np.asarray([bool(need[types].any()) for (_, _, types, _) in self.cols])
            ok &= fixed == 0
            extra = self._milp(
                np.flatnonzero(ok),
                left_rows,
                left_hi,
                fixed_deadline,
                rel_gap,
                math.inf,
                None,
                abs_gap,
                work,
            )
            if extra is not None:
                plan = fixed.copy()
                np.add.at(plan, np.flatnonzero(ok), extra)
                cost = float(costs @ plan)
                if cost < best_cost:
                    best, best_cost = plan, cost
        if every_column and best_cost > target and len(x) <= 20_000:
            if best is not None:
                start = np.repeat(np.arange(len(best)), best.astype(np.int64)).tolist()
            plan = self._milp(
                np.arange(len(self.cols)),
                self.rows_lo,
                rhs_hi,
                deadline,
                max(rel_gap, accept_gap / 2),
                upper_bound,
                start,
                abs_gap,
                work,
            )
            if plan is not None and float(costs @ plan) < best_cost:
                best = plan
        if best is None:
            return None
        return self._batches(best)

    def _coefficients(self, cols: np.ndarray, copies: np.ndarray) -> np.ndarray:
        """Row activities of ``copies`` of each column (every row of the master)."""
        out = np.zeros(len(self.rows_lo))
        for c, k in zip(cols.tolist(), np.asarray(copies).tolist(), strict=True):
            rows, vals = self.col_rows[c], self.col_vals[c]
            np.add.at(out, rows, k * vals)
        return out

    def _milp(
        self, cols, rows_lo, rows_hi, deadline, rel_gap, upper_bound, start, abs_gap=0.0, work=None
    ):
        """Integer copies of ``cols`` meeting the rows, or None (HiGHS's MILP). It stops once
        its incumbent is within ``rel_gap`` of its own optimum or ``abs_gap`` (cost units), or
        after ``work`` progress checks (:func:`batchlab.exact.limit_work`)."""
        import highspy

        left = deadline - time.perf_counter()
        if left <= 0.02 or not len(cols):
            return None
        m = len(rows_lo)
        lo = np.maximum(rows_lo, 0.0)
        lo[self.T :] = rows_lo[self.T :]
        active = np.concatenate([lo[: self.T] > 1e-9, np.ones(m - self.T, dtype=bool)])
        row_map = np.cumsum(active) - 1
        starts, index, value = [0], [], []
        for c in cols.tolist():
            r = self.col_rows[c]
            keep = active[r]
            index.append(row_map[r[keep]])
            value.append(self.col_vals[c][keep])
            starts.append(starts[-1] + int(keep.sum()))
        n = len(cols)
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = int(active.sum())
        lp.col_cost_ = np.asarray(self.cost_of, dtype=np.float64)[cols]
        lp.col_lower_ = np.zeros(n)
        lp.col_upper_ = np.full(n, self.inf)
        inf = self.inf
        rl, rh = lo[active], rows_hi[active]
        lp.row_lower_ = np.where(np.isinf(rl), -inf, rl)
        lp.row_upper_ = np.where(np.isinf(rh), inf, rh)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.asarray(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.concatenate(index).astype(np.int32)
        lp.a_matrix_.value_ = np.concatenate(value).astype(np.float64)
        lp.integrality_ = [highspy.HighsVarType.kInteger] * n
        h, _ = highs_solver()
        h.passModel(lp)
        limit_work(h, work)
        if start:
            pos = {c: k for k, c in enumerate(cols.tolist())}
            x0 = np.zeros(n)
            for c in start:
                if c in pos:
                    x0[pos[c]] += 1.0
            nz = np.flatnonzero(x0)
            h.setSolution(len(nz), nz.astype(np.int32), x0[nz])
        h.setOptionValue("time_limit", float(max(0.02, left)))
        h.setOptionValue("mip_rel_gap", rel_gap)
        h.setOptionValue("mip_abs_gap", float(abs_gap))
        run_highs(h)
        sol = h.getSolution()
        if not sol.value_valid:
            return None
        x = np.round(np.asarray(sol.col_value, dtype=np.float64))
        # check what HiGHS returned against the rows (its tolerances are not ours)
        act = np.zeros(m)
        for k in np.flatnonzero(x > 0).tolist():
            c = int(cols[k])
            np.add.at(act, self.col_rows[c], x[k] * self.col_vals[c])
        tol = 1e-9 * np.maximum(1.0, np.abs(rows_hi[self.T :]))
        if (act[: self.T] < lo[: self.T] - 1e-9).any() or (
            act[self.T :] > rows_hi[self.T :] + tol
        ).any():
            return None
        return x

    def _batches(self, copies: np.ndarray):
        """Batches from integer copies of every column, members covered twice dropped."""
        left = self.count.copy()
        out = []
        for c in np.flatnonzero(copies > 0).tolist():
            _, _, types, counts = self.cols[c]
            for _ in range(int(round(copies[c]))):
                take = np.minimum(counts, left[types])
                left[types] -= take
                keep = take > 0
                if keep.any():
                    ty = types[keep]
                    out.append((int(self.ti[ty].max()), int(self.tj[ty].max()), ty, take[keep]))
        if (left > 1e-9).any():
            return None
        return out
