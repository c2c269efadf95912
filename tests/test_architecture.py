"""The import graph of dbtest stays clean (issue 17): no module-level import cycles, no
private name used outside its module, no private module imported from outside its package.

The checker is ``tools/check_imports.py``; these tests run it over dbtest itself (the
suite is what CI runs) and over small made-up packages, so it is known to catch each
kind of problem.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _load_checker() -> ModuleType:
    path = ROOT / "tools" / "check_imports.py"
    spec = importlib.util.spec_from_file_location("check_imports", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_imports", module)
    spec.loader.exec_module(module)
    return module


check_imports = _load_checker()


def test_dbtest_import_graph_is_clean() -> None:
    found = [str(f) for f in check_imports.findings()]
    assert found == [], "\n".join(found)


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"dbtest/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return root


def _found(root: Path) -> list[str]:
    return [f.what for f in check_imports.findings(root, frozenset())]


def test_module_level_cycle_is_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {"dbtest/a.py": "from dbtest import b\n",
                               "dbtest/b.py": "import dbtest.a\n"})
    assert _found(root) == ["import cycle at module level: dbtest.a -> dbtest.b"]


def test_lazy_and_type_checking_imports_make_no_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "dbtest/a.py": "from dbtest import b\n",
        "dbtest/b.py": ("from typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n    from dbtest import a\n"
                        "def f():\n    from dbtest import a\n    return a\n"),
    })
    assert _found(root) == []


def test_private_names_across_modules_are_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "dbtest/pkg/_core.py": "_helper = 1\nPUBLIC = 2\nclass Thing:\n    _secret = 3\n",
        "dbtest/pkg/_cls.py": "from dbtest.pkg._core import Thing\nX = Thing._secret\n",
        "dbtest/pkg/_user.py": "from dbtest.pkg._core import PUBLIC, _helper\n",
        "dbtest/pkg/_attr.py": ("def f():\n    from dbtest.pkg import _core as core\n"
                                "    return core._helper, core.PUBLIC, core.__name__\n"),
    })
    assert sorted(_found(root)) == [
        "dbtest.pkg._attr uses _helper, private to dbtest.pkg._core",
        "dbtest.pkg._cls uses Thing._secret, private to dbtest.pkg._core",
        "dbtest.pkg._user uses _helper, private to dbtest.pkg._core",
    ]


def test_private_module_outside_its_package_is_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "dbtest/pkg/__init__.py": "from dbtest.pkg._core import PUBLIC\n",
        "dbtest/pkg/_core.py": "PUBLIC = 1\n",
        "dbtest/pkg/sub/_deep.py": "from dbtest.pkg import _core\n",  # inside: allowed
        "dbtest/_top.py": "PUBLIC = 1\n",
        "dbtest/pkg/_uses_top.py": "from dbtest import _top\n",  # dbtest.pkg is in dbtest
        "dbtest/other.py": "from dbtest.pkg._core import PUBLIC\n",
        "dbtest/public.py": "from dbtest.pkg import PUBLIC\n",
    })
    assert _found(root) == ["dbtest.other imports dbtest.pkg._core, private to dbtest.pkg"]


def test_a_stale_allowance_is_a_finding(tmp_path: Path) -> None:
    root = _package(tmp_path, {"dbtest/a.py": "X = 1\n"})
    found = [f.what for f in check_imports.findings(root, frozenset({"gone"}))]
    assert found == ["stale ALLOWED entry, remove it: gone"]
