"""Tests for batchlab.datasets: the real traces, lookup order, checksums and the download path."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pooch
import pytest

import batchlab.datasets as ds
from batchlab.datasets import TRACES, TraceInfo, list_traces, load_trace, search_dirs, trace_path
from batchlab.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

needs_shared = pytest.mark.skipif(
    not (SHARED / TRACES["azure-conv-2023"].file).is_file(),
    reason=f"the shared trace folder {SHARED} is not present",
)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No env folder, no project folders, and a private pooch cache under tmp_path."""
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(ds, "_project_dirs", lambda: [])
    cache = tmp_path / "cache"
    monkeypatch.setattr(ds, "_cache_dir", lambda: cache)
    return cache


def _readme_percentiles(values: np.ndarray) -> list[float]:
    # p50/p90/p99/max, linear interpolation between order statistics
    return np.percentile(values, [50, 90, 99, 100], method="linear").tolist()


# (name, rows, prompt p50/p90/p99/max, output p50/p90/p99/max) as in shared/traces/README.md
README_TABLE = [
    ("azure-conv-2023", 19_366, [1020, 2735, 4142, 14050], [129, 424, 601, 1000]),
    ("azure-code-2023", 8_819, [1469, 5188, 7436, 7437], [13, 55, 252, 1899]),
    ("sharegpt-lengths", 30_731, [1730, 5696, 7434, 8141], [415, 834, 998, 1024]),
]


@needs_shared
@pytest.mark.parametrize(("name", "rows", "prompt_q", "gen_q"), README_TABLE)
def test_load_shared_traces_match_readme(monkeypatch, name, rows, prompt_q, gen_q):
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)
    df = load_trace(name, download=False)
    # none of the three files has a zero-length row, so nothing is dropped
    assert df.attrs["dropped_rows"] == 0
    assert len(df) == rows
    assert df.attrs["trace"] == name
    assert "Splitwise" in df.attrs["attribution"] or "sarathi-serve" in df.attrs["attribution"]
    assert Path(df.attrs["path"]).resolve() == (SHARED / TRACES[name].file).resolve()
    assert df["prompt_len"].dtype == np.int64 and df["gen_len"].dtype == np.int64
    assert (df["prompt_len"] > 0).all() and (df["gen_len"] > 0).all()
    assert df["request_id"].is_unique
    prefix = TRACES[name].id_prefix
    assert df["request_id"].iloc[0] == f"{prefix}-000000"
    assert df["request_id"].iloc[-1] == f"{prefix}-{rows - 1:06d}"
    # README numbers are whole tokens from a percentile rule close to (not exactly) numpy's
    # linear one (code output p99: linear 251.46, README 252): within one token
    np.testing.assert_allclose(_readme_percentiles(df["prompt_len"].to_numpy()), prompt_q, atol=1)
    np.testing.assert_allclose(_readme_percentiles(df["gen_len"].to_numpy()), gen_q, atol=1)
    if name.startswith("azure"):
        arr = df["arrival_s"].to_numpy()
        assert arr.dtype == np.float64
        assert arr[0] == 0.0
        assert (np.diff(arr) >= 0).all()
        # about 57-58 minutes of trace
        assert 55 * 60 < arr[-1] < 60 * 60
    else:
        assert "arrival_s" not in df.columns


@needs_shared
def test_conv_known_values_and_timestamp_precision(monkeypatch):
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)
    df = load_trace("azure-conv-2023", download=False)
    assert int(df["prompt_len"].median()) == 1020
    assert df["prompt_len"].max() == 14050
    assert df["gen_len"].max() == 1000
    # first rows: 18:15:46.6805900 (374, 44), 18:15:50.9951690 (396, 109)
    # 50.9951690 - 46.6805900 = 4.3145790 s (all 7 fractional digits kept)
    assert df["prompt_len"].iloc[:2].tolist() == [374, 396]
    assert df["gen_len"].iloc[:2].tolist() == [44, 109]
    assert df["arrival_s"].iloc[1] == pytest.approx(4.314579, abs=1e-9)
    # the trace runs 58 min 21.721937 s = 3501.721937 s
    assert df["arrival_s"].iloc[-1] == pytest.approx(3501.721937, abs=1e-9)


@needs_shared
def test_limit_and_repeated_load_is_fast(monkeypatch):
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)
    load_trace("azure-conv-2023", download=False)  # first load: checksum computed
    t0 = time.perf_counter()
    df = load_trace("azure-conv-2023", download=False)
    assert time.perf_counter() - t0 < 1.0
    assert len(df) == 19_366
    head = load_trace("azure-conv-2023", download=False, limit=5)
    assert len(head) == 5
    assert head["request_id"].tolist() == df["request_id"].iloc[:5].tolist()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="limit"):
            load_trace("azure-conv-2023", download=False, limit=bad)


def test_unknown_trace_names_the_known_ones():
    with pytest.raises(InputError, match="azure-conv-2023") as exc:
        load_trace("no-such-trace")
    assert exc.value.field == "name"


def test_registry_table():
    table = list_traces()
    assert table["name"].tolist() == ["azure-conv-2023", "azure-code-2023", "sharegpt-lengths"]
    for col in ("file", "url", "sha256", "columns", "licence", "citation", "description"):
        assert col in table.columns
    share = TRACES["sharegpt-lengths"]
    assert share.url.startswith(
        "https://raw.githubusercontent.com/microsoft/sarathi-serve/"
        "72339db5b120614033b317880ad3a05a5e4c9415/"
    )
    assert TRACES["azure-code-2023"].url.endswith("/data/AzureLLMInferenceTrace_code.csv")
    assert all(len(info.sha256) == 64 for info in TRACES.values())


@needs_shared
def test_corrupted_copy_in_data_dir_is_a_checksum_error(isolated, tmp_path):
    info = TRACES["azure-code-2023"]
    folder = tmp_path / "data"
    folder.mkdir()
    copy = folder / info.file
    shutil.copyfile(SHARED / info.file, copy)
    # the intact copy loads from data_dir
    assert trace_path("azure-code-2023", data_dir=folder, download=False) == copy
    data = bytearray(copy.read_bytes())
    data[100] = ord("7") if data[100] != ord("7") else ord("8")
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))  # a new mtime: the cached hash is stale
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(InputError) as exc:
        load_trace("azure-code-2023", data_dir=folder, download=False)
    msg = str(exc.value)
    assert str(copy) in msg
    assert info.sha256 in msg and actual in msg


def test_missing_file_without_download_lists_every_place(isolated, tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(env_dir))
    arg_dir = tmp_path / "arg"
    info = TRACES["sharegpt-lengths"]
    with pytest.raises(InputError) as exc:
        load_trace("sharegpt-lengths", data_dir=arg_dir, download=False)
    msg = str(exc.value)
    for folder in (arg_dir, env_dir, isolated):
        assert str(folder / info.file) in msg
    assert info.url in msg
    assert ds.DATA_DIR_ENV in msg
    assert "download=False" in msg


def test_search_dirs_order_includes_project_and_cwd_folders(monkeypatch, tmp_path):
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path / "env"))
    work = tmp_path / "a" / "repo" / "notebooks"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    dirs = [folder for _, folder in search_dirs(tmp_path / "arg")]
    repo_root = Path(ds.__file__).resolve().parents[2]
    assert dirs[0] == tmp_path / "arg"
    assert dirs[1] == tmp_path / "env"
    assert dirs[2] == repo_root.parent / "shared" / "traces"
    assert dirs[3] == work.parent / "shared" / "traces"
    assert dirs[4] == work.parent.parent / "shared" / "traces"
    assert dirs[-1] == Path(pooch.os_cache("batchlab"))


@needs_shared
def test_env_folder_is_honoured(isolated, tmp_path, monkeypatch):
    info = TRACES["azure-conv-2023"]
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    shutil.copyfile(SHARED / info.file, env_dir / info.file)
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(env_dir))
    df = load_trace("azure-conv-2023", download=False, limit=3)
    assert Path(df.attrs["path"]) == env_dir / info.file
    # data_dir comes before the env folder
    arg_dir = tmp_path / "arg"
    arg_dir.mkdir()
    shutil.copyfile(SHARED / info.file, arg_dir / info.file)
    df = load_trace("azure-conv-2023", data_dir=arg_dir, download=False, limit=3)
    assert Path(df.attrs["path"]) == arg_dir / info.file


@needs_shared
def test_download_path_uses_pooch_with_url_and_hash(isolated, monkeypatch):
    calls = []

    def fake_retrieve(url, known_hash, path, fname, **kwargs):
        calls.append({"url": url, "known_hash": known_hash, "path": Path(path), "fname": fname})
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / fname, target)
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    info = TRACES["azure-code-2023"]
    df = load_trace("azure-code-2023")
    assert len(df) == 8_819
    assert calls == [
        {
            "url": info.url,
            "known_hash": f"sha256:{info.sha256}",
            "path": isolated,
            "fname": info.file,
        }
    ]
    assert Path(df.attrs["path"]) == isolated / info.file
    # now cached: found without a download, also with download=False
    assert load_trace("azure-code-2023", download=False, limit=2).attrs["path"] == str(
        isolated / info.file
    )
    load_trace("azure-code-2023")
    assert len(calls) == 1
    # a damaged cached file is fetched again when downloads are allowed ...
    target = isolated / info.file
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(InputError, match="sha256 mismatch"):
        load_trace("azure-code-2023", download=False)
    assert len(load_trace("azure-code-2023")) == 8_819
    assert len(calls) == 2


def test_network_failure_is_an_input_error(isolated, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(pooch, "retrieve", offline)
    info = TRACES["azure-conv-2023"]
    with pytest.raises(InputError) as exc:
        load_trace("azure-conv-2023")
    msg = str(exc.value)
    assert "download failed" in msg and "network is unreachable" in msg
    assert info.url in msg and ds.DATA_DIR_ENV in msg
    assert str(isolated / info.file) in msg


def _register(monkeypatch, tmp_path, text: str, *, times: bool = True) -> str:
    """Register a small test trace whose file (with its true sha256) lives in tmp_path."""
    path = tmp_path / "tiny.csv"
    path.write_text(text)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = TraceInfo(
        name="tiny",
        file="tiny.csv",
        url="https://example.invalid/tiny.csv",
        sha256=digest,
        columns=("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
        prompt_column="ContextTokens",
        gen_column="GeneratedTokens",
        time_column="TIMESTAMP" if times else None,
        id_prefix="tiny",
        n_rows=text.count("\n") - 1,
        licence="test",
        citation="test data",
        description="test data",
    )
    monkeypatch.setitem(TRACES, "tiny", info)
    return str(tmp_path)


def test_zero_length_rows_are_dropped_and_counted(isolated, monkeypatch, tmp_path):
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:00:00.0000000,10,5\n"
        "2023-11-16 18:00:00.5000000,0,5\n"
        "2023-11-16 18:00:01.2500000,20,0\n"
        "2023-11-16 18:00:02.0000001,30,7\n"
    )
    folder = _register(monkeypatch, tmp_path, text)
    df = load_trace("tiny", data_dir=folder, download=False)
    assert df.attrs["dropped_rows"] == 2
    # ids keep the row number in the file, so dropped rows leave gaps
    assert df["request_id"].tolist() == ["tiny-000000", "tiny-000003"]
    assert df["prompt_len"].tolist() == [10, 30]
    assert df["gen_len"].tolist() == [5, 7]
    # arrivals are measured from the first row of the file: 2.0000001 s
    np.testing.assert_allclose(df["arrival_s"], [0.0, 2.0000001], atol=1e-12)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("2023-11-16 18:00:01.0000000,-3,5", "ContextTokens"),
        ("2023-11-16 18:00:01.0000000,3,2.5", "GeneratedTokens"),
        ("2023-11-16 18:00:01.0000000,3,abc", "GeneratedTokens"),
        ("yesterday,3,5", "TIMESTAMP"),
    ],
)
def test_corrupt_values_name_file_line_and_field(isolated, monkeypatch, tmp_path, row, field):
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000,10,5\n" + row + "\n"
    )
    folder = _register(monkeypatch, tmp_path, text)
    with pytest.raises(InputError) as exc:
        load_trace("tiny", data_dir=folder, download=False)
    assert exc.value.line == 3  # header is line 1, the bad row is line 3
    assert exc.value.field == field
    assert exc.value.path.endswith("tiny.csv")
