"""Settings precedence: argument > --dbtest-* > DBTEST_* > [tool.dbtest] > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtest.errors import ConfigError, mask_url
from dbtest.settings import resolve


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dbtest]\nbackend = "local"\nisolation = "fresh"\nseeds = "data/seeds"\n'
        'template_seeds = ["base"]\nleaks = "warn"\n')
    return tmp_path


def test_defaults_without_pyproject(tmp_path: Path) -> None:
    s = resolve(environ={}, pyproject=None, root=tmp_path)
    assert (s.backend, s.isolation, s.schema, s.leaks) == ("auto", "savepoint", None, "error")
    assert s.seeds == tmp_path / "seeds"


def test_pyproject_values_and_relative_paths(project: Path) -> None:
    s = resolve(environ={}, root=project)
    assert s.backend == "local" and s.isolation == "fresh" and s.leaks == "warn"
    assert s.seeds == project / "data" / "seeds"
    assert s.template_seeds == ("base",)


def test_env_beats_pyproject(project: Path) -> None:
    s = resolve(environ={"DBTEST_ISOLATION": "savepoint", "DBTEST_TEMPLATE_SEEDS": "a,b"},
                root=project)
    assert s.isolation == "savepoint" and s.template_seeds == ("a", "b")


def test_cli_beats_env_and_argument_beats_cli(project: Path) -> None:
    env = {"DBTEST_BACKEND": "embedded"}
    assert resolve(cli={"backend": "docker"}, environ=env, root=project).backend == "docker"
    s = resolve({"backend": "url", "url": "postgresql://u@h/d"}, cli={"backend": "docker"},
                environ=env, root=project)
    assert s.backend == "url"


def test_cli_none_means_not_given(project: Path) -> None:
    assert resolve(cli={"backend": None}, environ={}, root=project).backend == "local"


def test_url_implies_url_backend(tmp_path: Path) -> None:
    s = resolve(environ={"DBTEST_URL": "postgresql://u@h/d"}, pyproject=None, root=tmp_path)
    assert s.backend == "url"


@pytest.mark.parametrize(("source", "culprit"), [
    ({"backend": "podman"}, "'backend'"),
    ({"isolation": "none"}, "isolation"),
    ({"port": "eighty"}, "port"),
    ({"schema": "django:settings"}, "schema"),
    ({"schema": "metadata:only_module"}, "module and an attribute"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_values_name_the_setting(tmp_path: Path, source: dict[str, object],
                                     culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        resolve(source, environ={}, pyproject=None, root=tmp_path)


def test_env_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DBTEST_LEAKS"):
        resolve(environ={"DBTEST_LEAKS": "ignore"}, pyproject=None, root=tmp_path)


def test_unknown_pyproject_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.dbtest]\nshema = "sql:x.sql"\n')
    with pytest.raises(ConfigError, match="shema"):
        resolve(environ={}, root=tmp_path)


def test_broken_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.dbtest\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml"):
        resolve(environ={}, root=tmp_path)


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = resolve(environ={}, pyproject=None, root=tmp_path)
    with pytest.raises(AttributeError):
        s.backend = "local"  # type: ignore[misc]
    assert s.replace(isolation="fresh").isolation == "fresh"


@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://bob:s3cr%40t@db:5432/app", "postgresql://bob:***@db:5432/app"),
    ("postgresql+asyncpg://bob:pw@h/d", "postgresql+asyncpg://bob:***@h/d"),
    ("host=/tmp port=5432 password=hunter2 user=x", "host=/tmp port=5432 password=*** user=x"),
    ("host=h password='a b' user=x", "host=h password=*** user=x"),
    ("postgresql://bob@h/d", "postgresql://bob@h/d"),
])
def test_mask_url(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_errors_mask_passwords() -> None:
    assert "hunter2" not in str(ConfigError("cannot reach postgresql://u:hunter2@h/d"))


def test_schema_inputs_from_pyproject_and_environment(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dbtest]\nschema_inputs = ["schema/*.yaml", "data/**/*.csv"]\n')
    assert resolve(environ={}, root=tmp_path).schema_inputs == ("schema/*.yaml",
                                                                "data/**/*.csv")
    env = {"DBTEST_SCHEMA_INPUTS": "a.yaml, b/*.json"}
    assert resolve(environ=env, root=tmp_path).schema_inputs == ("a.yaml", "b/*.json")


def test_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.dbtest]\nschemas = "sql:x.sql"\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[tool\.dbtest\]: schemas "
                                          r"\(did you mean: schemas -> schema\?\)"):
        resolve(environ={}, root=tmp_path)


def test_repr_never_shows_the_password(tmp_path: Path) -> None:
    s = resolve({"url": "postgresql://acc:s3cr3t-pw@db.example:5432/app"}, environ={},
                pyproject=None, root=tmp_path)
    assert "s3cr3t-pw" not in repr(s) and "acc:***@db.example" in repr(s)
    assert s.url == "postgresql://acc:s3cr3t-pw@db.example:5432/app"


def test_replace_keeps_defaults_unchecked_like_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    # `dbtest up --port 0` in a `dbtest[factories]` install (no asyncpg) failed: replace()
    # re-validated the default async_driver as if the user had set it
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "asyncpg" else real(name, *a))
    base = resolve(read_env=False, pyproject=None)
    assert base.replace(port=0).port == 0
    assert base.replace(port=0).async_driver == "asyncpg"  # still the default, unchecked
    with pytest.raises(ConfigError, match="asyncpg package is not installed"):
        base.replace(async_driver="asyncpg")  # asked for: checked
