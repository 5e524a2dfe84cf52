"""Tests of batchlab.measure with torch: the tiny model, the generation loop, the table, the
roofline comparison of real runs, files (slow: they run real generations)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from batchlab import measure, roofline  # noqa: E402
from batchlab.cli import run_measure_cli  # noqa: E402
from batchlab.errors import InputError  # noqa: E402

P, G = 16, 4  # tiny prompt and generation lengths for fast tests


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread in these tests: they check behaviour, not speed, and a single thread
    keeps them fast on a shared machine (no spinning thread pool). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return measure.tiny_llama(seed=0)


@pytest.fixture(scope="module")
def table(tiny):
    return measure.measure_batch_sizes(tiny, [2, 1], P, G, "cpu", warmup=1, repeats=1, seed=3)


# ------------------------------------------------------------------------------ models


def test_tiny_llama_shapes_and_parameter_count(tiny):
    c = tiny.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (4, 256, 4)
    assert (c.num_key_value_heads, c.intermediate_size, c.vocab_size) == (2, 688, 4096)
    # embeddings 4096·256 = 1,048,576; per layer: q 256·256 + k 256·128 + v 256·128 + o 256·256
    # = 196,608, MLP 3·256·688 = 528,384, two norms 512 -> 725,504, times 4 = 2,902,016;
    # final norm 256; lm_head (untied) 1,048,576. Total 4,999,424.
    assert sum(p.numel() for p in tiny.parameters()) == 4_999_424
    assert next(tiny.parameters()).dtype == torch.float32
    assert not tiny.training


def test_tiny_llama_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = measure.tiny_llama(
        n_layers=1,
        hidden_size=64,
        n_heads=2,
        n_kv_heads=1,
        intermediate_size=96,
        vocab_size=128,
        seed=5,
    )
    assert torch.equal(torch.random.get_rng_state(), state)
    b = measure.tiny_llama(
        n_layers=1,
        hidden_size=64,
        n_heads=2,
        n_kv_heads=1,
        intermediate_size=96,
        vocab_size=128,
        seed=5,
    )
    c = measure.tiny_llama(
        n_layers=1,
        hidden_size=64,
        n_heads=2,
        n_kv_heads=1,
        intermediate_size=96,
        vocab_size=128,
        seed=6,
    )
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hidden_size": 250}, "n_heads"),
        ({"n_kv_heads": 3}, "n_kv_heads"),
        ({"n_layers": 0}, "n_layers"),
    ],
)
def test_tiny_llama_rejects_bad_shapes(kwargs, field):
    with pytest.raises(InputError) as err:
        measure.tiny_llama(**kwargs)
    assert err.value.field == field


def test_load_model(tiny, tmp_path):
    assert measure.load_model(tiny) is tiny
    loaded = measure.load_model("tiny", seed=0)
    assert torch.equal(loaded.lm_head.weight, tiny.lm_head.weight)
    with pytest.raises(InputError, match="tiny"):
        measure.load_model(str(tmp_path / "missing"))
    with pytest.raises(InputError):
        measure.load_model(42)
    # a saved local folder loads offline and gives the same weights
    tiny.save_pretrained(tmp_path / "m")
    again = measure.load_model(tmp_path / "m")
    assert torch.equal(again.lm_head.weight, tiny.lm_head.weight)


def test_model_spec_of_tiny(tiny):
    spec = measure.model_spec_of(tiny)
    assert (spec.n_layers, spec.hidden_size, spec.n_heads, spec.n_kv_heads) == (4, 256, 4, 2)
    assert (spec.intermediate_size, spec.vocab_size) == (688, 4096)
    assert spec.bytes_per_weight == spec.bytes_per_kv == 4.0  # float32
    # 2 (K and V) · 4 layers · 2 KV heads · head dim 64 · 4 bytes = 4,096 bytes per token
    assert roofline.kv_cache_bytes_per_token(spec) == 4096
    assert spec.n_params == sum(p.numel() for p in tiny.parameters())
    assert measure.model_spec_of(tiny.config).n_layers == 4
    assert measure.model_spec_of("llama-2-7b") == roofline.get_model("llama-2-7b")
    with pytest.raises(InputError):
        measure.model_spec_of(object())


def test_model_spec_of_configs():
    import transformers

    gpt2 = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100)
    spec = measure.model_spec_of(gpt2, name="g")
    # GPT-2 names; no KV-head count -> the heads; no n_inner -> 4 · 64 = 256
    assert (spec.name, spec.n_layers, spec.hidden_size, spec.n_heads) == ("g", 2, 64, 4)
    assert (spec.n_kv_heads, spec.intermediate_size, spec.vocab_size) == (4, 256, 100)
    odd = transformers.LlamaConfig(
        num_hidden_layers=1,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=96,
        vocab_size=100,
        head_dim=32,
    )
    with pytest.warns(UserWarning, match="head_dim"):
        measure.model_spec_of(odd)


def test_resolve_device():
    assert measure.resolve_device("cpu") == "cpu"
    assert measure.resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(InputError):
        measure.resolve_device("tpu")


# ------------------------------------------------------------------------------ generation


def test_greedy_decode_matches_generate(tiny):
    ids = torch.randint(0, 4096, (3, P), generator=torch.Generator().manual_seed(1))
    run = measure.greedy_decode(tiny, ids, 6)
    ref = tiny.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
        pad_token_id=0,
    )
    assert run.tokens.shape == (3, 6)
    assert torch.equal(run.tokens, ref[:, P:])
    assert run.prefill_ms > 0 and run.decode_ms_per_step > 0
    assert run.e2e_ms == pytest.approx(run.prefill_ms + 5 * run.decode_ms_per_step)
    # the cache holds P + 6 - 1 = 21 positions: 2 · 4 layers · 3 seqs · 2 heads · 21 · 64 · 4 B
    assert run.kv_cache_bytes == 2 * 4 * 3 * 2 * 21 * 64 * 4


def test_greedy_decode_single_token(tiny):
    ids = torch.zeros((1, 4), dtype=torch.long)
    run = measure.greedy_decode(tiny, ids, 1)
    assert run.tokens.shape == (1, 1)
    assert math.isnan(run.decode_ms_per_step)
    assert run.e2e_ms == run.prefill_ms


# ------------------------------------------------------------------------------ the table


def test_measure_table_columns_and_relations(table):
    assert tuple(table.columns) == measure.MEASUREMENT_COLUMNS
    assert table["batch_size"].tolist() == [1, 2]  # sorted
    assert table["batch_size"].dtype == np.int64
    assert not table["oom"].any()
    assert (table["device"] == "cpu").all()
    assert (table[["prompt_len", "gen_len", "repeats"]].to_numpy() == [P, G, 1]).all()
    for column in measure.TIMING_COLUMNS:
        assert (table[column] > 0).all(), column
    # with one repeat every relation is exact
    e2e = table["prefill_ms"] + (G - 1) * table["decode_ms_per_step"]
    np.testing.assert_allclose(table["e2e_ms"], e2e)
    np.testing.assert_allclose(table["latency_ms_per_request"], table["e2e_ms"])
    np.testing.assert_allclose(
        table["output_tokens_per_s"], table["batch_size"] * G / (table["e2e_ms"] / 1e3)
    )
    np.testing.assert_allclose(
        table["prefill_ms_per_token"], table["prefill_ms"] / (table["batch_size"] * P)
    )
    assert (table["e2e_ms_spread"] == 0).all()  # one repeat: no spread
    # KV cache: 4,096 B per token · (16 + 4 - 1) positions = 77,824 B per sequence
    np.testing.assert_allclose(table["kv_cache_mb"], table["batch_size"] * 77_824 / 1e6)
    assert np.isfinite(table["peak_memory_mb"]).all()
    assert (table["baseline_memory_mb"] > 20).all()  # the process holds at least the weights
    s = table.attrs["settings"]
    assert s["prompt_len"] == P and s["gen_len"] == G and s["batch_sizes"] == [1, 2]
    assert s["model"] == "tiny-llama" and s["dtype"] == "float32"
    assert s["model_spec"]["n_kv_heads"] == 2 and s["model_spec"]["bytes_per_kv"] == 4.0


def test_measure_spread_is_interquartile_range(tiny, monkeypatch):
    # prefill times of the three timed runs: 4, 1, 10 ms -> median 4, IQR = 7 - 2.5 = 4.5
    # the first two are untimed: the priming run of the first size and the memory run
    fake = iter([8.0, 9.0, 4.0, 1.0, 10.0])
    real = measure.greedy_decode

    def scripted(model, ids, gen_len, *, device=None):
        run = real(model, ids, gen_len, device=device)
        return measure.GenerationRun(run.tokens, next(fake), 2.0, run.kv_cache_bytes)

    monkeypatch.setattr(measure.harness, "greedy_decode", scripted)
    df = measure.measure_batch_sizes(tiny, [1], P, G, "cpu", warmup=1, repeats=3)
    assert next(fake, None) is None  # exactly five runs
    row = df.iloc[0]
    assert row["prefill_ms"] == 4.0
    assert row["prefill_ms_spread"] == 4.5
    assert row["decode_ms_per_step"] == 2.0 and row["decode_ms_per_step_spread"] == 0.0
    # e2e per run = prefill + 3 · 2 ms: 10, 7, 16 -> median 10
    assert row["e2e_ms"] == 10.0
    # throughput per run = 1 · 4 tokens / e2e: 400, 571.43, 250 tokens/s -> median 400
    assert row["output_tokens_per_s"] == pytest.approx(400.0)


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"),
    ],
)
def test_measure_stops_at_out_of_memory(tiny, monkeypatch, error):
    real = measure.greedy_decode
    calls = []

    def failing(model, ids, gen_len, *, device=None):
        calls.append(ids.shape[0])
        if ids.shape[0] >= 4:
            raise error()
        return real(model, ids, gen_len, device=device)

    monkeypatch.setattr(measure.harness, "greedy_decode", failing)
    df = measure.measure_batch_sizes(tiny, [1, 2, 4, 8], P, G, "cpu", warmup=0, repeats=1)
    assert df["batch_size"].tolist() == [1, 2, 4]
    assert df["oom"].tolist() == [False, False, True]
    assert df.loc[2, measure.TIMING_COLUMNS].isna().all()
    assert 8 not in calls  # stopped before the larger size
    # analysis ignores the OOM row
    assert measure.saturation_batch_size(df) in (1, 2)


def test_measure_reraises_other_errors(tiny, monkeypatch):
    def broken(model, ids, gen_len, *, device=None):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(measure.harness, "greedy_decode", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure.measure_batch_sizes(tiny, [1], P, G, "cpu", warmup=0, repeats=1)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (([], P, G), "batch_sizes"),
        (([0, 1], P, G), "batch_sizes"),
        (([1], 0, G), "prompt_len"),
        (([1], P, 1), "gen_len"),
        (([1], 4000, 200), "prompt_len"),  # beyond max_position_embeddings 4096
    ],
)
def test_measure_rejects_bad_settings(tiny, args, field):
    with pytest.raises(InputError) as err:
        measure.measure_batch_sizes(tiny, *args, device="cpu")
    assert err.value.field == field


def test_measured_kv_slope_matches_roofline(table, tiny):
    spec = measure.model_spec_of(tiny)
    slope = measure.memory_per_sequence_mb(table, "kv_cache_mb")
    assert slope == pytest.approx(roofline.kv_cache_bytes_per_token(spec) * (P + G - 1) / 1e6)


def test_measure_cpu_device():
    dev = measure.measure_cpu_device(seconds=0.2, matrix_size=256, copy_mb=16)
    assert isinstance(dev, roofline.DeviceSpec)
    assert "measured" in dev.name
    assert 1e8 < dev.peak_flops < 1e14
    assert 1e8 < dev.memory_bandwidth < 1e13
    assert dev.memory_bytes > 1e8
    with pytest.raises(InputError):
        measure.measure_cpu_device(seconds=0)


# ------------------------------------------------------------------------------ analysis


# ------------------------------------------------------------------------------ roofline


def test_roofline_table_and_comparison(table, tiny):
    spec = measure.model_spec_of(tiny)
    dev = roofline.DeviceSpec("toy", peak_flops=1e12, memory_bandwidth=1e10, memory_bytes=1e9)
    pred = measure.roofline_table(spec, dev, [1, 2], P, G)
    assert tuple(pred.columns) == measure.MEASUREMENT_COLUMNS
    # decode: the mean of the roofline step times at contexts P + 1 … P + G - 1; a device
    # without a data-sheet SM count (a measured CPU, this toy) gets the data-sheet ideal
    for b in (1, 2):
        steps = [
            roofline.step_time_ms(spec, dev, context_lens=np.full(b, P + t), calibrated=False)
            for t in range(1, G)
        ]
        row = pred.loc[pred["batch_size"] == b].iloc[0]
        assert row["decode_ms_per_step"] == pytest.approx(np.mean(steps))
        assert row["e2e_ms"] == pytest.approx(
            row["prefill_ms"] + (G - 1) * row["decode_ms_per_step"]
        )
        assert row["kv_cache_mb"] == pytest.approx(b * 4096 * (P + G - 1) / 1e6)
    cmp = measure.compare_with_roofline(table, spec, dev)
    assert cmp["batch_size"].tolist() == [1, 2]
    np.testing.assert_allclose(cmp["measured_e2e_ms"], table["e2e_ms"])
    np.testing.assert_allclose(
        cmp["ratio_e2e_ms"], cmp["measured_e2e_ms"] / cmp["predicted_e2e_ms"]
    )
    np.testing.assert_allclose(cmp["ratio_kv_cache_mb"], 1.0)  # the cache arithmetic is exact


# ------------------------------------------------------------------------------ files


def test_save_and_load_roundtrip(table, tmp_path):
    path = measure.save_measurement(table, tmp_path / "m.csv")
    assert path == tmp_path / "m.csv"
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["settings"]["prompt_len"] == P
    assert meta["versions"]["torch"] == torch.__version__
    assert "date_utc" in meta and meta["columns"] == list(measure.MEASUREMENT_COLUMNS)
    back = measure.load_measurement(path)
    assert back.attrs["settings"]["gen_len"] == G
    pd.testing.assert_frame_equal(
        back, table.reset_index(drop=True), check_exact=False, rtol=1e-5, check_like=False
    )
    # no leftover temporary files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]


def test_table_step_time_reads_a_saved_measurement(table, tmp_path):
    back = measure.load_measurement(measure.save_measurement(table, tmp_path / "s.csv"))
    steps = roofline.TableStepTime(back)
    assert steps.prompt_len == P
    for _, row in back.iterrows():
        b = int(row["batch_size"])
        assert steps.decode_ms_at(b) == pytest.approx(row["decode_ms_per_step"])
        # a prefill of b measured prompts costs the measured prefill
        assert steps.step_ms(b * P, np.array([])) == pytest.approx(row["prefill_ms"], rel=1e-5)


def test_save_default_path_is_the_user_cache(table, tmp_path, monkeypatch):
    # never the repository's data/: the user's cache folder (XDG_CACHE_HOME on Linux)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = measure.save_measurement(table)
    assert path == measure.default_measurement_path(table.attrs["settings"])
    assert path.parent == measure.measurement_dir()
    assert path.is_relative_to(tmp_path / "cache")
    assert path.name == "tiny-llama-cpu-p16-g4.csv"
    assert path.exists() and not (tmp_path / "data").exists()
    settings = {**table.attrs["settings"], "engine": "continuous"}
    assert (
        measure.default_measurement_path(settings, "x").name == "tiny-llama-cpu-continuous-g4.csv"
    )


def _write(tmp_path, df):
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


def test_load_measurement_errors(table, tmp_path):
    with pytest.raises(InputError) as err:
        measure.load_measurement(_write(tmp_path, table.drop(columns="decode_ms_per_step")))
    assert err.value.field == "decode_ms_per_step"
    bad = table.copy()
    bad["oom"] = bad["oom"].astype(object)
    bad.loc[1, "oom"] = "maybe"
    with pytest.raises(InputError) as err:
        measure.load_measurement(_write(tmp_path, bad))
    assert (err.value.field, err.value.line) == ("oom", 3)  # header is line 1
    dup = table.copy()
    dup["batch_size"] = [1, 1]
    with pytest.raises(InputError) as err:
        measure.load_measurement(_write(tmp_path, dup))
    assert (err.value.field, err.value.line) == ("batch_size", 3)
    nan = table.copy()
    nan.loc[0, "e2e_ms"] = np.nan  # NaN only allowed in out-of-memory rows
    with pytest.raises(InputError) as err:
        measure.load_measurement(_write(tmp_path, nan))
    assert (err.value.field, err.value.line) == ("e2e_ms", 2)
    text = table.copy()
    text["prefill_ms"] = text["prefill_ms"].astype(object)
    text.loc[1, "prefill_ms"] = "fast"
    with pytest.raises(InputError, match="fast"):
        measure.load_measurement(_write(tmp_path, text))
    with pytest.raises(InputError):
        measure.load_measurement(tmp_path / "nope.csv")
    with pytest.raises(InputError):
        measure.save_measurement(table, tmp_path / "x.txt")


def test_load_keeps_oom_rows(table, tmp_path):
    df = pd.concat([table, pd.DataFrame([measure.oom_row(4, P, G, "cpu", 1)])], ignore_index=True)
    path = measure.save_measurement(df, tmp_path / "o.csv", settings={"note": "x"})
    back = measure.load_measurement(path)
    assert back["oom"].tolist() == [False, False, True]
    assert back.loc[2, "e2e_ms"] != back.loc[2, "e2e_ms"]  # NaN
    assert back.attrs["settings"] == {"note": "x"}


# ------------------------------------------------------------------------------ CLI helper


def test_run_measure_cli(tmp_path):
    run = run_measure_cli(
        "tiny",
        "1,2",
        P,
        G,
        device="cpu",
        warmup=0,
        repeats=1,
        output=tmp_path / "cli.csv",
        latency_limit_ms=1e6,
        progress=False,
    )
    assert run.path == tmp_path / "cli.csv" and run.path.exists()
    assert run.table["batch_size"].tolist() == [1, 2]
    assert run.summary.max_batch_under_latency == 2
    text = run.report()
    assert "saturation batch size" in text and "cli.csv" in text
    assert "memory per extra sequence" in text
