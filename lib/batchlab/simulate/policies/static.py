"""Static batching: fixed-size padded batches, one after the other."""

from __future__ import annotations

from batchlab.simulate.policies.base import BATCH_LIMIT, MAX_WAIT, Knob, register_policy
from batchlab.simulate.policies.padded import PaddedPolicy
from batchlab.simulate.state import INF, SimState

__all__ = ["StaticPolicy"]


@register_policy
class StaticPolicy(PaddedPolicy):
    """Static batching: a batch of ``batch_size`` requests starts when that many wait.

    With ``timeout_ms`` a partial batch starts when the oldest waiting request has waited that
    long, and when no more requests can arrive whatever waits starts. The batch is padded to
    its longest prompt and runs until its longest request finishes; the next batch starts after
    it.
    """

    name = "static"
    knobs = (
        Knob(
            "batch_size",
            int,
            8,
            "requests per batch",
            unit="requests",
            min_val=1,
            explorer=BATCH_LIMIT,
        ),
        Knob(
            "timeout_ms",
            float,
            None,
            "start a partial batch once the oldest request waited this long (None: never)",
            unit="ms",
            min_val=0,
            allow_none=True,
            explorer=MAX_WAIT,
        ),
    )

    def limit(self) -> int:
        return self.batch_size

    def ready(self, state: SimState) -> int | None:
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
            return INF
        return q.oldest(state.arrival) + self.timeout_ms
