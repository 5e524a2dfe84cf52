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
    "as_named",
    "check_csv_rows",
    "check_frame",
    "check_scalar",
    "is_number",
]

#: ``include_boundaries`` values of :func:`check_scalar` (which ends of the range are allowed).
BOUNDARIES = ("both", "left", "right", "neither")

_KIND = {int: "a whole number", float: "a number", bool: "True or False"}


def is_number(value: Any) -> bool:
    """True for a real number (Python or numpy) that is not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _range_text(min_val: float | None, max_val: float | None, include: str) -> str:
    left = include in ("both", "left")
    right = include in ("both", "right")
    if min_val is not None and max_val is not None and math.isfinite(max_val):
        return f" in {'[' if left else '('}{min_val:g}, {max_val:g}{']' if right else ')'}"
    if min_val is not None:
        return f" {'>=' if left else '>'} {min_val:g}"
    if max_val is not None and math.isfinite(max_val):
        return f" {'<=' if right else '<'} {max_val:g}"
    return ""


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
        kind += _range_text(min_val, max_val, include_boundaries)
        if unit:
            kind += f" ({unit})"
    if allow_none:
        kind += " or None"

    def fail() -> InputError:
        shown = value.item() if isinstance(value, np.generic) else value
        return InputError(f"must be {kind}, got {shown!r}", field=name)

    if target_type is bool:
        if not isinstance(value, bool | np.bool_):
            raise fail()
        return bool(value)
    if not is_number(value):
        raise fail()
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not (allow_inf and target_type is float)):
        raise fail()
    if target_type is int:
        if number != math.floor(number):
            raise fail()
        out: Any = int(value)
    else:
        out = number
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
    the file, its line (the header is line 1) and the field (``column`` by default)."""
    flags = np.asarray(bad, dtype=bool)
    if flags.any():
        pos = int(np.flatnonzero(flags)[0])
        raise InputError(
            f"{message}, got {raw[column].iloc[pos]!r}",
            path=path,
            line=pos + 2,
            field=column if field is None else field,
        )
