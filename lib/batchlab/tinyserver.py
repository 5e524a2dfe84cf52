"""A real OpenAI-compatible server on this CPU: the tiny Llama behind ``transformers serve``.

:func:`save_tiny_model` writes the model that ``measure --model tiny`` builds
(:func:`batchlab.measure.tiny_llama`, random weights, seeded) with a tokenizer made here with
the ``tokenizers`` package (nothing is downloaded) into a folder that ``transformers serve``
loads: by default a folder of the user's cache (:func:`default_model_dir`), never the repository.

The tokenizer is a word-level vocabulary in which every id is a visible word and none is a
special token, so every generated token arrives in the stream as its own non-empty event (the
streamed token count then equals ``usage.completion_tokens``): ids ``0 … 63`` are
:data:`batchlab.loadtest.PROMPT_WORDS` (the prompt words of the load tests, so prompts are
varied ids), the rest ``w64 … w4095``; an unknown word is ``<unk>``. Words are split on
whitespace and no BOS is added, so a prompt of ``n`` words is ``n`` tokens. The model has no
end-of-sequence token (``eos_token_id`` unset: generation never stops early), so a request for
``max_tokens = n`` gets exactly ``n`` tokens, greedy (the weights are random: the words are
gibberish, the timings are real).

:class:`TinyServer` starts ``transformers serve PATH --continuous-batching --device cpu --host
127.0.0.1 --port P`` in the background (tests, notebooks) and stops it with its whole process
group; :func:`serve_tiny` runs it in the foreground (``batchlab serve-tiny``; Ctrl-C stops it).
Two settings matter on a CPU: the KV cache is given a size (``--cb-num-blocks``, default 64
pages of 256 tokens; left to itself continuous batching sizes it from the machine's free memory,
about 10 GB here), and the server runs one OpenMP thread (on a busy 2-core machine the default
two threads spin against the client and other work: steps were 5 to 7 times slower).
Only loopback addresses are accepted. The server needs the ``serve`` extra (fastapi, uvicorn,
pydantic, openai, accelerate, besides torch and transformers): :func:`missing_serve_packages`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchlab.checks import check_scalar
from batchlab.errors import BatchlabError, InputError
from batchlab.loadtest import PROMPT_WORDS

__all__ = [
    "PAGE_SIZE",
    "SERVE_PACKAGES",
    "TINY_FORMAT",
    "TinyServer",
    "default_model_dir",
    "engine_config",
    "free_port",
    "missing_serve_packages",
    "save_tiny_model",
    "serve_command",
    "serve_tiny",
    "server_env",
    "tiny_tokenizer",
    "tiny_vocabulary",
]

SERVE_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "fastapi",
    "uvicorn",
    "pydantic",
    "openai",
    "accelerate",
    "httpx",
)
"""The import names ``transformers serve`` and the load-test client need."""

TINY_FORMAT = 1
"""Version of the saved folder's layout; a folder of another version is rebuilt."""

DEFAULT_NUM_BLOCKS = 64
"""KV-cache pages of the tiny server (256 tokens each: 16,384 tokens, 64 MB for the tiny model).
Left to itself, continuous batching on a CPU sizes its cache from the machine's free memory
(about 10 GB on a 24 GB machine)."""
DEFAULT_MAX_BATCH_TOKENS = 512
"""Tokens one step of the tiny server computes at most (prefill chunks included)."""

PAGE_SIZE = 256
"""Tokens per KV-cache page of ``transformers serve`` (its ``ContinuousBatchingConfig`` default;
``serve`` has no option for it)."""
_MAX_REQUESTS_FALLBACK = 1024  # transformers' max_requests_per_batch when none is given

_MARKER = "batchlab-tiny.json"
_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class ServerError(BatchlabError):
    """The tiny server did not start, or stopped before answering."""


def missing_serve_packages() -> list[str]:
    """The :data:`SERVE_PACKAGES` that cannot be imported here (empty when all are there)."""
    return [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]


def default_model_dir() -> Path:
    """``<user cache>/batchlab/tiny-llama-serve`` (pooch's cache folder for batchlab)."""
    import pooch

    return Path(pooch.os_cache("batchlab")) / "tiny-llama-serve"


def tiny_vocabulary(vocab_size: int = 4096) -> list[str]:
    """The tokenizer's words by id: the load tests' prompt words, then ``w<id>``; all distinct
    and visible."""
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or vocab_size <= len(PROMPT_WORDS)
    ):
        raise InputError(
            f"must be a whole number > {len(PROMPT_WORDS)}, got {vocab_size!r}", field="vocab_size"
        )
    words = list(PROMPT_WORDS) + [f"w{i}" for i in range(len(PROMPT_WORDS), vocab_size - 1)]
    return words + ["<unk>"]


def tiny_tokenizer(vocab_size: int = 4096):
    """A ``transformers.PreTrainedTokenizerFast`` over :func:`tiny_vocabulary` (word level, split
    on whitespace, no special tokens, a plain-text chat template ``role: content``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(tiny_vocabulary(vocab_size))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _marker(seed: int, vocab_size: int) -> dict[str, Any]:
    import transformers

    return {
        "format": TINY_FORMAT,
        "seed": int(seed),
        "vocab_size": int(vocab_size),
        "transformers": transformers.__version__,
    }


def save_tiny_model(path: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """Save the tiny Llama (``measure.tiny_llama(seed=seed)``) and its tokenizer into ``path``
    (default :func:`default_model_dir`) for ``transformers serve``; returns the folder.

    A folder this function wrote before with the same seed is reused as is. The folder is built
    beside the target and renamed into place when complete. A folder that exists and was not
    written here is never overwritten (an error names it)."""
    target = Path(path).expanduser() if path is not None else default_model_dir()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"must be a whole number, got {seed!r}", field="seed")
    marker = target / _MARKER
    if target.exists() and not marker.is_file():  # (refused before torch is loaded)
        raise InputError(
            "exists and was not written by batchlab serve-tiny; give another --model-dir",
            path=target,
        )
    from batchlab.measure import tiny_llama

    model = tiny_llama(seed=seed)
    vocab_size = int(model.config.vocab_size)
    want = _marker(seed, vocab_size)
    if target.exists():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(marker.read_text()) == want:
                return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from transformers import GenerationConfig

    model.config.eos_token_id = None
    model.config.bos_token_id = None
    model.config.pad_token_id = None
    model.generation_config = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(build)
        tiny_tokenizer(vocab_size).save_pretrained(build)
        (build / _MARKER).write_text(json.dumps(want, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return target


def engine_config(
    num_blocks: int = DEFAULT_NUM_BLOCKS, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
):
    """The continuous-batching engine the tiny server runs, as a
    :class:`batchlab.measure.EngineConfig`: ``num_blocks`` pages of :data:`PAGE_SIZE` tokens,
    ``max_batch_tokens`` tokens a step and, as ``transformers serve`` sets no request limit,
    transformers' own: ``min(1024, max_batch_tokens)`` sequences a step. Measure the engine
    with it (``measure_continuous(config=...)``) to get the server's step times, and simulate
    with it (:meth:`~batchlab.measure.EngineConfig.simulate_options`) to get its scheduler."""
    from batchlab.measure import EngineConfig

    tokens = check_scalar(max_batch_tokens, "max_batch_tokens", int, min_val=1)
    return EngineConfig(
        num_blocks=check_scalar(num_blocks, "num_blocks", int, min_val=1),
        page_size=PAGE_SIZE,
        max_batch_tokens=tokens,
        max_requests_per_batch=min(_MAX_REQUESTS_FALLBACK, tokens),
    )


def _loopback(host: str) -> str:
    text = str(host).strip()
    if text == "localhost":
        return text
    try:
        if ipaddress.ip_address(text.strip("[]")).is_loopback:
            return text
    except ValueError:
        pass
    raise InputError(
        f"the tiny server listens on a loopback address only (127.0.0.1, ::1, localhost), got {host!r}",
        field="host",
    )


def _port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"must be a port number in 1..65535, got {port!r}", field="port")
    return int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def serve_command(
    path: str | os.PathLike[str],
    *,
    port: int,
    host: str = "127.0.0.1",
    num_blocks: int = DEFAULT_NUM_BLOCKS,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of ``transformers serve`` for a saved folder (this Python's
    ``transformers`` CLI, continuous batching on the CPU, a KV cache of ``num_blocks`` pages of
    256 tokens and at most ``max_batch_tokens`` tokens a step)."""
    return [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(path),
        "--continuous-batching",
        "--device",
        "cpu",
        "--host",
        _loopback(host),
        "--port",
        str(_port(port)),
        "--cb-num-blocks",
        str(check_scalar(num_blocks, "num_blocks", int, min_val=1)),
        "--cb-max-batch-tokens",
        str(check_scalar(max_batch_tokens, "max_batch_tokens", int, min_val=1)),
        *extra,
    ]


def server_env(threads: int = 1) -> dict[str, str]:
    """The environment of the server process: this one's, offline (nothing downloaded, no update
    check), with ``threads`` OpenMP/MKL threads."""
    n = str(check_scalar(threads, "threads", int, min_val=1))
    return {**os.environ, **_ENV, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def _url_host(host: str) -> str:
    return f"[{host.strip('[]')}]" if ":" in host else host


def _get_json(url: str, timeout_s: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read().decode("utf-8"))


def _wait_ready(
    base: str, model: str, proc: subprocess.Popen, ready_timeout_s: float, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise ServerError(f"transformers serve exited with code {code} before answering{log()}")
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            data = _get_json(f"{base}/models", 2.0)
            ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
            if model in ids:
                return
        time.sleep(0.25)
    raise ServerError(
        f"transformers serve did not answer /v1/models within {ready_timeout_s:g} s{log()}"
    )


def _warm_up(base: str, model: str, timeout_s: float) -> None:
    """One short request: the first one sets up continuous batching (seconds on a CPU)."""
    body = json.dumps({"model": model, "prompt": "the of and", "max_tokens": 2}).encode()
    req = urllib.request.Request(
        f"{base}/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"the warm-up request failed: {exc}") from exc


def _stop_group(proc: subprocess.Popen, timeout_s: float, *, group: bool) -> None:
    """SIGTERM, then SIGKILL (to the process group when it has its own). Not SIGINT: after its
    first request ``transformers serve`` 5.x shuts uvicorn down on SIGINT but then waits for
    its generation thread and never exits; on SIGTERM it is gone in half a second."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    if group:  # children left in the group (a tokenizer's or compiler's workers)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout_s)
    if group:  # a killed child is gone only once it is reaped: wait for that (bounded)
        _wait_group_gone(proc.pid, timeout_s)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Poll until no process of group ``pgid`` is left (at most ``timeout_s``); True if none is."""
    import time

    end = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


class TinyServer:
    """``transformers serve`` of the tiny Llama in the background, on a loopback address.

    ``with TinyServer() as server:`` saves the model (:func:`save_tiny_model`), starts the server
    in a process group of its own on ``port`` (default: a free one), waits until ``/v1/models``
    lists it (at most ``ready_timeout_s``), sends one warm-up request (``warmup``), and on exit
    stops the whole group (SIGTERM, then SIGKILL after ``stop_timeout_s``). ``url`` is the
    API root (``http://127.0.0.1:P/v1``), ``model`` the name to request. The server's output
    goes to ``log_path`` (default: a temporary file, removed on stop); its tail is in errors.
    ``threads``, ``num_blocks``, ``max_batch_tokens``: see :func:`serve_tiny` and
    :func:`serve_command`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        model_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
        ready_timeout_s: float = 180.0,
        warmup: bool = True,
        stop_timeout_s: float = 10.0,
        log_path: str | os.PathLike[str] | None = None,
        threads: int = 1,
        num_blocks: int = DEFAULT_NUM_BLOCKS,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = _loopback(host)
        self.env = server_env(threads)
        self.num_blocks = check_scalar(num_blocks, "num_blocks", int, min_val=1)
        self.max_batch_tokens = check_scalar(max_batch_tokens, "max_batch_tokens", int, min_val=1)
        self.port = free_port(self.host) if port is None else _port(port)
        self.model_dir = model_dir
        self.seed = seed
        self.ready_timeout_s = float(ready_timeout_s)
        self.warmup = bool(warmup)
        self.stop_timeout_s = float(stop_timeout_s)
        self.extra_args = tuple(extra_args)
        self._log_given = log_path is not None
        self._log_path = Path(log_path) if log_path is not None else None
        self.proc: subprocess.Popen | None = None
        self.path: Path | None = None

    @property
    def url(self) -> str:
        """The API root, ``http://HOST:PORT/v1``."""
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name the server answers to (the folder's path as given to it)."""
        if self.path is None:
            raise ServerError("the server has not been started")
        return str(self.path)

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        lines = self._log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return (": " + " | ".join(line.strip() for line in lines)) if lines else ""

    def start(self) -> TinyServer:
        """Save the model, start the server and wait until it answers (see the class doc)."""
        _require_serve_packages()
        self.path = save_tiny_model(self.model_dir, seed=self.seed)
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="batchlab-tiny-server.", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        cmd = serve_command(
            self.path,
            port=self.port,
            host=self.host,
            num_blocks=self.num_blocks,
            max_batch_tokens=self.max_batch_tokens,
            extra=self.extra_args,
        )
        with open(self._log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            _wait_ready(self.url, self.model, self.proc, self.ready_timeout_s, self._log_tail)
            if self.warmup:
                _warm_up(self.url, self.model, self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and every process of its group; remove a temporary log."""
        if self.proc is not None:
            _stop_group(self.proc, self.stop_timeout_s, group=True)
        if not self._log_given and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> TinyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_tiny(
    port: int,
    *,
    host: str = "127.0.0.1",
    model_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    ready_timeout_s: float = 180.0,
    warmup: bool = True,
    threads: int = 1,
    num_blocks: int = DEFAULT_NUM_BLOCKS,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    extra_args: Sequence[str] = (),
    announce: Callable[[str], None] = print,
) -> int:
    """Run the tiny server in the foreground until Ctrl-C (``batchlab serve-tiny``): save the
    model, start ``transformers serve`` (its output on this terminal), ``announce`` the URL and
    model name once ``/v1/models`` answers (and the warm-up request is done), then wait. Ctrl-C
    or SIGTERM stops the server too. Returns the server's exit code (130 after Ctrl-C, 143 after
    SIGTERM). ``threads``: the server's OpenMP threads (1: the tiny model's matrices gain
    nothing from more, and a load-test client shares the CPU)."""
    base = f"http://{_url_host(_loopback(host))}:{_port(port)}/v1"  # checked before any work
    env = server_env(threads)
    check_scalar(num_blocks, "num_blocks", int, min_val=1)
    check_scalar(max_batch_tokens, "max_batch_tokens", int, min_val=1)
    _require_serve_packages()
    path = save_tiny_model(model_dir, seed=seed)
    cmd = serve_command(
        path,
        port=port,
        host=host,
        num_blocks=num_blocks,
        max_batch_tokens=max_batch_tokens,
        extra=extra_args,
    )

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(base, str(path), proc, ready_timeout_s, lambda: "")
        if warmup:
            _warm_up(base, str(path), ready_timeout_s)
        announce(f"serving the tiny Llama at {base}")
        announce(f"model name: {path}")
        announce(
            f"try: batchlab loadtest {base} --model {path} REQUESTS.jsonl --concurrency 1,2,4 "
            "(Ctrl-C stops the server)"
        )
        return int(proc.wait())
    except KeyboardInterrupt:
        # a terminal's Ctrl-C reached the server too, but it does not exit on SIGINT
        _stop_group(proc, 10.0, group=False)
        return 130
    except _Terminated:
        _stop_group(proc, 10.0, group=False)
        return 143
    except BaseException:
        _stop_group(proc, 10.0, group=False)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _require_serve_packages() -> None:
    """ServerError naming the packages ``transformers serve`` needs and lacks (none: return)."""
    missing = missing_serve_packages()
    if missing:
        raise ServerError(
            f"transformers serve needs {', '.join(missing)}: pip install 'batchlab[measure,serve]'"
        )


class _Terminated(Exception):
    """SIGTERM arrived."""
