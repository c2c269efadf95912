"""The values ``table_state`` & co. return: readable text that compares and snapshots.

A value *is* its text: ``==`` compares texts, ``repr()`` is the text (which is how
syrupy's default amber serializer stores it, so ``assert table_state(db, "users") ==
snapshot`` needs no extension), and the text parses back into blocks for the row-level
diff shown when a comparison fails.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Block", "Changes", "DbState", "QueryState", "SchemaState", "TableState",
           "parse_blocks"]

INDENT = "  "
_TITLE = re.compile(r"^(?P<rest>.*?)(?:, (?P<kw>key|order): (?P<cols>.*))?$")


@dataclass(frozen=True)
class Block:
    """One titled block of a state's text: a table, a query, a schema object."""

    name: str
    title: str
    lines: tuple[str, ...]
    #: the columns that identify a row (``key: ...`` / ``order: ...`` in the title)
    key: tuple[str, ...] = ()
    unique_key: bool = False


def _split_title(title: str) -> tuple[str, str]:
    if title.startswith('"'):
        try:
            name, end = json.JSONDecoder().raw_decode(title)
            return str(name), title[end:].removeprefix(":").strip()
        except ValueError:
            pass
    name, _, rest = title.partition(": ")
    return name.rstrip(":"), rest


def parse_blocks(text: str) -> list[Block]:
    """Split a state's text into blocks (a line without indentation starts one)."""
    blocks: list[Block] = []
    title: str | None = None
    lines: list[str] = []

    def close() -> None:
        if title is None:
            return
        name, rest = _split_title(title)
        m = _TITLE.match(rest)
        key: tuple[str, ...] = ()
        unique = False
        if m and m.group("kw"):
            key = tuple(m.group("cols").split(", "))
            unique = m.group("kw") == "key"
        blocks.append(Block(name, title, tuple(lines), key, unique))

    for raw in text.strip("\n").split("\n"):
        if raw.startswith(INDENT):
            lines.append(raw[len(INDENT):])
        elif raw.strip():
            close()
            title, lines = raw, []
    close()
    return blocks


class DbState:
    """Readable text of database contents; compares equal to the same text."""

    kind: ClassVar[str] = "state"

    def __init__(self, text: str, *, data: Any = None) -> None:
        self._text = text
        self._data = data  # what it was built from (changes(since=...) needs the raw rows)

    @property
    def text(self) -> str:
        """The text stored in snapshot files."""
        return self._text

    def blocks(self) -> list[Block]:
        """The text split into its blocks."""
        return parse_blocks(self._text)

    def __repr__(self) -> str:
        return self._text

    def __str__(self) -> str:
        return self._text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DbState):
            return self._text == other._text
        if isinstance(other, str):
            return self._text.strip("\n") == textwrap.dedent(other).strip("\n")
        return NotImplemented  # lets syrupy's SnapshotAssertion.__eq__ take over

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(self._text)


class TableState(DbState):
    """Rows of tables, a block per table, a row per line (:func:`dbtest.table_state`)."""

    kind = "table_state"


class QueryState(DbState):
    """Rows of a query (:func:`dbtest.query_state`)."""

    kind = "query_state"


class SchemaState(DbState):
    """Tables, columns, constraints, indexes, views and types (:func:`dbtest.schema_state`)."""

    kind = "schema_state"


class Changes(DbState):
    """Rows inserted (``+``), updated (``~``) and deleted (``-``) per table
    (:func:`dbtest.changes`)."""

    kind = "changes"

    def __init__(self, text: str, counts: dict[str, tuple[int, int, int]],
                 data: Any = None) -> None:
        super().__init__(text, data=data)
        self._counts = counts

    def inserted(self, table: str) -> int:
        """Rows inserted into ``table``."""
        return self._counts.get(table, (0, 0, 0))[0]

    def updated(self, table: str) -> int:
        """Rows updated in ``table``."""
        return self._counts.get(table, (0, 0, 0))[1]

    def deleted(self, table: str) -> int:
        """Rows deleted from ``table``."""
        return self._counts.get(table, (0, 0, 0))[2]

    @property
    def tables(self) -> list[str]:
        """Tables with at least one change."""
        return list(self._counts)

    def __bool__(self) -> bool:
        return bool(self._counts)
