"""Shared style of the figures: part colors, series colors, axis labels with units, the size
every figure takes (:func:`fit_to_output`), and the small helpers every domain's figures use
(named items, CDF points, step lines, log bins)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from numpy.typing import ArrayLike
from plotly.subplots import make_subplots

from batchlab.checks import as_named, check_scalar
from batchlab.errors import InputError
from batchlab.evaluate import Evaluation
from batchlab.stats import nearest_rank

__all__ = [
    "COST_PARTS",
    "MEASUREMENT_LABELS",
    "METRIC_LABELS",
    "PART_COLORS",
    "SERIES_COLORS",
    "SIMULATION_LABELS",
    "axis_label",
    "cdf_points",
    "cdf_trace",
    "fit_to_output",
    "series_color",
    "length_histogram",
    "log2_ticks",
    "level_line",
    "log_bin_edges",
    "metric_panels",
    "named_items",
    "percentile_markers",
    "point_label",
    "LABEL_ROW_SHARE",
    "FIGURE_HEIGHT_PX",
    "ROW_HEIGHT_PX",
    "NARROW_OUTPUT_PX",
    "rgba",
    "step_xy",
    "use_notebook_renderer",
]

COST_PARTS = ("overhead", "compile", "prefill", "decode")
#: One color per part, shared by every figure.

PART_COLORS = {
    "overhead": "#636EFA",
    "compile": "#EF553B",
    "prefill": "#00CC96",
    "decode": "#AB63FA",
}

#: Colors of the series of a figure, in order.
SERIES_COLORS = (
    "#1F77B4",
    "#FF7F0E",
    "#2CA02C",
    "#D62728",
    "#9467BD",
    "#8C564B",
    "#E377C2",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
)
#: Axis labels (with units) of the metrics of ``Evaluation.summary()`` and the sweep tables.

METRIC_LABELS = {
    "total_cost": "total cost (cost units)",
    "cost_overhead": "overhead cost (cost units)",
    "cost_compile": "compile cost (cost units)",
    "cost_prefill": "prefill cost (cost units)",
    "cost_decode": "decode cost (cost units)",
    "pad_ratio": "pad ratio (padding / useful tokens)",
    "p50_latency_ms": "p50 latency (ms)",
    "p95_latency_ms": "p95 latency (ms)",
    "p99_latency_ms": "p99 latency (ms)",
    "sequential_ms": "sequential time (ms)",
    "n_batches": "batches",
    "n_shapes": "shapes",
    "n_requests": "requests",
    "prompt_len": "prompt length (tokens)",
    "gen_len": "generation length (tokens)",
}

SIMULATION_LABELS: dict[str, str] = {
    "throughput_rps": "throughput (requests/s)",
    "output_tokens_per_s": "output throughput (tokens/s)",
    "latency_ms": "request latency (ms)",
    "ttft_ms": "time to first token (ms)",
    "tpot_ms": "time per output token (ms)",
    "queue_ms": "queueing time (ms)",
    "mean_batch_size": "mean batch size (sequences)",
    "kv_util_mean": "KV-cache use, time-weighted mean (share of blocks)",
    "kv_util_peak": "KV-cache use, peak (share of blocks)",
    "busy_fraction": "busy fraction",
    "preemptions": "preemptions",
    **{
        f"{base}_{stat}_ms": f"{stat} {name} (ms)"
        for base, name in (
            ("latency", "latency"),
            ("ttft", "time to first token"),
            ("tpot", "time per output token"),
            ("queue", "queueing time"),
        )
        for stat in ("mean", "p50", "p95", "p99")
    },
}

MEASUREMENT_LABELS: dict[str, str] = {
    "batch_size": "batch size (sequences)",
    "prefill_ms": "prefill (ms)",
    "prefill_ms_per_token": "prefill per prompt token (ms)",
    "decode_ms_per_step": "decode step = time per output token (ms)",
    "e2e_ms": "end-to-end time of a batch (ms)",
    "latency_ms_per_request": "request latency (ms)",
    "output_tokens_per_s": "output throughput (tokens/s)",
    "peak_memory_mb": "peak memory above baseline (MB)",
    "kv_cache_mb": "KV cache (MB)",
}


def axis_label(name: str) -> str:
    """The axis label (with units) of a column or metric name, else the name itself."""
    for labels in (METRIC_LABELS, SIMULATION_LABELS, MEASUREMENT_LABELS):
        if name in labels:
            return labels[name]
    return name


def series_color(i: int) -> str:
    """The ``i``-th series color (cycling)."""
    return SERIES_COLORS[i % len(SERIES_COLORS)]


def rgba(hex_color: str, alpha: float) -> str:
    """``#RRGGBB`` with an opacity, as a plotly ``rgba(...)`` string."""
    h = hex_color.lstrip("#")
    r, g, b = int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    return f"rgba({r},{g},{b},{alpha})"


def named_items(items: Any, what: str, default_name: str) -> list[tuple[str, Any]]:
    """``(name, item)`` pairs from one item, a mapping name -> item or a sequence of items
    (:func:`batchlab.checks.as_named`; an Evaluation, array or Series counts as one item)."""
    return as_named(
        items, what, default_name, single=(pd.DataFrame, Evaluation, np.ndarray, pd.Series)
    )


def cdf_points(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and their cumulative shares (%): the point of rank r (1-based) of n is
    (x_r, 100·r/n); above ``max_points`` only ranks evenly spaced from 1 to n (each exact)."""
    lat = np.sort(np.asarray(values, dtype=np.float64))
    n = lat.size
    if n == 0:
        return lat, lat
    ranks = np.arange(1, n + 1)
    if n > max_points:
        ranks = np.unique(np.linspace(1, n, int(max_points)).round().astype(np.int64))
    return lat[ranks - 1], ranks / n * 100.0


def log2_ticks(sizes: np.ndarray) -> dict[str, Any]:
    """A log x axis with a tick at every batch size."""
    vals = np.unique(np.asarray(sizes).astype(np.int64))
    return {"type": "log", "tickvals": vals.tolist(), "ticktext": [str(v) for v in vals]}


def log_bin_edges(low: float, high: float, n_bins: int = 50) -> np.ndarray:
    """``n_bins + 1`` geometrically spaced bin edges from ``low`` to ``high`` (tokens, > 0).

    When ``high <= low`` the range is widened to ``[low, low + 1]`` so one value still has a bin.
    """
    n_bins = check_scalar(n_bins, "n_bins", int, min_val=1)
    lo = float(low)
    hi = float(high)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0:
        raise InputError(f"bin range must be finite and > 0, got [{low!r}, {high!r}]")
    if hi <= lo:
        hi = lo + 1.0
    return np.geomspace(lo, hi, int(n_bins) + 1)


def length_histogram(lengths: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """Requests per bin (int64): ``numpy.histogram`` counts; the last bin includes its right
    edge."""
    counts, _ = np.histogram(np.asarray(lengths, dtype=np.float64), bins=np.asarray(edges))
    return counts.astype(np.int64)


def step_xy(edges: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = the bin edges, y = the bin values with the last repeated (for ``line_shape='hv'``)."""
    return edges, np.append(values, values[-1] if len(values) else 0.0)


def use_notebook_renderer(renderer: str = "plotly_mimetype") -> None:
    """Set plotly's default renderer for the chapters.

    ``plotly_mimetype`` is drawn by JupyterLab's plotly extension and kept in the saved
    notebook as the figure's JSON alone: the same figure saves the same bytes, so re-running a
    chapter changes its stored outputs only where they must change (widget ids, timings).
    (``notebook_connected``, plotly's HTML fallback for viewers without the extension, adds a
    random element id to every figure and a script fetched from plotly's CDN, which fails in
    the browser console on machines without internet access.)
    """
    import plotly.io as pio

    pio.renderers.default = renderer


def cdf_trace(
    name: str, values: np.ndarray, i: int, max_points: int, *, showlegend: bool = True
) -> go.Scatter:
    """The empirical CDF of ``values`` (ms) as a step line (:func:`cdf_points`), series ``i``."""
    x, y = cdf_points(values, max_points)
    return go.Scatter(
        x=x,
        y=y,
        name=name,
        legendgroup=name,
        showlegend=showlegend,
        mode="lines",
        line={"shape": "hv", "color": series_color(i)},
        hovertemplate=f"{name}<br>%{{y:.2f}}% of requests ≤ %{{x:.4g}} ms<extra></extra>",
    )


def level_line(
    x0: float,
    x1: float,
    y: float,
    *,
    name: str,
    color: str,
    dash: str = "dot",
    width: float = 1,
    hovertemplate: str | None = None,
    showlegend: bool | None = None,
) -> go.Scatter:
    """A horizontal line at ``y`` from ``x0`` to ``x1`` (in the axes' units), as a trace (a
    limit, a bound, a ratio of 1): over the data only, unlike ``fig.add_hline``, and in the
    legend unless ``showlegend`` is False. No hover text unless ``hovertemplate``."""
    options: dict[str, Any] = {}
    if hovertemplate is None:
        options["hoverinfo"] = "skip"
    else:
        options["hovertemplate"] = hovertemplate
    if showlegend is not None:
        options["showlegend"] = showlegend
    return go.Scatter(
        x=[x0, x1],
        y=[y, y],
        name=name,
        mode="lines",
        line={"color": color, "dash": dash, "width": width},
        **options,
    )


def metric_panels(metrics: Sequence[str], *, horizontal_spacing: float) -> go.Figure:
    """One row of panels, one per metric of ``metrics`` (at least one, else InputError naming
    ``metrics``), each titled with the metric's label and unit (:func:`axis_label`)."""
    if not metrics:
        raise InputError("name at least one metric", field="metrics")
    return make_subplots(
        rows=1,
        cols=len(metrics),
        subplot_titles=[axis_label(m) for m in metrics],
        horizontal_spacing=horizontal_spacing,
    )


def percentile_markers(
    name: str, values: np.ndarray, i: int, percents: Sequence[int], *, labels: bool = True
) -> go.Scatter:
    """Diamonds at the nearest-rank ``percents`` of ``values`` (ms) on a CDF (trace
    ``<name> percentiles``; none when there are no values)."""
    pcts = [int(p) for p in percents] if np.size(values) else []
    marks = nearest_rank(values, pcts) if pcts else ()
    return go.Scatter(
        x=list(marks),
        y=[float(p) for p in pcts],
        name=f"{name} percentiles",
        legendgroup=name,
        showlegend=False,
        mode="markers+text" if labels else "markers",
        text=[f"p{p}" for p in pcts],
        textposition="middle left",
        marker={"color": series_color(i), "size": 8, "symbol": "diamond"},
        hovertemplate=f"{name}<br>%{{text}} = %{{x:.4g}} ms<extra></extra>",
    )


#: Height (px) of a figure with one row of panels; every further row adds ``ROW_HEIGHT_PX``.
FIGURE_HEIGHT_PX = 440
ROW_HEIGHT_PX = 230
#: Height (px) added per row of legend entries beyond the first (3 entries per row assumed).
_LEGEND_ROW_PX = 22
_SUBPLOT_TITLE_FONT_PX = 13
#: The narrowest plot area (px) the subplot titles are fitted to (a laptop's JupyterLab with
#: the file browser open, less the margins), and the width of a character of their font (px).
NARROW_OUTPUT_PX = 560
_CHAR_PX = 0.5 * _SUBPLOT_TITLE_FONT_PX
#: Longer titles (characters, of the 17 px title font) are broken into lines to fit that width.
_TITLE_CHARS = 64


def _wrap(text: str, width: int, *, unit_line: bool = True) -> str:
    """``text`` in lines of at most ``width`` characters (words kept whole; with ``unit_line``
    a unit in parentheses starts a line of its own), joined by ``<br>``."""
    head, sep, unit = text.partition(" (")
    parts = [head, f"({unit}"] if sep and unit_line else [text]
    lines: list[str] = []
    for part in parts:
        line = ""
        for word in part.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "<br>".join(lines)


def fit_to_output(fig: go.Figure, *, rows: int = 1, height: int | None = None) -> go.Figure:
    """Size ``fig`` to JupyterLab's output area and return it (changed in place).

    No fixed width: the figure autosizes to the width of the output area (plotly's
    ``autosize``), whatever that width is. The height is ``height`` px, else
    ``FIGURE_HEIGHT_PX`` for one row of panels plus ``ROW_HEIGHT_PX`` per further row, plus a
    little per extra row of legend entries. The legend runs horizontally along the bottom of
    the figure (anchored to the container, so plotly makes room for it below the axis titles
    and it takes no width from the panels); the title and the subplot titles have room above
    the panels (``automargin``), in a font small enough for panels side by side.
    """
    rows = check_scalar(rows, "rows", int, min_val=1)
    shown = [t.showlegend if "showlegend" in t else False for t in fig.data]
    n_entries = sum(1 for t, on in zip(fig.data, shown, strict=True) if on is not False and t.name)
    if len(fig.data) == 1 and shown[0] is None:
        n_entries = 0  # plotly shows no legend for a single trace
    legend_rows = -(-n_entries // 3) if n_entries else 0
    if height is None:
        height = FIGURE_HEIGHT_PX + ROW_HEIGHT_PX * (rows - 1)
        height += _LEGEND_ROW_PX * max(0, legend_rows - 1)
    title = fig.layout.title.text or ""
    if "<br>" not in title and len(title) > _TITLE_CHARS:
        title = _wrap(title, _TITLE_CHARS, unit_line=False)
    lines = title.count("<br>")
    fig.update_layout(
        autosize=True,
        width=None,
        height=int(height) + 22 * lines,
        margin={"l": 60, "r": 20, "t": 90 + 22 * lines, "b": 20},
        title={"x": 0.0, "xanchor": "left", "xref": "paper", "automargin": True}
        | ({"text": title} if title else {}),
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 0.0,
            "yanchor": "bottom",
            "x": 0.0,
            "xanchor": "left",
        },
    )
    # the subplot titles of make_subplots: annotations in paper coordinates above each panel,
    # in a smaller font, broken before their unit when they would not fit a narrow panel
    domains = [
        tuple(fig.layout[name].domain or (0.0, 1.0))
        for name in fig.layout
        if name.startswith("xaxis")
    ] or [(0.0, 1.0)]

    def fit_title(a: Any) -> None:
        a.update(font={"size": _SUBPLOT_TITLE_FONT_PX})
        text = a.text or ""
        widths = [hi - lo for lo, hi in domains if lo - 1e-9 <= (a.x or 0.0) <= hi + 1e-9]
        room = min(widths, default=1.0) * NARROW_OUTPUT_PX
        if "<br>" not in text and len(text) * _CHAR_PX > room:
            a.update(text=_wrap(text, max(8, int(room / _CHAR_PX))))

    fig.for_each_annotation(
        fit_title, selector={"showarrow": False, "xref": "paper", "yref": "paper"}
    )
    return fig


#: Height of a label row, as a share of its panel: the label of series ``i`` sits in row ``i``
#: from the top of the panel, so the labels of several series never overlap.
LABEL_ROW_SHARE = 0.085


def point_label(
    fig: go.Figure,
    x: float,
    text: str,
    i: int,
    color: str,
    *,
    row: int | None = None,
    col: int | None = None,
    log_x: bool = False,
) -> None:
    """Label the point at ``x`` (data units) of series ``i`` with ``text``: an annotation in
    the series color at the top of the panel, in row ``i`` of label rows
    (``LABEL_ROW_SHARE`` of the panel each), starting at ``x`` (mark the point itself with a
    marker, and join them with a vertical line where it helps). One row per series: the labels
    of several series never overlap, wherever their points are. ``log_x``: the x axis is
    logarithmic (plotly places annotations on log axes in log10 units).
    """
    ax = float(x)
    if log_x:
        ax = float(np.log10(ax)) if ax > 0 else ax
    where = {} if row is None else {"row": row, "col": col}
    fig.add_annotation(
        x=ax,
        y=1.0 - LABEL_ROW_SHARE * int(i),
        yref="y domain",
        text=text,
        showarrow=False,
        xanchor="left",
        yanchor="top",
        xshift=3,
        font={"color": color, "size": 12},
        bgcolor="rgba(255,255,255,0.85)",
        **where,
    )
