"""What a user sees when something is wrong: secrets never printed, markers checked at
collection, settings errors once (pytester projects run in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

SECRET = "s3cr3t-pw"
URL = f"postgresql://acc:{SECRET}@127.0.0.1:1/x"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(app_models='''
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        class Base(DeclarativeBase):
            pass

        class Item(Base):
            __tablename__ = "items"
            id: Mapped[int] = mapped_column(primary_key=True)
    ''')
    pytester.makefile(".toml", pyproject=textwrap.dedent('''
        [tool.dbtest]
        schema = "metadata:app_models:Base"
        [tool.pytest.ini_options]
        pythonpath = ["."]
        asyncio_mode = "auto"
        asyncio_default_fixture_loop_scope = "session"
    '''))
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_password_of_an_unreachable_url_is_printed_nowhere(project: pytest.Pytester) -> None:
    project.makepyfile(test_db='''
        def test_db(db):
            pass

        def test_server(dbtest_server):
            pass
    ''')
    project._monkeypatch.setenv("DBTEST_URL", URL)
    result = run(project, "--tb=long", "--showlocals", "-rA")
    result.assert_outcomes(errors=2)
    out = result.stdout.str() + result.stderr.str()
    assert "ProvisionError" in out and "acc:***@127.0.0.1:1/x" in out
    assert SECRET not in out


@pytest.mark.parametrize("argv", [
    ["--url", URL, "up"], ["--url", URL, "clean"], ["snapshot", "list", "--url", URL],
    ["snapshot", "restore", "base", "--url", URL], ["--url", URL, "doctor"],
])
def test_password_never_printed_by_the_cli(argv: list[str], tmp_path: object) -> None:
    done = subprocess.run([sys.executable, "-m", "dbtest", *argv], capture_output=True,
                          text=True, timeout=120, cwd=str(tmp_path))
    assert done.returncode != 0
    assert "127.0.0.1" in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_marker_errors_are_collection_errors_naming_test_and_key(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_marker='''
        import pytest

        def test_fine():
            pass

        @pytest.mark.dbtest(isolaton="fresh")
        def test_typo():                  # no dbtest fixture: checked all the same
            pass
    ''')
    result = run(project)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting test_marker.py*",
                                 "*test_marker.py::test_typo: invalid @pytest.mark.dbtest "
                                 "arguments: unknown key 'isolaton' (did you mean "
                                 "'isolation'?)*"])


@pytest.mark.parametrize(("mark", "message"), [
    ('isolation="sometimes"', "*::test_x: @pytest.mark.dbtest(isolation='sometimes') must be "
                              "'savepoint' or 'fresh'*"),
    ("seeds=[1]", "*::test_x: @pytest.mark.dbtest(seeds=?1?) must be a seed set name*"),
    ('schema="nonsense"', "*::test_x: mark.dbtest(schema=...) = 'nonsense' is not a schema*"),
    ('"fresh"', "*::test_x: invalid @pytest.mark.dbtest arguments: positional*"),
])
def test_bad_marker_values(project: pytest.Pytester, mark: str, message: str) -> None:
    project.makepyfile(test_marker=f'''
        import pytest

        @pytest.mark.dbtest({mark})
        def test_x():
            pass
    ''')
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_engines_refuse_a_marker_schema_they_cannot_serve(project: pytest.Pytester) -> None:
    project.makepyfile(other_schema='''
        def create(connection):
            from sqlalchemy import text
            connection.execute(text("create table b_only (id int)"))
    ''', test_engine='''
        import pytest

        @pytest.mark.dbtest(schema="callable:other_schema:create")
        def test_mixed(db, db_engine):
            pass
    ''')
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_engine.py::test_mixed: @pytest.mark.dbtest(schema='callable:other_schema:"
        "create') cannot apply to db_engine: session-scoped*"])


def test_settings_error_stops_the_run_once_with_the_message_alone(
        project: pytest.Pytester) -> None:
    project.makefile(".toml", pyproject=textwrap.dedent('''
        [tool.dbtest]
        schemas = "metadata:app_models:Base"
        [tool.pytest.ini_options]
        asyncio_default_fixture_loop_scope = "session"
    '''))
    project.makepyfile(test_many='''
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_db(db, i):
            pass
    ''')
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert err.count("unknown key(s) in [tool.dbtest]: schemas (did you mean: schemas -> "
                     "schema?)") == 1, err
    assert "Traceback" not in err + result.stdout.str()
    assert len((err + result.stdout.str()).strip().splitlines()) < 15


def test_settings_error_under_xdist(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    project._monkeypatch.setenv("DBTEST_ISOLATION", "sometimes")
    project.makepyfile(test_many='''
        def test_db(db):
            pass
    ''')
    result = run(project, "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.str().count("DBTEST_ISOLATION must be one of") == 1
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
