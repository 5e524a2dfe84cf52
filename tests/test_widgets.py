"""Tests of batchlab.widgets: the pure state functions (valid and invalid settings) and the
widgets driven headless (slider moves change the figure and metrics to the library's numbers)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import widgets
from batchlab.cost import get_cost_model
from batchlab.errors import InputError
from batchlab.evaluate import evaluate
from batchlab.plan import baseline_plan, bucketed_plan
from batchlab.planner import Limits
from batchlab.plots import COST_PARTS, padding_by_shape_table
from batchlab.shapes import align, power_of_two_grid, shape_grid
from batchlab.workload import lognormal_workload

FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def small(request_table):
    return request_table([10, 70, 130, 600, 1000, 40], [5, 50, 20, 300, 7, 60])


@pytest.fixture(scope="module")
def workload():
    return lognormal_workload(300, seed=11)


def metric(view, name):
    rows = view.metrics[view.metrics["metric"] == name]
    assert len(rows) == 1
    return rows.iloc[0]


def boundary_xs(fig):
    return sorted({x for x in fig.data[1].x if x is not None})


def library_view(requests, shapes, gen_bucket_size=None, cost_model="static-graph", mbs=None):
    plan = bucketed_plan(
        requests, np.asarray(shapes), gen_bucket_size=gen_bucket_size, max_batch_size=mbs
    )
    return plan, evaluate(requests, plan, cost_model)


# ------------------------------------------------------------------ shape_explorer_state


def test_state_custom_hand_example(small):
    # shapes 128 (prompts 10, 70, 40) and 1024 (130, 600, 1000), gen buckets of 32 tokens:
    # batches {gen 5}, {50, 60}, {20, 7}, {300} -> 4 batches, gen padding 10 + 13 = 23 tokens.
    # prompt padding (static-graph) = Σ align(p) - p = 54+58+62+40+24+24 = 262 tokens.
    # pad_ratio = (262 + 23) / (1850 prompt + 442 gen tokens) = 285 / 2292.
    view = widgets.shape_explorer_state(small, boundaries=[128, 1024], gen_bucket_size=32)
    assert view.ok and view.message is None
    assert view.family == "custom" and view.shapes == (128, 1024)
    assert metric(view, "n_batches")["value"] == 4
    assert metric(view, "pad_ratio")["value"] == pytest.approx(285 / 2292)
    assert metric(view, "n_shapes")["value"] == 2
    assert metric(view, "max_batch_size")["value"] == 2
    assert view.evaluation.padding_tokens.gen == 23
    assert boundary_xs(view.figure) == [128, 1024]
    assert list(view.figure.data[3].y) == [10, 13]  # gen padding per shape bucket
    assert view.limits_met is True and view.violations == {}


def test_state_grid_family_matches_library(workload):
    view = widgets.shape_explorer_state(workload, family="quantile", k=3, gen_bucket_size=40)
    prompt = workload["prompt_len"].to_numpy()
    shapes = shape_grid("quantile", prompt, 3, 64)
    assert view.shapes == tuple(shapes)
    plan, ev = library_view(workload, shapes, 40)
    pd.testing.assert_frame_equal(view.plan, plan)
    assert view.evaluation.summary() == ev.summary()
    for name in ("pad_ratio", "total_cost", "cost_decode", "p95_latency_ms", "sequential_ms"):
        assert metric(view, name)["value"] == pytest.approx(ev.summary()[name])
        assert metric(view, name)["unit"] == widgets.METRIC_UNITS[name]
    assert boundary_xs(view.figure) == list(shapes)
    np.testing.assert_array_equal(
        view.figure.data[2].y, padding_by_shape_table(ev)["prompt_padding"]
    )


def test_state_defaults_to_optimal_and_padded_model(workload):
    view = widgets.shape_explorer_state(workload, k=5, cost_model="padded-graph")
    shapes = shape_grid("optimal", workload["prompt_len"].to_numpy(), 5, 64)
    assert view.family == "optimal" and view.shapes == tuple(shapes)
    _, ev = library_view(workload, shapes, None, "padded-graph")
    assert view.evaluation.summary() == ev.summary()
    np.testing.assert_array_equal(
        view.figure.data[2].y, padding_by_shape_table(ev, "padded-graph")["prompt_padding"]
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"boundaries": [256, 128, 1024]}, "not above boundary 1"),
        ({"boundaries": [128, 128, 1024]}, "not above boundary 1"),
        ({"boundaries": [128, 512]}, "do not cover the longest prompt"),
        ({"boundaries": [100, 1024]}, "multiple of the granularity 64"),
        ({"boundaries": []}, "at least one shape boundary"),
        ({"boundaries": [128, -64]}, "positive whole number"),
        ({"boundaries": [128, "big"]}, "positive whole number"),
        ({"family": "custom"}, "needs the shape boundaries"),
        ({"family": "bogus"}, "unknown shape family"),
        ({"family": "optimal", "boundaries": [1024]}, "only used with family 'custom'"),
        ({"family": "linear", "k": 0}, "k must be a whole number"),
        ({"family": "linear", "k": 2.5}, "k must be a whole number"),
        ({"family": "linear", "gen_bucket_size": 0}, "gen bucket size"),
        ({"family": "linear", "gen_bucket_size": 2.5}, "gen bucket size"),
    ],
)
def test_state_invalid_settings_give_a_message(small, kwargs, fragment):
    view = widgets.shape_explorer_state(small, **kwargs)
    assert not view.ok
    assert fragment in view.message
    assert view.evaluation is None and view.plan is None
    assert view.limits_met is None
    assert len(view.metrics) == 0
    assert list(view.metrics.columns) == ["metric", "value", "unit", "limit", "met"]
    assert isinstance(view.figure, go.Figure) and len(view.figure.data) == 4
    assert len(view.figure.data[2].x) == 0  # no padding bars


def test_state_not_covering_names_the_numbers(small):
    # longest prompt 1000 tokens aligns to 1024; the largest boundary is 512
    view = widgets.shape_explorer_state(small, boundaries=[128, 512])
    assert "512" in view.message and "1000" in view.message and "1024" in view.message
    assert boundary_xs(view.figure) == [128, 512]  # the invalid boundaries are still drawn


def test_state_limits(workload):
    tight = widgets.shape_explorer_state(
        workload, k=3, limits=Limits(max_p95_latency_ms=1.0, max_pad_ratio=100.0)
    )
    assert set(tight.violations) == {"max_p95_latency_ms"}
    assert tight.limits_met is False
    assert metric(tight, "p95_latency_ms")["met"] is False
    assert metric(tight, "pad_ratio")["met"] is True
    assert metric(tight, "total_cost")["met"] is None
    loose = widgets.shape_explorer_state(workload, k=3, limits={"max_p95_latency_ms": 1e12})
    assert loose.limits_met is True
    # max_batch_size goes to the planner: 300 requests in one shape -> ceil(300 / 40) = 8
    sized = widgets.shape_explorer_state(workload, k=1, limits=Limits(max_batch_size=40))
    assert metric(sized, "n_batches")["value"] == 8
    assert metric(sized, "max_batch_size")["value"] == 40
    assert metric(sized, "max_batch_size")["met"] is True
    # a whole-number float limit (as read from TOML) works the same
    as_float = widgets.shape_explorer_state(workload, k=1, limits={"max_batch_size": 40.0})
    assert metric(as_float, "n_batches")["value"] == 8


@FAST
@given(
    st.lists(st.integers(-1, 18).map(lambda i: i * 64), min_size=0, max_size=5),
    st.one_of(st.none(), st.integers(-2, 400)),
)
def test_state_never_raises_and_message_iff_invalid(request_table, boundaries, gen_bucket_size):
    df = request_table([10, 70, 130, 600, 1000, 40], [5, 50, 20, 300, 7, 60])
    view = widgets.shape_explorer_state(df, boundaries=boundaries, gen_bucket_size=gen_bucket_size)
    valid = (
        len(boundaries) > 0
        and all(b > 0 for b in boundaries)
        and all(a < b for a, b in zip(boundaries, boundaries[1:], strict=False))
        and boundaries[-1] >= 1024
        and (gen_bucket_size is None or gen_bucket_size >= 1)
    )
    assert view.ok == valid
    if valid:
        _, ev = library_view(df, boundaries, gen_bucket_size)
        assert view.evaluation.summary() == ev.summary()


# ------------------------------------------------------------------ shape explorer widget


def test_shape_explorer_widget_follows_the_sliders(workload):
    ex = widgets.shape_explorer(workload, k=4, max_k=8)
    assert isinstance(ex, widgets.ShapeExplorer)
    assert isinstance(ex.figure, go.FigureWidget)
    assert ex.figure in ex.children
    prompt = workload["prompt_len"].to_numpy()
    max_gen = int(workload["gen_len"].max())
    assert ex.controls["gen_bucket_size"].value == max_gen
    assert all(
        c.continuous_update is False
        for c in (ex.controls["k"], ex.controls["gen_bucket_size"], *ex.controls["boundaries"])
    )
    assert boundary_xs(ex.figure) == list(shape_grid("optimal", prompt, 4, 64))

    ex.controls["k"].value = 6
    shapes = shape_grid("optimal", prompt, 6, 64)
    assert ex.view.shapes == tuple(shapes)
    assert boundary_xs(ex.figure) == list(shapes)
    _, ev = library_view(workload, shapes, max_gen)
    assert ex.view.evaluation.summary() == ev.summary()
    table_ = padding_by_shape_table(ev)
    assert list(ex.figure.data[2].x) == [str(s) for s in table_["seq_align"]]
    np.testing.assert_array_equal(ex.figure.data[3].y, table_["gen_padding"])
    shown = [s for s in ex.controls["boundaries"] if s.layout.display != "none"]
    assert [s.value for s in shown] == list(shapes)
    assert all(s.disabled for s in shown)
    assert f"{ev.n_batches:,}" in ex.metrics_html.value

    ex.controls["gen_bucket_size"].value = 16
    _, ev16 = library_view(workload, shapes, 16)
    assert ex.view.evaluation.summary() == ev16.summary()
    np.testing.assert_array_equal(ex.figure.data[3].y, padding_by_shape_table(ev16)["gen_padding"])
    assert ev16.n_batches > ev.n_batches


def test_shape_explorer_custom_boundaries_and_invalid_moves(workload):
    ex = widgets.shape_explorer(workload, family="quantile", k=3, max_k=8)
    start = ex.view.shapes
    ex.controls["family"].value = "custom"
    # the custom boundaries start from the shapes shown before
    assert ex.controls["k"].value == len(start)
    assert ex.view.shapes == start and ex.view.ok
    sliders = ex.controls["boundaries"]
    assert not any(s.disabled for s in sliders[: len(start)])

    sliders[1].value = sliders[0].value  # not above the previous boundary
    assert not ex.view.ok and "not above boundary 1" in ex.view.message
    assert "not above" in ex.message_html.value
    assert ex.metrics_html.value == ""
    assert len(ex.figure.data[2].x) == 0

    sliders[1].value = sliders[0].value + 64  # valid again
    assert ex.view.ok and ex.message_html.value == ""
    custom = [s.value for s in sliders[: ex.controls["k"].value]]
    _, ev = library_view(workload, custom, int(workload["gen_len"].max()))
    assert ex.view.evaluation.summary() == ev.summary()
    assert boundary_xs(ex.figure) == custom

    ex.controls["k"].value = 5  # new count: boundaries restart from the optimal shapes
    assert ex.view.ok
    assert ex.view.shapes == tuple(shape_grid("optimal", workload["prompt_len"].to_numpy(), 5, 64))

    ex.controls["k"].value = 3
    need = int(align(workload["prompt_len"].max()))
    assert need > 640
    for slider, value in zip(sliders, [128, 512, need], strict=False):
        slider.value = value
    assert ex.view.ok and ex.view.shapes == (128, 512, need)
    sliders[2].value = 576  # the largest shape no longer covers the longest prompt
    assert "do not cover the longest prompt" in ex.view.message
    assert "do not cover" in ex.message_html.value
    assert boundary_xs(ex.figure) == [128, 512, 576]


def test_shape_explorer_starting_custom(workload):
    ex = widgets.shape_explorer(workload, family="custom", k=3, max_k=4)
    prompt = workload["prompt_len"].to_numpy()
    assert ex.view.ok and ex.view.shapes == tuple(shape_grid("optimal", prompt, 3, 64))
    shown = [s for s in ex.controls["boundaries"] if s.layout.display != "none"]
    assert len(shown) == 3 and not any(s.disabled for s in shown)
    with pytest.raises(InputError):
        widgets.shape_explorer(workload, k=0)
    with pytest.raises(InputError):
        widgets.shape_explorer(workload, family="bogus")


def test_shape_explorer_power_of_two_and_limits(workload):
    ex = widgets.shape_explorer(
        workload, family="power_of_two", limits=Limits(max_p95_latency_ms=1.0)
    )
    prompt = workload["prompt_len"].to_numpy()
    assert ex.view.shapes == tuple(power_of_two_grid(prompt.max(), 64, min_len=prompt.min()))
    assert ex.controls["k"].disabled
    assert "limits broken" in ex.metrics_html.value
    shown = [s.value for s in ex.controls["boundaries"] if s.layout.display != "none"]
    assert shown == list(ex.view.shapes)  # slider range reaches the power-of-two top


def test_shape_explorer_update_is_fast():
    big = lognormal_workload(20_000, seed=3)
    ex = widgets.shape_explorer(big, k=4)
    times = []
    for k in (6, 8, 5):
        t0 = time.perf_counter()
        ex.controls["k"].value = k
        times.append(time.perf_counter() - t0)
    assert sorted(times)[1] < 1.0, times


# ------------------------------------------------------------------ cost explorer


@pytest.fixture(scope="module")
def planned(workload):
    return workload, baseline_plan(workload, 4)


def test_cost_state_matches_library(planned):
    req, plan = planned
    view = widgets.cost_explorer_state(
        req, plan, coefficients={"decode_cost_quad": 3.0, "prefill_ms_lin": 0.01}
    )
    assert view.ok
    model = get_cost_model("static-graph").with_coefficients(
        decode_cost_quad=3.0, prefill_ms_lin=0.01
    )
    ev = evaluate(req, plan, model)
    ref = evaluate(req, plan)
    assert view.evaluation.summary() == ev.summary()
    assert view.cost_model.coefficients == model.coefficients
    fig = view.figure
    assert [t.name for t in fig.data] == list(COST_PARTS) * 2
    assert list(fig.data[0].x) == ["static-graph (reference)", "changed"]
    for i, part in enumerate(COST_PARTS):
        np.testing.assert_allclose(fig.data[i].y, [getattr(ref.cost, part), getattr(ev.cost, part)])
        np.testing.assert_allclose(
            fig.data[4 + i].y, [getattr(ref.latency, part), getattr(ev.latency, part)]
        )
    row = view.metrics.set_index("metric").loc["cost_decode"]
    assert row["current"] == pytest.approx(ev.cost.decode)
    assert row["change_pct"] == pytest.approx((ev.cost.decode / ref.cost.decode - 1) * 100)
    unchanged = view.metrics.set_index("metric").loc["cost_overhead"]
    assert unchanged["change_pct"] == 0.0


@pytest.mark.parametrize(
    ("coefficients", "fragment"),
    [
        ({"batch_cost": -1.0}, "batch_cost"),
        ({"no_such": 1.0}, "unknown coefficient"),
        ({"batch_cost": "x"}, "must be a finite number"),
        ({"prefill_cost_quad": float("inf")}, "finite"),
    ],
)
def test_cost_state_invalid_coefficients(planned, coefficients, fragment):
    req, plan = planned
    view = widgets.cost_explorer_state(req, plan, coefficients=coefficients)
    assert not view.ok and fragment in view.message
    assert view.evaluation is None
    assert len(view.figure.data) == 8
    assert list(view.figure.data[0].x) == ["static-graph (reference)"]
    assert view.metrics["current"].isna().all()


def test_cost_explorer_widget(planned):
    req, plan = planned
    ex = widgets.cost_explorer(req, plan)
    assert isinstance(ex, widgets.CostExplorer) and isinstance(ex.figure, go.FigureWidget)
    ref = evaluate(req, plan)
    defaults = get_cost_model("static-graph").coefficients.as_dict()
    for name, slider in ex.controls.items():
        assert slider.value == pytest.approx(defaults[name])
        assert slider.continuous_update is False
    assert ex.coefficients() == {}

    ex.controls["batch_cost"].value = 1e8
    ev = evaluate(req, plan, get_cost_model("static-graph").with_coefficients(batch_cost=1e8))
    assert ex.coefficients() == {"batch_cost": 1e8}
    # overhead = batches × batch_cost = 4 × 1e8
    assert ex.figure.data[0].y[1] == pytest.approx(4e8) == pytest.approx(ev.cost.overhead)
    assert ex.figure.data[3].y[1] == pytest.approx(ev.cost.decode)

    ex.controls["compile_ms"].value = 10.0
    ev2 = evaluate(
        req,
        plan,
        get_cost_model("static-graph").with_coefficients(batch_cost=1e8, compile_ms=10.0),
    )
    # compile latency = distinct shapes × compile_ms = 4 × 10 ms
    assert ex.figure.data[5].y[1] == pytest.approx(40.0) == pytest.approx(ev2.latency.compile)
    assert "cost_overhead" in ex.metrics_html.value

    ex.reset.click()
    assert ex.coefficients() == {}
    np.testing.assert_allclose(ex.figure.data[0].y, [ref.cost.overhead] * 2)


def test_sync_figure_replaces_traces_when_the_layout_changes():
    target = go.FigureWidget(go.Figure(go.Bar(x=[1], y=[2], name="a")))
    source = go.Figure([go.Scatter(x=[1, 2], y=[3, 4], name="b"), go.Bar(x=[5], y=[6])])
    widgets._sync_figure(target, source)
    assert [t.type for t in target.data] == ["scatter", "bar"]
    assert list(target.data[0].y) == [3, 4]
    same = go.Figure([go.Scatter(x=[9], y=[8], name="c"), go.Bar(x=[7], y=[6])])
    first = target.data[0]
    widgets._sync_figure(target, same)
    assert target.data[0] is first  # updated in place
    assert list(first.x) == [9] and first.name == "c"


# ------------------------------------------------------------------ FigureWidget round trip


def _arrays_in(obj, path=()):
    """Paths of the numpy arrays anywhere inside ``obj`` (dicts, lists, tuples)."""
    if isinstance(obj, np.ndarray):
        yield path
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _arrays_in(v, (*path, k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _arrays_in(v, (*path, i))


def _front_end_echo(fw: go.FigureWidget) -> None:
    """What JupyterLab's plotly front end sends the kernel after every restyle: each trace's
    computed defaults, in which a value the kernel sent as a typed array (a numpy array) comes
    back as an index-keyed object. Delivered to the widget's handler as the comm would."""
    deltas = []
    for t in fw.data:
        delta = {"uid": t.uid}
        for key, value in t._props.items():
            if isinstance(value, np.ndarray):
                delta[key] = {str(i): v for i, v in enumerate(value.tolist())}
        deltas.append(delta)
    message = {"trace_deltas": deltas, "trace_edit_id": fw._last_trace_edit_id}
    fw._handler_js2py_traceDeltas({"name": "_js2py_traceDeltas", "new": message})


def test_figure_widgets_hold_plain_lists_and_take_the_front_end_echo(planned, workload):
    """Regression (issue 12, first hour 5): the explorers' FigureWidgets held numpy arrays;
    plotly.js echoed them back as objects and plotly's ``_remove_overlapping_props`` raised
    "The truth value of an array ... is ambiguous" into JupyterLab's Log Console after Run All
    and after every slider move (chapters 03 and 05). The widgets now hold plain lists."""
    req, plan = planned
    timed = workload.assign(arrival_s=np.arange(len(workload)) * 0.5)
    explorers = [
        (widgets.shape_explorer(workload, k=4), ("k", 6)),
        (widgets.cost_explorer(req, plan), ("batch_cost", 1e8)),
        (widgets.policy_explorer(timed.iloc[:80], rate=2.0), ("max_num_seqs", 8)),
    ]
    for explorer, (control, value) in explorers:
        fw = explorer.figure
        _front_end_echo(fw)  # after Run All
        explorer.controls[control].value = value
        _front_end_echo(fw)  # after a slider move
        for t in fw.data:
            assert not list(_arrays_in(t._props)), (type(explorer).__name__, t.name)
        assert not list(_arrays_in(fw._layout)), type(explorer).__name__
    assert widgets.plain_data({"a": np.array([1.0, np.nan]), "b": (np.int64(3),)}) == {
        "a": [1.0, None],
        "b": [3],
    }


def test_chapter_02_leaves_its_shape_explorer_in_a_valid_setting(monkeypatch):
    """Regression (issue 12, first hour 4): after Run All, chapter 02's shape explorer was left
    in its red error state (its last cell moved a boundary above the next one to show the
    message). The chapter's explorer cells, run headless in order, leave a valid setting: no
    message, a metrics table."""
    import ast
    from pathlib import Path

    import nbformat
    import plotly.io as pio

    path = Path(__file__).resolve().parents[1] / "notebooks" / "02_bucketing.ipynb"
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    start = next(i for i, src in enumerate(cells) if "widgets.shape_explorer(" in src)
    monkeypatch.chdir(path.parent)
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    ns: dict = {}
    for src in [cells[0], *(c for c in cells[1:start] if "load_trace" in c), *cells[start:]]:
        exec(compile(ast.parse(src), "<chapter 02>", "exec"), ns)
    explorer = ns["explorer"]
    assert explorer.view.ok, explorer.view.message
    assert explorer.message_html.value == "" and "<table" in explorer.metrics_html.value
