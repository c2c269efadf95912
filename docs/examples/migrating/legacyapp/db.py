# --8<-- [start:db]
import os

from sqlalchemy import create_engine
from sqlalchemy.orm import scoped_session, sessionmaker

engine = create_engine(os.environ["DATABASE_URL"])      # created at import time
SessionLocal = sessionmaker(bind=engine)                 # the web app's session factory
Session = scoped_session(SessionLocal)                   # scripts, jobs and factories use this
# --8<-- [end:db]
