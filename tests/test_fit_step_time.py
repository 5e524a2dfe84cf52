"""Step-time models from measurements: FittedStepTime, fit_step_time, TableStepTime in batch
size and context, step tables on disk (no torch needed: synthetic measurements)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import measure
from batchlab.errors import InputError
from batchlab.simulate import simulate
from batchlab.steptime import FittedStepTime, StepBatch, TableStepTime

TRUE = FittedStepTime(2.0, 0.05, 0.001, 0.0002, 0.3, 2e-5)


def step_table(model=TRUE, *, noise=0.0, seed=0, warmup_ms=500.0, lognormal=False):
    """A step table like measure_continuous's: runs of B requests of P prompt tokens and G
    generated, their steps timed by ``model`` (times ``1 + noise · N(0, 1)``, or
    ``exp(noise · N(0, 1))`` with ``lognormal``: a right-skewed noise, as a shared machine's);
    the first run is a slow warm-up."""
    rng = np.random.default_rng(seed)
    rows, run = [], 0
    for p in (16, 64, 200):
        for b in (1, 2, 4, 8):
            for _rep in range(3):
                steps = [StepBatch.of(b * p, prefill_seqs=b, prefill_pairs=b * p * (p + 1) / 2)]
                steps += [StepBatch.of(0, np.full(b, p + 1.0 + j)) for j in range(7)]
                for k, s in enumerate(steps):
                    z = noise * rng.standard_normal()
                    ms = model.duration_ms(s) * (np.exp(z) if lognormal else 1 + z)
                    rows.append(
                        {
                            "run": run,
                            "batch_size": b,
                            "prompt_len": p,
                            "gen_len": 8,
                            "step": k,
                            "warmup": run == 0,
                            "start_ms": 0.0,
                            "step_ms": warmup_ms if run == 0 else ms,
                            "forward_ms": ms,
                            "gap_ms": 0.0 if k < len(steps) - 1 else np.nan,
                            "prefill_tokens": s.prefill_tokens,
                            "prefill_seqs": s.prefill_seqs,
                            "prefill_cached": s.prefill_cached,
                            "prefill_pairs": s.prefill_pairs,
                            "decode_seqs": s.decode_seqs,
                            "decode_context": int(s.decode_context),
                        }
                    )
                run += 1
    return pd.DataFrame(rows, columns=list(measure.STEP_COLUMNS))


# --- FittedStepTime -----------------------------------------------------------------------------


def test_fitted_step_time_by_hand():
    m = FittedStepTime(2.0, 0.05, 0.001, 0.0002, 0.3)
    # prefill of 100 tokens after 20 cached, ending (1 row): pairs 100·20 + 100·101/2 = 7,050
    b = StepBatch.of(100, [50.0, 70.0], prefill_cached=20)
    dense = 0.05 * (100 + 2)
    attention = 0.001 * (120 + 50 + 70) + 0.0002 * (7050 + 120)
    head = 0.3 * (1 + 2)
    step = m.step(b)
    assert step.parts == pytest.approx(
        {"dense": dense, "attention": attention, "lm_head": head, "overhead": 2.0}
    )
    assert step.total_ms == pytest.approx(2.0 + dense + attention + head)
    assert m.duration_ms(b) == pytest.approx(step.total_ms, rel=1e-12)
    # the masked pairs: every token of the step (100 + 2) against every KV token (240)
    masked = FittedStepTime(2.0, 0.05, 0.001, 0.0002, 0.3, 1e-5)
    assert masked.step(b).parts["attention"] == pytest.approx(attention + 1e-5 * 102 * 240)
    assert masked.duration_ms(b) == pytest.approx(masked.step(b).total_ms, rel=1e-12)
    decode = StepBatch.of(0, [50.0, 70.0])
    assert masked.duration_ms(decode) - m.duration_ms(decode) == pytest.approx(1e-5 * 2 * 120)
    assert m.duration_ms(StepBatch()) == 0.0 and m.step(StepBatch()).total_ms == 0.0
    with pytest.raises(InputError) as err:
        FittedStepTime(-1.0)
    assert err.value.field == "overhead_ms"


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), ctx=st.integers(1, 3000), k=st.integers(0, 30))
def test_fitted_decode_run_equals_step_by_step(n, ctx, k):
    first = StepBatch.of(0, np.full(n, float(ctx)))
    run = TRUE.decode_steps_ms(first, k)
    loop = [TRUE.duration_ms(first.advanced(j)) for j in range(k)]
    assert np.allclose(run, loop, rtol=1e-12, atol=0)


# --- fit_step_time --------------------------------------------------------------------------------


def test_fit_recovers_the_coefficients_of_noiseless_steps():
    fit = measure.fit_step_time(step_table())
    assert fit.coefficients() == pytest.approx(TRUE.coefficients(), rel=1e-6, abs=1e-9)
    r = fit.residual
    assert r.median_rel < 1e-9 and r.rms_ms < 1e-6
    # warm-up steps are dropped, repeats pooled: 3 prompt lengths x 4 batch sizes x 8 steps
    assert r.n_steps == 3 * 4 * 3 * 8 - 8 and r.n_groups == 3 * 4 * 8
    assert "continuous" in fit.source


def test_fit_on_noisy_steps_is_close_and_reports_the_noise():
    fit = measure.fit_step_time(step_table(noise=0.05, seed=1))
    for batch in (StepBatch.of(0, np.full(8, 150.0)), StepBatch.of(512, prefill_seqs=2)):
        assert fit.duration_ms(batch) == pytest.approx(TRUE.duration_ms(batch), rel=0.05)
    assert 0.01 < fit.residual.median_rel < 0.08


def test_fit_keeps_the_total_time_of_right_skewed_steps():
    # Steps timed with a right-skewed noise (a shared machine: some steps run slow). The
    # simulator adds step times up, so the fit must keep their total: weighting each error by
    # the measured time instead favours the steps that ran fast and fits low (0.95 here).
    table = step_table(noise=0.3, seed=3, lognormal=True)
    fit = measure.fit_step_time(table)
    assert 0.98 < fit.residual.total_ratio < 1.02
    steps = measure.steps_of_measurement(table)
    predicted = measure.step_features(steps) @ np.array(list(fit.coefficients().values()))
    assert predicted.sum() / steps["step_ms"].sum() == pytest.approx(fit.residual.total_ratio)
    assert "total" in str(fit.residual)


def test_fit_adds_the_engine_loop_gap_to_the_overhead():
    table = step_table()
    table.loc[table["gap_ms"].notna(), "gap_ms"] = 0.4
    fit = measure.fit_step_time(table)
    assert fit.overhead_ms == pytest.approx(TRUE.overhead_ms + 0.4, rel=1e-6)


def test_fit_on_a_batch_size_table_by_hand():
    # prefill of B·P tokens and mean decode at context P + G/2, from a linear truth; padded
    # generate attends within each sequence, so the fit has no masked-pair term
    PADDED = FittedStepTime(2.0, 0.05, 0.001, 0.0002, 0.3)
    P, G = 64, 16
    rows = []
    for b in (1, 2, 4, 8):
        pre = PADDED.duration_ms(
            StepBatch.of(b * P, prefill_seqs=b, prefill_pairs=b * P * (P + 1) / 2)
        )
        dec = PADDED.duration_ms(StepBatch.of(0, np.full(b, P + G / 2)))
        rows.append(
            {
                "batch_size": b,
                "prompt_len": P,
                "gen_len": G,
                "prefill_ms": pre,
                "decode_ms_per_step": dec,
                "oom": False,
            }
        )
    fit = measure.fit_step_time(pd.DataFrame(rows))
    for b in (1, 3, 8):
        batch = StepBatch.of(0, np.full(b, P + G / 2))
        assert fit.duration_ms(batch) == pytest.approx(PADDED.duration_ms(batch), rel=1e-6)
    assert fit.residual.n_steps == 8 and fit.attention_ms_per_masked_pair == 0.0


def test_fit_rejects_what_cannot_be_fitted():
    with pytest.raises(InputError) as err:
        measure.fit_step_time(step_table().iloc[:2])
    assert err.value.field == "measurement"
    with pytest.raises(InputError):
        measure.fit_step_time("steps.csv")
    with pytest.raises(InputError) as err:
        measure.fit_step_time(step_table().drop(columns="decode_context"))
    assert err.value.field == "decode_context"


def test_fitted_model_in_the_simulator():
    table = step_table()
    reqs = pd.DataFrame(
        {"request_id": ["a", "b"], "prompt_len": [30, 50], "gen_len": [5, 3], "arrival_s": 0.0}
    )
    fitted = simulate(reqs, "static", step_time=table, batch_size=2, kv_blocks=100)
    direct = simulate(reqs, "static", step_time=TRUE, batch_size=2, kv_blocks=100)
    assert fitted.summary()["latency_p50_ms"] == pytest.approx(
        direct.summary()["latency_p50_ms"], rel=1e-6
    )
    assert fitted.step_time.startswith("FittedStepTime(")


# --- TableStepTime in batch size and context ---------------------------------------------------


def test_decode_table_and_interpolation_in_context():
    table = measure.decode_table(step_table())
    assert sorted(set(table["context_len"])) == [20.0, 68.0, 204.0]  # P + G/2
    model = TableStepTime(table)
    assert model.models_context and "context_lens=[20, 68, 204]" in repr(model)
    # the truth is linear in the context: the measured mean decode step at b = 4 and context
    # 68 is the mean over the run's contexts P + 1 … P + 7 = 65 … 71
    truth = np.mean([TRUE.duration_ms(StepBatch.of(0, np.full(4, 64 + j))) for j in range(1, 8)])
    assert model.decode_ms_at(4, 68.0) == pytest.approx(truth, rel=1e-9)
    # between contexts (linear in the context, as the truth) and beyond (extrapolated)
    for ctx in (100.0, 400.0):
        want = TRUE.duration_ms(StepBatch.of(0, np.full(4, ctx)))
        assert model.decode_ms_at(4, ctx) == pytest.approx(want, rel=1e-6)
    run = model.decode_steps_ms(StepBatch.of(0, np.full(4, 100.0)), 5)
    want = [TRUE.duration_ms(StepBatch.of(0, np.full(4, 100.0 + j))) for j in range(5)]
    assert np.allclose(run, want, rtol=1e-6)


def test_one_context_table_says_so_and_warns_on_long_generations():
    rows = pd.DataFrame(
        {
            "batch_size": [1, 2, 4],
            "prompt_len": 100,
            "gen_len": 20,
            "decode_ms_per_step": [5.0, 6.0, 8.0],
            "prefill_ms_per_token": [0.1, 0.08, 0.07],
        }
    )
    model = TableStepTime(rows)
    assert not model.models_context
    assert "measured at context 110: context growth not modelled" in repr(model)
    first = StepBatch.of(0, np.full(2, 150.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.decode_steps_ms(first, 20).tolist() == [6.0] * 20  # up to 169 < 220
    with pytest.warns(UserWarning, match="beyond twice the 110 tokens"):
        model.decode_steps_ms(first, 200)
    with warnings.catch_warnings():  # once per model
        warnings.simplefilter("error")
        model.decode_steps_ms(first, 200)
    bare = TableStepTime(rows.drop(columns=["prompt_len", "gen_len"]))
    assert "context unknown" in repr(bare)


# --- step tables on disk ---------------------------------------------------------------------------


def test_step_table_round_trip_and_errors(tmp_path):
    table = step_table()
    table.attrs["settings"] = {"engine": "continuous", "num_threads": 1, "model": "m"}
    path = measure.save_measurement(table, tmp_path / "steps.csv")
    back = measure.load_measurement(path)
    assert measure.is_step_table(back) and list(back.columns) == list(measure.STEP_COLUMNS)
    pd.testing.assert_frame_equal(back, table, check_dtype=False, rtol=1e-5)
    assert back.attrs["settings"]["num_threads"] == 1
    assert measure.fit_step_time(back).coefficients() == pytest.approx(
        TRUE.coefficients(), rel=1e-4, abs=1e-7
    )
    bad = table.copy()
    bad["decode_seqs"] = bad["decode_seqs"].astype(object)
    bad.loc[5, "decode_seqs"] = "two"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError) as err:
        measure.load_measurement(tmp_path / "bad.csv")
    assert (err.value.field, err.value.line) == ("decode_seqs", 7)
    table.drop(columns="prefill_pairs").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError) as err:
        measure.load_measurement(tmp_path / "bad.csv")
    assert err.value.field == "prefill_pairs"


# --- the model against an engine's recorded steps ------------------------------------------------


def test_step_agreement_by_kind_by_hand():
    from batchlab.steptime import LinearStepTime

    # a prefill of 64 tokens, a mixed step (a 32-token chunk after 64 cached, 1 decoder at
    # context 65), two decodes of 2 sequences; the last step's gap is unknown (NaN)
    steps = pd.DataFrame(
        {
            "prefill_tokens": [64, 32, 0, 0],
            "prefill_seqs": [1, 1, 0, 0],
            "prefill_cached": [0, 64, 0, 0],
            "prefill_pairs": [64 * 65 / 2, 32 * 64 + 32 * 33 / 2, 0, 0],
            "decode_seqs": [0, 1, 2, 2],
            "decode_context": [0, 65, 130, 132],
            "step_ms": [10.0, 8.0, 4.0, 6.0],
            "gap_ms": [0.5, 0.2, 20.0, np.nan],
        }
    )
    model = LinearStepTime(2.0, 0.1, 0.5)  # 2 ms + 0.1 ms per prompt token + 0.5 ms per decoder
    agree = measure.step_agreement(steps, model).set_index("kind")
    assert agree.loc["prefill", ["n_steps", "real_ms", "predicted_ms"]].tolist() == pytest.approx(
        [1, 10.0, 8.4]
    )
    assert agree.loc["mixed", "predicted_ms"] == pytest.approx(2.0 + 3.2 + 0.5)
    assert agree.loc["decode", "predicted_ms"] == pytest.approx(2 * 3.0)
    assert agree.loc["decode", "ratio"] == pytest.approx(6.0 / 10.0)
    assert agree.loc["all", "n_steps"] == 4
    assert agree.loc["all", "ratio"] == pytest.approx((8.4 + 5.7 + 6.0) / 28.0)
    assert agree.loc["all", "gap_ms"] == pytest.approx(0.7)  # a 20 ms gap is waiting, not the loop
    # a FittedStepTime is priced through its regressors, the same as step by step
    fast = measure.step_agreement(steps, TRUE)["predicted_ms"].to_numpy()
    rows = [
        TRUE.duration_ms(
            StepBatch(
                int(r.prefill_tokens),
                r.prefill_pairs,
                int(r.prefill_cached),
                int(r.prefill_seqs),
                int(r.decode_seqs),
                float(r.decode_context),
            )
        )
        for r in steps.itertuples()
    ]
    kinds = np.array(["prefill", "mixed", "decode", "decode"])
    want = [
        sum(v for v, k in zip(rows, kinds, strict=True) if k == kind)
        for kind in ("decode", "prefill", "mixed")
    ]
    assert fast == pytest.approx([*want, sum(rows)], rel=1e-12)


# --- served segments of a measurement (measure_continuous(served_requests=...)) -----------------


def served_segment(model, *, seed=0, n=60, run=10_000):
    """A served segment's steps (batch_size 0): decodes of 1 to 8 sequences at mixed contexts,
    single prompts of any length, prompt chunks beside decodes, timed by ``model``."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        n_dec = int(rng.integers(0, 9))
        ctx = rng.integers(20, 300, size=n_dec).astype(float)
        p = int(rng.integers(1, 200)) if (n_dec == 0 or rng.random() < 0.2) else 0
        s = StepBatch.of(p, ctx, prefill_seqs=int(p > 0), prefill_pairs=p * (p + 1) / 2)
        rows.append(
            {
                "run": run,
                "batch_size": 0,
                "prompt_len": 0,
                "gen_len": 0,
                "step": k,
                "warmup": False,
                "start_ms": float(k),
                "step_ms": model.duration_ms(s),
                "forward_ms": model.duration_ms(s),
                "gap_ms": 0.0 if k < n - 1 else np.nan,
                "prefill_tokens": s.prefill_tokens,
                "prefill_seqs": s.prefill_seqs,
                "prefill_cached": s.prefill_cached,
                "prefill_pairs": s.prefill_pairs,
                "decode_seqs": s.decode_seqs,
                "decode_context": int(s.decode_context),
            }
        )
    return pd.DataFrame(rows, columns=list(measure.STEP_COLUMNS))


def test_served_segments_are_fitted_unless_left_out():
    # serving costs 20 % more per step than the grid (an overhead the grid's steps do not
    # have): fitting on every step moves the model toward the served steps; served=False, the
    # grid alone, recovers the grid's truth and prices the served steps low, as a check shows
    costly = FittedStepTime(*(1.2 * np.array(list(TRUE.coefficients().values()))))
    grid = step_table()
    served = served_segment(costly, n=400)
    table = pd.concat([grid, served], ignore_index=True)
    mask = measure.served_segment_mask(table)
    assert mask.sum() == len(served) and not mask[: len(grid)].any()
    assert not measure.served_segment_mask(grid).any()
    alone = measure.fit_step_time(table, served=False)
    assert alone.coefficients() == pytest.approx(TRUE.coefficients(), rel=1e-6, abs=1e-9)
    check = measure.step_agreement(table[mask], alone).set_index("kind")
    assert check.loc["all", "ratio"] == pytest.approx(1 / 1.2, rel=1e-6)
    both = measure.fit_step_time(table)
    assert both.residual.n_steps == len(grid) - 8 + len(served)
    on_served = measure.step_agreement(table[mask], both).loc[3, "ratio"]
    assert 0.95 < on_served < 1.1  # the served steps are most of the table
    assert measure.step_agreement(grid[~grid["warmup"]], both).loc[3, "ratio"] > 1.05


def test_served_segments_do_not_enter_the_decode_table_and_survive_a_file(tmp_path):
    grid = step_table()
    table = pd.concat([grid, served_segment(TRUE)], ignore_index=True)
    assert measure.decode_table(table).equals(measure.decode_table(grid))
    path = measure.save_measurement(table, tmp_path / "steps.csv")
    back = measure.load_measurement(path)
    assert measure.served_segment_mask(back).sum() == 60
    assert measure.fit_step_time(back).coefficients() == pytest.approx(
        TRUE.coefficients(), rel=1e-4, abs=1e-7
    )


def test_served_workload_spans_the_grid():
    df = measure.served_workload([32, 96, 256], 32, 400, seed=5)
    assert list(df.columns) == ["request_id", "prompt_len", "gen_len"] and len(df) == 400
    assert df["request_id"].is_unique
    assert df["prompt_len"].between(1, 256).all() and df["gen_len"].between(2, 32).all()
    # log-normal around the geometric mean of the prompt lengths (96.9) and half gen_len
    assert 80 < df["prompt_len"].median() < 115 and 13 <= df["gen_len"].median() <= 19
    assert df["prompt_len"].nunique() > 50  # varied, unlike the grid's
    pd.testing.assert_frame_equal(df, measure.served_workload([32, 96, 256], 32, 400, seed=5))
    with pytest.raises(InputError):
        measure.served_workload([32], 1, 4, seed=0)
    with pytest.raises(InputError):
        measure.served_workload([32], 8, 0, seed=0)


def test_served_segment_load_steps_up():
    from batchlab.measure.engine import _stepped_arrivals

    df = measure.served_workload([64], 16, 3000, seed=1)
    timed = _stepped_arrivals(df, [5.0, 50.0, 500.0], seed=2)
    a = timed["arrival_s"].to_numpy()
    assert a[0] == 0.0 and np.all(np.diff(a) > 0)
    rates = [(len(part) - 1) / (part[-1] - part[0]) for part in np.array_split(a, 3)]
    assert rates == pytest.approx([5.0, 50.0, 500.0], rel=0.1)


# --- the wake-up: a step after the engine sat idle ----------------------------------------------


def with_idle_arrivals(segment, model, *, wake_ms, every=5, gap_ms=80.0):
    """``segment`` with every ``every``-th step a new prompt arriving at an idle engine (the
    previous step left ``gap_ms``; nothing decoding, nothing cached), costing ``wake_ms`` more."""
    seg = segment.copy()
    for k in range(every, len(seg), every):
        p = int(seg.loc[k, "prefill_tokens"]) or 50
        s = StepBatch.of(p, prefill_seqs=1, prefill_pairs=p * (p + 1) / 2)
        seg.loc[k, ["prefill_tokens", "prefill_seqs", "prefill_cached", "prefill_pairs"]] = [
            p, 1, 0, p * (p + 1) / 2,
        ]  # fmt: skip
        seg.loc[k, ["decode_seqs", "decode_context"]] = [0, 0]
        seg.loc[k, "step_ms"] = model.duration_ms(s) + wake_ms
        seg.loc[k - 1, "gap_ms"] = gap_ms
    return seg


def test_fit_prices_the_wake_up_after_idle_apart():
    grid = step_table()
    served = with_idle_arrivals(served_segment(TRUE, n=200), TRUE, wake_ms=3.0)
    table = pd.concat([grid, served], ignore_index=True)
    idle = measure.after_idle_mask(table)
    assert idle.sum() == 39 and (table.loc[idle, "decode_seqs"] == 0).all()
    fit = measure.fit_step_time(table)
    assert fit.wake_ms == pytest.approx(3.0, rel=1e-6)
    assert fit.coefficients() == pytest.approx(TRUE.coefficients(), rel=1e-6, abs=1e-9)
    assert fit.residual.total_ratio == pytest.approx(1.0, rel=1e-9)
    assert "wake_ms=3" in repr(fit)
    # the model prices the wake-up on exactly those steps
    agree = measure.step_agreement(served, fit).set_index("kind")
    assert agree["ratio"].to_numpy() == pytest.approx(1.0, rel=1e-9)
    assert measure.step_agreement(served, TRUE).loc[1, "ratio"] < 0.9  # prefill, no wake
    # a long gap inside a grid run is the engine's thread held up, not idle: no wake-up
    held = grid.copy()
    held.loc[held["step"] == 0, "gap_ms"] = 80.0
    assert not measure.after_idle_mask(held).any()
    assert measure.fit_step_time(held).wake_ms == 0.0
    # fewer than 5 steps after idle: not enough to fit it
    few = with_idle_arrivals(served_segment(TRUE, n=20), TRUE, wake_ms=3.0)
    assert measure.fit_step_time(pd.concat([grid, few], ignore_index=True)).wake_ms == 0.0


def test_simulator_adds_the_wake_up_to_the_first_step_after_idle():
    # one request at a time, prompt 40, 1 token: each is one prefill step. Back to back (the
    # second arrives while the first runs) there is no wake-up; after an idle gap there is.
    woken = FittedStepTime(2.0, 0.05, wake_ms=4.0)
    plain = FittedStepTime(2.0, 0.05)
    prefill_ms = 2.0 + 0.05 * 40
    df = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "prompt_len": 40,
            "gen_len": 1,
            "arrival_s": [0.0, 0.001, 0.100, 0.1042],  # d arrives 0.2 ms after c's step ends
        }
    )
    opts = dict(max_num_seqs=1, chunk_size=64, max_num_batched_tokens=64, kv_blocks=64)
    got = simulate(df, "continuous", step_time=woken, **opts).requests.set_index("request_id")
    base = simulate(df, "continuous", step_time=plain, **opts).requests.set_index("request_id")
    # a starts the run at 0 (no idle before it); b waits for a (0-4 ms) and runs 4-8 ms; c
    # finds the engine idle 92 ms: 100-104 ms, or 100-108 with the wake-up; d arrives at
    # 104.2 ms: 0.2 ms after c's plain step (too short an idle for a wake-up), or during c's
    # woken step (waits to 108)
    assert prefill_ms == 4.0
    assert base["ttft_ms"].tolist() == pytest.approx([4.0, 7.0, 4.0, 4.0])
    assert got["ttft_ms"].tolist() == pytest.approx([4.0, 7.0, 8.0, 108 - 104.2 + 4.0])
    assert got["latency_ms"].tolist() == pytest.approx(got["ttft_ms"].tolist())


def test_wake_up_probes_in_the_grid_are_priced_apart():
    # measure_continuous's wake-up probes: every other grid run starts after the engine sat
    # idle (the previous run's last step keeps its gap); its first step, new prompts only,
    # costs 2.5 ms more than the same composition timed back to back in the other repeats
    table = step_table()
    first = table.index[(table["step"] == 0) & (table["run"] % 2 == 1)]
    table.loc[first - 1, "gap_ms"] = 100.0
    table.loc[first, "step_ms"] += 2.5
    idle = measure.after_idle_mask(table)
    assert (np.flatnonzero(idle) == first.to_numpy()).all()
    fit = measure.fit_step_time(table)
    assert fit.wake_ms == pytest.approx(2.5, rel=1e-6)
    assert fit.coefficients() == pytest.approx(TRUE.coefficients(), rel=1e-6, abs=1e-9)
    # the probes' gaps are idle time, not the engine loop: the overhead keeps no part of them
    assert fit.overhead_ms == pytest.approx(TRUE.overhead_ms, rel=1e-6)
