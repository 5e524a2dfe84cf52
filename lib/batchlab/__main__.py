"""The ``batchlab`` console script and ``python -m batchlab``.

Signals are handled from the first moment: SIGINT (Ctrl-C) and SIGTERM arriving while numpy and
pandas still load end the run with one line and exit code 130 or 143, not a traceback; once
:func:`batchlab.cli.main` runs, it handles them itself (undoing every write in progress).
This module imports nothing heavy before its handlers are in place.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

__all__ = ["main"]


class _Terminated(BaseException):
    """SIGTERM before the command line took over its signals."""


def _on_term(signum: int, frame: Any) -> None:
    raise _Terminated


def main() -> int:
    """Run ``batchlab`` (arguments from ``sys.argv``); returns the exit code."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_term)
    try:
        from batchlab.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("batchlab: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("batchlab: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
