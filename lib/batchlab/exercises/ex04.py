"""Exercise 04 · Parameter sweeps (chapter ``notebooks/04_parameter_sweeps.ipynb``).

Data: ``data/chat.jsonl`` with the ``[chat]`` limits of ``data/limits.toml``, and
``data/docs.jsonl``. A *setting* is (k, family, gen_bucket_size, max_batch_size): chat's prompts
get ``shapes.shape_grid(family, prompt_len, k)``, ``plan.bucketed_plan`` cuts the batches and
``evaluate.evaluate`` scores the plan under ``static-graph``. ``SPACE`` is the grid.

- q1: how many settings of the grid meet every chat limit (pad ratio, p95 latency, sequential
  time)?
- q2: the cheapest setting that meets every chat limit.
- q3: the Pareto front of the grid on (total_cost, sequential_ms).
- q4: the fewest optimal shapes k (1..``K_MAX``) whose ``padded-graph`` plan of docs, with gen
  buckets of ``DOCS_GEN_BUCKET`` tokens, has ``pad_ratio <= DOCS_MAX_PAD_RATIO``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from batchlab import evaluate, plan, planner, shapes, sweep
from batchlab.errors import InputError
from batchlab.exercises._core import (
    AnswerError,
    CustomQuestion,
    NumberQuestion,
    data_file,
    fmt,
    load_requests,
    memo,
    percent,
)

__all__ = ["DOCS_GEN_BUCKET", "DOCS_MAX_PAD_RATIO", "K_MAX", "QUESTIONS", "SPACE", "run"]
__all__ += ["q1", "q2", "q3", "q4"]

EXERCISE = "ex04"
COST_MODEL = "static-graph"
SPACE: dict[str, list] = {
    "k": [2, 4, 8],
    "family": ["power_of_two", "quantile", "optimal"],
    # 32-token gen buckets meet the p95 limit but not always the others: counting one limit
    # alone gives another count than counting all three (the mistake q1 names)
    "gen_bucket_size": [32, 64, 256, 1024],
    "max_batch_size": [16, 64],
}
PARAMS = tuple(SPACE)
LIMIT_METRICS = {
    "max_pad_ratio": "pad_ratio",
    "max_p95_latency_ms": "p95_latency_ms",
    "max_sequential_ms": "sequential_ms",
}
DOCS_GEN_BUCKET = 64  # tokens
DOCS_MAX_PAD_RATIO = 0.10
DOCS_COST_MODEL = "padded-graph"
K_MAX = 64


def run(k: int, family: str, gen_bucket_size: int, max_batch_size: int) -> evaluate.Evaluation:
    """Evaluate one setting on chat (the recipe of the exercise, as the checks compute it)."""
    chat = load_requests("chat.jsonl")
    seq_aligns = shapes.shape_grid(family, chat["prompt_len"], k)
    chat_plan = plan.bucketed_plan(chat, seq_aligns, gen_bucket_size, max_batch_size)
    return evaluate.evaluate(chat, chat_plan, COST_MODEL)


def _chat_limits() -> dict[str, float]:
    lim = planner.read_limits(data_file("limits.toml"))["chat"]
    return {
        metric: float(getattr(lim, name))
        for name, metric in LIMIT_METRICS.items()
        if getattr(lim, name) is not None
    }


@memo(files=("chat.jsonl", "limits.toml"))
def _table() -> pd.DataFrame:
    return sweep.grid_sweep(run, SPACE, limits=_chat_limits(), progress=False)


def _key(values: Mapping[str, Any] | pd.Series) -> tuple:
    try:
        raw = {p: values[p] for p in PARAMS}
    except KeyError as err:
        raise AnswerError(
            f"a setting needs the parameters {', '.join(PARAMS)}; {err.args[0]!r} is missing"
        ) from None
    key = []
    for p in PARAMS:
        v = raw[p]
        if p == "family":
            if not isinstance(v, str):
                raise AnswerError(f"family must be a grid family name, got {v!r}")
            key.append(v)
        else:
            try:
                number = float(v)
            except (TypeError, ValueError):
                raise AnswerError(f"{p} must be a whole number, got {v!r}") from None
            if number != int(number):
                raise AnswerError(f"{p} must be a whole number, got {v!r}")
            key.append(int(number))
    return tuple(key)


def _rows_by_key(table: pd.DataFrame) -> dict[tuple, int]:
    return {_key(row): i for i, row in table[list(PARAMS)].iterrows()}


def _settings(answer: Any, *, single: bool) -> list[tuple]:
    """The answer's settings as parameter tuples (a dict, a Series, a DataFrame of rows, or a
    list of dicts)."""
    if isinstance(answer, pd.DataFrame):
        missing = [p for p in PARAMS if p not in answer.columns]
        if missing:
            raise AnswerError(f"the table has no column {missing[0]!r} (a setting's parameter)")
        rows: list = [row for _, row in answer.iterrows()]
    elif isinstance(answer, Mapping | pd.Series):
        rows = [answer]
    elif isinstance(answer, list | tuple) and all(isinstance(r, Mapping) for r in answer):
        rows = list(answer)
    else:
        what = "a setting (a dict or a table row)" if single else "the front as a table of rows"
        raise AnswerError(
            f"expected {what} with {', '.join(PARAMS)}, got a {type(answer).__name__}"
        )
    if single and len(rows) != 1:
        raise AnswerError(f"expected one setting, got {len(rows)}")
    return [_key(r) for r in rows]


def _lookup(table: pd.DataFrame, key: tuple) -> pd.Series:
    index = _rows_by_key(table)
    if key not in index:
        described = ", ".join(f"{p}={v!r}" for p, v in zip(PARAMS, key, strict=True))
        raise AnswerError(f"the setting ({described}) is not in the grid")
    return table.loc[index[key]]


# -- q1 ----------------------------------------------------------------------------------------
def _q1_expected() -> int:
    return int(_table()["ok_all"].sum())


def _q1_diagnose(got: float, expected: float) -> str | None:
    table = _table()
    for metric in _chat_limits():
        if got == int(table[f"ok_{metric}"].sum()):
            return (
                f"That counts the settings that meet the {metric} limit alone; all three must hold."
            )
    if got == len(table):
        return "That is every setting of the grid."
    return None


q1 = NumberQuestion(
    exercise=EXERCISE,
    name="q1",
    title="settings that meet every limit",
    answer="n_feasible",
    expects="a whole number of settings",
    unit="settings",
    integer=True,
    rel_tol=0.0,
    expected=_q1_expected,
    diagnose=_q1_diagnose,
    hints=(
        "Write `run(k, family, gen_bucket_size, max_batch_size)` returning the evaluation, and "
        "give `sweep.grid_sweep(run, space, limits={metric: maximum, ...})` the three chat "
        "limits.",
        "The table's `ok_all` column is True where every limit is met: sum it.",
    ),
    solution="""
def run(k, family, gen_bucket_size, max_batch_size):
    seq_aligns = shapes.shape_grid(family, chat["prompt_len"], k)
    return evaluate.evaluate(
        chat, plan.bucketed_plan(chat, seq_aligns, gen_bucket_size, max_batch_size)
    )


space = {
    "k": [2, 4, 8],
    "family": ["power_of_two", "quantile", "optimal"],
    "gen_bucket_size": [32, 64, 256, 1024],
    "max_batch_size": [16, 64],
}
chat_limits = {
    "pad_ratio": limits["chat"].max_pad_ratio,
    "p95_latency_ms": limits["chat"].max_p95_latency_ms,
    "sequential_ms": limits["chat"].max_sequential_ms,
}
table = sweep.grid_sweep(run, space, limits=chat_limits, progress=False)
n_feasible = int(table["ok_all"].sum())
""",
)


# -- q2 ----------------------------------------------------------------------------------------
def _q2_judge(answer: Any, table: pd.DataFrame) -> tuple[bool, str]:
    (key,) = _settings(answer, single=True)
    row = _lookup(table, key)
    feasible = table[table["ok_all"]]
    best = float(feasible["total_cost"].min())
    broken = [m for m in _chat_limits() if not bool(row[f"ok_{m}"])]
    if broken:
        return False, f"that setting breaks the {', '.join(broken)} limit(s)."
    cost = float(row["total_cost"])
    if np.isclose(cost, best, rtol=1e-12, atol=0.0):
        return True, f"it meets every limit at {fmt(cost)} cost units, the least of the grid."
    return False, (
        f"it meets every limit, but costs {percent((cost - best) / best * 100)} more than the "
        "cheapest setting that does."
    )


q2 = CustomQuestion(
    exercise=EXERCISE,
    name="q2",
    title="the cheapest setting that meets every limit",
    answer="cheapest",
    expects="one setting (a table row or a dict of k, family, gen_bucket_size, max_batch_size)",
    context=_table,
    judge=_q2_judge,
    hints=(
        "Keep the rows of the sweep table where `ok_all` is True, then the one with the "
        "smallest `total_cost`.",
        '`table[table["ok_all"]].sort_values("total_cost").iloc[0]` is a row (a Series).',
    ),
    solution="""
cheapest = table[table["ok_all"]].sort_values("total_cost", kind="stable").iloc[0]
""",
)


# -- q3 ----------------------------------------------------------------------------------------
def _point(row: pd.Series) -> tuple[float, float]:
    return (float(row["total_cost"]), float(row["sequential_ms"]))


def _q3_judge(answer: Any, table: pd.DataFrame) -> tuple[bool, str]:
    keys = _settings(answer, single=False)
    if not keys:
        raise AnswerError("the front you gave is empty")
    front = sweep.pareto_front(table, ["total_cost", "sequential_ms"])
    front_points = {_point(r) for _, r in front.iterrows()}
    given = {_point(_lookup(table, k)) for k in keys}
    dominated = given - front_points
    missing = front_points - given
    if not dominated and not missing:
        return True, (
            f"the front holds {len(front_points)} distinct (cost, sequential time) points; "
            "every other setting is dominated by one of them."
        )
    problems = []
    if dominated:
        problems.append(f"{len(dominated)} of your settings are dominated by another setting")
    if missing:
        problems.append(f"{len(missing)} non-dominated point(s) are missing")
    return False, "; ".join(problems) + "."


q3 = CustomQuestion(
    exercise=EXERCISE,
    name="q3",
    title="the Pareto front of cost against sequential time",
    answer="front",
    expects="the front's settings (a table with the parameter columns)",
    context=_table,
    judge=_q3_judge,
    hints=(
        "A setting is dominated when another is no worse on both total_cost and sequential_ms "
        "and better on one. Both are to be minimized.",
        '`sweep.pareto_front(table, ["total_cost", "sequential_ms"])`.',
    ),
    solution="""
front = sweep.pareto_front(table, ["total_cost", "sequential_ms"])
""",
)


# -- q4 ----------------------------------------------------------------------------------------
def _docs_pad_ratio(k: int) -> float:
    docs = load_requests("docs.jsonl")
    seq_aligns = shapes.optimal_shapes(docs["prompt_len"], k)
    docs_plan = plan.bucketed_plan(docs, seq_aligns, gen_bucket_size=DOCS_GEN_BUCKET)
    return evaluate.evaluate(docs, docs_plan, DOCS_COST_MODEL).pad_ratio


@memo(files=("docs.jsonl",))
def _q4_expected() -> int:
    # a plain scan from k = 1: the definition of "fewest", whatever the curve's shape
    for k in range(1, K_MAX + 1):
        if _docs_pad_ratio(k) <= DOCS_MAX_PAD_RATIO:
            return k
    raise InputError(f"no k up to {K_MAX} meets the limit on this data", field="k")


def _q4_diagnose(got: float, expected: float) -> str | None:
    k = int(got)
    if 1 <= k <= K_MAX:
        ratio = _docs_pad_ratio(k)
        if ratio > DOCS_MAX_PAD_RATIO:
            return f"With k = {k} the pad ratio is {ratio:.4f}, above {DOCS_MAX_PAD_RATIO}."
        return f"k = {k} meets the limit (pad ratio {ratio:.4f}), but fewer shapes also do."
    return None


q4 = NumberQuestion(
    exercise=EXERCISE,
    name="q4",
    title="the fewest shapes for a pad-ratio limit, by bisection",
    answer="k_min",
    expects="a whole number of shapes",
    unit="shapes",
    integer=True,
    rel_tol=0.0,
    expected=_q4_expected,
    diagnose=_q4_diagnose,
    hints=(
        "The pad ratio falls as k grows, so bisection finds the threshold in about log2(64) "
        "evaluations: write a function of k that returns the evaluation.",
        "`sweep.binary_search(fn, 1, 64, predicate=lambda ev: ev.pad_ratio <= 0.10)`; the "
        "answer is its `.value`.",
    ),
    solution="""
def docs_run(k):
    seq_aligns = shapes.optimal_shapes(docs["prompt_len"], k)
    docs_plan = plan.bucketed_plan(docs, seq_aligns, gen_bucket_size=64)
    return evaluate.evaluate(docs, docs_plan, "padded-graph")


found = sweep.binary_search(docs_run, 1, 64, predicate=lambda ev: ev.pad_ratio <= 0.10)
k_min = found.value
""",
)

QUESTIONS = (q1, q2, q3, q4)
