"""Planning figures: padding against the number of shapes, shape buckets, the gen-bucket
trade-off, the cost decomposition, latency CDFs, Pareto fronts, planner vs baseline."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from numpy.typing import ArrayLike
from plotly.subplots import make_subplots

from batchlab.cost import CostBreakdown, CostModel
from batchlab.errors import InputError
from batchlab.evaluate import (
    Evaluation,
    gen_bucket_tradeoff_table,
    padding_by_shape_table,
)
from batchlab.plots.style import (
    COST_PARTS,
    PART_COLORS,
    axis_label,
    cdf_trace,
    fit_to_output,
    length_histogram,
    level_line,
    log_bin_edges,
    metric_panels,
    named_items,
    percentile_markers,
    rgba,
    series_color,
    step_xy,
)
from batchlab.shapes import (
    DEFAULT_GRANULARITY,
    GRID_FAMILIES,
    min_padding_tokens,
    padding_vs_k_table,
)
from batchlab.sweep import pareto_front
from batchlab.workload import validate_requests

__all__ = [
    "BOUND_FIELDS",
    "LIMIT_FIELDS",
    "cost_latency_parts_figure",
    "cost_parts_figure",
    "cost_parts_table",
    "cost_parts_vs_parameter_figure",
    "gen_bucket_tradeoff_figure",
    "gen_bucket_tradeoff_table",
    "latency_cdf_figure",
    "padding_by_shape_table",
    "padding_vs_k_figure",
    "padding_vs_k_table",
    "pareto_front_figure",
    "planner_comparison_figure",
    "planner_vs_sweep_figure",
    "shape_buckets_figure",
]


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
                line={"color": series_color(i), "width": 3 if optimal else 1.5},
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
        level_line(
            int(k_all.min()),
            int(k_all.max()),
            floor,
            name="alignment padding (lower bound)",
            color="black",
            dash="dash",
            hovertemplate="unavoidable alignment padding: %{y:,} tokens<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or f"Prompt padding vs number of shapes (granularity {granularity} tokens)",
        xaxis_title="k (number of shapes)",
        yaxis_title="prompt padding (tokens)",
        legend_title_text="shape grid",
    )
    return fit_to_output(fig)


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
    x, y = step_xy(edges, counts.astype(np.float64))
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
            line={"shape": "hv", "color": series_color(0)},
            fill="tozeroy",
            fillcolor=rgba(series_color(0), 0.2),
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
    fig.update_layout(barmode="stack", title=title or "Shape buckets")
    return fit_to_output(fig)


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
        ("total padding", table["prompt_padding"] + table["gen_padding"], series_color(0)),
        ("gen padding", table["gen_padding"], series_color(1)),
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
    return fit_to_output(fig)


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
    for name, item in named_items(items, "evaluation", "plan"):
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
    return fit_to_output(fig)


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
    fig.update_layout(barmode="stack", title=title or "Cost and latency by part")
    return fit_to_output(fig)


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
        xaxis_title=axis_label(parameter),
        yaxis_title=f"cost ({unit})",
        legend_title_text="part",
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fit_to_output(fig)


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
    for i, (name, item) in enumerate(named_items(items, "evaluation", "plan")):
        lat = _latencies(item)
        fig.add_trace(cdf_trace(name, lat, i, max_points))
        fig.add_trace(percentile_markers(name, lat, i, percents))
    fig.update_layout(
        title=title or "Per-request latency CDF",
        xaxis_title="request latency (ms)",
        yaxis_title="requests at or below (%)",
        legend_title_text="plan",
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fit_to_output(fig)


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
        xaxis_title=axis_label(x),
        yaxis_title=axis_label(y),
    )
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fit_to_output(fig)


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
    named = named_items(results, "evaluation", "plan")
    summaries = [(name, _summary(item)) for name, item in named]
    metrics = list(metrics)
    fig = metric_panels(metrics, horizontal_spacing=0.06)
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
            colors.append(series_color(i))
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=metric,
                marker_color=colors,
                showlegend=False,
                hovertemplate=f"%{{x}}<br>{axis_label(metric)}: %{{y:.4g}}<extra></extra>",
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
    return fit_to_output(fig)


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
    fig.update_layout(title=title or "Planner vs every sweep point vs the bound")
    return fit_to_output(fig)
