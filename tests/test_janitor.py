"""What a crashed run leaves on a server is found and dropped; nothing else is."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg

from dbtest._databases import admin_connection, create_database
from dbtest._janitor import drop_stale, stale_databases
from dbtest.provision._server import PostgresServer


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def names(items: list) -> set[str]:
    return {i.name for i in items}


def test_dead_processes_databases_and_old_templates_go(own_server: PostgresServer) -> None:
    old = time.time() - 30 * 86400
    with admin_connection(own_server.dsn) as admin:
        create_database(admin, "jan_worker_dead", purpose="worker", mark={"pid": dead_pid()})
        create_database(admin, "jan_worker_alive", purpose="worker")  # this process
        create_database(admin, "jan_fresh_dead", purpose="fresh", mark={"pid": dead_pid()})
        for i in range(3):
            create_database(admin, f"jan_tpl_old{i}", purpose="template",
                            mark={"state": "ready", "used": old + i})
        create_database(admin, "jan_tpl_new", purpose="template",
                        mark={"state": "ready", "used": time.time()})
        admin.execute('CREATE DATABASE "jan_foreign"')
        # other templates on this server (the cached cluster's) are more recent than ours
        recent = sum(1 for d in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'dbtest_tpl_%'").fetchall())
        stale = stale_databases(admin, keep=recent + 2)  # ours: new and old2 are kept
        found = names(stale)
        assert {"jan_worker_dead", "jan_fresh_dead", "jan_tpl_old0", "jan_tpl_old1"} <= found
        # alive owner, the most recently used templates, foreign databases: kept
        assert not found & {"jan_worker_alive", "jan_tpl_new", "jan_tpl_old2", "jan_foreign"}
        assert all("gone" in i.reason or "unused" in i.reason for i in stale)
        assert drop_stale(admin, stale) == []
        left = {r[0] for r in admin.execute("SELECT datname FROM pg_database").fetchall()}
        assert not left & found
        assert {"jan_foreign", "jan_worker_alive"} <= left
        admin.execute('DROP DATABASE "jan_foreign"')
    with psycopg.connect(own_server.dsn_for("jan_worker_alive")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
