"""Every figure builder sizes its figure to JupyterLab's output area (issue 12, first hour 3).

Regression: three builders fixed ``width=1000`` (chapters 02, 03, 05, 06) and overflowed the
output area, clipping legends and subplot titles; knee labels of several series overlapped.
Now every ``*_figure`` of :mod:`batchlab.plots` autosizes (no width), has a sensible height,
a horizontal legend along the bottom (no width taken from the panels), subplot titles that
fit their panels at a narrow output area, and point labels of several series stacked apart.
The browser test (``tests/test_browser.py``) checks the same in a real JupyterLab.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from batchlab import evaluate, measure, plan, planner, plots, roofline, shapes, sim_vs_live, sweep
from batchlab.capacity import ServingConfig, capacity_search, replica_table
from batchlab.plots.style import FIGURE_HEIGHT_PX, LABEL_ROW_SHARE
from batchlab.simulate import load_sweep, simulate
from batchlab.slo import SLO
from batchlab.workload import lognormal_workload, with_arrivals

MEASUREMENT = Path(__file__).resolve().parents[1] / "data" / "measurements"
TINY_SERVER = Path(__file__).resolve().parents[1] / "data" / "tiny-server"
#: A narrow JupyterLab output area (a laptop with the file browser open), px.
NARROW_PX = 640
#: plotly's default font (Open Sans) averages under half its size per character.
CHAR_PX = 0.5 * 13


@pytest.fixture(scope="module")
def inputs():
    req = lognormal_workload(200, seed=4)
    timed = with_arrivals(req, rate_per_s=4.0, seed=1)
    k8 = shapes.optimal_shapes(req["prompt_len"], 8)
    ev8 = evaluate.evaluate(req, plan.bucketed_plan(req, k8, max_batch_size=16))
    ev2 = evaluate.evaluate(req, plan.baseline_plan(req, 2))
    grid = sweep.grid_sweep(
        lambda k: evaluate.evaluate(
            req, plan.bucketed_plan(req, shapes.optimal_shapes(req["prompt_len"], k))
        ),
        {"k": [1, 2, 4, 8]},
        progress=False,
    )
    sims = {
        name: simulate(timed, name, model="llama-2-7b", gpu="h100-sxm")
        for name in ("static", "dynamic", "continuous")
    }
    sweep_table = pd.concat(
        [
            load_sweep(timed.iloc[:80], name, rates=[1, 4, 16], model="llama-2-7b", seed=0)
            for name in ("static", "dynamic", "continuous")
        ],
        ignore_index=True,
    )
    m = measure.load_measurement(MEASUREMENT / "tiny-llama-cpu-p128-g32.csv")
    tiny = roofline.ModelSpec("tiny", 4, 256, 4, 2, 688, 4096, 4.0, 4.0)
    cmp = measure.compare_with_roofline(m, tiny, roofline.DeviceSpec("cpu", 1e11, 1e10, 1e9))
    result = planner.plan_requests({"w": req}, "static-graph", max_shapes=4)
    chat = timed.iloc[:60]
    slo = SLO(ttft_p99_ms=2000, tpot_p99_ms=60)
    configs = [ServingConfig("a100-80gb", "llama-3-8b"), ServingConfig("h100-sxm", "llama-3-8b")]
    replicas = replica_table(chat, slo, configs, range(1, 3), traffic=[1, 2], progress=False)
    sizing = capacity_search(
        chat,
        slo,
        {"gpu": ["a100-80gb", "h100-sxm"], "model": ["llama-3-8b"]},
        traffic=[1, 2],
        max_replicas=4,
        progress=False,
    )
    from batchlab.loadtest import load_loadtest

    live = sim_vs_live.compare_loadtest(
        load_loadtest(TINY_SERVER / "loadtest.csv"),
        measure.load_measurement(TINY_SERVER / "steps.csv"),
    )
    return dict(
        req=req, timed=timed, k8=k8, ev8=ev8, ev2=ev2, grid=grid, sims=sims,
        sweep=sweep_table, m=m, cmp=cmp, result=result, slo=slo, replicas=replicas,
        sizing=sizing, live=live,
    )  # fmt: skip


BUILDERS = {
    "padding_vs_k_figure": lambda d: plots.padding_vs_k_figure(d["req"]["prompt_len"], range(1, 9)),
    "shape_buckets_figure": lambda d: plots.shape_buckets_figure(d["req"], d["k8"], d["ev8"]),
    "gen_bucket_tradeoff_figure": lambda d: plots.gen_bucket_tradeoff_figure(
        d["req"], d["k8"], [None, 128, 32]
    ),
    "cost_parts_figure": lambda d: plots.cost_parts_figure({"k=8": d["ev8"], "k=2": d["ev2"]}),
    "cost_latency_parts_figure": lambda d: plots.cost_latency_parts_figure(
        {"k=8": d["ev8"], "k=2": d["ev2"]}
    ),
    "cost_parts_vs_parameter_figure": lambda d: plots.cost_parts_vs_parameter_figure(
        d["grid"], "k"
    ),
    "latency_cdf_figure": lambda d: plots.latency_cdf_figure({"k=8": d["ev8"], "k=2": d["ev2"]}),
    "pareto_front_figure": lambda d: plots.pareto_front_figure(d["grid"]),
    "planner_comparison_figure": lambda d: plots.planner_comparison_figure(
        {"planner": d["result"]["w"], "baseline": d["ev2"]}, d["result"]["w"].bounds
    ),
    "planner_vs_sweep_figure": lambda d: plots.planner_vs_sweep_figure(
        d["grid"],
        d["result"].total_cost,
        d["result"]["w"].evaluation.sequential_ms,
        d["result"].lower_bound,
    ),  # fmt: skip
    "batch_timeline_figure": lambda d: plots.batch_timeline_figure(d["sims"]["dynamic"], 0, 8000),
    "latency_cdf_by_policy_figure": lambda d: plots.latency_cdf_by_policy_figure(d["sims"]),
    "policy_dashboard_figure": lambda d: plots.policy_dashboard_figure(d["sims"]),
    "load_sweep_figure": lambda d: plots.load_sweep_figure(d["sweep"], knee=4.0),
    "kv_utilisation_figure": lambda d: plots.kv_utilisation_figure(d["sims"]),
    "live_vs_simulated_figure": lambda d: plots.live_vs_simulated_figure(d["live"], mode="closed"),
    "throughput_latency_vs_batch_figure": lambda d: plots.throughput_latency_vs_batch_figure(
        {"a": d["m"], "b": d["m"]}, latency_choice=2
    ),
    "memory_vs_batch_figure": lambda d: plots.memory_vs_batch_figure(d["m"]),
    "measured_vs_roofline_figure": lambda d: plots.measured_vs_roofline_figure(d["cmp"]),
    "length_distribution_figure": lambda d: plots.length_distribution_figure(d["req"]),
    "percentiles_table_figure": lambda d: plots.percentiles_table_figure(d["req"]),
    "arrival_rate_figure": lambda d: plots.arrival_rate_figure(d["timed"]),
    "capacity_pareto_figure": lambda d: plots.capacity_pareto_figure(d["sizing"]),
    "fewest_gpus_figure": lambda d: plots.fewest_gpus_figure(d["replicas"], d["slo"]),
}


def test_every_builder_is_covered():
    figures = sorted(name for name in plots.__all__ if name.endswith("_figure"))
    assert figures == sorted(BUILDERS), "add the new builder to BUILDERS"


def _subplot_width_share(fig: go.Figure, annotation) -> float:
    """The width (share of the plot area) of the panel a subplot title sits above."""
    best = 1.0
    for name in fig.layout:
        if name.startswith("xaxis"):
            lo, hi = fig.layout[name].domain or (0.0, 1.0)
            if lo - 1e-9 <= annotation.x <= hi + 1e-9:
                best = min(best, hi - lo)
    return best


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_figure_fits_the_output_area(inputs, name):
    fig = BUILDERS[name](inputs)
    layout = fig.layout
    assert layout.width is None and layout.autosize is True, (name, layout.width)
    assert FIGURE_HEIGHT_PX <= layout.height <= 1000, layout.height
    legend = layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.y == 0
    # a long title is broken into lines that fit a narrow output area (17 px font)
    assert all(
        len(line) * 0.5 * 17 <= NARROW_PX for line in (layout.title.text or "").split("<br>")
    )
    # the subplot titles fit above their panels at a narrow output area
    plot_px = NARROW_PX - layout.margin.l - layout.margin.r
    for a in layout.annotations:
        if a.showarrow is False and a.xref == "paper" and a.yref == "paper" and a.text:
            share = _subplot_width_share(fig, a)
            longest = max(len(line) for line in a.text.split("<br>"))
            assert longest * CHAR_PX <= share * plot_px + 40, (name, a.text)


def test_knee_labels_of_several_series_do_not_overlap(inputs):
    # the same knee for every policy: each label sits in its own row at the top of the
    # latency panel, starting at the knee (log10 of 4 on the log axis), so none overlaps
    fig = plots.load_sweep_figure(inputs["sweep"], knee=4.0)
    labels = [a for a in fig.layout.annotations if "knee" in (a.text or "")]
    assert [a.text for a in labels] == ["static knee 4", "dynamic knee 4", "continuous knee 4"]
    assert all(a.x == pytest.approx(np.log10(4.0)) and a.xref == "x2" for a in labels)
    assert all(a.yref == "y2 domain" and a.yanchor == "top" for a in labels)
    rows = [a.y for a in labels]
    assert rows == pytest.approx([1.0, 1.0 - LABEL_ROW_SHARE, 1.0 - 2 * LABEL_ROW_SHARE])
    # a row is taller than a line of the label font at the figure's height
    panel_px = fig.layout.height - fig.layout.margin.t - 120  # less the legend and axis titles
    assert LABEL_ROW_SHARE * panel_px >= 18
    # no knee point carries its label as text (which plotly would draw over the others)
    assert all(t.mode == "markers" for t in fig.data if t.name.endswith("knee point"))
    fig = plots.throughput_latency_vs_batch_figure({"a": inputs["m"], "b": inputs["m"]})
    knees = [a for a in fig.layout.annotations if (a.text or "").startswith("knee")]
    assert len(knees) == 2 and knees[0].y != knees[1].y
