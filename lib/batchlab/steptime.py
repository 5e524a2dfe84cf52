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

Models here: :class:`LinearStepTime` (hand-worked examples) and :class:`TableStepTime` (a
measured table); the roofline of a model on a GPU is
:class:`batchlab.roofline.RooflineStepTime`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchlab.checks import check_frame, check_scalar
from batchlab.errors import InputError

__all__ = [
    "LinearStepTime",
    "StepBatch",
    "StepTime",
    "StepTimeModel",
    "TableStepTime",
    "context_lens",
]


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


class TableStepTime(StepTimeModel):
    """Step times from a measured table (the batch-size measurement chapter's CSV).

    Columns used: ``batch_size``, ``decode_ms_per_step`` and ``prefill_ms_per_token``; optional
    ``prompt_len`` (the measured prompt length) and ``oom`` (rows marked are dropped, as are rows
    with NaN figures). Both figures are interpolated linearly in the batch size and extrapolated
    beyond the measured range with the slope of the nearest segment (never below 0). A step
    costs ``decode_ms_per_step(decode_seqs) + prefill_tokens · prefill_ms_per_token(b)``, where
    ``b = prefill_tokens / prompt_len`` (the prefill's size in measured prompts, clamped to the
    measured batch sizes; the smallest measured batch size when the table has no prompt length).
    The table is measured at one context length: context growth is not modelled. Every part is
    measured time (``other_ms``; ``parts``: ``decode`` and ``prefill``).
    """

    def __init__(self, table: pd.DataFrame, *, prompt_len: int | None = None) -> None:
        columns = ("batch_size", "decode_ms_per_step", "prefill_ms_per_token")
        df = check_frame(table, columns, what="step-time table")
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
        prompt = check_scalar(
            prompt_len,
            "prompt_len",
            float,
            min_val=0,
            include_boundaries="neither",
            allow_none=True,
        )
        self.prompt_len = prompt
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

    def prefill_ms(self, prefill_tokens: int) -> float:
        """Interpolated time (ms) of prefilling ``prefill_tokens`` tokens."""
        p = prefill_tokens
        if self.prompt_len is None:
            b = self.batch_sizes[0]
        else:
            b = min(max(p / self.prompt_len, self.batch_sizes[0]), self.batch_sizes[-1])
        return p * float(self._interp(b, self.prefill_ms_per_token))

    def step(self, batch: StepBatch) -> StepTime:
        """The interpolated decode and prefill figures (measured time)."""
        decode = self.decode_ms_at(batch.decode_seqs) if batch.decode_seqs else 0.0
        prefill = self.prefill_ms(batch.prefill_tokens) if batch.prefill_tokens else 0.0
        return StepTime(other_ms=decode + prefill, parts={"decode": decode, "prefill": prefill})

    def duration_ms(self, batch: StepBatch) -> float:
        """Interpolated duration of one step (ms)."""
        total = 0.0
        if batch.decode_seqs:
            total += self.decode_ms_at(batch.decode_seqs)
        if batch.prefill_tokens:
            total += self.prefill_ms(batch.prefill_tokens)
        return total

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Constant: the table has no context term."""
        if batch.decode_seqs == 0:
            return np.zeros(int(n_steps))
        return np.full(int(n_steps), self.decode_ms_at(batch.decode_seqs))
