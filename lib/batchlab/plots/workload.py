"""Workload figures: length distributions, percentile tables, arrival rates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchlab.errors import InputError
from batchlab.plots.style import (
    axis_label,
    fit_to_output,
    length_histogram,
    log_bin_edges,
    named_items,
    rgba,
    series_color,
    step_xy,
)
from batchlab.workload import arrival_rate_over_time, length_percentiles_table, validate_requests

__all__ = [
    "arrival_rate_figure",
    "length_distribution_figure",
    "length_percentiles_table",
    "percentiles_table_figure",
]

_LENGTH_NAMES = {"prompt_len": "prompt length", "gen_len": "generation length"}


def _workloads(workloads: Any) -> list[tuple[str, pd.DataFrame]]:
    pairs = named_items(workloads, "request table", "workload")
    return [(name, validate_requests(df, source=name)) for name, df in pairs]


def length_distribution_figure(
    workloads: pd.DataFrame | Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame],
    *,
    columns: Sequence[str] = ("prompt_len", "gen_len"),
    n_bins: int = 50,
    normalize: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Histograms of token lengths on a log x axis, one panel per column, workloads overlaid.

    Bins are ``n_bins`` geometrically spaced bins shared by every workload of a panel (from the
    smallest to the largest length of that column). Each workload is one step line per panel
    (trace name = workload name, x = the ``n_bins + 1`` bin edges, y = the bin values with the
    last one repeated). ``normalize``: y is the share of the workload's requests in the bin (%),
    else the number of requests.
    """
    named = _workloads(workloads)
    cols = list(columns)
    if not cols:
        raise InputError("name at least one length column", field="columns")
    for col in cols:
        for name, df in named:
            if col not in df.columns:
                raise InputError("no such column", path=name, field=col)
    fig = make_subplots(
        rows=1,
        cols=len(cols),
        subplot_titles=[f"{_LENGTH_NAMES.get(c, c)} ({c})" for c in cols],
        horizontal_spacing=0.08,
    )
    for j, col in enumerate(cols, start=1):
        values = [df[col].to_numpy(dtype=np.float64) for _, df in named]
        edges = log_bin_edges(min(v.min() for v in values), max(v.max() for v in values), n_bins)
        for i, ((name, _), v) in enumerate(zip(named, values, strict=True)):
            counts = length_histogram(v, edges).astype(np.float64)
            y = counts / len(v) * 100.0 if normalize else counts
            x, ys = step_xy(edges, y)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=ys,
                    name=name,
                    legendgroup=name,
                    showlegend=j == 1,
                    mode="lines",
                    line={"shape": "hv", "color": series_color(i), "width": 1.5},
                    fill="tozeroy",
                    fillcolor=rgba(series_color(i), 0.15),
                    hovertemplate=f"{name}<br>from %{{x:.0f}} tokens: %{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=j,
            )
        fig.update_xaxes(type="log", title_text=axis_label(col), row=1, col=j)
        fig.update_yaxes(
            title_text="share of requests (%)" if normalize else "requests", row=1, col=j
        )
    fig.update_layout(
        title=title or "Length distributions (log-spaced bins)",
        legend_title_text="workload",
    )
    return fit_to_output(fig)


def percentiles_table_figure(
    workloads: pd.DataFrame | Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame],
    *,
    title: str | None = None,
) -> go.Figure:
    """The :func:`length_percentiles_table` as a plotly table figure (values in tokens)."""
    table = length_percentiles_table(workloads)
    header = list(table.columns)
    cells = []
    for col in header:
        values = table[col].tolist()
        if col in ("workload", "field"):
            cells.append([str(v) for v in values])
        elif col == "mean":
            cells.append([f"{x:,.1f}" for x in values])
        else:
            cells.append([f"{int(x):,}" for x in values])
    fig = go.Figure(
        go.Table(
            header={"values": header, "align": "left"},
            cells={"values": cells, "align": "left"},
        )
    )
    fig.update_layout(title=title or "Length percentiles (tokens, nearest rank)")
    return fit_to_output(fig)


def arrival_rate_figure(
    workloads: pd.DataFrame | Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame],
    *,
    window_s: float = 1.0,
    title: str | None = None,
) -> go.Figure:
    """Arrival rate over time: requests per second in consecutive windows of ``window_s`` seconds.

    One step line per workload (each needs an ``arrival_s`` column, seconds from the first
    request), from ``workload.arrival_rate_over_time``: x = window start (s), y = requests
    arriving in ``[start, start + window_s)`` divided by ``window_s`` (requests/s).
    """
    named = _workloads(workloads)
    fig = go.Figure()
    for i, (name, df) in enumerate(named):
        if "arrival_s" not in df.columns:
            raise InputError(
                "missing column (add arrivals with workload.with_arrivals)",
                path=name,
                field="arrival_s",
            )
        rate = arrival_rate_over_time(df, window_s)
        fig.add_trace(
            go.Scatter(
                x=rate["window_start_s"].to_numpy(),
                y=rate["rate_per_s"].to_numpy(),
                name=name,
                mode="lines",
                line={"shape": "hv", "color": series_color(i)},
                hovertemplate=f"{name}<br>t = %{{x:.3g}} s: %{{y:.4g}} requests/s<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"Arrival rate ({float(window_s):g} s windows)",
        xaxis_title="time since first request (s)",
        yaxis_title="arrival rate (requests/s)",
        legend_title_text="workload",
    )
    return fit_to_output(fig)
