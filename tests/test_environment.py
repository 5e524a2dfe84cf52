"""environment.yml must list the same dependencies, with the same lower bounds, as pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI names in pyproject.toml
CONDA_TO_PYPI = {"pytorch": "torch"}
# a PyPI requirement with extras that conda-forge splits into several packages
PYPI_SPLITS = {"dask[distributed]": ["dask", "distributed"]}
NOT_DEPENDENCIES = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*(.*?)\s*", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return match.group(1).lower(), match.group(2).replace(" ", "")


def pyproject_requirements(root: Path = ROOT) -> dict[str, str]:
    data = tomllib.loads((root / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    out: dict[str, str] = {}
    for req in reqs:
        name, spec = _split(req)
        for part in PYPI_SPLITS.get(name, [name]):
            out[part] = spec
    return out


def environment_requirements(root: Path = ROOT) -> dict[str, str]:
    out: dict[str, str] = {}
    in_deps = False
    for raw in (root / "environment.yml").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not raw.startswith(" "):
            in_deps = line.startswith("dependencies:")
            continue
        if in_deps and line.lstrip().startswith("- "):
            name, spec = _split(line.lstrip()[2:])
            name = CONDA_TO_PYPI.get(name, name)
            if name not in NOT_DEPENDENCIES:
                out[name] = spec
    return out


def test_environment_lists_the_same_packages_as_pyproject() -> None:
    pyproject, env = pyproject_requirements(), environment_requirements()
    assert sorted(set(pyproject) - set(env)) == [], (
        "in pyproject.toml, missing from environment.yml"
    )
    assert sorted(set(env) - set(pyproject)) == [], (
        "in environment.yml, missing from pyproject.toml"
    )


def test_environment_has_the_same_lower_bounds_as_pyproject() -> None:
    pyproject, env = pyproject_requirements(), environment_requirements()
    differ = {n: (pyproject[n], env[n]) for n in pyproject if env.get(n) != pyproject[n]}
    assert differ == {}


def test_environment_python_matches_requires_python() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    text = (ROOT / "environment.yml").read_text()
    assert f"python{data['project']['requires-python']}" in text.replace(" ", "")


def test_the_checker_notices_a_drift(tmp_path) -> None:
    """The comparison is not vacuous: dropping a package from the env file is caught."""
    env_text = (ROOT / "environment.yml").read_text()
    assert "  - tqdm>=4.66\n" in env_text
    (tmp_path / "environment.yml").write_text(env_text.replace("  - tqdm>=4.66\n", ""))
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    missing = set(pyproject_requirements(tmp_path)) - set(environment_requirements(tmp_path))
    assert missing == {"tqdm"}
