"""Least outstanding requests: each arrival goes to the replica with the fewest requests
routed to it and not finished (waiting or running)."""

from __future__ import annotations

from batchlab.simulate.routers.base import Router, register_router

__all__ = ["LeastRequestsRouter"]


@register_router
class LeastRequestsRouter(Router):
    """Least outstanding requests: the replica with the fewest requests routed to it and not
    yet finished at the arrival (waiting or running), the lowest index among ties."""

    name = "least-requests"
    oblivious = False
    summary = "the replica with the fewest outstanding requests"

    def quiet_arrivals(self, load, others, upcoming) -> int:
        """Each arrival adds 1: the others absorb ``Σ max(0, load − other)`` arrivals before
        any of them reaches ``load``."""
        return min(sum(load - o for o in others if o < load), int(upcoming.size))
