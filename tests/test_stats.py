"""The one nearest-rank percentile: hand-worked ranks, NaN handling, exact decimal percents,
and a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError
from batchlab.stats import nearest_rank


def test_nearest_rank_by_hand():
    values = np.arange(1.0, 21.0)[::-1]  # 20 values
    # ⌈20·0.5⌉ = 10th, ⌈20·0.95⌉ = 19th, ⌈20·0.99⌉ = 20th smallest
    assert nearest_rank(values, (50, 95, 99)) == (10.0, 19.0, 20.0)
    assert nearest_rank(values, 95) == 19.0
    assert nearest_rank(np.array([7.0]), (0, 50, 100)) == (7.0, 7.0, 7.0)
    assert nearest_rank(np.arange(1.0, 101.0), (7,)) == (7.0,)
    # 99.9 of 1000 values is exactly the 999th (no binary rounding up to the 1000th)
    assert nearest_rank(np.arange(1.0, 1001.0), 99.9) == 999.0


def test_nan_values_are_left_out():
    v = np.array([5.0, 1.0, 4.0, 2.0, 3.0, np.nan])
    assert nearest_rank(v, 50) == 3.0
    assert nearest_rank(v, 20) == 1.0
    assert math.isnan(nearest_rank(np.array([np.nan]), 50))
    assert all(math.isnan(x) for x in nearest_rank(np.array([]), (50, 99)))


def test_bad_percents_are_named():
    with pytest.raises(InputError, match="percents"):
        nearest_rank([1.0], 101)
    with pytest.raises(InputError, match="percents"):
        nearest_rank([1.0], (50, -1))


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    p=st.integers(0, 100),
)
def test_matches_sorting(values, p):
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))
    assert nearest_rank(values, p) == s[rank - 1]
