"""Atomic writes: all or nothing, with ordinary file permissions."""

from __future__ import annotations

import os

import pytest

from batchlab.io import atomic_write


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
