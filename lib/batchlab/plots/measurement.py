"""Measurement figures (``batchlab.measure``): throughput and latency against batch size with
the two choices marked, memory against batch size, measured against the roofline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchlab.errors import InputError
from batchlab.measure import (
    batch_size_choice_table,
    memory_per_sequence_mb,
    memory_vs_batch_table,
    named_tables,
    valid_rows,
)
from batchlab.plots.style import (
    MEASUREMENT_LABELS,
    axis_label,
    fit_to_output,
    level_line,
    log2_ticks,
    point_label,
    series_color,
)

__all__ = [
    "MEASUREMENT_LABELS",
    "batch_size_choice_table",
    "measured_vs_roofline_figure",
    "memory_vs_batch_figure",
    "memory_vs_batch_table",
    "throughput_latency_vs_batch_figure",
]


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
    i: int,
) -> None:
    """A marker on one batch size of a measured curve (row 1, column ``col``), labelled with
    :func:`~batchlab.plots.style.point_label` (series ``i``: labels of several tables stack)."""
    fig.add_trace(
        go.Scatter(
            x=[float(batch_size)],
            y=[y],
            name=name,
            legendgroup=group,
            mode="markers",
            marker={"color": color, "size": 15 if symbol == "star" else 13, "symbol": symbol},
            hovertemplate=f"{name}<br>batch %{{x:.0f}}: %{{y:,.4g}} {unit}<extra></extra>",
        ),
        row=1,
        col=col,
    )
    point_label(fig, batch_size, label, i, color, row=1, col=col, log_x=True)


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
    pairs = named_tables(tables)
    names = [n for n, _ in pairs]
    sat_opt = _per_table(saturation, names, "saturation")
    lat_opt = _per_table(latency_choice, names, "latency_choice")
    choices = batch_size_choice_table(
        tables,
        tolerance=tolerance,
        latency_column=latency_column,
        latency_limit_ms=latency_limit_ms,
    )
    lat_label = axis_label(latency_column)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[axis_label("output_tokens_per_s"), lat_label],
        horizontal_spacing=0.12,
    )
    all_sizes = []
    for i, (name, df) in enumerate(pairs):
        ok = valid_rows(df, ["output_tokens_per_s", latency_column])
        sizes = ok["batch_size"].to_numpy(dtype=np.int64)
        all_sizes.append(sizes)
        xs = sizes.astype(np.float64)
        color = series_color(i)
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
                fig,
                sat,
                y,
                f"{name} saturation",
                name,
                f"knee {sat}",
                color,
                "star",
                "tokens/s",
                1,
                i,
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
                i,
            )
    sizes_all = np.concatenate(all_sizes)
    if latency_limit_ms is not None and sizes_all.size:
        lo, hi = float(sizes_all.min()), float(sizes_all.max())
        fig.add_trace(
            level_line(
                lo,
                hi,
                float(latency_limit_ms),
                name="latency limit",
                color="#555555",
                width=1.5,
                hovertemplate=f"limit {float(latency_limit_ms):,.4g} ms<extra></extra>",
            ),
            row=1,
            col=2,
        )
    ticks = log2_ticks(sizes_all) if sizes_all.size else {"type": "log"}
    for c in (1, 2):
        fig.update_xaxes(title_text=axis_label("batch_size"), row=1, col=c, **ticks)
    fig.update_yaxes(title_text=axis_label("output_tokens_per_s"), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text=lat_label, row=1, col=2, **({"type": "log"} if log_y else {}))
    fig.update_layout(
        title=title
        or (
            f"Throughput and latency vs batch size; knee = smallest batch within "
            f"{tolerance:.0%} of the best throughput"
        ),
        legend_title_text="table",
    )
    return fit_to_output(fig)


def memory_vs_batch_figure(
    df: pd.DataFrame, *, kv_prediction: Any = None, fit: bool = True, title: str | None = None
) -> go.Figure:
    """Peak memory and KV cache against batch size (linear axes), with the KV-cache prediction.

    Traces: ``peak memory (measured)``, ``KV cache (measured)``, with ``kv_prediction`` (see
    :func:`memory_vs_batch_table`) ``KV cache (predicted)`` (a line through the origin), and
    with ``fit`` the least-squares line of peak memory, ``fit: <slope> MB per sequence`` (the
    slope is ``measure.memory_per_sequence_mb``; needs two or more batch sizes).
    """
    table = memory_vs_batch_table(df, kv_prediction=kv_prediction)
    xs = table["batch_size"].to_numpy(dtype=np.float64)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=table["peak_memory_mb"],
            name="peak memory (measured)",
            mode="lines+markers",
            line={"color": series_color(0)},
            hovertemplate="batch %{x:.0f}: peak %{y:,.4g} MB<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=table["kv_cache_mb"],
            name="KV cache (measured)",
            mode="markers",
            marker={"color": series_color(1), "size": 10},
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
                line={"color": series_color(1), "dash": "dash"},
                hovertemplate=f"{per_seq:,.4g} MB per sequence<extra></extra>",
            )
        )
    if fit and np.unique(xs).size >= 2:
        slope = memory_per_sequence_mb(df, "peak_memory_mb")
        y = table["peak_memory_mb"].to_numpy(dtype=np.float64)
        intercept = float(y.mean() - slope * xs.mean())
        fx = np.array([float(xs.min()), float(xs.max())])
        fig.add_trace(
            go.Scatter(
                x=fx,
                y=intercept + slope * fx,
                name=f"fit: {slope:,.3g} MB per sequence",
                mode="lines",
                line={"color": series_color(0), "dash": "dot"},
                hovertemplate=f"{intercept:,.4g} MB + {slope:,.4g} MB × batch<extra></extra>",
            )
        )
    fig.update_xaxes(title_text=axis_label("batch_size"), rangemode="tozero")
    fig.update_yaxes(title_text="memory (MB)", rangemode="tozero")
    fig.update_layout(title=title or "Memory vs batch size: what each extra sequence costs")
    return fit_to_output(fig)


_ROOFLINE_QUANTITIES = ("prefill_ms", "decode_ms_per_step", "output_tokens_per_s")
#: Short panel titles (the axes carry the full labels): three panels share the width.
_PANEL_TITLES = {
    "decode_ms_per_step": "decode step (ms)",
    "output_tokens_per_s": "output (tokens/s)",
    "latency_ms_per_request": "latency (ms)",
    "peak_memory_mb": "peak memory (MB)",
}


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
        subplot_titles=[_PANEL_TITLES.get(q, axis_label(q)) for q in quantities]
        + [""] * len(quantities),
    )
    for j, q in enumerate(quantities, start=1):
        label = axis_label(q)
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
                    line={"color": series_color(0 if kind == "measured" else 1), "dash": dash},
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
                line={"color": series_color(3)},
                hovertemplate=f"measured / roofline, {label}<br>batch %{{x:.0f}}: "
                "%{y:,.3g}<extra></extra>",
            ),
            row=2,
            col=j,
        )
        if xs.size:
            fig.add_trace(
                level_line(
                    float(xs.min()),
                    float(xs.max()),
                    1.0,
                    name="ratio 1",
                    color="#555555",
                    showlegend=False,
                ),
                row=2,
                col=j,
            )
        ticks = log2_ticks(xs) if xs.size else {"type": "log"}
        fig.update_xaxes(row=1, col=j, **ticks)
        fig.update_xaxes(title_text=axis_label("batch_size"), row=2, col=j, **ticks)
        fig.update_yaxes(type="log", row=1, col=j)
        fig.update_yaxes(
            type="log", title_text="measured / roofline" if j == 1 else None, row=2, col=j
        )
    fig.update_layout(title=title or "Measured vs roofline prediction")
    return fit_to_output(fig, rows=2)
