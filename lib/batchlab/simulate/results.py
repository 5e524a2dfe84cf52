"""The outcome of a simulation: per-request and per-step tables, aggregates, Little's law."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batchlab.simulate.state import DEFAULT_BLOCK_SIZE
from batchlab.stats import nearest_rank

__all__ = ["SimulationResult", "offered_rps", "overload_message"]

_PERCENTS = (50, 95, 99)

#: Overload: served below this share of the offered rate ...
OVERLOAD_SERVED_SHARE = 0.95
#: ... and request latency growing by more than this many ms per ms of arrivals (a queue that
#: grows with the run: offered / capacity − 1 under a constant overload).
OVERLOAD_LATENCY_SLOPE = 0.05
_OVERLOAD_MIN_REQUESTS = 10


def offered_rps(arrival_ms: np.ndarray, mode: str) -> float:
    """The offered load (requests/s): requests over the span of their arrival times (ms, first
    to last); NaN for a closed loop (``mode == "closed"``: the clients' pace follows the server)
    or fewer than two arrival times."""
    a = np.asarray(arrival_ms, dtype=np.float64)
    a = a[np.isfinite(a)]
    if mode == "closed" or a.size < 2:
        return math.nan
    span_s = float(a.max() - a.min()) / 1e3
    return a.size / span_s if span_s > 0 else math.nan


def _latency_growth(arrival_ms: np.ndarray, latency_ms: np.ndarray) -> float:
    a = np.asarray(arrival_ms, dtype=np.float64)
    lat = np.asarray(latency_ms, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(lat)
    a, lat = a[ok], lat[ok]
    if a.size < 2 or float(a.max() - a.min()) <= 0:
        return math.nan
    da = a - a.mean()
    return float((da * (lat - lat.mean())).sum() / (da * da).sum())


def overload_message(
    arrival_ms: np.ndarray, finish_ms: np.ndarray, latency_ms: np.ndarray, mode: str
) -> str | None:
    """``"overloaded: offered X req/s, served Y req/s ..."`` when an open-loop run (``mode``
    not ``"closed"``) of at least 10 requests serves below ``OVERLOAD_SERVED_SHARE`` of its
    offered load (:func:`offered_rps`) while its latency grows with the run (the least-squares
    slope of latency on arrival above ``OVERLOAD_LATENCY_SLOPE`` ms per ms): a queue that never
    drains. None otherwise. Times in ms, one entry per request (NaN: not finished)."""
    a = np.asarray(arrival_ms, dtype=np.float64)
    f = np.asarray(finish_ms, dtype=np.float64)
    offered = offered_rps(a, mode)
    if a.size < _OVERLOAD_MIN_REQUESTS or not offered > 0:
        return None
    done = np.isfinite(f)
    span_s = float(f[done].max() - np.nanmin(a)) / 1e3 if done.any() else math.nan
    served = int(done.sum()) / span_s if span_s > 0 else math.nan
    growth = _latency_growth(a, latency_ms)
    if not (served < OVERLOAD_SERVED_SHARE * offered and growth > OVERLOAD_LATENCY_SLOPE):
        return None
    return (
        f"overloaded: offered {offered:.3g} req/s, served {served:.3g} req/s; latency grows "
        f"by {growth * 1e3:,.0f} ms per second of arrivals, so its percentiles grow with the "
        "length of the run"
    )


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """The outcome of :func:`simulate`.

    ``requests``: one row per request (input order): request_id, prompt_len, gen_len, priority,
    arrival_ms, start_ms, first_token_ms, last_token_ms, finish_ms, queue_ms, ttft_ms, tpot_ms,
    latency_ms, preemptions, batch_id (padded policies; -1 otherwise), and the table's extra
    columns. ``steps``: one row per batch (padded policies) or per run of identical steps
    (continuous): start_ms, duration_ms, n_steps, batch_size (sequences computed in a step),
    running (sequences holding KV cache), prefill_tokens (padding included), decode_seqs,
    kv_blocks_used (at the end of the step, before finished requests release theirs; padded
    batches: their reservation), queue_len (waiting at the start), gen_tokens (tokens emitted),
    slot_tokens (token slots computed, padding included), batch_limit (the batch-size limit in
    force: batch_size / the controller's limit / max_num_seqs).

    ``padded``: the policy's declaration (request-level batches, not iteration-level).
    ``step_time``: the step-time model (repr); ``calibrated``: whether it says it is calibrated
    to measured hardware (its ``calibrated`` attribute). ``n_replicas``: the replicas whose
    steps ``steps`` holds (a fleet: busy time is shared among them, KV-cache use is per
    replica).
    ``occupancy_request_ms`` / ``occupancy_span_ms``: the engine's own count of requests in the
    system integrated over time (request·ms) and the span it covers (first arrival to last
    finish, ms), for :meth:`littles_law`.

    ``overload`` says when the offered load exceeds what the policy serves (None when it does
    not); ``warnings`` lists it (and any later warning) as lines to show.
    """

    requests: pd.DataFrame
    steps: pd.DataFrame
    policy: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    kv_blocks: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    mode: str = "trace"
    step_time: str = ""
    padded: bool = True
    occupancy_request_ms: float = math.nan
    occupancy_span_ms: float = math.nan
    n_replicas: int = 1
    calibrated: bool = False

    def timeline(self) -> pd.DataFrame:
        """Exact counts over time: after each event time (ms), requests ``waiting`` (arrived, not
        started), ``in_service`` (started, not finished) and ``in_system`` (their sum)."""
        r = self.requests
        a = r["arrival_ms"].to_numpy()
        s = r["start_ms"].to_numpy()
        f = r["finish_ms"].to_numpy()
        n = a.size
        times = np.concatenate([a, s, f])
        dw = np.concatenate([np.ones(n), -np.ones(n), np.zeros(n)])
        ds = np.concatenate([np.zeros(n), np.ones(n), -np.ones(n)])
        order = np.argsort(times, kind="stable")
        t = times[order]
        w = np.cumsum(dw[order])
        sv = np.cumsum(ds[order])
        last = np.r_[t[1:] != t[:-1], True]
        out = pd.DataFrame(
            {
                "time_ms": t[last],
                "waiting": w[last].astype(np.int64),
                "in_service": sv[last].astype(np.int64),
            }
        )
        out["in_system"] = out["waiting"] + out["in_service"]
        return out

    @property
    def offered_rps(self) -> float:
        """The offered load (requests/s): requests over the span of their arrivals (first to
        last arrival); NaN for a closed loop (the clients' pace follows the server) or fewer
        than two arrival times."""
        return offered_rps(self.requests["arrival_ms"].to_numpy(dtype=np.float64), self.mode)

    @property
    def latency_growth(self) -> float:
        """How fast request latency grows over the run: the least-squares slope of
        ``latency_ms`` against ``arrival_ms`` (ms per ms). About 0 when the policy keeps up;
        ``offered / capacity − 1`` under a constant overload (each later request waits for the
        backlog the earlier ones left)."""
        return _latency_growth(
            self.requests["arrival_ms"].to_numpy(dtype=np.float64),
            self.requests["latency_ms"].to_numpy(dtype=np.float64),
        )

    @property
    def overload(self) -> str | None:
        """``"overloaded: offered X req/s, served Y req/s ..."`` when the offered load exceeds
        what the policy serves, else None.

        Overloaded: an open-loop run (trace replay or ``rate``) of at least 10 requests whose
        throughput is below ``OVERLOAD_SERVED_SHARE`` of :attr:`offered_rps` while its latency
        grows with the run (:attr:`latency_growth` above ``OVERLOAD_LATENCY_SLOPE``): a queue
        that never drains, so its latency percentiles depend on how long the run is.
        """
        r = self.requests
        return overload_message(
            r["arrival_ms"].to_numpy(dtype=np.float64),
            r["finish_ms"].to_numpy(dtype=np.float64),
            r["latency_ms"].to_numpy(dtype=np.float64),
            self.mode,
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings about the run, one line each (:attr:`overload`)."""
        return tuple(w for w in (self.overload,) if w is not None)

    def littles_law(self) -> tuple[float, float]:
        """``(L, λ·W)``, two independent sides of Little's law.

        ``L``: the time-average number of requests in the system as the *engine* counted them
        while it ran (each request from its delivery at its arrival time to the completion of
        the work that finished it, integrated exactly), over its span. ``λ·W`` from the
        per-request records: the arrival rate ``n / (last finish − first arrival)`` (per ms)
        times the mean ``latency_ms``. A run that starts and ends empty must have them equal;
        a gap means the records and the engine disagree about what happened.
        """
        lat = self.requests["latency_ms"].to_numpy(dtype=np.float64)
        a = self.requests["arrival_ms"].to_numpy(dtype=np.float64)
        f = self.requests["finish_ms"].to_numpy(dtype=np.float64)
        span = float(f.max() - a.min()) if lat.size else math.nan
        if not (span > 0 and self.occupancy_span_ms > 0):
            return math.nan, math.nan
        L = self.occupancy_request_ms / self.occupancy_span_ms
        return L, (lat.size / span) * float(lat.mean())

    def summary(self) -> dict[str, Any]:
        """Aggregates: latency percentiles (nearest rank, ms), throughput and the offered load
        (requests/s; ``overloaded`` when :attr:`overload` says so), batch efficiency
        (padded policies: Σ gen_len / Σ batch size × G_max; NaN for continuous), KV-cache
        utilisation (time-weighted over busy time, and peak), queue lengths, Little's law."""
        r = self.requests
        st = self.steps
        a = r["arrival_ms"].to_numpy()
        f = r["finish_ms"].to_numpy()
        span_ms = float(f.max() - a.min()) if len(r) else math.nan
        span_s = span_ms / 1e3
        out: dict[str, Any] = {
            "policy": self.policy,
            "mode": self.mode,
            "n_requests": len(r),
            "duration_s": span_s,
            "throughput_rps": len(r) / span_s if span_s > 0 else math.nan,
            "offered_rps": self.offered_rps,
            "output_tokens_per_s": float(r["gen_len"].sum()) / span_s if span_s > 0 else math.nan,
        }
        for col in ("ttft_ms", "tpot_ms", "latency_ms", "queue_ms"):
            v = r[col].to_numpy(dtype=np.float64)
            base = col[:-3]
            pct = dict(zip(_PERCENTS, nearest_rank(v, _PERCENTS), strict=True))
            out[f"{base}_mean_ms"] = float(np.nanmean(v)) if np.any(~np.isnan(v)) else math.nan
            for p in (50, 95, 99):
                out[f"{base}_p{p}_ms"] = pct[p]
        dur = st["duration_ms"].to_numpy(dtype=np.float64)
        busy = float(dur.sum())
        out["busy_fraction"] = busy / span_ms / self.n_replicas if span_ms > 0 else math.nan
        if busy > 0:
            out["mean_batch_size"] = float((st["batch_size"].to_numpy() * dur).sum() / busy)
            kv = st["kv_blocks_used"].to_numpy(dtype=np.float64)
            out["kv_util_mean"] = float((kv * dur).sum() / busy / self.kv_blocks)
            out["kv_util_peak"] = float(kv.max() / self.kv_blocks)
        else:
            out["mean_batch_size"] = out["kv_util_mean"] = out["kv_util_peak"] = math.nan
        if self.padded and len(st):
            out["batch_efficiency"] = float(st["gen_tokens"].sum() / st["slot_tokens"].sum())
        else:
            out["batch_efficiency"] = math.nan
        out["mean_queue_len"] = float(r["queue_ms"].sum()) / span_ms if span_ms > 0 else math.nan
        out["max_queue_len"] = int(self.timeline()["waiting"].max()) if len(r) else 0
        out["preemptions"] = int(r["preemptions"].sum())
        out["n_batches"] = len(st)
        out["n_steps"] = int(st["n_steps"].sum()) if len(st) else 0
        L, lw = self.littles_law()
        out["littles_L"] = L
        out["littles_lambda_W"] = lw
        out["overloaded"] = self.overload is not None
        return out


# --------------------------------------------------------------------------------------------
