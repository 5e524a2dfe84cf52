"""Adaptive batching: dynamic batching whose batch-size limit keeps a time-per-output-token target."""

from __future__ import annotations

from batchlab.simulate.policies.base import Knob, register_policy
from batchlab.simulate.policies.dynamic import DYNAMIC_KNOBS, DynamicPolicy
from batchlab.simulate.state import Batch, SimState

__all__ = ["DEFAULT_TARGET_TPOT_MS", "AdaptivePolicy"]

#: The default target time per output token (ms): 20 tokens/s per request, a common
#: interactive service level (and well above a 7B model's decode step on a data-centre GPU).
DEFAULT_TARGET_TPOT_MS = 50.0


@register_policy
class AdaptivePolicy(DynamicPolicy):
    """Adaptive batching: dynamic batching whose batch-size limit follows a time-per-output-token
    target (additive increase, multiplicative decrease, as in Clipper).

    After each batch whose requests decode (``G_max > 1``), the controller compares the batch's
    time per output token, its decode time over its decode steps ((end − first token) / (G_max
    − 1), ms), with ``target_tpot_ms``: above it the limit becomes ``max(min_batch_size,
    floor(limit · decrease))``, otherwise ``min(max_batch_size, limit + increase)``. The limit
    starts at ``max_batch_size``.

    The time per output token grows with the batch (more KV cache read per step, more compute),
    so the controller finds the largest batch that keeps the target. (A padded batch's whole
    duration is no signal for it: it is set by the longest generation that happens to be in the
    batch, whatever its size, which drove the limit down to one or two requests.) Dynamic
    batching's own optional controller (``target_latency_ms``, on the batch duration) is not a
    knob of this policy.
    """

    name = "adaptive"
    knobs = (
        Knob(
            "target_tpot_ms",
            float,
            DEFAULT_TARGET_TPOT_MS,
            "target time per output token of a batch (decode time / decode steps)",
            unit="ms",
            min_val=0,
            include_boundaries="neither",
        ),
        *(k for k in DYNAMIC_KNOBS if k.name != "target_latency_ms"),
    )

    target_latency_ms = None  # dynamic batching's batch-duration controller: off

    def on_batch_end(self, state: SimState, batch: Batch) -> None:
        if batch.n_steps <= 1 or batch.first_ms is None:
            return
        tpot_ms = (batch.end_ms - float(batch.first_ms)) / (batch.n_steps - 1)
        if tpot_ms > self.target_tpot_ms:
            self._batch_limit = max(self.min_batch_size, int(self._batch_limit * self.decrease))
        else:
            self._batch_limit = min(self.max_batch_size, self._batch_limit + self.increase)
