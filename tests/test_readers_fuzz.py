"""Issue 12: every reader, fed malformed, extreme and hostile files (hypothesis), either returns
a valid table or raises an InputError that names the file (and a line inside it) in one line;
nothing else. The command line on the same files exits 0, 1 or 2, with one line on stderr that
names the file, no traceback and nothing written unless it succeeded.

The fast tier runs a few dozen examples per reader; ``pytest -m slow`` runs many more, and
``BATCHLAB_FUZZ_EXAMPLES=N`` sets how many every test draws."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab.cli import main
from batchlab.errors import InputError
from batchlab.plan import read_plan
from batchlab.planner import read_limits
from batchlab.workload import MAX_ARRIVAL_S, MAX_LENGTH, read_requests

#: examples per reader in the fast tier; BATCHLAB_FUZZ_EXAMPLES=2000 runs a longer hunt
FUZZ_EXAMPLES = int(os.environ.get("BATCHLAB_FUZZ_EXAMPLES", "40"))
FAST = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MANY = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON texts of hostile values (written into the file as they are)
HOSTILE_JSON = [
    "1",
    "7",
    "0",
    "-3",
    "12.0",
    "12.5",
    "1e3",
    "1e400",
    "-1e400",
    str(MAX_LENGTH + 1),
    str(2**63),
    "1" + "0" * 400,
    "true",
    "false",
    "null",
    '"100"',
    '""',
    '"x"',
    '"\\ud800"',
    '"\\udc00z"',
    '"\\ud83d\\ude00"',  # a valid pair (an emoji)
    "[]",
    "[1]",
    "{}",
    '{"seq_align": 64}',
    "NaN",
    "Infinity",
    '"2023-11-16 18:15:46"',
]
ID_JSON = ['"a"', '"b"', '"c"', "1", "2", "1.0", "true", "null", '""', '"\\ud800"', '"a"']


def json_value(pool=HOSTILE_JSON):
    return st.sampled_from(pool)


@st.composite
def jsonl_requests(draw) -> bytes:
    """A JSON Lines request file, most lines well formed, some fields hostile."""
    n = draw(st.integers(1, 6))
    lines = []
    arrivals = draw(st.booleans())

    def field(good: str, pool=HOSTILE_JSON) -> str:  # a hostile value one time in four
        return draw(json_value(pool)) if draw(st.integers(0, 3)) == 0 else good

    for i in range(n):
        fields = {
            "request_id": field(f'"r{i}"', ID_JSON),
            "prompt_len": field(str(10 + i)),
            "gen_len": field("5"),
        }
        if arrivals:
            fields["arrival_s"] = field(str(float(i)))
        keep = [k for k in fields if draw(st.integers(0, 9)) > 0]  # now and then drop a key
        body = ", ".join(f'"{k}": {fields[k]}' for k in keep)
        lines.append("{" + body + "}")
    text = "\n".join(lines) + "\n"
    return draw(corrupted(text.encode()))


@st.composite
def corrupted(draw, data: bytes) -> bytes:
    """``data``, or a corruption of it: cut short, a byte changed, a blank or junk line added,
    a BOM or CRLF line ends, invalid UTF-8."""
    kind = draw(st.sampled_from(["none"] * 4 + ["cut", "byte", "junk", "bom", "crlf", "utf8"]))
    if kind == "cut" and len(data) > 1:
        return data[: draw(st.integers(1, len(data) - 1))]
    if kind == "byte" and data:
        i = draw(st.integers(0, len(data) - 1))
        b = draw(st.sampled_from([b"{", b"}", b'"', b",", b"\n", b"\x00", b"\xff", b"\\", b" "]))
        return data[:i] + b + data[i + 1 :]
    if kind == "junk":
        i = draw(st.integers(0, len(data)))
        junk = draw(
            st.sampled_from([b"\n\n", b"\nnot json\n", b"\n[1, 2]\n", b'\n"s"\n', b"\n{\n"])
        )
        return data[:i] + junk + data[i:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    if kind == "utf8" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + b"\xc3\x28" + data[i:]
    return data


HOSTILE_CELLS = [
    "1",
    "12",
    "0",
    "-1",
    "2.5",
    "1e3",
    "1e400",
    str(MAX_LENGTH + 1),
    "9" * 30,
    "",
    "abc",
    "true",
    "nan",
    "inf",
    '"5"',
    '"a,b"',
    '"open',
    "2023-11-16 18:15:46.6805900",
    " 7",
]


@st.composite
def csv_requests(draw) -> bytes:
    """A CSV request file (our columns, or a trace's own), with hostile cells and headers."""
    kind = draw(st.sampled_from(["requests", "azure", "sharegpt"]))
    header = {
        "requests": ["request_id", "prompt_len", "gen_len", "arrival_s"],
        "azure": ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
        "sharegpt": ["num_prefill_tokens", "num_decode_tokens", "num_total_tokens", "pd_ratio"],
    }[kind]
    header = list(header)
    if draw(st.integers(0, 5)) == 0:
        header.append(draw(st.sampled_from(header)))  # a duplicate column name
    if draw(st.integers(0, 7)) == 0:
        header.pop(draw(st.integers(0, len(header) - 1)))  # a missing column
    n = draw(st.integers(0, 5))
    rows = []
    for i in range(n):
        good = {
            "request_id": f"r{i}",
            "prompt_len": str(10 + i),
            "gen_len": "4",
            "arrival_s": str(float(i)),
            "TIMESTAMP": f"2023-11-16 18:15:{10 + i:02d}.5000000",
            "ContextTokens": str(100 + i),
            "GeneratedTokens": "7",
            "num_prefill_tokens": str(50 + i),
            "num_decode_tokens": "9",
            "num_total_tokens": "59",
            "pd_ratio": "5.5",
        }
        cells = [
            draw(st.one_of(st.just(good.get(h, "1")), st.sampled_from(HOSTILE_CELLS)))
            for h in header
        ]
        if draw(st.integers(0, 9)) == 0:
            cells.append("extra")  # a ragged row
        rows.append(",".join(cells))
    text = "\n".join([",".join(header), *rows]) + "\n"
    return draw(corrupted(text.encode()))


def hostile_column(draw, n: int, role: str):
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "datetime",
                "timedelta",
                "text",
                "float_nan",
                "bool",
                "category",
                "object_mix",
                "nullable",
                "huge",
                "float",
            ]
        )
    )
    if role == "id":
        good = pd.Series([f"r{i}" for i in range(n)])
    elif role == "arrival":
        good = pd.Series(np.arange(n, dtype=np.float64))
    else:
        good = pd.Series(np.arange(1, n + 1, dtype=np.int64) * 10)
    if kind == "good":
        return good
    if kind == "datetime":
        return pd.Series(pd.to_datetime(np.arange(n) + 1, unit="ns"))
    if kind == "timedelta":
        return pd.Series(pd.to_timedelta(np.arange(n) + 1, unit="s"))
    if kind == "text":
        return good.astype(str)
    if kind == "float_nan":
        out = good.astype(float) if role != "id" else pd.Series(np.arange(n, dtype=float))
        out.iloc[draw(st.integers(0, n - 1))] = np.nan
        return out
    if kind == "bool":
        return pd.Series(np.arange(n) % 2 == 0)
    if kind == "category":
        return good.astype("category")
    if kind == "object_mix":  # Parquet holds one type a column: text with a word in it
        return pd.Series([*map(str, good.tolist()[:-1]), "x"], dtype=object)
    if kind == "nullable":
        return pd.Series([*range(1, n), None], dtype="Int64")
    if kind == "huge":
        return pd.Series(np.full(n, 2**63 + 5, dtype=np.uint64))
    return pd.Series(np.arange(n, dtype=float) + 0.5)


@st.composite
def parquet_requests(draw) -> bytes:
    n = draw(st.integers(1, 5))
    df = pd.DataFrame(
        {
            "request_id": hostile_column(draw, n, "id"),
            "prompt_len": hostile_column(draw, n, "length"),
            "gen_len": hostile_column(draw, n, "length"),
        }
    )
    if draw(st.booleans()):
        df["arrival_s"] = hostile_column(draw, n, "arrival")
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    data = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data) - 1))]  # a truncated file
    return data


@st.composite
def jsonl_plans(draw) -> bytes:
    n = draw(st.integers(1, 5))
    lines = []
    for i in range(n):
        rid = draw(st.one_of(st.just(f'"r{i}"'), json_value(ID_JSON)))
        bid = draw(st.one_of(st.just('"b0"'), json_value(ID_JSON)))
        seq = draw(st.one_of(st.just("64"), json_value()))
        shape = draw(
            st.one_of(
                st.just(f'{{"seq_align": {seq}, "heads_align": 32, "hidden_align": 4096}}'),
                st.just(f'{{"seq_align": {seq}}}'),
                json_value(),
            )
        )
        lines.append(f'{{"request_id": {rid}, "batch_id": {bid}, "shape": {shape}}}')
    data = ("\n".join(lines) + "\n").encode()
    wrap = draw(st.sampled_from(["plain"] * 6 + ["gzip", "parquet", "empty"]))
    if wrap == "gzip":
        return gzip.compress(data)
    if wrap == "parquet":
        buf = io.BytesIO()
        pd.DataFrame({"request_id": ["r0"], "batch_id": ["b0"]}).to_parquet(buf)
        return buf.getvalue()
    if wrap == "empty":
        return b"\n \n"
    return draw(corrupted(data))


TOML_VALUES = [
    "1",
    "0",
    "-1",
    "2.5",
    "1e3",
    "inf",
    "nan",
    "1" + "0" * 400,
    '"10"',
    "true",
    "1979-05-27",
    "[1, 2]",
    "{ a = 1 }",
]
LIMIT_KEYS = [
    "max_cost",
    "max_pad_ratio",
    "max_p95_latency_ms",
    "max_sequential_ms",
    "max_batch_size",
    "nonsense",
]


@st.composite
def toml_limits(draw) -> bytes:
    lines = ["[w]"]
    for key in draw(st.lists(st.sampled_from(LIMIT_KEYS), min_size=0, max_size=4, unique=True)):
        lines.append(f"{key} = {draw(st.sampled_from(TOML_VALUES))}")
    if draw(st.integers(0, 5)) == 0:
        lines.insert(0, draw(st.sampled_from(["x = 1", "[w]", "w = 3", "= broken"])))
    return draw(corrupted(("\n".join(lines) + "\n").encode()))


# ---------------------------------------------------------------------------------------------
# the property: a valid table, or one InputError naming the file


def _lines_of(data: bytes) -> int:
    return data.count(b"\n") + 1


def check_reader(read, path: Path, data: bytes):
    path.write_bytes(data)
    try:
        out = read(path)
    except InputError as err:
        text = str(err)
        assert err.path is not None and Path(err.path) == path, (text, data[:200])
        assert text.startswith(str(path)) and "\n" not in text and len(text) < 2000, text
        if err.line is not None:
            assert 1 <= err.line <= _lines_of(data), (err.line, text, data[:200])
        return None
    return out


def check_request_table(df: pd.DataFrame) -> None:
    assert len(df) > 0
    assert df["request_id"].map(type).eq(str).all() and df["request_id"].is_unique
    for s in df["request_id"]:
        s.encode("utf-8")  # valid Unicode: no lone surrogate
    for column in ("prompt_len", "gen_len"):
        assert df[column].dtype == np.int64
        assert ((df[column] >= 1) & (df[column] <= MAX_LENGTH)).all()
    if "arrival_s" in df.columns:
        assert df["arrival_s"].dtype == np.float64
        assert ((df["arrival_s"] >= 0) & (df["arrival_s"] <= MAX_ARRIVAL_S)).all()


def check_plan_table(df: pd.DataFrame) -> None:
    assert len(df) > 0
    for column in ("request_id", "batch_id"):
        assert df[column].map(type).eq(str).all()
        for s in df[column]:
            s.encode("utf-8")
    for column in ("seq_align", "heads_align", "hidden_align"):
        assert df[column].dtype == np.int64 and (df[column] >= 1).all()


@FAST
@given(data=jsonl_requests())
def test_jsonl_request_reader(tmp_path, data):
    out = check_reader(read_requests, tmp_path / "reqs.jsonl", data)
    if out is not None:
        check_request_table(out)


def reference_jsonl(data: bytes) -> tuple[set[int], list[dict] | None]:
    """A slow, obvious reading of a JSON Lines request file by the documented rules: (the file
    lines that break a rule, the requests when none does). Numbers must be JSON numbers (no
    text, no booleans), lengths whole in [1, MAX_LENGTH], arrival_s in [0, MAX_ARRIVAL_S] on
    every line or none, ids strings or whole numbers, non-empty, unique, valid Unicode."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return {data.count(b"\n", 0, err.start) + 1}, None
    objs = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r\n"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            return {number}, None
        if type(obj) is not dict:
            return {number}, None
        objs.append((number, obj))
    if not objs:
        return {1}, None
    bad: set[int] = set()

    def number_ok(v, lo, hi, whole):
        if type(v) not in (int, float):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return lo <= v <= hi and (not whole or float(v).is_integer())

    has_arrival = any("arrival_s" in o for _, o in objs)
    seen: dict[str, int] = {}
    for number, obj in objs:
        for key in ("request_id", "prompt_len", "gen_len"):
            if key not in obj:
                bad.add(number)
        rid = obj.get("request_id")
        if type(rid) is int:
            rid = str(rid)
        if type(rid) is not str or rid == "" or not _encodable(rid):
            bad.add(number)
        elif rid in seen:
            bad |= {number, seen[rid]}
        else:
            seen[rid] = number
        for key in ("prompt_len", "gen_len"):
            if key in obj and not number_ok(obj[key], 1, MAX_LENGTH, True):
                bad.add(number)
        if has_arrival and not number_ok(obj.get("arrival_s"), 0, MAX_ARRIVAL_S, False):
            bad.add(number)
    if bad:
        return bad, None
    return set(), [obj for _, obj in objs]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(FAST, max_examples=3 * FUZZ_EXAMPLES)
@given(data=jsonl_requests())
def test_jsonl_request_reader_agrees_with_a_slow_reference(tmp_path, data):
    """What the documented rules accept is read exactly; what they refuse is refused at one
    of the lines that break them (the reader may meet another broken line first)."""
    bad, expected = reference_jsonl(data)
    path = tmp_path / "reqs.jsonl"
    out = check_reader(read_requests, path, data)
    if expected is None:
        assert out is None, (bad, data[:300])
        try:
            read_requests(path)
        except InputError as err:
            assert err.line in bad, (err.line, bad, str(err), data[:300])
        return
    assert out is not None, data[:300]
    assert out["request_id"].tolist() == [str(o["request_id"]) for o in expected]
    assert out["prompt_len"].tolist() == [int(o["prompt_len"]) for o in expected]
    assert out["gen_len"].tolist() == [int(o["gen_len"]) for o in expected]
    if "arrival_s" in out.columns:
        assert out["arrival_s"].tolist() == [float(o["arrival_s"]) for o in expected]


@FAST
@given(data=csv_requests())
def test_csv_request_reader(tmp_path, data):
    name = "reqs.csv"
    out = check_reader(read_requests, tmp_path / name, data)
    if out is not None:
        check_request_table(out)


@FAST
@given(data=parquet_requests())
def test_parquet_request_reader(tmp_path, data):
    out = check_reader(read_requests, tmp_path / "reqs.parquet", data)
    if out is not None:
        check_request_table(out)


@FAST
@given(data=jsonl_plans())
def test_plan_reader(tmp_path, data):
    out = check_reader(read_plan, tmp_path / "plan.jsonl", data)
    if out is not None:
        check_plan_table(out)


@FAST
@given(data=toml_limits())
def test_limits_reader(tmp_path, data):
    out = check_reader(read_limits, tmp_path / "limits.toml", data)
    if out is not None:
        for limits in out.values():
            for value in limits.as_dict().values():
                assert value is None or (np.isfinite(value) and value > 0)


@FAST
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_in_every_reader(tmp_path, data):
    for name, read in [
        ("r.jsonl", read_requests),
        ("r.csv", read_requests),
        ("r.parquet", read_requests),
        ("p.jsonl", read_plan),
        ("l.toml", read_limits),
    ]:
        check_reader(read, tmp_path / name, data)


@pytest.mark.slow
@MANY
@given(
    data=st.one_of(jsonl_requests(), csv_requests(), parquet_requests(), jsonl_plans()),
    which=st.sampled_from(["jsonl", "csv", "parquet", "plan"]),
)
def test_every_reader_on_many_more_files(tmp_path, data, which):
    read = read_plan if which == "plan" else read_requests
    name = {"jsonl": "r.jsonl", "csv": "r.csv", "parquet": "r.parquet", "plan": "p.jsonl"}[which]
    out = check_reader(read, tmp_path / name, data)
    if out is not None:
        (check_plan_table if which == "plan" else check_request_table)(out)


# ---------------------------------------------------------------------------------------------
# the command line on the same files


GOOD_REQUESTS = "".join(
    json.dumps({"request_id": f"r{i}", "prompt_len": 10 + 7 * i, "gen_len": 3 + i}) + "\n"
    for i in range(5)
)
GOOD_PLAN = "".join(
    json.dumps({"request_id": f"r{i}", "batch_id": "b0", "shape": {"seq_align": 64}}) + "\n"
    for i in range(5)
)


def check_cli(argv: list[str], bad: Path, folder: Path, capsys) -> None:
    before = sorted(p.name for p in folder.iterdir())
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        lines = [
            line for line in err.splitlines() if not line.startswith(("note:", "batchlab: warning"))
        ]
        assert len(lines) == 1, err
        assert bad.name in lines[0], (lines[0], bad)
    if code != 0:
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


COMMANDS = ["profile", "plan", "verify", "evaluate", "simulate"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    requests=st.one_of(jsonl_requests(), csv_requests()),
    plan=jsonl_plans(),
    command=st.sampled_from(COMMANDS),
    bad_plan=st.booleans(),
)
def test_the_command_line_on_hostile_files(
    tmp_path_factory, capsys, requests, plan, command, bad_plan
):
    folder = tmp_path_factory.mktemp("cli")
    csv = requests.lstrip(b"\xef\xbb\xbf")[:1] not in (b"{", b"")
    req = folder / ("reqs.csv" if csv else "reqs.jsonl")
    req.write_bytes(requests)
    good_req = folder / "good.jsonl"
    good_req.write_text(GOOD_REQUESTS)
    pl = folder / "plan.jsonl"
    pl.write_bytes(plan if bad_plan else GOOD_PLAN.encode())
    if command in ("verify", "evaluate"):
        source, bad = (good_req, pl) if bad_plan else (req, req)
        argv = [command, str(source), str(pl)]
    elif command == "plan":
        argv, bad = [command, str(req), "-o", str(folder / "out.jsonl"), "--exact", "never"], req
    elif command == "simulate":
        argv, bad = [command, str(req), "--concurrency", "2", "--policy", "static"], req
    else:
        argv, bad = [command, str(req)], req
    check_cli(argv, bad, folder, capsys)


def test_toml_parse_errors_name_their_line(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text("[w]\nmax_cost = 1\nmax_pad_ratio = = 2\n")
    with pytest.raises(InputError) as info:
        read_limits(path)
    assert (info.value.path, info.value.line) == (str(path), 3)
