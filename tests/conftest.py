"""Fixtures shared by the test modules: builders of request tables and measurement tables
(from ``tests/builders.py``), session-scoped so hypothesis tests can use them too."""

from __future__ import annotations

import functools
import os
import signal

import builders
import pytest
from hypothesis import settings

from batchlab.workload import write_requests

# Hypothesis profiles: "explore" (the default: new random examples every run, failures printed
# with their reproduction blob) and "ci" (``make test``: a fixed, derandomized set of examples, no
# example database written, so a landing run is repeatable). BATCHLAB_HYPOTHESIS_PROFILE picks.
settings.register_profile("explore", print_blob=True)
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("BATCHLAB_HYPOTHESIS_PROFILE", "explore"))

# A shell that starts a job in the background (``make test &``, nohup) makes it ignore SIGINT,
# and an ignored signal stays ignored in every child: Python would then never raise
# KeyboardInterrupt, here or in the commands the tests start and interrupt. Take Python's own
# handler back (children get the default action, and Python installs its handler again).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Modules whose every test is slow (``pytestmark = pytest.mark.slow``) and whose import is costly
# (torch): the fast tier (``-m "not slow"``) does not collect them, so it does not import them.
_SLOW_MODULES = frozenset({"test_measure.py"})


def pytest_ignore_collect(collection_path, config):
    if collection_path.name in _SLOW_MODULES and "not slow" in (config.getoption("markexpr") or ""):
        return True
    return None


@pytest.fixture(scope="session")
def request_table():
    """Builder: ``request_table(prompt, gen, arrival_s=None, *, prefix="r", **extra)``."""
    return builders.request_table


@pytest.fixture(scope="session")
def lognormal_requests():
    """Builder: ``lognormal_requests(n, seed, *, prompt_median=500, gen_median=100, ...)``."""
    return builders.lognormal_requests


@pytest.fixture(scope="session")
def measurement_table():
    """Builder: ``measurement_table(sizes, tps, latency, *, oom=None, **extra)``."""
    return builders.measurement_table


@pytest.fixture()
def requests_file(tmp_path):
    """A JSONL request file of six short requests (8-token prompts, 4 to 6 generated tokens)."""
    df = builders.request_table([8] * 6, [4, 5, 6, 4, 5, 6])
    path = tmp_path / "reqs.jsonl"
    write_requests(df, path)
    return path


@pytest.fixture()
def fake(monkeypatch):
    """The in-process fake OpenAI-compatible server (``tests/loadtest_fake.py``, 1 ms per
    step), patched into ``batchlab.loadtest.loadtest`` as its transport."""
    from batchlab import loadtest as lt
    from tests.loadtest_fake import FakeServer

    server = FakeServer(step_s=0.001)
    monkeypatch.setattr(lt, "loadtest", functools.partial(lt.loadtest, transport=server.transport))
    return server
