"""Finding PostgreSQL server binaries, on fake install layouts (no server is started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dbtest.errors import PostgresNotFound
from dbtest.provision import _binaries as binaries
from dbtest.provision._binaries import MIN_MAJOR, find_binaries, probe


def fake_bindir(folder: Path, version: str, *, initdb: bool = True,
                output: str | None = None) -> Path:
    """A folder whose ``postgres --version`` prints ``version`` like the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    text = output if output is not None else f"postgres (PostgreSQL) {version}"
    tools = ["postgres", "initdb"] if initdb else ["postgres"]
    for tool in tools:
        script = folder / tool
        script.write_text(f"#!/bin/sh\necho '{text}'\n")
        script.chmod(0o755)
    return folder


@pytest.fixture
def debian(tmp_path: Path) -> str:
    """A fake ``/usr/lib/postgresql/*/bin`` root; returns its glob."""
    return str(tmp_path / "usr/lib/postgresql/*/bin")


def find(tmp_path: Path, *globs: str, pg_bin: Path | None = None,
         path: Path | None = None) -> binaries.PgBinaries:
    # an empty PATH folder keeps the machine's real binaries out of every test
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    return find_binaries(pg_bin, path_env=str(path or empty), install_globs=globs)


def test_newest_version_wins(tmp_path: Path, debian: str) -> None:
    root = tmp_path / "usr/lib/postgresql"
    fake_bindir(root / "14/bin", "14.2")
    fake_bindir(root / "16/bin", "16.1")
    fake_bindir(root / "9/bin", "15.10")  # folder names do not decide, versions do

    found = find(tmp_path, debian)

    assert (found.version, found.major) == ("16.1", 16)
    assert found.bindir == (root / "16/bin").resolve()
    assert found.source == "install folder"


def test_minor_versions_compare_as_numbers(tmp_path: Path, debian: str) -> None:
    root = tmp_path / "usr/lib/postgresql"
    fake_bindir(root / "a/bin", "15.9")
    fake_bindir(root / "b/bin", "15.18 (Debian 15.18-0+deb12u1)")

    assert find(tmp_path, debian).version == "15.18"


def test_path_is_searched_but_a_newer_install_folder_wins(tmp_path: Path, debian: str) -> None:
    on_path = fake_bindir(tmp_path / "opt/pg13/bin", "13.4")
    fake_bindir(tmp_path / "usr/lib/postgresql/15/bin", "15.3")

    assert find(tmp_path, path=on_path).source == "PATH"
    assert find(tmp_path, debian, path=on_path).version == "15.3"


def test_pg_config_bindir_is_used(tmp_path: Path) -> None:
    bindir = fake_bindir(tmp_path / "custom/bin", "16.2")
    tools = tmp_path / "tools"
    tools.mkdir()
    pg_config = tools / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho '{bindir}'\n")
    pg_config.chmod(0o755)

    found = find(tmp_path, path=tools)

    assert (found.source, found.version) == ("pg_config", "16.2")


def test_pg_bin_overrides_discovery(tmp_path: Path, debian: str) -> None:
    fake_bindir(tmp_path / "usr/lib/postgresql/16/bin", "16.1")
    chosen = fake_bindir(tmp_path / "mine/bin", "13.9")

    found = find(tmp_path, debian, pg_bin=chosen)

    assert (found.version, found.source) == ("13.9", "pg_bin")


def test_pg_bin_without_binaries_names_the_setting(tmp_path: Path, debian: str) -> None:
    fake_bindir(tmp_path / "usr/lib/postgresql/16/bin", "16.1")
    wrong = tmp_path / "nothing-here"
    wrong.mkdir()

    with pytest.raises(PostgresNotFound, match="pg_bin") as info:
        find(tmp_path, debian, pg_bin=wrong)
    assert str(wrong) in str(info.value)


def test_too_old_version_is_refused(tmp_path: Path, debian: str) -> None:
    fake_bindir(tmp_path / "usr/lib/postgresql/11/bin", "11.22")

    with pytest.raises(PostgresNotFound, match=f"11.22 .* too old.* {MIN_MAJOR} or newer"):
        find(tmp_path, debian)


def test_nothing_found_lists_the_places_searched(tmp_path: Path, debian: str) -> None:
    rpm = str(tmp_path / "usr/pgsql-*/bin")

    with pytest.raises(PostgresNotFound) as info:
        find(tmp_path, debian, rpm)

    message = str(info.value)
    for place in (debian, rpm, "PATH", "pg_config --bindir"):
        assert place in message
    assert "apt-get install postgresql" in message  # and the fix


@pytest.mark.parametrize("layout", ["no initdb", "not executable", "not postgres"])
def test_unusable_folders_are_skipped(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "bin"
    if layout == "no initdb":
        fake_bindir(folder, "15.1", initdb=False)
    elif layout == "not executable":
        fake_bindir(folder, "15.1")
        (folder / "postgres").chmod(0o644)
    else:
        fake_bindir(folder, "", output="something else 15.1")

    assert probe(folder, "test") is None


def test_version_outputs_are_remembered(tmp_path: Path) -> None:
    folder = fake_bindir(tmp_path / "bin", "15.4")
    memo = tmp_path / "cache" / "binaries.json"
    assert probe(folder, "test") is not None
    binaries.save_memo(memo)

    binaries._VERSION_MEMO.clear()
    binaries._MEMO_LOADED.discard(memo)
    binaries.load_memo(memo)

    # Same size and mtime, other output: only the remembered answer still says 15.4,
    # so probing did not spawn `postgres --version` again.
    script = folder / "postgres"
    st = script.stat()
    script.write_text(script.read_text().replace("15.4", "99.9"))
    os.utime(script, ns=(st.st_atime_ns, st.st_mtime_ns))
    found = probe(folder, "test")
    assert found is not None and found.version == "15.4"
