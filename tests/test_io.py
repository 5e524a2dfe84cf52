"""Atomic writes: all or nothing (one file, and every file of one command), with ordinary
file permissions; read-only files refused; stale temp files of interrupted writes removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchlab.errors import InputError
from batchlab.io import (
    LEGACY_TEMP_AGE_S,
    all_or_nothing,
    atomic_path,
    atomic_write,
    check_outputs,
    recording_writes,
    stale_temp_files,
    write_json,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind
    with atomic_write(path) as fh:
        fh.write("new")
    assert path.read_text() == "new"


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "new.txt"
        with atomic_write(path) as fh:
            fh.write("x")
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o600)
        with atomic_write(path) as fh:
            fh.write("y")
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# all or nothing across the files of one command (issue 12, bad input 3)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_all_or_nothing_writes_every_file_or_none(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.txt", "b.txt", "c.txt"))
    a.write_text("old a")
    with pytest.raises(RuntimeError), all_or_nothing():
        with atomic_write(a) as fh:
            fh.write("new a")
        with atomic_write(b) as fh:
            fh.write("new b")
        assert a.read_text() == "old a" and not b.exists()  # nothing renamed before the end
        raise RuntimeError("the third file fails")
    assert a.read_text() == "old a" and not b.exists() and not c.exists()
    assert _files(tmp_path) == ["a.txt"]  # no temp file left behind
    with all_or_nothing():
        for path in (a, b, c):
            with atomic_write(path) as fh:
                fh.write(f"new {path.stem}")
    assert [p.read_text() for p in (a, b, c)] == ["new a", "new b", "new c"]
    assert _files(tmp_path) == ["a.txt", "b.txt", "c.txt"]


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_a_failing_rename_rolls_back_the_files_already_renamed(tmp_path, monkeypatch, fail_at):
    paths = [tmp_path / f"{i}.txt" for i in range(3)]
    paths[0].write_text("old 0")
    paths[2].write_text("old 2")
    real_replace = os.replace
    calls = {"n": 0, "failed": False}

    def replace(src, dst):  # the rename of temp file number fail_at fails, once
        if not calls["failed"] and Path(dst) in paths:
            if calls["n"] == fail_at:
                calls["failed"] = True
                raise OSError(28, "No space left on device")
            calls["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with recording_writes() as written, pytest.raises(OSError), all_or_nothing():
        for path in paths:
            with atomic_write(path) as fh:
                fh.write("new")
    assert paths[0].read_text() == "old 0" and paths[2].read_text() == "old 2"
    assert not paths[1].exists()
    assert _files(tmp_path) == ["0.txt", "2.txt"]
    assert written == []  # the renames rolled back are not recorded as written


def test_recording_writes_lists_the_files_committed_in_order(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.txt", "b.txt", "c.txt"))
    with recording_writes() as written:
        with atomic_write(c) as fh:
            fh.write("c")
        with pytest.raises(RuntimeError), all_or_nothing():
            with atomic_write(b) as fh:
                fh.write("never")
            raise RuntimeError("discarded")
        with all_or_nothing():
            for path in (a, b):
                with atomic_write(path) as fh:
                    fh.write(path.stem)
    assert written == [c, a, b]
    with atomic_write(c) as fh:  # outside the block nothing is recorded
        fh.write("again")
    assert written == [c, a, b]


def test_the_same_target_twice_in_one_group_is_an_input_error(tmp_path):
    path = tmp_path / "p.jsonl"
    with pytest.raises(InputError, match="twice"), all_or_nothing():
        for text in ("one", "two"):
            with atomic_write(tmp_path / "." / "p.jsonl") as fh:
                fh.write(text)
    assert not path.exists() and _files(tmp_path) == []


def test_a_read_only_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "plan.jsonl"
    path.write_text("keep")
    path.chmod(0o444)
    with pytest.raises(InputError, match="read-only") as info, atomic_write(path) as fh:
        fh.write("new")
    assert info.value.path == str(path)
    assert path.read_text() == "keep" and _files(tmp_path) == ["plan.jsonl"]


@pytest.mark.parametrize(
    ("outputs", "inputs", "words"),
    [
        (["out.jsonl", "out.jsonl"], [], "twice"),
        (["out.jsonl", "./sub/../out.jsonl"], [], "twice"),
        (["in.jsonl"], ["in.jsonl"], "also an input"),
        (["link.jsonl"], ["in.jsonl"], "also an input"),  # a symlink to the input
        (["hard.jsonl"], ["in.jsonl"], "also an input"),  # a hard link to the input
        ([""], [], "empty"),
        (["sub"], [], "folder"),
        (["ro.jsonl"], [], "read-only"),
    ],
)
def test_check_outputs_refuses_clashes_before_any_work(
    tmp_path, monkeypatch, outputs, inputs, words
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "in.jsonl").write_text("x")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "in.jsonl")
    os.link(tmp_path / "in.jsonl", tmp_path / "hard.jsonl")
    (tmp_path / "ro.jsonl").write_text("x")
    (tmp_path / "ro.jsonl").chmod(0o444)
    with pytest.raises(InputError, match=words) as info:
        check_outputs(outputs, inputs, field="--output")
    assert info.value.field == "--output"


def test_check_outputs_passes_distinct_new_files(tmp_path):
    paths = check_outputs([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], [tmp_path / "in.jsonl"])
    assert paths == [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]


# ---------------------------------------------------------------------------------------------
# temp files an interrupted write left behind (issue 12, bad input 7)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_the_same_output_are_removed_on_the_next_write(tmp_path):
    path = tmp_path / "out.jsonl"
    dead = tmp_path / f".out.jsonl.{_dead_pid()}.abcd1234.tmp"  # a kill -9 of a write
    live = tmp_path / f".out.jsonl.{os.getpid()}.efgh5678.tmp"  # a write in progress
    legacy_old = tmp_path / ".out.jsonl.ijkl9012.tmp"  # an earlier version's, an hour old
    legacy_new = tmp_path / ".out.jsonl.mnop3456.tmp"  # ... and a fresh one
    other = tmp_path / f".other.jsonl.{_dead_pid()}.qrst7890.tmp"  # another output's
    for p in (dead, live, legacy_old, legacy_new, other):
        p.write_text("half")
    hour_ago = time.time() - 2 * LEGACY_TEMP_AGE_S
    os.utime(legacy_old, (hour_ago, hour_ago))
    assert stale_temp_files(path) == sorted([dead, legacy_old])
    with atomic_write(path) as fh:
        fh.write("new")
    assert path.read_text() == "new"
    assert _files(tmp_path) == sorted(["out.jsonl", live.name, legacy_new.name, other.name])


def test_temp_files_carry_the_writers_pid(tmp_path):
    with atomic_path(tmp_path / "x.csv") as tmp:
        assert tmp.name.startswith(f".x.csv.{os.getpid()}.") and tmp.name.endswith(".tmp")
        assert stale_temp_files(tmp_path / "x.csv") == []  # our own write is not stale


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1}\n{"a": 2}\n',  # the plain layout: parsed in bulk without splitting in numpy
        b'{"a": 1}\n{"a": 2}',
        b'{"a": 1}\n\n{"a": 2}\n\n',  # blank lines, CRLF, indentation: split first
        b'{"a": 1}\r\n{"a": 2}\r\n',
        b' {"a": 1}\n\t{"a": 2}\n',
        b'{"a": "' + b"x" * 3_000_000 + b'"}\n{"a": "y"}\n',  # longer than a bulk block
        b'{"a": "x}\\n{y"}\n{"a": 2}\n',  # an escaped newline; a column of two types
    ],
)
def test_json_lines_in_bulk_read_what_line_by_line_reads(tmp_path, text):
    from batchlab.io import read_json_lines

    path = tmp_path / "rows.jsonl"
    path.write_bytes(text)
    bulk, lines = read_json_lines(path), read_json_lines(path, bulk=False)
    assert bulk.objects() == lines.objects()
    assert bulk.lines.tolist() == lines.lines.tolist()
    if text.startswith(b'{"a": 1}\n{"a": 2}'):
        assert bulk.table is not None


def test_json_lines_of_the_plain_layout_name_the_line_of_an_error(tmp_path):
    from batchlab.io import read_json_lines

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}{"a": 3}\n{"a": 4}\n')
    with pytest.raises(InputError, match=r"rows.jsonl:2: invalid JSON"):
        read_json_lines(path)


@pytest.mark.parametrize("interrupted_call", [1, 3])
def test_an_interrupt_as_a_temp_file_is_made_leaves_no_file_and_the_old_outputs(
    tmp_path, monkeypatch, interrupted_call
):
    # SIGINT right as mkstemp returns: the 1st call makes a.json's temp file, the 3rd the
    # backup of a.json taken before the renames; either way nothing is left behind and both
    # outputs keep their old contents (the signal is held until the file is recorded)
    import signal
    import tempfile

    import batchlab.io as io_module

    real, calls = tempfile.mkstemp, []

    def mkstemp_then_sigint(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out[1])
        if len(calls) == interrupted_call:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(io_module.tempfile, "mkstemp", mkstemp_then_sigint)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a\n")
    b.write_text("old b\n")
    # SIGINT raises KeyboardInterrupt in this thread, whatever the test runner set
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        with pytest.raises(KeyboardInterrupt), all_or_nothing():
            write_json({"x": 1}, a)
            write_json({"y": 2}, b)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
    assert len(calls) >= interrupted_call
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert (a.read_text(), b.read_text()) == ("old a\n", "old b\n")
