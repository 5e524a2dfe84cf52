"""File helpers: atomic writes (temp file in the same folder, then rename), all or nothing
across the files one command writes, and the one stack that reads text records and JSON Lines
(request files, plans), naming the file and line of every problem."""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from batchlab.errors import InputError

__all__ = [
    "LEGACY_TEMP_AGE_S",
    "JsonLines",
    "all_or_nothing",
    "atomic_path",
    "atomic_write",
    "blank_and_object",
    "check_outputs",
    "check_utf8",
    "check_writable",
    "read_bytes",
    "read_csv_table",
    "read_json_lines",
    "read_text",
    "recording_writes",
    "remove_stale_temp_files",
    "split_records",
    "stale_temp_files",
    "write_json",
]


# --------------------------------------------------------------------------------------------
# writing files: atomic, all or nothing across the files of one command

#: a temporary file of ours: ``.<name>.<pid>.<8 random characters>.tmp`` beside its target.
_TEMP = re.compile(r"(?P<pid>\d+)\.[a-z0-9_]{8}")
#: the temporary files of earlier versions carried no pid: ``.<name>.<8 random>.tmp``.
_LEGACY_TEMP = re.compile(r"[a-z0-9_]{8}")
#: a pid-less temporary file older than this (seconds) is stale.
LEGACY_TEMP_AGE_S = 3600.0

_GROUP: contextvars.ContextVar[_Group | None] = contextvars.ContextVar("batchlab_io_group")
_WRITTEN: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "batchlab_io_written", default=None
)


@contextlib.contextmanager
def recording_writes() -> Iterator[list[Path]]:
    """Yield a list that every target committed inside the block is appended to (in the order
    the renames happened): what a command interrupted after its writes has written."""
    written: list[Path] = []
    token = _WRITTEN.set(written)
    try:
        yield written
    finally:
        _WRITTEN.reset(token)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: keep its file
    return True


def stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files an interrupted write of ``path`` left beside it: those whose writing
    process no longer runs (the pid is in the name), and pid-less ones of earlier versions
    older than :data:`LEGACY_TEMP_AGE_S`. A write in progress (a live pid) is never listed."""
    target = Path(path)
    prefix = f".{target.name}."
    try:
        names = os.listdir(target.parent if str(target.parent) else ".")
    except OSError:
        return []
    out = []
    now = time.time()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix) : -len(".tmp")]
        file = target.parent / name
        match = _TEMP.fullmatch(middle)
        if match:
            if not _pid_alive(int(match.group("pid"))):
                out.append(file)
        elif _LEGACY_TEMP.fullmatch(middle):
            with contextlib.suppress(OSError):
                if now - file.lstat().st_mtime > LEGACY_TEMP_AGE_S:
                    out.append(file)
    return sorted(out)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> int:
    """Remove :func:`stale_temp_files` of ``path``; returns how many were removed."""
    removed = 0
    for file in stale_temp_files(path):
        with contextlib.suppress(OSError):
            file.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back while the block runs and handled as it ends: around the
    creation of a temp file and the statement that records it (or a rename and its count), so
    that an interrupt cannot fall between the two and leave a file that nothing removes.

    Python runs signal handlers in the main thread only, so there a handler that only notes the
    signal stands in for the block (blocking the signal with ``pthread_sigmask`` would not do:
    the kernel hands it to another thread); in other threads nothing is interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(sig)
            if current is not None and current != signal.SIG_IGN:  # (None: set outside Python)
                previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught:  # what the signal would have done, now
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _new_temp(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    return Path(tmp)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path when a file may be written there; InputError naming it when it is
    empty, a folder, or an existing file without write permission (mode bits, so root is
    refused too: a read-only file is never replaced without a word)."""
    if str(path) == "":
        raise InputError("an empty output path")
    target = Path(path)
    if target.is_dir():
        raise InputError("is a folder, not a file", path=target)
    if target.exists() and not target.stat().st_mode & 0o222:
        raise InputError(
            "the file is read-only: not replacing it (make it writable or choose another output)",
            path=target,
        )
    return target


def _file_key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    if _file_key(a) == _file_key(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Sequence[str | os.PathLike[str]],
    inputs: Sequence[str | os.PathLike[str]] = (),
    *,
    field: str | None = None,
) -> list[Path]:
    """The outputs of one command, checked before any work: each writable
    (:func:`check_writable`), no path given twice, none the same file as one of ``inputs``
    (an output never replaces what the command reads). InputError naming the path (and
    ``field``, the option) otherwise."""
    paths = []
    seen: dict[str, Path] = {}
    for raw in outputs:
        try:
            target = check_writable(raw)
        except InputError as err:
            raise InputError(err.message, path=err.path, field=field) from None
        key = _file_key(target)
        if key in seen:
            raise InputError(
                f"the same file is written twice (also as {str(seen[key])!r})",
                path=target,
                field=field,
            )
        seen[key] = target
        paths.append(target)
    for raw in inputs:
        source = Path(raw)
        if not source.exists():
            continue
        for target in paths:
            if _same_file(source, target):
                raise InputError(
                    "an output is also an input: it would replace the file being read",
                    path=target,
                    field=field,
                )
    return paths


class _Group:
    """The files written inside one :func:`all_or_nothing` block: (temp, target) pairs."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []
        self.keys: dict[str, Path] = {}

    def add(self, tmp: Path, target: Path) -> None:
        key = _file_key(target)
        if key in self.keys:
            tmp.unlink(missing_ok=True)
            raise InputError("the same file is written twice in one command", path=target)
        self.keys[key] = target
        self.pending.append((tmp, target))

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending = []


def _commit(pairs: list[tuple[Path, Path]]) -> None:
    """Rename every temp file onto its target; if one rename fails, the targets renamed so
    far get their old contents back (hard-linked or copied aside first), so the targets
    end as all new or all old."""
    backups: list[Path | None] = []
    done = 0
    written = _WRITTEN.get()
    try:
        for _, target in pairs:
            check_writable(target)
        if len(pairs) > 1:
            for _, target in pairs:
                if not target.exists():
                    backups.append(None)
                    continue
                with _signals_held():
                    backup = _new_temp(target)
                    backups.append(backup)
                backup.unlink()
                try:
                    os.link(target, backup)
                except OSError:
                    shutil.copy2(target, backup)
        for tmp, target in pairs:
            with _signals_held():
                os.replace(tmp, target)
                done += 1
                if written is not None:
                    written.append(target)
    except BaseException:
        for (_, target), backup in zip(pairs[:done], backups, strict=False):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink()
                if written is not None:
                    written.remove(target)  # (rolled back: not written after all)
        for tmp, _ in pairs[done:]:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        for backup in backups:
            if backup is not None:
                backup.unlink(missing_ok=True)


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Make every :func:`atomic_path` / :func:`atomic_write` inside the block one write: each
    file goes to its temp file, and only when the whole block succeeds are they all renamed
    onto their targets (rolled back if a rename fails). On an exception (a signal included)
    every temp file is removed and no target is touched. A target written twice in the block
    is an InputError. Nested blocks join the outermost one."""
    if _GROUP.get(None) is not None:
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
    except BaseException:
        _GROUP.reset(token)
        group.discard()
        raise
    _GROUP.reset(token)
    try:
        _commit(group.pending)
    finally:
        group.pending = []


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (inside
    :func:`all_or_nothing`: when the whole block succeeds).

    On an exception the temporary file is removed and ``path`` is left as it was, so a failed
    write never leaves a half-written file behind. A read-only ``path`` is refused
    (:func:`check_writable`); temp files that an interrupted earlier write of ``path`` left
    behind are removed first (:func:`remove_stale_temp_files`).
    """
    target = check_writable(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target)
    tmp_path = None
    try:
        with _signals_held():
            tmp_path = _new_temp(target)
        yield tmp_path
        # mkstemp makes the file private (0600): give it the mode a plain open() would, or
        # keep the mode of the file it replaces
        if target.exists():
            mode = target.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp_path, mode)
        group = _GROUP.get(None)
        if group is not None:
            group.add(tmp_path, target)
        else:
            _commit([(tmp_path, target)])
    except BaseException:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_json(value: Any, path: str | os.PathLike[str]) -> None:
    """Write ``value`` as indented JSON (UTF-8, a final newline), atomically."""
    text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_write(path, "w") as fh:
        fh.write(text)


# --------------------------------------------------------------------------------------------
# reading text files: one stack for every JSON Lines (and CSV record) reader


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a file; InputError naming it when it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file" if not p.exists() else "not a file", path=p)
    try:
        return p.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", path=p) from None


#: magic bytes of binary files that are given where text is expected.
_BINARY_KINDS = (
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"PAR1", "a Parquet file (give it a .parquet suffix where Parquet is read)"),
    (b"PK\x03\x04", "a zip archive (extract it first)"),
    (b"BZh", "a bzip2-compressed file (decompress it first)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file (decompress it first)"),
)


def check_utf8(path: str | os.PathLike[str], data: bytes) -> None:
    """InputError naming the file and line of the first byte that is not UTF-8 (and what the
    file is, when it is a compressed file or Parquet given where text is expected)."""
    if data.isascii():  # ASCII is UTF-8 (a scan, no decoding)
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        for magic, kind in _BINARY_KINDS:
            if data.startswith(magic):
                raise InputError(f"not text: this is {kind}", path=path) from None
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"not valid UTF-8 text ({err.reason})", path=path, line=line) from None


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a UTF-8 file (a byte-order mark dropped); InputError naming the file (and
    line) when it is missing, unreadable or not UTF-8."""
    data = read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    check_utf8(path, data)
    return data.decode("utf-8")


_WS = b" \t\r\n"


def split_records(data: bytes, *, quotes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``data`` into records at newlines (outside double quotes if ``quotes``).

    Returns the byte ``starts`` and ``ends`` of each record (ends exclude the newline) and the
    1-based file ``line`` each record starts on. Vectorized over the bytes.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    seps = newlines
    if quotes:
        quote_pos = np.flatnonzero(buf == 34)
        if len(quote_pos):
            # a newline separates records when an even number of quotes comes before it
            seps = newlines[np.searchsorted(quote_pos, newlines) % 2 == 0]
    starts = np.concatenate(([0], seps + 1)).astype(np.int64)
    ends = np.concatenate((seps, [len(buf)])).astype(np.int64)
    if seps is newlines:  # every newline ends a record: record i starts on line i + 1
        lines = np.arange(1, len(starts) + 1, dtype=np.int64)
    else:
        lines = np.searchsorted(newlines, starts) + 1
    return starts, ends, lines


def blank_and_object(
    data: bytes, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each record: is it blank (only whitespace), and does it look like ``{...}``?

    Records starting with a non-blank byte are judged on their first and last bytes, vectorized;
    the rare others (indented or empty) are stripped one by one.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(starts)
    nonempty = ends > starts
    first = np.zeros(n, dtype=np.uint8)
    last = np.zeros(n, dtype=np.uint8)
    first[nonempty] = buf[starts[nonempty]]
    last[nonempty] = buf[ends[nonempty] - 1]
    # drop one trailing \r (CRLF files)
    cr = nonempty & (last == 13) & (ends - starts >= 2)
    last[cr] = buf[ends[cr] - 2]
    ws_first = np.isin(first, np.frombuffer(_WS, dtype=np.uint8)) | ~nonempty
    blank = np.zeros(n, dtype=bool)
    objectish = ~ws_first & (first == ord("{")) & (last == ord("}"))
    for i in np.flatnonzero(ws_first):
        stripped = data[starts[i] : ends[i]].strip(_WS)
        blank[i] = not stripped
        objectish[i] = stripped.startswith(b"{") and stripped.endswith(b"}")
    return blank, objectish


_PANDAS_LINE = re.compile(r"\b(line|row) (\d+)")


def read_csv_table(
    path: str | os.PathLike[str], *, text_columns: Sequence[str] = (), what: str = "rows"
) -> Any:
    """Read a CSV file (a header line, then one record per line) as a raw ``pandas.DataFrame``
    of the values pandas infers (``text_columns`` kept as text; empty cells missing).

    The one CSV reader: raises :class:`InputError` naming the file and line for a file that is
    not UTF-8 (or is compressed/Parquet), empty, has a duplicate column name in the header, or
    a malformed record (a quote never closed: the line where it opens).
    ``attrs["source_lines"]``: the 1-based file line of every row; ``attrs["header_line"]``.
    """
    import csv

    import pandas as pd

    p = Path(path)
    data = read_bytes(p)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    check_utf8(p, data)
    if not data.strip(_WS):
        raise InputError(f"empty file: no header and no {what}", path=p)
    starts, ends, lines = split_records(data, quotes=True)
    blank, _ = blank_and_object(data, starts, ends)
    record_lines = lines[~blank]
    first = int(np.flatnonzero(~blank)[0])
    header_line = int(lines[first])
    try:
        header = next(csv.reader([data[starts[first] : ends[first]].decode("utf-8").rstrip("\r")]))
    except (csv.Error, StopIteration):
        header = []  # pandas reports what is wrong with it
    seen: set[str] = set()
    for name in header:
        if name in seen and name != "":  # pandas would rename the second one 'name.1'
            raise InputError("duplicate column in the header", path=p, line=header_line, field=name)
        seen.add(name)
    try:
        df = pd.read_csv(
            io.BytesIO(data),
            dtype={c: str for c in text_columns},
            keep_default_na=False,
            na_values=[""],
            low_memory=False,
            encoding="utf-8",
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"empty file: no header and no {what}", path=p) from None
    except pd.errors.ParserError as err:
        text = str(err).strip().replace("Error tokenizing data. C error: ", "")
        match = _PANDAS_LINE.search(text)
        line = None
        if match:  # pandas counts records (blank ones too); map to the file line
            # "line N" counts records from 1, "row N" (an open quote) from 0, header included
            rec = int(match.group(2)) - (1 if match.group(1) == "line" else 0)
            line = int(lines[rec]) if 0 <= rec < len(lines) else None
            text = _PANDAS_LINE.sub("this line", text, count=1)
            if "EOF inside string" in text:
                text = "a quoted field opens on this line and is never closed"
        raise InputError(f"malformed CSV: {text}", path=p, line=line) from None
    df.attrs["header_line"] = header_line
    if len(record_lines) == len(df) + 1:
        df.attrs["source_lines"] = record_lines[1:]
    return df


_JSON_TYPE_NAMES = {
    "list": "array",
    "str": "string",
    "int": "number",
    "float": "number",
    "bool": "boolean",
    "NoneType": "null",
}


@dataclass(frozen=True, eq=False)
class JsonLines:
    """A parsed JSON Lines file (:func:`read_json_lines`): one JSON object per non-blank line.

    ``lines``: the 1-based file line of each object. Exactly one of ``table`` (a
    ``pyarrow.Table`` from the bulk parser, nested objects as struct columns) and ``records``
    (the objects as dicts, from ``json.loads`` line by line) is set.
    """

    path: Path
    lines: np.ndarray
    table: Any = None
    records: list[dict] | None = None

    def objects(self) -> list[dict]:
        """The objects as dicts (converted from the table when the bulk parser read them)."""
        if self.records is not None:
            return self.records
        return self.table.to_pylist()


def _bulk_parse(data: bytes, n_rows: int, max_line: int) -> Any | None:
    """Bulk-parse JSON Lines with pyarrow; None when the caller should parse line by line."""
    import pyarrow as pa  # only here: the other readers and writers need no Arrow
    import pyarrow.json as pa_json

    block = max(1 << 20, 2 * max_line + 16)
    try:
        table = pa_json.read_json(
            pa.BufferReader(data), read_options=pa_json.ReadOptions(block_size=block)
        )
        stamps = [f for f in table.schema if pa.types.is_timestamp(f.type)]
        if stamps:  # pyarrow turns date-like strings into timestamps: keep the text instead
            names = table.column_names
            schema = pa.schema([(f.name, pa.string()) for f in stamps])
            table = pa_json.read_json(
                pa.BufferReader(data),
                read_options=pa_json.ReadOptions(block_size=block),
                parse_options=pa_json.ParseOptions(explicit_schema=schema),
            )
            if sorted(table.column_names) != sorted(names):
                return None
            table = table.select(names)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != n_rows:
        return None
    return table


def _parse_lines(
    path: Path, data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray
) -> list[dict]:
    """Parse each non-blank line with :func:`json.loads`; raise on the first bad line."""
    pieces = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    try:
        objs = list(map(json.loads, pieces))
    except ValueError:
        objs = None
    if objs is None:  # locate the first bad line
        for piece, line in zip(pieces, lines.tolist(), strict=True):
            try:
                json.loads(piece)
            except UnicodeDecodeError as err:
                raise InputError(
                    f"not valid UTF-8 text ({err.reason})", path=path, line=line
                ) from None
            except json.JSONDecodeError as err:
                raise InputError(
                    f"invalid JSON: {err.msg} (column {err.colno})", path=path, line=line
                ) from None
        raise AssertionError("unreachable: a line failed to parse once but not twice")
    not_dict = next((i for i, o in enumerate(objs) if type(o) is not dict), None)
    if not_dict is not None:
        got = type(objs[not_dict]).__name__
        raise InputError(
            f"not a JSON object (got a JSON {_JSON_TYPE_NAMES.get(got, got)})",
            path=path,
            line=int(lines[not_dict]),
        )
    return objs


def read_json_lines(
    path: str | os.PathLike[str], *, bulk: bool = True, what: str = "rows"
) -> JsonLines:
    """Read a JSON Lines file: one JSON object per line, blank lines skipped, a UTF-8 byte-order
    mark ignored.

    With ``bulk`` (default) a file whose every non-blank line looks like ``{...}`` is parsed at
    once by pyarrow's JSON reader (kept only when it finds exactly one object per line; a file
    of the plain layout, ``{...}`` on every line and no blank one, is recognised by counting
    ``}\n{`` before any splitting into records); else,
    and for every error, line by line with :func:`json.loads`. Raises :class:`InputError`
    naming the file and line: not UTF-8, invalid JSON, not an object, or no object at all
    (``what`` words that message: "no requests").
    """
    p = Path(path)
    data = read_bytes(p)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    check_utf8(p, data)
    if bulk:  # the plain layout, '{...}' on every line and no blank one, seen without numpy
        end = len(data) - 1 if data.endswith(b"\n") else len(data)  # (no copy of the bytes)
        n_rows = data.count(b"\n", 0, end) + 1
        if (
            data.startswith(b"{")
            and data.endswith(b"}", 0, end)
            and data.count(b"}\n{", 0, end) == n_rows - 1
        ):
            table = _bulk_parse(data, n_rows, 1 << 20)
            if table is not None:
                return JsonLines(p, np.arange(1, n_rows + 1, dtype=np.int64), table=table)
    starts, ends, lines = split_records(data, quotes=False)
    blank, objectish = blank_and_object(data, starts, ends)
    keep = ~blank
    if not keep.any():
        raise InputError(f"empty file: no {what}", path=p)
    starts, ends, lines, objectish = starts[keep], ends[keep], lines[keep], objectish[keep]
    # The bulk parser treats newlines as plain whitespace; when every non-blank line starts
    # with '{' and ends with '}' and the row count equals the line count, each line is exactly
    # one object (two objects cannot merge across '}\n{' without a comma).
    if bulk and objectish.all():
        table = _bulk_parse(data, len(starts), int((ends - starts).max()))
        if table is not None:
            return JsonLines(p, lines, table=table)
    records = _parse_lines(p, data, starts, ends, lines)
    if _SURROGATE_ESCAPE.search(data):  # pyarrow refuses these; json.loads keeps them
        _check_surrogates(p, records, lines)
    return JsonLines(p, lines, records=records)


#: a JSON escape of one half of a UTF-16 surrogate pair (``\ud800``): fine in a pair, not alone
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _lone_surrogate(value: object) -> str | None:
    """The key path of the first string holding a lone surrogate in a parsed JSON value."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ""
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = _lone_surrogate(key)
            if inner is None:
                inner = _lone_surrogate(item)
            if inner is not None:
                return f"{key}.{inner}" if inner else str(key)
    elif isinstance(value, list):
        for item in value:
            inner = _lone_surrogate(item)
            if inner is not None:
                return inner
    return None


def _check_surrogates(path: Path, records: list[dict], lines: np.ndarray) -> None:
    """InputError naming the file, line and field of a string with a lone surrogate escape
    (``"\ud800"``): it is no character and cannot be written back as UTF-8."""
    for obj, line in zip(records, lines.tolist(), strict=True):
        where = _lone_surrogate(obj)
        if where is not None:
            raise InputError(
                "not valid Unicode: a lone surrogate escape such as \\ud800 (half of a "
                "UTF-16 pair) in a string",
                path=path,
                line=line,
                field=where.encode("utf-8", "backslashreplace").decode("ascii") or None,
            )
