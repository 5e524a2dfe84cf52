"""Step-time models from measurements: a least-squares fit in named parts, and a decode table.

:func:`fit_step_time` turns a measurement into a :class:`~batchlab.steptime.FittedStepTime`
(overhead, dense, attention and LM head coefficients), which the simulator
(``simulate(step_time=...)``) and the planner's hardware cost model
(:class:`batchlab.cost.StepTimeCostModel`) accept. Both kinds of measurement work:

* a **step table** (``measure --engine continuous``): every step's composition and time;
* a **batch-size table** (``measure --engine static``): each row becomes two steps, the prefill
  of ``B`` prompts (``B·P`` tokens, ``B·P(P+1)/2`` pairs, ``B`` emitted rows) and the mean decode
  step of ``B`` sequences at mean context ``P + G/2``; padded ``generate`` attends within each
  sequence, so its fit has no masked-pair term (``attention_ms_per_masked_pair`` is 0).

The fit: warm-up steps are dropped; steps of one composition are pooled at their mean time
(repeats of a run are identical in composition; the mean, not the median, because a
simulation adds step times up, slow ones included); then non-negative least squares on the
relative error, exactly, over every subset of the coefficients, each composition weighted by
the square root of its count over the *model's* time for it, re-weighted until the
coefficients settle (iteratively reweighted least squares: the quasi-likelihood of a constant
coefficient of variation). Dividing by the *measured* time instead favours the compositions
that happened to run fast and biases the fit low: on the CPU engine's measurements it predicted
0.74–0.91 of the total time of the very steps it was fitted on, and the simulator's medians
came out that much (and, queueing, more) optimistic. The engine loop's own time between
back-to-back steps (the median ``gap_ms``) is added to the overhead. A step that starts after
the engine sat idle (:func:`after_idle_mask`: a request arriving at an idle engine, which a
measurement's served segments have and its grid has not) runs slower than its composition
says (its caches and clocks have cooled): those steps are left out of the least squares, and
their mean excess over the fitted time becomes ``wake_ms`` (with at least 5 of them; else 0).
:class:`~batchlab.steptime.FitResidual` reports the fit on every step used, with the ratio
of predicted to measured total time.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from batchlab.errors import InputError
from batchlab.measure.engine import STEP_COMPOSITION
from batchlab.measure.files import is_step_table
from batchlab.measure.table import require_columns
from batchlab.stats import nearest_rank
from batchlab.steptime import WAKE_AFTER_IDLE_MS, FitResidual, FittedStepTime

__all__ = [
    "after_idle_mask",
    "decode_table",
    "fit_step_time",
    "served_segment_mask",
    "step_features",
    "steps_of_measurement",
]

_MASKED_PAIRS = 5  # the column of step_features that prices the step-wide masked attention
_BACK_TO_BACK_MS = WAKE_AFTER_IDLE_MS  # a longer gap is the engine waiting, not its loop
_MIN_WAKE_STEPS = 5  # steps after idle needed to fit the wake-up time


def served_segment_mask(measurement: pd.DataFrame) -> np.ndarray:
    """Which rows of a step table are steps of a served segment (``measure_continuous(...,
    served_requests=...)``: ``batch_size`` 0, requests of varied lengths arriving over time);
    all False for a grid-only step table or a batch-size table."""
    if not is_step_table(measurement) or "batch_size" not in measurement.columns:
        return np.zeros(len(measurement), dtype=bool)
    return measurement["batch_size"].to_numpy() == 0


def after_idle_mask(steps: pd.DataFrame) -> np.ndarray:
    """Which steps of a step table (a measurement's, or :attr:`EngineRun.steps`, in time
    order) start after the engine sat idle: the previous step left a gap (``gap_ms``) of
    :data:`~batchlab.steptime.WAKE_AFTER_IDLE_MS` or more, and the step computes new prompts
    only (no decodes, nothing cached: a request arriving at an idle engine, in a served run or
    a measurement's wake-up probe). A long gap before any other step is the engine's thread
    held up, not idle; a grid run's last step has no gap (NaN) unless a probe follows."""
    require_columns(steps, ("gap_ms", *STEP_COMPOSITION))
    gap = steps["gap_ms"].to_numpy(dtype=float)
    prev = np.concatenate([[np.nan], gap[:-1]])
    fresh = (
        (steps["decode_seqs"].to_numpy() == 0)
        & (steps["prefill_cached"].to_numpy() == 0)
        & (steps["prefill_tokens"].to_numpy() > 0)
    )
    with np.errstate(invalid="ignore"):
        return fresh & (prev >= WAKE_AFTER_IDLE_MS)


def steps_of_measurement(measurement: pd.DataFrame, *, served: bool = True) -> pd.DataFrame:
    """The steps of a measurement: a step table's non-warm-up steps, or the two steps of each
    row of a batch-size table (see the module docstring). Columns: the composition
    (``prefill_tokens`` … ``decode_context``), ``step_ms``, ``gap_ms`` and ``after_idle``
    (:func:`after_idle_mask`; False for a batch-size table). ``served=False`` leaves out the
    served segments' steps (:func:`served_segment_mask`)."""
    if is_step_table(measurement):
        require_columns(measurement, ("step_ms", "gap_ms", *STEP_COMPOSITION))
        df = measurement.assign(after_idle=after_idle_mask(measurement))
        if not served:
            df = df[~served_segment_mask(df)]
        if "warmup" in df.columns:
            df = df[~df["warmup"].astype(bool)]
        idle = df["after_idle"].to_numpy(dtype=bool)
        df = df.loc[:, [*STEP_COMPOSITION, "step_ms", "gap_ms"]].astype(float)
        df["after_idle"] = idle
        return df[np.isfinite(df["step_ms"]) & (df["step_ms"] > 0)].reset_index(drop=True)
    require_columns(measurement, ("batch_size", "prompt_len", "gen_len", "prefill_ms"))
    require_columns(measurement, ("decode_ms_per_step",))
    df = measurement
    if "oom" in df.columns:
        df = df[~df["oom"].astype(bool)]
    b = df["batch_size"].to_numpy(dtype=float)
    p = df["prompt_len"].to_numpy(dtype=float)
    g = df["gen_len"].to_numpy(dtype=float)
    zero = np.zeros_like(b)
    prefill = pd.DataFrame(
        {
            "prefill_tokens": b * p,
            "prefill_seqs": b,
            "prefill_cached": zero,
            "prefill_pairs": b * p * (p + 1) / 2.0,
            "decode_seqs": zero,
            "decode_context": zero,
            "step_ms": df["prefill_ms"].to_numpy(dtype=float),
        }
    )
    decode = pd.DataFrame(
        {
            "prefill_tokens": zero,
            "prefill_seqs": zero,
            "prefill_cached": zero,
            "prefill_pairs": zero,
            "decode_seqs": b,
            "decode_context": b * (p + g / 2.0),
            "step_ms": df["decode_ms_per_step"].to_numpy(dtype=float),
        }
    )
    out = pd.concat([prefill, decode], ignore_index=True)
    out["gap_ms"] = np.nan
    out["after_idle"] = False
    return out[np.isfinite(out["step_ms"]) & (out["step_ms"] > 0)].reset_index(drop=True)


def step_features(steps: pd.DataFrame) -> np.ndarray:
    """The regressors of :class:`~batchlab.steptime.FittedStepTime`, one row per step: 1,
    tokens, KV tokens touched, attention pairs, emitted rows, masked attention pairs (tokens ×
    KV tokens of the step; the order of ``FittedStepTime.COEFFICIENTS``)."""
    p = steps["prefill_tokens"].to_numpy(dtype=float)
    n = steps["decode_seqs"].to_numpy(dtype=float)
    s = steps["decode_context"].to_numpy(dtype=float)
    cached = steps["prefill_cached"].to_numpy(dtype=float)
    kv = s + np.where(p > 0, cached + p, 0.0)
    pairs = steps["prefill_pairs"].to_numpy(dtype=float) + s
    rows = steps["prefill_seqs"].to_numpy(dtype=float) + n
    return np.column_stack([np.ones_like(p), p + n, kv, pairs, rows, (p + n) * kv])


def _nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares, exactly: the best unconstrained solution over every subset
    of the columns that comes out non-negative (6 columns: 63 subsets)."""
    best, best_cost = np.zeros(a.shape[1]), float(y @ y)
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sub = a[:, cols]
            x, *_ = np.linalg.lstsq(sub, y, rcond=None)
            if np.all(x >= 0):
                r = y - sub @ x
                cost = float(r @ r)
                if cost < best_cost - 1e-15 * max(best_cost, 1.0):
                    best = np.zeros(a.shape[1])
                    best[list(cols)] = x
                    best_cost = cost
    return best


def _relative_fit(
    x: np.ndarray, y: np.ndarray, count: np.ndarray, *, max_iter: int = 50
) -> np.ndarray:
    """Non-negative coefficients minimising the count-weighted squared relative error of
    ``x @ coef`` against ``y`` (ms, > 0), relative to the *fitted* times: iteratively
    reweighted, starting from weights relative to ``y``, until the coefficients settle."""
    root = np.sqrt(count)
    floor = 1e-6 * float(y.max())
    coef = _nnls(x * (root / y)[:, None], root)
    for _ in range(max_iter):
        w = root / np.maximum(x @ coef, floor)
        new = _nnls(x * w[:, None], y * w)
        done = np.allclose(new, coef, rtol=1e-9, atol=1e-12)
        coef = new
        if done:
            break
    return coef


def fit_step_time(
    measurement: pd.DataFrame, *, source: str | None = None, served: bool = True
) -> FittedStepTime:
    """Fit a :class:`~batchlab.steptime.FittedStepTime` (named parts: overhead, dense,
    attention (per KV token, per pair, per masked pair), LM head) on a measurement: a step
    table or a batch-size table (see the module docstring). Its ``residual`` reports the fit on
    the steps used. ``served=False`` fits the grid's steps alone, leaving out a step table's
    served segments (to check the grid against them: :func:`batchlab.measure.step_agreement`
    on the rows :func:`served_segment_mask` selects). Raises
    :class:`~batchlab.errors.InputError` with fewer than two distinct step compositions."""
    if not isinstance(measurement, pd.DataFrame):
        raise InputError(
            f"expected a measurement table (DataFrame), got {type(measurement).__name__}",
            field="measurement",
        )
    steps = steps_of_measurement(measurement, served=served)
    idle = steps["after_idle"].to_numpy(dtype=bool)
    groups = steps[~idle].groupby(list(STEP_COMPOSITION), sort=False)["step_ms"]
    mean = groups.mean()
    count = groups.size()
    if len(mean) < 2:
        raise InputError(
            "a fit needs steps of at least two compositions (batch sizes, prompt lengths)",
            field="measurement",
        )
    x = step_features(mean.index.to_frame(index=False))
    if not is_step_table(measurement):
        # padded generate attends within each sequence: no step-wide masked attention
        x[:, _MASKED_PAIRS] = 0.0
    coef = _relative_fit(x, mean.to_numpy(dtype=float), count.to_numpy(dtype=float))
    gaps = steps["gap_ms"].to_numpy(dtype=float)
    gaps = gaps[np.isfinite(gaps) & (gaps >= 0) & (gaps < _BACK_TO_BACK_MS)]
    if gaps.size:
        coef[0] += float(np.median(gaps))
    pred = step_features(steps) @ coef
    meas = steps["step_ms"].to_numpy(dtype=float)
    if gaps.size:
        meas = meas + float(np.median(gaps))
    wake = 0.0
    if idle.sum() >= _MIN_WAKE_STEPS:  # a step after the engine sat idle: its extra time
        wake = max(0.0, float(np.mean(meas[idle] - pred[idle])))
        pred[idle] += wake
    rel = np.abs(pred / meas - 1.0)
    p50, p90 = nearest_rank(rel, (50, 90))
    residual = FitResidual(
        rms_ms=float(np.sqrt(np.mean((pred - meas) ** 2))),
        median_rel=float(p50),
        p90_rel=float(p90),
        n_steps=int(len(steps)),
        n_groups=int(len(mean)),
        total_ratio=float(pred.sum() / meas.sum()),
    )
    if source is None:
        settings: dict[str, Any] = measurement.attrs.get("settings", {})
        engine = settings.get("engine", "continuous" if is_step_table(measurement) else "static")
        source = (
            f"{settings.get('model', 'a model')} on {settings.get('device_name') or settings.get('device', 'a device')}, "
            f"{engine} engine, {settings.get('num_threads', '?')} threads"
        )
    return FittedStepTime(*coef.tolist(), wake_ms=wake, residual=residual, source=source)


def decode_table(measurement: pd.DataFrame) -> pd.DataFrame:
    """Decode and prefill figures of a step table by batch size and context, in the columns
    :class:`~batchlab.steptime.TableStepTime` reads: ``batch_size``, ``context_len`` (the
    prompt length plus half the generation, the run's mean decode context),
    ``decode_ms_per_step`` (median of the run's decode-only steps) and
    ``prefill_ms_per_token`` (median time per prompt token of its prefill-only steps), one row
    per (batch size, prompt length) of the measurement. A batch-size table is returned as is."""
    if not is_step_table(measurement):
        return measurement
    df = measurement
    require_columns(df, ("batch_size", "prompt_len", "gen_len", "step_ms", *STEP_COMPOSITION))
    # a served segment has no batch size or prompt length; a wake-up probe's first step is slow
    keep = ~served_segment_mask(df)
    if "gap_ms" in df.columns:
        keep &= ~after_idle_mask(df)
    df = df[keep]
    if "warmup" in df.columns:
        df = df[~df["warmup"].astype(bool)]
    decode = df[(df["prefill_tokens"] == 0) & (df["decode_seqs"] > 0)]
    decode = decode[decode["decode_seqs"] == decode["batch_size"]]
    prefill = df[(df["prefill_tokens"] > 0) & (df["decode_seqs"] == 0)]
    keys = ["batch_size", "prompt_len", "gen_len"]
    dec = decode.groupby(keys)["step_ms"].median().rename("decode_ms_per_step")
    per_token = (prefill["step_ms"] / prefill["prefill_tokens"]).groupby([prefill[k] for k in keys])
    pre = per_token.median().rename("prefill_ms_per_token")
    out = pd.concat([dec, pre], axis=1).dropna().reset_index()
    out["context_len"] = out["prompt_len"] + out["gen_len"] / 2.0
    return out.loc[
        :,
        [
            "batch_size",
            "prompt_len",
            "gen_len",
            "context_len",
            "decode_ms_per_step",
            "prefill_ms_per_token",
        ],
    ]
