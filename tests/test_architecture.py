"""The package's shape: layers import only downward, no module imports itself back through others (function-level
imports count), no module grows past 700 lines, xlwings stays in xlcf.excel, and the torch-free layers stay
torch-free when imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xlcf"
MAX_LINES = 700

# Lower rank = lower layer. A module may import its own rank or below.
RANKS = {
    "xlcf": 0,
    "xlcf.errors": 0,
    "xlcf.fileio": 0,
    "xlcf.catalog": 0,
    "xlcf.data": 1,
    "xlcf.models": 2,
    "xlcf.train": 3,
    "xlcf.ooxml": 4,
    "xlcf.formula": 4,
    "xlcf.lessons": 5,
    "xlcf.actions": 6,
    "xlcf.excel": 7,
    "xlcf.udfs": 7,
    "xlcf.server": 7,
    "xlcf.bench": 7,
    "xlcf.cli": 8,
    "xlcf.__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines under ``if TYPE_CHECKING:`` (never executed: not an import at run time)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every xlcf module ``name`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("xlcf") and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _rank(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        rank = RANKS.get(".".join(parts[:i]))
        if rank is not None:
            return rank
    raise AssertionError(f"{module} belongs to no layer; add its package to RANKS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_function_level_imports():
    graph = _graph()
    assert "xlcf.train.trainer" in graph["xlcf.actions.fit"] or "xlcf.train" in graph["xlcf.actions.fit"]
    assert "xlcf.actions.fit" in graph["xlcf.cli.fit_cmd"]  # imported inside run()


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_downward():
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _rank(target) > _rank(module)
    ]
    assert upward == []


def test_no_module_over_700_lines():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_xlwings_is_imported_only_in_xlcf_excel():
    importers = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "xlwings" or n.startswith("xlwings.") for n in names) and not name.startswith("xlcf.excel"):
                importers.append(name)
    assert importers == []


TORCH_FREE = (
    "xlcf.catalog",
    "xlcf.data",
    "xlcf.ooxml",
    "xlcf.lessons",
    "xlcf.lessons.collab",
    "xlcf.lessons.graddesc",
    "xlcf.lessons.movielens.build",
    "xlcf.actions",
    "xlcf.actions.fit",
    "xlcf.actions.train_book",
    "xlcf.train",
    "xlcf.train.config",
    "xlcf.train.result",
    "xlcf.cli",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_does_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", f"importing {module} loads torch"
