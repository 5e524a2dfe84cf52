"""Capacity figures (``batchlab.capacity``): the cost–latency Pareto front of a capacity plan,
and the fewest GPUs per type meeting an SLO read from a replica table (the SLO slider's view)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchlab.capacity import CONFIG_FIELDS, CapacityPlan, fewest_in_table
from batchlab.errors import InputError
from batchlab.plots.style import fit_to_output, level_line, series_color
from batchlab.slo import SLO

__all__ = ["CAPACITY_LABELS", "capacity_pareto_figure", "fewest_gpus_figure"]

#: Axis labels (with units) of the capacity tables' columns.
CAPACITY_LABELS: dict[str, str] = {
    "replicas": "replicas",
    "gpus": "GPUs",
    "goodput_share": "goodput (share of requests meeting every limit)",
    "goodput_rps": "goodput (requests/s)",
    **{
        f"{m}_p{p}_ms": f"p{p} {name} (ms)"
        for m, name in (
            ("ttft", "time to first token"),
            ("tpot", "time per output token"),
            ("e2e", "end-to-end latency"),
        )
        for p in (50, 90, 99)
    },
}
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross")
_GREYS = ("#4D4D4D", "#9E9E9E", "#C8C8C8", "#2B2B2B")  # bars by traffic level; GPUs have colors


def _config_text(df: pd.DataFrame) -> list[str]:
    """One hover line per row: the configuration and its replicas."""
    out = []
    for row in df.itertuples():
        tokens = row.max_num_batched_tokens
        tokens = "default" if pd.isna(tokens) else int(tokens)
        out.append(
            f"{row.gpu} × {int(row.replicas)}, {row.model}<br>max_num_seqs {row.max_num_seqs}, "
            f"max_num_batched_tokens {tokens}, chunked prefill "
            f"{'on' if row.chunked_prefill else 'off'}, {row.router}"
        )
    return out


def capacity_pareto_figure(plan: CapacityPlan, *, title: str | None = None) -> go.Figure:
    """Cost per hour against the plan's latency (``plan.latency``, ms) of every configuration
    that meets the SLO, one panel per traffic level (each trace's ``meta`` is its level): the
    configurations as points (one color and symbol per GPU type, traces named by GPU), the
    Pareto front joined (``Pareto front``) and the cheapest marked with a star (``cheapest``).
    Without prices the x axis is GPUs."""
    if not isinstance(plan, CapacityPlan):
        raise InputError(f"expected a CapacityPlan, got {type(plan).__name__}", field="plan")
    ok = plan.feasible
    if not len(ok):
        raise InputError("no configuration meets the SLO: nothing to draw", field="plan")
    priced = ok["cost_per_hour"].notna().any()
    x = "cost_per_hour" if priced else "gpus"
    xlabel = f"cost ({plan.currency}/hour)" if priced else "GPUs"
    y = plan.latency
    levels = list(dict.fromkeys(ok["traffic"]))
    rates = ok.groupby("traffic", sort=False)["offered_rps"].first()
    fig = make_subplots(
        rows=1,
        cols=len(levels),
        subplot_titles=[f"{t} ({rates[t]:.3g} requests/s)" for t in levels],
        horizontal_spacing=0.08,
    )
    gpus = list(dict.fromkeys(plan.table["gpu"]))
    front = plan.pareto
    cheapest = plan.cheapest.set_index("traffic")
    for c, level in enumerate(levels, start=1):
        part = ok[ok["traffic"] == level]
        for i, gpu in enumerate(gpus):
            pts = part[part["gpu"] == gpu]
            if not len(pts):
                continue
            fig.add_trace(
                go.Scatter(
                    x=pts[x].to_numpy(dtype=np.float64),
                    y=pts[y].to_numpy(dtype=np.float64),
                    name=gpu,
                    meta=level,
                    legendgroup=gpu,
                    showlegend=c == 1,
                    mode="markers",
                    marker={
                        "color": series_color(i),
                        "symbol": _SYMBOLS[i % len(_SYMBOLS)],
                        "size": 9,
                        "opacity": 0.75,
                    },
                    text=_config_text(pts),
                    hovertemplate=f"%{{text}}<br>{xlabel} %{{x:.4g}}, {y} %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=c,
            )
        pf = front[front["traffic"] == level].sort_values([x, y], kind="stable")
        fig.add_trace(
            go.Scatter(
                x=pf[x].to_numpy(dtype=np.float64),
                y=pf[y].to_numpy(dtype=np.float64),
                name="Pareto front",
                meta=level,
                legendgroup="front",
                showlegend=c == 1,
                mode="lines",
                line={"color": "#D62728", "shape": "hv", "width": 2},
                hoverinfo="skip",
            ),
            row=1,
            col=c,
        )
        best = cheapest.loc[[level]]
        fig.add_trace(
            go.Scatter(
                x=best[x].to_numpy(dtype=np.float64),
                y=best[y].to_numpy(dtype=np.float64),
                name="cheapest",
                meta=level,
                legendgroup="cheapest",
                showlegend=c == 1,
                mode="markers",
                marker={"color": "#D62728", "symbol": "star", "size": 16},
                text=_config_text(best.reset_index()),
                hovertemplate="cheapest: %{text}<extra></extra>",
            ),
            row=1,
            col=c,
        )
        fig.update_xaxes(title_text=xlabel, row=1, col=c)
        fig.update_yaxes(title_text=CAPACITY_LABELS.get(y, y), row=1, col=c)
    fig.update_layout(
        title=title or f"Cost against {CAPACITY_LABELS.get(y, y)}; SLO {plan.slo}",
        legend_title_text="GPU",
    )
    return fit_to_output(fig)


def fewest_gpus_figure(
    table: pd.DataFrame,
    slo: SLO,
    *,
    by: str = "gpu",
    metric: str = "ttft_p99_ms",
    title: str | None = None,
) -> go.Figure:
    """The fewest GPUs of each ``by`` group (GPU type) meeting ``slo`` at each traffic level,
    read from a :func:`batchlab.capacity.replica_table` (no simulation), beside the curves
    behind the answer.

    Left: bars of GPUs per group, a shade of grey per traffic level (traces ``<traffic>``, text
    "none" where no count of the table meets the SLO). Right: ``metric`` (ms) against replicas for every group and level (traces
    ``<group> <traffic>``; counts whose run stopped early, having missed the table's SLO, are
    gaps) and the SLO's limit on it as a dotted line (trace ``limit``).
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a replica table, got {type(table).__name__}")
    for col in (by, "traffic", "replicas", "gpus", metric):
        if col not in table.columns:
            raise InputError("missing column", field=col)
    keys = [k for k in (*CONFIG_FIELDS, "traffic") if k in table.columns]
    answer = fewest_in_table(table, slo, by=keys)
    groups = list(dict.fromkeys(table[by]))
    levels = list(dict.fromkeys(table["traffic"]))
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["fewest GPUs meeting the SLO", CAPACITY_LABELS.get(metric, metric)],
        horizontal_spacing=0.12,
    )
    top = float(np.nanmax(table["gpus"].to_numpy(dtype=np.float64)))
    for j, level in enumerate(levels):
        part = answer[answer["traffic"] == level]
        # the fewest of the group's configurations (several per GPU type: the best one)
        best = part.groupby(by, sort=False)["gpus"].min().reindex(groups)
        values = best.to_numpy(dtype=np.float64)
        fig.add_trace(
            go.Bar(
                x=[str(g) for g in groups],
                y=np.where(np.isnan(values), 0.0, values),
                name=f"{level}",
                legendgroup=f"{level}",
                marker={"color": _GREYS[j % len(_GREYS)]},
                text=["none" if np.isnan(v) else f"{int(v)}" for v in values],
                textposition="outside",
                hovertemplate=f"{level}: %{{x}}: %{{text}} GPUs<extra></extra>",
            ),
            row=1,
            col=1,
        )
    dashes = ("solid", "dash", "dot", "dashdot")
    for i, g in enumerate(groups):
        for j, level in enumerate(levels):
            part = table[(table[by] == g) & (table["traffic"] == level)]
            if not len(part):
                continue
            # one curve per group and level: the best (lowest) metric at each count
            curve = part.groupby("replicas")[metric].min().sort_index()
            fig.add_trace(
                go.Scatter(
                    x=curve.index.to_numpy(dtype=np.float64),
                    y=curve.to_numpy(dtype=np.float64),
                    name=f"{g} {level}",
                    legendgroup=str(g),
                    mode="lines+markers",
                    line={"color": series_color(i), "dash": dashes[j % len(dashes)]},
                    hovertemplate=f"{g} {level}<br>%{{x}} replicas: %{{y:.4g}} ms<extra></extra>",
                ),
                row=1,
                col=2,
            )
    limit = slo.limits().get(metric)
    if limit is not None:
        xs = table["replicas"].to_numpy(dtype=np.float64)
        fig.add_trace(
            level_line(
                float(np.nanmin(xs)),
                float(np.nanmax(xs)),
                limit,
                name="limit",
                color="#D62728",
                width=2,
                hovertemplate=f"limit {limit:g} ms<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text=by.replace("gpu", "GPU type"), row=1, col=1)
    fig.update_yaxes(title_text="GPUs", range=[0, top * 1.15 + 0.5], row=1, col=1)
    fig.update_xaxes(title_text="replicas", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text=CAPACITY_LABELS.get(metric, metric), type="log", row=1, col=2)
    fig.update_layout(
        title=title or f"Fewest GPUs for SLO {slo}",
        barmode="group",
    )
    return fit_to_output(fig)
