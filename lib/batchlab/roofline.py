"""Hardware and model arithmetic: model and GPU specs, KV-cache sizes and roofline step times.

Units: lengths in tokens, memory in bytes, compute in FLOPs, times in milliseconds.

The model is a Llama-style decoder (gated MLP, grouped-query attention). Definitions:

* ``head_dim = hidden_size / n_heads``; ``kv_bytes_per_token = 2 · n_layers · n_kv_heads ·
  head_dim · bytes_per_kv`` (K and V of every layer for one token).
* Parameters: embeddings ``V·H`` + per layer (``q``/``o``: ``H·H``; ``k``/``v``:
  ``H·n_kv_heads·head_dim``; gated MLP ``3·H·I``; two RMSNorm vectors ``2·H``) + final norm ``H`` +
  ``lm_head`` ``V·H`` unless tied to the embeddings.
* FLOPs of a forward pass: ``2`` per matrix parameter per token (the matmul weights of all layers),
  ``2·V·H`` for the logits of each *emitted* position (the last position of each sequence whose
  prefill ends in the step, every sequence of a decode step), and attention ``4 · n_layers · n_heads · head_dim`` per causal
  (query, key) pair (``QKᵀ`` and ``PV``). A prefill of ``n`` tokens after ``c`` cached tokens has
  ``n·c + n(n+1)/2`` pairs; a decode step at context length ``L`` (the new token included) has
  ``L`` pairs.
* Bytes moved by a step: all weights once (``weight_bytes``) plus the KV cache read and written:
  ``kv_bytes_per_token · (c + n)`` for a prefill, ``kv_bytes_per_token · ΣL`` for a decode step.
  Activations are not counted (they are small beside weights in decode, and prefill is
  compute-bound).
* Step time = ``max(FLOPs / peak_flops, bytes / memory_bandwidth)`` + ``step_overhead_ms``
  (:class:`RooflineStepTime`, a :class:`batchlab.steptime.StepTimeModel`). Peak figures are
  data-sheet maxima, so predicted times are lower bounds.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.steptime import (
    LinearStepTime,
    StepBatch,
    StepTime,
    StepTimeModel,
    TableStepTime,
)
from batchlab.steptime import context_lens as context_lens_array

__all__ = [
    "GPUS",
    "MODELS",
    "DeviceSpec",
    "LinearStepTime",
    "ModelSpec",
    "RooflineStepTime",
    "StepBatch",
    "StepTime",
    "StepTimeModel",
    "TableStepTime",
    "check_memory_fraction",
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
            object.__setattr__(self, name, check_scalar(getattr(self, name), name, int, min_val=1))
        for name in ("bytes_per_weight", "bytes_per_kv"):
            value = check_scalar(
                getattr(self, name), name, float, min_val=0, include_boundaries="neither"
            )
            object.__setattr__(self, name, value)
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

    # FLOP coefficients of the formulas (see the module docstring).
    @property
    def flops_per_token(self) -> float:
        """FLOPs of the matrix weights for one token, all layers: 2 · n_layers · matmul params."""
        return 2.0 * self.n_layers * self.matmul_params_per_layer

    @property
    def flops_per_logit_row(self) -> float:
        """FLOPs of the LM head for one emitted position: 2 · vocab_size · hidden_size."""
        return 2.0 * self.vocab_size * self.hidden_size

    @property
    def flops_per_pair(self) -> float:
        """Attention FLOPs per causal (query, key) pair: 4 · n_layers · n_heads · head_dim."""
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
            value = check_scalar(
                getattr(self, name), name, float, min_val=0, include_boundaries="neither"
            )
            object.__setattr__(self, name, value)
        overhead = check_scalar(self.step_overhead_ms, "step_overhead_ms", float, min_val=0)
        object.__setattr__(self, "step_overhead_ms", overhead)

    def scaled(self, n: int) -> DeviceSpec:
        """``n`` devices as one (ideal tensor parallelism): n× FLOP/s, bandwidth and memory."""
        n = check_scalar(n, "n_devices", int, min_val=1)
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


def check_memory_fraction(memory_fraction: float) -> float:
    """The share of device memory usable, a number in (0, 1]."""
    return check_scalar(
        memory_fraction, "memory_fraction", float, min_val=0, max_val=1, include_boundaries="right"
    )


def max_kv_tokens(
    model: str | ModelSpec, device: str | DeviceSpec, memory_fraction: float = 0.9
) -> int:
    """Tokens of KV cache that fit beside the weights in ``memory_fraction`` of device memory.

    ``floor((memory_fraction · memory_bytes − weight_bytes) / kv_bytes_per_token)``, 0 when the
    weights alone do not fit.
    """
    spec, dev = get_model(model), get_gpu(device)
    free = check_memory_fraction(memory_fraction) * dev.memory_bytes - spec.weight_bytes
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
    tokens = check_scalar(context_len, "context_len", int, min_val=1, unit="tokens")
    return max_kv_tokens(model, device, memory_fraction) // tokens


def _tokens(value: Any, name: str) -> int:
    return check_scalar(value, name, int, min_val=0, unit="tokens")


def prefill_flops(model: str | ModelSpec, n_tokens: int, context: int = 0) -> float:
    """FLOPs of prefilling ``n_tokens`` of one sequence after ``context`` cached tokens.

    ``2·matmul_params·n + 2·V·H`` (logits of the last position) ``+ 4·L·n_heads·head_dim ·
    (n·context + n(n+1)/2)`` (causal attention). 0 for ``n_tokens == 0``.
    """
    spec = get_model(model)
    n = _tokens(n_tokens, "n_tokens")
    c = _tokens(context, "context")
    if n == 0:
        return 0.0
    pairs = n * c + n * (n + 1) / 2.0
    return spec.flops_per_token * n + spec.flops_per_logit_row + spec.flops_per_pair * pairs


def prefill_bytes(model: str | ModelSpec, n_tokens: int, context: int = 0) -> float:
    """Bytes moved by that prefill: the weights once + KV read of ``context`` and write of ``n``."""
    spec = get_model(model)
    n = _tokens(n_tokens, "n_tokens")
    c = _tokens(context, "context")
    if n == 0:
        return 0.0
    return spec.weight_bytes + spec.kv_bytes_per_token * (c + n)


def decode_step_flops(model: str | ModelSpec, context_lens: ArrayLike) -> float:
    """FLOPs of one decode step over a batch; ``context_lens[i]`` counts the new token too."""
    spec = get_model(model)
    ctx = context_lens_array(context_lens)
    n = ctx.size
    return (spec.flops_per_token + spec.flops_per_logit_row) * n + spec.flops_per_pair * float(
        ctx.sum()
    )


def decode_step_bytes(model: str | ModelSpec, context_lens: ArrayLike) -> float:
    """Bytes moved by one decode step: the weights once + the KV cache of every sequence.

    0 for an empty batch (no step runs).
    """
    spec = get_model(model)
    ctx = context_lens_array(context_lens)
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
    batch = StepBatch.of(
        _tokens(prefill_tokens, "prefill_tokens"),
        context_lens,
        prefill_cached=_tokens(prefill_context, "prefill_context") if prefill_tokens else 0,
    )
    return RooflineStepTime(model, device).duration_ms(batch)


class RooflineStepTime(StepTimeModel):
    """Step times from the roofline formulas of a model on a device (see the module docstring).

    One roofline over the whole step: its work takes ``max(FLOPs / peak_flops, bytes /
    memory_bandwidth)``, reported as ``compute_ms`` when arithmetic is the bound and as
    ``memory_ms`` when memory traffic is, plus the device's ``step_overhead_ms``. FLOPs: 2 per
    matrix weight per prompt or decode token, the LM head for every emitted row (each sequence
    whose prefill ends in the step and each decoding sequence), attention per (query, key)
    pair; bytes: the weights once, the KV cache read and written.
    """

    def __init__(self, model: str | ModelSpec, device: str | DeviceSpec) -> None:
        self.model = get_model(model)
        self.device = get_gpu(device)
        m, d = self.model, self.device
        self._inv_flops = 1e3 / d.peak_flops  # ms per FLOP
        self._inv_bw = 1e3 / d.memory_bandwidth  # ms per byte
        self._tok = m.flops_per_token
        self._logit = m.flops_per_logit_row
        self._pair = m.flops_per_pair
        self._w = m.weight_bytes
        self._kv = m.kv_bytes_per_token
        self._oh = d.step_overhead_ms

    def __repr__(self) -> str:
        return f"RooflineStepTime({self.model.name!r}, {self.device.name!r})"

    def flops(self, batch: StepBatch) -> float:
        """FLOPs of the step."""
        p = batch.prefill_tokens
        return (
            self._tok * (p + batch.decode_seqs)
            + self._logit * (batch.prefill_seqs + batch.decode_seqs)
            + self._pair * (batch.prefill_pairs + batch.decode_context)
        )

    def bytes_moved(self, batch: StepBatch) -> float:
        """Bytes the step moves: the weights once, the KV cache read and written (0 when
        empty)."""
        if batch.empty:
            return 0.0
        kv_tokens = batch.decode_context
        if batch.prefill_tokens:
            kv_tokens += batch.prefill_cached + batch.prefill_tokens
        return self._w + self._kv * kv_tokens

    def step(self, batch: StepBatch) -> StepTime:
        """The roofline time, attributed to its bound, plus the per-step overhead."""
        if batch.empty:
            return StepTime()
        compute = self.flops(batch) * self._inv_flops
        memory = self.bytes_moved(batch) * self._inv_bw
        if compute >= memory:
            return StepTime(compute_ms=compute, overhead_ms=self._oh)
        return StepTime(memory_ms=memory, overhead_ms=self._oh)

    def duration_ms(self, batch: StepBatch) -> float:
        """Roofline duration of one step in ms (0.0 for an empty step)."""
        p, n = batch.prefill_tokens, batch.decode_seqs
        if p == 0 and n == 0:
            return 0.0
        s = batch.decode_context
        flops = (self._tok + self._logit) * n + self._pair * s
        moved = self._w + self._kv * s
        if p:
            flops += (
                self._tok * p + self._logit * batch.prefill_seqs + self._pair * batch.prefill_pairs
            )
            moved += self._kv * (batch.prefill_cached + p)
        return max(flops * self._inv_flops, moved * self._inv_bw) + self._oh

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Durations (ms) of consecutive decode steps, vectorized over the steps."""
        n = batch.decode_seqs
        if n == 0:
            return np.zeros(int(n_steps))
        s = batch.decode_context + n * np.arange(int(n_steps), dtype=np.float64)
        compute = ((self._tok + self._logit) * n + self._pair * s) * self._inv_flops
        memory = (self._w + self._kv * s) * self._inv_bw
        return np.maximum(compute, memory) + self._oh


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
