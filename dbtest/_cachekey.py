"""``dbtest cache key|path|wait``: keep dbtest's cached cluster in a CI cache.

A local (or embedded) server starts from a cluster cached under ``<cache_dir>/clusters``;
after a run that built a template, that cluster holds the template too. Restored on a
new CI runner, it makes the first run warm: no ``initdb``, no migrations. The key
changes whenever what is cached would be rebuilt anyway:

- the cluster's identity: PostgreSQL binaries (folder, full version), initdb settings,
  the server's account and dbtest's cluster format (the cluster folder's name);
- the default template's name: server major version, the schema source's fingerprint
  (Alembic scripts + ini, rendered MetaData DDL and the project modules it imports, SQL
  files, callable source), ``schema_inputs`` files, the template seed sets and dbtest's
  template format.

So ``key: $(dbtest cache key)`` and ``path: $(dbtest cache path)`` in any CI cache, with
``dbtest cache wait`` after the tests (a run that built a template copies it into the
cache in the background, after pytest returns). See docs/ci.md.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dbtest.errors import DbtestError, PostgresNotFound

if TYPE_CHECKING:
    from dbtest.provision import PgBinaries
    from dbtest.settings import Settings

__all__ = ["CACHE_KEY_FORMAT", "cache_command", "cache_folder", "cache_inputs", "cache_key",
           "wait_for_cache"]

#: bump when the key's recipe changes
CACHE_KEY_FORMAT = 1


def _binaries(settings: Settings) -> tuple[str, PgBinaries | None]:
    """The backend whose cluster would be cached, and its binaries (``None``: no local
    cluster, e.g. ``url`` or ``docker``)."""
    from dbtest.provision import find_binaries, find_embedded_binaries, load_binaries_memo

    backend = "url" if settings.url else settings.backend
    if backend in ("auto", "local"):
        memo = settings.cache_dir / "binaries.json"
        load_binaries_memo(memo)
        try:
            return "local", find_binaries(settings.pg_bin)
        except PostgresNotFound:
            if backend == "local":
                raise
        backend = "embedded"
    if backend == "embedded":
        try:
            return "embedded", find_embedded_binaries()
        except PostgresNotFound:
            if settings.backend == "embedded":
                raise
            backend = "docker"
    return backend, None


def cache_inputs(settings: Settings) -> dict[str, Any]:
    """Everything the key is a hash of, by name."""
    from types import SimpleNamespace

    from dbtest._schema import load_schema
    from dbtest._templates import TemplateCache, TemplateKey
    from dbtest.provision import LocalCluster

    backend, binaries = _binaries(settings)
    inputs: dict[str, Any] = {"format": CACHE_KEY_FORMAT, "backend": backend}
    if binaries is None:
        inputs["cluster"] = None  # nothing local to cache: the server is elsewhere
        return inputs
    cluster = LocalCluster(binaries, settings.cache_dir, backend=backend)
    inputs["cluster"] = cluster.cluster_dir.name
    inputs["major"] = binaries.major
    # the template's name is a hash of its inputs; TemplateCache.name_for reads only the
    # server's major version, so no server is started for it
    templates = TemplateCache(SimpleNamespace(major=binaries.major),  # type: ignore[arg-type]
                              settings.root, settings.seeds, seed=settings.seed or 0,
                              inputs=settings.schema_inputs)
    key = TemplateKey(settings.schema, tuple(settings.template_seeds))
    inputs["template"] = templates.name_for(key, load_schema(key.schema, settings.root))
    return inputs


def cache_key(settings: Settings) -> str:
    """``dbtest-pg<major>-<hash>``: equal keys mean a restored cache starts warm."""
    inputs = cache_inputs(settings)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    major = f"pg{inputs['major']}" if inputs.get("major") else str(inputs["backend"])
    return f"dbtest-{major}-{digest}"


def cache_folder(settings: Settings) -> Path:
    """The folder to save and restore: the cached clusters (the rest of the cache dir
    is per machine: the server registry, spare copies, binary probes)."""
    return settings.cache_dir / "clusters"


def _newest_change(tree: Path) -> float:
    newest = tree.lstat().st_mtime
    for path in tree.rglob("*"):
        try:
            newest = max(newest, path.lstat().st_mtime)
        except OSError:
            continue  # removed meanwhile
    return newest


def _busy(folder: Path, quiet_for: float = 2.0) -> list[Path]:
    """Copies into the cache still under way: a partial generation whose writer still runs
    (``gen-*.partial-<pid>-<start>``), an older dbtest's ``*.partial`` written to in the
    last ``quiet_for`` seconds (one a killed run left behind stays as it is and is replaced
    later), or a ``current`` link being replaced."""
    from dbtest.provision import cached_generations, identity_alive

    if not folder.is_dir():
        return []
    now = time.time()
    out = []
    for cluster in (c for c in folder.iterdir() if c.is_dir()):
        for gen in cached_generations(cluster):
            if gen.complete:
                continue
            try:
                if (identity_alive(gen.writer) if gen.writer is not None
                        else now - _newest_change(gen.path) < quiet_for):
                    out.append(gen.path)
            except OSError:
                continue  # renamed or removed meanwhile: the next check sees the result
        out += [p for p in cluster.iterdir() if p.name.startswith("current.")]
    return out


def wait_for_cache(settings: Settings, timeout: float = 120.0) -> None:
    """Return once no background copy into the cache is under way (checked twice,
    0.2 s apart); raise :class:`DbtestError` after ``timeout`` seconds."""
    folder = cache_folder(settings)
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        busy = _busy(folder)
        quiet = 0 if busy else quiet + 1
        if busy and time.monotonic() > deadline:
            raise DbtestError(f"copies into the dbtest cache are still under way after "
                              f"{timeout:.0f} s: {', '.join(map(str, busy))}. Is another "
                              f"test run using {settings.cache_dir}? Wait for it, or remove "
                              f"those folders if no run is.")
        if quiet < 2:
            time.sleep(0.2)


def cache_command(settings: Settings, action: Literal["key", "path", "wait"],
                  verbose: bool = False) -> str:
    """Keep the cached cluster in a CI cache: 'key' prints the cache key, 'path' the folder
    to save and restore, 'wait' waits for background copies into it to finish.

    The key is a hash of what the cached cluster and the default template are made of
    (PostgreSQL binaries and major version, schema fingerprint, template seeds, dbtest's
    formats): a cache restored under the same key starts warm, with no initdb and no
    migrations.

    :param action: key: the CI cache key; path: the folder to save and restore; wait:
        until background copies into it are done
    :param verbose: with key: also print what the key is made of
    """
    if action == "key":
        key = cache_key(settings)
        if not verbose:
            return key
        inputs = cache_inputs(settings)
        return "\n".join([key, *(f"# {name}: {value}" for name, value in inputs.items())])
    if action == "path":
        return str(cache_folder(settings))
    if action == "wait":
        wait_for_cache(settings)
        return f"# nothing is being copied into {cache_folder(settings)}"
    from dbtest.errors import ConfigError

    raise ConfigError(f"unknown cache action {action!r}; use key, path or wait")
