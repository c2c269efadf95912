"""The files a schema source depends on: the project-local modules it imports,
transitively, and the ``schema_inputs`` globs.

Imports are read from the source files (``ast``), not executed: a module counts as
project-local when its file lies under the project root and outside any installed
package folder (``site-packages``, ``dist-packages``, the virtualenv). A package's
``__init__.py`` counts for each module imported from it (importing runs it).
"""

from __future__ import annotations

import ast
import glob
import hashlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["hash_files", "local_closure", "matching_files"]

_INSTALLED = ("site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox",
              "__pycache__", "node_modules")


def _is_local(path: Path, root: Path, prefix: Path | None = None) -> bool:
    """Whether ``path`` (resolved) lies under ``root`` (resolved) and outside installed
    packages and ``prefix`` (the interpreter's, resolved)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    if any(part in _INSTALLED for part in rel.parts):
        return False
    prefix = prefix or Path(sys.prefix).resolve()
    return prefix not in path.parents


def _search_path(root: Path) -> list[Path]:
    paths = [Path(p) for p in sys.path if p]
    return [root, *paths] if root not in paths else paths


def _module_files(name: str, search: Sequence[Path]) -> list[Path]:
    """The file of module ``name`` and the ``__init__.py`` of each package above it,
    from the first search folder that has the top-level package or module."""
    parts = name.split(".")
    for base in search:
        top = base / parts[0]
        if not (top.is_dir() or top.with_suffix(".py").is_file()):
            continue
        found = []
        folder = base
        for i, part in enumerate(parts):
            package = folder / part / "__init__.py"
            module = folder / f"{part}.py"
            if package.is_file():
                found.append(package)
                folder = folder / part
            elif module.is_file() and i == len(parts) - 1:
                found.append(module)
                break
            elif (folder / part).is_dir():  # a namespace package
                folder = folder / part
            else:
                break
        return found
    return []


def _imports(path: Path, package: str) -> set[str]:
    """Module names ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join(p for p in (*anchor, base) if p)
            if base:
                names.add(base)
            names.update(f"{base}.{a.name}" if base else a.name for a in node.names
                         if a.name != "*")
    return names


def _package_of(path: Path, search: Sequence[Path]) -> str:
    """The dotted package a file belongs to (for its relative imports)."""
    for base in search:
        try:
            rel = path.resolve().relative_to(base.resolve())
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            return ".".join(parts[:-1])
        return ".".join(parts[:-1])
    return ""


def local_closure(start: Iterable[Path], root: Path) -> list[Path]:
    """``start`` and every project-local module they import, transitively, sorted."""
    search = _search_path(root)
    root, prefix = root.resolve(), Path(sys.prefix).resolve()
    # Each imported name is looked up once, and an installed package's submodules not at
    # all: finding the same libraries again from every module cost ~1 s on a 300-module app.
    files_of: dict[str, list[Path]] = {}
    local_top: dict[str, bool] = {}

    def lookup(name: str) -> list[Path]:
        if name not in files_of:
            top = name.split(".", 1)[0]
            if top not in local_top:
                where = next((b / top for b in search if (b / top).is_dir()
                              or (b / f"{top}.py").is_file()), None)
                local_top[top] = where is not None and _is_local(where.resolve(), root, prefix)
            files_of[name] = [] if not local_top[top] else [
                f for f in (m.resolve() for m in _module_files(name, search))
                if _is_local(f, root, prefix)]
        return files_of[name]

    seen: set[Path] = set()
    todo = [p.resolve() for p in start if p.is_file()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix != ".py":
            continue
        for name in _imports(path, _package_of(path, search)):
            todo.extend(f for f in lookup(name) if f not in seen)
    return sorted(seen)


def matching_files(patterns: Sequence[str], root: Path) -> list[Path]:
    """The files matching ``patterns`` (globs, relative to ``root``; ``**`` recurses)."""
    found: set[Path] = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        found.update(Path(p).resolve() for p in glob.glob(full, recursive=True)
                     if Path(p).is_file())
    return sorted(found)


def hash_files(paths: Iterable[Path], root: Path) -> str:
    """One hash of the files' names (relative to ``root`` when under it) and contents."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            name = str(path.relative_to(root.resolve()))
        except ValueError:
            name = str(path)
        for chunk in (name.encode(), path.read_bytes()):
            digest.update(len(chunk).to_bytes(8, "big"))
            digest.update(chunk)
    return digest.hexdigest()
