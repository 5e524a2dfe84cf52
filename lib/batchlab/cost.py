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

**Real units.** ``"<model>@<gpu>"`` (e.g. ``"llama-3-8b@h100-sxm"``, :func:`hardware_cost_model`)
and :class:`StepTimeCostModel` (from any step-time model, e.g. one fitted on a measurement)
price the same plans in GPU-milliseconds with real latencies in ms: a prefill costs the time of
its prefill step, and a batch's decode the step times of the whole batch (weights read once per
step for all its members, KV cache per sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.shapes import check_granularity

__all__ = [
    "MEMBER_FLOOR_BATCH",
    "PRESETS",
    "Breakdown",
    "CostBreakdown",
    "CostCoefficients",
    "CostModel",
    "StepTimeCostModel",
    "get_cost_model",
    "hardware_cost_model",
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

    #: what a cost is counted in (the unit of every ``cost_*`` figure and ``total_cost``)
    cost_unit: ClassVar[str] = "cost units"

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

    def batch_decode_ms_by_size(
        self, S_max: ArrayLike, G_max: ArrayLike, sizes: ArrayLike
    ) -> np.ndarray:
        """Decode latency (ms) of batches with caps ``(S_max, G_max)`` (arrays of one shape) at
        every batch size of ``sizes`` (1-D): shape ``(len(sizes),) + S_max.shape``."""
        s, g = np.broadcast_arrays(_as_float(S_max, "S_max"), _as_float(G_max, "G_max"))
        b = _as_float(sizes, "sizes").reshape(-1)
        return np.stack([self.batch_decode_ms(s, g, v) for v in b.tolist()]).reshape(
            b.shape + s.shape
        )

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
        if "@" in name_or_model:
            return hardware_cost_model(name_or_model)
        raise InputError(
            f"unknown cost model {name_or_model!r}; presets: {', '.join(sorted(PRESETS))}, or "
            "<model>@<gpu> (e.g. llama-3-8b@h100-sxm)",
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


# --- costs in real units: a cost model built from a step-time model ----------------------------

#: Batch size at which :meth:`StepTimeCostModel.decode_cost` prices a member (the price a member
#: pays in the largest batch: a lower bound on its share in any batch up to that size).
MEMBER_FLOOR_BATCH = 1 << 16


@dataclass(frozen=True, eq=False)
class StepTimeCostModel(CostModel):
    """Costs in GPU-milliseconds and latencies in real ms, from a step-time model
    (:class:`batchlab.steptime.StepTimeModel`: the calibrated roofline of a model on a GPU, or a
    model fitted on a measurement).

    * prefill, per request at aligned prompt length ``S``: the time of one prefill step of ``S``
      tokens (its own forward pass from position 0, emitting the first token);
    * decode of a batch of ``B`` requests with caps ``(S_max, G_max)``: the ``G_max − 1`` decode
      steps of ``B`` sequences at contexts ``S_max + 1`` … ``S_max + G_max − 1`` (the prefill
      emits the first token), each costing the step time of the whole batch: the weights are
      read once per step for all ``B``, the KV cache per sequence. ``batch_decode_ms`` is that
      sum (the latency of every member), ``batch_decode_cost`` the same times ``gpus``;
    * per batch: ``overhead_ms``; per distinct shape: ``compile_ms`` (both 0 unless measured or
      configured); cost = ``gpus`` × ms.

    A batch is priced as a whole, so ``members_pay_caps`` is False. ``decode_cost(S, G)`` is the
    price per member in a batch of :data:`MEMBER_FLOOR_BATCH` and ``decode_ms(S, G)`` the
    latency of a batch of one: as every step-time model here takes no less per sequence in a
    smaller batch and no less time for a larger one, they bound every batch's share and latency
    from below. (A model whose time per sequence grows with the batch, e.g. a fitted
    masked-pair term, breaks the first: the planner's bounds use
    :func:`batchlab.batch_priced.member_share_floor` and the lines of
    :mod:`batchlab.batch_priced`, valid for any such model.)

    Vectorized: prefill times per distinct length; decode sums from per-size cumulative tables
    over contexts (one vectorized ``decode_steps_ms`` call per batch size seen).
    """

    cost_unit: ClassVar[str] = "GPU-ms"

    step_time: Any = None
    gpus: int = 1
    member_floor_batch: int = MEMBER_FLOOR_BATCH

    def __post_init__(self) -> None:
        super().__post_init__()
        from batchlab.steptime import StepTimeModel

        if not isinstance(self.step_time, StepTimeModel):
            raise InputError(
                f"must be a StepTimeModel, got {type(self.step_time).__name__}", field="step_time"
            )
        object.__setattr__(self, "gpus", check_scalar(self.gpus, "gpus", int, min_val=1))
        floor = check_scalar(self.member_floor_batch, "member_floor_batch", int, min_val=1)
        object.__setattr__(self, "member_floor_batch", floor)
        object.__setattr__(self, "_prefill", {})
        object.__setattr__(self, "_cum", {})

    @classmethod
    def from_step_time(
        cls,
        step_time: Any,
        *,
        name: str | None = None,
        overhead_ms: float = 0.0,
        compile_ms: float = 0.0,
        granularity: int = 64,
        padded: bool = False,
        gpus: int = 1,
    ) -> StepTimeCostModel:
        """The cost model of a step-time model; ``overhead_ms`` per batch, ``compile_ms`` per
        shape (ms), ``gpus`` the devices the model runs on (cost = ``gpus`` × ms)."""
        overhead = check_scalar(overhead_ms, "overhead_ms", float, min_val=0, unit="ms")
        compile_ = check_scalar(compile_ms, "compile_ms", float, min_val=0, unit="ms")
        n = check_scalar(gpus, "gpus", int, min_val=1)
        hidden = getattr(getattr(step_time, "model", None), "hidden_size", 4096)
        coefficients = CostCoefficients(
            hidden=int(hidden),
            granularity=granularity,
            padded=padded,
            **{f.name: 0.0 for f in fields(CostCoefficients) if f.name.startswith(_POLY)},
            batch_cost=n * overhead,
            batch_ms=overhead,
            compile_cost_quad=0.0,
            compile_cost_lin=0.0,
            compile_ms=compile_,
        )
        return cls(coefficients, name=name or repr(step_time), step_time=step_time, gpus=n)

    # -- what evaluate and the planner call -------------------------------------------------

    @property
    def members_pay_caps(self) -> bool:
        """False: a batch is priced as a whole (weights amortized over its members)."""
        return False

    def prefill_ms(self, S: ArrayLike) -> np.ndarray:
        """Per-request prefill latency (ms): one prefill step of ``S`` tokens."""
        from batchlab.steptime import StepBatch

        s = _as_float(S, "S")
        uniq, inv = np.unique(s.astype(np.int64).reshape(-1), return_inverse=True)
        cache = self._prefill
        out = np.empty(uniq.size)
        for i, v in enumerate(uniq.tolist()):
            hit = cache.get(v)
            if hit is None:
                batch = StepBatch(v, v * (v + 1) / 2.0, 0, 1 if v else 0, 0, 0.0)
                hit = cache[v] = float(self.step_time.duration_ms(batch))
            out[i] = hit
        return out[inv].reshape(s.shape)

    def prefill_cost(self, S: ArrayLike) -> np.ndarray:
        """Per-request prefill cost (GPU-ms): ``gpus ×`` :meth:`prefill_ms`."""
        return self.gpus * self.prefill_ms(S)

    def _cumulative(self, size: int, top: int) -> np.ndarray:
        """``C[c] = Σ_{x=1}^{c}`` (decode step time of ``size`` sequences at context ``x``) for
        ``c = 0 … top`` at least."""
        from batchlab.steptime import StepBatch

        table = self._cum.get(size)
        if table is None or table.size <= top:
            n = max(1024, 1 << int(top).bit_length())
            first = StepBatch(0, 0.0, 0, 0, size, float(size))
            steps = np.asarray(self.step_time.decode_steps_ms(first, n), dtype=np.float64)
            table = np.concatenate([[0.0], np.cumsum(steps)])
            self._cum[size] = table
        return table

    def batch_decode_ms(self, S_max: ArrayLike, G_max: ArrayLike, size: ArrayLike) -> np.ndarray:
        """Decode latency of whole batches (ms): ``G_max − 1`` steps of ``size`` sequences at
        contexts ``S_max + 1`` … ``S_max + G_max − 1``."""
        s, g, b = np.broadcast_arrays(
            _as_float(S_max, "S_max"), _as_float(G_max, "G_max"), _as_float(size, "size")
        )
        s = s.astype(np.int64)
        end = s + np.maximum(g.astype(np.int64) - 1, 0)
        sizes = b.astype(np.int64)
        out = np.zeros(s.shape)
        if out.size == 0:
            return out
        uniq, inv = np.unique(sizes.reshape(-1), return_inverse=True)
        flat_s, flat_e, flat = s.reshape(-1), end.reshape(-1), out.reshape(-1)
        for k, n in enumerate(uniq.tolist()):
            if n <= 0:
                continue
            at = inv == k
            table = self._cumulative(n, int(flat_e[at].max()))
            flat[at] = table[flat_e[at]] - table[flat_s[at]]
        return out

    def batch_decode_ms_by_size(
        self, S_max: ArrayLike, G_max: ArrayLike, sizes: ArrayLike
    ) -> np.ndarray:
        """Decode latency (ms) of batches with caps ``(S_max, G_max)`` at every batch size of
        ``sizes``: shape ``(len(sizes),) + S_max.shape``. The per-size cumulative tables are
        built for the call and not kept (a planner asks for a thousand sizes at once)."""
        from batchlab.steptime import StepBatch

        s, g = np.broadcast_arrays(_as_float(S_max, "S_max"), _as_float(G_max, "G_max"))
        b = _as_float(sizes, "sizes").reshape(-1).astype(np.int64)
        start = s.astype(np.int64).reshape(-1)
        end = start + np.maximum(g.astype(np.int64).reshape(-1) - 1, 0)
        out = np.zeros((b.size, start.size))
        if start.size == 0:
            return out.reshape(b.shape + s.shape)
        top = int(end.max())
        for k, n in enumerate(b.tolist()):
            if n <= 0:
                continue
            table = self._cum.get(n)
            if table is None or table.size <= top:
                first = StepBatch(0, 0.0, 0, 0, n, float(n))
                steps = np.asarray(self.step_time.decode_steps_ms(first, top), dtype=np.float64)
                table = np.concatenate([[0.0], np.cumsum(steps)])
            out[k] = table[end] - table[start]
        return out.reshape(b.shape + s.shape)

    def batch_decode_cost(self, S_max: ArrayLike, G_max: ArrayLike, size: ArrayLike) -> np.ndarray:
        """Decode cost of whole batches (GPU-ms): ``gpus ×`` :meth:`batch_decode_ms`."""
        return self.gpus * self.batch_decode_ms(S_max, G_max, size)

    def decode_ms(self, S_max: ArrayLike, G_max: ArrayLike) -> np.ndarray:
        """Decode latency of a batch of one (ms): a lower bound on any batch's."""
        return self.batch_decode_ms(S_max, G_max, 1)

    def decode_cost(self, S_max: ArrayLike, G_max: ArrayLike) -> np.ndarray:
        """The per-member floor (GPU-ms): each member's share of a batch of
        :data:`MEMBER_FLOOR_BATCH` at these caps, a lower bound on its share in any batch."""
        b = self.member_floor_batch
        return self.batch_decode_cost(S_max, G_max, b) / b

    def compile_cost(self, s: ArrayLike) -> np.ndarray:
        """Compile cost of a shape (GPU-ms): ``gpus × compile_ms``, the devices idle meanwhile."""
        return self.gpus * self.coefficients.compile_ms + 0.0 * _as_float(s, "s")

    def with_coefficients(self, *, name: str | None = None, **changes: object) -> CostModel:
        """A copy with ``granularity``, ``padded``, ``batch_ms`` (the overhead) or
        ``compile_ms`` changed; the step-time model is kept."""
        allowed = {"granularity", "padded", "batch_ms", "compile_ms"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise InputError(
                f"cannot change {unknown} of a step-time cost model; allowed: {sorted(allowed)}",
                field=unknown[0],
            )
        c = self.coefficients
        return StepTimeCostModel.from_step_time(
            self.step_time,
            name=name if name is not None else (self.name if not changes else f"{self.name}*"),
            overhead_ms=changes.get("batch_ms", c.batch_ms),
            compile_ms=changes.get("compile_ms", c.compile_ms),
            granularity=changes.get("granularity", c.granularity),
            padded=changes.get("padded", c.padded),
            gpus=self.gpus,
        )


_POLY = ("prefill_", "decode_")


def hardware_cost_model(
    spec: str,
    *,
    calibrated: bool = True,
    overhead_ms: float = 0.0,
    compile_ms: float = 0.0,
    granularity: int = 64,
    padded: bool = False,
) -> StepTimeCostModel:
    """The cost model of ``"<model>@<gpu>"`` (e.g. ``"llama-3-8b@h100-sxm"``,
    ``"llama-2-70b@4xh100-sxm"``): :class:`StepTimeCostModel` on the calibrated roofline of a
    model preset on a GPU preset. Suffixes (or the keywords): ``:ideal`` the data-sheet roofline
    (``calibrated=False``), ``:padded`` prefill and decode at the declared shape (as
    ``padded-graph``). ``Nx<gpu>`` counts N GPUs in the cost. InputError naming the presets
    otherwise."""
    from batchlab.roofline import MODELS, RooflineStepTime, get_gpu, get_model

    text = str(spec).strip().lower()
    base, *flags = text.split(":")
    for flag in flags:
        if flag == "ideal":
            calibrated = False
        elif flag == "padded":
            padded = True
        else:
            raise InputError(
                f"unknown suffix :{flag} in {spec!r}; use :ideal or :padded", field="cost_model"
            )
    model, sep, gpu = base.partition("@")
    if not sep or not model or not gpu:
        raise InputError(
            f"expected <model>@<gpu> (e.g. llama-3-8b@h100-sxm), got {spec!r}; models: "
            f"{', '.join(MODELS)}",
            field="cost_model",
        )
    try:
        device = get_gpu(gpu)
        step_time = RooflineStepTime(get_model(model), device, calibrated=calibrated)
    except InputError as err:
        raise InputError(err.message, field="cost_model") from None
    n = 1
    head, x, _ = gpu.partition("x")
    if x and head.isdigit():
        n = int(head)
    name = base + ("" if calibrated else ":ideal") + (":padded" if padded else "")
    return StepTimeCostModel.from_step_time(
        step_time,
        name=name,
        overhead_ms=overhead_ms,
        compile_ms=compile_ms,
        granularity=granularity,
        padded=padded,
        gpus=n,
    )
