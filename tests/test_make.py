"""The Makefile's user targets, read with ``make -n`` (nothing runs), and what the committed
chapters store (issue 12, first hour 1 and 10).

1. ``make lab`` as root (containers, cloud notebooks) passes ``--allow-root``, which JupyterLab
   needs to start as root, and not otherwise; ``ARGS`` adds JupyterLab options.
10. ``make lab-scratch`` runs copies of the chapters outside the repository (JupyterLab's
   autosave rewrote the committed chapters during a Run All), and the committed chapters store
   nothing that changes on every run but what must: no execution timestamps, figures as their
   JSON only (no HTML fallback with a random element id).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(*args: str) -> list[str]:
    """The commands ``make -n`` prints for ``args`` (the .venv set-up lines included when it is
    out of date; nothing is run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def lab_line(lines: list[str]) -> str:
    found = [line for line in lines if "jupyter" in line and " lab " in line]
    assert len(found) == 1, lines
    return found[0]


def test_make_lab_as_root_passes_allow_root():
    line = lab_line(dry_run("lab", "LAB_UID=0"))
    assert "--allow-root" in line and line.endswith("notebooks/00_start_here.ipynb")
    if os.geteuid() == 0:  # as whoever runs the tests: the uid make finds itself
        assert "--allow-root" in lab_line(dry_run("lab"))
    else:
        assert "--allow-root" not in lab_line(dry_run("lab"))


def test_make_lab_as_a_user_does_not_and_args_pass_through():
    line = lab_line(dry_run("lab", "LAB_UID=1000"))
    assert "--allow-root" not in line
    line = lab_line(dry_run("lab", "LAB_UID=1000", "ARGS=--port 8890 --no-browser"))
    assert " --port 8890 --no-browser notebooks/00_start_here.ipynb" in line
    line = lab_line(dry_run("lab", "LAB_UID=0", "ARGS=--ip 127.0.0.1"))
    assert "--allow-root" in line and "--ip 127.0.0.1" in line


def test_make_lab_scratch_runs_copies_outside_the_repository(tmp_path):
    scratch = tmp_path / "chapters"
    lines = dry_run("lab-scratch", f"SCRATCH={scratch}", "LAB_UID=0")
    assert f'mkdir -p "{scratch}/notebooks"' in lines
    assert f'cp -n notebooks/*.ipynb "{scratch}/notebooks/"' in lines  # keeps earlier copies
    assert f'ln -sfn "{ROOT}/data" "{scratch}/data"' in lines  # the chapters read ../data
    line = lab_line(lines)
    assert line.startswith(f'cd "{scratch}" && ') and "--allow-root" in line
    assert line.endswith(" notebooks/00_start_here.ipynb")
    # the default folder is the user's cache, outside the repository
    default = dry_run("lab-scratch", "LAB_UID=1000")
    cd = lab_line(default).split('"')[1]
    assert not Path(cd).resolve().is_relative_to(ROOT.resolve()), cd
    readme = (ROOT / "README.md").read_text()
    assert "make lab-scratch" in readme and 'make lab ARGS="' in readme and "--allow-root" in readme


def test_make_notebooks_stores_no_timestamps():
    lines = " ".join(dry_run("notebooks", "NOTEBOOKS=notebooks/00_start_here.ipynb"))
    assert "--ExecutePreprocessor.record_timing=False" in lines
    assert "--ExecutePreprocessor.store_widget_state=False" in lines
    # timestamps a notebook already holds are cleared; its cells' tags are kept
    assert "--ClearMetadataPreprocessor.enabled=True" in lines
    assert "--ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags" in lines


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_committed_chapters_store_only_what_must_vary(chapter):
    nb = json.loads(chapter.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert "execution" not in cell.get("metadata", {}), f"cell {i}: execution timestamps"
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.plotly.v1+json" in data:
                # the figure as its JSON only: plotly's HTML fallback carries a random div id
                assert "text/html" not in data, f"cell {i}: a figure with an HTML fallback"
            html = "".join(data.get("text/html", ""))
            assert "cdn.plot.ly" not in html, f"cell {i}: a script from plotly's CDN"
