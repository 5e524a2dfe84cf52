"""The exact model of batching on caps: certified lower bounds and an exact MILP (HiGHS).

Vocabulary. A *type* is a distinct (aligned prompt length ``a``, gen_len ``g``) pair of one bucket,
with a count ``c`` of requests. A *cap* is a pair (S, G) of tokens: a batch with cap (S, G) may
hold any request with ``a <= S`` and ``g <= G``, and every member pays the batch price at the caps
(``static-graph``: ``decode_cost(S, G)``; ``padded-graph``, where S is the declared shape:
``prefill_cost(S) + decode_cost(S, G)``) plus one overhead per batch. A plan is a set of batches,
each with the caps of its longest members, so every plan is a choice of caps and an assignment of
requests to dominating caps; prices and latencies only grow with the caps.

**Lower bounds (a Lagrangian relaxation).** Multiply the sequential-time limit by μ >= 0 and add
``μ · (sequential_ms − max_sequential_ms)`` to the cost: for a plan that meets the limit the added
term is <= 0, so the minimum of the new objective over *all* plans (the other limits dropped) is a
lower bound on the cost of every plan that meets the limits. In the new objective a batch with cap
k costs ``F_k = overhead + μ · latency_k`` plus ``A_k`` per member. Its linear-programming dual
gives every type a value ``π_t`` with, for every cap k, ``Σ_t c_t · max(0, π_t − A_k) <= F_k``
(no batch is worth more than it costs). Any such π proves ``Σ_t c_t π_t`` <= the cheapest plan's
batching cost: each batch pays ``F_k + Σ_members A_k >= Σ_members π_t``. :func:`dual_ascent`
builds such a π by raising one type at a time as far as every cap allows (Erlenkotter's dual
ascent for facility location), so the bound is valid by construction.

**The exact model** (:func:`solve_exact`, a mixed-integer program for HiGHS): integer ``n_k``
batches per cap and ``x_tk`` requests of type t at cap k, every request covered once, at most
``max_batch_size · n_k`` members per cap, every limit a linear constraint (pad tokens, the count
of requests within the p95 limit, the sequential time, the cost), the compile spike placed on a
chosen request, and under ``padded-graph`` binary shape choices under the global cap. Its optimum
is the optimum of the planning problem and HiGHS's dual bound is a certified lower bound.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from batchlab.cost import CostModel

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "CapProblem",
    "ExactSolution",
    "dual_ascent",
    "dual_ascent_values",
    "highs_solver",
    "lagrangian_bound",
    "limit_work",
    "run_highs",
    "solve_exact",
    "status_name",
]


@dataclass(frozen=True, eq=False)
class CapProblem:
    """One bucket as types over a grid of caps (lengths in tokens, costs in cost units, ms).

    ``type_a``/``type_g``/``type_count``: the distinct (aligned prompt, gen_len) pairs and their
    counts. ``cap_s``/``cap_g``: sorted candidate cap values (S: the bucket's aligned lengths, or
    under ``padded-graph`` the candidate shapes; G: the bucket's gen_len values).
    ``const_cost``: the cost every plan pays outside the batches (``static-graph`` prefill).
    """

    cost_model: CostModel
    type_a: np.ndarray
    type_g: np.ndarray
    type_count: np.ndarray
    cap_s: np.ndarray
    cap_g: np.ndarray
    const_cost: float

    @property
    def n_requests(self) -> int:
        return int(self.type_count.sum())

    def price(self, s, g) -> np.ndarray:
        """Cost each member of a batch with caps (s, g) pays (cost units); where batches are
        priced as a whole, the least share of a member in any batch of this bucket
        (:func:`batchlab.batch_priced.member_share_floor`)."""
        cm = self.cost_model
        out = cm.decode_cost(s, g) if cm.members_pay_caps else self._share_floor(s, g)
        if cm.padded:
            out = out + cm.prefill_cost(s)
        return out

    def _share_floor(self, s, g) -> np.ndarray:
        """Per-member share floor at caps (s, g), from a table over the cap grid built once."""
        from batchlab.batch_priced import member_share_floor

        s, g = np.broadcast_arrays(np.asarray(s, np.int64), np.asarray(g, np.int64))
        i = np.searchsorted(self.cap_s, s)
        j = np.searchsorted(self.cap_g, g)
        i_ok = np.minimum(i, len(self.cap_s) - 1)
        j_ok = np.minimum(j, len(self.cap_g) - 1)
        if not ((self.cap_s[i_ok] == s).all() and (self.cap_g[j_ok] == g).all()):
            return member_share_floor(self.cost_model, s, g, self.n_requests)
        table = self.__dict__.get("_share_table")
        if table is None:
            ss, gg = np.meshgrid(self.cap_s, self.cap_g, indexing="ij")
            table = member_share_floor(self.cost_model, ss, gg, self.n_requests)
            object.__setattr__(self, "_share_table", table)
        return table[i_ok, j_ok]

    def batch_ms(self, s, g) -> np.ndarray:
        """A batch's slowest-member latency at caps (s, g), without the compile spike (ms)."""
        cm = self.cost_model
        return cm.prefill_ms(s) + cm.decode_ms(s, g) + cm.overhead_ms

    def type_cap_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Index of each type's smallest dominating cap value in ``cap_s`` and ``cap_g``."""
        return (
            np.searchsorted(self.cap_s, self.type_a, side="left"),
            np.searchsorted(self.cap_g, self.type_g, side="left"),
        )


def cap_problem(
    cost_model: CostModel,
    aligned: np.ndarray,
    gen: np.ndarray,
    prompt: np.ndarray,
    shapes: np.ndarray | None = None,
) -> tuple[CapProblem, np.ndarray]:
    """The :class:`CapProblem` of one bucket and each request's type index.

    ``shapes``: candidate S caps under ``padded-graph`` (default: the bucket's aligned lengths).
    """
    key = aligned.astype(np.int64) * (int(gen.max()) + 1) + gen
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    ta = uniq // (int(gen.max()) + 1)
    tg = uniq % (int(gen.max()) + 1)
    cm = cost_model
    if cm.padded:
        cap_s = np.unique(aligned) if shapes is None else np.unique(shapes)
        const = 0.0
    else:
        cap_s = np.unique(aligned)
        const = float(cm.prefill_cost(aligned).sum())
    problem = CapProblem(
        cost_model=cm,
        type_a=ta.astype(np.int64),
        type_g=tg.astype(np.int64),
        type_count=counts.astype(np.int64),
        cap_s=cap_s.astype(np.int64),
        cap_g=np.unique(gen).astype(np.int64),
        const_cost=const,
    )
    return problem, inverse.reshape(-1)


# ---------------------------------------------------------------------------------------------
# certified lower bounds


def dual_ascent(
    problem: CapProblem, mu: float, passes: int = 3, deadline: float = math.inf
) -> float:
    """``Σ_t c_t π_t`` for a dual-feasible π of the batching LP under multiplier ``mu``
    (the π of :func:`dual_ascent_values`)."""
    pi, _ = dual_ascent_values(problem, mu, passes, deadline=deadline)
    return float((pi * problem.type_count).sum())


def dual_ascent_values(
    problem: CapProblem,
    mu: float,
    passes: int = 3,
    prices: tuple | None = None,
    deadline: float = math.inf,
) -> tuple[np.ndarray, int]:
    """A dual-feasible π per type (cost units per request) of the batching LP under ``mu``, and
    the number of passes it took.

    Caps are every (S, G) of the grid whose S covers the types (``padded-graph``: the candidate
    shapes up to the smallest that covers the longest prompt; larger ones cost more for the same
    members). Types are raised from their own tight cap's price, the costliest first, each to the
    largest value every cap's slack allows; the slacks stay >= 0, so ``Σ_t c_t π_t`` is a lower
    bound on the batching cost (overheads + members × price + μ × batch latency) of every plan.
    ``prices``: per-cap ``(per-member price, per-batch cost)`` arrays over the whole cap grid
    (cost units, the latency term included) instead of the problem's (e.g. the lines of
    :mod:`batchlab.batch_priced`). Past ``deadline`` (time.perf_counter()) no further type
    is raised: π is dual-feasible after every raise, so it is still a valid bound.
    """
    import time

    ia, ig = problem.type_cap_index()
    top = int(ia.max())
    cap_s = problem.cap_s[: top + 1]
    ss, gg = np.meshgrid(cap_s, problem.cap_g, indexing="ij")
    if prices is None:
        price = problem.price(ss, gg)
        slack = problem.cost_model.overhead_cost + mu * problem.batch_ms(ss, gg)
    else:
        price = np.array(prices[0][: top + 1], dtype=np.float64)
        slack = np.array(prices[1][: top + 1], dtype=np.float64)
    pi = price[ia, ig].copy()
    counts = problem.type_count.astype(np.float64)
    order = np.argsort(-pi, kind="stable")
    # prices grow with both caps (checked): a cap priced at or above the value a type reaches
    # at its own cap can neither lower that value nor lose slack to it, so each type scans the
    # rectangle of its dominating caps priced below that value only
    monotone = bool((np.diff(price, axis=0) >= 0).all() and (np.diff(price, axis=1) >= 0).all())
    n_s, n_g = price.shape
    done = 0
    for _ in range(passes):
        done += 1
        moved = False
        for k, t in enumerate(order.tolist()):
            if k % 256 == 255 and time.perf_counter() > deadline:
                moved = False
                break
            i0, j0 = int(ia[t]), int(ig[t])
            old = pi[t]
            i1, j1 = n_s, n_g
            if monotone:
                own = max(old, price[i0, j0]) + slack[i0, j0] / counts[t]
                i1 = i0 + 1 + int(np.searchsorted(price[i0 + 1 :, j0], own, side="left"))
                j1 = j0 + 1 + int(np.searchsorted(price[i0, j0 + 1 :], own, side="left"))
            a_blk = price[i0:i1, j0:j1]
            s_blk = slack[i0:i1, j0:j1]
            value = float(np.min(np.maximum(old, a_blk) + s_blk / counts[t]))
            if value > old * (1 + 1e-12):
                s_blk -= counts[t] * (np.maximum(0.0, value - a_blk) - np.maximum(0.0, old - a_blk))
                pi[t] = value
                moved = True
        if not moved:
            break
    # a slack may end a rounding error below zero: shave that off every type it touches
    worst = float(min(0.0, slack.min()))
    return pi + worst, done


def lagrangian_bound(
    problem: CapProblem,
    max_sequential_ms: float | None,
    multipliers: list[float],
    extra_const: float = 0.0,
    *,
    with_zero: bool = True,
    deadline: float = math.inf,
) -> tuple[float, float]:
    """The best Lagrangian lower bound over ``multipliers`` (μ, cost units per ms) and its μ.

    bound(μ) = const_cost + extra_const + dual_ascent(μ) − μ · max_sequential_ms; every value is
    <= the cost of every plan that meets the limits (μ = 0 when there is no sequential limit).
    ``with_zero``: μ = 0 is among the multipliers tried. ``deadline``: the dual ascents' hard
    cap (the bound stays valid, only weaker).
    """
    given = {float(m) for m in multipliers} | ({0.0} if with_zero else set())
    mus = [0.0] if max_sequential_ms is None else sorted(given)
    best, best_mu = -math.inf, 0.0
    for mu in mus:
        value = dual_ascent(problem, mu, deadline=deadline) + problem.const_cost + extra_const
        if mu > 0:
            value -= mu * float(max_sequential_ms)
        if value > best:
            best, best_mu = value, mu
    return best, best_mu


# ---------------------------------------------------------------------------------------------
# the exact model


@contextlib.contextmanager
def _quiet_stdout():
    """Silence the C-level banner HiGHS prints when a solver is created: file descriptor 1,
    where C code writes (in Jupyter, ``sys.stdout.fileno()`` is a copy of it, not the one the
    kernel captures and shows)."""
    fd = 1
    try:
        sys.stdout.flush()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def run_highs(h) -> None:
    """``h.run()``, once more without presolve when HiGHS ends in a solve error (its presolve
    fails on some models whose limit rows are tight at the optimum)."""
    import highspy

    h.run()
    if h.getModelStatus() == highspy.HighsModelStatus.kSolveError:
        h.setOptionValue("presolve", "off")
        h.clearSolver()
        h.run()


def highs_solver():
    """A quiet, single-threaded HiGHS instance (no banner, no log) and HiGHS's infinity."""
    import highspy

    with _quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    return h, highspy.kHighsInf


def limit_work(h, checks: int | None) -> None:
    """Stop HiGHS's MIP search after ``checks`` of its own progress checks (its
    interrupt-callback points: root cut rounds, heuristics, nodes), a measure of work that,
    unlike its time limit, does not depend on how fast or loaded the machine is: single-threaded
    HiGHS takes the same path on the same model, so the same budget stops it at the same
    incumbent and bound. The solve then ends with status ``kInterrupt``. None: no limit."""
    if checks is None:
        return
    count = [0]

    def on_check(event) -> None:
        count[0] += 1
        if count[0] >= checks:
            event.interrupt()

    h.cbMipInterrupt.subscribe(on_check)


def status_name(status) -> str:
    """HiGHS's model status as a word: "optimal", "infeasible", "time_limit", "work_limit"
    (:func:`limit_work`'s budget spent), or HiGHS's own name."""
    import highspy

    names = {
        highspy.HighsModelStatus.kOptimal: "optimal",
        highspy.HighsModelStatus.kInfeasible: "infeasible",
        highspy.HighsModelStatus.kTimeLimit: "time_limit",
        highspy.HighsModelStatus.kInterrupt: "work_limit",
    }
    return names.get(status, str(status))


@dataclass(frozen=True)
class BucketSpec:
    """One bucket of the exact model: its cap problem and limits (None: no limit)."""

    problem: CapProblem
    max_batch_size: int | None
    max_cost: float | None
    max_pad_ratio: float | None
    max_p95_latency_ms: float | None
    max_sequential_ms: float | None
    prompt_sum: int
    gen_sum: int
    align_pad: int  # Σ (aligned − prompt): the prompt padding every static-graph plan pays
    compile_cost: float  # static-graph: the bucket's compile cost (its shape is fixed outside)


@dataclass(frozen=True, eq=False)
class ExactSolution:
    """What HiGHS returned: ``status`` ("optimal", "time_limit", "work_limit", "infeasible", ...), the plan
    as batches per bucket (lists of (type index, count) lists, the cap and the spike carrier),
    the objective and the certified ``bound`` (cost units)."""

    status: str
    objective: float
    bound: float
    buckets: tuple  # per bucket: list of (s, g, [(type, count), ...]) batches
    carriers: tuple  # per bucket: {shape: type index carrying the compile spike}
    shapes: tuple  # per bucket: {shape} used (padded-graph) or ()


class _Model:
    """A sparse MILP built column by column."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[bool] = []
        self.rows_lo: list[float] = []
        self.rows_hi: list[float] = []
        self.entries: list[tuple[int, int, float]] = []

    def var(self, cost: float, lo: float, hi: float, integer: bool = True) -> int:
        self.cost.append(float(cost))
        self.lo.append(float(lo))
        self.hi.append(float(hi))
        self.integer.append(integer)
        return len(self.cost) - 1

    def row(self, lo: float, hi: float, terms) -> int:
        r = len(self.rows_lo)
        self.rows_lo.append(float(lo))
        self.rows_hi.append(float(hi))
        for col, val in terms:
            if val != 0:
                self.entries.append((r, col, float(val)))
        return r

    def solve(
        self,
        time_limit_s: float,
        highspy,
        known: dict | None = None,
        rel_gap: float = 1e-9,
        work: int | None = None,
    ) -> tuple:
        """Solve with HiGHS; ``known``: values of some variables (a known plan: HiGHS starts
        from it when it is feasible, the others at 0); ``rel_gap``: stop once the incumbent
        is proved within this share of the optimum; ``work``: stop after this many of HiGHS's
        progress checks (:func:`limit_work`)."""
        n, m = len(self.cost), len(self.rows_lo)
        inf = highspy.kHighsInf
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = m
        lp.col_cost_ = np.asarray(self.cost)
        lp.col_lower_ = np.asarray(self.lo)
        lp.col_upper_ = np.where(np.isinf(self.hi), inf, self.hi)
        lp.row_lower_ = np.where(np.isinf(self.rows_lo), -inf, self.rows_lo)
        lp.row_upper_ = np.where(np.isinf(self.rows_hi), inf, self.rows_hi)
        ent = np.asarray(self.entries, dtype=np.float64).reshape(-1, 3)
        order = np.lexsort((ent[:, 0], ent[:, 1]))
        ent = ent[order]
        cols = ent[:, 1].astype(np.int64)
        start = np.searchsorted(cols, np.arange(n + 1), side="left")
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = start.astype(np.int32)
        lp.a_matrix_.index_ = ent[:, 0].astype(np.int32)
        lp.a_matrix_.value_ = ent[:, 2]
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
            for i in self.integer
        ]
        with _quiet_stdout():
            h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(max(0.05, time_limit_s)))
        h.setOptionValue("mip_rel_gap", float(rel_gap))
        h.setOptionValue("mip_abs_gap", 0.0)
        h.setOptionValue("threads", 1)
        h.passModel(lp)
        limit_work(h, work)
        if known:
            x0 = np.zeros(n)
            idx = np.fromiter(known.keys(), dtype=np.int64, count=len(known))
            x0[idx] = np.fromiter(known.values(), dtype=np.float64, count=len(known))
            plan = highspy.HighsSolution()
            plan.col_value = x0.tolist()
            plan.value_valid = True
            h.setSolution(plan)
        run_highs(h)
        status = h.getModelStatus()
        info = h.getInfo()
        sol = h.getSolution()
        values = np.asarray(sol.col_value) if sol.value_valid else None
        if known and values is not None:
            # HiGHS (1.16) can hand back the start's values with the objective and the "optimal"
            # status of another point (seen on a 5-request padded-graph instance): its claims
            # are then not about the plan returned, so solve again without the start
            held = float(np.dot(self.cost, values))
            claimed = float(info.objective_function_value)
            if abs(held - claimed) > 1e-7 * max(1.0, abs(held)):
                return self.solve(time_limit_s, highspy, None, rel_gap, work)
        return status, info, values


def _start_values(start: list, layout: list, y: dict, padded: bool) -> dict | None:
    """Variable values of a known plan (see :func:`solve_exact`), or None when a batch's cap,
    member or carrier is not a variable of the model."""
    out: dict[int, float] = {}
    for batches, (n_vars, x_vars, w_vars, z_vars) in zip(start, layout, strict=True):
        spikes: set = set()
        for s, g, members, carrier in batches:
            k = n_vars.get((s, g))
            if k is None:
                return None
            out[k] = out.get(k, 0.0) + 1.0
            for t, cnt in members.items():
                x = x_vars.get((t, s, g))
                if x is None:
                    return None
                out[x] = out.get(x, 0.0) + float(cnt)
            if carrier is not None and w_vars:
                w = w_vars.get((carrier, s, g))
                if w is None or s in spikes:
                    return None
                spikes.add(s)
                out[w] = 1.0
            if padded:
                if s not in z_vars:
                    return None
                out[z_vars[s]] = 1.0
                out[y[s]] = 1.0
    return out


def model_size(specs: list[BucketSpec]) -> int:
    """Number of (type, cap) assignment variables the exact model would have."""
    total = 0
    for spec in specs:
        p = spec.problem
        n_s = len(p.cap_s) - np.searchsorted(p.cap_s, p.type_a, side="left")
        n_g = len(p.cap_g) - np.searchsorted(p.cap_g, p.type_g, side="left")
        total += int((n_s * n_g).sum())
    return total


def solve_exact(
    specs: list[BucketSpec],
    max_shapes: int,
    time_limit_s: float,
    start: list | None = None,
    rel_gap: float = 1e-9,
    work_limit: int | None = None,
) -> ExactSolution:
    """Solve the planning problem exactly with HiGHS (see the module docstring).

    Every cap (S, G) of each bucket's grid and every (type, dominating cap) pair is a variable,
    so use it on instances whose :func:`model_size` is small (thousands). Under ``static-graph``
    each bucket's shape (and compile cost) is fixed by the caller and only one compile spike
    exists per bucket; under ``padded-graph`` the shapes are chosen here under ``max_shapes``.

    ``start``: a known plan to start from, per bucket a list of batches ``(s, g, {type:
    count}, carrier type or None)`` (the carrier takes the shape's compile spike); ignored
    where it does not fit the model. ``rel_gap``: HiGHS stops once its incumbent is proved
    within this share of the optimum (the returned bound stays certified). ``work_limit``: stop
    after this many of HiGHS's progress checks (:func:`limit_work`; status ``"work_limit"``), a
    budget that gives the same result on a fast or a slow machine; ``time_limit_s`` is then a
    hard cap only.
    """
    import highspy

    md = _Model()
    inf = math.inf
    padded = specs[0].problem.cost_model.padded
    all_shapes = np.unique(np.concatenate([s.problem.cap_s for s in specs])) if padded else None
    y = {}
    if padded:
        for s in all_shapes.tolist():
            y[s] = md.var(0.0, 0, 1)
        md.row(-inf, max_shapes, [(v, 1.0) for v in y.values()])
    layout = []
    const = 0.0
    for spec in specs:
        p = spec.problem
        cm = p.cost_model
        n_req = p.n_requests
        mbs = n_req if spec.max_batch_size is None else min(int(spec.max_batch_size), n_req)
        const += p.const_cost + (0.0 if padded else spec.compile_cost)
        n_vars, x_vars, w_vars, z_vars = {}, {}, {}, {}
        seq_terms, pad_terms, ok_terms, cost_terms = [], [], [], []
        cover = {t: [] for t in range(len(p.type_a))}
        pre_ms_t = cm.prefill_ms(p.type_a)
        compile_ms = cm.compile_ms
        lines = None
        if not cm.members_pay_caps:  # batches priced as a whole: lines over the batch size
            from batchlab.batch_priced import batch_lines

            ss, gg = np.meshgrid(p.cap_s, p.cap_g, indexing="ij")
            lines = batch_lines(cm, ss, gg, mbs)
            s_index = {int(v): i for i, v in enumerate(p.cap_s.tolist())}
            g_index = {int(v): j for j, v in enumerate(p.cap_g.tolist())}
        # where the compile spike lands matters only to the p95 count and, under static-graph
        # (where it adds to the batch's slowest member), to the sequential time: without those
        # limits the model has no spike variables
        spiked = spec.max_p95_latency_ms is not None or (
            not padded and spec.max_sequential_ms is not None
        )
        if padded:
            for s in p.cap_s.tolist():
                if s < int(p.type_a.min()):
                    continue
                cc = float(cm.compile_cost(s))
                z = md.var(cc, 0, 1)
                z_vars[s] = z
                md.row(-inf, 0.0, [(z, 1.0), (y[s], -1.0)])
                cost_terms.append((z, cc))
                seq_terms.append((z, compile_ms))
        for s in p.cap_s.tolist():
            dom_s = np.flatnonzero(p.type_a <= s)
            if dom_s.size == 0:
                continue
            if not padded and not (p.type_a == s).any():
                continue  # static-graph caps are tight in S
            for g in p.cap_g.tolist():
                dom = dom_s[p.type_g[dom_s] <= g]
                if dom.size == 0 or not (p.type_g[dom] == g).any():
                    continue  # a cap in G nobody reaches is never tight
                price = float(p.price(s, g))
                lat = float(p.batch_ms(s, g))
                dec_ms = float(cm.decode_ms(s, g)) + cm.overhead_ms
                k = md.var(cm.overhead_cost, 0, math.ceil(n_req / 1))
                n_vars[(s, g)] = k
                if lines is not None:
                    # Σ over the cap's batches of their decode cost (zc) and decode time (zm),
                    # each at least α_l · batches + β_l · members on every line l; a member
                    # pays only its prefill at the shape (padded) or nothing
                    price = float(cm.prefill_cost(s)) if padded else 0.0
                    at = (s_index[s], g_index[g])
                    zc = md.var(1.0, 0, inf, integer=False)
                    zm = md.var(0.0, 0, inf, integer=False)
                    seq_terms += [(k, lat - float(cm.decode_ms(s, g))), (zm, 1.0)]
                    cost_terms.append((zc, 1.0))
                    batch_rows = [(zc, lines[0], at), (zm, lines[1], at)]
                else:
                    seq_terms.append((k, lat))
                    batch_rows = []
                cost_terms.append((k, cm.overhead_cost))
                members = []
                tight = []
                for t in dom.tolist():
                    ct = int(p.type_count[t])
                    x = md.var(price, 0, ct)
                    x_vars[(t, s, g)] = x
                    cover[t].append(x)
                    members.append((x, 1.0))
                    cost_terms.append((x, price))
                    md.row(-inf, 0.0, [(x, 1.0), (k, -float(min(ct, mbs)))])
                    if p.type_a[t] == s:
                        tight.append((x, 1.0))
                    width = g + (s if padded else 0)
                    pad_terms.append((x, float(width)))
                    if padded:
                        own_ms = lat
                    else:
                        own_ms = pre_ms_t[t] + dec_ms
                    lim95 = spec.max_p95_latency_ms
                    if lim95 is not None:
                        ok = own_ms <= lim95 * (1 + 1e-12)
                        ok_spiked = own_ms + compile_ms <= lim95 * (1 + 1e-12)
                        if ok:
                            ok_terms.append((x, 1.0))
                    else:
                        ok = ok_spiked = True
                    # the compile spike may ride on this (type, cap)
                    inc = (
                        compile_ms
                        if padded
                        else max(0.0, pre_ms_t[t] + compile_ms - float(cm.prefill_ms(s)))
                    )
                    if not spiked:
                        continue
                    w = md.var(0.0, 0, 1)
                    w_vars[(t, s, g)] = w
                    md.row(-inf, 0.0, [(w, 1.0), (x, -1.0)])
                    if not padded:
                        seq_terms.append((w, inc))
                    if lim95 is not None and ok and not ok_spiked:
                        ok_terms.append((w, -1.0))
                md.row(-inf, 0.0, [*members, (k, -float(mbs))])
                for z, ln, at in batch_rows:
                    for a_l, b_l in zip(ln.alpha[at].tolist(), ln.beta[at].tolist(), strict=True):
                        md.row(0.0, inf, [(z, 1.0), (k, -a_l), *[(x, -b_l) for x, _ in members]])
                if batch_rows:
                    md.row(0.0, inf, [*members, (k, -1.0)])  # no batch is empty
                if not padded:
                    md.row(0.0, inf, [*tight, (k, -1.0)])
                else:
                    md.row(-inf, 0.0, [(k, 1.0), (z_vars[s], -float(n_req))])
        for t, xs in cover.items():
            ct = float(p.type_count[t])
            md.row(ct, ct, [(x, 1.0) for x in xs])
        # one spike per shape used
        if padded and spiked:
            by_shape: dict = {}
            for (_, ss, _), w in w_vars.items():
                by_shape.setdefault(ss, []).append((w, 1.0))
            for s, z in z_vars.items():
                md.row(0.0, 0.0, [*by_shape.get(s, []), (z, -1.0)])
        elif spiked:
            md.row(1.0, 1.0, [(w, 1.0) for w in w_vars.values()])
        if spec.max_sequential_ms is not None:
            md.row(-inf, spec.max_sequential_ms, seq_terms)
        if spec.max_pad_ratio is not None:
            useful = spec.prompt_sum + spec.gen_sum
            extra = spec.prompt_sum if padded else -spec.align_pad
            md.row(-inf, spec.max_pad_ratio * useful + spec.gen_sum + extra, pad_terms)
        if spec.max_p95_latency_ms is not None:
            md.row(math.ceil(0.95 * n_req), inf, ok_terms)
        if spec.max_cost is not None:
            fixed = p.const_cost + (0.0 if padded else spec.compile_cost)
            md.row(-inf, spec.max_cost - fixed, cost_terms)
        layout.append((n_vars, x_vars, w_vars, z_vars))
    values0 = None if start is None else _start_values(start, layout, y, padded)
    status, info, values = md.solve(time_limit_s, highspy, values0, rel_gap, work_limit)
    name = status_name(status)
    stopped = ("optimal", "time_limit", "work_limit")
    bound = float(info.mip_dual_bound) + const if name in stopped else -math.inf
    if name == "optimal":
        bound = min(bound, float(info.objective_function_value) + const)
    if values is None or name not in stopped:
        return ExactSolution(name, math.inf, bound, (), (), ())
    out_batches, out_carriers, out_shapes = [], [], []
    for n_vars, x_vars, w_vars, z_vars in layout:
        per_cap: dict = {}
        for (t, s, g), x in x_vars.items():
            cnt = round(values[x])
            if cnt > 0:
                per_cap.setdefault((s, g), []).append((t, cnt))
        batches = []
        for (s, g), k in n_vars.items():
            nk = round(values[k])
            if nk > 0 and (s, g) in per_cap:
                batches.append((s, g, nk, per_cap[(s, g)]))
        carriers = {}
        for (t, s, g), w in w_vars.items():
            if round(values[w]) == 1:
                carriers[s] = (t, s, g)
        out_batches.append(batches)
        out_carriers.append(carriers)
        out_shapes.append({s for s, z in z_vars.items() if round(values[z]) == 1})
    return ExactSolution(
        name,
        float(info.objective_function_value) + const,
        bound,
        tuple(out_batches),
        tuple(out_carriers),
        tuple(out_shapes),
    )


# ---------------------------------------------------------------------------------------------
# a bound that knows the shape cap (padded-graph)


def _row_duals(problem: CapProblem, mu: float, deadline: float = math.inf) -> np.ndarray:
    """ψ[i, t]: a dual value of type t when it is served at shape ``cap_s[i]`` or above.

    For each shape s alone, dual ascent over the caps (s, G) gives φ(s); ψ is its running minimum
    from the largest shape down, so it never decreases with s and stays feasible for every row.
    Entries of shapes below a type's aligned length are +inf. Past ``deadline``
    (time.perf_counter()) no further type is raised: every prefix of raises is feasible.
    """
    import time

    ia, ig = problem.type_cap_index()
    n_s, n_t = len(problem.cap_s), len(problem.type_a)
    counts = problem.type_count.astype(np.float64)
    phi = np.full((n_s, n_t), np.inf)
    for i, s in enumerate(problem.cap_s.tolist()):
        members = np.flatnonzero(ia <= i)
        if members.size == 0:
            continue
        price = problem.price(s, problem.cap_g)
        slack = problem.cost_model.overhead_cost + mu * problem.batch_ms(s, problem.cap_g)
        pi = price[ig[members]].copy()
        for k, pos in enumerate(np.argsort(-pi, kind="stable").tolist()):
            if k % 256 == 255 and time.perf_counter() > deadline:
                break
            t = members[pos]
            a_blk = price[ig[t] :]
            s_blk = slack[ig[t] :]
            old = pi[pos]
            value = float(np.min(np.maximum(old, a_blk) + s_blk / counts[t]))
            if value > old:
                s_blk -= counts[t] * (np.maximum(0.0, value - a_blk) - np.maximum(0.0, old - a_blk))
                pi[pos] = value
        worst = float(min(0.0, slack.min()))
        phi[i, members] = pi + worst  # shave a rounding error off the row's types
    return np.minimum.accumulate(phi[::-1], axis=0)[::-1]


def _price_duals(problem: CapProblem) -> np.ndarray:
    """ψ[i, t] = the price per member of type t at shape ``cap_s[i]`` and its own gen_len (+inf
    below its aligned length): feasible for every cap at μ = 0 (a cap's price is at least
    that of each type it dominates), non-decreasing in the shape, and vectorized; the overhead
    of the batches is left to the caller. Far weaker than :func:`_row_duals` under a binding
    sequential limit, and far cheaper (no loop over types)."""
    s = problem.cap_s.astype(np.float64)[:, None]
    psi = problem.price(s, problem.type_g.astype(np.float64)[None, :]).astype(np.float64)
    return np.where(s >= problem.type_a[None, :], psi, np.inf)


def shape_cap_bound(
    problems: list[CapProblem],
    mus: list[float],
    max_sequential_ms: list[float | None],
    max_shapes: int,
    extra_const: float,
    granularity: int,
    duals: str = "ascent",
    shape_cost: Callable[[np.ndarray], ArrayLike] | None = None,
    deadline: float = math.inf,
) -> float:
    """A lower bound on the total cost of several buckets under a shared cap of ``max_shapes``
    shapes (``padded-graph``; every problem's ``cap_s`` is the same candidate shape set).

    For any shape set Y, giving each type the row dual ψ of its smallest covering shape in Y is
    feasible for every cap of Y, so Σ_t c_t ψ_t(σ_Y(t)) bounds the batching cost of every plan
    with shapes Y; the exact shape DP then finds the Y of least such value (at most max_shapes
    shapes). Adds each bucket's constant and subtracts μ_b × max_sequential_ms_b.
    ``duals="price"``: each type's own price at the shape (:func:`_price_duals`, μ ignored:
    valid under any limits), for buckets too large for the dual ascent; the caller adds the
    batches' overhead. ``shape_cost(seq_align)``: a cost every plan pays once per shape it uses
    (the compile), non-decreasing; the DP then adds it for every shape of Y (a plan's shapes
    lowered to the largest length each serves cost no more, compile included), so
    ``extra_const`` should not hold it too. ``deadline``: the dual ascents' hard cap (the
    bound stays valid, only weaker).
    """
    from batchlab.shapes import joint_optimal_shapes

    shapes = problems[0].cap_s
    index = {int(s): i for i, s in enumerate(shapes.tolist())}
    table = np.zeros((len(shapes), len(shapes)))
    const = extra_const
    for problem, mu, limit in zip(problems, mus, max_sequential_ms, strict=True):
        if duals == "price":
            psi, mu = _price_duals(problem), 0.0
        else:
            psi = _row_duals(problem, mu if limit is not None else 0.0, deadline)
        a_idx = np.searchsorted(shapes, problem.type_a)
        weighted = psi * problem.type_count[None, :]
        for j in np.unique(a_idx).tolist():
            table[:, j] += weighted[:, a_idx == j].sum(axis=1)
        const += problem.const_cost - (mu * limit if limit is not None else 0.0)
    present = np.flatnonzero(np.isfinite(table).any(axis=0) & (table != 0).any(axis=0))
    lengths = shapes[present]
    with np.errstate(invalid="ignore"):
        table = np.where(np.isnan(table), np.inf, table)

    def cost(seq_align, aligned_len):
        return table[[index[int(s)] for s in seq_align], [index[int(a)] for a in aligned_len]]

    chosen = joint_optimal_shapes(
        [lengths], max_shapes, granularity, cost=cost, fixed_cost=shape_cost
    )
    sigma = chosen[np.searchsorted(chosen, lengths)]
    value = sum(table[index[int(s)], index[int(a)]] for s, a in zip(sigma, lengths, strict=True))
    if shape_cost is not None:
        value += float(np.sum(shape_cost(chosen)))
    return float(value + const)
