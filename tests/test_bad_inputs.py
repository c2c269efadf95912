"""The bad-input sweep: every mistake a user can make gets a dbtest error that names the
culprit and the fix, masks passwords and leaves nothing behind (issue 9, items 4 and 5).

The cases live in ``_bad_inputs_cases.py``. They run in this process (``run``), through
``python -m dbtest`` (``argv``; also run in this process through ``cli.main`` to see the
exception's class) or as tests of a pytester-style project run once per module. One
local TCP server per module serves them all; a role ``sweep`` with the password
``hunter2secret`` is how every URL reaches it, so any unmasked URL shows. The security
checks of item 5 that ``test_provision.py`` does not cover are at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import dbtest
from dbtest import cli, commands
from dbtest.errors import DbtestError
from dbtest.provision import _lifetime as lifetime
from dbtest.provision import _local as local
from dbtest.provision import _spares as spares
from dbtest.provision._server import PostgresServer
from dbtest.settings import default_cache_dir, resolve
from tests._bad_inputs_cases import (
    CASES,
    COLLECTION_TESTS,
    PROJECT_CONFTEST,
    PROJECT_TESTS,
    SECRET,
    Case,
    Env,
)

# the project's schema: items (the leak test) and things (the seed sets)
MODELS = ("import sqlalchemy as sa\n\nBase = sa.MetaData()\nfor name in ('items', 'things'):\n"
          "    sa.Table(name, Base, sa.Column('id', sa.Integer, primary_key=True),\n"
          "             sa.Column('name', sa.String(50), unique=True))\n")
ALEMBIC_ENV = ('from alembic import context\nconn = context.config.attributes["connection"]\n'
               'context.configure(connection=conn)\nwith context.begin_transaction():\n'
               '    context.run_migrations()\n')
REVISION = ('from alembic import op\nrevision = {rev!r}\ndown_revision = {down!r}\n'
            'branch_labels = depends_on = None\n\n\ndef upgrade():\n    op.execute({sql!r})\n\n\n'
            'def downgrade():\n    pass\n')
PROJECT_FILES = {
    "app_models.py": MODELS,
    "sweep_mods.py": 'def boom(conn):\n    raise ValueError("kaputt")\n\n\nnotcallable = 3\n'
                     'helper = "x"\n',
    "sweep_broken.py": "import nonexistent_pkg_q\n",
    "sql/bad/001.sql": "CREATE TABLE a (id int);\n\ncreate tabel b (id int);\n",
    "seeds/base.sql": "INSERT INTO things (name) VALUES ('base-1'), ('base-2');\n",
    "seeds/broken.py": 'requires = ["base"]\nfrom sqlalchemy import text\ndef seed(ctx):\n'
                       '    ctx.connection.execute(text("INSERT INTO things (name) VALUES (1)"))\n'
                       '    raise RuntimeError("seed exploded")\n',
    "seeds/cycle_a.py": 'requires = ["cycle_b"]\n\n\ndef seed(ctx):\n    pass\n',
    "seeds/cycle_b.sql": "-- requires: cycle_a\nSELECT 1;\n",
    "seeds/syntax.py": "def seed(ctx)\n    pass\n",
    "seeds/noseed.py": "X = 1\n",
    "seeds/dupe.sql": "INSERT INTO things (name) VALUES ('x');\n" * 2,
    "seeds/badcol.sql": "INSERT INTO things (colour) VALUES (1);\n",
    "seeds/missing.sql": "INSERT INTO nowhere VALUES (1);\n",
    "bad_location.ini": "[alembic]\nscript_location = %(here)s/nowhere\n",
    "pyproject.toml": '[tool.dbtest]\nschema = "metadata:app_models:Base"\nseeds = "seeds"\n'
                      '[tool.pytest.ini_options]\npythonpath = ["."]\n'
                      'asyncio_default_fixture_loop_scope = "function"\n',
    "conftest.py": PROJECT_CONFTEST,
    "test_cases.py": PROJECT_TESTS,
    **COLLECTION_TESTS,
}
for _name, _revs in {"heads": [("r1", None, "CREATE TABLE t1 (id int)"),
                               ("r2a", "r1", "SELECT 1"), ("r2b", "r1", "SELECT 2")],
                     "failing": [("r1", None, "CREATE TABLE t1 (id int)"),
                                 ("r2f", "r1", "SELECT 1/0")]}.items():
    PROJECT_FILES[f"{_name}/alembic.ini"] = "[alembic]\nscript_location = %(here)s\n"
    PROJECT_FILES[f"{_name}/env.py"] = ALEMBIC_ENV
    for _rev, _down, _sql in _revs:
        PROJECT_FILES[f"{_name}/versions/{_rev}.py"] = REVISION.format(rev=_rev, down=_down,
                                                                       sql=_sql)


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without DBTEST_* settings (the cache dir stays) and
    without the outer pytest's and xdist's variables."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DBTEST_", "PYTEST_"))}
    keep["DBTEST_CACHE_DIR"] = os.environ.get("DBTEST_CACHE_DIR", str(default_cache_dir()))
    return {**keep, **(extra or {})}


# -- what is left behind -------------------------------------------------------------------
def databases(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()}


def client_backends(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                           "'client backend' AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def footprint(cache: Path) -> set[tuple[str, int]]:
    """Registry entries and marked run folders in ``cache``, with their owner's pid."""
    found = set()
    for entry in (cache / "run").glob("*-*.json"):
        found.add((str(entry), int(entry.stem.split("-")[1])))
    for base in local.run_bases(cache):
        # run folders live in the cache dir's own folder of each run base (issue 12); other
        # folders there belong to other cache dirs (other runs on this machine)
        for folder in (base / spares.namespace(cache)).glob("dbtest-*"):
            try:
                found.add((str(folder), int((folder / lifetime.OWNED_MARK).read_text())))
            except (OSError, ValueError):
                continue
    return found


def left_behind(cache: Path, before: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """What appeared since ``before`` and belongs to this process or to a dead one (a CLI
    run); the run folder of a failed start is deleted in the background: wait for it."""
    deadline = time.monotonic() + 3
    while True:
        new = {(p, pid) for p, pid in footprint(cache) - before
               if pid == os.getpid() or not lifetime.pid_alive(pid)}
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.05)


# -- module fixtures -----------------------------------------------------------------------
@dataclass
class Sweep:
    server: PostgresServer
    url: str  # as role sweep, password SECRET

    def dsn(self, dbname: str = "postgres") -> str:
        return self.server.dsn_for(dbname)


@pytest.fixture(scope="module")
def sweep() -> Iterator[Sweep]:
    """The module's TCP server: role ``sweep`` (password SECRET, superuser), role
    ``nocreate`` (no CREATEDB), and the databases the snapshot, seed and concurrency
    cases use (``dbtest_snap_mine`` is a foreign database with a snapshot's name)."""
    with dbtest.ephemeral_postgres("local", port=0) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE sweep LOGIN SUPERUSER PASSWORD '{SECRET}'")
            conn.execute(f"CREATE ROLE nocreate LOGIN PASSWORD '{SECRET}'")
            conn.execute('CREATE DATABASE "dbtest_snap_mine"')
        for name in ("sweep_src", "sweep_conc", "sweep_seed"):
            server.create_database(name, purpose="test")
        with psycopg.connect(server.dsn_for("sweep_src"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY, n text); "
                         "CREATE TABLE nopk (a int, b text)")
        with psycopg.connect(server.dsn_for("sweep_conc"), autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int); "
                         "INSERT INTO accounts VALUES (1, 100), (2, 100)")
        with psycopg.connect(server.dsn_for("sweep_seed"), autocommit=True) as conn:
            conn.execute("CREATE TABLE things (id serial PRIMARY KEY, name varchar(50) UNIQUE)")
        url = f"postgresql://sweep:{SECRET}@127.0.0.1:{server.params.port}/postgres"
        dbtest.save_snapshot(url, "sweep_src", "base")
        yield Sweep(server, url)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("project"), PROJECT_FILES)


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@dataclass
class ProjectRun:
    results: dict[str, dict[str, str]]
    output: str
    new_databases: set[str]
    passed: bool


@pytest.fixture(scope="module")
def project_run(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> ProjectRun:
    """The pytester project's results; under xdist one worker runs it for all."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        return run_project(request.getfixturevalue("sweep"), request.getfixturevalue("project"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / f"sweep-project-{run_id[:12]}.json"
    with FileLock(f"{shared}.lock"):
        if not shared.exists():
            run = run_project(request.getfixturevalue("sweep"),
                              request.getfixturevalue("project"))
            shared.write_text(json.dumps({**run.__dict__, "new_databases": sorted(
                run.new_databases)}))
        data = json.loads(shared.read_text())
    return ProjectRun(**{**data, "new_databases": set(data["new_databases"])})


def run_project(sweep: Sweep, project: Path) -> ProjectRun:
    """Run the pytester project twice against the module's server (``--dbtest-url``):
    as it is, and with a bad ``--dbtest-isolation``."""
    before = databases(sweep.dsn())
    results: dict[str, dict[str, str]] = {}
    output = ""
    passed = False
    collect = ("--continue-on-collection-errors", *COLLECTION_TESTS)
    for extra, select in (((), ("test_cases.py", *collect)),
                          (("--dbtest-isolation=serial",), ("test_cases.py::test_good",))):
        record = project / "results.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                               "-p", "no:xdist", "--tb=short", "-q", f"--dbtest-url={sweep.url}",
                               *extra, *select], cwd=project, capture_output=True, text=True,
                              timeout=120, check=False,
                              env=subprocess_env({"SWEEP_RESULTS": str(record)}))
        output += proc.stdout + proc.stderr
        found = json.loads(record.read_text())
        if extra:
            # a settings error stops the run before any test, with its message alone
            # (pytest's "ERROR: ..." of a usage error, from dbtest's ConfigError)
            assert proc.returncode == 4 and "test_good" not in found, proc.stderr
            message = re.search(r"^ERROR: (.*)$", proc.stderr, re.M)
            results["test_bad_option"] = {
                "when": "start", "type": "dbtest.errors.ConfigError",
                "message": message.group(1) if message else proc.stderr}
        else:
            results.update(found)
            passed = bool(re.search(r"\b2 passed\b", proc.stdout)) and "test_good" not in found
    return ProjectRun(results, output, databases(sweep.dsn()) - before, passed)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path, project: Path) -> Env:
    case: Case = request.node.callspec.params["case"]
    made = Env(tmp=tmp_path, project=project)
    if "server" in case.needs or case.masked or case.argv:
        sweep: Sweep = request.getfixturevalue("sweep")
        made.url, made.port = sweep.url, sweep.server.params.port
    if "db" in case.needs:
        made.db = request.getfixturevalue("db")
    made.busy_port = request.getfixturevalue("busy_port")
    return made


def check_message(case: Case, message: str, fill: dict[str, Any] | None = None) -> None:
    """The culprit and the fix are named; passwords are masked."""
    for culprit in case.culprit:
        wanted = culprit.format(**fill) if fill else culprit
        assert wanted in message, f"culprit {wanted!r} not named"
    assert re.search(case.fix, message, re.IGNORECASE), f"no fix like {case.fix!r}"
    assert SECRET not in message
    if case.masked:
        assert "***" in message


# -- the sweep -----------------------------------------------------------------------------
RUN_CASES = [c.param() for c in CASES if c.run is not None]
CLI_CASES = [c.param() for c in CASES if c.argv]
PROJECT_CASES = [c.param() for c in CASES if c.run is None and not c.argv]


def test_the_sweep_is_large_enough() -> None:
    areas = {c.area for c in CASES}
    assert len(CASES) >= 45 and {"config", "cli", "fixtures", "schema", "snapshots",
                                 "assertions", "concurrency", "seeds"} <= areas
    assert len({(c.area, c.id) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_input(case: Case, env: Env, request: pytest.FixtureRequest) -> None:
    sweep: Sweep | None = request.getfixturevalue("sweep") if env.url else None
    cache = resolve().cache_dir
    dbs = databases(sweep.dsn()) if sweep else set()
    conns = client_backends(sweep.dsn()) if sweep else 0
    files = footprint(cache) if "cache" in case.needs else set()
    with pytest.raises(DbtestError) as info:
        case.run(env)  # type: ignore[misc]
    assert type(info.value) is case.error, info.value
    check_message(case, str(info.value))
    assert SECRET not in repr(info.value.args)
    if env.db is not None:  # the test's transaction is still usable
        from sqlalchemy import text

        assert env.db.execute(text("SELECT 1")).scalar() == 1
    if sweep is not None:
        assert databases(sweep.dsn()) == dbs
        deadline = time.monotonic() + 3  # closed clients' backends take a moment to exit
        while client_backends(sweep.dsn()) > conns and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client_backends(sweep.dsn()) <= conns, "connections left open"
    if "cache" in case.needs:
        assert not left_behind(cache, files)


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(case: Case, env: Env, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    fill = {"url": env.url, "url_seed": env.url_for("sweep_seed"), "busy_port": env.busy_port}
    argv = [arg.format(**fill) for arg in case.argv]
    write_files(env.tmp, case.files)
    (env.tmp / "seeds").symlink_to(env.project / "seeds")
    cache = resolve().cache_dir
    files = footprint(cache)
    dbs = databases(env.url) if env.url else set()
    # In this process first, to see the exception's class (cli.main prints it and returns).
    caught: list[BaseException | None] = []
    original = cli._error  # type: ignore[attr-defined]  # main's one error printer

    def record(message: str) -> None:
        caught.append(sys.exc_info()[1])
        original(message)

    monkeypatch.setattr(cli, "_error", record)
    monkeypatch.chdir(env.tmp)
    for key in [k for k in os.environ if k.startswith("DBTEST_") and k != "DBTEST_CACHE_DIR"]:
        monkeypatch.delenv(key)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(argv)
    capsys.readouterr()
    if case.error is None:
        assert code == 2 and not caught
    else:
        assert code == 1 and len(caught) == 1 and type(caught[0]) is case.error, caught
    # Then as users run it.
    proc = subprocess.run([sys.executable, "-m", "dbtest", *argv], cwd=env.tmp,
                          env=subprocess_env(case.env), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == (2 if case.error is None else 1), proc.stderr
    lines = proc.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if re.match(r"dbtest( \w+)?: error: ", line)]
    assert len(errors) == 1, proc.stderr
    if case.error is not None:  # anything after the error line is part of its message
        assert all(line.startswith("  ") for line in lines[errors[0] + 1:]), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    check_message(case, "\n".join(lines[errors[0]:]), fill)
    assert not left_behind(cache, files)
    if env.url:
        assert databases(env.url) == dbs
        with psycopg.connect(env.url_for("sweep_seed")) as conn:  # all or nothing
            assert conn.execute("SELECT count(*) FROM things").fetchone() == (0,)


@pytest.mark.parametrize("case", PROJECT_CASES)
def test_fixture_bad_input(case: Case, project_run: ProjectRun) -> None:
    test_name = "test_" + case.id.replace("-", "_")
    assert test_name in project_run.results, project_run.output[-3000:]
    found = project_run.results[test_name]
    assert case.error is not None
    assert found["type"] == f"{case.error.__module__}.{case.error.__qualname__}", found
    check_message(case, found["message"])


def test_fixture_runs_leave_nothing_and_show_no_password(project_run: ProjectRun) -> None:
    assert project_run.passed, project_run.output[-3000:]  # the good test still passes
    assert SECRET not in project_run.output
    # failed builds are dropped, worker and fresh databases too: only templates stay
    assert not project_run.new_databases


# -- security (issue 9, item 5; data and socket dir modes are in test_provision.py) -------
def query(dsn: str, sql: str) -> Any:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def non_loopback_addresses() -> list[str]:
    """This machine's own IPv4 addresses other than 127.x (from the kernel's routing trie)."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return []
    return sorted({above.split()[-1] for above, line in itertools.pairwise(lines)
                   if "/32 host LOCAL" in line and not above.split()[-1].startswith("127.")})


def test_tcp_server_listens_on_loopback_only(sweep: Sweep) -> None:
    assert query(sweep.dsn(), "SHOW listen_addresses") == "127.0.0.1"
    port = sweep.server.params.port
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it does listen there
    for address in non_loopback_addresses():  # ...and nowhere else
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=5).close()


def test_tcp_needs_the_generated_password(sweep: Sweep) -> None:
    params = sweep.server.params
    assert params.password and len(params.password) >= 16 and params.password != SECRET
    # TCP is not "trust": without the password the server refuses
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=params.port, user="postgres", dbname="postgres",
                        passfile="/dev/null", connect_timeout=5)


def test_server_log_holds_no_credentials(sweep: Sweep) -> None:
    # the roles were created with SECRET, and a login with a wrong password fails
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(sweep.dsn().replace(str(sweep.server.params.password), SECRET))
    log = Path(sweep.server.details["log"])
    deadline = time.monotonic() + 5
    while "password authentication failed" not in log.read_text() and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    text = log.read_text()
    assert "password authentication failed" in text  # the right log
    assert SECRET not in text and str(sweep.server.params.password) not in text


def test_detached_state_file_is_private(tmp_path: Path, sweep: Sweep) -> None:
    from urllib.parse import unquote, urlsplit

    cache = tmp_path / "cache"
    cache.mkdir()
    # the run's cached clusters: a warm start, and up.json lands in this folder only
    (cache / "clusters").symlink_to(resolve().cache_dir / "clusters")
    settings = resolve({"cache_dir": cache, "backend": "local"})
    commands.up(settings, detach=True, port=0)
    try:
        state = cache / commands.STATE_FILE
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        (record,) = json.loads(state.read_text())["servers"]  # one record per project
        password = unquote(urlsplit(record["url"]).password or "")
        # it holds the generated password (hence 0600), not the other server's
        assert len(password) >= 16 and password != sweep.server.params.password
        assert query(record["dsn"], "SHOW listen_addresses") == "127.0.0.1"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(record["dsn"].replace(password, SECRET), connect_timeout=5)
        log = (Path(record["run_dir"]) / "postgres.log").read_text()
        assert password not in log and SECRET not in log
    finally:
        commands.down(settings)
    assert not state.exists() and not lifetime.pid_alive(record["pid"])


def test_doctor_masks_the_url(sweep: Sweep, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dbtest", "--url", sweep.url, "doctor"],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "sweep:***@127.0.0.1" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr


def test_identifiers_are_quoted(sweep: Sweep) -> None:
    name = 'sweep"; DROP DATABASE sweep_src; --'
    sweep.server.create_database(name, purpose="test")
    dbtest.save_snapshot(sweep.url, name, "quoted")
    dbtest.restore_snapshot(sweep.url, "quoted")
    dbtest.drop_snapshot(sweep.url, "quoted")
    sweep.server.drop_database(name)
    assert "sweep_src" in databases(sweep.dsn()) and name not in databases(sweep.dsn())
