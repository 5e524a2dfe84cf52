"""Exercise 02 · Shapes and bucketing (chapter ``notebooks/02_bucketing.ipynb``).

Data: the Azure conversation trace (``azure-conv-2023``), ``data/chat.jsonl`` and
``data/docs.jsonl``. Granularity g = 64 tokens throughout.

- q1: the prompt padding of the power-of-two grid on the conversation trace (tokens).
- q2: at most ``N_SHAPES`` shapes that pad less than the power-of-two grid (checked by the
  property: multiples of g, covering the longest prompt, less padding).
- q3: the gen-bucket size (from ``GEN_BUCKET_SIZES``) that meets ``pad_ratio <= MAX_PAD_RATIO``
  with the fewest batches, for chat at its ``K_CHAT`` optimal shapes with batches of at most
  ``MAX_BATCH_SIZE`` under the ``static-graph`` model.
- q4: ``CAP`` shapes shared by chat and docs with the least total prompt padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab import plots, shapes
from batchlab.exercises._core import (
    AnswerError,
    CustomQuestion,
    NumberQuestion,
    as_int,
    as_int_list,
    fmt,
    load_requests,
    load_trace,
    memo,
    percent,
)

__all__ = ["CAP", "GEN_BUCKET_SIZES", "MAX_PAD_RATIO", "N_SHAPES", "QUESTIONS"]
__all__ += ["q1", "q2", "q3", "q4"]

EXERCISE = "ex02"
TRACE = "azure-conv-2023"
G = shapes.DEFAULT_GRANULARITY  # tokens
N_SHAPES = 4
K_CHAT = 8
GEN_BUCKET_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)  # tokens
MAX_BATCH_SIZE = 32  # requests
MAX_PAD_RATIO = 0.10
COST_MODEL = "static-graph"
CAP = 8


def _conv_prompts() -> np.ndarray:
    return load_trace(TRACE)["prompt_len"].to_numpy(dtype=np.int64)


def _pow2_padding(p: np.ndarray) -> int:
    return shapes.padding_tokens(p, shapes.power_of_two_grid(int(p.max()), G))


# -- q1 ----------------------------------------------------------------------------------------
def _q1_expected() -> int:
    return _pow2_padding(_conv_prompts())


def _q1_diagnose(got: float, expected: float) -> str | None:
    p = _conv_prompts()
    if got == shapes.min_padding_tokens(p, G):
        return "That is the alignment padding alone (every prompt at its own aligned length)."
    if got == shapes.padding_tokens(p, shapes.align([p.max()], G)):
        return "That is padding every prompt to the longest one (a single shape)."
    return None


q1 = NumberQuestion(
    exercise=EXERCISE,
    name="q1",
    title="padding of the power-of-two grid",
    answer="pow2_padding",
    expects="a whole number of tokens",
    unit="tokens",
    integer=True,
    rel_tol=0.0,
    expected=_q1_expected,
    diagnose=_q1_diagnose,
    hints=(
        'Build the grid with `shapes.shape_grid("power_of_two", lengths, k)` (k is not used '
        "by this family) or `shapes.power_of_two_grid(max_len)`.",
        "`shapes.padding_tokens(lengths, seq_aligns)` sends each prompt to its smallest "
        "covering shape and sums shape − prompt_len.",
    ),
    solution="""
p = conv["prompt_len"]
pow2_padding = shapes.padding_tokens(p, shapes.shape_grid("power_of_two", p, 1))
""",
)


# -- shape-set checks shared by q2 and q4 -------------------------------------------------------
def _shape_set(answer: Any, max_shapes: int, longest: int) -> np.ndarray:
    """The answer as a sorted array of distinct shapes, or AnswerError saying what is wrong."""
    values = as_int_list(answer, "a list of shapes (tokens)")
    if not values:
        raise AnswerError("expected a list of shapes (tokens), got an empty list")
    s = np.unique(np.asarray(values, dtype=np.int64))
    if len(s) > max_shapes:
        raise AnswerError(f"you gave {len(s)} distinct shapes; at most {max_shapes} are allowed")
    bad = s[(s <= 0) | (s % G != 0)]
    if len(bad):
        raise AnswerError(f"shape {fmt(int(bad[0]))} is not a positive multiple of {G} tokens")
    top = int(shapes.align([longest], G)[0])
    if s[-1] < top:
        raise AnswerError(
            f"your largest shape ({fmt(int(s[-1]))}) does not cover the longest prompt "
            f"({fmt(longest)} tokens, {fmt(top)} aligned)"
        )
    return s


# -- q2 ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pow2Context:
    prompts: np.ndarray
    pow2_padding: int


def _q2_context() -> _Pow2Context:
    p = _conv_prompts()
    return _Pow2Context(p, _pow2_padding(p))


def _q2_judge(answer: Any, ctx: _Pow2Context) -> tuple[bool, str]:
    s = _shape_set(answer, N_SHAPES, int(ctx.prompts.max()))
    pad = shapes.padding_tokens(ctx.prompts, s, G)
    change = (pad - ctx.pow2_padding) / ctx.pow2_padding * 100
    listed = ", ".join(fmt(int(v)) for v in s)
    if pad < ctx.pow2_padding:
        return True, (
            f"your {len(s)} shapes ({listed}) pad {fmt(pad)} tokens, {percent(abs(change))} less "
            "than the power-of-two grid."
        )
    return False, (
        f"your {len(s)} shapes ({listed}) pad {fmt(pad)} tokens, {percent(change)} more than the "
        "power-of-two grid."
    )


q2 = CustomQuestion(
    exercise=EXERCISE,
    name="q2",
    title="four shapes that beat the power-of-two grid",
    answer="four_shapes",
    expects=f"a list of at most {N_SHAPES} shapes (tokens)",
    context=_q2_context,
    judge=_q2_judge,
    hints=(
        "Put shapes where the prompts are, not at powers of two: the largest must cover the "
        "longest prompt, and every shape must be a multiple of 64.",
        "`shapes.optimal_shapes(lengths, k)` finds the set of at most k shapes with the least "
        "padding (exact dynamic programming).",
    ),
    solution="""
four_shapes = shapes.optimal_shapes(conv["prompt_len"], 4)
""",
)


# -- q3 ----------------------------------------------------------------------------------------
@memo(files=("chat.jsonl",))
def _q3_table() -> pd.DataFrame:
    chat = load_requests("chat.jsonl")
    s = shapes.optimal_shapes(chat["prompt_len"], K_CHAT, G)
    return plots.gen_bucket_tradeoff_table(
        chat, s, GEN_BUCKET_SIZES, max_batch_size=MAX_BATCH_SIZE, cost_model=COST_MODEL
    )


def _q3_judge(answer: Any, table: pd.DataFrame) -> tuple[bool, str]:
    size = as_int(answer, "a gen-bucket size (tokens)")
    sizes = [int(v) for v in table["gen_bucket_size"]]
    if size not in sizes:
        raise AnswerError(
            f"{fmt(size)} is not one of the sizes to compare: {', '.join(map(str, sizes))}"
        )
    row = table.iloc[sizes.index(size)]
    feasible = table[table["pad_ratio"] <= MAX_PAD_RATIO]
    if feasible.empty:
        raise AnswerError("no size meets the limit on this data")  # pragma: no cover
    if row["pad_ratio"] > MAX_PAD_RATIO:
        return False, (
            f"size {size} gives a pad ratio of {row['pad_ratio']:.4f}, above the limit "
            f"{MAX_PAD_RATIO}."
        )
    fewest = int(feasible["n_batches"].min())
    if int(row["n_batches"]) == fewest:
        return True, (
            f"size {size} meets the limit (pad ratio {row['pad_ratio']:.4f}) with "
            f"{fmt(int(row['n_batches']))} batches, the fewest of any size that does."
        )
    extra = (int(row["n_batches"]) - fewest) / fewest * 100
    return False, (
        f"size {size} meets the limit (pad ratio {row['pad_ratio']:.4f}) but needs "
        f"{fmt(int(row['n_batches']))} batches, {percent(extra)} more than the fewest possible."
    )


q3 = CustomQuestion(
    exercise=EXERCISE,
    name="q3",
    title="the gen-bucket size that meets a pad-ratio limit with the fewest batches",
    answer="best_size",
    expects="a gen-bucket size in tokens",
    context=_q3_table,
    judge=_q3_judge,
    hints=(
        "Smaller gen buckets cut the output padding but add batches. Evaluate every size, keep "
        "those with pad_ratio <= 0.10, and take the one with the fewest batches.",
        "`plots.gen_bucket_tradeoff_table(chat, seq_aligns, sizes, max_batch_size=32, "
        'cost_model="static-graph")` evaluates all sizes in one call.',
    ),
    solution="""
chat_shapes = shapes.optimal_shapes(chat["prompt_len"], 8)
sizes = [8, 16, 32, 64, 128, 256, 512, 1024]
tradeoff = plots.gen_bucket_tradeoff_table(
    chat, chat_shapes, sizes, max_batch_size=32, cost_model="static-graph"
)
meets = tradeoff[tradeoff["pad_ratio"] <= 0.10]
best_size = int(meets.sort_values("n_batches", kind="stable").iloc[0]["gen_bucket_size"])
""",
)


# -- q4 ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _JointContext:
    lengths: tuple[np.ndarray, ...]
    best_padding: int


@memo(files=("chat.jsonl", "docs.jsonl"))
def _q4_context() -> _JointContext:
    lengths = tuple(
        load_requests(f)["prompt_len"].to_numpy(dtype=np.int64)
        for f in ("chat.jsonl", "docs.jsonl")
    )
    best = shapes.joint_optimal_shapes(list(lengths), CAP, G)
    return _JointContext(lengths, sum(shapes.padding_tokens(p, best, G) for p in lengths))


def _q4_judge(answer: Any, ctx: _JointContext) -> tuple[bool, str]:
    longest = max(int(p.max()) for p in ctx.lengths)
    s = _shape_set(answer, CAP, longest)
    pad = sum(shapes.padding_tokens(p, s, G) for p in ctx.lengths)
    if pad == ctx.best_padding:
        return True, (
            f"{len(s)} shared shapes, {fmt(pad)} padding tokens in total: the least possible "
            f"under a cap of {CAP}."
        )
    more = (pad - ctx.best_padding) / ctx.best_padding * 100
    return False, (
        f"your {len(s)} shapes pad {fmt(pad)} tokens in total, {percent(more)} more than the least "
        f"possible with {CAP} shared shapes."
    )


q4 = CustomQuestion(
    exercise=EXERCISE,
    name="q4",
    title="eight shapes shared by chat and docs",
    answer="shared",
    expects=f"a list of at most {CAP} shapes (tokens)",
    context=_q4_context,
    judge=_q4_judge,
    hints=(
        "Four shapes each is a fair split, but not the best one: the two workloads' prompts "
        "overlap, and one global set can serve both.",
        "`shapes.joint_optimal_shapes([lengths_a, lengths_b], max_shapes)` is exact.",
    ),
    solution="""
shared = shapes.joint_optimal_shapes([chat["prompt_len"], docs["prompt_len"]], 8)
""",
)

QUESTIONS = (q1, q2, q3, q4)
