"""Examples of docs/concepts/provisioning.md, run by tests/test_docs.py."""

from __future__ import annotations


def test_ephemeral_postgres() -> None:
    # --8<-- [start:python]
    import psycopg

    import dbtest

    with dbtest.ephemeral_postgres() as server:          # backend="auto"
        with psycopg.connect(server.dsn) as conn:         # .dsn is a libpq conninfo string
            print(conn.execute("select version()").fetchone())
        server.create_database("scratch")                 # marked as dbtest's
        print(server.url_for("scratch"))                  # SQLAlchemy URL (psycopg)
        print(server.url_for("scratch", "asyncpg"))       # the same for asyncpg
        server.drop_database("scratch")
    # --8<-- [end:python]
