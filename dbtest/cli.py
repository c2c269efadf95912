"""The ``dbtest`` command line: a thin front over the command functions of
``dbtest._commands``, its parser derived from their signatures and docstrings (as
alembic's ``CommandLine`` does).

For each command function ``fn(settings, ...)`` (see ``dbtest._commands._spec.Command``):

- its docstring's first paragraph is the subcommand's description, its first line the
  ``dbtest --help`` entry, and its ``:param name:`` lines the arguments' help (an option
  named like a setting may leave that out: it gets the setting's help);
- a parameter without default, or before ``/``, is a positional argument (with a
  default: optional); ``Sequence[str]`` takes several words, ``Literal[...]`` offers
  choices;
- a parameter with a default is an ``--option``: ``bool`` ones are flags (``--no-x`` when
  the default is true), ``int`` / ``str`` / ``Path`` ones take a value;
- keyword-only parameters, and ones named like a global option (``url``: the global
  ``--url`` sets it through the settings), are not on the command line.

Exit codes: 0 done, 1 a :class:`~dbtest.errors.DbtestError` (printed as
``dbtest: error: <message>``, no traceback unless ``--raiseerr``), 2 a usage error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest._commands import GLOBAL_SETTINGS, PROG, Command, Invocation, all_commands, version
from dbtest._commands import error as _error  # the one error printer of main
from dbtest.errors import DbtestError
from dbtest.settings import BACKENDS, HELP

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["PROG", "SUBCOMMANDS", "Command", "add_arguments", "build_parser", "cli_parameters",
           "main", "run_command"]

#: every subcommand by name, in the order ``dbtest --help`` lists them
SUBCOMMANDS: dict[str, Command] = {command.command_name: command for command in all_commands()}

_VALUE_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str,
                                                "Path": Path}
_SEQUENCE = re.compile(r"(?:Sequence|list|tuple)\[str(?:, \.\.\.)?\]")
_LITERAL = re.compile(r"Literal\[(.*)\]", re.S)
_PARAM = re.compile(r"^:param (\w+):[ \t]*(.*(?:\n[ \t]+\S.*)*)", re.M)


# -- deriving the parser ----------------------------------------------------------------
def cli_parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters of a command function that are on the command line, in order."""
    params = list(inspect.signature(function).parameters.values())[1:]  # after settings
    return [p for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and not (p.name in GLOBAL_SETTINGS and p.kind is p.POSITIONAL_OR_KEYWORD)]


def _param_help(function: Callable[..., Any]) -> dict[str, str]:
    doc = inspect.cleandoc(function.__doc__ or "")
    return {m[1]: " ".join(m[2].split()).replace("``", "'") for m in _PARAM.finditer(doc)}


def _type_text(function: Callable[..., Any], param: inspect.Parameter) -> str:
    """The annotation without ``| None`` (annotations are strings: ``from __future__``)."""
    text = param.annotation if isinstance(param.annotation, str) else \
        getattr(param.annotation, "__name__", str(param.annotation))
    kept = [part.strip() for part in text.split("|") if part.strip() != "None"]
    if len(kept) != 1:
        raise TypeError(f"{function.__qualname__}({param.name}: {text}): the command line "
                        f"takes one type (or that type | None)")
    return kept[0]


def _add_argument(parser: argparse.ArgumentParser, command: Command,
                  param: inspect.Parameter, helps: dict[str, str]) -> None:
    where = f"{command.function.__qualname__}({param.name})"
    help_text = helps.get(param.name) or HELP.get(param.name)
    if not help_text:
        raise TypeError(f"{where}: document it with ':param {param.name}:' (the CLI help)")
    text = _type_text(command.function, param)
    has_default = param.default is not param.empty
    spec: dict[str, Any] = {"help": help_text}
    if literal := _LITERAL.fullmatch(text):
        spec["choices"] = list(ast.literal_eval(f"({literal[1]},)"))
    elif _SEQUENCE.fullmatch(text):
        spec["nargs"] = "*" if has_default else "+"
    elif text in _VALUE_TYPES:
        spec["type"] = _VALUE_TYPES[text]
    elif text != "bool":
        raise TypeError(f"{where}: the command line cannot parse {text!r}; use bool, int, "
                        f"float, str, Path, Sequence[str] or Literal[...]")
    if param.kind is param.POSITIONAL_ONLY or not has_default:
        if text == "bool":
            raise TypeError(f"{where}: a bool must have a default (it is a --flag)")
        if has_default:
            spec.setdefault("nargs", "?")
            spec["default"] = param.default
        if "choices" not in spec:
            spec["metavar"] = command.metavar.get(param.name, param.name.upper())
        parser.add_argument(param.name, **spec)
        return
    flags = [f"--{param.name.replace('_', '-')}"]
    if param.name in command.short:
        flags.append(command.short[param.name])
    if text == "bool":
        # a flag that is on by default is turned off with --no-<name>
        action = "store_true" if param.default is False else argparse.BooleanOptionalAction
        parser.add_argument(*flags, dest=param.name, action=action, default=param.default,
                            help=help_text)
        return
    if param.name in command.metavar:
        spec["metavar"] = command.metavar[param.name]
    parser.add_argument(*flags, dest=param.name, default=param.default, **spec)


def add_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    """Add a command function's arguments, derived from its signature, to ``parser``."""
    helps = _param_help(command.function)
    for param in cli_parameters(command.function):
        _add_argument(parser, command, param, helps)


def _add_global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    group = parser.add_argument_group("settings (override DBTEST_* and [tool.dbtest])")
    group.add_argument("--backend", choices=BACKENDS, default=default, help=HELP["backend"])
    group.add_argument("--url", default=default, metavar="URL", help=HELP["url"])
    group.add_argument("--cache-dir", type=Path, default=default, metavar="DIR",
                       help=HELP["cache_dir"])


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``dbtest``, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Throwaway PostgreSQL servers for tests, and their upkeep.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    parser.add_argument("--raiseerr", action="store_true",
                        help="raise errors with their traceback (to debug dbtest)")
    _add_global_options(parser, default=None)
    # The same options after the subcommand ("dbtest doctor --backend local"); SUPPRESS
    # keeps a subparser from overwriting what was given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in SUBCOMMANDS.items():
        child = sub.add_parser(name, parents=[common], help=command.help,
                               description=command.description)
        add_arguments(child, command)
    return parser


# -- running ----------------------------------------------------------------------------
def run_command(command: Command, settings: Settings, args: argparse.Namespace) -> int:
    """Call ``command``'s function with the parsed ``args`` and print its result; returns
    the exit code."""
    params = cli_parameters(command.function)
    arguments = {p.name: getattr(args, p.name) for p in params}
    run = Invocation(arguments, {key: getattr(args, key, None) for key in GLOBAL_SETTINGS})
    positional = [arguments[p.name] for p in params if p.kind is p.POSITIONAL_ONLY]
    keywords = {p.name: arguments[p.name] for p in params if p.kind is not p.POSITIONAL_ONLY}
    result = command.function(settings, *positional, **keywords, **command.hooks(run))
    return command.show(result, run)


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
        return run_command(SUBCOMMANDS[args.command], settings, args)
    except DbtestError as exc:
        if args.raiseerr:
            raise
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
