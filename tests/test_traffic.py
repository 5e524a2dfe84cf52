"""Tests of batchlab.traffic: compressed trace arrivals and drawn ones, in honest units."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.errors import InputError
from batchlab.traffic import Traffic, as_traffic, offered_rate, scale_arrivals
from batchlab.workload import profile


def test_compressing_a_trace(request_table):
    df = request_table([10, 20, 30, 40], [1, 2, 3, 4], [10.0, 11.0, 13.0, 20.0])
    out = scale_arrivals(df, 5)
    np.testing.assert_allclose(out["arrival_s"], [10.0, 10.2, 10.6, 12.0])
    assert offered_rate(out) == pytest.approx(5 * offered_rate(df), rel=1e-12)
    assert offered_rate(df) == profile(df).arrival_rate_per_s == 3 / 10.0
    # lengths, ids and order unchanged; the input is not modified
    cols = ["request_id", "prompt_len", "gen_len"]
    assert out[cols].values.tolist() == df[cols].values.tolist()
    assert df["arrival_s"].tolist() == [10.0, 11.0, 13.0, 20.0]
    lvl = Traffic.scaled(2)
    assert lvl.label == "trace ×2" and lvl.apply(df).attrs["traffic"] == "trace ×2"


def test_poisson_at_a_rate(lognormal_requests):
    df = lognormal_requests(4000, seed=3)
    lvl = Traffic.poisson(25.0, seed=9)
    a, b = lvl.apply(df), lvl.apply(df)
    np.testing.assert_array_equal(a["arrival_s"], b["arrival_s"])  # seeded
    assert a["arrival_s"].iloc[0] == 0.0 and a["arrival_s"].is_monotonic_increasing
    assert offered_rate(a) == pytest.approx(25.0, rel=0.05)
    assert (a["prompt_len"] == df["prompt_len"]).all()
    assert lvl.label == "Poisson 25 req/s"
    assert Traffic.poisson(3, burstiness=2).label == "gamma CV 2 3 req/s"


def test_levels_and_errors(request_table):
    assert as_traffic(5) == Traffic.scaled(5.0)
    assert as_traffic(Traffic.poisson(2)) == Traffic.poisson(2)
    with pytest.raises(InputError, match="speedup"):
        Traffic.scaled(0)
    with pytest.raises(InputError, match="not both"):
        Traffic(speedup=2, rate_per_s=3)
    with pytest.raises(InputError, match="traffic"):
        as_traffic(True)
    with pytest.raises(InputError, match="arrival_s"):
        scale_arrivals(request_table([1], [1]), 2)
