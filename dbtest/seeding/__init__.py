"""Seed sets, the context a seed runs with, and the ``dbtest seed`` command.

``seeds/<name>.py`` defines ``seed(ctx)`` (and optionally ``requires = [...]``);
``seeds/<name>.sql`` is run as is (``-- requires: ...`` on a leading comment line).
:func:`load_seeds` loads sets into a connection's transaction (templates use it for
``template_seeds`` and ``@pytest.mark.dbtest(seeds=[...])``); :func:`seed_command` is the
CLI's all-or-nothing load into any database.
"""

from __future__ import annotations

from dbtest.seeding._command import seed_command
from dbtest.seeding._loader import SeedContext, load_seeds
from dbtest.seeding._report import SeedProgress, SeedReport
from dbtest.seeding._sets import SeedSet, available_sets, resolve_sets, seed_fingerprint

__all__ = ["SeedContext", "SeedProgress", "SeedReport", "SeedSet", "available_sets",
           "load_seeds", "resolve_sets", "seed_command", "seed_fingerprint"]
