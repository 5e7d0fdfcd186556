"""Structural rules of the package that a reviewer would otherwise have to re-check by hand.

- The core (maths, driver, backend and objective contracts) imports nothing outside
  ``fairgptq/core``: plugins, the registry, the pipeline and evaluation plug into it, not the
  other way round.
- No import cycle among fairgptq's modules, nor among its packages (``fairgptq.pipeline`` as one
  node, ``fairgptq.cli`` as another), counting imports inside functions (the lazy ones) and those
  under ``if TYPE_CHECKING``: a circle a type checker follows is a circle a reader follows.
- A plugin imports the contract: every built-in plugin module (objectives, backends, pair
  sources, the architectures plugin), the example plugins and the outside test objective import
  nothing of fairgptq but ``fairgptq.contract``, ``fairgptq.core`` and (built-ins) their own package,
  so the built-ins are provably plugins like any other.
- The Hessian is factored in exactly one place (``core.gptq.factor_for``), so damping,
  act-order, the keep mask and the factor dtype cannot disagree between call sites.
"""
from __future__ import annotations

import ast
from pathlib import Path

import fairgptq

PACKAGE = Path(fairgptq.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth,
    those under ``if TYPE_CHECKING:`` included."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
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


def test_core_imports_nothing_outside_core():
    bad = {}
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        up = sorted({m for m in _imported_modules(path)
                     if m.split(".")[0] == "fairgptq" and not (m + ".").startswith("fairgptq.core.")})
        if up:
            bad[str(path.relative_to(PACKAGE))] = up
    assert not bad, f"core modules import outside fairgptq/core: {bad}"


REPO = PACKAGE.parent
#: package folders whose every module is a built-in plugin, and single-file built-in plugins
PLUGIN_PACKAGES = ("objectives", "backends", "datasets_adapters")
PLUGIN_MODULES = ("architectures_plugin.py",)
OUTSIDE_PLUGINS = sorted((REPO / "examples" / "plugins").glob("*.py")) + [REPO / "tests" / "outside_objective.py"]


def _outside_contract(names: list[str], own: str | None) -> list[str]:
    """The fairgptq modules among ``names`` that are neither the contract, the core nor ``own``."""
    ok = ("fairgptq.contract", "fairgptq.core") + ((own,) if own else ())
    mods = {m for m in names if m.split(".")[0] == "fairgptq" and m != "fairgptq"}
    return sorted(m for m in mods if not any(m == o or m.startswith(o + ".") for o in ok))


def _outside_imports(path: Path) -> list[str]:
    """Absolute fairgptq names a file outside the package imports."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_built_in_plugins_import_only_the_contract_and_the_core():
    bad = {}
    files = [(p, f"fairgptq.{pkg}") for pkg in PLUGIN_PACKAGES for p in sorted((PACKAGE / pkg).glob("*.py"))]
    files += [(PACKAGE / m, None) for m in PLUGIN_MODULES]
    for path, own in files:
        names = _imported_modules(path)
        # a name imported from the contract's face is the contract's, not a module of its own
        names = [n for n in names if not n.startswith("fairgptq.contract.")] + [n for n in names if n == "fairgptq.contract"]
        wrong = _outside_contract(names, own)
        if wrong:
            bad[str(path.relative_to(PACKAGE))] = wrong
    assert not bad, f"built-in plugins import past the contract: {bad}"


def test_outside_plugins_import_only_the_contract_and_the_core():
    bad = {}
    for path in OUTSIDE_PLUGINS:
        names = [n for n in _outside_imports(path) if not n.startswith("fairgptq.contract.")]
        wrong = _outside_contract(names, None)
        if wrong:
            bad[path.name] = wrong
    assert not bad, f"outside plugins import past fairgptq.contract: {bad}"


def test_the_contract_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("from fairgptq.contract import hookimpl\nfrom fairgptq.pipeline.build import build_pairs\n")
    names = [n for n in _outside_imports(bad) if not n.startswith("fairgptq.contract.")]
    assert _outside_contract(names, None) == ["fairgptq.pipeline.build", "fairgptq.pipeline.build.build_pairs"]


def _import_graph() -> dict[str, set[str]]:
    """Module -> the fairgptq modules it imports; a module's own parent packages are left out (Python
    initialises them before the module, whatever it imports, so they add no order of their own)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imported_modules(path) if m in modules and m != name and not name.startswith(m + ".")}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_fairgptq_modules():
    graph = _import_graph()
    assert "fairgptq.pipeline.runner" in graph["fairgptq.cli"]  # the walker sees function-level imports
    assert _cycles(graph) == []


def _package_of(module: str) -> str:
    """``fairgptq.pipeline.build`` -> ``fairgptq.pipeline``; a top-level module is its own node."""
    return ".".join(module.split(".")[:2])


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, imported in _import_graph().items():
        node = _package_of(name)
        graph.setdefault(node, set()).update(p for p in map(_package_of, imported) if p != node and p != "fairgptq")
    return {n: {m for m in e if m in graph} for n, e in graph.items()}


def test_no_import_cycle_among_fairgptq_packages():
    graph = _package_graph()
    assert "fairgptq.contract" in graph["fairgptq.objectives"]  # packages are nodes
    assert _cycles(graph) == []


def test_the_import_walker_sees_type_checking_imports():
    assert "fairgptq.registry" in _imported_modules(PACKAGE / "evaluation" / "task_registry.py")


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


def test_the_code_map_lists_every_module():
    listed = (PACKAGE.parent / "docs" / "code_map.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(PACKAGE.parent)) for p in sorted(PACKAGE.rglob("*.py"))
               if f"`{p.relative_to(PACKAGE.parent).as_posix()}`" not in listed]
    assert not missing, f"docs/code_map.md lists no line for {missing}; add one line each"

