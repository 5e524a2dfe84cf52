"""The ``batchlab`` command line: profile, plan, verify, evaluate, simulate, capacity, measure,
loadtest, replay, serve-tiny.

Exit codes: 0 success; 1 a limit cannot be met or a plan fails verification; 2 usage or input
errors (one readable line on stderr naming the file, line, field, option or request id, no
traceback); 70 an internal error (a bug: reported as such, with its traceback); 130
interrupted (SIGINT, Ctrl-C); 141 the output pipe was closed (``| head``: quietly); 143
terminated (SIGTERM). An interrupted command removes its temporary files and leaves every
output as it was. ``--json`` prints machine-readable output.

Every command that reads requests takes a request file or a registered trace name; every
``--help`` shows each option's default, range and choices. The shared helpers for the commands
(documented in docs/design.md, "Command line"): :func:`number_option` / :func:`list_option`
(argparse types that check a number's range before any work), :func:`add_cost_model_options`
and :func:`cost_model_of` (the one place a cost-model option is resolved),
:func:`read_requests_arg` (a file or a trace name), :func:`check_output_paths` (clashing,
empty, folder or read-only outputs refused before any work) and
:func:`batchlab.io.all_or_nothing` (every file of one command written, or none).

``batchlab simulate`` has one ``--option`` per knob of every registered batching policy,
generated from the policies' declarations (:mod:`batchlab.simulate.policies`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchlab.checks import MAX_INT, check_scalar, describe_range
from batchlab.errors import BatchlabError, InputError, LimitError, VerificationError

if TYPE_CHECKING:  # pandas loads where a command builds a table: ``batchlab evaluate`` never
    import pandas as pd  # imports it, nor the simulator (see build_parser)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): an internal error
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a tool killed by a closed pipe reports
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 a limit cannot be met or a plan fails verification; "
    "2 usage or input error (one line on stderr); 70 internal error (a bug, with its "
    "traceback); 130 interrupted; 141 output pipe closed; 143 terminated"
)


class _Formatter(argparse.HelpFormatter):
    """``--help`` with every option's default and range (choices show as ``{a,b}``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text == argparse.SUPPRESS:
            return text
        extra = []
        rng = getattr(action.type, "range_text", "")
        if rng:
            extra.append(rng)
        default = action.default
        if (
            action.option_strings
            and "default:" not in text
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
        ):
            extra.append(f"default: {default}".replace("%", "%%"))
        return text + (f" ({'; '.join(extra)})" if extra else "")

    def _split_lines(self, text: str, width: int) -> list[str]:
        # never break inside a hyphenated name (static-graph, llama-3-8b@h100-sxm)
        import textwrap

        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.wrap(text, width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self._pending_options: Any = None

    def add_options(self, add: Any, *, lazy: bool = False) -> None:
        """Add a command's options with ``add(self)``: now, or (``lazy``) just before this
        parser first parses or formats its usage or help, so that a command line builds and
        imports only what its own command needs."""
        if lazy:
            self._pending_options = add
        else:
            add(self)

    def _options_ready(self) -> None:
        add, self._pending_options = self._pending_options, None
        if add is not None:
            add(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._options_ready()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._options_ready()
        return super().format_usage()

    def format_help(self) -> str:
        self._options_ready()
        return super().format_help()

    def error(self, message: str) -> None:  # one line on stderr, exit code 2
        self.exit(EXIT_USAGE, f"batchlab: error: {_one_line(message)} (see {self.prog} -h)\n")


# ------------------------------------------------------------------ shared option helpers


def _parse_number(text: str, kind: type) -> Any:
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        pass
    try:
        return float(text)  # "1e3" as a whole number; int() refuses more than 4300 digits
    except ValueError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise argparse.ArgumentTypeError(f"not a number: {shown!r}") from None


def number_option(
    kind: type,
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    include_boundaries: str = "both",
    allow_inf: bool = False,
    unit: str = "",
) -> Any:
    """An argparse ``type=`` for a number option (``int`` or ``float``) checked by
    :func:`batchlab.checks.check_scalar` while the command line is parsed, before any work: a
    value out of range is a usage error naming the option (exit 2). ``--help`` shows the
    range."""

    def parse(text: str) -> Any:
        value = _parse_number(text, kind)
        try:
            return check_scalar(
                value,
                "option",
                kind,
                min_val=min_val,
                max_val=max_val,
                include_boundaries=include_boundaries,
                allow_inf=allow_inf,
                unit=unit,
            )
        except InputError as err:
            raise argparse.ArgumentTypeError(err.message) from None

    parse.__name__ = kind.__name__
    parse.kind, parse.min_val, parse.max_val = kind, min_val, max_val  # type: ignore[attr-defined]
    parse.allow_inf = allow_inf  # type: ignore[attr-defined]
    parse.range_text = describe_range(min_val, max_val, include_boundaries).strip()  # type: ignore[attr-defined]
    return parse


def list_option(
    kind: type,
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    include_boundaries: str = "both",
    allow_inf: bool = False,
    unit: str = "",
    max_items: int = 100,
) -> Any:
    """An argparse ``type=`` for a comma-separated list (``1,2,4``) of numbers, each checked as
    :func:`number_option` checks one, at most ``max_items`` of them."""
    one = number_option(
        kind,
        min_val=min_val,
        max_val=max_val,
        include_boundaries=include_boundaries,
        allow_inf=allow_inf,
        unit=unit,
    )

    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        if len(items) > max_items:
            raise argparse.ArgumentTypeError(f"{len(items):,} values: at most {max_items:,}")
        out = []
        for item in items:
            try:
                out.append(one(item))
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"{item[:40]!r}: {err}") from None
        return out

    parse.__name__ = f"list of {kind.__name__}"
    parse.kind, parse.min_val, parse.max_val = kind, min_val, max_val  # type: ignore[attr-defined]
    parse.max_items, parse.allow_inf = max_items, allow_inf  # type: ignore[attr-defined]
    rng = one.range_text
    parse.range_text = (  # type: ignore[attr-defined]
        f"each {rng}, at most {max_items} values" if rng else f"at most {max_items} values"
    )
    return parse


def check_output_paths(
    outputs: Sequence[str | os.PathLike[str]],
    inputs: Sequence[str | os.PathLike[str]] = (),
    option: str = "--output",
) -> list[Path]:
    """The files a command will write, checked before any work (:func:`batchlab.io.check_outputs`):
    none empty, a folder or read-only, none given twice, none the same file as an input."""
    from batchlab.io import check_outputs

    return check_outputs(outputs, inputs, field=option)


def add_cost_model_options(p: argparse.ArgumentParser, *, from_plan: bool = False) -> None:
    """``--cost-model`` and ``--granularity``: the one definition of the cost-model options.
    ``from_plan``: their defaults are the settings the plan was made with (PLAN.meta.json)."""
    from batchlab.cost import PRESETS
    from batchlab.shapes import MAX_GRANULARITY

    presets = (
        ", ".join(PRESETS) + ", <model>@<gpu> (GPU-ms and real ms, e.g. llama-3-8b@h100-sxm) or "
        "a measurement CSV (batchlab measure)"
    )
    if from_plan:
        p.add_argument(
            "--cost-model",
            default=None,
            metavar="MODEL",
            help=f"cost model: {presets} (default: the plan's, from PLAN.meta.json, "
            "else static-graph)",
        )
        p.add_argument(
            "--granularity",
            type=number_option(int, min_val=1, max_val=MAX_GRANULARITY, unit="tokens"),
            default=None,
            help="alignment g in tokens (default: the plan's, else the cost model's, 64)",
        )
    else:
        p.add_argument(
            "--cost-model",
            default="static-graph",
            metavar="MODEL",
            help=f"cost model: {presets}",
        )
        p.add_argument(
            "--granularity",
            type=number_option(int, min_val=1, max_val=MAX_GRANULARITY, unit="tokens"),
            default=None,
            help="alignment g in tokens (default: the cost model's, 64)",
        )


def cost_model_of(spec: Any, granularity: int | None = None) -> Any:
    """The cost model a ``--cost-model`` value names, at ``granularity`` when given: a preset
    (static-graph, padded-graph), ``<model>@<gpu>`` (real units on the calibrated roofline, e.g.
    llama-3-8b@h100-sxm; ``:ideal`` / ``:padded`` suffixes) or a measurement file (``batchlab
    measure``'s CSV: the step-time model fitted on it). The one place the option is resolved
    (errors name ``--cost-model``, or the measurement file)."""
    from batchlab.cost import StepTimeCostModel, get_cost_model

    text = str(spec)
    if text.lower().endswith(".csv") or Path(text).is_file():
        from batchlab.measure import fit_step_time, load_measurement

        fitted = fit_step_time(load_measurement(text))
        cm = StepTimeCostModel.from_step_time(fitted, name=f"fitted on {Path(text).name}")
    else:
        try:
            cm = get_cost_model(spec)
        except InputError as err:
            raise InputError(err.message, field="--cost-model") from None
    if granularity is not None and granularity != cm.granularity:
        cm = cm.with_coefficients(granularity=granularity, name=f"{cm.name} (g={granularity})")
    return cm


def _cost_model(args):
    return cost_model_of(args.cost_model, getattr(args, "granularity", None))


def read_requests_arg(source: str) -> pd.DataFrame:
    """The requests of a command's argument: a request file (JSON Lines, CSV, Parquet, or a
    trace's own CSV), or a registered trace by name (``azure-conv-2023``).
    ``attrs["source"]`` is the argument as given."""
    from batchlab.datasets import TRACES, load_trace
    from batchlab.workload import read_requests

    path = Path(source)
    key = source.strip().lower()
    if not path.exists() and key in TRACES:
        df = load_trace(key)
    elif not path.exists():
        raise InputError(
            f"no such request file, and not a registered trace name (traces: {', '.join(TRACES)})",
            path=source,
        )
    else:
        df = read_requests(path)
    df.attrs["source"] = source
    return df


def _source_record(source: str, n_requests: int) -> dict:
    """What a plan's sidecar records of its requests: the argument, its sha256, the count."""
    from batchlab.trace_registry import TRACES

    path = Path(source)
    digest = None
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    elif source.strip().lower() in TRACES:
        digest = TRACES[source.strip().lower()].sha256
    return {"source": source, "sha256": digest, "n_requests": int(n_requests)}


def _warn(message: str) -> None:
    print(f"batchlab: warning: {_one_line(message)}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"note: {_one_line(message)}", file=sys.stderr)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.bool_):
        return bool(value)
    pandas = sys.modules.get("pandas")  # a DataFrame exists only if pandas was imported
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return _jsonable(value.to_dict(orient="records"))
    return value


def _print_json(obj) -> None:
    print(json.dumps(_jsonable(obj), indent=2))


def _cost_units(cm: Any, names) -> dict[str, str]:
    """The unit of each cost metric among ``names`` under ``cm`` (``cost units``, or ``GPU-ms``
    for a hardware preset or a measurement), for :func:`_table`."""
    return {
        str(n): cm.cost_unit for n in names if str(n) == "total_cost" or str(n).startswith("cost_")
    }


def _table(df: pd.DataFrame | dict[str, list], units: dict[str, str] | None = None) -> str:
    """A table as the CLI prints it: the formats of :func:`batchlab.tables.text_table` (one
    number format per column, units in the headers, "—" for no value); a DataFrame or a dict
    of columns (lists)."""
    from batchlab.tables import text_table

    return text_table(df, units=units)


#: The simulator's parameters that ``batchlab simulate`` sets through options of the same name.
_SIMULATE_PARAMETERS = (
    "rate",
    "concurrency",
    "burstiness",
    "think_time_ms",
    "seed",
    "model",
    "gpu",
    "kv_blocks",
    "block_size",
    "memory_fraction",
    "policy",
)


def _in_cli_words(err: InputError, names: Sequence[str]) -> InputError:
    """``err`` as the command line says it: the field and every mention of a Python parameter
    (``rate=``, ``kv_blocks``, ``chunked_prefill=False``) become the option that sets it
    (``--rate``, ``--kv-blocks``, ``--no-chunked-prefill``), and the Python-only way out ("or
    pass a DeviceSpec") is dropped. ``names``: the parameters that have an option."""
    import re

    option = {n: "--" + n.replace("_", "-") for n in names}
    text = err.message
    text = re.sub(r"\s*\(or pass an? \w+Spec\)", "", text)
    text = re.sub(r",? or pass an? \w+Spec", "", text)

    def assignment(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if value == "False":
            return "--no-" + name.replace("_", "-")
        if value == "True":
            return option[name]
        return option[name] + (f" {value}" if value else "")

    known = "|".join(sorted((re.escape(n) for n in option), key=len, reverse=True))
    if known:
        text = re.sub(rf"\b({known})=(True|False|[\w.+-]*)", assignment, text)
        # bare names with an underscore are parameter names, not words (kv_blocks)
        under = "|".join(re.escape(n) for n in sorted(option, key=len, reverse=True) if "_" in n)
        if under:
            text = re.sub(rf"(?<![\w-])({under})(?![\w=])", lambda m: option[m.group(1)], text)
        listed = re.search(r"(valid options: )(.*)$", text)
        if listed:
            items = [option.get(x.strip(), x.strip()) for x in listed.group(2).split(",")]
            text = text[: listed.start(2)] + ", ".join(items)
    field = option.get(err.field, err.field) if err.field is not None else None
    out = InputError(text, path=err.path, line=err.line, field=field, request_id=err.request_id)
    return out


# ------------------------------------------------------------------------------------- commands


def cmd_profile(args) -> int:
    from batchlab.workload import profile

    out = {}
    for path in args.inputs:
        prof = profile(read_requests_arg(path))
        out[path] = prof
    if args.json:
        _print_json({p: v.to_frame() for p, v in out.items()})
        return EXIT_OK
    for path, prof in out.items():
        print(f"== {path}: {prof.n_requests:,} requests")
        from batchlab.tables import LENGTH_STAT_UNITS

        print(_table(prof.lengths.reset_index(names="field"), LENGTH_STAT_UNITS))
        extra = {
            "correlation (Pearson)": prof.correlation_pearson,
            "correlation (Spearman)": prof.correlation_spearman,
        }
        if prof.arrival_rate_per_s is not None:
            extra["arrival rate (req/s)"] = prof.arrival_rate_per_s
            extra["inter-arrival CV"] = prof.interarrival_cv
            extra["duration (s)"] = prof.duration_s
        for k, v in extra.items():
            print(f"{k:>24}: {v:,.4g}")
        print(f"{'outliers':>24}: {len(prof.outliers):,}")
    return EXIT_OK


def cmd_plan(args) -> int:
    """Plan IN... (request files or trace names) into one plan per input (``-o``), each with a
    sidecar ``PLAN.meta.json`` recording the settings; all files are written, or none."""
    from batchlab.io import all_or_nothing, write_json
    from batchlab.plan import plan_meta_path, write_plan
    from batchlab.planner import plan_requests, read_limits

    if len(args.output) != len(args.inputs):
        raise InputError(
            f"{len(args.inputs)} input(s) but {len(args.output)} --output path(s): give one per input",
            field="--output",
        )
    names = [Path(p).stem for p in args.inputs]
    if len(set(names)) != len(names):
        raise InputError(f"input file stems must be unique (they name the buckets), got {names}")
    inputs = [*args.inputs, *([args.limits] if args.limits else [])]
    outputs = check_output_paths(args.output, inputs)
    for out in outputs:
        if out.name.endswith(".meta.json"):
            raise InputError(
                "a plan's name cannot end in .meta.json (the name of a plan's sidecar)",
                path=out,
                field="--output",
            )
    metas = [plan_meta_path(o) for o in outputs]
    check_output_paths([*outputs, *metas], inputs)
    cm = _cost_model(args)  # an unknown --cost-model is reported before any work
    buckets = {n: read_requests_arg(p) for n, p in zip(names, args.inputs, strict=True)}
    limits = None
    if args.limits:
        limits = read_limits(args.limits)
        unknown = sorted(set(limits) - set(names))
        if unknown and len(unknown) == len(limits):  # a limits file for other inputs
            raise InputError(
                f"tables {unknown} match no input file stem (stems: {names})", path=args.limits
            )
        if unknown:  # a shared limits file, planned for some of its inputs
            _warn(
                f"{args.limits}: tables {unknown} match no input file stem (stems: {names}); "
                "their limits are not used"
            )
            limits = {k: v for k, v in limits.items() if k in names}
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = plan_requests(
            buckets,
            cm,
            args.max_shapes,
            limits,
            time_limit_s=args.time_limit,
            exact=args.exact,
            progress=not args.json and sys.stderr.isatty(),
        )
    for w in caught:
        _note(str(w.message))
    comparison = result.comparison()  # (before the writes: after them only printing is left)
    with all_or_nothing():  # every plan and sidecar, or none
        for bp, out, meta_path, source in zip(
            result.buckets, outputs, metas, args.inputs, strict=True
        ):
            write_plan(bp.plan, out)
            write_json(_plan_meta(args, cm, result, bp, out, source, buckets), meta_path)
    if args.json:
        _print_json(
            {
                "shapes": list(result.shapes),
                "max_shapes": result.max_shapes,
                "total_cost": result.total_cost,
                "lower_bound": result.lower_bound,
                "optimality_gap": result.optimality_gap,
                "buckets": {
                    bp.name: {
                        "output": str(out),
                        "meta": str(meta_path),
                        "summary": bp.evaluation.summary(),
                        "lower_bound": bp.lower_bound,
                        "optimality_gap": bp.optimality_gap,
                        "bounds": bp.bounds.as_dict(),
                        "settings": bp.settings,
                    }
                    for bp, out, meta_path in zip(result.buckets, outputs, metas, strict=True)
                },
                "comparison": comparison,
            }
        )
        return EXIT_OK
    print(
        f"shapes used ({len(result.shapes)} of at most {result.max_shapes}): {list(result.shapes)}"
        f"; cost model {cm.name}, granularity {cm.granularity}"
    )
    if not getattr(cm, "padded", True):
        print(
            f"({cm.name.split(' ')[0]}: a shape sets only the compile cost, so each input "
            "declares one shape, its longest aligned prompt; --cost-model padded-graph prices "
            "every request at its batch's shape)"
        )
    for bp, out in zip(result.buckets, outputs, strict=True):
        print(
            f"{bp.name}: {bp.evaluation.n_requests:,} requests in {bp.evaluation.n_batches:,} batches"
            f" -> {out}; cost {bp.evaluation.cost.total:,.6g}, lower bound {bp.lower_bound:,.6g},"
            f" certified gap {100 * bp.optimality_gap:.3f} %"
        )
    print(
        f"total: cost {result.total_cost:,.6g}, lower bound {result.lower_bound:,.6g},"
        f" certified gap {100 * result.optimality_gap:.3f} %"
    )
    print(_table(comparison, _cost_units(cm, comparison["metric"])))
    return EXIT_OK


def _plan_meta(args, cm, result, bp, out: Path, source: str, buckets: dict) -> dict:
    """The sidecar of one plan: its requests, every planning setting and what it achieved."""
    from batchlab import __version__
    from batchlab.plan import PLAN_META_FORMAT

    coefficients = getattr(cm, "coefficients", None)
    return _jsonable(
        {
            "format": PLAN_META_FORMAT,
            "plan": out.name,
            "bucket": bp.name,
            "requests": _source_record(source, len(buckets[bp.name])),
            "settings": {
                "cost_model": args.cost_model,
                "cost_model_name": cm.name,
                "granularity": cm.granularity,
                "cost_coefficients": (
                    coefficients.as_dict() if hasattr(coefficients, "as_dict") else None
                ),
                "max_shapes": args.max_shapes,
                "max_shapes_used": result.max_shapes,
                "limits": bp.limits.as_dict(),
                "limits_file": args.limits,
                "time_limit_s": args.time_limit,
                "exact": args.exact,
                "buckets": [b.name for b in result.buckets],
                "batchlab_version": __version__,
            },
            "result": {
                "shapes": list(result.shapes),
                "summary": bp.evaluation.summary(),
                "lower_bound": bp.lower_bound,
                "optimality_gap": bp.optimality_gap,
                "method": result.method,
                "search": bp.settings,
            },
        }
    )


def _plan_metas(plan_paths: Sequence[str]) -> list[dict | None]:
    from batchlab.plan_meta import read_plan_meta

    return [read_plan_meta(p) for p in plan_paths]


def _check_sources(sources: Sequence[str], counts: Sequence[int], plans, metas) -> None:
    """Warn when a plan's sidecar says it was made from other requests (``counts``: the
    requests read from each source)."""
    for source, count, plan, meta in zip(sources, counts, plans, metas, strict=True):
        if meta is None:
            continue
        made = meta.get("requests") or {}
        now = _source_record(source, count)
        if made.get("sha256") and now["sha256"] and made["sha256"] != now["sha256"]:
            _warn(
                f"{plan} was made from {made.get('source')!r} ({made.get('n_requests')} "
                f"requests), not from {source!r} (its contents differ)"
            )


def _planned_setting(metas: Sequence[dict | None], key: str) -> tuple[Any, bool]:
    """(the value of ``settings[key]`` every sidecar agrees on, whether they all have it)."""
    values = {json.dumps((m or {}).get("settings", {}).get(key)) for m in metas}
    if any(m is None for m in metas) or len(values) != 1:
        return None, False
    return json.loads(values.pop()), True


def cmd_verify(args) -> int:
    """Verify plans against their requests: IN... PLAN... (as many of each). The granularity
    and the shape cap default to the ones the plans were made with (their sidecars)."""
    from batchlab.plan import read_plan, verify_plans

    paths = args.files
    if len(paths) < 2 or len(paths) % 2:
        raise InputError(
            f"give the request files then the plan files, as many of each; got {len(paths)} path(s)"
        )
    half = len(paths) // 2
    plan_paths = paths[half:]
    metas = _plan_metas(plan_paths)
    granularity = args.granularity
    planned_g, known_g = _planned_setting(metas, "granularity")
    if granularity is None and args.cost_model is not None:
        granularity = cost_model_of(args.cost_model).granularity
    if granularity is None:
        granularity = planned_g if known_g else 64
    elif known_g and planned_g != granularity:
        _warn(f"the plans were made with granularity {planned_g}; verifying with {granularity}")
    max_shapes = args.max_shapes
    planned_cap, known_cap = _planned_setting(metas, "max_shapes_used")
    if max_shapes is None and known_cap:
        max_shapes = planned_cap
    elif max_shapes is not None and known_cap and planned_cap != max_shapes:
        _warn(f"the plans were made with at most {planned_cap} shapes; verifying {max_shapes}")
    requests = [read_requests_arg(p) for p in paths[:half]]
    plans = [read_plan(p) for p in plan_paths]
    _check_sources(paths[:half], [len(r) for r in requests], plan_paths, metas)
    report = verify_plans(requests, plans, max_shapes=max_shapes, granularity=granularity)
    if args.json:
        _print_json(
            {
                "ok": report.ok,
                "n_shapes": report.n_shapes,
                "granularity": granularity,
                "max_shapes": max_shapes,
                "violations": list(report.violations),
            }
        )
    elif report.ok:
        cap = "" if max_shapes is None else f" (at most {max_shapes})"
        print(
            f"ok: {half} plan(s) verified, {report.n_shapes} distinct shape(s){cap}, "
            f"granularity {granularity}"
        )
    if not report.ok:
        for v in report.violations:
            print(f"batchlab: violation: {v}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_evaluate(args) -> int:
    """Evaluate a plan on its requests with the cost model it was made with (its sidecar), or
    the one given (with a warning when they differ)."""
    from batchlab.evaluate import evaluate_files

    (meta,) = _plan_metas([args.plan])
    settings = (meta or {}).get("settings", {})
    spec = args.cost_model if args.cost_model is not None else settings.get("cost_model")
    granularity = args.granularity
    if granularity is None and meta is not None and args.cost_model is None:
        granularity = settings.get("granularity")
    cm = cost_model_of(spec if spec is not None else "static-graph", granularity)
    if meta is not None:
        planned = cost_model_of(settings["cost_model"], settings.get("granularity"))
        if _model_key(planned) != _model_key(cm):
            _warn(
                f"{args.plan} was made with cost model {settings['cost_model']} (granularity "
                f"{settings.get('granularity')}); evaluating with {cm.name} (granularity "
                f"{cm.granularity}) as asked"
            )
    if Path(args.requests).is_file():  # the lean path: Arrow buffers, ids joined by one sort
        summary, cost = evaluate_files(args.requests, args.plan, cm)
        n_requests = int(summary["n_requests"])
    else:  # a trace by name
        from batchlab.evaluate import evaluate
        from batchlab.plan import read_plan

        requests = read_requests_arg(args.requests)
        ev = evaluate(requests, read_plan(args.plan), cm)
        summary, cost, n_requests = ev.summary(), ev.cost.as_dict(), len(requests)
    _check_sources([args.requests], [n_requests], [args.plan], [meta])
    if args.json:
        _print_json(
            {
                "summary": summary,
                "cost": cost,
                "cost_model": cm.name,
                "granularity": cm.granularity,
            }
        )
        return EXIT_OK
    print(f"cost model {cm.name}, granularity {cm.granularity}")
    rows = {"metric": list(summary), "value": list(summary.values())}  # no pandas on this path
    print(_table(rows, _cost_units(cm, summary)))
    return EXIT_OK


def _step_time(args):
    """The step-time model of ``batchlab simulate``: calibrated roofline (default), the
    data-sheet ideal (``--ideal``) or a model fitted on a measurement (``--step-time``)."""
    if args.step_time is not None:
        from batchlab.measure import fit_step_time, load_measurement

        return fit_step_time(load_measurement(args.step_time))
    from batchlab.roofline import RooflineStepTime

    return RooflineStepTime(args.model, args.gpu, calibrated=not args.ideal)


def _model_key(cm) -> Any:
    coefficients = getattr(cm, "coefficients", None)
    return (type(cm).__name__, coefficients if coefficients is not None else cm.name)


def cmd_simulate(args) -> int:
    """Simulate serving IN (a request file, or a registered trace name such as
    ``azure-conv-2023``) with a batching policy; print the aggregates (``--json``: as JSON)."""
    from batchlab.simulate import simulate

    source = args.input
    requests = read_requests_arg(source)
    if args.first_s is not None:
        if "arrival_s" not in requests.columns:
            raise InputError("--first-s needs an arrival_s column", path=source, field="arrival_s")
        requests = requests[requests["arrival_s"].to_numpy(dtype=np.float64) < args.first_s]
    if args.max_requests is not None:
        if "arrival_s" in requests.columns:
            requests = requests.sort_values("arrival_s", kind="stable")
        requests = requests.iloc[: args.max_requests]
    if len(requests) == 0:
        raise InputError("no request left to simulate", path=source)
    # policy options: only those given on the command line (the policy checks they apply)
    options = {
        knob: getattr(args, dest)
        for knob, dest in _knob_dests().items()
        if getattr(args, dest, None) is not None
    }
    load = {}
    if args.rate is not None:
        load["rate"] = args.rate
        if args.burstiness is not None:
            load["burstiness"] = args.burstiness
    elif args.burstiness is not None:
        raise InputError("--burstiness applies to drawn arrivals (--rate)", field="--burstiness")
    if args.concurrency is not None:
        if args.concurrency > len(requests):
            _note(
                f"--concurrency {args.concurrency:,} is more than the {len(requests):,} requests: "
                f"simulating {len(requests):,} clients (each request sent at once)"
            )
            args.concurrency = len(requests)
        load["concurrency"] = args.concurrency
        if args.think_time_ms is not None:
            load["think_time_ms"] = args.think_time_ms
    elif args.think_time_ms is not None:
        raise InputError(
            "--think-time-ms applies to a closed loop (--concurrency)", field="--think-time-ms"
        )
    try:
        result = simulate(
            requests,
            args.policy,
            model=args.model,
            gpu=args.gpu,
            step_time=_step_time(args),
            seed=args.seed,
            kv_blocks=args.kv_blocks,
            block_size=args.block_size,
            memory_fraction=args.memory_fraction,
            **load,
            **options,
        )
    except InputError as err:
        raise _in_cli_words(err, [*_SIMULATE_PARAMETERS, *_knob_dests()]) from None
    summary = result.summary()
    for warning in result.warnings:
        print(f"batchlab: warning: {warning}", file=sys.stderr)
    info = {
        "input": source,
        "n_requests": len(requests),
        "policy": result.policy,
        "options": dict(result.options),
        "model": args.model,
        "gpu": args.gpu,
        "step_time": result.step_time,
        "mode": result.mode,
        "kv_blocks": result.kv_blocks,
        "block_size": result.block_size,
        "kv_tokens": result.kv_blocks * result.block_size,
    }
    if args.json:
        _print_json({**info, "summary": summary, "warnings": list(result.warnings)})
        return EXIT_OK
    opts = ", ".join(_option_text(k, v) for k, v in result.options.items() if v is not None)
    if result.mode == "rate":
        mode = f"Poisson arrivals at {args.rate:g} requests/s"
        if args.burstiness is not None:
            mode = f"gamma arrivals at {args.rate:g} requests/s, CV {args.burstiness:g}"
    elif result.mode == "closed":
        mode = f"closed loop of {args.concurrency} clients"
    else:
        mode = "trace arrival times"
    print(
        f"{source}: {len(requests):,} requests, {mode}, "
        f"{result.policy} ({opts}) on "
        + (f"{args.model} / {args.gpu}" if args.step_time is None else result.step_time)
    )
    print(
        f"KV cache: {result.kv_blocks:,} blocks of {result.block_size} tokens "
        f"({result.kv_blocks * result.block_size:,} tokens)"
    )
    import pandas as pd

    skip = {"policy", "mode"}
    rows = pd.DataFrame(
        {
            "metric": [k for k in summary if k not in skip],
            "value": [summary[k] for k in summary if k not in skip],
        }
    )
    print(_table(rows))
    return EXIT_OK


def _option_text(knob: str, value: Any) -> str:
    """A policy option as it is typed on the command line: ``--max-num-seqs 256``,
    ``--chunked-prefill`` / ``--no-chunked-prefill``, ``--bucket-edges 256,1024``."""
    flag = "--" + knob.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + knob.replace("_", "-")
    if isinstance(value, list | tuple):
        return f"{flag} {','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}"
    if isinstance(value, float):
        return f"{flag} {value:g}"
    return f"{flag} {value}"


def _first_requests(
    requests: pd.DataFrame, first_s: float | None, max_requests: int | None, source: str
) -> pd.DataFrame:
    """The requests arriving in the first ``first_s`` seconds, then the first
    ``max_requests`` of them in arrival order (each when given)."""
    if first_s is not None:
        check_scalar(first_s, "--first-s", float, min_val=0, include_boundaries="neither", unit="s")
        if "arrival_s" not in requests.columns:
            raise InputError("--first-s needs an arrival_s column", path=source, field="arrival_s")
        requests = requests[requests["arrival_s"].to_numpy(dtype=np.float64) < first_s]
    if max_requests is not None:
        check_scalar(max_requests, "--max-requests", int, min_val=1)
        if "arrival_s" in requests.columns:
            requests = requests.sort_values("arrival_s", kind="stable")
        requests = requests.iloc[:max_requests]
    if len(requests) == 0:
        raise InputError("no request left", path=source)
    return requests


def _token_budgets(text: str, option: str) -> list[int | None]:
    """``"default,2048"`` -> [None, 2048]: whole numbers of tokens per step, or ``default``
    (the policy's own); an :class:`InputError` naming ``option`` otherwise."""
    from batchlab.workload import MAX_LENGTH

    one = number_option(int, min_val=1, max_val=MAX_LENGTH, unit="tokens")
    out: list[int | None] = []
    for word in _word_list(text, option):
        if word.lower() == "default":
            out.append(None)
            continue
        try:
            out.append(one(word))
        except argparse.ArgumentTypeError as err:
            raise InputError(f"{word[:40]!r}: {err}", field=option) from None
    return out


def _word_list(text: str, option: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"] (no empty item)."""
    words = [w.strip() for w in str(text).split(",")]
    if not all(words):
        raise InputError(f"expected comma-separated names, got {text!r}", field=option)
    return words


def _switch_list(text: str, option: str) -> list[bool]:
    """``"off,on"`` -> [False, True]."""
    values = {"off": False, "on": True, "false": False, "true": True, "no": False, "yes": True}
    out = []
    for w in _word_list(text, option):
        if w.lower() not in values:
            raise InputError(f"expected on/off values, got {w!r}", field=option)
        out.append(values[w.lower()])
    return out


def cmd_capacity(args) -> int:
    """The fewest replicas of each serving configuration (GPUs x models x max_num_seqs x
    max_num_batched_tokens x chunked prefill x routers) that meet an SLO for IN at each traffic
    level, priced with ``--prices``; prints every configuration, the cheapest per traffic level
    and the cost-latency Pareto front (``batchlab.capacity``). Exit 1 when no configuration
    meets the SLO."""
    from batchlab.capacity import PriceTable, capacity_search
    from batchlab.slo import SLO
    from batchlab.traffic import Traffic

    source = args.input
    requests = _first_requests(read_requests_arg(source), args.first_s, args.max_requests, source)
    limits = {}
    for name in SLO.field_names():
        value = getattr(args, f"slo_{name}")
        if value is not None:
            limits[name] = value  # range-checked while parsing
    if not limits:
        raise InputError(
            "give at least one SLO limit, e.g. --ttft-p99-ms 2000 --tpot-p99-ms 100",
            field="--ttft-p99-ms",
        )
    slo = SLO.from_mapping(limits)
    tokens = _token_budgets(args.max_num_batched_tokens, "--max-num-batched-tokens")
    space = {
        "gpu": _word_list(args.gpus, "--gpus"),
        "model": _word_list(args.model, "--model"),
        "max_num_seqs": list(args.max_num_seqs),
        "max_num_batched_tokens": tokens,
        "chunked_prefill": _switch_list(args.chunked_prefill, "--chunked-prefill"),
        "router": _word_list(args.routers, "--routers"),
    }
    if args.rates is not None:
        levels = [Traffic.poisson(r, seed=args.seed) for r in args.rates]
    else:
        levels = [Traffic.scaled(k) for k in args.traffic]
    prices = PriceTable.read(args.prices) if args.prices else None
    executor = None
    try:
        if args.dask:
            try:
                from dask.distributed import Client
            except ImportError as exc:
                raise InputError(
                    f"--dask needs dask.distributed ({exc}); pip install 'batchlab[dist]'"
                ) from None
            try:
                executor = Client(args.dask, timeout="10s")
            except OSError as exc:
                raise InputError(
                    f"cannot reach the dask scheduler: {exc}", field="--dask"
                ) from None
        elif args.workers is not None and args.workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            executor = ProcessPoolExecutor(max_workers=args.workers)
        plan = capacity_search(
            requests,
            slo,
            space,
            traffic=levels,
            prices=prices,
            max_replicas=args.max_replicas,
            check_above=args.check_above,
            latency=args.latency,
            executor=executor,
            progress=not args.no_progress,
        )
    finally:
        if executor is not None:
            (executor.close if hasattr(executor, "close") else executor.shutdown)()
    table = plan.table
    if args.output:
        from batchlab.io import atomic_write

        with atomic_write(args.output) as fh:
            table.to_csv(fh, index=False)
    step_times = sorted(set(table["step_time"].dropna()))
    calibrated = bool(table["calibrated"].fillna(False).astype(bool).all())
    if args.json:
        _print_json(
            {
                "input": source,
                "n_requests": len(requests),
                "slo": slo.limits(),
                "prices": None
                if prices is None
                else {
                    "currency": prices.currency,
                    "source": prices.source,
                    "date": prices.date,
                    "per_gpu_hour": dict(prices.prices),
                },
                "step_time": step_times,
                "calibrated": calibrated,
                "output": args.output,
                "table": table,
                "cheapest": plan.cheapest,
                "pareto": plan.pareto,
            }
        )
    else:
        price_note = (
            f"prices: {prices.currency} per GPU-hour, {prices.source or 'no source given'}"
            f"{f' ({prices.date})' if prices.date else ''}"
            if prices is not None
            else "no price table (--prices): ranked by GPUs"
        )
        print(
            f"{source}: {len(requests):,} requests; SLO {slo}; "
            f"step times {', '.join(step_times) or '(none)'} "
            f"({'calibrated' if calibrated else 'NOT calibrated: data-sheet roofline'}); "
            f"{price_note}"
        )
        print(_table(plan.summary_table()))
        for row in table.itertuples():
            if isinstance(row.error, str):
                print(f"note: {row.gpu} {row.model} {row.traffic}: {row.error}", file=sys.stderr)
            elif row.monotone is False:
                print(f"note: {row.gpu} {row.traffic}: {row.note}", file=sys.stderr)
        if len(plan.cheapest):
            print("cheapest configuration meeting the SLO, per traffic level:")
            print(_table(plan.summary_table(plan.cheapest)))
            print(f"cost-latency Pareto front ({plan.latency}):")
            print(_table(plan.summary_table(plan.pareto)))
        if args.output:
            print(f"written: {args.output}")
    if not len(plan.cheapest):
        print(
            f"batchlab: limit not met: no configuration meets the SLO ({slo}) with up to "
            f"{args.max_replicas} replicas",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def cmd_measure(args) -> int:
    """Measure generation on this machine (``--model tiny``: a small random Llama, no
    download) with the static engine (padded batches at several batch sizes: the table and its
    analysis) or the continuous-batching engine (every step timed over batch sizes and prompt
    lengths, and the step-time model fitted on it); save CSV + JSON (default: the user's cache
    folder, the path is printed) unless ``--no-save``."""
    from batchlab.measure import parse_batch_sizes

    continuous = args.engine == "continuous"
    if args.batch_sizes is None:
        args.batch_sizes = "1,2,4,8" if continuous else "1,2,4,8,16"
    if args.repeats is None:
        args.repeats = 2 if continuous else 3
    if continuous and args.prompt_lens is None:
        args.prompt_lens = "32,128,384"
    sizes = parse_batch_sizes(args.batch_sizes)  # checked before the (slow) measurement
    if args.no_save and args.output is not None:
        raise InputError("--output and --no-save contradict each other", field="--output")
    if args.output is not None:
        out = Path(args.output)
        check_output_paths([out, out.with_suffix(".json")])
    if not continuous and args.served is not None:
        raise InputError("applies to --engine continuous", field="--served")
    if continuous:
        if args.prompt_len is not None:
            raise InputError(
                "applies to --engine static (continuous: --prompt-lens)", field="--prompt-len"
            )
        if args.latency_limit_ms is not None:
            raise InputError("applies to --engine static", field="--latency-limit-ms")
        if args.served is None:
            args.served = SERVED_REQUESTS
        lens = parse_batch_sizes(args.prompt_lens)
        try:
            crun = run_measure_continuous_cli(
                args.model,
                sizes,
                lens,
                args.gen_len,
                served_requests=args.served,
                **_measure_settings(args),
            )
        except ImportError as exc:
            raise InputError(str(exc), field="--model") from exc
        if args.json:
            _print_json(
                {
                    "settings": crun.steps.attrs.get("settings", {}),
                    "path": None if crun.path is None else str(crun.path),
                    "fit": {
                        **crun.fit.coefficients(),
                        "residual": dataclasses.asdict(crun.fit.residual),
                    },
                    "table": crun.table,
                }
            )
            return EXIT_OK
        print(crun.report())
        return EXIT_OK
    if args.prompt_lens is not None:
        raise InputError(
            "applies to --engine continuous (static: --prompt-len)", field="--prompt-lens"
        )
    try:
        run = run_measure_cli(
            args.model,
            sizes,
            128 if args.prompt_len is None else args.prompt_len,
            args.gen_len,
            latency_limit_ms=args.latency_limit_ms,
            latency_column=args.latency_column,
            tolerance=args.tolerance,
            **_measure_settings(args),
        )
    except ImportError as exc:  # torch / transformers missing: one line, exit code 2
        raise InputError(str(exc), field="--model") from exc
    if args.json:
        _print_json(
            {
                "settings": run.table.attrs.get("settings", {}),
                "path": None if run.path is None else str(run.path),
                "summary": dataclasses.asdict(run.summary),
                "table": run.table,
            }
        )
        return EXIT_OK
    print(run.report())
    return EXIT_OK


def _measure_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of ``batchlab measure`` that both engines take, as keyword arguments of
    :func:`run_measure_cli` and :func:`run_measure_continuous_cli`."""
    return dict(
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
        seed=args.seed,
        threads=args.threads,
        output=args.output,
        save=not args.no_save,
        progress=not args.no_progress,
    )


def _sizes(value: Sequence[int] | str) -> Sequence[int]:
    """Batch sizes or prompt lengths: a comma-separated string parsed, a sequence as it is."""
    from batchlab.measure import parse_batch_sizes

    return parse_batch_sizes(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class ContinuousMeasureRun:
    """The outcome of :func:`run_measure_continuous_cli`: the step table, its summary by batch
    size and prompt length (:func:`batchlab.measure.decode_table`), the fitted step-time model
    and where it was saved."""

    steps: pd.DataFrame = field(repr=False)
    table: pd.DataFrame = field(repr=False)
    fit: Any  # batchlab.steptime.FittedStepTime
    path: Path | None

    def report(self) -> str:
        """Lines for the terminal."""
        settings = self.steps.attrs.get("settings", {})
        cfg = settings.get("engine_config", {})
        lines = [
            f"continuous-batching engine: {len(self.steps):,} steps, "
            f"{settings.get('num_threads', '?')} torch thread(s), "
            f"{cfg.get('max_batch_tokens', '?')} tokens and "
            f"{cfg.get('max_requests_per_batch', '?')} sequences per step at most",
            self.table.to_string(index=False, float_format=lambda v: f"{v:,.3f}"),
            "fitted step time (ms): "
            + ", ".join(f"{k} {v:.4g}" for k, v in self.fit.coefficients().items()),
            f"fit residual: {self.fit.residual}",
        ]
        if self.path is not None:
            lines.append(f"saved {self.path} (+ {self.path.with_suffix('.json').name})")
        return "\n".join(lines)


SERVED_REQUESTS = 48
"""``batchlab measure --engine continuous``'s default ``--served``: requests of each served
segment (varied lengths, Poisson arrivals at 30, 60 and 90 % of the grid's capacity), so the
fitted model covers the steps serving takes."""


def run_measure_continuous_cli(
    model: Any = "tiny",
    batch_sizes: Sequence[int] | str = "1,2,4,8",
    prompt_lens: Sequence[int] | str = "32,128,384",
    gen_len: int = 32,
    *,
    device: str = "auto",
    warmup: int = 1,
    repeats: int = 2,
    seed: int = 0,
    threads: int = 1,
    output: str | os.PathLike[str] | None = None,
    save: bool = True,
    progress: bool = True,
    served_requests: int = 0,
) -> ContinuousMeasureRun:
    """What ``batchlab measure --engine continuous`` does: time the continuous-batching engine
    step by step (:func:`batchlab.measure.measure_continuous`, with ``served_requests`` per
    served segment; the command's default is :data:`SERVED_REQUESTS`), fit the step-time model
    on every step, save (default: :func:`batchlab.measure.default_measurement_path`, the
    user's cache folder)."""
    from batchlab.measure import decode_table, fit_step_time, measure_continuous, save_measurement

    steps = measure_continuous(
        model,
        _sizes(batch_sizes),
        _sizes(prompt_lens),
        gen_len,
        device=device,
        warmup=warmup,
        repeats=repeats,
        seed=seed,
        threads=threads,
        progress=progress,
        served_requests=served_requests,
    )
    path = save_measurement(steps, output) if save else None
    return ContinuousMeasureRun(
        steps=steps, table=decode_table(steps), fit=fit_step_time(steps), path=path
    )


@dataclass(frozen=True)
class MeasureRun:
    """The outcome of :func:`run_measure_cli`: the table, where it was saved and its analysis."""

    table: pd.DataFrame = field(repr=False)
    path: Path | None
    summary: Any  # batchlab.measure.MeasurementSummary

    def report(self) -> str:
        """Lines for the terminal: the table's main columns and the analysis."""
        columns = [
            "batch_size",
            "prefill_ms",
            "decode_ms_per_step",
            "e2e_ms",
            "output_tokens_per_s",
            "peak_memory_mb",
            "kv_cache_mb",
            "oom",
        ]
        s = self.summary
        lines = [_table(self.table.loc[:, columns])]
        lines.append(
            f"saturation batch size (within {s.tolerance:.0%} of the best throughput): "
            f"{s.saturation_batch_size}"
        )
        lines.append(
            f"best throughput: {s.best_output_tokens_per_s:,.1f} output tokens/s at batch size "
            f"{s.best_throughput_batch_size}"
        )
        lines.append(f"Pareto-optimal batch sizes: {', '.join(map(str, s.pareto_batch_sizes))}")
        lines.append(
            f"memory per extra sequence: {s.memory_per_sequence_mb:,.3f} MB peak, "
            f"{s.kv_cache_per_sequence_mb:,.3f} MB KV cache"
        )
        if s.latency_limit_ms is not None:
            found = "none" if s.max_batch_under_latency is None else str(s.max_batch_under_latency)
            lines.append(
                f"largest batch size with {s.latency_column} <= {s.latency_limit_ms:g} ms: {found}"
            )
        if s.oom_batch_size is not None:
            lines.append(f"out of memory at batch size {s.oom_batch_size}")
        if self.path is not None:
            lines.append(f"saved {self.path} (+ {self.path.with_suffix('.json').name})")
        return "\n".join(lines)


def run_measure_cli(
    model: Any = "tiny",
    batch_sizes: Sequence[int] | str = "1,2,4,8,16",
    prompt_len: int = 128,
    gen_len: int = 32,
    *,
    device: str = "auto",
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    save: bool = True,
    latency_limit_ms: float | None = None,
    latency_column: str = "latency_ms_per_request",
    tolerance: float = 0.05,
    progress: bool = True,
    threads: int | None = 1,
) -> MeasureRun:
    """What ``batchlab measure`` (``--engine static``) does: measure with a progress bar,
    save, analyze.

    ``batch_sizes`` may be a string such as ``"1,2,4,8"``. Saves to ``output`` (default
    :func:`batchlab.measure.default_measurement_path`: the user's cache folder, never the
    repository) unless ``save`` is False. ``threads``: PyTorch's thread count (recorded). Print
    ``run.report()`` for the terminal.
    """
    from batchlab.measure import measure_batch_sizes, save_measurement, summarize_measurement

    table = measure_batch_sizes(
        model,
        _sizes(batch_sizes),
        prompt_len,
        gen_len,
        device,
        warmup,
        repeats,
        seed=seed,
        progress=progress,
        threads=threads,
    )
    path = save_measurement(table, output) if save else None
    summary = summarize_measurement(
        table, tolerance=tolerance, latency_limit_ms=latency_limit_ms, latency_column=latency_column
    )
    return MeasureRun(table=table, path=path, summary=summary)


def cmd_loadtest(args) -> int:
    """Measure a live OpenAI-compatible server at rising load (open-loop ``--rates``, closed-loop
    ``--concurrency``); print one row per level and the knees; ``--output`` writes the levels,
    the per-request records and the settings (after every level, atomically). Ctrl-C stops:
    the finished levels are printed and written, exit code 130."""
    import os

    from batchlab.loadtest import loadtest

    rates = args.rates or []
    concurrency = args.concurrency or []
    if not rates and not concurrency:
        raise InputError("give --rates and/or --concurrency", field="--rates")
    from batchlab.loadtest import MAX_LEVELS

    if len(rates) + len(concurrency) > MAX_LEVELS:
        raise InputError(f"at most {MAX_LEVELS} load levels in all", field="--rates")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InputError("the environment variable is not set", field=args.api_key_env)
    if args.output:
        out = Path(args.output)
        stem = out.with_suffix("")
        check_output_paths(
            [out, Path(f"{stem}.requests.jsonl"), Path(f"{stem}.json")], [args.input]
        )
    requests = read_requests_arg(args.input)
    steps = None
    if args.simulate_with is not None:  # read and checked before any traffic is sent
        steps = _replay_measurement(args.simulate_with, kv_blocks=None)
    try:
        result = loadtest(
            args.url,
            requests,
            model=args.model,
            rates=rates or None,
            concurrencies=concurrency or None,
            arrivals=args.arrivals,
            burstiness=args.burstiness,
            seed=args.seed,
            duration_s=args.duration_s,
            max_requests=args.max_requests,
            timeout_s=args.timeout_s,
            chat=args.chat,
            ignore_eos={"auto": None, "on": True, "off": False}[args.ignore_eos],
            label=args.label,
            api_key=api_key,
            progress=not args.no_progress,
            output=args.output,
        )
    except ImportError as exc:  # httpx missing: one line, exit code 2
        raise InputError(str(exc)) from exc
    knees = result.knees()
    comparison = None
    if steps is not None and len(result.levels):
        from batchlab.sim_vs_live import compare_loadtest

        comparison = compare_loadtest(result, steps)
    if args.json:
        _print_json(
            {
                "settings": dict(result.settings),
                "server": dict(result.server),
                "interrupted": result.interrupted,
                "knees": knees,
                "output": args.output,
                "levels": result.levels,
                **({"comparison": comparison} if comparison is not None else {}),
            }
        )
    else:
        srv = result.server
        fields = "ignore_eos accepted" if srv.get("ignore_eos") else "no ignore_eos"
        print(
            f"{srv.get('url', args.url)} ({args.model}, {srv.get('endpoint', '')}, {fields}, "
            f"{srv.get('tokens_per_word', float('nan')):.3g} tokens per prompt word): "
            f"{len(result.levels)} level(s)"
        )
        if len(result.levels):
            print(_table(result.table()))
        for mode, knee in knees.items():
            unit = "requests/s" if mode == "rate" else "clients"
            text = f"{knee:g} {unit}" if math.isfinite(knee) else "none within the sweep"
            print(f"knee ({mode}; p99 latency over 2x its lowest-load value): {text}")
        if args.output:
            print(f"written: {args.output} (+ .requests.jsonl, .json)")
        if comparison is not None:
            print(
                f"simulated on the step times of {args.simulate_with} (ratio: simulated / measured):"
            )
            print(_table(comparison))
    if result.interrupted:
        print("batchlab: interrupted: the levels above are the finished ones", file=sys.stderr)
        return 130
    return EXIT_OK


def _replay_measurement(path: str, *, kv_blocks: int | None) -> pd.DataFrame:
    """The step measurement ``batchlab replay`` and ``loadtest --simulate-with`` simulate on,
    read and checked: a measurement without the engine's settings needs ``--kv-blocks``."""
    from batchlab.measure import load_measurement

    steps = load_measurement(path)
    if kv_blocks is None and not steps.attrs.get("settings", {}).get("engine_config"):
        raise InputError(
            "records no engine settings (measure --engine continuous does): give the server's "
            "KV cache with batchlab replay --kv-blocks and its scheduler options",
            path=path,
        )
    return steps


def cmd_replay(args) -> int:
    """Replay a saved load test in the simulator: every level's own arrivals (open loop: the
    send times; closed loop: the same clients) on the step times fitted on MEASUREMENT (the
    server's engine, ``measure --engine continuous``) with the engine's scheduler (recorded in
    the measurement; the options override it); print measured vs simulated throughput, TTFT
    and latency per level with their ratios. ``--output`` writes the comparison and the
    simulated levels (OUT.csv, OUT.levels.csv: both or neither)."""
    from batchlab.io import all_or_nothing, atomic_path
    from batchlab.loadtest import load_loadtest
    from batchlab.sim_vs_live import compare_levels, replay_loadtest

    outputs = []
    if args.output is not None:
        out = Path(args.output)
        if out.suffix.lower() != ".csv":
            raise InputError("the output is a .csv path (OUT.levels.csv beside it)", path=out)
        outputs = [out, Path(f"{out.with_suffix('')}.levels.csv")]
        check_output_paths(outputs, [args.loadtest, args.step_time])
    result = load_loadtest(args.loadtest)
    if result.levels.empty:
        raise InputError("the load test has no finished level", path=args.loadtest)
    steps = _replay_measurement(args.step_time, kv_blocks=args.kv_blocks)
    options = {
        knob: getattr(args, dest)
        for knob, dest in _knob_dests().items()
        if getattr(args, dest, None) is not None
    }
    for name in ("kv_blocks", "block_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    try:
        simulated = replay_loadtest(result, steps, policy=args.policy, label=args.label, **options)
    except InputError as err:
        raise _in_cli_words(err, [*_SIMULATE_PARAMETERS, *_knob_dests()]) from None
    comparison = compare_levels(result.levels, simulated)
    if outputs:
        with all_or_nothing(), atomic_path(outputs[0]) as t1, atomic_path(outputs[1]) as t2:
            comparison.to_csv(t1, index=False, lineterminator="\n", float_format="%.6g")
            simulated.to_csv(t2, index=False, lineterminator="\n", float_format="%.6g")
    engine = steps.attrs.get("settings", {}).get("engine_config") or {}
    if args.json:
        _print_json(
            {
                "loadtest": args.loadtest,
                "step_time": args.step_time,
                "policy": args.policy,
                "engine_config": engine,
                "options": options,
                "comparison": comparison,
                "simulated": simulated,
                "output": args.output,
            }
        )
        return EXIT_OK
    if args.policy != "continuous":  # a padded policy takes only the engine's KV cache
        engine = {k: v for k, v in engine.items() if k in ("num_blocks", "page_size")}
    knobs = ", ".join(f"{k} {v}" for k, v in {**engine, **options}.items())
    print(
        f"{args.loadtest}: {len(result.levels)} level(s) replayed with {args.policy} on the step "
        f"times of {args.step_time} ({knobs}); ratio = simulated / measured"
    )
    print(_table(comparison))
    if outputs:
        print(f"written: {outputs[0]} (+ {outputs[1].name})")
    return EXIT_OK


def cmd_serve_tiny(args) -> int:
    """Serve the tiny random Llama (the model of ``measure --model tiny``) with ``transformers
    serve --continuous-batching`` on the CPU, in the foreground, until Ctrl-C."""
    from batchlab.tinyserver import serve_tiny

    code = serve_tiny(
        args.port,
        host=args.host,
        model_dir=args.model_dir,
        seed=args.seed,
        ready_timeout_s=args.ready_timeout_s,
        warmup=not args.no_warmup,
        threads=args.threads,
        num_blocks=args.cb_num_blocks,
        max_batch_tokens=args.cb_max_batch_tokens,
        announce=lambda line: print(line, flush=True),
    )
    return code if code in (130, 143) else (EXIT_OK if code == 0 else EXIT_FAILED)


# ----------------------------------------------------------------------------------- the parser


def _policy_help() -> str:
    from batchlab.simulate.policies import POLICIES

    return "batching policy: " + "; ".join(
        f"{name} ({'iteration-level' if cls.iteration_level else 'padded'})"
        for name, cls in POLICIES.items()
    )


def _knob_dests() -> dict[str, str]:
    """Policy knob name -> argparse dest of its option, for every registered policy."""
    from batchlab.simulate.policies import POLICIES

    return {k.name: f"policy_{k.name}" for cls in POLICIES.values() for k in cls.knobs}


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    """One ``--knob-name`` option per knob of every registered policy, from the declarations
    (type, range, unit, help, default; the policies that have it). The range is checked while
    parsing when every policy declaring the knob agrees on it; a knob given to a policy that
    lacks it is reported by the policy (exit 2)."""
    from batchlab.simulate.policies import POLICIES

    group = p.add_argument_group("policy options (from the policies' declared knobs)")
    knobs: dict[str, list[tuple[str, Any]]] = {}
    for name, cls in POLICIES.items():
        for knob in cls.knobs:
            knobs.setdefault(knob.name, []).append((name, knob))
    for knob_name, owners in knobs.items():
        first = owners[0][1]
        for _, other in owners[1:]:
            if (other.type, other.sequence) != (first.type, first.sequence):
                raise TypeError(f"policies declare knob {knob_name!r} with different types")
        helps: dict[str, list[str]] = {}
        for policy, knob in owners:
            helps.setdefault(knob.help, []).append(policy)
        text = "; ".join(f"{'/'.join(ps)}: {h}" for h, ps in helps.items())
        if first.unit:
            text += f" ({first.unit})"
        defaults: dict[str, list[str]] = {}
        for policy, knob in owners:
            defaults.setdefault(str(knob.default), []).append(policy)
        text += "; default: " + ", ".join(f"{d} ({'/'.join(ps)})" for d, ps in defaults.items())
        flag = "--" + knob_name.replace("_", "-")
        dest = f"policy_{knob_name}"
        ranges = {(k.min_val, k.max_val, k.include_boundaries, k.allow_inf) for _, k in owners}
        bounds: dict[str, Any] = {}
        if len(ranges) == 1:
            lo, hi, include, inf = ranges.pop()
            bounds = dict(min_val=lo, max_val=hi, include_boundaries=include, allow_inf=inf)
        if first.type is bool:
            group.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif first.sequence:
            group.add_argument(
                flag,
                dest=dest,
                type=list_option(first.type, unit=first.unit, **bounds),
                metavar="A,B,...",
                help=text,
            )
        else:
            group.add_argument(
                flag,
                dest=dest,
                type=number_option(first.type, unit=first.unit, **bounds),
                metavar=knob_name.upper(),
                help=text,
            )


def seconds_option(max_val: float | None = None) -> Any:
    """An argparse ``type=`` for a duration: seconds > 0 (at most ``max_val`` s)."""
    return number_option(float, min_val=0, max_val=max_val, include_boundaries="right", unit="s")


def rate_list_option(max_items: int) -> Any:
    """An argparse ``type=`` for comma-separated arrival rates: requests/s > 0, each at most
    :data:`batchlab.loadtest.MAX_RATE`, at most ``max_items`` of them."""
    from batchlab.loadtest import MAX_RATE

    return list_option(
        float, min_val=0, max_val=MAX_RATE, include_boundaries="right", max_items=max_items
    )


def add_command(sub: Any, name: str, help: str, func: Any) -> argparse.ArgumentParser:
    """A subcommand ``name`` of ``sub`` (``add_subparsers``) run by ``func(args)``, which
    returns the exit code."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(func=func)
    return p


def add_json_option(p: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_output_option(p: argparse.ArgumentParser, help: str, metavar: str = "OUT.csv") -> None:
    """``--output`` / ``-o``: the one file a command writes (and its named companions)."""
    p.add_argument("--output", "-o", metavar=metavar, help=help)


def add_request_selection_options(p: argparse.ArgumentParser) -> None:
    """``--first-s`` and ``--max-requests``: keep IN's requests arriving in the first S seconds,
    and / or its first N requests in arrival order."""
    p.add_argument(
        "--first-s", type=seconds_option(), help="keep requests arriving in the first S seconds"
    )
    p.add_argument(
        "--max-requests",
        type=number_option(int, min_val=1),
        help="keep the first N requests (arrival order)",
    )


def add_policy_option(p: argparse.ArgumentParser) -> None:
    """``--policy``: one of the registered batching policies (default continuous)."""
    from batchlab.simulate.policies import POLICIES

    p.add_argument("--policy", default="continuous", choices=list(POLICIES), help=_policy_help())


def add_kv_cache_options(
    p: argparse.ArgumentParser,
    *,
    kv_blocks_help: str,
    block_size_help: str,
    block_size_default: int | None = None,
) -> None:
    """``--kv-blocks`` (the KV-cache budget in blocks) and ``--block-size`` (tokens per block)."""
    from batchlab.simulate.engine import MAX_BLOCK_SIZE, MAX_KV_BLOCKS

    p.add_argument(
        "--kv-blocks",
        type=number_option(int, min_val=1, max_val=MAX_KV_BLOCKS),
        help=kv_blocks_help,
    )
    p.add_argument(
        "--block-size",
        type=number_option(int, min_val=1, max_val=MAX_BLOCK_SIZE, unit="tokens"),
        default=block_size_default,
        help=block_size_help,
    )


def add_threads_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--threads``: a whole number of threads in [1, 1024], default 1."""
    p.add_argument(
        "--threads", type=number_option(int, min_val=1, max_val=1024), default=1, help=help
    )


def _burstiness_option() -> Any:
    """An argparse ``type=`` for a burstiness: the inter-arrival CV, in the workload's range."""
    from batchlab.workload import MAX_BURSTINESS, MIN_BURSTINESS

    return number_option(float, min_val=MIN_BURSTINESS, max_val=MAX_BURSTINESS)


def _requests_help() -> str:
    from batchlab.trace_registry import TRACES

    traces = ", ".join(TRACES)
    return f"a request file (JSONL, CSV, Parquet, or a trace's CSV) or a trace: {traces}"


_WHOLE = number_option(int, min_val=1)
_SEED = number_option(int, min_val=0, max_val=MAX_INT)


def _profile_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab profile``."""
    requests_help = _requests_help()
    p.add_argument("inputs", nargs="+", metavar="IN", help=requests_help)


def _plan_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab plan``."""
    from batchlab.planner import MAX_SHAPES, MAX_TIME_LIMIT_S

    requests_help = _requests_help()
    p.add_argument("inputs", nargs="+", metavar="IN", help=requests_help)
    p.add_argument(
        "--output",
        "-o",
        nargs="+",
        required=True,
        metavar="OUT",
        help="one plan file per input (JSONL); beside each, its settings in a sidecar "
        "(p.jsonl -> p.meta.json)",
    )
    p.add_argument(
        "--max-shapes",
        type=_WHOLE,
        default=8,
        help="distinct shapes of all plans together, at most (clamped to the distinct aligned "
        f"prompt lengths and to {MAX_SHAPES})",
    )
    p.add_argument("--limits", metavar="LIMITS.toml", help="limits per input file stem")
    p.add_argument(
        "--time-limit",
        type=seconds_option(MAX_TIME_LIMIT_S),
        default=10.0,
        metavar="S",
        help="hard cap on planning time in seconds (the planner's own budgets are work, so the "
        "plan does not depend on the machine unless this cap binds; --exact always spends it "
        "proving the optimum)",
    )
    p.add_argument(
        "--exact",
        choices=("auto", "always", "never"),
        default="auto",
        help="solve the exact model: when it is small (auto), always (to the proven optimum, "
        "on a model small enough to set up in --time-limit; a larger one warns and is planned "
        "as under auto), or never",
    )
    add_cost_model_options(p)


def _verify_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab verify``."""
    from batchlab.shapes import MAX_GRANULARITY

    requests_help = _requests_help()
    p.add_argument(
        "files", nargs="+", metavar="IN_OR_PLAN", help=f"requests ({requests_help}), then plans"
    )
    p.add_argument(
        "--max-shapes",
        type=_WHOLE,
        default=None,
        help="distinct shapes of all plans together, at most (default: the plans' own cap, "
        "from their PLAN.meta.json, else no cap)",
    )
    p.add_argument(
        "--granularity",
        type=number_option(int, min_val=1, max_val=MAX_GRANULARITY, unit="tokens"),
        default=None,
        help="alignment g in tokens (default: --cost-model's, else the plans', from "
        "PLAN.meta.json, else 64)",
    )
    p.add_argument(
        "--cost-model",
        default=None,
        metavar="MODEL",
        help="take the granularity from this cost model (as plan and evaluate)",
    )


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab evaluate``."""
    requests_help = _requests_help()
    p.add_argument("requests", metavar="IN", help=requests_help)
    p.add_argument("plan", metavar="PLAN", help="a plan file (JSONL)")
    add_cost_model_options(p, from_plan=True)


def _simulate_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab simulate``."""
    from batchlab.roofline import GPUS, MODELS
    from batchlab.workload import MAX_ARRIVAL_S

    requests_help = _requests_help()
    p.add_argument("input", metavar="IN", help=requests_help)
    add_policy_option(p)
    p.add_argument(
        "--model",
        default="llama-2-7b",
        help=f"model preset for roofline step times: {', '.join(MODELS)}",
    )
    p.add_argument(
        "--gpu", default="h100-sxm", help=f"GPU preset: {', '.join(GPUS)}, or Nx<preset>"
    )
    times = p.add_mutually_exclusive_group()
    times.add_argument(
        "--ideal",
        action="store_true",
        help="data-sheet roofline step times (default: calibrated on measured GPU profiles)",
    )
    times.add_argument(
        "--step-time",
        metavar="MEASUREMENT.csv",
        help="step times fitted on a measurement (batchlab measure); --model/--gpu then only "
        "size the KV cache",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--rate",
        type=number_option(float, min_val=0, max_val=1e9, include_boundaries="right"),
        help="open loop: Poisson arrivals, requests/s (default: the trace's arrival_s)",
    )
    load.add_argument(
        "--concurrency",
        type=_WHOLE,
        help="closed loop: number of clients (more than the requests: one per request)",
    )
    p.add_argument(
        "--burstiness",
        type=_burstiness_option(),
        help="with --rate: inter-arrival CV (1 = Poisson; default 1)",
    )
    p.add_argument(
        "--think-time-ms",
        type=number_option(float, min_val=0, max_val=MAX_ARRIVAL_S * 1e3, unit="ms"),
        help="with --concurrency: ms between a response and the next request (default 0)",
    )
    p.add_argument("--seed", type=_SEED, default=0, help="seed of drawn arrivals")
    add_request_selection_options(p)
    _add_policy_options(p)
    add_kv_cache_options(
        p,
        kv_blocks_help="KV-cache budget in blocks (default: what fits in the GPU)",
        block_size_help="tokens per KV block",
        block_size_default=16,
    )
    p.add_argument(
        "--memory-fraction",
        type=number_option(float, min_val=0, max_val=1, include_boundaries="right"),
        default=0.9,
        help="share of GPU memory usable",
    )


def _capacity_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab capacity``."""
    from batchlab.capacity import MAX_NUM_SEQS, MAX_REPLICAS

    requests_help = _requests_help()
    p.add_argument("input", metavar="IN", help=requests_help)
    p.add_argument(
        "--gpus",
        default="a100-80gb,h100-sxm,h200-sxm",
        help="GPU presets, comma-separated (Nx<preset> for N GPUs per replica)",
    )
    p.add_argument("--model", default="llama-3-8b", help="model presets, comma-separated")
    p.add_argument(
        "--max-num-seqs",
        type=list_option(int, min_val=1, max_val=MAX_NUM_SEQS, max_items=16),
        default=[256],
        help="comma-separated (sequences)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        default="default",
        help="comma-separated tokens per step, or 'default'",
    )
    p.add_argument("--chunked-prefill", default="off", help="off, on or off,on")
    p.add_argument(
        "--routers",
        default="round-robin",
        help="comma-separated: round-robin, least-requests, least-tokens",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--traffic",
        type=list_option(float, min_val=0, max_val=1e6, include_boundaries="right", max_items=16),
        default=[1.0],
        help="speedups of IN's arrivals, e.g. 1,5",
    )
    load.add_argument(
        "--rates",
        type=rate_list_option(16),
        help="Poisson arrivals at these requests/s instead, e.g. 20,40",
    )
    p.add_argument("--seed", type=_SEED, default=0, help="seed of --rates arrivals")
    slo = p.add_argument_group("SLO limits (ms; at least one)")
    for metric, what in (
        ("ttft", "time to first token"),
        ("tpot", "time per output token"),
        ("e2e", "end-to-end latency"),
    ):
        for pct in (50, 90, 99):
            slo.add_argument(
                f"--{metric}-p{pct}-ms",
                dest=f"slo_{metric}_p{pct}_ms",
                type=number_option(float, min_val=0, include_boundaries="neither", unit="ms"),
                metavar="MS",
                help=f"p{pct} {what} at most MS",
            )
    p.add_argument(
        "--prices",
        metavar="PRICES.csv",
        help="gpu,price_per_gpu_hour[,currency,source,date] (example: docs/gpu_prices_example.csv)",
    )
    p.add_argument(
        "--max-replicas",
        type=number_option(int, min_val=1, max_val=MAX_REPLICAS),
        default=64,
        help="the most replicas tried",
    )
    p.add_argument(
        "--check-above",
        type=number_option(int, min_val=0, max_val=64),
        default=1,
        help="counts above the answer checked",
    )
    p.add_argument("--latency", default="ttft_p99_ms", help="the Pareto front's latency column")
    add_request_selection_options(p)
    p.add_argument(
        "--workers",
        type=number_option(int, min_val=1, max_val=256),
        help="simulate configurations in N processes",
    )
    p.add_argument("--dask", metavar="ADDRESS", help="run on this dask.distributed scheduler")
    add_output_option(p, "write the table of every configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _measure_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab measure``."""
    from batchlab.measure.table import MAX_BATCH_SIZE, MAX_REPEATS
    from batchlab.workload import MAX_LENGTH

    p.add_argument(
        "--model", default="tiny", help="'tiny' (random small Llama, no download) or a local folder"
    )
    p.add_argument(
        "--engine",
        choices=("static", "continuous"),
        default="static",
        help="static: padded batches decoding together, one row per batch size; continuous: "
        "transformers' continuous-batching engine, one row per step, and a fitted step-time model",
    )
    p.add_argument(
        "--batch-sizes",
        default=None,
        help=f"comma-separated, e.g. 1,2,4,8 (each in [1, {MAX_BATCH_SIZE}]; default static "
        "1,2,4,8,16, continuous 1,2,4,8)",
    )
    lengths = dict(max_val=MAX_LENGTH, unit="tokens")
    p.add_argument(
        "--prompt-len",
        type=number_option(int, min_val=1, **lengths),
        default=None,
        help="static: prompt tokens per sequence (default 128; with --gen-len, within the "
        "model's positions)",
    )
    p.add_argument(
        "--prompt-lens",
        default=None,
        help="continuous: comma-separated prompt lengths, the contexts decode is measured at "
        "(default 32,128,384)",
    )
    p.add_argument(
        "--gen-len",
        type=number_option(int, min_val=2, **lengths),
        default=32,
        help="generated tokens per sequence",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    add_threads_option(p, "PyTorch threads (recorded)")
    p.add_argument(
        "--warmup",
        type=number_option(int, min_val=0, max_val=MAX_REPEATS),
        default=1,
        help="discarded runs per batch size",
    )
    p.add_argument(
        "--repeats",
        type=number_option(int, min_val=1, max_val=MAX_REPEATS),
        default=None,
        help="timed runs per setting (median; default static 3, continuous 2)",
    )
    p.add_argument(
        "--served",
        type=number_option(int, min_val=0, max_val=100_000),
        default=None,
        help="continuous: after each pass over the grid, serve this many requests of varied "
        "lengths with Poisson arrivals at 30, 60 and 90 %% of the grid's capacity, their steps "
        "fitted too, as serving takes them (default 48; 0: the grid alone)",
    )
    p.add_argument("--seed", type=_SEED, default=0, help="seed of the prompts and tiny weights")
    add_output_option(
        p,
        "where to save, with OUT.json beside it (default: the user's cache folder, e.g. "
        "~/.cache/batchlab/measurements/<model>-<device>-p<P>-g<G>.csv; printed)",
    )
    p.add_argument("--no-save", action="store_true", help="do not write the CSV and JSON")
    p.add_argument(
        "--latency-limit-ms",
        type=number_option(float, min_val=0, include_boundaries="neither", unit="ms"),
        help="report the largest size meeting it",
    )
    p.add_argument(
        "--latency-column",
        default="latency_ms_per_request",
        choices=("latency_ms_per_request", "decode_ms_per_step", "prefill_ms", "e2e_ms"),
        help="the latency the limit applies to (decode_ms_per_step: time per output token)",
    )
    p.add_argument(
        "--tolerance",
        type=number_option(float, min_val=0, max_val=1, include_boundaries="left"),
        default=0.05,
        help="saturation: share of the best throughput",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _loadtest_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab loadtest``."""
    from batchlab.loadtest import (
        MAX_CONCURRENCY,
        MAX_DURATION_S,
        MAX_LEVELS,
        MAX_TIMEOUT_S,
    )

    requests_help = _requests_help()
    p.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000 (or .../v1)")
    p.add_argument("input", metavar="IN", help=requests_help)
    p.add_argument("--model", required=True, help="the model name the server serves")
    p.add_argument(
        "--rates",
        type=rate_list_option(MAX_LEVELS),
        help="open loop: comma-separated requests/s, e.g. 1,2,4",
    )
    p.add_argument(
        "--concurrency",
        type=list_option(int, min_val=1, max_val=MAX_CONCURRENCY, max_items=MAX_LEVELS),
        help="closed loop: comma-separated clients, e.g. 1,4,16",
    )
    p.add_argument(
        "--arrivals",
        default="poisson",
        choices=("poisson", "trace"),
        help="open loop: Poisson (seeded) or the trace's arrival_s scaled to each rate",
    )
    p.add_argument(
        "--burstiness",
        type=_burstiness_option(),
        default=1.0,
        help="poisson: inter-arrival CV",
    )
    p.add_argument("--seed", type=_SEED, default=0, help="seed of the arrivals and prompt words")
    p.add_argument(
        "--duration-s",
        type=seconds_option(MAX_DURATION_S),
        default=60.0,
        help="seconds of sending per level",
    )
    p.add_argument("--max-requests", type=_WHOLE, help="at most N requests per level")
    p.add_argument(
        "--timeout-s",
        type=seconds_option(MAX_TIMEOUT_S),
        default=60.0,
        help="per-request limit (seconds)",
    )
    p.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    p.add_argument(
        "--ignore-eos",
        default="auto",
        choices=("auto", "on", "off"),
        help="send ignore_eos/min_tokens: auto (if the server accepts them), on, off",
    )
    p.add_argument("--label", default="measured", help="the policy column of the table")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding an API key")
    add_output_option(
        p,
        "write the levels (+ OUT.requests.jsonl, OUT.json)",
    )
    p.add_argument(
        "--simulate-with",
        metavar="MEASUREMENT.csv",
        help="then replay each level in the simulator on this measurement of the server's "
        "engine (measure --engine continuous) and print measured vs simulated",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _replay_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab replay``."""

    p.add_argument("loadtest", metavar="LOADTEST.csv", help="a load test (batchlab loadtest -o)")
    p.add_argument(
        "--step-time",
        required=True,
        metavar="MEASUREMENT.csv",
        help="step times of the server's engine (batchlab measure --engine continuous; its "
        "engine settings are the simulator's unless the options below say otherwise)",
    )
    add_policy_option(p)
    _add_policy_options(p)
    add_kv_cache_options(
        p,
        kv_blocks_help="the server's KV cache in blocks (default: the measured engine's)",
        block_size_help="tokens per KV block (default: the measured engine's)",
    )
    p.add_argument("--label", default="simulated", help="the policy column of the simulated levels")
    add_output_option(
        p,
        "write the comparison (+ OUT.levels.csv, the simulated levels)",
    )


def _serve_tiny_options(p: argparse.ArgumentParser) -> None:
    """The options of ``batchlab serve-tiny``."""
    from batchlab.loadtest import MAX_TIMEOUT_S

    p.add_argument(
        "--port", type=number_option(int, min_val=1, max_val=65535), default=8000, help="TCP port"
    )
    p.add_argument("--host", default="127.0.0.1", help="a loopback address")
    p.add_argument("--model-dir", help="where to save the model (default: the user cache)")
    p.add_argument("--seed", type=_SEED, default=0, help="seed of the random weights")
    p.add_argument(
        "--ready-timeout-s",
        type=seconds_option(MAX_TIMEOUT_S),
        default=180.0,
        help="wait for the server",
    )
    p.add_argument("--no-warmup", action="store_true", help="announce before a warm-up request")
    add_threads_option(p, "the server's OpenMP threads")
    p.add_argument(
        "--cb-num-blocks",
        type=number_option(int, min_val=1, max_val=1 << 20),
        default=64,
        help="KV-cache pages of 256 tokens",
    )
    p.add_argument(
        "--cb-max-batch-tokens",
        type=number_option(int, min_val=1, max_val=1 << 20, unit="tokens"),
        default=512,
        help="tokens per step",
    )


#: every command: (name, help, the function that adds its options, the function that runs it),
#: in --help's order
_COMMANDS = (
    ("profile", "profile request files or traces", _profile_options, cmd_profile),
    (
        "plan",
        "plan request files into batches and shapes (each plan with a PLAN.meta.json)",
        _plan_options,
        cmd_plan,
    ),
    ("verify", "verify plans: IN... PLAN... (as many of each)", _verify_options, cmd_verify),
    (
        "evaluate",
        "evaluate a plan (with the cost model it was made with)",
        _evaluate_options,
        cmd_evaluate,
    ),
    (
        "simulate",
        "simulate serving requests with a batching policy (IN: a request file or a trace name)",
        _simulate_options,
        cmd_simulate,
    ),
    (
        "capacity",
        "the fewest GPUs and the cheapest serving configuration meeting an SLO for traffic",
        _capacity_options,
        cmd_capacity,
    ),
    (
        "measure",
        "measure generation on this machine: padded batches (static) or every step of a continuous-batching engine",
        _measure_options,
        cmd_measure,
    ),
    (
        "loadtest",
        "measure a live OpenAI-compatible server at rising load (rates and/or concurrency)",
        _loadtest_options,
        cmd_loadtest,
    ),
    (
        "replay",
        "replay a saved load test in the simulator: measured vs simulated per level",
        _replay_options,
        cmd_replay,
    ),
    (
        "serve-tiny",
        "serve the tiny random Llama with transformers serve on 127.0.0.1 (Ctrl-C stops)",
        _serve_tiny_options,
        cmd_serve_tiny,
    ),
)


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The ``batchlab`` argument parser: every number option range-checked while parsing
    (:func:`number_option`), every ``--help`` with defaults, ranges and choices.

    ``lazy``: each command's options are added when that command is parsed or its help is
    shown, not before (what :func:`main` does, so that ``batchlab evaluate`` imports neither
    the simulator nor the planner); the parser parses and prints exactly as the full one."""
    parser = _Parser(
        prog="batchlab", description="Batching LLM inference requests.", epilog=EXIT_CODES_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text, add_options, run in _COMMANDS:
        if name != "serve-tiny":  # every command that prints results: last, --json
            add_options = _then_json(add_options)
        add_command(sub, name, help_text, run).add_options(add_options, lazy=lazy)
    return parser


def _then_json(add_options: Any) -> Any:
    """``add_options`` followed by :func:`add_json_option`."""

    def add(p: argparse.ArgumentParser) -> None:
        add_options(p)
        add_json_option(p)

    return add


class _Terminated(BaseException):
    """SIGTERM: raised in the main thread (a BaseException, so that no ``except Exception``
    swallows it) and unwinding through every write in progress, which removes its temp files."""


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` and SIGINT ``KeyboardInterrupt`` while the command
    runs (in the main thread; a signal the caller ignores stays ignored); the previous handlers
    come back afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = {}
    for sig, handler in ((signal.SIGTERM, on_term), (signal.SIGINT, signal.default_int_handler)):
        current = signal.getsignal(sig)
        if current is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (``| head`` after its lines)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :data:`EXIT_CODES_HELP`)."""
    from batchlab.io import recording_writes

    with _signal_handlers(), recording_writes() as written:
        try:
            parser = build_parser(lazy=True)
            try:
                args = parser.parse_args(argv)
            except SystemExit as done:  # --help (0), or a usage error argparse reported (2)
                return done.code if isinstance(done.code, int) else EXIT_USAGE
            return args.func(args)
        except LimitError as err:
            print(f"batchlab: limit not met: {err}", file=sys.stderr)
            return EXIT_FAILED
        except VerificationError as err:
            print(f"batchlab: {err}", file=sys.stderr)
            return EXIT_FAILED
        except (InputError, BatchlabError) as err:
            print(f"batchlab: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError as err:
            if _stdout_closed():  # | head: the reader has what it wanted; exit quietly
                _silence_stdout()
                return EXIT_BROKEN_PIPE
            print(f"batchlab: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as err:  # a file that cannot be read or written: the user's to fix
            print(f"batchlab: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(f"batchlab: interrupted{_after_writing(written)}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except _Terminated:
            print(f"batchlab: terminated{_after_writing(written)}", file=sys.stderr)
            return EXIT_TERMINATED
        except Exception:
            print(
                "batchlab: internal error (a bug in batchlab, not in your input; please report "
                "it with the traceback below):",
                file=sys.stderr,
            )
            traceback.print_exc(file=sys.stderr)
            return EXIT_INTERNAL


def _after_writing(written: Sequence[Path]) -> str:
    """What a command stopped by a signal had written whole (its outputs are all written, or
    none): nothing, or `` after writing PATH, ...``."""
    return f" after writing {', '.join(map(str, written))}" if written else ""


def _one_line(err: BaseException) -> str:
    return str(err).replace("\n", " ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
