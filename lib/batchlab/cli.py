"""The ``batchlab`` command line: profile, plan, verify, evaluate, simulate, measure.

Exit codes: 0 success; 1 a limit cannot be met or a plan fails verification; 2 usage or input
errors (one readable line on stderr naming the file, line, field, option or request id, no
traceback); 70 an internal error (a bug: reported as such, with its traceback); 130
interrupted. ``--json`` prints machine-readable output.

``batchlab simulate`` has one ``--option`` per knob of every registered batching policy,
generated from the policies' declarations (:mod:`batchlab.simulate.policies`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchlab.checks import check_scalar
from batchlab.errors import BatchlabError, InputError, LimitError, VerificationError

if TYPE_CHECKING:  # pandas is imported by the commands that build tables (evaluate starts
    import pandas as pd  # and runs without it)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): an internal error
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 a limit cannot be met or a plan fails verification; "
    "2 usage or input error (one line on stderr); 70 internal error (a bug, with its "
    "traceback); 130 interrupted"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit code 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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


def _table(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:,.6g}")


def _metric_table(values: dict[str, float | int]) -> str:
    """``_table`` of a (metric, value) frame of numbers, without pandas: right-aligned columns,
    every value as a float with ``,.6g`` (the same text; a test compares them)."""
    names = list(values)
    cells = [f"{float(v):,.6g}" for v in values.values()]
    w1 = max(len("metric"), *(len(x) for x in names))
    w2 = max(len("value"), *(len(x) for x in cells))
    lines = [f"{'metric':>{w1}} {'value':>{w2}}"]
    lines += [f"{name:>{w1}} {cell:>{w2}}" for name, cell in zip(names, cells, strict=True)]
    return "\n".join(lines)


def _cost_model(args):
    from batchlab.cost import get_cost_model

    cm = get_cost_model(args.cost_model)
    g = getattr(args, "granularity", None)
    if g is not None and g != cm.granularity:
        cm = cm.with_coefficients(granularity=g, name=f"{cm.name} (g={g})")
    return cm


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _read_requests(path: str) -> pd.DataFrame:
    from batchlab.workload import read_requests

    df = read_requests(path)
    df.attrs["source"] = path
    return df


def _requests_or_trace(source: str) -> pd.DataFrame:
    """A request file, or a registered trace (by name)."""
    from batchlab.datasets import TRACES, load_trace

    if Path(source).exists():
        return _read_requests(source)
    if source.strip().lower() in TRACES:
        return load_trace(source.strip().lower())
    raise InputError(
        f"no such request file, and not a registered trace name (traces: {', '.join(TRACES)})",
        path=source,
    )


def _number_list(text: str | None, option: str, *, whole: bool) -> list[float] | list[int]:
    """``"1,2,4"`` -> [1, 2, 4]: positive numbers (whole numbers when ``whole``)."""
    if text is None:
        return []
    values = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise InputError(f"not a number: {part.strip()!r} in {text!r}", field=option) from None
        if not (math.isfinite(v) and v > 0) or (whole and v != int(v)):
            kind = "whole numbers >= 1" if whole else "positive numbers"
            raise InputError(f"must be comma-separated {kind}, got {text!r}", field=option)
        values.append(int(v) if whole else v)
    return values


# ------------------------------------------------------------------------------------- commands


def cmd_profile(args) -> int:
    from batchlab.workload import profile

    out = {}
    for path in args.inputs:
        prof = profile(_read_requests(path))
        out[path] = prof
    if args.json:
        _print_json({p: v.to_frame() for p, v in out.items()})
        return EXIT_OK
    for path, prof in out.items():
        print(f"== {path}: {prof.n_requests:,} requests")
        print(_table(prof.lengths.reset_index(names="field")))
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
    from batchlab.plan import write_plan
    from batchlab.planner import plan_requests, read_limits

    if len(args.output) != len(args.inputs):
        raise InputError(
            f"{len(args.inputs)} input(s) but {len(args.output)} --output path(s): give one per input",
            field="--output",
        )
    names = [Path(p).stem for p in args.inputs]
    if len(set(names)) != len(names):
        raise InputError(f"input file stems must be unique (they name the buckets), got {names}")
    buckets = {n: _read_requests(p) for n, p in zip(names, args.inputs, strict=True)}
    limits = None
    if args.limits:
        limits = read_limits(args.limits)
        unknown = sorted(set(limits) - set(names))
        if unknown:
            raise InputError(
                f"tables {unknown} match no input file stem (stems: {names})", path=args.limits
            )
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = plan_requests(
            buckets,
            _cost_model(args),
            args.max_shapes,
            limits,
            time_limit_s=args.time_limit,
            exact=args.exact,
            progress=not args.json and sys.stderr.isatty(),
        )
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    for bp, out in zip(result.buckets, args.output, strict=True):
        write_plan(bp.plan, out)
    comparison = result.comparison()
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
                        "output": out,
                        "summary": bp.evaluation.summary(),
                        "lower_bound": bp.lower_bound,
                        "optimality_gap": bp.optimality_gap,
                        "bounds": bp.bounds.as_dict(),
                        "settings": bp.settings,
                    }
                    for bp, out in zip(result.buckets, args.output, strict=True)
                },
                "comparison": comparison,
            }
        )
        return EXIT_OK
    print(
        f"shapes used ({len(result.shapes)} of at most {result.max_shapes}): {list(result.shapes)}"
    )
    for bp, out in zip(result.buckets, args.output, strict=True):
        print(
            f"{bp.name}: {bp.evaluation.n_requests:,} requests in {bp.evaluation.n_batches:,} batches"
            f" -> {out}; cost {bp.evaluation.cost.total:,.6g}, lower bound {bp.lower_bound:,.6g},"
            f" certified gap {100 * bp.optimality_gap:.3f} %"
        )
    print(
        f"total: cost {result.total_cost:,.6g}, lower bound {result.lower_bound:,.6g},"
        f" certified gap {100 * result.optimality_gap:.3f} %"
    )
    print(_table(comparison))
    return EXIT_OK


def cmd_verify(args) -> int:
    from batchlab.plan import read_plan, verify_plans

    paths = args.files
    if len(paths) < 2 or len(paths) % 2:
        raise InputError(
            f"give the request files then the plan files, as many of each; got {len(paths)} path(s)"
        )
    half = len(paths) // 2
    requests = [_read_requests(p) for p in paths[:half]]
    plans = [read_plan(p) for p in paths[half:]]
    report = verify_plans(requests, plans, max_shapes=args.max_shapes, granularity=args.granularity)
    if args.json:
        _print_json(
            {"ok": report.ok, "n_shapes": report.n_shapes, "violations": list(report.violations)}
        )
    elif report.ok:
        print(f"ok: {half} plan(s) verified, {report.n_shapes} distinct shape(s)")
    if not report.ok:
        for v in report.violations:
            print(f"batchlab: violation: {v}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from batchlab.evaluate import evaluate_files

    summary, cost = evaluate_files(args.requests, args.plan, _cost_model(args))
    if args.json:
        _print_json({"summary": summary, "cost": cost})
        return EXIT_OK
    print(_metric_table(summary))
    return EXIT_OK


def cmd_simulate(args) -> int:
    """Simulate serving IN (a request file, or a registered trace name such as
    ``azure-conv-2023``) with a batching policy; print the aggregates (``--json``: as JSON)."""
    from batchlab.simulate import simulate

    source = args.input
    requests = _requests_or_trace(source)
    if args.first_s is not None:
        check_scalar(
            args.first_s, "--first-s", float, min_val=0, include_boundaries="neither", unit="s"
        )
        if "arrival_s" not in requests.columns:
            raise InputError("--first-s needs an arrival_s column", path=source, field="arrival_s")
        requests = requests[requests["arrival_s"].to_numpy(dtype=np.float64) < args.first_s]
    if args.max_requests is not None:
        check_scalar(args.max_requests, "--max-requests", int, min_val=1)
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
        load["concurrency"] = args.concurrency
        if args.think_time_ms is not None:
            load["think_time_ms"] = args.think_time_ms
    elif args.think_time_ms is not None:
        raise InputError(
            "--think-time-ms applies to a closed loop (--concurrency)", field="--think-time-ms"
        )
    result = simulate(
        requests,
        args.policy,
        model=args.model,
        gpu=args.gpu,
        seed=args.seed,
        kv_blocks=args.kv_blocks,
        block_size=args.block_size,
        memory_fraction=args.memory_fraction,
        **load,
        **options,
    )
    summary = result.summary()
    info = {
        "input": source,
        "n_requests": len(requests),
        "policy": result.policy,
        "options": dict(result.options),
        "model": args.model,
        "gpu": args.gpu,
        "mode": result.mode,
        "kv_blocks": result.kv_blocks,
        "block_size": result.block_size,
        "kv_tokens": result.kv_blocks * result.block_size,
    }
    if args.json:
        _print_json({**info, "summary": summary})
        return EXIT_OK
    opts = ", ".join(f"{k}={v}" for k, v in result.options.items())
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
        f"{result.policy} ({opts}) on {args.model} / {args.gpu}"
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


def cmd_measure(args) -> int:
    """Measure greedy generation at several batch sizes on this machine (``--model tiny``: a
    small random Llama, no download); print the table and its analysis (saturation, memory per
    sequence, latency-limited size), and save it as CSV + JSON unless ``--no-save``."""
    from batchlab.measure import parse_batch_sizes

    sizes = parse_batch_sizes(args.batch_sizes)  # checked before the (slow) measurement
    if args.no_save and args.output is not None:
        raise InputError("--output and --no-save contradict each other", field="--output")
    check_scalar(
        args.tolerance, "--tolerance", float, min_val=0, max_val=1, include_boundaries="left"
    )
    check_scalar(
        args.latency_limit_ms,
        "--latency-limit-ms",
        float,
        min_val=0,
        include_boundaries="neither",
        allow_none=True,
        unit="ms",
    )
    try:
        run = run_measure_cli(
            args.model,
            sizes,
            args.prompt_len,
            args.gen_len,
            device=args.device,
            warmup=args.warmup,
            repeats=args.repeats,
            seed=args.seed,
            output=args.output,
            save=not args.no_save,
            latency_limit_ms=args.latency_limit_ms,
            latency_column=args.latency_column,
            tolerance=args.tolerance,
            progress=not args.no_progress,
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
        lines = [
            self.table.loc[:, columns].to_string(index=False, float_format=lambda v: f"{v:,.2f}")
        ]
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
) -> MeasureRun:
    """What ``batchlab measure`` does: measure with a progress bar, save, analyze.

    ``batch_sizes`` may be a string such as ``"1,2,4,8"``. Saves to ``output`` (default
    :func:`batchlab.measure.default_measurement_path` under ``data/measurements/``) unless
    ``save`` is False. Print ``run.report()`` for the terminal.
    """
    from batchlab.measure import (
        measure_batch_sizes,
        parse_batch_sizes,
        save_measurement,
        summarize_measurement,
    )

    sizes = parse_batch_sizes(batch_sizes) if isinstance(batch_sizes, str) else batch_sizes
    table = measure_batch_sizes(
        model, sizes, prompt_len, gen_len, device, warmup, repeats, seed=seed, progress=progress
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

    rates = _number_list(args.rates, "--rates", whole=False)
    concurrency = _number_list(args.concurrency, "--concurrency", whole=True)
    if not rates and not concurrency:
        raise InputError("give --rates and/or --concurrency", field="--rates")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InputError("the environment variable is not set", field=args.api_key_env)
    if args.max_requests is not None and args.max_requests < 1:
        raise InputError(f"must be >= 1, got {args.max_requests}", field="--max-requests")
    for option, value in (
        ("--duration-s", args.duration_s),
        ("--timeout-s", args.timeout_s),
        ("--burstiness", args.burstiness),
    ):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"must be a positive number, got {value}", field=option)
    requests = _requests_or_trace(args.input)
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
    if args.json:
        _print_json(
            {
                "settings": dict(result.settings),
                "server": dict(result.server),
                "interrupted": result.interrupted,
                "knees": knees,
                "output": args.output,
                "levels": result.levels,
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
    if result.interrupted:
        print("batchlab: interrupted: the levels above are the finished ones", file=sys.stderr)
        return 130
    return EXIT_OK


def cmd_serve_tiny(args) -> int:
    """Serve the tiny random Llama (the model of ``measure --model tiny``) with ``transformers
    serve --continuous-batching`` on the CPU, in the foreground, until Ctrl-C."""
    from batchlab.tinyserver import serve_tiny

    if not (math.isfinite(args.ready_timeout_s) and args.ready_timeout_s > 0):
        raise InputError("must be a positive number of seconds", field="--ready-timeout-s")
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
    (type, unit, help; the policies that have it). A knob given to a policy that lacks it is
    reported by the policy (exit 2)."""
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
        flag = "--" + knob_name.replace("_", "-")
        dest = f"policy_{knob_name}"
        if first.type is bool:
            group.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif first.sequence:
            group.add_argument(
                flag, dest=dest, type=_list_type(first.type), metavar="A,B,...", help=text
            )
        else:
            group.add_argument(
                flag, dest=dest, type=first.type, metavar=knob_name.upper(), help=text
            )


def _list_type(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            ) from None

    return parse


#: commands whose parser needs no simulation policy options (they start without importing the
#: simulator or pandas)
_LEAN_COMMANDS = frozenset({"evaluate", "verify", "plan", "profile"})


def build_parser(policy_options: bool = True) -> argparse.ArgumentParser:
    """The ``batchlab`` parser; ``policy_options=False`` leaves out simulate's per-policy
    options (which import the policies), for the commands that do not need them."""
    parser = _Parser(
        prog="batchlab", description="Batching LLM inference requests.", epilog=EXIT_CODES_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p, *, cost=True):
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if cost:
            p.add_argument("--cost-model", default="static-graph", help="cost model preset")
            p.add_argument("--granularity", type=int, default=None, help="alignment g (tokens)")

    p = sub.add_parser("profile", help="profile request files")
    p.add_argument("inputs", nargs="+", metavar="IN")
    common(p, cost=False)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("plan", help="plan request files into batches and shapes")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p.add_argument("--output", "-o", nargs="+", required=True, metavar="OUT")
    p.add_argument("--max-shapes", type=int, default=8)
    p.add_argument("--limits", metavar="LIMITS.toml")
    p.add_argument(
        "--time-limit",
        type=_positive_seconds,
        default=10.0,
        metavar="S",
        help="seconds for the exact model (default 10)",
    )
    p.add_argument(
        "--exact",
        choices=("auto", "always", "never"),
        default="auto",
        help="solve the exact model: when it fits the budget (auto), always, or never",
    )
    common(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("verify", help="verify plans: IN... PLAN... (as many of each)")
    p.add_argument("files", nargs="+", metavar="IN_OR_PLAN")
    p.add_argument("--max-shapes", type=int, default=None)
    p.add_argument("--granularity", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("evaluate", help="evaluate a plan")
    p.add_argument("requests", metavar="IN")
    p.add_argument("plan", metavar="PLAN")
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "simulate",
        help="simulate serving requests with a batching policy (IN: a request file or a trace name)",
    )
    p.add_argument("input", metavar="IN", help="request file (JSONL/CSV/Parquet) or a trace name")
    p.add_argument(
        "--policy", default="continuous", help=_policy_help() if policy_options else "policy"
    )
    p.add_argument("--model", default="llama-2-7b", help="model preset (roofline step times)")
    p.add_argument("--gpu", default="h100-sxm", help="GPU preset, or Nx<preset>")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, help="open loop: Poisson arrivals, requests/s")
    load.add_argument("--concurrency", type=int, help="closed loop: number of clients")
    p.add_argument("--burstiness", type=float, help="with --rate: inter-arrival CV (1 = Poisson)")
    p.add_argument("--think-time-ms", type=float, help="with --concurrency: ms between requests")
    p.add_argument("--seed", type=int, default=0, help="seed of drawn arrivals")
    p.add_argument("--first-s", type=float, help="keep requests arriving in the first S seconds")
    p.add_argument("--max-requests", type=int, help="keep the first N requests (arrival order)")
    if policy_options:
        _add_policy_options(p)
    p.add_argument("--kv-blocks", type=int, help="KV-cache budget in blocks (default: fits GPU)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--memory-fraction", type=float, default=0.9, help="GPU memory usable")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "measure",
        help="measure throughput, latency and memory at several batch sizes on this machine",
    )
    p.add_argument(
        "--model", default="tiny", help="'tiny' (random small Llama, no download) or a local folder"
    )
    p.add_argument("--batch-sizes", default="1,2,4,8,16", help="comma-separated, e.g. 1,2,4,8")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per sequence")
    p.add_argument("--gen-len", type=int, default=32, help="generated tokens per sequence (>= 2)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    p.add_argument("--warmup", type=int, default=1, help="discarded runs per batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (median)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts and tiny weights")
    p.add_argument(
        "--output",
        "-o",
        metavar="OUT.csv",
        help="where to save (default: data/measurements/<model>-<device>-p<P>-g<G>.csv)",
    )
    p.add_argument("--no-save", action="store_true", help="do not write the CSV and JSON")
    p.add_argument("--latency-limit-ms", type=float, help="report the largest size meeting it")
    p.add_argument(
        "--latency-column",
        default="latency_ms_per_request",
        choices=("latency_ms_per_request", "decode_ms_per_step", "prefill_ms", "e2e_ms"),
        help="the latency the limit applies to (decode_ms_per_step: time per output token)",
    )
    p.add_argument("--tolerance", type=float, default=0.05, help="saturation: share of the best")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser(
        "loadtest",
        help="measure a live OpenAI-compatible server at rising load (rates and/or concurrency)",
    )
    p.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000 (or .../v1)")
    p.add_argument("input", metavar="IN", help="request file (JSONL/CSV/Parquet) or a trace name")
    p.add_argument("--model", required=True, help="the model name the server serves")
    p.add_argument("--rates", help="open loop: comma-separated requests/s, e.g. 1,2,4")
    p.add_argument("--concurrency", help="closed loop: comma-separated clients, e.g. 1,4,16")
    p.add_argument(
        "--arrivals",
        default="poisson",
        choices=("poisson", "trace"),
        help="open loop: Poisson (seeded) or the trace's arrival_s scaled to each rate",
    )
    p.add_argument("--burstiness", type=float, default=1.0, help="poisson: inter-arrival CV")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals and prompt words")
    p.add_argument("--duration-s", type=float, default=60.0, help="seconds of sending per level")
    p.add_argument("--max-requests", type=int, help="at most N requests per level")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-request limit (seconds)")
    p.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    p.add_argument(
        "--ignore-eos",
        default="auto",
        choices=("auto", "on", "off"),
        help="send ignore_eos/min_tokens: auto (if the server accepts them), on, off",
    )
    p.add_argument("--label", default="measured", help="the policy column of the table")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding an API key")
    p.add_argument("--output", "-o", metavar="OUT.csv", help="write the levels (+ records, JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser(
        "serve-tiny",
        help="serve the tiny random Llama with transformers serve on 127.0.0.1 (Ctrl-C stops)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    p.add_argument("--model-dir", help="where to save the model (default: the user cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--ready-timeout-s", type=float, default=180.0, help="wait for the server")
    p.add_argument("--no-warmup", action="store_true", help="announce before a warm-up request")
    p.add_argument("--threads", type=int, default=1, help="the server's OpenMP threads")
    p.add_argument("--cb-num-blocks", type=int, default=64, help="KV-cache pages of 256 tokens")
    p.add_argument("--cb-max-batch-tokens", type=int, default=512, help="tokens per step")
    p.set_defaults(func=cmd_serve_tiny)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :data:`EXIT_CODES_HELP`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(policy_options=command not in _LEAN_COMMANDS)
    args = parser.parse_args(argv)
    try:
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
    except OSError as err:  # a file that cannot be read or written: the user's to fix
        print(f"batchlab: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("batchlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        print(
            "batchlab: internal error (a bug in batchlab, not in your input; please report it "
            "with the traceback below):",
            file=sys.stderr,
        )
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(err: BaseException) -> str:
    return str(err).replace("\n", " ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
