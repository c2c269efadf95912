"""``changes``: rows inserted, updated and deleted since the test started.

The start state is read through a second connection to the same database. Under
savepoint isolation everything the test did is still uncommitted, so that connection
sees exactly the database as the test found it, while the test's own connection sees
its changes. Tests that commit for real (``fresh_db``, ``isolation="fresh"``) pass
``since=table_state(...)`` taken at their start instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dbtest.errors import SnapshotError
from dbtest.state._render import MASKED, SEP, quote_ident, read_rows
from dbtest.state._tables import (
    Labeler,
    MaskSpec,
    Options,
    OrderSpec,
    TableData,
    cell_functions,
    header,
    resolve_options,
    title_name,
)
from dbtest.state._values import INDENT, Changes, TableState

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["changes_sync"]

Row = tuple[str | None, ...]


def _hashes(conn: Connection, opts: Options, oids: Iterable[int]) -> dict[int, str]:
    """md5 of each table's sorted rows: tables whose hash did not move are unchanged."""
    parts = []
    for oid in oids:
        t = opts.tables[oid]
        rel = f"{quote_ident(conn, t.schema)}.{quote_ident(conn, t.name)}"
        parts.append(f"SELECT {oid}::bigint, md5(coalesce(string_agg(x::text, E'\\n' "
                     f"ORDER BY x::text), '')) FROM {rel} x")
    if not parts:
        return {}
    return {int(o): str(h) for o, h in conn.exec_driver_sql(" UNION ALL ".join(parts)).all()}


def _baseline(conn: Connection, opts: Options, oids: list[int]
              ) -> tuple[dict[int, list[Row]], dict[int, str]]:
    """The committed rows of ``oids`` read through a second connection, and their hashes."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = conn.engine.url
    if url.get_driver_name() != "psycopg":
        url = url.set(drivername="postgresql+psycopg")  # a sync driver for the side look
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as other:
            other.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            known = {int(o) for (o,) in other.execute(
                text("SELECT oid FROM pg_class WHERE oid = ANY(:o)"), {"o": oids}).all()}
            hashes = _hashes(other, opts, [o for o in oids if o in known])
            mine = _hashes(conn, opts, oids)
            rows: dict[int, list[Row]] = {}
            for oid in oids:
                if oid in known and hashes.get(oid) == mine.get(oid):
                    continue  # unchanged
                if oid not in known:
                    rows[oid] = []  # created by this test
                    continue
                try:
                    rows[oid] = read_rows(other, opts.tables[oid], opts.order[oid][0], True)
                except Exception as exc:
                    raise SnapshotError(
                        f"changes(): cannot read the start state of "
                        f"{opts.tables[oid].display!r} ({str(exc).splitlines()[0]}); did "
                        f"this test change its columns? Pass since=table_state(...) taken "
                        f"after the DDL.") from None
            other.rollback()
            return rows, mine
    finally:
        engine.dispose()


def _key_index(data_cols: list[str], opts: Options, oid: int) -> list[int] | None:
    pk = opts.tables[oid].pk
    return [data_cols.index(c) for c in pk] if pk else None


def changes_sync(conn: Connection, tables: tuple[Any, ...], since: TableState | None,
                 order_by: OrderSpec, mask: MaskSpec, labels: bool) -> Changes:
    """:func:`dbtest.changes` on a sync connection."""
    selected, opts = resolve_options(conn, tables, order_by, mask, labels,
                                     strict_order=False)
    before: dict[int, list[Row]]
    if since is not None:
        data = getattr(since, "_data", None)
        if not isinstance(since, TableState) or data is None:
            raise SnapshotError("since= takes a table_state(...) value captured earlier in "
                                "the test")
        taken: dict[int, TableData] = {d.table.oid: d for d in data[1]}
        missing = [opts.tables[o].display for o in selected if o not in taken]
        if missing:
            raise SnapshotError(f"since= does not hold table(s) {', '.join(missing)}; take "
                                f"it with table_state(db, {', '.join(map(repr, missing))}) "
                                f"or with no table names (all tables)")
        for oid in selected:
            then = [c.name for c in taken[oid].table.columns]
            now = [c.name for c in opts.tables[oid].columns]
            if then != now:
                raise SnapshotError(
                    f"the columns of {opts.tables[oid].display!r} changed since the since= "
                    f"state was taken ({', '.join(then)} -> {', '.join(now)}); take it after "
                    f"the DDL")
        before = {o: taken[o].rows for o in selected}
    else:
        before, _ = _baseline(conn, opts, selected)
    labeler = Labeler(conn, opts)
    pending = []
    for oid in selected:
        if oid not in before:
            continue
        table = opts.tables[oid]
        cols = [c.name for c in table.columns]
        after = read_rows(conn, table, opts.order[oid][0], True)
        key_idx = _key_index(cols, opts, oid)

        def key(row: Row, idx: list[int] | None = key_idx) -> Row:
            return tuple(row[i] for i in idx) if idx is not None else row

        old = {key(r): r for r in before[oid]}
        new = {key(r): r for r in after}
        if key_idx is None:  # no primary key: a row is its own key; updates show as -/+
            inserted = _multiset_minus(after, before[oid])
            deleted = _multiset_minus(before[oid], after)
            updated: list[tuple[Row, Row]] = []
        else:
            inserted = [r for k, r in new.items() if k not in old]
            deleted = [r for k, r in old.items() if k not in new]
            updated = [(old[k], r) for k, r in new.items() if k in old and old[k] != r]
        if not (inserted or updated or deleted):
            continue
        if table.surrogate and labels:
            pk_i = cols.index(table.pk[0])
            labeler.provide(oid, [r[pk_i] for r in before[oid]] + [r[pk_i] for r in inserted])
        pending.append((table, cols, key_idx, inserted, updated, deleted))
    out: list[str] = []
    counts: dict[str, tuple[int, int, int]] = {}
    for table, cols, key_idx, inserted, updated, deleted in pending:
        funcs = cell_functions(table, opts, labeler)

        def show(row: Row, f: list[Any] = funcs) -> list[str]:
            return [fn(v) for fn, v in zip(f, row, strict=True)]

        counts[table.display] = (len(inserted), len(updated), len(deleted))
        key_text = f", key: {', '.join(table.pk)}" if table.pk else ""
        out.append(f"{title_name(table.display)}: {len(inserted)} inserted, {len(updated)} "
                   f"updated, {len(deleted)} deleted{key_text}")
        out.append(INDENT + header(table))
        out.extend(f"{INDENT}+ {SEP.join(show(r))}" for r in inserted)
        for old_row, new_row in updated:
            a, b = show(old_row), show(new_row)
            cells = [f"{name}: {x} changed" if y == x == MASKED else f"{name}: {x} -> {y}"
                     for name, x, y, rx, ry in zip(cols, a, b, old_row, new_row, strict=True)
                     if rx != ry]
            ident = SEP.join(b[i] for i in key_idx or ())
            out.append(f"{INDENT}~ {ident}{SEP}{SEP.join(cells)}")
        out.extend(f"{INDENT}- {SEP.join(show(r))}" for r in deleted)
    return Changes("\n".join(out) if out else "no changes", counts)


def _multiset_minus(a: list[Row], b: list[Row]) -> list[Row]:
    from collections import Counter

    left = Counter(b)
    out = []
    for row in a:
        if left[row]:
            left[row] -= 1
        else:
            out.append(row)
    return out
