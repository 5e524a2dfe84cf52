"""Load sweeps and their knees: simulate at increasing load, find where latency degrades.

:func:`load_sweep` steps the open-loop rate and/or the closed-loop concurrency up (on
:func:`batchlab.sweep.grid_sweep`, so any executor or dask client can run the levels) and
summarizes each level; :func:`find_knee` locates where latency starts to degrade (by default
the largest load before p99 latency exceeds ``factor ×`` its lowest-load value);
:func:`knee_table` gives the knee of each group (policy) of a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_frame, check_scalar
from batchlab.errors import InputError
from batchlab.roofline import DeviceSpec, ModelSpec
from batchlab.simulate.engine import simulate
from batchlab.simulate.policies import Policy
from batchlab.steptime import StepTimeModel
from batchlab.sweep import grid_sweep

__all__ = ["find_knee", "knee_table", "load_sweep", "sweep_groups"]


class _Level:
    """One load level of a sweep, as a picklable callable for :func:`grid_sweep`."""

    def __init__(self, requests: pd.DataFrame, policy: str, mode: str, kwargs: dict) -> None:
        self.requests, self.policy, self.mode, self.kwargs = requests, policy, mode, kwargs

    def __call__(self, level: float) -> dict[str, Any]:
        load = {"rate": level} if self.mode == "rate" else {"concurrency": int(level)}
        return simulate(self.requests, self.policy, **load, **self.kwargs).summary()


def load_sweep(
    requests: pd.DataFrame,
    policy: str | Policy = "continuous",
    *,
    rates: Sequence[float] | None = None,
    concurrencies: Sequence[int] | None = None,
    model: str | ModelSpec = "llama-2-7b",
    gpu: str | DeviceSpec = "h100-sxm",
    step_time: StepTimeModel | pd.DataFrame | None = None,
    seed: int = 0,
    progress: bool = False,
    executor: Any = None,
    **options: Any,
) -> pd.DataFrame:
    """Simulate at increasing load: open-loop ``rates`` (requests/s) and/or closed-loop
    ``concurrencies`` (clients). One row per level: ``mode`` ("rate"/"closed"), ``level``, and
    the :meth:`~batchlab.simulate.results.SimulationResult.summary` figures (throughput,
    p50/p95/p99 latencies, ...). Every rate level re-draws arrivals with the same ``seed``.
    Other keywords go to :func:`~batchlab.simulate.engine.simulate` (policy options,
    ``kv_blocks``, ``burstiness``, ...). ``executor``: as :func:`batchlab.sweep.grid_sweep`
    (levels in parallel); a level that fails gets an ``error`` column (when every level fails,
    the first error is raised).
    """
    if rates is None and concurrencies is None:
        raise InputError("give rates= and/or concurrencies=", field="rates")
    if isinstance(policy, Policy):
        raise InputError(
            "give the policy by name (each level needs a fresh policy)", field="policy"
        )
    levels = {
        "rate": [
            check_scalar(r, "rates", float, min_val=0, include_boundaries="neither")
            for r in rates or ()
        ],
        "closed": [check_scalar(c, "concurrencies", int, min_val=1) for c in concurrencies or ()],
    }
    kwargs = dict(model=model, gpu=gpu, step_time=step_time, seed=seed, **options)
    parts = []
    for mode, values in levels.items():
        if not values:
            continue
        table = grid_sweep(
            _Level(requests, policy, mode, kwargs),
            {"level": values},
            executor=executor,
            progress=progress,
            desc=f"load sweep ({mode})",
        )
        table = table.drop(columns=["mode"], errors="ignore")  # the summary's own copy
        table.insert(0, "mode", mode)
        parts.append(table)
    out = pd.concat(parts, ignore_index=True)
    if out["error"].isna().all():
        out = out.drop(columns="error")
    return out


def find_knee(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    method: str = "threshold",
    factor: float = 2.0,
) -> float:
    """The load level where ``y`` (e.g. p99 latency) starts to degrade as ``x`` (load) grows.

    ``method="threshold"`` (default): rows sorted by ``x``; the baseline is ``y`` at the
    smallest ``x``; the knee is the largest ``x`` before the first row whose ``y`` exceeds
    ``factor × baseline``. NaN if no row exceeds it (no knee within the sweep).

    ``method="kneedle"``: ``x`` and ``y`` scaled to [0, 1] between the first and last rows; the
    knee is the ``x`` of the row farthest from the chord (largest ``|y_n − x_n|``, on the side
    where the curve lies: below it for a convex, rising latency curve, above it for a
    saturating throughput curve). NaN with fewer than 3 rows or a flat curve.
    """
    check_frame(df, (x, y), what="load-sweep table")
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=np.float64)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size == 0:
        return math.nan
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if method == "threshold":
        f = check_scalar(factor, "factor", float, min_val=0, include_boundaries="neither")
        base = ys[0]
        if base <= 0:
            raise InputError(f"the lowest load's {y} must be positive, got {base!r}", field=y)
        over = np.flatnonzero(ys > f * base)
        if over.size == 0:
            return math.nan
        i = int(over[0])
        return float(xs[i - 1]) if i > 0 else math.nan
    if method == "kneedle":
        if xs.size < 3 or xs[-1] == xs[0] or ys[-1] == ys[0]:
            return math.nan
        xn = (xs - xs[0]) / (xs[-1] - xs[0])
        yn = (ys - ys[0]) / (ys[-1] - ys[0])
        diff = yn - xn
        side = -1.0 if diff.sum() < 0 else 1.0
        score = side * diff
        i = int(np.argmax(score))
        if score[i] <= 1e-12:
            return math.nan
        return float(xs[i])
    raise InputError(f"unknown method {method!r}; known: threshold, kneedle", field="method")


def sweep_groups(df: pd.DataFrame, x: str, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    """The groups of a load-sweep table (one load mode) by column ``by`` (one group named
    ``sweep`` for None), each sorted by the load column ``x``."""
    check_frame(df, (x,), what="load-sweep table")
    if "mode" in df.columns and df["mode"].nunique() > 1:
        raise InputError(
            f"the table mixes load modes {sorted(df['mode'].unique())}; use one at a time, "
            "e.g. df[df['mode'] == 'rate']",
            field="mode",
        )
    if by is None:
        return [("sweep", df.sort_values(x, kind="stable"))]
    if by not in df.columns:
        raise InputError("missing column (pass by=None for one group)", field=by)
    return [
        (str(name), part.sort_values(x, kind="stable")) for name, part in df.groupby(by, sort=False)
    ]


def knee_table(
    df: pd.DataFrame,
    *,
    x: str = "level",
    y: str = "latency_p99_ms",
    by: str | None = "policy",
    factor: float = 2.0,
    method: str = "threshold",
    throughput: str = "throughput_rps",
) -> pd.DataFrame:
    """The knee of each group of a load sweep (:func:`load_sweep` rows, one mode).

    One row per group of ``by`` (one row named ``sweep`` for ``by=None``): ``knee`` (the load
    ``x`` from :func:`find_knee` with ``factor`` and ``method``, NaN when latency never
    degrades within the sweep), ``<y>_lowest_load`` (``y`` at the smallest load),
    ``<y>_at_knee`` and ``<throughput>_at_knee`` (the row at the knee; NaN without a knee).
    """
    rows = []
    for name, part in sweep_groups(df, x, by):
        check_frame(part, (y, throughput), what="load-sweep table")
        knee = find_knee(part, x, y, factor=factor, method=method)
        at = part[part[x] == knee] if np.isfinite(knee) else part.iloc[:0]
        rows.append(
            {
                by or "group": name,
                "knee": knee,
                f"{y}_lowest_load": float(part[y].iloc[0]) if len(part) else np.nan,
                f"{y}_at_knee": float(at[y].iloc[0]) if len(at) else np.nan,
                f"{throughput}_at_knee": float(at[throughput].iloc[0]) if len(at) else np.nan,
            }
        )
    return pd.DataFrame(rows)
