"""The machinery shared by the padded (request-level) policies: static, dynamic, adaptive.

A padded batch of ``B`` requests runs as one prefill of ``B × P_max`` tokens (every sequence
emits its first token) and ``G_max − 1`` decode steps of the whole batch at context ``P_max +
j``; every request of the batch finishes at the batch's end (it holds its slot until its longest
request is done). It reserves ``B · ⌈(P_max + G_max − 1) / block_size⌉`` KV blocks (the padded
cache at its largest); a batch that would not fit is cut. The true ``gen_len`` is used (as if
each request's ``max_new_tokens`` were exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from batchlab.simulate.policies.base import Policy
from batchlab.simulate.state import Batch, SimState, WaitQueue, blocks, check_kv_feasible
from batchlab.steptime import StepBatch

__all__ = ["PaddedPolicy"]

_EMPTY = np.zeros(0, dtype=np.float64)


class PaddedPolicy(Policy):
    """Base of the request-level policies: queues (one per bucket), cutting a batch to the KV
    budget, and the timing of a padded batch. Subclasses say when a batch is ready
    (:meth:`ready`), its size limit (:meth:`limit`) and optionally the buckets."""

    iteration_level = False

    def setup(self, state: SimState) -> None:
        check_kv_feasible(state, 0, "")
        self._bucket_of = self.buckets(state)
        n_buckets = 1 if self._bucket_of is None else int(self._bucket_of.max()) + 1
        self._queues = [WaitQueue(state.n_levels) for _ in range(n_buckets)]
        self._flushing = False
        self._batch_no = 0

    def buckets(self, state: SimState) -> np.ndarray | None:
        """Bucket index per request (a batch holds one bucket), or None for one queue."""
        return None

    def limit(self) -> int:
        """The batch-size limit in force."""
        raise NotImplementedError

    def ready(self, state: SimState) -> int | None:
        """The queue whose batch starts now, or None."""
        raise NotImplementedError

    def on_arrivals(self, state: SimState, idx: np.ndarray) -> None:
        if self._bucket_of is None:
            self._queues[0].push(idx, state.level)
            return
        b = self._bucket_of[idx]
        for u in np.unique(b).tolist():
            self._queues[u].push(idx[b == u], state.level)

    def best_nonempty(self, state: SimState, candidates: Sequence[int]) -> int | None:
        """Among ``candidates``, the queue whose head comes first in (priority, arrival)."""
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
        qi = self.ready(state)
        if qi is None and self._flushing:
            qi = self.best_nonempty(state, range(len(self._queues)))
        if qi is None:
            return None
        self._flushing = False
        members = self._take(state, self._queues[qi], self.limit())
        return self._padded_batch(state, members, sum(len(q) for q in self._queues))

    def _take(self, state: SimState, q: WaitQueue, limit: int) -> np.ndarray:
        m = np.asarray(q.pop_many(limit), dtype=np.int64)
        p = np.maximum.accumulate(state.prompt[m])
        g = np.maximum.accumulate(state.gen[m])
        need = np.arange(1, m.size + 1) * blocks(p + g - 1, state.block_size)
        b = int(np.searchsorted(need, state.kv_blocks, side="right"))
        if b < m.size:
            for i in m[b:][::-1].tolist():
                q.push_front(i, int(state.level[i]))
            m = m[:b]
        return m

    def _padded_batch(self, state: SimState, m: np.ndarray, queue_len: int) -> Batch:
        B = int(m.size)
        g = state.gen[m]
        P = int(state.prompt[m].max())
        G = int(g.max())
        t0 = state.clock
        pre = state.step_ms(
            StepBatch(
                prefill_tokens=B * P,
                prefill_pairs=B * P * (P + 1) / 2.0,
                prefill_seqs=B,
                decode_context_lens=_EMPTY if state.context_lens else None,
            )
        )
        if G > 1:
            lens = np.full(B, P + 1, dtype=np.float64) if state.context_lens else None
            run = StepBatch(
                decode_seqs=B, decode_context=float(B * (P + 1)), decode_context_lens=lens
            )
            cum = np.cumsum(state.decode_steps_ms(run, G - 1))
            dec = float(cum[-1])
            last = np.minimum(
                t0 + pre + np.where(g > 1, cum[np.maximum(g - 2, 0)], 0.0), t0 + (pre + dec)
            )
        else:
            dec = 0.0
            last = np.full(B, t0 + pre)
        b = Batch(
            t0,
            pre + dec,
            G,
            B,
            prefill_tokens=B * P,
            decode_seqs=B if G > 1 else 0,
            kv_blocks=B * blocks(P + G - 1, state.block_size),
            queue_len=queue_len,
            gen_tokens=int(g.sum()),
            slot_tokens=B * G,
            limit=self.limit(),
            started=m,
            first=m,
            first_ms=t0 + pre,
            finished=m,
            last_ms=last,
        )
        state.batch_id[m] = self._batch_no
        self._batch_no += 1
        return b
