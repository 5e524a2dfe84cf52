"""Measure the tiny CPU server and its engine: the committed data of chapter 05's section "The
simulator against a live server" (seeded; about 3 minutes on 2 cores).

    python scripts/measure_tiny_server.py               # writes data/tiny-server/
    python scripts/measure_tiny_server.py --out DIR     # anywhere else

1. The engine: transformers' continuous-batching engine with the tiny Llama, timed step by step
   (``measure_continuous``) with the settings the server runs (``tinyserver.engine_config()``:
   64 KV pages of 256 tokens, 512 tokens a step; one PyTorch thread, as the server's one
   OpenMP thread) -> ``steps.csv`` + ``steps.json`` (the settings, the engine's included).
2. The server: ``batchlab serve-tiny``'s ``transformers serve --continuous-batching`` on a free
   127.0.0.1 port (``TinyServer``), load-tested with the same 48 requests per level in a
   closed loop of 1, 4 and 16 clients and Poisson arrivals at 2, 5 and 8 requests/s
   -> ``loadtest.csv`` + ``loadtest.requests.jsonl`` + ``loadtest.json``.

The five files are written together or not at all (``batchlab.io.all_or_nothing``); the load
averages at the start and the end of each part are recorded in the JSON sidecars (the machine
is shared: timings are noisy). The server is stopped, with its process group, on any exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from batchlab import measure, tinyserver
from batchlab.io import all_or_nothing
from batchlab.loadtest import loadtest
from batchlab.workload import lognormal_workload

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCIES = [1, 4, 16]
RATES = [2.0, 5.0, 8.0]
N_REQUESTS = 48


def requests(seed: int):
    """Chat-like requests sized for the tiny model on a CPU: prompts median 64 tokens (at most
    384), outputs median 24 (at most 64)."""
    return lognormal_workload(
        N_REQUESTS,
        seed=seed,
        prompt_median=64,
        prompt_sigma=0.8,
        gen_median=24,
        gen_sigma=0.6,
        max_prompt_len=384,
        max_gen_len=64,
        id_prefix="tiny",
    )


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "tiny-server"), help="output folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the model, prompts, arrivals")
    args = ap.parse_args()
    out = Path(args.out)
    config = tinyserver.engine_config()
    print(f"load average {load()} ({os.cpu_count()} CPUs); engine {config.as_dict()}")
    t0 = time.perf_counter()
    load_before = load()
    steps = measure.measure_continuous(
        "tiny",
        [1, 2, 4, 8, 16],
        [32, 128, 384],
        32,
        warmup=1,
        repeats=2,
        seed=args.seed,
        threads=1,
        config=config,
        progress=True,
    )
    steps.attrs["settings"] = {
        **steps.attrs["settings"],
        "load_average_1_5_15_min": {"start": load_before, "end": load()},
        "made_by": "scripts/measure_tiny_server.py",
    }
    print(f"engine: {len(steps):,} steps in {time.perf_counter() - t0:.0f} s; load {load()}")
    fitted = measure.fit_step_time(steps)
    print(f"fitted: {fitted}")
    t0 = time.perf_counter()
    load_before = load()
    with tinyserver.TinyServer(seed=args.seed) as server:
        result = loadtest(
            server.url,
            requests(args.seed),
            model=server.model,
            concurrencies=CONCURRENCIES,
            rates=RATES,
            seed=args.seed,
            duration_s=120.0,
            timeout_s=120.0,
            progress=True,
        )
        server_settings = {
            "server": "batchlab serve-tiny (transformers serve --continuous-batching, CPU)",
            "threads": 1,
            "engine_config": config.as_dict(),
        }
    result = dataclasses.replace(
        result,
        settings={
            **result.settings,
            "url": "http://127.0.0.1:PORT/v1 (a free port)",
            "model": "tiny-llama (batchlab serve-tiny)",
            "tiny_server": server_settings,
            "load_average_1_5_15_min": {"start": load_before, "end": load()},
            "made_by": "scripts/measure_tiny_server.py",
        },
        server={**result.server, "url": "http://127.0.0.1:PORT/v1", "model": "tiny-llama"},
    )
    print(f"load test: {len(result.levels)} levels in {time.perf_counter() - t0:.0f} s")
    print(result.table().to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    with all_or_nothing():
        measure.save_measurement(steps, out / "steps.csv")
        result.save(out / "loadtest.csv")
    print(
        f"written: {out}/steps.csv, steps.json, loadtest.csv, loadtest.requests.jsonl, loadtest.json"
    )


if __name__ == "__main__":
    main()
