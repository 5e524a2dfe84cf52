"""Several identical replicas behind a router: one request stream, per-replica and fleet results.

:func:`simulate_fleet` serves the requests of :func:`~batchlab.simulate.engine.simulate` with
``replicas`` copies of one replica (the same policy, step times and KV-cache budget) and a
:mod:`router <batchlab.simulate.routers>` that sends each arriving request to one of them.
With one replica it is :func:`~batchlab.simulate.engine.simulate`, to the last bit.

How the replicas are driven (:func:`run_fleet`), exactly as if every step of every replica were
an event in one queue:

* an *oblivious* router (round-robin) decides from the arrival order alone: every request is
  routed up front and each replica runs on its own arrivals, one after the other;
* a *state-aware* router (least outstanding requests or tokens) decides at the arrival time from
  each replica's load then (a request is outstanding from its arrival until the end of the step
  that finishes it). The replicas advance in time order, an arrival is routed once every
  replica has reached its time, and a replica plans its next step knowing only a lower bound of
  the next arrival it may be sent (:meth:`~batchlab.simulate.routers.Router.quiet_arrivals`),
  so its decode runs stop for the arrivals that matter to it and no others.

A closed loop (``concurrency``) needs one replica. Times are in ms.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.errors import InputError, SimulationError
from batchlab.roofline import DeviceSpec, ModelSpec
from batchlab.simulate.engine import (
    RunSetup,
    Watch,
    advance,
    drive,
    prepare,
    request_table,
    stall_error,
    step_table,
)
from batchlab.simulate.policies import Policy, make_policy
from batchlab.simulate.results import SimulationResult
from batchlab.simulate.routers import Router, make_router
from batchlab.simulate.state import (
    DEFAULT_BLOCK_SIZE,
    INF,
    ArrivalStream,
    Batch,
    Records,
    SimState,
)
from batchlab.steptime import StepTimeModel

__all__ = ["FleetResult", "FleetRun", "StopRule", "run_fleet", "simulate_fleet"]

#: ``stop(arrival_ms, records) -> bool``: checked as requests finish; True ends the run early
#: (for a search that only needs to know a run fails, e.g. an SLO already missed).
StopRule = Callable[[np.ndarray, Records], bool]


@dataclass(eq=False)
class FleetRun:
    """The state of a fleet after :func:`run_fleet`: the shared ``setup``, the arrival times
    (ms) the run used, the shared ``records`` (every request's times), one :class:`SimState`
    and :class:`Policy` per replica, ``assignment`` (the replica of each request, -1 if never
    routed), the ``router`` and whether a ``stop`` rule ended the run early (``stopped``)."""

    setup: RunSetup
    arrival_ms: np.ndarray
    records: Records
    states: list[SimState]
    policies: list[Policy]
    assignment: np.ndarray
    router: Router
    stopped: bool = False

    @property
    def n_replicas(self) -> int:
        """Number of replicas."""
        return len(self.policies)

    @property
    def finished(self) -> int:
        """Requests finished, over the fleet."""
        return sum(s.records.finished for s in self.states)


class _RoutedStream:
    """The arrivals of one replica behind a state-aware router: the requests routed to it
    (:meth:`push`) and, when none is waiting, the earliest time the router may send the next
    one (the replica's *horizon*, from the fleet)."""

    __slots__ = ("arrival_ms", "closed", "_fleet", "_r", "_idx", "_ms")

    def __init__(self, fleet: _Routed, r: int, arrival_ms: np.ndarray) -> None:
        self.arrival_ms = arrival_ms
        self.closed = False
        self._fleet = fleet
        self._r = r
        self._idx: list[int] = []
        self._ms: list[float] = []

    def push(self, i: int, at_ms: float) -> None:
        self._idx.append(i)
        self._ms.append(at_ms)

    def next_ms(self) -> float:
        if self._ms:
            return self._ms[0]
        return self._fleet.horizon(self._r)

    def take(self, clock_ms: float) -> tuple[np.ndarray, np.ndarray] | None:
        if not self._idx or self._ms[0] > clock_ms:
            return None
        # routed requests arrived at or before the replica's clock (routing waits for it)
        idx = np.asarray(self._idx, dtype=np.int64)
        ms = np.asarray(self._ms, dtype=np.float64)
        self._idx, self._ms = [], []
        return idx, ms

    def on_finished(self, count: int, end_ms: float) -> None:
        self._fleet.stream.on_finished(count, end_ms)


class _Routed:
    """Replicas behind a state-aware (least-load) router, advanced in time order."""

    def __init__(self, run: FleetRun, stream: ArrivalStream, watch: Watch) -> None:
        self.run = run
        self.stream = stream
        self.watch = watch
        self.router = run.router
        self.weight = run.router.weights(run.setup.requests)
        self.wlist = self.weight.tolist()
        m = run.n_replicas
        # the weights of the requests in arrival order, and how far a replica looks ahead
        self.weight_in_order = self.weight[stream.order]
        self.window = 32 + 16 * m
        self.load = [0] * m  # outstanding weight; a unit's finishes are subtracted when it starts
        self.pending = [0] * m  # weight finished by the unit ending at the replica's clock
        self.routed = [0] * m
        self.streams = [_RoutedStream(self, r, run.arrival_ms) for r in range(m)]

    def horizon(self, r: int) -> float:
        """The earliest arrival replica ``r`` (the one planning, at the earliest clock) may be
        sent: the first after the arrivals the router certainly sends elsewhere."""
        s = self.stream
        d, known = s.delivered, s.known
        if d >= known:
            return INF
        states = self.run.states
        clock = states[r].clock
        others = [
            self.load[j] + (self.pending[j] if states[j].clock > clock else 0)
            for j in range(len(states))
            if j != r
        ]
        k = 0
        if others:
            upcoming = self.weight_in_order[d : min(known, d + self.window)]
            k = self.router.quiet_arrivals(self.load[r], others, upcoming)
        return float(s.sorted_ms[d + k]) if d + k < known else INF

    def route(self, t: float) -> None:
        """Route every arrival at time ``t`` (all replicas have reached ``t``)."""
        taken = self.stream.take(t)
        if taken is None:
            return
        states = self.run.states
        assignment = self.run.assignment
        for i, at in zip(taken[0].tolist(), taken[1].tolist(), strict=True):
            loads = [
                self.load[j] + (self.pending[j] if states[j].clock > at else 0)
                for j in range(len(states))
            ]
            r = self.router.choose(loads)
            self.streams[r].push(i, at)
            self.load[r] += self.wlist[i]
            self.routed[r] += 1
            assignment[i] = r
            if self.parked[r]:
                self.parked[r] = False
                if states[r].clock < at:
                    states[r].clock = at
                heapq.heappush(self.heap, (states[r].clock, r))

    def drive(self) -> bool:
        """Run to the end; False when the stop rule ended it."""
        run = self.run
        states, pols = run.states, run.policies
        m = run.n_replicas
        self.parked = [False] * m
        self.heap = [(0.0, r) for r in range(m)]
        heap = self.heap
        stream = self.stream
        watch = self.watch
        n = run.setup.n
        finished = 0
        while finished < n:
            t_a = stream.next_ms()
            c = heap[0][0] if heap else INF
            if t_a <= c and t_a < INF:
                self.route(t_a)
                continue
            if not heap:
                raise SimulationError(
                    f"simulation stalled with {n - finished:,} request(s) unfinished"
                )
            _, r = heapq.heappop(heap)
            state, pol = states[r], pols[r]
            records = state.records
            before = records.finished
            b = advance(state, pol)
            if not isinstance(b, Batch):
                self.pending[r] = 0
                if b == INF:
                    if records.finished < self.routed[r]:
                        raise stall_error(state, pol, n - finished)
                    self.parked[r] = True
                    continue
                heapq.heappush(heap, (state.clock, r))
                continue
            done = records.finished - before
            if done:
                w = self.wlist
                gone = sum(w[i] for i in b.finished.tolist())
                self.pending[r] = gone
                self.load[r] -= gone
                finished += done
                if finished >= watch.next and watch.tick(finished):
                    pol.on_batch_end(state, b)
                    return False
            else:
                self.pending[r] = 0
            pol.on_batch_end(state, b)
            heapq.heappush(heap, (state.clock, r))
        return True


def run_fleet(
    setup: RunSetup,
    policy: str | Policy,
    replicas: int = 1,
    router: str | Router = "round-robin",
    *,
    stop: StopRule | None = None,
    check_every: int | None = None,
    progress: bool = False,
    **policy_options: Any,
) -> FleetRun:
    """Serve the requests of ``setup`` (:func:`~batchlab.simulate.engine.prepare`) with
    ``replicas`` copies of one replica running ``policy`` behind ``router``.

    ``stop`` (a :data:`StopRule`) is checked every ``check_every`` finished requests (default
    ``max(64, n // 64)``); when it returns True the run ends there (``stopped``), its records
    incomplete. ``progress`` shows a tqdm bar of finished requests.
    """
    m = check_scalar(replicas, "replicas", int, min_val=1)
    rt = make_router(router)
    if isinstance(policy, Policy):
        if policy_options:
            raise InputError(
                f"options {sorted(policy_options)} given with a Policy instance; set them on it",
                field="policy",
            )
        pols = [copy.deepcopy(policy) for _ in range(m)]
    else:
        pols = [make_policy(policy, **policy_options) for _ in range(m)]
    if setup.mode == "closed" and m > 1:
        raise InputError(
            "a closed loop (concurrency=) drives one replica; with several replicas give rate= "
            "or the table's arrival times",
            field="concurrency",
        )
    stream = setup.new_arrivals()
    shared = Records(setup.n)
    assignment = np.full(setup.n, -1, dtype=np.int64)
    run = FleetRun(setup, stream.arrival_ms, shared, [], pols, assignment, rt)
    every = check_scalar(check_every, "check_every", int, min_val=1, allow_none=True)
    every = every if every is not None else max(64, setup.n // 64)
    watch = Watch(
        setup.n,
        f"simulate {m} × {pols[0].name}",
        progress=progress,
        stop=None if stop is None else lambda: stop(run.arrival_ms, run.records),
        every=every,
    )
    routed = None
    if rt.oblivious and m == 1:
        streams: list[Any] = [stream]
    elif rt.oblivious:
        order = stream.order[: stream.known]
        to = np.asarray(rt.assign(m, order, setup.requests), dtype=np.int64)
        if to.shape != order.shape or (to.size and (to.min() < 0 or to.max() >= m)):
            raise InputError(
                f"router {rt.name!r} assigned replicas outside 0..{m - 1}", field="router"
            )
        assignment[order] = to
        streams = []
        for r in range(m):
            mine = order[to == r]
            streams.append(ArrivalStream(stream.arrival_ms, mine, int(mine.size), None))
    else:
        routed = _Routed(run, stream, watch)
        streams = routed.streams
    run.states = [
        setup.replica(streams[r], shared if m == 1 else Records.sharing(shared)) for r in range(m)
    ]
    for s, p in zip(run.states, pols, strict=True):
        p.setup(s)
    try:
        if routed is not None:
            run.stopped = not routed.drive()
        else:
            done = 0
            for r in range(m):
                done = drive(run.states[r], pols[r], watch, done)
                if done < 0:
                    run.stopped = True
                    break
            if m == 1:
                assignment[stream.order[: stream.known]] = 0
    finally:
        watch.close(run.finished)
    return run


@dataclass(frozen=True, eq=False)
class FleetResult:
    """The outcome of :func:`simulate_fleet`.

    ``fleet``: the whole fleet as one :class:`SimulationResult`: every request (input order)
    with its ``replica`` column, every replica's steps (by start time) with theirs; its summary
    divides busy time by the number of replicas and its KV-cache figures are per replica.
    ``replicas``: one :class:`SimulationResult` per replica (its requests and steps).
    ``router``: the router's name; ``step_time``: the step-time model (repr) and
    ``calibrated``: whether it says it is calibrated to measured hardware.
    """

    fleet: SimulationResult
    replicas: tuple[SimulationResult, ...]
    router: str
    step_time: str
    calibrated: bool
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n_replicas(self) -> int:
        """Number of replicas."""
        return len(self.replicas)

    @property
    def requests(self) -> pd.DataFrame:
        """Every request (input order), with its ``replica``."""
        return self.fleet.requests

    def summary(self) -> dict[str, Any]:
        """The fleet's :meth:`SimulationResult.summary`, with ``n_replicas``, ``router``,
        ``step_time`` and ``calibrated``."""
        out = self.fleet.summary()
        out.update(
            n_replicas=self.n_replicas,
            router=self.router,
            step_time=self.step_time,
            calibrated=self.calibrated,
        )
        return out

    def replica_table(self) -> pd.DataFrame:
        """One row per replica: ``replica`` and its summary (requests, throughput, latency
        percentiles in ms, busy fraction, KV-cache use, ...)."""
        rows = []
        for r, res in enumerate(self.replicas):
            rows.append({"replica": r, **res.summary()})
        return pd.DataFrame(rows)


def fleet_result(run: FleetRun) -> FleetResult:
    """Tabulate a finished :func:`run_fleet` (per replica and for the whole fleet)."""
    if run.stopped:
        raise InputError("the run was stopped early: it has no complete result", field="stop")
    setup, pol0 = run.setup, run.policies[0]
    st = setup.step_time
    calibrated = bool(getattr(st, "calibrated", False))
    base = dict(
        policy=pol0.name,
        options=dict(pol0.options()),
        kv_blocks=setup.kv_blocks,
        block_size=setup.block_size,
        mode=setup.mode,
        step_time=repr(st),
        padded=pol0.padded(),
        calibrated=calibrated,
    )
    everything = request_table(setup, run.arrival_ms, run.records)
    everything["replica"] = run.assignment
    per: list[SimulationResult] = []
    steps_parts = []
    for r, state in enumerate(run.states):
        rows = np.flatnonzero(run.assignment == r)
        rec = state.records
        steps = step_table(state.log)
        per.append(
            SimulationResult(
                requests=everything.iloc[rows].drop(columns="replica"),
                steps=steps,
                occupancy_request_ms=rec.occupancy_ms,
                occupancy_span_ms=rec.last_event_ms - rec.first_event_ms,
                **base,
            )
        )
        steps = steps.copy()
        steps.insert(0, "replica", r)
        steps_parts.append(steps)
    all_steps = pd.concat(steps_parts, ignore_index=True)
    order = np.argsort(all_steps["start_ms"].to_numpy(), kind="stable")
    all_steps = all_steps.iloc[order].reset_index(drop=True)
    recs = [s.records for s in run.states]
    first = min(r.first_event_ms for r in recs)
    last = max(r.last_event_ms for r in recs)
    fleet = SimulationResult(
        requests=everything,
        steps=all_steps,
        occupancy_request_ms=float(sum(r.occupancy_ms for r in recs)),
        occupancy_span_ms=last - first,
        n_replicas=run.n_replicas,
        **base,
    )
    return FleetResult(
        fleet=fleet,
        replicas=tuple(per),
        router=run.router.name,
        step_time=repr(st),
        calibrated=calibrated,
        options=dict(pol0.options()),
    )


def simulate_fleet(
    requests: pd.DataFrame,
    policy: str | Policy = "continuous",
    *,
    replicas: int = 1,
    router: str | Router = "round-robin",
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
) -> FleetResult:
    """Simulate serving ``requests`` with ``replicas`` identical replicas behind ``router``.

    Every option means what it means for :func:`~batchlab.simulate.engine.simulate` (one
    replica: ``kv_blocks`` and the step times are per replica); ``router``: a name in
    :data:`~batchlab.simulate.routers.ROUTERS` (``round-robin``, ``least-requests``,
    ``least-tokens``) or a :class:`~batchlab.simulate.routers.Router`. A ``policy`` given as
    an instance is copied for each replica. With ``replicas=1`` the requests and steps are those
    of :func:`simulate`, exactly.
    """
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
    run = run_fleet(setup, policy, replicas, router, progress=progress, **policy_options)
    return fleet_result(run)
