"""The documentation: the site builds, its examples run, its CI recipes parse.

- ``mkdocs build --strict`` succeeds (skipped, with the reason, when the ``docs`` extra is
  not installed);
- every code example the pages include (``--8<--`` snippets from ``docs/examples/``) runs:
  the example-app tests against ``migrations_example/`` with their stored snapshots, and the
  migration guide's suite both before (hand-written fixtures) and after (dbtest);
- every ``.github/workflows/*.yml`` and every YAML block of ``docs/ci.md`` parses and runs
  pytest; the repository's workflow runs the README's test command.

After an intended change to what an example writes, regenerate the stored snapshots with
``DBTEST_DOCS_SNAPSHOT_UPDATE=1 pytest tests/test_docs.py -k examples`` and review the diff
of ``docs/examples/app/__snapshots__``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import dbtest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
README_TEST_COMMAND = ("python -m venv .venv && .venv/bin/pip install -e '.[dev]' && "
                       ".venv/bin/pytest -n 2")
_SNIPPET = re.compile(r'^\s*--8<--\s+"(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"\s*$', re.M)
_YAML_BLOCK = re.compile(r"^```ya?ml[^\n]*\n(?P<body>.*?)^```", re.M | re.S)

APP_PYPROJECT = """
[tool.dbtest]
schema = "alembic:migrations_example/alembic.ini"
seeds = "seeds"

[tool.pytest.ini_options]
pythonpath = ["."]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
filterwarnings = ["error", "ignore::DeprecationWarning:testcontainers.*",
                  "ignore::pytest.PytestUnraisableExceptionWarning"]
"""

MIGRATING_PYPROJECT = """
{dbtest}
[tool.pytest.ini_options]
pythonpath = ["."]
asyncio_default_fixture_loop_scope = "function"
"""


# -- the site ------------------------------------------------------------------------------
def _missing_docs_tools() -> list[str]:
    wanted = {"mkdocs": "mkdocs", "material": "mkdocs-material",
              "mkdocstrings": "mkdocstrings", "mkdocstrings_handlers.python":
              "mkdocstrings-python"}
    missing = []
    for module, package in wanted.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


def test_site_builds_strict(tmp_path: Path) -> None:
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): "
                    f"pip install -e '.[docs]' to build the site")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # snippets were included, and the API reference was generated from the docstrings
    tutorial = (site / "tutorial" / "index.html").read_text()
    assert "fast_password_hashing" in tutorial  # migrations_example/tests/conftest.py
    api = (site / "reference" / "api" / "dbtest" / "index.html").read_text()
    for name in dbtest._EXPORTS:
        assert name in api, name
    assert 'id="dbtest.ephemeral_postgres"' in api
    for page in (site / "reference" / "api").rglob("index.html"):
        # the reference shows the public names, never the private modules behind them
        assert 'id="dbtest._' not in page.read_text(), page
    errors = (site / "reference" / "api" / "errors" / "index.html").read_text()
    assert "ConcurrencyError" in errors and ":class:" not in errors  # reST roles converted


def test_every_public_name_is_in_the_api_reference() -> None:
    page = (DOCS / "reference" / "api" / "dbtest.md").read_text()
    # the table names where a user imports from: the public package, else dbtest itself
    missing = [name for name, module in dbtest._EXPORTS.items()
               if f"| `{name}` | `{'dbtest' if '._' in module else module}` |" not in page]
    assert not missing, f"add these names of dbtest._EXPORTS to docs/reference/api/dbtest.md: " \
                        f"{missing}"


def test_api_reference_names_no_private_module() -> None:
    private = [f"{page.name}: {line}" for page in sorted((DOCS / "reference" / "api").glob("*.md"))
               for line in page.read_text().splitlines()
               if re.search(r"\bdbtest(\.\w+)*\._[a-z]", line)]
    assert not private, "point these at the public names (dbtest.X or a public package):\n" \
                        + "\n".join(private)


def _snippets() -> list[tuple[Path, str, str | None]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for m in _SNIPPET.finditer(page.read_text()):
            found.append((page, m.group("path"), m.group("section")))
    return found


def test_every_included_snippet_exists() -> None:
    snippets = _snippets()
    assert len(snippets) > 30
    problems = []
    for page, path, section in snippets:
        target = REPO / path
        where = f"{page.relative_to(REPO)} includes {path}"
        if not target.is_file():
            problems.append(f"{where}: no such file")
            continue
        text = target.read_text()
        if section and not (f"--8<-- [start:{section}]" in text
                            and f"--8<-- [end:{section}]" in text):
            problems.append(f"{where}: no section {section!r}")
    assert not problems, "\n".join(problems)


def test_snapshot_texts_on_the_pages_are_the_stored_ones() -> None:
    stored = "".join(p.read_text() for p in (EXAMPLES / "app" / "__snapshots__").glob("*.ambr"))
    shown = [(page, m.group(1)) for page in sorted(DOCS.rglob("*.md"))
             for m in re.finditer(r"^```text[^\n]*\n(# name: .*?)^```", page.read_text(),
                                  re.M | re.S)]
    assert shown
    stale = [f"{page.relative_to(REPO)}: {text.splitlines()[0]}" for page, text in shown
             if text not in stored]
    assert not stale, f"copy these from docs/examples/app/__snapshots__: {stale}"


def test_measured_numbers_come_from_benchmark_results() -> None:
    """The figures in README.md and docs/comparison.md are the block `python -m benchmarks`
    generated from the run that wrote benchmarks/RESULTS.md, not typed by hand."""
    from benchmarks.__main__ import BEGIN, END

    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    assert results.startswith("# Benchmark results") and "Generated by `python -m" in results
    for page in (DOCS / "comparison.md", REPO / "README.md"):
        text = page.read_text()
        block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
        numbers = set(re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?!\w)", block))
        assert len(numbers) > 10, f"{page.name}: no generated figures (run python -m benchmarks)"
        unknown = sorted(n for n in numbers if n not in results)
        assert not unknown, (f"{page.name} quotes figures that benchmarks/RESULTS.md does not "
                             f"hold (rerun python -m benchmarks): {unknown}")


def test_the_tutorials_configuration_is_the_repositorys() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    tutorial = (DOCS / "tutorial.md").read_text()
    blocks = re.findall(r"^```toml\n(.*?)^```", tutorial, re.M | re.S)
    shown: dict[str, Any] = {}
    for block in blocks:
        for table, values in tomllib.loads(block).items():
            shown.setdefault(table, {}).update(values)
    assert shown["tool"]["dbtest"] == pyproject["tool"]["dbtest"]
    ini = pyproject["tool"]["pytest"]["ini_options"]
    for key, value in shown["tool"]["pytest"]["ini_options"].items():
        assert ini[key] == value, key


# -- the CI recipes ------------------------------------------------------------------------
def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML (pulled by the docs extra) is not "
                                              "installed: pip install -e '.[docs]'")


def _runs(workflow: dict[Any, Any]) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"]
            if "run" in step]


def _check_workflow(workflow: Any, where: str) -> None:
    assert isinstance(workflow, dict), f"{where}: not a mapping"
    # YAML 1.1 reads a bare `on` key as True
    triggers = workflow.get("on", workflow.get(True))
    assert triggers is not None and "jobs" in workflow, f"{where}: needs `on` and `jobs`"
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on") and job.get("steps"), f"{where}: job {name} is incomplete"
    assert any("pytest" in run for run in _runs(workflow)), f"{where}: runs no pytest"


def test_repository_workflows_parse_and_run_the_readme_command() -> None:
    yaml = _yaml()
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows
    for path in workflows:
        _check_workflow(yaml.safe_load(path.read_text()), str(path.relative_to(REPO)))
    tests = yaml.safe_load((REPO / ".github" / "workflows" / "tests.yml").read_text())
    assert README_TEST_COMMAND in _runs(tests)
    assert tests["jobs"]["tests"]["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    assert ".venv/bin/pytest -n 2" in (REPO / "README.md").read_text()


def test_ci_recipes_parse_and_use_each_backend() -> None:
    yaml = _yaml()
    found = [m.group("body") for m in _YAML_BLOCK.finditer((DOCS / "ci.md").read_text())]
    # complete workflows; the other blocks are steps to add to one (the CI cache)
    blocks = [b for b in found if b.startswith("name:")]
    assert len(blocks) == 5
    steps = [yaml.safe_load(b) for b in found if not b.startswith("name:")]
    assert any("dbtest cache key" in str(s) and "dbtest cache wait" in str(s) for s in steps)
    workflows = [yaml.safe_load(block) for block in blocks]
    for i, workflow in enumerate(workflows, 1):
        _check_workflow(workflow, f"docs/ci.md YAML block {i}")
    service, docker, local, shared, per_runner = (next(iter(w["jobs"].values()))
                                                  for w in workflows)
    for sharded in (shared, per_runner):  # the sharded recipes: a matrix of groups
        groups = sharded["strategy"]["matrix"]["group"]
        assert any(f"--splits {len(groups)} --group" in s.get("run", "")
                   for s in sharded["steps"])
    assert "DBTEST_URL" in shared["env"]
    assert per_runner["env"]["DBTEST_BACKEND"] == "local"
    assert any("dbtest cache key" in s.get("run", "") for s in per_runner["steps"])
    assert "postgres" in service["services"]
    assert service["env"]["DBTEST_URL"].startswith("postgresql://")
    assert docker["env"]["DBTEST_BACKEND"] == "docker"
    assert local["env"]["DBTEST_BACKEND"] == "local"
    assert any("apt-get install" in s.get("run", "") and "postgresql" in s.get("run", "")
               for s in local["steps"])


# -- the examples --------------------------------------------------------------------------
def _app_project(pytester: pytest.Pytester) -> list[str]:
    """The example-app project: migrations_example/ and seeds/ of this repository, its
    tests' conftest, and docs/examples/app/ (with the stored snapshots)."""
    root = pytester.path
    (root / "migrations_example").symlink_to(REPO / "migrations_example")
    (root / "seeds").symlink_to(REPO / "seeds")
    shutil.copy(REPO / "migrations_example" / "tests" / "conftest.py", root / "conftest.py")
    shutil.copytree(EXAMPLES / "app", root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text(APP_PYPROJECT)
    return sorted(p.name for p in (EXAMPLES / "app").glob("test_*.py"))


def test_examples_of_the_pages_run(pytester: pytest.Pytester) -> None:
    files = _app_project(pytester)
    update = bool(os.environ.get("DBTEST_DOCS_SNAPSHOT_UPDATE"))
    args = ["-p", "no:cacheprovider", *files, *(["--snapshot-update"] if update else [])]
    result = pytester.runpytest_subprocess(*args)
    outcomes = result.parseoutcomes()
    assert not outcomes.get("failed") and not outcomes.get("errors"), \
        result.stdout.str()[-6000:]
    assert outcomes.get("passed", 0) >= 40 and outcomes.get("xfailed") == 1, outcomes
    assert "snapshots generated" not in result.stdout.str() or update, \
        "an example has no stored snapshot: run with DBTEST_DOCS_SNAPSHOT_UPDATE=1"
    if update:
        shutil.copytree(pytester.path / "__snapshots__", EXAMPLES / "app" / "__snapshots__",
                        dirs_exist_ok=True)


def _migrating_project(pytester: pytest.Pytester, which: str) -> None:
    source = EXAMPLES / "migrating"
    shutil.copytree(source / "legacyapp", pytester.path / "legacyapp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(source / "test_billing.py", pytester.path)
    shutil.copytree(source / which, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    dbtest_section = ('[tool.dbtest]\nschema = "metadata:legacyapp.models:Base"\n'
                      if which == "after" else "")
    (pytester.path / "pyproject.toml").write_text(
        MIGRATING_PYPROJECT.format(dbtest=dbtest_section))


def test_migration_guide_after(pytester: pytest.Pytester) -> None:
    _migrating_project(pytester, "after")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_migration_guide_before(pytester: pytest.Pytester, dbtest_server: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # the hand-written suite needs a running server and a DATABASE_URL: give it both
    _migrating_project(pytester, "before")
    name = f"docs_legacy_{uuid.uuid4().hex[:8]}"
    dbtest_server.create_database(name)
    try:
        monkeypatch.setenv("DATABASE_URL", dbtest_server.url_for(name))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:dbtest")
        result.assert_outcomes(passed=3)
    finally:
        dbtest_server.drop_database(name)
