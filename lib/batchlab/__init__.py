"""batchlab: batching LLM inference requests, measured on your own workload."""

from __future__ import annotations

__version__ = "0.1.0"
