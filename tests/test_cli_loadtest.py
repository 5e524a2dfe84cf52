"""The ``batchlab loadtest`` and ``serve-tiny`` subcommands: options, output, files, exit codes
(the client runs against the in-process fake server of tests/loadtest_fake.py)."""

from __future__ import annotations

import _thread
import functools
import json

import pytest
from builders import run_cli as run

from batchlab import loadtest as lt
from tests.loadtest_fake import FakeServer


def test_loadtest_prints_levels_and_knees_and_writes_files(capsys, fake, requests_file, tmp_path):
    out = tmp_path / "out" / "lt.csv"
    code, text, err = run(
        capsys,
        "loadtest",
        "http://127.0.0.1:8000",
        requests_file,
        "--model",
        fake.model,
        "--concurrency",
        "1,2",
        "--rates",
        "100",
        "--no-progress",
        "--output",
        out,
    )
    assert code == 0, err
    assert "http://127.0.0.1:8000/v1 (fake-model, completions, ignore_eos accepted" in text
    assert "throughput_rps" in text and "latency_p99_ms" in text
    assert "knee (rate; p99 latency over 2x its lowest-load value):" in text
    assert "knee (closed;" in text
    back = lt.load_loadtest(out)
    assert list(zip(back.levels["mode"], back.levels["level"], strict=True)) == [
        ("rate", 100.0),
        ("closed", 1.0),
        ("closed", 2.0),
    ]
    assert (back.levels["n_completed"] == 6).all()
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "lt.csv",
        "lt.json",
        "lt.requests.jsonl",
    ]


def test_loadtest_json(capsys, fake, requests_file):
    code, text, _ = run(
        capsys,
        "loadtest",
        "http://127.0.0.1:8000/v1",
        requests_file,
        "--model",
        fake.model,
        "--concurrency",
        "2",
        "--chat",
        "--ignore-eos",
        "off",
        "--no-progress",
        "--json",
    )
    assert code == 0
    data = json.loads(text)
    assert data["server"]["endpoint"] == "chat" and data["server"]["ignore_eos"] is False
    assert data["levels"][0]["n_completed"] == 6
    assert set(data["levels"][0]) == set(lt.LEVEL_COLUMNS)
    assert all("ignore_eos" not in b for b in fake.bodies)


def test_loadtest_ctrl_c_prints_the_finished_levels_and_exits_130(
    capsys, monkeypatch, requests_file
):
    def interrupt(k, body):
        if k == 2 + 6 + 1:  # the first request of the second level
            _thread.interrupt_main()

    server = FakeServer(step_s=0.01, on_request=interrupt)
    monkeypatch.setattr(lt, "loadtest", functools.partial(lt.loadtest, transport=server.transport))
    with pytest.warns(UserWarning, match="interrupted"):
        code, text, err = run(
            capsys,
            "loadtest",
            "http://127.0.0.1:8000",
            requests_file,
            "--model",
            server.model,
            "--concurrency",
            "1,2",
            "--no-progress",
        )
    assert code == 130
    assert "1 level(s)" in text
    assert "interrupted" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --rates and/or --concurrency"),
        (["--rates", "1,x"], "--rates"),
        (["--rates", "-1"], "--rates"),
        (["--concurrency", "1.5"], "--concurrency"),
        (["--concurrency", "0"], "--concurrency"),
        (
            ["--concurrency", "1", "--api-key-env", "BATCHLAB_TEST_UNSET_VAR"],
            "BATCHLAB_TEST_UNSET_VAR",
        ),
        (["--concurrency", "1", "--max-requests", "0"], "--max-requests"),
        (["--concurrency", "1", "--timeout-s", "0"], "--timeout-s"),
        (["--concurrency", "1", "--duration-s", "nan"], "--duration-s"),
        (["--concurrency", "1", "--output", "x.txt"], ".csv"),
    ],
)
def test_loadtest_bad_options_exit_2(capsys, fake, requests_file, args, message):
    code, _, err = run(
        capsys, "loadtest", "http://127.0.0.1:8000", requests_file, "--model", "fake-model", *args
    )
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_loadtest_bad_input_and_unreachable_server_exit_2(capsys, requests_file, tmp_path):
    code, _, err = run(
        capsys,
        "loadtest",
        "http://127.0.0.1:8000",
        tmp_path / "none.jsonl",
        "--model",
        "m",
        "--concurrency",
        "1",
    )
    assert code == 2 and "no such request file" in err
    from batchlab.tinyserver import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, _, err = run(capsys, "loadtest", url, requests_file, "--model", "m", "--concurrency", "1")
    assert code == 2 and "cannot reach the server" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "loopback"),
        (["--port", "70000"], "port"),
        (["--ready-timeout-s", "0"], "--ready-timeout-s"),
        (["--threads", "0"], "threads"),
        (["--cb-num-blocks", "0"], "--cb-num-blocks"),
    ],
)
def test_serve_tiny_bad_options_exit_2_before_any_work(capsys, args, message):
    code, _, err = run(capsys, "serve-tiny", *args)
    assert code == 2 and message in err
