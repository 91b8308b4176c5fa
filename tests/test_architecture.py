"""The shape of the package: no import cycles, no module shadowed by a function, fast CLI import."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import rdkit_ae

ROOT = Path(rdkit_ae.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every rdkit_ae module that ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            # `from pkg import name`: name may be a submodule or an attribute of pkg
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("rdkit_ae"):
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for p in ROOT.rglob("*.py") if "plugins" not in p.relative_to(ROOT).parts[:1]]
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    # a package's __init__ re-exports its modules; importing the package is not a dependency of those modules
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_import_graph_has_no_cycles():
    graph = _graph()
    assert "rdkit_ae.training" in graph and graph["rdkit_ae.cli"], "the graph was not built"
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_shadowed_by_an_attribute():
    for info in pkgutil.walk_packages(rdkit_ae.__path__, "rdkit_ae."):
        if info.name.startswith("rdkit_ae.plugins"):
            continue
        module = importlib.import_module(info.name)
        parent_name, _, leaf = info.name.rpartition(".")
        parent = importlib.import_module(parent_name)
        attr = getattr(parent, leaf, module)
        assert attr is module, f"{parent_name}.{leaf} is {attr!r}, not the module {info.name}"


def test_public_api_names_resolve():
    for name in rdkit_ae.__all__:
        assert getattr(rdkit_ae, name) is not None, name
    assert callable(rdkit_ae.train) and callable(rdkit_ae.evaluate)


def test_cli_import_stays_light():
    code = "import sys, rdkit_ae.cli; print(sorted(m for m in ('torch', 'compressai', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_size_limits_of_the_restructure():
    """No source file above 400 lines and no class above 200 (package, built-in plugins, benchmarks, examples)."""
    repo = ROOT.parent
    files = [p for d in ("rdkit_ae", "plugins", "benchmarks", "examples") for p in (repo / d).rglob("*.py")]
    assert len(files) > 50, "the files were not found"
    too_long = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(repo)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and (size := (node.end_lineno or 0) - node.lineno + 1) > 200:
                too_long.append(f"{path.relative_to(repo)}: class {node.name}, {size} lines")
    assert not too_long, "; ".join(too_long)
