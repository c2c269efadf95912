"""Provisioning: one :func:`ephemeral_postgres` over the backends of :class:`Backend`.

``auto`` picks ``url`` when a URL is configured, else local binaries, else the
``embedded`` wheel, else Docker, and otherwise raises :class:`PostgresNotFound` listing
what was tried and the one-line fix for each.

This module is the provision package's one surface: the rest of dbtest (commands, the
plugin, the cache key) imports from here, never from its ``_`` modules. Names are
imported lazily, so ``import dbtest.provision`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> (private module, its name there)
_EXPORTS: dict[str, tuple[str, str]] = {
    # servers and how to get one
    "ConnectionParams": ("_server", "ConnectionParams"),
    "PostgresServer": ("_server", "PostgresServer"),
    "Provisioner": ("_provisioner", "Provisioner"),
    "ephemeral_postgres": ("_provisioner", "ephemeral_postgres"),
    "project_key": ("_provisioner", "project_key"),
    "Backend": ("_backend", "Backend"),
    "LocalBackend": ("_backend", "LocalBackend"),
    "DockerBackend": ("_backend", "DockerBackend"),
    "UrlBackend": ("_backend", "UrlBackend"),
    "DetachedBackend": ("_backend", "DetachedBackend"),
    "NoDetachedServer": ("_backend", "NoDetachedServer"),
    "connect_url": ("_url", "connect_url"),
    "parse_url": ("_url", "parse_url"),
    # binaries
    "PgBinaries": ("_binaries", "PgBinaries"),
    "MIN_MAJOR": ("_binaries", "MIN_MAJOR"),
    "find_binaries": ("_binaries", "find_binaries"),
    "discover_binaries": ("_binaries", "discover"),
    "load_binaries_memo": ("_binaries", "load_memo"),
    "save_binaries_memo": ("_binaries", "save_memo"),
    "find_embedded_binaries": ("_embedded", "find_embedded_binaries"),
    "wheel_install_dir": ("_embedded", "wheel_install_dir"),
    "DEDICATED": ("_runas", "DEDICATED"),
    "planned_account": ("_runas", "planned_account"),
    # local clusters and their cache
    "LocalCluster": ("_local", "LocalCluster"),
    "run_bases": ("_local", "run_bases"),
    "cluster_dirs": ("_local", "cluster_dirs"),
    "spare_dirs": ("_local", "spare_dirs"),
    "orphan_run_dirs": ("_local", "orphan_run_dirs"),
    "trash_dirs": ("_local", "trash_dirs"),
    "stale_generations": ("_local", "stale_generations"),
    "remove_generation": ("_local", "remove_generation"),
    "SPARES_PREFIX": ("_leftovers", "SPARES_PREFIX"),
    "cached_generations": ("_generations", "generations"),
    "prune_generations": ("_generations", "prune"),
    "spare_namespace": ("_spares", "namespace"),
    "sweep_spares": ("_spares", "sweep"),
    # server processes: registry, marks, liveness
    "OWNED_MARK": ("_lifetime", "OWNED_MARK"),
    "Registration": ("_lifetime", "Registration"),
    "pid_alive": ("_lifetime", "pid_alive"),
    "identity_alive": ("_lifetime", "identity_alive"),
    "is_our_postmaster": ("_lifetime", "is_our_postmaster"),
    "orphan_servers": ("_lifetime", "orphans"),
    "retire_server": ("_lifetime", "retire"),
    "retire_run_dir": ("_lifetime", "retire_run_dir"),
    # dbtest up --detach
    "STATE_FILE": ("_detached", "STATE_FILE"),
    "DetachedServer": ("_detached", "DetachedServer"),
    "attached_sessions": ("_detached", "attached_sessions"),
    "detached_for": ("_detached", "detached_for"),
    "detached_server": ("_detached", "detached_server"),
    "detached_server_url": ("_detached", "detached_server_url"),
    "detached_servers": ("_detached", "detached_servers"),
    "forget_sessions": ("_detached", "forget_sessions"),
    "remove_state": ("_detached", "remove_state"),
    "state_lock": ("_detached", "state_lock"),
    "state_path": ("_detached", "state_path"),
    "write_state": ("_detached", "write_state"),
    # docker
    "DEFAULT_IMAGE": ("_docker", "DEFAULT_IMAGE"),
    "docker_available": ("_docker", "docker_available"),
    "down_containers": ("_docker", "down_containers"),
    # one server for all xdist workers of a run
    "join_or_start": ("_shared", "join_or_start"),
    "current_owner": ("_shared", "current_owner"),
    "read_records": ("_shared", "read_records"),
    "write_records": ("_shared", "write_records"),
    "stop_shared": ("_shared", "stop_shared"),
}

__all__ = [
    "DEDICATED", "DEFAULT_IMAGE", "MIN_MAJOR", "OWNED_MARK", "SPARES_PREFIX", "STATE_FILE",
    "Backend", "ConnectionParams", "DetachedBackend", "DetachedServer", "DockerBackend",
    "LocalBackend", "LocalCluster", "NoDetachedServer", "PgBinaries", "PostgresServer",
    "Provisioner", "Registration", "UrlBackend", "attached_sessions", "cached_generations",
    "cluster_dirs", "connect_url", "current_owner", "detached_for", "detached_server",
    "detached_server_url", "detached_servers", "discover_binaries", "docker_available",
    "down_containers", "ephemeral_postgres", "find_binaries", "find_embedded_binaries",
    "forget_sessions", "identity_alive", "is_our_postmaster", "join_or_start",
    "load_binaries_memo", "orphan_run_dirs", "orphan_servers", "parse_url", "pid_alive",
    "planned_account", "project_key", "prune_generations", "read_records",
    "remove_generation", "remove_state", "retire_run_dir", "retire_server", "run_bases",
    "save_binaries_memo",
    "spare_dirs", "spare_namespace", "stale_generations", "state_lock", "state_path",
    "stop_shared", "sweep_spares", "trash_dirs", "wheel_install_dir", "write_records",
    "write_state"
]

if TYPE_CHECKING:
    from dbtest.provision._backend import Backend as Backend
    from dbtest.provision._backend import DetachedBackend as DetachedBackend
    from dbtest.provision._backend import DockerBackend as DockerBackend
    from dbtest.provision._backend import LocalBackend as LocalBackend
    from dbtest.provision._backend import NoDetachedServer as NoDetachedServer
    from dbtest.provision._backend import UrlBackend as UrlBackend
    from dbtest.provision._binaries import MIN_MAJOR as MIN_MAJOR
    from dbtest.provision._binaries import PgBinaries as PgBinaries
    from dbtest.provision._binaries import discover as discover_binaries
    from dbtest.provision._binaries import find_binaries as find_binaries
    from dbtest.provision._binaries import load_memo as load_binaries_memo
    from dbtest.provision._binaries import save_memo as save_binaries_memo
    from dbtest.provision._detached import STATE_FILE as STATE_FILE
    from dbtest.provision._detached import DetachedServer as DetachedServer
    from dbtest.provision._detached import attached_sessions as attached_sessions
    from dbtest.provision._detached import detached_for as detached_for
    from dbtest.provision._detached import detached_server as detached_server
    from dbtest.provision._detached import detached_server_url as detached_server_url
    from dbtest.provision._detached import detached_servers as detached_servers
    from dbtest.provision._detached import forget_sessions as forget_sessions
    from dbtest.provision._detached import remove_state as remove_state
    from dbtest.provision._detached import state_lock as state_lock
    from dbtest.provision._detached import state_path as state_path
    from dbtest.provision._detached import write_state as write_state
    from dbtest.provision._docker import DEFAULT_IMAGE as DEFAULT_IMAGE
    from dbtest.provision._docker import docker_available as docker_available
    from dbtest.provision._docker import down_containers as down_containers
    from dbtest.provision._embedded import find_embedded_binaries as find_embedded_binaries
    from dbtest.provision._embedded import wheel_install_dir as wheel_install_dir
    from dbtest.provision._generations import generations as cached_generations
    from dbtest.provision._generations import prune as prune_generations
    from dbtest.provision._leftovers import SPARES_PREFIX as SPARES_PREFIX
    from dbtest.provision._lifetime import OWNED_MARK as OWNED_MARK
    from dbtest.provision._lifetime import Registration as Registration
    from dbtest.provision._lifetime import identity_alive as identity_alive
    from dbtest.provision._lifetime import is_our_postmaster as is_our_postmaster
    from dbtest.provision._lifetime import orphans as orphan_servers
    from dbtest.provision._lifetime import pid_alive as pid_alive
    from dbtest.provision._lifetime import retire as retire_server
    from dbtest.provision._lifetime import retire_run_dir as retire_run_dir
    from dbtest.provision._local import LocalCluster as LocalCluster
    from dbtest.provision._local import cluster_dirs as cluster_dirs
    from dbtest.provision._local import orphan_run_dirs as orphan_run_dirs
    from dbtest.provision._local import remove_generation as remove_generation
    from dbtest.provision._local import run_bases as run_bases
    from dbtest.provision._local import spare_dirs as spare_dirs
    from dbtest.provision._local import stale_generations as stale_generations
    from dbtest.provision._local import trash_dirs as trash_dirs
    from dbtest.provision._provisioner import Provisioner as Provisioner
    from dbtest.provision._provisioner import ephemeral_postgres as ephemeral_postgres
    from dbtest.provision._provisioner import project_key as project_key
    from dbtest.provision._runas import DEDICATED as DEDICATED
    from dbtest.provision._runas import planned_account as planned_account
    from dbtest.provision._server import ConnectionParams as ConnectionParams
    from dbtest.provision._server import PostgresServer as PostgresServer
    from dbtest.provision._shared import current_owner as current_owner
    from dbtest.provision._shared import join_or_start as join_or_start
    from dbtest.provision._shared import read_records as read_records
    from dbtest.provision._shared import stop_shared as stop_shared
    from dbtest.provision._shared import write_records as write_records
    from dbtest.provision._spares import namespace as spare_namespace
    from dbtest.provision._spares import sweep as sweep_spares
    from dbtest.provision._url import connect_url as connect_url
    from dbtest.provision._url import parse_url as parse_url


def __getattr__(name: str) -> Any:
    found = _EXPORTS.get(name)
    if found is None:
        raise AttributeError(f"module 'dbtest.provision' has no attribute {name!r}")
    module, attr = found
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
