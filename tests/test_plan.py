"""Tests of batchlab.plan: validation, JSONL files, verify / verify_plans, baseline_plan."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference import ceil_to, reference_verify, valid_case_strategy

from batchlab.errors import InputError, VerificationError
from batchlab.plan import (
    LIST_LIMIT,
    PLAN_COLUMNS,
    VIOLATION_KINDS,
    VerificationReport,
    baseline_plan,
    bucketed_plan,
    plan_from_batches,
    read_plan,
    validate_plan,
    verify,
    verify_plans,
    write_plan,
)

G = 64


def frames(case):
    reqs, plan = case
    return pd.DataFrame(reqs), pd.DataFrame(plan)


# ---------------------------------------------------------------------------------------------
# validate_plan
# ---------------------------------------------------------------------------------------------
def test_validate_plan_fills_defaults_and_normalizes():
    df = pd.DataFrame(
        {
            "request_id": [1, 2],
            "batch_id": ["b0", "b0"],
            "seq_align": [128.0, 128.0],
            "note": ["x", "y"],
        }
    )
    out = validate_plan(df)
    assert list(out.columns) == [*PLAN_COLUMNS, "note"]
    assert list(out["request_id"]) == ["1", "2"]
    assert out["request_id"].dtype == object and out["batch_id"].dtype == object
    assert all(type(v) is str for v in out["request_id"])
    assert out["seq_align"].dtype == np.int64 and list(out["seq_align"]) == [128, 128]
    assert list(out["heads_align"]) == [32, 32] and list(out["hidden_align"]) == [4096, 4096]
    assert list(out["note"]) == ["x", "y"]


@pytest.mark.parametrize(
    "column, values, field, rid",
    [
        ("seq_align", [128, 0], "seq_align", "r2"),
        ("seq_align", [128, 12.5], "seq_align", "r2"),
        ("seq_align", [128, "abc"], "seq_align", "r2"),
        ("seq_align", ["128", 128], "seq_align", "r1"),  # text is no number, as in the file
        ("request_id", ["r1", 2.0], "request_id", None),  # a float id would become "2.0"
        ("heads_align", [-32, 32], "heads_align", "r1"),
        ("hidden_align", [4096, None], "hidden_align", "r2"),
        ("batch_id", ["b0", None], "batch_id", "r2"),
    ],
)
def test_validate_plan_bad_values_name_field_and_request(column, values, field, rid):
    df = pd.DataFrame(
        {"request_id": ["r1", "r2"], "batch_id": ["b0", "b0"], "seq_align": [128, 128]}
    )
    df[column] = values
    with pytest.raises(InputError) as info:
        validate_plan(df, source="plan.jsonl")
    assert info.value.field == field and info.value.request_id == rid
    assert info.value.path == "plan.jsonl"


def test_validate_plan_missing_column_and_empty():
    with pytest.raises(InputError) as info:
        validate_plan(pd.DataFrame({"request_id": ["a"], "batch_id": ["b"]}))
    assert info.value.field == "seq_align"
    with pytest.raises(InputError, match="empty"):
        validate_plan(pd.DataFrame(columns=["request_id", "batch_id", "seq_align"]))
    with pytest.raises(InputError):
        validate_plan([{"request_id": "a"}])  # type: ignore[arg-type]


def test_validate_plan_allows_duplicate_ids():
    df = pd.DataFrame({"request_id": ["a", "a"], "batch_id": ["b", "b"], "seq_align": [64, 64]})
    assert len(validate_plan(df)) == 2


# ---------------------------------------------------------------------------------------------
# JSONL files
# ---------------------------------------------------------------------------------------------
def test_jsonl_round_trip_and_format(tmp_path):
    plan = pd.DataFrame(
        {
            "request_id": ['q"uote', "ünï", "r3"],
            "batch_id": ["b000001", "b000000", "b000000"],
            "seq_align": [128, 64, 64],
            "heads_align": [32, 16, 16],
            "hidden_align": [4096, 2048, 2048],
        }
    )
    path = tmp_path / "sub" / "plan.jsonl"
    write_plan(plan, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0]) == {
        "request_id": 'q"uote',
        "batch_id": "b000001",
        "shape": {"seq_align": 128, "heads_align": 32, "hidden_align": 4096},
    }
    back = read_plan(path)
    pd.testing.assert_frame_equal(back, validate_plan(plan))
    from batchlab.plan import _read_plan_arrow

    assert _read_plan_arrow(path) is not None  # a file write_plan wrote takes the fast path
    assert [p.name for p in path.parent.iterdir()] == ["plan.jsonl"]  # no temp file left


@settings(max_examples=25, deadline=None)
@given(case=valid_case_strategy())
def test_jsonl_round_trip_random(tmp_path_factory, case):
    _, plan = frames(case)
    path = tmp_path_factory.mktemp("rt") / "plan.jsonl"
    write_plan(plan, path)
    pd.testing.assert_frame_equal(read_plan(path), validate_plan(plan))


REC = '{{"request_id": "{}", "batch_id": "b0", "shape": {{"seq_align": 64}}}}'


@pytest.mark.parametrize(
    "text, line",
    [
        # accepted by Arrow's JSON reader, but not one JSON object per line
        (REC.format("a") + "\n" + REC.format("b") + " " + REC.format("c") + "\n", 2),
        (REC.format("a") + "\n" + REC.format("b").replace(", ", ",\n", 1) + "\n", 2),
    ],
)
def test_read_plan_rejects_what_only_arrow_would_accept(tmp_path, text, line):
    path = tmp_path / "p.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_plan(path)
    assert info.value.line == line and "invalid JSON" in info.value.message


def test_read_plan_accepts_what_only_the_line_reader_accepts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"request_id": 7, "batch_id": 3, "shape": {"seq_align": 64.0}}\n'
        "   \n"
        '{"request_id": "x", "batch_id": "b", "shape": {"seq_align": 128, "heads_align": 8}}\r\n',
        encoding="utf-8",
    )
    plan = read_plan(path)
    assert list(plan["request_id"]) == ["7", "x"] and list(plan["batch_id"]) == ["3", "b"]
    assert list(plan["seq_align"]) == [64, 128] and list(plan["heads_align"]) == [32, 8]
    # a UTF-8 byte-order mark is ignored, as for request files (one JSON Lines reader)
    path.write_text("\ufeff" + REC.format("a") + "\n", encoding="utf-8")
    assert list(read_plan(path)["request_id"]) == ["a"]


@settings(max_examples=20, deadline=None)
@given(case=valid_case_strategy(), blank=st.booleans())
def test_fast_and_line_readers_agree(tmp_path_factory, case, blank):
    from batchlab.plan import _read_plan_lines

    _, plan = frames(case)
    path = tmp_path_factory.mktemp("agree") / "plan.jsonl"
    write_plan(plan, path)
    if blank:
        path.write_text("\n" + path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    fast = read_plan(path)
    pd.testing.assert_frame_equal(fast, _read_plan_lines(path))
    pd.testing.assert_frame_equal(fast, validate_plan(plan))


def test_read_plan_defaults_blank_lines_and_duplicates(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"request_id": "a", "batch_id": "b0", "shape": {"seq_align": 64}}\n'
        "\n"
        '{"request_id": "a", "batch_id": "b0", "shape": {"seq_align": 64, "heads_align": 8}}\n',
        encoding="utf-8",
    )
    plan = read_plan(path)
    assert list(plan["request_id"]) == ["a", "a"]  # duplicates are verify's business
    assert list(plan["heads_align"]) == [32, 8] and list(plan["hidden_align"]) == [4096, 4096]


GOOD = '{"request_id": "r1", "batch_id": "b0", "shape": {"seq_align": 64}}'


@pytest.mark.parametrize(
    "bad, field, message",
    [
        ('{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": 64}', None, "invalid JSON"),
        ('["r3", "b0"]', None, "JSON object"),
        ('{"batch_id": "b0", "shape": {"seq_align": 64}}', "request_id", "missing"),
        ('{"request_id": "r3", "shape": {"seq_align": 64}}', "batch_id", "missing"),
        ('{"request_id": "r3", "batch_id": "b0"}', "shape", "missing"),
        ('{"request_id": "r3", "batch_id": "b0", "shape": 64}', "shape", "object"),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"heads_align": 32}}',
            "shape.seq_align",
            "missing",
        ),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": 0}}',
            "shape.seq_align",
            "positive",
        ),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": -64}}',
            "shape.seq_align",
            "positive",
        ),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": 64.5}}',
            "shape.seq_align",
            "whole",
        ),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": "64"}}',
            "shape.seq_align",
            "whole",
        ),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": true}}',
            "shape.seq_align",
            "whole",
        ),
        (
            '{"request_id": "r3", "batch_id": "b0", "shape": {"seq_align": 64, "hidden_align": 0}}',
            "shape.hidden_align",
            "positive",
        ),
        (
            '{"request_id": ["r3"], "batch_id": "b0", "shape": {"seq_align": 64}}',
            "request_id",
            "string",
        ),
        (
            '{"request_id": "r3", "batch_id": null, "shape": {"seq_align": 64}}',
            "batch_id",
            "missing",
        ),
    ],
)
def test_read_plan_errors_name_file_line_and_field(tmp_path, bad, field, message):
    path = tmp_path / "bad.jsonl"
    # the bad record is on line 4 (line 2 is blank)
    path.write_text(GOOD + "\n\n" + GOOD.replace("r1", "r2") + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_plan(path)
    err = info.value
    assert err.path == str(path) and err.line == 4 and err.field == field
    assert message in err.message
    assert f"{path}:4" in str(err)


def test_read_plan_missing_file_and_empty_file(tmp_path):
    with pytest.raises(InputError) as info:
        read_plan(tmp_path / "nope.jsonl")
    assert info.value.path == str(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="no rows"):
        read_plan(empty)


def test_write_plan_failure_leaves_old_file(tmp_path):
    path = tmp_path / "plan.jsonl"
    path.write_text("old\n", encoding="utf-8")
    bad = pd.DataFrame({"request_id": ["a"], "batch_id": ["b"], "seq_align": [0]})
    with pytest.raises(InputError):
        write_plan(bad, path)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["plan.jsonl"]


# ---------------------------------------------------------------------------------------------
# plan_from_batches
# ---------------------------------------------------------------------------------------------
def test_plan_from_batches():
    plan = plan_from_batches(["a", "b", "c"], [3, 0, 3], [128, 64, 128])
    assert list(plan["batch_id"]) == ["b000003", "b000000", "b000003"]
    assert list(plan["seq_align"]) == [128, 64, 128]
    assert list(plan["heads_align"]) == [32] * 3 and list(plan["hidden_align"]) == [4096] * 3
    plan = plan_from_batches(np.array(["a", "b"]), ["x", "y"], 256, heads_align=8)
    assert list(plan["seq_align"]) == [256, 256] and list(plan["heads_align"]) == [8, 8]
    with pytest.raises(InputError):
        plan_from_batches(["a", "b"], ["x"], 64)
    with pytest.raises(InputError):
        plan_from_batches(["a"], [-1], 64)
    with pytest.raises(InputError):
        plan_from_batches(["a", "b"], ["x", "y"], [64, 65.5])


# ---------------------------------------------------------------------------------------------
# verify: known cases
# ---------------------------------------------------------------------------------------------
def small():
    requests = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "prompt_len": [100, 30, 200, 64],
            "gen_len": [1, 2, 3, 4],
        }
    )
    plan = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "batch_id": ["b0", "b0", "b1", "b1"],
            "seq_align": [128, 128, 256, 256],
        }
    )
    return requests, plan


def test_verify_valid_plan():
    requests, plan = small()
    report = verify(requests, plan)
    assert report.ok and report.violations == () and report.kinds == ()
    assert report.n_shapes == 2
    assert report.shapes == ((128, 32, 4096), (256, 32, 4096))
    assert report.raise_if_invalid() is report
    assert verify(requests, plan, max_shapes=2).ok


def test_verify_reports_every_violation_at_once():
    requests, plan = small()
    bad = pd.DataFrame(
        {
            # "d" missing, "a" twice, "zz" unknown
            "request_id": ["a", "b", "c", "a", "zz"],
            "batch_id": ["b0", "b0", "b1", "b2", "b2"],
            # b0 has two shapes (128 and 192); b1 is 250 (misaligned, and below c's 256);
            # b2 is 64 (below a's 128)
            "seq_align": [128, 192, 250, 64, 64],
        }
    )
    report = verify(requests, bad, max_shapes=3)
    assert not report.ok
    assert report.kinds == (
        "missing",
        "duplicate",
        "unknown",
        "multi_shape",
        "misaligned",
        "undersized",
        "too_many_shapes",
    )
    v = dict(zip(report.kinds, report.violations, strict=True))
    assert "'d'" in v["missing"]
    assert "'a' (2 times)" in v["duplicate"]
    assert "'zz'" in v["unknown"]
    assert "'b0' ((128, 32, 4096), (192, 32, 4096))" in v["multi_shape"]
    assert "'b1' (seq_align 250)" in v["misaligned"]
    assert "'c' in batch 'b1' (aligned prompt 256 > seq_align 250)" in v["undersized"]
    assert "'a' in batch 'b2' (aligned prompt 128 > seq_align 64)" in v["undersized"]
    assert "4 distinct shapes" in v["too_many_shapes"] and "max_shapes = 3" in v["too_many_shapes"]
    assert report.n_shapes == 4
    with pytest.raises(VerificationError) as info:
        report.raise_if_invalid()
    assert info.value.violations == list(report.violations)


def test_heads_and_hidden_are_part_of_the_shape():
    requests, plan = small()
    # same seq_align, different heads_align in b0 and different hidden_align in b1
    plan = plan.assign(heads_align=[32, 16, 32, 32], hidden_align=[4096, 4096, 4096, 2048])
    report = verify(requests, plan)
    assert report.kinds == ("multi_shape",)
    assert "2 batch(es)" in report.violations[0]
    assert "'b0' ((128, 16, 4096), (128, 32, 4096))" in report.violations[0]
    assert "'b1' ((256, 32, 2048), (256, 32, 4096))" in report.violations[0]
    # four distinct triples, although only two distinct seq_aligns
    assert report.n_shapes == 4
    fixed = plan.assign(heads_align=[16, 16, 32, 32], hidden_align=[4096, 4096, 2048, 2048])
    assert verify(requests, fixed, max_shapes=2).ok
    # b1 now has heads 32 and 8: three triples in all, above a cap of 2
    assert verify(requests, fixed.assign(heads_align=[16, 16, 32, 8]), max_shapes=2).kinds == (
        "multi_shape",
        "too_many_shapes",
    )


def test_verify_truncates_long_lists():
    n = 1000
    requests = pd.DataFrame(
        {"request_id": [f"r{i}" for i in range(n)], "prompt_len": [10] * n, "gen_len": [1] * n}
    )
    plan = pd.DataFrame({"request_id": ["r0"], "batch_id": ["b"], "seq_align": [64]})
    report = verify(requests, plan)
    assert report.kinds == ("missing",)
    msg = report.violations[0]
    assert msg.startswith("missing: 999 request(s)")
    assert f"... and {999 - LIST_LIMIT} more" in msg
    assert "'r1'" in msg and "'r999'" not in msg
    assert len(msg) < 400


def test_verify_checks_granularity():
    requests, plan = small()
    # with g = 128: 128 and 256 are multiples; b's S = 128 and c's S = 256 still fit
    assert verify(requests, plan, granularity=128).ok
    # with g = 256: 128 is misaligned and a, b (aligned 256) no longer fit in 128
    report = verify(requests, plan, granularity=256)
    assert report.kinds == ("misaligned", "undersized")
    with pytest.raises(InputError):
        verify(requests, plan, granularity=0)
    with pytest.raises(InputError):
        verify(requests, plan, max_shapes=0)


def test_verify_bad_tables_raise_input_error():
    requests, plan = small()
    with pytest.raises(InputError):
        verify(requests.assign(prompt_len=[1, 2, 3, -4]), plan)
    with pytest.raises(InputError):
        verify(requests, plan.drop(columns=["batch_id"]))


# ---------------------------------------------------------------------------------------------
# verify: hypothesis, injected violations
# ---------------------------------------------------------------------------------------------
def kinds_of(report: VerificationReport) -> set[str]:
    assert len(report.kinds) == len(report.violations)
    for kind, msg in zip(report.kinds, report.violations, strict=True):
        assert kind in VIOLATION_KINDS and msg.startswith(f"{kind}: ")
    return set(report.kinds)


@settings(max_examples=40, deadline=None)
@given(case=valid_case_strategy())
def test_valid_plans_verify_ok(case):
    requests, plan = frames(case)
    report = verify(requests, plan)
    assert report.ok, report.violations
    assert reference_verify(*case) == {}
    shapes = {(int(s), 32, 4096) for s in plan["seq_align"]}
    assert report.n_shapes == len(shapes) and set(report.shapes) == shapes
    assert verify(requests, plan, max_shapes=len(shapes)).ok


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy(), data=st.data())
def test_dropped_request_is_reported_missing(case, data):
    reqs, plan = case
    assume(len(plan) >= 2)
    i = data.draw(st.integers(0, len(plan) - 1))
    dropped = plan[:i] + plan[i + 1 :]
    report = verify(pd.DataFrame(reqs), pd.DataFrame(dropped))
    assert kinds_of(report) == {"missing"}
    assert repr(plan[i]["request_id"]) in report.violations[0]


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy(), data=st.data())
def test_duplicated_request_is_reported(case, data):
    reqs, plan = case
    i = data.draw(st.integers(0, len(plan) - 1))
    report = verify(pd.DataFrame(reqs), pd.DataFrame([*plan, dict(plan[i])]))
    assert kinds_of(report) == {"duplicate"}
    assert f"{plan[i]['request_id']!r} (2 times)" in report.violations[0]


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy(), data=st.data())
def test_unknown_id_is_reported(case, data):
    reqs, plan = case
    i = data.draw(st.integers(0, len(plan) - 1))
    ghost = "".join(r["request_id"] for r in reqs) + "#ghost"
    report = verify(pd.DataFrame(reqs), pd.DataFrame([*plan, {**plan[i], "request_id": ghost}]))
    assert kinds_of(report) == {"unknown"}
    assert repr(ghost) in report.violations[0]


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy(), data=st.data())
def test_batch_with_two_shapes_is_reported(case, data):
    reqs, plan = case
    sizes = pd.Series([r["batch_id"] for r in plan]).value_counts()
    assume((sizes >= 2).any())
    rows = [i for i, r in enumerate(plan) if sizes[r["batch_id"]] >= 2]
    i = data.draw(st.sampled_from(rows))
    plan = [dict(r) for r in plan]
    plan[i]["seq_align"] += G  # larger and aligned: only the batch's shape count is wrong
    report = verify(pd.DataFrame(reqs), pd.DataFrame(plan))
    assert kinds_of(report) == {"multi_shape"}
    assert repr(plan[i]["batch_id"]) in report.violations[0]


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy(), data=st.data(), shift=st.integers(1, G - 1))
def test_misaligned_batch_is_reported(case, data, shift):
    reqs, plan = case
    bid = data.draw(st.sampled_from(sorted({r["batch_id"] for r in plan})))
    plan = [{**r, "seq_align": r["seq_align"] + shift} if r["batch_id"] == bid else r for r in plan]
    report = verify(pd.DataFrame(reqs), pd.DataFrame(plan))
    assert kinds_of(report) == {"misaligned"}
    assert repr(bid) in report.violations[0]


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy(), data=st.data())
def test_undersized_batch_is_reported(case, data):
    reqs, plan = case
    prompt = {r["request_id"]: r["prompt_len"] for r in reqs}
    need: dict[str, int] = {}
    for r in plan:
        need[r["batch_id"]] = max(need.get(r["batch_id"], 0), ceil_to(prompt[r["request_id"]], G))
    candidates = sorted(b for b, s in need.items() if s >= 2 * G)
    assume(candidates)
    bid = data.draw(st.sampled_from(candidates))
    new = need[bid] - G
    plan = [{**r, "seq_align": new} if r["batch_id"] == bid else r for r in plan]
    report = verify(pd.DataFrame(reqs), pd.DataFrame(plan))
    assert kinds_of(report) == {"undersized"}
    expected = {
        r["request_id"]
        for r in plan
        if r["batch_id"] == bid and ceil_to(prompt[r["request_id"]], G) > new
    }
    assert report.violations[0].startswith(f"undersized: {len(expected)} request(s)")
    for rid in list(expected)[:LIST_LIMIT] if len(expected) <= LIST_LIMIT else []:
        assert repr(rid) in report.violations[0]


@settings(max_examples=30, deadline=None)
@given(case=valid_case_strategy())
def test_shape_cap_is_reported(case):
    requests, plan = frames(case)
    n_shapes = plan["seq_align"].nunique()
    assume(n_shapes >= 2)
    report = verify(requests, plan, max_shapes=n_shapes - 1)
    assert kinds_of(report) == {"too_many_shapes"}
    assert report.violations[0].startswith(f"too_many_shapes: {n_shapes} distinct shapes")
    assert verify(requests, plan, max_shapes=n_shapes).ok


MUTATIONS = (
    "drop",
    "duplicate",
    "unknown",
    "reshape_row",
    "rehead_row",
    "shift_batch",
    "shrink_batch",
)


@settings(max_examples=60, deadline=None)
@given(
    case=valid_case_strategy(max_n=12),
    ops=st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10**6), st.integers(-3, 3)),
        min_size=1,
        max_size=4,
    ),
    cap=st.one_of(st.none(), st.integers(1, 4)),
)
def test_verify_agrees_with_reference_on_random_corruptions(case, ops, cap):
    reqs, plan = case
    plan = [dict(r) for r in plan]
    for op, pick, delta in ops:
        if not plan:
            break
        i = pick % len(plan)
        if op == "drop" and len(plan) > 1:
            plan.pop(i)
        elif op == "duplicate":
            plan.append(dict(plan[i]))
        elif op == "unknown":
            plan.append({**plan[i], "request_id": f"{plan[i]['request_id']}~{pick}"})
        elif op == "reshape_row":
            plan[i]["seq_align"] = max(1, plan[i]["seq_align"] + delta * 32)
        elif op == "rehead_row":
            plan[i]["heads_align"] = 32 + 8 * delta if delta else 32
        elif op in ("shift_batch", "shrink_batch"):
            bid = plan[i]["batch_id"]
            step = delta * (G if op == "shrink_batch" else 7)
            for r in plan:
                if r["batch_id"] == bid:
                    r["seq_align"] = max(1, r["seq_align"] + step)
    expected = reference_verify(reqs, plan, max_shapes=cap, granularity=G)
    report = verify(pd.DataFrame(reqs), pd.DataFrame(plan), max_shapes=cap, granularity=G)
    assert kinds_of(report) == set(expected)
    assert report.ok == (not expected)
    messages = dict(zip(report.kinds, report.violations, strict=True))
    for kind, ids in expected.items():
        msg = messages[kind]
        if kind == "too_many_shapes":
            assert msg.startswith(f"too_many_shapes: {next(iter(ids))} distinct shapes")
            continue
        count = int(re.search(r"(\d[\d,]*) (request|batch)", msg).group(1).replace(",", ""))
        assert count == len(ids), (kind, msg, ids)
        if len(ids) <= LIST_LIMIT:
            for x in ids:
                assert repr(x) in msg, (kind, x, msg)


def test_id_lookup_with_and_without_arrow():
    from batchlab.plan import _lookup

    keys = np.array(["a", "b", "ü"], dtype=object)
    assert list(_lookup(keys, np.array(["ü", "c", "a", "a"], dtype=object))) == [2, -1, 0, 0]
    # lone surrogates cannot be UTF-8 encoded for Arrow: the Python-object fallback is used
    keys = np.array(["\ud800x", "b"], dtype=object)
    assert list(_lookup(keys, np.array(["b", "\ud800x", "z\udfff"], dtype=object))) == [1, 0, -1]


# ---------------------------------------------------------------------------------------------
# verify_plans
# ---------------------------------------------------------------------------------------------
def test_verify_plans_counts_shapes_across_plans():
    r1, p1 = small()  # shapes 128, 256
    r2 = pd.DataFrame({"request_id": ["x", "y"], "prompt_len": [500, 20], "gen_len": [1, 1]})
    p2 = pd.DataFrame({"request_id": ["x", "y"], "batch_id": ["c0", "c1"], "seq_align": [512, 128]})
    # union of shapes: 128, 256, 512 -> 3
    report = verify_plans([r1, r2], [p1, p2], max_shapes=3)
    assert report.ok and report.n_shapes == 3
    assert [s[0] for s in report.shapes] == [128, 256, 512]
    report = verify_plans([r1, r2], [p1, p2], max_shapes=2)
    assert report.kinds == ("too_many_shapes",)
    assert "3 distinct shapes" in report.violations[0] and "across 2 plans" in report.violations[0]
    # each plan alone is within the cap of 2
    assert verify(r1, p1, max_shapes=2).ok and verify(r2, p2, max_shapes=2).ok


def test_verify_plans_prefixes_violations_with_plan_index_or_name():
    r1, p1 = small()
    r2 = pd.DataFrame({"request_id": ["x", "y"], "prompt_len": [500, 20], "gen_len": [1, 1]})
    p2 = pd.DataFrame({"request_id": ["x"], "batch_id": ["c0"], "seq_align": [512]})
    report = verify_plans([r1, r2], [p1, p2])
    assert report.violations == (report.violations[0],)
    assert (
        report.violations[0].startswith("plan 1: missing: 1 request(s)")
        and "'y'" in report.violations[0]
    )
    assert report.kinds == ("missing",)
    named = verify_plans({"chat": r1, "docs": r2}, {"chat": p1, "docs": p2})
    assert named.violations[0].startswith("plan 'docs': missing")
    shared = verify_plans(r1, {"a": p1, "b": p1.iloc[:3]})
    assert shared.kinds == ("missing",) and shared.violations[0].startswith("plan 'b': missing")
    with pytest.raises(InputError):
        verify_plans([r1], [p1, p2])
    with pytest.raises(InputError):
        verify_plans({"chat": r1}, {"docs": p1})


# ---------------------------------------------------------------------------------------------
# baseline_plan
# ---------------------------------------------------------------------------------------------
def test_baseline_plan_by_hand():
    requests = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(6)],
            "prompt_len": [300, 10, 1000, 70, 200, 130],
            "gen_len": [1] * 6,
        }
    )
    plan = baseline_plan(requests, k=3)
    # aligned: r0 320, r1 64, r2 1024, r3 128, r4 256, r5 192; sorted 64 128 192 256 320 1024
    # ranks ceil(j*6/3) = 2, 4, 6 -> shapes 128, 256, 1024
    # r1 (64), r3 (128) -> 128; r5 (192), r4 (256) -> 256; r0 (320), r2 (1024) -> 1024
    assert list(plan.columns) == list(PLAN_COLUMNS)
    assert list(plan["request_id"]) == ["r1", "r3", "r4", "r5", "r0", "r2"]
    assert list(plan["batch_id"]) == ["b000000"] * 2 + ["b000001"] * 2 + ["b000002"] * 2
    assert list(plan["seq_align"]) == [128, 128, 256, 256, 1024, 1024]
    assert verify(requests, plan, max_shapes=3).ok


def test_baseline_plan_few_distinct_lengths_and_bad_k():
    requests = pd.DataFrame(
        {"request_id": ["a", "b", "c"], "prompt_len": [5, 6, 7], "gen_len": [1, 1, 1]}
    )
    plan = baseline_plan(requests, k=8)  # all align to 64: one shape, one batch
    assert list(plan["seq_align"]) == [64, 64, 64] and set(plan["batch_id"]) == {"b000000"}
    with pytest.raises(InputError):
        baseline_plan(requests, k=0)


@settings(max_examples=40, deadline=None)
@given(
    prompts=st.lists(st.integers(1, 20_000), min_size=1, max_size=200),
    k=st.integers(1, 12),
    g=st.sampled_from([1, 16, 64, 128]),
)
def test_baseline_plan_properties(prompts, k, g):
    n = len(prompts)
    requests = pd.DataFrame(
        {"request_id": [f"q{i}" for i in range(n)], "prompt_len": prompts, "gen_len": [1] * n}
    )
    plan = baseline_plan(requests, k=k, granularity=g)
    # every request exactly once, and the plan verifies with at most k shapes
    assert sorted(plan["request_id"]) == sorted(requests["request_id"])
    assert verify(requests, plan, max_shapes=k, granularity=g).ok
    # shapes are the nearest-rank quantiles of the aligned lengths at j/k, deduplicated
    aligned = sorted(ceil_to(p, g) for p in prompts)
    expected = sorted({aligned[-(-j * n // k) - 1] for j in range(1, k + 1)})
    assert sorted(plan["seq_align"].unique()) == expected
    # one batch per shape, ids zero-padded in shape order, each request in its smallest cover
    batches = plan.groupby("batch_id")["seq_align"].agg(["nunique", "first"])
    assert (batches["nunique"] == 1).all()
    assert list(batches.index) == [f"b{j:06d}" for j in range(len(expected))]
    assert list(batches["first"]) == expected
    by_id = dict(zip(plan["request_id"], plan["seq_align"], strict=True))
    for rid, p in zip(requests["request_id"], prompts, strict=True):
        assert by_id[rid] == min(s for s in expected if s >= ceil_to(p, g))


# ---------------------------------------------------------------------------------------------
# bucketed_plan
# ---------------------------------------------------------------------------------------------
def test_bucketed_plan_by_hand():
    requests = pd.DataFrame(
        {
            "request_id": list("abcdefg"),
            "prompt_len": [10, 70, 40, 130, 600, 1000, 100],
            "gen_len": [5, 50, 60, 20, 7, 300, 64],
        }
    )
    # shapes 128 (a 64, b 128, c 64, g 128) and 1024 (d 192, e 640, f 1024), given unsorted;
    # gen buckets of 32: (gen-1)//32 -> a 0, b 1, c 1, g 1, d 0, e 0, f 9
    plan = bucketed_plan(requests, [1024, 128, 128], gen_bucket_size=32)
    assert list(plan["request_id"]) == list("abcgdef")
    assert list(plan["batch_id"]) == ["b000000"] + ["b000001"] * 3 + ["b000002"] * 2 + ["b000003"]
    assert list(plan["seq_align"]) == [128] * 4 + [1024] * 3
    # at most 2 per batch: bucket 1 of shape 128 (b, c, g) splits into {b, c}, {g}
    plan = bucketed_plan(requests, [128, 1024], gen_bucket_size=32, max_batch_size=2)
    assert list(plan["batch_id"]) == [
        "b000000", "b000001", "b000001", "b000002", "b000003", "b000003", "b000004",
    ]  # fmt: skip
    # no gen buckets: one batch per shape
    plan = bucketed_plan(requests, [128, 1024])
    assert list(plan["batch_id"]) == ["b000000"] * 4 + ["b000001"] * 3
    assert verify(requests, plan, max_shapes=2).ok


def test_bucketed_plan_bad_input():
    requests = pd.DataFrame({"request_id": ["a"], "prompt_len": [300], "gen_len": [1]})
    with pytest.raises(InputError) as info:
        bucketed_plan(requests, [128, 256])  # align(300) = 320 > 256
    assert info.value.request_id == "a"
    with pytest.raises(InputError) as info:
        bucketed_plan(requests, [100, 320])
    assert info.value.field == "seq_aligns"
    with pytest.raises(InputError):
        bucketed_plan(requests, [])
    with pytest.raises(InputError):
        bucketed_plan(requests, [320], max_batch_size=0)
    with pytest.raises(InputError):
        bucketed_plan(requests, [320], gen_bucket_size=0)


@settings(max_examples=30, deadline=None)
@given(
    prompts=st.lists(st.integers(1, 4000), min_size=1, max_size=80),
    seed=st.integers(0, 2**32 - 1),
    extra=st.lists(st.integers(1, 70), max_size=4),
    size=st.one_of(st.none(), st.integers(1, 200)),
    mbs=st.one_of(st.none(), st.integers(1, 10)),
)
def test_bucketed_plan_properties(prompts, seed, extra, size, mbs):
    rng = np.random.default_rng(seed)
    n = len(prompts)
    gens = rng.integers(1, 500, n)
    requests = pd.DataFrame(
        {"request_id": [f"q{i}" for i in range(n)], "prompt_len": prompts, "gen_len": gens}
    )
    shapes = sorted({ceil_to(max(prompts), G)} | {G * e for e in extra})
    plan = bucketed_plan(requests, shapes, gen_bucket_size=size, max_batch_size=mbs)
    assert sorted(plan["request_id"]) == sorted(requests["request_id"])
    assert verify(requests, plan).ok
    by_id = dict(zip(plan["request_id"], plan["seq_align"], strict=True))
    gen_of = dict(zip(requests["request_id"], gens, strict=True))
    for rid, p in zip(requests["request_id"], prompts, strict=True):
        assert by_id[rid] == min(s for s in shapes if s >= ceil_to(p, G))
    groups = plan.assign(
        bucket=[0 if size is None else (gen_of[r] - 1) // size for r in plan["request_id"]]
    )
    per_batch = groups.groupby("batch_id").agg(
        n=("request_id", "size"), buckets=("bucket", "nunique"), shapes=("seq_align", "nunique")
    )
    assert (per_batch["buckets"] == 1).all() and (per_batch["shapes"] == 1).all()
    if mbs is not None:
        assert (per_batch["n"] <= mbs).all()
    # batches are only split by max_batch_size: the number of batches per (shape, bucket) group
    # is ceil(group size / mbs)
    sizes = groups.groupby(["seq_align", "bucket"]).size()
    expected = sum(-(-int(c) // (mbs or int(c))) for c in sizes)
    assert len(per_batch) == expected
