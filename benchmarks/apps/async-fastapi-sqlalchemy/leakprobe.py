"""A pytest plugin that counts the rows a new connection sees after each test.

Load it with ``-p leakprobe`` (its folder on ``PYTHONPATH``). ``LEAKPROBE_URL`` names the
server (a libpq or SQLAlchemy URL of any database on it); after each test, teardown included,
the probe opens a new connection to every non-template database on that server except
``postgres`` and counts the rows of every table outside the system schemas (``alembic_version``
aside). Rows seen there were committed by a test and are visible to the next one: leaked.
Under xdist each worker counts after its own tests (so a row another worker committed is
counted by both) and the controller sums the workers' counts.
``LEAKPROBE_OUT`` (optional) receives the per-test counts as JSON; the terminal summary gives
the totals.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Generator
from typing import Any

import psycopg
import pytest
from psycopg import sql

_COUNTS: dict[str, dict[str, int]] = {}
_SKIP_TABLES = {"alembic_version"}


def _server_url() -> str | None:
    url = os.environ.get("LEAKPROBE_URL")
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url) if url else None


def _rows_per_table(url: str) -> dict[str, int]:
    """``{"database.schema.table": rows}`` for every table holding rows, server-wide."""
    found: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "select datname from pg_database where not datistemplate and datallowconn "
            "and datname <> 'postgres' order by datname")]
    for name in names:
        try:
            db = psycopg.connect(url, dbname=name, autocommit=True)
        except psycopg.OperationalError:  # dropped (or being built) meanwhile
            continue
        with db:
            tables = db.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_type = 'BASE TABLE' and table_schema not in "
                "('pg_catalog', 'information_schema')").fetchall()
            for schema, table in tables:
                if table in _SKIP_TABLES:
                    continue
                query = sql.SQL("select count(*) from {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table))
                try:
                    (count,) = db.execute(query).fetchone() or (0,)
                except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                    # another run's test dropped it meanwhile (the probe sees every
                    # database on the server, the others' mid-test ones too)
                    continue
                except psycopg.OperationalError:
                    break  # the database was dropped WITH (FORCE) while we counted
                if count:
                    found[f"{name}.{schema}.{table}"] = int(count)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, Any, None]:
    """After the test and its teardown: count what a new connection sees."""
    yield
    url = _server_url()
    if url:
        _COUNTS[item.nodeid] = _rows_per_table(url)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its counts to the controller through ``LEAKPROBE_OUT.<id>``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    out = os.environ.get("LEAKPROBE_OUT")
    if worker and out:
        with open(f"{out}.{worker}", "w") as f:
            json.dump(_COUNTS, f)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line of totals; the per-test counts go to ``LEAKPROBE_OUT``."""
    out = os.environ.get("LEAKPROBE_OUT")
    if out and not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller: merge workers'
        for part in sorted(glob.glob(f"{glob.escape(out)}.gw*")):
            with open(part) as f:
                _COUNTS.update(json.load(f))
    total = sum(sum(c.values()) for c in _COUNTS.values())
    dirty = sum(1 for c in _COUNTS.values() if c)
    terminalreporter.write_line(
        f"leakprobe: {total} rows visible after {dirty} of {len(_COUNTS)} tests")
    if out:
        with open(out, "w") as f:
            json.dump({"rows_after_tests": total, "tests_with_rows": dirty,
                       "tests": len(_COUNTS), "per_test": _COUNTS}, f, indent=1)
