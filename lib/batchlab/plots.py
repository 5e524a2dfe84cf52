"""Pure plot builders: data in, :class:`plotly.graph_objects.Figure` out.

Every ``*_figure`` function computes what it draws from its arguments only (library calls
included) and returns a new figure: no widget, no display, no file. Titles and axis labels carry
units: lengths in tokens, latencies in milliseconds (ms), arrival times in seconds (s), costs in
cost units. The ``*_table`` helpers return the numbers a figure draws as a DataFrame, so chapters
and tests can read them directly.

Figures for the chapters:

* :func:`length_distribution_figure` (prompt_len / gen_len histograms on a log x axis, several
  workloads overlaid) and :func:`percentiles_table_figure`.
* :func:`arrival_rate_figure` (requests per second over time).
* :func:`padding_vs_k_figure` (prompt padding vs number of shapes, grid families vs optimal).
* :func:`gen_bucket_tradeoff_figure` (padding vs number of batches as the gen bucket varies).
* :func:`cost_parts_figure`, :func:`cost_latency_parts_figure`,
  :func:`cost_parts_vs_parameter_figure` (the cost decomposition).
* :func:`latency_cdf_figure`, :func:`pareto_front_figure`, :func:`planner_comparison_figure`.
* :func:`shape_buckets_figure` (length histogram with shape boundaries and padding per shape),
  used by the shape explorer widget.
* The serving simulation (``batchlab.simulate``): :func:`batch_timeline_figure` (steps and
  requests of a time window, Gantt-like), :func:`latency_cdf_by_policy_figure`,
  :func:`policy_dashboard_figure` (latency CDF, percentiles and throughput side by side),
  :func:`load_sweep_figure` (throughput and latency vs load, the knee marked) and
  :func:`kv_utilisation_figure`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from numpy.typing import ArrayLike
from plotly.subplots import make_subplots

from batchlab.cost import CostBreakdown, CostModel, get_cost_model
from batchlab.errors import InputError
from batchlab.evaluate import Evaluation, evaluate, nearest_rank
from batchlab.shapes import (
    DEFAULT_GRANULARITY,
    GRID_FAMILIES,
    align,
    min_padding_tokens,
    padding_tokens,
    shape_grid,
)
from batchlab.simulate import SimulationResult, find_knee
from batchlab.sweep import pareto_front
from batchlab.workload import arrival_rate_over_time, profile, validate_requests

__all__ = [
    "BOUND_FIELDS",
    "COST_PARTS",
    "LIMIT_FIELDS",
    "METRIC_LABELS",
    "PART_COLORS",
    "arrival_rate_figure",
    "cost_latency_parts_figure",
    "cost_parts_figure",
    "cost_parts_table",
    "cost_parts_vs_parameter_figure",
    "gen_bucket_tradeoff_figure",
    "gen_bucket_tradeoff_table",
    "latency_cdf_figure",
    "length_distribution_figure",
    "length_histogram",
    "length_percentiles_table",
    "log_bin_edges",
    "padding_by_shape_table",
    "padding_vs_k_figure",
    "padding_vs_k_table",
    "pareto_front_figure",
    "percentiles_table_figure",
    "planner_comparison_figure",
    "shape_buckets_figure",
]

#: The four parts of a cost (and of a latency), in stacking order.
COST_PARTS = ("overhead", "compile", "prefill", "decode")
#: One color per part, shared by every figure.
PART_COLORS = {
    "overhead": "#636EFA",
    "compile": "#EF553B",
    "prefill": "#00CC96",
    "decode": "#AB63FA",
}
_SERIES_COLORS = (
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
_LENGTH_NAMES = {"prompt_len": "prompt length", "gen_len": "generation length"}


def _label(name: str) -> str:
    return METRIC_LABELS.get(name, name)


def _color(i: int) -> str:
    return _SERIES_COLORS[i % len(_SERIES_COLORS)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    return f"rgba({r},{g},{b},{alpha})"


def _named(items: Any, what: str, default_name: str) -> list[tuple[str, Any]]:
    """``(name, item)`` pairs from one item, a mapping name -> item or a sequence of items."""
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    elif isinstance(items, pd.DataFrame | Evaluation | np.ndarray | pd.Series) or is_dataclass(
        items
    ):
        name = items.attrs.get("name", default_name) if isinstance(items, pd.DataFrame) else None
        pairs = [(str(name or default_name), items)]
    elif isinstance(items, Iterable) and not isinstance(items, str | bytes):
        pairs = [(f"{default_name} {i}", v) for i, v in enumerate(items)]
    else:
        raise InputError(
            f"expected a {what}, a mapping name -> {what} or a list of them, "
            f"got {type(items).__name__}"
        )
    if not pairs:
        raise InputError(f"no {what} to plot")
    return pairs


def _workloads(workloads: Any) -> list[tuple[str, pd.DataFrame]]:
    pairs = _named(workloads, "request table", "workload")
    return [(name, validate_requests(df, source=name)) for name, df in pairs]


# --------------------------------------------------------------------------------------------
# length distributions


def log_bin_edges(low: float, high: float, n_bins: int = 50) -> np.ndarray:
    """``n_bins + 1`` geometrically spaced bin edges from ``low`` to ``high`` (tokens, > 0).

    When ``high <= low`` the range is widened to ``[low, low + 1]`` so one value still has a bin.
    """
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise InputError(f"must be a positive integer, got {n_bins!r}", field="n_bins")
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


def _step_xy(edges: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = the bin edges, y = the bin values with the last repeated (for ``line_shape='hv'``)."""
    return edges, np.append(values, values[-1] if len(values) else 0.0)


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
            x, ys = _step_xy(edges, y)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=ys,
                    name=name,
                    legendgroup=name,
                    showlegend=j == 1,
                    mode="lines",
                    line={"shape": "hv", "color": _color(i), "width": 1.5},
                    fill="tozeroy",
                    fillcolor=_rgba(_color(i), 0.15),
                    hovertemplate=f"{name}<br>from %{{x:.0f}} tokens: %{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=j,
            )
        fig.update_xaxes(type="log", title_text=_label(col), row=1, col=j)
        fig.update_yaxes(
            title_text="share of requests (%)" if normalize else "requests", row=1, col=j
        )
    fig.update_layout(
        title=title or "Length distributions (log-spaced bins)",
        legend_title_text="workload",
    )
    return fig


def length_percentiles_table(
    workloads: pd.DataFrame | Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame],
) -> pd.DataFrame:
    """One row per (workload, length field) from ``workload.profile``: ``workload``, ``field``
    and the profile's ``count, min, mean, p50, p90, p95, p99, max`` (tokens, nearest rank)."""
    parts = []
    for name, df in _workloads(workloads):
        lengths = profile(df).lengths.reset_index()
        lengths.insert(0, "workload", name)
        parts.append(lengths)
    return pd.concat(parts, ignore_index=True)


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
    return fig


# --------------------------------------------------------------------------------------------
# arrivals


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
                line={"shape": "hv", "color": _color(i)},
                hovertemplate=f"{name}<br>t = %{{x:.3g}} s: %{{y:.4g}} requests/s<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"Arrival rate ({float(window_s):g} s windows)",
        xaxis_title="time since first request (s)",
        yaxis_title="arrival rate (requests/s)",
        legend_title_text="workload",
    )
    return fig


# --------------------------------------------------------------------------------------------
# shapes and padding


def padding_vs_k_table(
    lengths: ArrayLike,
    ks: Iterable[int] = range(1, 17),
    *,
    families: Sequence[str] = GRID_FAMILIES,
    granularity: int = DEFAULT_GRANULARITY,
) -> pd.DataFrame:
    """Prompt padding of each grid family for each k (tokens).

    One row per (family, k): ``n_shapes`` (distinct shapes of ``shapes.shape_grid``),
    ``padding_tokens`` (``shapes.padding_tokens`` with each length at its smallest covering shape)
    and ``padding_fraction`` (padding / Σ lengths). ``power_of_two`` ignores k: it has one row, at
    ``k = n_shapes``. ``optimal`` is the exact least padding for at most k shapes.
    """
    arr = np.asarray(lengths).reshape(-1)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise InputError(f"ks must hold integers >= 1, got {ks!r}", field="ks")
    unknown = [f for f in families if f not in GRID_FAMILIES]
    if unknown:
        raise InputError(
            f"unknown grid famil(y/ies) {unknown}; expected {', '.join(GRID_FAMILIES)}",
            field="families",
        )
    total = float(np.asarray(arr, dtype=np.float64).sum())
    rows = []
    for family in families:
        for k in ks[:1] if family == "power_of_two" else ks:
            shapes = shape_grid(family, arr, k, granularity)
            pad = padding_tokens(arr, shapes, granularity)
            rows.append(
                {
                    "family": family,
                    "k": len(shapes) if family == "power_of_two" else k,
                    "n_shapes": len(shapes),
                    "padding_tokens": pad,
                    "padding_fraction": pad / total,
                    "shapes": tuple(int(s) for s in shapes),
                }
            )
    return pd.DataFrame(rows)


def padding_vs_k_figure(
    lengths: ArrayLike,
    ks: Iterable[int] = range(1, 17),
    *,
    families: Sequence[str] = GRID_FAMILIES,
    granularity: int = DEFAULT_GRANULARITY,
    title: str | None = None,
) -> go.Figure:
    """Prompt padding (tokens) vs the number of shapes k, one line per grid family.

    Data from :func:`padding_vs_k_table`; the ``optimal`` family is drawn thicker, and a dashed
    line marks the alignment padding no shape set can avoid (``shapes.min_padding_tokens``).
    ``power_of_two`` is a single marker (its size is set by the range of lengths).
    """
    table = padding_vs_k_table(lengths, ks, families=families, granularity=granularity)
    fig = go.Figure()
    for i, family in enumerate(families):
        rows = table[table["family"] == family]
        optimal = family == "optimal"
        fig.add_trace(
            go.Scatter(
                x=rows["k"].to_numpy(),
                y=rows["padding_tokens"].to_numpy(),
                name=family,
                mode="markers" if family == "power_of_two" else "lines+markers",
                line={"color": _color(i), "width": 3 if optimal else 1.5},
                marker={"size": 10 if family == "power_of_two" else 6},
                customdata=np.column_stack(
                    [rows["n_shapes"].to_numpy(), rows["padding_fraction"].to_numpy() * 100]
                ),
                hovertemplate=(
                    f"{family}<br>k = %{{x}} (%{{customdata[0]}} distinct shapes)"
                    "<br>padding %{y:,} tokens (%{customdata[1]:.2f}% of prompt tokens)"
                    "<extra></extra>"
                ),
            )
        )
    floor = min_padding_tokens(np.asarray(lengths).reshape(-1), granularity)
    k_all = table["k"].to_numpy()
    fig.add_trace(
        go.Scatter(
            x=[int(k_all.min()), int(k_all.max())],
            y=[floor, floor],
            name="alignment padding (lower bound)",
            mode="lines",
            line={"color": "black", "dash": "dash", "width": 1},
            hovertemplate="unavoidable alignment padding: %{y:,} tokens<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or f"Prompt padding vs number of shapes (granularity {granularity} tokens)",
        xaxis_title="k (number of shapes)",
        yaxis_title="prompt padding (tokens)",
        legend_title_text="shape grid",
    )
    return fig


def padding_by_shape_table(
    evaluation: Evaluation, cost_model: str | CostModel = "static-graph"
) -> pd.DataFrame:
    """Padding per shape bucket of an evaluated plan (tokens), one row per ``seq_align``.

    Columns: ``seq_align``, ``n_requests``, ``n_batches``, ``prompt_padding`` (aligned prompt
    minus prompt_len; under a padded cost model the declared seq_align minus prompt_len),
    ``gen_padding`` (batch G_max minus gen_len), ``padding`` (their sum). The sums over rows equal
    ``evaluation.padding_tokens`` when ``cost_model`` is the one the plan was evaluated with.
    """
    cm = get_cost_model(cost_model)
    req = evaluation.requests
    batches = evaluation.batches
    prompt = req["prompt_len"].to_numpy(dtype=np.int64)
    gen = req["gen_len"].to_numpy(dtype=np.int64)
    seq = req["seq_align"].to_numpy(dtype=np.int64)
    ctx = seq if cm.padded else align(prompt, cm.granularity)
    where = pd.Index(batches["batch_id"].to_numpy(dtype=object)).get_indexer(
        req["batch_id"].to_numpy(dtype=object)
    )
    g_max = batches["g_max"].to_numpy(dtype=np.int64)[where]
    shapes, inverse = np.unique(seq, return_inverse=True)
    inverse = inverse.reshape(-1)
    m = len(shapes)
    batch_shapes = batches["seq_align"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "seq_align": shapes,
            "n_requests": np.bincount(inverse, minlength=m).astype(np.int64),
            "n_batches": np.bincount(np.searchsorted(shapes, batch_shapes), minlength=m).astype(
                np.int64
            ),
            "prompt_padding": np.bincount(inverse, weights=ctx - prompt, minlength=m).astype(
                np.int64
            ),
            "gen_padding": np.bincount(inverse, weights=g_max - gen, minlength=m).astype(np.int64),
        }
    ).assign(padding=lambda t: t["prompt_padding"] + t["gen_padding"])


def _boundary_xy(shapes: Sequence[int], top: float) -> tuple[list, list]:
    """Vertical segments from 0 to ``top`` at every shape, separated by None gaps."""
    x: list = []
    y: list = []
    for s in shapes:
        x += [float(s), float(s), None]
        y += [0.0, float(top), None]
    return x, y


def shape_buckets_figure(
    requests: pd.DataFrame,
    shapes: Sequence[int],
    evaluation: Evaluation | None = None,
    *,
    cost_model: str | CostModel = "static-graph",
    n_bins: int = 60,
    title: str | None = None,
) -> go.Figure:
    """Prompt-length histogram with shape boundaries, and padding per shape bucket.

    Left panel, log x: trace 0 ``prompt_len`` (requests per log-spaced bin, step line, x = bin
    edges in tokens) and trace 1 ``shape boundaries`` (a vertical segment at every ``seq_align``
    of ``shapes``). Right panel: stacked bars ``prompt padding`` (trace 2) and ``gen padding``
    (trace 3) per shape bucket from :func:`padding_by_shape_table` of ``evaluation`` (empty when
    ``evaluation`` is None). The trace layout never changes, so a widget can update it in place.
    """
    req = validate_requests(requests)
    prompt = req["prompt_len"].to_numpy(dtype=np.float64)
    edges = log_bin_edges(prompt.min(), prompt.max(), n_bins)
    counts = length_histogram(prompt, edges)
    x, y = _step_xy(edges, counts.astype(np.float64))
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        subplot_titles=["prompt lengths and shape boundaries", "padding per shape bucket"],
        horizontal_spacing=0.14,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            name="prompt_len",
            mode="lines",
            line={"shape": "hv", "color": _color(0)},
            fill="tozeroy",
            fillcolor=_rgba(_color(0), 0.2),
            hovertemplate="from %{x:.0f} tokens: %{y:,} requests<extra></extra>",
        ),
        row=1,
        col=1,
    )
    bx, by = _boundary_xy([int(s) for s in shapes], max(1.0, float(counts.max())) * 1.05)
    fig.add_trace(
        go.Scatter(
            x=bx,
            y=by,
            name="shape boundaries",
            mode="lines",
            line={"color": "#D62728", "dash": "dash", "width": 1.5},
            hovertemplate="seq_align %{x:.0f} tokens<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if evaluation is not None:
        table = padding_by_shape_table(evaluation, cost_model)
        labels = [str(int(s)) for s in table["seq_align"]]
        prompt_pad = table["prompt_padding"].to_numpy()
        gen_pad = table["gen_padding"].to_numpy()
    else:
        labels, prompt_pad, gen_pad = [], np.zeros(0), np.zeros(0)
    for name, values, color in (
        ("prompt padding", prompt_pad, "#17BECF"),
        ("gen padding", gen_pad, "#FF7F0E"),
    ):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=values,
                name=name,
                marker_color=color,
                hovertemplate=f"seq_align %{{x}}: %{{y:,}} {name} tokens<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(type="log", title_text="prompt length (tokens)", row=1, col=1)
    fig.update_yaxes(title_text="requests", row=1, col=1)
    fig.update_xaxes(type="category", title_text="shape seq_align (tokens)", row=1, col=2)
    fig.update_yaxes(title_text="padding (tokens)", row=1, col=2)
    fig.update_layout(barmode="stack", title=title or "Shape buckets", width=1000, height=430)
    return fig


def gen_bucket_tradeoff_table(
    requests: pd.DataFrame,
    seq_aligns: ArrayLike,
    bucket_sizes: Iterable[int | None],
    *,
    max_batch_size: int | None = None,
    cost_model: str | CostModel = "static-graph",
) -> pd.DataFrame:
    """Padding and batches of ``plan.bucketed_plan`` for each gen-bucket size (tokens).

    One row per size (None = no gen buckets): ``gen_bucket_size``, ``n_batches``,
    ``prompt_padding`` and ``gen_padding`` (tokens), ``pad_ratio``, ``total_cost``,
    ``p95_latency_ms`` and ``sequential_ms`` of ``evaluate`` under ``cost_model``.
    """
    from batchlab.plan import bucketed_plan

    cm = get_cost_model(cost_model)
    shapes = np.asarray(seq_aligns, dtype=np.int64).reshape(-1)
    rows = []
    for size in bucket_sizes:
        plan = bucketed_plan(
            requests,
            shapes,
            gen_bucket_size=size,
            max_batch_size=max_batch_size,
            granularity=cm.granularity,
        )
        ev = evaluate(requests, plan, cm)
        rows.append(
            {
                "gen_bucket_size": None if size is None else int(size),
                "n_batches": ev.n_batches,
                "prompt_padding": ev.padding_tokens.prompt,
                "gen_padding": ev.padding_tokens.gen,
                "pad_ratio": ev.pad_ratio,
                "total_cost": ev.cost.total,
                "p95_latency_ms": ev.p95_latency_ms,
                "sequential_ms": ev.sequential_ms,
            }
        )
    if not rows:
        raise InputError("no bucket sizes given", field="bucket_sizes")
    out = pd.DataFrame(rows)
    out["gen_bucket_size"] = pd.Series([r["gen_bucket_size"] for r in rows], dtype=object)
    return out


def gen_bucket_tradeoff_figure(
    requests: pd.DataFrame,
    seq_aligns: ArrayLike,
    bucket_sizes: Iterable[int | None],
    *,
    max_batch_size: int | None = None,
    cost_model: str | CostModel = "static-graph",
    title: str | None = None,
) -> go.Figure:
    """The gen-bucket trade-off: padding (tokens) vs number of batches as the bucket size varies.

    One point per bucket size (labelled with the size, ``none`` = no gen buckets), from
    :func:`gen_bucket_tradeoff_table`, joined in order of the number of batches. Trace 0 is the
    total padding (prompt + gen), trace 1 the gen padding alone.
    """
    table = gen_bucket_tradeoff_table(
        requests,
        seq_aligns,
        bucket_sizes,
        max_batch_size=max_batch_size,
        cost_model=cost_model,
    )
    table = table.sort_values(["n_batches", "gen_padding"], kind="stable")
    labels = ["none" if s is None else str(s) for s in table["gen_bucket_size"]]
    fig = go.Figure()
    series = (
        ("total padding", table["prompt_padding"] + table["gen_padding"], _color(0)),
        ("gen padding", table["gen_padding"], _color(1)),
    )
    for name, values, color in series:
        mode = "lines+markers+text" if name == "total padding" else "lines+markers"
        fig.add_trace(
            go.Scatter(
                x=table["n_batches"].to_numpy(),
                y=values.to_numpy(),
                name=name,
                mode=mode,
                text=labels,
                textposition="top right",
                line={"color": color},
                customdata=np.column_stack([labels, table["pad_ratio"].to_numpy()]),
                hovertemplate=(
                    f"gen bucket %{{customdata[0]}} tokens<br>%{{x}} batches<br>"
                    f"{name} %{{y:,}} tokens<br>pad ratio %{{customdata[1]:.4f}}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title=title or "Gen-bucket trade-off (labels: bucket size in tokens)",
        xaxis_title="batches",
        yaxis_title="padding (tokens)",
    )
    return fig


# --------------------------------------------------------------------------------------------
# cost decomposition


def _parts(item: Any, kind: str) -> dict[str, float]:
    """The four parts of a cost (``kind='cost'``) or latency (``'latency'``) as floats."""
    if isinstance(item, Evaluation):
        item = item.cost if kind == "cost" else item.latency
    if isinstance(item, Mapping):
        out = {}
        for part in COST_PARTS:
            for key in (part, f"{kind}_{part}", f"cost_{part}"):
                if key in item:
                    out[part] = float(item[key])
                    break
            else:
                raise InputError(f"missing part {part!r} of the {kind}", field=part)
        return out
    if is_dataclass(item) and {f.name for f in fields(item)} >= set(COST_PARTS):
        return {part: float(getattr(item, part)) for part in COST_PARTS}
    raise InputError(
        f"expected an Evaluation, a CostBreakdown-like object or a mapping of parts, "
        f"got {type(item).__name__}"
    )


def cost_parts_table(
    items: Evaluation | CostBreakdown | Mapping[str, Any] | Sequence[Any], kind: str = "cost"
) -> pd.DataFrame:
    """One row per item: the four parts and their total (cost units for ``kind='cost'``, ms summed
    over requests for ``kind='latency'``). ``items``: one Evaluation/CostBreakdown, a mapping
    name -> one of them (or a dict of parts), or a list."""
    if kind not in ("cost", "latency"):
        raise InputError(f"kind must be 'cost' or 'latency', got {kind!r}", field="kind")
    if isinstance(items, Mapping) and set(COST_PARTS) <= set(items):
        items = {"plan": items}
    rows = []
    for name, item in _named(items, "evaluation", "plan"):
        parts = _parts(item, kind)
        rows.append({"name": name, **parts, "total": sum(parts.values())})
    return pd.DataFrame(rows)


def _add_part_bars(fig: go.Figure, table: pd.DataFrame, unit: str, *, show_legend: bool, **rc):
    for part in COST_PARTS:
        fig.add_trace(
            go.Bar(
                x=table["name"].tolist(),
                y=table[part].to_numpy(),
                name=part,
                legendgroup=part,
                showlegend=show_legend,
                marker_color=PART_COLORS[part],
                customdata=(table[part] / table["total"].where(table["total"] > 0) * 100)
                .fillna(0.0)
                .to_numpy(),
                hovertemplate=(
                    f"%{{x}}<br>{part}: %{{y:.4g}} {unit} (%{{customdata:.1f}}%)<extra></extra>"
                ),
            ),
            **rc,
        )


def cost_parts_figure(
    items: Evaluation | CostBreakdown | Mapping[str, Any] | Sequence[Any],
    *,
    kind: str = "cost",
    title: str | None = None,
) -> go.Figure:
    """Stacked bars of the four parts (overhead, compile, prefill, decode), one bar per item.

    One trace per part (in that order), x = item names, y = the part's value: cost units for
    ``kind='cost'``, request latencies summed over requests (ms) for ``kind='latency'``.
    """
    table = cost_parts_table(items, kind)
    unit = "cost units" if kind == "cost" else "ms"
    fig = go.Figure()
    _add_part_bars(fig, table, unit, show_legend=True)
    fig.update_layout(
        barmode="stack",
        title=title or ("Cost by part" if kind == "cost" else "Latency by part"),
        xaxis_title="plan",
        yaxis_title="cost (cost units)" if kind == "cost" else "latency summed over requests (ms)",
        legend_title_text="part",
    )
    return fig


def cost_latency_parts_figure(
    items: Evaluation | Mapping[str, Evaluation] | Sequence[Evaluation],
    *,
    title: str | None = None,
) -> go.Figure:
    """Two panels of stacked bars, one bar per evaluation: cost parts (cost units, traces 0-3)
    and latency parts summed over requests (ms, traces 4-7), parts in :data:`COST_PARTS` order."""
    costs = cost_parts_table(items, "cost")
    latencies = cost_parts_table(items, "latency")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["cost by part (cost units)", "latency by part (ms, summed over requests)"],
        horizontal_spacing=0.12,
    )
    _add_part_bars(fig, costs, "cost units", show_legend=True, row=1, col=1)
    _add_part_bars(fig, latencies, "ms", show_legend=False, row=1, col=2)
    fig.update_yaxes(title_text="cost (cost units)", row=1, col=1)
    fig.update_yaxes(title_text="latency (ms)", row=1, col=2)
    fig.update_layout(
        barmode="stack", title=title or "Cost and latency by part", width=1000, height=430
    )
    return fig


def cost_parts_vs_parameter_figure(
    table: pd.DataFrame,
    parameter: str,
    *,
    parts: Sequence[str] = ("cost_overhead", "cost_compile", "cost_prefill", "cost_decode"),
    stacked: bool = True,
    log_x: bool = False,
    unit: str = "cost units",
    title: str | None = None,
) -> go.Figure:
    """The cost parts as a function of one parameter: stacked areas (or lines if not ``stacked``).

    ``table`` has one row per parameter value (for example a ``grid_sweep`` table over one
    parameter, whose metric columns include ``cost_overhead`` ... ``cost_decode``). One trace per
    part column, x = the parameter values sorted ascending, y = the part (``unit``). With
    ``stacked`` the top of the last area is the total.
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(table).__name__}")
    for col in (parameter, *parts):
        if col not in table.columns:
            raise InputError("no such column", field=col)
    if "error" in table.columns:
        table = table[table["error"].isna()]
    if table[parameter].duplicated().any():
        raise InputError(
            "several rows per parameter value; select one row per value first", field=parameter
        )
    data = table.sort_values(parameter, kind="stable")
    x = data[parameter].to_numpy()
    fig = go.Figure()
    for part in parts:
        short = part.removeprefix("cost_").removeprefix("latency_")
        color = PART_COLORS.get(short)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=data[part].to_numpy(dtype=np.float64),
                name=short,
                mode="lines",
                stackgroup="parts" if stacked else None,
                line={"color": color} if color else None,
                hovertemplate=f"{parameter} = %{{x}}<br>{short}: %{{y:.4g}} {unit}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"Cost parts vs {parameter}",
        xaxis_title=_label(parameter),
        yaxis_title=f"cost ({unit})",
        legend_title_text="part",
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fig


# --------------------------------------------------------------------------------------------
# latency, Pareto front, planner comparison


def _latencies(item: Any) -> np.ndarray:
    if isinstance(item, Evaluation):
        return item.requests["latency_ms"].to_numpy(dtype=np.float64)
    if isinstance(item, pd.DataFrame):
        if "latency_ms" not in item.columns:
            raise InputError("missing column", field="latency_ms")
        return item["latency_ms"].to_numpy(dtype=np.float64)
    arr = np.asarray(item, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InputError("no latencies to plot", field="latency_ms")
    if not np.isfinite(arr).all():
        raise InputError("latencies must be finite (ms)", field="latency_ms")
    return arr


def latency_cdf_figure(
    items: Evaluation | Mapping[str, Any] | Sequence[Any],
    *,
    percents: Sequence[int] = (50, 95, 99),
    log_x: bool = True,
    max_points: int = 2000,
    title: str | None = None,
) -> go.Figure:
    """Empirical CDF of per-request latency (ms), one line per item, with percentile markers.

    ``items``: an Evaluation, an array of latencies (ms), a DataFrame with ``latency_ms``, or a
    mapping name -> one of them. For n latencies sorted ascending, the point of rank r (1-based)
    is (x_r, 100·r/n). Above ``max_points`` only ranks evenly spaced from 1 to n are drawn (each
    drawn point is exact). After each line comes a marker trace (``<name> percentiles``) at the
    nearest-rank ``percents``.
    """
    fig = go.Figure()
    for i, (name, item) in enumerate(_named(items, "evaluation", "plan")):
        lat = np.sort(_latencies(item))
        n = len(lat)
        ranks = np.arange(1, n + 1)
        if n > max_points:
            ranks = np.unique(np.linspace(1, n, int(max_points)).round().astype(np.int64))
        fig.add_trace(
            go.Scatter(
                x=lat[ranks - 1],
                y=ranks / n * 100.0,
                name=name,
                legendgroup=name,
                mode="lines",
                line={"shape": "hv", "color": _color(i)},
                hovertemplate=f"{name}<br>%{{y:.2f}}% of requests ≤ %{{x:.4g}} ms<extra></extra>",
            )
        )
        pcts = tuple(int(p) for p in percents)
        values = nearest_rank(lat, pcts) if pcts else ()
        fig.add_trace(
            go.Scatter(
                x=list(values),
                y=[float(p) for p in pcts],
                name=f"{name} percentiles",
                legendgroup=name,
                showlegend=False,
                mode="markers+text",
                text=[f"p{p}" for p in pcts],
                textposition="middle left",
                marker={"color": _color(i), "size": 8, "symbol": "diamond"},
                hovertemplate=f"{name}<br>%{{text}} = %{{x:.4g}} ms<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or "Per-request latency CDF",
        xaxis_title="request latency (ms)",
        yaxis_title="requests at or below (%)",
        legend_title_text="plan",
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def pareto_front_figure(
    table: pd.DataFrame,
    *,
    x: str = "total_cost",
    y: str = "p95_latency_ms",
    hover: Sequence[str] | None = None,
    log_x: bool = False,
    log_y: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Every setting of a sweep as a point (trace ``all settings``) and the Pareto front on
    (``x``, ``y``), both minimized, highlighted and joined (trace ``Pareto front``, sorted by x).

    Rows with a NaN in x or y (failed sweep points) are left out. ``hover`` lists the columns
    shown on hover (default: every column other than metrics named ``ok_*``/``error``).
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(table).__name__}")
    for col in (x, y):
        if col not in table.columns:
            raise InputError("no such column", field=col)
    valid = table[table[[x, y]].notna().all(axis=1)]
    if len(valid) == 0:
        raise InputError(f"no row has both {x!r} and {y!r}")
    front = pareto_front(valid, [x, y]).sort_values([x, y], kind="stable")
    if hover is None:
        hover = [
            c for c in table.columns if c not in (x, y, "error") and not str(c).startswith("ok_")
        ]
    hover = list(hover)

    def hover_text(df: pd.DataFrame) -> list[str]:
        if not hover:
            return [""] * len(df)
        return ["<br>".join(f"{c} = {df[c].iloc[r]}" for c in hover) for r in range(len(df))]

    tmpl = f"{x} = %{{x:.4g}}<br>{y} = %{{y:.4g}}<br>%{{text}}<extra></extra>"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=valid[x].to_numpy(dtype=np.float64),
            y=valid[y].to_numpy(dtype=np.float64),
            name="all settings",
            mode="markers",
            marker={"color": "rgba(120,120,120,0.45)", "size": 7},
            text=hover_text(valid),
            hovertemplate=tmpl,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=front[x].to_numpy(dtype=np.float64),
            y=front[y].to_numpy(dtype=np.float64),
            name="Pareto front",
            mode="lines+markers",
            line={"color": "#D62728", "shape": "hv"},
            marker={"color": "#D62728", "size": 10},
            text=hover_text(front),
            hovertemplate=tmpl,
        )
    )
    fig.update_layout(
        title=title or f"Pareto front: {x} vs {y} (lower is better)",
        xaxis_title=_label(x),
        yaxis_title=_label(y),
    )
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


#: Evaluation summary metric -> the LowerBounds field that bounds it from below.
BOUND_FIELDS = {
    "total_cost": "min_cost",
    "pad_ratio": "min_pad_ratio",
    "p95_latency_ms": "min_p95_latency_ms",
    "sequential_ms": "min_sequential_ms",
    "n_batches": "min_batches",
}
#: Evaluation summary metric -> the Limits field that bounds it from above.
LIMIT_FIELDS = {
    "total_cost": "max_cost",
    "pad_ratio": "max_pad_ratio",
    "p95_latency_ms": "max_p95_latency_ms",
    "sequential_ms": "max_sequential_ms",
}


def _summary(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Evaluation):
        return item.summary()
    if hasattr(item, "evaluation") and isinstance(item.evaluation, Evaluation):
        return item.evaluation.summary()  # a planner BucketPlan
    if isinstance(item, Mapping):
        return item
    if isinstance(item, pd.Series):
        return item.to_dict()
    raise InputError(f"expected an Evaluation or a summary mapping, got {type(item).__name__}")


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def planner_comparison_figure(
    results: Mapping[str, Any],
    bounds: Any = None,
    *,
    limits: Any = None,
    metrics: Sequence[str] = ("total_cost", "pad_ratio", "p95_latency_ms", "sequential_ms"),
    title: str | None = None,
) -> go.Figure:
    """Planner vs baseline vs lower bound: one panel per metric, one bar per plan.

    ``results``: name -> Evaluation (or its ``summary()`` dict, or a planner ``BucketPlan``), e.g.
    ``{"planner": ..., "baseline": ...}``. ``bounds``: a ``planner.LowerBounds`` (or a mapping
    of its fields); when given, a first bar ``lower bound`` shows the value no plan can beat.
    ``limits``: a ``planner.Limits`` (or mapping); a set limit is a dashed red line. Trace i is
    the panel of ``metrics[i]``: x = bar names, y = values in the metric's unit.
    """
    named = _named(results, "evaluation", "plan")
    summaries = [(name, _summary(item)) for name, item in named]
    metrics = list(metrics)
    if not metrics:
        raise InputError("name at least one metric", field="metrics")
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        subplot_titles=[_label(m) for m in metrics],
        horizontal_spacing=0.06,
    )
    for j, metric in enumerate(metrics, start=1):
        names, values, colors = [], [], []
        bound = _field(bounds, BOUND_FIELDS[metric]) if metric in BOUND_FIELDS else None
        if bound is not None:
            names.append("lower bound")
            values.append(float(bound))
            colors.append("#7F7F7F")
        for i, (name, summary) in enumerate(summaries):
            if metric not in summary:
                raise InputError(f"plan {name!r} has no metric", field=metric)
            names.append(name)
            values.append(float(summary[metric]))
            colors.append(_color(i))
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=metric,
                marker_color=colors,
                showlegend=False,
                hovertemplate=f"%{{x}}<br>{_label(metric)}: %{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=j,
        )
        limit = _field(limits, LIMIT_FIELDS[metric]) if metric in LIMIT_FIELDS else None
        if limit is not None:
            fig.add_hline(
                y=float(limit),
                line={"color": "#D62728", "dash": "dash"},
                annotation_text="limit",
                annotation_position="top left",
                row=1,
                col=j,
            )
        fig.update_yaxes(rangemode="tozero", row=1, col=j)
    fig.update_layout(title=title or "Planner vs baseline vs lower bound", bargap=0.3)
    return fig


def use_notebook_renderer(renderer: str = "plotly_mimetype+notebook_connected") -> None:
    """Set plotly's default renderer for the chapters.

    ``plotly_mimetype`` is drawn by JupyterLab's plotly extension (and kept in the saved
    notebook); ``notebook_connected`` adds a small HTML fallback that loads plotly.js from its
    CDN, for viewers without the extension. Neither embeds the 4 MB plotly.js in the notebook.
    """
    import plotly.io as pio

    pio.renderers.default = renderer


# --------------------------------------------------------------------------------------------
# serving simulation: batch timelines, latency CDFs by policy, load sweeps, KV-cache use

__all__ += [
    "SIMULATION_LABELS",
    "STEP_KIND_COLORS",
    "TIMELINE_SEGMENTS",
    "batch_timeline_figure",
    "batch_timeline_table",
    "kv_utilisation_figure",
    "latency_cdf_by_policy_figure",
    "load_sweep_figure",
    "load_sweep_knee_table",
    "policy_dashboard_figure",
    "step_kinds",
]

#: Axis labels (with units) of the columns of ``SimulationResult.requests`` / ``.summary()``
#: and of the load-sweep tables.
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


def _sim_label(name: str) -> str:
    return SIMULATION_LABELS.get(name, METRIC_LABELS.get(name, name))


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


def _positive_whole(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"must be a whole number >= 1, got {value!r}", field=field)
    return int(value)


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
    m = _positive_whole(max_requests, "max_requests")
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
        height=650,
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
    return fig


def _metric_values(item: Any, metric: str, name: str) -> np.ndarray:
    table = item.requests if isinstance(item, SimulationResult) else item
    if metric not in table.columns:
        raise InputError("missing column", path=name, field=metric)
    v = table[metric].to_numpy(dtype=np.float64)
    return v[np.isfinite(v)]


def _cdf_xy(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and their cumulative shares (%); above ``max_points`` only evenly spaced
    ranks (each point exact)."""
    lat = np.sort(values)
    n = lat.size
    if n == 0:
        return lat, lat
    ranks = np.arange(1, n + 1)
    if n > max_points:
        ranks = np.unique(np.linspace(1, n, int(max_points)).round().astype(np.int64))
    return lat[ranks - 1], ranks / n * 100.0


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
    if not metrics:
        raise InputError("name at least one metric", field="metrics")
    pcts = tuple(int(p) for p in percents)
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        subplot_titles=[_sim_label(m) for m in metrics],
        horizontal_spacing=0.07,
    )
    for j, metric in enumerate(metrics, start=1):
        for i, (name, item) in enumerate(named):
            values = _metric_values(item, metric, name)
            x, y = _cdf_xy(values, max_points)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    name=name,
                    legendgroup=name,
                    showlegend=j == 1,
                    mode="lines",
                    line={"shape": "hv", "color": _color(i)},
                    hovertemplate=f"{name}<br>%{{y:.2f}}% ≤ %{{x:.4g}} ms<extra></extra>",
                ),
                row=1,
                col=j,
            )
            marks = nearest_rank(values, pcts) if (pcts and values.size) else ()
            fig.add_trace(
                go.Scatter(
                    x=list(marks),
                    y=[float(p) for p in pcts][: len(marks)],
                    name=f"{name} percentiles",
                    legendgroup=name,
                    showlegend=False,
                    mode="markers",
                    text=[f"p{p}" for p in pcts][: len(marks)],
                    marker={"color": _color(i), "size": 8, "symbol": "diamond"},
                    hovertemplate=f"{name}<br>%{{text}} = %{{x:.4g}} ms<extra></extra>",
                ),
                row=1,
                col=j,
            )
        fig.update_xaxes(title_text=_sim_label(metric), row=1, col=j)
        if log_x:
            fig.update_xaxes(type="log", row=1, col=j)
    fig.update_yaxes(title_text="requests at or below (%)", row=1, col=1)
    fig.update_layout(
        title=title or "Per-request times by policy (CDF)", legend_title_text="policy"
    )
    return fig


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
        x, y = _cdf_xy(values, max_points)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=name,
                legendgroup=name,
                mode="lines",
                line={"shape": "hv", "color": _color(i)},
                hovertemplate=f"{name}<br>%{{y:.2f}}% ≤ %{{x:.4g}} ms<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for j, p in enumerate(pcts):
        vals = [nearest_rank(v, (p,))[0] if v.size else np.nan for v in lat]
        fig.add_trace(
            go.Bar(
                x=names,
                y=vals,
                name=f"p{p} latency",
                showlegend=False,
                marker={
                    "color": [
                        _rgba(_color(i), 0.45 + 0.55 * (j + 1) / len(pcts))
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
            marker={"color": [_color(i) for i in range(len(names))]},
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
        width=1000,
        height=430,
    )
    return fig


def _sweep_groups(df: pd.DataFrame, x: str, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a load-sweep DataFrame, got {type(df).__name__}")
    if x not in df.columns:
        raise InputError("missing column", field=x)
    if "mode" in df.columns and df["mode"].nunique() > 1:
        raise InputError(
            f"the table mixes load modes {sorted(df['mode'].unique())}; plot one at a time, "
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


def load_sweep_knee_table(
    df: pd.DataFrame,
    *,
    x: str = "level",
    y: str = "latency_p99_ms",
    by: str | None = "policy",
    factor: float = 2.0,
    method: str = "threshold",
    throughput: str = "throughput_rps",
) -> pd.DataFrame:
    """The knee of each group of a load sweep (``simulate.load_sweep`` rows, one mode).

    One row per group of ``by`` (one row named ``sweep`` for ``by=None``): ``knee`` (the load
    ``x`` from ``simulate.find_knee(group, x, y, factor=, method=)``, NaN when latency never
    degrades within the sweep), ``<y>_lowest_load`` (``y`` at the smallest load),
    ``<y>_at_knee`` and ``<throughput>_at_knee`` (the row at the knee; NaN without a knee).
    """
    rows = []
    for name, part in _sweep_groups(df, x, by):
        for col in (y, throughput):
            if col not in part.columns:
                raise InputError("missing column", field=col)
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
    groups = _sweep_groups(df, x, by)
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
    xlabel = _LOAD_AXIS.get(mode, _sim_label(x)) if x == "level" else _sim_label(x)
    cols = 2 if throughput else 1
    titles = ([_sim_label(throughput)] if throughput else []) + ["latency (ms)"]
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
        color = _color(i)
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
            short = _sim_label(col).replace(" (ms)", "")
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
                mode="markers+text",
                text=[f"knee {k:.4g}"],
                textposition="top left",
                marker={"color": color, "size": 14, "symbol": "star"},
                hovertemplate=f"{name} knee<br>load %{{x:.4g}}, {ky} %{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=lat_col,
        )
    for c in range(1, cols + 1):
        fig.update_xaxes(title_text=xlabel, row=1, col=c)
        if log_x:
            fig.update_xaxes(type="log", row=1, col=c)
    if throughput:
        fig.update_yaxes(title_text=_sim_label(throughput), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="latency (ms)", row=1, col=lat_col)
    if log_y:
        fig.update_yaxes(type="log", row=1, col=lat_col)
    fig.update_layout(
        title=title
        or (
            f"Load sweep; knee = the last load before {_sim_label(ky).replace(' (ms)', '')} "
            f"exceeds {factor:g}× its lowest-load value"
            if method == "threshold"
            else "Load sweep; knee by the kneedle method"
        ),
        legend_title_text="policy",
    )
    return fig


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
    mp = _positive_whole(max_points, "max_points")
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
                    line={"shape": "hv", "color": _color(i)},
                    hovertemplate=f"{name}<br>%{{x:.4g}} s: %{{y:.4g}}{unit}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_yaxes(title_text="KV blocks used (%)", range=[0, 105], row=1, col=1)
    fig.update_yaxes(title_text="requests", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    fig.update_layout(title=title or "KV-cache use and queue over time", legend_title_text="run")
    return fig


# --------------------------------------------------------------------------------------------
# batch-size measurement: throughput and latency vs batch size, memory, measured vs roofline

__all__ += [
    "MEASUREMENT_LABELS",
    "batch_size_choice_table",
    "measured_vs_roofline_figure",
    "memory_vs_batch_figure",
    "memory_vs_batch_table",
    "throughput_latency_vs_batch_figure",
]

#: Axis labels (with units) of the columns of a measurement table (``batchlab.measure``).
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


def _mlabel(name: str) -> str:
    return MEASUREMENT_LABELS.get(name, name)


def _measurement_tables(tables: Any) -> list[tuple[str, pd.DataFrame]]:
    pairs = _named(tables, "measurement table", "measurement")
    for name, df in pairs:
        if not isinstance(df, pd.DataFrame):
            raise InputError(
                f"{name!r} is a {type(df).__name__}, not a measurement table", path=name
            )
    return pairs


def _measured_rows(df: pd.DataFrame, columns: Sequence[str], name: str) -> pd.DataFrame:
    """Rows that did not run out of memory, with finite ``batch_size`` and ``columns``, by size."""
    for col in ("batch_size", *columns):
        if col not in df.columns:
            raise InputError("missing column in the measurement table", path=name, field=col)
    keep = np.ones(len(df), dtype=bool)
    if "oom" in df.columns:
        keep &= ~df["oom"].fillna(False).to_numpy(dtype=bool)
    for col in ("batch_size", *columns):
        keep &= np.isfinite(pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64))
    return df.loc[keep].sort_values("batch_size", kind="stable")


def _per_table(option: Any, names: Sequence[str], field: str) -> dict[str, Any]:
    """``"auto"`` / None / one batch size for every table / a mapping name -> batch size."""
    if isinstance(option, str):
        if option != "auto":
            raise InputError(
                f"expected 'auto', None, a batch size or a mapping, got {option!r}", field=field
            )
        return dict.fromkeys(names, "auto")
    if option is None:
        return dict.fromkeys(names)
    if isinstance(option, Mapping):
        return {name: option.get(name) for name in names}
    if isinstance(option, int | np.integer) and not isinstance(option, bool):
        return dict.fromkeys(names, int(option))
    raise InputError(
        f"expected 'auto', None, a batch size or a mapping, got {option!r}", field=field
    )


def batch_size_choice_table(
    tables: Any,
    *,
    tolerance: float = 0.05,
    latency_column: str = "latency_ms_per_request",
    latency_limit_ms: float | None = None,
) -> pd.DataFrame:
    """The two batch-size choices of each measurement (or roofline) table, one row per table.

    ``tables``: one table (``measure.measure_batch_sizes``, ``load_measurement`` or
    ``roofline_table``), a mapping name -> table, or a list. Columns: ``table``,
    ``saturation_batch_size`` (``measure.saturation_batch_size(df, tolerance)``: the smallest
    size within ``tolerance`` of the best output tokens/s) and its ``tokens_per_s_at_saturation``,
    ``best_batch_size`` / ``best_tokens_per_s`` (the fastest row), ``latency_limit_ms`` and
    ``latency_choice`` (``measure.max_batch_under_latency``: the largest size whose
    ``latency_column`` is at most the limit, in ms; <NA> without a limit or when none meets it)
    with ``latency_at_choice_ms`` and ``tokens_per_s_at_choice``. Out-of-memory rows are left out.
    """
    from batchlab import measure

    rows = []
    for name, df in _measurement_tables(tables):
        ok = _measured_rows(df, ["output_tokens_per_s", latency_column], name)
        if ok.empty:
            raise InputError("no successful rows", path=name, field="output_tokens_per_s")
        sizes = ok["batch_size"].to_numpy(dtype=np.int64)
        tps = ok["output_tokens_per_s"].to_numpy(dtype=np.float64)
        lat = ok[latency_column].to_numpy(dtype=np.float64)
        sat = measure.saturation_batch_size(ok, tolerance)
        best = int(np.argmax(tps))
        choice = None
        if latency_limit_ms is not None:
            choice = measure.max_batch_under_latency(ok, latency_limit_ms, column=latency_column)
        at = np.flatnonzero(sizes == choice) if choice is not None else np.array([], np.int64)
        rows.append(
            {
                "table": name,
                "saturation_batch_size": sat,
                "tokens_per_s_at_saturation": float(tps[sizes == sat][0]),
                "best_batch_size": int(sizes[best]),
                "best_tokens_per_s": float(tps[best]),
                "latency_limit_ms": np.nan if latency_limit_ms is None else float(latency_limit_ms),
                "latency_choice": choice,
                "latency_at_choice_ms": float(lat[at[0]]) if at.size else np.nan,
                "tokens_per_s_at_choice": float(tps[at[0]]) if at.size else np.nan,
            }
        )
    out = pd.DataFrame(rows)
    out["latency_choice"] = pd.array(out["latency_choice"].tolist(), dtype="Int64")
    return out


def _log2_ticks(sizes: np.ndarray) -> dict[str, Any]:
    vals = np.unique(sizes.astype(np.int64))
    return {"type": "log", "tickvals": vals.tolist(), "ticktext": [str(v) for v in vals]}


def _marked_size(
    option: Any, auto: int | None, sizes: np.ndarray, name: str, field: str
) -> int | None:
    if option is None:
        return None
    size = auto if isinstance(option, str) else int(option)
    if size is None:
        return None
    if size not in set(sizes.tolist()):
        raise InputError(
            f"batch size {size} is not a measured (successful) size of this table "
            f"({', '.join(map(str, sizes.tolist()))})",
            path=name,
            field=field,
        )
    return size


def _add_batch_marker(
    fig: go.Figure,
    batch_size: int,
    y: float,
    name: str,
    group: str,
    label: str,
    color: str,
    symbol: str,
    unit: str,
    col: int,
) -> None:
    """A labelled marker on one batch size of a measured curve (row 1, column ``col``)."""
    fig.add_trace(
        go.Scatter(
            x=[float(batch_size)],
            y=[y],
            name=name,
            legendgroup=group,
            mode="markers+text",
            text=[label],
            textposition="top left",
            marker={"color": color, "size": 15 if symbol == "star" else 13, "symbol": symbol},
            hovertemplate=f"{name}<br>batch %{{x:.0f}}: %{{y:,.4g}} {unit}<extra></extra>",
        ),
        row=1,
        col=col,
    )


def throughput_latency_vs_batch_figure(
    tables: Any,
    *,
    saturation: Any = "auto",
    latency_choice: Any = "auto",
    tolerance: float = 0.05,
    latency_column: str = "latency_ms_per_request",
    latency_limit_ms: float | None = None,
    log_y: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Throughput (left) and latency (right) against batch size, the two choices marked.

    ``tables``: one measurement or roofline table, a mapping name -> table, or a list; one
    color per table, out-of-memory rows left out, batch sizes on a log₂ axis. Left: output
    tokens/s (trace ``<name> throughput``); right: ``latency_column`` in ms (``<name>
    latency``; log axis unless ``log_y`` is False). The hover shows the interquartile spread
    of the repeats when the table has ``<column>_spread``.

    ``saturation``: the knee, a star on the throughput curve (trace ``<name> saturation``):
    ``"auto"`` (:func:`batch_size_choice_table`'s saturation size with ``tolerance``), a batch
    size, a mapping name -> size, or None. ``latency_choice``: a diamond on the latency curve
    (trace ``<name> latency choice``): ``"auto"`` (the largest size with ``latency_column <=
    latency_limit_ms``; none without a limit), a size, a mapping, or None. The limit is drawn
    as a dotted horizontal line (trace ``latency limit``). A marked size must be one of the
    table's successful sizes.
    """
    pairs = _measurement_tables(tables)
    names = [n for n, _ in pairs]
    sat_opt = _per_table(saturation, names, "saturation")
    lat_opt = _per_table(latency_choice, names, "latency_choice")
    choices = batch_size_choice_table(
        tables,
        tolerance=tolerance,
        latency_column=latency_column,
        latency_limit_ms=latency_limit_ms,
    )
    lat_label = _mlabel(latency_column)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[_mlabel("output_tokens_per_s"), lat_label],
        horizontal_spacing=0.12,
    )
    all_sizes = []
    for i, (name, df) in enumerate(pairs):
        ok = _measured_rows(df, ["output_tokens_per_s", latency_column], name)
        sizes = ok["batch_size"].to_numpy(dtype=np.int64)
        all_sizes.append(sizes)
        xs = sizes.astype(np.float64)
        color = _color(i)
        row = choices.iloc[i]
        for col, ycol, unit in (
            (1, "output_tokens_per_s", " tokens/s"),
            (2, latency_column, " ms"),
        ):
            ys = ok[ycol].to_numpy(dtype=np.float64)
            spread_col = f"{ycol}_spread"
            if spread_col in ok.columns:
                spread = ok[spread_col].to_numpy(dtype=np.float64)
                hover = (
                    f"{name}<br>batch %{{x:.0f}}: %{{y:,.4g}}{unit} "
                    f"(IQR %{{customdata:,.3g}})<extra></extra>"
                )
            else:
                spread = None
                hover = f"{name}<br>batch %{{x:.0f}}: %{{y:,.4g}}{unit}<extra></extra>"
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    customdata=spread,
                    name=f"{name} {'throughput' if col == 1 else 'latency'}",
                    legendgroup=name,
                    mode="lines+markers",
                    line={"color": color, "dash": "solid" if col == 1 else "dash"},
                    hovertemplate=hover,
                ),
                row=1,
                col=col,
            )
        auto_sat = int(row["saturation_batch_size"])
        sat = _marked_size(sat_opt[name], auto_sat, sizes, name, "saturation")
        if sat is not None:
            y = float(ok["output_tokens_per_s"].to_numpy(dtype=np.float64)[sizes == sat][0])
            _add_batch_marker(
                fig, sat, y, f"{name} saturation", name, f"knee {sat}", color, "star", "tokens/s", 1
            )
        auto_lat = row["latency_choice"]
        auto_lat = None if pd.isna(auto_lat) else int(auto_lat)
        chosen = _marked_size(lat_opt[name], auto_lat, sizes, name, "latency_choice")
        if chosen is not None:
            y = float(ok[latency_column].to_numpy(dtype=np.float64)[sizes == chosen][0])
            _add_batch_marker(
                fig,
                chosen,
                y,
                f"{name} latency choice",
                name,
                f"batch {chosen}",
                color,
                "diamond",
                "ms",
                2,
            )
    sizes_all = np.concatenate(all_sizes)
    if latency_limit_ms is not None and sizes_all.size:
        lo, hi = float(sizes_all.min()), float(sizes_all.max())
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[float(latency_limit_ms)] * 2,
                name="latency limit",
                mode="lines",
                line={"color": "#555555", "dash": "dot", "width": 1.5},
                hovertemplate=f"limit {float(latency_limit_ms):,.4g} ms<extra></extra>",
            ),
            row=1,
            col=2,
        )
    ticks = _log2_ticks(sizes_all) if sizes_all.size else {"type": "log"}
    for c in (1, 2):
        fig.update_xaxes(title_text=_mlabel("batch_size"), row=1, col=c, **ticks)
    fig.update_yaxes(title_text=_mlabel("output_tokens_per_s"), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text=lat_label, row=1, col=2, **({"type": "log"} if log_y else {}))
    fig.update_layout(
        title=title
        or (
            f"Throughput and latency vs batch size; knee = smallest batch within "
            f"{tolerance:.0%} of the best throughput"
        ),
        legend_title_text="table",
    )
    return fig


def _kv_mb_per_sequence(kv_prediction: Any, df: pd.DataFrame) -> float | None:
    """MB of KV cache per sequence: a number as is, or from a model's KV bytes per token times
    the positions the measured cache holds, ``prompt_len + gen_len - 1``."""
    if kv_prediction is None:
        return None
    if isinstance(kv_prediction, int | float | np.integer | np.floating) and not isinstance(
        kv_prediction, bool
    ):
        value = float(kv_prediction)
        if not (np.isfinite(value) and value >= 0):
            raise InputError(
                f"must be a number of MB >= 0, got {kv_prediction!r}", field="kv_prediction"
            )
        return value
    from batchlab import measure

    spec = measure.model_spec_of(kv_prediction)
    lengths = []
    for col in ("prompt_len", "gen_len"):
        if col not in df.columns:
            raise InputError("the table has no such column; pass kv_prediction in MB", field=col)
        values = pd.unique(df[col])
        if len(values) != 1:
            raise InputError(
                "the table has several lengths; pass kv_prediction in MB per sequence", field=col
            )
        lengths.append(int(values[0]))
    return spec.kv_bytes_per_token * (lengths[0] + lengths[1] - 1) / measure.MB


def memory_vs_batch_table(df: pd.DataFrame, *, kv_prediction: Any = None) -> pd.DataFrame:
    """The numbers of :func:`memory_vs_batch_figure`, one row per successful batch size.

    ``batch_size``, ``peak_memory_mb`` and ``kv_cache_mb`` (measured, MB = 10⁶ bytes),
    ``other_mb = peak − KV cache`` (activations, logits, allocator slack), and with
    ``kv_prediction`` (MB per sequence, or a model: ModelSpec, preset name or transformers
    model, whose ``kv_bytes_per_token × (prompt_len + gen_len − 1)`` gives it)
    ``predicted_kv_cache_mb = batch_size × per-sequence MB``.
    """
    ok = _measured_rows(df, ["peak_memory_mb", "kv_cache_mb"], "measurement")
    out = pd.DataFrame(
        {
            "batch_size": ok["batch_size"].to_numpy(dtype=np.int64),
            "peak_memory_mb": ok["peak_memory_mb"].to_numpy(dtype=np.float64),
            "kv_cache_mb": ok["kv_cache_mb"].to_numpy(dtype=np.float64),
        }
    )
    out["other_mb"] = out["peak_memory_mb"] - out["kv_cache_mb"]
    per_seq = _kv_mb_per_sequence(kv_prediction, df)
    if per_seq is not None:
        out["predicted_kv_cache_mb"] = out["batch_size"] * per_seq
    return out


def memory_vs_batch_figure(
    df: pd.DataFrame, *, kv_prediction: Any = None, fit: bool = True, title: str | None = None
) -> go.Figure:
    """Peak memory and KV cache against batch size (linear axes), with the KV-cache prediction.

    Traces: ``peak memory (measured)``, ``KV cache (measured)``, with ``kv_prediction`` (see
    :func:`memory_vs_batch_table`) ``KV cache (predicted)`` (a line through the origin), and
    with ``fit`` the least-squares line of peak memory, ``fit: <slope> MB per sequence`` (the
    slope is ``measure.memory_per_sequence_mb``; needs two or more batch sizes).
    """
    from batchlab import measure

    table = memory_vs_batch_table(df, kv_prediction=kv_prediction)
    xs = table["batch_size"].to_numpy(dtype=np.float64)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=table["peak_memory_mb"],
            name="peak memory (measured)",
            mode="lines+markers",
            line={"color": _color(0)},
            hovertemplate="batch %{x:.0f}: peak %{y:,.4g} MB<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=table["kv_cache_mb"],
            name="KV cache (measured)",
            mode="markers",
            marker={"color": _color(1), "size": 10},
            hovertemplate="batch %{x:.0f}: KV cache %{y:,.4g} MB<extra></extra>",
        )
    )
    if "predicted_kv_cache_mb" in table.columns and xs.size:
        per_seq = float(table["predicted_kv_cache_mb"].iloc[0] / xs[0])
        px = np.array([0.0, float(xs.max())])
        fig.add_trace(
            go.Scatter(
                x=px,
                y=px * per_seq,
                name="KV cache (predicted)",
                mode="lines",
                line={"color": _color(1), "dash": "dash"},
                hovertemplate=f"{per_seq:,.4g} MB per sequence<extra></extra>",
            )
        )
    if fit and np.unique(xs).size >= 2:
        slope = measure.memory_per_sequence_mb(df, "peak_memory_mb")
        y = table["peak_memory_mb"].to_numpy(dtype=np.float64)
        intercept = float(y.mean() - slope * xs.mean())
        fx = np.array([float(xs.min()), float(xs.max())])
        fig.add_trace(
            go.Scatter(
                x=fx,
                y=intercept + slope * fx,
                name=f"fit: {slope:,.3g} MB per sequence",
                mode="lines",
                line={"color": _color(0), "dash": "dot"},
                hovertemplate=f"{intercept:,.4g} MB + {slope:,.4g} MB × batch<extra></extra>",
            )
        )
    fig.update_xaxes(title_text=_mlabel("batch_size"), rangemode="tozero")
    fig.update_yaxes(title_text="memory (MB)", rangemode="tozero")
    fig.update_layout(title=title or "Memory vs batch size: what each extra sequence costs")
    return fig


_ROOFLINE_QUANTITIES = ("prefill_ms", "decode_ms_per_step", "output_tokens_per_s")


def measured_vs_roofline_figure(
    table: pd.DataFrame,
    *,
    quantities: Sequence[str] = _ROOFLINE_QUANTITIES,
    title: str | None = None,
) -> go.Figure:
    """Measured figures beside the roofline prediction, from ``measure.compare_with_roofline``.

    One column per quantity (``measured_<q>``, ``predicted_<q>`` and ``ratio_<q>`` columns of
    the table). Top row: measured (solid, trace ``measured``) and predicted (dashed, trace
    ``roofline``) against batch size, log axes; bottom row: the ratio measured / predicted
    (trace ``measured / roofline``) with a dotted line at 1. Each trace's ``meta`` is its
    quantity. For times a ratio above 1 is the share the
    hardware's peak figures do not explain (overheads, kernels below peak); for throughput the
    ratio is below 1.
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a comparison DataFrame, got {type(table).__name__}")
    quantities = list(quantities)
    if not quantities:
        raise InputError("name at least one quantity", field="quantities")
    for q in quantities:
        for col in (f"measured_{q}", f"predicted_{q}", f"ratio_{q}"):
            if col not in table.columns:
                raise InputError("missing column (use measure.compare_with_roofline)", field=col)
    if "batch_size" not in table.columns:
        raise InputError("missing column", field="batch_size")
    t = table.sort_values("batch_size", kind="stable")
    xs = t["batch_size"].to_numpy(dtype=np.float64)
    fig = make_subplots(
        rows=2,
        cols=len(quantities),
        shared_xaxes=True,
        vertical_spacing=0.1,
        horizontal_spacing=0.08,
        row_heights=[0.65, 0.35],
        subplot_titles=[_mlabel(q) for q in quantities] + [""] * len(quantities),
    )
    for j, q in enumerate(quantities, start=1):
        label = _mlabel(q)
        for kind, col, dash in (
            ("measured", "measured", "solid"),
            ("roofline", "predicted", "dash"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=t[f"{col}_{q}"].to_numpy(dtype=np.float64),
                    name=kind,
                    meta=q,
                    legendgroup=kind,
                    showlegend=j == 1,
                    mode="lines+markers",
                    line={"color": _color(0 if kind == "measured" else 1), "dash": dash},
                    hovertemplate=f"{kind} {label}<br>batch %{{x:.0f}}: %{{y:,.4g}}<extra></extra>",
                ),
                row=1,
                col=j,
            )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=t[f"ratio_{q}"].to_numpy(dtype=np.float64),
                name="measured / roofline",
                meta=q,
                legendgroup="ratio",
                showlegend=j == 1,
                mode="lines+markers",
                line={"color": _color(3)},
                hovertemplate=f"measured / roofline, {label}<br>batch %{{x:.0f}}: "
                "%{y:,.3g}<extra></extra>",
            ),
            row=2,
            col=j,
        )
        if xs.size:
            fig.add_trace(
                go.Scatter(
                    x=[float(xs.min()), float(xs.max())],
                    y=[1.0, 1.0],
                    name="ratio 1",
                    showlegend=False,
                    mode="lines",
                    line={"color": "#555555", "dash": "dot", "width": 1},
                    hoverinfo="skip",
                ),
                row=2,
                col=j,
            )
        ticks = _log2_ticks(xs) if xs.size else {"type": "log"}
        fig.update_xaxes(row=1, col=j, **ticks)
        fig.update_xaxes(title_text=_mlabel("batch_size"), row=2, col=j, **ticks)
        fig.update_yaxes(type="log", row=1, col=j)
        fig.update_yaxes(
            type="log", title_text="measured / roofline" if j == 1 else None, row=2, col=j
        )
    fig.update_layout(title=title or "Measured vs roofline prediction")
    return fig


# =============================================================================================
# planning figures (issue 15; to move into plots/planning.py)
# =============================================================================================


def planner_vs_sweep_figure(
    table: pd.DataFrame,
    planner_cost: float,
    planner_sequential_ms: float,
    lower_bound: float,
    *,
    max_sequential_ms: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Every sweep point (total cost, sequential time; green where it meets every limit, grey
    where not) next to the planner's plan (a star) and the certified lower bound on the cost of
    every plan meeting the limits (a dashed vertical line). ``table``: a ``grid_sweep`` table
    with ``total_cost``, ``sequential_ms`` and, if limits were given, ``ok_all``."""
    for column in ("total_cost", "sequential_ms"):
        if column not in table.columns:
            raise InputError("missing column", field=column)
    ok = table["ok_all"].to_numpy(dtype=bool) if "ok_all" in table.columns else None
    fig = go.Figure()
    groups = [("sweep point", np.ones(len(table), dtype=bool), "#1f77b4")]
    if ok is not None:
        groups = [
            ("sweep point, meets the limits", ok, "#2ca02c"),
            ("sweep point, breaks a limit", ~ok, "#bbbbbb"),
        ]
    for name, mask, color in groups:
        sub = table[mask]
        fig.add_trace(
            go.Scatter(
                x=sub["total_cost"],
                y=sub["sequential_ms"],
                mode="markers",
                name=name,
                marker={"color": color, "size": 6},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[planner_cost],
            y=[planner_sequential_ms],
            mode="markers",
            name="planner",
            marker={"symbol": "star", "size": 16, "color": "#d62728"},
        )
    )
    fig.add_vline(
        x=lower_bound,
        line={"dash": "dash", "color": "#444444"},
        annotation_text="certified lower bound",
        annotation_position="top left",
    )
    if max_sequential_ms is not None:
        fig.add_hline(
            y=max_sequential_ms,
            line={"dash": "dot", "color": "#d62728"},
            annotation_text="sequential-time limit",
        )
    fig.update_xaxes(type="log", title_text="total cost (cost units, log)")
    fig.update_yaxes(type="log", title_text="sequential time (ms, log)")
    fig.update_layout(
        title=title or "Planner vs every sweep point vs the bound", width=1000, height=450
    )
    return fig
