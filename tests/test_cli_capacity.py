"""The ``batchlab capacity`` subcommand: the answer against the library, the table written,
JSON, exit 1 when nothing meets the SLO, and exit 2 with one line for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from builders import run_cli as run

from batchlab.capacity import PriceTable, capacity_search
from batchlab.slo import SLO
from batchlab.workload import write_requests


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory, lognormal_requests):
    df = lognormal_requests(100, seed=4, prompt_median=500, gen_median=100)
    df["arrival_s"] = np.cumsum(np.random.default_rng(3).exponential(1 / 40.0, len(df)))
    path = tmp_path_factory.mktemp("cap") / "t.jsonl"
    write_requests(df, path)
    return path, df


ARGS = [
    "--gpus",
    "a100-80gb,h100-sxm",
    "--routers",
    "round-robin,least-tokens",
    "--traffic",
    "1,2",
    "--ttft-p99-ms",
    "400",
    "--tpot-p99-ms",
    "60",
    "--prices",
    "docs/gpu_prices_example.csv",
    "--max-replicas",
    "16",
    "--no-progress",
]


def test_capacity_text_and_table(trace_file, tmp_path, capsys):
    path, df = trace_file
    out_csv = tmp_path / "plan.csv"
    code, out, err = run(capsys, "capacity", path, *ARGS, "--output", out_csv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: 100 requests; SLO p99 TTFT ≤ 400 ms, p99 TPOT ≤ 60 ms")
    assert "NOT calibrated" in lines[0] or "calibrated" in lines[0]
    assert "Mercatus" in lines[0] and "(2026-05)" in lines[0]
    assert "cheapest configuration meeting the SLO, per traffic level:" in out
    assert "cost (USD/hour)" in out and "TTFT p99 (ms)" in out
    # the table written is the library's
    written = pd.read_csv(out_csv)
    expected = capacity_search(
        df,
        SLO(ttft_p99_ms=400, tpot_p99_ms=60),
        {
            "gpu": ["a100-80gb", "h100-sxm"],
            "model": ["llama-3-8b"],
            "router": ["round-robin", "least-tokens"],
        },
        traffic=[1.0, 2.0],
        prices=PriceTable.read("docs/gpu_prices_example.csv"),
        max_replicas=16,
        progress=False,
    )
    assert written["replicas"].tolist() == expected.table["replicas"].tolist()
    np.testing.assert_allclose(written["ttft_p99_ms"], expected.table["ttft_p99_ms"])
    assert written["cost_per_hour"].tolist() == pytest.approx(
        expected.table["cost_per_hour"].tolist()
    )


def test_capacity_json(trace_file, capsys):
    path, _ = trace_file
    code, out, err = run(capsys, "capacity", path, *ARGS, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["slo"] == {"ttft_p99_ms": 400.0, "tpot_p99_ms": 60.0}
    assert doc["prices"]["currency"] == "USD" and doc["prices"]["date"] == "2026-05"
    assert len(doc["table"]) == 8 and len(doc["cheapest"]) == 2
    assert {r["traffic"] for r in doc["cheapest"]} == {"trace ×1", "trace ×2"}
    assert all(isinstance(s, str) for s in doc["step_time"])


def test_nothing_meets_the_slo_exits_1(trace_file, capsys):
    path, _ = trace_file
    code, out, err = run(
        capsys, "capacity", path, "--gpus", "a100-80gb", "--ttft-p99-ms", "1",
        "--max-replicas", "4", "--no-progress",
    )  # fmt: skip
    assert code == 1
    assert "limit not met: no configuration meets the SLO" in err
    assert "up to 4 replicas" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give at least one SLO limit"),
        (["--ttft-p99-ms", "-3"], "--ttft-p99-ms"),
        (["--ttft-p99-ms", "100", "--gpus", "a100-80gb,tpu"], "unknown GPU 'tpu'"),
        (["--ttft-p99-ms", "100", "--routers", "nearest"], "unknown router 'nearest'"),
        (["--ttft-p99-ms", "100", "--max-num-seqs", "8,x"], "--max-num-seqs"),
        (["--ttft-p99-ms", "100", "--chunked-prefill", "maybe"], "--chunked-prefill"),
        (["--ttft-p99-ms", "100", "--traffic", "0"], "--traffic"),
        (
            ["--ttft-p99-ms", "100", "--gpus", "l4", "--prices", "docs/gpu_prices_example.csv"],
            "no price for 'l4'",
        ),
        (["--ttft-p99-ms", "100", "--prices", "nope.csv"], "no such price table"),
        (["--ttft-p99-ms", "100", "--max-num-batched-tokens", "64"], "max_num_batched_tokens"),
        (["--ttft-p99-ms", "100", "--max-replicas", "0"], "--max-replicas"),
        (["--ttft-p99-ms", "100", "--latency", "p99"], "latency"),
    ],
)
def test_bad_input_is_one_line_exit_2(trace_file, capsys, extra, message):
    path, _ = trace_file
    code, out, err = run(capsys, "capacity", path, "--no-progress", "--max-replicas", "2", *extra)
    assert code == 2, (out, err)
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_price_file_names_its_line(trace_file, tmp_path, capsys):
    path, _ = trace_file
    prices = tmp_path / "prices.csv"
    prices.write_text("gpu,price_per_gpu_hour\nh100-sxm,three\n")
    code, _, err = run(
        capsys, "capacity", path, "--ttft-p99-ms", "100", "--gpus", "h100-sxm",
        "--prices", prices, "--no-progress",
    )  # fmt: skip
    assert code == 2
    assert f"{prices}:2" in err and "price_per_gpu_hour" in err and err.count("\n") == 1


@pytest.mark.slow
def test_workers_give_the_same_table(trace_file, tmp_path, capsys):
    path, _ = trace_file
    serial, parallel = tmp_path / "serial.csv", tmp_path / "parallel.csv"
    assert run(capsys, "capacity", path, *ARGS, "--output", serial)[0] == 0
    assert run(capsys, "capacity", path, *ARGS, "--output", parallel, "--workers", "2")[0] == 0
    assert serial.read_text() == parallel.read_text()
