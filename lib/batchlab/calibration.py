"""Step times in named parts, each part a roofline of real kernels with measured efficiencies.

Units: tokens, bytes, FLOPs; times in ms (latencies of single kernels in µs where named so).

A forward pass is a sequence of GPU kernels. For each kernel this module takes its FLOPs ``F``
and bytes moved ``B`` from the model's shapes and times it on a device of peak ``P`` FLOP/s and
bandwidth ``W`` bytes/s.

**Matrix products** (``M`` tokens × ``K`` in-features × ``N`` out-features; weights of
``b_w`` bytes per element, activations bf16)::

    t = λ_mm + (t_c^p + t_m^p)^(1/p)
    t_c = 2·M'·K·N / (P · η_c)            M' = M if M <= m_tile/2, else M rounded up to m_tile
    t_m = (b_w·K·N + 2·M·K + 2·M·N) / (W · η_m)

``(t_c^p + t_m^p)^(1/p)`` is the roofline's ``max(t_c, t_m)`` with imperfect overlap near the
ridge point; written as the roofline of the issue, it is ``max(F/(P·η_c·s), B/(W·η_m))`` with a
compute efficiency ``η_c·s`` that depends on the product's arithmetic intensity ``I = F/B``
relative to the device's ridge ``R = P·η_c/(W·η_m)``: ``s = (1 + (R/I)^p)^(-1/p)``, so small
products (few tokens: low intensity) reach little of the peak, large ones reach ``η_c``. Rows
are padded to whole ``m_tile``-row tiles (tile quantization of tensor-core kernels).

**Elementwise kernels** (RMSNorm, rotary, SiLU-and-multiply, residual add, embedding gather)
over ``T`` rows moving ``B`` bytes::

    t = λ_k + B / (W · η_k) · (1 + T_k / T)

``λ_k`` is the launch latency (small kernels are latency-bound), ``η_k`` the fraction of the
bandwidth the kernel reaches on long inputs, and ``T_k`` the rows it needs in flight to reach
it (one row per thread block: a few rows leave most of the GPU idle).

**Named parts of a step** (prefill tokens with their attention pairs and cached tokens, plus
decode sequences with their context lengths; ``T`` = prefill tokens + decode sequences):

* ``dense``: per layer two RMSNorms, the QKV and output projections, rotary, the gated MLP
  (gate-and-up, activation, down) and two residual adds over ``T`` tokens, times ``n_layers``
  (:func:`dense_kernel_ms`; the weights are read once per step, FLOPs are per token);
* ``attention``: per layer one kernel for the prefill chunk(s) and one for the decode batch:
  ``F = 4·n_heads·head_dim`` per (query, key) pair, ``B`` = the KV cache read and written plus
  the queries and outputs, timed like a matrix product (no tile padding); plus the KV-cache
  write of the ``T`` new tokens (an elementwise kernel);
* ``lm_head``: the embedding gather of ``T`` tokens, the final norm and the logits matrix
  product of the emitted rows (one per decode sequence and one per prefill chunk);
* ``overhead``: the device's per-step overhead (``DeviceSpec.step_overhead_ms``: scheduling
  and launches on the host, not in operator profiles; measure it).

The efficiencies (:class:`KernelEfficiency`) are fitted on Vidur's operator profiles of an A100
(:data:`VIDUR_A100`, with its source) by ``scripts/fit_step_time_efficiency.py``, and carry to
other GPUs through the data-sheet peaks: nothing in them names a GPU. Attention kernels are not
in those profiles; they take the matrix products' ``η_c``, ``η_m``, ``p`` and ``λ_mm``.

``calibrated=False`` gives the data-sheet ideal, exactly the arithmetic of
:class:`batchlab.roofline.RooflineStepTime`: the whole step is
``max(F / P, B / W) + overhead`` with all weights read once and activations not counted, and
each part reports its share of the bounding resource.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.errors import InputError
from batchlab.roofline import (
    DeviceSpec,
    ModelSpec,
    RooflineStepTime,
    get_gpu,
    get_model,
)

__all__ = [
    "DENSE_KERNELS",
    "ElementwiseEfficiency",
    "KernelEfficiency",
    "KernelRoofline",
    "PROFILE_N_LAYERS",
    "StepParts",
    "VIDUR_A100",
    "dense_kernel_ms",
    "dense_ms",
    "efficiency_table",
    "elementwise_ms",
    "matmul_ms",
    "profile_dense_ms",
    "profile_model_spec",
    "read_operator_profile",
]

#: Bytes per activation element (bf16/fp16 activations, whatever the weights' precision).
ACTIVATION_BYTES = 2.0

#: The dense kernels of one layer, in execution order, with how many times each runs (the
#: names are those of Vidur's profiles).
DENSE_KERNELS: dict[str, int] = {
    "input_layernorm": 1,
    "attn_pre_proj": 1,
    "attn_rope": 1,
    "attn_post_proj": 1,
    "post_attention_layernorm": 1,
    "mlp_up_proj": 1,
    "mlp_act": 1,
    "mlp_down_proj": 1,
    "add": 2,
}


def _check_positive(value: Any, field: str, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise InputError(f"must be a number, got {value!r}", field=field)
    value = float(value)
    if not (math.isfinite(value) and value > 0 and (upper is None or value <= upper)):
        bound = f" and <= {upper:g}" if upper is not None else ""
        raise InputError(f"must be > 0{bound}, got {value!r}", field=field)
    return value


def _check_nonnegative(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise InputError(f"must be a number, got {value!r}", field=field)
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"must be >= 0, got {value!r}", field=field)
    return value


@dataclass(frozen=True)
class ElementwiseEfficiency:
    """One elementwise kernel class: ``t = latency_us + B / (W · memory) · (1 + fill_rows / T)``.

    ``latency_us``: launch latency (µs); ``memory``: fraction of the bandwidth reached on long
    inputs (0, 1]; ``fill_rows``: rows in flight needed to reach it (rows, >= 0).
    """

    latency_us: float
    memory: float
    fill_rows: float

    def __post_init__(self) -> None:
        _check_nonnegative(self.latency_us, "latency_us")
        _check_positive(self.memory, "memory", upper=1.0)
        _check_nonnegative(self.fill_rows, "fill_rows")


@dataclass(frozen=True)
class KernelEfficiency:
    """Efficiencies of the kernels of a forward pass (see the module docstring for the formulas).

    Matrix products: ``matmul_latency_us`` (µs), ``matmul_compute`` (η_c, fraction of the peak
    FLOP/s), ``matmul_memory`` (η_m, fraction of the bandwidth), ``overlap_p`` (p >= 1; large p
    is the hard ``max``) and ``m_tile`` (rows of a tile; products of more than ``m_tile / 2``
    rows are padded to whole tiles). Elementwise kernel classes: ``norm`` (RMSNorm), ``rope``,
    ``act`` (SiLU and multiply) and ``add`` (residual add; also the embedding gather and the KV
    cache write). ``source`` says where the numbers come from.
    """

    matmul_latency_us: float
    matmul_compute: float
    matmul_memory: float
    overlap_p: float
    m_tile: int
    norm: ElementwiseEfficiency
    rope: ElementwiseEfficiency
    act: ElementwiseEfficiency
    add: ElementwiseEfficiency
    source: str = ""

    def __post_init__(self) -> None:
        _check_nonnegative(self.matmul_latency_us, "matmul_latency_us")
        _check_positive(self.matmul_compute, "matmul_compute", upper=1.0)
        _check_positive(self.matmul_memory, "matmul_memory", upper=1.0)
        if _check_positive(self.overlap_p, "overlap_p") < 1:
            raise InputError(f"must be >= 1, got {self.overlap_p!r}", field="overlap_p")
        if (
            isinstance(self.m_tile, bool)
            or not isinstance(self.m_tile, int | np.integer)
            or self.m_tile < 1
        ):
            raise InputError(f"must be a positive integer, got {self.m_tile!r}", field="m_tile")
        for name in ("norm", "rope", "act", "add"):
            if not isinstance(getattr(self, name), ElementwiseEfficiency):
                raise InputError("must be an ElementwiseEfficiency", field=name)

    def replace(self, **changes: Any) -> KernelEfficiency:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


#: Efficiencies fitted on Vidur's A100 operator profiles by
#: ``scripts/fit_step_time_efficiency.py`` (run it to reproduce them; it prints the residuals).
VIDUR_A100 = KernelEfficiency(
    matmul_latency_us=4.544,
    matmul_compute=0.7310,
    matmul_memory=0.7903,
    overlap_p=2.973,
    m_tile=128,
    norm=ElementwiseEfficiency(latency_us=1.252, memory=0.3982, fill_rows=126.4),
    rope=ElementwiseEfficiency(latency_us=1.382, memory=0.5082, fill_rows=110.4),
    act=ElementwiseEfficiency(latency_us=0.000, memory=0.5673, fill_rows=132.8),
    add=ElementwiseEfficiency(latency_us=1.838, memory=1.0000, fill_rows=0.2894),
    source=(
        "fitted by scripts/fit_step_time_efficiency.py on Vidur's A100 operator profiles "
        "(microsoft/vidur commit 7d47513363ec, data/profiling/compute/a100/<model>/mlp.csv, MIT), "
        "as copied to ../shared/profiles/vidur-a100/: Llama-2-7b-hf.mlp.csv (sha256 2cfacca9…), "
        "Llama-2-70b-hf.mlp.csv (d690ce60…), Meta-Llama-3-8B.mlp.csv (98c26488…), "
        "Meta-Llama-3-70B.mlp.csv (6929c6f4…); tensor parallel 1, 1 to 4,096 tokens, median "
        "times; peaks 312 TFLOP/s bf16 and 2,039 GB/s (A100 80GB SXM data sheet); fitted "
        "2026-12-01"
    ),
)


# --- kernel times (vectorized) -----------------------------------------------------------------


def _tokens(num_tokens: ArrayLike, field: str = "num_tokens") -> np.ndarray:
    arr = np.asarray(num_tokens, dtype=np.float64)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise InputError("token counts must be finite and >= 0", field=field)
    return arr


def _pnorm(tc: np.ndarray, tm: np.ndarray, p: float) -> np.ndarray:
    hi = np.maximum(tc, tm)
    lo = np.minimum(tc, tm)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
    return hi * (1.0 + ratio**p) ** (1.0 / p)


def matmul_ms(
    m: ArrayLike,
    k: float,
    n: float,
    device: str | DeviceSpec,
    efficiency: KernelEfficiency = VIDUR_A100,
    *,
    weight_bytes: float = 2.0,
    pad: bool = True,
) -> np.ndarray:
    """Time (ms) of one ``m × k`` by ``k × n`` matrix product, vectorized over ``m`` (tokens).

    ``weight_bytes``: bytes per weight element; ``pad=False`` skips tile padding (attention).
    0 where ``m == 0``.
    """
    dev = get_gpu(device)
    e = efficiency
    mm = _tokens(m, "m")
    tile = float(e.m_tile)
    if pad:
        m_pad = np.where(mm <= tile / 2, mm, np.ceil(mm / tile) * tile)
    else:
        m_pad = mm
    tc = 2.0 * m_pad * k * n / (dev.peak_flops * e.matmul_compute) * 1e3
    tm = (
        (weight_bytes * k * n + ACTIVATION_BYTES * mm * (k + n))
        / (dev.memory_bandwidth * e.matmul_memory)
        * 1e3
    )
    t = e.matmul_latency_us * 1e-3 + _pnorm(tc, tm, e.overlap_p)
    return np.where(mm > 0, t, 0.0)


def elementwise_ms(
    rows: ArrayLike,
    bytes_moved: ArrayLike,
    device: str | DeviceSpec,
    kind: ElementwiseEfficiency,
) -> np.ndarray:
    """Time (ms) of one elementwise kernel over ``rows`` rows moving ``bytes_moved`` bytes.

    ``latency_us · 1e-3 + bytes / (W · memory) · (1 + fill_rows / rows)``; 0 where ``rows == 0``.
    """
    dev = get_gpu(device)
    r = _tokens(rows, "rows")
    b = np.asarray(bytes_moved, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fill = 1.0 + kind.fill_rows / np.where(r > 0, r, 1.0)
    t = kind.latency_us * 1e-3 + b / (dev.memory_bandwidth * kind.memory) * fill * 1e3
    return np.where(r > 0, t, 0.0)


def dense_kernel_ms(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    num_tokens: ArrayLike,
    efficiency: KernelEfficiency = VIDUR_A100,
) -> dict[str, np.ndarray]:
    """Time (ms) of each dense kernel of *one layer* over ``num_tokens`` tokens (tensor parallel
    1), keyed by :data:`DENSE_KERNELS` (``add`` is one of the two residual adds)."""
    spec = get_model(model)
    e = efficiency
    t = _tokens(num_tokens)
    h = float(spec.hidden_size)
    kv = float(spec.n_kv_heads * spec.head_dim)
    inter = float(spec.intermediate_size)
    a = ACTIVATION_BYTES
    w = float(spec.bytes_per_weight)
    return {
        "input_layernorm": elementwise_ms(t, 2 * a * t * h, device, e.norm),
        "attn_pre_proj": matmul_ms(t, h, h + 2 * kv, device, e, weight_bytes=w),
        "attn_rope": elementwise_ms(t, 2 * a * t * (h + kv), device, e.rope),
        "attn_post_proj": matmul_ms(t, h, h, device, e, weight_bytes=w),
        "post_attention_layernorm": elementwise_ms(t, 2 * a * t * h, device, e.norm),
        "mlp_up_proj": matmul_ms(t, h, 2 * inter, device, e, weight_bytes=w),
        "mlp_act": elementwise_ms(t, 3 * a * t * inter, device, e.act),
        "mlp_down_proj": matmul_ms(t, inter, h, device, e, weight_bytes=w),
        "add": elementwise_ms(t, 3 * a * t * h, device, e.add),
    }


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
    t = _tokens(num_tokens)
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


# --- the step-time model -----------------------------------------------------------------------


@dataclass(frozen=True)
class StepParts:
    """The time of one engine step in named parts (ms); ``total_ms`` is their sum."""

    dense_ms: float
    attention_ms: float
    lm_head_ms: float
    overhead_ms: float

    @property
    def total_ms(self) -> float:
        """dense + attention + lm_head + overhead (ms)."""
        return self.dense_ms + self.attention_ms + self.lm_head_ms + self.overhead_ms

    def as_dict(self) -> dict[str, float]:
        """The parts and the total, by name (ms)."""
        out = dataclasses.asdict(self)
        out["total_ms"] = self.total_ms
        return out


class KernelRoofline(RooflineStepTime):
    """Step times of ``model`` on ``device`` as named parts, each a sum of kernel rooflines.

    ``calibrated=True`` (default) times every kernel with ``efficiency`` (fitted on Vidur's A100
    profiles unless given); ``calibrated=False`` is the data-sheet ideal: the arithmetic of
    :class:`batchlab.roofline.RooflineStepTime`, inherited. The scalar methods
    (:meth:`step_ms`, :meth:`step`) serve one step; :meth:`steps_ms` and :meth:`decode_run_ms`
    are vectorized over arrays of steps; :meth:`dense_ms` is vectorized over token counts.
    """

    def __init__(
        self,
        model: str | ModelSpec,
        device: str | DeviceSpec,
        *,
        calibrated: bool = True,
        efficiency: KernelEfficiency = VIDUR_A100,
    ) -> None:
        if not isinstance(efficiency, KernelEfficiency):
            raise InputError("must be a KernelEfficiency", field="efficiency")
        super().__init__(model, device)
        self.calibrated = bool(calibrated)
        self.efficiency = efficiency
        m = self.model
        self._w_layers = _layer_weight_bytes(m)
        self._w_ends = self._w - self._w_layers
        # calibrated: per-layer attention coefficients
        layers = m.n_layers
        self._pair_layer = self._pair / layers
        self._kv_layer = self._kv / layers
        self._qo_bytes = 2 * ACTIVATION_BYTES * m.hidden_size  # a query read and an output written
        self._dense_cache: dict[int, float] = {}
        self._head_cache: dict[tuple[int, int], float] = {}
        self._decode_cache: dict[int, float] = {}

    def __repr__(self) -> str:
        mode = "calibrated" if self.calibrated else "data-sheet ideal"
        return f"KernelRoofline({self.model.name!r}, {self.device.name!r}, {mode})"

    # -- dense ------------------------------------------------------------------------------

    def dense_ms(self, num_tokens: ArrayLike) -> np.ndarray:
        """Dense work (ms) of one forward pass over ``num_tokens`` tokens (see :func:`dense_ms`)."""
        return dense_ms(
            self.model,
            self.device,
            num_tokens,
            calibrated=self.calibrated,
            efficiency=self.efficiency,
        )

    def _dense_scalar(self, tokens: int) -> float:
        hit = self._dense_cache.get(tokens)
        if hit is None:
            hit = float(self.dense_ms(tokens))
            if len(self._dense_cache) < 1 << 16:
                self._dense_cache[tokens] = hit
        return hit

    # -- calibrated attention and LM head ---------------------------------------------------

    def _attention_kernel(self, flops: np.ndarray, moved: np.ndarray) -> np.ndarray:
        e, d = self.efficiency, self.device
        tc = flops / (d.peak_flops * e.matmul_compute) * 1e3
        tm = moved / (d.memory_bandwidth * e.matmul_memory) * 1e3
        return e.matmul_latency_us * 1e-3 + _pnorm(tc, tm, e.overlap_p)

    def _attention_ms(
        self,
        p: np.ndarray,
        n: np.ndarray,
        s: np.ndarray,
        pairs: np.ndarray,
        cached: np.ndarray,
    ) -> np.ndarray:
        """Calibrated attention (ms), vectorized over steps."""
        pre = self._attention_kernel(
            self._pair_layer * pairs, self._kv_layer * (cached + p) + self._qo_bytes * p
        )
        dec = self._attention_kernel(self._pair_layer * s, self._kv_layer * s + self._qo_bytes * n)
        new = p + n
        write = elementwise_ms(new, 2 * self._kv_layer * new, self.device, self.efficiency.add)
        per_layer = np.where(p > 0, pre, 0.0) + np.where(n > 0, dec, 0.0) + write
        return self.model.n_layers * per_layer

    def _lm_head_ms(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Calibrated embedding gather + final norm + logits (ms), vectorized over steps."""
        m, e = self.model, self.efficiency
        h = float(m.hidden_size)
        a = ACTIVATION_BYTES
        gather = elementwise_ms(tokens, 2 * a * tokens * h, self.device, e.add)
        norm = elementwise_ms(rows, 2 * a * rows * h, self.device, e.norm)
        logits = matmul_ms(
            rows, h, float(m.vocab_size), self.device, e, weight_bytes=float(m.bytes_per_weight)
        )
        return gather + norm + logits

    def _head_scalar(self, tokens: int, rows: int) -> float:
        key = (tokens, rows)
        hit = self._head_cache.get(key)
        if hit is None:
            hit = float(self._lm_head_ms(np.float64(tokens), np.float64(rows)))
            if len(self._head_cache) < 1 << 16:
                self._head_cache[key] = hit
        return hit

    # -- one step ---------------------------------------------------------------------------

    def step(
        self,
        prefill_tokens: int,
        decode_context_lens: ArrayLike = (),
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
        prefill_seqs: int = 1,
    ) -> StepParts:
        """One step in named parts: ``prefill_tokens`` prompt tokens of ``prefill_seqs``
        chunks (``prefill_pairs`` attention pairs, default one sequence from position 0;
        ``prefill_cached`` cached tokens read) and one decode token for each context length in
        ``decode_context_lens`` (the new token included). All parts 0 for an empty step."""
        p = _whole(prefill_tokens, "prefill_tokens")
        cached = _whole(prefill_cached, "prefill_cached")
        seqs = _whole(prefill_seqs, "prefill_seqs")
        ctx = np.asarray(decode_context_lens, dtype=np.float64).reshape(-1)
        if ctx.size and (not np.all(np.isfinite(ctx)) or ctx.min() < 1):
            raise InputError(
                "context lengths must be finite and >= 1 token", field="decode_context_lens"
            )
        n = int(ctx.size)
        s = float(ctx.sum()) if n else 0.0
        pairs = p * (p + 1) / 2.0 if prefill_pairs is None else float(prefill_pairs)
        if p == 0 and n == 0:
            return StepParts(0.0, 0.0, 0.0, 0.0)
        if p and seqs == 0:
            raise InputError("a prefill needs at least one sequence", field="prefill_seqs")
        if not self.calibrated:
            return self._ideal_parts(p, n, s, pairs, cached, seqs if p else 0)
        rows = n + (seqs if p else 0)
        return StepParts(
            dense_ms=self._dense_scalar(p + n),
            attention_ms=float(
                self._attention_ms(
                    np.float64(p), np.float64(n), np.float64(s), np.float64(pairs), cached
                )
            ),
            lm_head_ms=self._head_scalar(p + n, rows),
            overhead_ms=self._oh,
        )

    def _ideal_parts(
        self, p: int, n: int, s: float, pairs: float, cached: int, seqs: int
    ) -> StepParts:
        flops_dense = self._tok * (n + p)
        flops_attn = self._pair * (s + (pairs if p else 0.0))
        flops_head = self._logit * (n + seqs)
        bytes_attn = self._kv * (s + ((cached + p) if p else 0))
        compute = (flops_dense + flops_attn + flops_head) * self._inv_flops
        memory = (self._w + bytes_attn) * self._inv_bw
        if compute >= memory:
            parts = (flops_dense, flops_attn, flops_head)
            scale = self._inv_flops
        else:
            parts = (self._w_layers, bytes_attn, self._w_ends)
            scale = self._inv_bw
        return StepParts(parts[0] * scale, parts[1] * scale, parts[2] * scale, self._oh)

    def _step(self, p: int, n: int, s: float, pairs: float, cached: int) -> float:
        """Scalar fast path (the simulator's hot loop): ``p`` prefill tokens (one chunk) and
        ``n`` decodes whose context lengths sum to ``s``."""
        if not self.calibrated:
            return super()._step(p, n, s, pairs, cached)
        if p == 0 and n == 0:
            return 0.0
        attn = self._attention_scalar(p, n, s, pairs, cached)
        return (
            self._dense_scalar(p + n)
            + attn
            + self._head_scalar(p + n, n + (1 if p else 0))
            + (self._oh)
        )

    def _attention_scalar(self, p: int, n: int, s: float, pairs: float, cached: int) -> float:
        e, d = self.efficiency, self.device
        inv_c = 1e3 / (d.peak_flops * e.matmul_compute)
        inv_m = 1e3 / (d.memory_bandwidth * e.matmul_memory)
        lat = e.matmul_latency_us * 1e-3
        q = e.overlap_p
        total = 0.0
        if p:
            tc = self._pair_layer * pairs * inv_c
            tm = (self._kv_layer * (cached + p) + self._qo_bytes * p) * inv_m
            total += lat + _pnorm_scalar(tc, tm, q)
        if n:
            tc = self._pair_layer * s * inv_c
            tm = (self._kv_layer * s + self._qo_bytes * n) * inv_m
            total += lat + _pnorm_scalar(tc, tm, q)
        new = p + n
        add = e.add
        total += (
            add.latency_us * 1e-3
            + 2
            * self._kv_layer
            * new
            / (d.memory_bandwidth * add.memory)
            * (1.0 + add.fill_rows / new)
            * 1e3
        )
        return self.model.n_layers * total

    # -- many steps -------------------------------------------------------------------------

    def steps_ms(
        self,
        prefill_tokens: ArrayLike,
        decode_seqs: ArrayLike,
        decode_context_sum: ArrayLike,
        *,
        prefill_pairs: ArrayLike | None = None,
        prefill_cached: ArrayLike = 0,
    ) -> np.ndarray:
        """Durations (ms) of many steps at once, broadcasting the arguments: each step has
        ``prefill_tokens`` prompt tokens (one chunk; ``prefill_pairs`` pairs, default
        ``p(p+1)/2``; ``prefill_cached`` cached tokens) and ``decode_seqs`` decodes whose
        context lengths sum to ``decode_context_sum``. 0 for empty steps."""
        p = _tokens(prefill_tokens, "prefill_tokens")
        n = _tokens(decode_seqs, "decode_seqs")
        s = _tokens(decode_context_sum, "decode_context_sum")
        cached = _tokens(prefill_cached, "prefill_cached")
        pairs = p * (p + 1) / 2.0 if prefill_pairs is None else _tokens(prefill_pairs, "pairs")
        p, n, s, pairs, cached = np.broadcast_arrays(p, n, s, pairs, cached)
        empty = (p == 0) & (n == 0)
        if not self.calibrated:
            has_p = p > 0
            flops = (self._tok + self._logit) * n + self._pair * s
            moved = self._w + self._kv * s
            flops = flops + np.where(has_p, self._tok * p + self._logit + self._pair * pairs, 0.0)
            moved = moved + np.where(has_p, self._kv * (cached + p), 0.0)
            out = np.maximum(flops * self._inv_flops, moved * self._inv_bw) + self._oh
            return np.where(empty, 0.0, out)
        tokens = p + n
        rows = n + (p > 0)
        out = (
            self.dense_ms(tokens)
            + self._attention_ms(p, n, s, pairs, cached)
            + self._lm_head_ms(tokens, rows)
            + self._oh
        )
        return np.where(empty, 0.0, out)

    def _decode_run(self, n_seqs: int, sum_ctx: float, n_steps: int) -> np.ndarray:
        """Fast path: ``n_steps`` decode steps of ``n_seqs`` sequences whose context lengths sum
        to ``sum_ctx`` at the first step. Only the attention over the growing contexts varies
        from step to step; the dense work, LM head and KV-cache write are computed once."""
        if not self.calibrated:
            return super()._decode_run(n_seqs, sum_ctx, n_steps)
        if n_seqs == 0:
            return np.zeros(n_steps)
        e, d = self.efficiency, self.device
        s = sum_ctx + n_seqs * np.arange(n_steps, dtype=np.float64)
        tc = self._pair_layer * s * (1e3 / (d.peak_flops * e.matmul_compute))
        tm = (self._kv_layer * s + self._qo_bytes * n_seqs) * (
            1e3 / (d.memory_bandwidth * e.matmul_memory)
        )
        hi = np.maximum(tc, tm)  # > 0: a decode reads its KV cache
        p = e.overlap_p
        attention = e.matmul_latency_us * 1e-3 + hi * (1.0 + (np.minimum(tc, tm) / hi) ** p) ** (
            1.0 / p
        )
        return self._decode_fixed(n_seqs) + self.model.n_layers * attention

    def _decode_fixed(self, n_seqs: int) -> float:
        """The parts of a decode step of ``n_seqs`` sequences that do not grow with the contexts
        (ms): dense, LM head, overhead and the KV-cache write of the new tokens."""
        hit = self._decode_cache.get(n_seqs)
        if hit is None:
            new = np.float64(n_seqs)
            e = self.efficiency
            write = float(elementwise_ms(new, 2 * self._kv_layer * new, self.device, e.add))
            hit = (
                self._dense_scalar(n_seqs)
                + self._head_scalar(n_seqs, n_seqs)
                + self._oh
                + self.model.n_layers * write
            )
            if len(self._decode_cache) < 1 << 16:
                self._decode_cache[n_seqs] = hit
        return hit


def _pnorm_scalar(tc: float, tm: float, p: float) -> float:
    hi, lo = (tc, tm) if tc >= tm else (tm, tc)
    if hi <= 0.0:
        return 0.0
    return hi * (1.0 + (lo / hi) ** p) ** (1.0 / p)


def _whole(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(f"must be a whole number >= 0, got {value!r}", field=field)
    if not (math.isfinite(float(value)) and float(value) == int(value) and value >= 0):
        raise InputError(f"must be a whole number >= 0, got {value!r}", field=field)
    return int(value)


def efficiency_table(efficiency: KernelEfficiency = VIDUR_A100) -> Mapping[str, float]:
    """The efficiency numbers flattened to ``name: value`` (for printing and notes)."""
    out: dict[str, float] = {
        "matmul_latency_us": efficiency.matmul_latency_us,
        "matmul_compute": efficiency.matmul_compute,
        "matmul_memory": efficiency.matmul_memory,
        "overlap_p": efficiency.overlap_p,
        "m_tile": float(efficiency.m_tile),
    }
    for name in ("norm", "rope", "act", "add"):
        kind: ElementwiseEfficiency = getattr(efficiency, name)
        out[f"{name}_latency_us"] = kind.latency_us
        out[f"{name}_memory"] = kind.memory
        out[f"{name}_fill_rows"] = kind.fill_rows
    return out


# --- operator profiles (Vidur's mlp.csv format) ------------------------------------------------

_SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size")

#: ``n_layers`` of the models of ``../shared/profiles/vidur-a100/<stem>.mlp.csv`` (from each
#: model's ``config.json``; the profiles hold one layer and do not say).
PROFILE_N_LAYERS: dict[str, int] = {
    "Llama-2-7b-hf": 32,
    "Llama-2-70b-hf": 80,
    "Meta-Llama-3-8B": 32,
    "Meta-Llama-3-70B": 80,
}


def read_operator_profile(path: Any, *, tensor_parallel: int = 1) -> pd.DataFrame:
    """One layer's dense operator times from a Vidur ``mlp.csv`` profile (ms, medians).

    Rows of ``tensor_parallel`` workers only; one row per ``num_tokens`` (repeated
    measurements: the median of their medians), sorted by tokens. Columns: ``num_tokens`` and
    one per :data:`DENSE_KERNELS` name (``time_stats.<op>.median``); the shape columns
    (``n_head``, ``n_kv_head``, ``n_embd``, ``n_expanded_embd``, ``vocab_size``) are kept from
    the file's first row. Raises :class:`InputError` naming the file and the missing column.
    """
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the profile: {err}", path=path) from None
    needed = ["num_tokens", "num_tensor_parallel_workers", *_SHAPE_COLUMNS]
    needed += [f"time_stats.{op}.median" for op in DENSE_KERNELS]
    for column in needed:
        if column not in raw.columns:
            raise InputError("missing column in the operator profile", path=path, field=column)
    raw = raw[raw["num_tensor_parallel_workers"] == tensor_parallel]
    if raw.empty:
        raise InputError(
            f"no rows with num_tensor_parallel_workers == {tensor_parallel}",
            path=path,
            field="num_tensor_parallel_workers",
        )
    ops = [f"time_stats.{op}.median" for op in DENSE_KERNELS]
    table = raw.groupby("num_tokens", sort=True)[ops].median().reset_index()
    table.columns = ["num_tokens", *DENSE_KERNELS]
    bad = ~np.isfinite(table[list(DENSE_KERNELS)].to_numpy(dtype=float)).all(axis=1)
    if bad.any() or (table["num_tokens"] < 1).any():
        raise InputError("non-finite times or token counts < 1 in the profile", path=path)
    first = raw.iloc[0]
    for column in _SHAPE_COLUMNS:
        table[column] = int(first[column])
    return table


def profile_model_spec(profile: pd.DataFrame, n_layers: int, name: str = "profiled") -> ModelSpec:
    """The :class:`ModelSpec` of a profile's shapes (``n_layers`` is not in the file)."""
    row = profile.iloc[0]
    return ModelSpec(
        name,
        int(n_layers),
        int(row["n_embd"]),
        int(row["n_head"]),
        int(row["n_kv_head"]),
        int(row["n_expanded_embd"]),
        int(row["vocab_size"]),
    )


def profile_dense_ms(profile: pd.DataFrame, n_layers: int) -> np.ndarray:
    """The measured dense time of one forward pass (ms) per row of a profile:
    ``n_layers · Σ`` of the :data:`DENSE_KERNELS` medians (``add`` twice)."""
    total = sum(
        profile[name].to_numpy(dtype=float) * count for name, count in DENSE_KERNELS.items()
    )
    return int(n_layers) * np.asarray(total, dtype=np.float64)
