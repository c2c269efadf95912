"""Migration checks on the example history (passes) and on throwaway broken histories."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import psycopg
import pytest

from dbtest._migrations_check import (
    assert_migrations,
    check_migrations,
    migrations_check_command,
)
from dbtest.errors import ConfigError, DbAssertionError
from dbtest.provision._server import PostgresServer
from dbtest.settings import Settings

EXAMPLE_INI = Path(__file__).parent.parent / "migrations_example" / "alembic.ini"

ENV = '''
import importlib.util
import pathlib

from alembic import context

here = pathlib.Path(__file__).parent
spec = importlib.util.spec_from_file_location("models_" + str(abs(hash(str(here)))),
                                              here / "models.py")
models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(models)

conn = context.config.attributes["connection"]
context.configure(connection=conn, target_metadata=models.metadata)
with context.begin_transaction():
    context.run_migrations()
'''

MODELS = '''
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("teams", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("name", sa.Text, nullable=False){extra})
'''

REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{up}


def downgrade():
{down_body}
'''

R1_UP = ('    op.create_table("teams", sa.Column("id", sa.Integer, primary_key=True),\n'
         '                    sa.Column("name", sa.Text, nullable=False))')
R1_DOWN = '    op.drop_table("teams")'
R2_UP = '    op.add_column("teams", sa.Column("city", sa.Text))'
R2_DOWN = '    op.drop_column("teams", "city")'


def history(root: Path, revisions: list[tuple[str, str | None, str, str]],
            extra_model: str = ', sa.Column("city", sa.Text)') -> Path:
    """Write an Alembic project: alembic.ini, env.py, models.py and the revisions."""
    versions = root / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text(textwrap.dedent(f"""
        [alembic]
        script_location = {root}
    """))
    (root / "env.py").write_text(ENV)
    (root / "models.py").write_text(MODELS.format(extra=extra_model))
    for rev, down, up, down_body in revisions:
        (versions / f"{rev}.py").write_text(REVISION.format(rev=rev, down=down, up=up,
                                                            down_body=down_body))
    return root / "alembic.ini"


GOOD = [("r1", None, R1_UP, R1_DOWN), ("r2", "r1", R2_UP, R2_DOWN)]


def _open_dbs(server: PostgresServer) -> list[str]:
    """This process's check databases still on the server (none once a check is done)."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (f"dbtest_mc_{os.getpid()}_",)).fetchall()]


def test_example_history_passes(dbtest_server: PostgresServer) -> None:
    report = assert_migrations(dbtest_server, EXAMPLE_INI)
    assert report.ok and report.revisions[0] == "0001_roles_users"
    assert [r.check for r in report.results] == ["single head", "upgrade", "stairway",
                                                 "model drift"]
    assert "ok    model drift: models match head" in str(report)
    assert not _open_dbs(dbtest_server)  # the check database is gone


def test_good_throwaway_history_passes(dbtest_server: PostgresServer, tmp_path: Path) -> None:
    assert check_migrations(dbtest_server, history(tmp_path, GOOD)).ok


def test_downgrade_that_forgets_something(dbtest_server: PostgresServer, tmp_path: Path
                                          ) -> None:
    ini = history(tmp_path, [GOOD[0], ("r2", "r1", R2_UP, "    pass")])
    report = check_migrations(dbtest_server, ini)
    assert [(f.check, f.revision) for f in report.failures] == [("stairway", "r2")]
    detail = report.failures[0].detail
    assert "downgrade of r2 does not undo its upgrade" in detail
    assert "+ column city text" in detail
    assert not _open_dbs(dbtest_server)


def test_downgrade_that_fails(dbtest_server: PostgresServer, tmp_path: Path) -> None:
    broken = '    op.drop_column("teams", "town")'
    ini = history(tmp_path, [GOOD[0], ("r2", "r1", R2_UP, broken)])
    report = check_migrations(dbtest_server, ini)
    failure = report.failures[0]
    assert (failure.check, failure.revision) == ("stairway", "r2")
    assert failure.detail.startswith("downgrade of r2 (to r1) failed: ")
    assert "town" in failure.detail
    with pytest.raises(DbAssertionError, match=r"FAIL  stairway \[r2\]"):
        assert_migrations(dbtest_server, ini)


def test_model_drift_names_the_difference(dbtest_server: PostgresServer, tmp_path: Path
                                          ) -> None:
    ini = history(tmp_path, GOOD, extra_model=', sa.Column("city", sa.Text), '
                                              'sa.Column("founded", sa.Integer)')
    report = check_migrations(dbtest_server, ini)
    assert [(f.check, f.revision) for f in report.failures] == [("model drift", "r2")]
    assert "column teams.founded: in the models, missing after migrating" in \
        report.failures[0].detail


def test_two_heads(dbtest_server: PostgresServer, tmp_path: Path) -> None:
    ini = history(tmp_path, [*GOOD, ("r3a", "r2", "    pass", "    pass"),
                             ("r3b", "r2", "    pass", "    pass")])
    report = check_migrations(dbtest_server, ini)
    assert [f.check for f in report.failures] == ["single head"]
    assert "2 heads: r3a (r3a.py), r3b (r3b.py)" in report.failures[0].detail


def test_upgrade_failure_names_the_revision(dbtest_server: PostgresServer, tmp_path: Path
                                            ) -> None:
    ini = history(tmp_path, [GOOD[0], ("r2", "r1", '    op.execute("SELEC 1")', "    pass")])
    report = check_migrations(dbtest_server, ini)
    failure = report.failures[0]
    assert (failure.check, failure.revision) == ("upgrade", "r2")
    assert "upgrade to r2 (r2.py) failed: " in failure.detail and "SELEC" in failure.detail


def test_command(dbtest_server: PostgresServer, tmp_path: Path) -> None:
    settings = Settings(url=dbtest_server.url, root=tmp_path)
    ini = history(tmp_path / "h", GOOD)
    assert migrations_check_command(settings, str(ini)).ok
    with pytest.raises(ConfigError, match=r"needs an alembic\.ini"):
        migrations_check_command(settings)
    with pytest.raises(ConfigError, match="unknown migration check"):
        check_migrations(dbtest_server, ini, checks=["stairs"])
