"""Analysis of measurement tables (pandas): saturation, latency limits, Pareto sets, memory
slopes, the roofline's prediction in the same columns, and the batch-size choices.

Every function takes a measurement table (:func:`batchlab.measure.measure_batch_sizes`,
:func:`batchlab.measure.load_measurement`) or a roofline table (:func:`roofline_table`).
Out-of-memory rows are left out of every figure (:func:`valid_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab import roofline
from batchlab.checks import as_named, check_scalar, is_number
from batchlab.errors import InputError
from batchlab.measure.harness import model_spec_of
from batchlab.measure.table import MB, check_batch_sizes, frame, require_columns
from batchlab.steptime import StepBatch
from batchlab.sweep import pareto_front

__all__ = [
    "MeasurementSummary",
    "batch_size_choice_table",
    "compare_with_roofline",
    "kv_mb_per_sequence",
    "max_batch_under_latency",
    "memory_per_sequence_mb",
    "memory_vs_batch_table",
    "named_tables",
    "pareto_batch_sizes",
    "roofline_table",
    "saturation_batch_size",
    "summarize_measurement",
    "valid_rows",
]


def valid_rows(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows that did not run out of memory and have finite values in ``columns``, by size."""
    require_columns(df, ["batch_size", *columns])
    keep = np.ones(len(df), dtype=bool)
    if "oom" in df.columns:
        keep &= ~df["oom"].to_numpy(dtype=bool)
    for column in columns:
        keep &= np.isfinite(pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float))
    return df.loc[keep].sort_values("batch_size", kind="stable")


def saturation_batch_size(
    df: pd.DataFrame, tolerance: float = 0.05, *, column: str = "output_tokens_per_s"
) -> int:
    """The smallest batch size whose throughput is within ``tolerance`` of the best measured.

    That is the smallest ``b`` with ``throughput(b) >= (1 - tolerance) · max throughput`` over
    the rows that did not run out of memory: past it, larger batches add latency and memory for
    at most ``tolerance`` more tokens/s.
    """
    tolerance = check_scalar(
        tolerance, "tolerance", float, min_val=0, max_val=1, include_boundaries="left"
    )
    rows = valid_rows(df, [column])
    if rows.empty:
        raise InputError("no successful measurement rows", field=column)
    values = rows[column].to_numpy(dtype=float)
    ok = values >= (1.0 - tolerance) * values.max()
    return int(rows["batch_size"].to_numpy()[np.flatnonzero(ok)[0]])


def max_batch_under_latency(
    df: pd.DataFrame, limit_ms: float, column: str = "latency_ms_per_request"
) -> int | None:
    """The largest batch size whose ``column`` (ms) is at most ``limit_ms``; None if none is.

    Use ``column="decode_ms_per_step"`` for a time-per-output-token limit, ``"prefill_ms"``
    for a time-to-first-token limit, the default for the whole request's latency.
    """
    limit_ms = check_scalar(
        limit_ms, "limit_ms", float, min_val=0, include_boundaries="neither", unit="ms"
    )
    rows = valid_rows(df, [column])
    ok = rows[column].to_numpy(dtype=float) <= float(limit_ms)
    if not ok.any():
        return None
    return int(rows["batch_size"].to_numpy()[ok].max())


def pareto_batch_sizes(
    df: pd.DataFrame,
    *,
    throughput_column: str = "output_tokens_per_s",
    latency_column: str = "latency_ms_per_request",
) -> list[int]:
    """Batch sizes not dominated by another: none has throughput at least as high *and* latency
    at least as low with one of them strictly better (:func:`batchlab.sweep.pareto_front`).
    An exact tie is not a domination: sizes with the same figures as a front size stay too.
    Increasing order."""
    rows = valid_rows(df, [throughput_column, latency_column])
    front = pareto_front(rows, minimize=latency_column, maximize=throughput_column)
    on_front = set(zip(front[throughput_column], front[latency_column], strict=True))
    figures = zip(rows[throughput_column], rows[latency_column], strict=True)
    return [int(b) for b, f in zip(rows["batch_size"], figures, strict=True) if f in on_front]


def memory_per_sequence_mb(df: pd.DataFrame, column: str = "peak_memory_mb") -> float:
    """Memory per extra sequence, MB: the least-squares slope of ``column`` over batch size.

    Uses the rows that did not run out of memory; needs at least two distinct batch sizes.
    ``column="kv_cache_mb"`` gives the KV cache's share alone.
    """
    rows = valid_rows(df, [column])
    x = rows["batch_size"].to_numpy(dtype=float)
    y = rows[column].to_numpy(dtype=float)
    if np.unique(x).size < 2:
        raise InputError("needs successful rows at two or more batch sizes", field=column)
    dx = x - x.mean()
    return float(np.dot(dx, y - y.mean()) / np.dot(dx, dx))


def _settings_len(df: pd.DataFrame, name: str, value: int | None) -> int:
    if value is not None:
        return check_scalar(value, name, int, min_val=1)
    if name in df.columns:
        values = pd.unique(df[name])
        if len(values) == 1:
            return check_scalar(values[0], name, int, min_val=1)
        raise InputError(f"the table has several values of {name}; pass it explicitly", field=name)
    raise InputError(f"the table has no {name} column; pass it explicitly", field=name)


def roofline_table(
    model: Any,
    device: Any,
    batch_sizes: Sequence[int],
    prompt_len: int,
    gen_len: int,
    *,
    calibrated: bool | None = None,
) -> pd.DataFrame:
    """The roofline model's prediction in the measurement table's columns, one row per size.

    Step times from :class:`batchlab.roofline.RooflineStepTime`: ``calibrated`` (True: kernel
    efficiencies fitted on GPU profiles; False: the data-sheet ideal) defaults to True for a
    GPU preset (a device with a data-sheet SM count) and False for any other device, such as a
    CPU measured by :func:`measure_cpu_device` (its probes already measure achieved peaks, and
    the GPU efficiencies do not apply to it).

    Prefill: one step with ``batch × prompt_len`` prompt tokens (each sequence attends to its
    own prompt and emits its first token); decode: the mean over the ``gen_len - 1`` steps of a step where every sequence
    holds context ``prompt_len + t`` (t = 1 … gen_len − 1); KV cache: ``kv_cache_bytes_per_token
    · (prompt_len + gen_len − 1)`` per sequence (the positions the measured cache holds);
    ``peak_memory_mb`` is the KV cache alone, ``baseline_memory_mb`` the weights. ``oom`` marks
    sizes whose KV cache does not fit beside the weights in the whole device memory.
    """
    spec = model_spec_of(model)
    try:
        dev = roofline.get_gpu(device)
    except ValueError as exc:
        raise InputError(str(exc), field="device") from exc
    sizes = check_batch_sizes(batch_sizes)
    prompt_len = check_scalar(prompt_len, "prompt_len", int, min_val=1)
    gen_len = check_scalar(gen_len, "gen_len", int, min_val=2)
    positions = prompt_len + gen_len - 1
    kv_per_seq = roofline.kv_cache_bytes_per_token(spec) * positions
    fits = roofline.max_batch_size(spec, dev, positions, memory_fraction=1.0)
    if calibrated is None:
        calibrated = dev.n_sms is not None
    step_model = roofline.RooflineStepTime(spec, dev, calibrated=calibrated)
    rows = []
    for b in sizes:
        # one prefill step of b prompts, each attending to itself and emitting a token
        prefill = step_model.duration_ms(
            StepBatch(
                prefill_tokens=b * prompt_len,
                prefill_pairs=b * prompt_len * (prompt_len + 1) / 2.0,
                prefill_seqs=b,
            )
        )
        # decode step t = 1 … gen_len - 1 feeds one token per sequence at context prompt_len + t
        first = StepBatch(decode_seqs=b, decode_context=float(b * (prompt_len + 1)))
        decode = float(np.mean(step_model.decode_steps_ms(first, gen_len - 1)))
        e2e = prefill + (gen_len - 1) * decode
        rows.append(
            {
                "batch_size": b,
                "prompt_len": prompt_len,
                "gen_len": gen_len,
                "prefill_ms": prefill,
                "prefill_ms_spread": 0.0,
                "prefill_ms_per_token": prefill / (b * prompt_len),
                "decode_ms_per_step": decode,
                "decode_ms_per_step_spread": 0.0,
                "e2e_ms": e2e,
                "e2e_ms_spread": 0.0,
                "latency_ms_per_request": e2e,
                "output_tokens_per_s": b * gen_len / (e2e / 1e3),
                "output_tokens_per_s_spread": 0.0,
                "peak_memory_mb": b * kv_per_seq / MB,
                "baseline_memory_mb": spec.weight_bytes / MB,
                "kv_cache_mb": b * kv_per_seq / MB,
                "oom": b > fits,
                "device": dev.name,
                "repeats": 0,
            }
        )
    return frame(rows)


def compare_with_roofline(
    df: pd.DataFrame,
    model: Any,
    device: Any,
    prompt_len: int | None = None,
    gen_len: int | None = None,
    *,
    calibrated: bool | None = None,
) -> pd.DataFrame:
    """Measured figures next to the roofline prediction for the same model, device and lengths
    (``calibrated``: see :func:`roofline_table`).

    ``model``: a ModelSpec, a roofline model name or a transformers model (see
    :func:`model_spec_of`); ``device``: a DeviceSpec (e.g. from :func:`measure_cpu_device`) or a
    GPU name. Lengths default to the table's. One row per successful batch size with
    ``measured_X``, ``predicted_X`` and ``ratio_X = measured / predicted`` for X in prefill_ms,
    decode_ms_per_step, e2e_ms, output_tokens_per_s and kv_cache_mb.
    """
    require_columns(
        df, ["batch_size", "prefill_ms", "decode_ms_per_step", "e2e_ms", "output_tokens_per_s"]
    )
    p = _settings_len(df, "prompt_len", prompt_len)
    g = _settings_len(df, "gen_len", gen_len)
    rows = valid_rows(df, ["prefill_ms", "decode_ms_per_step", "e2e_ms", "output_tokens_per_s"])
    if rows.empty:
        raise InputError("no successful measurement rows to compare", field="batch_size")
    predicted = roofline_table(
        model, device, rows["batch_size"].tolist(), p, g, calibrated=calibrated
    )
    out = pd.DataFrame({"batch_size": rows["batch_size"].to_numpy(dtype=np.int64)})
    quantities = [
        "prefill_ms",
        "decode_ms_per_step",
        "e2e_ms",
        "output_tokens_per_s",
        "kv_cache_mb",
    ]
    for q in quantities:
        measured = (
            rows[q].to_numpy(dtype=float) if q in rows.columns else np.full(len(rows), math.nan)
        )
        pred = predicted[q].to_numpy(dtype=float)
        out[f"measured_{q}"] = measured
        out[f"predicted_{q}"] = pred
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"ratio_{q}"] = measured / pred
    return out


@dataclass(frozen=True)
class MeasurementSummary:
    """The analysis of one measurement table.

    ``saturation_batch_size``: smallest size within ``tolerance`` of the best throughput;
    ``best_throughput_batch_size`` / ``best_output_tokens_per_s``: the fastest row;
    ``pareto_batch_sizes``: throughput-up / latency-down Pareto set;
    ``memory_per_sequence_mb`` / ``kv_cache_per_sequence_mb``: least-squares slopes (MB per
    extra sequence; NaN with fewer than two sizes); ``max_batch_under_latency``: largest size
    with ``latency_column <= latency_limit_ms`` (None without a limit or when none meets it);
    ``oom_batch_size``: the size that ran out of memory, or None.
    """

    saturation_batch_size: int
    best_throughput_batch_size: int
    best_output_tokens_per_s: float
    pareto_batch_sizes: tuple[int, ...]
    memory_per_sequence_mb: float
    kv_cache_per_sequence_mb: float
    tolerance: float
    latency_limit_ms: float | None
    latency_column: str
    max_batch_under_latency: int | None
    oom_batch_size: int | None

    def to_frame(self) -> pd.DataFrame:
        """A two-column table (``quantity``, ``value``) for display."""
        return pd.DataFrame(
            {
                "quantity": list(self.__dataclass_fields__),
                "value": [getattr(self, f) for f in self.__dataclass_fields__],
            }
        )


def summarize_measurement(
    df: pd.DataFrame,
    *,
    tolerance: float = 0.05,
    latency_limit_ms: float | None = None,
    latency_column: str = "latency_ms_per_request",
) -> MeasurementSummary:
    """Saturation, best throughput, Pareto set, memory slopes and latency-limited size of a table."""
    rows = valid_rows(df, ["output_tokens_per_s"])
    if rows.empty:
        raise InputError("no successful measurement rows", field="output_tokens_per_s")
    best = int(np.argmax(rows["output_tokens_per_s"].to_numpy(dtype=float)))

    def slope(column: str) -> float:
        if column not in df.columns:
            return math.nan
        try:
            return memory_per_sequence_mb(df, column)
        except InputError:
            return math.nan

    oom = None
    if "oom" in df.columns and df["oom"].to_numpy(dtype=bool).any():
        oom = int(df.loc[df["oom"].to_numpy(dtype=bool), "batch_size"].min())
    return MeasurementSummary(
        saturation_batch_size=saturation_batch_size(df, tolerance),
        best_throughput_batch_size=int(rows["batch_size"].to_numpy()[best]),
        best_output_tokens_per_s=float(rows["output_tokens_per_s"].to_numpy()[best]),
        pareto_batch_sizes=tuple(pareto_batch_sizes(df, latency_column=latency_column)),
        memory_per_sequence_mb=slope("peak_memory_mb"),
        kv_cache_per_sequence_mb=slope("kv_cache_mb"),
        tolerance=float(tolerance),
        latency_limit_ms=None if latency_limit_ms is None else float(latency_limit_ms),
        latency_column=latency_column,
        max_batch_under_latency=(
            None
            if latency_limit_ms is None
            else max_batch_under_latency(df, latency_limit_ms, column=latency_column)
        ),
        oom_batch_size=oom,
    )


def named_tables(tables: Any) -> list[tuple[str, pd.DataFrame]]:
    """``(name, table)`` pairs from one measurement table, a mapping name -> table or a list
    (named ``measurement 0``, ...); InputError for an item that is not a DataFrame."""
    pairs = as_named(tables, "measurement table", "measurement")
    for name, df in pairs:
        if not isinstance(df, pd.DataFrame):
            raise InputError(
                f"{name!r} is a {type(df).__name__}, not a measurement table", path=name
            )
    return pairs


def batch_size_choice_table(
    tables: Any,
    *,
    tolerance: float = 0.05,
    latency_column: str = "latency_ms_per_request",
    latency_limit_ms: float | None = None,
) -> pd.DataFrame:
    """The two batch-size choices of each measurement (or roofline) table, one row per table.

    ``tables``: one table (:func:`batchlab.measure.measure_batch_sizes`,
    :func:`batchlab.measure.load_measurement` or :func:`roofline_table`), a mapping name ->
    table, or a list. Columns: ``table``, ``saturation_batch_size``
    (:func:`saturation_batch_size` with ``tolerance``: the smallest size within ``tolerance``
    of the best output tokens/s) and its ``tokens_per_s_at_saturation``, ``best_batch_size`` /
    ``best_tokens_per_s`` (the fastest row), ``latency_limit_ms`` and ``latency_choice``
    (:func:`max_batch_under_latency`: the largest size whose ``latency_column`` is at most the
    limit, in ms; <NA> without a limit or when none meets it) with ``latency_at_choice_ms`` and
    ``tokens_per_s_at_choice``. Out-of-memory rows are left out.
    """
    rows = []
    for name, df in named_tables(tables):
        ok = valid_rows(df, ["output_tokens_per_s", latency_column])
        if ok.empty:
            raise InputError("no successful rows", path=name, field="output_tokens_per_s")
        sizes = ok["batch_size"].to_numpy(dtype=np.int64)
        tps = ok["output_tokens_per_s"].to_numpy(dtype=np.float64)
        lat = ok[latency_column].to_numpy(dtype=np.float64)
        sat = saturation_batch_size(ok, tolerance)
        best = int(np.argmax(tps))
        choice = None
        if latency_limit_ms is not None:
            choice = max_batch_under_latency(ok, latency_limit_ms, column=latency_column)
        at = np.flatnonzero(sizes == choice) if choice is not None else np.array([], np.int64)
        rows.append(
            {
                "table": name,
                "saturation_batch_size": sat,
                "tokens_per_s_at_saturation": float(tps[sizes == sat][0]),
                "best_batch_size": int(sizes[best]),
                "best_tokens_per_s": float(tps[best]),
                "latency_limit_ms": np.nan if latency_limit_ms is None else float(latency_limit_ms),
                "latency_choice": choice,
                "latency_at_choice_ms": float(lat[at[0]]) if at.size else np.nan,
                "tokens_per_s_at_choice": float(tps[at[0]]) if at.size else np.nan,
            }
        )
    out = pd.DataFrame(rows)
    out["latency_choice"] = pd.array(out["latency_choice"].tolist(), dtype="Int64")
    return out


def kv_mb_per_sequence(kv_prediction: Any, df: pd.DataFrame) -> float | None:
    """MB of KV cache per sequence: a number as is, or from a model's KV bytes per token times
    the positions the measured cache holds, ``prompt_len + gen_len - 1`` (None for None)."""
    if kv_prediction is None:
        return None
    if is_number(kv_prediction):
        return check_scalar(kv_prediction, "kv_prediction", float, min_val=0, unit="MB")
    spec = model_spec_of(kv_prediction)
    lengths = []
    for col in ("prompt_len", "gen_len"):
        if col not in df.columns:
            raise InputError("the table has no such column; pass kv_prediction in MB", field=col)
        values = pd.unique(df[col])
        if len(values) != 1:
            raise InputError(
                "the table has several lengths; pass kv_prediction in MB per sequence", field=col
            )
        lengths.append(int(values[0]))
    return spec.kv_bytes_per_token * (lengths[0] + lengths[1] - 1) / MB


def memory_vs_batch_table(df: pd.DataFrame, *, kv_prediction: Any = None) -> pd.DataFrame:
    """Peak memory and KV cache per successful batch size (MB = 10⁶ bytes).

    ``batch_size``, ``peak_memory_mb`` and ``kv_cache_mb`` (measured), ``other_mb = peak − KV
    cache`` (activations, logits, allocator slack), and with ``kv_prediction`` (MB per
    sequence, or a model: ModelSpec, preset name or transformers model, whose
    ``kv_bytes_per_token × (prompt_len + gen_len − 1)`` gives it) ``predicted_kv_cache_mb =
    batch_size × per-sequence MB``.
    """
    ok = valid_rows(df, ["peak_memory_mb", "kv_cache_mb"])
    out = pd.DataFrame(
        {
            "batch_size": ok["batch_size"].to_numpy(dtype=np.int64),
            "peak_memory_mb": ok["peak_memory_mb"].to_numpy(dtype=np.float64),
            "kv_cache_mb": ok["kv_cache_mb"].to_numpy(dtype=np.float64),
        }
    )
    out["other_mb"] = out["peak_memory_mb"] - out["kv_cache_mb"]
    per_seq = kv_mb_per_sequence(kv_prediction, df)
    if per_seq is not None:
        out["predicted_kv_cache_mb"] = out["batch_size"] * per_seq
    return out
