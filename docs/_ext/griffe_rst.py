"""A griffe extension: dbtest's reST-flavoured docstrings, rendered as Markdown.

dbtest's docstrings are written for ``help()`` and Sphinx readers: ``:func:`x``` roles,
``::`` literal blocks, ``>>>`` doctest lines and ``====`` simple tables. mkdocstrings
renders docstrings as Markdown, where those would show as raw text (and ``>>>`` as nested
block quotes), so this extension rewrites each docstring before rendering:

- roles become code that links to the object's API entry when the site has one
  (autorefs' *optional* references: no warning when it has none);
- ``>>>`` blocks become ``pycon`` code blocks, without their ``# doctest:`` directives;
- ``::`` literal blocks become fenced code blocks;
- reST simple tables become Markdown tables;
- ``#:`` comments above an attribute become its docstring.

Loaded by ``mkdocs.yml`` (``extensions: [docs/_ext/griffe_rst.py]``); nothing in dbtest
imports it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|data|attr|exc|obj|const):`(?P<target>[^`]+)`")
_DOCTEST_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")
_BORDER = re.compile(r"^=+(?: +=+)+ *$")


def _exports() -> dict[str, str]:
    """dbtest's lazily exported names (``dbtest.X`` -> the module that defines X)."""
    try:
        import dbtest
    except ImportError:  # pragma: no cover - the docs build needs dbtest importable
        return {}
    return dict(getattr(dbtest, "_EXPORTS", {}))


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded package from reST idioms to Markdown."""

    def __init__(self) -> None:
        super().__init__()
        self.exports = _exports()

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute:
            comment = _comment_doc(obj)
            if comment:
                obj.docstring = griffe.Docstring(comment, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value, lambda t: self._resolve(obj, t))

    def _resolve(self, obj: griffe.Object, target: str) -> str | None:
        """The full path of a role's target as seen from ``obj``, or ``None``."""
        if target.startswith("."):
            module = obj if obj.is_module else obj.module
            return module.path + target
        head, _, rest = target.partition(".")
        if head == "dbtest" and rest in self.exports:
            return f"{self.exports[rest]}.{rest}"
        if "." in target:
            return target
        try:
            return obj.resolve(target)
        except Exception:  # griffe's NameResolutionError and friends: no link then
            return None


def _comment_doc(obj: griffe.Object) -> str:
    """The ``#:`` comment lines right above an attribute (Sphinx's attribute docs)."""
    try:
        lines = obj.module.lines
    except Exception:  # no source (a compiled or inspected module)
        return ""
    found: list[str] = []
    i = (obj.lineno or 0) - 2  # the line above, 0-based
    while 0 <= i < len(lines) and lines[i].strip().startswith("#:"):
        found.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(found)


def convert(text: str, resolve: Any) -> str:
    """``text`` with reST literal blocks, doctests, simple tables and roles as Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _BORDER.match(stripped):
            consumed, table = _table(lines, i)
            if table:
                out.extend(_roles(row, resolve) for row in table)
                i = consumed
                continue
        if stripped.startswith(">>>"):
            block, i = _doctest(lines, i)
            out.extend(["", "```pycon", *block, "```", ""])
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            literal, j = _literal(lines, i + 1)
            if literal is not None:
                intro = stripped[:-2].rstrip()
                if intro:
                    out.append(line.rstrip()[:-2].rstrip() + ":")
                lang = "text" if any("──" in x or "│" in x for x in literal) else "python"
                out.extend(["", f"```{lang}", *literal, "```", ""])
                i = j
                continue
        out.append(_roles(line, resolve))
        i += 1
    return "\n".join(out).strip("\n")


def _roles(line: str, resolve: Any) -> str:
    # roles only outside inline code spans: split on ``...`` first
    parts = re.split(r"(``[^`]+``)", line)
    for k, part in enumerate(parts):
        if k % 2 == 0:
            parts[k] = _ROLE.sub(lambda m: _role(m, resolve), part)
    return "".join(parts)


def _role(match: re.Match[str], resolve: Any) -> str:
    target = match.group("target").strip()
    short = target.startswith("~")
    target = target.lstrip("~")
    if "<" in target and target.endswith(">"):  # :func:`title <path>`
        title, _, target = target[:-1].partition("<")
        shown = title.strip()
        target = target.strip()
    else:
        shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    if match.group(1) in ("func", "meth"):
        shown += "()"
    path = resolve(target)
    code = f"<code>{html.escape(shown)}</code>"
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _doctest(lines: list[str], i: int) -> tuple[list[str], int]:
    indent = len(lines[i]) - len(lines[i].lstrip())
    block: list[str] = []
    while i < len(lines) and lines[i].strip():
        block.append(_DOCTEST_DIRECTIVE.sub("", lines[i][indent:]).rstrip())
        i += 1
    return block, i


def _literal(lines: list[str], i: int) -> tuple[list[str] | None, int]:
    """The indented block after a ``::`` line (``None`` when there is none)."""
    base = len(lines[i - 1]) - len(lines[i - 1].lstrip())
    j = i
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j >= len(lines) or len(lines[j]) - len(lines[j].lstrip()) <= base:
        return None, i
    block: list[str] = []
    while j < len(lines) and (not lines[j].strip()
                              or len(lines[j]) - len(lines[j].lstrip()) > base):
        block.append(lines[j])
        j += 1
    while block and not block[-1].strip():
        block.pop()
    strip = min(len(x) - len(x.lstrip()) for x in block if x.strip())
    return [x[strip:] for x in block], j


def _table(lines: list[str], i: int) -> tuple[int, list[str]]:
    """A reST simple table starting at border line ``i`` as Markdown rows."""
    border = lines[i].rstrip()
    indent = len(border) - len(border.lstrip())
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]

    def cells(row: str) -> list[str]:
        out = []
        for k, (start, end) in enumerate(spans):
            stop = spans[k + 1][0] if k + 1 < len(spans) else len(row)
            out.append(row[start:stop].strip() if k + 1 < len(spans) else row[start:].strip())
            del end
        return out

    rows: list[list[str]] = []
    borders = 1
    header: list[str] | None = None
    j = i + 1
    while j < len(lines):
        raw = lines[j].rstrip()
        if _BORDER.match(raw.strip()) and len(raw) - len(raw.lstrip()) == indent:
            borders += 1
            j += 1
            if borders == 2 and header is None and rows:
                header = [" ".join(c) for c in zip(*rows, strict=True)]
                rows = []
            elif borders >= 3 or (borders == 2 and header is not None):
                break
            continue
        if not raw.strip():
            j += 1
            continue
        row = cells(raw)
        if rows and not row[0]:  # a continuation line: more text for the cells above
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row, strict=True)]
        else:
            rows.append(row)
        j += 1
    if header is None or borders < 3:
        return i, []
    md = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return j, [*md, ""]
