"""An app that owns its engine and sessions, as many do (the shape of the real-applications
issue): a global engine built at import from the environment, a sessionmaker, a
scoped_session for factories and jobs, tenant tables behind a schema_translate_map, and an
init that creates the schema and stamps Alembic."""

# --8<-- [start:db]
import os

from sqlalchemy import create_engine
from sqlalchemy.orm import scoped_session, sessionmaker

TENANT = {"tenant": os.environ.get("TENANT", "acme")}    # tenant tables -> tenant's schema
engine = create_engine(os.environ["DATABASE_URL"],      # postgresql+psycopg2://... in prod
                       execution_options={"schema_translate_map": TENANT})
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)
Session = scoped_session(SessionLocal)                   # factories and jobs use this
# --8<-- [end:db]
