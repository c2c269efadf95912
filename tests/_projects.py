"""What several test modules write into their pytester projects: an app with one table, a
pyproject that points dbtest at it, and a run in a subprocess."""

from __future__ import annotations

import textwrap

import pytest

#: the app's models: one table, ``items``
ITEM_MODELS = '''
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
'''


def _test_loop_scope_line() -> str:
    """``asyncio_default_test_loop_scope`` where the installed pytest-asyncio knows it (from
    0.26; with 0.24, the floor, it would be an "unknown config option" warning)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("pytest-asyncio")
    except importlib.metadata.PackageNotFoundError:
        return ""
    major_minor = tuple(int(p) for p in version.split(".")[:2])
    return 'asyncio_default_test_loop_scope = "session"' if major_minor >= (0, 26) else ""


def metadata_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project whose schema is ``ITEM_MODELS``' metadata, async tests in auto mode on the
    session loop."""
    pytester.makepyfile(app_models=ITEM_MODELS)
    pytester.makefile(".toml", pyproject=textwrap.dedent('''
        [tool.dbtest]
        schema = "metadata:app_models:Base"
        [tool.pytest.ini_options]
        asyncio_mode = "auto"
        asyncio_default_fixture_loop_scope = "session"
        {test_loop_scope}
        pythonpath = ["."]
    ''').format(test_loop_scope=_test_loop_scope_line()))
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess (the plugin loads as in a user's run), no cache folder."""
    return p.runpytest_subprocess("-p", "no:cacheprovider", *args)
