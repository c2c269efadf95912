"""The ``url`` backend: an existing server named by a URL; dbtest only adds databases."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from dbtest.errors import ConfigError, MaskedStr, ProvisionError, mask_url
from dbtest.provision._server import ConnectionParams, PostgresServer

__all__ = ["connect_url", "parse_url"]

_SCHEMES = ("postgresql", "postgres")


def parse_url(url: str) -> ConnectionParams:
    """Connection parameters from a ``postgresql[+driver]://`` URL."""
    url = MaskedStr(url)  # a traceback's locals show it masked
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in _SCHEMES:
        raise ConfigError(f"{mask_url(url)} is not a PostgreSQL URL; use "
                          f"postgresql://user:password@host:port/dbname")
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["/var/run/postgresql"])[0]
    try:
        port = parts.port or int((query.get("port") or ["5432"])[0])
    except ValueError:
        raise ConfigError(f"{mask_url(url)} has an invalid port; use a number, e.g. "
                          f"postgresql://user:password@localhost:5432/postgres") from None
    return ConnectionParams(
        host=host, port=port, user=unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password else None,
        dbname=unquote(parts.path.lstrip("/")) or "postgres")


def connect_url(url: str) -> PostgresServer:
    """Check the server at ``url`` answers and may create databases; describe it."""
    import psycopg

    url = MaskedStr(url)  # a traceback's locals show it masked
    params = parse_url(url)
    try:
        with psycopg.connect(MaskedStr(params.dsn()), connect_timeout=10) as conn:
            row = conn.execute("SELECT current_setting('server_version'), rolcreatedb OR "
                               "rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.OperationalError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = " ".join(lines).rstrip("?.") if lines else type(exc).__name__
        hint = ("check the password" if "password" in reason else
                "check that the server runs and the host/port are right")
        raise ProvisionError(f"cannot connect to DBTEST_URL/url {mask_url(url)}: {reason}. "
                             f"Fix: {hint}.") from None
    assert row is not None
    version, can_create = str(row[0]).split()[0], bool(row[1])
    if not can_create:
        raise ProvisionError(f"role {params.user!r} at {mask_url(url)} cannot create databases;"
                             f" dbtest needs CREATEDB: grant it (ALTER ROLE {params.user} "
                             f"CREATEDB) or use a role that has it.")
    num = _version_num(version)
    return PostgresServer(params, version, "url", num, details={"url": mask_url(url)})


def _version_num(version: str) -> int:
    major, _, minor = version.partition(".")
    return int(major) * 10000 + (int(minor) if minor.isdigit() else 0)
