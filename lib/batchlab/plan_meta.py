"""A plan's sidecar, ``PLAN.meta.json``: how the plan was made (cost model, granularity, shape
cap, the requests it was made from). Its path, its format and its reader.

Light on purpose (json and the shared checks, no tables): ``batchlab evaluate`` and ``verify``
read it before anything else. :mod:`batchlab.plan` re-exports all three names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from batchlab.checks import check_scalar
from batchlab.errors import InputError
from batchlab.io import read_text
from batchlab.shapes import check_granularity

__all__ = ["PLAN_META_FORMAT", "plan_meta_path", "read_plan_meta"]


#: the ``format`` of a plan's sidecar (:func:`plan_meta_path`).
PLAN_META_FORMAT = "batchlab plan meta 1"


def plan_meta_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of plan file ``path`` that records how the plan was made: the plan's path
    with its suffix replaced by ``.meta.json`` (``p.jsonl`` -> ``p.meta.json``; a path without
    a suffix gets ``.meta.json`` appended)."""
    p = Path(path)
    return p.with_suffix(".meta.json") if p.suffix else p.with_name(p.name + ".meta.json")


def read_plan_meta(path: str | os.PathLike[str]) -> dict | None:
    """The sidecar of plan file ``path`` (:func:`plan_meta_path`) as a dict, or None when the
    plan has none. A sidecar must be a JSON object with ``format`` :data:`PLAN_META_FORMAT`
    and a ``settings`` object (``cost_model``: str, ``granularity``: whole number); anything
    else is an InputError naming the sidecar and the field."""
    meta_path = plan_meta_path(path)
    if not meta_path.exists():
        return None
    text = read_text(meta_path)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"invalid JSON: {err.msg} (column {err.colno})", path=meta_path, line=err.lineno
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != PLAN_META_FORMAT:
        raise InputError(
            f"not a plan sidecar (expected an object with format {PLAN_META_FORMAT!r})",
            path=meta_path,
            field="format",
        )
    settings = meta.get("settings")
    if not isinstance(settings, dict):
        raise InputError("must be an object", path=meta_path, field="settings")
    if not isinstance(settings.get("cost_model"), str):
        raise InputError("must be a string", path=meta_path, field="settings.cost_model")
    try:
        check_granularity(settings.get("granularity"))
        check_scalar(settings.get("max_shapes"), "max_shapes", int, min_val=1, allow_none=True)
    except InputError as err:
        raise InputError(err.message, path=meta_path, field=f"settings.{err.field}") from None
    return meta
