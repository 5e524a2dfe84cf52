"""pytest configuration shared by the unit tests and the nbval runs of the notebooks.

Test tiers: ``pytest -m "not slow"`` (``make check``) is the fast tier, under a minute on two
cores; ``slow`` marks the notebooks, the browser test, real measurements with torch, console
scripts in subprocesses and the long property runs. ``make test`` runs both.

nbval compares every stored output of a notebook cell with a fresh run. Plotly figures
(``application/vnd.plotly.v1+json`` and their ``text/html`` fallback) and widget views carry
random ids, so they are left out of the comparison here; their text outputs (tables, numbers,
``print``) are compared, and the notebooks assert on the data behind each figure.
"""

from __future__ import annotations

NOT_COMPARED = (
    "application/vnd.plotly.v1+json",
    "text/html",
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
)


def pytest_collection_modifyitems(config, items):
    """Notebooks (nbval) and the browser test belong to the slow tier: ``pytest -m "not slow"``
    (``make check``) leaves them out, ``make test`` runs everything."""
    import pytest

    for item in items:
        if item.path.suffix == ".ipynb" or item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)


def pytest_collectstart(collector):
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        skip = getattr(collector, "skip_compare", None)
        if skip is not None:
            collector.skip_compare = tuple(skip) + NOT_COMPARED
