"""Hardware and model arithmetic: model and GPU specs, KV-cache sizes and roofline step times.

Units: lengths in tokens, memory in bytes, compute in FLOPs, times in milliseconds.

The model is a Llama-style decoder (gated MLP, grouped-query attention). Definitions:

* ``head_dim = hidden_size / n_heads``; ``kv_bytes_per_token = 2 · n_layers · n_kv_heads ·
  head_dim · bytes_per_kv`` (K and V of every layer for one token).
* Parameters: embeddings ``V·H`` + per layer (``q``/``o``: ``H·H``; ``k``/``v``:
  ``H·n_kv_heads·head_dim``; gated MLP ``3·H·I``; two RMSNorm vectors ``2·H``) + final norm ``H`` +
  ``lm_head`` ``V·H`` unless tied to the embeddings.
* FLOPs of a forward pass: ``2`` per matrix parameter per token (the matmul weights of all layers),
  ``2·V·H`` for the logits of each *emitted* position (the last position of a prefill, every
  sequence of a decode step), and attention ``4 · n_layers · n_heads · head_dim`` per causal
  (query, key) pair (``QKᵀ`` and ``PV``). A prefill of ``n`` tokens after ``c`` cached tokens has
  ``n·c + n(n+1)/2`` pairs; a decode step at context length ``L`` (the new token included) has
  ``L`` pairs.
* Bytes moved by a step: all weights once (``weight_bytes``) plus the KV cache read and written:
  ``kv_bytes_per_token · (c + n)`` for a prefill, ``kv_bytes_per_token · ΣL`` for a decode step.
  Activations are not counted (they are small beside weights in decode, and prefill is
  compute-bound).
* Step time = ``max(FLOPs / peak_flops, bytes / memory_bandwidth)`` + ``step_overhead_ms``.
  Peak figures are data-sheet maxima, so predicted times are lower bounds.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.errors import InputError

__all__ = [
    "GPUS",
    "MODELS",
    "DeviceSpec",
    "LinearStepTime",
    "ModelSpec",
    "RooflineStepTime",
    "StepTimeModel",
    "TableStepTime",
    "decode_step_bytes",
    "decode_step_flops",
    "get_gpu",
    "get_model",
    "kv_cache_bytes_per_token",
    "max_batch_size",
    "max_kv_tokens",
    "model_table",
    "gpu_table",
    "prefill_bytes",
    "prefill_flops",
    "step_time_ms",
]

GiB = 2**30


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer (Llama-style: gated MLP, grouped-query attention).

    Sizes are counts (layers, heads) and widths (hidden, intermediate, vocabulary);
    ``bytes_per_weight`` and ``bytes_per_kv`` are bytes per element (2.0 for fp16/bf16).
    """

    name: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    vocab_size: int
    bytes_per_weight: float = 2.0
    bytes_per_kv: float = 2.0
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in (
            "n_layers",
            "hidden_size",
            "n_heads",
            "n_kv_heads",
            "intermediate_size",
            "vocab_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
                raise InputError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("bytes_per_weight", "bytes_per_kv"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and value > 0):
                raise InputError(f"must be a positive number of bytes, got {value!r}", field=name)
        if self.hidden_size % self.n_heads:
            raise InputError(
                f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}",
                field="hidden_size",
            )
        if self.n_heads % self.n_kv_heads:
            raise InputError(
                f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}",
                field="n_kv_heads",
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size / n_heads."""
        return self.hidden_size // self.n_heads

    @property
    def matmul_params_per_layer(self) -> int:
        """Weights of one layer's matrix products: q, k, v, o projections and the gated MLP."""
        h, kv = self.hidden_size, self.n_kv_heads * self.head_dim
        return 2 * h * h + 2 * h * kv + 3 * h * self.intermediate_size

    @property
    def n_params(self) -> int:
        """Parameter count from the shapes (embeddings, layers, norms, lm_head unless tied)."""
        h, v = self.hidden_size, self.vocab_size
        per_layer = self.matmul_params_per_layer + 2 * h
        head = 0 if self.tie_word_embeddings else v * h
        return v * h + self.n_layers * per_layer + h + head

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights: n_params · bytes_per_weight."""
        return self.n_params * float(self.bytes_per_weight)

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of KV cache per token: 2 · n_layers · n_kv_heads · head_dim · bytes_per_kv."""
        return 2.0 * self.n_layers * self.n_kv_heads * self.head_dim * float(self.bytes_per_kv)

    # FLOP coefficients used by the formulas (see the module docstring).
    @property
    def _flops_per_token(self) -> float:
        return 2.0 * self.n_layers * self.matmul_params_per_layer

    @property
    def _flops_per_logit_row(self) -> float:
        return 2.0 * self.vocab_size * self.hidden_size

    @property
    def _flops_per_pair(self) -> float:
        return 4.0 * self.n_layers * self.n_heads * self.head_dim


@dataclass(frozen=True)
class DeviceSpec:
    """An accelerator (or a measured CPU): peak dense bf16 FLOP/s, memory bandwidth in bytes/s,
    memory in bytes, and a fixed per-step overhead in ms (kernel launches, scheduling)."""

    name: str
    peak_flops: float
    memory_bandwidth: float
    memory_bytes: float
    step_overhead_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("peak_flops", "memory_bandwidth", "memory_bytes"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and value > 0):
                raise InputError(f"must be a positive number, got {value!r}", field=name)
        value = self.step_overhead_ms
        if not (_is_real(value) and math.isfinite(value) and value >= 0):
            raise InputError(
                f"must be a number of ms >= 0, got {value!r}", field="step_overhead_ms"
            )

    def scaled(self, n: int) -> DeviceSpec:
        """``n`` devices as one (ideal tensor parallelism): n× FLOP/s, bandwidth and memory."""
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise InputError(f"must be a positive integer, got {n!r}", field="n_devices")
        n = int(n)
        if n == 1:
            return self
        return dataclasses.replace(
            self,
            name=f"{n}x{self.name}",
            peak_flops=self.peak_flops * n,
            memory_bandwidth=self.memory_bandwidth * n,
            memory_bytes=self.memory_bytes * n,
        )


# Model shapes: the `config.json` of each model's Hugging Face repository
# (num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, intermediate_size,
# vocab_size; tie_word_embeddings false).
MODELS: dict[str, ModelSpec] = {
    # meta-llama/Llama-2-7b-hf: 32 layers, 4096 hidden, 32 heads (no GQA), 11008 MLP, 32000 vocab
    "llama-2-7b": ModelSpec("llama-2-7b", 32, 4096, 32, 32, 11008, 32000),
    # meta-llama/Meta-Llama-3-8B: 32 layers, 4096 hidden, 32 heads, 8 KV heads, 14336, 128256
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 32, 8, 14336, 128256),
    # meta-llama/Llama-2-70b-hf: 80 layers, 8192 hidden, 64 heads, 8 KV heads, 28672, 32000
    "llama-2-70b": ModelSpec("llama-2-70b", 80, 8192, 64, 8, 28672, 32000),
}

# GPU figures: NVIDIA data sheets. Peak FLOP/s are the dense BF16 Tensor Core figures (the data
# sheets print the 2:4-sparsity figure, twice the dense one, with an asterisk). Memory "GB" of
# the data sheets is taken as GiB (nvidia-smi reports 40,960 MiB on an A100 40GB); bandwidth
# GB/s is decimal.
GPUS: dict[str, DeviceSpec] = {
    # NVIDIA A100 Tensor Core GPU data sheet: BF16 Tensor Core 312 TFLOPS (624 sparse),
    # A100 40GB SXM: 40GB HBM2, 1,555 GB/s
    "a100-40gb": DeviceSpec("a100-40gb", 312e12, 1555e9, 40 * GiB),
    # same data sheet, A100 80GB SXM: 80GB HBM2e, 2,039 GB/s
    "a100-80gb": DeviceSpec("a100-80gb", 312e12, 2039e9, 80 * GiB),
    # NVIDIA H100 Tensor Core GPU data sheet, H100 SXM: BF16 Tensor Core 1,979 TFLOPS with
    # sparsity (989.5 dense), 80GB HBM3, 3.35 TB/s
    "h100-sxm": DeviceSpec("h100-sxm", 989.5e12, 3.35e12, 80 * GiB),
    # NVIDIA H200 Tensor Core GPU data sheet, H200 SXM: BF16 Tensor Core 1,979 TFLOPS with
    # sparsity (989.5 dense), 141GB HBM3e, 4.8 TB/s
    "h200-sxm": DeviceSpec("h200-sxm", 989.5e12, 4.8e12, 141 * GiB),
    # NVIDIA L4 Tensor Core GPU data sheet: BF16 Tensor Core 242 TFLOPS with sparsity (121
    # dense), 24GB GDDR6, 300 GB/s
    "l4": DeviceSpec("l4", 121e12, 300e9, 24 * GiB),
}


def get_model(name_or_spec: str | ModelSpec) -> ModelSpec:
    """A :class:`ModelSpec` by preset name (case-insensitive) or passed through.

    Raises :class:`InputError` (a ``ValueError``) listing the preset names.
    """
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    key = str(name_or_spec).strip().lower()
    if key in MODELS:
        return MODELS[key]
    raise InputError(
        f"unknown model {name_or_spec!r}; presets: {', '.join(MODELS)} (or pass a ModelSpec)",
        field="model",
    )


_SCALED = re.compile(r"^(\d+)\s*x\s*[-_]?\s*(.+)$")


def get_gpu(name_or_spec: str | DeviceSpec) -> DeviceSpec:
    """A :class:`DeviceSpec` by preset name (case-insensitive) or passed through.

    ``"<n>x<name>"`` (e.g. ``"4xa100-80gb"``) gives ``n`` devices as one (:meth:`DeviceSpec.scaled`).
    Raises :class:`InputError` (a ``ValueError``) listing the preset names.
    """
    if isinstance(name_or_spec, DeviceSpec):
        return name_or_spec
    key = str(name_or_spec).strip().lower()
    if key in GPUS:
        return GPUS[key]
    match = _SCALED.match(key)
    if match and match.group(2) in GPUS and int(match.group(1)) >= 1:
        return GPUS[match.group(2)].scaled(int(match.group(1)))
    raise InputError(
        f"unknown GPU {name_or_spec!r}; presets: {', '.join(GPUS)} (or 'Nx<preset>', or pass a "
        "DeviceSpec)",
        field="gpu",
    )


def kv_cache_bytes_per_token(model: str | ModelSpec) -> float:
    """Bytes of KV cache one token occupies (all layers, K and V)."""
    return get_model(model).kv_bytes_per_token


def _check_fraction(memory_fraction: float) -> float:
    if not (_is_real(memory_fraction) and 0 < memory_fraction <= 1):
        raise InputError(f"must be in (0, 1], got {memory_fraction!r}", field="memory_fraction")
    return float(memory_fraction)


def max_kv_tokens(
    model: str | ModelSpec, device: str | DeviceSpec, memory_fraction: float = 0.9
) -> int:
    """Tokens of KV cache that fit beside the weights in ``memory_fraction`` of device memory.

    ``floor((memory_fraction · memory_bytes − weight_bytes) / kv_bytes_per_token)``, 0 when the
    weights alone do not fit.
    """
    spec, dev = get_model(model), get_gpu(device)
    free = _check_fraction(memory_fraction) * dev.memory_bytes - spec.weight_bytes
    if free <= 0:
        return 0
    return int(free // spec.kv_bytes_per_token)


def max_batch_size(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    context_len: int,
    memory_fraction: float = 0.9,
) -> int:
    """Largest number of sequences of ``context_len`` tokens whose KV cache fits beside the weights."""
    if isinstance(context_len, bool) or int(context_len) != context_len or context_len <= 0:
        raise InputError(
            f"must be a positive number of tokens, got {context_len!r}", field="context_len"
        )
    return max_kv_tokens(model, device, memory_fraction) // int(context_len)


def _check_tokens(value: Any, field: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise InputError(f"must be a whole number of tokens >= 0, got {value!r}", field=field)
    return int(value)


def _context_array(context_lens: ArrayLike) -> np.ndarray:
    arr = np.asarray(context_lens, dtype=np.float64).reshape(-1)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 1):
        raise InputError("context lengths must be finite and >= 1 token", field="context_lens")
    return arr


def prefill_flops(model: str | ModelSpec, n_tokens: int, context: int = 0) -> float:
    """FLOPs of prefilling ``n_tokens`` of one sequence after ``context`` cached tokens.

    ``2·matmul_params·n + 2·V·H`` (logits of the last position) ``+ 4·L·n_heads·head_dim ·
    (n·context + n(n+1)/2)`` (causal attention). 0 for ``n_tokens == 0``.
    """
    spec = get_model(model)
    n = _check_tokens(n_tokens, "n_tokens")
    c = _check_tokens(context, "context")
    if n == 0:
        return 0.0
    pairs = n * c + n * (n + 1) / 2.0
    return spec._flops_per_token * n + spec._flops_per_logit_row + spec._flops_per_pair * pairs


def prefill_bytes(model: str | ModelSpec, n_tokens: int, context: int = 0) -> float:
    """Bytes moved by that prefill: the weights once + KV read of ``context`` and write of ``n``."""
    spec = get_model(model)
    n = _check_tokens(n_tokens, "n_tokens")
    c = _check_tokens(context, "context")
    if n == 0:
        return 0.0
    return spec.weight_bytes + spec.kv_bytes_per_token * (c + n)


def decode_step_flops(model: str | ModelSpec, context_lens: ArrayLike) -> float:
    """FLOPs of one decode step over a batch; ``context_lens[i]`` counts the new token too."""
    spec = get_model(model)
    ctx = _context_array(context_lens)
    n = ctx.size
    return (spec._flops_per_token + spec._flops_per_logit_row) * n + spec._flops_per_pair * float(
        ctx.sum()
    )


def decode_step_bytes(model: str | ModelSpec, context_lens: ArrayLike) -> float:
    """Bytes moved by one decode step: the weights once + the KV cache of every sequence.

    0 for an empty batch (no step runs).
    """
    spec = get_model(model)
    ctx = _context_array(context_lens)
    if ctx.size == 0:
        return 0.0
    return spec.weight_bytes + spec.kv_bytes_per_token * float(ctx.sum())


def step_time_ms(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    *,
    prefill_tokens: int = 0,
    context_lens: ArrayLike = (),
    prefill_context: int = 0,
) -> float:
    """Roofline time of one step (ms): a prefill chunk of ``prefill_tokens`` after
    ``prefill_context`` cached tokens, plus one decode token for each of ``context_lens``.

    ``max(FLOPs / peak_flops, bytes / memory_bandwidth) · 1e3 + step_overhead_ms``; the weights
    are read once for the whole step. 0.0 for an empty step.
    """
    spec, dev = get_model(model), get_gpu(device)
    p = _check_tokens(prefill_tokens, "prefill_tokens")
    c = _check_tokens(prefill_context, "prefill_context")
    ctx = _context_array(context_lens)
    if p == 0 and ctx.size == 0:
        return 0.0
    pairs = p * c + p * (p + 1) / 2.0
    return RooflineStepTime(spec, dev).step_ms(
        p, ctx, prefill_pairs=pairs if p else None, prefill_cached=c if p else 0
    )


class StepTimeModel:
    """How long one engine step takes (ms). The simulator's only view of the hardware.

    A step runs ``prefill_tokens`` prompt tokens (possibly several sequences' chunks) and one
    decode token for each sequence in ``decode_context_lens`` (context length including the new
    token). ``prefill_pairs`` is the number of causal (query, key) attention pairs of the prefill
    part (default: one sequence from position 0, ``n(n+1)/2``) and ``prefill_cached`` the cached
    tokens those chunks attend to (read from the KV cache). Subclasses implement :meth:`step_ms`;
    :meth:`decode_run_ms` (consecutive decode steps) has a generic loop here, vectorized in the
    subclasses.
    """

    def step_ms(
        self,
        prefill_tokens: int,
        decode_context_lens: np.ndarray,
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
    ) -> float:
        """Duration of one step in ms (0.0 for an empty step)."""
        raise NotImplementedError

    def decode_run_ms(self, decode_context_lens: ArrayLike, n_steps: int) -> np.ndarray:
        """Durations (ms) of ``n_steps`` consecutive decode-only steps of the same sequences;
        at step ``j`` (0-based) every context length is ``decode_context_lens + j``."""
        ctx = np.asarray(decode_context_lens, dtype=np.float64).reshape(-1)
        return np.array([self.step_ms(0, ctx + j) for j in range(int(n_steps))], dtype=np.float64)

    def _decode_run(self, n_seqs: int, sum_ctx: float, n_steps: int) -> np.ndarray:
        """Fast path used by the simulator when ``sums_only``: durations of ``n_steps`` decode
        steps of ``n_seqs`` sequences whose context lengths sum to ``sum_ctx`` at the first."""
        raise NotImplementedError

    def _step(self, p: int, n: int, s: float, pairs: float, cached: int) -> float:
        """Fast path used by the simulator when ``sums_only``: one step of ``p`` prefill tokens
        (``pairs`` attention pairs, ``cached`` tokens read) and ``n`` decodes with ΣL = ``s``."""
        raise NotImplementedError

    #: True when the time of a decode step depends only on the number of sequences and ΣL.
    sums_only: bool = False


class RooflineStepTime(StepTimeModel):
    """Step times from the roofline formulas of a model on a device (see the module docstring)."""

    sums_only = True

    def __init__(self, model: str | ModelSpec, device: str | DeviceSpec) -> None:
        self.model = get_model(model)
        self.device = get_gpu(device)
        m, d = self.model, self.device
        self._inv_flops = 1e3 / d.peak_flops  # ms per FLOP
        self._inv_bw = 1e3 / d.memory_bandwidth  # ms per byte
        self._tok = m._flops_per_token
        self._logit = m._flops_per_logit_row
        self._pair = m._flops_per_pair
        self._w = m.weight_bytes
        self._kv = m.kv_bytes_per_token
        self._oh = d.step_overhead_ms

    def __repr__(self) -> str:
        return f"RooflineStepTime({self.model.name!r}, {self.device.name!r})"

    def step_ms(
        self,
        prefill_tokens: int,
        decode_context_lens: np.ndarray,
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
    ) -> float:
        """Roofline duration of one step in ms (0.0 for an empty step)."""
        p = int(prefill_tokens)
        n = len(decode_context_lens)
        s = float(np.sum(decode_context_lens)) if n else 0.0
        pairs = p * (p + 1) / 2.0 if prefill_pairs is None else float(prefill_pairs)
        return self._step(p, n, s, pairs, int(prefill_cached))

    def _step(self, p: int, n: int, s: float, pairs: float, cached: int) -> float:
        if p == 0 and n == 0:
            return 0.0
        flops = (self._tok + self._logit) * n + self._pair * s
        moved = self._w + self._kv * s
        if p:
            flops += self._tok * p + self._logit + self._pair * pairs
            moved += self._kv * (cached + p)
        return max(flops * self._inv_flops, moved * self._inv_bw) + self._oh

    def _decode_run(self, n_seqs: int, sum_ctx: float, n_steps: int) -> np.ndarray:
        s = sum_ctx + n_seqs * np.arange(n_steps, dtype=np.float64)
        compute = ((self._tok + self._logit) * n_seqs + self._pair * s) * self._inv_flops
        memory = (self._w + self._kv * s) * self._inv_bw
        return np.maximum(compute, memory) + self._oh

    def decode_run_ms(self, decode_context_lens: ArrayLike, n_steps: int) -> np.ndarray:
        """Durations (ms) of ``n_steps`` consecutive decode steps, vectorized over the steps."""
        ctx = _context_array(decode_context_lens)
        if ctx.size == 0:
            return np.zeros(int(n_steps))
        return self._decode_run(ctx.size, float(ctx.sum()), int(n_steps))


class LinearStepTime(StepTimeModel):
    """A simple linear step-time model, for hand-worked examples and tests.

    ``step_ms = per_step_ms + per_token_ms · prefill_tokens + per_seq_ms · decode_seqs +
    per_context_ms · Σ decode context lengths`` (all in ms), and 0.0 for an empty step.
    """

    sums_only = True

    def __init__(
        self,
        per_step_ms: float,
        per_token_ms: float = 0.0,
        per_seq_ms: float = 0.0,
        per_context_ms: float = 0.0,
    ) -> None:
        for name, value in (
            ("per_step_ms", per_step_ms),
            ("per_token_ms", per_token_ms),
            ("per_seq_ms", per_seq_ms),
            ("per_context_ms", per_context_ms),
        ):
            if not (_is_real(value) and math.isfinite(value) and value >= 0):
                raise InputError(f"must be a number of ms >= 0, got {value!r}", field=name)
        self.per_step_ms = float(per_step_ms)
        self.per_token_ms = float(per_token_ms)
        self.per_seq_ms = float(per_seq_ms)
        self.per_context_ms = float(per_context_ms)

    def __repr__(self) -> str:
        return (
            f"LinearStepTime(per_step_ms={self.per_step_ms}, per_token_ms={self.per_token_ms}, "
            f"per_seq_ms={self.per_seq_ms}, per_context_ms={self.per_context_ms})"
        )

    def step_ms(
        self,
        prefill_tokens: int,
        decode_context_lens: np.ndarray,
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
    ) -> float:
        """Linear duration of one step in ms (0.0 for an empty step)."""
        n = len(decode_context_lens)
        s = float(np.sum(decode_context_lens)) if n else 0.0
        return self._step(int(prefill_tokens), n, s, 0.0, 0)

    def _step(self, p: int, n: int, s: float, pairs: float, cached: int) -> float:
        if p == 0 and n == 0:
            return 0.0
        return (
            self.per_step_ms + self.per_token_ms * p + self.per_seq_ms * n + self.per_context_ms * s
        )

    def _decode_run(self, n_seqs: int, sum_ctx: float, n_steps: int) -> np.ndarray:
        if n_seqs == 0:
            return np.zeros(n_steps)
        s = sum_ctx + n_seqs * np.arange(n_steps, dtype=np.float64)
        return self.per_step_ms + self.per_seq_ms * n_seqs + self.per_context_ms * s

    def decode_run_ms(self, decode_context_lens: ArrayLike, n_steps: int) -> np.ndarray:
        """Durations (ms) of ``n_steps`` consecutive decode steps, vectorized over the steps."""
        ctx = np.asarray(decode_context_lens, dtype=np.float64).reshape(-1)
        return self._decode_run(ctx.size, float(ctx.sum()), int(n_steps))


class TableStepTime(StepTimeModel):
    """Step times from a measured table (the batch-size measurement chapter's CSV).

    Columns used: ``batch_size``, ``decode_ms_per_step`` and ``prefill_ms_per_token``; optional
    ``prompt_len`` (the measured prompt length) and ``oom`` (rows marked are dropped, as are rows
    with NaN figures). Both figures are interpolated linearly in the batch size and extrapolated
    beyond the measured range with the slope of the nearest segment (never below 0). A step
    costs ``decode_ms_per_step(n_decode) + prefill_tokens · prefill_ms_per_token(b)``, where
    ``b = prefill_tokens / prompt_len`` (the prefill's size in measured prompts, clamped to the
    measured batch sizes; the smallest measured batch size when the table has no prompt length).
    The table is measured at one context length: context growth is not modelled.
    """

    def __init__(self, table: pd.DataFrame, *, prompt_len: int | None = None) -> None:
        if not isinstance(table, pd.DataFrame):
            raise InputError(f"expected a DataFrame, got {type(table).__name__}", field="step_time")
        for column in ("batch_size", "decode_ms_per_step", "prefill_ms_per_token"):
            if column not in table.columns:
                raise InputError("missing column in the step-time table", field=column)
        df = table
        if "oom" in df.columns:
            df = df[~df["oom"].fillna(False).astype(bool)]
        b = pd.to_numeric(df["batch_size"], errors="coerce").to_numpy(dtype=float)
        dec = pd.to_numeric(df["decode_ms_per_step"], errors="coerce").to_numpy(dtype=float)
        pre = pd.to_numeric(df["prefill_ms_per_token"], errors="coerce").to_numpy(dtype=float)
        ok = (
            np.isfinite(b) & np.isfinite(dec) & np.isfinite(pre) & (b > 0) & (dec >= 0) & (pre >= 0)
        )
        if not ok.any():
            raise InputError(
                "no usable row (batch_size > 0 with finite decode_ms_per_step and "
                "prefill_ms_per_token)",
                field="batch_size",
            )
        order = np.argsort(b[ok], kind="stable")
        b, dec, pre = b[ok][order], dec[ok][order], pre[ok][order]
        uniq, first = np.unique(b, return_index=True)
        # Several rows at one batch size: their mean.
        counts = np.diff(np.append(first, b.size))
        self.batch_sizes = uniq
        self.decode_ms = np.add.reduceat(dec, first) / counts
        self.prefill_ms_per_token = np.add.reduceat(pre, first) / counts
        if prompt_len is None and "prompt_len" in df.columns:
            pl = pd.to_numeric(df["prompt_len"], errors="coerce").to_numpy(dtype=float)[ok]
            pl = pl[np.isfinite(pl) & (pl > 0)]
            prompt_len = float(np.median(pl)) if pl.size else None
        if prompt_len is not None and not (prompt_len > 0):
            raise InputError(f"must be positive, got {prompt_len!r}", field="prompt_len")
        self.prompt_len = None if prompt_len is None else float(prompt_len)
        self._cache: dict[float, float] = {}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{x:g}" for x in self.batch_sizes)
        return f"TableStepTime(batch_sizes=[{sizes}], prompt_len={self.prompt_len})"

    def _interp(self, x: np.ndarray | float, y: np.ndarray) -> np.ndarray:
        xs = self.batch_sizes
        x = np.asarray(x, dtype=np.float64)
        if xs.size == 1:
            return np.broadcast_to(y[0], x.shape).astype(np.float64)
        out = np.interp(x, xs, y)
        lo = x < xs[0]
        hi = x > xs[-1]
        if lo.any():
            slope = (y[1] - y[0]) / (xs[1] - xs[0])
            out = np.where(lo, y[0] + slope * (x - xs[0]), out)
        if hi.any():
            slope = (y[-1] - y[-2]) / (xs[-1] - xs[-2])
            out = np.where(hi, y[-1] + slope * (x - xs[-1]), out)
        return np.maximum(out, 0.0)

    def decode_ms_at(self, batch_size: float) -> float:
        """Interpolated decode step time (ms) at a batch size."""
        hit = self._cache.get(batch_size)
        if hit is None:
            hit = float(self._interp(float(batch_size), self.decode_ms))
            if len(self._cache) < 1 << 16:
                self._cache[batch_size] = hit
        return hit

    def _prefill_ms(self, p: int) -> float:
        if self.prompt_len is None:
            b = self.batch_sizes[0]
        else:
            b = min(max(p / self.prompt_len, self.batch_sizes[0]), self.batch_sizes[-1])
        return p * float(self._interp(b, self.prefill_ms_per_token))

    def step_ms(
        self,
        prefill_tokens: int,
        decode_context_lens: np.ndarray,
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
    ) -> float:
        """Interpolated duration of one step in ms (0.0 for an empty step)."""
        return self._step(int(prefill_tokens), len(decode_context_lens), 0.0, 0.0, 0)

    sums_only = True

    def _step(self, p: int, n: int, s: float, pairs: float, cached: int) -> float:
        total = 0.0
        if n:
            total += self.decode_ms_at(n)
        if p:
            total += self._prefill_ms(p)
        return total

    def _decode_run(self, n_seqs: int, sum_ctx: float, n_steps: int) -> np.ndarray:
        if n_seqs == 0:
            return np.zeros(n_steps)
        return np.full(n_steps, self.decode_ms_at(n_seqs))

    def decode_run_ms(self, decode_context_lens: ArrayLike, n_steps: int) -> np.ndarray:
        """Durations (ms) of ``n_steps`` consecutive decode steps (constant: no context term)."""
        n = np.asarray(decode_context_lens).reshape(-1).size
        return self._decode_run(n, 0.0, int(n_steps))


def model_table(models: Mapping[str, ModelSpec] | None = None) -> pd.DataFrame:
    """The model presets (or ``models``) as a table: shapes, parameters, weight and KV bytes."""
    rows = []
    for spec in (models or MODELS).values():
        row = dataclasses.asdict(spec)
        row.update(
            head_dim=spec.head_dim,
            n_params=spec.n_params,
            weight_bytes=spec.weight_bytes,
            kv_bytes_per_token=spec.kv_bytes_per_token,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def gpu_table(gpus: Mapping[str, DeviceSpec] | None = None) -> pd.DataFrame:
    """The GPU presets (or ``gpus``) as a table, with the ridge point (FLOPs per byte)."""
    rows = []
    for dev in (gpus or GPUS).values():
        row = dataclasses.asdict(dev)
        row["ridge_flops_per_byte"] = dev.peak_flops / dev.memory_bandwidth
        rows.append(row)
    return pd.DataFrame(rows)
