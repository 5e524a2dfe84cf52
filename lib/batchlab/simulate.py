"""Discrete-event simulation of LLM serving: requests arrive over time, a policy batches them.

One server (one model replica) runs one *step* at a time; a step's duration comes from a
:class:`~batchlab.roofline.StepTimeModel` (the roofline of a model on a GPU, a measured table,
or a :class:`~batchlab.roofline.LinearStepTime` for hand-worked examples). Times are in ms.

Conventions (the same for every policy):

* A prefill step emits each sequence's first output token (the logits of its last prompt
  token), so a request of ``gen_len`` tokens needs its prefill and ``gen_len − 1`` decode steps.
  A decode step for a sequence with ``c`` tokens in its KV cache runs at context length ``c + 1``.
* ``start_ms``: the request is first scheduled (joins a batch, or is admitted);
  ``queue_ms = start_ms − arrival_ms``; ``first_token_ms``: end of the step emitting its first
  token; ``last_token_ms``: end of the step emitting its last token; ``finish_ms``: the response
  is complete and the request leaves the server. ``ttft_ms = first_token_ms − arrival_ms``,
  ``tpot_ms = (last_token_ms − first_token_ms) / (gen_len − 1)`` (NaN for one token),
  ``latency_ms = finish_ms − arrival_ms``.
* Padded policies (``static``, ``dynamic``, ``adaptive``) run a batch as one prefill of
  ``batch size × longest prompt`` tokens and ``G_max − 1`` decode steps of the whole batch at
  context ``P_max + j``; every request of the batch finishes at the batch's end (the batch holds
  its slot until its longest request is done). They reserve ``B · ⌈(P_max + G_max − 1) /
  block_size⌉`` KV blocks (the padded cache at its largest) and cut a batch that would not fit.
  They use the true ``gen_len`` (as if each request's ``max_new_tokens`` were exact).
* ``continuous`` schedules per iteration (Orca, vLLM): see :class:`ContinuousPolicy`.
* Priorities: an optional ``priority`` column, ``"high"``/``"normal"``/``"low"`` or integers
  (smaller is served first); the waiting queue is ordered by (priority, arrival), first come
  first served within a class, without skipping (a request that does not fit blocks those behind).
* Arrivals: the table's ``arrival_s`` (trace replay), or ``rate=`` (Poisson, or gamma
  inter-arrivals with coefficient of variation ``burstiness``, drawn with ``seed``, the first
  request at 0), or ``concurrency=N`` (closed loop: N clients each send the next request of the
  table, in row order, ``think_time_ms`` after their previous one finished).

Speed: per-step work is vectorized over the running sequences, and the continuous policy runs
many identical decode steps at once (up to the next completion, arrival that could be admitted,
or KV-cache exhaustion), with their durations from one vectorized call.

Load: :func:`load_sweep` steps the open-loop rate and/or the closed-loop concurrency up and
summarizes each level; :func:`find_knee` locates where latency starts to degrade (by default the
largest load before p99 latency exceeds ``factor ×`` its lowest-load value).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from batchlab.errors import InputError
from batchlab.roofline import (
    DeviceSpec,
    LinearStepTime,
    ModelSpec,
    RooflineStepTime,
    StepTimeModel,
    TableStepTime,
    get_gpu,
    get_model,
    max_kv_tokens,
)
from batchlab.workload import arrival_times, validate_requests

__all__ = [
    "POLICIES",
    "Batch",
    "ContinuousPolicy",
    "DynamicPolicy",
    "AdaptivePolicy",
    "LinearStepTime",
    "Policy",
    "SimState",
    "SimulationResult",
    "StaticPolicy",
    "draw_arrivals",
    "find_knee",
    "load_sweep",
    "make_policy",
    "nearest_rank",
    "register_policy",
    "simulate",
]

PRIORITY_NAMES = {"high": 0, "normal": 1, "low": 2}
DEFAULT_BLOCK_SIZE = 16
_EMPTY = np.zeros(0, dtype=np.float64)
_MAX_RUN = 1 << 16  # longest run of decode steps simulated at once (a row of the step table)
_INF = math.inf
_NEVER = np.iinfo(np.int64).max  # decode tick of a free slot

STEP_COLUMNS = (
    "start_ms",
    "duration_ms",
    "n_steps",
    "batch_size",
    "running",
    "prefill_tokens",
    "decode_seqs",
    "kv_blocks_used",
    "queue_len",
    "gen_tokens",
    "slot_tokens",
    "batch_limit",
)
_STEP_INT = STEP_COLUMNS[2:]


# --------------------------------------------------------------------------------------------
# option checks


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _pos_int(value: Any, name: str, minimum: int = 1) -> int:
    if not _is_real(value) or not math.isfinite(value) or int(value) != value or value < minimum:
        raise InputError(f"must be an integer >= {minimum}, got {value!r}", field=name)
    return int(value)


def _nonneg(value: Any, name: str, *, allow_inf: bool = False) -> float:
    ok = _is_real(value) and value >= 0 and (allow_inf or math.isfinite(value))
    if not ok or math.isnan(value):
        raise InputError(f"must be a number >= 0, got {value!r}", field=name)
    return float(value)


def _positive(value: Any, name: str) -> float:
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise InputError(f"must be a positive number, got {value!r}", field=name)
    return float(value)


def nearest_rank(values: np.ndarray, p: float) -> float:
    """Nearest-rank percentile: the ⌈N·p⌉-th smallest of the non-NaN values (NaN if none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan
    k = max(1, math.ceil(v.size * p - 1e-9))
    return float(np.partition(v, k - 1)[k - 1])


# --------------------------------------------------------------------------------------------
# arrivals


def draw_arrivals(n: int, rate_per_s: float, *, seed: int, burstiness: float = 1.0) -> np.ndarray:
    """Arrival times (s) of ``n`` requests at ``rate_per_s``: exponential inter-arrivals
    (Poisson) for ``burstiness == 1``, else gamma inter-arrivals with that coefficient of
    variation (shape ``1 / burstiness²``, mean ``1 / rate``). The first request arrives at 0.
    See :func:`batchlab.workload.arrival_times`."""
    n = _pos_int(n, "n")
    rate = _positive(rate_per_s, "rate")
    cv = _positive(burstiness, "burstiness")
    process = "poisson" if cv == 1.0 else "bursty"
    return arrival_times(n, rate_per_s=rate, seed=seed, process=process, burstiness=cv)


# --------------------------------------------------------------------------------------------
# simulation state shared by the engine and the policies


class _WaitQueue:
    """Waiting requests: one FIFO per priority level, served best level first."""

    __slots__ = ("_q", "_n")

    def __init__(self, n_levels: int) -> None:
        self._q: list[deque[int]] = [deque() for _ in range(n_levels)]
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, idx: np.ndarray, level: np.ndarray) -> None:
        """Append requests (in arrival order) to their levels' queues."""
        if len(self._q) == 1:
            self._q[0].extend(idx.tolist())
        else:
            lv = level[idx]
            for u in np.unique(lv).tolist():
                self._q[u].extend(idx[lv == u].tolist())
        self._n += len(idx)

    def push_front(self, i: int, level: int) -> None:
        self._q[level].appendleft(i)
        self._n += 1

    def peek(self) -> int:
        for q in self._q:
            if q:
                return q[0]
        raise IndexError("empty queue")

    def pop(self) -> int:
        for q in self._q:
            if q:
                self._n -= 1
                return q.popleft()
        raise IndexError("empty queue")

    def pop_many(self, k: int) -> list[int]:
        out: list[int] = []
        for q in self._q:
            while q and len(out) < k:
                out.append(q.popleft())
            if len(out) >= k:
                break
        self._n -= len(out)
        return out

    def oldest(self, arrival: np.ndarray) -> float:
        """Earliest arrival (ms) among the waiting requests (inf if none)."""
        best = _INF
        for q in self._q:
            if q:
                a = arrival[q[0]]
                if a < best:
                    best = a
        return float(best)


class Batch:
    """One unit of work a policy starts: a padded batch, one step, or a run of decode steps.

    ``first``: requests emitting their first token (at ``first_ms``); ``finished``: requests
    leaving at the end (their last token at ``last_ms``, the end when None); ``started``:
    requests scheduled in this unit (their first time sets ``start_ms``).
    """

    __slots__ = (
        "start_ms",
        "duration_ms",
        "n_steps",
        "size",
        "running",
        "prefill_tokens",
        "decode_seqs",
        "kv_blocks",
        "queue_len",
        "gen_tokens",
        "slot_tokens",
        "limit",
        "started",
        "first",
        "first_ms",
        "finished",
        "last_ms",
    )

    def __init__(self, start_ms: float, duration_ms: float, n_steps: int, size: int) -> None:
        self.start_ms = start_ms
        self.duration_ms = duration_ms
        self.n_steps = n_steps
        self.size = size
        self.running = size
        self.prefill_tokens = 0
        self.decode_seqs = 0
        self.kv_blocks = 0
        self.queue_len = 0
        self.gen_tokens = 0
        self.slot_tokens = 0
        self.limit = 0
        self.started: np.ndarray | None = None
        self.first: np.ndarray | None = None
        self.first_ms: Any = None
        self.finished: np.ndarray | None = None
        self.last_ms: Any = None

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms


class SimState:
    """What the engine knows: the request arrays, the clock, arrivals, results so far.

    Arrays are indexed by request position (row of the validated table): ``prompt``, ``gen``
    (tokens), ``level`` (dense priority level, 0 is served first), ``arrival`` (ms; NaN until a
    closed-loop client sends it). ``order`` is the issue order; ``known`` requests of it have an
    arrival time, ``delivered`` of them have been handed to the policy.
    """

    def __init__(
        self,
        prompt: np.ndarray,
        gen: np.ndarray,
        level: np.ndarray,
        arrival_ms: np.ndarray,
        order: np.ndarray,
        known: int,
        step_time: StepTimeModel,
        kv_blocks: int,
        block_size: int,
        think_ms: float | None,
        request_ids: Sequence[str] | None = None,
    ) -> None:
        n = prompt.size
        self.request_ids = (
            list(request_ids) if request_ids is not None else [str(i) for i in range(n)]
        )
        self.n = n
        self.prompt = prompt
        self.gen = gen
        self.level = level
        self.n_levels = int(level.max()) + 1 if n else 1
        self.arrival = arrival_ms
        self.order = order
        self.arr_sorted = np.full(n, np.nan)
        self.arr_sorted[:known] = arrival_ms[order[:known]]
        self.known = known
        self.delivered = 0
        self.clock = 0.0
        self.step_time = step_time
        self.sums_only = bool(getattr(step_time, "sums_only", False))
        self.kv_blocks = kv_blocks
        self.block_size = block_size
        self.closed = think_ms is not None
        self.think_ms = 0.0 if think_ms is None else think_ms
        self.start = np.full(n, np.nan)
        self.first = np.full(n, np.nan)
        self.last = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.batch_id = np.full(n, -1, dtype=np.int64)
        self.finished = 0
        self.log: list[tuple] = []

    def next_arrival(self) -> float:
        """Time (ms) of the next arrival not yet handed to the policy (inf if none is known)."""
        d = self.delivered
        return float(self.arr_sorted[d]) if d < self.known else _INF

    def take_arrivals(self) -> np.ndarray | None:
        """Requests arrived by the clock and not yet handed over (in arrival order)."""
        d, k = self.delivered, self.known
        if d >= k or self.arr_sorted[d] > self.clock:
            return None
        j = d + int(np.searchsorted(self.arr_sorted[d:k], self.clock, side="right"))
        self.delivered = j
        return self.order[d:j]

    def record(self, b: Batch) -> None:
        """Write a finished unit's times into the per-request arrays and the step log."""
        end = b.start_ms + b.duration_ms
        if b.started is not None:
            s = b.started
            s = s[np.isnan(self.start[s])]
            self.start[s] = b.start_ms
        if b.first is not None:
            self.first[b.first] = b.first_ms
        if b.finished is not None and b.finished.size:
            f = b.finished
            self.finish[f] = end
            self.last[f] = end if b.last_ms is None else b.last_ms
            c = f.size
            self.finished += c
            if self.closed and self.known < self.n:
                r = min(c, self.n - self.known)
                k = self.known
                t = end + self.think_ms
                self.arr_sorted[k : k + r] = t
                self.arrival[self.order[k : k + r]] = t
                self.known = k + r
        self.log.append(
            (
                b.start_ms,
                b.duration_ms,
                b.n_steps,
                b.size,
                b.running,
                b.prefill_tokens,
                b.decode_seqs,
                b.kv_blocks,
                b.queue_len,
                b.gen_tokens,
                b.slot_tokens,
                b.limit,
            )
        )

    def decode_run(self, n_seqs: int, ctx_sum: float, ctx: np.ndarray | None, k: int) -> np.ndarray:
        """Durations of ``k`` consecutive decode steps of ``n_seqs`` sequences whose context
        lengths sum to ``ctx_sum`` at the first step (``ctx`` the lengths, for generic models)."""
        if self.sums_only:
            return self.step_time._decode_run(n_seqs, ctx_sum, k)
        return np.asarray(self.step_time.decode_run_ms(ctx, k), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# policies


class Policy:
    """A batching policy. The engine calls, in a loop:

    * :meth:`on_arrivals` with the requests that arrived since the last call;
    * :meth:`next_batch`: the :class:`Batch` to run now, or None if nothing can start;
    * then, when nothing started, waits until the next arrival or :meth:`wake_time`, and when
      neither can come calls :meth:`flush` (start what is waiting);
    * :meth:`on_batch_end` after each batch, with the clock at its end.
    """

    name: ClassVar[str] = ""

    def setup(self, state: SimState) -> None:
        """Prepare for a run over ``state`` (check the requests can be served at all)."""

    def on_arrivals(self, state: SimState, idx: np.ndarray) -> None:
        raise NotImplementedError

    def next_batch(self, state: SimState) -> Batch | None:
        raise NotImplementedError

    def wake_time(self, state: SimState) -> float:
        """Earliest time (ms) the policy may start something without a new arrival."""
        return _INF

    def flush(self, state: SimState) -> bool:
        """No arrival can come: start what waits. True if that made a batch possible."""
        return False

    def on_batch_end(self, state: SimState, batch: Batch) -> None:
        """Called with the clock at the batch's end (after its results are recorded)."""

    def options(self) -> dict[str, Any]:
        """The policy's options, as passed to its constructor (with defaults filled in)."""
        return {
            k: getattr(self, k)
            for k in inspect.signature(type(self).__init__).parameters
            if k != "self"
        }


def _check_kv_feasible(state: SimState, reserve: int, what: str) -> None:
    """Every request must fit alone in the KV cache (with ``reserve`` blocks kept free)."""
    bs = state.block_size
    need = -(-(state.prompt + state.gen - 1) // bs)
    bad = need + reserve > state.kv_blocks
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"needs {int(need[i])} KV-cache blocks of {bs} tokens at its longest "
            f"(prompt {int(state.prompt[i])} + gen {int(state.gen[i])} − 1 tokens){what}, but "
            f"the budget is {state.kv_blocks} blocks",
            field="kv_blocks",
            request_id=state.request_ids[i],
        )


class _PaddedPolicy(Policy):
    """Shared machinery of the padded (request-level) policies."""

    def setup(self, state: SimState) -> None:
        _check_kv_feasible(state, 0, "")
        self._bucket_of = self._buckets(state)
        n_buckets = 1 if self._bucket_of is None else int(self._bucket_of.max()) + 1
        self._queues = [_WaitQueue(state.n_levels) for _ in range(n_buckets)]
        self._flushing = False
        self._batch_no = 0

    def _buckets(self, state: SimState) -> np.ndarray | None:
        return None

    def _limit(self) -> int:
        raise NotImplementedError

    def _ready(self, state: SimState) -> int | None:
        raise NotImplementedError

    def on_arrivals(self, state: SimState, idx: np.ndarray) -> None:
        if self._bucket_of is None:
            self._queues[0].push(idx, state.level)
            return
        b = self._bucket_of[idx]
        for u in np.unique(b).tolist():
            self._queues[u].push(idx[b == u], state.level)

    def _best_nonempty(self, state: SimState, candidates: Sequence[int]) -> int | None:
        best, key = None, None
        for qi in candidates:
            q = self._queues[qi]
            if len(q):
                h = q.peek()
                k = (int(state.level[h]), float(state.arrival[h]), h)
                if key is None or k < key:
                    best, key = qi, k
        return best

    def flush(self, state: SimState) -> bool:
        if any(len(q) for q in self._queues):
            self._flushing = True
            return True
        return False

    def next_batch(self, state: SimState) -> Batch | None:
        qi = self._ready(state)
        if qi is None and self._flushing:
            qi = self._best_nonempty(state, range(len(self._queues)))
        if qi is None:
            return None
        self._flushing = False
        members = self._take(state, self._queues[qi], self._limit())
        return self._padded_batch(state, members, sum(len(q) for q in self._queues))

    def _take(self, state: SimState, q: _WaitQueue, limit: int) -> np.ndarray:
        m = np.asarray(q.pop_many(limit), dtype=np.int64)
        bs = state.block_size
        p = np.maximum.accumulate(state.prompt[m])
        g = np.maximum.accumulate(state.gen[m])
        need = np.arange(1, m.size + 1) * (-(-(p + g - 1) // bs))
        b = int(np.searchsorted(need, state.kv_blocks, side="right"))
        if b < m.size:
            for i in m[b:][::-1].tolist():
                q.push_front(i, int(state.level[i]))
            m = m[:b]
        return m

    def _padded_batch(self, state: SimState, m: np.ndarray, queue_len: int) -> Batch:
        st = state.step_time
        B = int(m.size)
        g = state.gen[m]
        P = int(state.prompt[m].max())
        G = int(g.max())
        t0 = state.clock
        pre = st.step_ms(B * P, _EMPTY, prefill_pairs=B * P * (P + 1) / 2.0, prefill_cached=0)
        if G > 1:
            ctx = np.full(B, P + 1, dtype=np.float64) if not state.sums_only else None
            cum = np.cumsum(state.decode_run(B, float(B * (P + 1)), ctx, G - 1))
            dec = float(cum[-1])
            last = np.minimum(
                t0 + pre + np.where(g > 1, cum[np.maximum(g - 2, 0)], 0.0), t0 + (pre + dec)
            )
        else:
            dec = 0.0
            last = np.full(B, t0 + pre)
        b = Batch(t0, pre + dec, G, B)
        b.prefill_tokens = B * P
        b.decode_seqs = B if G > 1 else 0
        b.kv_blocks = B * (-(-(P + G - 1) // state.block_size))
        b.queue_len = queue_len
        b.gen_tokens = int(g.sum())
        b.slot_tokens = B * G
        b.limit = self._limit()
        b.started = m
        b.first = m
        b.first_ms = t0 + pre
        b.finished = m
        b.last_ms = last
        state.batch_id[m] = self._batch_no
        self._batch_no += 1
        return b


class StaticPolicy(_PaddedPolicy):
    """Static batching: a batch of ``batch_size`` requests starts when that many wait (or,
    with ``timeout_ms``, when the oldest waiting request has waited that long; or when no more
    requests can arrive), is padded to its longest prompt, and runs until its longest request
    finishes; the next batch starts after it."""

    name = "static"

    def __init__(self, *, batch_size: int = 8, timeout_ms: float | None = None) -> None:
        self.batch_size = _pos_int(batch_size, "batch_size")
        self.timeout_ms = None if timeout_ms is None else _nonneg(timeout_ms, "timeout_ms")

    def _limit(self) -> int:
        return self.batch_size

    def _ready(self, state: SimState) -> int | None:
        q = self._queues[0]
        if len(q) >= self.batch_size:
            return 0
        if self.timeout_ms is not None and len(q):
            if state.clock >= q.oldest(state.arrival) + self.timeout_ms:
                return 0
        return None

    def wake_time(self, state: SimState) -> float:
        q = self._queues[0]
        if self.timeout_ms is None or not len(q):
            return _INF
        return q.oldest(state.arrival) + self.timeout_ms


class DynamicPolicy(_PaddedPolicy):
    """Dynamic batching: when the server is free, a batch starts as soon as ``max_batch_size``
    requests wait or the oldest has waited ``max_wait_ms``, whichever comes first.

    ``bucket_edges`` (tokens, increasing): a request with ``prompt_len <= edges[i]`` (and above
    the previous edge) joins bucket ``i``, longer ones a last bucket; a batch holds one bucket.
    Among ready buckets the one whose head request is first in (priority, arrival) order goes.

    ``target_latency_ms``: an adaptive controller (additive increase, multiplicative decrease,
    as in Clipper) sets the batch-size limit: after each batch, if its duration (ms) exceeded
    the target the limit becomes ``max(min_batch_size, floor(limit · decrease))``, otherwise
    ``min(max_batch_size, limit + increase)``. The limit starts at ``max_batch_size``.
    """

    name = "dynamic"

    def __init__(
        self,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 50.0,
        bucket_edges: Sequence[int] | None = None,
        target_latency_ms: float | None = None,
        min_batch_size: int = 1,
        increase: int = 1,
        decrease: float = 0.5,
    ) -> None:
        self.max_batch_size = _pos_int(max_batch_size, "max_batch_size")
        self.max_wait_ms = _nonneg(max_wait_ms, "max_wait_ms", allow_inf=True)
        if bucket_edges is not None:
            edges = np.asarray(list(bucket_edges))
            if (
                edges.ndim != 1
                or edges.size == 0
                or not np.issubdtype(edges.dtype, np.number)
                or np.any(edges <= 0)
                or np.any(np.diff(edges) <= 0)
                or np.any(edges != np.floor(edges))
            ):
                raise InputError(
                    f"must be increasing positive whole numbers of tokens, got {bucket_edges!r}",
                    field="bucket_edges",
                )
            bucket_edges = tuple(int(e) for e in edges)
        self.bucket_edges = bucket_edges
        self.target_latency_ms = (
            None if target_latency_ms is None else _positive(target_latency_ms, "target_latency_ms")
        )
        self.min_batch_size = _pos_int(min_batch_size, "min_batch_size")
        if self.min_batch_size > self.max_batch_size:
            raise InputError(
                f"min_batch_size {self.min_batch_size} > max_batch_size {self.max_batch_size}",
                field="min_batch_size",
            )
        self.increase = _pos_int(increase, "increase")
        d = decrease
        if not (_is_real(d) and 0 < d < 1):
            raise InputError(f"must be in (0, 1), got {decrease!r}", field="decrease")
        self.decrease = float(d)
        self._batch_limit = self.max_batch_size

    def setup(self, state: SimState) -> None:
        super().setup(state)
        self._batch_limit = self.max_batch_size

    def _buckets(self, state: SimState) -> np.ndarray | None:
        if self.bucket_edges is None:
            return None
        return np.searchsorted(np.asarray(self.bucket_edges), state.prompt, side="left")

    def _limit(self) -> int:
        return self._batch_limit

    def _ready(self, state: SimState) -> int | None:
        ready = []
        limit = self._batch_limit
        for qi, q in enumerate(self._queues):
            n = len(q)
            if n and (n >= limit or state.clock >= q.oldest(state.arrival) + self.max_wait_ms):
                ready.append(qi)
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        return self._best_nonempty(state, ready)

    def wake_time(self, state: SimState) -> float:
        t = _INF
        for q in self._queues:
            if len(q):
                t = min(t, q.oldest(state.arrival) + self.max_wait_ms)
        return t

    def on_batch_end(self, state: SimState, batch: Batch) -> None:
        if self.target_latency_ms is None:
            return
        if batch.duration_ms > self.target_latency_ms:
            self._batch_limit = max(self.min_batch_size, int(self._batch_limit * self.decrease))
        else:
            self._batch_limit = min(self.max_batch_size, self._batch_limit + self.increase)


class AdaptivePolicy(DynamicPolicy):
    """Dynamic batching with the adaptive batch-size controller (``target_latency_ms`` required,
    default 1000 ms of batch duration); see :class:`DynamicPolicy`."""

    name = "adaptive"

    def __init__(
        self,
        *,
        target_latency_ms: float = 1000.0,
        max_batch_size: int = 32,
        max_wait_ms: float = 50.0,
        bucket_edges: Sequence[int] | None = None,
        min_batch_size: int = 1,
        increase: int = 1,
        decrease: float = 0.5,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            bucket_edges=bucket_edges,
            target_latency_ms=target_latency_ms,
            min_batch_size=min_batch_size,
            increase=increase,
            decrease=decrease,
        )


class ContinuousPolicy(Policy):
    """Iteration-level scheduling (Orca, vLLM) with a paged KV cache.

    Every step, sequences may join or leave the running batch (at most ``max_num_seqs``).
    KV cache: ``kv_blocks`` blocks of ``block_size`` tokens; a sequence holding ``c`` cached
    tokens holds ``⌈c / block_size⌉`` blocks; a request is admitted only if, after taking the
    blocks of what it prefills in that step, ``watermark · kv_blocks`` blocks stay free.

    * Without chunked prefill (vLLM's default scheduler): when requests can be admitted (in
      queue order, while their prompts total at most ``max_num_batched_tokens`` and the blocks
      allow), the step is a prefill of just those (running sequences wait one step);
      otherwise it is a decode step of every running sequence.
    * With chunked prefill (``chunk_size`` or ``chunked_prefill=True``; Sarathi-Serve, vLLM's
      chunked scheduler): a step holds every running decode (one token each), then the running
      partial prefills, then new admissions, each a chunk of at most ``chunk_size`` prompt
      tokens, while the step's tokens total at most ``max_num_batched_tokens``.
    * Preemption by recompute: when a step needs a new block for a decoding sequence and none
      is free, the running sequence last in (priority, admission) order is preempted: its
      blocks are freed and it goes back to the front of its waiting queue; when re-admitted it
      prefills its prompt and the tokens it had generated, which emits its next token. With
      chunked prefill, a step that preempted admits no new request (as vLLM).

    ``max_num_batched_tokens`` defaults to 2048 with chunked prefill and otherwise to
    ``max(8192, longest prompt + gen_len)`` (every request fits a step, as with vLLM's
    ``max_model_len``).

    Internals: the decoding sequences advance together, so they live in slots relative to a
    decode tick ``T`` (cached tokens ``base + T``, last token at tick ``fin``), with counts of
    ``base mod block_size``: a step's new blocks, the next completion and the context sum are
    O(1), and a run of ``k`` decode steps costs one vectorized call.
    """

    name = "continuous"

    def __init__(
        self,
        *,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int | None = None,
        chunked_prefill: bool | None = None,
        chunk_size: int | None = None,
        watermark: float = 0.01,
    ) -> None:
        self.max_num_seqs = _pos_int(max_num_seqs, "max_num_seqs")
        self.max_num_batched_tokens = (
            None
            if max_num_batched_tokens is None
            else _pos_int(max_num_batched_tokens, "max_num_batched_tokens")
        )
        if chunked_prefill is not None and not isinstance(chunked_prefill, bool | np.bool_):
            raise InputError(
                f"must be True, False or None, got {chunked_prefill!r}", field="chunked_prefill"
            )
        self.chunk_size = None if chunk_size is None else _pos_int(chunk_size, "chunk_size")
        if chunked_prefill is False and chunk_size is not None:
            raise InputError(
                "chunk_size needs chunked prefill (chunked_prefill=False)", field="chunk_size"
            )
        self.chunked_prefill = None if chunked_prefill is None else bool(chunked_prefill)
        w = watermark
        if not (_is_real(w) and 0 <= w < 1):
            raise InputError(f"must be in [0, 1), got {watermark!r}", field="watermark")
        self.watermark = float(w)

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, state: SimState) -> None:
        self._chunked = bool(self.chunked_prefill) or self.chunk_size is not None
        if self.max_num_batched_tokens is not None:
            tokens = self.max_num_batched_tokens
        elif self._chunked:
            tokens = 2048
        else:
            tokens = max(8192, int((state.prompt + state.gen).max()))
        self._tokens = tokens
        self._chunk = min(self.chunk_size or tokens, tokens)
        if self._chunked and tokens < self.max_num_seqs:
            raise InputError(
                f"max_num_batched_tokens ({tokens}) must be >= max_num_seqs ({self.max_num_seqs}) "
                "with chunked prefill (every running sequence decodes one token per step)",
                field="max_num_batched_tokens",
            )
        self._wm = int(self.watermark * state.kv_blocks)
        _check_kv_feasible(state, self._wm, f" plus the {self._wm} watermark blocks")
        if not self._chunked:
            bad = state.prompt > tokens
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"prompt of {int(state.prompt[i])} tokens exceeds max_num_batched_tokens "
                    f"({tokens}) without chunked prefill",
                    field="max_num_batched_tokens",
                    request_id=state.request_ids[i],
                )
        bs = state.block_size
        self._bs = bs
        self._queue = _WaitQueue(state.n_levels)
        self._generated = np.zeros(state.n, dtype=np.int64)
        self._key_scale = 1 << 40  # key = level · 2⁴⁰ + admission counter
        self._admitted = 0
        self._used = 0  # KV blocks held by running sequences
        self._preempted = False  # a preemption happened while composing the current step
        # decoding sequences in slots, relative to the decode tick T
        self._T = 0
        cap = min(self.max_num_seqs, 64)
        self.d_idx = np.zeros(cap, dtype=np.int64)  # request
        self.d_base = np.zeros(cap, dtype=np.int64)  # cached tokens = base + T
        self.d_fin = np.full(cap, _NEVER, dtype=np.int64)  # tick of the last token
        self.d_key = np.full(cap, -1, dtype=np.int64)  # preemption order: largest goes first
        self.d_on = np.zeros(cap, dtype=bool)
        self._free_slots = list(range(cap - 1, -1, -1))
        self._n_dec = 0
        self._base_sum = 0
        self._res = [0] * bs  # decoders per value of base mod bs
        self._next_fin = _INF
        # partial prefills (chunked mode): [request, cached, prefill left, tokens left, key]
        self._partials: list[list[int]] = []
        self._sums = state.sums_only

    def on_arrivals(self, state: SimState, idx: np.ndarray) -> None:
        self._queue.push(idx, state.level)

    # -- running-set bookkeeping ---------------------------------------------------------------

    def _n_running(self) -> int:
        return self._n_dec + len(self._partials)

    def _next_key(self, level: int) -> int:
        k = level * self._key_scale + self._admitted
        self._admitted += 1
        return k

    def _grow(self) -> None:
        cap = self.d_idx.size
        new = min(max(2 * cap, 1), self.max_num_seqs + 1)
        extra = new - cap
        self.d_idx = np.concatenate([self.d_idx, np.zeros(extra, dtype=np.int64)])
        self.d_base = np.concatenate([self.d_base, np.zeros(extra, dtype=np.int64)])
        self.d_fin = np.concatenate([self.d_fin, np.full(extra, _NEVER, dtype=np.int64)])
        self.d_key = np.concatenate([self.d_key, np.full(extra, -1, dtype=np.int64)])
        self.d_on = np.concatenate([self.d_on, np.zeros(extra, dtype=bool)])
        self._free_slots.extend(range(new - 1, cap - 1, -1))

    def _add_decoder(self, i: int, cached: int, rem: int, key: int) -> None:
        """A sequence whose prefill is complete, with ``rem`` >= 1 tokens to emit, decodes."""
        if not self._free_slots:
            self._grow()
        s = self._free_slots.pop()
        base = cached - self._T
        fin = self._T + rem
        self.d_idx[s] = i
        self.d_base[s] = base
        self.d_fin[s] = fin
        self.d_key[s] = key
        self.d_on[s] = True
        self._base_sum += base
        self._res[base % self._bs] += 1
        self._n_dec += 1
        if fin < self._next_fin:
            self._next_fin = fin

    def _drop_slots(self, slots: list[int]) -> None:
        """Remove decoders and free their KV blocks."""
        bs, T = self._bs, self._T
        for s in slots:
            base = int(self.d_base[s])
            self._base_sum -= base
            self._res[base % bs] -= 1
            self._used -= -(-(base + T) // bs)
            self.d_fin[s] = _NEVER
            self.d_key[s] = -1
            self.d_on[s] = False
            self._free_slots.append(s)
        self._n_dec -= len(slots)
        self._next_fin = int(self.d_fin.min()) if self._n_dec else _INF

    def _new_blocks(self, k: int) -> int:
        """KV blocks the decoders need for their next ``k`` tokens: a decoder needs one at
        tick ``t`` when ``(base + t) mod bs == 0``."""
        T, bs, res = self._T, self._bs, self._res
        if k == 1:
            return res[(-T) % bs]
        full, r = divmod(k, bs)
        return full * self._n_dec + sum(res[(-(T + j)) % bs] for j in range(r))

    def _kv_steps(self, k: int, free: int) -> int:
        """Largest j <= k whose new blocks fit in ``free`` (k when they all fit)."""
        if self._new_blocks(k) <= free:
            return k
        n, bs, T, res = self._n_dec, self._bs, self._T, self._res
        full = free // n  # whole cycles of bs ticks: n blocks each
        left = free - full * n
        r = 0
        acc = res[(-T) % bs]
        while r < bs - 1 and acc <= left:
            r += 1
            acc += res[(-(T + r)) % bs]
        return min(k, full * bs + r)

    def _preempt_one(self, state: SimState) -> None:
        """Preempt the running sequence last in (priority, admission) order (recompute)."""
        bs = self._bs
        dk = int(self.d_key.max()) if self._n_dec else -1
        pk = max((p[4] for p in self._partials), default=-1)
        if pk > dk:
            j = max(range(len(self._partials)), key=lambda t: self._partials[t][4])
            i, cached = self._partials[j][0], self._partials[j][1]
            del self._partials[j]
            self._used -= -(-cached // bs)
        else:
            v = int(np.argmax(self.d_key))
            i = int(self.d_idx[v])
            self._generated[i] = int(state.gen[i] - (self.d_fin[v] - self._T))
            self._drop_slots([v])
        state.preemptions[i] += 1
        self._queue.push_front(i, int(state.level[i]))
        self._preempted = True

    def _make_room_for_decodes(self, state: SimState) -> int:
        """Preempt until every decoder can take its next token's block; return those blocks."""
        while True:
            need = self._res[(-self._T) % self._bs] if self._n_dec else 0
            if need <= state.kv_blocks - self._used or self._n_running() <= 1:
                return need
            self._preempt_one(state)

    def _ctx(self) -> np.ndarray:
        """Context lengths of the decoders at the next step (for generic step-time models)."""
        return (self.d_base[self.d_on] + (self._T + 1)).astype(np.float64)

    def _step_ms(self, state: SimState, p: int, pairs: float, cached: int, n: int) -> float:
        """One step: ``p`` prefill tokens (``pairs`` attention pairs, ``cached`` tokens read)
        and a decode token for each of the ``n`` decoders (all of them, or none)."""
        if self._sums:
            s = self._base_sum + n * (self._T + 1) if n else 0
            return state.step_time._step(p, n, float(s), pairs, cached)
        ctx = self._ctx() if n else _EMPTY
        return state.step_time.step_ms(
            p, ctx, prefill_pairs=pairs if p else None, prefill_cached=cached
        )

    def _run_ms(self, state: SimState, k: int) -> np.ndarray:
        n = self._n_dec
        if self._sums:
            return state.step_time._decode_run(n, float(self._base_sum + n * (self._T + 1)), k)
        return np.asarray(state.step_time.decode_run_ms(self._ctx(), k), dtype=np.float64)

    def _finished_now(self) -> np.ndarray | None:
        """Requests of the decoders whose last token came out at the current tick."""
        if self._next_fin != self._T:
            return None
        return self.d_idx[self.d_fin == self._T]

    # -- scheduling ----------------------------------------------------------------------------

    def next_batch(self, state: SimState) -> Batch | None:
        self._preempted = False
        if self._n_running() == 0 and not len(self._queue):
            return None
        if self._chunked:
            return self._chunked_step(state)
        return self._plain_step(state)

    def _plain_step(self, state: SimState) -> Batch | None:
        q = self._queue
        idx: list[int] = []
        targets: list[int] = []
        if len(q):
            room = self.max_num_seqs - self._n_running()
            tokens = 0
            free = state.kv_blocks - self._used
            bs = self._bs
            prompt, generated = state.prompt, self._generated
            while len(q) and len(idx) < room:
                i = q.peek()
                t = int(prompt[i] + generated[i])
                if idx and tokens + t > self._tokens:
                    break
                b = -(-t // bs)
                if free - b < self._wm:
                    break
                q.pop()
                idx.append(i)
                targets.append(t)
                tokens += t
                free -= b
        if idx:
            return self._prefill_only(state, idx, targets)
        if self._n_dec == 0:
            return None
        return self._decode_run(state)

    def _prefill_only(self, state: SimState, idx: list[int], targets: list[int]) -> Batch:
        bs = self._bs
        total = sum(targets)
        pairs = sum(t * (t + 1) / 2.0 for t in targets)
        dur = self._step_ms(state, total, pairs, 0, 0)
        end = state.clock + dur
        b = Batch(state.clock, dur, 1, len(idx))
        b.running = self._n_running() + len(idx)
        b.prefill_tokens = total
        b.queue_len = len(self._queue)
        b.gen_tokens = b.slot_tokens = len(idx)
        b.limit = self.max_num_seqs
        ia = np.asarray(idx, dtype=np.int64)
        b.started = ia
        first = state.first
        fresh = [i for i in idx if first[i] != first[i]]  # NaN: no token yet
        if fresh:
            b.first = np.asarray(fresh, dtype=np.int64)
            b.first_ms = end
        gen, generated, level = state.gen, self._generated, state.level
        done: list[int] = []
        release = 0
        for i, t in zip(idx, targets, strict=True):
            rem = int(gen[i] - generated[i]) - 1
            key = self._next_key(int(level[i]))
            blocks = -(-t // bs)
            self._used += blocks
            if rem == 0:
                done.append(i)
                release += blocks
            else:
                self._add_decoder(i, t, rem, key)
        b.kv_blocks = self._used
        if done:
            b.finished = np.asarray(done, dtype=np.int64)
            self._used -= release
        return b

    def _decode_run(self, state: SimState) -> Batch:
        """A run of decode steps of every decoder (partial prefills wait), up to the next
        completion, the next arrival that could be admitted, or KV exhaustion."""
        self._make_room_for_decodes(state)
        n = self._n_dec
        T0 = self._T
        k = min(int(self._next_fin) - T0, _MAX_RUN)
        free = state.kv_blocks - self._used
        if free < n * (-(-k // self._bs)):
            k = self._kv_steps(k, free)
        if self._preempted and len(self._queue):
            k = 1  # the next step may admit
        t0 = state.clock
        first = -1.0
        arrival = _INF
        if self._n_running() < self.max_num_seqs:
            arrival = state.next_arrival()
            if arrival < _INF:
                first = self._step_ms(state, 0, 0.0, 0, n)
                if first > 0:
                    # step durations never decrease along a run: the arrival is passed after
                    # at most ceil(gap / first step) steps
                    k = max(1, min(k, math.ceil((arrival - t0) / first)))
        if k == 1:
            dur = first if first >= 0 else self._step_ms(state, 0, 0.0, 0, n)
        else:
            cum = np.cumsum(self._run_ms(state, k))
            if arrival < _INF:
                m = int(np.searchsorted(cum, arrival - t0, side="left")) + 1
                if m < k:
                    k = m
            dur = float(cum[k - 1])
        self._used += self._new_blocks(k)
        self._T = T0 + k
        b = Batch(t0, dur, k, n)
        b.running = self._n_running()
        b.decode_seqs = n
        b.kv_blocks = self._used
        b.queue_len = len(self._queue)
        b.gen_tokens = b.slot_tokens = n * k
        b.limit = self.max_num_seqs
        b.finished = self._finished_now()
        return b

    def _chunked_step(self, state: SimState) -> Batch | None:
        bs = self._bs
        while True:
            need = self._make_room_for_decodes(state) if self._n_dec else 0
            n_dec = self._n_dec
            free = state.kv_blocks - self._used - need
            budget = self._tokens - n_dec
            work: list[tuple[list[int], int]] = []  # (partial record, chunk)
            for rec in self._partials:
                if budget <= 0:
                    break
                c = rec[1]
                held = -(-c // bs)
                cap = (held + free) * bs - c  # tokens that fit in held + free blocks
                chunk = min(rec[2], self._chunk, budget, cap)
                if chunk <= 0:
                    continue
                work.append((rec, chunk))
                budget -= chunk
                free -= -(-(c + chunk) // bs) - held
            started: list[int] = []
            if not self._preempted:  # no admission in a step that preempted
                q = self._queue
                room = self.max_num_seqs - self._n_running()
                while len(q) and budget > 0 and len(started) < room:
                    i = q.peek()
                    t = int(state.prompt[i] + self._generated[i])
                    chunk = min(t, self._chunk, budget)
                    blocks = -(-chunk // bs)
                    if free - blocks < self._wm:
                        break
                    q.pop()
                    rec = [
                        i,
                        0,
                        t,
                        int(state.gen[i] - self._generated[i]),
                        self._next_key(int(state.level[i])),
                    ]
                    self._partials.append(rec)
                    started.append(i)
                    work.append((rec, chunk))
                    budget -= chunk
                    free -= blocks
            if work:
                return self._mixed_step(state, work, started, need)
            if n_dec:
                return self._decode_run(state)
            if not self._partials:
                return None
            # only partial prefills, none can get a block: free some by preemption
            if self._n_running() <= 1:  # cannot happen: every request fits alone
                raise RuntimeError("a lone partial prefill cannot get a KV block")
            self._preempt_one(state)

    def _mixed_step(
        self, state: SimState, work: list[tuple[list[int], int]], started: list[int], need: int
    ) -> Batch:
        bs = self._bs
        n_dec = self._n_dec
        total = 0
        pairs = 0.0
        cached = 0
        for rec, chunk in work:
            c = rec[1]
            total += chunk
            pairs += chunk * c + chunk * (chunk + 1) / 2.0
            cached += c
        dur = self._step_ms(state, total, pairs, cached, n_dec)
        b = Batch(state.clock, dur, 1, n_dec + len(work))
        b.running = self._n_running()
        # decoders advance one tick
        if n_dec:
            self._used += need
            self._T += 1
            b.finished = self._finished_now()
        # prefill chunks; a prefill's last chunk emits a token
        completed: list[int] = []
        finished_now: list[int] = []
        first = state.first
        fresh: list[int] = []
        release = 0
        for rec, chunk in work:
            c = rec[1]
            self._used += -(-(c + chunk) // bs) - (-(-c // bs))
            rec[1] = c + chunk
            rec[2] -= chunk
            if rec[2] == 0:
                i = rec[0]
                rec[3] -= 1
                completed.append(i)
                if first[i] != first[i]:  # NaN: no token yet
                    fresh.append(i)
                if rec[3] == 0:
                    finished_now.append(i)
                    release += -(-rec[1] // bs)
                else:
                    self._add_decoder(i, rec[1], rec[3], rec[4])
        if completed:
            self._partials = [p for p in self._partials if p[2] > 0]
            if fresh:
                b.first = np.asarray(fresh, dtype=np.int64)
                b.first_ms = state.clock + dur
            if finished_now:
                fn = np.asarray(finished_now, dtype=np.int64)
                b.finished = fn if b.finished is None else np.concatenate([b.finished, fn])
        b.prefill_tokens = total
        b.decode_seqs = n_dec
        b.kv_blocks = self._used
        self._used -= release
        b.queue_len = len(self._queue)
        b.gen_tokens = b.slot_tokens = n_dec + len(completed)
        b.limit = self.max_num_seqs
        if started:
            b.started = np.asarray(started, dtype=np.int64)
        return b

    def on_batch_end(self, state: SimState, batch: Batch) -> None:
        if self._next_fin == self._T:
            self._drop_slots(np.flatnonzero(self.d_fin == self._T).tolist())


POLICIES: dict[str, type[Policy]] = {
    "static": StaticPolicy,
    "dynamic": DynamicPolicy,
    "adaptive": AdaptivePolicy,
    "continuous": ContinuousPolicy,
}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Add a :class:`Policy` subclass to :data:`POLICIES` under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Policy) and cls.name):
        raise InputError("a policy must be a Policy subclass with a name", field="policy")
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str | Policy, **options: Any) -> Policy:
    """A policy by name from :data:`POLICIES`, with its options checked (InputError names the
    unknown option and lists the valid ones)."""
    if isinstance(name, Policy):
        if options:
            raise InputError(
                f"options {sorted(options)} given with a Policy instance; set them on it",
                field="policy",
            )
        return name
    key = str(name).strip().lower()
    if key not in POLICIES:
        raise InputError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}", field="policy")
    cls = POLICIES[key]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for opt in options:
        if opt not in params:
            raise InputError(
                f"unknown option for policy '{key}'; valid options: {', '.join(params)}",
                field=opt,
            )
    return cls(**options)


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """The outcome of :func:`simulate`.

    ``requests``: one row per request (input order): request_id, prompt_len, gen_len, priority,
    arrival_ms, start_ms, first_token_ms, last_token_ms, finish_ms, queue_ms, ttft_ms, tpot_ms,
    latency_ms, preemptions, batch_id (padded policies; -1 otherwise), and the table's extra
    columns. ``steps``: one row per batch (padded policies) or per run of identical steps
    (continuous): start_ms, duration_ms, n_steps, batch_size (sequences computed in a step),
    running (sequences holding KV cache), prefill_tokens (padding included), decode_seqs,
    kv_blocks_used (at the end of the step, before finished requests release theirs; padded
    batches: their reservation), queue_len (waiting at the start), gen_tokens (tokens emitted),
    slot_tokens (token slots computed, padding included), batch_limit (the batch-size limit in
    force: batch_size / the controller's limit / max_num_seqs).
    """

    requests: pd.DataFrame
    steps: pd.DataFrame
    policy: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    kv_blocks: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    mode: str = "trace"
    step_time: str = ""

    @property
    def padded(self) -> bool:
        """True for request-level (padded) policies."""
        return self.policy != "continuous"

    def timeline(self) -> pd.DataFrame:
        """Exact counts over time: after each event time (ms), requests ``waiting`` (arrived, not
        started), ``in_service`` (started, not finished) and ``in_system`` (their sum)."""
        r = self.requests
        a = r["arrival_ms"].to_numpy()
        s = r["start_ms"].to_numpy()
        f = r["finish_ms"].to_numpy()
        n = a.size
        times = np.concatenate([a, s, f])
        dw = np.concatenate([np.ones(n), -np.ones(n), np.zeros(n)])
        ds = np.concatenate([np.zeros(n), np.ones(n), -np.ones(n)])
        order = np.argsort(times, kind="stable")
        t = times[order]
        w = np.cumsum(dw[order])
        sv = np.cumsum(ds[order])
        last = np.r_[t[1:] != t[:-1], True]
        out = pd.DataFrame(
            {
                "time_ms": t[last],
                "waiting": w[last].astype(np.int64),
                "in_service": sv[last].astype(np.int64),
            }
        )
        out["in_system"] = out["waiting"] + out["in_service"]
        return out

    def littles_law(self) -> tuple[float, float]:
        """``(L, λ·W)`` over [first arrival, last finish]: L the time-average number of requests
        in the system (integrated from :meth:`timeline`), λ the arrival rate (per ms) and W the
        mean time in system (ms). Little's law says they are equal."""
        tl = self.timeline()
        t = tl["time_ms"].to_numpy()
        if t.size < 2 or t[-1] <= t[0]:
            return math.nan, math.nan
        span = t[-1] - t[0]
        area = float(np.sum(np.diff(t) * tl["in_system"].to_numpy()[:-1]))
        lat = self.requests["latency_ms"].to_numpy()
        span = float(span)
        return area / span, (lat.size / span) * float(lat.mean())

    def summary(self) -> dict[str, Any]:
        """Aggregates: latency percentiles (nearest rank, ms), throughput, batch efficiency
        (padded policies: Σ gen_len / Σ batch size × G_max; NaN for continuous), KV-cache
        utilisation (time-weighted over busy time, and peak), queue lengths, Little's law."""
        r = self.requests
        st = self.steps
        a = r["arrival_ms"].to_numpy()
        f = r["finish_ms"].to_numpy()
        span_ms = float(f.max() - a.min()) if len(r) else math.nan
        span_s = span_ms / 1e3
        out: dict[str, Any] = {
            "policy": self.policy,
            "mode": self.mode,
            "n_requests": len(r),
            "duration_s": span_s,
            "throughput_rps": len(r) / span_s if span_s > 0 else math.nan,
            "output_tokens_per_s": float(r["gen_len"].sum()) / span_s if span_s > 0 else math.nan,
        }
        for col in ("ttft_ms", "tpot_ms", "latency_ms", "queue_ms"):
            v = r[col].to_numpy(dtype=np.float64)
            base = col[:-3]
            out[f"{base}_mean_ms"] = float(np.nanmean(v)) if np.any(~np.isnan(v)) else math.nan
            for p in (50, 95, 99):
                out[f"{base}_p{p}_ms"] = nearest_rank(v, p / 100)
        dur = st["duration_ms"].to_numpy(dtype=np.float64)
        busy = float(dur.sum())
        out["busy_fraction"] = busy / span_ms if span_ms > 0 else math.nan
        if busy > 0:
            out["mean_batch_size"] = float((st["batch_size"].to_numpy() * dur).sum() / busy)
            kv = st["kv_blocks_used"].to_numpy(dtype=np.float64)
            out["kv_util_mean"] = float((kv * dur).sum() / busy / self.kv_blocks)
            out["kv_util_peak"] = float(kv.max() / self.kv_blocks)
        else:
            out["mean_batch_size"] = out["kv_util_mean"] = out["kv_util_peak"] = math.nan
        if self.padded and len(st):
            out["batch_efficiency"] = float(st["gen_tokens"].sum() / st["slot_tokens"].sum())
        else:
            out["batch_efficiency"] = math.nan
        out["mean_queue_len"] = float(r["queue_ms"].sum()) / span_ms if span_ms > 0 else math.nan
        out["max_queue_len"] = int(self.timeline()["waiting"].max()) if len(r) else 0
        out["preemptions"] = int(r["preemptions"].sum())
        out["n_batches"] = len(st)
        out["n_steps"] = int(st["n_steps"].sum()) if len(st) else 0
        L, lw = self.littles_law()
        out["littles_L"] = L
        out["littles_lambda_W"] = lw
        return out


# --------------------------------------------------------------------------------------------
# entry point


def _priority_levels(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(priority values as ints, dense levels 0..L-1) from the optional ``priority`` column."""
    n = len(df)
    if "priority" not in df.columns:
        ones = np.full(n, PRIORITY_NAMES["normal"], dtype=np.int64)
        return ones, np.zeros(n, dtype=np.int64)
    col = df["priority"]
    values = np.empty(n, dtype=np.int64)
    for pos, v in enumerate(col.tolist()):
        if isinstance(v, str):
            key = v.strip().lower()
            if key in PRIORITY_NAMES:
                values[pos] = PRIORITY_NAMES[key]
                continue
            try:
                v = float(key)
            except ValueError:
                v = None
        if _is_real(v) and math.isfinite(v) and int(v) == v:
            values[pos] = int(v)
            continue
        raise InputError(
            f"must be 'high', 'normal', 'low' or an integer (smaller is served first), got {v!r}",
            field="priority",
            request_id=str(df["request_id"].iloc[pos]),
        )
    uniq, levels = np.unique(values, return_inverse=True)
    return values, levels.astype(np.int64)


def _resolve_step_time(
    step_time: Any, model: str | ModelSpec, gpu: str | DeviceSpec
) -> StepTimeModel:
    if step_time is None:
        return RooflineStepTime(model, gpu)
    if isinstance(step_time, StepTimeModel):
        return step_time
    if isinstance(step_time, pd.DataFrame):
        return TableStepTime(step_time)
    raise InputError(
        "must be None (roofline of model and gpu), a StepTimeModel or a measured table "
        f"(DataFrame), got {type(step_time).__name__}",
        field="step_time",
    )


def simulate(
    requests: pd.DataFrame,
    policy: str | Policy = "continuous",
    *,
    model: str | ModelSpec = "llama-2-7b",
    gpu: str | DeviceSpec = "h100-sxm",
    step_time: StepTimeModel | pd.DataFrame | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    progress: bool = False,
    burstiness: float = 1.0,
    think_time_ms: float = 0.0,
    kv_blocks: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    memory_fraction: float = 0.9,
    **policy_options: Any,
) -> SimulationResult:
    """Simulate serving ``requests`` with a batching policy on one model replica.

    ``requests``: request_id, prompt_len, gen_len (tokens), and ``arrival_s`` (seconds) unless
    ``rate`` (requests/s: arrivals re-drawn with ``seed``, Poisson or gamma with CV
    ``burstiness``) or ``concurrency`` (closed loop of that many clients, ``think_time_ms``
    between a response and the client's next request) is given; optional ``priority``.
    ``policy``: a name in :data:`POLICIES` (options as keywords, e.g. ``max_num_seqs=64``) or a
    :class:`Policy`. Step times: ``step_time`` (a StepTimeModel or a measured table), else the
    roofline of ``model`` on ``gpu``. KV cache: ``kv_blocks`` blocks of ``block_size`` tokens,
    by default what fits beside the weights in ``memory_fraction`` of ``gpu``'s memory
    (:func:`batchlab.roofline.max_kv_tokens`). ``progress`` shows a tqdm bar of finished requests.
    """
    df = validate_requests(requests)
    n = len(df)
    pol = make_policy(policy, **policy_options)
    st = _resolve_step_time(step_time, model, gpu)
    bs = _pos_int(block_size, "block_size")
    if kv_blocks is None:
        tokens = max_kv_tokens(model, gpu, memory_fraction)
        if tokens < bs:
            spec, dev = get_model(model), get_gpu(gpu)
            raise InputError(
                f"the weights of {spec.name} ({spec.weight_bytes / 1e9:.1f} GB) leave no room for "
                f"a KV cache in {memory_fraction:g} of {dev.name}'s {dev.memory_bytes / 1e9:.1f} GB "
                "(use a larger or scaled GPU, e.g. '4xa100-80gb', or give kv_blocks)",
                field="gpu",
            )
        kvb = tokens // bs
    else:
        kvb = _pos_int(kv_blocks, "kv_blocks")
    prompt = df["prompt_len"].to_numpy(dtype=np.int64)
    gen = df["gen_len"].to_numpy(dtype=np.int64)
    prio_values, levels = _priority_levels(df)
    think: float | None = None
    if concurrency is None and think_time_ms != 0:
        raise InputError(
            "think_time_ms applies to a closed loop (concurrency=)", field="think_time_ms"
        )
    if rate is None and burstiness != 1.0:
        raise InputError("burstiness applies to drawn arrivals (rate=)", field="burstiness")
    if concurrency is not None and rate is not None:
        raise InputError(
            "give rate (open loop) or concurrency (closed loop), not both", field="rate"
        )
    if concurrency is not None:
        c = _pos_int(concurrency, "concurrency")
        think = _nonneg(think_time_ms, "think_time_ms")
        arrival = np.full(n, np.nan)
        known = min(c, n)
        arrival[:known] = 0.0
        order = np.arange(n, dtype=np.int64)
        mode = "closed"
    elif rate is not None:
        arrival = draw_arrivals(n, rate, seed=seed, burstiness=burstiness) * 1e3
        order = np.arange(n, dtype=np.int64)
        known = n
        mode = "rate"
    else:
        if "arrival_s" not in df.columns:
            raise InputError(
                "requests have no arrival_s column: give rate= (open loop) or concurrency= "
                "(closed loop)",
                field="arrival_s",
            )
        arrival = df["arrival_s"].to_numpy(dtype=np.float64) * 1e3
        order = np.argsort(arrival, kind="stable").astype(np.int64)
        known = n
        mode = "trace"
    state = SimState(
        prompt, gen, levels, arrival, order, known, st, kvb, bs, think, df["request_id"].tolist()
    )
    pol.setup(state)
    _run(state, pol, progress)

    out = df.drop(columns=[c for c in ("arrival_s",) if c in df.columns]).copy()
    if "priority" not in out.columns:
        out["priority"] = prio_values
    out["arrival_ms"] = state.arrival
    out["start_ms"] = state.start
    out["first_token_ms"] = state.first
    out["last_token_ms"] = state.last
    out["finish_ms"] = state.finish
    out["queue_ms"] = state.start - state.arrival
    out["ttft_ms"] = state.first - state.arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        out["tpot_ms"] = np.where(gen > 1, (state.last - state.first) / (gen - 1), np.nan)
    out["latency_ms"] = state.finish - state.arrival
    out["preemptions"] = state.preemptions
    out["batch_id"] = state.batch_id
    steps = pd.DataFrame(state.log, columns=list(STEP_COLUMNS))
    for col in _STEP_INT:
        steps[col] = steps[col].astype(np.int64)
    return SimulationResult(
        requests=out,
        steps=steps,
        policy=pol.name,
        options=dict(pol.options()),
        kv_blocks=kvb,
        block_size=bs,
        mode=mode,
        step_time=repr(st),
    )


def _run(state: SimState, pol: Policy, progress: bool) -> None:
    """The event loop: hand over arrivals, start what the policy says, advance the clock."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=state.n, unit="req", desc=f"simulate {pol.name}")
    shown = 0
    n = state.n
    try:
        while state.finished < n:
            arrived = state.take_arrivals()
            if arrived is not None:
                pol.on_arrivals(state, arrived)
            b = pol.next_batch(state)
            if b is None:
                t = min(state.next_arrival(), pol.wake_time(state))
                if t == _INF:
                    if pol.flush(state):
                        continue
                    raise RuntimeError(
                        f"simulation stalled at {state.clock:.3f} ms with "
                        f"{n - state.finished} requests unfinished"
                    )
                if t > state.clock:
                    state.clock = t
                continue
            state.clock = b.start_ms + b.duration_ms
            state.record(b)
            pol.on_batch_end(state, b)
            if bar is not None and state.finished - shown >= 256:
                bar.update(state.finished - shown)
                shown = state.finished
    finally:
        if bar is not None:
            bar.update(state.finished - shown)
            bar.close()


# --------------------------------------------------------------------------------------------
# load sweeps and knees


def load_sweep(
    requests: pd.DataFrame,
    policy: str | Policy = "continuous",
    *,
    rates: Sequence[float] | None = None,
    concurrencies: Sequence[int] | None = None,
    model: str | ModelSpec = "llama-2-7b",
    gpu: str | DeviceSpec = "h100-sxm",
    step_time: StepTimeModel | pd.DataFrame | None = None,
    seed: int = 0,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Simulate at increasing load: open-loop ``rates`` (requests/s) and/or closed-loop
    ``concurrencies`` (clients). One row per level: ``mode`` ("rate"/"closed"), ``level``, and
    the :meth:`SimulationResult.summary` figures (throughput, p50/p95/p99 latencies, ...).
    Every rate level re-draws arrivals with the same ``seed``. Other keywords go to
    :func:`simulate` (policy options, ``kv_blocks``, ``burstiness``, ...)."""
    if rates is None and concurrencies is None:
        raise InputError("give rates= and/or concurrencies=", field="rates")
    if isinstance(policy, Policy):
        raise InputError(
            "give the policy by name (each level needs a fresh policy)", field="policy"
        )
    levels: list[tuple[str, float]] = []
    for r in rates or ():
        levels.append(("rate", _positive(r, "rates")))
    for c in concurrencies or ():
        levels.append(("closed", _pos_int(c, "concurrencies")))
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels), unit="level", desc="load sweep")
    try:
        for mode, level in levels:
            kw: dict[str, Any] = {"rate": level} if mode == "rate" else {"concurrency": int(level)}
            res = simulate(
                requests,
                policy,
                model=model,
                gpu=gpu,
                step_time=step_time,
                seed=seed,
                **kw,
                **options,
            )
            row = {"mode": mode, "level": level}
            row.update(res.summary())
            rows.append(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows)


def find_knee(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    method: str = "threshold",
    factor: float = 2.0,
) -> float:
    """The load level where ``y`` (e.g. p99 latency) starts to degrade as ``x`` (load) grows.

    ``method="threshold"`` (default): rows sorted by ``x``; the baseline is ``y`` at the
    smallest ``x``; the knee is the largest ``x`` before the first row whose ``y`` exceeds
    ``factor × baseline``. NaN if no row exceeds it (no knee within the sweep).

    ``method="kneedle"``: ``x`` and ``y`` scaled to [0, 1] between the first and last rows; the
    knee is the ``x`` of the row farthest from the chord (largest ``|y_n − x_n|``, on the side
    where the curve lies: below it for a convex, rising latency curve, above it for a
    saturating throughput curve). NaN with fewer than 3 rows or a flat curve.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(df).__name__}", field="df")
    for col in (x, y):
        if col not in df.columns:
            raise InputError("missing column", field=col)
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=np.float64)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size == 0:
        return math.nan
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if method == "threshold":
        f = _positive(factor, "factor")
        base = ys[0]
        if base <= 0:
            raise InputError(f"the lowest load's {y} must be positive, got {base!r}", field=y)
        over = np.flatnonzero(ys > f * base)
        if over.size == 0:
            return math.nan
        i = int(over[0])
        return float(xs[i - 1]) if i > 0 else math.nan
    if method == "kneedle":
        if xs.size < 3 or xs[-1] == xs[0] or ys[-1] == ys[0]:
            return math.nan
        xn = (xs - xs[0]) / (xs[-1] - xs[0])
        yn = (ys - ys[0]) / (ys[-1] - ys[0])
        diff = yn - xn
        side = -1.0 if diff.sum() < 0 else 1.0
        score = side * diff
        i = int(np.argmax(score))
        if score[i] <= 1e-12:
            return math.nan
        return float(xs[i])
    raise InputError(f"unknown method {method!r}; known: threshold, kneedle", field="method")
