"""Whole pytest processes for ``bench_provision.py``: what one database test costs a run.

Every row is ``python -m pytest -q -p no:cacheprovider <file>`` timed from spawn to exit:

- ``bare``: a venv with nothing but the same pytest, on dbtest's interpreter (the project
  before it added dbtest), one trivial test;
- ``noauto``: dbtest's venv with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` (no plugin loaded);
- ``trivial``: dbtest's venv, one trivial test: what installing dbtest (and its
  dependencies' plugins) costs a run without database tests;
- ``db``: dbtest's venv, one test using ``db`` (insert + flush + count), warm cache and
  template, the previous run {IDLE} s earlier;
- ``peer-bare`` / ``peer-pp``: the peers' venv, one trivial test / one test using
  pytest-postgresql's ``postgresql`` fixture with the same insert + count, its schema loaded
  into its template (``--postgresql-load``), fsync off (its best configuration).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _peers
from _driver import FAST_SETTINGS
from _peers import ms, p90, print_table, verdict

IDLE = 1.5
MODELS = """from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
"""
SCHEMA_SQL = "CREATE TABLE items (id serial PRIMARY KEY, name varchar(50) NOT NULL);\n"
BARE_TEST = "def test_bare():\n    assert 1 + 1 == 2\n"
DB_TEST = """from sqlalchemy import func, select

from models import Item


def test_db(db):
    db.add(Item(name="x"))
    db.flush()
    assert db.scalar(select(func.count()).select_from(Item)) == 1
"""
PP_TEST = """def test_pp(postgresql):
    with postgresql.cursor() as cur:
        cur.execute("insert into items (name) values ('x')")
        cur.execute("select count(*) from items")
        assert cur.fetchone() == (1,)
"""
PYPROJECT = """[tool.pytest.ini_options]
pythonpath = ["."]

[tool.dbtest]
schema = "metadata:models:Base"
"""
ROWS = [  # key, label, compared with
    ("bare", "venv with only pytest {pytest}, 1 trivial test", None),
    ("noauto", "dbtest's venv, PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, 1 trivial test", "bare"),
    ("trivial", "dbtest's venv, 1 trivial test (plugins loaded)", "bare"),
    ("db", "dbtest's venv, 1 test using `db` (warm cache)", "bare"),
    ("peer-bare", "peers' venv, 1 trivial test", None),
    ("peer-pp", "peers' venv, 1 pytest-postgresql `postgresql` test", "peer-bare"),
]


class PytestRows:
    """The projects, venvs and samples of the whole-process rows."""

    def __init__(self, root: Path, cache: Path, env: _peers.PeerEnv | None,
                 binaries: Any) -> None:
        self.proj, self.cache, self.env, self.binaries = root / "proj", cache, env, binaries
        self.proj.mkdir()
        for name, text in (("pyproject.toml", PYPROJECT), ("models.py", MODELS),
                           ("schema.sql", SCHEMA_SQL), ("test_bare.py", BARE_TEST),
                           ("test_db.py", DB_TEST), ("test_pp.py", PP_TEST)):
            (self.proj / name).write_text(text)
        _peers.give_to(self.proj, env.account if env else None)
        self.bare_py = _peers.ensure_bare_venv()
        self.samples: dict[str, list[float]] = {}
        self.failures: dict[str, str] = {}
        self.checks: list[str] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DBTEST_", "PYTEST_"))}
        self.denv = {**base, "DBTEST_CACHE_DIR": str(cache), "DBTEST_BACKEND": "local"}
        self.run("warmup", [sys.executable], "test_db.py", self.denv)  # builds the template
        self.samples.clear()

    def run(self, key: str, python: list[str], test: str, env: dict[str, str],
            *extra: str) -> None:
        cmd = [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, test]
        started = time.perf_counter()
        if key.startswith("peer") and self.env is not None:
            proc = self.env.run(cmd, cwd=self.proj, timeout=300)
        else:
            proc = subprocess.run(cmd, cwd=self.proj, env=env, capture_output=True,
                                  text=True, check=False, timeout=300)
        seconds = time.perf_counter() - started
        if proc.returncode != 0 or "1 passed" not in proc.stdout:
            why = f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}"
            self.failures.setdefault(key, why)
            if not key.startswith("peer"):
                self.checks.append(f"pytest row {key}: {why}")
            return
        self.samples.setdefault(key, []).append(seconds)

    def round(self) -> None:
        if self.bare_py is not None:
            self.run("bare", [str(self.bare_py)], "test_bare.py", self.denv)
        else:
            self.failures["bare"] = "the bare venv could not be made"
        self.run("noauto", [sys.executable], "test_bare.py",
                 {**self.denv, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        self.run("trivial", [sys.executable], "test_bare.py", self.denv)
        time.sleep(IDLE)
        self.run("db", [sys.executable], "test_db.py", self.denv)
        if self.env is None or not self.env.usable("pytest-postgresql"):
            self.failures.setdefault("peer-pp", "peers skipped")
            return
        py = [str(self.env.python)]
        self.run("peer-bare", py, "test_bare.py", {})
        bt = _peers.private_dir("pp-bt-", self.env.account, str(self.proj))
        self.run("peer-pp", py, "test_pp.py", {}, f"--basetemp={bt}",
                 f"--postgresql-exec={self.binaries.tool('pg_ctl')}",
                 f"--postgresql-load={self.proj / 'schema.sql'}",
                 f"--postgresql-postgres-options={FAST_SETTINGS}")

    def med(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    def report(self) -> None:
        import importlib.metadata

        print("\n## Whole pytest process with one test, spawn to exit (ms, medians)\n")
        rows = []
        for key, label, base in ROWS:
            label = label.format(pytest=importlib.metadata.version("pytest"))
            values, ref = self.samples.get(key), self.med(base) if base else None
            if not values:
                rows.append([label, "-", "-", self.failures.get(key, "not run")[:100]])
                continue
            extra = "" if ref is None else \
                f"{(statistics.median(values) - ref) * 1000:+,.0f} ms vs {base}"
            rows.append([label, ms(statistics.median(values)), ms(p90(values)),
                         f"{extra} (n={len(values)})"])
        print_table(["process", "median ms", "p90 ms", "difference"], rows)

    def targets(self) -> None:
        bare, db, trivial = self.med("bare"), self.med("db"), self.med("trivial")
        if bare is None or db is None:
            print(f"MISS pytest with one `db` test <= bare pytest + 300 ms: not measured "
                  f"({self.failures.get('bare') or self.failures.get('db')})")
            return
        print(f"{verdict(db - bare <= 0.300)} pytest with one `db` test <= pytest in a venv "
              f"without dbtest + 300 ms: {(db - bare) * 1000:+,.0f} ms ({ms(db)} vs "
              f"{ms(bare)} ms)")
        if db - bare > 0.300 and trivial is not None:
            plugins, rest = (trivial - bare) * 1000, (db - trivial) * 1000
            print(f"     where the {(db - bare) * 1000:+,.0f} ms go: {plugins:+,.0f} ms is "
                  f"loading the plugins of dbtest and its dependencies (a trivial test in "
                  f"dbtest's venv against the bare venv: issue 15's lean core and lazy imports "
                  f"remove it), {rest:+,.0f} ms the server start, the template check, the "
                  f"session and the test (the start rows above: a spare server or a start "
                  f"overlapped with collection would hide most of it)")
        pp, pbare = self.med("peer-pp"), self.med("peer-bare")
        peer = f"; pytest-postgresql's `postgresql` test adds {(pp - pbare) * 1000:+,.0f} ms " \
            "to its own venv's bare run" if pp is not None and pbare is not None else ""
        print(f"HEADLINE a pytest run with one `db` test takes {ms(db)} ms, "
              f"{(db - bare) * 1000:+,.0f} ms over pytest without dbtest{peer}")
        if trivial is not None:
            print(f"HEADLINE installing dbtest adds {(trivial - bare) * 1000:+,.0f} ms to a "
                  f"pytest run without database tests ({ms(trivial)} vs {ms(bare)} ms; the "
                  f"plugins of dbtest and its dependencies)")
