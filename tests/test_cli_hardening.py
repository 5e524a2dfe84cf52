"""Issue 12, bad input, faults and limits, on the command line: every size-like option
bounded, overflow named, writes all or nothing, signals, broken pipes, the plan sidecar and
trace names everywhere. Each test fails on the code before the fix."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import never_policy
from builders import run_cli as run

from batchlab import cli
from batchlab.cli import build_parser, main
from batchlab.errors import InputError
from batchlab.evaluate import evaluate
from batchlab.plan import plan_meta_path, read_plan, read_plan_meta
from batchlab.workload import lognormal_workload, read_requests, with_arrivals, write_requests

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("batchlab") and "Traceback" not in err


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def small(tmp_path):
    """Two small request files (with arrivals) in tmp_path."""
    a = with_arrivals(lognormal_workload(40, seed=1, id_prefix="a"), rate_per_s=5, seed=1)
    b = lognormal_workload(30, seed=2, prompt_median=900, id_prefix="b")
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    write_requests(a, paths[0])
    write_requests(b, paths[1])
    return paths


# ---------------------------------------------------------------------------------------------
# bad input 1: every size-like option is bounded (or clamped with a message)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _number_actions():
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if getattr(action.type, "kind", None) in (int, float):
                yield command, action


#: number options that size no work, with why: a value past any bound is harmless there.
UNBOUNDED_ON_PURPOSE = {
    ("plan", "--max-shapes"): "clamped, with a note, to the distinct lengths and MAX_SHAPES",
    ("verify", "--max-shapes"): "a cap compared with a count",
    ("simulate", "--concurrency"): "clamped, with a note, to the number of requests",
    ("simulate", "--first-s"): "a filter on arrival times",
    ("simulate", "--max-requests"): "a slice of the table",
    ("loadtest", "--max-requests"): "a slice of the table",
    ("capacity", "--first-s"): "a filter on arrival times",
    ("capacity", "--max-requests"): "a slice of the table",
    ("measure", "--latency-limit-ms"): "a threshold on measured values",
    ("capacity", "--ttft-p50-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--ttft-p90-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--ttft-p99-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--tpot-p50-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--tpot-p90-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--tpot-p99-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--e2e-p50-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--e2e-p90-ms"): "an SLO limit compared with simulated latencies",
    ("capacity", "--e2e-p99-ms"): "an SLO limit compared with simulated latencies",
}


def test_every_number_option_of_every_command_has_a_range_checked_while_parsing():
    """A number option parsed by a bare int/float (no range) is what let --max-shapes 1000000
    or --granularity 9223372036854775808 through: every one goes through number_option."""
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if action.type in (int, float):
                pytest.fail(f"batchlab {command} {action.option_strings}: a bare {action.type}")
    seen = list(_number_actions())
    assert len(seen) > 40
    for command, action in seen:
        flag = action.option_strings[0]
        if (command, flag) in UNBOUNDED_ON_PURPOSE:
            continue
        if action.dest.startswith("policy_"):
            # a policy's limits (batch sizes, tokens per step, waits) size no work: the run is
            # bounded by its requests; they still refuse what int64 cannot hold (below)
            continue
        assert action.type.max_val is not None and math.isfinite(action.type.max_val), (
            f"batchlab {command} {flag} has no upper bound"
        )


HOSTILE = ["0", "-1", "nan", "inf", "-inf", "1e400", "9" * 30, "9223372036854775808", "abc", ""]


@pytest.mark.parametrize(
    ("command", "flag"), [(c, a.option_strings[0]) for c, a in _number_actions()]
)
def test_out_of_range_values_are_usage_errors_naming_the_option(command, flag, capsys, tmp_path):
    sub = _subparsers()[command]
    action = next(a for a in sub._actions if flag in a.option_strings)
    parse = action.type
    too_big = []
    if parse.max_val is not None and math.isfinite(parse.max_val):
        too_big = [repr(parse.max_val * 2 + 1)]
    for text in [*HOSTILE, *too_big]:
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as err:
            assert "\n" not in str(err) and len(str(err)) < 200
            continue
        # accepted: a number in range: a whole number int64 holds, a finite float (or inf
        # where it means "never", as --max-wait-ms does)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if parse.kind is int:
                assert type(v) is int and abs(v) < 2**63, (command, flag, text, v)
            else:
                assert math.isfinite(v) or (parse.allow_inf and v == math.inf), (flag, text)
            if parse.max_val is not None and math.isfinite(v):
                assert v <= parse.max_val
    # and through main: exit 2, one line naming the option, nothing written
    argv = {
        "profile": ["profile", "x.jsonl"],
        "plan": ["plan", "x.jsonl", "-o", tmp_path / "p.jsonl"],
        "verify": ["verify", "x.jsonl", "p.jsonl"],
        "evaluate": ["evaluate", "x.jsonl", "p.jsonl"],
        "simulate": ["simulate", "x.jsonl"],
        "measure": ["measure", "--no-save"],
        "loadtest": ["loadtest", "http://127.0.0.1:9", "x.jsonl", "--model", "m"],
        "replay": ["replay", "lt.csv", "--step-time", "steps.csv", "-o", tmp_path / "c.csv"],
        "serve-tiny": ["serve-tiny"],
        "capacity": ["capacity", "x.jsonl", "--ttft-p99-ms", "2000"],
    }[command]
    for text in ["nan"] if parse.allow_inf else ["1e400", "nan"]:
        code, out, err = run(capsys, *argv, flag, text)
        assert code == 2 and one_line_error(err) and flag in err
    assert files_of(tmp_path) == []


def test_max_shapes_far_beyond_the_lengths_is_clamped_with_a_note(tmp_path, capsys):
    path = tmp_path / "w.jsonl"
    write_requests(lognormal_workload(40, seed=3), path)
    code, out, err = run(
        capsys, "plan", path, "-o", tmp_path / "p.jsonl", "--max-shapes", 1_000_000, "--json"
    )
    assert code == 0
    assert "distinct aligned prompt lengths" in err
    assert json.loads(out)["max_shapes"] <= 40
    code, out, err = run(
        capsys,
        "plan",
        path,
        "-o",
        tmp_path / "q.jsonl",
        "--max-shapes",
        1000,
        "--granularity",
        1,
        "--json",
        "--exact",
        "never",
    )
    assert code == 0 and json.loads(out)["max_shapes"] <= 64


# ---------------------------------------------------------------------------------------------
# bad input 4: overflow named, before any work


def test_overflowing_options_and_limits_name_the_option_or_field(small, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    code, _, err = run(capsys, "plan", small[0], "-o", out, "--granularity", 2**63)
    assert code == 2 and "--granularity" in err and one_line_error(err)
    code, _, err = run(capsys, "plan", small[0], "-o", out, "--granularity", 3_000_000_000)
    assert code == 2 and "--granularity" in err and one_line_error(err)
    limits = tmp_path / "limits.toml"
    limits.write_text("[a]\nmax_cost = 1" + "0" * 400 + "\n")
    code, _, err = run(capsys, "plan", small[0], "-o", out, "--limits", limits)
    assert code == 2 and "max_cost" in err and str(limits) in err and one_line_error(err)
    assert not out.exists()


def test_a_granularity_that_aligns_a_prompt_past_max_length_is_refused_before_planning(
    tmp_path, capsys
):
    path = tmp_path / "w.jsonl"
    df = lognormal_workload(5, seed=1)
    df.loc[0, "prompt_len"] = 2**31 - 1  # aligned to 64 it is 2**31, past MAX_LENGTH
    write_requests(df, path)
    code, _, err = run(capsys, "plan", path, "-o", tmp_path / "p.jsonl")
    assert code == 2 and "granularity" in err and "req-000000" in err and one_line_error(err)
    assert files_of(tmp_path) == ["w.jsonl"]


# ---------------------------------------------------------------------------------------------
# bad input 3: all or nothing, clashing and read-only outputs


@pytest.mark.parametrize(
    ("outputs", "words"),
    [
        (["same.jsonl", "same.jsonl"], "twice"),
        (["x.jsonl", "x.json"], "twice"),  # both sidecars would be x.meta.json
        (["a.jsonl", "b.jsonl"], "also an input"),  # a.jsonl is the first input
        (["", "b2.jsonl"], "empty"),
        (["x.meta.json", "y.jsonl"], "sidecar"),
    ],
)
def test_clashing_outputs_are_input_errors_and_nothing_is_written(
    small, tmp_path, capsys, outputs, words
):
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    outs = [str(tmp_path / o) if o else "" for o in outputs]
    code, out, err = run(capsys, "plan", *small, "-o", *outs)
    assert code == 2 and words in err and "--output" in err and one_line_error(err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_read_only_output_is_refused_not_replaced(small, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    out.write_text("keep me")
    out.chmod(0o444)
    code, _, err = run(capsys, "plan", small[0], "-o", out)
    assert code == 2 and "read-only" in err and str(out) in err
    assert out.read_text() == "keep me" and not plan_meta_path(out).exists()


def test_a_failure_writing_the_second_plan_leaves_no_file_written(
    small, tmp_path, capsys, monkeypatch
):
    import batchlab.plan as plan_module

    outs = [tmp_path / "pa.jsonl", tmp_path / "pb.jsonl"]
    outs[0].write_text("old plan a")
    real = plan_module.write_plan
    calls = []

    def failing(plan, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        real(plan, path)

    monkeypatch.setattr(plan_module, "write_plan", failing)
    code, _, err = run(capsys, "plan", *small, "-o", *outs)
    assert code == 2 and "No space left" in err
    assert outs[0].read_text() == "old plan a"  # the first plan was not replaced
    assert files_of(tmp_path) == ["a.jsonl", "b.jsonl", "pa.jsonl"]  # no temp file, no sidecar


def test_plan_writes_every_plan_and_sidecar(small, tmp_path, capsys):
    outs = [tmp_path / "pa.jsonl", tmp_path / "pb.jsonl"]
    code, _, err = run(capsys, "plan", *small, "-o", *outs, "--max-shapes", 3)
    assert code == 0, err
    assert files_of(tmp_path) == sorted(
        ["a.jsonl", "b.jsonl", "pa.jsonl", "pb.jsonl", "pa.meta.json", "pb.meta.json"]
    )


# ---------------------------------------------------------------------------------------------
# bad input 7: SIGTERM / SIGINT, stale temp files


def test_sigterm_during_the_writes_undoes_them_with_one_line_and_143(
    small, tmp_path, capsys, monkeypatch
):
    import batchlab.plan as plan_module

    outs = [tmp_path / "pa.jsonl", tmp_path / "pb.jsonl"]
    real = plan_module.write_plan
    calls = []

    def terminated_midway(plan, path):
        calls.append(path)
        real(plan, path)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, after one write

    monkeypatch.setattr(plan_module, "write_plan", terminated_midway)
    previous = signal.getsignal(signal.SIGTERM)
    code, out, err = run(capsys, "plan", *small, "-o", *outs)
    assert code == 143 and err == "batchlab: terminated\n"
    assert files_of(tmp_path) == ["a.jsonl", "b.jsonl"]  # no plan, no sidecar, no temp file
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is given back


def test_sigint_during_the_writes_undoes_them_with_one_line_and_130(
    small, tmp_path, capsys, monkeypatch
):
    import batchlab.plan as plan_module

    real = plan_module.write_plan

    def interrupted(plan, path):
        real(plan, path)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(plan_module, "write_plan", interrupted)
    code, out, err = run(capsys, "plan", small[0], "-o", tmp_path / "p.jsonl")
    assert code == 130 and err == "batchlab: interrupted\n"
    assert files_of(tmp_path) == ["a.jsonl", "b.jsonl"]


@pytest.mark.parametrize(
    "sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_after_the_writes_says_what_was_written(
    small, tmp_path, capsys, monkeypatch, sig, code, word
):
    """Signalled while it prints its summary: the plans and sidecars are written whole, and
    the one line names them (not a bare 'terminated', which would say nothing changed)."""
    real = cli._table

    def signalled(*a, **k):
        os.kill(os.getpid(), sig)
        return real(*a, **k)

    monkeypatch.setattr(cli, "_table", signalled)
    outs = [tmp_path / "pa.jsonl", tmp_path / "pb.jsonl"]
    got, _, err = run(capsys, "plan", *small, "-o", *outs)
    metas = [plan_meta_path(o) for o in outs]
    assert got == code
    assert err == f"batchlab: {word} after writing {outs[0]}, {metas[0]}, {outs[1]}, {metas[1]}\n"
    assert [len(read_plan(o)) for o in outs] == [40, 30] and all(m.exists() for m in metas)


def _big_workload(tmp_path) -> Path:
    path = tmp_path / "big.jsonl"
    write_requests(lognormal_workload(3000, seed=5), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_any_moment_of_a_real_run_leaves_old_outputs_or_new_ones(tmp_path, sig):
    """The console script, signalled while the libraries load, while planning and while
    writing: exit 130/143 with one line (or 0 when it finished first), no temp file, and the
    output either its old contents or a complete new plan (and the line then says so)."""
    path = _big_workload(tmp_path)
    out = tmp_path / "p.jsonl"
    out.write_text("old\n")
    script = [sys.executable, "-m", "batchlab", "plan", str(path), "-o", str(out)]
    expected = 130 if sig == signal.SIGINT else 143
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    for delay in (0.4, 1.0, 2.0, 3.5, 6.0):  # (before ~0.2 s Python itself is starting)
        proc = subprocess.Popen(
            script, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        # -sig: the signal came while Python itself was starting (a loaded machine), before
        # batchlab installed its handlers, or after it restored them at exit: the output is
        # untouched, or the complete new plan
        assert proc.returncode in (0, expected, -sig), (delay, proc.returncode, err)
        if proc.returncode == -sig:
            if out.read_text() != "old\n":
                assert len(read_plan(out)) == 3000
                out.write_text("old\n")
        elif proc.returncode == expected and out.read_text() == "old\n":
            assert err == f"batchlab: {word}\n", (delay, err)
        elif proc.returncode == expected:  # the signal came after the writes: it says so
            assert err == f"batchlab: {word} after writing {out}, {plan_meta_path(out)}\n"
            assert len(read_plan(out)) == 3000
            out.write_text("old\n")
        else:
            assert len(read_plan(out)) == 3000
            out.write_text("old\n")
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_stale_temp_files_of_a_killed_write_are_removed_by_the_next_one(small, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "p.jsonl"
    stale = [
        tmp_path / f".p.jsonl.{dead.pid}.k9k9k9k9.tmp",
        tmp_path / f".p.meta.json.{dead.pid}.k9k9k9k9.tmp",
    ]
    for p in stale:
        p.write_text("half a plan")
    code, _, err = run(capsys, "plan", small[0], "-o", out)
    assert code == 0, err
    assert files_of(tmp_path) == ["a.jsonl", "b.jsonl", "p.jsonl", "p.meta.json"]


# ---------------------------------------------------------------------------------------------
# bad input 8: a closed output pipe


@pytest.mark.slow
def test_a_closed_output_pipe_exits_quietly(tmp_path):
    inputs = []
    for i in range(40):
        inputs.append(tmp_path / f"w{i}.jsonl")
        write_requests(lognormal_workload(20, seed=i), inputs[-1])
    producer = subprocess.Popen(
        [sys.executable, "-m", "batchlab", "profile", "--json", *map(str, inputs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = producer.stdout.readline()  # read one line, then close: as `| head -1` does
    producer.stdout.close()
    err = producer.stderr.read().decode()
    producer.wait(timeout=120)
    assert first.startswith(b"{")
    assert err == "" and producer.returncode == cli.EXIT_BROKEN_PIPE


# ---------------------------------------------------------------------------------------------
# bad input 6: a stall is never an internal error


def test_a_simulation_that_stalls_is_an_error_not_an_internal_error(small, capsys, monkeypatch):
    from batchlab.simulate.policies import POLICIES

    monkeypatch.setitem(POLICIES, "never", never_policy())
    code, out, err = run(capsys, "simulate", small[0], "--policy", "never")
    assert code == 2 and "stalled" in err and "never" in err and one_line_error(err)


def test_far_arrival_times_are_refused_with_the_file_line_and_field(tmp_path, capsys):
    path = tmp_path / "far.jsonl"
    path.write_text(
        "".join(
            json.dumps({"request_id": f"r{i}", "prompt_len": 10, "gen_len": 5, "arrival_s": t})
            + "\n"
            for i, t in enumerate([0.0, 1.0, 1e308, 2.0])
        )
    )
    code, _, err = run(capsys, "simulate", path)
    assert code == 2 and f"{path}:3" in err and "arrival_s" in err and one_line_error(err)


# ---------------------------------------------------------------------------------------------
# the first hour 6: every command that reads requests takes a file, a trace's CSV or a name


def _trace_csvs(tmp_path) -> dict[str, Path]:
    azure = tmp_path / "azure_like.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.2000000,0,12\n"  # a zero length: dropped, as load_trace does
        "2023-11-16 18:15:51.9637340,879,34\n"
    )
    sharegpt = tmp_path / "sharegpt_like.csv"
    sharegpt.write_text(
        "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
        "120,30,150,4.0\n900,100,1000,9.0\n64,640,704,0.1\n"
    )
    return {"azure": azure, "sharegpt": sharegpt}


def test_a_traces_own_csv_is_read_by_its_columns(tmp_path):
    csvs = _trace_csvs(tmp_path)
    azure = read_requests(csvs["azure"])
    assert azure["request_id"].tolist() == [
        "azure_like-000000",
        "azure_like-000001",
        "azure_like-000003",
    ]
    assert azure["prompt_len"].tolist() == [374, 396, 879]
    np.testing.assert_allclose(azure["arrival_s"], [0.0, 4.314579, 5.283144], atol=1e-6)
    sharegpt = read_requests(csvs["sharegpt"])
    assert sharegpt["gen_len"].tolist() == [30, 100, 640] and "arrival_s" not in sharegpt
    bad = tmp_path / "bad_trace.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6,12,x\n")
    with pytest.raises(InputError) as info:
        read_requests(bad)
    assert (info.value.path, info.value.line, info.value.field) == (
        str(bad),
        2,
        "GeneratedTokens",
    )


def test_every_command_that_reads_requests_takes_a_trace_csv(tmp_path, capsys):
    csv = _trace_csvs(tmp_path)["azure"]
    plan = tmp_path / "p.jsonl"
    assert run(capsys, "profile", csv)[0] == 0
    assert run(capsys, "plan", csv, "-o", plan)[0] == 0
    assert run(capsys, "verify", csv, plan)[0] == 0
    assert run(capsys, "evaluate", csv, plan)[0] == 0
    assert run(capsys, "simulate", csv, "--policy", "static")[0] == 0
    code, _, err = run(capsys, "loadtest", "http://127.0.0.1:9", csv, "--model", "m", "--rates", 1)
    assert code == 2 and "server" in err  # the requests were read; the server is not there


def test_every_command_that_reads_requests_takes_a_trace_name(tmp_path, capsys, monkeypatch):
    import batchlab.datasets as datasets

    table = lognormal_workload(30, seed=4, id_prefix="azure-conv")
    table = with_arrivals(table, rate_per_s=3, seed=4)
    monkeypatch.setattr(datasets, "load_trace", lambda name, **kw: table.copy())
    plan = tmp_path / "p.jsonl"
    name = "azure-conv-2023"
    assert run(capsys, "profile", name)[0] == 0
    code, _, err = run(capsys, "plan", name, "-o", plan)
    assert code == 0, err
    assert read_plan_meta(plan)["requests"]["source"] == name
    assert run(capsys, "verify", name, plan)[0] == 0
    assert run(capsys, "evaluate", name, plan)[0] == 0
    assert run(capsys, "simulate", name)[0] == 0
    code, _, err = run(capsys, "loadtest", "http://127.0.0.1:9", name, "--model", "m", "--rates", 1)
    assert code == 2 and "server" in err


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces is not here")
def test_profile_takes_the_real_trace_by_name_and_by_its_file(capsys):
    by_name = run(capsys, "profile", "--json", "sharegpt-lengths")
    by_file = run(
        capsys, "profile", "--json", TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
    )
    assert by_name[0] == by_file[0] == 0
    assert list(json.loads(by_name[1]).values()) == list(json.loads(by_file[1]).values())


# ---------------------------------------------------------------------------------------------
# the first hour 7: defaults and choices in --help; the plan's settings beside it


def test_every_help_shows_the_defaults_ranges_and_choices():
    from batchlab.cost import PRESETS
    from batchlab.roofline import GPUS, MODELS
    from batchlab.simulate.policies import POLICIES

    for command, sub in _subparsers().items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"batchlab {command} {action.option_strings[0]}: no help"
            default = action.default
            if default not in (None, False) and default != argparse.SUPPRESS:
                assert f"default: {default}" in text, (command, action.option_strings, default)
            for choice in action.choices or ():
                assert str(choice) in text, (command, choice)
            rng = getattr(action.type, "range_text", "")
            if rng:
                assert " ".join(rng.split()) in text, (command, action.option_strings, rng)
    plan_help = " ".join(_subparsers()["plan"].format_help().split())
    assert all(name in plan_help for name in PRESETS)
    sim_help = " ".join(_subparsers()["simulate"].format_help().split())
    assert all(name in sim_help for name in [*POLICIES, *MODELS, *GPUS])


def test_plan_records_its_settings_and_evaluate_uses_them(small, tmp_path, capsys):
    plan = tmp_path / "p.jsonl"
    code, _, err = run(
        capsys, "plan", small[1], "-o", plan, "--cost-model", "padded-graph", "--granularity", 128
    )
    assert code == 0, err
    meta = read_plan_meta(plan)
    assert meta["settings"]["cost_model"] == "padded-graph"
    assert meta["settings"]["granularity"] == 128
    assert meta["requests"]["n_requests"] == 30 and len(meta["requests"]["sha256"]) == 64
    # evaluate with no --cost-model: the plan's own (padded-graph at g = 128), no warning
    code, out, err = run(capsys, "evaluate", small[1], plan, "--json")
    assert code == 0 and err == ""
    from batchlab.cost import get_cost_model

    model = get_cost_model("padded-graph").with_coefficients(granularity=128)
    expected = evaluate(read_requests(small[1]), read_plan(plan), model).summary()
    assert json.loads(out)["summary"]["total_cost"] == pytest.approx(expected["total_cost"])
    # told otherwise: it does as told, and warns
    code, out, err = run(capsys, "evaluate", small[1], plan, "--cost-model", "static-graph")
    assert code == 0 and "warning" in err and "padded-graph" in err and err.count("\n") == 1


def test_verify_uses_the_plans_granularity_and_cap_or_warns(small, tmp_path, capsys):
    outs = [tmp_path / "pa.jsonl", tmp_path / "pb.jsonl"]
    code, _, err = run(capsys, "plan", *small, "-o", *outs, "--granularity", 128, "--max-shapes", 2)
    assert code == 0, err
    code, out, err = run(capsys, "verify", *small, *outs, "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["granularity"] == 128 and report["max_shapes"] == 2
    code, out, err = run(capsys, "verify", *small, *outs, "--granularity", 64)
    assert "warning" in err and "128" in err


def test_evaluate_warns_when_the_plan_was_made_from_other_requests(small, tmp_path, capsys):
    plan = tmp_path / "p.jsonl"
    assert run(capsys, "plan", small[0], "-o", plan)[0] == 0
    df = read_requests(small[0])
    df.loc[0, "gen_len"] += 1  # same ids, other lengths
    other = tmp_path / "other.jsonl"
    write_requests(df, other)
    code, _, err = run(capsys, "evaluate", other, plan)
    assert code == 0 and "warning" in err and "a.jsonl" in err


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"format": "something else", "settings": {}}',
        '{"format": "batchlab plan meta 1", "settings": {"cost_model": 3, "granularity": 64}}',
        '{"format": "batchlab plan meta 1", "settings": {"cost_model": "x", "granularity": 1e400}}',
    ],
)
def test_a_broken_sidecar_names_its_file(small, tmp_path, capsys, text):
    plan = tmp_path / "p.jsonl"
    assert run(capsys, "plan", small[0], "-o", plan)[0] == 0
    plan_meta_path(plan).write_text(text)
    code, _, err = run(capsys, "evaluate", small[0], plan)
    assert code == 2 and "p.meta.json" in err and one_line_error(err)


def test_static_graph_says_why_it_declares_one_shape(small, tmp_path, capsys):
    code, out, _ = run(capsys, "plan", small[0], "-o", tmp_path / "p.jsonl")
    assert code == 0 and "compile cost" in out and "padded-graph" in out


def test_help_and_usage_errors_return_their_codes(capsys):
    assert main(["--help"]) == 0
    assert main(["plan", "--help"]) == 0
    capsys.readouterr()
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchlab: error:") and err.count("\n") == 1
