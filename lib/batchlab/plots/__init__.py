"""Pure plot builders: data in, :class:`plotly.graph_objects.Figure` out.

Every ``*_figure`` function computes what it draws from its arguments only (library calls
included) and returns a new figure: no widget, no display, no file. Titles and axis labels carry
units: lengths in tokens, latencies in milliseconds (ms), arrival times in seconds (s), costs in
cost units. The numbers a figure draws come from an analysis table of the module that owns the
concept (re-exported here: ``padding_vs_k_table`` from :mod:`batchlab.shapes`,
``gen_bucket_tradeoff_table`` and ``padding_by_shape_table`` from :mod:`batchlab.evaluate`,
``length_percentiles_table`` from :mod:`batchlab.workload`, ``load_sweep_knee_table`` from
:mod:`batchlab.simulate`, ``batch_size_choice_table`` and ``memory_vs_batch_table`` from
:mod:`batchlab.measure`), so chapters and tests can read them directly.

One module per domain: :mod:`~batchlab.plots.workload` (length distributions, arrival rates),
:mod:`~batchlab.plots.planning` (shapes and padding, gen buckets, cost parts, latency CDFs,
Pareto fronts, planner vs baseline), :mod:`~batchlab.plots.serving` (simulation timelines,
policy dashboards, load sweeps, KV-cache use), :mod:`~batchlab.plots.measurement`
(throughput and latency vs batch size, memory, measured vs roofline) and
:mod:`~batchlab.plots.capacity` (the cost–latency Pareto front of a capacity plan, the fewest
GPUs meeting an SLO); shared colors, labels and helpers in :mod:`~batchlab.plots.style`.
"""

from __future__ import annotations

from batchlab.plots.capacity import (
    CAPACITY_LABELS,
    capacity_pareto_figure,
    fewest_gpus_figure,
)
from batchlab.plots.measurement import (
    batch_size_choice_table,
    measured_vs_roofline_figure,
    memory_vs_batch_figure,
    memory_vs_batch_table,
    throughput_latency_vs_batch_figure,
)
from batchlab.plots.planning import (
    BOUND_FIELDS,
    LIMIT_FIELDS,
    cost_latency_parts_figure,
    cost_parts_figure,
    cost_parts_table,
    cost_parts_vs_parameter_figure,
    gen_bucket_tradeoff_figure,
    gen_bucket_tradeoff_table,
    latency_cdf_figure,
    padding_by_shape_table,
    padding_vs_k_figure,
    padding_vs_k_table,
    pareto_front_figure,
    planner_comparison_figure,
    planner_vs_sweep_figure,
    shape_buckets_figure,
)
from batchlab.plots.serving import (
    STEP_KIND_COLORS,
    TIMELINE_SEGMENTS,
    batch_timeline_figure,
    batch_timeline_table,
    kv_utilisation_figure,
    latency_cdf_by_policy_figure,
    live_vs_simulated_figure,
    load_sweep_figure,
    load_sweep_knee_table,
    policy_dashboard_figure,
    step_kinds,
)
from batchlab.plots.style import (
    COST_PARTS,
    MEASUREMENT_LABELS,
    METRIC_LABELS,
    PART_COLORS,
    SIMULATION_LABELS,
    length_histogram,
    log_bin_edges,
    use_notebook_renderer,
)
from batchlab.plots.workload import (
    arrival_rate_figure,
    length_distribution_figure,
    length_percentiles_table,
    percentiles_table_figure,
)

__all__ = [
    "BOUND_FIELDS",
    "CAPACITY_LABELS",
    "COST_PARTS",
    "LIMIT_FIELDS",
    "MEASUREMENT_LABELS",
    "METRIC_LABELS",
    "PART_COLORS",
    "SIMULATION_LABELS",
    "STEP_KIND_COLORS",
    "TIMELINE_SEGMENTS",
    "arrival_rate_figure",
    "batch_size_choice_table",
    "batch_timeline_figure",
    "batch_timeline_table",
    "capacity_pareto_figure",
    "cost_latency_parts_figure",
    "cost_parts_figure",
    "cost_parts_table",
    "cost_parts_vs_parameter_figure",
    "fewest_gpus_figure",
    "gen_bucket_tradeoff_figure",
    "gen_bucket_tradeoff_table",
    "kv_utilisation_figure",
    "latency_cdf_by_policy_figure",
    "latency_cdf_figure",
    "length_distribution_figure",
    "length_histogram",
    "length_percentiles_table",
    "live_vs_simulated_figure",
    "load_sweep_figure",
    "load_sweep_knee_table",
    "log_bin_edges",
    "measured_vs_roofline_figure",
    "memory_vs_batch_figure",
    "memory_vs_batch_table",
    "padding_by_shape_table",
    "padding_vs_k_figure",
    "padding_vs_k_table",
    "pareto_front_figure",
    "percentiles_table_figure",
    "planner_comparison_figure",
    "planner_vs_sweep_figure",
    "policy_dashboard_figure",
    "shape_buckets_figure",
    "step_kinds",
    "throughput_latency_vs_batch_figure",
    "use_notebook_renderer",
]
