"""Tests of batchlab.tables: one number format per column, units in the headers, integers as
integers and "—" for no value, in the chapters' tables (``table``) and the CLI's
(``text_table``). Regression tests of issue 12, first hour 2: chapter 00's first table showed
a p95 of 5.76e+06 ms, costs of 1.4e+12, ``n_batches`` as ``6.800000e+01`` and limits as
``NaN``, with no word on the units."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batchlab import tables
from batchlab.errors import InputError


def cells(shown: pd.DataFrame, column: str) -> list[str]:
    return shown[column].tolist()


def test_integers_print_as_integers_and_missing_as_a_dash():
    df = pd.DataFrame(
        {
            "n_batches": [68.0, 8.0],  # whole floats, as after .astype(float)
            "limit": [np.nan, None],
            "n_shapes": pd.array([8, pd.NA], dtype="Int64"),
        }
    )
    shown = tables.formatted(df)
    assert cells(shown, "n_batches (batches)") == ["68", "8"]
    assert cells(shown, "limit") == ["—", "—"]
    assert cells(shown, "n_shapes (shapes)") == ["8", "—"]
    text = tables.text_table(df)
    assert "e+" not in text and "NaN" not in text and "6.8" not in text


def test_units_in_every_header_from_names_and_conventions():
    df = pd.DataFrame(
        {
            "p95_latency_ms": [1.5],
            "total_cost": [3.0e6],
            "pad_ratio": [0.05],
            "prompt_padding": [12],
            "throughput_rps": [2.5],
            "duration_s": [9.5],
            "kv_cache_mb": [1.25],
            "policy": ["static"],
        }
    )
    assert list(tables.formatted(df).columns) == [
        "p95_latency_ms (ms)",
        "total_cost (cost units)",
        "pad_ratio (padding / useful tokens)",
        "prompt_padding (tokens)",
        "throughput_rps (requests/s)",
        "duration_s (s)",
        "kv_cache_mb (MB)",
        "policy",  # text: no unit
    ]
    # given units win; a header that already names its unit keeps it; "" means none
    given = tables.formatted(
        pd.DataFrame({"speedup": [1.5], "cost (1e12 cost units)": [1.2], "x_ms": [1.0]}),
        units={"speedup": "×", "x_ms": ""},
    )
    assert list(given.columns) == ["speedup (×)", "cost (1e12 cost units)", "x_ms"]
    assert tables.unit_of("ttft_p99_ms") == "ms" and tables.unit_of("cost_decode") == "cost units"
    assert tables.unit_of("mystery") is None


def test_one_number_format_per_column():
    df = pd.DataFrame(
        {
            "p95_latency_ms": [5_763_412.5, 123.25, 9.5],
            "pad_ratio": [0.0523, 0.00012, 1.0],
            "total_cost": [1.402e12, 7.4e12, 2.5e11],
            "tiny_ms": [1e-8, 2.5e-9, 0.0],
        }
    )
    shown = tables.formatted(df)
    # 4 significant digits for the largest of the column, the same decimals for every row
    assert cells(shown, "p95_latency_ms (ms)") == ["5,763,412", "123", "10"]
    # the smallest value that is not whole keeps one significant digit
    assert cells(shown, "pad_ratio (padding / useful tokens)") == ["0.0523", "0.0001", "1.0000"]
    # scaled by a power of 1,000 named in the header
    assert cells(shown, "total_cost (1e9 cost units)") == ["1,402.0", "7,400.0", "250.0"]
    assert cells(shown, "tiny_ms (ms)") == ["1.000e-08", "2.500e-09", "0.000e+00"]
    for column in shown.columns:
        decimals = {len(v.split(".")[1]) if "." in v else 0 for v in shown[column]}
        assert len(decimals) == 1, (column, shown[column].tolist())


def test_booleans_text_infinity_and_the_index():
    df = pd.DataFrame(
        {"met": [True, False], "name": ["a", None], "limit_ms": [math.inf, 2.0]},
        index=pd.Index(["planner", "baseline"]),
    )
    shown = tables.formatted(df)
    assert list(shown.columns) == ["", "met", "name", "limit_ms (ms)"]
    assert cells(shown, "") == ["planner", "baseline"]
    assert cells(shown, "met") == ["yes", "no"] and cells(shown, "name") == ["a", "—"]
    assert cells(shown, "limit_ms (ms)") == ["∞", "2"]
    assert list(tables.formatted(df.reset_index(drop=True)).columns)[0] == "met"  # no index
    multi = pd.DataFrame({"a_ms": [1, 2]}, index=pd.MultiIndex.from_tuples([("x", 1), ("y", 2)]))
    assert list(tables.formatted(multi).columns) == ["", "", "a_ms (ms)"]
    with pytest.raises(InputError):
        tables.formatted([1, 2])


def test_metric_tables_get_a_unit_column_and_one_format_per_row():
    # PlanResult.comparison(): one metric per row; achieved / lower_bound / limit share it
    df = pd.DataFrame(
        {
            "metric": ["total_cost", "pad_ratio", "p95_latency_ms", "n_batches"],
            "achieved": [1.187e12, 0.1577, 4_639_308.25, 176.0],
            "lower_bound": [1.092e12, 0.0305, 4_029_905.0, 16.0],
            "limit": [None, 0.35, 6e6, None],
            "limit_met": [True, True, True, True],
            "optimality_gap": [0.0867, np.nan, np.nan, np.nan],
        }
    )
    shown = tables.formatted(df)
    assert list(shown.columns) == [
        "metric",
        "unit",
        "achieved",
        "lower_bound",
        "limit",
        "limit_met",
        "optimality_gap (share of the bound)",
    ]
    assert shown.iloc[0].tolist()[:5] == ["total_cost", "1e12 cost units", "1.187", "1.092", "—"]
    assert shown.iloc[1].tolist()[:5] == [
        "pad_ratio",
        "padding / useful tokens",
        "0.1577",
        "0.0305",
        "0.3500",
    ]
    assert shown.iloc[2].tolist()[:5] == [
        "p95_latency_ms",
        "ms",
        "4,639,308",
        "4,029,905",
        "6,000,000",
    ]
    assert shown.iloc[3].tolist()[:5] == ["n_batches", "batches", "176", "16", "—"]
    assert cells(shown, "optimality_gap (share of the bound)") == ["0.08670", "—", "—", "—"]


def test_table_shows_html_and_text_alike():
    df = pd.DataFrame({"policy": ["static", "continuous"], "latency_p99_ms": [1234.5, 5.25]})
    t = tables.table(df)
    text = repr(t)
    assert text == str(t) == t.to_string() == tables.text_table(df)
    assert text.splitlines() == [
        "policy      latency_p99_ms (ms)",
        "static                    1,234",
        "continuous                    5",
    ]
    html = t._repr_html_()
    assert "<th style='text-align:right'>latency_p99_ms (ms)</th>" in html
    assert "<td style='text-align:left'>continuous</td>" in html and "1,234" in html
    assert t.data is df


def test_a_planner_comparison_reads_as_it_should():
    # what chapter 00 shows first: PlanResult.comparison() under limits, one of them absent
    from batchlab import planner, workload

    chat = workload.lognormal_workload(300, seed=3)
    limits = planner.Limits(max_pad_ratio=0.5, max_p95_latency_ms=1e9)
    result = planner.plan_requests({"chat": chat}, "padded-graph", max_shapes=4, limits=limits)
    text = tables.text_table(result["chat"].comparison())
    assert "e+" not in text and "NaN" not in text
    rows = {line.split()[1]: line.split() for line in text.splitlines()[1:]}
    n_batches = result["chat"].evaluation.n_batches
    assert rows["n_batches"][2:4] == ["batches", f"{n_batches:,}"]
    assert rows["total_cost"][2:5] == ["1e9", "cost", "units"]
    assert rows["total_cost"][-3] == "—"  # no cost limit
    assert rows["p95_latency_ms"][2] == "ms" and rows["p95_latency_ms"][5] == "1,000,000,000"


def test_plain_columns_print_as_their_dataframe_does_without_pandas():
    # text_table of a dict of columns (what `batchlab evaluate` prints, pandas never imported)
    # reads exactly as the same DataFrame: metric tables (one format per row) and plain ones
    frames = [
        pd.DataFrame(
            {
                "metric": ["total_cost", "pad_ratio", "p95_latency_ms", "n_batches"],
                "value": [2.846e14, 0.06811, 3_973_490.4, 9514],
            }
        ),
        pd.DataFrame(
            {
                "metric": ["total_cost", "n_batches"],
                "achieved": [1.187e12, 176.0],
                "limit": [None, 200.0],
                "limit_met": [True, False],
            }
        ),
        pd.DataFrame({"policy": ["static", None], "latency_p99_ms": [1234.5, math.inf]}),
        pd.DataFrame({"a_ms": [], "b": []}),
    ]
    for df in frames:
        columns = {c: df[c].tolist() for c in df.columns}
        assert tables.text_table(columns) == tables.text_table(df)
        units = {str(df.columns[-1]): "GPU-ms"}
        assert tables.text_table(columns, units=units) == tables.text_table(df, units=units)
    with pytest.raises(InputError, match="lengths"):
        tables.text_table({"a": [1, 2], "b": [1]})
