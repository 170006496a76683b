"""Layers point one way: oo_ml below every app, policies the lowest app, and
tasks that import their services only when they run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _code(app: str) -> list[Path]:
    """An app's modules, its tests and migrations left out."""
    return [
        path
        for path in sorted((ROOT / app).rglob("*.py"))
        if not {"tests", "migrations"} & set(path.relative_to(ROOT).parts)
    ]


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def _hits(paths: list[Path], prefixes: tuple[str, ...], **how) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}: {name}"
        for path in paths
        for name in sorted(_imports(path, **how))
        if name.startswith(prefixes)
    ]


def test_policies_imports_nothing_of_simulations():
    assert _hits(_code("policies"), ("simulations",)) == []


@pytest.mark.parametrize("app", ["profiles", "simulations", "oo_ml"])
def test_no_app_imports_the_decision_api(app):
    assert _hits(_code(app), ("policies.apis",)) == []


def test_oo_ml_imports_no_app_but_in_its_urls():
    paths = [p for p in _code("oo_ml") if p.name != "urls.py"]
    assert _hits(paths, ("policies", "profiles", "simulations")) == []


@pytest.mark.parametrize("app", ["policies", "profiles", "simulations"])
def test_tasks_import_their_services_inside_the_function(app):
    tasks = ROOT / app / "tasks.py"
    assert _hits([tasks], (f"{app}.services",), top_level_only=True) == []
