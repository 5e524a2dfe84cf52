"""Measurement files: a CSV table and a JSON sidecar with its settings and versions.

Two kinds of table: a batch-size measurement (:data:`~batchlab.measure.MEASUREMENT_COLUMNS`,
one row per batch size, ``measure --engine static``) and a step table
(:data:`~batchlab.measure.STEP_COLUMNS`, one row per engine step, ``measure --engine
continuous``). Writes are atomic (:func:`batchlab.io.atomic_write`); reading validates every
column and names the file, line and field of a bad value. By default measurements go to the
user's cache folder (:func:`measurement_dir`), never into the repository.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchlab import __version__ as _batchlab_version
from batchlab.checks import check_csv_rows
from batchlab.errors import InputError
from batchlab.io import all_or_nothing, atomic_write
from batchlab.measure.engine import STEP_COLUMNS
from batchlab.measure.table import FLOAT_COLUMNS, INT_COLUMNS, MEASUREMENT_COLUMNS, require_columns

__all__ = [
    "default_measurement_path",
    "is_step_table",
    "load_measurement",
    "measurement_dir",
    "save_measurement",
]

#: Integer and float columns of a step table (``warmup`` is a boolean).
STEP_INT_COLUMNS = (
    "run",
    "batch_size",
    "prompt_len",
    "gen_len",
    "step",
    "prefill_tokens",
    "prefill_seqs",
    "prefill_cached",
    "decode_seqs",
    "decode_context",
)
STEP_FLOAT_COLUMNS = ("start_ms", "step_ms", "forward_ms", "gap_ms", "prefill_pairs")


def is_step_table(df: pd.DataFrame) -> bool:
    """True for a step table (``measure --engine continuous``: a ``step_ms`` column), False for
    a batch-size measurement."""
    return "step_ms" in df.columns


def measurement_dir() -> Path:
    """``<user cache>/batchlab/measurements`` (pooch's cache folder for batchlab; set
    ``XDG_CACHE_HOME`` to move it): where ``batchlab measure`` saves by default."""
    import pooch

    return Path(pooch.os_cache("batchlab")) / "measurements"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def default_measurement_path(
    settings: Mapping[str, Any], folder: str | os.PathLike[str] | None = None
) -> Path:
    """``<folder>/<model>-<device>-p<prompt_len>-g<gen_len>.csv`` from a measurement's settings
    (a continuous-engine step table: ``<model>-<device>-continuous-g<gen_len>.csv``);
    ``folder`` defaults to :func:`measurement_dir` (the user's cache, not the repository)."""
    model = Path(str(settings.get("model", "model"))).name
    device = str(settings.get("device", "device"))
    base = Path(folder) if folder is not None else measurement_dir()
    if settings.get("engine") == "continuous":
        return (
            base / f"{_slug(model)}-{_slug(device)}-continuous-g{settings.get('gen_len', 'x')}.csv"
        )
    return base / (
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
    :func:`measure_batch_sizes` or :func:`measure_continuous`), the library versions
    (batchlab, torch, transformers, numpy, pandas, Python), the platform and the UTC date.
    ``path`` defaults to :func:`default_measurement_path` (the user's cache folder). A step
    table (:func:`is_step_table`) is saved with its :data:`STEP_COLUMNS`. Returns the CSV path.
    """
    steps = is_step_table(df)
    columns = STEP_COLUMNS if steps else MEASUREMENT_COLUMNS
    require_columns(df, columns)
    settings = dict(settings if settings is not None else df.attrs.get("settings", {}))
    target = Path(path) if path is not None else default_measurement_path(settings)
    if target.suffix.lower() != ".csv":
        raise InputError("a measurement is saved as .csv", path=target)
    table = df.loc[:, list(columns)]
    metadata = {
        "format": "batchlab step measurement 1" if steps else "batchlab measurement 1",
        "columns": list(columns),
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

    A step table (a ``step_ms`` column) is read by its own rules (:data:`STEP_COLUMNS`: whole
    numbers >= 0, finite times, ``gap_ms`` NaN allowed), sorted by run and step. Otherwise:
    checks every column of MEASUREMENT_COLUMNS is present, batch sizes are unique positive
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
    if "step_ms" in raw.columns:
        return _with_sidecar(_load_steps(raw, source), source)
    _require_rows(raw, MEASUREMENT_COLUMNS, source)
    out = pd.DataFrame(index=raw.index)
    oom = _booleans(raw, "oom", source)
    for column in INT_COLUMNS:
        low = 0 if column == "repeats" else 1
        out[column] = _whole_numbers(raw, column, low, "expected a positive whole number", source)
    for column in FLOAT_COLUMNS:
        numeric, not_number = _numbers(raw, column)
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
    return _with_sidecar(df, source)


def _load_steps(raw: pd.DataFrame, source: Path) -> pd.DataFrame:
    _require_rows(raw, STEP_COLUMNS, source)
    out = pd.DataFrame(index=raw.index)
    for column in STEP_INT_COLUMNS:
        out[column] = _whole_numbers(raw, column, 0, "expected a whole number >= 0", source)
    out["warmup"] = _booleans(raw, "warmup", source)
    for column in STEP_FLOAT_COLUMNS:
        numeric, not_number = _numbers(raw, column)
        bad = not_number | (np.isfinite(numeric) & (numeric < 0) & (column != "start_ms"))
        if column != "gap_ms":
            bad |= ~np.isfinite(numeric)
        check_csv_rows(bad, "expected a finite number >= 0", raw, column, path=source)
        out[column] = numeric
    return (
        out.loc[:, list(STEP_COLUMNS)]
        .sort_values(["run", "step"], kind="stable")
        .reset_index(drop=True)
    )


def _require_rows(raw: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    for column in columns:
        if column not in raw.columns:
            raise InputError("missing column", path=source, field=column)
    if raw.empty:
        raise InputError("no rows", path=source)


def _booleans(raw: pd.DataFrame, column: str, source: Path) -> np.ndarray:
    text = raw[column].str.strip().str.lower()
    bad = ~text.isin(["true", "false", "1", "0"])
    check_csv_rows(bad, "expected True or False", raw, column, path=source)
    return text.isin(["true", "1"]).to_numpy()


def _whole_numbers(
    raw: pd.DataFrame, column: str, min_val: int, message: str, source: Path
) -> np.ndarray:
    numeric = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numeric) | (numeric != np.floor(numeric)) | (numeric < min_val)
    check_csv_rows(bad, message, raw, column, path=source)
    return numeric.astype(np.int64)


def _numbers(raw: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A column's numbers (NaN where blank or ``nan``) and where its text is no number."""
    text = raw[column].str.strip()
    numeric = pd.to_numeric(text.where(text != "", "nan"), errors="coerce").to_numpy(dtype=float)
    not_number = np.isnan(numeric) & ~text.str.lower().isin(["", "nan"]).to_numpy()
    return numeric, not_number


def _with_sidecar(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    sidecar = _sidecar(source)
    if sidecar.exists():
        try:
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"bad metadata JSON: {exc}", path=sidecar) from exc
        df.attrs["metadata"] = metadata
        df.attrs["settings"] = dict(metadata.get("settings", {}))
    return df
