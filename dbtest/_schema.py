"""Schema sources: what a template database is migrated with.

``alembic:<alembic.ini>``, ``metadata:<module>:<attr>``, ``sql:<glob>`` and
``callable:<module>:<func>``. Each source can *fingerprint* its inputs (the template
name carries that hash) and *apply* itself to a SQLAlchemy connection.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dbtest._sql import run_script
from dbtest.errors import ConfigError, MigrationError

if TYPE_CHECKING:
    from sqlalchemy import Connection, MetaData

__all__ = ["SchemaSource", "load_schema", "parse_schema_spec"]

KINDS = ("alembic", "metadata", "sql", "callable")


class SchemaSource(Protocol):
    """One way of creating the schema."""

    spec: str
    verifies: bool

    def fingerprint(self) -> str:
        """A hash of every input that defines the resulting schema."""

    def apply(self, connection: Connection) -> int:
        """Create the schema through ``connection``; return the number of steps applied."""

    def verify(self, connection: Connection) -> str | None:
        """``None`` when the database holds this schema, else what is wrong."""

    def expectation(self) -> str | None:
        """What the source says the built schema is, cheaply (the metadata's tables and
        columns, the Alembic heads); stored in the template's mark and compared on reuse.
        ``None`` when the source cannot say."""


@dataclass(frozen=True)
class SchemaSpec:
    kind: str
    parts: tuple[str, ...]


def parse_schema_spec(spec: str, *, where: str = "schema") -> SchemaSpec:
    """Split ``kind:arg[:arg]`` and check its shape (not that the files exist)."""
    kind, sep, rest = spec.partition(":")
    shapes = {"alembic": 1, "metadata": 2, "sql": 1, "callable": 2}
    if not sep or kind not in shapes:
        raise ConfigError(f"{where} = {spec!r} is not a schema source. Use one of "
                          "alembic:<path/alembic.ini>, metadata:<module>:<attr>, "
                          "sql:<glob>, callable:<module>:<func>.")
    parts = tuple(rest.rsplit(":", 1)) if shapes[kind] == 2 else (rest,)
    if len(parts) != shapes[kind] or not all(parts):
        example = {"metadata": "metadata:myapp.models:Base",
                   "callable": "callable:myapp.db:create_schema"}[kind]
        raise ConfigError(f"{where} = {spec!r}: {kind} needs a module and an attribute; "
                          f"write it as {kind}:<module>:<attr>, e.g. {example!r}")
    return SchemaSpec(kind, parts)


def _hash(*chunks: bytes | str) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        data = chunk.encode() if isinstance(chunk, str) else chunk
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _import(module: str, root: Path, spec: str) -> Any:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise ConfigError(f"schema {spec!r}: importing module {module!r} failed: {detail}. "
                          f"Fix the module or the schema setting.") from exc


def _module_inputs(module: str, root: Path, extra: Path | None = None) -> str:
    """A hash of ``module``'s file (and ``extra``) and of every project-local module they
    import, transitively (see :mod:`dbtest._inputs`)."""
    from dbtest._inputs import hash_files, local_closure

    start = [Path(f) for f in (getattr(sys.modules.get(module), "__file__", None),) if f]
    if extra is not None:
        start.append(extra)
    return hash_files(local_closure(start, root), root)


def module_attr(module: str, name: str, root: Path, spec: str) -> Any:
    """``module.name``, importing *module* with *root* on the path; *spec* names the setting
    in the ConfigError raised when either is missing."""
    mod = _import(module, root, spec)
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ConfigError(f"schema {spec!r}: module {module!r} has no attribute {name!r}. "
                          f"Check the attribute name in the schema setting.") from None


class MetadataSource:
    """``metadata:<module>:<attr>``: ``create_all`` of a MetaData or declarative Base."""

    #: whether :meth:`verify` checks anything (else no connection is opened for it)
    verifies = True

    def __init__(self, spec: str, module: str, attr: str, root: Path) -> None:
        self.spec = spec
        value = module_attr(module, attr, root, spec)
        metadata = getattr(value, "metadata", value)
        from sqlalchemy import MetaData

        if not isinstance(metadata, MetaData):
            raise ConfigError(f"schema {spec!r}: {module}.{attr} is neither a MetaData nor a "
                              f"declarative Base (got {type(value).__name__}). Point the schema "
                              f"setting at a MetaData or a declarative Base.")
        self.metadata: MetaData = metadata
        self.inputs = _module_inputs(module, root)

    def fingerprint(self) -> str:
        from sqlalchemy.dialects import postgresql
        from sqlalchemy.schema import CreateIndex, CreateTable

        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        ddl = []
        for table in self.metadata.sorted_tables:
            ddl.append(str(CreateTable(table).compile(dialect=dialect)))
            ddl.extend(str(CreateIndex(ix).compile(dialect=dialect))
                       for ix in sorted(table.indexes, key=lambda i: str(i.name)))
        # the imported modules too: events (after_create DDL), mixins, ... shape the schema
        return _hash("metadata", self.inputs, *ddl)

    def apply(self, connection: Connection) -> int:
        self.metadata.create_all(connection)
        return len(self.metadata.sorted_tables)  # one step per table created

    def verify(self, connection: Connection) -> str | None:
        from sqlalchemy import inspect as sa_inspect

        have = set(sa_inspect(connection).get_table_names(schema=self.metadata.schema))
        missing = sorted(t.name for t in self.metadata.sorted_tables
                         if t.schema == self.metadata.schema and t.name not in have)
        if missing:
            return f"tables missing: {', '.join(missing)}"
        want = {(t.name, c.name) for t in self.metadata.sorted_tables
                if t.schema == self.metadata.schema for c in t.columns}
        rows = connection.exec_driver_sql(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = "
            "a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attnum > 0 "
            "AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND n.nspname = "
            "coalesce(%(schema)s, current_schema())",
            {"schema": self.metadata.schema}).all()
        lacking = sorted(f"{t}.{c}" for t, c in want - {(r[0], r[1]) for r in rows})
        return f"columns missing: {', '.join(lacking)}" if lacking else None

    def expectation(self) -> str | None:
        return _hash("tables", *sorted(f"{t.schema}.{t.name}.{c.name}"
                                       for t in self.metadata.sorted_tables
                                       for c in t.columns))


class CallableSource:
    """``callable:<module>:<func>``: ``func(connection)`` or ``func(connection, ctx)``
    creates the schema (see :mod:`dbtest._build` for the contract)."""

    #: whether :meth:`verify` checks anything (else no connection is opened for it)
    verifies = False

    def __init__(self, spec: str, module: str, attr: str, root: Path) -> None:
        self.spec = spec
        self.func: Callable[[Connection], object] = module_attr(module, attr, root, spec)
        if not callable(self.func):
            raise ConfigError(f"schema {spec!r}: {module}.{attr} is not callable (got "
                              f"{type(self.func).__name__}). Point the schema setting at a "
                              f"function taking a SQLAlchemy Connection.")
        try:
            where = Path(inspect.getsourcefile(self.func) or "")
        except TypeError:
            where = None
        self.inputs = _module_inputs(module, root, where if where and where.is_file()
                                     else None)

    def fingerprint(self) -> str:
        # the callable's file and every project-local module it imports, transitively
        return _hash("callable", self.spec, self.inputs)

    def apply(self, connection: Connection) -> int:
        from dbtest._build import run_callable  # the contract: see dbtest._build

        run_callable(self.func, connection, self.spec)
        return 1

    def verify(self, connection: Connection) -> str | None:
        return None

    def expectation(self) -> str | None:
        return None


class SqlSource:
    """``sql:<glob>``: SQL files applied in name order."""

    #: whether :meth:`verify` checks anything (else no connection is opened for it)
    verifies = False

    def __init__(self, spec: str, pattern: str, root: Path) -> None:
        self.spec = spec
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        self.files = sorted((Path(p) for p in glob.glob(full, recursive=True)),
                            key=lambda p: p.name)
        if not self.files:
            raise ConfigError(f"schema {spec!r}: no file matches {full}. Check the glob "
                              f"(relative to {root}).")

    def fingerprint(self) -> str:
        return _hash("sql", *(c for f in self.files for c in (f.name, f.read_bytes())))

    def apply(self, connection: Connection) -> int:
        import psycopg

        for path in self.files:
            text = path.read_text()
            try:
                run_script(connection, text)
            except Exception as exc:
                orig = getattr(exc, "orig", exc)
                where = ""
                diag = getattr(orig, "diag", None)
                pos = getattr(diag, "statement_position", None) if diag else None
                if isinstance(orig, psycopg.Error) and pos:
                    where = f", line {text[: int(pos)].count(chr(10)) + 1}"
                first = str(orig).strip().splitlines()[0] if str(orig).strip() else repr(orig)
                raise MigrationError(f"SQL file {path}{where}: {first}. Fix the SQL file; the "
                                     f"template was not built.") from None
        return len(self.files)

    def verify(self, connection: Connection) -> str | None:
        return None

    def expectation(self) -> str | None:
        return None


class AlembicSource:
    """``alembic:<alembic.ini>``: ``alembic upgrade head`` through the user's env.py."""

    #: whether :meth:`verify` checks anything (else no connection is opened for it)
    verifies = True

    def __init__(self, spec: str, ini: str, root: Path) -> None:
        self.spec = spec
        self.ini = Path(ini) if Path(ini).is_absolute() else root / ini
        if not self.ini.is_file():
            raise ConfigError(f"schema {spec!r}: {self.ini} does not exist. Point the schema "
                              f"setting at your alembic.ini.")
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        self.config = Config(str(self.ini))
        try:
            self.script = ScriptDirectory.from_config(self.config)
        except Exception as exc:
            problem = str(exc).strip().rstrip(".")
            raise ConfigError(f"schema {spec!r}: {self.ini}: {problem}. Check script_location.") \
                from None
        self.versions = Path(self.script.versions)
        self.root = root

    def heads(self) -> tuple[str, ...]:
        heads = tuple(sorted(self.script.get_heads()))
        if len(heads) > 1:
            raise MigrationError(f"{self.ini}: the Alembic history has {len(heads)} heads "
                                 f"({', '.join(heads)}); merge them (alembic merge heads).")
        return heads

    def fingerprint(self) -> str:
        """The ini, every file of the script folder (env.py, script.py.mako, versions) and
        of each version location, and the project-local modules these import."""
        from dbtest._inputs import hash_files, local_closure

        folders = {Path(self.script.dir).resolve()}
        folders.update(Path(p).resolve() for p in self.script._version_locations)
        files = {p.resolve() for d in folders if d.is_dir() for p in d.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts
                 and p.suffix in (".py", ".mako", ".sql", ".ini", "")}
        files.add(self.ini.resolve())
        return _hash("alembic", hash_files(local_closure(files, self.root), self.root))

    def expectation(self) -> str | None:
        return "heads " + ",".join(self.heads())

    def apply(self, connection: Connection) -> int:
        from alembic import command

        heads = self.heads()
        steps = sum(1 for _ in self.script.iterate_revisions(heads, "base")) if heads else 0
        # Alembic's cookbook: hand env.py the connection through config.attributes; the URL
        # is there too for an env.py that builds its own engine.
        self.config.attributes["connection"] = connection
        self.config.set_main_option("sqlalchemy.url", connection.engine.url.render_as_string(
            hide_password=False).replace("%", "%%"))
        from dbtest._connect_guard import ConnectGuard

        # an env.py that builds its own engine from the app's settings is stopped before it
        # connects anywhere else
        guard = ConnectGuard(connection, f"alembic upgrade head ({self.ini})")
        try:
            with guard:
                command.upgrade(self.config, "head")
        except Exception as exc:
            raise MigrationError(guard.message() if guard.foreign else
                                 self._describe_failure(exc)) from exc
        finally:
            self.config.attributes.pop("connection", None)
        if guard.foreign:  # env.py caught the refusal and went on
            raise MigrationError(guard.message())
        return steps

    def _describe_failure(self, exc: BaseException) -> str:
        revision, filename = None, None
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            path = Path(frame.filename)
            if self.versions in path.parents:
                filename, revision = f"{path}:{frame.lineno}", self._revision_of(path)
                break
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        if revision:
            return (f"Alembic revision {revision} ({filename}) failed: {type(orig).__name__}: "
                    f"{text}. Fix the migration; dbtest kept no template.")
        return (f"alembic upgrade head ({self.ini}) failed: {type(orig).__name__}: {text}. "
                f"Check env.py and the migrations; dbtest kept no template.")

    def _revision_of(self, path: Path) -> str | None:
        for rev in self.script.walk_revisions():
            if rev.path and Path(rev.path).resolve() == path.resolve():
                return str(rev.revision)
        return None

    def verify(self, connection: Connection) -> str | None:
        from sqlalchemy import text

        try:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except Exception:
            return "no alembic_version table"
        have = tuple(sorted(r[0] for r in rows))
        want = self.heads()
        return None if have == want else f"alembic_version is {have}, the scripts' heads {want}"


def load_schema(spec: str | None, root: Path) -> SchemaSource | None:
    """The schema source for a setting string (``None`` means an empty database)."""
    if not spec:
        return None
    parsed = parse_schema_spec(spec)
    if parsed.kind == "alembic":
        return AlembicSource(spec, parsed.parts[0], root)
    if parsed.kind == "metadata":
        return MetadataSource(spec, parsed.parts[0], parsed.parts[1], root)
    if parsed.kind == "sql":
        return SqlSource(spec, parsed.parts[0], root)
    return CallableSource(spec, parsed.parts[0], parsed.parts[1], root)


def metadata_of(value: Any) -> MetaData:
    """The MetaData of a MetaData or a declarative Base."""
    return getattr(value, "metadata", value)  # type: ignore[no-any-return]
