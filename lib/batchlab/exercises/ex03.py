"""Exercise 03 · The cost model, term by term (chapter ``notebooks/03_cost_decomposition.ipynb``).

Data: three requests written out in the notebook (``EXAMPLE``), a seeded sample of the Azure code
trace and ``data/docs.jsonl``. Cost model ``static-graph`` unless said otherwise.

- q1: the total cost (cost units) of the three requests in one batch of shape ``ONE_SHAPE``.
- q2: the per-batch overhead (``batch_cost``) at which that one batch and three batches of
  shapes ``THREE_SHAPES`` cost the same.
- q3: the dominant cost part for the code sample at ``K_CODE`` optimal shapes, one request per
  batch, with a compile ``COMPILE_FACTOR`` times as expensive as the preset's.
- q4: how many times the lower bound the baseline plan of docs costs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab import cost, evaluate, plan, planner, shapes
from batchlab.exercises._core import (
    ChoiceQuestion,
    NumberQuestion,
    load_requests,
    load_trace,
    memo,
    percent,
)

__all__ = ["EXAMPLE", "ONE_SHAPE", "THREE_SHAPES", "QUESTIONS", "q1", "q2", "q3", "q4"]

EXERCISE = "ex03"
COST_MODEL = "static-graph"
EXAMPLE = {"request_id": ["a", "b", "c"], "prompt_len": [150, 420, 900], "gen_len": [30, 120, 80]}
ONE_SHAPE = (960,)  # tokens
THREE_SHAPES = (192, 448, 960)  # tokens
TRACE = "azure-code-2023"
SAMPLE_SIZE = 2000
SAMPLE_SEED = 0
K_CODE = 64
COMPILE_FACTOR = 10.0
PARTS = ("overhead", "compile", "prefill", "decode")


def _example() -> pd.DataFrame:
    return pd.DataFrame(EXAMPLE)


def _evaluation(seq_aligns: tuple[int, ...], model: str | cost.CostModel = COST_MODEL):
    example = _example()
    return evaluate.evaluate(example, plan.bucketed_plan(example, list(seq_aligns)), model)


# -- q1 ----------------------------------------------------------------------------------------
def _q1_expected() -> float:
    return _evaluation(ONE_SHAPE).cost.total


def _q1_diagnose(got: float, expected: float) -> str | None:
    ev = _evaluation(ONE_SHAPE)
    if np.isclose(got, ev.cost.total - ev.cost.compile):
        return "Add the compile of the shape: it is paid once per distinct shape of a plan."
    if np.isclose(got, _evaluation(ONE_SHAPE, "padded-graph").cost.total):
        return "That is the padded-graph preset; the question uses static-graph."
    if np.isclose(got, ev.cost.total - ev.cost.decode + ev.cost.decode / len(ev.requests)):
        return "Every request of the batch pays the batch's decode cost, not just one of them."
    return None


q1 = NumberQuestion(
    exercise=EXERCISE,
    name="q1",
    title="one batch by hand",
    answer="total_one",
    expects="a number of cost units",
    unit="cost units",
    rel_tol=1e-9,
    expected=_q1_expected,
    diagnose=_q1_diagnose,
    hints=(
        "Total = overhead (one batch) + compile (one shape) + Σ prefill(S_i) + 3 × "
        "decode(S_max, G_max), with S_i the aligned prompts and S_max = 960, G_max = 120.",
        "`plan.bucketed_plan(example, [960])` puts the three requests in one batch; "
        "`evaluate.evaluate(example, that_plan).cost.total` is the total.",
    ),
    solution="""
one_batch = plan.bucketed_plan(example, [960])
total_one = evaluate.evaluate(example, one_batch).cost.total
""",
)


# -- q2 ----------------------------------------------------------------------------------------
def _rest_and_batches(seq_aligns: tuple[int, ...]) -> tuple[float, int]:
    ev = _evaluation(seq_aligns)
    return ev.cost.total - ev.cost.overhead, ev.n_batches


def _q2_expected() -> float:
    rest1, n1 = _rest_and_batches(ONE_SHAPE)
    rest3, n3 = _rest_and_batches(THREE_SHAPES)
    return (rest1 - rest3) / (n3 - n1)


def _q2_diagnose(got: float, expected: float) -> str | None:
    rest1, _ = _rest_and_batches(ONE_SHAPE)
    rest3, _ = _rest_and_batches(THREE_SHAPES)
    if np.isclose(got, rest1 - rest3):
        return "That is the whole cost difference; the three-batch plan pays two more overheads."
    if got < 0:
        return "An overhead is a cost, so it is positive: which plan is cheaper without it?"
    return None


q2 = NumberQuestion(
    exercise=EXERCISE,
    name="q2",
    title="the break-even batch overhead",
    answer="break_even",
    expects="a number of cost units per batch",
    unit="cost units",
    rel_tol=1e-9,
    expected=_q2_expected,
    diagnose=_q2_diagnose,
    hints=(
        "Only the overhead depends on batch_cost: cost(plan) = n_batches × batch_cost + "
        "everything else. Set the two plans' costs equal and solve for batch_cost.",
        "`cost.overhead` of an evaluation is n_batches × batch_cost, so `cost.total - "
        "cost.overhead` is 'everything else'. Check your answer with "
        "`cost.get_cost_model('static-graph').with_coefficients(batch_cost=...)`.",
    ),
    solution="""
ev_one = evaluate.evaluate(example, plan.bucketed_plan(example, [960]))
ev_three = evaluate.evaluate(example, plan.bucketed_plan(example, [192, 448, 960]))
rest_one = ev_one.cost.total - ev_one.cost.overhead
rest_three = ev_three.cost.total - ev_three.cost.overhead
break_even = (rest_one - rest_three) / (ev_three.n_batches - ev_one.n_batches)
""",
)


# -- q3 ----------------------------------------------------------------------------------------
@memo(traces=(TRACE,))
def _q3_parts() -> dict[str, float]:
    sample = load_trace(TRACE).sample(SAMPLE_SIZE, random_state=SAMPLE_SEED)
    preset = cost.PRESETS[COST_MODEL]
    model = cost.get_cost_model(COST_MODEL).with_coefficients(
        compile_cost_quad=preset.compile_cost_quad * COMPILE_FACTOR,
        compile_cost_lin=preset.compile_cost_lin * COMPILE_FACTOR,
    )
    seq_aligns = shapes.optimal_shapes(sample["prompt_len"], K_CODE)
    one_each = plan.bucketed_plan(sample, seq_aligns, max_batch_size=1)
    parts = evaluate.evaluate(sample, one_each, model).cost.as_dict()
    return {p: parts[p] for p in PARTS}


def _q3_expected() -> str:
    parts = _q3_parts()
    return max(PARTS, key=lambda p: parts[p])


def _q3_explain(choice: str) -> str | None:
    parts = _q3_parts()
    share = parts[choice] / sum(parts.values()) * 100
    return f"In this setting {choice} is {percent(share)} of the total cost; one part is larger."


q3 = ChoiceQuestion(
    exercise=EXERCISE,
    name="q3",
    title="the dominant cost part",
    answer="dominant",
    expects="one of 'overhead', 'compile', 'prefill', 'decode'",
    choices=PARTS,
    aliases={f"cost_{p}": p for p in PARTS},
    expected=_q3_expected,
    explain=_q3_explain,
    hints=(
        "Build the cost model with `cost.get_cost_model('static-graph').with_coefficients("
        "compile_cost_quad=..., compile_cost_lin=...)` (10 × the preset's 500 and 2), the plan "
        "with `plan.bucketed_plan(..., max_batch_size=1)`, then evaluate.",
        "`evaluation.cost.as_dict()` holds the four parts (and the total): take the largest part.",
    ),
    solution="""
slow_compile = cost.get_cost_model("static-graph").with_coefficients(
    compile_cost_quad=5000.0, compile_cost_lin=20.0
)
one_each = plan.bucketed_plan(
    code_sample, shapes.optimal_shapes(code_sample["prompt_len"], 64), max_batch_size=1
)
parts = evaluate.evaluate(code_sample, one_each, slow_compile).cost.as_dict()
del parts["total"]
dominant = max(parts, key=parts.get)
""",
)


# -- q4 ----------------------------------------------------------------------------------------
def _docs_costs() -> tuple[float, float]:
    docs = load_requests("docs.jsonl")
    baseline = evaluate.evaluate(docs, plan.baseline_plan(docs), COST_MODEL).cost.total
    return baseline, planner.lower_bounds(docs, COST_MODEL).min_cost


def _q4_expected() -> float:
    baseline, bound = _docs_costs()
    return baseline / bound


def _q4_diagnose(got: float, expected: float) -> str | None:
    baseline, bound = _docs_costs()
    if np.isclose(got, bound / baseline):
        return "Divide the baseline's cost by the bound, not the other way round."
    if got > 1e6:
        return "Give the ratio of the two costs (a plain number), not a cost."
    return None


q4 = NumberQuestion(
    exercise=EXERCISE,
    name="q4",
    title="the baseline against the lower bound",
    answer="ratio",
    expects="a ratio (dimensionless)",
    rel_tol=1e-9,
    expected=_q4_expected,
    diagnose=_q4_diagnose,
    hints=(
        "`plan.baseline_plan(docs)` is the 8-quantile-shapes, one-batch-per-shape packer; "
        "`planner.lower_bounds(docs)` gives `min_cost` (no batch-size limit).",
    ),
    solution="""
baseline_cost = evaluate.evaluate(docs, plan.baseline_plan(docs)).cost.total
ratio = baseline_cost / planner.lower_bounds(docs).min_cost
""",
)

QUESTIONS = (q1, q2, q3, q4)
