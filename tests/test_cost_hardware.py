"""The planner in real units: StepTimeCostModel (GPU-ms, real ms) from a step-time model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.cli import main
from batchlab.cost import StepTimeCostModel, get_cost_model, hardware_cost_model
from batchlab.errors import InputError
from batchlab.evaluate import evaluate
from batchlab.measure import save_measurement
from batchlab.plan import bucketed_plan, verify, write_plan
from batchlab.planner import Limits, plan_requests
from batchlab.roofline import RooflineStepTime
from batchlab.shapes import align
from batchlab.steptime import FittedStepTime, StepBatch
from batchlab.workload import lognormal_workload, write_requests


@pytest.fixture(scope="module")
def chat():
    return lognormal_workload(
        120, seed=4, prompt_median=300, gen_median=60, max_prompt_len=2000, max_gen_len=400
    )


def reference_evaluation(requests, plan, step_time, *, overhead_ms=0.0, g=64):
    """The slow obvious sum, step by step: each request's prefill step, then for each batch its
    G_max - 1 decode steps of all members at contexts S_max + 1 … S_max + G_max - 1."""
    df = requests.merge(plan, on="request_id")
    latency, cost = {}, 0.0
    for _, batch in df.groupby("batch_id"):
        s = align(batch["prompt_len"].to_numpy(), g)
        s_max, g_max, b = int(s.max()), int(batch["gen_len"].max()), len(batch)
        decode = sum(
            step_time.duration_ms(StepBatch.of(0, np.full(b, float(s_max + j))))
            for j in range(1, g_max)
        )
        cost += decode + overhead_ms
        for rid, si in zip(batch["request_id"], s, strict=True):
            prefill = step_time.duration_ms(StepBatch.of(int(si)))
            cost += prefill
            latency[rid] = prefill + decode + overhead_ms
    return cost, latency


@pytest.mark.parametrize(
    "step_time",
    [
        RooflineStepTime("llama-3-8b", "h100-sxm"),
        RooflineStepTime("llama-2-7b", "a100-80gb", calibrated=False),
        FittedStepTime(3.0, 0.02, 0.001, 0.0001, 0.05),
    ],
    ids=repr,
)
def test_evaluate_agrees_with_the_step_by_step_sum(chat, step_time):
    cm = StepTimeCostModel.from_step_time(step_time, overhead_ms=2.5)
    plan = bucketed_plan(chat, [512, 1024, 2048], gen_bucket_size=128, max_batch_size=16)
    ev = evaluate(chat, plan, cm)
    cost, latency = reference_evaluation(chat, plan, step_time, overhead_ms=2.5)
    assert ev.cost.total == pytest.approx(cost, rel=1e-9)
    got = ev.requests.set_index("request_id")["latency_ms"]
    want = pd.Series(latency).loc[got.index]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9)
    assert ev.cost.overhead == pytest.approx(2.5 * ev.n_batches)
    # batching amortizes the weights: one batch of 16 costs less than 16 batches of one
    alone = bucketed_plan(chat, [512, 1024, 2048], gen_bucket_size=128, max_batch_size=1)
    assert evaluate(chat, alone, cm).cost.decode > ev.cost.decode


def test_hardware_preset_by_name():
    cm = get_cost_model("llama-3-8b@h100-sxm")
    assert isinstance(cm, StepTimeCostModel) and not cm.members_pay_caps
    assert cm.name == "llama-3-8b@h100-sxm" and cm.granularity == 64 and cm.gpus == 1
    assert repr(cm.step_time) == "RooflineStepTime('llama-3-8b', 'h100-sxm')"
    # a prefill of 512 tokens costs its prefill step; 4 GPUs cost 4x the device-ms
    rl = RooflineStepTime("llama-3-8b", "h100-sxm")
    assert cm.prefill_ms(512) == pytest.approx(rl.duration_ms(StepBatch.of(512)))
    four = hardware_cost_model("llama-2-70b@4xh100-sxm")
    assert four.gpus == 4
    assert four.prefill_cost(512) == pytest.approx(4 * four.prefill_ms(512))
    ideal = hardware_cost_model("llama-3-8b@h100-sxm", calibrated=False)
    assert ideal.prefill_ms(512) < cm.prefill_ms(512) and ideal.name == "llama-3-8b@h100-sxm:ideal"
    assert get_cost_model("llama-3-8b@h100-sxm:ideal").prefill_ms(512) == ideal.prefill_ms(512)
    padded = get_cost_model("llama-3-8b@h100-sxm:padded")
    assert padded.padded and padded.name == "llama-3-8b@h100-sxm:padded"
    g = cm.with_coefficients(granularity=32, batch_ms=4.0)
    assert isinstance(g, StepTimeCostModel) and g.step_time is cm.step_time
    assert (g.granularity, g.overhead_ms, g.overhead_cost) == (32, 4.0, 4.0)
    for bad in ("llama-3-8b@nope", "nope@h100-sxm", "llama-3-8b@", "@h100-sxm", "a@l4:fast"):
        with pytest.raises(InputError) as err:
            get_cost_model(bad)
        assert err.value.field == "cost_model"
    with pytest.raises(InputError) as err:
        cm.with_coefficients(decode_ms_quad=1.0)
    assert err.value.field == "decode_ms_quad"
    with pytest.raises(InputError):
        StepTimeCostModel(step_time="fast")


@settings(max_examples=60, deadline=None)
@given(
    s=st.integers(1, 4000),
    g=st.integers(1, 600),
    b=st.integers(1, 2048),
    which=st.sampled_from(["calibrated", "ideal", "fitted"]),
)
def test_caps_prices_are_floors_of_every_batch(s, g, b, which):
    # the planner's cap model (members pay decode_cost, latency decode_ms) is a relaxation:
    # no batch is cheaper per member, none is faster
    step_time = {
        "calibrated": RooflineStepTime("llama-2-7b", "a100-80gb"),
        "ideal": RooflineStepTime("llama-3-8b", "l4", calibrated=False),
        "fitted": FittedStepTime(1.0, 0.01, 0.002, 0.0, 0.1),
    }[which]
    cm = StepTimeCostModel.from_step_time(step_time)
    share = float(cm.batch_decode_cost(s, g, b)) / b
    assert float(cm.decode_cost(s, g)) <= share * (1 + 1e-12)
    assert float(cm.decode_ms(s, g)) <= float(cm.batch_decode_ms(s, g, b)) * (1 + 1e-12)


def test_planner_in_real_units_returns_a_valid_plan(chat):
    cm = get_cost_model("llama-3-8b@h100-sxm")
    result = plan_requests(
        chat, cm, max_shapes=4, limits=Limits(max_batch_size=32), time_limit_s=2.0
    )
    (bucket,) = result.buckets
    assert verify(chat, bucket.plan, max_shapes=4).ok
    ev = evaluate(chat, bucket.plan, cm)
    assert ev.summary()["total_cost"] == pytest.approx(bucket.evaluation.summary()["total_cost"])
    cost, latency = reference_evaluation(chat, bucket.plan, cm.step_time)
    assert ev.cost.total == pytest.approx(cost, rel=1e-9)
    assert ev.p95_latency_ms == pytest.approx(
        float(np.sort(list(latency.values()))[int(np.ceil(0.95 * len(latency))) - 1])
    )
    assert ev.requests["seq_align"].max() <= 2048 and ev.batches["size"].max() <= 32
    # the bound comes from the relaxation: below the plan, and the plan is no worse than the
    # reference plans of chapter 04 the planner also tries
    assert 0 < result.lower_bound <= ev.cost.total
    reference = bucketed_plan(chat, [2048], gen_bucket_size=128, max_batch_size=32)
    assert ev.cost.total <= evaluate(chat, reference, cm).cost.total * (1 + 1e-9)


def test_cli_plan_evaluate_verify_in_real_units(chat, tmp_path, capsys):
    requests = tmp_path / "chat.jsonl"
    write_requests(chat, requests)
    plan = tmp_path / "plan.jsonl"
    cm = ["--cost-model", "llama-3-8b@h100-sxm"]
    argv = ["plan", str(requests), "-o", str(plan), *cm, "--time-limit", "1", "--exact", "never"]
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    code = main(["evaluate", str(requests), str(plan), *cm, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    from batchlab.plan import read_plan

    want = evaluate(chat, read_plan(plan), get_cost_model("llama-3-8b@h100-sxm")).summary()
    assert json.loads(out.out)["summary"]["total_cost"] == pytest.approx(want["total_cost"])
    assert main(["verify", str(requests), str(plan), *cm]) == 0
    capsys.readouterr()
    # a measurement file: the step-time model fitted on it
    rows = pd.DataFrame(
        {
            "batch_size": [1, 2, 4, 8],
            "prompt_len": 128,
            "gen_len": 32,
            "prefill_ms": [10.0, 18.0, 34.0, 66.0],
            "decode_ms_per_step": [2.0, 2.2, 2.6, 3.4],
            "oom": False,
        }
    )
    from batchlab.measure import MEASUREMENT_COLUMNS

    full = rows.reindex(columns=MEASUREMENT_COLUMNS, fill_value=0.0)
    full["oom"], full["device"], full["repeats"] = False, "cpu", 3
    for c in ("batch_size", "prompt_len", "gen_len", "prefill_ms", "decode_ms_per_step"):
        full[c] = rows[c]
    measured = save_measurement(full, tmp_path / "m.csv")
    write_plan(bucketed_plan(chat, [2048], max_batch_size=8), plan)
    code = main(["evaluate", str(requests), str(plan), "--cost-model", str(measured), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["summary"]["total_cost"] > 0
    code = main(["evaluate", str(requests), str(plan), "--cost-model", "x@h100-sxm"])
    out = capsys.readouterr()
    assert code == 2 and "--cost-model" in out.err and "Traceback" not in out.err


def test_cli_tables_count_a_hardware_preset_in_gpu_ms(chat, tmp_path, capsys):
    requests, plan = tmp_path / "chat.jsonl", tmp_path / "chat.plan.jsonl"
    write_requests(chat, requests)
    write_plan(bucketed_plan(chat, [2048], max_batch_size=8), plan)
    assert main(["evaluate", str(requests), str(plan), "--cost-model", "llama-3-8b@h100-sxm"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["total_cost"] == "GPU-ms" and rows["cost_decode"] == "GPU-ms"
    assert main(["evaluate", str(requests), str(plan)]) == 0
    out = capsys.readouterr().out
    assert "GPU-ms" not in out and "cost units" in out
