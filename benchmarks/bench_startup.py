"""What installing dbtest costs a pytest run (issue 15), whole process, wall time.

    python benchmarks/bench_startup.py [--runs N]

Venvs are built from this environment without a download (``tests/_venvs.py``): the
same package versions everywhere, only the set differs:

- ``no dbtest``: dbtest's core dependencies (SQLAlchemy, psycopg, pytest...) without dbtest;
- ``core``: the same plus dbtest (``pip install dbtest``);
- ``all, no dbtest`` / ``all``: every extra's dependencies (Faker, pytest-asyncio,
  syrupy, ...) without / with dbtest (``pip install 'dbtest[all]'``).

Projects: a trivial test (``assert 1``) with and without ``[tool.dbtest]`` in its
pyproject, and one test using ``db`` (warm cache; the test imports nothing itself) with
the server start in the background (``prestart``: ``auto``) and on first use (``off``).
Every case runs once per round in a shuffled order, so background load hits all alike;
the table shows medians and p90 over the rounds and the difference of medians against
the baseline named in the last column.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import machine_info, ms, p90, print_load, print_table  # noqa: E402

from tests._venvs import make_venv  # noqa: E402

TRIVIAL = "def test_trivial():\n    assert 1 + 1 == 2\n"
DB_TEST = ('def test_db(db):\n'
           '    assert db.connection().exec_driver_sql("select 1").scalar() == 1\n')
NO_PLUGINS = ("-p", "no:faker", "-p", "no:asyncio", "-p", "no:syrupy")

# name: (venv, project, extra pytest args, baseline case)
CASES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "trivial, no dbtest": ("none", "plain", (), ""),
    "trivial, dbtest core": ("core", "plain", (), "trivial, no dbtest"),
    "trivial, dbtest core, [tool.dbtest] (prestart cancelled)":
        ("core", "configured", (), "trivial, no dbtest"),
    "trivial, dbtest core, [tool.dbtest], prestart items":
        ("core", "configured", ("--dbtest-prestart=items",), "trivial, no dbtest"),
    "trivial, all extras, no dbtest": ("all-none", "plain", (), ""),
    "trivial, all extras, no dbtest, -p no:faker": ("all-none", "plain",
                                                    ("-p", "no:faker"),
                                                    "trivial, all extras, no dbtest"),
    "trivial, all extras, no dbtest, -p no:asyncio": ("all-none", "plain",
                                                      ("-p", "no:asyncio"),
                                                      "trivial, all extras, no dbtest"),
    "trivial, all extras, no dbtest, -p no:syrupy": ("all-none", "plain",
                                                     ("-p", "no:syrupy"),
                                                     "trivial, all extras, no dbtest"),
    "trivial, all extras, no dbtest, all three off": ("all-none", "plain", NO_PLUGINS,
                                                      "trivial, no dbtest"),
    "trivial, dbtest[all]": ("all", "plain", (), "trivial, all extras, no dbtest"),
    "trivial, dbtest[all], all three off": ("all", "plain", NO_PLUGINS,
                                            "trivial, all extras, no dbtest, all three off"),
    "one db test, dbtest core, prestart off": ("core", "db", ("--dbtest-prestart=off",),
                                               "trivial, no dbtest"),
    "one db test, dbtest core, prestart items": ("core", "db", ("--dbtest-prestart=items",),
                                                 "trivial, no dbtest"),
    "one db test, dbtest core, prestart auto": ("core", "db", ("--dbtest-prestart=auto",),
                                                "trivial, no dbtest"),
}


def _projects(base: Path) -> dict[str, Path]:
    out = {}
    for name, pyproject, test in (("plain", "[project]\nname = 'x'\n", TRIVIAL),
                                  ("configured", "[tool.dbtest]\n", TRIVIAL),
                                  ("db", "[tool.dbtest]\n", DB_TEST)):
        folder = base / name
        folder.mkdir(parents=True)
        (folder / "pyproject.toml").write_text(pyproject)
        (folder / f"test_{name}.py").write_text(test)
        out[name] = folder
    return out


def _venvs(base: Path) -> dict[str, Path]:
    return {"none": make_venv(base / "none", ["dbtest"], dbtest=False),
            "core": make_venv(base / "core", ["dbtest"]),
            "all-none": make_venv(base / "all-none", ["dbtest[all]"], dbtest=False),
            "all": make_venv(base / "all", ["dbtest[all]"])}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(python: Path, project: Path, args: tuple[str, ...], env: dict[str, str]
         ) -> tuple[float, float]:
    """Wall seconds and CPU seconds (pytest and the children it waited for) of one run."""
    for attempt in range(3):
        cpu, started = _cpu(), time.perf_counter()
        done = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *args], cwd=project, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if done.returncode == 0:
            return elapsed, _cpu() - cpu
        # reported, then retried: other runs sharing the machine can disturb a start
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        print(f"FAILED (attempt {attempt + 1}) in {project.name} {args}: {tail}", flush=True)
    raise SystemExit("pytest failed three times in a row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--only", default="", help="only the cases whose name contains this "
                        "(and their baselines)")
    args = parser.parse_args()
    wanted = [n for n in CASES if args.only in n]
    for name in list(wanted):
        while CASES[name][3] and CASES[name][3] not in wanted:
            name = CASES[name][3]
            wanted.append(name)
    for name in list(CASES):
        if name not in wanted:
            del CASES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    with tempfile.TemporaryDirectory(prefix="dbtest-bench-startup-") as tmp:
        base = Path(tmp)
        venvs, projects = _venvs(base / "venvs"), _projects(base / "projects")
        from dbtest.provision._binaries import find_binaries

        machine_info(find_binaries().version, [f"rounds: {args.runs}"])
        samples: dict[str, list[float]] = {name: [] for name in CASES}
        cpus: dict[str, list[float]] = {name: [] for name in CASES}
        for venv, project, extra, _ in CASES.values():  # warm-up: caches, .pyc
            _run(venvs[venv], projects[project], extra, env)
        for _ in range(args.runs):
            order = list(CASES)
            random.shuffle(order)
            for name in order:
                venv, project, extra, _ = CASES[name]
                wall, cpu = _run(venvs[venv], projects[project], extra, env)
                samples[name].append(wall)
                cpus[name].append(cpu)
        print_load("at end")
    medians = {name: statistics.median(values) for name, values in samples.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpus.items()}
    rows = []
    for name, (_, _, _, baseline) in CASES.items():
        delta = (f"{(medians[name] - medians[baseline]) * 1000:+.0f} ms "
                 f"(CPU {(cpu_medians[name] - cpu_medians[baseline]) * 1000:+.0f} ms) vs {baseline}"
                 if baseline else "baseline")
        rows.append([name, ms(medians[name]), ms(p90(samples[name])), ms(cpu_medians[name]), delta])
    print_table(["case", "wall median ms", "wall p90 ms", "CPU median ms",
                 "difference of medians"], rows)


if __name__ == "__main__":
    main()
