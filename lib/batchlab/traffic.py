"""Traffic levels: the same requests arriving faster or slower, in honest units.

A capacity question is asked at a traffic level. :class:`Traffic` names one and applies it to a
request table (prompt and generation lengths unchanged):

* ``Traffic.scaled(k)``: the trace's own arrival times compressed ``k``× (``k = 5``: the same
  requests in a fifth of the time, five times the rate; burstiness and order kept);
* ``Traffic.poisson(rate_per_s, seed=...)``: Poisson arrivals at ``rate_per_s`` requests/s (or
  gamma gaps with coefficient of variation ``burstiness``), in table order, drawn with
  :func:`batchlab.workload.with_arrivals`.

Rates are requests per second, as :func:`batchlab.workload.profile` measures them: ``(n − 1) /
(last arrival − first arrival)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.workload import profile, validate_requests, with_arrivals

__all__ = ["Traffic", "as_traffic", "offered_rate", "scale_arrivals"]


def offered_rate(requests: pd.DataFrame) -> float:
    """The arrival rate of a table with ``arrival_s`` (requests/s, as
    :func:`batchlab.workload.profile`); NaN with fewer than two requests or no time span."""
    if "arrival_s" not in requests.columns:
        raise InputError("the requests have no arrival_s column", field="arrival_s")
    rate = profile(requests).arrival_rate_per_s
    return math.nan if rate is None else float(rate)


def scale_arrivals(requests: pd.DataFrame, speedup: float) -> pd.DataFrame:
    """A validated copy of ``requests`` whose arrivals are compressed ``speedup``× toward the
    first one: ``t' = t₀ + (t − t₀) / speedup`` (seconds). ``speedup > 1`` is more traffic."""
    k = check_scalar(speedup, "speedup", float, min_val=0, include_boundaries="neither")
    out = validate_requests(requests)
    if "arrival_s" not in out.columns:
        raise InputError(
            "the requests have no arrival_s column to scale (use Traffic.poisson)",
            field="arrival_s",
        )
    t = out["arrival_s"].to_numpy(dtype=np.float64)
    t0 = float(t.min()) if t.size else 0.0
    out["arrival_s"] = t0 + (t - t0) / k
    return out


@dataclass(frozen=True)
class Traffic:
    """A traffic level: the trace's arrivals compressed ``speedup``× (``rate_per_s`` None),
    or Poisson/gamma arrivals at ``rate_per_s`` requests/s drawn with ``seed`` (coefficient of
    variation ``burstiness``; 1 is Poisson)."""

    speedup: float = 1.0
    rate_per_s: float | None = None
    seed: int = 0
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "speedup",
            check_scalar(self.speedup, "speedup", float, min_val=0, include_boundaries="neither"),
        )
        rate = check_scalar(
            self.rate_per_s,
            "rate_per_s",
            float,
            min_val=0,
            include_boundaries="neither",
            allow_none=True,
            unit="requests/s",
        )
        object.__setattr__(self, "rate_per_s", rate)
        object.__setattr__(self, "seed", check_scalar(self.seed, "seed", int))
        cv = check_scalar(
            self.burstiness, "burstiness", float, min_val=0, include_boundaries="neither"
        )
        object.__setattr__(self, "burstiness", cv)
        if rate is not None and self.speedup != 1.0:
            raise InputError("give speedup (trace) or rate_per_s (Poisson), not both")

    @classmethod
    def scaled(cls, speedup: float) -> Traffic:
        """The trace's own arrivals, ``speedup``× as fast."""
        return cls(speedup=speedup)

    @classmethod
    def poisson(cls, rate_per_s: float, *, seed: int = 0, burstiness: float = 1.0) -> Traffic:
        """Drawn arrivals at ``rate_per_s`` requests/s with the table's lengths."""
        return cls(rate_per_s=rate_per_s, seed=seed, burstiness=burstiness)

    @property
    def label(self) -> str:
        """``"trace ×5"`` or ``"Poisson 27.65 req/s"`` (4 significant digits; ``"gamma CV 2
        …"`` when bursty)."""
        if self.rate_per_s is None:
            return f"trace ×{self.speedup:g}"
        kind = "Poisson" if self.burstiness == 1.0 else f"gamma CV {self.burstiness:g}"
        return f"{kind} {self.rate_per_s:.4g} req/s"

    def apply(self, requests: pd.DataFrame) -> pd.DataFrame:
        """A validated copy of ``requests`` with this level's ``arrival_s`` (seconds);
        ``attrs["traffic"]`` holds :attr:`label`."""
        if self.rate_per_s is None:
            out = scale_arrivals(requests, self.speedup)
        else:
            process = "poisson" if self.burstiness == 1.0 else "bursty"
            out = with_arrivals(
                requests,
                rate_per_s=self.rate_per_s,
                seed=self.seed,
                process=process,
                burstiness=self.burstiness,
            )
        out.attrs["traffic"] = self.label
        return out


def as_traffic(level: Any) -> Traffic:
    """A :class:`Traffic`, or a number read as a speedup of the trace (``5`` is ``trace ×5``)."""
    if isinstance(level, Traffic):
        return level
    if isinstance(level, bool) or not isinstance(level, int | float | np.integer | np.floating):
        raise InputError(
            f"a traffic level is a Traffic or a speedup number, got {level!r}", field="traffic"
        )
    return Traffic.scaled(float(level))
