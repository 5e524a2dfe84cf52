"""Capstone · two request buckets, one shape cap, limits on cost, padding, latency and time.

The buckets are the first ``N_REQUESTS`` requests of the Azure conversation trace (``conv``) and
of the Azure code trace (``code``). The learner gives one plan per bucket; together they may
use at most ``MAX_SHAPES`` distinct shapes, and each bucket's plan must meet its ``LIMITS``
(total cost, pad ratio, p95 latency, sequential time, batch size) under the ``static-graph``
cost model.

``q1.check(plans)`` verifies the plans (``plan.verify_plans`` with the global cap), evaluates
each one, and shows a scorecard: per bucket and metric the value reached, the limit, the lower
bound no plan can beat and whether the limit is met. :func:`scorecard` does the same for any
buckets, plans and limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab import evaluate, plan, planner
from batchlab.cost import CostModel, get_cost_model
from batchlab.errors import BatchlabError, InputError
from batchlab.exercises._core import (
    AnswerError,
    CheckResult,
    CustomQuestion,
    fmt,
    load_trace,
    make_result,
    percent,
)

__all__ = [
    "BUCKETS",
    "LIMITS",
    "MAX_SHAPES",
    "N_REQUESTS",
    "QUESTIONS",
    "Scorecard",
    "load_buckets",
    "q1",
    "scorecard",
]

EXERCISE = "capstone"
N_REQUESTS = 1000
BUCKETS = {"conv": "azure-conv-2023", "code": "azure-code-2023"}  # bucket -> trace
MAX_SHAPES = 8
COST_MODEL = "static-graph"
LIMITS: dict[str, planner.Limits] = {
    "conv": planner.Limits(
        max_cost=1.2e12,
        max_pad_ratio=0.15,
        max_p95_latency_ms=4e6,
        max_sequential_ms=1e8,
        max_batch_size=64,
    ),
    "code": planner.Limits(
        max_cost=7e11,
        max_pad_ratio=0.15,
        max_p95_latency_ms=6e6,
        max_sequential_ms=2e8,
        max_batch_size=64,
    ),
}
"""Limits per bucket: cost units, padding tokens per useful token, ms, ms, requests."""

#: scorecard metric -> (Limits field, LowerBounds field or None)
_METRICS = {
    "total_cost": ("max_cost", "min_cost"),
    "pad_ratio": ("max_pad_ratio", "min_pad_ratio"),
    "p95_latency_ms": ("max_p95_latency_ms", "min_p95_latency_ms"),
    "sequential_ms": ("max_sequential_ms", "min_sequential_ms"),
    "max_batch_size": ("max_batch_size", None),
}
_REL = 1e-12  # a value within this relative margin of its limit meets it (as the planner)


def load_buckets() -> dict[str, pd.DataFrame]:
    """The capstone's two request tables, ``{"conv": ..., "code": ...}`` (read-only)."""
    return {name: load_trace(trace, limit=N_REQUESTS) for name, trace in BUCKETS.items()}


@dataclass(frozen=True, eq=False)
class Scorecard:
    """The outcome of :func:`scorecard`.

    ``ok``: the plans verify together (every request once, one shape per batch, shapes cover
    their prompts, at most ``max_shapes`` distinct shapes) and every limit is met.
    ``verification``: the :class:`~batchlab.plan.VerificationReport`. ``table``: one row per
    bucket and metric (``bucket, metric, achieved, limit, lower_bound, met``; ``achieved`` is
    NaN when a plan cannot be evaluated), then the plans' distinct shapes against the cap and
    their total cost against the sum of the buckets' lower bounds (bucket ``"all"``).
    ``evaluations``: bucket -> Evaluation (missing when the plan could not be evaluated).
    """

    ok: bool
    verification: plan.VerificationReport
    table: pd.DataFrame
    evaluations: dict[str, evaluate.Evaluation]

    @property
    def total_cost(self) -> float:
        """Total cost of every plan that could be evaluated (cost units)."""
        return float(sum(ev.cost.total for ev in self.evaluations.values()))

    @property
    def failures(self) -> pd.DataFrame:
        """The rows of ``table`` whose limit is not met."""
        return self.table[~self.table["met"]]


def _as_plans(plans: Any, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Plans as ``{bucket: DataFrame}`` from a mapping, a planner result or a sequence."""
    if isinstance(plans, planner.PlanResult):
        return {b.name: b.plan for b in plans.buckets}
    if isinstance(plans, pd.DataFrame):
        raise AnswerError(
            f"expected one plan per bucket ({', '.join(names)}), e.g. a dict "
            "{bucket name: plan table}; got a single table"
        )
    if isinstance(plans, Mapping):
        out = {}
        for name, value in plans.items():
            if isinstance(value, planner.BucketPlan):
                value = value.plan
            out[str(name)] = value
        return out
    if isinstance(plans, Sequence) and not isinstance(plans, str):
        items = list(plans)
        if len(items) != len(names):
            raise AnswerError(f"expected {len(names)} plans ({', '.join(names)}), got {len(items)}")
        return dict(zip(names, items, strict=True))
    raise AnswerError(
        "expected a dict {bucket name: plan table} (or the planner's result), got a "
        f"{type(plans).__name__}"
    )


def scorecard(
    buckets: Mapping[str, pd.DataFrame],
    plans: Mapping[str, pd.DataFrame] | planner.PlanResult | Sequence[pd.DataFrame],
    limits: Mapping[str, planner.Limits],
    max_shapes: int = MAX_SHAPES,
    cost_model: str | CostModel = COST_MODEL,
) -> Scorecard:
    """Verify and evaluate one plan per bucket against the buckets' limits and a global cap.

    ``buckets``: name -> request table; ``plans``: name -> plan table (or a
    :class:`~batchlab.planner.PlanResult`, or a sequence in the buckets' order); ``limits``:
    name -> :class:`~batchlab.planner.Limits` (costs in cost units, latencies in ms);
    ``max_shapes``: the cap on distinct shapes over all plans together. Raises
    :class:`~batchlab.errors.InputError` when the plans do not name the buckets or a plan table
    is malformed (wrong columns or values).
    """
    names = list(buckets)
    given = _as_plans(plans, names)
    if set(given) != set(names):
        missing = sorted(set(names) - set(given))
        extra = sorted(set(given) - set(names))
        parts = []
        if missing:
            parts.append(f"no plan for bucket(s) {missing}")
        if extra:
            parts.append(f"plans for unknown bucket(s) {extra}")
        raise InputError(f"{'; '.join(parts)}; the buckets are {names}", field="plans")
    cm = get_cost_model(cost_model)
    validated = {}
    for name in names:
        if not isinstance(given[name], pd.DataFrame):
            raise InputError(
                f"the plan of bucket {name!r} must be a plan table (DataFrame), got "
                f"{type(given[name]).__name__}",
                field="plans",
            )
        validated[name] = plan.validate_plan(given[name], source=f"plan {name!r}")
    report = plan.verify_plans(
        {n: buckets[n] for n in names}, validated, max_shapes=max_shapes, granularity=cm.granularity
    )
    rows = []
    evaluations: dict[str, evaluate.Evaluation] = {}
    bound_total = 0.0
    for name in names:
        lim = limits.get(name, planner.Limits())
        mbs = lim.max_batch_size
        bounds = planner.lower_bounds(buckets[name], cm, mbs)
        bound_total += bounds.min_cost
        try:
            ev = evaluate.evaluate(buckets[name], validated[name], cm)
        except BatchlabError:
            ev = None
        if ev is not None:
            evaluations[name] = ev
            summary = ev.summary()
            summary["max_batch_size"] = int(ev.batches["size"].max())
        for metric, (limit_field, bound_field) in _METRICS.items():
            limit = getattr(lim, limit_field)
            achieved = math.nan if ev is None else float(summary[metric])
            bound = math.nan if bound_field is None else getattr(bounds, bound_field)
            met = ev is not None and (limit is None or achieved <= float(limit) * (1 + _REL))
            rows.append((name, metric, achieved, limit, float(bound), met))
    n_shapes = report.n_shapes
    rows.append(
        ("all", "distinct_shapes", float(n_shapes), max_shapes, 1.0, n_shapes <= max_shapes)
    )
    complete = len(evaluations) == len(names)
    total = sum(ev.cost.total for ev in evaluations.values()) if complete else math.nan
    rows.append(("all", "total_cost", total, None, bound_total, complete))
    table = pd.DataFrame(
        rows, columns=["bucket", "metric", "achieved", "limit", "lower_bound", "met"]
    )
    table["limit"] = pd.to_numeric(table["limit"], errors="coerce").astype(float)
    table["met"] = table["met"].astype(bool)
    ok = bool(report.ok and table["met"].all())
    return Scorecard(ok=ok, verification=report, table=table, evaluations=evaluations)


def _number_text(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _display_table(card: Scorecard) -> pd.DataFrame:
    """The scorecard with numbers as short text (4 significant digits) for display."""
    out = card.table.copy()
    for column in ("achieved", "limit", "lower_bound"):
        out[column] = [_number_text(v) for v in out[column].to_numpy(float)]
    out["met"] = np.where(out["met"], "yes", "NO")
    return out


def _short(violation: str) -> str:
    """A violation without its list of ids or shapes (the text before the last ': ')."""
    return violation.rsplit(": ", 1)[0] if violation.count(": ") >= 2 else violation


def _context() -> dict[str, pd.DataFrame]:
    return load_buckets()


def _judge(answer: Any, buckets: dict[str, pd.DataFrame]) -> CheckResult:
    try:
        card = scorecard(buckets, answer, LIMITS, MAX_SHAPES, COST_MODEL)
    except InputError as err:
        raise AnswerError(str(err)) from None
    details = _display_table(card)
    if card.ok:
        bound = float(card.table.loc[card.table["metric"] == "total_cost", "lower_bound"].iloc[-1])
        text = (
            f"both plans verify with {card.verification.n_shapes} distinct shape(s) "
            f"(cap {MAX_SHAPES}) and meet every limit; total cost {fmt(card.total_cost)} cost "
            f"units, {card.total_cost / bound:.3f} × the sum of the lower bounds."
        )
        return make_result("correct", text, q1.id, details)
    problems = []
    if not card.verification.ok:
        shown = "; ".join(_short(v) for v in card.verification.violations[:3])
        more = len(card.verification.violations) - 3
        problems.append(f"verification fails ({shown}{f'; and {more} more' if more > 0 else ''})")
    broken = card.failures
    broken = broken[broken["metric"] != "distinct_shapes"]  # already in the verification
    for _, row in broken.iterrows():
        if not np.isfinite(row["achieved"]):
            if row["metric"] == "total_cost" and row["bucket"] != "all":
                problems.append(f"the plan of {row['bucket']!r} cannot be evaluated")
            continue
        if row["bucket"] == "all":
            continue
        over = (row["achieved"] - row["limit"]) / row["limit"] * 100
        problems.append(f"{row['bucket']}: {row['metric']} is {percent(over)} over its limit")
    return make_result("incorrect", "; ".join(problems) + ".", q1.id, details)


q1 = CustomQuestion(
    exercise=EXERCISE,
    name="q1",
    title="two buckets under one cap of 8 shapes and per-bucket limits",
    answer="plans",
    expects='one plan per bucket, {"conv": plan table, "code": plan table}',
    context=_context,
    judge=_judge,
    hints=(
        "Start from the baseline (`plan.baseline_plan`) and look at the scorecard: which limits "
        "does it break, and by how much? Then think about which knob of chapters 02-04 moves "
        "each one.",
        '`planner.plan_requests(buckets, "static-graph", max_shapes=8, limits=capstone.LIMITS)` '
        "searches shapes, gen buckets and batch cuts for all buckets at once; its result "
        "`[name].plan` is each bucket's plan table.",
        "If you build plans another way (`plan.bucketed_plan`, sweeps), keep the union of "
        "your shapes to 8 or fewer: `shapes.joint_optimal_shapes` picks them for both buckets.",
    ),
    solution="""
result = planner.plan_requests(buckets, "static-graph", max_shapes=8, limits=capstone.LIMITS)
plans = {name: result[name].plan for name in buckets}
""",
)

QUESTIONS = (q1,)
