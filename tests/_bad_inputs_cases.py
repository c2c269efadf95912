"""The case table of ``test_bad_inputs.py``: one bad input per row.

Each :class:`Case` names the exact :class:`~dbtest.errors.DbtestError` class expected, the
culprit (substrings the message must hold: the setting, file, table, step...), the fix (a
regex of the actionable phrase) and how to provoke it: ``run(env)`` in this process,
``argv`` for ``python -m dbtest`` in a subprocess, or else a test of the pytester project
(``test_<id>``, see ``PROJECT_TESTS``). Messages must never hold ``SECRET``; ``masked``
cases also show ``***`` where it was.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, select, text

import dbtest
from dbtest import errors as E
from dbtest.concurrency import Scenario, check_anomalies, run_concurrently
from dbtest.concurrency._runner import ScriptDeadlock
from dbtest.settings import resolve
from dbtest.snapshots import (
    export_snapshot,
    import_snapshot,
    list_snapshots,
    restore_snapshot,
    save_snapshot,
)
from dbtest.state import query_state, table_state

SECRET = "hunter2secret"
DEAD_URL = f"postgresql://u:{SECRET}@127.0.0.1:1/db"


@dataclass
class Env:
    """What a case may use; module fixtures fill in what the case ``needs``."""

    tmp: Path  # a folder of the case's own
    project: Path  # seeds/, sql/, alembic projects and modules (written once per module)
    url: str = ""  # the module's TCP server, as role ``sweep`` with password SECRET
    port: int = 0
    busy_port: int = 0  # a 127.0.0.1 port something listens on
    db: Any = None  # the ``db`` fixture (assertion cases)

    def url_for(self, dbname: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + dbname


@dataclass(frozen=True)
class Case:
    """One bad input and what dbtest must say about it."""

    id: str
    area: str
    error: type[E.DbtestError] | None  # None: an argparse usage error (exit 2)
    culprit: tuple[str, ...]
    fix: str
    run: Callable[[Env], object] | None = None
    argv: tuple[str, ...] = ()  # "{url}", "{port}", "{busy_port}" are filled in
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written into the CLI's cwd
    needs: tuple[str, ...] = ()  # "server" (leftover checks on it), "db", "cache"
    masked: bool = False
    marker: str | None = None  # the @pytest.mark.dbtest(...) arguments of a project test
    xfail: str | None = None

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=f"{self.area}-{self.id}", marks=marks)


def _pyproject(env: Env, body: str) -> Path:
    (env.tmp / "pyproject.toml").write_text(textwrap.dedent(body))
    return env.tmp


def _up(*args: Any, **kwargs: Any) -> None:
    with dbtest.ephemeral_postgres(*args, **kwargs):
        pass


def _up_under_a_file(env: Env) -> None:
    """A cache dir whose parent is a regular file."""
    (env.tmp / "a-file").write_text("x")
    _up("local", cache_dir=str(env.tmp / "a-file" / "cache"))


def _up_without_docker(env: Env) -> None:
    """The docker backend where no daemon listens: DOCKER_HOST names a socket nobody serves
    (a daemon may well run on the default one)."""
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {"DOCKER_HOST": f"unix://{env.tmp}/no-docker.sock"}):
        _up("docker")


def _template(env: Env, spec: str) -> None:
    from dbtest._templates import TemplateCache, TemplateKey
    from dbtest.provision._url import connect_url

    TemplateCache(connect_url(env.url), env.project, env.project / "seeds").get(TemplateKey(spec))


def _holding(env: Env, dbname: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` while another session (application_name sweep-holder) sits in ``dbname``."""
    with psycopg.connect(env.url_for(dbname), application_name="sweep-holder") as held:
        held.execute("SELECT 1")
        fn()


def _on(env: Env, dbname: str, fn: Callable[[Any], object]) -> None:
    engine = create_engine(env.url_for(dbname).replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            fn(conn)
    finally:
        engine.dispose()


def _seed(env: Env, *names: str, **kwargs: Any) -> None:
    from dbtest.seeding import load_seeds

    def load(conn: Any) -> None:
        conn.begin()
        try:
            load_seeds(conn, list(names), env.project / "seeds", **kwargs)
        finally:  # all or nothing: the set's rows are gone even inside the caller's transaction
            assert conn.execute(text("SELECT count(*) FROM things")).scalar() == 0
    _on(env, "sweep_seed", load)


def _scenario(env: Env) -> Scenario:
    sc = Scenario(env.url_for("sweep_conc"), step_timeout=5)
    sc.step("s1", "s1_upd", "UPDATE accounts SET balance = 1 WHERE id = 1")
    sc.step("s1", "s1_commit", "COMMIT")
    sc.step("s2", "s2_upd", "UPDATE accounts SET balance = 2 WHERE id = 1")
    sc.step("s2", "s2_commit", "COMMIT")
    return sc


def _cascade_unreadable(env: Env) -> None:
    from migrations_example.models import User

    user = User(email="sweep@x.io", username="sweep", password_hash="x")
    env.db.add(user)
    env.db.flush()
    conn = env.db.connection()
    conn.execute(text("CREATE ROLE sweep_limited; GRANT USAGE ON SCHEMA public TO sweep_limited;"
                      " GRANT SELECT, DELETE ON users TO sweep_limited; SET LOCAL ROLE "
                      "sweep_limited"))
    try:
        dbtest.assert_cascade(env.db, ("users", user.id))
    finally:
        conn.execute(text("RESET ROLE"))


def _track_unknown(env: Env) -> None:
    with dbtest.track_changes(env.db) as changes:
        pass
    changes.inserted("nosuch_table")


def _max_queries_negative(env: Env) -> None:
    with dbtest.assert_max_queries(env.db, -1):
        pass


S, C = ("server",), ("cache",)
CASES: list[Case] = [
    # -- config: [tool.dbtest], DBTEST_*, --dbtest-* and arguments ------------------------
    Case("pyproject-unknown-key", "config", E.ConfigError, ("shema", "pyproject.toml"),
         r"rename", lambda env: resolve(root=_pyproject(env, "[tool.dbtest]\nshema = 'x'\n"))),
    Case("pyproject-bad-toml", "config", E.ConfigError, ("pyproject.toml", "line 1"),
         r"fix the file", lambda env: resolve(root=_pyproject(env, "[tool.dbtest\n"))),
    Case("pyproject-not-a-table", "config", E.ConfigError, ("[tool.dbtest]", "pyproject.toml"),
         r"write it as", lambda env: resolve(root=_pyproject(env, "[tool]\ndbtest = 3\n"))),
    Case("env-backend", "config", E.ConfigError, ("DBTEST_BACKEND", "'postgres'"), r"set it to",
         lambda env: resolve(environ={"DBTEST_BACKEND": "postgres"}, pyproject=None)),
    Case("env-port-not-int", "config", E.ConfigError, ("DBTEST_PORT", "'abc'"), r"set it to",
         lambda env: resolve(environ={"DBTEST_PORT": "abc"}, pyproject=None)),
    Case("option-port-range", "config", E.ConfigError, ("--dbtest-port", "70000"), r"use 0",
         lambda env: resolve(cli={"port": "70000"}, pyproject=None, read_env=False)),
    Case("argument-isolation", "config", E.ConfigError, ("'isolation'", "'serial'"), r"set it to",
         lambda env: resolve({"isolation": "serial"}, pyproject=None, read_env=False)),
    Case("env-schema-shape", "config", E.ConfigError, ("DBTEST_SCHEMA", "'alembic'"), r"use one of",
         lambda env: resolve(environ={"DBTEST_SCHEMA": "alembic"}, pyproject=None)),
    Case("env-schema-no-attr", "config", E.ConfigError, ("DBTEST_SCHEMA", "'metadata:myapp'"),
         r"write it as", lambda env: resolve(environ={"DBTEST_SCHEMA": "metadata:myapp"},
                                             pyproject=None)),
    Case("argument-unknown", "config", E.ConfigError, ("'shema'",), r"rename",
         lambda env: resolve({"shema": "x"}, pyproject=None, read_env=False)),
    # -- provisioning -----------------------------------------------------------------------
    Case("url-backend-without-url", "provision", E.ConfigError, ("backend 'url'",),
         r"set DBTEST_URL", lambda env: _up("url", url=None), needs=C),
    Case("url-unreachable", "provision", E.ProvisionError, ("127.0.0.1:1",), r"check that the "
         r"server runs", lambda env: _up("url", url=DEAD_URL), needs=C, masked=True),
    Case("url-wrong-password", "provision", E.ProvisionError, ("password authentication",),
         r"check the password", lambda env: _up("url", url=f"postgresql://postgres:{SECRET}@"
                                                 f"127.0.0.1:{env.port}/postgres"),
         needs=S + C, masked=True),
    Case("url-not-postgres", "provision", E.ConfigError, ("mysql://",), r"use postgresql://",
         lambda env: _up(url=f"mysql://u:{SECRET}@h/db"), needs=C, masked=True),
    Case("url-bad-port", "provision", E.ConfigError, ("h:port",), r"use a number",
         lambda env: _up(url=f"postgresql://u:{SECRET}@h:port/db"), needs=C, masked=True),
    Case("url-role-without-createdb", "provision", E.ProvisionError, ("'nocreate'",),
         r"ALTER ROLE nocreate CREATEDB", lambda env: _up(
             url=f"postgresql://nocreate:{SECRET}@127.0.0.1:{env.port}/postgres"),
         needs=S + C, masked=True),
    Case("port-in-use", "provision", E.ProvisionError, ("port ", "in use"), r"pick another port",
         lambda env: _up("local", port=env.busy_port), needs=C),
    Case("cache-dir-unusable", "provision", E.ProvisionError, ("a-file/cache",),
         r"set cache_dir", lambda env: _up_under_a_file(env), needs=C),
    Case("pg-bin-empty", "provision", E.PostgresNotFound, ("pg_bin",), r"point it at",
         lambda env: _up("local", pg_bin=str(env.tmp)), needs=C),
    Case("docker-no-daemon", "provision", E.ProvisionError, ("'docker'", "Docker daemon"),
         r"start Docker", lambda env: _up_without_docker(env), needs=C),
    # -- schema sources (template builds on the module's server) --------------------------
    Case("sql-syntax-error", "schema", E.MigrationError, ("001.sql", "line 3", "tabel"),
         r"fix the SQL file", lambda env: _template(env, "sql:sql/bad/*.sql"), needs=S),
    Case("sql-no-file", "schema", E.ConfigError, ("sql/none/*.sql",), r"check the glob",
         lambda env: _template(env, "sql:sql/none/*.sql"), needs=S),
    Case("callable-raises", "schema", E.MigrationError, ("sweep_mods:boom", "kaputt"),
         r"fix the callable", lambda env: _template(env, "callable:sweep_mods:boom"), needs=S),
    Case("callable-not-callable", "schema", E.ConfigError, ("sweep_mods.notcallable",),
         r"point the schema setting at a function",
         lambda env: _template(env, "callable:sweep_mods:notcallable"), needs=S),
    Case("metadata-wrong-type", "schema", E.ConfigError, ("sweep_mods.helper",),
         r"point the schema setting at a MetaData",
         lambda env: _template(env, "metadata:sweep_mods:helper"), needs=S),
    Case("metadata-no-attr", "schema", E.ConfigError, ("'Nope'", "'sweep_mods'"),
         r"check the attribute", lambda env: _template(env, "metadata:sweep_mods:Nope"), needs=S),
    Case("metadata-import-fails", "schema", E.ConfigError, ("sweep_broken", "nonexistent_pkg_q"),
         r"fix the module", lambda env: _template(env, "metadata:sweep_broken:Base"), needs=S),
    Case("alembic-missing-ini", "schema", E.ConfigError, ("missing/alembic.ini",),
         r"point the schema setting", lambda env: _template(env, "alembic:missing/alembic.ini"),
         needs=S),
    Case("alembic-bad-script-location", "schema", E.ConfigError, ("nowhere", "bad_location.ini"),
         r"check script_location", lambda env: _template(env, "alembic:bad_location.ini"),
         needs=S),
    Case("alembic-two-heads", "schema", E.MigrationError, ("2 heads", "r2a", "r2b"),
         r"merge them", lambda env: _template(env, "alembic:heads/alembic.ini"), needs=S),
    Case("alembic-failing-revision", "schema", E.MigrationError, ("r2f", "r2f.py:", "division"),
         r"fix the migration", lambda env: _template(env, "alembic:failing/alembic.ini"),
         needs=S),
    # -- snapshots (database copies and data snapshots) -----------------------------------
    Case("restore-unknown", "snapshots", E.SnapshotError, ("'nosuch'", "base"),
         r"save one with", lambda env: restore_snapshot(env.url, "nosuch"), needs=S),
    Case("name-invalid", "snapshots", E.SnapshotError, ("'bad name!'",), r"use 1-50",
         lambda env: save_snapshot(env.url, "sweep_src", "bad name!"), needs=S),
    Case("source-missing", "snapshots", E.SnapshotError, ("'nope_db'",), r"pass an existing",
         lambda env: save_snapshot(env.url, "nope_db", "s1"), needs=S),
    Case("name-collides", "snapshots", E.RefusedError, ("'dbtest_snap_mine'",),
         r"pick another name", lambda env: save_snapshot(env.url, "sweep_src", "mine"), needs=S),
    Case("save-busy-source", "snapshots", E.SnapshotError, ("sweep-holder", "'sweep_src'"),
         r"close them, or pass force=True", lambda env: _holding(
             env, "sweep_src", lambda: save_snapshot(env.url, "sweep_src", "busy")), needs=S),
    Case("restore-busy-target", "snapshots", E.SnapshotError, ("sweep-holder", "'sweep_src'"),
         r"close them, or pass force=True", lambda env: _holding(
             env, "sweep_src", lambda: restore_snapshot(env.url, "base")), needs=S),
    Case("export-unwritable", "snapshots", E.SnapshotError, ("nodir/x.dump",),
         r"pick a writable folder", lambda env: export_snapshot(
             env.url, "base", env.tmp / "nodir" / "x.dump"), needs=S),
    Case("import-missing-file", "snapshots", E.SnapshotError, ("none.dump",), r"check the path",
         lambda env: import_snapshot(env.url, env.tmp / "none.dump", "imp"), needs=S),
    Case("import-not-a-dump", "snapshots", E.SnapshotError, ("junk.dump", "pg_restore"),
         r"check that .*pg_dump", lambda env: (env.tmp / "junk.dump").write_text("junk") and
         import_snapshot(env.url, env.tmp / "junk.dump", "imp"), needs=S),
    Case("dsn-unreachable", "snapshots", E.ProvisionError, ("host=127.0.0.1", "port=1"),
         r"check that the server runs", lambda env: list_snapshots(
             f"host=127.0.0.1 port=1 user=u password={SECRET}"), masked=True),
    Case("state-unknown-table", "snapshots", E.SnapshotError, ("'nosuch'", "nopk"),
         r"check the name", lambda env: _on(env, "sweep_src", lambda c: table_state(c, "nosuch")),
         needs=S),
    Case("state-no-primary-key", "snapshots", E.SnapshotError, ("'nopk'",), r"pass order_by",
         lambda env: _on(env, "sweep_src", lambda c: table_state(c, "nopk")), needs=S),
    Case("state-order-by-column", "snapshots", E.SnapshotError, ("'nope'", "'t'"), r"use one of",
         lambda env: _on(env, "sweep_src", lambda c: table_state(c, "t", order_by=["nope"])),
         needs=S),
    Case("state-mask-column", "snapshots", E.SnapshotError, ("'zzz'",), r"write 'table.column'",
         lambda env: _on(env, "sweep_src", lambda c: table_state(c, "t", mask=["zzz"])), needs=S),
    Case("query-state-not-a-query", "snapshots", E.SnapshotError, ("got int",),
         r"pass SQL text or a select", lambda env: _on(env, "sweep_src",
                                                       lambda c: query_state(c, 42)), needs=S),
    Case("state-not-a-connection", "snapshots", E.SnapshotError, ("got str",),
         r"pass the db", lambda env: table_state("db", "t")),  # type: ignore[call-overload]
    # -- assertions (on the example schema, inside the db fixture) -------------------------
    Case("row-count-unknown-table", "assertions", E.ConfigError, ("'userz'", "'users'"),
         r"did you mean", lambda env: dbtest.assert_row_count(env.db, "userz", 1), needs=("db",)),
    Case("rows-unknown-column", "assertions", E.ConfigError, ("'emial'", "'email'"),
         r"did you mean", lambda env: dbtest.assert_rows(env.db, "users", [{"emial": "x"}]),
         needs=("db",)),
    Case("row-count-negative", "assertions", E.ConfigError, ("got -1",), r"pass 0 or more",
         lambda env: dbtest.assert_row_count(env.db, "users", -1), needs=("db",)),
    Case("where-broken", "assertions", E.ConfigError, ("nosuchcol",), r"fix the condition",
         lambda env: dbtest.assert_row_count(env.db, "users", 1, where="nosuchcol = 1"),
         needs=("db",)),
    Case("aggregate-not-aggregate", "assertions", E.ConfigError, ("no aggregate",),
         r"use assert_rows", lambda env: dbtest.assert_aggregate(
             env.db, select(text("username")).select_from(text("users"))), needs=("db",)),
    Case("aggregate-sql-text", "assertions", E.ConfigError, ("got str",), r"build it with select",
         lambda env: dbtest.assert_aggregate(env.db, "SELECT count(*) FROM users"),  # type: ignore[call-overload]
         needs=("db",)),
    Case("cascade-transient", "assertions", E.ConfigError, ("transient",), r"add it to the session",
         lambda env: dbtest.assert_cascade(env.db, __import__(
             "migrations_example.models").models.User(email="t@x.io")), needs=("db",)),
    Case("cascade-no-row", "assertions", E.ConfigError, ("users (id=999999)", "0 rows"),
         r"check the primary key", lambda env: dbtest.assert_cascade(env.db, ("users", 999999)),
         needs=("db",)),
    Case("cascade-unreadable-table", "assertions", E.ConfigError, ("comments", "cannot read"),
         r"GRANT SELECT ON comments", _cascade_unreadable, needs=("db",)),
    Case("track-unknown-table", "assertions", E.ConfigError, ("'nosuch_table'",),
         r"check the table name", _track_unknown, needs=("db",)),
    Case("max-queries-negative", "assertions", E.ConfigError, ("assert_max_queries", "got -1"),
         r"pass 0 or more", _max_queries_negative, needs=("db",)),
    Case("not-a-session", "assertions", E.ConfigError, ("got str",), r"pass the db",
         lambda env: dbtest.assert_row_count("db", "users", 1)),  # type: ignore[call-overload]
    # -- concurrency -------------------------------------------------------------------------
    Case("scenario-on-session", "concurrency", E.ConcurrencyError, ("Session",),
         r"use the fresh_db fixture", lambda env: Scenario(env.db), needs=("db",)),
    Case("scenario-not-a-url", "concurrency", E.ConcurrencyError, ("'just words'",),
         r"pass fresh_db\.url", lambda env: Scenario("just words")),
    Case("unknown-step", "concurrency", E.ConcurrencyError, ("'s1_nope'", "s1_upd"),
         r"declare it with sc\.step", lambda env: _scenario(env).run("s1_upd s1_nope"), needs=S),
    Case("session-as-step", "concurrency", E.ConcurrencyError, ("session 's1'",),
         r"name one of them", lambda env: _scenario(env).run("s1 s1_commit"), needs=S),
    Case("transaction-left-open", "concurrency", E.ConcurrencyError, ("s1_upd", "session s1"),
         r"end every session's transaction", lambda env: _scenario(env).run("s1_upd"), needs=S),
    Case("script-deadlock", "concurrency", ScriptDeadlock, ("s2_upd", "lock graph", "waits for"),
         r"reorder the permutation", lambda env: _scenario(env).run(
             "s1_upd s2_upd s2_commit s1_commit"), needs=S),
    Case("isolation-level", "concurrency", E.ConcurrencyError, ("'SNAPSHOT'",), r"use one of",
         lambda env: Scenario("host=/tmp").session("s1", isolation_level="SNAPSHOT")),
    Case("empty-step", "concurrency", E.ConcurrencyError, ("'s1_x'",), r"give it a statement",
         lambda env: Scenario("host=/tmp").step("s1", "s1_x", "  ")),
    Case("duplicate-step", "concurrency", E.ConcurrencyError, ("'a'", "session 's1'"),
         r"rename one", lambda env: Scenario("host=/tmp").step("s1", "a", "SELECT 1").step(
             "s2", "a", "SELECT 1")),
    Case("missing-database", "concurrency", E.ConcurrencyError, ("nope_db",),
         r"check that the database exists", lambda env: Scenario(env.url_for("nope_db")).step(
             "s1", "s1_a", "SELECT 1").run("s1_a"), needs=S, masked=True),
    Case("anomaly-unknown-table", "concurrency", E.ConcurrencyError, ("'nosuch'",),
         r"pass table=", lambda env: check_anomalies(env.url_for("sweep_conc"), table="nosuch"),
         needs=S),
    Case("workers-zero", "concurrency", E.ConcurrencyError, ("got 0",), r"pass n=1 or more",
         lambda env: run_concurrently(lambda i: None, 0)),
    # -- seeds (in process; the CLI's are below) --------------------------------------------
    Case("unknown-set", "seeds", E.SeedError, ("'nosuch'", "base", "broken"), r"fix the name",
         lambda env: _seed(env, "nosuch"), needs=S),
    Case("dependency-cycle", "seeds", E.SeedError, ("cycle_a -> cycle_b -> cycle_a",),
         r"remove one of the 'requires'", lambda env: _seed(env, "cycle_a"), needs=S),
    Case("seed-raises", "seeds", E.SeedError, ("broken.py", "line 5", "seed exploded"),
         r"fix the seed set", lambda env: _seed(env, "base", "broken"), needs=S),
    Case("seed-syntax-error", "seeds", E.SeedError, ("syntax.py", "line 1"), r"fix the file",
         lambda env: _seed(env, "syntax"), needs=S),
    Case("seed-without-function", "seeds", E.SeedError, ("noseed.py", "seed(ctx)"), r"define",
         lambda env: _seed(env, "noseed"), needs=S),
    Case("constraint-violation", "seeds", E.SeedError, ("dupe.sql", "things_name_key"),
         r"fix the seed set", lambda env: _seed(env, "dupe"), needs=S),
    Case("unknown-column", "seeds", E.SeedError, ("badcol.sql", '"colour"'), r"fix the seed set",
         lambda env: _seed(env, "badcol"), needs=S),
    Case("missing-table", "seeds", E.SeedError, ("missing.sql", '"nowhere"', "sweep_seed"),
         r"apply it first", lambda env: _seed(env, "missing"), needs=S),
    Case("invalid-name", "seeds", E.SeedError, ("'Bad Name'",), r"use letters",
         lambda env: _seed(env, "Bad Name"), needs=S),
    Case("scale-zero", "seeds", E.SeedError, ("scale", "got 0"), r"pass --scale 1 or more",
         lambda env: _seed(env, "base", scale=0), needs=S),
    Case("bulk-constraint", "seeds", E.SeedError, ("row 3", "things_name_key"),
         r"fix that row", lambda env: _on(env, "sweep_seed", lambda c: dbtest.bulk_insert(
             c, "things", [{"name": "a"}, {"name": "b"}, {"name": "a"}])), needs=S),
    Case("bulk-unknown-column", "seeds", E.SeedError, ("'colour'", "things"), r"rename or drop",
         lambda env: _on(env, "sweep_seed", lambda c: dbtest.bulk_insert(
             c, "things", [{"colour": 1}])), needs=S),
    # -- the command line ------------------------------------------------------------------
    Case("usage-bad-backend", "cli", None, ("--backend", "'postgres'"), r"choose from",
         argv=("--backend", "postgres", "doctor")),
    Case("usage-bad-action", "cli", None, ("'frobnicate'",), r"choose from",
         argv=("snapshot", "frobnicate")),
    Case("snapshot-save-no-name", "cli", E.ConfigError, ("snapshot save", "NAME"),
         r"use: dbtest snapshot save NAME", argv=("snapshot", "save")),
    Case("snapshot-server-down", "cli", E.ProvisionError, ("127.0.0.1", "port=1"),
         r"check that the server runs", argv=("--url", DEAD_URL, "snapshot", "list"),
         masked=True),
    Case("snapshot-mysql-url", "cli", E.ConfigError, ("mysql://",), r"use postgresql://",
         argv=("--url", f"mysql://u:{SECRET}@h/db", "snapshot", "list"), masked=True),
    Case("snapshot-restore-unknown", "cli", E.SnapshotError, ("'nosuch'",), r"save one with",
         argv=("snapshot", "restore", "nosuch", "--url", "{url}"), needs=S),
    Case("snapshot-export-unwritable", "cli", E.SnapshotError, ("nodir/x.dump",),
         r"pick a writable folder", argv=("snapshot", "export", "base", "nodir/x.dump",
                                          "--url", "{url}"), needs=S),
    Case("env-backend", "cli", E.ConfigError, ("DBTEST_BACKEND", "'postgres'"), r"set it to",
         argv=("doctor",), env={"DBTEST_BACKEND": "postgres"}),
    Case("pyproject-unknown-key", "cli", E.ConfigError, ("shema", "pyproject.toml"), r"rename",
         argv=("doctor",), files={"pyproject.toml": "[tool.dbtest]\nshema = 'x'\n"}),
    Case("up-port-in-use", "cli", E.ProvisionError, ("port {busy_port}", "in use"),
         r"pick another port", argv=("up", "--port", "{busy_port}"), needs=C),
    Case("up-cache-dir-unusable", "cli", E.ProvisionError, ("a-file/cache",), r"set cache_dir",
         argv=("--cache-dir", "a-file/cache", "up"), files={"a-file": "x"}, needs=C),
    Case("down-corrupt-state", "cli", E.DbtestError, ("up.json", "unreadable"), r"delete it",
         argv=("--cache-dir", "cache", "down"), files={"cache/up.json": "{not json"}),
    Case("migrations-missing-ini", "cli", E.ConfigError, ("nosuch.ini",), r"point at",
         argv=("migrations", "check", "nosuch.ini")),
    Case("seed-unknown-set", "seeds", E.SeedError, ("'nosuch'", "base"), r"fix the name",
         argv=("seed", "nosuch", "--url", "{url_seed}"), needs=S),
    Case("seed-constraint", "seeds", E.SeedError, ("dupe.sql", "things_name_key"),
         r"fix the seed set", argv=("seed", "dupe", "--url", "{url_seed}"), needs=S),
    Case("seed-server-down", "seeds", E.SeedError, ("127.0.0.1:1",), r"check --url",
         argv=("seed", "base", "--url", DEAD_URL), masked=True),
    Case("seed-not-postgres", "seeds", E.SeedError, ("mysql://",), r"use postgresql://",
         argv=("seed", "base", "--url", f"mysql://u:{SECRET}@h/db"), masked=True),
    # -- fixtures and the marker: tests of the pytester project (see PROJECT_TESTS) ---------
    Case("marker-typo", "fixtures", E.ConfigError, ("test_marker_typo", "isolaton"),
         r"use dbtest\(isolation=", marker='isolaton="fresh"'),
    Case("marker-positional", "fixtures", E.ConfigError, ("test_marker_positional", "positional"),
         r"use dbtest\(isolation=", marker='"fresh"'),
    Case("marker-isolation", "fixtures", E.ConfigError, ("test_marker_isolation", "'sometimes'"),
         r"use one of", marker='isolation="sometimes"'),
    Case("marker-schema-shape", "fixtures", E.ConfigError, ("test_marker_schema_shape",
         "'nonsense'"), r"use one of", marker='schema="nonsense"'),
    Case("marker-schema-import", "fixtures", E.ConfigError, ("no_such_module_q",),
         r"fix the module", marker='schema="metadata:no_such_module_q:Base"'),
    Case("marker-schema-sql", "fixtures", E.MigrationError, ("001.sql", "line 3"),
         r"fix the SQL file", marker='schema="sql:sql/bad/*.sql"'),
    Case("marker-schema-callable", "fixtures", E.MigrationError, ("boom", "kaputt"),
         r"fix the callable", marker='schema="callable:sweep_mods:boom"'),
    Case("marker-seeds-unknown", "fixtures", E.SeedError, ("'nosuch'", "base"), r"fix the name",
         marker='seeds=["nosuch"]'),
    Case("marker-seeds-broken", "fixtures", E.SeedError, ("broken.py", "seed exploded"),
         r"fix the seed set", marker='seeds=["broken"]'),
    Case("leak", "fixtures", E.LeakError, ("test_leak", "items"), r"use @pytest\.mark\.dbtest"),
    Case("bad-option", "fixtures", E.ConfigError, ("--dbtest-isolation", "'serial'"),
         r"set it to"),  # test_good, run with --dbtest-isolation=serial
]

#: marker cases caught when the test is collected (a collection error of its module): each
#: gets a module of its own (``COLLECTION_TESTS``), the run continues past them
COLLECTION_CASES = ("marker-typo", "marker-positional", "marker-isolation",
                    "marker-schema-shape")


def _marked_test(c: Case) -> str:
    name = c.id.replace("-", "_")
    return f"\n\n@pytest.mark.dbtest({c.marker})\ndef test_{name}(db):\n    pass\n"


#: file name -> source of the modules holding one collection-time marker case each
COLLECTION_TESTS = {f"test_collect_{c.id.replace('-', '_')}.py": "import pytest\n" + _marked_test(c)
                    for c in CASES if c.id in COLLECTION_CASES}

#: the pytester project's tests: one per marker case, a leak, and a test that must pass
PROJECT_TESTS = "import pytest\nfrom sqlalchemy import text\n" + "".join(
    _marked_test(c) for c in CASES if c.marker and c.id not in COLLECTION_CASES) + '''

def test_leak(db, db_engine):
    with db_engine.begin() as other:  # a second connection commits for real
        other.execute(text("INSERT INTO items (name) VALUES ('leaked')"))


def test_good(db, fresh_db):  # the run works otherwise
    db.execute(text("INSERT INTO items (name) VALUES ('ok')"))
'''

#: what the project's conftest records: the first exception of each test, with its class
PROJECT_CONFTEST = '''
import json
import os

RESULTS = {}


def pytest_runtest_makereport(item, call):
    if call.excinfo is not None and item.name not in RESULTS:
        exc = call.excinfo.value
        RESULTS[item.name] = {"when": call.when, "message": str(exc),
                              "type": type(exc).__module__ + "." + type(exc).__qualname__}


def pytest_exception_interact(node, call, report):
    # a marker error found at collection: the message names the test
    import re

    exc = call.excinfo.value
    found = re.search(r"::(test_\\w+)", str(exc)) if report.when == "collect" else None
    if found and found.group(1) not in RESULTS:
        kind = next((k for k in type(exc).__mro__ if k.__module__ == "dbtest.errors"),
                    type(exc))
        RESULTS[found.group(1)] = {"when": "collect", "message": str(exc),
                                   "type": kind.__module__ + "." + kind.__qualname__}


def pytest_sessionfinish(session):
    with open(os.environ["SWEEP_RESULTS"], "w") as fh:
        json.dump(RESULTS, fh)
'''
