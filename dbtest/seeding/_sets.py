"""Seed sets on disk: ``<seeds>/<name>.py`` or ``<seeds>/<name>.sql``, their declared
dependencies, the load order, and the fingerprint that names seeded templates.

A Python set declares ``requires = ["base"]`` (a literal list, read without importing the
file); a SQL set starts with a ``-- requires: base, other`` comment line. Files whose name
starts with ``_`` are helpers, not sets (their content still counts in fingerprints).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dbtest.errors import SeedError

__all__ = ["SeedSet", "available_sets", "read_set", "resolve_sets", "seed_fingerprint"]

#: bump when the way sets are loaded changes what a seeded template holds
SEED_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_SQL_REQUIRES = re.compile(r"^\s*--\s*requires\s*:(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class SeedSet:
    """One seed set file."""

    name: str
    path: Path
    kind: Literal["py", "sql"]
    requires: tuple[str, ...]
    text: str

    @property
    def where(self) -> str:
        """``seed set 'demo' (seeds/demo.py)`` for messages."""
        return f"seed set {self.name!r} ({_show(self.path)})"


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def available_sets(seeds_dir: Path) -> dict[str, Path]:
    """Every seed set in ``seeds_dir``: name -> file."""
    if not seeds_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(seeds_dir.iterdir()):
        if path.suffix not in (".py", ".sql") or path.name.startswith(("_", ".")):
            continue
        if path.stem in found:
            raise SeedError(f"seed set {path.stem!r} is defined twice: {_show(found[path.stem])} "
                            f"and {_show(path)}; rename or remove one")
        found[path.stem] = path
    return found


def _unknown(name: str, seeds_dir: Path, known: dict[str, Path], by: str = "") -> SeedError:
    listing = ", ".join(sorted(known)) or "none"
    if not seeds_dir.is_dir():
        return SeedError(f"unknown seed set {name!r}{by}: the seeds folder {_show(seeds_dir)} "
                         f"does not exist. Create it or set 'seeds' in [tool.dbtest].")
    return SeedError(f"unknown seed set {name!r}{by}; known sets in {_show(seeds_dir)}: "
                     f"{listing}. Add {_show(seeds_dir / name)}.py or .sql, or fix the name.")


def read_set(name: str, seeds_dir: Path, known: dict[str, Path] | None = None) -> SeedSet:
    """Read the set ``name`` (its file and its ``requires``)."""
    if known is None:
        known = available_sets(seeds_dir)
    if not _NAME.match(name or ""):
        raise SeedError(f"invalid seed set name {name!r}: use letters, digits, '_' and '-' "
                        f"(the file name without .py/.sql)")
    path = known.get(name)
    if path is None:
        raise _unknown(name, seeds_dir, known)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"seed set {name!r}: cannot read {_show(path)}: {exc}") from None
    if path.suffix == ".sql":
        return SeedSet(name, path, "sql", _sql_requires(text, path), text)
    return SeedSet(name, path, "py", _py_requires(text, path), text)


def _split(names: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in names.replace(";", ",").split(",") if n.strip())


def _sql_requires(text: str, path: Path) -> tuple[str, ...]:
    requires: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("--"):
            break  # only the leading comment block declares dependencies
        match = _SQL_REQUIRES.match(line)
        if match:
            requires.extend(_split(match.group(1)))
    return tuple(requires)


def _py_requires(text: str, path: Path) -> tuple[str, ...]:
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise SeedError(f"seed file {_show(path)}, line {exc.lineno}: syntax error: {exc.msg}. "
                        f"Fix the file.") from None
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if not any(isinstance(t, ast.Name) and t.id == "requires" for t in targets):
            continue
        try:
            names = ast.literal_eval(value)
        except ValueError:
            names = None
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise SeedError(f"seed file {_show(path)}, line {node.lineno}: 'requires' must be a "
                            f"literal list of seed set names, e.g. requires = [\"base\"]")
        return tuple(names)
    return ()


def resolve_sets(names: Sequence[str], seeds_dir: Path) -> list[SeedSet]:
    """The sets ``names`` and everything they require, dependencies first, each once."""
    if isinstance(names, str):
        names = [names]
    known = available_sets(seeds_dir)
    ordered: dict[str, SeedSet] = {}
    loaded: dict[str, SeedSet] = {}

    def visit(name: str, chain: list[str], by: str) -> None:
        if name in ordered:
            return
        if name in chain:
            cycle = " -> ".join([*chain[chain.index(name):], name])
            raise SeedError(f"seed sets form a dependency cycle: {cycle}. Remove one of the "
                            f"'requires' entries.")
        if name not in loaded:
            if name not in known and _NAME.match(name or ""):
                raise _unknown(name, seeds_dir, known, by)
            loaded[name] = read_set(name, seeds_dir, known)
        current = loaded[name]
        for dep in current.requires:
            visit(dep, [*chain, name], f" (required by {current.where})")
        ordered[name] = current

    for name in names:
        visit(name, [], "")
    return list(ordered.values())


def seed_fingerprint(names: Sequence[str], seeds_dir: Path, seed: int) -> str:
    """A hash of the sets ``names``, the sets they require (file contents), the helper
    files beside them, the seed number and the generators' versions.

    Used in template names: change any of these and a new template is built.
    """
    from dbtest.fakes import FAKES_VERSION

    digest = hashlib.sha256(f"format={SEED_FORMAT};fakes={FAKES_VERSION};seed={seed}".encode())
    for item in resolve_sets(names, seeds_dir):
        digest.update(f"\n{item.name}:{item.kind}\n".encode())
        digest.update(item.text.encode())
    for helper in sorted(seeds_dir.glob("_*.py")):
        digest.update(f"\nhelper:{helper.name}\n".encode())
        digest.update(helper.read_bytes())
    return digest.hexdigest()[:16]
