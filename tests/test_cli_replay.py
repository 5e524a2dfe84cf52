"""``batchlab replay`` (a saved load test in the simulator) and ``batchlab loadtest
--simulate-with``: the comparison printed and written (both files or neither), the engine's
settings from the measurement, options overriding them, and bad input as one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import run_cli as run

from batchlab import loadtest as lt
from batchlab import measure, sim_vs_live

DATA = Path(__file__).resolve().parents[1] / "data" / "tiny-server"
LOADTEST = DATA / "loadtest.csv"
STEPS = DATA / "steps.csv"


def test_replay_prints_the_comparison_of_the_committed_measurement(capsys):
    code, text, err = run(capsys, "replay", LOADTEST, "--step-time", STEPS)
    assert code == 0, err
    lines = text.splitlines()
    assert "6 level(s) replayed with continuous" in lines[0]
    assert "num_blocks 64" in lines[0] and "page_size 256" in lines[0]
    assert lines[1].split()[:4] == ["mode", "level", "metric", "unit"]
    assert lines[1].rstrip().endswith("ratio (×)")
    assert len(lines) == 2 + 6 * len(sim_vs_live.COMPARED_METRICS)


def test_replay_json_matches_the_library(capsys):
    code, text, _ = run(capsys, "replay", LOADTEST, "--step-time", STEPS, "--json")
    assert code == 0
    data = json.loads(text)
    want = sim_vs_live.compare_loadtest(lt.load_loadtest(LOADTEST), measure.load_measurement(STEPS))
    got = pd.DataFrame(data["comparison"])
    assert got["metric"].tolist() == want["metric"].tolist()
    np.testing.assert_allclose(got["ratio"], want["ratio"], rtol=1e-12)
    assert data["engine_config"]["num_blocks"] == 64
    assert len(data["simulated"]) == 6


def test_replay_options_override_the_engine(capsys):
    # one sequence a step: the 16-client level is served one request at a time
    code, text, _ = run(
        capsys, "replay", LOADTEST, "--step-time", STEPS, "--max-num-seqs", "1", "--json"
    )
    assert code == 0
    sim = pd.DataFrame(json.loads(text)["simulated"]).set_index(["mode", "level"])
    assert sim.loc[("closed", 16.0), "mean_batch_size"] == pytest.approx(1.0)
    assert json.loads(text)["options"] == {"max_num_seqs": 1}


def test_replay_writes_both_files_or_neither(capsys, tmp_path, monkeypatch):
    out = tmp_path / "cmp.csv"
    code, text, err = run(capsys, "replay", LOADTEST, "--step-time", STEPS, "-o", out)
    assert code == 0, err
    table = pd.read_csv(out)
    assert list(table.columns) == list(sim_vs_live.COMPARISON_COLUMNS)
    levels = pd.read_csv(tmp_path / "cmp.levels.csv")
    assert tuple(levels.columns) == lt.LOAD_SWEEP_COLUMNS and len(levels) == 6
    assert f"written: {out}" in text
    # a failure while writing the second file leaves neither (nor any temp file)
    other = tmp_path / "again.csv"
    real = pd.DataFrame.to_csv
    calls = []

    def failing(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing)
    code, _, err = run(capsys, "replay", LOADTEST, "--step-time", STEPS, "-o", other)
    assert code == 2 and "disk full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.csv", "cmp.levels.csv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step-time", "nope.csv"], "no such measurement file"),
        (["--kv-blocks", "0"], "--kv-blocks"),
        (["--max-num-seqs", "-3"], "--max-num-seqs"),
        (["-o", "out.json"], "is a .csv path"),
    ],
)
def test_replay_bad_options_exit_2_one_line(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    argv = ["replay", LOADTEST, *(["--step-time", STEPS] if "--step-time" not in args else [])]
    code, text, err = run(capsys, *argv, *args)
    assert code == 2 and text == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_replay_bad_files_exit_2_one_line(capsys, tmp_path):
    # a load test without its sidecars, a measurement without the engine's settings, an
    # output that is one of the inputs
    lone = tmp_path / "lone.csv"
    shutil.copy(LOADTEST, lone)
    code, _, err = run(capsys, "replay", lone, "--step-time", STEPS)
    assert code == 2 and "lone.requests.jsonl" in err and len(err.strip().splitlines()) == 1
    bare = tmp_path / "steps.csv"
    shutil.copy(STEPS, bare)  # no steps.json beside it: no engine settings
    code, _, err = run(capsys, "replay", LOADTEST, "--step-time", bare)
    assert code == 2 and "--kv-blocks" in err and len(err.strip().splitlines()) == 1
    code, text, err = run(capsys, "replay", LOADTEST, "--step-time", bare, "--kv-blocks", "64")
    assert code == 0, err  # the KV cache given: the policy's defaults for the rest
    code, _, err = run(capsys, "replay", LOADTEST, "--step-time", STEPS, "-o", LOADTEST)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_loadtest_simulate_with_prints_the_comparison(capsys, fake, requests_file):
    base = ["loadtest", "http://127.0.0.1:8000", requests_file, "--model", fake.model]
    code, text, err = run(
        capsys, *base, "--concurrency", "1,2", "--no-progress", "--simulate-with", STEPS
    )
    assert code == 0, err
    assert f"simulated on the step times of {STEPS}" in text
    after = text.split("(ratio: simulated / measured):")[1].strip().splitlines()
    assert after[0].rstrip().endswith("ratio (×)")
    assert len(after) == 1 + 2 * len(sim_vs_live.COMPARED_METRICS)
    code, text, err = run(
        capsys, *base, "--concurrency", "1", "--no-progress", "--simulate-with", STEPS, "--json"
    )
    assert code == 0, err
    data = json.loads(text)
    assert {r["metric"] for r in data["comparison"]} == set(sim_vs_live.COMPARED_METRICS)


def test_loadtest_simulate_with_a_bad_measurement_sends_nothing(capsys, fake, requests_file):
    base = ["loadtest", "http://127.0.0.1:8000", requests_file, "--model", fake.model]
    code, text, err = run(capsys, *base, "--concurrency", "1", "--simulate-with", "missing.csv")
    assert code == 2 and text == "" and "no such measurement file" in err
    assert fake.paths == []  # not even /v1/models
