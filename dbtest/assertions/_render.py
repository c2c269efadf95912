"""Plain-text tables for assertion messages: expected against actual, differing cells marked.

A marked cell is drawn as ``*value*`` and every table that has marks ends with a legend, so a
failure reads without knowing the convention. Values are shown the way SQL people read them:
``NULL`` for ``None``, strings bare unless that would be ambiguous, long values shortened.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["MAX_ROWS", "MISSING", "Cell", "fmt", "table"]

MAX_ROWS = 20
"""Rows shown per table in a message; the rest is summarised as ``... N more``."""

_MAX_WIDTH = 40


class _Missing:
    """A cell that has no value on this side (a group or row that does not exist)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def fmt(value: Any) -> str:
    """One cell: ``NULL`` for ``None``, ``—`` for MISSING, strings bare when unambiguous."""
    if value is MISSING:
        return "-"
    if value is None:
        return "NULL"
    if isinstance(value, str):
        # quote what would otherwise read as something else (NULL, blanks, a number)
        ambiguous = (value in ("", "-", "NULL") or value != value.strip()
                     or _looks_numeric(value))
        text = repr(value) if ambiguous else value
    elif isinstance(value, bytes | bytearray | memoryview):
        text = "\\x" + bytes(value).hex()
    elif isinstance(value, tuple) and len(value) == 1:
        text = fmt(value[0])
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    if len(text) > _MAX_WIDTH:
        text = text[: _MAX_WIDTH - 1] + "…"
    return text


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
          marked: Iterable[tuple[int, int]] = (), prefixes: Sequence[str] | None = None,
          indent: str = "  ", limit: int | None = MAX_ROWS) -> str:
    """Render ``rows`` under ``headers``; cells at ``(row, column)`` in ``marked`` get ``*x*``.

    ``prefixes`` puts a short label in front of each row (e.g. ``expected`` / ``actual``).
    Values go through :func:`fmt` unless they are already strings made by the caller
    (pass pre-formatted text as :class:`Cell`).
    """
    marks = set(marked)
    all_rows = [list(r) for r in rows]
    shown = all_rows if limit is None else all_rows[:limit]
    cells = [[_cell(v, (i, j) in marks) for j, v in enumerate(r)] for i, r in enumerate(shown)]
    head = [str(h) for h in headers]
    pre: list[str] | None = None
    if prefixes is not None:
        pre = [str(p) for p in prefixes[: len(shown)]]
        width = max((len(p) for p in pre), default=0)
        head = ["", *head] if width else head
        if width:
            cells = [[p, *row] for p, row in zip(pre, cells, strict=False)]
    widths = [len(h) for h in head]
    for row in cells:
        for j, text in enumerate(row):
            widths[j] = max(widths[j], len(text))
    lines = [indent + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
             indent + "-+-".join("-" * w for w in widths)]
    lines.extend(indent + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                 .rstrip() for row in cells)
    if len(all_rows) > len(shown):
        lines.append(f"{indent}... {len(all_rows) - len(shown)} more row(s)")
    if marks:
        lines.append(f"{indent}(*value* marks the cells that differ)")
    return "\n".join(lines)


class Cell(str):
    """Text that :func:`table` shows as is (already formatted by the caller)."""


def _cell(value: Any, marked: bool) -> str:
    text = str(value) if isinstance(value, Cell) else fmt(value)
    return f"*{text}*" if marked else text
