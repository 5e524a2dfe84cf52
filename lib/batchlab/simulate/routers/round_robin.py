"""Round-robin routing: the k-th request to arrive goes to replica k mod n."""

from __future__ import annotations

import numpy as np

from batchlab.simulate.routers.base import Router, register_router
from batchlab.simulate.state import RequestArrays

__all__ = ["RoundRobinRouter"]


@register_router
class RoundRobinRouter(Router):
    """Round robin: the k-th arrival (0-based, in arrival order) goes to replica ``k mod n``,
    whatever the replicas' state."""

    name = "round-robin"
    oblivious = True
    summary = "the k-th arrival goes to replica k mod n"

    def assign(self, n_replicas: int, order: np.ndarray, requests: RequestArrays) -> np.ndarray:
        return np.arange(order.size, dtype=np.int64) % int(n_replicas)
