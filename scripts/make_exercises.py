"""Generate the learner exercise notebooks from the solution notebooks.

    python scripts/make_exercises.py           # or: make exercises
    python scripts/make_exercises.py --check   # exit 1 if a learner notebook is out of date

Reads ``exercises/solutions/NN_*.ipynb`` and writes ``exercises/NN_*.ipynb``: solution cells
(tag ``solution`` or first line ``# SOLUTION``) become ``answer = ...  # your code here`` stubs,
outputs are stripped, everything else is kept (see ``batchlab.exercises.authoring``). Writes
are atomic and only touch notebooks whose text changes.

Exit codes: 0 done (or, with --check, everything in sync); 1 with --check, a learner notebook
is out of date, missing or has no solution notebook; 2 usage or input errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchlab.errors import InputError
from batchlab.exercises.authoring import generate

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a learner notebook differs from what would be generated",
    )
    parser.add_argument(
        "--solutions",
        type=Path,
        default=ROOT / "exercises" / "solutions",
        help="folder of solution notebooks (default: exercises/solutions)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the learner notebooks (default: the solutions folder's parent)",
    )
    args = parser.parse_args(argv)
    try:
        results = generate(args.solutions, args.out, check=args.check)
    except InputError as err:
        print(f"make_exercises: {err}", file=sys.stderr)
        return 2
    if not results:
        print(f"make_exercises: no NN_*.ipynb in {args.solutions}", file=sys.stderr)
        return 2
    bad = 0
    for item in results:
        try:
            shown = item.path.relative_to(Path.cwd())
        except ValueError:
            shown = item.path
        if item.status == "stale":
            print(f"{shown}: stale (no solution notebook {item.path.name} in {args.solutions})")
            bad += 1
        elif item.status in ("out of date", "missing"):
            print(f"{shown}: {item.status} (run `make exercises`)")
            bad += 1
        else:
            print(f"{shown}: {item.status}")
    if args.check and bad:
        print(f"make_exercises --check: {bad} learner notebook(s) not in sync", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
