"""The load-test client against an in-process fake server: request bodies, prompt sizing,
errors, timeouts, dropped streams, chat vs completions, open and closed loops, Ctrl-C, files,
and the aggregation math worked by hand; plus the schema shared with the simulator's sweep."""

from __future__ import annotations

import _thread
import json
import math
import warnings

import httpx
import numpy as np
import pandas as pd
import pytest
from builders import request_table

from batchlab import loadtest as lt
from batchlab.errors import InputError
from batchlab.plots import load_sweep_figure
from batchlab.simulate import LinearStepTime, draw_arrivals, load_sweep, simulate
from tests.loadtest_fake import FakeServer

URL = "http://127.0.0.1:8000"


def run(server: FakeServer, requests: pd.DataFrame, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("model", server.model)
    if "rates" not in kw and "concurrencies" not in kw:
        kw["concurrencies"] = [1]
    return lt.loadtest(URL, requests, transport=server.transport, **kw)


# ------------------------------------------------------------------------------ the schema


def test_level_table_starts_with_the_simulated_sweep_columns() -> None:
    sim = load_sweep(
        request_table([8, 16, 4], [4, 2, 3]),
        rates=[1.0, 2.0],
        concurrencies=[2],
        step_time=LinearStepTime(5.0, 0.01),
        kv_blocks=64,
    )
    assert tuple(sim.columns) == lt.LOAD_SWEEP_COLUMNS
    res = run(FakeServer(), request_table([8, 8], [3, 3]), concurrencies=[1, 2])
    assert tuple(res.levels.columns) == lt.LEVEL_COLUMNS
    assert lt.LEVEL_COLUMNS[: len(lt.LOAD_SWEEP_COLUMNS)] == lt.LOAD_SWEEP_COLUMNS
    both = pd.concat([sim[sim["mode"] == "closed"], res.levels[res.levels["mode"] == "closed"]])
    fig = load_sweep_figure(both, by="policy")
    names = {t.name for t in fig.data}
    assert {"measured throughput", "continuous throughput"} <= names
    assert "measured p99 latency" in names and "continuous p99 latency" in names


# ------------------------------------------------------------------------------ the requests


def test_bodies_ask_for_gen_len_tokens_and_prompts_are_sized_by_the_servers_usage() -> None:
    server = FakeServer(tokens_per_word=2, overhead=3)
    df = request_table([43, 13, 9], [5, 1, 7])
    res = run(server, df, concurrencies=[1])
    # two warm-up requests, then the three of the table
    assert len(server.bodies) == 5
    assert res.server["tokens_per_word"] == 2.0
    assert res.server["prompt_overhead_tokens"] == 3.0
    assert res.server["ignore_eos"] is True
    sent = server.bodies[2:]
    assert [b["max_tokens"] for b in sent] == [5, 1, 7]
    assert [b["min_tokens"] for b in sent] == [5, 1, 7]
    assert all(b["ignore_eos"] is True and b["stream"] is True for b in sent)
    assert all(b["stream_options"] == {"include_usage": True} for b in sent)
    # (43 - 3) / 2 = 20 words, (13 - 3) / 2 = 5, (9 - 3) / 2 = 3
    assert [len(b["prompt"].split()) for b in sent] == [20, 5, 3]
    r = res.requests.set_index("request_id")
    assert r.loc[["r0", "r1", "r2"], "tokens_in"].tolist() == [43, 13, 9]
    assert r.loc[["r0", "r1", "r2"], "tokens_out"].tolist() == [5, 1, 7]
    assert (r["tokens_streamed"] == r["gen_len"]).all()
    assert set(r["prompt_words"]) <= {20, 5, 3}
    # prompts differ between requests, and are the same at every run (seeded)
    assert len({b["prompt"] for b in sent}) == 3
    again = FakeServer(tokens_per_word=2, overhead=3)
    run(again, df, concurrencies=[1])
    assert [b["prompt"] for b in again.bodies] == [b["prompt"] for b in server.bodies]


def test_refused_length_fields_are_dropped_when_auto_and_an_error_when_required() -> None:
    server = FakeServer(refuse_length_fields=True)
    res = run(server, request_table([4, 4], [3, 3]))
    assert res.server["ignore_eos"] is False
    assert "Unexpected fields" in res.server["length_fields_refused"]
    assert all("ignore_eos" not in b and "min_tokens" not in b for b in server.bodies[1:])
    assert res.levels["n_completed"].tolist() == [2]
    with pytest.raises(InputError, match="did not answer a test request.*HTTP 422"):
        run(FakeServer(refuse_length_fields=True), request_table([4], [3]), ignore_eos=True)
    never = FakeServer()
    run(never, request_table([4], [3]), ignore_eos=False)
    assert all("ignore_eos" not in b for b in never.bodies)


def test_chat_endpoint_counts_content_deltas_only() -> None:
    server = FakeServer(chat_overhead=2)
    res = run(server, request_table([12, 6], [4, 2]), chat=True)
    assert all(p != "/v1/completions" for p in server.paths)
    assert server.bodies[-1]["messages"][0]["role"] == "user"
    assert res.server["prompt_overhead_tokens"] == 2.0
    r = res.requests.set_index("request_id")
    # the role chunk is not a token; 12 tokens = 10 words + the 2 of the template
    assert r["tokens_streamed"].tolist() == [4, 2]
    assert r["tokens_in"].tolist() == [12, 6]
    assert len(server.bodies[-2]["messages"][0]["content"].split()) == 10


def test_unreachable_server_and_unknown_model_are_one_line_errors() -> None:
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(InputError, match="cannot reach the server.*ConnectError"):
        lt.loadtest(
            URL,
            request_table([4], [2]),
            model="m",
            concurrencies=[1],
            transport=httpx.MockTransport(refuse),
            progress=False,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="not found"):
            run(FakeServer(), request_table([4], [2]), model="other")
    assert any("lists the models" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"rates": [0.0]}, "rates"),
        ({"rates": [math.inf]}, "rates"),
        ({"concurrencies": [0]}, "concurrencies"),
        ({"concurrencies": [1.5]}, "concurrencies"),
        ({"concurrencies": [1], "duration_s": -1}, "duration_s"),
        ({"concurrencies": [1], "timeout_s": 0}, "timeout_s"),
        ({"concurrencies": [1], "max_requests": 0}, "max_requests"),
        ({"rates": [1.0], "arrivals": "uniform"}, "arrivals"),
        ({"rates": [1.0], "arrivals": "trace"}, "arrival_s"),
        ({"concurrencies": [1], "output": "out.parquet"}, None),
        ({"concurrencies": [1], "ignore_eos": "yes"}, "ignore_eos"),
        ({}, "rates"),
    ],
)
def test_bad_options_are_input_errors(kw, field) -> None:
    with pytest.raises(InputError) as err:
        lt.loadtest(URL, request_table([4], [2]), model="m", transport=FakeServer().transport, **kw)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
        ("http://[::1]:9/v1/completions", "http://[::1]:9/v1"),
        ("https://host/serve/v1/chat/completions", "https://host/serve/v1"),
    ],
)
def test_api_base(url, base) -> None:
    assert lt.api_base(url) == base


@pytest.mark.parametrize("url", ["", "127.0.0.1:8000", "ftp://x", "http://", None])
def test_api_base_rejects(url) -> None:
    with pytest.raises(InputError, match="http"):
        lt.api_base(url)


# ------------------------------------------------------------------------- failures counted


def test_errors_timeouts_and_dropped_streams_are_counted_not_raised() -> None:
    faults = {
        3: "http500",
        4: "error_event",
        5: "drop",
        6: "reset",
        7: "hang",
        8: "bad_json",
        9: "short",
        10: "multi",
        11: "no_usage",
    }
    server = FakeServer(faults=faults)
    gens = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    res = run(server, request_table([4] * len(gens), gens), concurrencies=[3], timeout_s=1.0)
    r = res.requests.set_index("gen_len")
    assert r.loc[2, "status"] == "ok"
    assert r.loc[3, "status"] == "error" and r.loc[3, "error"] == "HTTP 500: engine crashed"
    assert r.loc[3, "http_status"] == 500
    assert r.loc[4, "status"] == "error" and "CB worker died" in r.loc[4, "error"]
    assert r.loc[5, "status"] == "dropped"
    assert r.loc[6, "status"] == "dropped" and "RemoteProtocolError" in r.loc[6, "error"]
    assert r.loc[7, "status"] == "timeout" and "1 s" in r.loc[7, "error"]
    assert r.loc[7, "finish_ms"] - r.loc[7, "send_ms"] == pytest.approx(1000, abs=500)
    assert r.loc[8, "status"] == "error" and "malformed event" in r.loc[8, "error"]
    assert r.loc[9, "status"] == "ok" and r.loc[9, "tokens_out"] == 8
    assert r.loc[10, "tokens_streamed"] == 5 and r.loc[10, "tokens_out"] == 10
    assert r.loc[11, "status"] == "ok" and np.isnan(r.loc[11, "usage_completion_tokens"])
    assert r.loc[11, "tokens_out"] == 11  # the streamed count when there is no usage
    lv = res.levels.iloc[0]
    assert lv["n_requests"] == 10
    assert lv["n_completed"] == 4  # gen 2, 9, 10, 11
    assert lv["n_errors"] == 3 and lv["n_timeouts"] == 1 and lv["n_dropped"] == 2
    assert lv["n_short"] == 1 and lv["n_token_mismatch"] == 1
    assert lv["throughput_rps"] == pytest.approx(4 / lv["duration_s"])
    assert lv["output_tokens_per_s"] == pytest.approx((2 + 8 + 10 + 11) / lv["duration_s"])
    failed = res.requests[res.requests["status"] != "ok"]
    assert failed["ttft_ms"].isna().all() and failed["latency_ms"].isna().all()


# --------------------------------------------------------------------------------- the loops


def test_open_loop_sends_at_the_simulators_arrival_times_within_the_duration() -> None:
    server = FakeServer()
    n = 40
    res = run(server, request_table([4] * n, [2] * n), rates=[50.0], duration_s=0.3, seed=7)
    expected = draw_arrivals(n, 50.0, seed=7)
    kept = expected[expected < 0.3]
    r = res.requests
    assert len(r) == len(kept) < n
    np.testing.assert_allclose(np.sort(r["arrival_ms"].to_numpy()), kept * 1e3)
    assert (r["send_ms"] >= r["arrival_ms"] - 1e-6).all()
    assert res.levels["send_lag_p99_ms"].iloc[0] < 250
    # the level replays into the simulator with the same requests and their send times
    replay = res.replay_requests("rate", 50.0)
    assert replay["request_id"].tolist() == [f"r{i}" for i in range(len(kept))]
    np.testing.assert_allclose(replay["arrival_s"], r.sort_values("send_ms")["send_ms"] / 1e3)
    sim = simulate(replay, "continuous", step_time=LinearStepTime(5.0, 0.01), kv_blocks=256)
    assert len(sim.requests) == len(kept)
    with pytest.raises(InputError, match="no level"):
        res.replay_requests("rate", 3.0)


def test_trace_arrivals_are_rescaled_to_each_rate_and_max_requests_caps_a_level() -> None:
    df = request_table([4] * 5, [2] * 5, arrival_s=[0.0, 0.5, 1.0, 1.5, 2.0])  # 2 requests/s
    res = run(FakeServer(), df, rates=[20.0, 40.0], arrivals="trace", max_requests=4)
    for rate in (20.0, 40.0):
        part = res.requests[res.requests["level"] == rate]
        # 4 requests: native gaps of 0.5 s become 0.5 * 2 / rate
        np.testing.assert_allclose(part["arrival_ms"], np.arange(4) * 0.5 * 2 / rate * 1e3)
    with pytest.raises(InputError, match="all equal"):
        run(
            FakeServer(),
            request_table([4, 4], [2, 2], arrival_s=[1.0, 1.0]),
            rates=[1.0],
            arrivals="trace",
        )


def test_closed_loop_keeps_at_most_c_requests_in_flight() -> None:
    server = FakeServer(step_s=0.01)
    n = 12
    res = run(server, request_table([4] * n, [4] * n), concurrencies=[1, 3])
    for c in (1, 3):
        r = res.requests[res.requests["level"] == c]
        assert len(r) == n
        send = r["send_ms"].to_numpy()
        finish = r["finish_ms"].to_numpy()
        events = np.r_[send, finish]
        step = np.r_[np.ones(n), -np.ones(n)]
        order = np.lexsort((step, events))  # a finish before a send at the same instant
        assert np.cumsum(step[order]).max() <= c
        lv = res.levels[res.levels["level"] == c].iloc[0]
        assert 0 < lv["littles_L"] <= c + 1e-9
        if c == 1:  # one client: every request starts after the previous one ended
            s = r.sort_values("send_ms")
            assert (s["send_ms"].to_numpy()[1:] >= s["finish_ms"].to_numpy()[:-1]).all()


def test_a_closed_level_stops_sending_after_its_duration() -> None:
    server = FakeServer(step_s=0.05)
    res = run(server, request_table([4] * 50, [3] * 50), concurrencies=[1], duration_s=0.25)
    r = res.requests
    assert 1 <= len(r) < 50
    assert (r["send_ms"] < 250).all()


def test_times_are_monotone_per_request() -> None:
    res = run(
        FakeServer(step_s=0.002), request_table([4] * 6, [5] * 6), concurrencies=[2], rates=[100.0]
    )
    for _, rec in res.requests.iterrows():
        t = np.asarray(rec["token_ms"])
        assert rec["arrival_ms"] <= rec["send_ms"] <= rec["first_token_ms"]
        assert t[0] == rec["first_token_ms"] and t[-1] == rec["last_token_ms"]
        assert (np.diff(t) >= 0).all()
        assert rec["last_token_ms"] <= rec["finish_ms"]
        assert rec["ttft_ms"] <= rec["latency_ms"]


def test_ctrl_c_keeps_the_finished_levels_and_writes_them(tmp_path) -> None:
    out = tmp_path / "run.csv"
    on_disk = []

    # the 1st request of the 2nd level (bodies: 2 warm-ups, 2 of level 1, then level 2)
    def interrupt(k: int, body: dict) -> None:
        if k == 5:
            on_disk.append(lt.load_loadtest(out).levels["level"].tolist())  # written after level 1
            _thread.interrupt_main()

    server = FakeServer(step_s=0.02, on_request=interrupt)
    with pytest.warns(UserWarning, match="interrupted: 1 of 3 load levels finished"):
        res = run(server, request_table([4, 4], [10, 10]), concurrencies=[1, 2, 4], output=out)
    assert on_disk == [[1.0]]
    assert res.interrupted
    assert res.levels["level"].tolist() == [1.0]
    back = lt.load_loadtest(out)
    assert back.levels["level"].tolist() == [1.0]
    assert back.interrupted  # rewritten at the end, marked as an interrupted sweep
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run.csv",
        "run.json",
        "run.requests.jsonl",
    ]


def test_save_and_load_round_trip(tmp_path) -> None:
    res = run(FakeServer(step_s=0.001), request_table([6, 8, 5], [3, 4, 2]), concurrencies=[1, 2])
    path = res.save(tmp_path / "lt.csv")
    back = lt.load_loadtest(path)
    pd.testing.assert_frame_equal(back.levels, res.levels, check_dtype=False, rtol=1e-5)
    assert back.requests["token_ms"].map(len).tolist() == res.requests["token_ms"].map(len).tolist()
    assert back.requests["request_id"].tolist() == res.requests["request_id"].tolist()
    assert back.settings["concurrencies"] == [1, 2]
    assert back.server["tokens_per_word"] == 1.0
    meta = json.loads((tmp_path / "lt.json").read_text())
    assert meta["format"] == "batchlab loadtest 1"
    with pytest.raises(InputError, match="no such file"):
        lt.load_loadtest(tmp_path / "missing.csv")
    (tmp_path / "lt.csv").write_text("mode,level\nrate,1\n")
    with pytest.raises(InputError, match="missing column"):
        lt.load_loadtest(tmp_path / "lt.csv")


# ----------------------------------------------------------------------- aggregation by hand


def hand_records() -> pd.DataFrame:
    """Three requests at concurrency 2: two completed, one timed out."""
    rows = [
        # arrival, send, tokens at, finish, gen_len, usage, status
        (0.0, 1.0, [11.0, 15.0, 21.0], 22.0, 3, 3, "ok"),
        (0.0, 2.0, [32.0, 40.0], 50.0, 4, 2, "ok"),  # short: 2 of 4 tokens
        (22.0, 22.5, [], 100.0, 4, math.nan, "timeout"),
    ]
    recs = []
    for i, (arr, send, toks, fin, gen, usage, status) in enumerate(rows):
        recs.append(
            {
                "mode": "closed",
                "level": 2.0,
                "request_id": f"r{i}",
                "prompt_len": 10,
                "gen_len": gen,
                "prompt_words": 10,
                "arrival_ms": arr,
                "send_ms": send,
                "first_token_ms": toks[0] if toks else math.nan,
                "last_token_ms": toks[-1] if toks else math.nan,
                "finish_ms": fin,
                "tokens_in": 10.0 if status == "ok" else math.nan,
                "tokens_streamed": len(toks),
                "usage_completion_tokens": usage,
                "finish_reason": "length",
                "status": status,
                "http_status": 200,
                "error": "",
                "token_ms": toks,
            }
        )
    return lt._with_derived(pd.DataFrame(recs))


def test_aggregates_worked_by_hand() -> None:
    recs = hand_records()
    assert recs["ttft_ms"].tolist()[:2] == [11.0, 32.0]
    assert recs["tpot_ms"].tolist()[:2] == [5.0, 8.0]  # (21 - 11) / 2, (40 - 32) / 1
    assert recs["latency_ms"].tolist()[:2] == [22.0, 50.0]
    row = lt.summarize_levels(recs, policy="live").iloc[0]
    assert row["mode"] == "closed" and row["level"] == 2.0 and row["policy"] == "live"
    assert row["n_requests"] == 3 and row["n_completed"] == 2 and row["n_timeouts"] == 1
    assert row["duration_s"] == pytest.approx(0.1)  # first arrival 0 ms, last end 100 ms
    assert row["throughput_rps"] == pytest.approx(20.0)  # 2 completed / 0.1 s
    assert row["output_tokens_per_s"] == pytest.approx(50.0)  # (3 + 2) tokens / 0.1 s
    assert row["input_tokens_per_s"] == pytest.approx(200.0)  # (10 + 10) / 0.1 s
    assert row["ttft_mean_ms"] == pytest.approx(21.5)
    assert row["ttft_p50_ms"] == 11.0 and row["ttft_p99_ms"] == 32.0  # nearest rank of 2
    assert row["latency_p50_ms"] == 22.0 and row["latency_p95_ms"] == 50.0
    # ITL: gaps 4, 6 (request 0) and 8 (request 1), never 32 - 21 across requests
    assert row["itl_mean_ms"] == pytest.approx(6.0)
    assert row["itl_p50_ms"] == 6.0 and row["itl_p99_ms"] == 8.0
    assert row["n_short"] == 1 and row["n_token_mismatch"] == 0
    # in flight: 22 + 50 + 78 ms over 100 ms; completed: 2 / 100 ms × mean latency 36 ms
    assert row["littles_L"] == pytest.approx(1.5)
    assert row["littles_lambda_W"] == pytest.approx(0.72)
    assert row["send_lag_p99_ms"] == 2.0
    for col in ("queue_p99_ms", "mean_batch_size", "kv_util_peak", "preemptions", "n_steps"):
        assert np.isnan(row[col])


def test_summarize_levels_keeps_level_order_and_checks_columns() -> None:
    a = hand_records()
    b = hand_records().assign(mode="rate", level=0.5)
    out = lt.summarize_levels(pd.concat([b, a], ignore_index=True))
    assert list(zip(out["mode"], out["level"], strict=True)) == [("rate", 0.5), ("closed", 2.0)]
    with pytest.raises(InputError, match="missing column"):
        lt.summarize_levels(a.drop(columns=["token_ms"]))


def test_knees_use_the_simulators_finder() -> None:
    levels = pd.DataFrame(
        {
            "mode": ["closed"] * 4,
            "level": [1.0, 2.0, 4.0, 8.0],
            "latency_p99_ms": [100.0, 120.0, 190.0, 450.0],
        }
    )
    res = lt.LoadTestResult(levels=levels, requests=pd.DataFrame())
    assert res.knees() == {"closed": 4.0}  # 450 > 2 × 100 first at 8 clients
    assert math.isnan(res.knees(factor=5.0)["closed"])


def test_prompt_text_is_seeded_and_sized() -> None:
    a = lt.prompt_text(12, seed=3, index=5)
    assert len(a.split()) == 12 and set(a.split()) <= set(lt.PROMPT_WORDS)
    assert a == lt.prompt_text(12, seed=3, index=5)
    assert a != lt.prompt_text(12, seed=3, index=6)
    assert len(set(lt.PROMPT_WORDS)) == len(lt.PROMPT_WORDS)


# ----------------------------------------------------------------------------- GuideLLM


def guidellm_request(rid, start, first, last, end, n_in, n_out, error=None):
    return {
        "request_id": rid,
        "info": {
            "timings": {
                "targeted_start": start,
                "request_start": start + 0.001,
                "first_token_iteration": first,
                "last_token_iteration": last,
                "request_end": end,
                "token_iterations": n_out,
            },
            "error": error,
        },
        "input_metrics": {"text_tokens": n_in},
        "output_metrics": {"text_tokens": n_out},
    }


def test_read_guidellm_report_into_the_same_table(tmp_path) -> None:
    t0 = 1000.0
    report = {
        "metadata": {"version": 2, "guidellm_version": "0.8.1"},
        "benchmarks": [
            {
                "config": {
                    "strategy": {"type_": "concurrent", "streams": 2},
                    "backend": {"target": "http://127.0.0.1:1", "model": "m"},
                },
                "start_time": t0,
                "metrics": {"request_totals": {"total": 3}},
                "requests": {
                    "successful": [
                        guidellm_request("a", t0, t0 + 0.010, t0 + 0.030, t0 + 0.031, 16, 5),
                        guidellm_request("b", t0, t0 + 0.020, t0 + 0.060, t0 + 0.061, 16, 5),
                    ],
                    "errored": [
                        guidellm_request("c", t0 + 0.031, None, None, t0 + 0.040, 16, 0, "500")
                    ],
                    "incomplete": [],
                },
            },
            {
                "config": {"strategy": {"type_": "poisson", "rate": 4.0}},
                "start_time": t0 + 10,
                "requests": {
                    "successful": [
                        guidellm_request("d", t0 + 10, t0 + 10.01, t0 + 10.05, t0 + 10.1, 8, 3)
                    ]
                },
            },
        ],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    res = lt.read_guidellm_report(path)
    assert tuple(res.levels.columns) == lt.LEVEL_COLUMNS
    assert list(zip(res.levels["mode"], res.levels["level"], strict=True)) == [
        ("closed", 2.0),
        ("rate", 4.0),
    ]
    first = res.levels.iloc[0]
    assert first["policy"] == "guidellm"
    assert first["n_requests"] == 3 and first["n_completed"] == 2 and first["n_errors"] == 1
    # closed loop: from the send (request_start, 1 ms after the targeted start) to the last end
    assert first["duration_s"] == pytest.approx(0.060)
    assert first["ttft_p50_ms"] == pytest.approx(9.0)
    assert first["ttft_p99_ms"] == pytest.approx(19.0)
    assert first["tpot_p99_ms"] == pytest.approx(10.0)  # (60 - 20) / 4
    # open loop: from the scheduled (targeted) start, as the built-in client does
    assert res.levels.iloc[1]["ttft_p50_ms"] == pytest.approx(10.0)
    assert np.isnan(first["itl_p50_ms"])  # no per-token times in a GuideLLM report
    assert res.server["model"] == "m"
    path.write_text("{}")
    with pytest.raises(InputError, match="not a GuideLLM report"):
        lt.read_guidellm_report(path)
    with pytest.raises(InputError, match="no such GuideLLM report"):
        lt.read_guidellm_report(tmp_path / "none.json")
