"""A start waits for its project's newer generation that the previous run still writes.

The previous run's templates reach the cache through a background copy (``persist``); a
run started right after must start from that copy, not build every template again
(issue 16: an unchanged rerun applied every migration once more).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from dbtest.provision import _generations as generations
from dbtest.provision import _lifetime as lifetime


def _cluster(folder: Path) -> Path:
    (folder / "global").mkdir(parents=True)
    (folder / "PG_VERSION").write_text("15\n")
    return folder


def _dead_identity() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{proc.pid}-1"


def _pick(cluster: Path, project: str, wait: float = 10.0) -> tuple[str, float]:
    started = time.monotonic()
    picked = generations.pick(cluster, project, wait=wait)
    assert picked is not None
    picked[1].release()
    return picked[0].name, time.monotonic() - started


def _setup(tmp_path: Path, writer: str, project: str = "a") -> tuple[Path, Path]:
    cluster = tmp_path / "pg15-0123456789abcdef"
    _cluster(cluster / "gen-1")
    generations.write_meta(cluster / "gen-1", "a")
    generations.point_current(cluster, "gen-1")
    partial = _cluster(cluster / f"gen-2.partial-{writer}")
    generations.write_meta(cluster / "gen-2", project)  # as store() does: before the copy
    return cluster, partial


def test_a_start_waits_for_its_projects_generation_being_written(tmp_path: Path) -> None:
    cluster, partial = _setup(tmp_path, lifetime.identity())

    def finish() -> None:
        time.sleep(0.3)
        partial.rename(cluster / "gen-2")

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        name, seconds = _pick(cluster, "a")
    finally:
        writer.join()
    assert name == "gen-2"
    assert seconds >= 0.25


def test_no_wait_for_a_dead_writer_another_project_or_past_the_limit(tmp_path: Path) -> None:
    cluster, _ = _setup(tmp_path / "dead", _dead_identity())
    assert _pick(cluster, "a")[0] == "gen-1"
    cluster, _ = _setup(tmp_path / "other", lifetime.identity(), project="b")
    name, seconds = _pick(cluster, "a")
    assert (name, seconds < 0.2) == ("gen-1", True)
    cluster, _ = _setup(tmp_path / "slow", lifetime.identity())
    name, seconds = _pick(cluster, "a", wait=0.2)
    assert name == "gen-1" and 0.15 < seconds < 2.0


def test_store_names_the_project_before_the_copy_and_prune_drops_it(tmp_path: Path) -> None:
    cluster, partial = _setup(tmp_path, _dead_identity())
    assert (cluster / "gen-2.json").exists()
    removed = [p.name for p, _, _ in generations.prune([cluster])]
    assert removed == [partial.name]
    assert not (cluster / "gen-2.json").exists()
