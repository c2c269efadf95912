"""The generated project of ``bench_isolation.py``: a 10-table model with foreign keys,
the same test body for every fixture, and pytest-postgresql's / pytest-sqla's versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS = '''"""10 tables, each with a foreign key to the one before (t1 -> t0 ... t9 -> t8)."""
from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, mapped_column


class Base(DeclarativeBase):
    pass


TABLES = []
for _i in range(10):
    _cols = {"__tablename__": f"t{_i}", "id": mapped_column(Integer, primary_key=True),
             "name": mapped_column(String(100), nullable=False)}
    if _i:
        _cols["parent_id"] = mapped_column(ForeignKey(f"t{_i - 1}.id", ondelete="CASCADE"),
                                           index=True)
    TABLES.append(type(f"T{_i}", (Base,), _cols))
T0 = TABLES[0]
'''
PYPROJECT = """[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
pythonpath = ["."]

[tool.dbtest]
schema = "{schema}"
"""
# the no-isolation baseline runs on a database of its own made with create_all: no leak
# triggers (dbtest installs them in its worker databases only), so their cost is not in it
CONFTEST = """import os

import pytest
import pytest_asyncio
from sqlalchemy import create_engine


@pytest.fixture(scope="session")
def plain_engine(dbtest_server):
    from models import Base

    name = dbtest_server.create_database(f"bench_plain_{os.getpid()}")
    engine = create_engine(dbtest_server.url_for(name))
    Base.metadata.create_all(engine)
    with engine.connect() as conn:  # proof: no trigger of any kind in this database
        assert conn.exec_driver_sql("select count(*) from pg_trigger "
                                    "where not tgisinternal").scalar() == 0
        assert conn.exec_driver_sql("select count(*) from pg_event_trigger").scalar() == 0
    yield engine
    engine.dispose()


@pytest_asyncio.fixture(scope="session")
async def plain_async_engine(plain_engine):
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(plain_engine.url.set(drivername="postgresql+asyncpg"))
    yield engine
    await engine.dispose()
"""
_HEAD = ("{imports}import pytest\nfrom sqlalchemy import func, select\n\nfrom models import T0"
         "\n\nCOUNT = select(func.count()).select_from(T0)\n\n\n"
         "@pytest.mark.parametrize('i', range({n}))\n")
_BODIES = {  # file -> (extra imports, test function)
    "test_bare.py": ("", "def test_bare(i):\n    assert i >= 0\n"),
    "test_bare_async.py": ("", "async def test_bare(i):\n    assert i >= 0\n"),
    "test_db.py": ("", "def test_insert(db, i):\n    db.add(T0(name=f'row {i}'))\n"
                   "    db.commit()\n    assert db.scalar(COUNT) == 1\n"),
    "test_async_db.py": ("", "async def test_insert(async_db, i):\n"
                         "    async_db.add(T0(name=f'row {i}'))\n    await async_db.commit()\n"
                         "    assert await async_db.scalar(COUNT) == 1\n"),
    "test_noiso.py": ("from sqlalchemy.orm import Session\n",
                      "def test_insert(plain_engine, i):\n    with Session(plain_engine) as s:\n"
                      "        s.add(T0(name=f'row {i}'))\n        s.commit()\n"
                      "        assert s.scalar(COUNT) >= 1\n"),
    "test_fresh.py": ("from sqlalchemy.orm import Session\n",
                      "def test_insert(fresh_db, i):\n    with Session(fresh_db.engine) as s:\n"
                      "        s.add(T0(name=f'row {i}'))\n        s.commit()\n"
                      "        assert s.scalar(COUNT) == 1\n"),
    "test_noiso_async.py": ("from sqlalchemy.ext.asyncio import AsyncSession\n",
                            "async def test_insert(plain_async_engine, i):\n"
                            "    async with AsyncSession(plain_async_engine) as s:\n"
                            "        s.add(T0(name=f'row {i}'))\n        await s.commit()\n"
                            "        assert await s.scalar(COUNT) >= 1\n"),
}
WARM_TEST = ("from sqlalchemy import text\n\n\ndef test_sync(db):\n"
             "    assert db.scalar(text('select 1')) == 1\n")
SQLA_TEST = """import pytest
from sqlalchemy import func, select

from models import T0

COUNT = select(func.count()).select_from(T0)


@pytest.mark.parametrize("i", range({n}))
def test_insert(sqla_session, i):
    sqla_session.add(T0(name=f"row {{i}}"))
    sqla_session.commit()
    assert sqla_session.scalar(COUNT) == 1
"""
PEER_PYPROJECT = """[tool.pytest.ini_options]
pythonpath = ["."]
sqla_metadata = "models:Base"
"""
PP_TEST = """import pytest


@pytest.mark.parametrize("i", range({n}))
def test_insert(postgresql, i):
    with postgresql.cursor() as cur:
        cur.execute("insert into t0 (name) values (%s)", (f"row {{i}}",))
        postgresql.commit()
        cur.execute("select count(*) from t0")
        assert cur.fetchone() == (1,)
"""


def test_source(name: str, n: int) -> str:
    imports, body = _BODIES[name]
    return _HEAD.format(imports=imports, n=n) + body


def write_project(proj: Path, schema: str, files: dict[str, str]) -> None:
    proj.mkdir()
    (proj / "pyproject.toml").write_text(PYPROJECT.format(schema=schema))
    for name, text in files.items():
        (proj / name).write_text(text)


def schema_sql(models: Any) -> str:
    """The models' DDL as plain SQL, for pytest-postgresql's template."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = postgresql.dialect()
    ddl = []
    for table in models.Base.metadata.sorted_tables:
        ddl.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        ddl += [str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes]
    return ";\n".join(ddl) + ";\n"


