"""Adaptive batching: dynamic batching whose batch-size limit follows a latency target."""

from __future__ import annotations

from dataclasses import replace

from batchlab.simulate.policies.base import register_policy
from batchlab.simulate.policies.dynamic import DYNAMIC_KNOBS, DynamicPolicy

__all__ = ["AdaptivePolicy"]

_TARGET = next(k for k in DYNAMIC_KNOBS if k.name == "target_latency_ms")


@register_policy
class AdaptivePolicy(DynamicPolicy):
    """Adaptive batching: dynamic batching with the batch-size controller always on.

    ``target_latency_ms`` (default 1000 ms of batch duration) is required; see
    :class:`~batchlab.simulate.policies.dynamic.DynamicPolicy` for the controller.
    """

    name = "adaptive"
    knobs = (
        replace(
            _TARGET,
            default=1000.0,
            allow_none=False,
            help="target batch duration of the controller",
        ),
        *(k for k in DYNAMIC_KNOBS if k.name != "target_latency_ms"),
    )
