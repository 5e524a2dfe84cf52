"""The torch harness: models, one timed greedy generation, memory sampling, the measurement.

Torch and transformers are imported on first use (``pip install 'batchlab[measure]'``), so
``import batchlab.measure`` works without them. See :mod:`batchlab.measure` for the columns.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import importlib
import inspect
import math
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab import roofline
from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.measure.table import MAX_REPEATS, MB, check_batch_sizes, frame, oom_row

__all__ = [
    "GenerationRun",
    "greedy_decode",
    "load_model",
    "measure_batch_sizes",
    "measure_cpu_device",
    "model_spec_of",
    "resolve_device",
    "tiny_llama",
    "torch_module",
    "torch_threads",
]

_RSS_INTERVAL_S = 0.0005


def _optional(module: str):
    """Import ``torch`` or ``transformers`` on first use, with the install hint if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "batchlab.measure needs PyTorch and transformers: pip install 'batchlab[measure]'"
        ) from exc


def torch_module():
    """PyTorch, imported on first use (an ImportError with the install hint when missing)."""
    return _optional("torch")


def _torch():
    return torch_module()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set PyTorch's intra-op thread count for a block (``None``: leave it) and restore it;
    yields the count in force."""
    torch = torch_module()
    before = int(torch.get_num_threads())
    if threads is not None:
        torch.set_num_threads(check_scalar(threads, "threads", int, min_val=1))
    try:
        yield int(torch.get_num_threads())
    finally:
        torch.set_num_threads(before)


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
    n_layers, hidden_size, n_heads, n_kv_heads, intermediate_size, vocab_size = (
        check_scalar(value, name, int, min_val=1)
        for name, value in (
            ("n_layers", n_layers),
            ("hidden_size", hidden_size),
            ("n_heads", n_heads),
            ("n_kv_heads", n_kv_heads),
            ("intermediate_size", intermediate_size),
            ("vocab_size", vocab_size),
        )
    )
    max_position_embeddings = check_scalar(
        max_position_embeddings, "max_position_embeddings", int, min_val=1
    )
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


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.24, which
    deprecates ``past_key_values`` with a FutureWarning) or ``past_key_values`` (older)."""
    forward = getattr(model, "forward", model)
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out: Any) -> Any:
    """The KV cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    return cache


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

    A hand-written loop (one forward pass over the prompts, then one per new token with the KV
    cache, passed as ``cache`` where the installed transformers names it so) so the prefill and the decode steps are timed separately; it produces
    the same tokens as ``model.generate(do_sample=False)`` with ``min_new_tokens =
    max_new_tokens = gen_len`` (no stop at end-of-sequence). Runs under
    ``torch.inference_mode``; on CUDA the device is synchronized around each timing.
    """
    torch = _torch()
    if gen_len < 1:
        raise InputError(f"must be at least 1 token, got {gen_len}", field="gen_len")
    dev = device or str(input_ids.device)
    kwargs = _logits_kwargs(model)
    cache_kw = _cache_kwarg(model)
    with torch.inference_mode():
        ids = input_ids.to(dev)
        mask = torch.ones_like(ids)
        ones = torch.ones((ids.shape[0], 1), dtype=mask.dtype, device=dev)
        _sync(dev)
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        cache = _cache_of(out)
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        _sync(dev)
        t1 = time.perf_counter()
        tokens = [token]
        for _ in range(gen_len - 1):
            mask = torch.cat([mask, ones], dim=1)
            out = model(
                input_ids=token,
                attention_mask=mask,
                use_cache=True,
                **{cache_kw: cache},
                **kwargs,
            )
            cache = _cache_of(out)
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


def _median_iqr(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])
    return float(q50), float(q75 - q25)


def _input_ids(batch_size: int, prompt_len: int, vocab_size: int, seed: int):
    torch = _torch()
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, vocab_size, (batch_size, prompt_len), generator=generator)


@dataclass(frozen=True)
class _Runs:
    """How every batch size of a static measurement is run (see :func:`measure_batch_sizes`)."""

    prompt_len: int
    gen_len: int
    device: str
    warmup: int
    repeats: int
    seed: int


def _measure_one(model: Any, batch_size: int, how: _Runs, prime: bool = False) -> dict[str, Any]:
    """All runs at one batch size; returns the table row (raises on out-of-memory).

    ``prime``: one more untimed run first, outside the memory run, to absorb the process's
    one-time initialisation (thread pools, kernel caches) at the first batch size.
    """
    prompt_len, gen_len, device = how.prompt_len, how.gen_len, how.device
    warmup, repeats, seed = how.warmup, how.repeats, how.seed
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
    threads: int | None = 1,
) -> pd.DataFrame:
    """Measure greedy generation at each batch size; one row per size (see MEASUREMENT_COLUMNS).

    This is the *static* engine (``batchlab measure --engine static``): every batch is padded
    to one prompt length and decodes together to the end. ``threads`` sets PyTorch's thread
    count for the measurement (None: leave it); the count in force is recorded in the settings.

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
    sizes = check_batch_sizes(batch_sizes)
    prompt_len = check_scalar(prompt_len, "prompt_len", int, min_val=1)
    gen_len = check_scalar(gen_len, "gen_len", int, min_val=2)
    warmup = check_scalar(warmup, "warmup", int, min_val=0, max_val=MAX_REPEATS)
    repeats = check_scalar(repeats, "repeats", int, min_val=1, max_val=MAX_REPEATS)
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
    with torch_threads(threads) as n_threads:
        how = _Runs(prompt_len, gen_len, dev, warmup, repeats, seed)
        return _measure_sizes(model, model_obj, sizes, how, progress, n_threads)


def _measure_sizes(
    model: Any,
    model_obj: Any,
    sizes: list[int],
    how: _Runs,
    progress: bool,
    n_threads: int,
) -> pd.DataFrame:
    prompt_len, gen_len, dev = how.prompt_len, how.gen_len, how.device
    warmup, repeats, seed = how.warmup, how.repeats, how.seed
    settings = {
        "engine": "static",
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
        "num_threads": int(n_threads),
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
                rows.append(_measure_one(model_obj, batch_size, how, prime=warmup > 0 and not rows))
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                _free_after_oom(dev)
                rows.append(oom_row(batch_size, prompt_len, gen_len, dev, repeats))
                break
    finally:
        if progress:
            iterator.close()
    df = frame(rows)
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
    seconds = check_scalar(
        seconds, "seconds", float, min_val=0, include_boundaries="neither", unit="s"
    )
    n = check_scalar(matrix_size, "matrix_size", int, min_val=1)
    copy_mb = check_scalar(copy_mb, "copy_mb", float, min_val=0, include_boundaries="neither")
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
