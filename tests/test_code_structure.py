"""Structural rules of the package that a reviewer would otherwise have to re-check by hand.

- The core (maths, driver, backend contract) never imports from the layers built on it
  (backends, pipeline, evaluation): those plug into the core, not the other way round.
- The Hessian is factored in exactly one place (``core.gptq.factor_for``), so damping,
  act-order, the keep mask and the factor dtype cannot disagree between call sites.
"""
from __future__ import annotations

import ast
from pathlib import Path

import fairgptq

PACKAGE = Path(fairgptq.__file__).parent
UPWARD = ("fairgptq.backends", "fairgptq.pipeline", "fairgptq.evaluation")


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]
    return names


def test_the_import_walker_resolves_relative_imports():
    core_file = PACKAGE / "core" / "driver.py"
    assert "fairgptq.core.backend" in _imported_modules(core_file)


def test_core_imports_nothing_from_backends_pipeline_or_evaluation():
    bad = {}
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        up = sorted({m for m in _imported_modules(path) if m.startswith(UPWARD)})
        if up:
            bad[str(path.relative_to(PACKAGE))] = up
    assert not bad, f"core modules import upward: {bad}"


def test_factor_hessian_has_exactly_one_call_site():
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name == "factor_hessian":
                    calls.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("core/gptq.py"), calls
