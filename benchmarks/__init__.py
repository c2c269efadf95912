"""dbtest's benchmarks: ``python -m benchmarks [--quick]`` runs every script of this folder
that follows the contract in ``benchmarks/README.md`` and rewrites ``benchmarks/RESULTS.md``
(and the generated blocks of ``README.md`` and ``docs/comparison.md``) from their output.

The scripts stay runnable one by one (``python benchmarks/bench_x.py --quick``); this
package only holds the runner.
"""
