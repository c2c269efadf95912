"""What a command group module declares for the command line, and the output helpers
the groups' ``show`` functions share.

A group module holds plain command functions (``fn(settings, ...)`` with full
docstrings) and, in ``COMMANDS``, one :class:`Command` per ``dbtest <name>``: the
function, how to print its result, and the few things its signature cannot say (short
flags, metavars). :mod:`dbtest.cli` derives the argparse parser from the rest.

Light on imports: ``dbtest --help`` imports every group.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dbtest.errors import mask_url

__all__ = ["GLOBAL_SETTINGS", "PROG", "Command", "Invocation", "error", "human_size", "say"]

PROG = "dbtest"
_ROLE = re.compile(r":\w+:`~?([^`]*)`")  # :func:`x` -> x
#: the global options, as settings keys; each maps to ``--<key>`` at "argument" precedence
GLOBAL_SETTINGS = ("backend", "url", "cache_dir")


@dataclass(frozen=True)
class Invocation:
    """One run of a command: its arguments from the command line, and the global options
    given (to repeat them in hints such as "stop it with: dbtest --cache-dir X down")."""

    #: the command function's arguments, by parameter name
    arguments: Mapping[str, Any]
    #: the global options given on the command line, by settings key
    options: Mapping[str, Any] = field(default_factory=dict)

    def again(self, command: str) -> str:
        """``dbtest <command>`` with the global options this run was given (the URL
        left out: it may hold a password)."""
        parts = [PROG, command]
        for key in GLOBAL_SETTINGS:
            value = self.options.get(key)
            if value is not None and key != "url":
                parts += [f"--{key.replace('_', '-')}", shlex.quote(str(value))]
        return " ".join(parts)


def _quiet(result: Any, run: Invocation) -> int:
    return 0


def _no_hooks(run: Invocation) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Command:
    """One ``dbtest <name>``: a plain command function and how the CLI prints its result.

    The parser is derived from ``function``'s signature and docstring (see
    :func:`dbtest.cli.build_parser`): a parameter without default, or before ``/``, is a
    positional argument; one with a default is an ``--option``; keyword-only ones are
    for Python callers only. ``:param name:`` lines give each argument's help.
    """

    function: Callable[..., Any]
    #: prints the function's result and returns the exit code
    show: Callable[[Any, Invocation], int] = _quiet
    #: the subcommand's name (default: the function's)
    name: str | None = None
    #: short flags, by parameter name (``{"detach": "-d"}``)
    short: Mapping[str, str] = field(default_factory=dict)
    #: metavars, by parameter name (default: the name in capitals)
    metavar: Mapping[str, str] = field(default_factory=dict)
    #: keyword-only arguments the CLI passes (``up``'s ``on_ready``, which prints)
    hooks: Callable[[Invocation], dict[str, Any]] = _no_hooks

    @property
    def command_name(self) -> str:
        """``dbtest <this>``."""
        return self.name or self.function.__name__

    @property
    def description(self) -> str:
        """The first paragraph of the function's docstring, without reST marks."""
        first = (self.function.__doc__ or "").strip().split("\n\n")[0]
        return _ROLE.sub(r"\1", first).replace("``", "'")

    @property
    def help(self) -> str:
        """The first sentence of the function's docstring (the ``dbtest --help`` list)."""
        return " ".join(self.description.split()).split(". ")[0].rstrip(".")


# -- output -----------------------------------------------------------------------------
def say(line: str = "") -> None:
    """Print one line on stdout."""
    print(line, flush=True)  # flushed: `up` blocks right after printing its URL


def error(message: str) -> None:
    """Print ``dbtest: error: <first line>`` on stderr, further lines indented, passwords
    masked."""
    first, *rest = mask_url(message).splitlines() or [""]
    print(f"{PROG}: error: {first}", file=sys.stderr)
    for line in rest:  # a server log tail or a list of what was tried
        print(f"  {line}", file=sys.stderr)


def human_size(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``3.2 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
