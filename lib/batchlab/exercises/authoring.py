"""Learner notebooks from solution notebooks: solution cells become stubs, outputs go.

An author writes ``exercises/solutions/NN_name.ipynb`` with every answer in a *solution cell*: a
code cell tagged ``solution`` (cell metadata ``tags``) or whose first line is ``# SOLUTION``.
Markdown cells tagged ``solution`` (notes for facilitators) are dropped from the learner version.
:func:`learner_notebook` replaces each solution code cell by a stub that assigns ``...`` to the
names the learner must define: the names the solution cell assigns at top level that a later
cell reads (typically the answer passed to a check)::

    budget = ...  # your code here

Every other cell is kept with its source, id and tags; outputs, execution counts and other cell
metadata are removed, and the notebook metadata is reduced to the kernel. ``render`` gives the
exact text written to disk, so ``--check`` can compare it byte for byte.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchlab.errors import InputError
from batchlab.io import atomic_write

__all__ = [
    "SOLUTION_MARKER",
    "SOLUTION_TAG",
    "GeneratedNotebook",
    "answer_names",
    "generate",
    "is_solution_cell",
    "learner_notebook",
    "render",
    "stub_source",
]

SOLUTION_TAG = "solution"
SOLUTION_MARKER = "# SOLUTION"
STUB_COMMENT = "# your code here"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution_cell(cell: Any) -> bool:
    """True for a cell tagged ``solution`` or a code cell whose first non-blank line starts
    with ``# SOLUTION``."""
    if SOLUTION_TAG in _tags(cell):
        return True
    if cell.get("cell_type") != "code":
        return False
    lines = [line.strip() for line in _source(cell).splitlines() if line.strip()]
    return bool(lines) and lines[0].upper().startswith(SOLUTION_MARKER)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython magics and the like
        return None


def _target_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for elt in node.elts for n in _target_names(elt)]
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return []


def _assigned(source: str) -> list[str]:
    """Names assigned at the top level of a cell, in order of first assignment."""
    tree = _parse(source)
    if tree is None:
        return []
    names: list[str] = []
    for stmt in tree.body:
        found: list[str] = []
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                found += _target_names(target)
        elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
            found += _target_names(stmt.target)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append(stmt.name)
        elif isinstance(stmt, ast.For | ast.AsyncFor):
            found += _target_names(stmt.target)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            for item in stmt.items:
                if item.optional_vars is not None:
                    found += _target_names(item.optional_vars)
        for name in found:
            if name not in names:
                names.append(name)
    return names


def _read(source: str) -> set[str]:
    """Names a cell reads (every identifier, if the cell does not parse as Python)."""
    tree = _parse(source)
    if tree is None:
        return set(_IDENTIFIER.findall(source))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def answer_names(cells: list[Any], index: int) -> list[str]:
    """The names the solution cell ``cells[index]`` assigns at top level that a later cell
    reads: what the learner's version of the cell must define."""
    later: set[str] = set()
    for cell in cells[index + 1 :]:
        if cell.get("cell_type") == "code":
            later |= _read(_source(cell))
    return [name for name in _assigned(_source(cells[index])) if name in later]


def stub_source(names: list[str]) -> str:
    """The learner's cell: ``name = ...  # your code here`` per name (or the comment alone)."""
    if not names:
        return STUB_COMMENT
    return "\n".join(f"{name} = ...  {STUB_COMMENT}" for name in names)


def _clean_metadata(cell: Any) -> dict:
    tags = [t for t in _tags(cell) if t != SOLUTION_TAG]
    return {"tags": tags} if tags else {}


def learner_notebook(nb: Any, *, source: str | None = None) -> Any:
    """The learner version of solution notebook ``nb`` (an ``nbformat`` v4 notebook): solution
    code cells become stubs, solution Markdown cells are dropped, outputs and execution counts
    are removed. ``source`` (e.g. ``"solutions/01_workload_profiling.ipynb"``) is recorded in
    the notebook metadata."""
    import nbformat

    cells = list(nb.cells)
    out = nbformat.v4.new_notebook()
    kernelspec = nb.metadata.get("kernelspec")
    metadata: dict[str, Any] = {}
    if kernelspec:
        metadata["kernelspec"] = copy.deepcopy(dict(kernelspec))
    metadata["language_info"] = {"name": nb.metadata.get("language_info", {}).get("name", "python")}
    note = "Generated by scripts/make_exercises.py: edit the solution notebook, not this one."
    metadata["batchlab"] = {"generated_from": source, "note": note} if source else {"note": note}
    out.metadata = nbformat.from_dict(metadata)
    for i, cell in enumerate(cells):
        kind = cell.get("cell_type")
        cell_id = cell.get("id")
        if is_solution_cell(cell):
            if kind != "code":
                continue
            new = nbformat.v4.new_code_cell(stub_source(answer_names(cells, i)))
        elif kind == "code":
            new = nbformat.v4.new_code_cell(_source(cell))
        elif kind == "markdown":
            new = nbformat.v4.new_markdown_cell(_source(cell))
            if cell.get("attachments"):
                new["attachments"] = copy.deepcopy(dict(cell["attachments"]))
        else:
            new = nbformat.v4.new_raw_cell(_source(cell))
        new.metadata = nbformat.from_dict(_clean_metadata(cell))
        if cell_id:
            new["id"] = cell_id
        out.cells.append(new)
    nbformat.validate(out)
    return out


def render(nb: Any) -> str:
    """The notebook as the exact text written to disk (nbformat's JSON, one trailing newline)."""
    import nbformat

    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


@dataclass(frozen=True)
class GeneratedNotebook:
    """One learner notebook: its ``path``, the ``solution`` it comes from (None for a learner
    notebook without a solution) and its ``status``: ``written``, ``unchanged``,
    ``out of date``, ``missing`` or ``stale`` (no solution notebook)."""

    path: Path
    solution: Path | None
    status: str


def generate(
    solutions_dir: str | Path, out_dir: str | Path | None = None, *, check: bool = False
) -> list[GeneratedNotebook]:
    """Write (or with ``check=True`` only compare) the learner version of every
    ``NN_*.ipynb`` of ``solutions_dir`` into ``out_dir`` (default: its parent folder).

    Writes are atomic and only happen when the text differs. In check mode nothing is written;
    the statuses say which learner notebooks are ``out of date`` or ``missing``, and a learner
    notebook without a solution notebook is ``stale``.
    """
    import nbformat

    src_dir = Path(solutions_dir)
    if not src_dir.is_dir():
        raise InputError("no such folder of solution notebooks", path=src_dir)
    dst_dir = src_dir.parent if out_dir is None else Path(out_dir)
    results = []
    solutions = sorted(src_dir.glob("[0-9]*.ipynb"))
    for path in solutions:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # nbformat raises several types for a damaged file
            raise InputError(f"cannot read the notebook: {exc}", path=path) from exc
        try:
            rel = path.relative_to(dst_dir).as_posix()
        except ValueError:
            rel = path.name
        text = render(learner_notebook(nb, source=rel))
        target = dst_dir / path.name
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            status = "unchanged"
        elif check:
            status = "missing" if current is None else "out of date"
        else:
            with atomic_write(target, "w") as fh:
                fh.write(text)
            status = "written"
        results.append(GeneratedNotebook(target, path, status))
    names = {p.name for p in solutions}
    for learner in sorted(dst_dir.glob("[0-9]*.ipynb")):
        if learner.name not in names:
            results.append(GeneratedNotebook(learner, None, "stale"))
    return results
