# ruff: noqa: I001  (tenantapp is first-party in the example project)
# --8<-- [start:conftest]
import os

os.environ.setdefault("DATABASE_URL", "postgresql+psycopg2://app@/unused")  # read at import
os.environ.setdefault("DBTEST_DRIVER", "psycopg2")       # dbtest's settings, from conftest

from dbtest import plug_app
from tenantapp.db import TENANT

dbtest_app = plug_app("tenantapp.db:engine", "tenantapp.db:SessionLocal",
                      "tenantapp.db:Session",
                      execution_options={"schema_translate_map": TENANT})
# --8<-- [end:conftest]
