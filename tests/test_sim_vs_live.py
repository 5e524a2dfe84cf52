"""The simulator against a live server, worked by hand: fake load-test records and a constant
step time give known simulated figures, so every ratio is known; plus the replay rules (send
times, concurrency, served token counts), the engine settings read from a measurement, and bad
input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batchlab import loadtest as lt
from batchlab import sim_vs_live as svl
from batchlab.errors import InputError
from batchlab.measure import EngineConfig
from batchlab.simulate import LinearStepTime

STEP = LinearStepTime(10.0)  # every step 10 ms, whatever it holds


def records(mode, level, arrival_ms, *, ttft_ms, itl_ms, gen=5, prompt=10, status=None):
    """Fake records: request i arrives (is sent) at arrival_ms[i], its first token ttft_ms
    later, then a token every itl_ms; gen tokens; the response ends with its last token."""
    n = len(arrival_ms)
    rows = []
    for i, a in enumerate(arrival_ms):
        first = a + ttft_ms
        tokens = [first + k * itl_ms for k in range(gen)]
        rows.append(
            {
                "mode": mode,
                "level": float(level),
                "request_id": f"{mode}{level}-{i}",
                "prompt_len": prompt,
                "gen_len": gen,
                "prompt_words": prompt,
                "arrival_ms": float(a),
                "send_ms": float(a),
                "first_token_ms": first,
                "last_token_ms": tokens[-1],
                "finish_ms": tokens[-1],
                "tokens_in": float(prompt),
                "tokens_streamed": float(gen),
                "usage_completion_tokens": float(gen),
                "finish_reason": "length",
                "status": "ok" if status is None else status[i],
                "http_status": 200,
                "error": "",
                "token_ms": tokens,
            }
        )
    t = pd.DataFrame(rows)
    assert len(t) == n
    return _derived(t)


def _derived(t: pd.DataFrame) -> pd.DataFrame:
    # the load test's own derivation (ttft, tpot, latency, tokens_out) through its public
    # aggregation path: summarize_levels reads these columns
    t = t.copy()
    t["tokens_out"] = t["usage_completion_tokens"]
    ok = t["status"] == "ok"
    t["ttft_ms"] = np.where(ok, t["first_token_ms"] - t["arrival_ms"], np.nan)
    t["tpot_ms"] = np.where(
        ok, (t["last_token_ms"] - t["first_token_ms"]) / (t["tokens_out"] - 1), np.nan
    )
    t["latency_ms"] = np.where(ok, t["finish_ms"] - t["arrival_ms"], np.nan)
    return t[list(lt.RECORD_COLUMNS)]


def result(*parts: pd.DataFrame) -> lt.LoadTestResult:
    recs = pd.concat(parts, ignore_index=True)
    return lt.LoadTestResult(levels=lt.summarize_levels(recs), requests=recs)


def closed_one_client():
    # one client, 4 requests back to back: each takes 100 ms (TTFT 20, then 4 gaps of 20)
    return records("closed", 1, [0, 100, 200, 300], ttft_ms=20.0, itl_ms=20.0)


def open_loop():
    # 3 requests 1 s apart: none overlaps, each TTFT 40 ms, gaps 15 ms -> latency 100 ms
    return records("rate", 1, [0, 1000, 2000], ttft_ms=40.0, itl_ms=15.0)


SIM = {"kv_blocks": 64, "block_size": 16}


def by_metric(table: pd.DataFrame, mode: str) -> pd.Series:
    part = table[table["mode"] == mode]
    return part.set_index("metric")


def test_known_ratios_closed_loop_by_hand() -> None:
    # simulated: prefill step (10 ms) emits the first token, 4 decode steps of 10 ms:
    # TTFT 10, latency 50, TPOT 10; 4 requests back to back in 200 ms -> 20 requests/s,
    # 100 output tokens/s. Measured: TTFT 20, latency 100, TPOT 20, 4 in 400 ms -> 10 req/s.
    table = svl.compare_loadtest(result(closed_one_client()), STEP, **SIM)
    assert list(table.columns) == list(svl.COMPARISON_COLUMNS)
    got = by_metric(table, "closed")
    assert list(got.index) == list(svl.COMPARED_METRICS)
    expect = {
        "throughput_rps": (10.0, 20.0),
        "output_tokens_per_s": (50.0, 100.0),
        "ttft_p50_ms": (20.0, 10.0),
        "ttft_p99_ms": (20.0, 10.0),
        "tpot_p50_ms": (20.0, 10.0),
        "latency_p50_ms": (100.0, 50.0),
        "latency_p99_ms": (100.0, 50.0),
    }
    for metric, (measured, simulated) in expect.items():
        row = got.loc[metric]
        assert row["measured"] == pytest.approx(measured), metric
        assert row["simulated"] == pytest.approx(simulated), metric
        assert row["ratio"] == pytest.approx(simulated / measured), metric


def test_known_ratios_open_loop_replays_the_send_times() -> None:
    # arrivals 1 s apart: simulated latency 50 ms each, span 2.05 s; measured span 2.1 s
    res = result(open_loop())
    sim = svl.replay_loadtest(res, STEP, **SIM)
    assert tuple(sim.columns) == lt.LOAD_SWEEP_COLUMNS
    assert sim["policy"].tolist() == ["simulated"] and sim["mode"].tolist() == ["rate"]
    got = by_metric(svl.compare_levels(res.levels, sim), "rate")
    assert got.loc["latency_p50_ms", "ratio"] == pytest.approx(50.0 / 100.0)
    assert got.loc["ttft_p99_ms", "ratio"] == pytest.approx(10.0 / 40.0)
    assert got.loc["throughput_rps", "measured"] == pytest.approx(3 / 2.1)
    assert got.loc["throughput_rps", "simulated"] == pytest.approx(3 / 2.05)


def test_both_modes_in_one_table_keep_the_load_test_order() -> None:
    res = result(closed_one_client(), open_loop())
    table = svl.compare_loadtest(res, STEP, metrics=["latency_p50_ms"], **SIM)
    assert table[["mode", "level"]].values.tolist() == [["closed", 1.0], ["rate", 1.0]]
    assert table["ratio"].tolist() == pytest.approx([0.5, 0.5])


def test_closed_loop_replays_the_concurrency() -> None:
    # two clients, 4 requests: measured in pairs; the simulator runs two at a time too, so
    # the span is 2 x (prefill + 4 decode steps) = 100 ms (both share each step)
    recs = records("closed", 2, [0, 0, 100, 100], ttft_ms=20.0, itl_ms=20.0)
    sim = svl.replay_loadtest(result(recs), STEP, max_num_seqs=8, **SIM)
    assert sim.loc[0, "n_requests"] == 4
    assert sim.loc[0, "throughput_rps"] == pytest.approx(4 / 0.100)
    assert sim.loc[0, "latency_p99_ms"] == pytest.approx(50.0)


def test_only_completed_requests_are_replayed_with_the_served_token_counts() -> None:
    recs = records(
        "rate", 1, [0, 1000, 2000], ttft_ms=40.0, itl_ms=15.0, status=["ok", "error", "ok"]
    )
    recs.loc[0, "tokens_in"] = 12.0  # the server counted 12 prompt tokens
    recs.loc[2, "usage_completion_tokens"] = 3.0  # and returned 3 tokens only
    recs["tokens_out"] = recs["usage_completion_tokens"]
    res = result(recs)
    replay = res.replay_requests("rate", 1.0, served=True)
    assert replay["request_id"].tolist() == ["rate1-0", "rate1-2"]
    assert replay["prompt_len"].tolist() == [12, 10]
    assert replay["gen_len"].tolist() == [5, 3]
    assert replay["arrival_s"].tolist() == [0.0, 2.0]
    asked = res.replay_requests("rate", 1.0)
    assert asked["prompt_len"].tolist() == [10, 10, 10] and asked["gen_len"].tolist() == [5] * 3
    sim = svl.replay_loadtest(res, STEP, **SIM)
    assert sim.loc[0, "n_requests"] == 2
    assert sim.loc[0, "latency_p99_ms"] == pytest.approx(50.0)  # 5 tokens: 10 + 4 x 10


def test_the_engine_sets_the_scheduler() -> None:
    # at most 2 sequences a step: 4 clients are served two by two (2 x 50 ms), where an
    # unlimited engine serves all four together in 50 ms
    cfg = EngineConfig(num_blocks=64, page_size=16, max_batch_tokens=64, max_requests_per_batch=2)
    res = result(records("closed", 4, [0, 0, 0, 0], ttft_ms=20.0, itl_ms=20.0))
    sim = svl.replay_loadtest(res, STEP, engine=cfg)
    assert sim.loc[0, "mean_batch_size"] == pytest.approx(2.0)
    assert sim.loc[0, "latency_p99_ms"] == pytest.approx(100.0)
    as_dict = svl.replay_loadtest(res, STEP, engine=cfg.as_dict())
    pd.testing.assert_frame_equal(sim, as_dict)
    wide = svl.replay_loadtest(res, STEP, engine=cfg, max_num_seqs=8)  # keywords override it
    assert wide.loc[0, "latency_p99_ms"] == pytest.approx(50.0)


def test_bad_input_is_named() -> None:
    res = result(closed_one_client())
    with pytest.raises(InputError, match="kv_blocks"):
        svl.replay_loadtest(res, STEP)  # no engine, no KV budget
    with pytest.raises(InputError, match="LoadTestResult"):
        svl.replay_loadtest(res.levels, STEP, **SIM)
    with pytest.raises(InputError, match="engine"):
        svl.replay_loadtest(res, STEP, engine={"pages": 3})
    with pytest.raises(InputError, match="no finished level"):
        svl.replay_loadtest(lt.LoadTestResult(res.levels.iloc[:0], res.requests), STEP, **SIM)
    with pytest.raises(InputError, match="missing column"):
        svl.compare_levels(res.levels, res.levels.drop(columns="ttft_p50_ms"))
    with pytest.raises(InputError, match="in common"):
        other = res.levels.assign(level=9.0)
        svl.compare_levels(res.levels, other)
    with pytest.raises(InputError, match="at least one"):
        svl.compare_levels(res.levels, res.levels, metrics=[])


def test_a_zero_measured_value_gives_no_ratio() -> None:
    res = result(closed_one_client())
    sim = res.levels.copy()
    measured = res.levels.assign(ttft_p50_ms=0.0)
    table = svl.compare_levels(measured, sim, metrics=["ttft_p50_ms", "latency_p50_ms"])
    assert math.isnan(table.loc[0, "ratio"]) and table.loc[1, "ratio"] == 1.0


def levels_table(mode, levels, **columns):
    return pd.DataFrame({"mode": mode, "level": [float(x) for x in levels], **columns})


def test_server_overhead_is_the_line_through_the_tpot_gaps() -> None:
    # gaps 2 + 0.5 x batch at batches 1, 4 and 16: 2 ms a step, 0.5 ms a token
    batch = np.array([1.0, 4.0, 16.0])
    sim = levels_table("closed", [1, 4, 16], tpot_p50_ms=[4.0, 6.0, 16.0], mean_batch_size=batch)
    meas = levels_table(
        "closed", [1, 4, 16], tpot_p50_ms=np.array([4.0, 6.0, 16.0]) + 2 + 0.5 * batch
    )
    got = svl.server_overhead(meas, sim)
    assert got.per_step_ms == pytest.approx(2.0) and got.per_token_ms == pytest.approx(0.5)
    assert got.n_levels == 3
    # the open-loop rows are left out unless asked for
    more = pd.concat([meas, levels_table("rate", [2], tpot_p50_ms=[100.0])], ignore_index=True)
    sim2 = pd.concat(
        [sim, levels_table("rate", [2], tpot_p50_ms=[4.0], mean_batch_size=[1.0])],
        ignore_index=True,
    )
    assert svl.server_overhead(more, sim2) == got
    one = svl.server_overhead(more, sim2, modes=["rate"])
    assert (one.per_step_ms, one.per_token_ms, one.n_levels) == (96.0, 0.0, 1)
    with pytest.raises(InputError, match="no level"):
        svl.server_overhead(meas, sim, modes=["rate"])
    # a server faster than the simulator adds nothing
    none = svl.server_overhead(meas.assign(tpot_p50_ms=1.0), sim)
    assert none.per_step_ms == 0.0 and none.per_token_ms == 0.0


def test_server_overhead_added_to_a_fitted_model() -> None:
    from batchlab.steptime import FittedStepTime, StepBatch

    fitted = FittedStepTime(1.0, 0.1, 0.0, 0.0, 0.2, source="engine")
    more = svl.ServerOverhead(per_step_ms=2.0, per_token_ms=0.5, n_levels=2).added_to(fitted)
    assert more.coefficients() == pytest.approx(
        {**fitted.coefficients(), "overhead_ms": 3.0, "lm_head_ms_per_row": 0.7}
    )
    assert "server overhead" in more.source
    decode4 = StepBatch(decode_seqs=4, decode_context=40)
    assert more.duration_ms(decode4) - fitted.duration_ms(decode4) == pytest.approx(2.0 + 4 * 0.5)
    with pytest.raises(InputError, match="FittedStepTime"):
        svl.ServerOverhead(1.0, 0.0, 1).added_to(STEP)


def test_live_vs_simulated_figure_draws_the_table_headless() -> None:
    from batchlab.plots import live_vs_simulated_figure

    res = result(closed_one_client(), records("closed", 2, [0, 0, 100, 100], ttft_ms=20, itl_ms=20))
    table = svl.compare_loadtest(res, STEP, **SIM)
    fig = live_vs_simulated_figure(table, metrics=["throughput_rps", "latency_p50_ms"])
    by_name = {t.name: t for t in fig.data}
    lat = table[table["metric"] == "latency_p50_ms"]
    assert list(by_name["measured p50 latency"].y) == pytest.approx(lat["measured"].tolist())
    assert list(by_name["simulated p50 latency"].y) == pytest.approx(lat["simulated"].tolist())
    assert list(by_name["ratio latency_p50_ms"].y) == pytest.approx(lat["ratio"].tolist())
    assert list(by_name["measured throughput"].x) == [1.0, 2.0]
    # two panels of values over two panels of ratios, every axis titled with its unit
    assert fig.layout.yaxis.title.text == "requests/s" and fig.layout.yaxis2.title.text == "ms"
    assert "×" in fig.layout.yaxis3.title.text and "×" in fig.layout.yaxis4.title.text
    assert fig.layout.xaxis3.title.text == "concurrency (clients)"
    both = pd.concat([table, table.assign(mode="rate")], ignore_index=True)
    with pytest.raises(InputError, match="mode="):
        live_vs_simulated_figure(both)
    assert live_vs_simulated_figure(both, mode="rate").layout.xaxis4.title.text.startswith(
        "arrival rate"
    )
    with pytest.raises(InputError, match="not in the table"):
        live_vs_simulated_figure(table, metrics=["queue_p50_ms"])
    with pytest.raises(InputError, match="missing column"):
        live_vs_simulated_figure(table.drop(columns="ratio"))


def test_a_padded_policy_takes_only_the_engines_kv_cache() -> None:
    # "what would static batching have done on these arrivals": the engine's continuous
    # knobs do not apply, its KV cache does
    cfg = EngineConfig(num_blocks=64, page_size=16, max_batch_tokens=64, max_requests_per_batch=2)
    res = result(records("closed", 4, [0, 0, 0, 0], ttft_ms=20.0, itl_ms=20.0))
    sim = svl.replay_loadtest(res, STEP, engine=cfg, policy="static", batch_size=4)
    assert sim.loc[0, "mean_batch_size"] == pytest.approx(4.0)
    assert sim.loc[0, "latency_p99_ms"] == pytest.approx(50.0)  # one padded batch of 4
