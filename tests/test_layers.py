"""The tree's layers, as docs/architecture.md draws them: imports run one way only, Ray stays in
pipelines/, and the parity kit (test support) stays out of everything that ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

FIRST_PARTY = {
    "sa_engine",
    "sam_core",
    "curation",
    "synthetic",
    "analysis",
    "pipelines",
    "tools",
    "parity",
    "tests",
    "benchmarks",
}
MAY_IMPORT = {
    "sa_engine": {"sa_engine", "pipelines", "tools", "analysis", "synthetic", "curation", "sam_core"},
    "sam_core": {"sam_core"},
    "curation": {"curation", "sam_core"},
    "synthetic": {"synthetic", "curation", "sam_core"},
    "analysis": {"analysis", "curation", "sam_core"},
    "tools": {"tools", "synthetic", "curation", "sam_core"},
    "pipelines": {"pipelines", "curation", "sam_core"},
    "parity": {"parity", "sam_core"},
}
"""Each package and the first-party packages its modules may import (itself included)."""
WITHOUT_RAY = {"sa_engine", "sam_core", "curation", "synthetic", "analysis", "tools", "parity"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_run_down_the_layers_only(package):
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules, f"{package}/ holds no module"
    wrong = {}
    for path in modules:
        roots = _imported_roots(path)
        upward = (roots & FIRST_PARTY) - MAY_IMPORT[package]
        if package in WITHOUT_RAY and "ray" in roots:
            upward.add("ray")
        if upward:
            wrong[str(path.relative_to(REPO))] = sorted(upward)
    assert not wrong, f"imports against the layers: {wrong}"


def test_the_parity_kit_is_not_shipped():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "parity*" not in shipped and "tests*" not in shipped
    assert {p.rstrip("*") for p in shipped} == set(MAY_IMPORT) - {"parity"}
