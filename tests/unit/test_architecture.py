"""The layering rule, read from the source: imports between Aegis packages only go one way.

    deployments ──► serve_app ──► security ──► common
         │              │                        ▲
         └──────────────┴──► training ───────────┘ (training: common only)

research/ and benchmarks/ may import anything; nothing shipped imports them. Every import
counts, also one inside a function: a lazy import is still an edge a reader must follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("common", "security", "serve_app", "deployments", "training")
NOT_SHIPPED = ("research", "benchmarks", "tests")

# package -> top-level modules it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "common": {"security", "serve_app", "deployments", "training", "ray", *NOT_SHIPPED},
    "security": {"serve_app", "deployments", "training", "ray", *NOT_SHIPPED},
    "serve_app": {"deployments", "training", *NOT_SHIPPED},
    "training": {"serve_app", "deployments", "security", *NOT_SHIPPED},
    "deployments": {"training", *NOT_SHIPPED},
}
# Finer rules: serve_app is plain Python; Ray Serve (deployments, handles) stays in deployments/.
FORBIDDEN_PREFIXES = {"serve_app": ("ray.serve",)}
MAX_MODULE_LINES = 500


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    """Dotted names of every module `path` imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def forbidden_edges(package: str) -> list[str]:
    edges = []
    for path in _modules(package):
        for name in sorted(imported_names(path)):
            top = name.split(".")[0]
            prefixes = FORBIDDEN_PREFIXES.get(package, ())
            if top in FORBIDDEN[package] or name.startswith(prefixes):
                edges.append(f"{path.relative_to(ROOT)} imports {name}")
    return edges


@pytest.mark.parametrize("package", RUNTIME)
def test_imports_go_one_way(package):
    assert forbidden_edges(package) == []


def test_the_checker_sees_lazy_and_nested_imports(tmp_path):
    # A test that cannot fail is worse than none: the checker must catch an import hidden in a function.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from deployments.app import build_app\n    import ray.serve\n")
    assert imported_names(module) == {"deployments.app", "ray.serve"}


@pytest.mark.parametrize("package", RUNTIME)
def test_runtime_modules_stay_small(package):
    long = {str(p.relative_to(ROOT)): n for p in _modules(package)
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
