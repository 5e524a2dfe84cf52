"""The machinery behind every exercise: questions, checks, hints, solutions and data loading.

A question is checked by recomputing its expected answer from the data with the library (never a
stored number), then comparing the learner's answer with it under the question's tolerance.
``check`` shows a message (Markdown in a notebook, plain text elsewhere) and returns a
:class:`CheckResult`, which is truthy exactly when the answer is correct. It never raises at the
learner: an answer of the wrong type is reported as such, a missing answer (``None`` or ``...``)
as "No answer yet", and a data set that cannot be loaded as "Cannot check".
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab.errors import BatchlabError, InputError

__all__ = [
    "DATA_DIR_ENV",
    "AnswerError",
    "CheckResult",
    "ChoiceQuestion",
    "CustomQuestion",
    "NumberQuestion",
    "Question",
    "as_int",
    "as_int_list",
    "as_number",
    "data_dir",
    "data_file",
    "fingerprint",
    "fmt",
    "load_requests",
    "load_trace",
    "make_result",
    "memo",
    "percent",
    "relative_error_text",
    "show",
]

#: Environment variable naming the folder the exercises read their project data from (default:
#: the repository's ``data/`` folder).
DATA_DIR_ENV = "BATCHLAB_EXERCISES_DATA"

# --------------------------------------------------------------------------------------------
# data


def data_dir() -> Path:
    """The project's data folder: ``$BATCHLAB_EXERCISES_DATA`` if set, else the repository's
    ``data/`` (found from this file's location), else ``data/`` or ``../data`` or ``../../data``
    relative to the working directory. Raises InputError when none exists."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise InputError(f"{DATA_DIR_ENV} names a folder that does not exist", path=path)
        return path
    # lib/batchlab/exercises/_core.py -> repository root is parents[3]
    candidates = [Path(__file__).resolve().parents[3] / "data"]
    cwd = Path.cwd()
    candidates += [cwd / "data", cwd.parent / "data", cwd.parent.parent / "data"]
    for path in candidates:
        if (path / "chat.jsonl").is_file():
            return path
    raise InputError(
        "cannot find the project's data folder (data/chat.jsonl); run from the repository "
        f"or set {DATA_DIR_ENV}",
        path=candidates[0],
    )


def data_file(name: str) -> Path:
    """The path of a file in the project's data folder, e.g. ``data_file("chat.jsonl")`` or
    ``data_file("measurements/tiny-llama-cpu-p128-g32.csv")``. Works from any folder, so the
    same notebook cell runs in ``exercises/`` and in ``exercises/solutions/``."""
    path = data_dir() / name
    if not path.exists():
        raise InputError("no such file in the project's data folder", path=path)
    return path


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def fingerprint(files: Sequence[str] = (), traces: Sequence[str] = ()) -> tuple:
    """A hashable key that changes when any of the named project files or traces changes
    (path, modification time and size of each)."""
    from batchlab import datasets

    keys: list[Hashable] = [_stat_key(data_file(f)) for f in files]
    keys += [_stat_key(Path(datasets.trace_path(t, download=True))) for t in traces]
    return tuple(keys)


def memo(
    *, files: Sequence[str] = (), traces: Sequence[str] = ()
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Cache a zero-argument function's result until one of its data sources changes.

    Used for expected answers that take a while to recompute (a sweep, a simulation): the value
    is recomputed from the data whenever a file's path, size or modification time differs."""

    def decorate(fn: Callable[[], Any]) -> Callable[[], Any]:
        cache: dict[tuple, Any] = {}

        @functools.wraps(fn)
        def wrapper() -> Any:
            key = fingerprint(files, traces)
            if key not in cache:
                cache.clear()
                cache[key] = fn()
            return cache[key]

        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        return wrapper

    return decorate


_REQUESTS_CACHE: dict[tuple, pd.DataFrame] = {}
_TRACE_CACHE: dict[tuple, pd.DataFrame] = {}


def load_requests(name: str) -> pd.DataFrame:
    """A request table of the project's data folder (``workload.read_requests``), cached until
    the file changes. Treat the result as read-only."""
    from batchlab import workload

    path = data_file(name)
    key = _stat_key(path)
    if key not in _REQUESTS_CACHE:
        _REQUESTS_CACHE.clear()
        _REQUESTS_CACHE[key] = workload.read_requests(path)
    return _REQUESTS_CACHE[key]


def load_trace(name: str, limit: int | None = None) -> pd.DataFrame:
    """A real trace (``datasets.load_trace``), cached until the file changes. Read-only."""
    from batchlab import datasets

    key = (*_stat_key(Path(datasets.trace_path(name, download=True))), limit)
    if key not in _TRACE_CACHE:
        if len(_TRACE_CACHE) > 8:
            _TRACE_CACHE.clear()
        _TRACE_CACHE[key] = datasets.load_trace(name, limit=limit)
    return _TRACE_CACHE[key]


# --------------------------------------------------------------------------------------------
# answers


class AnswerError(Exception):
    """The answer cannot be used as given (wrong type, wrong shape): the message says why."""


def _type_name(x: Any) -> str:
    if isinstance(x, pd.DataFrame):
        return f"a DataFrame with {len(x)} row(s)"
    if isinstance(x, pd.Series):
        return f"a Series of {len(x)} value(s)"
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {x.shape}"
    if isinstance(x, str):
        return f"the text {x!r}"
    if isinstance(x, bool | np.bool_):
        return f"the boolean {bool(x)}"
    return f"a {type(x).__name__}"


def _scalar(x: Any) -> Any:
    """Unwrap a one-element array, Series or list to its element."""
    if isinstance(x, pd.DataFrame) and x.size == 1:
        return x.to_numpy().reshape(-1)[0]
    if isinstance(x, pd.Series | np.ndarray | list | tuple) and np.size(x) == 1:
        return np.asarray(x, dtype=object).reshape(-1)[0]
    return x


def as_number(x: Any, what: str = "a number") -> float:
    """The answer as a finite float; AnswerError naming what was expected otherwise."""
    value = _scalar(x)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise AnswerError(f"expected {what}, got {_type_name(x)}")
    number = float(value)
    if not math.isfinite(number):
        raise AnswerError(f"expected {what}, got {number}")
    return number


def as_int(x: Any, what: str = "a whole number") -> int:
    """The answer as an int (a float is accepted when it is whole); AnswerError otherwise."""
    number = as_number(x, what)
    if number != math.floor(number):
        raise AnswerError(f"expected {what}, got {number!r}, which is not a whole number")
    return int(number)


def as_int_list(x: Any, what: str = "a list of whole numbers") -> list[int]:
    """The answer as a list of ints (list, tuple, array, Series, set); AnswerError otherwise."""
    if isinstance(x, str | bytes | dict | pd.DataFrame) or x is None:
        raise AnswerError(f"expected {what}, got {_type_name(x)}")
    if isinstance(x, set | frozenset):
        x = sorted(x, key=lambda v: float(v) if isinstance(v, numbers.Real) else 0.0)
    try:
        items = list(np.asarray(x, dtype=object).reshape(-1))
    except (TypeError, ValueError):
        raise AnswerError(f"expected {what}, got {_type_name(x)}") from None
    if isinstance(x, numbers.Number):
        raise AnswerError(f"expected {what}, got the single number {fmt(float(x))}")
    return [as_int(v, f"whole numbers in {what}") for v in items]


def fmt(x: float | int) -> str:
    """A number for a message: whole numbers with thousands separators, other values with up to
    six significant digits (scientific notation for very large or small magnitudes)."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return f"{int(x):,}"
    value = float(x)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
        return f"{value:.6g}"
    return f"{value:,.6g}"


def percent(value: float) -> str:
    """A percentage for a message: three significant digits below 100 %, whole percent above."""
    return f"{value:.3g}%" if abs(value) < 100 else f"{value:,.0f}%"


def relative_error_text(got: float, expected: float, unit: str = "") -> str:
    """How far ``got`` is from ``expected``: direction and percentage (or absolute difference
    when the expected value is 0), without stating the expected value itself."""
    unit_text = f" {unit}" if unit else ""
    if expected == 0:
        return f"{fmt(got)}{unit_text} is off by {fmt(abs(got))}{unit_text}"
    pct = (got - expected) / abs(expected) * 100.0
    direction = "too high" if got > expected else "too low"
    return f"{fmt(got)}{unit_text} is {percent(abs(pct))} {direction}"


# --------------------------------------------------------------------------------------------
# display


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(markdown: str, plain: str) -> None:
    """Show a message: Markdown (with a plain-text fallback) in a notebook, plain text
    otherwise."""
    if _in_notebook():
        from IPython.display import display

        display({"text/markdown": markdown, "text/plain": plain}, raw=True)
    else:
        print(plain)


_STATUS_LABEL = {
    "correct": ("Correct", "#1a7f37"),
    "incorrect": ("Not yet", "#bc4c00"),
    "invalid": ("Not yet", "#bc4c00"),
    "unanswered": ("No answer yet", "#57606a"),
    "error": ("Cannot check", "#cf222e"),
}


@dataclass(frozen=True, eq=False)
class CheckResult:
    """The outcome of ``check``: ``correct`` (also the truth value), ``status`` (``correct``,
    ``incorrect``, ``invalid`` for an answer of the wrong type, ``unanswered``, ``error`` when the
    data cannot be loaded), ``message`` (plain text), ``question`` (e.g. ``ex01.q1``) and, for
    checks that build one, a ``details`` table (the capstone's scorecard)."""

    correct: bool
    status: str
    message: str
    question: str = ""
    details: pd.DataFrame | None = None

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        return f"CheckResult(question={self.question!r}, correct={self.correct}, status={self.status!r})"

    def __str__(self) -> str:
        return self.message

    def _ipython_display_(self) -> None:
        """Nothing: ``check`` has already shown the message (so a check on the last line of a
        cell does not show it twice)."""

    def markdown(self) -> str:
        """The message as Markdown, with a coloured label."""
        label, colour = _STATUS_LABEL[self.status]
        body = self.message.split(": ", 1)[1] if ": " in self.message else self.message
        return f'<span style="color:{colour}">**{label}:**</span> {body}'

    def show(self) -> None:
        """Show the message (and the details table, if any)."""
        show(self.markdown(), self.message)
        if self.details is not None:
            if _in_notebook():
                from IPython.display import display

                display(self.details)
            else:
                print(self.details.to_string(index=False))


def make_result(
    status: str, text: str, question: str, details: pd.DataFrame | None = None
) -> CheckResult:
    """A :class:`CheckResult` of ``status`` whose message is the status label and ``text``."""
    label = _STATUS_LABEL[status][0]
    return CheckResult(status == "correct", status, f"{label}: {text}", question, details)


# --------------------------------------------------------------------------------------------
# questions

_MISSING = object()


class Question:
    """One exercise question: ``check(answer)``, ``hint(n=1)``, ``solution()``.

    Subclasses implement :meth:`_expected` (recompute the reference from the data) and
    :meth:`_judge` (compare an answer with it; return ``(correct, text)`` or raise
    :class:`AnswerError` for an answer of the wrong type).
    """

    def __init__(
        self,
        *,
        exercise: str,
        name: str,
        title: str,
        answer: str,
        expects: str,
        hints: Sequence[str],
        solution: str,
    ) -> None:
        self.exercise = exercise
        self.name = name
        self.title = title
        self.answer = answer
        self.expects = expects
        self.hints = tuple(hints)
        self.solution_code = solution.strip("\n")

    @property
    def id(self) -> str:
        """``exNN.qK``."""
        return f"{self.exercise}.{self.name}"

    def __repr__(self) -> str:
        return f"<{self.id}: {self.title}>"

    # -- to implement ------------------------------------------------------------------------
    def _expected(self) -> Any:
        raise NotImplementedError

    def _judge(self, answer: Any, expected: Any) -> tuple[bool, str] | CheckResult:
        raise NotImplementedError

    # -- public --------------------------------------------------------------------------------
    def evaluate(self, answer: Any = _MISSING) -> CheckResult:
        """Judge ``answer`` without showing anything (``check`` shows the message too)."""
        if answer is _MISSING or answer is None or answer is Ellipsis:
            return make_result(
                "unanswered",
                f"set `{self.answer}` to {self.expects} and run this cell again "
                f"(`{self.id}.hint()` gives a hint).",
                self.id,
            )
        try:
            expected = self._expected()
        except (BatchlabError, OSError, ValueError) as err:
            return make_result(
                "error",
                f"the data behind this question could not be loaded ({err}). See the set-up "
                "section of exercises/README.md.",
                self.id,
            )
        try:
            outcome = self._judge(answer, expected)
        except AnswerError as err:
            return make_result("invalid", f"{err}.", self.id)
        except (BatchlabError, ValueError, TypeError, KeyError, IndexError) as err:
            return make_result(
                "invalid",
                f"your answer could not be used ({type(err).__name__}: {err}); "
                f"expected {self.expects}.",
                self.id,
            )
        if isinstance(outcome, CheckResult):
            return outcome
        correct, text = outcome
        return make_result("correct" if correct else "incorrect", text, self.id)

    def check(self, answer: Any = _MISSING) -> CheckResult:
        """Check ``answer``: shows "Correct", "Not yet" (what is wrong and by how much) or "No
        answer yet", and returns a :class:`CheckResult` (truthy when correct)."""
        result = self.evaluate(answer)
        result.show()
        return result

    def hint(self, n: int = 1) -> None:
        """Show hint ``n`` (1 = the gentlest)."""
        if not self.hints:
            show("No hint for this question.", "No hint for this question.")
            return
        k = min(max(int(n), 1), len(self.hints))
        more = (
            f" (hint {k} of {len(self.hints)}; `{self.id}.hint({k + 1})` gives another)"
            if k < len(self.hints)
            else (f" (hint {k} of {len(self.hints)})" if len(self.hints) > 1 else "")
        )
        text = self.hints[k - 1]
        show(f"**Hint{more}:** {text}", f"Hint{more}: {text}")

    def solution(self) -> None:
        """Show the solution code."""
        show(
            f"**Solution:**\n```python\n{self.solution_code}\n```",
            f"Solution:\n{self.solution_code}",
        )


class NumberQuestion(Question):
    """A numeric answer within ``rel_tol`` (relative) or ``abs_tol`` of the value ``expected()``
    recomputes; ``integer=True`` requires a whole number. ``diagnose(got, expected)`` may return
    a sentence about a common mistake, added to a wrong answer's message."""

    def __init__(
        self,
        *,
        expected: Callable[[], float],
        unit: str = "",
        rel_tol: float = 1e-9,
        abs_tol: float = 0.0,
        integer: bool = False,
        diagnose: Callable[[float, float], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._expected_fn = expected
        self.unit = unit
        self.rel_tol = float(rel_tol)
        self.abs_tol = float(abs_tol)
        self.integer = integer
        self._diagnose = diagnose

    def _expected(self) -> float:
        return self._expected_fn()

    def _judge(self, answer: Any, expected: Any) -> tuple[bool, str]:
        unit = f" {self.unit}" if self.unit else ""
        exp = float(expected)
        got: float = as_number(answer, self.expects)
        if self.integer and got != math.floor(got):
            # a known mistake that gives a fraction (an interpolated percentile) is named
            # before the answer is refused as not whole
            extra = self._diagnose(got, exp) if self._diagnose is not None else None
            if extra:
                return False, f"{fmt(got)}{unit} is not a whole number. {extra}"
            got = as_int(answer, self.expects)  # raises AnswerError: not a whole number
        elif self.integer:
            got = int(got)
        if math.isclose(got, exp, rel_tol=self.rel_tol, abs_tol=self.abs_tol):
            return True, f"{self.answer} = {fmt(got)}{unit}."
        text = relative_error_text(got, exp, self.unit) + "."
        if self._diagnose is not None:
            extra = self._diagnose(got, exp)
            if extra:
                text += " " + extra
        return False, text


class ChoiceQuestion(Question):
    """One of a few named choices (case and surrounding spaces ignored; ``aliases`` maps other
    spellings to a choice). ``expected()`` returns the right choice; ``explain(choice)`` may
    return a sentence about a wrong choice (e.g. its share)."""

    def __init__(
        self,
        *,
        expected: Callable[[], str],
        choices: Sequence[str],
        aliases: dict[str, str] | None = None,
        explain: Callable[[str], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._expected_fn = expected
        self.choices = tuple(choices)
        self.aliases = dict(aliases or {})
        self._explain = explain

    def _expected(self) -> str:
        return self._expected_fn()

    def _judge(self, answer: Any, expected: Any) -> tuple[bool, str]:
        if not isinstance(answer, str):
            raise AnswerError(
                f"expected one of {', '.join(repr(c) for c in self.choices)} (text), "
                f"got {_type_name(answer)}"
            )
        key = answer.strip().lower()
        key = self.aliases.get(key, key)
        if key not in self.choices:
            raise AnswerError(
                f"{answer!r} is not one of {', '.join(repr(c) for c in self.choices)}"
            )
        if key == expected:
            return True, f"{self.answer} = {key!r}."
        text = f"{key!r} is not it."
        if self._explain is not None:
            extra = self._explain(key)
            if extra:
                text += " " + extra
        return False, text


class CustomQuestion(Question):
    """A question whose check is a function ``judge(answer, context)`` returning ``(correct,
    text)`` (or a :class:`CheckResult`), with ``context()`` recomputed from the data (for
    answers checked by a property rather than a single value)."""

    def __init__(
        self,
        *,
        context: Callable[[], Any],
        judge: Callable[[Any, Any], tuple[bool, str] | CheckResult],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._context = context
        self._judge_fn = judge

    def _expected(self) -> Any:
        return self._context()

    def _judge(self, answer: Any, expected: Any) -> tuple[bool, str] | CheckResult:
        return self._judge_fn(answer, expected)
