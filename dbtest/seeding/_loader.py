"""Loading seed sets into a connection's transaction: :func:`load_seeds`.

Each set runs with a :class:`SeedContext` (a Session on the connection, a seeded Faker, a
:class:`~dbtest.fakes.FastFaker`, the scale, factories bound to the session). The whole
load runs inside a SAVEPOINT: a failing set leaves nothing behind and the caller's
transaction stays usable. Rows per table come from ``pg_stat_xact_user_tables`` (what this
transaction inserted), so SQL sets, COPY and triggers are all counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dbtest._leaks import INTERNAL_SCHEMA
from dbtest.errors import DbtestError, SeedError, mask_url
from dbtest.seeding._report import SeedProgress, SeedReport
from dbtest.seeding._sets import SeedSet, resolve_sets

if TYPE_CHECKING:
    from faker import Faker
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from dbtest.factories import FactoryAccess
    from dbtest.fakes import FastFaker

__all__ = ["SeedContext", "load_seeds", "seed_for_set"]

#: factory-boy sequences start here while seeds load, clear of the 0.. that tests use
SEED_SEQUENCE_START = 1_000_000
_STATS_SQL = ("SELECT schemaname, relname, n_tup_ins FROM pg_stat_xact_user_tables "
              f"WHERE schemaname <> '{INTERNAL_SCHEMA}'")
_MODULES: dict[tuple[str, str], ModuleType] = {}


def seed_for_set(seed: int, name: str) -> int:
    """The random seed of set ``name`` under seed number ``seed`` (independent per set, so
    a set's rows do not depend on which other sets were loaded before it)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class SeedContext:
    """What a ``seed(ctx)`` function gets.

    ``session`` is a SQLAlchemy Session on ``connection`` (flush, never commit: the
    loader owns the transaction); ``faker`` a Faker seeded for this set and seed number;
    ``fast`` a :class:`~dbtest.fakes.FastFaker` (the same values ~50x faster); ``scale``
    the ``--scale`` multiplier; ``factories`` the factory-boy factories, bound to
    ``session`` while the set runs (``ctx.factories.UserFactory.create_batch(100)``).
    """

    connection: Connection
    session: Session
    faker: Faker
    fast: FastFaker
    scale: int
    seed: int
    name: str
    _progress: Callable[[int, int | None], None] | None = field(default=None, repr=False)
    _rows: int = field(default=0, repr=False, init=False)
    _total: int | None = field(default=None, repr=False, init=False)
    _factories: FactoryAccess | None = field(default=None, repr=False, init=False)

    @property
    def factories(self) -> FactoryAccess:
        """Factories bound to :attr:`session`: ``ctx.factories.UserFactory``,
        ``ctx.factories.create_batch(UserFactory, 500)`` (bulk above the threshold)."""
        if self._factories is None:
            from dbtest.factories import FactoryAccess

            self._factories = FactoryAccess(self.session)
        return self._factories

    def bulk_insert(self, table_or_model: Any, rows: Iterable[Any], *,
                    columns: Sequence[str] | None = None) -> int:
        """:func:`dbtest.bulk_insert` on this set's connection, counted in the progress."""
        from dbtest.bulk import bulk_insert

        count = bulk_insert(self.session, table_or_model, rows, columns=columns)
        self.progress(self._rows + count)
        return count

    def reserve_ids(self, table_or_model: Any, count: int, column: str = "id") -> list[int]:
        """``count`` values from the sequence behind ``column`` (serial or identity), for
        rows that other rows of the same load refer to before they are inserted."""
        from dbtest.factories import reserve_ids

        return reserve_ids(self.session, table_or_model, count, column)

    def progress(self, rows: int, total: int | None = None) -> None:
        """Tell the progress display that this set has written ``rows`` (of ``total``;
        a total given once is kept)."""
        self._rows = rows
        if total is not None:
            self._total = total
        if self._progress is not None:
            self._progress(rows, self._total)


def _stats(connection: Connection) -> dict[str, int]:
    out = {}
    for schema, table, inserted in connection.exec_driver_sql(_STATS_SQL):
        name = table if schema == "public" else f"{schema}.{table}"
        out[name] = int(inserted)
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: n - before.get(t, 0) for t, n in sorted(after.items()) if n > before.get(t, 0)}


def load_seeds(connection: Connection, names: Sequence[str], seeds_dir: Path, *,
               seed: int = 0, scale: int = 1,
               progress: Callable[[SeedProgress], None] | None = None) -> SeedReport:
    """Load the seed sets ``names`` (dependencies first, each once) into ``connection``'s
    current transaction. Flushes, never commits; on failure nothing is left behind and
    :class:`~dbtest.errors.SeedError` names the set, file, line and error.
    """
    if isinstance(names, str):
        names = [names]
    if not isinstance(scale, int) or scale < 1:
        raise SeedError(f"seed scale must be a whole number >= 1, got {scale!r}; pass "
                        f"--scale 1 or more (scale=...)")
    if not isinstance(seed, int) or seed < 0:
        raise SeedError(f"seed number must be a whole number >= 0, got {seed!r}; pass "
                        f"--seed 0 or more (seed=...)")
    seeds_dir = Path(seeds_dir)
    plan = resolve_sets(names, seeds_dir)
    root = str(seeds_dir.resolve().parent)  # seeds import the project's modules
    if root not in sys.path:
        sys.path.insert(0, root)
    started = time.perf_counter()
    report = SeedReport(sets=[s.name for s in plan], seed=seed, scale=scale)
    before = _stats(connection)
    outer = connection.begin_nested()
    try:
        with _factory_state():
            for index, item in enumerate(plan):
                if progress is not None:
                    progress(SeedProgress(item.name, index, len(plan), 0, None, "start"))
                set_before = _stats(connection)
                _run_set(connection, item, seed, scale, index, len(plan), progress)
                report.per_set[item.name] = _delta(set_before, _stats(connection))
                if progress is not None:
                    done = sum(report.per_set[item.name].values())
                    progress(SeedProgress(item.name, index, len(plan), done, done, "done"))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            if outer.is_active:
                outer.rollback()
        if isinstance(exc, Exception) and not isinstance(exc, SeedError):
            raise SeedError(f"loading seed sets {list(names)} failed: {exc}") from exc
        raise
    outer.commit()  # RELEASE SAVEPOINT: the rows stay in the caller's transaction
    report.rows = _delta(before, _stats(connection))
    report.seconds = time.perf_counter() - started
    return report


@contextlib.contextmanager
def _factory_state() -> Any:
    """Seeds get factory sequences from SEED_SEQUENCE_START and their own random state;
    the caller's (a test's) sequences and random state are restored afterwards."""
    try:
        from dbtest.factories import saved_factory_state
    except ImportError:  # pragma: no cover - factory-boy is a dependency
        yield
        return
    with saved_factory_state(SEED_SEQUENCE_START):
        yield


def _run_set(connection: Connection, item: SeedSet, seed: int, scale: int, index: int,
             count: int, progress: Callable[[SeedProgress], None] | None) -> None:
    try:
        if item.kind == "sql":
            _run_sql(connection, item)
        else:
            _run_python(connection, item, seed, scale, index, count, progress)
    except SeedError as exc:
        if str(exc).startswith("seed set "):
            raise
        raise SeedError(f"{_locate(item, exc)}: {exc}") from exc
    except Exception as exc:
        detail = _describe(exc, connection)
        # a missing table is fixed in the database (_describe says how), anything else in
        # the seed set
        fix = "" if "lacks the schema" in detail else " Fix the seed set and load it again."
        raise SeedError(f"{_locate(item, exc)} failed: {detail}. The load was rolled back: "
                        f"nothing was written.{fix}") from exc


def _run_sql(connection: Connection, item: SeedSet) -> None:
    from dbtest._sql import run_script

    run_script(connection, item.text)


def _import(item: SeedSet) -> ModuleType:
    key = (str(item.path), hashlib.sha256(item.text.encode()).hexdigest())
    module = _MODULES.get(key)
    if module is not None:
        return module
    mod_name = f"_dbtest_seed_{item.name.replace('-', '_')}_{key[1][:8]}"
    spec = importlib.util.spec_from_file_location(mod_name, item.path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise SeedError(f"{item.where}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    if not callable(getattr(module, "seed", None)):
        sys.modules.pop(mod_name, None)
        raise SeedError(f"{item.where} has no seed(ctx) function; define "
                        f"`def seed(ctx: dbtest.SeedContext) -> None`")
    _MODULES[key] = module
    return module


def _run_python(connection: Connection, item: SeedSet, seed: int, scale: int, index: int,
                count: int, progress: Callable[[SeedProgress], None] | None) -> None:
    from sqlalchemy.orm import Session

    from dbtest import fakes
    from dbtest.errors import require_extra
    from dbtest.factories import bind_session, seed_factories

    module = _import(item)
    own_seed = seed_for_set(seed, item.name)
    faker = require_extra("faker", "factories", f"seed set {item.name!r} (ctx.faker)").Faker()
    faker.seed_instance(own_seed)
    seed_factories(own_seed)  # factory.Faker, fuzzy and dbtest Fake declarations
    # create_savepoint: a seed's commit() or rollback() stays inside its own savepoint
    session = Session(bind=connection, join_transaction_mode="create_savepoint")

    def report(rows: int, total: int | None) -> None:
        if progress is not None:
            progress(SeedProgress(item.name, index, count, rows, total, "rows"))

    ctx = SeedContext(connection, session, faker, fakes.FastFaker(own_seed), scale, seed,
                      item.name, report)
    unbind = bind_session(session)
    try:
        module.seed(ctx)
        session.commit()  # flush + RELEASE of the session's savepoint, never a COMMIT
    finally:
        unbind()
        with contextlib.suppress(Exception):
            session.close()


def _locate(item: SeedSet, exc: BaseException) -> str:
    line = _line_of(item, exc)
    return f"{item.where[:-1]}, line {line})" if line else item.where


def _line_of(item: SeedSet, exc: BaseException) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename) == item.path:
        return exc.lineno
    if item.kind == "sql":
        orig = getattr(exc, "orig", exc)
        position = getattr(getattr(orig, "diag", None), "statement_position", None)
        if position:
            return item.text[: int(position)].count("\n") + 1
        return None
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if Path(frame.f_code.co_filename) == item.path:
            line = lineno  # the deepest frame in the seed file
    return line


def _describe(exc: BaseException, connection: Connection) -> str:
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or getattr(orig, "sqlstate", None)
    message = (getattr(diag, "message_primary", None) or str(orig)).strip().splitlines()[0]
    if sqlstate == "42P01":  # undefined_table
        database = mask_url(str(connection.engine.url.database))
        return (f"{message} in database {database!r}. The database lacks the schema: apply "
                f"it first (e.g. alembic upgrade head) or point --url at a migrated database")
    if isinstance(exc, DbtestError):
        return str(exc)
    detail = getattr(diag, "message_detail", None)
    text = f"{type(orig).__name__}: {message}"
    return f"{text} ({detail})" if detail else text
