"""Exercise 01 · Profiling a workload (chapter ``notebooks/01_workload_profiling.ipynb``).

Data: the Azure code trace (``azure-code-2023``) and ``data/chat.jsonl``; the *bucket* is the
chat requests with ``prompt_len <= BUCKET_MAX_PROMPT`` tokens.

- q1: the nearest-rank p95 of the code trace's prompt lengths (tokens); on them every other
  percentile method (numpy's interpolation, its ``nearest``, ``lower``, ``midpoint``) gives
  another value.
- q2: the code trace's inter-arrival coefficient of variation.
- q3: the bucket's padding budget under a pad-ratio limit of ``MAX_PAD_RATIO`` (tokens).
- q4: the tightest pad-ratio limit any plan of the bucket can meet.
- q5: the bucket's lower bound on sequential time with batches of at most ``MAX_BATCH_SIZE``
  requests under the ``static-graph`` cost model (ms).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab import planner, shapes, workload
from batchlab.exercises._core import NumberQuestion, load_requests, load_trace, memo

__all__ = ["BUCKET_MAX_PROMPT", "MAX_BATCH_SIZE", "MAX_PAD_RATIO", "QUESTIONS"]
__all__ += ["q1", "q2", "q3", "q4", "q5"]

EXERCISE = "ex01"
TRACE = "azure-code-2023"
BUCKET_MAX_PROMPT = 512  # tokens
MAX_PAD_RATIO = 0.20  # padding tokens per useful token
MAX_BATCH_SIZE = 16  # requests
COST_MODEL = "static-graph"


def _code() -> pd.DataFrame:
    return load_trace(TRACE)


def _bucket() -> pd.DataFrame:
    chat = load_requests("chat.jsonl")
    return chat[chat["prompt_len"] <= BUCKET_MAX_PROMPT]


@memo(traces=(TRACE,))
def _code_profile() -> workload.WorkloadProfile:
    return workload.profile(_code())


# -- q1 ----------------------------------------------------------------------------------------
#: numpy's percentile methods a learner may reach for (``linear`` is numpy's and pandas'
#: default: ``np.percentile(x, 95)``, ``series.quantile(0.95)``).
_PERCENTILE_METHODS = ("linear", "nearest", "lower", "midpoint", "higher")


def _q1_expected() -> int:
    return int(_code_profile().lengths.loc["prompt_len", "p95"])


def _q1_diagnose(got: float, expected: float) -> str | None:
    prompt = _code()["prompt_len"].to_numpy()
    for method in _PERCENTILE_METHODS:
        value = float(np.percentile(prompt, 95, method=method))
        if value != expected and np.isclose(got, value, rtol=0.0, atol=1e-6):
            what = (
                "numpy's interpolated percentile (`np.percentile(x, 95)`, pandas' `quantile(0.95)`)"
                if method == "linear"
                else f"numpy's percentile with method='{method}'"
            )
            return (
                f"That is {what}; the kit's percentiles are nearest-rank (the ⌈0.95·n⌉-th "
                "smallest value, always an observed length)."
            )
    if got == _code_profile().lengths.loc["gen_len", "p95"]:
        return "That is the p95 of the output lengths; the question asks about prompt_len."
    return None


q1 = NumberQuestion(
    exercise=EXERCISE,
    name="q1",
    title="p95 of the code trace's prompt lengths",
    answer="p95_prompt",
    expects="a whole number of tokens",
    unit="tokens",
    integer=True,
    rel_tol=0.0,
    expected=_q1_expected,
    diagnose=_q1_diagnose,
    hints=(
        "`workload.profile(code)` computes the percentiles of both length columns.",
        "`workload.profile(code).lengths` is a table indexed by field (`prompt_len`, "
        "`gen_len`) with a `p95` column.",
    ),
    solution="""
p95_prompt = int(workload.profile(code).lengths.loc["prompt_len", "p95"])
""",
)


# -- q2 ----------------------------------------------------------------------------------------
def _q2_expected() -> float:
    return float(_code_profile().interarrival_cv)


def _q2_diagnose(got: float, expected: float) -> str | None:
    t = np.sort(_code()["arrival_s"].to_numpy(dtype=float))
    if np.isclose(got, t.std() / t.mean(), rtol=1e-3):
        return (
            "That is the spread of the arrival times themselves; the CV is taken over the gaps "
            "between consecutive arrivals (`np.diff` of the sorted times)."
        )
    if np.isclose(got, 1.0 / expected, rtol=1e-3):
        return "You divided the mean by the standard deviation: CV = std / mean."
    return None


q2 = NumberQuestion(
    exercise=EXERCISE,
    name="q2",
    title="burstiness of the code trace",
    answer="cv_code",
    expects="a number (the coefficient of variation, dimensionless)",
    rel_tol=1e-3,
    expected=_q2_expected,
    diagnose=_q2_diagnose,
    hints=(
        "Burstiness is the coefficient of variation (std / mean) of the inter-arrival gaps; "
        "1 is a Poisson process.",
        "`workload.profile(code).interarrival_cv`.",
    ),
    solution="""
cv_code = workload.profile(code).interarrival_cv
""",
)


# -- q3 ----------------------------------------------------------------------------------------
def _q3_expected() -> float:
    b = _bucket()
    return float(shapes.padding_budget(b["prompt_len"], b["gen_len"], MAX_PAD_RATIO))


def _q3_diagnose(got: float, expected: float) -> str | None:
    b = _bucket()
    p = b["prompt_len"].to_numpy()
    useful = float(p.sum() + b["gen_len"].to_numpy().sum())
    if np.isclose(got, MAX_PAD_RATIO * useful):
        return (
            "That is all the padding the limit allows; the budget is what is left after the "
            "alignment padding no plan can avoid."
        )
    if np.isclose(got, MAX_PAD_RATIO * float(p.sum()) - shapes.min_padding_tokens(p)):
        return "The pad ratio counts useful tokens of the prompts *and* the outputs."
    chat = load_requests("chat.jsonl")
    whole = shapes.padding_budget(chat["prompt_len"], chat["gen_len"], MAX_PAD_RATIO)
    if len(b) < len(chat) and np.isclose(got, whole):
        return f"Use the bucket (prompt_len <= {BUCKET_MAX_PROMPT}), not the whole file."
    return None


q3 = NumberQuestion(
    exercise=EXERCISE,
    name="q3",
    title="the bucket's padding budget",
    answer="budget",
    expects="a number of tokens",
    unit="tokens",
    rel_tol=1e-9,
    abs_tol=1e-6,
    expected=_q3_expected,
    diagnose=_q3_diagnose,
    hints=(
        "budget(r) = r · Σ(prompt_len + gen_len) − Σ(align(prompt_len) − prompt_len).",
        "`shapes.padding_budget(prompt_len, gen_len, max_pad_ratio)`.",
    ),
    solution="""
budget = shapes.padding_budget(bucket["prompt_len"], bucket["gen_len"], 0.20)
""",
)


# -- q4 ----------------------------------------------------------------------------------------
def _q4_expected() -> float:
    b = _bucket()
    p = b["prompt_len"].to_numpy()
    return shapes.min_padding_tokens(p) / float(p.sum() + b["gen_len"].to_numpy().sum())


def _q4_diagnose(got: float, expected: float) -> str | None:
    p = _bucket()["prompt_len"].to_numpy()
    if np.isclose(got, shapes.min_padding_tokens(p) / float(p.sum())):
        return "Divide by all useful tokens, Σ(prompt_len + gen_len)."
    if got > 1.0:
        return "A pad ratio is padding tokens per useful token: a fraction, not a count."
    return None


q4 = NumberQuestion(
    exercise=EXERCISE,
    name="q4",
    title="the tightest pad-ratio limit the bucket can meet",
    answer="min_ratio",
    expects="a number (padding tokens per useful token)",
    rel_tol=1e-9,
    expected=_q4_expected,
    diagnose=_q4_diagnose,
    hints=(
        "The budget of q3 crosses zero exactly at this ratio: no plan pads less than the "
        "alignment padding.",
        "`planner.lower_bounds(bucket).min_pad_ratio`, or `shapes.min_padding_tokens` over the "
        "useful tokens.",
    ),
    solution="""
min_ratio = planner.lower_bounds(bucket).min_pad_ratio
""",
)


# -- q5 ----------------------------------------------------------------------------------------
def _q5_expected() -> float:
    return planner.lower_bounds(_bucket(), COST_MODEL, MAX_BATCH_SIZE).min_sequential_ms


def _q5_diagnose(got: float, expected: float) -> str | None:
    b = _bucket()
    unlimited = planner.lower_bounds(b, COST_MODEL, None).min_sequential_ms
    if np.isclose(got, unlimited):
        return (
            f"That bound allows one batch of every request: pass max_batch_size={MAX_BATCH_SIZE}."
        )
    if np.isclose(got, planner.lower_bounds(b, COST_MODEL, 1).min_sequential_ms):
        return "That is every request alone, one after another; batches of up to 16 run together."
    return None


q5 = NumberQuestion(
    exercise=EXERCISE,
    name="q5",
    title="lower bound on the bucket's sequential time",
    answer="min_seq_ms",
    expects="a number of ms",
    unit="ms",
    rel_tol=1e-9,
    expected=_q5_expected,
    diagnose=_q5_diagnose,
    hints=(
        "A batch runs as long as its slowest member, so with the requests' alone-latencies "
        "sorted a₁ ≥ a₂ ≥ …, every plan takes at least a₁ + a₁₇ + a₃₃ + … for batches of 16.",
        '`planner.lower_bounds(bucket, "static-graph", max_batch_size=16)`.',
    ),
    solution="""
min_seq_ms = planner.lower_bounds(bucket, "static-graph", max_batch_size=16).min_sequential_ms
""",
)

QUESTIONS = (q1, q2, q3, q4, q5)
