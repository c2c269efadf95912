"""Real applications on dbtest: each public app's suite run its own way, then on dbtest.

For each app: tests passed / failed / errors, rows leaked from test to test (``probe.py``:
rows a new connection sees after each test, compared with the starting state, summed over
tests), pytest's own time (median of ``--rounds`` runs without the probe), and the lines of
the conftest change (``<app>.patch`` in this folder).

The apps' code stays out of this repository. Prepare them once (paths are arguments):

    git clone https://github.com/fastapi/full-stack-fastapi-template APPS/fastapi-template
    git -C APPS/fastapi-template checkout a7275354   # last commit allowing Python 3.11
    python3 -m venv APPS/venv-fastapi
    APPS/venv-fastapi/bin/pip install -e APPS/fastapi-template/backend 'pytest<10' -e .

    git clone https://github.com/nyu-devops/lab-flask-tdd APPS/flask-tdd   # at 0427369
    python3 -m venv APPS/venv-flask
    APPS/venv-flask/bin/pip install flask==3.1.3 flask-sqlalchemy==3.1.1 \\
        'psycopg[binary]==3.3.4' 'retry2~=0.9.5' 'python-dotenv~=1.2.2' 'pytest~=9.0.3' \\
        'pytest-pspec~=0.0.4' 'pytest-cov~=7.1.0' 'factory-boy~=3.3.3' 'coverage~=7.14.1' -e .

Then ``python benchmarks/apps/run_apps.py --apps APPS [--rounds 3] [fastapi flask]``.
The baseline runs against a server started by ``dbtest up --detach --port 0`` (the apps'
own fixtures need a running server); the dbtest runs use the same server (``DBTEST_URL``),
so both sides pay the same connection costs. The conftest patch is applied for the dbtest
runs and reverted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class App:
    name: str
    folder: str  # inside --apps
    workdir: str  # where pytest runs, inside folder
    venv: str
    patch: str
    pytest_args: list[str]
    prepare: list[list[str]] = field(default_factory=list)  # baseline, before each run
    env: dict[str, str] = field(default_factory=dict)  # baseline, {url}/{host}/... filled in


APPS = {
    "fastapi": App(
        "fastapi/full-stack-fastapi-template @ a7275354",
        "fastapi-template",
        "backend",
        "venv-fastapi",
        "fastapi-template.patch",
        ["tests/"],
        prepare=[["alembic", "upgrade", "head"], ["python", "app/initial_data.py"]],
        env={
            "POSTGRES_SERVER": "{host}",
            "POSTGRES_PORT": "{port}",
            "POSTGRES_USER": "{user}",
            "POSTGRES_PASSWORD": "{password}",
            "POSTGRES_DB": "{db}",
        },
    ),
    "flask": App(
        "nyu-devops/lab-flask-tdd @ 0427369 (Flask-SQLAlchemy)",
        "flask-tdd",
        ".",
        "venv-flask",
        "flask-tdd.patch",
        [],
        env={"DATABASE_URI": "{url}"},
    ),
}


def _server(cache: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "dbtest", "up", "--detach", "--port", "0"],
        check=True,
        text=True,
        capture_output=True,
        env={**os.environ, "DBTEST_CACHE_DIR": str(cache)},
    )
    found = re.search(r"# dsn: (.*)", out.stdout)
    if found is None:
        raise SystemExit(f"no '# dsn:' line in the server's output:\n{out.stdout}{out.stderr}")
    dsn = dict(kv.split("=", 1) for kv in found.group(1).split())
    return {
        "host": dsn["host"],
        "port": dsn["port"],
        "user": dsn["user"],
        "password": dsn.get("password", ""),
    }


def _recreate(server: dict[str, str], db: str) -> None:
    import psycopg

    with psycopg.connect(
        host=server["host"],
        port=server["port"],
        user=server["user"],
        password=server["password"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')


def _pytest(app: App, root: Path, env: dict[str, str], probe: bool) -> dict[str, float]:
    bin_dir = root / app.venv / "bin"
    cwd = root / app.folder / app.workdir
    with tempfile.TemporaryDirectory() as tmp:
        run_env = {
            **os.environ,
            **env,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            # the probe; then any PYTHONPATH given (a dbtest checkout to run instead of
            # the one installed in the app's venv)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            "PROBE_OUT": f"{tmp}/probe.json",
        }
        args = [
            str(bin_dir / "pytest"),
            *app.pytest_args,
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            *(["-p", "probe"] if probe else []),
        ]
        out = subprocess.run(args, cwd=cwd, env=run_env, text=True, capture_output=True)
        summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
        result: dict[str, float] = {
            k: float(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?)", summary)
        }
        result["seconds"] = float(re.search(r"in ([\d.]+)s", summary).group(1))  # type: ignore[union-attr]
        if probe:
            result.update(json.loads(Path(f"{tmp}/probe.json").read_text()))
    return result


def _patch(app: App, root: Path, reverse: bool) -> None:
    subprocess.run(
        [
            "patch",
            "-p1",
            "--batch",
            *(["-R"] if reverse else ["-N"]),
            "-s",
            "-i",
            str(HERE / app.patch),
        ],
        cwd=root / app.folder,
        check=True,
    )


def _lines(app: App) -> tuple[int, int]:
    text = (HERE / app.patch).read_text().splitlines()
    added = sum(1 for line in text if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in text if line.startswith("-") and not line.startswith("---"))
    return added, removed


def run(app: App, root: Path, rounds: int, cache: Path) -> dict[str, object]:
    server = _server(cache)
    db = "app_baseline"
    url = (
        f"postgresql+psycopg://{server['user']}:{server['password']}@{server['host']}:"
        f"{server['port']}/{db}"
    )
    env = {k: v.format(url=url, db=db, **server) for k, v in app.env.items()}
    bin_dir = root / app.venv / "bin"

    def baseline(probe: bool) -> dict[str, float]:
        _recreate(server, db)
        for cmd in app.prepare:
            subprocess.run(
                [str(bin_dir / cmd[0]), *cmd[1:]],
                cwd=root / app.folder / app.workdir,
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
        return _pytest(app, root, {**env, **({"PROBE_URL": url} if probe else {})}, probe)

    base_probe = baseline(True)
    base_times = [baseline(False)["seconds"] for _ in range(rounds)]
    dbtest_env = {"DBTEST_URL": url.replace(f"/{db}", "/postgres"), "DBTEST_CACHE_DIR": str(cache)}
    _patch(app, root, reverse=False)
    try:
        ours_probe = _pytest(app, root, dbtest_env, True)  # builds the template if needed
        ours_times = [_pytest(app, root, dbtest_env, False)["seconds"] for _ in range(rounds)]
    finally:
        _patch(app, root, reverse=True)
    added, removed = _lines(app)
    return {
        "app": app.name,
        "baseline": base_probe,
        "dbtest": ours_probe,
        "baseline_s": statistics.median(base_times),
        "dbtest_s": statistics.median(ours_times),
        "conftest_added": added,
        "conftest_removed": removed,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("apps", nargs="*", help=f"some of {', '.join(APPS)} (default: all)")
    parser.add_argument("--apps-dir", type=Path, required=True, dest="root")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "dbtest-apps-cache"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.apps) - set(APPS))
    if unknown:
        parser.error(f"unknown app(s) {unknown}; choose from {list(APPS)}")
    args.apps = args.apps or list(APPS)
    rows: list[dict[str, Any]] = []
    try:
        for name in args.apps:
            rows.append(run(APPS[name], args.root, args.rounds, args.cache_dir))
            print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        subprocess.run(
            [sys.executable, "-m", "dbtest", "down"],
            env={**os.environ, "DBTEST_CACHE_DIR": str(args.cache_dir)},
            capture_output=True,
        )
    print(
        "| app | passed (own / dbtest) | failed+errors (own / dbtest) | rows leaked test "
        "to test (own / dbtest) | pytest s, median (own / dbtest) | conftest lines +/- |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        b, d = r["baseline"], r["dbtest"]
        bad = [
            int(x.get("failed", 0) + x.get("error", 0) + x.get("errors", 0))
            for x in (b, d)
        ]
        print(
            f"| {r['app']} | {int(b.get('passed', 0))} / {int(d.get('passed', 0))} | "
            f"{bad[0]} / {bad[1]} | {b['leaked_rows']} / {d['leaked_rows']} | "
            f"{r['baseline_s']:.2f} / {r['dbtest_s']:.2f} | "
            f"+{r['conftest_added']} / -{r['conftest_removed']} | "
        )
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
