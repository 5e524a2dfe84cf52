"""Branch and price on caps: a lower bound above the LP relaxation of column generation.

The master LP of :mod:`batchlab.colgen` can sit well below every plan where few batches carry
the limits (a wide-length bucket of 60 requests under a tight sequential limit: 8.8 % below the
optimum, with a quarter of each of four slow batches where a plan must run whole ones). Its
integrality gap closes by *branching*: split the plans into those that run at most ⌊v⌋ batches
at some cap (S, G) and those that run at least ⌈v⌉, where the LP runs a fractional v; solve
each part's LP (column generation again, the cap row's dual joining its columns' reduced cost,
so pricing stays the same vectorized search); split again. Every plan lies in one leaf, so the
least bound over the open leaves is a lower bound on every plan: **the branch bound is
certified at any moment**, also when the time runs out first. A leaf whose Lagrangian bound is
at least a known plan's cost is closed (pruned); when every leaf is closed the known plan is
optimal. Nodes are taken best bound first, which raises the global bound fastest.

Each node's bound is the Lagrangian bound of its master (valid for its plans whether or not
its column generation converged), and never below its parent's.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from batchlab.colgen import CapColumnGeneration

__all__ = ["BranchResult", "branch_on_caps"]


@dataclass(frozen=True)
class BranchResult:
    """What :func:`branch_on_caps` reached: ``bound`` (a certified lower bound on the cost of
    every plan meeting the limits, cost units, at least the root's), ``nodes`` (masters
    solved), ``open_nodes`` (left when it stopped) and ``status``: ``"closed"`` (no open node
    is below the known plan's cost within the gap: that plan is proved within it),
    ``"integral"`` (every open node's LP runs whole batches at every cap) or ``"stopped"``
    (deadline or node limit)."""

    bound: float
    nodes: int
    open_nodes: int
    status: str


def _branch_cap(cg: CapColumnGeneration, usage: np.ndarray) -> tuple[int, int] | None:
    """The cap to branch on: the most fractional batch count, weighted by what a batch at the
    cap takes of the sequential limit (or costs, without one); None when all are whole."""
    frac = usage - np.floor(usage + 1e-7)
    far = np.minimum(frac, 1.0 - frac)
    far[far < 1e-6] = 0.0
    if not far.any():
        return None
    weight = cg.lat if "seq" in cg.side else cg.overhead + cg.mbs * cg.price
    score = far * np.maximum(weight, 1e-300)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(i), int(j)


def branch_on_caps(
    cg: CapColumnGeneration,
    deadline: float,
    *,
    root_bound: float,
    upper_bound: float = math.inf,
    stop_gap: float = 2e-4,
    max_nodes: int | None = None,
    rounds_per_node: int = 40,
    on_leaf: Callable[[], float | None] | None = None,
) -> BranchResult:
    """Branch and price on one bucket's master (see the module docstring), best bound first,
    until the least open bound is within ``stop_gap`` of ``upper_bound`` (a known plan's
    cost, cost units), ``max_nodes`` masters have been solved, or ``deadline``
    (time.perf_counter()) passes. ``root_bound``: a certified bound of the whole problem (the
    root's, e.g. column generation's). The master comes back with its caps unlimited and its
    best duals as they were; its LP solution is the last node's (re-solve before reading it).
    The columns the nodes generated stay: a richer pool for integer plans.

    At a node whose LP runs whole batches at every cap (a leaf: no cap to split),
    ``on_leaf`` (if given) may look for a plan in the master as it stands (its LP solution and
    the node's cap limits) and return that plan's cost (a real plan meeting the limits, cost
    units) or None: a cheaper plan lowers ``upper_bound`` and prunes more."""
    target = upper_bound / (1.0 + stop_gap) if math.isfinite(upper_bound) else math.inf
    saved = (cg.best_bound, cg.center)
    heap: list[tuple[float, int, dict]] = [(root_bound, 0, {})]
    closed = math.inf  # least bound of the nodes closed above the target or left unsplit
    count = nodes = 0
    status = "stopped"
    try:
        while heap and heap[0][0] < target:
            if time.perf_counter() > deadline or (max_nodes is not None and nodes >= max_nodes):
                break
            bound, _, limits = heapq.heappop(heap)
            cg.limit_caps(limits)
            cg.best_bound, cg.center = -math.inf, None
            res = cg.solve(
                deadline, upper_bound=upper_bound, stop_gap=stop_gap, max_rounds=rounds_per_node
            )
            nodes += 1
            if res.status == "infeasible":
                continue  # no plan meets this node's limits
            node_bound = max(bound, res.bound)
            usage = cg.cap_usage(cg.lp_solution())
            cap = _branch_cap(cg, usage)
            if cap is None and node_bound < target and on_leaf is not None:
                found = on_leaf()
                if found is not None and found < upper_bound:
                    upper_bound = found
                    target = upper_bound / (1.0 + stop_gap)
            if node_bound >= target or cap is None:
                closed = min(closed, node_bound)  # pruned, or whole at every cap: a leaf
                continue
            if res.status != "optimal" and time.perf_counter() > deadline:
                heapq.heappush(heap, (node_bound, -1, limits))  # cut short: stays open
                break
            lo, hi = limits.get(cap, (0, None))
            v = float(usage[cap])
            for child in ((lo, math.floor(v + 1e-7)), (math.ceil(v - 1e-7), hi)):
                count += 1
                heapq.heappush(heap, (node_bound, count, {**limits, cap: child}))
    finally:
        cg.limit_caps({})
        best, center = saved
        if center is not None:  # the rows made since take no part in it (dual 0)
            center = np.concatenate([center, np.zeros(len(cg.rows_lo) - len(center))])
        cg.best_bound, cg.center = best, center
    least = min(heap[0][0] if heap else math.inf, closed, upper_bound)
    if status == "stopped" and not (heap and heap[0][0] < target):
        status = "closed" if least >= target else "integral"
    bound = max(root_bound, least) if math.isfinite(least) else root_bound
    return BranchResult(float(bound), nodes, len(heap), status)
