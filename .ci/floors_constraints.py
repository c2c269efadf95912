"""Print a pip constraints file pinning every dependency of dbtest to its declared floor.

    python .ci/floors_constraints.py [--loose NAME ...] [EXTRA ...]   # core + these extras

``name>=X`` becomes ``name==X``; where several groups name one package (pytest>=7.4 in
the core, pytest>=8.2 in the async extra) the highest floor of the chosen groups wins.
``--loose NAME`` leaves a package unpinned: one whose floor another chosen dependency
raises (pytest 8.2 needs pluggy>=1.5), so that its own floor is tested elsewhere.
Used by .ci/floors to prove every declared floor true.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def floors(extras: list[str]) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["optional-dependencies"]
    todo = list(project["dependencies"])
    seen_extras: set[str] = set()
    wanted = list(extras)
    while wanted:
        extra = wanted.pop()
        if extra in seen_extras:
            continue
        seen_extras.add(extra)
        for line in groups[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == "dbtest":
                wanted.extend(req.extras)
            else:
                todo.append(line)
    out: dict[str, str] = {}
    for line in todo:
        req = Requirement(line)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if not lows:
            continue
        name = canonicalize_name(req.name)
        low = max(lows, key=lambda v: tuple(int(x) for x in v.split(".")))
        if name not in out or tuple(int(x) for x in low.split(".")) > \
                tuple(int(x) for x in out[name].split(".")):
            out[name] = low
    return out


if __name__ == "__main__":
    args, loose = sys.argv[1:], set()
    while "--loose" in args:
        at = args.index("--loose")
        loose.add(canonicalize_name(args[at + 1]))
        del args[at:at + 2]
    for name, version in sorted(floors(args).items()):
        if name not in loose:
            print(f"{name}=={version}")
