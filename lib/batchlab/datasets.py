"""Real LLM inference request traces: a registry, checksummed lookup and loaders.

The trace files are never part of the repository. :func:`load_trace` looks for a file in, in
order:

1. the ``data_dir`` argument;
2. the folder named by the environment variable ``BATCHLAB_DATA_DIR``;
3. the project's ``shared/traces`` folder beside the repository checkout (found from this
   module's location: ``lib/batchlab/datasets.py`` -> repository root -> ``../shared/traces``),
   then ``../shared/traces`` and ``../../shared/traces`` relative to the working directory (the
   notebooks run from ``notebooks/``);
4. pooch's cache folder (``pooch.os_cache("batchlab")``); when the file is not there and
   ``download=True`` it is downloaded from the public source into that cache.

Every file found is checked against the sha256 in :data:`TRACES`; a mismatch is an
:class:`~batchlab.errors.InputError` (a found-but-wrong file is never silently skipped). The
check is cached in-process per (path, mtime, size), so repeated loads only parse the CSV.

Zero lengths: a row whose prompt or output length is 0 describes no work to batch (and a request
table requires lengths > 0). Such rows are dropped, never clipped to 1 (that would invent tokens);
their number is kept in ``df.attrs["dropped_rows"]``. The three registered files contain none
(``dropped_rows == 0``). Negative or non-integer lengths and unparsable timestamps are corrupt
data and raise :class:`InputError` with the file and line.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pooch

from batchlab.checks import check_csv_rows, check_scalar
from batchlab.errors import InputError
from batchlab.io import read_csv_table
from batchlab.trace_registry import TRACES, TraceInfo
from batchlab.workload import MAX_LENGTH, validate_requests

__all__ = [
    "DATA_DIR_ENV",
    "TRACES",
    "TraceInfo",
    "list_traces",
    "load_trace",
    "requests_from_trace_table",
    "search_dirs",
    "trace_format",
    "trace_path",
]

DATA_DIR_ENV = "BATCHLAB_DATA_DIR"
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# (resolved path, mtime_ns, size) -> sha256 hex digest of the file's bytes
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _info(name: str) -> TraceInfo:
    try:
        return TRACES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(TRACES))
        raise InputError(f"unknown trace {name!r}; known traces: {known}", field="name") from None


def list_traces() -> pd.DataFrame:
    """The registry as a table: one row per trace, every :class:`TraceInfo` field a column."""
    rows = []
    for info in TRACES.values():
        row = asdict(info)
        row["columns"] = ", ".join(info.columns)
        rows.append(row)
    return pd.DataFrame(rows)


def _project_dirs() -> list[tuple[str, Path]]:
    """The project-relative folders searched for trace files (module location, then cwd)."""
    repo_root = Path(__file__).resolve().parents[2]
    cwd = Path.cwd()
    return [
        ("project folder beside the checkout", repo_root.parent / "shared" / "traces"),
        ("../shared/traces from the working directory", cwd.parent / "shared" / "traces"),
        ("../../shared/traces from the working directory", cwd.parent.parent / "shared" / "traces"),
    ]


def _cache_dir() -> Path:
    return Path(pooch.os_cache("batchlab"))


def search_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """The folders searched for trace files, in order, as (label, folder) pairs.

    The last entry is pooch's cache folder (where downloads go).
    """
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("data_dir argument", Path(data_dir)))
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        dirs.append((f"${DATA_DIR_ENV}", Path(env)))
    dirs.extend(_project_dirs())
    dirs.append(("pooch cache", _cache_dir()))
    seen: set[Path] = set()
    unique = []
    for label, folder in dirs:
        key = folder.resolve() if folder.exists() else folder.absolute()
        if key not in seen:
            seen.add(key)
            unique.append((label, folder))
    return unique


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    digest = _HASH_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        _HASH_CACHE[key] = digest
    return digest


def _verify(path: Path, info: TraceInfo) -> Path:
    actual = _sha256(path)
    if actual != info.sha256:
        raise InputError(
            f"sha256 mismatch for trace {info.name!r}: expected {info.sha256}, got {actual}; "
            f"the file is damaged or a different version; replace it with a fresh copy of "
            f"{info.url}",
            path=path,
        )
    return path


def trace_path(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Path:
    """The local, sha256-verified path of trace ``name`` (downloading it if allowed and needed).

    Raises :class:`InputError` on a checksum mismatch (naming the file and both hashes) or when
    the file is nowhere and cannot be downloaded (listing every folder looked in).
    """
    info = _info(name)
    dirs = search_dirs(data_dir)
    cache = dirs[-1][1]
    looked = []
    for label, folder in dirs:
        candidate = folder / info.file
        if candidate.is_file():
            if folder is cache and download and _sha256(candidate) != info.sha256:
                break  # a damaged download: pooch.retrieve below fetches a fresh copy
            return _verify(candidate, info)
        looked.append(f"{label}: {candidate}")

    reason = "download=False"
    if download:
        try:
            fetched = pooch.retrieve(
                info.url,
                known_hash=f"sha256:{info.sha256}",
                path=cache,
                fname=info.file,
                progressbar=False,
            )
            return _verify(Path(fetched), info)
        except InputError:
            raise
        except Exception as exc:  # network, HTTP, disk or hash failure inside pooch
            reason = f"the download failed ({type(exc).__name__}: {exc})"
    places = "; ".join(looked) if looked else "(no folder)"
    raise InputError(
        f"trace {name!r} ({info.file}) not found and not downloaded: {reason}. Looked in: "
        f"{places}. Get it from {info.url} (sha256 {info.sha256}) and put it in a folder "
        f"named by the environment variable {DATA_DIR_ENV}, or pass data_dir=..., or call "
        "with download=True to fetch it into the pooch cache",
        path=info.file,
    )


def _lengths(raw: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = (
            ~np.isfinite(values)
            | (values < 0)
            | (values != np.round(values))
            | (values > MAX_LENGTH)
        )
    check_csv_rows(
        bad, f"must be a whole number of tokens in [0, {MAX_LENGTH}]", raw, column, path=path
    )
    return values.astype(np.int64)


def _arrivals(raw: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    text = raw[column]
    if not pd.api.types.is_string_dtype(text.dtype):  # numbers where a time belongs: as text
        text = text.astype(str).where(text.notna(), None)
    stamps = pd.to_datetime(text, format=_TIMESTAMP_FORMAT, errors="coerce")
    missing = stamps.isna().to_numpy()
    check_csv_rows(
        missing, "not a timestamp like '2023-11-16 18:15:46.6805900'", raw, column, path=path
    )
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return (ns - ns.min()).astype(np.float64) / 1e9


def _requests_from_raw(
    raw: pd.DataFrame, info: TraceInfo, path: Path, id_prefix: str | None = None
) -> pd.DataFrame:
    """Turn the raw CSV table into a request table (not yet validated), dropping zero lengths."""
    header_line = raw.attrs.get("header_line", 1)
    for column in (info.prompt_column, info.gen_column, info.time_column):
        if column is not None and column not in raw.columns:
            raise InputError(
                "missing column in the header", path=path, line=header_line, field=column
            )
    if len(raw) == 0:
        raise InputError("no requests: the file has a header but no rows", path=path)
    prompt = _lengths(raw, info.prompt_column, path)
    gen = _lengths(raw, info.gen_column, path)
    row = np.arange(len(raw), dtype=np.int64)
    width = max(6, len(str(max(len(raw) - 1, 0))))
    ids = pd.Series(row).astype(str).str.zfill(width)
    prefix = info.id_prefix if id_prefix is None else str(id_prefix)
    data: dict[str, object] = {
        "request_id": (prefix + "-" + ids).to_numpy(dtype=object),
        "prompt_len": prompt,
        "gen_len": gen,
    }
    if info.time_column is not None:
        data["arrival_s"] = _arrivals(raw, info.time_column, path)
    df = pd.DataFrame(data)
    keep = (prompt > 0) & (gen > 0)
    dropped = int(len(df) - keep.sum())
    lines = raw.attrs.get("source_lines")
    if dropped:
        df = df.loc[keep].reset_index(drop=True)
        if lines is not None:
            lines = np.asarray(lines)[keep]
    if not len(df):
        raise InputError(
            f"no requests: every one of the {dropped:,} rows has a zero length", path=path
        )
    if lines is not None:
        from batchlab.workload import SourceLines

        df.attrs["source_lines"] = SourceLines(lines)
    df.attrs["dropped_rows"] = dropped
    return df


def trace_format(path: str | os.PathLike[str], columns) -> TraceInfo | None:
    """The registered trace whose CSV format a file has: the trace of that file name when its
    columns are there, else the first trace whose length (and time) columns are all among
    ``columns``; None when the file is in no trace's format."""
    names = set(map(str, columns))

    def fits(info: TraceInfo) -> bool:
        need = {info.prompt_column, info.gen_column}
        if info.time_column is not None:
            need.add(info.time_column)
        return need <= names

    file = Path(path).name
    for info in TRACES.values():
        if info.file == file and fits(info):
            return info
    for info in TRACES.values():
        if fits(info):
            return info
    return None


def requests_from_trace_table(
    raw: pd.DataFrame,
    info: TraceInfo,
    path: str | os.PathLike[str],
    *,
    id_prefix: str | None = None,
) -> pd.DataFrame:
    """The request table of a trace CSV read as a raw table (:func:`batchlab.io.read_csv_table`):
    lengths from ``info``'s columns (zero-length rows dropped), ``arrival_s`` from its time
    column, ids ``"<prefix>-<row>"``: ``info``'s prefix when ``path`` is the trace's own file
    name, else ``id_prefix`` or the file's stem. Errors name the file and line."""
    p = Path(path)
    if id_prefix is None and p.name != info.file:
        id_prefix = p.stem
    df = _requests_from_raw(raw, info, p, id_prefix)
    dropped = df.attrs["dropped_rows"]
    out = validate_requests(df, source=p)
    out.attrs["dropped_rows"] = dropped
    return out


def load_trace(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    limit: int | None = None,
) -> pd.DataFrame:
    """Load a registered real trace as a request table.

    Columns: ``request_id`` (``"<prefix>-<row>"``, the row number in the file, zero-padded to 6
    digits, e.g. ``"azure-conv-000000"``), ``prompt_len`` and ``gen_len`` (tokens, int64) and, for
    the Azure traces, ``arrival_s`` (float seconds from the trace's first request). ``limit``
    keeps only the first ``limit`` requests in file order (after zero-length rows are dropped).
    ``df.attrs`` holds ``trace`` (the name), ``attribution``, ``licence``, ``source`` (URL),
    ``path`` and ``dropped_rows``. See :func:`trace_path` for where the file is looked for.
    """
    info = _info(name)
    limit = check_scalar(limit, "limit", int, min_val=1, allow_none=True)
    path = trace_path(name, data_dir=data_dir, download=download)
    raw = read_csv_table(path, what="requests")
    df = _requests_from_raw(raw, info, path)
    dropped = df.attrs["dropped_rows"]
    if limit is not None:
        df = df.iloc[: int(limit)]
    df = validate_requests(df, source=path)
    df.attrs.update(
        trace=info.name,
        attribution=info.citation,
        licence=info.licence,
        source=info.url,
        path=str(path),
        dropped_rows=dropped,
    )
    return df
