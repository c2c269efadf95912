"""A small FastAPI app over the example schema: register, log in, list posts.

The database session comes from the ``get_session`` dependency, built lazily from the
``DATABASE_URL`` environment variable (asyncpg). Tests replace it with
``app.dependency_overrides[get_session] = ...`` to hand the app their own session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from migrations_example.db import database_url
from migrations_example.models import Post, Role, User
from migrations_example.security import hash_password, make_token, verify_password

__all__ = [
    "LoginIn",
    "PostOut",
    "PostPage",
    "RegisterIn",
    "TokenOut",
    "UserCreated",
    "app",
    "get_session",
]

# Built on first use, not at import: importing the app (e.g. in a test that overrides
# get_session) must not need DATABASE_URL.
_engine: AsyncEngine | None = None
_sessions: async_sessionmaker[AsyncSession] | None = None


def _sessionmaker() -> async_sessionmaker[AsyncSession]:
    global _engine, _sessions
    if _sessions is None:
        _engine = create_async_engine(database_url("asyncpg"))
        # expire_on_commit=False: attributes stay readable after commit without a lazy load,
        # which an AsyncSession cannot do implicitly.
        _sessions = async_sessionmaker(_engine, expire_on_commit=False)
    return _sessions


async def get_session() -> AsyncIterator[AsyncSession]:
    """One ``AsyncSession`` per request."""
    async with _sessionmaker()() as session:
        yield session


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global _engine, _sessions
    yield
    if _engine is not None:
        await _engine.dispose()
        _engine, _sessions = None, None


app = FastAPI(title="dbtest example app", lifespan=_lifespan)
SessionDep = Annotated[AsyncSession, Depends(get_session)]

# A deliberately loose check (one @, a dot in the domain); real apps use email-validator.
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class RegisterIn(BaseModel):
    email: str = Field(pattern=_EMAIL, max_length=320)
    password: str = Field(min_length=8, max_length=200)
    username: str = Field(min_length=1, max_length=64)


class UserCreated(BaseModel):
    id: int


class LoginIn(BaseModel):
    email: str
    password: str


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"


class PostOut(BaseModel):
    id: int
    title: str
    body: str
    author: str
    created_at: datetime


class PostPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[PostOut]


@app.post("/register", status_code=status.HTTP_201_CREATED)
async def register(data: RegisterIn, session: SessionDep) -> UserCreated:
    """Create a user with the ``member`` role (if that role exists); 409 if the email is taken."""
    email = data.email.lower()
    role_id = await session.scalar(select(Role.id).where(Role.name == "member"))
    user = User(
        email=email,
        username=data.username,
        password_hash=hash_password(data.password),
        role_id=role_id,
    )
    try:
        # The unique constraint decides, not a SELECT beforehand: two concurrent requests for
        # the same email would both pass a SELECT. The SAVEPOINT confines the failed INSERT, so
        # the session's transaction stays usable. Email is the only constraint that validated
        # input can violate.
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, "email already registered") from None
    user_id = user.id
    await session.commit()
    return UserCreated(id=user_id)


@app.post("/login")
async def login(data: LoginIn, session: SessionDep) -> TokenOut:
    """Return a bearer token for a correct email and password; 401 otherwise."""
    user = await session.scalar(select(User).where(User.email == data.email.lower()))
    if user is None or not verify_password(data.password, user.password_hash):
        # One message for both cases, so the endpoint does not reveal which emails exist.
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid email or password")
    return TokenOut(token=make_token(user.id))


@app.get("/posts")
async def list_posts(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PostPage:
    """Published posts, newest first, with their author's username and the total count."""
    published = Post.published.is_(True)
    total = await session.scalar(select(func.count()).select_from(Post).where(published))
    rows = await session.execute(
        select(Post.id, Post.title, Post.body, Post.created_at, User.username)
        .join(User, Post.author_id == User.id)
        .where(published)
        # id breaks ties: rows made in one transaction share now(), and paging needs a total
        # order or a post could show on two pages (or none).
        .order_by(Post.created_at.desc(), Post.id.desc())
        .limit(limit)
        .offset(offset)
    )
    items = [
        PostOut(id=r.id, title=r.title, body=r.body, author=r.username, created_at=r.created_at)
        for r in rows
    ]
    return PostPage(total=total or 0, limit=limit, offset=offset, items=items)
