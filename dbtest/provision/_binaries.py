"""Find PostgreSQL server binaries (initdb + postgres) on this machine.

Searched, in order: the ``pg_bin`` setting, ``PATH``, ``pg_config --bindir``, and the
usual install folders of Debian/Ubuntu, RPM distributions, Homebrew and source builds.
The newest version wins.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dbtest.errors import PostgresNotFound

__all__ = ["MIN_MAJOR", "PgBinaries", "discover", "find_binaries", "probe"]

MIN_MAJOR = 12
#: install folders as globs; versioned folders sort newest first after probing
INSTALL_GLOBS: tuple[str, ...] = (
    "/usr/lib/postgresql/*/bin",          # Debian, Ubuntu
    "/usr/pgsql-*/bin",                   # PGDG RPMs
    "/usr/local/pgsql/bin",               # source builds
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
    "/opt/homebrew/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBinaries:
    """A folder holding a usable ``initdb`` and ``postgres`` of one version."""

    bindir: Path
    version: str  # "15.18"
    major: int
    source: str  # where it was found: "pg_bin", "PATH", "pg_config", "install folder", "wheel"

    def tool(self, name: str) -> Path:
        """Path of one of the folder's programs (``initdb``, ``postgres``, ``pg_dump``...)."""
        return self.bindir / name


#: "postgres --version" output per (path, mtime, size): spawning it costs ~5 ms each
_VERSION_MEMO: dict[str, str] = {}
_MEMO_LOADED: set[Path] = set()


def load_memo(path: Path) -> None:
    """Load remembered ``--version`` outputs from ``path`` (a JSON file in the cache)."""
    if path in _MEMO_LOADED:
        return
    _MEMO_LOADED.add(path)
    with contextlib.suppress(OSError, ValueError):
        _VERSION_MEMO.update(json.loads(path.read_text()))


def save_memo(path: Path) -> None:
    """Write remembered ``--version`` outputs to ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_VERSION_MEMO))
        tmp.replace(path)
    except OSError:
        pass


def _version_output(postgres: Path) -> str:
    try:
        st = postgres.stat()
    except OSError:
        return ""
    key = f"{postgres.resolve()}:{st.st_mtime_ns}:{st.st_size}"
    if key not in _VERSION_MEMO:
        try:
            _VERSION_MEMO[key] = subprocess.run(
                [str(postgres), "--version"], capture_output=True, text=True, timeout=10,
                check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return _VERSION_MEMO[key]


def probe(bindir: Path, source: str) -> PgBinaries | None:
    """A :class:`PgBinaries` if ``bindir`` holds runnable initdb + postgres, else ``None``."""
    postgres, initdb = bindir / "postgres", bindir / "initdb"
    if not (os.access(postgres, os.X_OK) and os.access(initdb, os.X_OK)):
        return None
    out = _version_output(postgres)
    match = _VERSION.search(out)
    if not match:
        return None
    major = int(match.group(1))
    version = f"{major}.{match.group(2) or 0}"
    return PgBinaries(bindir.resolve(), version, major, source)


def _pg_config_bindir(path_env: str | None) -> Path | None:
    exe = shutil.which("pg_config", path=path_env)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--bindir"], capture_output=True, text=True, timeout=10,
                             check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def candidates(path_env: str | None = None,
               install_globs: Sequence[str] = INSTALL_GLOBS) -> list[tuple[Path, str]]:
    """Folders worth probing, in search order (duplicates removed)."""
    found: list[tuple[Path, str]] = []
    exe = shutil.which("postgres", path=path_env)
    if exe:
        found.append((Path(exe).resolve().parent, "PATH"))
    pg_config = None if exe else _pg_config_bindir(path_env)
    if pg_config:
        found.append((pg_config, "pg_config"))
    for pattern in install_globs:
        for match in sorted(glob.glob(pattern)):
            found.append((Path(match), "install folder"))
    seen: set[Path] = set()
    unique = []
    for folder, source in found:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((folder, source))
    return unique


def _version_key(b: PgBinaries) -> tuple[int, ...]:
    return tuple(int(x) for x in b.version.split("."))


def discover(path_env: str | None = None,
             install_globs: Sequence[str] = INSTALL_GLOBS) -> list[PgBinaries]:
    """Every usable binary folder, newest version first."""
    probed = (probe(folder, source) for folder, source in candidates(path_env, install_globs))
    usable = [b for b in probed if b is not None]
    return sorted(usable, key=_version_key, reverse=True)


def find_binaries(pg_bin: Path | None = None, *, path_env: str | None = None,
                  install_globs: Sequence[str] = INSTALL_GLOBS) -> PgBinaries:
    """The binaries to use: ``pg_bin`` if given, else the newest found.

    Raises :class:`PostgresNotFound` listing every folder searched.
    """
    if pg_bin is not None:
        found = probe(Path(pg_bin), "pg_bin")
        if found is None:
            raise PostgresNotFound(
                f"pg_bin setting points at {pg_bin}, which holds no runnable initdb and "
                f"postgres. Point it at the folder containing both (e.g. "
                f"/usr/lib/postgresql/15/bin) or remove the setting.")
        _check_supported(found)
        return found
    usable = discover(path_env, install_globs)
    if not usable:
        searched = _describe(candidates(path_env, install_globs), install_globs)
        raise PostgresNotFound(
            "no PostgreSQL server binaries (initdb + postgres) found; searched " + searched
            + ". Install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install "
            "postgresql@16), or pip install 'dbtest[embedded]', or set pg_bin.")
    _check_supported(usable[0])
    return usable[0]


def _check_supported(found: PgBinaries) -> None:
    if found.major < MIN_MAJOR:
        raise PostgresNotFound(
            f"PostgreSQL {found.version} in {found.bindir} is too old: dbtest needs "
            f"{MIN_MAJOR} or newer. Install a newer server or set pg_bin to one.")


def _describe(folders: Iterable[tuple[Path, str]], globs: Sequence[str]) -> str:
    names = [f"{folder} ({source})" for folder, source in folders]
    return ", ".join([*names, "PATH", "pg_config --bindir", *globs])
