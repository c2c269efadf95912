"""The app's own init: in-process side effects (configure) and the schema (init_database)."""

# --8<-- [start:init]
from sqlalchemy import Connection

from dbtest import BuildContext
from tenantapp.db import TENANT
from tenantapp.models import Base


def configure() -> None:
    """In-process side effect of the app's init: tenant tables live in schema "tenant"."""
    for table in Base.metadata.tables.values():
        if table.info.get("tenant"):
            table.schema = "tenant"


def init_database(connection: Connection, ctx: BuildContext) -> None:
    """create_all + a DDL statement that needs psycopg2's client-side parameters."""
    configure()
    connection.exec_driver_sql(f"CREATE SCHEMA {TENANT['tenant']}")
    Base.metadata.create_all(connection.execution_options(schema_translate_map=TENANT))
    connection.exec_driver_sql("COMMENT ON TABLE accounts IS %s", ("built by " + ctx.driver,))
    with ctx.engine.connect() as other:      # a connection of its own: closed before returning
        other.exec_driver_sql("SELECT 1")
# --8<-- [end:init]
