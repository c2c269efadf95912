"""``dbtest cache key|path|wait``: keep the cached cluster in a CI cache
(:func:`dbtest._cachekey.cache_command`)."""

from __future__ import annotations

from dbtest._cachekey import cache_command
from dbtest._commands._spec import Command, Invocation, say

__all__ = ["COMMANDS"]


def _show(text: str, run: Invocation) -> int:
    say(text)
    return 0


COMMANDS = (Command(cache_command, _show, name="cache", short={"verbose": "-v"}),)
