"""The ``dbtest`` command line: a thin layer over :mod:`dbtest.commands`.

Each subcommand is registered in :data:`SUBCOMMANDS` with the :mod:`dbtest.commands`
function it runs (its docstring's first line is the help), a function adding its own
arguments, and a runner that calls it and prints the result. Adding one (``seed``,
``snapshot``, ``migrations``) is one ``@subcommand(...)`` runner here.

Exit codes: 0 done, 1 a :class:`~dbtest.errors.DbtestError` (printed as
``dbtest: error: <message>``, no traceback), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest import commands
from dbtest.errors import DbtestError, mask_url
from dbtest.settings import BACKENDS, HELP

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main", "subcommand"]

PROG = "dbtest"
#: the global options, as settings keys; each maps to ``--<key>`` at "argument" precedence
GLOBAL_SETTINGS = ("backend", "url", "cache_dir")

Runner = Callable[["Settings", argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """One ``dbtest <name>``: the command function, its arguments and how to print."""

    name: str
    function: Callable[..., Any]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner

    @property
    def help(self) -> str:
        """The first line of the command function's docstring."""
        return self.description.splitlines()[0].rstrip(".")

    @property
    def description(self) -> str:
        """The first paragraph of the command function's docstring, without reST marks."""
        return (self.function.__doc__ or "").strip().split("\n\n")[0].replace("``", "'")


#: every subcommand, in the order ``dbtest --help`` lists them
SUBCOMMANDS: dict[str, Subcommand] = {}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def subcommand(function: Callable[..., Any],
               add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments,
               name: str | None = None) -> Callable[[Runner], Runner]:
    """Register the decorated runner as ``dbtest <name>`` (default: the function's name)."""
    def register(run: Runner) -> Runner:
        key = name or function.__name__
        SUBCOMMANDS[key] = Subcommand(key, function, add_arguments, run)
        return run
    return register


def _lazy(module: str, attr: str) -> Callable[..., Any]:
    """A command function from a module imported only when the subcommand runs (its
    docstring is read for the help, which imports the module: they are light)."""
    import importlib

    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


# -- output -----------------------------------------------------------------------------
def _say(line: str = "") -> None:
    print(line, flush=True)  # flushed: `up` blocks right after printing its URL


def _error(message: str) -> None:
    first, *rest = mask_url(message).splitlines() or [""]
    print(f"{PROG}: error: {first}", file=sys.stderr)
    for line in rest:  # a server log tail or a list of what was tried
        print(f"  {line}", file=sys.stderr)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _again(args: argparse.Namespace, command: str) -> str:
    """``dbtest <command>`` with the global options this run was given (for hints)."""
    parts = [PROG, command]
    for key in GLOBAL_SETTINGS:
        value = getattr(args, key, None)
        if value is not None and key != "url":
            parts += [f"--{key.replace('_', '-')}", shlex.quote(str(value))]
    return " ".join(parts)


# -- up / down --------------------------------------------------------------------------
def _add_up(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", "-d", action="store_true",
                        help="leave the server running for later runs (stop it with "
                             "'dbtest down')")
    parser.add_argument("--port", type=int, default=None, metavar="PORT", help=HELP["port"])


def _print_server(result: commands.UpResult, args: argparse.Namespace) -> None:
    # The output is valid shell (comments and one export): eval "$(dbtest up --detach)"
    if result.external:
        _say(f"# {PROG}: the server at {mask_url(result.url)} answers (PostgreSQL "
             f"{result.version}, backend url); nothing to start")
        return
    where = f"pid {result.pid}, data in {result.run_dir}" if result.pid else result.backend
    state = "already up" if result.already_running else "up"
    _say(f"# {PROG}: PostgreSQL {result.version} ({result.backend}) is {state}: {where}")
    _say(f"# url: {result.url}")
    _say(f"# dsn: {result.dsn}")
    _say(f"export DBTEST_URL={shlex.quote(result.url)}")
    if result.detached:
        _say(f"# stop it with: {_again(args, 'down')}")
    else:
        _say("# Ctrl-C stops it and deletes its data")


@subcommand(commands.up, _add_up)
def _run_up(settings: Settings, args: argparse.Namespace) -> int:
    result = commands.up(settings, detach=args.detach, port=args.port,
                         on_ready=lambda started: _print_server(started, args))
    if args.detach:
        _print_server(result, args)
    else:
        print(f"{PROG}: stopped", file=sys.stderr)
    return 0


def _add_down(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="stop the server even while test sessions use it")


@subcommand(commands.down, _add_down)
def _run_down(settings: Settings, args: argparse.Namespace) -> int:
    result = commands.down(settings, force=args.force)
    for name in result.containers:
        _say(f"# {PROG}: removed the docker container {name} (kept for reuse)")
    for name, pids in result.containers_in_use.items():
        _say(f"# {PROG}: left the docker container {name} running: in use by pid "
             f"{', '.join(map(str, pids))}")
    if not result.found:
        _say(f"# {PROG}: no detached server is up (nothing recorded in {result.state_file})")
        return 0
    if result.sessions:
        _say(f"# {PROG}: stopped while {len(result.sessions)} session(s) used it (--force): "
             + ", ".join(f"pid {s.get('pid')}" for s in result.sessions))
    if result.was_running:
        _say(f"# {PROG}: stopped the server (pid {result.pid}) and deleted {result.run_dir}")
    else:
        _say(f"# {PROG}: the detached server (pid {result.pid}) had stopped already; "
             f"removed what it left")
    _say("unset DBTEST_URL")
    return 0


# -- doctor -----------------------------------------------------------------------------
@subcommand(commands.doctor)
def _run_doctor(settings: Settings, args: argparse.Namespace) -> int:
    report = commands.doctor(settings)
    rows = [("backend", "usable", "version", "detail")]
    rows += [(c.backend, "yes" if c.usable else "no", c.version or "-", c.detail)
             for c in report.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = " " * (sum(widths) + 2 * 3)
    for row, check in zip(rows, (None, *report.checks), strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        detail_lines = row[3].splitlines() or [""]
        _say("  ".join([*cells, detail_lines[0]]))
        for line in detail_lines[1:]:
            _say(indent + line)
        if check is not None and check.fix:
            _say(f"{indent}fix: {check.fix}")
    _say()
    picked = report.auto if report.selected == "auto" else report.selected
    _say(f"backend: {report.selected}" + (f" -> {picked or 'none usable'}"
                                          if report.selected == "auto" else ""))
    _say(f"cache dir: {report.cache_dir}" + (f" ({report.cache_problem})"
                                             if report.cache_problem else ""))
    if report.detached is not None:
        d = report.detached
        whose = "this project" if report.auto == "detached" else \
            f"{d.project_root or 'another project'}; auto does not join it from here"
        _say(f"detached server: {mask_url(d.url)} ({d.describe()}, for {whose})")
    if not report.ok:
        _error(f"backend {picked or report.selected!r} cannot provide a server here; "
               f"apply its fix above")
        return 1
    return 0


# -- clean ------------------------------------------------------------------------------
def _add_clean(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", "-n", action="store_true",
                        help="list what would be removed, remove nothing")


@subcommand(commands.clean, _add_clean)
def _run_clean(settings: Settings, args: argparse.Namespace) -> int:
    report = commands.clean(settings, dry_run=args.dry_run)
    if not report.items:
        _say(f"{PROG}: nothing to clean ({_size(report.size_before)} in use)")
        return 0
    _say("would remove:" if report.dry_run else "removed:")
    failed = 0
    for item in report.items:
        note = f"  (kept: {item.error})" if item.error else ""
        failed += item.error is not None
        _say(f"  {_size(item.size):>10}  {item.kind}: {item.path}{note}")
    verb = "would free" if report.dry_run else "freed"
    freed = sum(i.size for i in report.items if report.dry_run or i.removed)
    _say(f"{verb} {_size(freed)} in {len(report.items) - failed} item(s)")
    after = "" if report.dry_run else f", after: {_size(report.size_after)}"
    _say(f"this cache dir's things: before: {_size(report.size_before)}{after}")
    return 1 if failed else 0


# -- seed -------------------------------------------------------------------------------
def _add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="seed sets to load")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same rows)")
    parser.add_argument("--scale", type=int, default=1, help="multiplier for the sets' rows")
    parser.add_argument("--dry-run", action="store_true",
                        help="load, report, then roll back")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")


@subcommand(_lazy("dbtest.seeding", "seed_command"), _add_seed, name="seed")
def _run_seed(settings: Settings, args: argparse.Namespace) -> int:
    from dbtest.seeding import seed_command

    seed_command(settings, args.names, url=None, seed=args.seed, scale=args.scale,
                 dry_run=args.dry_run, progress=not args.no_progress)
    return 0


# -- snapshot ---------------------------------------------------------------------------
_SNAPSHOT_ARGS = {"list": (), "save": ("NAME",), "restore": ("NAME",), "drop": ("NAME",),
                  "export": ("NAME", "FILE"), "import": ("FILE", "NAME")}


def _add_snapshot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=list(_SNAPSHOT_ARGS),
                        help="list | save NAME | restore NAME | drop NAME | "
                             "export NAME FILE | import FILE NAME")
    parser.add_argument("args", nargs="*", metavar="NAME|FILE")
    parser.add_argument("--db", help="database to save from / restore into "
                                     "(default: the URL's database / the snapshot's source)")
    parser.add_argument("--force", action="store_true",
                        help="terminate sessions connected to the database")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite a snapshot of the same name")


@subcommand(_lazy("dbtest.snapshots", "snapshot_command"), _add_snapshot, name="snapshot")
def _run_snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from dbtest.errors import ConfigError
    from dbtest.snapshots import snapshot_command

    wanted = _SNAPSHOT_ARGS[args.action]
    if len(args.args) != len(wanted):
        raise ConfigError(f"dbtest snapshot {args.action} takes {' '.join(wanted) or 'nothing'}"
                          f", got {' '.join(args.args) or 'nothing'}; use: dbtest snapshot "
                          f"{' '.join((args.action, *wanted))}")
    given = dict(zip(wanted, args.args, strict=True))
    _say(snapshot_command(settings, args.action, name=given.get("NAME"), url=None,
                          db=args.db, force=args.force, path=given.get("FILE"),
                          replace=args.replace))
    return 0


# -- migrations -------------------------------------------------------------------------
def _add_migrations(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"],
                        help="check: single head, upgrade, stairway, model drift")
    parser.add_argument("ini", nargs="?", help="alembic.ini (default: the schema setting)")
    parser.add_argument("--models", metavar="MODULE:ATTR",
                        help="MetaData or declarative Base to compare with (model drift)")


@subcommand(_lazy("dbtest._migrations_check", "migrations_check_command"), _add_migrations,
            name="migrations")
def _run_migrations(settings: Settings, args: argparse.Namespace) -> int:
    from dbtest._migrations_check import migrations_check_command

    report = migrations_check_command(settings, ini=args.ini, url=None, models=args.models)
    _say(str(report))
    return 0 if report.ok else 1


# -- cache ------------------------------------------------------------------------------
def _add_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["key", "path", "wait"],
                        help="key: the CI cache key; path: the folder to save and restore; "
                             "wait: until background copies into it are done")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="with key: also print what the key is made of")


@subcommand(_lazy("dbtest._cachekey", "cache_command"), _add_cache, name="cache")
def _run_cache(settings: Settings, args: argparse.Namespace) -> int:
    from dbtest._cachekey import cache_command

    _say(cache_command(settings, args.action, verbose=args.verbose))
    return 0


# -- the parser -------------------------------------------------------------------------
def _add_global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    group = parser.add_argument_group("settings (override DBTEST_* and [tool.dbtest])")
    group.add_argument("--backend", choices=BACKENDS, default=default, help=HELP["backend"])
    group.add_argument("--url", default=default, metavar="URL", help=HELP["url"])
    group.add_argument("--cache-dir", type=Path, default=default, metavar="DIR",
                       help=HELP["cache_dir"])


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``dbtest``, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Throwaway PostgreSQL servers for tests, and their upkeep.")
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {commands.version()}")
    _add_global_options(parser, default=None)
    # The same options after the subcommand ("dbtest doctor --backend local"); SUPPRESS
    # keeps a subparser from overwriting what was given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS.values():
        child = sub.add_parser(command.name, parents=[common], help=command.help,
                               description=command.description)
        command.add_arguments(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dbtest`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from dbtest.settings import resolve

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = resolve({key: getattr(args, key, None) for key in GLOBAL_SETTINGS})
        return SUBCOMMANDS[args.command].run(settings, args)
    except DbtestError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dbtest doctor | head`: the reader left; no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
