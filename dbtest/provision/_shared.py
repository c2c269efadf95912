"""One server for all pytest-xdist workers of a run.

The first worker that needs a server starts it, owned by the xdist controller process
(the workers' parent), and records it in ``<cache>/shared/<run>.json``; the other
workers read that file and connect. Templates are then built once, under the
server's advisory lock. The controller stops the server at the end of the run (and
keeps built templates in the cache); the watchdog stops it if the controller dies.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from dbtest.provision import _lifetime as lifetime
from dbtest.provision._backend import LocalBackend
from dbtest.provision._server import ConnectionParams, PostgresServer

if TYPE_CHECKING:
    from dbtest.provision._provisioner import Provisioner
    from dbtest.settings import Settings

__all__ = ["current_owner", "join_or_start", "mark_template_built", "read_records", "stop_shared",
           "write_records"]


def _state(cache_dir: Path, run: str) -> Path:
    return cache_dir / "shared" / f"{run}.json"


def join_or_start(settings: Settings, run: str,
                  owner_pid: int) -> tuple[PostgresServer, Provisioner | None]:
    """The run's shared server: started by the first caller, joined by the others.

    Returns the server and the :class:`Provisioner` this process must stop when done:
    ``None`` for the shared local server (the controller stops it), the provisioner for
    any other server ``auto`` found (a detached one this process joined as a session,
    or docker when no local binaries exist), which is not shared.
    """
    from dbtest.provision._provisioner import Provisioner

    state = _state(settings.cache_dir, run)
    state.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state.with_suffix(".lock")), timeout=120):
        if state.exists():
            data = json.loads(state.read_text())
            if lifetime.pid_alive(data["pid"]):
                return _server_from(data, run, settings.cache_dir), None
        provisioner = Provisioner(settings, owner_pid=owner_pid)
        server = provisioner.start()
        backend = provisioner.backend
        if not isinstance(backend, LocalBackend):
            return server, provisioner
        cluster = backend.cluster
        data = {"params": asdict(server.params), "version": server.version,
                "version_num": server.version_num, "backend": server.backend,
                "details": server.details, "pid": server.details["pid"],
                "run_dir": str(cluster.run_dir), "binaries": str(cluster.binaries.bindir),
                "cluster_dir": str(cluster.cluster_dir), "project": cluster.project,
                "max_mb": cluster.max_mb}
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(state)
        # the controller stops it; this worker must not (its Provisioner is dropped)
        backend.release()
        return _server_from(data, run, settings.cache_dir), None


def _server_from(data: dict[str, Any], run: str, cache_dir: Path) -> PostgresServer:
    server = PostgresServer(ConnectionParams(**data["params"]), data["version"],
                            data["backend"], data["version_num"], details=data["details"])
    server.on_template_built = lambda name: mark_template_built(cache_dir, run)
    return server


def mark_template_built(cache_dir: Path, run: str) -> None:
    """Note that a worker built a template, so the controller keeps the cluster."""
    _state(cache_dir, run).with_suffix(".built").touch()


def stop_shared(cache_dir: Path, run: str) -> bool:
    """Stop the run's shared server (called by the xdist controller at the end)."""
    from dbtest.provision._local import LocalCluster

    state = _state(cache_dir, run)
    if not state.exists():
        return False
    data = json.loads(state.read_text())
    built = state.with_suffix(".built")
    cluster = LocalCluster.adopt(cache_dir, Path(data["cluster_dir"]), Path(data["run_dir"]),
                                 int(data["pid"]), project=data.get("project"),
                                 max_mb=data.get("max_mb"))
    LocalBackend(cluster).stop(persist=built.exists())
    for path in (state, built, state.with_suffix(".lock")):
        path.unlink(missing_ok=True)
    return True


def write_records(cache_dir: Path, run: str, records: list[dict[str, Any]]) -> None:
    """Append a worker's template records, for the controller's summary."""
    path = _state(cache_dir, run).with_suffix(".templates")
    with path.open("a") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def read_records(cache_dir: Path, run: str) -> list[dict[str, Any]]:
    """Every worker's template records (and forget them)."""
    path = _state(cache_dir, run).with_suffix(".templates")
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    path.unlink(missing_ok=True)
    return sorted((json.loads(line) for line in lines if line.strip()),
                  key=lambda r: (r["name"], not r["built"], r["worker"]))


def current_owner() -> int:
    """The xdist controller's pid, seen from a worker."""
    return os.getppid()
