"""Kernel efficiencies fitted on real GPU profiles, and the kernel formulas they go into.

Units: tokens, bytes, FLOPs; times in ms (latencies of single kernels in µs where named so).

A forward pass is a sequence of GPU kernels. For each kernel this module takes its FLOPs ``F``
and bytes moved ``B`` from the model's shapes and times it on a device of peak ``P`` FLOP/s and
bandwidth ``W`` bytes/s. :class:`batchlab.roofline.RooflineStepTime` adds the kernels of a step
up into named parts (dense, attention, LM head, overhead); this module holds only the
efficiencies (:class:`KernelEfficiency`, :data:`VIDUR_A100`), the formulas of single kernels and
the reader of the operator profiles they are fitted on.

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

**Elementwise kernels** (RMSNorm, rotary, SiLU-and-multiply, residual add, embedding gather,
KV-cache write) over ``T`` rows moving ``B`` bytes::

    t = λ_k + B / (W · η_k) · (1 + T_k / T)

``λ_k`` is the launch latency (small kernels are latency-bound), ``η_k`` the fraction of the
bandwidth the kernel reaches on long inputs, and ``T_k`` the rows it needs in flight to reach
it (one row per thread block: a few rows leave most of the GPU idle).

**Attention** kernels (score and value products over (query, key) pairs, reading the KV cache)
are timed like a matrix product without tile padding: ``λ_mm + (t_c^p + t_m^p)^(1/p)``. They are
not in the operator profiles, so they take the matrix products' ``η_c``, ``η_m``, ``p``, ``λ_mm``.

The efficiencies are fitted on Vidur's operator profiles of an A100 (:data:`VIDUR_A100`, with
its source) by ``scripts/fit_step_time_efficiency.py``, and carry to other GPUs through the
data-sheet peaks: nothing in them names a GPU.

A *device* here is anything with ``peak_flops`` (FLOP/s) and ``memory_bandwidth`` (bytes/s)
attributes: a :class:`batchlab.roofline.DeviceSpec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar
from batchlab.errors import InputError

__all__ = [
    "ACTIVATION_BYTES",
    "DENSE_KERNELS",
    "PROFILE_N_LAYERS",
    "VIDUR_A100",
    "Device",
    "ElementwiseEfficiency",
    "KernelEfficiency",
    "attention_kernel_ms",
    "efficiency_table",
    "elementwise_ms",
    "matmul_ms",
    "pnorm",
    "profile_dense_ms",
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


class Device(Protocol):
    """What the kernel formulas read of a device (a :class:`batchlab.roofline.DeviceSpec`)."""

    peak_flops: float
    memory_bandwidth: float


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
        for name, kwargs in (
            ("latency_us", {"min_val": 0, "unit": "µs"}),
            ("memory", {"min_val": 0, "max_val": 1, "include_boundaries": "right"}),
            ("fill_rows", {"min_val": 0, "unit": "rows"}),
        ):
            object.__setattr__(self, name, check_scalar(getattr(self, name), name, float, **kwargs))


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
        checks: tuple[tuple[str, type, dict[str, Any]], ...] = (
            ("matmul_latency_us", float, {"min_val": 0, "unit": "µs"}),
            ("matmul_compute", float, {"min_val": 0, "max_val": 1, "include_boundaries": "right"}),
            ("matmul_memory", float, {"min_val": 0, "max_val": 1, "include_boundaries": "right"}),
            ("overlap_p", float, {"min_val": 1}),
            ("m_tile", int, {"min_val": 1, "unit": "rows"}),
        )
        for name, kind, kwargs in checks:
            object.__setattr__(self, name, check_scalar(getattr(self, name), name, kind, **kwargs))
        for name in ("norm", "rope", "act", "add"):
            if not isinstance(getattr(self, name), ElementwiseEfficiency):
                raise InputError("must be an ElementwiseEfficiency", field=name)

    def replace(self, **changes: Any) -> KernelEfficiency:
        """A copy with some fields changed (``dataclasses.replace``, checked)."""
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


def _counts(values: ArrayLike, field: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise InputError("must be finite and >= 0", field=field)
    return arr


def pnorm(tc: ArrayLike, tm: ArrayLike, p: float) -> np.ndarray:
    """``(tc^p + tm^p)^(1/p)``, computed as ``hi · (1 + (lo/hi)^p)^(1/p)`` (no overflow); 0
    where both are 0."""
    tc, tm = np.asarray(tc, dtype=np.float64), np.asarray(tm, dtype=np.float64)
    hi = np.maximum(tc, tm)
    lo = np.minimum(tc, tm)
    ratio = np.divide(lo, hi, out=np.zeros(np.broadcast(lo, hi).shape), where=hi > 0)
    return hi * (1.0 + ratio**p) ** (1.0 / p)


def matmul_ms(
    m: ArrayLike,
    k: float,
    n: float,
    device: Device,
    efficiency: KernelEfficiency = VIDUR_A100,
    *,
    weight_bytes: float = 2.0,
    pad: bool = True,
    with_bound: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Time (ms) of one ``m × k`` by ``k × n`` matrix product, vectorized over ``m`` (tokens).

    ``weight_bytes``: bytes per element of the ``k × n`` operand; ``pad=False`` skips tile
    padding. 0 where ``m == 0``. ``with_bound=True`` also returns a boolean array, True where the
    product is compute-bound (``t_c >= t_m``).
    """
    e = efficiency
    mm = _counts(m, "m")
    tile = float(e.m_tile)
    m_pad = np.where(mm <= tile / 2, mm, np.ceil(mm / tile) * tile) if pad else mm
    flops = 2.0 * m_pad * k * n
    bytes_moved = weight_bytes * k * n + ACTIVATION_BYTES * mm * (k + n)
    return _matmul_kernel_ms(flops, bytes_moved, mm > 0, device, e, with_bound)


def attention_kernel_ms(
    flops: ArrayLike,
    bytes_moved: ArrayLike,
    device: Device,
    efficiency: KernelEfficiency = VIDUR_A100,
    *,
    with_bound: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Time (ms) of one attention kernel doing ``flops`` FLOPs and moving ``bytes_moved`` bytes:
    ``λ_mm + pnorm(t_c, t_m)`` with the matrix products' efficiencies, no tile padding; 0 where
    both are 0. ``with_bound=True`` also returns where it is compute-bound."""
    e = efficiency
    f = _counts(flops, "flops")
    b = _counts(bytes_moved, "bytes_moved")
    return _matmul_kernel_ms(f, b, (f > 0) | (b > 0), device, e, with_bound)


def _matmul_kernel_ms(
    flops: np.ndarray,
    bytes_moved: np.ndarray,
    active: np.ndarray,
    device: Device,
    e: KernelEfficiency,
    with_bound: bool,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``λ_mm + pnorm(t_c, t_m)`` (ms) of a kernel at the matrix products' efficiencies, 0
    where not ``active``; with where it is compute-bound when ``with_bound``."""
    tc = flops / (device.peak_flops * e.matmul_compute) * 1e3
    tm = bytes_moved / (device.memory_bandwidth * e.matmul_memory) * 1e3
    t = np.where(active, e.matmul_latency_us * 1e-3 + pnorm(tc, tm, e.overlap_p), 0.0)
    if with_bound:
        return t, tc >= tm
    return t


def elementwise_ms(
    rows: ArrayLike,
    bytes_moved: ArrayLike,
    device: Device,
    kind: ElementwiseEfficiency,
) -> np.ndarray:
    """Time (ms) of one elementwise kernel over ``rows`` rows moving ``bytes_moved`` bytes.

    ``latency_us · 1e-3 + bytes / (W · memory) · (1 + fill_rows / rows)``; 0 where ``rows == 0``.
    """
    r = _counts(rows, "rows")
    b = np.asarray(bytes_moved, dtype=np.float64)
    fill = 1.0 + kind.fill_rows / np.where(r > 0, r, 1.0)
    t = kind.latency_us * 1e-3 + b / (device.memory_bandwidth * kind.memory) * fill * 1e3
    return np.where(r > 0, t, 0.0)


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
    :func:`batchlab.roofline.profile_model_spec` gives the model of a profile.
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


def profile_dense_ms(profile: pd.DataFrame, n_layers: int) -> np.ndarray:
    """The measured dense time of one forward pass (ms) per row of a profile:
    ``n_layers · Σ`` of the :data:`DENSE_KERNELS` medians (``add`` twice)."""
    layers = check_scalar(n_layers, "n_layers", int, min_val=1)
    total = sum(
        profile[name].to_numpy(dtype=float) * count for name, count in DENSE_KERNELS.items()
    )
    return layers * np.asarray(total, dtype=np.float64)
