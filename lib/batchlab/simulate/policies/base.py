"""The batching-policy base class, its declared knobs and the registry.

A policy *declares* what it is, and everything else is generated from the declarations:

* ``name``: the registry key (``simulate(requests, "continuous")``, ``--policy continuous``);
* ``iteration_level``: True for iteration-level scheduling (sequences join and leave the
  running batch every step, as in Orca and vLLM), False for padded request-level batches
  (a batch is padded to its longest request and holds its slot until that one is done);
  subclasses inherit it;
* ``knobs``: a tuple of :class:`Knob` (name, type, default, bounds, unit, help). The policy's
  constructor takes exactly these keywords and checks them; :meth:`Policy.options` returns
  them; ``batchlab simulate`` gets one ``--option`` per knob of every registered policy; a knob
  with an ``explorer`` :class:`Slider` gets a control in the policy explorer widget.

The engine then calls, in a loop: :meth:`Policy.on_arrivals`, :meth:`Policy.next_batch`, and
when nothing starts :meth:`Policy.wake_time` / :meth:`Policy.flush`, then
:meth:`Policy.on_batch_end` after each unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.simulate.registry import Registry
from batchlab.simulate.state import INF, Batch, SimState

__all__ = [
    "POLICIES",
    "Knob",
    "Policy",
    "BATCH_LIMIT",
    "MAX_WAIT",
    "Slider",
    "explorer_options",
    "explorer_sliders",
    "get_policy",
    "make_policy",
    "register_policy",
]


@dataclass(frozen=True)
class Slider:
    """A control of the policy explorer; several policies' knobs may share one.

    ``name``: the control's key (and keyword of ``policy_explorer_state``); ``type``: int,
    float or bool; ``default``: its value when not given (``allow_none``: None is valid and
    leaves each policy its own default); ``start``: for a None default, a function of the
    request table giving the widget's starting position (the value the policies' default
    comes to); ``min_val``: the smallest valid value; the control's range runs from ``low``
    (default ``min_val``) to ``max_val`` (a number or a function of the request table) in
    steps of ``step``, widened to include the value shown; ``unit``; ``help``: what it sets.
    """

    name: str
    type: type
    default: Any
    min_val: float = 0.0
    max_val: float | Callable[[pd.DataFrame], float] = 1.0
    step: float = 1.0
    unit: str = ""
    help: str = ""
    allow_none: bool = False
    low: float | None = None
    start: Callable[[pd.DataFrame], Any] | None = None

    @property
    def description(self) -> str:
        """The control's label: ``name (unit)``."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def start_for(self, requests: pd.DataFrame) -> Any:
        """The widget's starting value for a request table."""
        if self.default is None and self.start is not None:
            return self.start(requests)
        return self.default

    def range_for(self, requests: pd.DataFrame, value: float) -> tuple[float, float]:
        """The control's (low, high) range for a request table, including ``value``."""
        low = self.min_val if self.low is None else self.low
        return min(low, value), max(self.max_for(requests), value)

    def max_for(self, requests: pd.DataFrame) -> float:
        """The top of the range for a request table."""
        return float(self.max_val(requests) if callable(self.max_val) else self.max_val)

    def check(self, value: Any) -> Any:
        """``value`` checked against the control's type and lower bound (InputError names it)."""
        if self.type is bool:
            return check_scalar(value, self.name, bool)
        return check_scalar(
            value,
            self.name,
            self.type,
            min_val=self.min_val,
            unit=self.unit,
            allow_none=self.allow_none,
        )


@dataclass(frozen=True)
class Knob:
    """One option of a policy, declared.

    ``type``: int, float or bool (``sequence=True``: a list of that type, e.g. bucket edges);
    ``default``; ``min_val`` / ``max_val`` with ``include_boundaries`` (as
    :func:`batchlab.checks.check_scalar`); ``allow_none``: None is a valid value (its meaning in
    ``help``); ``allow_inf``: a float may be infinite; ``unit`` (``"ms"``, ``"tokens"``, ...);
    ``help``: one line; ``explorer``: the policy explorer's :class:`Slider` that sets it.
    """

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    min_val: float | None = None
    max_val: float | None = None
    include_boundaries: str = "both"
    allow_none: bool = False
    allow_inf: bool = False
    sequence: bool = False
    explorer: Slider | None = field(default=None, compare=False)

    def check(self, value: Any) -> Any:
        """``value`` checked and converted (InputError with ``field`` = the knob's name)."""
        if value is None and self.allow_none:
            return None
        if self.sequence:
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
                raise InputError(
                    f"must be a list of {self.type.__name__} values, got {value!r}",
                    field=self.name,
                )
            return tuple(self._one(v) for v in value)
        return self._one(value)

    def _one(self, value: Any) -> Any:
        return check_scalar(
            value,
            self.name,
            self.type,
            min_val=self.min_val,
            max_val=self.max_val,
            include_boundaries=self.include_boundaries,
            allow_inf=self.allow_inf,
            allow_none=self.allow_none and not self.sequence,
            unit=self.unit,
        )

    @property
    def type_name(self) -> str:
        """``int``, ``float``, ``bool`` or ``list of int``."""
        base = self.type.__name__
        return f"list of {base}" if self.sequence else base


class Policy:
    """A batching policy: subclasses declare ``name``, ``iteration_level`` and ``knobs``.

    ``Policy(**options)`` checks every option against :attr:`knobs` (an unknown name is an
    InputError listing the valid ones) and stores it as an attribute; :meth:`validate` then
    checks options against each other. The engine's calls are documented on each method.
    """

    name: ClassVar[str] = ""
    iteration_level: ClassVar[bool] = False
    knobs: ClassVar[tuple[Knob, ...]] = ()

    def __init__(self, **options: Any) -> None:
        cls = type(self)
        known = {k.name: k for k in cls.knobs}
        for opt in options:
            if opt not in known:
                raise InputError(
                    f"unknown option for policy '{cls.name or cls.__name__}'; valid options: "
                    f"{', '.join(known) or '(none)'}",
                    field=opt,
                )
        for knob in cls.knobs:
            value = options[knob.name] if knob.name in options else knob.default
            setattr(self, knob.name, knob.check(value))
        self.validate()

    @classmethod
    def padded(cls) -> bool:
        """True for request-level (padded) batching, False for iteration-level scheduling."""
        return not cls.iteration_level

    @classmethod
    def summary_line(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or cls.__name__).strip().splitlines()[0]

    def validate(self) -> None:
        """Check the options against each other (after each was checked on its own)."""

    def options(self) -> dict[str, Any]:
        """The policy's options, in declaration order (defaults filled in)."""
        return {k.name: getattr(self, k.name) for k in type(self).knobs}

    # -- the engine's calls -------------------------------------------------------------------

    def setup(self, state: SimState) -> None:
        """Prepare for a run over ``state`` (check the requests can be served at all)."""

    def on_arrivals(self, state: SimState, idx: np.ndarray) -> None:
        """Requests ``idx`` (positions, in arrival order) arrived since the last call."""
        raise NotImplementedError

    def next_batch(self, state: SimState) -> Batch | None:
        """The unit of work to run now, starting at ``state.clock``; None if nothing can."""
        raise NotImplementedError

    def wake_time(self, state: SimState) -> float:
        """Earliest time (ms) the policy may start something without a new arrival."""
        return INF

    def flush(self, state: SimState) -> bool:
        """No arrival can come: start what waits. True if that made a batch possible."""
        return False

    def on_batch_end(self, state: SimState, batch: Batch) -> None:
        """Called with the clock at the batch's end (after its results are recorded)."""


POLICIES: Registry[type[Policy]] = Registry(Policy, "policy")
"""The registered policies by name (``register_policy`` adds one)."""


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Add a :class:`Policy` subclass to :data:`POLICIES` under its ``name`` (a decorator).

    The class must declare a name and well-formed knobs (each default passes its own check).
    """
    POLICIES.check(cls)
    names = [k.name for k in cls.knobs]
    if len(set(names)) != len(names) or not all(isinstance(k, Knob) for k in cls.knobs):
        raise InputError(f"policy {cls.name!r}: knobs must be Knob objects with unique names")
    for knob in cls.knobs:
        if not knob.name.isidentifier():
            raise InputError(f"policy {cls.name!r}: knob name {knob.name!r} is not an identifier")
        knob.check(knob.default)
    return POLICIES.register(cls)


def get_policy(name: str) -> type[Policy]:
    """The registered policy class ``name`` (case-insensitive); InputError listing them."""
    return POLICIES.lookup(name)


def make_policy(name: str | Policy, **options: Any) -> Policy:
    """A policy by name from :data:`POLICIES`, with its options checked (InputError names the
    unknown option and lists the valid ones); a :class:`Policy` instance is returned as is."""
    if isinstance(name, Policy):
        if options:
            raise InputError(
                f"options {sorted(options)} given with a Policy instance; set them on it",
                field="policy",
            )
        return name
    return get_policy(name)(**options)


def explorer_sliders(policies: Sequence[str]) -> dict[str, tuple[Slider, list[tuple[str, str]]]]:
    """The policy explorer's controls for ``policies``: slider name -> (the slider, the
    ``(policy, knob)`` pairs it sets), in order of first appearance."""
    out: dict[str, tuple[Slider, list[tuple[str, str]]]] = {}
    for policy in policies:
        cls = get_policy(policy)
        for knob in cls.knobs:
            slider = knob.explorer
            if slider is None:
                continue
            if slider.name not in out:
                out[slider.name] = (slider, [])
            elif out[slider.name][0] != slider:
                raise InputError(
                    f"policies declare two different explorer sliders named {slider.name!r}",
                    field="policies",
                )
            out[slider.name][1].append((cls.name, knob.name))
    return out


def explorer_options(policy: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``policy`` set by the explorer's control ``values`` (slider name ->
    value)."""
    cls = get_policy(policy)
    return {
        k.name: values[k.explorer.name]
        for k in cls.knobs
        if k.explorer is not None and k.explorer.name in values
    }


#: The batch-size limit of every policy (static: batch_size; dynamic: max_batch_size;
#: continuous: max_num_seqs), one control in the policy explorer.
BATCH_LIMIT = Slider(
    "max_num_seqs",
    int,
    64,
    min_val=1,
    max_val=512,
    step=1,
    unit="sequences",
    help="the batch-size limit",
)
#: The longest wait before a partial batch starts (static: timeout_ms; dynamic: max_wait_ms).
MAX_WAIT = Slider(
    "max_wait_ms",
    float,
    50.0,
    min_val=0.0,
    max_val=1000.0,
    step=5.0,
    unit="ms",
    help="the longest wait before a partial batch starts",
)
