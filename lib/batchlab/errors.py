"""Error types shared by every batchlab module.

Each error carries the place it is about (file, line, field, request id) as attributes and
renders them in a single readable line (control characters escaped), so the command line can
print ``str(err)`` as is.
"""

from __future__ import annotations

__all__ = [
    "BatchlabError",
    "InputError",
    "LimitError",
    "SimulationError",
    "VerificationError",
]


class BatchlabError(Exception):
    """Base class of every error batchlab raises on purpose."""


class InputError(BatchlabError, ValueError):
    """Bad input data: a malformed file, a missing field, an invalid value, a duplicate id.

    Attributes ``path``, ``line`` (1-based), ``field`` and ``request_id`` are set when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: object | None = None,
        line: int | None = None,
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.request_id = request_id
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        if self.request_id is not None:
            where.append(f"request_id '{self.request_id}'")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        return _one_line(text)


def _one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters (from an id or a path
    that holds them) written as escapes, so a message is always a single line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class LimitError(BatchlabError):
    """A limit cannot be met. Names the limit, the bucket and the best value reached."""

    def __init__(self, limit: str, bucket: str, limit_value: float, best_value: float) -> None:
        self.limit = limit
        self.bucket = bucket
        self.limit_value = float(limit_value)
        self.best_value = float(best_value)
        super().__init__(
            f"bucket '{bucket}': limit {limit} = {limit_value:,.6g} cannot be met; "
            f"the best plan found reaches {best_value:,.6g}"
        )


class VerificationError(BatchlabError):
    """A plan fails verification; ``violations`` lists every problem found."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        head = f"plan fails verification ({len(self.violations)} violation(s))"
        super().__init__(head + ": " + "; ".join(self.violations[:5]))


class SimulationError(BatchlabError):
    """A simulation cannot go on (a stall: requests wait that the policy will never start);
    the message names the clock, the policy and the requests left, never an internal error."""
