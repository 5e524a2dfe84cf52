"""The router base class and the registry: which replica of a fleet serves an arriving request.

A router *declares* what it is, as the batching policies do:

* ``name``: the registry key (``simulate_fleet(..., router="least-tokens")``, ``--router``);
* ``oblivious``: True when the choice depends only on the arrival order (round-robin): the
  fleet then routes every request up front and the replicas run independently; False when it
  depends on the replicas' state at the arrival (the least-load routers).

State-aware routers are *least-load* routers: each request adds :meth:`Router.weights` to the
load of the replica it is sent to until it finishes, and :meth:`Router.choose` picks the replica
with the least outstanding load (the lowest index among ties), exactly at the arrival time.
:meth:`Router.quiet_arrivals` bounds how many of the next arrivals certainly go elsewhere, which
lets a replica run many decode steps at once without missing an arrival it will be sent.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from batchlab.errors import InputError
from batchlab.simulate.registry import Registry
from batchlab.simulate.state import RequestArrays

__all__ = ["ROUTERS", "Router", "get_router", "make_router", "register_router"]

_QUIET_CAP = 4096  # at most this many arrivals are looked ahead for one replica


class Router:
    """Sends each arriving request to one of ``n`` identical replicas.

    Subclasses declare ``name`` and ``oblivious``. An oblivious router implements
    :meth:`assign`; a state-aware one is a least-load router and implements :meth:`weights`
    (the default, one per request, counts outstanding requests).
    """

    name: ClassVar[str] = ""
    oblivious: ClassVar[bool] = False
    #: one line for the command line's help
    summary: ClassVar[str] = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- oblivious routers ------------------------------------------------------------------------

    def assign(self, n_replicas: int, order: np.ndarray, requests: RequestArrays) -> np.ndarray:
        """The replica (0..n_replicas-1, int64) of each request of ``order`` (positions in
        arrival order), decided from the order alone."""
        raise NotImplementedError(f"router {self.name!r} is not oblivious")

    # -- least-load routers -----------------------------------------------------------------------

    def weights(self, requests: RequestArrays) -> np.ndarray:
        """The load each request adds to its replica while it is outstanding (routed and not
        finished), by position: 1 (outstanding requests)."""
        return np.ones(requests.n, dtype=np.int64)

    def choose(self, loads: Sequence[Any]) -> int:
        """The replica with the least outstanding load (the lowest index among ties)."""
        best, best_load = 0, loads[0]
        for r in range(1, len(loads)):
            if loads[r] < best_load:
                best, best_load = r, loads[r]
        return best

    def quiet_arrivals(self, load: Any, others: Sequence[Any], upcoming: np.ndarray) -> int:
        """How many of the next arrivals (their weights ``upcoming``, in arrival order) are
        certainly *not* sent to a replica whose load stays ``load`` while the other replicas'
        loads are at most ``others`` now (finishes only lower them).

        Sound by a water-filling argument: each arrival goes to a least-loaded replica, and
        the sorted loads of the others stay, component by component, at most those of the same
        arrivals water-filled onto ``others``; while that water level is below ``load`` the
        replica cannot be the least loaded.
        """
        if not len(others):
            return 0
        if min(others) >= load:
            return 0
        heap = list(others)
        heapq.heapify(heap)
        k = 0
        for w in upcoming[:_QUIET_CAP].tolist():
            low = heap[0]
            if low >= load:
                break
            heapq.heapreplace(heap, low + w)
            k += 1
        return k


ROUTERS: Registry[type[Router]] = Registry(Router, "router")
"""The registered routers by name (``register_router`` adds one)."""


def register_router(cls: type[Router]) -> type[Router]:
    """Add a :class:`Router` subclass to :data:`ROUTERS` under its ``name`` (a decorator)."""
    return ROUTERS.register(cls)


def get_router(name: str) -> type[Router]:
    """The registered router class ``name`` (case-insensitive); InputError listing them."""
    return ROUTERS.lookup(name)


def make_router(router: str | Router) -> Router:
    """A router by name from :data:`ROUTERS`; a :class:`Router` instance is returned as is."""
    if isinstance(router, Router):
        return router
    if not isinstance(router, str):
        raise InputError(
            f"must be a router name or a Router, got {type(router).__name__}", field="router"
        )
    return get_router(router)()
