"""Running SQL scripts verbatim through a SQLAlchemy connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["run_script"]


def run_script(connection: Connection, script: str) -> None:
    """Execute ``script`` (possibly many statements) exactly as written.

    ``exec_driver_sql`` would hand psycopg an empty parameter list, which makes it read
    every ``%`` (``LIKE 'a%'``) as a placeholder; the DBAPI cursor with no parameters
    sends the text untouched.
    """
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(script)
    finally:
        cursor.close()
