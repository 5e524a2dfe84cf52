"""Cost model of a padded, statically compiled LLM serving step.

Units: lengths are tokens, latencies are milliseconds (ms), costs are abstract cost units. Every
computation is done in float64, so prompt lengths up to 131,072 tokens and generation lengths of
100,000 tokens (and well beyond) never overflow.

Notation: ``H`` = ``hidden`` (model width), ``g`` = ``granularity`` (tokens),
``S_i = align(prompt_len_i, g) = ceil(prompt_len_i / g) * g`` (tokens). In a batch B,
``S_max = max_{i in B} S_i`` and ``G_max = max_{i in B} gen_len_i`` (tokens).

Prefill, per request i (context ``S = S_i``)::

    prefill_cost(S) = prefill_cost_quad * S**2 + prefill_cost_lin * H * S      [cost units]
    prefill_ms(S)   = prefill_ms_quad   * S**2 + prefill_ms_lin   * H * S      [ms]

Decode, steps t = 0 .. G_max - 1 at context ``S_max + t``::

    decode_cost(S_max, G_max) = sum_t [decode_cost_quad * (S_max + t)**2
                                       + decode_cost_lin * H * (S_max + t)]   [cost units, per request]
    decode_ms(S_max, G_max)   = sum_t [decode_ms_quad * (S_max + t)**2
                                       + decode_ms_lin * H * (S_max + t)]     [ms, per batch]

evaluated in closed form with ``S = S_max``, ``G = G_max`` (all terms non-negative, so there is no
cancellation)::

    sum_t (S + t)    = G*S + G*(G - 1)/2
    sum_t (S + t)**2 = G*S**2 + S*G*(G - 1) + (G - 1)*G*(2*G - 1)/6

Every request of the batch pays the batch's decode cost; the batch's decode latency is added to
the latency of every request in it.

Per batch: overhead ``batch_cost`` [cost units] and ``batch_ms`` [ms] (added to the latency of
every request of the batch).

Per distinct shape ``s`` (seq_align, tokens) in a plan::

    compile_cost(s) = compile_cost_quad * s**2 + compile_cost_lin * H * s     [cost units]

and ``compile_ms`` [ms] is added once, to the first request of the first batch (in batch_id order)
that uses the shape.

Request latency = prefill_ms(S_i) + decode_ms(S_max, G_max) + batch_ms (+ compile_ms) [ms];
pN latency is nearest-rank (the ceil(N*p)-th smallest request latency) [ms]; sequential time is
the sum over batches of the batch's largest request latency [ms]; padding ratio (dimensionless)::

    pad_ratio = sum_i [(S_i - prompt_len_i) + (G_max - gen_len_i)] / sum_i (prompt_len_i + gen_len_i)

(:func:`batchlab.evaluate.evaluate` applies these to a plan).

Presets: ``static-graph`` (the numbers above, defaults of :class:`CostCoefficients`) and
``padded-graph`` (same numbers, ``padded=True``: prefill and decode run at the batch's declared
``seq_align`` s, i.e. S_i -> s and S_max -> s).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.shapes import check_granularity

__all__ = [
    "PRESETS",
    "Breakdown",
    "CostBreakdown",
    "CostCoefficients",
    "CostModel",
    "get_cost_model",
]

_INT_FIELDS = ("hidden", "granularity")
_BOOL_FIELDS = ("padded",)


@dataclass(frozen=True)
class CostCoefficients:
    """Coefficients of the cost model (see the module docstring for the formulas).

    ``hidden`` (model width) and ``granularity`` (tokens) are positive ints, ``padded`` is a bool,
    every other field is a non-negative finite float: ``*_cost_*`` in cost units, ``*_ms_*`` and
    ``batch_ms``/``compile_ms`` in milliseconds.
    """

    hidden: int = 4096
    granularity: int = 64
    padded: bool = False
    prefill_cost_quad: float = 2.0
    prefill_cost_lin: float = 1.0
    prefill_ms_quad: float = 0.002
    prefill_ms_lin: float = 0.0015
    decode_cost_quad: float = 1.0
    decode_cost_lin: float = 0.5
    decode_ms_quad: float = 0.0012
    decode_ms_lin: float = 0.0006
    batch_cost: float = 1e7
    batch_ms: float = 8.0
    compile_cost_quad: float = 500.0
    compile_cost_lin: float = 2.0
    compile_ms: float = 1500.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "granularity":
                value = check_granularity(value)
            elif f.name in _INT_FIELDS:
                value = check_scalar(value, f.name, int, min_val=1, max_val=2**31 - 1)
            elif f.name in _BOOL_FIELDS:
                value = check_scalar(value, f.name, bool)
            else:
                value = check_scalar(value, f.name, float, min_val=0)
            object.__setattr__(self, f.name, value)

    def as_dict(self) -> dict[str, float | int | bool]:
        """The coefficients as a plain dict (field name -> value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


PRESETS: dict[str, CostCoefficients] = {
    "static-graph": CostCoefficients(),
    "padded-graph": CostCoefficients(padded=True),
}


def _as_float(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.size and not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise InputError(f"must be finite and >= 0 (tokens), got {x!r}", field=name)
    return arr


def _context_sums(s: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed forms of sum_{t=0}^{G-1} (S + t) and sum_{t=0}^{G-1} (S + t)**2 (float64)."""
    g_tri = g * (g - 1.0) / 2.0
    lin = g * s + g_tri
    quad = g * s * s + 2.0 * s * g_tri + (g - 1.0) * g * (2.0 * g - 1.0) / 6.0
    return lin, quad


@dataclass(frozen=True)
class CostModel:
    """The cost model: vectorized per-request and per-batch costs (cost units) and latencies (ms).

    Array arguments are lengths in tokens (any array-like, broadcast together); results are float64.
    """

    coefficients: CostCoefficients = field(default_factory=CostCoefficients)
    name: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.coefficients, CostCoefficients):
            raise TypeError(
                f"coefficients must be a CostCoefficients, got {type(self.coefficients).__name__}"
            )

    # -- scalar parameters -------------------------------------------------------------------
    @property
    def hidden(self) -> int:
        """Model width H."""
        return self.coefficients.hidden

    @property
    def granularity(self) -> int:
        """Alignment granularity g (tokens)."""
        return self.coefficients.granularity

    @property
    def padded(self) -> bool:
        """True when prefill and decode run at the batch's declared seq_align."""
        return self.coefficients.padded

    @property
    def overhead_cost(self) -> float:
        """Fixed cost of one batch (cost units)."""
        return self.coefficients.batch_cost

    @property
    def overhead_ms(self) -> float:
        """Fixed latency of one batch (ms), added to each of its requests."""
        return self.coefficients.batch_ms

    @property
    def compile_ms(self) -> float:
        """Compile latency spike of a new shape (ms), added to one request."""
        return self.coefficients.compile_ms

    # -- vectorized formulas -----------------------------------------------------------------
    def prefill_cost(self, S: ArrayLike) -> np.ndarray:
        """Per-request prefill cost (cost units) at aligned prompt length S (tokens)."""
        c = self.coefficients
        s = _as_float(S, "S")
        return c.prefill_cost_quad * s * s + c.prefill_cost_lin * c.hidden * s

    def prefill_ms(self, S: ArrayLike) -> np.ndarray:
        """Per-request prefill latency (ms) at aligned prompt length S (tokens)."""
        c = self.coefficients
        s = _as_float(S, "S")
        return c.prefill_ms_quad * s * s + c.prefill_ms_lin * c.hidden * s

    def decode_cost(self, S_max: ArrayLike, G_max: ArrayLike) -> np.ndarray:
        """Decode cost paid by each request of a batch (cost units), closed form over G_max steps."""
        c = self.coefficients
        lin, quad = _context_sums(_as_float(S_max, "S_max"), _as_float(G_max, "G_max"))
        return c.decode_cost_quad * quad + c.decode_cost_lin * c.hidden * lin

    def decode_ms(self, S_max: ArrayLike, G_max: ArrayLike) -> np.ndarray:
        """Decode latency of a batch (ms), closed form over G_max steps from context S_max."""
        c = self.coefficients
        lin, quad = _context_sums(_as_float(S_max, "S_max"), _as_float(G_max, "G_max"))
        return c.decode_ms_quad * quad + c.decode_ms_lin * c.hidden * lin

    @property
    def members_pay_caps(self) -> bool:
        """True when a batch costs ``overhead + size · decode_cost(S_max, G_max)``: every member
        pays the price at the batch's caps (every :class:`CostCoefficients` model). A model that
        amortizes work over the batch (weights read once per step, as a hardware step-time model
        does) returns False, and then only :meth:`batch_decode_cost` / :meth:`batch_decode_ms`
        describe a batch."""
        return True

    def batch_decode_cost(self, S_max: ArrayLike, G_max: ArrayLike, size: ArrayLike) -> np.ndarray:
        """Decode cost of whole batches of ``size`` requests (cost units): ``size · decode_cost``
        here; a model with ``members_pay_caps`` False prices the batch as a whole."""
        return _as_float(size, "size") * self.decode_cost(S_max, G_max)

    def batch_decode_ms(self, S_max: ArrayLike, G_max: ArrayLike, size: ArrayLike) -> np.ndarray:
        """Decode latency of whole batches of ``size`` requests (ms): ``decode_ms`` here, the same
        for any size; a model with ``members_pay_caps`` False may grow it with the size."""
        return self.decode_ms(S_max, G_max) + 0.0 * _as_float(size, "size")

    def compile_cost(self, s: ArrayLike) -> np.ndarray:
        """Compile cost of a shape with seq_align s (cost units), paid once per distinct shape."""
        c = self.coefficients
        x = _as_float(s, "s")
        return c.compile_cost_quad * x * x + c.compile_cost_lin * c.hidden * x

    def with_coefficients(self, *, name: str | None = None, **changes: object) -> CostModel:
        """A copy with some coefficients changed (validated); named ``name`` or ``"custom"``."""
        known = {f.name for f in fields(CostCoefficients)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(
                f"unknown coefficient(s) {unknown}; known: {sorted(known)}", field=unknown[0]
            )
        if name is None:
            name = self.name if not changes else "custom"
        return CostModel(replace(self.coefficients, **changes), name=name)


def get_cost_model(name_or_model: str | CostCoefficients | CostModel) -> CostModel:
    """A :class:`CostModel` from a preset name, a :class:`CostCoefficients` or a model (as is)."""
    if isinstance(name_or_model, CostModel):
        return name_or_model
    if isinstance(name_or_model, CostCoefficients):
        for preset, coefficients in PRESETS.items():
            if coefficients == name_or_model:
                return CostModel(name_or_model, name=preset)
        return CostModel(name_or_model, name="custom")
    if isinstance(name_or_model, str):
        if name_or_model in PRESETS:
            return CostModel(PRESETS[name_or_model], name=name_or_model)
        raise InputError(
            f"unknown cost model {name_or_model!r}; presets: {', '.join(sorted(PRESETS))}",
            field="cost_model",
        )
    raise TypeError(
        "cost model must be a preset name, CostCoefficients or CostModel, "
        f"got {type(name_or_model).__name__}"
    )


@dataclass(frozen=True)
class Breakdown:
    """A total split into the four named parts of the model: overhead, compile, prefill, decode."""

    overhead: float
    compile: float
    prefill: float
    decode: float

    @property
    def total(self) -> float:
        """overhead + compile + prefill + decode."""
        return self.overhead + self.compile + self.prefill + self.decode

    def as_dict(self) -> dict[str, float]:
        """Parts and total as a flat dict: overhead, compile, prefill, decode, total."""
        return {
            "overhead": self.overhead,
            "compile": self.compile,
            "prefill": self.prefill,
            "decode": self.decode,
            "total": self.total,
        }


@dataclass(frozen=True)
class CostBreakdown(Breakdown):
    """Total cost split into named parts (cost units)."""
