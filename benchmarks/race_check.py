"""Race check: several processes start servers in a loop, on separate cache dirs and on
one shared cache dir, and every failure is counted (target: 0).

Each process runs ``--starts`` starts of a local server (copy of the cached cluster or
a spare, spawn, ``select 1``, stop). Every third start also creates a database and
keeps the cluster as a new generation (``persist(background=True)``, as a run that
built a template does), so generations are written, picked, copied and pruned while
the others start. Usage::

    python benchmarks/race_check.py --procs 3 --starts 30 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

CHILD = "child"


def child(cache_dir: Path, starts: int, seed: int) -> int:
    """One loop of starts; prints one JSON line per failure, then a summary line."""
    import psycopg

    from dbtest.provision._binaries import find_binaries
    from dbtest.provision._local import LocalCluster

    binaries = find_binaries()
    failures = 0
    for i in range(starts):
        cluster = LocalCluster(binaries, cache_dir, project=f"race-{seed % 2}")
        try:
            server = cluster.start()
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                conn.execute("select 1")
                if i % 3 == seed % 3:
                    conn.execute(f"create database race_{seed}_{i}")
            if i % 3 == seed % 3:
                cluster.stop(keep_data=True)
                cluster.persist(background=True)
                cluster.discard()
            else:
                cluster.stop()
        except Exception as exc:
            failures += 1
            print(json.dumps({"start": i, "error": f"{type(exc).__name__}: {exc}"[:600],
                              "where": traceback.format_exc().splitlines()[-3:]}), flush=True)
            cluster.stop()
    print(json.dumps({"done": starts, "failures": failures}), flush=True)
    return 0


def one_round(procs: int, starts: int, shared: bool, root: Path) -> tuple[int, int, list[str]]:
    children = []
    for n in range(procs):
        cache = root / ("shared" if shared else f"own-{n}")
        children.append(subprocess.Popen(
            [sys.executable, __file__, CHILD, str(cache), str(starts), str(n)],
            stdout=subprocess.PIPE, text=True))
    runs = failures = 0
    errors: list[str] = []
    for proc in children:
        out, _ = proc.communicate()
        for line in out.splitlines():
            record = json.loads(line)
            if "done" in record:
                runs += record["done"]
                failures += record["failures"]
            else:
                errors.append(record["error"])
        if proc.returncode != 0:
            failures += 1
            errors.append(f"child exited with {proc.returncode}")
    return runs, failures, errors


def _settle(root: Path, timeout: float = 60.0) -> None:
    """Wait for the background copies into the caches, then leave nothing behind."""
    from dbtest import commands
    from dbtest.settings import resolve

    deadline = time.monotonic() + timeout
    while list(root.glob("*/clusters/*/gen-*.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    for cache in root.iterdir():
        commands.clean(resolve({"cache_dir": cache, "backend": "local"}, environ={},
                               pyproject=None), databases=False)


def _sweep_vanished() -> None:
    from dbtest.provision import _local as local
    from dbtest.provision import _spares as spares

    for base in local.run_bases(Path(tempfile.gettempdir())):
        spares.sweep_vanished(base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"# race check: {args.procs} processes x {args.starts} starts, {args.repeats} "
          f"repeats; load before: {os.getloadavg()[0]:.1f}")
    total_failures = 0
    for shared in (False, True):
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="dbtest-race-",
                                             ignore_cleanup_errors=True) as tmp:
                started = time.monotonic()
                runs, failures, errors = one_round(args.procs, args.starts, shared, Path(tmp))
                took = time.monotonic() - started
                _settle(Path(tmp))
            _sweep_vanished()
            total_failures += failures
            print(f"{'one shared cache dir' if shared else 'separate cache dirs':22} "
                  f"repeat {repeat + 1}: {failures} of {runs} starts failed "
                  f"({took:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
            for error in errors[:5]:
                print(f"    {error}")
    print(f"total failures: {total_failures}")
    return 1 if total_failures else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        sys.exit(child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    sys.exit(main())
