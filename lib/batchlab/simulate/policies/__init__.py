"""Batching policies, one module each, behind :class:`~batchlab.simulate.policies.base.Policy`.

Importing this package registers the built-in policies in :data:`POLICIES`: ``static``,
``dynamic``, ``adaptive`` (request-level, padded) and ``continuous`` (iteration-level). A policy
of your own subclasses :class:`Policy` (or one of these), declares ``name``,
``iteration_level`` and its ``knobs``, and is added with :func:`register_policy`.
"""

from __future__ import annotations

from batchlab.simulate.policies.adaptive import AdaptivePolicy
from batchlab.simulate.policies.base import (
    BATCH_LIMIT,
    MAX_WAIT,
    POLICIES,
    Knob,
    Policy,
    Slider,
    explorer_options,
    explorer_sliders,
    get_policy,
    make_policy,
    register_policy,
)
from batchlab.simulate.policies.continuous import (
    BATCHED_TOKENS,
    CHUNKED_PREFILL,
    ContinuousPolicy,
    Prefill,
)
from batchlab.simulate.policies.dynamic import DynamicPolicy
from batchlab.simulate.policies.padded import PaddedPolicy
from batchlab.simulate.policies.static import StaticPolicy

__all__ = [
    "BATCHED_TOKENS",
    "BATCH_LIMIT",
    "CHUNKED_PREFILL",
    "MAX_WAIT",
    "POLICIES",
    "AdaptivePolicy",
    "ContinuousPolicy",
    "DynamicPolicy",
    "Knob",
    "PaddedPolicy",
    "Policy",
    "Prefill",
    "Slider",
    "StaticPolicy",
    "explorer_options",
    "explorer_sliders",
    "get_policy",
    "make_policy",
    "register_policy",
]

# The built-ins in their teaching order (registration follows import order).
for _cls in (StaticPolicy, DynamicPolicy, AdaptivePolicy, ContinuousPolicy):
    POLICIES[_cls.name] = POLICIES.pop(_cls.name)
del _cls
