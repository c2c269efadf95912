"""Sequences back where the template left them, before each savepoint test.

A rollback undoes a test's rows but not its ``nextval()`` calls: sequences are not
transactional, so the second test to insert into a table gets id 2. Tests written against
a database recreated for each test often assert ``id == 1``. With ``reset_sequences``,
each savepoint test starts with one statement that ``setval()``s every sequence of the
worker database to its state in the template, read once when the worker database is cloned
(so seeded rows keep their ids and the next id follows them). ``setval`` is not rolled
back either: it holds for the test that follows, which is the point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["restore_statement"]

_STATE = """
SELECT format('%%I.%%I', schemaname, sequencename), coalesce(last_value, start_value),
       last_value IS NOT NULL
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema', %(internal)s)
ORDER BY 1
"""


def restore_statement(engine: Engine, internal_schema: str) -> str | None:
    """One ``SELECT setval(...), ...`` putting every sequence of ``engine``'s database back
    in its current state (``None`` when there is none). Read right after the clone, that is
    the template's state."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(_STATE, {"internal": internal_schema}).fetchall()
    if not rows:
        return None
    calls = ", ".join(f"setval({_literal(name)}, {int(value)}, {'true' if called else 'false'})"
                      for name, value, called in rows)
    return f"SELECT {calls}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
