"""How ``dbtest.cli`` derives each subcommand from its command function's signature and
docstring (no server needed: the commands here are made up, or only parsed)."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from dbtest import cli
from dbtest._commands import GROUPS, Command, Invocation, all_commands
from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from dbtest.settings import Settings

calls: list[tuple[Any, ...]] = []


def frobnicate(settings: Settings, mode: Literal["fast", "slow"], names: Sequence[str] = (),
               /, count: int = 1, where: Path | None = None, dry_run: bool = False,
               color: bool = True, url: str | None = None, *,
               hook: Any = None) -> tuple[Any, ...]:
    """Frobnicate some things. A second sentence stays out of the listing.

    More text for the description's readers only.

    :param mode: how fast
    :param names: what to frobnicate
    :param count: how many times, at most
        (this line continues the help)
    :param where: a folder
    :param dry_run: show, do nothing
    :param color: colored output
    :param url: given by the global --url
    :param hook: for Python callers
    """
    call = (mode, tuple(names), count, where, dry_run, color, url, hook)
    calls.append(call)
    return call


def _show(result: tuple[Any, ...], run: Invocation) -> int:
    print("frobnicated", *result, run.again("next"))
    return 3


@pytest.fixture
def frob(monkeypatch: pytest.MonkeyPatch) -> Command:
    command = Command(frobnicate, _show, short={"dry_run": "-n"}, metavar={"where": "DIR"},
                      hooks=lambda run: {"hook": sorted(run.arguments)})
    monkeypatch.setitem(cli.SUBCOMMANDS, "frob", command)
    calls.clear()
    return command


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    child: argparse.ArgumentParser = sub.choices[name]
    return child


def test_signature_becomes_arguments_and_main_calls_the_function(
        frob: Command, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--cache-dir", "/tmp/x y", "frob", "slow", "a", "b", "--count", "3",
                     "--where", "w", "-n", "--no-color"])
    assert code == 3  # the show function's exit code
    names = ["color", "count", "dry_run", "mode", "names", "where"]
    assert calls == [("slow", ("a", "b"), 3, Path("w"), True, False, None, names)]
    # the hint repeats the global options given (quoted for the shell)
    assert capsys.readouterr().out.endswith("dbtest next --cache-dir '/tmp/x y'\n")


def test_defaults_apply_and_positional_only_parameters_go_by_position(frob: Command) -> None:
    assert cli.main(["frob", "fast"]) == 3
    assert calls == [("fast", (), 1, None, False, True, None,
                      ["color", "count", "dry_run", "mode", "names", "where"])]


def test_the_global_url_is_not_repeated_and_keyword_only_is_python_only(
        frob: Command, capsys: pytest.CaptureFixture[str]) -> None:
    assert [p.name for p in cli.cli_parameters(frobnicate)] == [
        "mode", "names", "count", "where", "dry_run", "color"]
    assert cli.main(["frob", "fast", "--hook", "x"]) == 2
    assert "unrecognized arguments: --hook" in capsys.readouterr().err


def test_help_comes_from_the_docstring(frob: Command, capsys: pytest.CaptureFixture[str]) -> None:
    assert frob.help == "Frobnicate some things"
    assert cli.main(["--help"]) == 0
    assert "frob                Frobnicate some things\n" in capsys.readouterr().out
    text = _subparser("frob").format_help()
    assert "Frobnicate some things. A second sentence" in text
    assert "More text" not in text  # only the first paragraph
    assert "how many times, at most (this line continues the help)" in " ".join(text.split())
    assert "--where DIR" in text and "--dry-run, -n" in text and "--no-color" in text
    assert "{fast,slow}" in text and "[NAMES ...]" in text


def test_bad_choice_is_a_usage_error(frob: Command, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frob", "medium"]) == 2
    assert "invalid choice: 'medium'" in capsys.readouterr().err


def test_an_undocumented_parameter_fails_when_the_parser_is_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def undocumented(settings: Settings, flag: bool = False) -> None:
        """No parameter docs."""

    monkeypatch.setitem(cli.SUBCOMMANDS, "bad", Command(undocumented))
    with pytest.raises(TypeError, match=r"undocumented\(flag\).*:param flag:"):
        cli.build_parser()


@pytest.mark.parametrize("annotation", ["dict[str, int]", "int | str"])
def test_an_unparsable_annotation_fails_when_the_parser_is_built(
        monkeypatch: pytest.MonkeyPatch, annotation: str) -> None:
    def odd(settings: Settings, value: Any = None) -> None:
        """Odd.

        :param value: something
        """

    odd.__signature__ = inspect.signature(odd).replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("settings", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                    inspect.Parameter("value", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      default=None, annotation=annotation)])
    monkeypatch.setitem(cli.SUBCOMMANDS, "odd", Command(odd))
    with pytest.raises(TypeError, match=r"odd\(value"):
        cli.build_parser()


def test_every_group_contributes_its_commands_in_help_order() -> None:
    names = [command.command_name for command in all_commands()]
    assert names == ["up", "down", "doctor", "clean", "seed", "snapshot", "migrations",
                     "cache"]
    assert list(cli.SUBCOMMANDS) == names
    assert len(GROUPS) == 7


@pytest.mark.parametrize(("argv", "expected"), [
    (["up", "-d", "--port", "0"], {"detach": True, "port": 0}),
    (["down", "--force"], {"force": True}),
    (["clean", "-n"], {"dry_run": True}),
    (["seed", "a", "b", "--seed", "2", "--scale", "3", "--dry-run", "--no-progress"],
     {"names": ["a", "b"], "seed": 2, "scale": 3, "dry_run": True, "progress": False}),
    (["snapshot", "export", "base", "f.dump", "--db", "d", "--force", "--replace"],
     {"action": "export", "args": ["base", "f.dump"], "db": "d", "force": True,
      "replace": True}),
    (["migrations", "check", "alembic.ini", "--models", "app:Base"],
     {"action": "check", "ini": "alembic.ini", "models": "app:Base"}),
    (["migrations", "check"], {"action": "check", "ini": None, "models": None}),
    (["cache", "key", "-v"], {"action": "key", "verbose": True}),
])
def test_the_real_commands_keep_their_options(argv: list[str], expected: dict[str, Any]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in expected} == expected


def test_raiseerr_shows_the_traceback(frob: Command, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def failing(settings: Settings) -> None:
        """Fail."""
        raise ConfigError("set it right")

    monkeypatch.setitem(cli.SUBCOMMANDS, "frob", Command(failing))
    assert cli.main(["frob"]) == 1
    assert capsys.readouterr().err == "dbtest: error: set it right\n"
    with pytest.raises(ConfigError, match="set it right"):
        cli.main(["--raiseerr", "frob"])
