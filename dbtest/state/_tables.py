"""Reading tables in a stable order and rendering them with labels and masks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest.errors import SnapshotError
from dbtest.state._catalog import Table, describe, resolve_tables, table_name_of
from dbtest.state._render import (
    MASKED,
    NULL,
    SEP,
    bare_or_quoted,
    format_column,
    formatter,
    read_keys,
    read_rows,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection

__all__ = [
    "MaskSpec",
    "Options",
    "OrderSpec",
    "TableData",
    "header",
    "read_tables",
    "render_rows",
    "title_name",
]

#: ``{"users": "email"}`` / ``{"users": ["email", "id"]}``, or a column list for one table
OrderSpec = Mapping[str, str | Sequence[str]] | str | Sequence[str] | None
#: ``["users.password_hash", "created_at"]`` or ``{"users.created_at": False, ...}``
MaskSpec = Mapping[str, bool] | Iterable[str] | None


@dataclass
class TableData:
    """One table's rows as raw canonical text, in snapshot order."""

    table: Table
    order: tuple[str, ...]
    #: whether ``order`` is the primary key (unique) or an ``order_by`` (maybe not)
    by_key: bool
    rows: list[tuple[str | None, ...]]


@dataclass
class Options:
    """The knobs of one state read, resolved against the catalog."""

    tables: dict[int, Table]
    order: dict[int, tuple[tuple[str, ...], bool]] = field(default_factory=dict)
    masked: dict[int, set[str]] = field(default_factory=dict)
    labels: bool = True


def title_name(name: str) -> str:
    """A table or query name as shown in a block title (quoted when unusual)."""
    return name if name.replace(".", "").replace("_", "").isalnum() else bare_or_quoted(name)


def _order_spec(order_by: OrderSpec, selected: list[int], tables: dict[int, Table],
                conn: Connection) -> dict[int, tuple[str, ...]]:
    if order_by is None:
        return {}
    if isinstance(order_by, str) or (isinstance(order_by, Sequence)
                                    and not isinstance(order_by, Mapping)):
        if len(selected) != 1:
            raise SnapshotError("order_by as a column list needs exactly one table; with "
                                "several tables pass a mapping: order_by={'users': ['email']}")
        order_by = {tables[selected[0]].display: order_by}
    out: dict[int, tuple[str, ...]] = {}
    for key, cols in order_by.items():
        oid = resolve_tables(conn, (table_name_of(key),))[0]
        if oid not in tables:
            tables.update(describe(conn, [oid]))
        names = (cols,) if isinstance(cols, str) else tuple(cols)
        for name in names:
            tables[oid].column(name)  # raises naming the table's columns
        out[oid] = names
    return out


def _mask_spec(mask: MaskSpec, selected: list[int], tables: dict[int, Table]
               ) -> list[tuple[str | None, str, bool]]:
    if mask is None:
        return []
    items = mask.items() if isinstance(mask, Mapping) else ((m, True) for m in mask)
    out: list[tuple[str | None, str, bool]] = []
    for spec, on in items:
        table, _, column = spec.rpartition(".")
        targets = [tables[o] for o in selected
                   if not table or table in (tables[o].display, tables[o].name)]
        if not any(column in (c.name for c in t.columns) for t in targets):
            shown = ", ".join(t.display for t in targets) or "none of the selected tables"
            raise SnapshotError(f"mask entry {spec!r} names no column of {shown}; write "
                                f"'table.column' or 'column'")
        out.append((table or None, column, bool(on)))
    return out


def resolve_options(conn: Connection, names: tuple[Any, ...], order_by: OrderSpec,
                    mask: MaskSpec, labels: bool, *, strict_order: bool = True
                    ) -> tuple[list[int], Options]:
    """Resolve table names, orders and masks; raise :class:`SnapshotError` on bad input.

    ``strict_order=False`` lets tables without a stable order through, ordered by all
    their columns (``changes`` matches such rows by content, not by position).
    """
    selected = resolve_tables(conn, names)
    tables = describe(conn, selected)
    explicit = _order_spec(order_by, selected, tables, conn)
    opts = Options(tables, labels=labels)
    masks = _mask_spec(mask, selected, tables)
    for oid, table in tables.items():
        if oid in explicit:
            opts.order[oid] = (explicit[oid], False)
        elif table.pk and not (table.surrogate and _random_key(table)):
            opts.order[oid] = (table.pk, True)
        masked = {c.name for c in table.columns if c.volatile}
        if labels and table.surrogate:
            masked.discard(table.pk[0])
        elif not labels and table.pk:
            masked -= set(table.pk)  # raw ids asked for: show them
        for tname, column, on in masks:
            if tname is None or tname in (table.display, table.name):
                (masked.add if on else masked.discard)(column)
        opts.masked[oid] = masked
    for oid in selected:
        if oid not in opts.order:
            if strict_order:
                _no_order(tables[oid])
            opts.order[oid] = ((), False)
    return selected, opts


def _random_key(table: Table) -> bool:
    return not table.column(table.pk[0]).generated_key


def _no_order(table: Table) -> None:
    cols = ", ".join(repr(c.name) for c in table.columns[:3])
    if table.pk:
        raise SnapshotError(
            f"table {table.display!r}: its primary key {table.pk[0]!r} is a random value "
            f"(default {table.column(table.pk[0]).default}), so ordering by it changes every "
            f"run. Pass order_by={{{table.display!r}: [...]}} with columns that order its "
            f"rows (e.g. {cols}).")
    raise SnapshotError(
        f"table {table.display!r} has no primary key, so its rows have no stable order. "
        f"Pass order_by={{{table.display!r}: [...]}} naming columns that order them (e.g. "
        f"{cols}), or add a primary key.")


def read_tables(conn: Connection, selected: list[int], opts: Options) -> list[TableData]:
    """Read every selected table in its snapshot order."""
    out = []
    for oid in selected:
        order, by_key = opts.order[oid]
        rows = read_rows(conn, opts.tables[oid], order, tiebreak=not by_key)
        out.append(TableData(opts.tables[oid], order, by_key, rows))
    return out


class Labeler:
    """Stable labels (``users#1``) for surrogate keys: the row's position in its table's
    snapshot order. Tables not read are asked for their keys on first use."""

    def __init__(self, conn: Connection | None, opts: Options) -> None:
        self.conn = conn
        self.opts = opts
        self.maps: dict[int, dict[str, str]] = {}

    def provide(self, oid: int, keys: Iterable[str | None]) -> None:
        name = self.opts.tables[oid].display
        self.maps[oid] = {k: f"{name}#{i}" for i, k in enumerate(keys, 1) if k is not None}

    def labels(self, oid: int) -> dict[str, str] | None:
        """raw key text -> label, or ``None`` when the table's keys have no stable order."""
        if oid not in self.maps:
            order = self.opts.order.get(oid, ((), False))[0]
            if not order or self.conn is None:
                return None
            self.provide(oid, read_keys(self.conn, self.opts.tables[oid], order))
        return self.maps[oid]


def _labelled(table: Table, opts: Options, column: str) -> int | None:
    """The table oid whose labels ``column`` shows, if any."""
    if not opts.labels:
        return None
    if table.surrogate and column == table.pk[0]:
        return table.oid
    ref = table.fks.get(column)
    if ref is None:
        return None
    target = opts.tables.get(ref[0])
    if target is not None and target.surrogate and target.pk[0] == ref[1]:
        return target.oid
    return None


def cell_functions(table: Table, opts: Options, labeler: Labeler
                   ) -> list[Callable[[str | None], str]]:
    """One function per column turning raw text into the shown token."""
    return [plan_function(kind, arg) for kind, arg in column_plans(table, opts, labeler)]


def plan_function(kind: str, arg: Any) -> Callable[[str | None], str]:
    """The per-cell function of one column plan (see :func:`column_plans`)."""
    def masked(raw: str | None) -> str:
        return NULL if raw is None else MASKED

    def labelled(raw: str | None) -> str:
        return NULL if raw is None else arg.get(raw) or f"?{raw}"

    def plain(raw: str | None) -> str:
        return NULL if raw is None else raw

    def formatted(raw: str | None) -> str:
        return NULL if raw is None else str(arg(raw))

    if kind == "mask":
        return masked
    if kind == "labels":
        return labelled
    return plain if arg is None else formatted


def column_plans(table: Table, opts: Options, labeler: Labeler) -> list[tuple[str, Any]]:
    """How each column is shown: ("mask", None), ("labels", map) or ("format", fn|None)."""
    plans: list[tuple[str, Any]] = []
    masked = opts.masked.get(table.oid, set())
    for col in table.columns:
        target = _labelled(table, opts, col.name)
        labels = labeler.labels(target) if target is not None else None
        if col.name in masked or (target is not None and labels is None):
            plans.append(("mask", None))
        elif labels is not None:
            plans.append(("labels", labels))
        else:
            plans.append(("format", formatter(col.kind)))
    return plans


def render_rows(data: TableData, opts: Options, labeler: Labeler) -> list[str]:
    """The row lines of ``data`` (without indentation), built column by column."""
    if not data.rows:
        return []
    columns = list(zip(*data.rows, strict=True))
    shown: list[list[str]] = []
    for (kind, arg), values in zip(column_plans(data.table, opts, labeler), columns,
                                   strict=True):
        if kind == "mask":
            shown.append([NULL if v is None else MASKED for v in values])
        elif kind == "labels":
            shown.append([NULL if v is None else arg.get(v) or f"?{v}" for v in values])
        else:
            shown.append(format_column(values, arg))
    return [SEP.join(cells) for cells in zip(*shown, strict=True)]


def header(table: Table) -> str:
    """The column header line."""
    return SEP.join(title_name(c.name) for c in table.columns)
