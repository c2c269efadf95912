"""pytest plugin for the real-application runs: after each test (its fixtures torn down),
count the rows a new connection sees in every user table and compare with the state the
suite started from. Load it with ``-p probe`` (this folder on ``PYTHONPATH``).

- ``PROBE_URL`` set (the app's own fixtures): the database at that URL; the reference
  state is read at session start.
- otherwise (dbtest): this process's worker database; the reference is its template.

Writes ``{"tests": n, "leaked_rows": total, "tests_leaving_rows": k}`` to ``PROBE_OUT``
(JSON): ``leaked_rows`` sums, over tests, the per-table differences between what a new
connection sees after the test and the reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

_COUNTS = """
SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
  AND table_name <> 'alembic_version'
"""


def _counts(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = [r[0] for r in conn.execute(text(_COUNTS))]
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
                for t in tables
            }
    finally:
        engine.dispose()


class _Probe:
    def __init__(self) -> None:
        self.reference: dict[str, int] | None = None
        self.tests = 0
        self.leaked = 0
        self.leaving = 0

    def urls(self, config: pytest.Config) -> tuple[str, str] | None:
        """(database to probe, database holding the reference state)."""
        if os.environ.get("PROBE_URL"):
            return os.environ["PROBE_URL"], os.environ["PROBE_URL"]
        from dbtest.plugin import WORKSPACE_KEY

        state = config.stash.get(WORKSPACE_KEY, None)
        ws = state.workspace if state is not None else None
        if ws is None or not ws.started or not ws._workers:
            return None
        key, worker = next(iter(ws._workers.items()))
        return worker.url, ws.server.url_for(ws.templates.get(key).name, "psycopg")


_PROBE = _Probe()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("PROBE_URL"):
        _PROBE.reference = _counts(os.environ["PROBE_URL"])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> Iterator[None]:
    result = yield
    urls = _PROBE.urls(item.config)
    if urls is None:
        return result
    if _PROBE.reference is None:
        _PROBE.reference = _counts(urls[1])
    after = _counts(urls[0])
    diff = sum(
        abs(after.get(t, 0) - _PROBE.reference.get(t, 0))
        for t in set(after) | set(_PROBE.reference)
    )
    _PROBE.tests += 1
    _PROBE.leaked += diff
    _PROBE.leaving += diff > 0
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("PROBE_OUT")
    if out:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        path = f"{out}.{worker}" if worker else out
        with open(path, "w") as fh:
            json.dump(
                {
                    "tests": _PROBE.tests,
                    "leaked_rows": _PROBE.leaked,
                    "tests_leaving_rows": _PROBE.leaving,
                },
                fh,
            )
