"""Simulation against real execution: serve requests on the continuous-batching engine, simulate
the same arrivals with a step-time model fitted on a measurement of that engine, compare.

:func:`fidelity` is the loop ``benchmarks/bench_fidelity.py`` runs (and its test, small):

1. requests with Poisson arrivals at each rate are served by transformers' continuous-batching
   engine (:func:`batchlab.measure.run_engine`, the tiny model by default): the *real* run;
2. :func:`batchlab.simulate.simulate` replays the same arrival times (the instants the requests
   were submitted) with the continuous policy configured as the engine
   (:meth:`EngineConfig.simulate_options`: chunked prefill, the same token and sequence budgets
   and KV cache) on the step-time model fitted on a ``measure --engine continuous``
   measurement (:func:`batchlab.measure.fit_step_time`): the *prediction*;
3. one row per rate and metric: throughput (requests/s: requests over the span from the first
   arrival to the last completion, as :meth:`SimulationResult.summary`), median and p99 time to
   first token and end-to-end latency (nearest rank), real, predicted and their ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from batchlab.checks import check_scalar
from batchlab.measure.engine import EngineConfig, run_engine
from batchlab.stats import nearest_rank
from batchlab.steptime import StepTimeModel
from batchlab.workload import with_arrivals

__all__ = ["FIDELITY_METRICS", "fidelity", "served_summary"]

#: The metrics compared, in order.
FIDELITY_METRICS = (
    "throughput_rps",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "latency_p50_ms",
    "latency_p99_ms",
)


def served_summary(requests: pd.DataFrame) -> dict[str, float]:
    """The :data:`FIDELITY_METRICS` of served requests (arrival_ms, ttft_ms, latency_ms and
    finish_ms columns, as :func:`run_engine` and the simulator record them)."""
    a = requests["arrival_ms"].to_numpy(dtype=float)
    f = requests["finish_ms"].to_numpy(dtype=float)
    span_s = (f.max() - a.min()) / 1e3
    ttft = nearest_rank(requests["ttft_ms"].to_numpy(dtype=float), (50, 99))
    latency = nearest_rank(requests["latency_ms"].to_numpy(dtype=float), (50, 99))
    return {
        "throughput_rps": len(requests) / span_s,
        "ttft_p50_ms": float(ttft[0]),
        "ttft_p99_ms": float(ttft[1]),
        "latency_p50_ms": float(latency[0]),
        "latency_p99_ms": float(latency[1]),
    }


def fidelity(
    model: Any,
    requests: pd.DataFrame,
    rates: Sequence[float],
    step_time: StepTimeModel,
    *,
    config: EngineConfig | None = None,
    threads: int = 1,
    seed: int = 0,
    timeout_s: float = 900.0,
    progress: bool = False,
) -> pd.DataFrame:
    """Real vs simulated serving of ``requests`` (request_id, prompt_len, gen_len) at each of
    ``rates`` (requests/s, Poisson arrivals drawn with ``seed``) on the continuous-batching
    engine of ``model`` (a loaded transformers model, e.g. ``measure.tiny_llama()``); see the
    module docstring. Returns one row per (rate, metric): ``rate``, ``metric``, ``real``,
    ``predicted``, ``ratio`` (predicted / real), plus ``n_requests``."""
    from batchlab.simulate import simulate

    cfg = config or EngineConfig()
    rows = []
    for k, rate in enumerate(rates):
        rate = check_scalar(rate, "rate", float, min_val=0, include_boundaries="neither")
        timed = with_arrivals(requests, rate_per_s=rate, seed=seed + k)
        real = run_engine(
            model,
            timed,
            config=cfg,
            threads=threads,
            seed=seed,
            timeout_s=timeout_s,
            progress=progress,
        )
        served = real.requests
        replay = served[["request_id", "prompt_len", "gen_len"]].copy()
        replay["arrival_s"] = served["arrival_ms"].to_numpy(dtype=float) / 1e3
        sim = simulate(replay, "continuous", step_time=step_time, **cfg.simulate_options())
        got = served_summary(served)
        want = sim.summary()
        for metric in FIDELITY_METRICS:
            rows.append(
                {
                    "rate": rate,
                    "n_requests": len(served),
                    "metric": metric,
                    "real": got[metric],
                    "predicted": float(want[metric]),
                }
            )
    out = pd.DataFrame(rows)
    out["ratio"] = out["predicted"] / out["real"]
    return out
