"""Row-level diffs of two state texts, for failing ``assert state == snapshot``.

``- `` marks what only the snapshot (expected side) has, ``+ `` what only the received
value has, ``~ `` a row present on both sides with changed cells (``col: old -> new``).
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Callable
from typing import Any

from dbtest.state._render import SEP, split_tokens
from dbtest.state._values import Block, Changes, DbState, SchemaState, parse_blocks

__all__ = ["assertrepr_compare", "diff_texts"]

MAX_LINES_PER_BLOCK = 40


def _expected_of(other: Any) -> tuple[str | None, str]:
    """The expected text and how to call it: another state, a string or a syrupy snapshot."""
    if isinstance(other, DbState):
        return other.text, "expected"
    if isinstance(other, str):
        return textwrap.dedent(other).strip("\n"), "expected"
    results = getattr(other, "_execution_results", None)
    count = getattr(other, "num_executions", None)
    if isinstance(results, dict) and isinstance(count, int):  # syrupy's SnapshotAssertion
        result = results.get(count - 1)
        recalled = getattr(result, "recalled_data", None)
        if isinstance(recalled, str):
            name = getattr(result, "snapshot_name", None) or "snapshot"
            return recalled, f"snapshot {name}"
    return None, ""


def assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """Explain a failing ``==`` between a dbtest state and a snapshot, string or state.

    For ``pytest_assertrepr_compare``; returns ``None`` for anything else (and when the
    snapshot does not exist yet, which syrupy itself reports).
    """
    if op != "==":
        return None
    if isinstance(left, DbState):
        state, other = left, right
    elif isinstance(right, DbState):
        state, other = right, left
    else:
        return None
    try:
        expected, label = _expected_of(other)
        if expected is None:
            return None
        lines = diff_texts(expected, state.text, kind=type(state))
    except Exception:  # never hide the assertion itself behind a diff bug
        return None
    head = f"{state.kind} differs from the {label} (- {label}, + received):"
    return [head, *(lines or ["(texts differ only in whitespace)"])]


def diff_texts(expected: str, actual: str, kind: type[DbState] = DbState) -> list[str]:
    """Block-by-block, row-level differences from ``expected`` to ``actual``."""
    exp = {b.name: b for b in parse_blocks(expected)}
    act = {b.name: b for b in parse_blocks(actual)}
    out: list[str] = []
    for name in [*act, *(n for n in exp if n not in act)]:
        e, a = exp.get(name), act.get(name)
        if e is None and a is not None:
            out.append(f"+ {a.title}  (not in the snapshot)")
        elif a is None and e is not None:
            out.append(f"- {e.title}  (missing from the received value)")
        elif e is not None and a is not None and (e.title, e.lines) != (a.title, a.lines):
            out.append(f"{name}:")
            if e.title != a.title:
                out += [f"  - {e.title}", f"  + {a.title}"]
            if issubclass(kind, SchemaState):
                body = _keyed_lines(list(e.lines), list(a.lines),
                                    lambda ln: " ".join(ln.split()[:2]))
            elif issubclass(kind, Changes) or not e.lines or not a.lines:
                body = _plain(list(e.lines), list(a.lines))
            else:
                body = _table(e, a)
            if len(body) > MAX_LINES_PER_BLOCK:
                more = len(body) - MAX_LINES_PER_BLOCK
                body = [*body[:MAX_LINES_PER_BLOCK], f"... and {more} more"]
            out.extend("  " + ln for ln in body)
    return out


def _plain(e: list[str], a: list[str]) -> list[str]:
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=e, b=a, autojunk=False).get_opcodes():
        if tag != "equal":
            out += ["- " + ln for ln in e[i1:i2]] + ["+ " + ln for ln in a[j1:j2]]
    return out


def _keyed_lines(e: list[str], a: list[str], key: Callable[[str], str]) -> list[str]:
    ek, ak = [key(x) for x in e], [key(x) for x in a]
    if len(set(ek)) != len(ek) or len(set(ak)) != len(ak):
        return _plain(e, a)
    emap, amap = dict(zip(ek, e, strict=True)), dict(zip(ak, a, strict=True))
    out: list[str] = []
    for k in ak:
        if k not in emap:
            out.append("+ " + amap[k])
        elif emap[k] != amap[k]:
            out += ["- " + emap[k], "+ " + amap[k]]
    out += ["- " + emap[k] for k in ek if k not in amap]
    if not out and ek != ak:
        out.append("(same lines, in a different order)")
    return out


def _cells(header: list[str], e: list[str], a: list[str]) -> str:
    return ", ".join(f"{col}: {x} -> {y}" for col, x, y in zip(header, e, a, strict=True)
                     if x != y)


def _table(e: Block, a: Block) -> list[str]:
    out: list[str] = []
    eh, ah = split_tokens(e.lines[0]), split_tokens(a.lines[0])
    if eh != ah:
        out += [f"- columns: {e.lines[0]}", f"+ columns: {a.lines[0]}"]
        return out + _plain(list(e.lines[1:]), list(a.lines[1:]))
    erows = [split_tokens(x) for x in e.lines[1:]]
    arows = [split_tokens(x) for x in a.lines[1:]]
    if any(len(r) != len(eh) for r in [*erows, *arows]):
        return _plain(list(e.lines[1:]), list(a.lines[1:]))
    idx = [eh.index(c) for c in a.key] if a.key == e.key and all(c in eh for c in a.key) \
        else []
    ekeys = [tuple(r[i] for i in idx) for r in erows]
    akeys = [tuple(r[i] for i in idx) for r in arows]
    if not idx or len(set(ekeys)) != len(ekeys) or len(set(akeys)) != len(akeys):
        return _positional(eh, e.lines[1:], a.lines[1:], erows, arows)
    emap = dict(zip(ekeys, erows, strict=True))
    amap = dict(zip(akeys, arows, strict=True))
    for k, row in zip(akeys, arows, strict=True):
        if k not in emap:
            out.append("+ " + SEP.join(row))
        elif emap[k] != row:
            out.append(f"~ {SEP.join(k)}: {_cells(eh, emap[k], row)}")
    out += ["- " + SEP.join(r) for k, r in zip(ekeys, erows, strict=True) if k not in amap]
    if not out and ekeys != akeys:
        out.append("(same rows, in a different order)")
    return out


def _positional(header: list[str], e_lines: tuple[str, ...], a_lines: tuple[str, ...],
                erows: list[list[str]], arows: list[list[str]]) -> list[str]:
    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=list(e_lines), b=list(a_lines), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            out += [f"~ row {j1 + n + 1}: {_cells(header, erows[i1 + n], arows[j1 + n])}"
                    for n in range(i2 - i1)]
            continue
        out += ["- " + ln for ln in e_lines[i1:i2]] + ["+ " + ln for ln in a_lines[j1:j2]]
    return out
