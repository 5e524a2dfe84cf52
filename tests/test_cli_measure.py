"""The ``batchlab measure`` subcommand: a real (tiny) measurement on the CPU, the saved CSV and
JSON, the report, ``--json``, the latency limit, the progress bar, and exit codes for bad input.

Measurements use the built-in tiny Llama (random weights, no download) at very short lengths so
each run takes well under a second."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from builders import run_cli as run
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.cli import main
from batchlab.measure import MEASUREMENT_COLUMNS, load_measurement, parse_batch_sizes

pytestmark = pytest.mark.slow  # every test runs real generations with torch

# two batch sizes, 8 prompt tokens, 3 generated tokens, one timed run, no warmup, on the CPU
SMALL = [
    "measure",
    "--batch-sizes",
    "2,1",
    "--prompt-len",
    "8",
    "--gen-len",
    "3",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]
# KV cache of the tiny Llama: 2 (K, V) x 4 layers x 2 KV heads x 64 (head dim) x 4 B = 4,096 B
# per token; the cache holds prompt + gen - 1 = 8 + 3 - 1 = 10 positions: 40,960 B = 0.04096 MB
# per sequence.
KV_MB_PER_SEQUENCE = 4096 * 10 / 1e6


def test_measure_saves_and_reports(capsys, tmp_path):
    target = tmp_path / "m.csv"
    code, out, err = run(capsys, *SMALL, "-o", target)
    assert code == 0, err
    header = out.splitlines()[0]
    names = [
        "batch_size (sequences)",
        "prefill_ms (ms)",
        "decode_ms_per_step (ms)",
        "e2e_ms (ms)",
        "output_tokens_per_s (tokens/s)",
        "peak_memory_mb (MB)",
        "kv_cache_mb (MB)",
        "oom",
    ]  # batchlab.tables: units in the headers
    assert [header.index(n) for n in names] == sorted(header.index(n) for n in names), header
    assert "saturation batch size (within 5% of the best throughput): " in out
    assert f"saved {target} (+ m.json)" in out
    assert "largest batch size" not in out  # no limit given
    df = load_measurement(target)
    assert list(df.columns) == list(MEASUREMENT_COLUMNS)
    assert df["batch_size"].tolist() == [1, 2]  # sorted
    assert df["prompt_len"].tolist() == [8, 8] and df["gen_len"].tolist() == [3, 3]
    assert df["repeats"].tolist() == [1, 1] and not df["oom"].any()
    assert df["device"].tolist() == ["cpu", "cpu"]
    assert df["kv_cache_mb"].tolist() == pytest.approx([KV_MB_PER_SEQUENCE, 2 * KV_MB_PER_SEQUENCE])
    # output tokens/s = batch x gen_len / e2e (one run, so the median is that run)
    assert (df["output_tokens_per_s"] * df["e2e_ms"] / 1e3).tolist() == pytest.approx([3, 6], 1e-5)
    meta = json.loads(target.with_suffix(".json").read_text())
    assert meta["settings"]["batch_sizes"] == [1, 2]
    assert meta["settings"]["model"] == "tiny-llama"
    assert meta["settings"]["warmup"] == 0 and meta["settings"]["seed"] == 0


def test_measure_default_path_and_no_save(capsys, tmp_path, monkeypatch):
    # by default the user's cache folder, never the repository's data/ (issue 11)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = run(capsys, *SMALL)
    assert code == 0, err
    saved = tmp_path / "cache" / "batchlab" / "measurements" / "tiny-llama-cpu-p8-g3.csv"
    assert saved.exists() and saved.with_suffix(".json").exists()
    assert f"saved {saved}" in out
    assert not (tmp_path / "data").exists()
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    code, out, err = run(capsys, *SMALL, "--no-save")
    assert code == 0, err
    assert "saved" not in out
    assert list(other.iterdir()) == []


def test_measure_json(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *SMALL, "--no-save", "--json", "--latency-limit-ms", "1e9")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"settings", "path", "summary", "table"}
    assert data["path"] is None
    assert data["settings"]["prompt_len"] == 8 and data["settings"]["device"] == "cpu"
    assert [row["batch_size"] for row in data["table"]] == [1, 2]
    assert set(data["table"][0]) == set(MEASUREMENT_COLUMNS)
    s = data["summary"]
    assert s["saturation_batch_size"] in (1, 2)
    # the KV cache grows by exactly one sequence's cache per sequence
    assert s["kv_cache_per_sequence_mb"] == pytest.approx(KV_MB_PER_SEQUENCE)
    # every size meets a limit of 10^9 ms: the largest is chosen
    assert s["max_batch_under_latency"] == 2 and s["latency_limit_ms"] == 1e9
    assert s["latency_column"] == "latency_ms_per_request"
    assert list(tmp_path.iterdir()) == []


def test_measure_latency_limit_lines(capsys):
    code, out, _ = run(
        capsys, *SMALL, "--no-save", "--latency-column", "decode_ms_per_step",
        "--latency-limit-ms", "1e9", "--tolerance", "0.5",
    )  # fmt: skip
    assert code == 0
    assert "largest batch size with decode_ms_per_step <= 1e+09 ms: 2" in out
    assert "within 50% of the best throughput" in out
    # no decode step takes less than a nanosecond
    code, out, _ = run(capsys, *SMALL, "--no-save", "--latency-limit-ms", "1e-6")
    assert code == 0
    assert "largest batch size with latency_ms_per_request <= 1e-06 ms: none" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-sizes", "1,x"], "field 'batch-sizes': not a whole number in [1, 4096]: 'x'"),
        (["--batch-sizes", "0,2"], "not a whole number in [1, 4096]: '0'"),
        (["--batch-sizes", ","], "no batch sizes given"),
        (["--gen-len", "1"], "argument --gen-len: must be a whole number in [2, "),
        (["--prompt-len", "0"], "argument --prompt-len: must be a whole number in [1, "),
        (["--repeats", "0"], "argument --repeats: must be a whole number in [1, 1000], got 0"),
        (["--model", "/no/such/folder"], "not a model"),
        (["--device", "tpu"], "unsupported device"),
        (["--no-save", "-o", "x.csv"], "contradict"),
        (["--tolerance", "1.5"], "argument --tolerance: must be a finite number in [0, 1)"),
        (["--latency-limit-ms", "-3"], "argument --latency-limit-ms: must be a finite number > 0"),
        (["--latency-limit-ms", "nan"], "argument --latency-limit-ms: must be a finite number"),
        (["--prompt-len", "4090", "--gen-len", "8"], "max_position_embeddings"),
    ],
)
def test_measure_bad_input_exits_2(capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *SMALL, *extra)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("batchlab: error:")
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # nothing saved


def test_measure_unknown_latency_column_is_a_usage_error(capsys):
    assert main([*SMALL, "--latency-column", "ttft_ms"]) == 2
    assert "invalid choice: 'ttft_ms'" in capsys.readouterr().err


def test_measure_output_must_be_csv(capsys, tmp_path):
    code, _, err = run(capsys, *SMALL, "-o", tmp_path / "m.txt")
    assert code == 2
    assert "saved as .csv" in err
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(1, 64).map(str),
            st.sampled_from(["0", "-1", "x", "2.5", "1e3", " ", "+4"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_measure_batch_size_list_checked_before_measuring(items):
    # any list with a bad item fails at once (exit 2, the item named); lists of positive whole
    # numbers are accepted by the parser (checked here without measuring: parse only)
    text = ",".join(items)
    bad = [i.strip() for i in items if i.strip() and not (i.strip().isdigit() and int(i) >= 1)]
    good = [int(i) for i in items if i.strip().isdigit() and int(i) >= 1]
    if bad or not good:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([*SMALL[:1], f"--batch-sizes={text}", "--no-save", "--device", "cpu"])
        assert code == 2
        assert (repr(bad[0]) if bad else "no batch sizes") in err.getvalue()
    else:
        assert parse_batch_sizes(text) == sorted(set(good))


def test_measure_progress_bar_on_stderr(capsys):
    argv = [a for a in SMALL if a != "--no-progress"]
    code, out, err = run(capsys, *argv, "--no-save")
    assert code == 0, err
    assert "batch sizes" in err and "2/2" in err  # the tqdm bar, on stderr
    assert out.split()[0] == "batch_size" and "saturation batch size" in out


def test_measure_continuous_engine_steps_and_fit(capsys, tmp_path, monkeypatch):
    # the continuous-batching engine, every step recorded with its composition: each run's
    # prompts prefill (B·P tokens in all, B first tokens), then G - 1 decode steps of B
    # sequences at contexts P + 1 … P + G - 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["measure", "--engine", "continuous", "--batch-sizes", "1,3", "--prompt-lens", "8,24"]
    argv += ["--served", "0"]  # the grid alone (served segments: the next test)
    code, out, err = run(capsys, *argv, "--gen-len", 4, "--repeats", 1, "--no-progress")
    assert code == 0, err
    saved = tmp_path / "cache" / "batchlab" / "measurements" / "tiny-llama-cpu-continuous-g4.csv"
    assert f"saved {saved}" in out and "1 torch thread(s)" in out and "fit residual" in out
    steps = load_measurement(saved)
    assert steps.attrs["settings"]["num_threads"] == 1
    assert steps.attrs["settings"]["engine"] == "continuous"
    runs = steps.groupby("run")
    assert runs.ngroups == 2 * 2 * 2  # prompt lengths x batch sizes x (warmup + repeat)
    for _, r in runs:
        b, p = int(r["batch_size"].iloc[0]), int(r["prompt_len"].iloc[0])
        assert r["prefill_tokens"].sum() == b * p and r["prefill_seqs"].sum() == b
        dec = r[r["prefill_tokens"] == 0]
        assert dec["decode_seqs"].tolist() == [b] * 3
        assert dec["decode_context"].tolist() == [b * (p + t) for t in (1, 2, 3)]
        assert (r["step_ms"] > 0).all() and (r["forward_ms"] <= r["step_ms"]).all()
    assert steps["warmup"].sum() == len(steps) / 2
    code, out, err = run(capsys, *argv, "--gen-len", 4, "--repeats", 1, "--no-save", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["path"] is None and data["fit"]["residual"]["n_steps"] > 0
    assert {row["batch_size"] for row in data["table"]} == {1, 3}
    # options of the other engine are refused with one line, exit 2
    code, out, err = run(capsys, *argv, "--prompt-len", 8)
    assert code == 2 and "--prompt-len" in err
    code, out, err = run(capsys, "measure", "--prompt-lens", "8,16")
    assert code == 2 and "--prompt-lens" in err


def test_measure_continuous_serves_segments_by_default(capsys, tmp_path):
    # by default a served segment follows each timed pass over the grid: requests of varied
    # lengths with Poisson arrivals, their steps in the table (batch size 0) and in the fit
    out_csv = tmp_path / "steps.csv"
    argv = ["measure", "--engine", "continuous", "--batch-sizes", "1,2", "--prompt-lens", "8,24"]
    code, out, err = run(
        capsys, *argv, "--gen-len", 6, "--repeats", 2, "--no-progress", "-o", out_csv
    )
    assert code == 0, err
    steps = load_measurement(out_csv)
    settings = steps.attrs["settings"]
    assert settings["served_requests"] == 48 and len(settings["served_rates_rps"]) == 3
    served = steps[steps["batch_size"] == 0]
    assert served["run"].nunique() == 2 and served["prefill_seqs"].sum() == 2 * 48
    assert "fit residual" in out
    # --served belongs to the continuous engine
    code, out, err = run(capsys, "measure", "--served", 4)
    assert code == 2 and "--served" in err
