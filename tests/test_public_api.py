"""dbtest's public surface: every lazy export is typed for type checkers, importable at
run time, and old names keep working with a DeprecationWarning (issue 17)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import dbtest

ROOT = Path(__file__).resolve().parent.parent


def _type_checking_names(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    names.update(a.asname or a.name for a in stmt.names)
    return names


def test_every_lazy_export_is_imported_for_type_checkers() -> None:
    # a name missing from the TYPE_CHECKING block is Any to mypy and IDEs
    exports = dbtest._EXPORTS
    typed = _type_checking_names(Path(dbtest.__file__))
    assert sorted(set(exports) - typed) == []
    assert sorted(typed - set(exports)) == []


@pytest.mark.parametrize("name", sorted(dbtest._EXPORTS))
def test_every_export_resolves_to_its_module(name: str) -> None:
    module = importlib.import_module(dbtest._EXPORTS[name])
    assert getattr(dbtest, name) is getattr(module, name)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'tabel_state'"):
        dbtest.tabel_state  # noqa: B018 - the attribute access is the test


@pytest.fixture(scope="module")
def revealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """mypy's reveal_type of a few exports, by expression."""
    exprs = ["dbtest.table_state", "dbtest.changes", "dbtest.assert_rows",
             "dbtest.track_changes", "dbtest.Scenario", "dbtest.ephemeral_postgres",
             "dbtest.bulk_insert", "dbtest.save_snapshot", "dbtest.FastFaker",
             "dbtest.state.DbtestSnapshotExtension", "dbtest.assertions.ChangeCounts"]
    folder = tmp_path_factory.mktemp("reveal")
    source = folder / "reveal.py"
    source.write_text("import dbtest\nimport dbtest.assertions\nimport dbtest.state\n"
                      + "".join(f"reveal_type({e})\n" for e in exprs))
    cache = Path(os.environ.get("DBTEST_CACHE_DIR", folder)) / "mypy-reveal"
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(cache),
         "--config-file", str(ROOT / "pyproject.toml"), str(source)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = {int(m[1]): m[2] for m in re.finditer(r":(\d+): note: Revealed type is \"(.*)\"",
                                                 run.stdout)}
    assert len(lines) == len(exprs), run.stdout + run.stderr
    return {e: lines[i + 4] for i, e in enumerate(exprs)}


@pytest.mark.parametrize("expr, expected", [
    ("dbtest.table_state", "TableState"),
    ("dbtest.changes", "Changes"),
    ("dbtest.assert_rows", "def"),
    ("dbtest.track_changes", "track_changes"),
    ("dbtest.Scenario", "Scenario"),
    ("dbtest.ephemeral_postgres", "PostgresServer"),
    ("dbtest.bulk_insert", "def"),
    ("dbtest.save_snapshot", "SnapshotInfo"),
    ("dbtest.FastFaker", "FastFaker"),
    ("dbtest.state.DbtestSnapshotExtension", "DbtestSnapshotExtension"),
    ("dbtest.assertions.ChangeCounts", "ChangeCounts"),
])
def test_exports_are_typed_for_mypy(revealed: dict[str, str], expr: str, expected: str) -> None:
    assert revealed[expr] != "Any"
    assert expected in revealed[expr]


def test_old_names_warn_and_still_work() -> None:
    import dbtest.assertions

    with pytest.warns(DeprecationWarning, match="ChangeSet is deprecated, use ChangeCounts"):
        old = dbtest.assertions.ChangeSet
    assert old is dbtest.assertions.ChangeCounts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name and a star import stay quiet
        namespace: dict[str, object] = {}
        exec("from dbtest.assertions import *", namespace)
        assert namespace["ChangeCounts"] is old
