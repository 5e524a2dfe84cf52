"""The continuous-batching engine measured step by step (transformers' ``generate_batch`` engine).

``batchlab measure --engine continuous`` and :func:`measure_continuous` run the engine a
continuous-batching server runs (transformers 5.x: ``model.init_continuous_batching()``, the
engine behind ``generate_batch`` and ``transformers serve``) and record every *step* it takes:
its duration and its composition, the same quantities a
:class:`~batchlab.steptime.StepBatch` holds, so a step-time model can be fitted on them
(:func:`batchlab.measure.fit_step_time`) and handed to the simulator and the planner.

The engine has no public per-step hook, so :class:`StepRecorder` wraps three methods of its
batch processor (``prepare_next_batch``, ``_generation_step``, ``update_batch``) for the
duration of a run and restores them afterwards; a transformers without them raises a clear
:class:`~batchlab.errors.InputError`. A step's composition is read when it is scheduled: a
sequence that has generated a token is decoding (its context: the tokens cached before the step
plus the new one), any other is a prefill chunk (its tokens, the tokens already cached, its
attention pairs, and whether the chunk ends the prompt, emitting the first token).

Step table columns (:data:`STEP_COLUMNS`; times in ms, relative to the run's start):

- ``run`` (which measurement run), ``batch_size`` and ``prompt_len`` / ``gen_len`` (the
  requests of that run), ``step`` (index in the run), ``warmup`` (a discarded run's step);
- ``start_ms``: the step starts scheduling; ``step_ms``: scheduling, the forward pass, sampling
  and the update of the requests; ``forward_ms``: the forward pass alone; ``gap_ms``: time to
  the next step's start (the engine loop's own work between steps; NaN for a run's last step);
- ``prefill_tokens``, ``prefill_seqs`` (chunks ending their prompt), ``prefill_cached``,
  ``prefill_pairs``, ``decode_seqs``, ``decode_context`` (sum of the decoders' contexts, the
  new token included).

Threads: on a busy 2-core machine two PyTorch threads ran a decode step 15x slower than one, so
the measurement sets the thread count explicitly (``threads``, default 1) and records it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.measure.harness import load_model, model_spec_of, resolve_device, torch_threads
from batchlab.measure.table import check_batch_sizes

__all__ = [
    "ENGINE_REQUEST_COLUMNS",
    "STEP_COLUMNS",
    "STEP_COMPOSITION",
    "EngineConfig",
    "EngineRun",
    "StepRecorder",
    "measure_continuous",
    "run_engine",
    "served_workload",
]

STEP_COMPOSITION: tuple[str, ...] = (
    "prefill_tokens",
    "prefill_seqs",
    "prefill_cached",
    "prefill_pairs",
    "decode_seqs",
    "decode_context",
)
"""What a step computed (tokens, sequences, pairs): the step table's last columns, the
:class:`~batchlab.steptime.StepBatch` a step-time model is fitted on."""

STEP_COLUMNS: tuple[str, ...] = (
    "run",
    "batch_size",
    "prompt_len",
    "gen_len",
    "step",
    "warmup",
    "start_ms",
    "step_ms",
    "forward_ms",
    "gap_ms",
    *STEP_COMPOSITION,
)
"""Columns of a step table (see the module docstring)."""

ENGINE_REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id",
    "prompt_len",
    "gen_len",
    "arrival_ms",
    "first_token_ms",
    "finish_ms",
    "ttft_ms",
    "latency_ms",
    "n_tokens",
)
"""Columns of an engine run's request table (ms from the run's start; ``n_tokens``: tokens
the request generated)."""

_WARMUP = object()  # the label of the warm-up request's steps (dropped)
_LOCK = threading.Lock()  # one instrumented engine at a time (the wrappers are class-level)


def _engine_classes():
    try:
        from transformers import ContinuousBatchingConfig, GenerationConfig
        from transformers.generation.continuous_batching.continuous_api import (
            ContinuousBatchProcessor,
        )
    except ImportError as exc:
        raise InputError(
            "the continuous engine needs transformers >= 5 with continuous batching "
            f"(ContinuousBatchingConfig): {exc}",
            field="engine",
        ) from None
    for name in ("prepare_next_batch", "_generation_step", "update_batch"):
        if not hasattr(ContinuousBatchProcessor, name):
            raise InputError(
                f"this transformers' continuous batching has no {name}(): cannot time its steps",
                field="engine",
            )
    return GenerationConfig, ContinuousBatchingConfig, ContinuousBatchProcessor


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the continuous-batching engine (transformers' ``ContinuousBatchingConfig``).

    ``num_blocks`` KV-cache pages of ``page_size`` tokens; at most ``max_batch_tokens`` tokens
    and ``max_requests_per_batch`` sequences per step (decodes first, then prompt chunks, first
    come first served). :meth:`simulate_options` gives the simulator the same engine.
    """

    num_blocks: int = 256
    page_size: int = 32
    max_batch_tokens: int = 256
    max_requests_per_batch: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = check_scalar(getattr(self, f.name), f.name, int, min_val=1)
            object.__setattr__(self, f.name, value)

    def transformers_config(self):
        """The ``transformers.ContinuousBatchingConfig`` (no CUDA graphs, synchronous steps)."""
        _, config_cls, _ = _engine_classes()
        return config_cls(
            num_blocks=self.num_blocks,
            page_size=self.page_size,
            max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=self.max_requests_per_batch,
            use_async_batching=False,
            use_cuda_graph=False,
            allow_block_sharing=False,
        )

    def simulate_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`batchlab.simulate.simulate` for the same engine: the
        continuous policy with chunked prefill, ``max_num_seqs``, ``max_num_batched_tokens``,
        ``kv_blocks`` and ``block_size``."""
        return {
            "max_num_seqs": self.max_requests_per_batch,
            "max_num_batched_tokens": self.max_batch_tokens,
            "chunk_size": self.max_batch_tokens,
            "kv_blocks": self.num_blocks,
            "block_size": self.page_size,
        }

    def as_dict(self) -> dict[str, int]:
        """The settings by name."""
        return dataclasses.asdict(self)


class StepRecorder:
    """Records every step of the continuous-batching engine while active (a context manager):
    wraps the batch processor's ``prepare_next_batch``, ``_generation_step`` and
    ``update_batch`` and restores them on exit. ``steps`` holds one dict per step
    (``t0``/``t_forward``/``t_end`` perf-counter seconds, ``label`` at the time, composition)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.label: Any = None
        self._saved: tuple[Any, ...] | None = None

    def __enter__(self) -> StepRecorder:
        _, _, cbp = _engine_classes()
        _LOCK.acquire()
        prepare, forward, update = cbp.prepare_next_batch, cbp._generation_step, cbp.update_batch
        self._saved = (cbp, prepare, forward, update)
        recorder = self

        def prepare_next_batch(proc):
            t0 = time.perf_counter()
            ok = prepare(proc)
            if ok:
                recorder.steps.append(recorder._composition(proc, t0))
            return ok

        def generation_step(proc, *args, **kwargs):
            t = time.perf_counter()
            out = forward(proc, *args, **kwargs)
            if recorder.steps:
                recorder.steps[-1]["t_forward"] = time.perf_counter() - t
            return out

        def update_batch(proc, *args, **kwargs):
            out = update(proc, *args, **kwargs)
            if recorder.steps:
                recorder.steps[-1]["t_end"] = time.perf_counter()
            return out

        cbp.prepare_next_batch = prepare_next_batch
        cbp._generation_step = generation_step
        cbp.update_batch = update_batch
        return self

    def _composition(self, proc, t0: float) -> dict[str, Any]:
        row: dict[str, Any] = {
            "t0": t0,
            "t_forward": math.nan,
            "t_end": math.nan,
            "label": self.label,
            "prefill_tokens": 0,
            "prefill_seqs": 0,
            "prefill_cached": 0,
            "prefill_pairs": 0.0,
            "decode_seqs": 0,
            "decode_context": 0,
        }
        for fs in proc.inputs_and_outputs.requests_in_batch:
            q = int(fs.query_length)
            past = int(fs.state.position_offset) - q  # the offset has already advanced
            if fs.state.generated_len() > 0:
                row["decode_seqs"] += 1
                row["decode_context"] += past + q
            else:
                row["prefill_tokens"] += q
                row["prefill_cached"] += past
                row["prefill_pairs"] += q * past + q * (q + 1) / 2.0
                row["prefill_seqs"] += int(bool(fs.has_new_token))
        return row

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        cbp, prepare, forward, update = self._saved
        cbp.prepare_next_batch, cbp._generation_step, cbp.update_batch = prepare, forward, update
        self._saved = None
        _LOCK.release()


@dataclass(frozen=True)
class EngineRun:
    """One engine session: its ``steps`` (:data:`STEP_COLUMNS` without the run columns, ms from
    the session's start) and ``requests`` (:data:`ENGINE_REQUEST_COLUMNS`); ``wall_s`` and the
    ``settings`` (engine, threads, device, model); ``clock_start_s``: the ``time.perf_counter``
    reading the session's times count from (to put several sessions on one clock)."""

    steps: pd.DataFrame
    requests: pd.DataFrame
    wall_s: float
    settings: dict[str, Any]
    clock_start_s: float = math.nan


def _prompts(prompt_lens: Sequence[int], vocab: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(n)).tolist() for n in prompt_lens]


def _step_frame(rows: list[dict[str, Any]], t_start: float) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(
            columns=["label", "start_ms", "step_ms", "forward_ms", "gap_ms", *STEP_COMPOSITION]
        )
    t0 = df["t0"].to_numpy(dtype=float)
    end = df["t_end"].to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "label": df["label"],
            "start_ms": (t0 - t_start) * 1e3,
            "step_ms": (end - t0) * 1e3,
            "forward_ms": df["t_forward"].to_numpy(dtype=float) * 1e3,
            "gap_ms": np.append((t0[1:] - end[:-1]) * 1e3, math.nan),
        }
    )
    for column in STEP_COMPOSITION:
        out[column] = df[column].to_numpy()
    out["prefill_pairs"] = out["prefill_pairs"].astype(float)
    return out


def run_engine(
    model: Any,
    requests: pd.DataFrame,
    *,
    config: EngineConfig | None = None,
    threads: int | None = 1,
    seed: int = 0,
    timeout_s: float = 600.0,
    progress: bool = False,
    batches: Sequence[Sequence[int]] | None = None,
    labels: Sequence[Any] | None = None,
    warmup: bool = True,
    idle_s: Sequence[float] | None = None,
) -> EngineRun:
    """Serve ``requests`` (request_id, prompt_len, gen_len, optional arrival_s) on the
    continuous-batching engine and time every step.

    Prompts are random token ids (seeded); each request generates exactly ``gen_len`` tokens
    greedily (no stop at end-of-sequence). With ``arrival_s`` each request is submitted at its
    arrival time (open loop, from the session's start); without it, all at once. ``batches``
    (lists of row positions) instead submits the groups one after the other, each once the
    previous has finished, with ``labels`` recorded on their steps (the measurement's runs).
    ``idle_s`` (with ``batches``: seconds per group) leaves the engine idle that long before
    the group is submitted (a wake-up probe: the group's first step then starts on an idle
    engine, as a request arriving at an idle server does). ``warmup``: first serve one short
    request, untimed (the engine builds its KV cache and warms
    its kernels on its first steps), so the session's clock starts on a ready engine. Stops at
    ``timeout_s`` (InputError). ``threads``: PyTorch threads (recorded).
    """
    gen_cls, _, _ = _engine_classes()
    cfg = config or EngineConfig()
    timeout_s = check_scalar(timeout_s, "timeout_s", float, min_val=0, include_boundaries="neither")
    prompt = requests["prompt_len"].to_numpy(dtype=np.int64)
    gen = requests["gen_len"].to_numpy(dtype=np.int64)
    ids = [str(r) for r in requests["request_id"]]
    arrival = requests["arrival_s"].to_numpy(dtype=float) * 1e3 if "arrival_s" in requests else None
    vocab = int(model.config.vocab_size)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and int((prompt + gen).max()) > int(max_pos):
        raise InputError(
            f"prompt_len + gen_len up to {int((prompt + gen).max())} tokens exceeds the model's "
            f"max_position_embeddings {int(max_pos)}",
            field="prompt_len",
        )
    prompts = _prompts(prompt, vocab, seed)
    groups = [list(g) for g in batches] if batches is not None else [list(range(len(ids)))]
    group_labels = list(labels) if labels is not None else [None] * len(groups)
    idle = [0.0] * len(groups) if idle_s is None else [float(t) for t in idle_s]
    if len(idle) != len(groups) or not all(math.isfinite(t) and t >= 0 for t in idle):
        raise InputError("idle_s needs one finite number of seconds >= 0 per group", field="idle_s")
    generation = gen_cls(
        max_new_tokens=int(gen.max()), do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    results: dict[str, Any] = {}
    submitted: dict[str, float] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="engine", unit="req")
    recorder = StepRecorder()
    with torch_threads(threads) as n_threads, recorder:
        manager = model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=cfg.transformers_config()
        )
        manager.start()
        deadline = time.monotonic() + timeout_s
        try:
            if warmup:  # the engine builds its cache and warms its kernels on the first steps
                recorder.label = _WARMUP
                warm = manager.add_request(
                    _prompts([16], vocab, seed + 1)[0], max_new_tokens=4, record_timestamps=True
                )
                while time.monotonic() < deadline:
                    r = manager.get_result(timeout=0.5)
                    if r is not None and r.request_id == warm and r.is_finished():
                        break
            t_start = time.perf_counter()
            for group, label, pause in zip(groups, group_labels, idle, strict=True):
                if pause:
                    time.sleep(pause)
                recorder.label = label
                order = group
                if arrival is not None:
                    order = sorted(group, key=lambda i: arrival[i])
                pending = list(order)
                waiting = set()
                while pending or waiting:
                    if time.monotonic() > deadline:
                        raise InputError(
                            f"the engine did not finish within {timeout_s:g} s "
                            f"({len(results)} of {len(ids)} requests done)",
                            field="timeout_s",
                        )
                    now_ms = (time.perf_counter() - t_start) * 1e3
                    while pending and (arrival is None or arrival[pending[0]] <= now_ms):
                        i = pending.pop(0)
                        submitted[ids[i]] = time.perf_counter()
                        manager.add_request(
                            prompts[i],
                            request_id=ids[i],
                            max_new_tokens=int(gen[i]),
                            record_timestamps=True,
                        )
                        waiting.add(ids[i])
                    wait = 0.05
                    if pending and arrival is not None:
                        wait = max(0.0, min(wait, (arrival[pending[0]] - now_ms) / 1e3))
                    result = manager.get_result(timeout=wait) if waiting else None
                    if result is None:
                        if waiting and not manager.is_running():
                            raise InputError(
                                "the continuous-batching engine stopped", field="engine"
                            )
                        if not waiting and pending and wait > 0:
                            time.sleep(wait)
                        continue
                    if result.is_finished() and result.request_id in waiting:
                        if result.error:
                            raise InputError(
                                f"the engine failed request {result.request_id}: {result.error}",
                                field="engine",
                            )
                        results[result.request_id] = result
                        waiting.discard(result.request_id)
                        if bar is not None:
                            bar.update()
            wall = time.perf_counter() - t_start
        finally:
            manager.stop(block=True, timeout=10)
            if bar is not None:
                bar.close()
    steps = _step_frame([r for r in recorder.steps if r["label"] is not _WARMUP], t_start)
    rows = []
    for i, rid in enumerate(ids):
        r = results[rid]
        stamps = list(r.timestamps or [])
        arrived = (submitted[rid] - t_start) * 1e3
        first = (stamps[0] - t_start) * 1e3 if stamps else math.nan
        last = (stamps[-1] - t_start) * 1e3 if stamps else math.nan
        rows.append(
            {
                "request_id": requests["request_id"].iloc[i],
                "prompt_len": int(prompt[i]),
                "gen_len": int(gen[i]),
                "arrival_ms": arrived,
                "first_token_ms": first,
                "finish_ms": last,
                "ttft_ms": first - arrived,
                "latency_ms": last - arrived,
                "n_tokens": len(r.generated_tokens),
            }
        )
    settings = {
        "engine": "continuous",
        "engine_config": cfg.as_dict(),
        "num_threads": n_threads,
        "seed": int(seed),
        "model": str(getattr(model.config, "name_or_path", "") or type(model).__name__),
        "device": str(next(model.parameters()).device),
    }
    return EngineRun(
        steps=steps,
        requests=pd.DataFrame(rows, columns=list(ENGINE_REQUEST_COLUMNS)),
        wall_s=float(wall),
        settings=settings,
        clock_start_s=float(t_start),
    )


_WAKE_PROBE_S = 0.1  # idle time (s) before a grid run that probes the engine's wake-up


def served_workload(prompt_lens: Sequence[int], gen_len: int, n: int, *, seed: int) -> pd.DataFrame:
    """The requests of a measurement's served segment (:func:`measure_continuous`): ``n``
    requests of varied lengths spanning the grid, as serving brings them: log-normal prompts
    (median the geometric mean of ``prompt_lens``, log-sigma 0.6, at most ``max(prompt_lens)``
    tokens) and generations (median ``gen_len / 2``, log-sigma 0.5, 2 to ``gen_len`` tokens).
    Columns request_id, prompt_len, gen_len (tokens)."""
    from batchlab.workload import lognormal_workload

    lens = np.asarray(check_batch_sizes(prompt_lens), dtype=float)
    gen_len = check_scalar(gen_len, "gen_len", int, min_val=2)
    n = check_scalar(n, "served_requests", int, min_val=1)
    out = lognormal_workload(
        n,
        seed=seed,
        prompt_median=float(np.exp(np.log(lens).mean())),
        prompt_sigma=0.6,
        gen_median=max(gen_len / 2.0, 2.0),
        gen_sigma=0.5,
        max_prompt_len=int(lens.max()),
        max_gen_len=gen_len,
        id_prefix="served",
    )
    out["gen_len"] = out["gen_len"].clip(lower=2)
    return out.loc[:, ["request_id", "prompt_len", "gen_len"]]


def _capacity_rps(steps: pd.DataFrame, requests: pd.DataFrame, config: EngineConfig) -> float:
    """Saturated throughput (requests/s) of ``requests`` arriving at once on the engine, as the
    step-time model fitted on ``steps`` (a step table) predicts it."""
    from batchlab.measure.fit import fit_step_time
    from batchlab.simulate import simulate

    burst = requests.assign(arrival_s=0.0)
    sim = simulate(burst, "continuous", step_time=fit_step_time(steps), **config.simulate_options())
    return float(sim.summary()["throughput_rps"])


def _stepped_arrivals(requests: pd.DataFrame, rates: Sequence[float], *, seed: int) -> pd.DataFrame:
    """``requests`` with ``arrival_s``: consecutive equal parts (one per rate) arriving as
    Poisson processes at ``rates`` (requests/s), each part after the previous one's last
    arrival."""
    from batchlab.workload import with_arrivals

    parts = np.array_split(np.arange(len(requests)), len(rates))
    out, start = [], 0.0
    for j, (rows, rate) in enumerate(zip(parts, rates, strict=True)):
        if not len(rows):
            continue
        part = with_arrivals(requests.iloc[rows], rate_per_s=rate, seed=seed + j)
        part["arrival_s"] = part["arrival_s"] + start + (1.0 / rate if j else 0.0)
        start = float(part["arrival_s"].iloc[-1])
        out.append(part)
    return pd.concat(out, ignore_index=True)


def _grid_frame(result: EngineRun, gen_len: int, offset_ms: float) -> pd.DataFrame:
    """A grid session's steps in :data:`STEP_COLUMNS` (labels: run, batch size, prompt length,
    warm-up); ``offset_ms`` moves its clock to the measurement's."""
    steps = result.steps
    label = steps["label"]
    out = pd.DataFrame(
        {
            "run": [lab[0] for lab in label],
            "batch_size": [lab[1] for lab in label],
            "prompt_len": [lab[2] for lab in label],
            "gen_len": gen_len,
        }
    )
    out["step"] = out.groupby("run").cumcount()
    out["warmup"] = [bool(lab[3]) for lab in label]
    for column in STEP_COLUMNS[6:]:
        out[column] = steps[column].to_numpy()
    out["start_ms"] = out["start_ms"] + offset_ms
    last = out["run"].ne(out["run"].shift(-1)).to_numpy()
    # the next run's requests were not submitted yet: no gap of the engine's, unless the next
    # run is a wake-up probe (the engine left idle before it), whose gap is that idle time
    probed = np.array([len(lab) > 4 and lab[4] > 0 for lab in label], dtype=bool)
    before_probe = np.append(probed[1:], False)
    out.loc[last & ~before_probe, "gap_ms"] = math.nan
    return out


def _served_frame(result: EngineRun, run: int, offset_ms: float) -> pd.DataFrame:
    """A served segment's steps in :data:`STEP_COLUMNS`: one run, batch_size, prompt_len and
    gen_len 0 (its requests vary), not warm-up."""
    steps = result.steps
    n = len(steps)
    out = pd.DataFrame(
        {
            "run": np.full(n, run, dtype=np.int64),
            "batch_size": 0,
            "prompt_len": 0,
            "gen_len": 0,
            "step": np.arange(n, dtype=np.int64),
            "warmup": False,
        }
    )
    for column in STEP_COLUMNS[6:]:
        out[column] = steps[column].to_numpy()
    out["start_ms"] = out["start_ms"] + offset_ms
    if n:
        out.loc[n - 1, "gap_ms"] = math.nan
    return out


def measure_continuous(
    model: Any = "tiny",
    batch_sizes: Sequence[int] | str = (1, 2, 4, 8),
    prompt_lens: Sequence[int] | str = (32, 128, 384),
    gen_len: int = 32,
    *,
    device: str = "auto",
    warmup: int = 1,
    repeats: int = 2,
    seed: int = 0,
    threads: int | None = 1,
    config: EngineConfig | None = None,
    progress: bool = False,
    served_requests: int = 0,
    served_load: Sequence[float] = (0.3, 0.6, 0.9),
) -> pd.DataFrame:
    """Time the continuous-batching engine step by step over a grid of batch sizes and prompt
    lengths; one row per step (:data:`STEP_COLUMNS`).

    For each prompt length ``P`` and batch size ``B`` (``warmup`` discarded runs, then
    ``repeats``), ``B`` requests of ``P`` random prompt tokens and ``gen_len`` generated tokens
    are submitted together and served to the end: their prompts prefill in chunks of at most
    ``max_batch_tokens`` tokens, then ``gen_len - 1`` decode steps of ``B`` sequences run at
    contexts ``P + 1`` … ``P + gen_len - 1``, so the table covers decode time as a function of
    the batch size *and* the context. ``config`` defaults to :class:`EngineConfig` with
    ``max_requests_per_batch = max(batch_sizes)`` and a KV cache holding the largest run.
    ``df.attrs["settings"]`` holds the settings (threads included) for
    :func:`batchlab.measure.save_measurement`.

    ``served_requests`` > 0 adds what serving does: after each pass over the grid (each
    repeat), a *served segment* of ``served_requests`` requests of varied lengths
    (:func:`served_workload`) arriving as Poisson processes, one equal part at each fraction
    ``served_load`` of the capacity the grid's first timed pass predicts (load stepping up;
    each segment starts one fraction later), submitted by the same open-loop driver as a served
    run (:func:`run_engine` with ``arrival_s``). Its steps are in the table as one run
    each with ``batch_size``, ``prompt_len`` and ``gen_len`` 0, so a fit covers the
    compositions serving produces (any number of sequences, mixed contexts, single prompts of
    any length, prompt chunks beside decodes) and the grid and the served steps alternate in
    time (a machine that changes speed during the measurement affects both alike). With it the
    grid's runs go pass by pass (every ``(P, B)`` once, then again); ``start_ms`` counts from
    the first session's start, and every other timed grid run (alternating from pass to pass,
    so each ``(P, B)`` is timed both ways) starts after the engine sat idle 0.1 s, a
    *wake-up probe*: its first step is a request arriving at an idle engine, which serving has
    and back-to-back runs have not (its gap before is recorded; see
    :func:`batchlab.measure.after_idle_mask` and ``FittedStepTime.wake_ms``).
    """
    sizes = check_batch_sizes(batch_sizes)
    lens = check_batch_sizes(prompt_lens)  # the same rule: sorted unique positive integers
    gen_len = check_scalar(gen_len, "gen_len", int, min_val=2)
    warmup = check_scalar(warmup, "warmup", int, min_val=0)
    repeats = check_scalar(repeats, "repeats", int, min_val=1)
    served_requests = check_scalar(served_requests, "served_requests", int, min_val=0)
    loads = [
        check_scalar(f, "served_load", float, min_val=0, include_boundaries="neither")
        for f in served_load
    ]
    if served_requests and not loads:
        raise InputError("served_load needs at least one fraction of capacity", field="served_load")
    dev = resolve_device(device)
    model_obj = load_model(model, seed=seed).to(dev)
    if config is None:
        tokens = max(sizes) * (max(lens) + gen_len)
        page = 32
        config = EngineConfig(
            num_blocks=int(math.ceil(1.3 * tokens / page)) + 8,
            page_size=page,
            max_batch_tokens=256,
            max_requests_per_batch=max(sizes),
        )
    if max(sizes) > config.max_requests_per_batch:
        raise InputError(
            f"batch size {max(sizes)} exceeds the engine's max_requests_per_batch "
            f"{config.max_requests_per_batch}",
            field="batch_sizes",
        )
    options = {"config": config, "threads": threads, "seed": seed, "progress": progress}
    frames: list[pd.DataFrame] = []
    served_rates: list[float] = []
    run = 0
    clock0: float | None = None
    result: EngineRun | None = None

    def grid_session(passes: Sequence[int], order: str, probe: bool = False) -> EngineRun:
        nonlocal run
        rows, groups, labels, idle = [], [], [], []
        cells = [(p, b, k) for p in lens for b in sizes for k in passes]
        if order == "pass":
            cells = [(p, b, k) for k in passes for p in lens for b in sizes]
        for j, (p, b, k) in enumerate(cells):
            start = len(rows)
            for _ in range(b):
                rows.append({"request_id": f"r{len(rows)}", "prompt_len": p, "gen_len": gen_len})
            groups.append(list(range(start, len(rows))))
            # wake-up probes: every other cell, alternating from pass to pass
            pause = _WAKE_PROBE_S if probe and j and (j + k) % 2 else 0.0
            labels.append((run, b, p, k < warmup, pause))
            idle.append(pause)
            run += 1
        return run_engine(
            model_obj, pd.DataFrame(rows), batches=groups, labels=labels, idle_s=idle, **options
        )

    def offset_ms(res: EngineRun) -> float:
        nonlocal clock0
        if clock0 is None:
            clock0 = res.clock_start_s
        return (res.clock_start_s - clock0) * 1e3

    if not served_requests:
        result = grid_session(range(warmup + repeats), "cell")
        frames.append(_grid_frame(result, gen_len, 0.0))
    else:
        for k in range(warmup + repeats):
            result = grid_session([k], "pass", probe=k >= warmup)
            frames.append(_grid_frame(result, gen_len, offset_ms(result)))
            if k < warmup:
                continue
            served = served_workload(lens, gen_len, served_requests, seed=seed + 1000 + k)
            if not served_rates:  # the grid's capacity, from its first timed pass
                grid = pd.concat(frames, ignore_index=True)
                capacity = _capacity_rps(grid, served, config)
                served_rates = [round(f * capacity, 3) for f in loads]
            shift = (k - warmup) % len(served_rates)
            timed = _stepped_arrivals(
                served, served_rates[shift:] + served_rates[:shift], seed=seed + 2000 + k
            )
            result = run_engine(model_obj, timed, **options)
            frames.append(_served_frame(result, run, offset_ms(result)))
            run += 1
    assert result is not None
    out = pd.concat(frames, ignore_index=True)
    settings = dict(result.settings)
    settings.update(
        {
            "model": "tiny-llama"
            if isinstance(model, str) and model == "tiny"
            else settings["model"],
            "batch_sizes": sizes,
            "prompt_lens": lens,
            "gen_len": gen_len,
            "device": dev,
            "warmup": warmup,
            "repeats": repeats,
            "served_requests": served_requests,
            "served_load": loads if served_requests else [],
            "served_rates_rps": served_rates,
            "dtype": str(next(model_obj.parameters()).dtype).removeprefix("torch."),
            "n_parameters": int(sum(p.numel() for p in model_obj.parameters())),
            "model_spec": None,
        }
    )
    with contextlib.suppress(InputError):
        settings["model_spec"] = dataclasses.asdict(model_spec_of(model_obj))
    out = out.loc[:, list(STEP_COLUMNS)]
    out.attrs["settings"] = settings
    return out
