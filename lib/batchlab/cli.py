"""The ``batchlab`` command line: profile, plan, verify, evaluate (and simulate, measure).

Exit codes: 0 success; 1 a limit cannot be met or a plan fails verification; 2 usage or input
errors. Errors go to stderr, one readable line each. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from batchlab.errors import BatchlabError, InputError, LimitError, VerificationError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    if isinstance(value, pd.DataFrame):
        return _jsonable(value.to_dict(orient="records"))
    return value


def _print_json(obj) -> None:
    print(json.dumps(_jsonable(obj), indent=2))


def _table(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:,.6g}")


def _cost_model(args):
    from batchlab.cost import get_cost_model

    cm = get_cost_model(args.cost_model)
    g = getattr(args, "granularity", None)
    if g is not None and g != cm.granularity:
        cm = cm.with_coefficients(granularity=g, name=f"{cm.name} (g={g})")
    return cm


def _read_requests(path: str) -> pd.DataFrame:
    from batchlab.workload import read_requests

    df = read_requests(path)
    df.attrs["source"] = path
    return df


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
    result = plan_requests(buckets, _cost_model(args), args.max_shapes, limits)
    for bp, out in zip(result.buckets, args.output, strict=True):
        write_plan(bp.plan, out)
    comparison = result.comparison()
    if args.json:
        _print_json(
            {
                "shapes": list(result.shapes),
                "total_cost": result.total_cost,
                "buckets": {
                    bp.name: {
                        "output": out,
                        "summary": bp.evaluation.summary(),
                        "bounds": bp.bounds.as_dict(),
                        "settings": bp.settings,
                    }
                    for bp, out in zip(result.buckets, args.output, strict=True)
                },
                "comparison": comparison,
            }
        )
        return EXIT_OK
    print(f"shapes used ({len(result.shapes)} of at most {args.max_shapes}): {list(result.shapes)}")
    for bp, out in zip(result.buckets, args.output, strict=True):
        print(
            f"{bp.name}: {bp.evaluation.n_requests:,} requests in {bp.evaluation.n_batches:,} batches -> {out}"
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
    from batchlab.evaluate import evaluate
    from batchlab.plan import read_plan

    ev = evaluate(_read_requests(args.requests), read_plan(args.plan), _cost_model(args))
    summary = ev.summary()
    if args.json:
        _print_json({"summary": summary, "cost": ev.cost.as_dict()})
        return EXIT_OK
    rows = pd.DataFrame({"metric": list(summary), "value": list(summary.values())})
    print(_table(rows))
    return EXIT_OK


# ----------------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchlab", description="Batching LLM inference requests.")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LimitError as err:
        print(f"batchlab: limit not met: {err}", file=sys.stderr)
        return EXIT_FAILED
    except VerificationError as err:
        print(f"batchlab: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (InputError, BatchlabError, ValueError, OSError) as err:
        msg = str(err).replace("\n", " ")
        print(f"batchlab: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
