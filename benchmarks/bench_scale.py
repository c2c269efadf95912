"""How dbtest scales with pytest-xdist (issue 9): the same suites with ``-n 0``, ``-n 2``
and ``-n 4``.

    python benchmarks/bench_scale.py [--tests N] [--workers 0,2,4] [--rounds R] [--quick]

Suites:

- the repo's example suite (``migrations_example/tests``: Alembic schema, seeds, FastAPI
  app), when it passes on this checkout (it is run once with ``-n 0`` first; if that fails
  the rows are skipped and the reason printed);
- a generated suite of N database tests (default 1,000, in 10 modules): each inserts a row
  through ``db`` and asserts it sees exactly that one row, so any two tests sharing data
  (a collision) fail.

Every run gets a copy of one initdb'd cache without templates, and the generated suite a
schema new to it, so each run builds its templates: the table shows how many runs of the
template build the summary lines report (``template ... built`` must be 1 per template,
however many workers there are). Wall time is the whole ``python -m pytest`` process,
interpreter start and worker spawn included; "pytest's s" is the time pytest itself
reports (from the start of collection, so without the interpreter's start and imports).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import drop_own_spares, machine_info, print_load, print_table  # sibling file

BENCHMARK = {"title": "Scaling with pytest-xdist", "order": 60, "quick": ["--quick"]}

REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^template (\S+) \((.*?)\): (built|reused)[, ]", re.MULTILINE)
SESSION = re.compile(r" in ([\d.]+)s")
OUTCOME = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")

PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"

[tool.dbtest]
schema = "sql:schema.sql"
"""

SCHEMA = """\
-- bench_scale run {token}
CREATE TABLE bench_items (id serial PRIMARY KEY, name text NOT NULL, n int NOT NULL);
CREATE INDEX bench_items_name ON bench_items (name);
"""

TEST = '''

def test_{i:04d}(db):
    db.execute(INSERT, {{"name": "t{i:04d}", "n": {i}}})
    assert db.execute(COUNT_ALL).scalar() == 1  # another test's row here: a collision
    assert db.execute(MINE, {{"name": "t{i:04d}"}}).scalar() == {i}
'''

MODULE_HEAD = '''\
from sqlalchemy import text

INSERT = text("INSERT INTO bench_items (name, n) VALUES (:name, :n)")
COUNT_ALL = text("SELECT count(*) FROM bench_items")
MINE = text("SELECT n FROM bench_items WHERE name = :name")
'''


@dataclass
class Result:
    """One ``pytest`` run."""

    suite: str
    workers: int
    wall: float
    rc: int
    outcomes: dict[str, int]
    builds: dict[str, int]  # template (schema) -> how many summary lines say "built"
    collided: bool  # "already exists" in the output
    session: float  # pytest's own "in N s" (collection to the end, no interpreter start)

    @property
    def tests(self) -> int:
        return sum(self.outcomes.values())


def write_generated(folder: Path, tests: int, modules: int = 10) -> None:
    """A project with ``tests`` database tests spread over ``modules`` files."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    per = -(-tests // modules)
    for m in range(modules):
        ids = range(m * per, min(tests, (m + 1) * per))
        if ids:
            (folder / f"test_gen_{m:02d}.py").write_text(
                MODULE_HEAD + "".join(TEST.format(i=i) for i in ids))


def run_suite(suite: str, cwd: Path, args: list[str], workers: int, base_cache: Path,
              scratch: Path) -> Result:
    """Run pytest with a fresh copy of ``base_cache``; parse its summary."""
    cache = scratch / f"cache-{secrets.token_hex(4)}"
    subprocess.run(["cp", "-a", str(base_cache), str(cache)], check=True)
    if suite == "generated":  # a schema new to every run: its template must be built
        (cwd / "schema.sql").write_text(SCHEMA.format(token=secrets.token_hex(8)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBTEST_", "PYTEST_"))}
    env.update(DBTEST_CACHE_DIR=str(cache), DBTEST_BACKEND="local")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", str(workers),
           *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    out = proc.stdout + proc.stderr
    last = [line for line in out.splitlines() if " in " in line and OUTCOME.search(line)]
    outcomes: dict[str, int] = {}
    for count, word in OUTCOME.findall(last[-1] if last else ""):
        outcomes[word.rstrip("s") if word.startswith("error") else word] = int(count)
    builds = Counter(schema for _, schema, verb in SUMMARY.findall(out) if verb == "built")
    for _, schema, _ in SUMMARY.findall(out):
        builds.setdefault(schema, 0)
    if proc.returncode != 0:
        print(f"\n--- {suite} -n {workers} exited {proc.returncode}; its output ends with:\n"
              + "\n".join(out.splitlines()[-30:]) + "\n", flush=True)
    time.sleep(0.5)  # dbtest copies the run's templates into the cache in the background
    shutil.rmtree(cache, ignore_errors=True)
    took = SESSION.search(last[-1]) if last else None
    return Result(suite, workers, wall, proc.returncode, outcomes, dict(builds),
                  "already exists" in out, float(took.group(1)) if took else float("nan"))


def _builds_text(builds: dict[str, int]) -> str:
    if not builds:
        return "no summary line"
    counts = ", ".join(f"{n}x" for _, n in sorted(builds.items()))
    return f"{len(builds)} template{'s' if len(builds) > 1 else ''}: built {counts}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=1000, help="generated tests (1,000)")
    parser.add_argument("--workers", default="0,2,4", help="xdist -n values (0,2,4)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per row (median shown)")
    parser.add_argument("--quick", action="store_true",
                        help="200 generated tests, -n 0 and -n 2")
    opts = parser.parse_args(argv)
    tests = 200 if opts.quick else opts.tests
    if opts.quick and opts.workers == "0,2,4":
        opts.workers = "0,2"
    workers = [int(w) for w in opts.workers.split(",")]
    ignored = sorted(k for k in os.environ if k.startswith("DBTEST_"))

    from dbtest.provision._binaries import find_binaries
    from dbtest.provision._local import LocalCluster

    binaries = find_binaries()
    print("# bench_scale: the same suites with pytest-xdist worker counts\n")
    machine_info(f"{binaries.version} ({binaries.bindir})", [
        f"xdist worker counts: {workers}; generated tests: {tests}; rounds: {opts.rounds}"] +
        ([f"ignored from the environment: {', '.join(ignored)}"] if ignored else []))
    scratch = Path(tempfile.mkdtemp(prefix="dbtest-bench-scale-"))
    base_cache = scratch / "base-cache"
    try:
        LocalCluster(binaries, base_cache).ensure_cached()  # initdb once; every run copies it
        generated = scratch / "generated"
        write_generated(generated, tests)
        suites: list[tuple[str, Path, list[str]]] = []
        if opts.quick:  # the example suite (FastAPI app, seeds) takes minutes under -n 2
            print("- the example suite runs in the full run only; --quick runs the generated "
                  "one\n")
        else:  # also a warm-up (imports, spare cluster copies); not in the table
            probe = run_suite("example", REPO, ["migrations_example/tests"], 0, base_cache,
                              scratch)
            if probe.rc == 0:
                suites.append(("example", REPO, ["migrations_example/tests"]))
            else:
                print(f"- example suite skipped: `pytest migrations_example/tests` fails on "
                      f"this checkout (exit {probe.rc}, {probe.outcomes}); see its output "
                      f"above", flush=True)
        suites.append(("generated", generated, []))

        results: dict[tuple[str, int], list[Result]] = {}
        for _ in range(opts.rounds):  # round-robin, so background load hits every row alike
            for suite, cwd, args in suites:
                for n in workers:
                    results.setdefault((suite, n), []).append(
                        run_suite(suite, cwd, args, n, base_cache, scratch))
        print_load("at end")
        print()
        rows, ok = [], True
        for (suite, n), runs in results.items():
            wall = statistics.median(r.wall for r in runs)
            base = statistics.median(r.wall for r in results[(suite, workers[0])])
            last = runs[-1]
            passed = all(r.rc == 0 and r.outcomes.get("passed") == r.tests for r in runs)
            once = all(r.builds and all(v == 1 for v in r.builds.values()) for r in runs)
            clean = not any(r.collided for r in runs)
            ok = ok and passed and once and clean
            session = statistics.median(r.session for r in runs)
            rows.append([suite, f"-n {n}", f"{last.tests:,}",
                         "all" if passed else f"NO: {last.outcomes}", f"{wall:.2f}",
                         f"{session:.2f}", f"{last.tests / wall:,.0f}", f"{base / wall:.2f}x",
                         _builds_text(last.builds), "none" if clean else "'already exists'"])
        print_table(["suite", "xdist", "tests", "passed", "wall s", "pytest's s", "tests/s",
                     f"speed-up vs -n {workers[0]}", "template builds (per template)",
                     "collisions"], rows)
        print()
        print(f"{'PASS' if ok else 'FAIL'} every run passed, built each template once, no "
              f"collisions")
        return 0 if ok else 1
    finally:
        drop_own_spares(base_cache)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
