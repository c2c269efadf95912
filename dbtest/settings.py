"""Settings, resolved once into a frozen object.

Precedence, highest first: explicit argument > ``--dbtest-*`` CLI option > ``DBTEST_*``
environment variable > ``[tool.dbtest]`` in ``pyproject.toml`` > default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dbtest.errors import ConfigError

__all__ = ["BACKENDS", "HELP", "Settings", "default_cache_dir", "find_pyproject", "resolve"]

BACKENDS = ("auto", "local", "embedded", "docker", "url")
ISOLATIONS = ("savepoint", "fresh")
LEAK_MODES = ("error", "warn")
DRIVERS = ("psycopg", "psycopg2")
ASYNC_DRIVERS = ("asyncpg", "psycopg")
#: the module each driver setting needs, and the package that provides it
_DRIVER_PACKAGES = {"psycopg": ("psycopg", "psycopg[binary]"),
                    "psycopg2": ("psycopg2", "psycopg2-binary"),
                    "asyncpg": ("asyncpg", "asyncpg")}
PRESTART_MODES = ("auto", "items", "off")

# One help string per setting, shared by the pytest options, the CLI and the docs.
HELP: dict[str, str] = {
    "schema": "schema source: alembic:<alembic.ini>, metadata:<module>:<attr>, sql:<glob> "
    "or callable:<module>:<func>",
    "seeds": "folder of seed sets",
    "template_seeds": "seed sets loaded into the template (comma separated)",
    "backend": "where the server comes from: auto, local, embedded, docker or url",
    "url": "existing server for backend=url; dbtest creates only its own databases there",
    "isolation": "default per-test isolation: savepoint or fresh",
    "cache_dir": "where cached clusters and metadata live",
    "pg_bin": "folder holding initdb and postgres (overrides discovery)",
    "leaks": "what to do when a savepoint test committed data for real: error or warn",
    "seed": "random seed for Faker and factories (default: derived from each test id)",
    "port": "listen on 127.0.0.1:<port> (0 = a free port) instead of a private unix socket",
    "pool_size": "fresh_db databases kept cloned ahead of time",
    "schema_inputs": "further files that shape the schema (globs, comma separated): a "
    "change rebuilds the template",
    "docker_image": "image of the docker backend's container (pin your production version, "
    "e.g. postgres:16.4, or a local tag)",
    "session_options": "options of the db/async_db sessions: expire_on_commit, autoflush, "
    "autobegin, info, class, async_class (a table; JSON in the environment)",
    "driver": "sync driver of dbtest's engines and template builds: psycopg or psycopg2",
    "async_driver": "async driver of dbtest's async engines: asyncpg or psycopg",
    "execution_options": "SQLAlchemy execution_options for dbtest's engines (a TOML table, or "
    "JSON in DBTEST_EXECUTION_OPTIONS), e.g. schema_translate_map",
    "connect_args": "driver connect_args for dbtest's engines (a TOML table, or JSON), e.g. "
    "options = \"-csearch_path=tenant,public\"",
    "setup": "module:function called once per test process before the first database is "
    "used, whether the template is built or reused (in-process side effects of app init)",
    "cache_max_mb": "prune cached cluster generations (beyond the current one and those in "
    "use) until the cache takes at most this many MiB",
    "reset_sequences": "savepoint tests: put every sequence back where the template left it "
    "before each test (true or false), for tests that expect the first id to be 1",
    "prestart": "start the server in the background while pytest collects: auto (when a "
    "collected test needs it, or from the start when [tool.dbtest] exists), items (only "
    "the former) or off",
}


def default_cache_dir() -> Path:
    """The platform's user cache dir for dbtest (``~/.cache/dbtest`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("dbtest"))


@dataclass(frozen=True)
class Settings:
    """Every dbtest setting, resolved. Build it with :func:`resolve`."""

    schema: str | None = None
    seeds: Path = Path("seeds")
    template_seeds: tuple[str, ...] = ()
    backend: Literal["auto", "local", "embedded", "docker", "url"] = "auto"
    url: str | None = None
    isolation: Literal["savepoint", "fresh"] = "savepoint"
    cache_dir: Path = field(default_factory=default_cache_dir)
    pg_bin: Path | None = None
    leaks: Literal["error", "warn"] = "error"
    seed: int | None = None
    port: int | None = None
    pool_size: int = 2
    schema_inputs: tuple[str, ...] = ()
    #: the docker backend's image (the official image of the server major version)
    docker_image: str = "postgres:16"
    #: options of the ``db`` / ``async_db`` sessions (see :mod:`dbtest._sessions`)
    session_options: dict[str, Any] = field(default_factory=dict)
    driver: Literal["psycopg", "psycopg2"] = "psycopg"
    async_driver: Literal["asyncpg", "psycopg"] = "asyncpg"
    execution_options: dict[str, Any] = field(default_factory=dict)
    connect_args: dict[str, Any] = field(default_factory=dict)
    setup: str | None = None
    cache_max_mb: int | None = None
    prestart: Literal["auto", "items", "off"] = "auto"
    reset_sequences: bool = False
    #: the folder relative paths in settings are resolved against (pyproject's folder)
    root: Path = field(default_factory=Path.cwd)

    def __repr__(self) -> str:  # the url's password never shows (tracebacks, --showlocals)
        from dbtest.errors import mask_url

        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                           for f in dataclasses.fields(self))
        return mask_url(f"Settings({fields})")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated.

        Only what differs from the defaults is carried over as explicit: a default that was
        never set (``async_driver = "asyncpg"`` in an install without asyncpg) stays a
        default, checked where it is used, as in :func:`resolve`.
        """
        defaults = {f.name: f.default for f in dataclasses.fields(self)
                    if f.default is not dataclasses.MISSING}
        carried = {key: value for key, value in dataclasses.asdict(self).items()
                   if key not in defaults or value != defaults[key]}
        return resolve(overrides={**carried, **changes}, read_env=False,
                       pyproject=None, root=changes.get("root", self.root))


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: the working dir)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _read_pyproject(path: Path) -> dict[str, Any]:
    import tomllib  # here, not at the top: the pytest plugin imports this module

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}. Fix the file or remove [tool.dbtest].")\
            from None
    section = data.get("tool", {}).get("dbtest", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.dbtest] must be a table (got "
                          f"{type(section).__name__}); write it as a [tool.dbtest] section of "
                          f"key = value lines")
    return section


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = environ.get(f"DBTEST_{name.upper()}")
        if value not in (None, ""):
            out[name] = value
    return out


_FIELDS = [f.name for f in dataclasses.fields(Settings) if f.name != "root"]


def resolve(
    overrides: Mapping[str, Any] | None = None,
    cli: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    read_env: bool = True,
    pyproject: Path | Literal["find"] | None = "find",
    root: Path | None = None,
) -> Settings:
    """Resolve settings from every source, highest precedence first.

    ``overrides`` are explicit arguments, ``cli`` the ``--dbtest-*`` options (``None``
    values mean "not given"). ``pyproject="find"`` looks upward from ``root`` (or the
    working dir); relative paths resolve against the folder of the file that was found.
    """
    if pyproject == "find":
        pyproject = find_pyproject(root)
    file_values = _read_pyproject(pyproject) if pyproject else {}
    if root is None:
        root = pyproject.parent if pyproject else Path.cwd()
    unknown = sorted(set(file_values) - set(_FIELDS))
    if unknown:
        import difflib

        near = [f"{k} -> {m[0]}" for k in unknown
                if (m := difflib.get_close_matches(k, _FIELDS, n=1))]
        hint = f" (did you mean: {', '.join(near)}?)" if near else ""
        raise ConfigError(
            f"{pyproject}: unknown key(s) in [tool.dbtest]: {', '.join(unknown)}{hint}. "
            f"Known keys: {', '.join(_FIELDS)}. Rename or remove the unknown key(s)."
        )
    merged: dict[str, tuple[Any, str]] = {}
    layers: list[tuple[Mapping[str, Any], str]] = [
        (file_values, f"[tool.dbtest] in {pyproject}"),
        (_env_values(os.environ if environ is None else environ) if read_env else {}, "env"),
        (cli or {}, "option"),
        (overrides or {}, "argument"),
    ]
    for values, origin in layers:
        for key, value in values.items():
            if key == "root" or value is None:
                continue
            if key not in _FIELDS:
                raise ConfigError(f"unknown dbtest setting {key!r} (from {origin}); "
                                  f"known settings: {', '.join(_FIELDS)}. Rename it to one "
                                  f"of them.")
            merged[key] = (value, origin)
    kwargs = {key: _convert(key, value, origin, root) for key, (value, origin) in merged.items()}
    if "url" in merged and "backend" not in merged:
        kwargs["backend"] = "url"  # naming a server means using it
    kwargs.setdefault("seeds", root / "seeds")
    return Settings(root=root, **kwargs)


def _where(key: str, origin: str) -> str:
    if origin == "env":
        return f"DBTEST_{key.upper()}"
    if origin == "option":
        return f"--dbtest-{key.replace('_', '-')}"
    return f"{key!r} ({origin})"


def _convert(key: str, value: Any, origin: str, root: Path) -> Any:
    where = _where(key, origin)
    if key in ("seeds", "cache_dir", "pg_bin"):
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else root / path
    if key in ("template_seeds", "schema_inputs"):
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(s.strip() for s in items if str(s).strip())
    if key in ("seed", "port", "pool_size", "cache_max_mb"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {value!r}. Set it to a whole "
                              f"number.") from None
        if number < 0 or (key == "port" and number > 65535):
            limits = "0-65535 (0 = a free port)" if key == "port" else "0 or more"
            raise ConfigError(f"{where} is out of range: {number}. Use {limits}.")
        return number
    choices = {"backend": BACKENDS, "isolation": ISOLATIONS, "leaks": LEAK_MODES,
               "driver": DRIVERS, "async_driver": ASYNC_DRIVERS,
               "prestart": PRESTART_MODES}.get(key)
    if choices is not None:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {value!r}. "
                              f"Set it to one of those.")
        if key in ("driver", "async_driver"):
            _check_driver(text, where)
        return text
    if key in ("execution_options", "connect_args"):
        return _table(value, where)
    if key == "reset_sequences":
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in ("true", "false", "1", "0", "yes", "no"):
            return value if isinstance(value, bool) else text in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if key == "setup":
        text = str(value).strip()
        if text.count(":") != 1 or not all(text.split(":")):
            raise ConfigError(f"{where} must be 'module:function', got {value!r}. Name the "
                              f"function to call, e.g. setup = \"myapp.db:configure\".")
        return text
    if key == "docker_image":
        text = str(value).strip()
        if not text or any(c.isspace() for c in text):
            raise ConfigError(f"{where} must name one image, e.g. postgres:16 or "
                              f"registry.example.com/postgres:16.4; got {value!r}.")
        return text
    if key == "session_options":
        from dbtest._sessions import check_session_options

        return check_session_options(value, where)
    if key == "schema":
        from dbtest._schema import parse_schema_spec

        parse_schema_spec(str(value), where=where)  # fail early, with the setting's name
        return str(value)
    return value


def _check_driver(driver: str, where: str) -> None:
    """Fail now, naming the setting, when the driver's package is not installed."""
    import importlib.util

    module, package = _DRIVER_PACKAGES[driver]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{where} = {driver!r}, but the {module} package is not installed. "
                          f"Install it (pip install {package}) or choose another driver.")


def _table(value: Any, where: str) -> dict[str, Any]:
    """A mapping setting: a TOML table, a dict, or JSON text (environment variables)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} must be a JSON object, got {value!r} ({exc}). Write it "
                              f"as e.g. {{\"schema_translate_map\": {{\"tenant\": \"t1\"}}}}.")\
                from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of options, got {type(value).__name__}. "
                          f"Write it as a [tool.dbtest.<key>] table or a JSON object.")
    return dict(value)
