"""Database assertions: rows, cascades, change counts, aggregates and query counts.

Every helper raises :class:`~dbtest.errors.DbAssertionError` (an ``AssertionError`` and a
``DbtestError``) whose message shows expected against actual as a table with the differing
cells marked ``*like this*``, and hides its own frames from pytest's traceback. Bad input
(an unknown table or column, a query that is not an aggregate, an object that is not
persistent, ...) raises :class:`~dbtest.errors.ConfigError` naming the culprit.

The first argument is the database handle: a ``Session`` or ``Connection`` (``db``,
``db_connection``), for read-only helpers also an ``Engine``. With an ``AsyncSession``,
``AsyncConnection`` or ``AsyncEngine`` the same functions return an awaitable
(``await dbtest.assert_rows(async_db, ...)``) and the context managers are used with
``async with``.

==========================  ==============================================================
checks                      helpers
==========================  ==============================================================
rows                        :func:`assert_row_count`, :func:`assert_rows`
cascades                    :func:`assert_cascade`
foreign keys                :func:`audit_foreign_keys`
change counts               :func:`track_changes` (yields :class:`ChangeCounts`),
                            :class:`Inserted` / :class:`Updated` / :class:`Deleted`
aggregates                  :func:`assert_aggregate`
query counts                :func:`count_queries`, :func:`assert_max_queries`,
                            :func:`assert_num_queries`, :func:`assert_constant_queries`
==========================  ==============================================================
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from dbtest.assertions._aggregate import AggregateReport, assert_aggregate
from dbtest.assertions._audit import FkAudit, FkAuditFinding, audit_foreign_keys
from dbtest.assertions._cascade import Blocked, CascadeReport, CascadeResult, assert_cascade
from dbtest.assertions._changes import (
    ChangeCounts,
    Deleted,
    Inserted,
    TableChanges,
    Updated,
    assertrepr_compare,
    track_changes,
)
from dbtest.assertions._queries import (
    CapturedQuery,
    QueryCounter,
    assert_constant_queries,
    assert_max_queries,
    assert_num_queries,
    count_queries,
)
from dbtest.assertions._rows import assert_row_count, assert_rows

__all__ = [
    "AggregateReport",
    "Blocked",
    "CapturedQuery",
    "CascadeReport",
    "CascadeResult",
    "ChangeCounts",
    "Deleted",
    "FkAudit",
    "FkAuditFinding",
    "Inserted",
    "QueryCounter",
    "TableChanges",
    "Updated",
    "assert_aggregate",
    "assert_cascade",
    "assert_constant_queries",
    "assert_max_queries",
    "assert_num_queries",
    "assert_row_count",
    "assert_rows",
    "assertrepr_compare",
    "audit_foreign_keys",
    "count_queries",
    "track_changes",
]

# Old names -> new names (docs/reference/names.md says why each was renamed).
_DEPRECATED = {"ChangeSet": "ChangeCounts"}

if TYPE_CHECKING:
    ChangeSet = ChangeCounts  # deprecated: ChangeCounts


def __getattr__(name: str) -> Any:
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module 'dbtest.assertions' has no attribute {name!r}")
    warnings.warn(f"dbtest.assertions.{name} is deprecated, use {new}: the same class",
                  DeprecationWarning, stacklevel=2)
    return globals()[new]
