"""Tests for batchlab.workload: validation, files, generators, arrivals and profiles."""

from __future__ import annotations

import copy
import json
import math
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab import workload as wl
from batchlab.errors import InputError
from batchlab.workload import (
    MAX_LENGTH,
    SourceLines,
    arrival_rate_over_time,
    bimodal_workload,
    lognormal_workload,
    profile,
    read_requests,
    validate_requests,
    with_arrivals,
    write_requests,
    zipf_workload,
)

FORMATS = ("jsonl", "csv", "parquet")


def _frame(ids, prompt, gen, **extra) -> pd.DataFrame:
    return pd.DataFrame({"request_id": ids, "prompt_len": prompt, "gen_len": gen, **extra})


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.attrs = {}
    return out


def _row(rid, p, g, **extra) -> str:
    return json.dumps({"request_id": rid, "prompt_len": p, "gen_len": g, **extra})


# ---------------------------------------------------------------------------------------------
# profile: hand-checked numbers
# ---------------------------------------------------------------------------------------------

# prompt/100 = [3, 1, 7, 2, 10, 5, 4, 9, 6, 8]; gen/10 = [3, 2, 1, 5, 4, 7, 6, 100, 9, 8]
TEN_PROMPT = [300, 100, 700, 200, 1000, 500, 400, 900, 600, 800]
TEN_GEN = [30, 20, 10, 50, 40, 70, 60, 1000, 90, 80]
# sorted gaps 2,1,2,1,2,1,2,1,2 (rows deliberately out of order)
TEN_ARRIVALS = [14.0, 0.0, 2.0, 3.0, 5.0, 6.0, 8.0, 9.0, 11.0, 12.0]


def _ten() -> pd.DataFrame:
    return _frame([f"r{i}" for i in range(10)], TEN_PROMPT, TEN_GEN, arrival_s=TEN_ARRIVALS)


def test_profile_ten_requests_by_hand():
    prof = profile(_ten())
    assert prof.n_requests == 10
    # N = 10, nearest rank: p50 -> ceil(5.0) = 5th, p90 -> ceil(9.0) = 9th,
    # p95 -> ceil(9.5) = 10th, p99 -> ceil(9.9) = 10th smallest.
    # prompt sorted 100..1000 step 100: mean = 5500 / 10 = 550
    p = prof.lengths.loc["prompt_len"]
    assert p.tolist() == [10, 100, 550.0, 500, 900, 1000, 1000, 1000]
    # gen sorted 10,20,...,90,1000: mean = (450 + 1000) / 10 = 145
    g = prof.lengths.loc["gen_len"]
    assert g.tolist() == [10, 10, 145.0, 50, 90, 1000, 1000, 1000]
    assert list(prof.lengths.columns) == ["count", "min", "mean", "p50", "p90", "p95", "p99", "max"]
    assert prof.lengths["p50"].dtype == np.int64 and prof.lengths["mean"].dtype == np.float64

    # Pearson on x = prompt/100, y = gen/10 (scale-free):
    # sum xy = 9+2+7+10+40+35+24+900+54+64 = 1145; mean x = 5.5, mean y = 145/10 = 14.5
    # Sxy = 1145 - 10*5.5*14.5 = 347.5; Sxx = 385 - 10*5.5^2 = 82.5
    # sum y^2 = 9+4+1+25+16+49+36+10000+81+64 = 10285; Syy = 10285 - 10*14.5^2 = 8182.5
    assert prof.correlation_pearson == pytest.approx(347.5 / math.sqrt(82.5 * 8182.5), rel=1e-12)
    # Spearman: ranks x = [3,1,7,2,10,5,4,9,6,8], ranks y = [3,2,1,5,4,7,6,10,9,8]
    # d = [0,-1,6,-3,6,-2,-2,-1,-3,0], sum d^2 = 100; rho = 1 - 6*100/(10*99) = 13/33
    assert prof.correlation_spearman == pytest.approx(13 / 33, rel=1e-12)

    # with fewer than 100 requests p99 is the max, so nothing is above it
    assert prof.outliers.empty
    assert list(prof.outliers.columns) == ["request_id", "field", "length", "ratio_to_p99"]

    # arrivals: duration 14 s, 9 gaps -> rate 9/14; gaps 2 (x5) and 1 (x4): mean 14/9,
    # E[g^2] = 24/9, var = 24/9 - 196/81 = 20/81, cv = (sqrt(20)/9) / (14/9) = sqrt(20)/14
    assert prof.duration_s == pytest.approx(14.0)
    assert prof.arrival_rate_per_s == pytest.approx(9 / 14)
    assert prof.interarrival_cv == pytest.approx(math.sqrt(20) / 14)


def test_profile_to_frame_is_tidy():
    prof = profile(_ten())
    tidy = prof.to_frame()
    assert list(tidy.columns) == ["field", "metric", "value"]
    assert tidy["value"].dtype == np.float64
    assert not tidy.duplicated(["field", "metric"]).any()
    look = tidy.set_index(["field", "metric"])["value"]
    assert look[("requests", "n_requests")] == 10
    assert look[("gen_len", "mean")] == 145.0
    assert look[("prompt_len", "p90")] == 900
    assert look[("prompt_len", "n_outliers")] == 0
    assert look[("prompt_len:gen_len", "correlation_spearman")] == pytest.approx(13 / 33)
    assert look[("arrival_s", "duration_s")] == pytest.approx(14.0)
    # every lengths cell appears once: 2 fields x 8 metrics
    assert tidy["field"].isin(["prompt_len", "gen_len"]).sum() == 2 * (8 + 1)


def test_profile_without_arrivals_and_degenerate_cases():
    df = _ten().drop(columns="arrival_s")
    prof = profile(df)
    assert prof.arrival_rate_per_s is None
    assert prof.interarrival_cv is None
    assert prof.duration_s is None
    tidy = prof.to_frame().set_index(["field", "metric"])["value"]
    assert math.isnan(tidy[("arrival_s", "interarrival_cv")])
    # constant lengths: correlations undefined (NaN), not an exception
    const = _frame(["a", "b", "c"], [5, 5, 5], [1, 2, 3], arrival_s=[0.0, 0.0, 0.0])
    prof = profile(const)
    assert math.isnan(prof.correlation_pearson) and math.isnan(prof.correlation_spearman)
    assert prof.duration_s == 0.0 and prof.arrival_rate_per_s is None
    one = profile(_frame(["a"], [7], [3], arrival_s=[1.5]))
    assert one.lengths.loc["prompt_len"].tolist() == [1, 7, 7.0, 7, 7, 7, 7, 7]
    assert one.arrival_rate_per_s is None and one.interarrival_cv is None


def test_profile_outliers_rule_by_hand():
    # N = 200: p95 = ceil(190)-th = 190th smallest, p99 = ceil(198)-th = 198th smallest.
    # prompt: 198 x 100, then 150 and 1000 -> p95 = p99 = 100.
    #   1000 > 100 and 1000 >= 2*100 -> outlier, ratio 10; 150 > 100 but 150 < 200 -> not.
    # gen: 199 x 50 and one 120 -> p95 = p99 = 50; 120 > 50 and 120 >= 100 -> ratio 2.4.
    n = 200
    prompt = np.full(n, 100)
    prompt[17], prompt[42] = 150, 1000
    gen = np.full(n, 50)
    gen[5] = 120
    ids = [f"q{i}" for i in range(n)]
    prof = profile(_frame(ids, prompt, gen))
    out = prof.outliers
    assert out["request_id"].tolist() == ["q42", "q5"]
    assert out["field"].tolist() == ["prompt_len", "gen_len"]
    assert out["length"].tolist() == [1000, 120]
    assert out["ratio_to_p99"].tolist() == pytest.approx([10.0, 2.4])
    assert out["length"].dtype == np.int64


def _slow_percentile(values, q):
    s = sorted(values)
    rank = max(1, math.ceil(q * len(s) - 1e-9))
    return s[rank - 1]


def _slow_average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 3000), st.integers(1, 3000)), min_size=2, max_size=300
    ).filter(lambda r: len({a for a, _ in r}) > 1 and len({b for _, b in r}) > 1)
)
def test_profile_matches_slow_reference(rows):
    prompt = [a for a, _ in rows]
    gen = [b for _, b in rows]
    prof = profile(_frame([f"x{i}" for i in range(len(rows))], prompt, gen))
    for field, values in (("prompt_len", prompt), ("gen_len", gen)):
        got = prof.lengths.loc[field]
        assert got["min"] == min(values) and got["max"] == max(values)
        assert got["mean"] == pytest.approx(statistics.fmean(values))
        for q in (50, 90, 95, 99):
            assert got[f"p{q}"] == _slow_percentile(values, q / 100)
        p95, p99 = got["p95"], got["p99"]
        expected = sorted(
            (i for i, v in enumerate(values) if v > p99 and v >= 2 * p95),
            key=lambda i: (-values[i], i),
        )
        sub = prof.outliers[prof.outliers["field"] == field]
        assert sub["request_id"].tolist() == [f"x{i}" for i in expected]
    assert prof.correlation_pearson == pytest.approx(statistics.correlation(prompt, gen), abs=1e-9)
    assert prof.correlation_spearman == pytest.approx(
        statistics.correlation(_slow_average_ranks(prompt), _slow_average_ranks(gen)), abs=1e-9
    )


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def test_validate_normalizes_types_and_keeps_extra_columns():
    df = _frame([7, 8], [12.0, 3], [5.0, 6], kind=["a", "b"])
    out = validate_requests(df)
    assert out["request_id"].tolist() == ["7", "8"]
    assert out["request_id"].dtype == object
    assert all(type(v) is str for v in out["request_id"])
    assert out["prompt_len"].dtype == np.int64 and out["prompt_len"].tolist() == [12, 3]
    assert out["gen_len"].dtype == np.int64 and out["gen_len"].tolist() == [5, 6]
    assert out["kind"].tolist() == ["a", "b"]
    assert df["request_id"].tolist() == [7, 8]  # the input is not modified


@pytest.mark.parametrize(
    ("frame", "field", "pos", "text"),
    [
        (_frame(["a", "b"], [1, 0], [1, 1]), "prompt_len", 1, "positive"),
        (_frame(["a", "b"], [1, 2], [-4, 1]), "gen_len", 0, "positive"),
        (_frame(["a", "b"], [1, 2.5], [1, 1]), "prompt_len", 1, "whole number"),
        (_frame(["a", "b"], [1, "abc"], [1, 1]), "prompt_len", 1, "'abc'"),
        (_frame(["a", "b"], [1, None], [1, 1]), "prompt_len", 1, "missing"),
        (_frame(["a", "b"], [1, True], [1, 1]), "prompt_len", 1, "whole number"),
        (_frame(["a", "b"], [1, MAX_LENGTH + 1], [1, 1]), "prompt_len", 1, "larger"),
        (_frame(["a", "b"], [1, 1], [1, float("inf")]), "gen_len", 1, "whole number"),
        (_frame(["a", "a"], [1, 1], [1, 1]), "request_id", 1, "duplicate"),
        (_frame(["a", ""], [1, 1], [1, 1]), "request_id", 1, "empty"),
        (_frame(["a", None], [1, 1], [1, 1]), "request_id", 1, "missing"),
        (_frame(["a", "b"], [1, 1], [1, 1], arrival_s=[0.0, -1.0]), "arrival_s", 1, "in [0,"),
        (_frame(["a", "b"], [1, 1], [1, 1], arrival_s=[0.0, np.nan]), "arrival_s", 1, "missing"),
    ],
)
def test_validate_errors_name_line_and_field(frame, field, pos, text):
    frame.attrs["source_lines"] = SourceLines([3, 9])
    with pytest.raises(InputError) as info:
        validate_requests(frame, source="reqs.jsonl")
    err = info.value
    assert err.path == "reqs.jsonl"
    assert err.field == field
    assert err.line == [3, 9][pos]
    assert text in err.message
    assert isinstance(err, ValueError)


def test_validate_table_level_errors():
    with pytest.raises(InputError, match="empty"):
        validate_requests(_frame([], [], []))
    with pytest.raises(InputError) as info:
        validate_requests(pd.DataFrame({"request_id": ["a"], "prompt_len": [1]}))
    assert info.value.field == "gen_len"
    with pytest.raises(InputError, match="DataFrame"):
        validate_requests([{"request_id": "a"}])  # type: ignore[arg-type]


def test_duplicate_names_both_lines_and_id():
    df = _frame(["a", "b", "a"], [1, 1, 1], [1, 1, 1])
    df.attrs["source_lines"] = SourceLines([2, 5, 8])
    with pytest.raises(InputError) as info:
        validate_requests(df, source="f.csv")
    err = info.value
    assert (err.line, err.field, err.request_id) == (8, "request_id", "a")
    assert "line 2" in err.message
    with pytest.raises(InputError, match=r"row 0 \(0-based\)"):
        validate_requests(_frame(["a", "b", "a"], [1, 1, 1], [1, 1, 1]))


def test_source_lines_follow_filtered_rows_and_survive_pandas_ops():
    df = _frame(["a", "b", "c", "d"], [1, 2, 3, 4], [1, 1, 1, 1])
    df.attrs["source_lines"] = SourceLines([2, 3, 5, 6])
    kept = df[df["prompt_len"] != 2].copy()  # labels 0, 2, 3
    kept.loc[3, "gen_len"] = 0
    with pytest.raises(InputError) as info:
        validate_requests(kept, source="x.csv")
    assert info.value.line == 6  # label 3 came from line 6, though it is row 2 now
    ok = validate_requests(df[df["prompt_len"] != 2])
    assert ok.attrs["source_lines"].tolist() == [2, 5, 6]
    # comparing attrs in concat / merge must not raise (a bare numpy array would)
    both = pd.concat([ok, validate_requests(df)])
    assert len(both) == 7
    merged = ok.merge(validate_requests(df), on="request_id")
    assert len(merged) == 3
    assert copy.deepcopy(ok.attrs)["source_lines"] == ok.attrs["source_lines"]
    assert np.asarray(ok.attrs["source_lines"]).dtype == np.int64


@pytest.mark.slow
def test_validate_a_million_requests():
    n = 1_000_000
    rng = np.random.default_rng(7)
    ids = np.strings.add("m", np.arange(n).astype(np.str_)).astype(object)
    df = _frame(ids, rng.integers(1, 131_073, n), rng.integers(1, 131_073, n).astype(float))
    df.loc[n - 1, "prompt_len"] = 131_072
    out = validate_requests(df)
    assert len(out) == n
    assert out["gen_len"].dtype == np.int64
    assert out["prompt_len"].max() == 131_072
    np.testing.assert_array_equal(out["gen_len"].to_numpy(), df["gen_len"].to_numpy())
    bad = df.copy()
    bad.loc[n - 2, "request_id"] = "m5"
    with pytest.raises(InputError) as info:
        validate_requests(bad)
    assert info.value.request_id == "m5"


_ids = st.text(min_size=1, max_size=12)


@st.composite
def request_tables(draw):
    ids = draw(st.lists(_ids, min_size=1, max_size=25, unique=True))
    n = len(ids)
    prompt = draw(st.lists(st.integers(1, MAX_LENGTH), min_size=n, max_size=n))
    gen = draw(st.lists(st.integers(1, 131_072), min_size=n, max_size=n))
    df = _frame(ids, prompt, gen)
    if draw(st.booleans()):
        times = st.floats(0, 1e7, allow_nan=False, allow_infinity=False)
        df["arrival_s"] = draw(st.lists(times, min_size=n, max_size=n))
    return df


@settings(max_examples=80, deadline=None)
@given(request_tables())
def test_validate_preserves_data_and_is_idempotent(df):
    out = validate_requests(df)
    assert out["request_id"].tolist() == df["request_id"].tolist()
    assert out["request_id"].is_unique
    assert out["prompt_len"].tolist() == df["prompt_len"].tolist()
    assert out["gen_len"].tolist() == df["gen_len"].tolist()
    if "arrival_s" in df:
        assert out["arrival_s"].tolist() == df["arrival_s"].tolist()
    pd.testing.assert_frame_equal(validate_requests(out), out)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), min_size=1, max_size=9))
def test_duplicates_are_found_like_a_slow_scan(ids):
    df = _frame(ids, [1] * len(ids), [1] * len(ids))
    df.attrs["source_lines"] = SourceLines(np.arange(len(ids)) * 2 + 1)
    seen: dict[str, int] = {}
    first_dup = None
    for i, rid in enumerate(ids):  # slow reference: the first repeat and where it was seen
        if rid in seen:
            first_dup = (i, seen[rid])
            break
        seen[rid] = i
    if first_dup is None:
        assert validate_requests(df)["request_id"].is_unique
        return
    with pytest.raises(InputError) as info:
        validate_requests(df)
    pos, earlier = first_dup
    assert info.value.line == 2 * pos + 1
    assert info.value.request_id == ids[pos]
    assert f"line {2 * earlier + 1}" in info.value.message


# ---------------------------------------------------------------------------------------------
# files: errors
# ---------------------------------------------------------------------------------------------

GOOD = _row("a", 10, 5)

JSONL_ERRORS = [
    # name, file text, line, field, words in the message
    ("bad_json", f'{GOOD}\n{{"request_id": "b", "prompt_len": 3\n', 2, None, "invalid JSON"),
    ("bad_json_after_blank", f"{GOOD}\n\n\n{{nope}}\n", 4, None, "invalid JSON"),
    ("array_line", f"{GOOD}\n\n[1, 2]\n", 3, None, "not a JSON object"),
    ("number_line", f"{GOOD}\n42\n", 2, None, "not a JSON object"),
    ("missing_field", f'{GOOD}\n{{"request_id": "b", "gen_len": 2}}\n', 2, "prompt_len", "missing"),
    ("missing_everywhere", '{"request_id": "a", "gen_len": 1}\n', 1, "prompt_len", "missing"),
    ("null_field", f"{GOOD}\n{_row('b', None, 1)}\n", 2, "prompt_len", "missing"),
    ("fraction", f"{GOOD}\n{_row('b', 12.5, 1)}\n", 2, "prompt_len", "12.5"),
    ("text", f"{GOOD}\n\n{_row('b', 'abc', 1)}\n", 3, "prompt_len", "'abc'"),
    ("zero", f"{GOOD}\n{_row('b', 3, 0)}\n", 2, "gen_len", "positive"),
    ("negative", f"{_row('b', -3, 1)}\n{GOOD}\n", 1, "prompt_len", "positive"),
    ("boolean", f"{GOOD}\n{_row('b', 3, True)}\n", 2, "gen_len", "whole number"),
    ("too_long", f"{GOOD}\n{_row('b', 2**31, 1)}\n", 2, "prompt_len", "larger"),
    ("duplicate", f"{GOOD}\n\n{_row('c', 1, 1)}\n{_row('a', 2, 2)}\n", 4, "request_id", "line 1"),
    ("duplicate_int", f"{_row(5, 1, 1)}\n{_row('5', 1, 1)}\n", 2, "request_id", "duplicate"),
    ("float_id", f"{GOOD}\n{_row(1.5, 1, 1)}\n", 2, "request_id", "string or an integer"),
    ("empty_file", "", None, None, "empty"),
    ("only_blank_lines", "\n   \n\t\n", None, None, "empty"),
]


@pytest.mark.parametrize(("name", "text", "line", "field", "words"), JSONL_ERRORS)
def test_jsonl_errors(tmp_path, name, text, line, field, words):
    path = tmp_path / f"{name}.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_requests(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    assert words in err.message
    if line is not None:
        assert str(err).startswith(f"{path}:{line}")


def test_jsonl_error_on_a_late_line_of_a_big_file(tmp_path):
    lines = [_row(f"r{i}", 100 + i, 1 + i % 7) for i in range(50_000)]
    lines[41_234] = _row("r41234", 17, 0)
    path = tmp_path / "big.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_requests(path)
    assert (info.value.line, info.value.field, info.value.request_id) == (
        41_235,
        "gen_len",
        "r41234",
    )


def test_jsonl_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD.encode() + b'\n{"request_id": "\xff", "prompt_len": 1, "gen_len": 1}\n')
    with pytest.raises(InputError, match="UTF-8") as info:
        read_requests(path)
    assert info.value.line == 2


def test_jsonl_lines_merged_or_split_are_not_misread(tmp_path):
    # two objects on line 1 and one object spread over lines 2-3: same count as lines
    path = tmp_path / "odd.jsonl"
    path.write_text(
        f'{GOOD} {_row("b", 1, 1)}\n{{"request_id": "c",\n"prompt_len": 1, "gen_len": 1}}\n'
    )
    with pytest.raises(InputError, match="invalid JSON") as info:
        read_requests(path)
    assert info.value.line == 1


CSV_HEADER = "request_id,prompt_len,gen_len\n"
CSV_ERRORS = [
    ("fraction", CSV_HEADER + "a,1,2\nb,12.5,3\n", 3, "prompt_len", "12.5"),
    ("text", CSV_HEADER + "a,1,2\n\nb,3,abc\n", 4, "gen_len", "'abc'"),
    ("empty_cell", CSV_HEADER + "a,1,2\nb,,3\n", 3, "prompt_len", "missing"),
    ("short_row", CSV_HEADER + "a,1,2\nb,4\n", 3, "gen_len", "missing"),
    ("long_row", CSV_HEADER + "a,1,2\n\nb,4,5,6\n", 4, None, "Expected 3 fields"),
    ("zero", CSV_HEADER + "a,0,2\n", 2, "prompt_len", "positive"),
    ("missing_column", "request_id,prompt_len\na,1\n", 1, "gen_len", "missing column"),
    ("missing_column_after_blank", "\nrequest_id,gen_len\na,1\n", 2, "prompt_len", "missing"),
    ("duplicate", CSV_HEADER + 'a,1,2\n"multi\nline",1,2\na,3,3\n', 5, "request_id", "line 2"),
    ("empty_id", CSV_HEADER + "a,1,2\n,1,2\n", 3, "request_id", "missing"),
    ("empty_file", "", None, None, "empty"),
    ("header_only", CSV_HEADER, None, None, "empty"),
]


@pytest.mark.parametrize(("name", "text", "line", "field", "words"), CSV_ERRORS)
def test_csv_errors(tmp_path, name, text, line, field, words):
    path = tmp_path / f"{name}.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_requests(path)
    err = info.value
    assert err.path == str(path)
    assert (err.line, err.field) == (line, field)
    assert words in err.message


def test_csv_keeps_ids_as_text_and_accepts_whole_floats(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(CSV_HEADER + "007,12.0,3\nNA,5,1\n", encoding="utf-8")
    df = read_requests(path)
    assert df["request_id"].tolist() == ["007", "NA"]
    assert df["prompt_len"].tolist() == [12, 5]
    assert df.attrs["source_lines"].tolist() == [2, 3]


def test_parquet_errors_name_the_row(tmp_path):
    path = tmp_path / "r.parquet"
    _frame(["a", "b", "c"], [1, 2, 3], [4, 5, -6]).to_parquet(path)
    with pytest.raises(InputError) as info:
        read_requests(path)
    assert (info.value.line, info.value.field, info.value.request_id) == (3, "gen_len", "c")
    _frame(["a", "b", "a"], [1, 2, 3], [4, 5, 6]).to_parquet(path)
    with pytest.raises(InputError, match="first seen at line 1") as info:
        read_requests(path)
    assert (info.value.line, info.value.request_id) == (3, "a")
    pd.DataFrame({"request_id": ["a"], "gen_len": [1]}).to_parquet(path)
    with pytest.raises(InputError) as info:
        read_requests(path)
    assert info.value.field == "prompt_len"
    path.write_text("not parquet")
    with pytest.raises(InputError, match="Parquet"):
        read_requests(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unknown request file type") as info:
        read_requests(tmp_path / "r.txt")
    assert info.value.path == str(tmp_path / "r.txt")
    with pytest.raises(InputError, match="unknown request file type"):
        write_requests(_ten(), tmp_path / "r.xlsx")
    with pytest.raises(InputError, match="no such file"):
        read_requests(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------------------------
# files: reading and round trips
# ---------------------------------------------------------------------------------------------


def test_jsonl_reading_details(tmp_path):
    path = tmp_path / "r.jsonl"
    text = (
        "\ufeff"
        + _row(7, 12.0, 3, note="x")
        + "\r\n\r\n   \n"
        + _row("b", 4, 5, when="2024-01-01T10:00:00")
        + "\n"
    )
    path.write_text(text, encoding="utf-8")
    df = read_requests(path)
    assert df["request_id"].tolist() == ["7", "b"]  # int id -> str
    assert df["prompt_len"].tolist() == [12, 4]  # 12.0 accepted as 12
    assert df["prompt_len"].dtype == np.int64
    assert df.attrs["source_lines"].tolist() == [1, 4]  # blank lines 2, 3 skipped
    assert df["when"].tolist()[1] == "2024-01-01T10:00:00"  # kept as text, not a timestamp
    assert df.columns.tolist() == ["request_id", "prompt_len", "gen_len", "note", "when"]


def test_jsonl_bulk_path_is_used_for_clean_files(tmp_path, monkeypatch):
    df = lognormal_workload(3000, seed=1)
    path = tmp_path / "clean.jsonl"
    write_requests(df, path)

    def fail(*args, **kwargs):
        raise AssertionError("line-by-line parser used for a clean file")

    import batchlab.io

    monkeypatch.setattr(batchlab.io, "_parse_lines", fail)
    pd.testing.assert_frame_equal(_plain(read_requests(path)), _plain(df))
    # a file whose ids mix numbers and strings needs the exact line-by-line parser
    path.write_text(_row(1, 1, 1) + "\n" + _row("b", 1, 1) + "\n")
    with pytest.raises(AssertionError, match="line-by-line"):
        read_requests(path)


def _with_extras(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    rng = np.random.default_rng(3)
    out["kind"] = np.where(out["prompt_len"] > 512, "long", "short")
    out["score"] = rng.random(len(out)) * 1e3
    out["tenant"] = rng.integers(0, 50, len(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_200k_rows_with_extra_columns(tmp_path, fmt):
    df = _with_extras(
        with_arrivals(
            lognormal_workload(200_000, seed=11, max_prompt_len=131_072, prompt_sigma=2.0),
            rate_per_s=100,
            seed=4,
        )
    )
    path = tmp_path / f"reqs.{fmt}"
    write_requests(df, path)
    back = read_requests(path)
    pd.testing.assert_frame_equal(_plain(back), _plain(df), check_dtype=False)
    for column in ("prompt_len", "gen_len"):
        assert back[column].dtype == np.int64
    assert back["request_id"].dtype == object
    assert back.attrs["source_lines"][0] == (2 if fmt == "csv" else 1)
    assert len(list(tmp_path.iterdir())) == 1  # no temporary files left behind


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_round_trip_arbitrary_ids_and_values(ids, data):
    n = len(ids)
    df = _frame(
        ids,
        data.draw(st.lists(st.integers(1, MAX_LENGTH), min_size=n, max_size=n)),
        data.draw(st.lists(st.integers(1, MAX_LENGTH), min_size=n, max_size=n)),
        arrival_s=data.draw(st.lists(st.floats(0, 1e9, allow_nan=False), min_size=n, max_size=n)),
        note=data.draw(st.lists(st.text(max_size=8), min_size=n, max_size=n)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            path = Path(tmp) / f"t.{fmt}"
            write_requests(df, path)
            back = _plain(read_requests(path))
            expected = _plain(validate_requests(df))
            if fmt == "csv":  # CSV infers the types of extra columns: compare request columns
                columns = ["request_id", "prompt_len", "gen_len", "arrival_s"]
                back, expected = back[columns], expected[columns]
            pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_write_is_atomic_and_validates(tmp_path):
    path = tmp_path / "r.jsonl"
    write_requests(_ten(), path)
    before = path.read_bytes()
    bad = _ten()
    bad.loc[3, "gen_len"] = 0
    with pytest.raises(InputError):
        write_requests(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]
    # one JSON object per line, in row order
    lines = before.decode().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [f"r{i}" for i in range(10)]
    assert json.loads(lines[0]) == {
        "request_id": "r0",
        "prompt_len": 300,
        "gen_len": 30,
        "arrival_s": 14.0,
    }


def test_jsonl_writer_handles_missing_and_nested_extras(tmp_path):
    df = _frame(["a", "b"], [1, 2], [3, 4])
    df["maybe"] = pd.array([5, None], dtype="Int64")
    df["flag"] = [True, False]
    df["f"] = [np.nan, 0.1]
    df["obj"] = [{"k": [1, 2]}, None]
    path = tmp_path / "x.jsonl"
    write_requests(df, path)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0] == {
        "request_id": "a",
        "prompt_len": 1,
        "gen_len": 3,
        "maybe": 5,
        "flag": True,
        "f": None,
        "obj": {"k": [1, 2]},
    }
    assert rows[1]["maybe"] is None and rows[1]["obj"] is None and rows[1]["f"] == 0.1


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------

GENERATORS = [
    (lognormal_workload, {}),
    (bimodal_workload, {}),
    (zipf_workload, {}),
]


@pytest.mark.parametrize(("gen", "kwargs"), GENERATORS)
def test_generators_are_seeded_valid_and_unique(gen, kwargs):
    a = gen(2000, seed=5, **kwargs)
    b = gen(2000, seed=5, **kwargs)
    c = gen(2000, seed=6, **kwargs)
    pd.testing.assert_frame_equal(a, b)
    assert not a["prompt_len"].equals(c["prompt_len"])
    assert a["request_id"].is_unique
    assert a["request_id"].iloc[0] == "req-000000" and a["request_id"].iloc[-1] == "req-001999"
    assert a["prompt_len"].dtype == np.int64 and a["gen_len"].dtype == np.int64
    assert (a["prompt_len"] >= 1).all() and (a["gen_len"] >= 1).all()
    pd.testing.assert_frame_equal(validate_requests(a), a)


def test_ids_widen_and_take_a_prefix():
    df = lognormal_workload(3, seed=0, id_prefix="job")
    assert df["request_id"].tolist() == ["job-000000", "job-000001", "job-000002"]
    assert wl._make_ids(1_000_001, "r")[-1] == "r-1000000"


def test_lognormal_medians_and_clipping():
    df = lognormal_workload(100_000, seed=2, prompt_median=400, gen_median=50)
    # the median of round(exp(N(log m, s))) is m up to sampling noise (~0.4 % here)
    assert df["prompt_len"].median() == pytest.approx(400, rel=0.03)
    assert df["gen_len"].median() == pytest.approx(50, rel=0.05)
    clipped = lognormal_workload(
        5000, seed=2, prompt_median=5000, prompt_sigma=2.0, max_prompt_len=3000, max_gen_len=7
    )
    assert clipped["prompt_len"].max() == 3000 and clipped["gen_len"].max() == 7
    flat = lognormal_workload(50, seed=1, prompt_sigma=0.0, gen_sigma=0.0)
    assert set(flat["prompt_len"]) == {512} and set(flat["gen_len"]) == {128}
    huge = lognormal_workload(2000, seed=1, prompt_median=1e6, prompt_sigma=50.0)
    assert huge["prompt_len"].between(1, 8192).all()


def test_bimodal_mix():
    df = bimodal_workload(50_000, seed=3, long_fraction=0.3)
    share = (df["kind"] == "document").mean()
    assert share == pytest.approx(0.3, abs=0.01)  # binomial sd = sqrt(.21/50000) ~ 0.002
    assert set(df["kind"]) == {"chat", "document"}
    by_kind = df.groupby("kind")[["prompt_len", "gen_len"]].median()
    assert by_kind.loc["document", "prompt_len"] > 10 * by_kind.loc["chat", "prompt_len"]
    assert by_kind.loc["document", "gen_len"] < by_kind.loc["chat", "gen_len"]
    assert set(bimodal_workload(100, seed=1, long_fraction=0.0)["kind"]) == {"chat"}
    assert set(bimodal_workload(100, seed=1, long_fraction=1.0)["kind"]) == {"document"}


def test_zipf_tail_follows_the_power_law():
    a, pmin = 1.8, 40
    df = zipf_workload(200_000, seed=4, a=a, prompt_min=pmin, max_prompt_len=10**6)
    x = df["prompt_len"].to_numpy()
    assert x.min() == pmin
    for threshold in (80, 400, 4000):
        # P(L >= t) = P(floor(pmin * U^(-1/(a-1))) >= t) = (t / pmin)^-(a-1) for integer t
        expected = (threshold / pmin) ** -(a - 1)
        assert (x >= threshold).mean() == pytest.approx(expected, rel=0.05)
    assert zipf_workload(1000, seed=4, a=1.05, max_prompt_len=5000)["prompt_len"].max() == 5000


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: lognormal_workload(0, seed=1), "n"),
        (lambda: lognormal_workload(10, seed=1, prompt_median=0), "prompt_median"),
        (lambda: lognormal_workload(10, seed=1, gen_sigma=-1), "gen_sigma"),
        (lambda: lognormal_workload(10, seed=1, max_prompt_len=0), "max_prompt_len"),
        (lambda: bimodal_workload(10, seed=1, long_fraction=1.5), "long_fraction"),
        (lambda: zipf_workload(10, seed=1, a=1.0), "a"),
        (lambda: zipf_workload(10, seed=1, a=float("nan")), "a"),
        (lambda: zipf_workload(10, seed=None), "seed"),  # type: ignore[arg-type]
        (lambda: bimodal_workload(10, seed=-1), "seed"),
        (lambda: with_arrivals(_ten(), rate_per_s=0, seed=1), "rate_per_s"),
        (lambda: with_arrivals(_ten(), rate_per_s=1, seed=1, burstiness=0), "burstiness"),
        (lambda: with_arrivals(_ten(), rate_per_s=1, seed=1, process="x"), "process"),
        (lambda: arrival_rate_over_time(_ten(), 0), "window_s"),
        (lambda: arrival_rate_over_time(_ten(), 1e-9), "window_s"),
        (lambda: arrival_rate_over_time(_ten().drop(columns="arrival_s"), 1.0), "arrival_s"),
    ],
)
def test_bad_arguments(call, field):
    with pytest.raises(InputError) as info:
        call()
    assert info.value.field == field


# ---------------------------------------------------------------------------------------------
# arrivals
# ---------------------------------------------------------------------------------------------


def _gaps_cv(df: pd.DataFrame) -> float:
    gaps = np.diff(df["arrival_s"].to_numpy())
    return float(gaps.std() / gaps.mean())


def test_poisson_arrivals():
    base = lognormal_workload(200_000, seed=1)
    df = with_arrivals(base, rate_per_s=40.0, seed=9)
    t = df["arrival_s"].to_numpy()
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    # mean gap 1/40 s; relative sd of the mean of 2e5 exponentials = 1/sqrt(2e5) ~ 0.0022
    assert (len(t) - 1) / t[-1] == pytest.approx(40.0, rel=0.01)
    assert _gaps_cv(df) == pytest.approx(1.0, abs=0.02)
    pd.testing.assert_frame_equal(df, with_arrivals(base, rate_per_s=40.0, seed=9))
    assert not df["arrival_s"].equals(with_arrivals(base, rate_per_s=40.0, seed=10)["arrival_s"])
    assert df.drop(columns="arrival_s").equals(base)
    prof = profile(df)
    assert prof.interarrival_cv == pytest.approx(_gaps_cv(df))
    assert prof.arrival_rate_per_s == pytest.approx(40.0, rel=0.01)


@pytest.mark.parametrize("cv", [0.5, 2.0, 3.0])
def test_bursty_arrivals_have_the_requested_cv(cv):
    base = lognormal_workload(200_000, seed=1)
    df = with_arrivals(base, rate_per_s=10.0, seed=3, process="bursty", burstiness=cv)
    t = df["arrival_s"].to_numpy()
    assert t[0] == 0.0
    assert (len(t) - 1) / t[-1] == pytest.approx(10.0, rel=0.03)
    assert _gaps_cv(df) == pytest.approx(cv, rel=0.05)


def test_arrival_rate_over_time_by_hand():
    df = _frame(list("abcdef"), [1] * 6, [1] * 6, arrival_s=[0.0, 0.3, 0.99, 1.0, 2.5, 3.0])
    out = arrival_rate_over_time(df, 1.0)
    # windows [0,1): 0, 0.3, 0.99 -> 3; [1,2): 1.0 -> 1; [2,3): 2.5 -> 1; [3,4): 3.0 -> 1
    assert out["window_start_s"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out["requests"].tolist() == [3, 1, 1, 1]
    assert out["rate_per_s"].tolist() == [3.0, 1.0, 1.0, 1.0]
    half = arrival_rate_over_time(df, 2.0)
    assert half["requests"].tolist() == [4, 2] and half["rate_per_s"].tolist() == [2.0, 1.0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=50),
    st.floats(0.01, 50),
)
def test_arrival_windows_match_slow_reference(times, window):
    df = _frame([f"i{i}" for i in range(len(times))], [1] * len(times), [1] * len(times))
    df["arrival_s"] = times
    out = arrival_rate_over_time(df, window)
    starts = out["window_start_s"].tolist()
    expected = [0] * len(starts)
    for t in times:  # the window whose [start, next start) holds t
        k = max(i for i, s in enumerate(starts) if s <= t)
        expected[k] += 1
    assert out["requests"].tolist() == expected
    assert out["requests"].sum() == len(times)
    assert starts[-1] <= max(times)
