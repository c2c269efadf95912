"""The lean core: ``pip install dbtest`` without extras runs database tests, and each
feature whose extra is missing says which extra to install (issue 15).

The core-only environment is a venv linking exactly the distributions ``pip install
dbtest`` brings, taken from this environment (see ``tests/_venvs.py``): no download.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests._venvs import closure, make_venv

CORE_PROJECT = '''
import importlib.util

import dbtest
from sqlalchemy import text


def test_db(db):
    assert db.execute(text("select 1")).scalar() == 1


def test_no_extra_installed():
    extras = ("faker", "factory", "syrupy", "pytest_asyncio", "asyncpg", "testcontainers")
    assert [m for m in extras if importlib.util.find_spec(m)] == []


async def test_async(async_db):
    pass


def test_faker(faker):
    pass


def test_fake():
    dbtest.Fake("email")


def test_snapshot_extension():
    from dbtest.state import DbtestSnapshotExtension  # noqa: F401
'''


def test_core_requirements_bring_no_extra() -> None:
    core = closure(["dbtest"])
    assert {"sqlalchemy", "alembic", "psycopg", "pytest", "filelock", "platformdirs"} <= core
    heavy = {"faker", "factory-boy", "syrupy", "pytest-asyncio", "asyncpg", "testcontainers"}
    assert core & heavy == set()


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("core") / "venv", ["dbtest"])


def test_core_only_runs_db_tests_and_names_missing_extras(core_python: Path,
                                                          tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.dbtest]\n")
    (tmp_path / "test_core.py").write_text(CORE_PROJECT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    result = subprocess.run([str(core_python), "-m", "pytest", "-p", "no:cacheprovider",
                             "-rfE", "-W", "error"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert "2 failed, 2 passed, 2 errors" in out, out + result.stderr
    parts = re.split(r"\n_{3,} (.+?) _{3,}\n", out.split("short test summary")[0])
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    errors = ("test_async", "test_faker")
    for test, extra in (("test_async", "async"), ("test_faker", "factories"),
                        ("test_fake", "factories"), ("test_snapshot_extension", "snapshots")):
        section = sections[f"ERROR at setup of {test}" if test in errors else test]
        assert f"pip install 'dbtest[{extra}]'" in section, section
        assert "MissingExtra" in section or "ConfigError" in section

