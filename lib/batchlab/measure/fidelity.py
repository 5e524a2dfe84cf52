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
   first token and end-to-end latency (nearest rank), real, predicted and their ratio; and
   ``steps_ratio``, the model's time for the served run's own steps (recorded as the engine
   took them) over their real time.

``steps_ratio`` separates the two ways a prediction can miss. Away from 1, the step times
are off on this run (the machine ran slower or faster than when it was measured, or the
model misprices the compositions serving produces); near 1 with the metrics off, the
scheduling differs. :func:`step_agreement` splits it by kind of step. For a
:class:`~batchlab.steptime.FittedStepTime`, ``ratio_at_served_speed`` is the ratio of a
second simulation whose coefficients are divided by ``steps_ratio`` (the model at the speed
the engine actually ran during that run, on average): what is left is the scheduling and the
shape of the model, not a machine that sped up or slowed down after the measurement. It is a
diagnosis, not a prediction (it uses the real run's step times).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.measure.engine import EngineConfig, EngineRun, run_engine
from batchlab.measure.fit import after_idle_mask, step_features
from batchlab.stats import nearest_rank
from batchlab.steptime import FittedStepTime, StepBatch, StepTimeModel, wake_ms_of
from batchlab.workload import with_arrivals

__all__ = ["FIDELITY_METRICS", "fidelity", "served_summary", "step_agreement"]

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


_STEP_FIELDS = (
    "prefill_tokens",
    "prefill_pairs",
    "prefill_cached",
    "prefill_seqs",
    "decode_seqs",
    "decode_context",
)


def _predicted_ms(steps: pd.DataFrame, step_time: StepTimeModel) -> np.ndarray:
    """The model's time (ms) for each recorded step (its composition, and the model's
    ``wake_ms`` on a step after the engine sat idle: :func:`after_idle_mask`)."""
    wake = wake_ms_of(step_time) * after_idle_mask(steps)
    if isinstance(step_time, FittedStepTime):  # vectorized: the fit's own regressors
        coef = np.array(list(step_time.coefficients().values()))
        return step_features(steps) @ coef + wake
    lens = bool(getattr(step_time, "needs_context_lens", False))
    cols = [steps[c].to_numpy() for c in _STEP_FIELDS]
    out = []
    for p, pp, c, ps, n, s in zip(*cols, strict=True):
        each = np.full(int(n), float(s) / n) if lens and n else None
        batch = StepBatch(int(p), float(pp), int(c), int(ps), int(n), float(s), each)
        out.append(step_time.duration_ms(batch))
    return np.array(out, dtype=float) + wake


def step_agreement(steps: pd.DataFrame, step_time: StepTimeModel) -> pd.DataFrame:
    """The model against the steps an engine took (a step table: :attr:`EngineRun.steps` or
    ``measure_continuous``'s), by kind of step: ``decode`` (no prompt tokens), ``prefill``
    (prompt tokens only), ``mixed`` (both) and ``all``. Columns: ``kind``, ``n_steps``,
    ``real_ms`` and ``predicted_ms`` (their total time, the model's ``wake_ms`` included on the
    steps after the engine sat idle), ``ratio`` (predicted / real), and
    ``gap_ms`` (total time between steps shorter than 5 ms: the engine loop outside its steps,
    which the fit adds to its overhead). Decode steps carry no context lengths, so a model
    that wants them is given the mean context."""
    df = steps[np.isfinite(steps["step_ms"].to_numpy(dtype=float))]
    p = df["prefill_tokens"].to_numpy()
    n = df["decode_seqs"].to_numpy()
    kinds = np.where(p == 0, "decode", np.where(n == 0, "prefill", "mixed"))
    real = df["step_ms"].to_numpy(dtype=float)
    pred = _predicted_ms(df, step_time)
    gap = df["gap_ms"].to_numpy(dtype=float)
    gap = np.where(np.isfinite(gap) & (gap >= 0) & (gap < 5.0), gap, 0.0)
    rows = []
    for kind in ("decode", "prefill", "mixed", "all"):
        m = np.ones(len(df), dtype=bool) if kind == "all" else kinds == kind
        rows.append(
            {
                "kind": kind,
                "n_steps": int(m.sum()),
                "real_ms": float(real[m].sum()),
                "predicted_ms": float(pred[m].sum()),
                "gap_ms": float(gap[m].sum()),
            }
        )
    out = pd.DataFrame(rows)
    out["ratio"] = out["predicted_ms"] / out["real_ms"].where(out["real_ms"] > 0)
    return out


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
    runs: list[EngineRun] | None = None,
) -> pd.DataFrame:
    """Real vs simulated serving of ``requests`` (request_id, prompt_len, gen_len) at each of
    ``rates`` (requests/s, Poisson arrivals drawn with ``seed``) on the continuous-batching
    engine of ``model`` (a loaded transformers model, e.g. ``measure.tiny_llama()``); see the
    module docstring. Returns one row per (rate, metric): ``rate``, ``metric``, ``real``,
    ``predicted``, ``ratio`` (predicted / real), plus ``n_requests``, ``steps_ratio`` (the
    rate's served steps, predicted / real time) and ``ratio_at_served_speed`` (the ratio with
    the model at the served run's speed; NaN for a model other than a FittedStepTime). ``runs``: a list that receives each rate's
    :class:`EngineRun` (the steps the engine took and the requests), for a closer look
    (:func:`step_agreement`)."""
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
        if runs is not None:
            runs.append(real)
        served = real.requests
        agreement = step_agreement(real.steps, step_time)
        steps_ratio = float(agreement["ratio"].iloc[-1])
        replay = served[["request_id", "prompt_len", "gen_len"]].copy()
        replay["arrival_s"] = served["arrival_ms"].to_numpy(dtype=float) / 1e3
        sim = simulate(replay, "continuous", step_time=step_time, **cfg.simulate_options())
        got = served_summary(served)
        want = sim.summary()
        at_speed = dict.fromkeys(FIDELITY_METRICS, float("nan"))
        if isinstance(step_time, FittedStepTime) and steps_ratio > 0:
            coef = {k: v / steps_ratio for k, v in step_time.coefficients().items()}
            faster = FittedStepTime(**coef, wake_ms=step_time.wake_ms / steps_ratio)
            at_speed = simulate(
                replay, "continuous", step_time=faster, **cfg.simulate_options()
            ).summary()
        for metric in FIDELITY_METRICS:
            rows.append(
                {
                    "rate": rate,
                    "n_requests": len(served),
                    "metric": metric,
                    "real": got[metric],
                    "predicted": float(want[metric]),
                    "steps_ratio": steps_ratio,
                    "ratio_at_served_speed": float(at_speed[metric]) / got[metric],
                }
            )
    out = pd.DataFrame(rows)
    out["ratio"] = out["predicted"] / out["real"]
    last = ["steps_ratio", "ratio_at_served_speed"]
    return out.loc[:, [c for c in out.columns if c not in last] + last]
