"""Argument checks shared by every module, in the style of scikit-learn's ``check_scalar``.

One rule for every option, knob and coefficient of the library:

* ``int``: a whole number. Python and numpy integers are accepted, and so is a float holding
  a whole number (``16.0`` from a TOML or JSON file is ``16``); booleans, fractions, NaN and
  infinities are not.
* ``float``: any real number but a boolean; NaN never, infinity only with ``allow_inf``.
* ``bool``: ``True`` or ``False`` (Python or numpy), nothing else.

A failed check raises :class:`~batchlab.errors.InputError` (a ``ValueError``) whose field is
the argument's name, so the command line prints one line naming it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import is_dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from batchlab.errors import InputError

if TYPE_CHECKING:  # pandas is imported where a table is checked, not at import
    import pandas as pd

__all__ = [
    "BOUNDARIES",
    "MAX_INT",
    "as_named",
    "check_csv_rows",
    "check_frame",
    "check_scalar",
    "describe_range",
    "is_number",
    "shown_value",
]

#: ``include_boundaries`` values of :func:`check_scalar` (which ends of the range are allowed).
BOUNDARIES = ("both", "left", "right", "neither")

_KIND = {int: "a whole number", float: "a number", bool: "True or False"}


#: the largest whole number :func:`check_scalar` accepts for ``int`` (int64, what numpy holds).
MAX_INT = 2**63 - 1


def shown_value(value: Any) -> str:
    """``repr`` of a value for a one-line message: numpy scalars as Python values, a huge
    whole number by its number of digits, a long text cut to 60 characters."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        digits = len(str(abs(value))) if abs(value) < 10**4000 else "more than 4000"
        return f"a {digits}-digit number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(value: Any) -> bool:
    """True for a real number (Python or numpy) that is not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def describe_range(min_val: float | None, max_val: float | None, include: str = "both") -> str:
    """The words of a range as :func:`check_scalar` writes it: ``" in [1, 64]"``, ``" > 0"``
    (with a leading space; empty when unbounded)."""
    left = include in ("both", "left")
    right = include in ("both", "right")
    lo, hi = _bound_text(min_val), _bound_text(max_val)
    if min_val is not None and max_val is not None and math.isfinite(max_val):
        return f" in {'[' if left else '('}{lo}, {hi}{']' if right else ')'}"
    if min_val is not None:
        return f" {'>=' if left else '>'} {lo}"
    if max_val is not None and math.isfinite(max_val):
        return f" {'<=' if right else '<'} {hi}"
    return ""


def _bound_text(value: float | None) -> str:
    """A bound exactly: a whole number of at most 10 digits as is (2147483647), a larger power
    of two (or one less) as ``2**40`` (``2**63-1``), anything else in %g."""
    if value is None:
        return ""
    if math.isfinite(value) and float(value).is_integer():
        whole = int(value)
        if abs(whole) < 10**10:
            return str(whole)
        for k, text in ((whole, ""), (whole + 1, "-1")):
            if k > 0 and k & (k - 1) == 0:
                return f"2**{k.bit_length() - 1}{text}"
    return f"{value:g}"


def check_scalar(
    value: Any,
    name: str,
    target_type: type,
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    include_boundaries: str = "both",
    allow_inf: bool = False,
    allow_none: bool = False,
    unit: str = "",
) -> Any:
    """``value`` checked and converted to ``target_type`` (``int``, ``float`` or ``bool``).

    ``min_val`` / ``max_val`` bound the value; ``include_boundaries`` (one of
    :data:`BOUNDARIES`) says which bounds are allowed themselves. ``allow_inf`` lets a float be
    infinite (``max_val`` is then not applied to ``+inf``); ``allow_none`` passes ``None``
    through. ``unit`` (e.g. ``"ms"``) only words the message. Raises :class:`InputError` with
    ``field=name``: ``must be a whole number >= 1, got 0``.
    """
    if target_type not in _KIND:
        raise TypeError(f"target_type must be int, float or bool, got {target_type!r}")
    if include_boundaries not in BOUNDARIES:
        raise ValueError(f"include_boundaries must be one of {BOUNDARIES}")
    if value is None and allow_none:
        return None
    kind = _KIND[target_type]
    if target_type is float and not allow_inf:
        kind = "a finite number"
    if target_type is int or target_type is float:
        kind += describe_range(min_val, max_val, include_boundaries)
        if unit:
            kind += f" ({unit})"
    if allow_none:
        kind += " or None"

    def fail() -> InputError:
        return InputError(f"must be {kind}, got {shown_value(value)}", field=name)

    if target_type is bool:
        if not isinstance(value, bool | np.bool_):
            raise fail()
        return bool(value)
    if not is_number(value):
        raise fail()
    out: Any
    if target_type is int and isinstance(value, numbers.Integral):
        out = int(value)  # exact, however large (no float conversion to overflow)
    else:
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range: 10**400
            raise fail() from None
        if math.isnan(number) or (math.isinf(number) and not (allow_inf and target_type is float)):
            raise fail()
        if target_type is int:
            if number != math.floor(number):
                raise fail()
            out = int(number)
        else:
            out = number
    if target_type is int and not -MAX_INT <= out <= MAX_INT:
        raise fail()  # beyond int64: no numpy array could hold it
    left = include_boundaries in ("both", "left")
    right = include_boundaries in ("both", "right")
    if min_val is not None and (out < min_val or (out == min_val and not left)):
        raise fail()
    if max_val is not None and not math.isinf(out):
        if out > max_val or (out == max_val and not right):
            raise fail()
    return out


def check_frame(
    df: Any, columns: Sequence[str] = (), *, what: str = "table", path: object | None = None
) -> pd.DataFrame:
    """``df`` when it is a DataFrame holding every one of ``columns``; else an InputError
    naming the first missing column (``what`` words the message: "measurement table")."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a {what} (DataFrame), got {type(df).__name__}", path=path)
    for column in columns:
        if column not in df.columns:
            raise InputError(f"missing column in the {what}", path=path, field=column)
    return df


def as_named(
    items: Any, what: str, default_name: str, single: tuple[type, ...] | None = None
) -> list[tuple[str, Any]]:
    """``(name, item)`` pairs from one item (an instance of ``single``, default a DataFrame, or
    a dataclass), a mapping name -> item, or a sequence of items (named ``"<default_name>
    <i>"``). A single DataFrame is named by its ``attrs["name"]`` when it has one. InputError
    when empty."""
    import pandas as pd

    if single is None:
        single = (pd.DataFrame,)
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    elif isinstance(items, single) or is_dataclass(items):
        name = items.attrs.get("name") if isinstance(items, pd.DataFrame) else None
        pairs = [(str(name or default_name), items)]
    elif isinstance(items, Iterable) and not isinstance(items, str | bytes):
        pairs = [(f"{default_name} {i}", v) for i, v in enumerate(items)]
    else:
        raise InputError(
            f"expected a {what}, a mapping name -> {what} or a list of them, "
            f"got {type(items).__name__}"
        )
    if not pairs:
        raise InputError(f"no {what} given")
    return pairs


def check_csv_rows(
    bad: Any,
    message: str,
    raw: pd.DataFrame,
    column: str,
    *,
    path: object,
    field: str | None = None,
) -> None:
    """Raise for the first row of a CSV table flagged ``bad``: ``"<message>, got <value>"`` with
    the file, its line (``raw.attrs["source_lines"]`` when the reader recorded them, else the
    row after a header on line 1) and the field (``column`` by default)."""
    import pandas as pd

    flags = np.asarray(bad, dtype=bool)
    if flags.any():
        pos = int(np.flatnonzero(flags)[0])
        lines = raw.attrs.get("source_lines")
        line = int(lines[pos]) if lines is not None and pos < len(lines) else pos + 2
        value = raw[column].iloc[pos]
        shown = "a missing value" if not isinstance(value, str) and pd.isna(value) else None
        raise InputError(
            f"{message}, got {shown or shown_value(value)}",
            path=path,
            line=line,
            field=column if field is None else field,
        )
