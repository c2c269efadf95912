"""``dbtest cache key|path|wait`` and the CI cache workflow of docs/ci.md (issue 15):
a cache folder saved after a run, wiped, then restored, starts the next run warm (no
initdb, no migrations)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from dbtest._cachekey import cache_folder, cache_inputs, cache_key
from dbtest.cli import main
from dbtest.settings import resolve
from tests.test_plugin import unique_models

pytest_plugins = ["pytester"]


def _project(p: pytest.Pytester) -> Path:
    p.makepyfile(app_models=unique_models(p))
    p.makefile(".toml", pyproject=textwrap.dedent('''
        [tool.dbtest]
        schema = "metadata:app_models:Base"
        [tool.pytest.ini_options]
        pythonpath = ["."]
    '''))
    p.makepyfile(test_one='''
        def test_one(db):
            assert db.connection().exec_driver_sql("select count(*) from items").scalar() == 0
    ''')
    cache = p.path / "cache"
    p._monkeypatch.setenv("DBTEST_CACHE_DIR", str(cache))
    p._monkeypatch.chdir(p.path)
    return cache


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out.strip()


def _generation(cache: Path) -> str:
    (cluster,) = (cache / "clusters").iterdir()
    return os.readlink(cluster / "current")


def _generations(cache: Path) -> list[str]:
    (cluster,) = (cache / "clusters").iterdir()
    return sorted(p.name for p in cluster.iterdir() if p.name.startswith("gen-") and p.is_dir())


def test_restored_cache_starts_warm(pytester: pytest.Pytester,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    cache = _project(pytester)
    cold = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    cold.assert_outcomes(passed=1)
    built = re.search(r"template (dbtest_tpl_\w+) \(metadata:app_models:Base\): built, 1 "
                      r"migration step", cold.stdout.str())
    assert built, cold.stdout.str()
    _cli(capsys, "cache", "wait")
    key = _cli(capsys, "cache", "key")
    assert re.fullmatch(r"dbtest-pg\d+-[0-9a-f]{16}", key)
    verbose = _cli(capsys, "cache", "key", "-v")
    assert f"# template: {built.group(1)}" in verbose  # the template the run built
    folder = Path(_cli(capsys, "cache", "path"))
    assert folder == cache / "clusters"
    generation, generations = _generation(cache), _generations(cache)

    # CI: save the folder (a tar, as actions/cache does), a new runner: nothing cached
    archive = pytester.path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname="clusters")
    shutil.rmtree(cache)
    assert _cli(capsys, "cache", "key") == key  # the key needs no cache
    cache.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="tar")

    warm = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    warm.assert_outcomes(passed=1)
    warm.stdout.fnmatch_lines([f"*template {built.group(1)} *: reused*"])
    assert "built" not in warm.stdout.str()
    assert _generation(cache) == generation  # no initdb: the restored cluster was used
    _cli(capsys, "cache", "wait")
    assert _generations(cache) == generations  # and nothing new was kept


def test_key_changes_with_the_schema(pytester: pytest.Pytester) -> None:
    _project(pytester)

    def key() -> str:  # a process of its own: the models module is imported afresh
        result = pytester.run(sys.executable, "-m", "dbtest", "cache", "key", "-v")
        assert result.ret == 0, result.stderr.str()
        return result.stdout.str()

    before = key()
    assert "# template: dbtest_tpl_" in before
    models = pytester.path / "app_models.py"
    models.write_text(models.read_text() + "\n    extra: Mapped[int] = mapped_column(default=0)\n")
    after = key()
    assert after.splitlines()[0] != before.splitlines()[0]
    assert after.splitlines()[2:4] == before.splitlines()[2:4]  # same backend and cluster
    settings = resolve()
    assert cache_folder(settings) == settings.cache_dir / "clusters"


def test_key_without_a_local_cluster(tmp_path: Path) -> None:
    settings = resolve({"url": "postgresql://u@127.0.0.1:9/x", "cache_dir": tmp_path})
    assert cache_inputs(settings)["cluster"] is None
    assert cache_key(settings).startswith("dbtest-url-")


def test_wait_sees_a_generation_whose_writer_runs(tmp_path: Path) -> None:
    from dbtest._cachekey import _busy
    from dbtest.provision import _lifetime as lifetime

    cluster = tmp_path / "clusters" / "pg15-0123456789abcdef"
    mine = cluster / f"gen-1.partial-{lifetime.identity()}"  # this process is its writer
    gone = cluster / "gen-2.partial-999999999-1"  # a writer that no longer runs
    for path in (mine, gone, cluster / "gen-3"):
        path.mkdir(parents=True)
    assert _busy(tmp_path / "clusters") == [mine]
