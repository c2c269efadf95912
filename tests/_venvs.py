"""Small virtual environments made from the running one, without a download.

``make_venv(path, ["dbtest"])`` creates a venv (no pip) whose site-packages holds links to
exactly the distributions that ``pip install dbtest`` would bring (dbtest's requirements
without extras, followed transitively), taken from the environment running this code.
So a test or benchmark can run pytest "with dbtest core only" or "without dbtest" in
about 0.1 s, offline, with the very same package versions as the full environment.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["ROOT", "closure", "make_venv"]

ROOT = Path(__file__).resolve().parents[1]


def closure(requirements: Iterable[str]) -> set[str]:
    """The canonical names of ``requirements`` (``"name[extra]"`` strings) and everything
    they need, as installed here (markers evaluated with the extras asked for)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        extras = sorted(req.extras)
        key = f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional marker-selected dependency absent here
        for child in dist.requires or ():
            child_req = Requirement(child)
            if child_req.marker is None:
                todo.append((child_req, ""))
            else:
                for e in ("", *extras):
                    if child_req.marker.evaluate({"extra": e}):
                        todo.append((child_req, e))
                        break
    return {k.split("[")[0] for k in seen}


def _site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"


def make_venv(path: Path, requirements: Iterable[str], *, dbtest: bool = True) -> Path:
    """A venv at ``path`` holding ``requirements`` and their dependencies (and dbtest
    itself unless ``dbtest=False``); returns its python executable."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    target = _site_packages(path)
    names = closure(requirements)
    names.discard("dbtest")
    for name in sorted(names):
        dist = md.distribution(name)
        base = Path(str(dist.locate_file("")))
        tops = {f.parts[0] for f in dist.files or () if f.parts and f.parts[0] not in
                ("..", "__pycache__")}
        for top in tops:
            link = target / top
            if (base / top).exists() and not os.path.lexists(link):
                link.symlink_to(base / top)
    if dbtest:
        info = next(_site_packages(Path(sys.prefix)).glob("dbtest-*.dist-info"))
        (target / info.name).symlink_to(info)
        (target / "dbtest-source.pth").write_text(f"{ROOT}\n")
    return path / "bin" / "python"
