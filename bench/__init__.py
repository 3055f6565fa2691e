"""Benchmarks for issue 6: `python -m bench.run_all [--quick]` runs them all and writes
BENCHMARKS.md; each module also runs alone (`python -m bench.<module> [--quick]`) and
prints one JSON result line that names the machine, the command and the date."""
