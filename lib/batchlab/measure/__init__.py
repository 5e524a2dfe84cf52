"""Real batch-size measurement with PyTorch: generation timings, memory, analysis, files.

The package: :mod:`~batchlab.measure.harness` (torch: models, timed generation, memory, the
static-engine measurement), :mod:`~batchlab.measure.engine` (the continuous-batching engine
timed step by step), :mod:`~batchlab.measure.fit` (step-time models fitted on measurements),
:mod:`~batchlab.measure.analysis` (pandas: saturation, latency limits, Pareto sets, memory
slopes, the roofline's prediction), :mod:`~batchlab.measure.files` (CSV + JSON) and
:mod:`~batchlab.measure.table` (the columns). ``batchlab measure`` is in :mod:`batchlab.cli`.

Two engines: ``static`` (:func:`measure_batch_sizes`, below: padded batches decoding together)
and ``continuous`` (:func:`measure_continuous`: transformers' continuous-batching engine, one
row per step; see :mod:`batchlab.measure.engine`).

The measurement runs a causal language model on the device you have, at a series of batch
sizes, and records for each one how long the prefill takes, how long one decode step takes,
the end-to-end time, the output throughput and the memory used. Every sequence of a batch has
the same prompt length (random token ids drawn with a seed, attention mask all ones) and decodes
exactly ``gen_len`` tokens greedily with the KV cache, so all requests of a batch finish
together and the per-request latency is the batch's end-to-end time.

Weights' values do not change speed (the same matrix shapes cost the same arithmetic and the
same bytes whatever numbers they hold), so :func:`tiny_llama` builds a small Llama-style model
with random weights and no download, and the whole measurement runs anywhere.

Definitions (the table's columns, units in their names):

- ``prefill_ms``: one forward pass over the batch's prompts (``batch_size × prompt_len`` tokens)
  up to the first generated token (the time to first token of every request).
- ``decode_ms_per_step``: the ``gen_len - 1`` decode steps that follow, divided by their number.
  The first generated token comes from the prefill's logits, so a run has ``gen_len - 1`` decode
  steps and the KV cache ends holding ``prompt_len + gen_len - 1`` positions per sequence.
- ``e2e_ms``: prefill plus all decode steps of a run (per run, ``prefill + (gen_len - 1) ·
  decode step``); ``latency_ms_per_request`` equals it (all requests of a batch finish
  together); ``output_tokens_per_s = batch_size · gen_len / e2e`` per run.
- Each timed figure is the median over ``repeats`` runs after ``warmup`` discarded runs; the
  ``*_spread`` columns are the interquartile range (75th − 25th percentile, linear
  interpolation) over the same runs.
- ``peak_memory_mb``: the peak memory of one run above the memory in use just before it, in MB
  (10^6 bytes). On CUDA it is ``torch.cuda.max_memory_allocated`` (reset before each batch size)
  minus the allocation before the run. On CPU the process's peak resident set size (RSS) cannot
  be reset, so it is *sampled*: a background thread reads the RSS every ``0.5`` ms during a
  dedicated untimed run (freed heap memory is first returned to the system with ``gc.collect``
  and glibc's ``malloc_trim``), and the baseline RSS read just before the run is subtracted.
  ``baseline_memory_mb`` is that baseline (weights plus runtime).
- ``kv_cache_mb``: the bytes of the KV-cache tensors at the end of the run, summed from the
  cache itself, to compare with ``roofline.kv_cache_bytes_per_token(spec) · positions``.
- ``oom``: the run at that batch size ran out of memory; its figures are NaN and the larger
  batch sizes are not run.
"""

from __future__ import annotations

from batchlab.measure.analysis import (
    MeasurementSummary,
    batch_size_choice_table,
    compare_with_roofline,
    kv_mb_per_sequence,
    max_batch_under_latency,
    memory_per_sequence_mb,
    memory_vs_batch_table,
    named_tables,
    pareto_batch_sizes,
    roofline_table,
    saturation_batch_size,
    summarize_measurement,
    valid_rows,
)
from batchlab.measure.engine import (
    ENGINE_REQUEST_COLUMNS,
    STEP_COLUMNS,
    STEP_COMPOSITION,
    EngineConfig,
    EngineRun,
    StepRecorder,
    measure_continuous,
    run_engine,
    served_workload,
)
from batchlab.measure.fidelity import (
    FIDELITY_METRICS,
    fidelity,
    served_summary,
    step_agreement,
)
from batchlab.measure.files import (
    default_measurement_path,
    is_step_table,
    load_measurement,
    measurement_dir,
    save_measurement,
)
from batchlab.measure.fit import (
    after_idle_mask,
    decode_table,
    fit_step_time,
    served_segment_mask,
    step_features,
    steps_of_measurement,
)
from batchlab.measure.harness import (
    GenerationRun,
    greedy_decode,
    load_model,
    measure_batch_sizes,
    measure_cpu_device,
    model_spec_of,
    resolve_device,
    tiny_llama,
    torch_module,
    torch_threads,
)
from batchlab.measure.table import (
    MB,
    MEASUREMENT_COLUMNS,
    TIMING_COLUMNS,
    check_batch_sizes,
    oom_row,
    parse_batch_sizes,
)

__all__ = [
    "ENGINE_REQUEST_COLUMNS",
    "MB",
    "MEASUREMENT_COLUMNS",
    "STEP_COLUMNS",
    "STEP_COMPOSITION",
    "TIMING_COLUMNS",
    "FIDELITY_METRICS",
    "EngineConfig",
    "EngineRun",
    "GenerationRun",
    "StepRecorder",
    "MeasurementSummary",
    "after_idle_mask",
    "batch_size_choice_table",
    "check_batch_sizes",
    "compare_with_roofline",
    "decode_table",
    "default_measurement_path",
    "fidelity",
    "fit_step_time",
    "greedy_decode",
    "is_step_table",
    "kv_mb_per_sequence",
    "load_measurement",
    "load_model",
    "max_batch_under_latency",
    "measure_batch_sizes",
    "measure_continuous",
    "measure_cpu_device",
    "measurement_dir",
    "memory_per_sequence_mb",
    "memory_vs_batch_table",
    "model_spec_of",
    "named_tables",
    "oom_row",
    "pareto_batch_sizes",
    "parse_batch_sizes",
    "resolve_device",
    "roofline_table",
    "run_engine",
    "save_measurement",
    "saturation_batch_size",
    "served_segment_mask",
    "served_summary",
    "served_workload",
    "step_agreement",
    "step_features",
    "steps_of_measurement",
    "summarize_measurement",
    "tiny_llama",
    "torch_module",
    "torch_threads",
    "valid_rows",
]
