"""``python -m benchmarks``: which scripts it picks up, how it reads them, what it writes.

The benchmarks themselves are not run here (performance figures never come from unit
tests); these scripts are tiny stand-ins that follow the contract of benchmarks/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import __main__ as runner

GOOD = '''"""A stand-in that meets one target and misses another."""
import sys

assert sys.argv[1:] == ["--quick"], sys.argv

print("# stand-in\\n\\n| a | b |\\n|---|---|\\n| 1 | 2 |")
print("PASS fast enough: 1.0 ms")
print("MISS 5x faster: 3.2x (10 vs 32 ms)")
print("HEADLINE stand-in: 10 ms against 32 ms")
print("progress", file=sys.stderr)
'''
BAD = '''"""A stand-in whose own check failed."""
import sys

BENCHMARK = {"title": "Broken one", "order": 5, "quick": ["--fast"]}
assert sys.argv[1:] == ["--fast"], sys.argv
print("FAIL wrote 0 rows, 10 asked")
print("the reason", file=sys.stderr)
sys.exit(1)
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "bench_good.py").write_text(GOOD)
    (tmp_path / "leaky.py").write_text(BAD)
    (tmp_path / "helper.py").write_text("X = 1\n")  # no BENCHMARK, not bench_*: not run
    (tmp_path / "bench_legacy.py").write_text('"""Takes no option."""\nimport sys\n'
                                              'assert sys.argv[1:] == []\n')
    (tmp_path / "_private.py").write_text("raise SystemExit(3)\n")
    return tmp_path


def test_picks_up_bench_scripts_and_benchmark_literals_in_order(folder: Path) -> None:
    scripts = runner.discover(folder)
    assert [s.name for s in scripts] == ["leaky", "bench_good", "bench_legacy"]  # order
    assert scripts[0].title == "Broken one"
    assert scripts[1].config["quick"] == ["--quick"]
    assert scripts[2].config["quick"] == []  # no --quick option: it runs as it is
    assert scripts[1].title == "A stand-in that meets one target and misses another."


def test_a_failing_check_fails_the_run_and_verdicts_are_collected(folder: Path,
                                                                   tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    scripts = runner.discover(folder)
    for s in scripts:
        runner.run(s, quick=True, logdir=logs)
    bad, good, legacy = scripts
    assert good.ok and legacy.ok and not bad.ok
    assert good.results() == [("PASS", "fast enough: 1.0 ms"),
                              ("MISS", "5x faster: 3.2x (10 vs 32 ms)")]
    assert good.headlines() == ["stand-in: 10 ms against 32 ms"]
    assert bad.results() == [("FAIL", "wrote 0 rows, 10 asked")]
    stamps = {"start": "S", "end": "E", "load_start": "1.00", "load_end": "2.00"}
    text = runner.render(scripts, True, stamps, 3.0)
    assert "**FAILED** (exit 1)" in text and "the reason" in text
    assert "| bench_good | MISS | 5x faster: 3.2x (10 vs 32 ms) |" in text
    assert "### stand-in" in text  # the script's own heading, two levels down
    assert "Load average at start** 1.00" in text


def test_the_generated_block_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"before\n{runner.BEGIN}\nold figures\n{runner.END}\nafter\n")
    assert runner.replace_block(page, f"{runner.BEGIN}\nnew\n{runner.END}")
    assert page.read_text() == f"before\n{runner.BEGIN}\nnew\n{runner.END}\nafter\n"
    other = tmp_path / "other.md"
    other.write_text("no markers\n")
    assert not runner.replace_block(other, "x")
    assert other.read_text() == "no markers\n"



def test_a_rewrite_keeps_the_hand_kept_runs_of_single_scripts(tmp_path: Path) -> None:
    # the long drills and real applications live after KEPT: a quick run must not drop them
    output = tmp_path / "RESULTS.md"
    output.write_text(f"# old generated\n\n---\n\n{runner.KEPT} (by hand)\n\n## Drill\nfigures\n")
    runner.write_results(output, "# new generated\n")
    assert output.read_text() == (f"# new generated\n\n---\n\n{runner.KEPT} (by hand)\n\n"
                                  f"## Drill\nfigures\n")
    fresh = tmp_path / "fresh.md"
    runner.write_results(fresh, "# only generated\n")
    assert fresh.read_text() == "# only generated\n"
