"""Least outstanding tokens (KV-aware): each arrival goes to the replica whose outstanding
requests will hold the fewest KV-cache tokens."""

from __future__ import annotations

import numpy as np

from batchlab.simulate.routers.base import Router, register_router
from batchlab.simulate.state import RequestArrays

__all__ = ["LeastTokensRouter"]


@register_router
class LeastTokensRouter(Router):
    """Least outstanding tokens (KV-aware): the replica whose outstanding requests (routed and
    not finished) total the fewest ``prompt_len + gen_len`` tokens, the KV cache they hold at
    their longest; the lowest index among ties."""

    name = "least-tokens"
    oblivious = False
    summary = "the replica whose outstanding requests hold the fewest KV tokens (prompt + gen)"

    def weights(self, requests: RequestArrays) -> np.ndarray:
        return (requests.prompt + requests.gen).astype(np.int64)
