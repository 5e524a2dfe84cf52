"""The ``batchlab simulate`` subcommand: inputs (request files, trace names, slices), policy
options, open/closed loops, JSON and text output, and exit codes."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from builders import run_cli as run
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import datasets
from batchlab.cli import main
from batchlab.roofline import step_time_ms
from batchlab.simulate import simulate
from batchlab.workload import lognormal_workload, write_requests

ROOT = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=10, deadline=None)


def same_summary(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert got[key] is None, key  # NaN is written as null
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module")
def workload_file(tmp_path_factory):
    df = lognormal_workload(150, seed=3, prompt_median=300, gen_median=40, max_gen_len=300)
    path = tmp_path_factory.mktemp("sim") / "w.jsonl"
    write_requests(df, path)
    return path, df


def test_one_request_hand_worked(request_table, tmp_path, capsys):
    # One request, prompt 100 tokens, 3 output tokens, alone in a static batch of 1: a prefill
    # of 100 tokens (emits token 1), then decode steps at context 101 and 102 (tokens 2, 3).
    # Llama-2-7B on an H100 is memory-bound at batch 1: a decode step at context L moves the
    # weights (6,738,415,616 params x 2 B = 13,476,831,232 B) and L x 524,288 B of KV cache,
    # at 3.35e12 B/s: L = 101 gives (13,476,831,232 + 52,953,088) / 3.35e12 s = 4.03874 ms
    # (the data-sheet ideal, --ideal).
    path = tmp_path / "one.jsonl"
    write_requests(request_table([100], [3], [0.0]), path)
    argv = ["simulate", path, "--policy", "static", "--batch-size", 1, "--json"]
    code, out, err = run(capsys, *argv, "--ideal")
    assert code == 0, err
    data = json.loads(out)
    decode_101 = (13_476_831_232 + 101 * 524_288) / 3.35e12 * 1e3
    ideal = {"calibrated": False}
    assert step_time_ms("llama-2-7b", "h100-sxm", context_lens=[101], **ideal) == pytest.approx(
        decode_101
    )
    expected = (
        step_time_ms("llama-2-7b", "h100-sxm", prefill_tokens=100, **ideal)
        + decode_101
        + step_time_ms("llama-2-7b", "h100-sxm", context_lens=[102], **ideal)
    )
    s = data["summary"]
    assert s["latency_p50_ms"] == pytest.approx(expected, rel=1e-12)
    assert s["latency_p99_ms"] == pytest.approx(expected, rel=1e-12)
    assert s["n_requests"] == 1 and data["n_requests"] == 1
    assert data["policy"] == "static" and data["options"]["batch_size"] == 1
    assert data["mode"] == "trace"
    # KV budget: floor((0.9 x 80 GiB - 13,476,831,232 B) / 524,288 B) = 121,750 tokens, in
    # blocks of 16: 7,609 blocks (121,744 tokens)
    assert data["kv_blocks"] == 7_609 and data["kv_tokens"] == 121_744
    assert data["step_time"] == "RooflineStepTime('llama-2-7b', 'h100-sxm', calibrated=False)"
    # by default the calibrated kernels: the same three steps, each slower than the ideal
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    data = json.loads(out)
    calibrated = sum(
        step_time_ms("llama-2-7b", "h100-sxm", **kw)
        for kw in ({"prefill_tokens": 100}, {"context_lens": [101]}, {"context_lens": [102]})
    )
    assert data["summary"]["latency_p50_ms"] == pytest.approx(calibrated, rel=1e-12)
    assert 1.3 * expected < calibrated < 2.0 * expected
    assert data["step_time"] == "RooflineStepTime('llama-2-7b', 'h100-sxm')"


def test_json_matches_the_library_open_loop(workload_file, capsys):
    path, df = workload_file
    code, out, err = run(
        capsys,
        "simulate",
        path,
        "--policy",
        "continuous",
        "--max-num-seqs",
        4,
        "--rate",
        6,
        "--seed",
        5,
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    expected = simulate(df, "continuous", max_num_seqs=4, rate=6.0, seed=5).summary()
    same_summary(data["summary"], expected)
    assert data["mode"] == "rate" and data["options"]["max_num_seqs"] == 4


def test_closed_loop_and_chunked_prefill(workload_file, capsys):
    path, df = workload_file
    argv = ["simulate", path, "--concurrency", 3, "--think-time-ms", 10, "--chunked-prefill"]
    code, out, err = run(capsys, *argv, "--chunk-size", 128, "--json")
    assert code == 0, err
    data = json.loads(out)
    expected = simulate(
        df, "continuous", concurrency=3, think_time_ms=10.0, chunked_prefill=True, chunk_size=128
    ).summary()
    same_summary(data["summary"], expected)
    assert data["mode"] == "closed" and data["options"]["chunked_prefill"] is True


def test_dynamic_with_burstiness_and_kv_budget(workload_file, capsys):
    path, df = workload_file
    code, out, err = run(
        capsys,
        "simulate",
        path,
        "--policy",
        "dynamic",
        "--max-batch-size",
        8,
        "--max-wait-ms",
        20,
        "--rate",
        4,
        "--burstiness",
        3,
        "--kv-blocks",
        400,
        "--block-size",
        32,
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    expected = simulate(
        df,
        "dynamic",
        max_batch_size=8,
        max_wait_ms=20.0,
        rate=4.0,
        burstiness=3.0,
        kv_blocks=400,
        block_size=32,
    ).summary()
    same_summary(data["summary"], expected)
    assert data["kv_blocks"] == 400 and data["kv_tokens"] == 400 * 32


def test_text_output_has_header_and_every_metric(workload_file, capsys):
    path, df = workload_file
    code, out, err = run(capsys, "simulate", path, "--rate", 2, "--model", "llama-3-8b")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: 150 requests, Poisson arrivals at 2 requests/s")
    assert "continuous" in lines[0] and "llama-3-8b / h100-sxm" in lines[0]
    assert lines[1].startswith("KV cache:") and "blocks of 16 tokens" in lines[1]
    summary = simulate(df, "continuous", model="llama-3-8b", rate=2.0).summary()
    body = "\n".join(lines[2:])
    for key in summary:
        if key not in ("policy", "mode"):
            assert key in body, key
    # one row per metric with its unit, in the formats of batchlab.tables
    p99 = next(line.split() for line in lines if line.startswith("latency_p99_ms "))
    assert p99[1] == "ms" and float(p99[2].replace(",", "")) == pytest.approx(
        summary["latency_p99_ms"], rel=1e-3
    )
    assert "max_num_seqs=" not in lines[0] and "--max-num-seqs 256" in lines[0]


def test_max_requests_takes_the_first_arrivals(request_table, tmp_path, capsys):
    # arrivals out of file order: the first 2 by arrival are r2 (0 s) and r0 (1 s)
    df = request_table([50, 60, 70, 80], [5, 6, 7, 8], [1.0, 3.0, 0.0, 2.0])
    path = tmp_path / "t.csv"
    write_requests(df, path)
    code, out, err = run(capsys, "simulate", path, "--max-requests", 2, "--json")
    assert code == 0, err
    data = json.loads(out)
    expected = simulate(df.iloc[[2, 0]], "continuous").summary()
    same_summary(data["summary"], expected)
    code, out, err = run(capsys, "simulate", path, "--first-s", 1.5, "--json")
    assert code == 0, err
    assert json.loads(out)["n_requests"] == 2  # r2 (0 s) and r0 (1 s)


def test_trace_name_as_input(capsys):
    try:
        trace = datasets.load_trace("azure-conv-2023", download=False)
    except Exception as err:  # the trace is not available offline
        pytest.skip(f"azure-conv-2023 not available: {err}")
    code, out, err = run(capsys, "simulate", "azure-conv-2023", "--first-s", 30, "--json")
    assert code == 0, err
    data = json.loads(out)
    head = trace[trace["arrival_s"] < 30]
    assert data["n_requests"] == len(head) > 0
    same_summary(data["summary"], simulate(head, "continuous").summary())


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--policy", "fifo"], ["fifo", "continuous"]),
        (["--max-wait-ms", "5"], ["--max-wait-ms", "continuous", "--max-num-seqs"]),
        (["--policy", "static", "--chunked-prefill"], ["--chunked-prefill", "static"]),
        (["--burstiness", "2"], ["--burstiness", "--rate"]),
        (["--think-time-ms", "2"], ["--think-time-ms", "--concurrency"]),
        (["--kv-blocks", "2", "--rate", "1"], ["--kv-blocks", "request_id"]),
        (["--first-s", "0"], ["--first-s"]),
        (["--max-requests", "0"], ["--max-requests"]),
        (["--rate", "-1"], ["--rate"]),
        (["--model", "gpt-5"], ["unknown model", "llama-2-7b"]),
        (["--gpu", "tpu"], ["unknown GPU", "h100-sxm", "--gpu"]),
        (
            ["--chunk-size", "64", "--no-chunked-prefill"],
            ["--chunk-size needs chunked prefill, but --no-chunked-prefill was given"],
        ),
        (
            ["--max-num-batched-tokens", "100", "--rate", "1"],
            ["field '--max-num-batched-tokens'", "exceeds --max-num-batched-tokens (100)"],
        ),
    ],
)
def test_input_errors_exit_2_with_one_line(workload_file, capsys, argv, fragments):
    path, _ = workload_file
    code, out, err = run(capsys, "simulate", path, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("batchlab: error:") and err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    # the command line's words, not Python's (issue 12, first hour 8): no "rate=", no
    # "field 'kv_blocks'", no "pass a DeviceSpec"
    assert "Spec" not in err and not re.search(r"\w=", err), err
    assert not re.search(r"field '[a-z_]+'", err), err


def test_file_and_arrival_errors(request_table, tmp_path, capsys):
    code, out, err = run(capsys, "simulate", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in err and "azure-conv-2023" in err
    no_times = tmp_path / "n.jsonl"
    write_requests(request_table([10, 20], [2, 3]), no_times)
    code, out, err = run(capsys, "simulate", no_times)
    assert code == 2 and "arrival_s" in err and "--rate" not in out
    code, out, err = run(capsys, "simulate", no_times, "--first-s", 5)
    assert code == 2 and "arrival_s" in err
    assert run(capsys, "simulate", no_times, "--rate", 1)[0] == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "a", "prompt_len": 5, "gen_len": 0}\n')
    code, out, err = run(capsys, "simulate", bad, "--rate", 1)
    assert code == 2 and f"{bad}:1" in err and "gen_len" in err


def test_rate_and_concurrency_are_exclusive(workload_file):
    path, _ = workload_file
    assert main(["simulate", str(path), "--rate", "1", "--concurrency", "2"]) == 2


@FAST
@given(
    prompt=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    data=st.data(),
    policy=st.sampled_from(["static", "dynamic", "adaptive", "continuous"]),
    rate=st.floats(0.5, 50.0),
)
def test_cli_equals_library_on_random_tables(request_table, prompt, data, policy, rate):
    n = len(prompt)
    gen = data.draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    df = request_table(prompt, gen)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.parquet"
        write_requests(df, path)
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["simulate", str(path), "--policy", policy, "--rate", str(rate), "--json"])
    assert code == 0
    got = json.loads(out.getvalue())
    same_summary(got["summary"], simulate(df, policy, rate=float(rate)).summary())


@pytest.mark.slow
def test_console_script(request_table, tmp_path):
    exe = Path(sys.executable).with_name("batchlab")
    path = tmp_path / "w.jsonl"
    write_requests(request_table([100, 200, 300], [10, 20, 30], [0.0, 0.1, 0.2]), path)
    proc = subprocess.run(
        [exe, "simulate", path, "--policy", "dynamic", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["n_requests"] == 3
    proc = subprocess.run(
        [exe, "simulate", path, "--policy", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_policy_options_are_generated_from_the_declared_knobs(capsys):
    from batchlab.cli import build_parser
    from batchlab.simulate import POLICIES

    sub = build_parser()._subparsers._group_actions[0].choices["simulate"]
    flags = {s for a in sub._actions for s in a.option_strings}
    for cls in POLICIES.values():
        for knob in cls.knobs:
            assert "--" + knob.name.replace("_", "-") in flags, knob.name
    help_text = sub.format_help()
    assert "iteration-level" in help_text and "padded" in help_text


def test_a_registered_policy_gets_its_options_on_the_command_line(workload_file, capsys):
    path, _ = workload_file
    from batchlab.simulate import POLICIES, ContinuousPolicy, Knob, register_policy

    @register_policy
    class Capped(ContinuousPolicy):
        """Continuous batching with a hard cap on admissions per step."""

        name = "capped-test"
        knobs = (*ContinuousPolicy.knobs, Knob("cap", int, 4, "admissions per step", min_val=1))

    try:
        code, out, err = run(
            capsys, "simulate", path, "--policy", "capped-test", "--cap", 3, "--rate", 5
        )
        assert code == 0, err
        assert "--cap 3" in out and "cap=3" not in out
        # a knob of another policy is refused by the policy, naming the option
        code, _, err = run(capsys, "simulate", path, "--policy", "static", "--cap", 3, "--rate", 5)
        assert code == 2 and "cap" in err and "valid options" in err
    finally:
        del POLICIES["capped-test"]


def test_overload_is_a_warning_on_stderr(capsys):
    """Regression (issue 12, first hour 8): ``simulate`` said nothing when the policy could not
    keep up with the trace (p99 then grows with the run length)."""
    code, out, err = run(
        capsys, "simulate", "azure-conv-2023", "--first-s", 300, "--policy", "static"
    )
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("batchlab: warning:")]
    assert len(warning) == 1 and "overloaded: offered 4." in warning[0], err
    offered, served = map(
        float, re.search(r"offered ([\d.]+) req/s, served ([\d.]+) req/s", warning[0]).groups()
    )
    assert served < 0.8 * offered, warning
    assert re.search(r"^overloaded\s+yes$", out, re.MULTILINE), out
    code, out, err = run(capsys, "simulate", "azure-conv-2023", "--first-s", 300)
    assert code == 0 and "warning" not in err and re.search(r"^overloaded\s+no$", out, re.M)
    code, out, _ = run(
        capsys, "simulate", "azure-conv-2023", "--first-s", 300, "--policy", "static", "--json"
    )
    data = json.loads(out)
    assert data["summary"]["overloaded"] is True and data["warnings"][0].startswith("overloaded:")
