"""The batchlab command line: plan, verify, evaluate and profile, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import run_cli as run

from batchlab.cli import main
from batchlab.evaluate import evaluate
from batchlab.plan import read_plan, write_plan
from batchlab.workload import lognormal_workload, read_requests, write_requests

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture
def workloads(tmp_path):
    chat = lognormal_workload(300, seed=1, id_prefix="chat")
    docs = lognormal_workload(200, seed=2, prompt_median=2500, gen_median=50, id_prefix="doc")
    paths = [tmp_path / "chat.jsonl", tmp_path / "docs.jsonl"]
    write_requests(chat, paths[0])
    write_requests(docs, paths[1])
    return paths


def test_plan_verify_evaluate_round_trip(workloads, tmp_path, capsys):
    outs = [tmp_path / "chat.plan.jsonl", tmp_path / "docs.plan.jsonl"]
    code, out, err = run(capsys, "plan", *workloads, "--output", *outs, "--max-shapes", 4)
    assert code == 0, err
    assert "shapes used" in out and "lower_bound" in out
    code, out, err = run(capsys, "verify", *workloads, *outs, "--max-shapes", 4)
    assert code == 0 and out.startswith("ok"), err
    code, out, err = run(capsys, "evaluate", workloads[0], outs[0], "--json")
    assert code == 0, err
    summary = json.loads(out)["summary"]
    expected = evaluate(read_requests(workloads[0]), read_plan(outs[0])).summary()
    assert summary["total_cost"] == pytest.approx(expected["total_cost"])
    assert summary["p95_latency_ms"] == pytest.approx(expected["p95_latency_ms"])


def test_plan_json_and_limits(workloads, tmp_path, capsys):
    limits = tmp_path / "limits.toml"
    limits.write_text("[chat]\nmax_batch_size = 4\n")
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    code, out, err = run(capsys, "plan", *workloads, "-o", *outs, "--limits", limits, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data["buckets"]) == {"chat", "docs"}
    sizes = read_plan(outs[0]).groupby("batch_id").size()
    assert sizes.max() <= 4


def test_exact_always_on_a_model_too_large_for_the_time_limit_notes_it(tmp_path, capsys):
    """--exact always on a wide-length input whose exact model (108,023 assignments) cannot be
    set up in 5 s: one note line on stderr, then the column-generation plan and its gap."""
    wide = lognormal_workload(
        80, seed=0, prompt_median=2048, prompt_sigma=1.2, gen_median=512, gen_sigma=1.2,
        max_prompt_len=32768, max_gen_len=8192, id_prefix="w",
    )  # fmt: skip
    write_requests(wide, tmp_path / "wide.jsonl")
    (tmp_path / "limits.toml").write_text("[wide]\nmax_batch_size = 7\nmax_sequential_ms = 2.5e9\n")
    argv = ["plan", tmp_path / "wide.jsonl", "-o", tmp_path / "wide.plan.jsonl"]
    argv += ["--limits", tmp_path / "limits.toml", "--exact", "always", "--time-limit", 5]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "exact='always'" in line]
    assert len(notes) == 1 and "108,023" in notes[0] and "26,832" in notes[0]
    assert "Traceback" not in err
    assert "certified gap" in out
    assert len(read_plan(tmp_path / "wide.plan.jsonl")) == 80


def test_a_shared_limits_file_plans_some_of_its_inputs(workloads, tmp_path, capsys):
    # data/limits.toml has tables for chat and docs: planning chat alone uses its table and says
    # the other is not used; a file whose tables match no input is an input error
    limits = tmp_path / "limits.toml"
    limits.write_text("[chat]\nmax_batch_size = 4\n\n[docs]\nmax_batch_size = 2\n")
    out_path = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "plan", workloads[0], "-o", out_path, "--limits", limits)
    assert code == 0, err
    assert "tables ['docs'] match no input file stem" in err and "not used" in err
    assert read_plan(out_path).groupby("batch_id").size().max() <= 4
    limits.write_text("[docs]\nmax_batch_size = 2\n")
    code, out, err = run(capsys, "plan", workloads[0], "-o", out_path, "--limits", limits)
    assert code == 2 and err.count("\n") == 1 and "match no input file stem" in err


def test_unmeetable_limit_exits_1_with_one_line(workloads, tmp_path, capsys):
    limits = tmp_path / "limits.toml"
    limits.write_text("[docs]\nmax_p95_latency_ms = 1\n")
    code, out, err = run(
        capsys, "plan", *workloads, "-o", tmp_path / "a", tmp_path / "b", "--limits", limits
    )
    assert code == 1
    assert err.count("\n") == 1 and "max_p95_latency_ms" in err and "docs" in err
    assert not (tmp_path / "a").exists()  # nothing written when planning fails


def test_verification_failure_exits_1(workloads, tmp_path, capsys):
    plan_path = tmp_path / "p.jsonl"
    assert run(capsys, "plan", workloads[0], "-o", plan_path)[0] == 0
    plan = read_plan(plan_path)
    write_plan(plan.iloc[1:], plan_path)  # drop one request
    code, out, err = run(capsys, "verify", workloads[0], plan_path, "--max-shapes", 8)
    assert code == 1
    assert "missing" in err


def test_input_errors_exit_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"request_id": "a", "prompt_len": 5, "gen_len": 2}\n{"request_id": "b", "prompt_len": -3, "gen_len": 2}\n'
    )
    code, out, err = run(capsys, "profile", bad)
    assert code == 2
    assert f"{bad}:2" in err and "prompt_len" in err
    assert err.count("\n") == 1


def test_usage_errors_exit_2(workloads, capsys):
    assert run(capsys, "plan", *workloads, "--output", "only-one.jsonl")[0] == 2
    assert main(["nonsense"]) == 2  # argparse's usage errors are returned, not raised
    assert run(capsys, "verify", workloads[0])[0] == 2
    assert run(capsys, "evaluate", workloads[0], "/no/such/plan.jsonl")[0] == 2


def test_profile_prints_percentiles(workloads, capsys):
    code, out, err = run(capsys, "profile", workloads[0])
    assert code == 0, err
    assert "p95" in out and "prompt_len" in out
    code, out, err = run(capsys, "profile", workloads[0], "--json")
    assert code == 0 and json.loads(out)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "chat.jsonl").exists(), reason="data/ not generated")
def test_console_script_on_the_committed_workloads(tmp_path):
    exe = Path(sys.executable).with_name("batchlab")
    outs = [tmp_path / "chat.plan.jsonl", tmp_path / "docs.plan.jsonl"]
    ins = [DATA / "chat.jsonl", DATA / "docs.jsonl"]
    proc = subprocess.run(
        [exe, "plan", *ins, "--output", *outs, "--limits", DATA / "limits.toml"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [exe, "verify", *ins, *outs, "--max-shapes", "8"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_an_unexpected_exception_is_an_internal_error_with_its_traceback(
    workloads, monkeypatch, capsys
):
    import batchlab.workload

    def broken(df):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(batchlab.workload, "profile", broken)
    code, out, err = run(capsys, "profile", workloads[0])
    assert code == 70  # EX_SOFTWARE, not the usage code 2
    assert "internal error" in err and "Traceback" in err and "ZeroDivisionError: a bug" in err


def test_a_plain_value_error_is_not_disguised_as_a_usage_error(workloads, monkeypatch, capsys):
    import batchlab.workload

    def broken(df):
        raise ValueError("operands could not be broadcast")  # numpy's, not an InputError

    monkeypatch.setattr(batchlab.workload, "profile", broken)
    code, _, err = run(capsys, "profile", workloads[0])
    assert code == 70 and "internal error" in err


def test_input_errors_are_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "a", "prompt_len": 0, "gen_len": 3}\n', encoding="utf-8")
    code, out, err = run(capsys, "profile", bad)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{bad}:1" in err and "prompt_len" in err


def test_help_documents_the_exit_codes():
    from batchlab.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    for code in ("0 success", "2 usage or input error", "70 internal error"):
        assert code in text


def test_the_lazy_parser_prints_and_parses_as_the_full_one():
    from batchlab.cli import build_parser

    def commands(parser):
        (action,) = (a for a in parser._actions if a.dest == "command")
        return action.choices

    full, lazy = build_parser(), build_parser(lazy=True)
    assert lazy.format_help() == full.format_help()
    assert list(commands(lazy)) == list(commands(full))
    for name, sub in commands(full).items():
        assert commands(lazy)[name].format_help() == sub.format_help(), name
    for argv in (
        ["evaluate", "r.jsonl", "p.jsonl", "--json", "--granularity", "32"],
        ["plan", "a.jsonl", "-o", "a.plan.jsonl", "--max-shapes", "3", "--exact", "never"],
        ["simulate", "a.jsonl", "--policy", "dynamic", "--max-wait-ms", "5", "--rate", "2"],
        ["capacity", "a.jsonl", "--max-num-seqs", "8,16", "--ttft-p99-ms", "500"],
    ):
        assert vars(build_parser(lazy=True).parse_args(argv)) == vars(full.parse_args(argv))


def _imported_by(argv, heavy):
    """(exit code, stdout, the modules of ``heavy`` imported) of ``batchlab ARGV`` in a fresh
    interpreter."""
    code = (
        "import sys\n"
        "from batchlab.cli import main\n"
        "rc = main(sys.argv[2:])\n"
        "print('IMPORTED', [m for m in sys.argv[1].split(',') if m in sys.modules], "
        "file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, ",".join(heavy), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    imported = proc.stderr.rsplit("IMPORTED", 1)[1].strip()
    return proc.returncode, proc.stdout, imported


def test_evaluate_imports_neither_pandas_nor_plotly_dask_torch_or_the_simulator(
    workloads, tmp_path, capsys
):
    heavy = (
        "pandas",
        "plotly",
        "dask",
        "torch",
        "scipy",
        "highspy",
        "batchlab.simulate",
        "batchlab.planner",
        "batchlab.capacity",
        "batchlab.loadtest",
    )
    plan = tmp_path / "chat.plan.jsonl"
    code, _, err = run(capsys, "plan", workloads[0], "--output", plan, "--max-shapes", 3)
    assert code == 0, err
    code, expected, _ = run(capsys, "evaluate", "--json", workloads[0], plan)
    assert code == 0
    # with the plan's sidecar (cost model and sha256 of the requests checked)
    code, out, imported = _imported_by(["evaluate", "--json", workloads[0], plan], heavy)
    assert (code, out, imported) == (0, expected, "[]")
    # the help of the command and of batchlab
    for argv in (["evaluate", "--help"], ["--help"]):
        code, out, imported = _imported_by(argv, heavy)
        assert code == 0 and "usage: batchlab" in out and imported == "[]"
    # the printed table too (batchlab.tables formats plain columns without pandas)
    code, out, imported = _imported_by(["evaluate", workloads[0], plan], heavy)
    assert code == 0 and "total_cost" in out and imported == "[]"
