"""Scale: twenty pytest processes started at once against one ``url`` server.

They all need the same template, new to the server (its schema carries a token of this
run), so they race to build it: the advisory lock must let exactly one build it while the
others wait and then reuse it, and nobody may fail with "already exists".
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import dbtest
from dbtest.provision._server import PostgresServer

PROCESSES = 20

PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"

[tool.dbtest]
schema = "sql:schema/*.sql"
"""

# pg_sleep keeps the build going long enough for every other process to queue up behind it
SCHEMA = """\
-- scale test run {token}
CREATE TABLE scale_items (id serial PRIMARY KEY, worker text NOT NULL, n int NOT NULL);
CREATE INDEX scale_items_worker ON scale_items (worker);
SELECT pg_sleep(2);
"""

TESTS = """\
import os

from sqlalchemy import text


def test_insert_and_read_back(db):
    me = os.environ["SCALE_PROCESS"]
    db.execute(text("INSERT INTO scale_items (worker, n) SELECT :me, g "
                    "FROM generate_series(1, 10) g"), {"me": me})
    rows = db.execute(text("SELECT worker, count(*) FROM scale_items GROUP BY worker")).all()
    assert [tuple(r) for r in rows] == [(me, 10)]


def test_starts_empty(db):
    assert db.execute(text("SELECT count(*) FROM scale_items")).scalar() == 0
"""

# Plugins these tests do not use, off: ~1 s of imports less per process (Faker's alone
# imports all its locales), so twenty of them fit in the time on two cores.
LEAN = ("-p", "no:cacheprovider", "-p", "no:faker", "-p", "no:syrupy", "-p", "no:asyncio",
        "-p", "no:anyio", "-p", "no:xdist", "-p", "no:xdist.looponfail")

SUMMARY = re.compile(r"^template (dbtest_tpl_\w+) \(sql:schema/\*\.sql\): (built|reused)[, ]"
                     r".* in (\d+) ms$", re.MULTILINE)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A server of this module's own, used by the twenty processes as ``DBTEST_URL``."""
    with dbtest.ephemeral_postgres(port=0) as srv:
        yield srv


def _env(server: PostgresServer, cache: Path, n: int) -> dict[str, str]:
    # the outer run may be an xdist worker: none of its PYTEST_*/DBTEST_* may leak in
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBTEST_", "PYTEST_"))}
    env.update(DBTEST_URL=server.url, DBTEST_CACHE_DIR=str(cache), SCALE_PROCESS=str(n))
    return env


def test_twenty_processes_build_the_template_once(tmp_path: Path,
                                                  server: PostgresServer) -> None:
    project = tmp_path / "project"
    (project / "schema").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "schema" / "001_items.sql").write_text(SCHEMA.format(token=secrets.token_hex(8)))
    (project / "test_scale_items.py").write_text(TESTS)
    logs = [tmp_path / f"process-{n}.log" for n in range(PROCESSES)]

    started = time.monotonic()
    procs = []
    for n, log in enumerate(logs):
        with log.open("wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", *LEAN],
                cwd=project, env=_env(server, tmp_path / "cache", n), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    try:
        codes = [proc.wait(timeout=max(1.0, 150 - (time.monotonic() - started)))
                 for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = [log.read_text(errors="replace") for log in logs]

    failed = [f"process {n} (rc {rc}):\n{out}"
              for n, (rc, out) in enumerate(zip(codes, outputs, strict=True)) if rc != 0]
    assert not failed, "\n\n".join(failed)
    collided = [n for n, out in enumerate(outputs) if "already exists" in out]
    assert not collided, f"'already exists' in the output of processes {collided}"
    summaries = [SUMMARY.findall(out) for out in outputs]
    assert all(len(s) == 1 for s in summaries), summaries
    assert len({name for ((name, _, _),) in summaries}) == 1, "they used different templates"
    verbs = [verb for ((_, verb, _),) in summaries]
    assert verbs.count("built") == 1, f"template built {verbs.count('built')} times: {verbs}"
    assert verbs.count("reused") == PROCESSES - 1
    # the race really happened: some process waited for the build (0.5 s) to finish
    waits = sorted(int(ms) for ((_, verb, ms),) in summaries if verb == "reused")
    assert waits[-1] >= 300, f"no process overlapped the build (waits in ms: {waits})"

    # each process dropped its own worker database; the template is there, ready
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        marks: dict[str, str] = dict(conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE shobj_description(oid, 'pg_database') LIKE 'dbtest:%'").fetchall())
    kinds = {name: json.loads(mark[len("dbtest:"):]) for name, mark in marks.items()}
    left = sorted(n for n, m in kinds.items() if m["purpose"] != "template")
    assert not left, f"databases the processes did not drop: {left}"
    assert kinds[summaries[0][0][0]].get("state") == "ready"
