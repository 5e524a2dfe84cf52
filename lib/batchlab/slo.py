"""Service-level objectives on serving latency, and goodput.

An :class:`SLO` is a set of percentile limits (ms) on three per-request latencies of a
simulation (:mod:`batchlab.simulate`):

* ``ttft``: time to first token (the result's ``ttft_ms`` column);
* ``tpot``: time per output token after the first (``tpot_ms``; requests of one token have
  none and are not counted);
* ``e2e``: end-to-end latency, arrival to the last token (``latency_ms``);

each at p50, p90 and/or p99 (nearest rank, :func:`batchlab.stats.nearest_rank`). A run *meets*
the SLO when every limit given holds. **Goodput** counts the requests that are good on their
own: each of its latencies within the limit of the highest percentile given for that latency
(a p50 limit describes the distribution, a p99 limit the tail every good request stays in);
``goodput_share`` is their share of all requests and ``goodput_rps`` their number per second
of the run (first arrival to last finish).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.stats import nearest_rank, nearest_rank_positions

__all__ = ["METRICS", "PERCENTS", "SLO", "SLOReport", "latency_arrays"]

#: The latencies an SLO limits, and the per-request column of a simulation holding each.
METRICS: dict[str, str] = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2e": "latency_ms"}
#: The percentiles an SLO may limit.
PERCENTS: tuple[int, ...] = (50, 90, 99)

_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "end-to-end"}


def _field(metric: str, p: int) -> str:
    return f"{metric}_p{p}_ms"


@dataclass(frozen=True)
class SLO:
    """Percentile limits (ms) on TTFT, time per output token and end-to-end latency.

    Every field is ``<metric>_p<percent>_ms`` for metric ``ttft``, ``tpot`` or ``e2e`` and
    percent 50, 90 or 99, a positive number of milliseconds or None (no limit). At least one
    limit must be given. ``SLO(ttft_p99_ms=2000, tpot_p99_ms=100)``: p99 TTFT at most 2 s and
    p99 time per output token at most 100 ms.
    """

    ttft_p50_ms: float | None = None
    ttft_p90_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p90_ms: float | None = None
    tpot_p99_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p90_ms: float | None = None
    e2e_p99_ms: float | None = None

    def __post_init__(self) -> None:
        given = 0
        for f in dataclasses.fields(self):
            value = check_scalar(
                getattr(self, f.name),
                f.name,
                float,
                min_val=0,
                include_boundaries="neither",
                allow_none=True,
                unit="ms",
            )
            object.__setattr__(self, f.name, value)
            given += value is not None
        if not given:
            raise InputError(
                "an SLO needs at least one limit, e.g. SLO(ttft_p99_ms=2000, tpot_p99_ms=100)",
                field="slo",
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The limit fields, ``ttft_p50_ms`` ... ``e2e_p99_ms``."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, limits: Mapping[str, Any]) -> SLO:
        """An SLO from ``{field: ms}`` (an unknown field is an InputError listing them)."""
        if not isinstance(limits, Mapping):
            raise InputError(f"expected a mapping of limits, got {type(limits).__name__}")
        names = cls.field_names()
        for key in limits:
            if key not in names:
                raise InputError(f"unknown SLO limit; limits: {', '.join(names)}", field=str(key))
        return cls(**dict(limits))

    def limits(self) -> dict[str, float]:
        """The limits given, ``{field: ms}`` in field order."""
        return {n: v for n in self.field_names() if (v := getattr(self, n)) is not None}

    def replace(self, **limits: float | None) -> SLO:
        """A copy with some limits changed (None removes one)."""
        return SLO.from_mapping({**{n: getattr(self, n) for n in self.field_names()}, **limits})

    def request_limits(self) -> dict[str, float]:
        """Per metric, the limit a good request stays within: that of the highest percentile
        given (``{"ttft": ms, ...}``, only the metrics limited)."""
        out: dict[str, float] = {}
        for metric in METRICS:
            for p in PERCENTS:
                v = getattr(self, _field(metric, p))
                if v is not None:
                    out[metric] = v
        return out

    def __str__(self) -> str:
        parts = [
            f"p{n.split('_')[1][1:]} {_NAMES[n.split('_')[0]]} ≤ {v:,.6g} ms"
            for n, v in self.limits().items()
        ]
        return ", ".join(parts)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, result: Any) -> SLOReport:
        """The SLO on a simulation: a :class:`~batchlab.simulate.SimulationResult` or
        :class:`~batchlab.simulate.FleetResult` (anything with a ``requests`` table), or the
        per-request table itself (``ttft_ms``, ``tpot_ms``, ``latency_ms``, ``arrival_ms``,
        ``finish_ms``)."""
        table = result if isinstance(result, pd.DataFrame) else getattr(result, "requests", None)
        if not isinstance(table, pd.DataFrame):
            raise InputError(
                f"expected a simulation result or its requests table, got {type(result).__name__}",
                field="result",
            )
        missing = [
            c for c in (*METRICS.values(), "arrival_ms", "finish_ms") if c not in table.columns
        ]
        if missing:
            raise InputError(f"the requests table lacks {missing}", field=missing[0])
        arrays = {m: table[c].to_numpy(dtype=np.float64) for m, c in METRICS.items()}
        a = table["arrival_ms"].to_numpy(dtype=np.float64)
        f = table["finish_ms"].to_numpy(dtype=np.float64)
        span_ms = float(np.nanmax(f) - np.nanmin(a)) if len(table) else math.nan
        return self.report(arrays["ttft"], arrays["tpot"], arrays["e2e"], span_ms / 1e3)

    def report(
        self, ttft_ms: np.ndarray, tpot_ms: np.ndarray, e2e_ms: np.ndarray, duration_s: float
    ) -> SLOReport:
        """The SLO on per-request latencies (ms; NaN TPOT for one-token requests) of a run of
        ``duration_s`` seconds (first arrival to last finish)."""
        arrays = {"ttft": ttft_ms, "tpot": tpot_ms, "e2e": e2e_ms}
        observed: dict[str, float] = {}
        for metric, values in arrays.items():
            for p, v in zip(PERCENTS, nearest_rank(values, PERCENTS), strict=True):
                observed[_field(metric, p)] = v
        violations = {
            n: (observed[n], lim)
            for n, lim in self.limits().items()
            if not (observed[n] <= lim)  # a NaN percentile does not meet its limit
        }
        n = int(np.asarray(ttft_ms).size)
        good = ~np.isnan(np.asarray(e2e_ms, dtype=np.float64))  # finished
        for metric, lim in self.request_limits().items():
            v = np.asarray(arrays[metric], dtype=np.float64)
            ok = v <= lim
            if metric == "tpot":
                ok |= np.isnan(v)  # one token: no time per output token
            good &= ok
        n_good = int(good.sum())
        share = n_good / n if n else math.nan
        rate = n_good / duration_s if duration_s and duration_s > 0 else math.nan
        return SLOReport(
            slo=self,
            observed=observed,
            violations=violations,
            n_requests=n,
            n_good=n_good,
            goodput_share=share,
            goodput_rps=rate,
            duration_s=float(duration_s),
        )

    # -- early decisions ----------------------------------------------------------------------

    def allowances(self, n_requests: int, n_multi_token: int) -> dict[str, int]:
        """Per limit, how many requests may exceed it while its percentile still meets it: a
        run of ``n_requests`` (``n_multi_token`` of them with a TPOT) has a nearest-rank pN
        within ``L`` exactly when at most ``n − ⌈n·N/100⌉`` values exceed ``L``."""
        out: dict[str, int] = {}
        for name in self.limits():
            metric, p = name.split("_")[0], int(name.split("_")[1][1:])
            n = n_multi_token if metric == "tpot" else n_requests
            rank = int(nearest_rank_positions(max(n, 1), [p])[0]) + 1
            out[name] = n - rank if n else 0
        return out

    def certainly_missed(
        self,
        ttft_ms: np.ndarray,
        tpot_ms: np.ndarray,
        e2e_ms: np.ndarray,
        allowances: Mapping[str, int],
    ) -> bool:
        """True when the values known so far (NaN: not known yet) already exceed some limit
        more often than its ``allowances`` (:meth:`allowances` of the whole run) permit: the
        run cannot meet the SLO, whatever the requests still unfinished do."""
        arrays = {"ttft": ttft_ms, "tpot": tpot_ms, "e2e": e2e_ms}
        for name, lim in self.limits().items():
            values = arrays[name.split("_")[0]]
            if int(np.count_nonzero(values > lim)) > allowances[name]:
                return True
        return False


@dataclass(frozen=True)
class SLOReport:
    """An SLO checked on a run.

    ``observed``: p50/p90/p99 of each latency (ms, every field, limited or not); ``violations``:
    ``{field: (observed, limit)}`` for the limits broken; ``met``: no violation; ``n_good`` /
    ``goodput_share`` / ``goodput_rps``: requests good on their own (see the module docstring),
    their share and their rate (requests/s over ``duration_s``).
    """

    slo: SLO
    observed: Mapping[str, float]
    violations: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    n_requests: int = 0
    n_good: int = 0
    goodput_share: float = math.nan
    goodput_rps: float = math.nan
    duration_s: float = math.nan

    @property
    def met(self) -> bool:
        """True when every limit holds."""
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        """``met``, ``goodput_share``, ``goodput_rps`` and the observed percentiles (ms)."""
        return {
            "met": self.met,
            "goodput_share": self.goodput_share,
            "goodput_rps": self.goodput_rps,
            **self.observed,
        }


def latency_arrays(
    arrival_ms: np.ndarray,
    first_ms: np.ndarray,
    last_ms: np.ndarray,
    finish_ms: np.ndarray,
    gen_len: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TTFT, TPOT, end-to-end) per request (ms) from a run's times, as the simulator defines
    them: ``first − arrival``, ``(last − first) / (gen_len − 1)`` (NaN for one token) and
    ``finish − arrival``; NaN where a time is not known yet."""
    ttft = first_ms - arrival_ms
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(gen_len > 1, (last_ms - first_ms) / (gen_len - 1), np.nan)
    return ttft, tpot, finish_ms - arrival_ms
