"""Stress drill: one machine, many dbtest runs at once, some killed.

For ``--minutes`` (default 5), ``--loops`` (default 6) threads each run, one after the
other, a random action on one of three throwaway projects with different schemas
(``alpha`` and ``beta`` share a cache dir, ``gamma`` has its own): ``pytest`` (most
often; sometimes with ``-n 2``), ``dbtest up --detach``, ``dbtest down``, ``dbtest clean``.
A killer thread ``kill -9``'s a random running pytest every ``--kill-every`` seconds.

It reports: runs, failures not caused by a kill (target 0; each one's output is kept
in the report), servers left after the end (target 0), cache size at the end, and
templates built vs reused. ``dbtest down`` refused because sessions are attached is
the expected answer, not a failure. Usage::

    python benchmarks/stress_machine.py --minutes 5      # the drill
    python benchmarks/stress_machine.py --minutes 1      # the CI version
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SCHEMAS = {
    "alpha": "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n",
    "beta": "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL);\n"
            "CREATE TABLE posts (id serial PRIMARY KEY, user_id int REFERENCES users);\n",
    "gamma": "CREATE TABLE orders (id serial PRIMARY KEY, total numeric NOT NULL);\n",
}
TABLE = {"alpha": "items", "beta": "users", "gamma": "orders"}
VALUES = {"alpha": "(name) VALUES ('x')", "beta": "(email) VALUES ('a@x.io')",
          "gamma": "(total) VALUES (1)"}
TESTS = '''\
from sqlalchemy import text


def test_insert_and_count(db):
    db.execute(text("INSERT INTO {table} {values}"))
    assert db.execute(text("SELECT count(*) FROM {table}")).scalar() == 1


def test_starts_clean(db):
    assert db.execute(text("SELECT count(*) FROM {table}")).scalar() == 0


def test_fresh(fresh_db):
    from sqlalchemy import create_engine
    engine = create_engine(fresh_db.url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO {table} {values}"))
    engine.dispose()
'''


@dataclass
class Tally:
    """What the loops did (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: Counter[str] = field(default_factory=Counter)
    killed: int = 0
    refused: int = 0
    built: int = 0
    reused: int = 0
    failures: list[str] = field(default_factory=list)
    running: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    victims: set[int] = field(default_factory=set)
    kills: list[str] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)


def make_projects(root: Path) -> dict[str, tuple[Path, Path]]:
    """The three projects: name -> (folder, cache dir)."""
    projects = {}
    for name, schema in SCHEMAS.items():
        folder = root / name
        (folder / "schema").mkdir(parents=True)
        (folder / "schema" / "001.sql").write_text(schema)
        (folder / "pyproject.toml").write_text(
            '[tool.dbtest]\nschema = "sql:schema/*.sql"\nbackend = "auto"\n')
        (folder / "test_it.py").write_text(TESTS.format(table=TABLE[name],
                                                        values=VALUES[name]))
        cache = root / ("cache-own" if name == "gamma" else "cache-shared")
        projects[name] = (folder, cache)
    return projects


def run(cmd: list[str], folder: Path, cache: Path, tally: Tally, kind: str,
        timeout: float = 240.0) -> tuple[int, str, bool]:
    """Run ``cmd`` in ``folder``; returns (exit code, output, killed by the drill)."""
    env = {**os.environ, "DBTEST_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DBTEST_URL", None)
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if kind == "pytest":
        with tally.lock:
            tally.running[proc.pid] = proc
            tally.labels[proc.pid] = f"{folder.name}: {' '.join(cmd[3:])}"
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[stress] timed out after {timeout:.0f} s"
    with tally.lock:
        tally.running.pop(proc.pid, None)
        killed = proc.pid in tally.victims
        tally.victims.discard(proc.pid)
    return proc.returncode, out, killed


def loop(n: int, projects: dict[str, tuple[Path, Path]], deadline: float, tally: Tally,
         rng: random.Random) -> None:
    py = sys.executable
    while time.monotonic() < deadline:
        name = rng.choice(sorted(projects))
        folder, cache = projects[name]
        roll = rng.random()
        if roll < 0.70:
            kind, cmd = "pytest", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "-p", "no:randomly"]
            if rng.random() < 0.15:
                cmd += ["-n", "2"]
        elif roll < 0.80:
            kind, cmd = "up --detach", [py, "-m", "dbtest", "up", "--detach"]
        elif roll < 0.90:
            kind, cmd = "down", [py, "-m", "dbtest", "down"]
        else:
            kind, cmd = "clean", [py, "-m", "dbtest", "clean"]
        code, out, killed = run(cmd, folder, cache, tally, kind.split()[0])
        with tally.lock:
            tally.runs[kind] += 1
            if killed:
                tally.killed += 1
                continue
            if kind == "pytest":
                tally.built += len(re.findall(r"^template \S+ .*: built", out, re.M))
                tally.reused += len(re.findall(r"^template \S+ .*: reused", out, re.M))
            if kind == "down" and code != 0 and "still use it" in out:
                tally.refused += 1
                continue
            if code != 0:
                tally.failures.append(f"loop {n} {name} {kind} (exit {code}):\n"
                                      + "\n".join(out.splitlines()[-25:]))


def killer(deadline: float, every: float, tally: Tally, rng: random.Random) -> None:
    while time.monotonic() < deadline - 5:
        time.sleep(every * rng.uniform(0.5, 1.5))
        with tally.lock:
            if not tally.running:
                continue
            pid = rng.choice(sorted(tally.running))
            tally.victims.add(pid)
            tally.kills.append(f"{time.strftime('%H:%M:%S', time.gmtime())} pid {pid} "
                               f"({tally.labels.get(pid, '?')})")
        # the pytest process only (not its group): its server must go with it all the same
        with_suppress_kill(pid)


def with_suppress_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def postmasters_under(folders: list[str]) -> list[str]:
    """Live postgres processes whose command line names one of ``folders``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and "postgres" in cmdline and any(f in cmdline for f in folders):
            found.append(f"pid {entry}: {cmdline[:160]}\n" + explain(int(entry), cmdline))
    return found


def explain(pid: int, cmdline: str) -> str:
    """What is known of a server left running: who owned its folder, its registry entry,
    when it started and the end of its log (so a CI failure can be diagnosed)."""
    lines = []
    match = re.search(r"-D (\S+)/data", cmdline)
    run_dir = Path(match.group(1)) if match else None
    started = _process_start(pid)
    lines.append(f"    started {time.strftime('%H:%M:%S', time.gmtime(started))} UTC"
                 if started else "    start time unknown")
    if run_dir is not None:
        try:
            owner = (run_dir / ".dbtest-owned").read_text().strip()
            alive = Path(f"/proc/{owner}").exists()
            lines.append(f"    owner mark: pid {owner} ({'alive' if alive else 'gone'})")
        except OSError as exc:
            lines.append(f"    owner mark: unreadable ({exc.strerror})")
        with contextlib.suppress(OSError):
            tail = (run_dir / "postgres.log").read_text(errors="replace").splitlines()[-4:]
            lines += [f"    log: {line[:150]}" for line in tail]
    return "\n".join(lines)


def _process_start(pid: int) -> float | None:
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                     .splitlines() if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def du(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        for folder, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_size
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--loops", type=int, default=6)
    parser.add_argument("--kill-every", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the projects and caches")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    from dbtest.provision import _local as local
    from dbtest.provision import _spares as spares

    root = Path(tempfile.mkdtemp(prefix="dbtest-stress-"))
    projects = make_projects(root)
    caches = sorted({cache for _, cache in projects.values()})
    load_before = os.getloadavg()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    tally = Tally()
    threads = [threading.Thread(target=loop, args=(n, projects, deadline, tally,
                                                   random.Random(seed + n)))
               for n in range(args.loops)]
    threads.append(threading.Thread(target=killer, args=(deadline, args.kill_every, tally,
                                                         random.Random(seed - 1))))
    print(f"# stress drill: {args.loops} loops, {args.minutes:g} min, 3 projects "
          f"(alpha+beta share a cache dir, gamma its own), seed {seed}", flush=True)
    for thread in threads:
        thread.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        time.sleep(2)
        peak = max(peak, os.getloadavg()[0])
    elapsed = time.monotonic() - started
    # the end: stop detached servers (force: no session is left), wait for watchdogs
    for folder, cache in projects.values():
        run([sys.executable, "-m", "dbtest", "down", "--force"], folder, cache, tally, "down")
    namespaces = [spares.namespace(c) for c in caches]
    watched = [str(c) for c in caches] + namespaces
    left: list[str] = []
    for _ in range(20):
        left = postmasters_under(watched)
        if not left:
            break
        time.sleep(0.5)
    ns_dirs = [base / ns for base in local.run_bases(caches[0]) for ns in namespaces
               if (base / ns).is_dir()]
    size = du(caches + ns_dirs)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load: {load_before[0]:.1f} before, {peak:.1f} peak, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"ran for {elapsed / 60:.1f} min")
    print("runs: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.runs.items()))
          + f" (total {sum(tally.runs.values())})")
    print(f"killed by the drill (kill -9): {tally.killed}")
    print(f"dbtest down refused (sessions attached): {tally.refused}")
    print(f"failures not caused by a kill: {len(tally.failures)}")
    print(f"servers left after the end: {len(left)}")
    print(f"cache size at the end: {size / 2**20:.0f} MiB (both cache dirs and their "
          f"folders in tmpfs/temp)")
    print(f"templates: built {tally.built}, reused {tally.reused}")
    for failure in tally.failures[:10]:
        print("--- failure ---\n" + failure)
    for line in left:
        print(f"--- left: {line}")
    if left:
        for kill in tally.kills:
            print(f"--- killed: {kill}")
        for cache in caches:
            for entry in sorted((cache / "run").glob("*.json")):
                with contextlib.suppress(OSError):
                    print(f"--- registry {entry.name}: {entry.read_text()[:200]}")
    if not args.keep:
        for folder, cache in projects.values():
            run([sys.executable, "-m", "dbtest", "clean"], folder, cache, tally, "clean")
        shutil.rmtree(root, ignore_errors=True)
        for base in local.run_bases(caches[0]):
            spares.sweep_vanished(base)
    return 1 if tally.failures or left else 0


if __name__ == "__main__":
    sys.exit(main())
