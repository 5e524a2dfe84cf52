"""Real batch-size measurement with PyTorch: generation timings, memory, analysis, files.

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

import contextlib
import ctypes
import dataclasses
import datetime as _dt
import gc
import importlib
import inspect
import json
import math
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab import __version__ as _batchlab_version
from batchlab import roofline
from batchlab.errors import InputError
from batchlab.io import atomic_write

__all__ = [
    "MEASUREMENT_COLUMNS",
    "TIMING_COLUMNS",
    "MB",
    "GenerationRun",
    "MeasurementSummary",
    "MeasureRun",
    "tiny_llama",
    "load_model",
    "model_spec_of",
    "resolve_device",
    "greedy_decode",
    "measure_batch_sizes",
    "measure_cpu_device",
    "saturation_batch_size",
    "max_batch_under_latency",
    "pareto_batch_sizes",
    "memory_per_sequence_mb",
    "roofline_table",
    "compare_with_roofline",
    "summarize_measurement",
    "default_measurement_path",
    "save_measurement",
    "load_measurement",
    "parse_batch_sizes",
    "run_measure_cli",
]

MB = 1e6
"""Bytes in one MB as used by every ``*_mb`` column (decimal megabytes)."""

MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "batch_size",
    "prompt_len",
    "gen_len",
    "prefill_ms",
    "prefill_ms_spread",
    "prefill_ms_per_token",
    "decode_ms_per_step",
    "decode_ms_per_step_spread",
    "e2e_ms",
    "e2e_ms_spread",
    "latency_ms_per_request",
    "output_tokens_per_s",
    "output_tokens_per_s_spread",
    "peak_memory_mb",
    "baseline_memory_mb",
    "kv_cache_mb",
    "oom",
    "device",
    "repeats",
)
"""Columns of a measurement table, in order (see the module docstring for definitions)."""

TIMING_COLUMNS: tuple[str, ...] = (
    "prefill_ms",
    "prefill_ms_per_token",
    "decode_ms_per_step",
    "e2e_ms",
    "latency_ms_per_request",
    "output_tokens_per_s",
)
"""The timed figures: they change from run to run (excluded from notebook comparisons)."""

_INT_COLUMNS = ("batch_size", "prompt_len", "gen_len", "repeats")
_FLOAT_COLUMNS = tuple(
    c for c in MEASUREMENT_COLUMNS if c not in _INT_COLUMNS and c not in ("oom", "device")
)
_RSS_INTERVAL_S = 0.0005


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def _optional(module: str):
    """Import ``torch`` or ``transformers`` on first use, with the install hint if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "batchlab.measure needs PyTorch and transformers: pip install 'batchlab[measure]'"
        ) from exc


def _torch():
    return _optional("torch")


def _transformers():
    return _optional("transformers")


def _torch_dtype(dtype: Any):
    torch = _torch()
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(value, torch.dtype):
            return value
    raise InputError(f"unknown torch dtype {dtype!r}", field="dtype")


def tiny_llama(
    *,
    n_layers: int = 4,
    hidden_size: int = 256,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    intermediate_size: int = 688,
    vocab_size: int = 4096,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    dtype: Any = "float32",
):
    """A small Llama-style causal LM with random weights (seeded), built locally, no download.

    Defaults: 4 layers, hidden 256, 4 attention heads (head dim 64), 2 KV heads (grouped-query
    attention), gated MLP of width 688, vocabulary 4,096 tokens, untied embeddings; about 5.0
    million parameters (20 MB in float32). Weight values do not change speed, only shapes do.
    """
    transformers = _transformers()
    for name, value in (
        ("n_layers", n_layers),
        ("hidden_size", hidden_size),
        ("n_heads", n_heads),
        ("n_kv_heads", n_kv_heads),
        ("intermediate_size", intermediate_size),
        ("vocab_size", vocab_size),
        ("max_position_embeddings", max_position_embeddings),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value <= 0:
            raise InputError(f"must be a positive whole number, got {value!r}", field=name)
    if hidden_size % n_heads:
        raise InputError(
            f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}", field="n_heads"
        )
    if n_heads % n_kv_heads:
        raise InputError(
            f"n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}", field="n_kv_heads"
        )
    config = transformers.LlamaConfig(
        num_hidden_layers=int(n_layers),
        hidden_size=int(hidden_size),
        num_attention_heads=int(n_heads),
        num_key_value_heads=int(n_kv_heads),
        intermediate_size=int(intermediate_size),
        vocab_size=int(vocab_size),
        max_position_embeddings=int(max_position_embeddings),
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch_dtype = _torch_dtype(dtype)
    with _seeded_torch(seed):
        model = transformers.LlamaForCausalLM(config)
    model = model.to(torch_dtype).eval()
    model.config.name_or_path = "tiny-llama"
    return model


@contextlib.contextmanager
def _seeded_torch(seed: int) -> Iterator[None]:
    """Seed torch's global generator for a block, restoring its previous state afterwards."""
    torch = _torch()
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def load_model(model: Any = "tiny", *, dtype: Any = None, seed: int = 0):
    """A causal LM from ``"tiny"`` (:func:`tiny_llama`), a local folder, or a model object.

    A folder is loaded with ``transformers.AutoModelForCausalLM.from_pretrained`` (offline:
    ``local_files_only=True``); a model object (anything with a ``config`` that can be called)
    is returned as is. The model is put in evaluation mode. ``dtype`` (e.g. ``"bfloat16"``)
    converts the weights; ``seed`` seeds the tiny model's random weights.
    """
    if isinstance(model, str | os.PathLike):
        text = os.fspath(model)
        if text == "tiny":
            return tiny_llama(seed=seed, dtype="float32" if dtype is None else dtype)
        path = Path(text).expanduser()
        if not path.is_dir():
            raise InputError(
                "not a model: use 'tiny' (a small random Llama, no download) or the path of a "
                "local folder holding a Hugging Face causal LM (config.json and weights)",
                path=text,
                field="model",
            )
        transformers = _transformers()
        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype is not None:
            kwargs["dtype"] = _torch_dtype(dtype)
        try:
            loaded = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load a causal LM: {exc}", path=text, field="model") from exc
        return loaded.eval()
    if callable(model) and hasattr(model, "config"):
        if dtype is not None:
            model = model.to(_torch_dtype(dtype))
        return model.eval() if hasattr(model, "eval") else model
    raise InputError(
        f"expected 'tiny', a local model folder or a transformers model, got {type(model).__name__}",
        field="model",
    )


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", "") or ""
    return str(name) or type(model).__name__


def _config_value(config: Any, names: Sequence[str], what: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise InputError(
        f"the model config has none of {', '.join(names)} (needed for {what})", field=names[0]
    )


def model_spec_of(model: Any, *, name: str | None = None) -> roofline.ModelSpec:
    """The roofline :class:`~batchlab.roofline.ModelSpec` of a transformers model or config.

    Reads layers, hidden size, heads, KV heads (default: the heads), MLP width (default 4 ×
    hidden) and vocabulary from the config (Llama names, or GPT-2 names ``n_layer``/``n_embd``/
    ``n_head``/``n_inner``); bytes per weight and per KV element from the parameters' dtype
    (the config's dtype for a bare config, 2 bytes when unknown). A ``ModelSpec`` or a roofline
    model name is passed through :func:`batchlab.roofline.get_model`. The roofline model is
    Llama-shaped (gated MLP); other architectures are approximated by that shape.
    """
    if isinstance(model, roofline.ModelSpec | str):
        try:
            return roofline.get_model(model)
        except ValueError as exc:
            raise InputError(str(exc), field="model") from exc
    config = getattr(model, "config", model)
    n_layers = _config_value(config, ("num_hidden_layers", "n_layer", "num_layers"), "layers")
    hidden = _config_value(config, ("hidden_size", "n_embd", "d_model"), "hidden size")
    n_heads = _config_value(config, ("num_attention_heads", "n_head"), "attention heads")
    kv = getattr(config, "num_key_value_heads", None)
    n_kv_heads = n_heads if kv is None else int(kv)
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    intermediate = 4 * hidden if inter is None else int(inter)
    vocab = _config_value(config, ("vocab_size",), "vocabulary")
    head_dim = getattr(config, "head_dim", None)
    if head_dim is not None and int(head_dim) * n_heads != hidden:
        warnings.warn(
            f"the model's head_dim {int(head_dim)} is not hidden_size / heads = "
            f"{hidden // n_heads}; the roofline spec assumes the latter, so its KV-cache and "
            "attention figures are approximate",
            stacklevel=2,
        )
    element = _element_bytes(model, config)
    if name is not None:
        spec_name = name
    else:
        spec_name = str(getattr(config, "name_or_path", "") or "") or _model_name(model)
    kwargs: dict[str, Any] = {
        "name": str(spec_name),
        "n_layers": n_layers,
        "hidden_size": hidden,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "bytes_per_weight": element,
        "bytes_per_kv": element,
    }
    fields = getattr(roofline.ModelSpec, "__dataclass_fields__", {})
    tied = getattr(config, "tie_word_embeddings", None)
    if tied is not None:
        for tie_field in ("tie_word_embeddings", "tied_embeddings", "tie_embeddings"):
            if tie_field in fields:
                kwargs[tie_field] = bool(tied)
    return roofline.ModelSpec(**kwargs)


def _element_bytes(model: Any, config: Any) -> float:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for p in parameters():
            return float(p.element_size())
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if dtype is not None:
        with contextlib.suppress(InputError, ImportError):
            torch = _torch()
            return float(torch.empty((), dtype=_torch_dtype(str(dtype))).element_size())
    return 2.0


# --------------------------------------------------------------------------------------------
# one generation run
# --------------------------------------------------------------------------------------------


def resolve_device(device: Any = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``; ``"cpu"``,
    ``"cuda"`` and ``"cuda:N"`` are checked and returned as strings."""
    torch = _torch()
    text = str(device)
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", text):
        if not torch.cuda.is_available():
            raise InputError("CUDA is not available on this machine", field="device")
        return text
    raise InputError(
        f"unsupported device {text!r}: use 'auto', 'cpu' or 'cuda[:N]'", field="device"
    )


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _sync(device: str) -> None:
    if _is_cuda(device):
        _torch().cuda.synchronize(device)


@dataclass(frozen=True)
class GenerationRun:
    """One greedy generation: the generated token ids and its timings.

    ``tokens`` is a ``(batch, gen_len)`` int64 tensor on the CPU; ``prefill_ms`` the prompt
    forward pass (with the first token's argmax); ``decode_ms_per_step`` the mean time of the
    ``gen_len - 1`` decode steps (NaN when ``gen_len == 1``); ``kv_cache_bytes`` the bytes held
    by the KV-cache tensors at the end.
    """

    tokens: Any
    prefill_ms: float
    decode_ms_per_step: float
    kv_cache_bytes: int

    @property
    def e2e_ms(self) -> float:
        """Prefill plus all decode steps, ms."""
        steps = int(self.tokens.shape[1]) - 1
        return self.prefill_ms + (steps * self.decode_ms_per_step if steps else 0.0)


def _logits_kwargs(model: Any) -> dict[str, int]:
    """Ask the model for the last position's logits only when it supports it (as ``generate``
    does): the full ``batch × prompt × vocab`` logits would dominate the prefill's memory."""
    forward = getattr(model, "forward", model)
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return {}
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def _tensor_bytes(obj: Any) -> int:
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return int(obj.numel() * obj.element_size())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(o) for o in obj)
    return 0


def _cache_nbytes(cache: Any) -> int:
    """Bytes of the key and value tensors of a transformers KV cache (any of its layouts)."""
    if cache is None:
        return 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return sum(
            _tensor_bytes(getattr(layer, "keys", None))
            + _tensor_bytes(getattr(layer, "values", None))
            for layer in layers
        )
    if hasattr(cache, "key_cache"):
        return _tensor_bytes(list(cache.key_cache)) + _tensor_bytes(list(cache.value_cache))
    return _tensor_bytes(cache)


def greedy_decode(
    model: Any, input_ids: Any, gen_len: int, *, device: str | None = None
) -> GenerationRun:
    """Prefill ``input_ids`` then decode ``gen_len`` tokens greedily with the KV cache, timed.

    A hand-written loop (one forward pass over the prompts, then one per new token with
    ``past_key_values``) so the prefill and the decode steps are timed separately; it produces
    the same tokens as ``model.generate(do_sample=False)`` with ``min_new_tokens =
    max_new_tokens = gen_len`` (no stop at end-of-sequence). Runs under
    ``torch.inference_mode``; on CUDA the device is synchronized around each timing.
    """
    torch = _torch()
    if gen_len < 1:
        raise InputError(f"must be at least 1 token, got {gen_len}", field="gen_len")
    dev = device or str(input_ids.device)
    kwargs = _logits_kwargs(model)
    with torch.inference_mode():
        ids = input_ids.to(dev)
        mask = torch.ones_like(ids)
        ones = torch.ones((ids.shape[0], 1), dtype=mask.dtype, device=dev)
        _sync(dev)
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        cache = out.past_key_values
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        _sync(dev)
        t1 = time.perf_counter()
        tokens = [token]
        for _ in range(gen_len - 1):
            mask = torch.cat([mask, ones], dim=1)
            out = model(
                input_ids=token,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                **kwargs,
            )
            cache = out.past_key_values
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            tokens.append(token)
        _sync(dev)
        t2 = time.perf_counter()
        kv_bytes = _cache_nbytes(cache)
        generated = torch.cat(tokens, dim=1).cpu()
    steps = gen_len - 1
    return GenerationRun(
        tokens=generated,
        prefill_ms=(t1 - t0) * 1e3,
        decode_ms_per_step=(t2 - t1) * 1e3 / steps if steps else math.nan,
        kv_cache_bytes=kv_bytes,
    )


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def _rss_reader() -> Callable[[], int] | None:
    """A function returning the process's current resident set size in bytes, or None."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm() -> int:
            with open(statm, "rb") as fh:
                return int(fh.read().split()[1]) * page

        return read_statm
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process()
    return lambda: int(process.memory_info().rss)


def _release_free_memory() -> None:
    """Collect young garbage and hand freed heap pages back to the system (glibc
    ``malloc_trim``), so the RSS before a run does not include memory the previous run freed but
    the heap kept. (Generations 0 and 1 only: a full collection costs ~0.2 s with transformers
    loaded, and a run's tensors are freed by reference counting.)"""
    gc.collect(1)
    if platform.system() == "Linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


class _PeakMemory:
    """Peak memory of a block above the memory in use when it starts, in bytes."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.baseline = math.nan
        self.peak = math.nan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max = 0
        self._read = None if _is_cuda(device) else _rss_reader()

    def __enter__(self) -> _PeakMemory:
        if _is_cuda(self.device):
            torch = _torch()
            gc.collect(1)
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            self.baseline = float(torch.cuda.memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._read is not None:
            _release_free_memory()
            base = self._read()
            self.baseline = float(base)
            self._max = base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        read = self._read
        assert read is not None
        while not self._stop.wait(_RSS_INTERVAL_S):
            self._max = max(self._max, read())

    def __exit__(self, *exc: object) -> None:
        if _is_cuda(self.device):
            torch = _torch()
            torch.cuda.synchronize(self.device)
            self.peak = float(torch.cuda.max_memory_allocated(self.device)) - self.baseline
        elif self._thread is not None and self._read is not None:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._read())
            self.peak = float(self._max) - self.baseline


# --------------------------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    torch = _torch()
    oom_types = tuple(
        t
        for t in (
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if isinstance(t, type)
    )
    if oom_types and isinstance(exc, oom_types):
        return True
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False


def _free_after_oom(device: str) -> None:
    gc.collect()
    if _is_cuda(device):
        _torch().cuda.empty_cache()


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"must be a whole number >= {minimum}, got {value!r}", field=name)
    return int(value)


def _check_batch_sizes(batch_sizes: Sequence[int]) -> list[int]:
    if isinstance(batch_sizes, str):
        return parse_batch_sizes(batch_sizes)
    sizes = [_check_positive_int(b, "batch_sizes") for b in batch_sizes]
    if not sizes:
        raise InputError("no batch sizes given", field="batch_sizes")
    return sorted(set(sizes))


def _median_iqr(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])
    return float(q50), float(q75 - q25)


def _input_ids(batch_size: int, prompt_len: int, vocab_size: int, seed: int):
    torch = _torch()
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, vocab_size, (batch_size, prompt_len), generator=generator)


def _measure_one(
    model: Any,
    batch_size: int,
    prompt_len: int,
    gen_len: int,
    device: str,
    warmup: int,
    repeats: int,
    seed: int,
    prime: bool = False,
) -> dict[str, Any]:
    """All runs at one batch size; returns the table row (raises on out-of-memory).

    ``prime``: one more untimed run first, outside the memory run, to absorb the process's
    one-time initialisation (thread pools, kernel caches) at the first batch size.
    """
    vocab = int(model.config.vocab_size)
    ids = _input_ids(batch_size, prompt_len, vocab, seed).to(device)
    if prime:
        greedy_decode(model, ids, gen_len, device=device)
    # The memory run is untimed: the first warmup run, or one more run when warmup == 0.
    with _PeakMemory(device) as memory:
        first = greedy_decode(model, ids, gen_len, device=device)
    for _ in range(max(warmup - 1, 0)):
        greedy_decode(model, ids, gen_len, device=device)
    runs = [greedy_decode(model, ids, gen_len, device=device) for _ in range(repeats)]
    prefill = [r.prefill_ms for r in runs]
    decode = [r.decode_ms_per_step for r in runs]
    e2e = [r.e2e_ms for r in runs]
    tps = [batch_size * gen_len / (ms / 1e3) for ms in e2e]
    prefill_med, prefill_spread = _median_iqr(prefill)
    decode_med, decode_spread = _median_iqr(decode)
    e2e_med, e2e_spread = _median_iqr(e2e)
    tps_med, tps_spread = _median_iqr(tps)
    return {
        "batch_size": batch_size,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "prefill_ms": prefill_med,
        "prefill_ms_spread": prefill_spread,
        "prefill_ms_per_token": prefill_med / (batch_size * prompt_len),
        "decode_ms_per_step": decode_med,
        "decode_ms_per_step_spread": decode_spread,
        "e2e_ms": e2e_med,
        "e2e_ms_spread": e2e_spread,
        "latency_ms_per_request": e2e_med,
        "output_tokens_per_s": tps_med,
        "output_tokens_per_s_spread": tps_spread,
        "peak_memory_mb": memory.peak / MB,
        "baseline_memory_mb": memory.baseline / MB,
        "kv_cache_mb": first.kv_cache_bytes / MB,
        "oom": False,
        "device": device,
        "repeats": repeats,
    }


def _oom_row(batch_size: int, prompt_len: int, gen_len: int, device: str, repeats: int) -> dict:
    row: dict[str, Any] = dict.fromkeys(_FLOAT_COLUMNS, math.nan)
    row.update(
        batch_size=batch_size,
        prompt_len=prompt_len,
        gen_len=gen_len,
        oom=True,
        device=device,
        repeats=repeats,
    )
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(MEASUREMENT_COLUMNS))
    for column in _INT_COLUMNS:
        df[column] = df[column].astype(np.int64)
    for column in _FLOAT_COLUMNS:
        df[column] = df[column].astype(np.float64)
    df["oom"] = df["oom"].astype(bool)
    df["device"] = df["device"].astype(object)
    return df


def _device_label(device: str) -> str:
    if _is_cuda(device):
        torch = _torch()
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({_cpu_name()}, {_torch().get_num_threads()} threads)"


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def measure_batch_sizes(
    model: Any,
    batch_sizes: Sequence[int] | str,
    prompt_len: int,
    gen_len: int,
    device: str = "auto",
    warmup: int = 1,
    repeats: int = 3,
    *,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Measure greedy generation at each batch size; one row per size (see MEASUREMENT_COLUMNS).

    ``model``: ``"tiny"``, a local folder or a transformers causal LM (moved to ``device``).
    Each batch size gets ``warmup`` discarded runs (the first of them, or an extra run when
    ``warmup == 0``, is the untimed memory run; with ``warmup > 0`` the first batch size gets
    one more, before its memory run, for one-time initialisation) then ``repeats`` timed runs
    of prefill (``prompt_len`` tokens per sequence, seeded random ids) and ``gen_len``
    generated tokens (``gen_len >= 2``: at least one decode step); timings are medians with
    the interquartile range in ``*_spread``. Batch sizes run in
    increasing order; at the first out-of-memory a row with ``oom=True`` is recorded and the
    larger sizes are skipped. ``df.attrs["settings"]`` holds the settings for
    :func:`save_measurement`. ``progress`` shows a tqdm bar over batch sizes.
    """
    sizes = _check_batch_sizes(batch_sizes)
    prompt_len = _check_positive_int(prompt_len, "prompt_len")
    gen_len = _check_positive_int(gen_len, "gen_len", minimum=2)
    warmup = _check_positive_int(warmup, "warmup", minimum=0)
    repeats = _check_positive_int(repeats, "repeats")
    model_obj = load_model(model, seed=seed)
    dev = resolve_device(device)
    max_pos = getattr(model_obj.config, "max_position_embeddings", None)
    if max_pos is not None and prompt_len + gen_len > int(max_pos):
        raise InputError(
            f"prompt_len + gen_len = {prompt_len + gen_len} tokens exceeds the model's "
            f"max_position_embeddings {int(max_pos)}",
            field="prompt_len",
        )
    model_obj = model_obj.to(dev)
    torch = _torch()
    settings = {
        "model": "tiny-llama"
        if isinstance(model, str) and model == "tiny"
        else _model_name(model_obj),
        "batch_sizes": sizes,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "device": dev,
        "device_name": _device_label(dev),
        "warmup": warmup,
        "repeats": repeats,
        "seed": int(seed),
        "dtype": str(next(model_obj.parameters()).dtype).removeprefix("torch."),
        "num_threads": int(torch.get_num_threads()),
        "n_parameters": int(sum(p.numel() for p in model_obj.parameters())),
        "model_spec": None,
    }
    with contextlib.suppress(InputError):
        settings["model_spec"] = dataclasses.asdict(model_spec_of(model_obj))
    iterator: Any = sizes
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(sizes, desc="batch sizes", unit="size")
    rows: list[dict[str, Any]] = []
    try:
        for batch_size in iterator:
            if progress:
                iterator.set_postfix(batch_size=batch_size)
            try:
                rows.append(
                    _measure_one(
                        model_obj,
                        batch_size,
                        prompt_len,
                        gen_len,
                        dev,
                        warmup,
                        repeats,
                        seed,
                        prime=warmup > 0 and not rows,
                    )
                )
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                _free_after_oom(dev)
                rows.append(_oom_row(batch_size, prompt_len, gen_len, dev, repeats))
                break
    finally:
        if progress:
            iterator.close()
    df = _frame(rows)
    df.attrs["settings"] = settings
    return df


def measure_cpu_device(
    seconds: float = 1.0, *, matrix_size: int = 1024, copy_mb: float = 128.0, dtype: Any = "float32"
) -> roofline.DeviceSpec:
    """A roofline DeviceSpec for this CPU from two quick probes (measured, not a data sheet).

    ``peak_flops``: the best of repeated ``matrix_size``² matrix products in ``dtype`` with
    torch (2·n³ FLOPs each) over half of ``seconds``; ``memory_bandwidth``: the best of
    repeated copies of a ``copy_mb`` MB tensor (each copy reads and writes it: 2 × size bytes)
    over the other half; ``memory_bytes``: the machine's physical memory;
    ``step_overhead_ms``: 0 (the framework's per-step overhead shows in the measured / predicted
    ratio). Uses torch's default number of threads, like the measurement.
    """
    torch = _torch()
    if not (isinstance(seconds, int | float) and seconds > 0):
        raise InputError(f"must be a positive number of seconds, got {seconds!r}", field="seconds")
    n = _check_positive_int(matrix_size, "matrix_size")
    if not copy_mb > 0:
        raise InputError(f"must be positive, got {copy_mb!r}", field="copy_mb")
    torch_dtype = _torch_dtype(dtype)
    generator = torch.Generator().manual_seed(0)
    a = torch.rand((n, n), generator=generator).to(torch_dtype)
    b = torch.rand((n, n), generator=generator).to(torch_dtype)
    c = torch.empty((n, n), dtype=torch_dtype)
    budget = float(seconds) / 2
    best = math.inf
    torch.matmul(a, b, out=c)
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start >= budget:
            break
    peak_flops = 2.0 * n**3 / best
    del a, b, c
    elements = max(1, int(copy_mb * MB) // 4)
    src = torch.ones(elements, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start >= budget:
            break
    bandwidth = 2.0 * elements * 4 / best
    del src, dst
    memory_bytes = float(_physical_memory_bytes())
    return roofline.DeviceSpec(
        name=f"cpu ({_cpu_name()}, {torch.get_num_threads()} threads, measured)",
        peak_flops=float(peak_flops),
        memory_bandwidth=float(bandwidth),
        memory_bytes=memory_bytes,
        step_overhead_ms=0.0,
    )


def _physical_memory_bytes() -> int:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    try:
        import psutil
    except ImportError:  # pragma: no cover - exotic platforms
        raise InputError("cannot read the machine's memory size", field="memory_bytes") from None
    return int(psutil.virtual_memory().total)


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a measurement DataFrame, got {type(df).__name__}")
    for column in columns:
        if column not in df.columns:
            raise InputError("missing column in the measurement table", field=column)


def _valid_rows(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows that did not run out of memory and have finite values in ``columns``, by size."""
    _require_columns(df, ["batch_size", *columns])
    keep = np.ones(len(df), dtype=bool)
    if "oom" in df.columns:
        keep &= ~df["oom"].to_numpy(dtype=bool)
    for column in columns:
        keep &= np.isfinite(pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float))
    return df.loc[keep].sort_values("batch_size", kind="stable")


def saturation_batch_size(
    df: pd.DataFrame, tolerance: float = 0.05, *, column: str = "output_tokens_per_s"
) -> int:
    """The smallest batch size whose throughput is within ``tolerance`` of the best measured.

    That is the smallest ``b`` with ``throughput(b) >= (1 - tolerance) · max throughput`` over
    the rows that did not run out of memory: past it, larger batches add latency and memory for
    at most ``tolerance`` more tokens/s.
    """
    if not 0 <= tolerance < 1:
        raise InputError(f"must be in [0, 1), got {tolerance!r}", field="tolerance")
    rows = _valid_rows(df, [column])
    if rows.empty:
        raise InputError("no successful measurement rows", field=column)
    values = rows[column].to_numpy(dtype=float)
    ok = values >= (1.0 - tolerance) * values.max()
    return int(rows["batch_size"].to_numpy()[np.flatnonzero(ok)[0]])


def max_batch_under_latency(
    df: pd.DataFrame, limit_ms: float, column: str = "latency_ms_per_request"
) -> int | None:
    """The largest batch size whose ``column`` (ms) is at most ``limit_ms``; None if none is.

    Use ``column="decode_ms_per_step"`` for a time-per-output-token limit, ``"prefill_ms"``
    for a time-to-first-token limit, the default for the whole request's latency.
    """
    if not (isinstance(limit_ms, int | float | np.number) and limit_ms > 0):
        raise InputError(f"must be a positive number of ms, got {limit_ms!r}", field="limit_ms")
    rows = _valid_rows(df, [column])
    ok = rows[column].to_numpy(dtype=float) <= float(limit_ms)
    if not ok.any():
        return None
    return int(rows["batch_size"].to_numpy()[ok].max())


def pareto_batch_sizes(
    df: pd.DataFrame,
    *,
    throughput_column: str = "output_tokens_per_s",
    latency_column: str = "latency_ms_per_request",
) -> list[int]:
    """Batch sizes not dominated by another: none has throughput at least as high *and* latency
    at least as low with one of them strictly better. Increasing order."""
    rows = _valid_rows(df, [throughput_column, latency_column])
    thr = rows[throughput_column].to_numpy(dtype=float)
    lat = rows[latency_column].to_numpy(dtype=float)
    # dominated[i, j]: row j dominates row i
    no_worse = (thr[None, :] >= thr[:, None]) & (lat[None, :] <= lat[:, None])
    better = (thr[None, :] > thr[:, None]) | (lat[None, :] < lat[:, None])
    dominated = (no_worse & better).any(axis=1)
    return [int(b) for b in rows["batch_size"].to_numpy()[~dominated]]


def memory_per_sequence_mb(df: pd.DataFrame, column: str = "peak_memory_mb") -> float:
    """Memory per extra sequence, MB: the least-squares slope of ``column`` over batch size.

    Uses the rows that did not run out of memory; needs at least two distinct batch sizes.
    ``column="kv_cache_mb"`` gives the KV cache's share alone.
    """
    rows = _valid_rows(df, [column])
    x = rows["batch_size"].to_numpy(dtype=float)
    y = rows[column].to_numpy(dtype=float)
    if np.unique(x).size < 2:
        raise InputError("needs successful rows at two or more batch sizes", field=column)
    dx = x - x.mean()
    return float(np.dot(dx, y - y.mean()) / np.dot(dx, dx))


def _settings_len(df: pd.DataFrame, name: str, value: int | None) -> int:
    if value is not None:
        return _check_positive_int(value, name)
    if name in df.columns:
        values = pd.unique(df[name])
        if len(values) == 1:
            return _check_positive_int(int(values[0]), name)
        raise InputError(f"the table has several values of {name}; pass it explicitly", field=name)
    raise InputError(f"the table has no {name} column; pass it explicitly", field=name)


def roofline_table(
    model: Any,
    device: Any,
    batch_sizes: Sequence[int],
    prompt_len: int,
    gen_len: int,
) -> pd.DataFrame:
    """The roofline model's prediction in the measurement table's columns, one row per size.

    Prefill: one step with ``batch × prompt_len`` prompt tokens (each sequence attends to its
    own prompt); decode: the mean over the ``gen_len - 1`` steps of a step where every sequence
    holds context ``prompt_len + t`` (t = 1 … gen_len − 1); KV cache: ``kv_cache_bytes_per_token
    · (prompt_len + gen_len − 1)`` per sequence (the positions the measured cache holds);
    ``peak_memory_mb`` is the KV cache alone, ``baseline_memory_mb`` the weights. ``oom`` marks
    sizes whose KV cache does not fit beside the weights in the whole device memory.
    """
    spec = model_spec_of(model)
    try:
        dev = roofline.get_gpu(device)
    except ValueError as exc:
        raise InputError(str(exc), field="device") from exc
    sizes = _check_batch_sizes(batch_sizes)
    prompt_len = _check_positive_int(prompt_len, "prompt_len")
    gen_len = _check_positive_int(gen_len, "gen_len", minimum=2)
    positions = prompt_len + gen_len - 1
    kv_per_seq = roofline.kv_cache_bytes_per_token(spec) * positions
    fits = roofline.max_batch_size(spec, dev, positions, memory_fraction=1.0)
    step_model = roofline.RooflineStepTime(spec, dev)
    rows = []
    for b in sizes:
        prefill = _prefill_ms(spec, dev, b, prompt_len)
        # decode step t = 1 … gen_len - 1 feeds one token per sequence at context prompt_len + t
        first_context = np.full(b, prompt_len + 1, dtype=np.float64)
        decode = float(np.mean(step_model.decode_run_ms(first_context, gen_len - 1)))
        e2e = prefill + (gen_len - 1) * decode
        rows.append(
            {
                "batch_size": b,
                "prompt_len": prompt_len,
                "gen_len": gen_len,
                "prefill_ms": prefill,
                "prefill_ms_spread": 0.0,
                "prefill_ms_per_token": prefill / (b * prompt_len),
                "decode_ms_per_step": decode,
                "decode_ms_per_step_spread": 0.0,
                "e2e_ms": e2e,
                "e2e_ms_spread": 0.0,
                "latency_ms_per_request": e2e,
                "output_tokens_per_s": b * gen_len / (e2e / 1e3),
                "output_tokens_per_s_spread": 0.0,
                "peak_memory_mb": b * kv_per_seq / MB,
                "baseline_memory_mb": spec.weight_bytes / MB,
                "kv_cache_mb": b * kv_per_seq / MB,
                "oom": b > fits,
                "device": dev.name,
                "repeats": 0,
            }
        )
    return _frame(rows)


def _prefill_ms(
    spec: roofline.ModelSpec, dev: roofline.DeviceSpec, batch_size: int, prompt_len: int
) -> float:
    """Roofline time of one prefill step over ``batch_size`` prompts of ``prompt_len`` tokens.

    The weights are read once for the whole step; the arithmetic and the KV writes scale with
    the number of sequences (attention is within each sequence, so the FLOPs are ``batch ×
    prefill_flops(prompt_len)``, not those of one sequence of ``batch × prompt_len`` tokens).
    """
    flops = batch_size * roofline.prefill_flops(spec, prompt_len)
    one = roofline.prefill_bytes(spec, prompt_len)
    per_sequence = max(one - spec.weight_bytes, 0.0)
    moved = spec.weight_bytes + batch_size * per_sequence
    return max(flops / dev.peak_flops, moved / dev.memory_bandwidth) * 1e3 + dev.step_overhead_ms


def compare_with_roofline(
    df: pd.DataFrame,
    model: Any,
    device: Any,
    prompt_len: int | None = None,
    gen_len: int | None = None,
) -> pd.DataFrame:
    """Measured figures next to the roofline prediction for the same model, device and lengths.

    ``model``: a ModelSpec, a roofline model name or a transformers model (see
    :func:`model_spec_of`); ``device``: a DeviceSpec (e.g. from :func:`measure_cpu_device`) or a
    GPU name. Lengths default to the table's. One row per successful batch size with
    ``measured_X``, ``predicted_X`` and ``ratio_X = measured / predicted`` for X in prefill_ms,
    decode_ms_per_step, e2e_ms, output_tokens_per_s and kv_cache_mb.
    """
    _require_columns(
        df, ["batch_size", "prefill_ms", "decode_ms_per_step", "e2e_ms", "output_tokens_per_s"]
    )
    p = _settings_len(df, "prompt_len", prompt_len)
    g = _settings_len(df, "gen_len", gen_len)
    rows = _valid_rows(df, ["prefill_ms", "decode_ms_per_step", "e2e_ms", "output_tokens_per_s"])
    if rows.empty:
        raise InputError("no successful measurement rows to compare", field="batch_size")
    predicted = roofline_table(model, device, rows["batch_size"].tolist(), p, g)
    out = pd.DataFrame({"batch_size": rows["batch_size"].to_numpy(dtype=np.int64)})
    quantities = [
        "prefill_ms",
        "decode_ms_per_step",
        "e2e_ms",
        "output_tokens_per_s",
        "kv_cache_mb",
    ]
    for q in quantities:
        measured = (
            rows[q].to_numpy(dtype=float) if q in rows.columns else np.full(len(rows), math.nan)
        )
        pred = predicted[q].to_numpy(dtype=float)
        out[f"measured_{q}"] = measured
        out[f"predicted_{q}"] = pred
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"ratio_{q}"] = measured / pred
    return out


@dataclass(frozen=True)
class MeasurementSummary:
    """The analysis of one measurement table.

    ``saturation_batch_size``: smallest size within ``tolerance`` of the best throughput;
    ``best_throughput_batch_size`` / ``best_output_tokens_per_s``: the fastest row;
    ``pareto_batch_sizes``: throughput-up / latency-down Pareto set;
    ``memory_per_sequence_mb`` / ``kv_cache_per_sequence_mb``: least-squares slopes (MB per
    extra sequence; NaN with fewer than two sizes); ``max_batch_under_latency``: largest size
    with ``latency_column <= latency_limit_ms`` (None without a limit or when none meets it);
    ``oom_batch_size``: the size that ran out of memory, or None.
    """

    saturation_batch_size: int
    best_throughput_batch_size: int
    best_output_tokens_per_s: float
    pareto_batch_sizes: tuple[int, ...]
    memory_per_sequence_mb: float
    kv_cache_per_sequence_mb: float
    tolerance: float
    latency_limit_ms: float | None
    latency_column: str
    max_batch_under_latency: int | None
    oom_batch_size: int | None

    def to_frame(self) -> pd.DataFrame:
        """A two-column table (``quantity``, ``value``) for display."""
        return pd.DataFrame(
            {
                "quantity": list(self.__dataclass_fields__),
                "value": [getattr(self, f) for f in self.__dataclass_fields__],
            }
        )


def summarize_measurement(
    df: pd.DataFrame,
    *,
    tolerance: float = 0.05,
    latency_limit_ms: float | None = None,
    latency_column: str = "latency_ms_per_request",
) -> MeasurementSummary:
    """Saturation, best throughput, Pareto set, memory slopes and latency-limited size of a table."""
    rows = _valid_rows(df, ["output_tokens_per_s"])
    if rows.empty:
        raise InputError("no successful measurement rows", field="output_tokens_per_s")
    best = int(np.argmax(rows["output_tokens_per_s"].to_numpy(dtype=float)))

    def slope(column: str) -> float:
        if column not in df.columns:
            return math.nan
        try:
            return memory_per_sequence_mb(df, column)
        except InputError:
            return math.nan

    oom = None
    if "oom" in df.columns and df["oom"].to_numpy(dtype=bool).any():
        oom = int(df.loc[df["oom"].to_numpy(dtype=bool), "batch_size"].min())
    return MeasurementSummary(
        saturation_batch_size=saturation_batch_size(df, tolerance),
        best_throughput_batch_size=int(rows["batch_size"].to_numpy()[best]),
        best_output_tokens_per_s=float(rows["output_tokens_per_s"].to_numpy()[best]),
        pareto_batch_sizes=tuple(pareto_batch_sizes(df, latency_column=latency_column)),
        memory_per_sequence_mb=slope("peak_memory_mb"),
        kv_cache_per_sequence_mb=slope("kv_cache_mb"),
        tolerance=float(tolerance),
        latency_limit_ms=None if latency_limit_ms is None else float(latency_limit_ms),
        latency_column=latency_column,
        max_batch_under_latency=(
            None
            if latency_limit_ms is None
            else max_batch_under_latency(df, latency_limit_ms, column=latency_column)
        ),
        oom_batch_size=oom,
    )


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def default_measurement_path(
    settings: Mapping[str, Any], folder: str | os.PathLike[str] = "data/measurements"
) -> Path:
    """``<folder>/<model>-<device>-p<prompt_len>-g<gen_len>.csv`` from a measurement's settings."""
    model = Path(str(settings.get("model", "model"))).name
    device = str(settings.get("device", "device"))
    return Path(folder) / (
        f"{_slug(model)}-{_slug(device)}-p{settings.get('prompt_len', 'x')}-g{settings.get('gen_len', 'x')}.csv"
    )


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "batchlab": _batchlab_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    for name in ("torch", "transformers"):
        try:
            module = __import__(name)
            versions[name] = str(module.__version__)
        except ImportError:
            versions[name] = None
    return versions


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_measurement(
    df: pd.DataFrame,
    path: str | os.PathLike[str] | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write a measurement table as CSV plus a sidecar JSON (same name, ``.json``); atomic.

    The JSON holds ``settings`` (default: ``df.attrs["settings"]`` set by
    :func:`measure_batch_sizes`), the library versions (batchlab, torch, transformers, numpy,
    pandas, Python), the platform and the UTC date. ``path`` defaults to
    :func:`default_measurement_path` under ``data/measurements/``. Returns the CSV path.
    """
    _require_columns(df, MEASUREMENT_COLUMNS)
    settings = dict(settings if settings is not None else df.attrs.get("settings", {}))
    target = Path(path) if path is not None else default_measurement_path(settings)
    if target.suffix.lower() != ".csv":
        raise InputError("a measurement is saved as .csv", path=target)
    table = df.loc[:, list(MEASUREMENT_COLUMNS)]
    metadata = {
        "format": "batchlab measurement 1",
        "columns": list(MEASUREMENT_COLUMNS),
        "settings": settings,
        "versions": _versions(),
        "platform": platform.platform(),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    with atomic_write(target, "w") as fh:
        table.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")
    with atomic_write(_sidecar(target), "w") as fh:
        json.dump(metadata, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    return target


def load_measurement(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a measurement CSV written by :func:`save_measurement`, validated.

    Checks every column of MEASUREMENT_COLUMNS is present, batch sizes are unique positive
    whole numbers, ``oom`` is true/false and the figures are numbers (NaN only in out-of-memory
    rows); raises :class:`InputError` naming the file, line and field otherwise. The sidecar
    JSON's content, when present, is in ``df.attrs["metadata"]`` and its settings in
    ``df.attrs["settings"]``. Rows come sorted by batch size.
    """
    source = Path(path)
    if not source.exists():
        raise InputError("no such measurement file", path=source)
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {exc}", path=source) from exc
    for column in MEASUREMENT_COLUMNS:
        if column not in raw.columns:
            raise InputError("missing column", path=source, field=column)
    if raw.empty:
        raise InputError("no rows", path=source)
    out = pd.DataFrame(index=raw.index)
    oom_text = raw["oom"].str.strip().str.lower()
    bad = ~oom_text.isin(["true", "false", "1", "0"])
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"expected True or False, got {raw['oom'].iloc[pos]!r}",
            path=source,
            line=pos + 2,
            field="oom",
        )
    oom = oom_text.isin(["true", "1"]).to_numpy()
    for column in _INT_COLUMNS:
        numeric = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float)
        bad = (
            ~np.isfinite(numeric)
            | (numeric != np.floor(numeric))
            | (numeric < (0 if column == "repeats" else 1))
        )
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"expected a positive whole number, got {raw[column].iloc[pos]!r}",
                path=source,
                line=pos + 2,
                field=column,
            )
        out[column] = numeric.astype(np.int64)
    for column in _FLOAT_COLUMNS:
        text = raw[column].str.strip()
        numeric = pd.to_numeric(text.where(text != "", "nan"), errors="coerce").to_numpy(
            dtype=float
        )
        not_number = np.isnan(numeric) & ~text.str.lower().isin(["", "nan"]).to_numpy()
        missing = ~np.isfinite(numeric) & ~oom
        bad = not_number | missing
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"expected a finite number, got {raw[column].iloc[pos]!r}",
                path=source,
                line=pos + 2,
                field=column,
            )
        out[column] = numeric
    out["oom"] = oom
    out["device"] = raw["device"].astype(object)
    dup = out["batch_size"].duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            f"duplicate batch size {int(out['batch_size'].iloc[pos])}",
            path=source,
            line=pos + 2,
            field="batch_size",
        )
    df = (
        out.loc[:, list(MEASUREMENT_COLUMNS)]
        .sort_values("batch_size", kind="stable")
        .reset_index(drop=True)
    )
    sidecar = _sidecar(source)
    if sidecar.exists():
        try:
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"bad metadata JSON: {exc}", path=sidecar) from exc
        df.attrs["metadata"] = metadata
        df.attrs["settings"] = dict(metadata.get("settings", {}))
    return df


# --------------------------------------------------------------------------------------------
# command line entry point
# --------------------------------------------------------------------------------------------


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,2,4,8"`` → ``[1, 2, 4, 8]`` (sorted, unique); InputError naming the bad item."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise InputError("no batch sizes given (e.g. 1,2,4,8)", field="batch-sizes")
    sizes = []
    for item in items:
        if not re.fullmatch(r"\d+", item) or int(item) < 1:
            raise InputError(f"not a positive whole number: {item!r}", field="batch-sizes")
        sizes.append(int(item))
    return sorted(set(sizes))


@dataclass(frozen=True)
class MeasureRun:
    """The outcome of :func:`run_measure_cli`: the table, where it was saved and its analysis."""

    table: pd.DataFrame = field(repr=False)
    path: Path | None
    summary: MeasurementSummary

    def report(self) -> str:
        """Lines for the terminal: the table's main columns and the analysis."""
        columns = [
            "batch_size",
            "prefill_ms",
            "decode_ms_per_step",
            "e2e_ms",
            "output_tokens_per_s",
            "peak_memory_mb",
            "kv_cache_mb",
            "oom",
        ]
        s = self.summary
        lines = [
            self.table.loc[:, columns].to_string(index=False, float_format=lambda v: f"{v:,.2f}")
        ]
        lines.append(
            f"saturation batch size (within {s.tolerance:.0%} of the best throughput): "
            f"{s.saturation_batch_size}"
        )
        lines.append(
            f"best throughput: {s.best_output_tokens_per_s:,.1f} output tokens/s at batch size "
            f"{s.best_throughput_batch_size}"
        )
        lines.append(f"Pareto-optimal batch sizes: {', '.join(map(str, s.pareto_batch_sizes))}")
        lines.append(
            f"memory per extra sequence: {s.memory_per_sequence_mb:,.3f} MB peak, "
            f"{s.kv_cache_per_sequence_mb:,.3f} MB KV cache"
        )
        if s.latency_limit_ms is not None:
            found = "none" if s.max_batch_under_latency is None else str(s.max_batch_under_latency)
            lines.append(
                f"largest batch size with {s.latency_column} <= {s.latency_limit_ms:g} ms: {found}"
            )
        if s.oom_batch_size is not None:
            lines.append(f"out of memory at batch size {s.oom_batch_size}")
        if self.path is not None:
            lines.append(f"saved {self.path} (+ {self.path.with_suffix('.json').name})")
        return "\n".join(lines)


def run_measure_cli(
    model: Any = "tiny",
    batch_sizes: Sequence[int] | str = "1,2,4,8,16",
    prompt_len: int = 128,
    gen_len: int = 32,
    *,
    device: str = "auto",
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    save: bool = True,
    latency_limit_ms: float | None = None,
    latency_column: str = "latency_ms_per_request",
    tolerance: float = 0.05,
    progress: bool = True,
) -> MeasureRun:
    """What ``batchlab measure`` does: measure with a progress bar, save, analyze.

    ``batch_sizes`` may be a string such as ``"1,2,4,8"``. Saves to ``output`` (default
    :func:`default_measurement_path` under ``data/measurements/``) unless ``save`` is False.
    Print ``run.report()`` for the terminal.
    """
    sizes = parse_batch_sizes(batch_sizes) if isinstance(batch_sizes, str) else batch_sizes
    table = measure_batch_sizes(
        model, sizes, prompt_len, gen_len, device, warmup, repeats, seed=seed, progress=progress
    )
    path = save_measurement(table, output) if save else None
    summary = summarize_measurement(
        table, tolerance=tolerance, latency_limit_ms=latency_limit_ms, latency_column=latency_column
    )
    return MeasureRun(table=table, path=path, summary=summary)
