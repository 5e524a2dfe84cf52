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
* Ideal step time (``RooflineStepTime(..., calibrated=False)``) = ``max(FLOPs / peak_flops,
  bytes / memory_bandwidth)`` + ``step_overhead_ms``. Peak figures are data-sheet maxima, so
  these times are lower bounds: real decode steps take 1.1-1.7x and prefills ~1.6x longer.
* Calibrated step time (:class:`RooflineStepTime`, the default): the same work as a sequence of
  real kernels, each a roofline with efficiencies fitted on measured GPU profiles
  (:mod:`batchlab.calibration`), summed into named parts (dense, attention, LM head, overhead).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.calibration import (
    ACTIVATION_BYTES,
    DENSE_KERNELS,
    VIDUR_A100,
    KernelEfficiency,
    attention_kernel_ms,
    elementwise_ms,
    matmul_ms,
    pnorm,
)
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
    "dense_kernel_ms",
    "dense_ms",
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
    "profile_model_spec",
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
    memory in bytes, a fixed per-step overhead in ms (kernel launches, scheduling) and, for a
    GPU, its number of streaming multiprocessors ``n_sms`` (from the data sheet; None when
    unknown)."""

    name: str
    peak_flops: float
    memory_bandwidth: float
    memory_bytes: float
    step_overhead_ms: float = 0.0
    n_sms: int | None = None

    def __post_init__(self) -> None:
        for name in ("peak_flops", "memory_bandwidth", "memory_bytes"):
            value = check_scalar(
                getattr(self, name), name, float, min_val=0, include_boundaries="neither"
            )
            object.__setattr__(self, name, value)
        overhead = check_scalar(self.step_overhead_ms, "step_overhead_ms", float, min_val=0)
        object.__setattr__(self, "step_overhead_ms", overhead)
        sms = check_scalar(self.n_sms, "n_sms", int, min_val=1, allow_none=True)
        object.__setattr__(self, "n_sms", sms)

    def scaled(self, n: int) -> DeviceSpec:
        """``n`` devices as one (ideal tensor parallelism): n× FLOP/s, bandwidth and memory."""
        n = check_scalar(n, "n_devices", int, min_val=1, max_val=MAX_DEVICES)
        if n == 1:
            return self
        return dataclasses.replace(
            self,
            name=f"{n}x{self.name}",
            peak_flops=self.peak_flops * n,
            memory_bandwidth=self.memory_bandwidth * n,
            memory_bytes=self.memory_bytes * n,
            n_sms=None if self.n_sms is None else self.n_sms * n,
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
# GB/s is decimal. Streaming multiprocessors: NVIDIA's architecture whitepapers (A100: 108 SMs;
# H100 SXM5 and H200, the same GH100 configuration: 132 SMs; L4, AD104: 58 SMs, 7,424 CUDA cores
# at 128 per SM).
GPUS: dict[str, DeviceSpec] = {
    # NVIDIA A100 Tensor Core GPU data sheet: BF16 Tensor Core 312 TFLOPS (624 sparse),
    # A100 40GB SXM: 40GB HBM2, 1,555 GB/s
    "a100-40gb": DeviceSpec("a100-40gb", 312e12, 1555e9, 40 * GiB, n_sms=108),
    # same data sheet, A100 80GB SXM: 80GB HBM2e, 2,039 GB/s
    "a100-80gb": DeviceSpec("a100-80gb", 312e12, 2039e9, 80 * GiB, n_sms=108),
    # NVIDIA H100 Tensor Core GPU data sheet, H100 SXM: BF16 Tensor Core 1,979 TFLOPS with
    # sparsity (989.5 dense), 80GB HBM3, 3.35 TB/s
    "h100-sxm": DeviceSpec("h100-sxm", 989.5e12, 3.35e12, 80 * GiB, n_sms=132),
    # NVIDIA H200 Tensor Core GPU data sheet, H200 SXM: BF16 Tensor Core 1,979 TFLOPS with
    # sparsity (989.5 dense), 141GB HBM3e, 4.8 TB/s
    "h200-sxm": DeviceSpec("h200-sxm", 989.5e12, 4.8e12, 141 * GiB, n_sms=132),
    # NVIDIA L4 Tensor Core GPU data sheet: BF16 Tensor Core 242 TFLOPS with sparsity (121
    # dense), 24GB GDDR6, 300 GB/s
    "l4": DeviceSpec("l4", 121e12, 300e9, 24 * GiB, n_sms=58),
}


def get_model(name_or_spec: str | ModelSpec) -> ModelSpec:
    """A :class:`ModelSpec` by preset name (case-insensitive) or passed through.

    Raises :class:`InputError` (a ``ValueError``) listing the preset names.
    """
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    return _preset(name_or_spec, MODELS, "model", "model", "or pass a ModelSpec")


def _preset(name: object, presets: Mapping[str, Any], what: str, field: str, hint: str) -> Any:
    """The preset ``name`` (case-insensitive) of ``presets``; InputError listing them."""
    key = str(name).strip().lower()
    if key in presets:
        return presets[key]
    raise InputError(
        f"unknown {what} {name!r}; presets: {', '.join(presets)} ({hint})", field=field
    )


#: the most devices ``"<n>x<gpu>"`` joins into one (a large cluster).
MAX_DEVICES = 4096
_SCALED = re.compile(r"^(\d+)\s*x\s*[-_]?\s*(.+)$")


def get_gpu(name_or_spec: str | DeviceSpec) -> DeviceSpec:
    """A :class:`DeviceSpec` by preset name (case-insensitive) or passed through.

    ``"<n>x<name>"`` (e.g. ``"4xa100-80gb"``) gives ``n`` devices as one (:meth:`DeviceSpec.scaled`).
    Raises :class:`InputError` (a ``ValueError``) listing the preset names.
    """
    if isinstance(name_or_spec, DeviceSpec):
        return name_or_spec
    key = str(name_or_spec).strip().lower()
    match = _SCALED.match(key)
    if key not in GPUS and match and match.group(2) in GPUS and int(match.group(1)) >= 1:
        if len(match.group(1)) > 6 or int(match.group(1)) > MAX_DEVICES:
            raise InputError(
                f"{name_or_spec!r}: at most {MAX_DEVICES:,} devices as one", field="gpu"
            )
        return GPUS[match.group(2)].scaled(int(match.group(1)))
    return _preset(name_or_spec, GPUS, "GPU", "gpu", "or 'Nx<preset>', or pass a DeviceSpec")


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
    calibrated: bool = True,
) -> float:
    """Time of one step (ms): a prefill chunk of ``prefill_tokens`` after ``prefill_context``
    cached tokens, plus one decode token for each of ``context_lens``; the weights are read
    once for the whole step. 0.0 for an empty step.

    :class:`RooflineStepTime`'s duration: calibrated kernels by default; ``calibrated=False``
    is the data-sheet ideal ``max(FLOPs / peak_flops, bytes / memory_bandwidth) · 1e3 +
    step_overhead_ms``.
    """
    batch = StepBatch.of(
        _tokens(prefill_tokens, "prefill_tokens"),
        context_lens,
        prefill_cached=_tokens(prefill_context, "prefill_context") if prefill_tokens else 0,
    )
    return RooflineStepTime(model, device, calibrated=calibrated).duration_ms(batch)


def dense_kernel_ms(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    num_tokens: ArrayLike,
    efficiency: KernelEfficiency = VIDUR_A100,
    *,
    with_bound: bool = False,
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Time (ms) of each dense kernel of *one layer* over ``num_tokens`` tokens (tensor parallel
    1, calibrated), keyed by :data:`batchlab.calibration.DENSE_KERNELS` (``add`` is one of the
    two residual adds). ``with_bound=True`` also returns, per kernel, where it is compute-bound
    (elementwise kernels never are)."""
    spec, dev = get_model(model), get_gpu(device)
    e = efficiency
    t = np.asarray(num_tokens, dtype=np.float64)
    if t.size and (not np.all(np.isfinite(t)) or t.min() < 0):
        raise InputError("token counts must be finite and >= 0", field="num_tokens")
    h = float(spec.hidden_size)
    kv = float(spec.n_kv_heads * spec.head_dim)
    inter = float(spec.intermediate_size)
    a = ACTIVATION_BYTES
    w = float(spec.bytes_per_weight)
    times: dict[str, np.ndarray] = {}
    bounds: dict[str, np.ndarray] = {}
    products = {
        "attn_pre_proj": (h, h + 2 * kv),
        "attn_post_proj": (h, h),
        "mlp_up_proj": (h, 2 * inter),
        "mlp_down_proj": (inter, h),
    }
    elementwise = {
        "input_layernorm": (2 * a * h, e.norm),
        "attn_rope": (2 * a * (h + kv), e.rope),
        "post_attention_layernorm": (2 * a * h, e.norm),
        "mlp_act": (3 * a * inter, e.act),
        "add": (3 * a * h, e.add),
    }
    for name in DENSE_KERNELS:
        if name in products:
            k, n = products[name]
            times[name], bounds[name] = matmul_ms(t, k, n, dev, e, weight_bytes=w, with_bound=True)
        else:
            per_row, kind = elementwise[name]
            times[name] = elementwise_ms(t, per_row * t, dev, kind)
            bounds[name] = np.zeros(t.shape, dtype=bool)
    if with_bound:
        return times, bounds
    return times


def dense_ms(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    num_tokens: ArrayLike,
    *,
    calibrated: bool = True,
    efficiency: KernelEfficiency = VIDUR_A100,
) -> np.ndarray:
    """Dense work (ms) of one forward pass over ``num_tokens`` tokens: all layers, tensor
    parallel 1 (norms, projections, rotary, MLP, residual adds; no attention, embedding or LM
    head). Array in, array out.

    Calibrated: ``n_layers · Σ`` :func:`dense_kernel_ms` (``add`` twice). Ideal
    (``calibrated=False``): ``max(2·n_layers·matmul_params·T / P, n_layers·(matmul_params +
    2·H)·b_w / W)``, 0 for 0 tokens.
    """
    spec, dev = get_model(model), get_gpu(device)
    t = np.asarray(num_tokens, dtype=np.float64)
    if t.size and (not np.all(np.isfinite(t)) or t.min() < 0):
        raise InputError("token counts must be finite and >= 0", field="num_tokens")
    if not calibrated:
        flops = 2.0 * spec.n_layers * spec.matmul_params_per_layer * t
        moved = _layer_weight_bytes(spec)
        ideal = np.maximum(flops / dev.peak_flops, moved / dev.memory_bandwidth) * 1e3
        return np.where(t > 0, ideal, 0.0)
    parts = dense_kernel_ms(spec, dev, t, efficiency)
    total = sum(parts[name] * count for name, count in DENSE_KERNELS.items())
    return spec.n_layers * np.asarray(total, dtype=np.float64)


def _layer_weight_bytes(spec: ModelSpec) -> float:
    """Bytes of the weights of all layers (matrix products and the two norms of each layer)."""
    return (
        spec.n_layers
        * (spec.matmul_params_per_layer + 2 * spec.hidden_size)
        * float(spec.bytes_per_weight)
    )


def profile_model_spec(profile: pd.DataFrame, n_layers: int, name: str = "profiled") -> ModelSpec:
    """The :class:`ModelSpec` of an operator profile's shapes
    (:func:`batchlab.calibration.read_operator_profile`; ``n_layers`` is not in the file)."""
    row = profile.iloc[0]
    return ModelSpec(
        name,
        check_scalar(n_layers, "n_layers", int, min_val=1),
        int(row["n_embd"]),
        int(row["n_head"]),
        int(row["n_kv_head"]),
        int(row["n_expanded_embd"]),
        int(row["vocab_size"]),
    )


def _pn(tc: float, tm: float, p: float, ip: float) -> float:
    """Scalar :func:`batchlab.calibration.pnorm` (the simulator's hot path)."""
    if tc >= tm:
        return tc * (1.0 + (tm / tc) ** p) ** ip if tc > 0.0 else 0.0
    return tm * (1.0 + (tc / tm) ** p) ** ip


class RooflineStepTime(StepTimeModel):
    """Step times of ``model`` on ``device`` in named parts: ``dense``, ``attention``,
    ``lm_head`` and ``overhead`` (``StepTime.parts``).

    ``calibrated=True`` (the default) times every kernel of the step with ``efficiency``
    (fitted on Vidur's A100 operator profiles, :data:`batchlab.calibration.VIDUR_A100`; see
    :mod:`batchlab.calibration` for the formulas): ``dense`` is the layers' norms, projections,
    rotary, MLP and residual adds over the step's tokens (:meth:`dense_ms`); ``attention`` the
    score/value kernels of the prefill chunks and of the decode batch plus the KV-cache write;
    ``lm_head`` the embedding gather, the final norm and the logits of the emitted rows;
    ``overhead`` the device's ``step_overhead_ms``. Each kernel's time counts as
    ``compute_ms`` where its FLOPs bound it and as ``memory_ms`` where its bytes do.

    ``calibrated=False`` is the data-sheet ideal: one roofline over the whole step, ``max(FLOPs
    / peak_flops, bytes / memory_bandwidth)`` + ``step_overhead_ms``, with FLOPs: 2 per matrix
    weight per prompt or decode token, the LM head for every emitted row, attention per (query,
    key) pair; bytes: the weights once, the KV cache read and written. Its parts are each
    part's share of the bounding resource.

    Fast: the parts that depend only on the step's token count (dense work, KV-cache write,
    embedding gather) and on its emitted rows (LM head) are tabulated over counts on first use,
    so a step costs a few table look-ups and two scalar rooflines (attention), and a run of
    decode steps (:meth:`decode_steps_ms`) is one vectorized expression over the steps.
    """

    #: Token counts tabulated at most (steps with more tokens are computed directly).
    TABLE_LIMIT: ClassVar[int] = 1 << 17

    def __init__(
        self,
        model: str | ModelSpec,
        device: str | DeviceSpec,
        *,
        calibrated: bool = True,
        efficiency: KernelEfficiency = VIDUR_A100,
    ) -> None:
        self.model = get_model(model)
        self.device = get_gpu(device)
        self.calibrated = check_scalar(calibrated, "calibrated", bool)
        if not isinstance(efficiency, KernelEfficiency):
            raise InputError("must be a KernelEfficiency", field="efficiency")
        self.efficiency = efficiency
        m, d, e = self.model, self.device, efficiency
        self._inv_flops = 1e3 / d.peak_flops  # ms per FLOP
        self._inv_bw = 1e3 / d.memory_bandwidth  # ms per byte
        self._tok = m.flops_per_token
        self._logit = m.flops_per_logit_row
        self._pair = m.flops_per_pair
        self._w = m.weight_bytes
        self._kv = m.kv_bytes_per_token
        self._oh = d.step_overhead_ms
        self._w_layers = _layer_weight_bytes(m)
        self._w_ends = self._w - self._w_layers
        # calibrated attention: per-layer coefficients of the two attention kernels
        self._layers = float(m.n_layers)
        self._pair_layer = self._pair / m.n_layers
        self._kv_layer = self._kv / m.n_layers
        self._qo_bytes = 2 * ACTIVATION_BYTES * m.hidden_size  # a query read, an output written
        self._c_att = 1e3 / (d.peak_flops * e.matmul_compute)  # ms per attention FLOP
        self._m_att = 1e3 / (d.memory_bandwidth * e.matmul_memory)  # ms per attention byte
        self._lat = e.matmul_latency_us * 1e-3
        self._p = e.overlap_p
        self._ip = 1.0 / e.overlap_p
        self._fixed: list[float] = []  # by token count: dense + KV write + embedding gather
        self._head: list[float] = []  # by emitted rows: final norm + logits
        self._fixed_arr = np.zeros(0)
        self._head_arr = np.zeros(0)

    def __repr__(self) -> str:
        mode = "" if self.calibrated else ", calibrated=False"
        return f"RooflineStepTime({self.model.name!r}, {self.device.name!r}{mode})"

    # -- the parts, vectorized ------------------------------------------------------------------

    def dense_ms(self, num_tokens: ArrayLike) -> np.ndarray:
        """Dense work (ms) of one forward pass over ``num_tokens`` tokens, all layers, tensor
        parallel 1 (array in, array out; see :func:`dense_ms`)."""
        return dense_ms(
            self.model,
            self.device,
            num_tokens,
            calibrated=self.calibrated,
            efficiency=self.efficiency,
        )

    def _token_parts(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated parts that depend only on the step's token count (ms): dense, the KV-cache
        write (all layers) and the embedding gather."""
        e, d = self.efficiency, self.device
        dense = self.dense_ms(tokens)
        write = self._layers * elementwise_ms(tokens, 2 * self._kv_layer * tokens, d, e.add)
        h = float(self.model.hidden_size)
        gather = elementwise_ms(tokens, 2 * ACTIVATION_BYTES * tokens * h, d, e.add)
        return dense, write, gather

    def _head_parts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated final norm and logits of ``rows`` emitted rows (ms), and where the logits
        product is compute-bound."""
        m, e, d = self.model, self.efficiency, self.device
        h = float(m.hidden_size)
        norm = elementwise_ms(rows, 2 * ACTIVATION_BYTES * rows * h, d, e.norm)
        logits, bound = matmul_ms(
            rows,
            h,
            float(m.vocab_size),
            d,
            e,
            weight_bytes=float(m.bytes_per_weight),
            with_bound=True,
        )
        return norm, logits, bound

    def _tables(self, tokens: int) -> None:
        """Tabulate the count-only parts up to ``tokens`` (next power of two, at most
        :attr:`TABLE_LIMIT`)."""
        size = min(self.TABLE_LIMIT, 1 << max(10, int(tokens).bit_length()))
        if size <= len(self._fixed):
            return
        counts = np.arange(size, dtype=np.float64)
        dense, write, gather = self._token_parts(counts)
        norm, logits, _ = self._head_parts(counts)
        self._fixed_arr = dense + write + gather
        self._head_arr = norm + logits
        self._fixed = self._fixed_arr.tolist()
        self._head = self._head_arr.tolist()

    def _fixed_ms(self, tokens: int) -> float:
        if tokens >= len(self._fixed):
            self._tables(tokens)
            if tokens >= len(self._fixed):
                dense, write, gather = self._token_parts(np.float64(tokens))
                return float(dense + write + gather)
        return self._fixed[tokens]

    def _head_ms(self, rows: int) -> float:
        if rows >= len(self._head):
            self._tables(rows)
            if rows >= len(self._head):
                norm, logits, _ = self._head_parts(np.float64(rows))
                return float(norm + logits)
        return self._head[rows]

    # -- one step -------------------------------------------------------------------------------

    def flops(self, batch: StepBatch) -> float:
        """FLOPs of the step (the ideal roofline's count)."""
        p = batch.prefill_tokens
        return (
            self._tok * (p + batch.decode_seqs)
            + self._logit * (batch.prefill_seqs + batch.decode_seqs)
            + self._pair * (batch.prefill_pairs + batch.decode_context)
        )

    def bytes_moved(self, batch: StepBatch) -> float:
        """Bytes the step moves in the ideal roofline: the weights once, the KV cache read and
        written (0 when empty)."""
        if batch.empty:
            return 0.0
        kv_tokens = batch.decode_context
        if batch.prefill_tokens:
            kv_tokens += batch.prefill_cached + batch.prefill_tokens
        return self._w + self._kv * kv_tokens

    def step(self, batch: StepBatch) -> StepTime:
        """The step in named parts (``parts``: dense, attention, lm_head, overhead) and by
        bound (compute_ms, memory_ms, overhead_ms); an empty step takes 0 ms."""
        if batch.empty:
            return StepTime()
        if not self.calibrated:
            return self._ideal_step(batch)
        p, n = batch.prefill_tokens, batch.decode_seqs
        tokens = np.float64(p + n)
        rows = np.float64(n + batch.prefill_seqs)
        times, bounds = dense_kernel_ms(
            self.model, self.device, tokens, self.efficiency, with_bound=True
        )
        layers = self._layers
        compute = memory = 0.0
        dense = 0.0
        for name, count in DENSE_KERNELS.items():
            t = layers * count * float(times[name])
            dense += t
            if bool(bounds[name]):
                compute += t
            else:
                memory += t
        _, write, gather = self._token_parts(tokens)
        attention = float(write)
        memory += float(write) + float(gather)
        for f, b, on in (
            (
                self._pair_layer * batch.prefill_pairs,
                self._kv_layer * (batch.prefill_cached + p) + self._qo_bytes * p,
                p > 0,
            ),
            (
                self._pair_layer * batch.decode_context,
                self._kv_layer * batch.decode_context + self._qo_bytes * n,
                n > 0,
            ),
        ):
            if not on:
                continue
            t, bound = attention_kernel_ms(f, b, self.device, self.efficiency, with_bound=True)
            t = layers * float(t)
            attention += t
            if bool(bound):
                compute += t
            else:
                memory += t
        norm, logits, bound = self._head_parts(rows)
        lm_head = float(gather) + float(norm) + float(logits)
        memory += float(norm)
        if bool(bound):
            compute += float(logits)
        else:
            memory += float(logits)
        return StepTime.by_operation(
            dense, attention, lm_head, self._oh, compute_ms=compute, memory_ms=memory
        )

    def _ideal_step(self, batch: StepBatch) -> StepTime:
        p, n = batch.prefill_tokens, batch.decode_seqs
        flops_dense = self._tok * (n + p)
        flops_attn = self._pair * (batch.decode_context + (batch.prefill_pairs if p else 0.0))
        flops_head = self._logit * (n + batch.prefill_seqs)
        bytes_attn = self._kv * (batch.decode_context + ((batch.prefill_cached + p) if p else 0))
        compute = self.flops(batch) * self._inv_flops
        memory = self.bytes_moved(batch) * self._inv_bw
        if compute >= memory:
            parts = (flops_dense, flops_attn, flops_head)
            scale = self._inv_flops
        else:
            parts = (self._w_layers, bytes_attn, self._w_ends)
            scale = self._inv_bw
        dense, attention, lm_head = (part * scale for part in parts)
        if compute >= memory:
            return StepTime.by_operation(dense, attention, lm_head, self._oh, compute_ms=compute)
        return StepTime.by_operation(dense, attention, lm_head, self._oh, memory_ms=memory)

    def duration_ms(self, batch: StepBatch) -> float:
        """Duration of one step in ms (0.0 for an empty step): ``step(batch).total_ms``, from
        the tables and two scalar attention rooflines."""
        p, n = batch.prefill_tokens, batch.decode_seqs
        if p == 0 and n == 0:
            return 0.0
        s = batch.decode_context
        if not self.calibrated:
            flops = (self._tok + self._logit) * n + self._pair * s
            moved = self._w + self._kv * s
            if p:
                flops += (
                    self._tok * p
                    + self._logit * batch.prefill_seqs
                    + self._pair * batch.prefill_pairs
                )
                moved += self._kv * (batch.prefill_cached + p)
            return max(flops * self._inv_flops, moved * self._inv_bw) + self._oh
        t = self._fixed_ms(p + n) + self._head_ms(n + batch.prefill_seqs) + self._oh
        q, iq = self._p, self._ip
        if p:
            tc = self._pair_layer * batch.prefill_pairs * self._c_att
            tm = (self._kv_layer * (batch.prefill_cached + p) + self._qo_bytes * p) * self._m_att
            t += self._layers * (self._lat + _pn(tc, tm, q, iq))
        if n:
            tc = self._pair_layer * s * self._c_att
            tm = (self._kv_layer * s + self._qo_bytes * n) * self._m_att
            t += self._layers * (self._lat + _pn(tc, tm, q, iq))
        return t

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Durations (ms) of consecutive decode steps, vectorized over the steps: only the
        attention over the growing contexts changes from step to step."""
        n = batch.decode_seqs
        k = int(n_steps)
        if n == 0:
            return np.zeros(k)
        s = batch.decode_context + n * np.arange(k, dtype=np.float64)
        if not self.calibrated:
            compute = ((self._tok + self._logit) * n + self._pair * s) * self._inv_flops
            memory = (self._w + self._kv * s) * self._inv_bw
            return np.maximum(compute, memory) + self._oh
        fixed = self._fixed_ms(n) + self._head_ms(n) + self._oh
        tc = (self._pair_layer * self._c_att) * s
        tm = (self._kv_layer * self._m_att) * s + self._qo_bytes * n * self._m_att
        return fixed + self._layers * (self._lat + pnorm(tc, tm, self._p))


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
