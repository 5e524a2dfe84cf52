"""Tests of the workshop exercises: checks, hints, solutions, notebooks and their generator.

- the learner notebooks are exactly what ``scripts/make_exercises.py`` generates (in sync);
- every solution notebook, run in-process, passes every check; every learner notebook, run
  unsolved, fails every check with "No answer yet" (so no check passes by accident);
- wrong answers and answers of the wrong type are rejected, with a message and no exception;
- checks recompute their expected answers from the data (other data, other answers);
- the capstone scorecard on valid and invalid plans, with values worked out by hand.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import keyword
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import evaluate, plan, planner, recommend, shapes, sweep, workload
from batchlab.cost import get_cost_model
from batchlab.errors import InputError
from batchlab.exercises import (
    EXERCISES,
    CheckResult,
    authoring,
    capstone,
    data_file,
    ex01,
    ex02,
    ex03,
    ex04,
    ex05,
    ex06,
    questions,
)
from batchlab.exercises import _core as core

if TYPE_CHECKING:  # (nbformat is imported where it is used: it takes a second to import)
    from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "exercises" / "solutions"
NOTEBOOK_OF = {
    "ex01": "01_workload_profiling.ipynb",
    "ex02": "02_bucketing.ipynb",
    "ex03": "03_cost_decomposition.ipynb",
    "ex04": "04_parameter_sweeps.ipynb",
    "ex05": "05_batching_policies.ipynb",
    "ex06": "06_gpu_batch_size.ipynb",
    "capstone": "07_capstone.ipynb",
}


def run_cells(sources: list[str]) -> tuple[dict, list[CheckResult]]:
    """Execute notebook code cells in one namespace, IPython-style (the value of a cell's last
    expression is kept); return the namespace and every CheckResult a cell produced."""
    import plotly.io as pio

    ns: dict = {"__name__": "__notebook__"}
    results = []
    renderer = pio.renderers.default  # the notebooks set it; leave other tests as they were
    try:
        _run_all(sources, ns, results)
    finally:
        pio.renderers.default = renderer
    return ns, results


def _run_all(sources: list[str], ns: dict, results: list) -> None:
    for src in sources:
        tree = ast.parse(src)
        value = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            head = ast.Module(body=tree.body[:-1], type_ignores=[])
            exec(compile(head, "<cell>", "exec"), ns)
            value = eval(compile(ast.Expression(tree.body[-1].value), "<cell>", "eval"), ns)
        else:
            exec(compile(tree, "<cell>", "exec"), ns)
        if isinstance(value, CheckResult):
            results.append(value)


def code_cells(path: Path) -> list[str]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


# ---------------------------------------------------------------------------------------------
# notebooks: in sync, solved, unsolved


@pytest.mark.slow
def test_learner_notebooks_are_in_sync_with_the_solutions():
    # the committed learner notebooks are byte for byte what the script generates
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_exercises.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(NOTEBOOK_OF.values()) == {p.name for p in SOLUTIONS.glob("[0-9]*.ipynb")}


@pytest.mark.slow
@pytest.mark.parametrize("exercise", EXERCISES)
def test_solution_notebook_passes_every_check(exercise, capsys):
    _, results = run_cells(code_cells(SOLUTIONS / NOTEBOOK_OF[exercise]))
    ids = [r.question for r in results]
    assert ids == [q.id for q in questions(exercise)]  # each question checked once, in order
    assert all(r.correct and r.status == "correct" for r in results), [r.message for r in results]
    assert capsys.readouterr().out.count("Correct:") >= len(results)


@pytest.mark.slow
@pytest.mark.parametrize("exercise", EXERCISES)
def test_unsolved_learner_notebook_fails_every_check(exercise, capsys):
    learner = ROOT / "exercises" / NOTEBOOK_OF[exercise]
    _, results = run_cells(code_cells(learner))
    assert [r.question for r in results] == [q.id for q in questions(exercise)]
    assert all(not r and r.status == "unanswered" for r in results)
    assert "No answer yet" in capsys.readouterr().out


@pytest.mark.parametrize("exercise", EXERCISES)
def test_learner_notebook_holds_no_solution_and_no_output(exercise):
    import nbformat

    learner = nbformat.read(ROOT / "exercises" / NOTEBOOK_OF[exercise], as_version=4)
    text = "\n".join(c.source for c in learner.cells)
    for q in questions(exercise):
        assert q.solution_code not in text
        assert f"{q.answer} = ...  # your code here" in text
    for cell in learner.cells:
        assert "solution" not in cell.metadata.get("tags", [])
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("exercise", EXERCISES)
def test_library_solutions_match_the_solution_notebook(exercise):
    import nbformat

    # solution() shows the same code the solution notebook runs
    nb = nbformat.read(SOLUTIONS / NOTEBOOK_OF[exercise], as_version=4)
    bodies = [
        c.source.split("\n", 1)[1] if c.source.startswith(authoring.SOLUTION_MARKER) else c.source
        for c in nb.cells
        if authoring.is_solution_cell(c) and c.cell_type == "code"
    ]
    assert bodies == [q.solution_code for q in questions(exercise)]
    for q in questions(exercise):
        assert q.hints and all(h.strip() for h in q.hints)
        ast.parse(q.solution_code)


# ---------------------------------------------------------------------------------------------
# every check: unanswered, wrong type, wrong value


def all_questions():
    return [q for name in EXERCISES for q in questions(name)]


@pytest.mark.parametrize("question", all_questions(), ids=lambda q: q.id)
def test_unanswered_and_wrong_types_are_reported_without_raising(question, capsys):
    for missing in (None, ...):
        result = question.check(missing)
        assert not result and result.status == "unanswered"
        assert result.message.startswith("No answer yet:") and question.answer in result.message
    assert question.evaluate().status == "unanswered"
    for junk in ("forty-two", object(), {"a": 1}, [[1, 2], [3]], float("nan"), True):
        result = question.evaluate(junk)
        assert not result and result.status in ("invalid", "incorrect"), (junk, result)
        assert result.message.startswith("Not yet:")
    assert "Traceback" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def chat():
    return workload.read_requests(ROOT / "data" / "chat.jsonl")


@pytest.fixture(scope="module")
def docs():
    return workload.read_requests(ROOT / "data" / "docs.jsonl")


def expect_wrong(question, answer, *, contains: str | None = None):
    result = question.evaluate(answer)
    assert not result and result.status in ("incorrect", "invalid"), result.message
    if contains is not None:
        assert contains in result.message, result.message
    return result


def test_ex01_checks(chat):
    code = core.load_trace("azure-code-2023")
    prompt = np.sort(code["prompt_len"].to_numpy())
    p95 = int(prompt[math.ceil(0.95 * len(prompt)) - 1])  # nearest rank, by hand
    assert ex01.q1.evaluate(p95) and ex01.q1.evaluate(float(p95))
    expect_wrong(ex01.q1, p95 + 1, contains="too high")
    expect_wrong(ex01.q1, 90.5, contains="not a whole number")
    # on these lengths the interpolated percentile is another value (and not even a length)
    assert np.percentile(prompt, 95) != p95 and not float(np.percentile(prompt, 95)).is_integer()
    gaps = np.diff(np.sort(code["arrival_s"].to_numpy()))
    assert ex01.q2.evaluate(gaps.std() / gaps.mean())
    assert ex01.q2.evaluate(gaps.std(ddof=1) / gaps.mean())  # within the 0.1% tolerance
    expect_wrong(ex01.q2, gaps.mean() / gaps.std(), contains="std / mean")
    bucket = chat[chat["prompt_len"] <= 512]
    p, g = bucket["prompt_len"].to_numpy(), bucket["gen_len"].to_numpy()
    unavoidable = int(((-(-p // 64) * 64) - p).sum())
    budget = 0.20 * (p.sum() + g.sum()) - unavoidable
    assert ex01.q3.evaluate(budget)
    expect_wrong(ex01.q3, budget + unavoidable, contains="alignment padding")
    assert ex01.q4.evaluate(unavoidable / (p.sum() + g.sum()))
    expect_wrong(ex01.q4, unavoidable / p.sum(), contains="useful tokens")
    # sequential-time bound by hand: alone latencies sorted down, every 16th from the first
    model = get_cost_model("static-graph")
    s = -(-p // 64) * 64
    alone = np.sort(model.prefill_ms(s) + model.decode_ms(s, g) + model.overhead_ms)[::-1]
    assert ex01.q5.evaluate(alone[::16].sum())
    expect_wrong(ex01.q5, alone[0], contains="max_batch_size=16")


def test_ex02_checks(chat, docs):
    p = core.load_trace("azure-conv-2023")["prompt_len"].to_numpy()
    top = 1 << int(p.max() - 1).bit_length()
    grid = [64 << i for i in range(int(math.log2(top // 64)) + 1)]
    pow2 = int((np.asarray(grid)[np.searchsorted(grid, -(-p // 64) * 64)] - p).sum())
    assert ex02.q1.evaluate(pow2)
    expect_wrong(ex02.q1, int(((-(-p // 64) * 64) - p).sum()), contains="alignment padding")
    # q2 checks a property: any 4 shapes that pad less than the grid pass
    best4 = shapes.optimal_shapes(p, 4)
    assert ex02.q2.evaluate(best4)
    assert ex02.q2.evaluate([int(best4[0]) + 64, *best4[1:].tolist()])  # not optimal, still wins
    expect_wrong(ex02.q2, [1024, 2048, 4096, 8192, 16384], contains="at most 4")
    expect_wrong(ex02.q2, [448, 1344, 4160], contains="does not cover")
    expect_wrong(ex02.q2, [500, 14080], contains="multiple of 64")
    expect_wrong(ex02.q2, [4096, 14080], contains="more than the power-of-two grid")
    # q3: evaluate each size directly; the coarsest one meeting the limit has the fewest batches
    chat_shapes = shapes.optimal_shapes(chat["prompt_len"], 8)
    rows = {}
    for size in ex02.GEN_BUCKET_SIZES:
        ev = evaluate.evaluate(chat, plan.bucketed_plan(chat, chat_shapes, size, 32))
        rows[size] = (ev.pad_ratio, ev.n_batches)
    ok = [s for s, (r, _) in rows.items() if r <= 0.10]
    fewest = min(rows[s][1] for s in ok)
    winners = [s for s in ok if rows[s][1] == fewest]
    for size in ex02.GEN_BUCKET_SIZES:
        assert bool(ex02.q3.evaluate(size)) == (size in winners)
    expect_wrong(ex02.q3, 100, contains="not one of")
    # q4: the joint optimum passes, four private shapes each pad more
    lengths = [chat["prompt_len"], docs["prompt_len"]]
    assert ex02.q4.evaluate(shapes.joint_optimal_shapes(lengths, 8))
    split = np.concatenate(shapes.per_bucket_optimal_shapes(lengths, 4))
    expect_wrong(ex02.q4, split, contains="more than the least possible")


def test_ex03_checks(docs):
    # q1 by hand: aligned prompts 192, 448, 960 in one batch of S_max = 960, G_max = 120
    H = 4096
    S = np.array([192.0, 448.0, 960.0])
    prefill = (2 * S**2 + H * S).sum()
    t = np.arange(120.0)
    decode_one = (1.0 * (960 + t) ** 2 + 0.5 * H * (960 + t)).sum()
    compile_960 = 500 * 960.0**2 + 2 * H * 960
    total = 1e7 + compile_960 + prefill + 3 * decode_one
    assert ex03.q1.evaluate(total)
    expect_wrong(ex03.q1, total - compile_960, contains="compile")
    expect_wrong(ex03.q1, total - 2 * decode_one, contains="Every request")
    # q2: the break-even overhead makes both plans cost the same
    model = get_cost_model("static-graph")
    example = pd.DataFrame(ex03.EXAMPLE)
    one = plan.bucketed_plan(example, [960])
    three = plan.bucketed_plan(example, [192, 448, 960])
    lo, hi = 0.0, 1e10
    for _ in range(60):  # bisection on the sign of cost(one) - cost(three)
        mid = (lo + hi) / 2
        m = model.with_coefficients(batch_cost=mid)
        diff = evaluate.evaluate(example, one, m).cost.total - (
            evaluate.evaluate(example, three, m).cost.total
        )
        lo, hi = (mid, hi) if diff > 0 else (lo, mid)
    assert ex03.q2.evaluate(lo)
    expect_wrong(ex03.q2, 2 * lo, contains="two more overheads")
    assert ex03.q3.evaluate("compile") and ex03.q3.evaluate(" Cost_Compile ")
    expect_wrong(ex03.q3, "decode", contains="of the total cost")
    expect_wrong(ex03.q3, "latency", contains="not one of")
    ratio = (
        evaluate.evaluate(docs, plan.baseline_plan(docs)).cost.total
        / planner.lower_bounds(docs).min_cost
    )
    assert ex03.q4.evaluate(ratio)
    expect_wrong(ex03.q4, 1 / ratio, contains="not the other way round")


def test_ex04_checks():
    table = ex04._table()
    assert len(table) == 72
    ok = table[table["ok_all"]]
    assert ex04.q1.evaluate(len(ok))
    expect_wrong(ex04.q1, len(table), contains="every setting")
    best = ok.sort_values("total_cost", kind="stable").iloc[0]
    assert ex04.q2.evaluate(best) and ex04.q2.evaluate(dict(best[list(ex04.SPACE)]))
    assert ex04.q2.evaluate(best.to_frame().T)  # a one-row table
    dearer = ok.sort_values("total_cost", kind="stable").iloc[-1]
    expect_wrong(ex04.q2, dearer, contains="more than the cheapest")
    bad = table[~table["ok_all"]].iloc[0]
    expect_wrong(ex04.q2, bad, contains="breaks")
    expect_wrong(ex04.q2, {**dict(best[list(ex04.SPACE)]), "k": 3}, contains="not in the grid")
    expect_wrong(ex04.q2, {"k": 8}, contains="missing")
    # q3 against an O(n^2) reference of the front
    pts = table[["total_cost", "sequential_ms"]].to_numpy()
    dominated = [
        any((q <= r).all() and (q < r).any() for q in pts) for r in pts
    ]  # dominated by some row
    front = table[~np.asarray(dominated)]
    assert ex04.q3.evaluate(front)
    assert ex04.q3.evaluate(front.to_dict("records"))
    first = front.iloc[0]
    same = (front["total_cost"] == first["total_cost"]) & (
        front["sequential_ms"] == first["sequential_ms"]
    )
    expect_wrong(ex04.q3, front[~same], contains="1 non-dominated point(s) are missing")
    expect_wrong(ex04.q3, table, contains="dominated")
    ks = [k for k in range(1, 65) if ex04._docs_pad_ratio(k) <= 0.10]
    assert ex04.q4.evaluate(ks[0])
    expect_wrong(ex04.q4, ks[0] + 1, contains="fewer shapes also do")
    expect_wrong(ex04.q4, ks[0] - 1, contains="above")


def test_ex05_checks():
    cont, stat = ex05._replay()
    assert ex05.q1.evaluate(stat["latency_p99_ms"] / cont["latency_p99_ms"])
    expect_wrong(ex05.q1, cont["latency_p99_ms"] / stat["latency_p99_ms"], contains="round")
    sweep_table = ex05._load_sweep()
    base = sweep_table["latency_p99_ms"].iloc[0]
    over = sweep_table.index[sweep_table["latency_p99_ms"] > 2 * base][0]
    knee = int(sweep_table["level"].iloc[over - 1])  # the level before the first one over 2x
    assert ex05.q2.evaluate(knee)
    expect_wrong(ex05.q2, int(sweep_table["level"].iloc[over]), contains="already")
    expect_wrong(ex05.q2, 3, contains="one of the levels")
    c64, s64 = ex05._closed_loop()
    assert ex05.q3.evaluate(c64["throughput_rps"] / s64["throughput_rps"])
    expect_wrong(ex05.q3, s64["throughput_rps"] / c64["throughput_rps"])
    n = ex05._q4_expected()
    assert n > 0 and ex05.q4.evaluate(n)
    expect_wrong(ex05.q4, 0, contains="kv_blocks=2000")


def test_ex06_checks():
    m = ex06._table()
    thr = m["output_tokens_per_s"].to_numpy()
    sizes = m["batch_size"].to_numpy()
    sat = int(sizes[np.flatnonzero(thr >= 0.8 * thr.max())[0]])
    assert ex06.q1.evaluate(sat)
    if int(sizes[thr.argmax()]) != sat:
        expect_wrong(ex06.q1, int(sizes[thr.argmax()]), contains="best throughput")
    lat = m["latency_ms_per_request"].to_numpy()
    largest = int(sizes[lat <= 150].max())
    assert ex06.q2.evaluate(largest)
    expect_wrong(ex06.q2, 3, contains="measured batch sizes")
    slope = np.polyfit(sizes.astype(float), m["peak_memory_mb"].to_numpy(), 1)[0]
    assert ex06.q3.evaluate(slope)
    kv = np.polyfit(sizes.astype(float), m["kv_cache_mb"].to_numpy(), 1)[0]
    expect_wrong(ex06.q3, kv, contains="KV cache alone")
    step = m["decode_ms_per_step"].to_numpy()
    allowed = step <= 3.5
    best = thr[allowed].max()
    pick = int(sizes[allowed][np.flatnonzero(thr[allowed] >= 0.9 * best)[0]])
    assert ex06.q4.evaluate(pick)
    over = sizes[~allowed]
    if over.size:
        expect_wrong(ex06.q4, int(over[0]), contains="over 3.5 ms")


# ---------------------------------------------------------------------------------------------
# the capstone


def tiny_buckets():
    a = pd.DataFrame({"request_id": ["a0", "a1"], "prompt_len": [100, 120], "gen_len": [10, 20]})
    b = pd.DataFrame(
        {"request_id": ["b0", "b1", "b2"], "prompt_len": [60, 300, 310], "gen_len": [5, 5, 7]}
    )
    return {"a": a, "b": b}


def test_scorecard_of_a_valid_plan_by_hand():
    buckets = tiny_buckets()
    plans = {
        "a": plan.bucketed_plan(buckets["a"], [128]),
        "b": plan.bucketed_plan(buckets["b"], [64, 320]),
    }
    limits = {"a": planner.Limits(max_pad_ratio=0.2, max_batch_size=2), "b": planner.Limits()}
    card = capstone.scorecard(buckets, plans, limits, max_shapes=3)
    assert card.ok and card.verification.ok and card.verification.n_shapes == 3
    t = card.table.set_index(["bucket", "metric"])
    # bucket a, one batch at 128: padding (128-100)+(128-120) + (20-10) = 46 tokens over
    # 100+120+10+20 = 250 useful tokens
    assert t.loc[("a", "pad_ratio"), "achieved"] == pytest.approx(46 / 250)
    assert t.loc[("a", "max_batch_size"), "achieved"] == 2
    assert t.loc[("b", "max_batch_size"), "achieved"] == 2  # b1 and b2 share shape 320
    assert t.loc[("all", "distinct_shapes"), "achieved"] == 3
    total = sum(evaluate.evaluate(buckets[n], plans[n]).cost.total for n in buckets)
    assert t.loc[("all", "total_cost"), "achieved"] == pytest.approx(total)
    assert card.total_cost == pytest.approx(total)
    bounds = t.xs("total_cost", level="metric")["lower_bound"]
    assert (t.xs("total_cost", level="metric")["achieved"] >= bounds).all()
    # a list in bucket order and the planner's result are accepted too
    assert capstone.scorecard(buckets, [plans["a"], plans["b"]], limits, max_shapes=3).ok


def test_scorecard_of_invalid_plans():
    buckets = tiny_buckets()
    plans = {
        "a": plan.bucketed_plan(buckets["a"], [128]),
        "b": plan.bucketed_plan(buckets["b"], [64, 320]),
    }
    tight = {"a": planner.Limits(max_pad_ratio=0.1), "b": planner.Limits()}
    card = capstone.scorecard(buckets, plans, tight, max_shapes=3)
    assert not card.ok and card.verification.ok
    assert card.failures[["bucket", "metric"]].values.tolist() == [["a", "pad_ratio"]]
    capped = capstone.scorecard(buckets, plans, {}, max_shapes=2)
    assert not capped.ok and capped.verification.kinds == ("too_many_shapes",)
    assert capped.failures["metric"].tolist() == ["distinct_shapes"]
    # a plan missing a request cannot be evaluated: its rows are NaN and not met
    short = plans["b"].iloc[1:]
    broken = capstone.scorecard(buckets, {"a": plans["a"], "b": short}, {}, max_shapes=8)
    assert not broken.ok and "missing" in broken.verification.kinds
    rows = broken.table[broken.table["bucket"] == "b"]
    assert rows["achieved"].isna().all() and not rows["met"].any()
    with pytest.raises(InputError, match="no plan for bucket"):
        capstone.scorecard(buckets, {"a": plans["a"]}, {})


@pytest.mark.slow
def test_capstone_check_on_baseline_and_planner(capsys):
    buckets = capstone.load_buckets()
    baseline = {name: plan.baseline_plan(df) for name, df in buckets.items()}
    result = capstone.q1.check(baseline)
    assert not result and result.status == "incorrect"
    assert "verification fails" in result.message and "over its limit" in result.message
    assert isinstance(result.details, pd.DataFrame) and (result.details["met"] == "NO").any()
    assert "NO" in capsys.readouterr().out  # the scorecard is printed
    solved = planner.plan_requests(buckets, "static-graph", 8, limits=capstone.LIMITS)
    assert capstone.q1.evaluate(solved)  # the planner's result itself is accepted
    assert capstone.q1.evaluate({"code": solved["code"], "conv": solved["conv"]})
    expect_wrong(capstone.q1, baseline["conv"], contains="single table")
    expect_wrong(capstone.q1, {"conv": baseline["conv"]}, contains="no plan for bucket")


# ---------------------------------------------------------------------------------------------
# checks recompute from the data


@pytest.fixture
def other_data(tmp_path, monkeypatch):
    """A data folder with other workloads and another measurement."""
    chat = workload.lognormal_workload(400, seed=5, prompt_median=300, id_prefix="c")
    docs = workload.lognormal_workload(200, seed=6, prompt_median=2000, id_prefix="d")
    workload.write_requests(chat, tmp_path / "chat.jsonl")
    workload.write_requests(docs, tmp_path / "docs.jsonl")
    shutil.copy(data_file("limits.toml"), tmp_path / "limits.toml")
    m = pd.read_csv(data_file(ex06.MEASUREMENT))
    m["output_tokens_per_s"] = m["output_tokens_per_s"] * np.linspace(1.0, 0.5, len(m)) ** -1
    m["peak_memory_mb"] = 2.0 * m["peak_memory_mb"]
    (tmp_path / "measurements").mkdir()
    m.to_csv(tmp_path / ex06.MEASUREMENT, index=False)
    monkeypatch.setenv(core.DATA_DIR_ENV, str(tmp_path))
    return chat, docs


def test_checks_follow_the_data(chat, docs, other_data):
    original_budget = shapes.padding_budget(
        chat[chat["prompt_len"] <= 512]["prompt_len"],
        chat[chat["prompt_len"] <= 512]["gen_len"],
        0.2,
    )
    new_chat, new_docs = other_data
    b = new_chat[new_chat["prompt_len"] <= 512]
    assert ex01.q3.evaluate(shapes.padding_budget(b["prompt_len"], b["gen_len"], 0.2))
    assert not ex01.q3.evaluate(original_budget)
    shared = shapes.joint_optimal_shapes([new_chat["prompt_len"], new_docs["prompt_len"]], 8)
    assert ex02.q4.evaluate(shared)
    old_shared = shapes.joint_optimal_shapes([chat["prompt_len"], docs["prompt_len"]], 8)
    assert not ex02.q4.evaluate(old_shared)
    # the measurement: throughput now grows faster with batch size, memory per sequence doubles
    m = pd.read_csv(data_file(ex06.MEASUREMENT))
    sizes = m["batch_size"].to_numpy()
    slope = np.polyfit(sizes.astype(float), m["peak_memory_mb"].to_numpy(), 1)[0]
    assert ex06.q3.evaluate(slope)
    assert not ex06.q3.evaluate(slope / 2)


def test_missing_data_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv(core.DATA_DIR_ENV, str(tmp_path))
    result = ex01.q3.evaluate(1.0)
    assert not result and result.status == "error"
    assert result.message.startswith("Cannot check:") and "README" in result.message
    monkeypatch.setenv(core.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    assert ex04.q1.evaluate(3).status == "error"


# ---------------------------------------------------------------------------------------------
# the core: numbers, messages, display


def test_number_parsing_and_messages():
    assert core.as_number(np.float32(2.5)) == 2.5
    assert core.as_number(np.array(3)) == 3.0
    assert core.as_number(pd.Series([7])) == 7.0
    assert core.as_int(4.0) == 4 and isinstance(core.as_int(np.int64(4)), int)
    for bad in (True, "3", [1, 2], float("inf"), None):
        with pytest.raises(core.AnswerError):
            core.as_number(bad)
    assert core.as_int_list({128, 64}) == [64, 128]
    with pytest.raises(core.AnswerError, match="single number"):
        core.as_int_list(64)
    # 110 against 100: (110 - 100) / 100 = 10% too high; the expected value is not printed
    assert core.relative_error_text(110, 100, "tokens") == "110 tokens is 10% too high"
    assert core.relative_error_text(75.5, 100) == "75.5 is 24.5% too low"
    assert core.relative_error_text(3, 0) == "3 is off by 3"
    assert core.percent(1234.5) == "1,234%" and core.percent(12.345) == "12.3%"
    assert core.fmt(1234567) == "1,234,567" and core.fmt(0.5) == "0.5"
    assert core.fmt(2.5e12) == "2,500,000,000,000" and core.fmt(2.5e12 + 0.5) == "2.5e+12"


def toy_question(value: float, **kwargs) -> core.NumberQuestion:
    return core.NumberQuestion(
        exercise="toy",
        name="q1",
        title="toy",
        answer="x",
        expects="a number",
        expected=lambda: value,
        hints=("first", "second"),
        solution="x = 1\n",
        **kwargs,
    )


@settings(max_examples=60, deadline=None)
@given(
    expected=st.floats(-1e12, 1e12, allow_nan=False),
    factor=st.floats(0.5, 1.5, allow_nan=False),
    rel_tol=st.sampled_from([0.0, 1e-9, 1e-3, 0.05]),
)
def test_number_check_agrees_with_isclose(expected, factor, rel_tol):
    q = toy_question(expected, rel_tol=rel_tol)
    got = expected * factor
    result = q.evaluate(got)
    assert result.correct == math.isclose(got, expected, rel_tol=rel_tol)
    assert result.status == ("correct" if result.correct else "incorrect")
    if not result.correct and expected != 0:
        assert ("too high" in result.message) == (got > expected)


def test_check_result_display_and_hints(capsys):
    q = toy_question(2.0)
    result = q.check(2)
    assert (
        result and repr(result) == "CheckResult(question='toy.q1', correct=True, status='correct')"
    )
    assert result._ipython_display_() is None  # shown once, by check()
    assert str(result) == "Correct: x = 2." and q.evaluate(3).status == "incorrect"
    assert capsys.readouterr().out == "Correct: x = 2.\n"
    assert result.markdown().startswith('<span style="color:#1a7f37">**Correct:**</span>')
    q.hint()
    q.hint(2)
    q.hint(9)  # clamped to the last hint
    q.solution()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Hint (hint 1 of 2; `toy.q1.hint(2)` gives another): first"
    assert out[1] == out[2] == "Hint (hint 2 of 2): second"
    assert out[3:] == ["Solution:", "x = 1"]


def test_memo_recomputes_when_a_file_changes(tmp_path, monkeypatch):
    shutil.copy(data_file("chat.jsonl"), tmp_path / "chat.jsonl")
    monkeypatch.setenv(core.DATA_DIR_ENV, str(tmp_path))
    calls = []

    @core.memo(files=("chat.jsonl",))
    def count():
        calls.append(1)
        return len(core.load_requests("chat.jsonl"))

    n = count()
    assert count() == n and len(calls) == 1
    small = workload.lognormal_workload(10, seed=1)
    workload.write_requests(small, tmp_path / "chat.jsonl")
    assert count() == 10 and len(calls) == 2


def test_questions_lookup():
    assert [q.id for q in questions("ex02")] == ["ex02.q1", "ex02.q2", "ex02.q3", "ex02.q4"]
    with pytest.raises(ValueError, match="unknown exercise"):
        questions("ex99")
    for name in EXERCISES:
        module = importlib.import_module(f"batchlab.exercises.{name}")
        assert len(module.QUESTIONS) == 1 if name == "capstone" else 3 <= len(module.QUESTIONS) <= 6


# ---------------------------------------------------------------------------------------------
# the generator


def make_solution_notebook() -> NotebookNode:
    import nbformat

    cells = [
        nbformat.v4.new_markdown_cell("# Toy"),
        nbformat.v4.new_code_cell("from batchlab.exercises import ex01"),
        nbformat.v4.new_code_cell("# SOLUTION\nhelper = 3\nanswer = helper * 2"),
        nbformat.v4.new_code_cell("ex01.q1.check(answer)"),
        nbformat.v4.new_markdown_cell("Facilitator note"),
        nbformat.v4.new_code_cell("total, (a, b) = 1, (2, 3)\ndef f():\n    return 1"),
        nbformat.v4.new_code_cell("print(total, b, f())"),
    ]
    cells[4].metadata["tags"] = ["solution"]
    cells[5].metadata["tags"] = ["solution", "keep-me"]
    cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    cells[1].execution_count = 4
    cells[1].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00"}
    for i, c in enumerate(cells):
        c["id"] = f"cell-{i}"
    return nbformat.v4.new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )


def test_learner_notebook_replaces_solutions_by_stubs():
    import nbformat

    nb = make_solution_notebook()
    assert [authoring.is_solution_cell(c) for c in nb.cells] == [
        False, False, True, False, True, True, False,
    ]  # fmt: skip
    assert authoring.answer_names(list(nb.cells), 2) == ["answer"]  # helper is never read later
    assert authoring.answer_names(list(nb.cells), 5) == ["total", "b", "f"]  # a is not read
    learner = authoring.learner_notebook(nb, source="solutions/toy.ipynb")
    assert [c.id for c in learner.cells] == [
        "cell-0",
        "cell-1",
        "cell-2",
        "cell-3",
        "cell-5",
        "cell-6",
    ]
    assert learner.cells[2].source == "answer = ...  # your code here"
    assert learner.cells[4].source == (
        "total = ...  # your code here\nb = ...  # your code here\nf = ...  # your code here"
    )
    assert learner.cells[4].metadata == {"tags": ["keep-me"]}
    assert learner.cells[1].outputs == [] and learner.cells[1].execution_count is None
    assert learner.cells[1].metadata == {}
    assert learner.metadata["batchlab"]["generated_from"] == "solutions/toy.ipynb"
    assert authoring.stub_source([]) == "# your code here"
    text = authoring.render(learner)
    assert text.endswith("}\n") and nbformat.reads(text, as_version=4) == learner


@settings(max_examples=30, deadline=None)
@given(
    names=st.lists(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
            lambda s: not keyword.iskeyword(s) and s != "tmp_zz"
        ),
        min_size=1,
        max_size=5,
        unique=True,
    )
)
def test_stub_assigns_exactly_the_names_read_later(names):
    import nbformat

    solution = "\n".join(f"{n} = {i}" for i, n in enumerate(names)) + "\ntmp_zz = 0"
    reader = "print(" + ", ".join(names) + ")"
    cells = [
        nbformat.v4.new_code_cell("# SOLUTION\n" + solution),
        nbformat.v4.new_code_cell(reader),
    ]
    assert authoring.answer_names(cells, 0) == names
    stub = authoring.stub_source(names)
    assert [t.id for s in ast.parse(stub).body for t in s.targets] == names


def test_generate_check_and_write(tmp_path):
    import nbformat

    sol = tmp_path / "exercises" / "solutions"
    sol.mkdir(parents=True)
    nbformat.write(make_solution_notebook(), sol / "01_toy.ipynb")
    script = ROOT / "scripts" / "make_exercises.py"
    spec = importlib.util.spec_from_file_location("make_exercises", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--solutions", str(sol)]
    assert module.main([*args, "--check"]) == 1  # missing
    assert module.main(args) == 0
    learner = tmp_path / "exercises" / "01_toy.ipynb"
    first = learner.read_text()
    assert module.main([*args, "--check"]) == 0
    assert [r.status for r in authoring.generate(sol)] == ["unchanged"]
    assert learner.read_text() == first
    nb = nbformat.read(sol / "01_toy.ipynb", as_version=4)
    nb.cells[0].source = "# Toy, edited"
    nbformat.write(nb, sol / "01_toy.ipynb")
    assert module.main([*args, "--check"]) == 1  # out of date
    assert learner.read_text() == first  # --check writes nothing
    shutil.copy(learner, tmp_path / "exercises" / "02_orphan.ipynb")
    statuses = {r.path.name: r.status for r in authoring.generate(sol, check=True)}
    assert statuses == {"01_toy.ipynb": "out of date", "02_orphan.ipynb": "stale"}
    assert module.main([*args]) == 0 and "edited" in learner.read_text()
    assert module.main(["--solutions", str(tmp_path / "none")]) == 2


# ---------------------------------------------------------------------------------------------
# every named mistake is caught (issue 12, first hour 9)
#
# Each check's messages name mistakes ("That is numpy's interpolated percentile ..."). For each
# one: the mistake, computed as a learner would, and a fragment of the message it must get.
# Regression: ex01.q1 accepted `quantile(0.95)`, the interpolated percentile it warns against,
# because every percentile method gave the same value on the code trace's output lengths.


def _code_prompt():
    return core.load_trace("azure-code-2023")["prompt_len"]


def _ex01_bucket():
    chat = core.load_requests("chat.jsonl")
    return chat[chat["prompt_len"] <= ex01.BUCKET_MAX_PROMPT]


def _ex01_unavoidable():
    return shapes.min_padding_tokens(_ex01_bucket()["prompt_len"].to_numpy())


def _ex03_evaluation(seq_aligns, model="static-graph"):
    example = pd.DataFrame(ex03.EXAMPLE)
    return evaluate.evaluate(example, plan.bucketed_plan(example, list(seq_aligns)), model)


def _ex03_rest(seq_aligns):
    ev = _ex03_evaluation(seq_aligns)
    return ev.cost.total - ev.cost.overhead


def _ex04_ok(metric):
    return int(ex04._table()[f"ok_{metric}"].sum())


def _ex04_first_k():
    return next(k for k in range(1, 65) if ex04._docs_pad_ratio(k) <= 0.10)


def _ex06(column):
    return ex06._table()[column].to_numpy(dtype=float)


def _ex06_sizes():
    return _ex06("batch_size")


MISTAKES = [
    # ex01
    (ex01.q1, lambda: np.percentile(_code_prompt(), 95), "numpy's interpolated percentile"),
    (ex01.q1, lambda: _code_prompt().quantile(0.95), "pandas' `quantile(0.95)`"),
    (ex01.q1, lambda: np.percentile(_code_prompt(), 95, method="nearest"), "method='nearest'"),
    (ex01.q1, lambda: np.percentile(_code_prompt(), 95, method="midpoint"), "method='midpoint'"),
    (
        ex01.q1,
        lambda: workload.profile(core.load_trace("azure-code-2023")).lengths.loc["gen_len", "p95"],
        "That is the p95 of the output lengths",
    ),
    (
        ex01.q2,
        lambda: (lambda t: t.std() / t.mean())(
            np.sort(core.load_trace("azure-code-2023")["arrival_s"].to_numpy())
        ),
        "the spread of the arrival times themselves",
    ),
    (
        ex01.q2,
        lambda: (lambda g: g.mean() / g.std())(
            np.diff(np.sort(core.load_trace("azure-code-2023")["arrival_s"].to_numpy()))
        ),
        "You divided the mean by the standard deviation",
    ),
    (
        ex01.q3,
        lambda: 0.20 * (_ex01_bucket()["prompt_len"].sum() + _ex01_bucket()["gen_len"].sum()),
        "That is all the padding the limit allows",
    ),
    (
        ex01.q3,
        lambda: 0.20 * _ex01_bucket()["prompt_len"].sum() - _ex01_unavoidable(),
        "The pad ratio counts useful tokens of the prompts *and* the outputs",
    ),
    (
        ex01.q3,
        lambda: shapes.padding_budget(
            core.load_requests("chat.jsonl")["prompt_len"],
            core.load_requests("chat.jsonl")["gen_len"],
            0.20,
        ),
        "Use the bucket (prompt_len <= 512), not the whole file",
    ),
    (
        ex01.q4,
        lambda: _ex01_unavoidable() / _ex01_bucket()["prompt_len"].sum(),
        "Divide by all useful tokens",
    ),
    (ex01.q4, lambda: _ex01_unavoidable(), "a fraction, not a count"),
    (
        ex01.q5,
        lambda: planner.lower_bounds(_ex01_bucket(), "static-graph", None).min_sequential_ms,
        "That bound allows one batch of every request",
    ),
    (
        ex01.q5,
        lambda: planner.lower_bounds(_ex01_bucket(), "static-graph", 1).min_sequential_ms,
        "That is every request alone",
    ),
    # ex02
    (
        ex02.q1,
        lambda: shapes.min_padding_tokens(core.load_trace("azure-conv-2023")["prompt_len"]),
        "That is the alignment padding alone",
    ),
    (
        ex02.q1,
        lambda: (lambda p: shapes.padding_tokens(p, shapes.align([p.max()])))(
            core.load_trace("azure-conv-2023")["prompt_len"].to_numpy()
        ),
        "That is padding every prompt to the longest one",
    ),
    (ex02.q2, lambda: [1024, 2048, 4096, 8192, 16384], "at most 4 are allowed"),
    (ex02.q2, lambda: [448, 1344, 4160], "does not cover the longest prompt"),
    (ex02.q2, lambda: [500, 14080], "is not a positive multiple of 64"),
    (ex02.q2, lambda: [4096, 14080], "more than the power-of-two grid"),
    (ex02.q3, lambda: 1024, "above the limit"),
    (ex02.q3, lambda: 8, "more than the fewest possible"),
    (ex02.q3, lambda: 100, "is not one of the sizes to compare"),
    (
        ex02.q4,
        lambda: np.concatenate(
            shapes.per_bucket_optimal_shapes(
                [core.load_requests(f)["prompt_len"] for f in ("chat.jsonl", "docs.jsonl")], 4
            )
        ),
        "more than the least possible",
    ),
    # ex03
    (
        ex03.q1,
        lambda: (lambda ev: ev.cost.total - ev.cost.compile)(_ex03_evaluation(ex03.ONE_SHAPE)),
        "Add the compile of the shape",
    ),
    (
        ex03.q1,
        lambda: _ex03_evaluation(ex03.ONE_SHAPE, "padded-graph").cost.total,
        "That is the padded-graph preset",
    ),
    (
        ex03.q1,
        lambda: (lambda ev: ev.cost.total - ev.cost.decode * 2 / 3)(
            _ex03_evaluation(ex03.ONE_SHAPE)
        ),
        "Every request of the batch pays the batch's decode cost",
    ),
    (
        ex03.q2,
        lambda: _ex03_rest(ex03.ONE_SHAPE) - _ex03_rest(ex03.THREE_SHAPES),
        "the three-batch plan pays two more overheads",
    ),
    (ex03.q2, lambda: -1.0e6, "An overhead is a cost, so it is positive"),
    *[
        (ex03.q3, (lambda p=p: p), "of the total cost; one part is larger")
        for p in ("overhead", "prefill", "decode", "compile")
        if p != ex03._q3_expected()
    ],
    (ex03.q4, lambda: 1.0 / ex03._q4_expected(), "not the other way round"),
    (
        ex03.q4,
        lambda: (lambda d: evaluate.evaluate(d, plan.baseline_plan(d)).cost.total)(
            core.load_requests("docs.jsonl")
        ),
        "not a cost",
    ),
    # ex04
    *[
        (ex04.q1, (lambda m=m: _ex04_ok(m)), f"meet the {m} limit alone")
        for m in ex04._chat_limits()
    ],
    (ex04.q1, lambda: len(ex04._table()), "That is every setting of the grid"),
    (
        ex04.q2,
        lambda: ex04._table()[ex04._table()["ok_all"]].sort_values("total_cost").iloc[-1],
        "more than the cheapest setting that does",
    ),
    (ex04.q2, lambda: ex04._table()[~ex04._table()["ok_all"]].iloc[0], "that setting breaks the"),
    (ex04.q3, lambda: ex04._table(), "of your settings are dominated by another setting"),
    (
        ex04.q3,
        lambda: sweep.pareto_front(ex04._table(), ["total_cost", "sequential_ms"]).iloc[1:],
        "non-dominated point(s) are missing",
    ),
    (ex04.q4, lambda: _ex04_first_k() - 1, "above 0.1"),
    (ex04.q4, lambda: _ex04_first_k() + 1, "but fewer shapes also do"),
    # ex05
    (
        ex05.q1,
        lambda: (lambda c, s: c["latency_p99_ms"] / s["latency_p99_ms"])(*ex05._replay()),
        "Static over continuous, not the other way round",
    ),
    (
        ex05.q1,
        lambda: (lambda c, s: s["latency_p50_ms"] / c["latency_p50_ms"])(*ex05._replay()),
        "That compares the medians (p50)",
    ),
    (ex05.q2, lambda: 3, "The knee is one of the levels swept"),
    (ex05.q2, lambda: 2 * ex05._q2_expected(), "p99 latency is already"),
    (ex05.q2, lambda: ex05._q2_expected() // 2, "not yet 2 ×"),
    (
        ex05.q3,
        lambda: (lambda c, s: s["throughput_rps"] / c["throughput_rps"])(*ex05._closed_loop()),
        "Continuous over static, not the other way round",
    ),
    (ex05.q4, lambda: 0, "pass kv_blocks=2000"),
    # ex06
    (
        ex06.q1,
        lambda: int(_ex06_sizes()[_ex06("output_tokens_per_s").argmax()]),
        "That is the best throughput",
    ),
    (ex06.q1, lambda: 3, "The answer is one of the measured batch sizes"),
    (ex06.q2, lambda: 3, "The answer is one of the measured batch sizes"),
    (
        ex06.q2,
        lambda: int(_ex06_sizes()[_ex06("latency_ms_per_request") > 150.0].min()),
        "over the limit",
    ),
    (
        ex06.q2,
        lambda: int(_ex06_sizes()[_ex06("latency_ms_per_request") <= 150.0].min()),
        "but a larger batch size does too",
    ),
    (
        ex06.q3,
        lambda: np.polyfit(_ex06_sizes(), _ex06("kv_cache_mb"), 1)[0],
        "That is the KV cache alone",
    ),
    (
        ex06.q3,
        lambda: (lambda b, m: (m[-1] - m[0]) / (b[-1] - b[0]))(
            _ex06_sizes(), _ex06("peak_memory_mb")
        ),
        "That is the slope between two rows",
    ),
    (
        ex06.q3,
        lambda: float(np.mean(_ex06("peak_memory_mb") / _ex06_sizes())),
        "That is memory per sequence on average",
    ),
    (ex06.q4, lambda: 3, "The answer is one of the measured batch sizes"),
    (
        ex06.q4,
        lambda: recommend.recommend("interactive", measurement=ex06._table()).batch_size,
        "That uses the use case's default limit",
    ),
    (
        ex06.q4,
        lambda: int(_ex06_sizes()[_ex06("decode_ms_per_step") > 3.5].min()),
        "over 3.5 ms",
    ),
]


@pytest.mark.parametrize(
    ("question", "mistake", "fragment"),
    MISTAKES,
    ids=[f"{q.id}: {f[:40]}" for q, _, f in MISTAKES],
)
def test_every_named_mistake_is_caught_with_its_message(question, mistake, fragment):
    result = question.evaluate(mistake())
    assert not result and result.status in ("incorrect", "invalid"), result.message
    assert fragment in result.message, result.message


def _named_mistakes(module) -> dict[str, list[str]]:
    """Question name -> the literal texts of the messages its diagnose / explain / judge
    functions return for a wrong answer (the longest literal part of each f-string)."""
    import inspect

    tree = ast.parse(inspect.getsource(module))
    out: dict[str, list[str]] = {}
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        name = fn.name.split("_")
        if (
            len(name) < 3
            or not name[1].startswith("q")
            or name[2]
            not in (
                "diagnose",
                "explain",
                "judge",
            )
        ):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Return) or node.value is None:
                continue
            value = node.value
            if isinstance(value, ast.Tuple):  # judge: (False, text); (True, ...) is no mistake
                first = value.elts[0]
                if not (isinstance(first, ast.Constant) and first.value is False):
                    continue
                value = value.elts[1]
            parts = []
            for sub in ast.walk(value):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    parts.append(sub.value)
            text = max(parts, key=len).strip() if parts else ""
            if len(text) >= 8:  # a sentence, not a joiner such as "; "
                out.setdefault(name[1], []).append(text)
    return out


@pytest.mark.parametrize("module", [ex01, ex02, ex03, ex04, ex05, ex06], ids=lambda m: m.EXERCISE)
def test_every_message_that_names_a_mistake_has_a_test(module):
    covered: dict[str, list[str]] = {}
    for question, mistake, _ in MISTAKES:
        if question.exercise == module.EXERCISE:
            covered.setdefault(question.name, []).append(question.evaluate(mistake()).message)
    for qname, texts in _named_mistakes(module).items():
        for text in texts:
            assert any(text in message for message in covered.get(qname, [])), (
                f"{module.EXERCISE}.{qname}: no test feeds the mistake of the message {text!r}"
            )
