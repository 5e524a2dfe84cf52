"""What the engine knows during a run: the requests, their arrivals, their records, a replica.

The pieces are separate so that several replicas can later share one request stream:

* :class:`RequestArrays`: the requests of the run (lengths, priority levels, ids), fixed;
* :class:`ArrivalStream`: when each request arrives (trace, drawn, or closed loop), in
  issue order, and which have been handed over;
* :class:`Records`: what happened to each request (start, first and last token, finish,
  preemptions, batch) and the engine's own count of requests in the system;
* :class:`SimState`: one replica, what a policy sees: its clock, KV-cache budget, step-time
  model and step log, with the arrays above as attributes;
* :class:`Batch`: one unit of work a policy starts; :class:`WaitQueue`: waiting requests by
  priority level.

Times are in ms, lengths in tokens.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchlab.errors import InputError
from batchlab.steptime import StepBatch, StepTimeModel, wake_ms_of

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "INF",
    "PRIORITY_NAMES",
    "STEP_COLUMNS",
    "ArrivalStream",
    "Batch",
    "Records",
    "RequestArrays",
    "SimState",
    "WaitQueue",
    "blocks",
    "check_kv_feasible",
]

PRIORITY_NAMES = {"high": 0, "normal": 1, "low": 2}
DEFAULT_BLOCK_SIZE = 16
INF = math.inf

#: Columns of ``SimulationResult.steps``, one row per :class:`Batch` (see ``Batch``).
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


def blocks(tokens: Any, block_size: int) -> Any:
    """KV-cache blocks holding ``tokens`` tokens: ``⌈tokens / block_size⌉`` (ints or arrays)."""
    return -(-tokens // block_size)


@dataclass(frozen=True, eq=False)
class RequestArrays:
    """The requests of a run, by position: ``prompt``, ``gen`` (tokens, int64), ``level``
    (dense priority level, 0 is served first), ``n_levels`` and ``request_ids``."""

    prompt: np.ndarray
    gen: np.ndarray
    level: np.ndarray
    request_ids: Sequence[str]

    @property
    def n(self) -> int:
        """Number of requests."""
        return int(self.prompt.size)

    @property
    def n_levels(self) -> int:
        """Number of priority levels."""
        return int(self.level.max()) + 1 if self.n else 1


class ArrivalStream:
    """Arrival times (ms) of the requests, handed over in issue ``order``.

    ``arrival_ms[i]`` is NaN until request ``i`` is known (a closed-loop client sends it only
    after its previous response). The first ``known`` requests of ``order`` have a time; the
    first ``delivered`` of them have been handed to the policy. ``think_ms`` (closed loop): a
    finished request lets its client send the next request of ``order`` that much later.
    """

    def __init__(
        self, arrival_ms: np.ndarray, order: np.ndarray, known: int, think_ms: float | None
    ) -> None:
        n = arrival_ms.size
        self.arrival_ms = arrival_ms
        self.order = order
        self.sorted_ms = np.full(n, np.nan)
        self.sorted_ms[:known] = arrival_ms[order[:known]]
        self.n = n
        self.known = known
        self.delivered = 0
        self.closed = think_ms is not None
        self.think_ms = 0.0 if think_ms is None else float(think_ms)

    def next_ms(self) -> float:
        """Time (ms) of the next arrival not yet handed over (inf if none is known)."""
        d = self.delivered
        return float(self.sorted_ms[d]) if d < self.known else INF

    def take(self, clock_ms: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Requests arrived by ``clock_ms`` and not yet handed over: their positions (in
        arrival order) and the arrival times (ms) the stream released them at."""
        d, k = self.delivered, self.known
        if d >= k or self.sorted_ms[d] > clock_ms:
            return None
        j = d + int(np.searchsorted(self.sorted_ms[d:k], clock_ms, side="right"))
        self.delivered = j
        return self.order[d:j], self.sorted_ms[d:j]

    def on_finished(self, count: int, end_ms: float) -> None:
        """``count`` responses completed at ``end_ms``: in a closed loop their clients send the
        next requests ``think_ms`` later."""
        if not self.closed or self.known >= self.n:
            return
        r = min(count, self.n - self.known)
        k = self.known
        t = end_ms + self.think_ms
        self.sorted_ms[k : k + r] = t
        self.arrival_ms[self.order[k : k + r]] = t
        self.known = k + r


class Records:
    """What happened to every request (arrays by position, NaN until known) and the engine's
    own count of requests in the system.

    ``start``, ``first``, ``last``, ``finish`` (ms), ``preemptions`` and ``batch_id`` (padded
    policies; -1 otherwise); ``finished`` counts finished requests. ``in_system`` is the number
    of requests handed to a policy and not finished; ``occupancy_ms`` integrates it over time
    (request·ms), exactly, from the engine's own events: each delivery at the request's arrival
    time and each completion at the end of the unit of work that finished it.
    """

    def __init__(self, n: int) -> None:
        self.start = np.full(n, np.nan)
        self.first = np.full(n, np.nan)
        self.last = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.batch_id = np.full(n, -1, dtype=np.int64)
        self._zero_counters()

    @classmethod
    def sharing(cls, other: Records) -> Records:
        """Records that write into ``other``'s per-request arrays but keep counters of their
        own (``finished``, ``in_system``, the occupancy integral): one replica of a fleet,
        whose replicas serve disjoint sets of requests."""
        rec = cls.__new__(cls)
        rec.start, rec.first, rec.last, rec.finish = (
            other.start,
            other.first,
            other.last,
            other.finish,
        )
        rec.preemptions, rec.batch_id = other.preemptions, other.batch_id
        rec._zero_counters()
        return rec

    def _zero_counters(self) -> None:
        self.finished = 0
        self.in_system = 0
        self.occupancy_ms = 0.0
        self.first_event_ms = INF
        self.last_event_ms = -INF
        self._t = -INF

    def _advance(self, t_ms: float) -> None:
        if self.in_system:
            self.occupancy_ms += self.in_system * (t_ms - self._t)
        self._t = t_ms

    def delivered(self, arrival_ms: np.ndarray, now_ms: float) -> None:
        """Requests that arrived at ``arrival_ms`` (each <= ``now_ms``) are handed over now."""
        self._advance(now_ms)
        times = arrival_ms.tolist()  # a few values: plain floats are faster than numpy here
        self.in_system += len(times)
        self.occupancy_ms += now_ms * len(times) - sum(times)
        self.first_event_ms = min(self.first_event_ms, min(times))

    def record(self, b: Batch) -> int:
        """Write a finished unit's times into the arrays; the number of requests it finished."""
        end = b.start_ms + b.duration_ms
        if b.started is not None:
            s = b.started
            s = s[np.isnan(self.start[s])]
            self.start[s] = b.start_ms
        if b.first is not None:
            self.first[b.first] = b.first_ms
        count = 0
        if b.finished is not None and b.finished.size:
            f = b.finished
            self.finish[f] = end
            self.last[f] = end if b.last_ms is None else b.last_ms
            count = int(f.size)
            self.finished += count
            self._advance(end)
            self.in_system -= count
            self.last_event_ms = max(self.last_event_ms, end)
        return count


class WaitQueue:
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
        """Put a request back at the head of its level (a preempted or cut-off request)."""
        self._q[level].appendleft(i)
        self._n += 1

    def peek(self) -> int:
        """The request served next."""
        for q in self._q:
            if q:
                return q[0]
        raise IndexError("empty queue")

    def pop(self) -> int:
        """Remove and return the request served next."""
        for q in self._q:
            if q:
                self._n -= 1
                return q.popleft()
        raise IndexError("empty queue")

    def pop_many(self, k: int) -> list[int]:
        """Remove and return up to ``k`` requests in service order."""
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
        best = INF
        for q in self._q:
            if q:
                a = arrival[q[0]]
                if a < best:
                    best = a
        return float(best)


@dataclass(slots=True, eq=False)
class Batch:
    """One unit of work a policy starts: a padded batch, one step, or a run of decode steps.

    ``first``: requests emitting their first token (at ``first_ms``); ``finished``: requests
    leaving at the end (their last token at ``last_ms``, the end when None); ``started``:
    requests scheduled in this unit (their first time sets ``start_ms``). The other fields are
    the columns of the step log (:data:`STEP_COLUMNS`); ``running`` defaults to ``size``.
    """

    start_ms: float
    duration_ms: float
    n_steps: int
    size: int
    running: int = -1
    prefill_tokens: int = 0
    decode_seqs: int = 0
    kv_blocks: int = 0
    queue_len: int = 0
    gen_tokens: int = 0
    slot_tokens: int = 0
    limit: int = 0
    started: np.ndarray | None = None
    first: np.ndarray | None = None
    first_ms: Any = None
    finished: np.ndarray | None = None
    last_ms: Any = None

    def __post_init__(self) -> None:
        if self.running < 0:
            self.running = self.size

    @property
    def end_ms(self) -> float:
        """When the unit ends (ms)."""
        return self.start_ms + self.duration_ms

    def delay(self, ms: float) -> None:
        """Lengthen the unit by ``ms`` at its start: its end and its requests' token times move."""
        self.duration_ms += ms
        if self.first_ms is not None:
            self.first_ms = self.first_ms + ms
        if self.last_ms is not None:
            self.last_ms = self.last_ms + ms

    def log_row(self) -> tuple:
        """The unit's row of the step log, in :data:`STEP_COLUMNS` order."""
        return (
            self.start_ms,
            self.duration_ms,
            self.n_steps,
            self.size,
            self.running,
            self.prefill_tokens,
            self.decode_seqs,
            self.kv_blocks,
            self.queue_len,
            self.gen_tokens,
            self.slot_tokens,
            self.limit,
        )


class SimState:
    """One replica, as a policy sees it.

    Request arrays (by position): ``prompt``, ``gen`` (tokens), ``level``, ``arrival`` (ms;
    NaN until known), and the records ``first``, ``preemptions`` and ``batch_id`` that policies
    read or write; ``n``, ``n_levels``, ``request_ids``. The replica's own ``clock`` (ms),
    ``step_time`` (a :class:`~batchlab.steptime.StepTimeModel`), KV-cache budget
    ``kv_blocks`` of ``block_size`` tokens, and ``log`` (rows of the step table).
    """

    def __init__(
        self,
        requests: RequestArrays,
        arrivals: ArrivalStream,
        records: Records,
        step_time: StepTimeModel,
        kv_blocks: int,
        block_size: int,
    ) -> None:
        self.requests = requests
        self.arrivals = arrivals
        self.records = records
        self.n = requests.n
        self.n_levels = requests.n_levels
        self.prompt = requests.prompt
        self.gen = requests.gen
        self.level = requests.level
        self.request_ids = requests.request_ids
        self.arrival = arrivals.arrival_ms
        self.first = records.first
        self.preemptions = records.preemptions
        self.batch_id = records.batch_id
        self.clock = 0.0
        self.step_time = step_time
        #: extra time (ms) of a unit of work that starts after the replica sat idle
        #: (``FittedStepTime.wake_ms``; 0 for most models)
        self.wake_ms = wake_ms_of(step_time)
        #: when the replica's last unit of work ended (ms)
        self.last_end_ms = 0.0
        #: True when the step-time model wants each decoder's context length
        self.context_lens = bool(step_time.needs_context_lens)
        self.kv_blocks = kv_blocks
        self.block_size = block_size
        self.log: list[tuple] = []

    def next_arrival(self) -> float:
        """Time (ms) of the next arrival not yet handed over (inf if none is known)."""
        return self.arrivals.next_ms()

    def step_ms(self, batch: StepBatch) -> float:
        """Duration (ms) of one step on this replica."""
        return self.step_time.duration_ms(batch)

    def decode_steps_ms(self, batch: StepBatch, n_steps: int) -> np.ndarray:
        """Durations (ms) of ``n_steps`` decode steps of ``batch``'s sequences on this replica."""
        return np.asarray(self.step_time.decode_steps_ms(batch, n_steps), dtype=np.float64)

    def record(self, b: Batch) -> int:
        """Log a finished unit of work and record its requests; the number it finished."""
        self.log.append(b.log_row())
        return self.records.record(b)


def check_kv_feasible(state: SimState, reserve: int, what: str) -> None:
    """Every request must fit alone in the KV cache (with ``reserve`` blocks kept free)."""
    bs = state.block_size
    need = blocks(state.prompt + state.gen - 1, bs)
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
