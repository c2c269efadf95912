"""The example app's test setup: everything comes from dbtest's fixtures.

No engine, no session factory, no cleanup code: ``[tool.dbtest] schema`` in the repo's
``pyproject.toml`` points at ``migrations_example/alembic.ini``, so the suite runs on a
throwaway PostgreSQL migrated once, and every test's writes are rolled back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from migrations_example import security
from migrations_example.app import app, get_session


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # 600k PBKDF2 rounds cost ~0.14 s per hash: right for production, wasteful in tests
    monkeypatch.setattr(security, "PBKDF2_ITERATIONS", 1_000)
    yield


@pytest.fixture
async def client(async_db: AsyncSession) -> AsyncIterator[AsyncClient]:
    """An httpx client talking to the app, whose requests use this test's ``async_db``."""

    async def test_session() -> AsyncIterator[AsyncSession]:
        yield async_db

    app.dependency_overrides[get_session] = test_session
    try:
        async with AsyncClient(transport=ASGITransport(app=app),
                               base_url="http://test") as http:
            yield http
    finally:
        app.dependency_overrides.pop(get_session, None)
