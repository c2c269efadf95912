"""The docker backend's time to first query, against testcontainers' plain container (issue 18).

    python benchmarks/bench_docker.py [--image TAG] [--runs N]

All three methods use the same image (``--image``, default ``DBTEST_DOCKER_IMAGE`` or the
newest local ``dbtest/postgres`` image that ``.ci/postgres-image`` builds) and run once per
round, round-robin, so background load hits them alike:

- dbtest cold: no container for this cache dir yet: ``ephemeral_postgres("docker")`` creates
  one (data on tmpfs, dbtest's server settings), waits with a real query polled every
  20 ms; then the first ``select 1`` on a new connection;
- dbtest warm: the container kept for reuse (it holds a template) is found and joined;
- testcontainers ``PostgresContainer(image)`` ``start()`` (its readiness check runs ``psql``
  inside the container, retried every second) and the first ``select 1``. Ryuk is disabled
  for it (``TESTCONTAINERS_RYUK_DISABLED``): its image cannot be pulled without a registry.

Time to first query is measured from the call to the first row of ``select 1``; stopping is
timed separately. Every container this script makes is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psycopg
from _peers import machine_info, ms, p90, print_load, print_table  # a sibling file

import dbtest
from dbtest import commands
from dbtest.provision._docker import DockerPostgres, docker_available
from dbtest.settings import resolve


def select1(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def dbtest_round(image: str, cache: Path) -> tuple[float, float]:
    started = time.perf_counter()
    with dbtest.ephemeral_postgres("docker", docker_image=image, cache_dir=str(cache)) as s:
        select1(s.dsn)
        first = time.perf_counter() - started
        stopping = time.perf_counter()
    return first, time.perf_counter() - stopping


def testcontainers_round(image: str) -> tuple[float, float]:
    from testcontainers.community.postgres import PostgresContainer

    started = time.perf_counter()
    container = PostgresContainer(image, driver=None)
    container.start()
    try:
        url = container.get_connection_url()
        select1(url)
        first = time.perf_counter() - started
    finally:
        stopping = time.perf_counter()
        container.stop()
    return first, time.perf_counter() - stopping


def default_image() -> str | None:
    import docker

    client = docker.from_env()
    try:
        ours = sorted(client.images.list("dbtest/postgres"), key=lambda i: i.attrs["Created"])
        return str(ours[-1].tags[0]) if ours else None
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("DBTEST_DOCKER_IMAGE"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # testcontainers reads these at import; its Ryuk image cannot be pulled without a registry.
    # TC_HOST/connection mode: this machine has a /.dockerenv that makes testcontainers
    # connect through the bridge gateway, where a daemon publishing on 127.0.0.1 is not
    # (dbtest falls back to loopback by itself; with these set, both use it directly)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TC_HOST", "127.0.0.1")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    ok, why = docker_available(timeout=2)
    if not ok:
        sys.exit(f"no Docker: {why}. Run .ci/postgres-image (it installs and starts Docker).")
    image = args.image or default_image()
    if not image:
        sys.exit("no image: pass --image, or build one with .ci/postgres-image")
    machine_info("in the container", [f"image: {image}",
                                      f"DOCKER_HOST: {os.environ.get('DOCKER_HOST', '(default)')}"])
    root = Path(tempfile.mkdtemp(prefix="dbtest-bench-docker-"))
    warm_cache = root / "warm"
    warm = DockerPostgres(image, warm_cache)
    server = warm.start()  # the kept container the warm rounds join
    server.create_database("bench_template", purpose="template")
    warm.stop()
    methods: dict[str, Callable[[int], tuple[float, float]]] = {
        "dbtest cold (no container: create, start, wait)":
            lambda i: dbtest_round(image, root / f"cold-{i}"),
        "dbtest warm (kept container reused)": lambda i: dbtest_round(image, warm_cache),
        "testcontainers PostgresContainer (same image)": lambda i: testcontainers_round(image),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    try:
        for i in range(args.runs):
            for name, fn in methods.items():
                results[name].append(fn(i))
            print(f"round {i + 1}/{args.runs} done", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(Exception):
            commands.down(resolve({"cache_dir": str(warm_cache)}))
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(f for f, _ in results["dbtest warm (kept container reused)"])
    rows = []
    for name, values in results.items():
        firsts, stops = [f for f, _ in values], [s for _, s in values]
        rows.append([name, ms(statistics.median(firsts)), ms(p90(firsts)),
                     ms(statistics.median(stops)),
                     f"{statistics.median(firsts) / base:.1f}x"])
    print(f"\n{args.runs} rounds, round-robin; ms")
    print_table(["method", "to first query, median", "p90", "stop, median", "vs warm"], rows)
    print_load("at end")


if __name__ == "__main__":
    main()
