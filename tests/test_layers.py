"""The library's layering, checked on the source: no module imports another module's private
names, and no import runs up the layers.

Layers, lowest first (docs/design.md, "Layers"); a module may import its own layer and the
ones below it:

1. core: data, shapes, cost, plans, evaluation, planner, sweeps, traces, hardware arithmetic
   and step times;
2. serving: the simulator, the measurement and the recommendations built on them;
3. presentation: plot builders and the widgets that wrap them;
4. entry points: the command line and the workshop exercises.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "batchlab"

LAYERS: dict[str, int] = {
    # 1. core
    "__init__": 1,
    "errors": 1,
    "checks": 1,
    "stats": 1,
    "io": 1,
    "workload": 1,
    "shapes": 1,
    "cost": 1,
    "plan": 1,
    "plan_meta": 1,
    "evaluate": 1,
    "planner": 1,
    "exact": 1,
    "colgen": 1,
    "branching": 1,
    "shape_relaxation": 1,
    "batch_priced": 1,
    "sweep": 1,
    "datasets": 1,
    "trace_registry": 1,
    "steptime": 1,
    "roofline": 1,
    "calibration": 1,
    "slo": 1,
    "traffic": 1,
    # 2. serving
    "simulate": 2,
    "measure": 2,
    "recommend": 2,
    "loadtest": 2,
    "tinyserver": 2,
    "sim_vs_live": 2,
    "capacity": 2,
    # 3. presentation
    "plots": 3,
    "widgets": 3,
    "tables": 3,
    # 4. entry points
    "__main__": 4,
    "cli": 4,
    "exercises": 4,
}
LAYER_NAMES = {1: "core", 2: "serving", 3: "presentation", 4: "entry points"}


def _sources() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def _module_of(path: Path) -> str:
    """Dotted module name of a source file (``batchlab.simulate.engine``)."""
    rel = path.relative_to(LIB.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top(module: str) -> str:
    """The top-level unit of a batchlab module: ``batchlab.simulate.engine`` -> ``simulate``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, imported batchlab module, names imported from it) for every import statement,
    at any depth (function-level imports count too)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "batchlab" or node.module.startswith("batchlab."):
                out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("batchlab"):
                    out.append((node.lineno, alias.name, []))
    return out


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> batchlab module, for ``import batchlab.x as m`` / ``from batchlab import x``."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("batchlab.") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "batchlab" or node.module.startswith("batchlab."):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if (LIB.parent / Path(*sub.split("."))).exists() or (
                        LIB.parent / Path(*sub.split("."))
                    ).with_suffix(".py").exists():
                        aliases[a.asname or a.name] = sub
    return aliases


def _library() -> list[tuple[str, str, str]]:
    """(module, where, source) of every library file."""
    return [
        (_module_of(p), str(p.relative_to(LIB.parent)), p.read_text(encoding="utf-8"))
        for p in _sources()
    ]


def violations(
    sources: list[tuple[str, str, str]] | None = None, layers: dict[str, int] | None = None
) -> tuple[list[str], list[str]]:
    """(private-name uses, upward imports) in ``sources`` (default: the library)."""
    layers = LAYERS if layers is None else layers
    private, upward = [], []
    for me, rel, text in _library() if sources is None else sources:
        tree = ast.parse(text, filename=rel)
        my_layer = layers[_top(me)]
        for line, module, names in _imports(tree):
            target = _top(module) if module != "batchlab" else None
            for name in names:
                if name.startswith("_") and not name.startswith("__") and module != me:
                    private.append(f"{rel}:{line}: from {module} import {name}")
                if module == "batchlab" and name in layers:
                    target = name
                if target is not None and layers[target] > my_layer:
                    upward.append(
                        f"{rel}:{line}: {LAYER_NAMES[my_layer]} module {me} imports "
                        f"{LAYER_NAMES[layers[target]]} module batchlab.{target}"
                    )
                    target = None
            if not names and target is not None and layers[target] > my_layer:
                upward.append(f"{rel}:{line}: {me} imports {module}")
        aliases = _module_aliases(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and aliases[node.value.id] != me
            ):
                private.append(f"{rel}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return private, upward


def test_every_module_has_a_layer():
    missing = sorted({_top(_module_of(p)) for p in _sources()} - set(LAYERS))
    assert not missing, f"add these to LAYERS (and docs/design.md): {missing}"


@functools.cache
def _library_violations() -> tuple[list[str], list[str]]:
    return violations()  # (the library is parsed once for both tests)


def test_no_module_imports_another_modules_private_names():
    private, _ = _library_violations()
    assert not private, "private names used across modules:\n" + "\n".join(private)


def test_no_import_runs_up_the_layers():
    _, upward = _library_violations()
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    "source, private, upward",
    [
        ("from batchlab.plan import _check\n", 1, 0),
        ("import batchlab.plan as m\nm._lookup(None, None)\n", 1, 0),
        ("from batchlab import plan\nplan._frame({})\n", 1, 0),
        ("from batchlab.plots import shape_buckets_figure\n", 0, 1),
        ("def f():\n    from batchlab.cli import main\n", 0, 1),
        ("from batchlab import simulate\n", 0, 1),
        ("from batchlab.evaluate import evaluate_arrays\nfrom batchlab import __version__\n", 0, 0),
    ],
)
def test_the_checks_catch_what_they_should(source, private, upward):
    # a made-up core module holding the source, checked with the same code as the library
    probe = [("batchlab.probe", "batchlab/probe.py", source)]
    found_private, found_upward = violations(probe, {**LAYERS, "probe": 1})
    assert len(found_private) == private, found_private
    assert len(found_upward) == upward, found_upward
