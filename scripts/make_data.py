"""Generate the small workloads in data/ (seeded, so the files are reproducible).

    python scripts/make_data.py            # or: make data

- data/chat.jsonl: ~1,000 chat-like requests (lognormal prompts ~ 600 tokens, outputs ~ 200),
  Poisson arrivals at 8 req/s.
- data/docs.jsonl: ~800 long-document requests (prompts ~ 3,000 tokens, short outputs ~ 60),
  bursty arrivals (inter-arrival CV 2.5) at 2 req/s.
- data/mixed.jsonl: 1,200 requests of a chat + long-document mix with a heavy tail.
- data/limits.toml: example limits for planning chat and docs together.
"""

from __future__ import annotations

from pathlib import Path

from batchlab.io import atomic_write
from batchlab.workload import bimodal_workload, lognormal_workload, with_arrivals, write_requests

DATA = Path(__file__).resolve().parents[1] / "data"

LIMITS = """\
# Limits for `batchlab plan data/chat.jsonl data/docs.jsonl --limits data/limits.toml`:
# one table per input file stem. Units: cost units, padding/useful tokens, ms, requests.
# The static-graph model's latencies are large (a decode step at 1,024 tokens of context takes
# ~3.8 s in it), so these limits are in millions of ms.
[chat]
max_pad_ratio = 0.35
max_p95_latency_ms = 6e6
max_sequential_ms = 4e8
max_batch_size = 64

[docs]
max_pad_ratio = 0.35
max_p95_latency_ms = 1.2e7
max_sequential_ms = 6e8
max_batch_size = 32
"""


def main() -> None:
    chat = lognormal_workload(
        1000,
        seed=11,
        prompt_median=600,
        prompt_sigma=0.7,
        gen_median=200,
        gen_sigma=0.8,
        max_prompt_len=4096,
        max_gen_len=1024,
        id_prefix="chat",
    )
    chat = with_arrivals(chat, rate_per_s=8.0, seed=12, process="poisson")
    docs = lognormal_workload(
        800,
        seed=21,
        prompt_median=3000,
        prompt_sigma=0.5,
        gen_median=60,
        gen_sigma=0.7,
        max_prompt_len=16384,
        max_gen_len=512,
        id_prefix="doc",
    )
    docs = with_arrivals(docs, rate_per_s=2.0, seed=22, process="bursty", burstiness=2.5)
    mixed = bimodal_workload(1200, seed=31, long_fraction=0.25, id_prefix="mix")
    write_requests(chat, DATA / "chat.jsonl")
    write_requests(docs, DATA / "docs.jsonl")
    write_requests(mixed, DATA / "mixed.jsonl")
    with atomic_write(DATA / "limits.toml") as fh:
        fh.write(LIMITS)
    for name, df in [("chat", chat), ("docs", docs), ("mixed", mixed)]:
        print(
            f"data/{name}.jsonl: {len(df):,} requests, prompt p50 {int(df.prompt_len.median())}, gen p50 {int(df.gen_len.median())}"
        )


if __name__ == "__main__":
    main()
