"""The server starts in a background thread while pytest collects (issue 15): it is
handed to the first fixture that needs it, its error surfaces in the main thread, and it
is stopped when no selected test needs it."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

pytest_plugins = ["pytester"]

# Records what the background start did, from a conftest: the dbtest state at the end of
# collection, and after dbtest's own pytest_unconfigure whether its socket folder is gone.
PROBE = '''
import os
import pytest
from dbtest.plugin import WORKSPACE_KEY


def pytest_collection_finish(session):
    state = session.config.stash[WORKSPACE_KEY]
    session.config._probe = state.prestart
    print(f"probe: prestarted={state.prestart is not None}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_unconfigure(config):
    pre = getattr(config, "_probe", None)
    server = None
    if pre is not None:
        pre.join()
        ws = pre.workspace
        server = ws._server if ws is not None else None
    yield
    if server is not None:
        gone = not os.path.exists(server.params.host)
        print(f"probe: started in background, stopped={gone}")
'''

DB_TESTS = '''
def test_one(db):
    assert db.connection().exec_driver_sql("select 1").scalar() == 1

def test_two(db_connection):
    assert db_connection.exec_driver_sql("select 2").scalar() == 2
'''


def _project(p: pytest.Pytester, settings: str = "") -> pytest.Pytester:
    p.makefile(".toml", pyproject=textwrap.dedent(f'''
        [tool.dbtest]
        {settings}
    '''))
    p.makeconftest(PROBE)
    return p


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-W",
                                   "error::pytest.PytestUnhandledThreadExceptionWarning", *args)


@pytest.mark.parametrize("mode", ["auto", "items"])
def test_database_tests_use_the_background_start(pytester: pytest.Pytester, mode: str
                                                 ) -> None:
    p = _project(pytester)
    p.makepyfile(test_db=DB_TESTS)
    result = run(p, f"--dbtest-prestart={mode}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["probe: prestarted=True", "*server: PostgreSQL*"])


def test_off_starts_on_first_use(pytester: pytest.Pytester) -> None:
    p = _project(pytester)
    p.makepyfile(test_db=DB_TESTS)
    result = run(p, "--dbtest-prestart=off")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["probe: prestarted=False", "*server: PostgreSQL*"])


def test_no_database_test_stops_the_speculative_start(pytester: pytest.Pytester) -> None:
    p = _project(pytester)
    p.makepyfile(test_plain="def test_plain():\n    assert True\n",
                 test_db=DB_TESTS)
    # [tool.dbtest] exists: auto starts at session start; -k leaves no database test
    result = run(p, "-k", "plain")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["probe: prestarted=True"])
    result.stdout.no_fnmatch_line("*started in background, stopped=False*")
    result.stdout.no_fnmatch_line("*server: PostgreSQL*")


def test_without_tool_dbtest_nothing_starts_for_plain_tests(pytester: pytest.Pytester
                                                            ) -> None:
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["probe: prestarted=False"])


def test_an_error_of_the_background_start_surfaces_in_the_tests(pytester: pytest.Pytester
                                                                ) -> None:
    # nothing listens on port 9 of localhost: connecting fails at once
    p = _project(pytester, 'backend = "url"\nurl = "postgresql://nobody@127.0.0.1:9/x"')
    p.makepyfile(test_db=DB_TESTS)
    result = run(p)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["probe: prestarted=True",
                                 "*ProvisionError: cannot connect to DBTEST_URL/url*"])
    out = result.stdout.str() + result.stderr.str()
    assert "Exception in thread" not in out
    assert "PytestUnhandledThreadExceptionWarning" not in out


def test_an_error_of_the_speculative_start_is_silent_when_unused(
        pytester: pytest.Pytester) -> None:
    p = _project(pytester, 'backend = "url"\nurl = "postgresql://nobody@127.0.0.1:9/x"')
    p.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = run(p)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["probe: prestarted=True"])
    assert "ProvisionError" not in result.stdout.str()


# the first database test finds SQLAlchemy imported and the heap frozen; objects the tests
# make are still collected (a cycle made in a test is freed by the next gc.collect())
FROZEN_TESTS = '''
import gc
import sys
import weakref


class Node:
    pass


EARLIER = []


def test_garbage_before_the_first_database_test():
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    EARLIER.append(weakref.ref(a))


def test_db_first(db):
    assert "sqlalchemy.orm" in sys.modules and "psycopg" in sys.modules
    assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
    # collected before the freeze, not frozen with the live objects
    assert EARLIER[0]() is None


def test_cycles_made_by_tests_are_collected():
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    gc.collect()
    assert ref() is None
'''


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_imports_warmed_and_heap_frozen_before_the_first_database_test(
        pytester: pytest.Pytester, mode: str) -> None:
    p = _project(pytester)
    p.makepyfile(test_frozen=FROZEN_TESTS)
    result = run(p, f"--dbtest-prestart={mode}")
    result.assert_outcomes(passed=3)


def test_a_run_without_database_tests_freezes_nothing(pytester: pytest.Pytester) -> None:
    p = _project(pytester)
    p.makepyfile(test_plain='''
        import gc
        import sys

        def test_plain():
            assert gc.get_freeze_count() == 0
            assert "sqlalchemy.orm" not in sys.modules
    ''')
    result = run(p)
    result.assert_outcomes(passed=1)


def test_a_speculative_start_waits_then_does_nothing_once_cancelled() -> None:
    # the end of collection (cancel) within the delay: the workspace is never made, so a
    # configured project's run without database tests pays nothing for the start
    from dbtest._prestart import Prestart

    made: list[int] = []

    def make() -> Any:
        made.append(1)
        return object()

    pre = Prestart(make, delay=30.0)
    pre.cancel()
    pre._thread.join(timeout=5)
    assert not pre._thread.is_alive() and made == [] and pre.workspace is None
    pre.close()  # nothing to stop


def test_a_speculative_start_begins_at_once_when_a_test_needs_the_server() -> None:
    import threading

    from dbtest._prestart import Prestart

    started = threading.Event()

    def make() -> Any:
        started.set()
        raise RuntimeError("boom")

    pre = Prestart(make, delay=30.0)
    pre.needed()
    assert started.wait(timeout=5)
    with pytest.raises(RuntimeError, match="boom"):
        pre.result()


def test_a_cancelled_start_still_serves_a_test_that_asks_late(pytester: pytest.Pytester
                                                              ) -> None:
    # no collected test names a database fixture, so the start is cancelled; a test that
    # asks for one by name at run time gets a workspace all the same
    p = _project(pytester)
    p.makepyfile(test_late='''
        def test_late(request):
            db = request.getfixturevalue("db")
            assert db.connection().exec_driver_sql("select 3").scalar() == 3
    ''')
    result = run(p)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["probe: prestarted=True", "*server: PostgreSQL*"])
