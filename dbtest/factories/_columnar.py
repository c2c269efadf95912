"""Column-by-column evaluation of a factory batch: the fast half of the bulk path.

factory-boy resolves every row through its Resolver machinery (~25 µs per object before
any value is made). When every declaration of a factory (and of its SubFactories) gives
a row's value from that row alone (constants, ``Sequence``, ``LazyAttribute``,
``LazyAttributeSequence``, ``SelfAttribute``, :class:`dbtest.fakes.Fake`, ``SubFactory``,
``post_generation``), the values do not depend on the order rows are made in, so a whole
column can be made at once and the rows still equal ``n`` separate ``create()`` calls.
One declaration that draws from shared random state (``factory.Faker``, fuzzy,
``LazyFunction``, ``Iterator``) is allowed in the whole tree: evaluated in row order it
draws the same numbers as the row-by-row path. Anything else returns ``None`` and the
caller lets factory-boy build row by row.
"""

from __future__ import annotations

from typing import Any

__all__ = ["columnar_build", "columnar_rows"]

_STATEFUL = ("Faker", "LazyFunction", "Iterator", "FuzzyAttribute")


class _NotColumnar(Exception):
    pass


class _Step:
    """The part of factory-boy's BuildStep that declarations read."""

    __slots__ = ("builder", "sequence", "stub")

    def __init__(self, sequence: int, row: Any) -> None:
        self.sequence = sequence
        self.stub = row
        self.builder = _CREATE

    @property
    def chain(self) -> tuple[Any, ...]:
        return (self.stub,)


class _Builder:
    strategy = "create"


_CREATE = _Builder()


class _Row:
    """What ``LazyAttribute`` functions see: the row's values, computed on demand."""

    __slots__ = ("_lazy", "_pending", "_seq", "_values")

    def __init__(self, values: dict[str, Any], lazy: dict[str, Any], seq: int) -> None:
        self._values = values
        self._lazy = lazy
        self._seq = seq
        self._pending: list[str] = []

    def __getattr__(self, name: str) -> Any:
        values = self._values
        if name in values:
            return values[name]
        decl = self._lazy.get(name)
        if decl is None:
            raise AttributeError(f"the factory has no attribute {name!r}")
        if name in self._pending:
            raise AttributeError(f"cyclic lazy attribute {name!r}")
        self._pending.append(name)
        try:
            value = decl[0].evaluate(self, _Step(self._seq, self), decl[1])
        finally:
            self._pending.pop()
        values[name] = value
        return value


def columnar_rows(factory_cls: Any, size: int, kwargs: dict[str, Any]
                  ) -> list[dict[str, Any]] | None:
    """The rows of ``size`` objects as attribute dicts, without making the objects; ``None``
    when the factory is not order-free or needs objects (SubFactory, post-generation)."""
    try:
        plan = _Plan(factory_cls, kwargs, [0], [])
    except _NotColumnar:
        return None
    if plan.subs or plan.post:
        return None
    return plan.rows(size, [])[0]


def columnar_build(factory_cls: Any, size: int, kwargs: dict[str, Any], sink: list[Any]
                   ) -> list[Any] | None:
    """Build ``size`` objects column by column (appended to ``sink`` with their parents),
    or ``None`` when the factory is not order-free."""
    try:
        plan = _Plan(factory_cls, kwargs, [0], [])
    except _NotColumnar:
        return None
    return plan.build(size, sink)


class _Plan:
    def __init__(self, factory_cls: Any, kwargs: dict[str, Any], stateful: list[int],
                 counters: list[Any], source: Any = None) -> None:
        from factory import declarations as d
        from factory.alchemy import SQLAlchemyModelFactory
        from factory.base import BaseFactory

        from dbtest.factories._binding import current_session
        from dbtest.fakes import Fake

        meta = factory_cls._meta
        writes_to = meta.sqlalchemy_session_factory or meta.sqlalchemy_session
        if meta.sqlalchemy_session_factory not in (None, current_session) or \
                (source is not None and writes_to is not source):
            raise _NotColumnar  # the batch is written through one session: the factory's
        if any(c is meta.counter_reference for c in counters):
            raise _NotColumnar  # a shared sequence counter (or a recursive SubFactory)
        counters.append(meta.counter_reference)
        if meta.parameters or meta.inline_args or meta.rename or \
                meta.sqlalchemy_get_or_create:
            raise _NotColumnar
        for hook in ("_adjust_kwargs", "_create", "_after_postgeneration", "_generate"):
            mine = getattr(factory_cls, hook).__func__
            theirs = getattr(SQLAlchemyModelFactory, hook).__func__
            if mine is not theirs and mine is not getattr(BaseFactory, hook).__func__:
                raise _NotColumnar  # the factory customises creation
        if any("__" in k for k in kwargs):
            raise _NotColumnar
        self.factory = factory_cls
        self.meta = meta
        self.model = meta.model
        self.exclude = set(meta.exclude)
        self.columns: list[tuple[str, str, Any, Any]] = []  # (name, kind, decl, extra)
        self.lazy: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.subs: dict[str, _Plan] = {}
        pre = meta.pre_declarations
        for name in pre:
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, d.BaseDeclaration):
                    self.columns.append((name, "const", value, None))
                    continue
                decl, context = value, {}  # a declaration given to this batch replaces it
            else:
                decl, context = pre[name].declaration, dict(pre[name].context)
            if not isinstance(decl, d.BaseDeclaration):
                if context:
                    raise _NotColumnar
                self.columns.append((name, "const", decl, None))
                continue
            if isinstance(decl, d.SubFactory) and type(decl) is d.SubFactory:
                sub_kwargs = {**decl._defaults, **context}
                sub = decl.get_factory()  # type: ignore[no-untyped-call]
                self.subs[name] = _Plan(sub, sub_kwargs, stateful, counters, writes_to)
                self.columns.append((name, "sub", decl, None))
                continue
            if any(isinstance(v, d.BaseDeclaration) for v in context.values()):
                raise _NotColumnar
            extra = {**decl._defaults, **context}
            if isinstance(decl, Fake):
                self.columns.append((name, "fake", decl, extra))
            elif type(decl) in (d.Sequence,):
                self.columns.append((name, "seq", decl, extra))
            elif type(decl) in (d.LazyAttribute, d.LazyAttributeSequence) or (
                    type(decl) is d.SelfAttribute and decl.depth <= 1):
                self.lazy[name] = (decl, extra)
            elif type(decl).__name__ in _STATEFUL or type(decl).__module__ == "factory.fuzzy":
                stateful[0] += 1
                if stateful[0] > 1:
                    raise _NotColumnar  # two random draws per row: order would matter
                self.columns.append((name, "call", decl, extra))
            else:
                raise _NotColumnar
        extra_kwargs = [k for k in kwargs if k not in pre and k not in meta.post_declarations]
        for name in extra_kwargs:
            self.columns.append((name, "const", kwargs[name], None))
        self.post: list[tuple[str, Any, dict[str, Any]]] = []
        post = meta.post_declarations
        for name in post.sorted():
            decl, context = post[name].declaration, dict(post[name].context)
            if type(decl) is not d.PostGeneration or context:
                raise _NotColumnar
            self.post.append((name, decl, {"": kwargs[name]} if name in kwargs else {}))

    def _raw_init(self, rows: list[dict[str, Any]]) -> bool:
        """Whether instances may skip the constructor: SQLAlchemy's default one, only mapped
        attributes, and no existing object among the values (its backref must fire)."""
        from sqlalchemy import inspect
        from sqlalchemy.orm.decl_base import _declarative_constructor

        manager = getattr(self.model, "_sa_class_manager", None)
        if manager is None or manager.original_init is not _declarative_constructor or not rows:
            return False
        mapper = inspect(self.model)
        if any(key not in mapper.attrs for key in rows[0]):
            return False  # the constructor raises the error the user should see
        relationships = set(mapper.relationships.keys())
        for name, kind, value, _extra in self.columns:
            if name in relationships and kind == "const" and value is not None:
                return False
        return True

    def rows(self, size: int, sink: list[Any]) -> tuple[list[dict[str, Any]], list[int]]:
        """The attribute values of ``size`` rows (excluded names dropped) and their
        sequence numbers; SubFactory parents are built as objects into ``sink``."""
        seqs = [self.meta.next_sequence() for _ in range(size)]
        columns: dict[str, list[Any]] = {}
        for name, kind, decl, extra in self.columns:
            if kind == "const":
                columns[name] = [decl] * size
            elif kind == "sub":
                columns[name] = self.subs[name].build(size, sink)
            elif kind == "fake":
                columns[name] = decl.column(seqs, extra)
            elif kind == "seq":
                fn = decl.function
                columns[name] = [fn(n) for n in seqs]
            else:  # the one stateful declaration: in row order, like the slow path
                columns[name] = [decl.evaluate(None, _Step(n, None), dict(extra))
                                 for n in seqs]
        names = list(columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(),
                                                                        strict=True)] \
            if names else [{} for _ in range(size)]
        if self.lazy:
            for row, n in zip(rows, seqs, strict=True):
                resolver = _Row(row, self.lazy, n)
                for name in self.lazy:
                    getattr(resolver, name)
        if self.exclude:
            rows = [{k: v for k, v in row.items() if k not in self.exclude} for row in rows]
        return rows, seqs

    def build(self, size: int, sink: list[Any]) -> list[Any]:
        rows, seqs = self.rows(size, sink)
        model = self.model
        if self._raw_init(rows):
            # what the generated __init__ would do, minus per-attribute events: values go
            # straight into the instance dict (the batch is written from there, and the
            # objects' history is committed right after)
            new = model._sa_class_manager.new_instance
            objects = []
            for row in rows:
                obj = new()
                obj.__dict__.update(row)
                objects.append(obj)
        else:
            objects = [model(**row) for row in rows]
        sink.extend(objects)
        for _name, decl, overrides in self.post:
            for obj, n in zip(objects, seqs, strict=True):
                decl.evaluate_post(instance=obj, step=_Step(n, obj), overrides=dict(overrides))
        return objects
