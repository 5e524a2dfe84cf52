"""The measurement table: its columns and units, and how rows are built and checked.

Columns (units in their names; definitions in :mod:`batchlab.measure`): one row per batch
size, in :data:`MEASUREMENT_COLUMNS` order. ``*_mb`` are decimal megabytes (:data:`MB`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_frame, check_scalar
from batchlab.errors import InputError

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_BATCH_SIZES",
    "MAX_REPEATS",
    "FLOAT_COLUMNS",
    "INT_COLUMNS",
    "MB",
    "MEASUREMENT_COLUMNS",
    "TIMING_COLUMNS",
    "check_batch_sizes",
    "frame",
    "oom_row",
    "parse_batch_sizes",
    "require_columns",
]

MB = 1e6
"""Bytes in one MB as used by every ``*_mb`` column (decimal megabytes)."""

MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "batch_size",
    "prompt_len",
    "gen_len",
    "prefill_ms",
    "prefill_ms_spread",
    "prefill_ms_per_token",
    "decode_ms_per_step",
    "decode_ms_per_step_spread",
    "e2e_ms",
    "e2e_ms_spread",
    "latency_ms_per_request",
    "output_tokens_per_s",
    "output_tokens_per_s_spread",
    "peak_memory_mb",
    "baseline_memory_mb",
    "kv_cache_mb",
    "oom",
    "device",
    "repeats",
)
"""Columns of a measurement table, in order (see batchlab.measure for definitions)."""

TIMING_COLUMNS: tuple[str, ...] = (
    "prefill_ms",
    "prefill_ms_per_token",
    "decode_ms_per_step",
    "e2e_ms",
    "latency_ms_per_request",
    "output_tokens_per_s",
)
"""The timed figures: they change from run to run (excluded from notebook comparisons)."""

INT_COLUMNS = ("batch_size", "prompt_len", "gen_len", "repeats")
FLOAT_COLUMNS = tuple(
    c for c in MEASUREMENT_COLUMNS if c not in INT_COLUMNS and c not in ("oom", "device")
)


def require_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` when it is a DataFrame holding ``columns``; InputError naming a missing one."""
    return check_frame(df, columns, what="measurement table")


#: the largest batch size measured, the most batch sizes one measurement takes, and the most
#: warm-up and timed runs per batch size.
MAX_BATCH_SIZE = 4096
MAX_BATCH_SIZES = 64
MAX_REPEATS = 1000


def _bounded_sizes(sizes: list[int], field: str) -> list[int]:
    out = sorted(set(sizes))
    if len(out) > MAX_BATCH_SIZES:
        raise InputError(
            f"{len(out)} batch sizes: at most {MAX_BATCH_SIZES} per measurement", field=field
        )
    return out


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,2,4,8"`` → ``[1, 2, 4, 8]`` (sorted, unique; each in [1, MAX_BATCH_SIZE], at most
    MAX_BATCH_SIZES of them); InputError naming the bad item."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise InputError("no batch sizes given (e.g. 1,2,4,8)", field="batch-sizes")
    sizes = []
    for item in items:
        if not re.fullmatch(r"\d{1,9}", item) or not 1 <= int(item) <= MAX_BATCH_SIZE:
            raise InputError(
                f"not a whole number in [1, {MAX_BATCH_SIZE}]: {item[:20]!r}", field="batch-sizes"
            )
        sizes.append(int(item))
    return _bounded_sizes(sizes, "batch-sizes")


def check_batch_sizes(batch_sizes: Sequence[int] | str) -> list[int]:
    """Batch sizes as a sorted list of unique whole numbers in [1, MAX_BATCH_SIZE] (a string
    like ``"1,2,4"`` is parsed); InputError naming the bad item."""
    if isinstance(batch_sizes, str):
        return parse_batch_sizes(batch_sizes)
    sizes = [
        check_scalar(b, "batch_sizes", int, min_val=1, max_val=MAX_BATCH_SIZE) for b in batch_sizes
    ]
    if not sizes:
        raise InputError("no batch sizes given", field="batch_sizes")
    return _bounded_sizes(sizes, "batch_sizes")


def oom_row(batch_size: int, prompt_len: int, gen_len: int, device: str, repeats: int) -> dict:
    """The row of a batch size that ran out of memory: every figure NaN, ``oom`` True."""
    row: dict[str, Any] = dict.fromkeys(FLOAT_COLUMNS, math.nan)
    row.update(
        batch_size=batch_size,
        prompt_len=prompt_len,
        gen_len=gen_len,
        oom=True,
        device=device,
        repeats=repeats,
    )
    return row


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A measurement table from row dicts, with the columns' dtypes."""
    df = pd.DataFrame(rows, columns=list(MEASUREMENT_COLUMNS))
    for column in INT_COLUMNS:
        df[column] = df[column].astype(np.int64)
    for column in FLOAT_COLUMNS:
        df[column] = df[column].astype(np.float64)
    df["oom"] = df["oom"].astype(bool)
    df["device"] = df["device"].astype(object)
    return df
