"""Server settings every dbtest server runs with, whatever starts it.

The local and embedded backends pass them to ``postgres`` as ``-c`` options, the docker
backend puts the same options on the container's command line: a test behaves the same
on each backend. Test servers hold throwaway data, so durability is traded for speed.
"""

from __future__ import annotations

__all__ = ["INITDB_OPTIONS", "SERVER_SETTINGS", "server_options"]

SERVER_SETTINGS = {
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
    "max_connections": "300", "shared_buffers": "32MB", "max_wal_size": "1GB",
    "checkpoint_timeout": "30min", "min_wal_size": "2MB", "autovacuum": "off", "jit": "off",
    "log_min_messages": "warning", "max_prepared_transactions": "20",
    # DSM segments inside the data dir: an immediate shutdown leaves none in /dev/shm
    "dynamic_shared_memory_type": "mmap",
}

#: how every cluster is initialised: UTF-8, the C locale (byte order sorting, as on each
#: backend), 1 MiB WAL segments (``min_wal_size=2MB`` above needs them)
INITDB_OPTIONS = ("-E", "UTF8", "--locale=C", "--wal-segsize=1")


def server_options(extra: dict[str, str] | None = None) -> list[str]:
    """:data:`SERVER_SETTINGS` (and ``extra``) as ``postgres`` arguments: ``-c key=value``."""
    args: list[str] = []
    for key, value in {**SERVER_SETTINGS, **(extra or {})}.items():
        args += ["-c", f"{key}={value}"]
    return args
