"""The discrete-event engine: build a run's state, drive a policy's event loop, tabulate.

:func:`simulate` validates the requests and the options, builds the pieces of
:mod:`batchlab.simulate.state` (requests, arrivals, records, one replica), runs :func:`run` and
returns a :class:`~batchlab.simulate.results.SimulationResult`. :func:`run` is the loop of one
replica: hand over arrivals, start what the policy says, advance the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar, is_number
from batchlab.errors import InputError, SimulationError
from batchlab.roofline import (
    DeviceSpec,
    ModelSpec,
    RooflineStepTime,
    get_gpu,
    get_model,
    max_kv_tokens,
)
from batchlab.simulate.policies import Policy, make_policy
from batchlab.simulate.results import SimulationResult
from batchlab.simulate.state import (
    DEFAULT_BLOCK_SIZE,
    INF,
    PRIORITY_NAMES,
    STEP_COLUMNS,
    ArrivalStream,
    Batch,
    Records,
    RequestArrays,
    SimState,
)
from batchlab.slo import latency_arrays
from batchlab.steptime import WAKE_AFTER_IDLE_MS, StepTimeModel, TableStepTime
from batchlab.workload import MAX_ARRIVAL_S, arrival_times, validate_requests

__all__ = [
    "MAX_BLOCK_SIZE",
    "MAX_KV_BLOCKS",
    "RunSetup",
    "Watch",
    "advance",
    "draw_arrivals",
    "drive",
    "prepare",
    "priority_levels",
    "request_table",
    "resolve_step_time",
    "run",
    "simulate",
    "stall_error",
    "step_table",
]

_STEP_INT = STEP_COLUMNS[2:]
_BAR_EVERY = 256  # finished requests between progress-bar updates
#: the largest KV block (tokens); the continuous policy keeps counts per token of a block.
MAX_BLOCK_SIZE = 65_536
#: the most KV blocks a run may have (far beyond any device's memory).
MAX_KV_BLOCKS = 2**40


def draw_arrivals(n: int, rate_per_s: float, *, seed: int, burstiness: float = 1.0) -> np.ndarray:
    """Arrival times (s) of ``n`` requests at ``rate_per_s``: exponential inter-arrivals
    (Poisson) for ``burstiness == 1``, else gamma inter-arrivals with that coefficient of
    variation (shape ``1 / burstiness²``, mean ``1 / rate``). The first request arrives at 0.
    See :func:`batchlab.workload.arrival_times`."""
    n = check_scalar(n, "n", int, min_val=1)
    rate = check_scalar(rate_per_s, "rate", float, min_val=0, include_boundaries="neither")
    cv = check_scalar(burstiness, "burstiness", float, min_val=0, include_boundaries="neither")
    process = "poisson" if cv == 1.0 else "bursty"
    try:
        return arrival_times(n, rate_per_s=rate, seed=seed, process=process, burstiness=cv)
    except InputError as err:  # name this function's own arguments
        field = {"rate_per_s": "rate"}.get(err.field or "", err.field)
        raise InputError(err.message, field=field) from None


def priority_levels(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(priority values as ints, dense levels 0..L-1) from the optional ``priority`` column:
    ``"high"``/``"normal"``/``"low"`` or whole numbers (smaller is served first)."""
    n = len(df)
    if "priority" not in df.columns:
        ones = np.full(n, PRIORITY_NAMES["normal"], dtype=np.int64)
        return ones, np.zeros(n, dtype=np.int64)
    values = np.empty(n, dtype=np.int64)
    for pos, v in enumerate(df["priority"].tolist()):
        if isinstance(v, str):
            key = v.strip().lower()
            if key in PRIORITY_NAMES:
                values[pos] = PRIORITY_NAMES[key]
                continue
            try:
                v = float(key)
            except ValueError:
                v = None
        if is_number(v) and math.isfinite(v) and int(v) == v:
            values[pos] = int(v)
            continue
        raise InputError(
            f"must be 'high', 'normal', 'low' or an integer (smaller is served first), got {v!r}",
            field="priority",
            request_id=str(df["request_id"].iloc[pos]),
        )
    _, levels = np.unique(values, return_inverse=True)
    return values, levels.astype(np.int64)


def resolve_step_time(
    step_time: Any, model: str | ModelSpec, gpu: str | DeviceSpec
) -> StepTimeModel:
    """The step-time model of a run: ``step_time`` itself; a measured table: a step table
    (``measure --engine continuous``) is fitted (:func:`batchlab.measure.fit_step_time`), a
    batch-size table is interpolated (:class:`~batchlab.steptime.TableStepTime`); or, by
    default, the calibrated roofline of ``model`` on ``gpu``."""
    if step_time is None:
        return RooflineStepTime(model, gpu)
    if isinstance(step_time, StepTimeModel):
        return step_time
    if isinstance(step_time, pd.DataFrame):
        from batchlab.measure import fit_step_time, is_step_table

        if is_step_table(step_time):
            return fit_step_time(step_time)
        return TableStepTime(step_time)
    raise InputError(
        "must be None (roofline of model and gpu), a StepTimeModel or a measured table "
        f"(DataFrame), got {type(step_time).__name__}",
        field="step_time",
    )


def _kv_budget(
    kv_blocks: int | None,
    block_size: int,
    model: str | ModelSpec,
    gpu: str | DeviceSpec,
    memory_fraction: float,
) -> int:
    if kv_blocks is not None:
        return check_scalar(kv_blocks, "kv_blocks", int, min_val=1, max_val=MAX_KV_BLOCKS)
    tokens = max_kv_tokens(model, gpu, memory_fraction)
    if tokens < block_size:
        spec, dev = get_model(model), get_gpu(gpu)
        raise InputError(
            f"the weights of {spec.name} ({spec.weight_bytes / 1e9:.1f} GB) leave no room for "
            f"a KV cache in {memory_fraction:g} of {dev.name}'s {dev.memory_bytes / 1e9:.1f} GB "
            "(use a larger or scaled GPU, e.g. '4xa100-80gb', or give kv_blocks=)",
            field="gpu",
        )
    return tokens // block_size


def _arrivals(
    df: pd.DataFrame,
    rate: float | None,
    concurrency: int | None,
    seed: int,
    burstiness: float,
    think_time_ms: float,
) -> tuple[ArrivalStream, str]:
    """The arrival stream of a run and its mode: ``trace``, ``rate`` or ``closed``."""
    n = len(df)
    if concurrency is None and think_time_ms != 0:
        raise InputError(
            "think_time_ms applies to a closed loop (concurrency=)", field="think_time_ms"
        )
    if rate is None and burstiness != 1.0:
        raise InputError("burstiness applies to drawn arrivals (rate=)", field="burstiness")
    if concurrency is not None and rate is not None:
        raise InputError(
            "give rate (open loop) or concurrency (closed loop), not both", field="rate"
        )
    if concurrency is not None:
        c = check_scalar(concurrency, "concurrency", int, min_val=1)
        think = check_scalar(
            think_time_ms, "think_time_ms", float, min_val=0, max_val=MAX_ARRIVAL_S * 1e3, unit="ms"
        )
        arrival = np.full(n, np.nan)
        known = min(c, n)
        arrival[:known] = 0.0
        return ArrivalStream(arrival, np.arange(n, dtype=np.int64), known, think), "closed"
    if rate is not None:
        arrival = draw_arrivals(n, rate, seed=seed, burstiness=burstiness) * 1e3
        return ArrivalStream(arrival, np.arange(n, dtype=np.int64), n, None), "rate"
    if "arrival_s" not in df.columns:
        raise InputError(
            "requests have no arrival_s column: give rate= (open loop) or concurrency= "
            "(closed loop)",
            field="arrival_s",
        )
    arrival = df["arrival_s"].to_numpy(dtype=np.float64) * 1e3
    order = np.argsort(arrival, kind="stable").astype(np.int64)
    return ArrivalStream(arrival, order, n, None), "trace"


def simulate(
    requests: pd.DataFrame,
    policy: str | Policy = "continuous",
    *,
    model: str | ModelSpec = "llama-2-7b",
    gpu: str | DeviceSpec = "h100-sxm",
    step_time: StepTimeModel | pd.DataFrame | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    progress: bool = False,
    burstiness: float = 1.0,
    think_time_ms: float = 0.0,
    kv_blocks: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    memory_fraction: float = 0.9,
    **policy_options: Any,
) -> SimulationResult:
    """Simulate serving ``requests`` with a batching policy on one model replica.

    ``requests``: request_id, prompt_len, gen_len (tokens), and ``arrival_s`` (seconds) unless
    ``rate`` (requests/s: arrivals re-drawn with ``seed``, Poisson or gamma with CV
    ``burstiness``) or ``concurrency`` (closed loop of that many clients, ``think_time_ms``
    between a response and the client's next request) is given; optional ``priority``.
    ``policy``: a name in :data:`~batchlab.simulate.policies.POLICIES` (options as keywords,
    e.g. ``max_num_seqs=64``; its declared knobs) or a :class:`Policy`. Step times:
    ``step_time`` (a StepTimeModel or a measured table), else the roofline of ``model`` on
    ``gpu``. KV cache: ``kv_blocks`` blocks of ``block_size`` tokens, by default what fits
    beside the weights in ``memory_fraction`` of ``gpu``'s memory
    (:func:`batchlab.roofline.max_kv_tokens`). ``progress`` shows a tqdm bar of finished
    requests.
    """
    pol = make_policy(policy, **policy_options)
    setup = prepare(
        requests,
        model=model,
        gpu=gpu,
        step_time=step_time,
        rate=rate,
        concurrency=concurrency,
        seed=seed,
        burstiness=burstiness,
        think_time_ms=think_time_ms,
        kv_blocks=kv_blocks,
        block_size=block_size,
        memory_fraction=memory_fraction,
    )
    state = setup.replica(setup.new_arrivals(), Records(setup.n))
    pol.setup(state)
    run(state, pol, progress)
    return _result(setup, state, pol)


def run(state: SimState, pol: Policy, progress: bool = False) -> None:
    """The event loop of one replica: hand over arrivals, start what the policy says, advance
    the clock; until every request has finished (a stall is a
    :class:`~batchlab.errors.SimulationError`). ``progress`` shows a tqdm bar of finished
    requests."""
    watch = Watch(state.n, f"simulate {pol.name}", progress=progress)
    try:
        drive(state, pol, watch)
    finally:
        watch.close(state.records.finished)


class Watch:
    """The progress bar and the stop rule of a run, checked as its count of finished requests
    grows: ``progress`` shows a tqdm bar (``total`` requests, ``desc``) updated every 256;
    ``stop()`` (no arguments; True ends the run) is asked every ``every`` finished requests.
    :meth:`tick` is due once the count reaches ``next``."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        progress: bool = False,
        stop: Callable[[], bool] | None = None,
        every: int = 1,
    ) -> None:
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="req", desc=desc)
        self.stop, self.every = stop, max(1, every)
        self.next_check = self.every if stop is not None else math.inf
        self.next_bar = _BAR_EVERY if self.bar is not None else math.inf
        self.shown = 0
        self.next = min(self.next_check, self.next_bar)

    def tick(self, finished: int) -> bool:
        """Called when ``finished`` requests have finished (>= ``self.next``); True to stop."""
        if finished >= self.next_bar:
            self.bar.update(finished - self.shown)
            self.shown = finished
            self.next_bar = finished + _BAR_EVERY
        stop = False
        if finished >= self.next_check:
            self.next_check = finished + self.every
            stop = bool(self.stop())
        self.next = min(self.next_check, self.next_bar)
        return stop

    def close(self, finished: int) -> None:
        """The run has ended with ``finished`` requests finished: bring the bar there, close it."""
        if self.bar is not None:
            self.bar.update(finished - self.shown)
            self.shown = finished
            self.bar.close()


def advance(state: SimState, pol: Policy) -> Batch | float:
    """One event of a replica at its clock: hand the arrivals due by then to the policy, then
    run the unit of work it starts: the clock moves to the unit's end, the unit is logged and
    its requests recorded, the arrival stream is told of those it finished, and the unit is
    returned (calling ``pol.on_batch_end`` is left to the caller). When the policy starts
    nothing, the clock moves to the next arrival or wake-up time, or the policy flushes what
    it holds, and the clock (ms) is returned; a unit that starts after the replica sat idle
    for ``WAKE_AFTER_IDLE_MS`` or more is lengthened by the model's ``wake_ms``; ``INF`` when nothing can ever happen (no arrival
    is known, no wake-up is due, nothing was flushed; the clock stays)."""
    arrivals = state.arrivals
    taken = arrivals.take(state.clock)
    if taken is not None:
        arrived, at_ms = taken
        state.records.delivered(at_ms, state.clock)
        pol.on_arrivals(state, arrived)
    b = pol.next_batch(state)
    if b is None:
        t = min(arrivals.next_ms(), pol.wake_time(state))
        if t == INF:
            return state.clock if pol.flush(state) else INF
        if t > state.clock:
            state.clock = t
        return state.clock
    if state.wake_ms and b.start_ms - state.last_end_ms >= WAKE_AFTER_IDLE_MS:
        b.delay(state.wake_ms)  # the replica sat idle: its first step pays the wake-up
    state.clock = b.start_ms + b.duration_ms
    state.last_end_ms = state.clock
    finished = state.record(b)
    if finished:
        arrivals.on_finished(finished, state.clock)
    return b


def stall_error(state: SimState, pol: Policy, unfinished: int) -> SimulationError:
    """The error of a run whose policy never starts its ``unfinished`` requests."""
    options = ", ".join(f"{k}={v}" for k, v in pol.options().items())
    return SimulationError(
        f"simulation stalled at {state.clock:,.3f} ms: {unfinished:,} request(s) unfinished "
        f"that policy {pol.name!r} ({options}) never starts, with {state.kv_blocks:,} KV "
        f"blocks of {state.block_size} tokens"
    )


def drive(state: SimState, pol: Policy, watch: Watch | None = None, done: int = 0) -> int:
    """Run one replica on its own arrivals until it has finished every request it knows of
    (all of them in a closed loop), telling ``watch`` the count finished so far (``done``
    before this replica, plus its own); returns that count, or -1 when ``watch``'s stop rule
    ended the run. A stall is a :class:`~batchlab.errors.SimulationError`."""
    records, stream = state.records, state.arrivals
    n = stream.n if stream.closed else stream.known
    due = math.inf if watch is None else watch.next
    while records.finished < n:
        b = advance(state, pol)
        if not isinstance(b, Batch):
            if b == INF:
                raise stall_error(state, pol, n - records.finished)
            continue
        total = done + records.finished
        if total >= due:
            stop = watch.tick(total)
            due = watch.next
            if stop:
                pol.on_batch_end(state, b)
                return -1
        pol.on_batch_end(state, b)
    return done + records.finished


@dataclass(frozen=True, eq=False)
class RunSetup:
    """What every run over one request table shares, checked once: the validated table
    ``df`` and its ``priority`` values, the :class:`RequestArrays`, the arrivals (``mode``:
    ``trace``, ``rate`` or ``closed``; :meth:`new_arrivals` gives a fresh stream per run), the
    step-time model and the KV-cache budget of one replica (``kv_blocks`` of ``block_size``
    tokens). Build it with :func:`prepare`; runs only read it."""

    df: pd.DataFrame
    priority: np.ndarray
    requests: RequestArrays
    arrival_ms: np.ndarray
    order: np.ndarray
    known: int
    think_ms: float | None
    mode: str
    step_time: StepTimeModel
    kv_blocks: int
    block_size: int

    @property
    def n(self) -> int:
        """Number of requests."""
        return self.requests.n

    def new_arrivals(self) -> ArrivalStream:
        """A fresh arrival stream for one run (a closed loop writes arrival times as it goes)."""
        return ArrivalStream(self.arrival_ms.copy(), self.order, self.known, self.think_ms)

    def replica(self, arrivals: ArrivalStream, records: Records) -> SimState:
        """One replica of this setup (its step times and KV-cache budget) on ``arrivals``,
        writing into ``records``."""
        return SimState(
            self.requests, arrivals, records, self.step_time, self.kv_blocks, self.block_size
        )


def prepare(
    requests: pd.DataFrame,
    *,
    model: str | ModelSpec = "llama-2-7b",
    gpu: str | DeviceSpec = "h100-sxm",
    step_time: StepTimeModel | pd.DataFrame | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    burstiness: float = 1.0,
    think_time_ms: float = 0.0,
    kv_blocks: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    memory_fraction: float = 0.9,
) -> RunSetup:
    """Check a request table and the run options of :func:`simulate` (same meaning) once, for
    several runs over them (a fleet of replicas, a search over replica counts)."""
    df = validate_requests(requests)
    st = resolve_step_time(step_time, model, gpu)
    bs = check_scalar(
        block_size, "block_size", int, min_val=1, max_val=MAX_BLOCK_SIZE, unit="tokens"
    )
    kvb = _kv_budget(kv_blocks, bs, model, gpu, memory_fraction)
    prio_values, levels = priority_levels(df)
    arrivals, mode = _arrivals(df, rate, concurrency, seed, burstiness, think_time_ms)
    reqs = RequestArrays(
        prompt=df["prompt_len"].to_numpy(dtype=np.int64),
        gen=df["gen_len"].to_numpy(dtype=np.int64),
        level=levels,
        request_ids=df["request_id"].tolist(),
    )
    return RunSetup(
        df=df,
        priority=prio_values,
        requests=reqs,
        arrival_ms=arrivals.arrival_ms,
        order=arrivals.order,
        known=arrivals.known,
        think_ms=arrivals.think_ms if arrivals.closed else None,
        mode=mode,
        step_time=st,
        kv_blocks=kvb,
        block_size=bs,
    )


def request_table(
    setup: RunSetup, arrival_ms: np.ndarray, records: Records, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """The per-request table of :class:`SimulationResult` (input order; only ``rows``, sorted
    positions, when given) from the arrival times and the records of a run."""
    rec = records
    gen = setup.requests.gen
    df = setup.df
    out = df.drop(columns=[c for c in ("arrival_s",) if c in df.columns]).copy()
    if "priority" not in out.columns:
        out["priority"] = setup.priority
    out["arrival_ms"] = arrival_ms
    out["start_ms"] = rec.start
    out["first_token_ms"] = rec.first
    out["last_token_ms"] = rec.last
    out["finish_ms"] = rec.finish
    out["queue_ms"] = rec.start - arrival_ms
    ttft, tpot, e2e = latency_arrays(arrival_ms, rec.first, rec.last, rec.finish, gen)
    out["ttft_ms"] = ttft
    out["tpot_ms"] = tpot
    out["latency_ms"] = e2e
    out["preemptions"] = rec.preemptions
    out["batch_id"] = rec.batch_id
    if rows is not None:
        out = out.iloc[rows]
    return out


def step_table(log: list[tuple]) -> pd.DataFrame:
    """The per-step table of :class:`SimulationResult` from a replica's step log."""
    steps = pd.DataFrame(log, columns=list(STEP_COLUMNS))
    for col in _STEP_INT:
        steps[col] = steps[col].astype(np.int64)
    return steps


def _result(setup: RunSetup, state: SimState, pol: Policy) -> SimulationResult:
    rec = state.records
    return SimulationResult(
        requests=request_table(setup, state.arrival, rec),
        steps=step_table(state.log),
        policy=pol.name,
        options=dict(pol.options()),
        kv_blocks=state.kv_blocks,
        block_size=state.block_size,
        mode=setup.mode,
        step_time=repr(state.step_time),
        padded=pol.padded(),
        occupancy_request_ms=rec.occupancy_ms,
        occupancy_span_ms=rec.last_event_ms - rec.first_event_ms,
        calibrated=bool(getattr(state.step_time, "calibrated", False)),
    )
