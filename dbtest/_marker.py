"""The ``@pytest.mark.dbtest(...)`` marker: its help line, its options merged per test
(validated at collection, read once per test) and what it cannot apply to."""

from __future__ import annotations

from typing import Any

import pytest

from dbtest.errors import ConfigError

__all__ = ["ENGINE_FIXTURES", "MARKER", "engine_conflict", "marker_options"]

MARKER = ("dbtest(isolation=None, seeds=None, schema=None): per-test database options: "
          "isolation 'savepoint' or 'fresh', seed sets loaded into the template, and a "
          "schema source other than the configured one")


#: session-scoped fixtures on the worker database: they serve the configured template only,
#: and reach it without a savepoint fixture's own checks
ENGINE_FIXTURES = frozenset({"db_engine", "async_db_engine"})

_MARKER_KEYS = ("isolation", "seeds", "schema")
_MARKER_KEY = pytest.StashKey[dict[str, Any]]()


def marker_options(item: pytest.Item) -> dict[str, Any]:
    """The merged ``@pytest.mark.dbtest(...)`` options of ``item`` (closest wins); read
    once per test (several fixtures ask; collection validated them already)."""
    found = item.stash.get(_MARKER_KEY, None)
    if found is None:
        found = item.stash[_MARKER_KEY] = _read_marker(item)
    return found


def _read_marker(item: pytest.Item) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    usage = f"Use {MARKER.split(':')[0]} (keyword arguments only)."
    for mark in reversed(list(item.iter_markers("dbtest"))):
        if mark.args:
            raise ConfigError(f"{item.nodeid}: invalid @pytest.mark.dbtest arguments: "
                              f"positional {mark.args!r}. {usage}")
        for key in mark.kwargs:
            if key not in _MARKER_KEYS:
                import difflib

                near = difflib.get_close_matches(key, _MARKER_KEYS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{item.nodeid}: invalid @pytest.mark.dbtest arguments: "
                                  f"unknown key {key!r}{hint}. {usage}")
        merged.update({k: v for k, v in mark.kwargs.items() if v is not None})
    iso = merged.get("isolation")
    if iso is not None and iso not in ("savepoint", "fresh"):
        raise ConfigError(f"{item.nodeid}: @pytest.mark.dbtest(isolation={iso!r}) must be "
                          f"'savepoint' or 'fresh'; use one of those")
    seeds = merged.get("seeds")
    if isinstance(seeds, str):
        merged["seeds"] = seeds = [seeds]
    if seeds is not None and (not isinstance(seeds, (list, tuple)) or
                              not all(isinstance(s, str) and s for s in seeds)):
        raise ConfigError(f"{item.nodeid}: @pytest.mark.dbtest(seeds={seeds!r}) must be a "
                          f"seed set name or a list of them, e.g. seeds=['base']")
    schema = merged.get("schema")
    if schema is not None:
        if not isinstance(schema, str):
            raise ConfigError(f"{item.nodeid}: @pytest.mark.dbtest(schema={schema!r}) must be "
                              f"a string such as 'metadata:myapp.models:Base'")
        from dbtest._schema import parse_schema_spec

        parse_schema_spec(schema, where=f"{item.nodeid}: mark.dbtest(schema=...)")
    return merged


def engine_conflict(item: pytest.Item, opts: dict[str, Any], settings: Any) -> str | None:
    """Why ``item``'s marker cannot apply to the session-scoped engines it uses, or None."""
    used = sorted(ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    schema, seeds = opts.get("schema"), opts.get("seeds") or ()
    other_schema = schema is not None and schema != settings.schema
    other_seeds = not set(seeds) <= set(settings.template_seeds)
    if not used or not (other_schema or other_seeds):
        return None
    what = ", ".join(f"{k}={opts[k]!r}" for k in ("schema", "seeds") if opts.get(k))
    return (f"{item.nodeid}: @pytest.mark.dbtest({what}) cannot apply to {' and '.join(used)}:"
            f" session-scoped, they serve the configured template (schema "
            f"{settings.schema or 'none'}). Use db / db_connection / async_db, or fresh_db and "
            f"its .engine, in a test with this marker (or drop {' and '.join(used)} from it).")
