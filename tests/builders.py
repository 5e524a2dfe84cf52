"""Builders of hand-made tables shared by the tests (the fixtures of ``conftest.py`` hand
them out; hypothesis strategies import them directly)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from hypothesis import strategies as st

__all__ = [
    "limits_between",
    "lognormal_requests",
    "measurement_table",
    "never_policy",
    "request_table",
    "run_cli",
    "tiny_requests",
    "wide_length_bucket",
]


def request_table(
    prompt: Sequence[int],
    gen: Sequence[int],
    arrival_s: Sequence[float] | None = None,
    *,
    prefix: str = "r",
    **extra: object,
) -> pd.DataFrame:
    """Requests ``<prefix>0, <prefix>1, ...`` with these lengths (tokens), optional arrivals
    (s) and extra columns."""
    df = pd.DataFrame(
        {
            "request_id": [f"{prefix}{i}" for i in range(len(prompt))],
            "prompt_len": np.asarray(prompt, dtype=np.int64),
            "gen_len": np.asarray(gen, dtype=np.int64),
            **extra,
        }
    )
    if arrival_s is not None:
        df["arrival_s"] = np.asarray(arrival_s, dtype=np.float64)
    return df


@st.composite
def tiny_requests(draw, max_n: int, max_prompt_len: int, max_gen_len: int) -> pd.DataFrame:
    """A hypothesis strategy: 1 to ``max_n`` requests with lengths from 1 to the maxima
    (tokens), small enough for exhaustive enumeration."""
    n = draw(st.integers(1, max_n))
    p = draw(st.lists(st.integers(1, max_prompt_len), min_size=n, max_size=n))
    g = draw(st.lists(st.integers(1, max_gen_len), min_size=n, max_size=n))
    return request_table(p, g)


def limits_between(draw, plans: Sequence[dict], mbs: int | None, *, nudge: bool = False):
    """Random :class:`batchlab.planner.Limits` for hypothesis' ``draw``: for each metric either
    none or a value between the best and the worst of ``plans`` (summaries); with ``nudge``, a
    drawn value is sometimes taken 0.1 % below, so that a limit lands just under a plan."""
    from batchlab.planner import LIMIT_METRICS, Limits

    kwargs: dict[str, object] = {"max_batch_size": mbs}
    for name, metric in LIMIT_METRICS.items():
        if draw(st.booleans()):
            lo = min(p[metric] for p in plans)
            hi = max(p[metric] for p in plans)
            value = lo + draw(st.floats(0.0, 1.0)) * (hi - lo)
            if value > 0:
                kwargs[name] = value * (0.999 if nudge and draw(st.booleans()) else 1.0)
    return Limits(**kwargs)


def lognormal_requests(
    n: int,
    seed: int,
    *,
    prompt_median: float = 500,
    gen_median: float = 100,
    max_prompt_len: int = 8192,
    max_gen_len: int = 1024,
    prefix: str = "r",
) -> pd.DataFrame:
    """``n`` requests with log-normal lengths (sigma 0.8 for prompts, 0.9 for generations)."""
    rng = np.random.default_rng(seed)
    p = np.clip(rng.lognormal(np.log(prompt_median), 0.8, n), 1, max_prompt_len)
    g = np.clip(rng.lognormal(np.log(gen_median), 0.9, n), 1, max_gen_len)
    return request_table(p.astype(np.int64), g.astype(np.int64), prefix=prefix)


def measurement_table(
    sizes: Sequence[int],
    tps: Sequence[float],
    latency: Sequence[float],
    *,
    oom: Sequence[bool] | None = None,
    prompt_len: int | None = None,
    gen_len: int | None = None,
    decode: Sequence[float] | None = None,
    **extra: object,
) -> pd.DataFrame:
    """A measurement-like table: batch sizes, output tokens/s, request latency (ms), ``oom``
    (all False by default); with ``prompt_len`` / ``gen_len`` those columns too, and then
    ``decode_ms_per_step`` (``decode``, default latency / gen_len); extra columns (scalars are
    broadcast)."""
    n = len(sizes)
    df = pd.DataFrame({"batch_size": np.asarray(sizes, dtype=np.int64)})
    if prompt_len is not None:
        df["prompt_len"] = np.full(n, prompt_len, dtype=np.int64)
    if gen_len is not None:
        df["gen_len"] = np.full(n, gen_len, dtype=np.int64)
    df["output_tokens_per_s"] = np.asarray(tps, dtype=np.float64)
    df["latency_ms_per_request"] = np.asarray(latency, dtype=np.float64)
    if gen_len is not None or decode is not None:
        per_step = np.asarray(latency) / gen_len if decode is None else decode
        df["decode_ms_per_step"] = np.asarray(per_step, dtype=np.float64)
    df["oom"] = np.zeros(n, dtype=bool) if oom is None else np.asarray(oom, dtype=bool)
    for name, values in extra.items():
        df[name] = values
    return df


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """Run ``batchlab ARGV...`` in this process (``str`` of every argument): its exit code,
    stdout and stderr (read from pytest's ``capsys``)."""
    from batchlab.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def never_policy() -> type:
    """A batching policy class (``"never"``, iteration-level, no knobs) that schedules nothing,
    ever: the simulator must report the stall."""
    from batchlab.simulate.policies import Policy
    from batchlab.simulate.state import INF

    class Never(Policy):
        name = "never"
        iteration_level = True
        knobs = ()

        def on_arrivals(self, state, idx):
            pass

        def next_batch(self, state):
            return None

        def wake_time(self, state):
            return INF

    return Never


def wide_length_bucket(n: int, seq_share: float):
    """``n`` wide-length requests (lognormal prompts up to 32k tokens, gen_lens up to 8k) and
    limits: batches <= 7, sequential time ``seq_share`` times the unlimited plan's."""
    from batchlab.planner import Limits, plan_requests
    from batchlab.workload import lognormal_workload

    df = lognormal_workload(
        n, seed=0, prompt_median=2048, prompt_sigma=1.2, gen_median=512, gen_sigma=1.2,
        max_prompt_len=32768, max_gen_len=8192,
    )  # fmt: skip
    free = plan_requests(df, "static-graph", limits=Limits(max_batch_size=7), progress=False)
    seq = free.buckets[0].evaluation.sequential_ms
    return df, Limits(max_batch_size=7, max_sequential_ms=seq_share * seq)
