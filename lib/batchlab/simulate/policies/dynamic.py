"""Dynamic batching: a padded batch starts when it is full or its oldest request waited enough."""

from __future__ import annotations

import numpy as np

from batchlab.errors import InputError
from batchlab.simulate.policies.base import BATCH_LIMIT, MAX_WAIT, Knob, register_policy
from batchlab.simulate.policies.padded import PaddedPolicy
from batchlab.simulate.state import INF, Batch, SimState

__all__ = ["DYNAMIC_KNOBS", "DynamicPolicy"]

#: The knobs of dynamic batching (the adaptive policy reuses them).
DYNAMIC_KNOBS = (
    Knob(
        "max_batch_size",
        int,
        32,
        "batch-size limit",
        unit="requests",
        min_val=1,
        explorer=BATCH_LIMIT,
    ),
    Knob(
        "max_wait_ms",
        float,
        50.0,
        "longest wait of the oldest request before a partial batch starts",
        unit="ms",
        min_val=0,
        allow_inf=True,
        explorer=MAX_WAIT,
    ),
    Knob(
        "bucket_edges",
        int,
        None,
        "increasing prompt-length edges: a batch holds one bucket (None: one bucket)",
        unit="tokens",
        min_val=1,
        allow_none=True,
        sequence=True,
    ),
    Knob(
        "target_latency_ms",
        float,
        None,
        "target batch duration of the adaptive controller (None: no controller)",
        unit="ms",
        min_val=0,
        include_boundaries="neither",
        allow_none=True,
    ),
    Knob("min_batch_size", int, 1, "adaptive controller: smallest limit", min_val=1),
    Knob("increase", int, 1, "adaptive controller: additive increase", min_val=1),
    Knob(
        "decrease",
        float,
        0.5,
        "adaptive controller: multiplicative decrease",
        min_val=0,
        max_val=1,
        include_boundaries="neither",
    ),
)


@register_policy
class DynamicPolicy(PaddedPolicy):
    """Dynamic batching: a batch starts when ``max_batch_size`` wait or the oldest waited
    ``max_wait_ms``.

    When the server is free, whichever comes first. ``bucket_edges`` (tokens, increasing): a
    request with ``prompt_len <= edges[i]`` (and above the previous edge) joins bucket ``i``,
    longer ones a last bucket; a batch holds one bucket. Among ready buckets the one whose head
    request is first in (priority, arrival) order goes.

    ``target_latency_ms``: an adaptive controller (additive increase, multiplicative decrease,
    as in Clipper) sets the batch-size limit: after each batch, if its duration (ms) exceeded
    the target the limit becomes ``max(min_batch_size, floor(limit · decrease))``, otherwise
    ``min(max_batch_size, limit + increase)``. The limit starts at ``max_batch_size``.
    """

    name = "dynamic"
    knobs = DYNAMIC_KNOBS

    def validate(self) -> None:
        edges = self.bucket_edges
        if edges is not None and (not edges or any(np.diff(edges) <= 0)):
            raise InputError(
                f"must be increasing positive whole numbers of tokens, got {list(edges)!r}",
                field="bucket_edges",
            )
        if self.min_batch_size > self.max_batch_size:
            raise InputError(
                f"min_batch_size {self.min_batch_size} > max_batch_size {self.max_batch_size}",
                field="min_batch_size",
            )
        self._batch_limit = self.max_batch_size

    def setup(self, state: SimState) -> None:
        super().setup(state)
        self._batch_limit = self.max_batch_size

    def buckets(self, state: SimState) -> np.ndarray | None:
        if self.bucket_edges is None:
            return None
        return np.searchsorted(np.asarray(self.bucket_edges), state.prompt, side="left")

    def limit(self) -> int:
        return self._batch_limit

    def ready(self, state: SimState) -> int | None:
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
        return self.best_nonempty(state, ready)

    def wake_time(self, state: SimState) -> float:
        t = INF
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
