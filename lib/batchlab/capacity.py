"""Capacity planning: the fewest replicas, and the cheapest serving configuration, that meet an
SLO for a traffic level.

A :class:`ServingConfig` is one way to serve a model with continuous batching: the GPU preset
(one replica per GPU, or ``"Nx<preset>"`` for N GPUs per replica), the model, the scheduler's
``max_num_seqs`` and ``max_num_batched_tokens``, chunked prefill on or off, and the
:mod:`router <batchlab.simulate.routers>` in front of the replicas.

* :func:`fewest_replicas`: for one configuration and one :class:`~batchlab.traffic.Traffic`
  level, the fewest replicas whose fleet meets an :class:`~batchlab.slo.SLO`
  (:func:`batchlab.simulate.simulate_fleet`), by galloping up from one replica and bisecting
  (:func:`batchlab.sweep.binary_search`). Meeting an SLO is monotone in the number of
  replicas only up to the quirks of routing and batching, so the answer is checked: the
  ``check_above`` next counts must meet it too, and :attr:`ReplicaSearch.monotone` says
  whether they do. A run that has already missed the SLO stops early (its exceedances of a
  limit are more than the percentile allows, whatever the rest does).
* :func:`capacity_search`: every configuration of a grid at every traffic level, in parallel
  through :func:`batchlab.sweep.grid_sweep` (any executor, or a ``dask.distributed``
  client), priced from a :class:`PriceTable` the user gives; the :class:`CapacityPlan` has a
  table of every configuration, the cheapest feasible one per traffic level and the
  cost–latency Pareto front (:func:`batchlab.sweep.pareto_front`).
* :func:`replica_table` / :func:`fewest_in_table`: metrics at every replica count of a range,
  and the fewest replicas meeting any SLO read from it (an SLO slider redraws from it).

Every result names the step-time model it used (``step_time``) and whether that model is
calibrated to measured hardware (``calibrated``). Units: times in ms, rates in requests/s,
costs in the price table's currency per hour.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab.checks import check_csv_rows, check_scalar
from batchlab.errors import InputError
from batchlab.roofline import get_gpu, get_model
from batchlab.simulate import get_router, prepare, run_fleet
from batchlab.slo import SLO, SLOReport, latency_arrays
from batchlab.steptime import StepTimeModel
from batchlab.sweep import binary_search, grid_sweep, pareto_front
from batchlab.traffic import Traffic, as_traffic, offered_rate
from batchlab.workload import validate_requests

__all__ = [
    "CONFIG_FIELDS",
    "MAX_NUM_SEQS",
    "MAX_REPLICAS",
    "CapacityPlan",
    "PriceTable",
    "ReplicaSearch",
    "ServingConfig",
    "capacity_search",
    "configs_from_space",
    "fewest_in_table",
    "fewest_replicas",
    "gpus_per_replica",
    "replica_table",
]

#: The fields of a :class:`ServingConfig`, the axes of a capacity grid.
#: the most replicas a search tries (a bound on the work of one configuration).
MAX_REPLICAS = 4096
#: the largest ``max_num_seqs`` of a configuration (sequences).
MAX_NUM_SEQS = 1 << 20

CONFIG_FIELDS = (
    "gpu",
    "model",
    "max_num_seqs",
    "max_num_batched_tokens",
    "chunked_prefill",
    "router",
)
_PERCENTILE_COLUMNS = tuple(f"{m}_p{p}_ms" for m in ("ttft", "tpot", "e2e") for p in (50, 90, 99))
_SCALED = re.compile(r"^(\d+)\s*x\s*[-_]?\s*(.+)$")


def gpus_per_replica(gpu: str) -> tuple[int, str]:
    """``(GPUs per replica, base preset)`` of a GPU preset name: ``"4xa100-80gb"`` is
    ``(4, "a100-80gb")``, ``"h100-sxm"`` is ``(1, "h100-sxm")`` (checked with
    :func:`batchlab.roofline.get_gpu`)."""
    get_gpu(gpu)
    key = str(gpu).strip().lower()
    match = _SCALED.match(key)
    if match:
        return int(match.group(1)), match.group(2).strip()
    return 1, key


@dataclass(frozen=True)
class ServingConfig:
    """One way to serve: ``gpu`` preset (per replica), ``model`` preset, the continuous
    batching scheduler's ``max_num_seqs`` (sequences) and ``max_num_batched_tokens`` (tokens
    per step; None: the library default), ``chunked_prefill``, and the ``router``."""

    gpu: str
    model: str
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    chunked_prefill: bool = False
    router: str = "round-robin"

    def __post_init__(self) -> None:
        gpu = str(self.gpu).strip().lower()
        get_gpu(gpu)
        model = str(self.model).strip().lower()
        get_model(model)
        object.__setattr__(self, "gpu", gpu)
        object.__setattr__(self, "model", model)
        mns = check_scalar(self.max_num_seqs, "max_num_seqs", int, min_val=1, unit="sequences")
        object.__setattr__(self, "max_num_seqs", mns)
        tokens = check_scalar(
            self.max_num_batched_tokens,
            "max_num_batched_tokens",
            int,
            min_val=1,
            allow_none=True,
            unit="tokens",
        )
        object.__setattr__(self, "max_num_batched_tokens", tokens)
        object.__setattr__(
            self, "chunked_prefill", check_scalar(self.chunked_prefill, "chunked_prefill", bool)
        )
        object.__setattr__(self, "router", get_router(self.router).name)

    def policy_options(self) -> dict[str, Any]:
        """The continuous policy's options."""
        return {
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "chunked_prefill": self.chunked_prefill,
        }

    def as_dict(self) -> dict[str, Any]:
        """The fields, in :data:`CONFIG_FIELDS` order."""
        return {name: getattr(self, name) for name in CONFIG_FIELDS}

    @property
    def label(self) -> str:
        """A short name: ``h100-sxm llama-3-8b seqs=256 tokens=default chunked round-robin``."""
        tokens = "default" if self.max_num_batched_tokens is None else self.max_num_batched_tokens
        chunk = "chunked" if self.chunked_prefill else "unchunked"
        return (
            f"{self.gpu} {self.model} seqs={self.max_num_seqs} tokens={tokens} {chunk} "
            f"{self.router}"
        )


def configs_from_space(space: Mapping[str, Sequence[Any]]) -> list[ServingConfig]:
    """Every :class:`ServingConfig` of a grid ``{field: [values]}`` (fields of
    :data:`CONFIG_FIELDS`; ``gpu`` and ``model`` required, the others default), in
    ``itertools.product`` order over :data:`CONFIG_FIELDS`."""
    if not isinstance(space, Mapping):
        raise InputError(f"expected a mapping field -> values, got {type(space).__name__}")
    unknown = sorted(set(space) - set(CONFIG_FIELDS))
    if unknown:
        raise InputError(
            f"unknown configuration field; fields: {', '.join(CONFIG_FIELDS)}", field=unknown[0]
        )
    for required in ("gpu", "model"):
        if required not in space:
            raise InputError("give at least one value", field=required)
    axes = []
    for name in CONFIG_FIELDS:
        values = space.get(name, [getattr(ServingConfig, name, None)])
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            values = [values]
        if not len(values):
            raise InputError("empty list of values", field=name)
        axes.append(list(values))
    return [
        ServingConfig(**dict(zip(CONFIG_FIELDS, combo, strict=True)))
        for combo in itertools.product(*axes)
    ]


# --------------------------------------------------------------------------------------------
# prices


@dataclass(frozen=True)
class PriceTable:
    """What one GPU costs per hour, by GPU preset: ``prices`` (``{preset: price per
    GPU-hour}``), in ``currency``, with the ``source`` and ``date`` of the figures.

    A replica of ``"Nx<preset>"`` costs N times the preset's price (unless the table prices
    ``"Nx<preset>"`` itself). Read one with :meth:`read`; the library never fetches prices.
    """

    prices: Mapping[str, float]
    currency: str = "USD"
    source: str = ""
    date: str = ""

    def __post_init__(self) -> None:
        clean = {}
        for gpu, price in dict(self.prices).items():
            clean[str(gpu).strip().lower()] = check_scalar(
                price, f"price of {gpu}", float, min_val=0, unit=f"{self.currency}/GPU-hour"
            )
        object.__setattr__(self, "prices", clean)

    @classmethod
    def read(cls, path: str | Path) -> PriceTable:
        """A CSV with columns ``gpu`` and ``price_per_gpu_hour`` (a number >= 0), and optional
        ``currency`` (one for the whole table), ``source`` and ``date``."""
        p = Path(path)
        if not p.is_file():
            raise InputError("no such price table", path=p)
        try:
            raw = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise InputError(f"not a readable CSV: {err}", path=p) from None
        raw.columns = [str(c).strip() for c in raw.columns]
        for column in ("gpu", "price_per_gpu_hour"):
            if column not in raw.columns:
                raise InputError("missing column", path=p, field=column)
        if not len(raw):
            raise InputError("the price table has no row", path=p)
        price = pd.to_numeric(raw["price_per_gpu_hour"].str.strip(), errors="coerce")
        bad = ~np.isfinite(price.to_numpy(dtype=np.float64)) | (price.to_numpy() < 0)
        check_csv_rows(bad, "must be a number >= 0", raw, "price_per_gpu_hour", path=p)
        gpus = raw["gpu"].str.strip().str.lower()
        unknown = np.zeros(len(raw), dtype=bool)
        for i, g in enumerate(gpus):
            try:
                get_gpu(g)
            except InputError:
                unknown[i] = True
        check_csv_rows(unknown, "unknown GPU preset", raw, "gpu", path=p)
        check_csv_rows(gpus.duplicated().to_numpy(), "GPU priced twice", raw, "gpu", path=p)
        currency = "USD"
        if "currency" in raw.columns:
            values = {c.strip() for c in raw["currency"] if c.strip()}
            if len(values) > 1:
                raise InputError(f"one currency per table, got {sorted(values)}", path=p)
            currency = values.pop() if values else currency
        text = {
            col: "; ".join(sorted({v.strip() for v in raw[col] if v.strip()}))
            for col in ("source", "date")
            if col in raw.columns
        }
        return cls(
            prices=dict(zip(gpus, price.astype(float), strict=True)),
            currency=currency,
            source=text.get("source", ""),
            date=text.get("date", ""),
        )

    def price_per_hour(self, gpu: str, replicas: int = 1) -> float:
        """Cost per hour of ``replicas`` replicas of ``gpu`` (InputError when not priced)."""
        key = str(gpu).strip().lower()
        if key in self.prices:
            return self.prices[key] * replicas
        count, base = gpus_per_replica(key)
        if base in self.prices:
            return self.prices[base] * count * replicas
        raise InputError(
            f"the price table has no price for {gpu!r} (priced: {', '.join(self.prices)})",
            field="gpu",
        )


# --------------------------------------------------------------------------------------------
# one configuration: the fewest replicas


class _MissedSLO:
    """Stop rule of a probe: the SLO already missed by the requests finished so far."""

    def __init__(self, slo: SLO, gen: np.ndarray) -> None:
        self.slo = slo
        self.gen = gen
        self.allow = slo.allowances(int(gen.size), int(np.count_nonzero(gen > 1)))

    def __call__(self, arrival_ms: np.ndarray, records: Any) -> bool:
        ttft, tpot, e2e = latency_arrays(
            arrival_ms, records.first, records.last, records.finish, self.gen
        )
        return self.slo.certainly_missed(ttft, tpot, e2e, self.allow)


def _probe_row(replicas: int, run: Any, report: SLOReport | None) -> dict[str, Any]:
    """One probe's figures: met, stopped early, the SLO report's percentiles and goodput."""
    row: dict[str, Any] = {
        "replicas": replicas,
        "met": bool(report is not None and report.met),
        "stopped_early": bool(run.stopped),
        "finished_share": run.finished / run.setup.n if run.setup.n else math.nan,
    }
    if report is None:
        row.update(goodput_share=math.nan, goodput_rps=math.nan, throughput_rps=math.nan)
        row.update({c: math.nan for c in _PERCENTILE_COLUMNS})
    else:
        row.update(goodput_share=report.goodput_share, goodput_rps=report.goodput_rps)
        row["throughput_rps"] = (
            report.n_requests / report.duration_s if report.duration_s > 0 else math.nan
        )
        row.update({c: report.observed[c] for c in _PERCENTILE_COLUMNS})
    return row


@dataclass(frozen=True, eq=False)
class ReplicaSearch:
    """The outcome of :func:`fewest_replicas` for one configuration and traffic level.

    ``replicas``: the fewest replicas found meeting the SLO (None: not even
    ``max_replicas``); ``report``: the SLO on that fleet; ``probes``: one row per replica
    count simulated, in the order tried (``replicas``, ``met``, ``stopped_early`` (the run
    stopped once it had missed the SLO), ``finished_share``, goodput, throughput and the
    p50/p90/p99 of TTFT, TPOT and end-to-end latency in ms, NaN for a stopped run);
    ``monotone``: every count probed below the answer missed the SLO and every one above
    met it, ``note`` saying what was checked or what broke; ``step_time`` (repr) and
    ``calibrated`` of the step-time model; ``offered_rps``: the traffic's arrival rate.
    """

    config: ServingConfig
    traffic: Traffic
    slo: SLO
    replicas: int | None
    report: SLOReport | None
    probes: pd.DataFrame
    monotone: bool
    note: str
    step_time: str
    calibrated: bool
    offered_rps: float
    max_replicas: int

    @property
    def feasible(self) -> bool:
        """True when some replica count up to ``max_replicas`` meets the SLO."""
        return self.replicas is not None

    def row(self) -> dict[str, Any]:
        """The search as one row of a capacity table (see :class:`CapacityPlan`)."""
        gpus = gpus_per_replica(self.config.gpu)[0]
        at = self.probes[self.probes["replicas"] == self.replicas] if self.feasible else None
        out: dict[str, Any] = {
            "traffic": self.traffic.label,
            "offered_rps": self.offered_rps,
            "replicas": self.replicas if self.feasible else math.nan,
            "gpus": gpus * self.replicas if self.feasible else math.nan,
            "feasible": self.feasible,
        }
        cols = ("goodput_share", "goodput_rps", "throughput_rps", *_PERCENTILE_COLUMNS)
        for c in cols:
            out[c] = float(at[c].iloc[0]) if at is not None and len(at) else math.nan
        probed = " ".join(
            f"{int(r)}{'✓' if m else '✗'}"
            for r, m in zip(self.probes["replicas"], self.probes["met"], strict=True)
        )
        out.update(
            monotone=self.monotone,
            note=self.note,
            probes=probed,
            simulations=len(self.probes),
            step_time=self.step_time,
            calibrated=self.calibrated,
        )
        return out


def _step_time_for(step_time: Any, config: ServingConfig) -> StepTimeModel | None:
    if step_time is None or isinstance(step_time, StepTimeModel):
        return step_time
    if callable(step_time):
        model = step_time(config.model, config.gpu)
        if not isinstance(model, StepTimeModel):
            raise InputError(
                f"step_time({config.model!r}, {config.gpu!r}) returned "
                f"{type(model).__name__}, not a StepTimeModel",
                field="step_time",
            )
        return model
    raise InputError(
        "must be None (the roofline of each configuration's model and GPU), a StepTimeModel "
        f"or a function (model, gpu) -> StepTimeModel, got {type(step_time).__name__}",
        field="step_time",
    )


class _Shared:
    """What the searches of one grid share in a process: each traffic level's request table
    and rate, and the one-replica runs (the router plays no part with one replica)."""

    def __init__(self, requests: pd.DataFrame) -> None:
        self.requests = requests
        self.levels: dict[Traffic, tuple[pd.DataFrame, float]] = {}
        self.one: dict[tuple, tuple[dict[str, Any], SLOReport | None]] = {}

    def arrivals(self, traffic: Traffic) -> tuple[pd.DataFrame, float]:
        if traffic not in self.levels:
            df = traffic.apply(self.requests)
            self.levels[traffic] = (df, offered_rate(df))
        return self.levels[traffic]


class _Prober:
    """Simulations of one configuration at one traffic level, by replica count, cached."""

    def __init__(
        self,
        requests: pd.DataFrame,
        slo: SLO,
        config: ServingConfig,
        traffic: Traffic,
        *,
        step_time: Any,
        kv_blocks: int | None,
        memory_fraction: float,
        early_stop: bool,
        shared: _Shared | None = None,
    ) -> None:
        self.slo, self.config, self.traffic = slo, config, traffic
        self.shared = shared if shared is not None else _Shared(requests)
        arrivals, self.offered_rps = self.shared.arrivals(traffic)
        self.setup = prepare(
            arrivals,
            model=config.model,
            gpu=config.gpu,
            step_time=_step_time_for(step_time, config),
            kv_blocks=kv_blocks,
            memory_fraction=memory_fraction,
        )
        self.stop = _MissedSLO(slo, self.setup.requests.gen) if early_stop else None
        fields = {k: v for k, v in config.as_dict().items() if k != "router"}
        self.one_key = (
            tuple(fields.items()),
            traffic,
            slo,
            repr(self.setup.step_time),
            self.setup.kv_blocks,
            early_stop,
        )
        self.rows: dict[int, dict[str, Any]] = {}
        self.reports: dict[int, SLOReport | None] = {}
        self.order: list[int] = []

    def __call__(self, replicas: int) -> dict[str, Any]:
        if replicas not in self.rows:
            hit = self.shared.one.get(self.one_key) if replicas == 1 else None
            if hit is None:
                hit = self._simulate(replicas)
                if replicas == 1:
                    self.shared.one[self.one_key] = hit
            self.rows[replicas], self.reports[replicas] = hit
            self.order.append(replicas)
        return self.rows[replicas]

    def _simulate(self, replicas: int) -> tuple[dict[str, Any], SLOReport | None]:
        run = run_fleet(
            self.setup,
            "continuous",
            replicas,
            self.config.router,
            stop=self.stop,
            **self.config.policy_options(),
        )
        report = None
        if not run.stopped:
            a, rec = run.arrival_ms, run.records
            ttft, tpot, e2e = latency_arrays(
                a, rec.first, rec.last, rec.finish, self.setup.requests.gen
            )
            span_s = (float(np.max(rec.finish)) - float(np.min(a))) / 1e3
            report = self.slo.report(ttft, tpot, e2e, span_s)
        return _probe_row(replicas, run, report), report

    def probes(self) -> pd.DataFrame:
        return pd.DataFrame([self.rows[r] for r in self.order])


def fewest_replicas(
    requests: pd.DataFrame,
    slo: SLO,
    config: ServingConfig,
    *,
    traffic: Traffic | float = 1.0,
    max_replicas: int = 64,
    check_above: int = 1,
    step_time: Any = None,
    kv_blocks: int | None = None,
    memory_fraction: float = 0.9,
    early_stop: bool = True,
) -> ReplicaSearch:
    """The fewest replicas of ``config`` whose fleet meets ``slo`` on ``requests`` at
    ``traffic`` (a :class:`~batchlab.traffic.Traffic`, or a speedup of the table's arrivals).

    Replica counts 1, 2, 4, ... are simulated until one meets the SLO (at most
    ``max_replicas``), then the last gap is bisected; the ``check_above`` counts above the
    answer are simulated too, and the result says whether the SLO held monotonically over
    every count probed. ``step_time``: None (the roofline of the configuration's model on its
    GPU: :class:`batchlab.roofline.RooflineStepTime`), a StepTimeModel, or a function ``(model,
    gpu) -> StepTimeModel``; ``kv_blocks`` and ``memory_fraction``: the KV-cache budget of a
    replica (as :func:`batchlab.simulate.simulate`). ``early_stop``: stop a simulation as soon
    as it has missed the SLO (the answer does not change; its percentiles are then NaN).
    """
    _check_slo(slo)
    if not isinstance(config, ServingConfig):
        raise InputError(f"expected a ServingConfig, got {type(config).__name__}", field="config")
    options = _search_options(
        max_replicas, check_above, step_time, kv_blocks, memory_fraction, early_stop
    )
    return _Search(validate_requests(requests), slo, options).search(config, as_traffic(traffic))


def _check_slo(slo: Any) -> None:
    if not isinstance(slo, SLO):
        raise InputError(f"expected an SLO, got {type(slo).__name__}", field="slo")


def _config_list(configs: Mapping[str, Sequence[Any]] | Sequence[ServingConfig]) -> list:
    """The configurations of a grid ``{field: [values]}`` or a list of them, checked."""
    config_list = configs_from_space(configs) if isinstance(configs, Mapping) else list(configs)
    if not config_list or not all(isinstance(c, ServingConfig) for c in config_list):
        raise InputError("give a grid {field: [values]} or a list of ServingConfig")
    return config_list


def _simulation_options(
    step_time: Any, kv_blocks: int | None, memory_fraction: float, early_stop: bool
) -> dict[str, Any]:
    """The options of every simulation of a search (see :func:`fewest_replicas`)."""
    return dict(
        step_time=step_time,
        kv_blocks=kv_blocks,
        memory_fraction=memory_fraction,
        early_stop=check_scalar(early_stop, "early_stop", bool),
    )


def _search_options(
    max_replicas: int,
    check_above: int,
    step_time: Any,
    kv_blocks: int | None,
    memory_fraction: float,
    early_stop: bool,
) -> dict[str, Any]:
    """The options of a replica search (see :func:`fewest_replicas`), checked."""
    return dict(
        max_replicas=check_scalar(
            max_replicas, "max_replicas", int, min_val=1, max_val=MAX_REPLICAS
        ),
        check_above=check_scalar(check_above, "check_above", int, min_val=0),
        **_simulation_options(step_time, kv_blocks, memory_fraction, early_stop),
    )


def _search(probe: _Prober, top: int, above: int) -> ReplicaSearch:
    """Gallop, bisect and check above with ``probe`` (see :func:`fewest_replicas`)."""
    slo, config, level = probe.slo, probe.config, probe.traffic
    # gallop: 1, 2, 4, ... until the SLO is met
    low_fail, n = 0, 1
    high_pass = None
    while True:
        if probe(n)["met"]:
            high_pass = n
            break
        low_fail = n
        if n >= top:
            break
        n = min(2 * n, top)
    st = probe.setup.step_time
    common = dict(
        config=config,
        traffic=level,
        slo=slo,
        step_time=repr(st),
        calibrated=bool(getattr(st, "calibrated", False)),
        offered_rps=probe.offered_rps,
        max_replicas=top,
    )
    if high_pass is None:
        return ReplicaSearch(
            replicas=None,
            report=None,
            probes=probe.probes(),
            monotone=True,
            note=f"the SLO is not met with up to {top} replicas",
            **common,
        )
    found = binary_search(
        lambda k: probe(k), low_fail + 1, high_pass, predicate=lambda row: row["met"]
    )
    best = int(found.value)
    for k in range(best + 1, min(best + above, top) + 1):
        probe(k)
    rows = probe.rows
    broken_below = sorted(k for k in rows if k < best and rows[k]["met"])
    broken_above = sorted(k for k in rows if k > best and not rows[k]["met"])
    checked = sorted(k for k in rows if k > best)
    if broken_above or broken_below:
        parts = []
        if broken_above:
            parts.append(f"missed again with {', '.join(map(str, broken_above))}")
        if broken_below:
            parts.append(f"also met with {', '.join(map(str, broken_below))}")
        note = f"not monotone: met with {best} replicas but " + "; ".join(parts)
    elif checked:
        note = f"monotone over the counts probed; also met with {', '.join(map(str, checked))}"
    elif best >= top:
        note = f"met only at max_replicas = {top}: nothing above it checked"
    else:
        note = "not checked above (check_above=0)"
    return ReplicaSearch(
        replicas=best,
        report=probe.reports[best],
        probes=probe.probes(),
        monotone=not (broken_above or broken_below),
        note=note,
        **common,
    )


# --------------------------------------------------------------------------------------------
# a grid of configurations


class _Search:
    """One cell of a capacity grid, a picklable callable for :func:`grid_sweep`."""

    def __init__(self, requests: pd.DataFrame, slo: SLO, options: dict[str, Any]) -> None:
        self.requests, self.slo, self.options = requests, slo, options
        self.shared = _Shared(requests)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "shared": _Shared(self.requests)}  # workers fill their own

    def search(self, config: ServingConfig, traffic: Traffic) -> ReplicaSearch:
        """The fewest replicas of ``config`` at ``traffic`` (see :func:`fewest_replicas`)."""
        opts = dict(self.options)
        top, above = opts.pop("max_replicas"), opts.pop("check_above")
        probe = _Prober(self.requests, self.slo, config, traffic, shared=self.shared, **opts)
        return _search(probe, top, above)

    def __call__(self, config: ServingConfig, traffic: Traffic) -> dict[str, Any]:
        return self.search(config, traffic).row()


@dataclass(frozen=True, eq=False)
class CapacityPlan:
    """The outcome of :func:`capacity_search`.

    ``table``: one row per (configuration, traffic level): the configuration's fields,
    ``traffic`` (label) and ``offered_rps``, ``replicas`` and ``gpus`` (NaN when infeasible),
    ``feasible``, ``price_per_gpu_hour`` and ``cost_per_hour`` (``gpus × price``, in
    ``currency`` per hour; NaN without a price), ``goodput_share``, ``goodput_rps``,
    ``throughput_rps``, the p50/p90/p99 of TTFT, TPOT and end-to-end latency (ms) at that
    count, ``monotone`` and ``note`` (:class:`ReplicaSearch`), ``probes`` (the counts
    simulated, ✓ met / ✗ missed), ``simulations``, ``step_time``, ``calibrated`` and ``error``
    (why a configuration could not be simulated, else None). ``latency``: the latency column
    of the Pareto front.
    """

    table: pd.DataFrame
    slo: SLO
    prices: PriceTable | None = None
    latency: str = "ttft_p99_ms"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def currency(self) -> str:
        """The prices' currency (``""`` without prices)."""
        return self.prices.currency if self.prices is not None else ""

    @property
    def feasible(self) -> pd.DataFrame:
        """The rows that meet the SLO, cheapest first (then fewest GPUs, then lowest
        ``latency``) within each traffic level."""
        ok = self.table[self.table["feasible"].astype(bool)]
        keys = ["cost_per_hour", "gpus", self.latency]
        ok = ok.sort_values(keys, kind="stable", na_position="last")
        order = {t: i for i, t in enumerate(dict.fromkeys(self.table["traffic"]))}
        return ok.sort_values("traffic", key=lambda s: s.map(order), kind="stable")

    @property
    def cheapest(self) -> pd.DataFrame:
        """The cheapest feasible configuration of each traffic level (without prices: the
        fewest GPUs), one row per level."""
        return self.feasible.groupby("traffic", sort=False).head(1)

    def summary_table(self, rows: pd.DataFrame | None = None) -> pd.DataFrame:
        """A compact copy of ``rows`` (default: the whole table) to read, with units in the
        headers: traffic, the configuration, replicas, GPUs, cost per hour, goodput share and
        the p99 latencies (ms); ``max_num_batched_tokens`` "default" where it is the library
        default."""
        t = self.table if rows is None else rows
        cur = self.currency or "no prices"
        tokens = t["max_num_batched_tokens"]
        out = pd.DataFrame(
            {
                "traffic": t["traffic"],
                "gpu": t["gpu"],
                "model": t["model"],
                "max_num_seqs (sequences)": t["max_num_seqs"],
                "max_num_batched_tokens (tokens)": [
                    "default" if pd.isna(v) else str(int(v)) for v in tokens
                ],
                "chunked prefill": t["chunked_prefill"],
                "router": t["router"],
                "replicas": t["replicas"],
                "GPUs": t["gpus"],
                f"cost ({cur}/hour)": t["cost_per_hour"],
                "goodput (share)": t["goodput_share"],
                "TTFT p99 (ms)": t["ttft_p99_ms"],
                "TPOT p99 (ms)": t["tpot_p99_ms"],
                "end-to-end p99 (ms)": t["e2e_p99_ms"],
                "monotone": t["monotone"],
            },
            index=t.index,
        )
        return out

    @property
    def pareto(self) -> pd.DataFrame:
        """The feasible rows on the cost–latency Pareto front of each traffic level (cost per
        hour, else GPUs, against ``latency``), cheapest first."""
        ok = self.feasible
        cost = "cost_per_hour" if ok["cost_per_hour"].notna().any() else "gpus"
        parts = [
            pareto_front(part, minimize=[cost, self.latency])
            for _, part in ok.groupby("traffic", sort=False)
        ]
        return pd.concat(parts) if parts else ok.iloc[:0]


def capacity_search(
    requests: pd.DataFrame,
    slo: SLO,
    configs: Mapping[str, Sequence[Any]] | Sequence[ServingConfig],
    *,
    traffic: Sequence[Traffic | float] = (1.0,),
    prices: PriceTable | str | Path | None = None,
    max_replicas: int = 64,
    check_above: int = 1,
    step_time: Any = None,
    kv_blocks: int | None = None,
    memory_fraction: float = 0.9,
    early_stop: bool = True,
    latency: str = "ttft_p99_ms",
    executor: Any = None,
    progress: bool = True,
) -> CapacityPlan:
    """The fewest replicas of every configuration meeting ``slo`` at every traffic level, priced.

    ``configs``: a grid ``{field: [values]}`` over :data:`CONFIG_FIELDS` (``gpu`` and
    ``model`` required) or a list of :class:`ServingConfig`. ``traffic``: levels
    (:class:`~batchlab.traffic.Traffic`, or numbers: speedups of the table's arrivals).
    ``prices``: a :class:`PriceTable` or the path of its CSV; without it the plan ranks by GPUs.
    ``latency``: the Pareto front's latency column (e.g. ``ttft_p99_ms``, ``e2e_p99_ms``). The
    other options are those of :func:`fewest_replicas`. ``executor``: None (in-process), a
    ``concurrent.futures`` executor or a ``dask.distributed.Client`` (the table is the same);
    ``progress``: a tqdm bar over the (configuration, traffic) cells. A configuration that
    cannot be simulated (e.g. a prompt longer than ``max_num_batched_tokens`` without chunked
    prefill) gets its reason in ``error``.
    """
    _check_slo(slo)
    if latency not in _PERCENTILE_COLUMNS:
        raise InputError(f"must be one of {', '.join(_PERCENTILE_COLUMNS)}", field="latency")
    config_list = _config_list(configs)
    levels = [as_traffic(t) for t in traffic]
    if not levels:
        raise InputError("give at least one traffic level", field="traffic")
    price_table = PriceTable.read(prices) if isinstance(prices, str | Path) else prices
    if price_table is not None and not isinstance(price_table, PriceTable):
        raise InputError("must be a PriceTable or the path of a price CSV", field="prices")
    if price_table is not None:
        for c in config_list:
            price_table.price_per_hour(c.gpu)
    options = _search_options(
        max_replicas, check_above, step_time, kv_blocks, memory_fraction, early_stop
    )
    table_in = validate_requests(requests)
    swept = grid_sweep(
        _Search(table_in, slo, options),
        {"config": config_list, "traffic": levels},
        executor=executor,
        progress=progress,
        desc="capacity search",
    )
    fields = pd.DataFrame([c.as_dict() for c in swept["config"]], index=swept.index)
    rest = swept.drop(columns=["config", "traffic"]).rename(columns={"traffic_result": "traffic"})
    table = pd.concat([fields, rest], axis=1)
    table["traffic"] = [t.label for t in swept["traffic"]]
    # the offered rate of every level, also where a configuration could not be simulated
    rates = {t: offered_rate(t.apply(table_in)) for t in levels}
    table["offered_rps"] = [rates[t] for t in swept["traffic"]]
    for col in ("replicas", "gpus"):
        table[col] = pd.to_numeric(table[col], errors="coerce") if col in table else math.nan
    table["feasible"] = table["feasible"].fillna(False).astype(bool)
    if price_table is not None:
        per_gpu = [price_table.price_per_hour(g) / gpus_per_replica(g)[0] for g in table["gpu"]]
    else:
        per_gpu = [math.nan] * len(table)
    at = table.columns.get_loc("feasible") + 1
    table.insert(at, "price_per_gpu_hour", np.asarray(per_gpu, dtype=np.float64))
    table.insert(at + 1, "cost_per_hour", table["price_per_gpu_hour"] * table["gpus"])
    return CapacityPlan(
        table=table,
        slo=slo,
        prices=price_table,
        latency=latency,
        options={**options, "configs": len(config_list), "traffic": [t.label for t in levels]},
    )


# --------------------------------------------------------------------------------------------
# every replica count of a range, and any SLO read from it


class _Count:
    """One (configuration, traffic, replica count) cell of :func:`replica_table`."""

    def __init__(self, requests: pd.DataFrame, slo: SLO, options: dict[str, Any]) -> None:
        self.requests, self.slo, self.options = requests, slo, options

    def __call__(self, config: ServingConfig, traffic: Traffic, replicas: int) -> dict[str, Any]:
        probe = _Prober(self.requests, self.slo, config, traffic, **self.options)
        row = dict(probe(replicas))
        st = probe.setup.step_time
        row.pop("replicas")
        row.update(
            offered_rps=probe.offered_rps,
            gpus=gpus_per_replica(config.gpu)[0] * replicas,
            step_time=repr(st),
            calibrated=bool(getattr(st, "calibrated", False)),
        )
        return row


def replica_table(
    requests: pd.DataFrame,
    slo: SLO,
    configs: Mapping[str, Sequence[Any]] | Sequence[ServingConfig],
    replicas: Sequence[int],
    *,
    traffic: Sequence[Traffic | float] = (1.0,),
    step_time: Any = None,
    kv_blocks: int | None = None,
    memory_fraction: float = 0.9,
    early_stop: bool = True,
    executor: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every configuration at every traffic level and every replica count of ``replicas``.

    One row per (configuration, traffic, count): the configuration's fields, ``traffic``,
    ``replicas``, ``gpus``, ``met`` (``slo`` holds), ``stopped_early``, ``finished_share``,
    goodput, throughput and the p50/p90/p99 of TTFT, TPOT and end-to-end latency (ms),
    ``offered_rps``, ``step_time``, ``calibrated`` and ``error``. With ``early_stop`` a run
    that misses ``slo`` stops there (its percentiles are NaN): give the loosest SLO you will
    read the table with (:func:`fewest_in_table`); it is kept in ``table.attrs["slo"]``. Other
    options as :func:`capacity_search`.
    """
    _check_slo(slo)
    config_list = _config_list(configs)
    counts = [check_scalar(r, "replicas", int, min_val=1) for r in replicas]
    if not counts:
        raise InputError("give at least one replica count", field="replicas")
    levels = [as_traffic(t) for t in traffic]
    options = _simulation_options(step_time, kv_blocks, memory_fraction, early_stop)
    swept = grid_sweep(
        _Count(validate_requests(requests), slo, options),
        {"config": config_list, "traffic": levels, "replicas": counts},
        executor=executor,
        progress=progress,
        desc="replica table",
    )
    fields = pd.DataFrame([c.as_dict() for c in swept["config"]], index=swept.index)
    table = pd.concat([fields, swept.drop(columns=["config"])], axis=1)
    table["traffic"] = [t.label for t in swept["traffic"]]
    table.attrs = {"slo": slo, "early_stop": options["early_stop"]}
    return table


def _meets(table: pd.DataFrame, slo: SLO) -> np.ndarray:
    ok = np.ones(len(table), dtype=bool)
    for name, limit in slo.limits().items():
        if name not in table.columns:
            raise InputError("the table has no such percentile column", field=name)
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
        ok &= values <= limit  # NaN (a stopped or failed run) does not meet it
    return ok


def fewest_in_table(
    table: pd.DataFrame, slo: SLO, by: Sequence[str] = (*CONFIG_FIELDS, "traffic")
) -> pd.DataFrame:
    """The fewest replicas meeting ``slo`` in each group of a :func:`replica_table` (read from
    its percentiles, no simulation). One row per group: ``by``, ``replicas`` and ``gpus``
    (NaN when no count of the table meets it), ``feasible``, ``monotone`` (every larger count
    of the table meets it too) and the row's percentiles."""
    _check_slo(slo)
    keys = [k for k in by if k in table.columns]
    if "replicas" not in table.columns:
        raise InputError("missing column", field="replicas")
    t = table.assign(_ok=_meets(table, slo)).sort_values("replicas", kind="stable")
    rows = []
    for key, part in t.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = part["_ok"].to_numpy()
        row = dict(zip(keys, key, strict=True))
        if ok.any():
            i = int(np.flatnonzero(ok)[0])
            hit = part.iloc[i]
            row.update(
                replicas=int(hit["replicas"]),
                gpus=int(hit["gpus"]) if "gpus" in part else math.nan,
                feasible=True,
                monotone=bool(ok[i:].all()),
            )
            row.update({c: hit[c] for c in _PERCENTILE_COLUMNS if c in part})
        else:
            row.update(replicas=math.nan, gpus=math.nan, feasible=False, monotone=True)
            row.update({c: math.nan for c in _PERCENTILE_COLUMNS if c in part})
        rows.append(row)
    return pd.DataFrame(rows)
