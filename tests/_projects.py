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
        asyncio_default_test_loop_scope = "session"
        pythonpath = ["."]
    '''))
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess (the plugin loads as in a user's run), no cache folder."""
    return p.runpytest_subprocess("-p", "no:cacheprovider", *args)
