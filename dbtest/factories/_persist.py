"""Write a batch of new ORM objects without the unit of work: COPY per table.

Primary keys are reserved from each table's sequence (or read back from one
``INSERT ... RETURNING``), foreign keys are filled from the relationships the objects
hold, many-to-many links become rows of the association table, and the objects are then
made persistent in the session as if they had been flushed (server defaults load lazily).
Anything this does not handle (inheritance, version counters, post_update, a child that
already exists...) goes through one ordinary ``session.flush()`` instead: slower, same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dbtest.errors import SeedError

__all__ = ["persist"]

_NO = object()


class _Fallback(Exception):
    """This batch needs the ORM's unit of work."""


def persist(session: Any, objects: list[Any]) -> None:
    """Insert ``objects`` (new, transient) and attach them to ``session`` as persistent."""
    if not objects:
        return
    unique = list({id(o): o for o in objects}.values())
    try:
        plan = _Plan(session, unique)
    except _Fallback:
        session.add_all(unique)
        session.flush()
        return
    plan.run()


class _Plan:
    def __init__(self, session: Any, objects: list[Any]) -> None:
        from sqlalchemy import Table, inspect
        from sqlalchemy.orm import RelationshipDirection

        self.session = session
        self.objects = objects
        self.ids = {id(o) for o in objects}
        self.by_mapper: dict[Any, list[Any]] = {}
        by_class: dict[type, list[Any]] = {}
        for obj in objects:
            found = by_class.get(type(obj))
            if found is None:
                found = by_class[type(obj)] = []
            found.append(obj)
        for cls, objs in by_class.items():
            self.by_mapper.setdefault(inspect(cls), []).extend(objs)
        self.m2m: list[tuple[Any, Any, list[Any]]] = []  # (obj, relationship, related)
        self.touched: list[tuple[Any, str]] = []  # persistent objects a backref reached
        for mapper, objs in self.by_mapper.items():
            if mapper.inherits is not None or mapper.version_id_col is not None or \
                    not isinstance(mapper.local_table, Table):
                raise _Fallback
            for rel in mapper.relationships:
                if rel.viewonly:
                    continue
                if rel.post_update:
                    raise _Fallback
                for obj in objs:
                    value = obj.__dict__.get(rel.key, _NO)
                    if value is _NO or value is None:
                        continue
                    related = list(value) if rel.uselist else [value]
                    if rel.direction is RelationshipDirection.MANYTOONE:
                        self._check_parents(related, rel)
                    elif rel.direction is RelationshipDirection.ONETOMANY:
                        if any(id(r) not in self.ids for r in related):
                            raise _Fallback  # an existing child would need an UPDATE
                    else:
                        self._check_parents(related, rel)
                        if related:
                            self.m2m.append((obj, rel, related))

    def _check_parents(self, related: list[Any], rel: Any) -> None:
        from sqlalchemy import inspect

        for item in related:
            if id(item) in self.ids:
                continue
            state = inspect(item)
            if not state.has_identity:
                raise _Fallback  # a new object the batch did not make
            back = rel.back_populates or (rel.backref if isinstance(rel.backref, str) else None)
            if back:
                self.touched.append((item, back))

    def run(self) -> None:
        from sqlalchemy.sql.util import sort_tables

        conn = self.session.connection()
        tables = {m.local_table: m for m in self.by_mapper}
        self.returning: set[Any] = set()
        for mapper, objs in self.by_mapper.items():
            self._reserve_keys(conn, mapper, objs)
        for table in sort_tables(tables):
            mapper = tables[table]
            self._fill_foreign_keys(mapper)
            self._insert(conn, mapper, self.by_mapper[mapper])
        self._insert_links(conn)
        self._attach()

    # -- keys ----------------------------------------------------------------------------
    def _reserve_keys(self, conn: Any, mapper: Any, objs: list[Any]) -> None:
        from dbtest.factories import reserve_ids

        pk_keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        missing = [o for o in objs if any(o.__dict__.get(k) is None for k in pk_keys)]
        if not missing:
            return
        from sqlalchemy import Integer

        column = mapper.primary_key[0]
        if len(pk_keys) != 1 or not isinstance(column.type, Integer):
            self.returning.add(mapper)
            return
        try:
            ids = reserve_ids(conn, mapper.local_table, len(missing), column.name)
        except SeedError:
            self.returning.add(mapper)  # no sequence: let the server say (RETURNING)
            return
        key = pk_keys[0]
        for obj, value in zip(missing, ids, strict=True):
            obj.__dict__[key] = value

    def _fill_foreign_keys(self, mapper: Any) -> None:
        from sqlalchemy.orm import RelationshipDirection

        objs = self.by_mapper[mapper]
        for rel in mapper.relationships:
            if rel.viewonly or rel.direction is not RelationshipDirection.MANYTOONE:
                continue
            pairs = [(mapper.get_property_by_column(local).key,
                      rel.mapper.get_property_by_column(remote).key)
                     for local, remote in rel.local_remote_pairs]
            for obj in objs:
                parent = obj.__dict__.get(rel.key, _NO)
                if parent is _NO:
                    continue
                for local_key, remote_key in pairs:
                    if parent is None:
                        obj.__dict__.setdefault(local_key, None)
                    else:
                        obj.__dict__[local_key] = _value(parent, remote_key, self.ids)
        # one-to-many collections held by parents of this table's rows
        for parent_mapper, parents in self.by_mapper.items():
            for rel in parent_mapper.relationships:
                if rel.viewonly or rel.direction is not RelationshipDirection.ONETOMANY \
                        or rel.mapper is not mapper:
                    continue
                pairs = [(parent_mapper.get_property_by_column(local).key,
                          mapper.get_property_by_column(remote).key)
                         for local, remote in rel.local_remote_pairs]
                for parent in parents:
                    value = parent.__dict__.get(rel.key)
                    for child in (value if rel.uselist else [value]) if value else ():
                        for local_key, remote_key in pairs:
                            child.__dict__[remote_key] = parent.__dict__.get(local_key)

    # -- rows ----------------------------------------------------------------------------
    def _insert(self, conn: Any, mapper: Any, objs: list[Any]) -> None:
        from dbtest.bulk import bulk_insert

        columns = [(prop.key, prop.columns[0].name) for prop in mapper.column_attrs
                   if prop.columns[0].table is mapper.local_table]
        rows = []
        for obj in objs:
            d = obj.__dict__
            rows.append({name: d[key] for key, name in columns if key in d})
        if mapper in self.returning:
            self._insert_returning(conn, mapper, objs, rows)
            return
        try:
            bulk_insert(conn, mapper.local_table, rows)
        except SeedError as exc:
            raise SeedError(f"{mapper.class_.__name__} batch: {exc}") from None

    def _insert_returning(self, conn: Any, mapper: Any, objs: list[Any],
                          rows: list[dict[str, Any]]) -> None:
        from sqlalchemy import insert

        table = mapper.local_table
        pk_keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(tuple(row), []).append(i)
        for indexes in groups.values():
            stmt = insert(table).returning(*mapper.primary_key, sort_by_parameter_order=True)
            result = conn.execute(stmt, [rows[i] for i in indexes])
            for i, keys in zip(indexes, result, strict=True):
                for key, value in zip(pk_keys, keys, strict=True):
                    objs[i].__dict__[key] = value

    def _insert_links(self, conn: Any) -> None:
        from dbtest.bulk import bulk_insert

        by_table: dict[Any, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for obj, rel, related in self.m2m:
            mapper, target = rel.parent, rel.mapper
            for item in related:
                row = {}
                for parent_col, sec_col in rel.synchronize_pairs:
                    row[sec_col.name] = _value(obj, mapper.get_property_by_column(
                        parent_col).key, self.ids)
                for target_col, sec_col in rel.secondary_synchronize_pairs:
                    row[sec_col.name] = _value(item, target.get_property_by_column(
                        target_col).key, self.ids)
                # both sides of a back_populates pair hold the link: write it once
                by_table.setdefault(rel.secondary, {})[tuple(sorted(row.items()))] = row
        for table, rows in by_table.items():
            bulk_insert(conn, table, list(rows.values()))

    def _attach(self) -> None:
        from sqlalchemy.orm import make_transient_to_detached

        # as if loaded by a query: keys set, history committed, nothing left to flush;
        # objects holding no relationship skip add()'s cascade walk (the costly part)
        update = getattr(self.session, "_update_impl", None)
        plain: list[Any] = []
        linked: list[Any] = []
        for mapper, objs in self.by_mapper.items():
            rel_keys = set(mapper.relationships.keys())
            for obj in objs:
                make_transient_to_detached(obj)
                (plain if rel_keys.isdisjoint(obj.__dict__) else linked).append(obj)
        if update is None:
            linked.extend(plain)
        else:
            from sqlalchemy.orm.attributes import instance_state

            for obj in plain:
                update(instance_state(obj))
        self.session.add_all(linked)
        for item, key in self.touched:
            if key not in item.__dict__:  # a backref queued an append on an unloaded
                self.session.expire(item, [key])  # collection: the rows are written


def _value(obj: Any, key: str, ids: Iterable[int] | set[int]) -> Any:
    if key in obj.__dict__:
        return obj.__dict__[key]
    return getattr(obj, key)  # a persistent object: loads it if expired
