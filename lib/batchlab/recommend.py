"""Batch-size and vLLM-style serving recommendations from a measurement or the roofline model.

A recommendation starts from a table of throughput and latency per batch size (a measurement
from :func:`batchlab.measure.measure_batch_sizes`, or the roofline model's prediction for a
model and a device) and a use case, and picks one batch size by these rules, in order:

1. **Memory.** Only batch sizes whose KV cache fits: with a model and a device, the KV-cache
   arithmetic (:func:`max_batch_for_memory`: weights plus ``batch × context`` tokens of KV cache
   within ``memory_fraction`` of the device's memory); otherwise the sizes measured below the
   first out-of-memory.
2. **Latency.** Only batch sizes meeting the use case's latency limit (a time per output token
   for the streaming use cases, none for offline work unless one is given).
3. **Throughput knee.** Among those, the smallest batch size within the use case's tolerance of
   the best throughput: larger batches add latency and memory for little more throughput.

The vLLM-style settings follow from it, each with its reason: ``max_num_seqs`` (the concurrent
sequences), ``max_num_batched_tokens`` (tokens per scheduler step: with chunked prefill, the
largest prompt chunk that keeps a mixed step within the per-token limit), ``gpu_memory_utilization``
(the memory fraction the memory rule used) and ``enable_chunked_prefill``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batchlab import measure, roofline
from batchlab.checks import check_scalar
from batchlab.errors import InputError, LimitError

__all__ = [
    "USE_CASES",
    "UseCase",
    "Recommendation",
    "get_use_case",
    "max_batch_for_memory",
    "recommend",
]


@dataclass(frozen=True)
class UseCase:
    """A serving situation and the rules a recommendation applies for it.

    ``latency_column``: the table column the latency limit applies to (None: no default limit);
    ``latency_limit_ms``: its default limit, ms; ``tolerance``: the throughput knee's tolerance
    (0 picks the best throughput); ``enable_chunked_prefill``: whether prompts are split into
    chunks that share steps with decodes; ``prompt_len`` / ``gen_len``: typical lengths in
    tokens, used when neither the call nor a measurement gives them.
    """

    name: str
    description: str
    latency_column: str | None
    latency_limit_ms: float | None
    tolerance: float
    enable_chunked_prefill: bool
    prompt_len: int
    gen_len: int


USE_CASES: dict[str, UseCase] = {
    "interactive": UseCase(
        name="interactive",
        description=(
            "a person watches the reply stream (chat, coding assistant): the time per output "
            "token matters most; 50 ms per token is 20 tokens/s, faster than reading"
        ),
        latency_column="decode_ms_per_step",
        latency_limit_ms=50.0,
        tolerance=0.10,
        enable_chunked_prefill=True,
        prompt_len=512,
        gen_len=256,
    ),
    "mixed": UseCase(
        name="mixed",
        description=(
            "API serving of mixed traffic (short and long prompts, many clients): throughput "
            "balanced against a looser 100 ms per output token"
        ),
        latency_column="decode_ms_per_step",
        latency_limit_ms=100.0,
        tolerance=0.05,
        enable_chunked_prefill=True,
        prompt_len=1024,
        gen_len=256,
    ),
    "offline": UseCase(
        name="offline",
        description=(
            "offline batch jobs (evaluations, labelling, synthetic data): nobody waits for a "
            "single reply, total throughput is all that counts"
        ),
        latency_column=None,
        latency_limit_ms=None,
        tolerance=0.0,
        enable_chunked_prefill=False,
        prompt_len=1024,
        gen_len=256,
    ),
    "long-form": UseCase(
        name="long-form",
        description=(
            "long documents in or out (summaries, reports, stories): a large KV cache per "
            "sequence makes memory the limit; 100 ms per output token"
        ),
        latency_column="decode_ms_per_step",
        latency_limit_ms=100.0,
        tolerance=0.05,
        enable_chunked_prefill=True,
        prompt_len=4096,
        gen_len=1024,
    ),
}
"""The use cases :func:`recommend` knows, by name."""


def get_use_case(use_case: str | UseCase) -> UseCase:
    """A :class:`UseCase` by name (or itself); InputError listing the names otherwise."""
    if isinstance(use_case, UseCase):
        return use_case
    try:
        return USE_CASES[str(use_case)]
    except KeyError:
        raise InputError(
            f"unknown use case {use_case!r}; known: {', '.join(USE_CASES)}", field="use_case"
        ) from None


def max_batch_for_memory(
    model: Any, device: Any, context_len: int, memory_fraction: float = 0.9
) -> int:
    """The largest number of sequences of ``context_len`` tokens whose KV cache fits.

    ``memory_fraction × device memory − weight bytes`` divided by ``kv_cache_bytes_per_token ×
    context_len``, floored (:func:`batchlab.roofline.max_batch_size`). ``model``: a ModelSpec,
    a roofline model name or a transformers model; ``device``: a DeviceSpec or a GPU name.
    0 when not even one sequence fits.
    """
    spec = measure.model_spec_of(model)
    try:
        dev = roofline.get_gpu(device)
    except ValueError as exc:
        raise InputError(str(exc), field="device") from exc
    context_len = check_scalar(context_len, "context_len", int, min_val=1, unit="tokens")
    memory_fraction = roofline.check_memory_fraction(memory_fraction)
    return int(roofline.max_batch_size(spec, dev, context_len, memory_fraction=memory_fraction))


@dataclass(frozen=True)
class Recommendation:
    """A batch size and vLLM-style engine settings, each with the reason it was chosen.

    ``reasons`` maps each of ``batch_size``, ``max_num_seqs``, ``max_num_batched_tokens``,
    ``gpu_memory_utilization`` and ``enable_chunked_prefill`` to a sentence. ``source`` is
    ``"measurement"`` or ``"roofline"``; ``expected_output_tokens_per_s`` and
    ``expected_latency_ms`` (the use case's latency column, or the request latency) are the
    table's figures at the chosen size; ``memory_limit_batch_size`` the memory rule's limit
    (None when unknown).
    """

    use_case: str
    source: str
    batch_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    enable_chunked_prefill: bool
    reasons: dict[str, str] = field(compare=False)
    prompt_len: int
    gen_len: int
    latency_column: str
    latency_limit_ms: float | None
    expected_output_tokens_per_s: float
    expected_latency_ms: float
    memory_limit_batch_size: int | None

    def vllm_args(self) -> dict[str, Any]:
        """The engine arguments as keyword arguments for ``vllm.LLM`` / ``vllm serve`` flags."""
        return {
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enable_chunked_prefill": self.enable_chunked_prefill,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per setting: ``setting``, ``value``, ``reason``."""
        names = ["batch_size", *self.vllm_args()]
        return pd.DataFrame(
            {
                "setting": names,
                "value": [getattr(self, n) for n in names],
                "reason": [self.reasons[n] for n in names],
            }
        )


def _table_len(table: pd.DataFrame, name: str) -> int | None:
    if name not in table.columns:
        return None
    values = pd.unique(table[name])
    return int(values[0]) if len(values) == 1 else None


def _bytes(n: float) -> str:
    """A byte count in decimal units, three significant digits: ``1.10 MB``, ``85.9 GB``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _powers_of_two_upto(limit: int) -> list[int]:
    sizes = [1 << k for k in range(int(limit).bit_length()) if (1 << k) <= limit]
    if limit not in sizes:
        sizes.append(int(limit))
    return sizes


def recommend(
    use_case: str | UseCase,
    *,
    measurement: pd.DataFrame | str | os.PathLike[str] | None = None,
    model: Any = None,
    device: Any = None,
    latency_limit_ms: float | None = None,
    memory_fraction: float = 0.9,
    prompt_len: int | None = None,
    gen_len: int | None = None,
) -> Recommendation:
    """Recommend a batch size and vLLM-style settings for ``use_case`` (see :data:`USE_CASES`).

    ``measurement``: a measurement table or the path of a saved one; without it, ``model`` and
    ``device`` give the roofline model's prediction at powers of two up to the memory limit.
    ``model`` + ``device`` also give the memory limit from the KV-cache arithmetic for a
    context of ``prompt_len + gen_len`` tokens within ``memory_fraction`` of the device memory.
    ``latency_limit_ms`` replaces the use case's limit (for ``offline``, it limits the request
    latency). Lengths default to the measurement's, then to the use case's typical ones.
    Raises :class:`LimitError` when not one sequence fits in memory.
    """
    case = get_use_case(use_case)
    memory_fraction = roofline.check_memory_fraction(memory_fraction)
    latency_limit_ms = check_scalar(
        latency_limit_ms,
        "latency_limit_ms",
        float,
        min_val=0,
        include_boundaries="neither",
        allow_none=True,
        unit="ms",
    )
    if (model is None) != (device is None):
        raise InputError(
            "pass both model and device (or neither)", field="model" if model is None else "device"
        )

    table: pd.DataFrame | None = None
    if measurement is not None:
        table = (
            measurement
            if isinstance(measurement, pd.DataFrame)
            else measure.load_measurement(measurement)
        )
        source = "measurement"
    elif model is None:
        raise InputError(
            "give a measurement, or a model and a device for the roofline model",
            field="measurement",
        )
    else:
        source = "roofline"

    p = check_scalar(prompt_len, "prompt_len", int, min_val=1, allow_none=True, unit="tokens")
    g = check_scalar(gen_len, "gen_len", int, min_val=1, allow_none=True, unit="tokens")
    if table is not None:
        p = p or _table_len(table, "prompt_len")
        g = g or _table_len(table, "gen_len")
    p = p or case.prompt_len
    g = g or case.gen_len
    context = p + g

    # 1. memory
    memory_limit: int | None = None
    memory_reason = ""
    if model is not None:
        memory_limit = max_batch_for_memory(model, device, context, memory_fraction)
        spec = measure.model_spec_of(model)
        dev = roofline.get_gpu(device)
        if memory_limit < 1:
            raise LimitError(
                "kv_cache_tokens",
                case.name,
                context,
                roofline.max_kv_tokens(spec, dev, memory_fraction),
            )
        kv_per_sequence = roofline.kv_cache_bytes_per_token(spec) * context
        memory_reason = (
            f"{memory_limit} sequences of {context} tokens fit: {memory_fraction:.0%} of "
            f"{_bytes(dev.memory_bytes)} minus {_bytes(spec.weight_bytes)} of weights, "
            f"at {_bytes(kv_per_sequence)} of KV cache per sequence"
        )
    if table is None:
        assert memory_limit is not None
        table = measure.roofline_table(model, device, _powers_of_two_upto(memory_limit), p, g)

    ok = measure.valid_rows(
        table,
        [
            "output_tokens_per_s",
            "decode_ms_per_step",
            "latency_ms_per_request",
            "prefill_ms_per_token",
        ],
    )
    oom = (
        table["oom"].to_numpy(dtype=bool) if "oom" in table.columns else np.zeros(len(table), bool)
    )
    if source == "measurement" and oom.any():
        first_oom = int(table.loc[oom, "batch_size"].min())
        below = ok.loc[ok["batch_size"] < first_oom, "batch_size"]
        measured_limit = int(below.max()) if len(below) else 0
        if measured_limit < 1:
            raise LimitError("batch_size", case.name, first_oom, 0)
        if memory_limit is None or measured_limit < memory_limit:
            memory_limit = measured_limit
            memory_reason = (
                f"the measurement ran out of memory at batch size {first_oom}; "
                f"{measured_limit} is the largest size that ran"
            )
    if ok.empty:
        raise InputError("the table has no successful rows", field="batch_size")
    if memory_limit is None:
        memory_reason = (
            "no memory limit known: no model and device given, no out-of-memory measured"
        )
    fits = ok if memory_limit is None else ok.loc[ok["batch_size"] <= memory_limit]
    below_smallest = fits.empty

    # 2. latency
    column = case.latency_column or "latency_ms_per_request"
    limit = float(latency_limit_ms) if latency_limit_ms is not None else case.latency_limit_ms
    reasons: dict[str, str] = {}
    if below_smallest:
        assert memory_limit is not None
        batch = memory_limit
        row = ok.iloc[0]
        reasons["batch_size"] = (
            f"memory allows only {memory_limit} sequences ({memory_reason}), fewer than the "
            f"smallest size in the table ({int(row['batch_size'])})"
        )
        expected_tps = math.nan
        expected_latency = math.nan
        decode_ms = float(row["decode_ms_per_step"])
        prefill_per_token = float(row["prefill_ms_per_token"])
    else:
        if limit is not None:
            feasible = fits.loc[fits[column].to_numpy(dtype=float) <= limit]
        else:
            feasible = fits
        if feasible.empty:
            pos = int(np.argmin(fits[column].to_numpy(dtype=float)))
            chosen = fits.iloc[pos]
            batch = int(chosen["batch_size"])
            reasons["batch_size"] = (
                f"no batch size meets {column} <= {limit:g} ms; batch size {batch} comes closest "
                f"({float(chosen[column]):,.2f} ms)"
            )
        else:
            batch = measure.saturation_batch_size(feasible, case.tolerance)
            chosen = feasible.loc[feasible["batch_size"] == batch].iloc[0]
            best = float(feasible["output_tokens_per_s"].max())
            parts = []
            if case.tolerance > 0:
                parts.append(
                    f"the smallest batch size within {case.tolerance:.0%} of the best throughput "
                    f"({float(chosen['output_tokens_per_s']):,.1f} of {best:,.1f} output tokens/s)"
                )
            else:
                parts.append(f"the best throughput ({best:,.1f} output tokens/s)")
            if limit is not None:
                parts.append(
                    f"among sizes with {column} <= {limit:g} ms (here {float(chosen[column]):,.2f} ms)"
                )
            if memory_limit is not None:
                parts.append(f"and within memory ({memory_reason})")
            else:
                parts.append(f"({memory_reason})")
            reasons["batch_size"] = " ".join(parts)
        expected_tps = float(chosen["output_tokens_per_s"])
        expected_latency = float(chosen[column])
        decode_ms = float(chosen["decode_ms_per_step"])
        prefill_per_token = float(chosen["prefill_ms_per_token"])

    reasons["max_num_seqs"] = (
        f"= the batch size {batch}: the scheduler never runs more sequences at once, so a burst "
        "of requests waits in the queue instead of pushing the batch past the chosen point"
    )

    # 3. token budget per step
    if case.enable_chunked_prefill:
        full = batch * p
        if limit is not None and case.latency_column == "decode_ms_per_step":
            room = limit - decode_ms
            chunk = int(math.floor(room / prefill_per_token)) if room > 0 else 0
            chunk = max(1, min(chunk, full))
            tokens = batch + chunk
            reasons["max_num_batched_tokens"] = (
                f"{batch} decode tokens + a prompt chunk of {chunk} tokens: at "
                f"{prefill_per_token:.4g} ms per prompt token beside a {decode_ms:,.2f} ms decode "
                f"step, a larger chunk would push a mixed step past {limit:g} ms per output token"
                + (
                    " (the whole batch's prompts fit, so no more is useful)"
                    if chunk == full
                    else ""
                )
                + (
                    " (the decode step alone exceeds the limit: the smallest chunk)"
                    if room <= 0
                    else ""
                )
            )
        else:
            tokens = batch + full
            reasons["max_num_batched_tokens"] = (
                f"{batch} decode tokens + all {batch} prompts of {p} tokens in one step: without "
                "a per-token latency limit nothing is gained by smaller chunks"
            )
        reasons["enable_chunked_prefill"] = (
            "on: long prompts are split into chunks that share steps with running decodes, so "
            "a new prompt does not stall every stream's next token"
        )
    else:
        tokens = max(batch * p, context)
        reasons["max_num_batched_tokens"] = (
            f"the prompts of a full batch ({batch} × {p} = {batch * p} tokens) in one prefill "
            f"step, and at least the context length {context} (required without chunked prefill)"
        )
        reasons["enable_chunked_prefill"] = (
            "off: no one waits on a stream, so whole-prompt prefill steps (fewest steps, largest "
            "matrix products) serve throughput best"
        )
    reasons["gpu_memory_utilization"] = (
        f"{memory_fraction:g}: the fraction of device memory for weights, activations and KV "
        "cache that the memory rule assumed"
        + ("" if model is not None else " (vLLM's default; no model and device were given)")
    )
    return Recommendation(
        use_case=case.name,
        source=source,
        batch_size=int(batch),
        max_num_seqs=int(batch),
        max_num_batched_tokens=int(tokens),
        gpu_memory_utilization=float(memory_fraction),
        enable_chunked_prefill=bool(case.enable_chunked_prefill),
        reasons=reasons,
        prompt_len=int(p),
        gen_len=int(g),
        latency_column=column,
        latency_limit_ms=limit,
        expected_output_tokens_per_s=expected_tps,
        expected_latency_ms=expected_latency,
        memory_limit_batch_size=memory_limit,
    )
