"""``dbtest seed NAME... [--url URL] [--seed N] [--scale K] [--dry-run]`` as a function."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from dbtest.errors import SeedError, mask_url
from dbtest.seeding._report import ProgressLine, SeedReport

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["normalize_url", "seed_command"]


def normalize_url(url: str) -> tuple[str, dict[str, Any]]:
    """A SQLAlchemy URL for the psycopg 3 driver (and engine arguments) from any URL form:
    ``postgresql://``, ``postgres://``, ``postgresql+asyncpg://`` or a libpq conninfo."""
    text = url.strip()
    if "://" not in text:  # "host=... dbname=..." conninfo: let psycopg parse it
        import psycopg

        def creator() -> Any:
            return psycopg.connect(text)

        return "postgresql+psycopg://", {"creator": creator}
    scheme, rest = text.split("://", 1)
    base = scheme.split("+", 1)[0]
    if base not in ("postgresql", "postgres"):
        raise SeedError(f"--url {mask_url(url)!r} is not a PostgreSQL URL; use "
                        f"postgresql://user:password@host:port/dbname")
    return f"postgresql+psycopg://{rest}", {}


def seed_command(settings: Settings, names: Sequence[str], url: str | None = None,
                 seed: int = 0, scale: int = 1, dry_run: bool = False, progress: bool = True,
                 *, out: TextIO | None = None, err: TextIO | None = None) -> SeedReport:
    """Load seed sets into a database in one transaction: all or nothing.

    ``url`` defaults to the server ``dbtest up --detach`` left running. Shows a progress
    line on ``err`` (stderr) when ``progress``, prints the rows-per-table table on ``out``
    (stdout) and returns the :class:`SeedReport`. ``dry_run`` loads then rolls back.
    Ctrl-C rolls back and raises :class:`SeedError`; so does any failing set.

    :param names: seed sets to load
    :param url: the database (on the command line: the global ``--url``)
    :param seed: random seed (same seed, same rows)
    :param scale: multiplier for the sets' rows
    :param dry_run: load, report, then roll back
    :param progress: show a progress line on stderr
    :param out: where the rows-per-table table goes (default: stdout)
    :param err: where the progress line goes (default: stderr)
    """
    from dbtest.seeding._loader import load_seeds
    from dbtest.seeding._sets import available_sets, resolve_sets

    if not names:
        known = ", ".join(sorted(available_sets(settings.seeds))) or "none"
        raise SeedError(f"name at least one seed set to load; known sets in {settings.seeds}: "
                        f"{known}")
    resolve_sets(names, settings.seeds)  # unknown names and cycles fail before connecting
    if url is None:
        url = settings.url or _detached_url(settings)  # --url / DBTEST_URL, else `up`
    sa_url, engine_args = normalize_url(url)
    if str(settings.root) not in sys.path:
        sys.path.insert(0, str(settings.root))  # seeds import the project's own modules
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    shown = mask_url(url)
    engine = create_engine(sa_url, poolclass=NullPool, **engine_args)
    display = ProgressLine(err) if progress else None
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            # libpq's message spans lines ("\n\tIs the server running...?"): one line here
            reason = " ".join(s.strip() for s in str(exc.orig).splitlines() if s.strip())
            raise SeedError(f"cannot connect to {shown}: {reason.rstrip('?.')}. Check --url "
                            f"(or start a server with `dbtest up --detach`).") from None
        with conn:
            trans = conn.begin()
            try:
                report = load_seeds(conn, names, settings.seeds, seed=seed, scale=scale,
                                    progress=display)
            except KeyboardInterrupt:
                with contextlib.suppress(Exception):
                    trans.rollback()
                raise SeedError(f"interrupted (Ctrl-C) while seeding {shown}: rolled back, "
                                f"nothing was written") from None
            except BaseException:
                if trans.is_active:
                    trans.rollback()
                raise
            if dry_run:
                trans.rollback()
            else:
                trans.commit()
    finally:
        if display is not None:
            display.close()
        engine.dispose()
    report.dry_run, report.committed, report.database = dry_run, not dry_run, shown
    print(report.table(), file=out if out is not None else sys.stdout)
    return report


def _detached_url(settings: Settings) -> str:
    from dbtest.commands import detached_server_url

    found = detached_server_url(settings.cache_dir)
    if found is None:
        raise SeedError("no --url given and no server from `dbtest up --detach` is running; "
                        "start one with `dbtest up --detach` or pass --url "
                        "postgresql://user:password@host:port/dbname")
    return found
