"""Step-time models: how long one engine step takes, in named parts (ms).

A serving engine runs *steps*: each computes some prompt tokens (prefills, possibly chunks of
several sequences) and one new token for each decoding sequence. :class:`StepBatch` describes
that work in token counts, and a :class:`StepTimeModel` turns it into a :class:`StepTime`, the
step's duration split into named parts, in the spirit of Vidur's execution-time parts:

* ``compute_ms``: work bound by arithmetic (FLOPs over the FLOP rate);
* ``memory_ms``: work bound by memory traffic (bytes over the bandwidth);
* ``overhead_ms``: a fixed time per step (kernel launches, scheduling);
* ``other_ms``: time a model does not attribute to a bound (a measured table's figures);
* ``total_ms``: their sum, the step's duration.

A model of your own subclasses :class:`StepTimeModel` and implements :meth:`~StepTimeModel.step`;
everything else has a working default. The simulator calls only public methods:
:meth:`~StepTimeModel.duration_ms` (one step, a float) and
:meth:`~StepTimeModel.decode_steps_ms` (a run of identical decode steps, an array); override
them with closed forms for speed, as the models here do.

Models here: :class:`LinearStepTime` (hand-worked examples), :class:`TableStepTime` (a
measured table, interpolated in batch size and context) and :class:`FittedStepTime` (named
parts fitted on measured steps, :func:`batchlab.measure.fit_step_time`); the roofline of a
model on a GPU, calibrated on real kernels, is :class:`batchlab.roofline.RooflineStepTime`.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.checks import check_frame, check_scalar
from batchlab.errors import InputError

__all__ = [
    "FitResidual",
    "FittedStepTime",
    "LinearStepTime",
    "StepBatch",
    "StepTime",
    "StepTimeModel",
    "TableStepTime",
    "WAKE_AFTER_IDLE_MS",
    "context_lens",
    "wake_ms_of",
]

WAKE_AFTER_IDLE_MS = 5.0
"""An engine that sat idle at least this long (ms) before a step pays its step-time model's
``wake_ms`` on that step (:class:`FittedStepTime`); shorter gaps are the engine loop's own
time between back-to-back steps."""


def wake_ms_of(step_time: object) -> float:
    """The extra time (ms) ``step_time`` gives the first step after the engine sat idle
    (``FittedStepTime.wake_ms``; 0 for a model without one)."""
    return float(getattr(step_time, "wake_ms", 0.0) or 0.0)


def context_lens(values: ArrayLike) -> np.ndarray:
    """Decode context lengths as a float64 vector (tokens, each >= 1); InputError otherwise."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 1):
        raise InputError("context lengths must be finite and >= 1 token", field="context_lens")
    return arr


@dataclass(frozen=True, slots=True)
class StepBatch:
    """The work of one engine step, in tokens.

    * ``prefill_tokens``: prompt tokens computed in the step (all chunks of all sequences,
      padding included);
    * ``prefill_pairs``: the causal (query, key) attention pairs of those tokens (a chunk of
      ``n`` tokens after ``c`` cached ones has ``n·c + n(n+1)/2``);
    * ``prefill_cached``: tokens already in the KV cache that the chunks attend to (read);
    * ``prefill_seqs``: sequences whose prefill ends in this step: each emits its first token
      (one row of the LM head);
    * ``decode_seqs``: sequences decoding one token each;
    * ``decode_context``: the sum of their context lengths (the new token included);
    * ``decode_context_lens``: each decoding sequence's context length, filled by the engine
      only for a model whose ``needs_context_lens`` is True (None otherwise).

    Build one from arrays with :meth:`of`; the engine builds them directly.
    """

    prefill_tokens: int = 0
    prefill_pairs: float = 0.0
    prefill_cached: int = 0
    prefill_seqs: int = 0
    decode_seqs: int = 0
    decode_context: float = 0.0
    decode_context_lens: np.ndarray | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        prefill_tokens: int = 0,
        decode_context_lens: ArrayLike = (),
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
        prefill_seqs: int | None = None,
    ) -> StepBatch:
        """A checked StepBatch from a prefill size and the decoders' context lengths.

        Defaults describe one sequence prefilled from position 0: ``prefill_pairs =
        n(n+1)/2`` and ``prefill_seqs = 1`` (0 without prefill tokens).
        """
        p = check_scalar(prefill_tokens, "prefill_tokens", int, min_val=0)
        c = check_scalar(prefill_cached, "prefill_cached", int, min_val=0)
        ctx = context_lens(decode_context_lens)
        if prefill_pairs is None:
            pairs = p * c + p * (p + 1) / 2.0
        else:
            pairs = check_scalar(prefill_pairs, "prefill_pairs", float, min_val=0)
        if prefill_seqs is None:
            seqs = 1 if p else 0
        else:
            seqs = check_scalar(prefill_seqs, "prefill_seqs", int, min_val=0, max_val=p)
        return cls(p, pairs, c, seqs, int(ctx.size), float(ctx.sum()), ctx)

    @property
    def empty(self) -> bool:
        """True when the step computes nothing."""
        return self.prefill_tokens == 0 and self.decode_seqs == 0

    def advanced(self, n_steps: int) -> StepBatch:
        """The decode part of this step ``n_steps`` steps later (every context that many
        tokens longer, no prefill)."""
        lens = self.decode_context_lens
        return StepBatch(
            decode_seqs=self.decode_seqs,
            decode_context=self.decode_context + self.decode_seqs * n_steps,
            decode_context_lens=None if lens is None else lens + n_steps,
        )


@dataclass(frozen=True)
class StepTime:
    """The duration of one step (ms) in named parts; ``total_ms`` is their sum.

    ``compute_ms``: work bound by arithmetic; ``memory_ms``: work bound by memory traffic;
    ``overhead_ms``: fixed per-step time; ``other_ms``: time not attributed to a bound (a
    measured figure). ``parts`` optionally splits the same total by operation (for example
    ``prefill``/``decode`` of a table, or ``dense``/``attention``/``lm_head``/``overhead`` of
    a calibrated roofline); empty when the model does not split its time further.
    """

    compute_ms: float = 0.0
    memory_ms: float = 0.0
    overhead_ms: float = 0.0
    other_ms: float = 0.0
    parts: Mapping[str, float] = field(default_factory=dict, compare=False)

    @property
    def total_ms(self) -> float:
        """compute + memory + overhead + other (ms)."""
        return self.compute_ms + self.memory_ms + self.overhead_ms + self.other_ms

    @property
    def bound(self) -> str:
        """The largest part: ``"compute"``, ``"memory"``, ``"overhead"`` or ``"other"``."""
        named = {
            "compute": self.compute_ms,
            "memory": self.memory_ms,
            "overhead": self.overhead_ms,
            "other": self.other_ms,
        }
        return max(named, key=named.__getitem__)

    @classmethod
    def by_operation(
        cls,
        dense_ms: float,
        attention_ms: float,
        lm_head_ms: float,
        overhead_ms: float,
        *,
        compute_ms: float = 0.0,
        memory_ms: float = 0.0,
        other_ms: float = 0.0,
    ) -> StepTime:
        """A transformer step's time with ``parts`` by operation: ``dense`` (the layers'
        matrix products and elementwise work), ``attention``, ``lm_head`` and ``overhead``
        (ms); the same total split by bound in ``compute_ms`` / ``memory_ms`` / ``other_ms``
        beside the fixed ``overhead_ms``."""
        return cls(
            compute_ms=compute_ms,
            memory_ms=memory_ms,
            overhead_ms=overhead_ms,
            other_ms=other_ms,
            parts={
                "dense": dense_ms,
                "attention": attention_ms,
                "lm_head": lm_head_ms,
                "overhead": overhead_ms,
            },
        )

    def as_dict(self) -> dict[str, float]:
        """The four parts and ``total_ms`` as a flat dict (ms), then ``parts`` prefixed
        ``part_``."""
        out = {
            "compute_ms": self.compute_ms,
            "memory_ms": self.memory_ms,
            "overhead_ms": self.overhead_ms,
            "other_ms": self.other_ms,
            "total_ms": self.total_ms,
        }
        out.update({f"part_{k}_ms": float(v) for k, v in self.parts.items()})
        return out


class StepTimeModel(abc.ABC):
    """How long one engine step takes: the simulator's only view of the hardware.

    Subclasses implement :meth:`step`. :meth:`duration_ms` and :meth:`decode_steps_ms` are
    what the simulator calls; their defaults go through :meth:`step`. Set the class attribute
    ``needs_context_lens = True`` when the time depends on each decoding sequence's context
    length and not only on their number and sum: the simulator then fills
    ``StepBatch.decode_context_lens`` (at some cost in speed).
    """

    needs_context_lens: ClassVar[bool] = False

    @abc.abstractmethod
    def step(self, batch: StepBatch) -> StepTime:
        """The duration of one step, in named parts (an empty step takes 0 ms)."""

    def duration_ms(self, batch: StepBatch) -> float:
        """The duration of one step in ms: ``step(batch).total_ms``."""
        return self.step(batch).total_ms

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Durations (ms) of ``n_steps`` consecutive decode-only steps of ``batch``'s decoding
        sequences: at step ``j`` (0-based) every context is ``j`` tokens longer
        (:meth:`StepBatch.advanced`). The prefill part of ``batch`` is ignored."""
        k = check_scalar(n_steps, "n_steps", int, min_val=0)
        return np.array([self.duration_ms(batch.advanced(j)) for j in range(k)], dtype=np.float64)

    # conveniences for hand-worked examples -----------------------------------------------------

    def step_ms(
        self,
        prefill_tokens: int,
        decode_context_lens: ArrayLike = (),
        *,
        prefill_pairs: float | None = None,
        prefill_cached: int = 0,
        prefill_seqs: int | None = None,
    ) -> float:
        """:meth:`duration_ms` of :meth:`StepBatch.of` these arguments (ms)."""
        return self.duration_ms(
            StepBatch.of(
                prefill_tokens,
                decode_context_lens,
                prefill_pairs=prefill_pairs,
                prefill_cached=prefill_cached,
                prefill_seqs=prefill_seqs,
            )
        )

    def decode_run_ms(self, decode_context_lens: ArrayLike, n_steps: int) -> np.ndarray:
        """:meth:`decode_steps_ms` of the sequences with these context lengths (ms)."""
        return self.decode_steps_ms(StepBatch.of(0, decode_context_lens), n_steps)


class LinearStepTime(StepTimeModel):
    """A linear step-time model, for hand-worked examples and tests.

    ``per_step_ms + per_token_ms · prefill_tokens + per_seq_ms · decode_seqs + per_context_ms ·
    decode_context`` (all in ms), and 0.0 for an empty step. Parts: ``overhead_ms`` is
    ``per_step_ms``, the rest is ``other_ms`` (``parts``: ``prefill`` and ``decode``).
    """

    def __init__(
        self,
        per_step_ms: float,
        per_token_ms: float = 0.0,
        per_seq_ms: float = 0.0,
        per_context_ms: float = 0.0,
    ) -> None:
        self.per_step_ms = check_scalar(per_step_ms, "per_step_ms", float, min_val=0, unit="ms")
        self.per_token_ms = check_scalar(per_token_ms, "per_token_ms", float, min_val=0, unit="ms")
        self.per_seq_ms = check_scalar(per_seq_ms, "per_seq_ms", float, min_val=0, unit="ms")
        self.per_context_ms = check_scalar(
            per_context_ms, "per_context_ms", float, min_val=0, unit="ms"
        )

    def __repr__(self) -> str:
        return (
            f"LinearStepTime(per_step_ms={self.per_step_ms}, per_token_ms={self.per_token_ms}, "
            f"per_seq_ms={self.per_seq_ms}, per_context_ms={self.per_context_ms})"
        )

    def step(self, batch: StepBatch) -> StepTime:
        """The linear formula, split into its terms."""
        if batch.empty:
            return StepTime()
        prefill = self.per_token_ms * batch.prefill_tokens
        decode = self.per_seq_ms * batch.decode_seqs + self.per_context_ms * batch.decode_context
        return StepTime(
            overhead_ms=self.per_step_ms,
            other_ms=prefill + decode,
            parts={"overhead": self.per_step_ms, "prefill": prefill, "decode": decode},
        )

    def duration_ms(self, batch: StepBatch) -> float:
        """The linear formula (ms)."""
        if batch.prefill_tokens == 0 and batch.decode_seqs == 0:
            return 0.0
        return (
            self.per_step_ms
            + self.per_token_ms * batch.prefill_tokens
            + self.per_seq_ms * batch.decode_seqs
            + self.per_context_ms * batch.decode_context
        )

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Vectorized over the steps."""
        n = batch.decode_seqs
        if n == 0:
            return np.zeros(int(n_steps))
        s = batch.decode_context + n * np.arange(int(n_steps), dtype=np.float64)
        return self.per_step_ms + self.per_seq_ms * n + self.per_context_ms * s


def _interp_extrap(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``ys`` over sorted ``xs``, extrapolated beyond both ends with the
    slope of the nearest segment (a constant for one point)."""
    x = np.asarray(x, dtype=np.float64)
    if xs.size == 1:
        return np.broadcast_to(ys[0], x.shape).astype(np.float64)
    out = np.interp(x, xs, ys)
    lo, hi = x < xs[0], x > xs[-1]
    if lo.any():
        out = np.where(lo, ys[0] + (ys[1] - ys[0]) / (xs[1] - xs[0]) * (x - xs[0]), out)
    if hi.any():
        out = np.where(hi, ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (x - xs[-1]), out)
    return out


#: the tables (by repr) already warned about in this process (one warning per table).
_CONTEXT_WARNED: set[str] = set()


class TableStepTime(StepTimeModel):
    """Step times from a measured table, interpolated in batch size and context.

    Columns used: ``batch_size``, ``decode_ms_per_step`` and ``prefill_ms_per_token``; optional
    ``context_len`` (the decoders' mean context during the measured decode steps, tokens),
    ``prompt_len`` and ``gen_len`` (without ``context_len`` the context is ``prompt_len +
    gen_len / 2``, the mean over the decode steps of a batch-size measurement) and ``oom`` (rows
    marked are dropped, as are rows with NaN figures). Several rows at one (batch size,
    context): their mean.

    A decode step of ``n`` sequences at mean context ``c`` (``decode_context / n``) costs the
    measured decode time interpolated linearly in the batch size at each measured context, then
    linearly in the context (both extrapolated with the slope of the nearest segment, never
    below 0). A prefill of ``p`` tokens costs ``p · prefill_ms_per_token(b)`` with ``b = p /
    prompt_len`` (the prefill's size in measured prompts, clamped to the measured batch sizes;
    the smallest batch size without a prompt length). Every part is measured time
    (``other_ms``; ``parts``: ``decode`` and ``prefill``).

    A table measured at a single context does not model context growth: its repr says so, and
    a run of decode steps reaching more than twice the measured context warns (once per model,
    with a message that names the table, so Python shows it once per table and call site).
    """

    def __init__(self, table: pd.DataFrame, *, prompt_len: int | None = None) -> None:
        columns = ("batch_size", "decode_ms_per_step", "prefill_ms_per_token")
        df = check_frame(table, columns, what="step-time table")
        if "oom" in df.columns:
            df = df[~df["oom"].fillna(False).astype(bool)]

        def num(name: str) -> np.ndarray:
            if name not in df.columns:
                return np.full(len(df), np.nan)
            return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)

        b, dec, pre = num("batch_size"), num("decode_ms_per_step"), num("prefill_ms_per_token")
        ctx = num("context_len")
        if "context_len" not in df.columns:
            ctx = num("prompt_len") + num("gen_len") / 2.0
        ok = (
            np.isfinite(b) & np.isfinite(dec) & np.isfinite(pre) & (b > 0) & (dec >= 0) & (pre >= 0)
        )
        if not ok.any():
            raise InputError(
                "no usable row (batch_size > 0 with finite decode_ms_per_step and "
                "prefill_ms_per_token)",
                field="batch_size",
            )
        self.context_known = bool(np.all(np.isfinite(ctx[ok]) & (ctx[ok] > 0)))
        ctx = np.where(self.context_known, ctx, 0.0)
        b, dec, pre, ctx = b[ok], dec[ok], pre[ok], ctx[ok]
        # prefill per token by batch size (mean over contexts)
        self.batch_sizes, inv = np.unique(b, return_inverse=True)
        counts = np.bincount(inv)
        self.prefill_ms_per_token = np.bincount(inv, weights=pre) / counts
        # decode by (context, batch size): one curve in batch size per measured context
        self.context_lens = np.unique(ctx)
        self._curves: list[tuple[np.ndarray, np.ndarray]] = []
        for c in self.context_lens:
            at = ctx == c
            sizes, k = np.unique(b[at], return_inverse=True)
            self._curves.append((sizes, np.bincount(k, weights=dec[at]) / np.bincount(k)))
        # the decode figure at each batch size, averaged over the contexts (the old 1-D view)
        self.decode_ms = np.array([float(self._decode(x, None)) for x in self.batch_sizes])
        if prompt_len is None and "prompt_len" in df.columns:
            pl = num("prompt_len")[ok]
            pl = pl[np.isfinite(pl) & (pl > 0)]
            prompt_len = float(np.median(pl)) if pl.size else None
        self.prompt_len = check_scalar(
            prompt_len,
            "prompt_len",
            float,
            min_val=0,
            include_boundaries="neither",
            allow_none=True,
        )
        self._cache: dict[tuple[int, float], float] = {}
        self._warned = False

    @property
    def models_context(self) -> bool:
        """True when the table holds decode times at two or more contexts."""
        return self.context_lens.size >= 2

    def __repr__(self) -> str:
        sizes = ", ".join(f"{x:g}" for x in self.batch_sizes)
        if self.models_context:
            ctx = ", ".join(f"{x:g}" for x in self.context_lens)
            context = f"context_lens=[{ctx}]"
        elif self.context_known:
            context = f"measured at context {self.context_lens[0]:g}: context growth not modelled"
        else:
            context = "measured context unknown: context growth not modelled"
        return f"TableStepTime(batch_sizes=[{sizes}], prompt_len={self.prompt_len}, {context})"

    def _decode(self, batch_size: float, context: float | None) -> np.ndarray:
        """Decode step time (ms) at a batch size and a mean context (None: the mean over the
        measured contexts)."""
        values = np.array([float(_interp_extrap(batch_size, xs, ys)) for xs, ys in self._curves])
        if context is None or self.context_lens.size == 1:
            out = values.mean() if context is None else values[0]
        else:
            out = _interp_extrap(context, self.context_lens, values)
        return np.maximum(out, 0.0)

    def decode_ms_at(self, batch_size: float, context: float | None = None) -> float:
        """Interpolated decode step time (ms) at a batch size and a mean context per sequence
        (tokens; ignored when the table has one context; None: the mean over the contexts)."""
        key = (batch_size, context if self.models_context else None)
        hit = self._cache.get(key)
        if hit is None:
            hit = float(self._decode(float(batch_size), key[1]))
            if len(self._cache) < 1 << 16:
                self._cache[key] = hit
        return hit

    def prefill_ms(self, prefill_tokens: int) -> float:
        """Interpolated time (ms) of prefilling ``prefill_tokens`` tokens."""
        p = prefill_tokens
        if self.prompt_len is None:
            b = self.batch_sizes[0]
        else:
            b = min(max(p / self.prompt_len, self.batch_sizes[0]), self.batch_sizes[-1])
        per_token = _interp_extrap(b, self.batch_sizes, self.prefill_ms_per_token)
        return p * max(float(per_token), 0.0)

    def _mean_context(self, batch: StepBatch) -> float | None:
        if not self.models_context:
            return None
        return round(batch.decode_context / batch.decode_seqs, 1)

    def step(self, batch: StepBatch) -> StepTime:
        """The interpolated decode and prefill figures (measured time)."""
        decode = 0.0
        if batch.decode_seqs:
            decode = self.decode_ms_at(batch.decode_seqs, self._mean_context(batch))
        prefill = self.prefill_ms(batch.prefill_tokens) if batch.prefill_tokens else 0.0
        return StepTime(other_ms=decode + prefill, parts={"decode": decode, "prefill": prefill})

    def duration_ms(self, batch: StepBatch) -> float:
        """Interpolated duration of one step (ms)."""
        total = 0.0
        if batch.decode_seqs:
            total += self.decode_ms_at(batch.decode_seqs, self._mean_context(batch))
        if batch.prefill_tokens:
            total += self.prefill_ms(batch.prefill_tokens)
        return total

    def _first_warning(self) -> bool:
        """True once per table (its repr) in a process: a table given as a DataFrame becomes a
        new TableStepTime in every run of a sweep, and one warning says it."""
        key = repr(self)
        if self._warned or key in _CONTEXT_WARNED:
            return False
        self._warned = True
        _CONTEXT_WARNED.add(key)
        return True

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Consecutive decode steps: interpolated in the growing context when the table has
        several contexts; constant otherwise (warning once when the run's context passes twice
        the measured one)."""
        n = batch.decode_seqs
        k = int(n_steps)
        if n == 0:
            return np.zeros(k)
        mean = batch.decode_context / n
        if not self.models_context:
            measured = float(self.context_lens[0]) if self.context_known else 0.0
            if measured > 0 and mean + k - 1 > 2 * measured and self._first_warning():
                warnings.warn(
                    f"{self!r} is used for decode contexts beyond twice the {measured:,.0f} "
                    "tokens it was measured at: its step times do not grow with the context "
                    "(measure several contexts: `batchlab measure --engine continuous`)",
                    stacklevel=2,
                )
            return np.full(k, self.decode_ms_at(n))
        contexts = mean + np.arange(k, dtype=np.float64)
        values = np.array([float(_interp_extrap(n, xs, ys)) for xs, ys in self._curves])
        return np.maximum(_interp_extrap(contexts, self.context_lens, values), 0.0)


class FittedStepTime(StepTimeModel):
    """A step-time model fitted on measured steps (:func:`batchlab.measure.fit_step_time`), in
    named parts (ms)::

        overhead  = overhead_ms                                   (per step)
        dense     = dense_ms_per_token · (prefill_tokens + decode_seqs)
        attention = attention_ms_per_kv_token · kv_tokens
                  + attention_ms_per_pair · (prefill_pairs + decode_context)
                  + attention_ms_per_masked_pair · (prefill_tokens + decode_seqs) · kv_tokens
        lm_head   = lm_head_ms_per_row · (prefill_seqs + decode_seqs)

    with ``kv_tokens = decode_context + prefill_cached + prefill_tokens`` (the KV tokens the step
    reads and writes), and 0 for an empty step. ``attention_ms_per_pair`` prices the causal
    (query, key) pairs of each sequence alone, what a variable-length kernel computes;
    ``attention_ms_per_masked_pair`` prices every query token of the step against every KV token
    of the step, what an engine pays that runs one attention over the whole step with a
    block-diagonal mask (transformers' continuous batching with SDPA or eager attention, the
    path it takes on a CPU: its cost grows with the product of the step's tokens and its
    context, so a prompt chunk sharing a step with many decodes costs more than the two apart).
    The coefficients are non-negative; ``residual`` describes the fit (:class:`FitResidual`)
    and ``source`` what it was fitted on. Measured time is not split into compute and memory:
    everything but the overhead is ``other_ms``.

    ``wake_ms`` (not one of the per-step :attr:`COEFFICIENTS`) is added to the first step after
    the engine sat idle for :data:`WAKE_AFTER_IDLE_MS` or more (a request arriving at an idle
    engine: its caches and clocks have cooled); the simulator adds it there, and
    :func:`batchlab.measure.fit_step_time` fits it on a measurement's served segments.
    """

    COEFFICIENTS: ClassVar[tuple[str, ...]] = (
        "overhead_ms",
        "dense_ms_per_token",
        "attention_ms_per_kv_token",
        "attention_ms_per_pair",
        "lm_head_ms_per_row",
        "attention_ms_per_masked_pair",
    )

    def __init__(
        self,
        overhead_ms: float,
        dense_ms_per_token: float = 0.0,
        attention_ms_per_kv_token: float = 0.0,
        attention_ms_per_pair: float = 0.0,
        lm_head_ms_per_row: float = 0.0,
        attention_ms_per_masked_pair: float = 0.0,
        *,
        wake_ms: float = 0.0,
        residual: FitResidual | None = None,
        source: str = "",
    ) -> None:
        self.wake_ms = check_scalar(wake_ms, "wake_ms", float, min_val=0, unit="ms")
        values = (
            overhead_ms,
            dense_ms_per_token,
            attention_ms_per_kv_token,
            attention_ms_per_pair,
            lm_head_ms_per_row,
            attention_ms_per_masked_pair,
        )
        for name, value in zip(self.COEFFICIENTS, values, strict=True):
            setattr(self, name, check_scalar(value, name, float, min_val=0, unit="ms"))
        self.residual = residual
        self.source = str(source)

    def coefficients(self) -> dict[str, float]:
        """The fitted coefficients by name (ms, ms per token / pair / row)."""
        return {name: getattr(self, name) for name in self.COEFFICIENTS}

    def __repr__(self) -> str:
        coef = ", ".join(f"{k}={v:.4g}" for k, v in self.coefficients().items())
        if self.wake_ms:
            coef += f", wake_ms={self.wake_ms:.4g}"
        fit = "" if self.residual is None else f", residual={self.residual}"
        return f"FittedStepTime({coef}{fit})"

    def step(self, batch: StepBatch) -> StepTime:
        """The fitted parts."""
        if batch.empty:
            return StepTime()
        p, n, s = batch.prefill_tokens, batch.decode_seqs, batch.decode_context
        dense = self.dense_ms_per_token * (p + n)
        kv = s + ((batch.prefill_cached + p) if p else 0)
        attention = (
            self.attention_ms_per_kv_token * kv
            + self.attention_ms_per_pair * (batch.prefill_pairs + s)
            + self.attention_ms_per_masked_pair * (p + n) * kv
        )
        head = self.lm_head_ms_per_row * (batch.prefill_seqs + n)
        return StepTime.by_operation(
            dense, attention, head, self.overhead_ms, other_ms=dense + attention + head
        )

    def duration_ms(self, batch: StepBatch) -> float:
        """The fitted duration of one step (ms)."""
        p, n = batch.prefill_tokens, batch.decode_seqs
        if p == 0 and n == 0:
            return 0.0
        s = batch.decode_context
        t = (
            self.overhead_ms
            + self.dense_ms_per_token * (p + n)
            + self.attention_ms_per_kv_token * s
            + self.attention_ms_per_pair * s
            + self.lm_head_ms_per_row * n
        )
        if p:
            t += (
                self.attention_ms_per_kv_token * (batch.prefill_cached + p)
                + self.attention_ms_per_pair * batch.prefill_pairs
                + self.lm_head_ms_per_row * batch.prefill_seqs
            )
        if self.attention_ms_per_masked_pair:
            kv = s + ((batch.prefill_cached + p) if p else 0)
            t += self.attention_ms_per_masked_pair * (p + n) * kv
        return t

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Vectorized over the steps (linear in the growing context)."""
        n = batch.decode_seqs
        if n == 0:
            return np.zeros(int(n_steps))
        s = batch.decode_context + n * np.arange(int(n_steps), dtype=np.float64)
        fixed = self.overhead_ms + (self.dense_ms_per_token + self.lm_head_ms_per_row) * n
        per_kv = (
            self.attention_ms_per_kv_token
            + self.attention_ms_per_pair
            + self.attention_ms_per_masked_pair * n
        )
        return fixed + per_kv * s


@dataclass(frozen=True)
class FitResidual:
    """How well a fitted step-time model matches the steps it was fitted on: ``rms_ms``
    (root-mean-square error, ms), ``median_rel`` and ``p90_rel`` (median and 90th percentile of
    |predicted / measured − 1|), ``n_steps`` (steps used), ``n_groups`` (distinct step
    compositions, each fitted at its mean time) and ``total_ratio`` (predicted / measured
    total time of those steps: what a simulation adds up; 1 when the fit neither gains nor
    loses time; NaN when not known)."""

    rms_ms: float
    median_rel: float
    p90_rel: float
    n_steps: int
    n_groups: int
    total_ratio: float = math.nan

    def __str__(self) -> str:
        total = "" if math.isnan(self.total_ratio) else f", total {self.total_ratio:.3f}x"
        return (
            f"rms {self.rms_ms:.3g} ms, median {self.median_rel:.1%}, p90 {self.p90_rel:.1%}"
            f"{total} over {self.n_steps} steps"
        )
