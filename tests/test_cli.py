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
