"""Serving figures (``batchlab.simulate``): batch timelines, latency CDFs by policy, the
policy dashboard, load sweeps with their knees, KV-cache use over time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.plots.style import (
    PART_COLORS,
    SIMULATION_LABELS,
    axis_label,
    cdf_trace,
    fit_to_output,
    level_line,
    metric_panels,
    percentile_markers,
    point_label,
    rgba,
    series_color,
)
from batchlab.simulate import SimulationResult
from batchlab.simulate.load import knee_table as load_sweep_knee_table
from batchlab.simulate.load import sweep_groups
from batchlab.stats import nearest_rank

__all__ = [
    "SIMULATION_LABELS",
    "STEP_KIND_COLORS",
    "TIMELINE_SEGMENTS",
    "batch_timeline_figure",
    "batch_timeline_table",
    "kv_utilisation_figure",
    "latency_cdf_by_policy_figure",
    "load_sweep_figure",
    "live_vs_simulated_figure",
    "load_sweep_knee_table",
    "policy_dashboard_figure",
    "step_kinds",
]

_LOAD_AXIS = {"rate": "arrival rate (requests/s)", "closed": "concurrency (clients)"}

#: The parts of a request's life in :func:`batch_timeline_table`, in time order.

TIMELINE_SEGMENTS = ("waiting", "prefill", "decoding", "held")

_SEGMENT_COLORS = {
    "waiting": "#BBBBBB",
    "prefill": PART_COLORS["prefill"],
    "decoding": PART_COLORS["decode"],
    "held": "#EF553B",
}
#: Colors of the step kinds of :func:`step_kinds`.

STEP_KIND_COLORS = {
    "padded batch": "#636EFA",
    "prefill step": PART_COLORS["prefill"],
    "mixed step": "#FFA15A",
    "decode steps": PART_COLORS["decode"],
}


def _sim_results(results: Any, *, allow_tables: bool = False) -> list[tuple[str, Any]]:
    """``(name, item)`` pairs from one SimulationResult, a mapping name -> result, or a list of
    results (named by their policy). ``allow_tables``: items may also be request tables."""
    if isinstance(results, SimulationResult):
        pairs = [(results.policy, results)]
    elif isinstance(results, Mapping):
        pairs = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Iterable) and not isinstance(results, str | bytes | pd.DataFrame):
        pairs = []
        seen: dict[str, int] = {}
        for item in results:
            base = getattr(item, "policy", "result")
            seen[base] = seen.get(base, 0) + 1
            pairs.append((base if seen[base] == 1 else f"{base} {seen[base]}", item))
    elif allow_tables and isinstance(results, pd.DataFrame):
        pairs = [(str(results.attrs.get("name", "requests")), results)]
    else:
        raise InputError(
            "expected a SimulationResult, a mapping name -> SimulationResult or a list of them, "
            f"got {type(results).__name__}"
        )
    for name, item in pairs:
        ok = isinstance(item, SimulationResult) or (allow_tables and isinstance(item, pd.DataFrame))
        if not ok:
            raise InputError(
                f"{name!r} is a {type(item).__name__}, not a SimulationResult"
                + (" or a request table" if allow_tables else ""),
                path=name,
            )
    return pairs


def _window(t0_ms: float, t1_ms: float) -> tuple[float, float]:
    t0, t1 = float(t0_ms), float(t1_ms)
    if not (np.isfinite(t0) and np.isfinite(t1) and t1 > t0):
        raise InputError(
            f"the time window must be finite with t1 > t0, got [{t0_ms!r}, {t1_ms!r}] ms",
            field="t1_ms",
        )
    return t0, t1


def step_kinds(result: SimulationResult) -> np.ndarray:
    """The kind of each row of ``result.steps``: ``"padded batch"`` (request-level policies: a
    whole batch, prefill and decode), else ``"prefill step"`` (prompt tokens only), ``"mixed
    step"`` (prompt chunks and decodes, chunked prefill) or ``"decode steps"`` (a run of
    identical decode-only steps)."""
    st = result.steps
    n = len(st)
    if result.padded:
        return np.full(n, "padded batch", dtype=object)
    pre = st["prefill_tokens"].to_numpy() > 0
    dec = st["decode_seqs"].to_numpy() > 0
    kinds = np.where(pre & dec, "mixed step", np.where(pre, "prefill step", "decode steps"))
    return kinds.astype(object)


def batch_timeline_table(
    result: SimulationResult, t0_ms: float, t1_ms: float, *, max_requests: int = 40
) -> pd.DataFrame:
    """The request rows of :func:`batch_timeline_figure`: one row per (request, segment).

    Requests in the system during ``[t0_ms, t1_ms)`` (arrived before ``t1_ms``, finished after
    ``t0_ms``), ordered by ``start_ms`` then ``arrival_ms``, at most ``max_requests`` of them
    (``row`` 0, 1, ... in that order). Segments (ms, from ``result.requests``): ``waiting``
    (arrival to start), ``prefill`` (start to first token), ``decoding`` (first to last token)
    and ``held`` (last token to finish: a padded batch holds a finished request until its
    longest member is done). Zero-length segments are left out. Columns: ``request_id``,
    ``row``, ``segment``, ``start_ms``, ``end_ms``, ``duration_ms``, ``batch_id``.
    """
    t0, t1 = _window(t0_ms, t1_ms)
    m = check_scalar(max_requests, "max_requests", int, min_val=1)
    r = result.requests
    times = r[["arrival_ms", "start_ms", "first_token_ms", "last_token_ms", "finish_ms"]]
    times = times.to_numpy(dtype=np.float64)
    inside = np.flatnonzero((times[:, 0] < t1) & (times[:, 4] > t0))
    order = np.lexsort((times[inside, 0], times[inside, 1]))
    chosen = inside[order][:m]
    k = chosen.size
    starts = times[chosen, :4].reshape(-1)
    ends = times[chosen, 1:].reshape(-1)
    rows = np.repeat(np.arange(k, dtype=np.int64), 4)
    segments = np.tile(np.asarray(TIMELINE_SEGMENTS, dtype=object), k)
    keep = ends > starts
    ids = r["request_id"].to_numpy(dtype=object)[chosen]
    batch = r["batch_id"].to_numpy(dtype=np.int64)[chosen]
    return pd.DataFrame(
        {
            "request_id": np.repeat(ids, 4)[keep],
            "row": rows[keep],
            "segment": segments[keep],
            "start_ms": starts[keep],
            "end_ms": ends[keep],
            "duration_ms": (ends - starts)[keep],
            "batch_id": np.repeat(batch, 4)[keep],
        }
    )


def batch_timeline_figure(
    result: SimulationResult,
    t0_ms: float,
    t1_ms: float,
    *,
    max_requests: int = 40,
    title: str | None = None,
) -> go.Figure:
    """A Gantt-like view of ``[t0_ms, t1_ms)`` of a simulation (x axis in seconds).

    Top panel: one bar per row of ``result.steps`` overlapping the window, from its start to its
    end, as tall as its ``batch_size`` (sequences computed), one trace per :func:`step_kinds`
    kind (hover: steps in the run, prompt tokens, KV blocks). Bottom panel: one line per request
    of :func:`batch_timeline_table`, its segments as horizontal bars, one trace per segment
    (``waiting``, ``prefill``, ``decoding``, ``held``), first request on top.
    """
    t0, t1 = _window(t0_ms, t1_ms)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.3, 0.7],
        vertical_spacing=0.06,
        subplot_titles=["steps: sequences computed", "requests"],
    )
    st = result.steps
    start = st["start_ms"].to_numpy(dtype=np.float64)
    dur = st["duration_ms"].to_numpy(dtype=np.float64)
    inside = (start + dur > t0) & (start < t1)
    kinds = step_kinds(result)
    for kind, color in STEP_KIND_COLORS.items():
        sel = inside & (kinds == kind)
        if not sel.any() and kind != ("padded batch" if result.padded else "decode steps"):
            continue
        s = st[sel]
        d_s = s["duration_ms"].to_numpy(dtype=np.float64) / 1e3
        fig.add_trace(
            go.Bar(
                x=s["start_ms"].to_numpy(dtype=np.float64) / 1e3 + d_s / 2,
                y=s["batch_size"].to_numpy(),
                width=d_s,
                name=kind,
                legendgroup="steps",
                legendgrouptitle_text="steps",
                marker={"color": color, "line": {"width": 0.5, "color": "white"}},
                customdata=np.stack(
                    [
                        s["n_steps"].to_numpy(),
                        s["prefill_tokens"].to_numpy(),
                        s["kv_blocks_used"].to_numpy(),
                        s["duration_ms"].to_numpy(dtype=np.float64),
                    ],
                    axis=1,
                ),
                hovertemplate=(
                    f"{kind}<br>%{{y}} sequences, %{{customdata[0]}} step(s), "
                    "%{customdata[3]:.4g} ms<br>prompt tokens %{customdata[1]}<br>"
                    "KV blocks %{customdata[2]}<extra></extra>"
                ),
            ),
            row=1,
            col=1,
        )
    table = batch_timeline_table(result, t0, t1, max_requests=max_requests)
    order = table.drop_duplicates("row")["request_id"].tolist()
    for seg in TIMELINE_SEGMENTS:
        s = table[table["segment"] == seg]
        fig.add_trace(
            go.Bar(
                y=s["request_id"].tolist(),
                x=s["duration_ms"].to_numpy() / 1e3,
                base=s["start_ms"].to_numpy() / 1e3,
                orientation="h",
                name=seg,
                legendgroup="requests",
                legendgrouptitle_text="requests",
                marker={"color": _SEGMENT_COLORS[seg]},
                customdata=np.stack(
                    [s["start_ms"].to_numpy() / 1e3, s["duration_ms"].to_numpy()], axis=1
                ),
                hovertemplate=(
                    f"%{{y}}<br>{seg} from %{{customdata[0]:.4g}} s for %{{customdata[1]:.4g}} ms"
                    "<extra></extra>"
                ),
            ),
            row=2,
            col=1,
        )
    fig.update_layout(
        barmode="overlay",
        bargap=0.15,
        title=title or f"{result.policy}: steps and requests from {t0 / 1e3:g} s to {t1 / 1e3:g} s",
    )
    fig.update_xaxes(range=[t0 / 1e3, t1 / 1e3])
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    fig.update_yaxes(title_text="sequences", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(
        title_text="request",
        categoryorder="array",
        categoryarray=order,
        autorange="reversed",
        showticklabels=len(order) <= 60,
        row=2,
        col=1,
    )
    return fit_to_output(fig, rows=2)


def _metric_values(item: Any, metric: str, name: str) -> np.ndarray:
    table = item.requests if isinstance(item, SimulationResult) else item
    if metric not in table.columns:
        raise InputError("missing column", path=name, field=metric)
    v = table[metric].to_numpy(dtype=np.float64)
    return v[np.isfinite(v)]


def latency_cdf_by_policy_figure(
    results: Any,
    *,
    metrics: Sequence[str] = ("ttft_ms", "latency_ms"),
    percents: Sequence[int] = (50, 99),
    log_x: bool = True,
    max_points: int = 2000,
    title: str | None = None,
) -> go.Figure:
    """Empirical CDFs of per-request times (ms), one panel per metric, one line per policy.

    ``results``: a SimulationResult, a mapping name -> SimulationResult (or request table with
    the metric columns), or a list of results. ``metrics``: columns of ``result.requests``
    (``ttft_ms``, ``tpot_ms``, ``latency_ms``, ``queue_ms``); NaN values (``tpot_ms`` of
    one-token requests) are left out. For n values sorted ascending, the point of rank r is
    (x_r, 100·r/n); above ``max_points`` only evenly spaced ranks are drawn. Each line is
    followed by a marker trace ``<name> percentiles`` at the nearest-rank ``percents``.
    """
    named = _sim_results(results, allow_tables=True)
    metrics = list(metrics)
    fig = metric_panels(metrics, horizontal_spacing=0.07)
    pcts = tuple(int(p) for p in percents)
    for j, metric in enumerate(metrics, start=1):
        for i, (name, item) in enumerate(named):
            values = _metric_values(item, metric, name)
            fig.add_trace(cdf_trace(name, values, i, max_points, showlegend=j == 1), row=1, col=j)
            fig.add_trace(percentile_markers(name, values, i, pcts, labels=False), row=1, col=j)
        fig.update_xaxes(title_text=axis_label(metric), row=1, col=j)
        if log_x:
            fig.update_xaxes(type="log", row=1, col=j)
    fig.update_yaxes(title_text="requests at or below (%)", row=1, col=1)
    fig.update_layout(
        title=title or "Per-request times by policy (CDF)", legend_title_text="policy"
    )
    return fit_to_output(fig)


def policy_dashboard_figure(
    results: Any,
    *,
    percents: Sequence[int] = (50, 99),
    max_points: int = 1000,
    title: str | None = None,
) -> go.Figure:
    """Latency and throughput of several simulations side by side, in three panels.

    1. the request-latency CDF (ms, log x), one line per result (as
       :func:`latency_cdf_by_policy_figure`);
    2. nearest-rank latency percentiles (ms): one bar trace per percent (``p50 latency``, ...),
       x = the result names;
    3. throughput (requests/s, ``summary()["throughput_rps"]``): trace ``throughput``.

    ``results``: a mapping name -> SimulationResult (or a list/one result); an empty mapping
    gives the empty panels (used by the policy explorer when no setting is valid).
    """
    named = [] if isinstance(results, Mapping) and not results else _sim_results(results)
    pcts = tuple(int(p) for p in percents)
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.44, 0.32, 0.24],
        horizontal_spacing=0.1,
        subplot_titles=[
            "request latency CDF",
            "latency percentiles (ms)",
            "throughput (requests/s)",
        ],
    )
    names = [name for name, _ in named]
    lat = [_metric_values(res, "latency_ms", name) for name, res in named]
    for i, (name, values) in enumerate(zip(names, lat, strict=True)):
        fig.add_trace(cdf_trace(name, values, i, max_points), row=1, col=1)
    for j, p in enumerate(pcts):
        vals = [nearest_rank(v, p) for v in lat]
        fig.add_trace(
            go.Bar(
                x=names,
                y=vals,
                name=f"p{p} latency",
                showlegend=False,
                marker={
                    "color": [
                        rgba(series_color(i), 0.45 + 0.55 * (j + 1) / len(pcts))
                        for i in range(len(names))
                    ]
                },
                text=[f"p{p}" for _ in names],
                textposition="inside",
                hovertemplate=f"%{{x}}<br>p{p} latency %{{y:.4g}} ms<extra></extra>",
            ),
            row=1,
            col=2,
        )
    thr = [float(res.summary()["throughput_rps"]) for _, res in named]
    fig.add_trace(
        go.Bar(
            x=names,
            y=thr,
            name="throughput",
            showlegend=False,
            marker={"color": [series_color(i) for i in range(len(names))]},
            text=[f"{v:.3g}" for v in thr],
            textposition="outside",
            hovertemplate="%{x}<br>%{y:.4g} requests/s<extra></extra>",
        ),
        row=1,
        col=3,
    )
    fig.update_xaxes(type="log", title_text="request latency (ms)", row=1, col=1)
    fig.update_yaxes(title_text="requests at or below (%)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="ms", row=1, col=2)
    fig.update_yaxes(rangemode="tozero", title_text="requests/s", row=1, col=3)
    fig.update_layout(
        title=title or "Latency and throughput by policy",
        barmode="group",
        legend_title_text="policy",
    )
    return fit_to_output(fig)


_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def load_sweep_figure(
    df: pd.DataFrame,
    *,
    x: str = "level",
    y_cols: Sequence[str] = ("latency_p50_ms", "latency_p99_ms"),
    throughput: str | None = "throughput_rps",
    by: str | None = "policy",
    knee: Any = "auto",
    knee_y: str | None = None,
    factor: float = 2.0,
    method: str = "threshold",
    log_x: bool = True,
    log_y: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Throughput and latency against load, one color per group (policy), the knee marked.

    Panels: ``throughput`` vs ``x`` (left; left out when None) and the ``y_cols`` latencies vs
    ``x`` (right; the last column solid, the others dashed), traces ``<group> <label>``. The
    table is one load mode of ``simulate.load_sweep`` (``level`` = requests/s or clients).

    ``knee``: ``"auto"`` (each group's knee from :func:`load_sweep_knee_table` on ``knee_y``,
    default the last of ``y_cols``, with ``factor`` and ``method``), a number (every group),
    a mapping group -> load, or None. A knee is drawn as a dotted vertical line in each panel
    (traces ``<group> knee``) and a star on the ``knee_y`` curve (trace ``<group> knee point``,
    its ``y`` interpolated in the table when the knee is not one of its loads).
    """
    groups = sweep_groups(df, x, by)
    y_cols = list(y_cols)
    if not y_cols:
        raise InputError("name at least one latency column", field="y_cols")
    for col in [*y_cols, *([throughput] if throughput else [])]:
        if col not in df.columns:
            raise InputError("missing column", field=col)
    ky = knee_y or y_cols[-1]
    if ky not in df.columns:
        raise InputError("missing column", field=ky)
    if isinstance(knee, str) and knee == "auto":
        kt = load_sweep_knee_table(
            df, x=x, y=ky, by=by, factor=factor, method=method, throughput=throughput or ky
        )
        knees = dict(zip(kt.iloc[:, 0].astype(str), kt["knee"], strict=True))
    elif knee is None:
        knees = {}
    elif isinstance(knee, Mapping):
        knees = {str(k): float(v) for k, v in knee.items()}
    elif isinstance(knee, int | float | np.integer | np.floating) and not isinstance(knee, bool):
        knees = {name: float(knee) for name, _ in groups}
    else:
        raise InputError(
            f"knee must be 'auto', None, a number or a mapping group -> load, got {knee!r}",
            field="knee",
        )
    mode = str(df["mode"].iloc[0]) if "mode" in df.columns and len(df) else None
    xlabel = _LOAD_AXIS.get(mode, axis_label(x)) if x == "level" else axis_label(x)
    cols = 2 if throughput else 1
    titles = ([axis_label(throughput)] if throughput else []) + ["latency (ms)"]
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.1)
    lat_col = cols
    all_y = np.concatenate([df[c].to_numpy(dtype=np.float64) for c in y_cols])
    all_y = all_y[np.isfinite(all_y) & ((all_y > 0) if log_y else True)]
    y_lo, y_hi = (float(all_y.min()), float(all_y.max())) if all_y.size else (np.nan, np.nan)
    if throughput:
        t_all = df[throughput].to_numpy(dtype=np.float64)
        t_all = t_all[np.isfinite(t_all)]
        t_lo, t_hi = (0.0, float(t_all.max())) if t_all.size else (np.nan, np.nan)
    for i, (name, part) in enumerate(groups):
        xs = part[x].to_numpy(dtype=np.float64)
        color = series_color(i)
        if throughput:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=part[throughput].to_numpy(dtype=np.float64),
                    name=f"{name} throughput",
                    legendgroup=name,
                    mode="lines+markers",
                    line={"color": color},
                    hovertemplate=f"{name}<br>load %{{x:.4g}}: %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        for j, col in enumerate(y_cols):
            dash = _DASHES[(len(y_cols) - 1 - j) % len(_DASHES)]
            short = axis_label(col).replace(" (ms)", "")
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=part[col].to_numpy(dtype=np.float64),
                    name=f"{name} {short}",
                    legendgroup=name,
                    mode="lines+markers",
                    line={"color": color, "dash": dash},
                    hovertemplate=f"{name} {short}<br>load %{{x:.4g}}: %{{y:.4g}} ms<extra></extra>",
                ),
                row=1,
                col=lat_col,
            )
        k = knees.get(name, np.nan)
        if k is None or not np.isfinite(k):
            continue
        spans = [(lat_col, y_lo, y_hi)] + ([(1, t_lo, t_hi)] if throughput else [])
        for c, lo, hi in spans:
            fig.add_trace(
                go.Scatter(
                    x=[k, k],
                    y=[lo, hi],
                    name=f"{name} knee",
                    legendgroup=name,
                    showlegend=False,
                    mode="lines",
                    line={"color": color, "dash": "dot", "width": 1},
                    hoverinfo="skip",
                ),
                row=1,
                col=c,
            )
        ys = part[ky].to_numpy(dtype=np.float64)
        hit = np.flatnonzero(xs == k)
        yk = float(ys[hit[0]]) if hit.size else float(np.interp(k, xs, ys))
        fig.add_trace(
            go.Scatter(
                x=[k],
                y=[yk],
                name=f"{name} knee point",
                legendgroup=name,
                showlegend=False,
                mode="markers",
                marker={"color": color, "size": 14, "symbol": "star"},
                hovertemplate=f"{name} knee<br>load %{{x:.4g}}, {ky} %{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=lat_col,
        )
        point_label(fig, k, f"{name} knee {k:.4g}", i, color, row=1, col=lat_col, log_x=log_x)
    for c in range(1, cols + 1):
        fig.update_xaxes(title_text=xlabel, row=1, col=c)
        if log_x:
            fig.update_xaxes(type="log", row=1, col=c)
    if throughput:
        fig.update_yaxes(title_text=axis_label(throughput), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="latency (ms)", row=1, col=lat_col)
    if log_y:
        fig.update_yaxes(type="log", row=1, col=lat_col)
    fig.update_layout(
        title=title
        or (
            f"Load sweep; knee = the last load before {axis_label(ky).replace(' (ms)', '')} "
            f"exceeds {factor:g}× its lowest-load value"
            if method == "threshold"
            else "Load sweep; knee by the kneedle method"
        ),
        legend_title_text="policy",
    )
    return fit_to_output(fig)


def _peak_per_bin(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` exact points: in each of ``max_points`` equal bins of x, the point
    with the largest y (``x`` ascending)."""
    if x.size <= max_points:
        return x, y
    lo, hi = x[0], x[-1]
    bins = np.minimum(((x - lo) / (hi - lo) * max_points).astype(np.int64), max_points - 1)
    order = np.lexsort((y, bins))  # by bin, then value: the last of each bin is its peak
    last = np.r_[bins[order][1:] != bins[order][:-1], True]
    pick = np.sort(order[last])
    return x[pick], y[pick]


def kv_utilisation_figure(
    results: Any,
    *,
    t0_ms: float | None = None,
    t1_ms: float | None = None,
    max_points: int = 2000,
    title: str | None = None,
) -> go.Figure:
    """KV-cache use and the waiting queue over time (x in seconds), one line per result.

    Top: ``kv_blocks_used / kv_blocks`` (%) at the end of each row of ``result.steps``; bottom:
    requests waiting (``queue_len``) at its start. Rows of ``[t0_ms, t1_ms)`` only (default:
    the whole run). Above ``max_points`` rows, each line keeps, in each of ``max_points`` equal
    time bins, the row with the largest value (peaks are kept; each drawn point is exact).
    """
    named = _sim_results(results)
    mp = check_scalar(max_points, "max_points", int, min_val=1)
    lo = -np.inf if t0_ms is None else float(t0_ms)
    hi = np.inf if t1_ms is None else float(t1_ms)
    if not hi > lo:
        raise InputError(f"need t1_ms > t0_ms, got [{t0_ms!r}, {t1_ms!r}]", field="t1_ms")
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=["KV cache in use (% of the budget)", "requests waiting"],
    )
    for i, (name, res) in enumerate(named):
        st = res.steps
        start = st["start_ms"].to_numpy(dtype=np.float64)
        end = start + st["duration_ms"].to_numpy(dtype=np.float64)
        kv = st["kv_blocks_used"].to_numpy(dtype=np.float64) / res.kv_blocks * 100.0
        q = st["queue_len"].to_numpy(dtype=np.float64)
        sel = (end > lo) & (start < hi)
        for row, xs, ys, unit in ((1, end[sel], kv[sel], "%"), (2, start[sel], q[sel], "")):
            px, py = _peak_per_bin(xs, ys, mp)
            fig.add_trace(
                go.Scatter(
                    x=px / 1e3,
                    y=py,
                    name=name,
                    legendgroup=name,
                    showlegend=row == 1,
                    mode="lines",
                    line={"shape": "hv", "color": series_color(i)},
                    hovertemplate=f"{name}<br>%{{x:.4g}} s: %{{y:.4g}}{unit}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_yaxes(title_text="KV blocks used (%)", range=[0, 105], row=1, col=1)
    fig.update_yaxes(title_text="requests", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    fig.update_layout(title=title or "KV-cache use and queue over time", legend_title_text="run")
    return fit_to_output(fig, rows=2)


#: The panels of :func:`live_vs_simulated_figure`: a metric's base name -> panel title (units).
_LIVE_PANELS = {
    "throughput": "throughput (requests/s)",
    "output": "output throughput (tokens/s)",
    "ttft": "time to first token (ms)",
    "tpot": "time per output token (ms)",
    "latency": "end-to-end latency (ms)",
}
_LIVE_UNITS = {
    "throughput": "requests/s",
    "output": "tokens/s",
    "ttft": "ms",
    "tpot": "ms",
    "latency": "ms",
}
_PERCENTILE_DASH = {"p50": "solid", "p95": "dash", "p99": "dot", "mean": "dashdot"}


def _live_panel(metric: str) -> str:
    base = metric.split("_", 1)[0]
    if base not in _LIVE_PANELS:
        raise InputError(
            f"no panel for metric {metric!r} (throughput_rps, output_tokens_per_s, ttft_*, "
            "tpot_*, latency_*)",
            field="metrics",
        )
    return base


def live_vs_simulated_figure(
    comparison: pd.DataFrame,
    *,
    metrics: Sequence[str] = (
        "throughput_rps",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "latency_p50_ms",
        "latency_p99_ms",
    ),
    mode: str | None = None,
    log_x: bool = True,
    title: str | None = None,
) -> go.Figure:
    """A live server against the simulator, level by level: measured and simulated figures
    (top row, one panel per quantity: throughput, TTFT, end-to-end latency ...) and their ratio
    simulated / measured (bottom row, a dotted line at 1: perfect agreement).

    ``comparison``: :func:`batchlab.sim_vs_live.compare_loadtest`'s table (``mode``, ``level``,
    ``metric``, ``measured``, ``simulated``, ``ratio``), one load mode (``mode``: which one,
    default the table's only one). Measured lines solid, simulated dashed-and-hollow in their own
    color; percentiles by line style (p50 solid, p95 dashed, p99 dotted). x: clients (closed
    loop) or requests/s (open loop), log scale by default.
    """
    need = ("mode", "level", "metric", "measured", "simulated", "ratio")
    if not isinstance(comparison, pd.DataFrame):
        raise InputError(
            f"expected a comparison table (DataFrame), got {type(comparison).__name__}",
            field="comparison",
        )
    for col in need:
        if col not in comparison.columns:
            raise InputError("missing column (compare_loadtest's table)", field=col)
    modes = list(dict.fromkeys(comparison["mode"].astype(str)))
    if mode is None:
        if len(modes) != 1:
            raise InputError(
                f"the table has load modes {modes}; choose one with mode=", field="mode"
            )
        mode = modes[0]
    if mode not in modes:
        raise InputError(f"no mode {mode!r} in the table; it has {modes}", field="mode")
    metrics = list(metrics)
    if not metrics:
        raise InputError("name at least one metric", field="metrics")
    part = comparison[comparison["mode"].astype(str) == mode]
    known = set(part["metric"].astype(str))
    for m in metrics:
        if m not in known:
            raise InputError(f"metric {m!r} is not in the table", field="metrics")
    panels = list(dict.fromkeys(_live_panel(m) for m in metrics))
    cols = len(panels)
    fig = make_subplots(
        rows=2,
        cols=cols,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        vertical_spacing=0.1,
        horizontal_spacing=0.08 if cols > 1 else 0.0,
        subplot_titles=[_LIVE_PANELS[p] for p in panels] + [""] * cols,
    )
    sources = (("measured", series_color(0), "solid"), ("simulated", series_color(1), "dash"))
    ratios = part["ratio"].to_numpy(dtype=np.float64)
    finite = ratios[np.isfinite(ratios)]
    for metric in metrics:
        c = panels.index(_live_panel(metric)) + 1
        rows_m = part[part["metric"].astype(str) == metric].sort_values("level", kind="stable")
        xs = rows_m["level"].to_numpy(dtype=np.float64)
        stat = metric.split("_")[1] if metric.count("_") >= 2 else ""
        short = f"{stat} " if stat in _PERCENTILE_DASH else ""
        unit = _LIVE_UNITS[_live_panel(metric)]
        for source, color, dash in sources:
            line_dash = _PERCENTILE_DASH.get(stat, "solid") if source == "measured" else dash
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=rows_m[source].to_numpy(dtype=np.float64),
                    name=f"{source} {short}{_live_panel(metric)}".strip(),
                    legendgroup=source,
                    mode="lines+markers",
                    line={"color": color, "dash": line_dash},
                    marker={
                        "color": color,
                        "symbol": "circle" if source == "measured" else "circle-open",
                        "size": 8,
                    },
                    hovertemplate=(
                        f"{source} {metric}<br>load %{{x:.4g}}: %{{y:.4g}} {unit}<extra></extra>"
                    ),
                ),
                row=1,
                col=c,
            )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=rows_m["ratio"].to_numpy(dtype=np.float64),
                name=f"ratio {metric}",
                legendgroup="ratio",
                showlegend=False,
                mode="lines+markers",
                line={"color": "#555555", "dash": _PERCENTILE_DASH.get(stat, "solid")},
                marker={"color": "#555555", "size": 7},
                hovertemplate=f"{metric}: simulated / measured %{{y:.3f}}<extra></extra>",
            ),
            row=2,
            col=c,
        )
    lo = min(0.5, float(finite.min()) * 0.9) if finite.size else 0.5
    hi = max(2.0, float(finite.max()) * 1.1) if finite.size else 2.0
    levels = part["level"].to_numpy(dtype=np.float64)
    x0, x1 = float(np.nanmin(levels)), float(np.nanmax(levels))
    xlabel = _LOAD_AXIS.get(mode, "load")
    for c in range(1, cols + 1):
        fig.add_trace(
            level_line(x0, x1, 1.0, name="agreement", color="#999999", showlegend=False),
            row=2,
            col=c,
        )
        fig.update_yaxes(title_text=_LIVE_UNITS[panels[c - 1]], rangemode="tozero", row=1, col=c)
        fig.update_yaxes(
            title_text="simulated / measured (×)" if c == 1 else "ratio (×)",
            type="log",
            range=[np.log10(lo), np.log10(hi)],
            row=2,
            col=c,
        )
        fig.update_xaxes(title_text=xlabel, row=2, col=c)
        if log_x:
            fig.update_xaxes(type="log", row=1, col=c)
            fig.update_xaxes(type="log", row=2, col=c)
    fig.update_layout(
        title=title or "Live server vs simulation of the same arrivals; below: their ratio",
        legend_title_text="",
    )
    return fit_to_output(fig, rows=2)
