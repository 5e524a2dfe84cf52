"""Load tests of a live OpenAI-compatible server, in the same table as the simulator's sweep.

:func:`loadtest` sends the requests of a request table (``prompt_len``, ``gen_len`` in tokens)
to a running server (vLLM, SGLang, TGI, llama.cpp, ``transformers serve`` ...) at increasing
load, streams every response, and summarizes each load level in the schema of
:func:`batchlab.simulate.load_sweep` (:data:`LOAD_SWEEP_COLUMNS`, then the columns only a
measurement has, :data:`MEASURED_COLUMNS`), so ``pd.concat([simulated, measured])`` draws with
one :func:`batchlab.plots.load_sweep_figure` (``by="policy"``: the measured rows carry the
policy ``label``, default ``"measured"``).

Load levels (each level sends the table's requests from its first row on, in table order, or in
``arrival_s`` order for trace arrivals):

* ``rates`` (requests/s), open loop: request ``i`` is sent at its arrival time, whatever the
  responses do. ``arrivals="poisson"``: the times of :func:`batchlab.simulate.draw_arrivals`
  with ``seed`` (gamma gaps with CV ``burstiness`` when it is not 1), the same draw as
  ``simulate(rate=..., seed=...)``; ``"trace"``: the table's ``arrival_s`` stretched or squeezed
  so that its mean rate is the level (the trace's burstiness is kept).
* ``concurrencies`` (clients), closed loop: that many clients, each sending the next request as
  soon as its previous response ended.

A level stops sending after ``duration_s`` seconds, ``max_requests`` requests, or the end of the
table, whichever comes first; every request gives up after ``timeout_s`` seconds (counted as a
timeout), so a level lasts at most ``duration_s + timeout_s``. Server errors (HTTP status ≥ 400,
an error event in the stream), dropped streams (the connection closed before the response
finished) and timeouts are counted per level, never raised.

Each request asks for exactly ``gen_len`` tokens: ``max_tokens = gen_len`` and, where the server
accepts them, ``ignore_eos`` and ``min_tokens`` (vLLM and SGLang honour them; a server that
refuses unknown fields, such as ``transformers serve``, gets the request without them, and the
level's ``n_short`` counts responses that came back shorter). The prompt is a sequence of common
English words sized to ``prompt_len`` tokens: two warm-up requests of different lengths read the
server's ``usage.prompt_tokens`` to learn its tokens per word and the fixed overhead (BOS, chat
template) and the word count is set from them; the records keep the server's own counts.

Per-request records (:data:`RECORD_COLUMNS`; times in ms from the start of the level, on the
client's monotonic clock): ``arrival_ms`` (scheduled send time; the send itself for a closed
loop), ``send_ms``, ``first_token_ms`` (the first streamed event carrying text),
``last_token_ms``, ``finish_ms`` (the response ended), ``token_ms`` (the arrival of every event
that carried text: one per token on servers that stream token by token, so ``tokens_streamed``
vs ``usage_completion_tokens`` shows whether every token was observable), tokens in and out,
status and error. As in the simulator: ``ttft_ms = first_token_ms − arrival_ms``, ``tpot_ms =
(last_token_ms − first_token_ms) / (tokens_out − 1)``, ``latency_ms = finish_ms − arrival_ms``;
ITL (inter-token latency) is every gap between consecutive text events of a request.

Per-level aggregates (the :data:`LOAD_SWEEP_COLUMNS` the client can see; the server-side ones,
queueing, batch sizes, KV cache, preemptions, are NaN): ``n_requests`` sent, ``duration_s`` from
the level's first arrival to its last response end, ``throughput_rps = n_completed /
duration_s``, ``output_tokens_per_s`` (tokens of completed responses / ``duration_s``), TTFT,
TPOT, latency and ITL mean and nearest-rank p50/p95/p99 (:func:`batchlab.stats.nearest_rank`)
over completed requests, ``littles_L`` (the time-average number of requests in flight) and
``littles_lambda_W`` (completed rate × mean latency), and the counts of errors, timeouts, dropped
streams, short responses and token-count mismatches. :meth:`LoadTestResult.knees` finds the knee
with :func:`batchlab.simulate.find_knee`, the finder of the simulated sweep.

Replaying into the simulator: :meth:`LoadTestResult.replay_requests` gives a level's requests as
sent (``arrival_s``: the actual send times), ready for ``simulate(...)``'s trace mode (open
loop) or ``simulate(..., concurrency=C)`` (closed loop).

Ctrl-C stops the run: the levels finished so far are returned (``interrupted=True``) and, with
``output``, were already written (after every level, atomically). :func:`read_guidellm_report`
reads a GuideLLM report JSON into the same records and level table.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import importlib
import json
import math
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab import __version__ as _batchlab_version
from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.io import all_or_nothing, atomic_path
from batchlab.simulate import draw_arrivals, find_knee
from batchlab.simulate.results import offered_rps, overload_message
from batchlab.stats import nearest_rank
from batchlab.workload import MAX_BURSTINESS, MIN_BURSTINESS, validate_requests

#: bounds of a load test: the highest rate (requests/s) and concurrency, the most levels, the
#: longest sending time per level and the longest wait for one response (seconds).
MAX_RATE = 1e6
MAX_CONCURRENCY = 100_000
MAX_LEVELS = 100
MAX_DURATION_S = 86_400.0
MAX_TIMEOUT_S = 3_600.0

__all__ = [
    "ARRIVALS",
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_LEVELS",
    "MAX_RATE",
    "MAX_TIMEOUT_S",
    "LEVEL_COLUMNS",
    "LOAD_SWEEP_COLUMNS",
    "MEASURED_COLUMNS",
    "PROMPT_WORDS",
    "RECORD_COLUMNS",
    "STATUSES",
    "LoadTestResult",
    "api_base",
    "load_loadtest",
    "loadtest",
    "prompt_text",
    "read_guidellm_report",
    "summarize_levels",
]

ARRIVALS = ("poisson", "trace")
STATUSES = ("ok", "error", "timeout", "dropped")
"""Outcome of a request: completed, refused or failed, gave up after ``timeout_s``, stream cut."""

_STATS = ("mean", "p50", "p95", "p99")
_SERVER_SIDE = (
    *(f"queue_{s}_ms" for s in _STATS),
    "busy_fraction",
    "mean_batch_size",
    "kv_util_mean",
    "kv_util_peak",
    "batch_efficiency",
    "mean_queue_len",
    "max_queue_len",
    "preemptions",
    "n_batches",
    "n_steps",
)  # what only the server sees: NaN in a measurement
LOAD_SWEEP_COLUMNS: tuple[str, ...] = (
    "mode",
    "level",
    "policy",
    "n_requests",
    "duration_s",
    "throughput_rps",
    "offered_rps",
    "output_tokens_per_s",
    *(f"{base}_{s}_ms" for base in ("ttft", "tpot", "latency") for s in _STATS),
    *_SERVER_SIDE,
    "littles_L",
    "littles_lambda_W",
    "overloaded",
)
"""The columns of :func:`batchlab.simulate.load_sweep`, in its order (a test keeps them equal)."""

MEASURED_COLUMNS: tuple[str, ...] = (
    *(f"itl_{s}_ms" for s in _STATS),
    "n_completed",
    "n_errors",
    "n_timeouts",
    "n_dropped",
    "n_short",
    "n_token_mismatch",
    "input_tokens_per_s",
    "send_lag_p99_ms",
)
"""Columns only a measurement has: inter-token latency (ms), outcome counts, input tokens/s, and
the p99 of ``send_ms − arrival_ms`` (how late the client sent; near 0 unless it is overloaded)."""

LEVEL_COLUMNS: tuple[str, ...] = LOAD_SWEEP_COLUMNS + MEASURED_COLUMNS

RECORD_COLUMNS: tuple[str, ...] = (
    "mode",
    "level",
    "request_id",
    "prompt_len",
    "gen_len",
    "prompt_words",
    "arrival_ms",
    "send_ms",
    "first_token_ms",
    "last_token_ms",
    "finish_ms",
    "ttft_ms",
    "tpot_ms",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "tokens_streamed",
    "usage_completion_tokens",
    "finish_reason",
    "status",
    "http_status",
    "error",
    "token_ms",
)
"""Columns of :attr:`LoadTestResult.requests`, one row per request sent (see module docstring)."""

PROMPT_WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make",
    "like", "him",
)  # fmt: skip
"""Prompt words: common English words, one token each (with the space before them) in the
vocabularies of the common open models; the tiny server's vocabulary holds them too."""

_CALIBRATION_WORDS = (8, 24)  # word counts of the two warm-up requests
_PROBE_INDEX = 1 << 40  # prompt index of the warm-up requests (no table row has it)
_MAX_ERROR_CHARS = 200
_ERROR_BODY_BYTES = 4096


def _httpx():
    try:
        return importlib.import_module("httpx")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "batchlab.loadtest needs httpx: pip install 'batchlab[measure,serve]'"
        ) from exc


# --------------------------------------------------------------------------------------------
# checks of the arguments


def api_base(url: str) -> str:
    """The API root of a server URL: ``http://host:port`` or ``.../v1`` → ``http://host:port/v1``
    (no trailing slash). Only ``http://`` and ``https://`` URLs are accepted."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(
            f"must be a server URL such as http://127.0.0.1:8000, got {url!r}", field="url"
        )
    text = url.strip().rstrip("/")
    if not text.startswith(("http://", "https://")) or len(text.split("://", 1)[1]) == 0:
        raise InputError(
            f"must start with http:// or https:// (e.g. http://127.0.0.1:8000), got {url!r}",
            field="url",
        )
    for suffix in ("/chat/completions", "/completions", "/models"):
        if text.endswith("/v1" + suffix):
            text = text[: -len(suffix)]
    return text if text.endswith("/v1") else text + "/v1"


def prompt_text(n_words: int, *, seed: int, index: int) -> str:
    """A prompt of ``n_words`` :data:`PROMPT_WORDS`, drawn with ``(seed, index)``: every request
    gets its own words (so a server's prefix cache does not make prompts free), reproducibly."""
    n = check_scalar(n_words, "n_words", int, min_val=1)
    i = check_scalar(index, "index", int, min_val=0)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, i])
    picks = rng.integers(0, len(PROMPT_WORDS), n)
    return " ".join(PROMPT_WORDS[i] for i in picks.tolist())


# --------------------------------------------------------------------------------------------
# one streamed request


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _error_detail(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return _one_line(text)
    if isinstance(obj, dict):
        for key in ("detail", "error", "message"):
            if key in obj:
                inner = obj[key]
                if isinstance(inner, dict) and "message" in inner:
                    inner = inner["message"]
                return _one_line(inner if isinstance(inner, str) else json.dumps(inner))
    return _one_line(text)


def _event_parts(obj: Any, chat: bool) -> tuple[str, str | None, Mapping | None, str | None]:
    """(text, finish_reason, usage, error) of one decoded stream event."""
    if not isinstance(obj, dict):
        return "", None, None, "malformed event (not a JSON object)"
    if obj.get("error") is not None:
        err = obj["error"]
        if isinstance(err, dict):
            err = err.get("message", json.dumps(err))
        return "", None, None, _one_line(f"server error in the stream: {err}")
    text_parts: list[str] = []
    finish = None
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if chat:
            delta = choice.get("delta") or {}
            piece = delta.get("content") or delta.get("reasoning_content") or ""
        else:
            piece = choice.get("text") or ""
        if isinstance(piece, str):
            text_parts.append(piece)
        if choice.get("finish_reason") is not None:
            finish = str(choice["finish_reason"])
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
    return "".join(text_parts), finish, usage, None


def _usage_int(usage: Mapping | None, key: str) -> float:
    if usage is None:
        return math.nan
    value = usage.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


async def _stream_request(
    client: Any,
    url: str,
    body: Mapping[str, Any],
    *,
    chat: bool,
    timeout_s: float,
    t0: float,
    max_events: int,
) -> dict[str, Any]:
    """Send one streaming request and time it; never raises (but for cancellation)."""
    httpx = _httpx()
    rec: dict[str, Any] = {
        "send_ms": math.nan,
        "first_token_ms": math.nan,
        "last_token_ms": math.nan,
        "finish_ms": math.nan,
        "tokens_streamed": 0,
        "usage_prompt_tokens": math.nan,
        "usage_completion_tokens": math.nan,
        "finish_reason": None,
        "status": "ok",
        "http_status": 0,
        "error": "",
        "token_ms": [],
    }
    times: list[float] = rec["token_ms"]
    usage: Mapping | None = None
    finished = done = False
    started = False  # a 200 response with its stream opened
    rec["send_ms"] = (time.perf_counter() - t0) * 1e3
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, json=dict(body)) as resp:
                rec["http_status"] = int(resp.status_code)
                if resp.status_code >= 400:
                    raw = b""
                    async for part in resp.aiter_bytes():
                        raw += part
                        if len(raw) >= _ERROR_BODY_BYTES:
                            break
                    rec["status"] = "error"
                    rec["error"] = (
                        f"HTTP {resp.status_code}: {_error_detail(raw[:_ERROR_BODY_BYTES])}"
                    )
                else:
                    started = True
                    events = 0
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            done = True
                            break
                        events += 1
                        if events > max_events:
                            rec["status"] = "error"
                            rec["error"] = f"more than {max_events} stream events; stopped reading"
                            break
                        now = (time.perf_counter() - t0) * 1e3
                        try:
                            obj = json.loads(payload)
                        except ValueError:
                            rec["status"] = "error"
                            rec["error"] = _one_line(f"malformed event: {payload}")
                            break
                        text, finish, u, err = _event_parts(obj, chat)
                        if err is not None:
                            rec["status"] = "error"
                            rec["error"] = err
                            break
                        if text:
                            times.append(now)
                        if u is not None:
                            usage = u
                        if finish is not None:
                            rec["finish_reason"] = finish
                            finished = True
                    if rec["status"] == "ok" and not (finished or done):
                        rec["status"] = "dropped"
                        rec["error"] = "the stream ended before the response finished"
    except TimeoutError:
        rec["status"] = "timeout"
        rec["error"] = f"no complete response within {timeout_s:g} s"
    except httpx.TimeoutException as exc:
        rec["status"] = "timeout"
        rec["error"] = _one_line(f"{type(exc).__name__}: {exc}")
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamError) as exc:
        rec["status"] = "dropped" if started else "error"
        rec["error"] = _one_line(f"{type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        rec["status"] = "error"
        rec["error"] = _one_line(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a request never crashes the run
        rec["status"] = "error"
        rec["error"] = _one_line(f"{type(exc).__name__}: {exc}")
    rec["finish_ms"] = (time.perf_counter() - t0) * 1e3
    if times:
        rec["first_token_ms"] = times[0]
        rec["last_token_ms"] = times[-1]
    rec["tokens_streamed"] = len(times)
    rec["usage_prompt_tokens"] = _usage_int(usage, "prompt_tokens")
    rec["usage_completion_tokens"] = _usage_int(usage, "completion_tokens")
    if rec["status"] == "ok" and not times:
        rec["status"] = "error"
        rec["error"] = "the response carried no text"
    return rec


# --------------------------------------------------------------------------------------------
# the request bodies and the server check


@dataclass(frozen=True)
class _Api:
    base: str
    model: str
    chat: bool
    extra: Mapping[str, Any]  # ignore_eos / min_tokens where accepted

    @property
    def url(self) -> str:
        return f"{self.base}/chat/completions" if self.chat else f"{self.base}/completions"

    def body(self, prompt: str, gen_len: int) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "max_tokens": int(gen_len), "stream": True}
        out["stream_options"] = {"include_usage": True}
        if self.chat:
            out["messages"] = [{"role": "user", "content": prompt}]
        else:
            out["prompt"] = prompt
        for key, value in self.extra.items():
            out[key] = int(gen_len) if value == "gen_len" else value
        return out


@dataclass(frozen=True)
class _Calibration:
    tokens_per_word: float
    overhead_tokens: float
    measured: bool

    def words_for(self, prompt_len: np.ndarray) -> np.ndarray:
        words = np.rint((prompt_len - self.overhead_tokens) / self.tokens_per_word)
        return np.maximum(words, 1).astype(np.int64)


async def _check_server(
    client: Any,
    base: str,
    model: str,
    *,
    chat: bool,
    ignore_eos: bool | None,
    timeout_s: float,
    seed: int,
) -> tuple[_Api, _Calibration, dict[str, Any]]:
    """List the models, then two warm-up requests: learn which length fields the server takes
    and its tokens per prompt word. Raises InputError when the server cannot be used."""
    httpx = _httpx()
    info: dict[str, Any] = {
        "url": base,
        "model": model,
        "endpoint": "chat" if chat else "completions",
    }
    try:
        resp = await asyncio.wait_for(client.get(f"{base}/models"), timeout_s)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise InputError(
            f"cannot reach the server: {_one_line(f'{type(exc).__name__}: {exc}')}", field="url"
        ) from exc
    served: list[str] = []
    if resp.status_code == 200:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            served = [str(m.get("id")) for m in resp.json().get("data", []) if isinstance(m, dict)]
    info["served_models"] = served
    if served and model not in served:
        warnings.warn(
            f"the server lists the models {served}, not {model!r}; trying it anyway",
            stacklevel=3,
        )
    extras: list[dict[str, Any]] = []
    if ignore_eos is None:
        extras = [{"ignore_eos": True, "min_tokens": "gen_len"}, {}]
    elif ignore_eos:
        extras = [{"ignore_eos": True, "min_tokens": "gen_len"}]
    else:
        extras = [{}]
    t0 = time.perf_counter()
    api = None
    first: dict[str, Any] = {}
    refusals = []
    for extra in extras:
        api = _Api(base, model, chat, extra)
        n = _CALIBRATION_WORDS[0]
        body = api.body(prompt_text(n, seed=seed, index=_PROBE_INDEX), 2)
        first = await _stream_request(
            client, api.url, body, chat=chat, timeout_s=timeout_s, t0=t0, max_events=64
        )
        if first["status"] == "ok":
            break
        refusals.append(first["error"])
        if first["http_status"] not in (400, 422):
            break
    if first.get("status") != "ok" or api is None:
        raise InputError(
            f"the server did not answer a test request to {api.url if api else base}: "
            + "; ".join(refusals),
            field="url",
        )
    info["ignore_eos"] = bool(api.extra)
    if refusals:
        info["length_fields_refused"] = refusals[0]
    n2 = _CALIBRATION_WORDS[1]
    second = await _stream_request(
        client,
        api.url,
        api.body(prompt_text(n2, seed=seed, index=_PROBE_INDEX + 1), 2),
        chat=chat,
        timeout_s=timeout_s,
        t0=t0,
        max_events=64,
    )
    p1, p2 = first["usage_prompt_tokens"], second["usage_prompt_tokens"]
    n1 = _CALIBRATION_WORDS[0]
    if second["status"] == "ok" and math.isfinite(p1) and math.isfinite(p2) and p2 > p1:
        per_word = (p2 - p1) / (n2 - n1)
        cal = _Calibration(per_word, max(0.0, p1 - per_word * n1), True)
    else:
        cal = _Calibration(1.0, 0.0, False)
    info["tokens_per_word"] = cal.tokens_per_word
    info["prompt_overhead_tokens"] = cal.overhead_tokens
    info["calibrated"] = cal.measured
    info["usage_in_stream"] = bool(math.isfinite(first["usage_completion_tokens"]))
    return api, cal, info


# --------------------------------------------------------------------------------------------
# levels


@dataclass(frozen=True)
class _Level:
    mode: str  # "rate" or "closed"
    level: float
    rows: np.ndarray  # positions in the request table, in send order
    arrival_s: np.ndarray | None  # open loop: send times (s from the level start)

    @property
    def name(self) -> str:
        if self.mode == "rate":
            return f"rate {self.level:g} req/s"
        return f"concurrency {int(self.level)}"


def _plan_levels(
    df: pd.DataFrame,
    rates: Sequence[float],
    concurrencies: Sequence[int],
    *,
    arrivals: str,
    burstiness: float,
    seed: int,
    duration_s: float,
    max_requests: int | None,
) -> list[_Level]:
    n = len(df) if max_requests is None else min(len(df), max_requests)
    rows = np.arange(n, dtype=np.int64)
    levels: list[_Level] = []
    if arrivals == "trace" and rates:
        a = df["arrival_s"].to_numpy(dtype=np.float64)[:n]
        span = float(a[-1] - a[0]) if n > 1 else 0.0
        if n > 1 and span <= 0:
            raise InputError("the trace's arrival times are all equal: no rate", field="arrival_s")
        native = (n - 1) / span if n > 1 else 1.0
    for r in rates:
        if arrivals == "poisson":
            at = draw_arrivals(n, r, seed=seed, burstiness=burstiness)
        else:
            at = (a - a[0]) * (native / r)
        keep = at < duration_s
        levels.append(_Level("rate", float(r), rows[keep], at[keep]))
    for c in concurrencies:
        levels.append(_Level("closed", float(c), rows, None))
    return levels


async def _run_level(
    client: Any,
    api: _Api,
    lv: _Level,
    df: pd.DataFrame,
    words: np.ndarray,
    *,
    seed: int,
    duration_s: float,
    timeout_s: float,
    progress: bool,
) -> list[dict[str, Any]]:
    gen = df["gen_len"].to_numpy(dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(lv.rows), unit="req", desc=lv.name, leave=True)
    t0 = time.perf_counter()
    out: list[dict[str, Any]] = []

    async def one(row: int, arrival_s: float | None) -> None:
        body = api.body(prompt_text(int(words[row]), seed=seed, index=row), int(gen[row]))
        rec = await _stream_request(
            client,
            api.url,
            body,
            chat=api.chat,
            timeout_s=timeout_s,
            t0=t0,
            max_events=8 * int(gen[row]) + 64,
        )
        rec["row"] = row
        rec["arrival_ms"] = rec["send_ms"] if arrival_s is None else arrival_s * 1e3
        out.append(rec)
        if bar is not None:
            bar.update(1)

    tasks: list[asyncio.Task] = []
    try:
        if lv.mode == "rate":
            assert lv.arrival_s is not None
            for row, at in zip(lv.rows.tolist(), lv.arrival_s.tolist(), strict=True):
                delay = t0 + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(row, at)))
        else:
            queue = iter(lv.rows.tolist())
            deadline = t0 + duration_s

            async def client_loop() -> None:
                while time.perf_counter() < deadline:
                    row = next(queue, None)
                    if row is None:
                        return
                    await one(row, None)

            tasks = [
                asyncio.create_task(client_loop()) for _ in range(min(int(lv.level), len(lv.rows)))
            ]
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if bar is not None:
            bar.close()
    return out


def _records_frame(
    recs: list[dict[str, Any]], lv: _Level, df: pd.DataFrame, words: np.ndarray
) -> pd.DataFrame:
    if not recs:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RECORD_COLUMNS})
    t = pd.DataFrame(recs)
    rows = t["row"].to_numpy(dtype=np.int64)
    t["mode"] = lv.mode
    t["level"] = lv.level
    t["request_id"] = df["request_id"].to_numpy(dtype=object)[rows]
    t["prompt_len"] = df["prompt_len"].to_numpy(dtype=np.int64)[rows]
    t["gen_len"] = df["gen_len"].to_numpy(dtype=np.int64)[rows]
    t["prompt_words"] = words[rows]
    t["tokens_in"] = t["usage_prompt_tokens"].astype(np.float64)
    return (
        _with_derived(t)
        .sort_values(["arrival_ms", "send_ms"], kind="stable")[list(RECORD_COLUMNS)]
        .reset_index(drop=True)
    )


def _with_derived(t: pd.DataFrame) -> pd.DataFrame:
    """tokens_out, ttft_ms, tpot_ms and latency_ms from the raw times and counts."""
    usage = t["usage_completion_tokens"].to_numpy(dtype=np.float64)
    streamed = t["tokens_streamed"].to_numpy(dtype=np.float64)
    out_tokens = np.where(np.isfinite(usage), usage, streamed)
    t["tokens_out"] = out_tokens
    arrival = t["arrival_ms"].to_numpy(dtype=np.float64)
    first = t["first_token_ms"].to_numpy(dtype=np.float64)
    last = t["last_token_ms"].to_numpy(dtype=np.float64)
    ok = t["status"].to_numpy() == "ok"
    t["ttft_ms"] = np.where(ok, first - arrival, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t["tpot_ms"] = np.where(ok & (out_tokens > 1), (last - first) / (out_tokens - 1), np.nan)
    t["latency_ms"] = np.where(ok, t["finish_ms"].to_numpy(dtype=np.float64) - arrival, np.nan)
    return t


# --------------------------------------------------------------------------------------------
# aggregation


def _stats(values: np.ndarray, base: str) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out = {f"{base}_mean_ms": float(v.mean()) if v.size else math.nan}
    for p in (50, 95, 99):
        out[f"{base}_p{p}_ms"] = nearest_rank(v, p)
    return out


def _gaps(token_ms: pd.Series) -> np.ndarray:
    """Every gap (ms) between consecutive entries of each list, pooled; vectorized."""
    arrays = [np.asarray(x, dtype=np.float64) for x in token_ms.tolist() if len(x) > 1]
    if not arrays:
        return np.zeros(0)
    flat = np.concatenate(arrays)
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    d = np.diff(flat)
    starts = np.cumsum(lengths)[:-1] - 1  # the gap from one request's last to the next's first
    keep = np.ones(d.size, dtype=bool)
    keep[starts] = False
    return d[keep]


def _summarize_one(r: pd.DataFrame, mode: str, level: float, policy: str) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode, "level": level, "policy": policy}
    status = r["status"].to_numpy()
    ok = status == "ok"
    done = r[ok]
    n = len(r)
    arrival = r["arrival_ms"].to_numpy(dtype=np.float64)
    finish = r["finish_ms"].to_numpy(dtype=np.float64)
    span_ms = float(np.nanmax(finish) - np.nanmin(arrival)) if n else math.nan
    span_s = span_ms / 1e3
    tokens_out = done["tokens_out"].to_numpy(dtype=np.float64)
    tokens_in = done["tokens_in"].to_numpy(dtype=np.float64)
    positive = span_s > 0
    row["n_requests"] = n
    row["duration_s"] = span_s
    row["throughput_rps"] = len(done) / span_s if positive else math.nan
    row["offered_rps"] = offered_rps(arrival, mode)
    row["output_tokens_per_s"] = float(np.nansum(tokens_out)) / span_s if positive else math.nan
    row.update(_stats(done["ttft_ms"].to_numpy(), "ttft"))
    row.update(_stats(done["tpot_ms"].to_numpy(), "tpot"))
    row.update(_stats(done["latency_ms"].to_numpy(), "latency"))
    for col in _SERVER_SIDE:
        row[col] = math.nan
    in_flight = finish - arrival
    row["littles_L"] = float(np.nansum(in_flight)) / span_ms if span_ms > 0 else math.nan
    lat = done["latency_ms"].to_numpy(dtype=np.float64)
    row["littles_lambda_W"] = (
        (len(done) / span_ms) * float(lat.mean()) if span_ms > 0 and lat.size else math.nan
    )
    finished = np.where(ok, finish, np.nan)
    row["overloaded"] = (
        overload_message(arrival, finished, np.where(ok, finish - arrival, np.nan), mode)
        is not None
    )
    row.update(_stats(_gaps(done["token_ms"]), "itl"))
    row["n_completed"] = int(ok.sum())
    row["n_errors"] = int((status == "error").sum())
    row["n_timeouts"] = int((status == "timeout").sum())
    row["n_dropped"] = int((status == "dropped").sum())
    row["n_short"] = int((tokens_out < done["gen_len"].to_numpy(dtype=np.float64)).sum())
    usage = done["usage_completion_tokens"].to_numpy(dtype=np.float64)
    streamed = done["tokens_streamed"].to_numpy(dtype=np.float64)
    row["n_token_mismatch"] = int((np.isfinite(usage) & (usage != streamed)).sum())
    row["input_tokens_per_s"] = (
        float(np.nansum(tokens_in)) / span_s
        if positive and np.isfinite(tokens_in).any()
        else math.nan
    )
    lag = r["send_ms"].to_numpy(dtype=np.float64) - arrival
    row["send_lag_p99_ms"] = nearest_rank(lag, 99)
    return row


def summarize_levels(records: pd.DataFrame, *, policy: str = "measured") -> pd.DataFrame:
    """One row per (mode, level) of request records (:data:`RECORD_COLUMNS`), in order of first
    appearance, with the :data:`LEVEL_COLUMNS`; ``policy`` labels the rows (the group of
    :func:`batchlab.plots.load_sweep_figure`)."""
    if not isinstance(records, pd.DataFrame):
        raise InputError(f"expected a DataFrame of request records, got {type(records).__name__}")
    needed = [c for c in RECORD_COLUMNS if c not in ("prompt_words", "http_status", "error")]
    for col in needed:
        if col not in records.columns:
            raise InputError("missing column", field=col)
    rows = [
        _summarize_one(part, str(mode), float(level), policy)
        for (mode, level), part in records.groupby(["mode", "level"], sort=False)
    ]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LEVEL_COLUMNS})
    return pd.DataFrame(rows)[list(LEVEL_COLUMNS)]


# --------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True)
class LoadTestResult:
    """A load test: ``levels`` (one row per level, :data:`LEVEL_COLUMNS`), ``requests`` (one row
    per request sent, :data:`RECORD_COLUMNS`), the ``settings`` it ran with, what was learnt of
    the ``server`` (URL, model, endpoint, whether ``ignore_eos`` was accepted, tokens per prompt
    word), and ``interrupted`` (stopped by Ctrl-C: the levels finished before it)."""

    levels: pd.DataFrame
    requests: pd.DataFrame
    settings: Mapping[str, Any] = field(default_factory=dict)
    server: Mapping[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    def knees(
        self, y: str = "latency_p99_ms", *, factor: float = 2.0, method: str = "threshold"
    ) -> dict[str, float]:
        """The knee of each load mode (``"rate"``: requests/s, ``"closed"``: clients) with
        :func:`batchlab.simulate.find_knee` on ``level`` and ``y``; NaN: no knee in the sweep."""
        return {
            str(mode): find_knee(part, "level", y, factor=factor, method=method)
            for mode, part in self.levels.groupby("mode", sort=False)
        }

    def replay_requests(self, mode: str, level: float, *, served: bool = False) -> pd.DataFrame:
        """The requests of one level as a request table for :func:`batchlab.simulate.simulate`:
        ``request_id``, ``prompt_len``, ``gen_len`` (tokens asked for) and ``arrival_s`` (the
        actual send times, s from the level's start), in send order.

        ``served``: what the server actually computed instead: only the completed requests
        (status ``ok``), with the prompt tokens the server counted (``tokens_in``, its
        ``usage.prompt_tokens``) and the tokens it returned (``tokens_out``) where it reported
        them, the asked-for lengths otherwise."""
        r = self.requests
        part = r[(r["mode"] == mode) & (r["level"] == float(level))]
        if part.empty:
            known = sorted({(str(m), float(v)) for m, v in zip(r["mode"], r["level"], strict=True)})
            raise InputError(f"no level ({mode!r}, {level!r}) in this load test; levels: {known}")
        part = part.sort_values("send_ms", kind="stable")
        prompt = part["prompt_len"].to_numpy(dtype=np.int64)
        gen = part["gen_len"].to_numpy(dtype=np.int64)
        if served:
            part = part[part["status"].to_numpy() == "ok"]
            if part.empty:
                raise InputError(f"no completed request at level ({mode!r}, {level!r})")
            prompt = _counted(part["tokens_in"], part["prompt_len"])
            gen = _counted(part["tokens_out"], part["gen_len"])
        return pd.DataFrame(
            {
                "request_id": part["request_id"].to_numpy(dtype=object),
                "prompt_len": prompt,
                "gen_len": gen,
                "arrival_s": part["send_ms"].to_numpy(dtype=np.float64) / 1e3,
            }
        )

    def table(self) -> pd.DataFrame:
        """The levels' main figures, for printing."""
        cols = [
            "mode",
            "level",
            "n_requests",
            "n_completed",
            "n_errors",
            "n_timeouts",
            "n_dropped",
            "throughput_rps",
            "output_tokens_per_s",
            "ttft_p50_ms",
            "ttft_p99_ms",
            "itl_p50_ms",
            "itl_p99_ms",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
        ]
        return self.levels.loc[:, cols]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``PATH.csv`` (the levels), ``PATH.requests.jsonl`` (the records, one JSON object
        a line, ``token_ms`` as a list) and ``PATH.json`` (settings, server, versions, date):
        all three are written to temporary files first and renamed only when all are complete
        (:func:`batchlab.io.all_or_nothing`: all three, or none)."""
        target = Path(path)
        if target.suffix.lower() != ".csv":
            raise InputError(
                "a load test is saved as .csv (with .requests.jsonl and .json)", path=target
            )
        records_path, meta_path = _sidecars(target)
        meta = {
            "format": "batchlab loadtest 1",
            "settings": dict(self.settings),
            "server": dict(self.server),
            "interrupted": bool(self.interrupted),
            "levels_columns": list(LEVEL_COLUMNS),
            "versions": {"batchlab": _batchlab_version, "python": platform.python_version()},
            "platform": platform.platform(),
            "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        with (
            all_or_nothing(),
            atomic_path(target) as t1,
            atomic_path(records_path) as t2,
            atomic_path(meta_path) as t3,
        ):
            self.levels.to_csv(t1, index=False, lineterminator="\n", float_format="%.6g")
            recs = self.requests.copy()
            recs["token_ms"] = [[round(float(x), 3) for x in v] for v in recs["token_ms"]]
            recs.to_json(t2, orient="records", lines=True, double_precision=6)
            t3.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        return target


def _counted(counted: pd.Series, asked: pd.Series) -> np.ndarray:
    """Token counts the server reported (positive, finite), else the asked-for ones."""
    c = pd.to_numeric(counted, errors="coerce").to_numpy(dtype=np.float64)
    a = asked.to_numpy(dtype=np.int64)
    ok = np.isfinite(c) & (c >= 1)
    return np.where(ok, np.round(np.where(ok, c, 0)), a).astype(np.int64)


def _sidecars(target: Path) -> tuple[Path, Path]:
    stem = target.with_suffix("")
    return Path(f"{stem}.requests.jsonl"), Path(f"{stem}.json")


def load_loadtest(path: str | os.PathLike[str]) -> LoadTestResult:
    """Read a load test written by :meth:`LoadTestResult.save` (``PATH.csv`` and its
    ``.requests.jsonl`` and ``.json``); the levels table is checked for its columns."""
    target = Path(path)
    records_path, meta_path = _sidecars(target)
    for p in (target, records_path, meta_path):
        if not p.exists():
            raise InputError(
                "no such file (a load test is a .csv, .requests.jsonl and .json)", path=p
            )
    try:
        levels = pd.read_csv(target)
        records = pd.read_json(records_path, orient="records", lines=True, dtype=False)
        meta = json.loads(meta_path.read_text())
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable load test: {exc}", path=target) from exc
    for col in LEVEL_COLUMNS:
        if col not in levels.columns:
            raise InputError("missing column", path=target, field=col)
    for col in RECORD_COLUMNS:
        if col not in records.columns:
            raise InputError("missing column", path=records_path, field=col)
    records["token_ms"] = [list(v) if isinstance(v, list) else [] for v in records["token_ms"]]
    records["error"] = records["error"].fillna("").astype(str)
    return LoadTestResult(
        levels=levels,
        requests=records,
        settings=meta.get("settings", {}),
        server=meta.get("server", {}),
        interrupted=bool(meta.get("interrupted", False)),
    )


# --------------------------------------------------------------------------------------------
# the entry point


def _run_in_thread(make: Callable[[Callable[[], bool]], Any]) -> tuple[Any, bool]:
    """Run ``make(stopped)``'s coroutine on an event loop of its own thread (so it works inside
    Jupyter's running loop too); Ctrl-C in the calling thread cancels it. Returns (value,
    interrupted)."""
    box: dict[str, Any] = {}
    ready = threading.Event()
    stop = threading.Event()

    def target() -> None:
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(make(stop.is_set))
            box["loop"], box["task"] = loop, task
            ready.set()
            box["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            box["error"] = exc
        finally:
            ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    worker = threading.Thread(target=target, name="batchlab-loadtest", daemon=True)
    worker.start()
    interrupted = False
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        ready.wait(5)
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        worker.join(30)
    if "error" in box and not isinstance(box["error"], asyncio.CancelledError):
        raise box["error"]
    return box.get("value"), interrupted


def loadtest(
    url: str,
    requests: pd.DataFrame,
    *,
    model: str,
    rates: Sequence[float] | None = None,
    concurrencies: Sequence[int] | None = None,
    arrivals: str = "poisson",
    burstiness: float = 1.0,
    seed: int = 0,
    duration_s: float = 60.0,
    max_requests: int | None = None,
    timeout_s: float = 60.0,
    chat: bool = False,
    ignore_eos: bool | None = None,
    label: str = "measured",
    api_key: str | None = None,
    max_connections: int = 512,
    progress: bool = True,
    output: str | os.PathLike[str] | None = None,
    transport: Any = None,
) -> LoadTestResult:
    """Measure a live OpenAI-compatible server at rising load (see the module docstring).

    ``url``: the server (``http://127.0.0.1:8000`` or ``.../v1``); ``model``: the name it serves.
    ``requests``: request_id, prompt_len, gen_len (tokens), and ``arrival_s`` for
    ``arrivals="trace"``. ``rates`` (requests/s, open loop) and/or ``concurrencies`` (clients,
    closed loop). Per level at most ``duration_s`` seconds of sending and ``max_requests``
    requests; ``timeout_s`` per request. ``chat``: ``/v1/chat/completions`` (else
    ``/v1/completions``). ``ignore_eos``: None sends ``ignore_eos``/``min_tokens`` and drops them
    if the server refuses them, True requires them, False never sends them. ``label``: the
    ``policy`` of the level rows. ``api_key``: sent as a bearer token. ``output``: a ``.csv``
    path, rewritten (with its sidecars, :meth:`LoadTestResult.save`) after every level.
    ``transport``: an ``httpx`` async transport (tests). Ctrl-C returns the finished levels.
    """
    httpx = _httpx()
    base = api_base(url)
    if not isinstance(model, str) or not model.strip():
        raise InputError(
            f"must be the name of a model the server serves, got {model!r}", field="model"
        )
    if rates is None and concurrencies is None:
        raise InputError(
            "give rates= (open loop) and/or concurrencies= (closed loop)", field="rates"
        )
    rate_list = [
        check_scalar(r, "rates", float, min_val=0, max_val=MAX_RATE, include_boundaries="right")
        for r in (rates or ())
    ]
    conc_list = [
        check_scalar(c, "concurrencies", int, min_val=1, max_val=MAX_CONCURRENCY)
        for c in (concurrencies or ())
    ]
    if len(rate_list) + len(conc_list) > MAX_LEVELS:
        raise InputError(
            f"{len(rate_list) + len(conc_list)} load levels: at most {MAX_LEVELS}", field="rates"
        )
    if not rate_list and not conc_list:
        raise InputError("no load level given", field="rates")
    if arrivals not in ARRIVALS:
        raise InputError(f"must be one of {ARRIVALS}, got {arrivals!r}", field="arrivals")
    cv = check_scalar(
        burstiness, "burstiness", float, min_val=MIN_BURSTINESS, max_val=MAX_BURSTINESS
    )
    if arrivals == "trace" and cv != 1.0:
        raise InputError("burstiness applies to drawn (poisson) arrivals", field="burstiness")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"must be a whole number, got {seed!r}", field="seed")
    dur = check_scalar(
        duration_s,
        "duration_s",
        float,
        min_val=0,
        max_val=MAX_DURATION_S,
        include_boundaries="right",
    )
    cap = (
        None if max_requests is None else check_scalar(max_requests, "max_requests", int, min_val=1)
    )
    tmo = check_scalar(
        timeout_s, "timeout_s", float, min_val=0, max_val=MAX_TIMEOUT_S, include_boundaries="right"
    )
    conns = check_scalar(
        max_connections, "max_connections", int, min_val=1, max_val=MAX_CONCURRENCY
    )
    if ignore_eos not in (None, True, False):
        raise InputError(f"must be None, True or False, got {ignore_eos!r}", field="ignore_eos")
    out_path = None
    if output is not None:
        out_path = Path(output)
        if out_path.suffix.lower() != ".csv":
            raise InputError("the output is a .csv path (sidecars beside it)", path=out_path)
    df = validate_requests(requests)
    if arrivals == "trace":
        if "arrival_s" not in df.columns:
            raise InputError("trace arrivals need an arrival_s column", field="arrival_s")
        df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    levels = _plan_levels(
        df,
        rate_list,
        conc_list,
        arrivals=arrivals,
        burstiness=cv,
        seed=int(seed),
        duration_s=dur,
        max_requests=cap,
    )
    settings = {
        "url": base,
        "model": model,
        "endpoint": "chat" if chat else "completions",
        "rates": rate_list,
        "concurrencies": conc_list,
        "arrivals": arrivals,
        "burstiness": cv,
        "seed": int(seed),
        "duration_s": dur,
        "max_requests": cap,
        "timeout_s": tmo,
        "ignore_eos": ignore_eos,
        "label": label,
        "n_table_requests": len(df),
        "source": str(df.attrs.get("source", df.attrs.get("trace", ""))),
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    state: dict[str, Any] = {"records": [], "server": {}, "interrupted": False}

    def result() -> LoadTestResult:
        recs = state["records"]
        records = (
            pd.concat(recs, ignore_index=True)
            if recs
            else pd.DataFrame({c: pd.Series(dtype=object) for c in RECORD_COLUMNS})
        )
        return LoadTestResult(
            levels=summarize_levels(records, policy=label),
            requests=records,
            settings=settings,
            server=dict(state["server"]),
            interrupted=bool(state["interrupted"]),
        )

    async def run(stopped: Callable[[], bool]) -> None:
        kwargs: dict[str, Any] = {
            "timeout": httpx.Timeout(tmo),
            "limits": httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
            "headers": headers,
            "trust_env": False,
        }
        if transport is not None:
            kwargs["transport"] = transport
        async with httpx.AsyncClient(**kwargs) as client:
            api, cal, info = await _check_server(
                client, base, model, chat=chat, ignore_eos=ignore_eos, timeout_s=tmo, seed=int(seed)
            )
            state["server"] = info
            words = cal.words_for(df["prompt_len"].to_numpy(dtype=np.float64))
            try:
                for lv in levels:
                    recs = await _run_level(
                        client,
                        api,
                        lv,
                        df,
                        words,
                        seed=int(seed),
                        duration_s=dur,
                        timeout_s=tmo,
                        progress=progress,
                    )
                    if stopped():
                        break
                    state["records"].append(_records_frame(recs, lv, df, words))
                    if out_path is not None:
                        result().save(out_path)
            except asyncio.CancelledError:
                state["interrupted"] = True

    _, interrupted = _run_in_thread(run)
    if interrupted or state["interrupted"]:
        state["interrupted"] = True
        warnings.warn(
            f"interrupted: {len(state['records'])} of {len(levels)} load levels finished",
            stacklevel=2,
        )
        if out_path is not None and state["records"]:
            result().save(out_path)  # the same levels, now marked as an interrupted sweep
    return result()


# --------------------------------------------------------------------------------------------
# GuideLLM reports


_GUIDELLM_MODES = {
    "concurrent": "closed",
    "synchronous": "closed",
    "constant": "rate",
    "poisson": "rate",
}


def read_guidellm_report(
    path: str | os.PathLike[str], *, label: str = "guidellm"
) -> LoadTestResult:
    """Read a GuideLLM benchmark report (its ``--output kind=json`` file, report format 2 of
    GuideLLM 0.8) into a :class:`LoadTestResult`: its per-request records (successful, errored
    and incomplete) become :data:`RECORD_COLUMNS` rows and are summarized by
    :func:`summarize_levels`, so the table has the same definitions as the built-in client's.

    Levels: ``concurrent`` → mode ``"closed"`` at its ``streams``, ``synchronous`` → ``"closed"``
    at 1, ``constant``/``poisson`` → ``"rate"`` at its rate; other strategies (``throughput``,
    ``trace``) keep their name as mode, level NaN. GuideLLM records no per-token times, so ITL
    is NaN (its ``first``/``last`` token times give TTFT and TPOT); a report whose requests were
    sampled (``sample_size``) warns that only the sampled ones are counted.
    """
    source = Path(path)
    try:
        report = json.loads(source.read_text())
    except FileNotFoundError as exc:
        raise InputError("no such GuideLLM report", path=source) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not a JSON file: {exc}", path=source) from exc
    benches = report.get("benchmarks") if isinstance(report, dict) else None
    if not isinstance(benches, list) or not benches:
        raise InputError(
            "no 'benchmarks' list: not a GuideLLM report", path=source, field="benchmarks"
        )
    frames = []
    for i, bench in enumerate(benches):
        where = f"benchmarks[{i}]"
        try:
            strategy = bench["config"]["strategy"]
            kind = str(strategy["type_"])
            reqs = bench["requests"]
        except (KeyError, TypeError) as exc:
            raise InputError(f"missing {exc}", path=source, field=where) from exc
        mode = _GUIDELLM_MODES.get(kind, kind)
        if kind == "concurrent":
            level = float(strategy.get("streams") or strategy.get("max_concurrency"))
        elif kind == "synchronous":
            level = 1.0
        elif kind in ("constant", "poisson"):
            level = float(strategy["rate"])
        else:
            level = math.nan
        t0 = float(bench.get("start_time") or 0.0)
        rows = []
        for status_key, status in (
            ("successful", "ok"),
            ("errored", "error"),
            ("incomplete", "timeout"),
        ):
            for rq in reqs.get(status_key) or ():
                rows.append(_guidellm_record(rq, status, t0, mode == "closed", source, where))
        totals = (bench.get("metrics") or {}).get("request_totals") or {}
        if isinstance(totals.get("total"), int) and totals["total"] > len(rows):
            warnings.warn(
                f"{source} {where}: {len(rows)} of {totals['total']} requests are in the report "
                "(sampled); the table counts only those",
                stacklevel=2,
            )
        if not rows:
            continue
        t = pd.DataFrame(rows)
        t["mode"] = mode
        t["level"] = level
        frames.append(t)
    if not frames:
        raise InputError("the report holds no request", path=source)
    records = _with_derived(pd.concat(frames, ignore_index=True))[list(RECORD_COLUMNS)]
    settings = {"source": str(source), "tool": "guidellm"}
    with contextlib.suppress(KeyError, TypeError):
        settings["guidellm_version"] = report["metadata"]["guidellm_version"]
    backend = {}
    with contextlib.suppress(KeyError, TypeError, IndexError):
        backend = benches[0]["config"]["backend"]
    server = {
        "url": backend.get("target"),
        "model": backend.get("model"),
        "endpoint": backend.get("request_format"),
    }
    return LoadTestResult(
        levels=summarize_levels(records, policy=label),
        requests=records,
        settings=settings,
        server=server,
    )


def _num(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _guidellm_record(
    rq: Any, status: str, t0: float, closed: bool, source: Path, where: str
) -> dict[str, Any]:
    """One GuideLLM request as a record; its arrival is the scheduled start in an open loop
    (``targeted_start``) and the send itself in a closed loop, as in :func:`loadtest`."""
    try:
        info = rq["info"]
        tm = info["timings"]
    except (KeyError, TypeError) as exc:
        raise InputError(
            f"a request without info.timings ({exc})", path=source, field=where
        ) from exc

    def ms(key: str) -> float:
        v = _num(tm.get(key))
        return (v - t0) * 1e3 if math.isfinite(v) else math.nan

    out_metrics = rq.get("output_metrics") or {}
    in_metrics = rq.get("input_metrics") or {}
    out_tokens = _num(out_metrics.get("text_tokens"))
    send = ms("request_start")
    arrival = ms("targeted_start")
    first = ms("first_token_iteration")
    error = info.get("error") or ""
    if status == "ok" and not math.isfinite(first):
        status, error = "error", "no token received"
    return {
        "request_id": str(rq.get("request_id", "")),
        "prompt_len": _num(in_metrics.get("text_tokens")),
        "gen_len": out_tokens,
        "prompt_words": math.nan,
        "arrival_ms": arrival if math.isfinite(arrival) and not closed else send,
        "send_ms": send,
        "first_token_ms": first,
        "last_token_ms": ms("last_token_iteration"),
        "finish_ms": ms("request_end"),
        "tokens_in": _num(in_metrics.get("text_tokens")),
        "tokens_streamed": _num(tm.get("token_iterations")),
        "usage_completion_tokens": out_tokens,
        "finish_reason": None,
        "status": status,
        "http_status": math.nan,
        "error": _one_line(error) if error else "",
        "token_ms": [],
    }
