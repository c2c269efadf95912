"""Does installing dbtest into an app's environment change any package the app has?

For each app virtualenv given, ask pip's resolver (``pip install --dry-run --report``) what
installing this dbtest checkout (with the extras given) would do in that environment, as a
user would run it, and compare with ``pip freeze``: a package already installed that pip
would install at another version is an upgrade (or downgrade) past the app's own pins. Exit
status 1 when any app would have a package changed.

    python benchmarks/apps/pins_check.py --extras async VENV [VENV ...]

``VENV=FREEZE`` instead: the app's ``pip freeze`` from before dbtest was installed (or its
lock as ``name==version`` lines); pip then resolves from scratch (``--ignore-installed``)
in that venv's Python with the freeze as constraints, so the resolution fails unless dbtest
fits every version the app has.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def installed(venv: Path) -> dict[str, str]:
    """``{name: version}`` of the distributions in ``venv``."""
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format",
                          "json"], check=True, text=True, capture_output=True).stdout
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(out)}


def frozen(path: Path) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines of a freeze (dbtest's skipped)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith(("#", "-")) and canonicalize_name(name) != "dbtest":
            pins[canonicalize_name(name)] = version.strip()
    return pins


def would_install(venv: Path, extras: str, constraints: Path | None) -> dict[str, str]:
    """``{name: version}`` pip would install for ``dbtest[extras]`` into ``venv``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--quiet",
               "--report", str(report), f"{REPO}[{extras}]" if extras else str(REPO)]
        if constraints is not None:
            pins = Path(tmp) / "pins.txt"
            pins.write_text("".join(f"{n}=={v}\n" for n, v in frozen(constraints).items()))
            cmd += ["--ignore-installed", "-c", str(pins)]
        done = subprocess.run(cmd, text=True, capture_output=True)
        if done.returncode != 0:
            tail = [line for line in done.stderr.splitlines() if "Location" not in line][-5:]
            raise SystemExit(f"{venv}: pip could not resolve dbtest[{extras}]: "
                             + " | ".join(tail))
        data = json.loads(report.read_text())
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
            for i in data["install"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venvs", nargs="+", help="VENV or VENV=CONSTRAINTS_FILE")
    parser.add_argument("--extras", default="", help="dbtest extras, e.g. async")
    args = parser.parse_args()
    bad = 0
    print("| app environment | app packages | dbtest needs of them (same version) | dbtest "
          "would add | would change |")
    print("|---|---:|---:|---|---|")
    for spec in args.venvs:
        venv_text, _, cons = spec.partition("=")
        venv = Path(venv_text)
        before = frozen(Path(cons)) if cons else installed(venv)
        plan = would_install(venv, args.extras, Path(cons) if cons else None)
        plan.pop("dbtest", None)
        changed = {n: f"{before[n]} -> {v}" for n, v in plan.items()
                   if n in before and before[n] != v}
        added = sorted(f"{n} {v}" for n, v in plan.items() if n not in before)
        # from scratch, pip lists the app's own packages too: count them as kept
        kept = sum(1 for n, v in plan.items() if before.get(n) == v)
        bad += bool(changed)
        print(f"| {venv.name}{' (its freeze as constraints)' if cons else ''} | "
              f"{len(before)} | {kept} | {', '.join(added) or '-'} | "
              f"{', '.join(f'{n} {c}' for n, c in changed.items()) or 'none'} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
