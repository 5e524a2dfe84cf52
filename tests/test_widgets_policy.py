"""Tests of the policy explorer: the pure state function (knob mapping, metrics, invalid knobs
give a message and never raise) and the widget driven headless (moving a control re-simulates
and the figure and table follow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import widgets
from batchlab.errors import InputError
from batchlab.simulate import LinearStepTime, simulate

FAST = settings(max_examples=15, deadline=None)
STEP = LinearStepTime(10, per_token_ms=0.1, per_seq_ms=1)


@pytest.fixture(scope="module")
def three(request_table):
    return request_table([10, 20, 5], [3, 1, 2], [0.0, 0.0, 0.005])


@pytest.fixture(scope="module")
def work(request_table):
    rng = np.random.default_rng(4)
    n = 120
    return request_table(
        rng.integers(20, 900, n), rng.integers(1, 120, n), np.sort(rng.uniform(0, 20, n))
    )


def test_state_hand_example(three):
    # dynamic with max_batch_size 2 and max_wait_ms 0 on the three requests: r0 + r1 start at
    # 0 ms (prefill 2 x 20 tokens = 14 ms, 2 decode steps of 12 ms: done at 38 ms); r2 (at
    # 5 ms) then runs alone: prefill 10.5 ms, one decode step of 11 ms, done at 59.5 ms.
    view = widgets.policy_explorer_state(
        three, max_num_seqs=2, max_wait_ms=0.0, policies=["dynamic"], step_time=STEP, kv_blocks=100
    )
    assert view.ok and view.message is None
    res = view.results["dynamic"]
    np.testing.assert_allclose(res.requests["finish_ms"], [38.0, 38.0, 59.5])
    m = view.metrics.set_index("policy")
    assert m.loc["dynamic", "latency_p99_ms"] == pytest.approx(54.5)  # 59.5 - 5
    assert m.loc["dynamic", "throughput_rps"] == pytest.approx(3 / 0.0595)
    assert list(view.metrics.columns) == ["policy", *(k for k, _ in widgets.POLICY_METRICS)]
    assert isinstance(view.figure, go.Figure)


def test_state_knob_mapping_and_metrics(work):
    view = widgets.policy_explorer_state(
        work,
        max_num_seqs=6,
        max_num_batched_tokens=1024,
        max_wait_ms=30.0,
        chunked_prefill=True,
        policies=("static", "dynamic", "adaptive", "continuous"),
        rate=5.0,
        seed=3,
        step_time=STEP,
        kv_blocks=2000,
    )
    assert view.ok, view.message
    opts = {name: res.options for name, res in view.results.items()}
    assert opts["static"]["batch_size"] == 6 and opts["static"]["timeout_ms"] == 30.0
    for name in ("dynamic", "adaptive"):
        assert opts[name]["max_batch_size"] == 6 and opts[name]["max_wait_ms"] == 30.0
    assert opts["continuous"]["max_num_seqs"] == 6
    assert opts["continuous"]["max_num_batched_tokens"] == 1024
    assert opts["continuous"]["chunked_prefill"] is True
    # each row equals the library's own simulation with those options
    expected = simulate(
        work,
        "continuous",
        max_num_seqs=6,
        max_num_batched_tokens=1024,
        chunked_prefill=True,
        rate=5.0,
        seed=3,
        step_time=STEP,
        kv_blocks=2000,
    ).summary()
    row = view.metrics.set_index("policy").loc["continuous"]
    for key, _ in widgets.POLICY_METRICS:
        assert row[key] == pytest.approx(expected[key], nan_ok=True), key
    # the figure draws the same numbers
    thr = [t for t in view.figure.data if t.name == "throughput"][0]
    np.testing.assert_allclose(thr.y, view.metrics["throughput_rps"])
    p99 = [t for t in view.figure.data if t.name == "p99 latency"][0]
    np.testing.assert_allclose(p99.y, view.metrics["latency_p99_ms"])
    assert list(thr.x) == ["static", "dynamic", "adaptive", "continuous"]


def test_state_invalid_knobs_give_a_message(request_table, work):
    longest = int(work["prompt_len"].max())
    view = widgets.policy_explorer_state(
        work, max_num_batched_tokens=longest - 1, step_time=STEP, kv_blocks=2000
    )
    assert not view.ok
    assert "continuous" in view.message and "max_num_batched_tokens" in view.message
    assert list(view.results) == ["dynamic"]
    assert view.metrics["policy"].tolist() == ["dynamic"]
    # chunked prefill lifts the limit
    ok = widgets.policy_explorer_state(
        work,
        max_num_batched_tokens=longest - 1,
        chunked_prefill=True,
        step_time=STEP,
        kv_blocks=2000,
    )
    assert ok.ok and list(ok.results) == ["dynamic", "continuous"]
    bad = widgets.policy_explorer_state(work, max_num_seqs=0, max_wait_ms=-1, step_time=STEP)
    assert bad.results == {} and "dynamic" in bad.message and "continuous" in bad.message
    assert len(bad.metrics) == 0 and all(len(t.x) == 0 for t in bad.figure.data)
    unknown = widgets.policy_explorer_state(work, policies=["fifo"], step_time=STEP)
    assert "fifo" in unknown.message
    with pytest.raises(InputError):
        widgets.policy_explorer_state(request_table([0], [1], [0.0]))  # a bad request table raises


@FAST
@given(
    seqs=st.integers(-1, 12),
    tokens=st.integers(1, 1200),
    wait=st.sampled_from([-5.0, 0.0, 10.0, 100.0]),
    chunked=st.booleans(),
)
def test_state_never_raises_and_message_iff_invalid(request_table, seqs, tokens, wait, chunked):
    df = request_table([300, 800, 40, 500], [5, 30, 2, 9], [0.0, 0.01, 0.02, 0.5])
    view = widgets.policy_explorer_state(
        df,
        max_num_seqs=seqs,
        max_num_batched_tokens=tokens,
        max_wait_ms=wait,
        chunked_prefill=chunked,
        step_time=STEP,
        kv_blocks=1000,
    )
    dynamic_ok = seqs >= 1 and wait >= 0
    if chunked:
        continuous_ok = seqs >= 1 and tokens >= seqs
    else:
        continuous_ok = seqs >= 1 and tokens >= 800  # the longest prompt fits one step
    assert ("dynamic" in view.results) == dynamic_ok
    assert ("continuous" in view.results) == continuous_ok
    assert view.ok == (dynamic_ok and continuous_ok)
    assert view.metrics["policy"].tolist() == list(view.results)


def test_widget_follows_the_controls(work):
    w = widgets.policy_explorer(work, rate=8.0, step_time=STEP, kv_blocks=2000)
    assert set(w.controls) == {
        "max_num_seqs",
        "max_num_batched_tokens",
        "max_wait_ms",
        "chunked_prefill",
    }
    for name in ("max_num_seqs", "max_num_batched_tokens", "max_wait_ms"):
        assert w.controls[name].continuous_update is False
    assert isinstance(w.figure, go.FigureWidget)
    # the token slider starts at the library default: max(8192, longest prompt + gen)
    assert w.controls["max_num_batched_tokens"].value == 8192
    before = w.view.metrics.copy()
    w.controls["max_num_seqs"].value = 2
    after = w.view
    assert after.settings["max_num_seqs"] == 2
    expected = widgets.policy_explorer_state(
        work, max_num_seqs=2, max_num_batched_tokens=8192, rate=8.0, step_time=STEP, kv_blocks=2000
    )
    pd.testing.assert_frame_equal(after.metrics, expected.metrics)
    assert not after.metrics.equals(before)
    p99 = [t for t in w.figure.data if t.name == "p99 latency"][0]
    np.testing.assert_allclose(p99.y, expected.metrics["latency_p99_ms"])
    assert "latency_p99_ms (ms)" in w.metrics_html.value
    # an invalid setting: a message in the widget, only dynamic drawn
    w.controls["max_num_batched_tokens"].value = 256
    assert "max_num_batched_tokens" in w.message_html.value
    thr = [t for t in w.figure.data if t.name == "throughput"][0]
    assert list(thr.x) == ["dynamic"]
    w.controls["chunked_prefill"].value = True
    assert w.message_html.value == ""
    thr = [t for t in w.figure.data if t.name == "throughput"][0]
    assert list(thr.x) == ["dynamic", "continuous"]
    assert w.view.results["continuous"].options["chunked_prefill"] is True
    w.controls["max_wait_ms"].value = 200.0
    assert w.view.results["dynamic"].options["max_wait_ms"] == 200.0


def test_widget_rejects_bad_construction(work):
    with pytest.raises(InputError, match="max_num_seqs"):
        widgets.policy_explorer(work, max_num_seqs=0, step_time=STEP)
    with pytest.raises(InputError, match="max_wait_ms"):
        widgets.policy_explorer(work, max_wait_ms=-1, step_time=STEP)
    with pytest.raises(InputError, match="policies"):
        widgets.policy_explorer(work, policies=["fifo"], step_time=STEP)
    with pytest.raises(InputError, match="max_num_batched_tokens"):
        widgets.policy_explorer(work, max_num_batched_tokens=0, step_time=STEP)
