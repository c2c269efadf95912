"""Migration checks: single head, upgrade base -> head, the stairway, model drift.

All checks share one throwaway database (marked as dbtest's, dropped at the end) and
run through the project's own ``env.py``:

- **single head**: the history has exactly one head;
- **upgrade**: every revision upgrades, base to head, one at a time;
- **stairway**: for every revision, upgrade, downgrade one step, upgrade again; the
  downgrade must bring the schema back to what it was before the upgrade (compared with
  :func:`dbtest.schema_state`), and the second upgrade must succeed and match the first;
- **model drift**: at head, Alembic's autogenerate comparison against the models
  (``target_metadata`` of env.py, or ``models_metadata``) finds nothing.

PostgreSQL DDL is transactional, so a failing step rolls back and the database stays
where it was; after a downgrade that leaves the wrong schema the database is rebuilt
from scratch (the rare path) and the checks go on, so one run names every broken
revision. Each failure names the revision and what differs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest._databases import admin_connection, create_database, drop_database
from dbtest._templates import copy_strategy
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from dbtest.provision import PostgresServer
    from dbtest.settings import Settings

__all__ = ["CHECKS", "CheckResult", "MigrationReport", "assert_migrations",
           "check_migrations", "migrations_check_command"]

CHECKS = ("single head", "upgrade", "stairway", "model drift")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check (for one revision, when it failed on one)."""

    check: str
    ok: bool
    detail: str
    revision: str | None = None


@dataclass
class MigrationReport:
    """Every check's result; ``str()`` is the printable report."""

    ini: str
    revisions: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [r for r in self.results if not r.ok]

    def __str__(self) -> str:
        lines = [f"migration checks of {self.ini} ({len(self.revisions)} revisions, "
                 f"{self.seconds * 1000:.0f} ms):"]
        for r in self.results:
            where = f" [{r.revision}]" if r.revision else ""
            body = r.detail.replace("\n", "\n        ")
            lines.append(f"  {'ok  ' if r.ok else 'FAIL'}  {r.check}{where}: {body}")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`DbAssertionError` with the report when a check failed."""
        __tracebackhide__ = True
        if not self.ok:
            raise DbAssertionError(str(self))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return f"{type(orig).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class _Runner:
    """Runs Alembic steps through env.py on one database."""

    def __init__(self, server: PostgresServer, ini: Path) -> None:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        self.server = server
        self.config = Config(str(ini))
        try:
            self.script = ScriptDirectory.from_config(self.config)
        except Exception as exc:
            raise ConfigError(f"{ini}: cannot read the Alembic scripts: {exc}") from None
        self.db = f"dbtest_mc_{os.getpid()}_{secrets.token_hex(4)}"
        self.engine: Engine | None = None
        self.conn: Connection | None = None

    def open(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.close()
        with admin_connection(self.server.dsn) as admin:
            with contextlib.suppress(Exception):  # none yet, or left by a crash
                drop_database(admin, self.db)
            create_database(admin, self.db, purpose="migrations-check",
                            strategy=copy_strategy(self.server, admin))
        url = self.server.url_for(self.db)
        self.config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        self.engine = create_engine(url, poolclass=NullPool)
        self.conn = self.engine.connect()
        self.config.attributes["connection"] = self.conn

    def close(self, drop: bool = False) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        if drop:
            with admin_connection(self.server.dsn) as admin:
                drop_database(admin, self.db, wait=1.0)

    def run(self, fn: Callable[[Any, Any], Any], destination: str | None = None) -> None:
        """Run env.py with ``fn`` deciding the steps, in one committed transaction."""
        from alembic.runtime.environment import EnvironmentContext

        assert self.conn is not None
        with self.conn.begin(), EnvironmentContext(self.config, self.script, fn=fn,
                                                   as_sql=False, destination_rev=destination):
            self.script.run_env()

    def upgrade(self, revision: str) -> None:
        self.run(lambda rev, ctx: self.script._upgrade_revs(revision, rev), revision)

    def downgrade(self, revision: str) -> None:
        self.run(lambda rev, ctx: self.script._downgrade_revs(revision, rev), revision)

    def schema(self) -> str:
        from dbtest.state import schema_state

        assert self.conn is not None
        state = schema_state(self.conn)
        self.conn.rollback()
        return "\n".join("\n".join([b.title, *("  " + ln for ln in b.lines)])
                         for b in state.blocks()
                         if b.name not in ("table alembic_version", "empty schema"))

    def drift(self, metadata: Any) -> list[Any] | None:
        """Autogenerate's differences at the current revision (None: no metadata known)."""
        from alembic.autogenerate import compare_metadata

        found: list[list[Any] | None] = []

        def compare(rev: Any, context: Any) -> list[Any]:
            md = metadata if metadata is not None else context.opts.get("target_metadata")
            found.append(None if md is None else list(compare_metadata(context, md)))
            return []

        self.run(compare)
        return found[0] if found else None


def _diff(before: str, after: str) -> str:
    from dbtest.state import SchemaState, diff_texts

    lines = diff_texts(before, after, kind=SchemaState)
    return "\n".join(lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20
                                   else []))


def _describe_drift(diff: Any) -> str:
    if isinstance(diff, list):
        return "; ".join(_describe_drift(d) for d in diff)
    op, *args = diff
    what = {"add": "in the models, missing after migrating",
            "remove": "after migrating, missing from the models"}
    verb, _, kind = op.partition("_")
    if verb in what and len(args) == 1:
        obj = args[0]
        table = getattr(getattr(obj, "table", None), "name", None)
        name = getattr(obj, "name", None) or repr(obj)
        return f"{kind} {name}{f' on {table}' if table else ''}: {what[verb]}"
    if verb in what and len(args) == 3:
        return f"{kind} {args[1]}.{getattr(args[2], 'name', args[2])}: {what[verb]}"
    if verb == "modify" and len(args) >= 6:
        _, table, column, _, db_value, model_value = args[:6]
        return f"column {table}.{column} {kind}: database {db_value!r}, models {model_value!r}"
    return repr(diff)


def check_migrations(server: PostgresServer | str, alembic_ini: str | Path,
                     models_metadata: Any = None, *, checks: Sequence[str] = CHECKS
                     ) -> MigrationReport:
    """Run the migration checks of ``alembic_ini`` on ``server`` (a server or URL).

    ``models_metadata`` (a MetaData or declarative Base) is what the migrated schema must
    match; default: env.py's ``target_metadata``. ``checks`` picks among :data:`CHECKS`.
    """
    from dbtest.snapshots import resolve_server

    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ConfigError(f"unknown migration check(s) {unknown}; known: {', '.join(CHECKS)}")
    ini = Path(alembic_ini)
    if not ini.is_file():
        raise ConfigError(f"{ini} does not exist; point at your alembic.ini")
    started = time.perf_counter()
    runner = _Runner(resolve_server(server), ini)
    revs = list(reversed(list(runner.script.walk_revisions("base", "heads"))))
    report = MigrationReport(str(ini), [r.revision for r in revs])
    heads = sorted(runner.script.get_heads())
    if len(heads) > 1:
        paths = [str(getattr(runner.script.get_revision(h), "path", "")) for h in heads]
        files = ", ".join(f"{h} ({Path(p).name})" for h, p in zip(heads, paths, strict=True))
        report.results.append(CheckResult("single head", False, f"{len(heads)} heads: {files}. "
                                          f"Merge them: alembic merge heads -m merge"))
        report.seconds = time.perf_counter() - started
        return report
    if "single head" in checks:
        report.results.append(CheckResult("single head", True, heads[0] if heads else "empty"))
    metadata = getattr(models_metadata, "metadata", models_metadata)
    try:
        _walk(runner, revs, checks, report, metadata)
    finally:
        runner.close(drop=True)
    report.seconds = time.perf_counter() - started
    return report


def _walk(runner: _Runner, revs: list[Any], checks: Sequence[str], report: MigrationReport,
          metadata: Any) -> None:
    stairway = "stairway" in checks
    failed_stairs = 0
    runner.open()
    before = runner.schema() if stairway else ""
    for rev in revs:
        try:
            runner.upgrade(rev.revision)
        except Exception as exc:
            report.results.append(CheckResult(
                "upgrade", False, f"upgrade to {rev.revision} ({Path(rev.path).name}) failed: "
                f"{_first_line(exc)}", rev.revision))
            return  # nothing after it can be checked
        if not stairway:
            continue
        after = runner.schema()
        down = rev.down_revision
        if isinstance(down, (tuple, list)):
            before = after  # a merge point: "one step down" is ambiguous, skip it
            continue
        problem = _stair(runner, rev.revision, down or "base", before)
        if problem:
            failed_stairs += 1
            report.results.append(CheckResult("stairway", False, problem, rev.revision))
            runner.open()  # start over on a clean database, at this revision
            runner.upgrade(rev.revision)
        before = after
    if "upgrade" in checks:
        report.results.append(CheckResult("upgrade", True, f"base -> head, {len(revs)} "
                                                           f"revision(s)"))
    if stairway and not failed_stairs:
        report.results.append(CheckResult("stairway", True, f"{len(revs)} revision(s) up, down "
                                                            f"and up again"))
    if "model drift" in checks:
        head = revs[-1].revision if revs else None
        diffs = runner.drift(metadata)
        if diffs is None:
            report.results.append(CheckResult("model drift", True, "skipped: no models (env.py "
                                              "has no target_metadata; pass models_metadata)"))
        elif diffs:
            body = "\n".join("- " + _describe_drift(d) for d in diffs)
            report.results.append(CheckResult(
                "model drift", False, f"the models and the migrated schema differ "
                f"({len(diffs)}); write a migration (alembic revision --autogenerate):\n{body}",
                head))
        else:
            report.results.append(CheckResult("model drift", True, "models match head"))


def _stair(runner: _Runner, revision: str, down: str, before: str) -> str | None:
    try:
        runner.downgrade(down)
    except Exception as exc:
        return f"downgrade of {revision} (to {down}) failed: {_first_line(exc)}"
    now = runner.schema()
    if now != before:
        return (f"downgrade of {revision} does not undo its upgrade; the schema after "
                f"downgrading differs from before upgrading (- before, + after downgrade):\n"
                + _diff(before, now))
    try:
        runner.upgrade(revision)
    except Exception as exc:
        return f"upgrade to {revision} after its downgrade failed: {_first_line(exc)}"
    # no need to compare again: the downgrade restored the exact schema the first upgrade
    # started from, so the second upgrade rebuilt what the first one did
    return None


def assert_migrations(server: PostgresServer | str, alembic_ini: str | Path,
                      models_metadata: Any = None, *, checks: Sequence[str] = CHECKS
                      ) -> MigrationReport:
    """:func:`check_migrations`, raising an ``AssertionError`` with the report on failure.

    >>> def test_migrations(dbtest_server):                      # doctest: +SKIP
    ...     assert_migrations(dbtest_server, "alembic.ini")
    """
    __tracebackhide__ = True
    report = check_migrations(server, alembic_ini, models_metadata, checks=checks)
    report.raise_for_failures()
    return report


def migrations_check_command(settings: Settings, ini: str | None = None,
                             url: str | None = None, models: str | None = None
                             ) -> MigrationReport:
    """Check an Alembic history: single head, upgrade, stairway, model drift.

    ``dbtest migrations check``: runs every check; the CLI prints ``str(report)`` and
    exits 1 unless ``report.ok``.

    ``ini`` defaults to the ``alembic:`` schema setting; ``url`` (or the ``url``
    setting) names a server, else a throwaway one is started; ``models`` is
    ``module:attr`` of a MetaData or declarative Base (default: env.py's).
    """
    from dbtest._schema import module_attr, parse_schema_spec

    if ini is None:
        spec = parse_schema_spec(settings.schema) if settings.schema else None
        if spec is None or spec.kind != "alembic":
            raise ConfigError("dbtest migrations check needs an alembic.ini: pass it, or set "
                              "schema = \"alembic:path/alembic.ini\" in [tool.dbtest]")
        ini = spec.parts[0]
    path = Path(ini) if Path(ini).is_absolute() else settings.root / ini
    metadata = None
    if models:
        module, sep, attr = models.rpartition(":")
        if not sep or not module:
            raise ConfigError(f"--models {models!r} must be module:attr, e.g. myapp.models:Base")
        metadata = module_attr(module, attr, settings.root, models)
    if url or settings.url:
        return check_migrations(str(url or settings.url), path, metadata)
    from dbtest.provision import ephemeral_postgres

    with ephemeral_postgres(settings=settings) as server:
        return check_migrations(server, path, metadata)

