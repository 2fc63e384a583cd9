"""kit's benchmarks: `python -m bench` (or `make bench`) runs them all, `python -m bench NAME` runs one.

Every benchmark prints one JSON object on one line: its figures as medians over repetitions with their spread,
the naive baseline measured in the same run, and the ratio between them. The machines are noisy, so no
absolute time is ever asserted anywhere; docs/benchmarks.md explains what each figure measures.
"""
