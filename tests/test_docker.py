"""The docker backend, for real: a container per image and cache dir, kept for reuse,
removed by ``dbtest down`` or when its users die; foreign containers are never touched.

The image comes from ``DBTEST_DOCKER_IMAGE`` (``.ci/run`` sets it to what
``.ci/postgres-image`` built from Debian packages), else the newest local
``dbtest/postgres`` image, else the default image when it is present locally. Each test
uses a cache dir of its own, so its containers are its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import dbtest
from dbtest import commands
from dbtest.errors import ConfigError, ProvisionError, RefusedError, StartupFailed
from dbtest.provision._docker import (
    CACHE_LABEL,
    DEFAULT_IMAGE,
    LABEL,
    PGDATA,
    DockerPostgres,
    cache_label,
    docker_available,
)
from dbtest.provision._pgconf import SERVER_SETTINGS
from dbtest.settings import resolve

REPO = Path(__file__).resolve().parents[1]


# -- without Docker -------------------------------------------------------------------------
def test_docker_image_setting(tmp_path: Path) -> None:
    assert resolve(environ={}, pyproject=None, root=tmp_path).docker_image == DEFAULT_IMAGE
    env = {"DBTEST_DOCKER_IMAGE": "registry.example.com/pg:16.4"}
    assert resolve(environ=env, pyproject=None, root=tmp_path).docker_image == env[
        "DBTEST_DOCKER_IMAGE"]
    with pytest.raises(ConfigError, match=r"DBTEST_DOCKER_IMAGE must name one image"):
        resolve(environ={"DBTEST_DOCKER_IMAGE": "postgres 16"}, pyproject=None, root=tmp_path)


def test_container_has_the_local_servers_settings(tmp_path: Path) -> None:
    pg = DockerPostgres("postgres:16.4", tmp_path)
    command = pg.command()
    for key, value in SERVER_SETTINGS.items():
        assert f"{key}={value}" in command  # one place for both backends
    # the name is a function of image, settings and cache dir: same inputs, same container
    assert DockerPostgres("postgres:16.4", tmp_path).name == pg.name
    assert DockerPostgres("postgres:15", tmp_path).name != pg.name
    assert DockerPostgres("postgres:16.4", tmp_path / "other").name != pg.name


def test_docker_without_daemon_fails_clearly(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody-listens.sock")
    with pytest.raises(ProvisionError, match=r"backend 'docker'.*no Docker daemon answers"), \
            dbtest.ephemeral_postgres("docker", cache_dir=str(tmp_path)):
        pass


# -- with Docker ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    ok, why = docker_available(timeout=2)
    if not ok:
        pytest.skip(f"the docker backend needs a Docker daemon: {why}. .ci/postgres-image "
                    f"installs and starts one")
    import docker

    api = docker.from_env()
    yield api
    api.close()


def test_container_is_built_with_tmpfs_data_and_labels(client: Any, tmp_path: Path) -> None:
    # building testcontainers' container object opens a Docker client: a daemon is needed
    pg = DockerPostgres("postgres:16.4", tmp_path)
    tc = pg.build()
    assert tc.tmpfs == {PGDATA: ""} and tc.env["PGDATA"] == PGDATA
    assert "--wal-segsize=1" in tc.env["POSTGRES_INITDB_ARGS"]
    assert tc._kwargs["labels"] == {LABEL: pg.key, CACHE_LABEL: cache_label(tmp_path),
                                     "dbtest.image": "postgres:16.4"}


@pytest.fixture(scope="module")
def image(client: Any) -> str:
    import docker.errors

    wanted = os.environ.get("DBTEST_DOCKER_IMAGE")
    if wanted:
        client.images.get(wanted)  # named, so it must be there: fail, don't skip
        return wanted
    ours = sorted(client.images.list("dbtest/postgres"), key=lambda i: i.attrs["Created"])
    if ours:
        return str(ours[-1].tags[0])
    try:
        client.images.get(DEFAULT_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"no PostgreSQL image here and none is pulled by tests: set "
                    f"DBTEST_DOCKER_IMAGE, or build one with .ci/postgres-image (no registry "
                    f"needed), or docker pull {DEFAULT_IMAGE}")
    return DEFAULT_IMAGE


def query(dsn: str, sql: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def ours(client: Any, cache: Path) -> list[str]:
    """Names of the containers labelled for ``cache``, in one call (the high-level list
    inspects each afterwards, and fails on one that a watchdog removes meanwhile)."""
    found = client.api.containers(all=True,
                                  filters={"label": f"{CACHE_LABEL}={cache_label(cache)}"})
    return sorted(c["Names"][0].lstrip("/") for c in found)


def run_env(cache: Path, image: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DBTEST_", "PYTEST_", "TESTCONTAINERS_RYUK"))}
    # Ryuk is not disabled here: dbtest must not need it to be
    env.update(DBTEST_BACKEND="docker", DBTEST_DOCKER_IMAGE=image, DBTEST_CACHE_DIR=str(cache))
    return env


def example_suite(cache: Path, image: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "migrations_example/tests", "-q", "-p",
         "no:cacheprovider"], cwd=REPO, env=run_env(cache, image), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_example_app_suite_runs_concurrently_then_reuses_the_template(
        client: Any, image: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    try:
        example_suite_twice_then_down(client, image, cache, tmp_path)
    finally:  # a failure must not leave the kept container running
        commands.down(resolve({"cache_dir": str(cache)}))


def example_suite_twice_then_down(client: Any, image: str, cache: Path, tmp_path: Path) -> None:
    # two runs at once, cold: one container for both, each template built once
    first, second = example_suite(cache, image), example_suite(cache, image)
    outs = [finish(first), finish(second)]
    assert len(ours(client, cache)) == 1
    both = "\n".join(outs)
    assert both.count("built, 5 migration step(s) applied") == 2, both  # two templates
    # a later run finds the container kept, with its templates: zero migrations
    again = finish(example_suite(cache, image))
    assert "built" not in again and again.count(": reused (verified") == 2, again
    kept = ours(client, cache)
    assert len(kept) == 1 and client.containers.get(kept[0]).status == "running"
    down = subprocess.run([sys.executable, "-m", "dbtest", "down"], env=run_env(cache, image),
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    assert f"removed the docker container {kept[0]}" in down.stderr + down.stdout
    assert ours(client, cache) == []


KILLED = """
import json, os, time

def test_hold(dbtest_server):
    with open(os.environ["HOLD_FILE"], "w") as fh:
        json.dump(dbtest_server.details, fh)
    time.sleep(120)
"""


def test_kill_9_of_pytest_leaves_no_container(client: Any, image: str, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.dbtest]\n")
    (tmp_path / "test_hold.py").write_text(KILLED)
    cache, hold = tmp_path / "cache", tmp_path / "hold.json"
    env = {**run_env(cache, image), "HOLD_FILE": str(hold)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_hold.py"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not hold.exists() or not hold.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the test never ran"
            time.sleep(0.05)
        details = json.loads(hold.read_text())
        assert ours(client, cache) == [details["container"]]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    while ours(client, cache) and time.monotonic() - killed < 5:
        time.sleep(0.1)
    assert ours(client, cache) == [], "the container outlived its owner by 5 s"


def test_foreign_containers_are_never_touched(client: Any, image: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pg = DockerPostgres(image, cache)
    tag = uuid.uuid4().hex[:8]
    keep_alive = {"entrypoint": ["sleep"], "command": ["300"], "detach": True}
    foreign = [
        # the very image dbtest uses, without its labels
        client.containers.run(image, name=f"i18-foreign-{tag}", **keep_alive),
        # our cache's label but not a name dbtest gives: not ours either
        client.containers.run(image, name=f"i18-lookalike-{tag}", labels={
            CACHE_LABEL: cache_label(cache), LABEL: "0"}, **keep_alive),
    ]
    try:
        with dbtest.ephemeral_postgres("docker", docker_image=image,
                                       cache_dir=str(cache)) as server:
            assert query(server.dsn, "SHOW fsync") == "off"
        # it held no template: nothing is kept
        assert ours(client, cache) == [f"i18-lookalike-{tag}"]
        assert commands.down(resolve({"cache_dir": str(cache)})).containers == ()
        # a container that has dbtest's name but not its label is refused, not replaced
        squatter = client.containers.run(image, name=pg.name, **keep_alive)
        foreign.append(squatter)
        with pytest.raises(RefusedError, match=rf"{pg.name} exists but dbtest did not make it"), \
                dbtest.ephemeral_postgres("docker", docker_image=image, cache_dir=str(cache)):
            pass
        for container in foreign:
            container.reload()
            assert container.status == "running", container.name
    finally:
        for container in foreign:
            container.remove(force=True)


def test_an_image_that_cannot_be_had_says_so(client: Any, tmp_path: Path) -> None:
    # a registry on a closed loopback port: the pull fails at once, and stays on this machine
    with pytest.raises(StartupFailed, match=r"127\.0\.0\.1:9/dbtest-none:1 container did not "
                                            r"start.*set docker_image"), \
            dbtest.ephemeral_postgres("docker", docker_image="127.0.0.1:9/dbtest-none:1",
                                      cache_dir=str(tmp_path)):
        pass
    assert ours(client, tmp_path) == []
