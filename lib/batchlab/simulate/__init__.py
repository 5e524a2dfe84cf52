"""Discrete-event simulation of LLM serving: requests arrive over time, a policy batches them.

One server (one model replica) runs one *step* at a time; a step's duration comes from a
:class:`~batchlab.steptime.StepTimeModel` (the roofline of a model on a GPU, a measured table,
or a :class:`~batchlab.steptime.LinearStepTime` for hand-worked examples). Times are in ms.

The package: :mod:`~batchlab.simulate.state` (what the engine knows), :mod:`~.engine`
(:func:`simulate` and the event loop), :mod:`~.policies` (one module per policy behind a base
class that declares its knobs, and the registry), :mod:`~.results`
(:class:`SimulationResult`) and :mod:`~.load` (load sweeps and knees).

Conventions (the same for every policy):

* A prefill step emits each sequence's first output token (the logits of its last prompt
  token), so a request of ``gen_len`` tokens needs its prefill and ``gen_len − 1`` decode steps.
  A decode step for a sequence with ``c`` tokens in its KV cache runs at context length ``c + 1``.
* ``start_ms``: the request is first scheduled (joins a batch, or is admitted);
  ``queue_ms = start_ms − arrival_ms``; ``first_token_ms``: end of the step emitting its first
  token; ``last_token_ms``: end of the step emitting its last token; ``finish_ms``: the response
  is complete and the request leaves the server. ``ttft_ms = first_token_ms − arrival_ms``,
  ``tpot_ms = (last_token_ms − first_token_ms) / (gen_len − 1)`` (NaN for one token),
  ``latency_ms = finish_ms − arrival_ms``.
* Padded (request-level) policies (``static``, ``dynamic``, ``adaptive``) run a batch as one prefill of
  ``batch size × longest prompt`` tokens and ``G_max − 1`` decode steps of the whole batch at
  context ``P_max + j``; every request of the batch finishes at the batch's end (the batch holds
  its slot until its longest request is done). They reserve ``B · ⌈(P_max + G_max − 1) /
  block_size⌉`` KV blocks (the padded cache at its largest) and cut a batch that would not fit.
  They use the true ``gen_len`` (as if each request's ``max_new_tokens`` were exact).
* Iteration-level policies (``continuous``, Orca and vLLM) schedule every step: see
  :class:`ContinuousPolicy`. Which kind a policy is, it declares (``iteration_level``).
* Priorities: an optional ``priority`` column, ``"high"``/``"normal"``/``"low"`` or integers
  (smaller is served first); the waiting queue is ordered by (priority, arrival), first come
  first served within a class, without skipping (a request that does not fit blocks those behind).
* Arrivals: the table's ``arrival_s`` (trace replay), or ``rate=`` (Poisson, or gamma
  inter-arrivals with coefficient of variation ``burstiness``, drawn with ``seed``, the first
  request at 0), or ``concurrency=N`` (closed loop: N clients each send the next request of the
  table, in row order, ``think_time_ms`` after their previous one finished).

Speed: per-step work is vectorized over the running sequences, and the continuous policy runs
many identical decode steps at once (up to the next completion, arrival that could be admitted,
or KV-cache exhaustion), with their durations from one vectorized call.

Fleets: :func:`simulate_fleet` serves one request stream with several identical replicas
behind a router (:mod:`~.routers`: round-robin, least outstanding requests, least outstanding
tokens), with per-replica and fleet-wide results (:mod:`~.fleet`).

Load: :func:`load_sweep` steps the open-loop rate and/or the closed-loop concurrency up and
summarizes each level; :func:`find_knee` locates where latency starts to degrade (by default the
largest load before p99 latency exceeds ``factor ×`` its lowest-load value); :func:`knee_table`
gives it per policy.
"""

from __future__ import annotations

from batchlab.simulate.engine import RunSetup, draw_arrivals, prepare, run, simulate
from batchlab.simulate.fleet import FleetResult, FleetRun, fleet_result, run_fleet, simulate_fleet
from batchlab.simulate.load import find_knee, knee_table, load_sweep
from batchlab.simulate.policies import (
    POLICIES,
    AdaptivePolicy,
    ContinuousPolicy,
    DynamicPolicy,
    Knob,
    PaddedPolicy,
    Policy,
    Slider,
    StaticPolicy,
    get_policy,
    make_policy,
    register_policy,
)
from batchlab.simulate.results import SimulationResult
from batchlab.simulate.routers import (
    ROUTERS,
    LeastRequestsRouter,
    LeastTokensRouter,
    RoundRobinRouter,
    Router,
    get_router,
    make_router,
    register_router,
)
from batchlab.simulate.state import Batch, SimState, WaitQueue
from batchlab.steptime import LinearStepTime

__all__ = [
    "POLICIES",
    "ROUTERS",
    "AdaptivePolicy",
    "Batch",
    "ContinuousPolicy",
    "DynamicPolicy",
    "FleetResult",
    "FleetRun",
    "Knob",
    "LeastRequestsRouter",
    "LeastTokensRouter",
    "LinearStepTime",
    "PaddedPolicy",
    "Policy",
    "RoundRobinRouter",
    "Router",
    "RunSetup",
    "SimState",
    "SimulationResult",
    "Slider",
    "StaticPolicy",
    "WaitQueue",
    "draw_arrivals",
    "find_knee",
    "fleet_result",
    "get_policy",
    "get_router",
    "knee_table",
    "load_sweep",
    "make_policy",
    "make_router",
    "prepare",
    "register_policy",
    "register_router",
    "run",
    "run_fleet",
    "simulate",
    "simulate_fleet",
]
