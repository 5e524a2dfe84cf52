"""Interactive explorers: ipywidgets controls around one plotly ``FigureWidget``.

Each widget has a pure *state-to-view* function that the tests (and chapters) can call directly:

* :func:`shape_explorer_state` -> :class:`ExplorerView`: shapes from a grid family (or explicit
  boundaries), the ``plan.bucketed_plan`` they give, its evaluation, a metrics table, the figure
  of :func:`batchlab.plots.shape_buckets_figure`, and a ``message`` (no exception) when the
  settings are invalid.
* :func:`cost_explorer_state` -> :class:`CostView`: a plan evaluated under changed cost-model
  coefficients, next to the unchanged model, with the figure of
  :func:`batchlab.plots.cost_latency_parts_figure`.
* :func:`policy_explorer_state` -> :class:`PolicyView`: simulations of batching policies
  (``batchlab.simulate``) for the controls the policies declare on their knobs (with the
  built-ins: ``max_num_seqs``, ``max_num_batched_tokens``, ``max_wait_ms`` and chunked
  prefill), a metrics table and the figure of :func:`batchlab.plots.policy_dashboard_figure`.

The widgets :func:`shape_explorer`, :func:`cost_explorer` and :func:`policy_explorer` call these
functions from their ``observe`` callbacks (sliders use ``continuous_update=False``) and copy the
new figure's trace data into their ``FigureWidget`` inside one ``batch_update()``. Invalid
settings show a message in the widget; they never raise.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from batchlab import tables
from batchlab.cost import CostCoefficients, CostModel, get_cost_model
from batchlab.errors import BatchlabError, InputError
from batchlab.evaluate import Evaluation, evaluate
from batchlab.planner import LIMIT_METRICS, Limits
from batchlab.plots import cost_latency_parts_figure, shape_buckets_figure
from batchlab.shapes import GRID_FAMILIES, align, power_of_two_grid, shape_grid
from batchlab.workload import validate_requests

__all__ = [
    "COEFFICIENT_SLIDERS",
    "figure_widget",
    "plain_data",
    "CostExplorer",
    "CostView",
    "ExplorerView",
    "FAMILIES",
    "METRIC_UNITS",
    "SLOExplorer",
    "SLOView",
    "ShapeExplorer",
    "cost_explorer",
    "cost_explorer_state",
    "shape_explorer",
    "shape_explorer_state",
    "slo_explorer",
    "slo_explorer_state",
]

#: Shape families of the explorer: the grid families of ``shapes`` and ``custom`` boundaries.
FAMILIES = (*GRID_FAMILIES, "custom")

#: Unit of each metric of the explorers' metrics tables.
METRIC_UNITS = {
    "n_shapes": "shapes",
    "pad_ratio": "padding / useful tokens",
    "total_cost": "cost units",
    "cost_overhead": "cost units",
    "cost_compile": "cost units",
    "cost_prefill": "cost units",
    "cost_decode": "cost units",
    "n_batches": "batches",
    "max_batch_size": "requests",
    "p50_latency_ms": "ms",
    "p95_latency_ms": "ms",
    "p99_latency_ms": "ms",
    "sequential_ms": "ms",
}
_METRIC_COLUMNS = ["metric", "value", "unit", "limit", "met"]


# --------------------------------------------------------------------------------------------
# shape explorer: state -> view


class _ViewStatus:
    """``ok``: True when the view has no ``message`` (the setting was valid and computed)."""

    message: str | None

    @property
    def ok(self) -> bool:
        """True when the setting was valid and everything was computed (no message)."""
        return self.message is None


@dataclass(frozen=True, eq=False)
class ExplorerView(_ViewStatus):
    """What the shape explorer shows for one setting.

    ``shapes``: the seq_align values (tokens) in use (as given when they are invalid);
    ``plan`` / ``evaluation``: the bucketed plan and its evaluation (None when invalid);
    ``metrics``: columns ``metric, value, unit, limit, met`` (empty when invalid);
    ``violations``: the limits broken, ``{limit: (value reached, limit)}``;
    ``message``: why the setting is invalid, else None; ``figure``: the figure to show.
    """

    shapes: tuple[int, ...]
    family: str
    k: int | None
    gen_bucket_size: int | None
    plan: pd.DataFrame | None
    evaluation: Evaluation | None
    metrics: pd.DataFrame
    violations: Mapping[str, tuple[float, float]]
    message: str | None
    figure: go.Figure
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def limits_met(self) -> bool | None:
        """True when every limit is met, False when one is broken, None when invalid."""
        return None if self.evaluation is None else not self.violations


def _whole(value: object) -> int | None:
    """``value`` as an int when it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        as_int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    try:
        return as_int if as_int == value else None
    except (TypeError, ValueError):
        return None


def _check_boundaries(
    boundaries: Sequence[object], granularity: int, need: int, longest: int
) -> tuple[tuple[int, ...], str | None]:
    """Shapes from explicit boundaries, or the reason they are invalid."""
    values: list[int] = []
    for i, b in enumerate(boundaries, start=1):
        v = _whole(b)
        if v is None or v <= 0:
            return tuple(values), f"boundary {i} = {b!r} is not a positive whole number of tokens"
        values.append(v)
    shapes = tuple(values)
    if not shapes:
        return shapes, "give at least one shape boundary"
    for i, v in enumerate(shapes, start=1):
        if v % granularity:
            return shapes, (
                f"boundary {i} = {v} tokens is not a multiple of the granularity {granularity}"
            )
        if i > 1 and v <= shapes[i - 2]:
            return shapes, (
                f"boundary {i} = {v} tokens is not above boundary {i - 1} = {shapes[i - 2]} "
                "tokens: boundaries must increase"
            )
    if shapes[-1] < need:
        return shapes, (
            f"the shapes do not cover the longest prompt: the largest shape is {shapes[-1]} "
            f"tokens, the longest prompt ({longest} tokens) needs {need}"
        )
    return shapes, None


def _as_limits(limits: Limits | Mapping[str, object] | None) -> Limits:
    if limits is None:
        return Limits()
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, Mapping):
        return Limits.from_mapping(limits, source="limits")
    raise InputError(
        f"limits must be a Limits or a mapping, got {type(limits).__name__}", field="limits"
    )


def _empty_metrics() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in _METRIC_COLUMNS})


def _shape_metrics(evaluation: Evaluation, limits: Limits) -> pd.DataFrame:
    """The explorer's metrics table: value, unit, limit and whether it is met."""
    summary = evaluation.summary()
    bound_of = {metric: getattr(limits, name) for name, metric in LIMIT_METRICS.items()}
    largest = int(evaluation.batches["size"].max())
    rows = []
    for metric in (
        "n_shapes",
        "pad_ratio",
        "total_cost",
        "cost_overhead",
        "cost_compile",
        "cost_prefill",
        "cost_decode",
        "n_batches",
        "max_batch_size",
        "p95_latency_ms",
        "sequential_ms",
    ):
        value = largest if metric == "max_batch_size" else summary[metric]
        limit = limits.max_batch_size if metric == "max_batch_size" else bound_of.get(metric)
        met = None if limit is None else bool(value <= limit * (1 + 1e-12))
        rows.append([metric, value, METRIC_UNITS[metric], limit, met])
    return pd.DataFrame(rows, columns=_METRIC_COLUMNS, dtype=object)


def shape_explorer_state(
    requests: pd.DataFrame,
    *,
    family: str | None = None,
    k: int = 4,
    boundaries: Sequence[int] | None = None,
    gen_bucket_size: int | None = None,
    cost_model: str | CostCoefficients | CostModel = "static-graph",
    limits: Limits | Mapping[str, object] | None = None,
    n_bins: int = 60,
) -> ExplorerView:
    """Evaluate one setting of the shape explorer; invalid settings give a ``message``, no error.

    Shapes: ``family`` (one of ``shapes.GRID_FAMILIES``) with ``k`` gives
    ``shapes.shape_grid(family, prompt_len, k, g)``; ``family='custom'`` (the default when
    ``boundaries`` is given) uses ``boundaries``, the seq_align values in tokens, which must be
    multiples of the cost model's granularity ``g``, strictly increasing, and cover the longest
    aligned prompt. ``gen_bucket_size`` (tokens, None = no gen buckets) and the limits'
    ``max_batch_size`` go to ``plan.bucketed_plan``; the plan is evaluated under ``cost_model``
    and checked against ``limits``.

    Raises only for a bad request table, cost model or limits (``InputError``).
    """
    cm = get_cost_model(cost_model)
    lim = _as_limits(limits)
    req = validate_requests(requests)
    g = cm.granularity
    prompt = req["prompt_len"].to_numpy(dtype=np.int64)
    longest = int(prompt.max())
    need = int(align(longest, g))
    if family is None:
        family = "custom" if boundaries is not None else "optimal"
    k_int = _whole(k)
    size = None if gen_bucket_size is None else _whole(gen_bucket_size)

    shapes: tuple[int, ...] = ()
    message: str | None = None
    if family not in FAMILIES:
        message = f"unknown shape family {family!r}; choose one of {', '.join(FAMILIES)}"
    elif family == "custom":
        if boundaries is None:
            message = "family 'custom' needs the shape boundaries"
        else:
            shapes, message = _check_boundaries(list(boundaries), g, need, longest)
    elif boundaries is not None:
        message = f"boundaries are only used with family 'custom', not {family!r}"
    elif k_int is None or k_int < 1:
        message = f"the number of shapes k must be a whole number >= 1, got {k!r}"
    else:
        shapes = tuple(int(s) for s in shape_grid(family, prompt, k_int, g))
    if message is None and gen_bucket_size is not None and (size is None or size < 1):
        message = (
            f"the gen bucket size must be a whole number of tokens >= 1 (or None), "
            f"got {gen_bucket_size!r}"
        )

    plan = evaluation = None
    violations: dict[str, tuple[float, float]] = {}
    metrics = _empty_metrics()
    if message is None:
        from batchlab.plan import bucketed_plan

        try:
            plan = bucketed_plan(
                req,
                np.asarray(shapes, dtype=np.int64),
                gen_bucket_size=size,
                max_batch_size=None if lim.max_batch_size is None else int(lim.max_batch_size),
                granularity=g,
            )
            evaluation = evaluate(req, plan, cm)
        except BatchlabError as err:  # a setting the checks above did not foresee
            plan = evaluation = None
            message = str(err)
    if evaluation is not None:
        violations = lim.violations(evaluation.summary())
        metrics = _shape_metrics(evaluation, lim)
    figure = shape_buckets_figure(req, shapes, evaluation, cost_model=cm, n_bins=n_bins)
    return ExplorerView(
        shapes=shapes,
        family=family,
        k=k_int,
        gen_bucket_size=size,
        plan=plan,
        evaluation=evaluation,
        metrics=metrics,
        violations=violations,
        message=message,
        figure=figure,
        settings={
            "family": family,
            "k": k,
            "boundaries": None if boundaries is None else list(boundaries),
            "gen_bucket_size": gen_bucket_size,
            "cost_model": cm.name,
            "limits": lim.as_dict(),
        },
    )


# --------------------------------------------------------------------------------------------
# cost explorer: state -> view

#: Coefficients with a slider in the cost explorer: (cost fields, latency fields).
COEFFICIENT_SLIDERS = (
    (
        "prefill_cost_quad",
        "prefill_cost_lin",
        "decode_cost_quad",
        "decode_cost_lin",
        "batch_cost",
        "compile_cost_quad",
        "compile_cost_lin",
    ),
    (
        "prefill_ms_quad",
        "prefill_ms_lin",
        "decode_ms_quad",
        "decode_ms_lin",
        "batch_ms",
        "compile_ms",
    ),
)
_COST_METRICS = (
    ("cost_overhead", "cost units"),
    ("cost_compile", "cost units"),
    ("cost_prefill", "cost units"),
    ("cost_decode", "cost units"),
    ("total_cost", "cost units"),
    ("p50_latency_ms", "ms"),
    ("p95_latency_ms", "ms"),
    ("p99_latency_ms", "ms"),
    ("sequential_ms", "ms"),
)


@dataclass(frozen=True, eq=False)
class CostView(_ViewStatus):
    """What the cost explorer shows for one set of coefficients.

    ``reference``: the plan under the unchanged cost model; ``cost_model`` / ``evaluation``: the
    changed model and the plan under it (None when the coefficients are invalid); ``metrics``:
    columns ``metric, reference, current, unit, change_pct``; ``message``: why the coefficients
    are invalid, else None; ``figure``: stacked cost and latency parts, one bar per model.
    """

    cost_model: CostModel | None
    evaluation: Evaluation | None
    reference: Evaluation
    metrics: pd.DataFrame
    message: str | None
    figure: go.Figure


def cost_explorer_state(
    requests: pd.DataFrame,
    plan: pd.DataFrame,
    *,
    cost_model: str | CostCoefficients | CostModel = "static-graph",
    coefficients: Mapping[str, object] | None = None,
    reference: Evaluation | None = None,
) -> CostView:
    """Evaluate ``plan`` under ``cost_model`` with some ``coefficients`` changed.

    The figure (:func:`batchlab.plots.cost_latency_parts_figure`) has one bar for the unchanged
    model (named ``<name> (reference)``) and one for the changed model (``changed``); invalid
    coefficients (negative, unknown names, ...) give a ``message`` and only the reference bar.
    ``reference`` may pass the unchanged evaluation to skip recomputing it. A plan that does not
    fit the requests raises (``VerificationError``), as in ``evaluate``.
    """
    base = get_cost_model(cost_model)
    ref = reference if reference is not None else evaluate(requests, plan, base)
    ref_name = f"{base.name} (reference)"
    message = None
    model = ev = None
    try:
        model = base.with_coefficients(**dict(coefficients or {}))
        ev = evaluate(requests, plan, model)
    except BatchlabError as err:
        model = ev = None
        message = f"invalid coefficients: {err}"
    except TypeError as err:  # a coefficient of the wrong type (e.g. a string)
        model = ev = None
        message = f"invalid coefficients: {err}"
    items: dict[str, Evaluation] = {ref_name: ref}
    if ev is not None:
        items["changed"] = ev
    figure = cost_latency_parts_figure(items, title="Cost and latency by part")
    ref_summary = ref.summary()
    cur_summary = ev.summary() if ev is not None else {}
    rows = []
    for metric, unit in _COST_METRICS:
        a = float(ref_summary[metric])
        b = float(cur_summary[metric]) if ev is not None else math.nan
        change = (b / a - 1.0) * 100.0 if a > 0 and ev is not None else math.nan
        rows.append([metric, a, b, unit, change])
    metrics = pd.DataFrame(rows, columns=["metric", "reference", "current", "unit", "change_pct"])
    return CostView(model, ev, ref, metrics, message, figure)


# --------------------------------------------------------------------------------------------
# helpers shared by the widgets


def plain_data(value: Any) -> Any:
    """``value`` with every numpy array (at any depth of dicts, lists and tuples) as a list and
    every numpy scalar as a Python number, NaN as None (a gap, as plotly draws NaN).

    What a ``FigureWidget`` is given must be plain: plotly.js hands the values it received as
    typed arrays back to the kernel as index-keyed objects (``{'0': ..., '1': ...}``), and
    plotly's ``FigureWidget._remove_overlapping_props`` then tests a numpy array for truth
    ("The truth value of an array ... is ambiguous"), a traceback in JupyterLab's Log Console.
    """
    if isinstance(value, np.ndarray):
        return [plain_data(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def figure_widget(figure: go.Figure) -> go.FigureWidget:
    """A ``FigureWidget`` of ``figure`` holding only plain data (:func:`plain_data`)."""
    return go.FigureWidget(plain_data(figure.to_plotly_json()))


def _sync_figure(target: go.FigureWidget, source: go.Figure) -> None:
    """Copy the data of ``source`` into ``target`` in one ``batch_update()``, as plain lists
    (:func:`plain_data`).

    Traces are updated in place (x, y, text, customdata); the layout's shapes (limit lines) and
    annotations follow. When the number of traces changed, the traces are replaced.
    """
    with target.batch_update():
        if len(target.data) != len(source.data) or any(
            t.type != s.type for t, s in zip(target.data, source.data, strict=True)
        ):
            target.data = ()
            target.add_traces([plain_data(t.to_plotly_json()) for t in source.data])
        else:
            for t, s in zip(target.data, source.data, strict=True):
                t.x = plain_data(s.x)
                t.y = plain_data(s.y)
                t.name = s.name
                if "text" in s:
                    t.text = plain_data(s.text)
                if "customdata" in s:
                    t.customdata = plain_data(s.customdata)
        layout = plain_data(source.layout.to_plotly_json())
        target.layout.shapes = layout.get("shapes", ())
        target.layout.annotations = layout.get("annotations", ())
        target.layout.title = layout.get("title", {})


def _table_html(table: pd.DataFrame, units: Mapping[str, str] | None = None) -> str:
    """A metrics table as the widgets show it: :func:`batchlab.tables.table` (one number format
    per column, or per row in a metric table; units; "—" for no limit)."""
    return tables.table(table, units=units, index=False)._repr_html_()


def _message_html(message: str | None) -> str:
    if message is None:
        return ""
    return f"<div style='color:#B00020;font-weight:bold'>⚠ {html.escape(message)}</div>"


# --------------------------------------------------------------------------------------------
# shape explorer widget


def _slider(
    cls: type[widgets.Widget], *, description_width: str, width: str, **options: Any
) -> widgets.Widget:
    """An ipywidgets slider of class ``cls`` (``IntSlider``, ``FloatSlider``,
    ``FloatLogSlider``) with ``options``, that reports its value on release
    (``continuous_update=False``); its label ``description_width`` wide and the whole ``width``
    wide (CSS lengths, e.g. ``"480px"``)."""
    return cls(
        continuous_update=False,
        style={"description_width": description_width},
        layout=widgets.Layout(width=width),
        **options,
    )


class _Explorer(widgets.VBox):
    """What the explorers share: a ``view`` computed from the controls (:meth:`_compute`),
    shown in ``figure`` and the HTML parts (:meth:`_show_view`), recomputed on every change."""

    def _compute(self) -> Any:
        raise NotImplementedError

    def _show_view(self) -> None:
        raise NotImplementedError

    def _first_view(self) -> None:
        """Compute the first view and show it in a new ``figure`` and the HTML parts."""
        self.view = self._compute()
        self.figure = figure_widget(self.view.figure)
        self._show_view()

    def _refresh_on_change(self, controls: Iterable[widgets.Widget]) -> None:
        """Recompute the view whenever the value of one of ``controls`` changes."""
        for control in controls:
            control.observe(self._on_change, names="value")

    def refresh(self) -> Any:
        """Recompute the view for the current controls and update the figure and tables."""
        self.view = self._compute()
        _sync_figure(self.figure, self.view.figure)
        self._show_view()
        return self.view

    def _on_change(self, change: Mapping[str, Any]) -> None:
        self.refresh()


class ShapeExplorer(_Explorer):
    """The shape explorer (see :func:`shape_explorer`). Parts: ``figure`` (the FigureWidget),
    ``controls`` (name -> widget; ``controls['boundaries']`` is a tuple of sliders),
    ``metrics_html``, ``message_html`` and the current ``view`` (:class:`ExplorerView`)."""

    def __init__(
        self,
        requests: pd.DataFrame,
        *,
        cost_model: str | CostCoefficients | CostModel = "static-graph",
        limits: Limits | Mapping[str, object] | None = None,
        max_k: int = 16,
        family: str = "optimal",
        k: int = 4,
        gen_bucket_size: int | None = None,
        n_bins: int = 60,
    ) -> None:
        mk = _whole(max_k)
        if mk is None or mk < 1:
            raise InputError(f"must be a whole number >= 1, got {max_k!r}", field="max_k")
        if family not in FAMILIES:
            raise InputError(f"unknown family {family!r}; one of {FAMILIES}", field="family")
        self._cm = get_cost_model(cost_model)
        self._limits = _as_limits(limits)
        self._requests = validate_requests(requests)
        self._n_bins = n_bins
        g = self._cm.granularity
        prompt = self._requests["prompt_len"].to_numpy(dtype=np.int64)
        gen = self._requests["gen_len"].to_numpy(dtype=np.int64)
        self._prompt = prompt
        longest = int(prompt.max())
        top = max(int(align(longest, g)), int(power_of_two_grid(longest, g)[-1]))
        max_gen = int(gen.max())
        style = {"description_width": "150px"}
        k_given = _whole(k)
        if k_given is None or k_given < 1:
            raise InputError(f"must be a whole number >= 1, got {k!r}", field="k")
        k0 = min(k_given, mk)

        self._family = widgets.Dropdown(
            options=list(FAMILIES), value=family, description="shape family", style=style
        )
        int_slider = functools.partial(
            _slider, widgets.IntSlider, description_width="150px", width="480px"
        )
        self._k = int_slider(value=k0, min=1, max=mk, description="shapes k")
        gb = max_gen if gen_bucket_size is None else int(gen_bucket_size)
        self._gen = int_slider(
            value=min(max(1, gb), max_gen), min=1, max=max_gen, description="gen bucket (tokens)"
        )
        self._bounds = tuple(
            int_slider(
                value=min(top, g * (i + 1)),
                min=g,
                max=top,
                step=g,
                description=f"shape {i + 1} (tokens)",
            )
            for i in range(mk)
        )
        self.controls: dict[str, Any] = {
            "family": self._family,
            "k": self._k,
            "gen_bucket_size": self._gen,
            "boundaries": self._bounds,
        }
        self.message_html = widgets.HTML()
        self.metrics_html = widgets.HTML()
        self._syncing = False
        if family == "custom":
            self._start_custom(k0)
        self._first_view()
        self._sync_boundary_sliders()
        self._family.observe(self._on_family, names="value")
        self._k.observe(self._on_k, names="value")
        self._refresh_on_change([self._gen, *self._bounds])
        hint = widgets.HTML(
            "<small>gen bucket: requests of one shape are batched by gen_len buckets of this "
            f"size; {max_gen} (the longest gen_len) = no gen buckets. Choose family "
            "<i>custom</i> to move the shape boundaries.</small>"
        )
        left = widgets.VBox([self._family, self._k, self._gen])
        right = widgets.VBox(list(self._bounds))
        super().__init__(
            [
                widgets.HBox([left, right], layout=widgets.Layout(flex_flow="row wrap")),
                hint,
                self.message_html,
                self.figure,
                self.metrics_html,
            ]
        )

    # -- state ---------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`shape_explorer_state` for the current controls."""
        family = self._family.value
        out: dict[str, Any] = {"family": family, "k": self._k.value}
        out["gen_bucket_size"] = self._gen.value
        if family == "custom":
            out["boundaries"] = [s.value for s in self._bounds[: self._k.value]]
        return out

    def _compute(self) -> ExplorerView:
        return shape_explorer_state(
            self._requests,
            cost_model=self._cm,
            limits=self._limits,
            n_bins=self._n_bins,
            **self.settings(),
        )

    def _show_view(self) -> None:
        view = self.view
        self.message_html.value = _message_html(view.message)
        if view.evaluation is None:
            self.metrics_html.value = ""
            return
        if view.violations:
            broken = ", ".join(
                f"{name} ({tables.format_value(v)} > {tables.format_value(b)})"
                for name, (v, b) in view.violations.items()
            )
            status = f"<b style='color:#B00020'>limits broken: {html.escape(broken)}</b>"
        else:
            status = "<b style='color:#2CA02C'>all limits met</b>"
        shapes = ", ".join(str(s) for s in view.shapes)
        self.metrics_html.value = (
            f"<div>shapes (tokens): {shapes}</div>{_table_html(view.metrics)}<div>{status}</div>"
        )

    # -- callbacks -----------------------------------------------------------------------------
    def _sync_boundary_sliders(self) -> None:
        """Show one boundary slider per shape; they are editable only for family 'custom'."""
        custom = self._family.value == "custom"
        n = self._k.value if custom else len(self.view.shapes)
        self._syncing = True
        try:
            if not custom:
                for slider, s in zip(self._bounds, self.view.shapes, strict=False):
                    slider.value = int(s)
            for i, slider in enumerate(self._bounds):
                slider.disabled = not custom
                slider.layout.display = None if i < n else "none"
            self._k.disabled = self._family.value == "power_of_two"
        finally:
            self._syncing = False

    def _start_custom(self, k: int) -> None:
        """A new number of custom shapes starts from the optimal shapes for that k (the largest
        repeated if there are fewer distinct aligned lengths than k)."""
        start = [int(s) for s in shape_grid("optimal", self._prompt, k, self._cm.granularity)]
        self._set_boundaries(start + [start[-1]] * (k - len(start)))

    def _set_boundaries(self, values: Sequence[int]) -> None:
        self._syncing = True
        try:
            for slider, v in zip(self._bounds, values, strict=False):
                slider.value = int(v)
        finally:
            self._syncing = False

    def _on_family(self, change: Mapping[str, Any]) -> None:
        if self._syncing:
            return
        if change["new"] == "custom" and self.view.shapes:
            # start the custom boundaries from the shapes shown so far
            shapes = list(self.view.shapes)[: len(self._bounds)]
            self._syncing = True
            try:
                self._k.value = len(shapes)
            finally:
                self._syncing = False
            self._set_boundaries(shapes)
        self.refresh()
        self._sync_boundary_sliders()

    def _on_k(self, change: Mapping[str, Any]) -> None:
        if self._syncing:
            return
        if self._family.value == "custom":
            self._start_custom(int(change["new"]))
        self.refresh()
        self._sync_boundary_sliders()

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if self._syncing:
            return
        self.refresh()


def shape_explorer(requests: pd.DataFrame, **options: Any) -> ShapeExplorer:
    """An interactive shape explorer for ``requests`` (a ``VBox``; display it in Jupyter).

    ``options``: those of :class:`ShapeExplorer` (``cost_model``, ``limits``, ``max_k``,
    ``family``, ``k``, ``gen_bucket_size`` in tokens, ``n_bins`` of the histogram).

    Controls: the shape family (a grid family or ``custom``), the number of shapes k (up to
    ``max_k``), one slider per shape boundary (tokens; editable for ``custom``) and the
    gen-bucket size (tokens). Live: the prompt-length histogram with the shape boundaries, the
    padding per shape bucket, and a metrics table (pad ratio, cost and its parts, batches, p95
    latency, sequential time, limits met or not) of :func:`shape_explorer_state`.
    """
    return ShapeExplorer(requests, **options)


# --------------------------------------------------------------------------------------------
# cost explorer widget


class CostExplorer(_Explorer):
    """The cost explorer (see :func:`cost_explorer`). Parts: ``figure`` (the FigureWidget),
    ``controls`` (coefficient name -> slider), ``reset`` (button), ``metrics_html``,
    ``message_html`` and the current ``view`` (:class:`CostView`)."""

    def __init__(
        self,
        requests: pd.DataFrame,
        plan: pd.DataFrame,
        *,
        cost_model: str | CostCoefficients | CostModel = "static-graph",
    ) -> None:
        self._base = get_cost_model(cost_model)
        self._requests = validate_requests(requests)
        self._plan = plan
        self._reference = evaluate(self._requests, plan, self._base)
        defaults = self._base.coefficients.as_dict()
        self.controls: dict[str, widgets.Widget] = {}
        columns = []
        for group in COEFFICIENT_SLIDERS:
            sliders = []
            for name in group:
                value = float(defaults[name])
                common = dict(
                    step=0.01,
                    description=name,
                    readout_format=".3g",
                    description_width="130px",
                    width="420px",
                )
                if value > 0:
                    exponent = math.log10(value)
                    slider = _slider(
                        widgets.FloatLogSlider,
                        value=value,
                        base=10,
                        min=math.floor(exponent) - 2,
                        max=math.ceil(exponent) + 2,
                        **common,
                    )
                else:
                    slider = _slider(widgets.FloatSlider, value=0.0, min=0.0, max=1.0, **common)
                self.controls[name] = slider
                sliders.append(slider)
            columns.append(widgets.VBox(sliders))
        self.reset = widgets.Button(description="reset to preset")
        self.message_html = widgets.HTML()
        self.metrics_html = widgets.HTML()
        self._first_view()
        self._refresh_on_change(self.controls.values())
        self.reset.on_click(self._on_reset)
        self._resetting = False
        head = widgets.HTML(
            f"<b>Cost model {html.escape(self._base.name)}</b>: costs (left, cost units) and "
            "latencies (right, ms); each slider spans at least 1/100 to 100 times the preset value "
            "(log scale)."
        )
        super().__init__(
            [
                head,
                widgets.HBox(columns),
                self.reset,
                self.message_html,
                self.figure,
                self.metrics_html,
            ]
        )

    def coefficients(self) -> dict[str, float]:
        """The coefficients changed from the preset (name -> slider value)."""
        defaults = self._base.coefficients.as_dict()
        return {
            name: float(slider.value)
            for name, slider in self.controls.items()
            if float(slider.value) != float(defaults[name])
        }

    def _compute(self) -> CostView:
        return cost_explorer_state(
            self._requests,
            self._plan,
            cost_model=self._base,
            coefficients=self.coefficients(),
            reference=self._reference,
        )

    def _show_view(self) -> None:
        self.message_html.value = _message_html(self.view.message)
        self.metrics_html.value = _table_html(self.view.metrics)

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if getattr(self, "_resetting", False):
            return
        self.refresh()

    def _on_reset(self, _button: object = None) -> None:
        defaults = self._base.coefficients.as_dict()
        self._resetting = True
        try:
            for name, slider in self.controls.items():
                slider.value = float(defaults[name])
        finally:
            self._resetting = False
        self.refresh()


def cost_explorer(
    requests: pd.DataFrame,
    plan: pd.DataFrame,
    *,
    cost_model: str | CostCoefficients | CostModel = "static-graph",
) -> CostExplorer:
    """An interactive cost explorer (a ``VBox``): one slider per cost-model coefficient (cost
    and latency, on a log scale around the preset), live stacked bars of the cost parts and the
    latency parts of ``plan`` under the changed model next to the preset, and a metrics table
    (see :func:`cost_explorer_state`)."""
    return CostExplorer(requests, plan, cost_model=cost_model)


# --------------------------------------------------------------------------------------------
# policy explorer: batching-policy knobs -> simulated latency and throughput

__all__ += [
    "POLICY_METRICS",
    "PolicyExplorer",
    "PolicyView",
    "policy_controls",
    "policy_explorer",
    "policy_explorer_state",
]

#: Columns of the policy explorer's metrics table (``SimulationResult.summary()`` keys) and units.
POLICY_METRICS = (
    ("throughput_rps", "requests/s"),
    ("output_tokens_per_s", "tokens/s"),
    ("latency_p50_ms", "ms"),
    ("latency_p99_ms", "ms"),
    ("ttft_p99_ms", "ms"),
    ("tpot_p99_ms", "ms"),
    ("mean_batch_size", "sequences"),
    ("kv_util_peak", "share of blocks"),
    ("preemptions", "requests"),
)

_DEFAULT_POLICIES = ("dynamic", "continuous")


def policy_controls(policies: Sequence[str] = _DEFAULT_POLICIES) -> dict[str, Any]:
    """The explorer's controls for ``policies``, from their declared knobs: control name ->
    (:class:`batchlab.simulate.Slider`, the ``(policy, knob)`` pairs it sets), in order."""
    from batchlab.simulate.policies import explorer_sliders

    try:
        return explorer_sliders([str(p) for p in policies])
    except InputError as err:
        raise InputError(err.message, field="policies") from None


@dataclass(frozen=True, eq=False)
class PolicyView(_ViewStatus):
    """What the policy explorer shows for one setting of its controls.

    ``results``: policy name -> :class:`batchlab.simulate.SimulationResult` (the policies whose
    options were valid); ``metrics``: one row per simulated policy, columns ``policy`` and the
    :data:`POLICY_METRICS`; ``message``: why a setting (or a policy's options) is invalid, else
    None; ``figure``: :func:`batchlab.plots.policy_dashboard_figure` of ``results``;
    ``settings``: the controls' values as given.
    """

    results: Mapping[str, Any]
    metrics: pd.DataFrame
    message: str | None
    figure: go.Figure
    settings: Mapping[str, Any] = field(default_factory=dict)


def policy_explorer_state(
    requests: pd.DataFrame,
    *,
    policies: Sequence[str] = _DEFAULT_POLICIES,
    model: str | Any = "llama-2-7b",
    gpu: str | Any = "h100-sxm",
    rate: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    kv_blocks: int | None = None,
    step_time: Any = None,
    **controls: Any,
) -> PolicyView:
    """Simulate ``requests`` under each of ``policies`` with the explorer's controls.

    The controls are the explorer sliders the policies declare on their knobs
    (:func:`policy_controls`): with the built-in policies ``max_num_seqs`` (the batch-size
    limit: static ``batch_size``, dynamic/adaptive ``max_batch_size``, continuous
    ``max_num_seqs``), ``max_wait_ms`` (static ``timeout_ms``, dynamic/adaptive
    ``max_wait_ms``), ``max_num_batched_tokens`` and ``chunked_prefill`` (continuous). A
    control not given takes its declared default. Arrivals: the table's ``arrival_s``, or
    ``rate`` (requests/s, Poisson with ``seed``) or ``concurrency`` (closed loop); step times
    from ``step_time`` (a StepTimeModel or a measured table) or else the roofline of ``model``
    on ``gpu``; ``kv_blocks`` (and the default KV budget of ``model`` on ``gpu``) as in
    :func:`batchlab.simulate.simulate`.

    Invalid settings (for example a prompt longer than ``max_num_batched_tokens`` without
    chunked prefill, an unknown policy or control) give a ``message`` naming the policy, and
    that policy is left out; they never raise. Raises only for a bad request table
    (``InputError``).
    """
    from batchlab.plots import policy_dashboard_figure
    from batchlab.simulate import simulate
    from batchlab.simulate.policies import explorer_options

    req = validate_requests(requests)
    results: dict[str, Any] = {}
    problems: list[str] = []
    values: dict[str, Any] = {}
    try:
        sliders = policy_controls(policies)
    except InputError as err:
        sliders = {}
        problems.append(str(err))
    unknown = sorted(set(controls) - set(sliders))
    if unknown:
        problems.append(f"unknown control(s) {unknown}; controls: {', '.join(sliders)}")
    for name, (slider, _) in sliders.items():
        values[name] = controls[name] if name in controls else slider.default
    for policy in policies if sliders else ():
        try:
            options = explorer_options(str(policy), values)
            results[str(policy)] = simulate(
                req,
                str(policy),
                model=model,
                gpu=gpu,
                rate=rate,
                concurrency=concurrency,
                seed=seed,
                kv_blocks=kv_blocks,
                step_time=step_time,
                **options,
            )
        except BatchlabError as err:
            problems.append(f"{policy}: {err}")
    rows = []
    for name, res in results.items():
        summary = res.summary()
        rows.append([name, *(summary[m] for m, _ in POLICY_METRICS)])
    metrics = pd.DataFrame(rows, columns=["policy", *(m for m, _ in POLICY_METRICS)])
    figure = policy_dashboard_figure(results)
    return PolicyView(
        results=results,
        metrics=metrics,
        message="; ".join(problems) if problems else None,
        figure=figure,
        settings={
            **values,
            "policies": tuple(policies),
            "rate": rate,
            "concurrency": concurrency,
        },
    )


def _control_widget(slider: Any, value: Any, requests: pd.DataFrame) -> widgets.Widget:
    """The ipywidget of one declared control (a slider, or a checkbox for a switch)."""
    if slider.type is bool:
        return widgets.Checkbox(value=bool(value), description=slider.description)
    low, high = slider.range_for(requests, value)
    common = dict(
        value=value,
        min=low,
        max=high,
        step=slider.step,
        description=slider.description,
        description_width="190px",
        width="520px",
    )
    if slider.type is int:
        return _slider(widgets.IntSlider, **common)
    return _slider(widgets.FloatSlider, readout_format=".0f", **common)


class PolicyExplorer(_Explorer):
    """The policy explorer (see :func:`policy_explorer`). Parts: ``figure`` (the FigureWidget),
    ``controls`` (control name -> widget, one per explorer slider the policies declare),
    ``metrics_html``, ``message_html`` and the current ``view`` (:class:`PolicyView`)."""

    def __init__(
        self,
        requests: pd.DataFrame,
        *,
        model: str | Any = "llama-2-7b",
        gpu: str | Any = "h100-sxm",
        policies: Sequence[str] = _DEFAULT_POLICIES,
        rate: float | None = None,
        concurrency: int | None = None,
        seed: int = 0,
        kv_blocks: int | None = None,
        step_time: Any = None,
        **controls: Any,
    ) -> None:
        self._requests = validate_requests(requests)
        sliders = policy_controls(policies)
        unknown = sorted(set(controls) - set(sliders))
        if unknown:
            raise InputError(
                f"unknown control(s) {unknown}; controls: {', '.join(sliders)}", field=unknown[0]
            )
        self._fixed = {
            "model": model,
            "gpu": gpu,
            "policies": tuple(str(p) for p in policies),
            "rate": rate,
            "concurrency": concurrency,
            "seed": seed,
            "kv_blocks": kv_blocks,
            "step_time": step_time,
        }
        self.controls: dict[str, widgets.Widget] = {}
        for name, (slider, _) in sliders.items():
            given = controls.get(name)
            value = slider.check(given) if given is not None else None
            if value is None:
                value = slider.start_for(self._requests)
            self.controls[name] = _control_widget(slider, value, self._requests)
        self.message_html = widgets.HTML()
        self.metrics_html = widgets.HTML()
        self._first_view()
        self._refresh_on_change(self.controls.values())
        n = len(self._requests)
        if rate is not None:
            load = f"Poisson arrivals at {float(rate):g} requests/s (seed {seed})"
        elif concurrency is not None:
            load = f"closed loop of {int(concurrency)} clients"
        else:
            load = "the table's arrival times"
        sets = "; ".join(
            f"{name} sets {', '.join(f'{p}.{k}' for p, k in pairs)}"
            for name, (_, pairs) in sliders.items()
        )
        head = widgets.HTML(
            f"<b>Policy explorer</b>: {n:,} requests, {html.escape(load)}, "
            f"{html.escape(str(getattr(model, 'name', model)))} on "
            f"{html.escape(str(getattr(gpu, 'name', gpu)))} "
            f"({'roofline' if step_time is None else 'given'} step times). "
            f"<small>{html.escape(sets)}.</small>"
        )
        super().__init__(
            [
                head,
                widgets.VBox(list(self.controls.values())),
                self.message_html,
                self.figure,
                self.metrics_html,
            ]
        )

    def settings(self) -> dict[str, Any]:
        """The controls of :func:`policy_explorer_state` for the current widgets."""
        return {name: control.value for name, control in self.controls.items()}

    def _compute(self) -> PolicyView:
        return policy_explorer_state(self._requests, **self.settings(), **self._fixed)

    def _show_view(self) -> None:
        self.message_html.value = _message_html(self.view.message)
        self.metrics_html.value = _table_html(self.view.metrics, dict(POLICY_METRICS))


def policy_explorer(requests: pd.DataFrame, **options: Any) -> PolicyExplorer:
    """An interactive batching-policy explorer (a ``VBox``; display it in Jupyter).

    ``options``: those of :class:`PolicyExplorer` (``model``, ``gpu``, ``policies``, ``rate``,
    ``concurrency``, ``seed``, ``kv_blocks``, ``step_time``, and starting values of the
    controls by name).

    One control per explorer slider that ``policies`` declare on their knobs
    (:func:`policy_controls`; with the built-ins: ``max_num_seqs`` in sequences,
    ``max_num_batched_tokens`` in tokens per step, starting at the library default,
    ``max_wait_ms`` in ms, and a ``chunked_prefill`` switch), starting at ``controls`` or their
    declared defaults; sliders use ``continuous_update=False``. Each change re-simulates
    ``requests`` under ``policies`` (:func:`policy_explorer_state`) and updates, in one
    ``batch_update()``, the latency CDF, latency percentiles and throughput of
    :func:`batchlab.plots.policy_dashboard_figure`, and the metrics table below it.
    """
    return PolicyExplorer(requests, **options)


# --------------------------------------------------------------------------------------------
# SLO explorer: the fewest GPUs as one limit of an SLO moves (batchlab.capacity)


@dataclass(frozen=True, eq=False)
class SLOView(_ViewStatus):
    """What the SLO explorer shows for one value of its limit.

    ``slo``: the SLO with the limit set; ``answer``: the fewest GPUs of each GPU type at each
    traffic level (columns ``traffic``, ``gpu``, ``gpus``; NaN where no count of the table
    meets it); ``message``: why the value is invalid or the answer uncertain, else None;
    ``figure``: :func:`batchlab.plots.fewest_gpus_figure` for that SLO.
    """

    slo: Any
    answer: pd.DataFrame
    message: str | None
    figure: go.Figure


def slo_explorer_state(
    table: pd.DataFrame, slo: Any, *, metric: str = "ttft_p99_ms", value: float | None = None
) -> SLOView:
    """The fewest GPUs meeting ``slo`` with its ``metric`` limit set to ``value`` (ms; None
    keeps it), read from a :func:`batchlab.capacity.replica_table` (no simulation). A value
    looser than the SLO the table was built with (``table.attrs["slo"]``) gives a message:
    runs stopped for missing that SLO might meet the looser one. Invalid values give a message,
    never an exception."""
    from batchlab.capacity import fewest_in_table
    from batchlab.plots import fewest_gpus_figure

    message = None
    try:
        current = slo if value is None else slo.replace(**{metric: float(value)})
        built = table.attrs.get("slo")
        limit = None if built is None else built.limits().get(metric)
        if table.attrs.get("early_stop", True) and limit is not None and value is not None:
            if float(value) > limit:
                message = (
                    f"the table stopped runs once they missed {metric} <= {limit:g} ms: above "
                    "that the answer may be too high"
                )
        read = fewest_in_table(table, current)
        answer = read.groupby(["traffic", "gpu"], sort=False)["gpus"].min().reset_index()
        figure = fewest_gpus_figure(table, current, metric=metric)
    except BatchlabError as err:
        return SLOView(slo=slo, answer=pd.DataFrame(), message=str(err), figure=go.Figure())
    return SLOView(slo=current, answer=answer, message=message, figure=figure)


class SLOExplorer(_Explorer):
    """The SLO explorer (see :func:`slo_explorer`). Parts: ``slider`` (the limit, ms),
    ``figure`` (the FigureWidget), ``answer_html``, ``message_html`` and the current ``view``
    (:class:`SLOView`)."""

    def __init__(
        self,
        table: pd.DataFrame,
        slo: Any,
        *,
        metric: str = "ttft_p99_ms",
        low: float | None = None,
        high: float | None = None,
        step: float | None = None,
    ) -> None:
        self._table, self._slo, self._metric = table, slo, metric
        start = slo.limits().get(metric)
        built = table.attrs.get("slo")
        top = high if high is not None else (built.limits().get(metric) if built else None)
        top = top if top is not None else (start if start is not None else 1000.0)
        bottom = low if low is not None else top / 20
        start = start if start is not None else top
        self.slider = _slider(
            widgets.FloatSlider,
            value=min(max(start, bottom), top),
            min=bottom,
            max=top,
            step=step if step is not None else (top - bottom) / 100,
            description=f"{metric.replace('_ms', '')} limit (ms)",
            readout_format=".0f",
            description_width="190px",
            width="620px",
        )
        self.controls = {metric: self.slider}
        self.message_html = widgets.HTML()
        self.answer_html = widgets.HTML()
        self.view = self._compute()
        self.figure = go.FigureWidget(self.view.figure)
        self._show_view()
        self.slider.observe(self._on_change, names="value")
        head = widgets.HTML(
            f"<b>SLO explorer</b>: the fewest GPUs per type meeting "
            f"{html.escape(str(slo))}, with the {html.escape(metric)} limit set by the slider "
            f"(read from {len(table):,} simulated fleets, no new simulation)."
        )
        super().__init__([head, self.slider, self.message_html, self.figure, self.answer_html])

    def _compute(self) -> SLOView:
        return slo_explorer_state(
            self._table, self._slo, metric=self._metric, value=self.slider.value
        )

    def _show_view(self) -> None:
        self.message_html.value = _message_html(self.view.message)
        answer = self.view.answer
        if len(answer):
            wide = answer.pivot(index="traffic", columns="gpu", values="gpus")
            wide = wide.reindex(columns=list(dict.fromkeys(answer["gpu"])))
            shown = wide.reset_index()
            shown.columns = ["traffic", *(f"{g} (GPUs)" for g in wide.columns)]
            self.answer_html.value = _table_html(shown)
        else:
            self.answer_html.value = ""


def slo_explorer(table: pd.DataFrame, slo: Any, **options: Any) -> SLOExplorer:
    """An interactive SLO explorer (a ``VBox``; display it in Jupyter): a slider for one limit
    of ``slo`` (``metric``, default ``ttft_p99_ms``; from ``low`` to ``high`` ms, by default
    up to the limit the :func:`batchlab.capacity.replica_table` was built with), and the fewest
    GPUs of each type meeting it at each traffic level (:func:`slo_explorer_state`; the figure
    of :func:`batchlab.plots.fewest_gpus_figure` and a table), redrawn on every change in one
    ``batch_update()``."""
    return SLOExplorer(table, slo, **options)
