"""The simulator against a live server: a load test's own arrivals replayed in the simulator.

:func:`replay_loadtest` simulates every level of a :class:`~batchlab.loadtest.LoadTestResult`
on a step-time model measured on the server's engine and returns a level table in the schema
of the simulator's load sweep (:data:`batchlab.loadtest.LOAD_SWEEP_COLUMNS`, ``policy`` =
``label``), so ``pd.concat([measured.levels, simulated])`` draws with one
:func:`batchlab.plots.load_sweep_figure`. :func:`compare_levels` puts a measured and a
simulated level table side by side, one row per (level, metric) with the ratio;
:func:`compare_loadtest` does both. :func:`server_overhead` estimates what the server adds to
the engine's steps (per step, per streamed token) from the levels' time per output token, and
:meth:`ServerOverhead.added_to` puts it into a fitted step-time model.

What is replayed, per level (:meth:`LoadTestResult.replay_requests` with ``served=True``): the
requests the server completed, with the prompt and output tokens it reported (what it actually
computed), and

* open loop (``mode == "rate"``): the actual send times as the arrival times (a trace replay);
* closed loop (``mode == "closed"``): the same number of clients, each sending its next
  request the moment its previous one finished (``simulate(concurrency=C)``, in send order,
  no think time).

The simulated server: ``policy`` (default ``"continuous"``) with the engine's scheduler knobs.
``engine`` (a :class:`batchlab.measure.EngineConfig`) gives them through
:meth:`~batchlab.measure.EngineConfig.simulate_options` (chunked prefill, the token and
sequence budgets per step, the KV cache); by default they are read from the measurement's
settings (``measure_continuous`` records the engine it timed), so a step measurement made with
the server's knobs (:func:`batchlab.tinyserver.engine_config` for the tiny server) carries
both the step times and the scheduler. Keywords override them (``max_num_seqs=``,
``kv_blocks=``, ``block_size=``, ...), e.g. a vLLM server's ``--max-num-seqs``,
``--max-num-batched-tokens`` and its KV-cache blocks.

Definitions are the ones both tables already share: throughput = completed requests / (last
completion − first arrival), nearest-rank percentiles, TTFT from arrival to first token,
latency from arrival to the end of the response; ``ratio = simulated / measured`` (above 1:
the simulator says more requests/s or more ms than the server did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab.errors import InputError
from batchlab.loadtest import LOAD_SWEEP_COLUMNS, LoadTestResult
from batchlab.steptime import FittedStepTime, StepTimeModel

__all__ = [
    "COMPARED_METRICS",
    "COMPARISON_COLUMNS",
    "ServerOverhead",
    "compare_levels",
    "compare_loadtest",
    "replay_loadtest",
    "server_overhead",
]

#: The metrics :func:`compare_levels` puts side by side, in order (units in their names).
COMPARED_METRICS: tuple[str, ...] = (
    "throughput_rps",
    "output_tokens_per_s",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
)

#: Columns of the comparison table.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "mode",
    "level",
    "metric",
    "measured",
    "simulated",
    "ratio",
)


def _engine_options(step_time: Any, engine: Any) -> dict[str, Any]:
    """The simulator's scheduler knobs: ``engine``'s, else those the measurement recorded."""
    if engine is None and isinstance(step_time, pd.DataFrame):
        engine = step_time.attrs.get("settings", {}).get("engine_config")
    if engine is None:
        return {}
    from batchlab.measure import EngineConfig

    if isinstance(engine, Mapping):
        try:
            engine = EngineConfig(**dict(engine))
        except TypeError as exc:
            raise InputError(f"not an engine configuration: {exc}", field="engine") from None
    if not isinstance(engine, EngineConfig):
        raise InputError(
            f"must be a batchlab.measure.EngineConfig or a mapping of its fields, got "
            f"{type(engine).__name__}",
            field="engine",
        )
    return engine.simulate_options()


def replay_loadtest(
    loadtest: LoadTestResult,
    step_time: StepTimeModel | pd.DataFrame,
    *,
    engine: Any = None,
    policy: str = "continuous",
    label: str = "simulated",
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Simulate every level of ``loadtest`` on its own arrivals (see the module docstring).

    ``step_time``: a step-time model, or a measurement of the server's engine (a step table of
    ``measure --engine continuous`` is fitted with :func:`batchlab.measure.fit_step_time`).
    ``engine``: the engine's :class:`~batchlab.measure.EngineConfig` (default: the one the
    measurement recorded; a policy other than continuous batching takes only its KV cache);
    ``options``: simulator keywords that override it (policy knobs, ``kv_blocks``,
    ``block_size``). Without an engine, ``kv_blocks`` must be given (the
    default KV budget is a GPU's, not the server's). Returns one row per level, in the load
    test's order, with :data:`~batchlab.loadtest.LOAD_SWEEP_COLUMNS`; ``policy`` = ``label``.
    """
    from batchlab.simulate import simulate
    from batchlab.simulate.engine import resolve_step_time

    if not isinstance(loadtest, LoadTestResult):
        raise InputError(
            f"expected a LoadTestResult (loadtest() or load_loadtest()), got "
            f"{type(loadtest).__name__}",
            field="loadtest",
        )
    levels = loadtest.levels
    if levels.empty:
        raise InputError("the load test has no finished level", field="loadtest")
    from batchlab.simulate import get_policy

    # the engine's scheduler knobs the policy has (all of them for continuous batching; only
    # the KV cache for a padded policy, which batches by its own rules)
    knobs = {k.name for k in get_policy(policy).knobs} | {"kv_blocks", "block_size"}
    engine_options = {k: v for k, v in _engine_options(step_time, engine).items() if k in knobs}
    kwargs = {**engine_options, **options}
    if "kv_blocks" not in kwargs:
        raise InputError(
            "give engine= (the server's continuous-batching settings) or kv_blocks= (its KV "
            "cache); the default KV budget is a GPU's",
            field="engine",
        )
    model = resolve_step_time(step_time, "llama-2-7b", "h100-sxm")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels), desc="simulate levels", unit="level")
    rows = []
    try:
        for mode, level in zip(levels["mode"], levels["level"], strict=True):
            requests = loadtest.replay_requests(str(mode), float(level), served=True)
            load: dict[str, Any] = {}
            if mode == "closed":
                load["concurrency"] = min(int(level), len(requests))
            elif mode != "rate":
                raise InputError(f"unknown load mode {mode!r} (rate or closed)", field="mode")
            result = simulate(requests, policy, step_time=model, **load, **kwargs)
            summary = result.summary()
            summary.update(mode=str(mode), level=float(level), policy=label)
            rows.append(summary)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows).loc[:, list(LOAD_SWEEP_COLUMNS)]


def compare_levels(
    measured: pd.DataFrame,
    simulated: pd.DataFrame,
    *,
    metrics: Sequence[str] = COMPARED_METRICS,
) -> pd.DataFrame:
    """Measured and simulated level tables side by side: one row per (level, metric) of the
    levels both have (matched on ``mode`` and ``level``, in ``measured``'s order), with the
    columns ``mode``, ``level``, ``metric``, ``measured``, ``simulated`` and ``ratio``
    (simulated / measured; NaN where the measured value is 0 or missing)."""
    metrics = list(metrics)
    if not metrics:
        raise InputError("name at least one metric", field="metrics")
    for name, table in (("measured", measured), ("simulated", simulated)):
        if not isinstance(table, pd.DataFrame):
            raise InputError(
                f"expected a level table (DataFrame), got {type(table).__name__}", field=name
            )
        for col in ("mode", "level", *metrics):
            if col not in table.columns:
                raise InputError(f"missing column in the {name} table", field=col)
    keys = ["mode", "level"]
    sim = simulated.loc[:, [*keys, *metrics]].copy()
    sim["level"] = sim["level"].astype(float)
    if sim.duplicated(keys).any():
        raise InputError("the simulated table has a level twice", field="level")
    meas = measured.loc[:, [*keys, *metrics]].copy()
    meas["level"] = meas["level"].astype(float)
    both = meas.merge(sim, on=keys, how="inner", suffixes=("_measured", "_simulated"))
    if both.empty:
        raise InputError("the two tables have no (mode, level) in common", field="level")
    parts = []
    for metric in metrics:
        m = both[f"{metric}_measured"].to_numpy(dtype=np.float64)
        s = both[f"{metric}_simulated"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.isfinite(m) & (m != 0), s / m, np.nan)
        parts.append(
            pd.DataFrame(
                {
                    "mode": both["mode"].to_numpy(dtype=object),
                    "level": both["level"].to_numpy(dtype=np.float64),
                    "metric": metric,
                    "measured": m,
                    "simulated": s,
                    "ratio": ratio,
                    "_row": np.arange(len(both)),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True).sort_values("_row", kind="stable")
    return out.drop(columns="_row").reset_index(drop=True).loc[:, list(COMPARISON_COLUMNS)]


def compare_loadtest(
    loadtest: LoadTestResult,
    step_time: StepTimeModel | pd.DataFrame,
    *,
    metrics: Sequence[str] = COMPARED_METRICS,
    **replay_options: Any,
) -> pd.DataFrame:
    """Measured vs simulated, per level and metric: :func:`replay_loadtest` (with
    ``replay_options``: ``engine``, ``policy``, simulator keywords) then :func:`compare_levels`
    against ``loadtest.levels``."""
    simulated = replay_loadtest(loadtest, step_time, **replay_options)
    return compare_levels(loadtest.levels, simulated, metrics=metrics)


@dataclass(frozen=True)
class ServerOverhead:
    """What a server adds to its engine's steps: ``per_step_ms`` on every step and
    ``per_token_ms`` per token the step emits (and streams), estimated over ``n_levels`` levels
    by :func:`server_overhead`."""

    per_step_ms: float
    per_token_ms: float
    n_levels: int

    def added_to(self, step_time: FittedStepTime) -> FittedStepTime:
        """``step_time`` with the overhead added: ``overhead_ms + per_step_ms`` and
        ``lm_head_ms_per_row + per_token_ms`` (the term that counts the tokens a step emits)."""
        if not isinstance(step_time, FittedStepTime):
            raise InputError(
                f"expected a FittedStepTime (measure.fit_step_time), got {type(step_time).__name__}",
                field="step_time",
            )
        coef = step_time.coefficients()
        coef["overhead_ms"] += self.per_step_ms
        coef["lm_head_ms_per_row"] += self.per_token_ms
        return FittedStepTime(
            **coef,
            wake_ms=step_time.wake_ms,
            source=f"{step_time.source} + server overhead {self.per_step_ms:.3g} ms/step, "
            f"{self.per_token_ms:.3g} ms/token",
        )


def server_overhead(
    measured: pd.DataFrame, simulated: pd.DataFrame, *, modes: Sequence[str] = ("closed",)
) -> ServerOverhead:
    """The server's own time per step, from the gap between measured and simulated median time
    per output token (``tpot_p50_ms``: one decode step a token) at the levels of ``modes``: a
    least-squares line of the gap against the simulated mean batch size (sequences a step,
    ``mean_batch_size``), ``gap = per_step_ms + per_token_ms · batch``, both clipped at 0 (one
    level: the gap is all per step). ``measured``: the load test's levels; ``simulated``:
    :func:`replay_loadtest` on the engine's step times."""
    table = compare_levels(measured, simulated, metrics=["tpot_p50_ms"])
    keys = ["mode", "level"]
    if "mean_batch_size" not in simulated.columns:
        raise InputError("missing column in the simulated table", field="mean_batch_size")
    sizes = simulated.loc[:, [*keys, "mean_batch_size"]].assign(
        level=simulated["level"].astype(float)
    )
    table = table[table["mode"].isin(list(modes))].merge(sizes, on=keys)
    gap = (table["measured"] - table["simulated"]).to_numpy(dtype=np.float64)
    batch = table["mean_batch_size"].to_numpy(dtype=np.float64)
    ok = np.isfinite(gap) & np.isfinite(batch)
    gap, batch = gap[ok], batch[ok]
    if gap.size == 0:
        raise InputError(
            f"no level of modes {list(modes)} with a time per output token", field="modes"
        )
    if gap.size == 1 or np.ptp(batch) == 0:
        return ServerOverhead(max(float(gap.mean()), 0.0), 0.0, int(gap.size))
    slope, intercept = np.polyfit(batch, gap, 1)
    if slope < 0:
        slope, intercept = 0.0, float(gap.mean())
    if intercept < 0:
        intercept = 0.0
        slope = max(float((batch * gap).sum() / (batch * batch).sum()), 0.0)
    return ServerOverhead(float(intercept), float(slope), int(gap.size))
