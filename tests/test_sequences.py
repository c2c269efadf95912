"""``reset_sequences``: each savepoint test starts with the template's sequence state."""

from __future__ import annotations

import pytest

SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
CREATE SCHEMA "odd-schema";
CREATE SEQUENCE "odd-schema"."it's" START 100;
INSERT INTO users (name) VALUES ('seeded');
"""

TESTS = '''
import pytest
from sqlalchemy import text

@pytest.mark.parametrize("run", range(3))
def test_the_next_id_follows_the_seeded_rows(db, run):
    new = db.execute(text("INSERT INTO users (name) VALUES ('x') RETURNING id")).scalar()
    db.commit()  # a savepoint: rolled back with the test
    assert new == 2
    assert db.execute(text("""SELECT nextval('"odd-schema"."it''s"')""")).scalar() == 100

async def test_async_too(async_db):
    new = (await async_db.execute(text("INSERT INTO users (name) VALUES ('y') RETURNING id")))
    assert new.scalar() == 2
'''


def _project(pytester: pytest.Pytester, reset: bool) -> None:
    pytester.makefile(".sql", schema=SCHEMA)
    pytester.makepyprojecttoml(f'[tool.dbtest]\nschema = "sql:schema.sql"\n'
                               f'reset_sequences = {str(reset).lower()}\n'
                               '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
                               'asyncio_default_fixture_loop_scope = "session"\n')
    pytester.makepyfile(test_ids=TESTS)


def test_each_test_gets_the_templates_sequences(pytester: pytest.Pytester) -> None:
    _project(pytester, reset=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=4)


def test_without_it_ids_go_on_from_test_to_test(pytester: pytest.Pytester) -> None:
    _project(pytester, reset=False)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=3)


def test_the_setting_takes_booleans_only() -> None:
    from dbtest.errors import ConfigError
    from dbtest.settings import resolve

    assert resolve({"reset_sequences": "yes"}, read_env=False, pyproject=None).reset_sequences
    assert not resolve({"reset_sequences": False}, read_env=False, pyproject=None
                       ).reset_sequences
    with pytest.raises(ConfigError, match=r"reset_sequences.*true or false"):
        resolve({"reset_sequences": "sometimes"}, read_env=False, pyproject=None)
