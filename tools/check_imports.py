"""Import-graph check for the ``dbtest`` package (issue 17, point 4).

Fails on:

* module-level import cycles between dbtest modules. An import inside a function runs
  only when called and one under ``if TYPE_CHECKING:`` never runs, so neither counts;
* cross-module use of a private name: a ``_name`` defined in one module and imported
  from it (``from m import _name``) or read from it (``m._name``, ``m.Class._name`` as
  ``Class._name``) in another;
* a private module (``pkg/_mod.py``) imported from outside its package ``pkg``,
  except by the wiring modules listed in ``WIRING`` (each with its reason).

Run ``python tools/check_imports.py`` (exit 1 and one line per finding when the graph
is not clean); ``tests/test_architecture.py`` runs it as part of the suite, which is
what CI runs.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dbtest"

# Modules that may import private modules of packages they do not belong to: the
# lead's wiring, which plugs the parts together. importer -> reason.
WIRING: dict[str, str] = {}

# Findings that other engineers are removing on their branches this session (issue 17).
# Each entry is the exact finding line; the lead deletes entries as those branches
# merge, and the check fails on a stale entry so the list cannot outlive its reason.
ALLOWED: frozenset[str] = frozenset({
})


@dataclass(frozen=True)
class Finding:
    """One problem: where (file:line) and what (the text ``ALLOWED`` entries match)."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class _Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    # module-level (runtime) imports: target module names
    runtime_imports: set[str] = field(default_factory=set)


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def load_modules(root: Path = ROOT) -> dict[str, _Module]:
    """Parse every module of the package under *root*."""
    modules: dict[str, _Module] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name, is_package = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[name] = _Module(name, path, is_package, tree)
    return modules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: _Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported (not in functions, not TYPE_CHECKING)."""
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            yield stmt
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _module_level_imports(stmt.body)
            yield from _module_level_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody):
                yield from _module_level_imports(block)
            for handler in stmt.handlers:
                yield from _module_level_imports(handler.body)
        elif isinstance(stmt, ast.With | ast.ClassDef):  # class bodies run at import too
            yield from _module_level_imports(stmt.body)


def _owner_package(private_module: str) -> str:
    return private_module.rsplit(".", 1)[0]


def _private_module_of(target: str) -> str | None:
    """The innermost private module on *target*'s path (``a._b.c`` -> ``a._b``)."""
    parts = target.split(".")
    found = None
    for i in range(1, len(parts)):
        if _is_private(parts[i]):
            found = ".".join(parts[: i + 1])
    return found


class _Checker:
    def __init__(self, modules: dict[str, _Module], root: Path) -> None:
        self.modules = modules
        self.root = root
        self.findings: list[Finding] = []

    def _where(self, module: _Module, node: ast.AST) -> str:
        return f"{module.path.relative_to(self.root)}:{getattr(node, 'lineno', 0)}"

    def _check_module_access(self, module: _Module, node: ast.AST, target: str) -> None:
        private = _private_module_of(target)
        if private is None or private not in self.modules:
            return
        owner = _owner_package(private)
        inside = module.name == owner or module.name.startswith(owner + ".")
        if not inside and module.name not in WIRING:
            self.findings.append(Finding(
                self._where(module, node),
                f"{module.name} imports {private}, private to {owner}",
            ))

    def _private_name(self, module: _Module, node: ast.AST, source: str, name: str) -> None:
        if source != module.name:
            self.findings.append(Finding(
                self._where(module, node), f"{module.name} uses {name}, private to {source}"
            ))

    def check(self) -> list[Finding]:
        for module in self.modules.values():
            self._check_one(module)
            for stmt in _module_level_imports(module.tree.body):
                module.runtime_imports.update(self._targets(module, stmt))
        self._check_cycles()
        return self.findings

    def _targets(self, module: _Module, stmt: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(stmt, ast.Import):
            return {a.name for a in stmt.names if a.name in self.modules}
        base = _resolve(module, stmt)
        targets = set()
        for alias in stmt.names:
            sub = f"{base}.{alias.name}"
            if sub in self.modules:
                targets.add(sub)
            elif base in self.modules:
                targets.add(base)
        return targets

    def _check_one(self, module: _Module) -> None:
        # local names bound to dbtest modules, so ``alias._name`` can be traced, and to
        # public names imported from them (classes), so ``Class._attr`` can be
        bound: dict[str, str] = {}
        imported: dict[str, str] = {}
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != PACKAGE:
                        continue
                    self._check_module_access(module, node, alias.name)
                    if alias.asname and alias.name in self.modules:
                        bound[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                if base.split(".")[0] != PACKAGE:
                    continue
                self._check_module_access(module, node, base)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in self.modules:
                        self._check_module_access(module, node, sub)
                        bound[alias.asname or alias.name] = sub
                    elif _is_private(alias.name):
                        self._private_name(module, node, base, alias.name)
                    else:
                        imported[alias.asname or alias.name] = base
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and _is_private(node.attr)
                and f"{bound[node.value.id]}.{node.attr}" not in self.modules
            ):
                self._private_name(module, node, bound[node.value.id], node.attr)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and _is_private(node.attr)
            ):
                self._private_name(module, node, imported[node.value.id],
                                   f"{node.value.id}.{node.attr}")

    def _check_cycles(self) -> None:
        for component in _strongly_connected(self.modules):
            cycle = " -> ".join(sorted(component))
            self.findings.append(Finding(PACKAGE, f"import cycle at module level: {cycle}"))


def _strongly_connected(modules: dict[str, _Module]) -> list[list[str]]:
    """Tarjan's algorithm; components of two or more modules, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(modules[v].runtime_imports):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in modules[v].runtime_imports:
                result.append(component)

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return result


def findings(root: Path = ROOT, allowed: frozenset[str] = ALLOWED) -> list[Finding]:
    """Every finding, minus the *allowed* ones; a stale allowance is a finding too."""
    found = _Checker(load_modules(root), root).check()
    stale = sorted(allowed - {f.what for f in found})
    return [f for f in found if f.what not in allowed] + [
        Finding("tools/check_imports.py", f"stale ALLOWED entry, remove it: {s}") for s in stale
    ]


def main() -> int:
    """Print the findings; exit status 1 if there are any."""
    problems = findings()
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} import-graph finding(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
