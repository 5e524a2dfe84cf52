"""Issue 12, bad input 2, 4, 5, 6 and 8 in the library: each defect the issue names, and the
class it belongs to. Each test fails on the code before the fix."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from builders import never_policy

from batchlab.checks import check_scalar
from batchlab.errors import InputError, SimulationError
from batchlab.plan import read_plan, validate_plan
from batchlab.planner import Limits, plan_requests, read_limits
from batchlab.workload import (
    MAX_ARRIVAL_S,
    arrival_times,
    lognormal_workload,
    read_requests,
    validate_requests,
)


def _parquet(tmp_path, **columns) -> str:
    base = {"request_id": ["a", "b"], "prompt_len": [10, 20], "gen_len": [3, 4]}
    base.update(columns)
    path = tmp_path / "reqs.parquet"
    pd.DataFrame(base).to_parquet(path)
    return path


def _error(read, path) -> InputError:
    with pytest.raises(InputError) as info:
        read(path)
    err = info.value
    assert err.path == str(path), str(err)
    assert "\n" not in str(err)
    return err


# ---------------------------------------------------------------------------------------------
# 2: only integer (or integral float) columns are lengths; no datetimes, timedeltas or text


@pytest.mark.parametrize(
    ("column", "values", "words"),
    [
        ("prompt_len", pd.to_datetime([675, 700], unit="ns"), "datetime"),
        ("gen_len", pd.to_timedelta([3, 4], unit="s"), "timedelta"),
        ("prompt_len", ["10", "20"], "text"),
        ("arrival_s", pd.to_datetime([1, 2], unit="s"), "datetime"),
        ("arrival_s", pd.to_timedelta([1, 2], unit="s"), "timedelta"),
        ("arrival_s", ["0.5", "1.5"], "text"),
        ("prompt_len", [True, False], "boolean"),
    ],
)
def test_parquet_columns_that_hold_no_numbers_are_refused(tmp_path, column, values, words):
    err = _error(read_requests, _parquet(tmp_path, **{column: values}))
    assert err.field == column and err.line == 1 and words in err.message


def test_parquet_integral_floats_are_lengths(tmp_path):
    df = read_requests(_parquet(tmp_path, prompt_len=[10.0, 20.0], arrival_s=[0.0, 1.5]))
    assert df["prompt_len"].dtype == np.int64 and df["prompt_len"].tolist() == [10, 20]


# ---------------------------------------------------------------------------------------------
# 4: overflow is an InputError naming the option, never an OverflowError


@pytest.mark.parametrize(
    "value", [10**400, -(10**400), 2**63, pytest.param(10**5000, id="10**5000")]
)
@pytest.mark.parametrize("kind", [int, float])
def test_check_scalar_never_overflows(value, kind):
    with pytest.raises(InputError) as info:
        check_scalar(value, "x", kind, min_val=0, max_val=10)
    assert info.value.field == "x" and len(str(info.value)) < 200


def test_limits_of_any_size_are_input_errors():
    with pytest.raises(InputError, match="max_cost"):
        Limits(max_cost=10**400)
    with pytest.raises(InputError, match="max_batch_size"):
        Limits(max_batch_size=10**400)
    assert Limits(max_batch_size=4.0).max_batch_size == 4


def test_a_toml_integer_beyond_float_range_names_file_line_and_field(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text("[chat]\nmax_batch_size = 4\nmax_cost = 1" + "0" * 400 + "\n")
    err = _error(read_limits, path)
    assert (err.line, err.field) == (3, "chat.max_cost")


def test_granularity_beyond_int64_is_an_input_error():
    from batchlab.cost import get_cost_model
    from batchlab.shapes import align

    with pytest.raises(InputError, match="granularity"):
        get_cost_model("static-graph").with_coefficients(granularity=2**63)
    with pytest.raises(InputError, match="granularity"):
        align([1, 2], 2**63)


# ---------------------------------------------------------------------------------------------
# 5: every reader error names the file (and the line where there is one)


def test_invalid_utf8_in_a_plans_ids_names_file_and_line(tmp_path):
    path = tmp_path / "plan.jsonl"
    good = b'{"request_id": "a", "batch_id": "b", "shape": {"seq_align": 64}}\n'
    for bad in (
        b'{"request_id": "a\xff", "batch_id": "b", "shape": {"seq_align": 64}}\n',
        b'{"request_id": "a", "batch_id": "b\xc3(", "shape": {"seq_align": 64}}\n',
    ):
        path.write_bytes(good + bad)
        assert _error(read_plan, path).line == 2


@pytest.mark.parametrize("kind", ["gzip", "parquet"])
def test_a_binary_file_given_as_a_plan_says_what_it_is(tmp_path, kind):
    path = tmp_path / "plan.jsonl"
    line = b'{"request_id": "a", "batch_id": "b", "shape": {"seq_align": 64}}\n'
    if kind == "gzip":
        path.write_bytes(gzip.compress(line * 3))
    else:
        pd.DataFrame({"request_id": ["a"], "batch_id": ["b"]}).to_parquet(path)
    assert kind in _error(read_plan, path).message.lower()


def test_a_non_utf8_limits_file_names_file_and_line(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_bytes(b"[chat]\nmax_cost = 1 # caf\xe9\n")
    assert _error(read_limits, path).line == 2


@pytest.mark.parametrize(
    "line",
    [
        '{"request_id": "\\ud800", "prompt_len": 1, "gen_len": 2}',
        '{"request_id": "ok", "prompt_len": 1, "gen_len": 2, "note": "x\\udfffy"}',
    ],
)
def test_a_lone_surrogate_in_a_request_file_names_file_line_and_field(tmp_path, line):
    path = tmp_path / "reqs.jsonl"
    path.write_text(
        '{"request_id": "fine \\ud83d\\ude00", "prompt_len": 1, "gen_len": 2}\n' + line + "\n"
    )
    err = _error(read_requests, path)
    assert err.line == 2 and err.field in ("request_id", "note") and "surrogate" in err.message


def test_a_lone_surrogate_in_a_plan_or_a_table_is_refused(tmp_path):
    path = tmp_path / "plan.jsonl"
    path.write_text('{"request_id": "a", "batch_id": "\\udc80", "shape": {"seq_align": 64}}\n')
    err = _error(read_plan, path)
    assert err.field == "batch_id" and err.line == 1
    ids = pd.Series(["a", "\ud800"], dtype=object)  # pandas' own str dtype refuses it
    table = pd.DataFrame({"request_id": ids, "prompt_len": [1, 2], "gen_len": [1, 2]})
    with pytest.raises(InputError, match="surrogate"):
        validate_requests(table)
    plan = pd.DataFrame({"request_id": ids, "batch_id": ["b", "b"], "seq_align": [64, 64]})
    with pytest.raises(InputError, match="surrogate"):
        validate_plan(plan)


# ---------------------------------------------------------------------------------------------
# 6: arrival times in a sane range; the simulator never reports a stall as an internal error


@pytest.mark.parametrize("value", [1e308, MAX_ARRIVAL_S * 1.5, -1.0])
def test_arrival_times_must_be_in_range(value):
    df = lognormal_workload(3, seed=1)
    df["arrival_s"] = [0.0, value, 1.0]
    with pytest.raises(InputError) as info:
        validate_requests(df)
    assert info.value.field == "arrival_s" and info.value.request_id == "req-000001"


def test_drawn_arrivals_beyond_the_range_name_the_rate():
    with pytest.raises(InputError) as info:
        arrival_times(100, rate_per_s=1e-300, seed=0)
    assert info.value.field == "rate_per_s"
    with pytest.raises(InputError, match="burstiness"):
        arrival_times(100, rate_per_s=1.0, seed=0, process="bursty", burstiness=1e300)


def test_a_stall_is_a_simulation_error():
    from batchlab.simulate import run
    from batchlab.simulate.state import ArrivalStream, Records, RequestArrays, SimState
    from batchlab.steptime import LinearStepTime

    reqs = RequestArrays(
        prompt=np.array([8, 8]),
        gen=np.array([2, 2]),
        level=np.zeros(2, dtype=np.int64),
        request_ids=["a", "b"],
    )
    arrivals = ArrivalStream(np.zeros(2), np.arange(2), 2, None)
    state = SimState(reqs, arrivals, Records(2), LinearStepTime(1.0), 100, 16)
    with pytest.raises(SimulationError, match="stalled") as info:
        run(state, never_policy()())
    assert "2 request(s) unfinished" in str(info.value)


# ---------------------------------------------------------------------------------------------
# 8: the smaller ones


def test_a_csv_with_a_duplicate_header_is_refused(tmp_path):
    path = tmp_path / "reqs.csv"
    path.write_text("request_id,prompt_len,gen_len,prompt_len\na,1,2,3\n")
    err = _error(read_requests, path)
    assert (err.line, err.field) == (1, "prompt_len") and "duplicate" in err.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('request_id,prompt_len,gen_len\na,1,2\nb,1,2\n"c,1,2\nd,1,2\n', 4),
        ('request_id,prompt_len,gen_len\n\na,1,2\n\nb,1,2\n"c,1,2\nd,1,2\n', 6),
        ('request_id,prompt_len,gen_len\n"a\nx",1,2\nb,1,2\n"c,1,2\n', 5),
    ],
)
def test_an_unterminated_csv_quote_is_reported_where_it_opens(tmp_path, text, line):
    path = tmp_path / "reqs.csv"
    path.write_text(text)
    err = _error(read_requests, path)
    assert err.line == line and "never closed" in err.message


def test_a_missing_arrival_is_called_missing(tmp_path):
    path = tmp_path / "reqs.csv"
    path.write_text("request_id,prompt_len,gen_len,arrival_s\na,1,2,0\nb,1,2,\n")
    err = _error(read_requests, path)
    assert (err.line, err.field, err.message) == (3, "arrival_s", "missing value")
    assert "nan" not in str(err)


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt_len", '"100"'), ("gen_len", '"7"'), ("arrival_s", "true"), ("arrival_s", '"1.5"')],
)
def test_json_strings_and_booleans_are_not_numbers(tmp_path, field, value):
    record = {"request_id": '"a"', "prompt_len": "100", "gen_len": "7", "arrival_s": "0.5"}
    record[field] = value
    path = tmp_path / "reqs.jsonl"
    path.write_text("{" + ", ".join(f'"{k}": {v}' for k, v in record.items()) + "}\n")
    err = _error(read_requests, path)
    assert (err.line, err.field) == (1, field)


def test_the_request_and_plan_readers_agree_on_text_numbers(tmp_path):
    path = tmp_path / "plan.jsonl"
    path.write_text('{"request_id": "a", "batch_id": "b", "shape": {"seq_align": "128"}}\n')
    assert _error(read_plan, path).field == "shape.seq_align"


def test_parquet_float_ids_are_refused_not_renamed(tmp_path):
    err = _error(read_requests, _parquet(tmp_path, request_id=[0.0, 1.0]))
    assert err.field == "request_id" and "0.0" in err.message


@pytest.mark.parametrize("buckets", [{}, [], 3, "chat"])
def test_plan_requests_of_no_buckets_is_an_input_error(buckets):
    with pytest.raises(InputError) as info:
        plan_requests(buckets, progress=False)
    assert info.value.field == "buckets"


@pytest.mark.parametrize(
    "header",
    ["TIMESTAMP,ContextTokens,GeneratedTokens", "num_prefill_tokens,num_decode_tokens"],
)
def test_a_header_only_trace_csv_is_an_input_error(tmp_path, header):
    path = tmp_path / "trace.csv"
    path.write_text(header + "\n")
    assert "no requests" in _error(read_requests, path).message


def test_a_trace_csv_with_every_row_zero_is_an_input_error(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n0,5\n7,0\n")
    assert "zero length" in _error(read_requests, path).message


def test_trace_lengths_beyond_int64_are_refused_not_wrapped(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n1e19,5\n")
    err = _error(read_requests, path)
    assert (err.line, err.field) == (3, "num_prefill_tokens")


def test_the_shape_dp_covering_every_length_is_immediate():
    from batchlab.shapes import optimal_shapes

    lengths = np.arange(1, 4000)
    shapes = optimal_shapes(lengths, 4096, 1)  # was O(m^3) = 3e10 steps: minutes
    assert shapes.tolist() == lengths.tolist()


@pytest.mark.parametrize("family", ["linear", "geometric", "quantile", "optimal"])
def test_shape_grids_bound_their_size(family):
    from batchlab.shapes import MAX_GRID_SHAPES, shape_grid

    with pytest.raises(InputError) as info:
        shape_grid(family, [10, 20, 4000], 10**12)  # was a hang building 10**12 points
    assert info.value.field == "k"
    assert len(shape_grid(family, [10, 20, 4000], MAX_GRID_SHAPES, 1)) <= MAX_GRID_SHAPES


def test_json_lines_error_lines_are_file_lines(tmp_path):
    path = tmp_path / "reqs.jsonl"
    path.write_text(
        json.dumps({"request_id": "a", "prompt_len": 1, "gen_len": 2})
        + "\n\n"
        + json.dumps({"request_id": "b", "prompt_len": 1, "gen_len": None})
        + "\n"
    )
    err = _error(read_requests, path)
    assert (err.line, err.field, err.message) == (3, "gen_len", "missing value")


def test_an_error_is_one_line_whatever_the_id_or_path_holds(tmp_path):
    path = tmp_path / "reqs.csv"
    path.write_text('request_id,prompt_len,gen_len\n"two\nlines",x,3\n')
    err = _error(read_requests, path)
    assert err.request_id == "two\nlines" and "two\\nlines" in str(err)
    assert str(InputError("m", path="a\rb", field="f\tg")) == "a\\rb, field 'f\\tg': m"


@pytest.mark.parametrize("n", [10**9, 10**400])
def test_generators_bound_the_number_of_requests(n):
    with pytest.raises(InputError) as info:
        lognormal_workload(n, seed=0)  # 10**9 rows was a MemoryError (or the OOM killer)
    assert info.value.field == "n"
