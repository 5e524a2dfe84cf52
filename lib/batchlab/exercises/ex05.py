"""Exercise 05 · Batching policies, simulated (chapter ``notebooks/05_batching_policies.ipynb``).

Data: the first ``N_REQUESTS`` requests of the Azure conversation trace (``load_trace(...,
limit=N_REQUESTS)``), served by ``simulate.simulate`` with its defaults (Llama-2-7B on one H100
SXM, calibrated roofline step times, the KV cache that fits beside the weights).

- q1: replaying the trace's arrivals, how many times higher is the p99 latency of static
  batching (``batch_size=STATIC_BATCH``) than that of continuous batching?
- q2: the concurrency knee of continuous batching: closed-loop ``LEVELS``, the largest level
  before p99 latency exceeds twice its lowest-load value (``simulate.find_knee``).
- q3: at concurrency ``CONCURRENCY``, how many times the throughput of static batching does
  continuous batching serve?
- q4: at concurrency ``CONCURRENCY`` with a KV cache of only ``SMALL_KV_BLOCKS`` blocks, how many
  preemptions does continuous batching make?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab import simulate
from batchlab.exercises._core import NumberQuestion, load_trace, memo

__all__ = ["CONCURRENCY", "LEVELS", "N_REQUESTS", "SMALL_KV_BLOCKS", "STATIC_BATCH", "QUESTIONS"]
__all__ += ["q1", "q2", "q3", "q4"]

EXERCISE = "ex05"
TRACE = "azure-conv-2023"
N_REQUESTS = 2000
STATIC_BATCH = 8  # requests
LEVELS = (1, 2, 4, 8, 16, 32, 64, 128)  # concurrent clients
KNEE_FACTOR = 2.0
CONCURRENCY = 64  # clients
SMALL_KV_BLOCKS = 2000  # blocks of 16 tokens


def _conv() -> pd.DataFrame:
    return load_trace(TRACE, limit=N_REQUESTS)


# -- q1 ----------------------------------------------------------------------------------------
@memo(traces=(TRACE,))
def _replay() -> tuple[dict, dict]:
    conv = _conv()
    cont = simulate.simulate(conv, "continuous").summary()
    stat = simulate.simulate(conv, "static", batch_size=STATIC_BATCH).summary()
    return cont, stat


def _q1_expected() -> float:
    cont, stat = _replay()
    return stat["latency_p99_ms"] / cont["latency_p99_ms"]


def _q1_diagnose(got: float, expected: float) -> str | None:
    cont, stat = _replay()
    if np.isclose(got, cont["latency_p99_ms"] / stat["latency_p99_ms"]):
        return "Static over continuous, not the other way round."
    if np.isclose(got, stat["latency_p50_ms"] / cont["latency_p50_ms"]):
        return "That compares the medians (p50); the question asks about p99."
    return None


q1 = NumberQuestion(
    exercise=EXERCISE,
    name="q1",
    title="static against continuous batching on the trace",
    answer="p99_ratio",
    expects="a ratio (dimensionless)",
    rel_tol=1e-9,
    expected=_q1_expected,
    diagnose=_q1_diagnose,
    hints=(
        "Without `rate=` or `concurrency=`, `simulate.simulate` replays the table's own "
        "`arrival_s`. Run it once per policy.",
        '`simulate.simulate(conv, "static", batch_size=8).summary()["latency_p99_ms"]`, and the '
        'same with "continuous".',
    ),
    solution="""
cont = simulate.simulate(conv, "continuous").summary()
stat = simulate.simulate(conv, "static", batch_size=8).summary()
p99_ratio = stat["latency_p99_ms"] / cont["latency_p99_ms"]
""",
)


# -- q2 ----------------------------------------------------------------------------------------
@memo(traces=(TRACE,))
def _load_sweep() -> pd.DataFrame:
    return simulate.load_sweep(_conv(), "continuous", concurrencies=list(LEVELS))


def _q2_expected() -> int:
    knee = simulate.find_knee(_load_sweep(), "level", "latency_p99_ms", factor=KNEE_FACTOR)
    return int(knee)


def _q2_diagnose(got: float, expected: float) -> str | None:
    table = _load_sweep()
    if got not in LEVELS:
        return f"The knee is one of the levels swept: {', '.join(map(str, LEVELS))}."
    row = table[table["level"] == got].iloc[0]
    ratio = row["latency_p99_ms"] / table["latency_p99_ms"].iloc[0]
    if ratio > KNEE_FACTOR:
        return f"At {int(got)} clients p99 latency is already {ratio:.2f} × its lowest-load value."
    return f"At {int(got)} clients p99 latency is {ratio:.2f} × its lowest-load value: not yet 2 ×."


q2 = NumberQuestion(
    exercise=EXERCISE,
    name="q2",
    title="the concurrency knee",
    answer="knee",
    expects="a number of concurrent clients",
    unit="clients",
    integer=True,
    rel_tol=0.0,
    expected=_q2_expected,
    diagnose=_q2_diagnose,
    hints=(
        "A closed loop of N clients: each sends its next request when its previous one is "
        'answered. `simulate.load_sweep(conv, "continuous", concurrencies=[...])` runs one '
        "simulation per level.",
        '`simulate.find_knee(table, "level", "latency_p99_ms")` (factor 2 by default).',
    ),
    solution="""
levels = [1, 2, 4, 8, 16, 32, 64, 128]
sweep_cont = simulate.load_sweep(conv, "continuous", concurrencies=levels)
knee = int(simulate.find_knee(sweep_cont, "level", "latency_p99_ms"))
""",
)


# -- q3 ----------------------------------------------------------------------------------------
@memo(traces=(TRACE,))
def _closed_loop() -> tuple[dict, dict]:
    conv = _conv()
    cont = simulate.simulate(conv, "continuous", concurrency=CONCURRENCY).summary()
    stat = simulate.simulate(
        conv, "static", concurrency=CONCURRENCY, batch_size=STATIC_BATCH
    ).summary()
    return cont, stat


def _q3_expected() -> float:
    cont, stat = _closed_loop()
    return cont["throughput_rps"] / stat["throughput_rps"]


def _q3_diagnose(got: float, expected: float) -> str | None:
    cont, stat = _closed_loop()
    if np.isclose(got, stat["throughput_rps"] / cont["throughput_rps"]):
        return "Continuous over static, not the other way round."
    # (the ratio of output tokens/s is no mistake here: both policies serve the same requests,
    # so it equals the ratio of requests/s)
    return None


q3 = NumberQuestion(
    exercise=EXERCISE,
    name="q3",
    title="throughput of continuous against static batching under load",
    answer="throughput_gain",
    expects="a ratio (dimensionless)",
    rel_tol=1e-9,
    expected=_q3_expected,
    diagnose=_q3_diagnose,
    hints=(
        "Pass `concurrency=64` to `simulate.simulate` for each policy (and `batch_size=8` to "
        "the static one).",
        '`.summary()["throughput_rps"]` is requests per second.',
    ),
    solution="""
cont64 = simulate.simulate(conv, "continuous", concurrency=64).summary()
stat64 = simulate.simulate(conv, "static", concurrency=64, batch_size=8).summary()
throughput_gain = cont64["throughput_rps"] / stat64["throughput_rps"]
""",
)


# -- q4 ----------------------------------------------------------------------------------------
@memo(traces=(TRACE,))
def _q4_expected() -> int:
    result = simulate.simulate(
        _conv(), "continuous", concurrency=CONCURRENCY, kv_blocks=SMALL_KV_BLOCKS
    )
    return int(result.summary()["preemptions"])


def _q4_diagnose(got: float, expected: float) -> str | None:
    if got == 0:
        return f"With the default KV budget nothing is preempted: pass kv_blocks={SMALL_KV_BLOCKS}."
    return None


q4 = NumberQuestion(
    exercise=EXERCISE,
    name="q4",
    title="preemptions under a small KV-cache budget",
    answer="n_preempted",
    expects="a whole number of preemptions",
    unit="preemptions",
    integer=True,
    rel_tol=0.0,
    expected=_q4_expected,
    diagnose=_q4_diagnose,
    hints=(
        "When a decoding sequence needs a new KV block and none is free, the scheduler "
        "preempts the last admitted sequence (it recomputes later). Give the budget with "
        "`kv_blocks=`.",
        '`simulate.simulate(conv, "continuous", concurrency=64, kv_blocks=2000).summary()'
        '["preemptions"]`.',
    ),
    solution="""
small_kv = simulate.simulate(conv, "continuous", concurrency=64, kv_blocks=2000)
n_preempted = small_kv.summary()["preemptions"]
""",
)

QUESTIONS = (q1, q2, q3, q4)
