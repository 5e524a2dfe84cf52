"""evaluate_files, the path of `batchlab evaluate`: the same numbers as evaluate() on the tables,
the full readers' errors for anything else, and no pandas (nor plotly, dask, torch, highspy) on
the way."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab.errors import InputError, VerificationError
from batchlab.evaluate import _fast_arrays, evaluate, evaluate_files
from batchlab.plan import baseline_plan, bucketed_plan, read_plan, write_plan
from batchlab.workload import MAX_LENGTH, lognormal_workload, read_requests, write_requests


def files(tmp_path, df, plan):
    req, pl = tmp_path / "req.jsonl", tmp_path / "plan.jsonl"
    write_requests(df, req)
    write_plan(plan, pl)
    return req, pl


def expected(req, pl, cm="static-graph"):
    ev = evaluate(read_requests(req), read_plan(pl), cm)
    return ev.summary(), ev.cost.as_dict()


@pytest.mark.parametrize("cm", ["static-graph", "padded-graph"])
def test_same_numbers_as_evaluate_on_the_tables(tmp_path, cm):
    df = lognormal_workload(500, seed=3)
    for plan in (
        baseline_plan(df, k=4),
        bucketed_plan(df, [512, 1024, 8192], gen_bucket_size=32, max_batch_size=7),
    ):
        req, pl = files(tmp_path, df, plan.sample(frac=1.0, random_state=1))
        assert evaluate_files(req, pl, cm) == expected(req, pl, cm)


def test_ids_of_different_lengths_and_unicode(tmp_path):
    df = pd.DataFrame(
        {
            "request_id": ["a", "ßé-2", "c" * 40, "日本", "z9"],
            "prompt_len": [10, 100, 1000, 64, 65],
            "gen_len": [1, 2, 3, 4, 5],
        }
    )
    plan = pd.DataFrame(
        {
            "request_id": ["z9", "日本", "a", "c" * 40, "ßé-2"],
            "batch_id": ["b2", "b10", "b2", "b1", "b10"],
            "seq_align": [1024, 128, 1024, 1024, 128],
        }
    )
    req, pl = files(tmp_path, df, plan)
    assert evaluate_files(req, pl) == expected(req, pl)


def test_other_layouts_take_the_full_readers(tmp_path):
    # an extra column, integer ids, spaces: the general path gives the same answer
    df = lognormal_workload(50, seed=1)
    df["arrival_s"] = np.arange(50) / 10
    req, pl = files(tmp_path, df, baseline_plan(df, k=2))
    assert evaluate_files(req, pl) == expected(req, pl)
    lines = [json.loads(x) for x in req.read_text().splitlines()]
    req.write_text(
        "".join(json.dumps(x, indent=None, separators=(" ,", " : ")) + "\n" for x in lines)
    )
    assert evaluate_files(req, pl) == expected(req, pl)


def test_problems_raise_what_the_full_path_raises(tmp_path):
    df = lognormal_workload(30, seed=2)
    plan = baseline_plan(df, k=2)
    req, pl = files(tmp_path, df, plan.iloc[1:])
    with pytest.raises(VerificationError, match="missing"):
        evaluate_files(req, pl)
    req, pl = files(tmp_path, df, pd.concat([plan, plan.iloc[:1]]))
    with pytest.raises(VerificationError, match="duplicate"):
        evaluate_files(req, pl)
    bad = plan.copy()
    bad.loc[0, "seq_align"] = 64
    req, pl = files(tmp_path, df, bad)
    with pytest.raises(VerificationError):
        evaluate_files(req, pl)
    req.write_text(req.read_text().replace('"prompt_len": ', '"prompt_len": -', 1))
    with pytest.raises(InputError, match="prompt_len"):
        evaluate_files(req, pl)


def test_the_fast_path_bound_is_the_readers_bound():
    from batchlab.evaluate import _FAST_MAX_LENGTH

    assert _FAST_MAX_LENGTH == MAX_LENGTH


def test_batch_orders_and_ids_the_join_must_refuse(tmp_path):
    df = lognormal_workload(60, seed=4)
    plan = bucketed_plan(df, [512, 1024, 8192], gen_bucket_size=32, max_batch_size=5)
    # batches in string order, in reverse order, and grouped but out of order: same numbers
    ordered = plan.sort_values("batch_id", kind="stable")
    for p in (ordered, ordered.iloc[::-1], ordered.sort_values("seq_align", kind="stable")):
        req, pl = files(tmp_path, df, p)
        assert evaluate_files(req, pl) == expected(req, pl)
    # an id no request has, of the same length and longer; a request listed twice
    for rid in ("req-xxxxxx", "req-0000001"):
        bad = ordered.copy()
        bad.iloc[0, bad.columns.get_loc("request_id")] = rid
        req, pl = files(tmp_path, df, bad)
        with pytest.raises(VerificationError):
            evaluate_files(req, pl)
    bad = ordered.copy()
    bad.iloc[0, bad.columns.get_loc("request_id")] = bad["request_id"].iloc[1]
    req, pl = files(tmp_path, df, bad)
    with pytest.raises(VerificationError, match="duplicate"):
        evaluate_files(req, pl)


_ID_ALPHABET = "ab-0é日\U0001f600"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    prefix=st.sampled_from(["", "r", "req-", "ééé-"]),
    n=st.integers(1, 12),
)
def test_the_join_on_any_ids(tmp_path, data, prefix, n):
    # ids sharing a prefix (or not), of one or many widths, short or longer than the 8 bytes an
    # integer key holds; the plan in any order, sometimes with one id changed (same width or not,
    # with the prefix or without): the same numbers or the same error as the full readers
    suffixes = data.draw(
        st.lists(
            st.text(_ID_ALPHABET, min_size=0, max_size=10), min_size=n, max_size=n, unique=True
        )
    )
    ids = [prefix + s for s in suffixes]
    if "" in ids:
        return
    df = pd.DataFrame(
        {
            "request_id": ids,
            "prompt_len": data.draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n)),
            "gen_len": data.draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)),
        }
    )
    df = df.sample(frac=1.0, random_state=data.draw(st.integers(0, 3)))  # file order: any
    plan = baseline_plan(df, k=min(3, n)).sample(frac=1.0, random_state=1)
    change = data.draw(st.sampled_from(["none", "same width", "no prefix", "another id"]))
    if change != "none":
        row = plan.columns.get_loc("request_id")
        old = plan.iloc[0, row]
        new = {
            "same width": old[:-1] + ("b" if old[-1] != "b" else "a"),
            "no prefix": "x" + old[len(prefix) :] if prefix else "x" + old,
            "another id": plan.iloc[-1, row],
        }[change]
        plan.iloc[0, row] = new
    req, pl = files(tmp_path, df, plan)
    if change == "none":  # the lean path takes these files
        assert _fast_arrays(req, pl, 64) is not None
    try:
        want = expected(req, pl)
    except VerificationError as err:
        with pytest.raises(VerificationError) as got:
            evaluate_files(req, pl)
        assert str(got.value) == str(err)
        return
    assert evaluate_files(req, pl) == want
