"""Routers of a fleet of replicas, one module each, behind :class:`~.base.Router`.

Importing this package registers the built-in routers in :data:`ROUTERS`: ``round-robin``
(oblivious), ``least-requests`` and ``least-tokens`` (state-aware, least outstanding load). A
router of your own subclasses :class:`Router` and is added with :func:`register_router`.
"""

from __future__ import annotations

from batchlab.simulate.routers.base import (
    ROUTERS,
    Router,
    get_router,
    make_router,
    register_router,
)
from batchlab.simulate.routers.least_requests import LeastRequestsRouter
from batchlab.simulate.routers.least_tokens import LeastTokensRouter
from batchlab.simulate.routers.round_robin import RoundRobinRouter

__all__ = [
    "ROUTERS",
    "LeastRequestsRouter",
    "LeastTokensRouter",
    "RoundRobinRouter",
    "Router",
    "get_router",
    "make_router",
    "register_router",
]

# The built-ins in this order (registration follows import order).
for _cls in (RoundRobinRouter, LeastRequestsRouter, LeastTokensRouter):
    ROUTERS[_cls.name] = ROUTERS.pop(_cls.name)
del _cls
