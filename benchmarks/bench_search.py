"""Beam-search throughput and latency over a place table of the paper's size.

    python benchmarks/bench_search.py [--device cuda] [--beam 10] [--batch 1024]

Same as `python -m hierloc bench search --json`. Medians of --repeats runs.
"""

import sys

from hierloc.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "search", "--json", *sys.argv[1:]]))
