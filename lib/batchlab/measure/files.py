"""Measurement files: a CSV table and a JSON sidecar with its settings and versions.

Writes are atomic (:func:`batchlab.io.atomic_write`); reading validates every column and names
the file, line and field of a bad value.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab import __version__ as _batchlab_version
from batchlab.checks import check_csv_rows
from batchlab.errors import InputError
from batchlab.io import all_or_nothing, atomic_write
from batchlab.measure.table import FLOAT_COLUMNS, INT_COLUMNS, MEASUREMENT_COLUMNS, require_columns

__all__ = ["default_measurement_path", "load_measurement", "save_measurement"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def default_measurement_path(
    settings: Mapping[str, Any], folder: str | os.PathLike[str] = "data/measurements"
) -> Path:
    """``<folder>/<model>-<device>-p<prompt_len>-g<gen_len>.csv`` from a measurement's settings."""
    model = Path(str(settings.get("model", "model"))).name
    device = str(settings.get("device", "device"))
    return Path(folder) / (
        f"{_slug(model)}-{_slug(device)}-p{settings.get('prompt_len', 'x')}-g{settings.get('gen_len', 'x')}.csv"
    )


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "batchlab": _batchlab_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    for name in ("torch", "transformers"):
        try:
            module = __import__(name)
            versions[name] = str(module.__version__)
        except ImportError:
            versions[name] = None
    return versions


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_measurement(
    df: pd.DataFrame,
    path: str | os.PathLike[str] | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write a measurement table as CSV plus a sidecar JSON (same name, ``.json``); atomic, the
    two together (both or neither).

    The JSON holds ``settings`` (default: ``df.attrs["settings"]`` set by
    :func:`measure_batch_sizes`), the library versions (batchlab, torch, transformers, numpy,
    pandas, Python), the platform and the UTC date. ``path`` defaults to
    :func:`default_measurement_path` under ``data/measurements/``. Returns the CSV path.
    """
    require_columns(df, MEASUREMENT_COLUMNS)
    settings = dict(settings if settings is not None else df.attrs.get("settings", {}))
    target = Path(path) if path is not None else default_measurement_path(settings)
    if target.suffix.lower() != ".csv":
        raise InputError("a measurement is saved as .csv", path=target)
    table = df.loc[:, list(MEASUREMENT_COLUMNS)]
    metadata = {
        "format": "batchlab measurement 1",
        "columns": list(MEASUREMENT_COLUMNS),
        "settings": settings,
        "versions": _versions(),
        "platform": platform.platform(),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    with all_or_nothing():  # the CSV and its JSON, both or neither
        with atomic_write(target, "w") as fh:
            table.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")
        with atomic_write(_sidecar(target), "w") as fh:
            json.dump(metadata, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
    return target


def load_measurement(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a measurement CSV written by :func:`save_measurement`, validated.

    Checks every column of MEASUREMENT_COLUMNS is present, batch sizes are unique positive
    whole numbers, ``oom`` is true/false and the figures are numbers (NaN only in out-of-memory
    rows); raises :class:`InputError` naming the file, line and field otherwise. The sidecar
    JSON's content, when present, is in ``df.attrs["metadata"]`` and its settings in
    ``df.attrs["settings"]``. Rows come sorted by batch size.
    """
    source = Path(path)
    if not source.exists():
        raise InputError("no such measurement file", path=source)
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {exc}", path=source) from exc
    for column in MEASUREMENT_COLUMNS:
        if column not in raw.columns:
            raise InputError("missing column", path=source, field=column)
    if raw.empty:
        raise InputError("no rows", path=source)
    out = pd.DataFrame(index=raw.index)
    oom_text = raw["oom"].str.strip().str.lower()
    bad = ~oom_text.isin(["true", "false", "1", "0"])
    check_csv_rows(bad, "expected True or False", raw, "oom", path=source)
    oom = oom_text.isin(["true", "1"]).to_numpy()
    for column in INT_COLUMNS:
        numeric = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float)
        bad = (
            ~np.isfinite(numeric)
            | (numeric != np.floor(numeric))
            | (numeric < (0 if column == "repeats" else 1))
        )
        check_csv_rows(bad, "expected a positive whole number", raw, column, path=source)
        out[column] = numeric.astype(np.int64)
    for column in FLOAT_COLUMNS:
        text = raw[column].str.strip()
        numeric = pd.to_numeric(text.where(text != "", "nan"), errors="coerce").to_numpy(
            dtype=float
        )
        not_number = np.isnan(numeric) & ~text.str.lower().isin(["", "nan"]).to_numpy()
        missing = ~np.isfinite(numeric) & ~oom
        bad = not_number | missing
        check_csv_rows(bad, "expected a finite number", raw, column, path=source)
        out[column] = numeric
    out["oom"] = oom
    out["device"] = raw["device"].astype(object)
    dup = out["batch_size"].duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            f"duplicate batch size {int(out['batch_size'].iloc[pos])}",
            path=source,
            line=pos + 2,
            field="batch_size",
        )
    df = (
        out.loc[:, list(MEASUREMENT_COLUMNS)]
        .sort_values("batch_size", kind="stable")
        .reset_index(drop=True)
    )
    sidecar = _sidecar(source)
    if sidecar.exists():
        try:
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"bad metadata JSON: {exc}", path=sidecar) from exc
        df.attrs["metadata"] = metadata
        df.attrs["settings"] = dict(metadata.get("settings", {}))
    return df
