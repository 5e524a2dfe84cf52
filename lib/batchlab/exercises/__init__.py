"""Workshop exercises with checks, hints and solutions, one module per chapter.

Usage in a notebook (``exercises/NN_*.ipynb``)::

    from batchlab.exercises import ex01
    ex01.q1.check(p95_prompt)   # "Correct: ..." / "Not yet: ..." / "No answer yet: ..."
    ex01.q1.hint()           # a hint; ex01.q1.hint(2) a second one where there is one
    ex01.q1.solution()       # the solution code, as text

Modules: ``ex01`` (workload profiling), ``ex02`` (shapes and bucketing), ``ex03`` (the cost
model), ``ex04`` (sweeps and the planner), ``ex05`` (batching policies, simulated), ``ex06``
(batch size from a measurement) and ``capstone`` (two buckets under one shape cap and limits).
Each check recomputes its expected answer from the data with the library; the answer is always
passed explicitly, and ``check`` returns a :class:`CheckResult` that is truthy when correct.
"""

from __future__ import annotations

from batchlab.exercises._core import (
    DATA_DIR_ENV,
    CheckResult,
    Question,
    data_dir,
    data_file,
)

EXERCISES = ("ex01", "ex02", "ex03", "ex04", "ex05", "ex06", "capstone")
"""The exercise modules, in workshop order."""

__all__ = [
    "DATA_DIR_ENV",
    "EXERCISES",
    "CheckResult",
    "Question",
    "data_dir",
    "data_file",
    "questions",
]


def questions(exercise: str) -> list[Question]:
    """The questions of an exercise module (e.g. ``"ex01"``), in order q1, q2, ..."""
    import importlib

    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; known: {', '.join(EXERCISES)}")
    module = importlib.import_module(f"batchlab.exercises.{exercise}")
    return list(module.QUESTIONS)
