"""Foreign keys whose ORM cascade and database ``ON DELETE`` disagree, or that lack an index.

>>> assert dbtest.audit_foreign_keys(Base) == []                  # doctest: +SKIP
>>> dbtest.audit_foreign_keys(db).assert_clean()                  # doctest: +SKIP

What the ORM does to the children of a deleted parent depends on the parent's relationship:
``cascade`` with ``delete`` deletes them (loading them first unless ``passive_deletes=True``),
otherwise it sets their foreign key to NULL (only loaded ones with ``passive_deletes=True``,
none with ``passive_deletes="all"``). The database applies its own ``ON DELETE`` rule. A
finding is reported when the two would not agree:

=========================  ==================================================================
kind                       meaning
=========================  ==================================================================
``cascade_mismatch``       the ORM does something else than the rule (nulls where the database
                           deletes, deletes where it sets null, bypasses RESTRICT/NO ACTION)
``not_passive``            same outcome, but the ORM loads and handles every child itself; add
                           ``passive_deletes=True`` and let the database do it
``set_null_not_nullable``  ``ON DELETE SET NULL`` on a ``NOT NULL`` column can never succeed
``missing_index``          no index leads with the foreign key columns, so every delete of a
                           parent scans the child table
=========================  ==================================================================

With a ``MetaData`` or declarative ``Base`` the rules and indexes are the models'; with a
``Session`` / ``Connection`` / ``Engine`` they are the live database's, compared with every
mapped class (or those of ``models=``) whose tables it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, overload

from dbtest.assertions._db import run
from dbtest.assertions._fks import load_foreign_keys
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy import MetaData
    from sqlalchemy.orm import DeclarativeBase, registry

    from dbtest.assertions._db import AsyncDb, SyncDb

__all__ = ["FkAudit", "FkAuditFinding", "audit_foreign_keys"]


@dataclass(frozen=True)
class FkAuditFinding:
    """One problem with one foreign key (see the module documentation for ``kind``)."""

    kind: str
    table: str
    columns: tuple[str, ...]
    referred_table: str
    constraint: str | None
    on_delete: str
    relationship: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class FkAudit(list[FkAuditFinding]):
    """The findings of :func:`audit_foreign_keys`: a list (``== []`` when all is well)."""

    def __str__(self) -> str:
        if not self:
            return "no findings"
        lines = []
        for f in self:
            where = f" [{f.relationship}]" if f.relationship else ""
            lines.append(f"  - {f.kind}: {f.table}({', '.join(f.columns)}) -> "
                         f"{f.referred_table} ON DELETE {f.on_delete}{where}\n"
                         f"      {f.message}")
        return "\n".join(lines)

    def of_kind(self, kind: str) -> FkAudit:
        """Only the findings of one kind."""
        return FkAudit(f for f in self if f.kind == kind)

    def assert_clean(self) -> None:
        """Raise :class:`~dbtest.errors.DbAssertionError` listing the findings, if any."""
        __tracebackhide__ = True
        if self:
            raise DbAssertionError(f"audit_foreign_keys: {len(self)} finding(s):\n{self}")


@dataclass(frozen=True)
class _Fk:
    """A foreign key from either source, reduced to what the audit needs."""

    schema: str | None
    table: str
    columns: tuple[str, ...]
    ref_schema: str | None
    ref_table: str
    name: str | None
    on_delete: str
    indexed: bool
    nullable: bool

    def key(self) -> tuple[str, frozenset[str], str]:
        return self.table, frozenset(self.columns), self.ref_table


@overload
def audit_foreign_keys(source: MetaData | registry | type[DeclarativeBase] | SyncDb, *,
                       models: Any = None) -> FkAudit: ...
@overload
def audit_foreign_keys(source: AsyncDb, *, models: Any = None) -> Awaitable[FkAudit]: ...
def audit_foreign_keys(source: Any, *, models: Any = None) -> Any:
    """Find foreign keys whose ORM relationship and ``ON DELETE`` rule disagree, or that
    have no index.

    ``source`` is a ``MetaData`` / declarative ``Base`` / ``registry`` (the models' own
    rules and indexes), or a ``Session`` / ``Connection`` / ``Engine`` (the live database;
    returns an awaitable for async handles). ``models`` limits the relationships checked to
    one ``Base`` / ``registry`` / ``MetaData``; by default every mapped class counts.
    Returns an :class:`FkAudit` (a list of :class:`FkAuditFinding`).
    """
    __tracebackhide__ = True
    metadata, registries = _models(source if models is None and _is_models(source)
                                   else models)
    if _is_models(source):
        assert metadata is not None
        return _audit(_metadata_fks(metadata), registries, metadata)
    return run(source, partial(_audit_database, registries=registries, metadata=metadata),
               helper="audit_foreign_keys")


def _is_models(value: Any) -> bool:
    from sqlalchemy import MetaData
    from sqlalchemy.orm import registry

    return isinstance(value, MetaData | registry) or isinstance(
        getattr(value, "registry", None), registry)


def _models(value: Any) -> tuple[MetaData | None, list[Any]]:
    """(MetaData to restrict to, registries whose mappers count)."""
    from sqlalchemy import MetaData
    from sqlalchemy.orm import configure_mappers, registry
    from sqlalchemy.orm.mapper import _all_registries

    configure_mappers()  # relationship directions and cascades are known after this
    if value is None:
        return None, list(_all_registries())
    reg = value if isinstance(value, registry) else getattr(value, "registry", None)
    if isinstance(reg, registry):
        return reg.metadata, [reg]
    if isinstance(value, MetaData):
        return value, [r for r in _all_registries() if r.metadata is value] or list(
            _all_registries())
    raise ConfigError(f"audit_foreign_keys(): models must be a declarative Base, registry or "
                      f"MetaData, got {type(value).__name__}.")


def _metadata_fks(metadata: MetaData) -> list[_Fk]:
    out = []
    for table in metadata.sorted_tables:
        leading = _index_leads(table)
        for fkc in table.foreign_key_constraints:
            cols = tuple(c.name for c in fkc.columns)
            ref = fkc.referred_table
            out.append(_Fk(table.schema, table.name, cols, ref.schema, ref.name,
                           str(fkc.name) if fkc.name else None,
                           (fkc.ondelete or "NO ACTION").upper(),
                           any(lead[: len(cols)] and set(lead[: len(cols)]) == set(cols)
                               for lead in leading),
                           all(c.nullable for c in fkc.columns)))
    return out


def _index_leads(table: Any) -> list[tuple[str, ...]]:
    """Column-name tuples of every index, primary key and unique constraint of ``table``."""
    from sqlalchemy import Column, UniqueConstraint

    leads: list[tuple[str, ...]] = []
    for index in table.indexes:
        exprs = list(index.expressions)
        if all(isinstance(e, Column) for e in exprs):
            leads.append(tuple(e.name for e in exprs))
    if table.primary_key.columns:
        leads.append(tuple(c.name for c in table.primary_key.columns))
    leads.extend(tuple(c.name for c in con.columns) for con in table.constraints
                 if isinstance(con, UniqueConstraint))
    return leads


def _database_fks(db: Any) -> list[_Fk]:
    from dbtest.assertions._db import connection_of

    conn = connection_of(db)
    return [_Fk(fk.schema if not fk.table_visible else None, fk.table, fk.columns,
                fk.ref_schema if not fk.ref_visible else None, fk.ref_table, fk.name,
                fk.on_delete, fk.indexed, fk.nullable) for fk in load_foreign_keys(conn)]


def _audit_database(db: Any, *, registries: list[Any], metadata: MetaData | None) -> FkAudit:
    return _audit(_database_fks(db), registries, metadata)


def _audit(fks: list[_Fk], registries: Iterable[Any], metadata: MetaData | None) -> FkAudit:
    findings = FkAudit()
    by_key = {fk.key(): fk for fk in fks}
    for rel, child, cols, parent in _relationships(registries, metadata):
        fk = by_key.get((child, frozenset(cols), parent))
        if fk is not None:
            findings.extend(_judge(rel, fk))
    for fk in fks:
        shown = _shown(fk.schema, fk.table)
        if fk.on_delete == "SET NULL" and not fk.nullable:
            findings.append(FkAuditFinding(
                "set_null_not_nullable", shown, fk.columns, _shown(fk.ref_schema, fk.ref_table),
                fk.name, fk.on_delete, None,
                f"ON DELETE SET NULL on NOT NULL column(s) {', '.join(fk.columns)}: every "
                f"delete of a referenced row fails. Make the column nullable or use CASCADE."))
        if not fk.indexed:
            findings.append(FkAuditFinding(
                "missing_index", shown, fk.columns, _shown(fk.ref_schema, fk.ref_table),
                fk.name, fk.on_delete, None,
                f"no index starts with {', '.join(fk.columns)}: each delete or key update in "
                f"{fk.ref_table} scans {fk.table}. Add index=True to the column(s)."))
    return findings


def _shown(schema: str | None, name: str) -> str:
    return name if schema is None else f"{schema}.{name}"


def _relationships(registries: Iterable[Any], metadata: MetaData | None
                   ) -> Iterable[tuple[Any, str, tuple[str, ...], str]]:
    """(relationship, child table, child FK columns, parent table) for each relationship
    whose parent's delete reaches a foreign key: one-to-many and many-to-many."""
    from sqlalchemy.orm import RelationshipDirection

    for reg in registries:
        for mapper in reg.mappers:
            if metadata is not None and mapper.local_table.metadata is not metadata:
                continue
            for rel in mapper.relationships:
                if rel.parent is not mapper or rel.viewonly:
                    continue
                if rel.direction is RelationshipDirection.ONETOMANY:
                    pairs = rel.local_remote_pairs or []
                    if pairs:
                        yield (rel, pairs[0][1].table.name, tuple(r.name for _, r in pairs),
                               pairs[0][0].table.name)
                elif rel.direction is RelationshipDirection.MANYTOMANY \
                        and rel.secondary is not None:
                    pairs = rel.synchronize_pairs or []
                    if pairs:
                        yield (rel, rel.secondary.name, tuple(s.name for _, s in pairs),
                               pairs[0][0].table.name)


def _judge(rel: Any, fk: _Fk) -> list[FkAuditFinding]:
    from sqlalchemy.orm import RelationshipDirection

    name = f"{rel.parent.class_.__name__}.{rel.key}"
    deletes, passive = bool(rel.cascade.delete), rel.passive_deletes
    cols = ", ".join(fk.columns)
    rule = fk.on_delete
    m2m = rel.direction is RelationshipDirection.MANYTOMANY
    problem: tuple[str, str] | None = None
    if m2m:
        # the ORM deletes the association rows itself unless passive_deletes
        if rule == "CASCADE" and passive is False:
            problem = ("not_passive", f"{name} loads and deletes {fk.table} rows that ON DELETE "
                       f"CASCADE removes anyway; add passive_deletes=True.")
        elif rule != "CASCADE" and passive != "all":
            problem = ("cascade_mismatch", f"{name} deletes the {fk.table} rows of a deleted "
                       f"parent, but the database says ON DELETE {rule}; use ON DELETE CASCADE "
                       f"or passive_deletes='all'.")
    elif rule == "CASCADE":
        if not deletes and passive != "all":
            problem = ("cascade_mismatch", f"{name} sets {fk.table}.{cols} to NULL when the "
                       f"parent is deleted, but the database deletes those rows (ON DELETE "
                       f"CASCADE); use cascade='all, delete-orphan', passive_deletes=True.")
        elif deletes and passive is False:
            problem = ("not_passive", f"{name} loads and deletes each {fk.table} row that ON "
                       f"DELETE CASCADE removes anyway; add passive_deletes=True.")
    elif rule == "SET NULL":
        if deletes:
            problem = ("cascade_mismatch", f"{name} deletes the {fk.table} rows, but the "
                       f"database sets {cols} to NULL (ON DELETE SET NULL); drop 'delete' from "
                       f"the cascade or make the rule CASCADE.")
        elif passive is False:
            problem = ("not_passive", f"{name} loads each {fk.table} row to set {cols} NULL, "
                       f"which ON DELETE SET NULL does anyway; add passive_deletes=True.")
    elif deletes:  # RESTRICT, NO ACTION, SET DEFAULT
        problem = ("cascade_mismatch", f"{name} deletes the {fk.table} rows, so the database's "
                   f"ON DELETE {rule} never applies; remove 'delete' from the cascade and set "
                   f"passive_deletes='all', or make the rule CASCADE.")
    elif passive != "all":
        problem = ("cascade_mismatch", f"{name} sets {fk.table}.{cols} to NULL before deleting "
                   f"the parent, bypassing ON DELETE {rule}; set passive_deletes='all' so the "
                   f"database decides.")
    if problem is None:
        return []
    return [FkAuditFinding(problem[0], _shown(fk.schema, fk.table), fk.columns,
                           _shown(fk.ref_schema, fk.ref_table), fk.name, rule, name, problem[1])]
