"""Exercise 06 · Batch size from a measurement (chapter ``notebooks/06_gpu_batch_size.ipynb``).

Data: the committed measurement ``data/measurements/tiny-llama-cpu-p128-g32.csv`` (read with
``measure.load_measurement``; no live timing, so the answers are deterministic).

- q1: the saturation batch size: the smallest whose output throughput is within
  ``TOLERANCE`` of the best measured.
- q2: the largest batch size whose per-request latency is at most ``LATENCY_LIMIT_MS``.
- q3: the memory each extra sequence costs (MB), the least-squares slope of ``peak_memory_mb``
  over the batch size.
- q4: the batch size ``recommend.recommend`` picks for the ``interactive`` use case when the
  time per output token (``decode_ms_per_step``) must stay at or below ``TPOT_LIMIT_MS``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab import measure, recommend
from batchlab.errors import InputError
from batchlab.exercises._core import NumberQuestion, data_file, memo

__all__ = ["LATENCY_LIMIT_MS", "MEASUREMENT", "TOLERANCE", "TPOT_LIMIT_MS", "QUESTIONS"]
__all__ += ["q1", "q2", "q3", "q4"]

EXERCISE = "ex06"
MEASUREMENT = "measurements/tiny-llama-cpu-p128-g32.csv"
TOLERANCE = 0.20
LATENCY_LIMIT_MS = 150.0
TPOT_LIMIT_MS = 3.5
USE_CASE = "interactive"


@memo(files=(MEASUREMENT,))
def _table() -> pd.DataFrame:
    return measure.load_measurement(data_file(MEASUREMENT))


# -- q1 ----------------------------------------------------------------------------------------
def _q1_expected() -> int:
    return measure.saturation_batch_size(_table(), TOLERANCE)


def _q1_diagnose(got: float, expected: float) -> str | None:
    table = _table()
    best = int(table.loc[table["output_tokens_per_s"].idxmax(), "batch_size"])
    if got == best and best != expected:
        return (
            "That is the best throughput; a smaller batch size is already within 20% of it, "
            "with less latency and memory."
        )
    if got not in set(table["batch_size"]):
        return "The answer is one of the measured batch sizes."
    return None


q1 = NumberQuestion(
    exercise=EXERCISE,
    name="q1",
    title="the saturation batch size",
    answer="saturation",
    expects="a batch size (a whole number of sequences)",
    unit="sequences",
    integer=True,
    rel_tol=0.0,
    expected=_q1_expected,
    diagnose=_q1_diagnose,
    hints=(
        "Find the best `output_tokens_per_s`, then the smallest batch size whose throughput is "
        "at least (1 − 0.20) × that.",
        "`measure.saturation_batch_size(m, tolerance=0.20)`.",
    ),
    solution="""
saturation = measure.saturation_batch_size(m, tolerance=0.20)
""",
)


# -- q2 ----------------------------------------------------------------------------------------
def _q2_expected() -> int:
    size = measure.max_batch_under_latency(_table(), LATENCY_LIMIT_MS)
    if size is None:
        raise InputError(
            f"no batch size of the measurement meets {LATENCY_LIMIT_MS} ms", field="latency"
        )
    return size


def _q2_diagnose(got: float, expected: float) -> str | None:
    table = _table()
    rows = table[table["batch_size"] == got]
    if rows.empty:
        return "The answer is one of the measured batch sizes."
    latency = float(rows["latency_ms_per_request"].iloc[0])
    if latency > LATENCY_LIMIT_MS:
        return f"At that batch size a request takes {latency:,.1f} ms, over the limit."
    return "That one meets the limit, but a larger batch size does too."


q2 = NumberQuestion(
    exercise=EXERCISE,
    name="q2",
    title="the largest batch under a latency limit",
    answer="largest_ok",
    expects="a batch size (a whole number of sequences)",
    unit="sequences",
    integer=True,
    rel_tol=0.0,
    expected=_q2_expected,
    diagnose=_q2_diagnose,
    hints=(
        "Every request of a batch finishes with the batch, so `latency_ms_per_request` is the "
        "batch's end-to-end time. Keep the rows at or below 150 ms and take the largest size.",
        "`measure.max_batch_under_latency(m, 150)`.",
    ),
    solution="""
largest_ok = measure.max_batch_under_latency(m, 150)
""",
)


# -- q3 ----------------------------------------------------------------------------------------
def _q3_expected() -> float:
    return measure.memory_per_sequence_mb(_table())


def _q3_diagnose(got: float, expected: float) -> str | None:
    table = _table()
    if np.isclose(got, measure.memory_per_sequence_mb(table, "kv_cache_mb")):
        return "That is the KV cache alone; use the peak memory (`peak_memory_mb`)."
    b = table["batch_size"].to_numpy(dtype=float)
    mem = table["peak_memory_mb"].to_numpy(dtype=float)
    if np.isclose(got, (mem[-1] - mem[0]) / (b[-1] - b[0])):
        return "That is the slope between two rows; the least-squares slope uses all of them."
    if np.isclose(got, float(np.mean(mem / b))):
        return "That is memory per sequence on average, fixed share included; take the slope."
    return None


q3 = NumberQuestion(
    exercise=EXERCISE,
    name="q3",
    title="memory per extra sequence",
    answer="mb_per_seq",
    expects="a number of MB per sequence",
    unit="MB",
    rel_tol=1e-6,
    expected=_q3_expected,
    diagnose=_q3_diagnose,
    hints=(
        "Fit a straight line through (batch_size, peak_memory_mb): its slope is what one more "
        "sequence adds (KV cache and activations).",
        "`measure.memory_per_sequence_mb(m)` (or `np.polyfit(x, y, 1)[0]`).",
    ),
    solution="""
mb_per_seq = measure.memory_per_sequence_mb(m)
""",
)


# -- q4 ----------------------------------------------------------------------------------------
def _q4_expected() -> int:
    return recommend.recommend(
        USE_CASE, measurement=_table(), latency_limit_ms=TPOT_LIMIT_MS
    ).batch_size


def _q4_diagnose(got: float, expected: float) -> str | None:
    table = _table()
    rows = table[table["batch_size"] == got]
    if rows.empty:
        return "The answer is one of the measured batch sizes."
    if got == recommend.recommend(USE_CASE, measurement=table).batch_size:
        return f"That uses the use case's default limit; pass latency_limit_ms={TPOT_LIMIT_MS}."
    step = float(rows["decode_ms_per_step"].iloc[0])
    if step > TPOT_LIMIT_MS:
        return f"At that batch size a decode step takes {step:.3g} ms, over {TPOT_LIMIT_MS} ms."
    return None


q4 = NumberQuestion(
    exercise=EXERCISE,
    name="q4",
    title="a recommendation for an interactive service",
    answer="interactive_batch",
    expects="a batch size (a whole number of sequences)",
    unit="sequences",
    integer=True,
    rel_tol=0.0,
    expected=_q4_expected,
    diagnose=_q4_diagnose,
    hints=(
        "The interactive use case limits the time per output token (`decode_ms_per_step`), "
        "then takes the smallest size within 10% of the best throughput left.",
        '`recommend.recommend("interactive", measurement=m, latency_limit_ms=3.5).batch_size`.',
    ),
    solution="""
advice = recommend.recommend("interactive", measurement=m, latency_limit_ms=3.5)
interactive_batch = advice.batch_size
""",
)

QUESTIONS = (q1, q2, q3, q4)
