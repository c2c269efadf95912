"""A CI-like cold run against a run from a restored CI cache (issue 15), whole process.

    python benchmarks/bench_ci_cache.py [--runs N]

Each round, for the example app's suite (``pytest migrations_example/tests``):

- cold: a new, empty cache dir, as on a new CI runner: initdb, every migration;
- then ``dbtest cache wait`` and the cache folder (``dbtest cache path``) saved as a tar, as
  ``actions/cache`` does;
- restored: another new cache dir into which that tar is extracted, then the same run.

Reported: wall time of the pytest process, and of the extraction, medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _background import drop_namespace, drop_own_spares, wait_spare  # noqa: E402
from _peers import machine_info, ms, p90, print_load, print_table  # noqa: E402

SUITE = ["-m", "pytest", "-p", "no:cacheprovider", "-q", "migrations_example/tests"]


def _run(args: list[str], cache: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["DBTEST_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round (python -m benchmarks "
                        "--quick)")
    args = parser.parse_args()
    from dbtest.provision._binaries import find_binaries

    if args.quick:
        args.runs = 1
    machine_info(find_binaries().version, [f"rounds: {args.runs}"])
    cold, warm, extract = [], [], []
    failed: list[str] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dbtest-bench-ci-") as tmp:
            base = Path(tmp)
            seconds, out = _run(SUITE, base / "cold")
            assert "built" in out, out
            cold.append(seconds)
            _run(["-m", "dbtest", "cache", "wait"], base / "cold")
            with tarfile.open(base / "cache.tar", "w") as tar:
                tar.add(base / "cold" / "clusters", arcname="clusters")
            started = time.perf_counter()
            (base / "warm").mkdir()
            with tarfile.open(base / "cache.tar") as tar:
                tar.extractall(base / "warm", filter="tar")
            extract.append(time.perf_counter() - started)
            seconds, out = _run(SUITE, base / "warm")
            assert "built" not in out and "reused" in out, out
            warm.append(seconds)
            _run(["-m", "dbtest", "cache", "wait"], base / "warm")
            # the warm start began a spare copy in the background, which locks the
            # generation it copies inside the cache dir: the folder is deleted after it
            if not wait_spare(base / "warm"):
                failed.append("the warm run's spare copy was not ready within 60 s")
            for cache in (base / "cold", base / "warm"):
                drop_own_spares(cache)
        for cache in (base / "cold", base / "warm"):
            drop_namespace(cache)
    print_load("at end")
    print_table(["run of migrations_example/tests (13 tests)", "median ms", "p90 ms"], [
        ["cold: empty cache (initdb, 5 migrations, seeds)", ms(statistics.median(cold)),
         ms(p90(cold))],
        ["restore the cache folder (tar extract)", ms(statistics.median(extract)),
         ms(p90(extract))],
        ["restored cache (no initdb, 0 migrations)", ms(statistics.median(warm)),
         ms(p90(warm))],
    ])

    for why in failed:
        print(f"FAIL {why}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
