"""Print a pip constraints file pinning every dependency of dbtest to its declared floor.

    python .ci/floors_constraints.py [EXTRA ...]   # the core, plus these extras

``name>=X`` becomes ``name==X``; where several groups name one package (pytest>=7.4 in
the core, pytest>=8.2 in the async extra) the highest floor of the chosen groups wins.
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
    for name, version in sorted(floors(sys.argv[1:]).items()):
        print(f"{name}=={version}")
