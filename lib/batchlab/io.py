"""File helpers: atomic writes (temp file in the same folder, then rename) and the one stack
that reads text records and JSON Lines (request files, plans), naming the file and line of
every problem."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from batchlab.errors import InputError

__all__ = [
    "JsonLines",
    "atomic_path",
    "atomic_write",
    "blank_and_object",
    "check_utf8",
    "read_bytes",
    "read_json_lines",
    "split_records",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was, so a failed
    write never leaves a half-written file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
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
        os.replace(tmp_path, target)
    except BaseException:
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


def check_utf8(path: str | os.PathLike[str], data: bytes) -> None:
    """InputError naming the file and line of the first byte that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"not valid UTF-8 text ({err.reason})", path=path, line=line) from None


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
    once by pyarrow's JSON reader (kept only when it finds exactly one object per line); else,
    and for every error, line by line with :func:`json.loads`. Raises :class:`InputError`
    naming the file and line: not UTF-8, invalid JSON, not an object, or no object at all
    (``what`` words that message: "no requests").
    """
    p = Path(path)
    data = read_bytes(p)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    check_utf8(p, data)
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
    return JsonLines(p, lines, records=_parse_lines(p, data, starts, ends, lines))
