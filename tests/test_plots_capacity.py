"""The capacity figures and the SLO explorer, headless: what they draw is the library's answer."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.capacity import (
    PriceTable,
    ServingConfig,
    capacity_search,
    fewest_in_table,
    replica_table,
)
from batchlab.errors import InputError
from batchlab.plots import capacity_pareto_figure, fewest_gpus_figure
from batchlab.slo import SLO
from batchlab.widgets import slo_explorer, slo_explorer_state

SLO_TEST = SLO(ttft_p99_ms=400, tpot_p99_ms=60)
PRICES = PriceTable({"a100-80gb": 1.3, "h100-sxm": 3.0})


@pytest.fixture(scope="module")
def trace(lognormal_requests):
    df = lognormal_requests(120, seed=8, prompt_median=500, gen_median=100)
    df["arrival_s"] = np.cumsum(np.random.default_rng(4).exponential(1 / 40.0, len(df)))
    return df


@pytest.fixture(scope="module")
def plan(trace):
    grid = {
        "gpu": ["a100-80gb", "h100-sxm"],
        "model": ["llama-3-8b"],
        "chunked_prefill": [False, True],
    }
    return capacity_search(
        trace, SLO_TEST, grid, traffic=[1, 2], prices=PRICES, max_replicas=16, progress=False
    )


@pytest.fixture(scope="module")
def table(trace):
    configs = [ServingConfig("a100-80gb", "llama-3-8b"), ServingConfig("h100-sxm", "llama-3-8b")]
    return replica_table(
        trace, SLO(ttft_p99_ms=2000, tpot_p99_ms=60), configs, range(1, 5), traffic=[1, 2],
        progress=False,
    )  # fmt: skip


def test_pareto_figure_draws_the_plan(plan):
    fig = capacity_pareto_figure(plan)

    def trace(name, level):
        return next(t for t in fig.data if t.name == name and t.meta == level)

    for level, axis in (("trace ×1", "x"), ("trace ×2", "x2")):
        front = plan.pareto[plan.pareto["traffic"] == level].sort_values(
            ["cost_per_hour", "ttft_p99_ms"]
        )
        line = trace("Pareto front", level)
        assert line.xaxis == axis
        np.testing.assert_allclose(line.x, front["cost_per_hour"])
        np.testing.assert_allclose(line.y, front["ttft_p99_ms"])
        star = trace("cheapest", level)
        best = plan.cheapest.set_index("traffic").loc[level]
        assert star.x[0] == best["cost_per_hour"] and star.y[0] == best["ttft_p99_ms"]
        for gpu in ("a100-80gb", "h100-sxm"):
            pts = plan.feasible[(plan.feasible["traffic"] == level) & (plan.feasible["gpu"] == gpu)]
            assert sorted(trace(gpu, level).x) == sorted(pts["cost_per_hour"])
    # every feasible configuration is a point
    points = sum(len(t.x) for t in fig.data if t.name in ("a100-80gb", "h100-sxm"))
    assert points == len(plan.feasible)
    # units on every axis; sized for JupyterLab's output area
    assert fig.layout.xaxis.title.text == "cost (USD/hour)"
    assert fig.layout.yaxis.title.text == "p99 time to first token (ms)"
    assert fig.layout.width is None and fig.layout.autosize and fig.layout.height <= 600


def test_fewest_gpus_figure_is_the_table_read(table):
    slo = SLO(ttft_p99_ms=300, tpot_p99_ms=60)
    fig = fewest_gpus_figure(table, slo)
    answer = fewest_in_table(table, slo)
    for level in ("trace ×1", "trace ×2"):
        bars = next(t for t in fig.data if t.type == "bar" and t.name == level)
        want = answer[answer["traffic"] == level].set_index("gpu")["gpus"]
        got = dict(zip(bars.x, bars.text, strict=True))
        for gpu, n in want.items():
            assert got[gpu] == ("none" if np.isnan(n) else str(int(n)))
    limit = next(t for t in fig.data if t.name == "limit")
    assert list(limit.y) == [300.0, 300.0]
    assert fig.layout.xaxis2.title.text == "replicas"
    assert fig.layout.yaxis2.title.text == "p99 time to first token (ms)"
    assert fig.layout.yaxis.title.text == "GPUs"
    with pytest.raises(InputError, match="gpus"):
        fewest_gpus_figure(table.drop(columns="gpus"), slo)


def test_slo_explorer_redraws_from_the_table(table):
    base = SLO(ttft_p99_ms=2000, tpot_p99_ms=60)
    tight = slo_explorer_state(table, base, value=150.0)
    loose = slo_explorer_state(table, base, value=2000.0)
    assert tight.ok and loose.ok
    assert tight.slo.ttft_p99_ms == 150.0
    a, b = (v.answer.set_index(["traffic", "gpu"])["gpus"] for v in (tight, loose))
    assert (a.fillna(np.inf) >= b.fillna(np.inf)).all()  # a tighter limit never needs fewer
    # looser than the table's own SLO: said, not hidden
    assert "may be too high" in slo_explorer_state(table, base, value=5000.0).message
    assert not slo_explorer_state(table, base, value=-1.0).ok
    w = slo_explorer(table, base, low=100.0)
    assert w.slider.max == 2000.0 and w.slider.value == 2000.0
    w.slider.value = 150.0  # what a reader's hand does
    assert w.view.slo.ttft_p99_ms == 150.0
    assert w.view.answer.equals(tight.answer)
    assert "a100-80gb (GPUs)" in w.answer_html.value
